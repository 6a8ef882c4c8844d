"""A remote Matrix server for chappe's signature-verification scenario tests: it publishes its
signing keys at GET /_matrix/key/v2/server over TLS and signs requests the way Synapse does.

  rs = RemoteServer(certs)                 # TLS on 127.0.0.1:PORT, server name "localhost:PORT"
  RemoteServer(certs, name_host="127.0.0.1")   # the same, named "127.0.0.1:PORT"
  auth = rs.sign("PUT", "/_matrix/federation/v1/send/t1", body)   # an Authorization value
  rs.fetches        key document requests served; rs.accepts  TCP connections accepted
  rs.rotate("a2")   a new current key; the old one moves to old_verify_keys
  rs.forged("a1")   a key the server never publishes (same or any key id)
  rs.vouches.append(other)   as a notary, POST /_matrix/key/v2/query answers with other's
                    document co-signed by rs (rs.queries counts those requests)
  rs.received       (method, path, headers dict, body bytes) of each request, in order
  rs.answers[path] = (status, body[, headers])   what a request to path (and query) gets
  rs.stop()

Failure modes for the queue's deliveries (test_queue.py):
  rs.down = True     every new connection is closed before TLS, and a request on a kept-alive
                     connection is dropped unanswered: to chappe, connection errors
  rs.hang = 1.5      each PUT is recorded, then answered only after that many seconds
  rs.put_script.append(answer)   answers taken in order by the next PUTs, before put_answer:
                     (status, obj) as for put_answer, or ("hang", seconds) (recorded, answered
                     with put_answer after that long), or ("drop",) (recorded, the connection
                     closed without an answer)
  rs.stop(); rs.start()   (or rs.restart()) listen again on the same port, same name and keys:
                     while stopped, connections are refused
  RemoteServer(certs, port=P)   listen on port P (default a free one)
  rs.txn_ids()       the txnIds of the PUT /send requests received, in order (repeats kept)
  rs.received_at     time.monotonic() of each request, parallel to received

The key document is built on each request: valid_until_ts = now + valid_for_ms, signed by
every current key. delay holds each answer back (bounded by stop()) so that concurrent
requests overlap one fetch."""
# SPDX-License-Identifier: ISC

import http.server
import json
import ssl
import threading
import time

from canonicaljson import encode_canonical_json
from signedjson.key import encode_verify_key_base64, generate_signing_key
from signedjson.sign import sign_json
from unpaddedbase64 import encode_base64

from harness import free_port

KEY_PATH = "/_matrix/key/v2/server"


def public(key):
    """The unpadded base64 public half of a signedjson signing key."""
    return encode_verify_key_base64(key.verify_key)


def xmatrix(origin, destination, key_id, sig):
    return 'X-Matrix origin="%s",destination="%s",key="%s",sig="%s"' % (
        origin, destination, key_id, sig)


