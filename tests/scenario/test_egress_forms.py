"""Scenario: the egress's other request forms (issue 6, item 1). `https://HOST/PATH` in
absolute-form over plain HTTP, as any HTTP proxy client sends it, and (with the egress CA)
CONNECT with interception. In both the authority is whatever host the homeserver's own discovery
found, so chappe decides on the server name: the X-Matrix destination where the request is
signed, else the host as given. A signed request goes to its destination through chappe's own
discovery, never to the authority as written."""
# SPDX-License-Identifier: ISC

import time

from httpc import canonical, xmatrix
from harness import free_port
from test_egress_proxy import egress, remote, request  # noqa: F401 (fixtures)

KEY = "/_matrix/key/v2/server"


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_https_signed_goes_to_its_destination_not_the_authority(egress, remote):
    """The authority names a host where nothing listens; the request is signed for rs, and it is
    rs (found by chappe's discovery) that gets it, unchanged."""
    rs = remote()
    ch, port = egress()
    path = "/_matrix/federation/v1/query/profile?user_id=%40a%3Ahs.localhost"
    rs.answers[path] = (200, {"displayname": "a"})
    sig = xmatrix("GET", path, None, origin="hs.localhost", destination=rs.name)
    nowhere = "localhost:%d" % free_port()
    r = request(port, "GET https://%s%s HTTP/1.1" % (nowhere, path), headers=[sig])
    assert r.status == 200, r
    assert r.json() == {"displayname": "a"}
    (m, p, h, _), = rs.received
    assert (m, p, h["Authorization"]) == ("GET", path, sig[1])
    log = [e for e in ch.access_log() if e.get("listener") == "egress"]
    assert log[-1]["destination"] == rs.name and log[-1]["form"] == "https", log[-1]


def test_https_unsigned_goes_to_the_host_as_given(egress, remote):
    """A key document or .well-known fetch is not signed: it goes to the host and port written
    (port 443 when none), which must itself be allowed."""
    rs = remote()
    ch, port = egress()
    r = request(port, "GET https://%s%s HTTP/1.1" % (rs.name, KEY))
    assert r.status == 200, r
    assert r.json()["server_name"] == rs.name
    assert rs.requests == [KEY]


def test_https_policy_on_the_signed_destination(egress, remote):
    """Signed for a server outside the allowlist: 403 before anything is contacted, even though
    the authority written is an allowed host."""
    rs = remote()
    ch, port = egress(federation_domain_whitelist=["localhost"])
    path = "/_matrix/federation/v1/version"
    sig = xmatrix("GET", path, None, origin="hs.localhost", destination="evil.example")
    r = request(port, "GET https://%s%s HTTP/1.1" % (rs.name, path), headers=[sig])
    assert r.status == 403 and r.json()["errcode"] == "M_FORBIDDEN", r
    assert "evil.example" in r.json()["error"] and "name_not_allowed" in r.json()["error"], r
    assert rs.accepts == 0 and rs.received == []
    # unsigned, to a host outside the allowlist: the same
    r = request(port, "GET https://other.example:8448%s HTTP/1.1" % KEY)
    assert r.status == 403 and "other.example:8448" in r.json()["error"], r


def test_https_transaction_is_queued(egress, remote):
    """PUT /send in https:// form: checked, stored, acked with 200 {"pdus":{}}, then delivered
    to the signed destination."""
    rs = remote()
    ch, port = egress()
    path = "/_matrix/federation/v1/send/https-1"
    body = canonical({"origin": "hs.localhost", "pdus": [], "edus": [{"edu_type": "m.typing"}]})
    sig = xmatrix("PUT", path, body, origin="hs.localhost", destination=rs.name)
    r = request(port, "PUT https://localhost:%d%s HTTP/1.1" % (free_port(), path),
                headers=[sig, ("Content-Type", "application/json")], body=body)
    assert r.status == 200 and r.body == b'{"pdus":{}}', r
    assert wait_for(lambda: len(rs.received) == 1)
    (m, p, h, b), = rs.received
    assert (m, p, b, h["Authorization"]) == ("PUT", path, body, sig[1])


def test_signed_for_another_destination_is_refused(egress, remote):
    """matrix-federation://A with a signature for B: 401, nothing sent (what is checked is what
    is sent). A malformed X-Matrix header: 401 too."""
    rs = remote()
    other = remote()
    ch, port = egress()
    path = "/_matrix/federation/v1/version"
    sig = xmatrix("GET", path, None, origin="hs.localhost", destination=other.name)
    r = request(port, "GET matrix-federation://%s%s HTTP/1.1" % (rs.name, path), headers=[sig])
    assert r.status == 401 and r.json()["errcode"] == "M_UNAUTHORIZED", r
    assert "signed for %s" % other.name in r.json()["error"], r
    r = request(port, "GET matrix-federation://%s%s HTTP/1.1" % (rs.name, path),
                headers=[("Authorization", 'X-Matrix origin="hs.localhost",key="ed25519:a"')])
    assert r.status == 401 and "X-Matrix" in r.json()["error"], r
    assert rs.received == [] and other.received == []


