/* test_client.c -- unit tests for client.c: real loopback TLS connections to an in-process test
 * server on the same libuv loop. */
/* SPDX-License-Identifier: ISC */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "chappe/buf.h"
#include "chappe/client.h"
#include "chappe/config.h"
#include "chappe/log.h"
#include "chappe/policy.h"
#include "chappe/tls.h"
#include "chappe/util.h"

#include "testcerts.h"

#ifndef CHAPPE_VERSION
#define CHAPPE_VERSION "0.1.0"
#endif

/* Every test's loop stops here at the latest. */
#define GUARD_MS 5000

/* ------------------------------------------------------------------------------------------ */
/* Certificates: certs/gen.sh into a temporary directory */

static struct tls_material *material;

static int group_setup(void **state)
{
    (void)state;
    if (tls_global_init() != 0)
        return -1;
    if (testcerts_make("client") != 0)
        return -1;
    return testcerts_material("server", &material);
}

static int group_teardown(void **state)
{
    (void)state;
    tls_material_unref(material);
    testcerts_remove();
    tls_global_free();
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The test server: TLS on 127.0.0.1, a scripted HTTP responder */

enum srv_mode {
    SRV_CL,                /* 200 "hello" with Content-Length, keep-alive */
    SRV_CHUNKED,           /* 200 "hello world" in three chunks */
    SRV_SILENT,            /* handshakes, reads, never answers */
    SRV_NO_TLS,            /* accepts TCP, never says a word */
    SRV_ONE_PER_CONN,      /* answers the first request of a connection, closes on the next */
    SRV_CLOSE_IDLE,        /* answers (keep-alive), then closes the connection 50 ms later */
    SRV_UNTIL_CLOSE,       /* body delimited by the close, after a close_notify */
    SRV_UNTIL_CLOSE_NO_CN, /* the same, with a bare TCP close: maybe truncated */
    SRV_BIG_HEAD,          /* a head over 1 KiB */
    SRV_INTERIM,           /* 100 Continue, 103 Early Hints, then 200 */
    SRV_BIG_BODY,          /* 256 KiB with Content-Length */
    SRV_BAD_FRAMING,       /* Content-Length with Transfer-Encoding (RFC 9112 section 6.1) */
};

#define BIG_BODY (256 * 1024)

struct tsrv;

struct tsconn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct tsrv *s;
    struct tsconn *next;
    struct tls_conn tls;
    bool tls_on, closing;
    int handles;
    int nreq;
    struct buf plain;
};

struct tsrv {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    struct tls_server *tls;
    enum srv_mode mode;
    bool unref; /* the server's handles do not keep the loop alive */
    int accepts, requests, closed;
    char sni[256]; /* of the last handshake; "" for none */
    struct buf last_request;
    struct tsconn *conns;
};

static void ts_on_closed(uv_handle_t *h)
{
    struct tsconn *k = h->data;
    if (--k->handles > 0)
        return;
    struct tsrv *s = k->s;
    for (struct tsconn **pp = &s->conns; *pp; pp = &(*pp)->next)
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    if (k->tls_on)
        tls_conn_free(&k->tls);
    buf_free(&k->plain);
    s->closed++;
    free(k);
}

static void ts_close(struct tsconn *k)
{
    if (k->closing)
        return;
    k->closing = true;
    uv_close((uv_handle_t *)&k->timer, ts_on_closed);
    uv_close((uv_handle_t *)&k->tcp, ts_on_closed);
}

static void ts_on_write(uv_write_t *req, int status)
{
    (void)status;
    free(req->data);
    free(req);
}

/* Write whatever TLS produced. */
static void ts_flush(struct tsconn *k)
{
    if (k->tls.out.len == 0 || k->closing)
        return;
    uv_write_t *req = malloc(sizeof(*req));
    char *copy = malloc(k->tls.out.len);
    assert_non_null(req);
    assert_non_null(copy);
    memcpy(copy, buf_data(&k->tls.out), k->tls.out.len);
    req->data = copy;
    uv_buf_t b = uv_buf_init(copy, (unsigned)k->tls.out.len);
    buf_reset(&k->tls.out);
    assert_int_equal(uv_write(req, (uv_stream_t *)&k->tcp, &b, 1, ts_on_write), 0);
}

static void ts_send(struct tsconn *k, const char *p, size_t n)
{
    assert_int_equal(tls_conn_write(&k->tls, p, n), 0);
    ts_flush(k);
}

static void ts_send_str(struct tsconn *k, const char *s)
{
    ts_send(k, s, strlen(s));
}

static void ts_close_later(uv_timer_t *t)
{
    ts_close(t->data);
}

