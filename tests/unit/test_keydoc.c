/* test_keydoc.c -- other servers' key documents: direct, through a notary, and co-signed. */
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

#include "chappe/b64.h"
#include "chappe/cjson.h"
#include "chappe/config.h"
#include "chappe/keydoc.h"
#include "chappe/keys.h"
#include "chappe/sign.h"
#include "chappe/util.h"

#define PY "/usr/bin/python3"

/* 2023-11-14T22:13:20Z: "now" for every test. */
#define NOW   1700000000000ULL
#define DAY   (24ULL * 3600 * 1000)
#define WEEK  (7 * DAY)
#define LATER (NOW + DAY)

/*
 * Made once by python3-signedjson 1.1 and python3-canonicaljson with this script
 * (ed25519 is deterministic: running it again prints the same text). It prints
 * the seeds as "# ed25519 <version> <seed>" lines, then PY_DOC, then PY_QUERY:
 *
 *   import base64
 *   from canonicaljson import encode_canonical_json
 *   from signedjson.key import (decode_signing_key_base64, encode_verify_key_base64,
 *                               get_verify_key)
 *   from signedjson.sign import sign_json
 *
 *   def key(version, fill):
 *       seed = base64.b64encode(bytes([fill]) * 32).decode().rstrip("=")
 *       print("# ed25519", version, seed)
 *       return decode_signing_key_base64("ed25519", version, seed)
 *
 *   def vk(k):
 *       return encode_verify_key_base64(get_verify_key(k))
 *
 *   k1, k2, old, notary = key("a_one", 1), key("b_two", 2), key("old", 3), key("n", 4)
 *   doc = {
 *       "server_name": "py.example",
 *       "verify_keys": {"ed25519:a_one": {"key": vk(k1)}, "ed25519:b_two": {"key": vk(k2)}},
 *       "old_verify_keys": {"ed25519:old": {"key": vk(old), "expired_ts": 1600000000000}},
 *       "valid_until_ts": 1700086400000,
 *   }
 *   doc = sign_json(sign_json(doc, "py.example", k1), "py.example", k2)
 *   print(encode_canonical_json(doc).decode())
 *   doc = sign_json(doc, "notary.example", notary)
 *   print(encode_canonical_json({"server_keys": [doc]}).decode())
 */
#define PY_SEED_1      "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"
#define PY_SEED_2      "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI"
#define PY_SEED_NOTARY "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ"
#define PY_PK_1        "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w"
#define PY_PK_2        "gTl3Dqh9F19Wo1Rmw0x+zMuNipG07jeiXfYPW4/Js5Q"
#define PY_PK_OLD      "7UkoxijRwsbq6QM4kFmVYSlZJzpcY/k2NsFGFKyHN9E"
#define PY_SIG_1                                                                                   \
    "mqptYORk/iZqg0ZsSMzzEyxoUHuUTxU33atDaQSk2RJ8nZz6ocfV+CgAUmXVhszzXZpxzHvjPH1gEleGiTKeAQ"
#define PY_SIG_2                                                                                   \
    "86FW10ksTlxGZ63XReiOVbOhaj9y2AeUB9NDUPcbPuetoip5LbGeZ7E3k7Cil0o40vxqUunBN3dpCJWUAxLfCQ"
#define PY_SIG_NOTARY                                                                              \
    "Hx92875MaZ20sdQXbK08CQqzGks+iskjJIyg3XuiSUy5+nJ2VJIKoMOVQiVcAajgK4OMztW8dugFyQpI41kuDw"
#define PY_VERIFY_KEYS                                                                             \
    "\"valid_until_ts\":1700086400000,\"verify_keys\":{\"ed25519:a_one\":{\"key\":\"" PY_PK_1      \
    "\"},\"ed25519:b_two\":{\"key\":\"" PY_PK_2 "\"}}"
#define PY_OLD                                                                                     \
    "\"old_verify_keys\":{\"ed25519:old\":{\"expired_ts\":1600000000000,\"key\":\"" PY_PK_OLD      \
    "\"}},\"server_name\":\"py.example\","
#define PY_ORIGIN_SIGS                                                                             \
    "\"py.example\":{\"ed25519:a_one\":\"" PY_SIG_1 "\",\"ed25519:b_two\":\"" PY_SIG_2 "\"}"
#define PY_DOC "{" PY_OLD "\"signatures\":{" PY_ORIGIN_SIGS "}," PY_VERIFY_KEYS "}"
#define PY_QUERY                                                                                   \
    "{\"server_keys\":[{" PY_OLD                                                                   \
    "\"signatures\":{\"notary.example\":{\"ed25519:n\":\"" PY_SIG_NOTARY "\"}," PY_ORIGIN_SIGS     \
    "}," PY_VERIFY_KEYS "}]}"

/* ---- helpers ---- */

/* Keys from "ed25519 <version> <seed>" lines; caller frees with sign_keys_free. */
static struct sign_key *keys_from(const char *lines, size_t want)
{
    struct sign_key *keys = NULL;
    size_t n = 0;
    struct buf err = BUF_INIT;
    if (sign_parse_keys(lines, strlen(lines), &keys, &n, &err) != 0)
        fail_msg("sign_parse_keys: %.*s", (int)err.len, buf_data(&err));
    assert_int_equal(n, want);
    buf_free(&err);
    return keys;
}

/* n fresh random keys (sign_keygen), for the documents made in C. */
static struct sign_key *fresh_keys(size_t want)
{
    struct buf lines = BUF_INIT;
    for (size_t i = 0; i < want; i++)
        assert_int_equal(sign_keygen(&lines), 0);
    assert_int_equal(buf_append(&lines, "", 1), 0);
    struct sign_key *keys = keys_from(buf_data(&lines), want);
    buf_free_secret(&lines);
    return keys;
}

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    if (v == NULL)
        fail_msg("bad test JSON: %s: %s", e.text, text);
    return v;
}

static void set_key(json_t *obj, const struct sign_key *k)
{
    struct buf pk = BUF_INIT;
    assert_int_equal(sign_public_b64(k, &pk), 0);
    assert_int_equal(
        json_object_set_new(obj, k->id, json_pack("{s:s%}", "key", buf_data(&pk), pk.len)), 0);
    buf_free(&pk);
}

/* An unsigned document of name listing keys[0 .. n) as verify_keys. */
static json_t *make_doc(const char *name, uint64_t until, const struct sign_key *keys, size_t n)
{
    json_t *verify = json_object();
    assert_non_null(verify);
    for (size_t i = 0; i < n; i++)
        set_key(verify, &keys[i]);
    json_t *doc = json_pack("{s:s,s:I,s:o}", "server_name", name, "valid_until_ts",
                            (json_int_t)until, "verify_keys", verify);
    assert_non_null(doc);
    return doc;
}

