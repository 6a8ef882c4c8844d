/* inbound.c -- the reverse proxy: strict request parsing, routing to a homeserver, streaming both
 * ways. */
/* SPDX-License-Identifier: ISC */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "chappe/conn.h"
#include "chappe/http.h"
#include "chappe/inbound.h"
#include "chappe/cjson.h"
#include "chappe/keydoc.h"
#include "chappe/keys.h"
#include "chappe/keyfetch.h"
#include "chappe/keystore.h"
#include "chappe/log.h"
#include "chappe/metrics.h"
#include "chappe/policy.h"
#include "chappe/route.h"
#include "chappe/sign.h"
#include "chappe/store.h"
#include "chappe/trust.h"
#include "chappe/upstream.h"
#include "chappe/xmatrix.h"
#include "chappe/util.h"

/* An idle keep-alive connection releases its buffers after this long. */
#define TRIM_AFTER_MS 2000

/* Pipelined bytes buffered while a response is pending, before reading stops. */
#define PIPELINE_MAX (64 * 1024)

enum ib_state {
    IB_IDLE,  /* between requests */
    IB_HEAD,  /* reading a request head */
    IB_BODY,  /* reading a request body, forwarding it */
    IB_WAIT,  /* request read: waiting for / relaying the response */
    IB_CLOSED /* the connection is closing */
};

/* How the response body is framed towards the client. */
enum resp_framing { RF_NONE, RF_LENGTH, RF_CHUNKED, RF_CLOSE };

struct inbound {
    struct conn c; /* first: the conn's handler callbacks find us with CONTAINER_OF */
    enum ib_state state;
    struct http_parser hp;
    struct buf head;  /* the current request head: hp.msg slices point here */
    struct buf upreq; /* the request head as sent upstream (kept for one retry) */
    struct upstream_pool *pool;
    struct upstream *up;
    uint64_t t_start;
    uint64_t req_body_bytes;
    uint64_t resp_body_bytes;
    int status;
    enum resp_framing framing;
    bool has_body;
    bool req_chunked;
    bool req_done;
    bool resp_started;
    bool close_after;
    bool retried;
    bool is_head;
    bool local_query;      /* a notary query to the relay: answered once the request is in */
    bool notary_asked;     /* the notary query's missing documents were asked for (once) */
    size_t notary_pending; /* its fetches not answered yet */
    struct keyfetch_wait **notary_waits; /* those fetches (NULL once answered) */
    size_t nnotary_waits, capnotary_waits;
    bool verify; /* an X-Matrix route: body kept, signature checked, then sent upstream */
    struct buf kept_body;
    struct xmatrix x;            /* verify: the Authorization, as parsed at the edge */
    struct keyfetch_wait *kwait; /* verify: the key fetch this request waits for, or NULL */
    struct trust *trust;         /* the snapshot this exchange started with */
    bool in_process;             /* process() is on the stack: do not re-enter it */
    bool trim_pending;           /* the idle timer first trims buffers, then closes */
    char error[160];             /* why chappe answered by itself, for the access log */
    char allow[64];              /* a 405's "Allow: ...\r\n" line, or "" */
};

static void process(struct inbound *ib);

/* Sentinel: the request was answered locally; stop parsing. */
#define HANDLED CH_EPERM

static inbound_peer_up_fn peer_up_fn;
static void *peer_up_ud;

void inbound_set_peer_up_hook(inbound_peer_up_fn fn, void *ud)
{
    peer_up_fn = fn;
    peer_up_ud = ud;
}

/* A request of origin was verified: origin is up (the queue's hint to retry it now). */
static void inbound_peer_up(const char *origin)
{
    if (peer_up_fn != NULL)
        peer_up_fn(peer_up_ud, origin);
}

static struct inbound *ib_of(struct conn *c)
{
    return CONTAINER_OF(c, struct inbound, c);
}

static const struct cfg_limits *limits(const struct inbound *ib)
{
    return &ib->c.w->cfg->limits;
}

/* --- access log ---------------------------------------------------------------------- */

static void json_field(struct buf *b, const char *name, struct slice v)
{
    buf_appendf(b, ",\"%s\":", name);
    http_append_json_string(b, v.base ? v.base : "", v.base ? v.len : 0);
}

static void access_log(struct inbound *ib)
{
    struct buf b = BUF_INIT;
    const struct http_msg *m = &ib->hp.msg;
    uint64_t now = util_wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    metrics_count_request(ib->c.l->cfg->type, ib->status);
    gmtime_r(&secs, &tm);
    buf_appendf(&b, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\",\"listener\":\"%s\"",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                (unsigned)(now % 1000), config_listener_type_name(ib->c.l->cfg->type));
    json_field(&b, "peer", (struct slice){ib->c.peer, strlen(ib->c.peer)});
    buf_appendf(&b, ",\"worker\":%u", ib->c.w->id);
    buf_appendf(&b, ",\"tls\":%s", (ib->c.flags & CONN_F_TLS) ? "true" : "false");
    if ((ib->c.flags & CONN_F_TLS) && ib->c.tls.sni[0])
        json_field(&b, "sni", (struct slice){ib->c.tls.sni, strlen(ib->c.tls.sni)});
    const struct http_field *host = http_msg_field(m, "host");
    if (host)
        json_field(&b, "host", host->value);
    if (ib->verify)
        json_field(&b, "origin", (struct slice){ib->x.origin, strlen(ib->x.origin)});
    json_field(&b, "method", m->method);
    json_field(&b, "path", m->target);
    double ms = (double)(util_mono_ms() - ib->t_start);
    buf_appendf(&b,
                ",\"status\":%d,\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64
                ",\"duration_ms\":%.0f",
                ib->status, ib->req_body_bytes, ib->resp_body_bytes, ms);
    if (ib->pool)
        json_field(&b, "upstream",
                   (struct slice){ib->pool->hs->upstream.url, strlen(ib->pool->hs->upstream.url)});
    if (ib->error[0])
        json_field(&b, "error", (struct slice){ib->error, strlen(ib->error)});
    buf_append_str(&b, "}");
    log_access(buf_data(&b), b.len);
    buf_free(&b);
}

/* --- end of an exchange ---------------------------------------------------------------- */

static void reset_exchange(struct inbound *ib)
{
    ib->pool = NULL;
    ib->up = NULL;
    ib->req_body_bytes = 0;
    ib->resp_body_bytes = 0;
    ib->status = 0;
    ib->framing = RF_NONE;
    ib->has_body = ib->req_chunked = ib->req_done = false;
    ib->resp_started = ib->close_after = ib->retried = ib->is_head = false;
    ib->local_query = ib->verify = ib->notary_asked = false;
    ib->nnotary_waits = ib->notary_pending = 0;
    buf_reset(&ib->kept_body);
    trust_unref(ib->trust);
    ib->trust = NULL;
    ib->error[0] = '\0';
    buf_reset(&ib->upreq);
}