class _Server(http.server.ThreadingHTTPServer):
    """Counts every TCP connection accepted, then does the TLS handshake in the connection's
    own thread (a stuck or failed handshake never blocks the accept loop)."""
    daemon_threads = True
    block_on_close = False

    def __init__(self, addr, handler, remote, ctx):
        self.remote = remote
        self.ctx = ctx
        self.stopping = remote._stopping  # this listener's: a restart makes a new one
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        with self.remote.lock:
            self.remote.accepts += 1
        return sock, addr

    def finish_request(self, request, client_address):
        if self.remote.down:
            request.close()  # to the client: a connection error, before any TLS
            return
        request.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            tls.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    # the head and the body of an answer are two writes: without TCP_NODELAY the second waits
    # for the client's delayed ACK (40 ms a request on a kept-alive connection)
    disable_nagle_algorithm = True

    def _down(self):
        """After stop(), or while rs.down: a kept-alive connection gets no answer, as from a
        server that died."""
        if self.server.stopping.is_set() or self.server.remote.down:
            self.close_connection = True
            return True
        return False

    def _record(self, method, body):
        rs = self.server.remote
        with rs.lock:
            rs.requests.append(self.path)
            rs.received.append((method, self.path, dict(self.headers.items()), body))
            rs.received_at.append(time.monotonic())
            rs.header_lists.append(self.headers.items())

    def do_GET(self):
        rs = self.server.remote
        if self._down():
            return
        self._record("GET", b"")
        if self._answered():
            return
        if self.path != KEY_PATH and not self.path.startswith(KEY_PATH + "/"):
            return self._send(404, {"errcode": "M_UNRECOGNIZED", "error": "not here"})
        with rs.lock:
            rs.fetches += 1
        if rs.delay:
            self.server.stopping.wait(rs.delay)
        self._send(200, rs.document())

    def do_PUT(self):
        """Any PUT (a transaction, ...): recorded as received, answered with the first of
        rs.put_script if any (taken), else rs.put_answer, after rs.hang seconds."""
        rs = self.server.remote
        if self._down():
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._record("PUT", body)
        with rs.lock:
            answer = rs.put_script.pop(0) if rs.put_script else rs.put_answer
            hang = rs.hang
        if answer[0] == "drop":
            self.close_connection = True
            return
        if answer[0] == "hang":
            hang = answer[1]
            answer = rs.put_answer
        if hang:
            self.server.stopping.wait(hang)
            if self.server.stopping.is_set():
                self.close_connection = True
                return
        if not self._answered():
            self._send(*answer)

    def do_POST(self):
        rs = self.server.remote
        if self._down():
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._record("POST", body)
        if self._answered():
            return
        if self.path != "/_matrix/key/v2/query":
            return self._send(404, {"errcode": "M_UNRECOGNIZED", "error": "not here"})
        with rs.lock:
            rs.queries += 1
            asked = json.loads(body).get("server_keys", {})
            vouched = [o for o in rs.vouches if o.name in asked]
        self._send(200, {"server_keys": [rs.cosign(o.document()) for o in vouched]})

    def do_DELETE(self):
        """Recorded; answered from rs.answers, else 404."""
        if self._down():
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._record("DELETE", body)
        if not self._answered():
            self._send(404, {"errcode": "M_UNRECOGNIZED", "error": "not here"})

    def _answered(self):
        """Answer from rs.answers[path] (path with its query) if there is one: (status, body[,
        headers]) where body is bytes sent as they are or an object sent as JSON, headers extra
        (name, value) pairs; with ("Transfer-Encoding", "chunked") among them the body goes
        in chunks of 7 bytes instead of with a Content-Length."""
        rs = self.server.remote
        with rs.lock:
            answer = rs.answers.get(self.path)
        if answer is None:
            return False
        status, body, headers = (tuple(answer) + ((),))[:3]
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        chunked = any(n.lower() == "transfer-encoding" for n, _ in headers)
        self.send_response(status)
        for n, v in headers:
            self.send_header(n, v)
        if not chunked:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if chunked:
            for i in range(0, len(body), 7):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)
        return True

    def _send(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class RemoteServer:
    def __init__(self, certs, key_versions=("a1",), valid_for_ms=3600_000, delay=0.0,
                 host="127.0.0.1", name_host=None, port=None):
        self.lock = threading.Lock()
        self.keys = {v: generate_signing_key(v) for v in key_versions}  # current, in order
        self.old = {}  # "ed25519:id" -> {"key": pub, "expired_ts": ms}
        self.valid_for_ms = valid_for_ms
        self.delay = delay
        self.fetches = 0
        self.accepts = 0
        self.queries = 0  # notary queries (POST /_matrix/key/v2/query)
        self.vouches = []  # RemoteServers whose documents this one serves as a notary
        self.requests = []  # paths asked, in order
        self.received = []  # (method, path, headers, body) of each request, in order
        self.put_answer = (200, {"pdus": {}})  # what a PUT gets
        # path (with query) -> (status, body[, headers]): what any request to it gets instead
        # (see _Handler._answered); header_lists: each request's header (name, value) pairs
        # as sent, in order and with repeats, parallel to received
        self.answers = {}
        self.header_lists = []
        self.received_at = []  # time.monotonic() of each request, parallel to received
        self.down = False  # True: connections closed unanswered (see _Server, _Handler._down)
        self.hang = 0.0  # seconds each PUT waits before its answer
        self.put_script = []  # answers for the next PUTs, taken in order (see do_PUT)
        self.host = host
        self.port = port if port is not None else free_port()
        if name_host is None:  # discovery: "localhost:PORT" connects to localhost, port PORT
            name_host = "localhost" if host == "127.0.0.1" else host
        self.name = "%s:%d" % (name_host, self.port)
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(str(certs.server_crt), str(certs.server_key))
        self.httpd = None
        self.start()

    def start(self, timeout=5.0):
        """Listen (again) on self.port. The port was just freed by stop(): binding may take a
        few tries while the kernel lets go of it (bounded)."""
        if self.httpd is not None:
            return
        self._stopping = threading.Event()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.httpd = _Server((self.host, self.port), _Handler, self, self._ctx)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.1,),
                                       daemon=True)
        self.thread.start()

    def restart(self):
        """Stop, then listen again on the same port with the same name and keys."""
        self.stop()
        self.start()

    def txn_ids(self):
        """The txnIds of the PUT /_matrix/federation/v1/send/{txnId} requests received, in
        order, repeats included."""
        prefix = "/_matrix/federation/v1/send/"
        with self.lock:
            return [p[len(prefix):] for m, p, _, _ in self.received
                    if m == "PUT" and p.startswith(prefix)]

    # --- keys ------------------------------------------------------------------------
    @property
    def key(self):
        """The newest current key."""
        with self.lock:
            return list(self.keys.values())[-1]

    def key_id(self, key=None):
        key = key if key is not None else self.key
        return "%s:%s" % (key.alg, key.version)

    def public(self, version=None):
        with self.lock:
            k = self.keys[version] if version else list(self.keys.values())[-1]
        return public(k)

    def rotate(self, new_version):
        """Publish a new key in place of the current ones, which become old_verify_keys."""
        new = generate_signing_key(new_version)
        now = int(time.time() * 1000)
        with self.lock:
            for k in self.keys.values():
                self.old[self.key_id(k)] = {"key": public(k), "expired_ts": now}
            self.keys = {new_version: new}
        return new

    @staticmethod
    def forged(version="a1"):
        """A key with that id which the server never publishes."""
        return generate_signing_key(version)

    def document(self):
        with self.lock:
            keys = list(self.keys.values())
            old = dict(self.old)
        doc = {"server_name": self.name,
               "verify_keys": {self.key_id(k): {"key": public(k)} for k in keys},
               "old_verify_keys": old,
               "valid_until_ts": int(time.time() * 1000) + self.valid_for_ms}
        return self.cosign(doc, keys)

    def cosign(self, doc, keys=None):
        """doc with this server's signature added, by each current key (or by keys)."""
        if keys is None:
            with self.lock:
                keys = list(self.keys.values())
        for k in keys:
            doc = sign_json(doc, self.name, k)
        return doc

    # --- requests --------------------------------------------------------------------
    def sign(self, method, uri, body=None, destination="hs.localhost", key=None, key_id=None,
             signed_destination=None):
        """The Authorization value for a request from this server (server-server API,
        "Request Authentication"). body: the request body (bytes/str, parsed as JSON) or an
        object; key: a signing key (default the current one); key_id: the id the header
        claims (default the key's own); signed_destination: what the signature covers when
        it differs from the header."""
        key = key if key is not None else self.key
        obj = {"method": method, "uri": uri, "origin": self.name,
               "destination": signed_destination or destination}
        if body is not None:
            obj["content"] = json.loads(body) if isinstance(body, (bytes, str)) else body
        sig = encode_base64(key.sign(encode_canonical_json(obj)).signature)
        return xmatrix(self.name, destination, key_id or self.key_id(key), sig)

    def stop(self):
        """Stop listening (idempotent): new connections are refused, kept-alive ones get no
        more answers."""
        if self.httpd is None:
            return
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
        self.httpd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
