"""Scenario: server discovery ("Resolving server names", Matrix server-server API) as the outbound
client does it, driven through `chappe policy check` and `chappe fed-request` against the test
network of netfix.py (dnsmasq + HTTPS servers on 127.0.5.x and ::1).

For each discovery path: the `target` line (address, port, Host, TLS name), and what the server
there received (Host header, SNI; no SNI for IP literals) when fed-request sends a request.
For each broken .well-known: the fallback to SRV / A on 8448, within the time budget.
The test_fixture_* tests check the test network itself (they pass without chappe)."""
# SPDX-License-Identifier: ISC

import json
import socket
import ssl

import pytest

from netfix import (DOMAIN, IP_LITERAL, IP_LITERAL_PORT, SOV, WELL_KNOWN_TIMEOUT_S, WK_PATH,
                    Steps, dns_query, fed_request, fedcfg, fednet, n, parse_response,
                    parse_xmatrix, policy_check)

__all__ = ["fedcfg", "fednet"]  # fixtures, imported for pytest

VERSION_PATH = "/_matrix/federation/v1/version"
BUDGET_S = 10.0  # a discovery without a timeout in it
FALLBACK_BUDGET_S = WELL_KNOWN_TIMEOUT_S + 6.0  # a .well-known that times out, then the rest


def _case(name, addr, port, host, tls, wk=None, wk_servers=(), silent=(), targets=None):
    """name: the server name; (addr, port, host, tls): the first target and the server that must
    get the request; wk: None (no .well-known fetch at all), "error", or the m.server value;
    wk_servers: the (addr, port) the .well-known fetch may connect to; silent: servers that
    must see no connection; targets: the whole expected target list, when it matters."""
    return dict(name=name, addr=addr, port=port, host=host, tls=tls, wk=wk,
                wk_servers=list(wk_servers), silent=list(silent), targets=targets)


def _deleg_8449(wk_ip, wk="deleg.chappe.test:8449", more=()):
    return dict(addr=SOV + "40", port=8449, host=n("deleg") + ":8449", tls=n("deleg"), wk=wk,
                wk_servers=[(SOV + wk_ip, 443)] + list(more))


def cases(p6):
    lit = "%s:%d" % (IP_LITERAL, IP_LITERAL_PORT)
    c = {
        # 1. IP literal: that address and port, Host = the server name, certificate for the IP
        "ip_literal": _case(lit, IP_LITERAL, IP_LITERAL_PORT, lit, IP_LITERAL),
        "ip6_literal": _case("[::1]:%d" % p6, "::1", p6, "[::1]:%d" % p6, "::1"),
        # 2. explicit port: A/AAAA, Host = name:port, no .well-known
        "explicit_port": _case(n("port") + ":8451", SOV + "11", 8451, n("port") + ":8451",
                               n("port"), silent=[(SOV + "11", 443)]),
        # 3a. .well-known -> delegated IP literal
        "wk_ip_literal": _case(n("wkip"), IP_LITERAL, IP_LITERAL_PORT, lit, IP_LITERAL,
                               wk=lit, wk_servers=[(SOV + "14", 443)]),
        # 3b. .well-known -> hostname:port
        "wk_host_port": _case(n("wkport"), **_deleg_8449("12")),
        # 3c. .well-known -> hostname, SRV _matrix-fed._tcp.<delegated>
        "wk_host_srv": _case(n("wksrv"), SOV + "41", 8452, n("deleg"), n("deleg"),
                             wk=n("deleg"), wk_servers=[(SOV + "13", 443)],
                             silent=[(SOV + "40", 8449)]),
        # 3d. (deprecated) SRV _matrix._tcp.<delegated>
        "wk_host_old_srv": _case(n("wkolddeleg"), SOV + "44", 8458, n("olddeleg"),
                                 n("olddeleg"), wk=n("olddeleg"),
                                 wk_servers=[(SOV + "22", 443)]),
        # 3e. delegated, no SRV: <delegated>:8448
        "wk_host_no_srv": _case(n("wknosrv"), SOV + "42", 8448, n("deleg-nosrv"),
                                n("deleg-nosrv"), wk=n("deleg-nosrv"),
                                wk_servers=[(SOV + "15", 443)]),
        # 4. no .well-known (404): SRV _matrix-fed._tcp.<name>, Host and TLS = <name>
        "srv": _case(n("srv"), SOV + "45", 8454, n("srv"), n("srv"), wk="error",
                     wk_servers=[(SOV + "16", 443)]),
        # 5. (deprecated) SRV _matrix._tcp.<name>
        "old_srv": _case(n("oldsrv"), SOV + "46", 8455, n("oldsrv"), n("oldsrv"), wk="error",
                         wk_servers=[(SOV + "17", 443)]),
        "srv_fed_before_old": _case(n("bothsrv"), SOV + "47", 8456, n("bothsrv"), n("bothsrv"),
                                    wk="error", wk_servers=[(SOV + "18", 443)],
                                    silent=[(SOV + "48", 8457)],
                                    targets=[(SOV + "47", 8456, n("bothsrv"), n("bothsrv"))]),
        "srv_priority": _case(n("prio"), SOV + "54", 8459, n("prio"), n("prio"), wk="error",
                              wk_servers=[(SOV + "23", 443)],
                              targets=[(SOV + "54", 8459, n("prio"), n("prio")),
                                       (SOV + "55", 8459, n("prio"), n("prio"))]),
        # 6. nothing: A/AAAA on 8448
        "a_8448": _case(n("plain"), SOV + "19", 8448, n("plain"), n("plain"), wk="error",
                        wk_servers=[(SOV + "19", 443)]),
        "a_8448_nothing_on_443": _case(n("bare"), SOV + "20", 8448, n("bare"), n("bare"),
                                       wk="error"),
        # AAAA ::1 behind an SRV record's port
        "aaaa_via_srv": _case(n("v6"), "::1", p6, n("v6"), n("v6"), wk="error",
                              wk_servers=[(SOV + "21", 443)]),
    }
    return c


