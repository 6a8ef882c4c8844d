"""Scenario: chappe forwards requests and responses between federation clients and a
homeserver upstream, exactly, with keep-alive, pooling and pipelining."""
# SPDX-License-Identifier: ISC

import os
import socket
import threading
import time

import pytest

from harness import make_config
from httpc import Conn, build_request, canonical, chunked, tagged, txn_body, xmatrix
from upstream import VERSION_BODY, Response, json_response

HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade"]


def names_of(headers):
    return [n.lower() for n, _ in headers]


def signed_put(txn, body):
    """A PUT /send/{txn} with a real X-Matrix signature over body: (target, headers)."""
    target = "/_matrix/federation/v1/send/" + txn
    return target, [("Content-Type", "application/json"), xmatrix("PUT", target, body)]


# A JSON object body written the way no canonical encoder would (spaces, escapes, key order):
# chappe must pass on the bytes it got, not a re-encoding of what they mean.
LOOSE_JSON = (rb'{ "pdus" : [ {"type":"m.room.message", '
              rb'"content": {"body": "caf\u00e9 \/ \"q\"", "n": 10 }} ],' b'\n'
              rb'  "edus":[], "origin_server_ts" : 1700000000000 }')


def test_version_over_tls(proxy):
    with proxy.tls() as c:
        r = c.request("GET", "/_matrix/federation/v1/version")
    assert r.status == 200, r
    assert r.body == VERSION_BODY, "body differs from the upstream's: %r" % r.body
    assert len(proxy.up.requests) == 1


def test_version_over_plain(proxy):
    with proxy.plain() as c:
        r = c.request("GET", "/_matrix/federation/v1/version")
    assert r.status == 200, r
    assert r.body == VERSION_BODY


def test_request_line_and_host_forwarded_exactly(proxy):
    target = "/_matrix/federation/v1/query/directory?room_alias=%23a%3Ab.c&x=%2F..%2F&y=a+b&z=%7e"
    with proxy.tls() as c:
        r = c.request("GET", target, host="HS.Localhost:8448",
                      headers=[("X-Custom", "a  b\tc"), ("Accept", "*/*"),
                               xmatrix("GET", target)])
    assert r.status == 200, r
    (req,) = proxy.up.requests
    first = req.raw_head.split(b"\r\n", 1)[0]
    assert first == ("GET %s HTTP/1.1" % target).encode(), \
        "upstream request line %r is not the client's" % first
    assert req.header_all("Host") == ["HS.Localhost:8448"], \
        "Host not passed as sent: %r" % req.header_all("Host")
    assert req.header("X-Custom") == "a  b\tc", "X-Custom changed: %r" % req.header("X-Custom")
    assert req.header("Accept") == "*/*"


def test_http10_client_gets_http11_upstream(proxy):
    with proxy.plain() as c:
        c.send(b"GET /_matrix/federation/v1/version HTTP/1.0\r\nHost: hs.localhost\r\n\r\n")
        r = c.read_response(timeout=10)
        assert r.status == 200, r
        assert r.body == VERSION_BODY
        closed, _, extra = c.wait_closed(5)
        assert closed, "HTTP/1.0 request without keep-alive: chappe should close after the " \
                       "response; got %r" % extra
    (req,) = proxy.up.requests
    assert req.version == "HTTP/1.1", "upstream saw %s, expected HTTP/1.1" % req.version


def test_forwarded_headers_added_tls(proxy):
    with Conn.tls(proxy.tls_port, source="127.0.0.2") as c:
        r = c.request("GET", "/_matrix/federation/v1/version",
                      headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "http")])
    assert r.status == 200, r
    (req,) = proxy.up.requests
    assert req.header_all("X-Forwarded-For") == ["127.0.0.2"], \
        "X-Forwarded-For must be exactly the client address (replacing the client's): %r" % (
            req.header_all("X-Forwarded-For"),)
    assert req.header_all("X-Forwarded-Proto") == ["https"], \
        "X-Forwarded-Proto on the TLS listener: %r" % req.header_all("X-Forwarded-Proto")