static void sign_with(json_t *doc, const char *name, const struct sign_key *keys, size_t n)
{
    struct buf err = BUF_INIT;
    for (size_t i = 0; i < n; i++)
        if (sign_json(doc, name, &keys[i], &err) != 0)
            fail_msg("sign_json: %.*s", (int)err.len, buf_data(&err));
    buf_free(&err);
}

/* A signed document made in C: name, until, verify_keys keys[0 .. n), signed by all of them. */
static json_t *signed_doc(const char *name, uint64_t until, const struct sign_key *keys, size_t n)
{
    json_t *doc = make_doc(name, until, keys, n);
    sign_with(doc, name, keys, n);
    return doc;
}

/* The canonical bytes of v, NUL-terminated; caller buf_free()s. */
static struct buf body_of(const json_t *v)
{
    struct buf out = BUF_INIT, err = BUF_INIT;
    if (cjson_encode(v, &out, &err) != 0)
        fail_msg("cjson_encode: %.*s", (int)err.len, buf_data(&err));
    assert_int_equal(buf_append(&out, "", 1), 0);
    out.len--;
    buf_free(&err);
    return out;
}

/* keydoc_parse of v's encoding must succeed; d is filled (caller keydoc_free()s). */
static void parse_ok(const json_t *v, const char *expect, struct keydoc *d)
{
    struct buf body = body_of(v), err = BUF_INIT;
    int rc = keydoc_parse(buf_data(&body), body.len, expect, NOW, d, &err);
    if (rc != 0)
        fail_msg("keydoc_parse: %d: %.*s", rc, (int)err.len, buf_data(&err));
    assert_int_equal(err.len, 0);
    buf_free(&body);
    buf_free(&err);
}

/* keydoc_parse of text must fail with rc and exactly the message want, leaving d empty. */
static void text_bad(const char *text, size_t n, const char *expect, int want_rc, const char *want)
{
    struct keydoc d;
    memset(&d, 0x5a, sizeof(d));
    struct buf err = BUF_INIT;
    int rc = keydoc_parse(text, n, expect, NOW, &d, &err);
    assert_int_equal(buf_append(&err, "", 1), 0);
    if (rc != want_rc)
        fail_msg("rc %d, want %d (%s) for %s", rc, want_rc, buf_data(&err), text);
    assert_string_equal(buf_data(&err), want);
    assert_null(d.doc);
    assert_int_equal(d.nkeys, 0);
    assert_int_equal(d.valid_until_ts, 0);
    keydoc_free(&d);
    buf_free(&err);
}

static void json_bad(const json_t *v, const char *expect, int want_rc, const char *want)
{
    struct buf body = body_of(v);
    text_bad(buf_data(&body), body.len, expect, want_rc, want);
    buf_free(&body);
}

static void assert_pk(const struct keydoc_key *k, const char *b64)
{
    struct buf raw = BUF_INIT;
    assert_int_equal(b64_decode(&raw, b64, strlen(b64)), 0);
    assert_int_equal(raw.len, 32);
    assert_memory_equal(k->pk, buf_data(&raw), 32);
    buf_free(&raw);
}

static void assert_err(struct buf *err, const char *want)
{
    assert_int_equal(buf_append(err, "", 1), 0);
    assert_string_equal(buf_data(err), want);
    buf_reset(err);
}

/* ---- documents from python3-signedjson ---- */

static void test_python_document(void **state)
{
    (void)state;
    struct keydoc d;
    struct buf err = BUF_INIT;
    assert_int_equal(keydoc_parse(PY_DOC, strlen(PY_DOC), "py.example", NOW, &d, &err), 0);
    assert_int_equal(err.len, 0);
    assert_string_equal(d.server_name, "py.example");
    assert_int_equal(d.valid_until_ts, 1700086400000ULL);
    assert_int_equal(d.nkeys, 3);
    assert_int_equal(d.ncurrent, 2);
    assert_int_equal(d.nignored, 0);
    const struct keydoc_key *k1 = keydoc_find_key(&d, "ed25519:a_one");
    const struct keydoc_key *k2 = keydoc_find_key(&d, "ed25519:b_two");
    const struct keydoc_key *old = keydoc_find_key(&d, "ed25519:old");
    assert_true(k1 && k2 && old);
    assert_true(k1 < d.keys + d.ncurrent && k2 < d.keys + d.ncurrent);
    assert_pk(k1, PY_PK_1);
    assert_pk(k2, PY_PK_2);
    assert_pk(old, PY_PK_OLD);
    assert_false(k1->old);
    assert_int_equal(k1->expired_ts, 0);
    assert_true(old->old);
    assert_int_equal(old->expired_ts, 1600000000000ULL);
    assert_null(keydoc_find_key(&d, "ed25519:nope"));
    /* The public keys are those of the seeds. */
    struct sign_key *keys =
        keys_from("ed25519 a_one " PY_SEED_1 "\ned25519 b_two " PY_SEED_2 "\n", 2);
    assert_memory_equal(k1->pk, keys[0].pk, 32);
    assert_memory_equal(k2->pk, keys[1].pk, 32);
    /* The document is kept as received, for a notary to serve again. */
    struct buf again = body_of(d.doc);
    assert_string_equal(buf_data(&again), PY_DOC);
    /* Made in C with the same keys and fields, the signatures are signedjson's. */
    json_t *mine = parse(PY_DOC);
    json_object_del(mine, "signatures");
    sign_with(mine, "py.example", keys, 2);
    struct buf mine_body = body_of(mine);
    assert_string_equal(buf_data(&mine_body), PY_DOC);
    /* Another expected name, or a later now, and it is refused. */
    text_bad(PY_DOC, strlen(PY_DOC), "py.example:8448", CH_EINVAL,
             "server_name is \"py.example\", expected \"py.example:8448\"\n");
    json_decref(mine);
    buf_free(&mine_body);
    buf_free(&again);
    sign_keys_free(keys, 2);
    keydoc_free(&d);
    assert_null(d.doc);
    buf_free(&err);
}

