/* egress.c -- the fronted homeservers' outbound federation requests: authenticated, checked
 * against the policy, and sent on through the outbound client. */
/* SPDX-License-Identifier: ISC */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "chappe/b64.h"
#include "chappe/cjson.h"
#include "chappe/conn.h"
#include "chappe/egress.h"
#include "chappe/egress_target.h"
#include "chappe/http.h"
#include "chappe/log.h"
#include "chappe/metrics.h"
#include "chappe/mint.h"
#include "chappe/queue.h"
#include "chappe/resolve.h"
#include "chappe/sender.h"
#include "chappe/trust.h"
#include "chappe/util.h"
#include "chappe/xmatrix.h"

#define SEND_PREFIX      "/_matrix/federation/v1/send/"
#define MAX_PDUS         50 /* the spec's limits on one transaction */
#define MAX_EDUS         100
#define FULL_RETRY_AFTER "Retry-After: 10\r\n" /* a full queue: the sender frees room */

/* --- secrets --------------------------------------------------------------------------- */

int egress_secrets_load(const struct config *cfg, struct egress_secrets *out, struct buf *err)
{
    int rc = 0;
    memset(out, 0, sizeof(*out));
    out->hash = calloc(cfg->nhomeservers ? cfg->nhomeservers : 1, sizeof(*out->hash));
    if (out->hash == NULL)
        return CH_ENOMEM;
    out->n = cfg->nhomeservers;
    for (size_t i = 0; i < cfg->nhomeservers; i++) {
        const struct cfg_homeserver *h = &cfg->homeservers[i];
        if (h->egress_secret_path == NULL) {
            buf_appendf(err,
                        "%s: homeserver %s: egress_secret_path is required with an egress "
                        "listener (the secret it sends in Proxy-Authorization)\n",
                        cfg->path, h->server_name);
            rc = CH_EINVAL;
            continue;
        }
        int r = util_read_secret_hash(h->egress_secret_path, "egress secret", out->hash[i], err);
        if (r < 0)
            rc = r;
    }
    if (rc < 0)
        egress_secrets_free(out);
    return rc;
}

void egress_secrets_free(struct egress_secrets *s)
{
    if (s->hash != NULL)
        sodium_memzero(s->hash, s->n * sizeof(*s->hash));
    free(s->hash);
    s->hash = NULL;
    s->n = 0;
}

int egress_secrets_match(const struct egress_secrets *s, const char *token, size_t len)
{
    unsigned char h[crypto_generichash_BYTES];
    int found = -1;
    crypto_generichash(h, sizeof(h), (const unsigned char *)token, len, NULL, 0);
    for (size_t i = 0; i < s->n; i++)
        if (sodium_memcmp(h, s->hash[i], sizeof(h)) == 0 && found < 0)
            found = (int)i;
    return found;
}

/* --- the role -------------------------------------------------------------------------- */

enum eg_state { EG_IDLE, EG_HEAD, EG_BODY, EG_WAIT, EG_CLOSED };

struct egress;

/* A transaction on its way into the queue: owns its bytes, so that the connection may close
 * while the store writes it (the write still happens; nobody is answered). */
struct eg_put {
    struct egress *e; /* NULL once the connection closed */
    struct sender *sender;
    struct buf data; /* the item's strings */
    struct buf body;
    struct queue_item it;
    struct queue_caps caps;
    uint64_t seq;
    bool duplicate;
};

struct egress {
    struct conn c; /* first: the handler callbacks find us with CONTAINER_OF */
    enum eg_state state;
    struct http_parser hp;
    struct buf head;    /* the request head: hp.msg slices point here */
    struct buf body;    /* the request body, kept whole */
    struct buf headers; /* the header lines sent on */
    struct egress_target t;
    struct server_name dest; /* the server the request is for: checked, then sent to */
    bool has_dest;
    struct xmatrix x; /* its X-Matrix Authorization, parsed once (choose_destination) */
    bool has_x;
    /* inside a CONNECT tunnel (intercepted TLS): origin-form requests, for the homeserver that
     * authenticated the CONNECT, to the authority it asked for */
    bool tunnel;
    int tunnel_homeserver;
    struct server_name tunnel_target;
    char *path; /* t.path, NUL-terminated */
    char method[32];
    struct trust *trust; /* the snapshot this exchange started with */
    struct resolve_request *rq;
    struct eg_put *put; /* the transaction being stored */
    uint64_t t_start;
    int status;
    int homeserver;
    bool chunked_out; /* the response is re-chunked towards the homeserver */
    bool resp_started;
    bool close_after;
    bool req_done;
    bool in_process; /* process() is on the stack: do not re-enter it */
    char error[400];
};

static void process(struct egress *e);

static struct egress *eg_of(struct conn *c)
{
    return CONTAINER_OF(c, struct egress, c);
}

static const struct cfg_limits *limits(const struct egress *e)
{
    return &e->c.w->cfg->limits;
}

