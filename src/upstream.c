/* upstream.c -- keep-alive HTTP/1.1 connections to the homeservers chappe fronts. */
/* SPDX-License-Identifier: ISC */
#include <stdlib.h>
#include <string.h>

#include "chappe/log.h"
#include "chappe/upstream.h"
#include "chappe/util.h"

#define UP_WRITE_HIGH (256 * 1024)
#define UP_WRITE_LOW  (64 * 1024)

enum {
    UP_F_CONNECTING = 1 << 0, /* uv_tcp_connect pending */
    UP_F_CONNECTED = 1 << 1,  /* TCP established */
    UP_F_IDLE = 1 << 2,       /* in the pool, no exchange */
    UP_F_REUSED = 1 << 3,     /* taken from the pool for this exchange */
    UP_F_HEAD_REQ = 1 << 4,   /* the request is HEAD: the response has no body */
    UP_F_GOT_BYTES = 1 << 5,  /* response bytes received in this exchange */
    UP_F_IN_BODY = 1 << 6,    /* response head parsed */
    UP_F_DONE = 1 << 7,       /* response complete */
    UP_F_PAUSED = 1 << 8,     /* the exchange asked to stop reading */
    UP_F_READING = 1 << 9,
    UP_F_CLOSING = 1 << 10,
    UP_F_BROKEN = 1 << 11, /* not reusable */
    UP_F_WANT_WRITABLE = 1 << 12,
};

struct upstream {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    struct link link; /* in pool->idle */
    struct upstream_pool *pool;
    const struct upstream_handler *h;
    void *ud;
    unsigned flags;
    int handles;
    struct buf rbuf; /* bytes received, not yet parsed */
    struct buf head; /* the current response head (msg slices point here) */
    struct buf wbuf; /* request bytes queued before connect / not yet handed to libuv */
    size_t inflight;
    struct http_parser hp;
};

struct up_wreq {
    uv_write_t req;
    struct upstream *u;
    struct buf data;
};

static void list_remove(struct link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = l;
}

static void list_push(struct link *head, struct link *l)
{
    l->next = head->next;
    l->prev = head;
    head->next->prev = l;
    head->next = l;
}

static void on_closed(uv_handle_t *handle)
{
    struct upstream *u = handle->data;
    if (--u->handles > 0)
        return;
    buf_free(&u->rbuf);
    buf_free(&u->head);
    buf_free(&u->wbuf);
    free(u);
}

static void up_close(struct upstream *u)
{
    if (u->flags & UP_F_CLOSING)
        return;
    if (u->flags & UP_F_IDLE) {
        list_remove(&u->link);
        u->pool->nidle--;
        u->flags &= ~UP_F_IDLE;
    }
    u->flags |= UP_F_CLOSING;
    u->h = NULL;
    uv_close((uv_handle_t *)&u->timer, on_closed);
    uv_close((uv_handle_t *)&u->tcp, on_closed);
}

/* Report a failure once to the exchange, then close. */
static void fail(struct upstream *u, int err, const char *why)
{
    const struct upstream_handler *h = u->h;
    void *ud = u->ud;
    bool retryable = (u->flags & UP_F_REUSED) && !(u->flags & UP_F_GOT_BYTES);
    up_close(u);
    if (h)
        h->on_error(u, ud, err, why, retryable);
}

static void arm_timer(struct upstream *u);

static void on_timer(uv_timer_t *t)
{
    struct upstream *u = t->data;
    if (u->flags & UP_F_IDLE) {
        up_close(u);
        return;
    }
    if ((u->flags & UP_F_BROKEN) && !(u->flags & UP_F_CONNECTED))
        fail(u, CH_EIO, "connect failed");
    else if (u->flags & UP_F_CONNECTING)
        fail(u, CH_ETIMEOUT, "connect timed out");
    else
        fail(u, CH_ETIMEOUT, "no response in time");
}

static void arm_timer(struct upstream *u)
{
    const struct cfg_limits *lim = &u->pool->w->cfg->limits;
    uint64_t ms;
    if (u->flags & UP_F_IDLE)
        ms = lim->upstream_idle_timeout_ms;
    else if (u->flags & UP_F_CONNECTING)
        ms = lim->upstream_connect_timeout_ms;
    else if (u->flags & UP_F_PAUSED)
        ms = 0; /* the client is slow, not the upstream */
    else
        ms = lim->upstream_timeout_ms;
    if (ms)
        uv_timer_start(&u->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&u->timer);
}

/* --- response parsing ------------------------------------------------------------- */

