/* test_http.c -- unit tests for src/http.c: head scanning, strict framing, validation, serializer.
 */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* Included to reach the static helpers (span, utf8_len, valid_host). */
#include "../../src/http.c"

/*
 * The chunked-body checks (CRLF after chunk data) need llhttp.c compiled with
 * -DLLHTTP_STRICT_MODE=1; they fail on a loose build, on purpose.
 */

#define R_SCAN_BAD       (-100)
#define R_SCAN_TOO_LARGE (-101)
#define R_SCAN_MORE      (-102)

/* What the callbacks saw. */
struct rec {
    int heads, completes;
    int head_rc, body_rc, complete_rc; /* what the callbacks return */
    struct buf body;
    struct http_msg msg; /* copy at on_head */
    const char *why;     /* from the scan */
};

static int rec_head(void *ud, struct http_msg *msg)
{
    struct rec *r = ud;
    r->heads++;
    r->msg = *msg;
    return r->head_rc;
}

static int rec_body(void *ud, const char *p, size_t n)
{
    struct rec *r = ud;
    assert_true(n > 0);
    if (r->body_rc)
        return r->body_rc;
    return buf_append(&r->body, p, n);
}

static int rec_complete(void *ud)
{
    struct rec *r = ud;
    r->completes++;
    return r->complete_rc;
}

static const struct http_parser_cb rec_cb = {rec_head, rec_body, rec_complete};

static void rec_init(struct rec *r)
{
    memset(r, 0, sizeof(*r));
    r->body = BUF_INIT;
}

/*
 * One message the way the server reads it: scan the head, feed exactly the
 * head, then the rest as body (in pieces of step bytes, 0 for all at once).
 * Returns HTTP_PAUSED (complete, *used bytes), 0 (incomplete), or an error.
 */
static int run_step(struct http_parser *hp, const char *raw, size_t len, size_t step, size_t *used)
{
    size_t head_len = 0;
    const char *why = NULL;
    struct rec *r = hp->ud;
    *used = 0;
    int rc = http_scan_head(raw, len, 16384, &head_len, &why);
    if (rc == HTTP_SCAN_BAD) {
        assert_non_null(why);
        r->why = why;
        return R_SCAN_BAD;
    }
    if (rc == HTTP_SCAN_TOO_LARGE)
        return R_SCAN_TOO_LARGE;
    if (rc == HTTP_SCAN_MORE)
        return R_SCAN_MORE;
    size_t n = 0;
    rc = http_parser_feed(hp, raw, head_len, &n);
    if (rc < 0) {
        if (rc == CH_EPROTO)
            assert_non_null(hp->error);
        return rc;
    }
    if (rc == HTTP_PAUSED) {
        assert_int_equal(n, head_len);
        *used = n;
        return rc;
    }
    assert_int_equal(n, head_len);
    size_t off = head_len;
    while (off < len) {
        size_t chunk = step && len - off > step ? step : len - off;
        rc = http_parser_feed(hp, raw + off, chunk, &n);
        if (rc < 0)
            return rc;
        if (rc == HTTP_PAUSED) {
            assert_true(n <= chunk);
            *used = off + n;
            return rc;
        }
        assert_int_equal(n, chunk);
        off += chunk;
    }
    *used = len;
    return 0;
}

static int run_type(llhttp_type_t type, struct http_parser *hp, struct rec *r, const char *raw,
                    size_t len, size_t *used)
{
    http_parser_init(hp, type, &rec_cb, r);
    size_t u;
    return run_step(hp, raw, len, 0, used ? used : &u);
}

#define RUN_REQ(hp, r, s)  run_type(HTTP_REQUEST, (hp), (r), (s), sizeof(s) - 1, NULL)
#define RUN_RESP(hp, r, s) run_type(HTTP_RESPONSE, (hp), (r), (s), sizeof(s) - 1, NULL)

/* A request that must be refused, by the scan (400 and close) or by the parser. */
static void refused_n(llhttp_type_t type, const char *raw, size_t len, const char *what)
{
    struct http_parser hp;
    struct rec r;
    rec_init(&r);
    int rc = run_type(type, &hp, &r, raw, len, NULL);
    if (rc != R_SCAN_BAD && rc != CH_EPROTO)
        fail_msg("%s: accepted (rc %d)", what, rc);
    if (rc == CH_EPROTO)
        assert_non_null(hp.error);
    assert_int_equal(r.completes, 0);
    buf_free(&r.body);
}

#define REFUSED(s)      refused_n(HTTP_REQUEST, (s), sizeof(s) - 1, #s)
#define REFUSED_RESP(s) refused_n(HTTP_RESPONSE, (s), sizeof(s) - 1, #s)

/*
 * Same, but bypassing the scan: the parser alone must refuse (a caller that
 * forgot http_scan_head() gets the same strictness).
 */
static void parser_refuses_n(const char *raw, size_t len, const char *what)
{
    struct http_parser hp;
    struct rec r;
    size_t used;
    rec_init(&r);
    http_parser_init(&hp, HTTP_REQUEST, &rec_cb, &r);
    int rc = http_parser_feed(&hp, raw, len, &used);
    if (rc != CH_EPROTO)
        fail_msg("%s: parser returned %d", what, rc);
    assert_non_null(hp.error);
    assert_int_equal(r.heads, 0);
    buf_free(&r.body);
}

#define PARSER_REFUSES(s) parser_refuses_n((s), sizeof(s) - 1, #s)

static int scan(const char *s, size_t max, size_t *head_len, const char **why)
{
    return http_scan_head(s, strlen(s), max, head_len, why);
}

/* --- http_scan_head ------------------------------------------------------------------ */