static void access_log(struct egress *e)
{
    struct buf b = BUF_INIT;
    const struct http_msg *m = &e->hp.msg;
    uint64_t now = util_wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    buf_appendf(&b, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03uZ\",\"listener\":\"egress\"",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                (unsigned)(now % 1000));
    buf_append_str(&b, ",\"peer\":");
    http_append_json_string(&b, e->c.peer, strlen(e->c.peer));
    buf_appendf(&b, ",\"worker\":%u", e->c.w->id);
    if (e->homeserver >= 0) {
        const char *hs = e->c.w->cfg->homeservers[e->homeserver].server_name;
        buf_append_str(&b, ",\"origin\":");
        http_append_json_string(&b, hs, strlen(hs));
    }
    if (e->has_dest) {
        buf_append_str(&b, ",\"destination\":");
        http_append_json_string(&b, e->dest.name, strlen(e->dest.name));
    } else if (e->t.kind != EGRESS_NONE) {
        buf_append_str(&b, ",\"target\":");
        http_append_json_string(&b, e->t.dest.name, strlen(e->t.dest.name));
    }
    if (e->t.kind != EGRESS_NONE) {
        const char *k = e->t.kind == EGRESS_CONNECT ? "connect"
                        : e->tunnel                 ? "tunnel"
                                                    : egress_kind_name(e->t.kind);
        buf_append_str(&b, ",\"form\":");
        http_append_json_string(&b, k, strlen(k));
    }
    buf_append_str(&b, ",\"method\":");
    http_append_json_string(&b, m->method.base ? m->method.base : "", m->method.len);
    buf_append_str(&b, ",\"path\":");
    http_append_json_string(&b, m->target.base ? m->target.base : "", m->target.len);
    buf_appendf(&b, ",\"status\":%d,\"duration_ms\":%" PRIu64, e->status,
                util_mono_ms() - e->t_start);
    if (e->error[0]) {
        buf_append_str(&b, ",\"error\":");
        http_append_json_string(&b, e->error, strlen(e->error));
    }
    buf_append_str(&b, "}");
    metrics_count_request(LISTENER_EGRESS, e->status);
    log_access(buf_data(&b), b.len);
    buf_free(&b);
}

static void reset_exchange(struct egress *e)
{
    buf_reset(&e->body);
    buf_reset(&e->headers);
    free(e->path);
    e->path = NULL;
    memset(&e->t, 0, sizeof(e->t));
    memset(&e->dest, 0, sizeof(e->dest));
    e->has_dest = e->has_x = false;
    trust_unref(e->trust);
    e->trust = NULL;
    e->status = 0;
    e->homeserver = e->tunnel ? e->tunnel_homeserver : -1;
    e->chunked_out = e->resp_started = e->close_after = e->req_done = false;
    e->error[0] = '\0';
}

static void finish_exchange(struct egress *e)
{
    struct conn *c = &e->c;
    access_log(e);
    bool close = e->close_after || !e->req_done || c->w->draining;
    reset_exchange(e);
    if (close) {
        e->state = EG_CLOSED;
        conn_set_timer(c, 0);
        conn_close_after_flush(c);
        return;
    }
    e->state = EG_IDLE;
    conn_flush(c);
    conn_set_timer(c, limits(e)->idle_timeout_ms);
    conn_resume_read(c);
    if (c->rbuf.len && !e->in_process)
        process(e);
}

static void reply_error(struct egress *e, int status, const char *errcode, bool close,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void reply_error(struct egress *e, int status, const char *errcode, bool close,
                        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->error, sizeof(e->error), fmt, ap);
    va_end(ap);
    e->status = status;
    if (close || e->c.w->draining || !e->hp.msg.keep_alive)
        e->close_after = true;
    http_error_response(conn_out(&e->c), status, errcode, e->error, e->close_after, NULL);
    if (!close)
        e->req_done = true;
    finish_exchange(e);
}

/* --- the response, from the destination ------------------------------------------------ */

static int rs_head(void *ud, const struct http_msg *resp)
{
    struct egress *e = ud;
    struct buf *out = conn_out(&e->c);
    const struct http_msg *req = &e->hp.msg;
    e->status = resp->status;
    bool no_body = resp->status == 204 || resp->status == 304 || slice_eq_str(req->method, "HEAD");
    e->chunked_out = !no_body && !(resp->content_length >= 0 && !resp->chunked);
    if (e->chunked_out && req->http_minor == 0)
        e->close_after = true; /* an HTTP/1.0 homeserver: the close ends the body */
    if (!req->keep_alive || e->c.w->draining)
        e->close_after = true;
    buf_appendf(out, "HTTP/1.1 %03d ", resp->status);
    if (resp->reason.len)
        buf_append_slice(out, resp->reason);
    else
        buf_append_str(out, http_reason(resp->status));
    buf_append_str(out, "\r\n");
    for (size_t i = 0; i < resp->nfields; i++) {
        const struct http_field *f = &resp->fields[i];
        if (http_is_hop_by_hop(resp, f->name) ||
            (e->chunked_out && slice_case_eq_str(f->name, "content-length")))
            continue;
        buf_append_slice(out, f->name);
        buf_append(out, ": ", 2);
        buf_append_slice(out, f->value);
        buf_append(out, "\r\n", 2);
    }
    if (e->chunked_out && req->http_minor == 1)
        buf_append_str(out, "Transfer-Encoding: chunked\r\n");
    if (e->close_after)
        buf_append_str(out, "Connection: close\r\n");
    buf_append(out, "\r\n", 2);
    e->resp_started = true;
    return 0;
}

