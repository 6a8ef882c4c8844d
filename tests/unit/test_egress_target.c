/* test_egress_target.c -- the egress listener's three request-target forms, and every refusal. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chappe/egress_target.h"
#include "chappe/policy.h"
#include "chappe/util.h"

#define MF  "matrix-federation://"
#define VER "/_matrix/federation/v1/version"

/*
 * Accepted as kind, destination dest_name (type, host, port) and path. The
 * path must be the very bytes at the end of the target, not a copy.
 */
static void expect_ok(const char *method, const char *target, enum egress_kind kind,
                      enum server_host_type type, const char *host, uint16_t port,
                      const char *dest_name, const char *path)
{
    struct egress_target t;
    const char *why = "unset";
    size_t tlen = strlen(target);
    int rc = egress_target_parse(method, strlen(method), target, tlen, &t, &why);
    if (rc != 0)
        fail_msg("%s %s: refused: %s", method, target, why ? why : "-");
    assert_null(why);
    assert_int_equal(t.kind, kind);
    assert_int_equal(t.dest.type, type);
    assert_string_equal(t.dest.host, host);
    assert_int_equal(t.dest.port, port);
    assert_string_equal(t.dest.name, dest_name);
    assert_int_equal(t.path.len, strlen(path));
    assert_memory_equal(t.path.base, path, t.path.len);
    if (kind == EGRESS_CONNECT) {
        assert_string_equal(t.path.base, "");
    } else {
        assert_ptr_equal(t.path.base, target + tlen - t.path.len);
    }
}

/* Refused with CH_EINVAL, *out zeroed, and a reason containing why_part. */
static void expect_refused_n(const char *method, const char *target, size_t tlen,
                             const char *why_part)
{
    struct egress_target t, zero;
    memset(&t, 0x5a, sizeof(t));
    memset(&zero, 0, sizeof(zero));
    const char *why = NULL;
    int rc = egress_target_parse(method, strlen(method), target, tlen, &t, &why);
    if (rc != CH_EINVAL)
        fail_msg("%s %.*s: rc %d, want CH_EINVAL", method, (int)tlen, target, rc);
    assert_int_equal(t.kind, EGRESS_NONE);
    assert_memory_equal(&t, &zero, sizeof(t));
    assert_non_null(why);
    if (strstr(why, why_part) == NULL)
        fail_msg("%s %.*s: why \"%s\" lacks \"%s\"", method, (int)tlen, target, why, why_part);
}

static void expect_refused(const char *method, const char *target, const char *why_part)
{
    expect_refused_n(method, target, strlen(target), why_part);
}

/* ---- form 1: matrix-federation:// ---- */

