"""Runs the real chappe binary for scenario tests: config files, start/ready/stop, logs."""
# SPDX-License-Identifier: ISC

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from httpc import REMOTE_KEY_ID, REMOTE_PUBLIC

REPO = Path(__file__).resolve().parents[2]
SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")
READY_RE = re.compile(r"\bready\b")
STOP_TIMEOUT = 15.0

DEFAULT_LIMITS = {
    "max_header_bytes": "16KiB",
    "max_body_bytes": "1MiB",
    "header_timeout": "2s",
    "body_timeout": "5s",
    "idle_timeout": "5s",
    "tls_handshake_timeout": "3s",
    "upstream_connect_timeout": "2s",
    "upstream_timeout": "3s",
    "upstream_idle_timeout": "30s",
    "upstream_keepalive": 32,
    "drain_timeout": "10s",
}

_all_procs = []  # every Popen started in this session, killed at session end if still alive


def debug_bin():
    return Path(os.environ.get("CHAPPE_BIN") or REPO / "build/debug/chappe")


def release_bin():
    return Path(os.environ.get("CHAPPE_RELEASE_BIN") or REPO / "build/chappe")


_handed_out = set()


def free_port():
    """A port free on 127.0.0.1 now, and never handed out before in this session: the kernel
    may give a just-closed ephemeral port again, and two listeners of one config must not
    get the same one (a CI run failed on exactly that)."""
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def chappe_env():
    env = os.environ.copy()
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:allocator_may_return_null=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


# --- YAML ----------------------------------------------------------------------------
_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./:+@-]*")
_SPECIAL = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def _scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if (_PLAIN.fullmatch(s) and s.lower() not in _SPECIAL and not s.endswith(":")
            and not re.fullmatch(r"[0-9.:eE+-]+", s)):
        return s
    return json.dumps(s)


def _emit(obj, ind, out):
    pad = " " * ind
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:" % (pad, k))
                _emit(v, ind + 2, out)
            elif isinstance(v, list):
                out.append("%s%s: []" % (pad, k))
            elif isinstance(v, dict):
                out.append("%s%s: {}" % (pad, k))
            else:
                out.append("%s%s: %s" % (pad, k, _scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)):
                sub = []
                _emit(item, ind + 2, sub)
                sub[0] = pad + "- " + sub[0][ind + 2:]
                out.extend(sub)
            else:
                out.append("%s- %s" % (pad, _scalar(item)))
    else:
        raise TypeError(obj)


def to_yaml(obj):
    out = []
    _emit(obj, 0, out)
    return "\n".join(out) + "\n"


# The test origin's key, pinned: requests signed with httpc.xmatrix verify without a key fetch.
REMOTE_PINNED_KEYS = {"remote.localhost": {REMOTE_KEY_ID: REMOTE_PUBLIC}}


def make_config(certs, tls_port, plain_port, homeservers, workers=2, limits=None,
                cert_pairs=None, extra=None, pin_remote=False):
    """homeservers: [(server_name, upstream_url)]. cert_pairs: [(cert, key)] (default: the
    session's server and alt certificates). pin_remote: add REMOTE_PINNED_KEYS as pinned_keys
    (start_proxy does; not the default because `chappe keys list` prints every pin and the key
    CLI tests expect an empty list). extra: top-level keys replacing the defaults."""
    if cert_pairs is None:
        cert_pairs = [(certs.server_crt, certs.server_key), (certs.alt_crt, certs.alt_key)]
    listeners = []
    if tls_port:
        listeners.append({"type": "federation", "bind": ["127.0.0.1:%d" % tls_port], "tls": True})
    if plain_port:
        listeners.append({"type": "federation", "bind": ["127.0.0.1:%d" % plain_port],
                          "tls": False})
    cfg = {
        "server_name": "relay.localhost",
        "workers": workers,
        "access_log": "-",
        "log_level": "info",
        "listeners": listeners,
        "tls": {"certificates": [{"cert": str(c), "key": str(k)} for c, k in cert_pairs]},
        "homeservers": [{"server_name": n, "upstream": u} for n, u in homeservers],
        "limits": dict(DEFAULT_LIMITS, **(limits or {})),
        # the policy keys are required; loopback is what these tests talk to
        "federation_domain_whitelist": ["localhost", "*.localhost"],
        "sovereign_ranges": ["127.0.0.0/8", "::1/128"],
        "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
        # names resolve from /etc/hosts only: a DNS query for anything else goes to a closed
        # loopback port and fails at once, never to the machine's resolver
        "dns_servers": ["127.0.0.1:1"],
    }
    if pin_remote:
        cfg["pinned_keys"] = REMOTE_PINNED_KEYS
    cfg.update(extra or {})
    return cfg