static int rs_body(void *ud, const char *p, size_t n)
{
    struct egress *e = ud;
    struct buf *out = conn_out(&e->c);
    int rc = e->chunked_out && e->hp.msg.http_minor == 1 ? http_append_chunk(out, p, n)
                                                         : buf_append(out, p, n);
    if (out->len >= CONN_WRITE_LOW)
        conn_flush(&e->c);
    return rc;
}

static void rs_complete(void *ud)
{
    struct egress *e = ud;
    e->rq = NULL;
    if (e->chunked_out && e->hp.msg.http_minor == 1)
        http_append_last_chunk(conn_out(&e->c));
    finish_exchange(e);
}

static void rs_error(void *ud, int err, const char *why, bool sent)
{
    struct egress *e = ud;
    (void)sent;
    e->rq = NULL;
    if (e->resp_started) {
        snprintf(e->error, sizeof(e->error), "%s: %.120s", e->dest.name, why);
        access_log(e);
        e->state = EG_CLOSED;
        conn_close(&e->c);
        return;
    }
    if (err == CH_EPERM)
        reply_error(e, 403, "M_FORBIDDEN", false, "%s may not be reached: %s", e->dest.name, why);
    else if (err == CH_ETIMEOUT)
        reply_error(e, 504, "M_UNKNOWN", false, "%s timed out: %s", e->dest.name, why);
    else
        reply_error(e, 502, "M_UNKNOWN", false, "%s unreachable: %s", e->dest.name, why);
}

static const struct client_handler rs_handler = {
    .on_head = rs_head,
    .on_body = rs_body,
    .on_complete = rs_complete,
    .on_error = rs_error,
};

/* --- the request, from the homeserver -------------------------------------------------- */

/* The homeserver's fields that go on: not hop-by-hop, not the ones the client writes. */
static int collect_headers(struct egress *e)
{
    const struct http_msg *m = &e->hp.msg;
    for (size_t i = 0; i < m->nfields; i++) {
        const struct http_field *f = &m->fields[i];
        if (http_is_hop_by_hop(m, f->name) || slice_case_eq_str(f->name, "host") ||
            slice_case_eq_str(f->name, "content-length") || slice_case_eq_str(f->name, "expect"))
            continue;
        buf_append_slice(&e->headers, f->name);
        buf_append(&e->headers, ": ", 2);
        buf_append_slice(&e->headers, f->value);
        if (buf_append(&e->headers, "\r\n", 2) < 0)
            return CH_ENOMEM;
    }
    return buf_append(&e->headers, "", 1) < 0 ? CH_ENOMEM : 0; /* NUL-terminated */
}

static void enqueue(struct egress *e, struct slice txn_id);

/* The whole request is in: send it on. */
static void forward(struct egress *e)
{
    struct worker *w = e->c.w;
    if (w->res == NULL) {
        reply_error(e, 500, "M_UNKNOWN", false, "no outbound client on this worker");
        return;
    }
    size_t plen = strlen(SEND_PREFIX);
    if (strcmp(e->method, "PUT") == 0 && strncmp(e->path, SEND_PREFIX, plen) == 0) {
        enqueue(e, slice_from_str(e->path + plen));
        return;
    }
    struct client_request req = {.method = e->method,
                                 .target = e->path,
                                 .headers = buf_data(&e->headers),
                                 .body = e->body.len ? buf_data(&e->body) : NULL,
                                 .body_len = e->body.len};
    if (req.body == NULL && !slice_eq_str(e->hp.msg.method, "GET") &&
        !slice_eq_str(e->hp.msg.method, "HEAD") && !slice_eq_str(e->hp.msg.method, "DELETE"))
        req.body = ""; /* a PUT or POST without content still says Content-Length: 0 */
    e->rq = resolve_request(w->res, e->dest.name, &req, &rs_handler, NULL, e);
    if (e->rq == NULL)
        reply_error(e, 500, "M_UNKNOWN", false, "out of memory");
}

/* --- transactions: into the queue ------------------------------------------------------ */

static void put_free(struct eg_put *p)
{
    buf_free(&p->data);
    buf_free(&p->body);
    free(p);
}

static int put_write(MDB_txn *txn, struct store *s, void *ud)
{
    struct eg_put *p = ud;
    return queue_put_txn(txn, s, &p->it, &p->caps, &p->seq, &p->duplicate);
}

