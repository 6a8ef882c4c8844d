/* test_cjson.c -- canonical JSON: the Matrix appendix examples, escaping, ordering, limits. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "chappe/cjson.h"
#include "chappe/util.h"

#define PYTHON "/usr/bin/python3"

/* Canonicalize in (given with its length, it may hold NUL) and compare with want. */
static void check_n(const char *in, size_t n, const char *want, size_t want_len)
{
    struct buf out = BUF_INIT, err = BUF_INIT;
    int rc = cjson_canonicalize(in, n, &out, &err);
    if (rc != 0)
        fail_msg("canonicalize %.*s: %d %.*s", (int)n, in, rc, (int)err.len, buf_data(&err));
    assert_int_equal(err.len, 0);
    if (out.len != want_len || memcmp(buf_data(&out), want, want_len) != 0)
        fail_msg("got %.*s want %.*s", (int)out.len, buf_data(&out), (int)want_len, want);
    buf_free(&out);
    buf_free(&err);
}

#define CHECK(in, want) check_n(in, sizeof(in) - 1, want, sizeof(want) - 1)

/* Canonicalization of in fails with exactly the error line want; out keeps its prefix. */
static void check_err(const char *in, size_t n, const char *want)
{
    struct buf out = BUF_INIT, err = BUF_INIT;
    assert_int_equal(buf_append_str(&out, "prefix"), 0);
    assert_int_equal(cjson_canonicalize(in, n, &out, &err), CH_EINVAL);
    assert_int_equal(out.len, 6);
    assert_memory_equal(buf_data(&out), "prefix", 6);
    if (err.len != strlen(want) || memcmp(buf_data(&err), want, err.len) != 0)
        fail_msg("error %.*s want %s", (int)err.len, buf_data(&err), want);
    buf_free(&out);
    buf_free(&err);
}

#define CHECK_ERR(in, want) check_err(in, sizeof(in) - 1, want)

static void assert_buf_is(const struct buf *b, const char *want)
{
    if (b->len != strlen(want) || memcmp(buf_data(b), want, b->len) != 0)
        fail_msg("got %.*s want %s", (int)b->len, buf_data(b), want);
}

/* Matrix appendices, "Canonical JSON", "Examples": every pair, byte for byte. */
static void test_spec_examples(void **state)
{
    (void)state;
    CHECK("{}", "{}");
    CHECK("{\n    \"one\": 1,\n    \"two\": \"Two\"\n}", "{\"one\":1,\"two\":\"Two\"}");
    CHECK("{\n    \"b\": \"2\",\n    \"a\": \"1\"\n}", "{\"a\":\"1\",\"b\":\"2\"}");
    CHECK("{\"b\":\"2\",\"a\":\"1\"}", "{\"a\":\"1\",\"b\":\"2\"}");
    CHECK("{\n    \"auth\": {\n        \"success\": true,\n        \"mxid\": "
          "\"@john.doe:example.com\",\n"
          "        \"profile\": {\n            \"display_name\": \"John Doe\",\n"
          "            \"three_pids\": [\n                {\n"
          "                    \"medium\": \"email\",\n"
          "                    \"address\": \"john.doe@example.org\"\n                },\n"
          "                {\n                    \"medium\": \"msisdn\",\n"
          "                    \"address\": \"123456789\"\n                }\n            ]\n"
          "        }\n    }\n}",
          "{\"auth\":{\"mxid\":\"@john.doe:example.com\",\"profile\":{\"display_name\":\"John "
          "Doe\",\"three_pids\":[{\"address\":\"john.doe@example.org\",\"medium\":\"email\"},{"
          "\"address\":\"123456789\",\"medium\":\"msisdn\"}]},\"success\":true}}");
    CHECK("{\n    \"a\": \"日本語\"\n}", "{\"a\":\"日本語\"}");
    CHECK("{\n    \"本\": 2,\n    \"日\": 1\n}", "{\"日\":1,\"本\":2}");
    CHECK("{\n    \"a\": \"\\u65E5\"\n}", "{\"a\":\"日\"}");
    CHECK("{\n    \"a\": null\n}", "{\"a\":null}");
    /*
     * The last example, {"a": -0, "b": 1e10} -> {"a":0,"b":10000000000}: -0 is
     * the integer 0 (canonicaljson writes 0 too), but Jansson reads 1e10 as a
     * real and reals are refused, integral or not (python3-canonicaljson would
     * write 10000000000.0, which is not canonical either).
     */
    CHECK("{\"a\": -0}", "{\"a\":0}");
    CHECK_ERR("{\n    \"a\": -0,\n    \"b\": 1e10\n}",
              "$.b: float 10000000000 is not allowed in canonical JSON\n");
}

