/* upstream.h -- plain-HTTP connections to the fronted homeservers, pooled per worker. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_UPSTREAM_H
#define CHAPPE_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "chappe/buf.h"
#include "chappe/config.h"
#include "chappe/http.h"
#include "chappe/worker.h"

struct upstream;

/* The exchange using an upstream connection hears about it through these. */
struct upstream_handler {
    /* Connected (or reused): queued output is being sent. */
    void (*on_connected)(struct upstream *u, void *ud);
    /* Response head parsed (1xx heads are skipped). Return 1 if it has no body (HEAD), <0 to abort.
     */
    int (*on_head)(struct upstream *u, void *ud, struct http_msg *msg);
    /* Response body bytes (de-chunked). */
    int (*on_body)(struct upstream *u, void *ud, const char *p, size_t n);
    /* Response complete. The exchange then calls upstream_release. */
    void (*on_complete)(struct upstream *u, void *ud);
    /* One read from the upstream was processed: a good moment to flush what it produced. */
    void (*on_batch)(struct upstream *u, void *ud);
    /* The output queue fell below the low-water mark. */
    void (*on_writable)(struct upstream *u, void *ud);
    /*
     * Failure: err is CH_EIO (connect refused, reset), CH_ETIMEOUT (connect or
     * response timeout), CH_EPROTO (invalid response framing), CH_EEOF (closed
     * early). retryable is true when the request could be sent again on a new
     * connection (a reused connection failed before any response byte). The
     * connection is gone afterwards.
     */
    void (*on_error)(struct upstream *u, void *ud, int err, const char *why, bool retryable);
};

/* Idle connections to one homeserver's upstream, on one worker. */
struct upstream_pool {
    struct worker *w;
    const struct cfg_homeserver *hs;
    struct link idle;
    size_t nidle;
    uint64_t connects; /* connections opened, for stats */
};

void upstream_pool_init(struct upstream_pool *p, struct worker *w, const struct cfg_homeserver *hs);
/* Close every idle connection (drain, shutdown). */
void upstream_pool_close(struct upstream_pool *p);

/*
 * Get a connection for one exchange: an idle pooled one, or a new one being
 * connected. The caller queues the request with upstream_out()/upstream_flush()
 * at once (it is sent when connected). head_only_response tells the parser the
 * request is HEAD. Returns NULL on allocation failure.
 */
struct upstream *upstream_get(struct upstream_pool *p, const struct upstream_handler *h, void *ud,
                              bool head_request);
struct buf *upstream_out(struct upstream *u);
void upstream_flush(struct upstream *u);
size_t upstream_pending(const struct upstream *u);
void upstream_pause_read(struct upstream *u);
void upstream_resume_read(struct upstream *u);
/* True if the connection was taken from the pool (a stale one may fail at once). */
bool upstream_reused(const struct upstream *u);
/*
 * End the exchange: keep the connection in the pool if reusable (response
 * complete and keep-alive, request fully sent), else close it. No callbacks
 * after this.
 */
void upstream_release(struct upstream *u, bool request_complete);
/* Abort: close now, no callbacks after this. */
void upstream_abort(struct upstream *u);

#endif
