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
#include "chappe/keystore.h"
#include "chappe/log.h"
#include "chappe/policy.h"
#include "chappe/route.h"
#include "chappe/store.h"
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
    bool local_post; /* POST /_matrix/key/v2/query to the relay: body kept in local_body */
    struct buf local_body;
    bool in_process;   /* process() is on the stack: do not re-enter it */
    bool trim_pending; /* the idle timer first trims buffers, then closes */
    char error[160];   /* why chappe answered by itself, for the access log */
};

static void process(struct inbound *ib);

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
    ib->local_post = false;
    buf_reset(&ib->local_body);
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
    http_error_response(conn_out(&ib->c), status, errcode, ib->error, ib->close_after, NULL);
    if (!close)
        ib->req_done = true;
    finish_exchange(ib);
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
 * The cached key document of server, co-signed by the relay, appended to out
 * as one element of server_keys; nothing when the server is not allowlisted,
 * nothing is cached, the cache is older than min_valid, or key_id (when
 * given) is not in it. Notary: server-server API, "Querying Keys Through
 * Another Server".
 */
static void append_cosigned(struct inbound *ib, const char *server, const char *key_id,
                            uint64_t min_valid, struct buf *out)
{
    struct worker *w = ib->c.w;
    struct keystore_doc meta;
    struct buf json = BUF_INIT, err = BUF_INIT, enc = BUF_INIT;
    json_t *doc = NULL, *signed_doc = NULL;
    struct policy_decision d = policy_check_name_str(w->policy, server, strlen(server));
    if (!d.allow || w->store == NULL || w->keys->nkeys == 0)
        goto out;
    if (keystore_get_doc(w->store, server, &meta, &json) != 0 || meta.valid_until_ts < min_valid ||
        meta.valid_until_ts <= util_wall_ms())
        goto out;
    if (cjson_parse(buf_data(&json), json.len, &doc, &err) < 0)
        goto out;
    if (key_id != NULL && json_object_get(json_object_get(doc, "verify_keys"), key_id) == NULL &&
        json_object_get(json_object_get(doc, "old_verify_keys"), key_id) == NULL)
        goto out;
    if (keydoc_cosign(doc, w->cfg->server_name, w->keys->keys, w->keys->nkeys, &signed_doc, &err) <
            0 ||
        cjson_encode(signed_doc, &enc, &err) < 0) {
        log_error("notary: %s: %.*s", server, (int)err.len, buf_data(&err));
        goto out;
    }
    buf_append_slice(out, buf_slice(&enc));
out:
    json_decref(doc);
    json_decref(signed_doc);
    buf_free(&json);
    buf_free(&err);
    buf_free(&enc);
}

/* GET /_matrix/key/v2/query/{serverName}[/{keyId}] addressed to the relay: answered from the
 * key cache. */
static void reply_notary_get(struct inbound *ib, const struct route_match *rm)
{
    struct buf body = BUF_INIT;
    const char *server = route_param(rm, ROUTE_P_SERVER_NAME);
    const char *key_id = route_param(rm, ROUTE_P_KEY_ID);
    buf_append_str(&body, "{\"server_keys\":[");
    append_cosigned(ib, server, key_id, min_valid_until(rm->query), &body);
    buf_append_str(&body, "]}");
    reply_json(ib, &body);
    buf_free(&body);
}

#define KEY_QUERY_MAX_BODY  (64 * 1024)
#define KEY_QUERY_MAX_NAMES 100

/*
 * POST /_matrix/key/v2/query: {"server_keys": {server: {key_id: {"minimum_valid_until_ts":
 * ms}}}}. Each allowlisted server with a cached document fresh enough for the
 * strictest criterion asked gets its co-signed document.
 */
static void reply_notary_post(struct inbound *ib)
{
    struct buf err = BUF_INIT, body = BUF_INIT;
    json_t *q = NULL;
    if (cjson_parse(buf_data(&ib->local_body), ib->local_body.len, &q, &err) < 0) {
        reply_error(ib, 400, "M_NOT_JSON", false, "the body is not JSON: %.*s",
                    (int)(err.len && buf_data(&err)[err.len - 1] == '\n' ? err.len - 1 : err.len),
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
        size_t before = body.len;
        if (buf_data(&body)[body.len - 1] != '[')
            buf_append_str(&body, ",");
        size_t mark = body.len;
        append_cosigned(ib, server, NULL, min, &body);
        if (body.len == mark)
            body.len = before; /* nothing for this server: drop the comma */
    }
    buf_append_str(&body, "]}");
    reply_json(ib, &body);
out:
    json_decref(q);
    buf_free(&err);
    buf_free(&body);
}

/*
 * The notary's GET endpoints, for a request addressed to the relay: true when
 * answered (the response, or a 400/405 for a bad key query). POST
 * /_matrix/key/v2/query is not served by the relay yet.
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
    if (r == ROUTE_OK && rm.route->id == ROUTE_KEY_QUERY_BATCH) {
        if (m->content_length > KEY_QUERY_MAX_BODY) {
            reply_error(ib, 413, "M_TOO_LARGE", true, "a key query body is at most %d KiB",
                        KEY_QUERY_MAX_BODY / 1024);
            return true;
        }
        ib->local_post = true; /* answered once the body is in (request_done) */
        return false;
    }
    if (r != ROUTE_OK) {
        reply_error(ib, route_result_status(r), route_result_errcode(r), ib->has_body, "%s",
                    why ? why : "bad request");
        return true;
    }
    reply_notary_get(ib, &rm);
    return true;
}

