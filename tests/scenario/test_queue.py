"""Scenario: the durable transaction queue (issue 6, "Queue", "Sender", "Restart"). A fronted
homeserver sends `PUT matrix-federation://DEST/_matrix/federation/v1/send/{txnId}` through the
egress listener; chappe checks it, stores it in LMDB, answers 200 {"pdus":{}} once the commit is
durable, and its sender delivers it later. The destinations are RemoteServers (fedremote.py, TLS
on loopback) that record every txnId and fail on demand: connections dropped (rs.down), a
scripted 500/429/4xx, an answer that hangs, a listener that goes away and comes back.

Every test bounds its waits. The sender walks the queue every 500 ms, so a retry lands on the
first walk after its backoff: the timings below allow for that."""
# SPDX-License-Identifier: ISC

import json
import os
import re
import signal
import threading
import time
from types import SimpleNamespace

import pytest
from signedjson.key import get_verify_key
from signedjson.sign import verify_signed_json

from fedremote import RemoteServer
import harness
from harness import free_port, make_config, run_cli
from httpc import REMOTE_KEY, Conn, build_request, canonical, xmatrix
from upstream import Upstream

SECRET = "hs-egress-secret-of-the-queue-tests"
SECRET2 = "hs2-egress-secret-of-the-queue-tests"  # hs2.localhost, the other fronted homeserver
SEND = "/_matrix/federation/v1/send/"
FAST_RETRY = {"min": "200ms", "multiplier": 2, "max": "1s"}
WALK = 0.5  # the sender's walk period (sender.c WALK_MS)


# --- fixtures -------------------------------------------------------------------------------
class Relay:
    """A running chappe (r.ch) with an egress listener (r.port) for its homeservers; restart()
    starts another one on the same config (same ports, same queue.path)."""

    def __init__(self, start_chappe, cfg, port):
        self._start = start_chappe
        self.cfg = cfg
        self.port = port  # egress, plain HTTP
        self.tls_port = int(cfg["listeners"][0]["bind"][0].rsplit(":", 1)[1])  # federation
        self.ch = start_chappe(cfg)

    def restart(self):
        self.ch = self._start(self.cfg)
        return self.ch

    def kill9(self):
        """SIGKILL the running chappe (by its pid), wait for it, and tell the harness the exit
        status is expected."""
        os.kill(self.ch.pid, signal.SIGKILL)
        assert self.ch.wait(10) is not None, "chappe did not die of SIGKILL"
        self.ch.killed = True

    def stderr(self):
        return self.ch.stderr()


@pytest.fixture
def relay(certs, tmp_path, start_chappe, make_upstream):
    """relay(queue=None, limits=None, **extra) -> Relay: hs.localhost and hs2.localhost fronted
    (upstreams r.ups), each with its egress secret, the test CA trusted for destinations, the
    queue in tmp_path/q with fast retries (queue.retry FAST_RETRY) unless queue says
    otherwise."""
    def go(queue=None, limits=None, **extra):
        ups = [make_upstream(), make_upstream()]
        cfg = make_config(certs, free_port(), None,
                          [("hs.localhost", ups[0].url), ("hs2.localhost", ups[1].url)],
                          limits=limits,
                          extra=dict({"federation_custom_ca_list": [str(certs.ca)]}, **extra))
        for hs, secret in zip(cfg["homeservers"], (SECRET, SECRET2)):
            sp = tmp_path / ("%s.egress-secret" % hs["server_name"])
            sp.write_text(secret + "\n")
            os.chmod(sp, 0o600)
            hs["egress_secret_path"] = str(sp)
        port = free_port()
        cfg["listeners"].append({"type": "egress", "bind": ["127.0.0.1:%d" % port],
                                 "tls": False})
        cfg["queue"] = dict({"path": str(tmp_path / "q"), "retry": FAST_RETRY}, **(queue or {}))
        r = Relay(start_chappe, cfg, port)
        r.ups = ups
        return r
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


# --- transactions ---------------------------------------------------------------------------
def txn_json(txn_id, pdus=1, edus=0, size=None):
    """A transaction body (canonical JSON) whose PDUs name txn_id; padded to size bytes."""
    obj = {"origin": "hs.localhost", "origin_server_ts": 1700000000000,
           "pdus": [{"type": "m.room.message", "room_id": "!r:hs.localhost",
                     "content": {"body": "%s/%d" % (txn_id, i)}} for i in range(pdus)],
           "edus": [{"edu_type": "m.typing", "content": {"n": i}} for i in range(edus)]}
    if size is not None:
        obj["pad"] = ""
        obj["pad"] = "x" * (size - len(canonical(obj)))
    return canonical(obj)


