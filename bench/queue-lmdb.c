/* queue-lmdb.c -- LMDB's durable write rate on this disk, the ceiling under chappe's queue:
 * records of SIZE bytes, one commit every BATCH records, for MS milliseconds. */
/* SPDX-License-Identifier: ISC */
/*
 * Usage: queue-lmdb DIR SIZE BATCH MS [LAYOUT]
 *   LAYOUT plain (default): one database, 8-byte increasing keys (appends).
 *          queue: what src/queue.c writes for one transaction, without the dedupe index: the
 *          entry under "destination\0seq" (32 destinations in turn), the destination's
 *          69-byte record rewritten, the two meta counters; each record in a nested
 *          transaction, as the store's writer runs each request.
 *          index: queue, plus a 32-byte digest-like (uniformly spread) key with an 8-byte
 *          value in a fourth database, as the `txns` dedupe index.
 * Prints "lmdb LAYOUT batch B records R commits C seconds S records_per_s X commits_per_s Y
 * written_per_record W" (W: bytes written by write calls, from /proc/self/io, per record).
 * DIR must exist and be empty (a fresh environment); the environment is opened as chappe's
 * store opens its own: no MDB_NOSYNC, no MDB_NOMETASYNC, no MDB_WRITEMAP, so that every commit
 * returns only once it is on disk (fdatasync).
 *
 * Usage: queue-lmdb txnid DIR
 * Prints the id of the last committed write transaction of the environment in DIR (chappe's
 * store, even while chappe runs: read-only, LMDB's lock file shared): two readings give the
 * number of durable commits between them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lmdb.h>

#define NDEST 32

enum layout { PLAIN, QUEUE, INDEX };

struct bench {
    MDB_env *env;
    MDB_dbi main, queue, dest, meta, txns;
    enum layout layout;
    char *val;
    size_t size;
    uint64_t seq[NDEST];
    uint64_t records, rng;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "queue-lmdb: %s: %s\n", what, mdb_strerror(rc));
    return 1;
}

/* Bytes this process wrote with write calls so far (0 if /proc/self/io is missing). */
static uint64_t written(void)
{
    char line[128];
    unsigned long long v = 0;
    FILE *f = fopen("/proc/self/io", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "wchar: %llu", &v) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return v;
}

static void be64(unsigned char *p, uint64_t n)
{
    for (int b = 7; b >= 0; b--, n >>= 8)
        p[b] = (unsigned char)n;
}

/* splitmix64: spread keys, like the BLAKE2b digests of the txns index */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int put_plain(struct bench *b, MDB_txn *txn)
{
    unsigned char k[8];
    be64(k, b->records);
    MDB_val key = {sizeof(k), k}, data = {b->size, b->val};
    return mdb_put(txn, b->main, &key, &data, MDB_APPEND);
}

