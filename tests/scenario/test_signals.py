"""Scenario: SIGHUP reloads certificates (keeping the old ones when the new files are bad);
SIGTERM drains in-flight requests and exits 0."""
# SPDX-License-Identifier: ISC

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

from harness import free_port, make_config
from httpc import Conn, build_request, client_ctx, tagged, tcp_connect
from upstream import VERSION_BODY, Response

SAN = "DNS:localhost,DNS:relay.localhost,DNS:hs.localhost,IP:127.0.0.1,IP:::1"


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, "openssl %s failed: %s" % (" ".join(args), r.stderr)


def new_cert(d, name="new"):
    """A new CA and a leaf for the server's names (ECDSA P-256, random serial); returns
    (crt path, key path, leaf DER)."""
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca2.key", "-out", "ca2.crt", "-subj", "/CN=chappe test CA 2",
            "-days", "2", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=relay.localhost",
            cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=%s\nextendedKeyUsage=serverAuth\n"
                               "basicConstraints=critical,CA:FALSE\n" % SAN)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca2.crt", "-CAkey", "ca2.key",
            "-set_serial", "0x%s" % os.urandom(16).hex(), "-days", "2", "-sha256",
            "-extfile", "ext.cnf", "-out", name + ".crt", cwd=d)
    os.chmod(d / (name + ".key"), 0o600)
    pem = (d / (name + ".crt")).read_text()
    return d / (name + ".crt"), d / (name + ".key"), ssl.PEM_cert_to_DER_cert(pem)


def replace_file(dst, src):
    """Atomically put src's bytes at dst (same mode as dst)."""
    mode = os.stat(dst).st_mode & 0o777
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, mode)
    os.replace(tmp, dst)


def peer_der(port, sni="relay.localhost"):
    s = tcp_connect(port, timeout=5)
    ss = client_ctx().wrap_socket(s, server_hostname=sni)
    try:
        return ss.getpeercert(binary_form=True)
    finally:
        ss.close()


def own_certs(certs, tmp_path):
    """Copies of the session certificates that this test may overwrite."""
    d = tmp_path / "live"
    d.mkdir()
    for n in ("server.crt", "server.key", "alt.crt", "alt.key"):
        shutil.copy2(certs.dir / n, d / n)
        os.chmod(d / n, 0o600 if n.endswith(".key") else 0o644)
    return d


def start_with_own_certs(certs, tmp_path, make_upstream, start_chappe, **kw):
    live = own_certs(certs, tmp_path)
    up = make_upstream(kw.pop("handler", None))
    tls_port, plain_port = free_port(), free_port()
    cfg = make_config(certs, tls_port, plain_port, [("hs.localhost", up.url)],
                      cert_pairs=[(live / "server.crt", live / "server.key"),
                                  (live / "alt.crt", live / "alt.key")], **kw)
    return live, up, tls_port, plain_port, start_chappe(cfg)


def wait_for_der(port, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    der = None
    while time.monotonic() < deadline:
        der = peer_der(port)
        if der == want:
            return der
        time.sleep(0.1)
    return der


def test_sighup_swaps_certificate(certs, tmp_path, make_upstream, start_chappe):
    live, up, tls_port, _, ch = start_with_own_certs(certs, tmp_path, make_upstream,
                                                     start_chappe)
    assert peer_der(tls_port) == certs.server_der
    new_crt, new_key, new_der = new_cert(tmp_path / "new")
    assert new_der != certs.server_der
    with Conn.tls(tls_port) as old:
        assert old.request("GET", tagged("before")).status == 200
        replace_file(live / "server.key", new_key)
        replace_file(live / "server.crt", new_crt)
        ch.signal(signal.SIGHUP)
        der = wait_for_der(tls_port, new_der)
        assert der == new_der, "after SIGHUP new connections still get %s certificate" % (
            "the old" if der == certs.server_der else "an unexpected")
        # every new connection (whichever worker) gets the new one
        for _ in range(4):
            assert peer_der(tls_port) == new_der, "a worker still serves the old certificate"
        # the SNI alt certificate was not touched
        assert peer_der(tls_port, "alt.localhost") == certs.alt_der
        # the connection opened before the reload keeps working
        r = old.request("GET", tagged("after"))
        assert r.status == 200, "pre-reload connection after SIGHUP: %r" % r
    assert ch.alive(), "chappe died on SIGHUP"
    with Conn.tls(tls_port) as c:
        assert c.request("GET", "/_matrix/federation/v1/version").body == VERSION_BODY


def _sighup_bad(certs, tmp_path, make_upstream, start_chappe, breaker):
    live, up, tls_port, _, ch = start_with_own_certs(certs, tmp_path, make_upstream,
                                                     start_chappe)
    err_before = len(ch.stderr())
    broken = breaker(live, tmp_path)
    ch.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    said = ""
    while time.monotonic() < deadline:
        new = ch.stderr()[err_before:]
        said = "\n".join(ln for ln in new.splitlines() if str(broken) in ln)
        if said:
            break
        time.sleep(0.1)
    new = ch.stderr()[err_before:]
    assert said, "after SIGHUP with a broken %s, stderr does not name the file; it says:\n%s" % (
        broken, new or "(nothing)")
    assert ch.alive(), "chappe exited after SIGHUP with a broken certificate"
    for _ in range(4):
        assert peer_der(tls_port) == certs.server_der, \
            "the old certificate is no longer served after a failed reload"
    with Conn.tls(tls_port) as c:
        assert c.request("GET", "/_matrix/federation/v1/version").status == 200


def test_sighup_garbage_certificate_keeps_old(certs, tmp_path, make_upstream, start_chappe):
    def breaker(live, tmp):
        (live / "server.crt").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n"
                                         "-----END CERTIFICATE-----\n")
        return live / "server.crt"
    _sighup_bad(certs, tmp_path, make_upstream, start_chappe, breaker)


