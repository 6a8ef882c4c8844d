"""Scenario: the egress listener (issue 6, first slice), what travels through it. A fronted
homeserver sends `METHOD matrix-federation://DEST/PATH` with `Proxy-Authorization: Bearer
<secret>`; chappe sends the request on to DEST (a RemoteServer, fedremote.py, TLS on loopback)
with only the hop-by-hop fields, Host, Proxy-Authorization and Content-Length taken out or
rewritten, and passes the answer back the same way. test_egress_proxy.py covers the basic
paths (key document, transaction, secrets, allowlist, bad targets); here: the fields on both
sides, framing (chunked both ways, 100-continue, HTTP/1.0, large bodies), a slow destination,
refusals on a kept-alive connection, bad framing, the access log."""
# SPDX-License-Identifier: ISC

import os
import time

import pytest

from fedremote import RemoteServer
from harness import free_port, make_config
from httpc import Conn, build_request, canonical, chunked, txn_body, xmatrix

SECRET = "hs-egress-secret-abcdef012345"
SECRET2 = "hs2-egress-secret-9876543210"  # its file has no trailing newline
KEY = "/_matrix/key/v2/server"
HOP_FIELDS = {"connection", "keep-alive", "te", "proxy-connection", "proxy-authorization",
              "trailer", "x-hop"}


@pytest.fixture
def egress(certs, tmp_path, start_chappe, make_upstream):
    """egress(limits=None, **extra) -> (chappe, port): hs.localhost and hs2.localhost fronted,
    each with its secret file, an egress listener on port, the test CA trusted."""
    def go(limits=None, **extra):
        paths = []
        for name, text in (("hs", SECRET + "\n"), ("hs2", SECRET2)):
            p = tmp_path / ("%s.egress-secret" % name)
            p.write_text(text)
            os.chmod(p, 0o600)
            paths.append(str(p))
        up = make_upstream()
        cfg = make_config(certs, free_port(), None,
                          [("hs.localhost", up.url), ("hs2.localhost", up.url)], limits=limits,
                          extra=dict({"federation_custom_ca_list": [str(certs.ca)]}, **extra))
        for h, p in zip(cfg["homeservers"], paths):
            h["egress_secret_path"] = p
        port = free_port()
        cfg["listeners"].append({"type": "egress", "bind": ["127.0.0.1:%d" % port],
                                 "tls": False})
        return start_chappe(cfg), port
    return go


@pytest.fixture
def remote(certs):
    made = []

    def make(**kw):
        rs = RemoteServer(certs, **kw)
        made.append(rs)
        return rs
    yield make
    for rs in made:
        rs.stop()


def auth(secret=SECRET):
    return ("Proxy-Authorization", "Bearer " + secret)


def target(rs, path):
    return "matrix-federation://%s%s" % (rs.name, path)


def names(pairs):
    return [n.lower() for n, _ in pairs]


def assert_no_close(r):
    assert "close" not in ",".join(r.header_all("Connection")).lower(), r


