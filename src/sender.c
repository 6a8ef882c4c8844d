/* sender.c -- the queue's deliveries: per-destination FIFOs, one transaction in flight per
 * destination, outcomes written to the store before the next attempt. */
/* SPDX-License-Identifier: ISC */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "chappe/client.h"
#include "chappe/dns.h"
#include "chappe/log.h"
#include "chappe/queue.h"
#include "chappe/resolve.h"
#include "chappe/sender.h"
#include "chappe/util.h"

#define WALK_MS        500         /* how often the queue is walked for due destinations */
#define RESP_KEEP      (64 * 1024) /* response bytes read (a dead entry keeps QUEUE_RESP_MAX) */
#define STORE_RETRY_MS 1000        /* an outcome that could not be written: try again after */

/* A destination the sender has met. Kept for the life of the sender (a few hundred bytes each;
 * the destinations are the allowlisted servers). */
struct sd_dest {
    struct sd_dest *next;
    struct sender *sd;
    char name[QUEUE_NAME_MAX + 1];
    bool busy;           /* a delivery or its outcome's write is in flight */
    bool resetting;      /* a backoff reset is being written */
    bool backing_off;    /* counted in sd->backing_off */
    uint64_t hold_until; /* monotonic: no attempt before (an outcome that could not be written) */
    /* the delivery in flight */
    struct resolve_request *rq;
    struct queue_item it;
    struct buf storage; /* it's strings */
    struct buf headers;
    struct buf resp;
    int status;
};

/* A message from another thread. */
struct sd_msg {
    struct sd_msg *next;
    bool peer_up; /* else a kick */
    char name[QUEUE_NAME_MAX + 1];
};

struct sender {
    const struct config *cfg;
    struct store *store;
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t async;
    uv_timer_t walk;
    struct store_port port;
    struct dns *dns;
    struct client *cl;
    struct resolve *res;
    struct trust *trust; /* loop thread */
    struct sd_dest *dests;
    uint64_t nflight;
    bool stopping;

    pthread_mutex_t lock;
    struct sd_msg *inbox, *inbox_tail; /* under lock */
    struct trust *pending_trust;       /* under lock */
    bool pending_stop;                 /* under lock */

    _Atomic uint64_t attempts, delivered, retried, dead, expired, in_flight, backing_off;
};

static void count(_Atomic uint64_t *c, int64_t d)
{
    atomic_fetch_add_explicit(c, (uint64_t)d, memory_order_relaxed);
}

uint64_t sender_next_backoff(const struct config *cfg, uint64_t backoff_ms, double rnd,
                             uint64_t *base_out)
{
    double base = backoff_ms == 0 ? (double)cfg->queue.retry_min_ms
                                  : (double)backoff_ms * cfg->queue.retry_multiplier;
    if (base > (double)cfg->queue.retry_max_ms)
        base = (double)cfg->queue.retry_max_ms;
    if (base < (double)cfg->queue.retry_min_ms)
        base = (double)cfg->queue.retry_min_ms;
    *base_out = (uint64_t)base;
    return (uint64_t)(base * (0.8 + 0.6 * rnd));
}

static struct sd_dest *find_dest(struct sender *sd, const char *name, bool create)
{
    for (struct sd_dest *d = sd->dests; d != NULL; d = d->next)
        if (strcmp(d->name, name) == 0)
            return d;
    if (!create || strlen(name) > QUEUE_NAME_MAX)
        return NULL;
    struct sd_dest *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->sd = sd;
    snprintf(d->name, sizeof(d->name), "%s", name);
    d->next = sd->dests;
    sd->dests = d;
    return d;
}

static void set_backing_off(struct sd_dest *d, bool on)
{
    if (d->backing_off != on)
        count(&d->sd->backing_off, on ? 1 : -1);
    d->backing_off = on;
}

static void try_start(struct sd_dest *d);
static void walk(struct sender *sd);

/* --- outcomes, written on the store's writer thread ----------------------------------- */