def send_request(rs, txn_id, body=None, origin="hs.localhost", destination=None, sign=True,
                 sign_content=True, proxy_auth=True):
    """(target, headers, body) of PUT /send/txn_id to rs, signed as the homeserver does (body
    None: txn_json(txn_id)). sign_content False: the signature covers no content (for a body
    that is not JSON)."""
    path = SEND + txn_id
    body = txn_json(txn_id) if body is None else body
    headers = []
    if proxy_auth:
        headers.append(("Proxy-Authorization", "Bearer " + SECRET))
    if sign:
        headers.append(xmatrix("PUT", path, body if sign_content else None, origin=origin,
                               destination=destination or rs.name, key=REMOTE_KEY))
    headers.append(("Content-Type", "application/json"))
    return "matrix-federation://%s%s" % (rs.name, path), headers, body


def put(conn, rs, txn_id, timeout=10.0, **kw):
    target, headers, body = send_request(rs, txn_id, **kw)
    return conn.request("PUT", target, headers=headers, body=body, timeout=timeout)


def put_once(port, rs, txn_id, **kw):
    with Conn.plain(port) as c:
        return put(c, rs, txn_id, **kw)


def wait_for(cond, timeout, step=0.05):
    """cond() once it is true, else its last value after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def wait_txns(rs, want, timeout):
    """rs's received txnIds once they include every one of want (bounded)."""
    want = set(want)
    return wait_for(lambda: want <= set(rs.txn_ids()) and rs.txn_ids(), timeout) or \
        rs.txn_ids()