/* The response is fully queued: log, then next request or close. */
static void finish_exchange(struct inbound *ib)
{
    struct conn *c = &ib->c;
    access_log(ib);
    bool close = ib->close_after || !ib->req_done || c->w->draining;
    reset_exchange(ib);
    if (close) {
        ib->state = IB_CLOSED;
        conn_set_timer(c, 0);
        conn_close_after_flush(c);
        return;
    }
    ib->state = IB_IDLE;
    conn_flush(c);
    /* Keep the buffers for a busy keep-alive connection; an idle one gives them back after
     * TRIM_AFTER_MS (on_timer), then waits out the rest of idle_timeout. */
    uint64_t idle = limits(ib)->idle_timeout_ms;
    ib->trim_pending = idle > TRIM_AFTER_MS;
    conn_set_timer(c, ib->trim_pending ? TRIM_AFTER_MS : idle);
    conn_resume_read(c);
    if (c->flags & CONN_F_EOF) {
        if (c->rbuf.len == 0) {
            conn_close_after_flush(c);
            ib->state = IB_CLOSED;
            return;
        }
    }
    if (c->rbuf.len && !ib->in_process)
        process(ib);
}

/*
 * Answer the current request from chappe itself with a Matrix error. close:
 * the connection cannot carry another request (framing error, unread body).
 */
static void reply_error(struct inbound *ib, int status, const char *errcode, bool close,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void reply_error(struct inbound *ib, int status, const char *errcode, bool close,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ib->error, sizeof(ib->error), fmt, ap);
    va_end(ap);
    if (ib->up) {
        upstream_abort(ib->up);
        ib->up = NULL;
    }
    ib->status = status;
    if (close || ib->c.w->draining || !ib->hp.msg.keep_alive)
        ib->close_after = true;
    http_error_response(conn_out(&ib->c), status, errcode, ib->error, ib->close_after,
                        ib->allow[0] ? ib->allow : NULL);
    ib->allow[0] = '\0';
    if (!close)
        ib->req_done = true;
    finish_exchange(ib);
}

/* A request that does not route: 404, 405 (with Allow, RFC 9110 section 15.5.6) or 400. */
static void reply_route_error(struct inbound *ib, enum route_result r, const struct route_match *rm,
                              const char *why)
{
    if (r == ROUTE_METHOD_NOT_ALLOWED) {
        char methods[40];
        route_format_allow(rm->allow, methods, sizeof(methods));
        snprintf(ib->allow, sizeof(ib->allow), "Allow: %s\r\n", methods);
    }
    reply_error(ib, route_result_status(r), route_result_errcode(r), ib->has_body, "%s",
                why ? why : "bad request");
}

/* --- upstream side ----------------------------------------------------------------- */

static void up_connected(struct upstream *u, void *ud)
{
    (void)u;
    (void)ud;
}

static int up_head(struct upstream *u, void *ud, struct http_msg *resp)
{
    (void)u;
    struct inbound *ib = ud;
    struct conn *c = &ib->c;
    struct buf *out = conn_out(c);
    const struct http_msg *req = &ib->hp.msg;
    ib->status = resp->status;
    bool no_body = ib->is_head || resp->status == 204 || resp->status == 304;
    if (no_body)
        ib->framing = RF_NONE;
    else if (resp->content_length >= 0 && !resp->chunked)
        ib->framing = RF_LENGTH;
    else if (req->http_major == 1 && req->http_minor >= 1)
        ib->framing = RF_CHUNKED;
    else
        ib->framing = RF_CLOSE; /* HTTP/1.0 client: the close delimits the body */
    if (ib->framing == RF_CLOSE || !req->keep_alive || c->w->draining || !ib->req_done)
        ib->close_after = true;

    char status[16] = "HTTP/1.1 000 ";
    status[9] = (char)('0' + resp->status / 100 % 10);
    status[10] = (char)('0' + resp->status / 10 % 10);
    status[11] = (char)('0' + resp->status % 10);
    buf_append(out, status, 13);
    if (resp->reason.len)
        buf_append_slice(out, resp->reason);
    else
        buf_append_str(out, http_reason(resp->status));
    buf_append_str(out, "\r\n");
    for (size_t i = 0; i < resp->nfields; i++) {
        const struct http_field *f = &resp->fields[i];
        if (http_is_hop_by_hop(resp, f->name))
            continue;
        if (ib->framing == RF_CHUNKED && slice_case_eq_str(f->name, "content-length"))
            continue;
        buf_append_slice(out, f->name);
        buf_append(out, ": ", 2);
        buf_append_slice(out, f->value);
        buf_append(out, "\r\n", 2);
    }
    if (ib->framing == RF_CHUNKED)
        buf_append_str(out, "Transfer-Encoding: chunked\r\n");
    if (ib->close_after)
        buf_append_str(out, "Connection: close\r\n");
    else if (req->http_major == 1 && req->http_minor == 0)
        buf_append_str(out, "Connection: keep-alive\r\n");
    buf_append(out, "\r\n", 2);
    ib->resp_started = true;
    return no_body ? 1 : 0; /* flushed by up_batch, with the first body bytes */
}

static int up_body(struct upstream *u, void *ud, const char *p, size_t n)
{
    struct inbound *ib = ud;
    struct conn *c = &ib->c;
    int rc = ib->framing == RF_CHUNKED ? http_append_chunk(conn_out(c), p, n)
                                       : buf_append(conn_out(c), p, n);
    if (rc < 0)
        return rc;
    ib->resp_body_bytes += n;
    if (c->wbuf.len >= CONN_WRITE_LOW)
        conn_flush(c);
    if (conn_pending(c) > CONN_WRITE_HIGH)
        upstream_pause_read(u); /* resumed by on_writable */
    return 0;
}

static void up_complete(struct upstream *u, void *ud)
{
    struct inbound *ib = ud;
    metrics_observe_upstream_ms(util_mono_ms() - ib->t_start);
    if (ib->framing == RF_CHUNKED)
        http_append_last_chunk(conn_out(&ib->c));
    upstream_release(u, ib->req_done);
    ib->up = NULL;
    if (!ib->req_done) {
        /* The upstream answered before the whole body arrived: the rest cannot be skipped
         * reliably, so the connection ends with this response. */
        ib->close_after = true;
    }
    finish_exchange(ib);
}

static void up_batch(struct upstream *u, void *ud)
{
    (void)u;
    struct inbound *ib = ud;
    conn_flush(&ib->c);
}

static void up_writable(struct upstream *u, void *ud)
{
    (void)u;
    struct inbound *ib = ud;
    conn_resume_read(&ib->c);
    if (ib->c.rbuf.len)
        process(ib);
}

static const struct upstream_handler up_handler;

