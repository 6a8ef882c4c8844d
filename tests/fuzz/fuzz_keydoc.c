/* fuzz_keydoc.c -- libFuzzer target: key documents and notary responses, and what holds when one
 * is accepted. */
/* SPDX-License-Identifier: ISC */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/b64.h"
#include "chappe/buf.h"
#include "chappe/cjson.h"
#include "chappe/keydoc.h"
#include "chappe/sign.h"
#include "chappe/util.h"

/* Checked properties abort, so libFuzzer reports them like crashes. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/*
 * The seeds in tests/fuzz/corpus/fuzz_keydoc are documents of ORIGIN valid at
 * NOW, made by python3-signedjson and co-signed by NOTARY with NOTARY_SEED;
 * /usr/bin/python3 this.py tests/fuzz/corpus/fuzz_keydoc remakes them:
 *
 *   import base64, copy, sys
 *   from canonicaljson import encode_canonical_json
 *   from signedjson.key import (decode_signing_key_base64, encode_verify_key_base64,
 *                               get_verify_key)
 *   from signedjson.sign import sign_json
 *   NOW, DAY = 1700000000000, 86400000
 *   def key(version, fill):
 *       seed = base64.b64encode(bytes([fill]) * 32).decode().rstrip("=")
 *       return decode_signing_key_base64("ed25519", version, seed)
 *   def vk(k):
 *       return encode_verify_key_base64(get_verify_key(k))
 *   k1, k2, old, notary = key("a_1", 1), key("b_2", 2), key("old", 3), key("n", 9)
 *   def doc(name, until, keys, olds=()):
 *       d = {"server_name": name, "valid_until_ts": until,
 *            "verify_keys": {"ed25519:" + k.version: {"key": vk(k)} for k in keys}}
 *       if olds:
 *           d["old_verify_keys"] = {"ed25519:" + k.version:
 *                                   {"key": vk(k), "expired_ts": NOW - DAY} for k in olds}
 *       for k in keys:
 *           d = sign_json(d, name, k)
 *       return d
 *   def cosign(d):  # sign_json changes d in place
 *       return sign_json(copy.deepcopy(d), "notary.example", notary)
 *   def write(name, obj):
 *       open(sys.argv[1] + "/" + name, "wb").write(encode_canonical_json(obj))
 *   one = doc("origin.example", NOW + DAY, [k1])
 *   two = doc("origin.example", NOW + 30 * DAY, [k1, k2], [old])
 *   write("server_one_key", one)
 *   write("server_two_keys_old", two)
 *   write("server_unsigned", dict(one, unsigned={"age_ts": 1}))
 *   write("server_other_name", doc("other.example", NOW + DAY, [k1]))
 *   write("server_expired", doc("origin.example", NOW - 1, [k1]))
 *   write("query_two_servers", {"server_keys": [
 *       cosign(one), cosign(doc("other.example", NOW + DAY, [k2])), cosign(two)]})
 *   write("query_not_cosigned", {"server_keys": [one]})
 */
#define ORIGIN      "origin.example"
#define NOTARY      "notary.example"
#define NOTARY_SEED "ed25519 n CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk\n"
#define NOW         1700000000000ULL

static struct sign_key *notary_key(void)
{
    static struct sign_key *key;
    if (key == NULL) {
        size_t n = 0;
        struct buf err = BUF_INIT;
        CHECK(sign_parse_keys(NOTARY_SEED, strlen(NOTARY_SEED), &key, &n, &err) == 0 && n == 1);
        buf_free(&err);
    }
    return key;
}

/* An error is whole lines of ASCII, the last one ended. */
static void check_err(const struct buf *err)
{
    CHECK(err->len > 0);
    CHECK(buf_data(err)[err->len - 1] == '\n');
    for (size_t i = 0; i < err->len; i++) {
        unsigned char c = (unsigned char)buf_data(err)[i];
        CHECK(c == '\n' || (c >= 0x20 && c != 0x7f));
    }
}

