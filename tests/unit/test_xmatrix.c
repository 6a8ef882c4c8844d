/* test_xmatrix.c -- X-Matrix Authorization header parsing, building and the signed request object.
 */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chappe/util.h"
#include "chappe/xmatrix.h"

#define SIG "hNMLqNd1T+JUVc53JxpRUtV8uTeAFiz/H8ewf5BffPz4Pem3EiIOq7L06B3fNHmWrW+ZVBkdG1tGEU9Fyl+lAA"

static int parse_str(const char *s, struct xmatrix *x, const char **why)
{
    return xmatrix_parse(s, strlen(s), x, why);
}

static void expect_ok(const char *s, const char *origin, const char *destination, const char *key,
                      const char *sig)
{
    struct xmatrix x;
    const char *why = "unset";
    int rc = parse_str(s, &x, &why);
    if (rc)
        fail_msg("rejected %s: %s", s, why);
    assert_null(why);
    assert_string_equal(x.origin, origin);
    assert_string_equal(x.key, key);
    assert_string_equal(x.sig, sig);
    if (destination) {
        assert_true(x.has_destination);
        assert_string_equal(x.destination, destination);
    } else {
        assert_false(x.has_destination);
        assert_string_equal(x.destination, "");
    }
}

/* Rejected with a static reason and a zeroed result. */
static void expect_bad_n(const char *s, size_t n, const char *why_part)
{
    struct xmatrix x, zero;
    memset(&x, 0x5a, sizeof(x));
    memset(&zero, 0, sizeof(zero));
    const char *why = NULL;
    assert_int_equal(xmatrix_parse(s, n, &x, &why), CH_EINVAL);
    assert_non_null(why);
    if (why_part && strstr(why, why_part) == NULL)
        fail_msg("why \"%s\" lacks \"%s\"", why, why_part);
    assert_memory_equal(&x, &zero, sizeof(x));
}

static void expect_bad(const char *s, const char *why_part)
{
    expect_bad_n(s, strlen(s), why_part);
}

/* Exactly what Synapse's matrixfederationclient.py sends, and the spec's example. */
static void test_synapse_format(void **state)
{
    (void)state;
    expect_ok("X-Matrix origin=\"origin.hs.example.com\",key=\"ed25519:a_AbCd\",sig=\"" SIG
              "\",destination=\"dest.example.org\"",
              "origin.hs.example.com", "dest.example.org", "ed25519:a_AbCd", SIG);
    expect_ok("X-Matrix origin=\"localhost:33515\",key=\"ed25519:1\",sig=\"" SIG "\"",
              "localhost:33515", NULL, "ed25519:1", SIG);
    expect_ok(
        "X-Matrix origin=\"origin.hs.example.com\",destination=\"destination.hs.example.com\","
        "key=\"ed25519:key1\",sig=\"ABCDEF\"",
        "origin.hs.example.com", "destination.hs.example.com", "ed25519:key1", "ABCDEF");
}

static void test_spacing(void **state)
{
    (void)state;
    expect_ok("X-Matrix  origin=a , key=\"k\",sig=\"s\"", "a", NULL, "k", "s");
    /* SYN-437: OWS after commas; BWS around '=' (RFC 9110 section 11.2). */
    expect_ok("X-Matrix origin=\"o\", key=\"k\",\tsig=\"s\"", "o", NULL, "k", "s");
    expect_ok("X-Matrix origin = o ,key= k, sig =s", "o", NULL, "k", "s");
    expect_ok("  X-Matrix origin=o,key=k,sig=s \t", "o", NULL, "k", "s");
    /* Empty list elements are ignored (RFC 9110 section 5.6.1). */
    expect_ok("X-Matrix ,origin=o,,key=k, ,sig=s,", "o", NULL, "k", "s");
}

static void test_order_and_case(void **state)
{
    (void)state;
    expect_ok("X-Matrix sig=\"s\",destination=d,key=\"k\",origin=\"o\"", "o", "d", "k", "s");
    expect_ok("x-matrix ORIGIN=o,Key=k,SIG=s,DeStInAtIoN=d", "o", "d", "k", "s");
    expect_ok("X-MATRIX origin=o,key=k,sig=s", "o", NULL, "k", "s");
    /* Values keep their case. */
    expect_ok("X-Matrix origin=Example.ORG,key=ed25519:AbC,sig=XyZ", "Example.ORG", NULL,
              "ed25519:AbC", "XyZ");
}

