/* test_metrics.c -- /metrics: the counters, the histogram's buckets, label escaping, the queue's
 * gauges from a real store, and the text format's shape (every sample's family typed). */
/* SPDX-License-Identifier: ISC */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chappe/metrics.h"
#include "chappe/policy.h"
#include "chappe/queue.h"
#include "chappe/store.h"
#include "chappe/util.h"

/* The rendered text, NUL-terminated. The counters are process-wide: each test uses its own
 * labels, or compares before and after. */
static char *render(const struct metrics_sources *src)
{
    struct buf b = BUF_INIT;
    assert_int_equal(metrics_render(&b, src), 0);
    assert_int_equal(buf_append(&b, "", 1), 0);
    char *s = strdup(buf_data(&b));
    buf_free(&b);
    assert_non_null(s);
    return s;
}

static void assert_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (strstr(text, want) == NULL)
        fail_msg("line not found: %s\n--- in ---\n%s", line, text);
}

static void assert_no_line_prefix(const char *text, const char *prefix)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s", prefix);
    if (strstr(text, want) != NULL)
        fail_msg("unexpected line starting with %s", prefix);
}

/* Every sample's family has "# HELP" then "# TYPE" before it, each family's samples are
 * together, and every line is a comment or `name[{labels}] value`. */
static void assert_well_formed(const char *text)
{
    char typed[128][80];
    size_t ntyped = 0;
    char last[80] = "";
    const char *p = text;
    assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        char line[512];
        snprintf(line, sizeof(line), "%.*s", (int)(nl - p), p);
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_true(ntyped < 128);
            assert_int_equal(sscanf(line + 7, "%79s", typed[ntyped]), 1);
            ntyped++;
            continue;
        }
        size_t n = strcspn(line, "{ ");
        assert_true(n > 0 && n < 80);
        char name[80];
        snprintf(name, sizeof(name), "%.*s", (int)n, line);
        const char *sp = strrchr(line, ' ');
        assert_non_null(sp);
        char *end = NULL;
        strtod(sp + 1, &end);
        assert_true(end != sp + 1 && *end == '\0'); /* the value is a number */
        bool found = false;
        for (size_t i = 0; i < ntyped && !found; i++) {
            size_t tl = strlen(typed[i]);
            found = strcmp(name, typed[i]) == 0 ||
                    (strncmp(name, typed[i], tl) == 0 &&
                     (strcmp(name + tl, "_bucket") == 0 || strcmp(name + tl, "_sum") == 0 ||
                      strcmp(name + tl, "_count") == 0));
            if (found && strcmp(last, typed[i]) != 0) {
                /* a new family starts: it must be the one typed last */
                assert_string_equal(typed[i], typed[ntyped - 1]);
                snprintf(last, sizeof(last), "%s", typed[i]);
            }
        }
        if (!found)
            fail_msg("sample without # TYPE: %s", line);
    }
}

static void test_label_escape(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    const char in[] = "a\\b\"c\nd";
    assert_int_equal(metrics_append_label_value(&b, in, sizeof(in) - 1), 0);
    assert_int_equal(b.len, 10);
    assert_memory_equal(buf_data(&b), "a\\\\b\\\"c\\nd", 10);
    buf_reset(&b);
    assert_int_equal(metrics_append_label_value(&b, "plain", 5), 0);
    assert_memory_equal(buf_data(&b), "plain", 5);
    buf_reset(&b);
    assert_int_equal(metrics_append_label_value(&b, "\"", 1), 0);
    assert_int_equal(b.len, 2);
    assert_memory_equal(buf_data(&b), "\\\"", 2);
    buf_free(&b);
}