static void test_scalars_and_empty(void **state)
{
    (void)state;
    CHECK("[]", "[]");
    CHECK(" { } ", "{}");
    CHECK("[ [ ], { } ]", "[[],{}]");
    CHECK("true", "true");
    CHECK("false", "false");
    CHECK("null", "null");
    CHECK("\"\"", "\"\"");
    CHECK("-0", "0");
    CHECK("[0, -1, 42]", "[0,-1,42]");
    CHECK("\t\r\n 7 \n", "7");
}

/* Grammar: U+0000..U+001F escaped, short forms where they exist, else lowercase \u00xx. */
static void test_control_characters(void **state)
{
    (void)state;
    struct buf in = BUF_INIT, want = BUF_INIT;
    for (unsigned c = 0; c < 0x20; c++) {
        buf_reset(&in);
        buf_reset(&want);
        buf_appendf(&in, "\"\\u%04X\"", c);
        switch (c) {
        case '\b':
            buf_append_str(&want, "\"\\b\"");
            break;
        case '\t':
            buf_append_str(&want, "\"\\t\"");
            break;
        case '\n':
            buf_append_str(&want, "\"\\n\"");
            break;
        case '\f':
            buf_append_str(&want, "\"\\f\"");
            break;
        case '\r':
            buf_append_str(&want, "\"\\r\"");
            break;
        default:
            buf_appendf(&want, "\"\\u%04x\"", c);
        }
        check_n(buf_data(&in), in.len, buf_data(&want), want.len);
    }
    buf_free(&in);
    buf_free(&want);
    CHECK("\"\\\"\\\\\\/\"", "\"\\\"\\\\/\"");
    /* DEL, U+2028 and U+2029 stay raw (canonicaljson 1.6: ensure_ascii=False escapes none). */
    CHECK("\"\\u007f\\u2028\\u2029\"", "\"\x7f\xe2\x80\xa8\xe2\x80\xa9\"");
    CHECK("\"a\x7f"
          "b\"",
          "\"a\x7f"
          "b\"");
}