def stays(cond, seconds, step=0.05):
    """True when cond() holds for the whole of seconds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not cond():
            return False
        time.sleep(step)
    return cond()


def retry_waits(ch, dest):
    """The 'next attempt in N ms' of each retry the sender logged for dest, in order."""
    pat = re.compile(r"sender: %s: txn \S+ not delivered \((.*)\); next attempt in (\d+) ms" %
                     re.escape(dest))
    return [(m.group(1), int(m.group(2))) for m in pat.finditer(ch.stderr())]


def dead_lines(ch, dest):
    pat = re.compile(r"sender: %s: txn (\S+) moved to dead: (.*)" % re.escape(dest))
    return [(m.group(1), m.group(2)) for m in pat.finditer(ch.stderr())]


def parse_xmatrix(value):
    assert value.startswith("X-Matrix "), value
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


def queue_cli(relay, *args):
    """`chappe queue ARGS -c CFG`, or None when this chappe has no queue command yet."""
    r = run_cli(harness.debug_bin(), ["queue"] + list(args) + ["-c", str(relay.ch.cfg_path)])
    if r.returncode != 0 and "unknown command" in (r.stderr + r.stdout).lower():
        return None
    return r


# --- 1, 2: delivery as signed, dedupe ---------------------------------------------------------
def test_delivered_exactly_as_signed(relay, remote):
    """The destination gets the bytes the homeserver signed (here not canonical: spacing and key
    order kept), with its Authorization, and the signature verifies with signedjson."""
    rs = remote()
    r = relay()
    obj = {"pdus": [{"type": "m.room.message", "content": {"body": "h\u00e9llo"}}],
           "origin_server_ts": 1700000000000, "origin": "hs.localhost",
           "edus": [{"edu_type": "m.receipt", "content": {}}]}
    body = json.dumps(obj, indent=1, ensure_ascii=False).encode() + b"\n"
    target, headers, _ = send_request(rs, "t1", body=body)
    with Conn.plain(r.port) as c:
        resp = c.request("PUT", target, headers=headers, body=body)
    assert resp.status == 200, resp
    assert resp.json() == {"pdus": {}}, resp
    assert wait_txns(rs, ["t1"], 10) == ["t1"]
    (method, path, got, got_body), = rs.received
    assert (method, path) == ("PUT", SEND + "t1")
    assert got_body == body
    sig = dict(headers)["Authorization"]
    assert got["Authorization"] == sig
    assert got["Content-Type"] == "application/json"
    assert got["Host"] == rs.name
    x = parse_xmatrix(got["Authorization"])
    assert (x["origin"], x["destination"], x["key"]) == ("hs.localhost", rs.name, "ed25519:test")
    signed = {"method": method, "uri": path, "origin": x["origin"],
              "destination": x["destination"], "content": json.loads(got_body),
              "signatures": {x["origin"]: {x["key"]: x["sig"]}}}
    verify_signed_json(signed, "hs.localhost", get_verify_key(REMOTE_KEY))
    # and nothing more comes: it was removed from the queue once delivered
    assert stays(lambda: rs.txn_ids() == ["t1"], 1.2), rs.txn_ids()


def test_duplicate_txn_acked_twice_delivered_once(relay, remote):
    rs = remote()
    rs.down = True  # both arrive while the first is still queued
    r = relay()
    with Conn.plain(r.port) as c:
        a = put(c, rs, "dup")
        b = put(c, rs, "dup")
        other = put(c, rs, "next")
    assert (a.status, b.status, other.status) == (200, 200, 200), (a, b, other)
    assert a.json() == b.json() == {"pdus": {}}
    # the dedupe index is in the store: it holds across a restart
    assert r.ch.stop() == []
    r.restart()
    assert put_once(r.port, rs, "dup").status == 200
    rs.down = False
    assert wait_txns(rs, ["dup", "next"], 10) == ["dup", "next"]
    assert stays(lambda: rs.txn_ids() == ["dup", "next"], 1.2), rs.txn_ids()
    # once delivered it has left the queue: the same txnId again is a new transaction (the
    # destination deduplicates those)
    assert put_once(r.port, rs, "dup").status == 200
    assert wait_for(lambda: rs.txn_ids() == ["dup", "next", "dup"], 5), rs.txn_ids()


def test_to_another_fronted_homeserver_through_the_queue(relay):
    """hs.localhost sends to hs2.localhost, fronted by the same relay: queued like any other
    and delivered to hs2's upstream (plain HTTP), retried while that upstream is down."""
    r = relay()
    body = txn_json("loc1")
    target, headers, _ = send_request(SimpleNamespace(name="hs2.localhost"), "loc1", body=body)
    up2 = r.ups[1]
    port2 = up2.port
    up2.stop()  # down first: connection refused
    with Conn.plain(r.port) as c:
        resp = c.request("PUT", target, headers=headers, body=body)
    assert resp.status == 200 and resp.json() == {"pdus": {}}, resp
    assert wait_for(lambda: retry_waits(r.ch, "hs2.localhost"), 5), r.stderr()[-2000:]
    up2 = Upstream(port=port2).start()
    try:
        assert wait_for(lambda: up2.requests, 5), "not delivered to hs2's upstream"
        (req,) = up2.requests
        assert (req.method, req.target) == ("PUT", SEND + "loc1")
        assert bytes(req.body) == body
        assert req.header_all("Authorization") == [dict(headers)["Authorization"]]
        assert r.ups[0].requests == []
        assert stays(lambda: len(up2.requests) == 1, 1.2), up2.requests
    finally:
        up2.stop()


def test_pipelined_transactions(relay, remote):
    """100 transactions of 3 KB written at once on one connection (more than the 64 KiB the
    egress reads ahead before pausing): 100 answers in order, 100 deliveries in order."""
    rs = remote()
    r = relay()
    ids = ["pipe%03d" % i for i in range(100)]
    raw = b""
    for t in ids:
        target, headers, body = send_request(rs, t, body=txn_json(t, size=3000))
        raw += build_request("PUT", target, headers=headers, body=body)
    with Conn.plain(r.port) as c:
        c.send(raw)
        answers = [c.read_response(timeout=20) for _ in ids]
    assert [a.status for a in answers] == [200] * 100, [a for a in answers if a.status != 200]
    assert wait_txns(rs, ids, 20) == ids


# --- 3, 4: refused before anything is stored ------------------------------------------------
def test_denied_destination_403_nothing_stored(relay, remote):
    """A destination outside federation_domain_whitelist: 403 M_FORBIDDEN at once, no
    connection to it; and nothing was stored: a relay restarted on the same queue with the
    destination allowed sends it nothing."""
    rs = remote(name_host="127.0.0.1")  # "127.0.0.1:PORT": not in [localhost, *.localhost]
    r = relay()
    with Conn.plain(r.port) as c:
        resp = put(c, rs, "denied1")
    assert resp.status == 403, resp
    assert resp.json()["errcode"] == "M_FORBIDDEN", resp
    assert rs.name in resp.json()["error"], resp
    assert stays(lambda: rs.accepts == 0, 1.2), rs.accepts
    assert r.ch.stop() == []
    r.cfg["federation_domain_whitelist"] = ["localhost", "*.localhost", "127.0.0.1"]
    r.restart()
    # the restarted relay can reach it, and the walk at start-up found nothing for it
    with Conn.plain(r.port) as c:
        resp = put(c, rs, "allowed2")
    assert resp.status == 200, resp
    assert wait_txns(rs, ["allowed2"], 10) == ["allowed2"]
    assert stays(lambda: rs.txn_ids() == ["allowed2"], 1.2), rs.txn_ids()


