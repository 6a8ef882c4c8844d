/* queue.c -- the outbound transaction queue in LMDB: per-destination FIFOs, delivery state, the
 * dedupe index and the dead letters, with explicit byte layouts checked on every read. */
/* SPDX-License-Identifier: ISC */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "chappe/queue.h"
#include "chappe/util.h"

/*
 * `queue` key: destination "\0" seq (u64 big-endian, so that memcmp order is
 * FIFO order). Record, version 1, every integer little-endian:
 *   0  u8   version (1)
 *   1  u64  first_seen_ms
 *   9  u32  attempts
 *   13      eight byte strings, each a u32 length n then n bytes (no NUL), in order:
 *           origin, destination, txn_id, method, path, authorization, content_type, body
 * The record ends exactly after the body: 45 bytes plus the fields. That size
 * is what the caps, a destination's bytes and the totals count. The
 * destination inside must be the one of the key.
 *
 * `dest` key: destination. Record, version 1:
 *   0  u8   version (1)
 *   1  u64  next_seq
 *   9  u64  depth
 *   17 u64  bytes
 *   25 u64  oldest_seq (next_seq when empty)
 *   33 u64  next_attempt_ms
 *   41 u64  backoff_ms
 *   49 u64  last_attempt_ms
 *   57 u32  failures
 *   61 u32  last_status (two's complement)
 *   65 u32  last_error length n (at most 255), then n bytes
 *
 * `txns` key: BLAKE2b-256 of origin "\0" destination "\0" txn_id (none holds a
 * NUL, so the input is unambiguous). A digest rather than the names: LMDB
 * keys are at most 511 bytes, two server names and a txnId may be longer.
 * Value: u64 seq, 8 bytes. A duplicate is only a duplicate when the entry at
 * that seq carries the same three fields, so an index entry left stale is
 * harmless (it is overwritten).
 *
 * `dead` key: id (u64 big-endian). Record, version 1:
 *   0  u8   version (1)
 *   1  u64  died_ms
 *   9  u32  status (two's complement)
 *   13 u32  reason length r (at most 255), then r bytes
 *   .. u32  response length n (at most 4096), then n bytes
 *   .. the entry's `queue` record, to the end
 *
 * `meta` "queue_bytes", "queue_count", "dead_seq": u64, 8 bytes; absent is 0.
 */
#define ITEM_VERSION  1
#define ITEM_FIXED    13
#define ITEM_NFIELDS  8
#define DEST_VERSION  1
#define DEST_FIXED    69
#define DEAD_VERSION  1
#define DEAD_FIXED    13
#define ITEM_KEY_MAX  (QUEUE_NAME_MAX + 1 + 8)
#define META_BYTES    "queue_bytes"
#define META_COUNT    "queue_count"
#define META_DEAD_SEQ "dead_seq"

/* The fields of a queue_item in record order, with what a valid one looks like. */
static const struct field {
    size_t off;
    size_t min, max;
    bool text; /* no NUL inside */
} fields[ITEM_NFIELDS] = {
    {offsetof(struct queue_item, origin), 1, QUEUE_NAME_MAX, true},
    {offsetof(struct queue_item, destination), 1, QUEUE_NAME_MAX, true},
    {offsetof(struct queue_item, txn_id), 1, QUEUE_FIELD_MAX, true},
    {offsetof(struct queue_item, method), 1, QUEUE_FIELD_MAX, true},
    {offsetof(struct queue_item, path), 1, QUEUE_FIELD_MAX, true},
    {offsetof(struct queue_item, authorization), 0, QUEUE_FIELD_MAX, true},
    {offsetof(struct queue_item, content_type), 0, QUEUE_FIELD_MAX, true},
    {offsetof(struct queue_item, body), 0, UINT32_MAX, false},
};
#define BODY_FIELD (ITEM_NFIELDS - 1)

static struct slice *field_of(struct queue_item *it, size_t i)
{
    return (struct slice *)((char *)it + fields[i].off);
}

static struct slice field_get(const struct queue_item *it, size_t i)
{
    return *(const struct slice *)((const char *)it + fields[i].off);
}

/* ------------------------------------------------------------------------------------------ */
/* Bytes.                                                                                      */

