"""Scenario: `chappe queue` (issue 6, "the same views offline"), the operator's view of the durable
queue read from the store while the relay runs (or after it stopped): list, show DEST, retry DEST,
dead, dead show|requeue|delete ID.

Transactions get into the queue the way they do in production: a fronted homeserver (hs.localhost)
PUTs them through the egress listener, chappe stores them and acknowledges, its sender delivers.
The destinations are a port nobody listens on (connection refused: retried), a RemoteServer
answering 500 (retried) or 403 (dead). queue.retry.min is an hour, so that a destination that
failed once is not tried again by itself during a test: what moves it is the CLI."""
# SPDX-License-Identifier: ISC

import json
import os
import re
import time

import pytest

import harness
from fedremote import RemoteServer
from harness import SANITIZER_MARKERS, free_port, make_config, run_cli, to_yaml
from httpc import Conn, txn_body, xmatrix

SECRET = "hs-egress-secret-abcdef012345"
HOUR_MS = 3600_000
SEND = "/_matrix/federation/v1/send/"


# --- helpers ------------------------------------------------------------------------------------
def no_sanitizer(text):
    for m in SANITIZER_MARKERS:
        assert m not in text, "sanitizer report:\n%s" % text[-3000:]


def queue(cfg, *args, json_out=False):
    """Run `chappe queue ARGS -c CFG` (bounded); returns the CompletedProcess."""
    argv = ["queue"] + list(args) + ["-c", str(cfg)] + (["--json"] if json_out else [])
    r = run_cli(harness.debug_bin(), argv, timeout=30)
    no_sanitizer(r.stderr)
    return r


