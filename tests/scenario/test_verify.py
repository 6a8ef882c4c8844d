"""Scenario: inbound X-Matrix signature verification (issue 5). A RemoteServer (fedremote.py)
signs requests for hs.localhost and publishes its keys over TLS as "localhost:PORT"; chappe
fetches them (or takes them from pinned_keys / its LMDB cache), checks the signature, and only
then passes the request, unchanged, to the homeserver. It also serves the fetched documents
as a notary, and SIGHUP swaps the federation policy for new requests."""
# SPDX-License-Identifier: ISC

import json
import os
import signal
import threading
import time

import pytest
from canonicaljson import encode_canonical_json
from signedjson.key import decode_verify_key_base64, get_verify_key
from signedjson.sign import verify_signed_json

import harness
from fedremote import RemoteServer, public
from harness import run_cli, to_yaml
from httpc import build_request

SEND = "/_matrix/federation/v1/send/%s"
ROOMS = "/_matrix/federation/v1/publicRooms"
VERSION = "/_matrix/federation/v1/version"
JSON_CT = ("Content-Type", "application/json")


@pytest.fixture
def remote(certs):
    """remote(**kw) -> a started RemoteServer, stopped at teardown."""
    made = []

    def make(**kw):
        rs = RemoteServer(certs, **kw)
        made.append(rs)
        return rs

    yield make
    for rs in made:
        rs.stop()


@pytest.fixture
def start(start_proxy, certs):
    """start(limits=None, workers=2, **config) -> Proxy trusting the test CA for key fetches."""

    def go(limits=None, workers=2, **extra):
        return start_proxy(workers=workers, limits=limits,
                           extra=dict({"federation_custom_ca_list": [str(certs.ca)]}, **extra))

    return go


def txn(rs, ts=1700000000000):
    """A transaction body in canonical JSON, as Synapse sends it."""
    return encode_canonical_json({
        "origin": rs.name, "origin_server_ts": ts, "pdus": [],
        "edus": [{"edu_type": "m.typing", "content": {"room_id": "!r:hs.localhost",
                                                       "user_id": "@u:" + rs.name,
                                                       "typing": True}}]})


def send(proxy, rs, txn_id="t1", body=None, auth=None, conn=None, **sign):
    """PUT /send/{txn_id} signed by rs (or with auth as given; auth=False: no header)."""
    uri = SEND % txn_id
    body = txn(rs) if body is None else body
    if auth is None:
        auth = rs.sign("PUT", uri, body, **sign)
    headers = [JSON_CT] + ([("Authorization", auth)] if auth else [])
    if conn is not None:
        return conn.request("PUT", uri, body=body, headers=headers)
    # a refused request with a body may close the connection: one connection each
    with proxy.tls() as c:
        return c.request("PUT", uri, body=body, headers=headers)


def signed_get(conn, rs, uri=ROOMS, **sign):
    return conn.request("GET", uri, headers=[("Authorization", rs.sign("GET", uri, **sign))])


def error(r, status, errcode):
    assert r.status == status, r
    body = r.json()
    assert body.get("errcode") == errcode and isinstance(body.get("error"), str), body
    return body


def cli(*args):
    """Run a chappe subcommand; its stderr must hold no sanitizer report (the daemons' are
    checked by the start_chappe fixture when they stop)."""
    r = run_cli(harness.debug_bin(), list(args), timeout=30)
    for m in harness.SANITIZER_MARKERS:
        assert m not in r.stderr, "chappe %s: sanitizer report:\n%s" % (args[0], r.stderr[-3000:])
    return r


