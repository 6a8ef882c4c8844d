/* resolve.c -- server discovery behind the policy gate, and requests to server names. */
/* SPDX-License-Identifier: ISC */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/config.h"
#include "chappe/log.h"
#include "chappe/resolve.h"
#include "chappe/util.h"
#include "chappe/wellknown.h"

/*
 * The spec's "Resolving server names", step by step. A query walks these
 * states through DNS and .well-known callbacks; every name is checked against
 * the allowlist before it is looked up, every address before it becomes a
 * target, and the client checks the address once more right before connect().
 */

#define DEFAULT_PORT     8448
#define WK_PATH          "/.well-known/matrix/server"
#define WK_MAX_REDIRECTS 5
#define WK_DEFAULT_MS    (24ull * 3600 * 1000) /* spec: a sensible default, 24 hours */
#define WK_MAX_MS        (48ull * 3600 * 1000) /* spec: at most 48 hours */
#define WK_MIN_MS        (5ull * 60 * 1000)    /* as Synapse: never refetch more often */
#define WK_INVALID_MS    (3600ull * 1000)      /* spec: errors cached up to an hour */
#define WK_DOWN_MS       (2ull * 60 * 1000)    /* first backoff when the server is down */
#define WK_CACHE_MAX     4096
#define TRACE_LINE       512
#define URL_CAP          1024
#define VISIT_CAP        (URL_CAP + SERVER_NAME_MAX + 16)

struct resolve_query;

/* One host's .well-known answer, or the fetch in progress that will give it. */
struct wk_entry {
    char host[SERVER_NAME_MAX + 1];
    bool fetching;
    bool ok;                  /* a valid m.server */
    struct server_name deleg; /* when ok */
    char error[200];          /* when !ok */
    uint64_t expires;         /* uv_now() ms */
    unsigned failures;        /* consecutive network failures, for the backoff */
    struct resolve_query *waiters;
    struct wk_fetch *fetch;
};

struct wk_fetch {
    struct resolve *r;
    struct wk_entry *e;
    uv_timer_t timer; /* the whole fetch, redirects included */
    struct server_name host;
    char authority[SERVER_NAME_MAX + 9]; /* Host header: host[:port] as in the URL */
    uint16_t port;
    char path[URL_CAP];
    char visited[WK_MAX_REDIRECTS + 1][VISIT_CAP];
    int nvisited;
    struct dns_query *dq;
    struct sockaddr_storage addrs[DNS_MAX_ADDRS];
    size_t naddrs, ai;
    struct client_exchange *x;
    int status;
    char location[URL_CAP];
    uint64_t cache_ms;
    struct buf body;
    bool done;
};

struct resolve {
    uv_loop_t *loop;
    const struct config *cfg;
    struct client *cl;
    struct dns *dns;
    uv_timer_t deliver; /* runs completed queries' callbacks outside the caller's stack */
    struct resolve_query *ready;
    struct wk_entry **wk;
    size_t nwk;
    bool closing;
};

enum srv_phase { SRV_FED = 0, SRV_LEGACY, SRV_NONE };

struct resolve_query {
    struct resolve *r;
    resolve_cb cb;
    resolve_trace_fn trace;
    void *ud;
    struct server_name sn;
    struct server_name deleg;
    /* the phase in progress: which name is looked up and how targets are labelled */
    char base[SERVER_NAME_MAX + 1];        /* hostname whose SRV / A records are looked up */
    char host_header[SERVER_NAME_MAX + 9]; /* Host header of the targets */
    char tls_name[SERVER_NAME_MAX + 1];    /* certificate name of the targets */
    uint16_t port;                         /* port of A/AAAA targets */
    enum srv_phase srv;
    struct dns_srv srvs[DNS_MAX_SRV];
    size_t nsrvs, si;
    struct dns_query *dq;
    struct wk_entry *waiting;   /* in e->waiters */
    struct resolve_query *next; /* in a waiters list or in r->ready */
    bool any_denied;
    enum policy_reason first_denial;
    struct resolve_result res;
};

