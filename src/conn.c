/* conn.c -- client connections: reads, TLS records, the output queue, timers and closing. */
/* SPDX-License-Identifier: ISC */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chappe/conn.h"
#include "chappe/log.h"
#include "chappe/policy.h"
#include "chappe/trust.h"
#include "chappe/util.h"

/* How long a closing connection keeps discarding input after its FIN (nginx: lingering_time). */
#define LINGER_MS 2000
/* Plaintext buffered unread above this: stop reading until the handler consumes it. */
#define RBUF_HIGH (256 * 1024)

struct wreq {
    uv_write_t req;
    struct conn *c;
    struct buf data;
};

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles > 0)
        return;
    if (c->flags & CONN_F_TLS)
        tls_conn_free(&c->tls);
    buf_free(&c->rbuf);
    buf_free(&c->wbuf);
    worker_conn_remove(c->w, c);
    c->h->on_close(c);
}

void conn_close(struct conn *c)
{
    if (c->flags & CONN_F_CLOSING)
        return;
    c->flags |= CONN_F_CLOSING;
    c->flags &= ~CONN_F_READING;
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void start_linger(struct conn *c);

static void on_write(uv_write_t *req, int status)
{
    struct wreq *wr = CONTAINER_OF(req, struct wreq, req);
    struct conn *c = wr->c;
    c->inflight -= wr->data.len;
    buf_free(&wr->data);
    free(wr);
    if (c->flags & CONN_F_CLOSING)
        return;
    if (status < 0) {
        log_debug("conn %s: write: %s", c->peer, uv_strerror(status));
        conn_close(c);
        return;
    }
    if ((c->flags & CONN_F_CLOSE_AFTER) && conn_pending(c) == 0) {
        start_linger(c);
        return;
    }
    if ((c->flags & CONN_F_WANT_WRITABLE) && conn_pending(c) <= CONN_WRITE_LOW) {
        c->flags &= ~CONN_F_WANT_WRITABLE;
        c->h->on_writable(c);
    }
}

/* Hand b's bytes to libuv; b is left empty (its memory moves to the request). */
static void submit(struct conn *c, struct buf *b)
{
    if (b->len == 0)
        return;
    if (c->inflight == 0) {
        /* Nothing queued: write directly, and queue only what the socket did not take. */
        uv_buf_t direct = uv_buf_init(buf_data(b), (unsigned)b->len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &direct, 1);
        if (n < 0 && n != UV_EAGAIN) {
            log_debug("conn %s: write: %s", c->peer, uv_strerror(n));
            conn_close(c);
            return;
        }
        if (n > 0) {
            c->bytes_out += (uint64_t)n;
            buf_consume(b, (size_t)n);
            if (b->len == 0)
                return; /* the memory stays with b for the next response */
        }
    }
    struct wreq *wr = malloc(sizeof(*wr));
    if (wr == NULL) {
        conn_close(c);
        return;
    }
    wr->c = c;
    wr->data = *b;
    *b = BUF_INIT;
    uv_buf_t ub = uv_buf_init(buf_data(&wr->data), (unsigned)wr->data.len);
    c->inflight += wr->data.len;
    c->bytes_out += wr->data.len;
    int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &ub, 1, on_write);
    if (rc < 0) {
        c->inflight -= wr->data.len;
        buf_free(&wr->data);
        free(wr);
        conn_close(c);
    }
}

void conn_flush(struct conn *c)
{
    if (c->flags & CONN_F_CLOSING)
        return;
    if (c->flags & CONN_F_TLS) {
        if (c->wbuf.len) {
            if (tls_conn_write(&c->tls, buf_data(&c->wbuf), c->wbuf.len) < 0) {
                log_info("conn %s: TLS write: %s", c->peer, tls_conn_strerror(&c->tls));
                conn_close(c);
                return;
            }
            buf_reset(&c->wbuf);
        }
        submit(c, &c->tls.out);
    } else {
        submit(c, &c->wbuf);
    }
    if (conn_pending(c) > CONN_WRITE_HIGH)
        c->flags |= CONN_F_WANT_WRITABLE;
    if ((c->flags & CONN_F_CLOSE_AFTER) && conn_pending(c) == 0)
        start_linger(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    (void)suggested;
    struct conn *c = h->data;
    *out = uv_buf_init(c->w->rdbuf, sizeof(c->w->rdbuf));
}

static void update_reading(struct conn *c);

static void deliver(struct conn *c)
{
    if (c->flags & (CONN_F_CLOSING | CONN_F_LINGER))
        return;
    c->h->on_read(c);
    if (!(c->flags & CONN_F_CLOSING))
        update_reading(c);
}

static void tls_input(struct conn *c);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *ub)
{
    struct conn *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (c->flags & CONN_F_LINGER) {
            conn_close(c);
            return;
        }
        c->flags |= CONN_F_EOF;
        uv_read_stop(s);
        c->flags &= ~CONN_F_READING;
        if (c->flags & CONN_F_HANDSHAKE) {
            conn_close(c);
            return;
        }
        c->h->on_eof(c, nread == UV_EOF ? CH_EEOF : CH_EIO);
        return;
    }
    if (c->flags & CONN_F_LINGER)
        return; /* discarded: we are closing */
    c->bytes_in += (uint64_t)nread;
    if (!(c->flags & CONN_F_TLS)) {
        if (buf_append(&c->rbuf, ub->base, (size_t)nread) < 0) {
            conn_close(c);
            return;
        }
        deliver(c);
        return;
    }
    if (tls_conn_feed(&c->tls, ub->base, (size_t)nread) < 0) {
        conn_close(c);
        return;
    }
    tls_input(c);
}

