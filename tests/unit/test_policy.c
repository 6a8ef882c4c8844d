/* test_policy.c -- server-name grammar, name allowlist, address decisions and their order. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>

#include <cmocka.h>

#include "chappe/buf.h"
#include "chappe/config.h"
#include "chappe/policy.h"
#include "chappe/util.h"

/* ---- server names ---- */

/* The rule texts of denials that no configured rule decided. */
#define NOMATCH "no federation_domain_whitelist entry matches"
#define UNSPEC  "0.0.0.0 and :: are never allowed"
#define OUTSIDE "outside sovereign_ranges"

static void expect_name(const char *s, enum server_host_type type, const char *host, uint16_t port,
                        const char *name)
{
    struct server_name sn;
    const char *why = NULL;
    if (server_name_parse(s, strlen(s), &sn, &why))
        fail_msg("rejected \"%s\": %s", s, why);
    assert_int_equal(sn.type, type);
    assert_string_equal(sn.host, host);
    assert_int_equal(sn.port, port);
    assert_string_equal(sn.name, name);
    if (type == SERVER_HOST_DNS) {
        assert_int_equal(sn.family, 0);
        return;
    }
    int family = type == SERVER_HOST_IPV4 ? 4 : 6;
    uint8_t a[16] = {0};
    assert_int_equal(inet_pton(family == 4 ? AF_INET : AF_INET6, host, a), 1);
    assert_int_equal(sn.family, family);
    assert_memory_equal(sn.addr, a, 16);
}

static void expect_bad_name_n(const char *s, size_t n, const char *why_part)
{
    struct server_name sn, zero;
    memset(&sn, 0x5a, sizeof(sn));
    memset(&zero, 0, sizeof(zero));
    const char *why = NULL;
    if (server_name_parse(s, n, &sn, &why) != CH_EINVAL)
        fail_msg("accepted \"%.*s\"", (int)n, s);
    assert_non_null(why);
    if (strstr(why, why_part) == NULL)
        fail_msg("\"%.*s\": why \"%s\" lacks \"%s\"", (int)n, s, why, why_part);
    assert_memory_equal(&sn, &zero, sizeof(sn));
}

static void expect_bad_name(const char *s, const char *why_part)
{
    expect_bad_name_n(s, strlen(s), why_part);
}

static void test_server_name_valid(void **state)
{
    (void)state;
    expect_name("example.com", SERVER_HOST_DNS, "example.com", 0, "example.com");
    expect_name("Example.COM:8448", SERVER_HOST_DNS, "example.com", 8448, "example.com:8448");
    expect_name("localhost", SERVER_HOST_DNS, "localhost", 0, "localhost");
    expect_name("a", SERVER_HOST_DNS, "a", 0, "a");
    expect_name("a:1", SERVER_HOST_DNS, "a", 1, "a:1");
    expect_name("a-b.c", SERVER_HOST_DNS, "a-b.c", 0, "a-b.c");
    expect_name("a--b.example", SERVER_HOST_DNS, "a--b.example", 0, "a--b.example");
    expect_name("xn--bcher-kva.example", SERVER_HOST_DNS, "xn--bcher-kva.example", 0,
                "xn--bcher-kva.example");
    expect_name("matrix.org:65535", SERVER_HOST_DNS, "matrix.org", 65535, "matrix.org:65535");
    expect_name("1.2.3.com", SERVER_HOST_DNS, "1.2.3.com", 0, "1.2.3.com");
    expect_name("123.example", SERVER_HOST_DNS, "123.example", 0, "123.example");
    expect_name("a.1", SERVER_HOST_DNS, "a.1", 0, "a.1");
    expect_name("1.2.3.4.example", SERVER_HOST_DNS, "1.2.3.4.example", 0, "1.2.3.4.example");
    expect_name("1.2.3.4", SERVER_HOST_IPV4, "1.2.3.4", 0, "1.2.3.4");
    expect_name("1.2.3.4:8448", SERVER_HOST_IPV4, "1.2.3.4", 8448, "1.2.3.4:8448");
    expect_name("0.0.0.0", SERVER_HOST_IPV4, "0.0.0.0", 0, "0.0.0.0");
    expect_name("255.255.255.255:1", SERVER_HOST_IPV4, "255.255.255.255", 1, "255.255.255.255:1");
    expect_name("[::1]", SERVER_HOST_IPV6, "::1", 0, "[::1]");
    expect_name("[::1]:8448", SERVER_HOST_IPV6, "::1", 8448, "[::1]:8448");
    expect_name("[2001:DB8::1]:65535", SERVER_HOST_IPV6, "2001:db8::1", 65535,
                "[2001:db8::1]:65535");
    expect_name("[2001:db8:0:0:0:0:0:1]", SERVER_HOST_IPV6, "2001:db8:0:0:0:0:0:1", 0,
                "[2001:db8:0:0:0:0:0:1]");
    /* A mapped literal is still an IPv6 literal; the address checks fold it. */
    expect_name("[::ffff:1.2.3.4]", SERVER_HOST_IPV6, "::ffff:1.2.3.4", 0, "[::ffff:1.2.3.4]");

    /* Labels of 63 bytes and a host of exactly 255 bytes. */
    char l63[64], h255[256], in[300];
    memset(l63, 'a', 63);
    l63[63] = '\0';
    snprintf(h255, sizeof(h255), "%s.%s.%s.%s", l63, l63, l63, l63);
    assert_int_equal(strlen(h255), 255);
    expect_name(h255, SERVER_HOST_DNS, h255, 0, h255);
    snprintf(in, sizeof(in), "%s:65535", h255);
    expect_name(in, SERVER_HOST_DNS, h255, 65535, in);
}

