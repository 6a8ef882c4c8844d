/* admin.c -- the admin listener: the queue's operator API (/_chappe/admin/...) and Prometheus
 * /metrics, for loopback peers and holders of the listener's bearer token. */
/* SPDX-License-Identifier: ISC */
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "chappe/admin.h"
#include "chappe/conn.h"
#include "chappe/http.h"
#include "chappe/log.h"
#include "chappe/metrics.h"
#include "chappe/queue.h"
#include "chappe/sender.h"
#include "chappe/store.h"
#include "chappe/util.h"

#define BODY_MAX     4096 /* the API's requests carry no body: a small one is read and ignored */
#define API_PREFIX   "/_chappe/admin/"
#define RETRY_AFTER  "Retry-After: 10\r\n" /* a full queue: the sender frees room */
#define CHALLENGE    "WWW-Authenticate: Bearer realm=\"chappe admin\"\r\n" /* RFC 6750 3 */
#define METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define JSON_TYPE    "application/json"

/* --- tokens ---------------------------------------------------------------------------- */

int admin_tokens_load(const struct config *cfg, struct admin_tokens *out, struct buf *err)
{
    int rc = 0;
    memset(out, 0, sizeof(*out));
    out->t = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*out->t));
    if (out->t == NULL)
        return CH_ENOMEM;
    out->n = cfg->nlisteners;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        if (l->type != LISTENER_ADMIN || l->token_path == NULL)
            continue;
        int r = util_read_secret_hash(l->token_path, "admin token", out->t[i].hash, err);
        if (r < 0)
            rc = r;
        else
            out->t[i].set = true;
    }
    if (rc < 0)
        admin_tokens_free(out);
    return rc;
}

void admin_tokens_free(struct admin_tokens *t)
{
    if (t->t != NULL)
        sodium_memzero(t->t, t->n * sizeof(*t->t));
    free(t->t);
    t->t = NULL;
    t->n = 0;
}

/*
 * The tokens, read on the first request that needs one and kept for the life
 * of the process (its configuration does not change while it runs: a new
 * token takes a restart). Process-wide because struct worker has no room for
 * the admin role's state, and reading the file for each request would cost a
 * file read per scrape.
 */
static struct {
    pthread_mutex_t lock;
    const struct config *cfg; /* what tokens were read for; NULL until then */
    struct admin_tokens tokens;
} cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The token hash of listener index i of cfg into hash: 1, 0 when it has none, or a negative
 * code when the file could not be read (logged; tried again on the next request). */
static int listener_token(const struct config *cfg, size_t i,
                          unsigned char hash[crypto_generichash_BYTES])
{
    if (i >= cfg->nlisteners || cfg->listeners[i].token_path == NULL)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&cache.lock);
    if (cache.cfg != cfg) {
        struct buf err = BUF_INIT;
        admin_tokens_free(&cache.tokens);
        rc = admin_tokens_load(cfg, &cache.tokens, &err);
        cache.cfg = rc == 0 ? cfg : NULL;
        if (rc < 0) {
            buf_trim_newlines(&err);
            log_error("admin: %.*s", (int)err.len, buf_data(&err));
        }
        buf_free(&err);
    }
    if (rc == 0 && i < cache.tokens.n && cache.tokens.t[i].set) {
        memcpy(hash, cache.tokens.t[i].hash, crypto_generichash_BYTES);
        rc = 1;
    }
    pthread_mutex_unlock(&cache.lock);
    return rc;
}

/* --- access ---------------------------------------------------------------------------- */

bool admin_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

enum admin_access admin_peer_allowed(const struct sockaddr *peer, const struct slice *authorization,
                                     const unsigned char *token_hash)
{
    bool local = peer != NULL && admin_is_loopback(peer);
    if (token_hash == NULL)
        return local ? ADMIN_ACCESS_OK : ADMIN_ACCESS_FORBIDDEN;
    if (authorization == NULL)
        return local ? ADMIN_ACCESS_OK : ADMIN_ACCESS_MISSING_TOKEN;
    /* RFC 6750 section 2.1: "Bearer" (a case-insensitive scheme, RFC 9110 section 11.1) */
    struct slice v = slice_trim_ows(*authorization);
    if (v.len <= 7 || strncasecmp(v.base, "Bearer ", 7) != 0)
        return ADMIN_ACCESS_BAD_TOKEN;
    struct slice tok = slice_trim_ows((struct slice){v.base + 7, v.len - 7});
    unsigned char h[crypto_generichash_BYTES];
    crypto_generichash(h, sizeof(h), (const unsigned char *)tok.base, tok.len, NULL, 0);
    return sodium_memcmp(h, token_hash, sizeof(h)) == 0 ? ADMIN_ACCESS_OK : ADMIN_ACCESS_BAD_TOKEN;
}

/* --- the connection -------------------------------------------------------------------- */

