"""Scenario: one JSON access-log line on stdout per proxied request."""
# SPDX-License-Identifier: ISC

import time

from httpc import Conn, tagged, xmatrix
from upstream import Response, json_response

BYTES_KEYS = ("bytes_sent", "bytes_out", "bytes")


def entries_for(chappe, paths, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        log = chappe.access_log()
        found = {p: [e for e in log if e.get("path") == p] for p in paths}
        if all(found.values()) or time.monotonic() >= deadline:
            return log, found
        time.sleep(0.05)


def bytes_of(e):
    for k in BYTES_KEYS:
        if k in e:
            return e[k]
    raise AssertionError("access log entry has no bytes-sent field (one of %s): %r" % (
        BYTES_KEYS, e))


def test_access_log_lines(proxy):
    body_b = b"B" * 12345

    def handler(req):
        if req.path == "/_matrix/federation/v1/publicRooms":
            return Response(200, body_b, delay=0.3)
        if req.path == "/_matrix/federation/v1/query/profile":
            return json_response({"errcode": "M_NOT_FOUND"}, 404)
        return None

    proxy.up.handler = handler
    paths = ["/_matrix/federation/v1/version", "/_matrix/federation/v1/publicRooms",
             "/_matrix/federation/v1/query/profile"]
    with Conn.tls(proxy.tls_port, source="127.0.0.2") as c:
        assert c.request("GET", paths[0]).status == 200
        body = b'{"limit":5}'
        assert c.request("POST", paths[1], body=body,
                         headers=[xmatrix("POST", paths[1], body)]).status == 200
    with Conn.plain(proxy.plain_port, source="127.0.0.4") as c:
        assert c.request("GET", paths[2], headers=[xmatrix("GET", paths[2])]).status == 404

    log, found = entries_for(proxy.chappe, paths)
    if not all(found.values()):
        # tell "never written" apart from "not flushed until exit"
        proxy.chappe.stop()
        late = proxy.chappe.access_log()
        missing = [p for p in paths if not found[p]]
        if all(any(e.get("path") == p for e in late) for p in missing):
            raise AssertionError("access log lines for %s appeared only at exit: stdout is "
                                 "not flushed per line" % missing)
        raise AssertionError("no access log line for %s; stdout has:\n%s" % (
            missing, proxy.chappe.stdout()[-2000:]))

    for p in paths:
        assert len(found[p]) == 1, "%d access log lines for %s: %r" % (len(found[p]), p,
                                                                        found[p])
    v, pr, pf = (found[p][0] for p in paths)
    for e in (v, pr, pf):
        for k in ("method", "path", "status", "peer", "duration_ms"):
            assert k in e, "access log entry lacks %r: %r" % (k, e)
        assert isinstance(e["status"], int), e
        assert isinstance(e["duration_ms"], (int, float)) and e["duration_ms"] >= 0, e
        assert isinstance(bytes_of(e), int), e
    assert (v["method"], v["status"]) == ("GET", 200), v
    assert (pr["method"], pr["status"]) == ("POST", 200), pr
    assert (pf["method"], pf["status"]) == ("GET", 404), pf
    assert "127.0.0.2" in str(v["peer"]) and "127.0.0.2" in str(pr["peer"]), (v, pr)
    assert "127.0.0.4" in str(pf["peer"]), pf
    assert bytes_of(pr) >= len(body_b), "bytes sent %r < body %d" % (bytes_of(pr), len(body_b))
    assert pr["duration_ms"] >= 250, "duration_ms %r for a request the upstream held 300 ms" % (
        pr["duration_ms"])


def test_access_log_has_one_line_per_request(proxy):
    with proxy.plain() as c:
        for i in range(10):
            assert c.request("GET", tagged("n%d" % i)).status == 200
    paths = [tagged("n%d" % i) for i in range(10)]
    log, found = entries_for(proxy.chappe, paths)
    counts = {p: len(found[p]) for p in paths}
    assert all(n == 1 for n in counts.values()), "access log lines per request: %r" % counts


def test_access_log_pipelined_and_error(proxy):
    """chappe's own errors (400) are logged too, with their status."""
    with proxy.plain() as c:
        c.send(b"GET %s HTTP/1.1\r\nHost: hs.localhost\r\n\r\n"
               b"GET %s HTTP/1.1\r\nHost: hs.localhost\r\nX-A : b\r\n\r\n" % (
                   tagged("ok").encode(), tagged("bad").encode()))
        assert c.read_response().status == 200
        assert c.read_response().status == 400
    log, found = entries_for(proxy.chappe, [tagged("ok")])
    assert len(found[tagged("ok")]) == 1, log
    statuses = [e.get("status") for e in log]
    assert 400 in statuses, "the 400 was not logged: %r" % log


def test_connections_balanced_across_workers(proxy):
    """SO_REUSEPORT spreads connections by hash; chappe hands new ones to the least loaded
    loop, so 100 long-lived connections opened one after the other end up within 2 of an
    even split (a plain hash is that even only about one time in four)."""
    conns = []
    try:
        for i in range(100):
            c = Conn.plain(proxy.plain_port)
            conns.append(c)
            assert c.request("GET", tagged("balance%d" % i)).status == 200
        paths = [tagged("balance%d" % i) for i in range(100)]
        log, found = entries_for(proxy.chappe, paths)
        assert all(found.values()), "missing access log lines"
        per_worker = {}
        for p in paths:
            w = found[p][0]["worker"]
            per_worker[w] = per_worker.get(w, 0) + 1
        assert sorted(per_worker) == [0, 1], "expected both workers to serve: %r" % per_worker
        assert abs(per_worker[0] - per_worker[1]) <= 2, (
            "connections not balanced between the two workers: %r" % per_worker)
    finally:
        for c in conns:
            c.close()
