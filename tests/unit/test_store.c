/* test_store.c -- unit tests for store.c: opening and its errors, the schema version, group
 * commit from two loops, isolation of a failing write, a full map, and closing with writes in
 * flight. */
/* SPDX-License-Identifier: ISC */

/* Included to watch the writer's private state (closing while a batch runs). */
#include "../../src/store.c"

#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#define WAIT_MS 10000 /* every wait of these tests gives up after this long */

/* ------------------------------------------------------------------------------------------ */
/* Fixtures: a fresh directory per test, removed afterwards.                                   */

struct fix {
    char dir[64];   /* /tmp/chappe-store-test-XXXXXX */
    char path[128]; /* dir/var/queue: store_open makes both levels */
    struct buf err;
};

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/chappe-store-test-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/var/queue", f->dir);
    f->err = BUF_INIT;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    buf_free(&f->err);
    free(f);
    return 0;
}

static const char *err_text(struct fix *f)
{
    buf_append(&f->err, "", 1);
    f->err.len--;
    return buf_data(&f->err);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Poll *flag until it is non-zero, for at most WAIT_MS. */
static bool wait_flag(atomic_int *flag)
{
    for (int i = 0; i < WAIT_MS && atomic_load(flag) == 0; i++)
        sleep_ms(1);
    return atomic_load(flag) != 0;
}

/* ------------------------------------------------------------------------------------------ */
/* A loop with a completion port and a watchdog timer.                                         */

struct lctx {
    uv_loop_t loop;
    struct store_port port;
    uv_timer_t timer;
    pthread_t owner;
    bool timed_out;
    size_t ndone;    /* done callbacks run on this loop */
    bool closed;     /* the port's on_closed ran */
    size_t at_close; /* ndone when on_closed ran */
};

static int lctx_init(struct lctx *l)
{
    memset(l, 0, sizeof(*l));
    l->owner = pthread_self();
    if (uv_loop_init(&l->loop) != 0 || uv_timer_init(&l->loop, &l->timer) != 0)
        return -1;
    return store_port_init(&l->port, &l->loop);
}

static void on_timeout(uv_timer_t *t)
{
    struct lctx *l = CONTAINER_OF(t, struct lctx, timer);
    l->timed_out = true;
    uv_stop(&l->loop);
}

/* Run the loop until *count reaches want or WAIT_MS pass. True when it was reached. */
static bool lctx_wait(struct lctx *l, const size_t *count, size_t want)
{
    l->timed_out = false;
    uv_timer_start(&l->timer, on_timeout, WAIT_MS, 0);
    while (*count < want && !l->timed_out)
        uv_run(&l->loop, UV_RUN_ONCE);
    uv_timer_stop(&l->timer);
    return *count >= want;
}

static void on_port_closed(struct store_port *p)
{
    struct lctx *l = CONTAINER_OF(p, struct lctx, port);
    l->closed = true;
    l->at_close = l->ndone;
}

/* Close the port (unless closed already) and the timer, finish the loop. 0 when clean; -1,
 * without waiting longer than WAIT_MS, when writes are still in flight. */
static int lctx_fini(struct lctx *l)
{
    if (!l->port.closing)
        store_port_close(&l->port, on_port_closed);
    l->timed_out = false;
    uv_timer_start(&l->timer, on_timeout, WAIT_MS, 0);
    while (!l->closed && !l->timed_out)
        uv_run(&l->loop, UV_RUN_ONCE);
    if (!l->closed)
        return -1; /* the loop is left as it is: a leak, not a hang */
    uv_close((uv_handle_t *)&l->timer, NULL);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    return uv_loop_close(&l->loop) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Writes.                                                                                     */

/* One put of key -> key into `queue`, then fail with ret (0: succeed). */
struct wreq {
    struct lctx *l;
    char key[32];
    int ret;         /* what put_fn returns after its put */
    int rc;          /* what done got */
    int ndone;       /* times done ran */
    bool off_thread; /* done ran on another thread than the loop's */
    size_t order;    /* l->ndone when done ran */
    int puts;        /* fill_fn: how many values (0: FILL_PUTS) */
};

static int put_fn(MDB_txn *txn, struct store *s, void *ud)
{
    struct wreq *w = ud;
    MDB_val k = {strlen(w->key), w->key}, v = {strlen(w->key), w->key};
    int rc = mdb_put(txn, store_dbi(s, STORE_DB_QUEUE), &k, &v, 0);
    return rc != 0 ? rc : w->ret;
}

static void wreq_done(void *ud, int rc)
{
    struct wreq *w = ud;
    w->rc = rc;
    w->ndone++;
    w->off_thread = !pthread_equal(pthread_self(), w->l->owner);
    w->order = w->l->ndone++;
}

/* Blocks the writer inside a batch until opened; optionally watches the store closing. */
struct gate {
    atomic_int entered;
    atomic_int open;
    bool wait_stopping; /* wait for store_close instead of open, then try a submission */
    struct store_port *port;
    int submit_rc;    /* what that submission returned */
    struct wreq late; /* that submission's request (never runs) */
    struct wreq done; /* the gate's own completion */
};

static int gate_fn(MDB_txn *txn, struct store *s, void *ud)
{
    (void)txn;
    struct gate *g = ud;
    atomic_store(&g->entered, 1);
    for (int i = 0; i < WAIT_MS; i++) {
        if (g->wait_stopping) {
            pthread_mutex_lock(&s->lock);
            bool stopping = s->stopping;
            pthread_mutex_unlock(&s->lock);
            if (stopping) {
                g->submit_rc = store_submit(s, g->port, put_fn, wreq_done, &g->late);
                return 0;
            }
        } else if (atomic_load(&g->open)) {
            return 0;
        }
        sleep_ms(1);
    }
    return CH_ETIMEOUT;
}

static void gate_done(void *ud, int rc)
{
    struct gate *g = ud;
    wreq_done(&g->done, rc);
}

/* Submit a gate through l and wait until the writer is inside it. */
static void gate_start(struct store *s, struct lctx *l, struct gate *g)
{
    g->done.l = l;
    g->port = &l->port;
    assert_int_equal(store_submit(s, &l->port, gate_fn, gate_done, g), 0);
    assert_true(wait_flag(&g->entered));
}

/* The value stored under key in `queue`, or NULL (copied into out). */
static const char *get_value(struct store *s, const char *key, char *out, size_t cap)
{
    MDB_txn *txn;
    MDB_val k = {strlen(key), (void *)key}, v;
    const char *res = NULL;
    if (store_read_begin(s, &txn) != 0)
        return NULL;
    if (mdb_get(txn, store_dbi(s, STORE_DB_QUEUE), &k, &v) == 0 && v.mv_size < cap) {
        memcpy(out, v.mv_data, v.mv_size);
        out[v.mv_size] = '\0';
        res = out;
    }
    mdb_txn_abort(txn);
    return res;
}

static bool has_key(struct store *s, const char *key)
{
    char tmp[8192];
    return get_value(s, key, tmp, sizeof(tmp)) != NULL;
}

/* For store_write_now: one put into one database. */
struct kv {
    enum store_db db;
    const char *key;
    const void *val;
    size_t len;
    unsigned flags;
};

static int kv_fn(MDB_txn *txn, struct store *s, void *ud)
{
    const struct kv *kv = ud;
    MDB_val k = {strlen(kv->key), (void *)kv->key}, v = {kv->len, (void *)kv->val};
    return mdb_put(txn, store_dbi(s, kv->db), &k, &v, kv->flags);
}

/* ------------------------------------------------------------------------------------------ */
/* Opening.                                                                                    */

static void test_open_creates(void **state)
{
    struct fix *f = *state;
    struct store *s;
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), 0);
    assert_int_equal(f->err.len, 0);
    assert_string_equal(store_path(s), f->path);

    struct stat st;
    char sub[160];
    snprintf(sub, sizeof(sub), "%s/var", f->dir);
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(stat(f->path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(sub, sizeof(sub), "%s/data.mdb", f->path);
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* Every named database exists in the main database, and the schema is 1, little-endian. */
    MDB_txn *txn;
    MDB_dbi main_db;
    assert_int_equal(store_read_begin(s, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, NULL, 0, &main_db), 0);
    const char *names[] = {"dead", "dest", "keydocs", "keys", "meta", "queue", "txns"};
    MDB_cursor *c;
    MDB_val k, v;
    assert_int_equal(mdb_cursor_open(txn, main_db, &c), 0);
    size_t n = 0;
    for (int op = MDB_FIRST; mdb_cursor_get(c, &k, &v, op) == 0; op = MDB_NEXT, n++) {
        assert_true(n < ARRAY_LEN(names));
        assert_int_equal(k.mv_size, strlen(names[n]));
        assert_memory_equal(k.mv_data, names[n], k.mv_size);
    }
    assert_int_equal(n, 7);
    mdb_cursor_close(c);
    k = (MDB_val){6, "schema"};
    assert_int_equal(mdb_get(txn, store_dbi(s, STORE_DB_META), &k, &v), 0);
    assert_int_equal(v.mv_size, 4);
    assert_memory_equal(v.mv_data, "\x01\x00\x00\x00", 4);
    for (int i = 0; i < STORE_DB_COUNT; i++) {
        MDB_stat ms;
        assert_int_equal(mdb_stat(txn, store_dbi(s, i), &ms), 0);
        assert_int_equal(ms.ms_entries, i == STORE_DB_META ? 1 : 0);
    }
    mdb_txn_abort(txn);

    /* Durable commits: neither of the no-sync flags. */
    unsigned flags;
    assert_int_equal(mdb_env_get_flags(store_env(s), &flags), 0);
    assert_int_equal(flags & (MDB_NOSYNC | MDB_NOMETASYNC | MDB_MAPASYNC), 0);

    /* 256 pages of 4 KiB, 64 of them the reserve; a new store holds a handful. */
    struct store_usage u;
    assert_int_equal(store_usage(s, &u), 0);
    assert_int_equal(u.map, 1u << 20);
    assert_int_equal(u.limit, (256 - 64) * 4096);
    assert_true(u.used >= 3 * 4096 && u.used <= 10 * 4096);
    assert_true(u.file >= u.used);
    store_close(s);
}

static void test_reopen_keeps_data(void **state)
{
    struct fix *f = *state;
    struct store *s;
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), 0);
    struct kv kv = {STORE_DB_QUEUE, "dest/1", "body", 4, 0};
    assert_int_equal(store_write_now(s, kv_fn, &kv), 0);
    /* A conflicting put is translated and writes nothing. */
    kv.val = "other";
    kv.len = 5;
    kv.flags = MDB_NOOVERWRITE;
    assert_int_equal(store_write_now(s, kv_fn, &kv), CH_EEXIST);
    store_close(s);

    /* Map size 0 keeps the environment's size. */
    assert_int_equal(store_open(f->path, 0, 0, &s, &f->err), 0);
    char out[16];
    assert_string_equal(get_value(s, "dest/1", out, sizeof(out)), "body");
    struct store_usage u;
    assert_int_equal(store_usage(s, &u), 0);
    assert_int_equal(u.map, 1u << 20);
    store_close(s);
    assert_int_equal(f->err.len, 0);
    store_close(NULL);
}