static void test_server_name_invalid(void **state)
{
    (void)state;
    expect_bad_name("", "empty server name");
    expect_bad_name_n(NULL, 0, "empty server name");
    expect_bad_name("example.com.", "trailing dot");
    expect_bad_name("example.com.:8448", "trailing dot");
    expect_bad_name("a..b", "empty label");
    expect_bad_name(".a", "empty label");
    expect_bad_name(".", "empty label");
    expect_bad_name("-a.com", "'-'");
    expect_bad_name("a-.com", "'-'");
    expect_bad_name("a.-com", "'-'");
    expect_bad_name("a_b.com", "invalid character");
    expect_bad_name("_matrix._tcp.example.com", "invalid character");
    expect_bad_name("a b", "invalid character");
    expect_bad_name(" a", "invalid character");
    expect_bad_name("a\t", "invalid character");
    expect_bad_name_n("a\0b", 3, "invalid character");
    expect_bad_name_n("a.com\0", 6, "invalid character");
    expect_bad_name("\xc3\xa9.fr", "invalid character");
    expect_bad_name("user@host", "invalid character");
    expect_bad_name("a/b", "invalid character");
    expect_bad_name("a%b", "invalid character");
    expect_bad_name("a*.com", "invalid character");
    expect_bad_name("a.com:0", "port out of range");
    expect_bad_name("a.com:65536", "port out of range");
    expect_bad_name("a.com:99999", "port out of range");
    expect_bad_name("a.com:123456", "port out of range");
    expect_bad_name("a.com:080", "leading zero in port");
    expect_bad_name("a.com:00", "leading zero in port");
    expect_bad_name("a.com:", "empty port");
    expect_bad_name("a.com:8a", "invalid port");
    expect_bad_name("a.com:+80", "invalid port");
    expect_bad_name("a.com:8448 ", "invalid port");
    expect_bad_name("a.com: 8448", "invalid port");
    expect_bad_name(":8448", "empty host");
    expect_bad_name("::1", "must be in brackets");
    expect_bad_name("2001:db8::1", "must be in brackets");
    expect_bad_name("a.com:1:2", "must be in brackets");
    expect_bad_name("[1.2.3.4]", "invalid IPv6 literal");
    expect_bad_name("[example.com]", "invalid IPv6 literal");
    expect_bad_name("[]", "invalid IPv6 literal");
    expect_bad_name("[::g]", "invalid IPv6 literal");
    expect_bad_name("[:::]", "invalid IPv6 literal");
    expect_bad_name("[ ::1]", "invalid IPv6 literal");
    expect_bad_name("[::1", "missing ']'");
    expect_bad_name("[", "missing ']'");
    expect_bad_name("[fe80::1%eth0]", "zone id");
    expect_bad_name("[fe80::1%25eth0]:8448", "zone id");
    expect_bad_name("[::1]x", "after IPv6 literal");
    expect_bad_name("[::1]]", "after IPv6 literal");
    expect_bad_name("[::1]:", "empty port");
    expect_bad_name("[::1]:0", "port out of range");
    expect_bad_name("[::1]:1:2", "invalid port");
    expect_bad_name("1.2.3", "invalid IPv4");
    expect_bad_name("1.2.3.256", "invalid IPv4");
    expect_bad_name("01.2.3.4", "invalid IPv4");
    expect_bad_name("1.2.3.04:8448", "invalid IPv4");
    expect_bad_name("1.2.3.4.5", "invalid IPv4");
    expect_bad_name("123", "invalid IPv4");
    expect_bad_name("0", "invalid IPv4");
    expect_bad_name("4294967295", "invalid IPv4");

    char l64[65], h256[300];
    memset(l64, 'a', 64);
    l64[64] = '\0';
    expect_bad_name(l64, "label longer than 63");
    snprintf(h256, sizeof(h256), "%.63s.%.63s.%.63s.%.63s0", l64, l64, l64, l64);
    assert_int_equal(strlen(h256), 256);
    expect_bad_name(h256, "longer than 255");
}

