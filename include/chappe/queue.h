/* queue.h -- the durable outbound transaction queue: per-destination FIFOs of federation
 * transactions stored as they will be sent, their delivery state, and the dead letters. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_QUEUE_H
#define CHAPPE_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "chappe/buf.h"
#include "chappe/store.h"

/*
 * What the queue keeps (see queue.c for the byte layouts):
 *   `queue`: destination "\0" seq (u64 big-endian) -> one transaction, as it will be sent.
 *            seq increases per destination: a cursor walks a destination's FIFO in order.
 *   `dest`:  destination -> its depth, bytes, next seq and delivery state (backoff...). It
 *            stays when the queue empties: its backoff state still matters.
 *   `txns`:  BLAKE2b-256(origin "\0" destination "\0" txnId) -> seq, the dedupe index of the
 *            queued entries (removed when an entry leaves the queue).
 *   `dead`:  id (u64 big-endian) -> a transaction given up on, with the reason.
 *   `meta`:  "queue_bytes", "queue_count" (totals over `queue`), "dead_seq" (last dead id).
 * Every change updates all of them in the same transaction.
 *
 * The *_txn functions run inside a store_write_fn and depend only on the
 * transaction and their arguments (a write may be run twice). They return 0,
 * a chappe code, or an mdb_* error as it is (MDB_MAP_FULL, MDB_TXN_FULL...):
 * return it from the store_write_fn unchanged, the store translates it and
 * relies on seeing MDB_TXN_FULL. A failed *_txn may have written part of its
 * work: its store_write_fn must fail too, which discards all of it.
 *
 * The other functions read in a transaction of their own on the calling
 * thread (loop threads too) and return chappe codes. A stored record that
 * cannot be decoded is refused with CH_EPROTO, never guessed at.
 */

#define QUEUE_NAME_MAX   263   /* origin, destination: a 255-byte host, brackets, ":65535" */
#define QUEUE_FIELD_MAX  16384 /* txnId, method, path, Authorization, Content-Type */
#define QUEUE_ERROR_MAX  255   /* a destination's last error, a dead entry's reason */
#define QUEUE_RESP_MAX   4096  /* the response body kept with a dead entry */
#define QUEUE_DIGEST_LEN 32    /* a `txns` key */

/*
 * One transaction. Every field is a byte string; on output each one is
 * followed by a NUL that len does not count (base may be used as a C
 * string). origin, destination, txn_id, method and path are non-empty;
 * origin and destination at most QUEUE_NAME_MAX bytes, the other text fields
 * at most QUEUE_FIELD_MAX; no text field holds a NUL. authorization and
 * content_type may be empty; body may hold any bytes (at most UINT32_MAX).
 */
struct queue_item {
    struct slice origin;        /* the sending homeserver's server name */
    struct slice destination;   /* the server name it is sent to */
    struct slice txn_id;        /* from the path, the dedupe key with origin and destination */
    struct slice method;        /* "PUT" */
    struct slice path;          /* origin-form, exactly as signed */
    struct slice authorization; /* the Authorization value, as the homeserver signed it */
    struct slice content_type;
    struct slice body;
    uint64_t first_seen_ms; /* wall clock when it was acknowledged (or requeued) */
    uint32_t attempts;      /* failed deliveries so far */
    uint64_t seq;           /* its place in its destination's queue (from 1) */
};

/* Limits on enqueuing, in bytes of stored records (a record is about 45 bytes plus its
 * fields); 0 means unlimited. */
struct queue_caps {
    uint64_t max_bytes;      /* the whole queue */
    uint64_t dest_max_bytes; /* one destination */
};

/* A destination's state. */
struct queue_dest {
    char name[QUEUE_NAME_MAX + 1];
    uint64_t depth;                       /* queued entries */
    uint64_t bytes;                       /* their stored size */
    uint64_t next_seq;                    /* the seq the next entry gets */
    uint64_t oldest_seq;                  /* the head's seq; next_seq when empty */
    uint64_t oldest_first_seen_ms;        /* the head's first_seen_ms; 0 when empty or unreadable */
    uint64_t next_attempt_ms;             /* not before this (wall clock); 0: now */
    uint64_t backoff_ms;                  /* the current backoff, for computing the next one */
    uint64_t last_attempt_ms;             /* when the last failed (or refused) attempt ended */
    uint32_t failures;                    /* consecutive failed attempts; 0 after a success */
    int last_status;                      /* HTTP status of the last failure; 0: none received */
    char last_error[QUEUE_ERROR_MAX + 1]; /* what the last failure was, "" if none */
};

