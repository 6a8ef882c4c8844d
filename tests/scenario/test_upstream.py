"""Scenario: upstream failures and misbehaviour -- refused, silent, too slow to connect, dying
mid-response, malformed responses, closing pooled connections -- become 502/504 M_UNKNOWN
and never desynchronise a connection."""
# SPDX-License-Identifier: ISC

import json
import socket
import time

import pytest

from harness import free_port
from httpc import Conn, build_request, tagged
from upstream import Response


def error_json(resp, what):
    try:
        return json.loads(resp.body)
    except ValueError:
        raise AssertionError("%s: body is not JSON: %r" % (what, resp.body[:300]))


def test_upstream_never_answers_504(proxy):
    proxy.up.handler = lambda req: Response(hang=True)
    with proxy.tls() as c:
        t0 = time.monotonic()
        r = c.request("GET", "/_matrix/federation/v1/version", timeout=12)
        elapsed = time.monotonic() - t0
    assert r.status == 504, "upstream never answering: got %d %r" % (r.status, r.body[:200])
    assert error_json(r, "504").get("errcode") == "M_UNKNOWN", r.body
    assert 2.5 <= elapsed <= 6.0, "504 after %.1fs, upstream_timeout is 3s" % elapsed


def test_upstream_timeout_then_late_response_not_delivered(start_proxy):
    """After a 504 the upstream connection must be discarded: the late answer to the timed-out
    request must never be delivered as the answer to the next one."""
    p = start_proxy(workers=1, limits={"upstream_timeout": "1s"})
    late, nxt = tagged("late"), tagged("next")
    p.up.handler = lambda req: Response(200, b"LATE " + req.target.encode(), delay=2.0) \
        if req.target == late else Response(200, b"ok " + req.target.encode())
    with p.plain() as c:
        r = c.request("GET", late, timeout=8)
        assert r.status == 504, r
    time.sleep(1.5)  # the upstream now writes its late answer
    with p.plain() as c:
        r = c.request("GET", nxt, timeout=8)
        assert r.status == 200 and r.body == b"ok " + nxt.encode(), \
            "next request got %d %r: a stale upstream connection was reused" % (r.status, r.body)


def test_no_upstream_listening_502(start_proxy):
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    p = start_proxy(upstream_url=url)
    with p.plain() as c:
        t0 = time.monotonic()
        r = c.request("GET", "/_matrix/federation/v1/version", timeout=10)
        elapsed = time.monotonic() - t0
    assert r.status == 502, "no upstream: got %d %r" % (r.status, r.body[:200])
    body = error_json(r, "502")
    assert body.get("errcode") == "M_UNKNOWN", body
    assert url in body.get("error", ""), "502 error text should name %s: %r" % (url, body)
    assert elapsed < 2.0, "connection refused should fail fast, took %.1fs" % elapsed