static void test_matrix_federation(void **state)
{
    (void)state;
    /* The example of issue 6, as Synapse writes it. */
    expect_ok("GET", MF "agent.finances.tchap.gouv.fr:8448" VER, EGRESS_MATRIX_FEDERATION,
              SERVER_HOST_DNS, "agent.finances.tchap.gouv.fr", 8448,
              "agent.finances.tchap.gouv.fr:8448", VER);
    /* No port: a server name still to be discovered. */
    expect_ok("PUT", MF "matrix.org/_matrix/federation/v1/send/1700000000000",
              EGRESS_MATRIX_FEDERATION, SERVER_HOST_DNS, "matrix.org", 0, "matrix.org",
              "/_matrix/federation/v1/send/1700000000000");
    expect_ok("GET", MF "192.0.2.10" VER, EGRESS_MATRIX_FEDERATION, SERVER_HOST_IPV4, "192.0.2.10",
              0, "192.0.2.10", VER);
    expect_ok("GET", MF "192.0.2.10:8448" VER, EGRESS_MATRIX_FEDERATION, SERVER_HOST_IPV4,
              "192.0.2.10", 8448, "192.0.2.10:8448", VER);
    expect_ok("GET", MF "[2001:db8::1]/_matrix/key/v2/server", EGRESS_MATRIX_FEDERATION,
              SERVER_HOST_IPV6, "2001:db8::1", 0, "[2001:db8::1]", "/_matrix/key/v2/server");
    expect_ok("GET", MF "[2001:DB8::1]:8448/_matrix/key/v2/server", EGRESS_MATRIX_FEDERATION,
              SERVER_HOST_IPV6, "2001:db8::1", 8448, "[2001:db8::1]:8448",
              "/_matrix/key/v2/server");
    /* Query strings as encode_query_args writes them. */
    expect_ok("GET",
              MF
              "matrix.org/_matrix/federation/v1/backfill/%21r%3Amatrix.org?v=%24e%3Aa.b&limit=10",
              EGRESS_MATRIX_FEDERATION, SERVER_HOST_DNS, "matrix.org", 0, "matrix.org",
              "/_matrix/federation/v1/backfill/%21r%3Amatrix.org?v=%24e%3Aa.b&limit=10");
    expect_ok("GET", MF "a.b/x?", EGRESS_MATRIX_FEDERATION, SERVER_HOST_DNS, "a.b", 0, "a.b",
              "/x?");
    expect_ok("GET", MF "a.b/", EGRESS_MATRIX_FEDERATION, SERVER_HOST_DNS, "a.b", 0, "a.b", "/");
    /* The authority is normalised; the path is not touched. */
    expect_ok("POST", MF "Matrix.ORG:443/_matrix/key/v2/Query", EGRESS_MATRIX_FEDERATION,
              SERVER_HOST_DNS, "matrix.org", 443, "matrix.org:443", "/_matrix/key/v2/Query");
    /* Every pchar and query character outside the alphanumerics. */
    expect_ok("GET", MF "a.b/-._~!$&'()*+,;=:@/?-._~!$&'()*+,;=:@/?", EGRESS_MATRIX_FEDERATION,
              SERVER_HOST_DNS, "a.b", 0, "a.b", "/-._~!$&'()*+,;=:@/?-._~!$&'()*+,;=:@/?");
    /* Any token method but CONNECT; the router decides which ones mean something. */
    expect_ok("HEAD", MF "a.b" VER, EGRESS_MATRIX_FEDERATION, SERVER_HOST_DNS, "a.b", 0, "a.b",
              VER);
    expect_ok("connect", MF "a.b" VER, EGRESS_MATRIX_FEDERATION, SERVER_HOST_DNS, "a.b", 0, "a.b",
              VER);
}

/* ---- form 2: https:// ---- */

static void test_https(void **state)
{
    (void)state;
    expect_ok("GET", "https://matrix.example.org:8448/_matrix/key/v2/server", EGRESS_HTTPS,
              SERVER_HOST_DNS, "matrix.example.org", 8448, "matrix.example.org:8448",
              "/_matrix/key/v2/server");
    expect_ok("GET", "https://matrix.example.org" VER, EGRESS_HTTPS, SERVER_HOST_DNS,
              "matrix.example.org", 0, "matrix.example.org", VER);
    expect_ok("GET", "https://198.51.100.7:443/x?a=b", EGRESS_HTTPS, SERVER_HOST_IPV4,
              "198.51.100.7", 443, "198.51.100.7:443", "/x?a=b");
    expect_ok("PUT", "https://[::1]:8448/_matrix/federation/v2/invite/%21r%3Aa.b/%24e",
              EGRESS_HTTPS, SERVER_HOST_IPV6, "::1", 8448, "[::1]:8448",
              "/_matrix/federation/v2/invite/%21r%3Aa.b/%24e");
    expect_ok("GET", "https://[::ffff:192.0.2.1]/x", EGRESS_HTTPS, SERVER_HOST_IPV6,
              "::ffff:192.0.2.1", 0, "[::ffff:192.0.2.1]", "/x");
}

/* RFC 3986 section 3.1: schemes compare case-insensitively. */
static void test_scheme_case(void **state)
{
    (void)state;
    expect_ok("GET", "HTTPS://a.b/x", EGRESS_HTTPS, SERVER_HOST_DNS, "a.b", 0, "a.b", "/x");
    expect_ok("GET", "hTtPs://a.b/x", EGRESS_HTTPS, SERVER_HOST_DNS, "a.b", 0, "a.b", "/x");
    expect_ok("GET", "Matrix-Federation://a.b/x", EGRESS_MATRIX_FEDERATION, SERVER_HOST_DNS, "a.b",
              0, "a.b", "/x");
    expect_ok("GET", "MATRIX-FEDERATION://a.b/x", EGRESS_MATRIX_FEDERATION, SERVER_HOST_DNS, "a.b",
              0, "a.b", "/x");
}