def wait_log(ch, text, timeout=10.0, since=0):
    """Wait until chappe's stderr (after offset since) contains text; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in ch.stderr()[since:]:
            return
        time.sleep(0.05)
    raise AssertionError("chappe did not log %r within %.0fs; stderr:\n%s" % (
        text, timeout, harness.tail(ch.stderr()[since:])))


# --- the good path --------------------------------------------------------------------------

def test_signed_send_reaches_the_homeserver_unchanged(start, remote):
    rs = remote()
    p = start()
    body = txn(rs)
    auth = rs.sign("PUT", SEND % "t1", body)
    with p.tls() as c:
        r = send(p, rs, "t1", body=body, auth=auth, conn=c)
        assert r.status == 200, r
        (req,) = p.up.requests
        assert (req.method, req.target, req.version) == ("PUT", SEND % "t1", "HTTP/1.1")
        assert req.header_all("Authorization") == [auth], "Authorization changed on the way"
        assert req.header("Content-Type") == "application/json"
        assert bytes(req.body) == body, "the body changed on the way"
        assert rs.fetches == 1, "key fetched %d times, expected once" % rs.fetches
        # the key is cached: same connection, then fresh ones (either worker), no fetch
        assert send(p, rs, "t2", conn=c).status == 200
    for i in range(4):
        assert send(p, rs, "n%d" % i).status == 200
    assert rs.fetches == 1, "a cached key was fetched again (%d fetches)" % rs.fetches
    assert len(p.up.requests) == 6
    # stored in the LMDB key cache, readable while the daemon runs
    r = cli("keys", "list", "-c", str(p.chappe.cfg_path))
    assert r.returncode == 0, r.stdout + r.stderr
    want = "%s %s %s valid_until=" % (rs.name, rs.key_id(), rs.public())
    assert any(ln.startswith(want) for ln in r.stdout.splitlines()), r.stdout + r.stderr


def test_uri_signed_as_sent_with_query(start, remote):
    """The signed uri is the request-target as sent, query and percent-escapes included."""
    rs = remote()
    p = start()
    uri = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Ahs.localhost&field=displayname"
    with p.tls() as c:
        r = signed_get(c, rs, uri)
        assert r.status == 200, r
        # signed over the decoded form: not what was sent, refused
        r = c.request("GET", uri, headers=[("Authorization", rs.sign(
            "GET", "/_matrix/federation/v1/query/profile?user_id=@alice:hs.localhost"
                   "&field=displayname"))])
        error(r, 401, "M_UNAUTHORIZED")
    (req,) = p.up.requests
    assert req.target == uri


def test_body_signed_as_json_not_as_bytes(start, remote):
    """The signature covers the JSON value: spacing and key order as sent are fine, and the
    homeserver gets those very bytes."""
    rs = remote()
    p = start()
    body = b'{ "pdus" : [ ],\n "origin_server_ts": 1700000000000, "origin": "%s", "edus": [] }' % (
        rs.name.encode())
    r = send(p, rs, "ws", body=body)
    assert r.status == 200, r
    (req,) = p.up.requests
    assert bytes(req.body) == body


# --- refusals --------------------------------------------------------------------------------

def test_bad_signatures_refused(start, remote):
    rs = remote()
    p = start()
    uri = SEND % "t1"
    body = txn(rs)
    cases = {
        "forged (right key id, wrong key)": rs.sign("PUT", uri, body, key=rs.forged("a1")),
        "unknown key id": rs.sign("PUT", uri, body, key=rs.forged("zz")),
        "signed for another destination": rs.sign("PUT", uri, body,
                                                  signed_destination="other.localhost"),
        "signed for another uri": rs.sign("PUT", SEND % "t2", body),
        "signed for another method": rs.sign("POST", uri, body),
        "signature not base64": rs.sign("PUT", uri, body)[:-8] + '!!!!!!!"',
        "missing header": False,
    }
    for what, auth in cases.items():
        r = send(p, rs, "t1", body=body, auth=auth)
        assert r.status == 401, "%s: %r" % (what, r)
        assert r.json()["errcode"] == "M_UNAUTHORIZED", "%s: %r" % (what, r)
    assert p.up.requests == [], "the homeserver saw a refused request"
    assert 1 <= rs.fetches <= 2, rs.fetches
    # the control: the same request, rightly signed, goes through
    assert send(p, rs, "t1", body=body).status == 200
    assert len(p.up.requests) == 1


def test_body_checks(start, remote):
    rs = remote()
    p = start()
    body = txn(rs)
    tampered = body.replace(b"1700000000000", b"1700000000001")
    assert tampered != body and json.loads(tampered)
    r = send(p, rs, "t1", body=tampered, auth=rs.sign("PUT", SEND % "t1", body))
    error(r, 401, "M_UNAUTHORIZED")
    r = send(p, rs, "t1", body=b'{"pdus": [', auth=rs.sign("PUT", SEND % "t1"))
    error(r, 400, "M_NOT_JSON")
    r = send(p, rs, "t1", body=b"[1,2]", auth=rs.sign("PUT", SEND % "t1", b"[1,2]"))
    error(r, 400, "M_BAD_JSON")
    assert p.up.requests == []
    assert send(p, rs, "t1", body=body).status == 200


def test_origin_not_allowlisted_is_forbidden_without_a_fetch(start, remote):
    rs = remote()
    p = start(federation_domain_whitelist=["*.localhost"])  # not "localhost:PORT"
    body = error(send(p, rs), 403, "M_FORBIDDEN")
    assert rs.name in body["error"], body
    time.sleep(0.3)
    assert (rs.fetches, rs.accepts) == (0, 0), "the refused origin's key server was contacted"
    assert p.up.requests == []


def test_undefined_paths(start, remote):
    rs = remote()
    p = start()
    with p.tls() as c:
        for method, uri in (("GET", "/_matrix/federation/v1/nope"),
                            ("GET", "/_matrix/federation/v1/nope?x=1"),
                            ("GET", "/_matrix/federation/v2/version"),
                            ("GET", "/_matrix/federationX/v1/version")):
            r = c.request(method, uri, headers=[("Authorization", rs.sign(method, uri))])
            error(r, 404, "M_UNRECOGNIZED")
    uri = "/_matrix/federation/v9/send/x"
    body = txn(rs)
    with p.tls() as c:
        r = c.request("PUT", uri, body=body,
                      headers=[JSON_CT, ("Authorization", rs.sign("PUT", uri, body))])
        error(r, 404, "M_UNRECOGNIZED")
    # a server-name parameter holding an escaped "/" is not a server name
    with p.tls() as c:
        error(c.request("GET", "/_matrix/key/v2/query/evil%2Fexample"), 400, "M_INVALID_PARAM")
        error(c.request("GET", "/_matrix/key/v2/query/evil%2Fexample", host="relay.localhost"),
              400, "M_INVALID_PARAM")
    assert p.up.requests == []


# --- key life cycle --------------------------------------------------------------------------

def test_rotation_refetches_after_the_interval(start, remote):
    rs = remote()
    p = start(limits={"key_refetch_interval": "200ms"})
    assert send(p, rs, "t1").status == 200
    assert rs.fetches == 1
    rs.rotate("a2")
    time.sleep(0.5)
    r = send(p, rs, "t2")
    assert r.status == 200, r
    assert rs.fetches == 2, rs.fetches
    assert p.up.requests[-1].header("Authorization").count('key="ed25519:a2"') == 1


def test_rotation_waits_for_the_interval(start, remote):
    """Within key_refetch_interval of a fetch, an unknown key id is refused without a fetch;
    after it, the same request goes through."""
    rs = remote()
    p = start(limits={"key_refetch_interval": "2s"})
    assert send(p, rs, "t1").status == 200
    rs.rotate("a2")
    error(send(p, rs, "t2"), 401, "M_UNAUTHORIZED")
    assert rs.fetches == 1, "fetched again within key_refetch_interval"
    time.sleep(2.3)
    assert send(p, rs, "t3").status == 200
    assert rs.fetches == 2, rs.fetches


def test_expired_key_is_refetched(start, remote):
    rs = remote(valid_for_ms=1500)
    p = start(limits={"key_refetch_interval": "200ms"})
    assert send(p, rs, "t1").status == 200
    assert rs.fetches == 1
    time.sleep(2)
    r = send(p, rs, "t2")
    assert r.status == 200, r
    assert rs.fetches == 2, "an expired key was used without a refetch (%d)" % rs.fetches


def test_cached_key_refreshed_at_half_life_and_served_while_the_origin_is_down(start, remote):
    """A key past half its validity is refreshed in the background while it is used; when its
    server is down, the cached key keeps working until it expires, then requests get 401."""
    rs = remote(valid_for_ms=6000)
    p = start(limits={"key_refetch_interval": "200ms"})
    t0 = time.monotonic()
    assert send(p, rs, "t1").status == 200
    assert rs.fetches == 1
    time.sleep(max(0, t0 + 3.5 - time.monotonic()))
    assert send(p, rs, "t2").status == 200  # past half-life: used, and refreshed behind
    deadline = time.monotonic() + 5
    while rs.fetches < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rs.fetches == 2, "no background refresh past half-life"
    t_refresh = time.monotonic()
    rs.stop()
    time.sleep(max(0, t_refresh + 3.5 - time.monotonic()))  # past the new half-life
    r = send(p, rs, "t3")
    assert r.status == 200, "a valid cached key was not used while its server is down: %r" % r
    time.sleep(max(0, t_refresh + 6.5 - time.monotonic()))  # the refreshed key has expired
    body = error(send(p, rs, "t4"), 401, "M_UNAUTHORIZED")
    assert "has expired" in body["error"], body
    assert [q.path for q in p.up.requests].count(SEND % "t4") == 0


def test_pinned_keys_are_never_fetched(start, remote):
    rs = remote()
    p = start(pinned_keys={rs.name: {rs.key_id(): rs.public()}})
    assert send(p, rs, "t1").status == 200
    error(send(p, rs, "t2", key=rs.forged("b1")), 401, "M_UNAUTHORIZED")  # id not pinned
    error(send(p, rs, "t3", key=rs.forged("a1")), 401, "M_UNAUTHORIZED")  # pinned id, wrong key
    time.sleep(0.3)
    assert (rs.fetches, rs.accepts) == (0, 0), "a pinned server's keys were fetched"
    assert len(p.up.requests) == 1


def test_key_server_outside_sovereign_ranges_is_never_contacted(start, remote):
    rs = remote(host="127.0.0.2")
    assert rs.name.startswith("127.0.0.2:")
    p = start(sovereign_ranges=["127.0.0.1/32", "::1/128"],
              federation_domain_whitelist=["localhost", "*.localhost", "127.0.0.2"])
    error(send(p, rs), 401, "M_UNAUTHORIZED")
    time.sleep(0.5)
    assert rs.accepts == 0, "chappe connected to a key server outside sovereign_ranges"
    assert p.up.requests == []


def test_one_fetch_for_a_thousand_unknown_keys(start, remote):
    """1,000 requests (50 TLS connections x 20 pipelined) signed with 1,000 key ids the
    server does not publish, while its key document takes 1 s: one fetch at most, all 401."""
    rs = remote(delay=1.0)
    p = start()
    stranger = rs.forged("x")
    nconn, depth = 50, 20
    batches = []
    for i in range(nconn):
        batches.append(b"".join(
            build_request("GET", ROOMS, headers=[("Authorization", rs.sign(
                "GET", ROOMS, key=stranger, key_id="ed25519:u%d" % (i * depth + j)))])
            for j in range(depth)))
    statuses, problems = [], []
    lock = threading.Lock()
    go = threading.Event()

    def client(batch):
        try:
            with p.tls(timeout=30) as c:
                go.wait(10)
                c.send(batch)
                got = [c.read_response(timeout=30).status for _ in range(depth)]
        except Exception as e:  # reported below
            with lock:
                problems.append(repr(e))
            return
        with lock:
            statuses.extend(got)

    threads = [threading.Thread(target=client, args=(b,), daemon=True) for b in batches]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(max(0.1, t0 + 40 - time.monotonic()))
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "clients still running after 40 s"
    assert problems == [], problems[:5]
    assert len(statuses) == nconn * depth
    assert set(statuses) == {401}, {s: statuses.count(s) for s in set(statuses)}
    assert rs.fetches <= 1, "%d fetches for one server" % rs.fetches
    assert elapsed < 30, "took %.1f s" % elapsed
    assert p.up.requests == []


def trusted(notary):
    return [{"server_name": notary.name, "verify_keys": {notary.key_id(): notary.public()}}]


def test_trusted_key_server_is_asked_first(start, remote):
    rs, notary = remote(), remote()
    notary.vouches.append(rs)
    p = start(trusted_key_servers=trusted(notary))
    r = send(p, rs)
    assert r.status == 200, r
    assert (notary.queries, rs.fetches) == (1, 0), "the notary was not asked first"


def test_direct_fetch_when_the_notary_has_nothing(start, remote):
    rs, notary = remote(), remote()
    p = start(trusted_key_servers=trusted(notary))
    r = send(p, rs)
    assert r.status == 200, r
    assert (notary.queries, rs.fetches) == (1, 1)


def test_notary_answer_with_a_bad_cosignature_is_not_used(start, remote):
    """The notary's document is signed by a key the config does not trust for it: ignored;
    the key comes from the server itself."""
    rs, notary = remote(), remote()
    notary.vouches.append(rs)
    untrusted = [{"server_name": notary.name,
                  "verify_keys": {notary.key_id(): public(RemoteServer.forged("a1"))}}]
    p = start(trusted_key_servers=untrusted)
    r = send(p, rs)
    assert r.status == 200, r
    assert (notary.queries, rs.fetches) == (1, 1)


# --- the notary -----------------------------------------------------------------------------

def keygen(tmp_path):
    path = tmp_path / "relay.key"
    r = cli("keygen", "-o", str(path))
    assert r.returncode == 0, r.stderr
    r = cli("key", "public", "--key", str(path))
    assert r.returncode == 0, r.stderr
    key_id, pub = r.stdout.split()
    return path, decode_verify_key_base64("ed25519", key_id.split(":", 1)[1], pub)


def check_doc(doc, rs, relay_key):
    assert doc["server_name"] == rs.name, doc
    assert doc["verify_keys"] == {rs.key_id(): {"key": rs.public()}}, doc
    verify_signed_json(doc, rs.name, get_verify_key(rs.key))
    verify_signed_json(doc, "relay.localhost", relay_key)


def test_notary_fetches_on_demand(start, remote, tmp_path):
    key_path, relay_key = keygen(tmp_path)
    a, b, outsider = remote(), remote(), remote(name_host="127.0.0.1")
    p = start(signing_key_path=str(key_path))
    q = json.dumps({"server_keys": {a.name: {}, outsider.name: {}}}).encode()
    with p.tls() as c:
        r = c.request("POST", "/_matrix/key/v2/query", host="relay.localhost", body=q,
                      headers=[JSON_CT])
        assert r.status == 200, r
        docs = r.json()["server_keys"]
        assert [d["server_name"] for d in docs] == [a.name], docs
        check_doc(docs[0], a, relay_key)
        assert a.fetches == 1
        # GET, for a server never seen before: fetched too
        r = c.request("GET", "/_matrix/key/v2/query/" + b.name, host="relay.localhost")
        assert r.status == 200, r
        docs = r.json()["server_keys"]
        assert len(docs) == 1, docs
        check_doc(docs[0], b, relay_key)
        assert b.fetches == 1
        # then from the cache
        r = c.request("GET", "/_matrix/key/v2/query/" + a.name, host="relay.localhost")
        assert r.status == 200 and len(r.json()["server_keys"]) == 1, r
        check_doc(r.json()["server_keys"][0], a, relay_key)
        assert a.fetches == 1
        r = c.request("GET", "/_matrix/key/v2/query/" + outsider.name, host="relay.localhost")
        assert (r.status, r.json()) == (200, {"server_keys": []}), r
    time.sleep(0.3)
    assert (outsider.fetches, outsider.accepts) == (0, 0), "a non-allowlisted server was asked"
    assert p.up.requests == []


# --- SIGHUP ----------------------------------------------------------------------------------

def rewrite(ch, **changes):
    ch.cfg_path.write_text(to_yaml(dict(ch.config, **changes)))


def test_sighup_swaps_the_policy_on_open_connections(start, remote):
    rs = remote()
    p = start()
    ch = p.chappe
    with p.tls() as c:
        assert signed_get(c, rs).status == 200
        rewrite(ch, federation_domain_whitelist=["*.localhost"])
        mark = len(ch.stderr())
        os.kill(ch.pid, signal.SIGHUP)
        wait_log(ch, "SIGHUP: reloaded policy", since=mark)
        error(signed_get(c, rs), 403, "M_FORBIDDEN")
        r = c.request("GET", VERSION)
        assert r.status == 200, "the keep-alive connection is not usable after the 403: %r" % r
    with p.tls() as c:
        error(signed_get(c, rs), 403, "M_FORBIDDEN")
    assert [q.target for q in p.up.requests] == [ROOMS, VERSION]
    assert ch.alive()


@pytest.mark.parametrize("bad", ["not yaml: [\n", "config"])
def test_sighup_with_a_broken_file_keeps_the_policy(start, remote, bad):
    rs = remote()
    p = start()
    ch = p.chappe
    with p.tls() as c:
        assert signed_get(c, rs).status == 200
    if bad == "config":  # valid YAML, an invalid config that would drop the origin
        rewrite(ch, federation_domain_whitelist=["*.localhost"], sovereign_ranges=["nope"])
    else:
        ch.cfg_path.write_text(bad)
    mark = len(ch.stderr())
    os.kill(ch.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while " error " not in ch.stderr()[mark:] and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = ch.stderr()[mark:]
    assert " error " in logged, "no error logged for the broken file:\n%s" % logged
    assert "reloaded policy" not in logged, logged
    with p.tls() as c:
        assert signed_get(c, rs).status == 200, "the old policy is not in force any more"
    assert ch.alive()
