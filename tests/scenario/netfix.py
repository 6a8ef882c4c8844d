"""Network fixtures for chappe's outbound-federation scenario tests (discovery, policy, TLS).

One session-wide test network on loopback, torn down by PID and by joining every thread:
  - certificates made with the openssl CLI: a test CA; a leaf for *.chappe.test, chappe.test,
    127.0.5.9 and ::1; a leaf for other.example only; a leaf for *.chappe.test from a rogue CA
    that chappe does not trust; an expired leaf for *.chappe.test from the test CA;
  - dnsmasq on 127.0.0.1 (a free port) serving the A/AAAA/SRV records of PLAN, logging every
    query to a file (Dnsmasq.queries_since reads them);
  - HTTPS servers on 127.0.5.x:port ("sovereign") and [::1]:port, each with one certificate,
    recording every connection (peer, SNI) and request, serving /.well-known/matrix/server
    variants and, for any other path, a JSON echo {"method","path","host","sni",
    "authorization","body",...}; plain TCP recorders on 127.0.6.x:port ("foreign") that only
    count connection attempts.
  - RebindDNS: a tiny UDP DNS server whose A answer for a name changes after the first query.

Address plan: 127.0.5.0/24 and ::1 are sovereign, 127.0.6.0/24 is foreign. Every test name is
under chappe.test (blocked.notchappe.test is the one not allowlisted). See PLAN below for who
serves what; the tests name the scenario hosts directly.

The servers are shared by the whole session: a test takes net.mark() first and looks only at
what arrived after it (net.seen_since / net.conns_since). Tests must run one at a time."""
# SPDX-License-Identifier: ISC

import atexit
import json
import os
import random
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import harness
from harness import SANITIZER_MARKERS, make_config, to_yaml
from upstream import Response, Upstream, json_response

DOMAIN = "chappe.test"
SOV = "127.0.5."
FOREIGN = "127.0.6."
WK_PATH = "/.well-known/matrix/server"
IP_LITERAL = "127.0.5.9"  # has an IP SAN in the leaf certificate
IP_LITERAL_PORT = 8450
IP_NO_SAN = "127.0.5.10"  # served with the leaf, which has no IP SAN for it
IP_NO_SAN_PORT = 8463
CLI_TIMEOUT = 30.0  # no chappe command may take longer than this
OUTBOUND_LIMITS = {"outbound_connect_timeout": "2s", "outbound_tls_timeout": "2s",
                   "outbound_timeout": "3s", "well_known_timeout": "2s"}
WELL_KNOWN_TIMEOUT_S = 2.0


def n(label):
    """'wkport' -> 'wkport.chappe.test'."""
    return "%s.%s" % (label, DOMAIN)


def require_root():
    if os.geteuid() != 0:
        pytest.fail("the outbound-federation scenario tests must run as root: they bind "
                    "127.0.5.x:443 and run dnsmasq (euid is %d)" % os.geteuid(), pytrace=False)