def wait_access_log(ch, n, timeout=5.0):
    """The egress entries of chappe's access log, once there are at least n (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        got = [e for e in ch.access_log() if e.get("listener") == "egress"]
        if len(got) >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


# --- what the destination receives ------------------------------------------------------------
@pytest.mark.parametrize("method,status", [("GET", 200), ("PUT", 201), ("POST", 202),
                                           ("DELETE", 204)])
def test_request_fields_and_body_go_on(egress, remote, method, status):
    """Hop-by-hop fields (fixed and Connection-nominated) and Proxy-Authorization stay here;
    Host names the destination; Content-Length counts the body; everything else, the X-Matrix
    Authorization included, arrives as the homeserver wrote it."""
    rs = remote()
    path = "/_matrix/federation/v1/thing/%s?x=%%2F1&y" % method.lower()
    rs.answers[path] = (status, b"" if status == 204 else b'{"ok":true}',
                        [("Content-Type", "application/json")])
    ch, port = egress()
    body = None if method in ("GET", "DELETE") else canonical({"a": [1, "\u00e9"], "b": {}})
    sig = xmatrix(method, path, body, origin="hs.localhost", destination=rs.name)
    headers = [auth(), sig, ("Content-Type", "application/json"),
               ("User-Agent", "Synapse/1.99.0"), ("X-Custom", "a  b\tc"),
               ("Connection", "keep-alive, X-Hop"), ("X-Hop", "dropped"),
               ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
               ("Proxy-Connection", "keep-alive"), ("Trailer", "X-Later")]
    with Conn.plain(port) as c:
        r = c.request(method, target(rs, path), host="ignored.example", headers=headers,
                      body=body)
    assert r.status == status, r
    assert r.body == (b"" if status == 204 else b'{"ok":true}'), r
    (got_method, got_path, got, got_body), = rs.received
    (fields,) = rs.header_lists
    assert (got_method, got_path) == (method, path)
    assert got_body == (body or b"")
    assert not HOP_FIELDS & set(names(fields)), fields
    assert names(fields).count("host") == 1 and got["Host"] == rs.name, fields
    assert names(fields).count("content-length") <= 1, fields
    if body is not None:
        assert got["Content-Length"] == str(len(body)), fields
    assert got["Authorization"] == sig[1]
    assert got["Content-Type"] == "application/json"
    assert got["X-Custom"] == "a  b\tc"
    # the homeserver's User-Agent goes on, and chappe adds none of its own beside it
    assert [v for n, v in fields if n.lower() == "user-agent"] == ["Synapse/1.99.0"], fields


def test_answer_comes_back_as_the_destination_sent_it(egress, remote):
    """Status, end-to-end fields and body bytes (not re-encoded: odd spacing, a newline) come
    back; the destination's hop-by-hop fields do not."""
    rs = remote()
    path = "/_matrix/federation/v1/make_join/!r:x/@u:y?ver=10"
    raw = b'{"errcode":  "M_FORBIDDEN",\n "error": "not \\u00e9 here"}\n'
    rs.answers[path] = (403, raw, [("Content-Type", "application/json"), ("X-Kept", "yes"),
                                   ("Connection", "X-Hop-Back"), ("X-Hop-Back", "1"),
                                   ("Keep-Alive", "timeout=9")])
    ch, port = egress()
    with Conn.plain(port) as c:
        r = c.request("GET", target(rs, path), headers=[auth()])
    assert r.status == 403, r
    assert r.body == raw
    assert r.header("X-Kept") == "yes" and r.header("Content-Type") == "application/json", r
    assert r.header("X-Hop-Back") is None and r.header("Keep-Alive") is None, r


def test_chunked_both_ways(egress, remote):
    """A chunked request body reaches the destination whole, with a Content-Length; a chunked
    answer reaches the homeserver with its bytes unchanged."""
    rs = remote()
    path = "/_matrix/federation/v2/invite/%21r:hs.localhost/chunky"
    body = txn_body(5000, seed=3)
    answer = canonical({"pdus": {"$%d" % i: {} for i in range(40)}})
    rs.answers[path] = (200, answer, [("Transfer-Encoding", "chunked")])
    ch, port = egress()
    pieces = [body[:1], body[1:1000], body[1000:]]
    with Conn.plain(port) as c:
        c.send(build_request("PUT", target(rs, path), headers=[
            auth(), ("Transfer-Encoding", "chunked"), ("Content-Type", "application/json")],
            body=chunked(pieces)))
        r = c.read_response()
    assert r.status == 200, r
    assert r.body == answer
    (_, _, got, got_body), = rs.received
    assert got_body == body
    assert got["Content-Length"] == str(len(body))
    assert "Transfer-Encoding" not in got