CASE_IDS = sorted(cases(1))


def _host_of(name):
    if name.startswith("["):
        return name[1:name.index("]")]
    return name.rsplit(":", 1)[0] if name.count(":") == 1 else name


def check_policy_allow(net, cfg, c):
    """policy check on c["name"]: allow, exit 0, the expected targets and .well-known lines."""
    mark = net.mark()
    r = policy_check(cfg, c["name"])
    st = Steps(r.out)
    assert r.rc == 0, "policy check %s: exit %d, want 0 (allow)\n%s" % (c["name"], r.rc,
                                                                          r.show())
    assert st.decision == ("allow", None), "decision %r, want allow\n%s" % (st.decision,
                                                                             r.show())
    assert st.last_line().startswith("decision: "), "the last line is not the decision:\n%s" % (
        r.show())
    want = (c["addr"], c["port"], c["host"], c["tls"])
    assert st.targets, "no target line\n%s" % r.show()
    assert st.targets[0] == want, "first target %r, want %r\n%s" % (st.targets[0], want,
                                                                    r.show())
    if c["targets"] is not None:
        assert st.targets == c["targets"], "targets %r, want %r\n%s" % (st.targets,
                                                                       c["targets"], r.show())
    assert all(t[0].startswith(SOV) or t[0] == "::1" for t in st.targets), \
        "a target outside the sovereign ranges:\n%s" % r.show()
    allowed = st.allowed_addresses()
    assert c["addr"] in allowed, "no 'address %s: allow' line\n%s" % (c["addr"], r.show())
    host = _host_of(c["name"])
    if not _is_ip(host):
        assert any(v == "allow" for _, v, _, _ in st.name(host)), \
            "no 'name %s: allow' line\n%s" % (host, r.show())
    if c["wk"] is None:
        assert not st.wellknowns, "a .well-known fetch for %s, which the spec skips\n%s" % (
            c["name"], r.show())
    else:
        wks = [w for w in st.wellknowns if w.host == host]
        assert wks, "no 'well-known https://%s%s' line\n%s" % (host, WK_PATH, r.show())
        if c["wk"] == "error":
            assert wks[0].error is not None and wks[0].mserver is None, \
                "the .well-known of %s should have failed ('  -> error: ...')\n%s" % (
                    host, r.show())
        else:
            assert wks[0].mserver == c["wk"] and wks[0].error is None, \
                "'  -> m.server %s' expected under the well-known line\n%s" % (c["wk"],
                                                                              r.show())
    touched = net.touched_since(mark)
    extra = set(touched) - set(c["wk_servers"])
    assert not extra, "policy check connected to %r (only a .well-known fetch is allowed)\n" \
        "%s\n%s" % (sorted(extra), r.show(), net.summary(mark))
    assert r.secs < BUDGET_S, "policy check took %.1fs\n%s" % (r.secs, r.show())
    return st


