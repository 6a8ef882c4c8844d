"""Scenario: the sovereignty policy -- `chappe policy check` explains allow and deny for names
and addresses with the right exit status; denied names are never looked up; addresses outside
sovereign_ranges are never connected to, even when DNS changes its answer (rebinding)."""
# SPDX-License-Identifier: ISC

import socket

import pytest

from netfix import (FOREIGN, SOV, Steps, chappe, dns_query, fed_request, fedcfg, fednet, n,
                    parse_response, policy_check, rebind_dns)

__all__ = ["fedcfg", "fednet", "rebind_dns"]  # fixtures, imported for pytest

VERSION_PATH = "/_matrix/federation/v1/version"


def _deny(r, st, reason):
    assert r.rc == 1, "exit %d, want 1 (deny %s)\n%s" % (r.rc, reason, r.show())
    assert st.decision == ("deny", reason), "decision %r, want deny %s\n%s" % (
        st.decision, reason, r.show())
    assert st.last_line().startswith("decision: "), "the last line is not the decision\n%s" % (
        r.show())


def _allow(r, st):
    assert r.rc == 0, "exit %d, want 0 (allow)\n%s" % (r.rc, r.show())
    assert st.decision == ("allow", None), "decision %r, want allow\n%s" % (st.decision,
                                                                             r.show())
    assert st.last_line().startswith("decision: "), "the last line is not the decision\n%s" % (
        r.show())


# The decision when every address found was denied names the (first) address's reason;
# no_address is kept for "nothing resolved at all" (test_nothing_resolves_is_no_address).
def _every_address_denied(r, st, addr_reason):
    assert r.rc == 1, "exit %d, want 1 (deny)\n%s" % (r.rc, r.show())
    # every address found was denied: the decision carries the first address's reason
    assert st.decision == ("deny", addr_reason), \
        "decision %r, want deny %s\n%s" % (st.decision, addr_reason, r.show())
    assert st.last_line().startswith("decision: "), "the last line is not the decision\n%s" % (
        r.show())


def _no_foreign_connection(net, mark, r):
    touched = net.touched_since(mark)
    bad = sorted(k for k in touched if k[0].startswith(FOREIGN))
    assert not bad, "connections reached foreign addresses %r\n%s\n%s" % (bad, r.show(),
                                                                          net.summary(mark))
    return touched


# --- the test network itself --------------------------------------------------------------
def test_fixture_rebind_dns_and_recorders(fednet, rebind_dns):
    """RebindDNS answers sovereign once, foreign afterwards, TTL 0; a recorder counts a
    connection attempt."""
    p = rebind_dns.port
    first = dns_query(p, n("rebind"), "A")
    assert [(a.value, a.ttl) for a in first.answers] == [(SOV + "50", 0)]
    for _ in range(2):
        assert [a.value for a in dns_query(p, n("rebind"), "A").answers] == [FOREIGN + "50"]
    aaaa = dns_query(p, n("rebind"), "AAAA")
    assert aaaa.rcode == "NOERROR" and not aaaa.answers
    assert dns_query(p, n("other"), "A").rcode == "NXDOMAIN"
    rebind_dns.reset()
    assert [a.value for a in dns_query(p, n("rebind"), "A").answers] == [SOV + "50"]
    assert ("AAAA", n("rebind")) in rebind_dns.queries
    mark = fednet.mark()
    socket.create_connection((FOREIGN + "10", 8466), timeout=2).close()
    assert fednet.touched_since(mark) == {(FOREIGN + "10", 8466): 1}


# --- names ---------------------------------------------------------------------------------
def test_allowed_name_explained(fednet, fedcfg):
    mark = fednet.mark()
    r = policy_check(fedcfg, n("port") + ":8451")
    st = Steps(r.out)
    _allow(r, st)
    lines = st.name(n("port"))
    assert lines and lines[0][1] == "allow", "no 'name %s...: allow' line\n%s" % (n("port"),
                                                                                 r.show())
    assert lines[0][3] and "*.chappe.test" in lines[0][3], \
        "the allow line does not name the rule (*.chappe.test) that matched\n%s" % r.show()
    a = st.address(SOV + "11")
    assert a and a[0][1] == "allow", "no 'address %s11: allow' line\n%s" % (SOV, r.show())
    assert a[0][3] and "127.0.5.0/24" in a[0][3], \
        "the address line does not name the sovereign range that matched\n%s" % r.show()
    assert st.targets == [(SOV + "11", 8451, n("port") + ":8451", n("port"))], r.show()
    assert not fednet.touched_since(mark), "policy check connected somewhere"