static void up_error(struct upstream *u, void *ud, int err, const char *why, bool retryable)
{
    (void)u;
    struct inbound *ib = ud;
    ib->up = NULL;
    const struct cfg_upstream *us = &ib->pool->hs->upstream;
    if (retryable && !ib->retried && !ib->has_body && ib->req_done) {
        /* A pooled connection closed by the upstream while idle (RFC 9112 section 9.3.1):
         * the request is sent once more, on a new connection. */
        ib->retried = true;
        log_debug("upstream %s: reused connection failed (%s), retrying", us->url, why);
        ib->up = upstream_get(ib->pool, &up_handler, ib, ib->is_head);
        if (ib->up) {
            buf_append(upstream_out(ib->up), buf_data(&ib->upreq), ib->upreq.len);
            upstream_flush(ib->up);
            return;
        }
    }
    log_info("upstream %s: %s (%s %.*s)", us->url, why, ib->c.peer, (int)ib->hp.msg.target.len,
             ib->hp.msg.target.base);
    if (ib->resp_started) {
        snprintf(ib->error, sizeof(ib->error), "upstream %s: %s", us->url, why);
        access_log(ib);
        ib->state = IB_CLOSED;
        conn_close(&ib->c);
        return;
    }
    if (err == CH_ETIMEOUT)
        reply_error(ib, 504, "M_UNKNOWN", !ib->req_done, "upstream %s timed out: %s", us->url, why);
    else if (err == CH_EPROTO)
        reply_error(ib, 502, "M_UNKNOWN", true, "upstream %s sent an invalid response: %s", us->url,
                    why);
    else
        reply_error(ib, 502, "M_UNKNOWN", !ib->req_done, "upstream %s unreachable: %s", us->url,
                    why);
}

static const struct upstream_handler up_handler = {
    up_connected, up_head, up_body, up_complete, up_batch, up_writable, up_error,
};

/* --- request side -------------------------------------------------------------------- */

/* The host part of a Host value: "[::1]:8448" -> "::1", "a.b:8448" -> "a.b". */
static struct slice host_name(struct slice v)
{
    if (v.len && v.base[0] == '[') {
        const char *e = memchr(v.base, ']', v.len);
        if (e)
            return (struct slice){v.base + 1, (size_t)(e - v.base - 1)};
        return v;
    }
    const char *colon = memchr(v.base, ':', v.len);
    return colon ? (struct slice){v.base, (size_t)(colon - v.base)} : v;
}

/* The homeserver a request is for: by Host, then by SNI; the only one if there is one. */
static int route(struct inbound *ib)
{
    const struct config *cfg = ib->c.w->cfg;
    if (cfg->nhomeservers == 1)
        return 0;
    const struct http_field *host = http_msg_field(&ib->hp.msg, "host");
    struct slice names[2] = {{NULL, 0}, {NULL, 0}};
    if (host)
        names[0] = host_name(host->value);
    if ((ib->c.flags & CONN_F_TLS) && ib->c.tls.sni[0])
        names[1] = (struct slice){ib->c.tls.sni, strlen(ib->c.tls.sni)};
    for (size_t n = 0; n < 2; n++) {
        if (names[n].base == NULL)
            continue;
        for (size_t i = 0; i < cfg->nhomeservers; i++) {
            struct slice hs = {cfg->homeservers[i].server_name,
                               strlen(cfg->homeservers[i].server_name)};
            if (slice_case_eq(host_name(hs), names[n]))
                return (int)i;
        }
    }
    return -1;
}

static int build_upstream_request(struct inbound *ib)
{
    const struct http_msg *m = &ib->hp.msg;
    struct buf *b = &ib->upreq;
    buf_reset(b);
    buf_append_slice(b, m->method);
    buf_append(b, " ", 1);
    buf_append_slice(b, m->target);
    buf_append_str(b, " HTTP/1.1\r\n");
    for (size_t i = 0; i < m->nfields; i++) {
        const struct http_field *f = &m->fields[i];
        if (http_is_hop_by_hop(m, f->name) || slice_case_eq_str(f->name, "expect") ||
            slice_case_eq_str(f->name, "x-forwarded-for") ||
            slice_case_eq_str(f->name, "x-forwarded-proto"))
            continue;
        buf_append_slice(b, f->name);
        buf_append(b, ": ", 2);
        buf_append_slice(b, f->value);
        buf_append(b, "\r\n", 2);
    }
    if (http_msg_field(m, "host") == NULL)
        buf_appendf(b, "Host: %s\r\n", ib->pool->hs->upstream.authority);
    buf_append_str(b, "X-Forwarded-For: ");
    buf_append_str(b, ib->c.peer_ip);
    buf_append_str(b, (ib->c.flags & CONN_F_TLS) ? "\r\nX-Forwarded-Proto: https\r\n"
                                                 : "\r\nX-Forwarded-Proto: http\r\n");
    if (ib->req_chunked)
        buf_append_str(b, "Transfer-Encoding: chunked\r\n");
    else if (ib->verify && m->chunked) /* kept whole to be verified: its length is known */
        buf_appendf(b, "Content-Length: %zu\r\n", ib->kept_body.len);
    return buf_append(b, "\r\n", 2);
}

/* The request is for the relay itself: Host (else SNI) names its server_name. */
static bool for_relay(struct inbound *ib)
{
    const char *own = ib->c.w->cfg->server_name;
    struct slice own_host = host_name((struct slice){own, strlen(own)});
    const struct http_field *host = http_msg_field(&ib->hp.msg, "host");
    if (host)
        return slice_case_eq(host_name(host->value), own_host);
    if ((ib->c.flags & CONN_F_TLS) && ib->c.tls.sni[0])
        return slice_case_eq((struct slice){ib->c.tls.sni, strlen(ib->c.tls.sni)}, own_host);
    return false;
}

/* The request path without the query. */
static struct slice target_path(const struct http_msg *m)
{
    const char *q = memchr(m->target.base, '?', m->target.len);
    return q ? (struct slice){m->target.base, (size_t)(q - m->target.base)} : m->target;
}

/* A locally built 200 application/json response (HEAD: head only). */
static void reply_json(struct inbound *ib, const struct buf *body)
{
    const struct http_msg *m = &ib->hp.msg;
    ib->status = 200;
    if (!ib->has_body)
        ib->req_done = true;
    /* a body left unread cannot be skipped safely: the connection closes after the answer */
    if (!ib->req_done || ib->c.w->draining || !m->keep_alive)
        ib->close_after = true;
    buf_appendf(conn_out(&ib->c),
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                "Content-Length: %zu\r\n%s\r\n",
                body->len, ib->close_after ? "Connection: close\r\n" : "");
    if (!ib->is_head)
        buf_append(conn_out(&ib->c), buf_data(body), body->len);
    ib->resp_body_bytes = ib->is_head ? 0 : body->len;
    finish_exchange(ib);
}

