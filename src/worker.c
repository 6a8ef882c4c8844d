/* worker.c -- one event loop per core: its listeners, connections, pools, reload and drain. */
/* SPDX-License-Identifier: ISC */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chappe/admin.h"
#include "chappe/conn.h"
#include "chappe/client.h"
#include "chappe/dns.h"
#include "chappe/egress.h"
#include "chappe/inbound.h"
#include "chappe/mint.h"
#include "chappe/resolve.h"
#include "chappe/trust.h"
#include "chappe/log.h"
#include "chappe/upstream.h"
#include "chappe/util.h"
#include "chappe/worker.h"

#define LISTEN_BACKLOG 511

static int open_socket(const struct cfg_addr *a, int *out)
{
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail;
    if (a->ss.ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
        goto fail;
    if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0)
        goto fail;
    *out = fd;
    return 0;
fail:;
    int err = -errno;
    close(fd);
    return err;
}

int worker_open_listeners(struct worker *ws, unsigned n, const struct config *cfg)
{
    size_t count = 0;
    for (size_t i = 0; i < cfg->nlisteners; i++)
        count += cfg->listeners[i].nbinds;
    for (unsigned k = 0; k < n; k++) {
        struct worker *w = &ws[k];
        w->id = k;
        w->cfg = cfg;
        w->listeners = calloc(count ? count : 1, sizeof(*w->listeners));
        if (w->listeners == NULL)
            return CH_ENOMEM;
        size_t j = 0;
        for (size_t i = 0; i < cfg->nlisteners; i++) {
            for (size_t b = 0; b < cfg->listeners[i].nbinds; b++, j++) {
                struct listener *l = &w->listeners[j];
                l->w = w;
                l->cfg = &cfg->listeners[i];
                l->addr = &cfg->listeners[i].binds[b];
                l->fd = -1;
                int rc = open_socket(l->addr, &l->fd);
                if (rc < 0) {
                    log_error("cannot listen on %s (%s listener): %s", l->addr->text,
                              config_listener_type_name(l->cfg->type), strerror(-rc));
                    w->nlisteners = j;
                    return CH_EIO;
                }
            }
        }
        w->nlisteners = j;
    }
    return 0;
}

static void list_init(struct link *l)
{
    l->prev = l->next = l;
}

void worker_conn_add(struct worker *w, struct conn *c)
{
    atomic_fetch_add(&w->load, 1);
    c->link.next = w->conns.next;
    c->link.prev = &w->conns;
    w->conns.next->prev = &c->link;
    w->conns.next = &c->link;
    w->nconns++;
}

void worker_conn_remove(struct worker *w, struct conn *c)
{
    c->link.prev->next = c->link.next;
    c->link.next->prev = c->link.prev;
    list_init(&c->link);
    w->nconns--;
    atomic_fetch_sub(&w->load, 1);
}

static void accept_on(struct listener *l, int fd)
{
    switch (l->cfg->type) {
    case LISTENER_FEDERATION:
        inbound_accept(l, fd);
        break;
    case LISTENER_EGRESS:
        egress_accept(l, fd);
        break;
    case LISTENER_ADMIN:
        admin_accept(l, fd);
        break;
    default:
        if (fd >= 0)
            close(fd);
        break;
    }
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

/* The sibling with the fewest connections, if this worker is HANDOVER_SLACK ahead of it. */
#define HANDOVER_SLACK 2

static struct worker *less_loaded(struct worker *w)
{
    struct worker *best = w;
    size_t best_load = atomic_load(&w->load);
    for (unsigned i = 0; i < w->nsiblings; i++) {
        struct worker *o = &w->siblings[i];
        size_t load = atomic_load(&o->load);
        if (load < best_load) {
            best = o;
            best_load = load;
        }
    }
    if (best != w && atomic_load(&w->load) < best_load + HANDOVER_SLACK)
        return w;
    return best;
}

/* Accept here, then queue the socket for worker t, which adopts it in its async callback. */
static int hand_over(struct listener *l, struct worker *t)
{
    uv_tcp_t *tmp = malloc(sizeof(*tmp));
    if (tmp == NULL)
        return CH_ENOMEM;
    uv_tcp_init(&l->w->loop, tmp);
    int rc = uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)tmp);
    uv_os_fd_t fd = -1;
    if (rc == 0)
        rc = uv_fileno((uv_handle_t *)tmp, &fd);
    int dupfd = rc == 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
    uv_close((uv_handle_t *)tmp, free_handle);
    if (dupfd < 0)
        return 0; /* the connection is lost either way: not worth more than a debug line */
    size_t idx = (size_t)(l - l->w->listeners);
    pthread_mutex_lock(&t->lock);
    if (!t->open_for_handovers) { /* starting or stopping: keep the connection here */
        pthread_mutex_unlock(&t->lock);
        accept_on(l, dupfd);
        return 0;
    }
    if (t->nhandovers == t->caphandovers) {
        size_t cap = t->caphandovers ? t->caphandovers * 2 : 16;
        struct handover *n = realloc(t->handovers, cap * sizeof(*n));
        if (n == NULL) {
            pthread_mutex_unlock(&t->lock);
            close(dupfd);
            return 0;
        }
        t->handovers = n;
        t->caphandovers = cap;
    }
    t->handovers[t->nhandovers++] = (struct handover){dupfd, idx};
    atomic_fetch_add(&t->load, 1);
    pthread_mutex_unlock(&t->lock);
    uv_async_send(&t->async);
    return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = CONTAINER_OF(server, struct listener, tcp);
    if (status < 0) {
        log_warn("accept on %s: %s", l->addr->text, uv_strerror(status));
        return;
    }
    struct worker *t = less_loaded(l->w);
    if (t != l->w && hand_over(l, t) == 0)
        return;
    accept_on(l, -1);
}