def test_invalid_transactions_refused(relay, remote):
    """Each refused with its status and errcode before anything is stored: none of them is
    ever delivered, a valid one sent after them is."""
    rs = remote()
    other = remote()
    r = relay(limits={"max_body_bytes": "64KiB"})
    cases = [
        # (what, kw for send_request, status, errcode)
        ("not JSON", dict(body=b'{"pdus": [', sign_content=False), 400, "M_NOT_JSON"),
        ("an array", dict(body=b"[]"), 400, "M_BAD_JSON"),
        ("no pdus", dict(body=canonical({"edus": []})), 400, "M_BAD_JSON"),
        ("51 PDUs", dict(body=txn_json("p51", pdus=51)), 400, "M_BAD_JSON"),
        ("101 EDUs", dict(body=txn_json("e101", pdus=0, edus=101)), 400, "M_BAD_JSON"),
        ("no Authorization", dict(sign=False), 401, "M_UNAUTHORIZED"),
        ("signed by another origin", dict(origin="hs2.localhost"), 401, "M_UNAUTHORIZED"),
        ("signed for another destination", dict(destination=other.name), 401,
         "M_UNAUTHORIZED"),
        ("no Proxy-Authorization", dict(proxy_auth=False), 401, "M_MISSING_TOKEN"),
    ]
    for i, (what, kw, status, errcode) in enumerate(cases):
        resp = put_once(r.port, rs, "bad%d" % i, **kw)
        assert resp.status == status, (what, resp)
        assert resp.json()["errcode"] == errcode, (what, resp)
    # just the limits: 50 PDUs and 100 EDUs are fine
    assert put_once(r.port, rs, "p50", body=txn_json("p50", pdus=50)).status == 200
    assert put_once(r.port, rs, "e100", body=txn_json("e100", pdus=0, edus=100)).status == 200
    # over limits.max_body_bytes: refused on its Content-Length, before the body
    target, headers, _ = send_request(rs, "big", body=txn_json("big", size=64 * 1024 + 1))
    with Conn.plain(r.port) as c:
        c.send(build_request("PUT", target, headers=headers + [
            ("Content-Length", str(64 * 1024 + 1))]))
        resp = c.read_response()
    assert resp.status == 413 and resp.json()["errcode"] == "M_TOO_LARGE", resp
    assert wait_txns(rs, ["p50", "e100"], 10) == ["p50", "e100"]
    assert stays(lambda: rs.txn_ids() == ["p50", "e100"] and other.accepts == 0, 1.2), \
        (rs.txn_ids(), other.accepts)


# --- 5, 6: retries -----------------------------------------------------------------------------
def test_destination_down_then_back_in_order(relay, remote):
    """20 transactions to a destination whose connections fail: all acked at once; the sender
    backs off (200 ms, x2, capped at 1 s, jitter x0.8-1.4) on the head entry only, through
    dropped connections then refused ones; once the destination is back, all 20 arrive, in
    order, once each."""
    rs = remote()
    rs.down = True  # connections accepted, then closed before TLS
    r = relay()
    ids = ["down%02d" % i for i in range(20)]
    t0 = time.monotonic()
    with Conn.plain(r.port) as c:
        statuses = [put(c, rs, t).status for t in ids]
    acked_in = time.monotonic() - t0
    assert statuses == [200] * 20
    assert acked_in < 5.0, "the acks waited for something: %.1fs" % acked_in
    waits = wait_for(lambda: len(retry_waits(r.ch, rs.name)) >= 5 and
                     retry_waits(r.ch, rs.name), 10) or retry_waits(r.ch, rs.name)
    assert len(waits) >= 5, waits
    assert rs.received == [], "a request reached a destination that is down"
    for (err, ms), base in zip(waits, [200, 400, 800, 1000, 1000]):
        assert 0.8 * base <= ms <= 1.4 * base, (waits, base)
    rs.stop()  # now refused
    seen = len(waits)
    waits = wait_for(lambda: len(retry_waits(r.ch, rs.name)) >= seen + 2 and
                     retry_waits(r.ch, rs.name), 10) or retry_waits(r.ch, rs.name)
    assert len(waits) >= seen + 2, waits
    assert all(800 <= ms <= 1400 for _, ms in waits[seen:]), waits
    assert "refused" in waits[-1][0], waits[-1]
    assert all(("txn %s not" % t) not in r.stderr() for t in ids[1:]), \
        "an entry behind the head was attempted"
    rs.down = False
    rs.start()
    got = wait_txns(rs, ids, 10)
    assert got == ids
    assert stays(lambda: rs.txn_ids() == ids, 1.2), rs.txn_ids()