static void respond(struct tsconn *k, bool head)
{
    struct tsrv *s = k->s;
    switch (s->mode) {
    case SRV_CL:
        ts_send_str(k, head ? "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
                            : "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        break;
    case SRV_CHUNKED:
        /* In two writes: the client must stitch records and chunks together. */
        ts_send_str(k, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
        ts_send_str(k, "lo\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n");
        break;
    case SRV_SILENT:
    case SRV_NO_TLS:
        break;
    case SRV_ONE_PER_CONN:
        if (k->nreq == 1)
            ts_send_str(k, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        else
            ts_close(k); /* as if the idle timeout had struck just before */
        break;
    case SRV_CLOSE_IDLE:
        ts_send_str(k, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        uv_timer_start(&k->timer, ts_close_later, 50, 0);
        break;
    case SRV_UNTIL_CLOSE:
    case SRV_UNTIL_CLOSE_NO_CN:
        ts_send_str(k, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it");
        if (s->mode == SRV_UNTIL_CLOSE)
            tls_conn_close_notify(&k->tls);
        ts_flush(k);
        ts_close(k);
        break;
    case SRV_BIG_HEAD: {
        char big[2048];
        memset(big, 'a', sizeof(big));
        ts_send_str(k, "HTTP/1.1 200 OK\r\nX-Big: ");
        ts_send(k, big, sizeof(big));
        ts_send_str(k, "\r\nContent-Length: 0\r\n\r\n");
        break;
    }
    case SRV_INTERIM:
        ts_send_str(k, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        break;
    case SRV_BAD_FRAMING:
        ts_send_str(k, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5\r\nhello\r\n0\r\n\r\n");
        break;
    case SRV_BIG_BODY: {
        char *body = malloc(BIG_BODY);
        assert_non_null(body);
        for (size_t i = 0; i < BIG_BODY; i++)
            body[i] = (char)('a' + i % 26);
        ts_send_str(k, "HTTP/1.1 200 OK\r\nContent-Length: 262144\r\n\r\n");
        ts_send(k, body, BIG_BODY);
        free(body);
        break;
    }
    }
}

/* Complete requests in k->plain: a head, and a body when it says Content-Length. */
static void ts_requests(struct tsconn *k)
{
    struct tsrv *s = k->s;
    while (!k->closing) {
        const char *p = buf_data(&k->plain);
        const char *end = memmem(p, k->plain.len, "\r\n\r\n", 4);
        if (end == NULL)
            return;
        size_t head = (size_t)(end - p) + 4, body = 0;
        const char *cl = memmem(p, head, "\r\nContent-Length: ", 18);
        if (cl != NULL)
            body = strtoul(cl + 18, NULL, 10);
        if (k->plain.len < head + body)
            return;
        s->requests++;
        k->nreq++;
        buf_reset(&s->last_request);
        assert_int_equal(buf_append(&s->last_request, p, head + body), 0);
        bool is_head = strncmp(p, "HEAD ", 5) == 0;
        buf_consume(&k->plain, head + body);
        respond(k, is_head);
    }
}

static void ts_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    static char rd[65536];
    (void)suggested;
    *b = uv_buf_init(rd, sizeof(rd));
}

static void ts_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    struct tsconn *k = st->data;
    if (k->closing || nread == 0)
        return;
    if (nread < 0) {
        ts_close(k);
        return;
    }
    if (!k->tls_on)
        return; /* SRV_NO_TLS: ignore everything */
    assert_int_equal(tls_conn_feed(&k->tls, b->base, (size_t)nread), 0);
    if (!k->tls.handshake_done) {
        int rc = tls_conn_handshake(&k->tls);
        ts_flush(k);
        if (rc == CH_EAGAIN)
            return;
        if (rc < 0) {
            ts_close(k);
            return;
        }
        const char *sni = tls_conn_sni(&k->tls);
        snprintf(k->s->sni, sizeof(k->s->sni), "%s", sni ? sni : "");
    }
    int rc = tls_conn_read(&k->tls, &k->plain);
    ts_flush(k);
    if (rc < 0) {
        ts_close(k);
        return;
    }
    ts_requests(k);
}

static void ts_on_connection(uv_stream_t *l, int status)
{
    struct tsrv *s = l->data;
    assert_int_equal(status, 0);
    struct tsconn *k = calloc(1, sizeof(*k));
    assert_non_null(k);
    k->s = s;
    k->plain = BUF_INIT;
    uv_tcp_init(s->loop, &k->tcp);
    uv_timer_init(s->loop, &k->timer);
    k->tcp.data = k;
    k->timer.data = k;
    k->handles = 2;
    k->next = s->conns;
    s->conns = k;
    if (s->unref) {
        uv_unref((uv_handle_t *)&k->tcp);
        uv_unref((uv_handle_t *)&k->timer);
    }
    assert_int_equal(uv_accept(l, (uv_stream_t *)&k->tcp), 0);
    s->accepts++;
    if (s->mode != SRV_NO_TLS) {
        assert_int_equal(tls_conn_init(&k->tls, s->tls), 0);
        k->tls_on = true;
    }
    assert_int_equal(uv_read_start((uv_stream_t *)&k->tcp, ts_alloc, ts_on_read), 0);
}

static void ts_start(struct tsrv *s, uv_loop_t *loop, enum srv_mode mode)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->mode = mode;
    s->last_request = BUF_INIT;
    assert_int_equal(tls_server_new(material, &s->tls), 0);
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", 0, &sin);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&sin, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 16, ts_on_connection), 0);
    int len = sizeof(sin);
    assert_int_equal(uv_tcp_getsockname(&s->listener, (struct sockaddr *)&sin, &len), 0);
    s->port = ntohs(sin.sin_port);
}

static void ts_stop(struct tsrv *s)
{
    for (struct tsconn *k = s->conns; k; k = k->next)
        ts_close(k);
    uv_close((uv_handle_t *)&s->listener, NULL);
    tls_server_unref(s->tls);
    buf_free(&s->last_request);
}

/* ------------------------------------------------------------------------------------------ */
/* Fixture: a loop, a config, a policy, a client, a server */

struct fx {
    uv_loop_t loop;
    struct config cfg;
    struct cfg_cidr sovereign[2], white[2];
    char *cas[1];
    char ca_path[256];
    struct policy *pol;
    struct client *cl;
    struct tsrv srv;
};

static void set_cidr(struct cfg_cidr *c, int family, const char *ip, int len)
{
    memset(c, 0, sizeof(*c));
    c->cidr.family = (uint8_t)family;
    c->cidr.len = (uint8_t)len;
    assert_int_equal(inet_pton(family == 4 ? AF_INET : AF_INET6, ip, c->cidr.addr), 1);
    c->label = (char *)"test";
}

static void fx_config(struct fx *f)
{
    struct config *cfg = &f->cfg;
    memset(cfg, 0, sizeof(*cfg));
    cfg->limits.max_header_bytes = 16384;
    cfg->limits.outbound_connect_timeout_ms = 2000;
    cfg->limits.outbound_tls_timeout_ms = 2000;
    cfg->limits.outbound_timeout_ms = 2000;
    cfg->limits.outbound_idle_timeout_ms = 5000;
    cfg->limits.outbound_keepalive = 4;
    cfg->federation_verify_certificates = true;
    snprintf(f->ca_path, sizeof(f->ca_path), "%s", path("ca.crt"));
    f->cas[0] = f->ca_path;
    cfg->federation_custom_ca_list = f->cas;
    cfg->nfederation_custom_ca_list = 1;
    cfg->federation_any = true;
    /* Loopback is in Synapse's default blacklist: the whitelist lets these through. */
    set_cidr(&f->sovereign[0], 4, "127.0.0.1", 32);
    set_cidr(&f->sovereign[1], 6, "::1", 128);
    set_cidr(&f->white[0], 4, "127.0.0.0", 8);
    set_cidr(&f->white[1], 6, "::1", 128);
    cfg->sovereign_ranges.present = true;
    cfg->sovereign_ranges.items = f->sovereign;
    cfg->sovereign_ranges.nitems = 2;
    cfg->ip_range_whitelist.present = true;
    cfg->ip_range_whitelist.items = f->white;
    cfg->ip_range_whitelist.nitems = 2;
}

static struct policy *new_policy(const struct config *cfg)
{
    struct buf err = BUF_INIT;
    struct policy *p = NULL;
    int rc = policy_new(cfg, &p, &err);
    if (rc != 0)
        fprintf(stderr, "%.*s", (int)err.len, buf_data(&err));
    assert_int_equal(rc, 0);
    buf_free(&err);
    return p;
}

/* The loop, config, policy and server; the client is made by fx_client (after config tweaks). */
static void fx_init(struct fx *f, enum srv_mode mode)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    fx_config(f);
    ts_start(&f->srv, &f->loop, mode);
}

static void fx_client(struct fx *f)
{
    f->pol = new_policy(&f->cfg);
    struct buf err = BUF_INIT;
    int rc = client_new(&f->loop, &f->cfg, f->pol, &f->cl, &err);
    if (rc != 0)
        fprintf(stderr, "%.*s", (int)err.len, buf_data(&err));
    assert_int_equal(rc, 0);
    buf_free(&err);
}

static void fx_free(struct fx *f)
{
    client_free(f->cl);
    ts_stop(&f->srv);
    /* Everything closes without help: the loop ends by itself. */
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    policy_unref(f->pol);
}

static struct client_stats stats(const struct fx *f)
{
    struct client_stats st;
    client_get_stats(f->cl, &st);
    return st;
}

static void target_ip(struct client_target *t, const char *ip, int port, const char *tls_name,
                      int tls_family)
{
    memset(t, 0, sizeof(*t));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&t->addr;
        assert_int_equal(uv_ip6_addr(ip, port, s6), 0);
        t->addrlen = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&t->addr;
        assert_int_equal(uv_ip4_addr(ip, port, s4), 0);
        t->addrlen = sizeof(*s4);
    }
    snprintf(t->host, sizeof(t->host), "%s:%d", tls_name, port);
    snprintf(t->tls_name, sizeof(t->tls_name), "%s", tls_name);
    t->tls_ip_family = tls_family;
    if (tls_family)
        assert_int_equal(inet_pton(tls_family == 4 ? AF_INET : AF_INET6, tls_name, t->tls_ip), 1);
}

static void target(struct client_target *t, const struct fx *f, const char *tls_name)
{
    target_ip(t, "127.0.0.1", f->srv.port, tls_name, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* A recording exchange owner */

struct rec {
    struct fx *f;
    struct client_exchange *x;
    int connected, heads, completes, errors;
    bool reused;
    int status;
    bool keep_alive;
    int err;
    bool sent;
    char why[600];
    struct buf body;
    /* behaviours */
    bool pause_on_head;
    size_t body_at_resume; /* body bytes seen when the resume timer fired */
    uv_timer_t resume_timer;
    bool abort_on_head;
    int body_rc;                 /* returned by on_body */
    bool send_again_on_complete; /* a second exchange from inside on_complete */
    struct rec *again;
    const struct client_target *again_t;
};

static const struct client_handler rec_handler;

static void rec_init(struct rec *r, struct fx *f)
{
    memset(r, 0, sizeof(*r));
    r->f = f;
    r->body = BUF_INIT;
}

static void rec_free(struct rec *r)
{
    buf_free(&r->body);
}

static int rec_done(const struct rec *r)
{
    return r->completes + r->errors;
}

static void rec_on_connected(void *ud, const struct client_target *t, bool reused)
{
    struct rec *r = ud;
    (void)t;
    r->connected++;
    r->reused = reused;
}

static int rec_on_head(void *ud, const struct http_msg *msg)
{
    struct rec *r = ud;
    r->heads++;
    r->status = msg->status;
    r->keep_alive = msg->keep_alive;
    if (r->pause_on_head)
        client_pause_read(r->x);
    if (r->abort_on_head)
        client_abort(r->x);
    return 0;
}

static int rec_on_body(void *ud, const char *p, size_t n)
{
    struct rec *r = ud;
    assert_int_equal(buf_append(&r->body, p, n), 0);
    return r->body_rc;
}

static void rec_on_complete(void *ud)
{
    struct rec *r = ud;
    uv_stop(&r->f->loop);
    r->completes++;
    if (r->send_again_on_complete) {
        static const struct client_request get = {"GET", "/again", NULL, NULL, 0};
        r->again->x = client_send(r->f->cl, r->again_t, &get, &rec_handler, r->again);
        assert_non_null(r->again->x);
    }
}

static void rec_on_error(void *ud, int err, const char *why, bool sent)
{
    struct rec *r = ud;
    uv_stop(&r->f->loop); /* the waiting loop looks again (a 0 ms timer would not wake it) */
    r->errors++;
    r->err = err;
    r->sent = sent;
    snprintf(r->why, sizeof(r->why), "%s", why);
}

static const struct client_handler rec_handler = {rec_on_connected, rec_on_head, rec_on_body,
                                                  rec_on_complete, rec_on_error};

static void send_req(struct fx *f, struct rec *r, const struct client_target *t,
                     const struct client_request *req)
{
    r->x = client_send(f->cl, t, req, &rec_handler, r);
    assert_non_null(r->x);
    /* Never a callback from inside client_send. */
    assert_int_equal(r->connected + r->heads + rec_done(r), 0);
}

static void get(struct fx *f, struct rec *r, const struct client_target *t, const char *target)
{
    struct client_request req = {"GET", target, NULL, NULL, 0};
    send_req(f, r, t, &req);
}

static void on_guard(uv_timer_t *t)
{
    *(bool *)t->data = true;
    uv_stop(t->loop);
}

/* Run the loop until *n >= want, or GUARD_MS. Returns the milliseconds it took. */
static uint64_t run_until(struct fx *f, const int *n, int want)
{
    bool expired = false;
    uv_timer_t guard;
    uv_timer_init(&f->loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, on_guard, GUARD_MS, 0);
    uint64_t t0 = util_mono_ms();
    while (*n < want && !expired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uint64_t took = util_mono_ms() - t0;
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    if (expired)
        fail_msg("the loop did not get there within %d ms", GUARD_MS);
    return took;
}

/* Run until r's exchange is over. */
static uint64_t wait_done(struct fx *f, struct rec *r)
{
    bool expired = false;
    uv_timer_t guard;
    uv_timer_init(&f->loop, &guard);
    guard.data = &expired;
    uv_timer_start(&guard, on_guard, GUARD_MS, 0);
    uint64_t t0 = util_mono_ms();
    while (rec_done(r) == 0 && !expired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uint64_t took = util_mono_ms() - t0;
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    if (expired)
        fail_msg("the exchange did not end within %d ms", GUARD_MS);
    return took;
}

static void on_sleep(uv_timer_t *t)
{
    *(int *)t->data = 1;
    uv_stop(t->loop);
}

/* Let the loop run for ms (server-side closes, timers). */
static void spin(struct fx *f, uint64_t ms)
{
    int done = 0;
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    t.data = &done;
    uv_timer_start(&t, on_sleep, ms, 0);
    run_until(f, &done, 1);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void assert_ok(const struct rec *r, int status, const char *body)
{
    if (r->errors)
        fail_msg("exchange failed: %d %s", r->err, r->why);
    assert_int_equal(r->completes, 1);
    assert_int_equal(r->heads, 1);
    assert_int_equal(r->status, status);
    assert_int_equal(r->body.len, strlen(body));
    assert_memory_equal(buf_data(&r->body), body, r->body.len);
}

static void assert_failed(const struct rec *r, int err, const char *why_has, bool sent)
{
    assert_int_equal(r->completes, 0);
    assert_int_equal(r->errors, 1);
    if (r->err != err)
        fail_msg("error %d (%s), expected %d", r->err, r->why, err);
    if (strstr(r->why, why_has) == NULL)
        fail_msg("\"%s\" does not contain \"%s\"", r->why, why_has);
    assert_int_equal(r->sent, sent);
}

/* ------------------------------------------------------------------------------------------ */
/* Tests: the core paths */

static void test_get_content_length(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    get(&f, &r, &t, "/_matrix/federation/v1/version");
    wait_done(&f, &r);
    assert_ok(&r, 200, "hello");
    assert_int_equal(r.connected, 1);
    assert_false(r.reused);
    assert_true(r.keep_alive);
    char want[256];
    snprintf(want, sizeof(want),
             "GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: localhost:%d\r\n"
             "User-Agent: chappe/%s\r\n\r\n",
             f.srv.port, CHAPPE_VERSION);
    assert_int_equal(f.srv.last_request.len, strlen(want));
    assert_memory_equal(buf_data(&f.srv.last_request), want, strlen(want));
    assert_string_equal(f.srv.sni, "localhost");
    struct client_stats st = stats(&f);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.reuses, 0);
    assert_int_equal(st.denied, 0);
    assert_int_equal(st.tls_failed, 0);
    rec_free(&r);
    fx_free(&f);
}

static void test_chunked(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_CHUNKED);
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    get(&f, &r, &t, "/chunked");
    wait_done(&f, &r);
    assert_ok(&r, 200, "hello world");
    rec_free(&r);
    fx_free(&f);
}

static void test_post_serialisation(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    char body[] = "{\"a\":1}";
    struct client_request req = {
        "POST", "/_matrix/federation/v1/send/1",
        "Authorization: X-Matrix origin=\"a.example\",key=\"ed25519:x\",sig=\"s\"\r\n"
        "Content-Type: application/json\r\n",
        body, strlen(body)};
    send_req(&f, &r, &t, &req);
    body[0] = 'X'; /* the request was copied */
    wait_done(&f, &r);
    assert_ok(&r, 200, "hello");
    char want[512];
    snprintf(want, sizeof(want),
             "POST /_matrix/federation/v1/send/1 HTTP/1.1\r\nHost: localhost:%d\r\n"
             "User-Agent: chappe/%s\r\n"
             "Authorization: X-Matrix origin=\"a.example\",key=\"ed25519:x\",sig=\"s\"\r\n"
             "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
             f.srv.port, CHAPPE_VERSION);
    assert_int_equal(f.srv.last_request.len, strlen(want));
    assert_memory_equal(buf_data(&f.srv.last_request), want, strlen(want));
    rec_free(&r);
    fx_free(&f);
}

static void test_keepalive_reuse(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    target(&t, &f, "localhost");
    get(&f, &r1, &t, "/one");
    wait_done(&f, &r1);
    assert_ok(&r1, 200, "hello");
    get(&f, &r2, &t, "/two");
    wait_done(&f, &r2);
    assert_ok(&r2, 200, "hello");
    assert_int_equal(r2.connected, 1);
    assert_true(r2.reused);
    struct client_stats st = stats(&f);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.reuses, 1);
    assert_int_equal(f.srv.accepts, 1);
    assert_int_equal(f.srv.requests, 2);
    rec_free(&r1);
    rec_free(&r2);
    fx_free(&f);
}

static void test_reuse_from_on_complete(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    target(&t, &f, "localhost");
    /* The connection is back in the pool before on_complete runs. */
    r1.send_again_on_complete = true;
    r1.again = &r2;
    r1.again_t = &t;
    get(&f, &r1, &t, "/one");
    wait_done(&f, &r1);
    wait_done(&f, &r2);
    assert_ok(&r2, 200, "hello");
    assert_true(r2.reused);
    assert_int_equal(stats(&f).connects, 1);
    assert_int_equal(stats(&f).reuses, 1);
    rec_free(&r1);
    rec_free(&r2);
    fx_free(&f);
}

static void test_policy_denied(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r, &f);
    /* 127.0.0.2 is whitelisted out of the blacklist but not sovereign. */
    target_ip(&t, "127.0.0.2", f.srv.port, "localhost", 0);
    uint64_t before = policy_counter(POLICY_OUTBOUND, POLICY_ADDRESS_NOT_SOVEREIGN);
    get(&f, &r, &t, "/denied");
    wait_done(&f, &r);
    assert_failed(&r, CH_EPERM, "address_not_sovereign: 127.0.0.2", false);
    assert_int_equal(strncmp(r.why, "address_not_sovereign: 127.0.0.2", 32), 0);
    assert_int_equal(r.connected, 0);
    assert_int_equal(policy_counter(POLICY_OUTBOUND, POLICY_ADDRESS_NOT_SOVEREIGN), before + 1);
    spin(&f, 50);
    assert_int_equal(f.srv.accepts, 0);
    struct client_stats st = stats(&f);
    assert_int_equal(st.connects, 0);
    assert_int_equal(st.denied, 1);
    rec_free(&r);
    fx_free(&f);
}

static void test_connection_refused(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r, &f);
    /* A port that was just free: bind, note, close. */
    uv_tcp_t probe;
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", 0, &sin);
    uv_tcp_init(&f.loop, &probe);
    assert_int_equal(uv_tcp_bind(&probe, (const struct sockaddr *)&sin, 0), 0);
    int len = sizeof(sin);
    assert_int_equal(uv_tcp_getsockname(&probe, (struct sockaddr *)&sin, &len), 0);
    int port = ntohs(sin.sin_port);
    uv_close((uv_handle_t *)&probe, NULL);
    uv_run(&f.loop, UV_RUN_NOWAIT);

    target_ip(&t, "127.0.0.1", port, "localhost", 0);
    get(&f, &r, &t, "/refused");
    wait_done(&f, &r);
    char want[64];
    snprintf(want, sizeof(want), "connect to 127.0.0.1:%d: ", port);
    assert_failed(&r, CH_EIO, want, false);
    assert_int_equal(r.connected, 0);
    assert_int_equal(stats(&f).connects, 1);
    rec_free(&r);
    fx_free(&f);
}

static void test_response_timeout(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_SILENT);
    f.cfg.limits.outbound_timeout_ms = 300;
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    get(&f, &r, &t, "/silence");
    uint64_t took = wait_done(&f, &r);
    assert_failed(&r, CH_ETIMEOUT, "no response from 127.0.0.1:", true);
    assert_int_equal(r.connected, 1);
    assert_true(took >= 250);
    assert_true(took < 2000);
    assert_int_equal(f.srv.requests, 1);
    rec_free(&r);
    fx_free(&f);
}

static void test_tls_handshake_timeout(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_NO_TLS);
    f.cfg.limits.outbound_tls_timeout_ms = 300;
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    get(&f, &r, &t, "/");
    uint64_t took = wait_done(&f, &r);
    assert_failed(&r, CH_ETIMEOUT, "TLS handshake with 127.0.0.1:", false);
    assert_true(took >= 250);
    assert_true(took < 2000);
    assert_int_equal(r.connected, 0);
    assert_int_equal(stats(&f).tls_failed, 1);
    rec_free(&r);
    fx_free(&f);
}