static void trace(resolve_trace_fn fn, void *ud, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void trace(resolve_trace_fn fn, void *ud, const char *fmt, ...)
{
    char line[TRACE_LINE];
    va_list ap;
    if (fn == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fn(ud, line);
}

#define QTRACE(q, ...) trace((q)->trace, (q)->ud, __VA_ARGS__)

/* --- completion ------------------------------------------------------------- */

static void on_deliver(uv_timer_t *t)
{
    struct resolve *r = t->data;
    while (r->ready != NULL) {
        struct resolve_query *q = r->ready;
        r->ready = q->next;
        q->cb(q->ud, &q->res);
        free(q);
    }
}

/* Finish a query: its callback runs from the loop, after the current stack unwinds. */
static void complete(struct resolve_query *q)
{
    struct resolve_result *res = &q->res;
    if (res->ntargets > 0) {
        res->status = 0;
        res->reason = NULL;
    } else if (res->status == 0 && q->any_denied) {
        res->status = CH_EPERM;
        res->reason = policy_reason_code(q->first_denial);
        snprintf(res->why, sizeof(res->why), "%s: every address of %s was denied", res->reason,
                 q->sn.name);
    } else if (res->status == 0) {
        res->status = CH_ENOENT;
        res->reason = "no_address";
        snprintf(res->why, sizeof(res->why), "no_address: no address found for %s", q->sn.name);
    }
    q->next = NULL;
    struct resolve_query **pp = &q->r->ready;
    while (*pp != NULL)
        pp = &(*pp)->next;
    *pp = q;
    uv_timer_start(&q->r->deliver, on_deliver, 0, 0);
}

static void deny(struct resolve_query *q, const struct policy_decision *d, const char *what)
{
    q->res.status = CH_EPERM;
    q->res.reason = policy_reason_code(d->reason);
    snprintf(q->res.why, sizeof(q->res.why), "%s: %s%s%s", q->res.reason, what,
             d->rule[0] ? " " : "", d->rule);
    complete(q);
}

/* --- names and addresses ------------------------------------------------------ */

static struct policy_decision check_name(struct resolve_query *q, const struct server_name *sn)
{
    struct policy_decision d = policy_check_name(client_policy(q->r->cl), sn);
    policy_count(POLICY_OUTBOUND, d.reason);
    if (!d.allow && q->trace == NULL)
        log_info("policy: outbound deny %s: name %s (%s)", policy_reason_code(d.reason), sn->name,
                 d.rule);
    if (d.allow)
        QTRACE(q, "name %s: allow (%s)", sn->name, d.rule);
    else
        QTRACE(q, "name %s: deny %s (%s)", sn->name, policy_reason_code(d.reason), d.rule);
    return d;
}

static void ip_text(const struct sockaddr *sa, char *out, size_t cap)
{
    if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
}

/* Check one address; trace and count the decision. */
static bool check_addr(struct client *cl, const struct sockaddr_storage *ss, resolve_trace_fn fn,
                       void *ud, struct policy_decision *out)
{
    char ip[INET6_ADDRSTRLEN];
    struct policy_decision d = policy_check_addr(client_policy(cl), (const struct sockaddr *)ss);
    policy_count(POLICY_OUTBOUND, d.reason);
    ip_text((const struct sockaddr *)ss, ip, sizeof(ip));
    if (!d.allow && fn == NULL)
        log_info("policy: outbound deny %s: address %s (%s)", policy_reason_code(d.reason), ip,
                 d.rule);
    if (d.allow)
        trace(fn, ud, "address %s: allow (%s)", ip, d.rule);
    else
        trace(fn, ud, "address %s: deny %s (%s)", ip, policy_reason_code(d.reason), d.rule);
    if (out != NULL)
        *out = d;
    return d.allow;
}

/* Add an allowed address as a target with the phase's Host header and TLS name. */
static void add_target(struct resolve_query *q, const struct sockaddr_storage *ss, uint16_t port,
                       const struct server_name *ip_literal)
{
    struct policy_decision d;
    char a[64];
    if (!check_addr(q->r->cl, ss, q->trace, q->ud, &d)) {
        if (!q->any_denied) {
            q->any_denied = true;
            q->first_denial = d.reason;
        }
        return;
    }
    if (q->res.ntargets == RESOLVE_MAX_TARGETS)
        return;
    struct client_target *t = &q->res.targets[q->res.ntargets++];
    memset(t, 0, sizeof(*t));
    t->addr = *ss;
    set_port(&t->addr, port);
    t->addrlen =
        ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    snprintf(t->host, sizeof(t->host), "%s", q->host_header);
    snprintf(t->tls_name, sizeof(t->tls_name), "%s", q->tls_name);
    if (ip_literal != NULL) {
        t->tls_ip_family = ip_literal->family;
        memcpy(t->tls_ip, ip_literal->addr, sizeof(t->tls_ip));
    }
    QTRACE(q, "target %s host=%s tls=%s",
           client_format_addr((struct sockaddr *)&t->addr, a, sizeof(a)), t->host, t->tls_name);
}

static void literal_sockaddr(const struct server_name *sn, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (sn->family == 6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, sn->addr, 16);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, sn->addr, 4);
    }
}

/* Steps 1 and 3.1: an IP literal is its own target; the certificate must name the IP. */
static void target_literal(struct resolve_query *q, const struct server_name *sn)
{
    struct sockaddr_storage ss;
    literal_sockaddr(sn, &ss);
    snprintf(q->host_header, sizeof(q->host_header), "%s", sn->name);
    snprintf(q->tls_name, sizeof(q->tls_name), "%s", sn->host);
    add_target(q, &ss, sn->port ? sn->port : DEFAULT_PORT, sn);
    complete(q);
}

static void trace_lookup(resolve_trace_fn fn, void *ud, const char *name,
                         const struct dns_result *res)
{
    char line[TRACE_LINE], ip[INET6_ADDRSTRLEN];
    size_t n = 0;
    if (res->status != 0) {
        trace(fn, ud, "lookup %s: %s (%s)", name, res->status == CH_ENOENT ? "not found" : "failed",
              res->why ? res->why : "");
        return;
    }
    for (size_t i = 0; i < res->naddrs && n < sizeof(line); i++) {
        ip_text((const struct sockaddr *)&res->addrs[i], ip, sizeof(ip));
        int k = snprintf(line + n, sizeof(line) - n, "%s%s", i ? ", " : "", ip);
        if (k < 0)
            break;
        n += (size_t)k;
    }
    trace(fn, ud, "lookup %s: %s (ttl %u%s%s)", name, line, (unsigned)res->ttl_s,
          res->from_cache ? ", cached" : "", res->from_hosts ? ", /etc/hosts" : "");
}

