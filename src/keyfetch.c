/* keyfetch.c -- remote servers' keys fetched for the daemon, on a thread of its own. */
/* SPDX-License-Identifier: ISC */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/cjson.h"
#include "chappe/client.h"
#include "chappe/dns.h"
#include "chappe/keyfetch.h"
#include "chappe/log.h"
#include "chappe/resolve.h"
#include "chappe/util.h"

#define BODY_MAX        (64 * 1024)      /* a key document is a few hundred bytes */
#define DEADLINE_MS     20000            /* a whole fetch, every notary and the server included */
#define BACKOFF_MAX_MS  (3600ULL * 1000) /* failures back off up to an hour */
#define MAX_SERVERS     4096             /* servers remembered (names under a wildcard are many) */
#define MAX_NOTARY_KEYS KEYDOC_MAX_KEYS

struct kf_fetch;

/* What the fetcher remembers of one server. */
struct kf_server {
    struct kf_server *next;
    char name[KEYSTORE_NAME_MAX + 1];
    struct kf_fetch *fetch;        /* the fetch in flight, or NULL */
    struct keyfetch_wait *waiters; /* asks waiting for it */
    uint64_t next_allowed;         /* monotonic ms: no new fetch before */
    uint64_t backoff;              /* ms; 0 after a success */
    uint64_t ended;                /* monotonic ms: when the last fetch ended (0: never) */
    int last_status;
    char last_why[256];
};

/* One fetch of one server's keys: the notaries in order, then the server. */
struct kf_fetch {
    struct keyfetch *kf;
    struct kf_server *srv;
    struct trust *t; /* the snapshot this fetch started with */
    uint64_t started;
    size_t next_notary;
    const struct cfg_notary *notary; /* the notary being asked, or NULL: the server itself */
    bool direct_tried;
    bool storing;
    struct resolve_request *req;
    struct buf query; /* a notary query's body */
    struct buf body;  /* the response body */
    int http_status;
    bool too_big;
    struct buf why; /* what failed so far, "; "-separated */
    struct keydoc doc;
    struct keydoc *docs;
    size_t ndocs;
    struct buf json;
    struct keyfetch_doc_write write;
};

struct keyfetch {
    const struct config *cfg;
    struct store *store;
    pthread_t thread;
    uv_loop_t loop;
    uv_async_t async;
    uv_timer_t tick;
    struct store_port port;
    struct dns *dns;
    struct client *cl;
    struct resolve *res;
    struct trust *trust; /* loop thread */
    struct kf_server *servers;
    size_t nservers;
    bool stopping;
    uv_sem_t started;
    int start_error;

    pthread_mutex_t lock;
    struct keyfetch_wait *inbox, *inbox_tail; /* under lock */
    struct trust *pending_trust;              /* under lock */
    bool pending_stop;                        /* under lock */

    _Atomic uint64_t fetches, failures, asks, refused;
};

/* --- mailboxes ------------------------------------------------------------------------- */

static void on_mbox(uv_async_t *a)
{
    struct keyfetch_mbox *b = a->data;
    pthread_mutex_lock(&b->lock);
    struct keyfetch_wait *w = b->head;
    b->head = b->tail = NULL;
    pthread_mutex_unlock(&b->lock);
    while (w != NULL) {
        struct keyfetch_wait *next = w->next;
        if (w->ud == NULL)
            free(w); /* the asker gave up */
        else
            w->done(w);
        w = next;
    }
}

int keyfetch_mbox_init(struct keyfetch_mbox *b, uv_loop_t *loop)
{
    memset(b, 0, sizeof(*b));
    pthread_mutex_init(&b->lock, NULL);
    if (uv_async_init(loop, &b->async, on_mbox) < 0)
        return CH_EIO;
    b->async.data = b;
    return 0;
}

void keyfetch_mbox_close(struct keyfetch_mbox *b)
{
    pthread_mutex_lock(&b->lock);
    struct keyfetch_wait *w = b->head;
    b->head = b->tail = NULL;
    b->closed = true;
    pthread_mutex_unlock(&b->lock);
    while (w != NULL) {
        struct keyfetch_wait *next = w->next;
        free(w);
        w = next;
    }
    uv_close((uv_handle_t *)&b->async, NULL);
}

