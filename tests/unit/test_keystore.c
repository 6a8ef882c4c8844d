/* test_keystore.c -- unit tests for keystore.c: key and key document round trips, the exact
 * record layout, listing, and malformed records refused on read. */
/* SPDX-License-Identifier: ISC */
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chappe/keystore.h"
#include "chappe/store.h"
#include "chappe/util.h"

#define WAIT_MS 10000

struct fix {
    char dir[64];
    struct store *s;
};

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/chappe-keystore-test-XXXXXX");
    struct buf err = BUF_INIT;
    if (mkdtemp(f->dir) == NULL || store_open(f->dir, 4u << 20, 0, &f->s, &err) != 0) {
        fprintf(stderr, "setup: %.*s\n", (int)err.len, buf_data(&err));
        buf_free(&err);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    store_close(f->s);
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Writes through store_write_now.                                                             */

struct put {
    const char *server;
    const struct keystore_key *k;
    const struct keystore_doc *doc;
    struct slice json;
};

static int put_fn(MDB_txn *txn, struct store *s, void *ud)
{
    const struct put *p = ud;
    if (p->k)
        return keystore_put_txn(txn, s, p->server, p->k);
    return keystore_put_doc_txn(txn, s, p->server, p->doc, p->json);
}

static int put_key(struct store *s, const char *server, const struct keystore_key *k)
{
    struct put p = {server, k, NULL, {NULL, 0}};
    return store_write_now(s, put_fn, &p);
}

/* A raw record straight into a database, bypassing keystore's checks. */
struct raw {
    enum store_db db;
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
};

static int raw_fn(MDB_txn *txn, struct store *s, void *ud)
{
    const struct raw *r = ud;
    MDB_val k = {r->klen, (void *)r->key}, v = {r->vlen, (void *)r->val};
    return mdb_put(txn, store_dbi(s, r->db), &k, &v, 0);
}

static int put_raw(struct store *s, enum store_db db, const void *key, size_t klen, const void *val,
                   size_t vlen)
{
    struct raw r = {db, key, klen, val, vlen};
    return store_write_now(s, raw_fn, &r);
}

/* Read a raw record (copied into out, *len set). 0 or CH_ENOENT. */
static int get_raw(struct store *s, enum store_db db, const void *key, size_t klen, void *out,
                   size_t cap, size_t *len)
{
    MDB_txn *txn;
    MDB_val k = {klen, (void *)key}, v;
    if (store_read_begin(s, &txn) != 0)
        return CH_EIO;
    int rc = store_err(mdb_get(txn, store_dbi(s, db), &k, &v));
    if (rc == 0) {
        *len = v.mv_size;
        memcpy(out, v.mv_data, v.mv_size < cap ? v.mv_size : cap);
    }
    mdb_txn_abort(txn);
    return rc;
}

static struct keystore_key make_key(const char *id, uint8_t fill, enum keystore_source src,
                                    const char *notary)
{
    struct keystore_key k;
    memset(&k, 0, sizeof(k));
    snprintf(k.key_id, sizeof(k.key_id), "%s", id);
    memset(k.public_key, fill, sizeof(k.public_key));
    k.valid_until_ts = 1700000000000ull + fill;
    k.fetched_at = 1690000000000ull + fill;
    k.expired_ts = 0;
    k.source = src;
    snprintf(k.notary, sizeof(k.notary), "%s", notary);
    return k;
}

static void assert_key_equal(const struct keystore_key *a, const struct keystore_key *b)
{
    assert_string_equal(a->key_id, b->key_id);
    assert_memory_equal(a->public_key, b->public_key, KEYSTORE_PUBKEY_LEN);
    assert_int_equal(a->valid_until_ts, b->valid_until_ts);
    assert_int_equal(a->fetched_at, b->fetched_at);
    assert_int_equal(a->expired_ts, b->expired_ts);
    assert_int_equal(a->source, b->source);
    assert_string_equal(a->notary, b->notary);
}

/* ------------------------------------------------------------------------------------------ */
/* Keys.                                                                                       */

static void test_key_round_trip(void **state)
{
    struct fix *f = *state;
    struct keystore_key direct = make_key("ed25519:a_RXGa", 0x11, KEYSTORE_SRC_DIRECT, "");
    struct keystore_key notary =
        make_key("ed25519:old", 0x22, KEYSTORE_SRC_NOTARY, "relay.interieur.gouv.fr");
    notary.expired_ts = 1680000000000ull;
    assert_int_equal(put_key(f->s, "agent.finances.tchap.gouv.fr", &direct), 0);
    assert_int_equal(put_key(f->s, "agent.finances.tchap.gouv.fr", &notary), 0);

    struct keystore_key got;
    memset(&got, 0xa5, sizeof(got));
    assert_int_equal(keystore_get(f->s, "agent.finances.tchap.gouv.fr", "ed25519:a_RXGa", &got), 0);
    assert_key_equal(&got, &direct);
    assert_int_equal(keystore_get(f->s, "agent.finances.tchap.gouv.fr", "ed25519:old", &got), 0);
    assert_key_equal(&got, &notary);

    /* Absent: another key id, another server, a prefix of the server. */
    assert_int_equal(keystore_get(f->s, "agent.finances.tchap.gouv.fr", "ed25519:zz", &got),
                     CH_ENOENT);
    assert_int_equal(keystore_get(f->s, "agent.culture.tchap.gouv.fr", "ed25519:a_RXGa", &got),
                     CH_ENOENT);
    assert_int_equal(keystore_get(f->s, "agent.finances", "ed25519:a_RXGa", &got), CH_ENOENT);

    /* Replacing a key rewrites every field. */
    struct keystore_key newer = make_key("ed25519:a_RXGa", 0x33, KEYSTORE_SRC_NOTARY, "n.example");
    assert_int_equal(put_key(f->s, "agent.finances.tchap.gouv.fr", &newer), 0);
    assert_int_equal(keystore_get(f->s, "agent.finances.tchap.gouv.fr", "ed25519:a_RXGa", &got), 0);
    assert_key_equal(&got, &newer);
}

static int del_fn(MDB_txn *txn, struct store *s, void *ud)
{
    const char *const *a = ud;
    return keystore_del_txn(txn, s, a[0], a[1]);
}

static void test_key_delete(void **state)
{
    struct fix *f = *state;
    struct keystore_key k = make_key("ed25519:x", 1, KEYSTORE_SRC_DIRECT, "");
    assert_int_equal(put_key(f->s, "a.example", &k), 0);
    const char *args[2] = {"a.example", "ed25519:x"};
    assert_int_equal(store_write_now(f->s, del_fn, args), 0);
    struct keystore_key got;
    assert_int_equal(keystore_get(f->s, "a.example", "ed25519:x", &got), CH_ENOENT);
    assert_int_equal(store_write_now(f->s, del_fn, args), CH_ENOENT);
    const char *bad[2] = {"", "ed25519:x"};
    assert_int_equal(store_write_now(f->s, del_fn, bad), CH_EINVAL);
}

/* The on-disk bytes are the documented layout, byte for byte. */
static void test_key_layout(void **state)
{
    struct fix *f = *state;
    struct keystore_key k = make_key("ed25519:k", 0, KEYSTORE_SRC_NOTARY, "n.org");
    for (int i = 0; i < KEYSTORE_PUBKEY_LEN; i++)
        k.public_key[i] = (uint8_t)i;
    k.valid_until_ts = 0x0102030405060708ull;
    k.fetched_at = 0x1112131415161718ull;
    k.expired_ts = 0x2122232425262728ull;
    assert_int_equal(put_key(f->s, "s.org", &k), 0);

    uint8_t want[65] = {1, 2};
    for (int i = 0; i < 32; i++)
        want[2 + i] = (uint8_t)i;
    const uint8_t tail[] = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x18, 0x17, 0x16,
                            0x15, 0x14, 0x13, 0x12, 0x11, 0x28, 0x27, 0x26, 0x25, 0x24, 0x23,
                            0x22, 0x21, 0x05, 0x00, 'n',  '.',  'o',  'r',  'g'};
    memcpy(want + 34, tail, sizeof(tail));
    uint8_t got[128];
    size_t len = 0;
    assert_int_equal(get_raw(f->s, STORE_DB_KEYS, "s.org\0ed25519:k", 15, got, sizeof(got), &len),
                     0);
    assert_int_equal(len, 65);
    assert_memory_equal(got, want, 65);

    /* A direct key: 60 bytes, no notary. */
    k = make_key("ed25519:d", 7, KEYSTORE_SRC_DIRECT, "");
    assert_int_equal(put_key(f->s, "s.org", &k), 0);
    assert_int_equal(get_raw(f->s, STORE_DB_KEYS, "s.org\0ed25519:d", 15, got, sizeof(got), &len),
                     0);
    assert_int_equal(len, 60);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], KEYSTORE_SRC_DIRECT);
    assert_int_equal(got[58], 0);
    assert_int_equal(got[59], 0);
}