/* --- A/AAAA -------------------------------------------------------------------- */

static void on_addr_final(void *ud, const struct dns_result *res)
{
    struct resolve_query *q = ud;
    q->dq = NULL;
    trace_lookup(q->trace, q->ud, q->base, res);
    for (size_t i = 0; i < res->naddrs; i++)
        add_target(q, &res->addrs[i], q->port, NULL);
    complete(q);
}

/* Look up base's addresses; each allowed one becomes a target on port. Ends the query. */
static void lookup_final(struct resolve_query *q, uint16_t port)
{
    q->port = port;
    q->dq = dns_lookup_addr(q->r->dns, q->base, on_addr_final, q);
    if (q->dq == NULL) {
        q->res.status = CH_ENOMEM;
        q->res.reason = "no_address";
        snprintf(q->res.why, sizeof(q->res.why), "out of memory");
        complete(q);
    }
}

/* --- SRV ------------------------------------------------------------------------ */

static void srv_lookup(struct resolve_query *q);
static void srv_next_target(struct resolve_query *q);

static void on_srv_target(void *ud, const struct dns_result *res)
{
    struct resolve_query *q = ud;
    const struct dns_srv *s = &q->srvs[q->si];
    q->dq = NULL;
    trace_lookup(q->trace, q->ud, s->target, res);
    for (size_t i = 0; i < res->naddrs; i++)
        add_target(q, &res->addrs[i], s->port, NULL);
    q->si++;
    srv_next_target(q);
}

static void srv_next_target(struct resolve_query *q)
{
    if (q->si >= q->nsrvs || q->res.ntargets == RESOLVE_MAX_TARGETS) {
        complete(q);
        return;
    }
    q->dq = dns_lookup_addr(q->r->dns, q->srvs[q->si].target, on_srv_target, q);
    if (q->dq == NULL)
        complete(q);
}

static const char *srv_prefix(enum srv_phase p)
{
    return p == SRV_FED ? "_matrix-fed._tcp" : "_matrix._tcp";
}

static void on_srv(void *ud, const struct dns_result *res)
{
    struct resolve_query *q = ud;
    char line[TRACE_LINE];
    size_t n = 0;
    q->dq = NULL;
    if (res->status != 0 || res->nsrvs == 0) {
        QTRACE(q, "srv %s.%s: %s (%s)", srv_prefix(q->srv), q->base,
               res->status == CH_ENOENT ? "none" : "failed", res->why ? res->why : "no record");
        q->srv++;
        srv_lookup(q);
        return;
    }
    q->nsrvs = res->nsrvs;
    memcpy(q->srvs, res->srvs, res->nsrvs * sizeof(res->srvs[0]));
    for (size_t i = 0; i < res->nsrvs && n < sizeof(line); i++) {
        int k = snprintf(line + n, sizeof(line) - n, "%s%s:%u", i ? ", " : "", res->srvs[i].target,
                         res->srvs[i].port);
        if (k < 0)
            break;
        n += (size_t)k;
    }
    QTRACE(q, "srv %s.%s: %s (ttl %u%s)", srv_prefix(q->srv), q->base, line, (unsigned)res->ttl_s,
           res->from_cache ? ", cached" : "");
    q->si = 0;
    srv_next_target(q);
}

/* Steps 3.3-3.5 and 4-6: SRV _matrix-fed._tcp, then _matrix._tcp, then A/AAAA on 8448. */
static void srv_lookup(struct resolve_query *q)
{
    char name[SERVER_NAME_MAX + 32];
    if (q->srv == SRV_NONE) {
        lookup_final(q, DEFAULT_PORT);
        return;
    }
    snprintf(name, sizeof(name), "%s.%s", srv_prefix(q->srv), q->base);
    q->dq = dns_lookup_srv(q->r->dns, name, on_srv, q);
    if (q->dq == NULL) {
        q->srv = SRV_NONE;
        lookup_final(q, DEFAULT_PORT);
    }
}

/* Resolve a host name without a port: Host header and certificate name are the host itself. */
static void discover_host(struct resolve_query *q, const char *host)
{
    snprintf(q->base, sizeof(q->base), "%s", host);
    snprintf(q->host_header, sizeof(q->host_header), "%s", host);
    snprintf(q->tls_name, sizeof(q->tls_name), "%s", host);
    q->srv = SRV_FED;
    srv_lookup(q);
}

/* A host name with an explicit port: A/AAAA only, Host header with the port. */
static void discover_with_port(struct resolve_query *q, const struct server_name *sn)
{
    snprintf(q->base, sizeof(q->base), "%s", sn->host);
    snprintf(q->host_header, sizeof(q->host_header), "%s", sn->name);
    snprintf(q->tls_name, sizeof(q->tls_name), "%s", sn->host);
    lookup_final(q, sn->port);
}

/* --- .well-known ---------------------------------------------------------------------- */

static void wk_start(struct resolve *r, struct wk_entry *e);