def _is_ip(host):
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, host)
            return True
        except OSError:
            pass
    return False


def check_request_lands(net, cfg, c, path=VERSION_PATH):
    """fed-request GET to c["name"]: the expected server gets it with the spec's Host and SNI;
    nobody else is contacted but the .well-known servers. Returns (Run, echo dict)."""
    mark = net.mark()
    r = fed_request(cfg, "GET", c["name"], path)
    assert r.rc == 0, "fed-request GET %s: exit %d, want 0\n%s\n%s" % (
        c["name"], r.rc, r.show(), net.summary(mark))
    status, _, _, body = parse_response(r.out)
    assert status == 200, "status %d\n%s" % (status, r.show())
    echo = json.loads(body)
    seen = net.seen_since(mark, c["addr"], c["port"])
    assert len(seen) == 1, "the server at %s:%d saw %d requests, want 1\n%s\n%s" % (
        c["addr"], c["port"], len(seen), r.show(), net.summary(mark))
    got = seen[0]
    assert (got["method"], got["path"]) == ("GET", path), got
    assert got["host"] == c["host"], "Host %r, want %r (spec)\n%s" % (got["host"], c["host"],
                                                                       r.show())
    ip_tls = _is_ip(c["tls"])
    want_sni = None if ip_tls else c["tls"]
    assert got["sni"] == want_sni, "SNI %r, want %r%s" % (
        got["sni"], want_sni, " (no SNI for an IP literal)" if ip_tls else "")
    info = net.server(c["addr"], c["port"]).conn_info(got["conn"])
    assert info.sni_seen, "the server never saw the ClientHello's extensions"
    assert echo["host"] == c["host"] and echo["sni"] == want_sni, \
        "stdout body is not the echo of this request: %r" % echo
    x = parse_xmatrix(got["authorization"])
    assert x.get("destination") == c["name"], \
        "X-Matrix destination %r, want the server name %r (not the delegated host)" % (
            x.get("destination"), c["name"])
    st = Steps(r.err)
    want = (c["addr"], c["port"], c["host"], c["tls"])
    assert want in st.connects, "no 'connect %s' line on stderr\n%s" % (" ".join(
        map(str, want)), r.show())
    touched = net.touched_since(mark)
    extra = set(touched) - set(c["wk_servers"]) - {(c["addr"], c["port"])}
    assert not extra, "fed-request also connected to %r\n%s\n%s" % (
        sorted(extra), r.show(), net.summary(mark))
    for s in c["silent"]:
        assert s not in touched, "%s:%d must see no connection\n%s" % (s[0], s[1], r.show())
    return r, echo


# --- the test network itself --------------------------------------------------------------
def test_fixture_dns_records(fednet):
    """dnsmasq answers every planned record, and NXDOMAIN / NODATA where the tests need it."""
    port = fednet.dns.port
    for name, addrs in fednet.hosts.items():
        got = []
        for qt in ("A", "AAAA"):
            ans = dns_query(port, name, qt)
            assert ans.rcode == "NOERROR", (name, qt, ans)
            got += [a.value for a in ans.answers if a.type == qt]
        assert sorted(got) == sorted(addrs), "%s: dnsmasq answers %r, planned %r" % (
            name, got, addrs)
    for svc, target, p, prio, weight in fednet.srvs:
        ans = dns_query(port, svc, "SRV")
        assert (prio, weight, p, target) in [a.value for a in ans.answers], (svc, ans.answers)
    for name, qt in ((n("nothing"), "A"), ("_matrix-fed._tcp." + n("plain"), "SRV"),
                     ("_matrix._tcp." + n("plain"), "SRV"), ("deleg.notchappe.test", "A")):
        assert dns_query(port, name, qt).rcode == "NXDOMAIN", (name, qt)
    mark = fednet.dns.mark()
    dns_query(port, "logged." + DOMAIN, "AAAA")
    assert fednet.dns.queries_since(mark) == [("AAAA", "logged." + DOMAIN)]


def _tls_get(fednet, addr, port, sni, host, path):
    ctx = ssl.create_default_context(cafile=str(fednet.certs.ca))
    if sni is None:
        ctx.check_hostname = False
    with socket.create_connection((addr, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (
                path, host)).encode())
            data = b""
            while len(data) < 1 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


