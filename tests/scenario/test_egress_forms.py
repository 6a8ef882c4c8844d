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
