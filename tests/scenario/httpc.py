"""A scripted HTTP/1.1 client on raw sockets (plain or TLS) for chappe's scenario tests:
sends exact bytes, parses responses strictly enough to notice framing mistakes."""
# SPDX-License-Identifier: ISC

import json
import random
import socket
import ssl
import time

from canonicaljson import encode_canonical_json
from signedjson.key import decode_signing_key_base64, encode_verify_key_base64, get_verify_key
from signedjson.sign import sign_json
from unpaddedbase64 import encode_base64


class HTTPTimeout(AssertionError):
    pass


class HTTPClosed(AssertionError):
    pass


class Resp:
    def __init__(self, version, status, reason, headers, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] str
        self.raw_head = raw_head
        self.body = b""
        self.body_len = 0
        self.chunked = False

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError("response body is not JSON: %r" % self.body[:300])

    def __repr__(self):
        return "<Resp %d %r body=%r>" % (self.status, self.headers, self.body[:200])


def client_ctx(cafile=None, minimum=None, maximum=None, ciphers=None):
    """A client SSLContext; verifies against cafile (with hostname check) when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def tcp_connect(port, host="127.0.0.1", source=None, timeout=10.0):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    try:
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    @classmethod
    def plain(cls, port, host="127.0.0.1", source=None, timeout=10.0):
        return cls(tcp_connect(port, host, source, timeout))

    @classmethod
    def tls(cls, port, sni="relay.localhost", ctx=None, session=None, host="127.0.0.1",
            source=None, timeout=10.0):
        s = tcp_connect(port, host, source, timeout)
        ctx = ctx or client_ctx()
        try:
            ss = ctx.wrap_socket(s, server_hostname=sni, session=session)
        except BaseException:
            s.close()
            raise
        return cls(ss)

    # --- raw I/O --------------------------------------------------------------------
    def send(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.sock.settimeout(10.0)
        self.sock.sendall(data)

    def _fill(self, deadline, what):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HTTPTimeout("no %s within the time limit; have %d bytes: %r" % (
                what, len(self.buf), bytes(self.buf[:300])))
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except (socket.timeout, TimeoutError):
            raise HTTPTimeout("no %s within the time limit; have %d bytes: %r" % (
                what, len(self.buf), bytes(self.buf[:300])))
        except (ConnectionResetError, BrokenPipeError):
            self.eof = self.reset = True
            data = b""
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            self.eof = True
            data = b""
        except ssl.SSLError as e:
            self.eof = True
            self.ssl_error = e
            data = b""
        if not data:
            self.eof = True
            raise HTTPClosed("connection closed%s before %s; have %d bytes: %r" % (
                " (reset)" if self.reset else "", what, len(self.buf), bytes(self.buf[:300])))
        self.buf += data

    def _until(self, delim, deadline, what, limit=1 << 20):
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise AssertionError("%s longer than %d bytes" % (what, limit))
            start = max(0, len(self.buf) - len(delim) + 1)
            self._fill(deadline, what)

    def _exact(self, n, deadline, what, sink=None):
        """Read n bytes; to sink(memoryview) if given (not kept), else returned."""
        if sink is None:
            while len(self.buf) < n:
                self._fill(deadline, what)
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out
        take = min(n, len(self.buf))
        if take:
            sink(memoryview(bytes(self.buf[:take])))
            del self.buf[:take]
        n -= take
        chunk = bytearray(1 << 20)
        mv = memoryview(chunk)
        while n > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HTTPTimeout("%s: %d bytes still missing at the time limit" % (what, n))
            self.sock.settimeout(remaining)
            try:
                got = self.sock.recv_into(mv, min(n, len(chunk)))
            except (socket.timeout, TimeoutError):
                raise HTTPTimeout("%s: %d bytes still missing at the time limit" % (what, n))
            except (ConnectionResetError, ssl.SSLError) as e:
                raise HTTPClosed("%s: connection failed with %d bytes missing: %r" % (
                    what, n, e))
            if not got:
                self.eof = True
                raise HTTPClosed("%s: connection closed with %d bytes missing" % (what, n))
            sink(mv[:got])
            n -= got
        return b""

    # --- HTTP ------------------------------------------------------------------------
    def request(self, method, target, host="hs.localhost", headers=(), body=None,
                timeout=10.0, sink=None):
        """Send one request (Content-Length framing when body is given) and read the response."""
        self.send(build_request(method, target, host, headers, body))
        return self.read_response(timeout, method=method, sink=sink)

    def read_head(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        raw = self._until(b"\r\n\r\n", deadline, "response head")
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise AssertionError("malformed status line %r" % lines[0])
        headers = []
        for ln in lines[1:]:
            n, sep, v = ln.partition(b":")
            if not sep or not n or n != n.strip():
                raise AssertionError("malformed response header line %r" % ln)
            headers.append((n.decode("latin-1"), v.strip(b" \t").decode("latin-1")))
        return Resp(parts[0].decode(), int(parts[1]),
                    parts[2].decode("latin-1") if len(parts) > 2 else "", headers, raw)

    def read_response(self, timeout=10.0, method="GET", sink=None):
        """Read one full response (1xx skipped); body framing per RFC 9112 6.3."""
        deadline = time.monotonic() + timeout
        for _ in range(5):
            r = self.read_head(max(0.001, deadline - time.monotonic()))
            if r.status >= 200 or r.status == 101:
                break
        te = ",".join(r.header_all("Transfer-Encoding")).lower()
        cls = r.header_all("Content-Length")
        if method == "HEAD" or r.status in (204, 304) or r.status < 200:
            return r
        if te:
            if te.replace(" ", "").split(",")[-1] != "chunked":
                raise AssertionError("response Transfer-Encoding %r does not end in chunked" % te)
            if cls:
                raise AssertionError("response has both Transfer-Encoding and Content-Length")
            r.chunked = True
            body = bytearray()
            for _ in range(10_000_000):
                line = self._until(b"\r\n", deadline, "chunk size line", 4096)
                size = int(line[:-2].split(b";", 1)[0], 16)
                if size == 0:
                    break
                data = self._exact(size, deadline, "chunk data", sink)
                if sink is None:
                    body += data
                r.body_len += size
                if self._exact(2, deadline, "chunk CRLF") != b"\r\n":
                    raise AssertionError("chunk data not followed by CRLF")
            for _ in range(1000):
                if self._until(b"\r\n", deadline, "trailer section") == b"\r\n":
                    break
            r.body = bytes(body)
            return r
        if cls:
            if len(set(cls)) != 1:
                raise AssertionError("response has differing Content-Length %r" % cls)
            n = int(cls[0])
            r.body = self._exact(n, deadline, "response body (%d bytes)" % n, sink)
            r.body_len = n
            return r
        # no framing: the body runs to the end of the connection
        for _ in range(10_000_000):
            try:
                self._fill(deadline, "end of close-delimited body")
            except HTTPClosed:
                break
        r.body = bytes(self.buf)
        r.body_len = len(r.body)
        self.buf.clear()
        return r

    def wait_closed(self, timeout):
        """Wait for the peer to close; returns (closed, elapsed, bytes received meanwhile)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        got = bytearray(self.buf)
        self.buf.clear()
        if self.eof:
            return True, 0.0, bytes(got)
        for _ in range(1_000_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, time.monotonic() - t0, bytes(got)
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return False, time.monotonic() - t0, bytes(got)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                data = b""
            if not data:
                self.eof = True
                return True, time.monotonic() - t0, bytes(got)
            got += data
        return False, time.monotonic() - t0, bytes(got)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_request(method, target, host="hs.localhost", headers=(), body=None,
                  version="HTTP/1.1"):
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None:
        lines.append("Host: " + host)
    names = {n.lower() for n, _ in headers}
    lines += ["%s: %s" % hv for hv in headers]
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if body is not None:
        out += body if isinstance(body, bytes) else body.encode()
    return out


def chunked(pieces, ext=False):
    """Encode pieces as a chunked body (with a chunk extension on each when ext)."""
    out = bytearray()
    for p in pieces:
        out += b"%x%s\r\n" % (len(p), b";x=1" if ext else b"") + p + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


# --- spec routes ---------------------------------------------------------------------------
VERSION = "/_matrix/federation/v1/version"


def tagged(tag):
    """A distinct target on an unauthenticated spec route (GET, HEAD): the version endpoint with
    a query, which chappe passes on as it is. Upstream handlers tell requests apart by
    req.target (req.path is the version path for all of them)."""
    return "%s?t=%s" % (VERSION, tag)


# --- signed federation requests ---------------------------------------------------------------
# The test origin "remote.localhost" signs with a fixed key that chappe's test configs pin
# (harness.REMOTE_PINNED_KEYS, in every start_proxy config): a request signed here passes the
# X-Matrix verification without any key fetch.
REMOTE_SEED = b"chappe scenario remote.localhost"
assert len(REMOTE_SEED) == 32, "an ed25519 seed is 32 bytes"
REMOTE_KEY = decode_signing_key_base64("ed25519", "test", encode_base64(REMOTE_SEED))
REMOTE_KEY_ID = "ed25519:test"
REMOTE_PUBLIC = encode_verify_key_base64(get_verify_key(REMOTE_KEY))  # unpadded base64


def canonical(obj):
    """obj as canonical JSON bytes (what a homeserver sends, and what signatures cover)."""
    return encode_canonical_json(obj)


def txn_body(size, seed=0):
    """Exactly size bytes (at least 30) of canonical JSON: a transaction {"edus": [], "pad":
    "x...", "pdus": [...]} whose PDUs carry pseudo-random text from seed, "pad" making up the
    size. A valid body of any size for a signed PUT /_matrix/federation/v1/send/{txnId}."""
    rng = random.Random(seed)
    pdus, used = [], 30  # len('{"edus":[],"pad":"","pdus":[]}')
    while True:
        pdu = {"content": {"body": rng.randbytes(1024).hex()}, "type": "m.room.message"}
        n = len(canonical(pdu)) + (1 if pdus else 0)
        if used + n > size:
            break
        pdus.append(pdu)
        used += n
    body = canonical({"edus": [], "pad": "x" * (size - used), "pdus": pdus})
    assert len(body) == size, "txn_body(%d) made %d bytes" % (size, len(body))
    return body


def xmatrix(method, target, body=None, origin="remote.localhost", destination="hs.localhost",
            key=REMOTE_KEY):
    """A real X-Matrix Authorization header (server-server API, "Request Authentication"), as
    Synapse signs: {"method", "uri": target exactly as sent (path and query), "origin",
    "destination"[, "content": the parsed body]} signed by origin's key. Returns (name, value)."""
    req = {"method": method, "uri": target, "origin": origin, "destination": destination}
    if body is not None:
        req["content"] = json.loads(body)
    key_id = "%s:%s" % (key.alg, key.version)
    sig = sign_json(req, origin, key)["signatures"][origin][key_id]
    return ("Authorization", 'X-Matrix origin="%s",destination="%s",key="%s",sig="%s"' % (
        origin, destination, key_id, sig))
