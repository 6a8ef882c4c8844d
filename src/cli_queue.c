/* cli_queue.c -- `chappe queue`: the outbound queue read from its store (destinations, entries,
 * dead letters) and the operator's retry, requeue and delete, beside a running relay or not. */
/* SPDX-License-Identifier: ISC */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "chappe/buf.h"
#include "chappe/cjson.h"
#include "chappe/cli_queue.h"
#include "chappe/config.h"
#include "chappe/log.h"
#include "chappe/queue.h"
#include "chappe/store.h"
#include "chappe/util.h"

#define PREFIX "chappe queue: "

/* Exit statuses (cli_queue.h). */
enum { ST_OK = 0, ST_FAIL = 1, ST_USAGE = 2 };

static const char usage_text[] =
    "usage: chappe queue <command> [-c FILE] [--json]\n"
    "\n"
    "commands:\n"
    "  list                 every destination: depth, bytes, oldest, next attempt, failures,\n"
    "                       last status or error; then the totals\n"
    "  show DEST            DEST's delivery state and its queued transactions, in order\n"
    "  retry DEST           reset DEST's backoff: a running relay sends at its next walk (1s)\n"
    "  dead                 the transactions given up on\n"
    "  dead show ID         one of them, with the response that refused it\n"
    "  dead requeue ID      put it back at the tail of its destination's queue\n"
    "  dead delete ID       forget it\n"
    "\n"
    "options:\n"
    "  -c, --config FILE    the configuration (default " CONFIG_DEFAULT_PATH
    "); its queue.path is the store\n"
    "  --json               one JSON object on stdout instead of text\n"
    "  -h, --help           this text\n"
    "\n"
    "exit status: 0 done, 1 not found or refused, 2 usage, configuration or store error\n";

enum sub {
    SUB_LIST,
    SUB_SHOW,
    SUB_RETRY,
    SUB_DEAD,
    SUB_DEAD_SHOW,
    SUB_DEAD_REQUEUE,
    SUB_DEAD_DELETE
};

/* The command lines: word [word2] and how many arguments (a DEST or an ID) follow. */
static const struct {
    const char *word, *word2;
    int nargs;
    enum sub sub;
} subs[] = {
    {"list", NULL, 0, SUB_LIST},
    {"show", NULL, 1, SUB_SHOW},
    {"retry", NULL, 1, SUB_RETRY},
    {"dead", NULL, 0, SUB_DEAD},
    {"dead", "show", 1, SUB_DEAD_SHOW},
    {"dead", "requeue", 1, SUB_DEAD_REQUEUE},
    {"dead", "delete", 1, SUB_DEAD_DELETE},
};

/* One run of the command. */
struct qcli {
    const struct config *cfg;
    struct store *s;
    bool json;
    uint64_t now; /* wall clock (ms) that ages and "next attempt in" are relative to */
};

/* ------------------------------------------------------------------------------------------ */
/* Text.                                                                                       */

/* "12s", "5m07s", "3h02m", "2d04h": a duration for people, rounded down to the second. */
static const char *fmt_dur(uint64_t ms, char *out, size_t cap)
{
    uint64_t s = ms / 1000;
    if (s < 120)
        snprintf(out, cap, "%" PRIu64 "s", s);
    else if (s < 3600)
        snprintf(out, cap, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
    else if (s < 172800)
        snprintf(out, cap, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s / 60 % 60);
    else
        snprintf(out, cap, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s / 3600 % 24);
    return out;
}

/* "now" when due (or no backoff), else "in 37s": rounded up, a wait never shows as 0s. */
static const char *fmt_next(uint64_t next_ms, uint64_t now, char *out, size_t cap)
{
    char d[32];
    if (next_ms <= now)
        snprintf(out, cap, "now");
    else
        snprintf(out, cap, "in %s", fmt_dur(next_ms - now + 999, d, sizeof(d)));
    return out;
}

/* "2026-11-26T15:04:05Z" for a time in ms since the epoch. */
static const char *fmt_time(uint64_t ms, char *out, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "%" PRIu64 "ms", ms);
    return out;
}