static void test_scan_done(void **state)
{
    (void)state;
    size_t hl;
    const char *why = NULL;
    const char *s = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(scan(s, 16384, &hl, &why), HTTP_SCAN_DONE);
    assert_int_equal(hl, strlen(s));
    /* Bytes after the head are not looked at, even NUL and bare LF. */
    static const char after[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n\0\n\r garbage";
    assert_int_equal(http_scan_head(after, sizeof(after) - 1, 16384, &hl, &why), HTTP_SCAN_DONE);
    assert_int_equal(hl, strlen(s));
    /* Leading empty lines are allowed and counted (RFC 9112 section 2.2). */
    assert_int_equal(scan("\r\n\r\nGET / HTTP/1.1\r\n\r\n", 16384, &hl, &why), HTTP_SCAN_DONE);
    assert_int_equal(hl, 4 + 18);
    /* HTAB and obs-text in field values are fine; empty values too. */
    assert_int_equal(scan("GET / HTTP/1.1\r\nX: a\tb\xc3\xa9\r\nY:\r\n\r\n", 16384, &hl, &why),
                     HTTP_SCAN_DONE);
    /* A status line with HTAB-free reason and obs-text. */
    assert_int_equal(scan("HTTP/1.1 200 \xc3\xa9t\xc3\xa9\r\n\r\n", 16384, &hl, &why),
                     HTTP_SCAN_DONE);
}

static void test_scan_more_and_too_large(void **state)
{
    (void)state;
    size_t hl;
    const char *why = NULL;
    const char *s = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(http_scan_head(s, i, 16384, &hl, &why), HTTP_SCAN_MORE);
    assert_int_equal(scan("", 16384, &hl, &why), HTTP_SCAN_MORE);
    assert_int_equal(scan("\r\n", 16384, &hl, &why), HTTP_SCAN_MORE);
    /* Exactly max bytes fits; one byte less does not. */
    assert_int_equal(http_scan_head(s, len, len, &hl, &why), HTTP_SCAN_DONE);
    assert_int_equal(http_scan_head(s, len, len - 1, &hl, &why), HTTP_SCAN_TOO_LARGE);
    assert_int_equal(http_scan_head(s, len - 1, len - 1, &hl, &why), HTTP_SCAN_TOO_LARGE);
    assert_int_equal(http_scan_head(s, len - 2, len - 1, &hl, &why), HTTP_SCAN_MORE);
    /* Leading empty lines count against max. */
    assert_int_equal(scan("\r\n\r\n\r\n\r\n", 8, &hl, &why), HTTP_SCAN_TOO_LARGE);
    assert_int_equal(http_scan_head(s, len, 0, &hl, &why), HTTP_SCAN_TOO_LARGE);
}

static void test_scan_max_fields(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    size_t hl;
    const char *why = NULL;
    assert_int_equal(buf_append_str(&b, "GET / HTTP/1.1\r\n"), 0);
    for (int i = 0; i < HTTP_MAX_FIELDS; i++)
        assert_int_equal(buf_appendf(&b, "X-%d: %d\r\n", i, i), 0);
    assert_int_equal(buf_append_str(&b, "\r\n"), 0);
    assert_int_equal(http_scan_head(buf_data(&b), b.len, 1 << 20, &hl, &why), HTTP_SCAN_DONE);
    /* And the parser takes all of them. */
    struct http_parser hp;
    struct rec r;
    size_t used;
    rec_init(&r);
    http_parser_init(&hp, HTTP_REQUEST, &rec_cb, &r);
    assert_int_equal(http_parser_feed(&hp, buf_data(&b), b.len, &used), HTTP_PAUSED);
    assert_int_equal(r.msg.nfields, HTTP_MAX_FIELDS);
    assert_true(slice_eq_str(r.msg.fields[99].name, "X-99"));
    assert_true(slice_eq_str(r.msg.fields[99].value, "99"));
    /* One more is too large (431), and the parser refuses it too. */
    b.len -= 2;
    assert_int_equal(buf_append_str(&b, "X-Last: 1\r\n\r\n"), 0);
    assert_int_equal(http_scan_head(buf_data(&b), b.len, 1 << 20, &hl, &why), HTTP_SCAN_TOO_LARGE);
    http_parser_init(&hp, HTTP_REQUEST, &rec_cb, &r);
    assert_int_equal(http_parser_feed(&hp, buf_data(&b), b.len, &used), CH_EPROTO);
    assert_string_equal(hp.error, "too many header fields");
    buf_free(&b);
    buf_free(&r.body);
}

static void scan_bad(const char *s, size_t len, const char *want_why)
{
    size_t hl = 7;
    const char *why = NULL;
    int rc = http_scan_head(s, len, 16384, &hl, &why);
    if (rc != HTTP_SCAN_BAD)
        fail_msg("scan of %zu bytes returned %d, want BAD (%s)", len, rc, want_why);
    assert_non_null(why);
    if (want_why)
        assert_string_equal(why, want_why);
    assert_int_equal(hl, 0);
}

#define SCAN_BAD(s, why) scan_bad((s), sizeof(s) - 1, (why))

static void test_scan_bad(void **state)
{
    (void)state;
    SCAN_BAD("GET / HTTP/1.1\rHost: a\r\n\r\n", "bare CR in message head");
    SCAN_BAD("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", "bare CR in message head");
    SCAN_BAD("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", "bare CR in message head");
    SCAN_BAD("GET / HTTP/1.1\r\r\n", "bare CR in message head");
    SCAN_BAD("GET / HTTP/1.1\nHost: a\r\n\r\n", "bare LF in message head");
    SCAN_BAD("GET / HTTP/1.1\r\nHost: a\n\r\n", "bare LF in message head");
    SCAN_BAD("GET / HTTP/1.1\r\nHost: a\r\n\n", "bare LF in message head");
    SCAN_BAD("\nGET / HTTP/1.1\r\n\r\n", "bare LF in message head");
    SCAN_BAD("GET /\0 HTTP/1.1\r\n\r\n", "control character in start line");
    SCAN_BAD("GET\t/ HTTP/1.1\r\n\r\n", "control character in start line");
    SCAN_BAD("GET /\x7f HTTP/1.1\r\n\r\n", "control character in start line");
    SCAN_BAD("GET / HTTP/1.1\x01\r\n\r\n", "control character in start line");
    SCAN_BAD("GET / HTTP/1.1\r\nHo\0st: a\r\n\r\n", "invalid character in field name");
    SCAN_BAD("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", "control character in field value");
    SCAN_BAD("GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", "control character in field value");
    SCAN_BAD("GET / HTTP/1.1\r\nHost: a\x1f\r\n\r\n", "control character in field value");
    SCAN_BAD("GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n", "control character in field value");
    SCAN_BAD("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
             "obsolete line folding (field line starting with whitespace)");
    SCAN_BAD("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n",
             "obsolete line folding (field line starting with whitespace)");
    SCAN_BAD("GET / HTTP/1.1\r\n Host: a\r\n\r\n",
             "obsolete line folding (field line starting with whitespace)");
    SCAN_BAD("GET / HTTP/1.1\r\nHost : a\r\n\r\n", "whitespace between field name and colon");
    SCAN_BAD("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", "whitespace between field name and colon");
    SCAN_BAD("GET / HTTP/1.1\r\nHost a\r\n\r\n", "whitespace between field name and colon");
    SCAN_BAD("GET / HTTP/1.1\r\nHost\r\n\r\n", "field line without a colon");
    SCAN_BAD("GET / HTTP/1.1\r\n: a\r\n\r\n", "empty field name");
    SCAN_BAD("GET / HTTP/1.1\r\nX(y): a\r\n\r\n", "invalid character in field name");
    SCAN_BAD("GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n", "invalid character in field name");
    SCAN_BAD("GET / HTTP/1.1\r\nX\"y: a\r\n\r\n", "invalid character in field name");
    /* A violation is reported as soon as it is seen, before the head is complete. */
    SCAN_BAD("GET / HTTP/1.1\r\nX: \0", "control character in field value");
    SCAN_BAD("GET / HTTP/1.1\r\nX: a\r\n ", NULL);
}

/* --- proxy targets (egress listener) ---------------------------------------------------- */

static int run_proxy(struct http_parser *hp, struct rec *r, const char *raw, size_t len,
                     size_t *used)
{
    http_parser_init(hp, HTTP_REQUEST, &rec_cb, r);
    http_parser_allow_proxy_targets(hp);
    size_t u;
    return run_step(hp, raw, len, 0, used ? used : &u);
}

static void test_proxy_absolute_form(void **state)
{
    (void)state;
    struct http_parser hp;
    struct rec r;
    size_t used;
    const char *why = NULL;
    static const char req[] =
        "GET matrix-federation://a.example:8448/_matrix/federation/v1/version?x=%2F HTTP/1.1\r\n"
        "Host: a.example:8448\r\n\r\n";
    rec_init(&r);
    assert_int_equal(run_proxy(&hp, &r, req, sizeof(req) - 1, &used), HTTP_PAUSED);
    assert_int_equal(used, sizeof(req) - 1);
    assert_true(slice_eq_str(r.msg.method, "GET"));
    assert_true(slice_eq_str(
        r.msg.target, "matrix-federation://a.example:8448/_matrix/federation/v1/version?x=%2F"));
    assert_int_equal(r.msg.nfields, 1);
    assert_true(slice_eq_str(r.msg.fields[0].value, "a.example:8448"));
    assert_int_equal(http_msg_validate_proxy_request(&r.msg, &why), 0);
    assert_int_equal(http_msg_validate_request(&r.msg, &why), CH_EPROTO);
    assert_string_equal(why, "request-target is not in origin-form");
    buf_free(&r.body);

    /* a body, HTTP/1.0, and the next request on the same parser */
    static const char two[] = "PUT https://a.example/_matrix/federation/v1/send/1 HTTP/1.1\r\n"
                              "Host: a.example\r\nContent-Length: 2\r\n\r\n{}"
                              "GET https://b.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n";
    rec_init(&r);
    size_t first = sizeof(two) - 1 -
                   strlen("GET https://b.example/x HTTP/1.1\r\nHost: "
                          "b.example\r\n\r\n");
    assert_int_equal(run_proxy(&hp, &r, two, first, &used), HTTP_PAUSED);
    assert_true(slice_eq_str(r.msg.method, "PUT"));
    assert_int_equal(r.msg.http_minor, 1);
    assert_int_equal(r.body.len, 2);
    assert_memory_equal(buf_data(&r.body), "{}", 2);
    http_parser_next(&hp);
    assert_int_equal(run_step(&hp, two + first, sizeof(two) - 1 - first, 0, &used), HTTP_PAUSED);
    assert_true(slice_eq_str(r.msg.target, "https://b.example/x"));
    assert_int_equal(r.completes, 2);
    buf_free(&r.body);

    /* the version is the request's own, not that of the line llhttp is given */
    static const char old[] = "GET https://a.example/x HTTP/1.0\r\n\r\n";
    rec_init(&r);
    assert_int_equal(run_proxy(&hp, &r, old, sizeof(old) - 1, &used), HTTP_PAUSED);
    assert_int_equal(r.msg.http_minor, 0);
    assert_false(r.msg.keep_alive);
    buf_free(&r.body);
}

static void test_proxy_connect(void **state)
{
    (void)state;
    struct http_parser hp;
    struct rec r;
    size_t used;
    const char *why = NULL;
    /* the bytes after the head belong to the tunnel, not to the parser */
    static const char req[] = "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"
                              "\x16\x03\x01";
    rec_init(&r);
    assert_int_equal(run_proxy(&hp, &r, req, sizeof(req) - 1, &used), HTTP_PAUSED);
    assert_int_equal(used, sizeof(req) - 1 - 3);
    assert_true(slice_eq_str(r.msg.method, "CONNECT"));
    assert_true(slice_eq_str(r.msg.target, "a.example:443"));
    assert_int_equal(r.body.len, 0);
    assert_int_equal(http_msg_validate_proxy_request(&r.msg, &why), 0);
    assert_int_equal(http_msg_validate_request(&r.msg, &why), CH_EPROTO);
    buf_free(&r.body);

    static const char body[] = "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example\r\n"
                               "Content-Length: 5\r\n\r\nhello";
    rec_init(&r);
    assert_int_equal(run_proxy(&hp, &r, body, sizeof(body) - 1, &used), CH_EPROTO);
    assert_string_equal(hp.error, "CONNECT with Content-Length or Transfer-Encoding");
    assert_int_equal(r.heads, 0);
    buf_free(&r.body);
}

static void test_proxy_targets_only_when_asked(void **state)
{
    (void)state;
    struct http_parser hp;
    struct rec r;
    /* the federation listener's parser keeps refusing them */
    rec_init(&r);
    assert_int_equal(RUN_REQ(&hp, &r,
                             "GET matrix-federation://a.example/x HTTP/1.1\r\n"
                             "Host: a.example\r\n\r\n"),
                     CH_EPROTO);
    buf_free(&r.body);
    /* the start line is as strict as ever: a control byte in the target */
    refused_n(HTTP_REQUEST, "GET https://a.example/\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 41,
              "control byte in an absolute-form target");
    rec_init(&r);
    static const char bad[] = "GET https://a.example/x\x7f HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t used;
    assert_int_not_equal(run_proxy(&hp, &r, bad, sizeof(bad) - 1, &used), HTTP_PAUSED);
    assert_int_equal(r.heads, 0);
    buf_free(&r.body);
}

/* --- parsing: good messages ----------------------------------------------------------- */

static void test_parse_get(void **state)
{
    (void)state;
    struct http_parser hp;
    struct rec r;
    size_t used;
    static const char req[] = "GET /_matrix/key/v2/server?x=1 HTTP/1.1\r\n"
                              "Host: example.org:8448\r\n"
                              "X-Empty:\r\n"
                              "X-Spaces: \t value with spaces \t \r\n"
                              "\r\n";
    rec_init(&r);
    assert_int_equal(run_type(HTTP_REQUEST, &hp, &r, req, sizeof(req) - 1, &used), HTTP_PAUSED);
    assert_int_equal(used, sizeof(req) - 1);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.completes, 1);
    assert_true(r.msg.is_request);
    assert_true(slice_eq_str(r.msg.method, "GET"));
    assert_true(slice_eq_str(r.msg.target, "/_matrix/key/v2/server?x=1"));
    assert_int_equal(r.msg.http_major, 1);
    assert_int_equal(r.msg.http_minor, 1);
    assert_int_equal(r.msg.nfields, 3);
    assert_true(slice_eq_str(r.msg.fields[0].name, "Host"));
    assert_true(slice_eq_str(r.msg.fields[0].value, "example.org:8448"));
    assert_true(slice_eq_str(r.msg.fields[1].name, "X-Empty"));
    assert_non_null(r.msg.fields[1].value.base);
    assert_int_equal(r.msg.fields[1].value.len, 0);
    assert_true(slice_eq_str(r.msg.fields[2].value, "value with spaces"));
    assert_int_equal(r.msg.content_length, -1);
    assert_false(r.msg.chunked);
    assert_true(r.msg.keep_alive);
    assert_false(r.msg.expect_continue);
    /* The slices point into the bytes given. */
    assert_ptr_equal(r.msg.method.base, req);
    assert_ptr_equal(hp.msg.fields[0].value.base, req + 47);
    assert_non_null(http_msg_field(&hp.msg, "HOST"));
    assert_null(http_msg_field(&hp.msg, "Hos"));
    assert_int_equal(http_msg_count(&hp.msg, "host"), 1);
    const char *why = NULL;
    assert_int_equal(http_msg_validate_request(&hp.msg, &why), 0);
    buf_free(&r.body);
}