static void test_tls_wrong_name(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "wrong.localhost");
    get(&f, &r, &t, "/");
    wait_done(&f, &r);
    assert_failed(&r, CH_ETLS, "certificate is not valid for wrong.localhost", false);
    assert_int_equal(r.connected, 0);
    struct client_stats st = stats(&f);
    assert_int_equal(st.tls_failed, 1);
    assert_int_equal(st.connects, 1);
    spin(&f, 20);
    assert_int_equal(f.srv.requests, 0);
    rec_free(&r);
    fx_free(&f);
}

static void test_ip_literal_target(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r, &f);
    target_ip(&t, "127.0.0.1", f.srv.port, "127.0.0.1", 4);
    snprintf(f.srv.sni, sizeof(f.srv.sni), "unset");
    get(&f, &r, &t, "/ip");
    wait_done(&f, &r);
    assert_ok(&r, 200, "hello");
    assert_string_equal(f.srv.sni, ""); /* no SNI for an IP literal */
    rec_free(&r);

    /* The same address under a TLS name the certificate lacks: no SAN for 127.0.0.2. */
    rec_init(&r, &f);
    target_ip(&t, "127.0.0.1", f.srv.port, "127.0.0.2", 4);
    get(&f, &r, &t, "/ip");
    wait_done(&f, &r);
    assert_failed(&r, CH_ETLS, "certificate has no iPAddress SAN for 127.0.0.2", false);
    /* A different TLS name is a different pool key: no reuse of the first connection. */
    assert_int_equal(stats(&f).reuses, 0);
    assert_int_equal(stats(&f).connects, 2);
    rec_free(&r);
    fx_free(&f);
}