static void test_schema_mismatch(void **state)
{
    struct fix *f = *state;
    struct store *s;
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), 0);
    struct kv kv = {STORE_DB_META, "schema", "\x02\x00\x00\x00", 4, 0};
    assert_int_equal(store_write_now(s, kv_fn, &kv), 0);
    store_close(s);

    s = (struct store *)1;
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), CH_EINVAL);
    assert_null(s);
    char want[200];
    snprintf(want, sizeof(want), "%s: schema version 2, this chappe knows 1", f->path);
    assert_string_equal(err_text(f), want);

    /* A schema record of the wrong size is refused too (written by a raw LMDB open). */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, f->path, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    MDB_val k = {6, "schema"}, v = {2, "\x01\x00"};
    assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    buf_reset(&f->err);
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), CH_EINVAL);
    snprintf(want, sizeof(want), "%s: the schema record is 2 bytes, expected 4", f->path);
    assert_string_equal(err_text(f), want);
}

static void test_bad_paths(void **state)
{
    struct fix *f = *state;
    struct store *s;
    char file[160], want[600];

    /* A path that is a file. */
    snprintf(file, sizeof(file), "%s/file", f->dir);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(store_open(file, 1u << 20, 0, &s, &f->err), CH_EINVAL);
    assert_null(s);
    snprintf(want, sizeof(want), "%s: not a directory", file);
    assert_string_equal(err_text(f), want);

    /* A path below a file. */
    char below[200];
    snprintf(below, sizeof(below), "%s/sub", file);
    buf_reset(&f->err);
    assert_int_equal(store_open(below, 1u << 20, 0, &s, &f->err), CH_EINVAL);
    snprintf(want, sizeof(want), "%s: cannot create directory %s: Not a directory", below, below);
    assert_string_equal(err_text(f), want);

    /* A directory holding something that is not LMDB. */
    char junk[200];
    snprintf(junk, sizeof(junk), "%s/var", f->dir);
    assert_int_equal(mkdir(junk, 0700), 0);
    assert_int_equal(mkdir(f->path, 0700), 0);
    snprintf(junk, sizeof(junk), "%s/data.mdb", f->path);
    fp = fopen(junk, "w");
    assert_non_null(fp);
    for (int i = 0; i < 8192; i++)
        fputc('x', fp);
    fclose(fp);
    buf_reset(&f->err);
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), CH_EINVAL);
    snprintf(want, sizeof(want), "%s: data.mdb is not an LMDB environment", f->path);
    assert_string_equal(err_text(f), want);

    /* Permission denied (root is never denied: only checked as another user). */
    if (geteuid() != 0) {
        char ro[160];
        snprintf(ro, sizeof(ro), "%s/ro", f->dir);
        assert_int_equal(mkdir(ro, 0500), 0);
        char in[200];
        snprintf(in, sizeof(in), "%s/queue", ro);
        buf_reset(&f->err);
        assert_int_equal(store_open(in, 1u << 20, 0, &s, &f->err), CH_EPERM);
        snprintf(want, sizeof(want), "%s: cannot create directory %s: Permission denied", in, in);
        assert_string_equal(err_text(f), want);
        chmod(ro, 0700);
    }
}