static void put_le(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static uint64_t sub_sat(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

/* Write a u32-length byte string at p; returns the byte after it. */
static uint8_t *put_str(uint8_t *p, struct slice s)
{
    put_le(p, s.len, 4);
    if (s.len)
        memcpy(p + 4, s.base, s.len);
    return p + 4 + s.len;
}

/* A bounds-checked reader over one record: any short or invalid read sets bad. */
struct rd {
    const uint8_t *p;
    size_t len, off;
    bool bad;
};

static uint64_t rd_int(struct rd *r, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = true;
        return 0;
    }
    uint64_t v = get_le(r->p + r->off, n);
    r->off += n;
    return v;
}

/* A u32-length byte string of min..max bytes; text: without a NUL. */
static struct slice rd_str(struct rd *r, size_t min, size_t max, bool text)
{
    size_t n = (size_t)rd_int(r, 4);
    if (r->bad || n < min || n > max || r->len - r->off < n ||
        (text && memchr(r->p + r->off, '\0', n) != NULL)) {
        r->bad = true;
        return (struct slice){"", 0};
    }
    struct slice s = {(const char *)r->p + r->off, n};
    r->off += n;
    return s;
}

/* The length of s cut to at most max bytes, not inside a UTF-8 sequence. NULL is "". */
static size_t cut_utf8(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--; /* s[n] continues the character that would be cut: drop that character */
    return n;
}

/*
 * Copy the n slices *f[i] into b, each followed by a NUL, and point them
 * there. All in one call: a later append may move b's memory.
 */
static int keep(struct buf *b, struct slice *const *f, size_t n)
{
    size_t at[ITEM_NFIELDS + 2];
    for (size_t i = 0; i < n; i++) {
        at[i] = b->len;
        if (buf_append(b, f[i]->base, f[i]->len) != 0 || buf_append(b, "", 1) != 0)
            return CH_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        f[i]->base = buf_data(b) + at[i];
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Records.                                                                                    */

/* 0 when dest is a valid destination name; *out is it as a slice. */
static int check_name(const char *dest, struct slice *out)
{
    if (dest == NULL || dest[0] == '\0' || strnlen(dest, QUEUE_NAME_MAX + 1) > QUEUE_NAME_MAX)
        return CH_EINVAL;
    *out = (struct slice){dest, strlen(dest)};
    return 0;
}

static int item_check(const struct queue_item *it)
{
    for (size_t i = 0; i < ITEM_NFIELDS; i++) {
        struct slice s = field_get(it, i);
        if (s.len < fields[i].min || s.len > fields[i].max || (s.len > 0 && s.base == NULL) ||
            (fields[i].text && s.len > 0 && memchr(s.base, '\0', s.len) != NULL))
            return CH_EINVAL;
    }
    return 0;
}

static size_t item_size(const struct queue_item *it)
{
    size_t n = ITEM_FIXED;
    for (size_t i = 0; i < ITEM_NFIELDS; i++)
        n += 4 + field_get(it, i).len;
    return n;
}

static void item_encode(uint8_t *p, const struct queue_item *it, uint32_t attempts)
{
    p[0] = ITEM_VERSION;
    put_le(p + 1, it->first_seen_ms, 8);
    put_le(p + 9, attempts, 4);
    p += ITEM_FIXED;
    for (size_t i = 0; i < ITEM_NFIELDS; i++)
        p = put_str(p, field_get(it, i));
}

/* Decode an item record; out's slices point into p (not NUL-terminated). 0 or CH_EPROTO. */
static int item_decode(const void *p, size_t n, struct queue_item *out)
{
    struct rd r = {p, n, 1, false};
    if (n < ITEM_FIXED || r.p[0] != ITEM_VERSION)
        return CH_EPROTO;
    memset(out, 0, sizeof(*out));
    out->first_seen_ms = rd_int(&r, 8);
    out->attempts = (uint32_t)rd_int(&r, 4);
    for (size_t i = 0; i < ITEM_NFIELDS; i++)
        *field_of(out, i) = rd_str(&r, fields[i].min, fields[i].max, fields[i].text);
    return r.bad || r.off != n ? CH_EPROTO : 0;
}

/*
 * Copy the item's strings and the n more slices into b in one go (the body
 * only when with_body; else its base is NULL).
 */
static int item_keep(struct queue_item *it, struct buf *b, bool with_body, struct slice *more[],
                     size_t n)
{
    struct slice *f[ITEM_NFIELDS + 2];
    size_t k = 0;
    for (size_t i = 0; i < ITEM_NFIELDS; i++)
        if (i != BODY_FIELD || with_body)
            f[k++] = field_of(it, i);
    for (size_t i = 0; i < n && k < ARRAY_LEN(f); i++)
        f[k++] = more[i];
    if (!with_body)
        it->body.base = NULL;
    return keep(b, f, k);
}

static MDB_val item_key(struct slice dest, uint64_t seq, uint8_t *kb)
{
    memcpy(kb, dest.base, dest.len);
    kb[dest.len] = '\0';
    put_be64(kb + dest.len + 1, seq);
    return (MDB_val){dest.len + 9, kb};
}

/* Decode a dest record into *d (name and oldest_first_seen_ms untouched). 0 or CH_EPROTO. */
static int dest_decode(const MDB_val *v, struct queue_dest *d)
{
    struct rd r = {v->mv_data, v->mv_size, 1, false};
    if (v->mv_size < DEST_FIXED || r.p[0] != DEST_VERSION)
        return CH_EPROTO;
    d->next_seq = rd_int(&r, 8);
    d->depth = rd_int(&r, 8);
    d->bytes = rd_int(&r, 8);
    d->oldest_seq = rd_int(&r, 8);
    d->next_attempt_ms = rd_int(&r, 8);
    d->backoff_ms = rd_int(&r, 8);
    d->last_attempt_ms = rd_int(&r, 8);
    d->failures = (uint32_t)rd_int(&r, 4);
    d->last_status = (int)(int32_t)(uint32_t)rd_int(&r, 4);
    struct slice e = rd_str(&r, 0, QUEUE_ERROR_MAX, true);
    if (r.bad || r.off != r.len)
        return CH_EPROTO;
    memcpy(d->last_error, e.base, e.len);
    d->last_error[e.len] = '\0';
    return 0;
}

/* Read the record of destination name. 0, CH_ENOENT, CH_EPROTO, or an mdb error. */
static int dest_get(MDB_txn *txn, const struct store *s, struct slice name, struct queue_dest *d)
{
    MDB_val k = {name.len, (void *)name.base}, v;
    int rc = mdb_get(txn, store_dbi(s, STORE_DB_DEST), &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? CH_ENOENT : rc;
    memset(d, 0, sizeof(*d));
    memcpy(d->name, name.base, name.len);
    return dest_decode(&v, d);
}

/* A destination never seen: sequences start at 1 (0 is never a seq). */
static void dest_init(struct queue_dest *d, struct slice name)
{
    memset(d, 0, sizeof(*d));
    memcpy(d->name, name.base, name.len);
    d->next_seq = d->oldest_seq = 1;
}

static int dest_put(MDB_txn *txn, const struct store *s, struct slice name,
                    const struct queue_dest *d)
{
    uint8_t rec[DEST_FIXED + QUEUE_ERROR_MAX];
    size_t n = strnlen(d->last_error, QUEUE_ERROR_MAX);
    rec[0] = DEST_VERSION;
    put_le(rec + 1, d->next_seq, 8);
    put_le(rec + 9, d->depth, 8);
    put_le(rec + 17, d->bytes, 8);
    put_le(rec + 25, d->oldest_seq, 8);
    put_le(rec + 33, d->next_attempt_ms, 8);
    put_le(rec + 41, d->backoff_ms, 8);
    put_le(rec + 49, d->last_attempt_ms, 8);
    put_le(rec + 57, d->failures, 4);
    put_le(rec + 61, (uint32_t)d->last_status, 4);
    put_str(rec + 65, (struct slice){d->last_error, n});
    MDB_val k = {name.len, (void *)name.base}, v = {DEST_FIXED + n, rec};
    return mdb_put(txn, store_dbi(s, STORE_DB_DEST), &k, &v, 0);
}

/* Record a response or a failure in d: status, what (cut to QUEUE_ERROR_MAX), when. */
static void dest_note(struct queue_dest *d, int status, const char *what, uint64_t now_ms)
{
    size_t n = cut_utf8(what, QUEUE_ERROR_MAX);
    memcpy(d->last_error, what ? what : "", n);
    d->last_error[n] = '\0';
    d->last_status = status;
    d->last_attempt_ms = now_ms;
}

/* Decode a dead record; item slices, reason and response point into p. 0 or CH_EPROTO. */
static int dead_decode(const void *p, size_t n, struct queue_dead *out)
{
    struct rd r = {p, n, 1, false};
    if (n < DEAD_FIXED || r.p[0] != DEAD_VERSION)
        return CH_EPROTO;
    out->died_ms = rd_int(&r, 8);
    out->status = (int)(int32_t)(uint32_t)rd_int(&r, 4);
    out->reason = rd_str(&r, 0, QUEUE_ERROR_MAX, true);
    out->response = rd_str(&r, 0, QUEUE_RESP_MAX, false);
    if (r.bad)
        return CH_EPROTO;
    int rc = item_decode(r.p + r.off, n - r.off, &out->item);
    out->item.seq = 0;
    return rc;
}

static int dead_keep(struct queue_dead *d, struct buf *b, bool with_body)
{
    struct slice *more[2] = {&d->reason, &d->response};
    return item_keep(&d->item, b, with_body, more, 2);
}

/* ------------------------------------------------------------------------------------------ */
/* Totals and the dedupe index.                                                                */

static int meta_get(MDB_txn *txn, const struct store *s, const char *name, uint64_t *out)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn, store_dbi(s, STORE_DB_META), &k, &v);
    *out = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (v.mv_size != 8)
        return CH_EPROTO;
    *out = get_le(v.mv_data, 8);
    return 0;
}

static int meta_put(MDB_txn *txn, const struct store *s, const char *name, uint64_t val)
{
    uint8_t le[8];
    put_le(le, val, 8);
    MDB_val k = {strlen(name), (void *)name}, v = {8, le};
    return mdb_put(txn, store_dbi(s, STORE_DB_META), &k, &v, 0);
}

/* Add (add true) or remove one entry of size bytes to the totals. */
static int totals_change(MDB_txn *txn, const struct store *s, uint64_t size, bool add)
{
    uint64_t bytes, count;
    int rc = meta_get(txn, s, META_BYTES, &bytes);
    if (rc == 0)
        rc = meta_get(txn, s, META_COUNT, &count);
    if (rc != 0)
        return rc;
    bytes = add ? bytes + size : sub_sat(bytes, size);
    count = add ? count + 1 : sub_sat(count, 1);
    rc = meta_put(txn, s, META_BYTES, bytes);
    return rc != 0 ? rc : meta_put(txn, s, META_COUNT, count);
}

/* The `txns` key of it. BLAKE2b's portable code is the default before sodium_init picks a
 * faster one: the digest never depends on it. */
static void txn_digest(const struct queue_item *it, uint8_t out[QUEUE_DIGEST_LEN])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, QUEUE_DIGEST_LEN);
    crypto_generichash_update(&st, (const uint8_t *)it->origin.base, it->origin.len);
    crypto_generichash_update(&st, (const uint8_t *)"", 1);
    crypto_generichash_update(&st, (const uint8_t *)it->destination.base, it->destination.len);
    crypto_generichash_update(&st, (const uint8_t *)"", 1);
    crypto_generichash_update(&st, (const uint8_t *)it->txn_id.base, it->txn_id.len);
    crypto_generichash_final(&st, out, QUEUE_DIGEST_LEN);
}