/* Astral-plane and combining characters pass through raw; no normalization. */
static void test_unicode_raw(void **state)
{
    (void)state;
    CHECK("\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"");
    CHECK("\"\xf0\x9f\x98\x80\"", "\"\xf0\x9f\x98\x80\"");
    CHECK("\"\\udbff\\udfff\"", "\"\xf4\x8f\xbf\xbf\"");
    CHECK("\"e\\u0301\"", "\"e\xcc\x81\"");
    CHECK("\"\xc3\xa9 e\xcc\x81\"", "\"\xc3\xa9 e\xcc\x81\"");
    CHECK("\"\\uFFFF\\u0080\"", "\"\xef\xbf\xbf\xc2\x80\"");
}

/* Keys sort by code point, i.e. by the bytes of their UTF-8, not by UTF-16 units. */
static void test_key_order(void **state)
{
    (void)state;
    /* UTF-16: U+1F600 is D83D DE00 < FB01; code points: U+FB01 < U+1F600. */
    CHECK("{\"\\ud83d\\ude00\":2,\"\\ufb01\":1}", "{\"\xef\xac\x81\":1,\"\xf0\x9f\x98\x80\":2}");
    CHECK("{\"\\ufb01\":1,\"\\ud83d\\ude00\":2}", "{\"\xef\xac\x81\":1,\"\xf0\x9f\x98\x80\":2}");
    /* "" first, a prefix before its extensions, uppercase before lowercase, DEL after "~". */
    CHECK("{\"ab\":1,\"a\":2,\"B\":3,\"\":4,\"\x7f\":5,\"~\":6,\"\\u00e9\":7}",
          "{\"\":4,\"B\":3,\"a\":2,\"ab\":1,\"~\":6,\"\x7f\":5,\"\xc3\xa9\":7}");
    /* Nested objects are sorted too; arrays keep their order. */
    CHECK("[{\"b\":{\"d\":1,\"c\":2},\"a\":[3,1,2]}]", "[{\"a\":[3,1,2],\"b\":{\"c\":2,\"d\":1}}]");
}

/* Matrix appendices, "Canonical JSON": integers in [-(2**53)+1, (2**53)-1]. */
static void test_integer_range(void **state)
{
    (void)state;
    CHECK("9007199254740991", "9007199254740991");
    CHECK("-9007199254740991", "-9007199254740991");
    CHECK("[9007199254740991,-9007199254740991]", "[9007199254740991,-9007199254740991]");
    CHECK_ERR("9007199254740992",
              "$: integer 9007199254740992 is outside the canonical range +-(2^53-1)\n");
    CHECK_ERR("{\"a\":[0,-9007199254740992]}",
              "$.a[1]: integer -9007199254740992 is outside the canonical range +-(2^53-1)\n");
    CHECK_ERR("[9223372036854775807]",
              "$[0]: integer 9223372036854775807 is outside the canonical range +-(2^53-1)\n");
    /* Beyond int64 Jansson refuses at parse; the path is found on a second reading. */
    CHECK_ERR("99999999999999999999",
              "$: integer outside the canonical range +-(2^53-1) (line 1, column 20)\n");
}

/* "Float values are not permitted by this encoding", not even integral ones. */
static void test_floats_rejected(void **state)
{
    (void)state;
    CHECK_ERR("1.0", "$: float 1 is not allowed in canonical JSON\n");
    CHECK_ERR("1e2", "$: float 100 is not allowed in canonical JSON\n");
    CHECK_ERR("-0.0", "$: float -0 is not allowed in canonical JSON\n");
    CHECK_ERR("{\"content\":{\"pdus\":[{},{},{},{\"depth\":1.5}]}}",
              "$.content.pdus[3].depth: float 1.5 is not allowed in canonical JSON\n");
    CHECK_ERR("[0.1]", "$[0]: float 0.1 is not allowed in canonical JSON\n");
}

static void test_error_paths(void **state)
{
    (void)state;
    CHECK_ERR("{\"a\":[1,2,{\"b\":0.5}]}",
              "$.a[2].b: float 0.5 is not allowed in canonical JSON\n");
    /* Keys that are not identifiers are shown JSON-quoted. */
    CHECK_ERR("{\"signatures\":{\"example.org\":{\"ed25519:1\":2.5}}}",
              "$.signatures[\"example.org\"][\"ed25519:1\"]: float 2.5 is not allowed in canonical "
              "JSON\n");
    CHECK_ERR("{\"\":{\"1a\":{\"a\\nb\":{\"_x9\":1.5}}}}",
              "$[\"\"][\"1a\"][\"a\\nb\"]._x9: float 1.5 is not allowed in canonical JSON\n");
    /* The first offending value in canonical order is the one reported. */
    CHECK_ERR("{\"z\":1.5,\"y\":2.5}", "$.y: float 2.5 is not allowed in canonical JSON\n");
}

static void test_parse_errors(void **state)
{
    (void)state;
    CHECK_ERR("{\"a\":1,\"a\":2}", "line 1, column 10: duplicate object key near '\"a\"'\n");
    CHECK_ERR("{\"a\":1,\n\"b\":2,\"b\":3}",
              "line 2, column 9: duplicate object key near '\"b\"'\n");
    CHECK_ERR("{} x", "line 1, column 4: end of file expected near 'x'\n");
    CHECK_ERR("1 2", "line 1, column 3: end of file expected near '2'\n");
    CHECK_ERR("", "line 1, column 0: unexpected token near end of file\n");
    CHECK_ERR("\"\\ud800\"", "line 1, column 8: invalid Unicode '\\uD800' near '\"\\ud800\"'\n");
    CHECK_ERR("\"\\udc00\"", "line 1, column 8: invalid Unicode '\\uDC00' near '\"\\udc00\"'\n");
    CHECK_ERR("\"\xff\"", "line 1, column 1: unable to decode byte 0xff near '\"'\n");
    /* A surrogate written as raw UTF-8, and an overlong encoding. */
    CHECK_ERR("\"\xed\xa0\x80\"", "line 1, column 1: unable to decode byte 0xed near '\"'\n");
    CHECK_ERR("\"\xc0\xaf\"", "line 1, column 1: unable to decode byte 0xc0 near '\"'\n");
    CHECK_ERR("[1,]", "line 1, column 4: unexpected token near ']'\n");
    CHECK_ERR("NaN", "line 1, column 3: invalid token near 'NaN'\n");
    /* A raw NUL outside a \u0000 escape is a control character. */
    CHECK_ERR("\"a\0b\"", "line 1, column 2: control character 0x0 near '\"a'\n");
    /* Jansson 2.14 refuses NUL in keys even with JSON_ALLOW_NUL. */
    CHECK_ERR("{\"a\\u0000b\":1}",
              "line 1, column 11: NUL byte in object key not supported near '\"a\\u0000b\"'\n");
    /* Jansson quotes the input near the error: it stays one printable line. */
    CHECK_ERR("\"\\u0\n\x01\"", "line 2, column 0: invalid escape near '\"\\u0\\x0a'\n");
    CHECK_ERR("[\"\xe6\x97\xa5\", \x7f]", "line 1, column 7: invalid token near '\\x7f'\n");
    struct buf out = BUF_INIT, err = BUF_INIT;
    json_t *v = NULL;
    assert_int_equal(cjson_parse(NULL, 0, &v, &err), CH_EINVAL);
    assert_null(v);
    assert_true(err.len > 0);
    buf_free(&out);
    buf_free(&err);
}

static void test_nul(void **state)
{
    (void)state;
    CHECK("\"a\\u0000b\"", "\"a\\u0000b\"");
    CHECK("{\"k\":\"\\u0000\"}", "{\"k\":\"\\u0000\"}");
    /* Keys with NUL only come from code; they sort by bytes, NUL first. */
    json_t *o = json_object();
    assert_int_equal(json_object_setn_new(o, "a\0b", 3, json_integer(1)), 0);
    assert_int_equal(json_object_setn_new(o, "a", 1, json_integer(2)), 0);
    assert_int_equal(json_object_setn_new(o, "a\x01", 2, json_integer(3)), 0);
    struct buf out = BUF_INIT, err = BUF_INIT;
    assert_int_equal(cjson_encode(o, &out, &err), 0);
    const char want[] = "{\"a\":2,\"a\\u0000b\":1,\"a\\u0001\":3}";
    assert_int_equal(out.len, sizeof(want) - 1);
    assert_memory_equal(buf_data(&out), want, out.len);
    json_decref(o);
    buf_free(&out);
    buf_free(&err);
}

/* Values built in code may hold what the parser never yields. */
static void test_encode_built_values(void **state)
{
    (void)state;
    struct buf out = BUF_INIT, err = BUF_INIT;
    json_t *o = json_object();
    json_t *a = json_array();
    json_object_set_new(o, "list", a);
    json_array_append_new(a, json_true());
    json_array_append_new(a, json_stringn_nocheck("\xed\xa0\x80", 3)); /* a surrogate */
    buf_append_str(&out, "keep");
    assert_int_equal(cjson_encode(o, &out, &err), CH_EINVAL);
    assert_int_equal(out.len, 4);
    assert_memory_equal(buf_data(&out), "keep", 4);
    assert_buf_is(&err, "$.list[1]: string is not valid UTF-8\n");
    json_array_remove(a, 1);
    json_object_set_new_nocheck(o, "\xc0\x80", json_null()); /* overlong NUL */
    buf_reset(&err);
    assert_int_equal(cjson_encode(o, &out, &err), CH_EINVAL);
    assert_int_equal(out.len, 4);
    assert_buf_is(&err, "$: object key is not valid UTF-8\n");
    json_object_del(o, "\xc0\x80");
    json_object_set_new(o, "n", json_integer(CJSON_INT_MAX + 1));
    buf_reset(&err);
    assert_int_equal(cjson_encode(o, &out, &err), CH_EINVAL);
    json_object_set_new(o, "n", json_integer(-CJSON_INT_MAX));
    buf_reset(&err);
    assert_int_equal(cjson_encode(o, &out, &err), 0);
    assert_int_equal(err.len, 0);
    const char want[] = "keep{\"list\":[true],\"n\":-9007199254740991}";
    assert_int_equal(out.len, sizeof(want) - 1);
    assert_memory_equal(buf_data(&out), want, out.len);
    /* A cycle ends at the depth limit instead of looping. */
    json_array_append(a, o);
    buf_reset(&out);
    buf_reset(&err);
    assert_int_equal(cjson_encode(o, &out, &err), CH_EINVAL);
    assert_int_equal(out.len, 0);
    const char tail[] = ": nested deeper than 2048 levels\n";
    assert_int_equal(err.len, 1 + 1024 * strlen(".list[1]") + sizeof(tail) - 1);
    assert_memory_equal(buf_data(&err), "$.list[1].list[1].list[1]", 25);
    assert_memory_equal(buf_tail(&err) - (sizeof(tail) - 1), tail, sizeof(tail) - 1);
    json_array_remove(a, 1);
    json_decref(o);
    buf_free(&out);
    buf_free(&err);
}

/*
 * Jansson accepts JSON_PARSER_MAX_DEPTH (2048) nested values, scalars counted:
 * 2047 containers around a scalar. The encoder writes them all.
 */
static void test_deep_nesting(void **state)
{
    (void)state;
    size_t depth = JSON_PARSER_MAX_DEPTH - 1;
    struct buf in = BUF_INIT, out = BUF_INIT, err = BUF_INIT;
    for (size_t i = 0; i < depth; i++)
        buf_append_str(&in, i % 2 ? "{\"k\": " : "[ ");
    buf_append_str(&in, "1");
    for (size_t i = depth; i-- > 0;)
        buf_append_str(&in, i % 2 ? "}" : "]");
    if (cjson_canonicalize(buf_data(&in), in.len, &out, &err) != 0)
        fail_msg("%.*s", (int)err.len, buf_data(&err));
    assert_int_equal(out.len, (depth + 1) / 2 + depth / 2 * strlen("{\"k\":") + 1 + depth);
    assert_memory_equal(buf_data(&out), "[{\"k\":[{\"k\":", 12);
    /* 2048 empty arrays: the deepest container nesting Jansson yields. */
    buf_reset(&in);
    buf_reset(&out);
    for (size_t i = 0; i < JSON_PARSER_MAX_DEPTH; i++)
        buf_append_str(&in, "[");
    for (size_t i = 0; i < JSON_PARSER_MAX_DEPTH; i++)
        buf_append_str(&in, "]");
    assert_int_equal(cjson_canonicalize(buf_data(&in), in.len, &out, &err), 0);
    assert_int_equal(out.len, in.len);
    assert_memory_equal(buf_data(&out), buf_data(&in), in.len);
    /* A scalar inside them is one level too many for the parser. */
    buf_reset(&in);
    buf_reset(&out);
    for (size_t i = 0; i < JSON_PARSER_MAX_DEPTH; i++)
        buf_append_str(&in, "[");
    buf_append_str(&in, "1");
    for (size_t i = 0; i < JSON_PARSER_MAX_DEPTH; i++)
        buf_append_str(&in, "]");
    assert_int_equal(cjson_canonicalize(buf_data(&in), in.len, &out, &err), CH_EINVAL);
    assert_int_equal(out.len, 0);
    assert_non_null(memmem(buf_data(&err), err.len, "maximum parsing depth reached", 29));
    buf_free(&in);
    buf_free(&out);
    buf_free(&err);
}

/* --- cross-check with python3-canonicaljson on generated values ------------------------- */

#define CROSS_VALUES 200

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32) % n;
}