static void test_python_query_response(void **state)
{
    (void)state;
    struct sign_key *nk = keys_from("ed25519 n " PY_SEED_NOTARY "\n", 1);
    struct keydoc_key trusted = {.id = "ed25519:n"};
    memcpy(trusted.pk, nk->pk, 32);
    struct keydoc_notary notary = {"notary.example", &trusted, 1};
    struct keydoc *docs = NULL;
    size_t n = 0;
    struct buf err = BUF_INIT;
    assert_int_equal(keydoc_parse_query_response(PY_QUERY, strlen(PY_QUERY), "py.example", &notary,
                                                 NOW, &docs, &n, &err),
                     0);
    assert_int_equal(err.len, 0);
    assert_int_equal(n, 1);
    assert_int_equal(docs[0].ncurrent, 2);
    assert_int_equal(docs[0].nkeys, 3);
    assert_pk(keydoc_find_key(&docs[0], "ed25519:a_one"), PY_PK_1);
    /* chappe's own co-signature of the origin document is signedjson's, byte for byte. */
    struct keydoc d;
    assert_int_equal(keydoc_parse(PY_DOC, strlen(PY_DOC), "py.example", NOW, &d, &err), 0);
    json_t *cosigned = NULL;
    assert_int_equal(keydoc_cosign(d.doc, "notary.example", nk, 1, &cosigned, &err), 0);
    json_t *wrapped = json_pack("{s:[O]}", "server_keys", cosigned);
    struct buf body = body_of(wrapped);
    assert_string_equal(buf_data(&body), PY_QUERY);
    json_decref(wrapped);
    json_decref(cosigned);
    buf_free(&body);
    keydoc_free(&d);
    keydoc_free_array(docs, n);
    sign_keys_free(nk, 1);
    buf_free(&err);
}

/* ---- documents made in C ---- */

static void test_valid_document(void **state)
{
    (void)state;
    struct sign_key *keys = fresh_keys(2);
    json_t *doc = signed_doc("c.example", LATER, keys, 2);
    struct keydoc d;
    parse_ok(doc, "c.example", &d);
    assert_string_equal(d.server_name, "c.example");
    assert_int_equal(d.valid_until_ts, LATER);
    assert_int_equal(d.nkeys, 2);
    assert_int_equal(d.ncurrent, 2);
    for (size_t i = 0; i < 2; i++) {
        const struct keydoc_key *k = keydoc_find_key(&d, keys[i].id);
        assert_non_null(k);
        assert_memory_equal(k->pk, keys[i].pk, 32);
        assert_false(k->old);
    }
    /* The document parsed from the body, held once: by d. */
    assert_non_null(d.doc);
    assert_int_equal(d.doc->refcount, 1);
    keydoc_free(&d);
    /* unsigned is not covered by the signatures: adding it changes nothing. */
    assert_int_equal(json_object_set_new(doc, "unsigned", json_pack("{s:i}", "age", 5)), 0);
    parse_ok(doc, "c.example", &d);
    keydoc_free(&d);
    /* Other servers' signatures are not looked at, however broken. */
    json_t *sigs = json_object_get(doc, "signatures");
    assert_int_equal(json_object_set_new(sigs, "other.example", json_string("junk")), 0);
    parse_ok(doc, "c.example", &d);
    keydoc_free(&d);
    /* IP literal and port: the name is compared exactly. */
    json_t *ip = signed_doc("[::1]:8448", LATER, keys, 1);
    parse_ok(ip, "[::1]:8448", &d);
    assert_string_equal(d.server_name, "[::1]:8448");
    keydoc_free(&d);
    json_bad(ip, "[0::1]:8448", CH_EINVAL,
             "server_name is \"[::1]:8448\", expected \"[0::1]:8448\"\n");
    json_decref(ip);
    json_decref(doc);
    sign_keys_free(keys, 2);
}

static void test_chappe_own_document(void **state)
{
    (void)state;
    /* What keys_server_document publishes, keydoc_parse accepts: the same format both ways. */
    struct sign_key *keys = fresh_keys(2);
    struct cfg_old_key old = {.id = "ed25519:gone", .key = PY_PK_OLD, .expired_ts = 42};
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.server_name = "relay.example";
    cfg.old_signing_keys = &old;
    cfg.nold_signing_keys = 1;
    cfg.key_refresh_interval_ms = DAY;
    struct keys_own own = {&cfg, keys, 2};
    struct buf body = BUF_INIT, err = BUF_INIT;
    assert_int_equal(keys_server_document(&own, NOW, &body, &err), 0);
    struct keydoc d;
    if (keydoc_parse(buf_data(&body), body.len, "relay.example", NOW, &d, &err) != 0)
        fail_msg("%.*s", (int)err.len, buf_data(&err));
    assert_int_equal(d.ncurrent, 2);
    assert_int_equal(d.nkeys, 3);
    assert_int_equal(d.valid_until_ts, NOW + DAY);
    const struct keydoc_key *k = keydoc_find_key(&d, "ed25519:gone");
    assert_non_null(k);
    assert_true(k->old);
    assert_int_equal(k->expired_ts, 42);
    assert_pk(k, PY_PK_OLD);
    keydoc_free(&d);
    buf_free(&body);
    buf_free(&err);
    sign_keys_free(keys, 2);
}

static void test_server_name(void **state)
{
    (void)state;
    struct sign_key *keys = fresh_keys(1);
    json_t *doc = signed_doc("other.example", LATER, keys, 1);
    json_bad(doc, "c.example", CH_EINVAL,
             "server_name is \"other.example\", expected \"c.example\"\n");
    /* Case matters: signatures are keyed by the name as written. */
    json_bad(doc, "Other.example", CH_EINVAL,
             "server_name is \"other.example\", expected \"Other.example\"\n");
    json_decref(doc);
    /* U+0000 inside the name is not a prefix match. */
    static const char nul[] = "{\"server_name\":\"c.example\\u0000x\",\"valid_until_ts\":1}";
    text_bad(nul, strlen(nul), "c.example", CH_EINVAL,
             "server_name is \"c.example\\x00x\", expected \"c.example\"\n");
    static const char missing[] = "{\"valid_until_ts\":1}";
    text_bad(missing, strlen(missing), "c.example", CH_EINVAL, "server_name: missing\n");
    static const char number[] = "{\"server_name\":1}";
    text_bad(number, strlen(number), "c.example", CH_EINVAL, "server_name: not a string\n");
    /* The expected name must be one. */
    text_bad(PY_DOC, strlen(PY_DOC), "bad..name", CH_EINVAL,
             "the expected server name \"bad..name\" is not a server name: empty label in server "
             "name\n");
    sign_keys_free(keys, 1);
}

static void test_not_a_document(void **state)
{
    (void)state;
    text_bad("", 0, "c.example", CH_EINVAL,
             "not JSON: line 1, column 0: unexpected token near end of file\n");
    /* Jansson refuses U+0000 in object keys: a key id cannot hide one. */
    static const char nul_key[] = "{\"verify_keys\":{\"ed25519:a\\u0000b\":{}}}";
    text_bad(nul_key, strlen(nul_key), "c.example", CH_EINVAL,
             "not JSON: line 1, column 34: NUL byte in object key not supported near "
             "'\"ed25519:a\\u0000b\"'\n");
    text_bad("[1]", 3, "c.example", CH_EINVAL, "the document is not a JSON object\n");
    static const char dup[] = "{\"server_name\":\"c.example\",\"server_name\":\"c.example\"}";
    struct keydoc d;
    struct buf err = BUF_INIT;
    assert_int_equal(keydoc_parse(dup, strlen(dup), "c.example", NOW, &d, &err), CH_EINVAL);
    assert_int_equal(buf_append(&err, "", 1), 0);
    assert_non_null(strstr(buf_data(&err), "not JSON: "));
    assert_non_null(strstr(buf_data(&err), "duplicate object key"));
    buf_free(&err);
}

