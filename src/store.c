/* store.c -- the LMDB environment and its writer thread: every write of every loop is batched
 * into one durable commit, and each result goes back to its loop through a uv_async port. */
/* SPDX-License-Identifier: ISC */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chappe/log.h"
#include "chappe/store.h"
#include "chappe/util.h"

#define SCHEMA_KEY "schema"

/* chappe's codes are small negative numbers; LMDB's start at -30800, errno values are positive. */
#define CH_CODES_MIN (-1000)

/* LMDB's fixed handles: the free-page list and the main database holding the named ones. */
#define FREE_DBI 0
#define MAIN_DBI 1

/*
 * The reserve: the last part of the map that writes which grow the data may
 * not use. LMDB needs fresh pages even to delete (copy-on-write of the path
 * to the leaf, the free list), and the pages freed by the last commit are not
 * reusable by the next one; a map filled to the last page could then never be
 * emptied. Writes that do not grow the data (deletes) may use the reserve.
 */
#define RESERVE_MIN_PAGES 64
#define RESERVE_SHIFT     5 /* 1/32 of the map */

static const char *const db_names[STORE_DB_COUNT] = {
    [STORE_DB_META] = "meta",   [STORE_DB_KEYS] = "keys", [STORE_DB_KEYDOCS] = "keydocs",
    [STORE_DB_QUEUE] = "queue", [STORE_DB_DEST] = "dest", [STORE_DB_DEAD] = "dead",
    [STORE_DB_TXNS] = "txns",
};

/* One submitted write, owned by the store from store_submit until its done has run. */
struct store_req {
    struct store_req *next;
    struct store_port *port;
    store_write_fn fn;
    store_done_fn done;
    void *ud;
    int rc;  /* what done will get */
    bool ok; /* fn succeeded in the batch: rerun it if the batch's commit fails for space */
};

struct store {
    MDB_env *env;
    MDB_dbi dbi[STORE_DB_COUNT];
    uint64_t psize;       /* page size */
    uint64_t map_pages;   /* the map, in pages */
    uint64_t limit_pages; /* pages in use past which a growing write fails (see RESERVE_*) */
    char *path;
    int lock_fd; /* <path>/chappe.lock held with flock (STORE_F_EXCLUSIVE), or -1 */

    pthread_t writer;
    bool writer_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;           /* signalled on submission and on close */
    struct store_req *head, *tail; /* under lock: submitted, not yet taken by the writer */
    bool stopping;                 /* under lock */
    bool one_per_commit;           /* under lock: no group commit (store_set_group_commit) */
    struct store_stats stats;      /* under lock */
};

int store_err(int rc)
{
    if (rc == 0)
        return 0;
    if (rc < 0 && rc > CH_CODES_MIN)
        return rc; /* already one of chappe's codes */
    switch (rc) {
    case MDB_NOTFOUND:
        return CH_ENOENT;
    case MDB_KEYEXIST:
        return CH_EEXIST;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
        return CH_ETOOBIG;
    case MDB_BAD_VALSIZE:
        return CH_EINVAL;
    case ENOMEM:
        return CH_ENOMEM;
    default:
        return CH_EIO;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Opening: the directory, the exclusive lock, the environment, the databases and the schema.  */

/* mkdir -p with mode 0700 for every directory it creates. */
static int make_dirs(const char *path, struct buf *err)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp)) {
        buf_appendf(err, "store: bad directory name \"%s\"", path);
        return CH_EINVAL;
    }
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        char c = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            buf_appendf(err, "%s: cannot create directory %s: %s", path, tmp, strerror(e));
            return e == EACCES || e == EPERM || e == EROFS ? CH_EPERM
                   : e == ENOTDIR                          ? CH_EINVAL
                                                           : CH_EIO;
        }
        tmp[i] = c;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        buf_appendf(err, "%s: %s", path, strerror(errno));
        return CH_EIO;
    }
    if (!S_ISDIR(st.st_mode)) {
        buf_appendf(err, "%s: not a directory", path);
        return CH_EINVAL;
    }
    return 0;
}