static uint32_t random_cp(void)
{
    static const uint32_t special[] = {0x22,   0x5c,   0x2f,    0x7f,     0x2028, 0x2029,
                                       0xfb01, 0xffff, 0x1f600, 0x10ffff, 0x301,  0xe9};
    switch (rnd(8)) {
    case 0:
        return rnd(0x20);
    case 1:
        return special[rnd(ARRAY_LEN(special))];
    case 2:
        return 0x80 + rnd(0x800 - 0x80);
    case 3: {
        uint32_t cp = 0x800 + rnd(0x10000 - 0x800);
        return cp >= 0xd800 && cp <= 0xdfff ? cp - 0x800 : cp;
    }
    case 4:
        return 0x10000 + rnd(0x100000);
    default:
        return 0x20 + rnd(0x5f);
    }
}

static void put_utf8(struct buf *b, uint32_t cp)
{
    char s[4];
    size_t n;
    if (cp < 0x80) {
        s[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        s[0] = (char)(0xc0 | cp >> 6), s[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    } else if (cp < 0x10000) {
        s[0] = (char)(0xe0 | cp >> 12), s[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        s[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    } else {
        s[0] = (char)(0xf0 | cp >> 18), s[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        s[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), s[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    }
    buf_append(b, s, n);
}

/* A JSON string for cps: raw where JSON allows it, or escaped, at random. */
static void gen_string(struct buf *b, const uint32_t *cps, size_t n)
{
    buf_append_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = cps[i];
        int must = cp < 0x20 || cp == '"' || cp == '\\';
        if (!must && rnd(3))
            put_utf8(b, cp);
        else if (cp >= 0x10000)
            buf_appendf(b, rnd(2) ? "\\u%04x\\u%04x" : "\\u%04X\\u%04X",
                        0xd800 + ((cp - 0x10000) >> 10), 0xdc00 + ((cp - 0x10000) & 0x3ff));
        else
            buf_appendf(b, rnd(2) ? "\\u%04x" : "\\u%04X", cp);
    }
    buf_append_str(b, "\"");
}

static void gen_ws(struct buf *b)
{
    static const char *ws[] = {"", "", "", " ", "\t", "\r\n  "};
    buf_append_str(b, ws[rnd(ARRAY_LEN(ws))]);
}

static void gen_value(struct buf *b, int depth)
{
    uint32_t cps[8][8];
    size_t lens[8];
    gen_ws(b);
    switch (depth < 4 ? rnd(9) : 2 + rnd(7)) {
    case 0: {
        size_t n = rnd(6), have = 0;
        buf_append_str(b, "{");
        for (size_t i = 0; i < n; i++) {
            size_t len = rnd(5);
            for (size_t k = 0; k < len; k++)
                cps[have][k] = random_cp() | 1; /* no NUL: Jansson refuses it in keys */
            int dup = 0;
            for (size_t j = 0; j < have; j++)
                dup |= lens[j] == len && memcmp(cps[j], cps[have], len * sizeof(uint32_t)) == 0;
            if (dup)
                continue;
            lens[have] = len;
            if (have)
                buf_append_str(b, ",");
            gen_ws(b);
            gen_string(b, cps[have], len);
            gen_ws(b);
            buf_append_str(b, ":");
            gen_value(b, depth + 1);
            have++;
        }
        buf_append_str(b, "}");
        break;
    }
    case 1: {
        size_t n = rnd(5);
        buf_append_str(b, "[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                buf_append_str(b, ",");
            gen_value(b, depth + 1);
        }
        buf_append_str(b, "]");
        break;
    }
    case 2:
    case 3: {
        size_t len = rnd(9);
        for (size_t k = 0; k < len; k++)
            cps[0][k] = random_cp();
        gen_string(b, cps[0], len);
        break;
    }
    case 4: {
        static const char *ints[] = {"0", "-0", "1", "-1", "9007199254740991", "-9007199254740991"};
        buf_append_str(b, ints[rnd(ARRAY_LEN(ints))]);
        break;
    }
    case 5:
        buf_appendf(b, "%lld", (long long)rnd(2000000000) * (rnd(2) ? 4503599 : -1));
        break;
    case 6:
        buf_append_str(b, "true");
        break;
    case 7:
        buf_append_str(b, "false");
        break;
    default:
        buf_append_str(b, "null");
    }
    gen_ws(b);
}

static const char cross_script[] =
    "import sys, json, canonicaljson\n"
    "for line in sys.stdin.buffer:\n"
    "    v = json.loads(line)\n"
    "    sys.stdout.write(canonicaljson.encode_canonical_json(v).hex() + '\\n')\n";

static void test_cross_canonicaljson(void **state)
{
    (void)state;
    if (access(PYTHON, X_OK) != 0)
        skip();
    char in_path[] = "/tmp/test_cjson_in.XXXXXX";
    char py_path[] = "/tmp/test_cjson_py.XXXXXX";
    int in_fd = mkstemp(in_path), py_fd = mkstemp(py_path);
    assert_true(in_fd >= 0 && py_fd >= 0);
    assert_int_equal(write(py_fd, cross_script, sizeof(cross_script) - 1),
                     (ssize_t)sizeof(cross_script) - 1);
    close(py_fd);

    struct buf inputs = BUF_INIT, mine = BUF_INIT, err = BUF_INIT, text = BUF_INIT;
    for (int i = 0; i < CROSS_VALUES; i++) {
        buf_reset(&text);
        gen_value(&text, 0);
        if (cjson_canonicalize(buf_data(&text), text.len, &mine, &err) != 0)
            fail_msg("%.*s: %.*s", (int)text.len, buf_data(&text), (int)err.len, buf_data(&err));
        buf_append_str(&mine, "\n");
        /* Whitespace was only " \t\r\n" between tokens: one line per value for Python. */
        for (size_t k = 0; k < text.len; k++)
            if (buf_data(&text)[k] == '\n' || buf_data(&text)[k] == '\r')
                buf_data(&text)[k] = ' ';
        buf_append_slice(&inputs, buf_slice(&text));
        buf_append_str(&inputs, "\n");
    }
    assert_int_equal(write(in_fd, buf_data(&inputs), inputs.len), (ssize_t)inputs.len);
    close(in_fd);

    char cmd[256];
    snprintf(cmd, sizeof(cmd), "%s %s < %s", PYTHON, py_path, in_path);
    FILE *py = popen(cmd, "r");
    assert_non_null(py);
    struct buf theirs = BUF_INIT; /* one hex line per value */
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof(chunk), py)) > 0)
        buf_append(&theirs, chunk, got);
    int status = pclose(py);
    unlink(in_path);
    unlink(py_path);
    assert_int_equal(status, 0);

    const char *m = buf_data(&mine), *m_end = m + mine.len;
    const char *p = buf_data(&theirs), *p_end = p + theirs.len;
    const char *t = buf_data(&inputs), *t_end = t + inputs.len;
    int n = 0;
    for (; m < m_end && p < p_end; n++) {
        const char *m_nl = memchr(m, '\n', (size_t)(m_end - m));
        const char *p_nl = memchr(p, '\n', (size_t)(p_end - p));
        const char *t_nl = memchr(t, '\n', (size_t)(t_end - t));
        assert_true(m_nl && p_nl && t_nl);
        size_t len = (size_t)(m_nl - m);
        int same = (size_t)(p_nl - p) == 2 * len;
        for (size_t k = 0; same && k < len; k++) {
            char hex[3];
            snprintf(hex, sizeof(hex), "%02x", (unsigned char)m[k]);
            same = p[2 * k] == hex[0] && p[2 * k + 1] == hex[1];
        }
        if (!same)
            fail_msg("value %d: input %.*s\nchappe %.*s\npython %.*s", n, (int)(t_nl - t), t,
                     (int)len, m, (int)(p_nl - p), p);
        m = m_nl + 1;
        p = p_nl + 1;
        t = t_nl + 1;
    }
    assert_int_equal(n, CROSS_VALUES);
    assert_true(m == m_end && p == p_end);
    buf_free(&theirs);
    buf_free(&inputs);
    buf_free(&mine);
    buf_free(&err);
    buf_free(&text);
}

/* Integers beyond int64 fail inside Jansson's parser; the error still names their JSON path. */
static void test_int64_overflow_path(void **state)
{
    (void)state;
    CHECK_ERR("{\"n\":[9223372036854775808]}",
              "$.n[0]: integer outside the canonical range +-(2^53-1) (line 1, column 25)\n");
    CHECK_ERR("{\"a b\":{\"x\":[1,-99999999999999999999]}}",
              "$[\"a b\"].x[1]: integer outside the canonical range +-(2^53-1) (line 1, column "
              "36)\n");
    /* INT64_MIN itself parses, and the encoder names it. */
    CHECK_ERR("[-9223372036854775808]",
              "$[0]: integer -9223372036854775808 is outside the canonical range +-(2^53-1)\n");
}

/* The fast path agrees with the encoder: yes exactly for canonical bytes, conservative no. */
static void test_is_canonical(void **state)
{
    (void)state;
    static const char *yes[] = {
        "{}",
        "[]",
        "0",
        "-1",
        "9007199254740991",
        "-9007199254740991",
        "\"a\\u001f\\n\"",
        "{\"a\":1,\"b\":[true,false,null]}",
        "{\"\":1,\"a\":{}}",
        "\"\\\\\\\"\"",
        "{\"a\\u0001\":2,\"a\\n\":1}",
        "{\"\xef\xac\x81\":1,\"\xf0\x9f\x98\x80\":2}",
        "\"\x7f\xe2\x80\xa8\"",
    };
    static const char *no[] = {
        "{ }",
        "01",
        "-0",
        "1.0",
        "1e2",
        "9007199254740992",
        "\"\\u000a\"",
        "\"\\/\"",
        "{\"b\":1,\"a\":2}",
        "{\"a\":1,\"a\":2}",
        "\"\\u001F\"",
        "[1,]",
        "{\"\\u0000\":1}",
        "tru",
        "\"\x01\"",
        "",
        "[1] ",
        "\"\xc0\x80\"",
        "\"\xed\xa0\x80\"",
        "\"\\u0020\"",
        "{\"\xf0\x9f\x98\x80\":2,\"\xef\xac\x81\":1}",
    };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (!cjson_is_canonical(yes[i], strlen(yes[i])))
            fail_msg("not recognised as canonical: %s", yes[i]);
        struct buf out = BUF_INIT, err = BUF_INIT;
        assert_int_equal(cjson_canonicalize(yes[i], strlen(yes[i]), &out, &err), 0);
        assert_buf_is(&out, yes[i]);
        buf_free(&out);
        buf_free(&err);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (cjson_is_canonical(no[i], strlen(no[i])))
            fail_msg("wrongly taken as canonical: %s", no[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int64_overflow_path), cmocka_unit_test(test_is_canonical),
        cmocka_unit_test(test_spec_examples),       cmocka_unit_test(test_scalars_and_empty),
        cmocka_unit_test(test_control_characters),  cmocka_unit_test(test_unicode_raw),
        cmocka_unit_test(test_key_order),           cmocka_unit_test(test_integer_range),
        cmocka_unit_test(test_floats_rejected),     cmocka_unit_test(test_error_paths),
        cmocka_unit_test(test_parse_errors),        cmocka_unit_test(test_nul),
        cmocka_unit_test(test_encode_built_values), cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_cross_canonicaljson),
    };
    return cmocka_run_group_tests_name("cjson", tests, NULL, NULL);
}