/* Trace to every query waiting on this entry. */
static void wk_trace(struct wk_entry *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void wk_trace(struct wk_entry *e, const char *fmt, ...)
{
    char line[TRACE_LINE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    for (struct resolve_query *q = e->waiters; q != NULL; q = q->next) {
        if (q->trace != NULL)
            q->trace(q->ud, line);
    }
}

static void wk_trace_fn(void *ud, const char *line)
{
    struct wk_entry *e = ud;
    wk_trace(e, "  %s", line);
}

/* The .well-known answer is known: go on with step 3's sub-steps, or with step 4. */
static void after_wk(struct resolve_query *q, const struct wk_entry *e)
{
    if (!e->ok) {
        discover_host(q, q->sn.host);
        return;
    }
    q->deleg = e->deleg;
    QTRACE(q, "delegated to %s", q->deleg.name);
    struct policy_decision d = check_name(q, &q->deleg);
    if (!d.allow) {
        char what[SERVER_NAME_MAX + 64];
        snprintf(what, sizeof(what), "delegated name %s", q->deleg.name);
        deny(q, &d, what);
        return;
    }
    if (q->deleg.type != SERVER_HOST_DNS)
        target_literal(q, &q->deleg);
    else if (q->deleg.port != 0)
        discover_with_port(q, &q->deleg);
    else
        discover_host(q, q->deleg.host);
}

static struct wk_entry *wk_find(struct resolve *r, const char *host)
{
    for (size_t i = 0; i < r->nwk; i++) {
        if (strcmp(r->wk[i]->host, host) == 0)
            return r->wk[i];
    }
    return NULL;
}

/* A new entry, evicting an expired (or else the oldest idle) one when the cache is full. */
static struct wk_entry *wk_new(struct resolve *r, const char *host)
{
    if (r->nwk == WK_CACHE_MAX) {
        size_t victim = r->nwk;
        uint64_t oldest = UINT64_MAX;
        for (size_t i = 0; i < r->nwk; i++) {
            if (!r->wk[i]->fetching && r->wk[i]->expires < oldest) {
                oldest = r->wk[i]->expires;
                victim = i;
            }
        }
        if (victim == r->nwk)
            return NULL;
        free(r->wk[victim]);
        r->wk[victim] = r->wk[--r->nwk];
    }
    if (r->nwk % 64 == 0) {
        struct wk_entry **v = realloc(r->wk, (r->nwk + 64) * sizeof(struct wk_entry *));
        if (v == NULL)
            return NULL;
        r->wk = v;
    }
    struct wk_entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    snprintf(e->host, sizeof(e->host), "%s", host);
    r->wk[r->nwk++] = e;
    return e;
}

static void wk_step(struct resolve_query *q)
{
    struct resolve *r = q->r;
    uint64_t now = uv_now(r->loop);
    struct wk_entry *e = wk_find(r, q->sn.host);
    QTRACE(q, "well-known https://%s" WK_PATH, q->sn.host);
    if (e != NULL && !e->fetching && e->expires > now) {
        if (e->ok)
            QTRACE(q, "  -> m.server %s (cached %llus)", e->deleg.name,
                   (unsigned long long)((e->expires - now) / 1000));
        else
            QTRACE(q, "  -> error: %s (cached %llus)", e->error,
                   (unsigned long long)((e->expires - now) / 1000));
        after_wk(q, e);
        return;
    }
    if (e == NULL && (e = wk_new(r, q->sn.host)) == NULL) {
        QTRACE(q, "  -> error: out of memory");
        discover_host(q, q->sn.host);
        return;
    }
    q->waiting = e;
    q->next = e->waiters;
    e->waiters = q;
    if (!e->fetching)
        wk_start(r, e);
}

static void wk_fetch_closed(uv_handle_t *h)
{
    struct wk_fetch *f = h->data;
    buf_free(&f->body);
    free(f);
}

/* The fetch is over: cache the answer and wake every waiter. */
static void wk_finish(struct wk_fetch *f, bool ok, const struct server_name *deleg,
                      const char *error, uint64_t ttl_ms, bool down)
{
    struct wk_entry *e = f->e;
    uint64_t now = uv_now(f->r->loop);
    if (f->done)
        return;
    f->done = true;
    if (f->dq != NULL)
        dns_cancel(f->dq);
    if (f->x != NULL)
        client_abort(f->x);
    f->dq = NULL;
    f->x = NULL;
    uv_timer_stop(&f->timer);
    uv_close((uv_handle_t *)&f->timer, wk_fetch_closed);

    e->fetching = false;
    e->fetch = NULL;
    e->ok = ok;
    if (ok) {
        e->deleg = *deleg;
        e->failures = 0;
        e->expires = now + (ttl_ms < WK_MIN_MS ? WK_MIN_MS : ttl_ms);
        wk_trace(e, "  -> m.server %s (cache %llus)", deleg->name,
                 (unsigned long long)((e->expires - now) / 1000));
    } else {
        uint64_t ms = WK_INVALID_MS;
        snprintf(e->error, sizeof(e->error), "%s", error);
        if (down) {
            /* exponential backoff while the server is unreachable, up to the hour */
            ms = WK_DOWN_MS << (e->failures < 5 ? e->failures : 5);
            if (ms > WK_INVALID_MS)
                ms = WK_INVALID_MS;
            e->failures++;
        }
        e->expires = now + ms;
        wk_trace(e, "  -> error: %s (cache %llus)", error, (unsigned long long)(ms / 1000));
    }
    struct resolve_query *w = e->waiters;
    e->waiters = NULL;
    while (w != NULL) {
        struct resolve_query *next = w->next;
        w->waiting = NULL;
        w->next = NULL;
        after_wk(w, e);
        w = next;
    }
}

static void wk_fail(struct wk_fetch *f, bool down, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void wk_fail(struct wk_fetch *f, bool down, const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    wk_finish(f, false, NULL, why, 0, down);
}

static void wk_timeout(uv_timer_t *t)
{
    struct wk_fetch *f = t->data;
    wk_fail(f, true, "timed out after %llus",
            (unsigned long long)(f->r->cfg->limits.well_known_timeout_ms / 1000));
}

static void wk_connect(struct wk_fetch *f);

static void wk_on_connected(void *ud, const struct client_target *t, bool reused)
{
    struct wk_fetch *f = ud;
    char a[64];
    wk_trace(f->e, "  connect %s host=%s tls=%s%s",
             client_format_addr((const struct sockaddr *)&t->addr, a, sizeof(a)), t->host,
             t->tls_name, reused ? " (reused)" : "");
}

static int wk_on_head(void *ud, const struct http_msg *msg)
{
    struct wk_fetch *f = ud;
    f->status = msg->status;
    f->location[0] = '\0';
    if (msg->status >= 300 && msg->status < 400) {
        const struct http_field *loc = http_msg_field(msg, "Location");
        if (loc != NULL && loc->value.len < sizeof(f->location)) {
            memcpy(f->location, loc->value.base, loc->value.len);
            f->location[loc->value.len] = '\0';
        }
    }
    f->cache_ms = wellknown_cache_ms(msg, util_wall_ms(), WK_DEFAULT_MS, WK_MAX_MS);
    return 0;
}

static int wk_on_body(void *ud, const char *p, size_t n)
{
    struct wk_fetch *f = ud;
    if (f->status != 200)
        return 0; /* an error page: its size does not matter, it is dropped */
    if (f->body.len + n > WELLKNOWN_MAX_BODY)
        return CH_ETOOBIG;
    return buf_append(&f->body, p, n) == 0 ? 0 : CH_ENOMEM;
}

/*
 * Make the next URL from a Location value: "https://host[:port]/path" or an
 * absolute path on the same origin. Only https is followed. 0 or why.
 */
static const char *wk_redirect(struct wk_fetch *f)
{
    const char *loc = f->location;
    const char *why = NULL;
    struct server_name sn;
    if (loc[0] == '/' && loc[1] != '/') {
        snprintf(f->path, sizeof(f->path), "%s", loc);
        return NULL;
    }
    if (strncasecmp(loc, "https://", 8) != 0)
        return "redirect to a URL that is not https:// or an absolute path";
    const char *auth = loc + 8;
    size_t alen = strcspn(auth, "/?#");
    if (server_name_parse(auth, alen, &sn, &why) != 0)
        return "redirect to an invalid host";
    f->host = sn;
    f->port = sn.port ? sn.port : 443;
    snprintf(f->authority, sizeof(f->authority), "%s", sn.name);
    snprintf(f->path, sizeof(f->path), "%s", auth[alen] == '/' ? auth + alen : "/");
    if (auth[alen] == '?' || auth[alen] == '#')
        snprintf(f->path, sizeof(f->path), "/%s", auth + alen);
    return NULL;
}

static void wk_fetch_url(struct wk_fetch *f);

static void wk_on_complete(void *ud)
{
    struct wk_fetch *f = ud;
    struct server_name deleg;
    const char *why = NULL;
    f->x = NULL;
    if (f->status >= 300 && f->status < 400 && f->status != 304) {
        if (f->location[0] == '\0') {
            wk_fail(f, false, "HTTP %d without a usable Location", f->status);
            return;
        }
        if (f->nvisited > WK_MAX_REDIRECTS) {
            wk_fail(f, false, "more than %d redirects", WK_MAX_REDIRECTS);
            return;
        }
        if ((why = wk_redirect(f)) != NULL) {
            wk_fail(f, false, "%s", why);
            return;
        }
        wk_trace(f->e, "  redirect %d to https://%s%s", f->status, f->authority, f->path);
        wk_fetch_url(f);
        return;
    }
    if (f->status != 200) {
        wk_fail(f, false, "HTTP %d", f->status);
        return;
    }
    if (wellknown_parse(buf_data(&f->body), f->body.len, &deleg, &why) != 0) {
        wk_fail(f, false, "invalid body: %s", why);
        return;
    }
    wk_finish(f, true, &deleg, NULL, f->cache_ms, false);
}

static void wk_on_error(void *ud, int err, const char *why, bool sent)
{
    struct wk_fetch *f = ud;
    f->x = NULL;
    if (err == CH_ETOOBIG) {
        wk_fail(f, false, "body larger than %d KiB", WELLKNOWN_MAX_BODY / 1024);
        return;
    }
    wk_trace(f->e, "  -> %s", why);
    if (!sent && f->ai + 1 < f->naddrs) {
        f->ai++;
        wk_connect(f);
        return;
    }
    wk_fail(f, true, "%s", why);
}

static const struct client_handler wk_handler = {
    .on_connected = wk_on_connected,
    .on_head = wk_on_head,
    .on_body = wk_on_body,
    .on_complete = wk_on_complete,
    .on_error = wk_on_error,
};

/* Send the GET to the current address (each one checked by the policy before). */
static void wk_connect(struct wk_fetch *f)
{
    struct client_target t;
    struct client_request req = {.method = "GET", .target = f->path};
    memset(&t, 0, sizeof(t));
    t.addr = f->addrs[f->ai];
    set_port(&t.addr, f->port);
    t.addrlen =
        t.addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    snprintf(t.host, sizeof(t.host), "%s", f->authority);
    snprintf(t.tls_name, sizeof(t.tls_name), "%s", f->host.host);
    if (f->host.type != SERVER_HOST_DNS) {
        t.tls_ip_family = f->host.family;
        memcpy(t.tls_ip, f->host.addr, sizeof(t.tls_ip));
    }
    f->status = 0;
    buf_reset(&f->body);
    f->x = client_send(f->r->cl, &t, &req, &wk_handler, f);
    if (f->x == NULL)
        wk_fail(f, false, "out of memory");
}

/* Keep the allowed addresses of a lookup; connect to the first. */
static void wk_use_addrs(struct wk_fetch *f, const struct sockaddr_storage *addrs, size_t n)
{
    f->naddrs = 0;
    f->ai = 0;
    for (size_t i = 0; i < n; i++) {
        if (check_addr(f->r->cl, &addrs[i], wk_trace_fn, f->e, NULL))
            f->addrs[f->naddrs++] = addrs[i];
    }
    if (f->naddrs == 0) {
        wk_fail(f, false, "no allowed address for %s", f->host.host);
        return;
    }
    wk_connect(f);
}

static void wk_on_addr(void *ud, const struct dns_result *res)
{
    struct wk_fetch *f = ud;
    f->dq = NULL;
    trace_lookup(wk_trace_fn, f->e, f->host.host, res);
    if (res->status != 0) {
        wk_fail(f, res->status != CH_ENOENT, "cannot resolve %s", f->host.host);
        return;
    }
    wk_use_addrs(f, res->addrs, res->naddrs);
}

/* Fetch the current URL: loop check, name check for a new host, lookup, connect. */
static void wk_fetch_url(struct wk_fetch *f)
{
    char url[VISIT_CAP];
    snprintf(url, sizeof(url), "%s%s", f->authority, f->path);
    for (int i = 0; i < f->nvisited; i++) {
        if (strcmp(f->visited[i], url) == 0) {
            wk_fail(f, false, "redirect loop at https://%s", url);
            return;
        }
    }
    if (f->nvisited > WK_MAX_REDIRECTS) {
        wk_fail(f, false, "more than %d redirects", WK_MAX_REDIRECTS);
        return;
    }
    snprintf(f->visited[f->nvisited++], VISIT_CAP, "%s", url);
    if (f->nvisited > 1 && strcmp(f->host.host, f->e->host) != 0) {
        /* a redirect to another host: its certificate is trusted only for allowlisted names */
        struct policy_decision d = policy_check_name(client_policy(f->r->cl), &f->host);
        policy_count(POLICY_OUTBOUND, d.reason);
        wk_trace(f->e, "  name %s: %s%s%s (%s)", f->host.name, d.allow ? "allow" : "deny ",
                 d.allow ? "" : policy_reason_code(d.reason), "", d.rule);
        if (!d.allow) {
            wk_fail(f, false, "redirect to %s: %s", f->host.name, policy_reason_code(d.reason));
            return;
        }
    }
    if (f->host.type != SERVER_HOST_DNS) {
        struct sockaddr_storage ss;
        literal_sockaddr(&f->host, &ss);
        wk_use_addrs(f, &ss, 1);
        return;
    }
    f->dq = dns_lookup_addr(f->r->dns, f->host.host, wk_on_addr, f);
    if (f->dq == NULL)
        wk_fail(f, false, "out of memory");
}

static void wk_start(struct resolve *r, struct wk_entry *e)
{
    const char *why;
    struct wk_fetch *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        /* cannot even try: an error answer, not cached */
        e->ok = false;
        e->expires = 0;
        snprintf(e->error, sizeof(e->error), "out of memory");
        struct resolve_query *w = e->waiters;
        e->waiters = NULL;
        while (w != NULL) {
            struct resolve_query *next = w->next;
            w->waiting = NULL;
            after_wk(w, e);
            w = next;
        }
        return;
    }
    f->r = r;
    f->e = e;
    f->body = BUF_INIT;
    e->fetching = true;
    e->fetch = f;
    server_name_parse(e->host, strlen(e->host), &f->host, &why);
    f->port = 443;
    snprintf(f->authority, sizeof(f->authority), "%s", e->host);
    snprintf(f->path, sizeof(f->path), "%s", WK_PATH);
    uv_timer_init(r->loop, &f->timer);
    f->timer.data = f;
    uv_timer_start(&f->timer, wk_timeout, r->cfg->limits.well_known_timeout_ms, 0);
    wk_fetch_url(f);
}

/* --- queries --------------------------------------------------------------------- */

int resolve_new(uv_loop_t *loop, const struct config *cfg, struct client *cl, struct dns *dns,
                struct resolve **out)
{
    struct resolve *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return CH_ENOMEM;
    r->loop = loop;
    r->cfg = cfg;
    r->cl = cl;
    r->dns = dns;
    uv_timer_init(loop, &r->deliver);
    r->deliver.data = r;
    *out = r;
    return 0;
}

static void resolve_closed(uv_handle_t *h)
{
    free(h->data);
}

void resolve_free(struct resolve *r)
{
    if (r == NULL)
        return;
    while (r->ready != NULL) {
        struct resolve_query *q = r->ready;
        r->ready = q->next;
        free(q);
    }
    for (size_t i = 0; i < r->nwk; i++) {
        struct wk_entry *e = r->wk[i];
        while (e->waiters != NULL) {
            struct resolve_query *q = e->waiters;
            e->waiters = q->next;
            if (q->dq != NULL)
                dns_cancel(q->dq);
            free(q);
        }
        if (e->fetch != NULL) {
            struct wk_fetch *f = e->fetch;
            f->done = true;
            if (f->dq != NULL)
                dns_cancel(f->dq);
            if (f->x != NULL)
                client_abort(f->x);
            uv_close((uv_handle_t *)&f->timer, wk_fetch_closed);
        }
        free(e);
    }
    free(r->wk);
    r->closing = true;
    uv_close((uv_handle_t *)&r->deliver, resolve_closed);
}

/*
 * A fronted homeserver, or the relay itself: the operator's own addresses, reached without
 * discovery and without the address policy (an upstream is usually on loopback, which the
 * default ip_range_blacklist holds). True when q was completed that way.
 */
static bool target_local(struct resolve_query *q)
{
    const struct config *cfg = q->r->cfg;
    struct client_target *t = &q->res.targets[0];
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < cfg->nhomeservers; i++) {
        const struct cfg_homeserver *hs = &cfg->homeservers[i];
        if (strcmp(hs->server_name, q->sn.name) != 0)
            continue;
        memcpy(&t->addr, &hs->upstream.addr, hs->upstream.addrlen);
        t->addrlen = hs->upstream.addrlen;
        snprintf(t->host, sizeof(t->host), "%s", hs->server_name);
        snprintf(t->tls_name, sizeof(t->tls_name), "%s", hs->upstream.host);
        t->local = t->plain = true;
        q->res.ntargets = 1;
        QTRACE(q, "name %s: a fronted homeserver: its upstream %s (local)", q->sn.name,
               hs->upstream.url);
        complete(q);
        return true;
    }
    if (cfg->server_name == NULL || strcmp(cfg->server_name, q->sn.name) != 0)
        return false;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        if (l->type != LISTENER_FEDERATION || l->nbinds == 0)
            continue;
        memcpy(&t->addr, &l->binds[0].ss, l->binds[0].len);
        t->addrlen = l->binds[0].len;
        /* a wildcard bind is reached on loopback */
        if (t->addr.ss_family == AF_INET) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&t->addr;
            if (sin->sin_addr.s_addr == htonl(INADDR_ANY))
                sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        } else {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&t->addr;
            if (IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr))
                sin6->sin6_addr = in6addr_loopback;
        }
        snprintf(t->host, sizeof(t->host), "%s", q->sn.name);
        snprintf(t->tls_name, sizeof(t->tls_name), "%s", q->sn.host);
        if (q->sn.type != SERVER_HOST_DNS) {
            t->tls_ip_family = q->sn.family;
            memcpy(t->tls_ip, q->sn.addr, sizeof(t->tls_ip));
        }
        t->local = true;
        t->plain = !l->tls;
        q->res.ntargets = 1;
        QTRACE(q, "name %s: the relay itself: its federation listener %s (local)", q->sn.name,
               l->binds[0].text);
        complete(q);
        return true;
    }
    return false;
}

