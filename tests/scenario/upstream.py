#!/usr/bin/python3
"""A toy HTTP/1.1 homeserver upstream on raw sockets, for chappe's scenario tests and for
trying chappe by hand.

Standalone:  /usr/bin/python3 tests/scenario/upstream.py --port 8008
  GET /_matrix/federation/v1/version -> 200 {"server":{"name":"chappe-toy-upstream",...}}
  anything else                      -> 200 JSON echo of method, path, headers, body length

In tests (one thread per connection, everything recorded):
  up = Upstream(handler=fn).start()      # fn(Request) -> Response (or None for the default)
  up.requests   complete requests (raw head, headers, de-chunked body), in arrival order
  up.heads      every request head parsed, even if its body never completed
  up.accepted   TCP connections accepted;  up.bytes_received  bytes read on all of them
  up.stop()
Every loop is bounded: sockets time out, idle connections close after IDLE_LIMIT seconds,
and stop() closes everything and joins the threads with a timeout.
"""
# SPDX-License-Identifier: ISC

import argparse
import json
import select
import signal
import socket
import sys
import threading
import time
import zlib

VERSION_BODY = json.dumps({"server": {"name": "chappe-toy-upstream", "version": "0.1"}},
                          separators=(",", ":")).encode()
IDLE_LIMIT = 120.0  # seconds a connection may sit without a byte before the upstream drops it
MAX_HEAD = 1 << 20
POLL = 0.1

REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable",
}


class Request:
    """One request as the upstream received it."""

    def __init__(self, conn_id, raw_head, method, target, version, headers):
        self.conn_id = conn_id
        self.raw_head = raw_head  # bytes, request line through the empty line
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # [(name, value)] as str (latin-1), in order
        self.chunked = False
        self.body = bytearray()  # de-chunked; only the first store_limit bytes are kept
        self.body_len = 0
        self.body_crc = 0  # zlib.crc32 of the whole de-chunked body
        self.trailers = []
        self.complete = False
        self.time = time.monotonic()

    def header(self, name):
        """First value of the named field (case-insensitive), or None."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def header_all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    def __repr__(self):
        return "<Request conn=%d %s %s body=%d%s>" % (
            self.conn_id, self.method, self.target, self.body_len,
            "" if self.complete else " incomplete")


class Response:
    """What the upstream answers. body: bytes; or chunks: list/iterator of bytes (streamed,
    chunked unless content_length is given)."""

    def __init__(self, status=200, body=b"", headers=None, reason=None, chunks=None,
                 content_length=None, chunked=None, delay=0.0, close=False, hang=False,
                 abort_after=None, raw=None, auto_headers=True, drop_after=False):
        self.status = status
        self.reason = reason if reason is not None else REASONS.get(status, "Whatever")
        self.body = body
        self.chunks = chunks
        self.headers = list(headers or [])
        self.content_length = content_length
        self.chunked = chunked if chunked is not None else (chunks is not None
                                                            and content_length is None)
        self.delay = delay  # seconds before anything is written
        self.close = close  # close the connection after the response (sends Connection: close)
        self.hang = hang  # never answer; hold the connection until the peer or stop() closes it
        self.abort_after = abort_after  # write only this many body bytes, then close
        self.raw = raw  # bytes written verbatim instead of a generated response
        self.auto_headers = auto_headers
        self.drop_after = drop_after  # close silently after the response (no Connection: close)
        self.sent = 0  # body bytes written
        self.sent_crc = 0  # crc32 of the body bytes written
        self.done = threading.Event()  # set once the response is fully written (or failed)


def json_response(obj, status=200, **kw):
    return Response(status, json.dumps(obj).encode(),
                    headers=[("Content-Type", "application/json")] + kw.pop("headers", []), **kw)


def default_handler(req):
    if req.method == "GET" and req.path == "/_matrix/federation/v1/version":
        return Response(200, VERSION_BODY, headers=[("Content-Type", "application/json")])
    headers = {}
    for n, v in req.headers:
        headers[n] = headers[n] + ", " + v if n in headers else v
    return json_response({"method": req.method, "path": req.target, "headers": headers,
                          "body_length": req.body_len})


class _Closed(Exception):
    pass


class _Conn:
    """Buffered reads on one accepted socket, aware of the upstream's stop flag."""

    def __init__(self, up, sock, conn_id):
        self.up = up
        self.sock = sock
        self.id = conn_id
        self.buf = bytearray()
        self.sock.settimeout(POLL)

    def fill(self, want=262144):
        idle_since = time.monotonic()
        while not self.up._stopping.is_set():
            try:
                data = self.sock.recv(want)
            except socket.timeout:
                if time.monotonic() - idle_since > IDLE_LIMIT:
                    raise _Closed("idle")
                continue
            except OSError as e:
                raise _Closed(str(e))
            if not data:
                raise _Closed("eof")
            self.up._count(self.id, data)
            self.buf += data
            return
        raise _Closed("stopping")

    def read_until(self, delim, limit):
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise _Closed("line too long")
            start = max(0, len(self.buf) - len(delim) + 1)
            self.fill()

    def read_some(self, n):
        if not self.buf:
            self.fill(min(max(n, 1), 1 << 20))
        out = bytes(self.buf[:n])
        del self.buf[:len(out)]
        return out

    def send(self, data):
        self.sock.settimeout(30)
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise _Closed(str(e))
        finally:
            self.sock.settimeout(POLL)


