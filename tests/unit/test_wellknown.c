/* test_wellknown.c -- .well-known/matrix/server bodies and how long they may be cached. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chappe/util.h"
#include "chappe/wellknown.h"

static void expect_ok(const char *body, const char *name, uint16_t port)
{
    struct server_name sn;
    const char *why = NULL;
    if (wellknown_parse(body, strlen(body), &sn, &why))
        fail_msg("rejected %s: %s", body, why);
    assert_string_equal(sn.name, name);
    assert_int_equal(sn.port, port);
}

static void expect_bad_n(const char *body, size_t n, const char *why_want)
{
    struct server_name sn, zero;
    memset(&sn, 0x5a, sizeof(sn));
    memset(&zero, 0, sizeof(zero));
    const char *why = NULL;
    if (wellknown_parse(body, n, &sn, &why) != CH_EINVAL)
        fail_msg("accepted %.*s", (int)n, body);
    assert_non_null(why);
    assert_string_equal(why, why_want);
    assert_memory_equal(&sn, &zero, sizeof(sn));
}

static void expect_bad(const char *body, const char *why_want)
{
    expect_bad_n(body, strlen(body), why_want);
}

static void test_parse_ok(void **state)
{
    (void)state;
    expect_ok("{\"m.server\": \"matrix.example.com:443\"}", "matrix.example.com:443", 443);
    expect_ok("{\"m.server\":\"Matrix.Example.COM\"}", "matrix.example.com", 0);
    expect_ok(" \n{\"m.server\": \"[2001:DB8::1]:8448\"}\n ", "[2001:db8::1]:8448", 8448);
    expect_ok("{\"other\": {\"m.server\": 5}, \"m.server\": \"1.2.3.4\", \"x\": [1, 2]}", "1.2.3.4",
              0);
    expect_ok("{\"m.server\": \"\\u0061.example\"}", "a.example", 0);
}

static void test_parse_bad(void **state)
{
    (void)state;
    expect_bad("", "not JSON");
    expect_bad_n(NULL, 0, "not JSON");
    expect_bad("nope", "not JSON");
    expect_bad("{\"m.server\": \"a.example\"", "not JSON");
    expect_bad("{\"m.server\": \"a.example\"} x", "not JSON");
    expect_bad("{\"m.server\": \"a.example\"}{}", "not JSON");
    expect_bad("{'m.server': 'a.example'}", "not JSON");
    expect_bad("[]", "not a JSON object");
    expect_bad("\"a.example\"", "not a JSON object");
    expect_bad("42", "not a JSON object");
    expect_bad("null", "not a JSON object");
    expect_bad("{}", "no m.server string");
    expect_bad("{\"m.server\": 1}", "no m.server string");
    expect_bad("{\"m.server\": null}", "no m.server string");
    expect_bad("{\"m.server\": [\"a.example\"]}", "no m.server string");
    expect_bad("{\"M.Server\": \"a.example\"}", "no m.server string");
    /* Duplicate keys: which one counts would depend on the parser. */
    expect_bad("{\"m.server\": \"a.example\", \"m.server\": \"b.example\"}", "not JSON");
    /* NUL in a string, escaped or raw, and invalid UTF-8. */
    expect_bad("{\"m.server\": \"a.example\\u0000.evil\"}", "not JSON");
    expect_bad_n("{\"m.server\": \"a.example\0\"}", 26, "not JSON");
    expect_bad("{\"m.server\": \"a.example\", \"x\": \"\xff\"}", "not JSON");
    expect_bad("{\"m.server\": \"\xc3\xa9.example\"}",
               "m.server is not a valid server name: invalid character in server name");
    expect_bad("{\"m.server\": \"\"}", "m.server is not a valid server name: empty server name");
    expect_bad("{\"m.server\": \"a.example:0\"}",
               "m.server is not a valid server name: port out of range");
    expect_bad("{\"m.server\": \"https://a.example\"}",
               "m.server is not a valid server name: invalid port");
    expect_bad("{\"m.server\": \"a.example/\"}",
               "m.server is not a valid server name: invalid character in server name");
    expect_bad("{\"m.server\": \"a.example.\"}",
               "m.server is not a valid server name: trailing dot in server name");
}

