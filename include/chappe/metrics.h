/* metrics.h -- the process-wide counters behind /metrics, and their Prometheus text exposition. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_METRICS_H
#define CHAPPE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chappe/buf.h"
#include "chappe/config.h"

struct keyfetch;
struct sender;
struct store;

/*
 * The counters are relaxed atomics, incremented from any thread (event
 * loops, the TLS code of the sender), read when /metrics is rendered. They
 * count since the process started.
 */

/* How an X-Matrix request authentication ended (chappe_xmatrix_verifications_total{result}). */
enum metrics_xmatrix {
    METRICS_XMATRIX_OK = 0,        /* "ok": the signature verified */
    METRICS_XMATRIX_MALFORMED,     /* "malformed": header missing or unreadable, origin not in
                                      its normal form, destination not the server addressed */
    METRICS_XMATRIX_UNKNOWN_KEY,   /* "unknown_key": not pinned, not known, expired, or old */
    METRICS_XMATRIX_BAD_SIGNATURE, /* "bad_signature": the key is known, the signature fails */
    METRICS_XMATRIX_COUNT
};

/* One request answered on a listener of type l with status (100..599; anything else, such as 0
 * for a request that got no answer, is counted as status "0"). */
void metrics_count_request(enum listener_type l, int status);
void metrics_count_xmatrix(enum metrics_xmatrix r);
/* One TLS handshake finished: server (a listener) or client (outbound) side, ok or failed. */
void metrics_count_tls_handshake(bool server, bool ok);
/* One upstream answer complete, ms after its request started (the upstream latency
 * histogram, buckets 5 ms .. 10 s). */
void metrics_observe_upstream_ms(uint64_t ms);

/* Current values, for tests. */
uint64_t metrics_requests(enum listener_type l, int status);
uint64_t metrics_xmatrix(enum metrics_xmatrix r);
uint64_t metrics_tls_handshakes(bool server, bool ok);
uint64_t metrics_upstream_count(void);

/* Where the gauges and the other modules' counters come from; any may be NULL (its families
 * are then left out, or show zero for the counters). */
struct metrics_sources {
    struct store *store;       /* the queue's gauges, chappe_store_* (a read transaction) */
    struct sender *sender;     /* chappe_deliveries_* */
    struct keyfetch *keyfetch; /* chappe_key_fetch* */
};

/*
 * Append the exposition (Prometheus text format 0.0.4: "# HELP" and "#
 * TYPE" for every family, then its samples) of every family to out: the
 * counters above, policy decisions (policy_counter), and what src gives.
 * Runs a few read transactions on the calling thread. 0, or CH_ENOMEM /
 * the store's error (out then holds a partial text: discard it).
 */
int metrics_render(struct buf *out, const struct metrics_sources *src);

/* Append s (n bytes) as a label value: \ " and newline escaped as \\ \" \n (text format 0.0.4),
 * without the quotes. 0 or CH_ENOMEM. */
int metrics_append_label_value(struct buf *out, const char *s, size_t n);

#endif