/*
 * Hold <path>/chappe.lock (flock, released when the process dies) so that two
 * daemons never deliver from one queue; it holds the holder's pid for the
 * message the second one prints.
 */
static int take_lock(struct store *s, struct buf *err)
{
    char name[4200];
    snprintf(name, sizeof(name), "%s/chappe.lock", s->path);
    int fd = open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        buf_appendf(err, "%s: cannot open lock file: %s", name, strerror(e));
        return e == EACCES || e == EPERM || e == EROFS ? CH_EPERM : CH_EIO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t got = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[got > 0 ? got : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(fd);
        if (e == EWOULDBLOCK) {
            buf_appendf(err, "%s: in use by another chappe (pid %s holds %s)", s->path,
                        pid[0] ? pid : "unknown", name);
            return CH_EEXIST;
        }
        buf_appendf(err, "%s: cannot lock: %s", name, strerror(e));
        return CH_EIO;
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        log_warn("%s: cannot write the pid: %s", name, strerror(errno));
    s->lock_fd = fd;
    return 0;
}

/* Explain a failed mdb_env_open the way an operator can act on it. */
static int env_open_error(const struct store *s, int rc, struct buf *err)
{
    switch (rc) {
    case EACCES:
    case EPERM:
        buf_appendf(err,
                    "%s: permission denied (data.mdb and lock.mdb must be writable by uid %ld)",
                    s->path, (long)geteuid());
        return CH_EPERM;
    case EROFS:
        buf_appendf(err, "%s: read-only file system", s->path);
        return CH_EPERM;
    case EAGAIN:
        buf_appendf(err, "%s: lock.mdb is locked by another process", s->path);
        return CH_EEXIST;
    case MDB_INVALID:
        buf_appendf(err, "%s: data.mdb is not an LMDB environment", s->path);
        return CH_EINVAL;
    case MDB_VERSION_MISMATCH:
        buf_appendf(err, "%s: data.mdb was written by an incompatible LMDB version", s->path);
        return CH_EINVAL;
    case ENOMEM:
        buf_appendf(err, "%s: cannot map the environment (map_size too large?)", s->path);
        return CH_ENOMEM;
    default:
        buf_appendf(err, "%s: %s", s->path, mdb_strerror(rc));
        return CH_EIO;
    }
}

static int open_env(struct store *s, uint64_t map_size, struct buf *err)
{
    int rc = mdb_env_create(&s->env);
    if (rc != 0) {
        s->env = NULL;
        buf_appendf(err, "%s: %s", s->path, mdb_strerror(rc));
        return store_err(rc);
    }
    rc = mdb_env_set_maxdbs(s->env, STORE_DB_COUNT);
    if (rc == 0 && map_size != 0)
        rc = mdb_env_set_mapsize(s->env, (size_t)map_size);
    if (rc != 0) {
        buf_appendf(err, "%s: %s", s->path, mdb_strerror(rc));
        return CH_EINVAL;
    }
    /*
     * No MDB_NOSYNC / MDB_NOMETASYNC: a commit returns only once it is on disk,
     * which is what an ack promises. MDB_NOTLS ties reader slots to transactions
     * rather than threads, so that a loop thread may hold two read transactions
     * (two modules) at once.
     */
    rc = mdb_env_open(s->env, s->path, MDB_NOTLS, 0600);
    if (rc != 0)
        return env_open_error(s, rc, err);
    int dead = 0;
    if (mdb_reader_check(s->env, &dead) == 0 && dead > 0)
        log_info("%s: cleared %d stale reader slot(s) of dead processes", s->path, dead);
    MDB_envinfo info;
    MDB_stat st;
    rc = mdb_env_info(s->env, &info);
    if (rc == 0)
        rc = mdb_env_stat(s->env, &st);
    if (rc != 0) {
        buf_appendf(err, "%s: %s", s->path, mdb_strerror(rc));
        return CH_EIO;
    }
    s->psize = st.ms_psize;
    s->map_pages = info.me_mapsize / st.ms_psize;
    uint64_t reserve = s->map_pages >> RESERVE_SHIFT;
    if (reserve < RESERVE_MIN_PAGES)
        reserve = RESERVE_MIN_PAGES;
    if (reserve > s->map_pages / 2)
        reserve = s->map_pages / 2;
    s->limit_pages = s->map_pages - reserve;
    return 0;
}

/* Pages holding data in txn's view: every tree (free list and main database included) and the
 * two meta pages; free pages are not counted. */
static int live_pages(MDB_txn *txn, const struct store *s, uint64_t *out)
{
    uint64_t n = 2;
    for (int i = -2; i < STORE_DB_COUNT; i++) {
        MDB_stat st;
        int rc = mdb_stat(txn, i == -2 ? FREE_DBI : i == -1 ? MAIN_DBI : s->dbi[i], &st);
        if (rc != 0)
            return rc;
        n += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    }
    *out = n;
    return 0;
}

/* Check (or write, in a new environment) the schema version. Runs in the opening txn. */
static int check_schema(struct store *s, MDB_txn *txn, struct buf *err)
{
    MDB_dbi meta = s->dbi[STORE_DB_META];
    MDB_val k = {sizeof(SCHEMA_KEY) - 1, (void *)SCHEMA_KEY}, v;
    int rc = mdb_get(txn, meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        uint8_t le[4] = {STORE_SCHEMA_VERSION & 0xff, (STORE_SCHEMA_VERSION >> 8) & 0xff,
                         (STORE_SCHEMA_VERSION >> 16) & 0xff, STORE_SCHEMA_VERSION >> 24};
        v = (MDB_val){sizeof(le), le};
        rc = mdb_put(txn, meta, &k, &v, 0);
    } else if (rc == 0) {
        if (v.mv_size != 4) {
            buf_appendf(err, "%s: the schema record is %zu bytes, expected 4", s->path, v.mv_size);
            return CH_EINVAL;
        }
        const uint8_t *p = v.mv_data;
        uint32_t have = p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if (have != STORE_SCHEMA_VERSION) {
            buf_appendf(err, "%s: schema version %u, this chappe knows %u", s->path, have,
                        STORE_SCHEMA_VERSION);
            return CH_EINVAL;
        }
    }
    if (rc != 0) {
        buf_appendf(err, "%s: cannot write the schema version: %s", s->path, mdb_strerror(rc));
        return store_err(rc);
    }
    return 0;
}

/* Open every named database and check the schema, in one transaction: nothing is written to an
 * environment whose schema this chappe does not know. */
static int open_dbs(struct store *s, struct buf *err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0) {
        buf_appendf(err, "%s: %s", s->path, mdb_strerror(rc));
        return store_err(rc);
    }
    rc = mdb_dbi_open(txn, db_names[STORE_DB_META], MDB_CREATE, &s->dbi[STORE_DB_META]);
    if (rc == 0)
        rc = check_schema(s, txn, err);
    else
        buf_appendf(err, "%s: not a chappe store (database meta: %s)", s->path, mdb_strerror(rc));
    for (int i = STORE_DB_META + 1; rc == 0 && i < STORE_DB_COUNT; i++) {
        rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->dbi[i]);
        if (rc != 0)
            buf_appendf(err, "%s: not a chappe store (database %s: %s)", s->path, db_names[i],
                        mdb_strerror(rc));
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc < 0 && rc > CH_CODES_MIN ? rc : CH_EINVAL;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0) {
        buf_appendf(err, "%s: cannot commit: %s", s->path, mdb_strerror(rc));
        return store_err(rc);
    }
    return 0;
}