# =============================================================================================
# Certificates
# =============================================================================================
_CNF = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ leaf_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:*.chappe.test, DNS:chappe.test, IP:127.0.5.9, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ other_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:other.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ ca ]
default_ca = testca
[ testca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none
[ policy_any ]
commonName = supplied
"""


def _openssl(args, d):
    r = subprocess.run(["openssl"] + args, cwd=str(d), capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise AssertionError("openssl %s failed (%d):\n%s%s" % (" ".join(args), r.returncode,
                                                              r.stdout, r.stderr))
    return r


def _key(d, name):
    _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-pkeyopt", "ec_param_enc:named_curve", "-out", name + ".key"], d)
    return d / (name + ".key")


def _ca(d, name, cn):
    _key(d, name)
    _openssl(["req", "-new", "-x509", "-config", "openssl.cnf", "-extensions", "ca_ext",
              "-key", name + ".key", "-sha256", "-subj", "/CN=" + cn, "-days", "3650",
              "-set_serial", "0x%032x" % random.getrandbits(120), "-out", name + ".crt"], d)
    return d / (name + ".crt")


def _leaf(d, name, cn, ca, ext, days=30):
    _key(d, name)
    _openssl(["req", "-new", "-config", "openssl.cnf", "-key", name + ".key", "-subj",
              "/CN=" + cn, "-out", name + ".csr"], d)
    _openssl(["x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
              "-set_serial", "0x%032x" % random.getrandbits(120), "-sha256", "-days", str(days),
              "-extfile", "openssl.cnf", "-extensions", ext, "-out", name + ".crt"], d)
    return d / (name + ".crt")


def _expired_leaf(d, name, cn, ca):
    """A leaf valid from 2020-01-01 to 2020-02-01 (openssl 3.0's x509 cannot backdate: `ca`)."""
    _key(d, name)
    _openssl(["req", "-new", "-config", "openssl.cnf", "-key", name + ".key", "-subj",
              "/CN=" + cn, "-out", name + ".csr"], d)
    (d / "newcerts").mkdir(exist_ok=True)
    (d / "index.txt").write_text("")
    (d / "serial").write_text("%032X\n" % random.getrandbits(120))
    _openssl(["ca", "-batch", "-config", "openssl.cnf", "-name", "testca", "-cert", ca + ".crt",
              "-keyfile", ca + ".key", "-in", name + ".csr", "-out", name + ".crt", "-notext",
              "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
              "-extfile", "openssl.cnf", "-extensions", "leaf_ext"], d)
    return d / (name + ".crt")


def make_certs(d):
    """Every certificate the tests use, in directory d. Returns a namespace of paths:
    ca, leaf/leaf_key (*.chappe.test, chappe.test, IP 127.0.5.9 and ::1), other/other_key
    (other.example only), rogue_ca, rogue/rogue_key (*.chappe.test from the rogue CA),
    expired/expired_key (*.chappe.test, expired 2020-02-01, test CA)."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    (d / "openssl.cnf").write_text(_CNF.replace("{dir}", str(d)))
    ns = SimpleNamespace(dir=d)
    ns.ca = _ca(d, "ca", "chappe federation test CA")
    ns.leaf = _leaf(d, "leaf", "chappe.test", "ca", "leaf_ext")
    ns.other = _leaf(d, "other", "other.example", "ca", "other_ext")
    ns.rogue_ca = _ca(d, "rogue-ca", "chappe rogue CA")
    ns.rogue = _leaf(d, "rogue", "chappe.test", "rogue-ca", "leaf_ext")
    ns.expired = _expired_leaf(d, "expired", "chappe.test", "ca")
    for k in ("leaf", "other", "rogue", "expired"):
        setattr(ns, k + "_key", d / (k + ".key"))
    return ns


# =============================================================================================
# DNS wire format (stdlib only): enough for A, AAAA and SRV
# =============================================================================================
QTYPE = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33,
         "ANY": 255}
QTYPE_NAME = {v: k for k, v in QTYPE.items()}
RCODE_NAME = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
              5: "REFUSED"}


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        b = label.encode("ascii")
        if not 0 < len(b) < 64:
            raise ValueError("bad DNS label in %r" % name)
        out += bytes([len(b)]) + b
    return out + b"\0"


def decode_name(msg, off):
    """(name, offset after the name in place); follows compression pointers (bounded)."""
    labels = []
    end = None
    for _ in range(128):
        ln = msg[off]
        if ln & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((ln & 0x3F) << 8) | msg[off + 1]
            continue
        if ln == 0:
            return ".".join(labels), (end if end is not None else off + 1)
        labels.append(msg[off + 1:off + 1 + ln].decode("ascii", "replace"))
        off += 1 + ln
    raise ValueError("DNS name compression loop")


def build_query(name, qtype, qid=None):
    qid = random.getrandbits(16) if qid is None else qid
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack(
        ">HH", QTYPE[qtype] if isinstance(qtype, str) else qtype, 1)


def parse_message(msg):
    """A DNS message -> namespace(id, flags, rcode, questions=[(name, type)], answers=[...]);
    each answer a namespace(name, type, ttl, value): A/AAAA text, SRV (prio, weight, port,
    target), otherwise the raw rdata."""
    qid, flags, qd, an, ns_, ar = struct.unpack(">HHHHHH", msg[:12])
    off = 12
    questions = []
    for _ in range(qd):
        name, off = decode_name(msg, off)
        qt, _qc = struct.unpack(">HH", msg[off:off + 4])
        off += 4
        questions.append((name, QTYPE_NAME.get(qt, qt)))
    answers = []
    for _ in range(an):
        name, off = decode_name(msg, off)
        rt, _rc, ttl, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        if rt == 1:
            value = socket.inet_ntop(socket.AF_INET, rdata)
        elif rt == 28:
            value = socket.inet_ntop(socket.AF_INET6, rdata)
        elif rt == 33:
            prio, weight, port = struct.unpack(">HHH", rdata[:6])
            value = (prio, weight, port, decode_name(msg, off + 6)[0])
        else:
            value = rdata
        off += rdlen
        answers.append(SimpleNamespace(name=name, type=QTYPE_NAME.get(rt, rt), ttl=ttl,
                                       value=value))
    return SimpleNamespace(id=qid, flags=flags, rcode=RCODE_NAME.get(flags & 0xF, flags & 0xF),
                           questions=questions, answers=answers)


def dns_query(port, name, qtype, host="127.0.0.1", timeout=2.0):
    """One UDP query; the parsed answer, or AssertionError when nothing came back in time."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        q = build_query(name, qtype)
        s.sendto(q, (host, port))
        deadline = time.monotonic() + timeout
        while True:
            try:
                data, _ = s.recvfrom(4096)
            except socket.timeout:
                raise AssertionError("no DNS answer from %s:%d for %s %s within %.1fs" % (
                    host, port, qtype, name, timeout))
            if data[:2] == q[:2]:
                return parse_message(data)
            if time.monotonic() > deadline:
                raise AssertionError("no matching DNS answer for %s %s" % (qtype, name))
    finally:
        s.close()


def _rr(qtype, ttl, rdata):
    return b"\xc0\x0c" + struct.pack(">HHIH", qtype, 1, ttl, len(rdata)) + rdata


# =============================================================================================
# dnsmasq
# =============================================================================================
_QUERY_RE = re.compile(r"query\[(\w+)\] (\S+) from ")


class Dnsmasq:
    """dnsmasq on 127.0.0.1:port answering hosts {name: [addr...]} and srvs [(service name,
    target, port, priority, weight)] authoritatively; NXDOMAIN for anything else under the
    local domains; every query logged to log_path."""

    def __init__(self, workdir, hosts, srvs, local_domains=("test", "example")):
        self.workdir = Path(workdir)
        self.hosts = hosts
        self.srvs = srvs
        self.local_domains = local_domains
        self.log_path = self.workdir / "dnsmasq.log"
        self.port = None
        self.proc = None
        self._sync = 0

    def argv(self):
        a = ["/usr/sbin/dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
             "--bind-interfaces", "--listen-address=127.0.0.1", "--port=%d" % self.port,
             "--conf-file=/dev/null", "--pid-file=", "--user=root", "--group=root",
             "--log-queries", "--log-facility=%s" % self.log_path, "--local-ttl=1"]
        a += ["--local=/%s/" % d for d in self.local_domains]
        for name, addrs in self.hosts.items():
            for ip in addrs:
                a.append("--host-record=%s,%s" % (name, ip))
        for svc, target, port, prio, weight in self.srvs:
            a.append("--srv-host=%s,%s,%d,%d,%d" % (svc, target, port, prio, weight))
        return a

    def start(self, timeout=10.0):
        for _attempt in range(3):  # a free TCP port may be taken for UDP: try another
            self.port = harness.free_port()
            err = open(self.workdir / "dnsmasq.stderr", "wb")
            try:
                self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                             stdout=err, stderr=err)
            finally:
                err.close()
            harness._all_procs.append(self.proc)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    dns_query(self.port, "ready-probe." + DOMAIN, "A", timeout=0.3)
                    return self
                except (AssertionError, OSError):
                    time.sleep(0.05)
            self.stop()
        raise AssertionError("dnsmasq did not start; stderr:\n%s\nlog:\n%s" % (
            (self.workdir / "dnsmasq.stderr").read_text(errors="replace"), self.log_text()))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self):
        """A position in the query log; queries_since(mark) gives what was asked after it."""
        self.sync()
        return len(self.log_text())

    def sync(self, timeout=3.0):
        """Ask a unique name and wait until dnsmasq logged it: every earlier query is in the
        log file then."""
        self._sync += 1
        name = "sync-%d-%d.%s" % (os.getpid(), self._sync, DOMAIN)
        dns_query(self.port, name, "A")
        deadline = time.monotonic() + timeout
        while name not in self.log_text():
            if time.monotonic() > deadline:
                raise AssertionError("dnsmasq did not log the query for %s" % name)
            time.sleep(0.02)

    def queries_since(self, mark):
        """[(qtype, name)] asked after mark, lowercased, the sync probes left out."""
        self.sync()
        out = []
        for m in _QUERY_RE.finditer(self.log_text()[mark:]):
            name = m.group(2).lower()
            if not name.startswith("sync-"):
                out.append((m.group(1), name))
        return out


