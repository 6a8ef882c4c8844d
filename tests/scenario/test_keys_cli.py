"""Scenario: `chappe keys fetch` and `chappe keys list` -- a remote server's signing keys fetched
through the outbound client (discovery, policy, verified TLS), validated and stored in LMDB.

The remote server is a second chappe: it serves its own /_matrix/key/v2/server for its
server_name, here "localhost:PORT", over TLS with the dev certificate."""
# SPDX-License-Identifier: ISC

import harness
from harness import SANITIZER_MARKERS, free_port, make_config, run_cli, to_yaml


def no_sanitizer(text):
    for m in SANITIZER_MARKERS:
        assert m not in text, "sanitizer report:\n%s" % text[-3000:]


def keygen(tmp_path, name):
    p = tmp_path / name
    r = run_cli(harness.debug_bin(), ["keygen", "-o", str(p)])
    assert r.returncode == 0, r.stderr
    r = run_cli(harness.debug_bin(), ["key", "public", "--key", str(p)])
    key_id, pub = r.stdout.split()
    return p, key_id, pub


def remote(certs, tmp_path):
    """A chappe publishing its key as localhost:PORT; returns (process, name, key id, key)."""
    port = free_port()
    key, key_id, pub = keygen(tmp_path, "remote.key")
    cfg = make_config(certs, port, None, [("hs.localhost", "http://127.0.0.1:%d" % free_port())],
                      extra={"server_name": "localhost:%d" % port, "signing_key_path": str(key)})
    (tmp_path / "remote").mkdir()
    ch = harness.Chappe(harness.debug_bin(), tmp_path / "remote", to_yaml(cfg), name="remote")
    ch.start()
    return ch, "localhost:%d" % port, key_id, pub


def cli_config(certs, tmp_path, whitelist=("localhost",)):
    cfg = make_config(certs, free_port(), None, [("hs.localhost", "http://127.0.0.1:9")],
                      extra={"federation_domain_whitelist": list(whitelist),
                             "federation_custom_ca_list": [str(certs.ca)],
                             "queue": {"path": str(tmp_path / "store")}})
    p = tmp_path / "cli.yaml"
    p.write_text(to_yaml(cfg))
    return p


def keys(cfg, *args):
    r = run_cli(harness.debug_bin(), ["keys"] + list(args) + ["-c", str(cfg)], timeout=30)
    no_sanitizer(r.stderr)
    return r


def test_fetch_then_list(certs, tmp_path):
    ch, name, key_id, pub = remote(certs, tmp_path)
    try:
        cfg = cli_config(certs, tmp_path)
        r = keys(cfg, "list")
        assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
        assert "no key stored" in r.stderr
        r = keys(cfg, "fetch", name)
        assert r.returncode == 0, r.stdout + r.stderr
        # the discovery steps went through the policy, then the key is printed as stored
        assert "name %s: allow" % name in r.stderr, r.stderr
        assert "address 127.0.0.1: allow" in r.stderr, r.stderr
        line = "%s %s %s valid_until=" % (name, key_id, pub)
        assert r.stdout.startswith(line) and "source=direct" in r.stdout, r.stdout
        # stored durably: a later process lists it, and only for that server
        r = keys(cfg, "list")
        assert r.returncode == 0 and r.stdout.startswith(line), r.stdout + r.stderr
        r = keys(cfg, "list", name)
        assert r.stdout.startswith(line), r.stdout
        r = keys(cfg, "list", "other.localhost")
        assert r.returncode == 0 and r.stdout == "", r.stdout
    finally:
        ch.stop()


def test_fetch_denied_name_touches_nothing(certs, tmp_path):
    ch, name, _, _ = remote(certs, tmp_path)
    try:
        cfg = cli_config(certs, tmp_path, whitelist=("*.localhost",))
        r = keys(cfg, "fetch", name)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "name_not_allowed" in r.stderr, r.stderr
        assert "connect" not in r.stderr, r.stderr
        assert keys(cfg, "list").stdout == ""
        # the remote never saw a request
        assert "/_matrix/key/v2/server" not in ch.stdout()
    finally:
        ch.stop()


def test_fetch_refuses_a_document_for_another_name(certs, tmp_path):
    """localhost:PORT answers, but asked as 127.0.0.1:PORT its Host routes the request to the
    (absent) homeserver: no key document, nothing stored."""
    ch, name, _, _ = remote(certs, tmp_path)
    try:
        cfg = cli_config(certs, tmp_path, whitelist=("localhost", "127.0.0.1"))
        ip_name = name.replace("localhost", "127.0.0.1")
        r = keys(cfg, "fetch", ip_name)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "answered HTTP 502" in r.stderr, r.stderr
        assert keys(cfg, "list").stdout == ""
    finally:
        ch.stop()


