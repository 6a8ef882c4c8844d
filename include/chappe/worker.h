/* worker.h -- event-loop threads: listeners, connections, pools, reload and drain. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_WORKER_H
#define CHAPPE_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <uv.h>

#include "chappe/config.h"
#include "chappe/keyfetch.h"
#include "chappe/store.h"
#include "chappe/tls.h"

struct client;
struct conn;
struct dns;
struct egress_secrets;
struct resolve;
struct sender;
struct mint;
struct mint_cache;
struct mint;
struct mint_cache;
struct keys_own;
struct store;
struct upstream_pool;

/* A connection accepted by one worker for another. */
struct handover {
    int fd;
    size_t listener; /* index into the receiving worker's listeners (same layout everywhere) */
};

/* One bound socket of a configured listener, opened by the main thread for one worker. */
struct listener {
    uv_tcp_t tcp;
    struct worker *w;
    const struct cfg_listener *cfg;
    const struct cfg_addr *addr;
    int fd; /* SO_REUSEPORT socket, handed to the loop with uv_tcp_open */
};

/* Intrusive doubly linked list node. */
struct link {
    struct link *prev, *next;
};

#define WORKER_READ_BUF (64 * 1024)

struct worker {
    unsigned id;
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t async; /* messages from the main thread */
    uv_timer_t drain_timer;
    const struct config *cfg;    /* immutable while the worker runs */
    const struct keys_own *keys; /* the relay's signing keys, read-only */
    struct trust *trust;         /* names, addresses, pins, notaries: swapped on SIGHUP */
    struct store *store;         /* the LMDB environment: read transactions on this loop */
    struct store_port sport;     /* and where this loop's writes come back */
    bool sport_open;
    struct sender *sender;     /* the queue's delivery thread (NULL without one) */
    struct mint *mint;         /* the egress CA (NULL without tls.egress_ca) */
    struct mint_cache *mints;  /* this loop's minted certificates (CONNECT interception) */
    struct keyfetch *keyfetch; /* where unknown keys are asked for */
    const struct egress_secrets *egress_secrets; /* the homeservers' egress secrets */
    struct dns *dns; /* the outbound stack of the egress (NULL without one) */
    struct client *cl;
    struct resolve *res;
    struct keyfetch_mbox kbox; /* and where the answers arrive */
    struct tls_server *tls;    /* current server context; connections hold their own reference */
    struct listener *listeners;
    size_t nlisteners;
    struct link conns; /* every open client connection */
    size_t nconns;
    struct upstream_pool *pools; /* one per homeserver */
    uv_sem_t started;            /* posted once the listeners are up (or failed) */
    int start_error;
    void (*on_exit)(struct worker *w);
    bool draining;
    bool stopped;                /* every handle is closing: the loop ends */
    char rdbuf[WORKER_READ_BUF]; /* socket reads land here first */

    /* Connection balancing: SO_REUSEPORT spreads connections by hash, which can leave one
     * loop with far more long-lived connections than another; a loop that is ahead hands
     * new ones to the least loaded sibling. load = open connections + handovers queued. */
    struct worker *siblings; /* the array of all workers, set by the main thread */
    unsigned nsiblings;
    _Atomic size_t load;
    bool open_for_handovers;    /* under lock: async initialised and not yet closed */
    struct handover *handovers; /* under lock: sockets handed to this worker */
    size_t nhandovers, caphandovers;

    /* Set by the main thread under lock, read in the async callback. */
    pthread_mutex_t lock;
    struct tls_material *pending_tls; /* one reference, or NULL */
    struct trust *pending_trust;      /* one reference, or NULL */
    bool pending_stop;
    bool pending_force;
};

/*
 * Open the listening sockets for every worker (SO_REUSEPORT, one socket per
 * worker and address), so that bind errors are reported at start-up.
 * 0 or a negative code with a message logged.
 */
int worker_open_listeners(struct worker *ws, unsigned n, const struct config *cfg);
/* Start the thread of w with material m (a reference is taken). 0 or CH_EIO. */
int worker_start(struct worker *w, struct tls_material *m, void (*on_exit)(struct worker *));
/* Called from the main thread: hand a new certificate snapshot to w (a reference is taken). */
void worker_post_tls(struct worker *w, struct tls_material *m);
/* Called from the main thread: hand a new trust snapshot to w (a reference is taken). */
void worker_post_trust(struct worker *w, struct trust *t);
/* Called from the main thread: stop accepting and drain (force: close everything now). */
void worker_post_stop(struct worker *w, bool force);
/* Join the thread and free what worker_open_listeners and worker_start made. */
void worker_join(struct worker *w);

/* Worker-thread side, for connections. */
void worker_conn_add(struct worker *w, struct conn *c);
void worker_conn_remove(struct worker *w, struct conn *c);
/* A connection finished its last exchange while draining: lets the worker end. */
void worker_maybe_finish(struct worker *w);

#endif