static void test_stale_get_retried(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2;
    struct client_target t;
    fx_init(&f, SRV_ONE_PER_CONN);
    fx_client(&f);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    target(&t, &f, "localhost");
    get(&f, &r1, &t, "/one");
    wait_done(&f, &r1);
    assert_ok(&r1, 200, "hello");
    /* The pooled connection dies when used: the GET goes again on a new one, unnoticed. */
    get(&f, &r2, &t, "/two");
    wait_done(&f, &r2);
    assert_ok(&r2, 200, "hello");
    assert_int_equal(r2.connected, 2); /* the pooled connection, then the new one */
    assert_false(r2.reused);
    struct client_stats st = stats(&f);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.reuses, 1);
    assert_int_equal(f.srv.accepts, 2);
    assert_int_equal(f.srv.requests, 3);
    rec_free(&r1);
    rec_free(&r2);
    fx_free(&f);
}

static void test_stale_post_not_retried(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2;
    struct client_target t;
    fx_init(&f, SRV_ONE_PER_CONN);
    fx_client(&f);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    target(&t, &f, "localhost");
    get(&f, &r1, &t, "/one");
    wait_done(&f, &r1);
    assert_ok(&r1, 200, "hello");
    struct client_request post = {"POST", "/two", NULL, "{}", 2};
    send_req(&f, &r2, &t, &post);
    wait_done(&f, &r2);
    assert_failed(&r2, CH_EIO, "closed the connection without a response", true);
    struct client_stats st = stats(&f);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.reuses, 1);
    assert_int_equal(f.srv.requests, 2);
    rec_free(&r1);
    rec_free(&r2);
    fx_free(&f);
}