static void put_done(void *ud, int rc)
{
    struct eg_put *p = ud;
    struct egress *e = p->e;
    if (rc == 0 && !p->duplicate)
        sender_kick(p->sender, p->it.destination.base);
    if (e == NULL) {
        if (rc != 0)
            log_warn("egress: txn %s to %s not stored (%s); its sender had gone", p->it.txn_id.base,
                     p->it.destination.base, util_strerror(rc));
        put_free(p);
        return;
    }
    e->put = NULL;
    if (rc == 0) {
        static const char ok[] = "{\"pdus\":{}}";
        struct buf *out = conn_out(&e->c);
        e->status = 200;
        if (!e->hp.msg.keep_alive || e->c.w->draining)
            e->close_after = true;
        buf_appendf(out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    "%zu\r\n%s\r\n%s",
                    sizeof(ok) - 1, e->close_after ? "Connection: close\r\n" : "", ok);
        if (p->duplicate)
            snprintf(e->error, sizeof(e->error), "duplicate of queued entry %" PRIu64, p->seq);
        finish_exchange(e);
    } else if (rc == CH_EAGAIN) {
        e->status = 503;
        snprintf(e->error, sizeof(e->error),
                 "the queue is full (queue.max_bytes %" PRIu64
                 ", max_bytes_per_destination %" PRIu64 "): try again later",
                 p->caps.max_bytes, p->caps.dest_max_bytes);
        http_error_response(conn_out(&e->c), 503, "M_UNKNOWN", e->error, e->close_after,
                            FULL_RETRY_AFTER);
        finish_exchange(e);
    } else if (rc == CH_ETOOBIG) {
        e->status = 503;
        snprintf(e->error, sizeof(e->error),
                 "the queue's store is full (queue.map_size): try again later");
        log_error("egress: %s: the store is full; transactions are refused until deliveries "
                  "free room",
                  store_path(e->c.w->store));
        http_error_response(conn_out(&e->c), 503, "M_UNKNOWN", e->error, e->close_after,
                            FULL_RETRY_AFTER);
        finish_exchange(e);
    } else {
        e->status = 500;
        snprintf(e->error, sizeof(e->error), "the transaction could not be stored: %s",
                 util_strerror(rc));
        http_error_response(conn_out(&e->c), 500, "M_UNKNOWN", e->error, e->close_after, NULL);
        finish_exchange(e);
    }
    put_free(p);
}

/* Append s to p->data as one NUL-terminated field; its offset into *off. */
static int put_field(struct eg_put *p, struct slice s, size_t *off)
{
    *off = p->data.len;
    if (buf_append(&p->data, s.base ? s.base : "", s.len) < 0 || buf_append(&p->data, "", 1) < 0)
        return CH_ENOMEM;
    return 0;
}

/* The transaction's own checks: what it says must be what it is. 0, or answered. */
static int check_txn(struct egress *e, struct slice txn_id, const struct http_field **auth)
{
    const struct http_msg *m = &e->hp.msg;
    const char *hs = e->c.w->cfg->homeservers[e->homeserver].server_name;
    if (txn_id.len == 0 || memchr(txn_id.base, '/', txn_id.len) != NULL ||
        memchr(txn_id.base, '?', txn_id.len) != NULL || txn_id.len > QUEUE_FIELD_MAX) {
        reply_error(e, 400, "M_UNRECOGNIZED", false, "bad transaction path %s", e->path);
        return CH_EINVAL;
    }
    *auth = NULL;
    for (size_t i = 0; i < m->nfields; i++) {
        if (!slice_case_eq_str(m->fields[i].name, "authorization"))
            continue;
        if (*auth != NULL) {
            reply_error(e, 400, "M_UNAUTHORIZED", false,
                        "a queued transaction carries one Authorization header");
            return CH_EINVAL;
        }
        *auth = &m->fields[i];
    }
    if (*auth == NULL) {
        reply_error(e, 401, "M_UNAUTHORIZED", false,
                    "a transaction must be signed by its homeserver (X-Matrix Authorization)");
        return CH_EPERM;
    }
    if (!e->has_x) { /* another scheme: choose_destination left it alone */
        struct xmatrix other;
        const char *why = "not an X-Matrix header";
        (void)xmatrix_parse((*auth)->value.base, (*auth)->value.len, &other, &why);
        reply_error(e, 401, "M_UNAUTHORIZED", false, "bad X-Matrix Authorization: %s", why);
        return CH_EPERM;
    }
    if (strcmp(e->x.origin, hs) != 0) {
        reply_error(e, 401, "M_UNAUTHORIZED", false,
                    "the transaction is signed by %s, not by homeserver %s", e->x.origin, hs);
        return CH_EPERM;
    }
    /* (its destination was matched against the one it is sent to by choose_destination) */
    struct buf err = BUF_INIT;
    json_t *body = NULL;
    int rc = cjson_parse(buf_data(&e->body), e->body.len, &body, &err);
    if (rc < 0) {
        buf_trim_newlines(&err);
        reply_error(e, 400, "M_NOT_JSON", false, "the transaction is not JSON: %.*s", (int)err.len,
                    buf_data(&err));
    } else if (!json_is_object(body)) {
        reply_error(e, 400, "M_BAD_JSON", false, "a transaction is a JSON object");
        rc = CH_EINVAL;
    } else {
        json_t *pdus = json_object_get(body, "pdus"), *edus = json_object_get(body, "edus");
        if (!json_is_array(pdus) || (edus != NULL && !json_is_array(edus))) {
            reply_error(e, 400, "M_BAD_JSON", false,
                        "a transaction has a \"pdus\" array (and optionally an \"edus\" array)");
            rc = CH_EINVAL;
        } else if (json_array_size(pdus) > MAX_PDUS || json_array_size(edus) > MAX_EDUS) {
            reply_error(e, 400, "M_BAD_JSON", false,
                        "a transaction holds at most %d PDUs and %d EDUs, this one %zu and %zu",
                        MAX_PDUS, MAX_EDUS, json_array_size(pdus), json_array_size(edus));
            rc = CH_EINVAL;
        }
    }
    json_decref(body);
    buf_free(&err);
    return rc;
}