enum outcome_kind { OUT_DONE, OUT_RETRY, OUT_DEAD, OUT_DROP, OUT_RESET };

struct outcome {
    struct sd_dest *d;
    enum outcome_kind kind;
    uint64_t seq;
    int status;
    uint64_t now, next_attempt, backoff;
    char error[QUEUE_ERROR_MAX + 1];
    char *resp; /* OUT_DEAD: the response body */
    size_t resp_len;
};

static int write_outcome(MDB_txn *txn, struct store *s, void *ud)
{
    struct outcome *o = ud;
    switch (o->kind) {
    case OUT_DONE:
    case OUT_DROP:
        return queue_done_txn(txn, s, o->d->name, o->seq);
    case OUT_RETRY:
        return queue_retry_txn(txn, s, o->d->name, o->seq, o->status, o->error, o->now,
                               o->next_attempt, o->backoff);
    case OUT_DEAD:
        return queue_dead_txn(txn, s, o->d->name, o->seq, o->now, o->status, o->error, o->resp,
                              o->resp_len, NULL);
    case OUT_RESET:
        return queue_reset_backoff_txn(txn, s, o->d->name);
    }
    return CH_EINVAL;
}

static void outcome_done(void *ud, int rc)
{
    struct outcome *o = ud;
    struct sd_dest *d = o->d;
    struct sender *sd = d->sd;
    if (o->kind == OUT_RESET) {
        d->resetting = false;
        if (rc == 0) {
            set_backing_off(d, false);
            d->hold_until = 0;
            log_info("sender: %s is up again: backoff reset", d->name);
        }
    } else {
        d->busy = false;
        sd->nflight--;
        count(&sd->in_flight, -1);
        if (rc != 0 && rc != CH_ENOENT) {
            /* the entry stays queued as it was: it is attempted again, later */
            log_error("sender: %s: the outcome of entry %" PRIu64 " could not be stored: %s",
                      d->name, o->seq, util_strerror(rc));
            d->hold_until = util_mono_ms() + STORE_RETRY_MS;
        } else if (o->kind == OUT_RETRY) {
            set_backing_off(d, true);
        } else if (o->kind != OUT_DEAD || o->status != 0) {
            set_backing_off(d, false); /* it answered (an expiry says nothing about that) */
        }
    }
    free(o->resp);
    free(o);
    if (sd->stopping)
        return;
    try_start(d);
    if (sd->nflight + 1 == sd->cfg->queue.max_in_flight)
        walk(sd); /* a slot freed up: others may have been waiting for one */
}

static void submit_outcome(struct sd_dest *d, struct outcome *o)
{
    o->d = d;
    if (store_submit(d->sd->store, &d->sd->port, write_outcome, outcome_done, o) < 0) {
        /* the store is closing (we are stopping): the entry stays queued */
        if (o->kind != OUT_RESET) {
            d->busy = false;
            d->sd->nflight--;
            count(&d->sd->in_flight, -1);
        } else {
            d->resetting = false;
        }
        free(o->resp);
        free(o);
    }
}

static struct outcome *new_outcome(struct sd_dest *d, enum outcome_kind kind)
{
    struct outcome *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    o->kind = kind;
    o->seq = d->it.seq;
    o->now = util_wall_ms();
    return o;
}

