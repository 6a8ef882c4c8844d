/* test_queue.c -- unit tests for queue.c: FIFO order per destination, dedupe, caps, the
 * done/retry/dead/requeue/delete round trips, totals against a recount, the exact record
 * layouts, malformed records, a restart, and a full map. */
/* SPDX-License-Identifier: ISC */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <sodium.h>

#include "chappe/queue.h"
#include "chappe/store.h"
#include "chappe/util.h"

struct fix {
    char dir[64];
    struct store *s;
};

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int open_at(struct fix *f, uint64_t map_size)
{
    struct buf err = BUF_INIT;
    int rc = store_open(f->dir, map_size, 0, &f->s, &err);
    if (rc != 0)
        fprintf(stderr, "store_open: %.*s\n", (int)err.len, buf_data(&err));
    buf_free(&err);
    return rc;
}

static int setup_map(void **state, uint64_t map_size)
{
    struct fix *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/chappe-queue-test-XXXXXX");
    if (mkdtemp(f->dir) == NULL || open_at(f, map_size) != 0) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_map(state, 16u << 20);
}

static int setup_small(void **state)
{
    return setup_map(state, 1u << 20);
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
/* Transactions to queue.                                                                      */

/* A transaction and the bytes its slices point into (never copied: the slices point inside). */
struct tx {
    struct queue_item it;
    char path[200];
    char auth[400];
};

static struct slice str(const char *s)
{
    return (struct slice){s, strlen(s)};
}

static void tx_init(struct tx *t, const char *origin, const char *dest, const char *txn_id,
                    const char *body, uint64_t first_seen)
{
    snprintf(t->path, sizeof(t->path), "/_matrix/federation/v1/send/%s", txn_id);
    snprintf(
        t->auth, sizeof(t->auth),
        "X-Matrix origin=\"%s\",destination=\"%s\",key=\"ed25519:a_RXGa\",sig=\"c2lnbmF0dXJl\"",
        origin, dest);
    memset(&t->it, 0, sizeof(t->it));
    t->it.origin = str(origin);
    t->it.destination = str(dest);
    t->it.txn_id = str(txn_id);
    t->it.method = SLICE_LIT("PUT");
    t->it.path = str(t->path);
    t->it.authorization = str(t->auth);
    t->it.content_type = SLICE_LIT("application/json");
    t->it.body = str(body);
    t->it.first_seen_ms = first_seen;
}

/* The stored size of a record: 45 bytes and the fields. */
static uint64_t rec_size(const struct queue_item *it)
{
    return 45 + it->origin.len + it->destination.len + it->txn_id.len + it->method.len +
           it->path.len + it->authorization.len + it->content_type.len + it->body.len;
}

static void assert_slice(struct slice got, struct slice want)
{
    assert_int_equal(got.len, want.len);
    assert_non_null(got.base);
    if (want.len)
        assert_memory_equal(got.base, want.base, want.len);
    assert_int_equal(got.base[got.len], '\0'); /* output strings are terminated */
}

/* Every field but attempts and seq (checked by the callers). */
static void assert_item(const struct queue_item *got, const struct queue_item *want)
{
    assert_slice(got->origin, want->origin);
    assert_slice(got->destination, want->destination);
    assert_slice(got->txn_id, want->txn_id);
    assert_slice(got->method, want->method);
    assert_slice(got->path, want->path);
    assert_slice(got->authorization, want->authorization);
    assert_slice(got->content_type, want->content_type);
    assert_slice(got->body, want->body);
    assert_int_equal(got->first_seen_ms, want->first_seen_ms);
}

/* ------------------------------------------------------------------------------------------ */
/* Writes through store_write_now.                                                             */

enum op_kind { OP_PUT, OP_DONE, OP_RETRY, OP_DEAD, OP_REQUEUE, OP_DELETE, OP_RESET };

struct op {
    enum op_kind kind;
    const struct queue_item *it;
    const struct queue_caps *caps;
    const char *dest;
    uint64_t seq; /* in: the entry; out: put's and requeue's seq */
    bool dup;
    int status;
    const char *text; /* retry's error, dead's reason */
    uint64_t now_ms, next_ms, backoff_ms;
    const void *resp;
    size_t resp_len;
    uint64_t id; /* in: requeue's, delete's; out: dead's */
};

static int op_fn(MDB_txn *txn, struct store *s, void *ud)
{
    struct op *o = ud;
    switch (o->kind) {
    case OP_PUT:
        return queue_put_txn(txn, s, o->it, o->caps, &o->seq, &o->dup);
    case OP_DONE:
        return queue_done_txn(txn, s, o->dest, o->seq);
    case OP_RETRY:
        return queue_retry_txn(txn, s, o->dest, o->seq, o->status, o->text, o->now_ms, o->next_ms,
                               o->backoff_ms);
    case OP_DEAD:
        return queue_dead_txn(txn, s, o->dest, o->seq, o->now_ms, o->status, o->text, o->resp,
                              o->resp_len, &o->id);
    case OP_REQUEUE:
        return queue_requeue_dead_txn(txn, s, o->id, o->caps, o->now_ms, &o->seq);
    case OP_DELETE:
        return queue_delete_dead_txn(txn, s, o->id);
    case OP_RESET:
        return queue_reset_backoff_txn(txn, s, o->dest);
    }
    return CH_EINVAL;
}

static int put(struct store *s, const struct queue_item *it, const struct queue_caps *caps,
               uint64_t *seq, bool *dup)
{
    struct op o = {.kind = OP_PUT, .it = it, .caps = caps, .seq = 77, .dup = true};
    int rc = store_write_now(s, op_fn, &o);
    if (seq)
        *seq = o.seq;
    if (dup)
        *dup = o.dup;
    return rc;
}

static int done(struct store *s, const char *dest, uint64_t seq)
{
    struct op o = {.kind = OP_DONE, .dest = dest, .seq = seq};
    return store_write_now(s, op_fn, &o);
}

static int retry(struct store *s, const char *dest, uint64_t seq, int status, const char *error,
                 uint64_t now, uint64_t next, uint64_t backoff)
{
    struct op o = {.kind = OP_RETRY,
                   .dest = dest,
                   .seq = seq,
                   .status = status,
                   .text = error,
                   .now_ms = now,
                   .next_ms = next,
                   .backoff_ms = backoff};
    return store_write_now(s, op_fn, &o);
}

static int dead(struct store *s, const char *dest, uint64_t seq, uint64_t now, int status,
                const char *reason, const void *resp, size_t resp_len, uint64_t *id)
{
    struct op o = {.kind = OP_DEAD,
                   .dest = dest,
                   .seq = seq,
                   .now_ms = now,
                   .status = status,
                   .text = reason,
                   .resp = resp,
                   .resp_len = resp_len,
                   .id = 99};
    int rc = store_write_now(s, op_fn, &o);
    if (id)
        *id = o.id;
    return rc;
}

static int requeue(struct store *s, uint64_t id, const struct queue_caps *caps, uint64_t now,
                   uint64_t *seq)
{
    struct op o = {.kind = OP_REQUEUE, .id = id, .caps = caps, .now_ms = now, .seq = 77};
    int rc = store_write_now(s, op_fn, &o);
    if (seq)
        *seq = o.seq;
    return rc;
}

static int delete_dead(struct store *s, uint64_t id)
{
    struct op o = {.kind = OP_DELETE, .id = id};
    return store_write_now(s, op_fn, &o);
}

static int reset(struct store *s, const char *dest)
{
    struct op o = {.kind = OP_RESET, .dest = dest};
    return store_write_now(s, op_fn, &o);
}

/* A raw record straight into a database, bypassing queue's checks. */
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

/* Read a raw record into out (cap bytes at most; *len its real size). 0 or CH_ENOENT. */
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

/* The `queue` key of dest and seq. */
static size_t qkey(const char *dest, uint64_t seq, uint8_t *out)
{
    size_t n = strlen(dest);
    memcpy(out, dest, n + 1);
    for (int i = 0; i < 8; i++)
        out[n + 1 + i] = (uint8_t)(seq >> (56 - 8 * i));
    return n + 9;
}

static uint64_t entries(struct store *s, enum store_db db)
{
    MDB_txn *txn;
    MDB_stat st;
    assert_int_equal(store_read_begin(s, &txn), 0);
    assert_int_equal(mdb_stat(txn, store_dbi(s, db), &st), 0);
    mdb_txn_abort(txn);
    return st.ms_entries;
}

/* ------------------------------------------------------------------------------------------ */
/* Views.                                                                                      */

struct dests {
    struct queue_dest d[8];
    int status[8];
    size_t n;
};

static int dest_cb(void *ud, const struct queue_dest *d, int status)
{
    struct dests *a = ud;
    if (a->n < ARRAY_LEN(a->d)) {
        a->d[a->n] = *d;
        a->status[a->n] = status;
    }
    a->n++;
    return 0;
}

/* The state of dest, which must exist. */
static struct queue_dest get_dest(struct store *s, const char *dest)
{
    struct queue_dest d;
    memset(&d, 0xa5, sizeof(d));
    assert_int_equal(queue_get_dest(s, dest, &d), 0);
    assert_string_equal(d.name, dest);
    return d;
}

static void assert_totals(struct store *s, uint64_t bytes, uint64_t count, uint64_t dead_n)
{
    struct queue_totals t;
    memset(&t, 0xa5, sizeof(t));
    assert_int_equal(queue_totals(s, &t), 0);
    assert_int_equal(t.bytes, bytes);
    assert_int_equal(t.count, count);
    assert_int_equal(t.dead, dead_n);
}

/*
 * Recount `queue` and check it against the totals, every destination's depth,
 * bytes and oldest_seq, and (when index is true) the number of index entries.
 */
static void check_consistent(struct store *s, bool index)
{
    struct {
        char name[QUEUE_NAME_MAX + 1];
        uint64_t depth, bytes, first;
    } per[8];
    size_t nper = 0;
    uint64_t count = 0, bytes = 0;
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    assert_int_equal(store_read_begin(s, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, store_dbi(s, STORE_DB_QUEUE), &c), 0);
    for (MDB_cursor_op op = MDB_FIRST; mdb_cursor_get(c, &k, &v, op) == 0; op = MDB_NEXT) {
        const char *name = k.mv_data;
        size_t n = strnlen(name, k.mv_size);
        assert_int_equal(k.mv_size, n + 9);
        const uint8_t *p = (const uint8_t *)k.mv_data + n + 1;
        uint64_t seq = 0;
        for (int i = 0; i < 8; i++)
            seq = seq << 8 | p[i];
        size_t i = 0;
        while (i < nper && !(strlen(per[i].name) == n && memcmp(per[i].name, name, n) == 0))
            i++;
        if (i == nper) {
            assert_true(nper < ARRAY_LEN(per));
            memcpy(per[i].name, name, n);
            per[i].name[n] = '\0';
            per[i].depth = per[i].bytes = 0;
            per[i].first = seq;
            nper++;
        }
        per[i].depth++;
        per[i].bytes += v.mv_size;
        count++;
        bytes += v.mv_size;
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);

    struct queue_totals t;
    assert_int_equal(queue_totals(s, &t), 0);
    assert_int_equal(t.count, count);
    assert_int_equal(t.bytes, bytes);
    if (index)
        assert_int_equal(entries(s, STORE_DB_TXNS), count);

    struct dests all = {0};
    assert_int_equal(queue_each_dest(s, dest_cb, &all), 0);
    assert_true(all.n <= ARRAY_LEN(all.d));
    size_t seen = 0;
    for (size_t j = 0; j < all.n; j++) {
        const struct queue_dest *d = &all.d[j];
        assert_int_equal(all.status[j], 0);
        size_t i = 0;
        while (i < nper && strcmp(per[i].name, d->name) != 0)
            i++;
        if (i == nper) {
            assert_int_equal(d->depth, 0);
            assert_int_equal(d->bytes, 0);
            assert_int_equal(d->oldest_seq, d->next_seq);
            assert_int_equal(d->oldest_first_seen_ms, 0);
            continue;
        }
        seen++;
        assert_int_equal(d->depth, per[i].depth);
        assert_int_equal(d->bytes, per[i].bytes);
        assert_int_equal(d->oldest_seq, per[i].first);
        assert_true(d->next_seq > d->oldest_seq);
    }
    assert_int_equal(seen, nper); /* every queued entry has its destination record */
}

/* ------------------------------------------------------------------------------------------ */
/* FIFO.                                                                                       */

static void test_fifo_per_destination(void **state)
{
    struct fix *f = *state;
    struct tx t[6];
    /* Interleaved: a.org gets 3, b.org 2, a.org.x 1 (it sorts right after a.org's keys). */
    const char *dest[6] = {"a.org", "b.org", "a.org", "a.org.x", "b.org", "a.org"};
    const uint64_t want_seq[6] = {1, 1, 2, 1, 2, 3};
    for (size_t i = 0; i < 6; i++) {
        char id[16], body[64];
        snprintf(id, sizeof(id), "txn%zu", i);
        snprintf(body, sizeof(body), "{\"pdus\":[],\"n\":%zu}", i);
        /* tx_init keeps pointers: id and body must outlive t, so use string literals' copies. */
        tx_init(&t[i], "hs.example", dest[i], strdup(id), strdup(body), 1000 + i);
        uint64_t seq;
        bool dup;
        assert_int_equal(put(f->s, &t[i].it, NULL, &seq, &dup), 0);
        assert_false(dup);
        assert_int_equal(seq, want_seq[i]);
        check_consistent(f->s, true);
    }
    assert_totals(f->s,
                  rec_size(&t[0].it) + rec_size(&t[1].it) + rec_size(&t[2].it) +
                      rec_size(&t[3].it) + rec_size(&t[4].it) + rec_size(&t[5].it),
                  6, 0);

    /* Each destination delivers in its own order, independently of the others. */
    const size_t order_a[3] = {0, 2, 5}, order_b[2] = {1, 4};
    struct buf st = BUF_INIT;
    struct queue_item head;
    for (size_t i = 0; i < 3; i++) {
        buf_reset(&st);
        assert_int_equal(queue_head(f->s, "a.org", &head, &st), 0);
        assert_item(&head, &t[order_a[i]].it);
        assert_int_equal(head.seq, i + 1);
        assert_int_equal(head.attempts, 0);
        struct queue_dest d = get_dest(f->s, "a.org");
        assert_int_equal(d.depth, 3 - i);
        assert_int_equal(d.oldest_seq, i + 1);
        assert_int_equal(d.next_seq, 4);
        assert_int_equal(d.oldest_first_seen_ms, 1000 + order_a[i]);
        if (i < 2) {
            buf_reset(&st);
            assert_int_equal(queue_head(f->s, "b.org", &head, &st), 0);
            assert_item(&head, &t[order_b[i]].it);
            assert_int_equal(done(f->s, "b.org", head.seq), 0);
        }
        assert_int_equal(done(f->s, "a.org", i + 1), 0);
        check_consistent(f->s, true);
    }
    assert_int_equal(queue_head(f->s, "a.org", &head, &st), CH_ENOENT);
    assert_int_equal(queue_head(f->s, "b.org", &head, &st), CH_ENOENT);
    assert_int_equal(queue_head(f->s, "c.org", &head, &st), CH_ENOENT);
    buf_reset(&st);
    assert_int_equal(queue_head(f->s, "a.org.x", &head, &st), 0);
    assert_item(&head, &t[3].it);
    assert_int_equal(head.seq, 1);

    /* Emptied destinations stay, depth 0; the next entry continues the sequence. */
    struct queue_dest d = get_dest(f->s, "a.org");
    assert_int_equal(d.depth, 0);
    assert_int_equal(d.bytes, 0);
    assert_int_equal(d.next_seq, 4);
    assert_int_equal(d.oldest_seq, 4);
    assert_int_equal(d.oldest_first_seen_ms, 0);
    struct tx again;
    tx_init(&again, "hs.example", "a.org", "txn-late", "{}", 5000);
    uint64_t seq;
    assert_int_equal(put(f->s, &again.it, NULL, &seq, NULL), 0);
    assert_int_equal(seq, 4);
    assert_totals(f->s, rec_size(&t[3].it) + rec_size(&again.it), 2, 0);

    /* The listing is in name order. */
    struct dests all = {0};
    assert_int_equal(queue_each_dest(f->s, dest_cb, &all), 0);
    assert_int_equal(all.n, 3);
    assert_string_equal(all.d[0].name, "a.org");
    assert_string_equal(all.d[1].name, "a.org.x");
    assert_string_equal(all.d[2].name, "b.org");
    assert_int_equal(all.d[0].depth, 1);
    assert_int_equal(all.d[0].oldest_first_seen_ms, 5000);
    assert_int_equal(all.d[1].depth, 1);
    assert_int_equal(all.d[2].depth, 0);
    assert_int_equal(all.d[2].next_seq, 3);

    /* Done of an entry that is not there. */
    assert_int_equal(done(f->s, "a.org", 1), CH_ENOENT);
    assert_int_equal(done(f->s, "zz.org", 1), CH_ENOENT);
    check_consistent(f->s, true);

    for (size_t i = 0; i < 6; i++) {
        free((void *)t[i].it.txn_id.base);
        free((void *)t[i].it.body.base);
    }
    buf_free(&st);
}

/* Deleting an entry in the middle leaves the head; deleting the head skips to the next. */
static void test_remove_middle(void **state)
{
    struct fix *f = *state;
    struct tx t[4];
    const char *ids[4] = {"m1", "m2", "m3", "m4"};
    for (size_t i = 0; i < 4; i++) {
        tx_init(&t[i], "hs.example", "m.org", ids[i], "{}", 10 + i);
        assert_int_equal(put(f->s, &t[i].it, NULL, NULL, NULL), 0);
    }
    assert_int_equal(done(f->s, "m.org", 2), 0);
    struct queue_dest d = get_dest(f->s, "m.org");
    assert_int_equal(d.oldest_seq, 1);
    assert_int_equal(d.depth, 3);
    uint64_t id;
    assert_int_equal(dead(f->s, "m.org", 3, 50, 400, "M_BAD_JSON", NULL, 0, &id), 0);
    assert_int_equal(id, 1);
    assert_int_equal(done(f->s, "m.org", 1), 0);
    d = get_dest(f->s, "m.org");
    assert_int_equal(d.oldest_seq, 4); /* 2 and 3 are gone */
    assert_int_equal(d.depth, 1);
    assert_int_equal(d.oldest_first_seen_ms, 13);
    check_consistent(f->s, true);
}

/* What queue_each_entry gave: each entry's fields copied (the strings live during the call). */
struct seen {
    size_t n, stop_after; /* stop_after: return 7 from the call that sees that many (0: never) */
    uint64_t seq[8];
    int status[8];
    char txn_id[8][16], origin[8][16], path[8][64];
    size_t body_len[8];
    bool body_null[8], terminated[8];
    uint64_t first_seen[8];
    uint32_t attempts[8];
};

static int entry_cb(void *ud, const struct queue_item *it, int status)
{
    struct seen *a = ud;
    if (a->n < ARRAY_LEN(a->seq)) {
        size_t i = a->n;
        a->seq[i] = it->seq;
        a->status[i] = status;
        snprintf(a->txn_id[i], sizeof(a->txn_id[i]), "%.*s", (int)it->txn_id.len,
                 it->txn_id.base ? it->txn_id.base : "");
        snprintf(a->origin[i], sizeof(a->origin[i]), "%.*s", (int)it->origin.len,
                 it->origin.base ? it->origin.base : "");
        snprintf(a->path[i], sizeof(a->path[i]), "%.*s", (int)it->path.len,
                 it->path.base ? it->path.base : "");
        a->body_len[i] = it->body.len;
        a->body_null[i] = it->body.base == NULL;
        a->terminated[i] = status != 0 || (it->txn_id.base[it->txn_id.len] == '\0' &&
                                           it->method.base[it->method.len] == '\0' &&
                                           it->path.base[it->path.len] == '\0');
        a->first_seen[i] = it->first_seen_ms;
        a->attempts[i] = it->attempts;
    }
    a->n++;
    return a->stop_after && a->n == a->stop_after ? 7 : 0;
}

/* One destination's entries in FIFO order, with neither its neighbours in key order ("m.or"
 * before, "m.org.x" after "m.org\0...") nor the entries already gone. */
static void test_each_entry(void **state)
{
    struct fix *f = *state;
    struct tx t[4], before, after;
    const char *bodies[4] = {"{}", "{\"pdus\":[]}", "{\"a\":1}", "{\"edus\":[]}"};
    const char *ids[4] = {"e1", "e2", "e3", "e4"};
    tx_init(&before, "hs.example", "m.or", "b1", "{}", 1);
    tx_init(&after, "hs.example", "m.org.x", "a1", "{}", 2);
    assert_int_equal(put(f->s, &before.it, NULL, NULL, NULL), 0);
    for (size_t i = 0; i < 4; i++) {
        tx_init(&t[i], "hs.example", "m.org", ids[i], bodies[i], 100 + i);
        assert_int_equal(put(f->s, &t[i].it, NULL, NULL, NULL), 0);
    }
    assert_int_equal(put(f->s, &after.it, NULL, NULL, NULL), 0);
    assert_int_equal(done(f->s, "m.org", 2), 0);
    assert_int_equal(retry(f->s, "m.org", 1, 500, "x", 1, 2, 3), 0);
    assert_int_equal(retry(f->s, "m.org", 1, 500, "x", 1, 2, 3), 0);

    struct seen a = {0};
    assert_int_equal(queue_each_entry(f->s, "m.org", entry_cb, &a), 0);
    assert_int_equal(a.n, 3);
    const size_t want[3] = {0, 2, 3};
    for (size_t i = 0; i < 3; i++) {
        const struct queue_item *w = &t[want[i]].it;
        assert_int_equal(a.status[i], 0);
        assert_int_equal(a.seq[i], want[i] + 1);
        assert_string_equal(a.txn_id[i], ids[want[i]]);
        assert_string_equal(a.origin[i], "hs.example");
        assert_string_equal(a.path[i], t[want[i]].path);
        assert_int_equal(a.body_len[i], w->body.len);
        assert_true(a.body_null[i]);
        assert_true(a.terminated[i]);
        assert_int_equal(a.first_seen[i], 100 + want[i]);
        assert_int_equal(a.attempts[i], i == 0 ? 2 : 0);
    }

    /* The callback's non-zero return stops the walk and is returned. */
    struct seen stop = {.stop_after = 2};
    assert_int_equal(queue_each_entry(f->s, "m.org", entry_cb, &stop), 7);
    assert_int_equal(stop.n, 2);

    /* A malformed record is reported by its seq and the walk goes on; a key under the prefix
     * that is not a seq is skipped. */
    uint8_t key[32];
    size_t klen = qkey("m.org", 3, key);
    assert_int_equal(put_raw(f->s, STORE_DB_QUEUE, key, klen, "\x09junk", 5), 0);
    assert_int_equal(put_raw(f->s, STORE_DB_QUEUE, "m.org\0zz", 8, "junk", 4), 0);
    struct seen bad = {0};
    assert_int_equal(queue_each_entry(f->s, "m.org", entry_cb, &bad), 0);
    assert_int_equal(bad.n, 3);
    assert_int_equal(bad.seq[1], 3);
    assert_int_equal(bad.status[1], CH_EPROTO);
    assert_int_equal(bad.status[0], 0);
    assert_int_equal(bad.status[2], 0);
    assert_int_equal(bad.seq[2], 4);

    /* Its neighbours are walks of their own. */
    struct seen one = {0};
    assert_int_equal(queue_each_entry(f->s, "m.org.x", entry_cb, &one), 0);
    assert_int_equal(one.n, 1);
    assert_string_equal(one.txn_id[0], "a1");
    memset(&one, 0, sizeof(one));
    assert_int_equal(queue_each_entry(f->s, "m.or", entry_cb, &one), 0);
    assert_int_equal(one.n, 1);
    assert_string_equal(one.txn_id[0], "b1");

    /* Nothing queued, never seen, or not a name. */
    struct seen none = {0};
    assert_int_equal(done(f->s, "m.or", 1), 0);
    assert_int_equal(queue_each_entry(f->s, "m.or", entry_cb, &none), 0);
    assert_int_equal(queue_each_entry(f->s, "never.org", entry_cb, &none), 0);
    assert_int_equal(none.n, 0);
    assert_int_equal(queue_each_entry(f->s, "", entry_cb, &none), CH_EINVAL);
    char longname[QUEUE_NAME_MAX + 2];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(queue_each_entry(f->s, longname, entry_cb, &none), CH_EINVAL);
    assert_int_equal(none.n, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Dedupe.                                                                                     */

static void test_dedupe(void **state)
{
    struct fix *f = *state;
    struct tx a, a2, other_origin, other_txn, other_dest;
    tx_init(&a, "hs1.example", "r.org", "1700000000001", "{\"pdus\":[1]}", 100);
    /* The same triple with another body and time: still the same transaction. */
    tx_init(&a2, "hs1.example", "r.org", "1700000000001", "{\"pdus\":[2]}", 200);
    tx_init(&other_origin, "hs2.example", "r.org", "1700000000001", "{}", 300);
    tx_init(&other_txn, "hs1.example", "r.org", "1700000000002", "{}", 400);
    tx_init(&other_dest, "hs1.example", "s.org", "1700000000001", "{}", 500);

    uint64_t seq;
    bool dup;
    assert_int_equal(put(f->s, &a.it, NULL, &seq, &dup), 0);
    assert_false(dup);
    assert_int_equal(seq, 1);
    assert_int_equal(put(f->s, &a.it, NULL, &seq, &dup), 0);
    assert_true(dup);
    assert_int_equal(seq, 1);
    assert_int_equal(put(f->s, &a2.it, NULL, &seq, &dup), 0);
    assert_true(dup);
    assert_int_equal(seq, 1);
    assert_totals(f->s, rec_size(&a.it), 1, 0);
    check_consistent(f->s, true);

    assert_int_equal(put(f->s, &other_origin.it, NULL, &seq, &dup), 0);
    assert_false(dup);
    assert_int_equal(seq, 2);
    assert_int_equal(put(f->s, &other_txn.it, NULL, &seq, &dup), 0);
    assert_false(dup);
    assert_int_equal(seq, 3);
    assert_int_equal(put(f->s, &other_dest.it, NULL, &seq, &dup), 0);
    assert_false(dup);
    assert_int_equal(seq, 1);
    assert_totals(f->s,
                  rec_size(&a.it) + rec_size(&other_origin.it) + rec_size(&other_txn.it) +
                      rec_size(&other_dest.it),
                  4, 0);
    check_consistent(f->s, true);

    /* The first one's body is the one kept. */
    struct buf st = BUF_INIT;
    struct queue_item head;
    assert_int_equal(queue_head(f->s, "r.org", &head, &st), 0);
    assert_item(&head, &a.it);

    /* Delivered: its index entry goes, and the same triple is a new transaction again. */
    assert_int_equal(done(f->s, "r.org", 1), 0);
    check_consistent(f->s, true);
    assert_int_equal(put(f->s, &a.it, NULL, &seq, &dup), 0);
    assert_false(dup);
    assert_int_equal(seq, 4);
    check_consistent(f->s, true);

    /* The index key is BLAKE2b-256 of origin NUL destination NUL txnId; its value the seq. */
    uint8_t digest[32], val[16];
    size_t len;
    const char in[] = "hs1.example\0r.org\0"
                      "1700000000001";
    crypto_generichash(digest, sizeof(digest), (const uint8_t *)in, sizeof(in) - 1, NULL, 0);
    assert_int_equal(get_raw(f->s, STORE_DB_TXNS, digest, 32, val, sizeof(val), &len), 0);
    assert_int_equal(len, 8);
    assert_memory_equal(val, "\x04\0\0\0\0\0\0\0", 8);
    buf_free(&st);
}

/* ------------------------------------------------------------------------------------------ */
/* Caps.                                                                                       */

static void test_caps(void **state)
{
    struct fix *f = *state;
    struct tx t[5];
    const char *ids[5] = {"c1", "c2", "c3", "c4", "c5"};
    const char *dests[5] = {"x.org", "x.org", "x.org", "y.org", "y.org"};
    for (size_t i = 0; i < 5; i++)
        tx_init(&t[i], "hs.example", dests[i], ids[i], "{\"pdus\":[]}", 1);
    uint64_t size = rec_size(&t[0].it); /* every one is this size */
    for (size_t i = 1; i < 5; i++)
        assert_int_equal(rec_size(&t[i].it), size);

    /* Per destination: two entries of x.org fit, not three; y.org is not affected. */
    struct queue_caps caps = {.max_bytes = 0, .dest_max_bytes = 2 * size};
    uint64_t seq;
    bool dup;
    assert_int_equal(put(f->s, &t[0].it, &caps, &seq, NULL), 0);
    assert_int_equal(put(f->s, &t[1].it, &caps, &seq, NULL), 0);
    assert_int_equal(put(f->s, &t[2].it, &caps, &seq, &dup), CH_EAGAIN);
    assert_int_equal(seq, 0);
    assert_false(dup);
    assert_totals(f->s, 2 * size, 2, 0);
    struct queue_dest d = get_dest(f->s, "x.org");
    assert_int_equal(d.depth, 2);
    assert_int_equal(d.next_seq, 3);
    /* A duplicate of a queued one is still acknowledged: nothing to store. */
    assert_int_equal(put(f->s, &t[1].it, &caps, &seq, &dup), 0);
    assert_true(dup);
    assert_int_equal(seq, 2);
    check_consistent(f->s, true);

    /* Global: with 3 entries' room, y.org gets one and then the queue is full. */
    caps = (struct queue_caps){.max_bytes = 3 * size, .dest_max_bytes = 0};
    assert_int_equal(put(f->s, &t[3].it, &caps, &seq, NULL), 0);
    assert_int_equal(put(f->s, &t[4].it, &caps, &seq, NULL), CH_EAGAIN);
    assert_int_equal(put(f->s, &t[2].it, &caps, &seq, NULL), CH_EAGAIN);
    assert_totals(f->s, 3 * size, 3, 0);
    d = get_dest(f->s, "y.org");
    assert_int_equal(d.depth, 1);
    assert_int_equal(d.next_seq, 2);
    check_consistent(f->s, true);

    /* A delivery makes room again. Exactly full is allowed. */
    assert_int_equal(done(f->s, "x.org", 1), 0);
    assert_int_equal(put(f->s, &t[4].it, &caps, &seq, NULL), 0);
    assert_int_equal(seq, 2);
    assert_int_equal(put(f->s, &t[2].it, &caps, &seq, NULL), CH_EAGAIN);
    assert_totals(f->s, 3 * size, 3, 0);

    /* One byte short of an entry is full. */
    caps.max_bytes = 4 * size - 1;
    assert_int_equal(put(f->s, &t[2].it, &caps, &seq, NULL), CH_EAGAIN);
    caps.max_bytes = 4 * size;
    assert_int_equal(put(f->s, &t[2].it, &caps, &seq, NULL), 0);
    assert_int_equal(seq, 3);
    assert_totals(f->s, 4 * size, 4, 0);
    check_consistent(f->s, true);
}

/* ------------------------------------------------------------------------------------------ */
/* Retry, dead, requeue, delete.                                                               */

struct deads {
    struct queue_dead d[4];
    char reason[4][QUEUE_ERROR_MAX + 1];
    char txn_id[4][64];
    int status[4];
    size_t n;
};

static int dead_cb(void *ud, const struct queue_dead *d, int status)
{
    struct deads *a = ud;
    if (a->n < ARRAY_LEN(a->d)) {
        a->d[a->n] = *d;
        a->status[a->n] = status;
        /* The strings live only during the call. */
        snprintf(a->reason[a->n], sizeof(a->reason[0]), "%s", status == 0 ? d->reason.base : "");
        snprintf(a->txn_id[a->n], sizeof(a->txn_id[0]), "%s",
                 status == 0 ? d->item.txn_id.base : "");
    }
    a->n++;
    return 0;
}

static void test_retry_dead_requeue(void **state)
{
    struct fix *f = *state;
    struct tx t;
    tx_init(&t, "hs.example", "down.org", "t-1", "{\"pdus\":[{\"type\":\"m.room.message\"}]}",
            1000);
    uint64_t seq;
    assert_int_equal(put(f->s, &t.it, NULL, &seq, NULL), 0);
    assert_int_equal(seq, 1);
    uint64_t size = rec_size(&t.it);

    /* Two failed attempts. */
    assert_int_equal(retry(f->s, "down.org", 1, 503, "503 Service Unavailable", 2000, 7000, 5000),
                     0);
    struct queue_dest d = get_dest(f->s, "down.org");
    assert_int_equal(d.failures, 1);
    assert_int_equal(d.last_status, 503);
    assert_string_equal(d.last_error, "503 Service Unavailable");
    assert_int_equal(d.last_attempt_ms, 2000);
    assert_int_equal(d.next_attempt_ms, 7000);
    assert_int_equal(d.backoff_ms, 5000);
    assert_int_equal(d.depth, 1);
    assert_int_equal(d.bytes, size);
    assert_int_equal(retry(f->s, "down.org", 1, 0, "timeout", 7100, 17100, 10000), 0);
    d = get_dest(f->s, "down.org");
    assert_int_equal(d.failures, 2);
    assert_int_equal(d.last_status, 0);
    assert_string_equal(d.last_error, "timeout");
    assert_int_equal(d.last_attempt_ms, 7100);
    assert_int_equal(d.next_attempt_ms, 17100);
    assert_int_equal(d.backoff_ms, 10000);
    struct buf st = BUF_INIT;
    struct queue_item head;
    assert_int_equal(queue_head(f->s, "down.org", &head, &st), 0);
    assert_item(&head, &t.it);
    assert_int_equal(head.attempts, 2);
    assert_int_equal(head.seq, 1);
    assert_totals(f->s, size, 1, 0); /* a retry changes no size */
    check_consistent(f->s, true);

    /* Due: not before next_attempt_ms. */
    struct dests due = {0};
    assert_int_equal(queue_due(f->s, 17099, dest_cb, &due), 0);
    assert_int_equal(due.n, 0);
    assert_int_equal(queue_due(f->s, 17100, dest_cb, &due), 0);
    assert_int_equal(due.n, 1);
    assert_string_equal(due.d[0].name, "down.org");
    assert_int_equal(due.d[0].failures, 2);

    /* A permanent refusal: to `dead`, with the response cut to 4 KiB; the destination answered,
     * so its backoff is over. */
    char resp[5000];
    for (size_t i = 0; i < sizeof(resp); i++)
        resp[i] = (char)('a' + i % 26);
    resp[10] = '\0'; /* a body is bytes, NUL included */
    uint64_t id;
    assert_int_equal(dead(f->s, "down.org", 1, 20000, 403, "M_FORBIDDEN: not in the room", resp,
                          sizeof(resp), &id),
                     0);
    assert_int_equal(id, 1);
    d = get_dest(f->s, "down.org");
    assert_int_equal(d.depth, 0);
    assert_int_equal(d.bytes, 0);
    assert_int_equal(d.failures, 0);
    assert_int_equal(d.backoff_ms, 0);
    assert_int_equal(d.next_attempt_ms, 0);
    assert_int_equal(d.last_status, 403);
    assert_string_equal(d.last_error, "M_FORBIDDEN: not in the room");
    assert_int_equal(d.last_attempt_ms, 20000);
    assert_int_equal(d.oldest_seq, 2);
    assert_int_equal(d.next_seq, 2);
    assert_totals(f->s, 0, 0, 1);
    assert_int_equal(queue_head(f->s, "down.org", &head, &st), CH_ENOENT);
    check_consistent(f->s, true);

    struct queue_dead dd;
    buf_reset(&st);
    assert_int_equal(queue_get_dead(f->s, 1, &dd, &st), 0);
    assert_int_equal(dd.id, 1);
    assert_item(&dd.item, &t.it);
    assert_int_equal(dd.item.attempts, 2);
    assert_int_equal(dd.item.seq, 0);
    assert_int_equal(dd.died_ms, 20000);
    assert_int_equal(dd.status, 403);
    assert_slice(dd.reason, str("M_FORBIDDEN: not in the room"));
    assert_slice(dd.response, (struct slice){resp, QUEUE_RESP_MAX});
    assert_int_equal(queue_get_dead(f->s, 2, &dd, &st), CH_ENOENT);

    struct deads all = {0};
    assert_int_equal(queue_each_dead(f->s, dead_cb, &all), 0);
    assert_int_equal(all.n, 1);
    assert_int_equal(all.status[0], 0);
    assert_int_equal(all.d[0].id, 1);
    assert_null(all.d[0].item.body.base);
    assert_int_equal(all.d[0].item.body.len, t.it.body.len);
    assert_int_equal(all.d[0].item.attempts, 2);
    assert_int_equal(all.d[0].status, 403);
    assert_int_equal(all.d[0].died_ms, 20000);
    assert_int_equal(all.d[0].response.len, QUEUE_RESP_MAX);
    assert_string_equal(all.reason[0], "M_FORBIDDEN: not in the room");
    assert_string_equal(all.txn_id[0], "t-1");

    /* Requeued: at the tail, attempts 0, a fresh first_seen; the dead entry is gone. */
    assert_int_equal(requeue(f->s, 1, NULL, 30000, &seq), 0);
    assert_int_equal(seq, 2);
    buf_reset(&st);
    assert_int_equal(queue_head(f->s, "down.org", &head, &st), 0);
    struct tx want;
    tx_init(&want, "hs.example", "down.org", "t-1", "{\"pdus\":[{\"type\":\"m.room.message\"}]}",
            30000);
    assert_item(&head, &want.it);
    assert_int_equal(head.attempts, 0);
    assert_int_equal(head.seq, 2);
    assert_int_equal(queue_get_dead(f->s, 1, &dd, &st), CH_ENOENT);
    assert_totals(f->s, size, 1, 0);
    check_consistent(f->s, true);
    /* Its dedupe entry is back. */
    bool dup;
    assert_int_equal(put(f->s, &t.it, NULL, &seq, &dup), 0);
    assert_true(dup);
    assert_int_equal(seq, 2);
    assert_int_equal(requeue(f->s, 1, NULL, 30000, &seq), CH_ENOENT);

    /* Expiry: status 0 leaves the destination's backoff as it was. */
    assert_int_equal(retry(f->s, "down.org", 2, 502, "502 Bad Gateway", 31000, 36000, 5000), 0);
    assert_int_equal(dead(f->s, "down.org", 2, 40000, 0, "expired: max_age 7d", NULL, 0, &id), 0);
    assert_int_equal(id, 2);
    d = get_dest(f->s, "down.org");
    assert_int_equal(d.depth, 0);
    assert_int_equal(d.failures, 1);
    assert_int_equal(d.last_status, 502);
    assert_string_equal(d.last_error, "502 Bad Gateway");
    assert_int_equal(d.last_attempt_ms, 31000);
    assert_int_equal(d.next_attempt_ms, 36000);
    assert_int_equal(d.backoff_ms, 5000);
    buf_reset(&st);
    assert_int_equal(queue_get_dead(f->s, 2, &dd, &st), 0);
    assert_int_equal(dd.status, 0);
    assert_int_equal(dd.item.attempts, 1);
    assert_int_equal(dd.item.first_seen_ms, 30000);
    assert_slice(dd.reason, str("expired: max_age 7d"));
    assert_slice(dd.response, str(""));
    assert_totals(f->s, 0, 0, 1);

    /* An operator resets the backoff. */
    assert_int_equal(reset(f->s, "down.org"), 0);
    d = get_dest(f->s, "down.org");
    assert_int_equal(d.failures, 0);
    assert_int_equal(d.next_attempt_ms, 0);
    assert_int_equal(d.backoff_ms, 0);
    assert_int_equal(d.last_status, 502); /* history stays */
    assert_int_equal(reset(f->s, "nowhere.org"), CH_ENOENT);

    /* Deleted. */
    assert_int_equal(delete_dead(f->s, 2), 0);
    assert_int_equal(queue_get_dead(f->s, 2, &dd, &st), CH_ENOENT);
    assert_int_equal(delete_dead(f->s, 2), CH_ENOENT);
    assert_totals(f->s, 0, 0, 0);

    /* Nothing to act on. */
    assert_int_equal(retry(f->s, "down.org", 9, 500, "x", 1, 2, 3), CH_ENOENT);
    assert_int_equal(dead(f->s, "down.org", 9, 1, 400, "x", NULL, 0, NULL), CH_ENOENT);
    assert_int_equal(retry(f->s, "nowhere.org", 1, 500, "x", 1, 2, 3), CH_ENOENT);
    check_consistent(f->s, true);
    buf_free(&st);
}

/* A requeue of a transaction queued again meanwhile only deletes the dead entry; a requeue into
 * a full queue writes nothing. */
static void test_requeue_duplicate_and_full(void **state)
{
    struct fix *f = *state;
    struct tx t, u;
    tx_init(&t, "hs.example", "r.org", "dup-1", "{}", 1);
    tx_init(&u, "hs.example", "r.org", "dup-2", "{}", 2);
    uint64_t seq, id1, id2;
    assert_int_equal(put(f->s, &t.it, NULL, &seq, NULL), 0);
    assert_int_equal(dead(f->s, "r.org", seq, 5, 400, "bad", "{}", 2, &id1), 0);
    assert_int_equal(put(f->s, &t.it, NULL, &seq, NULL), 0); /* the homeserver sent it again */
    assert_int_equal(seq, 2);
    assert_int_equal(requeue(f->s, id1, NULL, 9, &seq), 0);
    assert_int_equal(seq, 2);
    assert_totals(f->s, rec_size(&t.it), 1, 0);
    check_consistent(f->s, true);

    assert_int_equal(put(f->s, &u.it, NULL, &seq, NULL), 0);
    assert_int_equal(dead(f->s, "r.org", seq, 6, 413, "M_TOO_LARGE", NULL, 0, &id2), 0);
    assert_int_equal(id2, 2);
    struct queue_caps caps = {.max_bytes = rec_size(&t.it) + rec_size(&u.it) - 1};
    assert_int_equal(requeue(f->s, id2, &caps, 10, &seq), CH_EAGAIN);
    caps = (struct queue_caps){.dest_max_bytes = rec_size(&t.it)};
    assert_int_equal(requeue(f->s, id2, &caps, 10, &seq), CH_EAGAIN);
    assert_totals(f->s, rec_size(&t.it), 1, 1);
    check_consistent(f->s, true);
    caps.dest_max_bytes += rec_size(&u.it);
    assert_int_equal(requeue(f->s, id2, &caps, 10, &seq), 0);
    assert_int_equal(seq, 4);
    assert_totals(f->s, rec_size(&t.it) + rec_size(&u.it), 2, 0);
    check_consistent(f->s, true);
}

/* last_error and reasons are cut at 255 bytes, never inside a UTF-8 character. */
static void test_error_truncated(void **state)
{
    struct fix *f = *state;
    struct tx t;
    tx_init(&t, "hs.example", "e.org", "e-1", "{}", 1);
    assert_int_equal(put(f->s, &t.it, NULL, NULL, NULL), 0);
    char err[400];
    memset(err, 'a', 254);
    strcpy(err + 254, "\xc3\xa9tait trop long"); /* "é" at bytes 254-255 */
    assert_int_equal(retry(f->s, "e.org", 1, 500, err, 1, 2, 3), 0);
    struct queue_dest d = get_dest(f->s, "e.org");
    assert_int_equal(strlen(d.last_error), 254);
    assert_memory_equal(d.last_error, err, 254);
    err[254] = 'b'; /* ASCII on both sides of the limit: cut at exactly 255 */
    err[255] = 'c';
    assert_int_equal(retry(f->s, "e.org", 1, 500, err, 1, 2, 3), 0);
    d = get_dest(f->s, "e.org");
    assert_int_equal(strlen(d.last_error), 255);
    assert_int_equal(retry(f->s, "e.org", 1, 500, NULL, 1, 2, 3), 0);
    d = get_dest(f->s, "e.org");
    assert_string_equal(d.last_error, "");
    uint64_t id;
    assert_int_equal(dead(f->s, "e.org", 1, 5, 404, err, NULL, 0, &id), 0);
    struct buf st = BUF_INIT;
    struct queue_dead dd;
    assert_int_equal(queue_get_dead(f->s, id, &dd, &st), 0);
    assert_int_equal(dd.reason.len, 255);
    assert_int_equal(dd.item.attempts, 3);
    d = get_dest(f->s, "e.org");
    assert_int_equal(strlen(d.last_error), 255);
    buf_free(&st);
}

static void test_invalid(void **state)
{
    struct fix *f = *state;
    char longname[QUEUE_NAME_MAX + 2];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    struct tx t;
    uint64_t seq;
    bool dup;

    tx_init(&t, "", "d.org", "i-1", "{}", 1);
    assert_int_equal(put(f->s, &t.it, NULL, &seq, &dup), CH_EINVAL);
    assert_int_equal(seq, 0);
    assert_false(dup);
    tx_init(&t, "hs.example", longname, "i-1", "{}", 1);
    assert_int_equal(put(f->s, &t.it, NULL, NULL, NULL), CH_EINVAL);
    tx_init(&t, "hs.example", "d.org", "", "{}", 1);
    assert_int_equal(put(f->s, &t.it, NULL, NULL, NULL), CH_EINVAL);
    tx_init(&t, "hs.example", "d.org", "i-1", "{}", 1);
    t.it.method = (struct slice){"", 0};
    assert_int_equal(put(f->s, &t.it, NULL, NULL, NULL), CH_EINVAL);
    tx_init(&t, "hs.example", "d.org", "i-1", "{}", 1);
    t.it.path = (struct slice){"/a\0b", 4}; /* a NUL in a text field */
    assert_int_equal(put(f->s, &t.it, NULL, NULL, NULL), CH_EINVAL);
    tx_init(&t, "hs.example", "d.org", "i-1", "{}", 1);
    t.it.body = (struct slice){NULL, 3};
    assert_int_equal(put(f->s, &t.it, NULL, NULL, NULL), CH_EINVAL);
    assert_totals(f->s, 0, 0, 0);
    assert_int_equal(entries(f->s, STORE_DB_DEST), 0);

    /* Exactly the maximum name, empty optional fields and a body with NUL bytes are fine. */
    longname[QUEUE_NAME_MAX] = '\0';
    tx_init(&t, longname, longname, "i-1", "", 1);
    t.it.authorization = (struct slice){"", 0};
    t.it.content_type = (struct slice){NULL, 0};
    t.it.body = (struct slice){"a\0b", 3};
    assert_int_equal(put(f->s, &t.it, NULL, &seq, NULL), 0);
    struct buf st = BUF_INIT;
    struct queue_item head;
    assert_int_equal(queue_head(f->s, longname, &head, &st), 0);
    assert_slice(head.body, (struct slice){"a\0b", 3});
    assert_slice(head.authorization, str(""));
    assert_slice(head.content_type, str(""));
    assert_slice(head.origin, str(longname));
    check_consistent(f->s, true);

    /* Impossible names are refused, not searched. */
    longname[QUEUE_NAME_MAX] = 'n';
    struct queue_dest d;
    assert_int_equal(queue_head(f->s, "", &head, &st), CH_EINVAL);
    assert_int_equal(queue_head(f->s, longname, &head, &st), CH_EINVAL);
    assert_int_equal(queue_get_dest(f->s, NULL, &d), CH_EINVAL);
    assert_int_equal(done(f->s, "", 1), CH_EINVAL);
    assert_int_equal(retry(f->s, longname, 1, 500, "x", 1, 2, 3), CH_EINVAL);
    assert_int_equal(dead(f->s, "", 1, 1, 400, "x", NULL, 0, NULL), CH_EINVAL);
    longname[QUEUE_NAME_MAX] = '\0';
    assert_int_equal(dead(f->s, longname, 1, 1, 400, "x", NULL, 5, NULL), CH_EINVAL);
    assert_int_equal(reset(f->s, ""), CH_EINVAL);
    assert_int_equal(queue_get_dest(f->s, "absent.org", &d), CH_ENOENT);
    buf_free(&st);
}

/* ------------------------------------------------------------------------------------------ */
/* Layouts and malformed records.                                                              */

static void test_layout(void **state)
{
    struct fix *f = *state;
    struct tx t;
    tx_init(&t, "o.rg", "d.rg", "T1", "{}", 0x0102030405060708ull);
    t.it.authorization = SLICE_LIT("X");
    t.it.content_type = SLICE_LIT("a/j");
    t.it.path = SLICE_LIT("/p");
    assert_int_equal(put(f->s, &t.it, NULL, NULL, NULL), 0);
    const uint8_t want[] = {
        1,   8,   7, 6, 5,   4,   3,   2,   1, 0, 0, 0,   0, /* version, first_seen, attempts */
        4,   0,   0, 0, 'o', '.', 'r', 'g', 4, 0, 0, 0,   'd', '.', /* origin, destination */
        'r', 'g', 2, 0, 0,   0,   'T', '1', 3, 0, 0, 0,   'P', 'U', /* txn_id, method */
        'T', 2,   0, 0, 0,   '/', 'p', 1,   0, 0, 0, 'X',           /* path, authorization */
        3,   0,   0, 0, 'a', '/', 'j', 2,   0, 0, 0, '{', '}',      /* content_type, body */
    };
    uint8_t key[32], got[256];
    size_t klen = qkey("d.rg", 1, key), len;
    assert_int_equal(klen, 13);
    assert_memory_equal(key, "d.rg\0\0\0\0\0\0\0\0\x01", 13);
    assert_int_equal(get_raw(f->s, STORE_DB_QUEUE, key, klen, got, sizeof(got), &len), 0);
    assert_int_equal(len, sizeof(want));
    assert_int_equal(len, rec_size(&t.it));
    assert_memory_equal(got, want, sizeof(want));

    assert_int_equal(retry(f->s, "d.rg", 1, -1, "E", 0x11, 0x22, 0x33), 0);
    const uint8_t want_dest[] = {
        1,
        2,
        0,
        0,
        0,
        0,
        0,
        0,
        0, /* version, next_seq */
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0, /* depth */
        (uint8_t)sizeof(want),
        0,
        0,
        0,
        0,
        0,
        0,
        0, /* bytes */
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0, /* oldest_seq */
        0x22,
        0,
        0,
        0,
        0,
        0,
        0,
        0, /* next_attempt_ms */
        0x33,
        0,
        0,
        0,
        0,
        0,
        0,
        0, /* backoff_ms */
        0x11,
        0,
        0,
        0,
        0,
        0,
        0,
        0, /* last_attempt_ms */
        1,
        0,
        0,
        0,
        0xff,
        0xff,
        0xff,
        0xff, /* failures, last_status -1 */
        1,
        0,
        0,
        0,
        'E', /* last_error */
    };
    assert_int_equal(get_raw(f->s, STORE_DB_DEST, "d.rg", 4, got, sizeof(got), &len), 0);
    assert_int_equal(len, sizeof(want_dest));
    assert_memory_equal(got, want_dest, sizeof(want_dest));
    struct queue_dest d = get_dest(f->s, "d.rg");
    assert_int_equal(d.last_status, -1);

    /* The record after the retry: attempts 1, nothing else changed. */
    assert_int_equal(get_raw(f->s, STORE_DB_QUEUE, key, klen, got, sizeof(got), &len), 0);
    assert_int_equal(got[9], 1);
    assert_memory_equal(got + 10, want + 10, sizeof(want) - 10);

    uint64_t id;
    assert_int_equal(dead(f->s, "d.rg", 1, 0x44, 404, "R", "xy", 2, &id), 0);
    uint8_t dkey[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    assert_int_equal(get_raw(f->s, STORE_DB_DEAD, dkey, 8, got, sizeof(got), &len), 0);
    const uint8_t want_dead[] = {
        1, 0x44, 0, 0, 0,   0, 0, 0, 0, 0x94, 1,   0, 0, /* version, died_ms, status 404 */
        1, 0,    0, 0, 'R', 2, 0, 0, 0, 'x',  'y',       /* reason, response */
    };
    assert_int_equal(len, sizeof(want_dead) + sizeof(want));
    assert_memory_equal(got, want_dead, sizeof(want_dead));
    assert_int_equal(got[sizeof(want_dead) + 9], 1); /* the entry, attempts 1 */
    assert_memory_equal(got + sizeof(want_dead) + 10, want + 10, sizeof(want) - 10);

    /* meta: the totals and the last dead id, u64 little-endian. */
    assert_int_equal(get_raw(f->s, STORE_DB_META, "dead_seq", 8, got, sizeof(got), &len), 0);
    assert_int_equal(len, 8);
    assert_memory_equal(got, "\x01\0\0\0\0\0\0\0", 8);
    assert_int_equal(get_raw(f->s, STORE_DB_META, "queue_count", 11, got, sizeof(got), &len), 0);
    assert_memory_equal(got, "\0\0\0\0\0\0\0\0", 8);
    assert_int_equal(get_raw(f->s, STORE_DB_META, "queue_bytes", 11, got, sizeof(got), &len), 0);
    assert_memory_equal(got, "\0\0\0\0\0\0\0\0", 8);
}

static void test_malformed_entry(void **state)
{
    struct fix *f = *state;
    struct tx t;
    tx_init(&t, "hs.example", "m.org", "bad-1", "{\"x\":1}", 7);
    assert_int_equal(put(f->s, &t.it, NULL, NULL, NULL), 0);
    uint8_t key[32], good[256], rec[300];
    size_t klen = qkey("m.org", 1, key), len;
    assert_int_equal(get_raw(f->s, STORE_DB_QUEUE, key, klen, good, sizeof(good), &len), 0);
    assert_int_equal(len, rec_size(&t.it));
    size_t n = len;
    /* Offsets in this record: origin's length at 13, destination's at 27 ("hs.example" is 10). */
    struct {
        const char *what;
        size_t len;
        int off; /* byte to change, -1 for none */
        uint8_t val;
    } cases[] = {
        {"empty", 0, -1, 0},
        {"header only", 13, -1, 0},
        {"truncated body", n - 1, -1, 0},
        {"trailing byte", n + 1, -1, 0},
        {"version 2", n, 0, 2},
        {"origin length too long", n, 13, 11},
        {"origin length huge", n, 16, 0x80},
        {"origin empty", n, 13, 0},
        {"NUL in the origin", n, 19, 0},
        {"another destination", n, 31, 'x'},
        {"destination too long for its field", n, 27, 6},
    };
    struct buf st = BUF_INIT;
    struct queue_item head;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        memset(rec, 0, sizeof(rec));
        memcpy(rec, good, n);
        if (cases[i].off >= 0)
            rec[cases[i].off] = cases[i].val;
        assert_int_equal(put_raw(f->s, STORE_DB_QUEUE, key, klen, rec, cases[i].len), 0);
        int rc = queue_head(f->s, "m.org", &head, &st);
        if (rc != CH_EPROTO)
            fail_msg("%s: got %d", cases[i].what, rc);
        rc = retry(f->s, "m.org", 1, 500, "x", 1, 2, 3);
        if (rc != CH_EPROTO)
            fail_msg("%s: retry got %d", cases[i].what, rc);
        rc = dead(f->s, "m.org", 1, 1, 400, "x", NULL, 0, NULL);
        if (rc != CH_EPROTO)
            fail_msg("%s: dead got %d", cases[i].what, rc);
    }
    /* Put back the good bytes: all is well again. */
    assert_int_equal(put_raw(f->s, STORE_DB_QUEUE, key, klen, good, n), 0);
    buf_reset(&st);
    assert_int_equal(queue_head(f->s, "m.org", &head, &st), 0);
    assert_item(&head, &t.it);
    check_consistent(f->s, true);

    /* A malformed head of the same size is dropped by done; its stale index entry does not make
     * the same transaction a duplicate afterwards. */
    memcpy(rec, good, n);
    rec[0] = 9;
    assert_int_equal(put_raw(f->s, STORE_DB_QUEUE, key, klen, rec, n), 0);
    assert_int_equal(done(f->s, "m.org", 1), 0);
    assert_totals(f->s, 0, 0, 0);
    assert_int_equal(entries(f->s, STORE_DB_TXNS), 1); /* stale */
    check_consistent(f->s, false);
    uint64_t seq;
    bool dup;
    assert_int_equal(put(f->s, &t.it, NULL, &seq, &dup), 0);
    assert_false(dup);
    assert_int_equal(seq, 2);
    check_consistent(f->s, true);
    /* Done removes it and its (rewritten) index entry. */
    assert_int_equal(done(f->s, "m.org", 2), 0);
    check_consistent(f->s, true);

    /* An index entry pointing at another transaction's entry (a digest collision, or left
     * stale) does not make a new transaction a duplicate: the entry's fields decide. */
    struct tx other, fresh;
    tx_init(&other, "hs2.example", "m.org", "fresh-1", "{}", 8); /* only the origin differs */
    tx_init(&fresh, "hs.example", "m.org", "fresh-1", "{}", 9);
    assert_int_equal(put(f->s, &other.it, NULL, &seq, &dup), 0);
    assert_int_equal(seq, 3);
    uint8_t digest[32];
    const char in[] = "hs.example\0m.org\0fresh-1";
    crypto_generichash(digest, sizeof(digest), (const uint8_t *)in, sizeof(in) - 1, NULL, 0);
    assert_int_equal(put_raw(f->s, STORE_DB_TXNS, digest, 32, "\x03\0\0\0\0\0\0\0", 8), 0);
    assert_int_equal(put(f->s, &fresh.it, NULL, &seq, &dup), 0);
    assert_false(dup);
    assert_int_equal(seq, 4);
    /* An index value of the wrong size is no duplicate either. */
    assert_int_equal(put_raw(f->s, STORE_DB_TXNS, digest, 32, "\x04", 1), 0);
    assert_int_equal(put(f->s, &fresh.it, NULL, &seq, &dup), 0);
    assert_false(dup);
    assert_int_equal(seq, 5);
    assert_int_equal(done(f->s, "m.org", 4), 0); /* its index entry is 5's: left alone */
    assert_int_equal(put(f->s, &fresh.it, NULL, &seq, &dup), 0);
    assert_true(dup);
    assert_int_equal(seq, 5);
    check_consistent(f->s, true);

    /* A key under the destination's prefix that is not a seq is skipped, not an entry. */
    assert_int_equal(put_raw(f->s, STORE_DB_QUEUE, "m.org\0zz", 8, "junk", 4), 0);
    buf_reset(&st);
    assert_int_equal(queue_head(f->s, "m.org", &head, &st), 0);
    assert_item(&head, &other.it);
    assert_int_equal(done(f->s, "m.org", 3), 0);
    assert_int_equal(done(f->s, "m.org", 5), 0);
    assert_int_equal(queue_head(f->s, "m.org", &head, &st), CH_ENOENT);
    buf_free(&st);
}

static void test_malformed_others(void **state)
{
    struct fix *f = *state;
    struct tx a, b;
    tx_init(&a, "hs.example", "a.org", "a-1", "{}", 1);
    tx_init(&b, "hs.example", "b.org", "b-1", "{}", 2);
    assert_int_equal(put(f->s, &a.it, NULL, NULL, NULL), 0);
    assert_int_equal(put(f->s, &b.it, NULL, NULL, NULL), 0);

    /* A destination record: short, trailing bytes, bad version, an over-long error. */
    uint8_t good[128], rec[160];
    size_t len;
    assert_int_equal(get_raw(f->s, STORE_DB_DEST, "a.org", 5, good, sizeof(good), &len), 0);
    assert_int_equal(len, 69);
    const struct {
        size_t len;
        int off;
        uint8_t val;
    } cases[] = {{68, -1, 0}, {70, -1, 0}, {69, 0, 0}, {69, 65, 1}, {69, 66, 1}};
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        memset(rec, 0, sizeof(rec));
        memcpy(rec, good, 69);
        if (cases[i].off >= 0)
            rec[cases[i].off] = cases[i].val;
        assert_int_equal(put_raw(f->s, STORE_DB_DEST, "a.org", 5, rec, cases[i].len), 0);
        struct queue_dest d;
        assert_int_equal(queue_get_dest(f->s, "a.org", &d), CH_EPROTO);
        struct tx c;
        tx_init(&c, "hs.example", "a.org", "a-2", "{}", 3);
        assert_int_equal(put(f->s, &c.it, NULL, NULL, NULL), CH_EPROTO);
        assert_int_equal(done(f->s, "a.org", 1), CH_EPROTO);
        assert_int_equal(reset(f->s, "a.org"), CH_EPROTO);
        /* The listing goes on past it. */
        struct dests all = {0};
        assert_int_equal(queue_each_dest(f->s, dest_cb, &all), 0);
        assert_int_equal(all.n, 2);
        assert_int_equal(all.status[0], CH_EPROTO);
        assert_string_equal(all.d[0].name, "a.org");
        assert_int_equal(all.status[1], 0);
        assert_string_equal(all.d[1].name, "b.org");
        assert_int_equal(all.d[1].depth, 1);
        /* The sender hears about it too. */
        memset(&all, 0, sizeof(all));
        assert_int_equal(queue_due(f->s, 100, dest_cb, &all), 0);
        assert_int_equal(all.n, 2);
        assert_int_equal(all.status[0], CH_EPROTO);
    }
    assert_int_equal(put_raw(f->s, STORE_DB_DEST, "a.org", 5, good, 69), 0);
    check_consistent(f->s, true);

    /* A dead record. */
    uint64_t id;
    assert_int_equal(dead(f->s, "b.org", 1, 9, 400, "bad", "resp", 4, &id), 0);
    uint8_t dkey[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    uint8_t dgood[512];
    assert_int_equal(get_raw(f->s, STORE_DB_DEAD, dkey, 8, dgood, sizeof(dgood), &len), 0);
    size_t dn = len;
    assert_int_equal(dn, 13 + 4 + 3 + 4 + 4 + rec_size(&b.it));
    const struct {
        size_t len;
        int off;
        uint8_t val;
    } dcases[] = {{12, -1, 0},    {dn - 1, -1, 0}, {dn + 1, -1, 0}, {dn, 0, 7},
                  {dn, 13, 0xff}, {dn, 20, 0xff},  {dn, 15, 1},     {dn, 28, 2}};
    uint8_t drec[512];
    for (size_t i = 0; i < ARRAY_LEN(dcases); i++) {
        memset(drec, 0, sizeof(drec));
        memcpy(drec, dgood, dn);
        if (dcases[i].off >= 0)
            drec[dcases[i].off] = dcases[i].val;
        assert_int_equal(put_raw(f->s, STORE_DB_DEAD, dkey, 8, drec, dcases[i].len), 0);
        struct buf st = BUF_INIT;
        struct queue_dead dd;
        int rc = queue_get_dead(f->s, 1, &dd, &st);
        if (rc != CH_EPROTO)
            fail_msg("dead case %zu: got %d", i, rc);
        assert_int_equal(requeue(f->s, 1, NULL, 5, NULL), CH_EPROTO);
        struct deads all = {0};
        assert_int_equal(queue_each_dead(f->s, dead_cb, &all), 0);
        assert_int_equal(all.n, 1);
        assert_int_equal(all.status[0], CH_EPROTO);
        assert_int_equal(all.d[0].id, 1);
        buf_free(&st);
    }
    /* A malformed one can still be deleted. */
    assert_int_equal(delete_dead(f->s, 1), 0);

    /* meta totals of the wrong size. */
    assert_int_equal(put_raw(f->s, STORE_DB_META, "queue_bytes", 11, "abc", 3), 0);
    struct queue_totals tot;
    assert_int_equal(queue_totals(f->s, &tot), CH_EPROTO);
    struct tx c;
    tx_init(&c, "hs.example", "a.org", "a-3", "{}", 3);
    assert_int_equal(put(f->s, &c.it, NULL, NULL, NULL), CH_EPROTO);
}

/* ------------------------------------------------------------------------------------------ */
/* Restart and a full map.                                                                     */

static void test_restart(void **state)
{
    struct fix *f = *state;
    struct tx t[4];
    const char *ids[4] = {"r1", "r2", "r3", "r4"};
    const char *dests[4] = {"p.org", "q.org", "p.org", "q.org"};
    for (size_t i = 0; i < 4; i++) {
        tx_init(&t[i], "hs.example", dests[i], ids[i], "{\"pdus\":[]}", 100 + i);
        assert_int_equal(put(f->s, &t[i].it, NULL, NULL, NULL), 0);
    }
    assert_int_equal(retry(f->s, "p.org", 1, 500, "500 Internal", 200, 5200, 5000), 0);
    uint64_t id;
    assert_int_equal(dead(f->s, "q.org", 1, 300, 401, "M_UNAUTHORIZED", "{}", 2, &id), 0);
    struct queue_dest before = get_dest(f->s, "p.org");

    store_close(f->s);
    f->s = NULL;
    assert_int_equal(open_at(f, 0), 0);

    assert_totals(f->s, rec_size(&t[0].it) + rec_size(&t[2].it) + rec_size(&t[3].it), 3, 1);
    check_consistent(f->s, true);
    struct queue_dest after = get_dest(f->s, "p.org");
    assert_memory_equal(&after, &before, sizeof(after));
    assert_int_equal(after.failures, 1);
    assert_int_equal(after.next_attempt_ms, 5200);
    struct buf st = BUF_INIT;
    struct queue_item head;
    assert_int_equal(queue_head(f->s, "p.org", &head, &st), 0);
    assert_item(&head, &t[0].it);
    assert_int_equal(head.attempts, 1);
    buf_reset(&st);
    assert_int_equal(queue_head(f->s, "q.org", &head, &st), 0);
    assert_item(&head, &t[3].it);
    assert_int_equal(head.seq, 2);
    struct queue_dead dd;
    buf_reset(&st);
    assert_int_equal(queue_get_dead(f->s, 1, &dd, &st), 0);
    assert_item(&dd.item, &t[1].it);
    assert_int_equal(dd.status, 401);
    /* Dedupe and the sequences carry on. */
    bool dup;
    uint64_t seq;
    assert_int_equal(put(f->s, &t[2].it, NULL, &seq, &dup), 0);
    assert_true(dup);
    assert_int_equal(seq, 2);
    assert_int_equal(put(f->s, &t[1].it, NULL, &seq, &dup), 0);
    assert_false(dup);
    assert_int_equal(seq, 3);
    assert_int_equal(dead(f->s, "q.org", 3, 400, 400, "again", NULL, 0, &id), 0);
    assert_int_equal(id, 2);
    check_consistent(f->s, true);
    buf_free(&st);
}

static void test_map_full(void **state)
{
    struct fix *f = *state;
    static char body[16384];
    memset(body, 'b', sizeof(body) - 1);
    struct tx *t = calloc(100, sizeof(*t));
    char(*ids)[16] = calloc(100, 16);
    assert_non_null(t);
    assert_non_null(ids);
    size_t n = 0;
    int rc = 0;
    for (; n < 100; n++) {
        snprintf(ids[n], 16, "big-%03zu", n); /* one size for all */
        tx_init(&t[n], "hs.example", n % 2 ? "one.org" : "two.org", ids[n], body, n);
        rc = put(f->s, &t[n].it, NULL, NULL, NULL);
        if (rc != 0)
            break;
    }
    /* 768 KiB usable, 20 KiB an entry: somewhere in the thirties. */
    assert_int_equal(rc, CH_ETOOBIG);
    assert_true(n >= 20 && n < 40);
    uint64_t size = rec_size(&t[0].it);
    assert_totals(f->s, n * size, n, 0);
    check_consistent(f->s, true);
    /* Nothing of the refused one: not a duplicate, no destination change. */
    struct queue_dest d = get_dest(f->s, n % 2 ? "one.org" : "two.org");
    assert_int_equal(d.next_seq, n / 2 + 1);
    assert_int_equal(put(f->s, &t[n].it, NULL, NULL, NULL), CH_ETOOBIG);

    /* Deliveries free the space (deletes may use the reserve). */
    for (uint64_t seq = 1; seq <= 3; seq++) {
        assert_int_equal(done(f->s, "two.org", seq), 0);
        assert_int_equal(done(f->s, "one.org", seq), 0);
    }
    check_consistent(f->s, true);
    uint64_t seq;
    bool dup;
    assert_int_equal(put(f->s, &t[n].it, NULL, &seq, &dup), 0);
    assert_false(dup);
    assert_int_equal(seq, n / 2 + 1);
    assert_totals(f->s, (n - 6 + 1) * size, n - 6 + 1, 0);
    check_consistent(f->s, true);
    free(ids);
    free(t);
}

/* ------------------------------------------------------------------------------------------ */
/* Group commit: many puts in one batch, each in its own nested transaction.                   */

struct gate {
    atomic_int entered, open;
    size_t done; /* loop thread: its completion ran */
};

/* Holds the writer inside its batch until opened (at most 10 s). */
static int gate_fn(MDB_txn *txn, struct store *s, void *ud)
{
    (void)txn, (void)s;
    struct gate *g = ud;
    atomic_store(&g->entered, 1);
    for (int i = 0; i < 10000 && !atomic_load(&g->open); i++)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    return 0;
}

struct bput {
    struct op o;
    int rc;
    size_t *ndone;
};

static void bput_done(void *ud, int rc)
{
    struct bput *b = ud;
    b->rc = rc;
    (*b->ndone)++;
}

static void gate_done(void *ud, int rc)
{
    struct gate *g = ud;
    assert_int_equal(rc, 0);
    g->done++;
}

static void on_watchdog(uv_timer_t *timer)
{
    *(bool *)timer->data = true;
}

static void test_group_commit(void **state)
{
    struct fix *f = *state;
    uv_loop_t loop;
    uv_timer_t timer;
    struct store_port port;
    bool timed_out = false;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uv_timer_init(&loop, &timer), 0);
    assert_int_equal(store_port_init(&port, &loop), 0);
    timer.data = &timed_out;

    enum { N = 40 };
    struct tx *t = calloc(N, sizeof(*t));
    struct bput *b = calloc(N + 1, sizeof(*b));
    char(*ids)[16] = calloc(N, 16);
    assert_non_null(t);
    assert_non_null(b);
    assert_non_null(ids);
    /* The writer is held inside a first batch while the puts are submitted: they all go into
     * the next one. */
    struct gate g = {0};
    size_t ndone = 0;
    assert_int_equal(store_submit(f->s, &port, gate_fn, gate_done, &g), 0);
    for (int i = 0; i < 10000 && !atomic_load(&g.entered); i++)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    assert_true(atomic_load(&g.entered));

    for (size_t i = 0; i <= N; i++) {
        size_t j = i < N ? i : 7; /* the last one repeats the 8th, in the same batch */
        if (i < N) {
            snprintf(ids[i], 16, "g-%02zu", i);
            tx_init(&t[i], "hs.example", i % 2 ? "g1.org" : "g2.org", ids[i], "{}", i);
        }
        b[i].o = (struct op){.kind = OP_PUT, .it = &t[j].it};
        b[i].ndone = &ndone;
        assert_int_equal(store_submit(f->s, &port, op_fn, bput_done, &b[i]), 0);
    }
    atomic_store(&g.open, 1);
    uv_timer_start(&timer, on_watchdog, 10000, 0);
    while ((ndone < N + 1 || g.done < 1) && !timed_out)
        uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&timer);
    assert_false(timed_out);

    for (size_t i = 0; i < N; i++) {
        assert_int_equal(b[i].rc, 0);
        assert_false(b[i].o.dup);
        assert_int_equal(b[i].o.seq, i / 2 + 1); /* submission order is FIFO order */
    }
    assert_int_equal(b[N].rc, 0);
    assert_true(b[N].o.dup);
    assert_int_equal(b[N].o.seq, 4);
    struct store_stats stats;
    store_get_stats(f->s, &stats);
    assert_int_equal(stats.requests, N + 2);
    assert_int_equal(stats.failed, 0);
    assert_int_equal(stats.batches, 2); /* the gate's, then every put in one */
    assert_int_equal(stats.max_batch, N + 1);
    check_consistent(f->s, true);
    assert_totals(f->s, N * rec_size(&t[0].it), N, 0);

    store_port_close(&port, NULL);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    free(ids);
    free(b);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fifo_per_destination, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove_middle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedupe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_caps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_dead_requeue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_requeue_duplicate_and_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_others, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