struct resolve_query *resolve_server(struct resolve *r, const char *server_name, resolve_cb cb,
                                     resolve_trace_fn fn, void *ud)
{
    const char *why = NULL;
    struct resolve_query *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->r = r;
    q->cb = cb;
    q->trace = fn;
    q->ud = ud;
    if (server_name_parse(server_name, strlen(server_name), &q->sn, &why) != 0) {
        QTRACE(q, "name %s: deny %s (%s)", server_name,
               policy_reason_code(POLICY_INVALID_SERVER_NAME), why);
        policy_count(POLICY_OUTBOUND, POLICY_INVALID_SERVER_NAME);
        q->res.status = CH_EPERM;
        q->res.reason = policy_reason_code(POLICY_INVALID_SERVER_NAME);
        snprintf(q->res.why, sizeof(q->res.why), "%s: %s", q->res.reason, why);
        snprintf(q->sn.name, sizeof(q->sn.name), "%s", "(invalid)");
        complete(q);
        return q;
    }
    if (target_local(q))
        return q;
    /* the name first: a server that is not allowlisted costs no DNS query at all */
    struct policy_decision d = check_name(q, &q->sn);
    if (!d.allow) {
        deny(q, &d, q->sn.name);
        return q;
    }
    if (q->sn.type != SERVER_HOST_DNS)
        target_literal(q, &q->sn);
    else if (q->sn.port != 0)
        discover_with_port(q, &q->sn);
    else
        wk_step(q);
    return q;
}