/* Sentinel: the request was answered locally; stop parsing. */
#define HANDLED CH_EPERM

/*
 * The edge checks of an X-Matrix route (server-server API, "Request
 * Authentication"), cheapest first: the header is there and well formed
 * (else 401), its origin is a server name on federation_domain_whitelist
 * (else 403, before any key is looked at), its destination, when given, is
 * the homeserver the request is for (else 401). 0 to go on, or HANDLED after
 * the error reply. Paths outside the spec's table are not judged here yet.
 */
static int check_edge(struct inbound *ib, const struct http_msg *m, const struct cfg_homeserver *hs)
{
    struct route_match rm;
    struct xmatrix x;
    struct server_name origin, dest;
    const char *why = NULL;
    struct policy *pol = ib->c.w->policy;
    if (pol == NULL ||
        route_match(m->method.base, m->method.len, m->target.base, m->target.len, &rm, NULL) !=
            ROUTE_OK ||
        rm.route->auth != ROUTE_AUTH_XMATRIX)
        return 0;
    const struct http_field *auth = NULL;
    for (size_t i = 0; i < m->nfields && auth == NULL; i++) {
        const struct http_field *f = &m->fields[i];
        if (slice_case_eq_str(f->name, "authorization") && f->value.len >= 8 &&
            strncasecmp(f->value.base, "X-Matrix", 8) == 0)
            auth = f;
    }
    if (auth == NULL) {
        reply_error(ib, 401, "M_UNAUTHORIZED", ib->has_body,
                    "%s needs an X-Matrix Authorization header", rm.route->name);
        return HANDLED;
    }
    if (xmatrix_parse(auth->value.base, auth->value.len, &x, &why) < 0) {
        reply_error(ib, 401, "M_UNAUTHORIZED", ib->has_body, "malformed X-Matrix header: %s",
                    why ? why : "invalid");
        return HANDLED;
    }
    struct policy_decision d;
    if (server_name_parse(x.origin, strlen(x.origin), &origin, &why) != 0) {
        d = (struct policy_decision){.allow = false, .reason = POLICY_INVALID_SERVER_NAME};
    } else {
        d = policy_check_name(pol, &origin);
    }
    policy_count(POLICY_INBOUND, d.reason);
    if (!d.allow) {
        log_info("conn %s: origin %s refused: %s", ib->c.peer, x.origin,
                 policy_reason_code(d.reason));
        reply_error(ib, 403, "M_FORBIDDEN", ib->has_body, "origin %s may not federate here: %s",
                    x.origin, policy_reason_code(d.reason));
        return HANDLED;
    }
    if (x.has_destination &&
        (server_name_parse(x.destination, strlen(x.destination), &dest, &why) != 0 ||
         strcmp(dest.name, hs->server_name) != 0)) {
        reply_error(ib, 401, "M_UNAUTHORIZED", ib->has_body,
                    "X-Matrix destination %s is not %s, the server addressed", x.destination,
                    hs->server_name);
        return HANDLED;
    }
    return 0;
}

static int req_head(void *ud, struct http_msg *m)
{
    struct inbound *ib = ud;
    const struct cfg_limits *lim = limits(ib);
    const char *why = NULL;
    ib->has_body = m->chunked || m->content_length > 0;
    ib->req_chunked = m->chunked;
    ib->is_head = slice_eq_str(m->method, "HEAD");
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
    if (ib->local_post) {
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
    if (check_edge(ib, m, &ib->c.w->cfg->homeservers[hs]) == HANDLED)
        return HANDLED;
    ib->pool = &ib->c.w->pools[hs];
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
    if (ib->local_post) {
        if (ib->local_body.len + n > KEY_QUERY_MAX_BODY) {
            reply_error(ib, 413, "M_TOO_LARGE", true, "a key query body is at most %d KiB",
                        KEY_QUERY_MAX_BODY / 1024);
            return HANDLED;
        }
        return buf_append(&ib->local_body, p, n);
    }
    if (ib->req_body_bytes > limits(ib)->max_body_bytes)
        return CH_ETOOBIG;
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
    if (ib->local_post) {
        reply_notary_post(ib);
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
            buf_free(&ib->local_body);
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
    buf_free(&ib->head);
    buf_free(&ib->upreq);
    buf_free(&ib->local_body);
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