NOT_ALLOWED = ["blocked.notchappe.test", "blocked.notchappe.test:8448", "chappe.test",
               "evilchappe.test", "chappe.test.evil.example"]


@pytest.mark.parametrize("name", NOT_ALLOWED)
def test_name_not_allowed(fednet, fedcfg, name):
    """Denied before any DNS query, by policy check and by fed-request."""
    dmark = fednet.dns.mark()
    mark = fednet.mark()
    r = policy_check(fedcfg, name)
    st = Steps(r.out)
    _deny(r, st, "name_not_allowed")
    host = name.rsplit(":", 1)[0]
    lines = st.name(host)
    assert lines and lines[0][1:3] == ("deny", "name_not_allowed"), \
        "no 'name %s: deny name_not_allowed' line\n%s" % (name, r.show())
    assert not st.wellknowns and not st.targets and not st.addresses, \
        "steps after the name was denied\n%s" % r.show()
    f = fed_request(fedcfg, "GET", name, VERSION_PATH)
    assert f.rc == 1, "fed-request to a denied name: exit %d, want 1\n%s" % (f.rc, f.show())
    assert "HTTP/1.1" not in f.out, f.show()
    assert Steps(f.err).errors, "fed-request failed without an 'error: ...' line\n%s" % (
        f.show())
    asked = fednet.dns.queries_since(dmark)
    assert not asked, "DNS was asked %r for a name that is not allowlisted" % asked
    assert not fednet.touched_since(mark), fednet.summary(mark)


INVALID = ["user@attacker.com@elysee.fr", "a..b", "[::1", "[::1]x", "port.chappe.test:",
           "port.chappe.test:0", "port.chappe.test:65536", "port.chappe.test:08451",
           "port.chappe.test.", "a.-b.chappe.test", "a_b.chappe.test", "1.2.3",
           "256.0.5.1", "x" * 64 + ".chappe.test", "port.chappe.test/x",
           "port.chappe.test:8451 ", "[fe80::1%lo]:8448"]


@pytest.mark.parametrize("name", INVALID, ids=lambda s: s if len(s) < 30 else s[:20] + "...")
def test_invalid_server_name(fednet, fedcfg, name):
    dmark = fednet.dns.mark()
    r = policy_check(fedcfg, name)
    st = Steps(r.out)
    _deny(r, st, "invalid_server_name")
    assert not st.targets and not st.wellknowns, r.show()
    asked = fednet.dns.queries_since(dmark)
    assert not asked, "DNS was asked %r for an invalid server name" % asked


# --- addresses ------------------------------------------------------------------------------
BARE_IPS = [
    ("127.0.5.77", "allow", None),
    ("::1", "allow", None),
    ("127.0.6.1", "deny", "address_not_sovereign"),
    ("8.8.8.8", "deny", "address_not_sovereign"),
    ("2001:db8::1", "deny", "address_blacklisted"),  # default blacklist (Synapse's) has it
    ("10.0.0.1", "deny", "address_blacklisted"),
    ("0.0.0.0", "deny", "address_unspecified"),
    ("::", "deny", "address_unspecified"),
    ("::ffff:127.0.6.1", "deny", "address_not_sovereign"),  # IPv4-mapped: checked as IPv4
]


@pytest.mark.parametrize("ip,verdict,reason", BARE_IPS)
def test_bare_ip(fednet, fedcfg, ip, verdict, reason):
    dmark = fednet.dns.mark()
    r = policy_check(fedcfg, ip)
    st = Steps(r.out)
    if verdict == "allow":
        _allow(r, st)
    else:
        _deny(r, st, reason)
    assert len(st.addresses) == 1, "want exactly one address line\n%s" % r.show()
    a = st.addresses[0]
    if not ip.startswith("::ffff:"):
        assert a[0] == ip, "the address line is about %r, not %r\n%s" % (a[0], ip, r.show())
    assert (a[1], a[2]) == (verdict, reason), "address line %r, want %s %s\n%s" % (
        a, verdict, reason, r.show())
    if verdict == "allow":
        assert a[3], "the allow line gives no rule\n%s" % r.show()
    assert not fednet.dns.queries_since(dmark), "a bare IP was looked up in DNS"