/* GET /_matrix/key/v2/server for the relay's own name (server-server API, "Publishing Keys"). */
static void reply_key_document(struct inbound *ib)
{
    const struct http_msg *m = &ib->hp.msg;
    if (!slice_eq_str(m->method, "GET") && !ib->is_head) {
        reply_error(ib, 405, "M_UNRECOGNIZED", ib->has_body,
                    "method not allowed on /_matrix/key/v2/server");
        return;
    }
    struct buf doc = BUF_INIT, err = BUF_INIT;
    int rc = keys_server_document(ib->c.w->keys, util_wall_ms(), &doc, &err);
    if (rc == CH_ENOENT) {
        reply_error(ib, 404, "M_NOT_FOUND", ib->has_body,
                    "this relay publishes no key (no signing_key_path configured)");
    } else if (rc < 0) {
        log_error("key document: %.*s", (int)err.len, buf_data(&err));
        reply_error(ib, 500, "M_UNKNOWN", ib->has_body, "cannot build the key document");
    } else {
        reply_json(ib, &doc);
    }
    buf_free(&doc);
    buf_free(&err);
}

/* minimum_valid_until_ts from a query string (server-server API, keys_query); 0 when absent. */
static uint64_t min_valid_until(struct slice q)
{
    static const char name[] = "minimum_valid_until_ts=";
    struct slice item;
    while (q.len > 0) {
        const char *amp = memchr(q.base, '&', q.len);
        item = (struct slice){q.base, amp ? (size_t)(amp - q.base) : q.len};
        q = amp ? (struct slice){amp + 1, q.len - item.len - 1} : (struct slice){NULL, 0};
        if (item.len > sizeof(name) - 1 && memcmp(item.base, name, sizeof(name) - 1) == 0) {
            uint64_t v = 0;
            for (size_t i = sizeof(name) - 1; i < item.len; i++) {
                if (item.base[i] < '0' || item.base[i] > '9' || v > UINT64_MAX / 10 - 10)
                    return 0;
                v = v * 10 + (uint64_t)(item.base[i] - '0');
            }
            return v;
        }
    }
    return 0;
}

/*
 * The cached key document of server for the notary: 0 and *doc, CH_EPERM
 * when server is not allowlisted (or the relay has no key to co-sign with),
 * CH_ENOENT when nothing usable is cached: no document, one valid for less
 * than min_valid (or already expired), or one without key_id (when given).
 */
static int cached_doc(struct inbound *ib, const char *server, const char *key_id,
                      uint64_t min_valid, json_t **doc)
{
    struct worker *w = ib->c.w;
    struct keystore_doc meta;
    struct buf json = BUF_INIT, err = BUF_INIT;
    struct policy_decision d = policy_check_name_str(ib->trust->pol, server, strlen(server));
    int rc = CH_EPERM;
    *doc = NULL;
    if (!d.allow || w->store == NULL || w->keys->nkeys == 0)
        goto out;
    rc = CH_ENOENT;
    if (keystore_get_doc(w->store, server, &meta, &json) != 0 || meta.valid_until_ts < min_valid ||
        meta.valid_until_ts <= util_wall_ms() ||
        cjson_parse(buf_data(&json), json.len, doc, &err) < 0)
        goto out;
    if (key_id != NULL && json_object_get(json_object_get(*doc, "verify_keys"), key_id) == NULL &&
        json_object_get(json_object_get(*doc, "old_verify_keys"), key_id) == NULL) {
        json_decref(*doc);
        *doc = NULL;
        goto out;
    }
    rc = 0;
out:
    buf_free(&json);
    buf_free(&err);
    return rc;
}

/*
 * The cached key document of server, co-signed by the relay, appended to out
 * as one element of server_keys; nothing when cached_doc has none. Notary:
 * server-server API, "Querying Keys Through Another Server".
 */
static void append_cosigned(struct inbound *ib, const char *server, const char *key_id,
                            uint64_t min_valid, struct buf *out)
{
    struct worker *w = ib->c.w;
    struct buf err = BUF_INIT, enc = BUF_INIT;
    json_t *doc = NULL, *signed_doc = NULL;
    if (cached_doc(ib, server, key_id, min_valid, &doc) != 0)
        return;
    if (keydoc_cosign(doc, w->cfg->server_name, w->keys->keys, w->keys->nkeys, &signed_doc, &err) <
            0 ||
        cjson_encode(signed_doc, &enc, &err) < 0)
        log_error("notary: %s: %.*s", server, (int)err.len, buf_data(&err));
    else
        buf_append_slice(out, buf_slice(&enc));
    json_decref(doc);
    json_decref(signed_doc);
    buf_free(&err);
    buf_free(&enc);
}

static void notary_reply(struct inbound *ib);

static void notary_answered(struct keyfetch_wait *kw)
{
    struct inbound *ib = kw->ud;
    for (size_t i = 0; i < ib->nnotary_waits; i++)
        if (ib->notary_waits[i] == kw)
            ib->notary_waits[i] = NULL;
    free(kw);
    if (--ib->notary_pending == 0 && !(ib->c.flags & CONN_F_CLOSING))
        notary_reply(ib);
}

/*
 * Before the first answer to a notary query: an allowlisted server of which
 * nothing usable is cached (and whose keys are not pinned: those are never
 * fetched) is fetched first. True when a fetch was asked for: the reply
 * waits for it (notary_answered).
 */
static bool notary_fetch(struct inbound *ib, const char *server, const char *key_id,
                         uint64_t min_valid)
{
    struct worker *w = ib->c.w;
    json_t *doc = NULL;
    if (ib->notary_asked || w->keyfetch == NULL || trust_pinned(ib->trust, server) != NULL ||
        strlen(server) > KEYSTORE_NAME_MAX)
        return false;
    int rc = cached_doc(ib, server, key_id, min_valid, &doc);
    json_decref(doc);
    if (rc != CH_ENOENT)
        return false;
    if (ib->nnotary_waits == ib->capnotary_waits) {
        size_t cap = ib->capnotary_waits ? ib->capnotary_waits * 2 : 4;
        struct keyfetch_wait **p = realloc(ib->notary_waits, cap * sizeof(struct keyfetch_wait *));
        if (p == NULL)
            return false;
        ib->notary_waits = p;
        ib->capnotary_waits = cap;
    }
    struct keyfetch_wait *kw = calloc(1, sizeof(*kw));
    if (kw == NULL)
        return false;
    kw->box = &w->kbox;
    kw->done = notary_answered;
    kw->ud = ib;
    snprintf(kw->server, sizeof(kw->server), "%.*s", KEYSTORE_NAME_MAX, server);
    ib->notary_waits[ib->nnotary_waits++] = kw;
    ib->notary_pending++;
    keyfetch_ask(w->keyfetch, kw);
    return true;
}

/* GET /_matrix/key/v2/query/{serverName}[/{keyId}] addressed to the relay. */
static void reply_notary_get(struct inbound *ib)
{
    const struct http_msg *m = &ib->hp.msg;
    struct route_match rm;
    if (route_match(m->method.base, m->method.len, m->target.base, m->target.len, &rm, NULL) !=
        ROUTE_OK) {
        reply_error(ib, 500, "M_UNKNOWN", false, "the key query no longer routes");
        return;
    }
    const char *server = route_param(&rm, ROUTE_P_SERVER_NAME);
    const char *key_id = route_param(&rm, ROUTE_P_KEY_ID);
    uint64_t min = min_valid_until(rm.query);
    if (notary_fetch(ib, server, key_id, min)) {
        ib->notary_asked = true;
        return;
    }
    struct buf body = BUF_INIT;
    buf_append_str(&body, "{\"server_keys\":[");
    append_cosigned(ib, server, key_id, min, &body);
    buf_append_str(&body, "]}");
    reply_json(ib, &body);
    buf_free(&body);
}