static int hp_on_head(void *ud, struct http_msg *msg)
{
    struct upstream *u = ud;
    if (msg->status >= 100 && msg->status < 200)
        return 0; /* interim response (RFC 9110 section 15.2): not relayed */
    u->flags |= UP_F_IN_BODY;
    int rc = u->h->on_head(u, u->ud, msg);
    if (rc < 0)
        return rc;
    if (u->flags & UP_F_HEAD_REQ)
        return 1;
    return rc;
}

static int hp_on_body(void *ud, const char *p, size_t n)
{
    struct upstream *u = ud;
    return u->h->on_body(u, u->ud, p, n);
}

static int hp_on_complete(void *ud)
{
    (void)ud;
    return 0;
}

static const struct http_parser_cb parser_cb = {hp_on_head, hp_on_body, hp_on_complete};

static void update_reading(struct upstream *u);

/* Parse what is in rbuf. */
static void process(struct upstream *u)
{
    size_t max = u->pool->w->cfg->limits.max_header_bytes;
    while (u->rbuf.len > 0 && u->h && !(u->flags & (UP_F_DONE | UP_F_CLOSING))) {
        if (u->hp.in_head) {
            size_t head_len = 0;
            const char *why = NULL;
            int rc = http_scan_head(buf_data(&u->rbuf), u->rbuf.len, max, &head_len, &why);
            if (rc == HTTP_SCAN_MORE)
                return;
            if (rc == HTTP_SCAN_TOO_LARGE) {
                fail(u, CH_EPROTO, "response head too large");
                return;
            }
            if (rc == HTTP_SCAN_BAD) {
                fail(u, CH_EPROTO, why ? why : "invalid response head");
                return;
            }
            buf_reset(&u->head);
            if (buf_append(&u->head, buf_data(&u->rbuf), head_len) < 0) {
                fail(u, CH_ENOMEM, "out of memory");
                return;
            }
            buf_consume(&u->rbuf, head_len);
            size_t used = 0;
            rc = http_parser_feed(&u->hp, buf_data(&u->head), u->head.len, &used);
            if (u->flags & UP_F_CLOSING)
                return;
            if (rc < 0) {
                fail(u, CH_EPROTO, u->hp.error ? u->hp.error : "invalid response");
                return;
            }
            if (rc == HTTP_PAUSED) {
                if (!(u->flags & UP_F_IN_BODY)) { /* an interim 1xx response */
                    http_parser_next(&u->hp);
                    continue;
                }
                u->flags |= UP_F_DONE;
                uv_timer_stop(&u->timer);
                u->h->on_complete(u, u->ud);
                return;
            }
            continue;
        }
        size_t used = 0;
        int rc = http_parser_feed(&u->hp, buf_data(&u->rbuf), u->rbuf.len, &used);
        if (u->flags & UP_F_CLOSING)
            return;
        if (rc < 0) {
            fail(u, CH_EPROTO, u->hp.error ? u->hp.error : "invalid response body framing");
            return;
        }
        if (rc == HTTP_PAUSED) {
            buf_consume(&u->rbuf, used);
            if (u->rbuf.len)
                u->flags |= UP_F_BROKEN; /* bytes after the response: do not reuse */
            u->flags |= UP_F_DONE;
            uv_timer_stop(&u->timer);
            u->h->on_complete(u, u->ud);
            return;
        }
        buf_reset(&u->rbuf);
    }
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *out)
{
    (void)suggested;
    struct upstream *u = handle->data;
    *out = uv_buf_init(u->pool->w->rdbuf, sizeof(u->pool->w->rdbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *ub)
{
    struct upstream *u = s->data;
    if (nread == 0)
        return;
    if (u->flags & UP_F_IDLE) {
        /* An idle keep-alive connection that speaks or closes is done (RFC 9112 section 9.3). */
        up_close(u);
        return;
    }
    if (nread < 0) {
        u->flags |= UP_F_BROKEN;
        if (nread != UV_EOF) {
            fail(u, CH_EIO, uv_strerror((int)nread));
            return;
        }
        if (u->flags & UP_F_IN_BODY) {
            /* A body delimited by the close (RFC 9112 section 6.3, item 8). */
            int rc = http_parser_finish(&u->hp);
            if (rc == HTTP_PAUSED || (rc == 0 && (u->flags & UP_F_DONE))) {
                uv_read_stop(s);
                u->flags &= ~UP_F_READING;
                u->flags |= UP_F_DONE;
                uv_timer_stop(&u->timer);
                u->h->on_complete(u, u->ud);
                return;
            }
            fail(u, CH_EEOF, "upstream closed the connection before the end of the response");
            return;
        }
        fail(u, CH_EEOF, "upstream closed the connection without a response");
        return;
    }
    u->flags |= UP_F_GOT_BYTES;
    if (buf_append(&u->rbuf, ub->base, (size_t)nread) < 0) {
        fail(u, CH_ENOMEM, "out of memory");
        return;
    }
    arm_timer(u);
    const struct upstream_handler *h = u->h;
    void *ud = u->ud;
    process(u);
    if (h && u->h == h && u->ud == ud)
        h->on_batch(u, ud);
    if (!(u->flags & UP_F_CLOSING))
        update_reading(u);
}

static void update_reading(struct upstream *u)
{
    /* A complete response does not stop reading: the exchange releases the connection to the
     * pool in the same callback, and the pool keeps reading to notice a close (saves two
     * epoll_ctl calls a request). */
    bool want = (u->flags & UP_F_CONNECTED) && !(u->flags & (UP_F_PAUSED | UP_F_CLOSING));
    if (want && !(u->flags & UP_F_READING)) {
        if (uv_read_start((uv_stream_t *)&u->tcp, alloc_cb, on_read) == 0)
            u->flags |= UP_F_READING;
    } else if (!want && (u->flags & UP_F_READING)) {
        uv_read_stop((uv_stream_t *)&u->tcp);
        u->flags &= ~UP_F_READING;
    }
}

/* --- writing ----------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status)
{
    struct up_wreq *wr = CONTAINER_OF(req, struct up_wreq, req);
    struct upstream *u = wr->u;
    u->inflight -= wr->data.len;
    buf_free(&wr->data);
    free(wr);
    if (u->flags & UP_F_CLOSING)
        return;
    if (status < 0) {
        u->flags |= UP_F_BROKEN;
        /* The response may already be there (an early 413, say): let the read side decide. */
        if (!(u->flags & UP_F_GOT_BYTES))
            fail(u, CH_EIO, uv_strerror(status));
        return;
    }
    if (!(u->flags & UP_F_PAUSED) && !(u->flags & UP_F_DONE))
        arm_timer(u);
    if ((u->flags & UP_F_WANT_WRITABLE) && upstream_pending(u) <= UP_WRITE_LOW) {
        u->flags &= ~UP_F_WANT_WRITABLE;
        if (u->h)
            u->h->on_writable(u, u->ud);
    }
}