static void test_valid_until(void **state)
{
    (void)state;
    struct sign_key *keys = fresh_keys(1);
    struct keydoc d;
    /* A month ahead: trusted for 7 days only (server-server API, "Publishing Keys"). */
    json_t *doc = signed_doc("c.example", NOW + 30 * DAY, keys, 1);
    parse_ok(doc, "c.example", &d);
    assert_int_equal(d.valid_until_ts, NOW + WEEK);
    keydoc_free(&d);
    json_decref(doc);
    /* Exactly 7 days, and one millisecond after now, are kept as they are. */
    doc = signed_doc("c.example", NOW + WEEK, keys, 1);
    parse_ok(doc, "c.example", &d);
    assert_int_equal(d.valid_until_ts, NOW + WEEK);
    keydoc_free(&d);
    json_decref(doc);
    doc = signed_doc("c.example", NOW + 1, keys, 1);
    parse_ok(doc, "c.example", &d);
    assert_int_equal(d.valid_until_ts, NOW + 1);
    keydoc_free(&d);
    json_decref(doc);
    /* Now or before: expired. */
    doc = signed_doc("c.example", NOW, keys, 1);
    json_bad(doc, "c.example", CH_EINVAL,
             "valid_until_ts 1700000000000 is not after now (1700000000000): the document has "
             "expired\n");
    json_decref(doc);
    doc = signed_doc("c.example", 0, keys, 1);
    assert_int_equal(json_object_set_new(doc, "valid_until_ts", json_integer(-5)), 0);
    json_bad(doc, "c.example", CH_EINVAL,
             "valid_until_ts -5 is not after now (1700000000000): the document has expired\n");
    /* Not an integer, or missing. */
    static const char real[] = "{\"server_name\":\"c.example\",\"valid_until_ts\":1.8e12}";
    text_bad(real, strlen(real), "c.example", CH_EINVAL, "valid_until_ts: not an integer\n");
    static const char str[] = "{\"server_name\":\"c.example\",\"valid_until_ts\":\"1\"}";
    text_bad(str, strlen(str), "c.example", CH_EINVAL, "valid_until_ts: not an integer\n");
    assert_int_equal(json_object_del(doc, "valid_until_ts"), 0);
    json_bad(doc, "c.example", CH_EINVAL, "valid_until_ts: missing\n");
    json_decref(doc);
    sign_keys_free(keys, 1);
}

static void test_verify_keys_shape(void **state)
{
    (void)state;
    struct sign_key *keys = fresh_keys(1);
    json_t *doc = signed_doc("c.example", LATER, keys, 1);
    json_t *vk = json_object_get(doc, "verify_keys");
    char want[256];
    /* Missing, not an object, empty, only other algorithms. */
    json_incref(vk);
    json_object_del(doc, "verify_keys");
    json_bad(doc, "c.example", CH_EINVAL, "verify_keys: missing\n");
    json_object_set_new(doc, "verify_keys", json_array());
    json_bad(doc, "c.example", CH_EINVAL, "verify_keys: not an object\n");
    json_object_set_new(doc, "verify_keys", json_object());
    json_bad(doc, "c.example", CH_EINVAL, "verify_keys: no ed25519 key\n");
    json_object_set_new(doc, "verify_keys", parse("{\"curve25519:x\": {\"key\": \"AAAA\"}}"));
    json_bad(doc, "c.example", CH_EINVAL, "verify_keys: no ed25519 key\n");
    /* Bad ids. */
    static const struct {
        const char *json, *msg;
    } ids[] = {
        {"{\"ed25519:\": {}}", "verify_keys: key id \"ed25519:\": the version must be 1 to 55 "
                               "characters of [a-zA-Z0-9_]\n"},
        {"{\"ed25519:a-b\": {}}", "verify_keys: key id \"ed25519:a-b\": the version must be 1 "
                                  "to 55 characters of [a-zA-Z0-9_]\n"},
        {"{\"ed25519:a\\\"\\u00e9\": {}}", "verify_keys: key id \"ed25519:a\\x22\\xc3\\xa9\": the "
                                           "version must be 1 to 55 characters of [a-zA-Z0-9_]\n"},
        {"{\"ed25519:" /* 56 characters */
         "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdef\": {}}",
         "verify_keys: key id \"ed25519:abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdef\""
         ": the version must be 1 to 55 characters of [a-zA-Z0-9_]\n"},
    };
    for (size_t i = 0; i < ARRAY_LEN(ids); i++) {
        json_object_set_new(doc, "verify_keys", parse(ids[i].json));
        json_bad(doc, "c.example", CH_EINVAL, ids[i].msg);
    }
    /* Bad entries. */
    static const struct {
        const char *json, *msg;
    } entries[] = {
        {"{\"ed25519:x\": \"AAAA\"}", "verify_keys.ed25519:x: not an object\n"},
        {"{\"ed25519:x\": {}}", "verify_keys.ed25519:x.key: missing or not a string\n"},
        {"{\"ed25519:x\": {\"key\": 5}}", "verify_keys.ed25519:x.key: missing or not a string\n"},
        {"{\"ed25519:x\": {\"key\": \"AAAA\"}}",
         "verify_keys.ed25519:x.key: not unpadded base64 of 32 bytes\n"},
        /* 31 and 33 bytes. */
        {"{\"ed25519:x\": {\"key\": \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}}",
         "verify_keys.ed25519:x.key: not unpadded base64 of 32 bytes\n"},
        {"{\"ed25519:x\": {\"key\": \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}}",
         "verify_keys.ed25519:x.key: not unpadded base64 of 32 bytes\n"},
        /* URL-safe alphabet. */
        {"{\"ed25519:x\": {\"key\": \"gTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5Q\"}}",
         "verify_keys.ed25519:x.key: not unpadded base64 of 32 bytes\n"},
    };
    for (size_t i = 0; i < ARRAY_LEN(entries); i++) {
        json_object_set_new(doc, "verify_keys", parse(entries[i].json));
        json_bad(doc, "c.example", CH_EINVAL, entries[i].msg);
    }
    /* More keys than a document may hold. */
    json_t *many = json_object();
    for (int i = 0; i <= KEYDOC_MAX_KEYS; i++) {
        snprintf(want, sizeof(want), "ed25519:k%d", i);
        json_object_set_new(many, want, json_pack("{s:s}", "key", PY_PK_1));
    }
    json_object_set_new(doc, "verify_keys", many);
    json_bad(doc, "c.example", CH_EINVAL, "verify_keys: more than 32 keys in the document\n");
    /*
     * Back to the signed keys, plus a key of another algorithm: skipped and
     * counted, but it is part of what was signed, so the document was signed
     * without it: the signature no longer verifies.
     */
    json_object_set(doc, "verify_keys", vk);
    struct keydoc d;
    parse_ok(doc, "c.example", &d);
    assert_int_equal(d.nignored, 0);
    keydoc_free(&d);
    json_object_set_new(vk, "curve25519:x", json_pack("{s:s}", "key", "AAAA"));
    snprintf(want, sizeof(want), "signatures.c.example.%s does not verify with verify_keys.%s\n",
             keys[0].id, keys[0].id);
    json_bad(doc, "c.example", CH_EPERM, want);
    /* Signed with it, it is accepted and noted. */
    json_object_del(doc, "signatures");
    sign_with(doc, "c.example", keys, 1);
    parse_ok(doc, "c.example", &d);
    assert_int_equal(d.nignored, 1);
    assert_int_equal(d.nkeys, 1);
    keydoc_free(&d);
    /* A padded key is accepted (as Synapse's decoder does), once signed. */
    struct buf pk = BUF_INIT;
    assert_int_equal(sign_public_b64(&keys[0], &pk), 0);
    assert_int_equal(buf_append(&pk, "=", 2), 0);
    json_object_set_new(vk, keys[0].id, json_pack("{s:s}", "key", buf_data(&pk)));
    json_object_del(doc, "signatures");
    sign_with(doc, "c.example", keys, 1);
    parse_ok(doc, "c.example", &d);
    assert_memory_equal(d.keys[0].pk, keys[0].pk, 32);
    keydoc_free(&d);
    buf_free(&pk);
    json_decref(vk);
    json_decref(doc);
    sign_keys_free(keys, 1);
}