static void test_idle_close_noticed(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2;
    struct client_target t;
    fx_init(&f, SRV_CLOSE_IDLE);
    fx_client(&f);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    target(&t, &f, "localhost");
    get(&f, &r1, &t, "/one");
    wait_done(&f, &r1);
    assert_ok(&r1, 200, "hello");
    spin(&f, 200); /* the server closes the idle connection; the pool drops it */
    get(&f, &r2, &t, "/two");
    wait_done(&f, &r2);
    assert_ok(&r2, 200, "hello");
    assert_false(r2.reused);
    assert_int_equal(stats(&f).reuses, 0);
    assert_int_equal(stats(&f).connects, 2);
    rec_free(&r1);
    rec_free(&r2);
    fx_free(&f);
}

/* ------------------------------------------------------------------------------------------ */
/* Tests: framing and flow */

static void test_head_request(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    target(&t, &f, "localhost");
    struct client_request head = {"HEAD", "/h", NULL, NULL, 0};
    send_req(&f, &r1, &t, &head);
    wait_done(&f, &r1);
    assert_ok(&r1, 200, ""); /* Content-Length: 5, yet no body after HEAD */
    get(&f, &r2, &t, "/g");
    wait_done(&f, &r2);
    assert_ok(&r2, 200, "hello");
    assert_true(r2.reused);
    rec_free(&r1);
    rec_free(&r2);
    fx_free(&f);
}

