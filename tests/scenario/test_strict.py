"""Scenario: malformed or ambiguous HTTP framing (request smuggling vectors) gets a 400 with a
JSON error, the connection is closed, and nothing reaches the upstream (RFC 9112)."""
# SPDX-License-Identifier: ISC

import json
import time

import pytest

from httpc import HTTPClosed, HTTPTimeout

H = b"Host: hs.localhost\r\n"
# Spec routes that stay a plain proxy (no X-Matrix): nothing but the framing decides here.
V = b"/_matrix/federation/v1/version"
GET = b"GET %s HTTP/1.1\r\n" % V
POST = b"POST /_matrix/federation/v1/3pid/onbind HTTP/1.1\r\n"
SMUGGLED = b"/_matrix/federation/v1/version?t=smuggled"

# name -> raw request; the upstream must receive nothing at all
NOTHING_FORWARDED = {
    # RFC 9112 6.1: both framings present is a smuggling vector; reject
    "cl_and_te": POST + H +
                 b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": POST + H +
                 b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    # RFC 9112 6.3 (5): differing Content-Length values
    "two_content_lengths": POST + H +
                           b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "content_length_list": POST + H + b"Content-Length: 5, 6\r\n\r\nhello!",
    "content_length_not_numeric": POST + H + b"Content-Length: 5x\r\n\r\nhello",
    "content_length_plus": POST + H + b"Content-Length: +5\r\n\r\nhello",
    "content_length_negative": POST + H + b"Content-Length: -1\r\n\r\n",
    # RFC 9112 6.3 (4): chunked not the final coding of a request
    "te_chunked_gzip": POST + H +
                       b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te_gzip": POST + H + b"Transfer-Encoding: gzip\r\n\r\nhello",
    # RFC 9112 5.2: obs-fold
    "obs_fold": GET + H + b"X-A: a\r\n b\r\n\r\n",
    "obs_fold_tab": GET + H + b"X-A: a\r\n\tb\r\n\r\n",
    # RFC 9110 5.5: CR, LF, NUL and other controls are invalid in field values
    "bare_cr_in_value": GET + H + b"X-A: a\rb\r\n\r\n",
    "nul_in_value": GET + H + b"X-A: a\x00b\r\n\r\n",
    "ctl_0x01_in_value": GET + H + b"X-A: a\x01b\r\n\r\n",
    # RFC 9112 5.1: no whitespace between field name and colon
    "space_before_colon": GET + H + b"X-A : b\r\n\r\n",
    "space_before_colon_cl": POST + H +
                             b"Content-Length : 5\r\n\r\nhello",
    # RFC 9112 3.2: Host required in HTTP/1.1, exactly once
    "missing_host": GET + b"Accept: */*\r\n\r\n",
    "two_hosts": GET + H + b"Host: alt.localhost\r\n\r\n",
    "host_invalid": GET + b"Host: hs.localhost evil\r\n\r\n",
    # RFC 9112 3: request-line = method SP request-target SP HTTP-version
    "request_line_double_space": b"GET  %s HTTP/1.1\r\n" % V + H + b"\r\n",
    "request_line_http2": b"GET %s HTTP/2.0\r\n" % V + H + b"\r\n",
    "request_target_with_space": b"GET %s y HTTP/1.1\r\n" % V + H + b"\r\n",
    # RFC 9112 2.2: a proxy that accepted a bare LF could disagree with its upstream
    "bare_lf_line_end": GET + b"Host: hs.localhost\nX-A: b\r\n\r\n",
}

# chunked bodies with a broken chunk size: the head may have been forwarded already, but the
# upstream must never see a complete request (no terminating chunk, no truncated body)
BAD_CHUNKS = {
    "chunk_size_zz": POST + H +
                     b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk_size_20_hex_digits": POST + H +
                                b"Transfer-Encoding: chunked\r\n\r\n10000000000000000000\r\n"
                                b"hello\r\n0\r\n\r\n",
    "chunk_size_after_good_chunk": POST + H +
                                   b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                                   b"-3\r\nabc\r\n0\r\n\r\n",
}


def expect_400_and_close(conn, what):
    t0 = time.monotonic()
    try:
        r = conn.read_response(timeout=5)
    except (HTTPClosed, HTTPTimeout) as e:
        raise AssertionError("%s: expected a 400 response, got none: %s" % (what, e))
    assert r.status == 400, "%s: expected 400, got %d %r" % (what, r.status, r.body[:200])
    try:
        body = json.loads(r.body)
    except ValueError:
        raise AssertionError("%s: 400 body is not JSON: %r" % (what, r.body[:200]))
    assert "errcode" in body, "%s: 400 body has no errcode: %r" % (what, body)
    closed, _, extra = conn.wait_closed(5)
    assert closed, "%s: chappe did not close the connection after the 400 (%.1fs)" % (
        what, time.monotonic() - t0)
    assert extra == b"", "%s: bytes after the 400 response: %r" % (what, extra[:200])


@pytest.mark.parametrize("name", sorted(NOTHING_FORWARDED))
def test_rejected_plain(proxy, name):
    with proxy.plain() as c:
        c.send(NOTHING_FORWARDED[name])
        expect_400_and_close(c, name)
    time.sleep(0.1)
    assert proxy.up.bytes_received == 0, "%s: the upstream received bytes:\n%s" % (
        name, proxy.up.summary())


@pytest.mark.parametrize("name", ["cl_and_te", "obs_fold", "nul_in_value", "missing_host"])
def test_rejected_tls(proxy, name):
    with proxy.tls() as c:
        c.send(NOTHING_FORWARDED[name])
        expect_400_and_close(c, name)
    time.sleep(0.1)
    assert proxy.up.bytes_received == 0, "%s over TLS: the upstream received bytes:\n%s" % (
        name, proxy.up.summary())


@pytest.mark.parametrize("name", sorted(BAD_CHUNKS))
def test_bad_chunk_size(proxy, name):
    with proxy.plain() as c:
        c.send(BAD_CHUNKS[name])
        # the toy upstream answers only after a complete body, so no response can precede
        # chappe's own 400
        expect_400_and_close(c, name)
    time.sleep(0.2)
    assert not proxy.up.requests, "%s: the upstream received a complete request:\n%s" % (
        name, proxy.up.summary())


def test_bad_chunk_size_tls(proxy):
    with proxy.tls() as c:
        c.send(BAD_CHUNKS["chunk_size_zz"])
        expect_400_and_close(c, "chunk_size_zz over TLS")
    time.sleep(0.2)
    assert not proxy.up.requests, proxy.up.summary()


def test_smuggled_second_request_not_forwarded(proxy):
    """CL.TE: if chappe used Content-Length, a 'GET ...?t=smuggled' would hide in the body."""
    smuggle = (POST + H + b"Content-Length: 4\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               b"0\r\n\r\nGET %s HTTP/1.1\r\n" % SMUGGLED + H + b"\r\n")
    with proxy.plain() as c:
        c.send(smuggle)
        expect_400_and_close(c, "CL+TE with smuggled request")
    time.sleep(0.2)
    assert not any(h.target == SMUGGLED.decode() for h in proxy.up.heads), proxy.up.summary()
    assert proxy.up.bytes_received == 0, proxy.up.summary()


def test_valid_request_after_rejection_on_new_connection(proxy):
    """A rejected connection does not poison the worker: the next connection works."""
    with proxy.plain() as c:
        c.send(NOTHING_FORWARDED["obs_fold"])
        expect_400_and_close(c, "obs_fold")
    with proxy.plain() as c:
        r = c.request("GET", "/_matrix/federation/v1/version")
        assert r.status == 200, r
