"""Fixtures for chappe's scenario tests: certificates, toy upstreams, chappe processes.

Every process or upstream a test starts is stopped at teardown, even on failure. Each chappe
gets SIGTERM, a bounded wait, and the checks: exit status 0, no sanitizer report on stderr.
On any failure chappe's config/stdout/stderr (and what the upstreams received) are kept under
tests/scenario/logs/<test name>/ and the path is printed with the failure."""
# SPDX-License-Identifier: ISC

import re
import shutil
import ssl
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

import harness
from harness import Chappe, free_port, make_config
from httpc import Conn
from upstream import Upstream

LOGS = Path(__file__).resolve().parent / "logs"


def _log_dir(item):
    return LOGS / re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name).strip("_")


def _save_logs(item):
    procs = getattr(item, "_chappes", [])
    ups = getattr(item, "_upstreams", [])
    if not procs and not ups:
        return None
    d = _log_dir(item)
    d.mkdir(parents=True, exist_ok=True)
    for c in procs:
        for p in (c.cfg_path, c.stdout_path, c.stderr_path):
            if p.exists():
                shutil.copyfile(p, d / p.name)
    for i, up in enumerate(ups):
        (d / ("upstream%d.txt" % i)).write_text(up.summary())
    return d


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed and rep.when != "teardown":  # teardown failures print their own
        d = _save_logs(item)
        if d is not None:
            lines = ["logs kept in %s" % d]
            for c in getattr(item, "_chappes", []):
                lines.append("--- %s stderr (tail) ---" % c.name)
                lines.append(harness.tail(c.stderr(), 25))
            rep.sections.append(("chappe logs", "\n".join(lines)))


def pytest_runtest_setup(item):
    d = _log_dir(item)
    if d.exists():
        shutil.rmtree(d, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    harness.kill_leftovers()


# --- certificates ------------------------------------------------------------------------
def _der(path):
    pem = Path(path).read_text()
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)
    assert m, "no certificate in %s" % path
    return ssl.PEM_cert_to_DER_cert(m.group(0))


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    gen = harness.REPO / "certs" / "gen.sh"
    if not gen.exists():
        pytest.fail("%s does not exist: it makes the test certificates" % gen, pytrace=False)
    r = subprocess.run(["sh", str(gen), str(d)], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, "certs/gen.sh failed (%d):\n%s%s" % (r.returncode, r.stdout,
                                                                   r.stderr)
    ns = SimpleNamespace(dir=d, ca=d / "ca.crt", server_crt=d / "server.crt",
                         server_key=d / "server.key", alt_crt=d / "alt.crt", alt_key=d / "alt.key",
                         egress_ca_crt=d / "egress-ca.crt", egress_ca_key=d / "egress-ca.key")
    for k, p in vars(ns).items():
        if k != "dir":
            assert p.exists(), "certs/gen.sh did not make %s" % p
    ns.server_der = _der(ns.server_crt)
    ns.alt_der = _der(ns.alt_crt)
    return ns


# --- processes -----------------------------------------------------------------------------
@pytest.fixture
def make_upstream(request):
    """make_upstream(handler=None, **kw) -> a started Upstream, stopped at teardown."""
    ups = []
    request.node._upstreams = ups

    def make(handler=None, **kw):
        up = Upstream(handler=handler, **kw).start()
        ups.append(up)
        return up

    yield make
    for up in ups:
        up.stop()


@pytest.fixture
def start_chappe(request, tmp_path):
    """start_chappe(config, binary=None, name=..., wait_ready=True) -> a running Chappe."""
    procs = []
    request.node._chappes = procs

    def start(config, binary=None, name=None, wait_ready=True, ready_timeout=20.0):
        name = name or ("chappe" if not procs else "chappe%d" % (len(procs) + 1))
        c = Chappe(binary or harness.debug_bin(), tmp_path, config, name)
        procs.append(c)
        if wait_ready:
            c.start(ready_timeout)
        return c

    yield start
    problems = []
    for c in procs:
        try:
            problems += c.stop()
        except Exception as e:  # keep stopping the others
            problems.append("%s: stop failed: %r" % (c.name, e))
    if problems:
        d = _save_logs(request.node)
        pytest.fail("after the test: %s\nlogs kept in %s\n%s" % (
            "; ".join(problems), d,
            "\n".join("--- %s stderr (tail) ---\n%s" % (c.name, harness.tail(c.stderr(), 30))
                      for c in procs)), pytrace=False)


class Proxy:
    """A running chappe with its upstream(s): tls_port, plain_port, up, ups, chappe."""

    def __init__(self, chappe, tls_port, plain_port, ups, certs):
        self.chappe = chappe
        self.tls_port = tls_port
        self.plain_port = plain_port
        self.ups = ups
        self.up = ups[0] if ups else None
        self.certs = certs

    def plain(self, **kw):
        return Conn.plain(self.plain_port, **kw)

    def tls(self, **kw):
        return Conn.tls(self.tls_port, **kw)


@pytest.fixture
def start_proxy(certs, make_upstream, start_chappe):
    """start_proxy(handler=None, workers=2, limits=None, homeservers=None, binary=None,
    upstream_url=None, cert_pairs=None) -> Proxy.

    homeservers: list of server names, each with its own upstream (default ["hs.localhost"]);
    upstream_url overrides the (single) upstream URL, e.g. to point at a closed port. The config
    pins the key httpc.xmatrix signs with (harness.REMOTE_PINNED_KEYS) unless extra says
    otherwise."""

    def start(handler=None, workers=2, limits=None, homeservers=None, binary=None,
              upstream_url=None, cert_pairs=None, extra=None):
        names = homeservers or ["hs.localhost"]
        ups = []
        pairs = []
        for n in names:
            if upstream_url is not None:
                pairs.append((n, upstream_url))
            else:
                up = make_upstream(handler)
                ups.append(up)
                pairs.append((n, up.url))
        tls_port, plain_port = free_port(), free_port()
        cfg = make_config(certs, tls_port, plain_port, pairs, workers=workers, limits=limits,
                          cert_pairs=cert_pairs, extra=extra, pin_remote=True)
        c = start_chappe(cfg, binary=binary)
        return Proxy(c, tls_port, plain_port, ups, certs)

    return start


@pytest.fixture
def proxy(start_proxy):
    """A chappe (2 workers) in front of one default toy upstream for hs.localhost."""
    return start_proxy()
