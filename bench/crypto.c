/* crypto.c -- X-Matrix request verification: chappe's whole path against raw libsodium ed25519. */
/* SPDX-License-Identifier: ISC */
/*
 * Usage: crypto [ROUNDS [ROUND_MS]]        (bench/crypto.sh builds and runs it; see README.md)
 *
 * One request, the same bytes for every variant: PUT /_matrix/federation/v1/send/bench-1 with
 * the ~1 KiB transaction of bench/send.lua (one m.room.message PDU, one m.typing EDU), signed
 * in the setup with libsodium over the canonical request object (Matrix server-server API,
 * "Request Authentication"). The canonical bytes are a literal made by python3-canonicaljson,
 * so chappe's encoder is checked against an independent implementation before anything is
 * timed. Variants, interleaved round by round (the order rotates), each round bounded in time:
 *
 *   raw      crypto_sign_verify_detached over the precomputed canonical bytes: the limit
 *   xmatrix  chappe's path: xmatrix_parse, cjson_parse of the body, xmatrix_request_object,
 *            cjson_encode, b64_decode of the signature, crypto_sign_verify_detached
 *   signed   the same through sign_verify_json, the request object carrying "signatures" as
 *            Synapse builds it (signatures.<origin>.<key id> = the header's sig)
 *   canon    cjson_canonicalize of the body (parse + encode)
 *   parse    cjson_parse of the body (and json_decref)
 *   encode   cjson_encode of the already parsed body
 *   object   xmatrix_request_object around the already parsed body (and json_decref)
 *   header   xmatrix_parse of the Authorization value and b64_decode of its sig
 *
 * The exit status is 0 unless a correctness check fails; the rates are never a pass/fail test.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "chappe/b64.h"
#include "chappe/buf.h"
#include "chappe/cjson.h"
#include "chappe/sign.h"
#include "chappe/util.h"
#include "chappe/xmatrix.h"

#define METHOD      "PUT"
#define URI         "/_matrix/federation/v1/send/bench-1"
#define ORIGIN      "a.example.org"
#define DESTINATION "localhost"
#define KEY_ID      "ed25519:a_abc"
/* A fixed seed: the same key, signature and header on every run. */
#define SEED "chappe bench/crypto.c fixed seed"

#define MAX_ROUNDS   20
#define MAX_ROUND_MS 5000
#define WARMUP_MS    100
#define BATCH        8 /* operations between two clock reads */
#define CPU_RATE     offsetof(struct round, cpu_rate)
#define WALL_RATE    offsetof(struct round, wall_rate)

/* The body as bench/send.lua sends it: object keys not in canonical order. */
static const char BODY[] =
    "{\"origin\":\"a.example.org\",\"origin_server_ts\":1732620001300,\"pdus\":[{\"auth_event"
    "s\":[\"$Vg1-RWvyZpP_EI5DHBG64p-KamURb_ItXJ2SI9Cn-0o\",\"$TyQwp64mf9TzftPyC4xnfFne4oTUXRs"
    "GJ1HEIcnV5B4\",\"$jxRzYqCPiUaQIYiqfiTd0oOcPYXixJVqwT8c-YQs25I\"],\"content\":{\"body\":"
    "\"Bonjour à tous, la réunion de coordination interministérielle est déplacée à 15 "
    "h, salle Gambetta. Merci de confirmer.\",\"msgtype\":\"m.text\"},\"depth\":4821,\"hashes"
    "\":{\"sha256\":\"MBY5NcAC/E4SAJBsPTCpxJVrSvn23K7x60sfy4+6aec\"},\"origin\":\"a.example.o"
    "rg\",\"origin_server_ts\":1732620001234,\"prev_events\":[\"$kphyg4y5z-ZXjhHwoyNDiu5a5_Yd"
    "QUEtYttysl2sUgE\"],\"room_id\":\"!QtykxKocfZaZOUrTwp:a.example.org\",\"sender\":\"@alice"
    ".martin:a.example.org\",\"signatures\":{\"a.example.org\":{\"ed25519:a_abc\":\"AHPsJm1Pt"
    "K2/PRBKpxT58RAy/Yq22IKfxAtSyG9khdeSjMLr1GRvP+PzdL4R2QW/S+J1+obziJ2CqffcXkHdMg\"}},\"type"
    "\":\"m.room.message\",\"unsigned\":{\"age_ts\":1732620001234}}],\"edus\":[{\"edu_type\":"
    "\"m.typing\",\"content\":{\"room_id\":\"!QtykxKocfZaZOUrTwp:a.example.org\",\"user_id\":"
    "\"@alice.martin:a.example.org\",\"typing\":false}}]}";