/* Ciphertext is waiting in c->tls.in: advance the handshake, then decrypt and deliver. */
static void tls_input(struct conn *c)
{
    uv_stream_t *s = (uv_stream_t *)&c->tcp;
    if (c->flags & CONN_F_HANDSHAKE) {
        int rc = tls_conn_handshake(&c->tls);
        submit(c, &c->tls.out);
        if (rc == CH_EAGAIN)
            return;
        if (rc < 0) {
            log_info("tls %s: handshake failed: %s", c->peer, tls_conn_strerror(&c->tls));
            conn_close(c);
            return;
        }
        c->flags &= ~CONN_F_HANDSHAKE;
        conn_set_timer(c, 0);
        c->h->on_open(c);
        if (c->flags & CONN_F_CLOSING)
            return;
    }
    int rc = tls_conn_read(&c->tls, &c->rbuf);
    submit(c, &c->tls.out);
    if (rc == CH_EEOF || rc < 0) {
        if (rc != CH_EEOF)
            log_info("tls %s: %s", c->peer, tls_conn_strerror(&c->tls));
        if (c->rbuf.len)
            deliver(c);
        if (c->flags & CONN_F_CLOSING)
            return;
        c->flags |= CONN_F_EOF;
        uv_read_stop(s);
        c->flags &= ~CONN_F_READING;
        c->h->on_eof(c, rc == CH_EEOF ? CH_EEOF : CH_ETLS);
        return;
    }
    if (c->rbuf.len)
        deliver(c);
}

static void update_reading(struct conn *c)
{
    bool want =
        !(c->flags & (CONN_F_PAUSED | CONN_F_EOF | CONN_F_CLOSING)) && c->rbuf.len < RBUF_HIGH;
    if (c->flags & CONN_F_LINGER)
        want = true;
    if (want && !(c->flags & CONN_F_READING)) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read) == 0)
            c->flags |= CONN_F_READING;
    } else if (!want && (c->flags & CONN_F_READING)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->flags &= ~CONN_F_READING;
    }
}

void conn_pause_read(struct conn *c)
{
    c->flags |= CONN_F_PAUSED;
    update_reading(c);
}

void conn_resume_read(struct conn *c)
{
    if (c->flags & CONN_F_CLOSING)
        return;
    c->flags &= ~CONN_F_PAUSED;
    update_reading(c);
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->flags & CONN_F_CLOSING)
        return;
    if (c->flags & (CONN_F_HANDSHAKE | CONN_F_LINGER)) {
        if (c->flags & CONN_F_HANDSHAKE)
            log_info("tls %s: handshake timeout", c->peer);
        conn_close(c);
        return;
    }
    c->h->on_timer(c);
}