def test_any_whitelist_and_any_ranges(fednet, tmp_path):
    cfg = fednet.config(tmp_path / "any.yaml", whitelist="any", sovereign="any")
    r = policy_check(cfg, "blocked.notchappe.test:8448")
    st = Steps(r.out)
    _allow(r, st)
    # disabling a check is explicit, and said out loud at start
    assert "sovereign_ranges is `any`" in r.err, r.show()
    assert "federation_domain_whitelist is `any`" in r.err, r.show()
    assert st.targets == [(SOV + "90", 8448, "blocked.notchappe.test:8448",
                           "blocked.notchappe.test")], r.show()
    for ip in ("127.0.6.1", "8.8.8.8", "::1"):
        r = policy_check(cfg, ip)
        _allow(r, Steps(r.out))
    for ip, reason in (("10.0.0.1", "address_blacklisted"), ("2001:db8::1",
                                                             "address_blacklisted"),
                       ("0.0.0.0", "address_unspecified")):
        r = policy_check(cfg, ip)
        st = Steps(r.out)
        _deny(r, st, reason)
        assert st.addresses and st.addresses[0][1:3] == ("deny", reason), r.show()
    r = policy_check(cfg, "a..b")
    _deny(r, Steps(r.out), "invalid_server_name")


def test_any_whitelist_keeps_sovereign_ranges(fednet, tmp_path):
    cfg = fednet.config(tmp_path / "anyname.yaml", whitelist="any")
    r = policy_check(cfg, "blocked.notchappe.test:8448")
    _allow(r, Steps(r.out))
    r = policy_check(cfg, n("foreign") + ":8466")
    st = Steps(r.out)
    _every_address_denied(r, st, "address_not_sovereign")
    assert st.address(FOREIGN + "10")[0][1:3] == ("deny", "address_not_sovereign"), r.show()


def test_default_blacklist_applies_without_whitelist(fednet, tmp_path):
    """Loopback is in the default ip_range_blacklist: without ip_range_whitelist, even a
    sovereign loopback address is denied (address_blacklisted)."""
    cfg = fednet.config(tmp_path / "nowl.yaml", ip_whitelist=False)
    r = policy_check(cfg, "127.0.5.77")
    st = Steps(r.out)
    _deny(r, st, "address_blacklisted")
    mark = fednet.mark()
    r = policy_check(cfg, n("port") + ":8451")
    st = Steps(r.out)
    _every_address_denied(r, st, "address_blacklisted")
    assert st.address(SOV + "11")[0][1:3] == ("deny", "address_blacklisted"), r.show()
    assert not st.targets, r.show()
    assert not fednet.touched_since(mark)


# --- sovereign_ranges as a file ---------------------------------------------------------------
def test_sovereign_ranges_file(fednet, tmp_path):
    lst = tmp_path / "sovereign.txt"
    lst.write_text("# the test network's sovereign ranges\n127.0.5.0/24\n::1/128\n")
    cfg = fednet.config(tmp_path / "file.yaml", sovereign=str(lst))
    r = policy_check(cfg, "127.0.5.77")
    st = Steps(r.out)
    _allow(r, st)
    assert str(lst) in (st.addresses[0][3] or ""), \
        "the allow line does not say which file allowed it\n%s" % r.show()
    r = policy_check(cfg, "127.0.6.1")
    _deny(r, Steps(r.out), "address_not_sovereign")


