/* fuzz_http_request.c -- libFuzzer target: raw bytes through the server's request-parsing path. */
/* SPDX-License-Identifier: ISC */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/buf.h"
#include "chappe/http.h"
#include "chappe/util.h"

#define MAX_HEAD     16384
#define MAX_MESSAGES 64

/* Checked properties abort, so libFuzzer reports them like crashes. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

struct fuzz_state {
    const char *head; /* the head buffer, to check slices against */
    size_t head_len;
    uint64_t body_bytes;
    int heads, completes;
    bool proxy;     /* the egress listener's parser: proxy targets allowed */
    struct buf out; /* scratch for the serializer */
};

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static void check_in_head(const struct fuzz_state *st, struct slice s)
{
    if (s.len == 0)
        return;
    CHECK(s.base >= st->head && s.base + s.len <= st->head + st->head_len);
}

/* Parse what the serializer wrote: it must be one well-framed response. */
static void check_response(const struct buf *b, int status)
{
    struct http_parser hp;
    size_t head_len = 0, used = 0;
    const char *why = NULL;
    http_parser_init(&hp, HTTP_RESPONSE, NULL, NULL);
    CHECK(http_scan_head(buf_data(b), b->len, b->len, &head_len, &why) == HTTP_SCAN_DONE);
    CHECK(http_parser_feed(&hp, buf_data(b), head_len, &used) == 0);
    CHECK(hp.msg.status == status);
    CHECK(hp.msg.content_length == (int64_t)(b->len - head_len));
    CHECK(http_parser_feed(&hp, buf_data(b) + head_len, b->len - head_len, &used) == HTTP_PAUSED);
    CHECK(used == b->len - head_len);
    /* The JSON body holds no raw control bytes. */
    for (size_t i = head_len; i < b->len; i++)
        CHECK((unsigned char)buf_data(b)[i] >= 0x20);
}

static int on_head(void *ud, struct http_msg *msg)
{
    struct fuzz_state *st = ud;
    const char *why = NULL;
    st->heads++;
    CHECK(msg->is_request);
    CHECK(msg->http_major == 1 && msg->http_minor <= 1);
    CHECK(msg->nfields <= HTTP_MAX_FIELDS);
    CHECK(!(msg->chunked && msg->content_length >= 0));
    check_in_head(st, msg->method);
    check_in_head(st, msg->target);
    for (size_t i = 0; i < msg->method.len; i++)
        CHECK(is_tchar((unsigned char)msg->method.base[i]));
    for (size_t i = 0; i < msg->nfields; i++) {
        const struct http_field *f = &msg->fields[i];
        check_in_head(st, f->name);
        check_in_head(st, f->value);
        CHECK(f->name.len > 0);
        for (size_t j = 0; j < f->name.len; j++)
            CHECK(is_tchar((unsigned char)f->name.base[j]));
        for (size_t j = 0; j < f->value.len; j++) {
            unsigned char c = (unsigned char)f->value.base[j];
            CHECK((c >= 0x20 && c != 0x7f) || c == '\t');
        }
        (void)http_is_hop_by_hop(msg, f->name);
        CHECK(http_msg_field(msg, "x") == NULL || http_msg_count(msg, "x") > 0);
        /* The fields that frame the message are never dropped as hop-by-hop. */
        if (slice_case_eq_str(f->name, "content-length") || slice_case_eq_str(f->name, "host"))
            CHECK(!http_is_hop_by_hop(msg, f->name));
    }
    if (http_msg_validate_request(msg, &why) == 0) {
        CHECK(msg->target.len > 0 && msg->target.base[0] == '/');
        CHECK(http_msg_count(msg, "host") <= 1);
        CHECK(!slice_eq_str(msg->method, "CONNECT"));
        /* what the federation listener accepts, the egress one accepts too */
        CHECK(http_msg_validate_proxy_request(msg, &why) == 0);
    } else {
        CHECK(why != NULL);
    }
    if (st->proxy) {
        /* the target llhttp never saw is still the request line's, byte for byte */
        CHECK(msg->target.len > 0);
        for (size_t i = 0; i < msg->target.len; i++)
            CHECK(msg->target.base[i] > 0x20 && msg->target.base[i] < 0x7f);
        if (slice_eq_str(msg->method, "CONNECT") && msg->target.base[0] != '/')
            CHECK(msg->content_length < 0 && !msg->chunked);
    }
    /* The target may hold any byte of the input: it must come out as valid JSON. */
    buf_reset(&st->out);
    CHECK(http_append_json_string(&st->out, msg->target.base, msg->target.len) == 0);
    for (size_t i = 0; i < st->out.len; i++)
        CHECK((unsigned char)buf_data(&st->out)[i] >= 0x20);
    return 0;
}