enum ad_state { AD_IDLE, AD_HEAD, AD_BODY, AD_WAIT, AD_CLOSED };

enum ad_op { OP_RETRY, OP_REQUEUE, OP_DELETE };

struct admin;

/* A write the API asked of the store. It owns what it needs: the connection may close while the
 * store runs it (the write still happens; nobody is answered). */
struct ad_write {
    struct admin *a; /* NULL once the connection closed */
    struct sender *sender;
    enum ad_op op;
    char dest[QUEUE_NAME_MAX + 1]; /* OP_RETRY: the destination; OP_REQUEUE: the entry's, or "" */
    uint64_t id;                   /* OP_REQUEUE, OP_DELETE: the dead entry */
    struct queue_caps caps;
    uint64_t now_ms;
    uint64_t seq; /* OP_REQUEUE: where it went */
};

struct admin {
    struct conn c; /* first: the handler callbacks find us with CONTAINER_OF */
    enum ad_state state;
    struct http_parser hp;
    struct buf head;     /* the request head: hp.msg slices point here */
    struct ad_write *wr; /* the store write this exchange waits for, or NULL */
    uint64_t t_start;
    uint64_t body_bytes; /* read and ignored */
    int status;
    bool close_after;
    bool req_done;
    bool in_process; /* process() is on the stack: do not re-enter it */
    char error[240];
};

static void process(struct admin *a);

static struct admin *ad_of(struct conn *c)
{
    return CONTAINER_OF(c, struct admin, c);
}

static const struct cfg_limits *limits(const struct admin *a)
{
    return &a->c.w->cfg->limits;
}

static void access_log(struct admin *a)
{
    struct buf b = BUF_INIT;
    const struct http_msg *m = &a->hp.msg;
    uint64_t now = util_wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    metrics_count_request(LISTENER_ADMIN, a->status);
    gmtime_r(&secs, &tm);
    buf_appendf(&b, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\",\"listener\":\"admin\"",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                (unsigned)(now % 1000));
    buf_append_str(&b, ",\"peer\":");
    http_append_json_string(&b, a->c.peer, strlen(a->c.peer));
    buf_appendf(&b, ",\"worker\":%u", a->c.w->id);
    buf_append_str(&b, ",\"method\":");
    http_append_json_string(&b, m->method.base ? m->method.base : "", m->method.len);
    buf_append_str(&b, ",\"path\":");
    http_append_json_string(&b, m->target.base ? m->target.base : "", m->target.len);
    buf_appendf(&b, ",\"status\":%d,\"duration_ms\":%" PRIu64, a->status,
                util_mono_ms() - a->t_start);
    if (a->error[0]) {
        buf_append_str(&b, ",\"error\":");
        http_append_json_string(&b, a->error, strlen(a->error));
    }
    buf_append_str(&b, "}");
    log_access(buf_data(&b), b.len);
    buf_free(&b);
}

static void reset_exchange(struct admin *a)
{
    a->status = 0;
    a->body_bytes = 0;
    a->close_after = a->req_done = false;
    a->error[0] = '\0';
}

static void finish_exchange(struct admin *a)
{
    struct conn *c = &a->c;
    access_log(a);
    bool close = a->close_after || !a->req_done || c->w->draining;
    reset_exchange(a);
    if (close) {
        a->state = AD_CLOSED;
        conn_set_timer(c, 0);
        conn_close_after_flush(c);
        return;
    }
    a->state = AD_IDLE;
    conn_flush(c);
    conn_set_timer(c, limits(a)->idle_timeout_ms);
    conn_resume_read(c);
    if (c->rbuf.len && !a->in_process)
        process(a);
}

/* Answer with a Matrix JSON error. close: the connection cannot carry another request. extra:
 * NULL or header lines ending in CRLF. */
static void reply_error(struct admin *a, int status, const char *errcode, bool close,
                        const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void reply_error(struct admin *a, int status, const char *errcode, bool close,
                        const char *extra, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->error, sizeof(a->error), fmt, ap);
    va_end(ap);
    a->status = status;
    if (close || a->c.w->draining || !a->hp.msg.keep_alive)
        a->close_after = true;
    struct buf *out = conn_out(&a->c);
    size_t start = out->len;
    if (http_error_response(out, status, errcode, a->error, a->close_after, extra) < 0) {
        a->close_after = true; /* out of memory: nothing was queued, the close says it */
    } else if (slice_eq_str(a->hp.msg.method, "HEAD")) {
        /* the head alone (RFC 9110 section 9.3.2): a body would be read as the next response */
        const char *end = memmem(buf_data(out) + start, out->len - start, "\r\n\r\n", 4);
        if (end != NULL)
            out->len = (size_t)(end + 4 - buf_data(out));
    }
    if (!close)
        a->req_done = true;
    finish_exchange(a);
}