/* PUT /send/{txnId}: checked, stored durably, then acknowledged; the sender delivers it. */
static void enqueue(struct egress *e, struct slice txn_id)
{
    struct worker *w = e->c.w;
    const struct http_field *auth = NULL;
    if (w->sender == NULL || !w->sport_open) {
        reply_error(e, 500, "M_UNKNOWN", false, "no queue on this worker");
        return;
    }
    if (check_txn(e, txn_id, &auth) < 0)
        return;
    struct eg_put *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        reply_error(e, 500, "M_UNKNOWN", false, "out of memory");
        return;
    }
    const struct http_msg *m = &e->hp.msg;
    const struct http_field *ct = http_msg_field(m, "content-type");
    const char *hs = w->cfg->homeservers[e->homeserver].server_name;
    size_t off[7];
    int rc = put_field(p, slice_from_str(hs), &off[0]);
    rc = rc ? rc : put_field(p, slice_from_str(e->dest.name), &off[1]);
    rc = rc ? rc : put_field(p, txn_id, &off[2]);
    rc = rc ? rc : put_field(p, slice_from_str("PUT"), &off[3]);
    rc = rc ? rc : put_field(p, slice_from_str(e->path), &off[4]);
    rc = rc ? rc : put_field(p, auth->value, &off[5]);
    rc = rc ? rc : put_field(p, ct ? ct->value : slice_from_str(""), &off[6]);
    if (rc < 0) {
        put_free(p);
        reply_error(e, 500, "M_UNKNOWN", false, "out of memory");
        return;
    }
    /* the body moves: it is not copied */
    p->body = e->body;
    e->body = (struct buf)BUF_INIT;
    const char *d = buf_data(&p->data);
    struct slice *f[7] = {&p->it.origin, &p->it.destination,   &p->it.txn_id,      &p->it.method,
                          &p->it.path,   &p->it.authorization, &p->it.content_type};
    for (size_t i = 0; i < 7; i++)
        *f[i] = (struct slice){d + off[i], strlen(d + off[i])};
    p->it.body = (struct slice){buf_data(&p->body), p->body.len};
    p->it.first_seen_ms = util_wall_ms();
    p->caps.max_bytes = w->cfg->queue.max_bytes;
    p->caps.dest_max_bytes = w->cfg->queue.max_bytes_per_destination;
    p->sender = w->sender;
    p->e = e;
    rc = store_submit(w->store, &w->sport, put_write, put_done, p);
    if (rc < 0) {
        put_free(p);
        reply_error(e, 503, "M_UNKNOWN", false, "the relay is stopping: the queue is closed");
        return;
    }
    e->put = p;
}

/*
 * The homeserver whose secret a Proxy-Authorization value carries, or -1:
 * "Bearer SECRET" (Synapse's outbound_federation_restricted_to workers), or
 * "Basic base64(USER:SECRET)" (an https_proxy=http://USER:SECRET@host:port URL: Synapse's
 * ProxyAgent sends the userinfo that way; the user name is not checked).
 */
static int match_credentials(const struct egress_secrets *sec, struct slice v)
{
    if (v.len > 7 && strncasecmp(v.base, "Bearer ", 7) == 0)
        return egress_secrets_match(sec, v.base + 7, v.len - 7);
    if (v.len <= 6 || strncasecmp(v.base, "Basic ", 6) != 0 || v.len > UTIL_SECRET_MAX * 2)
        return -1;
    struct buf dec = BUF_INIT;
    int found = -1;
    if (b64_decode(&dec, v.base + 6, v.len - 6) == 0) {
        const char *colon = memchr(buf_data(&dec), ':', dec.len);
        if (colon != NULL) {
            size_t off = (size_t)(colon - buf_data(&dec)) + 1;
            found = egress_secrets_match(sec, buf_data(&dec) + off, dec.len - off);
        }
    }
    buf_free_secret(&dec);
    return found;
}

/* Who is asking: the homeserver whose secret is in Proxy-Authorization. */
static int authenticate(struct egress *e, const struct http_msg *m)
{
    const struct http_field *pa = http_msg_field(m, "proxy-authorization");
    if (pa == NULL) {
        reply_error(e, 401, "M_MISSING_TOKEN", e->hp.msg.content_length > 0 || m->chunked,
                    "the egress needs Proxy-Authorization: Bearer <egress secret>");
        return CH_EPERM;
    }
    e->homeserver = match_credentials(e->c.w->egress_secrets, slice_trim_ows(pa->value));
    if (e->homeserver < 0) {
        reply_error(e, 401, "M_UNAUTHORIZED", e->hp.msg.content_length > 0 || m->chunked,
                    "Proxy-Authorization is not a homeserver's egress secret");
        return CH_EPERM;
    }
    return 0;
}