/* ---- form 3: CONNECT ---- */

static void test_connect(void **state)
{
    (void)state;
    expect_ok("CONNECT", "matrix.example.org:8448", EGRESS_CONNECT, SERVER_HOST_DNS,
              "matrix.example.org", 8448, "matrix.example.org:8448", "");
    expect_ok("CONNECT", "A.B:443", EGRESS_CONNECT, SERVER_HOST_DNS, "a.b", 443, "a.b:443", "");
    expect_ok("CONNECT", "192.0.2.10:443", EGRESS_CONNECT, SERVER_HOST_IPV4, "192.0.2.10", 443,
              "192.0.2.10:443", "");
    expect_ok("CONNECT", "[::1]:443", EGRESS_CONNECT, SERVER_HOST_IPV6, "::1", 443, "[::1]:443",
              "");
    expect_ok("CONNECT", "[2001:db8::1]:65535", EGRESS_CONNECT, SERVER_HOST_IPV6, "2001:db8::1",
              65535, "[2001:db8::1]:65535", "");
}

static void test_connect_refused(void **state)
{
    (void)state;
    expect_refused("CONNECT", "a.b", "without a port");
    expect_refused("CONNECT", "[::1]", "without a port");
    expect_refused("CONNECT", "192.0.2.1", "without a port");
    expect_refused("CONNECT", "a.b:", "empty port");
    expect_refused("CONNECT", "a.b:0", "port out of range");
    expect_refused("CONNECT", "a.b:65536", "port out of range");
    expect_refused("CONNECT", "a.b:0443", "leading zero");
    expect_refused("CONNECT", "a.b:443/x", "authority-form");
    expect_refused("CONNECT", "a.b:443?x", "authority-form");
    expect_refused("CONNECT", "a.b:443#x", "authority-form");
    expect_refused("CONNECT", "https://a.b:443/x", "authority-form");
    expect_refused("CONNECT", "https://a.b:443", "authority-form");
    expect_refused("CONNECT", MF "a.b:443/x", "authority-form");
    expect_refused("CONNECT", "/x", "authority-form");
    expect_refused("CONNECT", "", "empty target");
    expect_refused("CONNECT", "*", "invalid character");
    expect_refused("CONNECT", "user@a.b:443", "userinfo");
    expect_refused("CONNECT", "a.b@c.d:443", "userinfo");
    expect_refused("CONNECT", "a.b%2e:443", "percent-encoding");
    expect_refused("CONNECT", "[fe80::1%25eth0]:443", "zone id");
    expect_refused("CONNECT", "a.b.:443", "trailing dot");
    expect_refused("CONNECT", ":443", "empty host");
    expect_refused("CONNECT", "::1:443", "brackets");
    expect_refused("CONNECT", "a.b:443 ", "invalid port");
    expect_refused("CONNECT", " a.b:443", "invalid character");
    expect_refused("CONNECT", "a_b:443", "invalid character");
}

/* ---- refusals of the absolute forms ---- */

static void test_userinfo(void **state)
{
    (void)state;
    expect_refused("GET", MF "user@a.b/x", "userinfo");
    expect_refused("GET", MF "user:pw@a.b:8448/x", "userinfo");
    expect_refused("GET", "https://a.b@c.d/x", "userinfo");
    /* The Tchap lesson: one address checked, another used. */
    expect_refused("GET", "https://user@attacker.com@elysee.fr/x", "userinfo");
    expect_refused("GET", "https://@a.b/x", "userinfo");
    expect_refused("GET", "https://a.b@/x", "userinfo");
    /* A '@' in the path is a pchar (RFC 3986 section 3.3), the destination stays a.b. */
    expect_ok("GET", "https://a.b/x@c.d", EGRESS_HTTPS, SERVER_HOST_DNS, "a.b", 0, "a.b", "/x@c.d");
    /* WHATWG parsers read '\' as '/', RFC 3986 ones do not: neither gets a say here. */
    expect_refused("GET", "https://a.b\\@c.d/x", "userinfo");
    expect_refused("GET", "https://c.d\\.a.b/x", "invalid character");
}