/* The delivery ended (or could not start): record it. */
static void finish(struct sd_dest *d, enum outcome_kind kind, int status, const char *error)
{
    d->rq = NULL;
    struct outcome *o = new_outcome(d, kind);
    if (o == NULL) {
        d->busy = false;
        d->sd->nflight--;
        count(&d->sd->in_flight, -1);
        d->hold_until = util_mono_ms() + STORE_RETRY_MS;
        return;
    }
    o->status = status;
    snprintf(o->error, sizeof(o->error), "%s", error ? error : "");
    if (kind == OUT_RETRY) {
        struct queue_dest qd;
        uint64_t prev = queue_get_dest(d->sd->store, d->name, &qd) == 0 ? qd.backoff_ms : 0;
        uint64_t wait = sender_next_backoff(
            d->sd->cfg, prev, randombytes_uniform(1u << 30) / (double)(1u << 30), &o->backoff);
        if (status == 429) {
            /* the server said how long: keep the backoff as it was */
            json_t *j = json_loadb(buf_data(&d->resp), d->resp.len, 0, NULL);
            json_t *ra = json_object_get(j, "retry_after_ms");
            if (json_is_integer(ra) && json_integer_value(ra) >= 0) {
                wait = (uint64_t)json_integer_value(ra);
                if (wait > d->sd->cfg->queue.retry_max_ms)
                    wait = d->sd->cfg->queue.retry_max_ms;
                o->backoff = prev;
            }
            json_decref(j);
        }
        o->next_attempt = o->now + wait;
        count(&d->sd->retried, 1);
        log_info("sender: %s: txn %s not delivered (%s); next attempt in %" PRIu64 " ms", d->name,
                 d->it.txn_id.base, o->error, wait);
    } else if (kind == OUT_DEAD) {
        size_t n = d->resp.len < QUEUE_RESP_MAX ? d->resp.len : QUEUE_RESP_MAX;
        if (n > 0 && (o->resp = malloc(n)) != NULL) {
            memcpy(o->resp, buf_data(&d->resp), n);
            o->resp_len = n;
        }
        count(status ? &d->sd->dead : &d->sd->expired, 1);
        log_warn("sender: %s: txn %s moved to dead: %s", d->name, d->it.txn_id.base, o->error);
    } else if (kind == OUT_DONE) {
        count(&d->sd->delivered, 1);
    }
    submit_outcome(d, o);
}

/* --- the delivery ---------------------------------------------------------------------- */

static int rs_head(void *ud, const struct http_msg *resp)
{
    struct sd_dest *d = ud;
    d->status = resp->status;
    return 0;
}

static int rs_body(void *ud, const char *p, size_t n)
{
    struct sd_dest *d = ud;
    if (d->resp.len >= RESP_KEEP)
        return 0;
    if (n > RESP_KEEP - d->resp.len)
        n = RESP_KEEP - d->resp.len;
    return buf_append(&d->resp, p, n);
}

static bool permanent(int status)
{
    return status >= 400 && status < 500 && status != 408 && status != 429;
}

static void rs_complete(void *ud)
{
    struct sd_dest *d = ud;
    char why[QUEUE_ERROR_MAX + 1];
    int st = d->status;
    /* the reason: the errcode and error of a Matrix error, else the status alone */
    json_t *j = json_loadb(buf_data(&d->resp), d->resp.len, 0, NULL);
    const char *ec = json_string_value(json_object_get(j, "errcode"));
    const char *er = json_string_value(json_object_get(j, "error"));
    snprintf(why, sizeof(why), "HTTP %d%s%s%s%s", st, ec ? " " : "", ec ? ec : "", er ? ": " : "",
             er ? er : "");
    json_decref(j);
    if (st >= 200 && st < 300)
        finish(d, OUT_DONE, st, NULL);
    else if (permanent(st))
        finish(d, OUT_DEAD, st, why);
    else
        finish(d, OUT_RETRY, st, why);
}

static void rs_error(void *ud, int err, const char *why, bool sent)
{
    struct sd_dest *d = ud;
    char e[QUEUE_ERROR_MAX + 1];
    (void)sent;
    snprintf(e, sizeof(e), "%s: %s", util_strerror(err), why);
    finish(d, OUT_RETRY, d->status, e);
}

static const struct client_handler rs_handler = {
    .on_head = rs_head,
    .on_body = rs_body,
    .on_complete = rs_complete,
    .on_error = rs_error,
};