static const char REQUEST_CANONICAL[] =
    "{\"content\":{\"edus\":[{\"content\":{\"room_id\":\"!QtykxKocfZaZOUrTwp:a.example.org\","
    "\"typing\":false,\"user_id\":\"@alice.martin:a.example.org\"},\"edu_type\":\"m.typing\"}"
    "],\"origin\":\"a.example.org\",\"origin_server_ts\":1732620001300,\"pdus\":[{\"auth_even"
    "ts\":[\"$Vg1-RWvyZpP_EI5DHBG64p-KamURb_ItXJ2SI9Cn-0o\",\"$TyQwp64mf9TzftPyC4xnfFne4oTUXR"
    "sGJ1HEIcnV5B4\",\"$jxRzYqCPiUaQIYiqfiTd0oOcPYXixJVqwT8c-YQs25I\"],\"content\":{\"body\":"
    "\"Bonjour à tous, la réunion de coordination interministérielle est déplacée à 15 "
    "h, salle Gambetta. Merci de confirmer.\",\"msgtype\":\"m.text\"},\"depth\":4821,\"hashes"
    "\":{\"sha256\":\"MBY5NcAC/E4SAJBsPTCpxJVrSvn23K7x60sfy4+6aec\"},\"origin\":\"a.example.o"
    "rg\",\"origin_server_ts\":1732620001234,\"prev_events\":[\"$kphyg4y5z-ZXjhHwoyNDiu5a5_Yd"
    "QUEtYttysl2sUgE\"],\"room_id\":\"!QtykxKocfZaZOUrTwp:a.example.org\",\"sender\":\"@alice"
    ".martin:a.example.org\",\"signatures\":{\"a.example.org\":{\"ed25519:a_abc\":\"AHPsJm1Pt"
    "K2/PRBKpxT58RAy/Yq22IKfxAtSyG9khdeSjMLr1GRvP+PzdL4R2QW/S+J1+obziJ2CqffcXkHdMg\"}},\"type"
    "\":\"m.room.message\",\"unsigned\":{\"age_ts\":1732620001234}}]},\"destination\":\"local"
    "host\",\"method\":\"PUT\",\"origin\":\"a.example.org\",\"uri\":\"/_matrix/federation/v1/"
    "send/bench-1\"}";

/* One request as it arrives: what the verifying side sees. */
struct request {
    const char *body;
    size_t body_len;
    const char *auth; /* Authorization field value */
    size_t auth_len;
};

/* Everything a variant needs, set up once; buffers are reused across operations. */
struct bench {
    struct request req;
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    unsigned char sig[crypto_sign_BYTES];
    char auth[512];
    json_t *body_json; /* parsed once: the checks, the encode and object variants */
    struct buf canon;
    struct buf body_canon; /* the body as Synapse sends it: canonical */
    struct buf sigbuf;
    struct buf err;
};

/* One timed round of one variant. */
struct round {
    double cpu_rate;  /* operations per second of this thread's CPU time */
    double wall_rate; /* operations per second of wall-clock time */
    double share;     /* CPU time / wall time: below 1, something else had the CPU */
    double bg;        /* share of all CPUs busy with something other than this thread */
};

struct variant {
    const char *name;
    const char *what;
    int (*run)(struct bench *b);
    struct round res[MAX_ROUNDS];
};

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int run_raw(struct bench *b)
{
    return crypto_sign_verify_detached(b->sig, (const unsigned char *)REQUEST_CANONICAL,
                                       sizeof(REQUEST_CANONICAL) - 1, b->pk) == 0
               ? 0
               : CH_EPERM;
}