static void *writer_main(void *arg);

int store_open(const char *path, uint64_t map_size, unsigned flags, struct store **out,
               struct buf *err)
{
    *out = NULL;
    struct store *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        free(s);
        buf_appendf(err, "%s: out of memory", path);
        return CH_ENOMEM;
    }
    s->lock_fd = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);

    int rc = make_dirs(path, err);
    if (rc == 0 && (flags & STORE_F_EXCLUSIVE))
        rc = take_lock(s, err);
    if (rc == 0)
        rc = open_env(s, map_size, err);
    if (rc == 0)
        rc = open_dbs(s, err);
    if (rc == 0) {
        int e = pthread_create(&s->writer, NULL, writer_main, s);
        if (e != 0) {
            buf_appendf(err, "%s: cannot start the writer thread: %s", path, strerror(e));
            rc = CH_EIO;
        }
        s->writer_started = e == 0;
    }
    if (rc != 0) {
        store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void store_close(struct store *s)
{
    if (s == NULL)
        return;
    if (s->writer_started) {
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->writer, NULL);
    }
    if (s->env)
        mdb_env_close(s->env);
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->lock);
    free(s->path);
    free(s);
}

MDB_env *store_env(const struct store *s)
{
    return s->env;
}

MDB_dbi store_dbi(const struct store *s, enum store_db db)
{
    return s->dbi[db];
}