/* Send d's head entry, when it is due and a slot is free. */
static void try_start(struct sd_dest *d)
{
    struct sender *sd = d->sd;
    if (d->busy || sd->stopping || sd->nflight >= sd->cfg->queue.max_in_flight ||
        util_mono_ms() < d->hold_until)
        return;
    struct queue_dest qd;
    uint64_t now = util_wall_ms();
    if (queue_get_dest(sd->store, d->name, &qd) != 0 || qd.depth == 0)
        return;
    if (qd.next_attempt_ms > now) {
        set_backing_off(d, true);
        return;
    }
    buf_reset(&d->storage);
    int rc = queue_head(sd->store, d->name, &d->it, &d->storage);
    if (rc == CH_ENOENT)
        return;
    d->busy = true;
    sd->nflight++;
    count(&sd->in_flight, 1);
    if (rc == CH_EPROTO) {
        log_error("sender: %s: the queue's head entry %" PRIu64 " cannot be decoded: dropped",
                  d->name, qd.oldest_seq);
        d->it.seq = qd.oldest_seq;
        finish(d, OUT_DROP, 0, NULL);
        return;
    }
    if (rc < 0) {
        log_error("sender: %s: cannot read the queue: %s", d->name, util_strerror(rc));
        d->busy = false;
        sd->nflight--;
        count(&sd->in_flight, -1);
        d->hold_until = util_mono_ms() + STORE_RETRY_MS;
        return;
    }
    if (now > d->it.first_seen_ms && now - d->it.first_seen_ms > sd->cfg->queue.max_age_ms) {
        char why[QUEUE_ERROR_MAX + 1], age[32];
        util_format_duration_ms(sd->cfg->queue.max_age_ms, age, sizeof(age));
        snprintf(why, sizeof(why),
                 "expired: not delivered within max_age %s (%" PRIu32 " attempts)", age,
                 d->it.attempts);
        finish(d, OUT_DEAD, 0, why);
        return;
    }
    buf_reset(&d->headers);
    buf_reset(&d->resp);
    d->status = 0;
    if (d->it.authorization.len)
        buf_appendf(&d->headers, "Authorization: %s\r\n", d->it.authorization.base);
    if (d->it.content_type.len)
        buf_appendf(&d->headers, "Content-Type: %s\r\n", d->it.content_type.base);
    buf_append(&d->headers, "", 1); /* NUL-terminated */
    struct client_request req = {.method = d->it.method.base,
                                 .target = d->it.path.base,
                                 .headers = buf_data(&d->headers),
                                 .body = d->it.body.base ? d->it.body.base : "",
                                 .body_len = d->it.body.len};
    count(&sd->attempts, 1);
    d->rq = resolve_request(sd->res, d->name, &req, &rs_handler, NULL, d);
    if (d->rq == NULL)
        finish(d, OUT_RETRY, 0, "out of memory");
}

/* --- walking the queue ----------------------------------------------------------------- */

struct due {
    char (*names)[QUEUE_NAME_MAX + 1];
    size_t n, cap;
};

static int collect(void *ud, const struct queue_dest *qd, int status)
{
    struct due *due = ud;
    if (status != 0)
        return 0; /* a malformed destination record: queue tools show it */
    if (due->n == due->cap) {
        size_t cap = due->cap ? due->cap * 2 : 16;
        void *p = realloc(due->names, cap * sizeof(*due->names));
        if (p == NULL)
            return 0;
        due->names = p;
        due->cap = cap;
    }
    memcpy(due->names[due->n++], qd->name, sizeof(qd->name));
    return 0;
}

static void walk(struct sender *sd)
{
    struct due due = {0};
    if (queue_due(sd->store, util_wall_ms(), collect, &due) < 0)
        log_error("sender: cannot walk the queue in %s", store_path(sd->store));
    for (size_t i = 0; i < due.n && sd->nflight < sd->cfg->queue.max_in_flight; i++) {
        struct sd_dest *d = find_dest(sd, due.names[i], true);
        if (d != NULL)
            try_start(d);
    }
    free(due.names);
}

static void on_walk(uv_timer_t *t)
{
    walk(t->data);
}

/* At start: which destinations are backing off (for sender_peer_up's fast path). */
static int seed(void *ud, const struct queue_dest *qd, int status)
{
    struct sender *sd = ud;
    if (status == 0 && qd->depth > 0 && qd->failures > 0) {
        struct sd_dest *d = find_dest(sd, qd->name, true);
        if (d != NULL)
            set_backing_off(d, true);
    }
    return 0;
}