def test_large_body_and_over_the_limit(egress, remote):
    rs = remote()
    path = "/_matrix/federation/v2/invite/%21r:hs.localhost/big"
    ch, port = egress()
    body = txn_body(1_000_000, seed=7)  # under the 1 MiB max_body_bytes of the test limits
    with Conn.plain(port) as c:
        r = c.request("PUT", target(rs, path), headers=[auth()], body=body, timeout=20)
        assert r.status == 200, r
    assert rs.received[0][3] == body
    with Conn.plain(port) as c:
        c.send(build_request("PUT", target(rs, path + "2"),
                             headers=[auth(), ("Content-Length", str(1024 * 1024 + 1))]))
        r = c.read_response()
        assert r.status == 413, r
        assert c.wait_closed(5)[0], "the connection stayed open after a 413"
    assert len(rs.received) == 1


def test_expect_100_continue(egress, remote):
    rs = remote()
    path = "/_matrix/federation/v2/invite/%21r:hs.localhost/t100"
    body = canonical({"edus": [], "pdus": []})
    ch, port = egress()
    with Conn.plain(port) as c:
        c.send(build_request("PUT", target(rs, path), headers=[
            auth(), ("Expect", "100-continue"), ("Content-Length", str(len(body)))]))
        first = c.read_head()
        assert first.status == 100, first
        c.send(body)
        r = c.read_response()
    assert r.status == 200, r
    (_, _, got, got_body), = rs.received
    assert got_body == body
    assert "Expect" not in got, got


def test_http10_homeserver(egress, remote):
    """An HTTP/1.0 request: the chunked answer comes back unchunked, ended by the close."""
    rs = remote()
    path = "/_matrix/federation/v1/version"
    answer = b'{"server":{"name":"remote"}}'
    rs.answers[path] = (200, answer, [("Transfer-Encoding", "chunked")])
    ch, port = egress()
    with Conn.plain(port) as c:
        c.send(build_request("GET", target(rs, path), headers=[auth()], version="HTTP/1.0"))
        r = c.read_response()
        assert r.status == 200, r
        assert r.body == answer
        assert not r.chunked
        assert c.wait_closed(5)[0]


# --- the destination slow -------------------------------------------------------------------
def test_slow_destination_504(egress, remote):
    rs = remote(delay=8.0)
    ch, port = egress(limits={"outbound_timeout": "1s"})
    t0 = time.monotonic()
    with Conn.plain(port) as c:
        r = c.request("GET", target(rs, KEY), headers=[auth()], timeout=10)
    elapsed = time.monotonic() - t0
    assert r.status == 504 and r.json()["errcode"] == "M_UNKNOWN", r
    assert 0.9 <= elapsed < 5.0, elapsed


# --- one connection, many requests --------------------------------------------------------
def test_refusals_keep_the_connection(egress, remote):
    """A refused body-less request is answered without closing: the next one on the same
    connection still goes through (and only that one reaches the destination)."""
    rs = remote()
    ch, port = egress()
    with Conn.plain(port) as c:
        r = c.request("GET", target(rs, KEY))
        assert r.status == 401 and r.json()["errcode"] == "M_MISSING_TOKEN", r
        assert_no_close(r)
        r = c.request("GET", target(rs, KEY), headers=[auth("x" * 30)])
        assert r.status == 401 and r.json()["errcode"] == "M_UNAUTHORIZED", r
        assert_no_close(r)
        r = c.request("GET", "matrix-federation://evil.example:8448" + KEY, headers=[auth()])
        assert r.status == 403 and "name_not_allowed" in r.json()["error"], r
        assert_no_close(r)
        r = c.request("GET", KEY, headers=[auth()])
        assert r.status == 400, r
        assert_no_close(r)
        r = c.request("GET", target(rs, KEY), headers=[auth()])
        assert r.status == 200, r
    assert rs.requests == [KEY]