static void test_schemes_refused(void **state)
{
    (void)state;
    expect_refused("GET", "http://a.b/x", "scheme");
    expect_refused("GET", "ftp://a.b/x", "scheme");
    expect_refused("GET", "matrix://a.b/x", "scheme");
    expect_refused("GET", "matrix-federations://a.b/x", "scheme");
    expect_refused("GET", "httpss://a.b/x", "scheme");
    expect_refused("GET", "http+s://a.b/x", "scheme");
    /* A scheme without "//" has no authority to name the destination. */
    expect_refused("GET", "https:a.b/x", "not an absolute-form");
    expect_refused("GET", "https:/a.b/x", "not an absolute-form");
    expect_refused("GET", "https:", "not an absolute-form");
    expect_refused("GET", "1https://a.b/x", "not an absolute-form");
    expect_refused("GET", " https://a.b/x", "not an absolute-form");
}

static void test_authority_refused(void **state)
{
    (void)state;
    expect_refused("GET", "https:///x", "empty host");
    expect_refused("GET", "https://", "empty host");
    expect_refused("GET", "https://?x", "empty host");
    expect_refused("GET", "https://:443/x", "empty host");
    expect_refused("GET", MF "a.b:/x", "empty port");
    expect_refused("GET", "https://a.b%2e.c/x", "percent-encoding");
    expect_refused("GET", "https://%61.b/x", "percent-encoding");
    expect_refused("GET", "https://a.b:%34%34%33/x", "percent-encoding");
    expect_refused("GET", MF "a.b./x", "trailing dot");
    expect_refused("GET", MF "a.b.:8448/x", "trailing dot");
    expect_refused("GET", MF "[fe80::1%25eth0]/x", "zone id");
    expect_refused("GET", MF "[fe80::1%eth0]:8448/x", "zone id");
    expect_refused("GET", MF "a..b/x", "empty label");
    expect_refused("GET", MF "-a.b/x", "'-'");
    expect_refused("GET", MF "a_b.c/x", "invalid character");
    expect_refused("GET", MF "a b/x", "invalid character");
    expect_refused("GET", MF "a.b:8448:1/x", "brackets");
    expect_refused("GET", MF "::1/x", "brackets");
    expect_refused("GET", MF "[::1/x", "missing ']'");
    expect_refused("GET", MF "[::1]x/x", "after IPv6");
    expect_refused("GET", MF "[zz::1]/x", "invalid IPv6");
    expect_refused("GET", MF "256.1.1.1/x", "invalid IPv4");
    expect_refused("GET", MF "01.1.1.1/x", "invalid IPv4");
    expect_refused("GET", MF "a.b:99999/x", "port out of range");
    expect_refused("GET", MF "\xc3\xa9.fr/x", "invalid character");
    expect_refused_n("GET", MF "a\0.b/x", sizeof(MF "a\0.b/x") - 1, "invalid character");
}

/* Synapse always sends a path: an absolute-form target without one is refused. */
static void test_no_path(void **state)
{
    (void)state;
    expect_refused("GET", MF "a.b:8448", "no path");
    expect_refused("GET", MF "a.b", "no path");
    expect_refused("GET", "https://a.b", "no path");
    expect_refused("GET", "https://a.b?x=1", "no path");
    expect_refused("GET", "https://a.b#x", "no path");
}