static void test_exclusive(void **state)
{
    struct fix *f = *state;
    struct store *s, *s2;
    assert_int_equal(store_open(f->path, 1u << 20, STORE_F_EXCLUSIVE, &s, &f->err), 0);
    assert_int_equal(store_open(f->path, 1u << 20, STORE_F_EXCLUSIVE, &s2, &f->err), CH_EEXIST);
    assert_null(s2);
    char want[600];
    snprintf(want, sizeof(want), "%s: in use by another chappe (pid %ld holds %s/chappe.lock)",
             f->path, (long)getpid(), f->path);
    assert_string_equal(err_text(f), want);
    store_close(s);
    /* Released with the store. */
    assert_int_equal(store_open(f->path, 1u << 20, STORE_F_EXCLUSIVE, &s, &f->err), 0);
    store_close(s);
}

static void test_err_translation(void **state)
{
    (void)state;
    assert_int_equal(store_err(0), 0);
    assert_int_equal(store_err(CH_EPROTO), CH_EPROTO);
    assert_int_equal(store_err(CH_ETIMEOUT), CH_ETIMEOUT);
    assert_int_equal(store_err(MDB_NOTFOUND), CH_ENOENT);
    assert_int_equal(store_err(MDB_KEYEXIST), CH_EEXIST);
    assert_int_equal(store_err(MDB_MAP_FULL), CH_ETOOBIG);
    assert_int_equal(store_err(MDB_TXN_FULL), CH_ETOOBIG);
    assert_int_equal(store_err(MDB_BAD_VALSIZE), CH_EINVAL);
    assert_int_equal(store_err(MDB_CORRUPTED), CH_EIO);
    assert_int_equal(store_err(MDB_PANIC), CH_EIO);
    assert_int_equal(store_err(ENOMEM), CH_ENOMEM);
    assert_int_equal(store_err(EIO), CH_EIO);
    assert_int_equal(store_err(ENOSPC), CH_EIO);
}