def test_fixture_https_servers(fednet):
    """Each planned HTTPS server answers with the right certificate and records Host and SNI;
    the .well-known variants answer as planned."""
    mark = fednet.mark()
    st, _, body = _tls_get(fednet, SOV + "11", 8451, n("port"), n("port") + ":8451", "/x")
    echo = json.loads(body)
    assert st == 200 and echo["host"] == n("port") + ":8451" and echo["sni"] == n("port")
    st, _, body = _tls_get(fednet, IP_LITERAL, IP_LITERAL_PORT, None, "h", "/y")
    assert st == 200 and json.loads(body)["sni"] is None
    st, _, body = _tls_get(fednet, "::1", fednet.p6, None, "h", "/y")
    assert st == 200
    expect = {
        "wkport": (200, {"m.server": "deleg.chappe.test:8449"}),
        "wksrv": (200, {"m.server": n("deleg")}),
        "srv": (404, None),
        "wk-500": (500, None),
    }
    for label, (want_status, want_body) in expect.items():
        addr = fednet.hosts[n(label)][0]
        st, _, body = _tls_get(fednet, addr, 443, n(label), n(label), WK_PATH)
        assert st == want_status, (label, st)
        if want_body is not None:
            assert json.loads(body) == want_body, (label, body)
    st, head, _ = _tls_get(fednet, SOV + "62", 443, n("wk-loop"), n("wk-loop"), WK_PATH)
    assert st == 301 and b"Location: https://wk-loop.chappe.test/.well-known" in head
    st, _, body = _tls_get(fednet, SOV + "61", 443, n("wk-big"), n("wk-big"), WK_PATH)
    assert st == 200 and len(body) > 60 * 1024 and json.loads(body)["m.server"]
    st, head, body = _tls_get(fednet, SOV + "74", 443, n("wk-bigchunked"), n("wk-bigchunked"),
                              WK_PATH)
    assert st == 200 and b"Transfer-Encoding: chunked" in head and len(body) > 60 * 1024
    st, _, body = _tls_get(fednet, SOV + "60", 443, n("wk-badjson"), n("wk-badjson"), WK_PATH)
    with pytest.raises(ValueError):
        json.loads(body)
    seen = fednet.seen_since(mark, SOV + "11", 8451)
    assert [(s["host"], s["sni"]) for s in seen] == [(n("port") + ":8451", n("port"))]


def test_fixture_hanging_servers(fednet):
    """wk-hang accepts and never speaks; wk-slow completes TLS and never answers."""
    for addr, sni in ((SOV + "68", None), (SOV + "69", n("wk-slow"))):
        with socket.create_connection((addr, 443), timeout=5) as raw:
            if sni is None:
                raw.settimeout(1.0)
                raw.sendall(b"\x16\x03\x01\x00\x00")
                with pytest.raises(socket.timeout):
                    raw.recv(1)
                continue
            ctx = ssl.create_default_context(cafile=str(fednet.certs.ca))
            with ctx.wrap_socket(raw, server_hostname=sni) as s:
                s.settimeout(1.0)
                s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (WK_PATH, sni)).encode())
                with pytest.raises(socket.timeout):
                    s.recv(1)


# --- discovery paths ----------------------------------------------------------------------
@pytest.mark.parametrize("case", CASE_IDS)
def test_discovery_path(fednet, fedcfg, case):
    c = cases(fednet.p6)[case]
    check_policy_allow(fednet, fedcfg, c)
    check_request_lands(fednet, fedcfg, c)


def test_wellknown_request_shape(fednet, fedcfg):
    """The .well-known fetch: GET /.well-known/matrix/server on port 443, Host and SNI the
    server name, no X-Matrix signature."""
    mark = fednet.mark()
    r = policy_check(fedcfg, n("wkport"))
    assert r.rc == 0, r.show()
    seen = fednet.seen_since(mark, SOV + "12", 443)
    assert len(seen) == 1, "the .well-known server saw %r\n%s" % (seen, r.show())
    s = seen[0]
    assert (s["method"], s["path"], s["host"], s["sni"]) == ("GET", WK_PATH, n("wkport"),
                                                             n("wkport")), s
    assert s["authorization"] is None, "the .well-known fetch was signed: %r" % s


# --- broken .well-known: fall back --------------------------------------------------------
FALLBACKS = {
    # variant: the server name's label (its 443 serves the variant, its 8448 the fallback)
    "invalid_json": "wk-badjson",
    "body_60KiB": "wk-big",
    "body_60KiB_chunked": "wk-bigchunked",
    "redirect_loop_self": "wk-loop",
    "redirect_loop_a_b_a": "wk-loopa",
    "status_404": "wk-404",
    "status_500_with_json": "wk-500",
    "no_m_server": "wk-nomserver",
    "invalid_m_server": "wk-badmserver",
    "never_speaks": "wk-hang",
    "never_answers": "wk-slow",
    "untrusted_certificate": "wk-badcert",
}


