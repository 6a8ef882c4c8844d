"""Scenario: the edge checks of X-Matrix routes, before anything reaches the homeserver --
the header (401), the origin allowlist (403), the destination (401). Signature verification
with fetched keys comes on top of these (issue 5)."""
# SPDX-License-Identifier: ISC

import json

import pytest

from httpc import XMATRIX

SEND = "/_matrix/federation/v1/send/t1"


def xm(origin="remote.localhost", destination="hs.localhost"):
    v = 'X-Matrix origin="%s",key="ed25519:k",sig="c2ln"' % origin
    if destination is not None:
        v += ',destination="%s"' % destination
    return ("Authorization", v)


def put(proxy, headers):
    with proxy.tls() as c:
        return c.request("PUT", SEND, body=b'{"pdus":[],"edus":[]}',
                         headers=[("Content-Type", "application/json")] + list(headers))


@pytest.mark.parametrize("headers,status,errcode,text", [
    ([], 401, "M_UNAUTHORIZED", "send needs an X-Matrix Authorization header"),
    ([("Authorization", "Bearer abc")], 401, "M_UNAUTHORIZED", "needs an X-Matrix"),
    ([("Authorization", "X-Matrix origin=a.localhost")], 401, "M_UNAUTHORIZED",
     "malformed X-Matrix header"),
    ([xm(origin="evil.example")], 403, "M_FORBIDDEN",
     "origin evil.example may not federate here: name_not_allowed"),
    ([xm(origin="user@attacker.com@elysee.fr")], 403, "M_FORBIDDEN", "invalid_server_name"),
    ([xm(destination="other.localhost")], 401, "M_UNAUTHORIZED",
     "X-Matrix destination other.localhost is not hs.localhost"),
])
def test_refused_at_the_edge(proxy, headers, status, errcode, text):
    r = put(proxy, headers)
    assert r.status == status, r
    body = json.loads(r.body)
    assert body["errcode"] == errcode and text in body["error"], body
    assert proxy.up.requests == [], "the homeserver saw a refused request"


@pytest.mark.parametrize("headers", [[XMATRIX], [xm(destination=None)],
                                     [xm(origin="A.LocalHost", destination="HS.localhost")]])
def test_allowed_origin_reaches_the_homeserver(proxy, headers):
    r = put(proxy, headers)
    assert r.status == 200, r
    (req,) = proxy.up.requests
    assert req.header("Authorization") == headers[0][1], "Authorization changed on the way"


def test_public_routes_need_no_header(proxy):
    with proxy.tls() as c:
        assert c.request("GET", "/_matrix/federation/v1/version").status == 200
    assert len(proxy.up.requests) == 1
