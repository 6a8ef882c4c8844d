"""Scenario: client-side timeouts -- slow heads (slowloris), idle keep-alive, stalled
bodies."""
# SPDX-License-Identifier: ISC

import time

from httpc import VERSION, Conn, build_request, tagged, xmatrix


def test_slowloris_head_closed_after_header_timeout(proxy):
    """header_timeout 2s: a head trickling in one byte a second is cut off."""
    c = Conn.plain(proxy.plain_port)
    try:
        t0 = time.monotonic()
        c.send(b"GET %s HTTP/1.1\r\nHost: hs.localhost\r\nX-Slow: " % VERSION.encode())
        closed_at = None
        got = b""
        for _ in range(12):  # at most ~12 s
            closed, _, extra = c.wait_closed(1.0)
            got += extra
            if closed:
                closed_at = time.monotonic() - t0
                break
            try:
                c.send(b"a")
            except OSError:
                closed_at = time.monotonic() - t0
                break
        assert closed_at is not None, "slowloris connection still open after %.0fs" % (
            time.monotonic() - t0)
        assert 1.5 <= closed_at <= 5.0, "closed after %.1fs, header_timeout is 2s" % closed_at
        if got:
            assert got.startswith(b"HTTP/1.1 408"), "only a 408 may precede the close: %r" % (
                got[:200])
    finally:
        c.close()
    assert proxy.up.bytes_received == 0, proxy.up.summary()


def test_silent_connection_closed_after_header_timeout(start_proxy):
    p = start_proxy(limits={"header_timeout": "2s", "idle_timeout": "30s"})
    with p.plain() as c:
        c.send(b"G")
        closed, elapsed, got = c.wait_closed(8)
        assert closed, "connection with 1 byte of head still open after 8s"
        assert 1.5 <= elapsed <= 5.0, "closed after %.1fs, header_timeout is 2s" % elapsed


def test_idle_keepalive_closed_after_idle_timeout(start_proxy):
    p = start_proxy(limits={"idle_timeout": "2s", "header_timeout": "10s"})
    with p.tls() as c:
        r = c.request("GET", VERSION)
        assert r.status == 200
        closed, elapsed, got = c.wait_closed(8)
        assert closed, "idle keep-alive connection still open after 8s (idle_timeout 2s)"
        assert 1.5 <= elapsed <= 5.0, "idle connection closed after %.1fs, idle_timeout 2s" % (
            elapsed)
        assert got == b"", "unexpected bytes on an idle connection: %r" % got[:200]


def test_active_keepalive_not_closed(start_proxy):
    """Requests every 0.8s for ~4s on one connection with idle_timeout 2s all succeed."""
    p = start_proxy(limits={"idle_timeout": "2s", "header_timeout": "10s"})
    with p.plain() as c:
        for i in range(5):
            r = c.request("GET", tagged("tick%d" % i))
            assert r.status == 200, "request %d on an active connection: %r" % (i, r)
            time.sleep(0.8)


def test_idle_plain_connection_never_sending(start_proxy):
    """A connection that never sends a byte is closed by idle or header timeout."""
    p = start_proxy(limits={"idle_timeout": "2s", "header_timeout": "2s"})
    with p.plain() as c:
        closed, elapsed, _ = c.wait_closed(8)
        assert closed, "silent connection still open after 8s"
        assert 1.5 <= elapsed <= 5.0, "closed after %.1fs" % elapsed


def test_body_timeout(start_proxy):
    p = start_proxy(limits={"body_timeout": "2s"})
    target, body = "/_matrix/federation/v1/send/stall", b'{"a":"12"}'  # 10 bytes, half sent
    with p.plain() as c:
        c.send(build_request("PUT", target, headers=[
            ("Content-Length", str(len(body))), xmatrix("PUT", target, body)]) + body[:5])
        closed, elapsed, got = c.wait_closed(8)
        assert closed, "stalled body: connection still open after 8s (body_timeout 2s)"
        assert 1.5 <= elapsed <= 5.0, "stalled body closed after %.1fs" % elapsed
        if got:
            assert got.startswith(b"HTTP/1.1 408"), "only a 408 may precede the close: %r" % (
                got[:200])
    time.sleep(0.2)
    assert not p.up.requests, "the upstream got a complete request from a truncated body:\n" + \
        p.up.summary()