static void test_counters(void **state)
{
    (void)state;
    struct metrics_sources none = {0};
    metrics_count_request(LISTENER_CLIENT, 201);
    metrics_count_request(LISTENER_CLIENT, 201);
    metrics_count_request(LISTENER_CLIENT, 0);
    metrics_count_request(LISTENER_CLIENT, 42);         /* not a status: counted as "0" */
    metrics_count_request(LISTENER_CLIENT, 600);        /* neither */
    metrics_count_request((enum listener_type)99, 200); /* ignored */
    assert_int_equal(metrics_requests(LISTENER_CLIENT, 201), 2);
    assert_int_equal(metrics_requests(LISTENER_CLIENT, 0), 3);
    metrics_count_xmatrix(METRICS_XMATRIX_BAD_SIGNATURE);
    metrics_count_xmatrix(METRICS_XMATRIX_COUNT); /* ignored */
    metrics_count_tls_handshake(false, false);
    metrics_count_tls_handshake(false, false);
    metrics_count_tls_handshake(true, true);
    policy_count(POLICY_OUTBOUND, POLICY_ADDRESS_BLACKLISTED);
    policy_count(POLICY_OUTBOUND, POLICY_ALLOW_NAME); /* an allow: no denial */
    char *t = render(&none);
    assert_well_formed(t);
    assert_line(t, "chappe_requests_total{listener=\"client\",status=\"201\"} 2");
    assert_line(t, "chappe_requests_total{listener=\"client\",status=\"0\"} 3");
    assert_no_line_prefix(t, "chappe_requests_total{listener=\"client\",status=\"42\"}");
    assert_line(t, "chappe_xmatrix_verifications_total{result=\"bad_signature\"} 1");
    assert_line(t, "chappe_xmatrix_verifications_total{result=\"ok\"} 0");
    assert_line(t, "chappe_tls_handshakes_total{side=\"client\",result=\"failed\"} 2");
    assert_line(t, "chappe_tls_handshakes_total{side=\"server\",result=\"ok\"} 1");
    assert_line(t, "chappe_policy_denials_total{direction=\"outbound\",reason=\"address_"
                   "blacklisted\"} 1");
    assert_line(t, "chappe_policy_denials_total{direction=\"inbound\",reason=\"name_not_"
                   "allowed\"} 0");
    assert_no_line_prefix(t, "chappe_policy_denials_total{direction=\"outbound\",reason=\"name\"");
    /* without a sender or a key fetcher their counters show zero; without a store no queue */
    assert_line(t, "chappe_deliveries_total{result=\"delivered\"} 0");
    assert_line(t, "chappe_key_fetches_total 0");
    assert_no_line_prefix(t, "# TYPE chappe_queue_depth");
    assert_line(t, "# TYPE chappe_requests_total counter");
    free(t);
}

static void test_histogram(void **state)
{
    (void)state;
    struct metrics_sources none = {0};
    uint64_t before = metrics_upstream_count();
    assert_int_equal(before, 0);
    metrics_observe_upstream_ms(0);
    metrics_observe_upstream_ms(5); /* on a bound: in that bucket (le = less or equal) */
    metrics_observe_upstream_ms(6);
    metrics_observe_upstream_ms(10000);
    metrics_observe_upstream_ms(10001);
    assert_int_equal(metrics_upstream_count(), 5);
    char *t = render(&none);
    assert_well_formed(t);
    assert_line(t, "# TYPE chappe_upstream_request_duration_seconds histogram");
    assert_line(t, "chappe_upstream_request_duration_seconds_bucket{le=\"0.005\"} 2");
    assert_line(t, "chappe_upstream_request_duration_seconds_bucket{le=\"0.01\"} 3");
    assert_line(t, "chappe_upstream_request_duration_seconds_bucket{le=\"5\"} 3");
    assert_line(t, "chappe_upstream_request_duration_seconds_bucket{le=\"10\"} 4");
    assert_line(t, "chappe_upstream_request_duration_seconds_bucket{le=\"+Inf\"} 5");
    assert_line(t, "chappe_upstream_request_duration_seconds_sum 20.012");
    assert_line(t, "chappe_upstream_request_duration_seconds_count 5");
    free(t);
}

/* --- the queue, from a store ------------------------------------------------------------- */

struct fix {
    char dir[64];
    struct store *s;
};

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(p);
}