static void test_path_refused(void **state)
{
    (void)state;
    expect_refused("GET", "https://a.b/x#frag", "fragment");
    expect_refused("GET", "https://a.b/x?y#", "fragment");
    expect_refused("GET", "https://a.b/#", "fragment");
    expect_refused("GET", "https://a.b/x y", "not allowed");
    expect_refused("GET", "https://a.b/x\ty", "not allowed");
    expect_refused("GET", "https://a.b/x\r\nHost: c.d", "not allowed");
    expect_refused("GET", "https://a.b/x\\y", "not allowed");
    expect_refused("GET", "https://a.b/x\x7f", "not allowed");
    expect_refused("GET", "https://a.b/\xc3\xa9", "not allowed");
    expect_refused("GET", "https://a.b/x?a=\"b\"", "not allowed");
    expect_refused("GET", "https://a.b/x?a=<b>", "not allowed");
    expect_refused("GET", "https://a.b/x?{}", "not allowed");
    expect_refused("GET", "https://a.b/x|y", "not allowed");
    expect_refused("GET", "https://a.b/x^y", "not allowed");
    expect_refused("GET", "https://a.b/x`y", "not allowed");
    expect_refused("GET", "https://a.b/x[y]", "not allowed");
    expect_refused_n("GET", "https://a.b/x\0y", sizeof("https://a.b/x\0y") - 1, "not allowed");
    /* pct-encoded = "%" HEXDIG HEXDIG, in the path and in the query. */
    expect_refused("GET", "https://a.b/x%", "percent-escape");
    expect_refused("GET", "https://a.b/x%2", "percent-escape");
    expect_refused("GET", "https://a.b/x%2g", "percent-escape");
    expect_refused("GET", "https://a.b/x%g2/y", "percent-escape");
    expect_refused("GET", "https://a.b/x?q=%%41", "percent-escape");
    expect_refused("GET", "https://a.b/x?q=%", "percent-escape");
}

/* The path travels on byte for byte: no decoding, no case change, no dot-segment removal. */
static void test_path_kept(void **state)
{
    (void)state;
    const char *p = "/_matrix/federation/v1/event/%24Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"
                    "?a=%2F%2f%25%00&b=c+d";
    char target[256];
    snprintf(target, sizeof(target), MF "a.b%s", p);
    expect_ok("GET", target, EGRESS_MATRIX_FEDERATION, SERVER_HOST_DNS, "a.b", 0, "a.b", p);
    expect_ok("GET", "https://a.b/%7Ex/../%2e%2E/./y", EGRESS_HTTPS, SERVER_HOST_DNS, "a.b", 0,
              "a.b", "/%7Ex/../%2e%2E/./y");
    expect_ok("GET", "https://a.b//x//", EGRESS_HTTPS, SERVER_HOST_DNS, "a.b", 0, "a.b", "//x//");
}

static void test_other_forms_refused(void **state)
{
    (void)state;
    /* Origin-form: the egress listener needs the destination in the target. */
    expect_refused("GET", VER, "origin-form");
    expect_refused("PUT", "/", "origin-form");
    expect_refused("OPTIONS", "*", "asterisk-form");
    /* Authority-form is CONNECT's alone (RFC 9112 section 3.2.3). */
    expect_refused("GET", "a.b:443", "authority-form target without CONNECT");
    expect_refused("POST", "[::1]:443", "authority-form target without CONNECT");
    expect_refused("connect", "a.b:443", "authority-form target without CONNECT");
    expect_refused("GET", "a.b", "authority-form target without CONNECT");
    expect_refused("GET", "", "empty target");
    expect_refused("GET", "a b", "not an absolute-form");
}

static void test_method(void **state)
{
    (void)state;
    expect_refused("", "https://a.b/x", "empty method");
    expect_refused("G T", "https://a.b/x", "invalid character in method");
    expect_refused("GET\r\n", "https://a.b/x", "invalid character in method");
    expect_refused("G(T", "https://a.b/x", "invalid character in method");
    struct egress_target t;
    const char *why = NULL;
    assert_int_equal(egress_target_parse(NULL, 3, "https://a.b/x", 13, &t, &why), CH_EINVAL);
    assert_string_equal(why, "empty method");
    assert_int_equal(egress_target_parse("GET", 3, NULL, 5, &t, &why), CH_EINVAL);
    assert_string_equal(why, "empty target");
    /* why may be NULL. */
    assert_int_equal(egress_target_parse("GET", 3, "/x", 2, &t, NULL), CH_EINVAL);
    assert_int_equal(egress_target_parse("GET", 3, "https://a.b/x", 13, &t, NULL), 0);
    assert_int_equal(t.kind, EGRESS_HTTPS);
}