/* ------------------------------------------------------------------------------------------ */
/* Group commit.                                                                               */

#define PER_THREAD 50

struct submitter {
    struct store *s;
    struct lctx l;
    struct wreq w[PER_THREAD];
    char prefix;
    atomic_int *submitted;
    int failures; /* submissions refused, waits timed out, unclean loop end */
};

static void *submitter_main(void *arg)
{
    struct submitter *t = arg;
    if (lctx_init(&t->l) != 0) {
        t->failures++;
        atomic_fetch_add(t->submitted, 1);
        return NULL;
    }
    for (int i = 0; i < PER_THREAD; i++) {
        t->w[i].l = &t->l;
        snprintf(t->w[i].key, sizeof(t->w[i].key), "%c%02d", t->prefix, i);
        t->failures += store_submit(t->s, &t->l.port, put_fn, wreq_done, &t->w[i]) != 0;
    }
    atomic_fetch_add(t->submitted, 1);
    t->failures += !lctx_wait(&t->l, &t->l.ndone, PER_THREAD);
    t->failures += lctx_fini(&t->l) != 0;
    return NULL;
}

static void test_group_commit_two_loops(void **state)
{
    struct fix *f = *state;
    struct store *s;
    assert_int_equal(store_open(f->path, 16u << 20, 0, &s, &f->err), 0);
    struct lctx m;
    assert_int_equal(lctx_init(&m), 0);
    struct gate g = {0};
    gate_start(s, &m, &g);

    /* The writer is held inside the gate's batch: both loops' 100 writes pile up. */
    atomic_int submitted = 0;
    struct submitter *t = calloc(2, sizeof(*t));
    assert_non_null(t);
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        t[i].s = s;
        t[i].prefix = (char)('a' + i);
        t[i].submitted = &submitted;
        assert_int_equal(pthread_create(&th[i], NULL, submitter_main, &t[i]), 0);
    }
    for (int i = 0; i < WAIT_MS && atomic_load(&submitted) < 2; i++)
        sleep_ms(1);
    assert_int_equal(atomic_load(&submitted), 2);
    atomic_store(&g.open, 1);
    assert_true(lctx_wait(&m, &m.ndone, 1));
    assert_int_equal(g.done.rc, 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);

    /* One batch for the gate, one for the hundred. */
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.requests, 1 + 2 * PER_THREAD);
    assert_int_equal(st.batches, 2);
    assert_int_equal(st.max_batch, 2 * PER_THREAD);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.commit_errors, 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(t[i].failures, 0);
        for (int j = 0; j < PER_THREAD; j++) {
            assert_int_equal(t[i].w[j].ndone, 1);
            assert_int_equal(t[i].w[j].rc, 0);
            assert_false(t[i].w[j].off_thread);
            assert_int_equal(t[i].w[j].order, j); /* in submission order */
        }
    }
    /* The idle port does not keep the loop alive. */
    assert_int_equal(uv_loop_alive(&m.loop), 0);
    assert_int_equal(lctx_fini(&m), 0);
    store_close(s);

    assert_int_equal(store_open(f->path, 16u << 20, 0, &s, &f->err), 0);
    char out[16];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < PER_THREAD; j++)
            assert_string_equal(get_value(s, t[i].w[j].key, out, sizeof(out)), t[i].w[j].key);
    store_close(s);
    free(t);
}