static void test_signatures(void **state)
{
    (void)state;
    /* Fixed ids: keys are checked in the order of the body, canonical (sorted) here. */
    struct sign_key *keys = keys_from("ed25519 a " PY_SEED_1 "\ned25519 b " PY_SEED_2 "\n", 2);
    char want[512];
    /* Both keys listed, signed by only one of them: refused, whichever is missing. */
    json_t *doc = make_doc("c.example", LATER, keys, 2);
    json_t *only_b = json_deep_copy(doc);
    sign_with(only_b, "c.example", keys + 1, 1);
    json_bad(only_b, "c.example", CH_EPERM,
             "not signed by ed25519:a: no signatures.c.example.ed25519:a\n");
    json_decref(only_b);
    sign_with(doc, "c.example", keys, 1);
    json_bad(doc, "c.example", CH_EPERM,
             "not signed by ed25519:b: no signatures.c.example.ed25519:b\n");
    /* Signed by the second too: accepted. */
    sign_with(doc, "c.example", keys + 1, 1);
    struct keydoc d;
    parse_ok(doc, "c.example", &d);
    keydoc_free(&d);
    /* A tampered field: the first signature checked fails. */
    json_t *tampered = json_deep_copy(doc);
    json_object_set_new(tampered, "valid_until_ts", json_integer((json_int_t)(LATER + 1)));
    snprintf(want, sizeof(want), "%s",
             "signatures.c.example.ed25519:a does not verify with verify_keys.ed25519:a\n");
    json_bad(tampered, "c.example", CH_EPERM, want);
    json_decref(tampered);
    /* An added field. */
    tampered = json_deep_copy(doc);
    json_object_set_new(tampered, "extra", json_true());
    json_bad(tampered, "c.example", CH_EPERM, want);
    json_decref(tampered);
    /* The first signature good, the second one a's: the second key is checked too. */
    tampered = json_deep_copy(doc);
    json_t *mine = json_object_get(json_object_get(tampered, "signatures"), "c.example");
    json_object_set(mine, "ed25519:b", json_object_get(mine, "ed25519:a"));
    json_bad(tampered, "c.example", CH_EPERM,
             "signatures.c.example.ed25519:b does not verify with verify_keys.ed25519:b\n");
    json_decref(tampered);
    /* A key swapped for another one: what was signed changed, nothing verifies. */
    tampered = json_deep_copy(doc);
    json_object_set_new(json_object_get(tampered, "verify_keys"), "ed25519:b",
                        json_pack("{s:s}", "key", PY_PK_OLD));
    json_bad(tampered, "c.example", CH_EPERM, want);
    json_decref(tampered);
    /* Signed as another server: not a signature by c.example. */
    tampered = make_doc("c.example", LATER, keys, 1);
    sign_with(tampered, "d.example", keys, 1);
    snprintf(want, sizeof(want), "not signed by %s: no signatures.c.example.%s\n", keys[0].id,
             keys[0].id);
    json_bad(tampered, "c.example", CH_EPERM, want);
    /* No signatures at all, signatures not an object, a signature not base64. */
    json_object_del(tampered, "signatures");
    json_bad(tampered, "c.example", CH_EPERM, want);
    json_object_set_new(tampered, "signatures", json_array());
    json_bad(tampered, "c.example", CH_EINVAL, "$.signatures: not an object\n");
    json_object_set_new(tampered, "signatures",
                        json_pack("{s:{s:s}}", "c.example", keys[0].id, "not base64!"));
    snprintf(want, sizeof(want),
             "$.signatures.c.example.%s: not unpadded base64 of a 64-byte signature\n", keys[0].id);
    json_bad(tampered, "c.example", CH_EINVAL, want);
    json_decref(tampered);
    /* A value that cannot be canonical JSON cannot have been signed. */
    static const char big[] =
        "{\"server_name\":\"c.example\",\"valid_until_ts\":1800000000000,\"verify_keys\":{"
        "\"ed25519:x\":{\"key\":\"" PY_PK_1 "\"}},\"n\":1.5,\"signatures\":{\"c.example\":{"
        "\"ed25519:x\":\"" PY_SIG_1 "\"}}}";
    text_bad(big, strlen(big), "c.example", CH_EINVAL,
             "$.n: float 1.5 is not allowed in canonical JSON\n");
    json_decref(doc);
    sign_keys_free(keys, 2);
}

