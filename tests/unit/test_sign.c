/* test_sign.c -- signing keys in Synapse's file format, and signed JSON against the spec and
 * signedjson. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "chappe/b64.h"
#include "chappe/cjson.h"
#include "chappe/sign.h"
#include "chappe/util.h"
#include "chappe/xmatrix.h"

#define PY "/usr/bin/python3"

/*
 * Matrix appendices, "Cryptographic Test Vectors": the seed exactly as the spec
 * prints it (its last character sets the two unused bits), server "domain", key
 * "ed25519:1". The spec does not print the public key; this one is what
 * python3-signedjson derives from the seed (and ruma-signatures' tests use).
 */
#define SPEC_SEED   "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
#define SPEC_PUBLIC "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"
#define SPEC_SIG_EMPTY                                                                             \
    "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
#define SPEC_SIG_ONE_TWO                                                                           \
    "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"

/* "ed25519 a_XXXX <43 chars of unpadded base64 of a 32-byte seed>\n" */
static void check_line(const char *p, size_t n)
{
    assert_true(n > 8);
    assert_memory_equal(p, "ed25519 a_", 10);
    for (int i = 10; i < 14; i++)
        assert_true((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
                    (p[i] >= '0' && p[i] <= '9'));
    assert_int_equal(p[14], ' ');
    assert_int_equal(p[n - 1], '\n');
    struct buf seed = BUF_INIT;
    assert_int_equal(b64_decode(&seed, p + 15, n - 16), 0);
    assert_int_equal(seed.len, 32);
    buf_free(&seed);
}

static void test_keygen_format(void **state)
{
    (void)state;
    struct buf a = BUF_INIT, b = BUF_INIT;
    assert_int_equal(sign_keygen(&a), 0);
    assert_int_equal(sign_keygen(&b), 0);
    check_line(buf_data(&a), a.len);
    check_line(buf_data(&b), b.len);
    assert_false(a.len == b.len && memcmp(buf_data(&a), buf_data(&b), a.len) == 0);
    buf_free(&a);
    buf_free(&b);
}

static void test_keygen_file_mode_and_no_overwrite(void **state)
{
    (void)state;
    char dir[] = "/tmp/chappe-sign-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/relay.signing.key", dir);
    const char *why = NULL;
    assert_int_equal(sign_keygen_file(path, &why), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char line[128];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(line, 1, sizeof(line), f);
    fclose(f);
    check_line(line, n);
    /* A second keygen must not replace the key. */
    assert_int_equal(sign_keygen_file(path, &why), CH_EEXIST);
    assert_non_null(why);
    f = fopen(path, "r");
    char again[128];
    size_t m = fread(again, 1, sizeof(again), f);
    fclose(f);
    assert_int_equal(m, n);
    assert_memory_equal(again, line, n);
    unlink(path);
    rmdir(dir);
}

static struct sign_key *spec_key(void)
{
    static const char line[] = "ed25519 1 " SPEC_SEED "\n";
    struct sign_key *keys = NULL;
    size_t n = 0;
    struct buf err = BUF_INIT;
    assert_int_equal(sign_parse_keys(line, strlen(line), &keys, &n, &err), 0);
    assert_int_equal(n, 1);
    buf_free(&err);
    return keys;
}

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    assert_non_null(v);
    return v;
}

/* Assert that the canonical encoding of v is exactly want. */
static void assert_canonical(const json_t *v, const char *want)
{
    struct buf out = BUF_INIT, err = BUF_INIT;
    assert_int_equal(cjson_encode(v, &out, &err), 0);
    assert_int_equal(buf_append(&out, "", 1), 0);
    assert_string_equal(buf_data(&out), want);
    buf_free(&out);
    buf_free(&err);
}

static const char *sig_of(const json_t *obj, const char *server, const char *key_id)
{
    json_t *s =
        json_object_get(json_object_get(json_object_get(obj, "signatures"), server), key_id);
    return json_string_value(s);
}

static void assert_buf_contains(struct buf *b, const char *needle)
{
    assert_int_equal(buf_append(b, "", 1), 0);
    if (strstr(buf_data(b), needle) == NULL)
        fail_msg("\"%s\" does not contain \"%s\"", buf_data(b), needle);
    b->len--;
}

static void test_parse_spec_seed(void **state)
{
    (void)state;
    struct sign_key *k = spec_key();
    assert_string_equal(k->id, "ed25519:1");
    struct buf pk = BUF_INIT;
    assert_int_equal(sign_public_b64(k, &pk), 0);
    assert_int_equal(buf_append(&pk, "", 1), 0);
    assert_string_equal(buf_data(&pk), SPEC_PUBLIC);
    buf_free(&pk);
    /* The same seed, canonically encoded ("XA0"), padded or not, is the same key. */
    static const char *const forms[] = {
        "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0",
        "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0=\n",
        "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1=\r\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(forms); i++) {
        struct sign_key *k2 = NULL;
        size_t n = 0;
        struct buf err = BUF_INIT;
        assert_int_equal(sign_parse_keys(forms[i], strlen(forms[i]), &k2, &n, &err), 0);
        assert_int_equal(n, 1);
        assert_memory_equal(k2->pk, k->pk, sizeof(k->pk));
        assert_memory_equal(k2->sk, k->sk, sizeof(k->sk));
        sign_keys_free(k2, n);
        buf_free(&err);
    }
    sign_keys_free(k, 1);
}