void upstream_flush(struct upstream *u)
{
    if (!(u->flags & UP_F_CONNECTED) || (u->flags & UP_F_CLOSING) || u->wbuf.len == 0) {
        if (upstream_pending(u) > UP_WRITE_HIGH)
            u->flags |= UP_F_WANT_WRITABLE;
        return;
    }
    if (u->inflight == 0) {
        uv_buf_t direct = uv_buf_init(buf_data(&u->wbuf), (unsigned)u->wbuf.len);
        int n = uv_try_write((uv_stream_t *)&u->tcp, &direct, 1);
        if (n < 0 && n != UV_EAGAIN) {
            u->flags |= UP_F_BROKEN;
            fail(u, CH_EIO, uv_strerror(n));
            return;
        }
        if (n > 0) {
            buf_consume(&u->wbuf, (size_t)n);
            if (u->wbuf.len == 0) {
                if (!(u->flags & (UP_F_PAUSED | UP_F_DONE)))
                    arm_timer(u);
                /* Everything went out at once: a producer waiting for room may go on. */
                if (u->flags & UP_F_WANT_WRITABLE) {
                    u->flags &= ~UP_F_WANT_WRITABLE;
                    if (u->h)
                        u->h->on_writable(u, u->ud);
                }
                return;
            }
        }
    }
    struct up_wreq *wr = malloc(sizeof(*wr));
    if (wr == NULL) {
        fail(u, CH_ENOMEM, "out of memory");
        return;
    }
    wr->u = u;
    wr->data = u->wbuf;
    u->wbuf = BUF_INIT;
    uv_buf_t ub = uv_buf_init(buf_data(&wr->data), (unsigned)wr->data.len);
    u->inflight += wr->data.len;
    int rc = uv_write(&wr->req, (uv_stream_t *)&u->tcp, &ub, 1, on_write);
    if (rc < 0) {
        u->inflight -= wr->data.len;
        buf_free(&wr->data);
        free(wr);
        fail(u, CH_EIO, uv_strerror(rc));
        return;
    }
    if (upstream_pending(u) > UP_WRITE_HIGH)
        u->flags |= UP_F_WANT_WRITABLE;
}

struct buf *upstream_out(struct upstream *u)
{
    return &u->wbuf;
}

size_t upstream_pending(const struct upstream *u)
{
    return u->wbuf.len + u->inflight;
}