/*
 * Verify one request the way chappe's inbound path does: header, body, request object,
 * canonical bytes, signature. The key lookup is a comparison with the one known key id.
 */
static int verify_request(struct bench *b, const struct request *r)
{
    struct xmatrix xm;
    const char *why;
    json_t *body = NULL, *obj = NULL;
    int rc;

    rc = xmatrix_parse(r->auth, r->auth_len, &xm, &why);
    if (rc != 0)
        return rc;
    if (strcmp(xm.key, KEY_ID) != 0 || strcmp(xm.origin, ORIGIN) != 0)
        return CH_ENOENT;
    if (xm.has_destination && strcmp(xm.destination, DESTINATION) != 0)
        return CH_EPERM;
    buf_reset(&b->err);
    rc = cjson_parse(r->body, r->body_len, &body, &b->err);
    if (rc != 0)
        return rc;
    obj = xmatrix_request_object(METHOD, URI, xm.origin, DESTINATION, body);
    if (obj == NULL) {
        rc = CH_ENOMEM;
        goto out_body;
    }
    buf_reset(&b->canon);
    rc = cjson_encode(obj, &b->canon, &b->err);
    if (rc != 0)
        goto out_obj;
    buf_reset(&b->sigbuf);
    rc = b64_decode(&b->sigbuf, xm.sig, strlen(xm.sig));
    if (rc != 0)
        goto out_obj;
    if (b->sigbuf.len != crypto_sign_BYTES) {
        rc = CH_EINVAL;
        goto out_obj;
    }
    if (crypto_sign_verify_detached((const unsigned char *)buf_data(&b->sigbuf),
                                    (const unsigned char *)buf_data(&b->canon), b->canon.len,
                                    b->pk) != 0)
        rc = CH_EPERM;
out_obj:
    json_decref(obj);
out_body:
    json_decref(body);
    return rc;
}

/* The same through sign_verify_json, with signatures.<origin>.<key> set as Synapse does. */
static int verify_request_signed(struct bench *b, const struct request *r)
{
    struct xmatrix xm;
    const char *why;
    json_t *body = NULL, *obj = NULL, *sigs;
    int rc;

    rc = xmatrix_parse(r->auth, r->auth_len, &xm, &why);
    if (rc != 0)
        return rc;
    if (strcmp(xm.key, KEY_ID) != 0 || strcmp(xm.origin, ORIGIN) != 0)
        return CH_ENOENT;
    if (xm.has_destination && strcmp(xm.destination, DESTINATION) != 0)
        return CH_EPERM;
    buf_reset(&b->err);
    rc = cjson_parse(r->body, r->body_len, &body, &b->err);
    if (rc != 0)
        return rc;
    obj = xmatrix_request_object(METHOD, URI, xm.origin, DESTINATION, body);
    if (obj == NULL) {
        rc = CH_ENOMEM;
        goto out_body;
    }
    sigs = json_pack("{s:{s:s}}", xm.origin, xm.key, xm.sig);
    if (sigs == NULL || json_object_set_new(obj, "signatures", sigs) != 0) {
        rc = CH_ENOMEM;
        goto out_obj;
    }
    rc = sign_verify_json(obj, xm.origin, xm.key, b->pk, &b->err);
out_obj:
    json_decref(obj);
out_body:
    json_decref(body);
    return rc;
}

static int run_xmatrix(struct bench *b)
{
    return verify_request(b, &b->req);
}

static int run_signed(struct bench *b)
{
    return verify_request_signed(b, &b->req);
}

/* What inbound verification uses: sign_verify_request_body on the body as Synapse sends it. */
static int run_fast(struct bench *b)
{
    struct xmatrix x;
    const char *why = NULL;
    if (xmatrix_parse(b->req.auth, b->req.auth_len, &x, &why) != 0)
        return -1;
    buf_reset(&b->err);
    return sign_verify_request_body(&x, METHOD, URI, DESTINATION, buf_data(&b->body_canon),
                                    b->body_canon.len, b->pk, &b->err);
}