static void test_quoting(void **state)
{
    (void)state;
    /* quoted-pair unescaping (RFC 9110 section 5.6.4). */
    expect_ok("X-Matrix origin=\"ex\\ample.org\",key=\"k\",sig=\"s\"", "example.org", NULL, "k",
              "s");
    expect_ok("X-Matrix origin=\"a\\\"b\\\\c\",key=\"k\",sig=\"s\"", "a\"b\\c", NULL, "k", "s");
    expect_ok("X-Matrix origin=\"a,b=c d\",key=\"k\",sig=\"s\"", "a,b=c d", NULL, "k", "s");
    /* Unquoted colons (spec: "recipient should allow colons"), ports, base64 '/' and '+'. */
    expect_ok("X-Matrix origin=matrix.example.org:8448,key=ed25519:abc,sig=ab/c+d,"
              "destination=b.example:443",
              "matrix.example.org:8448", "b.example:443", "ed25519:abc", "ab/c+d");
}

static void test_port_and_ipv6_quoted(void **state)
{
    (void)state;
    expect_ok("X-Matrix origin=\"[2001:db8::1]:8448\",key=\"ed25519:x\",sig=\"s\","
              "destination=\"example.org:443\"",
              "[2001:db8::1]:8448", "example.org:443", "ed25519:x", "s");
}

static void test_unknown_params_ignored(void **state)
{
    (void)state;
    expect_ok("X-Matrix origin=o,future=\"x, y\",key=k,sig=s,other=1", "o", NULL, "k", "s");
}

static void test_malformed(void **state)
{
    (void)state;
    expect_bad("X-Matrix origin=\"o,key=k,sig=s", "unterminated");
    expect_bad("X-Matrix origin=\"o,key=\"k\",sig=\"s", "after value"); /* "o,key=" then k */
    expect_bad("X-Matrix origin=o,key=k,sig=\"s", "unterminated");
    expect_bad("X-Matrix origin=o,key=k,sig=\"s\\", "unterminated");
    expect_bad("X-Matrix key=k,sig=s", "missing origin");
    expect_bad("X-Matrix origin=o,sig=s", "missing key");
    expect_bad("X-Matrix origin=o,key=k", "missing sig");
    expect_bad("X-Matrix origin=o,key=k,sig=s,origin=o", "duplicate");
    expect_bad("X-Matrix origin=o,key=k,sig=s,ORIGIN=o", "duplicate");
    expect_bad("X-Matrix origin=o,key=k,sig=s,destination=a,Destination=b", "duplicate");
    expect_bad("X-Matrix origin=o,key=k,sig=s,x=1,X=1", "duplicate");
    expect_bad("Bearer abcdef", "scheme");
    expect_bad("Bearer origin=o,key=k,sig=s", "scheme");
    expect_bad("X-Matrixorigin=o,key=k,sig=s", "scheme");
    expect_bad("X-Matrix-2 origin=o,key=k,sig=s", "scheme");
    expect_bad("", "empty");
    expect_bad("   ", "empty");
    expect_bad("X-Matrix", "no parameters");
    expect_bad("X-Matrix ", "no parameters");
    expect_bad("X-Matrix ,", "no parameters");
    expect_bad("X-Matrix , , ,", "no parameters");
    expect_bad("X-Matrix =o,key=k,sig=s", "missing parameter name");
    expect_bad("X-Matrix origin=o,=x,key=k,sig=s", "missing parameter name");
    expect_bad("X-Matrix origin,key=k,sig=s", "missing '='");
    expect_bad("X-Matrix origin o,key=k,sig=s", "missing '='");
    expect_bad("X-Matrix abcdef==", "invalid character"); /* token68 */
    expect_bad("X-Matrix abcdef", "missing '='");
    expect_bad("X-Matrix\torigin=o,key=k,sig=s", "space after the scheme");
    expect_bad("X-Matrix,origin=o,key=k,sig=s", "space after the scheme");
    expect_bad("X-Matrix origin=,key=k,sig=s", "empty value");
    expect_bad("X-Matrix origin=\"\",key=k,sig=s", "empty value");
    expect_bad("X-Matrix origin=o,key=k,sig=", "empty value");
    expect_bad("X-Matrix origin=o b,key=k,sig=s", "after value");
    expect_bad("X-Matrix origin=\"o\"b,key=k,sig=s", "after value");
    expect_bad("X-Matrix origin=\"o\" \"b\",key=k,sig=s", "after value");
    expect_bad("X-Matrix origin=o;x,key=k,sig=s", "after value");
    expect_bad("X-Matrix origin=(o),key=k,sig=s", "invalid character");
    expect_bad("X-Matrix or@gin=o,key=k,sig=s", "missing '='");
    expect_bad("X-Matrix @=o,key=k,sig=s", "invalid character in parameter name");
    expect_bad("X-Matrix origin=o=,key=k,sig=s", "after value");
}