def test_forwarded_headers_added_plain(proxy):
    with Conn.plain(proxy.plain_port, source="127.0.0.3") as c:
        r = c.request("GET", tagged("x"), headers=[("x-forwarded-for", "10.0.0.1, 10.0.0.2")])
    assert r.status == 200, r
    (req,) = proxy.up.requests
    assert req.header_all("X-Forwarded-For") == ["127.0.0.3"], req.header_all("X-Forwarded-For")
    assert req.header_all("X-Forwarded-Proto") == ["http"], req.header_all("X-Forwarded-Proto")


def test_hop_by_hop_request_fields_removed(proxy):
    hdrs = [("Connection", "keep-alive, X-Secret-Hop"), ("Keep-Alive", "timeout=5"),
            ("X-Secret-Hop", "1"), ("Proxy-Connection", "keep-alive"), ("TE", "trailers"),
            ("Trailer", "X-Foo"), ("Upgrade", "h2c"), ("X-End-To-End", "kept")]
    with proxy.tls() as c:
        r = c.request("GET", "/_matrix/federation/v1/version", headers=hdrs)
    assert r.status == 200, r
    (req,) = proxy.up.requests
    got = names_of(req.headers)
    leaked = [n for n in HOP_BY_HOP + ["x-secret-hop"] if n in got and n != "connection"]
    # chappe may send its own Connection: keep-alive/close upstream, never the client's
    leaked += ["connection: %s" % v for v in req.header_all("Connection")
               if v.lower() not in ("keep-alive", "close")]
    assert not leaked, "hop-by-hop fields reached the upstream: %r\n%s" % (
        leaked, req.raw_head.decode("latin-1"))
    assert req.header("X-End-To-End") == "kept"