/* queue.group_commit: false: the requests waiting together still get one commit each. */
static void test_group_commit_off(void **state)
{
    struct fix *f = *state;
    struct store *s;
    assert_int_equal(store_open(f->path, 16u << 20, 0, &s, &f->err), 0);
    store_set_group_commit(s, false);
    struct lctx m;
    assert_int_equal(lctx_init(&m), 0);
    struct gate g = {0};
    gate_start(s, &m, &g);
    struct wreq w[5];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 5; i++) {
        w[i].l = &m;
        snprintf(w[i].key, sizeof(w[i].key), "k%d", i);
        assert_int_equal(store_submit(s, &m.port, put_fn, wreq_done, &w[i]), 0);
    }
    atomic_store(&g.open, 1);
    assert_true(lctx_wait(&m, &m.ndone, 6));
    for (int i = 0; i < 5; i++) {
        assert_int_equal(w[i].rc, 0);
        assert_int_equal(w[i].order, i + 1);
    }
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.batches, 6); /* the gate, then each put alone */
    assert_int_equal(st.max_batch, 1);
    assert_int_equal(st.requests, 6);
    assert_int_equal(lctx_fini(&m), 0);
    char out[8];
    assert_string_equal(get_value(s, "k4", out, sizeof(out)), "k4");
    store_close(s);
}

/* put "r4-own", then a second put that collides with r0's key. */
static int collide_fn(MDB_txn *txn, struct store *s, void *ud)
{
    int rc = put_fn(txn, s, ud);
    if (rc != 0)
        return rc;
    MDB_val k = {2, "r0"}, v = {1, "x"};
    return mdb_put(txn, store_dbi(s, STORE_DB_QUEUE), &k, &v, MDB_NOOVERWRITE);
}

/* A put with an empty key (LMDB refuses it). */
static int empty_key_fn(MDB_txn *txn, struct store *s, void *ud)
{
    (void)ud;
    MDB_val k = {0, ""}, v = {1, "x"};
    return mdb_put(txn, store_dbi(s, STORE_DB_QUEUE), &k, &v, 0);
}

static void test_failing_request_isolated(void **state)
{
    struct fix *f = *state;
    struct store *s;
    assert_int_equal(store_open(f->path, 16u << 20, 0, &s, &f->err), 0);
    struct lctx m;
    assert_int_equal(lctx_init(&m), 0);
    struct gate g = {0};
    gate_start(s, &m, &g);

    struct wreq w[7];
    memset(w, 0, sizeof(w));
    store_write_fn fns[7] = {put_fn, put_fn, put_fn, empty_key_fn, collide_fn, put_fn, put_fn};
    int rets[7] = {0, CH_EINVAL, 0, 0, 0, EIO, 0};
    const char *keys[7] = {"r0", "r1", "r2", "r3", "r4-own", "r5", "r6"};
    int want[7] = {0, CH_EINVAL, 0, CH_EINVAL, CH_EEXIST, CH_EIO, 0};
    for (int i = 0; i < 7; i++) {
        w[i].l = &m;
        w[i].ret = rets[i];
        strcpy(w[i].key, keys[i]);
        assert_int_equal(store_submit(s, &m.port, fns[i], wreq_done, &w[i]), 0);
    }
    atomic_store(&g.open, 1);
    assert_true(lctx_wait(&m, &m.ndone, 8));
    for (int i = 0; i < 7; i++) {
        assert_int_equal(w[i].ndone, 1);
        assert_int_equal(w[i].rc, want[i]);
        assert_int_equal(w[i].order, i + 1);
    }
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.batches, 2);
    assert_int_equal(st.max_batch, 7);
    assert_int_equal(st.requests, 8);
    assert_int_equal(st.failed, 4);
    assert_int_equal(st.map_full, 0);
    assert_int_equal(st.commit_errors, 0);

    assert_true(has_key(s, "r0"));
    assert_false(has_key(s, "r1"));
    assert_true(has_key(s, "r2"));
    assert_false(has_key(s, "r4-own"));
    assert_false(has_key(s, "r5"));
    assert_true(has_key(s, "r6"));
    char out[8];
    assert_string_equal(get_value(s, "r0", out, sizeof(out)), "r0"); /* not collide_fn's "x" */
    assert_int_equal(lctx_fini(&m), 0);
    store_close(s);
}

/* A done that submits the next write until five have run: the port stays alive meanwhile. */
struct chain {
    struct store *s;
    struct lctx *l;
    struct wreq w[5];
    size_t n;
    int submit_errors;
};

static int chain_fn(MDB_txn *txn, struct store *s, void *ud)
{
    struct chain *c = ud;
    return put_fn(txn, s, &c->w[c->n]);
}