void resolve_cancel(struct resolve_query *q)
{
    struct resolve *r = q->r;
    if (q->dq != NULL)
        dns_cancel(q->dq);
    if (q->waiting != NULL) {
        struct resolve_query **pp = &q->waiting->waiters;
        while (*pp != NULL && *pp != q)
            pp = &(*pp)->next;
        if (*pp == q)
            *pp = q->next;
    } else {
        struct resolve_query **pp = &r->ready;
        while (*pp != NULL && *pp != q)
            pp = &(*pp)->next;
        if (*pp == q)
            *pp = q->next;
    }
    free(q);
}

/* --- requests to a server name ------------------------------------------------------- */

struct resolve_request {
    struct resolve *r;
    struct resolve_query *rq;
    struct client_exchange *x;
    const struct client_handler *h;
    resolve_trace_fn trace;
    void *ud;
    char *method, *target, *headers, *body;
    size_t body_len;
    bool has_body;
    struct resolve_result res;
    size_t ti;
};

static void req_free(struct resolve_request *q)
{
    free(q->method);
    free(q->target);
    free(q->headers);
    free(q->body);
    free(q);
}

static void req_try(struct resolve_request *q);

static void req_on_connected(void *ud, const struct client_target *t, bool reused)
{
    struct resolve_request *q = ud;
    if (q->h->on_connected != NULL)
        q->h->on_connected(q->ud, t, reused);
}