#define KEY_QUERY_MAX_BODY  (64 * 1024)
#define KEY_QUERY_MAX_NAMES 100

/*
 * POST /_matrix/key/v2/query: {"server_keys": {server: {key_id: {"minimum_valid_until_ts":
 * ms}}}}. Each allowlisted server with a document fresh enough for the
 * strictest criterion asked (fetched first when none is cached) gets its
 * co-signed document.
 */
static void reply_notary_post(struct inbound *ib)
{
    struct buf err = BUF_INIT, body = BUF_INIT;
    json_t *q = NULL;
    if (cjson_parse(buf_data(&ib->kept_body), ib->kept_body.len, &q, &err) < 0) {
        buf_trim_newlines(&err);
        reply_error(ib, 400, "M_NOT_JSON", false, "the body is not JSON: %.*s", (int)err.len,
                    buf_data(&err));
        goto out;
    }
    json_t *servers = json_object_get(q, "server_keys");
    if (!json_is_object(servers) || json_object_size(servers) > KEY_QUERY_MAX_NAMES) {
        reply_error(ib, 400, "M_BAD_JSON", false,
                    "expected {\"server_keys\": {server: {key_id: criteria}}} with at most %d "
                    "servers",
                    KEY_QUERY_MAX_NAMES);
        goto out;
    }
    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: fetch what is missing (once); pass 1: answer */
        if (pass == 1)
            buf_append_str(&body, "{\"server_keys\":[");
        const char *server;
        json_t *ids;
        json_object_foreach(servers, server, ids)
        {
            uint64_t min = 0;
            const char *id;
            json_t *crit;
            if (!json_is_object(ids))
                continue;
            json_object_foreach(ids, id, crit)
            {
                json_t *v = json_object_get(crit, "minimum_valid_until_ts");
                if (json_is_integer(v) && json_integer_value(v) > 0 &&
                    (uint64_t)json_integer_value(v) > min)
                    min = (uint64_t)json_integer_value(v);
            }
            if (pass == 0) {
                notary_fetch(ib, server, NULL, min);
                continue;
            }
            size_t before = body.len;
            if (buf_data(&body)[body.len - 1] != '[')
                buf_append_str(&body, ",");
            size_t mark = body.len;
            append_cosigned(ib, server, NULL, min, &body);
            if (body.len == mark)
                body.len = before; /* nothing for this server: drop the comma */
        }
        if (pass == 0 && ib->notary_pending > 0) {
            ib->notary_asked = true;
            goto out; /* notary_answered comes back here */
        }
    }
    buf_append_str(&body, "]}");
    reply_json(ib, &body);
out:
    json_decref(q);
    buf_free(&err);
    buf_free(&body);
}

/* The notary query is complete (or its fetches are over): answer it. */
static void notary_reply(struct inbound *ib)
{
    if (slice_eq_str(ib->hp.msg.method, "POST"))
        reply_notary_post(ib);
    else
        reply_notary_get(ib);
}

/*
 * The notary's endpoints, for a request addressed to the relay: true when
 * answered already (a 400/405/413 for a bad key query). Otherwise the query
 * is answered once the request is complete (request_done).
 */
static bool reply_notary(struct inbound *ib, const struct http_msg *m)
{
    struct route_match rm;
    const char *why = NULL;
    struct slice path = target_path(m);
    static const char prefix[] = "/_matrix/key/v2/query";
    if (path.len < sizeof(prefix) - 1 || memcmp(path.base, prefix, sizeof(prefix) - 1) != 0)
        return false;
    enum route_result r =
        route_match(m->method.base, m->method.len, m->target.base, m->target.len, &rm, &why);
    if (r != ROUTE_OK) {
        reply_route_error(ib, r, &rm, why);
        return true;
    }
    if (rm.route->id == ROUTE_KEY_QUERY_BATCH && m->content_length > KEY_QUERY_MAX_BODY) {
        reply_error(ib, 413, "M_TOO_LARGE", true, "a key query body is at most %d KiB",
                    KEY_QUERY_MAX_BODY / 1024);
        return true;
    }
    ib->local_query = true;
    return false;
}

/*
 * The request must be on a route of the spec's table (else 404, 405, or 400
 * for a malformed path parameter). On an X-Matrix route, the edge checks
 * (server-server API, "Request Authentication"), cheapest first: the header
 * is there and well formed (else 401), its origin is a server name on
 * federation_domain_whitelist written in its normal form (else 403, before any
 * key is looked at), its destination, when given, is the homeserver the
 * request is for (else 401). The signature is checked once the body is in
 * (verify_request). 0 to go on, or HANDLED after the error reply.
 */
static int check_route(struct inbound *ib, const struct http_msg *m,
                       const struct cfg_homeserver *hs)
{
    struct route_match rm;
    struct server_name origin, dest;
    const char *why = NULL;
    enum route_result r =
        route_match(m->method.base, m->method.len, m->target.base, m->target.len, &rm, &why);
    if (r == ROUTE_NOT_FOUND) {
        struct slice path = target_path(m);
        reply_error(ib, 404, "M_UNRECOGNIZED", ib->has_body,
                    "%.*s is not a federation endpoint of the spec", (int)path.len, path.base);
        return HANDLED;
    }
    if (r != ROUTE_OK) {
        reply_route_error(ib, r, &rm, why);
        return HANDLED;
    }
    if (rm.route->auth != ROUTE_AUTH_XMATRIX)
        return 0;
    const struct http_field *auth = NULL;
    for (size_t i = 0; i < m->nfields && auth == NULL; i++) {
        const struct http_field *f = &m->fields[i];
        if (slice_case_eq_str(f->name, "authorization") && f->value.len >= 8 &&
            strncasecmp(f->value.base, "X-Matrix", 8) == 0)
            auth = f;
    }
    if (auth == NULL) {
        metrics_count_xmatrix(METRICS_XMATRIX_MALFORMED);
        reply_error(ib, 401, "M_UNAUTHORIZED", ib->has_body,
                    "%s needs an X-Matrix Authorization header", rm.route->name);
        return HANDLED;
    }
    struct xmatrix *x = &ib->x;
    if (xmatrix_parse(auth->value.base, auth->value.len, x, &why) < 0) {
        metrics_count_xmatrix(METRICS_XMATRIX_MALFORMED);
        reply_error(ib, 401, "M_UNAUTHORIZED", ib->has_body, "malformed X-Matrix header: %s",
                    why ? why : "invalid");
        return HANDLED;
    }
    struct policy_decision d;
    if (server_name_parse(x->origin, strlen(x->origin), &origin, &why) != 0)
        d = (struct policy_decision){.allow = false, .reason = POLICY_INVALID_SERVER_NAME};
    else
        d = policy_check_name(ib->trust->pol, &origin);
    policy_count(POLICY_INBOUND, d.reason);
    if (!d.allow) {
        log_info("conn %s: origin %s refused: %s", ib->c.peer, x->origin,
                 policy_reason_code(d.reason));
        reply_error(ib, 403, "M_FORBIDDEN", ib->has_body, "origin %s may not federate here: %s",
                    x->origin, policy_reason_code(d.reason));
        return HANDLED;
    }
    if (strcmp(origin.name, x->origin) != 0) {
        /* the name the key belongs to is the name as signed: one spelling only */
        metrics_count_xmatrix(METRICS_XMATRIX_MALFORMED);
        reply_error(ib, 401, "M_UNAUTHORIZED", ib->has_body,
                    "X-Matrix origin %s is not written as the server name %s", x->origin,
                    origin.name);
        return HANDLED;
    }
    if (x->has_destination &&
        (server_name_parse(x->destination, strlen(x->destination), &dest, &why) != 0 ||
         strcmp(dest.name, hs->server_name) != 0)) {
        metrics_count_xmatrix(METRICS_XMATRIX_MALFORMED);
        reply_error(ib, 401, "M_UNAUTHORIZED", ib->has_body,
                    "X-Matrix destination %s is not %s, the server addressed", x->destination,
                    hs->server_name);
        return HANDLED;
    }
    ib->verify = true;
    return 0;
}