static int setup(void **state)
{
    struct fix *f = calloc(1, sizeof(*f));
    struct buf err = BUF_INIT;
    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/chappe-metrics-test-XXXXXX");
    if (mkdtemp(f->dir) == NULL || store_open(f->dir, 16u << 20, 0, &f->s, &err) != 0) {
        fprintf(stderr, "store_open: %.*s\n", (int)err.len, buf_data(&err));
        buf_free(&err);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fix *f = *state;
    store_close(f->s);
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

struct op {
    const char *dest, *txn_id;
    uint64_t first_seen, seq;
    bool retry, dup;
};

static int op_fn(MDB_txn *txn, struct store *s, void *ud)
{
    struct op *o = ud;
    if (o->retry)
        return queue_retry_txn(txn, s, o->dest, o->seq, 503, "down", util_wall_ms(),
                               util_wall_ms() + 60000, 60000);
    char path[128];
    snprintf(path, sizeof(path), "/_matrix/federation/v1/send/%s", o->txn_id);
    struct queue_item it = {
        .origin = SLICE_LIT("hs.example"),
        .destination = slice_from_str(o->dest),
        .txn_id = slice_from_str(o->txn_id),
        .method = SLICE_LIT("PUT"),
        .path = slice_from_str(path),
        .authorization = SLICE_LIT("X-Matrix origin=\"hs.example\""),
        .content_type = SLICE_LIT("application/json"),
        .body = SLICE_LIT("{\"pdus\":[]}"),
        .first_seen_ms = o->first_seen,
    };
    return queue_put_txn(txn, s, &it, NULL, &o->seq, &o->dup);
}

static uint64_t put(struct store *s, const char *dest, const char *txn_id, uint64_t first_seen)
{
    struct op o = {.dest = dest, .txn_id = txn_id, .first_seen = first_seen};
    assert_int_equal(store_write_now(s, op_fn, &o), 0);
    assert_false(o.dup);
    return o.seq;
}

static void test_queue_gauges(void **state)
{
    struct fix *f = *state;
    struct metrics_sources src = {.store = f->s};
    uint64_t now = util_wall_ms();
    const char *odd = "we\"ird\\dest";
    put(f->s, "b.example", "t1", now - 90500);
    put(f->s, "b.example", "t2", now - 1000);
    uint64_t seq = put(f->s, odd, "t3", now);
    struct op fail = {.dest = odd, .seq = seq, .retry = true};
    assert_int_equal(store_write_now(f->s, op_fn, &fail), 0);
    struct queue_dest d;
    assert_int_equal(queue_get_dest(f->s, "b.example", &d), 0);
    char *t = render(&src);
    assert_well_formed(t);
    char line[256];
    assert_line(t, "chappe_queue_depth{destination=\"b.example\"} 2");
    assert_line(t, "chappe_queue_depth{destination=\"we\\\"ird\\\\dest\"} 1");
    snprintf(line, sizeof(line), "chappe_queue_bytes{destination=\"b.example\"} %llu",
             (unsigned long long)d.bytes);
    assert_line(t, line);
    assert_line(t, "chappe_queue_failures{destination=\"b.example\"} 0");
    assert_line(t, "chappe_queue_failures{destination=\"we\\\"ird\\\\dest\"} 1");
    /* the oldest of b.example is 90.5 s old, give or take the time this test takes */
    const char *age = strstr(t, "\nchappe_queue_oldest_age_seconds{destination=\"b.example\"} ");
    assert_non_null(age);
    double secs = strtod(strchr(age + 1, ' ') + 1, NULL);
    assert_true(secs >= 90.5 && secs < 100.0);
    assert_line(t, "chappe_queue_transactions 3");
    assert_line(t, "chappe_dead_transactions 0");
    assert_line(t, "chappe_queue_malformed_destinations 0");
    snprintf(line, sizeof(line), "chappe_queue_stored_bytes %llu",
             (unsigned long long)(d.bytes * 3 / 2 + strlen(odd) - strlen("b.example")));
    assert_line(t, line);
    assert_line(t, "# TYPE chappe_store_requests_total counter");
    assert_line(t, "chappe_store_map_bytes 16777216");
    /* the four per-destination families each come whole, in this order */
    const char *fam[] = {"# TYPE chappe_queue_depth gauge", "# TYPE chappe_queue_bytes gauge",
                         "# TYPE chappe_queue_oldest_age_seconds gauge",
                         "# TYPE chappe_queue_failures gauge"};
    const char *prev = t;
    for (size_t i = 0; i < 4; i++) {
        const char *at = strstr(t, fam[i]);
        assert_non_null(at);
        assert_true(at > prev);
        prev = at;
    }
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_escape),
        cmocka_unit_test(test_counters),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test_setup_teardown(test_queue_gauges, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
