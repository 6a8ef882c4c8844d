"""Scenario: the admin listener (issue 6, items 6 and 7): Prometheus /metrics and the queue's
operator API (/_chappe/admin/...), through the real binary. The listener is plain HTTP on
loopback; a token_path makes a presented token mandatory-correct (the loopback-or-token decision
for other peers is unit-tested in tests/unit/test_admin.c: a test cannot come from elsewhere).
The queue tests put real transactions in through the egress listener and let the sender deliver
them to RemoteServers (fedremote.py) that are down or refuse."""
# SPDX-License-Identifier: ISC

import json
import os
import re
import time

import pytest

from fedremote import RemoteServer
from harness import free_port, make_config
from httpc import REMOTE_KEY, Conn, canonical, xmatrix

ADMIN = "/_chappe/admin"
TOKEN = "admin-token-of-the-admin-tests-0123"
SECRET = "hs-egress-secret-of-the-admin-tests"
SEND = "/_matrix/federation/v1/send/"
VERSION = "/_matrix/federation/v1/version"


# --- fixtures -------------------------------------------------------------------------------
class Relay:
    """A running chappe: federation listeners (TLS, plain) in front of hs.localhost, an admin
    listener, and (egress=True) an egress listener with the homeserver's secret."""

    def __init__(self, ch, admin_port, tls_port, plain_port, egress_port, admin6_port):
        self.ch = ch
        self.admin_port = admin_port
        self.admin6_port = admin6_port  # on [::1], when asked for
        self.tls_port = tls_port
        self.plain_port = plain_port
        self.egress_port = egress_port

    def admin(self, method, path, headers=(), body=None, timeout=10.0, host="127.0.0.1",
              source=None):
        port = self.admin6_port if host == "::1" else self.admin_port
        with Conn.plain(port, host=host, source=source) as c:
            return c.request(method, path, host="127.0.0.1", headers=headers, body=body,
                             timeout=timeout)

    def get_json(self, path):
        r = self.admin("GET", path)
        assert r.status == 200, r
        assert r.header("Content-Type") == "application/json", r
        return r.json()

    def metrics(self):
        r = self.admin("GET", "/metrics")
        assert r.status == 200, r
        assert r.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8", r
        return parse_metrics(r.body.decode("utf-8"))


@pytest.fixture
def relay(certs, tmp_path, start_chappe, make_upstream):
    """relay(token=False, egress=False, queue=None, ipv6=False) -> Relay. token: write TOKEN to
    a 0600 file and name it as the admin listener's token_path. ipv6: the admin listener also
    binds [::1]."""
    def go(token=False, egress=False, queue=None, ipv6=False):
        up = make_upstream()
        tls_port, plain_port, admin_port = free_port(), free_port(), free_port()
        cfg = make_config(certs, tls_port, plain_port, [("hs.localhost", up.url)], workers=2,
                          pin_remote=True,
                          extra={"federation_custom_ca_list": [str(certs.ca)]})
        admin = {"type": "admin", "bind": ["127.0.0.1:%d" % admin_port]}
        admin6_port = None
        if ipv6:
            admin6_port = free_port()
            admin["bind"].append("[::1]:%d" % admin6_port)
        if token:
            tp = tmp_path / "admin.token"
            tp.write_text(TOKEN + "\n")
            os.chmod(tp, 0o600)
            admin["token_path"] = str(tp)
        cfg["listeners"].append(admin)
        egress_port = None
        if egress:
            sp = tmp_path / "hs.egress-secret"
            sp.write_text(SECRET + "\n")
            os.chmod(sp, 0o600)
            cfg["homeservers"][0]["egress_secret_path"] = str(sp)
            egress_port = free_port()
            cfg["listeners"].append({"type": "egress", "bind": ["127.0.0.1:%d" % egress_port]})
        cfg["queue"] = dict({"path": str(tmp_path / "q")}, **(queue or {}))
        return Relay(start_chappe(cfg), admin_port, tls_port, plain_port, egress_port,
                     admin6_port)
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


# --- the Prometheus text format 0.0.4 ---------------------------------------------------------
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
_SAMPLE = re.compile(r"^(%s)(\{(?:%s(?:,%s)*)?\})? (\S+)$" % (_NAME, _LABEL, _LABEL))
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')


def _unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