static int on_body(void *ud, const char *p, size_t n)
{
    struct fuzz_state *st = ud;
    CHECK(n > 0);
    /* Touch every byte so ASan sees reads outside the fed buffer. */
    unsigned char x = 0;
    for (size_t i = 0; i < n; i++)
        x ^= (unsigned char)p[i];
    (void)x;
    st->body_bytes += n;
    return 0;
}

static int on_complete(void *ud)
{
    struct fuzz_state *st = ud;
    st->completes++;
    return 0;
}

static const struct http_parser_cb callbacks = {on_head, on_body, on_complete};

/* Feed a copy of p[0..n) in its own allocation, so that reads past it are caught. */
static int feed_copy(struct http_parser *hp, const char *p, size_t n, size_t *used)
{
    char *copy = malloc(n ? n : 1);
    CHECK(copy != NULL);
    memcpy(copy, p, n);
    int rc = http_parser_feed(hp, copy, n, used);
    free(copy);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    struct fuzz_state st = {0};
    struct http_parser hp;
    size_t off = 0;
    /* The input size picks how body bytes are split into reads (0: all at once). */
    size_t step = size % 4 == 0 ? 0 : 1 + size % 13;
    const char *error = NULL;

    st.out = BUF_INIT;
    http_parser_init(&hp, HTTP_REQUEST, &callbacks, &st);
    /* The input size also picks the listener: federation (origin-form only) or egress. */
    st.proxy = size % 3 == 1;
    if (st.proxy)
        http_parser_allow_proxy_targets(&hp);
    for (int msgs = 0; msgs < MAX_MESSAGES && off < size; msgs++) {
        size_t head_len = 0, used = 0;
        const char *why = NULL;
        int rc = http_scan_head(in + off, size - off, MAX_HEAD, &head_len, &why);
        if (rc == HTTP_SCAN_BAD)
            CHECK(why != NULL);
        if (rc != HTTP_SCAN_DONE) {
            error = rc == HTTP_SCAN_BAD ? why : "head";
            break;
        }
        CHECK(head_len > 0 && head_len <= MAX_HEAD && head_len <= size - off);

        /* The head, in its own buffer, as the server keeps it. */
        char *head = malloc(head_len);
        CHECK(head != NULL);
        memcpy(head, in + off, head_len);
        st.head = head;
        st.head_len = head_len;
        st.body_bytes = 0;
        int heads = st.heads, completes = st.completes;
        rc = http_parser_feed(&hp, head, head_len, &used);
        off += head_len;
        if (rc >= 0)
            CHECK(st.heads == heads + 1);
        if (rc == 0) {
            CHECK(used == head_len);
            /* The body, as it arrives. */
            while (off < size) {
                size_t n = step && size - off > step ? step : size - off;
                rc = feed_copy(&hp, in + off, n, &used);
                if (rc < 0)
                    break;
                CHECK(used <= n);
                off += used;
                if (rc == HTTP_PAUSED)
                    break;
                CHECK(used == n);
            }
            if (rc == 0) {
                rc = http_parser_finish(&hp);
                CHECK(rc <= 0); /* a request body never ends with the connection */
            }
        } else if (rc == HTTP_PAUSED) {
            CHECK(used == head_len);
        }
        if (rc == HTTP_PAUSED) {
            CHECK(st.completes == completes + 1);
            /* A Content-Length body is exactly that long. */
            if (!hp.msg.chunked && hp.msg.content_length >= 0)
                CHECK(st.body_bytes == (uint64_t)hp.msg.content_length);
            if (hp.msg.content_length < 0 && !hp.msg.chunked)
                CHECK(st.body_bytes == 0);
        } else {
            CHECK(st.completes == completes);
        }
        if (rc < 0) {
            CHECK(rc == CH_EPROTO && hp.error != NULL);
            error = hp.error;
        }
        bool keep_alive = hp.msg.keep_alive;
        free(head);
        st.head = NULL;
        if (rc != HTTP_PAUSED || !keep_alive)
            break;
        http_parser_next(&hp);
    }

    /* The error answer the server would send, with the parser's reason or the input as text. */
    char *text = malloc(size + 1);
    CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = 0;
    buf_reset(&st.out);
    CHECK(http_error_response(&st.out, 400, "M_UNKNOWN", error ? error : text, true, NULL) == 0);
    check_response(&st.out, 400);
    buf_reset(&st.out);
    CHECK(http_error_response(&st.out, 413, "M_TOO_LARGE", text, false, "Retry-After: 1\r\n") == 0);
    check_response(&st.out, 413);
    free(text);
    buf_free(&st.out);
    return 0;
}