/* --- connecting and pooling ---------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status)
{
    struct upstream *u = req->data;
    if (u->flags & UP_F_CLOSING)
        return;
    u->flags &= ~UP_F_CONNECTING;
    if (status < 0) {
        fail(u, CH_EIO, uv_strerror(status));
        return;
    }
    u->flags |= UP_F_CONNECTED;
    uv_tcp_nodelay(&u->tcp, 1);
    arm_timer(u);
    update_reading(u);
    if (u->h)
        u->h->on_connected(u, u->ud);
    if (u->flags & UP_F_CLOSING)
        return;
    upstream_flush(u);
}

void upstream_pool_init(struct upstream_pool *p, struct worker *w, const struct cfg_homeserver *hs)
{
    p->w = w;
    p->hs = hs;
    p->idle.prev = p->idle.next = &p->idle;
    p->nidle = 0;
    p->connects = 0;
}

void upstream_pool_close(struct upstream_pool *p)
{
    while (p->idle.next != &p->idle) {
        struct upstream *u = CONTAINER_OF(p->idle.next, struct upstream, link);
        up_close(u);
    }
}

static void begin_exchange(struct upstream *u, const struct upstream_handler *h, void *ud,
                           bool head_request)
{
    u->h = h;
    u->ud = ud;
    u->flags &= ~(UP_F_HEAD_REQ | UP_F_GOT_BYTES | UP_F_IN_BODY | UP_F_DONE | UP_F_PAUSED |
                  UP_F_WANT_WRITABLE);
    if (head_request)
        u->flags |= UP_F_HEAD_REQ;
    http_parser_init(&u->hp, HTTP_RESPONSE, &parser_cb, u);
    buf_reset(&u->rbuf);
}

struct upstream *upstream_get(struct upstream_pool *p, const struct upstream_handler *h, void *ud,
                              bool head_request)
{
    if (p->idle.next != &p->idle) {
        struct upstream *u = CONTAINER_OF(p->idle.next, struct upstream, link);
        list_remove(&u->link);
        p->nidle--;
        u->flags &= ~UP_F_IDLE;
        u->flags |= UP_F_REUSED;
        begin_exchange(u, h, ud, head_request);
        arm_timer(u);
        update_reading(u);
        return u;
    }
    struct upstream *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->pool = p;
    u->link.prev = u->link.next = &u->link;
    uv_tcp_init(&p->w->loop, &u->tcp);
    u->tcp.data = u;
    uv_timer_init(&p->w->loop, &u->timer);
    u->timer.data = u;
    u->handles = 2;
    begin_exchange(u, h, ud, head_request);
    u->connect_req.data = u;
    u->flags |= UP_F_CONNECTING;
    p->connects++;
    int rc = uv_tcp_connect(&u->connect_req, &u->tcp,
                            (const struct sockaddr *)&p->hs->upstream.addr, on_connect);
    arm_timer(u);
    if (rc < 0) {
        /* Reported asynchronously so that the caller sees one way of failing. */
        u->flags &= ~UP_F_CONNECTING;
        u->flags |= UP_F_BROKEN;
        log_info("upstream %s: connect: %s", p->hs->upstream.url, uv_strerror(rc));
        uv_timer_start(&u->timer, on_timer, 0, 0);
    }
    return u;
}

bool upstream_reused(const struct upstream *u)
{
    return (u->flags & UP_F_REUSED) != 0;
}

void upstream_pause_read(struct upstream *u)
{
    u->flags |= UP_F_PAUSED;
    update_reading(u);
    arm_timer(u);
}

void upstream_resume_read(struct upstream *u)
{
    if (u->flags & UP_F_CLOSING)
        return;
    u->flags &= ~UP_F_PAUSED;
    update_reading(u);
    if (!(u->flags & UP_F_DONE))
        arm_timer(u);
    /* Bytes may wait in rbuf from before the pause. */
    if (u->rbuf.len && u->h)
        process(u);
}

void upstream_abort(struct upstream *u)
{
    up_close(u);
}

void upstream_release(struct upstream *u, bool request_complete)
{
    struct upstream_pool *p = u->pool;
    bool reuse = request_complete && (u->flags & UP_F_DONE) && !(u->flags & UP_F_BROKEN) &&
                 u->hp.msg.keep_alive && u->rbuf.len == 0 && upstream_pending(u) == 0 &&
                 (u->flags & UP_F_CONNECTED) && !p->w->draining &&
                 p->nidle < p->w->cfg->limits.upstream_keepalive;
    if (!reuse) {
        up_close(u);
        return;
    }
    u->h = NULL;
    u->ud = NULL;
    u->flags &= ~(UP_F_REUSED | UP_F_PAUSED | UP_F_DONE | UP_F_IN_BODY | UP_F_GOT_BYTES);
    u->flags |= UP_F_IDLE;
    buf_free(&u->head);
    buf_free(&u->rbuf);
    list_push(&p->idle, &u->link);
    p->nidle++;
    arm_timer(u);
    update_reading(u);
}