/* The body limit is on bytes, whatever the JSON says. */
static void test_parse_size_limit(void **state)
{
    (void)state;
    size_t n = WELLKNOWN_MAX_BODY + 1;
    char *body = malloc(n);
    assert_non_null(body);
    static const char head[] = "{\"m.server\": \"a.example\", \"pad\": \"";
    memcpy(body, head, sizeof(head) - 1);
    memset(body + sizeof(head) - 1, 'x', n - (sizeof(head) - 1) - 2);
    memcpy(body + n - 2, "\"}", 2);
    expect_bad_n(body, n, "body too large");
    /* One byte less (one 'x' fewer) is fine. */
    memcpy(body + n - 3, "\"}", 2);
    struct server_name sn;
    const char *why = NULL;
    assert_int_equal(wellknown_parse(body, n - 1, &sn, &why), 0);
    assert_string_equal(sn.name, "a.example");
    free(body);
}

/* ---- caching ---- */

#define NOW_MS (784111777ull * 1000) /* Sun, 06 Nov 1994 08:49:37 GMT */
#define DEF_MS 86400000ull           /* 1 day */
#define MAX_MS (2 * 86400000ull)     /* 2 days */

static struct http_msg msg;

/* Fields as alternating name, value; NULL ends them. */
static void set_fields(const char *first, ...)
{
    memset(&msg, 0, sizeof(msg));
    va_list ap;
    va_start(ap, first);
    for (const char *name = first; name; name = va_arg(ap, const char *)) {
        const char *value = va_arg(ap, const char *);
        msg.fields[msg.nfields].name = (struct slice){name, strlen(name)};
        msg.fields[msg.nfields].value = (struct slice){value, strlen(value)};
        msg.nfields++;
    }
    va_end(ap);
}

static uint64_t cache_ms(void)
{
    return wellknown_cache_ms(&msg, NOW_MS, DEF_MS, MAX_MS);
}

static uint64_t cc(const char *value)
{
    set_fields("Content-Type", "application/json", "Cache-Control", value, NULL);
    return cache_ms();
}

static void test_cache_default_and_cap(void **state)
{
    (void)state;
    set_fields(NULL);
    assert_int_equal(cache_ms(), DEF_MS);
    set_fields("Content-Type", "application/json", NULL);
    assert_int_equal(cache_ms(), DEF_MS);
    assert_int_equal(wellknown_cache_ms(&msg, NOW_MS, DEF_MS, 1000), 1000);
    assert_int_equal(wellknown_cache_ms(&msg, NOW_MS, 0, MAX_MS), 0);
}

static void test_cache_control(void **state)
{
    (void)state;
    assert_int_equal(cc("max-age=3600"), 3600000);
    assert_int_equal(cc("MAX-AGE=60"), 60000);
    assert_int_equal(cc("max-age=0"), 0);
    assert_int_equal(cc("public, max-age=60"), 60000);
    assert_int_equal(cc("public,max-age=60,immutable"), 60000);
    assert_int_equal(cc("private, max-age=60"), 60000);
    assert_int_equal(cc(" , ,max-age=61, "), 61000);
    /* Quoted delta-seconds are accepted (RFC 9111 section 5.2). */
    assert_int_equal(cc("max-age=\"60\""), 60000);
    /* The first valid max-age wins; invalid ones are skipped. */
    assert_int_equal(cc("max-age=60, max-age=30"), 60000);
    assert_int_equal(cc("max-age=abc, max-age=30"), 30000);
    assert_int_equal(cc("max-age=-1, max-age=31"), 31000);
    assert_int_equal(cc("max-age=, max-age=32"), 32000);
    assert_int_equal(cc("max-age, max-age=33"), 33000);
    assert_int_equal(cc("max-age=\"\", max-age=34"), 34000);
    assert_int_equal(cc("max-age=1.5, max-age=35"), 35000);
    assert_int_equal(cc("max-age = 5"), DEF_MS);
    assert_int_equal(cc("max-age=5x"), DEF_MS);
    assert_int_equal(cc("max-agex=5"), DEF_MS);
    assert_int_equal(cc("s-maxage=5"), DEF_MS);
    /* A comma inside a quoted-string does not split the list. */
    assert_int_equal(cc("foo=\"a, max-age=5\", max-age=7"), 7000);
    assert_int_equal(cc("foo=\"a, max-age=5, b\", max-age=7"), 7000);
    assert_int_equal(cc("foo=\"a, no-store, b\", max-age=7"), 7000);
    assert_int_equal(cc("foo=\"a\\\", max-age=5\", max-age=8"), 8000);
    /* Huge values are capped at 2^31 s (RFC 9111 section 1.2.2), then at max_ms. */
    assert_int_equal(cc("max-age=99999999999999999999999"), MAX_MS);
    set_fields("Cache-Control", "max-age=99999999999999999999999", NULL);
    assert_int_equal(wellknown_cache_ms(&msg, NOW_MS, DEF_MS, UINT64_MAX), 2147483648000ull);
    set_fields("Cache-Control", "max-age=2147483647", NULL);
    assert_int_equal(wellknown_cache_ms(&msg, NOW_MS, DEF_MS, UINT64_MAX), 2147483647000ull);
    assert_int_equal(cc("max-age=3600000"), MAX_MS);
}