/* Every byte outside the grammar, alone in a name, is refused. */
static void test_server_name_bytes(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        char s[8] = {'a', (char)c, 'b'};
        struct server_name sn;
        const char *why = NULL;
        int ok = server_name_parse(s, 3, &sn, &why) == 0;
        int allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.';
        if (ok != allowed)
            fail_msg("byte 0x%02x: %s", c, ok ? "accepted" : why);
        if (ok && c >= 'A' && c <= 'Z')
            assert_int_equal(sn.host[1], c - 'A' + 'a');
    }
}

/* ---- the policy ---- */

static struct cfg_cidr item(const char *text, const char *label)
{
    struct cfg_cidr c = {.label = (char *)label};
    const char *why = NULL;
    if (cidr_parse(text, strlen(text), &c.cidr, &why))
        fail_msg("bad test prefix %s: %s", text, why);
    return c;
}

static struct policy *make(const struct config *cfg)
{
    struct policy *p = NULL;
    struct buf err = BUF_INIT;
    int rc = policy_new(cfg, &p, &err);
    if (rc) {
        buf_append(&err, "", 1);
        fail_msg("policy_new: %d: %s", rc, buf_data(&err));
    }
    assert_int_equal(err.len, 0);
    buf_free(&err);
    return p;
}

static void expect_decision(struct policy_decision d, bool allow, enum policy_reason reason,
                            const char *rule)
{
    if (d.allow != allow || d.reason != reason || strcmp(d.rule, rule) != 0)
        fail_msg("got %s %s \"%s\", want %s %s \"%s\"", d.allow ? "allow" : "deny",
                 policy_reason_code(d.reason), d.rule, allow ? "allow" : "deny",
                 policy_reason_code(reason), rule);
}

static void expect_name_decision(const struct policy *p, const char *name, bool allow,
                                 enum policy_reason reason, const char *rule)
{
    struct policy_decision d = policy_check_name_str(p, name, strlen(name));
    if (d.allow != allow || d.reason != reason || strcmp(d.rule, rule) != 0)
        fail_msg("%s: got %s %s \"%s\", want %s %s \"%s\"", name, d.allow ? "allow" : "deny",
                 policy_reason_code(d.reason), d.rule, allow ? "allow" : "deny",
                 policy_reason_code(reason), rule);
    /* The parsed form decides the same. */
    struct server_name sn;
    const char *why;
    if (server_name_parse(name, strlen(name), &sn, &why) == 0)
        expect_decision(policy_check_name(p, &sn), allow, reason, rule);
}

static void expect_ip(const struct policy *p, const char *ip, bool allow, enum policy_reason reason,
                      const char *rule)
{
    uint8_t a[16] = {0};
    int family = strchr(ip, ':') ? 6 : 4;
    /* Raw bytes (mapped IPv6 stays IPv6 here, to test the folding in the policy). */
    assert_int_equal(inet_pton(family == 4 ? AF_INET : AF_INET6, ip, a), 1);
    struct policy_decision d = policy_check_ip(p, family, a);
    if (d.allow != allow || d.reason != reason || strcmp(d.rule, rule) != 0)
        fail_msg("%s: got %s %s \"%s\", want %s %s \"%s\"", ip, d.allow ? "allow" : "deny",
                 policy_reason_code(d.reason), d.rule, allow ? "allow" : "deny",
                 policy_reason_code(reason), rule);
    /* And through a sockaddr. */
    struct sockaddr_storage ss = {0};
    if (family == 4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, a, 4);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, a, 16);
    }
    expect_decision(policy_check_addr(p, (struct sockaddr *)&ss), allow, reason, rule);
}

static struct cfg_name_rule name_rules[] = {
    {"*.gouv.fr", "t.yaml:3:5"},         {"matrix.org", "t.yaml:4:5"},
    {"example.com:8448", "t.yaml:5:5"},  {"1.2.3.4", "t.yaml:6:5"},
    {"[2001:db8::1]:443", "t.yaml:7:5"}, {"*.tchap.example:8448", NULL},
};