# =============================================================================================
# The rebinding DNS server
# =============================================================================================
class RebindDNS:
    """UDP DNS on 127.0.0.1: the first A query for a name of plan {name: (first, later)} is
    answered `first`, every later one `later`, TTL 0; AAAA (and any other type) of those names
    -> NODATA; anything else -> NXDOMAIN. Every query is recorded in .queries [(qtype, name)],
    every A answer in .answers [(name, addr)]."""

    def __init__(self, plan):
        self.plan = {k.lower(): v for k, v in plan.items()}
        self.queries = []
        self.answers = []
        self.count = {}
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._t = threading.Thread(target=self._loop, name="rebind-dns", daemon=True)

    def start(self):
        self._t.start()
        return self

    def reset(self):
        self.count.clear()

    def stop(self):
        self._stop.set()
        self._t.join(5)
        self._sock.close()

    def _loop(self):
        while not self._stop.is_set():
            r, _, _ = select.select([self._sock], [], [], 0.1)
            if not r:
                continue
            try:
                data, peer = self._sock.recvfrom(4096)
                reply = self._answer(data)
            except (OSError, ValueError, IndexError, struct.error):
                continue
            if reply is not None:
                try:
                    self._sock.sendto(reply, peer)
                except OSError:
                    pass

    def _answer(self, data):
        qid, flags = struct.unpack(">HH", data[:4])
        name, off = decode_name(data, 12)
        qtype, _ = struct.unpack(">HH", data[off:off + 4])
        question = data[12:off + 4]
        name = name.lower()
        self.queries.append((QTYPE_NAME.get(qtype, str(qtype)), name))
        answers = []
        rcode = 0
        if name not in self.plan:
            rcode = 3
        elif qtype == 1:
            k = self.count.get(name, 0)
            self.count[name] = k + 1
            ip = self.plan[name][0] if k == 0 else self.plan[name][1]
            self.answers.append((name, ip))
            answers.append(_rr(1, 0, socket.inet_aton(ip)))
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
        return (struct.pack(">HHHHHH", qid, rflags, 1, len(answers), 0, 0) + question
                + b"".join(answers))