class Metrics:
    def __init__(self, types, samples):
        self.types = types  # family -> type
        self.samples = samples  # (name, frozenset of (label, value)) -> float

    def get(self, name, **labels):
        return self.samples.get((name, frozenset(labels.items())))

    def value(self, name, **labels):
        """The sample's value, 0 when it is not there (a counter that never moved)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def names(self):
        return {n for n, _ in self.samples}


def parse_metrics(text):
    """Parse strictly: every line a comment (# HELP / # TYPE) or `name{labels} value`; every
    family typed once, before its samples, its samples together; histogram suffixes belong to
    their family. Raises AssertionError on any deviation."""
    assert text.endswith("\n"), "the exposition ends with a newline"
    types, helps, samples = {}, set(), {}
    order = []  # families in the order their samples appear
    for ln in text[:-1].split("\n"):
        if ln.startswith("#"):
            parts = ln.split(" ", 3)
            assert len(parts) >= 3 and parts[1] in ("HELP", "TYPE"), "bad comment %r" % ln
            if parts[1] == "TYPE":
                assert parts[2] not in types, "family %s typed twice" % parts[2]
                assert len(parts) == 4 and parts[3] in (
                    "counter", "gauge", "histogram", "summary", "untyped"), ln
                types[parts[2]] = parts[3]
            else:
                assert parts[2] not in helps, "family %s has two HELP lines" % parts[2]
                assert parts[2] not in types, "HELP of %s after its TYPE" % parts[2]
                helps.add(parts[2])
            continue
        m = _SAMPLE.match(ln)
        assert m, "not a sample line: %r" % ln
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        fam = name
        if fam not in types:
            for suf in ("_bucket", "_sum", "_count"):
                if name.endswith(suf) and types.get(name[:-len(suf)]) == "histogram":
                    fam = name[:-len(suf)]
        assert fam in types, "sample %r has no # TYPE before it" % ln
        assert fam in helps, "family %s has no # HELP" % fam
        if not order or order[-1] != fam:
            assert fam not in order, "the samples of %s are not together" % fam
            order.append(fam)
        if types[fam] == "counter":
            assert name.endswith("_total"), "counter %s does not end in _total" % name
        pairs = frozenset((k, _unescape(v)) for k, v in _LABEL_PAIR.findall(labels))
        key = (name, pairs)
        assert key not in samples, "duplicate sample %r" % ln
        samples[key] = float(value)
    return Metrics(types, samples)


# --- helpers ----------------------------------------------------------------------------------
def wait_for(cond, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def txn_json(txn_id, pad=0):
    return canonical({"origin": "hs.localhost", "origin_server_ts": 1700000000000,
                      "pdus": [{"type": "m.room.message", "room_id": "!r:hs.localhost",
                                "content": {"body": txn_id, "pad": "x" * pad}}], "edus": []})


def enqueue(relay, rs, txn_id, pad=0):
    """PUT /send/txn_id to rs through the egress, as a homeserver does: stored, then 200."""
    path = SEND + txn_id
    body = txn_json(txn_id, pad)
    headers = [("Proxy-Authorization", "Bearer " + SECRET),
               xmatrix("PUT", path, body, origin="hs.localhost", destination=rs.name,
                       key=REMOTE_KEY),
               ("Content-Type", "application/json")]
    with Conn.plain(relay.egress_port) as c:
        r = c.request("PUT", "matrix-federation://%s%s" % (rs.name, path), headers=headers,
                      body=body)
    assert r.status == 200, r
    return body


def dest_entry(relay, name):
    for d in relay.get_json(ADMIN + "/queue")["destinations"]:
        if d["destination"] == name:
            return d
    return None


def admin_lines(ch):
    return [e for e in ch.access_log() if e.get("listener") == "admin"]


# --- /metrics -----------------------------------------------------------------------------------
def test_metrics_parse_and_families(relay):
    """Every line is a HELP/TYPE comment or a sample; every family named in the design is
    there with its type; the histogram's buckets are cumulative and end in +Inf = _count."""
    r = relay()
    m = r.metrics()
    want = {
        "chappe_requests_total": "counter",
        "chappe_policy_denials_total": "counter",
        "chappe_xmatrix_verifications_total": "counter",
        "chappe_tls_handshakes_total": "counter",
        "chappe_upstream_request_duration_seconds": "histogram",
        "chappe_deliveries_total": "counter",
        "chappe_deliveries_in_flight": "gauge",
        "chappe_key_fetches_total": "counter",
        "chappe_queue_depth": "gauge",
        "chappe_queue_bytes": "gauge",
        "chappe_queue_oldest_age_seconds": "gauge",
        "chappe_queue_failures": "gauge",
        "chappe_queue_transactions": "gauge",
        "chappe_queue_stored_bytes": "gauge",
        "chappe_dead_transactions": "gauge",
        "chappe_store_batches_total": "counter",
        "chappe_store_used_bytes": "gauge",
    }
    for fam, typ in want.items():
        assert m.types.get(fam) == typ, (fam, m.types.get(fam))
    assert m.get("chappe_policy_denials_total", direction="inbound",
                 reason="name_not_allowed") == 0
    assert m.get("chappe_queue_transactions") == 0
    assert m.get("chappe_dead_transactions") == 0
    assert m.get("chappe_store_map_bytes") > 0
    les = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
    h = "chappe_upstream_request_duration_seconds"
    for le in les:
        assert m.get(h + "_bucket", le=le) == 0, le
    assert m.get(h + "_count") == 0 and m.get(h + "_sum") == 0


def test_metrics_counters_move(relay, certs):
    """Requests by listener and status, X-Matrix results, TLS handshakes, policy denials and
    the upstream histogram all count what was done between two scrapes."""
    r = relay()
    before = r.metrics()
    with Conn.plain(r.plain_port) as c:
        for _ in range(3):
            assert c.request("GET", VERSION).status == 200
        assert c.request("GET", "/nowhere").status == 404
    body = canonical({"origin": "remote.localhost", "pdus": [], "edus": []})
    with Conn.tls(r.tls_port) as c:
        resp = c.request("PUT", SEND + "m1", body=body,
                         headers=[xmatrix("PUT", SEND + "m1", body),
                                  ("Content-Type", "application/json")])
        assert resp.status == 200, resp
    with Conn.tls(r.tls_port) as c:  # no Authorization: refused before any key is looked at
        resp = c.request("PUT", SEND + "m2", body=body,
                         headers=[("Content-Type", "application/json")])
        assert resp.status == 401, resp
    with Conn.tls(r.tls_port) as c:  # an origin outside federation_domain_whitelist
        resp = c.request("PUT", SEND + "m3", body=body,
                         headers=[xmatrix("PUT", SEND + "m3", body, origin="evil.example"),
                                  ("Content-Type", "application/json")])
        assert resp.status == 403, resp
    after = r.metrics()

    def moved(name, **labels):
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("chappe_requests_total", listener="federation", status="200") == 4
    assert moved("chappe_requests_total", listener="federation", status="404") == 1
    assert moved("chappe_requests_total", listener="federation", status="401") == 1
    assert moved("chappe_requests_total", listener="federation", status="403") == 1
    # the first scrape itself was answered (and counted) before the second was rendered
    assert moved("chappe_requests_total", listener="admin", status="200") == 1
    assert moved("chappe_xmatrix_verifications_total", result="ok") == 1
    assert moved("chappe_xmatrix_verifications_total", result="malformed") == 1
    assert moved("chappe_policy_denials_total", direction="inbound",
                 reason="name_not_allowed") == 1
    assert moved("chappe_tls_handshakes_total", side="server", result="ok") == 3
    h = "chappe_upstream_request_duration_seconds"
    assert moved(h + "_count") == 4  # three versions and the verified transaction
    assert moved(h + "_bucket", le="+Inf") == 4
    assert after.value(h + "_sum") > 0


def test_metrics_head_and_405(relay):
    r = relay()
    with Conn.plain(r.admin_port) as c:
        full = c.request("GET", "/metrics", host="127.0.0.1")
        head = c.request("HEAD", "/metrics", host="127.0.0.1")
        assert head.status == 200 and head.body == b"", head
        assert int(head.header("Content-Length")) > 1000
        # a HEAD that fails gets the head alone too: the connection stays in step
        missing = c.request("HEAD", ADMIN + "/dead/9", host="127.0.0.1")
        assert missing.status == 404 and missing.body == b"", missing
        assert int(missing.header("Content-Length")) > 0
        post = c.request("POST", "/metrics", host="127.0.0.1", body=b"")
        assert post.status == 405, post
        assert post.header("Allow") == "GET, HEAD"
        assert post.json()["errcode"] == "M_UNRECOGNIZED"
    assert full.status == 200 and len(full.body) > 1000


# --- access ---------------------------------------------------------------------------------------
def test_loopback_without_token_path(relay):
    """No token_path: loopback peers are served (127.0.0.0/8 and ::1), an Authorization header
    is not looked at."""
    r = relay(ipv6=True)
    assert r.admin("GET", "/metrics").status == 200
    assert r.admin("GET", "/metrics", source="127.0.0.5").status == 200
    assert r.admin("GET", "/metrics", host="::1").status == 200
    assert r.admin("GET", "/metrics", headers=[("Authorization", "Bearer whatever")]).status \
        == 200


def test_token_presented_must_be_right(relay):
    """With token_path, loopback peers need no token, but one that is presented must be the
    listener's: a wrong one, another scheme or two headers are refused even from loopback."""
    r = relay(token=True, ipv6=True)
    assert r.admin("GET", "/metrics").status == 200
    assert r.admin("GET", "/metrics", host="::1").status == 200
    bad = r.admin("GET", "/metrics", host="::1", headers=[("Authorization", "Bearer nope")])
    assert bad.status == 401, bad
    ok = r.admin("GET", ADMIN + "/queue", headers=[("Authorization", "Bearer " + TOKEN)])
    assert ok.status == 200, ok
    assert r.admin("GET", "/metrics", headers=[("Authorization", "bearer  " + TOKEN)]).status \
        == 200
    for value in ("Bearer " + TOKEN + "x", "Bearer " + TOKEN[:-1], "Basic " + TOKEN, "Bearer"):
        bad = r.admin("GET", "/metrics", headers=[("Authorization", value)])
        assert bad.status == 401, (value, bad)
        assert bad.json()["errcode"] == "M_UNAUTHORIZED", bad
        assert bad.header("WWW-Authenticate").startswith("Bearer"), bad
    two = r.admin("GET", "/metrics", headers=[("Authorization", "Bearer " + TOKEN),
                                              ("Authorization", "Bearer " + TOKEN)])
    assert two.status == 400, two
    assert TOKEN not in r.ch.stdout() + r.ch.stderr()


# --- the queue API, empty ---------------------------------------------------------------------------
def test_empty_queue_and_errors(relay):
    r = relay()
    q = r.get_json(ADMIN + "/queue")
    assert q == {"destinations": [], "totals": {"count": 0, "bytes": 0, "dead": 0}}
    assert r.get_json(ADMIN + "/dead") == {"dead": []}
    cases = [
        ("POST", ADMIN + "/queue/nowhere.localhost/retry", 404, "M_NOT_FOUND"),
        ("GET", ADMIN + "/dead/7", 404, "M_NOT_FOUND"),
        ("DELETE", ADMIN + "/dead/7", 404, "M_NOT_FOUND"),
        ("POST", ADMIN + "/dead/7/requeue", 404, "M_NOT_FOUND"),
        ("GET", ADMIN + "/dead/abc", 400, "M_INVALID_PARAM"),
        ("GET", ADMIN + "/dead/-1", 400, "M_INVALID_PARAM"),
        ("GET", ADMIN + "/dead/99999999999999999999", 400, "M_INVALID_PARAM"),
        ("POST", ADMIN + "/queue/bad%00x/retry", 400, "M_INVALID_PARAM"),
        ("GET", ADMIN + "/nothing", 404, "M_UNRECOGNIZED"),
        ("GET", ADMIN + "/dead/7/other", 404, "M_UNRECOGNIZED"),
        ("GET", "/", 404, "M_UNRECOGNIZED"),
        ("GET", "/_matrix/federation/v1/version", 404, "M_UNRECOGNIZED"),
        ("POST", ADMIN + "/queue", 405, "M_UNRECOGNIZED"),
        ("GET", ADMIN + "/queue/x.localhost/retry", 405, "M_UNRECOGNIZED"),
        ("PUT", ADMIN + "/dead/7", 405, "M_UNRECOGNIZED"),
    ]
    with Conn.plain(r.admin_port) as c:  # one keep-alive connection for all of them
        for method, path, status, errcode in cases:
            resp = c.request(method, path, host="127.0.0.1",
                             body=b"" if method in ("POST", "PUT") else None)
            assert resp.status == status, (method, path, resp)
            assert resp.header("Content-Type") == "application/json"
            assert resp.json()["errcode"] == errcode, (method, path, resp.json())
    allow = r.admin("PUT", ADMIN + "/dead/7", body=b"").header("Allow")
    assert allow == "GET, HEAD, DELETE", allow
    lines = admin_lines(r.ch)
    assert len(lines) == len(cases) + 3, lines
    assert [(e["method"], e["status"]) for e in lines[2:-1]] == \
        [(m, s) for m, _, s, _ in cases]


def test_bodies_and_framing(relay):
    """A small body is read and ignored; one over 4 KiB is 413 and the connection closes."""
    r = relay()
    with Conn.plain(r.admin_port) as c:
        resp = c.request("POST", ADMIN + "/dead/1/requeue", host="127.0.0.1", body=b"{}")
        assert resp.status == 404, resp
        resp = c.request("POST", ADMIN + "/dead/1/requeue", host="127.0.0.1",
                         body=b"x" * 5000)
        assert resp.status == 413, resp
        assert resp.header("Connection") == "close"
        c.wait_closed(5)
    with Conn.plain(r.admin_port) as c:
        c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET " + ADMIN.encode() +
               b"/dead HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        a = c.read_response()
        b = c.read_response()
        assert (a.status, b.status) == (200, 200)
        assert json.loads(b.body) == {"dead": []}


# --- the queue API with real entries ----------------------------------------------------------------
def test_down_destination_visible_and_retry(relay, remote):
    """A destination that is down: depth, bytes, failures, backoff and the next attempt are
    visible in the API and in /metrics; POST .../retry resets the backoff and the sender tries
    at once, long before the backoff would have let it."""
    rs = remote()
    rs.down = True
    r = relay(egress=True, queue={"retry": {"min": "60s", "multiplier": 2, "max": "1h"}})
    enqueue(r, rs, "d1")
    d = wait_for(lambda: (dest_entry(r, rs.name) or {}).get("failures", 0) >= 1 and
                 dest_entry(r, rs.name), 15)
    assert d, r.get_json(ADMIN + "/queue")
    assert d["depth"] == 1 and d["bytes"] > len(txn_json("d1")), d
    assert d["failures"] == 1 and d["last_error"], d
    assert d["backoff_ms"] == 60000, d  # the base: queue.retry.min
    assert 30000 < d["next_attempt_in_ms"] <= 84000, d  # with jitter x0.8-1.4
    assert d["next_attempt_ts"] > int(time.time() * 1000), d
    assert d["oldest_age_ms"] >= 0 and d["last_status"] == 0, d
    q = r.get_json(ADMIN + "/queue")
    assert q["totals"]["count"] == 1 and q["totals"]["bytes"] == d["bytes"], q
    m = r.metrics()
    assert m.get("chappe_queue_depth", destination=rs.name) == 1
    assert m.get("chappe_queue_bytes", destination=rs.name) == d["bytes"]
    assert m.get("chappe_queue_failures", destination=rs.name) == 1
    assert m.get("chappe_queue_oldest_age_seconds", destination=rs.name) >= 0
    assert m.get("chappe_queue_transactions") == 1
    assert m.get("chappe_deliveries_total", result="retried") >= 1

    rs.down = False
    t0 = time.monotonic()
    resp = r.admin("POST", ADMIN + "/queue/%s/retry" % rs.name, body=b"")
    assert resp.status == 200, resp
    assert resp.json() == {"destination": rs.name, "reset": True}
    got = wait_for(lambda: "d1" in rs.txn_ids(), 10)
    assert got, "not delivered after the retry: %r" % r.get_json(ADMIN + "/queue")
    assert time.monotonic() - t0 < 10
    d = wait_for(lambda: (dest_entry(r, rs.name) or {"depth": 1})["depth"] == 0 and
                 dest_entry(r, rs.name), 10)
    assert d and d["failures"] == 0 and d["backoff_ms"] == 0 and d["next_attempt_ts"] == 0, d
    m = r.metrics()
    assert m.get("chappe_queue_depth", destination=rs.name) == 0
    assert m.get("chappe_deliveries_total", result="delivered") == 1


def test_dead_entry_requeue_and_delete(relay, remote):
    """A destination answering 403: the transaction goes to dead; the API lists it, shows it
    with the response, requeues it (delivered once the destination accepts) and deletes
    another."""
    rs = remote()
    rs.put_answer = (403, {"errcode": "M_FORBIDDEN", "error": "not from you"})
    r = relay(egress=True)
    enqueue(r, rs, "x1")
    dead = wait_for(lambda: r.get_json(ADMIN + "/dead")["dead"], 15)
    assert len(dead) == 1, dead
    e = dead[0]
    assert (e["destination"], e["origin"], e["txn_id"], e["status"]) == \
        (rs.name, "hs.localhost", "x1", 403), e
    assert e["attempts"] == 0 and e["body_bytes"] == len(txn_json("x1")), e
    assert e["died_ts"] <= int(time.time() * 1000) and e["reason"], e
    one = r.get_json(ADMIN + "/dead/%d" % e["id"])
    assert json.loads(one["response"]) == {"errcode": "M_FORBIDDEN", "error": "not from you"}
    assert one["path"] == SEND + "x1" and one["method"] == "PUT", one
    assert {k: one[k] for k in e} == e
    m = r.metrics()
    assert m.get("chappe_dead_transactions") == 1
    assert m.get("chappe_deliveries_total", result="dead") == 1
    assert r.get_json(ADMIN + "/queue")["totals"]["dead"] == 1

    rs.put_answer = (200, {"pdus": {}})
    resp = r.admin("POST", ADMIN + "/dead/%d/requeue" % e["id"], body=b"")
    assert resp.status == 200, resp
    body = resp.json()
    assert body["id"] == e["id"] and body["requeued"] is True and body["seq"] >= 2, body
    assert body["destination"] == rs.name
    assert wait_for(lambda: rs.txn_ids().count("x1") == 2, 10), rs.txn_ids()
    assert r.get_json(ADMIN + "/dead") == {"dead": []}
    assert r.admin("GET", ADMIN + "/dead/%d" % e["id"]).status == 404

    rs.put_answer = (400, {"errcode": "M_BAD_JSON", "error": "no"})
    enqueue(r, rs, "x2")
    dead = wait_for(lambda: r.get_json(ADMIN + "/dead")["dead"], 15)
    assert [d["txn_id"] for d in dead] == ["x2"], dead
    resp = r.admin("DELETE", ADMIN + "/dead/%d" % dead[0]["id"])
    assert resp.status == 200 and resp.json() == {"id": dead[0]["id"], "deleted": True}, resp
    assert r.admin("DELETE", ADMIN + "/dead/%d" % dead[0]["id"]).status == 404
    assert r.get_json(ADMIN + "/dead") == {"dead": []}
    assert r.metrics().get("chappe_dead_transactions") == 0


def test_close_while_write_in_flight(relay, remote):
    """A client that sends POST .../retry and goes away at once: the write still happens and
    nothing is answered (no crash, no leak at exit: the harness checks the sanitizers)."""
    rs = remote()
    rs.down = True
    r = relay(egress=True, queue={"retry": {"min": "60s", "multiplier": 2, "max": "1h"}})
    enqueue(r, rs, "c1")
    assert wait_for(lambda: (dest_entry(r, rs.name) or {}).get("failures", 0) >= 1, 15)
    for _ in range(20):
        with Conn.plain(r.admin_port) as c:
            c.send("POST %s/queue/%s/retry HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % (
                ADMIN, rs.name))
    assert r.admin("GET", ADMIN + "/queue").status == 200


def test_requeue_over_the_cap_is_503(relay, remote):
    """Requeueing a dead entry into a destination whose queue is at its cap: 503
    M_LIMIT_EXCEEDED with Retry-After, and the dead entry stays where it was."""
    rs = remote()
    rs.put_answer = (403, {"errcode": "M_FORBIDDEN", "error": "no"})
    r = relay(egress=True, queue={"max_bytes_per_destination": "64KiB",
                                  "retry": {"min": "60s", "multiplier": 2, "max": "1h"}})
    enqueue(r, rs, "big1", pad=40000)
    dead = wait_for(lambda: r.get_json(ADMIN + "/dead")["dead"], 15)
    assert [d["txn_id"] for d in dead] == ["big1"], dead
    rs.down = True
    enqueue(r, rs, "big2", pad=40000)
    resp = r.admin("POST", ADMIN + "/dead/%d/requeue" % dead[0]["id"], body=b"")
    assert resp.status == 503, resp
    assert resp.json()["errcode"] == "M_LIMIT_EXCEEDED", resp.json()
    assert resp.header("Retry-After") == "10", resp
    assert r.get_json(ADMIN + "/dead")["dead"] == dead
    assert dest_entry(r, rs.name)["depth"] == 1