void conn_set_timer(struct conn *c, uint64_t ms)
{
    if (c->flags & CONN_F_CLOSING)
        return;
    if (ms == 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

/* RFC 9112 section 9.6: close in stages so that a client still sending does not get an RST
 * that destroys the response it has not read yet. */
static void start_linger(struct conn *c)
{
    if (c->flags & (CONN_F_LINGER | CONN_F_CLOSING))
        return;
    c->flags |= CONN_F_LINGER;
    if ((c->flags & CONN_F_EOF) || c->inflight != 0) {
        conn_close(c);
        return;
    }
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (req == NULL || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        free(req);
        conn_close(c);
        return;
    }
    buf_free(&c->rbuf);
    c->flags &= ~CONN_F_PAUSED;
    update_reading(c);
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
}

void conn_close_after_flush(struct conn *c)
{
    if (c->flags & CONN_F_CLOSING)
        return;
    c->flags |= CONN_F_CLOSE_AFTER;
    if (c->flags & CONN_F_TLS) {
        /* Records first, then the close_notify alert after them (RFC 5246 section 7.2.1). */
        if (c->wbuf.len) {
            if (tls_conn_write(&c->tls, buf_data(&c->wbuf), c->wbuf.len) < 0) {
                conn_close(c);
                return;
            }
            buf_reset(&c->wbuf);
        }
        tls_conn_close_notify(&c->tls);
    }
    conn_flush(c);
}

void conn_trim(struct conn *c)
{
    if (c->rbuf.len == 0)
        buf_free(&c->rbuf);
    if (c->wbuf.len == 0)
        buf_free(&c->wbuf);
    if (c->tls.in.len == 0)
        buf_free(&c->tls.in);
    if (c->tls.out.len == 0)
        buf_free(&c->tls.out);
}

/*
 * inbound_source_policy: the peer address against sovereign_ranges and the
 * blacklist, before any byte is read. False when the connection must close.
 */
static bool source_allowed(struct worker *w, const struct sockaddr *sa, const char *peer)
{
    enum source_policy mode = w->cfg->inbound_source_policy;
    if (w->trust == NULL || mode == SOURCE_POLICY_OFF)
        return true;
    struct policy_decision d = policy_check_addr(w->trust->pol, sa);
    if (d.allow)
        return true;
    policy_count(POLICY_INBOUND, d.reason);
    if (mode == SOURCE_POLICY_ENFORCE) {
        log_info("conn %s: refused by inbound_source_policy: %s (%s)", peer,
                 policy_reason_code(d.reason), d.rule);
        return false;
    }
    log_info("conn %s: inbound_source_policy would refuse it: %s (%s); served (log mode)", peer,
             policy_reason_code(d.reason), d.rule);
    return true;
}

int conn_accept(struct conn *c, struct listener *l, const struct conn_handler *h, int fd)
{
    struct worker *w = l->w;
    c->w = w;
    c->l = l;
    c->h = h;
    c->rbuf = BUF_INIT;
    c->wbuf = BUF_INIT;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    c->handles = 2;
    worker_conn_add(w, c);
    int rc = fd >= 0 ? uv_tcp_open(&c->tcp, fd)
                     : uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        if (fd >= 0)
            close(fd);
        conn_close(c);
        return 0;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    c->peer_ip[0] = '\0';
    snprintf(c->peer, sizeof(c->peer), "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
            uv_ip6_name(s6, c->peer_ip, sizeof(c->peer_ip));
            snprintf(c->peer, sizeof(c->peer), "[%s]:%u", c->peer_ip, ntohs(s6->sin6_port));
        } else {
            const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
            uv_ip4_name(s4, c->peer_ip, sizeof(c->peer_ip));
            snprintf(c->peer, sizeof(c->peer), "%s:%u", c->peer_ip, ntohs(s4->sin_port));
        }
    }
    /* the source policy is about federation peers: the egress and admin listeners are the
     * homeservers' and the operators', on addresses only they reach */
    if (c->peer_ip[0] && l->cfg->type == LISTENER_FEDERATION &&
        !source_allowed(w, (const struct sockaddr *)&ss, c->peer)) {
        conn_close(c);
        return 0;
    }
    if (w->nconns > w->cfg->limits.max_connections) {
        log_warn("conn %s: over max_connections (%llu), closed", c->peer,
                 (unsigned long long)w->cfg->limits.max_connections);
        conn_close(c);
        return 0;
    }
    if (l->cfg->tls) {
        if (tls_conn_init(&c->tls, w->tls) < 0) {
            conn_close(c);
            return 0;
        }
        c->flags |= CONN_F_TLS | CONN_F_HANDSHAKE;
        uv_timer_start(&c->timer, on_timer, w->cfg->limits.tls_handshake_timeout_ms, 0);
    }
    update_reading(c);
    if (!(c->flags & CONN_F_TLS))
        c->h->on_open(c);
    return 0;
}

int conn_start_tls(struct conn *c, struct tls_server *srv)
{
    if (c->flags & (CONN_F_TLS | CONN_F_CLOSING | CONN_F_LINGER | CONN_F_CLOSE_AFTER))
        return CH_EINVAL;
    /* What the role queued ("200 Connection established") is the last thing sent in clear. */
    conn_flush(c);
    if (c->flags & CONN_F_CLOSING)
        return CH_EIO;
    int rc = tls_conn_init(&c->tls, srv);
    if (rc < 0)
        return rc;
    c->flags |= CONN_F_TLS | CONN_F_HANDSHAKE;
    uv_timer_start(&c->timer, on_timer, c->w->cfg->limits.tls_handshake_timeout_ms, 0);
    /* A client may send its ClientHello right behind the CONNECT without waiting for the 200:
     * those bytes, still in rbuf, are the start of the handshake. */
    if (c->rbuf.len) {
        rc = tls_conn_feed(&c->tls, buf_data(&c->rbuf), c->rbuf.len);
        buf_reset(&c->rbuf);
        if (rc < 0)
            return rc;
        tls_input(c);
        if (c->flags & CONN_F_CLOSING)
            return CH_ETLS;
    }
    update_reading(c);
    return 0;
}
