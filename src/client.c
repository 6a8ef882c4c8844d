/* client.c -- outbound HTTPS/1.1 to federation servers: policy-checked connects, verified TLS,
 * a keep-alive pool per (address, TLS name), streamed responses. */
/* SPDX-License-Identifier: ISC */
#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chappe/client.h"
#include "chappe/config.h"
#include "chappe/log.h"
#include "chappe/tls.h"
#include "chappe/util.h"

#ifndef CHAPPE_VERSION
#define CHAPPE_VERSION "0.1.0"
#endif

/* Idle connections are hashed by key into this many lists. */
#define POOL_BUCKETS 64
/* Socket reads land here first (one buffer per client: reads are consumed at once). */
#define READ_BUF (64 * 1024)
#define WHY_MAX  1024

/* A minimal intrusive doubly linked list. */
struct ring {
    struct ring *prev, *next;
};

enum {
    K_F_CONNECTING = 1 << 0,  /* uv_tcp_connect pending */
    K_F_HANDSHAKE = 1 << 1,   /* TCP up, TLS handshake under way */
    K_F_READY = 1 << 2,       /* TLS established (and verified, unless verification is off) */
    K_F_IDLE = 1 << 3,        /* in the pool, no exchange */
    K_F_REUSED = 1 << 4,      /* the current exchange took this connection from the pool */
    K_F_REQ = 1 << 5,         /* the current request was handed to this connection */
    K_F_GOT_BYTES = 1 << 6,   /* response bytes received in the current exchange */
    K_F_IN_BODY = 1 << 7,     /* the final (non-1xx) response head was parsed */
    K_F_DONE = 1 << 8,        /* the response is complete */
    K_F_READING = 1 << 9,     /* uv_read_start active */
    K_F_CLOSING = 1 << 10,    /* uv_close called */
    K_F_BROKEN = 1 << 11,     /* must not be reused */
    K_F_TLS = 1 << 12,        /* k->tls is initialised (freed with the connection) */
    K_F_PROCESSING = 1 << 13, /* inside process(): a resume must not re-enter it */
    K_F_PLAIN = 1 << 14,      /* plain HTTP (a local upstream): tls.in/out carry cleartext */
};

enum {
    X_F_HEAD = 1 << 0,       /* HEAD request: the response has no body */
    X_F_IDEMPOTENT = 1 << 1, /* may be sent once more after a stale connection */
    X_F_RETRIED = 1 << 2,    /* was sent once more already */
    X_F_SENT = 1 << 3,       /* request bytes were handed to a socket (sticky across a retry) */
    X_F_OVER = 1 << 4,       /* finished or aborted: no more callbacks */
    X_F_DEFERRED = 1 << 5,   /* in client->deferred */
    X_F_PAUSED = 1 << 6,     /* the owner asked to stop reading */
};

/* One TLS connection to a remote server. Freed in the close callback of its last handle. */
struct cconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    struct ring all;  /* client->conns, until closing */
    struct ring idle; /* client->idle[hash % POOL_BUCKETS] while K_F_IDLE */
    struct client *c;
    struct client_exchange *x; /* the current exchange, NULL when idle or closing */
    struct client_target key;  /* address, port and TLS name: the pool key */
    unsigned hash;
    char addr[64]; /* key.addr as text, for messages */
    unsigned flags;
    int handles;
    int pending_err; /* uv_tcp_connect failed at once: reported from the timer */
    int cb_rc;       /* the negative code a response callback returned */
    size_t inflight; /* ciphertext bytes handed to uv_write, not yet written */
    struct tls_conn tls;
    struct buf rbuf; /* plaintext received, not yet parsed */
    struct buf head; /* the current response head (the http_msg slices point here) */
    struct http_parser hp;
};

struct client_exchange {
    struct client *c;
    struct ring link; /* client->deferred while X_F_DEFERRED */
    struct cconn *k;  /* the connection carrying it, or NULL */
    struct client_target t;
    struct client_handler h;
    void *ud;
    struct buf req; /* the serialised request, kept for a retry */
    unsigned flags;
    int depth; /* owner callbacks running: freeing waits until they return */
    int err;   /* deferred: an error to report; 0: start on the reused connection */
    char why[WHY_MAX];
};

struct client {
    uv_loop_t *loop;
    const struct config *cfg;
    struct policy *pol;
    struct tls_client *tls;
    uv_timer_t defer;     /* zero-delay timer: callbacks owed from client_send */
    struct ring deferred; /* exchanges waiting for the defer timer */
    struct ring conns;    /* every connection not closing */
    struct ring idle[POOL_BUCKETS];
    size_t live; /* the defer timer and the connections not yet closed */
    bool freeing;
    struct client_stats stats;
    char rdbuf[READ_BUF];
};

struct cwreq {
    uv_write_t req;
    struct cconn *k;
    struct buf data;
};

/* ------------------------------------------------------------------------------------------ */
/* Lists, addresses, keys */

static void ring_init(struct ring *r)
{
    r->prev = r->next = r;
}

static bool ring_empty(const struct ring *r)
{
    return r->next == r;
}

static void ring_remove(struct ring *r)
{
    r->prev->next = r->next;
    r->next->prev = r->prev;
    ring_init(r);
}

/* Take the first element off a non-empty list. */
static struct ring *ring_pop(struct ring *head)
{
    struct ring *r = head->next;
    ring_remove(r);
    assert(head->next != r); /* for the static analyser: r is no longer reachable from head */
    return r;
}

static void ring_push_back(struct ring *head, struct ring *r)
{
    r->prev = head->prev;
    r->next = head;
    head->prev->next = r;
    head->prev = r;
}

static void ring_push_front(struct ring *head, struct ring *r)
{
    r->next = head->next;
    r->prev = head;
    head->next->prev = r;
    head->next = r;
}