static void test_names(void **state)
{
    (void)state;
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.federation_domain_whitelist = name_rules;
    cfg.nfederation_domain_whitelist = ARRAY_LEN(name_rules);
    struct policy *p = make(&cfg);
    assert_false(policy_any_name(p));
    assert_false(policy_any_address(p));

    const char *gouv = "federation_domain_whitelist *.gouv.fr (t.yaml:3:5)";
    expect_name_decision(p, "a.gouv.fr", true, POLICY_ALLOW_NAME, gouv);
    expect_name_decision(p, "a.b.gouv.fr", true, POLICY_ALLOW_NAME, gouv);
    expect_name_decision(p, "A.GOUV.FR:8448", true, POLICY_ALLOW_NAME, gouv);
    expect_name_decision(p, "x.gouv.fr:1", true, POLICY_ALLOW_NAME, gouv);
    expect_name_decision(p, "gouv.fr", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);
    expect_name_decision(p, "evilgouv.fr", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);
    expect_name_decision(p, "a.evilgouv.fr", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);
    expect_name_decision(p, "gouv.fr.evil.com", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);
    expect_name_decision(p, "a.gouv.fr.evil", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);
    expect_name_decision(p, "fr", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);

    const char *morg = "federation_domain_whitelist matrix.org (t.yaml:4:5)";
    expect_name_decision(p, "matrix.org", true, POLICY_ALLOW_NAME, morg);
    expect_name_decision(p, "MATRIX.org:1234", true, POLICY_ALLOW_NAME, morg);
    expect_name_decision(p, "a.matrix.org", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);
    expect_name_decision(p, "matrix.org.uk", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);

    const char *ex = "federation_domain_whitelist example.com:8448 (t.yaml:5:5)";
    expect_name_decision(p, "example.com:8448", true, POLICY_ALLOW_NAME, ex);
    expect_name_decision(p, "example.com", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);
    expect_name_decision(p, "example.com:8449", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);

    const char *ip4 = "federation_domain_whitelist 1.2.3.4 (t.yaml:6:5)";
    expect_name_decision(p, "1.2.3.4", true, POLICY_ALLOW_NAME, ip4);
    expect_name_decision(p, "1.2.3.4:80", true, POLICY_ALLOW_NAME, ip4);
    expect_name_decision(p, "1.2.3.5", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);
    expect_name_decision(p, "[::ffff:1.2.3.4]", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);

    const char *ip6 = "federation_domain_whitelist [2001:db8::1]:443 (t.yaml:7:5)";
    expect_name_decision(p, "[2001:db8::1]:443", true, POLICY_ALLOW_NAME, ip6);
    expect_name_decision(p, "[2001:DB8:0::1]:443", true, POLICY_ALLOW_NAME, ip6);
    expect_name_decision(p, "[2001:db8::1]", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);
    expect_name_decision(p, "[2001:db8::2]:443", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);

    /* A wildcard with a port (no label: no parentheses). */
    const char *tchap = "federation_domain_whitelist *.tchap.example:8448";
    expect_name_decision(p, "a.tchap.example:8448", true, POLICY_ALLOW_NAME, tchap);
    expect_name_decision(p, "a.tchap.example", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);

    expect_name_decision(p, "a..gouv.fr", false, POLICY_INVALID_SERVER_NAME,
                         "empty label in server name");
    expect_name_decision(p, "a.gouv.fr.", false, POLICY_INVALID_SERVER_NAME,
                         "trailing dot in server name");
    expect_name_decision(p, "", false, POLICY_INVALID_SERVER_NAME, "empty server name");
    expect_name_decision(p, "a_b.gouv.fr", false, POLICY_INVALID_SERVER_NAME,
                         "invalid character in server name");
    policy_unref(p);
}

static void test_names_any_and_none(void **state)
{
    (void)state;
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    struct policy *p = make(&cfg);
    expect_name_decision(p, "matrix.org", false, POLICY_NAME_NOT_ALLOWED, NOMATCH);
    policy_unref(p);

    cfg.federation_any = true;
    p = make(&cfg);
    assert_true(policy_any_name(p));
    expect_name_decision(p, "anything.example:1", true, POLICY_ALLOW_ANY_NAME,
                         "federation_domain_whitelist any");
    expect_name_decision(p, "[::1]", true, POLICY_ALLOW_ANY_NAME,
                         "federation_domain_whitelist any");
    expect_name_decision(p, "bad..name", false, POLICY_INVALID_SERVER_NAME,
                         "empty label in server name");
    policy_unref(p);
}

static void test_bad_name_rules(void **state)
{
    (void)state;
    struct cfg_name_rule bad[] = {
        {"ok.example", "c.yaml:1:3"}, {"exa mple.com", "c.yaml:2:3"}, {"*.", "c.yaml:3:3"},
        {"*.1.2.3.4", "c.yaml:4:3"},  {"*.[::1]", "c.yaml:5:3"},      {"a.com:0", NULL},
    };
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.federation_domain_whitelist = bad;
    cfg.nfederation_domain_whitelist = ARRAY_LEN(bad);
    struct policy *p = (struct policy *)&cfg; /* must be reset to NULL */
    struct buf err = BUF_INIT;
    assert_int_equal(policy_new(&cfg, &p, &err), CH_EINVAL);
    assert_null(p);
    buf_append(&err, "", 1);
    assert_string_equal(
        buf_data(&err),
        "c.yaml:2:3: federation_domain_whitelist entry \"exa mple.com\": invalid character in "
        "server name\n"
        "c.yaml:3:3: federation_domain_whitelist entry \"*.\": empty server name\n"
        "c.yaml:4:3: federation_domain_whitelist entry \"*.1.2.3.4\": a wildcard needs a DNS "
        "name after \"*.\"\n"
        "c.yaml:5:3: federation_domain_whitelist entry \"*.[::1]\": a wildcard needs a DNS name "
        "after \"*.\"\n"
        "config: federation_domain_whitelist entry \"a.com:0\": port out of range\n");
    buf_free(&err);
}

