"""Scenario: request size limits (max_header_bytes 16KiB -> 431, max_body_bytes 1MiB -> 413)."""
# SPDX-License-Identifier: ISC

import json
import threading
import time

from httpc import VERSION, HTTPClosed, HTTPTimeout, build_request, txn_body, xmatrix

MiB = 1 << 20
SEND = "/_matrix/federation/v1/send/"


def read_error(conn, what, timeout=5):
    try:
        return conn.read_response(timeout=timeout)
    except (HTTPClosed, HTTPTimeout) as e:
        raise AssertionError("%s: expected an error response, got none: %s" % (what, e))


def expect_error(resp, status, errcode, what):
    assert resp.status == status, "%s: expected %d, got %d %r" % (what, status, resp.status,
                                                                 resp.body[:200])
    try:
        body = json.loads(resp.body)
    except ValueError:
        raise AssertionError("%s: body is not JSON: %r" % (what, resp.body[:200]))
    assert body.get("errcode") == errcode, "%s: errcode %r, expected %s" % (
        what, body.get("errcode"), errcode)


def test_header_too_large_one_field(proxy):
    with proxy.plain() as c:
        c.send(build_request("GET", VERSION, headers=[("X-Big", "a" * 20000)]))
        r = read_error(c, "20 KB header field")
        expect_error(r, 431, "M_TOO_LARGE", "20 KB header field")
        closed, _, _ = c.wait_closed(5)
        assert closed, "connection not closed after 431"
    time.sleep(0.1)
    assert proxy.up.bytes_received == 0, proxy.up.summary()


def test_header_too_large_many_fields(proxy):
    hdrs = [("X-F%02d" % i, "v" * 1000) for i in range(20)]  # ~20 KB in 22 fields
    with proxy.tls() as c:
        c.send(build_request("GET", VERSION, headers=hdrs))
        r = read_error(c, "20 KB head over TLS")
        expect_error(r, 431, "M_TOO_LARGE", "20 KB head over TLS")
        closed, _, _ = c.wait_closed(5)
        assert closed, "connection not closed after 431"
    assert proxy.up.bytes_received == 0, proxy.up.summary()


def test_header_too_large_never_terminated(proxy):
    """A head that keeps growing without ever ending: 431 once past the limit, not a wait."""
    with proxy.plain() as c:
        c.send(b"GET %s HTTP/1.1\r\nHost: hs.localhost\r\nX-Big: " % VERSION.encode() +
               b"a" * 17000)
        r = read_error(c, "unterminated 17 KB head", 1.5)
        expect_error(r, 431, "M_TOO_LARGE", "unterminated 17 KB head")


def test_header_just_under_limit_passes(proxy):
    hdrs = [("X-F%02d" % i, "v" * 690) for i in range(20)]  # ~14 KB in 22 fields
    wire = build_request("GET", VERSION, headers=hdrs)
    assert 13000 < len(wire) < 15500
    with proxy.plain() as c:
        c.send(wire)
        r = c.read_response(timeout=5)
    assert r.status == 200, "a %d-byte head (limit 16 KiB) was refused: %r" % (len(wire), r)
    (req,) = proxy.up.requests
    assert req.header("X-F19") == "v" * 690


def signed_head(method, target, body):
    """The head of a request whose body (not sent with it) is signed for real: what chappe
    decides on the head alone cannot depend on the X-Matrix checks failing."""
    return build_request(method, target, headers=[("Content-Length", str(len(body))),
                                                  xmatrix(method, target, body)])


def test_content_length_over_limit_413_immediately(proxy):
    body = txn_body(2 * MiB)
    with proxy.plain() as c:
        t0 = time.monotonic()
        c.send(signed_head("PUT", SEND + "big", body))
        # only the head is sent: chappe must answer without waiting for the body
        r = read_error(c, "Content-Length 2 MiB", 2)
        elapsed = time.monotonic() - t0
        expect_error(r, 413, "M_TOO_LARGE", "Content-Length 2 MiB")
        assert elapsed < 2, "413 took %.1fs" % elapsed
    time.sleep(0.1)
    assert proxy.up.bytes_received == 0, "upstream saw bytes of an over-limit request:\n%s" % (
        proxy.up.summary())


def test_content_length_limit_plus_one(proxy):
    with proxy.tls() as c:
        c.send(signed_head("PUT", SEND + "plus1", txn_body(MiB + 1)))
        r = read_error(c, "Content-Length limit+1 over TLS", 2)
        expect_error(r, 413, "M_TOO_LARGE", "Content-Length limit+1 over TLS")
    assert proxy.up.bytes_received == 0, proxy.up.summary()


def test_content_length_at_limit_passes(proxy):
    body = txn_body(MiB)
    with proxy.plain() as c:
        r = c.request("PUT", SEND + "at-limit", body=body,
                      headers=[xmatrix("PUT", SEND + "at-limit", body)], timeout=20)
    assert r.status == 200, "a body of exactly max_body_bytes was refused: %r" % r
    (req,) = proxy.up.requests
    assert req.body_len == MiB and bytes(req.body) == body


def _send_chunked_in_thread(conn, body, piece=64 * 1024):
    """Send body (signed, to PUT /send) chunked from a thread; returns (thread, state)."""
    state = {"sent": 0, "error": None}
    target = SEND + "chunky"

    def run():
        try:
            conn.send(build_request("PUT", target, headers=[
                ("Transfer-Encoding", "chunked"), xmatrix("PUT", target, body)]))
            while state["sent"] < len(body):
                data = body[state["sent"]:state["sent"] + piece]
                conn.sock.sendall(b"%x\r\n" % len(data) + data + b"\r\n")
                state["sent"] += len(data)
            conn.sock.sendall(b"0\r\n\r\n")
        except OSError as e:
            state["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, state


def test_chunked_body_over_limit_413(proxy):
    with proxy.plain() as c:
        t, state = _send_chunked_in_thread(c, txn_body(3 * MiB // 2))
        try:
            r = c.read_response(timeout=10)
        except HTTPClosed as e:
            raise AssertionError("no 413 for a chunked body growing past max_body_bytes: %s "
                                 "(a reset here means chappe closed without a lingering "
                                 "close while the client was still sending)" % e)
        finally:
            t.join(10)
        expect_error(r, 413, "M_TOO_LARGE", "chunked body of 1.5 MiB")
        closed, _, _ = c.wait_closed(5)
        assert closed, "connection not closed after 413 on an unread chunked body"
    time.sleep(0.2)
    assert not proxy.up.requests, "the upstream received a complete over-limit request:\n%s" % (
        proxy.up.summary())


def test_chunked_body_at_limit_passes(proxy):
    body = txn_body(MiB)
    with proxy.plain() as c:
        t, state = _send_chunked_in_thread(c, body)
        r = c.read_response(timeout=20)
        t.join(5)
    assert r.status == 200, "a chunked body of exactly max_body_bytes was refused: %r" % r
    (req,) = proxy.up.requests
    assert req.body_len == MiB and bytes(req.body) == body