def test_500_then_no_answer_then_200_retried(relay, remote):
    """A 500, then connections closed without an answer after the request went out: retried
    with the backoff (200 ms, then 400 ms, jitter x0.8-1.4), then delivered. (The first close
    is on the kept-alive connection of the 500: the client sends a PUT once more at once on a
    new connection, RFC 9110 9.2.2; only the second close is a failed delivery.)"""
    rs = remote()
    rs.put_script += [(500, {"errcode": "M_UNKNOWN", "error": "boom"}), ("drop",), ("drop",)]
    r = relay()
    assert put_once(r.port, rs, "r500").status == 200
    assert wait_for(lambda: len(rs.txn_ids()) >= 4, 6), rs.txn_ids()
    assert rs.txn_ids() == ["r500"] * 4
    gaps = [b - a for a, b in zip(rs.received_at, rs.received_at[1:])]
    assert 0.15 <= gaps[0] <= 0.28 + WALK + 1.0, gaps
    assert gaps[1] < 0.15, gaps
    assert 0.3 <= gaps[2] <= 0.56 + WALK + 1.0, gaps
    waits = retry_waits(r.ch, rs.name)
    assert len(waits) == 2, waits
    assert "HTTP 500 M_UNKNOWN: boom" in waits[0][0] and 160 <= waits[0][1] <= 280, waits
    assert 320 <= waits[1][1] <= 560, waits
    assert stays(lambda: rs.txn_ids() == ["r500"] * 4, 1.2), rs.txn_ids()


def test_429_retry_after_honoured(relay, remote):
    rs = remote()
    rs.put_script.append((429, {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down",
                                "retry_after_ms": 1500}))
    r = relay(queue={"retry": {"min": "200ms", "multiplier": 2, "max": "5s"}})
    assert put_once(r.port, rs, "r429").status == 200
    assert wait_for(lambda: len(rs.txn_ids()) >= 2, 6), rs.txn_ids()
    assert rs.txn_ids() == ["r429", "r429"]
    gap = rs.received_at[1] - rs.received_at[0]
    assert 1.45 <= gap <= 1.5 + WALK + 1.0, gap
    ((err, ms),) = retry_waits(r.ch, rs.name)
    assert "HTTP 429 M_LIMIT_EXCEEDED" in err and ms == 1500, (err, ms)
    assert stays(lambda: rs.txn_ids() == ["r429", "r429"], 1.0), rs.txn_ids()


def test_hang_past_outbound_timeout_retried(relay, remote):
    rs = remote()
    rs.put_script.append(("hang", 4.0))
    r = relay(limits={"outbound_timeout": "1s"})
    assert put_once(r.port, rs, "hung").status == 200
    assert wait_for(lambda: len(rs.txn_ids()) >= 2, 6), rs.txn_ids()
    assert rs.txn_ids() == ["hung", "hung"]
    gap = rs.received_at[1] - rs.received_at[0]
    assert 1.0 + 0.15 <= gap <= 1.0 + 0.28 + WALK + 1.0, gap
    waits = retry_waits(r.ch, rs.name)
    assert len(waits) == 1 and 160 <= waits[0][1] <= 280, waits
    assert stays(lambda: rs.txn_ids() == ["hung", "hung"], 1.2), rs.txn_ids()


def test_one_destination_down_does_not_hold_the_others(relay, remote):
    down, up = remote(), remote()
    down.down = True
    r = relay()
    with Conn.plain(r.port) as c:
        assert put(c, down, "to-down").status == 200
        assert put(c, up, "to-up").status == 200
    assert wait_txns(up, ["to-up"], 3) == ["to-up"]
    assert down.received == []
    down.down = False
    assert wait_txns(down, ["to-down"], 5) == ["to-down"]