/* --- signature verification ---------------------------------------------------------- */

/* The request is verified: send it upstream as received (the body was kept: Content-Length). */
static void forward_verified(struct inbound *ib)
{
    ib->req_chunked = false;
    if (build_upstream_request(ib) < 0 ||
        (ib->up = upstream_get(ib->pool, &up_handler, ib, ib->is_head)) == NULL ||
        buf_append(upstream_out(ib->up), buf_data(&ib->upreq), ib->upreq.len) < 0 ||
        buf_append(upstream_out(ib->up), buf_data(&ib->kept_body), ib->kept_body.len) < 0) {
        reply_error(ib, 500, "M_UNKNOWN", true, "out of memory");
        return;
    }
    upstream_flush(ib->up);
}

static void verify_with_key(struct inbound *ib, const unsigned char pk[crypto_sign_PUBLICKEYBYTES])
{
    const struct http_msg *m = &ib->hp.msg;
    const char *dest = ib->pool->hs->server_name;
    char method[16];
    char *uri = strndup(m->target.base, m->target.len);
    struct buf err = BUF_INIT;
    snprintf(method, sizeof(method), "%.*s", (int)m->method.len, m->method.base);
    int rc = uri ? sign_verify_request_body(&ib->x, method, uri, dest, buf_data(&ib->kept_body),
                                            ib->kept_body.len, pk, &err)
                 : CH_ENOMEM;
    free(uri);
    buf_trim_newlines(&err);
    if (rc == 0) {
        metrics_count_xmatrix(METRICS_XMATRIX_OK);
        buf_free(&err);
        inbound_peer_up(ib->x.origin);
        forward_verified(ib);
        return;
    }
    if (rc == CH_ENOMEM) {
        reply_error(ib, 500, "M_UNKNOWN", false, "out of memory");
    } else {
        metrics_count_xmatrix(METRICS_XMATRIX_BAD_SIGNATURE);
        reply_error(ib, 401, "M_UNAUTHORIZED", false,
                    "signature of %s with key %s does not verify for %s: %.*s", ib->x.origin,
                    ib->x.key, dest, (int)err.len, buf_data(&err));
    }
    buf_free(&err);
}

static void lookup_key(struct inbound *ib, const struct keyfetch_wait *answer);

static void key_answered(struct keyfetch_wait *kw)
{
    struct inbound *ib = kw->ud;
    ib->kwait = NULL;
    if (!(ib->c.flags & CONN_F_CLOSING))
        lookup_key(ib, kw);
    free(kw);
}

/*
 * The origin's key: pinned_keys (never fetched), else the key cache, else
 * asked of the key fetcher, once (answer is its answer, when this runs
 * again). Only a current key (verify_keys) valid now is good for a request. A
 * cached key past half its validity is refreshed in the background while it
 * is still used.
 */
static void lookup_key(struct inbound *ib, const struct keyfetch_wait *answer)
{
    struct worker *w = ib->c.w;
    const char *origin = ib->x.origin, *key_id = ib->x.key;
    const struct cfg_pinned *pin = trust_pinned(ib->trust, origin);
    if (pin != NULL) {
        const struct cfg_verify_key *k = trust_pinned_key(pin, key_id);
        if (k != NULL) {
            verify_with_key(ib, k->pk);
        } else {
            metrics_count_xmatrix(METRICS_XMATRIX_UNKNOWN_KEY);
            reply_error(ib, 401, "M_UNAUTHORIZED", false,
                        "key %s of %s is not one of its pinned_keys (pinned servers' keys are "
                        "never fetched)",
                        key_id, origin);
        }
        return;
    }
    struct keystore_key k;
    uint64_t now = util_wall_ms();
    int rc = w->store ? keystore_get(w->store, origin, key_id, &k) : CH_ENOENT;
    if (rc == 0 && k.expired_ts == 0 && k.valid_until_ts >= now) {
        if (w->keyfetch && answer == NULL &&
            now - k.fetched_at > (k.valid_until_ts - k.fetched_at) / 2)
            keyfetch_refresh(w->keyfetch, origin);
        verify_with_key(ib, k.public_key);
        return;
    }
    if (answer == NULL && w->keyfetch != NULL) {
        struct keyfetch_wait *kw = calloc(1, sizeof(*kw));
        if (kw == NULL) {
            reply_error(ib, 500, "M_UNKNOWN", false, "out of memory");
            return;
        }
        kw->box = &w->kbox;
        kw->done = key_answered;
        kw->ud = ib;
        snprintf(kw->server, sizeof(kw->server), "%.*s", KEYSTORE_NAME_MAX, origin);
        ib->kwait = kw;
        keyfetch_ask(w->keyfetch, kw);
        return;
    }
    const char *state = rc == 0 && k.expired_ts ? "is an old key of"
                        : rc == 0               ? "has expired for"
                                                : "is not known for";
    metrics_count_xmatrix(METRICS_XMATRIX_UNKNOWN_KEY);
    reply_error(ib, 401, "M_UNAUTHORIZED", false, "key %s %s %s%s%s", key_id, state, origin,
                answer && answer->why[0] ? ": " : "", answer ? answer->why : "");
}

/*
 * The whole request is in: the body must be a JSON object (when there is
 * one), then the signature is checked with the origin's key.
 */
