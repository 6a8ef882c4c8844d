/* keyfetch.h -- remote servers' keys fetched for the daemon, on a thread of its own. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_KEYFETCH_H
#define CHAPPE_KEYFETCH_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "chappe/buf.h"
#include "chappe/keydoc.h"
#include "chappe/keystore.h"
#include "chappe/store.h"
#include "chappe/trust.h"

/*
 * The fetcher owns one event loop on one thread, with its own resolver and
 * outbound client (so every key server is reached through the policy), and
 * writes what it validated to the store's `keys` and `keydocs` databases.
 * Event loops never fetch: they ask the fetcher and are answered through a
 * mailbox on their own loop.
 *
 * A fetch of server S asks each trusted_key_servers notary in order (POST
 * /_matrix/key/v2/query: the notary's and S's signatures both checked), then
 * S itself (GET /_matrix/key/v2/server: S's signatures checked), and stores
 * the first valid document. There is at most one fetch of S in flight: asks
 * that arrive meanwhile wait for its result. Once it ended, S is not fetched
 * again for limits.key_refetch_interval (after a failure: that interval,
 * doubled at each further failure, up to an hour): asks in that window are
 * answered at once with CH_EAGAIN. A flood of requests signed with unknown
 * key ids therefore costs at most one fetch per server per interval.
 */
struct keyfetch;
struct keyfetch_wait;

/* Where a loop receives its answers: embed one per loop. Fields are private. */
struct keyfetch_mbox {
    uv_async_t async;
    pthread_mutex_t lock;
    struct keyfetch_wait *head, *tail; /* under lock: answered, to deliver */
    bool closed;                       /* under lock: answers are dropped */
};

/*
 * One ask, allocated by the asker (calloc), owned by the fetcher until it is
 * answered: done(w) then runs on the mailbox's loop and frees w (free). To
 * give up on it (the connection closed), set ud to NULL on the loop: the
 * answer is then freed unseen.
 */
struct keyfetch_wait {
    struct keyfetch_wait *next;
    struct keyfetch_mbox *box;
    void (*done)(struct keyfetch_wait *w);
    void *ud;
    char server[KEYSTORE_NAME_MAX + 1]; /* normalised server name */
    /* The answer: 0 (a document was fetched and stored: read the keys from the store),
     * CH_EAGAIN (fetched too recently to fetch again), or why the fetch failed. */
    int status;
    char why[512];
};

/* 0 or CH_EIO. Call on the loop's thread. */
int keyfetch_mbox_init(struct keyfetch_mbox *b, uv_loop_t *loop);
/* Stop receiving (answers still queued or to come are freed unseen) and close the handle. */
void keyfetch_mbox_close(struct keyfetch_mbox *b);

/*
 * Start the fetcher thread with trust snapshot t (a reference is taken) and
 * the store s (must outlive the fetcher). 0 and *out, or a negative code
 * with err.
 */
int keyfetch_start(const struct config *cfg, struct trust *t, struct store *s,
                   struct keyfetch **out, struct buf *err);
/* From any thread: a new trust snapshot for the fetches that start from now on. */
void keyfetch_set_trust(struct keyfetch *kf, struct trust *t);
/*
 * From any loop: ask for w->server's keys (w->box, done, ud and server set).
 * The answer always comes through the mailbox, never from inside this call.
 */
void keyfetch_ask(struct keyfetch *kf, struct keyfetch_wait *w);
/* From any thread: fetch server's keys in the background (a refresh), unless one is in flight
 * or the interval has not passed. Nobody is answered. */
void keyfetch_refresh(struct keyfetch *kf, const char *server);
/* Main thread, once every loop that asks has stopped: end the fetches and join the thread. */
void keyfetch_stop(struct keyfetch *kf);

/* Counters since start (for tests and metrics). */
struct keyfetch_stats {
    uint64_t fetches;  /* fetches started */
    uint64_t failures; /* fetches that ended without a stored document */
    uint64_t asks;     /* asks received */
    uint64_t refused;  /* asks answered CH_EAGAIN */
};
void keyfetch_get_stats(struct keyfetch *kf, struct keyfetch_stats *out);

/* A validated key document to store: every key of doc, then the document itself. */
struct keyfetch_doc_write {
    const struct keydoc *doc;
    const char *server;
    const char *notary; /* NULL: fetched directly from the server */
    uint64_t now;       /* fetched_at */
    struct slice json;  /* the document's bytes, stored as they are */
};
/* A store_write_fn for a struct keyfetch_doc_write (shared with `chappe keys fetch`). */
int keyfetch_write_doc(MDB_txn *txn, struct store *s, void *ud);

#endif