def test_max_in_flight_bounds_deliveries_at_once(relay, remote):
    """queue.max_in_flight 1: two destinations that each take 1 s to answer are served one
    after the other."""
    a, b = remote(), remote()
    a.hang = b.hang = 1.0
    r = relay(queue={"max_in_flight": 1})
    with Conn.plain(r.port) as c:
        assert put(c, a, "fa").status == 200
        assert put(c, b, "fb").status == 200
    assert wait_txns(a, ["fa"], 5) == ["fa"] and wait_txns(b, ["fb"], 5) == ["fb"]
    gap = abs(b.received_at[0] - a.received_at[0])
    assert gap >= 0.95, "both in flight at once (%.2fs apart)" % gap
    assert stays(lambda: a.txn_ids() == ["fa"] and b.txn_ids() == ["fb"], 1.5), \
        (a.txn_ids(), b.txn_ids())


def test_sigterm_with_a_delivery_in_flight(relay, remote):
    """SIGTERM while a delivery waits for its answer: chappe exits 0 (no leak), the entry
    stays queued and the next start sends it again."""
    rs = remote()
    rs.hang = 8.0
    r = relay()
    assert put_once(r.port, rs, "inflight").status == 200
    assert wait_txns(rs, ["inflight"], 5) == ["inflight"]
    t0 = time.monotonic()
    assert r.ch.stop() == []
    assert time.monotonic() - t0 < 5, "the stop waited for the delivery"
    rs.hang = 0
    r.restart()
    assert wait_for(lambda: rs.txn_ids() == ["inflight", "inflight"], 5), rs.txn_ids()
    assert stays(lambda: rs.txn_ids() == ["inflight", "inflight"], 1.2), rs.txn_ids()


# --- 7, 8: dead letters -------------------------------------------------------------------------
def test_permanent_4xx_dead_and_the_fifo_goes_on(relay, remote):
    """400, 401, 403, 404, 413: one attempt each, moved to dead; the transactions behind them
    are delivered."""
    rs = remote()
    codes = [400, 401, 403, 404, 413]
    for st in codes:
        rs.put_script.append((st, {"errcode": "M_X%d" % st, "error": "no %d" % st}))
    r = relay()
    ids = ["p%d" % st for st in codes] + ["after1", "after2"]
    with Conn.plain(r.port) as c:
        assert [put(c, rs, t).status for t in ids] == [200] * len(ids)
    assert wait_txns(rs, ids, 10) == ids
    assert stays(lambda: rs.txn_ids() == ids, 1.5), rs.txn_ids()
    dead = dead_lines(r.ch, rs.name)
    assert [t for t, _ in dead] == ids[:5], dead
    for (t, why), st in zip(dead, codes):
        assert why.startswith("HTTP %d M_X%d: no %d" % (st, st, st)), dead
    assert retry_waits(r.ch, rs.name) == []
    # in the dead letters, and requeued from there (once chappe has `queue dead`)
    cli = queue_cli(r, "dead", "--json")
    if cli is None:
        return
    assert cli.returncode == 0, cli.stderr
    entries = json.loads(cli.stdout)["dead"]
    assert [(e["txn_id"], e["status"], e["destination"]) for e in entries] == \
        [(t, st, rs.name) for t, st in zip(ids, codes)], entries
    cli = queue_cli(r, "dead", "requeue", str(entries[2]["id"]))
    assert cli.returncode == 0, cli.stderr
    assert wait_for(lambda: rs.txn_ids() == ids + ["p403"], 5), rs.txn_ids()
    assert stays(lambda: rs.txn_ids() == ids + ["p403"], 1.0), rs.txn_ids()
    cli = queue_cli(r, "dead", "--json")
    assert [e["txn_id"] for e in json.loads(cli.stdout)["dead"]] == \
        ["p400", "p401", "p404", "p413"], cli.stdout


def test_max_age_expiry_goes_to_dead(relay, remote):
    rs = remote()
    rs.down = True
    r = relay(queue={"max_age": "1s"})
    assert put_once(r.port, rs, "old").status == 200
    dead = wait_for(lambda: dead_lines(r.ch, rs.name), 8)
    assert dead and dead[0][0] == "old" and "expired" in dead[0][1], dead
    rs.down = False
    assert put_once(r.port, rs, "new").status == 200
    assert wait_txns(rs, ["new"], 10) == ["new"]
    assert stays(lambda: rs.txn_ids() == ["new"], 1.2), rs.txn_ids()