static void verify_request(struct inbound *ib)
{
    const char *p = buf_data(&ib->kept_body);
    size_t n = ib->kept_body.len;
    if (n > 0 && !cjson_is_canonical(p, n)) {
        struct buf err = BUF_INIT;
        json_t *v = NULL;
        if (cjson_parse(p, n, &v, &err) < 0) {
            buf_trim_newlines(&err);
            reply_error(ib, 400, "M_NOT_JSON", false, "the body is not JSON: %.*s", (int)err.len,
                        buf_data(&err));
            buf_free(&err);
            return;
        }
        bool object = json_is_object(v);
        json_decref(v);
        buf_free(&err);
        if (!object) {
            reply_error(ib, 400, "M_BAD_JSON", false, "the body must be a JSON object");
            return;
        }
    } else if (n > 0 && p[0] != '{') {
        reply_error(ib, 400, "M_BAD_JSON", false, "the body must be a JSON object");
        return;
    }
    lookup_key(ib, NULL);
}

static int req_head(void *ud, struct http_msg *m)
{
    struct inbound *ib = ud;
    const struct cfg_limits *lim = limits(ib);
    const char *why = NULL;
    ib->has_body = m->chunked || m->content_length > 0;
    ib->req_chunked = m->chunked;
    ib->is_head = slice_eq_str(m->method, "HEAD");
    ib->trust = ib->c.w->trust; /* this exchange's rules, whatever a reload does meanwhile */
    trust_ref(ib->trust);
    if (http_msg_validate_request(m, &why) < 0) {
        reply_error(ib, 400, "M_UNKNOWN", true, "bad request: %s", why ? why : "invalid");
        return HANDLED;
    }
    if (m->content_length > 0 && (uint64_t)m->content_length > lim->max_body_bytes) {
        /* Decided before reading the body: it is never read, so the connection closes. */
        reply_error(ib, 413, "M_TOO_LARGE", true,
                    "request body of %" PRId64 " bytes is over the limit of %" PRIu64 " bytes",
                    m->content_length, lim->max_body_bytes);
        return HANDLED;
    }
    if (slice_eq_str(target_path(m), "/_matrix/key/v2/server") && for_relay(ib)) {
        reply_key_document(ib);
        return HANDLED;
    }
    if (for_relay(ib) && reply_notary(ib, m))
        return HANDLED;
    if (ib->local_query) {
        conn_set_timer(&ib->c, ib->has_body ? lim->body_timeout_ms : 0);
        return 0;
    }
    int hs = route(ib);
    if (hs < 0) {
        const struct http_field *host = http_msg_field(m, "host");
        reply_error(ib, 404, "M_UNRECOGNIZED", ib->has_body,
                    "no homeserver is served here for host '%.*s'", host ? (int)host->value.len : 0,
                    host ? host->value.base : "");
        return HANDLED;
    }
    if (check_route(ib, m, &ib->c.w->cfg->homeservers[hs]) == HANDLED)
        return HANDLED;
    ib->pool = &ib->c.w->pools[hs];
    if (ib->verify) {
        /* nothing goes upstream before the signature is checked (request_done) */
        if (m->expect_continue && ib->has_body) {
            buf_append_str(conn_out(&ib->c), "HTTP/1.1 100 Continue\r\n\r\n");
            conn_flush(&ib->c);
        }
        conn_set_timer(&ib->c, ib->has_body ? lim->body_timeout_ms : 0);
        return 0;
    }
    if (build_upstream_request(ib) < 0)
        return CH_ENOMEM;
    ib->up = upstream_get(ib->pool, &up_handler, ib, ib->is_head);
    if (ib->up == NULL)
        return CH_ENOMEM;
    if (buf_append(upstream_out(ib->up), buf_data(&ib->upreq), ib->upreq.len) < 0)
        return CH_ENOMEM;
    if (m->expect_continue && ib->has_body) {
        /* RFC 9110 section 10.1.1: chappe accepted the head, so the client may send the body. */
        buf_append_str(conn_out(&ib->c), "HTTP/1.1 100 Continue\r\n\r\n");
        conn_flush(&ib->c);
    }
    conn_set_timer(&ib->c, ib->has_body ? lim->body_timeout_ms : 0);
    return 0;
}

static int req_body(void *ud, const char *p, size_t n)
{
    struct inbound *ib = ud;
    ib->req_body_bytes += n;
    if (ib->local_query) {
        if (ib->kept_body.len + n > KEY_QUERY_MAX_BODY) {
            reply_error(ib, 413, "M_TOO_LARGE", true, "a key query body is at most %d KiB",
                        KEY_QUERY_MAX_BODY / 1024);
            return HANDLED;
        }
        return buf_append(&ib->kept_body, p, n);
    }
    if (ib->req_body_bytes > limits(ib)->max_body_bytes)
        return CH_ETOOBIG;
    if (ib->verify)
        return buf_append(&ib->kept_body, p, n);
    if (ib->up == NULL)
        return 0; /* the upstream failed and the error is out already */
    struct buf *out = upstream_out(ib->up);
    return ib->req_chunked ? http_append_chunk(out, p, n) : buf_append(out, p, n);
}

static int req_complete(void *ud)
{
    (void)ud;
    return 0;
}

static const struct http_parser_cb req_cb = {req_head, req_body, req_complete};

/* The request is fully read: end the upstream body. */
static void request_done(struct inbound *ib)
{
    ib->req_done = true;
    conn_set_timer(&ib->c, 0);
    if (ib->local_query) {
        notary_reply(ib);
        return;
    }
    if (ib->verify) {
        verify_request(ib);
        return;
    }
    if (ib->up == NULL)
        return;
    if (ib->req_chunked)
        http_append_last_chunk(upstream_out(ib->up));
    upstream_flush(ib->up);
}

static void parse_error(struct inbound *ib, int rc)
{
    if (rc == HANDLED || ib->state == IB_CLOSED)
        return;
    if (rc == CH_ETOOBIG) {
        if (ib->resp_started) {
            ib->state = IB_CLOSED;
            conn_close(&ib->c);
            return;
        }
        reply_error(ib, 413, "M_TOO_LARGE", true,
                    "request body is over the limit of %" PRIu64 " bytes",
                    limits(ib)->max_body_bytes);
        return;
    }
    if (rc == CH_ENOMEM) {
        reply_error(ib, 500, "M_UNKNOWN", true, "out of memory");
        return;
    }
    if (ib->resp_started) {
        ib->state = IB_CLOSED;
        conn_close(&ib->c);
        return;
    }
    reply_error(ib, 400, "M_UNKNOWN", true, "bad request: %s",
                ib->hp.error ? ib->hp.error : "invalid HTTP framing");
}

static void process_loop(struct inbound *ib);

static void process(struct inbound *ib)
{
    if (ib->in_process)
        return;
    ib->in_process = true;
    process_loop(ib);
    ib->in_process = false;
}