static void chain_done(void *ud, int rc)
{
    struct chain *c = ud;
    struct wreq *w = &c->w[c->n];
    wreq_done(w, rc);
    if (++c->n < ARRAY_LEN(c->w)) {
        c->w[c->n].l = c->l;
        snprintf(c->w[c->n].key, sizeof(c->w[c->n].key), "chain%zu", c->n);
        c->submit_errors += store_submit(c->s, &c->l->port, chain_fn, chain_done, c) != 0;
    }
}

static void test_chained_submissions(void **state)
{
    struct fix *f = *state;
    struct store *s;
    assert_int_equal(store_open(f->path, 16u << 20, 0, &s, &f->err), 0);
    struct lctx m;
    assert_int_equal(lctx_init(&m), 0);
    struct chain c = {.s = s, .l = &m};
    c.w[0].l = &m;
    strcpy(c.w[0].key, "chain0");
    assert_int_equal(store_submit(s, &m.port, chain_fn, chain_done, &c), 0);
    /* Plain uv_run: the port keeps the loop alive exactly while a write is in flight. The
     * watchdog is unref'd so that it bounds the run without prolonging it. */
    uv_timer_start(&m.timer, on_timeout, WAIT_MS, 0);
    uv_unref((uv_handle_t *)&m.timer);
    uv_run(&m.loop, UV_RUN_DEFAULT);
    assert_false(m.timed_out);
    assert_int_equal(c.n, 5);
    assert_int_equal(c.submit_errors, 0);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(c.w[i].rc, 0);
        assert_true(has_key(s, c.w[i].key));
    }
    assert_int_equal(lctx_fini(&m), 0);
    store_close(s);
}

/* ------------------------------------------------------------------------------------------ */
/* A full map.                                                                                 */

#define FILL_REQS  300
#define FILL_PUTS  3
#define FILL_VALUE 4000

static char big[FILL_VALUE];