const char *store_path(const struct store *s)
{
    return s->path;
}

/* Log an LMDB failure the operator must hear about, with what to do when that is known. */
static void log_lmdb(const struct store *s, const char *what, int rc)
{
    log_error("%s: %s: %s%s", s->path, what, mdb_strerror(rc),
              rc == MDB_MAP_RESIZED ? " (another process opened it with a larger map_size: restart "
                                      "chappe; tools should open with map_size 0)"
              : rc == MDB_PANIC     ? " (the environment is unusable: restart chappe)"
                                    : "");
}

int store_read_begin(struct store *s, MDB_txn **out)
{
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, out);
    if (rc != 0) {
        *out = NULL;
        log_lmdb(s, "cannot begin a read transaction", rc);
    }
    return store_err(rc);
}

/* ------------------------------------------------------------------------------------------ */
/* Completion ports: finished requests go back to the loop that submitted them.               */

static void port_closed_cb(uv_handle_t *h)
{
    struct store_port *p = CONTAINER_OF(h, struct store_port, async);
    pthread_mutex_destroy(&p->lock);
    if (p->on_closed)
        p->on_closed(p);
}

static void port_shut(struct store_port *p)
{
    p->closed = true;
    uv_close((uv_handle_t *)&p->async, port_closed_cb);
}

/* Loop thread: run the done of every finished request. */
static void port_async_cb(uv_async_t *a)
{
    struct store_port *p = CONTAINER_OF(a, struct store_port, async);
    pthread_mutex_lock(&p->lock);
    struct store_req *list = p->head;
    p->head = p->tail = NULL;
    pthread_mutex_unlock(&p->lock);
    while (list) {
        struct store_req *r = list;
        list = r->next;
        if (--p->inflight == 0 && !p->closed)
            uv_unref((uv_handle_t *)&p->async); /* idle: no reason to keep the loop alive */
        r->done(r->ud, r->rc);
        free(r);
    }
    if (p->closing && p->inflight == 0 && !p->closed)
        port_shut(p);
}

int store_port_init(struct store_port *p, uv_loop_t *loop)
{
    memset(p, 0, sizeof(*p));
    if (uv_async_init(loop, &p->async, port_async_cb) != 0)
        return CH_EIO;
    pthread_mutex_init(&p->lock, NULL);
    uv_unref((uv_handle_t *)&p->async);
    return 0;
}

void store_port_close(struct store_port *p, void (*on_closed)(struct store_port *p))
{
    if (p->closing)
        return;
    p->closing = true;
    p->on_closed = on_closed;
    if (p->inflight == 0)
        port_shut(p);
}

