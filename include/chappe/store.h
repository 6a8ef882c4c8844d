/* store.h -- the LMDB environment: named databases, schema version, and one writer thread that
 * group-commits the writes of every event loop. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_STORE_H
#define CHAPPE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>
#include <pthread.h>
#include <uv.h>

#include "chappe/buf.h"

/* The on-disk layout this chappe reads and writes; `meta` "schema" holds it (little-endian u32). */
#define STORE_SCHEMA_VERSION 1u

/* The named databases of the environment, all created by store_open. */
enum store_db {
    STORE_DB_META = 0, /* "schema" -> u32 */
    STORE_DB_KEYS,     /* remote servers' verify keys (keystore.h) */
    STORE_DB_KEYDOCS,  /* remote servers' latest signed key documents (keystore.h) */
    STORE_DB_QUEUE,    /* outbound transactions (queue) */
    STORE_DB_DEST,     /* per-destination delivery state (queue) */
    STORE_DB_DEAD,     /* transactions given up on (queue) */
    STORE_DB_TXNS,     /* (origin, destination, txnId) -> queued entry: the dedupe index (queue) */
    STORE_DB_COUNT
};

/* store_open flags. */
#define STORE_F_EXCLUSIVE 0x1u /* hold <dir>/chappe.lock: one daemon per directory */

struct store;

/*
 * Open (creating when missing, mode 0700, parents too) the environment in the
 * directory path: durable commits (every commit is synced before it returns),
 * map_size bytes of map (the most the data file can grow to; 0 keeps the size
 * the environment already has, which is what CLI tools should pass; a size
 * below what the file already holds is raised to it by LMDB), every named
 * database created, the schema version written or checked (in one
 * transaction: an environment of another schema is left untouched), stale
 * reader slots of dead processes cleared, and the writer thread started.
 * With STORE_F_EXCLUSIVE a second process (or a second store in this process)
 * opening the directory exclusively is refused, while non-exclusive opens (CLI
 * tools reading the queue) still work. LMDB forbids opening one environment
 * twice in the same process: never do so.
 *
 * 0 and *out (free with store_close), or a negative code with a one-line
 * reason naming path appended to err: CH_EPERM (permission denied), CH_EINVAL
 * (not a directory, not an LMDB environment, schema version mismatch such as
 * "var/queue: schema version 2, this chappe knows 1"), CH_EEXIST (lock held by
 * another chappe), CH_ENOMEM, CH_EIO.
 */
int store_open(const char *path, uint64_t map_size, unsigned flags, struct store **out,
               struct buf *err);

/*
 * Stop accepting submissions (store_submit returns CH_EAGAIN from then on),
 * let the writer run every batch already submitted (their completions are
 * still posted to their ports, to be delivered when those loops run: a port
 * must outlive its requests, which store_port_close guarantees), join the
 * writer and close the environment. It waits for the disk: call it from the
 * main thread, once no loop submits any more. No read transaction may be open
 * and no thread may call into s afterwards. NULL is a no-op.
 */
void store_close(struct store *s);

/* The environment, for read transactions and mdb_* calls inside a store_write_fn. */
MDB_env *store_env(const struct store *s);
/* The handle of one named database (valid for the life of s, in every transaction). */
MDB_dbi store_dbi(const struct store *s, enum store_db db);
/* The directory the environment lives in, as given to store_open. */
const char *store_path(const struct store *s);

/*
 * Translate an mdb_* result (or a chappe code, passed through) into chappe's
 * codes: 0, MDB_NOTFOUND -> CH_ENOENT, MDB_KEYEXIST -> CH_EEXIST,
 * MDB_MAP_FULL and MDB_TXN_FULL -> CH_ETOOBIG, MDB_BAD_VALSIZE -> CH_EINVAL
 * (empty or over-long key), ENOMEM -> CH_ENOMEM, anything else -> CH_EIO.
 */
int store_err(int rc);

/*
 * Begin a read-only transaction on the calling thread (loop threads too: it
 * never blocks on the writer). 0, or a chappe code. End it with
 * mdb_txn_abort; keep it short (an open reader pins the pages it sees).
 */
int store_read_begin(struct store *s, MDB_txn **out);