# --- local destinations: the fronted homeservers and the relay itself --------------------------
import os  # noqa: E402

import harness  # noqa: E402
from harness import make_config, run_cli  # noqa: E402
from test_egress_proxy import SECRET  # noqa: E402


def local_setup(certs, tmp_path, start_chappe, make_upstream, **extra):
    """hs.localhost and hs2.localhost, each with its own upstream; only "localhost" allowlisted,
    so the fronted homeservers are reachable only because they are local."""
    up1, up2 = make_upstream(), make_upstream()
    secrets = []
    for name, text in (("hs", SECRET), ("hs2", "another-secret-of-hs2-0123")):
        p = tmp_path / ("%s.secret" % name)
        p.write_text(text + "\n")
        os.chmod(p, 0o600)
        secrets.append(str(p))
    key = tmp_path / "relay.key"
    r = run_cli(harness.debug_bin(), ["keygen", "-o", str(key)])
    assert r.returncode == 0, r.stderr
    cfg = make_config(certs, free_port(), None,
                      [("hs.localhost", up1.url), ("hs2.localhost", up2.url)],
                      extra=dict({"federation_domain_whitelist": ["localhost"],
                                  "signing_key_path": str(key),
                                  "federation_custom_ca_list": [str(certs.ca)]}, **extra))
    for h, p in zip(cfg["homeservers"], secrets):
        h["egress_secret_path"] = p
    port = free_port()
    cfg["listeners"].append({"type": "egress", "bind": ["127.0.0.1:%d" % port]})
    return start_chappe(cfg), port, up1, up2


def test_fronted_homeservers_reach_each_other_locally(certs, tmp_path, start_chappe,
                                                      make_upstream):
    """hs -> hs2 goes to hs2's upstream directly (no discovery, no allowlist entry needed), with
    the same guarantees: a transaction is queued, then delivered with its signature."""
    ch, port, up1, up2 = local_setup(certs, tmp_path, start_chappe, make_upstream)
    path = "/_matrix/federation/v1/send/local-1"
    body = canonical({"origin": "hs.localhost", "pdus": [], "edus": []})
    sig = xmatrix("PUT", path, body, origin="hs.localhost", destination="hs2.localhost")
    r = request(port, "PUT matrix-federation://hs2.localhost%s HTTP/1.1" % path,
                headers=[sig, ("Content-Type", "application/json")], body=body)
    assert r.status == 200 and r.body == b'{"pdus":{}}', r
    assert wait_for(lambda: len(up2.requests) == 1), up2.requests
    req = up2.requests[0]
    assert (req.method, req.target, bytes(req.body)) == ("PUT", path, body)
    assert req.header("Authorization") == sig[1] and req.header("Host") == "hs2.localhost"
    # a synchronous request too: the upstream's answer comes back
    q = "/_matrix/federation/v1/query/directory?room_alias=%23a%3Ahs2.localhost"
    sig = xmatrix("GET", q, None, origin="hs.localhost", destination="hs2.localhost")
    r = request(port, "GET matrix-federation://hs2.localhost%s HTTP/1.1" % q, headers=[sig])
    assert r.status == 200 and r.json()["path"] == q, r
    assert up1.requests == []  # nothing looped back to the sender


def test_the_relay_itself_is_local(certs, tmp_path, start_chappe, make_upstream):
    """A homeserver asking the relay's own key server (its notary) through the egress gets the
    relay's key document, though relay.localhost is not allowlisted."""
    ch, port, up1, up2 = local_setup(certs, tmp_path, start_chappe, make_upstream)
    r = request(port, "GET matrix-federation://relay.localhost%s HTTP/1.1" % KEY)
    assert r.status == 200, r
    assert r.json()["server_name"] == "relay.localhost"
    # and a server that is neither local nor allowlisted is still refused
    r = request(port, "GET matrix-federation://elsewhere.localhost%s HTTP/1.1" % KEY)
    assert r.status == 403, r


def test_basic_credentials_as_an_https_proxy_url_sends_them(egress, remote):
    """https_proxy=http://USER:SECRET@host:port: Synapse sends Proxy-Authorization: Basic
    base64(USER:SECRET). The secret is the password; a wrong one, or a Basic value without a
    colon, is 401."""
    import base64
    rs = remote()
    ch, port = egress()
    line = "GET https://%s%s HTTP/1.1" % (rs.name, KEY)

    def basic(text):
        return "Basic " + base64.b64encode(text.encode()).decode()
    r = request(port, line, auth=basic("synapse:" + SECRET))
    assert r.status == 200, r
    for bad in (basic("synapse:wrong-secret-0123456789"), basic(SECRET), "Basic !!!"):
        r = request(port, line, auth=bad)
        assert r.status == 401 and r.json()["errcode"] == "M_UNAUTHORIZED", (bad, r)
    assert rs.requests == [KEY]