static void test_read_until_close(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_UNTIL_CLOSE);
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    get(&f, &r, &t, "/");
    wait_done(&f, &r);
    assert_ok(&r, 200, "all of it");
    assert_false(r.keep_alive);
    rec_free(&r);
    fx_free(&f);
}

static void test_read_until_close_truncated(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_UNTIL_CLOSE_NO_CN);
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    get(&f, &r, &t, "/");
    wait_done(&f, &r);
    assert_failed(&r, CH_EIO, "without close_notify", true);
    assert_int_equal(r.heads, 1);
    rec_free(&r);
    fx_free(&f);
}

static void test_head_too_large(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_BIG_HEAD);
    f.cfg.limits.max_header_bytes = 1024;
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    get(&f, &r, &t, "/");
    wait_done(&f, &r);
    assert_failed(&r, CH_ETOOBIG, "exceeds 1024 bytes", true);
    assert_int_equal(r.heads, 0);
    rec_free(&r);
    fx_free(&f);
}

static void test_interim_responses_skipped(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_INTERIM);
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    get(&f, &r, &t, "/");
    wait_done(&f, &r);
    assert_ok(&r, 200, "ok");
    rec_free(&r);
    fx_free(&f);
}

static void test_invalid_requests(void **state)
{
    (void)state;
    static const struct client_request bad[] = {
        {"GET /x", "/", NULL, NULL, 0},
        {"GET\r\nX: y", "/", NULL, NULL, 0},
        {"", "/", NULL, NULL, 0},
        {"GET", "/a b", NULL, NULL, 0},
        {"GET", "/a\r\nX-Injected: 1", NULL, NULL, 0},
        {"GET", "http://example.org/", NULL, NULL, 0},
        {"GET", "/", "X-A: 1\r\n\r\nGET /smuggled HTTP/1.1\r\n", NULL, 0},
        {"GET", "/", "X-A: 1\nX-B: 2\r\n", NULL, 0},
        {"GET", "/", "X-A: 1", NULL, 0},
        {"GET", "/", "X-A 1\r\n", NULL, 0},
        {"GET", "/", "Host: evil\r\n", NULL, 0},
        {"POST", "/", "Content-Length: 0\r\n", "x", 1},
        {"POST", "/", "transfer-encoding: chunked\r\n", NULL, 0},
        {"GET", "/", "X-A: a\x01z\r\n", NULL, 0},
        {"POST", "/", NULL, NULL, 3},
    };
    struct fx f;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    target(&t, &f, "localhost");
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        struct rec r;
        rec_init(&r, &f);
        send_req(&f, &r, &t, &bad[i]);
        wait_done(&f, &r);
        assert_failed(&r, CH_EINVAL, "invalid request: ", false);
        rec_free(&r);
    }
    /* A Host value with a line break. */
    struct rec r;
    rec_init(&r, &f);
    snprintf(t.host, sizeof(t.host), "localhost\r\nX-Injected: 1");
    get(&f, &r, &t, "/");
    wait_done(&f, &r);
    assert_failed(&r, CH_EINVAL, "Host", false);
    rec_free(&r);
    assert_int_equal(stats(&f).connects, 0);
    spin(&f, 20);
    assert_int_equal(f.srv.accepts, 0);
    fx_free(&f);
}

static void on_resume(uv_timer_t *t)
{
    struct rec *r = t->data;
    r->body_at_resume = r->body.len;
    client_resume_read(r->x);
}

static void test_pause_resume(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_BIG_BODY);
    f.cfg.limits.outbound_timeout_ms = 300; /* shorter than the pause: paused is not idle */
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    r.pause_on_head = true;
    uv_timer_init(&f.loop, &r.resume_timer);
    r.resume_timer.data = &r;
    uv_timer_start(&r.resume_timer, on_resume, 600, 0);
    r.body_at_resume = SIZE_MAX;
    get(&f, &r, &t, "/big");
    wait_done(&f, &r);
    if (r.errors)
        fail_msg("exchange failed: %s", r.why);
    assert_int_equal(r.body_at_resume, 0); /* nothing was delivered while paused */
    assert_int_equal(r.completes, 1);
    assert_int_equal(r.body.len, BIG_BODY);
    for (size_t i = 0; i < BIG_BODY; i++)
        if (buf_data(&r.body)[i] != (char)('a' + i % 26))
            fail_msg("body differs at %zu", i);
    uv_close((uv_handle_t *)&r.resume_timer, NULL);
    rec_free(&r);
    fx_free(&f);
}