/*
 * Writer thread: hand r back to its loop. uv_async_send runs under the port's
 * lock so that the loop, which takes that lock before it can deliver r and so
 * decide to close the port, never closes the handle under this call.
 */
static void port_post(struct store_req *r)
{
    struct store_port *p = r->port;
    r->next = NULL;
    pthread_mutex_lock(&p->lock);
    if (p->tail)
        p->tail->next = r;
    else
        p->head = r;
    p->tail = r;
    uv_async_send(&p->async);
    pthread_mutex_unlock(&p->lock);
}

/* ------------------------------------------------------------------------------------------ */
/* The writer: group commit.                                                                   */

/* Run fn in txn; a write that grows the data past the limit fails as if the map were full. */
static int run_fn(struct store *s, MDB_txn *txn, store_write_fn fn, void *ud)
{
    uint64_t before, after;
    int rc = live_pages(txn, s, &before);
    if (rc == 0)
        rc = fn(txn, s, ud);
    if (rc == 0)
        rc = live_pages(txn, s, &after);
    if (rc == 0 && after > s->limit_pages && after > before)
        rc = MDB_MAP_FULL;
    return rc;
}

/* Run one request in a child of txn. Returns fn's or LMDB's result, untranslated. */
static int run_child(struct store *s, MDB_txn *txn, struct store_req *r)
{
    MDB_txn *child;
    int rc = mdb_txn_begin(s->env, txn, 0, &child);
    if (rc != 0)
        return rc;
    rc = run_fn(s, child, r->fn, r->ud);
    if (rc == 0)
        return mdb_txn_commit(child); /* into the parent; aborts the child on failure */
    mdb_txn_abort(child);
    return rc;
}

/* Run one request in a transaction and a commit of its own. */
static int run_alone(struct store *s, store_write_fn fn, void *ud)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    rc = run_fn(s, txn, fn, ud);
    if (rc == 0)
        return mdb_txn_commit(txn);
    mdb_txn_abort(txn);
    return rc;
}

/*
 * Run list in one write transaction, each request in a nested transaction, and
 * commit once. Fills each request's rc. Returns the requests left for the next
 * batch: when the transaction has no room for more dirty pages (MDB_TXN_FULL),
 * the batch ends at the request that hit it and that request starts the next.
 */
static struct store_req *run_batch(struct store *s, struct store_req *list,
                                   struct store_stats *delta)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    delta->batches = 1;
    if (rc != 0) {
        delta->commit_errors = 1;
        log_lmdb(s, "cannot begin a write transaction", rc);
        for (struct store_req *r = list; r; r = r->next)
            r->rc = store_err(rc) == CH_ETOOBIG ? CH_ETOOBIG : CH_EIO;
        return NULL;
    }
    struct store_req *rest = NULL, *prev = NULL;
    size_t nok = 0;
    for (struct store_req *r = list; r; prev = r, r = r->next) {
        int rrc = run_child(s, txn, r);
        if (rrc == MDB_TXN_FULL && prev != NULL) {
            prev->next = NULL;
            rest = r;
            break;
        }
        r->rc = store_err(rrc);
        r->ok = rrc == 0;
        nok += r->ok;
    }
    rc = mdb_txn_commit(txn);
    if (rc == 0)
        return rest;
    delta->commit_errors++;
    if (rc == MDB_MAP_FULL && nok > 1) {
        /* The sum did not fit but a part may (a delete that makes room, above all): each
         * request that succeeded is retried alone. */
        log_warn("%s: map full, retrying %zu writes one by one", s->path, nok);
        for (struct store_req *r = list; r; r = r->next) {
            if (!r->ok)
                continue;
            int arc = run_alone(s, r->fn, r->ud);
            r->rc = store_err(arc);
            delta->batches++;
            delta->commit_errors += arc == MDB_MAP_FULL || (arc > 0 && arc != ENOMEM);
        }
        return rest;
    }
    if (rc != MDB_MAP_FULL)
        log_lmdb(s, "commit failed", rc);
    for (struct store_req *r = list; r; r = r->next)
        if (r->ok)
            r->rc = store_err(rc) == CH_ETOOBIG ? CH_ETOOBIG : CH_EIO;
    return rest;
}