def test_sighup_mismatched_key_keeps_old(certs, tmp_path, make_upstream, start_chappe):
    """A valid certificate whose key is not the configured key: reload must refuse it."""
    def breaker(live, tmp):
        new_crt, _, _ = new_cert(tmp / "mismatch")
        replace_file(live / "server.crt", new_crt)
        return live / "server.crt"
    _sighup_bad(certs, tmp_path, make_upstream, start_chappe, breaker)


def test_sighup_missing_key_keeps_old(certs, tmp_path, make_upstream, start_chappe):
    def breaker(live, tmp):
        os.unlink(live / "server.key")
        return live / "server.key"
    _sighup_bad(certs, tmp_path, make_upstream, start_chappe, breaker)


def test_sigterm_drains_in_flight(certs, tmp_path, make_upstream, start_chappe):
    slow = tagged("slow")
    up = make_upstream(lambda req: Response(200, b"slow answer " + req.target.encode(),
                                            delay=1.5) if req.target == slow else None)
    tls_port, plain_port = free_port(), free_port()
    ch = start_chappe(make_config(certs, tls_port, plain_port, [("hs.localhost", up.url)],
                                  workers=2))
    idle = Conn.plain(plain_port)  # an idle keep-alive connection must not hold the exit
    assert idle.request("GET", tagged("idle")).status == 200
    c = Conn.tls(tls_port)
    try:
        c.send(build_request("GET", slow))
        assert up.wait_for(lambda: any(h.target == slow for h in up.heads), 5), \
            "the upstream never got the request"
        t0 = time.monotonic()
        ch.signal(signal.SIGTERM)
        # new connections are refused soon after
        refused_after = None
        for _ in range(40):
            try:
                s = socket.create_connection(("127.0.0.1", tls_port), timeout=1)
                s.close()
            except ConnectionRefusedError:
                refused_after = time.monotonic() - t0
                break
            except OSError:
                pass
            time.sleep(0.025)
        assert refused_after is not None, "new connections still accepted %.1fs after " \
            "SIGTERM" % (time.monotonic() - t0)
        r = c.read_response(timeout=10)
        assert r.status == 200 and r.body == b"slow answer " + slow.encode(), \
            "in-flight request during drain got %r" % r
    finally:
        c.close()
        idle.close()
    rc = ch.wait(10.0 - (time.monotonic() - t0) + 0.5)
    waited = time.monotonic() - t0
    assert rc is not None, "chappe still running %.1fs after SIGTERM (drain_timeout 10s)" % (
        waited)
    assert rc == 0, "chappe exited with status %d after SIGTERM" % rc
    plain_refused = False
    try:
        socket.create_connection(("127.0.0.1", plain_port), timeout=1).close()
    except ConnectionRefusedError:
        plain_refused = True
    assert plain_refused


def test_sigterm_idle_exits_promptly(proxy):
    with proxy.plain() as c:
        assert c.request("GET", tagged("x")).status == 200
        t0 = time.monotonic()
        proxy.chappe.signal(signal.SIGTERM)
        rc = proxy.chappe.wait(10)
        elapsed = time.monotonic() - t0
    assert rc == 0, "exit status %r after SIGTERM" % rc
    assert elapsed < 10, "took %.1fs to exit with only idle connections" % elapsed


def test_sigterm_drain_timeout_bounds_exit(certs, tmp_path, make_upstream, start_chappe):
    """An upstream that never answers cannot hold chappe past drain_timeout (2s here)."""
    up = make_upstream(lambda req: Response(hang=True))
    tls_port, plain_port = free_port(), free_port()
    ch = start_chappe(make_config(certs, tls_port, plain_port, [("hs.localhost", up.url)],
                                  limits={"drain_timeout": "2s", "upstream_timeout": "60s"}))
    with Conn.plain(plain_port) as c:
        c.send(build_request("GET", tagged("hang")))
        assert up.wait_for(lambda: up.heads, 5)
        t0 = time.monotonic()
        ch.signal(signal.SIGTERM)
        rc = ch.wait(8)
        elapsed = time.monotonic() - t0
    assert rc is not None, "chappe still running 8s after SIGTERM with drain_timeout 2s"
    assert rc == 0, "exit status %d" % rc
    assert 1.5 <= elapsed <= 5.0, "exited %.1fs after SIGTERM, drain_timeout 2s" % elapsed