static void test_parse_several(void **state)
{
    (void)state;
    struct buf text = BUF_INIT, err = BUF_INIT;
    assert_int_equal(sign_keygen(&text), 0);
    assert_int_equal(buf_append_str(&text, "\n   \n\ted25519\told_1 " SPEC_SEED "  \r\n"), 0);
    assert_int_equal(sign_keygen(&text), 0);
    struct sign_key *keys = NULL;
    size_t n = 0;
    assert_int_equal(sign_parse_keys(buf_data(&text), text.len, &keys, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(keys[0].id, "ed25519:a_", 10);
    assert_string_equal(keys[1].id, "ed25519:old_1");
    assert_memory_equal(keys[2].id, "ed25519:a_", 10);
    assert_string_not_equal(keys[0].id, keys[2].id);
    assert_memory_not_equal(keys[0].pk, keys[2].pk, sizeof(keys[0].pk));
    struct sign_key *spec = spec_key();
    assert_memory_equal(keys[1].pk, spec->pk, sizeof(spec->pk));
    /* The secret key signs what the public key verifies. */
    for (size_t i = 0; i < n; i++) {
        unsigned char sig[crypto_sign_BYTES];
        assert_int_equal(crypto_sign_detached(sig, NULL, (const unsigned char *)"m", 1, keys[i].sk),
                         0);
        assert_int_equal(
            crypto_sign_verify_detached(sig, (const unsigned char *)"m", 1, keys[i].pk), 0);
    }
    sign_keys_free(spec, 1);
    sign_keys_free(keys, n);
    buf_free(&text);
    buf_free(&err);
}

#define VERSION_56 "abcdefghij_ABCDEFGHIJ_0123456789_abcdefghij_ABCDEFGHIJ_9"

static void test_parse_bad_lines(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        {"ed25519 1\n", "line 1: expected"},
        {"ed25519 " SPEC_SEED "\n", "line 1: expected"},
        {"ed25519 1 " SPEC_SEED " extra\n", "line 1: expected"},
        {"ed25519 1 " SPEC_SEED "\ned448 2 " SPEC_SEED "\n", "line 2: unsupported algorithm"},
        {"ED25519 1 " SPEC_SEED "\n", "line 1: unsupported algorithm"},
        {"\n\ned25519 a-b " SPEC_SEED "\n", "line 3: the key version"},
        {"ed25519 a:b " SPEC_SEED "\n", "line 1: the key version"},
        {"ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA\n", "line 1: the seed"},
        {"ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA0A\n", "line 1: the seed"},
        {"ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA==\n", "line 1: the seed"},
        {"ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW-3XA0\n", "line 1: the seed"},
        {"ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA*\n", "line 1: the seed"},
        {"ed25519 1 " SPEC_SEED "\ned25519 2 " SPEC_SEED "\ned25519 1 " SPEC_SEED "\n",
         "line 3: duplicate key id"},
        {"", "no signing key"},
        {"\n  \n", "no signing key"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct sign_key *keys = (struct sign_key *)1;
        size_t n = 99;
        struct buf err = BUF_INIT;
        int rc = sign_parse_keys(cases[i].text, strlen(cases[i].text), &keys, &n, &err);
        if (rc != CH_EINVAL)
            fail_msg("case %zu: %d", i, rc);
        assert_null(keys);
        assert_int_equal(n, 0);
        assert_buf_contains(&err, cases[i].want);
        /* The message never repeats the secret. */
        assert_int_equal(buf_append(&err, "", 1), 0);
        assert_null(strstr(buf_data(&err), "YJDBA9"));
        buf_free(&err);
    }
    /* A version of 55 characters is the longest that fits the id; 56 is refused. */
    char line[128];
    struct sign_key *keys = NULL;
    size_t n = 0;
    struct buf err = BUF_INIT;
    snprintf(line, sizeof(line), "ed25519 %.55s %s", VERSION_56, SPEC_SEED);
    assert_int_equal(sign_parse_keys(line, strlen(line), &keys, &n, &err), 0);
    assert_int_equal(strlen(keys[0].id), 63);
    assert_memory_equal(keys[0].id + 8, VERSION_56, 55);
    sign_keys_free(keys, n);
    snprintf(line, sizeof(line), "ed25519 %s %s", VERSION_56, SPEC_SEED);
    assert_int_equal(sign_parse_keys(line, strlen(line), &keys, &n, &err), CH_EINVAL);
    assert_buf_contains(&err, "line 1: the key version");
    buf_reset(&err);
    /* A NUL inside a line. */
    static const char nul[] = "ed25519 1 " SPEC_SEED "\0\n";
    assert_int_equal(sign_parse_keys(nul, sizeof(nul) - 1, &keys, &n, &err), CH_EINVAL);
    assert_buf_contains(&err, "line 1:");
    buf_free(&err);
}

/* Matrix appendices, "Cryptographic Test Vectors", "JSON Signing". */
static void test_sign_spec_vectors(void **state)
{
    (void)state;
    struct sign_key *k = spec_key();
    struct buf err = BUF_INIT;
    json_t *empty = json_object();
    assert_int_equal(sign_json(empty, "domain", k, &err), 0);
    assert_string_equal(sig_of(empty, "domain", "ed25519:1"), SPEC_SIG_EMPTY);
    assert_canonical(empty, "{\"signatures\":{\"domain\":{\"ed25519:1\":\"" SPEC_SIG_EMPTY "\"}}}");
    json_t *one_two = parse("{\"one\": 1, \"two\": \"Two\"}");
    assert_int_equal(sign_json(one_two, "domain", k, &err), 0);
    assert_string_equal(sig_of(one_two, "domain", "ed25519:1"), SPEC_SIG_ONE_TWO);
    assert_canonical(one_two,
                     "{\"one\":1,\"signatures\":{\"domain\":{\"ed25519:1\":\"" SPEC_SIG_ONE_TWO
                     "\"}},\"two\":\"Two\"}");
    /* Signing again replaces the signature with the same one. */
    assert_int_equal(sign_json(one_two, "domain", k, &err), 0);
    assert_string_equal(sig_of(one_two, "domain", "ed25519:1"), SPEC_SIG_ONE_TWO);
    assert_int_equal(json_object_size(json_object_get(one_two, "signatures")), 1);
    assert_int_equal(err.len, 0);
    json_decref(empty);
    json_decref(one_two);
    buf_free(&err);
    sign_keys_free(k, 1);
}

static void test_verify_spec_vectors(void **state)
{
    (void)state;
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    struct buf raw = BUF_INIT, err = BUF_INIT;
    assert_int_equal(b64_decode(&raw, SPEC_PUBLIC, strlen(SPEC_PUBLIC)), 0);
    assert_int_equal(raw.len, sizeof(pk));
    memcpy(pk, buf_data(&raw), sizeof(pk));
    json_t *empty =
        parse("{\"signatures\": {\"domain\": {\"ed25519:1\": \"" SPEC_SIG_EMPTY "\"}}}");
    json_t *one_two =
        parse("{\"one\": 1, \"signatures\": {\"domain\": {\"ed25519:1\": \"" SPEC_SIG_ONE_TWO
              "\"}}, \"two\": \"Two\"}");
    assert_int_equal(sign_verify_json(empty, "domain", "ed25519:1", pk, &err), 0);
    assert_int_equal(sign_verify_json(one_two, "domain", "ed25519:1", pk, &err), 0);
    assert_int_equal(err.len, 0);
    /* Each signature belongs to its object only. */
    json_object_set_new(json_object_get(json_object_get(empty, "signatures"), "domain"),
                        "ed25519:1", json_string(SPEC_SIG_ONE_TWO));
    assert_int_equal(sign_verify_json(empty, "domain", "ed25519:1", pk, &err), CH_EPERM);
    assert_buf_contains(&err, "does not verify");
    /* Another public key. */
    pk[0] ^= 1;
    assert_int_equal(sign_verify_json(one_two, "domain", "ed25519:1", pk, &err), CH_EPERM);
    json_decref(empty);
    json_decref(one_two);
    buf_free(&raw);
    buf_free(&err);
}

/* Flip every bit of every byte of the signature, one at a time: never valid. */
static void test_verify_tampered_signature(void **state)
{
    (void)state;
    struct sign_key *k = spec_key();
    json_t *obj = parse("{\"one\": 1, \"two\": \"Two\"}");
    struct buf err = BUF_INIT, raw = BUF_INIT, b64 = BUF_INIT;
    assert_int_equal(sign_json(obj, "domain", k, &err), 0);
    const char *good = sig_of(obj, "domain", "ed25519:1");
    assert_int_equal(b64_decode(&raw, good, strlen(good)), 0);
    assert_int_equal(raw.len, 64);
    json_t *mine = json_object_get(json_object_get(obj, "signatures"), "domain");
    for (size_t i = 0; i < raw.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            buf_data(&raw)[i] ^= (char)(1 << bit);
            buf_reset(&b64);
            assert_int_equal(b64_encode(&b64, buf_data(&raw), raw.len), 0);
            json_object_set_new(mine, "ed25519:1", json_stringn(buf_data(&b64), b64.len));
            buf_reset(&err);
            assert_int_equal(sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err), CH_EPERM);
            buf_data(&raw)[i] ^= (char)(1 << bit);
        }
    }
    /* Restored, it verifies again; a changed value does not. */
    json_object_set_new(mine, "ed25519:1", json_string(SPEC_SIG_ONE_TWO));
    assert_int_equal(sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err), 0);
    json_object_set_new(obj, "two", json_string("Tw0"));
    assert_int_equal(sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err), CH_EPERM);
    json_object_set_new(obj, "two", json_string("Two"));
    json_object_set_new(obj, "three", json_integer(3));
    assert_int_equal(sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err), CH_EPERM);
    json_decref(obj);
    buf_free(&err);
    buf_free(&raw);
    buf_free(&b64);
    sign_keys_free(k, 1);
}