/* The same with the non-canonical body: the parse + encode fallback. */
static int run_slow(struct bench *b)
{
    struct xmatrix x;
    const char *why = NULL;
    if (xmatrix_parse(b->req.auth, b->req.auth_len, &x, &why) != 0)
        return -1;
    buf_reset(&b->err);
    return sign_verify_request_body(&x, METHOD, URI, DESTINATION, b->req.body, b->req.body_len,
                                    b->pk, &b->err);
}

static int run_canon(struct bench *b)
{
    buf_reset(&b->canon);
    buf_reset(&b->err);
    return cjson_canonicalize(b->req.body, b->req.body_len, &b->canon, &b->err);
}

static int run_parse(struct bench *b)
{
    json_t *v;
    int rc;

    buf_reset(&b->err);
    rc = cjson_parse(b->req.body, b->req.body_len, &v, &b->err);
    if (rc == 0)
        json_decref(v);
    return rc;
}

static int run_header(struct bench *b)
{
    struct xmatrix xm;
    const char *why;
    int rc;

    rc = xmatrix_parse(b->req.auth, b->req.auth_len, &xm, &why);
    if (rc != 0)
        return rc;
    buf_reset(&b->sigbuf);
    return b64_decode(&b->sigbuf, xm.sig, strlen(xm.sig));
}

static int run_object(struct bench *b)
{
    json_t *obj = xmatrix_request_object(METHOD, URI, ORIGIN, DESTINATION, b->body_json);

    if (obj == NULL)
        return CH_ENOMEM;
    json_decref(obj);
    return 0;
}

static int run_encode(struct bench *b)
{
    buf_reset(&b->canon);
    buf_reset(&b->err);
    return cjson_encode(b->body_json, &b->canon, &b->err);
}

/* Busy and total jiffies of all CPUs (first line of /proc/stat); 0 when unreadable. */
static void cpu_jiffies(unsigned long long *busy, unsigned long long *total)
{
    unsigned long long f[8] = {0};
    FILE *fp = fopen("/proc/stat", "r");

    *busy = *total = 0;
    if (fp == NULL)
        return;
    if (fscanf(fp, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &f[0], &f[1], &f[2], &f[3], &f[4],
               &f[5], &f[6], &f[7]) == 8) {
        for (int i = 0; i < 8; i++)
            *total += f[i];
        *busy = *total - f[3] - f[4]; /* minus idle and iowait */
    }
    fclose(fp);
}