# --- the process -----------------------------------------------------------------------
class Chappe:
    def __init__(self, binary, rundir, config, name="chappe"):
        self.binary = Path(binary)
        self.rundir = Path(rundir)
        self.name = name
        self.config = config
        self.cfg_path = self.rundir / (name + ".yaml")
        self.stdout_path = self.rundir / (name + ".stdout")
        self.stderr_path = self.rundir / (name + ".stderr")
        self.proc = None
        self.killed = False
        self.problems = None
        # every daemon keeps its LMDB store in its own run directory
        store = str(self.rundir / (name + ".store"))
        if isinstance(config, str):
            if "\nqueue:" not in "\n" + config:
                config = config + ("" if config.endswith("\n") else "\n") + \
                    "queue: {path: %s}\n" % json.dumps(store)
        elif "queue" not in config:
            config = dict(config, queue={"path": store})
        self.config = config
        self.cfg_path.write_text(config if isinstance(config, str) else to_yaml(config))

    @property
    def pid(self):
        return self.proc.pid

    def start(self, ready_timeout=20.0):
        if not self.binary.exists():
            raise AssertionError("chappe binary %s does not exist (build it: make %s)" % (
                self.binary, self.binary.relative_to(REPO) if REPO in self.binary.parents
                else self.binary))
        out = open(self.stdout_path, "wb")
        err = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [str(self.binary), "run", "-c", str(self.cfg_path)], stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, cwd=str(self.rundir), env=chappe_env())
        finally:
            out.close()
            err.close()
        _all_procs.append(self.proc)
        deadline = time.monotonic() + ready_timeout
        while True:
            text = self.stderr()
            if any(READY_RE.search(ln) for ln in text.splitlines()):
                return self
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("chappe exited with status %d before logging 'ready'; "
                                     "stderr:\n%s" % (rc, tail(self.stderr())))
            if time.monotonic() > deadline:
                raise AssertionError("chappe did not log 'ready' within %.0fs; stderr:\n%s" % (
                    ready_timeout, tail(text)))
            time.sleep(0.02)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        """Wait for exit; returns the status or None on timeout."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM (if still running), bounded wait, then the checks every test makes.
        Returns a list of problems (empty when all is well). Idempotent."""
        if self.problems is not None:
            return self.problems
        problems = []
        if self.proc is None:
            self.problems = problems
            return problems
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            if self.wait(timeout) is None:
                self.proc.kill()
                self.killed = True
                self.wait(5)
                problems.append("%s (pid %d) did not exit within %.0fs of SIGTERM; killed" % (
                    self.name, self.proc.pid, timeout))
        rc = self.proc.returncode
        if not self.killed and rc != 0:
            problems.append("%s exited with status %s, expected 0%s" % (
                self.name, rc, " (signal %d)" % -rc if rc is not None and rc < 0 else ""))
        err = self.stderr()
        for m in SANITIZER_MARKERS:
            if m in err:
                problems.append("%s stderr contains %r (sanitizer report)" % (self.name, m))
        self.problems = problems
        return problems

    # --- output ----------------------------------------------------------------------
    def stderr(self):
        try:
            return self.stderr_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stdout(self):
        try:
            return self.stdout_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def access_log(self):
        """Parsed JSON lines of stdout; non-JSON lines raise with the offending line."""
        entries = []
        for ln in self.stdout().splitlines():
            if not ln.strip():
                continue
            try:
                entries.append(json.loads(ln))
            except ValueError:
                raise AssertionError("access log line is not JSON: %r" % ln)
        return entries

    def rss_kib(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for ln in f:
                    if ln.startswith("VmRSS:"):
                        return int(ln.split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return None
        return None


class RSSSampler:
    """Samples a process's VmRSS every interval seconds in a thread (bounded by stop())."""

    def __init__(self, chappe, interval=0.05):
        self.chappe = chappe
        self.interval = interval
        self.max_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            v = self.chappe.rss_kib()
            if v is not None:
                self.samples += 1
                self.max_kib = max(self.max_kib, v)

    def __enter__(self):
        v = self.chappe.rss_kib()
        if v is not None:
            self.max_kib = v
            self.samples = 1
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(2)


def tail(text, n=40):
    lines = text.splitlines()
    return "\n".join(lines[-n:]) if lines else "(empty)"


def run_cli(binary, args, timeout=20.0, cwd=None):
    """Run chappe with args to completion (bounded); returns CompletedProcess (text)."""
    return subprocess.run([str(binary)] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, cwd=cwd, env=chappe_env(),
                          text=True, errors="replace")


def kill_leftovers():
    for p in _all_procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