/* A dead entry: the transaction and why it was given up on. */
struct queue_dead {
    uint64_t id;
    struct queue_item item; /* seq is 0; attempts as they were when it died */
    uint64_t died_ms;
    int status;            /* the refusing response's status; 0 when none (expiry) */
    struct slice reason;   /* at most QUEUE_ERROR_MAX bytes */
    struct slice response; /* the response body, truncated to QUEUE_RESP_MAX bytes */
};

/* Global totals. */
struct queue_totals {
    uint64_t bytes; /* stored size of every queued entry */
    uint64_t count; /* queued entries */
    uint64_t dead;  /* dead entries */
};

/*
 * Enqueue *it at the tail of its destination, inside a store_write_fn (seq_out
 * and duplicate are required). The bytes are copied: it may point anywhere.
 * it->seq and it->attempts are ignored (a new entry has 0 attempts);
 * first_seen_ms is stored as given. The same (origin, destination, txn_id)
 * already queued: *duplicate = true, *seq_out = its seq, 0, nothing written.
 * Else, when adding it would pass caps->max_bytes or caps->dest_max_bytes
 * (caps NULL: no limit): CH_EAGAIN, nothing written (answer 503 with
 * Retry-After; an entry larger than a cap alone never fits, so the caps must
 * be above the largest body accepted). Else 0, *duplicate = false and
 * *seq_out = the new entry's seq. CH_EINVAL for a field missing, too long or
 * holding a NUL; CH_EPROTO for a malformed destination or meta record; mdb
 * errors as they are.
 */
int queue_put_txn(MDB_txn *txn, const struct store *s, const struct queue_item *it,
                  const struct queue_caps *caps, uint64_t *seq_out, bool *duplicate);

/*
 * The oldest entry of dest into *out: its strings (body included) are
 * appended to storage (owned by the caller, who may reset it between calls)
 * and out's slices point there, valid until storage is next changed.
 * 0, CH_ENOENT when the queue of dest is empty, CH_EPROTO when the head's
 * record is malformed (drop it with queue_done_txn), CH_EINVAL (bad name),
 * CH_ENOMEM, CH_EIO.
 */
int queue_head(struct store *s, const char *dest, struct queue_item *out, struct buf *storage);

/*
 * Entry seq of dest was delivered: delete it and its dedupe entry, update
 * dest (depth, bytes, oldest; failures, backoff_ms, next_attempt_ms back to
 * 0) and the totals, inside a store_write_fn. An entry whose record cannot
 * be decoded is removed the same way (the way to drop it). 0, CH_ENOENT (no
 * such entry), CH_EINVAL, CH_EPROTO (dest or meta record malformed), or mdb
 * errors as they are.
 */
int queue_done_txn(MDB_txn *txn, const struct store *s, const char *dest, uint64_t seq);

/*
 * A delivery of entry seq of dest failed (429, 5xx, timeout, connection):
 * the entry's attempts + 1; dest's failures + 1, last_status = status (0:
 * no response), last_error = error (NULL: "", truncated to QUEUE_ERROR_MAX
 * bytes at a UTF-8 boundary), last_attempt_ms = now_ms, next_attempt_ms and
 * backoff_ms as given (the caller computes the backoff). Inside a
 * store_write_fn. 0, CH_ENOENT, CH_EINVAL, CH_EPROTO, CH_ENOMEM, mdb errors.
 */
int queue_retry_txn(MDB_txn *txn, const struct store *s, const char *dest, uint64_t seq, int status,
                    const char *error, uint64_t now_ms, uint64_t next_attempt_ms,
                    uint64_t backoff_ms);

/*
 * Give up on entry seq of dest: move it to `dead` with died_ms = now_ms,
 * status, reason (NULL: "", truncated like error above) and the first
 * QUEUE_RESP_MAX bytes of resp (resp_len bytes; may be NULL when 0), remove
 * its dedupe entry, update dest and the totals; *dead_id (may be NULL) = the
 * new id. With status != 0 the destination answered, so it is up: its
 * failures, backoff_ms and next_attempt_ms go back to 0 and last_status,
 * last_error (reason) and last_attempt_ms record this answer; with status 0
 * (max_age expiry) its delivery state is left as it is. Inside a
 * store_write_fn. 0, CH_ENOENT, CH_EINVAL, CH_EPROTO (the entry cannot be
 * decoded: drop it with queue_done_txn), CH_ENOMEM, mdb errors.
 */