/* Fetcher thread: hand the answer to the asker's loop (or drop it: nobody listens). */
static void answer(struct keyfetch_wait *w, int status, const char *why)
{
    w->status = status;
    snprintf(w->why, sizeof(w->why), "%s", why);
    w->next = NULL;
    struct keyfetch_mbox *b = w->box;
    if (b == NULL) {
        free(w);
        return;
    }
    pthread_mutex_lock(&b->lock);
    if (b->closed) {
        pthread_mutex_unlock(&b->lock);
        free(w);
        return;
    }
    if (b->tail)
        b->tail->next = w;
    else
        b->head = w;
    b->tail = w;
    /* under the lock: the loop cannot close the handle in between */
    uv_async_send(&b->async);
    pthread_mutex_unlock(&b->lock);
}

/* --- the document store ---------------------------------------------------------------- */

int keyfetch_write_doc(MDB_txn *txn, struct store *s, void *ud)
{
    const struct keyfetch_doc_write *w = ud;
    for (size_t i = 0; i < w->doc->nkeys; i++) {
        const struct keydoc_key *dk = &w->doc->keys[i];
        struct keystore_key k = {.valid_until_ts = w->doc->valid_until_ts,
                                 .fetched_at = w->now,
                                 .expired_ts = dk->old ? dk->expired_ts : 0,
                                 .source = w->notary ? KEYSTORE_SRC_NOTARY : KEYSTORE_SRC_DIRECT};
        snprintf(k.key_id, sizeof(k.key_id), "%s", dk->id);
        snprintf(k.notary, sizeof(k.notary), "%s", w->notary ? w->notary : "");
        memcpy(k.public_key, dk->pk, sizeof(k.public_key));
        int rc = keystore_put_txn(txn, s, w->server, &k);
        if (rc != 0)
            return rc;
    }
    struct keystore_doc meta = {.fetched_at = w->now, .valid_until_ts = w->doc->valid_until_ts};
    return keystore_put_doc_txn(txn, s, w->server, &meta, w->json);
}

/* --- fetches --------------------------------------------------------------------------- */

static void fetch_step(struct kf_fetch *f);

static void fetch_free(struct kf_fetch *f)
{
    if (f->req)
        resolve_request_abort(f->req);
    trust_unref(f->t);
    buf_free(&f->query);
    buf_free(&f->body);
    buf_free(&f->why);
    buf_free(&f->json);
    if (f->doc.doc)
        keydoc_free(&f->doc);
    keydoc_free_array(f->docs, f->ndocs);
    free(f);
}

/* The fetch is over: remember how it went, answer everyone waiting. */
static void fetch_end(struct kf_fetch *f, int status, const char *why)
{
    struct keyfetch *kf = f->kf;
    struct kf_server *srv = f->srv;
    uint64_t now = util_mono_ms(), interval = kf->cfg->limits.key_refetch_interval_ms;
    char next[32];
    if (status == 0) {
        srv->backoff = 0;
        srv->next_allowed = now + interval;
        log_info("keys: fetched the keys of %s%s%s", srv->name, f->notary ? " from notary " : "",
                 f->notary ? f->notary->server_name : "");
    } else {
        srv->backoff = srv->backoff ? srv->backoff * 2 : interval;
        if (srv->backoff > BACKOFF_MAX_MS)
            srv->backoff = BACKOFF_MAX_MS;
        srv->next_allowed = now + srv->backoff;
        atomic_fetch_add_explicit(&kf->failures, 1, memory_order_relaxed);
        util_format_duration_ms(srv->backoff, next, sizeof(next));
        log_warn("keys: cannot fetch the keys of %s: %s (next attempt in %s at the earliest)",
                 srv->name, why, next);
    }
    srv->ended = now;
    srv->last_status = status;
    snprintf(srv->last_why, sizeof(srv->last_why), "%s", status == 0 ? "fetched" : why);
    srv->fetch = NULL;
    struct keyfetch_wait *w = srv->waiters;
    srv->waiters = NULL;
    while (w != NULL) {
        struct keyfetch_wait *nextw = w->next;
        answer(w, status, why);
        w = nextw;
    }
    fetch_free(f);
}