static void test_old_verify_keys(void **state)
{
    (void)state;
    struct sign_key *keys = fresh_keys(1);
    json_t *doc = make_doc("c.example", LATER, keys, 1);
    json_object_set_new(doc, "old_verify_keys",
                        parse("{\"ed25519:old1\": {\"key\": \"" PY_PK_OLD "\", \"expired_ts\": 5},"
                              " \"ed25519:old2\": {\"key\": \"" PY_PK_2 "\", \"expired_ts\": 0},"
                              " \"other:z\": {\"key\": 1}}"));
    json_t *plain = json_deep_copy(doc);
    sign_with(doc, "c.example", keys, 1);
    struct keydoc d;
    parse_ok(doc, "c.example", &d);
    assert_int_equal(d.nkeys, 3);
    assert_int_equal(d.ncurrent, 1);
    assert_int_equal(d.nignored, 1);
    assert_false(d.keys[0].old);
    assert_string_equal(d.keys[0].id, keys[0].id);
    const struct keydoc_key *o1 = keydoc_find_key(&d, "ed25519:old1");
    const struct keydoc_key *o2 = keydoc_find_key(&d, "ed25519:old2");
    assert_true(o1 && o2 && o1->old && o2->old);
    assert_int_equal(o1->expired_ts, 5);
    assert_int_equal(o2->expired_ts, 0);
    assert_pk(o1, PY_PK_OLD);
    assert_pk(o2, PY_PK_2);
    keydoc_free(&d);
    /* Old keys need not have signed: only verify_keys sign. Malformed ones are refused. */
    static const struct {
        const char *json, *msg;
    } bad[] = {
        {"[]", "old_verify_keys: not an object\n"},
        {"{\"ed25519:o\": {\"key\": \"" PY_PK_OLD "\"}}",
         "old_verify_keys.ed25519:o.expired_ts: missing or not a non-negative integer\n"},
        {"{\"ed25519:o\": {\"key\": \"" PY_PK_OLD "\", \"expired_ts\": -1}}",
         "old_verify_keys.ed25519:o.expired_ts: missing or not a non-negative integer\n"},
        {"{\"ed25519:o\": {\"key\": \"" PY_PK_OLD "\", \"expired_ts\": \"5\"}}",
         "old_verify_keys.ed25519:o.expired_ts: missing or not a non-negative integer\n"},
        {"{\"ed25519:o\": {\"key\": \"xx\", \"expired_ts\": 5}}",
         "old_verify_keys.ed25519:o.key: not unpadded base64 of 32 bytes\n"},
        {"{\"ed25519:o o\": {}}", "old_verify_keys: key id \"ed25519:o o\": the version must be "
                                  "1 to 55 characters of [a-zA-Z0-9_]\n"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        json_t *t = json_deep_copy(plain);
        json_object_set_new(t, "old_verify_keys", parse(bad[i].json));
        sign_with(t, "c.example", keys, 1);
        json_bad(t, "c.example", CH_EINVAL, bad[i].msg);
        json_decref(t);
    }
    /* The same id current and old is ambiguous. */
    json_t *t = json_deep_copy(plain);
    json_t *both = json_object();
    set_key(both, &keys[0]);
    json_object_set_new(json_object_get(both, keys[0].id), "expired_ts", json_integer(1));
    json_object_set_new(t, "old_verify_keys", both);
    sign_with(t, "c.example", keys, 1);
    char want[256];
    snprintf(want, sizeof(want), "%s is in both verify_keys and old_verify_keys\n", keys[0].id);
    json_bad(t, "c.example", CH_EINVAL, want);
    json_decref(t);
    /* Current and old keys together may not pass KEYDOC_MAX_KEYS. */
    t = json_deep_copy(plain);
    json_t *many = json_object();
    char id[32];
    for (int i = 0; i < KEYDOC_MAX_KEYS; i++) {
        snprintf(id, sizeof(id), "ed25519:o%d", i);
        json_object_set_new(many, id, json_pack("{s:s,s:i}", "key", PY_PK_OLD, "expired_ts", 1));
    }
    json_object_set_new(t, "old_verify_keys", many);
    sign_with(t, "c.example", keys, 1);
    json_bad(t, "c.example", CH_EINVAL, "old_verify_keys: more than 32 keys in the document\n");
    /* One fewer fits exactly. */
    json_object_del(many, "ed25519:o0");
    json_object_del(t, "signatures");
    sign_with(t, "c.example", keys, 1);
    parse_ok(t, "c.example", &d);
    assert_int_equal(d.nkeys, KEYDOC_MAX_KEYS);
    keydoc_free(&d);
    json_decref(t);
    json_decref(plain);
    json_decref(doc);
    sign_keys_free(keys, 1);
}

/* ---- notaries ---- */

static struct keydoc_key trusted_key(const struct sign_key *k)
{
    struct keydoc_key t;
    memset(&t, 0, sizeof(t));
    snprintf(t.id, sizeof(t.id), "%s", k->id);
    memcpy(t.pk, k->pk, sizeof(t.pk));
    return t;
}

static void test_notary_signature(void **state)
{
    (void)state;
    struct sign_key *origin = fresh_keys(1), *nk = fresh_keys(2);
    json_t *doc = signed_doc("c.example", LATER, origin, 1);
    struct keydoc_key trusted[2] = {trusted_key(&nk[0]), trusted_key(&nk[1])};
    struct keydoc_notary notary = {"notary.example", trusted, 1};
    struct buf err = BUF_INIT;
    char want[256];
    /* Missing. */
    assert_int_equal(keydoc_verify_notary(doc, &notary, &err), CH_ENOENT);
    snprintf(want, sizeof(want), "not signed by the notary \"notary.example\" with %s\n", nk[0].id);
    assert_err(&err, want);
    /* Valid. */
    json_t *cosigned = NULL;
    assert_int_equal(keydoc_cosign(doc, "notary.example", nk, 1, &cosigned, &err), 0);
    assert_int_equal(keydoc_verify_notary(cosigned, &notary, &err), 0);
    assert_int_equal(err.len, 0);
    /* The original was not touched. */
    assert_null(json_object_get(json_object_get(doc, "signatures"), "notary.example"));
    /* Signed by a key of the notary that is not trusted: not enough. */
    struct keydoc_notary second = {"notary.example", &trusted[1], 1};
    assert_int_equal(keydoc_verify_notary(cosigned, &second, &err), CH_ENOENT);
    snprintf(want, sizeof(want), "not signed by the notary \"notary.example\" with %s\n", nk[1].id);
    assert_err(&err, want);
    /* Trusting both keys, one signature is enough. */
    struct keydoc_notary both = {"notary.example", trusted, 2};
    assert_int_equal(keydoc_verify_notary(cosigned, &both, &err), 0);
    /* A trusted key id with another key: a signature that does not verify is refused. */
    struct keydoc_key liar = trusted[0];
    memcpy(liar.pk, nk[1].pk, 32);
    struct keydoc_notary lied = {"notary.example", &liar, 1};
    assert_int_equal(keydoc_verify_notary(cosigned, &lied, &err), CH_EPERM);
    snprintf(want, sizeof(want),
             "the notary's signature signatures.\"notary.example\".%s does not verify\n", nk[0].id);
    assert_err(&err, want);
    /* A tampered document fails the notary's signature too. */
    json_t *tampered = json_deep_copy(cosigned);
    json_object_set_new(tampered, "valid_until_ts", json_integer(1));
    assert_int_equal(keydoc_verify_notary(tampered, &notary, &err), CH_EPERM);
    buf_reset(&err);
    /* Signed under another name: not the notary's. */
    struct keydoc_notary renamed = {"notary2.example", trusted, 1};
    assert_int_equal(keydoc_verify_notary(cosigned, &renamed, &err), CH_ENOENT);
    snprintf(want, sizeof(want), "not signed by the notary \"notary2.example\" with %s\n",
             nk[0].id);
    assert_err(&err, want);
    /* No trusted key: nothing can be checked. */
    struct keydoc_notary none = {"notary.example", NULL, 0};
    assert_int_equal(keydoc_verify_notary(cosigned, &none, &err), CH_ENOENT);
    assert_err(&err,
               "not signed by the notary \"notary.example\" with any key (none is trusted)\n");
    json_decref(tampered);
    json_decref(cosigned);
    json_decref(doc);
    buf_free(&err);
    sign_keys_free(origin, 1);
    sign_keys_free(nk, 2);
}

static void test_cosign_keeps_origin(void **state)
{
    (void)state;
    struct sign_key *origin = fresh_keys(2), *nk = fresh_keys(2);
    json_t *doc = signed_doc("c.example", LATER, origin, 2);
    assert_int_equal(json_object_set_new(doc, "unsigned", json_pack("{s:s}", "u", "v")), 0);
    struct keydoc d;
    parse_ok(doc, "c.example", &d);
    struct buf err = BUF_INIT;
    /* Co-signed with both notary keys, as Synapse signs with every key_server_signing_key. */
    json_t *cosigned = NULL;
    assert_int_equal(keydoc_cosign(d.doc, "notary.example", nk, 2, &cosigned, &err), 0);
    json_t *sigs = json_object_get(cosigned, "signatures");
    assert_int_equal(json_object_size(sigs), 2);
    assert_int_equal(json_object_size(json_object_get(sigs, "c.example")), 2);
    assert_int_equal(json_object_size(json_object_get(sigs, "notary.example")), 2);
    /* The origin's signatures are byte for byte what they were; unsigned stays. */
    assert_true(json_equal(json_object_get(sigs, "c.example"),
                           json_object_get(json_object_get(d.doc, "signatures"), "c.example")));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(cosigned, "unsigned"), "u")), "v");
    /* It still validates as the origin's document, and as the notary's. */
    struct keydoc again;
    parse_ok(cosigned, "c.example", &again);
    assert_int_equal(again.ncurrent, 2);
    keydoc_free(&again);
    for (size_t i = 0; i < 2; i++) {
        struct keydoc_key t = trusted_key(&nk[i]);
        struct keydoc_notary notary = {"notary.example", &t, 1};
        assert_int_equal(keydoc_verify_notary(cosigned, &notary, &err), 0);
        assert_int_equal(sign_verify_json(cosigned, "c.example", origin[i].id, origin[i].pk, &err),
                         0);
    }
    /* Co-signing again (a second notary, or the same one later) keeps everything. */
    json_t *twice = NULL;
    assert_int_equal(keydoc_cosign(cosigned, "notary.example", nk, 1, &twice, &err), 0);
    assert_true(json_equal(twice, cosigned)); /* ed25519 is deterministic */
    json_decref(twice);
    assert_int_equal(keydoc_cosign(cosigned, "third.example", nk + 1, 1, &twice, &err), 0);
    assert_int_equal(json_object_size(json_object_get(twice, "signatures")), 3);
    json_decref(twice);
    /* Errors: no key, not an object; *out stays NULL. */
    twice = (json_t *)1;
    assert_int_equal(keydoc_cosign(cosigned, "notary.example", nk, 0, &twice, &err), CH_EINVAL);
    assert_null(twice);
    assert_err(&err, "no notary key\n");
    json_t *arr = json_array();
    assert_int_equal(keydoc_cosign(arr, "notary.example", nk, 1, &twice, &err), CH_EINVAL);
    assert_err(&err, "only a JSON object can be signed\n");
    json_t *badsig = json_deep_copy(cosigned);
    json_object_set_new(json_object_get(badsig, "signatures"), "notary.example", json_true());
    assert_int_equal(keydoc_cosign(badsig, "notary.example", nk, 1, &twice, &err), CH_EINVAL);
    assert_err(&err, "$.signatures.notary.example: not an object\n");
    assert_null(twice);
    json_decref(badsig);
    json_decref(arr);
    json_decref(cosigned);
    keydoc_free(&d);
    json_decref(doc);
    buf_free(&err);
    sign_keys_free(origin, 2);
    sign_keys_free(nk, 2);
}