static void test_control_characters(void **state)
{
    (void)state;
    static const char *bad[] = {
        "X-Matrix origin=\"o\r\",key=k,sig=s",      "X-Matrix origin=\"o\n\",key=k,sig=s",
        "X-Matrix origin=\"o\t\",key=k,sig=s",      "X-Matrix origin=\"o\\\t\",key=k,sig=s",
        "X-Matrix origin=\"o\x7f\",key=k,sig=s",    "X-Matrix origin=o\r\n,key=k,sig=s",
        "X-Matrix origin=o,key=k,sig=s\r\n",        "X-Matrix origin=\"\xc3\xa9\",key=k,sig=s",
        "X-Matrix origin=o,key=k,sig=s,x=\"\x01\"",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        expect_bad(bad[i], "character");
    /* NUL inside a quoted value, inside a token, and at the end. */
    static const char nul1[] = "X-Matrix origin=\"o\0x\",key=k,sig=s";
    static const char nul2[] = "X-Matrix origin=o\0x,key=k,sig=s";
    static const char nul3[] = "X-Matrix origin=o,key=k,sig=s\0";
    expect_bad_n(nul1, sizeof(nul1) - 1, "character");
    expect_bad_n(nul2, sizeof(nul2) - 1, "character");
    expect_bad_n(nul3, sizeof(nul3) - 1, "character");
}

static void test_long_values(void **state)
{
    (void)state;
    size_t big = 64 * 1024;
    char *v = malloc(big + 1);
    assert_non_null(v);
    memset(v, 'a', big);
    v[big] = '\0';
    struct buf b = BUF_INIT;

    /* 64 KiB, quoted and unquoted. */
    assert_int_equal(buf_appendf(&b, "X-Matrix origin=\"%s\",key=k,sig=s", v), 0);
    expect_bad_n(buf_data(&b), b.len, "too long");
    buf_reset(&b);
    assert_int_equal(buf_appendf(&b, "X-Matrix origin=o,key=k,sig=%s", v), 0);
    expect_bad_n(buf_data(&b), b.len, "too long");
    buf_reset(&b);
    /* Also for an ignored parameter. */
    assert_int_equal(buf_appendf(&b, "X-Matrix origin=o,key=k,sig=s,junk=%s", v), 0);
    expect_bad_n(buf_data(&b), b.len, "too long");
    buf_reset(&b);

    /* Exactly XMATRIX_MAX_VALUE is fine; one more is not (measured after unescaping). */
    v[XMATRIX_MAX_VALUE] = '\0';
    assert_int_equal(buf_appendf(&b, "X-Matrix origin=o,key=k,sig=\"%s\"", v), 0);
    assert_int_equal(buf_append(&b, "", 1), 0); /* NUL-terminate for expect_ok */
    expect_ok(buf_data(&b), "o", NULL, "k", v);
    buf_reset(&b);
    v[0] = '\\';
    v[1] = 'x';
    assert_int_equal(buf_appendf(&b, "X-Matrix origin=o,key=k,sig=\"x%s\"", v), 0);
    assert_int_equal(buf_append(&b, "", 1), 0); /* NUL-terminate for expect_ok */
    struct xmatrix x;
    assert_int_equal(xmatrix_parse(buf_data(&b), b.len - 1, &x, NULL), 0);
    assert_int_equal(strlen(x.sig), XMATRIX_MAX_VALUE);
    buf_reset(&b);
    v[0] = 'a';
    v[XMATRIX_MAX_VALUE] = 'a';
    v[XMATRIX_MAX_VALUE + 1] = '\0';
    assert_int_equal(buf_appendf(&b, "X-Matrix origin=o,key=k,sig=\"%s\"", v), 0);
    expect_bad_n(buf_data(&b), b.len, "too long");

    buf_free(&b);
    free(v);
}

static void test_too_many_params(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append_str(&b, "X-Matrix origin=o,key=k,sig=s"), 0);
    for (int i = 0; i < 13; i++)
        assert_int_equal(buf_appendf(&b, ",p%d=v", i), 0);
    assert_int_equal(buf_append(&b, "", 1), 0);
    expect_ok(buf_data(&b), "o", NULL, "k", "s"); /* 16 parameters */
    b.len--;
    assert_int_equal(buf_append_str(&b, ",p99=v"), 0);
    expect_bad_n(buf_data(&b), b.len, "too many");
    buf_free(&b);
}