static void adopt_handovers(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    struct handover *list = w->handovers;
    size_t n = w->nhandovers;
    w->handovers = NULL;
    w->nhandovers = w->caphandovers = 0;
    pthread_mutex_unlock(&w->lock);
    for (size_t i = 0; i < n; i++) {
        atomic_fetch_sub(&w->load, 1);
        if (w->draining || list[i].listener >= w->nlisteners)
            close(list[i].fd);
        else
            accept_on(&w->listeners[list[i].listener], list[i].fd);
    }
    free(list);
}

static void close_noop(uv_handle_t *h)
{
    (void)h;
}

/* The egress's outbound stack, when the configuration has an egress listener. */
static int new_outbound(struct worker *w)
{
    bool egress = false;
    for (size_t i = 0; i < w->cfg->nlisteners; i++)
        egress = egress || w->cfg->listeners[i].type == LISTENER_EGRESS;
    if (!egress)
        return 0;
    struct buf err = BUF_INIT;
    int rc;
    if ((rc = dns_new(&w->loop, w->cfg, &w->dns, &err)) < 0 ||
        (rc = client_new(&w->loop, w->cfg, w->trust->pol, &w->cl, &err)) < 0 ||
        (rc = resolve_new(&w->loop, w->cfg, w->cl, w->dns, &w->res)) < 0)
        log_error("worker %u: cannot set up the outbound client: %.*s", w->id, (int)err.len,
                  buf_data(&err));
    buf_free(&err);
    return rc;
}

static void free_outbound(struct worker *w)
{
    if (w->res)
        resolve_free(w->res);
    if (w->cl)
        client_free(w->cl);
    if (w->dns)
        dns_free(w->dns);
    w->res = NULL;
    w->cl = NULL;
    w->dns = NULL;
}

/* Everything is closed or closing: let uv_run return. */
static void finish(struct worker *w)
{
    if (w->stopped)
        return;
    w->stopped = true;
    pthread_mutex_lock(&w->lock);
    w->open_for_handovers = false; /* nobody sends to the async handle once it closes */
    pthread_mutex_unlock(&w->lock);
    adopt_handovers(w); /* draining: those are closed */
    for (size_t i = 0; i < w->cfg->nhomeservers; i++)
        upstream_pool_close(&w->pools[i]);
    uv_close((uv_handle_t *)&w->async, close_noop);
    uv_close((uv_handle_t *)&w->drain_timer, close_noop);
    keyfetch_mbox_close(&w->kbox);
    mint_cache_free(w->mints); /* connections hold their own server references */
    w->mints = NULL;
    if (w->sport_open)
        store_port_close(&w->sport, NULL); /* writes in flight still complete on this loop */
    w->sport_open = false;
    free_outbound(w);
}

void worker_maybe_finish(struct worker *w)
{
    if (w->draining && w->nconns == 0)
        finish(w);
}

static void force_close(struct worker *w)
{
    for (struct link *l = w->conns.next; l != &w->conns; l = l->next) {
        struct conn *c = CONTAINER_OF(l, struct conn, link);
        conn_close(c);
    }
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct worker *w = t->data;
    if (w->nconns)
        log_warn("worker %u: drain timeout: closing %zu connection(s)", w->id, w->nconns);
    force_close(w);
}

static void begin_drain(struct worker *w, bool force)
{
    if (!w->draining) {
        w->draining = true;
        for (size_t i = 0; i < w->nlisteners; i++)
            uv_close((uv_handle_t *)&w->listeners[i].tcp, close_noop);
        for (size_t i = 0; i < w->cfg->nhomeservers; i++)
            upstream_pool_close(&w->pools[i]);
        for (struct link *l = w->conns.next; l != &w->conns;) {
            struct conn *c = CONTAINER_OF(l, struct conn, link);
            l = l->next;
            c->h->on_drain(c);
        }
        uv_timer_start(&w->drain_timer, on_drain_timeout, w->cfg->limits.drain_timeout_ms, 0);
    }
    if (force)
        force_close(w);
    worker_maybe_finish(w);
}