/* A fronted homeserver's name, or the relay's own. */
static bool is_local(const struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nhomeservers; i++)
        if (strcmp(cfg->homeservers[i].server_name, name) == 0)
            return true;
    return cfg->server_name != NULL && strcmp(cfg->server_name, name) == 0;
}

/* Sentinel: the request was answered here; stop parsing. */
#define HANDLED CH_EPERM

/*
 * The server the request is for. matrix-federation://: the authority, a
 * server name (chappe does the discovery). https:// and tunnels: the
 * authority is whatever host the homeserver's own discovery found (a
 * delegated host, port 443 for .well-known), so a signed request is for its
 * X-Matrix destination, and goes there through chappe's own discovery; an
 * unsigned one (.well-known, a key document) is for the host and port as
 * given. A request signed for another server than it is sent to is refused:
 * what is checked is what is sent.
 */
static int choose_destination(struct egress *e, const struct http_msg *m, bool has_body)
{
    const char *why = NULL;
    struct xmatrix *x = &e->x;
    const struct http_field *a = http_msg_field(m, "authorization");
    if (a != NULL && a->value.len >= 9 && strncasecmp(a->value.base, "X-Matrix ", 9) == 0) {
        if (xmatrix_parse(a->value.base, a->value.len, x, &why) < 0) {
            reply_error(e, 401, "M_UNAUTHORIZED", has_body, "bad X-Matrix Authorization: %s", why);
            return CH_EPERM;
        }
        e->has_x = true;
    }
    bool signed_for = e->has_x && x->has_destination;
    if (e->t.kind == EGRESS_MATRIX_FEDERATION) {
        e->dest = e->t.dest;
    } else if (signed_for) {
        if (server_name_parse(x->destination, strlen(x->destination), &e->dest, &why) != 0) {
            reply_error(e, 401, "M_UNAUTHORIZED", has_body,
                        "the X-Matrix destination is not a server name: %s", why);
            return CH_EPERM;
        }
    } else {
        char name[SERVER_NAME_MAX + 16];
        const struct server_name *h = &e->t.dest;
        unsigned port = h->port ? h->port : 443;
        snprintf(name, sizeof(name), h->type == SERVER_HOST_IPV6 ? "[%s]:%u" : "%s:%u", h->host,
                 port);
        if (server_name_parse(name, strlen(name), &e->dest, &why) != 0) {
            reply_error(e, 400, "M_UNRECOGNIZED", has_body, "bad destination %s: %s", name, why);
            return CH_EINVAL;
        }
    }
    e->has_dest = true;
    if (signed_for && strcmp(x->destination, e->dest.name) != 0) {
        reply_error(e, 401, "M_UNAUTHORIZED", has_body,
                    "the request is signed for %s but sent to %s", x->destination, e->dest.name);
        return CH_EPERM;
    }
    return 0;
}

/*
 * CONNECT host:port (a homeserver using chappe as its https_proxy): decided on
 * the host before any TLS (it must be able to match an allowed server, or be
 * local), then answered 200 and intercepted: chappe's side of the TLS presents
 * a certificate minted for the host by the egress CA, and every request inside
 * goes through the same checks as an https:// one (choose_destination): the
 * tunnel's authority is never connected to as given.
 */
static int start_tunnel(struct egress *e, const struct http_msg *m)
{
    struct worker *w = e->c.w;
    bool has_body = m->chunked || m->content_length > 0;
    if (w->mints == NULL) {
        reply_error(e, 501, "M_UNRECOGNIZED", true,
                    "CONNECT needs tls.egress_ca (interception); use matrix-federation://");
        return HANDLED;
    }
    if (has_body) {
        reply_error(e, 400, "M_UNKNOWN", true, "a CONNECT request has no body");
        return HANDLED;
    }
    struct policy_decision d = {.allow = true};
    if (!is_local(w->cfg, e->t.dest.host)) {
        d = policy_check_name(e->trust->pol, &e->t.dest);
        policy_count(POLICY_OUTBOUND, d.reason);
    }
    if (!d.allow) {
        log_info("egress %s: CONNECT %s refused: %s", e->c.peer, e->t.dest.name,
                 policy_reason_code(d.reason));
        reply_error(e, 403, "M_FORBIDDEN", true, "CONNECT to %s refused: %s", e->t.dest.name,
                    policy_reason_code(d.reason));
        return HANDLED;
    }
    struct tls_server *srv = NULL;
    struct buf err = BUF_INIT;
    if (mint_server_for(w->mints, e->t.dest.host, &srv, &err) < 0) {
        buf_trim_newlines(&err);
        log_error("egress %s: no certificate for %s: %.*s", e->c.peer, e->t.dest.host, (int)err.len,
                  buf_data(&err));
        reply_error(e, 500, "M_UNKNOWN", true, "cannot mint a certificate for %s", e->t.dest.host);
        buf_free(&err);
        return HANDLED;
    }
    buf_free(&err);
    e->status = 200;
    e->req_done = true;
    e->tunnel = true;
    e->tunnel_homeserver = e->homeserver;
    e->tunnel_target = e->t.dest;
    buf_append_str(conn_out(&e->c), "HTTP/1.1 200 Connection established\r\n\r\n");
    finish_exchange(e); /* logged; idle, waiting for the ClientHello */
    if (e->state == EG_CLOSED || conn_start_tls(&e->c, srv) < 0) {
        e->state = EG_CLOSED;
        conn_close(&e->c);
    }
    tls_server_unref(srv);
    return HANDLED;
}

