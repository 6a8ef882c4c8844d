"""Scenario: the egress listener (issue 6, first part). A fronted homeserver sends its outbound
federation as Synapse's outbound_federation_restricted_to does -- `GET
matrix-federation://DEST/PATH` with `Proxy-Authorization: Bearer <secret>` -- and chappe lets
it reach only allowlisted destinations at sovereign addresses, sending each request on
unchanged. Destinations are RemoteServers (fedremote.py) on loopback over TLS."""
# SPDX-License-Identifier: ISC

import json
import os
import socket

import pytest
from canonicaljson import encode_canonical_json
from signedjson.key import decode_verify_key_base64
from signedjson.sign import verify_signed_json

from fedremote import RemoteServer
import harness
from harness import free_port, make_config, run_cli, to_yaml
from httpc import REMOTE_KEY, xmatrix

SECRET = "egress-secret-of-hs-0123"
OTHER_SECRET = "egress-secret-of-hs2-4567"


class Resp:
    def __init__(self, raw):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines[1:]]

    def header(self, name):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


def read_response(sock):
    """One response with a Content-Length body (what chappe and the RemoteServer send)."""
    data = b""
    sock.settimeout(20)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for ln in head.split(b"\r\n")[1:]:
        n, _, v = ln.partition(b":")
        if n.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Resp(head + b"\r\n\r\n" + body[:length])


def request(port, line, headers=(), body=None, auth="Bearer " + SECRET, sock=None):
    own = sock is None
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        h = [line, "Host: whatever"]
        if auth is not None:
            h.append("Proxy-Authorization: " + auth)
        h += ["%s: %s" % kv for kv in headers]
        if body is not None:
            h.append("Content-Length: %d" % len(body))
        s.sendall(("\r\n".join(h) + "\r\n\r\n").encode("latin-1") + (body or b""))
        return read_response(s)
    finally:
        if own:
            s.close()


@pytest.fixture
def egress(certs, tmp_path, start_chappe, make_upstream):
    """egress(**config) -> (chappe, egress port): hs.localhost (and hs2.localhost) fronted, each
    with its egress secret file, the test CA trusted for destinations."""
    def go(**extra):
        secrets = []
        for name, secret in (("hs", SECRET), ("hs2", OTHER_SECRET)):
            p = tmp_path / ("%s.secret" % name)
            p.write_text(secret + "\n")
            os.chmod(p, 0o600)
            secrets.append(str(p))
        up = make_upstream()
        port = free_port()
        cfg = make_config(certs, free_port(), None,
                          [("hs.localhost", up.url), ("hs2.localhost", up.url)],
                          extra=dict({"federation_custom_ca_list": [str(certs.ca)]}, **extra))
        for h, p in zip(cfg["homeservers"], secrets):
            h["egress_secret_path"] = p
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


def test_key_document_through_the_egress(egress, remote):
    rs = remote()
    ch, port = egress()
    r = request(port, "GET matrix-federation://%s/_matrix/key/v2/server HTTP/1.1" % rs.name)
    assert r.status == 200, r
    doc = r.json()
    verify_signed_json(doc, rs.name, decode_verify_key_base64("ed25519", "a1", rs.public()))
    (method, path, headers, _), = rs.received
    assert (method, path) == ("GET", "/_matrix/key/v2/server")
    assert not any(k.lower() == "proxy-authorization" for k in headers), headers
    assert '"listener":"egress"' in ch.stdout() and '"origin":"hs.localhost"' in ch.stdout()


def test_signed_transaction_goes_on_unchanged(egress, remote):
    rs = remote()
    rs.put_answer = (200, {"pdus": {"$e": {}}})
    ch, port = egress()
    body = encode_canonical_json({"origin": "hs.localhost", "origin_server_ts": 1, "pdus": [],
                                  "edus": [{"edu_type": "m.typing", "content": {}}]})
    path = "/_matrix/federation/v2/invite/%21r:hs.localhost/t1"
    auth = xmatrix("PUT", path, body, origin="hs.localhost", destination=rs.name,
                   key=REMOTE_KEY)
    r = request(port, "PUT matrix-federation://%s%s HTTP/1.1" % (rs.name, path),
                headers=[auth, ("Content-Type", "application/json")], body=body)
    assert r.status == 200, r
    assert r.json() == {"pdus": {"$e": {}}}
    (method, got_path, headers, got_body), = rs.received
    assert (method, got_path, got_body) == ("PUT", path, body)
    assert headers["Authorization"] == auth[1]
    assert headers["Content-Type"] == "application/json"