static void test_cache_no_store(void **state)
{
    (void)state;
    assert_int_equal(cc("no-store"), 0);
    assert_int_equal(cc("No-Store"), 0);
    assert_int_equal(cc("no-cache"), 0);
    assert_int_equal(cc("max-age=60, no-cache"), 0);
    assert_int_equal(cc("no-store, max-age=60"), 0);
    assert_int_equal(cc("no-cache=\"Set-Cookie, X-Foo\", max-age=60"), 0);
    assert_int_equal(cc("no-storex, max-age=60"), 60000);
    assert_int_equal(cc("x-no-store, max-age=60"), 60000);
    /* no-store beats Expires too. */
    set_fields("Expires", "Sun, 06 Nov 1994 08:50:37 GMT", "Cache-Control", "no-store", NULL);
    assert_int_equal(cache_ms(), 0);
}

/* Several Cache-Control lines are one list (RFC 9110 section 5.3). */
static void test_cache_several_fields(void **state)
{
    (void)state;
    set_fields("Cache-Control", "public", "Content-Length", "10", "cache-control", "max-age=20",
               NULL);
    assert_int_equal(cache_ms(), 20000);
    set_fields("Cache-Control", "max-age=20", "CACHE-CONTROL", "no-store", NULL);
    assert_int_equal(cache_ms(), 0);
    set_fields("Cache-Control", "max-age=bad", "Cache-Control", "max-age=21", NULL);
    assert_int_equal(cache_ms(), 21000);
}

static uint64_t expires(const char *value)
{
    set_fields("Expires", value, NULL);
    return cache_ms();
}