static void test_default_blacklist_table(void **state)
{
    (void)state;
    static const char *const want[] = {
        "127.0.0.0/8",     "10.0.0.0/8",     "172.16.0.0/12",  "192.168.0.0/16", "100.64.0.0/10",
        "192.0.0.0/24",    "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15",  "192.0.2.0/24",
        "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",    "::1/128",        "fe80::/10",
        "fc00::/7",        "2001:db8::/32",  "ff00::/8",       "fec0::/10",
    };
    size_t i = 0;
    for (; policy_default_blacklist[i]; i++) {
        assert_true(i < ARRAY_LEN(want));
        assert_string_equal(policy_default_blacklist[i], want[i]);
        struct cidr c;
        const char *why = NULL;
        const char *s = policy_default_blacklist[i];
        if (cidr_parse(s, strlen(s), &c, &why))
            fail_msg("%s: %s", s, why);
    }
    assert_int_equal(i, ARRAY_LEN(want));
}

static void test_addresses_default_blacklist(void **state)
{
    (void)state;
    struct cfg_cidr sov[] = {
        item("10.0.0.0/8", "s.yaml:10:5"),    item("127.0.0.0/8", "s.yaml:11:5"),
        item("192.0.2.0/24", "s.yaml:12:5"),  item("198.51.100.0/24", "s.yaml:13:5"),
        item("2a01:e00::/26", "s.yaml:14:5"), item("fe80::/10", "s.yaml:15:5"),
        item("2002::/16", "s.yaml:16:5"),     item("0.0.0.0/0", NULL),
    };
    struct cfg_cidr wl[] = {item("127.0.0.1", "w.yaml:20:5"), item("192.168.1.0/24", "w.yaml:21:5"),
                            item("0.0.0.0/0", "w.yaml:22:5")};
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.sovereign_ranges = (struct cfg_ranges){.present = true, .items = sov, .nitems = 7};
    cfg.ip_range_whitelist = (struct cfg_ranges){.present = true, .items = wl, .nitems = 2};
    struct policy *p = make(&cfg);

    /* Unspecified first, whatever the lists say. */
    expect_ip(p, "0.0.0.0", false, POLICY_ADDRESS_UNSPECIFIED, UNSPEC);
    expect_ip(p, "::", false, POLICY_ADDRESS_UNSPECIFIED, UNSPEC);
    expect_ip(p, "::ffff:0.0.0.0", false, POLICY_ADDRESS_UNSPECIFIED, UNSPEC);

    /* The blacklist before sovereignty. */
    expect_ip(p, "10.1.2.3", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 10.0.0.0/8 (default)");
    expect_ip(p, "::ffff:10.1.2.3", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 10.0.0.0/8 (default)");
    expect_ip(p, "192.0.2.200", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 192.0.2.0/24 (default)");
    expect_ip(p, "172.31.255.255", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 172.16.0.0/12 (default)");
    expect_ip(p, "239.1.1.1", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 224.0.0.0/4 (default)");
    expect_ip(p, "fe80::1", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist fe80::/10 (default)");
    expect_ip(p, "fd00::1", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist fc00::/7 (default)");
    expect_ip(p, "::1", false, POLICY_ADDRESS_BLACKLISTED, "ip_range_blacklist ::1/128 (default)");
    expect_ip(p, "127.0.0.2", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 127.0.0.0/8 (default)");
    /* Blacklisted and not sovereign: blacklisted wins (checked first). */
    expect_ip(p, "100.64.0.1", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 100.64.0.0/10 (default)");

    /* The whitelist overrides the blacklist; both are named, then the sovereign range. */
    expect_ip(p, "127.0.0.1", true, POLICY_ALLOW_ADDRESS,
              "ip_range_blacklist 127.0.0.0/8 (default), ip_range_whitelist 127.0.0.1/32 "
              "(w.yaml:20:5), sovereign_ranges 127.0.0.0/8 (s.yaml:11:5)");

    /* 6to4 images of the IPv4 defaults. */
    expect_ip(p, "2002:7f00:1::", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 2002:7f00::/24 (default (6to4 of 127.0.0.0/8))");
    expect_ip(p, "2002:a01:203::1", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 2002:a00::/24 (default (6to4 of 10.0.0.0/8))");
    expect_ip(p, "2002:c000:2ff:ffff::", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 2002:c000:200::/40 (default (6to4 of 192.0.2.0/24))");
    expect_ip(p, "2002:e000::", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 2002:e000::/20 (default (6to4 of 224.0.0.0/4))");
    /* The whitelist entry has no 6to4 image: 127.0.0.1 via 6to4 stays blacklisted. */
    expect_ip(p, "2002:7f00:1::1", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 2002:7f00::/24 (default (6to4 of 127.0.0.0/8))");
    /* 6to4 of a public address is not blacklisted. */
    expect_ip(p, "2002:808:808::1", true, POLICY_ALLOW_ADDRESS,
              "sovereign_ranges 2002::/16 (s.yaml:16:5)");

    /* Sovereign but blacklisted. */
    expect_ip(p, "198.51.100.7", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 198.51.100.0/24 (default)");
    /* Whitelisted past the blacklist, yet outside sovereign_ranges. */
    expect_ip(p, "192.168.1.5", false, POLICY_ADDRESS_NOT_SOVEREIGN,
              "ip_range_blacklist 192.168.0.0/16 (default), ip_range_whitelist 192.168.1.0/24 "
              "(w.yaml:21:5), " OUTSIDE);
    /* Sovereign and clean. */
    expect_ip(p, "2a01:e00::1", true, POLICY_ALLOW_ADDRESS,
              "sovereign_ranges 2a01:e00::/26 (s.yaml:14:5)");
    expect_ip(p, "2a01:e3f:ffff::1", true, POLICY_ALLOW_ADDRESS,
              "sovereign_ranges 2a01:e00::/26 (s.yaml:14:5)");

    /* Not sovereign. */
    expect_ip(p, "8.8.8.8", false, POLICY_ADDRESS_NOT_SOVEREIGN, OUTSIDE);
    expect_ip(p, "::ffff:8.8.8.8", false, POLICY_ADDRESS_NOT_SOVEREIGN, OUTSIDE);
    expect_ip(p, "2a01:e40::1", false, POLICY_ADDRESS_NOT_SOVEREIGN, OUTSIDE);
    expect_ip(p, "2001:4860::8888", false, POLICY_ADDRESS_NOT_SOVEREIGN, OUTSIDE);

    /* Families nobody knows. */
    uint8_t a[16] = {8, 8, 8, 8};
    expect_decision(policy_check_ip(p, 5, a), false, POLICY_ADDRESS_NOT_SOVEREIGN, "");
    struct sockaddr sa = {.sa_family = AF_UNIX};
    expect_decision(policy_check_addr(p, &sa), false, POLICY_ADDRESS_NOT_SOVEREIGN, "");
    policy_unref(p);

    /* A whitelist of everything still leaves 0.0.0.0 and :: denied; sovereign still applies. */
    cfg.ip_range_whitelist.items = wl;
    cfg.ip_range_whitelist.nitems = 3;
    cfg.sovereign_ranges.nitems = 8; /* adds 0.0.0.0/0 */
    p = make(&cfg);
    expect_ip(p, "0.0.0.0", false, POLICY_ADDRESS_UNSPECIFIED, UNSPEC);
    expect_ip(p, "::", false, POLICY_ADDRESS_UNSPECIFIED, UNSPEC);
    expect_ip(p, "10.1.2.3", true, POLICY_ALLOW_ADDRESS,
              "ip_range_blacklist 10.0.0.0/8 (default), ip_range_whitelist 0.0.0.0/0 "
              "(w.yaml:22:5), sovereign_ranges 10.0.0.0/8 (s.yaml:10:5)");
    expect_ip(p, "100.64.0.1", true, POLICY_ALLOW_ADDRESS,
              "ip_range_blacklist 100.64.0.0/10 (default), ip_range_whitelist 0.0.0.0/0 "
              "(w.yaml:22:5), sovereign_ranges 0.0.0.0/0");
    /* The IPv4 whitelist says nothing about IPv6. */
    expect_ip(p, "fd00::1", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist fc00::/7 (default)");
    policy_unref(p);
}

static void test_addresses_explicit_blacklist(void **state)
{
    (void)state;
    struct cfg_cidr sov[] = {item("10.0.0.0/8", "s:1"), item("203.0.113.0/24", "s:2")};
    struct cfg_cidr bl[] = {item("203.0.113.0/24", "b:1:1"), item("2001:db8::/32", "b:2:1")};
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.sovereign_ranges = (struct cfg_ranges){.present = true, .items = sov, .nitems = 2};
    cfg.ip_range_blacklist = (struct cfg_ranges){.present = true, .items = bl, .nitems = 2};
    struct policy *p = make(&cfg);
    /* The defaults are replaced, not extended. */
    expect_ip(p, "10.1.2.3", true, POLICY_ALLOW_ADDRESS, "sovereign_ranges 10.0.0.0/8 (s:1)");
    expect_ip(p, "203.0.113.9", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 203.0.113.0/24 (b:1:1)");
    expect_ip(p, "2002:cb00:7109::", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 2002:cb00:7100::/40 (b:1:1 (6to4 of 203.0.113.0/24))");
    expect_ip(p, "2001:db8::1", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 2001:db8::/32 (b:2:1)");
    expect_ip(p, "127.0.0.1", false, POLICY_ADDRESS_NOT_SOVEREIGN, OUTSIDE);
    expect_ip(p, "0.0.0.0", false, POLICY_ADDRESS_UNSPECIFIED, UNSPEC);
    policy_unref(p);

    /* An explicit empty blacklist: only 0.0.0.0 and :: are always refused. */
    cfg.ip_range_blacklist.nitems = 0;
    cfg.sovereign_ranges.any = true;
    cfg.sovereign_ranges.nitems = 0;
    p = make(&cfg);
    assert_true(policy_any_address(p));
    expect_ip(p, "127.0.0.1", true, POLICY_ALLOW_ANY_ADDRESS, "sovereign_ranges any");
    expect_ip(p, "2002:7f00::1", true, POLICY_ALLOW_ANY_ADDRESS, "sovereign_ranges any");
    expect_ip(p, "::", false, POLICY_ADDRESS_UNSPECIFIED, UNSPEC);
    policy_unref(p);

    /* sovereign_ranges: any with the default blacklist and a whitelist. */
    struct cfg_cidr wl[] = {item("10.0.0.0/16", "w:1")};
    memset(&cfg, 0, sizeof(cfg));
    cfg.sovereign_ranges = (struct cfg_ranges){.present = true, .any = true};
    cfg.ip_range_whitelist = (struct cfg_ranges){.present = true, .items = wl, .nitems = 1};
    p = make(&cfg);
    expect_ip(p, "8.8.8.8", true, POLICY_ALLOW_ANY_ADDRESS, "sovereign_ranges any");
    expect_ip(p, "10.1.0.1", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 10.0.0.0/8 (default)");
    expect_ip(p, "10.0.0.1", true, POLICY_ALLOW_ANY_ADDRESS,
              "ip_range_blacklist 10.0.0.0/8 (default), ip_range_whitelist 10.0.0.0/16 (w:1), "
              "sovereign_ranges any");
    policy_unref(p);

    /* Nothing configured at all: every address is outside sovereign_ranges. */
    memset(&cfg, 0, sizeof(cfg));
    p = make(&cfg);
    expect_ip(p, "8.8.8.8", false, POLICY_ADDRESS_NOT_SOVEREIGN, OUTSIDE);
    expect_ip(p, "127.0.0.1", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 127.0.0.0/8 (default)");
    policy_unref(p);
}

static char *write_temp(const char *content)
{
    char tmpl[] = "/tmp/chappe-test-policy-XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    size_t n = strlen(content);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    close(fd);
    return strdup(tmpl);
}

static void test_range_files(void **state)
{
    (void)state;
    char *sov = write_temp("# ours\n10.0.0.0/8\n2a01:e00::/26\n");
    char *bl = write_temp("10.9.0.0/16\n\n192.168.0.0/16 # lan\n");
    struct cfg_cidr blitem[] = {item("10.8.0.0/16", "c.yaml:9:7")};
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.sovereign_ranges = (struct cfg_ranges){.present = true, .file = sov};
    cfg.ip_range_blacklist =
        (struct cfg_ranges){.present = true, .file = bl, .items = blitem, .nitems = 1};
    struct policy *p = make(&cfg);
    char want[256];
    snprintf(want, sizeof(want), "sovereign_ranges 10.0.0.0/8 (%s:2)", sov);
    expect_ip(p, "10.1.2.3", true, POLICY_ALLOW_ADDRESS, want);
    snprintf(want, sizeof(want), "ip_range_blacklist 10.9.0.0/16 (%s:1)", bl);
    expect_ip(p, "10.9.2.3", false, POLICY_ADDRESS_BLACKLISTED, want);
    expect_ip(p, "10.8.2.3", false, POLICY_ADDRESS_BLACKLISTED,
              "ip_range_blacklist 10.8.0.0/16 (c.yaml:9:7)");
    snprintf(want, sizeof(want),
             "ip_range_blacklist 2002:c0a8::/32 (%s:3 (6to4 of 192.168.0.0/16))", bl);
    expect_ip(p, "2002:c0a8:101::", false, POLICY_ADDRESS_BLACKLISTED, want);
    /* The file replaced the defaults. */
    snprintf(want, sizeof(want), "sovereign_ranges 2a01:e00::/26 (%s:3)", sov);
    expect_ip(p, "2a01:e00::5", true, POLICY_ALLOW_ADDRESS, want);
    /* The blacklist file replaced the defaults: 127.0.0.1 is merely not sovereign. */
    expect_ip(p, "127.0.0.1", false, POLICY_ADDRESS_NOT_SOVEREIGN, OUTSIDE);
    policy_unref(p);

    unlink(sov);
    unlink(bl);
    free(sov);
    free(bl);
}

static void test_range_file_errors(void **state)
{
    (void)state;
    char *sov = write_temp("10.0.0.0/8\n10.1.0.0/8\nnot-an-ip\n");
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.sovereign_ranges = (struct cfg_ranges){.present = true, .file = sov};
    cfg.ip_range_whitelist = (struct cfg_ranges){.present = true, .file = "/nonexistent/wl.txt"};
    struct policy *p = NULL;
    struct buf err = BUF_INIT, want = BUF_INIT;
    assert_int_equal(policy_new(&cfg, &p, &err), CH_EINVAL);
    assert_null(p);
    buf_appendf(&want,
                "%s:2: invalid prefix \"10.1.0.0/8\": host bits set (did you mean 10.0.0.0/8?)\n"
                "%s:3: invalid prefix \"not-an-ip\": invalid character\n"
                "/nonexistent/wl.txt: No such file or directory\n",
                sov, sov);
    buf_append(&err, "", 1);
    buf_append(&want, "", 1);
    assert_string_equal(buf_data(&err), buf_data(&want));

    /* Only the unreadable file: CH_EIO. */
    cfg.sovereign_ranges.file = NULL;
    buf_reset(&err);
    assert_int_equal(policy_new(&cfg, &p, &err), CH_EIO);
    assert_null(p);
    buf_append(&err, "", 1);
    assert_string_equal(buf_data(&err), "/nonexistent/wl.txt: No such file or directory\n");

    /* `any` belongs to sovereign_ranges only. */
    memset(&cfg, 0, sizeof(cfg));
    cfg.ip_range_blacklist = (struct cfg_ranges){.present = true, .any = true, .where = "c:4:3"};
    buf_reset(&err);
    assert_int_equal(policy_new(&cfg, &p, &err), CH_EINVAL);
    buf_append(&err, "", 1);
    assert_string_equal(buf_data(&err), "c:4:3: ip_range_blacklist cannot be `any`\n");

    unlink(sov);
    free(sov);
    buf_free(&err);
    buf_free(&want);
}

static void test_reason_codes(void **state)
{
    (void)state;
    static const char *const want[POLICY_REASON_COUNT] = {
        "allow_name",          "allow_any_name",   "allow_address",         "allow_any_address",
        "invalid_server_name", "name_not_allowed", "address_not_sovereign", "address_blacklisted",
        "address_unspecified",
    };
    for (int r = 0; r < POLICY_REASON_COUNT; r++)
        assert_string_equal(policy_reason_code((enum policy_reason)r), want[r]);
    assert_string_equal(policy_reason_code(POLICY_REASON_COUNT), "unknown");
    assert_string_equal(policy_reason_code((enum policy_reason) - 1), "unknown");
}

static void test_counters(void **state)
{
    (void)state;
    uint64_t before = policy_counter(POLICY_INBOUND, POLICY_ADDRESS_BLACKLISTED);
    uint64_t other = policy_counter(POLICY_OUTBOUND, POLICY_ADDRESS_BLACKLISTED);
    policy_count(POLICY_INBOUND, POLICY_ADDRESS_BLACKLISTED);
    policy_count(POLICY_INBOUND, POLICY_ADDRESS_BLACKLISTED);
    policy_count(POLICY_DIRECTION_COUNT, POLICY_ADDRESS_BLACKLISTED); /* ignored */
    policy_count(POLICY_INBOUND, POLICY_REASON_COUNT);                /* ignored */
    assert_int_equal(policy_counter(POLICY_INBOUND, POLICY_ADDRESS_BLACKLISTED), before + 2);
    assert_int_equal(policy_counter(POLICY_OUTBOUND, POLICY_ADDRESS_BLACKLISTED), other);
    assert_int_equal(policy_counter(POLICY_DIRECTION_COUNT, POLICY_ALLOW_NAME), 0);
}

static void *ref_worker(void *arg)
{
    struct policy *p = arg;
    for (int i = 0; i < 20000; i++) {
        policy_ref(p);
        struct policy_decision d = policy_check_name_str(p, "a.gouv.fr", 9);
        if (!d.allow)
            abort();
        policy_unref(p);
    }
    policy_unref(p); /* the reference the spawner took for this thread */
    return NULL;
}

/* References taken and dropped from several threads; the last unref frees (LeakSanitizer). */
static void test_refcount_threads(void **state)
{
    (void)state;
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.federation_domain_whitelist = name_rules;
    cfg.nfederation_domain_whitelist = ARRAY_LEN(name_rules);
    struct policy *p = make(&cfg);
    pthread_t t[4];
    for (size_t i = 0; i < ARRAY_LEN(t); i++) {
        policy_ref(p);
        assert_int_equal(pthread_create(&t[i], NULL, ref_worker, p), 0);
    }
    policy_unref(p); /* the threads may now hold the last references */
    for (size_t i = 0; i < ARRAY_LEN(t); i++)
        pthread_join(t[i], NULL);
    policy_unref(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_name_valid),
        cmocka_unit_test(test_server_name_invalid),
        cmocka_unit_test(test_server_name_bytes),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_names_any_and_none),
        cmocka_unit_test(test_bad_name_rules),
        cmocka_unit_test(test_default_blacklist_table),
        cmocka_unit_test(test_addresses_default_blacklist),
        cmocka_unit_test(test_addresses_explicit_blacklist),
        cmocka_unit_test(test_range_files),
        cmocka_unit_test(test_range_file_errors),
        cmocka_unit_test(test_reason_codes),
        cmocka_unit_test(test_counters),
        cmocka_unit_test(test_refcount_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
