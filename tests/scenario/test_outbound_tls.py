"""Scenario: the outbound client's TLS and request signing, through `chappe fed-request`:
certificates that must be refused (wrong name, unknown CA, expired, IP literal without an IP
SAN) get exit 1 and an error about the certificate before any request byte is sent; accepted
requests carry an X-Matrix Authorization that signedjson verifies (origin = the config's
server_name or --origin, destination = the server name asked for, not the delegated host)."""
# SPDX-License-Identifier: ISC

import json
import os
import re
import subprocess

import pytest
import signedjson.key
import signedjson.sign
from signedjson.sign import SignatureVerifyException

from netfix import (IP_NO_SAN, IP_NO_SAN_PORT, SOV, Steps, chappe, fed_request, fedcfg,
                    fednet, n, parse_response, parse_xmatrix)

__all__ = ["fedcfg", "fednet"]  # fixtures, imported for pytest

VERSION_PATH = "/_matrix/federation/v1/version"
RELAY = "relay.localhost"  # server_name of harness.make_config


def _openssl_verify(certs, crt, *extra):
    r = subprocess.run(["openssl", "verify", "-CAfile", str(certs.ca)] + list(extra) + [
        str(crt)], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def test_fixture_certificates(fednet):
    c = fednet.certs
    rc, out = _openssl_verify(c, c.leaf, "-verify_hostname", n("port"))
    assert rc == 0, out
    rc, out = _openssl_verify(c, c.leaf, "-verify_ip", "127.0.5.9")
    assert rc == 0, out
    rc, out = _openssl_verify(c, c.leaf, "-verify_ip", "::1")
    assert rc == 0, out
    rc, out = _openssl_verify(c, c.leaf, "-verify_ip", IP_NO_SAN)
    assert rc != 0, out
    rc, out = _openssl_verify(c, c.other, "-verify_hostname", n("wrongname"))
    assert rc != 0 and "mismatch" in out, out
    rc, out = _openssl_verify(c, c.other, "-verify_hostname", "other.example")
    assert rc == 0, out
    rc, out = _openssl_verify(c, c.expired, "-verify_hostname", n("expired"))
    assert rc != 0 and "expired" in out, out
    rc, out = _openssl_verify(c, c.rogue, "-verify_hostname", n("rogue"))
    assert rc != 0, out


# --- refused certificates ------------------------------------------------------------------
REFUSED = {
    "wrong_name": (n("wrongname") + ":8460", SOV + "80", 8460),
    "unknown_ca": (n("rogue") + ":8461", SOV + "81", 8461),
    "expired": (n("expired") + ":8462", SOV + "82", 8462),
    "ip_literal_without_ip_san": ("%s:%d" % (IP_NO_SAN, IP_NO_SAN_PORT), IP_NO_SAN,
                                  IP_NO_SAN_PORT),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_certificate_refused(fednet, fedcfg, case):
    name, addr, port = REFUSED[case]
    mark = fednet.mark()
    r = fed_request(fedcfg, "GET", name, VERSION_PATH)
    assert r.rc == 1, "fed-request to %s (%s): exit %d, want 1\n%s" % (name, case, r.rc,
                                                                        r.show())
    assert "HTTP/1.1" not in r.out, "a response was printed\n%s" % r.show()
    errs = Steps(r.err).errors
    assert any(re.search(r"certificate", e, re.I) for e in errs), \
        "no 'error: ...' line about the certificate on stderr\n%s" % r.show()
    conns = fednet.conns_since(mark, addr, port)
    assert conns, "no TLS connection reached %s:%d\n%s" % (addr, port, r.show())
    seen = fednet.seen_since(mark, addr, port)
    assert not seen, "a request was sent over an unverified connection: %r" % seen
    assert r.secs < 10, r.show()


def test_certificate_accepted_control(fednet, fedcfg):
    r = fed_request(fedcfg, "GET", n("port") + ":8451", VERSION_PATH)
    assert r.rc == 0 and parse_response(r.out)[0] == 200, r.show()


def test_verification_off_accepts_unknown_ca(fednet, tmp_path):
    cfg = fednet.config(tmp_path / "noverify.yaml", verify=False)
    mark = fednet.mark()
    r = fed_request(cfg, "GET", n("rogue") + ":8461", VERSION_PATH)
    assert r.rc == 0 and parse_response(r.out)[0] == 200, r.show()
    assert len(fednet.seen_since(mark, SOV + "81", 8461)) == 1
    # never silent: a warning at start, and one for the connection made unverified
    assert "federation_verify_certificates is false: remote certificates are NOT verified" \
        in r.err, r.show()
    assert "not verifying the certificate of 127.0.5.81:8461" in r.err, r.show()


def test_system_bundle_alone_does_not_trust_test_ca(fednet, tmp_path):
    """Without federation_custom_ca_list the test CA is unknown: the same server is refused."""
    cfg = fednet.config(tmp_path / "noca.yaml", ca_list=False)
    mark = fednet.mark()
    r = fed_request(cfg, "GET", n("port") + ":8451", VERSION_PATH)
    assert r.rc == 1, r.show()
    assert any(re.search(r"certificate", e, re.I) for e in Steps(r.err).errors), r.show()
    assert not fednet.seen_since(mark, SOV + "11", 8451)


def test_custom_ca_file_missing(fednet, tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    cfg = fednet.config(tmp_path / "badca.yaml", ca_list=[str(missing)])
    r = fed_request(cfg, "GET", n("port") + ":8451", VERSION_PATH)
    assert r.rc == 2, "a missing CA file: exit %d, want 2\n%s" % (r.rc, r.show())
    assert str(missing) in r.err, r.show()


# --- signing -------------------------------------------------------------------------------
def _public_key(key_path):
    """(key id, VerifyKey) read by `chappe key public --key FILE`."""
    r = chappe(["key", "public", "--key", key_path])
    assert r.rc == 0, r.show()
    kid, b64 = r.out.split()[:2]
    alg, ver = kid.split(":", 1)
    return kid, signedjson.key.decode_verify_key_base64(alg, ver, b64)


def _verify(seen, origin, destination, kid, vk, content=None):
    x = parse_xmatrix(seen["authorization"])
    assert x.get("origin") == origin, "X-Matrix origin %r, want %r" % (x.get("origin"), origin)
    assert x.get("destination") == destination, "X-Matrix destination %r, want %r" % (
        x.get("destination"), destination)
    assert x.get("key") == kid, "X-Matrix key %r, want %r" % (x.get("key"), kid)
    signed = {"method": seen["method"], "uri": seen["path"], "origin": origin,
              "destination": destination, "signatures": {origin: {kid: x.get("sig")}}}
    if content is not None:
        signed["content"] = content
    try:
        signedjson.sign.verify_signed_json(signed, origin, vk)
    except SignatureVerifyException as e:
        raise AssertionError("the X-Matrix signature does not verify (%s) for %r" % (e, signed))
    tampered = dict(signed, method="POST" if seen["method"] != "POST" else "PUT")
    with pytest.raises(SignatureVerifyException):
        signedjson.sign.verify_signed_json(tampered, origin, vk)


def _request(net, cfg, method, dest, path, addr, port, body=None, **kw):
    mark = net.mark()
    r = fed_request(cfg, method, dest, path, body=body, **kw)
    assert r.rc == 0, "fed-request %s %s %s: exit %d\n%s\n%s" % (method, dest, path, r.rc,
                                                                 r.show(), net.summary(mark))
    seen = net.seen_since(mark, addr, port)
    assert len(seen) == 1, "%s:%d saw %d requests\n%s" % (addr, port, len(seen), r.show())
    return r, seen[0]


def test_signed_get(fednet, fedcfg):
    path = "/_matrix/federation/v1/query/profile?user_id=%40u%3Achappe.test&field=displayname"
    dest = n("port") + ":8451"
    r, seen = _request(fednet, fedcfg, "GET", dest, path, SOV + "11", 8451)
    assert (seen["method"], seen["path"], seen["body"]) == ("GET", path, ""), seen
    kid, vk = _public_key(fednet.key_path)
    _verify(seen, RELAY, dest, kid, vk)
    status, _, headers, body = parse_response(r.out)
    assert status == 200, r.show()
    assert ("content-type", "application/json") in [(k.lower(), v) for k, v in headers], \
        "the response headers are not printed\n%s" % r.show()
    echo = json.loads(body)
    assert echo["authorization"] == seen["authorization"] and echo["path"] == path, \
        "stdout body is not the server's answer: %r" % body[:500]


def test_signed_get_delegated_destination(fednet, fedcfg):
    """Delegation changes where the request goes (and its Host), never the signed destination."""
    r, seen = _request(fednet, fedcfg, "GET", n("wkport"), VERSION_PATH, SOV + "40", 8449)
    assert seen["host"] == n("deleg") + ":8449", seen
    kid, vk = _public_key(fednet.key_path)
    _verify(seen, RELAY, n("wkport"), kid, vk)


def test_signed_put_json_body(fednet, fedcfg):
    txn = {"origin": RELAY, "origin_server_ts": 1700000000000, "pdus": [],
           "edus": [{"edu_type": "m.typing", "content": {
               "room_id": "!r:chappe.test", "user_id": "@u:relay.localhost", "typing": True,
               "note": "caf\u00e9 \u2603"}}]}
    body = json.dumps(txn, ensure_ascii=False)
    path = "/_matrix/federation/v1/send/txn%d" % os.getpid()
    dest = n("port") + ":8451"
    r, seen = _request(fednet, fedcfg, "PUT", dest, path, SOV + "11", 8451, body=body)
    assert seen["method"] == "PUT" and seen["path"] == path, seen
    got = json.loads(seen["body"])
    assert got == txn, "the server received %r" % seen["body"][:500]
    kid, vk = _public_key(fednet.key_path)
    _verify(seen, RELAY, dest, kid, vk, content=got)
    assert parse_response(r.out)[0] == 200, r.show()


def test_signed_with_other_key_and_origin(fednet, fedcfg, tmp_path):
    key = signedjson.key.generate_signing_key("fedtest")
    p = tmp_path / "other.key"
    fd = os.open(str(p), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        signedjson.key.write_signing_keys(f, [key])
    origin = n("other-origin")
    dest = n("port") + ":8451"
    _, seen = _request(fednet, fedcfg, "GET", dest, VERSION_PATH, SOV + "11", 8451, key=p,
                       origin=origin)
    _verify(seen, origin, dest, "ed25519:fedtest", signedjson.key.get_verify_key(key))


def test_non_200_is_still_a_response(fednet, fedcfg):
    path = "/_matrix/federation/v1/status/404/x"
    r, _ = _request(fednet, fedcfg, "GET", n("port") + ":8451", path, SOV + "11", 8451)
    status, _, _, body = parse_response(r.out)
    assert status == 404 and json.loads(body)["path"] == path, r.show()


def test_fed_request_usage(fednet, fedcfg, tmp_path):
    for args in (["fed-request", "-c", fedcfg],
                 ["fed-request", "-c", fedcfg, "GET", n("port") + ":8451"],
                 ["fed-request", "-c", tmp_path / "none.yaml", "GET", n("port") + ":8451",
                  VERSION_PATH],
                 ["fed-request", "-c", fedcfg, "--key", tmp_path / "none.key", "GET",
                  n("port") + ":8451", VERSION_PATH],
                 ["fed-request", "-c", fedcfg, "PUT", n("port") + ":8451", "/x", "{not json"]):
        r = chappe(args)
        assert r.rc == 2, "exit %d, want 2 (usage/config error)\n%s" % (r.rc, r.show())
        assert r.err.strip(), r.show()
        assert "unknown command" not in r.err, "chappe has no fed-request command\n%s" % (
            r.show())
