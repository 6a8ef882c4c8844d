/* conn.h -- a client connection: TCP (and TLS) I/O, output queue, timers, close. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_CONN_H
#define CHAPPE_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "chappe/buf.h"
#include "chappe/tls.h"
#include "chappe/worker.h"

/* Output above this many bytes (queued + in flight) means: stop producing. */
#define CONN_WRITE_HIGH (256 * 1024)
/* ... and below this, producing may resume (on_writable). */
#define CONN_WRITE_LOW (64 * 1024)

struct conn;

/* What the role (inbound, later egress/admin) does with the connection's events. */
struct conn_handler {
    /* Ready for application data: right after accept, or once the TLS handshake is done. */
    void (*on_open)(struct conn *c);
    /* New plaintext bytes are in c->rbuf (the handler consumes what it uses). */
    void (*on_read)(struct conn *c);
    /* Output fell below CONN_WRITE_LOW after having been above CONN_WRITE_HIGH. */
    void (*on_writable)(struct conn *c);
    /* The peer ended its side (EOF, close_notify) or a read error happened. */
    void (*on_eof)(struct conn *c, int err);
    /* The timer set with conn_set_timer fired. */
    void (*on_timer)(struct conn *c);
    /* The worker is draining (SIGTERM): finish or close. */
    void (*on_drain)(struct conn *c);
    /* The connection is closed: release the role's state; the handler frees the object. */
    void (*on_close)(struct conn *c);
};

enum {
    CONN_F_TLS = 1 << 0,           /* TLS listener: bytes pass through c->tls */
    CONN_F_HANDSHAKE = 1 << 1,     /* TLS handshake not finished yet */
    CONN_F_READING = 1 << 2,       /* uv_read_start active */
    CONN_F_PAUSED = 1 << 3,        /* the handler asked to stop reading */
    CONN_F_CLOSING = 1 << 4,       /* uv_close called on the handles */
    CONN_F_LINGER = 1 << 5,        /* output flushed, FIN sent, discarding input until close */
    CONN_F_CLOSE_AFTER = 1 << 6,   /* close once the output is flushed */
    CONN_F_WANT_WRITABLE = 1 << 7, /* on_writable owed once output drains */
    CONN_F_EOF = 1 << 8,           /* the peer finished sending */
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct link link; /* in worker->conns */
    struct worker *w;
    const struct listener *l;
    const struct conn_handler *h;
    unsigned flags;
    int handles; /* handles still open; freed through on_close when 0 */
    struct tls_conn tls;
    struct buf rbuf; /* plaintext received, not yet consumed by the handler */
    struct buf wbuf; /* plaintext queued, not yet flushed */
    size_t inflight; /* bytes handed to uv_write and not yet written */
    uint64_t bytes_in, bytes_out;
    char peer_ip[48]; /* textual peer address, for X-Forwarded-For and logs */
    char peer[64];    /* ip:port */
};

/*
 * Accept a connection on listener l into c (embedded in the role's object)
 * and start reading. fd < 0: take it from the listener (uv_accept); fd >= 0:
 * a socket another worker accepted and handed over (c then owns it). 0, or a negative code (c is
 * then not to be used; the caller frees it).
 */
int conn_accept(struct conn *c, struct listener *l, const struct conn_handler *h, int fd);
/*
 * Turn the open plain connection c into a TLS server session with srv's
 * certificate (CONNECT interception: the role has queued "200 Connection
 * established" and the client now starts a handshake). Output already queued
 * is sent in clear first; bytes already in c->rbuf are taken as the start of
 * the handshake. The handshake timer (limits.tls_handshake_timeout_ms)
 * replaces the role's timer; once the handshake is done on_open runs again.
 * Reading resumes unless the role paused it. Takes a reference on srv. 0, or a
 * negative code: the caller then closes c (the handshake may already have
 * failed on the buffered bytes, leaving c closing).
 */
int conn_start_tls(struct conn *c, struct tls_server *srv);
/* Queue plaintext; call conn_flush (or return to the loop after conn_flush) to send. */
static inline struct buf *conn_out(struct conn *c)
{
    return &c->wbuf;
}
/* Encrypt (TLS) and hand queued output to the socket. */
void conn_flush(struct conn *c);
/* Bytes queued or in flight. */
static inline size_t conn_pending(const struct conn *c)
{
    return c->wbuf.len + c->inflight + c->tls.out.len;
}
void conn_pause_read(struct conn *c);
void conn_resume_read(struct conn *c);
/* Arm (ms > 0) or stop (ms == 0) the handler's timer. */
void conn_set_timer(struct conn *c, uint64_t ms);
/* Flush, then half-close and discard input briefly (lingering close), then close. */
void conn_close_after_flush(struct conn *c);
/* Close now; queued output is dropped. */
void conn_close(struct conn *c);
/* Release buffers an idle connection does not need. */
void conn_trim(struct conn *c);

#endif