def test_upstream_connect_timeout(start_proxy):
    """An upstream whose accept queue is full never completes the handshake: fail after
    upstream_connect_timeout (2s) with 502/504 M_UNKNOWN."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue; later SYNs are dropped
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        time.sleep(0.2)
        probe = socket.socket()
        probe.settimeout(1.0)
        try:
            probe.connect(("127.0.0.1", port))
            blackholed = False
        except (socket.timeout, TimeoutError):
            blackholed = True
        except OSError:
            blackholed = False
        finally:
            probe.close()
        if not blackholed:
            import pytest
            pytest.skip("could not make a black-hole upstream on this kernel")
        p = start_proxy(upstream_url="http://127.0.0.1:%d" % port,
                        limits={"upstream_connect_timeout": "2s", "upstream_timeout": "10s"})
        with p.plain() as c:
            t0 = time.monotonic()
            r = c.request("GET", tagged("x"), timeout=12)
            elapsed = time.monotonic() - t0
        assert r.status in (502, 504), "connect timeout: got %d %r" % (r.status, r.body[:200])
        assert error_json(r, "connect timeout").get("errcode") == "M_UNKNOWN", r.body
        assert 1.5 <= elapsed <= 5.0, "answered after %.1fs, upstream_connect_timeout 2s" % (
            elapsed)
    finally:
        for s in fillers:
            s.close()
        lsock.close()


def test_upstream_dies_mid_content_length_body(proxy):
    body = b"z" * 200000
    proxy.up.handler = lambda req: Response(200, body, abort_after=50000)
    with proxy.plain() as c:
        c.send(build_request("GET", tagged("x")))
        head = c.read_head(timeout=5)
        assert head.status == 200
        closed, elapsed, got = c.wait_closed(5)
        assert closed, "upstream died mid-body: client connection still open after 5s"
        assert len(got) < len(body), "got the full body from an upstream that sent a part"


def test_upstream_dies_mid_chunked_body(proxy):
    """chappe must not terminate a truncated chunked response with a last-chunk."""
    chunks = [b"a" * 1000] * 50
    proxy.up.handler = lambda req: Response(200, chunks=chunks, abort_after=10000)
    with proxy.tls() as c:
        c.send(build_request("GET", tagged("x")))
        head = c.read_head(timeout=5)
        assert head.status == 200
        closed, elapsed, got = c.wait_closed(5)
        assert closed, "upstream died mid-body: client connection still open after 5s"
        assert not got.endswith(b"0\r\n\r\n"), \
            "truncated upstream response was completed with a last-chunk: %r" % got[-100:]


BAD_RESPONSES = {
    "bad_status_line": b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok",
    "not_http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    "cl_and_te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n",
    "two_content_lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"
                           b"okk",
    "obs_fold": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\r\n b\r\n\r\nok",
    "head_too_large": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 20000 +
                      b"\r\nContent-Length: 2\r\n\r\nok",
}


@pytest.mark.parametrize("case", sorted(BAD_RESPONSES))
def test_malformed_upstream_response_502(start_proxy, case):
    """A response chappe cannot frame safely is not passed on: 502, and the upstream
    connection is not reused (the next request gets a fresh, correct answer)."""
    p = start_proxy(workers=1)
    p.up.handler = lambda req: Response(raw=BAD_RESPONSES[case]) \
        if req.target == tagged("bad") else Response(200, b"good " + req.target.encode())
    with p.plain() as c:
        r = c.request("GET", tagged("bad"), timeout=8)
        assert r.status == 502, "%s: got %d %r" % (case, r.status, r.body[:200])
        assert error_json(r, case).get("errcode") == "M_UNKNOWN", r.body
    with p.plain() as c:
        r = c.request("GET", tagged("next"), timeout=8)
        assert (r.status, r.body) == (200, b"good " + tagged("next").encode()), \
            "%s: the request after a malformed response got %d %r" % (case, r.status, r.body)


def test_upstream_closes_idle_pooled_connection(start_proxy):
    """The upstream drops its keep-alive connection while it idles in chappe's pool: the next
    request must still succeed (on a new connection), not fail with 502."""
    p = start_proxy(workers=1)
    p.up.handler = lambda req: Response(200, b"one", drop_after=True) \
        if req.target == tagged("one") else Response(200, b"two")
    with p.plain() as c:
        assert c.request("GET", tagged("one")).body == b"one"
        time.sleep(0.5)
        r = c.request("GET", tagged("two"))
        assert (r.status, r.body) == (200, b"two"), \
            "request after the upstream closed its idle connection: %d %r" % (r.status, r.body)
    assert p.up.accepted == 2


def test_upstream_idle_timeout_closes_pooled_connection(start_proxy):
    p = start_proxy(workers=1, limits={"upstream_idle_timeout": "1s"})
    with p.plain() as c:
        assert c.request("GET", tagged("a")).status == 200
        assert p.up.wait_for(lambda: 1 in p.up.conn_closed, 4), \
            "pooled upstream connection still open 4s after use (upstream_idle_timeout 1s)"
        assert c.request("GET", tagged("b")).status == 200
    assert p.up.accepted == 2


def test_upstream_keepalive_cap(start_proxy):
    """upstream_keepalive 2: after 6 concurrent requests at most 2 upstream connections stay
    pooled; the others are closed."""
    p = start_proxy(workers=1, limits={"upstream_keepalive": 2})
    p.up.handler = lambda req: Response(200, b"x", delay=0.5)
    conns = [Conn.plain(p.plain_port) for _ in range(6)]
    try:
        for c in conns:
            c.send(build_request("GET", tagged("c")))
        for c in conns:
            assert c.read_response(timeout=10).status == 200
        assert p.up.accepted == 6, "6 concurrent requests used %d upstream connections" % (
            p.up.accepted)
        ok = p.up.wait_for(lambda: len(p.up.conn_closed) >= 4, 3)
        assert ok, "only %d of 6 upstream connections closed; upstream_keepalive is 2" % (
            len(p.up.conn_closed))
    finally:
        for c in conns:
            c.close()