def test_hop_by_hop_response_fields_removed(proxy):
    proxy.up.handler = lambda req: Response(200, b'{"ok":true}', headers=[
        ("Content-Type", "application/json"), ("Connection", "X-Up-Hop"),
        ("Keep-Alive", "timeout=1"), ("X-Up-Hop", "1"), ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Foo"), ("Upgrade", "foo"), ("X-Other", "kept")])
    with proxy.tls() as c:
        r = c.request("GET", tagged("x"))
        assert r.status == 200, r
        got = names_of(r.headers)
        leaked = [n for n in ["keep-alive", "x-up-hop", "proxy-connection", "trailer", "upgrade"]
                  if n in got]
        assert not leaked, "hop-by-hop response fields reached the client: %r\n%s" % (
            leaked, r.raw_head.decode("latin-1"))
        assert "x-up-hop" not in (r.header("Connection") or "").lower()
        assert r.header("X-Other") == "kept"
        assert r.body == b'{"ok":true}'
        # the upstream's Connection header must not have closed the client connection
        r2 = c.request("GET", tagged("y"))
        assert r2.status == 200


@pytest.mark.parametrize("body", [txn_body(300 * 1024), LOOSE_JSON], ids=["300k", "loose"])
def test_content_length_body_identical(proxy, body):
    target, headers = signed_put("txn1", body)
    with proxy.tls() as c:
        r = c.request("PUT", target, body=body, headers=headers)
    assert r.status == 200, r
    (req,) = proxy.up.requests
    assert req.method == "PUT"
    assert req.body_len == len(body) and bytes(req.body) == body, \
        "upstream body differs (%d bytes vs %d sent)" % (req.body_len, len(body))
    if not req.chunked:
        assert req.header("Content-Length") == str(len(body))


def test_chunked_request_body(proxy):
    payload = txn_body(71018, seed=1)
    cuts = [1, 1001, 71001]  # pieces of 1, 1000, 70000 and 17 bytes, cut inside JSON tokens
    pieces = [payload[a:b] for a, b in zip([0] + cuts, cuts + [len(payload)])]
    target = "/_matrix/federation/v1/publicRooms"
    with proxy.plain() as c:
        c.send(build_request("POST", target, headers=[
            ("Transfer-Encoding", "chunked"), xmatrix("POST", target, payload)]) +
            chunked(pieces))
        r = c.read_response()
    assert r.status == 200, r
    (req,) = proxy.up.requests
    assert bytes(req.body) == payload, "de-chunked payload differs (%d vs %d bytes)" % (
        req.body_len, len(payload))
    assert req.header("Content-Length") in (None, str(len(payload)))


def test_chunked_request_body_split_sends(proxy):
    """Chunk boundaries split across TCP segments (size line cut in the middle)."""
    payload = txn_body(5300, seed=2)
    pieces = [payload[:300], payload[300:]]
    target = "/_matrix/federation/v1/publicRooms"
    wire = build_request("POST", target, headers=[("Transfer-Encoding", "chunked"),
                                                  xmatrix("POST", target, payload)]) + \
        chunked(pieces)
    with proxy.plain() as c:
        for i in range(0, len(wire), 97):
            c.send(wire[i:i + 97])
            time.sleep(0.002)
        r = c.read_response()
    assert r.status == 200, r
    (req,) = proxy.up.requests
    assert bytes(req.body) == b"".join(pieces)


def test_response_bodies_identical(proxy):
    big = os.urandom(1 << 20)
    pieces = [os.urandom(n) for n in (1, 100, 20000, 3)]

    def handler(req):
        if req.target == tagged("cl"):
            return Response(200, big, headers=[("Content-Type", "application/octet-stream")])
        if req.target == tagged("chunked"):
            return Response(200, chunks=pieces)
        return None

    proxy.up.handler = handler
    with proxy.tls() as c:
        r = c.request("GET", tagged("cl"))
        assert r.status == 200 and r.body == big, "Content-Length body differs"
        assert r.header("Content-Length") == str(len(big)), r.headers
        r = c.request("GET", tagged("chunked"))
        assert r.status == 200, r
        assert r.body == b"".join(pieces), "chunked response body differs"


def test_close_delimited_response(proxy):
    """Upstream answers without framing and closes: the client still gets the whole body."""
    body = os.urandom(50000)
    proxy.up.handler = lambda req: Response(200, body, auto_headers=False, close=True)
    with proxy.plain() as c:
        r = c.request("GET", tagged("x"), timeout=10)
        assert r.status == 200, r
        assert r.body == body, "close-delimited body: got %d bytes, expected %d" % (
            len(r.body), len(body))


def test_status_codes_passed_through(proxy):
    codes = {tagged("a"): 201, tagged("b"): 404, tagged("c"): 500, tagged("d"): 403,
             tagged("e"): 204}
    proxy.up.handler = lambda req: json_response({"errcode": "M_X"}, codes[req.target]) \
        if codes[req.target] != 204 else Response(204)
    with proxy.tls() as c:
        for path, code in codes.items():
            r = c.request("GET", path)
            assert r.status == code, "%s: got %d, upstream said %d" % (path, r.status, code)
            if code != 204:
                assert r.json() == {"errcode": "M_X"}


def test_head_request(proxy):
    proxy.up.handler = lambda req: Response(200, b"x" * 100) if req.method == "HEAD" else None
    with proxy.plain() as c:
        r = c.request("HEAD", tagged("h"), timeout=5)
        assert r.status == 200, r
        assert r.header("Content-Length") == "100"
        r = c.request("GET", "/_matrix/federation/v1/version", timeout=5)
        assert r.status == 200 and r.body == VERSION_BODY, \
            "request after HEAD got %r (HEAD response framing wrong?)" % r


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_client_connection_close(proxy, tls):
    with (proxy.tls() if tls else proxy.plain()) as c:
        r = c.request("GET", tagged("x"), headers=[("Connection", "close")])
        assert r.status == 200
        closed, _, extra = c.wait_closed(5)
        assert closed, "chappe kept the connection open after Connection: close"
        assert extra == b""


def test_single_homeserver_any_host(proxy):
    with proxy.tls(sni="whatever.example") as c:
        r = c.request("GET", "/_matrix/federation/v1/version", host="other.example.org")
    assert r.status == 200, r
    assert len(proxy.up.requests) == 1


# --- routing -------------------------------------------------------------------------------
def two_homeservers(start_proxy):
    p = start_proxy(homeservers=["hs.localhost", "alt.localhost"])
    return p, p.ups[0], p.ups[1]


def test_routing_by_host(start_proxy):
    p, hs, alt = two_homeservers(start_proxy)
    with p.plain() as c:
        for host, up in [("hs.localhost", hs), ("alt.localhost", alt),
                         ("ALT.LocalHost:8448", alt), ("HS.LOCALHOST", hs)]:
            before = len(up.requests)
            r = c.request("GET", tagged("who"), host=host)
            assert r.status == 200, "%s: %r" % (host, r)
            assert len(up.requests) == before + 1, "Host %s not routed to its upstream" % host
    assert len(hs.requests) == 2 and len(alt.requests) == 2


def test_routing_by_host_over_tls(start_proxy):
    p, hs, alt = two_homeservers(start_proxy)
    with p.tls(sni="relay.localhost") as c:
        assert c.request("GET", tagged("1"), host="alt.localhost").status == 200
        assert c.request("GET", tagged("2"), host="hs.localhost").status == 200
    assert [r.target for r in alt.requests] == [tagged("1")]
    assert [r.target for r in hs.requests] == [tagged("2")]


def test_routing_by_sni_without_host(start_proxy):
    p, hs, alt = two_homeservers(start_proxy)
    with p.tls(sni="alt.localhost") as c:
        c.send(b"GET %s HTTP/1.0\r\n\r\n" % tagged("sni").encode())
        r = c.read_response()
    assert r.status == 200, "HTTP/1.0 without Host, SNI alt.localhost: %r" % r
    assert [x.target for x in alt.requests] == [tagged("sni")] and not hs.requests


def test_routing_unknown_host_404(start_proxy):
    p, hs, alt = two_homeservers(start_proxy)
    with p.plain() as c:
        r = c.request("GET", "/_matrix/federation/v1/version", host="nope.localhost")
    assert r.status == 404, r
    assert r.json().get("errcode") == "M_UNRECOGNIZED", r.body
    assert hs.bytes_received == 0 and alt.bytes_received == 0


# --- keep-alive, pooling, pipelining ---------------------------------------------------------
def test_keepalive_and_upstream_pool(start_proxy):
    p = start_proxy(workers=1)
    p.up.handler = lambda req: Response(200, req.target.encode())
    with p.tls() as c:
        for i in range(5):
            r = c.request("GET", tagged("seq%d" % i))
            assert r.status == 200 and r.body == tagged("seq%d" % i).encode(), r
    assert p.up.accepted == 1, "5 sequential requests used %d upstream connections" % (
        p.up.accepted)
    with p.plain() as c:
        for i in range(3):
            assert c.request("GET", tagged("again%d" % i)).status == 200
    assert p.up.accepted == 1, "a second client connection opened a new upstream connection " \
        "(%d in all) instead of reusing the pooled one" % p.up.accepted
    assert len(p.up.requests) == 8


def test_upstream_close_then_new_connection(start_proxy):
    p = start_proxy(workers=1)
    p.up.handler = lambda req: Response(200, b"bye", close=True) \
        if req.target == tagged("close") else Response(200, req.target.encode())
    with p.plain() as c:
        r = c.request("GET", tagged("close"))
        assert r.status == 200 and r.body == b"bye"
        r = c.request("GET", tagged("after"))
        assert r.status == 200 and r.body == tagged("after").encode(), r
    assert p.up.accepted == 2


def test_pipelining_in_order(start_proxy):
    p = start_proxy(workers=1)
    slow, three = tagged("slow"), tagged("three")
    p.up.handler = lambda req: Response(200, req.target.encode(), delay=0.7) \
        if req.target == slow else Response(200, req.target.encode())
    # the signed PUT in the middle is held by chappe until its signature is checked
    body = canonical({"edus": [], "pdus": [{"content": {"body": "2" * 10}}]})
    two, headers = signed_put("two", body)
    wire = (build_request("GET", slow) + build_request("PUT", two, headers=headers, body=body) +
            build_request("GET", three))
    with p.plain() as c:
        c.send(wire)
        bodies = [c.read_response(timeout=10).body for _ in range(3)]
    assert bodies == [t.encode() for t in (slow, two, three)], \
        "pipelined responses out of order: %r" % (bodies,)


def test_pipelining_over_tls(start_proxy):
    p = start_proxy(workers=1)
    targets = [tagged(t) for t in ("slow", "b", "c", "d")]
    p.up.handler = lambda req: Response(200, req.target.encode(), delay=0.5) \
        if req.target == targets[0] else Response(200, req.target.encode())
    wire = b"".join(build_request("GET", t) for t in targets)
    with p.tls() as c:
        c.send(wire)
        bodies = [c.read_response(timeout=10).body for _ in range(4)]
    assert bodies == [t.encode() for t in targets], bodies


# --- concurrency, IPv6, Expect ----------------------------------------------------------------
def test_concurrent_clients(start_proxy):
    """12 clients x 8 requests at once (TLS and plain) through 2 workers: every response is the
    one for its own request."""
    p = start_proxy(workers=2)
    p.up.handler = lambda req: Response(200, bytes(req.body) + req.target.encode())
    errors = []

    def client(i):
        try:
            conn = p.tls() if i % 2 else p.plain()
            with conn as c:
                for j in range(8):
                    body = txn_body(100 + 997 * j, seed=i * 8 + j)
                    target, headers = signed_put("c-%d-%d" % (i, j), body)
                    r = c.request("PUT", target, body=body, headers=headers, timeout=20)
                    if r.status != 200 or r.body != body + target.encode():
                        errors.append("client %d request %d: %d %r" % (i, j, r.status,
                                                                       r.body[-40:]))
                        return
        except Exception as e:
            errors.append("client %d: %r" % (i, e))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "clients still running after 60s"
    assert not errors, "\n".join(errors)
    assert len(p.up.requests) == 96


def test_ipv6_listener_and_upstream(certs, make_upstream, start_chappe):
    up = make_upstream(host="::1")
    port = free_port_v6()
    cfg = make_config(certs, None, None, [("hs.localhost", up.url)])
    cfg["listeners"] = [{"type": "federation", "bind": ["[::1]:%d" % port], "tls": True}]
    start_chappe(cfg)
    with Conn.tls(port, host="::1") as c:
        r = c.request("GET", "/_matrix/federation/v1/version")
    assert r.status == 200 and r.body == VERSION_BODY, r
    (req,) = up.requests
    assert req.header_all("X-Forwarded-For") == ["::1"], \
        "X-Forwarded-For for an IPv6 client: %r" % req.header_all("X-Forwarded-For")


def free_port_v6():
    s = socket.socket(socket.AF_INET6)
    s.bind(("::1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_expect_100_continue(proxy):
    """A client sending Expect: 100-continue gets its request through: chappe either relays or
    sends 100 Continue, or simply reads the body the client sends after waiting."""
    body = txn_body(5000, seed=3)
    target, headers = signed_put("e", body)
    with proxy.plain() as c:
        c.send(build_request("PUT", target, headers=[
            ("Expect", "100-continue"), ("Content-Length", str(len(body)))] + headers))
        c.sock.settimeout(1.5)
        try:
            early = c.sock.recv(4096)
        except OSError:
            early = b""
        assert not early or early.startswith(b"HTTP/1.1 100"), \
            "before the body: %r" % early[:200]
        c.buf += early.split(b"\r\n\r\n", 1)[1] if early else b""
        c.send(body)
        r = c.read_response(timeout=10)
    assert r.status == 200, r
    (req,) = proxy.up.requests
    assert bytes(req.body) == body
