/* sender.h -- delivers the queued transactions: one thread with its own loop, resolver and
 * outbound client, reading the queue from the store and writing its outcomes back. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_SENDER_H
#define CHAPPE_SENDER_H

#include <stdint.h>

#include "chappe/buf.h"
#include "chappe/config.h"
#include "chappe/store.h"
#include "chappe/trust.h"

/*
 * Each destination is a FIFO with at most one transaction in flight; at most
 * queue.max_in_flight deliveries run at once over all destinations. The
 * outcome of a delivery is written to the store before the next one starts:
 *   2xx                        -> done (removed);
 *   400, 401, 403, 404, 413 and any other 4xx but 408 and 429
 *                              -> dead, with the status and the response body;
 *   429                        -> retried after the answer's retry_after_ms
 *                                 (or the backoff when it gives none);
 *   408, 5xx, timeouts, connection errors, a destination the policy refuses
 *                              -> retried with exponential backoff and jitter
 *                                 (queue.retry: min, multiplier, max; x0.8-1.4).
 * A transaction older than queue.max_age goes to dead ("expired"). The queue
 * is walked at start-up and every second, so what was queued before a crash
 * or written by `chappe queue` tools is found without being told.
 */
struct sender;

/*
 * Start the sender thread with trust snapshot t (a reference is taken) and
 * the store s (must outlive the sender). 0 and *out, or a negative code with
 * err.
 */
int sender_start(const struct config *cfg, struct trust *t, struct store *s, struct sender **out,
                 struct buf *err);
/* From any thread: a new trust snapshot for the deliveries that start from now on. */
void sender_set_trust(struct sender *sd, struct trust *t);
/* From any thread: dest has something new to send (a transaction was queued or requeued, or its
 * backoff was reset in the store): look at it now rather than at the next walk. */
void sender_kick(struct sender *sd, const char *dest);
/*
 * From any thread, cheap enough for every verified inbound request: dest
 * showed it is up. When dest is backing off, its backoff is reset in the
 * store and it is tried at once.
 */
void sender_peer_up(struct sender *sd, const char *dest);
/* Main thread, once every loop that kicks has stopped: end the deliveries in flight (they stay
 * queued, to be sent again on the next start) and join the thread. NULL is a no-op. */
void sender_stop(struct sender *sd);

/* Counters since start (for /metrics and tests). */
struct sender_stats {
    uint64_t attempts;    /* deliveries started */
    uint64_t delivered;   /* 2xx: removed from the queue */
    uint64_t retried;     /* 408, 429, 5xx, timeouts, connection errors, refused by policy */
    uint64_t dead;        /* permanent 4xx: moved to dead */
    uint64_t expired;     /* older than max_age: moved to dead */
    uint64_t in_flight;   /* deliveries running now */
    uint64_t backing_off; /* destinations waiting for their next attempt */
};
void sender_get_stats(struct sender *sd, struct sender_stats *out);

/* The next backoff after one of backoff_ms (0: none yet), with jitter in [0.8, 1.4) from
 * rnd in [0, 1): min, then x multiplier, capped at max. Exposed for unit tests. */
uint64_t sender_next_backoff(const struct config *cfg, uint64_t backoff_ms, double rnd,
                             uint64_t *base_out);

#endif