static void test_verify_missing_and_malformed(void **state)
{
    (void)state;
    struct sign_key *k = spec_key();
    struct buf err = BUF_INIT;
    static const struct {
        const char *json;
        int rc;
    } cases[] = {
        {"{\"one\": 1, \"two\": \"Two\"}", CH_ENOENT},
        {"{\"one\": 1, \"two\": \"Two\", \"signatures\": {}}", CH_ENOENT},
        {"{\"one\": 1, \"two\": \"Two\", \"signatures\": {\"other\": {\"ed25519:1\": "
         "\"" SPEC_SIG_ONE_TWO "\"}}}",
         CH_ENOENT},
        {"{\"one\": 1, \"two\": \"Two\", \"signatures\": {\"domain\": {\"ed25519:2\": "
         "\"" SPEC_SIG_ONE_TWO "\"}}}",
         CH_ENOENT},
        {"{\"one\": 1, \"two\": \"Two\", \"signatures\": {\"domain\": {}}}", CH_ENOENT},
        {"{\"one\": 1, \"signatures\": []}", CH_EINVAL},
        {"{\"one\": 1, \"signatures\": {\"domain\": \"x\"}}", CH_EINVAL},
        {"{\"one\": 1, \"signatures\": {\"domain\": {\"ed25519:1\": 1}}}", CH_EINVAL},
        {"{\"one\": 1, \"signatures\": {\"domain\": {\"ed25519:1\": \"!!!!\"}}}", CH_EINVAL},
        {"{\"one\": 1, \"signatures\": {\"domain\": {\"ed25519:1\": \"" SPEC_SIG_ONE_TWO
         "\"}}, \"two\": \"Two\"}",
         0},
        {"{\"one\": 1, \"signatures\": {\"domain\": {\"ed25519:1\": \"AAAA\"}}}", CH_EINVAL},
        {"{\"one\": 1.5, \"signatures\": {\"domain\": {\"ed25519:1\": \"" SPEC_SIG_ONE_TWO "\"}}}",
         CH_EINVAL},
        {"[]", CH_EINVAL},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        json_t *obj = parse(cases[i].json);
        buf_reset(&err);
        int rc = sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err);
        if (rc != cases[i].rc)
            fail_msg("case %zu: %d, want %d", i, rc, cases[i].rc);
        assert_true(rc == 0 ? err.len == 0 : err.len > 0);
        json_decref(obj);
    }
    /* A 63-byte signature, and the padded form of the valid one. */
    json_t *obj = parse("{\"one\": 1, \"two\": \"Two\"}");
    json_t *sigs = json_pack(
        "{s:{s:s}}", "domain", "ed25519:1",
        "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6");
    json_object_set_new(obj, "signatures", sigs);
    assert_int_equal(sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err), CH_EINVAL);
    assert_buf_contains(&err, "64-byte signature");
    json_object_set_new(json_object_get(sigs, "domain"), "ed25519:1",
                        json_string(SPEC_SIG_ONE_TWO "=="));
    assert_int_equal(sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err), 0);
    /* The URL-safe alphabet is not the standard base64 the spec uses. */
    char url_safe[] = SPEC_SIG_ONE_TWO;
    for (char *c = url_safe; *c; c++)
        *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
    json_object_set_new(json_object_get(sigs, "domain"), "ed25519:1", json_string(url_safe));
    assert_int_equal(sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err), CH_EINVAL);
    json_decref(obj);
    buf_free(&err);
    sign_keys_free(k, 1);
}