/* Answer 200 with body (of type ctype); a HEAD request gets the head alone (RFC 9110 9.3.2). */
static void reply(struct admin *a, const char *ctype, const struct buf *body)
{
    struct buf *out = conn_out(&a->c);
    bool head = slice_eq_str(a->hp.msg.method, "HEAD");
    a->status = 200;
    if (!a->hp.msg.keep_alive || a->c.w->draining)
        a->close_after = true;
    size_t len = out->len;
    int rc = buf_appendf(out,
                         "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                         "Cache-Control: no-store\r\n%s\r\n",
                         ctype, body->len, a->close_after ? "Connection: close\r\n" : "");
    if (rc == 0 && !head)
        rc = buf_append(out, buf_data(body), body->len);
    if (rc < 0) {
        out->len = len;
        reply_error(a, 500, "M_UNKNOWN", false, NULL, "out of memory");
        return;
    }
    finish_exchange(a);
}

/* Answer with the JSON body b that the caller built, unless building it failed (rc); frees b. */
static void reply_json(struct admin *a, struct buf *body, int rc)
{
    if (rc == 0)
        reply(a, JSON_TYPE, body);
    else if (rc == CH_ENOMEM)
        reply_error(a, 500, "M_UNKNOWN", false, NULL, "out of memory");
    else
        reply_error(a, 500, "M_UNKNOWN", false, NULL, "the queue could not be read: %s",
                    util_strerror(rc));
    buf_free(body);
}

/* --- JSON pieces ------------------------------------------------------------------------ */

/* ,"name":"value" (or without the comma when first). */
static int json_str(struct buf *b, const char *name, const char *v, size_t n, bool first)
{
    if (buf_appendf(b, "%s\"%s\":", first ? "" : ",", name) < 0)
        return CH_ENOMEM;
    return http_append_json_string(b, v ? v : "", v ? n : 0);
}

static int json_u64(struct buf *b, const char *name, uint64_t v)
{
    return buf_appendf(b, ",\"%s\":%" PRIu64, name, v);
}

/* --- GET /_chappe/admin/queue -------------------------------------------------------------- */

struct list_walk {
    struct buf *b;
    uint64_t now;
    bool first;
};

static int dest_json(void *ud, const struct queue_dest *d, int status)
{
    struct list_walk *lw = ud;
    struct buf *b = lw->b;
    int rc = buf_append_str(b, lw->first ? "{" : ",{");
    lw->first = false;
    rc = rc ? rc : json_str(b, "destination", d->name, strlen(d->name), true);
    if (status != 0)
        return rc ? rc : buf_append_str(b, ",\"malformed\":true}");
    uint64_t age = d->depth > 0 && d->oldest_first_seen_ms > 0 && lw->now > d->oldest_first_seen_ms
                       ? lw->now - d->oldest_first_seen_ms
                       : 0;
    uint64_t wait = d->next_attempt_ms > lw->now ? d->next_attempt_ms - lw->now : 0;
    rc = rc ? rc : json_u64(b, "depth", d->depth);
    rc = rc ? rc : json_u64(b, "bytes", d->bytes);
    rc = rc ? rc : json_u64(b, "oldest_age_ms", age);
    rc = rc ? rc : json_u64(b, "next_attempt_ts", d->next_attempt_ms);
    rc = rc ? rc : json_u64(b, "next_attempt_in_ms", wait);
    rc = rc ? rc : json_u64(b, "backoff_ms", d->backoff_ms);
    rc = rc ? rc : json_u64(b, "failures", d->failures);
    rc = rc ? rc : buf_appendf(b, ",\"last_status\":%d", d->last_status);
    rc = rc ? rc : json_str(b, "last_error", d->last_error, strlen(d->last_error), false);
    return rc ? rc : buf_append_str(b, "}");
}

static void get_queue(struct admin *a)
{
    struct store *s = a->c.w->store;
    struct buf b = BUF_INIT;
    struct list_walk lw = {&b, util_wall_ms(), true};
    struct queue_totals t;
    int rc = buf_append_str(&b, "{\"destinations\":[");
    rc = rc ? rc : queue_each_dest(s, dest_json, &lw);
    rc = rc ? rc : queue_totals(s, &t);
    rc = rc ? rc
            : buf_appendf(&b,
                          "],\"totals\":{\"count\":%" PRIu64 ",\"bytes\":%" PRIu64
                          ",\"dead\":%" PRIu64 "}}",
                          t.count, t.bytes, t.dead);
    reply_json(a, &b, rc);
}

/* --- dead entries ------------------------------------------------------------------------ */