static int have_signedjson(void)
{
    return system(PY " -c 'import signedjson.key, signedjson.sign' >/dev/null 2>&1") == 0;
}

/* A document co-signed by chappe verifies in python3-signedjson under both names. */
static void test_cosign_verified_by_signedjson(void **state)
{
    (void)state;
    if (!have_signedjson())
        fail_msg("/usr/bin/python3 cannot import signedjson: install python3-signedjson "
                 "(make deps)");
    struct sign_key *nk = fresh_keys(1);
    struct keydoc d;
    struct buf err = BUF_INIT, pk = BUF_INIT;
    assert_int_equal(keydoc_parse(PY_DOC, strlen(PY_DOC), "py.example", NOW, &d, &err), 0);
    json_t *cosigned = NULL;
    assert_int_equal(keydoc_cosign(d.doc, "relay.example", nk, 1, &cosigned, &err), 0);
    char dir[] = "/tmp/chappe-keydoc-XXXXXX", path[256], cmd[2048], out[64] = "";
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/cosigned.json", dir);
    struct buf body = body_of(cosigned);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(buf_data(&body), 1, body.len, f), body.len);
    fclose(f);
    assert_int_equal(sign_public_b64(&nk[0], &pk), 0);
    assert_int_equal(buf_append(&pk, "", 1), 0);
    const char *version = strchr(nk[0].id, ':') + 1;
    snprintf(cmd, sizeof(cmd),
             PY " -c \"import json, signedjson.key as k, signedjson.sign as s\n"
                "d = json.load(open('%s'))\n"
                "s.verify_signed_json(d, 'relay.example', k.decode_verify_key_base64('ed25519', "
                "'%s', '%s'))\n"
                "for v, b in (('a_one', '" PY_PK_1 "'), ('b_two', '" PY_PK_2 "')):\n"
                "    s.verify_signed_json(d, 'py.example', k.decode_verify_key_base64('ed25519', "
                "v, b))\n"
                "print('verified')\"",
             path, version, buf_data(&pk));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    if (fgets(out, sizeof(out), p) == NULL)
        out[0] = '\0';
    assert_int_equal(pclose(p), 0);
    assert_string_equal(out, "verified\n");
    unlink(path);
    rmdir(dir);
    json_decref(cosigned);
    keydoc_free(&d);
    buf_free(&body);
    buf_free(&pk);
    buf_free(&err);
    sign_keys_free(nk, 1);
}