/* Three values of 4000 bytes (a page each) under "<key>-0".."<key>-2": all or nothing. */
static int fill_fn(MDB_txn *txn, struct store *s, void *ud)
{
    struct wreq *w = ud;
    for (int i = 0; i < (w->puts ? w->puts : FILL_PUTS); i++) {
        char k[48];
        int n = snprintf(k, sizeof(k), "%s-%d", w->key, i);
        MDB_val kv = {(size_t)n, k}, v = {sizeof(big), big};
        int rc = mdb_put(txn, store_dbi(s, STORE_DB_QUEUE), &kv, &v, 0);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int fill_del_fn(MDB_txn *txn, struct store *s, void *ud)
{
    struct wreq *w = ud;
    for (int i = 0; i < FILL_PUTS; i++) {
        char k[48];
        int n = snprintf(k, sizeof(k), "%s-%d", w->key, i);
        MDB_val kv = {(size_t)n, k};
        int rc = mdb_del(txn, store_dbi(s, STORE_DB_QUEUE), &kv, NULL);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* How many of key's three values exist. */
static int fill_count(struct store *s, const char *key)
{
    int n = 0;
    for (int i = 0; i < FILL_PUTS; i++) {
        char k[48];
        snprintf(k, sizeof(k), "%s-%d", key, i);
        n += has_key(s, k);
    }
    return n;
}

/* Submit one write through l and wait for it; its rc. */
static int submit_wait(struct store *s, struct lctx *l, store_write_fn fn, struct wreq *w)
{
    w->l = l;
    size_t want = l->ndone + 1;
    assert_int_equal(store_submit(s, &l->port, fn, wreq_done, w), 0);
    assert_true(lctx_wait(l, &l->ndone, want));
    return w->rc;
}

/*
 * Submit FILL_REQS fill writes in one batch (behind a gate) and check that
 * each is whole or absent, its rc saying which. Returns how many fit.
 */
static int fill_batch(struct store *s, struct lctx *m, struct wreq *w, int puts, int *first_ok)
{
    struct gate g = {0};
    gate_start(s, m, &g);
    for (int i = 0; i < FILL_REQS; i++) {
        w[i].l = m;
        w[i].puts = puts;
        snprintf(w[i].key, sizeof(w[i].key), "fill%03d", i);
        assert_int_equal(store_submit(s, &m->port, fill_fn, wreq_done, &w[i]), 0);
    }
    atomic_store(&g.open, 1);
    assert_true(lctx_wait(m, &m->ndone, 1 + FILL_REQS));
    int ok = 0, full = 0;
    *first_ok = -1;
    for (int i = 0; i < FILL_REQS; i++) {
        assert_int_equal(w[i].ndone, 1);
        int n = fill_count(s, w[i].key);
        if (w[i].rc == 0) {
            assert_int_equal(n, puts);
            ok++;
            if (*first_ok < 0)
                *first_ok = i;
        } else {
            assert_int_equal(w[i].rc, CH_ETOOBIG);
            assert_int_equal(n, 0);
            full++;
        }
    }
    assert_true(ok > 0);
    assert_true(full > 0);
    struct store_stats st;
    store_get_stats(s, &st);
    assert_int_equal(st.map_full, full);
    assert_int_equal(st.failed, full);
    assert_int_equal(st.requests, 1 + FILL_REQS);
    return ok;
}

static void test_map_full(void **state)
{
    struct fix *f = *state;
    struct store *s;
    memset(big, 'v', sizeof(big));
    /* 1 MiB: 256 pages of 4 KiB, 192 usable by growing writes; each write takes three or more. */
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), 0);
    struct lctx m;
    assert_int_equal(lctx_init(&m), 0);
    struct wreq *w = calloc(FILL_REQS, sizeof(*w));
    assert_non_null(w);
    int first_ok;
    int ok = fill_batch(s, &m, w, FILL_PUTS, &first_ok);
    assert_true(ok >= 40 && ok < 64);
    struct store_usage u;
    assert_int_equal(store_usage(s, &u), 0);
    assert_true(u.used <= u.limit);
    assert_true(u.used + FILL_PUTS * 4096 > u.limit);

    /* Still full: one more write fails alone, cleanly. */
    struct wreq more = {0};
    strcpy(more.key, "more");
    assert_int_equal(submit_wait(s, &m, fill_fn, &more), CH_ETOOBIG);
    assert_int_equal(fill_count(s, "more"), 0);

    /* Deleting makes room again. */
    for (int i = 0, deleted = 0; i < FILL_REQS && deleted < 5; i++) {
        if (w[i].rc != 0)
            continue;
        struct wreq d = {0};
        strcpy(d.key, w[i].key);
        assert_int_equal(submit_wait(s, &m, fill_del_fn, &d), 0);
        assert_int_equal(fill_count(s, w[i].key), 0);
        deleted++;
    }
    memset(&more, 0, sizeof(more));
    strcpy(more.key, "more");
    assert_int_equal(submit_wait(s, &m, fill_fn, &more), 0);
    assert_int_equal(fill_count(s, "more"), FILL_PUTS);
    assert_int_equal(lctx_fini(&m), 0);
    store_close(s);

    /* The environment opens again, with everything where it was. */
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), 0);
    assert_int_equal(fill_count(s, "more"), FILL_PUTS);
    assert_int_equal(fill_count(s, w[first_ok].key), 0);
    int still = 0;
    for (int i = 0; i < FILL_REQS; i++)
        still += fill_count(s, w[i].key) == FILL_PUTS;
    assert_int_equal(still, ok - 5);
    MDB_txn *txn;
    MDB_stat ms;
    assert_int_equal(store_read_begin(s, &txn), 0);
    assert_int_equal(mdb_stat(txn, store_dbi(s, STORE_DB_QUEUE), &ms), 0);
    assert_int_equal(ms.ms_entries, (size_t)(still + 1) * FILL_PUTS);
    mdb_txn_abort(txn);
    store_close(s);
    free(w);
}

/*
 * Without the reserve, LMDB itself runs out of pages: the batch's children fit
 * but its commit does not, and each write is retried alone. Still whole or
 * absent, and the environment opens again.
 */
static void test_map_full_lmdb(void **state)
{
    struct fix *f = *state;
    struct store *s;
    memset(big, 'v', sizeof(big));
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), 0);
    s->limit_pages = s->map_pages;
    struct lctx m;
    assert_int_equal(lctx_init(&m), 0);
    struct wreq *w = calloc(FILL_REQS, sizeof(*w));
    assert_non_null(w);
    int first_ok;
    int ok = fill_batch(s, &m, w, 1, &first_ok);
    struct store_stats st;
    store_get_stats(s, &st);
    assert_true(st.commit_errors >= 1);
    assert_true(st.batches > 2); /* the gate's, the failed one, then one per write retried */
    assert_int_equal(lctx_fini(&m), 0);
    store_close(s);
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), 0);
    int still = 0;
    for (int i = 0; i < FILL_REQS; i++)
        still += fill_count(s, w[i].key) == 1;
    assert_int_equal(still, ok);
    store_close(s);
    free(w);
}

/*
 * Over the limit (as after reopening with a smaller map_size): writes that do
 * not grow the data still go through, growing ones fail, asynchronous or not.
 */