/* The fields of a dead entry (no braces). */
static int dead_fields(struct buf *b, const struct queue_dead *d)
{
    const struct queue_item *it = &d->item;
    int rc = buf_appendf(b, "\"id\":%" PRIu64, d->id);
    rc = rc ? rc : json_str(b, "destination", it->destination.base, it->destination.len, false);
    rc = rc ? rc : json_str(b, "origin", it->origin.base, it->origin.len, false);
    rc = rc ? rc : json_str(b, "txn_id", it->txn_id.base, it->txn_id.len, false);
    rc = rc ? rc : buf_appendf(b, ",\"status\":%d", d->status);
    rc = rc ? rc : json_str(b, "reason", d->reason.base, d->reason.len, false);
    rc = rc ? rc : json_u64(b, "died_ts", d->died_ms);
    rc = rc ? rc : json_u64(b, "attempts", it->attempts);
    rc = rc ? rc : json_u64(b, "body_bytes", it->body.len);
    return rc;
}

static int dead_json(void *ud, const struct queue_dead *d, int status)
{
    struct list_walk *lw = ud;
    int rc = buf_append_str(lw->b, lw->first ? "{" : ",{");
    lw->first = false;
    if (status != 0)
        rc = rc ? rc : buf_appendf(lw->b, "\"id\":%" PRIu64 ",\"malformed\":true", d->id);
    else
        rc = rc ? rc : dead_fields(lw->b, d);
    return rc ? rc : buf_append_str(lw->b, "}");
}

static void get_dead_list(struct admin *a)
{
    struct buf b = BUF_INIT;
    struct list_walk lw = {&b, 0, true};
    int rc = buf_append_str(&b, "{\"dead\":[");
    rc = rc ? rc : queue_each_dead(a->c.w->store, dead_json, &lw);
    rc = rc ? rc : buf_append_str(&b, "]}");
    reply_json(a, &b, rc);
}

static void get_dead(struct admin *a, uint64_t id)
{
    struct buf storage = BUF_INIT, b = BUF_INIT;
    struct queue_dead d;
    int rc = queue_get_dead(a->c.w->store, id, &d, &storage);
    if (rc == CH_ENOENT || rc == CH_EPROTO) {
        buf_free(&storage);
        if (rc == CH_ENOENT)
            reply_error(a, 404, "M_NOT_FOUND", false, NULL, "no dead entry %" PRIu64, id);
        else
            reply_error(a, 500, "M_UNKNOWN", false, NULL,
                        "dead entry %" PRIu64 " cannot be decoded", id);
        return;
    }
    const struct queue_item *it = &d.item;
    rc = rc ? rc : buf_append_str(&b, "{");
    rc = rc ? rc : dead_fields(&b, &d);
    rc = rc ? rc : json_str(&b, "method", it->method.base, it->method.len, false);
    rc = rc ? rc : json_str(&b, "path", it->path.base, it->path.len, false);
    rc = rc ? rc : json_u64(&b, "first_seen_ts", it->first_seen_ms);
    rc = rc ? rc : json_str(&b, "response", d.response.base, d.response.len, false);
    rc = rc ? rc : buf_append_str(&b, "}");
    buf_free(&storage);
    reply_json(a, &b, rc);
}

/* --- writes ------------------------------------------------------------------------------ */

static int write_run(MDB_txn *txn, struct store *s, void *ud)
{
    struct ad_write *wr = ud;
    switch (wr->op) {
    case OP_RETRY:
        return queue_reset_backoff_txn(txn, s, wr->dest);
    case OP_REQUEUE:
        return queue_requeue_dead_txn(txn, s, wr->id, &wr->caps, wr->now_ms, &wr->seq);
    case OP_DELETE:
        return queue_delete_dead_txn(txn, s, wr->id);
    }
    return CH_EINVAL;
}

/* The write's outcome, as the answer to the request that asked for it. */
static void answer_write(struct admin *a, const struct ad_write *wr, int rc)
{
    struct buf b = BUF_INIT;
    if (rc == 0) {
        if (wr->op == OP_RETRY) {
            rc = buf_append_str(&b, "{");
            rc = rc ? rc : json_str(&b, "destination", wr->dest, strlen(wr->dest), true);
            rc = rc ? rc : buf_append_str(&b, ",\"reset\":true}");
        } else if (wr->op == OP_REQUEUE) {
            rc = buf_appendf(&b, "{\"id\":%" PRIu64 ",\"requeued\":true,\"seq\":%" PRIu64, wr->id,
                             wr->seq);
            rc = rc ? rc : json_str(&b, "destination", wr->dest, strlen(wr->dest), false);
            rc = rc ? rc : buf_append_str(&b, "}");
        } else {
            rc = buf_appendf(&b, "{\"id\":%" PRIu64 ",\"deleted\":true}", wr->id);
        }
        reply_json(a, &b, rc);
        return;
    }
    if (rc == CH_ENOENT && wr->op == OP_RETRY)
        reply_error(a, 404, "M_NOT_FOUND", false, NULL, "no destination %s in the queue", wr->dest);
    else if (rc == CH_ENOENT)
        reply_error(a, 404, "M_NOT_FOUND", false, NULL, "no dead entry %" PRIu64, wr->id);
    else if (rc == CH_EINVAL && wr->op == OP_RETRY)
        reply_error(a, 400, "M_INVALID_PARAM", false, NULL, "%s is not a destination name",
                    wr->dest);
    else if (rc == CH_EAGAIN)
        reply_error(a, 503, "M_LIMIT_EXCEEDED", false, RETRY_AFTER,
                    "the queue is full (queue.max_bytes %" PRIu64
                    ", max_bytes_per_destination %" PRIu64 "): try again later",
                    wr->caps.max_bytes, wr->caps.dest_max_bytes);
    else if (rc == CH_ETOOBIG)
        reply_error(a, 503, "M_LIMIT_EXCEEDED", false, RETRY_AFTER,
                    "the queue's store is full (queue.map_size): try again later");
    else
        reply_error(a, 500, "M_UNKNOWN", false, NULL, "the store refused the change: %s",
                    util_strerror(rc));
}