/*
 * A destination's last failure or answer: "503 error text", "503", "error
 * text", or "-". The sender's texts for an answer start with "HTTP 503": the
 * status is not said twice.
 */
static const char *fmt_last(const struct queue_dest *d, char *out, size_t cap)
{
    char http[24];
    snprintf(http, sizeof(http), "HTTP %d", d->last_status);
    bool said = strncmp(d->last_error, http, strlen(http)) == 0;
    if (d->last_status != 0 && d->last_error[0] != '\0' && !said)
        snprintf(out, cap, "%d %s", d->last_status, d->last_error);
    else if (d->last_status != 0 && d->last_error[0] == '\0')
        snprintf(out, cap, "%d", d->last_status);
    else
        snprintf(out, cap, "%s", d->last_error[0] ? d->last_error : "-");
    return out;
}

/* How long ago the head was first seen; 0 when empty or unknown. */
static uint64_t oldest_age(const struct queue_dest *d, uint64_t now)
{
    if (d->depth == 0 || d->oldest_first_seen_ms == 0 || d->oldest_first_seen_ms > now)
        return 0;
    return now - d->oldest_first_seen_ms;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON.                                                                                       */

/* The length of the valid UTF-8 sequence at p (n bytes left), 0 when there is none. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0], cp, min;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
        min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3;
        cp = c & 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    return cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0 : len;
}

/*
 * A JSON string of the n bytes at s. What the store keeps is bytes (a
 * response body, a remote's error text) while JSON strings are UTF-8: a byte
 * that is not part of a valid sequence becomes U+FFFD. NULL when out of memory.
 */
static json_t *jstr(const char *s, size_t n)
{
    if (s == NULL)
        return json_string("");
    json_t *v = json_stringn(s, n);
    if (v != NULL || n == 0)
        return v;
    struct buf b = BUF_INIT;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len(p + i, n - i);
        if (buf_append(&b, k ? p + i : (const unsigned char *)"\xef\xbf\xbd", k ? k : 3) < 0) {
            buf_free(&b);
            return NULL;
        }
        i += k ? k : 1;
    }
    v = json_stringn(buf_data(&b), b.len);
    buf_free(&b);
    return v;
}

/* Set o[key]: false when out of memory (v NULL, or the set failed). */
static bool jset(json_t *o, const char *key, json_t *v)
{
    return v != NULL && json_object_set_new(o, key, v) == 0;
}

static bool jset_u(json_t *o, const char *key, uint64_t v)
{
    return jset(o, key, json_integer((json_int_t)v));
}

static bool jset_s(json_t *o, const char *key, const char *s)
{
    return jset(o, key, jstr(s, strlen(s)));
}

static bool jset_sl(json_t *o, const char *key, struct slice s)
{
    return jset(o, key, jstr(s.base, s.len));
}

/* Print v (canonical JSON, keys sorted) and a newline on stdout, then drop it. 0 or 1. */
static int print_json(json_t *v)
{
    struct buf out = BUF_INIT, err = BUF_INIT;
    int status = ST_OK;
    if (v == NULL) {
        fprintf(stderr, PREFIX "out of memory\n");
        status = ST_FAIL;
    } else if (cjson_encode(v, &out, &err) < 0 || buf_append(&out, "\n", 1) < 0) {
        fprintf(stderr, PREFIX "cannot encode the output: %.*s\n", (int)err.len, buf_data(&err));
        status = ST_FAIL;
    } else if (fwrite(buf_data(&out), 1, out.len, stdout) != out.len || fflush(stdout) != 0) {
        status = ST_FAIL;
    }
    json_decref(v);
    buf_free(&out);
    buf_free(&err);
    return status;
}