/* One transaction as src/queue.c stores it (see the layout there). */
static int put_queue(struct bench *b, MDB_txn *parent)
{
    MDB_txn *txn;
    unsigned d = (unsigned)(b->records % NDEST);
    char name[32];
    unsigned char k[64], rec[69] = {1}, counter[8];
    int n = snprintf(name, sizeof(name), "localhost:%u", 40000 + d);
    int rc = mdb_txn_begin(b->env, parent, 0, &txn);
    if (rc != 0)
        return rc;
    memcpy(k, name, (size_t)n + 1);
    be64(k + n + 1, b->seq[d]++);
    MDB_val key = {(size_t)n + 9, k}, data = {b->size, b->val};
    rc = mdb_put(txn, b->queue, &key, &data, MDB_NOOVERWRITE);
    if (rc == 0) {
        MDB_val dk = {(size_t)n, name}, dv = {sizeof(rec), rec};
        memcpy(rec + 1, &b->seq[d], 8);
        rc = mdb_put(txn, b->dest, &dk, &dv, 0);
    }
    for (int i = 0; rc == 0 && i < 2; i++) {
        MDB_val mk = {11, i ? "queue_count" : "queue_bytes"}, mv = {8, counter};
        be64(counter, b->records);
        rc = mdb_put(txn, b->meta, &mk, &mv, 0);
    }
    if (rc == 0 && b->layout == INDEX) {
        uint64_t digest[4];
        for (int i = 0; i < 4; i++)
            digest[i] = next_rand(&b->rng);
        MDB_val ik = {sizeof(digest), digest}, iv = {8, counter};
        rc = mdb_put(txn, b->txns, &ik, &iv, 0);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

static int open_dbs(struct bench *b)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(b->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    if ((rc = mdb_dbi_open(txn, b->layout == PLAIN ? NULL : "main", MDB_CREATE, &b->main)) ||
        (b->layout != PLAIN && ((rc = mdb_dbi_open(txn, "queue", MDB_CREATE, &b->queue)) ||
                                (rc = mdb_dbi_open(txn, "dest", MDB_CREATE, &b->dest)) ||
                                (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &b->meta)) ||
                                (rc = mdb_dbi_open(txn, "txns", MDB_CREATE, &b->txns))))) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

static int last_txnid(const char *dir)
{
    MDB_env *env;
    MDB_envinfo info;
    int rc = mdb_env_create(&env);
    if (rc != 0)
        return fail("mdb_env_create", rc);
    if ((rc = mdb_env_open(env, dir, MDB_RDONLY, 0600)) != 0)
        return fail(dir, rc);
    if ((rc = mdb_env_info(env, &info)) != 0)
        return fail("mdb_env_info", rc);
    printf("%zu\n", info.me_last_txnid);
    mdb_env_close(env);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "txnid") == 0)
        return last_txnid(argv[2]);
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: queue-lmdb DIR SIZE BATCH MS [plain|queue|index]\n"
                        "       queue-lmdb txnid DIR\n");
        return 2;
    }
    struct bench b = {.size = strtoul(argv[2], NULL, 10), .rng = 1};
    unsigned long batch = strtoul(argv[3], NULL, 10);
    double secs = strtod(argv[4], NULL) / 1000.0;
    const char *lname = argc == 6 ? argv[5] : "plain";
    b.layout = strcmp(lname, "queue") == 0 ? QUEUE : strcmp(lname, "index") == 0 ? INDEX : PLAIN;
    if (b.size == 0 || b.size > 65536 || batch == 0 || secs <= 0 ||
        (b.layout == PLAIN && strcmp(lname, "plain") != 0)) {
        fprintf(stderr, "queue-lmdb: bad SIZE, BATCH, MS or LAYOUT\n");
        return 2;
    }
    if ((b.val = malloc(b.size)) == NULL)
        return 1;
    memset(b.val, 'x', b.size);

    MDB_txn *txn;
    int rc = mdb_env_create(&b.env);
    if (rc != 0)
        return fail("mdb_env_create", rc);
    mdb_env_set_mapsize(b.env, (size_t)16 << 30);
    mdb_env_set_maxdbs(b.env, 8);
    if ((rc = mdb_env_open(b.env, argv[1], 0, 0600)) != 0)
        return fail(argv[1], rc);
    if ((rc = open_dbs(&b)) != 0)
        return fail("open the databases", rc);

    uint64_t commits = 0, w0 = written();
    double t0 = now_s(), t;
    do {
        if ((rc = mdb_txn_begin(b.env, NULL, 0, &txn)) != 0)
            return fail("mdb_txn_begin", rc);
        for (unsigned long i = 0; i < batch; i++, b.records++)
            if ((rc = b.layout == PLAIN ? put_plain(&b, txn) : put_queue(&b, txn)) != 0)
                return fail("mdb_put", rc);
        if ((rc = mdb_txn_commit(txn)) != 0)
            return fail("mdb_txn_commit", rc);
        commits++;
    } while ((t = now_s() - t0) < secs);
    uint64_t w = written() - w0;

    printf("lmdb %s batch %lu records %llu commits %llu seconds %.3f records_per_s %.0f "
           "commits_per_s %.0f written_per_record %.0f\n",
           lname, batch, (unsigned long long)b.records, (unsigned long long)commits, t,
           (double)b.records / t, (double)commits / t, (double)w / (double)b.records);
    mdb_env_close(b.env);
    free(b.val);
    return 0;
}