def test_refusal_with_a_body_closes(egress, remote):
    """A refused request's unread body must not be taken for the next request: chappe answers
    and closes."""
    rs = remote()
    ch, port = egress()
    smuggled = build_request("GET", target(rs, KEY), headers=[auth()])
    with Conn.plain(port) as c:
        c.send(build_request("PUT", target(rs, "/_matrix/federation/v2/invite/%21r:hs.localhost/s"),
                             headers=[auth("wrong-secret-0123456789")], body=smuggled))
        r = c.read_response()
        assert r.status == 401, r
        assert "close" in (r.header("Connection") or "").lower(), r
        closed, _, extra = c.wait_closed(5)
        assert closed and extra == b"", extra
    assert rs.accepts == 0 and rs.received == []


def test_pipelined_and_across_destinations(egress, remote):
    """Requests written back to back on one connection, to two destinations and as two
    homeservers, are answered in order, each by its own destination."""
    a, b = remote(), remote()
    for rs, tag in ((a, "a"), (b, "b")):
        rs.answers["/_matrix/federation/v1/version?" + tag] = (200, {"from": tag})
    ch, port = egress()
    reqs = [(a, "a", SECRET), (b, "b", SECRET2), (a, "a", SECRET2), (b, "b", SECRET)]
    with Conn.plain(port) as c:
        c.send(b"".join(build_request("GET", target(rs, "/_matrix/federation/v1/version?" + t),
                                      headers=[auth(s)]) for rs, t, s in reqs))
        for rs, tag, _ in reqs:
            r = c.read_response()
            assert r.status == 200 and r.json() == {"from": tag}, r
    assert a.requests == ["/_matrix/federation/v1/version?a"] * 2
    assert b.requests == ["/_matrix/federation/v1/version?b"] * 2
    origins = [e.get("origin") for e in wait_access_log(ch, 4)]
    assert origins == ["hs.localhost", "hs2.localhost", "hs2.localhost", "hs.localhost"]


@pytest.mark.parametrize("raw", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET matrix-federation://localhost:1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\nab",
    b"GET matrix-federation://localhost:1/x HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n",
    b"PUT matrix-federation://localhost:1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked"
    b"\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    # chappe's parser refuses chunk extensions outright (README, "refused rather than ignored")
    b"PUT matrix-federation://localhost:1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked"
    b"\r\n\r\n2;x=1\r\nab\r\n0\r\n\r\n",
], ids=["garbage", "two-lengths", "no-colon", "te-and-cl", "chunk-ext"])
def test_bad_framing_400_and_close(egress, remote, raw):
    rs = remote()
    ch, port = egress()
    raw = raw.replace(b"localhost:1", rs.name.encode()).replace(
        b"Host: a\r\n", b"Host: a\r\nProxy-Authorization: Bearer " + SECRET.encode() + b"\r\n")
    with Conn.plain(port) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 400, r
        assert c.wait_closed(5)[0], "the connection stayed open after bad framing"
    assert rs.accepts == 0


# --- the access log -----------------------------------------------------------------------
def test_access_log_one_line_per_request(egress, remote):
    rs = remote()
    ch, port = egress()
    dead = "matrix-federation://localhost:%d%s" % (free_port(), KEY)
    asked = [(target(rs, KEY), [auth()], 200), (target(rs, KEY), [], 401),
             ("matrix-federation://evil.example" + KEY, [auth(SECRET2)], 403),
             (dead, [auth()], 502)]
    for t, h, status in asked:
        with Conn.plain(port) as c:
            assert c.request("GET", t, headers=h).status == status
    entries = wait_access_log(ch, len(asked))
    assert [e["status"] for e in entries] == [s for _, _, s in asked], entries
    ok, missing, refused, down = entries
    assert ok["origin"] == "hs.localhost" and ok["destination"] == rs.name, ok
    assert ok["method"] == "GET" and KEY in ok["path"], ok
    assert "origin" not in missing, missing
    assert refused["origin"] == "hs2.localhost" and "name_not_allowed" in refused["error"]
    assert down["destination"].startswith("localhost:"), down
    for text in (ch.stdout(), ch.stderr()):
        assert SECRET not in text and SECRET2 not in text, "a secret was logged"