# =============================================================================================
# HTTPS servers and TCP recorders
# =============================================================================================
class FedServer(Upstream):
    """One listener on (host, port). mode:
      "tls"       HTTPS with cert/key; /.well-known/matrix/server answered per wk (see
                  _wellknown), any other path the JSON echo (a "/status/NNN" anywhere in the
                  path sets the status);
      "tcp_hang"  accepts and never says anything (no TLS handshake);
      "record"    accepts, records, closes at once (a "foreign" address: nobody may connect).
    .conns: one namespace per accepted connection (id, peer, sni, sni_seen, tls_error);
    .seen: one dict per request (what the echo answers, plus "conn")."""

    def __init__(self, host, port, mode="tls", cert=None, key=None, wk=None, label=""):
        super().__init__(host=host, port=port, handler=self._handle)
        self.mode = mode
        self.wk = wk
        self.label = label
        self.conns = []
        self.seen = []
        self.ctx = None
        if mode == "tls":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(cert), str(key))
            ctx.sni_callback = self._sni
            self.ctx = ctx

    def __repr__(self):
        return "<FedServer %s %s:%d %s>" % (self.mode, self.host, self.port, self.label)

    def addr(self):
        return "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % (
            self.host, self.port)

    @staticmethod
    def _sni(sslsock, name, _ctx):
        info = getattr(sslsock, "_fednet_info", None)
        if info is not None:
            info.sni = name
            info.sni_seen = True
        return None

    def conn_info(self, cid):
        for c in self.conns:
            if c.id == cid:
                return c
        return None

    def _serve(self, sock, cid):
        info = SimpleNamespace(id=cid, peer=None, sni=None, sni_seen=False, tls_error=None,
                               time=time.monotonic())
        try:
            info.peer = sock.getpeername()[:2]
        except OSError:
            pass
        self.conns.append(info)
        if self.mode == "record":
            self._drop(sock)
            return
        if self.mode == "tcp_hang":
            while not self._stopping.wait(0.1):
                try:  # until the peer goes away
                    r, _, _ = select.select([sock], [], [], 0)
                    if r and not sock.recv(4096, socket.MSG_PEEK):
                        break
                    if r:
                        sock.recv(4096)
                except OSError:
                    break
            self._drop(sock)
            return
        tls = self._handshake(sock, info)
        if tls is not None:
            super()._serve(tls, cid)

    def _drop(self, sock):
        with self.lock:
            self._socks.discard(sock)
        try:
            sock.close()
        except OSError:
            pass

    def _handshake(self, sock, info, limit=10.0):
        sock.settimeout(0.2)
        with self.lock:
            self._socks.discard(sock)
            tls = self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            self._socks.add(tls)
        tls._fednet_info = info
        deadline = time.monotonic() + limit
        while True:
            try:
                tls.do_handshake()
                return tls
            except (socket.timeout, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                if self._stopping.is_set() or time.monotonic() > deadline:
                    info.tls_error = "handshake not finished"
                    break
            except (ssl.SSLError, OSError) as e:
                info.tls_error = str(e) or repr(e)
                break
        self._drop(tls)
        return None

    def _handle(self, req):
        info = self.conn_info(req.conn_id)
        rec = {"method": req.method, "path": req.target, "host": req.header("Host"),
               "sni": info.sni if info else None, "authorization": req.header("Authorization"),
               "body": bytes(req.body).decode("utf-8", "replace"),
               "content_type": req.header("Content-Type"), "server": self.addr(),
               "conn": req.conn_id}
        self.seen.append(rec)
        if req.path == WK_PATH and self.wk is not None:
            return self._wellknown()
        m = re.search(r"/status/(\d{3})(?:/|$)", req.path)
        return json_response(rec, status=int(m.group(1)) if m else 200)

    def _wellknown(self):
        """wk: ("json", obj) 200 with obj; ("status", code[, obj]); ("raw", bytes) 200 with
        exactly those bytes; ("chunks", [bytes]) 200, chunked; ("redirect", code, url);
        ("hang",) never answer (hold the connection until the client or stop() closes it)."""
        wk = self.wk
        kind = wk[0]
        if kind == "json":
            return json_response(wk[1])
        if kind == "status":
            return json_response(wk[2] if len(wk) > 2 else {"errcode": "M_NOT_FOUND"},
                                 status=wk[1])
        if kind == "raw":
            return Response(200, wk[1], headers=[("Content-Type", "application/json")])
        if kind == "chunks":
            return Response(200, chunks=list(wk[1]),
                            headers=[("Content-Type", "application/json")])
        if kind == "redirect":
            return Response(wk[1], b"", headers=[("Location", wk[2])])
        if kind == "hang":
            return Response(hang=True)
        raise AssertionError("unknown well-known kind %r" % (kind,))

    def summary(self):
        lines = ["%r accepted=%d" % (self, self.accepted)]
        for c in self.conns:
            lines.append("  conn %d from %s sni=%r tls_error=%r" % (c.id, c.peer, c.sni,
                                                                   c.tls_error))
        for s in self.seen:
            lines.append("  %s %s Host=%r sni=%r" % (s["method"], s["path"], s["host"],
                                                     s["sni"]))
        return "\n".join(lines)


# =============================================================================================
# The plan
# =============================================================================================
BIG_WK = json.dumps({"m.server": "deleg.chappe.test:8449",
                     "pad": "x" * (60 * 1024)}).encode()
DELEG_8449 = {"m.server": "deleg.chappe.test:8449"}


def _wk_redirect(code, to):
    return ("redirect", code, "https://%s%s" % (to, WK_PATH))


def build_plan(p6):
    """The whole test network, p6 being the port of the server on [::1].
    Returns (hosts {name: [addr...]}, srvs [(svc, target, port, prio, weight)],
    servers [(addr, port, mode, certname, wk, label)])."""
    hosts = {}
    srvs = []
    servers = []

    def host(label, *addrs):
        hosts[label if "." in label else n(label)] = list(addrs)

    def srv(svc, name, target, port, prio=10, weight=5):
        srvs.append(("%s._tcp.%s" % (svc, n(name)), n(target), port, prio, weight))

    def tls(addr, port, wk=None, cert="leaf", mode="tls", label=""):
        servers.append((addr, port, mode, cert, wk, label))

    def rec(addr, port, label=""):
        servers.append((addr, port, "record", None, None, label))

    # -- discovery paths
    tls(IP_LITERAL, IP_LITERAL_PORT, label="IP literal")
    tls(IP_NO_SAN, IP_NO_SAN_PORT, label="IP literal without IP SAN")
    host("port", SOV + "11")
    tls(SOV + "11", 443, ("json", DELEG_8449), label="explicit port: must not be asked")
    tls(SOV + "11", 8451)
    host("wkport", SOV + "12")
    tls(SOV + "12", 443, ("json", DELEG_8449))
    host("wksrv", SOV + "13")
    tls(SOV + "13", 443, ("json", {"m.server": n("deleg")}))
    host("wkip", SOV + "14")
    tls(SOV + "14", 443, ("json", {"m.server": "%s:%d" % (IP_LITERAL, IP_LITERAL_PORT)}))
    host("wknosrv", SOV + "15")
    tls(SOV + "15", 443, ("json", {"m.server": n("deleg-nosrv")}))
    host("wkolddeleg", SOV + "22")
    tls(SOV + "22", 443, ("json", {"m.server": n("olddeleg")}))
    for label, ip in (("srv", 16), ("oldsrv", 17), ("bothsrv", 18), ("plain", 19), ("v6", 21),
                      ("prio", 23)):
        host(label, SOV + str(ip))
        tls(SOV + str(ip), 443, ("status", 404))
    tls(SOV + "19", 8448)
    host("bare", SOV + "20")  # nothing on 443 at all
    tls(SOV + "20", 8448)
    srv("_matrix-fed", "srv", "srv-target", 8454)
    host("srv-target", SOV + "45")
    tls(SOV + "45", 8454)
    srv("_matrix", "oldsrv", "oldsrv-target", 8455)
    host("oldsrv-target", SOV + "46")
    tls(SOV + "46", 8455)
    srv("_matrix-fed", "bothsrv", "both-fed", 8456)
    srv("_matrix", "bothsrv", "both-old", 8457)
    host("both-fed", SOV + "47")
    host("both-old", SOV + "48")
    tls(SOV + "47", 8456)
    tls(SOV + "48", 8457, label="deprecated SRV when _matrix-fed exists: must not be used")
    srv("_matrix-fed", "v6", "v6-target", p6)
    host("v6-target", "::1")
    tls("::1", p6)
    srv("_matrix-fed", "prio", "prio-b", 8459, prio=20)
    srv("_matrix-fed", "prio", "prio-a", 8459, prio=10)
    host("prio-a", SOV + "54")
    host("prio-b", SOV + "55")
    tls(SOV + "54", 8459)
    tls(SOV + "55", 8459)
    # delegated names
    host("deleg", SOV + "40")
    tls(SOV + "40", 8449)
    srv("_matrix-fed", "deleg", "deleg-target", 8452)
    host("deleg-target", SOV + "41")
    tls(SOV + "41", 8452)
    host("deleg-nosrv", SOV + "42")
    tls(SOV + "42", 8448)
    host("olddeleg", SOV + "43")
    srv("_matrix", "olddeleg", "olddeleg-target", 8458)
    host("olddeleg-target", SOV + "44")
    tls(SOV + "44", 8458)

    # -- .well-known variants: each name also serves its own 8448 for the fallback
    variants = {
        "wk-badjson": (60, ("raw", b'{"m.server": "deleg.chappe.test:8449"')),
        "wk-big": (61, ("raw", BIG_WK)),
        "wk-bigchunked": (74, ("chunks", [BIG_WK[i:i + 4096]
                                          for i in range(0, len(BIG_WK), 4096)])),
        "wk-loop": (62, _wk_redirect(301, n("wk-loop"))),
        "wk-loopa": (63, _wk_redirect(302, n("wk-loopb"))),
        "wk-loopb": (64, _wk_redirect(302, n("wk-loopa"))),
        "wk-redir": (65, _wk_redirect(302, n("wk-redir-target"))),
        "wk-redir-target": (66, ("json", DELEG_8449)),
        "wk-404": (67, ("status", 404)),
        "wk-slow": (69, ("hang",)),
        "wk-notallowed": (71, ("json", {"m.server": "deleg.notchappe.test:8449"})),
        "wk-foreign": (72, ("json", {"m.server": n("foreign-deleg") + ":8449"})),
        "wk-nomserver": (75, ("json", {"m.sever": n("deleg") + ":8449"})),
        "wk-badmserver": (76, ("json", {"m.server": "user@attacker.com@elysee.fr"})),
        "wk-500": (77, ("status", 500, DELEG_8449)),
    }
    for label, (ip, wk) in variants.items():
        host(label, SOV + str(ip))
        tls(SOV + str(ip), 443, wk, label=label)
        tls(SOV + str(ip), 8448, label=label + " fallback")
    host("wk-hang", SOV + "68")
    tls(SOV + "68", 443, mode="tcp_hang", label="wk-hang: accepts, never speaks")
    tls(SOV + "68", 8448)
    host("wk-badcert", SOV + "70")
    tls(SOV + "70", 443, ("json", DELEG_8449), cert="rogue", label="wk-badcert")
    tls(SOV + "70", 8448)
    host("foreign-deleg", FOREIGN + "20")
    rec(FOREIGN + "20", 8449)

    # -- sovereignty
    host("foreign", FOREIGN + "10")
    for port in (443, 8448, 8466):
        rec(FOREIGN + "10", port)
    host("mixed", FOREIGN + "11", SOV + "51")
    rec(FOREIGN + "11", 8464)
    tls(SOV + "51", 8464)
    # rebinding (names served by RebindDNS, not dnsmasq)
    tls(SOV + "50", 8448)
    rec(FOREIGN + "50", 8448)
    rec(FOREIGN + "50", 443)
    tls(SOV + "52", 443, ("status", 404))
    tls(SOV + "52", 8448)
    rec(FOREIGN + "52", 443)
    rec(FOREIGN + "52", 8448)

    # -- certificate failures
    host("wrongname", SOV + "80")
    tls(SOV + "80", 8460, cert="other", label="certificate for other.example")
    host("rogue", SOV + "81")
    tls(SOV + "81", 8461, cert="rogue", label="certificate from an unknown CA")
    host("expired", SOV + "82")
    tls(SOV + "82", 8462, cert="expired", label="expired certificate")

    # -- not allowlisted (but resolvable and served: only the allowlist stands in the way)
    host("blocked.notchappe.test", SOV + "90")
    tls(SOV + "90", 8448, label="blocked.notchappe.test")
    return hosts, srvs, servers


REBIND_PLAN = {n("rebind"): (SOV + "50", FOREIGN + "50"),
               n("rebind2"): (SOV + "52", FOREIGN + "52")}


# =============================================================================================
# The session network
# =============================================================================================
class FedNet:
    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.certs = None
        self.dns = None
        self.servers = {}
        self.key_path = None
        self.p6 = None
        self.hosts = self.srvs = None

    def start(self):
        require_root()
        self.certs = make_certs(self.dir / "certs")
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s6.bind(("::1", 0))
        self.p6 = s6.getsockname()[1]
        s6.close()
        self.hosts, self.srvs, plan = build_plan(self.p6)
        for addr, port, mode, certname, wk, label in plan:
            cert = key = None
            if certname:
                cert = getattr(self.certs, certname)
                key = getattr(self.certs, certname + "_key")
            srv = FedServer(addr, port, mode=mode, cert=cert, key=key, wk=wk, label=label)
            try:
                srv.start()
            except OSError as e:
                raise AssertionError("cannot listen on %s: %s (another test session "
                                     "running?)" % (srv.addr(), e))
            self.servers[(addr, port)] = srv
        self.dns = Dnsmasq(self.dir, self.hosts, self.srvs).start()
        self.key_path = self.dir / "relay.key"
        return self

    def _ensure_key(self):
        """The relay's signing key, made by `chappe keygen` on first use (the network itself
        does not need the binary)."""
        if not self.key_path.exists():
            r = harness.run_cli(harness.debug_bin(), ["keygen", "-o", str(self.key_path)])
            assert r.returncode == 0, "chappe keygen failed (%d): %s" % (r.returncode, r.stderr)

    def stop(self):
        if self.dns is not None:
            self.dns.stop()
        for s in self.servers.values():
            s.stop(timeout=3.0)

    # --- lookups --------------------------------------------------------------------------
    def server(self, addr, port):
        return self.servers[(addr, port)]

    def mark(self):
        return {k: (len(s.conns), len(s.seen)) for k, s in self.servers.items()}

    def conns_since(self, mark, addr, port):
        s = self.servers[(addr, port)]
        return s.conns[mark[(addr, port)][0]:]

    def seen_since(self, mark, addr, port):
        s = self.servers[(addr, port)]
        return s.seen[mark[(addr, port)][1]:]

    def touched_since(self, mark, settle=0.3):
        """{(addr, port): number of connections} of every server connected to after mark.
        Waits settle seconds first: an accept loop may not have caught up yet."""
        time.sleep(settle)
        return {k: len(s.conns) - mark[k][0] for k, s in self.servers.items()
                if len(s.conns) > mark[k][0]}

    def summary(self, mark=None):
        out = []
        for k, s in sorted(self.servers.items()):
            if mark is None or len(s.conns) > mark[k][0]:
                out.append(s.summary())
        return "\n".join(out) or "(no server saw anything)"

    # --- configs --------------------------------------------------------------------------
    def whitelist(self):
        return ["*.chappe.test", "%s:%d" % (IP_LITERAL, IP_LITERAL_PORT),
                "%s:%d" % (IP_NO_SAN, IP_NO_SAN_PORT), "[::1]:%d" % self.p6]

    def config(self, path, whitelist=None, sovereign=None, ip_whitelist=None, dns_port=None,
               ca_list=None, verify=True, extra=None, raw=None):
        """Write a chappe config for the CLI commands to path; returns path.
        Defaults: the test allowlist, sovereign 127.0.5.0/24 and ::1, loopback whitelisted
        against the default blacklist, the test CA, dnsmasq. A value False leaves that key
        out of the file (ip_whitelist=False, ca_list=False). raw: text appended verbatim."""
        cfg = make_config(None, harness.free_port(), 0, [("hs.localhost", "http://127.0.0.1:9")],
                          workers=1, limits=OUTBOUND_LIMITS,
                          cert_pairs=[(self.certs.leaf, self.certs.leaf_key)])
        self._ensure_key()
        cfg["signing_key_path"] = str(self.key_path)
        cfg["federation_domain_whitelist"] = self.whitelist() if whitelist is None else whitelist
        cfg["sovereign_ranges"] = ["127.0.5.0/24", "::1/128"] if sovereign is None else sovereign
        cfg["ip_range_whitelist"] = (["127.0.0.0/8", "::1/128"] if ip_whitelist is None
                                     else ip_whitelist)
        cfg["federation_custom_ca_list"] = [str(self.certs.ca)] if ca_list is None else ca_list
        cfg["federation_verify_certificates"] = verify
        cfg["dns_servers"] = ["127.0.0.1:%d" % (dns_port or self.dns.port)]
        cfg.update(extra or {})
        for k in [k for k, v in cfg.items()
                  if v is False and k != "federation_verify_certificates"]:
            del cfg[k]  # False: leave the key out (its default applies)
        text = to_yaml(cfg) + (raw or "")
        Path(path).write_text(text)
        return Path(path)


_NET = {"net": None, "users": 0}


def _stop_net():
    net = _NET["net"]
    _NET["net"] = None
    if net is not None:
        net.stop()


atexit.register(_stop_net)


@pytest.fixture(scope="session")
def fednet(tmp_path_factory):
    """The session's FedNet (started once even when several modules import this fixture)."""
    if _NET["net"] is None:
        net = FedNet(tmp_path_factory.mktemp("fednet"))
        _NET["net"] = net
        try:
            net.start()
        except BaseException:
            _stop_net()
            raise
    _NET["users"] += 1
    yield _NET["net"]
    _NET["users"] -= 1
    if _NET["users"] == 0:
        _stop_net()


@pytest.fixture
def rebind_dns():
    """A fresh RebindDNS for REBIND_PLAN, stopped at teardown."""
    d = RebindDNS(REBIND_PLAN).start()
    yield d
    d.stop()


@pytest.fixture
def fedcfg(fednet, tmp_path):
    """The default CLI config of the test network (see FedNet.config)."""
    return fednet.config(tmp_path / "fed.yaml")


# =============================================================================================
# Running the CLI and reading its steps
# =============================================================================================
class Run:
    def __init__(self, args, rc, out, err, secs):
        self.args = args
        self.rc = rc
        self.out = out
        self.err = err
        self.secs = secs

    def show(self):
        return "$ chappe %s\nexit %s after %.2fs\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
            " ".join(self.args), self.rc, self.secs, self.out[-6000:], self.err[-6000:])