static bool version_ok(const char *id)
{
    size_t n = strlen(id);
    if (n <= 8 || n >= KEYDOC_KEY_ID_MAX || memcmp(id, "ed25519:", 8) != 0)
        return false;
    for (size_t i = 8; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

/* What an accepted document promises. */
static void check_doc(const struct keydoc *d)
{
    CHECK(strcmp(d->server_name, ORIGIN) == 0);
    CHECK(d->valid_until_ts > NOW && d->valid_until_ts <= NOW + KEYDOC_MAX_VALIDITY_MS);
    CHECK(d->ncurrent > 0 && d->ncurrent <= d->nkeys && d->nkeys <= KEYDOC_MAX_KEYS);
    CHECK(d->doc != NULL && json_is_object(d->doc));
    struct buf err = BUF_INIT, raw = BUF_INIT;
    for (size_t i = 0; i < d->nkeys; i++) {
        const struct keydoc_key *k = &d->keys[i];
        CHECK(version_ok(k->id));
        CHECK(k->old == (i >= d->ncurrent));
        CHECK(k->old || k->expired_ts == 0);
        CHECK(keydoc_find_key(d, k->id) == k); /* ids are unique */
        /* The key is the document's, 32 bytes. */
        const json_t *entry = json_object_get(
            json_object_get(d->doc, k->old ? "old_verify_keys" : "verify_keys"), k->id);
        const json_t *b64 = json_object_get(entry, "key");
        buf_reset(&raw);
        CHECK(b64_decode(&raw, json_string_value(b64), json_string_length(b64)) == 0);
        CHECK(raw.len == 32 && memcmp(buf_data(&raw), k->pk, 32) == 0);
        /* Every current key signed it. */
        if (!k->old)
            CHECK(sign_verify_json(d->doc, ORIGIN, k->id, k->pk, &err) == 0);
    }
    buf_free(&raw);
    buf_free(&err);
}

/* NOTARY, trusting its one key (kept in *trusted). */
static struct keydoc_notary notary_trusted(struct keydoc_key *trusted)
{
    const struct sign_key *nk = notary_key();
    memset(trusted, 0, sizeof(*trusted));
    memcpy(trusted->id, nk->id, sizeof(trusted->id));
    memcpy(trusted->pk, nk->pk, sizeof(trusted->pk));
    return (struct keydoc_notary){NOTARY, trusted, 1};
}

/* Co-signed, the document stays the origin's and becomes the notary's. */
static void check_cosign(const struct keydoc *d)
{
    const struct sign_key *nk = notary_key();
    struct keydoc_key trusted;
    struct keydoc_notary notary = notary_trusted(&trusted);
    struct buf err = BUF_INIT, body = BUF_INIT;
    json_t *cosigned = NULL;
    CHECK(keydoc_cosign(d->doc, NOTARY, nk, 1, &cosigned, &err) == 0);
    CHECK(keydoc_verify_notary(cosigned, &notary, &err) == 0);
    json_t *resp = json_pack("{s:[o]}", "server_keys", cosigned);
    CHECK(resp != NULL);
    CHECK(cjson_encode(resp, &body, &err) == 0);
    struct keydoc *docs = NULL;
    size_t n = 0;
    CHECK(keydoc_parse_query_response(buf_data(&body), body.len, ORIGIN, &notary, NOW, &docs, &n,
                                      &err) == 0);
    CHECK(n == 1 && docs[0].nkeys == d->nkeys && docs[0].ncurrent == d->ncurrent);
    CHECK(docs[0].valid_until_ts == d->valid_until_ts);
    CHECK(memcmp(docs[0].keys, d->keys, d->nkeys * sizeof(d->keys[0])) == 0);
    CHECK(err.len == 0);
    keydoc_free_array(docs, n);
    json_decref(resp);
    buf_free(&body);
    buf_free(&err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, so ASan catches any read past the end. */
    char *in = malloc(size ? size : 1);
    if (in == NULL)
        return 0;
    if (size)
        memcpy(in, data, size);

    struct keydoc d;
    struct buf err = BUF_INIT;
    int rc = keydoc_parse(in, size, ORIGIN, NOW, &d, &err);
    if (rc == 0) {
        CHECK(err.len == 0);
        check_doc(&d);
        check_cosign(&d);
    } else {
        CHECK(rc == CH_EINVAL || rc == CH_EPERM || rc == CH_ENOMEM);
        check_err(&err);
        CHECK(d.doc == NULL && d.nkeys == 0);
    }
    keydoc_free(&d);

    /* The same bytes as a notary's answer. */
    struct keydoc_key trusted;
    struct keydoc_notary notary = notary_trusted(&trusted);
    struct keydoc *docs = NULL;
    size_t n = 0;
    buf_reset(&err);
    rc = keydoc_parse_query_response(in, size, ORIGIN, &notary, NOW, &docs, &n, &err);
    if (rc == 0) {
        CHECK(n > 0 && docs != NULL);
        for (size_t i = 0; i < n; i++) {
            check_doc(&docs[i]);
            CHECK(keydoc_verify_notary(docs[i].doc, &notary, &err) == 0);
        }
        /* Rejected documents for ORIGIN, if any, left whole lines. */
        if (err.len)
            check_err(&err);
    } else {
        CHECK(rc == CH_EINVAL || rc == CH_ENOENT || rc == CH_ENOMEM);
        CHECK(docs == NULL && n == 0);
        check_err(&err);
    }
    keydoc_free_array(docs, n);
    buf_free(&err);
    free(in);
    return 0;
}