/* --- messages and the thread ----------------------------------------------------------- */

static void peer_up(struct sender *sd, const char *name)
{
    struct sd_dest *d = find_dest(sd, name, false);
    if (d == NULL || !d->backing_off || d->resetting)
        return;
    struct outcome *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return;
    o->kind = OUT_RESET;
    d->resetting = true;
    submit_outcome(d, o);
}

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

static void close_all(struct sender *sd)
{
    for (struct sd_dest *d = sd->dests; d != NULL; d = d->next) {
        if (d->rq != NULL) {
            resolve_request_abort(d->rq); /* the entry stays queued: sent again next start */
            d->rq = NULL;
            d->busy = false;
            sd->nflight--;
            count(&sd->in_flight, -1);
        }
    }
    uv_close((uv_handle_t *)&sd->async, close_cb);
    uv_close((uv_handle_t *)&sd->walk, close_cb);
    store_port_close(&sd->port, NULL);
    resolve_free(sd->res);
    client_free(sd->cl);
    dns_free(sd->dns);
    sd->res = NULL;
    sd->cl = NULL;
    sd->dns = NULL;
}

static void on_async(uv_async_t *a)
{
    struct sender *sd = a->data;
    pthread_mutex_lock(&sd->lock);
    struct sd_msg *m = sd->inbox;
    sd->inbox = sd->inbox_tail = NULL;
    struct trust *t = sd->pending_trust;
    sd->pending_trust = NULL;
    bool stop = sd->pending_stop;
    pthread_mutex_unlock(&sd->lock);
    if (t != NULL) {
        trust_unref(sd->trust);
        sd->trust = t;
        if (sd->cl != NULL)
            client_set_policy(sd->cl, t->pol);
    }
    while (m != NULL) {
        struct sd_msg *next = m->next;
        if (!sd->stopping) {
            if (m->peer_up) {
                peer_up(sd, m->name);
            } else {
                struct sd_dest *d = find_dest(sd, m->name, true);
                if (d != NULL)
                    try_start(d);
            }
        }
        free(m);
        m = next;
    }
    if (stop && !sd->stopping) {
        sd->stopping = true;
        close_all(sd);
    }
}

static void *thread_main(void *arg)
{
    struct sender *sd = arg;
    uv_run(&sd->loop, UV_RUN_DEFAULT);
    return NULL;
}

int sender_start(const struct config *cfg, struct trust *t, struct store *s, struct sender **out,
                 struct buf *err)
{
    struct sender *sd = calloc(1, sizeof(*sd));
    if (sd == NULL)
        return CH_ENOMEM;
    sd->cfg = cfg;
    sd->store = s;
    sd->trust = t;
    trust_ref(t);
    pthread_mutex_init(&sd->lock, NULL);
    int rc = CH_EIO;
    if (uv_loop_init(&sd->loop) < 0)
        goto fail_loop;
    if ((rc = dns_new(&sd->loop, cfg, &sd->dns, err)) < 0 ||
        (rc = client_new(&sd->loop, cfg, t->pol, &sd->cl, err)) < 0 ||
        (rc = resolve_new(&sd->loop, cfg, sd->cl, sd->dns, &sd->res)) < 0 ||
        (rc = store_port_init(&sd->port, &sd->loop)) < 0)
        goto fail;
    uv_async_init(&sd->loop, &sd->async, on_async);
    sd->async.data = sd;
    uv_timer_init(&sd->loop, &sd->walk);
    sd->walk.data = sd;
    queue_each_dest(s, seed, sd);
    uv_timer_start(&sd->walk, on_walk, 0, WALK_MS); /* the first walk resumes the queue */
    if (pthread_create(&sd->thread, NULL, thread_main, sd) != 0) {
        rc = CH_EIO;
        sd->stopping = true;
        close_all(sd);
        uv_run(&sd->loop, UV_RUN_DEFAULT);
        goto fail_closed;
    }
    *out = sd;
    return 0;
fail:
    if (sd->res)
        resolve_free(sd->res);
    if (sd->cl)
        client_free(sd->cl);
    if (sd->dns)
        dns_free(sd->dns);
    uv_run(&sd->loop, UV_RUN_DEFAULT);
fail_closed:
    uv_loop_close(&sd->loop);
fail_loop:
    while (sd->dests != NULL) {
        struct sd_dest *d = sd->dests;
        sd->dests = d->next;
        free(d);
    }
    trust_unref(sd->trust);
    pthread_mutex_destroy(&sd->lock);
    free(sd);
    if (err->len == 0)
        buf_appendf(err, "sender: %s", util_strerror(rc));
    return rc;
}