/* ---- notary query responses ---- */

static void test_query_response(void **state)
{
    (void)state;
    struct sign_key *a = fresh_keys(2), *b = fresh_keys(1), *nk = fresh_keys(1);
    struct keydoc_key trusted = trusted_key(&nk[0]);
    struct keydoc_notary notary = {"notary.example", &trusted, 1};
    struct buf err = BUF_INIT;
    /* Notary-signed documents: a.example twice (two key sets), b.example, and broken ones. */
    json_t *a1 = signed_doc("a.example", LATER, a, 1);
    json_t *a2 = signed_doc("a.example", NOW + 30 * DAY, a + 1, 1);
    json_t *bd = signed_doc("b.example", LATER, b, 1);
    json_t *list = json_array();
    json_t *cosigned[3];
    json_t *src[3] = {a1, bd, a2};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(keydoc_cosign(src[i], "notary.example", nk, 1, &cosigned[i], &err), 0);
        json_array_append_new(list, cosigned[i]);
    }
    /* [3] a.example tampered after the notary signed. */
    json_t *t = json_deep_copy(cosigned[0]);
    json_object_set_new(t, "valid_until_ts", json_integer((json_int_t)(LATER + 5)));
    json_array_append_new(list, t);
    /* [4] a.example not signed by the notary. */
    json_array_append(list, a1);
    /* [5] a.example expired (the notary's cached copy of an offline server). */
    json_t *old = signed_doc("a.example", NOW - 1, a, 1), *old_co = NULL;
    assert_int_equal(keydoc_cosign(old, "notary.example", nk, 1, &old_co, &err), 0);
    json_array_append_new(list, old_co);
    /* [6], [7] junk, skipped silently: not an object, no server_name. */
    json_array_append_new(list, json_integer(7));
    json_array_append_new(list, json_object());
    json_t *resp = json_pack("{s:o}", "server_keys", list);
    struct buf body = body_of(resp);
    struct keydoc *docs = NULL;
    size_t n = 0;
    assert_int_equal(keydoc_parse_query_response(buf_data(&body), body.len, "a.example", &notary,
                                                 NOW, &docs, &n, &err),
                     0);
    assert_int_equal(n, 2);
    assert_non_null(keydoc_find_key(&docs[0], a[0].id));
    assert_null(keydoc_find_key(&docs[0], a[1].id));
    assert_int_equal(docs[0].valid_until_ts, LATER);
    assert_non_null(keydoc_find_key(&docs[1], a[1].id));
    assert_int_equal(docs[1].valid_until_ts, NOW + WEEK);
    /* Each keeps its own document, co-signature included. */
    assert_true(json_equal(docs[0].doc, cosigned[0]));
    assert_true(json_equal(docs[1].doc, cosigned[2]));
    char want[1024];
    snprintf(want, sizeof(want),
             "server_keys[3]: signatures.a.example.%s does not verify with verify_keys.%s\n"
             "server_keys[4]: not signed by the notary \"notary.example\" with %s\n"
             "server_keys[5]: valid_until_ts 1699999999999 is not after now (1700000000000): the "
             "document has expired\n",
             a[0].id, a[0].id, nk[0].id);
    assert_err(&err, want);
    keydoc_free_array(docs, n);
    /* b.example: one document. */
    assert_int_equal(keydoc_parse_query_response(buf_data(&body), body.len, "b.example", &notary,
                                                 NOW, &docs, &n, &err),
                     0);
    assert_int_equal(n, 1);
    assert_memory_equal(docs[0].keys[0].pk, b[0].pk, 32);
    assert_int_equal(err.len, 0);
    keydoc_free_array(docs, n);
    /* A server absent from the response. */
    docs = (struct keydoc *)1;
    assert_int_equal(keydoc_parse_query_response(buf_data(&body), body.len, "c.example", &notary,
                                                 NOW, &docs, &n, &err),
                     CH_ENOENT);
    assert_null(docs);
    assert_int_equal(n, 0);
    assert_err(&err, "no document for \"c.example\" in the response\n");
    /* Every document for the server rejected: CH_ENOENT, with the reasons. */
    struct keydoc_key wrong = trusted_key(&b[0]);
    struct keydoc_notary other = {"notary.example", &wrong, 1};
    assert_int_equal(keydoc_parse_query_response(buf_data(&body), body.len, "b.example", &other,
                                                 NOW, &docs, &n, &err),
                     CH_ENOENT);
    assert_null(docs);
    snprintf(want, sizeof(want),
             "server_keys[1]: not signed by the notary \"notary.example\" with %s\n", b[0].id);
    assert_err(&err, want);
    /* Not a response. */
    static const struct {
        const char *body, *msg;
    } bad[] = {
        {"[]", "the response is not a JSON object\n"},
        {"{}", "server_keys: missing or not an array\n"},
        {"{\"server_keys\": {}}", "server_keys: missing or not an array\n"},
        {"{\"server_keys\": []}", "no document for \"a.example\" in the response\n"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        int rc = keydoc_parse_query_response(bad[i].body, strlen(bad[i].body), "a.example", &notary,
                                             NOW, &docs, &n, &err);
        assert_int_equal(rc, i == 3 ? CH_ENOENT : CH_EINVAL);
        assert_null(docs);
        assert_err(&err, bad[i].msg);
    }
    assert_int_equal(
        keydoc_parse_query_response("{", 1, "a.example", &notary, NOW, &docs, &n, &err), CH_EINVAL);
    assert_int_equal(memcmp(buf_data(&err), "not JSON: line 1", 16), 0);
    buf_reset(&err);
    assert_int_equal(
        keydoc_parse_query_response(buf_data(&body), body.len, "", &notary, NOW, &docs, &n, &err),
        CH_EINVAL);
    buf_reset(&err);
    json_decref(old);
    json_decref(resp);
    json_decref(a1);
    json_decref(a2);
    json_decref(bd);
    buf_free(&body);
    buf_free(&err);
    sign_keys_free(a, 2);
    sign_keys_free(b, 1);
    sign_keys_free(nk, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python_document),
        cmocka_unit_test(test_python_query_response),
        cmocka_unit_test(test_valid_document),
        cmocka_unit_test(test_chappe_own_document),
        cmocka_unit_test(test_server_name),
        cmocka_unit_test(test_not_a_document),
        cmocka_unit_test(test_valid_until),
        cmocka_unit_test(test_verify_keys_shape),
        cmocka_unit_test(test_signatures),
        cmocka_unit_test(test_old_verify_keys),
        cmocka_unit_test(test_notary_signature),
        cmocka_unit_test(test_cosign_keeps_origin),
        cmocka_unit_test(test_cosign_verified_by_signedjson),
        cmocka_unit_test(test_query_response),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