def test_usage(certs, tmp_path):
    cfg = cli_config(certs, tmp_path)
    assert keys(cfg, "fetch").returncode == 2
    assert run_cli(harness.debug_bin(), ["keys", "nope"]).returncode == 2


# --- notaries (trusted_key_servers) and pins --------------------------------------------------

class Notary:
    """A minimal notary over TLS on 127.0.0.1 (dev certificate, name localhost:PORT): it answers
    POST /_matrix/key/v2/query with a key document for ghost.localhost, signed by ghost's key
    and co-signed by the notary's (or, with forge=True, by another key)."""

    def __init__(self, certs, forge=False):
        import http.server
        import json
        import ssl
        import threading
        import time
        from signedjson.key import generate_signing_key, encode_verify_key_base64
        from signedjson.sign import sign_json

        self.requests = []
        self.key = generate_signing_key("n1")
        self.pub = encode_verify_key_base64(self.key.verify_key)
        ghost = generate_signing_key("g1")
        self.ghost_pub = encode_verify_key_base64(ghost.verify_key)
        signer = generate_signing_key("n1") if forge else self.key
        port = free_port()
        self.name = "localhost:%d" % port
        doc = {"server_name": "ghost.localhost",
               "valid_until_ts": int(time.time() * 1000) + 3600 * 1000,
               "verify_keys": {"ed25519:g1": {"key": self.ghost_pub}},
               "old_verify_keys": {}}
        doc = sign_json(doc, "ghost.localhost", ghost)
        doc = sign_json(doc, self.name, signer)
        body = json.dumps({"server_keys": [doc]}).encode()
        notary = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                notary.requests.append((self.path, json.loads(self.rfile.read(n))))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(certs.server_crt), str(certs.server_key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def notary_config(certs, tmp_path, notary, pins=None):
    cfg = make_config(certs, free_port(), None, [("hs.localhost", "http://127.0.0.1:9")],
                      extra={"federation_domain_whitelist": ["localhost", "*.localhost"],
                             "federation_custom_ca_list": [str(certs.ca)],
                             "queue": {"path": str(tmp_path / "store")},
                             "trusted_key_servers": [{"server_name": notary.name,
                                                      "verify_keys": {"ed25519:n1": notary.pub}}],
                             "pinned_keys": pins or {}})
    p = tmp_path / "notary.yaml"
    p.write_text(to_yaml(cfg))
    return p


def test_fetch_through_a_trusted_notary(certs, tmp_path):
    nt = Notary(certs)
    try:
        cfg = notary_config(certs, tmp_path, nt)
        r = keys(cfg, "fetch", "ghost.localhost")
        assert r.returncode == 0, r.stdout + r.stderr
        assert nt.requests == [("/_matrix/key/v2/query",
                                {"server_keys": {"ghost.localhost": {}}})], nt.requests
        want = "ghost.localhost ed25519:g1 %s valid_until=" % nt.ghost_pub
        assert r.stdout.startswith(want), r.stdout
        assert "source=notary:%s" % nt.name in r.stdout, r.stdout
        assert keys(cfg, "list", "ghost.localhost").stdout == r.stdout
    finally:
        nt.close()


def test_notary_answer_without_its_signature_is_refused(certs, tmp_path):
    """Co-signed by a key the config does not trust: refused; the fallback (the server itself)
    does not resolve; nothing is stored."""
    nt = Notary(certs, forge=True)
    try:
        cfg = notary_config(certs, tmp_path, nt)
        r = keys(cfg, "fetch", "ghost.localhost")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "notary answer refused" in r.stderr, r.stderr
        assert len(nt.requests) == 1
        assert keys(cfg, "list").stdout == ""
    finally:
        nt.close()


def test_pinned_keys_are_never_fetched(certs, tmp_path):
    nt = Notary(certs)
    try:
        pub = nt.ghost_pub
        cfg = notary_config(certs, tmp_path, nt, pins={"ghost.localhost": {"ed25519:p": pub}})
        r = keys(cfg, "fetch", "ghost.localhost")
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("ghost.localhost ed25519:p %s source=pinned (" % pub), r.stdout
        assert "never fetched" in r.stderr
        assert nt.requests == []
        r = keys(cfg, "list")
        assert r.stdout.startswith("ghost.localhost ed25519:p %s source=pinned" % pub), r.stdout
    finally:
        nt.close()


# --- the relay as a notary (GET /_matrix/key/v2/query/{serverName}) ----------------------------

def https_json(port, path, ca, method="GET", body=None):
    import http.client
    import json
    import ssl
    ctx = ssl.create_default_context(cafile=str(ca))
    c = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        c.request(method, path, body=data, headers={"Host": "localhost:%d" % port})
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        c.close()


def https_get_json(port, path, ca):
    return https_json(port, path, ca)


def test_relay_serves_cached_keys_as_a_notary(certs, tmp_path):
    from signedjson.key import decode_verify_key_base64
    from signedjson.sign import verify_signed_json
    ch, name, key_id, pub = remote(certs, tmp_path)
    port = free_port()
    rkey, rkey_id, rpub = keygen(tmp_path, "relay.key")
    cfg = make_config(certs, port, None, [("hs.localhost", "http://127.0.0.1:9")],
                      extra={"server_name": "localhost:%d" % port,
                             "signing_key_path": str(rkey),
                             "federation_domain_whitelist": ["localhost", "*.localhost"],
                             "federation_custom_ca_list": [str(certs.ca)],
                             "queue": {"path": str(tmp_path / "relay-store")}})
    (tmp_path / "relay").mkdir()
    relay = harness.Chappe(harness.debug_bin(), tmp_path / "relay", to_yaml(cfg), name="relay")
    relay.start()
    try:
        q = "/_matrix/key/v2/query/%s" % name
        # the operator fetches the key while the relay runs (the store is shared)
        r = keys(relay.cfg_path, "fetch", name)
        assert r.returncode == 0, r.stdout + r.stderr
        status, body = https_get_json(port, q, certs.ca)
        assert status == 200 and len(body["server_keys"]) == 1, body
        doc = body["server_keys"][0]
        assert doc["server_name"] == name
        # signed by the origin and co-signed by the relay: both verify with signedjson
        verify_signed_json(doc, name, decode_verify_key_base64("ed25519", key_id.split(":")[1],
                                                               pub))
        verify_signed_json(doc, "localhost:%d" % port,
                           decode_verify_key_base64("ed25519", rkey_id.split(":")[1], rpub))
        # with the key id, and honouring minimum_valid_until_ts
        assert len(https_get_json(port, q + "/" + key_id, certs.ca)[1]["server_keys"]) == 1
        assert https_get_json(port, q + "/ed25519:other", certs.ca)[1] == {"server_keys": []}
        far = q + "?minimum_valid_until_ts=%d" % (2 ** 50)
        assert https_get_json(port, far, certs.ca)[1] == {"server_keys": []}
        # a server outside the allowlist is simply absent; a bad name is a 400
        assert https_get_json(port, "/_matrix/key/v2/query/evil.example",
                              certs.ca)[1] == {"server_keys": []}
        status, body = https_get_json(port, "/_matrix/key/v2/query/a..b", certs.ca)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", body
        # the batch form: one document per server asked, others absent
        q = {"server_keys": {name: {}, "evil.example": {}, "nothing.localhost": {}}}
        status, body = https_json(port, "/_matrix/key/v2/query", certs.ca, "POST", q)
        assert status == 200 and [d["server_name"] for d in body["server_keys"]] == [name], body
        verify_signed_json(body["server_keys"][0], "localhost:%d" % port,
                           decode_verify_key_base64("ed25519", rkey_id.split(":")[1], rpub))
        q = {"server_keys": {name: {key_id: {"minimum_valid_until_ts": 2 ** 50}}}}
        assert https_json(port, "/_matrix/key/v2/query", certs.ca, "POST", q) == \
            (200, {"server_keys": []})
        status, body = https_json(port, "/_matrix/key/v2/query", certs.ca, "POST", b"{nope")
        assert status == 400 and body["errcode"] == "M_NOT_JSON", body
        status, body = https_json(port, "/_matrix/key/v2/query", certs.ca, "POST",
                                  {"server_keys": []})
        assert status == 400 and body["errcode"] == "M_BAD_JSON", body
        status, body = https_json(port, "/_matrix/key/v2/query", certs.ca, "POST",
                                  b"{" + b" " * 70000 + b"}")
        assert status == 413, body
    finally:
        relay.stop()
        ch.stop()
    no_sanitizer(relay.stderr())
