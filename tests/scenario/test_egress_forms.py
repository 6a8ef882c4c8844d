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