static void test_abort_in_flight(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_SILENT);
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    get(&f, &r, &t, "/");
    run_until(&f, &f.srv.requests, 1);
    client_abort(r.x);
    run_until(&f, &f.srv.closed, 1); /* the server sees the connection go */
    assert_int_equal(rec_done(&r), 0);
    assert_int_equal(r.connected, 1);
    rec_free(&r);
    fx_free(&f);
}

static void test_abort_from_on_head(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    target(&t, &f, "localhost");
    r1.abort_on_head = true;
    get(&f, &r1, &t, "/");
    run_until(&f, &r1.heads, 1);
    spin(&f, 20);
    assert_int_equal(rec_done(&r1), 0);
    assert_int_equal(r1.body.len, 0);
    /* The aborted connection was not pooled. */
    get(&f, &r2, &t, "/");
    wait_done(&f, &r2);
    assert_ok(&r2, 200, "hello");
    assert_false(r2.reused);
    rec_free(&r1);
    rec_free(&r2);
    fx_free(&f);
}

static void test_free_with_exchanges_in_flight(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2, r3;
    struct client_target t, denied;
    fx_init(&f, SRV_SILENT);
    fx_client(&f);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    rec_init(&r3, &f);
    target(&t, &f, "localhost");
    target_ip(&denied, "127.0.0.3", f.srv.port, "localhost", 0);
    get(&f, &r1, &t, "/");
    run_until(&f, &f.srv.requests, 1);
    get(&f, &r2, &t, "/connecting"); /* a second connection, not yet up */
    get(&f, &r3, &denied, "/");      /* an error owed from the loop */
    fx_free(&f);                     /* the loop runs to its end: nothing leaks */
    assert_int_equal(rec_done(&r1) + rec_done(&r2) + rec_done(&r3), 0);
    rec_free(&r1);
    rec_free(&r2);
    rec_free(&r3);
}

static void test_keepalive_bound(void **state)
{
    (void)state;
    struct fx f;
    struct rec r[4];
    struct client_target t;
    fx_init(&f, SRV_CL);
    f.cfg.limits.outbound_keepalive = 1;
    fx_client(&f);
    target(&t, &f, "localhost");
    for (int i = 0; i < 4; i++)
        rec_init(&r[i], &f);
    /* Two at once: two connections; only one stays in the pool. */
    get(&f, &r[0], &t, "/a");
    get(&f, &r[1], &t, "/b");
    wait_done(&f, &r[0]);
    wait_done(&f, &r[1]);
    assert_ok(&r[0], 200, "hello");
    assert_ok(&r[1], 200, "hello");
    assert_int_equal(stats(&f).connects, 2);
    get(&f, &r[2], &t, "/c");
    get(&f, &r[3], &t, "/d");
    wait_done(&f, &r[2]);
    wait_done(&f, &r[3]);
    assert_ok(&r[2], 200, "hello");
    assert_ok(&r[3], 200, "hello");
    assert_true(r[2].reused);
    assert_false(r[3].reused);
    assert_int_equal(stats(&f).connects, 3);
    assert_int_equal(stats(&f).reuses, 1);
    for (int i = 0; i < 4; i++)
        rec_free(&r[i]);
    fx_free(&f);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2;
    struct client_target t;
    fx_init(&f, SRV_CL);
    f.cfg.limits.outbound_idle_timeout_ms = 100;
    fx_client(&f);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    target(&t, &f, "localhost");
    get(&f, &r1, &t, "/one");
    wait_done(&f, &r1);
    run_until(&f, &f.srv.closed, 1); /* the client closes the idle connection */
    get(&f, &r2, &t, "/two");
    wait_done(&f, &r2);
    assert_ok(&r2, 200, "hello");
    assert_false(r2.reused);
    assert_int_equal(stats(&f).connects, 2);
    rec_free(&r1);
    rec_free(&r2);
    fx_free(&f);
}

static void test_idle_pool_lets_loop_end(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    f.srv.unref = true;
    uv_unref((uv_handle_t *)&f.srv.listener);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    target(&t, &f, "localhost");
    get(&f, &r1, &t, "/one");
    /* As a CLI command does: run until nothing is left to do. */
    uint64_t t0 = util_mono_ms();
    uv_run(&f.loop, UV_RUN_DEFAULT);
    assert_true(util_mono_ms() - t0 < 1000); /* not the 5 s idle timeout */
    assert_ok(&r1, 200, "hello");
    /* The connection is still pooled, and used again. */
    get(&f, &r2, &t, "/two");
    uv_run(&f.loop, UV_RUN_DEFAULT);
    assert_ok(&r2, 200, "hello");
    assert_true(r2.reused);
    rec_free(&r1);
    rec_free(&r2);
    fx_free(&f);
}