static int req_head(void *ud, struct http_msg *m)
{
    struct egress *e = ud;
    const struct cfg_limits *lim = limits(e);
    const char *why = NULL;
    bool has_body = m->chunked || m->content_length > 0;
    e->trust = e->c.w->trust;
    trust_ref(e->trust);
    if ((e->tunnel ? http_msg_validate_request(m, &why)
                   : http_msg_validate_proxy_request(m, &why)) < 0) {
        reply_error(e, 400, "M_UNKNOWN", true, "bad request: %s", why ? why : "invalid");
        return HANDLED;
    }
    if (m->content_length > 0 && (uint64_t)m->content_length > lim->max_body_bytes) {
        reply_error(e, 413, "M_TOO_LARGE", true,
                    "request body of %" PRId64 " bytes is over the limit of %" PRIu64 " bytes",
                    m->content_length, lim->max_body_bytes);
        return HANDLED;
    }
    if (e->tunnel) {
        /* inside an intercepted CONNECT: origin-form, the homeserver already authenticated */
        if (m->target.len == 0 || m->target.base[0] != '/') {
            reply_error(e, 400, "M_UNRECOGNIZED", true,
                        "inside a tunnel a request-target is a path (origin-form)");
            return HANDLED;
        }
        e->t.kind = EGRESS_HTTPS;
        e->t.dest = e->tunnel_target;
        e->t.path = m->target;
    } else {
        if (authenticate(e, m) < 0)
            return HANDLED;
        if (egress_target_parse(m->method.base, m->method.len, m->target.base, m->target.len, &e->t,
                                &why) < 0) {
            reply_error(e, 400, "M_UNRECOGNIZED", has_body, "bad request-target: %s", why);
            return HANDLED;
        }
        if (e->t.kind == EGRESS_CONNECT)
            return start_tunnel(e, m);
    }
    if (choose_destination(e, m, has_body) < 0)
        return HANDLED;
    /* the destination's name first: a denied one costs no lookup and no connection. A fronted
     * homeserver or the relay itself is served locally (resolve.c): always reachable. */
    struct policy_decision d = {.allow = true};
    if (!is_local(e->c.w->cfg, e->dest.name)) {
        d = policy_check_name(e->trust->pol, &e->dest);
        policy_count(POLICY_OUTBOUND, d.reason);
    }
    if (!d.allow) {
        log_info("egress %s: destination %s refused: %s", e->c.peer, e->dest.name,
                 policy_reason_code(d.reason));
        reply_error(e, 403, "M_FORBIDDEN", has_body, "destination %s may not be reached: %s",
                    e->dest.name, policy_reason_code(d.reason));
        return HANDLED;
    }
    e->path = strndup(e->t.path.base, e->t.path.len);
    snprintf(e->method, sizeof(e->method), "%.*s", (int)m->method.len, m->method.base);
    if (e->path == NULL || m->method.len >= sizeof(e->method) || collect_headers(e) < 0) {
        reply_error(e, 500, "M_UNKNOWN", true, "out of memory or method too long");
        return HANDLED;
    }
    if (m->expect_continue && has_body) {
        buf_append_str(conn_out(&e->c), "HTTP/1.1 100 Continue\r\n\r\n");
        conn_flush(&e->c);
    }
    conn_set_timer(&e->c, has_body ? lim->body_timeout_ms : 0);
    return 0;
}

static int req_body(void *ud, const char *p, size_t n)
{
    struct egress *e = ud;
    if (e->body.len + n > limits(e)->max_body_bytes)
        return CH_ETOOBIG;
    return buf_append(&e->body, p, n);
}

static int req_complete(void *ud)
{
    (void)ud;
    return 0;
}

static const struct http_parser_cb req_cb = {req_head, req_body, req_complete};

static void parse_error(struct egress *e, int rc)
{
    if (rc == HANDLED || e->state == EG_CLOSED)
        return;
    if (rc == CH_ETOOBIG)
        reply_error(e, 413, "M_TOO_LARGE", true,
                    "request body is over the limit of %" PRIu64 " bytes",
                    limits(e)->max_body_bytes);
    else if (rc == CH_ENOMEM)
        reply_error(e, 500, "M_UNKNOWN", true, "out of memory");
    else
        reply_error(e, 400, "M_UNKNOWN", true, "bad request: %s",
                    e->hp.error ? e->hp.error : "invalid HTTP framing");
}

static void process_loop(struct egress *e);