@pytest.mark.parametrize("bad", ["not-a-cidr", "10.1.0.0/8", "127.0.5.0/33", "127.0.5.0/24 x"])
def test_sovereign_ranges_file_bad_line(fednet, tmp_path, bad):
    lst = tmp_path / "sovereign.txt"
    lst.write_text("127.0.5.0/24\n::1/128\n%s\n127.0.7.0/24\n" % bad)
    cfg = fednet.config(tmp_path / "bad.yaml", sovereign=str(lst))
    r = policy_check(cfg, "127.0.5.77")
    assert r.rc == 2, "a bad line in sovereign_ranges: exit %d, want 2\n%s" % (r.rc, r.show())
    assert "%s:3:" % lst in r.err, "no '%s:3:' (FILE:LINE:) on stderr\n%s" % (lst, r.show())
    assert "decision: allow" not in r.out, r.show()


def test_sovereign_ranges_file_missing(fednet, tmp_path):
    lst = tmp_path / "nope.txt"
    cfg = fednet.config(tmp_path / "missing.yaml", sovereign=str(lst))
    r = policy_check(cfg, "127.0.5.77")
    assert r.rc == 2 and str(lst) in r.err, r.show()


# --- usage ---------------------------------------------------------------------------------------
def test_policy_check_usage(fednet, fedcfg, tmp_path):
    for args in (["policy", "check", "-c", fedcfg], ["policy", "check", "-c", fedcfg, "a", "b"],
                 ["policy", "check", "-c", tmp_path / "none.yaml", "127.0.5.77"],
                 ["policy", "frobnicate", "-c", fedcfg, "127.0.5.77"]):
        r = chappe(args)
        assert r.rc == 2, "exit %d, want 2 (usage/config error)\n%s" % (r.rc, r.show())
        assert r.err.strip(), "exit 2 without a word on stderr\n%s" % r.show()
        assert "unknown command 'policy'" not in r.err, "chappe has no policy command\n%s" % (
            r.show())
    bad = tmp_path / "unknown.yaml"
    fednet.config(bad, raw="bogus_key: 1\n")
    r = policy_check(bad, "127.0.5.77")
    assert r.rc == 2 and "%s:" % bad in r.err, r.show()


# --- addresses outside sovereign_ranges ---------------------------------------------------------
def test_foreign_address_explicit_port(fednet, fedcfg):
    mark = fednet.mark()
    r = policy_check(fedcfg, n("foreign") + ":8466")
    st = Steps(r.out)
    _every_address_denied(r, st, "address_not_sovereign")
    a = st.address(FOREIGN + "10")
    assert a and a[0][1:3] == ("deny", "address_not_sovereign"), \
        "no 'address 127.0.6.10: deny address_not_sovereign' line\n%s" % r.show()
    assert not st.targets, r.show()
    f = fed_request(fedcfg, "GET", n("foreign") + ":8466", VERSION_PATH)
    assert f.rc == 1, "fed-request to a foreign address: exit %d, want 1\n%s" % (f.rc,
                                                                                f.show())
    assert "HTTP/1.1" not in f.out and Steps(f.err).errors, f.show()
    assert not [c for c in Steps(f.err).connects if c[0].startswith(FOREIGN)], f.show()
    _no_foreign_connection(fednet, mark, f)


def test_foreign_address_no_port(fednet, fedcfg):
    """Without a port the .well-known fetch would go to the same foreign address: denied too."""
    mark = fednet.mark()
    r = policy_check(fedcfg, n("foreign"))
    st = Steps(r.out)
    _every_address_denied(r, st, "address_not_sovereign")
    assert all(a[1:3] == ("deny", "address_not_sovereign") for a in st.address(FOREIGN + "10")) \
        and st.address(FOREIGN + "10"), r.show()
    f = fed_request(fedcfg, "GET", n("foreign"), VERSION_PATH)
    assert f.rc == 1, f.show()
    _no_foreign_connection(fednet, mark, f)


def test_wellknown_delegates_to_foreign(fednet, fedcfg):
    mark = fednet.mark()
    r = policy_check(fedcfg, n("wk-foreign"))
    st = Steps(r.out)
    _every_address_denied(r, st, "address_not_sovereign")
    assert st.address(FOREIGN + "20")[0][1:3] == ("deny", "address_not_sovereign"), r.show()
    f = fed_request(fedcfg, "GET", n("wk-foreign"), VERSION_PATH)
    assert f.rc == 1, f.show()
    _no_foreign_connection(fednet, mark, f)


