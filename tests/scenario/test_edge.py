"""Scenario: the edge checks of X-Matrix routes, before anything reaches the homeserver --
the header (401), the origin allowlist (403), the destination (401) -- and requests that pass
them with a real signature (the pinned key of remote.localhost) reaching the homeserver
unchanged. Signatures with fetched keys: test_verify.py."""
# SPDX-License-Identifier: ISC

import json
import re

import pytest

from httpc import xmatrix

SEND = "/_matrix/federation/v1/send/t1"
BODY = b'{"pdus":[],"edus":[]}'


def signed(**kw):
    """A real signature of the PUT below (origin, destination: see httpc.xmatrix)."""
    return xmatrix("PUT", SEND, BODY, **kw)


def without_destination(header):
    """The same signature in a header without its destination (optional in the spec before
    v1.3: the signed JSON always names the destination, the header need not)."""
    name, value = header
    return name, re.sub(r',destination="[^"]*"', "", value)


def put(proxy, headers):
    with proxy.tls() as c:
        return c.request("PUT", SEND, body=BODY,
                         headers=[("Content-Type", "application/json")] + list(headers))


# Every refusal but the malformed ones carries a signature that is valid for what it says: the
# request is refused for the one reason under test.
@pytest.mark.parametrize("headers,status,errcode,text", [
    ([], 401, "M_UNAUTHORIZED", "send needs an X-Matrix Authorization header"),
    ([("Authorization", "Bearer abc")], 401, "M_UNAUTHORIZED", "needs an X-Matrix"),
    ([("Authorization", "X-Matrix origin=a.localhost")], 401, "M_UNAUTHORIZED",
     "malformed X-Matrix header"),
    ([signed(origin="evil.example")], 403, "M_FORBIDDEN",
     "origin evil.example may not federate here: name_not_allowed"),
    ([signed(origin="user@attacker.com@elysee.fr")], 403, "M_FORBIDDEN", "invalid_server_name"),
    ([signed(destination="other.localhost")], 401, "M_UNAUTHORIZED",
     "X-Matrix destination other.localhost is not hs.localhost"),
])
def test_refused_at_the_edge(proxy, headers, status, errcode, text):
    r = put(proxy, headers)
    assert r.status == status, r
    body = json.loads(r.body)
    assert body["errcode"] == errcode and text in body["error"], body
    assert proxy.up.requests == [], "the homeserver saw a refused request"


# The case of an origin and destination written in capitals ("A.LocalHost" to "HS.localhost")
# is gone: a signature is made and checked over the names exactly as written, and a server
# name is its normal form, so such a request cannot carry a signature chappe should accept.
@pytest.mark.parametrize("headers", [[signed()], [without_destination(signed())]],
                         ids=["with_destination", "without_destination"])
def test_allowed_origin_reaches_the_homeserver(proxy, headers):
    r = put(proxy, headers)
    assert r.status == 200, r
    (req,) = proxy.up.requests
    assert req.header("Authorization") == headers[0][1], "Authorization changed on the way"
    assert bytes(req.body) == BODY, "body changed on the way: %r" % bytes(req.body)


def test_public_routes_need_no_header(proxy):
    with proxy.tls() as c:
        assert c.request("GET", "/_matrix/federation/v1/version").status == 200
    assert len(proxy.up.requests) == 1


@pytest.mark.parametrize("method,path,allow", [
    ("POST", "/_matrix/federation/v1/send/t1", "PUT"),
    ("DELETE", "/_matrix/federation/v1/version", "GET, HEAD"),
    ("PUT", "/_matrix/federation/v1/publicRooms", "GET, HEAD, POST"),
])
def test_wrong_method_is_405_with_allow(proxy, method, path, allow):
    """RFC 9110 section 15.5.6: a 405 names the methods the path has."""
    with proxy.tls() as c:
        r = c.request(method, path)
        assert r.status == 405, r
        assert r.header("Allow") == allow, r
        assert json.loads(r.body)["errcode"] == "M_UNRECOGNIZED"
        # the connection goes on
        assert c.request("GET", "/_matrix/federation/v1/version").status == 200
    assert len(proxy.up.requests) == 1