static void fetch_fail_step(struct kf_fetch *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* One source failed: note why, try the next. */
static void fetch_fail_step(struct kf_fetch *f, const char *fmt, ...)
{
    if (f->why.len)
        buf_append_str(&f->why, "; ");
    va_list ap;
    va_start(ap, fmt);
    char line[512];
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    buf_append_str(&f->why, line);
    fetch_step(f);
}

static const char *source_name(const struct kf_fetch *f)
{
    return f->notary ? f->notary->server_name : f->srv->name;
}

static void on_stored(void *ud, int rc)
{
    struct kf_fetch *f = ud;
    f->storing = false;
    if (rc != 0) {
        char why[128];
        snprintf(why, sizeof(why), "cannot store the keys: %s", util_strerror(rc));
        fetch_end(f, rc, why);
        return;
    }
    fetch_end(f, 0, "");
}

/* The store_write_fn of a fetch: its document write (the fetch is on_stored's ud too). */
static int write_fetched(MDB_txn *txn, struct store *s, void *ud)
{
    struct kf_fetch *f = ud;
    return keyfetch_write_doc(txn, s, &f->write);
}

static void store_doc(struct kf_fetch *f, const struct keydoc *doc, struct slice json)
{
    f->write = (struct keyfetch_doc_write){
        doc, f->srv->name, f->notary ? f->notary->server_name : NULL, util_wall_ms(), json};
    f->storing = true;
    int rc = store_submit(f->kf->store, &f->kf->port, write_fetched, on_stored, f);
    if (rc < 0) {
        f->storing = false;
        char why[128];
        snprintf(why, sizeof(why), "cannot store the keys: %s", util_strerror(rc));
        fetch_end(f, rc, why);
    }
}

/* A notary's answer: its signature and the server's both checked, the longest-lived kept. */
static void took_notary_answer(struct kf_fetch *f)
{
    const struct cfg_notary *nt = f->notary;
    struct keydoc_key keys[MAX_NOTARY_KEYS];
    size_t nkeys = nt->nkeys < MAX_NOTARY_KEYS ? nt->nkeys : MAX_NOTARY_KEYS;
    for (size_t i = 0; i < nkeys; i++) {
        memset(&keys[i], 0, sizeof(keys[i]));
        snprintf(keys[i].id, sizeof(keys[i].id), "%s", nt->keys[i].id);
        memcpy(keys[i].pk, nt->keys[i].pk, sizeof(keys[i].pk));
    }
    struct keydoc_notary notary = {nt->server_name, keys, nkeys};
    struct buf err = BUF_INIT;
    if (keydoc_parse_query_response(buf_data(&f->body), f->body.len, f->srv->name, &notary,
                                    util_wall_ms(), &f->docs, &f->ndocs, &err) < 0 ||
        f->ndocs == 0) {
        buf_trim_newlines(&err);
        fetch_fail_step(f, "notary %s: %.*s", nt->server_name, (int)err.len, buf_data(&err));
        buf_free(&err);
        return;
    }
    size_t best = 0;
    for (size_t i = 1; i < f->ndocs; i++)
        if (f->docs[i].valid_until_ts > f->docs[best].valid_until_ts)
            best = i;
    buf_reset(&f->json);
    if (cjson_encode(f->docs[best].doc, &f->json, &err) < 0) {
        fetch_fail_step(f, "notary %s: %.*s", nt->server_name, (int)err.len, buf_data(&err));
        buf_free(&err);
        return;
    }
    buf_free(&err);
    store_doc(f, &f->docs[best], buf_slice(&f->json));
}

/* The server's own document: its name and self-signatures checked, stored as received. */
static void took_direct_answer(struct kf_fetch *f)
{
    struct buf err = BUF_INIT;
    if (keydoc_parse(buf_data(&f->body), f->body.len, f->srv->name, util_wall_ms(), &f->doc, &err) <
        0) {
        buf_trim_newlines(&err);
        fetch_fail_step(f, "%s: %.*s", f->srv->name, (int)err.len, buf_data(&err));
        buf_free(&err);
        return;
    }
    buf_free(&err);
    store_doc(f, &f->doc, buf_slice(&f->body));
}

static int kf_on_head(void *ud, const struct http_msg *msg)
{
    struct kf_fetch *f = ud;
    f->http_status = msg->status;
    return 0;
}

static int kf_on_body(void *ud, const char *p, size_t n)
{
    struct kf_fetch *f = ud;
    if (f->body.len + n > BODY_MAX) {
        f->too_big = true;
        return CH_ETOOBIG;
    }
    return buf_append(&f->body, p, n) == 0 ? 0 : CH_ENOMEM;
}

static void kf_on_complete(void *ud)
{
    struct kf_fetch *f = ud;
    f->req = NULL;
    if (f->http_status != 200) {
        fetch_fail_step(f, "%s answered HTTP %d", source_name(f), f->http_status);
        return;
    }
    if (f->notary)
        took_notary_answer(f);
    else
        took_direct_answer(f);
}

static void kf_on_error(void *ud, int err, const char *why, bool sent)
{
    struct kf_fetch *f = ud;
    (void)sent;
    f->req = NULL;
    if (f->too_big)
        fetch_fail_step(f, "%s: answer larger than %d KiB", source_name(f), BODY_MAX / 1024);
    else
        fetch_fail_step(f, "%s: %s (%s)", source_name(f), why, util_strerror(err));
}

static const struct client_handler kf_handler = {
    .on_head = kf_on_head,
    .on_body = kf_on_body,
    .on_complete = kf_on_complete,
    .on_error = kf_on_error,
};

/* Ask the next source: the notaries in order (Synapse's order), then the server itself. */
static void fetch_step(struct kf_fetch *f)
{
    struct keyfetch *kf = f->kf;
    const struct config *tc = f->t->cfg;
    buf_reset(&f->body);
    f->http_status = 0;
    f->too_big = false;
    while (f->next_notary < tc->ntrusted_key_servers) {
        f->notary = &tc->trusted_key_servers[f->next_notary++];
        if (strcmp(f->notary->server_name, f->srv->name) == 0)
            continue; /* a notary's own keys come from itself, below */
        buf_reset(&f->query);
        buf_append_str(&f->query, "{\"server_keys\":{");
        cjson_append_string(&f->query, f->srv->name, strlen(f->srv->name));
        buf_append_str(&f->query, ":{}}}");
        struct client_request req = {.method = "POST",
                                     .target = "/_matrix/key/v2/query",
                                     .headers = "Content-Type: application/json\r\n",
                                     .body = buf_data(&f->query),
                                     .body_len = f->query.len};
        f->req = resolve_request(kf->res, f->notary->server_name, &req, &kf_handler, NULL, f);
        if (f->req != NULL)
            return;
    }
    f->notary = NULL;
    if (!f->direct_tried) {
        f->direct_tried = true;
        struct client_request req = {.method = "GET", .target = "/_matrix/key/v2/server"};
        f->req = resolve_request(kf->res, f->srv->name, &req, &kf_handler, NULL, f);
        if (f->req != NULL)
            return;
        buf_append_str(&f->why, f->why.len ? "; out of memory" : "out of memory");
    }
    buf_append(&f->why, "", 1);
    f->why.len--;
    fetch_end(f, CH_EIO, buf_data(&f->why));
}

static void fetch_start(struct keyfetch *kf, struct kf_server *srv)
{
    struct kf_fetch *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        struct keyfetch_wait *w = srv->waiters;
        srv->waiters = NULL;
        while (w != NULL) {
            struct keyfetch_wait *next = w->next;
            answer(w, CH_ENOMEM, "out of memory");
            w = next;
        }
        return;
    }
    f->kf = kf;
    f->srv = srv;
    f->t = kf->trust;
    trust_ref(f->t);
    f->started = util_mono_ms();
    srv->fetch = f;
    atomic_fetch_add_explicit(&kf->fetches, 1, memory_order_relaxed);
    log_debug("keys: fetching the keys of %s", srv->name);
    fetch_step(f);
}