static void test_null_why_and_input(void **state)
{
    (void)state;
    struct xmatrix x;
    assert_int_equal(xmatrix_parse("Bearer x", 8, &x, NULL), CH_EINVAL);
    const char *why = NULL;
    assert_int_equal(xmatrix_parse(NULL, 0, &x, &why), CH_EINVAL);
    assert_non_null(why);
    assert_int_equal(xmatrix_parse(NULL, 5, &x, &why), CH_EINVAL);
}

static void test_build_synapse_format(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(xmatrix_build(&b, "a.example", "b.example", "ed25519:a_AbCd", SIG), 0);
    const char *want = "X-Matrix origin=\"a.example\",key=\"ed25519:a_AbCd\",sig=\"" SIG
                       "\",destination=\"b.example\"";
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(buf_data(&b), want, b.len);

    /* Appends after what is there; destination omitted when NULL. */
    assert_int_equal(xmatrix_build(&b, "a:8448", NULL, "ed25519:1", "s"), 0);
    const char *want2 = "X-Matrix origin=\"a:8448\",key=\"ed25519:1\",sig=\"s\"";
    assert_int_equal(b.len, strlen(want) + strlen(want2));
    assert_memory_equal(buf_data(&b) + strlen(want), want2, strlen(want2));
    buf_free(&b);
}

static void test_build_rejects(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append_str(&b, "keep"), 0);
    char big[XMATRIX_MAX_VALUE + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(xmatrix_build(&b, NULL, "d", "k", "s"), CH_EINVAL);
    assert_int_equal(xmatrix_build(&b, "o", "d", NULL, "s"), CH_EINVAL);
    assert_int_equal(xmatrix_build(&b, "o", "d", "k", NULL), CH_EINVAL);
    assert_int_equal(xmatrix_build(&b, "", "d", "k", "s"), CH_EINVAL);
    assert_int_equal(xmatrix_build(&b, "o", "", "k", "s"), CH_EINVAL);
    assert_int_equal(xmatrix_build(&b, "o\r\n", "d", "k", "s"), CH_EINVAL);
    assert_int_equal(xmatrix_build(&b, "o", "d", "k\t", "s"), CH_EINVAL);
    assert_int_equal(xmatrix_build(&b, "o", "d", "k", "\xc3\xa9"), CH_EINVAL);
    assert_int_equal(xmatrix_build(&b, big, "d", "k", "s"), CH_EINVAL);
    assert_int_equal(b.len, 4);
    assert_memory_equal(buf_data(&b), "keep", 4);
    buf_free(&b);
}

static void roundtrip(const char *origin, const char *destination, const char *key, const char *sig)
{
    struct buf b = BUF_INIT;
    assert_int_equal(xmatrix_build(&b, origin, destination, key, sig), 0);
    struct xmatrix x;
    const char *why = NULL;
    if (xmatrix_parse(buf_data(&b), b.len, &x, &why))
        fail_msg("built header rejected: %s", why);
    assert_string_equal(x.origin, origin);
    assert_string_equal(x.key, key);
    assert_string_equal(x.sig, sig);
    assert_int_equal(x.has_destination, destination != NULL);
    assert_string_equal(x.destination, destination ? destination : "");
    buf_free(&b);
}

static void test_roundtrip_awkward(void **state)
{
    (void)state;
    roundtrip("a", NULL, "k", "s");
    roundtrip("example.org:8448", "[::1]:8448", "ed25519:a_AbCd", SIG);
    roundtrip("\"", "\\", "\\\"", "\"\\");
    roundtrip("a\\\"b", "x,y=z", " leading", "trailing ");
    roundtrip("  ", "=", ",", "sig=\"x\",origin=\"evil\"");
    roundtrip("\\\\\\", "\"\"\"", "(){}<>@;?[]", "~`!#$%^&*+-._|'");
    char big[XMATRIX_MAX_VALUE + 1];
    memset(big, '"', XMATRIX_MAX_VALUE);
    big[XMATRIX_MAX_VALUE] = '\0';
    roundtrip(big, big, big, big);
    /* Every printable ASCII character. */
    char all[96];
    for (int i = 0; i < 95; i++)
        all[i] = (char)(0x20 + i);
    all[95] = '\0';
    roundtrip(all, all, all, all);
}