def test_source_policy_is_for_federation_peers_only(egress):
    """inbound_source_policy: enforce with loopback blacklisted refuses loopback federation
    peers, but the egress listener (the homeservers' own) still serves them (regression: it was
    applied to every listener, so this connection was closed unanswered)."""
    ch, port = egress(inbound_source_policy="enforce", ip_range_whitelist=[])
    r = request(port, "GET matrix-federation://relay.localhost%s HTTP/1.1" % KEY,
                auth="Bearer not-the-secret-0123456789")
    assert r.status == 401, r
    assert "refused by inbound_source_policy" not in ch.stderr()


# --- CONNECT with interception --------------------------------------------------------------
import socket  # noqa: E402
import ssl  # noqa: E402

from test_egress_proxy import read_response  # noqa: E402


def tunnel(certs, port, authority, host, secret=SECRET):
    """CONNECT authority through the egress; returns (status, raw head, TLS socket or None). The
    TLS side trusts only chappe's egress CA and checks the certificate is for host."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Bearer %s\r\n\r\n"
               % (authority, authority, secret)).encode())
    r = read_response(s)
    if r.status != 200:
        s.close()
        return r, None
    ctx = ssl.create_default_context(cafile=str(certs.egress_ca_crt))
    return r, ctx.wrap_socket(s, server_hostname=host)


def inside(sock, method, path, headers=(), body=None, host="x"):
    h = ["%s %s HTTP/1.1" % (method, path), "Host: " + host]
    h += ["%s: %s" % kv for kv in headers]
    if body is not None:
        h.append("Content-Length: %d" % len(body))
    sock.sendall(("\r\n".join(h) + "\r\n\r\n").encode("latin-1") + (body or b""))
    return read_response(sock)


def connect_egress(egress, certs):
    return egress(tls={"certificates": [{"cert": str(certs.server_crt),
                                         "key": str(certs.server_key)}],
                       "egress_ca": {"cert": str(certs.egress_ca_crt),
                                     "key": str(certs.egress_ca_key)}})


def test_connect_intercepted_requests_checked_and_sent(certs, egress, remote):
    """CONNECT to the delegated host: 200, then TLS with a certificate minted for that host by
    the egress CA; inside, a signed request goes to its X-Matrix destination (rs) and an
    unsigned one to the tunnel's host and port; a transaction is queued and delivered."""
    rs = remote()
    ch, port = connect_egress(egress, certs)
    r, t = tunnel(certs, port, rs.name, "localhost")
    assert r.status == 200 and t is not None, r
    with t:
        assert t.getpeercert()["subjectAltName"] == (("DNS", "localhost"),)
        r = inside(t, "GET", KEY)  # unsigned: to the host and port of the tunnel
        assert r.status == 200 and r.json()["server_name"] == rs.name, r
        path = "/_matrix/federation/v1/send/tunnel-1"
        body = canonical({"origin": "hs.localhost", "pdus": [], "edus": []})
        sig = xmatrix("PUT", path, body, origin="hs.localhost", destination=rs.name)
        r = inside(t, "PUT", path, headers=[sig, ("Content-Type", "application/json")], body=body)
        assert r.status == 200 and r.body == b'{"pdus":{}}', r
        # signed for a server outside the allowlist: refused, inside the same tunnel
        q = "/_matrix/federation/v1/version"
        bad = xmatrix("GET", q, None, origin="hs.localhost", destination="evil.example")
        r = inside(t, "GET", q, headers=[bad])
        assert r.status == 403 and "evil.example" in r.json()["error"], r
    assert wait_for(lambda: any(p == path for _, p, _, _ in rs.received))
    got = [x for x in rs.received if x[1] == path]
    assert got[0][3] == body and got[0][2]["Authorization"] == sig[1]
    log = [e for e in ch.access_log() if e.get("listener") == "egress"]
    assert [e["form"] for e in log][:2] == ["connect", "tunnel"], log


def test_connect_refused_before_tls(certs, egress, remote):
    """A CONNECT to a name no allowed server can match: 403 in clear, no TLS, nothing contacted;
    a wrong secret: 401; without tls.egress_ca: 501."""
    ch, port = connect_egress(egress, certs)
    r, t = tunnel(certs, port, "evil.example:443", "evil.example")
    assert t is None and r.status == 403 and r.json()["errcode"] == "M_FORBIDDEN", r
    assert "name_not_allowed" in r.json()["error"]
    r, t = tunnel(certs, port, "localhost:443", "localhost", secret="wrong-secret-0123456789")
    assert t is None and r.status == 401, r
    ch2, port2 = egress()
    r, t = tunnel(certs, port2, "localhost:443", "localhost")
    assert t is None and r.status == 501, r