/* Only the given lengths are read: what follows in the buffer does not count. */
static void test_lengths(void **state)
{
    (void)state;
    const char *line = "GETX https://a.b/x#frag";
    struct egress_target t;
    const char *why = NULL;
    assert_int_equal(egress_target_parse(line, 3, line + 5, 13, &t, &why), 0);
    assert_int_equal(t.kind, EGRESS_HTTPS);
    assert_string_equal(t.dest.name, "a.b");
    assert_int_equal(t.path.len, 2);
    assert_ptr_equal(t.path.base, line + 16);
    assert_int_equal(egress_target_parse(line, 4, line + 5, 13, &t, &why), 0);
    assert_int_equal(egress_target_parse(line, 3, line + 5, 18, &t, &why), CH_EINVAL);
    assert_string_equal(why, "fragment ('#') in the target");
    /* An escape cut by the end of the target is bad, whatever byte comes next. */
    const char *cut = "https://a.b/x%2F";
    assert_int_equal(egress_target_parse("GET", 3, cut, 15, &t, &why), CH_EINVAL);
    assert_string_equal(why, "invalid percent-escape in the path");
    assert_int_equal(egress_target_parse("GET", 3, cut, 16, &t, &why), 0);
    assert_int_equal(t.path.len, 5);
    const char *c = "CONNECTa.b:4431";
    assert_int_equal(egress_target_parse(c, 7, c + 7, 7, &t, &why), 0);
    assert_int_equal(t.kind, EGRESS_CONNECT);
    assert_string_equal(t.dest.name, "a.b:443");
    /* "CONNECTa" is a token, but not CONNECT. */
    assert_int_equal(egress_target_parse(c, 8, c + 7, 7, &t, &why), CH_EINVAL);
    assert_string_equal(why, "authority-form target without CONNECT");
}

static void test_overlong(void **state)
{
    (void)state;
    size_t max = EGRESS_TARGET_MAX;
    char *t = malloc(max + 2);
    assert_non_null(t);
    memcpy(t, "https://a.b/", 12);
    memset(t + 12, 'x', max + 1 - 12);
    t[max + 1] = '\0';
    struct egress_target out;
    const char *why = NULL;
    /* Exactly the limit: accepted, the whole path kept. */
    assert_int_equal(egress_target_parse("GET", 3, t, max, &out, &why), 0);
    assert_int_equal(out.path.len, max - 11);
    assert_ptr_equal(out.path.base, t + 11);
    /* One byte more: refused before anything else is looked at. */
    expect_refused_n("GET", t, max + 1, "longer than 8 KiB");
    t[max] = '#';
    expect_refused_n("GET", t, max + 1, "longer than 8 KiB");
    /* A CONNECT target is bounded the same way. */
    memset(t, 'a', max + 1);
    expect_refused_n("CONNECT", t, max + 1, "longer than 8 KiB");
    free(t);
    /* An over-long host is the server-name grammar's business. */
    char host[300];
    memset(host, 'a', sizeof(host));
    for (size_t i = 60; i < sizeof(host); i += 60)
        host[i] = '.';
    char target[400];
    snprintf(target, sizeof(target), "https://%.*s/x", 256, host);
    expect_refused("GET", target, "longer than 255");
}

static void test_kind_name(void **state)
{
    (void)state;
    assert_string_equal(egress_kind_name(EGRESS_MATRIX_FEDERATION), "matrix-federation");
    assert_string_equal(egress_kind_name(EGRESS_HTTPS), "https");
    assert_string_equal(egress_kind_name(EGRESS_CONNECT), "connect");
    assert_string_equal(egress_kind_name(EGRESS_NONE), "none");
    assert_string_equal(egress_kind_name((enum egress_kind)42), "none");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matrix_federation),
        cmocka_unit_test(test_https),
        cmocka_unit_test(test_scheme_case),
        cmocka_unit_test(test_connect),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_userinfo),
        cmocka_unit_test(test_schemes_refused),
        cmocka_unit_test(test_authority_refused),
        cmocka_unit_test(test_no_path),
        cmocka_unit_test(test_path_refused),
        cmocka_unit_test(test_path_kept),
        cmocka_unit_test(test_other_forms_refused),
        cmocka_unit_test(test_method),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_overlong),
        cmocka_unit_test(test_kind_name),
    };
    return cmocka_run_group_tests_name("egress_target", tests, NULL, NULL);
}