static int req_on_head(void *ud, const struct http_msg *msg)
{
    struct resolve_request *q = ud;
    return q->h->on_head(q->ud, msg);
}

static int req_on_body(void *ud, const char *p, size_t n)
{
    struct resolve_request *q = ud;
    return q->h->on_body(q->ud, p, n);
}

static void req_on_complete(void *ud)
{
    struct resolve_request *q = ud;
    q->x = NULL;
    q->h->on_complete(q->ud);
    req_free(q);
}

static void req_on_error(void *ud, int err, const char *why, bool sent)
{
    struct resolve_request *q = ud;
    q->x = NULL;
    trace(q->trace, q->ud, "  -> error: %s", why);
    if (!sent && q->ti + 1 < q->res.ntargets) {
        q->ti++;
        req_try(q);
        return;
    }
    q->h->on_error(q->ud, err, why, sent);
    req_free(q);
}

static const struct client_handler req_handler = {
    .on_connected = req_on_connected,
    .on_head = req_on_head,
    .on_body = req_on_body,
    .on_complete = req_on_complete,
    .on_error = req_on_error,
};

static void req_try(struct resolve_request *q)
{
    char a[64];
    const struct client_target *t = &q->res.targets[q->ti];
    struct client_request req = {
        .method = q->method,
        .target = q->target,
        .headers = q->headers,
        .body = q->has_body ? q->body : NULL,
        .body_len = q->body_len,
    };
    trace(q->trace, q->ud, "connect %s host=%s tls=%s",
          client_format_addr((const struct sockaddr *)&t->addr, a, sizeof(a)), t->host,
          t->tls_name);
    q->x = client_send(q->r->cl, t, &req, &req_handler, q);
    if (q->x == NULL) {
        q->h->on_error(q->ud, CH_ENOMEM, "out of memory", false);
        req_free(q);
    }
}