static void test_sign_keeps_other_signatures(void **state)
{
    (void)state;
    struct sign_key *k = spec_key();
    struct buf err = BUF_INIT;
    json_t *obj = parse("{\"one\": 1, \"two\": \"Two\", \"signatures\": {"
                        "\"other.example\": {\"ed25519:x\": \"c2lnLXg\"},"
                        "\"domain\": {\"ed25519:old\": \"b2xk\"}}}");
    assert_int_equal(sign_json(obj, "domain", k, &err), 0);
    /* Signatures are not signed: the same signature as without them. */
    assert_string_equal(sig_of(obj, "domain", "ed25519:1"), SPEC_SIG_ONE_TWO);
    assert_string_equal(sig_of(obj, "domain", "ed25519:old"), "b2xk");
    assert_string_equal(sig_of(obj, "other.example", "ed25519:x"), "c2lnLXg");
    assert_int_equal(json_object_size(json_object_get(obj, "signatures")), 2);
    assert_int_equal(sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err), 0);
    /* A second server signs the same object: the first signature stays valid. */
    assert_int_equal(sign_json(obj, "second.example", k, &err), 0);
    assert_string_equal(sig_of(obj, "second.example", "ed25519:1"), SPEC_SIG_ONE_TWO);
    assert_string_equal(sig_of(obj, "domain", "ed25519:1"), SPEC_SIG_ONE_TWO);
    assert_int_equal(sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err), 0);
    assert_int_equal(err.len, 0);
    json_decref(obj);
    buf_free(&err);
    sign_keys_free(k, 1);
}