static void finish_batch(struct store *s, struct store_req *list, struct store_stats *d)
{
    for (struct store_req *r = list; r; r = r->next) {
        d->requests++;
        d->failed += r->rc != 0;
        d->map_full += r->rc == CH_ETOOBIG;
    }
    pthread_mutex_lock(&s->lock);
    s->stats.batches += d->batches;
    s->stats.requests += d->requests;
    s->stats.failed += d->failed;
    s->stats.map_full += d->map_full;
    s->stats.commit_errors += d->commit_errors;
    if (d->requests > s->stats.max_batch)
        s->stats.max_batch = d->requests;
    pthread_mutex_unlock(&s->lock);
    while (list) {
        struct store_req *r = list;
        list = r->next;
        port_post(r); /* r belongs to its loop from here on */
    }
}

static void *writer_main(void *arg)
{
    struct store *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->head == NULL && !s->stopping)
            pthread_cond_wait(&s->wake, &s->lock);
        if (s->head == NULL)
            break; /* stopping, and every submitted batch has run */
        struct store_req *list = s->head;
        if (s->one_per_commit && list->next != NULL) {
            s->head = list->next;
            list->next = NULL;
        } else {
            s->head = s->tail = NULL;
        }
        pthread_mutex_unlock(&s->lock);

        struct store_stats delta = {0};
        struct store_req *rest = run_batch(s, list, &delta);
        finish_batch(s, list, &delta);

        pthread_mutex_lock(&s->lock);
        if (rest) {
            /* Back to the front, in order, ahead of what arrived meanwhile. */
            struct store_req *last = rest;
            while (last->next)
                last = last->next;
            last->next = s->head;
            if (s->head == NULL)
                s->tail = last;
            s->head = rest;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

void store_set_group_commit(struct store *s, bool on)
{
    pthread_mutex_lock(&s->lock);
    s->one_per_commit = !on;
    pthread_mutex_unlock(&s->lock);
}

int store_submit(struct store *s, struct store_port *port, store_write_fn fn, store_done_fn done,
                 void *ud)
{
    if (port->closing)
        return CH_EINVAL;
    struct store_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return CH_ENOMEM;
    *r = (struct store_req){.port = port, .fn = fn, .done = done, .ud = ud};
    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->lock);
        free(r);
        return CH_EAGAIN;
    }
    /* Counted before the writer can see it; delivery runs on this thread, so not before we
     * return anyway. */
    if (port->inflight++ == 0)
        uv_ref((uv_handle_t *)&port->async);
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int store_write_now(struct store *s, store_write_fn fn, void *ud)
{
    int rc = run_alone(s, fn, ud);
    if (rc == MDB_PANIC || rc == MDB_MAP_RESIZED || (rc > 0 && rc != ENOMEM))
        log_lmdb(s, "write failed", rc);
    return store_err(rc);
}

void store_get_stats(struct store *s, struct store_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
}

int store_usage(struct store *s, struct store_usage *out)
{
    MDB_envinfo info;
    MDB_txn *txn;
    uint64_t live;
    int rc = mdb_env_info(s->env, &info);
    if (rc != 0)
        return store_err(rc);
    rc = store_read_begin(s, &txn);
    if (rc != 0)
        return rc;
    rc = live_pages(txn, s, &live);
    mdb_txn_abort(txn);
    if (rc != 0)
        return store_err(rc);
    out->used = live * s->psize;
    out->limit = s->limit_pages * s->psize;
    out->map = s->map_pages * s->psize;
    out->file = ((uint64_t)info.me_last_pgno + 1) * s->psize;
    return 0;
}