static void req_on_resolved(void *ud, const struct resolve_result *res)
{
    struct resolve_request *q = ud;
    q->rq = NULL;
    q->res = *res;
    if (res->status != 0) {
        q->h->on_error(q->ud, res->status, res->why, false);
        req_free(q);
        return;
    }
    q->ti = 0;
    req_try(q);
}

static char *dup_opt(const char *s, size_t n, bool *oom)
{
    if (s == NULL)
        return NULL;
    char *p = malloc(n + 1);
    if (p == NULL) {
        *oom = true;
        return NULL;
    }
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

struct resolve_request *resolve_request(struct resolve *r, const char *server_name,
                                        const struct client_request *req,
                                        const struct client_handler *h, resolve_trace_fn fn,
                                        void *ud)
{
    bool oom = false;
    struct resolve_request *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->r = r;
    q->h = h;
    q->trace = fn;
    q->ud = ud;
    q->method = dup_opt(req->method, strlen(req->method), &oom);
    q->target = dup_opt(req->target, strlen(req->target), &oom);
    q->headers = req->headers ? dup_opt(req->headers, strlen(req->headers), &oom) : NULL;
    q->has_body = req->body != NULL;
    q->body = q->has_body ? dup_opt(req->body, req->body_len, &oom) : NULL;
    q->body_len = req->body_len;
    if (oom || (q->rq = resolve_server(r, server_name, req_on_resolved, fn, q)) == NULL) {
        req_free(q);
        return NULL;
    }
    return q;
}

void resolve_request_abort(struct resolve_request *q)
{
    if (q->rq != NULL)
        resolve_cancel(q->rq);
    if (q->x != NULL)
        client_abort(q->x);
    req_free(q);
}