/*
 * A write, run on the writer thread inside a transaction of its own nested in
 * the batch's: everything it does is committed with the batch, or nothing when
 * it fails. Return 0, a chappe code, or the result of an mdb_* call as it is
 * (translated by store_err; MDB_MAP_FULL becomes CH_ETOOBIG).
 *
 * Full map: the last 1/32 of the map (at least 64 pages) is a reserve. A write
 * that leaves more pages in use than before and more than map minus reserve
 * fails with CH_ETOOBIG and leaves nothing behind; a write that does not grow
 * the data (a delete, a move) may use the reserve, so a full store can always
 * be emptied. LMDB's own MDB_MAP_FULL (pages pinned by long readers, a batch
 * whose commit does not fit) gives CH_ETOOBIG the same way.
 *
 * fn may be run a second time, in a fresh transaction, when its batch's commit
 * fails with the map full (each request of that batch is then retried alone),
 * so it must depend only on the transaction and on ud, and change nothing
 * outside the transaction. It must not block on anything but LMDB, and must
 * not call store_submit, store_write_now or store_close.
 */
typedef int (*store_write_fn)(MDB_txn *txn, struct store *s, void *ud);

/*
 * Called on the port's loop once the write's batch was committed (rc 0: the
 * data is on disk) or not: rc is then the request's own error, CH_ETOOBIG
 * (the map is full: nothing of this request was written; deleting data makes
 * room again), or CH_EIO (the commit failed: nothing of the batch was written).
 */
typedef void (*store_done_fn)(void *ud, int rc);

/*
 * A completion port: how finished writes come back to one event loop (a
 * uv_async_t and a mutex-protected list of finished requests). Embed one per
 * loop; the fields are private. The port keeps its loop alive only while
 * requests submitted through it are in flight.
 */
struct store_req;
struct store_port {
    uv_async_t async;
    pthread_mutex_t lock;
    struct store_req *head, *tail; /* under lock: finished, to deliver */
    size_t inflight;               /* loop thread: submitted, done not yet run */
    bool closing;                  /* loop thread: store_port_close was called */
    bool closed;                   /* loop thread: the handle is closing */
    void (*on_closed)(struct store_port *p);
};

/* Initialise p on loop (call on the loop's thread). 0 or CH_EIO. */
int store_port_init(struct store_port *p, uv_loop_t *loop);
/*
 * Stop accepting submissions through p (store_submit returns CH_EINVAL). The
 * requests still in flight complete as usual: their done runs on the loop,
 * which must keep running until then. Once the last one has run, the handle
 * is closed and on_closed (when not NULL) runs on the loop: p's memory may be
 * released from then on (or after uv_run has returned with nothing left).
 * Call on the loop's thread, once.
 */
void store_port_close(struct store_port *p, void (*on_closed)(struct store_port *p));

/*
 * Queue a write: fn runs on the writer thread in the next batch, then done(ud,
 * rc) runs exactly once on port's loop, never from inside this call. Call on
 * port's loop thread. Every request pending when the writer wakes goes into
 * one transaction with one durable commit (group commit); a batch too large
 * for one LMDB transaction (MDB_TXN_FULL) is cut in two, in order. Requests
 * run in submission order (per port, and across ports as they reach the lock).
 *
 * 0, or (and then neither fn nor done ever runs) CH_EAGAIN when the store is
 * closing, CH_EINVAL when the port is closing, CH_ENOMEM.
 */
int store_submit(struct store *s, struct store_port *port, store_write_fn fn, store_done_fn done,
                 void *ud);

/* Group commit on (the default) or off: one durable commit per request, for comparing the two
 * (queue.group_commit: false). Any thread. */
void store_set_group_commit(struct store *s, bool on);

/*
 * Run fn in a write transaction of its own on the calling thread and commit
 * it durably (for CLI tools and start-up). It blocks on the disk and on the
 * writer: never call it on an event-loop thread. 0 or fn's error / the
 * commit's, translated like a request's rc.
 */
int store_write_now(struct store *s, store_write_fn fn, void *ud);

/* Writer statistics since store_open (for /metrics and tests). */
struct store_stats {
    uint64_t batches;       /* commits attempted (retrying alone adds one per request retried) */
    uint64_t requests;      /* requests run (a retried request counts once) */
    uint64_t failed;        /* requests whose done got rc != 0 */
    uint64_t map_full;      /* of which CH_ETOOBIG */
    uint64_t commit_errors; /* commits that failed (map full or I/O) */
    uint64_t max_batch;     /* most requests in one batch */
};

void store_get_stats(struct store *s, struct store_stats *out);

/* Space, in bytes (for /metrics and `chappe queue` tools). */
struct store_usage {
    uint64_t used;  /* pages holding data now (free pages in the file not counted) */
    uint64_t limit; /* past this, a write that grows the data fails with CH_ETOOBIG */
    uint64_t map;   /* the map: limit plus the reserve kept for deletes */
    uint64_t file;  /* the data file's high-water mark (it never shrinks; freed pages are reused) */
};

/* Read the current usage (a read transaction on the calling thread). 0 or a chappe code. */
int store_usage(struct store *s, struct store_usage *out);

#endif