static void test_parse_content_length_body(void **state)
{
    (void)state;
    static const char req[] = "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 011\r\n\r\n"
                              "hello worldGET / HTTP/1.1\r\n";
    size_t head = strstr(req, "hello") - req;
    for (size_t step = 0; step <= 12; step++) {
        struct http_parser hp;
        struct rec r;
        size_t used;
        rec_init(&r);
        http_parser_init(&hp, HTTP_REQUEST, &rec_cb, &r);
        assert_int_equal(run_step(&hp, req, sizeof(req) - 1, step, &used), HTTP_PAUSED);
        assert_int_equal(used, head + 11);
        assert_int_equal(r.msg.content_length, 11);
        assert_int_equal(r.body.len, 11);
        assert_memory_equal(buf_data(&r.body), "hello world", 11);
        assert_int_equal(r.completes, 1);
        buf_free(&r.body);
    }
}

static void test_parse_chunked_body(void **state)
{
    (void)state;
    static const char req[] = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n"
                              "5\r\nhello\r\n"
                              "6\r\n world\r\n"
                              "A\r\n0123456789\r\n"
                              "0\r\n\r\n"
                              "NEXT";
    size_t len = sizeof(req) - 1 - 4;
    /* Every split of the body into pieces gives the same result. */
    for (size_t step = 0; step <= 8; step++) {
        struct http_parser hp;
        struct rec r;
        size_t used;
        rec_init(&r);
        http_parser_init(&hp, HTTP_REQUEST, &rec_cb, &r);
        assert_int_equal(run_step(&hp, req, sizeof(req) - 1, step, &used), HTTP_PAUSED);
        assert_int_equal(used, len);
        assert_true(r.msg.chunked);
        assert_int_equal(r.msg.content_length, -1);
        assert_int_equal(r.body.len, 21);
        assert_memory_equal(buf_data(&r.body), "hello world0123456789", 21);
        buf_free(&r.body);
    }
    /* Split the body at every single position into two feeds. */
    size_t head = strstr(req, "5\r\n") - req;
    for (size_t cut = head + 1; cut < len; cut++) {
        struct http_parser hp;
        struct rec r;
        size_t used;
        rec_init(&r);
        http_parser_init(&hp, HTTP_REQUEST, &rec_cb, &r);
        assert_int_equal(http_parser_feed(&hp, req, head, &used), 0);
        assert_int_equal(http_parser_feed(&hp, req + head, cut - head, &used), 0);
        assert_int_equal(used, cut - head);
        assert_int_equal(http_parser_feed(&hp, req + cut, sizeof(req) - 1 - cut, &used),
                         HTTP_PAUSED);
        assert_int_equal(used, len - cut);
        assert_memory_equal(buf_data(&r.body), "hello world0123456789", 21);
        buf_free(&r.body);
    }
}