def chappe(args, timeout=CLI_TIMEOUT):
    """Run the debug chappe with args (bounded); fail on a sanitizer report. Returns a Run."""
    binary = harness.debug_bin()
    if not binary.exists():
        pytest.fail("chappe binary %s does not exist" % binary, pytrace=False)
    args = [str(a) for a in args]
    t0 = time.monotonic()
    try:
        r = harness.run_cli(binary, args, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("chappe %s did not finish within %.0fs\nstdout: %s\nstderr: %s" % (
            " ".join(args), timeout, e.stdout, e.stderr))
    run = Run(args, r.returncode, r.stdout, r.stderr, time.monotonic() - t0)
    for m in SANITIZER_MARKERS:
        assert m not in run.err, "sanitizer report (%r):\n%s" % (m, run.show())
    assert run.rc >= 0, "chappe died of signal %d:\n%s" % (-run.rc, run.show())
    return run


def policy_check(cfg, arg, timeout=CLI_TIMEOUT):
    return chappe(["policy", "check", "-c", cfg, arg], timeout)


def fed_request(cfg, method, dest, path, body=None, key=None, origin=None,
                timeout=CLI_TIMEOUT):
    args = ["fed-request", "-c", cfg]
    if key is not None:
        args += ["--key", key]
    if origin is not None:
        args += ["--origin", origin]
    args += [method, dest, path]
    if body is not None:
        args.append(body)
    return chappe(args, timeout)


_ADDR = r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+)"
# Step lines may be indented (the steps of a .well-known fetch are) and may end with more text.
NAME_RE = re.compile(r"^\s*name (\S+): (allow|deny)(?: ([a-z_]+))?(?: \((.*)\))?\s*$")
ADDRESS_RE = re.compile(r"^\s*address (\S+): (allow|deny)(?: ([a-z_]+))?(?: \((.*)\))?\s*$")
TARGET_RE = re.compile(r"^\s*target %s:(\d+) host=(\S+) tls=(\S+)(?:\s|$)" % _ADDR)
CONNECT_RE = re.compile(r"^\s*connect %s:(\d+) host=(\S+) tls=(\S+)(?:\s|$)" % _ADDR)
WELLKNOWN_RE = re.compile(r"^\s*well-known https://(\S+?)/\.well-known/matrix/server\s*$")
MSERVER_RE = re.compile(r"^\s+-> m\.server (\S+)(?:\s|$)")
WKERROR_RE = re.compile(r"^\s+-> error: (.*)$")
DECISION_RE = re.compile(r"^decision: (allow|deny)(?: ([a-z_]+))?\s*$")
ERROR_RE = re.compile(r"^error: (.*)$")


