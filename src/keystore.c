/* keystore.c -- remote servers' verify keys and key documents in LMDB, with explicit byte
 * layouts that are checked on every read. */
/* SPDX-License-Identifier: ISC */
#include <stdbool.h>
#include <string.h>

#include "chappe/keystore.h"
#include "chappe/util.h"

/*
 * `keys` record, version 1, every integer little-endian:
 *   0  u8   version (1)
 *   1  u8   source (enum keystore_source)
 *   2  32   ed25519 public key
 *   34 u64  valid_until_ts
 *   42 u64  fetched_at
 *   50 u64  expired_ts
 *   58 u16  notary name length n (0 for a direct fetch)
 *   60 n    notary name (no NUL)
 * The record is exactly 60 + n bytes.
 *
 * `keydocs` record, version 1:
 *   0  u8   version (1)
 *   1  u64  fetched_at
 *   9  u64  valid_until_ts
 *   17 ...  the key document, JSON text (at least one byte)
 */
#define KEY_REC_VERSION 1
#define KEY_REC_FIXED   60
#define DOC_REC_VERSION 1
#define DOC_REC_FIXED   17

/* The database key: server "\0" key_id. */
#define DB_KEY_MAX (KEYSTORE_NAME_MAX + 1 + KEYSTORE_KEY_ID_MAX)

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

const char *keystore_source_name(enum keystore_source src)
{
    switch (src) {
    case KEYSTORE_SRC_DIRECT:
        return "direct";
    case KEYSTORE_SRC_NOTARY:
        return "notary";
    default:
        return "unknown";
    }
}

/* 0 when name is a non-empty string of at most max bytes. */
static int check_len(const char *name, size_t max)
{
    if (name == NULL || name[0] == '\0' || strnlen(name, max + 1) > max)
        return CH_EINVAL;
    return 0;
}

/* Build server "\0" key_id into out (DB_KEY_MAX bytes). */
static int make_key(const char *server, const char *key_id, char *out, MDB_val *k)
{
    if (check_len(server, KEYSTORE_NAME_MAX) || check_len(key_id, KEYSTORE_KEY_ID_MAX))
        return CH_EINVAL;
    size_t ns = strlen(server), ni = strlen(key_id);
    memcpy(out, server, ns);
    out[ns] = '\0';
    memcpy(out + ns + 1, key_id, ni);
    *k = (MDB_val){ns + 1 + ni, out};
    return 0;
}

/* Decode a `keys` record. 0 or CH_EPROTO. key_id is left to the caller. */
static int decode_key(const MDB_val *v, struct keystore_key *out)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < KEY_REC_FIXED || p[0] != KEY_REC_VERSION)
        return CH_EPROTO;
    size_t n = (size_t)get_le(p + 58, 2);
    if (v->mv_size != KEY_REC_FIXED + n || n > KEYSTORE_NAME_MAX ||
        memchr(p + KEY_REC_FIXED, '\0', n) != NULL)
        return CH_EPROTO;
    if (!(p[1] == KEYSTORE_SRC_DIRECT && n == 0) && !(p[1] == KEYSTORE_SRC_NOTARY && n > 0))
        return CH_EPROTO;
    out->source = p[1];
    memcpy(out->public_key, p + 2, KEYSTORE_PUBKEY_LEN);
    out->valid_until_ts = get_le(p + 34, 8);
    out->fetched_at = get_le(p + 42, 8);
    out->expired_ts = get_le(p + 50, 8);
    memcpy(out->notary, p + KEY_REC_FIXED, n);
    out->notary[n] = '\0';
    return 0;
}

int keystore_get_txn(MDB_txn *txn, const struct store *s, const char *server, const char *key_id,
                     struct keystore_key *out)
{
    char kb[DB_KEY_MAX];
    MDB_val k, v;
    if (make_key(server, key_id, kb, &k) != 0)
        return CH_EINVAL;
    int rc = mdb_get(txn, store_dbi(s, STORE_DB_KEYS), &k, &v);
    if (rc != 0)
        return store_err(rc);
    rc = decode_key(&v, out);
    if (rc == 0)
        memcpy(out->key_id, key_id, strlen(key_id) + 1);
    return rc;
}

int keystore_get(struct store *s, const char *server, const char *key_id, struct keystore_key *out)
{
    MDB_txn *txn;
    int rc = store_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    rc = keystore_get_txn(txn, s, server, key_id, out);
    mdb_txn_abort(txn);
    return rc;
}

int keystore_put_txn(MDB_txn *txn, const struct store *s, const char *server,
                     const struct keystore_key *k)
{
    char kb[DB_KEY_MAX];
    MDB_val key;
    if (make_key(server, k->key_id, kb, &key) != 0)
        return CH_EINVAL;
    size_t n = strnlen(k->notary, sizeof(k->notary));
    if (n > KEYSTORE_NAME_MAX || !((k->source == KEYSTORE_SRC_DIRECT && n == 0) ||
                                   (k->source == KEYSTORE_SRC_NOTARY && n > 0)))
        return CH_EINVAL;
    uint8_t rec[KEY_REC_FIXED + KEYSTORE_NAME_MAX];
    rec[0] = KEY_REC_VERSION;
    rec[1] = (uint8_t)k->source;
    memcpy(rec + 2, k->public_key, KEYSTORE_PUBKEY_LEN);
    put_le(rec + 34, k->valid_until_ts, 8);
    put_le(rec + 42, k->fetched_at, 8);
    put_le(rec + 50, k->expired_ts, 8);
    put_le(rec + 58, n, 2);
    memcpy(rec + KEY_REC_FIXED, k->notary, n);
    MDB_val v = {KEY_REC_FIXED + n, rec};
    return mdb_put(txn, store_dbi(s, STORE_DB_KEYS), &key, &v, 0);
}