@pytest.mark.parametrize("variant", sorted(FALLBACKS))
def test_wellknown_fallback(fednet, fedcfg, variant):
    label = FALLBACKS[variant]
    name = n(label)
    ip = fednet.hosts[name][0]
    wk_servers = [(ip, 443)]
    if label == "wk-loopa":
        wk_servers.append((SOV + "64", 443))
    c = _case(name, ip, 8448, name, name, wk="error", wk_servers=wk_servers)
    mark = fednet.mark()
    r = policy_check(fedcfg, name)
    st = Steps(r.out)
    assert r.rc == 0 and st.decision == ("allow", None), "want allow after the fallback\n%s" % (
        r.show())
    wks = [w for w in st.wellknowns if w.host == name]
    assert wks and wks[0].error is not None and wks[0].mserver is None, \
        "want 'well-known https://%s%s' then '  -> error: ...'\n%s" % (name, WK_PATH, r.show())
    assert st.targets and st.targets[0] == (ip, 8448, name, name), \
        "want the fallback target %s:8448 host=%s tls=%s\n%s" % (ip, name, name, r.show())
    assert r.secs < FALLBACK_BUDGET_S, "policy check took %.1fs (well_known_timeout %.0fs)\n%s" \
        % (r.secs, WELL_KNOWN_TIMEOUT_S, r.show())
    if label in ("wk-loop", "wk-loopa"):
        for s in wk_servers:
            k = len(fednet.seen_since(mark, *s))
            assert k <= 10, "%s:%d got %d .well-known requests: a redirect loop not cut" % (
                s[0], s[1], k)
    r2, _ = check_request_lands(fednet, fedcfg, c)
    assert r2.secs < FALLBACK_BUDGET_S + 2, "fed-request took %.1fs\n%s" % (r2.secs, r2.show())


def test_wellknown_redirect_to_other_host(fednet, fedcfg):
    """A 302 to another host's /.well-known/matrix/server is followed; its m.server is used."""
    c = _case(n("wk-redir"), SOV + "40", 8449, n("deleg") + ":8449", n("deleg"),
              wk="deleg.chappe.test:8449", wk_servers=[(SOV + "65", 443), (SOV + "66", 443)],
              silent=[(SOV + "65", 8448)])
    mark = fednet.mark()
    r = policy_check(fedcfg, c["name"])
    st = Steps(r.out)
    assert r.rc == 0 and st.decision == ("allow", None), r.show()
    assert any(w.mserver == "deleg.chappe.test:8449" for w in st.wellknowns), \
        "no '  -> m.server deleg.chappe.test:8449' line\n%s" % r.show()
    assert st.targets and st.targets[0] == (c["addr"], c["port"], c["host"], c["tls"]), \
        r.show()
    seen = fednet.seen_since(mark, SOV + "66", 443)
    assert [(s["path"], s["host"], s["sni"]) for s in seen] == [
        (WK_PATH, n("wk-redir-target"), n("wk-redir-target"))], \
        "the redirect target saw %r" % seen
    check_request_lands(fednet, fedcfg, c)


def test_wellknown_delegation_not_allowlisted(fednet, fedcfg):
    """A valid .well-known delegating to a name outside federation_domain_whitelist: denied
    (the delegated name is checked like the server name), and never looked up."""
    dmark = fednet.dns.mark()
    mark = fednet.mark()
    r = policy_check(fedcfg, n("wk-notallowed"))
    st = Steps(r.out)
    assert r.rc == 1, "exit %d, want 1 (deny)\n%s" % (r.rc, r.show())
    assert st.decision == ("deny", "name_not_allowed"), r.show()
    lines = st.name("deleg.notchappe.test")
    assert lines and lines[0][1:3] == ("deny", "name_not_allowed"), \
        "no 'name deleg.notchappe.test...: deny name_not_allowed' line\n%s" % r.show()
    assert not st.targets, r.show()
    asked = [q for q in fednet.dns.queries_since(dmark) if "notchappe" in q[1]]
    assert not asked, "DNS was asked about the denied delegated name: %r" % asked
    touched = fednet.touched_since(mark)
    assert set(touched) <= {(SOV + "71", 443)}, "connected to %r" % touched