/* Run v for about ms milliseconds of wall-clock time. */
static int run_round(struct bench *b, const struct variant *v, unsigned ms, struct round *res)
{
    unsigned long long busy0, total0, busy1, total1;
    uint64_t t0, c0;

    cpu_jiffies(&busy0, &total0);
    t0 = now_ns(CLOCK_MONOTONIC);
    c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    uint64_t end = t0 + (uint64_t)ms * 1000000u, t, c, n = 0;

    do {
        for (int i = 0; i < BATCH; i++) {
            int rc = v->run(b);
            if (rc != 0) {
                fprintf(stderr, "crypto: %s failed while timed: %s %.*s\n", v->name,
                        util_strerror(rc), (int)b->err.len, buf_data(&b->err));
                return rc;
            }
        }
        n += BATCH;
        t = now_ns(CLOCK_MONOTONIC);
    } while (t < end);
    c = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
    res->cpu_rate = (double)n * 1e9 / (double)(c ? c : 1);
    res->wall_rate = (double)n * 1e9 / (double)(t - t0);
    res->share = (double)c / (double)(t - t0);
    cpu_jiffies(&busy1, &total1);
    /* all CPUs' busy share, minus this thread's part of it (one CPU of util_ncpu()) */
    res->bg = total1 > total0
                  ? (double)(busy1 - busy0) / (double)(total1 - total0) - res->share / util_ncpu()
                  : 0;
    res->bg = res->bg < 0 ? 0 : res->bg;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median of one field of the rounds (offset: offsetof(struct round, field)). */
static double median(const struct round *res, unsigned n, size_t offset)
{
    double s[MAX_ROUNDS];

    for (unsigned i = 0; i < n; i++)
        memcpy(&s[i], (const char *)&res[i] + offset, sizeof(double));
    qsort(s, n, sizeof(*s), cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Median over the rounds of v's rate divided by base's in the same round. */
static double median_ratio(const struct variant *v, const struct variant *base, unsigned n)
{
    struct round r[MAX_ROUNDS];

    for (unsigned i = 0; i < n; i++)
        r[i].cpu_rate = v->res[i].cpu_rate / base->res[i].cpu_rate;
    return median(r, n, CPU_RATE);
}

static double min_share(const struct round *res, unsigned n)
{
    double m = res[0].share;

    for (unsigned i = 1; i < n; i++)
        m = res[i].share < m ? res[i].share : m;
    return m;
}

static double max_bg(const struct round *res, unsigned n)
{
    double m = res[0].bg;

    for (unsigned i = 1; i < n; i++)
        m = res[i].bg > m ? res[i].bg : m;
    return m;
}

/* "12345.6" -> "12,346": thousands separators without depending on the locale. */
static const char *fmt_rate(double r, char *out, size_t cap)
{
    char digits[32];
    size_t n, o = 0;

    n = (size_t)snprintf(digits, sizeof(digits), "%.0f", r);
    for (size_t i = 0; i < n && o + 2 < cap; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = '\0';
    return out;
}

/* Before timing anything: every path accepts the good request and refuses altered ones. */
static int check(struct bench *b)
{
    char bad_auth[sizeof(b->auth)], *bad_body = NULL, *p;
    struct request r;
    json_t *obj = NULL;
    int rc = -1;

    if (run_raw(b) != 0) {
        fprintf(stderr, "crypto: libsodium rejects its own signature\n");
        return -1;
    }
    /* chappe's request object, canonical, against python3-canonicaljson's bytes */
    obj = xmatrix_request_object(METHOD, URI, ORIGIN, DESTINATION, b->body_json);
    buf_reset(&b->canon);
    if (obj == NULL || cjson_encode(obj, &b->canon, &b->err) != 0) {
        fprintf(stderr, "crypto: cannot encode the request object: %.*s\n", (int)b->err.len,
                buf_data(&b->err));
        goto out;
    }
    if (b->canon.len != sizeof(REQUEST_CANONICAL) - 1 ||
        memcmp(buf_data(&b->canon), REQUEST_CANONICAL, b->canon.len) != 0) {
        size_t i = 0;
        while (i < b->canon.len && i < sizeof(REQUEST_CANONICAL) - 1 &&
               buf_data(&b->canon)[i] == REQUEST_CANONICAL[i])
            i++;
        fprintf(stderr,
                "crypto: canonical request object differs from python3-canonicaljson at byte "
                "%zu:\n  chappe: %.40s\n  python: %.40s\n",
                i, buf_data(&b->canon) + i, REQUEST_CANONICAL + i);
        goto out;
    }
    if ((rc = verify_request(b, &b->req)) != 0 || (rc = verify_request_signed(b, &b->req)) != 0) {
        fprintf(stderr, "crypto: chappe rejects a valid request: %s %.*s\n", util_strerror(rc),
                (int)b->err.len, buf_data(&b->err));
        rc = -1;
        goto out;
    }
    rc = -1;
    /* one signature character changed */
    memcpy(bad_auth, b->auth, sizeof(bad_auth));
    p = strstr(bad_auth, "sig=\"") + 5;
    *p = *p == 'A' ? 'B' : 'A';
    r = (struct request){b->req.body, b->req.body_len, bad_auth, b->req.auth_len};
    if (verify_request(b, &r) == 0 || verify_request_signed(b, &r) == 0) {
        fprintf(stderr, "crypto: a request with an altered signature verifies\n");
        goto out;
    }
    /* one body byte changed ("depth":4821 -> 4822) */
    bad_body = malloc(b->req.body_len);
    if (bad_body == NULL)
        goto out;
    memcpy(bad_body, b->req.body, b->req.body_len);
    p = memmem(bad_body, b->req.body_len, "4821", 4);
    p[3] = '2';
    r = (struct request){bad_body, b->req.body_len, b->req.auth, b->req.auth_len};
    if (verify_request(b, &r) == 0 || verify_request_signed(b, &r) == 0) {
        fprintf(stderr, "crypto: a request with an altered body verifies\n");
        goto out;
    }
    rc = 0;
out:
    free(bad_body);
    json_decref(obj);
    return rc;
}

static int parse_arg(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = (unsigned)v;
    return 0;
}

int main(int argc, char **argv)
{
    static struct variant vs[] = {
        {"raw", "libsodium crypto_sign_verify_detached", run_raw},
        {"xmatrix", "chappe X-Matrix path (xmatrix + cjson + b64)", run_xmatrix},
        {"signed", "chappe X-Matrix path via sign_verify_json", run_signed},
        {"canon", "body: cjson_canonicalize (parse+encode)", run_canon},
        {"parse", "body: cjson_parse only", run_parse},
        {"encode", "body: cjson_encode only", run_encode},
        {"object", "xmatrix_request_object (parsed body)", run_object},
        {"header", "Authorization: xmatrix_parse + b64_decode", run_header},
        {"fast", "sign_verify_request_body, canonical body", run_fast},
        {"slow", "sign_verify_request_body, non-canonical body", run_slow},
    };
    const unsigned nv = ARRAY_LEN(vs);
    unsigned rounds = 5, round_ms = 600;
    unsigned char seed[crypto_sign_SEEDBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char sig_b64[sodium_base64_ENCODED_LEN(crypto_sign_BYTES,
                                           sodium_base64_VARIANT_ORIGINAL_NO_PADDING)];
    struct bench b = {.canon = BUF_INIT, .body_canon = BUF_INIT, .sigbuf = BUF_INIT,
                      .err = BUF_INIT};
    struct round warm;
    double raw, xm, sj, rx, rs;
    char s1[32], s2[32];
    int rc = 1;

    if ((argc > 1 && parse_arg(argv[1], 1, MAX_ROUNDS, &rounds) != 0) ||
        (argc > 2 && parse_arg(argv[2], 10, MAX_ROUND_MS, &round_ms) != 0) || argc > 3) {
        fprintf(stderr, "usage: %s [ROUNDS 1-%d [ROUND_MS 10-%d]]\n", argv[0], MAX_ROUNDS,
                MAX_ROUND_MS);
        return 2;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "crypto: sodium_init failed\n");
        return 1;
    }

    /* setup: a fixed key, the signature over the canonical bytes, the header Synapse sends */
    memcpy(seed, SEED, sizeof(seed));
    crypto_sign_seed_keypair(b.pk, sk, seed);
    crypto_sign_detached(b.sig, NULL, (const unsigned char *)REQUEST_CANONICAL,
                         sizeof(REQUEST_CANONICAL) - 1, sk);
    sodium_memzero(sk, sizeof(sk));
    sodium_bin2base64(sig_b64, sizeof(sig_b64), b.sig, sizeof(b.sig),
                      sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
    snprintf(b.auth, sizeof(b.auth),
             "X-Matrix origin=\"%s\",destination=\"%s\",key=\"%s\",sig=\"%s\"", ORIGIN, DESTINATION,
             KEY_ID, sig_b64);
    b.req = (struct request){BODY, sizeof(BODY) - 1, b.auth, strlen(b.auth)};
    if (cjson_parse(BODY, sizeof(BODY) - 1, &b.body_json, &b.err) != 0) {
        fprintf(stderr, "crypto: cannot parse the body: %.*s\n", (int)b.err.len, buf_data(&b.err));
        goto out;
    }
    if (cjson_canonicalize(BODY, sizeof(BODY) - 1, &b.body_canon, &b.err) != 0 ||
        !cjson_is_canonical(buf_data(&b.body_canon), b.body_canon.len)) {
        fprintf(stderr, "crypto: cannot canonicalize the body\n");
        goto out;
    }
    if (check(&b) != 0 || run_fast(&b) != 0 || run_slow(&b) != 0) {
        fprintf(stderr, "crypto: sign_verify_request_body refuses the request: %.*s\n",
                (int)b.err.len, buf_data(&b.err));
        goto out;
    }

    printf("X-Matrix verification of " METHOD " " URI "\n");
    printf("body %zu bytes, canonical request object %zu bytes; libsodium %s, jansson %s\n",
           sizeof(BODY) - 1, sizeof(REQUEST_CANONICAL) - 1, sodium_version_string(),
           JANSSON_VERSION);
    printf("checks passed: canonical bytes equal python3-canonicaljson's, valid request "
           "accepted, altered signature and body refused\n");
    printf("%u rounds x %u ms per variant, interleaved (order rotates), median of the rounds\n\n",
           rounds, round_ms);
    fflush(stdout);

    for (unsigned i = 0; i < nv; i++) /* warm-up: caches, allocator, CPU frequency */
        if (run_round(&b, &vs[i], WARMUP_MS, &warm) != 0)
            goto out;
    for (unsigned k = 0; k < rounds; k++) {
        for (unsigned j = 0; j < nv; j++) {
            struct variant *v = &vs[(j + k) % nv];
            if (run_round(&b, v, round_ms, &v->res[k]) != 0)
                goto out;
        }
        fprintf(stderr, "round %u/%u done\n", k + 1, rounds);
    }

    /* Rates per second of CPU time: what one core does, even when the machine is shared. */
    raw = median(vs[0].res, rounds, CPU_RATE);
    printf("%-8s %-46s %10s %8s %7s %10s %5s %4s  %s\n", "variant", "what", "ops/cpu-s", "us/op",
           "vs raw", "wall ops/s", "cpu%", "bg%", "rounds (ops/cpu-s)");
    for (unsigned i = 0; i < nv; i++) {
        struct variant *v = &vs[i];
        double m = median(v->res, rounds, CPU_RATE), share = min_share(v->res, rounds);
        double bg = max_bg(v->res, rounds);
        printf("%-8s %-46s %10s %8.2f %6.2fx %10s %4.0f%% %3.0f%%  ", v->name, v->what,
               fmt_rate(m, s1, sizeof(s1)), 1e6 / m, median_ratio(v, &vs[0], rounds),
               fmt_rate(median(v->res, rounds, WALL_RATE), s2, sizeof(s2)), share * 100, bg * 100);
        for (unsigned k = 0; k < rounds; k++)
            printf("%s%s", k ? " " : "", fmt_rate(v->res[k].cpu_rate, s1, sizeof(s1)));
        printf("%s\n", share < 0.9 || bg > 0.1 ? "  NOISY" : "");
    }
    xm = median(vs[1].res, rounds, CPU_RATE);
    sj = median(vs[2].res, rounds, CPU_RATE);
    rx = median_ratio(&vs[1], &vs[0], rounds);
    rs = median_ratio(&vs[2], &vs[0], rounds);
    printf("\nchappe overhead per request: %.1f us (xmatrix), %.1f us (sign_verify_json)\n",
           1e6 / xm - 1e6 / raw, 1e6 / sj - 1e6 / raw);
    double rf = median_ratio(&vs[nv - 2], &vs[0], rounds);
    double rsl = median_ratio(&vs[nv - 1], &vs[0], rounds);
    printf("goal chappe >= 0.90x raw on its verification path (sign_verify_request_body, body as\n"
           "Synapse sends it, canonical): %s (%.2fx); non-canonical body (parse fallback) %.2fx;\n"
           "general path without the fast path: xmatrix %.2fx, sign_verify_json %.2fx\n",
           rf >= 0.90 ? "met" : "NOT met", rf, rsl, rx, rs);
    printf("ops/cpu-s: operations per second of this thread's CPU time, median of the rounds;\n"
           "vs raw: median of the per-round ratios to raw; cpu%%: the lowest share of a CPU the\n"
           "thread got in a round; bg%%: the most of all CPUs other processes used in a round;\n"
           "NOISY: cpu%% below 90 or bg%% above 10 (the machine was shared: rerun when quiet)\n");
    rc = 0;
out:
    json_decref(b.body_json);
    buf_free(&b.canon);
    buf_free(&b.body_canon);
    buf_free(&b.sigbuf);
    buf_free(&b.err);
    return rc;
}