static void test_set_policy_drops_idle(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    target(&t, &f, "localhost");
    get(&f, &r1, &t, "/one");
    wait_done(&f, &r1);
    assert_ok(&r1, 200, "hello");
    /* A new policy where only ::1 is sovereign. */
    f.cfg.sovereign_ranges.items = &f.sovereign[1];
    f.cfg.sovereign_ranges.nitems = 1;
    struct policy *p2 = new_policy(&f.cfg);
    client_set_policy(f.cl, p2);
    assert_ptr_equal(client_policy(f.cl), p2);
    policy_unref(p2);
    run_until(&f, &f.srv.closed, 1); /* the pooled connection to 127.0.0.1 was closed */
    get(&f, &r2, &t, "/two");
    wait_done(&f, &r2);
    assert_failed(&r2, CH_EPERM, "address_not_sovereign: 127.0.0.1", false);
    assert_int_equal(stats(&f).denied, 1);
    rec_free(&r1);
    rec_free(&r2);
    fx_free(&f);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_CL);
    f.cfg.limits.outbound_connect_timeout_ms = 300;
    fx_client(&f);
    rec_init(&r, &f);
    /*
     * A listener that never accepts, with a backlog of 0: once its accept
     * queue holds one connection, Linux drops further SYNs, so a connect to
     * it stays pending.
     */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", 0, &sin);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    socklen_t slen = sizeof(sin);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &slen), 0);
    int fillers[2];
    for (int i = 0; i < 2; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fillers[i] >= 0);
        (void)connect(fillers[i], (struct sockaddr *)&sin, sizeof(sin));
    }
    spin(&f, 50);
    target_ip(&t, "127.0.0.1", ntohs(sin.sin_port), "localhost", 0);
    get(&f, &r, &t, "/");
    uint64_t took = wait_done(&f, &r);
    char want[96];
    snprintf(want, sizeof(want), "connect to 127.0.0.1:%d timed out", ntohs(sin.sin_port));
    assert_failed(&r, CH_ETIMEOUT, want, false);
    assert_true(took >= 250);
    assert_true(took < 2000);
    for (int i = 0; i < 2; i++)
        close(fillers[i]);
    close(lfd);
    rec_free(&r);
    fx_free(&f);
}

static void test_handler_error_code(void **state)
{
    (void)state;
    struct fx f;
    struct rec r1, r2;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r1, &f);
    rec_init(&r2, &f);
    target(&t, &f, "localhost");
    r1.body_rc = CH_ETOOBIG; /* as an owner with a size limit would */
    get(&f, &r1, &t, "/");
    wait_done(&f, &r1);
    assert_failed(&r1, CH_ETOOBIG, "stopped by the response handler", true);
    assert_int_equal(r1.heads, 1);
    /* That connection was closed, not pooled. */
    get(&f, &r2, &t, "/");
    wait_done(&f, &r2);
    assert_ok(&r2, 200, "hello");
    assert_false(r2.reused);
    rec_free(&r1);
    rec_free(&r2);
    fx_free(&f);
}

static void test_bad_framing(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_BAD_FRAMING);
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    get(&f, &r, &t, "/");
    wait_done(&f, &r);
    assert_failed(&r, CH_EPROTO, "invalid response from 127.0.0.1:", true);
    assert_int_equal(r.heads, 0);
    rec_free(&r);
    fx_free(&f);
}

static void test_pause_before_connect(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    fx_init(&f, SRV_CL);
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "localhost");
    get(&f, &r, &t, "/");
    client_pause_read(r.x); /* the handshake and the request still go */
    run_until(&f, &f.srv.requests, 1);
    spin(&f, 100);
    assert_int_equal(r.connected, 1);
    assert_int_equal(r.heads, 0);
    client_resume_read(r.x);
    wait_done(&f, &r);
    assert_ok(&r, 200, "hello");
    rec_free(&r);
    fx_free(&f);
}

/* Capture stderr (log lines) into a file while f runs. */
static int saved_stderr = -1;

static void capture_begin(const char *file)
{
    fflush(stderr);
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

static void capture_end(const char *file, char *out, size_t cap)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    FILE *fp = fopen(file, "r");
    assert_non_null(fp);
    size_t n = fread(out, 1, cap - 1, fp);
    out[n] = '\0';
    fclose(fp);
}

static void test_verification_off_warns(void **state)
{
    (void)state;
    struct fx f;
    struct rec r;
    struct client_target t;
    char logs[4096], want[256];
    fx_init(&f, SRV_CL);
    f.cfg.federation_verify_certificates = false;
    f.cfg.nfederation_custom_ca_list = 0;
    fx_client(&f);
    rec_init(&r, &f);
    target(&t, &f, "wrong.localhost");
    log_set_level(LOG_WARN);
    capture_begin(path("log.txt"));
    get(&f, &r, &t, "/");
    wait_done(&f, &r);
    capture_end(path("log.txt"), logs, sizeof(logs));
    log_set_level(LOG_ERROR);
    assert_ok(&r, 200, "hello");
    snprintf(want, sizeof(want),
             "federation_verify_certificates is false: not verifying the certificate of "
             "127.0.0.1:%d for wrong.localhost",
             f.srv.port);
    if (strstr(logs, want) == NULL)
        fail_msg("no warning in the log: %s", logs);
    rec_free(&r);
    fx_free(&f);
}

static void test_format_addr(void **state)
{
    (void)state;
    struct client_target t;
    char out[64];
    target_ip(&t, "203.0.113.5", 8448, "x", 0);
    assert_string_equal(client_format_addr((struct sockaddr *)&t.addr, out, sizeof(out)),
                        "203.0.113.5:8448");
    target_ip(&t, "2001:db8::1", 443, "x", 0);
    assert_string_equal(client_format_addr((struct sockaddr *)&t.addr, out, sizeof(out)),
                        "[2001:db8::1]:443");
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_content_length),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_post_serialisation),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_reuse_from_on_complete),
        cmocka_unit_test(test_policy_denied),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_response_timeout),
        cmocka_unit_test(test_tls_handshake_timeout),
        cmocka_unit_test(test_tls_wrong_name),
        cmocka_unit_test(test_ip_literal_target),
        cmocka_unit_test(test_stale_get_retried),
        cmocka_unit_test(test_stale_post_not_retried),
        cmocka_unit_test(test_idle_close_noticed),
        cmocka_unit_test(test_head_request),
        cmocka_unit_test(test_read_until_close),
        cmocka_unit_test(test_read_until_close_truncated),
        cmocka_unit_test(test_head_too_large),
        cmocka_unit_test(test_interim_responses_skipped),
        cmocka_unit_test(test_invalid_requests),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_abort_in_flight),
        cmocka_unit_test(test_abort_from_on_head),
        cmocka_unit_test(test_free_with_exchanges_in_flight),
        cmocka_unit_test(test_keepalive_bound),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_idle_pool_lets_loop_end),
        cmocka_unit_test(test_set_policy_drops_idle),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_handler_error_code),
        cmocka_unit_test(test_bad_framing),
        cmocka_unit_test(test_pause_before_connect),
        cmocka_unit_test(test_verification_off_warns),
        cmocka_unit_test(test_format_addr),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
