/* metrics.c -- process-wide counters, and /metrics in the Prometheus text format 0.0.4. */
/* SPDX-License-Identifier: ISC */
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>

#include "chappe/keyfetch.h"
#include "chappe/metrics.h"
#include "chappe/policy.h"
#include "chappe/queue.h"
#include "chappe/sender.h"
#include "chappe/store.h"
#include "chappe/util.h"

#define NLISTENER_TYPES (LISTENER_CLIENT + 1)
#define NSTATUS         600 /* index 0 is "no status"; 1..99 are never used */

/* The upstream latency histogram's upper bounds, in ms (the exposition says seconds). */
static const uint64_t bucket_ms[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
static const char *const bucket_le[] = {"0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
                                        "0.5",   "1",    "2.5",   "5",    "10"};
#define NBUCKETS (ARRAY_LEN(bucket_ms) + 1) /* the last one is +Inf */

static const char *const xmatrix_names[METRICS_XMATRIX_COUNT] = {"ok", "malformed", "unknown_key",
                                                                 "bad_signature"};

/* Process-wide: every worker counts into the same totals, as Prometheus expects of one target. */
static _Atomic uint64_t requests[NLISTENER_TYPES][NSTATUS];
static _Atomic uint64_t xmatrix[METRICS_XMATRIX_COUNT];
static _Atomic uint64_t handshakes[2][2];           /* [server][ok] */
static _Atomic uint64_t upstream_buckets[NBUCKETS]; /* not cumulative: one bucket per answer */
static _Atomic uint64_t upstream_sum_ms;

static void add(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static unsigned status_index(int status)
{
    return status >= 100 && status < NSTATUS ? (unsigned)status : 0;
}

void metrics_count_request(enum listener_type l, int status)
{
    if ((unsigned)l < NLISTENER_TYPES)
        add(&requests[l][status_index(status)]);
}

void metrics_count_xmatrix(enum metrics_xmatrix r)
{
    if ((unsigned)r < METRICS_XMATRIX_COUNT)
        add(&xmatrix[r]);
}

void metrics_count_tls_handshake(bool server, bool ok)
{
    add(&handshakes[server][ok]);
}

void metrics_observe_upstream_ms(uint64_t ms)
{
    size_t i = 0;
    while (i < ARRAY_LEN(bucket_ms) && ms > bucket_ms[i])
        i++;
    add(&upstream_buckets[i]);
    atomic_fetch_add_explicit(&upstream_sum_ms, ms, memory_order_relaxed);
}

uint64_t metrics_requests(enum listener_type l, int status)
{
    return (unsigned)l < NLISTENER_TYPES ? get(&requests[l][status_index(status)]) : 0;
}

uint64_t metrics_xmatrix(enum metrics_xmatrix r)
{
    return (unsigned)r < METRICS_XMATRIX_COUNT ? get(&xmatrix[r]) : 0;
}

uint64_t metrics_tls_handshakes(bool server, bool ok)
{
    return get(&handshakes[server][ok]);
}

uint64_t metrics_upstream_count(void)
{
    uint64_t n = 0;
    for (size_t i = 0; i < NBUCKETS; i++)
        n += get(&upstream_buckets[i]);
    return n;
}

/* --- the text format ------------------------------------------------------------------- */

int metrics_append_label_value(struct buf *out, const char *s, size_t n)
{
    size_t run = 0; /* bytes copied as they are, pending */
    for (size_t i = 0; i < n; i++) {
        const char *esc = s[i] == '\\' ? "\\\\" : s[i] == '"' ? "\\\"" : s[i] == '\n' ? "\\n" : 0;
        if (esc == NULL) {
            run++;
            continue;
        }
        if (buf_append(out, s + i - run, run) < 0 || buf_append(out, esc, 2) < 0)
            return CH_ENOMEM;
        run = 0;
    }
    return buf_append(out, s + n - run, run);
}

/* The text being rendered; an append that fails is remembered rather than checked at each
 * of the hundred calls. */
struct mout {
    struct buf *b;
    int err;
};

static void note(struct mout *o, int rc)
{
    if (rc != 0 && o->err == 0)
        o->err = rc;
}

static void family(struct mout *o, const char *name, const char *type, const char *help)
{
    note(o, buf_appendf(o->b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type));
}

static void sample(struct mout *o, const char *name, const char *labels, uint64_t v)
{
    note(o, buf_appendf(o->b, "%s%s%s%s %" PRIu64 "\n", name, labels ? "{" : "",
                        labels ? labels : "", labels ? "}" : "", v));
}

/* name{label="value"} v, the value escaped. */
static void sample_label(struct mout *o, const char *name, const char *label, const char *value,
                         const char *v)
{
    note(o, buf_appendf(o->b, "%s{%s=\"", name, label));
    note(o, metrics_append_label_value(o->b, value, strlen(value)));
    note(o, buf_appendf(o->b, "\"} %s\n", v));
}

static void render_requests(struct mout *out)
{
    family(out, "chappe_requests_total", "counter",
           "Requests answered, by listener type and HTTP status (0: closed without an answer).");
    for (unsigned l = 0; l < NLISTENER_TYPES; l++)
        for (unsigned s = 0; s < NSTATUS; s++) {
            uint64_t v = get(&requests[l][s]);
            if (v == 0)
                continue;
            char labels[64];
            snprintf(labels, sizeof(labels), "listener=\"%s\",status=\"%u\"",
                     config_listener_type_name((enum listener_type)l), s);
            sample(out, "chappe_requests_total", labels, v);
        }
}

static void render_policy(struct mout *out)
{
    static const char *const dir[POLICY_DIRECTION_COUNT] = {"outbound", "inbound"};
    family(out, "chappe_policy_denials_total", "counter",
           "Policy decisions that denied, by direction and reason.");
    for (unsigned d = 0; d < POLICY_DIRECTION_COUNT; d++)
        /* the deny reasons follow the allow ones in enum policy_reason */
        for (unsigned r = POLICY_INVALID_SERVER_NAME; r < POLICY_REASON_COUNT; r++) {
            char labels[96];
            snprintf(labels, sizeof(labels), "direction=\"%s\",reason=\"%s\"", dir[d],
                     policy_reason_code((enum policy_reason)r));
            sample(out, "chappe_policy_denials_total", labels,
                   policy_counter((enum policy_direction)d, (enum policy_reason)r));
        }
}

static void render_auth(struct mout *out)
{
    family(out, "chappe_xmatrix_verifications_total", "counter",
           "X-Matrix request authentications of inbound requests, by result.");
    for (unsigned r = 0; r < METRICS_XMATRIX_COUNT; r++) {
        char labels[48];
        snprintf(labels, sizeof(labels), "result=\"%s\"", xmatrix_names[r]);
        sample(out, "chappe_xmatrix_verifications_total", labels, get(&xmatrix[r]));
    }
    family(out, "chappe_tls_handshakes_total", "counter",
           "TLS handshakes finished, by side (server: a listener; client: outbound) and result.");
    for (int server = 1; server >= 0; server--)
        for (int ok = 1; ok >= 0; ok--) {
            char labels[48];
            snprintf(labels, sizeof(labels), "side=\"%s\",result=\"%s\"",
                     server ? "server" : "client", ok ? "ok" : "failed");
            sample(out, "chappe_tls_handshakes_total", labels, get(&handshakes[server][ok]));
        }
}

static void render_upstream(struct mout *out)
{
    static const char name[] = "chappe_upstream_request_duration_seconds";
    family(out, name, "histogram",
           "Inbound requests answered by a homeserver: from the request's first byte to the end "
           "of the upstream's answer.");
    uint64_t cum = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cum += get(&upstream_buckets[i]);
        note(out, buf_appendf(out->b, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", name,
                              i < ARRAY_LEN(bucket_le) ? bucket_le[i] : "+Inf", cum));
    }
    uint64_t sum = get(&upstream_sum_ms);
    note(out, buf_appendf(out->b, "%s_sum %" PRIu64 ".%03u\n%s_count %" PRIu64 "\n", name,
                          sum / 1000, (unsigned)(sum % 1000), name, cum));
}

/* --- the queue and the store ------------------------------------------------------------ */

/* One walk of the destinations fills the four per-destination families side by side (the
 * format wants each family's samples together). */
struct dest_walk {
    struct buf fam[4];
    struct mout o[4];
    uint64_t now;
    size_t malformed;
};

static const char *const dest_family[4][3] = {
    {"chappe_queue_depth", "gauge", "Transactions queued for a destination."},
    {"chappe_queue_bytes", "gauge", "Stored bytes of the transactions queued for a destination."},
    {"chappe_queue_oldest_age_seconds", "gauge",
     "Age of the oldest transaction queued for a destination (0 when none)."},
    {"chappe_queue_failures", "gauge",
     "Consecutive failed delivery attempts to a destination (0 after a success)."},
};

static int dest_sample(void *ud, const struct queue_dest *d, int status)
{
    struct dest_walk *dw = ud;
    if (status != 0) {
        dw->malformed++;
        return 0;
    }
    uint64_t age_ms =
        d->depth > 0 && d->oldest_first_seen_ms > 0 && dw->now > d->oldest_first_seen_ms
            ? dw->now - d->oldest_first_seen_ms
            : 0;
    char v[4][32];
    snprintf(v[0], sizeof(v[0]), "%" PRIu64, d->depth);
    snprintf(v[1], sizeof(v[1]), "%" PRIu64, d->bytes);
    snprintf(v[2], sizeof(v[2]), "%" PRIu64 ".%03u", age_ms / 1000, (unsigned)(age_ms % 1000));
    snprintf(v[3], sizeof(v[3]), "%u", (unsigned)d->failures);
    for (size_t i = 0; i < 4; i++)
        sample_label(&dw->o[i], dest_family[i][0], "destination", d->name, v[i]);
    return dw->o[0].err | dw->o[1].err | dw->o[2].err | dw->o[3].err ? CH_ENOMEM : 0;
}

static int render_queue(struct mout *out, struct store *s)
{
    struct dest_walk dw = {.now = util_wall_ms()};
    for (size_t i = 0; i < 4; i++) {
        dw.fam[i] = (struct buf)BUF_INIT;
        dw.o[i] = (struct mout){&dw.fam[i], 0};
    }
    int rc = queue_each_dest(s, dest_sample, &dw);
    for (size_t i = 0; i < 4 && rc == 0; i++) {
        family(out, dest_family[i][0], dest_family[i][1], dest_family[i][2]);
        note(out, buf_append(out->b, buf_data(&dw.fam[i]), dw.fam[i].len));
    }
    for (size_t i = 0; i < 4; i++)
        buf_free(&dw.fam[i]);
    if (rc != 0)
        return rc;
    family(out, "chappe_queue_malformed_destinations", "gauge",
           "Destination records that cannot be decoded (see `chappe queue list`).");
    sample(out, "chappe_queue_malformed_destinations", NULL, dw.malformed);
    struct queue_totals t;
    if ((rc = queue_totals(s, &t)) != 0)
        return rc;
    family(out, "chappe_queue_transactions", "gauge", "Transactions queued, all destinations.");
    sample(out, "chappe_queue_transactions", NULL, t.count);
    family(out, "chappe_queue_stored_bytes", "gauge",
           "Stored bytes of the queued transactions, all destinations (queue.max_bytes caps it).");
    sample(out, "chappe_queue_stored_bytes", NULL, t.bytes);
    family(out, "chappe_dead_transactions", "gauge",
           "Transactions given up on, kept in the dead letters.");
    sample(out, "chappe_dead_transactions", NULL, t.dead);
    return 0;
}

static int render_store(struct mout *out, struct store *s)
{
    struct store_stats st;
    struct store_usage u;
    store_get_stats(s, &st);
    int rc = store_usage(s, &u);
    if (rc != 0)
        return rc;
    const struct {
        const char *name, *type, *help;
        uint64_t v;
    } f[] = {
        {"chappe_store_batches_total", "counter", "Store commits attempted.", st.batches},
        {"chappe_store_requests_total", "counter", "Store writes run.", st.requests},
        {"chappe_store_failed_total", "counter", "Store writes that failed.", st.failed},
        {"chappe_store_map_full_total", "counter", "Store writes refused: the map is full.",
         st.map_full},
        {"chappe_store_commit_errors_total", "counter", "Store commits that failed.",
         st.commit_errors},
        {"chappe_store_max_batch", "gauge", "Most writes committed together so far.", st.max_batch},
        {"chappe_store_used_bytes", "gauge", "Bytes of store pages holding data.", u.used},
        {"chappe_store_limit_bytes", "gauge", "Past this, a write that grows the store fails.",
         u.limit},
        {"chappe_store_map_bytes", "gauge", "The store's map size (queue.map_size).", u.map},
        {"chappe_store_file_bytes", "gauge", "The store's data file size (its high-water mark).",
         u.file},
    };
    for (size_t i = 0; i < ARRAY_LEN(f); i++) {
        family(out, f[i].name, f[i].type, f[i].help);
        sample(out, f[i].name, NULL, f[i].v);
    }
    return 0;
}

static void render_sender(struct mout *out, struct sender *sd)
{
    struct sender_stats st;
    sender_get_stats(sd, &st); /* zeros without a sender */
    family(out, "chappe_deliveries_total", "counter",
           "Queued transactions' delivery outcomes, by result.");
    sample(out, "chappe_deliveries_total", "result=\"delivered\"", st.delivered);
    sample(out, "chappe_deliveries_total", "result=\"retried\"", st.retried);
    sample(out, "chappe_deliveries_total", "result=\"dead\"", st.dead);
    sample(out, "chappe_deliveries_total", "result=\"expired\"", st.expired);
    family(out, "chappe_delivery_attempts_total", "counter", "Deliveries started.");
    sample(out, "chappe_delivery_attempts_total", NULL, st.attempts);
    family(out, "chappe_deliveries_in_flight", "gauge", "Deliveries running now.");
    sample(out, "chappe_deliveries_in_flight", NULL, st.in_flight);
    family(out, "chappe_destinations_backing_off", "gauge",
           "Destinations waiting for their next delivery attempt.");
    sample(out, "chappe_destinations_backing_off", NULL, st.backing_off);
}

static void render_keyfetch(struct mout *out, struct keyfetch *kf)
{
    struct keyfetch_stats st = {0};
    if (kf != NULL)
        keyfetch_get_stats(kf, &st);
    /* started and failed are not two results of one event (a fetch may still run): two
     * families, so that neither is summed into the other */
    family(out, "chappe_key_fetches_total", "counter", "Remote key fetches started.");
    sample(out, "chappe_key_fetches_total", NULL, st.fetches);
    family(out, "chappe_key_fetch_failures_total", "counter",
           "Remote key fetches that ended without a stored key document.");
    sample(out, "chappe_key_fetch_failures_total", NULL, st.failures);
    family(out, "chappe_key_fetch_asks_total", "counter",
           "Requests for an unknown key handed to the key fetcher, by result.");
    sample(out, "chappe_key_fetch_asks_total", "result=\"accepted\"", st.asks - st.refused);
    sample(out, "chappe_key_fetch_asks_total", "result=\"refused\"", st.refused);
}

int metrics_render(struct buf *b, const struct metrics_sources *src)
{
    struct mout o = {b, 0}, *out = &o;
    int rc = 0;
    render_requests(out);
    render_policy(out);
    render_auth(out);
    render_upstream(out);
    render_sender(out, src->sender);
    render_keyfetch(out, src->keyfetch);
    if (src->store != NULL) {
        rc = render_queue(out, src->store);
        if (rc == 0)
            rc = render_store(out, src->store);
    }
    return rc != 0 ? rc : o.err;
}