static void test_parse_pipelined(void **state)
{
    (void)state;
    static const char reqs[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                               "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nxy"
                               "\r\n" /* an empty line between requests is allowed */
                               "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "1\r\nz\r\n0\r\n\r\n"
                               "GET /4 HTTP/1.0\r\n\r\n";
    const char *targets[] = {"/1", "/2", "/3", "/4"};
    const char *bodies[] = {"", "xy", "z", ""};
    struct http_parser hp;
    struct rec r;
    rec_init(&r);
    http_parser_init(&hp, HTTP_REQUEST, &rec_cb, &r);
    size_t off = 0;
    for (int i = 0; i < 4; i++) {
        size_t used;
        buf_reset(&r.body);
        assert_int_equal(run_step(&hp, reqs + off, sizeof(reqs) - 1 - off, 0, &used), HTTP_PAUSED);
        assert_true(slice_eq_str(r.msg.target, targets[i]));
        assert_true(slice_eq(buf_slice(&r.body), (struct slice){bodies[i], strlen(bodies[i])}));
        assert_int_equal(r.completes, i + 1);
        assert_int_equal(r.msg.keep_alive, i < 3);
        /* Paused: another feed without http_parser_next() consumes nothing. */
        size_t n = 99;
        assert_int_equal(http_parser_feed(&hp, "GET", 3, &n), HTTP_PAUSED);
        assert_int_equal(n, 0);
        off += used;
        http_parser_next(&hp);
        assert_true(hp.in_head);
        assert_int_equal(hp.msg.nfields, 0);
        assert_int_equal(hp.msg.content_length, -1);
    }
    assert_int_equal(off, sizeof(reqs) - 1);
    buf_free(&r.body);
}

static void test_parse_keep_alive_expect(void **state)
{
    (void)state;
    struct http_parser hp;
    struct rec r;
    rec_init(&r);
    assert_int_equal(RUN_REQ(&hp, &r, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
                     HTTP_PAUSED);
    assert_false(r.msg.keep_alive);
    assert_int_equal(RUN_REQ(&hp, &r, "GET / HTTP/1.0\r\n\r\n"), HTTP_PAUSED);
    assert_false(r.msg.keep_alive);
    assert_int_equal(RUN_REQ(&hp, &r, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
                     HTTP_PAUSED);
    assert_true(r.msg.keep_alive);
    assert_int_equal(r.msg.http_minor, 0);
    assert_int_equal(
        RUN_REQ(&hp, &r,
                "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n"),
        0);
    assert_true(r.msg.expect_continue);
    assert_int_equal(
        RUN_REQ(
            &hp, &r,
            "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\nContent-Length: 1\r\n\r\n"),
        0);
    assert_false(r.msg.expect_continue);
    buf_free(&r.body);
}

static void test_parse_content_length_limits(void **state)
{
    (void)state;
    struct http_parser hp;
    struct rec r;
    rec_init(&r);
    assert_int_equal(
        RUN_REQ(&hp, &r,
                "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n"),
        0);
    assert_int_equal(r.msg.content_length, INT64_MAX);
    assert_int_equal(RUN_REQ(&hp, &r, "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
                     HTTP_PAUSED);
    assert_int_equal(r.msg.content_length, 0);
    /* OWS around the value is not part of it (RFC 9110 section 5.5). */
    assert_int_equal(RUN_REQ(&hp, &r, "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length:  1 \r\n\r\nx"),
                     HTTP_PAUSED);
    assert_int_equal(r.msg.content_length, 1);
    buf_free(&r.body);
}

/* Upgrade is not honoured: the request is an ordinary one, the next bytes are HTTP again. */
static void test_parse_upgrade_and_connect(void **state)
{
    (void)state;
    static const char req[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
                              "Upgrade: websocket\r\n\r\n"
                              "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    struct http_parser hp;
    struct rec r;
    size_t used;
    rec_init(&r);
    assert_int_equal(run_type(HTTP_REQUEST, &hp, &r, req, sizeof(req) - 1, &used), HTTP_PAUSED);
    const char *why = NULL;
    assert_int_equal(http_msg_validate_request(&hp.msg, &why), 0);
    assert_true(http_is_hop_by_hop(&hp.msg, SLICE_LIT("Upgrade")));
    http_parser_next(&hp);
    assert_int_equal(run_step(&hp, req + used, sizeof(req) - 1 - used, 0, &used), HTTP_PAUSED);
    assert_true(slice_eq_str(r.msg.target, "/2"));

    /* Upgrade with a body. */
    static const char req2[] = "POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n"
                               "Upgrade: x\r\nContent-Length: 1\r\n\r\nzGET";
    assert_int_equal(run_type(HTTP_REQUEST, &hp, &r, req2, sizeof(req2) - 1, &used), HTTP_PAUSED);
    assert_int_equal(used, sizeof(req2) - 1 - 3);

    /* CONNECT parses (no body) and is refused by validation. */
    assert_int_equal(RUN_REQ(&hp, &r, "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
                     HTTP_PAUSED);
    assert_int_equal(http_msg_validate_request(&hp.msg, &why), CH_EPROTO);
    assert_string_equal(why, "CONNECT is not supported");
    buf_free(&r.body);
}

/* --- parsing: refused framing ---------------------------------------------------------- */

static void test_refuse_cl_te(void **state)
{
    (void)state;
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            "0\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"
            "0\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"
            "0\r\n\r\n");
    REFUSED_RESP("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "0\r\n\r\n");
}

static void test_refuse_content_length(void **state)
{
    (void)state;
    /* Two Content-Length: different values, and identical ones too (fail closed). */
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nxxxxx");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nxxxxx");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\nxxxxx");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nxxxxx");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\nxxxxx");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n");
    REFUSED_RESP("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
}

static void test_refuse_transfer_encoding(void **state)
{
    (void)state;
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n");
    REFUSED("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n0\r\n\r\n");
    /* RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing. */
    REFUSED("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    /* Responses: llhttp would read "gzip" until close; chappe refuses. */
    REFUSED_RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxyz");
    REFUSED_RESP("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nxyz");
    REFUSED_RESP("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
}

#define CHUNKED_HEAD "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_refuse_chunk_framing(void **state)
{
    (void)state;
    REFUSED(CHUNKED_HEAD "0x10\r\n0123456789abcdef\r\n0\r\n\r\n");
    REFUSED(CHUNKED_HEAD "-1\r\nx\r\n0\r\n\r\n");
    REFUSED(CHUNKED_HEAD "zz\r\n");
    REFUSED(CHUNKED_HEAD "\r\nx\r\n0\r\n\r\n");
    REFUSED(CHUNKED_HEAD "+1\r\nx\r\n0\r\n\r\n");
    REFUSED(CHUNKED_HEAD " 1\r\nx\r\n0\r\n\r\n");
    REFUSED(CHUNKED_HEAD "1 \r\nx\r\n0\r\n\r\n");
    REFUSED(CHUNKED_HEAD "10000000000000000\r\n");
    REFUSED(CHUNKED_HEAD "ffffffffffffffffff\r\n");
    /* Chunk-size line and chunk data must end in CRLF. */
    REFUSED(CHUNKED_HEAD "1\nx\r\n0\r\n\r\n");
    REFUSED(CHUNKED_HEAD "1\rXx\r\n0\r\n\r\n");
    REFUSED(CHUNKED_HEAD "1\r\nxy\r\n0\r\n\r\n"); /* needs LLHTTP_STRICT_MODE */
    REFUSED(CHUNKED_HEAD "1\r\nx\n0\r\n\r\n");    /* needs LLHTTP_STRICT_MODE */
    REFUSED(CHUNKED_HEAD "1\r\nx\r0\r\n\r\n");    /* needs LLHTTP_STRICT_MODE */
    REFUSED(CHUNKED_HEAD "1\r\nxAB0\r\n\r\n");    /* needs LLHTTP_STRICT_MODE */
    /* The end of the chunked body: CRLF, not a bare LF or CR. */
    REFUSED(CHUNKED_HEAD "0\r\n\n");
    REFUSED(CHUNKED_HEAD "1\r\nx\r\n0\r\n\n");
    REFUSED(CHUNKED_HEAD "0\r\n\rX");
    REFUSED(CHUNKED_HEAD "0\n\r\n");
    /* Chunk extensions and trailer fields are refused. */
    REFUSED(CHUNKED_HEAD "1;a=b\r\nx\r\n0\r\n\r\n");
    REFUSED(CHUNKED_HEAD "1;a\r\nx\r\n0\r\n\r\n");
    REFUSED(CHUNKED_HEAD "0;a=\"b\"\r\n\r\n");
    REFUSED(CHUNKED_HEAD "0\r\nX: y\r\n\r\n");
    REFUSED(CHUNKED_HEAD "0\r\nContent-Length: 5\r\n\r\n");
}

/* The end-of-body CRLF check when the last bytes arrive one feed at a time. */
static void test_chunked_end_split(void **state)
{
    (void)state;
    static const char good[] = CHUNKED_HEAD "1\r\nx\r\n0\r\n\r\n";
    static const char bad[] = CHUNKED_HEAD "1\r\nx\r\n0\r\n\n";
    for (size_t step = 1; step <= 3; step++) {
        struct http_parser hp;
        struct rec r;
        size_t used;
        rec_init(&r);
        http_parser_init(&hp, HTTP_REQUEST, &rec_cb, &r);
        assert_int_equal(run_step(&hp, good, sizeof(good) - 1, step, &used), HTTP_PAUSED);
        assert_int_equal(used, sizeof(good) - 1);
        http_parser_init(&hp, HTTP_REQUEST, &rec_cb, &r);
        assert_int_equal(run_step(&hp, bad, sizeof(bad) - 1, step, &used), CH_EPROTO);
        assert_string_equal(hp.error, "chunked body not ended by CRLF");
        buf_free(&r.body);
    }
}

static void test_refuse_obs_fold_and_whitespace(void **state)
{
    (void)state;
    REFUSED("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n");
    REFUSED("GET / HTTP/1.1\r\nHost : a\r\n\r\n");
    REFUSED("GET / HTTP/1.1\r\n Host: a\r\n\r\n");
    /* The parser refuses them by itself (it scans the head again). */
    PARSER_REFUSES("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n");
    PARSER_REFUSES("GET / HTTP/1.1\r\nHost : a\r\n\r\n");
    PARSER_REFUSES("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n");
    PARSER_REFUSES("GET / HTTP/1.1\r\nHost: a\n\r\n");
    PARSER_REFUSES("GET / HTTP/1.1\nHost: a\n\n");
    PARSER_REFUSES("GET / HTTP/1.1\r\nHost: a\0\r\n\r\n");
    PARSER_REFUSES("GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n");
    PARSER_REFUSES("GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n");
    /* A head fed in two pieces breaks the contract and is refused. */
    PARSER_REFUSES("GET / HTTP/1.1\r\nHost: a\r\n");
}

/* Copy tmpl with its one '@' replaced by c. */
static int put_control(char *buf, size_t cap, const char *tmpl, int c)
{
    size_t n = strlen(tmpl);
    assert_true(n < cap);
    memcpy(buf, tmpl, n + 1);
    *strchr(buf, '@') = (char)c;
    return (int)n;
}

static void test_refuse_control_bytes(void **state)
{
    (void)state;
    /* Every control byte other than HTAB (and CR LF at line ends), in every part of the head. */
    for (int c = 0; c < 0x20; c++) {
        if (c == '\r' || c == '\n')
            continue;
        char buf[128];
        int n = put_control(buf, sizeof(buf), "GET /a@b HTTP/1.1\r\nHost: a\r\n\r\n", c);
        refused_n(HTTP_REQUEST, buf, (size_t)n, "control in target");
        parser_refuses_n(buf, (size_t)n, "control in target");
        n = put_control(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX@: 1\r\n\r\n", c);
        refused_n(HTTP_REQUEST, buf, (size_t)n, "control in name");
        parser_refuses_n(buf, (size_t)n, "control in name");
        if (c == '\t')
            continue;
        n = put_control(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: 1@2\r\n\r\n", c);
        refused_n(HTTP_REQUEST, buf, (size_t)n, "control in value");
        parser_refuses_n(buf, (size_t)n, "control in value");
    }
    REFUSED("GET / HTTP/1.1\r\nHost: a\r\nX: 1\x7f\r\n\r\n");
    REFUSED("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_refuse_request_line(void **state)
{
    (void)state;
    REFUSED("G@T / HTTP/1.1\r\nHost: a\r\n\r\n");
    REFUSED("GET  / HTTP/1.1\r\nHost: a\r\n\r\n");
    REFUSED("GET /  HTTP/1.1\r\nHost: a\r\n\r\n");
    REFUSED(" GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    REFUSED("GET / HTTP/1.1 \r\nHost: a\r\n\r\n");
    REFUSED("GET /\r\nHost: a\r\n\r\n");
    REFUSED("GET / \r\nHost: a\r\n\r\n");
    REFUSED("GET\r\nHost: a\r\n\r\n");
    REFUSED("GET / HTTP/0.9\r\n\r\n");
    REFUSED("GET / HTTP/1.2\r\nHost: a\r\n\r\n");
    REFUSED("GET / HTTP/2.0\r\nHost: a\r\n\r\n");
    REFUSED("GET / HTTP/1.10\r\nHost: a\r\n\r\n");
    REFUSED("GET / http/1.1\r\nHost: a\r\n\r\n");
    REFUSED("GET / HTTP/1\r\nHost: a\r\n\r\n");
    REFUSED("GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n");
    REFUSED("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n");
    REFUSED("FOO / HTTP/1.1\r\nHost: a\r\n\r\n"); /* llhttp knows its methods */
    REFUSED("get / HTTP/1.1\r\nHost: a\r\n\r\n");
    REFUSED("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\n\r\n");
}

/* --- parsing: responses ----------------------------------------------------------------- */

static void test_response_bodies(void **state)
{
    (void)state;
    struct http_parser hp;
    struct rec r;
    size_t used;
    rec_init(&r);
    assert_int_equal(RUN_RESP(&hp, &r, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
                     HTTP_PAUSED);
    assert_int_equal(r.msg.status, 200);
    assert_true(slice_eq_str(r.msg.reason, "OK"));
    assert_false(r.msg.is_request);
    assert_true(r.msg.keep_alive);
    assert_memory_equal(buf_data(&r.body), "hi", 2);

    /* Read until close (RFC 9112 section 6.3 item 8). */
    buf_reset(&r.body);
    r.completes = 0;
    assert_int_equal(RUN_RESP(&hp, &r, "HTTP/1.1 200 OK\r\n\r\nuntil close"), 0);
    assert_false(r.msg.keep_alive);
    assert_int_equal(r.completes, 0);
    assert_int_equal(http_parser_finish(&hp), HTTP_PAUSED);
    assert_int_equal(r.completes, 1);
    assert_int_equal(http_parser_finish(&hp), 0); /* not reported twice */
    assert_int_equal(r.completes, 1);
    assert_int_equal(r.body.len, 11);
    size_t n;
    assert_int_equal(http_parser_feed(&hp, "x", 1, &n), HTTP_PAUSED);

    /* A Content-Length body cut short. */
    assert_int_equal(RUN_RESP(&hp, &r, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi"), 0);
    assert_int_equal(http_parser_finish(&hp), CH_EPROTO);
    assert_non_null(hp.error);
    /* A chunked body cut short. */
    assert_int_equal(
        RUN_RESP(&hp, &r, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhi"), 0);
    assert_int_equal(http_parser_finish(&hp), CH_EPROTO);
    /* Between messages, EOF is clean. */
    assert_int_equal(RUN_RESP(&hp, &r, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
                     HTTP_PAUSED);
    http_parser_next(&hp);
    assert_int_equal(http_parser_finish(&hp), 0);

    /* No body after 204 and 304 whatever the fields say (RFC 9112 section 6.3 item 1). */
    static const char r204[] = "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/";
    assert_int_equal(run_type(HTTP_RESPONSE, &hp, &r, r204, sizeof(r204) - 1, &used), HTTP_PAUSED);
    assert_int_equal(used, sizeof(r204) - 1 - 5);
    assert_true(r.msg.keep_alive);
    assert_int_equal(
        RUN_RESP(&hp, &r, "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"),
        HTTP_PAUSED);
    assert_int_equal(RUN_RESP(&hp, &r, "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"), HTTP_PAUSED);
    assert_int_equal(r.msg.reason.len, 0);
    assert_int_equal(RUN_RESP(&hp, &r, "HTTP/1.0 200 \r\nContent-Length: 0\r\n\r\n"), HTTP_PAUSED);
    assert_false(r.msg.keep_alive);
    buf_free(&r.body);
}

static void test_response_interim_and_head(void **state)
{
    (void)state;
    static const char resp[] = "HTTP/1.1 100 Continue\r\n\r\n"
                               "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                               "Upgrade: x\r\n\r\n"
                               "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    struct http_parser hp;
    struct rec r;
    size_t used, off = 0;
    rec_init(&r);
    http_parser_init(&hp, HTTP_RESPONSE, &rec_cb, &r);
    int want[] = {100, 101, 200};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(run_step(&hp, resp + off, sizeof(resp) - 1 - off, 0, &used), HTTP_PAUSED);
        assert_int_equal(r.msg.status, want[i]);
        off += used;
        http_parser_next(&hp);
    }
    assert_int_equal(off, sizeof(resp) - 1);
    assert_memory_equal(buf_data(&r.body), "abc", 3);

    /* The response to HEAD: on_head returns 1, the Content-Length is not read. */
    r.head_rc = 1;
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1";
    assert_int_equal(run_type(HTTP_RESPONSE, &hp, &r, head, sizeof(head) - 1, &used), HTTP_PAUSED);
    assert_int_equal(used, sizeof(head) - 1 - 8);
    assert_int_equal(hp.msg.content_length, 1000);
    assert_true(hp.msg.keep_alive);
    /* Without Content-Length either. */
    assert_int_equal(RUN_RESP(&hp, &r, "HTTP/1.1 200 OK\r\n\r\n"), HTTP_PAUSED);
    assert_true(hp.msg.keep_alive);
    buf_free(&r.body);
}

static void test_refuse_status_line(void **state)
{
    (void)state;
    REFUSED_RESP("HTTP/1.1 20 OK\r\n\r\n");
    REFUSED_RESP("HTTP/1.1 2000 OK\r\n\r\n");
    REFUSED_RESP("HTTP/1.1 600 Nope\r\n\r\n");
    REFUSED_RESP("HTTP/1.1 099 Nope\r\n\r\n");
    REFUSED_RESP("HTTP/1.1 20x OK\r\n\r\n");
    REFUSED_RESP("HTTP/1.1  200 OK\r\n\r\n");
    REFUSED_RESP("HTTP/1.1 200OK\r\n\r\n");
    REFUSED_RESP("HTTP/2 200 OK\r\n\r\n");
    REFUSED_RESP("HTTP/1.2 200 OK\r\n\r\n");
    REFUSED_RESP("HTTP/0.9 200 OK\r\n\r\n");
    REFUSED_RESP("ICY 200 OK\r\n\r\n");
    REFUSED_RESP("HTTP/1.1 200 O\tK\r\n\r\n");
    REFUSED_RESP("GET / HTTP/1.1\r\n\r\n");
}

/* --- callbacks and errors --------------------------------------------------------------- */

static void test_callback_errors(void **state)
{
    (void)state;
    struct http_parser hp;
    struct rec r;
    size_t n;
    rec_init(&r);
    r.head_rc = CH_EPERM;
    assert_int_equal(RUN_REQ(&hp, &r, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), CH_EPERM);
    assert_int_equal(http_parser_feed(&hp, "x", 1, &n), CH_EPERM); /* sticky */
    assert_int_equal(n, 0);
    r.head_rc = 2;
    assert_int_equal(RUN_REQ(&hp, &r, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), CH_EINVAL);
    r.head_rc = 0;
    r.body_rc = CH_ETOOBIG;
    assert_int_equal(RUN_REQ(&hp, &r, "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"),
                     CH_ETOOBIG);
    assert_int_equal(http_parser_finish(&hp), CH_ETOOBIG);
    r.body_rc = 0;
    r.complete_rc = CH_ENOMEM;
    assert_int_equal(RUN_REQ(&hp, &r, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"), CH_ENOMEM);
    r.complete_rc = 0;
    /* A request whose body is skipped by on_head: the next bytes are the next message. */
    r.head_rc = 1;
    size_t used;
    static const char req[] = "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    assert_int_equal(run_type(HTTP_REQUEST, &hp, &r, req, sizeof(req) - 1, &used), HTTP_PAUSED);
    assert_int_equal(used, sizeof(req) - 1 - 3);
    /* Protocol errors are sticky, and say why. */
    r.head_rc = 0;
    assert_int_equal(RUN_REQ(&hp, &r, CHUNKED_HEAD "zz\r\n"), CH_EPROTO);
    const char *why = hp.error;
    assert_non_null(why);
    assert_int_equal(http_parser_feed(&hp, "0\r\n\r\n", 5, &n), CH_EPROTO);
    assert_ptr_equal(hp.error, why);
    assert_int_equal(http_parser_finish(&hp), CH_EPROTO);
    /* An empty feed does nothing. */
    http_parser_init(&hp, HTTP_REQUEST, &rec_cb, &r);
    assert_int_equal(http_parser_feed(&hp, "", 0, &n), 0);
    assert_true(hp.in_head);
    /* No callbacks at all. */
    http_parser_init(&hp, HTTP_REQUEST, NULL, NULL);
    static const char req2[] = "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx";
    assert_int_equal(http_parser_feed(&hp, req2, sizeof(req2) - 1, &n), HTTP_PAUSED);
    assert_int_equal(n, sizeof(req2) - 1);
    buf_free(&r.body);
}

/* The defensive check: a span whose pieces do not follow each other is refused. */
static void test_split_span(void **state)
{
    (void)state;
    struct http_parser hp;
    const char *text = "abcdef";
    struct slice s = {NULL, 0};
    http_parser_init(&hp, HTTP_REQUEST, NULL, NULL);
    assert_int_equal(span(&hp, &s, text, 2), 0);
    assert_int_equal(span(&hp, &s, text + 2, 2), 0);
    assert_true(slice_eq_str(s, "abcd"));
    assert_int_equal(span(&hp, &s, text + 5, 1), -1);
    assert_int_equal(hp.cb_error, CH_EPROTO);
    assert_string_equal(hp.error, "message head split across buffers");
    /* Driven through llhttp directly, as if a head had been fed in two pieces. */
    http_parser_init(&hp, HTTP_REQUEST, NULL, NULL);
    char a[] = "GET /ab", b[] = "cd HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(llhttp_execute(&hp.ll, a, strlen(a)), HPE_OK);
    assert_int_not_equal(llhttp_execute(&hp.ll, b, strlen(b)), HPE_OK);
    assert_int_equal(hp.cb_error, CH_EPROTO);
}

/* --- validation ------------------------------------------------------------------------- */

static struct http_msg make_req(const char *method, const char *target, unsigned minor)
{
    struct http_msg m;
    memset(&m, 0, sizeof(m));
    m.is_request = true;
    m.method = (struct slice){method, strlen(method)};
    m.target = (struct slice){target, strlen(target)};
    m.http_major = 1;
    m.http_minor = minor;
    m.content_length = -1;
    return m;
}

static void add_field(struct http_msg *m, const char *name, const char *value)
{
    m->fields[m->nfields++] = (struct http_field){{name, strlen(name)}, {value, strlen(value)}};
}

static int validate(const char *method, const char *target, unsigned minor, const char *host)
{
    struct http_msg m = make_req(method, target, minor);
    const char *why = NULL;
    if (host)
        add_field(&m, "Host", host);
    int rc = http_msg_validate_request(&m, &why);
    if (rc)
        assert_non_null(why);
    return rc;
}

static void test_validate_request(void **state)
{
    (void)state;
    assert_int_equal(validate("GET", "/", 1, "a"), 0);
    assert_int_equal(validate("GET", "/", 0, NULL), 0);
    assert_int_equal(validate("GET", "/", 1, NULL), CH_EPROTO);
    assert_int_equal(validate("GET", "/", 2, "a"), CH_EPROTO);
    struct http_msg m = make_req("GET", "/", 1);
    m.http_major = 2;
    m.http_minor = 0;
    add_field(&m, "Host", "a");
    const char *why = NULL;
    assert_int_equal(http_msg_validate_request(&m, &why), CH_EPROTO);
    /* Exactly one Host. */
    m = make_req("GET", "/", 1);
    add_field(&m, "Host", "a");
    add_field(&m, "host", "a");
    assert_int_equal(http_msg_validate_request(&m, &why), CH_EPROTO);
    assert_string_equal(why, "more than one Host");
    m = make_req("GET", "/", 0);
    add_field(&m, "Host", "a");
    add_field(&m, "HOST", "b");
    assert_int_equal(http_msg_validate_request(&m, &why), CH_EPROTO);
    /* An Upgrade header alone is no reason to refuse. */
    m = make_req("GET", "/", 1);
    add_field(&m, "Host", "a");
    add_field(&m, "Upgrade", "websocket");
    add_field(&m, "Connection", "upgrade");
    assert_int_equal(http_msg_validate_request(&m, &why), 0);
    /* A response is not a request. */
    m.is_request = false;
    assert_int_equal(http_msg_validate_request(&m, &why), CH_EPROTO);

    assert_int_equal(validate("CONNECT", "a:443", 1, "a:443"), CH_EPROTO);
    assert_int_equal(validate("CONNECT", "/", 1, "a"), CH_EPROTO);
    assert_int_equal(validate("", "/", 1, "a"), CH_EPROTO);
    assert_int_equal(validate("G T", "/", 1, "a"), CH_EPROTO);
}

static void test_validate_target(void **state)
{
    (void)state;
    const char *good[] = {
        "/",
        "//",
        "/_matrix/federation/v1/send/1234",
        "/_matrix/federation/v1/query/directory?room_alias=%23a%3Ab.org",
        "/_matrix/federation/v1/event/$abc:example.org",
        "/a/b;c=d/e?f=g&h=i+j",
        "/%20%7e%7E",
        "/-._~!$&'()*+,;=:@/?",
        "/?/?",
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++)
        if (validate("GET", good[i], 1, "a") != 0)
            fail_msg("refused target %s", good[i]);
    const char *bad[] = {
        "*",
        "http://a/b",
        "https://a/b",
        "matrix-federation://a/b",
        "a:443",
        "a",
        "",
        "/a#b",
        "/a b",
        "/%",
        "/%2",
        "/%zz",
        "/%2g",
        "/a|b",
        "/a\"b",
        "/a<b>",
        "/a\\b",
        "/a^b",
        "/a`b",
        "/a{b}",
        "/a[b]",
        "/\xc3\xa9",
        "/a\x7f",
        "/a\tb",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        if (validate("GET", bad[i], 1, "a") != CH_EPROTO)
            fail_msg("accepted target %s", bad[i]);
    struct http_msg m = make_req("GET", "/a%2", 1);
    m.target.len = 3; /* "/a%" with a '2' after the slice: not read */
    add_field(&m, "Host", "a");
    const char *why = NULL;
    assert_int_equal(http_msg_validate_request(&m, &why), CH_EPROTO);
}

static void test_validate_host(void **state)
{
    (void)state;
    const char *good[] = {
        "a",           "example.org",        "example.org:8448",
        "1.2.3.4",     "1.2.3.4:1",          "[::1]",
        "[::1]:8448",  "[2001:db8::1]",      "[::ffff:1.2.3.4]:65535",
        "my_host.lan", "UPPER.Example.ORG.", "a-b.c~d",
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++)
        if (validate("GET", "/", 1, good[i]) != 0)
            fail_msg("refused host %s", good[i]);
    const char *bad[] = {
        "",       " ",      "a b",   "a/b",          "a@b",  "a?b",     "a#b",
        "a,b",    "a;b",    "a%20b", "a:",           "a:0",  "a:65536", "a:123456",
        "a:8a",   "a:-1",   ":8448", "[::1",         "[]",   "[::1]x",  "[::1]:",
        "[x::1]", "user@a", "a:1:2", "\xc3\xa9.org", "a\tb", "a\x01",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        if (validate("GET", "/", 1, bad[i]) != CH_EPROTO)
            fail_msg("accepted host '%s'", bad[i]);
    char longhost[300];
    memset(longhost, 'a', sizeof(longhost) - 1);
    longhost[sizeof(longhost) - 1] = 0;
    assert_int_equal(validate("GET", "/", 1, longhost), CH_EPROTO);
    longhost[255] = 0;
    assert_int_equal(validate("GET", "/", 1, longhost), 0);
    /* Through the parser: the Host value is trimmed before it is checked. */
    struct http_parser hp;
    struct rec r;
    rec_init(&r);
    assert_int_equal(RUN_REQ(&hp, &r, "GET / HTTP/1.1\r\nHost:   a.org:8448  \r\n\r\n"),
                     HTTP_PAUSED);
    const char *why = NULL;
    assert_int_equal(http_msg_validate_request(&hp.msg, &why), 0);
    assert_int_equal(RUN_REQ(&hp, &r, "GET / HTTP/1.1\r\nHost: a.org b.org\r\n\r\n"), HTTP_PAUSED);
    assert_int_equal(http_msg_validate_request(&hp.msg, &why), CH_EPROTO);
    assert_string_equal(why, "invalid Host");
    buf_free(&r.body);
}

/* --- hop-by-hop ------------------------------------------------------------------------- */

static void test_hop_by_hop(void **state)
{
    (void)state;
    struct http_msg m = make_req("GET", "/", 1);
    const char *fixed[] = {"Connection",
                           "connection",
                           "Proxy-Connection",
                           "Keep-Alive",
                           "TE",
                           "Transfer-Encoding",
                           "UPGRADE",
                           "Trailer",
                           "Proxy-Authorization",
                           "Proxy-Authenticate",
                           "Proxy-Authentication-Info"};
    for (size_t i = 0; i < ARRAY_LEN(fixed); i++)
        assert_true(http_is_hop_by_hop(&m, (struct slice){fixed[i], strlen(fixed[i])}));
    const char *e2e[] = {
        "Content-Length", "Host", "Authorization", "Content-Type", "X-Foo", "Trailers", "T", "",
        "Connectio"};
    for (size_t i = 0; i < ARRAY_LEN(e2e); i++)
        assert_false(http_is_hop_by_hop(&m, (struct slice){e2e[i], strlen(e2e[i])}));

    /* Fields named in Connection (RFC 9110 section 7.6.1), over several Connection lines. */
    add_field(&m, "Connection", "close, X-Foo ,,\tx-bar\t");
    add_field(&m, "X-Foo", "1");
    add_field(&m, "connection", "X-Baz");
    add_field(&m, "Connection", "Content-Length, Host");
    assert_true(http_is_hop_by_hop(&m, SLICE_LIT("X-Foo")));
    assert_true(http_is_hop_by_hop(&m, SLICE_LIT("x-foo")));
    assert_true(http_is_hop_by_hop(&m, SLICE_LIT("X-Bar")));
    assert_true(http_is_hop_by_hop(&m, SLICE_LIT("X-BAZ")));
    assert_true(http_is_hop_by_hop(&m, SLICE_LIT("close")));
    assert_false(http_is_hop_by_hop(&m, SLICE_LIT("X-Fo")));
    assert_false(http_is_hop_by_hop(&m, SLICE_LIT("")));
    /* Never the framing or routing fields, whatever Connection says. */
    assert_false(http_is_hop_by_hop(&m, SLICE_LIT("Content-Length")));
    assert_false(http_is_hop_by_hop(&m, SLICE_LIT("host")));
}

/* --- serializer ------------------------------------------------------------------------- */

static void test_reason(void **state)
{
    (void)state;
    assert_string_equal(http_reason(200), "OK");
    assert_string_equal(http_reason(204), "No Content");
    assert_string_equal(http_reason(400), "Bad Request");
    assert_string_equal(http_reason(401), "Unauthorized");
    assert_string_equal(http_reason(403), "Forbidden");
    assert_string_equal(http_reason(404), "Not Found");
    assert_string_equal(http_reason(405), "Method Not Allowed");
    assert_string_equal(http_reason(408), "Request Timeout");
    assert_string_equal(http_reason(413), "Content Too Large");
    assert_string_equal(http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_reason(500), "Internal Server Error");
    assert_string_equal(http_reason(502), "Bad Gateway");
    assert_string_equal(http_reason(503), "Service Unavailable");
    assert_string_equal(http_reason(504), "Gateway Timeout");
    assert_string_equal(http_reason(299), "Unknown");
    assert_string_equal(http_reason(-1), "Unknown");
}

static void json_is(const char *in, size_t n, const char *want)
{
    struct buf b = BUF_INIT;
    assert_int_equal(http_append_json_string(&b, in, n), 0);
    if (!slice_eq_str(buf_slice(&b), want))
        fail_msg("json: got [%.*s] want [%s]", (int)b.len, buf_data(&b), want);
    buf_free(&b);
}

#define JSON_IS(in, want) json_is((in), sizeof(in) - 1, (want))

static void test_json_string(void **state)
{
    (void)state;
    JSON_IS("", "\"\"");
    JSON_IS("plain text", "\"plain text\"");
    JSON_IS("a\"b\\c/d", "\"a\\\"b\\\\c/d\"");
    JSON_IS("\b\f\n\r\t\v", "\"\\b\\f\\n\\r\\t\\u000b\"");
    JSON_IS("\0\x01\x1f\x7f", "\"\\u0000\\u0001\\u001f\x7f\"");
    /* Valid UTF-8 is kept, up to 4 bytes. */
    JSON_IS("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    JSON_IS("\xef\xbf\xbf\xf4\x8f\xbf\xbf", "\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\"");
    /* Invalid UTF-8 becomes U+FFFD, byte by byte. */
    JSON_IS("a\xff"
            "b",
            "\"a\xef\xbf\xbd"
            "b\"");
    JSON_IS("\x80", "\"\xef\xbf\xbd\"");
    JSON_IS("\xc3", "\"\xef\xbf\xbd\"");                                 /* truncated */
    JSON_IS("\xc3(", "\"\xef\xbf\xbd(\"");                               /* bad continuation */
    JSON_IS("\xc0\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\"");                 /* overlong */
    JSON_IS("\xe0\x80\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""); /* overlong */
    JSON_IS("\xed\xa0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""); /* surrogate */
    JSON_IS("\xf4\x90\x80\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    JSON_IS("\xf8\x88\x80\x80\x80",
            "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    JSON_IS("\xe2\x82", "\"\xef\xbf\xbd\xef\xbf\xbd\"");
    /* Appends to what is there. */
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append_str(&b, "x="), 0);
    assert_int_equal(http_append_json_string(&b, "y", 1), 0);
    assert_true(slice_eq_str(buf_slice(&b), "x=\"y\""));
    buf_free(&b);
    /* utf8_len directly. */
    assert_int_equal(utf8_len((const unsigned char *)"\xf0\x90\x80\x80", 4), 4);
    assert_int_equal(utf8_len((const unsigned char *)"\xf0\x90\x80\x80", 3), 0);
    assert_int_equal(utf8_len((const unsigned char *)"\xed\x9f\xbf", 3), 3);
    assert_int_equal(utf8_len((const unsigned char *)"\xf5\x80\x80\x80", 4), 0);
}

/* Parse what http_error_response() wrote with our own response parser. */
static void test_error_response(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append_str(&b, "prefix"), 0);
    assert_int_equal(
        http_error_response(&b, 413, "M_TOO_LARGE", "too \"big\"\n", true, "Retry-After: 5\r\n"),
        0);
    static const char want[] = "prefixHTTP/1.1 413 Content Too Large\r\n"
                               "Content-Type: application/json\r\n"
                               "Content-Length: 49\r\n"
                               "Connection: close\r\n"
                               "Retry-After: 5\r\n"
                               "\r\n"
                               "{\"errcode\":\"M_TOO_LARGE\",\"error\":\"too \\\"big\\\"\\n\"}";
    assert_int_equal(b.len, sizeof(want) - 1);
    assert_memory_equal(buf_data(&b), want, sizeof(want) - 1);

    struct http_parser hp;
    struct rec r;
    size_t used;
    rec_init(&r);
    const char *resp = buf_data(&b) + 6;
    assert_int_equal(run_type(HTTP_RESPONSE, &hp, &r, resp, b.len - 6, &used), HTTP_PAUSED);
    assert_int_equal(used, b.len - 6);
    assert_int_equal(r.msg.status, 413);
    assert_int_equal(r.msg.content_length, 49);
    assert_int_equal(r.body.len, 49);
    assert_false(r.msg.keep_alive);

    /* Without close and extra; NULL texts. */
    buf_reset(&b);
    buf_reset(&r.body);
    assert_int_equal(http_error_response(&b, 502, NULL, NULL, false, NULL), 0);
    static const char want2[] = "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\n"
                                "Content-Length: 34\r\n\r\n"
                                "{\"errcode\":\"M_UNKNOWN\",\"error\":\"\"}";
    assert_true(slice_eq_str(buf_slice(&b), want2));
    assert_int_equal(run_type(HTTP_RESPONSE, &hp, &r, buf_data(&b), b.len, &used), HTTP_PAUSED);
    assert_true(r.msg.keep_alive);

    /* A long error text with bytes to escape. */
    char text[5000];
    for (size_t i = 0; i < sizeof(text) - 1; i++)
        text[i] = i % 7 == 0 ? '\n' : i % 11 == 0 ? '\xff' : (char)('a' + (int)(i % 26));
    text[sizeof(text) - 1] = 0;
    buf_reset(&b);
    buf_reset(&r.body);
    assert_int_equal(http_error_response(&b, 403, "M_FORBIDDEN", text, true, NULL), 0);
    assert_int_equal(run_type(HTTP_RESPONSE, &hp, &r, buf_data(&b), b.len, &used), HTTP_PAUSED);
    assert_int_equal(used, b.len);
    assert_int_equal((int64_t)r.body.len, r.msg.content_length);

    /* Statuses without a body are refused, and the buffer is left as it was. */
    buf_reset(&b);
    assert_int_equal(buf_append_str(&b, "keep"), 0);
    assert_int_equal(http_error_response(&b, 204, "M_X", "x", false, NULL), CH_EINVAL);
    assert_int_equal(http_error_response(&b, 100, "M_X", "x", false, NULL), CH_EINVAL);
    assert_int_equal(http_error_response(&b, 600, "M_X", "x", false, NULL), CH_EINVAL);
    assert_true(slice_eq_str(buf_slice(&b), "keep"));
    buf_free(&b);
    buf_free(&r.body);
}

static void test_chunks(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(http_append_chunk(&b, "hello", 5), 0);
    assert_true(slice_eq_str(buf_slice(&b), "5\r\nhello\r\n"));
    assert_int_equal(http_append_chunk(&b, "", 0), CH_EINVAL);
    char big[4096 + 26];
    memset(big, 'z', sizeof(big));
    buf_reset(&b);
    assert_int_equal(http_append_chunk(&b, big, sizeof(big)), 0);
    assert_memory_equal(buf_data(&b), "101a\r\n", 6);
    assert_int_equal(b.len, 6 + sizeof(big) + 2);
    assert_int_equal(http_append_last_chunk(&b), 0);
    assert_memory_equal(buf_data(&b) + b.len - 7, "\r\n0\r\n\r\n", 7);

    /* Round trip through the parser. */
    struct buf msg = BUF_INIT;
    assert_int_equal(buf_append_str(&msg, CHUNKED_HEAD), 0);
    assert_int_equal(http_append_chunk(&msg, "ab", 2), 0);
    assert_int_equal(buf_append_slice(&msg, buf_slice(&b)), 0);
    struct http_parser hp;
    struct rec r;
    size_t used;
    rec_init(&r);
    assert_int_equal(run_type(HTTP_REQUEST, &hp, &r, buf_data(&msg), msg.len, &used), HTTP_PAUSED);
    assert_int_equal(used, msg.len);
    assert_int_equal(r.body.len, 2 + sizeof(big));
    buf_free(&msg);
    buf_free(&b);
    buf_free(&r.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_done),
        cmocka_unit_test(test_scan_more_and_too_large),
        cmocka_unit_test(test_scan_max_fields),
        cmocka_unit_test(test_scan_bad),
        cmocka_unit_test(test_proxy_absolute_form),
        cmocka_unit_test(test_proxy_connect),
        cmocka_unit_test(test_proxy_targets_only_when_asked),
        cmocka_unit_test(test_parse_get),
        cmocka_unit_test(test_parse_content_length_body),
        cmocka_unit_test(test_parse_chunked_body),
        cmocka_unit_test(test_parse_pipelined),
        cmocka_unit_test(test_parse_keep_alive_expect),
        cmocka_unit_test(test_parse_content_length_limits),
        cmocka_unit_test(test_parse_upgrade_and_connect),
        cmocka_unit_test(test_refuse_cl_te),
        cmocka_unit_test(test_refuse_content_length),
        cmocka_unit_test(test_refuse_transfer_encoding),
        cmocka_unit_test(test_refuse_chunk_framing),
        cmocka_unit_test(test_chunked_end_split),
        cmocka_unit_test(test_refuse_obs_fold_and_whitespace),
        cmocka_unit_test(test_refuse_control_bytes),
        cmocka_unit_test(test_refuse_request_line),
        cmocka_unit_test(test_response_bodies),
        cmocka_unit_test(test_response_interim_and_head),
        cmocka_unit_test(test_refuse_status_line),
        cmocka_unit_test(test_callback_errors),
        cmocka_unit_test(test_split_span),
        cmocka_unit_test(test_validate_request),
        cmocka_unit_test(test_validate_target),
        cmocka_unit_test(test_validate_host),
        cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_reason),
        cmocka_unit_test(test_json_string),
        cmocka_unit_test(test_error_response),
        cmocka_unit_test(test_chunks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