def test_query_string_passed_exactly(egress, remote):
    rs = remote()
    ch, port = egress()
    path = "/_matrix/federation/v1/query/profile?user_id=%40a%3Ab&field=displayname"
    r = request(port, "GET matrix-federation://%s%s HTTP/1.1" % (rs.name, path))
    assert r.status == 404, r  # the RemoteServer knows no such path: its answer comes back
    assert rs.requests == [path]


def test_secrets(egress, remote):
    rs = remote()
    ch, port = egress()
    line = "GET matrix-federation://%s/_matrix/key/v2/server HTTP/1.1" % rs.name
    r = request(port, line, auth=None)
    assert r.status == 401 and r.json()["errcode"] == "M_MISSING_TOKEN", r
    r = request(port, line, auth="Bearer " + SECRET[:-1])
    assert r.status == 401 and r.json()["errcode"] == "M_UNAUTHORIZED", r
    r = request(port, line, auth="Basic " + SECRET)
    assert r.status == 401 and r.json()["errcode"] == "M_UNAUTHORIZED", r
    assert rs.accepts == 0
    assert request(port, line, auth="Bearer " + OTHER_SECRET).status == 200
    assert '"origin":"hs2.localhost"' in ch.stdout()


def test_destination_not_allowlisted_is_never_contacted(egress, remote):
    rs = remote()
    ch, port = egress(federation_domain_whitelist=["*.localhost"])
    r = request(port, "GET matrix-federation://%s/_matrix/key/v2/server HTTP/1.1" % rs.name)
    assert r.status == 403 and r.json()["errcode"] == "M_FORBIDDEN", r
    assert "name_not_allowed" in r.json()["error"]
    assert rs.accepts == 0


def test_destination_outside_sovereign_ranges_is_never_contacted(egress, remote):
    rs = remote(host="127.0.0.2")
    ch, port = egress(sovereign_ranges=["127.0.0.1/32", "::1/128"],
                      federation_domain_whitelist=["localhost", "*.localhost", "127.0.0.2"])
    r = request(port, "GET matrix-federation://%s/_matrix/key/v2/server HTTP/1.1" % rs.name)
    assert r.status == 403 and r.json()["errcode"] == "M_FORBIDDEN", r
    assert "address_not_sovereign" in r.json()["error"], r
    assert rs.accepts == 0


@pytest.mark.parametrize("line,status", [
    ("GET /_matrix/key/v2/server HTTP/1.1", 400),
    ("GET matrix-federation://user@localhost:1/x HTTP/1.1", 400),
    ("GET matrix-federation://localhost:1 HTTP/1.1", 400),
    ("GET matrix-federation://local%68ost:1/x HTTP/1.1", 400),
    ("CONNECT localhost:443 HTTP/1.1", 501),
    ("GET https://localhost:1/x HTTP/1.1", 502),  # https:// works: nothing listens on port 1
])
def test_bad_targets(egress, line, status):
    ch, port = egress()
    r = request(port, line)
    assert r.status == status, r


def test_destination_down(egress):
    ch, port = egress()
    dead = "localhost:%d" % free_port()
    r = request(port, "GET matrix-federation://%s/_matrix/key/v2/server HTTP/1.1" % dead)
    assert r.status == 502 and r.json()["errcode"] == "M_UNKNOWN", r


def test_keep_alive(egress, remote):
    rs = remote()
    ch, port = egress()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        for _ in range(3):
            r = request(port, "GET matrix-federation://%s/_matrix/key/v2/server HTTP/1.1"
                        % rs.name, sock=s)
            assert r.status == 200, r
    assert rs.fetches == 3


@pytest.mark.parametrize("mode,content,missing,text", [
    (0o644, SECRET, False, "chmod 600"),
    (0o600, "short", False, "shorter than 16 bytes"),
    (0o600, SECRET, True, "egress_secret_path is required with an egress listener"),
])
def test_secret_files_checked_at_start(certs, tmp_path, mode, content, missing, text):
    """check-config and run refuse a secret others can read, a short one, or none at all."""
    p = tmp_path / "hs.secret"
    p.write_text(content + "\n")
    os.chmod(p, mode)
    cfg = make_config(certs, free_port(), None, [("hs.localhost", "http://127.0.0.1:9")],
                      extra={"queue": {"path": str(tmp_path / "store")}})
    if not missing:
        cfg["homeservers"][0]["egress_secret_path"] = str(p)
    cfg["listeners"].append({"type": "egress", "bind": ["127.0.0.1:%d" % free_port()],
                             "tls": False})
    path = tmp_path / "chappe.yaml"
    path.write_text(to_yaml(cfg))
    for cmd in (["check-config"], ["run"]):
        r = run_cli(harness.debug_bin(), cmd + ["-c", str(path)], timeout=20)
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert text in r.stderr, (cmd, r.stderr)
    assert not (tmp_path / "store").exists(), "a refused start created the store"