static void test_request_object(void **state)
{
    (void)state;
    json_error_t err;
    json_t *content = json_loads("{\"pdus\":[{\"a\":1}],\"edus\":[]}", 0, &err);
    assert_non_null(content);
    json_t *before = json_deep_copy(content);

    json_t *got = xmatrix_request_object("PUT", "/_matrix/federation/v1/send/1?x=1", "a.example",
                                         "b.example", content);
    assert_non_null(got);
    json_t *want = json_pack("{s:s,s:s,s:s,s:s,s:O}", "method", "PUT", "uri",
                             "/_matrix/federation/v1/send/1?x=1", "origin", "a.example",
                             "destination", "b.example", "content", content);
    assert_true(json_equal(got, want));
    /* Shared, not copied: one more reference while the object lives, the content untouched. */
    assert_ptr_equal(json_object_get(got, "content"), content);
    assert_true(json_equal(content, before));
    json_decref(want);
    assert_int_equal(content->refcount, 2);
    json_decref(got);
    assert_int_equal(content->refcount, 1);

    /* Without destination and content (a GET from an old server). */
    got = xmatrix_request_object("GET", "/_matrix/federation/v1/version", "a.example", NULL, NULL);
    want = json_pack("{s:s,s:s,s:s}", "method", "GET", "uri", "/_matrix/federation/v1/version",
                     "origin", "a.example");
    assert_true(json_equal(got, want));
    assert_null(json_object_get(got, "destination"));
    assert_null(json_object_get(got, "content"));
    json_decref(got);
    json_decref(want);

    /* Destination only; content only. */
    got = xmatrix_request_object("GET", "/x", "a", "b", NULL);
    want = json_pack("{s:s,s:s,s:s,s:s}", "method", "GET", "uri", "/x", "origin", "a",
                     "destination", "b");
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);
    got = xmatrix_request_object("POST", "/x", "a", NULL, content);
    want = json_pack("{s:s,s:s,s:s,s:O}", "method", "POST", "uri", "/x", "origin", "a", "content",
                     content);
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);

    /* Bad arguments. */
    assert_null(xmatrix_request_object(NULL, "/x", "a", NULL, NULL));
    assert_null(xmatrix_request_object("GET", NULL, "a", NULL, NULL));
    assert_null(xmatrix_request_object("GET", "/x", NULL, NULL, NULL));
    assert_null(xmatrix_request_object("GET", "/x", "a", "\xff", NULL)); /* not UTF-8 */

    json_decref(before);
    json_decref(content);
}

/* The parse result feeds the request object the signature is checked against. */
static void test_parse_then_request_object(void **state)
{
    (void)state;
    struct xmatrix x;
    assert_int_equal(parse_str("X-Matrix origin=\"a.example\",key=\"ed25519:1\",sig=\"s\","
                               "destination=\"b.example\"",
                               &x, NULL),
                     0);
    json_t *got = xmatrix_request_object("GET", "/q", x.origin,
                                         x.has_destination ? x.destination : NULL, NULL);
    json_t *want = json_pack("{s:s,s:s,s:s,s:s}", "method", "GET", "uri", "/q", "origin",
                             "a.example", "destination", "b.example");
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synapse_format),
        cmocka_unit_test(test_spacing),
        cmocka_unit_test(test_order_and_case),
        cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_port_and_ipv6_quoted),
        cmocka_unit_test(test_unknown_params_ignored),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_control_characters),
        cmocka_unit_test(test_long_values),
        cmocka_unit_test(test_too_many_params),
        cmocka_unit_test(test_null_why_and_input),
        cmocka_unit_test(test_build_synapse_format),
        cmocka_unit_test(test_build_rejects),
        cmocka_unit_test(test_roundtrip_awkward),
        cmocka_unit_test(test_request_object),
        cmocka_unit_test(test_parse_then_request_object),
    };
    return cmocka_run_group_tests_name("xmatrix", tests, NULL, NULL);
}