static void test_over_limit(void **state)
{
    struct fix *f = *state;
    struct store *s;
    memset(big, 'v', sizeof(big));
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), 0);
    struct lctx m;
    assert_int_equal(lctx_init(&m), 0);
    struct wreq w[4];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 4; i++) {
        snprintf(w[i].key, sizeof(w[i].key), "o%d", i);
        assert_int_equal(submit_wait(s, &m, fill_fn, &w[i]), 0);
    }
    s->limit_pages = 4; /* far below what is in use */
    assert_int_equal(submit_wait(s, &m, fill_del_fn, &w[0]), 0);
    assert_int_equal(store_write_now(s, fill_del_fn, &w[1]), 0);
    assert_int_equal(submit_wait(s, &m, fill_fn, &w[0]), CH_ETOOBIG);
    assert_int_equal(store_write_now(s, fill_fn, &w[1]), CH_ETOOBIG);
    assert_int_equal(fill_count(s, "o0"), 0);
    assert_int_equal(fill_count(s, "o1"), 0);
    assert_int_equal(fill_count(s, "o2"), FILL_PUTS);
    /* Rewriting a value in place does not grow the data either. */
    assert_int_equal(submit_wait(s, &m, fill_fn, &w[2]), 0);
    assert_int_equal(lctx_fini(&m), 0);
    store_close(s);
}

/* One value larger than the whole map: refused synchronously, nothing written. */
static int huge_fn(MDB_txn *txn, struct store *s, void *ud)
{
    (void)ud;
    size_t n = 2u << 20;
    MDB_val k = {4, "huge"}, v = {n, NULL};
    return mdb_put(txn, store_dbi(s, STORE_DB_QUEUE), &k, &v, MDB_RESERVE);
}

static void test_too_big_alone(void **state)
{
    struct fix *f = *state;
    struct store *s;
    assert_int_equal(store_open(f->path, 1u << 20, 0, &s, &f->err), 0);
    assert_int_equal(store_write_now(s, huge_fn, NULL), CH_ETOOBIG);
    assert_false(has_key(s, "huge"));
    struct kv kv = {STORE_DB_QUEUE, "small", "1", 1, 0};
    assert_int_equal(store_write_now(s, kv_fn, &kv), 0);
    assert_true(has_key(s, "small"));
    store_close(s);
}

/* ------------------------------------------------------------------------------------------ */
/* Closing with writes in flight.                                                              */

static void test_close_with_pending(void **state)
{
    struct fix *f = *state;
    struct store *s;
    assert_int_equal(store_open(f->path, 16u << 20, 0, &s, &f->err), 0);
    struct lctx m;
    assert_int_equal(lctx_init(&m), 0);
    struct gate g = {.wait_stopping = true};
    gate_start(s, &m, &g);
    struct wreq w[20];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 20; i++) {
        w[i].l = &m;
        snprintf(w[i].key, sizeof(w[i].key), "p%02d", i);
        assert_int_equal(store_submit(s, &m.port, put_fn, wreq_done, &w[i]), 0);
    }
    /* The gate sees the store closing, tries a submission (refused), and lets the batch end;
     * store_close then runs the 20 waiting writes before it returns. */
    store_close(s);
    assert_int_equal(g.submit_rc, CH_EAGAIN);
    assert_true(lctx_wait(&m, &m.ndone, 21));
    assert_int_equal(g.done.rc, 0);
    assert_int_equal(g.done.ndone, 1);
    assert_int_equal(g.late.ndone, 0);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(w[i].ndone, 1);
        assert_int_equal(w[i].rc, 0);
    }
    assert_int_equal(lctx_fini(&m), 0);

    assert_int_equal(store_open(f->path, 16u << 20, 0, &s, &f->err), 0);
    for (int i = 0; i < 20; i++)
        assert_true(has_key(s, w[i].key));
    store_close(s);
}

static void test_port_close_in_flight(void **state)
{
    struct fix *f = *state;
    struct store *s;
    assert_int_equal(store_open(f->path, 16u << 20, 0, &s, &f->err), 0);
    struct lctx m;
    assert_int_equal(lctx_init(&m), 0);
    struct gate g = {0};
    gate_start(s, &m, &g);
    struct wreq w[5];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 5; i++) {
        w[i].l = &m;
        snprintf(w[i].key, sizeof(w[i].key), "c%d", i);
        assert_int_equal(store_submit(s, &m.port, put_fn, wreq_done, &w[i]), 0);
    }
    store_port_close(&m.port, on_port_closed);
    struct wreq late = {.l = &m};
    assert_int_equal(store_submit(s, &m.port, put_fn, wreq_done, &late), CH_EINVAL);
    atomic_store(&g.open, 1);
    /* Every write in flight is still delivered, then the port closes. */
    uv_timer_start(&m.timer, on_timeout, WAIT_MS, 0);
    while (!m.closed && !m.timed_out)
        uv_run(&m.loop, UV_RUN_ONCE);
    assert_true(m.closed);
    assert_int_equal(m.at_close, 6);
    for (int i = 0; i < 5; i++)
        assert_int_equal(w[i].rc, 0);
    assert_int_equal(late.ndone, 0);
    assert_int_equal(lctx_fini(&m), 0);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exclusive, setup, teardown),
        cmocka_unit_test(test_err_translation),
        cmocka_unit_test_setup_teardown(test_group_commit_two_loops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_request_isolated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chained_submissions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full_lmdb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_over_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_big_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_port_close_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_off, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