void sender_set_trust(struct sender *sd, struct trust *t)
{
    trust_ref(t);
    pthread_mutex_lock(&sd->lock);
    if (sd->pending_trust)
        trust_unref(sd->pending_trust);
    sd->pending_trust = t;
    uv_async_send(&sd->async);
    pthread_mutex_unlock(&sd->lock);
}

static void post(struct sender *sd, const char *dest, bool is_peer_up)
{
    if (sd == NULL || strlen(dest) > QUEUE_NAME_MAX)
        return;
    struct sd_msg *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return; /* the next walk finds it */
    m->peer_up = is_peer_up;
    snprintf(m->name, sizeof(m->name), "%s", dest);
    pthread_mutex_lock(&sd->lock);
    if (sd->pending_stop) {
        pthread_mutex_unlock(&sd->lock);
        free(m);
        return;
    }
    if (sd->inbox_tail)
        sd->inbox_tail->next = m;
    else
        sd->inbox = m;
    sd->inbox_tail = m;
    uv_async_send(&sd->async);
    pthread_mutex_unlock(&sd->lock);
}

void sender_kick(struct sender *sd, const char *dest)
{
    post(sd, dest, false);
}

void sender_peer_up(struct sender *sd, const char *dest)
{
    /* the usual case, nothing backing off, costs one atomic load */
    if (sd == NULL || atomic_load_explicit(&sd->backing_off, memory_order_relaxed) == 0)
        return;
    struct queue_dest qd;
    if (queue_get_dest(sd->store, dest, &qd) != 0 || qd.failures == 0)
        return;
    post(sd, dest, true);
}

void sender_stop(struct sender *sd)
{
    if (sd == NULL)
        return;
    pthread_mutex_lock(&sd->lock);
    sd->pending_stop = true;
    uv_async_send(&sd->async);
    pthread_mutex_unlock(&sd->lock);
    pthread_join(sd->thread, NULL);
    uv_loop_close(&sd->loop);
    for (struct sd_msg *m = sd->inbox; m != NULL;) {
        struct sd_msg *next = m->next;
        free(m);
        m = next;
    }
    while (sd->dests != NULL) {
        struct sd_dest *d = sd->dests;
        sd->dests = d->next;
        buf_free(&d->storage);
        buf_free(&d->headers);
        buf_free(&d->resp);
        free(d);
    }
    trust_unref(sd->pending_trust);
    trust_unref(sd->trust);
    pthread_mutex_destroy(&sd->lock);
    free(sd);
}

void sender_get_stats(struct sender *sd, struct sender_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (sd == NULL)
        return;
    out->attempts = atomic_load_explicit(&sd->attempts, memory_order_relaxed);
    out->delivered = atomic_load_explicit(&sd->delivered, memory_order_relaxed);
    out->retried = atomic_load_explicit(&sd->retried, memory_order_relaxed);
    out->dead = atomic_load_explicit(&sd->dead, memory_order_relaxed);
    out->expired = atomic_load_explicit(&sd->expired, memory_order_relaxed);
    out->in_flight = atomic_load_explicit(&sd->in_flight, memory_order_relaxed);
    out->backing_off = atomic_load_explicit(&sd->backing_off, memory_order_relaxed);
}