def test_verified_inbound_request_resets_backoff(relay, remote):
    """A destination backing off for 20 s sends chappe a verified request: it is up, its
    backoff is reset and its queue delivered at once."""
    rs = remote()
    rs.down = True
    r = relay(queue={"retry": {"min": "20s", "multiplier": 2, "max": "1h"}})
    assert put_once(r.port, rs, "pu1").status == 200
    waits = wait_for(lambda: retry_waits(r.ch, rs.name), 5)
    assert waits and waits[0][1] >= 16000, waits
    rs.down = False
    assert stays(lambda: rs.txn_ids() == [], 1.0), "delivered before its backoff ended"
    uri = "/_matrix/federation/v1/publicRooms"
    with Conn.tls(r.tls_port) as c:
        resp = c.request("GET", uri, headers=[("Authorization", rs.sign("GET", uri))])
    assert resp.status not in (401, 403), resp  # verified, passed to the homeserver
    assert wait_txns(rs, ["pu1"], 3) == ["pu1"]
    assert ("sender: %s is up again: backoff reset" % rs.name) in r.stderr()


# --- 9: crash safety -------------------------------------------------------------------------
def test_kill_9_while_sending_loses_nothing_acked(relay, remote):
    """8 keep-alive connections send 5,000 transactions as fast as they can to 4 destinations
    (2 connections each) that answer each after a few ms: the queue fills. chappe is killed
    with SIGKILL half-way. A new chappe on the same config opens the store and delivers every
    transaction that got a 200, in each connection's order; duplicates only for what was in
    flight at the kill (at most one per destination, max_in_flight in all)."""
    n, nconn, ndest, in_flight = 5000, 8, 4, 4
    rss = [remote() for _ in range(ndest)]
    for rs in rss:
        rs.hang = 0.005
    r = relay(queue={"max_in_flight": in_flight})
    ids = ["k%05d" % i for i in range(n)]
    dest = {t: rss[i % ndest] for i, t in enumerate(ids)}  # connection k: rss[k % ndest]
    reqs = {t: send_request(dest[t], t) for t in ids}
    acked, other = [], []
    lock = threading.Lock()

    def sender(k):
        try:
            c = Conn.plain(r.port)
        except OSError:
            return
        with c:
            for t in ids[k::nconn]:
                target, headers, body = reqs[t]
                try:
                    resp = c.request("PUT", target, headers=headers, body=body, timeout=10)
                except (OSError, AssertionError):
                    return  # the kill
                with lock:
                    (acked if resp.status == 200 else other).append((t, resp.status))

    def received():
        return [t for rs in rss for t in rs.txn_ids()]

    threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(nconn)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    assert wait_for(lambda: len(acked) >= n // 2, 60), "only %d acked in 60s" % len(acked)
    r.kill9()
    killed_at = time.monotonic() - t0
    for t in threads:
        t.join(15)
    assert not any(t.is_alive() for t in threads)
    assert other == [], other[:10]
    acked_ids = {t for t, _ in acked}
    at_kill = len(received())
    assert len(acked_ids) < n, "all %d acked before the kill (%.1fs): nothing was in flight" % (
        n, killed_at)
    assert at_kill < len(acked_ids), "the queue never filled: %d delivered, %d acked" % (
        at_kill, len(acked_ids))

    # the store opens cleanly offline after the SIGKILL (`keys list` reads the same LMDB
    # environment; `queue list` once there is one), then for a new relay on the same queue.path
    cli = run_cli(harness.debug_bin(), ["keys", "list", "-c", str(r.ch.cfg_path)])
    assert cli.returncode == 0, cli.stderr
    cli = queue_cli(r, "list")
    assert cli is None or cli.returncode == 0, cli.stderr
    r.restart()
    t1 = time.monotonic()
    got = wait_for(lambda: acked_ids <= set(received()), 90, step=0.2)
    rcv = received()
    print("killed after %.1fs: %d acked, %d delivered; after the restart, %d more deliveries "
          "in %.1fs" % (killed_at, len(acked_ids), at_kill, len(rcv) - at_kill,
                        time.monotonic() - t1))
    missing = acked_ids - set(rcv)
    assert got and not missing, "%d acked transactions never delivered, e.g. %s" % (
        len(missing), sorted(missing)[:5])
    dups = len(rcv) - len(set(rcv))
    assert dups <= in_flight, "%d duplicates: %s" % (dups, sorted(
        t for t in set(rcv) if rcv.count(t) > 1)[:10])
    # each connection's transactions arrived in the order it sent them (first arrivals)
    for k in range(nconn):
        first = {}
        for i, t in enumerate(rss[k % ndest].txn_ids()):
            first.setdefault(t, i)
        mine = [first[t] for t in ids[k::nconn] if t in first]
        assert mine == sorted(mine), "connection %d's transactions out of order" % k
    # the restarted relay takes new transactions and delivers them
    after = ["after%d" % i for i in range(5)]
    with Conn.plain(r.port) as c:
        assert [put(c, rss[0], t).status for t in after] == [200] * 5
    wait_txns(rss[0], after, 20)
    assert rss[0].txn_ids()[-5:] == after


# --- 10, 11: full --------------------------------------------------------------------------
def fill_until_503(r, rs, prefix, size, limit):
    """Send transactions of size bytes until one gets 503; (acked ids, the 503 response)."""
    acked = []
    with Conn.plain(r.port) as c:
        for i in range(limit):
            t = "%s%03d" % (prefix, i)
            resp = put(c, rs, t, body=txn_json(t, size=size))
            if resp.status != 200:
                return acked, resp
            acked.append(t)
    return acked, None


def check_503(resp):
    assert resp is not None, "never full"
    assert resp.status == 503, resp
    assert resp.json()["errcode"] == "M_UNKNOWN", resp
    ra = resp.header("Retry-After")
    assert ra is not None and ra.isdigit() and int(ra) > 0, resp


def test_queue_full_503_nothing_lost(relay, remote):
    rs = remote()
    rs.down = True
    r = relay(queue={"max_bytes": "64KiB", "max_bytes_per_destination": "64KiB"})
    acked, resp = fill_until_503(r, rs, "full", 4000, 40)
    print("%d acked before the 503" % len(acked))
    check_503(resp)
    assert 10 <= len(acked) <= 16, acked  # 64 KiB of ~4 KB records
    # still full: refused again
    again = put_once(r.port, rs, "full999", body=txn_json("full999", size=4000))
    check_503(again)
    rs.down = False
    assert wait_txns(rs, acked, 15) == acked
    # drained: accepted again
    assert put_once(r.port, rs, "again").status == 200
    assert wait_txns(rs, acked + ["again"], 10) == acked + ["again"]
    assert stays(lambda: rs.txn_ids() == acked + ["again"], 1.0), rs.txn_ids()


def test_per_destination_cap_leaves_room_for_the_others(relay, remote):
    """max_bytes_per_destination: one destination down and full gets 503; another one's
    transactions are still accepted and delivered."""
    a, b = remote(), remote()
    a.down = True
    r = relay(queue={"max_bytes": "256KiB", "max_bytes_per_destination": "64KiB"})
    acked, resp = fill_until_503(r, a, "capa", 4000, 40)
    check_503(resp)
    assert 10 <= len(acked) <= 16, acked
    ok = ["capb%d" % i for i in range(5)]
    with Conn.plain(r.port) as c:
        assert [put(c, b, t, body=txn_json(t, size=4000)).status for t in ok] == [200] * 5
    assert wait_txns(b, ok, 5) == ok
    a.down = False
    assert wait_txns(a, acked, 15) == acked


def test_map_full_503_then_recovers(relay, remote):
    rs = remote()
    rs.down = True
    r = relay(queue={"map_size": "1MiB", "max_bytes": "1GiB"})
    acked, resp = fill_until_503(r, rs, "map", 30000, 100)
    print("%d acked before the 503" % len(acked))
    check_503(resp)
    assert 5 <= len(acked) < 34, acked  # at most 1 MiB of 30 KB records
    assert "the store is full" in r.stderr()
    rs.down = False
    assert wait_txns(rs, acked, 20) == acked
    assert wait_for(lambda: put_once(r.port, rs, "after").status == 200, 5, step=0.5), \
        "still refused once the queue drained"
    assert wait_txns(rs, acked + ["after"], 10) == acked + ["after"]
    # and as much again fits
    more, resp = fill_until_503(r, rs, "more", 30000, len(acked) // 2)
    assert resp is None and len(more) == len(acked) // 2, (more, resp)
    assert wait_txns(rs, acked + ["after"] + more, 20) == acked + ["after"] + more