static void test_sign_unsigned_excluded_but_kept(void **state)
{
    (void)state;
    struct sign_key *k = spec_key();
    struct buf err = BUF_INIT;
    json_t *obj = parse("{\"one\": 1, \"two\": \"Two\", \"unsigned\": {\"age_ts\": 922834800000}}");
    json_t *unsigned_before = json_object_get(obj, "unsigned");
    assert_int_equal(sign_json(obj, "domain", k, &err), 0);
    assert_string_equal(sig_of(obj, "domain", "ed25519:1"), SPEC_SIG_ONE_TWO);
    assert_ptr_equal(json_object_get(obj, "unsigned"), unsigned_before);
    assert_canonical(obj, "{\"one\":1,\"signatures\":{\"domain\":{\"ed25519:1\":\"" SPEC_SIG_ONE_TWO
                          "\"}},\"two\":\"Two\",\"unsigned\":{\"age_ts\":922834800000}}");
    /* Changing "unsigned" does not break the signature. */
    json_object_set_new(unsigned_before, "age", json_integer(5));
    assert_int_equal(sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err), 0);
    json_object_del(obj, "unsigned");
    assert_int_equal(sign_verify_json(obj, "domain", "ed25519:1", k->pk, &err), 0);
    json_decref(obj);
    buf_free(&err);
    sign_keys_free(k, 1);
}