/* A destination's state as a new object; NULL when out of memory. */
static json_t *dest_json(const struct qcli *q, const struct queue_dest *d)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    bool ok =
        jset_s(o, "destination", d->name) && jset_u(o, "depth", d->depth) &&
        jset_u(o, "bytes", d->bytes) && jset_u(o, "oldest_seq", d->oldest_seq) &&
        jset_u(o, "next_seq", d->next_seq) && jset_u(o, "oldest_age_ms", oldest_age(d, q->now)) &&
        jset_u(o, "next_attempt_ts", d->next_attempt_ms) &&
        jset_u(o, "next_attempt_in_ms",
               d->next_attempt_ms > q->now ? d->next_attempt_ms - q->now : 0) &&
        jset_u(o, "backoff_ms", d->backoff_ms) && jset_u(o, "failures", d->failures) &&
        jset(o, "last_status", json_integer(d->last_status)) &&
        jset_s(o, "last_error", d->last_error) && jset_u(o, "last_attempt_ts", d->last_attempt_ms);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* A record that cannot be decoded: its key, and "malformed": true. */
static json_t *malformed_json(const char *key, json_t *v)
{
    json_t *o = json_object();
    if (o == NULL || !jset(o, key, v) || !jset(o, "malformed", json_true())) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ------------------------------------------------------------------------------------------ */
/* list                                                                                        */

struct dest_row {
    struct queue_dest d;
    int status;
};

struct dest_rows {
    struct dest_row *row;
    size_t n, cap;
};

/* Collected first: the table's first column is as wide as the longest name. */
static int collect_dest(void *ud, const struct queue_dest *d, int status)
{
    struct dest_rows *r = ud;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct dest_row *row = realloc(r->row, cap * sizeof(*row));
        if (row == NULL)
            return CH_ENOMEM;
        r->row = row;
        r->cap = cap;
    }
    r->row[r->n].d = *d;
    r->row[r->n].status = status;
    r->n++;
    return 0;
}

static void list_text(const struct qcli *q, const struct dest_rows *r, const struct queue_totals *t)
{
    int w = (int)strlen("DESTINATION");
    for (size_t i = 0; i < r->n; i++)
        if ((int)strlen(r->row[i].d.name) > w)
            w = (int)strlen(r->row[i].d.name);
    if (r->n > 0)
        printf("%-*s %7s %11s  %-7s  %-10s %8s  %s\n", w, "DESTINATION", "DEPTH", "BYTES", "OLDEST",
               "NEXT", "FAILURES", "LAST");
    for (size_t i = 0; i < r->n; i++) {
        const struct queue_dest *d = &r->row[i].d;
        char age[32], next[48], last[QUEUE_ERROR_MAX + 16];
        if (r->row[i].status != 0) {
            printf("%-*s (malformed record)\n", w, d->name);
            continue;
        }
        printf("%-*s %7" PRIu64 " %11" PRIu64 "  %-7s  %-10s %8" PRIu32 "  %s\n", w, d->name,
               d->depth, d->bytes,
               d->depth ? fmt_dur(oldest_age(d, q->now), age, sizeof(age)) : "-",
               fmt_next(d->next_attempt_ms, q->now, next, sizeof(next)), d->failures,
               fmt_last(d, last, sizeof(last)));
    }
    if (t->count == 0)
        printf("the queue is empty");
    else
        printf("total: %" PRIu64 " queued, %" PRIu64 " bytes", t->count, t->bytes);
    printf(", %zu destination%s, %" PRIu64 " dead\n", r->n, r->n == 1 ? "" : "s", t->dead);
}