static void write_done(void *ud, int rc)
{
    struct ad_write *wr = ud;
    struct admin *a = wr->a;
    /* a reset backoff or a requeued entry: the sender looks now rather than at its next walk */
    if (rc == 0 && wr->op != OP_DELETE && wr->sender != NULL && wr->dest[0])
        sender_kick(wr->sender, wr->dest);
    if (a != NULL) {
        a->wr = NULL;
        answer_write(a, wr, rc);
    }
    free(wr);
}

/* Hand wr to the store; the answer comes from write_done. */
static void submit(struct admin *a, struct ad_write *wr)
{
    struct worker *w = a->c.w;
    wr->a = a;
    wr->sender = w->sender;
    if (!w->sport_open || store_submit(w->store, &w->sport, write_run, write_done, wr) < 0) {
        free(wr);
        reply_error(a, 503, "M_UNKNOWN", false, NULL, "the relay is stopping: the queue is closed");
        return;
    }
    a->wr = wr;
}

static struct ad_write *new_write(struct admin *a, enum ad_op op)
{
    struct ad_write *wr = calloc(1, sizeof(*wr));
    if (wr == NULL)
        reply_error(a, 500, "M_UNKNOWN", false, NULL, "out of memory");
    else
        wr->op = op;
    return wr;
}

static void post_retry(struct admin *a, const char *dest)
{
    struct ad_write *wr = new_write(a, OP_RETRY);
    if (wr == NULL)
        return;
    snprintf(wr->dest, sizeof(wr->dest), "%s", dest);
    submit(a, wr);
}

static void post_requeue(struct admin *a, uint64_t id)
{
    const struct config *cfg = a->c.w->cfg;
    struct buf storage = BUF_INIT;
    struct queue_dead d;
    /* read first: the destination to kick once it is back in the queue */
    int rc = queue_get_dead(a->c.w->store, id, &d, &storage);
    if (rc != 0) {
        buf_free(&storage);
        if (rc == CH_ENOENT)
            reply_error(a, 404, "M_NOT_FOUND", false, NULL, "no dead entry %" PRIu64, id);
        else
            reply_error(a, 500, "M_UNKNOWN", false, NULL, "dead entry %" PRIu64 ": %s", id,
                        rc == CH_EPROTO ? "cannot be decoded" : util_strerror(rc));
        return;
    }
    struct ad_write *wr = new_write(a, OP_REQUEUE);
    if (wr != NULL) {
        snprintf(wr->dest, sizeof(wr->dest), "%.*s", (int)d.item.destination.len,
                 d.item.destination.base);
        wr->id = id;
        wr->caps.max_bytes = cfg->queue.max_bytes;
        wr->caps.dest_max_bytes = cfg->queue.max_bytes_per_destination;
        wr->now_ms = util_wall_ms();
    }
    buf_free(&storage);
    if (wr != NULL)
        submit(a, wr);
}

static void delete_dead(struct admin *a, uint64_t id)
{
    struct ad_write *wr = new_write(a, OP_DELETE);
    if (wr == NULL)
        return;
    wr->id = id;
    submit(a, wr);
}

/* --- GET /metrics ------------------------------------------------------------------------ */

static void get_metrics(struct admin *a)
{
    struct worker *w = a->c.w;
    struct metrics_sources src = {.store = w->store, .sender = w->sender, .keyfetch = w->keyfetch};
    struct buf b = BUF_INIT;
    int rc = metrics_render(&b, &src);
    if (rc == 0)
        reply(a, METRICS_TYPE, &b);
    else
        reply_error(a, 500, "M_UNKNOWN", false, NULL, "the metrics could not be rendered: %s",
                    util_strerror(rc));
    buf_free(&b);
}

/* --- routing ----------------------------------------------------------------------------- */