def _unbracket(a):
    return a[1:-1] if a.startswith("[") and a.endswith("]") else a


class Steps:
    """The step lines of `policy check` (stdout) or `fed-request` (stderr), parsed by the
    contract's line forms; other lines are ignored. A well-known line's result is the first
    indented "-> m.server V" / "-> error: W" line after it, whatever comes in between (the
    fetch may print its own name and address lines, or one well-known line per redirect)."""

    def __init__(self, text):
        self.text = text
        self.lines = text.splitlines()
        self.names = []  # (name, verdict, reason, rule)
        self.addresses = []  # (addr, verdict, reason, rule)
        self.targets = []  # (addr, port, host, tls), addr unbracketed
        self.connects = []  # same
        self.wellknowns = []  # namespace(host, mserver, error)
        self.decisions = []  # (verdict, reason)
        self.errors = []
        for i, ln in enumerate(self.lines):
            m = WELLKNOWN_RE.match(ln)
            if m:
                self.wellknowns.append(self._wellknown(m.group(1), i))
                continue
            for rx, dest in ((NAME_RE, self.names), (ADDRESS_RE, self.addresses)):
                m = rx.match(ln)
                if m:
                    dest.append(m.groups())
            for rx, dest in ((TARGET_RE, self.targets), (CONNECT_RE, self.connects)):
                m = rx.match(ln)
                if m:
                    dest.append((_unbracket(m.group(1)), int(m.group(2)), m.group(3),
                                 m.group(4)))
            m = DECISION_RE.match(ln)
            if m:
                self.decisions.append(m.groups())
            m = ERROR_RE.match(ln)
            if m:
                self.errors.append(m.group(1))

    def _wellknown(self, host, i):
        wk = SimpleNamespace(host=host, mserver=None, error=None)
        for ln in self.lines[i + 1:]:
            m = MSERVER_RE.match(ln)
            if m:
                wk.mserver = m.group(1)
                break
            m = WKERROR_RE.match(ln)
            if m:
                wk.error = m.group(1)
                break
        return wk

    @property
    def decision(self):
        return self.decisions[-1] if self.decisions else None

    def last_line(self):
        rest = [ln for ln in self.lines if ln.strip()]
        return rest[-1] if rest else ""

    def name(self, host):
        """The name lines for host (with or without a port), in order."""
        return [x for x in self.names if x[0] == host or x[0].rsplit(":", 1)[0] == host
                or x[0].startswith(host + ":")]

    def address(self, addr):
        return [x for x in self.addresses if _unbracket(x[0]) == addr]

    def allowed_addresses(self):
        return {_unbracket(x[0]) for x in self.addresses if x[1] == "allow"}


def parse_response(out):
    """fed-request's stdout -> (status, reason, [(name, value)], body text)."""
    text = out.replace("\r\n", "\n")
    head, sep, body = text.partition("\n\n")
    assert sep, "no empty line after the response head in %r" % out[:2000]
    lines = head.split("\n")
    m = re.match(r"^HTTP/1\.1 (\d{3}) ?(.*)$", lines[0])
    assert m, "first stdout line %r is not 'HTTP/1.1 STATUS REASON'" % lines[0]
    headers = []
    for ln in lines[1:]:
        k, s, v = ln.partition(":")
        assert s, "response header line %r has no ':'" % ln
        headers.append((k.strip(), v.strip()))
    return int(m.group(1)), m.group(2), headers, body


def parse_xmatrix(value):
    """An X-Matrix Authorization value -> {param: value} (names lowercased, quotes removed)."""
    m = re.match(r"^X-Matrix +(.*)$", value or "")
    assert m, "Authorization %r is not X-Matrix" % value
    params = {}
    for pm in re.finditer(r'\s*([A-Za-z0-9_.-]+)=("(?:[^"\\]|\\.)*"|[^,]*)\s*(?:,|$)',
                          m.group(1)):
        v = pm.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        params[pm.group(1).lower()] = v
    return params