static void test_cache_expires(void **state)
{
    (void)state;
    /* The three HTTP-date forms (RFC 9110 section 5.6.7), one minute ahead. */
    assert_int_equal(expires("Sun, 06 Nov 1994 08:50:37 GMT"), 60000);
    assert_int_equal(expires("Sunday, 06-Nov-94 08:50:37 GMT"), 60000);
    assert_int_equal(expires("Sun Nov  6 08:50:37 1994"), 60000);
    /* The day name is not checked against the date. */
    assert_int_equal(expires("Mon, 06 Nov 1994 08:50:37 GMT"), 60000);
    /* Now, the past, far past: 0. */
    assert_int_equal(expires("Sun, 06 Nov 1994 08:49:37 GMT"), 0);
    assert_int_equal(expires("Sun, 06 Nov 1994 08:49:36 GMT"), 0);
    assert_int_equal(expires("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    assert_int_equal(expires("Sat, 01 Jan 0000 00:00:00 GMT"), 0);
    /* Leap days and seconds. */
    assert_int_equal(expires("Sun, 06 Nov 1994 08:49:60 GMT"), 23000);
    set_fields("Expires", "Thu, 29 Feb 1996 00:00:00 GMT", NULL);
    assert_int_equal(wellknown_cache_ms(&msg, NOW_MS, DEF_MS, UINT64_MAX),
                     (825552000ull - 784111777ull) * 1000);
    /* Far future, past 2038: exact, then capped. */
    set_fields("Expires", "Fri, 01 Jan 2100 00:00:00 GMT", NULL);
    assert_int_equal(wellknown_cache_ms(&msg, NOW_MS, DEF_MS, UINT64_MAX),
                     (4102444800ull - 784111777ull) * 1000);
    assert_int_equal(expires("Fri, 01 Jan 2100 00:00:00 GMT"), MAX_MS);
    /* max-age wins over Expires (RFC 9111 section 5.3), an invalid max-age does not. */
    set_fields("Expires", "Sun, 06 Nov 1994 08:50:37 GMT", "Cache-Control", "max-age=5", NULL);
    assert_int_equal(cache_ms(), 5000);
    set_fields("Expires", "Sun, 06 Nov 1994 08:50:37 GMT", "Cache-Control", "max-age=x", NULL);
    assert_int_equal(cache_ms(), 60000);
}

/* An invalid Expires means "already expired" (RFC 9111 section 5.3). */
static void test_cache_expires_invalid(void **state)
{
    (void)state;
    static const char *bad[] = {
        "0",
        "",
        "-1",
        "tomorrow",
        "Sun, 06 Nov 1994 08:50:37 UTC",
        "Sun, 06 Nov 1994 08:50:37 gmt",
        "sun, 06 Nov 1994 08:50:37 GMT",
        "Sun, 06 nov 1994 08:50:37 GMT",
        "Sun, 6 Nov 1994 08:50:37 GMT",
        "Sun, 06 Nov 94 08:50:37 GMT",
        "Sun, 06 Nov 1994 8:50:37 GMT",
        "Sun, 06 Nov 1994 08:50:37 GMT ",
        "Sun, 06 Nov 1994 08:50:37",
        "Sun,06 Nov 1994 08:50:37 GMT",
        "Sun, 31 Nov 1994 08:50:37 GMT",
        "Sun, 00 Nov 1994 08:50:37 GMT",
        "Sun, 29 Feb 1995 08:50:37 GMT",
        "Sun, 29 Feb 1900 08:50:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:50:61 GMT",
        "Sun, 06 Xyz 1994 08:50:37 GMT",
        "Sunday, 06 Nov 1994 08:50:37 GMT",
        "Sun, 06-Nov-94 08:50:37 GMT",
        "Sunday, 06-Nov-1994 08:50:37 GMT",
        "Sun Nov 6 08:50:37 1994",
        "Sun Nov 06 08:50:37 94",
        "Sun Nov  6 08:50:37 1994 GMT",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        if (expires(bad[i]) != 0)
            fail_msg("\"%s\" gave %llu", bad[i], (unsigned long long)cache_ms());
    }
    /* Two Expires lines: invalid, even when they agree. */
    set_fields("Expires", "Sun, 06 Nov 1994 08:50:37 GMT", "expires",
               "Sun, 06 Nov 1994 08:50:37 GMT", NULL);
    assert_int_equal(cache_ms(), 0);
}

/* Two-digit years: more than 50 years ahead means the previous century. */
static void test_cache_rfc850_years(void **state)
{
    (void)state;
    /* now is 1994: "44" is 2044 (50 years ahead), "45" is 1945 (in the past). */
    set_fields("Expires", "Friday, 01-Jan-44 00:00:00 GMT", NULL);
    assert_int_equal(wellknown_cache_ms(&msg, NOW_MS, DEF_MS, UINT64_MAX),
                     (2335219200ull - 784111777ull) * 1000);
    assert_int_equal(expires("Monday, 01-Jan-45 00:00:00 GMT"), 0);
    set_fields("Expires", "Monday, 07-Nov-94 08:49:37 GMT", NULL);
    assert_int_equal(wellknown_cache_ms(&msg, NOW_MS, DEF_MS, UINT64_MAX), 86400000);
    /* now is 2026-01-01: "94" is 1994 (2094 is more than 50 years ahead), "76" is 2076. */
    uint64_t now2026 = 1767225600ull * 1000;
    set_fields("Expires", "Sunday, 06-Nov-94 08:50:37 GMT", NULL);
    assert_int_equal(wellknown_cache_ms(&msg, now2026, DEF_MS, UINT64_MAX), 0);
    set_fields("Expires", "Sunday, 01-Jan-76 00:00:00 GMT", NULL);
    assert_int_equal(wellknown_cache_ms(&msg, now2026, DEF_MS, UINT64_MAX),
                     (3345062400ull - 1767225600ull) * 1000);
    set_fields("Expires", "Saturday, 01-Jan-77 00:00:00 GMT", NULL);
    assert_int_equal(wellknown_cache_ms(&msg, now2026, DEF_MS, UINT64_MAX), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_parse_size_limit),
        cmocka_unit_test(test_cache_default_and_cap),
        cmocka_unit_test(test_cache_control),
        cmocka_unit_test(test_cache_no_store),
        cmocka_unit_test(test_cache_several_fields),
        cmocka_unit_test(test_cache_expires),
        cmocka_unit_test(test_cache_expires_invalid),
        cmocka_unit_test(test_cache_rfc850_years),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