def queue_json(cfg, *args):
    r = queue(cfg, *args, json_out=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.endswith("\n") and r.stdout.count("\n") == 1, r.stdout
    return json.loads(r.stdout)


def wait_for(what, fn, timeout=10.0):
    """fn() until it returns something true (bounded); that value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(0.1)


def dests(cfg):
    return {d["destination"]: d for d in queue_json(cfg, "list")["destinations"]}


def now_ms():
    return int(time.time() * 1000)


class Txn:
    """One transaction as the homeserver sends it through the egress."""

    def __init__(self, dest, txn_id, size=200):
        self.dest = dest
        self.txn_id = txn_id
        self.path = SEND + txn_id
        self.body = txn_body(size, seed=len(txn_id))
        self.auth = xmatrix("PUT", self.path, self.body, origin="hs.localhost",
                            destination=dest)

    def record_size(self):
        """What the queue counts for it: 45 bytes and its fields (queue.c)."""
        fields = ["hs.localhost", self.dest, self.txn_id, "PUT", self.path, self.auth[1],
                  "application/json"]
        return 45 + sum(len(f.encode()) for f in fields) + len(self.body)

    def send(self, port):
        with Conn.plain(port) as c:
            r = c.request("PUT", "matrix-federation://%s%s" % (self.dest, self.path),
                          headers=[("Proxy-Authorization", "Bearer " + SECRET), self.auth,
                                   ("Content-Type", "application/json")], body=self.body)
        assert r.status == 200 and r.json() == {"pdus": {}}, r
        return self


@pytest.fixture
def relay(certs, tmp_path, start_chappe, make_upstream):
    """relay(**queue_keys) -> (chappe, egress port, config path): hs.localhost fronted with an
    egress secret, the store in tmp_path/store, retries an hour apart. The CLI reads the daemon's
    own configuration file."""
    def go(**queue_keys):
        p = tmp_path / "hs.egress-secret"
        p.write_text(SECRET + "\n")
        os.chmod(p, 0o600)
        cfg = make_config(certs, free_port(), None, [("hs.localhost", make_upstream().url)],
                          extra={"federation_custom_ca_list": [str(certs.ca)],
                                 "queue": dict({"path": str(tmp_path / "store"),
                                                "retry": {"min": "1h", "max": "4h"}},
                                               **queue_keys)})
        cfg["homeservers"][0]["egress_secret_path"] = str(p)
        port = free_port()
        cfg["listeners"].append({"type": "egress", "bind": ["127.0.0.1:%d" % port],
                                 "tls": False})
        ch = start_chappe(cfg)
        return ch, port, ch.cfg_path
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


def cli_config(certs, tmp_path, queue_keys=None):
    """A configuration for the CLI alone (no relay running), its store in tmp_path/store."""
    cfg = make_config(certs, free_port(), None, [("hs.localhost", "http://127.0.0.1:9")],
                      extra={"queue": dict({"path": str(tmp_path / "store")},
                                           **(queue_keys or {}))})
    p = tmp_path / "cli.yaml"
    p.write_text(to_yaml(cfg))
    return p


# --- without entries ----------------------------------------------------------------------------
def test_usage(certs, tmp_path):
    cfg = cli_config(certs, tmp_path)
    bad = [[], ["nope"], ["show"], ["retry"], ["show", "a", "b"], ["list", "x"], ["dead", "show"],
           ["dead", "show", "x"], ["dead", "show", "0"], ["dead", "show", "-1"],
           ["dead", "requeue", "1x"], ["dead", "delete", "99999999999999999999"],
           ["dead", "bury", "1"], ["list", "--bogus"], ["list", "-c"]]
    for args in bad:
        r = run_cli(harness.debug_bin(), ["queue"] + args + (["-c", str(cfg)] if args[-1:] != ["-c"]
                                                            else []))
        no_sanitizer(r.stderr)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stdout == "", (args, r.stdout)
        assert r.stderr.startswith("chappe queue: "), (args, r.stderr)
    r = run_cli(harness.debug_bin(), ["queue", "dead", "show", "x", "-c", str(cfg)])
    assert "bad id 'x'" in r.stderr, r.stderr
    # usage errors are found before the configuration is read, so no store was made
    assert not (tmp_path / "store").exists()
    for h in (["-h"], ["--help"], ["list", "--help"]):
        r = run_cli(harness.debug_bin(), ["queue"] + h)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("usage: chappe queue "), r.stdout
        for word in ("list", "show DEST", "retry DEST", "dead show ID", "dead requeue ID",
                     "dead delete ID", "--json"):
            assert word in r.stdout, (word, r.stdout)


def test_bad_config(certs, tmp_path):
    r = queue(tmp_path / "missing.yaml", "list")
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert "chappe queue: %s: configuration is not valid" % (tmp_path / "missing.yaml") in r.stderr
    p = cli_config(certs, tmp_path, {"max_bytes": "lots"})
    r = queue(p, "list")
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert all(ln.startswith("chappe queue: ") for ln in lines), r.stderr
    assert any("queue.max_bytes" in ln and "%s:" % p in ln for ln in lines), r.stderr
    # queue.path naming a file: the store cannot be opened
    f = tmp_path / "afile"
    f.write_text("x")
    p = cli_config(certs, tmp_path, {"path": str(f)})
    r = queue(p, "dead")
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.startswith("chappe queue: ") and str(f) in r.stderr, r.stderr


def test_empty_store(certs, tmp_path):
    cfg = cli_config(certs, tmp_path)
    r = queue(cfg, "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "the queue is empty, 0 destinations, 0 dead\n", r.stdout
    assert queue_json(cfg, "list") == {"destinations": [],
                                       "totals": {"count": 0, "bytes": 0, "dead": 0}}
    r = queue(cfg, "dead")
    assert (r.returncode, r.stdout) == (0, "no dead transaction\n"), r.stdout + r.stderr
    assert queue_json(cfg, "dead") == {"dead": []}
    for sub in ("show", "retry"):
        for name in ("nowhere.localhost", "x" * 300):
            r = queue(cfg, sub, name)
            assert r.returncode == 1 and r.stdout == "", (sub, r.stdout, r.stderr)
            assert r.stderr == "chappe queue: no queue for %s\n" % name, r.stderr
    for sub in ("show", "requeue", "delete"):
        r = queue(cfg, "dead", sub, "7")
        assert r.returncode == 1 and r.stdout == "", (sub, r.stdout, r.stderr)
        assert r.stderr == "chappe queue: no dead transaction 7\n", r.stderr


# --- with a relay queueing ----------------------------------------------------------------------
def test_list_show_retry(relay, remote):
    """Two transactions to a port that refuses, one to a server answering 500: each destination
    failed once and waits an hour. list and show say so, exactly; `retry` makes the relay try at
    once, which delivers to the server once it answers 200."""
    ch, port, cfg = relay()
    down = "localhost:%d" % free_port()
    rs = remote()
    rs.put_answer = (500, {"errcode": "M_UNKNOWN", "error": "busy"})
    t0 = now_ms()
    a1 = Txn(down, "a1", 300).send(port)
    a2 = Txn(down, "a2", 500).send(port)
    b1 = Txn(rs.name, "b1", 400).send(port)
    t1 = now_ms()
    got = wait_for("both destinations to fail once", lambda: (
        lambda d: d if down in d and rs.name in d and d[down]["failures"] == 1
        and d[rs.name]["failures"] == 1 else None)(dests(cfg)))
    full = queue_json(cfg, "list")
    assert full["totals"] == {"count": 3, "dead": 0,
                              "bytes": a1.record_size() + a2.record_size() + b1.record_size()}
    d = got[down]
    assert d["depth"] == 2 and d["bytes"] == a1.record_size() + a2.record_size(), d
    assert (d["oldest_seq"], d["next_seq"]) == (1, 3), d
    assert d["last_status"] == 0 and d["last_error"] != "", d
    assert t0 - 1000 <= d["last_attempt_ts"] <= now_ms(), d
    # the first backoff is retry.min with jitter x0.8-1.4
    assert 0.8 * HOUR_MS - 60_000 <= d["next_attempt_in_ms"] <= 1.4 * HOUR_MS, d
    assert d["backoff_ms"] == HOUR_MS, d
    assert d["next_attempt_ts"] > now_ms() + 0.7 * HOUR_MS, d
    assert 0 <= d["oldest_age_ms"] <= now_ms() - t0 + 1000, d
    b = got[rs.name]
    assert (b["depth"], b["bytes"], b["last_status"]) == (1, b1.record_size(), 500), b
    assert b["last_error"] == "HTTP 500 M_UNKNOWN: busy", b

    # the table: a header, one row per destination, the totals
    r = queue(cfg, "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["DESTINATION", "DEPTH", "BYTES", "OLDEST", "NEXT", "FAILURES",
                                "LAST"], lines
    row = [ln for ln in lines if ln.startswith(down + " ")]
    assert len(row) == 1, lines
    assert re.match(r"%s +2 +%d +\d+s +in (\d+m\d\ds|1h\d\dm) +1  \S" % (
        re.escape(down), d["bytes"]), row[0]), row[0]
    row = [ln for ln in lines if ln.startswith(rs.name + " ")]
    assert len(row) == 1 and row[0].endswith(" 1  HTTP 500 M_UNKNOWN: busy"), lines
    assert lines[-1] == "total: 3 queued, %d bytes, 2 destinations, 0 dead" % (
        full["totals"]["bytes"]), lines

    # show: the state, then the entries in order
    s = queue_json(cfg, "show", down)
    entries = s.pop("entries")
    assert {k: s[k] for k in ("destination", "depth", "bytes", "failures")} == {
        "destination": down, "depth": 2, "bytes": d["bytes"], "failures": 1}, s
    assert [(e["seq"], e["txn_id"], e["origin"], e["method"], e["path"], e["body_bytes"],
             e["attempts"]) for e in entries] == [
        (1, "a1", "hs.localhost", "PUT", a1.path, 300, 1),
        (2, "a2", "hs.localhost", "PUT", a2.path, 500, 0)], entries
    for e in entries:
        assert t0 - 1000 <= e["first_seen_ts"] <= t1 + 1000, e
    r = queue(cfg, "show", down)
    assert r.returncode == 0, r.stderr
    assert "destination: %s\ndepth: 2\nbytes: %d\n" % (down, d["bytes"]) in r.stdout, r.stdout
    assert re.search(r"^next attempt: in (\d+m\d\ds|1h\d\dm) \(\d{4}-\d\d-\d\dT", r.stdout,
                     re.M), r.stdout
    assert "\nbackoff: 1h00m\nfailures: 1\n" in r.stdout, r.stdout
    assert re.search(r"^  1 txn=a1 origin=hs\.localhost first_seen=\S+Z attempts=1 body=300 "
                     r"PUT %s$" % re.escape(a1.path), r.stdout, re.M), r.stdout
    assert re.search(r"^  2 txn=a2 .* attempts=0 body=500 PUT %s$" % re.escape(a2.path),
                     r.stdout, re.M), r.stdout

    # nothing moves by itself within the hour
    time.sleep(1.5)
    assert [p for _, p, _, _ in rs.received] == [b1.path]

    # retry: the server answers now; the relay sends at its next walk
    rs.put_answer = (200, {"pdus": {}})
    r = queue(cfg, "retry", rs.name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("%s: backoff reset (it had 1 failure, next attempt in " % rs.name)
    assert "1 transaction queued" in r.stdout, r.stdout
    wait_for("the retried delivery", lambda: len(rs.received) == 2, timeout=10)
    assert rs.received[1][1] == b1.path and rs.received[1][3] == b1.body
    b = wait_for("its queue to empty", lambda: (
        lambda x: x if x["depth"] == 0 else None)(dests(cfg)[rs.name]))
    assert (b["failures"], b["next_attempt_in_ms"], b["backoff_ms"]) == (0, 0, 0), b
    assert queue_json(cfg, "list")["totals"]["count"] == 2

    # retry the refusing one: tried again at once (and it fails again)
    before = d["last_attempt_ts"]
    r = queue(cfg, "retry", down, json_out=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"destination": down, "reset": True, "depth": 2,
                                    "failures_before": 1}
    again = wait_for("another attempt", lambda: (
        lambda x: x if x["last_attempt_ts"] > before and x["failures"] == 1 else None)(
            dests(cfg)[down]))
    assert again["depth"] == 2 and again["next_attempt_in_ms"] > 0.7 * HOUR_MS, again
    assert len(rs.received) == 2

    # the same views with the relay stopped
    assert ch.stop() == []
    s = queue_json(cfg, "show", down)
    assert [e["txn_id"] for e in s["entries"]] == ["a1", "a2"], s
    assert [e["attempts"] for e in s["entries"]] == [2, 0], s
    assert queue_json(cfg, "list")["totals"]["count"] == 2


def test_dead_show_requeue_delete(relay, remote):
    """A server refusing with 403: both transactions go to dead. The listing, one entry with the
    response, requeue (delivered, once the server accepts) and delete."""
    ch, port, cfg = relay()
    rs = remote()
    refusal = {"errcode": "M_FORBIDDEN", "error": "not in the room"}
    rs.put_answer = (403, refusal)
    t0 = now_ms()
    x1 = Txn(rs.name, "x1", 250).send(port)
    x2 = Txn(rs.name, "x2", 350).send(port)
    dead = wait_for("two dead transactions", lambda: (
        lambda v: v if len(v) == 2 else None)(queue_json(cfg, "dead")["dead"]))
    t1 = now_ms()
    assert [(e["id"], e["destination"], e["origin"], e["txn_id"], e["status"], e["attempts"],
             e["body_bytes"]) for e in dead] == [
        (1, rs.name, "hs.localhost", "x1", 403, 0, 250),
        (2, rs.name, "hs.localhost", "x2", 403, 0, 350)], dead
    for e in dead:
        assert "M_FORBIDDEN" in e["reason"] and "not in the room" in e["reason"], e
        assert t0 - 1000 <= e["died_ts"] <= t1, e
    assert queue_json(cfg, "list")["totals"] == {"count": 0, "bytes": 0, "dead": 2}

    r = queue(cfg, "dead")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"1 died=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ destination=%s txn=x1 "
                        r"origin=hs\.localhost status=403 attempts=0 reason=%s" % (
                            re.escape(rs.name), re.escape(dead[0]["reason"])), lines[0]), lines
    assert lines[1].startswith("2 died="), lines

    # one entry, with the refusing response as it came
    sent = json.dumps(refusal)  # what fedremote answered, byte for byte
    one = queue_json(cfg, "dead", "show", "2")
    assert one["response"] == sent and one["response_bytes"] == len(sent), one
    assert (one["method"], one["path"], one["content_type"]) == ("PUT", x2.path,
                                                                 "application/json"), one
    assert t0 - 1000 <= one["first_seen_ts"] <= t1, one
    r = queue(cfg, "dead", "show", "2")
    assert r.returncode == 0, r.stderr
    for line in ("id: 2", "destination: %s" % rs.name, "txn: x2", "request: PUT %s" % x2.path,
                 "body: 350 bytes", "status: 403", "reason: %s" % dead[1]["reason"],
                 "response: %d bytes:" % len(sent), sent):
        assert line in r.stdout.splitlines(), (line, r.stdout)

    # requeue: back at the tail of its destination's queue, delivered at once
    rs.put_answer = (200, {"pdus": {}})
    r = queue(cfg, "dead", "requeue", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "dead transaction 1 requeued: %s entry 3\n" % rs.name, r.stdout
    wait_for("the requeued delivery", lambda: len(rs.received) == 3, timeout=10)
    assert rs.received[2][1] == x1.path and rs.received[2][3] == x1.body
    assert rs.received[2][2]["Authorization"] == x1.auth[1]
    wait_for("its queue to empty", lambda: dests(cfg)[rs.name]["depth"] == 0)
    assert [e["id"] for e in queue_json(cfg, "dead")["dead"]] == [2]
    r = queue(cfg, "dead", "requeue", "1")
    assert (r.returncode, r.stderr) == (1, "chappe queue: no dead transaction 1\n"), r.stderr

    # delete
    r = queue(cfg, "dead", "delete", "2", json_out=True)
    assert r.returncode == 0 and json.loads(r.stdout) == {"id": 2, "deleted": True}, r.stderr
    r = queue(cfg, "dead")
    assert (r.returncode, r.stdout) == (0, "no dead transaction\n"), r.stdout + r.stderr
    r = queue(cfg, "dead", "delete", "2")
    assert (r.returncode, r.stderr) == (1, "chappe queue: no dead transaction 2\n"), r.stderr
    assert queue_json(cfg, "list")["totals"] == {"count": 0, "bytes": 0, "dead": 0}
    assert len(rs.received) == 3


def test_requeue_into_a_full_queue(relay, remote):
    """queue.max_bytes 64KiB: with 40 KB waiting for a refusing port, a 40 KB dead transaction
    does not fit back: exit 1, "queue full", and it stays dead."""
    ch, port, cfg = relay(max_bytes="64KiB")
    rs = remote()
    rs.put_answer = (403, {"errcode": "M_FORBIDDEN", "error": "no"})
    big = Txn(rs.name, "big", 40_000).send(port)
    wait_for("the dead transaction", lambda: queue_json(cfg, "dead")["dead"])
    down = "localhost:%d" % free_port()
    Txn(down, "w1", 40_000).send(port)
    wait_for("the refused delivery", lambda: dests(cfg).get(down, {}).get("failures") == 1)
    rs.put_answer = (200, {"pdus": {}})
    r = queue(cfg, "dead", "requeue", "1")
    assert r.returncode == 1 and r.stdout == "", r.stdout + r.stderr
    assert r.stderr.startswith("chappe queue: queue full (queue.max_bytes 65536, "
                               "max_bytes_per_destination 65536)"), r.stderr
    dead = queue_json(cfg, "dead")["dead"]
    assert [(e["id"], e["txn_id"], e["body_bytes"]) for e in dead] == [(1, "big", 40_000)]
    assert queue_json(cfg, "list")["totals"]["count"] == 1
    assert len(rs.received) == 1 and rs.received[0][3] == big.body