static void process_loop(struct inbound *ib)
{
    struct conn *c = &ib->c;
    const struct cfg_limits *lim = limits(ib);
    while (!(c->flags & CONN_F_CLOSING)) {
        switch (ib->state) {
        case IB_IDLE:
            if (c->rbuf.len == 0)
                return;
            ib->state = IB_HEAD;
            ib->trim_pending = false;
            ib->t_start = util_mono_ms();
            reset_exchange(ib);
            http_parser_init(&ib->hp, HTTP_REQUEST, &req_cb, ib);
            conn_set_timer(c, lim->header_timeout_ms);
            /* fall through */
        case IB_HEAD: {
            size_t head_len = 0;
            const char *why = NULL;
            int rc = http_scan_head(buf_data(&c->rbuf), c->rbuf.len, lim->max_header_bytes,
                                    &head_len, &why);
            if (rc == HTTP_SCAN_MORE)
                return;
            if (rc == HTTP_SCAN_TOO_LARGE) {
                reply_error(ib, 431, "M_TOO_LARGE", true,
                            "request header block is over the limit of %" PRIu64 " bytes",
                            lim->max_header_bytes);
                return;
            }
            if (rc == HTTP_SCAN_BAD) {
                reply_error(ib, 400, "M_UNKNOWN", true, "bad request: %s", why ? why : "invalid");
                return;
            }
            buf_reset(&ib->head);
            if (buf_append(&ib->head, buf_data(&c->rbuf), head_len) < 0) {
                conn_close(c);
                return;
            }
            buf_consume(&c->rbuf, head_len);
            size_t used = 0;
            ib->state = IB_BODY;
            rc = http_parser_feed(&ib->hp, buf_data(&ib->head), ib->head.len, &used);
            if (rc < 0) {
                parse_error(ib, rc);
                continue;
            }
            if (rc == HTTP_PAUSED)
                goto complete;
            continue;
        }
        case IB_BODY: {
            if (c->rbuf.len == 0)
                return;
            size_t used = 0;
            int rc = http_parser_feed(&ib->hp, buf_data(&c->rbuf), c->rbuf.len, &used);
            if (rc < 0) {
                parse_error(ib, rc);
                continue;
            }
            if (rc == HTTP_PAUSED) {
                buf_consume(&c->rbuf, used);
                goto complete;
            }
            buf_reset(&c->rbuf);
            conn_set_timer(c, lim->body_timeout_ms);
            if (ib->up) {
                upstream_flush(ib->up);
                if (ib->up && upstream_pending(ib->up) > CONN_WRITE_HIGH)
                    conn_pause_read(c); /* resumed by up_writable */
            }
            return;
        }
        case IB_WAIT:
            if (c->rbuf.len > PIPELINE_MAX)
                conn_pause_read(c);
            return;
        case IB_CLOSED:
            return;
        }
        continue;
    complete:
        ib->state = IB_WAIT;
        request_done(ib);
    }
}

/* --- connection events --------------------------------------------------------------- */

static void on_open(struct conn *c)
{
    struct inbound *ib = ib_of(c);
    ib->state = IB_IDLE;
    /* The first request must arrive within header_timeout (slowloris). */
    conn_set_timer(c, limits(ib)->header_timeout_ms);
}

static void on_read(struct conn *c)
{
    process(ib_of(c));
}

static void on_writable(struct conn *c)
{
    struct inbound *ib = ib_of(c);
    if (ib->up)
        upstream_resume_read(ib->up);
}

static void on_eof(struct conn *c, int err)
{
    struct inbound *ib = ib_of(c);
    (void)err;
    switch (ib->state) {
    case IB_IDLE:
        ib->state = IB_CLOSED;
        conn_close(c);
        return;
    case IB_HEAD:
    case IB_BODY:
        /* The request is incomplete and can never be: drop it (nothing was acknowledged). */
        if (ib->state == IB_BODY || c->rbuf.len) {
            snprintf(ib->error, sizeof(ib->error), "client closed before the end of the request");
            if (ib->state == IB_BODY)
                access_log(ib);
        }
        ib->state = IB_CLOSED;
        conn_close(c);
        return;
    case IB_WAIT:
        /* A half-close after a complete request: answer it, then close. */
        ib->close_after = true;
        return;
    case IB_CLOSED:
        return;
    }
}

static void on_timer(struct conn *c)
{
    struct inbound *ib = ib_of(c);
    switch (ib->state) {
    case IB_IDLE:
        if (c->rbuf.len == 0 && ib->trim_pending) {
            ib->trim_pending = false;
            buf_free(&ib->head);
            buf_free(&ib->upreq);
            buf_free(&ib->kept_body);
            conn_trim(c);
            conn_set_timer(c, limits(ib)->idle_timeout_ms - TRIM_AFTER_MS);
            return;
        }
        if (c->rbuf.len == 0) {
            ib->state = IB_CLOSED;
            conn_close(c);
            return;
        }
        /* fall through */
    case IB_HEAD:
        if (ib->state == IB_IDLE) {
            ib->t_start = util_mono_ms();
            reset_exchange(ib);
            http_parser_init(&ib->hp, HTTP_REQUEST, &req_cb, ib);
        }
        reply_error(ib, 408, "M_UNKNOWN", true, "request header not received within %" PRIu64 " ms",
                    limits(ib)->header_timeout_ms);
        return;
    case IB_BODY:
        if (ib->resp_started) {
            ib->state = IB_CLOSED;
            conn_close(c);
            return;
        }
        reply_error(ib, 408, "M_UNKNOWN", true, "request body stalled for %" PRIu64 " ms",
                    limits(ib)->body_timeout_ms);
        return;
    case IB_WAIT:
    case IB_CLOSED:
        return;
    }
}

static void on_drain(struct conn *c)
{
    struct inbound *ib = ib_of(c);
    if (ib->state == IB_IDLE && c->rbuf.len == 0) {
        ib->state = IB_CLOSED;
        conn_close(c);
    }
    /* Otherwise the exchange in progress ends with Connection: close. */
}

static void on_close(struct conn *c)
{
    struct inbound *ib = ib_of(c);
    if (ib->up)
        upstream_abort(ib->up);
    if (ib->kwait)
        ib->kwait->ud = NULL; /* the answer is dropped when it comes */
    for (size_t i = 0; i < ib->nnotary_waits; i++)
        if (ib->notary_waits[i])
            ib->notary_waits[i]->ud = NULL;
    free(ib->notary_waits);
    trust_unref(ib->trust);
    buf_free(&ib->head);
    buf_free(&ib->upreq);
    buf_free(&ib->kept_body);
    struct worker *w = c->w;
    free(ib);
    worker_maybe_finish(w);
}

static const struct conn_handler handler = {
    on_open, on_read, on_writable, on_eof, on_timer, on_drain, on_close,
};

void inbound_accept(struct listener *l, int fd)
{
    struct inbound *ib = calloc(1, sizeof(*ib));
    if (ib == NULL) {
        log_error("out of memory accepting a connection");
        if (fd >= 0)
            close(fd);
        return;
    }
    ib->state = IB_IDLE;
    conn_accept(&ib->c, l, &handler, fd);
}