int keystore_del_txn(MDB_txn *txn, const struct store *s, const char *server, const char *key_id)
{
    char kb[DB_KEY_MAX];
    MDB_val k;
    if (make_key(server, key_id, kb, &k) != 0)
        return CH_EINVAL;
    return mdb_del(txn, store_dbi(s, STORE_DB_KEYS), &k, NULL);
}

/*
 * Split a database key into server and key id (copied, NUL-terminated). 0, or
 * CH_EPROTO with as much as could be read copied.
 */
static int split_key(const MDB_val *k, char *server, struct keystore_key *out)
{
    const char *p = k->mv_data;
    const char *nul = memchr(p, '\0', k->mv_size);
    size_t ns = nul ? (size_t)(nul - p) : k->mv_size;
    size_t ni = nul ? k->mv_size - ns - 1 : 0;
    size_t cs = ns < KEYSTORE_NAME_MAX ? ns : KEYSTORE_NAME_MAX;
    size_t ci = ni < KEYSTORE_KEY_ID_MAX ? ni : KEYSTORE_KEY_ID_MAX;
    memcpy(server, p, cs);
    server[cs] = '\0';
    memcpy(out->key_id, nul ? nul + 1 : "", ci);
    out->key_id[ci] = '\0';
    if (nul == NULL || ns == 0 || ni == 0 || cs != ns || ci != ni ||
        memchr(nul + 1, '\0', ni) != NULL)
        return CH_EPROTO;
    return 0;
}

static int walk(MDB_cursor *c, const char *server, keystore_each_fn fn, void *ud)
{
    char prefix[KEYSTORE_NAME_MAX + 1];
    size_t np = 0;
    MDB_val k = {0, NULL}, v;
    MDB_cursor_op op = MDB_FIRST;
    if (server) {
        np = strlen(server) + 1; /* the name and its NUL separator */
        memcpy(prefix, server, np);
        k = (MDB_val){np, prefix};
        op = MDB_SET_RANGE;
    }
    for (;; op = MDB_NEXT) {
        int rc = mdb_cursor_get(c, &k, &v, op);
        if (rc == MDB_NOTFOUND)
            return 0;
        if (rc != 0)
            return store_err(rc);
        if (server && (k.mv_size < np || memcmp(k.mv_data, prefix, np) != 0))
            return 0; /* past this server's keys */
        char name[KEYSTORE_NAME_MAX + 1];
        struct keystore_key key;
        memset(&key, 0, sizeof(key));
        int status = split_key(&k, name, &key);
        if (status == 0)
            status = decode_key(&v, &key);
        rc = fn(ud, name, &key, status);
        if (rc != 0)
            return rc;
    }
}

int keystore_list(struct store *s, const char *server, keystore_each_fn fn, void *ud)
{
    if (server && check_len(server, KEYSTORE_NAME_MAX) != 0)
        return CH_EINVAL;
    MDB_txn *txn;
    MDB_cursor *c;
    int rc = store_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, store_dbi(s, STORE_DB_KEYS), &c);
    if (rc == 0) {
        rc = walk(c, server, fn, ud);
        mdb_cursor_close(c);
    } else {
        rc = store_err(rc);
    }
    mdb_txn_abort(txn);
    return rc;
}

int keystore_get_doc_txn(MDB_txn *txn, const struct store *s, const char *server,
                         struct keystore_doc *meta, struct buf *json)
{
    if (check_len(server, KEYSTORE_NAME_MAX) != 0)
        return CH_EINVAL;
    MDB_val k = {strlen(server), (void *)server}, v;
    int rc = mdb_get(txn, store_dbi(s, STORE_DB_KEYDOCS), &k, &v);
    if (rc != 0)
        return store_err(rc);
    const uint8_t *p = v.mv_data;
    if (v.mv_size <= DOC_REC_FIXED || p[0] != DOC_REC_VERSION)
        return CH_EPROTO;
    if (buf_append(json, p + DOC_REC_FIXED, v.mv_size - DOC_REC_FIXED) != 0)
        return CH_ENOMEM;
    meta->fetched_at = get_le(p + 1, 8);
    meta->valid_until_ts = get_le(p + 9, 8);
    return 0;
}

int keystore_get_doc(struct store *s, const char *server, struct keystore_doc *meta,
                     struct buf *json)
{
    MDB_txn *txn;
    int rc = store_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    rc = keystore_get_doc_txn(txn, s, server, meta, json);
    mdb_txn_abort(txn);
    return rc;
}

int keystore_put_doc_txn(MDB_txn *txn, const struct store *s, const char *server,
                         const struct keystore_doc *meta, struct slice json)
{
    if (check_len(server, KEYSTORE_NAME_MAX) != 0 || json.len == 0)
        return CH_EINVAL;
    MDB_val k = {strlen(server), (void *)server};
    MDB_val v = {DOC_REC_FIXED + json.len, NULL};
    /* MDB_RESERVE: LMDB hands out the space and the record is written in place. */
    int rc = mdb_put(txn, store_dbi(s, STORE_DB_KEYDOCS), &k, &v, MDB_RESERVE);
    if (rc != 0)
        return rc;
    uint8_t *p = v.mv_data;
    p[0] = DOC_REC_VERSION;
    put_le(p + 1, meta->fetched_at, 8);
    put_le(p + 9, meta->valid_until_ts, 8);
    memcpy(p + DOC_REC_FIXED, json.base, json.len);
    return 0;
}