def test_mixed_addresses_only_sovereign_used(fednet, fedcfg):
    mark = fednet.mark()
    name = n("mixed") + ":8464"
    r = policy_check(fedcfg, name)
    st = Steps(r.out)
    _allow(r, st)
    assert st.address(FOREIGN + "11")[0][1:3] == ("deny", "address_not_sovereign"), r.show()
    assert st.address(SOV + "51")[0][1] == "allow", r.show()
    assert st.targets == [(SOV + "51", 8464, name, n("mixed"))], r.show()
    f = fed_request(fedcfg, "GET", name, VERSION_PATH)
    assert f.rc == 0 and parse_response(f.out)[0] == 200, f.show()
    assert len(fednet.seen_since(mark, SOV + "51", 8464)) == 1, fednet.summary(mark)
    _no_foreign_connection(fednet, mark, f)


# --- DNS rebinding -----------------------------------------------------------------------------
def _check_rebind_run(net, mark, run, steps):
    """Whatever chappe decided: no foreign address connected; every address connected (seen by
    the servers, and in connect lines) is one this run printed as allowed."""
    touched = _no_foreign_connection(net, mark, run)
    allowed = steps.allowed_addresses()
    for addr, _port in touched:
        assert addr in allowed, "connected to %s, never printed as allowed\n%s" % (addr,
                                                                                 run.show())
    for c in steps.connects:
        assert c[0] in allowed, "connect line to %s, never printed as allowed\n%s" % (
            c[0], run.show())
    assert run.rc in (0, 1), run.show()


def test_dns_rebinding_explicit_port(fednet, rebind_dns, tmp_path):
    cfg = fednet.config(tmp_path / "rebind.yaml", dns_port=rebind_dns.port)
    name = n("rebind") + ":8448"
    mark = fednet.mark()
    r = policy_check(cfg, name)
    st = Steps(r.out)
    assert rebind_dns.answers, "chappe did not use the rebinding DNS server\n%s" % r.show()
    _check_rebind_run(fednet, mark, r, st)
    # fed-request when the first answer is sovereign and any later one foreign
    rebind_dns.reset()
    mark = fednet.mark()
    f = fed_request(cfg, "GET", name, VERSION_PATH)
    _check_rebind_run(fednet, mark, f, Steps(f.err))
    if f.rc == 0:
        assert len(fednet.seen_since(mark, SOV + "50", 8448)) == 1, fednet.summary(mark)
    # and when every answer is foreign from the start
    mark = fednet.mark()
    f = fed_request(cfg, "GET", name, VERSION_PATH)
    assert f.rc == 1, "only foreign answers left: exit %d, want 1\n%s" % (f.rc, f.show())
    _check_rebind_run(fednet, mark, f, Steps(f.err))


def test_dns_rebinding_between_wellknown_and_connect(fednet, rebind_dns, tmp_path):
    """The name resolves to a sovereign address for the .well-known fetch, then to a foreign
    one: a fresh answer must be checked again."""
    cfg = fednet.config(tmp_path / "rebind2.yaml", dns_port=rebind_dns.port)
    mark = fednet.mark()
    f = fed_request(cfg, "GET", n("rebind2"), VERSION_PATH)
    assert any(q[1] == n("rebind2") for q in rebind_dns.queries), f.show()
    _check_rebind_run(fednet, mark, f, Steps(f.err))
    rebind_dns.reset()
    mark = fednet.mark()
    r = policy_check(cfg, n("rebind2"))
    _check_rebind_run(fednet, mark, r, Steps(r.out))


def test_nothing_resolves_is_no_address(fednet, fedcfg):
    """An allowlisted name with no .well-known, no SRV and no A/AAAA: deny no_address, after
    the whole discovery chain was tried."""
    r = policy_check(fedcfg, "nothing-here.chappe.test")
    st = Steps(r.out)
    assert r.rc == 1, r.show()
    assert st.decision == ("deny", "no_address"), r.show()
    assert "srv _matrix-fed._tcp.nothing-here.chappe.test: none" in r.out, r.show()
    assert "srv _matrix._tcp.nothing-here.chappe.test: none" in r.out, r.show()