static void test_sign_errors_leave_object_unchanged(void **state)
{
    (void)state;
    struct sign_key *k = spec_key();
    static const struct {
        const char *json;
        const char *want;
    } cases[] = {
        {"{\"a\": {\"b\": [1, 2.5]}}", "$.a.b[1]"},
        {"{\"a\": 9007199254740992}", "$.a"},
        {"{\"a\": 1, \"signatures\": []}", "$.signatures: not an object"},
        {"{\"a\": 1, \"signatures\": {\"domain\": 1}}", "$.signatures.domain: not an object"},
        {"[1]", "only a JSON object"},
        {"\"x\"", "only a JSON object"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        json_t *obj = json_loads(cases[i].json, JSON_DECODE_ANY, NULL);
        assert_non_null(obj);
        json_t *before = json_deep_copy(obj);
        struct buf err = BUF_INIT;
        assert_int_equal(sign_json(obj, "domain", k, &err), CH_EINVAL);
        assert_buf_contains(&err, cases[i].want);
        assert_true(json_equal(obj, before));
        json_decref(before);
        json_decref(obj);
        buf_free(&err);
    }
    sign_keys_free(k, 1);
}

/* A fresh temporary directory and a path in it. */
static void tmp_path(char dir[32], char path[256], const char *name)
{
    strcpy(dir, "/tmp/chappe-sign-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, 256, "%s/%s", dir, name);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
}

static void test_load_keys_modes(void **state)
{
    (void)state;
    char dir[32], path[256];
    tmp_path(dir, path, "signing.key");
    write_file(path, "ed25519 1 " SPEC_SEED "\ned25519 2 " SPEC_SEED "\n", 0644);
    struct sign_key *keys = NULL;
    size_t n = 0;
    struct buf err = BUF_INIT, want = BUF_INIT;
    assert_int_equal(sign_load_keys(path, &keys, &n, &err), CH_EPERM);
    assert_null(keys);
    assert_int_equal(buf_appendf(&want,
                                 "%s: readable by group or others (mode 0644): run chmod 600 %s",
                                 path, path),
                     0);
    assert_int_equal(buf_append(&want, "", 1), 0);
    assert_buf_contains(&err, buf_data(&want));
    static const mode_t refused[] = {0640, 0604, 0620, 0602, 0610, 0601, 0666, 0660};
    for (size_t i = 0; i < ARRAY_LEN(refused); i++) {
        assert_int_equal(chmod(path, refused[i]), 0);
        buf_reset(&err);
        assert_int_equal(sign_load_keys(path, &keys, &n, &err), CH_EPERM);
        assert_buf_contains(&err, "chmod 600");
    }
    static const mode_t accepted[] = {0600, 0400};
    for (size_t i = 0; i < ARRAY_LEN(accepted); i++) {
        assert_int_equal(chmod(path, accepted[i]), 0);
        buf_reset(&err);
        assert_int_equal(sign_load_keys(path, &keys, &n, &err), 0);
        assert_int_equal(n, 2);
        assert_string_equal(keys[0].id, "ed25519:1");
        assert_string_equal(keys[1].id, "ed25519:2");
        struct buf pk = BUF_INIT;
        assert_int_equal(sign_public_b64(&keys[1], &pk), 0);
        assert_int_equal(buf_append(&pk, "", 1), 0);
        assert_string_equal(buf_data(&pk), SPEC_PUBLIC);
        buf_free(&pk);
        sign_keys_free(keys, n);
    }
    /* Errors in the file carry the path and the line. */
    unlink(path);
    write_file(path, "ed25519 1 " SPEC_SEED "\ned25519 2 short\n", 0600);
    buf_reset(&err);
    assert_int_equal(sign_load_keys(path, &keys, &n, &err), CH_EINVAL);
    buf_reset(&want);
    assert_int_equal(buf_appendf(&want, "%s: line 2: the seed", path), 0);
    assert_int_equal(buf_append(&want, "", 1), 0);
    assert_buf_contains(&err, buf_data(&want));
    unlink(path);
    /* Missing file, a directory. */
    buf_reset(&err);
    assert_int_equal(sign_load_keys(path, &keys, &n, &err), CH_ENOENT);
    assert_buf_contains(&err, path);
    buf_reset(&err);
    assert_int_equal(chmod(dir, 0700), 0);
    assert_int_equal(sign_load_keys(dir, &keys, &n, &err), CH_EINVAL);
    assert_buf_contains(&err, "not a regular file");
    rmdir(dir);
    buf_free(&err);
    buf_free(&want);
}

static int have_signedjson(void)
{
    return system(PY " -c 'import signedjson.key, signedjson.sign' >/dev/null 2>&1") == 0;
}

/* Run a shell command and return its first output line (without newline) in out. */
static void run(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    out[0] = '\0';
    if (fgets(out, (int)cap, p) == NULL)
        out[0] = '\0';
    int status = pclose(p);
    if (status != 0)
        fail_msg("command failed (%d): %s", status, cmd);
    out[strcspn(out, "\n")] = '\0';
}

/* A key written by python3-signedjson loads, with the public key signedjson derives. */
static void test_signedjson_key_file_loads(void **state)
{
    (void)state;
    if (!have_signedjson())
        fail_msg("/usr/bin/python3 cannot import signedjson: install python3-signedjson "
                 "(make deps)");
    char dir[32], path[256], cmd[1024], want_pk[128], sig[256];
    tmp_path(dir, path, "synapse.signing.key");
    snprintf(cmd, sizeof(cmd),
             PY " -c \"import signedjson.key as k, os\n"
                "key = k.generate_signing_key('abc')\n"
                "k.write_signing_keys(open('%s', 'w'), [key])\n"
                "os.chmod('%s', 0o600)\n"
                "print(k.encode_verify_key_base64(k.get_verify_key(key)))\"",
             path, path);
    run(cmd, want_pk, sizeof(want_pk));
    struct sign_key *keys = NULL;
    size_t n = 0;
    struct buf err = BUF_INIT, pk = BUF_INIT;
    assert_int_equal(sign_load_keys(path, &keys, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(keys[0].id, "ed25519:abc");
    assert_int_equal(sign_public_b64(&keys[0], &pk), 0);
    assert_int_equal(buf_append(&pk, "", 1), 0);
    assert_string_equal(buf_data(&pk), want_pk);
    /* signedjson signs with that key; chappe verifies. */
    snprintf(cmd, sizeof(cmd),
             PY " -c \"import signedjson.key as k, signedjson.sign as s\n"
                "key = k.read_signing_keys(open('%s'))[0]\n"
                "o = s.sign_json({'a': [1, 'x'], 'unsigned': {'u': 1}}, 'py.example', key)\n"
                "print(o['signatures']['py.example']['ed25519:abc'])\"",
             path);
    run(cmd, sig, sizeof(sig));
    json_t *obj = json_pack("{s:[i,s],s:{s:{s:s}}}", "a", 1, "x", "signatures", "py.example",
                            "ed25519:abc", sig);
    assert_non_null(obj);
    assert_int_equal(sign_verify_json(obj, "py.example", "ed25519:abc", keys[0].pk, &err), 0);
    /* And chappe's signature with that key is the same (ed25519 is deterministic). */
    json_object_del(obj, "signatures");
    assert_int_equal(sign_json(obj, "py.example", &keys[0], &err), 0);
    assert_string_equal(sig_of(obj, "py.example", "ed25519:abc"), sig);
    json_decref(obj);
    sign_keys_free(keys, n);
    buf_free(&err);
    buf_free(&pk);
    unlink(path);
    rmdir(dir);
}

/* A key made by sign_keygen_file loads in signedjson with the same public key. */
static void test_keygen_file_loads_in_signedjson(void **state)
{
    (void)state;
    if (!have_signedjson())
        fail_msg("/usr/bin/python3 cannot import signedjson: install python3-signedjson "
                 "(make deps)");
    char dir[32], path[256], json_path[256], cmd[1536], out[256];
    tmp_path(dir, path, "relay.signing.key");
    snprintf(json_path, sizeof(json_path), "%s/signed.json", dir);
    const char *why = NULL;
    assert_int_equal(sign_keygen_file(path, &why), 0);
    struct sign_key *keys = NULL;
    size_t n = 0;
    struct buf err = BUF_INIT, line = BUF_INIT;
    assert_int_equal(sign_load_keys(path, &keys, &n, &err), 0);
    assert_int_equal(n, 1);
    /* Sign an object with chappe, for signedjson to verify. */
    json_t *obj =
        parse("{\"origin\": \"relay.example\", \"n\": [1, -2, {\"z\": null, \"\\u00e9\": "
              "true}], \"unsigned\": {\"age\": 1}, \"signatures\": {\"x\": {\"k:1\": \"c2ln\"}}}");
    assert_int_equal(sign_json(obj, "relay.example", &keys[0], &err), 0);
    char *dump = json_dumps(obj, JSON_COMPACT);
    assert_non_null(dump);
    FILE *f = fopen(json_path, "w");
    assert_non_null(f);
    fputs(dump, f);
    fclose(f);
    free(dump);
    assert_int_equal(buf_appendf(&line, "%s ", keys[0].id), 0);
    assert_int_equal(sign_public_b64(&keys[0], &line), 0);
    assert_int_equal(buf_append(&line, "", 1), 0);
    snprintf(cmd, sizeof(cmd),
             PY " -c \"import signedjson.key as k, signedjson.sign as s, json\n"
                "key = k.read_signing_keys(open('%s'))[0]\n"
                "vk = k.get_verify_key(key)\n"
                "s.verify_signed_json(json.load(open('%s')), 'relay.example', vk)\n"
                "print('%%s:%%s %%s' %% (key.alg, key.version, k.encode_verify_key_base64(vk)))\"",
             path, json_path);
    run(cmd, out, sizeof(out));
    assert_string_equal(out, buf_data(&line));
    json_decref(obj);
    sign_keys_free(keys, n);
    buf_free(&err);
    buf_free(&line);
    unlink(json_path);
    unlink(path);
    rmdir(dir);
}

/* The spec vector key (appendices, "Cryptographic test vectors"). */
static struct sign_key *vector_key(size_t *n)
{
    static const char line[] = "ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n";
    struct sign_key *keys = NULL;
    struct buf err = BUF_INIT;
    assert_int_equal(sign_parse_keys(line, sizeof(line) - 1, &keys, n, &err), 0);
    buf_free(&err);
    return keys;
}

/* A request signed by chappe parses and verifies; any change to what it covers does not. */
static void test_request_roundtrip(void **state)
{
    (void)state;
    size_t n = 0;
    struct sign_key *key = vector_key(&n);
    json_t *content = json_pack("{s:[{s:s}],s:[]}", "pdus", "type", "m.room.message", "edus");
    struct buf hdr = BUF_INIT, err = BUF_INIT;
    assert_int_equal(sign_request(&hdr, key, "PUT", "/_matrix/federation/v1/send/1?x=%20",
                                  "origin.example", "dest.example", content, &err),
                     0);
    struct xmatrix x;
    const char *why = NULL;
    assert_int_equal(xmatrix_parse(buf_data(&hdr), hdr.len, &x, &why), 0);
    assert_string_equal(x.origin, "origin.example");
    assert_string_equal(x.destination, "dest.example");
    assert_string_equal(x.key, "ed25519:1");
    assert_int_equal(sign_verify_request(&x, "PUT", "/_matrix/federation/v1/send/1?x=%20",
                                         "dest.example", content, key[0].pk, &err),
                     0);
    /* Method, uri, destination, content: each is covered. */
    assert_int_equal(sign_verify_request(&x, "POST", "/_matrix/federation/v1/send/1?x=%20",
                                         "dest.example", content, key[0].pk, &err),
                     CH_EPERM);
    assert_int_equal(sign_verify_request(&x, "PUT", "/_matrix/federation/v1/send/1?x=+",
                                         "dest.example", content, key[0].pk, &err),
                     CH_EPERM);
    assert_int_equal(sign_verify_request(&x, "PUT", "/_matrix/federation/v1/send/1?x=%20",
                                         "other.example", content, key[0].pk, &err),
                     CH_EPERM);
    assert_int_equal(sign_verify_request(&x, "PUT", "/_matrix/federation/v1/send/1?x=%20",
                                         "dest.example", NULL, key[0].pk, &err),
                     CH_EPERM);
    json_decref(content);
    buf_free(&hdr);
    buf_free(&err);
    sign_keys_free(key, n);
}

/* A header built the way Synapse builds it (signedjson over the request object) verifies. */
static void test_request_signed_by_signedjson(void **state)
{
    (void)state;
    if (!have_signedjson())
        fail_msg("/usr/bin/python3 cannot import signedjson: install python3-signedjson "
                 "(make deps)");
    FILE *p =
        popen("/usr/bin/python3 -c '"
              "import signedjson.key as k, signedjson.sign as s\n"
              "key = k.decode_signing_key_base64(\"ed25519\", \"1\", "
              "\"YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\")\n"
              "req = {\"method\": \"PUT\", \"uri\": \"/_matrix/federation/v1/send/42\", "
              "\"origin\": \"o.example:8448\", \"destination\": \"d.example\", "
              "\"content\": {\"pdus\": [], \"edus\": [{\"edu_type\": \"m.typing\"}]}}\n"
              "sig = s.sign_json(req, \"o.example:8448\", key)[\"signatures\"][\"o.example:8448\"]"
              "[\"ed25519:1\"]\n"
              "print(\"X-Matrix origin=\\\"o.example:8448\\\",key=\\\"ed25519:1\\\",sig=\\\"%s\\\","
              "destination=\\\"d.example\\\"\" % sig, end=\"\")'",
              "r");
    assert_non_null(p);
    char hdr[512];
    size_t len = fread(hdr, 1, sizeof(hdr) - 1, p);
    assert_int_equal(pclose(p), 0);
    hdr[len] = '\0';
    struct xmatrix x;
    const char *why = NULL;
    if (xmatrix_parse(hdr, len, &x, &why) != 0)
        fail_msg("%s: %s", hdr, why ? why : "?");
    size_t n = 0;
    struct sign_key *key = vector_key(&n);
    json_t *content = json_pack("{s:[],s:[{s:s}]}", "pdus", "edus", "edu_type", "m.typing");
    struct buf err = BUF_INIT;
    assert_int_equal(sign_verify_request(&x, "PUT", "/_matrix/federation/v1/send/42", "d.example",
                                         content, key[0].pk, &err),
                     0);
    /* The same from the raw body: the canonical fast path, and a non-canonical spelling. */
    static const char canon[] = "{\"edus\":[{\"edu_type\":\"m.typing\"}],\"pdus\":[]}";
    static const char loose[] = "{ \"pdus\": [], \"edus\": [ {\"edu_type\": \"m.typing\"} ] }";
    assert_int_equal(sign_verify_request_body(&x, "PUT", "/_matrix/federation/v1/send/42",
                                              "d.example", canon, sizeof(canon) - 1, key[0].pk,
                                              &err),
                     0);
    assert_int_equal(sign_verify_request_body(&x, "PUT", "/_matrix/federation/v1/send/42",
                                              "d.example", loose, sizeof(loose) - 1, key[0].pk,
                                              &err),
                     0);
    static const char other[] = "{\"edus\":[{\"edu_type\":\"m.typinG\"}],\"pdus\":[]}";
    assert_int_equal(sign_verify_request_body(&x, "PUT", "/_matrix/federation/v1/send/42",
                                              "d.example", other, sizeof(other) - 1, key[0].pk,
                                              &err),
                     CH_EPERM);
    assert_int_equal(sign_verify_request_body(&x, "PUT", "/_matrix/federation/v1/send/43",
                                              "d.example", canon, sizeof(canon) - 1, key[0].pk,
                                              &err),
                     CH_EPERM);
    assert_int_equal(sign_verify_request_body(&x, "PUT", "/_matrix/federation/v1/send/42",
                                              "d.example", "{", 1, key[0].pk, &err),
                     CH_EINVAL);
    /* A single flipped byte in the signature is refused, on both paths. */
    x.sig[5] = x.sig[5] == 'A' ? 'B' : 'A';
    assert_int_equal(sign_verify_request_body(&x, "PUT", "/_matrix/federation/v1/send/42",
                                              "d.example", canon, sizeof(canon) - 1, key[0].pk,
                                              &err),
                     CH_EPERM);
    assert_int_equal(sign_verify_request(&x, "PUT", "/_matrix/federation/v1/send/42", "d.example",
                                         content, key[0].pk, &err),
                     CH_EPERM);
    json_decref(content);
    buf_free(&err);
    sign_keys_free(key, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_roundtrip),
        cmocka_unit_test(test_request_signed_by_signedjson),
        cmocka_unit_test(test_keygen_format),
        cmocka_unit_test(test_keygen_file_mode_and_no_overwrite),
        cmocka_unit_test(test_parse_spec_seed),
        cmocka_unit_test(test_parse_several),
        cmocka_unit_test(test_parse_bad_lines),
        cmocka_unit_test(test_sign_spec_vectors),
        cmocka_unit_test(test_verify_spec_vectors),
        cmocka_unit_test(test_verify_tampered_signature),
        cmocka_unit_test(test_verify_missing_and_malformed),
        cmocka_unit_test(test_sign_keeps_other_signatures),
        cmocka_unit_test(test_sign_unsigned_excluded_but_kept),
        cmocka_unit_test(test_sign_errors_leave_object_unchanged),
        cmocka_unit_test(test_load_keys_modes),
        cmocka_unit_test(test_signedjson_key_file_loads),
        cmocka_unit_test(test_keygen_file_loads_in_signedjson),
    };
    return cmocka_run_group_tests_name("sign", tests, NULL, NULL);
}