int queue_dead_txn(MDB_txn *txn, const struct store *s, const char *dest, uint64_t seq,
                   uint64_t now_ms, int status, const char *reason, const void *resp,
                   size_t resp_len, uint64_t *dead_id);

/*
 * Put dead entry id back at the tail of its destination's queue with
 * attempts 0 and first_seen_ms = now_ms (a fresh max_age), and delete the
 * dead entry; *seq_out (may be NULL) = its new seq. When the same
 * transaction is queued again meanwhile, only the dead entry is deleted and
 * *seq_out is the queued one's seq. Inside a store_write_fn. 0, CH_EAGAIN
 * (caps as for queue_put_txn: nothing written), CH_ENOENT (no such id),
 * CH_EPROTO, CH_ENOMEM, mdb errors.
 */
int queue_requeue_dead_txn(MDB_txn *txn, const struct store *s, uint64_t id,
                           const struct queue_caps *caps, uint64_t now_ms, uint64_t *seq_out);

/* Delete dead entry id, inside a store_write_fn. 0, CH_ENOENT, or mdb errors as they are. */
int queue_delete_dead_txn(MDB_txn *txn, const struct store *s, uint64_t id);

/*
 * The destination is up again (a verified request from it, or an operator
 * asked): failures, backoff_ms and next_attempt_ms back to 0, inside a
 * store_write_fn. 0, CH_ENOENT (no such destination), CH_EINVAL, CH_EPROTO,
 * mdb errors.
 */
int queue_reset_backoff_txn(MDB_txn *txn, const struct store *s, const char *dest);

/* The state of dest into *out. 0, CH_ENOENT, CH_EINVAL, CH_EPROTO, CH_EIO. */
int queue_get_dest(struct store *s, const char *dest, struct queue_dest *out);

/*
 * Called for each destination, in bytewise name order. status 0: d is
 * complete; CH_EPROTO: its record (or name) is malformed and only d->name is
 * meaningful, as far as it could be read. Return 0 to go on, anything else
 * to stop (the walk returns it). Runs inside a read transaction: be quick,
 * do not write.
 */
typedef int (*queue_dest_fn)(void *ud, const struct queue_dest *d, int status);

/* Walk every destination (for the admin view and `chappe queue list`). 0 when the walk ended,
 * the callback's non-zero return, or CH_EIO. */
int queue_each_dest(struct store *s, queue_dest_fn fn, void *ud);

/*
 * Walk the destinations with something to send now: depth > 0 and
 * next_attempt_ms <= now_ms (for the sender, at start-up and on its timer),
 * and the malformed ones (status CH_EPROTO), so that they get noticed.
 * Returns like queue_each_dest.
 */
int queue_due(struct store *s, uint64_t now_ms, queue_dest_fn fn, void *ud);

/*
 * Called for each dead entry, by increasing id. status 0: d is complete, but
 * for d->item.body: base NULL, len its size; the strings are valid during the
 * call only. CH_EPROTO: the record is malformed, only d->id is meaningful.
 * Return 0 to go on, anything else to stop. Runs inside a read transaction.
 */
typedef int (*queue_dead_fn)(void *ud, const struct queue_dead *d, int status);

/* Walk the dead entries. 0 when the walk ended, the callback's non-zero return, CH_ENOMEM, or
 * CH_EIO. */
int queue_each_dead(struct store *s, queue_dead_fn fn, void *ud);

/*
 * Called for each entry of one destination, in FIFO order. status 0: it is
 * complete but for it->body: base NULL, len its size; the strings are valid
 * during the call only. CH_EPROTO: the record is malformed, only it->seq is
 * meaningful. Return 0 to go on, anything else to stop. Runs inside a read
 * transaction: be quick, do not write.
 */
typedef int (*queue_entry_fn)(void *ud, const struct queue_item *it, int status);

/* Walk the entries of dest (for `chappe queue show`). 0 when the walk ended (nothing queued or
 * no such destination included), the callback's non-zero return, CH_EINVAL (bad name),
 * CH_ENOMEM, or CH_EIO. */
int queue_each_entry(struct store *s, const char *dest, queue_entry_fn fn, void *ud);

/*
 * Dead entry id into *out, body included, strings appended to storage as for
 * queue_head. 0, CH_ENOENT, CH_EPROTO, CH_ENOMEM, CH_EIO.
 */
int queue_get_dead(struct store *s, uint64_t id, struct queue_dead *out, struct buf *storage);

/* The global totals (for /metrics and the 503 decision's log). 0, CH_EPROTO, CH_EIO. */
int queue_totals(struct store *s, struct queue_totals *out);

#endif