/* The seq of it's transaction when it is queued: 0, CH_ENOENT, or an mdb error. */
static int find_queued(MDB_txn *txn, const struct store *s, const struct queue_item *it,
                       uint8_t *digest, uint64_t *seq)
{
    MDB_val k = {QUEUE_DIGEST_LEN, digest}, v;
    int rc = mdb_get(txn, store_dbi(s, STORE_DB_TXNS), &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? CH_ENOENT : rc;
    if (v.mv_size != 8)
        return CH_ENOENT; /* not ours to trust: the put overwrites it */
    uint8_t kb[ITEM_KEY_MAX];
    uint64_t at = get_le(v.mv_data, 8);
    k = item_key(it->destination, at, kb);
    rc = mdb_get(txn, store_dbi(s, STORE_DB_QUEUE), &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? CH_ENOENT : rc;
    struct queue_item q;
    if (item_decode(v.mv_data, v.mv_size, &q) != 0 || !slice_eq(q.origin, it->origin) ||
        !slice_eq(q.destination, it->destination) || !slice_eq(q.txn_id, it->txn_id))
        return CH_ENOENT;
    *seq = at;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Writes.                                                                                     */

/* Dedupe, caps, then the entry, its destination, its index entry and the totals. */
static int enqueue(MDB_txn *txn, const struct store *s, const struct queue_item *it,
                   const struct queue_caps *caps, uint64_t *seq_out, bool *duplicate)
{
    uint8_t digest[QUEUE_DIGEST_LEN];
    uint64_t seq;
    txn_digest(it, digest);
    int rc = find_queued(txn, s, it, digest, &seq);
    if (rc == 0) {
        *duplicate = true;
        *seq_out = seq;
        return 0;
    }
    if (rc != CH_ENOENT)
        return rc;

    struct queue_dest d;
    rc = dest_get(txn, s, it->destination, &d);
    if (rc == CH_ENOENT)
        dest_init(&d, it->destination);
    else if (rc != 0)
        return rc;
    uint64_t size = item_size(it), total;
    rc = meta_get(txn, s, META_BYTES, &total);
    if (rc != 0)
        return rc;
    if (caps && ((caps->max_bytes && total + size > caps->max_bytes) ||
                 (caps->dest_max_bytes && d.bytes + size > caps->dest_max_bytes)))
        return CH_EAGAIN;

    seq = d.next_seq;
    uint8_t kb[ITEM_KEY_MAX];
    MDB_val k = item_key(it->destination, seq, kb), v = {size, NULL};
    /* MDB_RESERVE: the record is encoded in place, before any other write moves pages. */
    rc = mdb_put(txn, store_dbi(s, STORE_DB_QUEUE), &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
    if (rc != 0)
        return rc;
    item_encode(v.mv_data, it, 0);

    d.next_seq++;
    if (d.depth++ == 0)
        d.oldest_seq = seq;
    d.bytes += size;
    rc = dest_put(txn, s, it->destination, &d);
    if (rc != 0)
        return rc;
    uint8_t le[8];
    put_le(le, seq, 8);
    k = (MDB_val){QUEUE_DIGEST_LEN, digest};
    v = (MDB_val){8, le};
    rc = mdb_put(txn, store_dbi(s, STORE_DB_TXNS), &k, &v, 0);
    if (rc == 0)
        rc = totals_change(txn, s, size, true);
    if (rc == 0)
        *seq_out = seq;
    return rc;
}

int queue_put_txn(MDB_txn *txn, const struct store *s, const struct queue_item *it,
                  const struct queue_caps *caps, uint64_t *seq_out, bool *duplicate)
{
    *duplicate = false;
    *seq_out = 0;
    int rc = item_check(it);
    return rc != 0 ? rc : enqueue(txn, s, it, caps, seq_out, duplicate);
}

/* The first seq of dest at or after from, skipping keys that are not a seq. */
static int first_from(MDB_cursor *c, struct slice dest, uint64_t from, uint64_t *seq, MDB_val *v)
{
    uint8_t kb[ITEM_KEY_MAX];
    MDB_val k = item_key(dest, from, kb);
    for (MDB_cursor_op op = MDB_SET_RANGE;; op = MDB_NEXT) {
        int rc = mdb_cursor_get(c, &k, v, op);
        if (rc != 0)
            return rc == MDB_NOTFOUND ? CH_ENOENT : rc;
        if (k.mv_size < dest.len + 1 || memcmp(k.mv_data, kb, dest.len + 1) != 0)
            return CH_ENOENT; /* past dest's entries */
        if (k.mv_size == dest.len + 9) {
            *seq = get_be64((const uint8_t *)k.mv_data + dest.len + 1);
            return 0;
        }
    }
}

/*
 * Delete entry seq (size bytes) of dest and, when digest is given and still
 * points at it, its index entry; update *d (not written) and the totals.
 */
static int remove_entry(MDB_txn *txn, const struct store *s, struct queue_dest *d,
                        struct slice dest, uint64_t seq, uint64_t size, uint8_t *digest)
{
    uint8_t kb[ITEM_KEY_MAX];
    MDB_val k = item_key(dest, seq, kb), v;
    int rc = mdb_del(txn, store_dbi(s, STORE_DB_QUEUE), &k, NULL);
    if (rc != 0)
        return rc;
    if (digest) {
        k = (MDB_val){QUEUE_DIGEST_LEN, digest};
        rc = mdb_get(txn, store_dbi(s, STORE_DB_TXNS), &k, &v);
        if (rc == 0 && v.mv_size == 8 && get_le(v.mv_data, 8) == seq)
            rc = mdb_del(txn, store_dbi(s, STORE_DB_TXNS), &k, NULL);
        else if (rc == 0 || rc == MDB_NOTFOUND)
            rc = 0; /* another entry's, or none: nothing of ours to remove */
        if (rc != 0)
            return rc;
    }
    d->depth = sub_sat(d->depth, 1);
    d->bytes = sub_sat(d->bytes, size);
    if (d->depth == 0) {
        d->oldest_seq = d->next_seq;
    } else if (seq == d->oldest_seq) {
        MDB_cursor *c;
        rc = mdb_cursor_open(txn, store_dbi(s, STORE_DB_QUEUE), &c);
        if (rc != 0)
            return rc;
        rc = first_from(c, dest, seq + 1, &d->oldest_seq, &v);
        mdb_cursor_close(c);
        if (rc == CH_ENOENT)
            d->oldest_seq = d->next_seq; /* depth was wrong: nothing left after all */
        else if (rc != 0)
            return rc;
    }
    return totals_change(txn, s, size, false);
}

/* The destination record of an entry that exists: missing is a broken store. */
static int dest_of_entry(MDB_txn *txn, const struct store *s, struct slice name,
                         struct queue_dest *d)
{
    int rc = dest_get(txn, s, name, d);
    return rc == CH_ENOENT ? CH_EPROTO : rc;
}

int queue_done_txn(MDB_txn *txn, const struct store *s, const char *dest, uint64_t seq)
{
    struct slice name;
    if (check_name(dest, &name) != 0)
        return CH_EINVAL;
    uint8_t kb[ITEM_KEY_MAX];
    MDB_val k = item_key(name, seq, kb), v;
    int rc = mdb_get(txn, store_dbi(s, STORE_DB_QUEUE), &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? CH_ENOENT : rc;
    /* Everything needed from the record is read before the first write. An entry that cannot
     * be decoded has no index entry to find: a stale one is harmless (see find_queued). */
    uint64_t size = v.mv_size;
    uint8_t digest[QUEUE_DIGEST_LEN];
    struct queue_item it;
    bool decoded = item_decode(v.mv_data, v.mv_size, &it) == 0 && slice_eq(it.destination, name);
    if (decoded)
        txn_digest(&it, digest);
    struct queue_dest d;
    rc = dest_of_entry(txn, s, name, &d);
    if (rc == 0)
        rc = remove_entry(txn, s, &d, name, seq, size, decoded ? digest : NULL);
    if (rc != 0)
        return rc;
    d.failures = 0;
    d.backoff_ms = 0;
    d.next_attempt_ms = 0;
    return dest_put(txn, s, name, &d);
}

/*
 * Read entry seq of dest into a copy of its own (*rec, to free: a later write
 * in the transaction may move the pages the map pointer shows) and decode it
 * into *it, pointing into the copy.
 */
static int load_entry(MDB_txn *txn, const struct store *s, struct slice dest, uint64_t seq,
                      uint8_t **rec, size_t *len, struct queue_item *it)
{
    uint8_t kb[ITEM_KEY_MAX];
    MDB_val k = item_key(dest, seq, kb), v;
    *rec = NULL;
    int rc = mdb_get(txn, store_dbi(s, STORE_DB_QUEUE), &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? CH_ENOENT : rc;
    if (item_decode(v.mv_data, v.mv_size, it) != 0 || !slice_eq(it->destination, dest))
        return CH_EPROTO;
    if ((*rec = malloc(v.mv_size)) == NULL)
        return CH_ENOMEM;
    memcpy(*rec, v.mv_data, v.mv_size);
    *len = v.mv_size;
    return item_decode(*rec, *len, it);
}

int queue_retry_txn(MDB_txn *txn, const struct store *s, const char *dest, uint64_t seq, int status,
                    const char *error, uint64_t now_ms, uint64_t next_attempt_ms,
                    uint64_t backoff_ms)
{
    struct slice name;
    if (check_name(dest, &name) != 0)
        return CH_EINVAL;
    uint8_t *rec;
    size_t len;
    struct queue_item it;
    struct queue_dest d;
    int rc = load_entry(txn, s, name, seq, &rec, &len, &it);
    if (rc == 0)
        rc = dest_of_entry(txn, s, name, &d);
    if (rc == 0) {
        if (it.attempts < UINT32_MAX)
            put_le(rec + 9, it.attempts + 1, 4);
        uint8_t kb[ITEM_KEY_MAX];
        MDB_val k = item_key(name, seq, kb), v = {len, rec};
        rc = mdb_put(txn, store_dbi(s, STORE_DB_QUEUE), &k, &v, 0);
    }
    free(rec);
    if (rc != 0)
        return rc;
    if (d.failures < UINT32_MAX)
        d.failures++;
    dest_note(&d, status, error, now_ms);
    d.next_attempt_ms = next_attempt_ms;
    d.backoff_ms = backoff_ms;
    return dest_put(txn, s, name, &d);
}

/* Write the dead record id for the entry record rec (len bytes). */
static int put_dead(MDB_txn *txn, const struct store *s, uint64_t id, const uint8_t *rec,
                    size_t len, uint64_t now_ms, int status, const char *reason, const void *resp,
                    size_t resp_len)
{
    size_t nr = cut_utf8(reason, QUEUE_ERROR_MAX);
    size_t nb = resp_len < QUEUE_RESP_MAX ? resp_len : QUEUE_RESP_MAX;
    uint8_t kb[8];
    put_be64(kb, id);
    MDB_val k = {8, kb}, v = {DEAD_FIXED + 4 + nr + 4 + nb + len, NULL};
    int rc = mdb_put(txn, store_dbi(s, STORE_DB_DEAD), &k, &v, MDB_NOOVERWRITE | MDB_RESERVE);
    if (rc != 0)
        return rc;
    uint8_t *p = v.mv_data;
    p[0] = DEAD_VERSION;
    put_le(p + 1, now_ms, 8);
    put_le(p + 9, (uint32_t)status, 4);
    p = put_str(p + DEAD_FIXED, (struct slice){reason ? reason : "", nr});
    p = put_str(p, (struct slice){resp, nb});
    memcpy(p, rec, len);
    return 0;
}

int queue_dead_txn(MDB_txn *txn, const struct store *s, const char *dest, uint64_t seq,
                   uint64_t now_ms, int status, const char *reason, const void *resp,
                   size_t resp_len, uint64_t *dead_id)
{
    struct slice name;
    if (check_name(dest, &name) != 0 || (resp == NULL && resp_len > 0))
        return CH_EINVAL;
    uint8_t *rec, digest[QUEUE_DIGEST_LEN];
    size_t len;
    struct queue_item it;
    struct queue_dest d;
    uint64_t id = 0;
    int rc = load_entry(txn, s, name, seq, &rec, &len, &it);
    if (rc == 0)
        rc = dest_of_entry(txn, s, name, &d);
    if (rc == 0)
        rc = meta_get(txn, s, META_DEAD_SEQ, &id);
    if (rc == 0) {
        txn_digest(&it, digest);
        id++;
        rc = put_dead(txn, s, id, rec, len, now_ms, status, reason, resp, resp_len);
    }
    if (rc == 0)
        rc = meta_put(txn, s, META_DEAD_SEQ, id);
    if (rc == 0)
        rc = remove_entry(txn, s, &d, name, seq, len, digest);
    free(rec);
    if (rc != 0)
        return rc;
    if (status != 0) {
        /* A refusal is an answer: the destination is up. */
        d.failures = 0;
        d.backoff_ms = 0;
        d.next_attempt_ms = 0;
        dest_note(&d, status, reason, now_ms);
    }
    rc = dest_put(txn, s, name, &d);
    if (rc == 0 && dead_id)
        *dead_id = id;
    return rc;
}

int queue_requeue_dead_txn(MDB_txn *txn, const struct store *s, uint64_t id,
                           const struct queue_caps *caps, uint64_t now_ms, uint64_t *seq_out)
{
    uint8_t kb[8];
    put_be64(kb, id);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(txn, store_dbi(s, STORE_DB_DEAD), &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? CH_ENOENT : rc;
    /* A copy: enqueue writes, which may move the pages v points into. */
    uint8_t *rec = malloc(v.mv_size);
    if (rec == NULL)
        return CH_ENOMEM;
    memcpy(rec, v.mv_data, v.mv_size);
    struct queue_dead dead;
    uint64_t seq = 0;
    bool duplicate = false;
    rc = dead_decode(rec, v.mv_size, &dead);
    if (rc == 0) {
        dead.item.first_seen_ms = now_ms;
        rc = enqueue(txn, s, &dead.item, caps, &seq, &duplicate);
    }
    free(rec);
    if (rc == 0)
        rc = mdb_del(txn, store_dbi(s, STORE_DB_DEAD), &k, NULL);
    if (rc == 0 && seq_out)
        *seq_out = seq;
    return rc;
}

int queue_delete_dead_txn(MDB_txn *txn, const struct store *s, uint64_t id)
{
    uint8_t kb[8];
    put_be64(kb, id);
    MDB_val k = {8, kb};
    int rc = mdb_del(txn, store_dbi(s, STORE_DB_DEAD), &k, NULL);
    return rc == MDB_NOTFOUND ? CH_ENOENT : rc;
}

int queue_reset_backoff_txn(MDB_txn *txn, const struct store *s, const char *dest)
{
    struct slice name;
    struct queue_dest d;
    if (check_name(dest, &name) != 0)
        return CH_EINVAL;
    int rc = dest_get(txn, s, name, &d);
    if (rc != 0)
        return rc;
    d.failures = 0;
    d.backoff_ms = 0;
    d.next_attempt_ms = 0;
    return dest_put(txn, s, name, &d);
}

/* ------------------------------------------------------------------------------------------ */
/* Reads.                                                                                      */

int queue_head(struct store *s, const char *dest, struct queue_item *out, struct buf *storage)
{
    struct slice name;
    if (check_name(dest, &name) != 0)
        return CH_EINVAL;
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val v;
    uint64_t seq;
    int rc = store_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, store_dbi(s, STORE_DB_QUEUE), &c);
    if (rc == 0) {
        rc = first_from(c, name, 0, &seq, &v);
        if (rc == 0 &&
            (item_decode(v.mv_data, v.mv_size, out) != 0 || !slice_eq(out->destination, name)))
            rc = CH_EPROTO;
        if (rc == 0) {
            out->seq = seq;
            rc = item_keep(out, storage, true, NULL, 0);
        }
        mdb_cursor_close(c);
    }
    mdb_txn_abort(txn);
    return store_err(rc);
}

static int walk_entries(MDB_cursor *c, struct slice name, struct buf *scratch, queue_entry_fn fn,
                        void *ud)
{
    for (uint64_t from = 0;;) {
        uint64_t seq;
        MDB_val v;
        int rc = first_from(c, name, from, &seq, &v);
        if (rc != 0)
            return rc == CH_ENOENT ? 0 : store_err(rc);
        struct queue_item it;
        int status = item_decode(v.mv_data, v.mv_size, &it) == 0 && slice_eq(it.destination, name)
                         ? 0
                         : CH_EPROTO;
        if (status == 0) {
            buf_reset(scratch);
            if (item_keep(&it, scratch, false, NULL, 0) != 0)
                return CH_ENOMEM;
        } else {
            memset(&it, 0, sizeof(it));
        }
        it.seq = seq;
        rc = fn(ud, &it, status);
        if (rc != 0 || seq == UINT64_MAX)
            return rc;
        from = seq + 1;
    }
}

int queue_each_entry(struct store *s, const char *dest, queue_entry_fn fn, void *ud)
{
    struct slice name;
    if (check_name(dest, &name) != 0)
        return CH_EINVAL;
    MDB_txn *txn;
    MDB_cursor *c;
    struct buf scratch = BUF_INIT;
    int rc = store_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, store_dbi(s, STORE_DB_QUEUE), &c);
    if (rc == 0) {
        rc = walk_entries(c, name, &scratch, fn, ud);
        mdb_cursor_close(c);
    } else {
        rc = store_err(rc);
    }
    mdb_txn_abort(txn);
    buf_free(&scratch);
    return rc;
}

/* Fill d->oldest_first_seen_ms from the head's record (0 when empty or unreadable). */
static void dest_oldest(MDB_txn *txn, const struct store *s, struct queue_dest *d)
{
    d->oldest_first_seen_ms = 0;
    if (d->depth == 0)
        return;
    uint8_t kb[ITEM_KEY_MAX];
    MDB_val k = item_key((struct slice){d->name, strlen(d->name)}, d->oldest_seq, kb), v;
    if (mdb_get(txn, store_dbi(s, STORE_DB_QUEUE), &k, &v) == 0 && v.mv_size >= ITEM_FIXED &&
        ((const uint8_t *)v.mv_data)[0] == ITEM_VERSION)
        d->oldest_first_seen_ms = get_le((const uint8_t *)v.mv_data + 1, 8);
}

int queue_get_dest(struct store *s, const char *dest, struct queue_dest *out)
{
    struct slice name;
    if (check_name(dest, &name) != 0)
        return CH_EINVAL;
    MDB_txn *txn;
    int rc = store_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    rc = dest_get(txn, s, name, out);
    if (rc == 0)
        dest_oldest(txn, s, out);
    mdb_txn_abort(txn);
    return store_err(rc);
}

/* Walk `dest`; with due, only what is due at now_ms (and what is malformed). */
static int walk_dests(MDB_cursor *c, MDB_txn *txn, const struct store *s, bool due, uint64_t now_ms,
                      queue_dest_fn fn, void *ud)
{
    MDB_val k, v;
    for (MDB_cursor_op op = MDB_FIRST;; op = MDB_NEXT) {
        int rc = mdb_cursor_get(c, &k, &v, op);
        if (rc != 0)
            return rc == MDB_NOTFOUND ? 0 : store_err(rc);
        struct queue_dest d;
        memset(&d, 0, sizeof(d));
        size_t n = k.mv_size < QUEUE_NAME_MAX ? k.mv_size : QUEUE_NAME_MAX;
        memcpy(d.name, k.mv_data, n);
        int status = k.mv_size == 0 || k.mv_size > QUEUE_NAME_MAX ||
                             memchr(k.mv_data, '\0', k.mv_size) != NULL
                         ? CH_EPROTO
                         : dest_decode(&v, &d);
        if (status == 0) {
            if (due && (d.depth == 0 || d.next_attempt_ms > now_ms))
                continue;
            dest_oldest(txn, s, &d);
        }
        rc = fn(ud, &d, status);
        if (rc != 0)
            return rc;
    }
}

static int each_dest(struct store *s, bool due, uint64_t now_ms, queue_dest_fn fn, void *ud)
{
    MDB_txn *txn;
    MDB_cursor *c;
    int rc = store_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, store_dbi(s, STORE_DB_DEST), &c);
    if (rc == 0) {
        rc = walk_dests(c, txn, s, due, now_ms, fn, ud);
        mdb_cursor_close(c);
    } else {
        rc = store_err(rc);
    }
    mdb_txn_abort(txn);
    return rc;
}

int queue_each_dest(struct store *s, queue_dest_fn fn, void *ud)
{
    return each_dest(s, false, 0, fn, ud);
}

int queue_due(struct store *s, uint64_t now_ms, queue_dest_fn fn, void *ud)
{
    return each_dest(s, true, now_ms, fn, ud);
}

static int walk_dead(MDB_cursor *c, struct buf *scratch, queue_dead_fn fn, void *ud)
{
    MDB_val k, v;
    for (MDB_cursor_op op = MDB_FIRST;; op = MDB_NEXT) {
        int rc = mdb_cursor_get(c, &k, &v, op);
        if (rc != 0)
            return rc == MDB_NOTFOUND ? 0 : store_err(rc);
        struct queue_dead d;
        memset(&d, 0, sizeof(d));
        int status = CH_EPROTO;
        if (k.mv_size == 8) {
            d.id = get_be64(k.mv_data);
            status = dead_decode(v.mv_data, v.mv_size, &d);
        }
        if (status == 0) {
            buf_reset(scratch);
            if (dead_keep(&d, scratch, false) != 0)
                return CH_ENOMEM;
        } else {
            uint64_t id = d.id;
            memset(&d, 0, sizeof(d));
            d.id = id;
        }
        rc = fn(ud, &d, status);
        if (rc != 0)
            return rc;
    }
}

int queue_each_dead(struct store *s, queue_dead_fn fn, void *ud)
{
    MDB_txn *txn;
    MDB_cursor *c;
    struct buf scratch = BUF_INIT;
    int rc = store_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_open(txn, store_dbi(s, STORE_DB_DEAD), &c);
    if (rc == 0) {
        rc = walk_dead(c, &scratch, fn, ud);
        mdb_cursor_close(c);
    } else {
        rc = store_err(rc);
    }
    mdb_txn_abort(txn);
    buf_free(&scratch);
    return rc;
}

int queue_get_dead(struct store *s, uint64_t id, struct queue_dead *out, struct buf *storage)
{
    MDB_txn *txn;
    uint8_t kb[8];
    put_be64(kb, id);
    MDB_val k = {8, kb}, v;
    int rc = store_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    memset(out, 0, sizeof(*out));
    rc = mdb_get(txn, store_dbi(s, STORE_DB_DEAD), &k, &v);
    if (rc == 0)
        rc = dead_decode(v.mv_data, v.mv_size, out);
    if (rc == 0)
        rc = dead_keep(out, storage, true);
    out->id = id;
    mdb_txn_abort(txn);
    return store_err(rc);
}

int queue_totals(struct store *s, struct queue_totals *out)
{
    MDB_txn *txn;
    MDB_stat st;
    int rc = store_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    rc = meta_get(txn, s, META_BYTES, &out->bytes);
    if (rc == 0)
        rc = meta_get(txn, s, META_COUNT, &out->count);
    if (rc == 0)
        rc = mdb_stat(txn, store_dbi(s, STORE_DB_DEAD), &st);
    out->dead = rc == 0 ? st.ms_entries : 0;
    mdb_txn_abort(txn);
    return store_err(rc);
}