static void process(struct egress *e)
{
    if (e->in_process)
        return;
    e->in_process = true;
    process_loop(e);
    e->in_process = false;
}

static void process_loop(struct egress *e)
{
    struct conn *c = &e->c;
    const struct cfg_limits *lim = limits(e);
    while (!(c->flags & CONN_F_CLOSING)) {
        size_t used = 0;
        int rc = 0;
        switch (e->state) {
        case EG_IDLE:
            if (c->rbuf.len == 0)
                return;
            e->state = EG_HEAD;
            e->t_start = util_mono_ms();
            reset_exchange(e);
            http_parser_init(&e->hp, HTTP_REQUEST, &req_cb, e);
            if (!e->tunnel)
                http_parser_allow_proxy_targets(&e->hp);
            conn_set_timer(c, lim->header_timeout_ms);
            /* fall through */
        case EG_HEAD: {
            size_t head_len = 0;
            const char *why = NULL;
            rc = http_scan_head(buf_data(&c->rbuf), c->rbuf.len, lim->max_header_bytes, &head_len,
                                &why);
            if (rc == HTTP_SCAN_MORE)
                return;
            if (rc != HTTP_SCAN_DONE) {
                if (rc == HTTP_SCAN_TOO_LARGE)
                    reply_error(e, 431, "M_TOO_LARGE", true, "request head over %" PRIu64 " bytes",
                                lim->max_header_bytes);
                else
                    reply_error(e, 400, "M_UNKNOWN", true, "bad request: %s",
                                why ? why : "invalid");
                return;
            }
            buf_reset(&e->head);
            if (buf_append(&e->head, buf_data(&c->rbuf), head_len) < 0) {
                conn_close(c);
                return;
            }
            buf_consume(&c->rbuf, head_len);
            e->state = EG_BODY;
            rc = http_parser_feed(&e->hp, buf_data(&e->head), e->head.len, &used);
            break;
        }
        case EG_BODY:
            if (c->rbuf.len == 0)
                return;
            rc = http_parser_feed(&e->hp, buf_data(&c->rbuf), c->rbuf.len, &used);
            if (rc >= 0)
                buf_consume(&c->rbuf, rc == HTTP_PAUSED ? used : c->rbuf.len);
            if (rc == 0)
                conn_set_timer(c, lim->body_timeout_ms);
            break;
        case EG_WAIT:
            if (c->rbuf.len > 64 * 1024)
                conn_pause_read(c);
            return;
        case EG_CLOSED:
            return;
        }
        if (rc < 0) {
            parse_error(e, rc);
            continue;
        }
        if (rc == HTTP_PAUSED) {
            e->state = EG_WAIT;
            e->req_done = true;
            conn_set_timer(c, 0);
            forward(e);
        }
    }
}

/* --- connection events ----------------------------------------------------------------- */

static void on_open(struct conn *c)
{
    struct egress *e = eg_of(c);
    e->state = EG_IDLE;
    conn_set_timer(c, limits(e)->header_timeout_ms);
}

static void on_read(struct conn *c)
{
    process(eg_of(c));
}

static void on_writable(struct conn *c)
{
    (void)c;
}

static void on_eof(struct conn *c, int err)
{
    struct egress *e = eg_of(c);
    (void)err;
    if (e->state == EG_WAIT) {
        e->close_after = true; /* answer, then close */
        return;
    }
    if (e->state == EG_BODY) {
        snprintf(e->error, sizeof(e->error), "homeserver closed before the end of the request");
        access_log(e);
    }
    e->state = EG_CLOSED;
    conn_close(c);
}

static void on_timer(struct conn *c)
{
    struct egress *e = eg_of(c);
    switch (e->state) {
    case EG_IDLE:
        e->state = EG_CLOSED;
        conn_close(c);
        return;
    case EG_HEAD:
    case EG_BODY:
        reply_error(e, 408, "M_UNKNOWN", true, "request not received in time");
        return;
    case EG_WAIT:
    case EG_CLOSED:
        return;
    }
}

static void on_drain(struct conn *c)
{
    struct egress *e = eg_of(c);
    if (e->state == EG_IDLE && c->rbuf.len == 0) {
        e->state = EG_CLOSED;
        conn_close(c);
    }
}

static void on_close(struct conn *c)
{
    struct egress *e = eg_of(c);
    if (e->rq)
        resolve_request_abort(e->rq);
    if (e->put)
        e->put->e = NULL; /* the write goes on; nobody is answered */
    reset_exchange(e);
    buf_free(&e->head);
    buf_free(&e->body);
    buf_free(&e->headers);
    struct worker *w = c->w;
    free(e);
    worker_maybe_finish(w);
}

static const struct conn_handler handler = {
    on_open, on_read, on_writable, on_eof, on_timer, on_drain, on_close,
};

void egress_accept(struct listener *l, int fd)
{
    struct egress *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        log_error("out of memory accepting a connection");
        if (fd >= 0)
            close(fd);
        return;
    }
    e->state = EG_IDLE;
    e->homeserver = -1;
    conn_accept(&e->c, l, &handler, fd);
}