/* --- asks ------------------------------------------------------------------------------ */

static struct kf_server *find_server(struct keyfetch *kf, const char *name, uint64_t now)
{
    for (struct kf_server *s = kf->servers; s != NULL; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    if (kf->nservers >= MAX_SERVERS) {
        /* forget the servers that are neither fetching nor held back */
        for (struct kf_server **pp = &kf->servers; *pp != NULL;) {
            struct kf_server *s = *pp;
            if (s->fetch == NULL && s->next_allowed <= now) {
                *pp = s->next;
                free(s);
                kf->nservers--;
            } else {
                pp = &s->next;
            }
        }
        if (kf->nservers >= MAX_SERVERS)
            return NULL;
    }
    struct kf_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->next = kf->servers;
    kf->servers = s;
    kf->nservers++;
    return s;
}

static void take_ask(struct keyfetch *kf, struct keyfetch_wait *w)
{
    uint64_t now = util_mono_ms();
    atomic_fetch_add_explicit(&kf->asks, 1, memory_order_relaxed);
    if (kf->stopping) {
        answer(w, CH_EAGAIN, "the relay is stopping");
        return;
    }
    struct kf_server *srv = find_server(kf, w->server, now);
    if (srv == NULL) {
        answer(w, CH_ENOMEM, "too many servers being fetched");
        return;
    }
    if (srv->fetch == NULL && now < srv->next_allowed) {
        char ago[32], left[32], why[sizeof(srv->last_why) + 400];
        atomic_fetch_add_explicit(&kf->refused, 1, memory_order_relaxed);
        util_format_duration_ms(now - srv->ended, ago, sizeof(ago));
        util_format_duration_ms(srv->next_allowed - now, left, sizeof(left));
        snprintf(why, sizeof(why), "keys of %s last fetched %s ago (%s); next fetch in %s",
                 srv->name, ago, srv->last_why, left);
        answer(w, CH_EAGAIN, why);
        return;
    }
    w->next = srv->waiters;
    srv->waiters = w;
    if (srv->fetch == NULL)
        fetch_start(kf, srv);
}

/* --- the thread ------------------------------------------------------------------------ */

static void close_all(struct keyfetch *kf)
{
    for (struct kf_server *s = kf->servers; s != NULL; s = s->next)
        if (s->fetch != NULL && !s->fetch->storing)
            fetch_end(s->fetch, CH_EAGAIN, "the relay is stopping");
    uv_close((uv_handle_t *)&kf->async, NULL);
    uv_close((uv_handle_t *)&kf->tick, NULL);
    resolve_free(kf->res);
    client_free(kf->cl);
    dns_free(kf->dns);
    kf->res = NULL;
    kf->cl = NULL;
    kf->dns = NULL;
    store_port_close(&kf->port, NULL);
}

static void on_async(uv_async_t *a)
{
    struct keyfetch *kf = a->data;
    pthread_mutex_lock(&kf->lock);
    struct keyfetch_wait *w = kf->inbox;
    kf->inbox = kf->inbox_tail = NULL;
    struct trust *t = kf->pending_trust;
    kf->pending_trust = NULL;
    bool stop = kf->pending_stop;
    pthread_mutex_unlock(&kf->lock);
    if (t != NULL) {
        trust_unref(kf->trust);
        kf->trust = t;
        client_set_policy(kf->cl, t->pol);
    }
    while (w != NULL) {
        struct keyfetch_wait *next = w->next;
        take_ask(kf, w);
        w = next;
    }
    if (stop && !kf->stopping) {
        kf->stopping = true;
        close_all(kf);
    }
}

/* A fetch that takes too long is given up (the asks waiting get 401s, not a hang). */
static void on_tick(uv_timer_t *t)
{
    struct keyfetch *kf = t->data;
    uint64_t now = util_mono_ms();
    for (struct kf_server *s = kf->servers; s != NULL; s = s->next) {
        struct kf_fetch *f = s->fetch;
        if (f != NULL && !f->storing && now - f->started > DEADLINE_MS) {
            char why[64];
            snprintf(why, sizeof(why), "no key document within %d s", DEADLINE_MS / 1000);
            fetch_end(f, CH_ETIMEOUT, why);
        }
    }
}

static void *thread_main(void *arg)
{
    struct keyfetch *kf = arg;
    uv_run(&kf->loop, UV_RUN_DEFAULT);
    return NULL;
}

int keyfetch_start(const struct config *cfg, struct trust *t, struct store *s,
                   struct keyfetch **out, struct buf *err)
{
    struct keyfetch *kf = calloc(1, sizeof(*kf));
    if (kf == NULL)
        return CH_ENOMEM;
    kf->cfg = cfg;
    kf->store = s;
    kf->trust = t;
    trust_ref(t);
    pthread_mutex_init(&kf->lock, NULL);
    int rc = CH_EIO;
    if (uv_loop_init(&kf->loop) < 0)
        goto fail_loop;
    if ((rc = dns_new(&kf->loop, cfg, &kf->dns, err)) < 0 ||
        (rc = client_new(&kf->loop, cfg, t->pol, &kf->cl, err)) < 0 ||
        (rc = resolve_new(&kf->loop, cfg, kf->cl, kf->dns, &kf->res)) < 0 ||
        (rc = store_port_init(&kf->port, &kf->loop)) < 0)
        goto fail;
    uv_async_init(&kf->loop, &kf->async, on_async);
    kf->async.data = kf;
    uv_timer_init(&kf->loop, &kf->tick);
    kf->tick.data = kf;
    uv_timer_start(&kf->tick, on_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&kf->tick);
    if (pthread_create(&kf->thread, NULL, thread_main, kf) != 0) {
        rc = CH_EIO;
        kf->stopping = true;
        close_all(kf);
        uv_run(&kf->loop, UV_RUN_DEFAULT);
        goto fail_closed;
    }
    *out = kf;
    return 0;
fail:
    if (kf->res)
        resolve_free(kf->res);
    if (kf->cl)
        client_free(kf->cl);
    if (kf->dns)
        dns_free(kf->dns);
    uv_run(&kf->loop, UV_RUN_DEFAULT);
fail_closed:
    uv_loop_close(&kf->loop);
fail_loop:
    trust_unref(kf->trust);
    pthread_mutex_destroy(&kf->lock);
    free(kf);
    if (err->len == 0)
        buf_appendf(err, "key fetcher: %s", util_strerror(rc));
    return rc;
}

void keyfetch_set_trust(struct keyfetch *kf, struct trust *t)
{
    trust_ref(t);
    pthread_mutex_lock(&kf->lock);
    if (kf->pending_trust)
        trust_unref(kf->pending_trust);
    kf->pending_trust = t;
    uv_async_send(&kf->async);
    pthread_mutex_unlock(&kf->lock);
}

void keyfetch_ask(struct keyfetch *kf, struct keyfetch_wait *w)
{
    w->next = NULL;
    pthread_mutex_lock(&kf->lock);
    if (kf->pending_stop) {
        pthread_mutex_unlock(&kf->lock);
        answer(w, CH_EAGAIN, "the relay is stopping");
        return;
    }
    if (kf->inbox_tail)
        kf->inbox_tail->next = w;
    else
        kf->inbox = w;
    kf->inbox_tail = w;
    uv_async_send(&kf->async);
    pthread_mutex_unlock(&kf->lock);
}

void keyfetch_refresh(struct keyfetch *kf, const char *server)
{
    struct keyfetch_wait *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return;
    snprintf(w->server, sizeof(w->server), "%s", server);
    keyfetch_ask(kf, w);
}

void keyfetch_stop(struct keyfetch *kf)
{
    if (kf == NULL)
        return;
    pthread_mutex_lock(&kf->lock);
    kf->pending_stop = true;
    uv_async_send(&kf->async);
    pthread_mutex_unlock(&kf->lock);
    pthread_join(kf->thread, NULL);
    uv_loop_close(&kf->loop);
    /* asks that arrived after the last wake-up: nobody will answer them now */
    for (struct keyfetch_wait *w = kf->inbox; w != NULL;) {
        struct keyfetch_wait *next = w->next;
        answer(w, CH_EAGAIN, "the relay is stopping");
        w = next;
    }
    while (kf->servers != NULL) {
        struct kf_server *s = kf->servers;
        kf->servers = s->next;
        free(s);
    }
    trust_unref(kf->pending_trust);
    trust_unref(kf->trust);
    pthread_mutex_destroy(&kf->lock);
    free(kf);
}

void keyfetch_get_stats(struct keyfetch *kf, struct keyfetch_stats *out)
{
    out->fetches = atomic_load_explicit(&kf->fetches, memory_order_relaxed);
    out->failures = atomic_load_explicit(&kf->failures, memory_order_relaxed);
    out->asks = atomic_load_explicit(&kf->asks, memory_order_relaxed);
    out->refused = atomic_load_explicit(&kf->refused, memory_order_relaxed);
}