static void test_key_put_invalid(void **state)
{
    struct fix *f = *state;
    struct keystore_key k = make_key("ed25519:x", 1, KEYSTORE_SRC_DIRECT, "");
    char longname[KEYSTORE_NAME_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(put_key(f->s, "", &k), CH_EINVAL);
    assert_int_equal(put_key(f->s, longname, &k), CH_EINVAL);
    longname[KEYSTORE_NAME_MAX] = '\0'; /* exactly the maximum is fine */
    assert_int_equal(put_key(f->s, longname, &k), 0);
    struct keystore_key got;
    assert_int_equal(keystore_get(f->s, longname, "ed25519:x", &got), 0);

    struct keystore_key bad = k;
    bad.key_id[0] = '\0';
    assert_int_equal(put_key(f->s, "a.org", &bad), CH_EINVAL);
    bad = make_key("ed25519:x", 1, KEYSTORE_SRC_DIRECT, "n.org"); /* direct with a notary */
    assert_int_equal(put_key(f->s, "a.org", &bad), CH_EINVAL);
    bad = make_key("ed25519:x", 1, KEYSTORE_SRC_NOTARY, ""); /* notary without its name */
    assert_int_equal(put_key(f->s, "a.org", &bad), CH_EINVAL);
    bad = make_key("ed25519:x", 1, (enum keystore_source)3, "");
    assert_int_equal(put_key(f->s, "a.org", &bad), CH_EINVAL);
    bad = make_key("ed25519:x", 1, KEYSTORE_SRC_DIRECT, "");
    memset(bad.key_id, 'k', sizeof(bad.key_id)); /* not terminated within the field */
    assert_int_equal(put_key(f->s, "a.org", &bad), CH_EINVAL);
    assert_int_equal(keystore_get(f->s, "a.org", "ed25519:x", &got), CH_ENOENT);

    /* Lookups with impossible names are refused, not searched. */
    assert_int_equal(keystore_get(f->s, "", "ed25519:x", &got), CH_EINVAL);
    assert_int_equal(keystore_get(f->s, "a.org", "", &got), CH_EINVAL);
    char longid[KEYSTORE_KEY_ID_MAX + 2];
    memset(longid, 'i', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    assert_int_equal(keystore_get(f->s, "a.org", longid, &got), CH_EINVAL);
}

static void test_key_malformed(void **state)
{
    struct fix *f = *state;
    struct keystore_key k = make_key("ed25519:ok", 9, KEYSTORE_SRC_NOTARY, "n.org");
    assert_int_equal(put_key(f->s, "m.org", &k), 0);
    uint8_t good[65];
    size_t len = 0;
    assert_int_equal(
        get_raw(f->s, STORE_DB_KEYS, "m.org\0ed25519:ok", 16, good, sizeof(good), &len), 0);
    assert_int_equal(len, 65);

    struct {
        const char *what;
        size_t len;
        int off; /* byte to change, -1 for none */
        uint8_t val;
    } cases[] = {
        {"empty", 0, -1, 0},
        {"truncated header", 30, -1, 0},
        {"truncated notary", 64, -1, 0},
        {"trailing byte", 66, -1, 0},
        {"version 2", 65, 0, 2},
        {"version 0", 65, 0, 0},
        {"unknown source", 65, 1, 9},
        {"direct with a notary", 65, 1, KEYSTORE_SRC_DIRECT},
        {"notary length too long", 65, 58, 6},
        {"notary length huge", 65, 59, 0xff},
        {"NUL in the notary", 65, 62, 0},
    };
    uint8_t rec[80];
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        memset(rec, 0, sizeof(rec));
        memcpy(rec, good, sizeof(good));
        if (cases[i].off >= 0)
            rec[cases[i].off] = cases[i].val;
        assert_int_equal(put_raw(f->s, STORE_DB_KEYS, "m.org\0ed25519:bad", 17, rec, cases[i].len),
                         0);
        struct keystore_key got;
        int rc = keystore_get(f->s, "m.org", "ed25519:bad", &got);
        if (rc != CH_EPROTO)
            fail_msg("%s: got %d", cases[i].what, rc);
    }
    /* A notary key with its notary length zeroed is a direct key claiming to be notarised. */
    memcpy(rec, good, 60);
    rec[58] = 0;
    assert_int_equal(put_raw(f->s, STORE_DB_KEYS, "m.org\0ed25519:bad", 17, rec, 60), 0);
    struct keystore_key got;
    assert_int_equal(keystore_get(f->s, "m.org", "ed25519:bad", &got), CH_EPROTO);
    /* The good one is untouched. */
    assert_int_equal(keystore_get(f->s, "m.org", "ed25519:ok", &got), 0);
    assert_key_equal(&got, &k);
}

/* ------------------------------------------------------------------------------------------ */
/* Listing.                                                                                    */

struct seen {
    char server[8][KEYSTORE_NAME_MAX + 1];
    struct keystore_key key[8];
    int status[8];
    size_t n;
    size_t stop_after; /* 0: never */
};

static int each(void *ud, const char *server, const struct keystore_key *k, int status)
{
    struct seen *s = ud;
    if (s->n < 8) {
        strcpy(s->server[s->n], server);
        s->key[s->n] = *k;
        s->status[s->n] = status;
    }
    s->n++;
    return s->stop_after && s->n == s->stop_after ? 42 : 0;
}

static void test_list(void **state)
{
    struct fix *f = *state;
    /* "a.org" sorts before "a.org.x" and "a.orgz": the listing of a.org must not reach them. */
    const char *servers[] = {"a.org", "a.org.x", "a.orgz", "b.org"};
    for (size_t i = 0; i < ARRAY_LEN(servers); i++) {
        struct keystore_key k = make_key("ed25519:1", (uint8_t)i, KEYSTORE_SRC_DIRECT, "");
        assert_int_equal(put_key(f->s, servers[i], &k), 0);
    }
    struct keystore_key k2 = make_key("ed25519:0", 9, KEYSTORE_SRC_NOTARY, "n.org");
    assert_int_equal(put_key(f->s, "a.org", &k2), 0);

    struct seen seen = {0};
    assert_int_equal(keystore_list(f->s, NULL, each, &seen), 0);
    assert_int_equal(seen.n, 5);
    const char *want_server[] = {"a.org", "a.org", "a.org.x", "a.orgz", "b.org"};
    const char *want_id[] = {"ed25519:0", "ed25519:1", "ed25519:1", "ed25519:1", "ed25519:1"};
    for (size_t i = 0; i < 5; i++) {
        assert_string_equal(seen.server[i], want_server[i]);
        assert_string_equal(seen.key[i].key_id, want_id[i]);
        assert_int_equal(seen.status[i], 0);
    }
    assert_key_equal(&seen.key[0], &k2);
    assert_int_equal(seen.key[3].public_key[0], 2);

    memset(&seen, 0, sizeof(seen));
    assert_int_equal(keystore_list(f->s, "a.org", each, &seen), 0);
    assert_int_equal(seen.n, 2);
    assert_string_equal(seen.key[0].key_id, "ed25519:0");
    assert_string_equal(seen.key[1].key_id, "ed25519:1");

    memset(&seen, 0, sizeof(seen));
    assert_int_equal(keystore_list(f->s, "b.org", each, &seen), 0);
    assert_int_equal(seen.n, 1);
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(keystore_list(f->s, "c.org", each, &seen), 0);
    assert_int_equal(seen.n, 0);
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(keystore_list(f->s, "a.or", each, &seen), 0);
    assert_int_equal(seen.n, 0);

    /* The callback stops the walk. */
    memset(&seen, 0, sizeof(seen));
    seen.stop_after = 2;
    assert_int_equal(keystore_list(f->s, NULL, each, &seen), 42);
    assert_int_equal(seen.n, 2);
    assert_int_equal(keystore_list(f->s, "", each, &seen), CH_EINVAL);
}

static void test_list_malformed(void **state)
{
    struct fix *f = *state;
    struct keystore_key k = make_key("ed25519:1", 1, KEYSTORE_SRC_DIRECT, "");
    assert_int_equal(put_key(f->s, "a.org", &k), 0);
    /* A bad record, a database key without the separator, one with an empty key id. */
    assert_int_equal(put_raw(f->s, STORE_DB_KEYS, "a.org\0ed25519:2", 15, "\x01", 1), 0);
    assert_int_equal(put_raw(f->s, STORE_DB_KEYS, "nosep", 5, "\x01", 1), 0);
    assert_int_equal(put_raw(f->s, STORE_DB_KEYS, "z.org\0", 6, "\x01", 1), 0);
    struct seen seen = {0};
    assert_int_equal(keystore_list(f->s, NULL, each, &seen), 0);
    assert_int_equal(seen.n, 4);
    assert_string_equal(seen.server[0], "a.org");
    assert_int_equal(seen.status[0], 0);
    assert_string_equal(seen.server[1], "a.org");
    assert_string_equal(seen.key[1].key_id, "ed25519:2");
    assert_int_equal(seen.status[1], CH_EPROTO);
    assert_string_equal(seen.server[2], "nosep");
    assert_string_equal(seen.key[2].key_id, "");
    assert_int_equal(seen.status[2], CH_EPROTO);
    assert_string_equal(seen.server[3], "z.org");
    assert_int_equal(seen.status[3], CH_EPROTO);
}

/* ------------------------------------------------------------------------------------------ */
/* Key documents.                                                                              */

static int put_doc(struct store *s, const char *server, uint64_t fetched, uint64_t until,
                   const char *json, size_t len)
{
    struct keystore_doc d = {fetched, until};
    struct put p = {server, NULL, &d, {json, len}};
    return store_write_now(s, put_fn, &p);
}

static void test_doc_round_trip(void **state)
{
    struct fix *f = *state;
    const char *doc = "{\"server_name\":\"a.org\",\"valid_until_ts\":1700000000000}";
    assert_int_equal(put_doc(f->s, "a.org", 1690000000001ull, 1700000000000ull, doc, strlen(doc)),
                     0);
    struct keystore_doc meta = {0};
    struct buf json = BUF_INIT;
    assert_int_equal(buf_append_str(&json, "prefix:"), 0);
    assert_int_equal(keystore_get_doc(f->s, "a.org", &meta, &json), 0);
    assert_int_equal(meta.fetched_at, 1690000000001ull);
    assert_int_equal(meta.valid_until_ts, 1700000000000ull);
    assert_int_equal(json.len, 7 + strlen(doc)); /* appended */
    assert_memory_equal(buf_data(&json) + 7, doc, strlen(doc));

    /* Bytes come back exactly, NULs included; a new document replaces the old. */
    const char bin[] = {'{', '\0', '}', '\xff'};
    assert_int_equal(put_doc(f->s, "a.org", 5, 6, bin, sizeof(bin)), 0);
    buf_reset(&json);
    assert_int_equal(keystore_get_doc(f->s, "a.org", &meta, &json), 0);
    assert_int_equal(json.len, sizeof(bin));
    assert_memory_equal(buf_data(&json), bin, sizeof(bin));
    assert_int_equal(meta.fetched_at, 5);
    assert_int_equal(meta.valid_until_ts, 6);

    /* The layout: version, fetched_at, valid_until_ts, the bytes. */
    uint8_t raw[64];
    size_t len = 0;
    assert_int_equal(get_raw(f->s, STORE_DB_KEYDOCS, "a.org", 5, raw, sizeof(raw), &len), 0);
    const uint8_t want[] = {1, 5, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, '{', 0, '}', 0xff};
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(raw, want, sizeof(want));

    buf_reset(&json);
    assert_int_equal(keystore_get_doc(f->s, "b.org", &meta, &json), CH_ENOENT);
    assert_int_equal(keystore_get_doc(f->s, "", &meta, &json), CH_EINVAL);
    assert_int_equal(put_doc(f->s, "a.org", 1, 2, "", 0), CH_EINVAL);
    assert_int_equal(put_doc(f->s, "", 1, 2, "{}", 2), CH_EINVAL);
    assert_int_equal(json.len, 0);
    buf_free(&json);
}

static void test_doc_malformed(void **state)
{
    struct fix *f = *state;
    struct keystore_doc meta;
    struct buf json = BUF_INIT;
    /* Header only (no document), short, wrong version. */
    const uint8_t header_only[17] = {1};
    assert_int_equal(put_raw(f->s, STORE_DB_KEYDOCS, "x.org", 5, header_only, 17), 0);
    assert_int_equal(keystore_get_doc(f->s, "x.org", &meta, &json), CH_EPROTO);
    assert_int_equal(put_raw(f->s, STORE_DB_KEYDOCS, "x.org", 5, "\x01\x02", 2), 0);
    assert_int_equal(keystore_get_doc(f->s, "x.org", &meta, &json), CH_EPROTO);
    uint8_t v2[20] = {2};
    assert_int_equal(put_raw(f->s, STORE_DB_KEYDOCS, "x.org", 5, v2, sizeof(v2)), 0);
    assert_int_equal(keystore_get_doc(f->s, "x.org", &meta, &json), CH_EPROTO);
    assert_int_equal(json.len, 0);
    buf_free(&json);
}

/* ------------------------------------------------------------------------------------------ */
/* The async path: a put through the writer, read back on the loop in done.                    */

struct async_put {
    struct store *s;
    struct keystore_key k;
    int rc;
    int get_rc;
    struct keystore_key got;
    int ndone;
};

static int async_fn(MDB_txn *txn, struct store *s, void *ud)
{
    struct async_put *a = ud;
    return keystore_put_txn(txn, s, "async.org", &a->k);
}

static void async_done(void *ud, int rc)
{
    struct async_put *a = ud;
    a->rc = rc;
    a->ndone++;
    a->get_rc = keystore_get(a->s, "async.org", a->k.key_id, &a->got);
}

static void on_timeout(uv_timer_t *t)
{
    *(bool *)t->data = true;
    uv_stop(t->loop);
}

static void test_async_put(void **state)
{
    struct fix *f = *state;
    uv_loop_t loop;
    struct store_port port;
    uv_timer_t timer;
    bool timed_out = false;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(store_port_init(&port, &loop), 0);
    assert_int_equal(uv_timer_init(&loop, &timer), 0);
    timer.data = &timed_out;
    uv_timer_start(&timer, on_timeout, WAIT_MS, 0);
    uv_unref((uv_handle_t *)&timer);

    struct async_put a = {.s = f->s, .k = make_key("ed25519:as", 5, KEYSTORE_SRC_DIRECT, "")};
    assert_int_equal(store_submit(f->s, &port, async_fn, async_done, &a), 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* the port keeps the loop alive until done has run */
    assert_false(timed_out);
    assert_int_equal(a.ndone, 1);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.get_rc, 0);
    assert_key_equal(&a.got, &a.k);

    store_port_close(&port, NULL);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_source_names(void **state)
{
    (void)state;
    assert_string_equal(keystore_source_name(KEYSTORE_SRC_DIRECT), "direct");
    assert_string_equal(keystore_source_name(KEYSTORE_SRC_NOTARY), "notary");
    assert_string_equal(keystore_source_name((enum keystore_source)0), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_key_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_put_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_doc_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_doc_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_async_put, setup, teardown),
        cmocka_unit_test(test_source_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