class Upstream:
    def __init__(self, host="127.0.0.1", port=0, handler=None, store_limit=16 << 20,
                 backlog=128, verbose=False):
        self.host = host
        self.port = port
        self.handler = handler
        self.store_limit = store_limit
        self.backlog = backlog
        self.verbose = verbose
        self.body_read_pause = None  # (after_bytes, seconds): stall reading a body once
        self.lock = threading.Lock()
        self.requests = []
        self.heads = []
        self.errors = []
        self.accepted = 0
        self.bytes_received = 0
        self.raw = {}  # conn_id -> first 64 KiB received, for diagnostics
        self.conn_closed = {}  # conn_id -> how it ended ("eof", "stopping", error text)
        self._stopping = threading.Event()
        self._threads = []
        self._socks = set()
        self._lsock = None

    # --- lifecycle ------------------------------------------------------------------
    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(self.backlog)
        self.port = s.getsockname()[1]
        self._lsock = s
        t = threading.Thread(target=self._accept_loop, name="upstream-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    @property
    def url(self):
        h = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d" % (h, self.port)

    def stop(self, timeout=5.0):
        self._stopping.set()
        with self.lock:
            socks = list(self._socks)
        for c in socks:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        if self._lsock is not None:
            self._lsock.close()
        for c in socks:
            try:
                c.close()
            except OSError:
                pass

    # --- observation ----------------------------------------------------------------
    def _count(self, conn_id, data):
        with self.lock:
            self.bytes_received += len(data)
            r = self.raw.setdefault(conn_id, bytearray())
            if len(r) < 65536:
                r += data[:65536 - len(r)]

    def wait_for(self, pred, timeout=5.0):
        """Poll pred() until true or timeout; returns its last value."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v or time.monotonic() >= deadline:
                return v
            time.sleep(0.01)

    def summary(self):
        """Human-readable dump of what arrived, for failure logs."""
        out = ["accepted=%d bytes_received=%d" % (self.accepted, self.bytes_received)]
        for h in self.heads:
            out.append("--- conn %d %s body=%d chunked=%s" % (
                h.conn_id, "complete" if h.complete else "INCOMPLETE", h.body_len, h.chunked))
            out.append(h.raw_head.decode("latin-1"))
        for cid, r in sorted(self.raw.items()):
            out.append("--- raw conn %d (%s): %r" % (cid, self.conn_closed.get(cid, "open"),
                                                    bytes(r[:2048])))
        for e in self.errors:
            out.append("error: " + e)
        return "\n".join(out)

    # --- serving --------------------------------------------------------------------
    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                r, _, _ = select.select([self._lsock], [], [], POLL)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                c, _ = self._lsock.accept()
            except OSError:
                continue
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.accepted += 1
                cid = self.accepted
                self._socks.add(c)
            t = threading.Thread(target=self._serve, args=(c, cid), name="upstream-%d" % cid,
                                 daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, sock, cid):
        conn = _Conn(self, sock, cid)
        how = "closed by upstream"
        try:
            while not self._stopping.is_set():
                req = self._read_request(conn)
                resp = self._respond(req)
                keep = self._write(conn, req, resp)
                if not keep:
                    break
        except _Closed as e:
            how = str(e)
        except Exception as e:  # a bug in a test handler: record it, drop the connection
            how = "error: %r" % (e,)
            self.errors.append("conn %d: %r" % (cid, e))
        finally:
            with self.lock:
                self.conn_closed[cid] = how
                self._socks.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _read_request(self, conn):
        raw = conn.read_until(b"\r\n\r\n", MAX_HEAD)
        for _ in range(4):  # RFC 9112 2.2: ignore empty lines before the request line
            if not raw.startswith(b"\r\n"):
                break
            conn.buf[:0] = raw[2:]
            raw = conn.read_until(b"\r\n\r\n", MAX_HEAD)
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self.errors.append("bad request line %r" % lines[0])
            raise _Closed("bad request line")
        headers = []
        for ln in lines[1:]:
            name, sep, value = ln.partition(b":")
            if not sep:
                self.errors.append("bad header line %r" % ln)
                raise _Closed("bad header line")
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        req = Request(conn.id, raw, *(p.decode("latin-1") for p in parts), headers)
        with self.lock:
            self.heads.append(req)
        te = ",".join(req.header_all("Transfer-Encoding")).lower()
        if "chunked" in te:
            req.chunked = True
            self._read_chunked(conn, req)
        elif req.header("Content-Length") is not None:
            self._read_body(conn, req, int(req.header("Content-Length")))
        req.complete = True
        with self.lock:
            self.requests.append(req)
        if self.verbose:
            print("%s %s (%d body bytes)" % (req.method, req.target, req.body_len), flush=True)
        return req

    def _take(self, req, data):
        req.body_len += len(data)
        req.body_crc = zlib.crc32(data, req.body_crc)
        room = self.store_limit - len(req.body)
        if room > 0:
            req.body += data[:room]

    def _read_body(self, conn, req, n):
        pause = self.body_read_pause
        while n > 0:
            data = conn.read_some(min(n, 1 << 20))
            self._take(req, data)
            n -= len(data)
            if pause and req.body_len >= pause[0]:
                self._stopping.wait(pause[1])
                pause = None

    def _read_chunked(self, conn, req):
        while True:
            line = conn.read_until(b"\r\n", 4096)
            size = int(line[:-2].split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            self._read_body(conn, req, size)
            if conn.read_until(b"\r\n", 2) != b"\r\n":
                raise _Closed("bad chunk end")
        while True:  # trailer section
            line = conn.read_until(b"\r\n", MAX_HEAD)
            if line == b"\r\n":
                return
            req.trailers.append(line[:-2].decode("latin-1"))

    def _respond(self, req):
        resp = None
        if self.handler is not None:
            resp = self.handler(req)
        return resp if resp is not None else default_handler(req)

    def _write(self, conn, req, resp):
        """Write resp; return True to keep the connection open."""
        try:
            if resp.delay:
                self._stopping.wait(resp.delay)
            if resp.hang:
                self._hang(conn)
                return False
            if resp.raw is not None:
                conn.send(resp.raw)
                return not (resp.close or resp.drop_after)
            no_body = req.method == "HEAD" or resp.status in (204, 304) or resp.status < 200
            headers = list(resp.headers)
            names = {n.lower() for n, _ in headers}
            if resp.auto_headers:
                if resp.chunked and "transfer-encoding" not in names:
                    headers.append(("Transfer-Encoding", "chunked"))
                elif not resp.chunked and "content-length" not in names and not (
                        resp.status in (204, 304) or resp.status < 200):
                    cl = resp.content_length if resp.content_length is not None else len(
                        resp.body)
                    headers.append(("Content-Length", str(cl)))
                if resp.close and "connection" not in names:
                    headers.append(("Connection", "close"))
            head = "HTTP/1.1 %d %s\r\n" % (resp.status, resp.reason)
            head += "".join("%s: %s\r\n" % hv for hv in headers) + "\r\n"
            out = head.encode("latin-1")
            if no_body:
                conn.send(out)
                return not (resp.close or resp.drop_after)
            pieces = resp.chunks if resp.chunks is not None else [resp.body]
            limit = resp.abort_after
            pending = bytearray(out)
            for piece in pieces:
                if not piece:
                    continue
                if limit is not None:
                    piece = piece[:max(0, limit - resp.sent)]
                    if not piece:
                        break
                resp.sent += len(piece)
                resp.sent_crc = zlib.crc32(piece, resp.sent_crc)
                if resp.chunked:
                    pending += b"%x\r\n" % len(piece) + piece + b"\r\n"
                elif pending:
                    pending += piece
                else:
                    conn.send(piece)
                if len(pending) >= 65536 or resp.chunks is not None:
                    conn.send(pending)
                    pending = bytearray()
                if limit is not None and resp.sent >= limit:
                    break
            if limit is not None:
                if pending:
                    conn.send(pending)
                return False
            if resp.chunked:
                pending += b"0\r\n\r\n"
            if pending:
                conn.send(pending)
            keep = not (resp.close or resp.drop_after)
            conn_hdr = (req.header("Connection") or "").lower()
            if "close" in conn_hdr or (req.version == "HTTP/1.0" and "keep-alive" not in conn_hdr):
                keep = False
            return keep
        finally:
            resp.done.set()

    def _hang(self, conn):
        """Hold the connection without answering until the peer closes it or stop()."""
        while not self._stopping.is_set():
            try:
                conn.fill()
            except _Closed:
                return


def main(argv=None):
    ap = argparse.ArgumentParser(description="toy Matrix homeserver upstream for chappe")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8008)
    ap.add_argument("--duration", type=float, default=0,
                    help="exit after this many seconds (default: run until SIGINT/SIGTERM)")
    ap.add_argument("-q", "--quiet", action="store_true", help="do not print each request")
    args = ap.parse_args(argv)
    up = Upstream(args.host, args.port, verbose=not args.quiet).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print("chappe-toy-upstream listening on %s" % up.url, flush=True)
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    while not done.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        done.wait(0.5)
    up.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
