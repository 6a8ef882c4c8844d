"""Scenario: TLS termination -- TLS 1.2 only, AEAD suites only, SNI certificate choice,
session resumption, handshake timeout."""
# SPDX-License-Identifier: ISC

import socket
import ssl
import time
import warnings

import pytest

from httpc import Conn, client_ctx, tagged, tcp_connect
from upstream import VERSION_BODY

CBC_SUITES = ("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:"
              "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:"
              "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:AES128-SHA:AES256-SHA:"
              "AES128-SHA256:AES256-SHA256")


def handshake(port, sni="relay.localhost", ctx=None, session=None):
    """Returns the wrapped socket, or raises what the handshake raised."""
    s = tcp_connect(port, timeout=5)
    try:
        return (ctx or client_ctx()).wrap_socket(s, server_hostname=sni, session=session)
    except BaseException:
        s.close()
        raise


def handshake_fails(port, ctx, sni="relay.localhost"):
    try:
        ss = handshake(port, sni, ctx)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError, socket.timeout, TimeoutError):
        return True, None
    info = (ss.version(), ss.cipher())
    ss.close()
    return False, info


def test_verified_chain_and_hostname(proxy):
    ctx = client_ctx(cafile=str(proxy.certs.ca))
    with Conn.tls(proxy.tls_port, sni="relay.localhost", ctx=ctx) as c:
        r = c.request("GET", "/_matrix/federation/v1/version")
        assert r.status == 200 and r.body == VERSION_BODY
        assert c.sock.version() == "TLSv1.2", c.sock.version()


def test_tls13_only_client_fails(proxy):
    ctx = client_ctx(minimum=ssl.TLSVersion.TLSv1_3)
    failed, info = handshake_fails(proxy.tls_port, ctx)
    assert failed, "a TLS 1.3-only client completed a handshake: %r" % (info,)


def test_tls11_client_fails(proxy):
    ctx = client_ctx()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.set_ciphers("ALL:@SECLEVEL=0")  # OpenSSL 3 allows TLS 1.1 only at level 0
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot speak TLS 1.1")
    failed, info = handshake_fails(proxy.tls_port, ctx)
    assert failed, "a TLS 1.1-only client completed a handshake: %r" % (info,)


@pytest.mark.parametrize("suite", ["ECDHE-ECDSA-AES128-GCM-SHA256",
                                   "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_tls12_aead_suite_works(proxy, suite):
    ctx = client_ctx(maximum=ssl.TLSVersion.TLSv1_2, ciphers=suite)
    with Conn.tls(proxy.tls_port, ctx=ctx) as c:
        assert c.sock.version() == "TLSv1.2"
        assert c.sock.cipher()[0] == suite, c.sock.cipher()
        r = c.request("GET", "/_matrix/federation/v1/version")
        assert r.status == 200 and r.body == VERSION_BODY


def test_cbc_only_client_fails(proxy):
    ctx = client_ctx(maximum=ssl.TLSVersion.TLSv1_2, ciphers=CBC_SUITES)
    assert ctx.get_ciphers(), "the test client has no CBC suites to offer"
    failed, info = handshake_fails(proxy.tls_port, ctx)
    assert failed, "a CBC-only client completed a handshake: %r" % (info,)


@pytest.mark.parametrize("sni,which", [
    ("alt.localhost", "alt"),
    ("ALT.LOCALHOST", "alt"),
    ("relay.localhost", "server"),
    ("hs.localhost", "server"),
    ("unknown.example", "server"),
    (None, "server"),
])
def test_sni_certificate_choice(proxy, sni, which):
    ss = handshake(proxy.tls_port, sni=sni)
    try:
        der = ss.getpeercert(binary_form=True)
    finally:
        ss.close()
    want = proxy.certs.alt_der if which == "alt" else proxy.certs.server_der
    assert der == want, "SNI %r: expected the %s certificate, got another one" % (sni, which)


def test_session_resumption(proxy):
    ctx = client_ctx(maximum=ssl.TLSVersion.TLSv1_2)
    with Conn.tls(proxy.tls_port, ctx=ctx) as c1:
        assert c1.request("GET", tagged("1")).status == 200
        sess = c1.sock.session
        assert not c1.sock.session_reused
    assert sess is not None
    reused = []
    for _ in range(2):  # the second connection may land on the other worker
        with Conn.tls(proxy.tls_port, ctx=ctx, session=sess) as c2:
            reused.append(c2.sock.session_reused)
            assert c2.request("GET", tagged("2")).status == 200
    assert all(reused), "TLS session not resumed (session_reused=%r)" % reused


def test_session_resumption_across_workers(start_proxy):
    """Several resumptions with 2 workers: every one must be resumed whichever worker
    accepts the connection."""
    p = start_proxy(workers=2)
    ctx = client_ctx(maximum=ssl.TLSVersion.TLSv1_2)
    with Conn.tls(p.tls_port, ctx=ctx) as c1:
        assert c1.request("GET", tagged("1")).status == 200
        sess = c1.sock.session
    reused = []
    for _ in range(6):
        with Conn.tls(p.tls_port, ctx=ctx, session=sess) as c2:
            reused.append(c2.sock.session_reused)
    assert all(reused), "session resumption per connection: %r" % reused


def test_handshake_timeout(proxy):
    """tls_handshake_timeout 3s: a connection that sends nothing is closed."""
    s = tcp_connect(proxy.tls_port)
    try:
        t0 = time.monotonic()
        s.settimeout(8)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        except (socket.timeout, TimeoutError):
            raise AssertionError("silent TLS connection still open after 8s "
                                 "(tls_handshake_timeout 3s)")
        elapsed = time.monotonic() - t0
        assert data == b"" or data[:1] == b"\x15", "unexpected bytes %r" % data[:50]
        assert 2.5 <= elapsed <= 6.0, "closed after %.1fs, tls_handshake_timeout is 3s" % elapsed
    finally:
        s.close()


def test_partial_client_hello_timeout(proxy):
    s = tcp_connect(proxy.tls_port)
    try:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first bytes
        t0 = time.monotonic()
        s.settimeout(8)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except (socket.timeout, TimeoutError):
            raise AssertionError("partial ClientHello: connection still open after 8s")
        elapsed = time.monotonic() - t0
        assert elapsed <= 6.0, "closed after %.1fs, tls_handshake_timeout is 3s" % elapsed
    finally:
        s.close()


def test_plain_http_on_tls_port(proxy):
    s = tcp_connect(proxy.tls_port)
    try:
        s.sendall(b"GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: hs.localhost\r\n\r\n")
        s.settimeout(5)
        got = b""
        try:
            for _ in range(100):
                d = s.recv(4096)
                if not d:
                    break
                got += d
        except ConnectionResetError:
            pass
        except (socket.timeout, TimeoutError):
            raise AssertionError("plain HTTP on the TLS port: connection not closed in 5s")
        assert b"chappe-toy-upstream" not in got, "plain HTTP was served on the TLS port"
    finally:
        s.close()
    assert proxy.up.bytes_received == 0
    # and the listener still works
    with proxy.tls() as c:
        assert c.request("GET", "/_matrix/federation/v1/version").status == 200