static json_t *list_json(const struct qcli *q, const struct dest_rows *r,
                         const struct queue_totals *t)
{
    json_t *o = json_object(), *a = json_array(), *tot = json_object();
    bool ok = o && a && tot && jset(o, "destinations", json_incref(a)) &&
              jset(o, "totals", json_incref(tot)) && jset_u(tot, "count", t->count) &&
              jset_u(tot, "bytes", t->bytes) && jset_u(tot, "dead", t->dead);
    for (size_t i = 0; ok && i < r->n; i++) {
        const struct queue_dest *d = &r->row[i].d;
        json_t *v = r->row[i].status == 0
                        ? dest_json(q, d)
                        : malformed_json("destination", jstr(d->name, strlen(d->name)));
        ok = v != NULL && json_array_append_new(a, v) == 0;
    }
    json_decref(a);
    json_decref(tot);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int do_list(struct qcli *q)
{
    struct dest_rows r = {0};
    struct queue_totals t = {0};
    int status = ST_OK;
    int rc = queue_each_dest(q->s, collect_dest, &r);
    if (rc == 0)
        rc = queue_totals(q->s, &t);
    if (rc != 0) {
        fprintf(stderr, PREFIX "%s: cannot read the queue: %s\n", store_path(q->s),
                util_strerror(rc));
        status = ST_FAIL;
    } else if (q->json) {
        status = print_json(list_json(q, &r, &t));
    } else {
        list_text(q, &r, &t);
    }
    free(r.row);
    return status;
}

/* ------------------------------------------------------------------------------------------ */
/* show DEST                                                                                   */

static void dest_text(const struct qcli *q, const struct queue_dest *d)
{
    char a[48], b[48], last[QUEUE_ERROR_MAX + 16];
    printf("destination: %s\n", d->name);
    printf("depth: %" PRIu64 "\n", d->depth);
    printf("bytes: %" PRIu64 "\n", d->bytes);
    if (d->depth && d->oldest_first_seen_ms)
        printf("oldest: %s (first seen %s)\n", fmt_dur(oldest_age(d, q->now), a, sizeof(a)),
               fmt_time(d->oldest_first_seen_ms, b, sizeof(b)));
    else
        printf("oldest: -\n");
    if (d->next_attempt_ms > q->now)
        printf("next attempt: %s (%s)\n", fmt_next(d->next_attempt_ms, q->now, a, sizeof(a)),
               fmt_time(d->next_attempt_ms, b, sizeof(b)));
    else
        printf("next attempt: now\n");
    printf("backoff: %s\n", d->backoff_ms ? fmt_dur(d->backoff_ms, a, sizeof(a)) : "-");
    printf("failures: %" PRIu32 "\n", d->failures);
    printf("last attempt: %s\n",
           d->last_attempt_ms ? fmt_time(d->last_attempt_ms, a, sizeof(a)) : "-");
    printf("last: %s\n", fmt_last(d, last, sizeof(last)));
}

/*
 * What a walk collects: JSON values, or lines of text. Both are written out
 * once the walk is over, never from inside it: a reader blocked on a pipe
 * (`| less`) would hold its read transaction open, and the pages it pins keep
 * a running relay from reusing them.
 */
struct walk {
    json_t *a; /* --json */
    struct buf text;
    size_t n;
};

/* Write the text collected; 0 or 1. */
static int walk_flush(struct walk *w)
{
    struct slice t = buf_slice(&w->text);
    int status = fwrite(t.base, 1, t.len, stdout) == t.len ? ST_OK : ST_FAIL;
    buf_free(&w->text);
    return status;
}

static json_t *entry_json(const struct queue_item *it)
{
    json_t *o = json_object();
    bool ok = o && jset_u(o, "seq", it->seq) && jset_sl(o, "txn_id", it->txn_id) &&
              jset_sl(o, "origin", it->origin) && jset_sl(o, "method", it->method) &&
              jset_sl(o, "path", it->path) && jset_u(o, "body_bytes", it->body.len) &&
              jset_u(o, "first_seen_ts", it->first_seen_ms) && jset_u(o, "attempts", it->attempts);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int show_entry(void *ud, const struct queue_item *it, int status)
{
    struct walk *w = ud;
    w->n++;
    if (w->a != NULL) {
        json_t *v =
            status == 0 ? entry_json(it) : malformed_json("seq", json_integer((json_int_t)it->seq));
        return v != NULL && json_array_append_new(w->a, v) == 0 ? 0 : CH_ENOMEM;
    }
    char seen[48];
    int rc = status != 0
                 ? buf_appendf(&w->text, "  %" PRIu64 " (malformed record)\n", it->seq)
                 : buf_appendf(&w->text,
                               "  %" PRIu64 " txn=%s origin=%s first_seen=%s attempts=%" PRIu32
                               " body=%zu %s %s\n",
                               it->seq, it->txn_id.base, it->origin.base,
                               fmt_time(it->first_seen_ms, seen, sizeof(seen)), it->attempts,
                               it->body.len, it->method.base, it->path.base);
    return rc < 0 ? CH_ENOMEM : 0;
}

/* DEST unknown or not a name: the same answer, no queue by that name. */
static int no_dest(const char *dest, int rc)
{
    if (rc == CH_ENOENT || rc == CH_EINVAL)
        fprintf(stderr, PREFIX "no queue for %s\n", dest);
    else
        fprintf(stderr, PREFIX "%s: cannot read its queue: %s\n", dest, util_strerror(rc));
    return ST_FAIL;
}

static int do_show(struct qcli *q, const char *dest)
{
    struct queue_dest d;
    int rc = queue_get_dest(q->s, dest, &d);
    if (rc < 0)
        return no_dest(dest, rc);
    struct walk w = {NULL, BUF_INIT, 0};
    json_t *o = NULL;
    if (q->json) {
        o = dest_json(q, &d);
        w.a = json_array();
        if (o == NULL || w.a == NULL || !jset(o, "entries", json_incref(w.a))) {
            json_decref(o);
            json_decref(w.a);
            return print_json(NULL);
        }
    }
    /* A second read transaction: a running relay may have sent or queued some meanwhile. */
    rc = queue_each_entry(q->s, dest, show_entry, &w);
    json_decref(w.a);
    if (rc < 0) {
        json_decref(o);
        buf_free(&w.text);
        fprintf(stderr, PREFIX "%s: cannot read its entries: %s\n", dest, util_strerror(rc));
        return ST_FAIL;
    }
    if (q->json)
        return print_json(o);
    dest_text(q, &d);
    printf("entries:%s\n", w.n ? "" : " none");
    return walk_flush(&w);
}

/* ------------------------------------------------------------------------------------------ */
/* retry DEST                                                                                  */

static int reset_write(MDB_txn *txn, struct store *s, void *ud)
{
    return queue_reset_backoff_txn(txn, s, ud);
}

static int do_retry(struct qcli *q, const char *dest)
{
    struct queue_dest d;
    char a[48];
    int rc = queue_get_dest(q->s, dest, &d);
    if (rc == 0)
        rc = store_write_now(q->s, reset_write, (void *)dest);
    if (rc == CH_ENOENT || rc == CH_EINVAL)
        return no_dest(dest, rc);
    if (rc < 0) {
        fprintf(stderr, PREFIX "%s: cannot reset its backoff: %s\n", dest, util_strerror(rc));
        return ST_FAIL;
    }
    if (q->json) {
        json_t *o = json_object();
        if (o && !(jset_s(o, "destination", dest) && jset(o, "reset", json_true()) &&
                   jset_u(o, "depth", d.depth) && jset_u(o, "failures_before", d.failures))) {
            json_decref(o);
            o = NULL;
        }
        return print_json(o);
    }
    printf("%s: backoff reset (it had %" PRIu32 " failure%s, next attempt %s)\n", dest, d.failures,
           d.failures == 1 ? "" : "s", fmt_next(d.next_attempt_ms, q->now, a, sizeof(a)));
    if (d.depth)
        printf("%" PRIu64 " transaction%s queued: a running relay sends at its next walk, within "
               "a second\n",
               d.depth, d.depth == 1 ? "" : "s");
    else
        printf("nothing queued for %s\n", dest);
    return ST_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* dead                                                                                        */

static json_t *dead_json(const struct queue_dead *d, bool full)
{
    const struct queue_item *it = &d->item;
    json_t *o = json_object();
    bool ok = o && jset_u(o, "id", d->id) && jset_sl(o, "destination", it->destination) &&
              jset_sl(o, "origin", it->origin) && jset_sl(o, "txn_id", it->txn_id) &&
              jset(o, "status", json_integer(d->status)) && jset_sl(o, "reason", d->reason) &&
              jset_u(o, "died_ts", d->died_ms) && jset_u(o, "attempts", it->attempts) &&
              jset_u(o, "body_bytes", it->body.len);
    if (ok && full)
        ok = jset_sl(o, "method", it->method) && jset_sl(o, "path", it->path) &&
             jset_sl(o, "content_type", it->content_type) &&
             jset_u(o, "first_seen_ts", it->first_seen_ms) && jset_sl(o, "response", d->response) &&
             jset_u(o, "response_bytes", d->response.len);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int dead_line(void *ud, const struct queue_dead *d, int status)
{
    struct walk *w = ud;
    w->n++;
    if (w->a != NULL) {
        json_t *v = status == 0 ? dead_json(d, false)
                                : malformed_json("id", json_integer((json_int_t)d->id));
        return v != NULL && json_array_append_new(w->a, v) == 0 ? 0 : CH_ENOMEM;
    }
    char died[48];
    int rc = status != 0
                 ? buf_appendf(&w->text, "%" PRIu64 " (malformed record)\n", d->id)
                 : buf_appendf(&w->text,
                               "%" PRIu64 " died=%s destination=%s txn=%s origin=%s status=%d "
                               "attempts=%" PRIu32 " reason=%s\n",
                               d->id, fmt_time(d->died_ms, died, sizeof(died)),
                               d->item.destination.base, d->item.txn_id.base, d->item.origin.base,
                               d->status, d->item.attempts, d->reason.base);
    return rc < 0 ? CH_ENOMEM : 0;
}

static int do_dead(struct qcli *q)
{
    struct walk w = {NULL, BUF_INIT, 0};
    json_t *o = NULL;
    if (q->json) {
        o = json_object();
        w.a = json_array();
        if (o == NULL || w.a == NULL || !jset(o, "dead", json_incref(w.a))) {
            json_decref(o);
            json_decref(w.a);
            return print_json(NULL);
        }
    }
    int rc = queue_each_dead(q->s, dead_line, &w);
    json_decref(w.a);
    if (rc < 0) {
        json_decref(o);
        buf_free(&w.text);
        fprintf(stderr, PREFIX "%s: cannot read the dead transactions: %s\n", store_path(q->s),
                util_strerror(rc));
        return ST_FAIL;
    }
    if (q->json)
        return print_json(o);
    if (w.n == 0)
        printf("no dead transaction\n");
    return walk_flush(&w);
}

/* Read dead entry id into *d (strings in storage), or say why not. 0 or 1. */
static int get_dead(struct qcli *q, uint64_t id, struct queue_dead *d, struct buf *storage)
{
    int rc = queue_get_dead(q->s, id, d, storage);
    if (rc == 0)
        return ST_OK;
    if (rc == CH_ENOENT)
        fprintf(stderr, PREFIX "no dead transaction %" PRIu64 "\n", id);
    else if (rc == CH_EPROTO)
        fprintf(stderr, PREFIX "dead transaction %" PRIu64 " is malformed: delete it\n", id);
    else
        fprintf(stderr, PREFIX "dead transaction %" PRIu64 ": %s\n", id, util_strerror(rc));
    return ST_FAIL;
}

static void dead_text(const struct qcli *q, const struct queue_dead *d)
{
    const struct queue_item *it = &d->item;
    char a[48], b[48];
    printf("id: %" PRIu64 "\n", d->id);
    printf("died: %s (%s ago)\n", fmt_time(d->died_ms, a, sizeof(a)),
           fmt_dur(q->now > d->died_ms ? q->now - d->died_ms : 0, b, sizeof(b)));
    printf("destination: %s\n", it->destination.base);
    printf("origin: %s\n", it->origin.base);
    printf("txn: %s\n", it->txn_id.base);
    printf("request: %s %s\n", it->method.base, it->path.base);
    printf("content type: %s\n", it->content_type.len ? it->content_type.base : "-");
    printf("body: %zu bytes\n", it->body.len);
    printf("first seen: %s\n", fmt_time(it->first_seen_ms, a, sizeof(a)));
    printf("attempts: %" PRIu32 "\n", it->attempts);
    printf("status: %d\n", d->status);
    printf("reason: %s\n", d->reason.len ? d->reason.base : "-");
    printf("response: %zu bytes%s\n", d->response.len, d->response.len ? ":" : "");
    if (d->response.len) {
        fwrite(d->response.base, 1, d->response.len, stdout);
        if (d->response.base[d->response.len - 1] != '\n')
            putchar('\n');
    }
}

static int do_dead_show(struct qcli *q, uint64_t id)
{
    struct queue_dead d;
    struct buf storage = BUF_INIT;
    int status = get_dead(q, id, &d, &storage);
    if (status == ST_OK && q->json)
        status = print_json(dead_json(&d, true));
    else if (status == ST_OK)
        dead_text(q, &d);
    buf_free(&storage);
    return status;
}

struct requeue {
    uint64_t id, now_ms, seq;
    struct queue_caps caps;
};

static int requeue_write(MDB_txn *txn, struct store *s, void *ud)
{
    struct requeue *r = ud;
    return queue_requeue_dead_txn(txn, s, r->id, &r->caps, r->now_ms, &r->seq);
}

static int do_dead_requeue(struct qcli *q, uint64_t id)
{
    struct queue_dead d;
    struct buf storage = BUF_INIT;
    struct requeue r = {.id = id,
                        .now_ms = q->now,
                        .caps = {q->cfg->queue.max_bytes, q->cfg->queue.max_bytes_per_destination}};
    /* Read first: the destination it goes back to, for the message. */
    int status = get_dead(q, id, &d, &storage);
    if (status != ST_OK)
        goto out;
    int rc = store_write_now(q->s, requeue_write, &r);
    status = ST_FAIL;
    if (rc == CH_EAGAIN)
        fprintf(stderr,
                PREFIX "queue full (queue.max_bytes %" PRIu64 ", max_bytes_per_destination %" PRIu64
                       "): dead transaction %" PRIu64 " stays\n",
                r.caps.max_bytes, r.caps.dest_max_bytes, id);
    else if (rc == CH_ENOENT)
        fprintf(stderr, PREFIX "no dead transaction %" PRIu64 "\n", id);
    else if (rc < 0)
        fprintf(stderr, PREFIX "dead transaction %" PRIu64 ": cannot requeue it: %s\n", id,
                util_strerror(rc));
    else
        status = ST_OK;
    if (status != ST_OK)
        goto out;
    if (q->json) {
        json_t *o = json_object();
        if (o && !(jset_u(o, "id", id) && jset(o, "requeued", json_true()) &&
                   jset_sl(o, "destination", d.item.destination) && jset_u(o, "seq", r.seq))) {
            json_decref(o);
            o = NULL;
        }
        status = print_json(o);
    } else {
        printf("dead transaction %" PRIu64 " requeued: %s entry %" PRIu64 "\n", id,
               d.item.destination.base, r.seq);
    }
out:
    buf_free(&storage);
    return status;
}

static int delete_write(MDB_txn *txn, struct store *s, void *ud)
{
    return queue_delete_dead_txn(txn, s, *(const uint64_t *)ud);
}

static int do_dead_delete(struct qcli *q, uint64_t id)
{
    int rc = store_write_now(q->s, delete_write, &id);
    if (rc == CH_ENOENT) {
        fprintf(stderr, PREFIX "no dead transaction %" PRIu64 "\n", id);
        return ST_FAIL;
    }
    if (rc < 0) {
        fprintf(stderr, PREFIX "dead transaction %" PRIu64 ": cannot delete it: %s\n", id,
                util_strerror(rc));
        return ST_FAIL;
    }
    if (!q->json) {
        printf("dead transaction %" PRIu64 " deleted\n", id);
        return ST_OK;
    }
    json_t *o = json_object();
    if (o && !(jset_u(o, "id", id) && jset(o, "deleted", json_true()))) {
        json_decref(o);
        o = NULL;
    }
    return print_json(o);
}

/* ------------------------------------------------------------------------------------------ */
/* The command line.                                                                           */

/* Print err's lines to stderr, each prefixed. */
static void print_errors(const struct buf *err)
{
    const char *p = buf_data(err), *end = p + err->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        fprintf(stderr, PREFIX "%.*s\n", (int)n, p);
        p += n + (nl ? 1 : 0);
    }
}

/* A dead entry's id: decimal digits only, 1 or more. 0 or CH_EINVAL. */
static int parse_id(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0')
        return CH_EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return CH_EINVAL;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return v == 0 ? CH_EINVAL : 0;
}

struct args {
    const char *config;
    bool json;
    enum sub sub;
    const char *arg; /* DEST or ID; "" for the commands without */
};

/* The options anywhere on the line, then the subcommand. 0, 1 for --help, or 2 (said why). */
static int parse_args(int argc, char **argv, struct args *a)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
        if (ch == 'h')
            return 1;
        if (ch == 'c') {
            a->config = optarg;
        } else if (ch == 'j') {
            a->json = true;
        } else {
            fprintf(stderr, PREFIX "bad option %s\n", argv[optind - 1]);
            return ST_USAGE;
        }
    }
    char **pos = argv + optind;
    int npos = argc - optind;
    for (size_t i = 0; i < ARRAY_LEN(subs); i++) {
        int words = subs[i].word2 ? 2 : 1;
        if (npos != words + subs[i].nargs || strcmp(pos[0], subs[i].word) != 0 ||
            (subs[i].word2 && strcmp(pos[1], subs[i].word2) != 0))
            continue;
        a->sub = subs[i].sub;
        a->arg = subs[i].nargs ? pos[words] : "";
        return 0;
    }
    fprintf(stderr,
            PREFIX "expected list, show DEST, retry DEST, dead, or dead show|requeue|delete "
                   "ID (chappe queue --help)\n");
    return ST_USAGE;
}

static int run(struct qcli *q, const struct args *a, uint64_t id)
{
    switch (a->sub) {
    case SUB_LIST:
        return do_list(q);
    case SUB_SHOW:
        return do_show(q, a->arg);
    case SUB_RETRY:
        return do_retry(q, a->arg);
    case SUB_DEAD:
        return do_dead(q);
    case SUB_DEAD_SHOW:
        return do_dead_show(q, id);
    case SUB_DEAD_REQUEUE:
        return do_dead_requeue(q, id);
    case SUB_DEAD_DELETE:
        return do_dead_delete(q, id);
    }
    return ST_USAGE;
}

int cmd_queue(int argc, char **argv)
{
    struct args a = {.config = CONFIG_DEFAULT_PATH};
    int o = parse_args(argc, argv, &a);
    if (o == 1) {
        fputs(usage_text, stdout);
        return ST_OK;
    }
    if (o != 0)
        return ST_USAGE;
    uint64_t id = 0;
    bool by_id = a.sub == SUB_DEAD_SHOW || a.sub == SUB_DEAD_REQUEUE || a.sub == SUB_DEAD_DELETE;
    if (by_id && parse_id(a.arg, &id) < 0) {
        fprintf(stderr, PREFIX "bad id '%s': a dead transaction's id is a number from 1\n", a.arg);
        return ST_USAGE;
    }

    struct config *cfg = NULL;
    struct buf err = BUF_INIT;
    int rc = config_load(a.config, &cfg, &err);
    if (rc < 0) {
        print_errors(&err);
        if (err.len == 0)
            fprintf(stderr, PREFIX "%s: %s\n", a.config, util_strerror(rc));
        fprintf(stderr, PREFIX "%s: configuration is not valid\n", a.config);
        buf_free(&err);
        return ST_USAGE;
    }
    log_set_level(cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    /* Not exclusive: the relay holds the lock while it runs, and this is meant to run beside it. */
    struct qcli q = {cfg, NULL, a.json, util_wall_ms()};
    int status = ST_USAGE;
    if (store_open(cfg->queue.path, 0, 0, &q.s, &err) < 0) {
        print_errors(&err);
    } else {
        status = run(&q, &a, id);
        store_close(q.s);
    }
    buf_free(&err);
    config_free(cfg);
    return status;
}