/* Whether the request's method is one of allow ("GET, HEAD"); else answered 405 with Allow
 * (RFC 9110 section 15.5.6). */
static bool method_ok(struct admin *a, const char *allow)
{
    struct slice rest = slice_from_str(allow), item;
    while (slice_next_list_item(&rest, &item) == 0)
        if (slice_eq(item, a->hp.msg.method))
            return true;
    char hdr[64];
    snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
    reply_error(a, 405, "M_UNRECOGNIZED", false, hdr, "%.*s is not allowed here (%s are)",
                (int)a->hp.msg.method.len, a->hp.msg.method.base, allow);
    return false;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A path segment, percent-decoded (RFC 3986 section 2.1), into out (cap bytes with the NUL).
 * 0, or CH_EINVAL: a bad escape, a control byte, or too long. */
static int decode_segment(struct slice s, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < s.len; i++) {
        int c = (unsigned char)s.base[i];
        if (c == '%') {
            int hi = i + 2 < s.len ? hexval(s.base[i + 1]) : -1;
            int lo = i + 2 < s.len ? hexval(s.base[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return CH_EINVAL;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || n + 1 >= cap)
            return CH_EINVAL;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return n > 0 ? 0 : CH_EINVAL;
}

/* A dead entry id: decimal digits, no sign, no overflow. */
static int parse_id(struct slice s, uint64_t *out)
{
    uint64_t v = 0;
    if (s.len == 0 || s.len > 20)
        return CH_EINVAL;
    for (size_t i = 0; i < s.len; i++) {
        unsigned d = (unsigned)(s.base[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return CH_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Split off the next path segment of *rest (which starts after a '/'). */
static struct slice next_segment(struct slice *rest)
{
    const char *slash = memchr(rest->base, '/', rest->len);
    size_t n = slash ? (size_t)(slash - rest->base) : rest->len;
    struct slice seg = {rest->base, n};
    rest->base += n;
    rest->len -= n;
    if (rest->len > 0) { /* skip the slash */
        rest->base++;
        rest->len--;
    }
    return seg;
}

/* /_chappe/admin/dead/{id}[/requeue] */
static void route_dead(struct admin *a, struct slice id_text, struct slice rest, bool more)
{
    uint64_t id;
    if (parse_id(id_text, &id) < 0) {
        reply_error(a, 400, "M_INVALID_PARAM", false, NULL,
                    "%.*s is not a dead entry id (a decimal number)", (int)id_text.len,
                    id_text.base);
        return;
    }
    if (!more) {
        if (!method_ok(a, "GET, HEAD, DELETE"))
            return;
        if (slice_eq_str(a->hp.msg.method, "DELETE"))
            delete_dead(a, id);
        else
            get_dead(a, id);
    } else if (slice_eq_str(rest, "requeue")) {
        if (method_ok(a, "POST"))
            post_requeue(a, id);
    } else {
        reply_error(a, 404, "M_UNRECOGNIZED", false, NULL, "no such admin endpoint");
    }
}

/* /_chappe/admin/... : rest is what follows the prefix. */
static void route_api(struct admin *a, struct slice rest)
{
    struct slice first = next_segment(&rest);
    bool more = rest.base > first.base + first.len; /* a slash followed the first segment */
    if (slice_eq_str(first, "queue") && !more) {
        if (method_ok(a, "GET, HEAD"))
            get_queue(a);
        return;
    }
    if (slice_eq_str(first, "dead") && !more) {
        if (method_ok(a, "GET, HEAD"))
            get_dead_list(a);
        return;
    }
    struct slice second = next_segment(&rest);
    bool third = rest.base > second.base + second.len;
    if (slice_eq_str(first, "queue") && second.len > 0 && third && slice_eq_str(rest, "retry")) {
        char dest[QUEUE_NAME_MAX + 1];
        if (decode_segment(second, dest, sizeof(dest)) < 0)
            reply_error(a, 400, "M_INVALID_PARAM", false, NULL, "%.*s is not a destination name",
                        (int)second.len, second.base);
        else if (method_ok(a, "POST"))
            post_retry(a, dest);
        return;
    }
    if (slice_eq_str(first, "dead") && more && second.len > 0) {
        route_dead(a, second, rest, third);
        return;
    }
    reply_error(a, 404, "M_UNRECOGNIZED", false, NULL, "no such admin endpoint");
}

/* Access (loopback, or the listener's token), then the endpoint. */
static bool allowed(struct admin *a)
{
    const struct http_msg *m = &a->hp.msg;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&a->c.tcp, (struct sockaddr *)&ss, &len) != 0)
        ss.ss_family = AF_UNSPEC; /* unknown: not loopback */
    if (http_msg_count(m, "authorization") > 1) {
        reply_error(a, 400, "M_UNAUTHORIZED", false, NULL, "more than one Authorization header");
        return false;
    }
    const struct http_field *auth = http_msg_field(m, "authorization");
    bool local = admin_is_loopback((const struct sockaddr *)&ss);
    unsigned char hash[crypto_generichash_BYTES];
    int has = 0;
    if (auth != NULL || !local) {
        const struct config *cfg = a->c.w->cfg;
        has = listener_token(cfg, (size_t)(a->c.l->cfg - cfg->listeners), hash);
        if (has < 0) {
            reply_error(a, 500, "M_UNKNOWN", false, NULL,
                        "the admin token could not be read (see the log)");
            return false;
        }
    }
    enum admin_access acc = admin_peer_allowed((const struct sockaddr *)&ss,
                                               auth ? &auth->value : NULL, has ? hash : NULL);
    switch (acc) {
    case ADMIN_ACCESS_OK:
        return true;
    case ADMIN_ACCESS_MISSING_TOKEN:
        reply_error(a, 401, "M_MISSING_TOKEN", false, CHALLENGE,
                    "the admin API needs Authorization: Bearer <token> from %s", a->c.peer_ip);
        return false;
    case ADMIN_ACCESS_BAD_TOKEN:
        reply_error(a, 401, "M_UNAUTHORIZED", false, CHALLENGE,
                    "Authorization is not Bearer with this listener's token");
        return false;
    case ADMIN_ACCESS_FORBIDDEN:
        break;
    }
    reply_error(a, 403, "M_FORBIDDEN", false, NULL,
                "the admin API serves loopback peers only (this listener has no token_path)");
    return false;
}

/* The whole request is in: answer it. */
static void dispatch(struct admin *a)
{
    struct slice path = a->hp.msg.target;
    const char *q = memchr(path.base, '?', path.len);
    if (q != NULL)
        path.len = (size_t)(q - path.base); /* no endpoint takes a query */
    if (!allowed(a))
        return;
    if (a->c.w->store == NULL && !slice_eq_str(path, "/metrics")) {
        reply_error(a, 503, "M_UNKNOWN", false, NULL, "no queue on this worker");
        return;
    }
    size_t plen = strlen(API_PREFIX);
    if (slice_eq_str(path, "/metrics")) {
        if (method_ok(a, "GET, HEAD"))
            get_metrics(a);
    } else if (path.len > plen && memcmp(path.base, API_PREFIX, plen) == 0) {
        route_api(a, (struct slice){path.base + plen, path.len - plen});
    } else {
        reply_error(a, 404, "M_UNRECOGNIZED", false, NULL, "no such admin endpoint");
    }
}

/* --- the request ----------------------------------------------------------------------- */

/* Sentinel: the request was answered here; stop parsing. */
#define HANDLED CH_EPERM

static int req_head(void *ud, struct http_msg *m)
{
    struct admin *a = ud;
    const char *why = NULL;
    bool has_body = m->chunked || m->content_length > 0;
    if (http_msg_validate_request(m, &why) < 0) {
        reply_error(a, 400, "M_UNKNOWN", true, NULL, "bad request: %s", why ? why : "invalid");
        return HANDLED;
    }
    if (m->content_length > BODY_MAX) {
        reply_error(a, 413, "M_TOO_LARGE", true, NULL,
                    "the admin API takes no request body (at most %d bytes are read)", BODY_MAX);
        return HANDLED;
    }
    if (m->expect_continue && has_body) {
        buf_append_str(conn_out(&a->c), "HTTP/1.1 100 Continue\r\n\r\n");
        conn_flush(&a->c);
    }
    conn_set_timer(&a->c, has_body ? limits(a)->body_timeout_ms : 0);
    return 0;
}

static int req_body(void *ud, const char *p, size_t n)
{
    struct admin *a = ud;
    (void)p;
    a->body_bytes += n;
    return a->body_bytes > BODY_MAX ? CH_ETOOBIG : 0;
}

static int req_complete(void *ud)
{
    (void)ud;
    return 0;
}

static const struct http_parser_cb req_cb = {req_head, req_body, req_complete};

static void parse_error(struct admin *a, int rc)
{
    if (rc == HANDLED || a->state == AD_CLOSED)
        return;
    if (rc == CH_ETOOBIG)
        reply_error(a, 413, "M_TOO_LARGE", true, NULL,
                    "the admin API takes no request body (at most %d bytes are read)", BODY_MAX);
    else if (rc == CH_ENOMEM)
        reply_error(a, 500, "M_UNKNOWN", true, NULL, "out of memory");
    else
        reply_error(a, 400, "M_UNKNOWN", true, NULL, "bad request: %s",
                    a->hp.error ? a->hp.error : "invalid HTTP framing");
}

static void process_loop(struct admin *a);

static void process(struct admin *a)
{
    if (a->in_process)
        return;
    a->in_process = true;
    process_loop(a);
    a->in_process = false;
}

static void process_loop(struct admin *a)
{
    struct conn *c = &a->c;
    const struct cfg_limits *lim = limits(a);
    while (!(c->flags & CONN_F_CLOSING)) {
        size_t used = 0;
        int rc = 0;
        switch (a->state) {
        case AD_IDLE:
            if (c->rbuf.len == 0)
                return;
            a->state = AD_HEAD;
            a->t_start = util_mono_ms();
            reset_exchange(a);
            http_parser_init(&a->hp, HTTP_REQUEST, &req_cb, a);
            conn_set_timer(c, lim->header_timeout_ms);
            /* fall through */
        case AD_HEAD: {
            size_t head_len = 0;
            const char *why = NULL;
            rc = http_scan_head(buf_data(&c->rbuf), c->rbuf.len, lim->max_header_bytes, &head_len,
                                &why);
            if (rc == HTTP_SCAN_MORE)
                return;
            if (rc != HTTP_SCAN_DONE) {
                if (rc == HTTP_SCAN_TOO_LARGE)
                    reply_error(a, 431, "M_TOO_LARGE", true, NULL,
                                "request head over %" PRIu64 " bytes", lim->max_header_bytes);
                else
                    reply_error(a, 400, "M_UNKNOWN", true, NULL, "bad request: %s",
                                why ? why : "invalid");
                return;
            }
            buf_reset(&a->head);
            if (buf_append(&a->head, buf_data(&c->rbuf), head_len) < 0) {
                conn_close(c);
                return;
            }
            buf_consume(&c->rbuf, head_len);
            a->state = AD_BODY;
            rc = http_parser_feed(&a->hp, buf_data(&a->head), a->head.len, &used);
            break;
        }
        case AD_BODY:
            if (c->rbuf.len == 0)
                return;
            rc = http_parser_feed(&a->hp, buf_data(&c->rbuf), c->rbuf.len, &used);
            if (rc >= 0)
                buf_consume(&c->rbuf, rc == HTTP_PAUSED ? used : c->rbuf.len);
            if (rc == 0)
                conn_set_timer(c, lim->body_timeout_ms);
            break;
        case AD_WAIT:
            if (c->rbuf.len > 64 * 1024)
                conn_pause_read(c); /* pipelined requests wait for this answer */
            return;
        case AD_CLOSED:
            return;
        }
        if (rc < 0) {
            parse_error(a, rc);
            continue;
        }
        if (rc == HTTP_PAUSED) {
            a->state = AD_WAIT;
            a->req_done = true;
            conn_set_timer(c, 0);
            dispatch(a);
        }
    }
}

/* --- connection events ----------------------------------------------------------------- */

static void on_open(struct conn *c)
{
    struct admin *a = ad_of(c);
    a->state = AD_IDLE;
    conn_set_timer(c, limits(a)->header_timeout_ms);
}

static void on_read(struct conn *c)
{
    process(ad_of(c));
}

static void on_writable(struct conn *c)
{
    (void)c;
}

static void on_eof(struct conn *c, int err)
{
    struct admin *a = ad_of(c);
    (void)err;
    if (a->state == AD_WAIT) {
        a->close_after = true; /* answer, then close */
        return;
    }
    if (a->state == AD_HEAD || a->state == AD_BODY) {
        snprintf(a->error, sizeof(a->error), "peer closed before the end of the request");
        access_log(a);
    }
    a->state = AD_CLOSED;
    conn_close(c);
}

static void on_timer(struct conn *c)
{
    struct admin *a = ad_of(c);
    switch (a->state) {
    case AD_IDLE:
        a->state = AD_CLOSED;
        conn_close(c);
        return;
    case AD_HEAD:
    case AD_BODY:
        reply_error(a, 408, "M_UNKNOWN", true, NULL, "request not received in time");
        return;
    case AD_WAIT:
    case AD_CLOSED:
        return;
    }
}

static void on_drain(struct conn *c)
{
    struct admin *a = ad_of(c);
    if (a->state == AD_IDLE && c->rbuf.len == 0) {
        a->state = AD_CLOSED;
        conn_close(c);
    }
}

static void on_close(struct conn *c)
{
    struct admin *a = ad_of(c);
    if (a->wr != NULL)
        a->wr->a = NULL; /* the write goes on; nobody is answered */
    buf_free(&a->head);
    struct worker *w = c->w;
    free(a);
    worker_maybe_finish(w);
}

static const struct conn_handler handler = {
    on_open, on_read, on_writable, on_eof, on_timer, on_drain, on_close,
};

void admin_accept(struct listener *l, int fd)
{
    struct admin *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        log_error("out of memory accepting a connection");
        if (fd >= 0)
            close(fd);
        return;
    }
    a->state = AD_IDLE;
    conn_accept(&a->c, l, &handler, fd);
}