static const char *format_ip(const struct sockaddr *sa, char *out, size_t cap)
{
    const void *a = sa->sa_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
    if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) ||
        inet_ntop(sa->sa_family, a, out, (socklen_t)cap) == NULL)
        snprintf(out, cap, "?");
    return out;
}

const char *client_format_addr(const struct sockaddr *sa, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    format_ip(sa, ip, sizeof(ip));
    if (sa->sa_family == AF_INET6)
        snprintf(out, cap, "[%s]:%u", ip, ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
    else if (sa->sa_family == AF_INET)
        snprintf(out, cap, "%s:%u", ip, ntohs(((const struct sockaddr_in *)sa)->sin_port));
    else
        snprintf(out, cap, "?");
    return out;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/* The pool key: where to connect and what the certificate was verified for. */
static bool same_key(const struct client_target *a, const struct client_target *b)
{
    return same_addr(&a->addr, &b->addr) && a->tls_ip_family == b->tls_ip_family &&
           a->plain == b->plain && a->local == b->local && strcmp(a->tls_name, b->tls_name) == 0;
}

static unsigned fnv(unsigned h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

static unsigned key_hash(const struct client_target *t)
{
    unsigned h = 2166136261u;
    if (t->addr.ss_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)&t->addr;
        h = fnv(h, &s->sin_port, sizeof(s->sin_port));
        h = fnv(h, &s->sin_addr, sizeof(s->sin_addr));
    } else {
        const struct sockaddr_in6 *s = (const void *)&t->addr;
        h = fnv(h, &s->sin6_port, sizeof(s->sin6_port));
        h = fnv(h, &s->sin6_addr, sizeof(s->sin6_addr));
    }
    return fnv(h, t->tls_name, strlen(t->tls_name));
}

/* ------------------------------------------------------------------------------------------ */
/* Exchanges: the owner's callbacks, each run at most once at the end */

static void x_free_if_over(struct client_exchange *x)
{
    if (x->depth == 0 && (x->flags & X_F_OVER)) {
        buf_free(&x->req);
        free(x);
    }
}

/* No callback after this: off the deferred list, off its connection (the caller handles that). */
static void x_end(struct client_exchange *x)
{
    x->flags |= X_F_OVER;
    if (x->flags & X_F_DEFERRED) {
        ring_remove(&x->link);
        x->flags &= ~X_F_DEFERRED;
    }
    if (x->k != NULL) {
        x->k->x = NULL;
        x->k = NULL;
    }
}

static void x_fail(struct client_exchange *x, int err, const char *why)
{
    if (x->flags & X_F_OVER)
        return;
    x_end(x);
    if (x->h.on_error) {
        x->depth++;
        x->h.on_error(x->ud, err, why, (x->flags & X_F_SENT) != 0);
        x->depth--;
    }
    x_free_if_over(x);
}

static void x_complete(struct client_exchange *x)
{
    if (x->flags & X_F_OVER)
        return;
    x_end(x);
    if (x->h.on_complete) {
        x->depth++;
        x->h.on_complete(x->ud);
        x->depth--;
    }
    x_free_if_over(x);
}

static void on_defer(uv_timer_t *t);

static void defer(struct client_exchange *x)
{
    struct client *c = x->c;
    x->flags |= X_F_DEFERRED;
    ring_push_back(&c->deferred, &x->link);
    if (!uv_is_active((uv_handle_t *)&c->defer))
        uv_timer_start(&c->defer, on_defer, 0, 0);
}

static void defer_error(struct client_exchange *x, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void defer_error(struct client_exchange *x, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->why, sizeof(x->why), fmt, ap);
    va_end(ap);
    x->err = err;
    defer(x);
}

/* The owner paused the response. The handshake goes on regardless: only the response waits. */
static bool paused(const struct cconn *k)
{
    return k->x != NULL && (k->x->flags & X_F_PAUSED) && (k->flags & K_F_READY);
}

/* ------------------------------------------------------------------------------------------ */
/* Connections: closing, timers */

static void client_release(struct client *c);

static void on_closed(uv_handle_t *h)
{
    struct cconn *k = h->data;
    if (--k->handles > 0)
        return;
    struct client *c = k->c;
    if (k->flags & K_F_TLS)
        tls_conn_free(&k->tls);
    if (k->flags & K_F_PLAIN) {
        buf_free(&k->tls.in);
        buf_free(&k->tls.out);
    }
    buf_free(&k->rbuf);
    buf_free(&k->head);
    free(k);
    client_release(c);
}

/*
 * Close now; the exchange, if any, is detached (the caller tells its owner).
 * graceful: an established session first gets a close_notify, best effort
 * (RFC 5246 section 7.2.1), so the server does not log a truncation.
 */
static void conn_close(struct cconn *k, bool graceful)
{
    if (k->flags & K_F_CLOSING)
        return;
    if (k->flags & K_F_IDLE) {
        ring_remove(&k->idle);
        k->flags &= ~K_F_IDLE;
    }
    ring_remove(&k->all);
    if (k->x != NULL) {
        k->x->k = NULL;
        k->x = NULL;
    }
    if (graceful && (k->flags & K_F_TLS) && (k->flags & K_F_READY) && k->inflight == 0 &&
        k->tls.out.len == 0) {
        tls_conn_close_notify(&k->tls);
        uv_buf_t b = uv_buf_init(buf_data(&k->tls.out), (unsigned)k->tls.out.len);
        if (b.len > 0)
            (void)uv_try_write((uv_stream_t *)&k->tcp, &b, 1);
    }
    k->flags |= K_F_CLOSING;
    k->flags &= ~K_F_READING;
    uv_close((uv_handle_t *)&k->timer, on_closed);
    uv_close((uv_handle_t *)&k->tcp, on_closed);
}

static int conn_new(struct client *c, struct client_exchange *x);

/*
 * The connection failed: close it and tell the exchange, or, when it was a
 * pooled connection that died before any response byte (the server closed
 * it while it sat idle, RFC 9112 section 9.3.1), send the request once more
 * on a new connection: an idempotent one (RFC 9110 section 9.2.2), or any
 * whose bytes never left. A timeout is not retried: the server may be
 * working on the request.
 */
static void conn_fail(struct cconn *k, int err, const char *why)
{
    struct client_exchange *x = k->x;
    struct client *c = k->c;
    bool retry = x != NULL && (k->flags & K_F_REUSED) && !(k->flags & K_F_GOT_BYTES) &&
                 ((x->flags & X_F_IDEMPOTENT) || !(k->flags & K_F_REQ)) &&
                 !(x->flags & X_F_RETRIED) && err != CH_ETIMEOUT && !c->freeing;
    conn_close(k, false);
    if (x == NULL)
        return;
    if (!retry) {
        x_fail(x, err, why);
        return;
    }
    log_debug("client %s: pooled connection failed (%s): sending the request again", k->addr, why);
    x->flags |= X_F_RETRIED;
    if (x->flags & X_F_DEFERRED) { /* it had not started on the stale connection yet */
        ring_remove(&x->link);
        x->flags &= ~X_F_DEFERRED;
    }
    int rc = conn_new(c, x);
    if (rc < 0)
        x_fail(x, rc, "out of memory");
}

static void conn_failf(struct cconn *k, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conn_failf(struct cconn *k, int err, const char *fmt, ...)
{
    char why[WHY_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    conn_fail(k, err, why);
}

static void tls_failed(struct cconn *k, const char *reason)
{
    k->c->stats.tls_failed++;
    log_info("client %s: TLS handshake for %s failed: %s", k->addr, k->key.tls_name, reason);
    conn_failf(k, CH_ETLS, "TLS handshake with %s for %s failed: %s", k->addr, k->key.tls_name,
               reason);
}

static void on_timer(uv_timer_t *t);

/* The timer for the connection's state: idle lifetime, connect, handshake, or response. */
static void arm_timer(struct cconn *k)
{
    const struct cfg_limits *lim = &k->c->cfg->limits;
    uint64_t ms = 0;
    if (k->flags & K_F_CLOSING)
        return;
    if (k->flags & K_F_IDLE)
        ms = lim->outbound_idle_timeout_ms;
    else if (k->flags & K_F_CONNECTING)
        ms = lim->outbound_connect_timeout_ms;
    else if (k->flags & K_F_HANDSHAKE)
        ms = lim->outbound_tls_timeout_ms;
    else if (k->x != NULL && !paused(k) && !(k->flags & K_F_DONE))
        ms = lim->outbound_timeout_ms; /* a paused owner is slow, not the server */
    if (ms)
        uv_timer_start(&k->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&k->timer);
}

/* Activity on an exchange: restart its inactivity timer (the handshake's is a deadline). */
static void touch(struct cconn *k)
{
    if (!(k->flags & (K_F_CONNECTING | K_F_HANDSHAKE | K_F_CLOSING)))
        arm_timer(k);
}

static void on_timer(uv_timer_t *t)
{
    struct cconn *k = t->data;
    const struct cfg_limits *lim = &k->c->cfg->limits;
    if (k->flags & K_F_CLOSING)
        return;
    if (k->flags & K_F_IDLE) {
        conn_close(k, true);
        return;
    }
    if (k->pending_err != 0) {
        conn_failf(k, CH_EIO, "connect to %s: %s", k->addr, uv_strerror(k->pending_err));
        return;
    }
    if (k->flags & K_F_CONNECTING) {
        conn_failf(k, CH_ETIMEOUT, "connect to %s timed out after %llu ms", k->addr,
                   (unsigned long long)lim->outbound_connect_timeout_ms);
        return;
    }
    if (k->flags & K_F_HANDSHAKE) {
        k->c->stats.tls_failed++;
        conn_failf(k, CH_ETIMEOUT, "TLS handshake with %s for %s timed out after %llu ms", k->addr,
                   k->key.tls_name, (unsigned long long)lim->outbound_tls_timeout_ms);
        return;
    }
    conn_failf(k, CH_ETIMEOUT, "no response from %s within %llu ms", k->addr,
               (unsigned long long)lim->outbound_timeout_ms);
}

/* ------------------------------------------------------------------------------------------ */
/* Writing */

/* A write failed. While a response is being read the read side decides (an early answer). */
static void write_failed(struct cconn *k, int uverr)
{
    k->flags |= K_F_BROKEN;
    if (!(k->flags & K_F_GOT_BYTES))
        conn_failf(k, CH_EIO, "write to %s: %s", k->addr, uv_strerror(uverr));
}

static void on_write(uv_write_t *req, int status)
{
    struct cwreq *wr = CONTAINER_OF(req, struct cwreq, req);
    struct cconn *k = wr->k;
    k->inflight -= wr->data.len;
    buf_free(&wr->data);
    free(wr);
    if (k->flags & K_F_CLOSING)
        return;
    if (status < 0) {
        write_failed(k, status);
        return;
    }
    touch(k);
}

/* Hand the ciphertext in k->tls.out to the socket: directly when nothing is queued, else queued. */
static void flush(struct cconn *k)
{
    struct buf *b = &k->tls.out;
    if (b->len == 0 || (k->flags & K_F_CLOSING))
        return;
    if (k->inflight == 0) {
        uv_buf_t direct = uv_buf_init(buf_data(b), (unsigned)b->len);
        int n = uv_try_write((uv_stream_t *)&k->tcp, &direct, 1);
        if (n < 0 && n != UV_EAGAIN) {
            write_failed(k, n);
            return;
        }
        if (n > 0) {
            buf_consume(b, (size_t)n);
            if (b->len == 0) {
                touch(k);
                return;
            }
        }
    }
    struct cwreq *wr = malloc(sizeof(*wr));
    if (wr == NULL) {
        conn_fail(k, CH_ENOMEM, "out of memory");
        return;
    }
    wr->k = k;
    wr->data = *b;
    *b = BUF_INIT;
    uv_buf_t ub = uv_buf_init(buf_data(&wr->data), (unsigned)wr->data.len);
    k->inflight += wr->data.len;
    int rc = uv_write(&wr->req, (uv_stream_t *)&k->tcp, &ub, 1, on_write);
    if (rc < 0) {
        k->inflight -= wr->data.len;
        buf_free(&wr->data);
        free(wr);
        write_failed(k, rc);
    }
}

static void write_request(struct cconn *k)
{
    struct client_exchange *x = k->x;
    int rc = (k->flags & K_F_PLAIN) ? buf_append(&k->tls.out, buf_data(&x->req), x->req.len)
                                    : tls_conn_write(&k->tls, buf_data(&x->req), x->req.len);
    if (rc < 0) {
        conn_failf(k, rc == CH_ENOMEM ? CH_ENOMEM : CH_ETLS, "TLS write to %s: %s", k->addr,
                   tls_conn_strerror(&k->tls));
        return;
    }
    k->flags |= K_F_REQ;
    x->flags |= X_F_SENT;
    flush(k);
}

/* ------------------------------------------------------------------------------------------ */
/* Response parsing */

static int hp_on_head(void *ud, struct http_msg *msg)
{
    struct cconn *k = ud;
    struct client_exchange *x = k->x;
    if (msg->status < 200)
        return 0; /* interim response (RFC 9110 section 15.2): skipped */
    k->flags |= K_F_IN_BODY;
    int rc = 0;
    if (x->h.on_head) {
        x->depth++;
        rc = x->h.on_head(x->ud, msg);
        x->depth--;
    }
    if (x->flags & X_F_OVER) { /* aborted from the callback: the connection is closing */
        x_free_if_over(x);
        return CH_EEOF;
    }
    if (rc < 0) {
        k->cb_rc = rc;
        return rc;
    }
    return (x->flags & X_F_HEAD) ? 1 : 0; /* RFC 9110 section 9.3.2: no body after HEAD */
}

static int hp_on_body(void *ud, const char *p, size_t n)
{
    struct cconn *k = ud;
    struct client_exchange *x = k->x;
    if (!x->h.on_body)
        return 0;
    x->depth++;
    int rc = x->h.on_body(x->ud, p, n);
    x->depth--;
    if (x->flags & X_F_OVER) {
        x_free_if_over(x);
        return CH_EEOF;
    }
    if (rc < 0)
        k->cb_rc = rc;
    return rc < 0 ? rc : 0;
}

static int hp_on_complete(void *ud)
{
    (void)ud;
    return 0; /* reported by process() once the parser has returned */
}

static const struct http_parser_cb parser_cb = {hp_on_head, hp_on_body, hp_on_complete};

static void update_reading(struct cconn *k);

/* Back to the pool, or closed when the per-key pool is full. */
static void pool_put(struct cconn *k)
{
    struct client *c = k->c;
    struct ring *bucket = &c->idle[k->hash % POOL_BUCKETS];
    uint64_t n = 0;
    for (struct ring *r = bucket->next; r != bucket; r = r->next) {
        const struct cconn *o = CONTAINER_OF(r, struct cconn, idle);
        n += o->hash == k->hash && same_key(&o->key, &k->key);
    }
    if (n >= c->cfg->limits.outbound_keepalive) {
        conn_close(k, true);
        return;
    }
    k->flags &= ~(K_F_REUSED | K_F_REQ | K_F_GOT_BYTES | K_F_IN_BODY | K_F_DONE);
    k->flags |= K_F_IDLE;
    buf_free(&k->head);
    buf_free(&k->rbuf);
    /* Most recently used first: the others age out with the idle timer. */
    ring_push_front(bucket, &k->idle);
    /* An idle connection does not keep the loop alive (a CLI command's loop ends when its
     * exchanges do); pool_take counts it again. */
    uv_unref((uv_handle_t *)&k->tcp);
    uv_unref((uv_handle_t *)&k->timer);
    arm_timer(k);
    update_reading(k); /* keeps reading: a close or stray bytes end it */
}

/*
 * The response is complete. The connection goes back to the pool only when
 * the next response cannot be confused with this one: keep-alive (RFC 9112
 * section 9.3), the whole request written, and no byte beyond the response.
 * The pool comes first so that the owner's next request can reuse it.
 */
static void exchange_complete(struct cconn *k)
{
    struct client_exchange *x = k->x;
    struct client *c = k->c;
    k->flags |= K_F_DONE;
    bool reuse = !(k->flags & K_F_BROKEN) && k->hp.msg.keep_alive && k->rbuf.len == 0 &&
                 k->tls.in.len == 0 && k->tls.out.len == 0 && k->inflight == 0 && !c->freeing;
    x->k = NULL;
    k->x = NULL;
    if (reuse)
        pool_put(k);
    else
        conn_close(k, true);
    x_complete(x);
}

static void parse_failed(struct cconn *k, int rc)
{
    if (rc == k->cb_rc && rc < 0)
        conn_fail(k, rc, "stopped by the response handler");
    else if (rc == CH_EPROTO)
        conn_failf(k, CH_EPROTO, "invalid response from %s: %s", k->addr,
                   k->hp.error ? k->hp.error : "framing error");
    else
        conn_failf(k, rc, "response from %s: %s", k->addr, util_strerror(rc));
}

/* Feed the parser what rbuf holds: the head whole (http_scan_head first), then body bytes. */
static void process_buffered(struct cconn *k)
{
    size_t max = k->c->cfg->limits.max_header_bytes;
    while (k->rbuf.len > 0 && k->x != NULL && !(k->flags & (K_F_CLOSING | K_F_DONE)) &&
           !paused(k)) {
        size_t used = 0;
        int rc;
        if (k->hp.in_head) {
            size_t head_len = 0;
            const char *why = NULL;
            rc = http_scan_head(buf_data(&k->rbuf), k->rbuf.len, max, &head_len, &why);
            if (rc == HTTP_SCAN_MORE)
                return;
            if (rc == HTTP_SCAN_TOO_LARGE) {
                conn_failf(k, CH_ETOOBIG, "response head from %s exceeds %llu bytes", k->addr,
                           (unsigned long long)max);
                return;
            }
            if (rc == HTTP_SCAN_BAD) {
                conn_failf(k, CH_EPROTO, "invalid response head from %s: %s", k->addr,
                           why ? why : "?");
                return;
            }
            buf_reset(&k->head);
            if (buf_append(&k->head, buf_data(&k->rbuf), head_len) < 0) {
                conn_fail(k, CH_ENOMEM, "out of memory");
                return;
            }
            buf_consume(&k->rbuf, head_len);
            rc = http_parser_feed(&k->hp, buf_data(&k->head), k->head.len, &used);
        } else {
            rc = http_parser_feed(&k->hp, buf_data(&k->rbuf), k->rbuf.len, &used);
            if (rc >= 0)
                buf_consume(&k->rbuf, rc == HTTP_PAUSED ? used : k->rbuf.len);
        }
        if (k->flags & K_F_CLOSING)
            return; /* a callback aborted the exchange */
        if (rc < 0) {
            parse_failed(k, rc);
            return;
        }
        if (rc == HTTP_PAUSED) {
            if (!(k->flags & K_F_IN_BODY)) { /* a 1xx: the real response follows */
                http_parser_next(&k->hp);
                continue;
            }
            exchange_complete(k);
            return;
        }
    }
}

static void process(struct cconn *k)
{
    if (k->flags & K_F_PROCESSING)
        return;
    k->flags |= K_F_PROCESSING;
    process_buffered(k);
    k->flags &= ~K_F_PROCESSING;
}

/* ------------------------------------------------------------------------------------------ */
/* Reading */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    (void)suggested;
    struct cconn *k = h->data;
    *out = uv_buf_init(k->c->rdbuf, sizeof(k->c->rdbuf));
}

/*
 * The server ended the stream: err is UV_EOF (TCP FIN), CH_EEOF (TLS
 * close_notify) or a read error. Only a close_notify may end a body
 * delimited by the close: a bare FIN could be a truncation (RFC 9112
 * section 9.8).
 */
static void on_eof(struct cconn *k, int err)
{
    if (k->x == NULL) {
        conn_close(k, false);
        return;
    }
    if (k->flags & K_F_HANDSHAKE) {
        tls_failed(k, err == UV_EOF ? "the server closed the connection" : uv_strerror(err));
        return;
    }
    if (err != UV_EOF && err != CH_EEOF) {
        conn_failf(k, CH_EIO, "read from %s: %s", k->addr, uv_strerror(err));
        return;
    }
    if (!(k->flags & K_F_IN_BODY)) {
        conn_failf(k, CH_EIO, "%s closed the connection without a response", k->addr);
        return;
    }
    int rc = http_parser_finish(&k->hp);
    if (rc == HTTP_PAUSED && err == CH_EEOF) {
        k->flags |= K_F_BROKEN;
        exchange_complete(k);
        return;
    }
    if (rc == HTTP_PAUSED)
        conn_failf(k, CH_EIO,
                   "%s closed the connection without close_notify: the response may be "
                   "truncated",
                   k->addr);
    else
        conn_failf(k, CH_EIO, "%s closed the connection before the end of the response", k->addr);
}

/* Decrypt what came in and parse it. Paused: the ciphertext waits in tls.in. */
static void decrypt(struct cconn *k)
{
    if (paused(k))
        return;
    size_t before = k->rbuf.len;
    int rc = 0;
    if (k->flags & K_F_PLAIN) {
        rc = buf_append(&k->rbuf, buf_data(&k->tls.in), k->tls.in.len);
        buf_reset(&k->tls.in);
    } else {
        rc = tls_conn_read(&k->tls, &k->rbuf);
    }
    flush(k); /* alerts */
    if (k->flags & K_F_CLOSING)
        return;
    if (k->rbuf.len > before) {
        if (!(k->flags & K_F_REQ)) {
            /* A pooled connection speaking before our request: stale, try another. */
            conn_failf(k, CH_EIO, "%s sent data before the request", k->addr);
            return;
        }
        k->flags |= K_F_GOT_BYTES;
        touch(k);
    }
    process(k);
    if (k->flags & K_F_CLOSING)
        return;
    if (k->flags & K_F_IDLE) { /* the response completed and the connection was pooled */
        if (rc != 0)
            conn_close(k, false);
        return;
    }
    if (rc == CH_EEOF) {
        on_eof(k, CH_EEOF);
        return;
    }
    if (rc < 0) {
        k->flags |= K_F_BROKEN;
        conn_failf(k, rc == CH_ENOMEM ? CH_ENOMEM : CH_ETLS, "TLS error from %s: %s", k->addr,
                   tls_conn_strerror(&k->tls));
        return;
    }
    update_reading(k);
}

static void start_exchange(struct cconn *k);

static void step_handshake(struct cconn *k)
{
    int rc = tls_conn_handshake(&k->tls);
    flush(k); /* our next flight, or the alert that tells the server why */
    if ((k->flags & K_F_CLOSING) || rc == CH_EAGAIN)
        return;
    if (rc < 0) {
        tls_failed(k, tls_conn_strerror(&k->tls));
        return;
    }
    k->flags &= ~K_F_HANDSHAKE;
    k->flags |= K_F_READY;
    log_debug("client %s: TLS for %s established, %s", k->addr, k->key.tls_name,
              tls_conn_cipher(&k->tls));
    start_exchange(k);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *ub)
{
    struct cconn *k = s->data;
    if (nread == 0 || (k->flags & K_F_CLOSING))
        return;
    if (k->flags & K_F_IDLE) {
        /* An idle keep-alive connection that speaks or closes is done (RFC 9112 section 9.3). */
        conn_close(k, false);
        return;
    }
    if (nread < 0) {
        on_eof(k, (int)nread);
        return;
    }
    if (((k->flags & K_F_PLAIN) ? buf_append(&k->tls.in, ub->base, (size_t)nread)
                                : tls_conn_feed(&k->tls, ub->base, (size_t)nread)) < 0) {
        conn_fail(k, CH_ENOMEM, "out of memory");
        return;
    }
    if (k->flags & K_F_HANDSHAKE) {
        step_handshake(k);
        if (k->flags & (K_F_HANDSHAKE | K_F_CLOSING))
            return;
    }
    decrypt(k);
}

static void update_reading(struct cconn *k)
{
    bool want = (k->flags & (K_F_TLS | K_F_PLAIN)) &&
                !(k->flags & (K_F_CONNECTING | K_F_CLOSING)) && !paused(k);
    if (want && !(k->flags & K_F_READING)) {
        int rc = uv_read_start((uv_stream_t *)&k->tcp, alloc_cb, on_read);
        if (rc == 0)
            k->flags |= K_F_READING;
    } else if (!want && (k->flags & K_F_READING)) {
        uv_read_stop((uv_stream_t *)&k->tcp);
        k->flags &= ~K_F_READING;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Connecting */

/* The connection carries x from now on: a fresh response parser. */
static void attach(struct cconn *k, struct client_exchange *x)
{
    k->x = x;
    x->k = k;
    k->cb_rc = 0;
    k->flags &= ~(K_F_REQ | K_F_GOT_BYTES | K_F_IN_BODY | K_F_DONE);
    http_parser_init(&k->hp, HTTP_RESPONSE, &parser_cb, k);
    buf_reset(&k->rbuf);
}

/* A connection is ready for x (verified TLS, new or pooled): tell the owner, send the request. */
static void start_exchange(struct cconn *k)
{
    struct client_exchange *x = k->x;
    arm_timer(k);
    update_reading(k);
    if (x->h.on_connected) {
        x->depth++;
        x->h.on_connected(x->ud, &x->t, (k->flags & K_F_REUSED) != 0);
        x->depth--;
        if (x->flags & X_F_OVER) { /* aborted from the callback */
            x_free_if_over(x);
            return;
        }
    }
    write_request(k);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct cconn *k = req->data;
    struct client *c = k->c;
    if (k->flags & K_F_CLOSING)
        return;
    k->flags &= ~K_F_CONNECTING;
    if (status < 0) {
        conn_failf(k, CH_EIO, "connect to %s: %s", k->addr, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&k->tcp, 1);
    if (k->key.plain) {
        k->flags |= K_F_PLAIN | K_F_READY;
        start_exchange(k);
        return;
    }
    if (!tls_client_verifies(c->tls))
        log_warn("federation_verify_certificates is false: not verifying the certificate of %s "
                 "for %s",
                 k->addr, k->key.tls_name);
    int rc =
        tls_conn_init_client(&k->tls, c->tls, k->key.tls_name, k->key.tls_ip_family, k->key.tls_ip);
    if (rc < 0) {
        conn_failf(k, rc == CH_ENOMEM ? CH_ENOMEM : CH_ETLS, "TLS setup for %s: %s",
                   k->key.tls_name, tls_conn_strerror(&k->tls));
        return;
    }
    k->flags |= K_F_TLS | K_F_HANDSHAKE;
    arm_timer(k); /* the handshake deadline */
    update_reading(k);
    step_handshake(k);
}

/* A new connection to exactly x->t.addr, carrying x. 0 or CH_ENOMEM (x untouched then). */
static int conn_new(struct client *c, struct client_exchange *x)
{
    struct cconn *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return CH_ENOMEM;
    k->c = c;
    k->key = x->t;
    k->hash = key_hash(&x->t);
    ring_init(&k->all);
    ring_init(&k->idle);
    k->rbuf = BUF_INIT;
    k->head = BUF_INIT;
    client_format_addr((const struct sockaddr *)&x->t.addr, k->addr, sizeof(k->addr));
    uv_tcp_init(c->loop, &k->tcp);
    k->tcp.data = k;
    uv_timer_init(c->loop, &k->timer);
    k->timer.data = k;
    k->handles = 2;
    c->live++;
    ring_push_back(&c->conns, &k->all);
    attach(k, x);
    c->stats.connects++;
    log_debug("client %s: connecting for %s", k->addr, k->key.tls_name);
    k->connect_req.data = k;
    k->flags |= K_F_CONNECTING;
    int rc =
        uv_tcp_connect(&k->connect_req, &k->tcp, (const struct sockaddr *)&x->t.addr, on_connect);
    if (rc < 0) {
        /* Reported from the loop: the owner hears of failures one way only. */
        k->flags &= ~K_F_CONNECTING;
        k->flags |= K_F_BROKEN;
        k->pending_err = rc;
        uv_timer_start(&k->timer, on_timer, 0, 0);
        return 0;
    }
    arm_timer(k);
    return 0;
}

/* An idle connection with x's key, taken out of the pool; NULL if none. */
static struct cconn *pool_take(struct client *c, const struct client_target *t)
{
    unsigned h = key_hash(t);
    struct ring *bucket = &c->idle[h % POOL_BUCKETS];
    for (struct ring *r = bucket->next; r != bucket; r = r->next) {
        struct cconn *k = CONTAINER_OF(r, struct cconn, idle);
        if (k->hash != h || !same_key(&k->key, t))
            continue;
        ring_remove(&k->idle);
        k->flags &= ~K_F_IDLE;
        uv_timer_stop(&k->timer);
        uv_ref((uv_handle_t *)&k->tcp);
        uv_ref((uv_handle_t *)&k->timer);
        return k;
    }
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Requests */

/* RFC 9110 section 5.6.2 tchar. */
static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static bool is_token(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

/* Non-empty, visible ASCII only: no space, control byte (CR, LF, ...) or DEL. */
static bool is_visible(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

static bool reserved_field(const char *name, size_t n)
{
    static const char *const own[] = {"host", "content-length", "transfer-encoding"};
    for (size_t i = 0; i < ARRAY_LEN(own); i++)
        if (strlen(own[i]) == n && strncasecmp(name, own[i], n) == 0)
            return true;
    return false;
}

/*
 * The owner's header lines: each "name: value\r\n" with a token name and a
 * value of visible bytes, SP, HTAB or obs-text (RFC 9110 section 5.5), so
 * that nothing can end the head early or start a line of its own. The
 * framing fields are the client's (RFC 9112 section 6).
 */
static int check_fields(const char *p, const char **why)
{
    while (*p) {
        const char *name = p;
        while (is_tchar((unsigned char)*p))
            p++;
        if (p == name || *p != ':') {
            *why = "a header line without a valid field name";
            return CH_EINVAL;
        }
        if (reserved_field(name, (size_t)(p - name))) {
            *why = "Host, Content-Length and Transfer-Encoding are the client's to write";
            return CH_EINVAL;
        }
        for (p++; *p && *p != '\r'; p++)
            if ((unsigned char)*p < 0x20 ? *p != '\t' : (unsigned char)*p == 0x7f) {
                *why = "a control character in a header value";
                return CH_EINVAL;
            }
        if (p[0] != '\r' || p[1] != '\n') {
            *why = "a header line not ended by CRLF";
            return CH_EINVAL;
        }
        p += 2;
    }
    return 0;
}

/* True when the header lines (each "Name: value\r\n", or NULL) have a field name (lowercase). */
static bool has_field(const char *headers, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = headers; p != NULL && *p != '\0';) {
        if (strncasecmp(p, name, n) == 0 && p[n] == ':')
            return true;
        p = strstr(p, "\r\n");
        if (p != NULL)
            p += 2;
    }
    return false;
}

static int serialize(struct buf *out, const struct client_target *t,
                     const struct client_request *req, const char **why)
{
    if (!is_token(req->method)) {
        *why = "the method is not a token";
        return CH_EINVAL;
    }
    if (req->target == NULL || req->target[0] != '/' || !is_visible(req->target)) {
        *why = "the request-target is not in origin-form";
        return CH_EINVAL;
    }
    if (memchr(t->host, '\0', sizeof(t->host)) == NULL || !is_visible(t->host)) {
        *why = "the Host value is empty or has spaces or control characters";
        return CH_EINVAL;
    }
    if (req->headers != NULL && check_fields(req->headers, why) < 0)
        return CH_EINVAL;
    if (req->body == NULL && req->body_len != 0) {
        *why = "body_len without a body";
        return CH_EINVAL;
    }
    size_t hlen = req->headers ? strlen(req->headers) : 0;
    if (buf_reserve(out, strlen(req->method) + strlen(req->target) + strlen(t->host) + hlen +
                             req->body_len + 128) < 0)
        return CH_ENOMEM;
    int rc = buf_appendf(out, "%s %s HTTP/1.1\r\nHost: %s\r\n", req->method, req->target, t->host);
    /* a request passed on (egress) keeps its sender's User-Agent, and only that one */
    if (rc == 0 && !has_field(req->headers, "user-agent"))
        rc = buf_appendf(out, "User-Agent: chappe/%s\r\n", CHAPPE_VERSION);
    if (rc == 0 && hlen)
        rc = buf_append(out, req->headers, hlen);
    if (rc == 0 && req->body != NULL)
        rc = buf_appendf(out, "Content-Length: %zu\r\n", req->body_len);
    if (rc == 0)
        rc = buf_append_str(out, "\r\n");
    if (rc == 0 && req->body_len)
        rc = buf_append(out, req->body, req->body_len);
    return rc < 0 ? CH_ENOMEM : 0;
}

static bool target_ok(const struct client_target *t)
{
    if (t->addr.ss_family == AF_INET && t->addrlen < sizeof(struct sockaddr_in))
        return false;
    if (t->addr.ss_family == AF_INET6 && t->addrlen < sizeof(struct sockaddr_in6))
        return false;
    if (t->addr.ss_family != AF_INET && t->addr.ss_family != AF_INET6)
        return false;
    if (t->tls_ip_family != 0 && t->tls_ip_family != 4 && t->tls_ip_family != 6)
        return false;
    return memchr(t->tls_name, '\0', sizeof(t->tls_name)) != NULL && is_visible(t->tls_name);
}

/* RFC 9110 section 9.2.2 (TRACE aside, which chappe never sends). */
static bool idempotent(const char *m)
{
    static const char *const safe[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"};
    for (size_t i = 0; i < ARRAY_LEN(safe); i++)
        if (strcmp(m, safe[i]) == 0)
            return true;
    return false;
}

struct client_exchange *client_send(struct client *c, const struct client_target *t,
                                    const struct client_request *req,
                                    const struct client_handler *h, void *ud)
{
    struct client_exchange *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return NULL;
    x->c = c;
    ring_init(&x->link);
    x->t = *t;
    x->h = *h;
    x->ud = ud;
    x->req = BUF_INIT;
    const char *why = "?";
    int rc = serialize(&x->req, t, req, &why);
    if (rc == CH_ENOMEM) {
        buf_free(&x->req);
        free(x);
        return NULL;
    }
    if (rc < 0) {
        defer_error(x, CH_EINVAL, "invalid request: %s", why);
        return x;
    }
    if (strcmp(req->method, "HEAD") == 0)
        x->flags |= X_F_HEAD;
    if (idempotent(req->method))
        x->flags |= X_F_IDEMPOTENT;
    if (!target_ok(t)) {
        defer_error(x, CH_EINVAL, "invalid target: bad address, TLS name or IP family");
        return x;
    }
    /*
     * The policy on the exact address connected to, every time: a pooled
     * connection has this address too (it is in the key), so reuse never
     * bypasses a newer policy (client_set_policy also drops the idle ones
     * it denies).
     */
    const struct sockaddr *sa = (const struct sockaddr *)&t->addr;
    struct policy_decision d = policy_check_addr(c->pol, sa);
    if (t->plain && !t->local) {
        defer_error(x, CH_EINVAL, "plain HTTP only to a local upstream");
        return x;
    }
    if (!d.allow && !t->local) {
        char ip[INET6_ADDRSTRLEN];
        policy_count(POLICY_OUTBOUND, d.reason);
        c->stats.denied++;
        format_ip(sa, ip, sizeof(ip));
        if (d.rule[0])
            defer_error(x, CH_EPERM, "%s: %s (%s)", policy_reason_code(d.reason), ip, d.rule);
        else
            defer_error(x, CH_EPERM, "%s: %s", policy_reason_code(d.reason), ip);
        log_info("policy: outbound deny at connect: %s", x->why);
        return x;
    }
    struct cconn *k = pool_take(c, t);
    if (k != NULL) {
        c->stats.reuses++;
        attach(k, x);
        k->flags |= K_F_REUSED;
        defer(x); /* on_connected and the request go out from the loop */
        return x;
    }
    if (conn_new(c, x) < 0) {
        buf_free(&x->req);
        free(x);
        return NULL;
    }
    return x;
}

static void on_defer(uv_timer_t *t)
{
    struct client *c = t->data;
    size_t n = 0;
    for (const struct ring *r = c->deferred.next; r != &c->deferred; r = r->next)
        n++;
    /* Only those queued before: what the callbacks queue waits for the next turn. */
    while (n-- > 0 && !c->freeing && !ring_empty(&c->deferred)) {
        struct client_exchange *x =
            CONTAINER_OF(ring_pop(&c->deferred), struct client_exchange, link);
        x->flags &= ~X_F_DEFERRED;
        if (x->err != 0)
            x_fail(x, x->err, x->why);
        else
            start_exchange(x->k);
    }
}

void client_abort(struct client_exchange *x)
{
    if (x == NULL || (x->flags & X_F_OVER))
        return;
    struct cconn *k = x->k;
    x_end(x);
    if (k != NULL)
        conn_close(k, false);
    x_free_if_over(x);
}

void client_pause_read(struct client_exchange *x)
{
    if (x->flags & X_F_OVER)
        return;
    x->flags |= X_F_PAUSED;
    if (x->k != NULL) {
        update_reading(x->k);
        touch(x->k);
    }
}

void client_resume_read(struct client_exchange *x)
{
    if ((x->flags & X_F_OVER) || !(x->flags & X_F_PAUSED))
        return;
    x->flags &= ~X_F_PAUSED;
    struct cconn *k = x->k;
    if (k == NULL || (k->flags & K_F_CLOSING))
        return;
    update_reading(k);
    touch(k);
    /* What arrived before the pause; from inside a callback the running loop goes on itself. */
    if ((k->flags & K_F_PROCESSING) || !(k->flags & K_F_READY) || !(k->flags & K_F_REQ))
        return;
    if (k->rbuf.len > 0)
        process(k);
    if (!(k->flags & K_F_CLOSING) && k->x == x && k->tls.in.len > 0)
        decrypt(k);
}

/* ------------------------------------------------------------------------------------------ */
/* The client */

static void client_destroy(struct client *c)
{
    policy_unref(c->pol);
    tls_client_unref(c->tls);
    free(c);
}

static void client_release(struct client *c)
{
    if (--c->live == 0 && c->freeing)
        client_destroy(c);
}

static void on_defer_closed(uv_handle_t *h)
{
    client_release(h->data);
}

int client_new(uv_loop_t *loop, const struct config *cfg, struct policy *pol, struct client **out,
               struct buf *err)
{
    *out = NULL;
    struct tls_client *tls = NULL;
    int rc = tls_client_new(cfg, &tls, err);
    if (rc != 0)
        return rc;
    struct client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        tls_client_unref(tls);
        return CH_ENOMEM;
    }
    c->loop = loop;
    c->cfg = cfg;
    c->tls = tls;
    policy_ref(pol);
    c->pol = pol;
    ring_init(&c->deferred);
    ring_init(&c->conns);
    for (size_t i = 0; i < POOL_BUCKETS; i++)
        ring_init(&c->idle[i]);
    uv_timer_init(loop, &c->defer);
    c->defer.data = c;
    c->live = 1;
    *out = c;
    return 0;
}

void client_free(struct client *c)
{
    if (c == NULL || c->freeing)
        return;
    c->freeing = true;
    while (!ring_empty(&c->deferred)) {
        struct client_exchange *x =
            CONTAINER_OF(ring_pop(&c->deferred), struct client_exchange, link);
        struct cconn *k = x->k;
        x->flags &= ~X_F_DEFERRED;
        x_end(x);
        if (k != NULL)
            conn_close(k, false);
        x_free_if_over(x);
    }
    while (!ring_empty(&c->conns)) {
        struct cconn *k = CONTAINER_OF(c->conns.next, struct cconn, all);
        struct client_exchange *x = k->x;
        if (x != NULL)
            x_end(x);
        conn_close(k, x == NULL);
        if (x != NULL)
            x_free_if_over(x);
    }
    uv_close((uv_handle_t *)&c->defer, on_defer_closed);
}

void client_set_policy(struct client *c, struct policy *pol)
{
    policy_ref(pol);
    policy_unref(c->pol);
    c->pol = pol;
    for (size_t i = 0; i < POOL_BUCKETS; i++) {
        struct ring *bucket = &c->idle[i];
        for (struct ring *r = bucket->next, *next; r != bucket; r = next) {
            next = r->next;
            struct cconn *k = CONTAINER_OF(r, struct cconn, idle);
            if (!policy_check_addr(pol, (const struct sockaddr *)&k->key.addr).allow)
                conn_close(k, true);
        }
    }
}

struct policy *client_policy(const struct client *c)
{
    return c->pol;
}

void client_get_stats(const struct client *c, struct client_stats *out)
{
    *out = c->stats;
}