static void on_async(uv_async_t *a)
{
    struct worker *w = a->data;
    pthread_mutex_lock(&w->lock);
    struct tls_material *m = w->pending_tls;
    struct trust *t = w->pending_trust;
    bool stop = w->pending_stop, force = w->pending_force;
    w->pending_tls = NULL;
    w->pending_trust = NULL;
    pthread_mutex_unlock(&w->lock);
    adopt_handovers(w);
    if (t) {
        /* requests in flight keep the snapshot they started with */
        trust_unref(w->trust);
        w->trust = t;
        if (w->cl)
            client_set_policy(w->cl, t->pol);
    }
    if (m) {
        struct tls_server *s = NULL;
        if (tls_server_new(m, &s) == 0) {
            if (w->tls)
                tls_server_unref(w->tls);
            w->tls = s; /* open connections keep the server they started with */
            log_debug("worker %u: new certificates in service", w->id);
        } else {
            log_error("worker %u: cannot use the reloaded certificates; keeping the current ones",
                      w->id);
        }
        tls_material_unref(m);
    }
    if (stop && !w->stopped)
        begin_drain(w, force);
}

static void *thread_main(void *arg)
{
    struct worker *w = arg;
    for (size_t i = 0; i < w->nlisteners; i++) {
        struct listener *l = &w->listeners[i];
        uv_tcp_init(&w->loop, &l->tcp);
        int rc = uv_tcp_open(&l->tcp, l->fd);
        if (rc == 0) {
            l->fd = -1; /* owned by the handle now */
            rc = uv_listen((uv_stream_t *)&l->tcp, LISTEN_BACKLOG, on_connection);
        }
        if (rc < 0) {
            log_error("cannot listen on %s: %s", l->addr->text, uv_strerror(rc));
            w->start_error = CH_EIO;
        }
    }
    uv_sem_post(&w->started);
    if (w->start_error)
        begin_drain(w, true);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    w->on_exit(w);
    return NULL;
}

int worker_start(struct worker *w, struct tls_material *m, void (*on_exit)(struct worker *))
{
    w->on_exit = on_exit;
    list_init(&w->conns);
    pthread_mutex_init(&w->lock, NULL);
    if (uv_loop_init(&w->loop) < 0)
        return CH_EIO;
    uv_async_init(&w->loop, &w->async, on_async);
    w->async.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    if (keyfetch_mbox_init(&w->kbox, &w->loop) < 0 || new_outbound(w) < 0)
        return CH_EIO;
    if (w->mint != NULL && mint_cache_new(w->mint, &w->mints) < 0)
        return CH_ENOMEM;
    if (w->store != NULL) {
        if (store_port_init(&w->sport, &w->loop) < 0)
            return CH_EIO;
        w->sport_open = true;
    }
    w->pools = calloc(w->cfg->nhomeservers, sizeof(*w->pools));
    if (w->pools == NULL)
        return CH_ENOMEM;
    for (size_t i = 0; i < w->cfg->nhomeservers; i++)
        upstream_pool_init(&w->pools[i], w, &w->cfg->homeservers[i]);
    if (m && tls_server_new(m, &w->tls) < 0) {
        log_error("worker %u: cannot set up TLS", w->id);
        return CH_ETLS;
    }
    pthread_mutex_lock(&w->lock);
    w->open_for_handovers = true;
    pthread_mutex_unlock(&w->lock);
    if (uv_sem_init(&w->started, 0) < 0)
        return CH_EIO;
    if (pthread_create(&w->thread, NULL, thread_main, w) != 0)
        return CH_EIO;
    uv_sem_wait(&w->started);
    return w->start_error;
}

void worker_post_tls(struct worker *w, struct tls_material *m)
{
    tls_material_ref(m);
    pthread_mutex_lock(&w->lock);
    if (w->pending_tls)
        tls_material_unref(w->pending_tls);
    w->pending_tls = m;
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->async);
}

void worker_post_trust(struct worker *w, struct trust *t)
{
    trust_ref(t);
    pthread_mutex_lock(&w->lock);
    if (w->pending_trust)
        trust_unref(w->pending_trust);
    w->pending_trust = t;
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->async);
}

void worker_post_stop(struct worker *w, bool force)
{
    pthread_mutex_lock(&w->lock);
    w->pending_stop = true;
    w->pending_force = w->pending_force || force;
    pthread_mutex_unlock(&w->lock);
    uv_async_send(&w->async);
}

void worker_join(struct worker *w)
{
    pthread_join(w->thread, NULL);
    uv_loop_close(&w->loop);
    if (w->pending_tls)
        tls_material_unref(w->pending_tls);
    trust_unref(w->pending_trust);
    trust_unref(w->trust);
    w->pending_trust = w->trust = NULL;
    if (w->tls)
        tls_server_unref(w->tls);
    for (size_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].fd >= 0)
            close(w->listeners[i].fd);
    for (size_t i = 0; i < w->nhandovers; i++)
        close(w->handovers[i].fd);
    free(w->handovers);
    free(w->listeners);
    free(w->pools);
    uv_sem_destroy(&w->started);
    pthread_mutex_destroy(&w->lock);
}
