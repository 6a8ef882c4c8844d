/* http.c -- strict HTTP/1.1 message heads (RFC 9112) over llhttp, and the response serializer. */
/* SPDX-License-Identifier: ISC */
#include <inttypes.h>
#include <stdio.h>

#include "chappe/http.h"
#include "chappe/util.h"

/*
 * What llhttp 8.1 is trusted with and what is checked here (see also the unit
 * tests, which pin every case down):
 * - the head is scanned by http_scan_head() before llhttp sees it, in
 *   http_parser_feed() too, so bare CR/LF, control bytes, obs-fold and
 *   whitespace before the colon never reach llhttp (which, built loose,
 *   accepts obs-fold and "Name : v");
 * - the start line is checked here byte by byte (llhttp accepts "GET  /",
 *   "HTTP/0.9", "HTTP/2.0", two-digit status codes);
 * - framing fields are re-checked after llhttp: one Content-Length of plain
 *   digits that fits int64_t, Transfer-Encoding exactly "chunked" and only in
 *   HTTP/1.1, never both;
 * - chunk sizes, and the CRLF after chunk data, are llhttp's: the CRLF after
 *   chunk data is only enforced when llhttp.c is compiled with
 *   -DLLHTTP_STRICT_MODE=1 (the loose build skips any two bytes there);
 * - chunk extensions and trailer fields are refused outright (no counter
 *   bounds them, and nothing chappe talks to sends them).
 */

/* --- scanning ------------------------------------------------------------------------ */

/* tchar (RFC 9110 section 5.6.2). */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

enum scan_state { SC_LINE, SC_START, SC_NAME, SC_VALUE };

int http_scan_head(const char *p, size_t len, size_t max, size_t *head_len, const char **why)
{
    size_t lim = len < max ? len : max;
    enum scan_state st = SC_LINE;
    bool seen_start = false;
    size_t nfields = 0;

    *head_len = 0;
    for (size_t i = 0; i < lim; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r') {
            /* Every line ends in CRLF (RFC 9112 section 2.2). */
            if (i + 1 >= lim)
                break;
            if (p[i + 1] != '\n') {
                *why = "bare CR in message head";
                return HTTP_SCAN_BAD;
            }
            switch (st) {
            case SC_LINE:
                if (seen_start) {
                    *head_len = i + 2;
                    return HTTP_SCAN_DONE;
                }
                break; /* empty line before the start line (RFC 9112 section 2.2) */
            case SC_START:
                seen_start = true;
                break;
            case SC_NAME:
                *why = "field line without a colon";
                return HTTP_SCAN_BAD;
            case SC_VALUE:
                if (++nfields > HTTP_MAX_FIELDS)
                    return HTTP_SCAN_TOO_LARGE;
                break;
            }
            st = SC_LINE;
            i++;
            continue;
        }
        if (c == '\n') {
            *why = "bare LF in message head";
            return HTTP_SCAN_BAD;
        }
        switch (st) {
        case SC_LINE:
            if (!seen_start) {
                st = SC_START;
                goto start_byte;
            }
            if (c == ' ' || c == '\t') {
                /* RFC 9112 section 5.2 (obs-fold) and section 2.2 (whitespace after the start
                 * line). */
                *why = "obsolete line folding (field line starting with whitespace)";
                return HTTP_SCAN_BAD;
            }
            if (c == ':') {
                *why = "empty field name";
                return HTTP_SCAN_BAD;
            }
            st = SC_NAME;
            goto name_byte;
        case SC_START:
        start_byte:
            if (c < 0x20 || c == 0x7f) {
                *why = "control character in start line";
                return HTTP_SCAN_BAD;
            }
            break;
        case SC_NAME:
        name_byte:
            if (c == ':') {
                st = SC_VALUE;
            } else if (c == ' ' || c == '\t') {
                /* RFC 9112 section 5.1: no whitespace between field name and colon. */
                *why = "whitespace between field name and colon";
                return HTTP_SCAN_BAD;
            } else if (!is_tchar(c)) {
                *why = "invalid character in field name";
                return HTTP_SCAN_BAD;
            }
            break;
        case SC_VALUE:
            /* field-value: SP, HTAB, VCHAR, obs-text (RFC 9110 section 5.5). */
            if ((c < 0x20 && c != '\t') || c == 0x7f) {
                *why = "control character in field value";
                return HTTP_SCAN_BAD;
            }
            break;
        }
    }
    return len >= max ? HTTP_SCAN_TOO_LARGE : HTTP_SCAN_MORE;
}

/*
 * The start line, stricter than llhttp (RFC 9112 sections 3 and 4):
 *   request-line = method SP request-target SP HTTP-version CRLF
 *   status-line  = HTTP-version SP 3DIGIT [ SP reason-phrase ] CRLF
 * with HTTP-version "HTTP/1.0" or "HTTP/1.1" and the request-target 1*VCHAR.
 * A status line without the SP before an empty reason is accepted (senders
 * omit it, and nothing depends on the reason). p holds a whole head.
 */
/* Where a request line's parts are, as offsets into the head. */
struct start_line {
    size_t method_off, method_len;
    size_t target_off, target_len;
    size_t end; /* just past the line's CRLF */
    char minor; /* '0' or '1' */
};

static int check_start_line(llhttp_type_t type, const char *p, size_t n, struct start_line *sl,
                            const char **why)
{
    size_t i = 0;
    while (i + 1 < n && p[i] == '\r' && p[i + 1] == '\n')
        i += 2;
    const char *eol = memchr(p + i, '\r', n - i);
    if (eol == NULL) {
        *why = "no start line";
        return CH_EPROTO;
    }
    const char *s = p + i;
    size_t len = (size_t)(eol - s);

    if (type == HTTP_REQUEST) {
        size_t m = 0;
        while (m < len && is_tchar((unsigned char)s[m]))
            m++;
        if (m == 0 || m == len || s[m] != ' ') {
            *why = "invalid method in request line";
            return CH_EPROTO;
        }
        size_t t = m + 1, te = t;
        while (te < len && s[te] > 0x20 && s[te] < 0x7f)
            te++;
        if (te == t || te == len || s[te] != ' ') {
            *why = "invalid request-target in request line";
            return CH_EPROTO;
        }
        *sl = (struct start_line){.method_off = i,
                                  .method_len = m,
                                  .target_off = i + t,
                                  .target_len = te - t,
                                  .end = (size_t)(eol - p) + 2};
        s += te + 1;
        len -= te + 1;
        if (len != 8 || (memcmp(s, "HTTP/1.1", 8) != 0 && memcmp(s, "HTTP/1.0", 8) != 0)) {
            *why = "unsupported HTTP version in request line";
            return CH_EPROTO;
        }
        sl->minor = s[7];
        return 0;
    }
    if (len < 12 || (memcmp(s, "HTTP/1.1 ", 9) != 0 && memcmp(s, "HTTP/1.0 ", 9) != 0)) {
        *why = "unsupported HTTP version in status line";
        return CH_EPROTO;
    }
    if (!is_digit((unsigned char)s[9]) || !is_digit((unsigned char)s[10]) ||
        !is_digit((unsigned char)s[11]) || (len > 12 && s[12] != ' ')) {
        *why = "invalid status code in status line";
        return CH_EPROTO;
    }
    return 0;
}

/* --- parser callbacks ---------------------------------------------------------------- */

static struct http_parser *parser_of(llhttp_t *ll)
{
    return CONTAINER_OF(ll, struct http_parser, ll);
}

/* Record a protocol error from inside a callback; llhttp then stops. */
static int proto_error(struct http_parser *hp, const char *why)
{
    hp->error = why;
    hp->cb_error = CH_EPROTO;
    return -1;
}

static int cb_failed(struct http_parser *hp, int rc)
{
    hp->cb_error = rc;
    return -1;
}

/*
 * Grow a slice by one span. The head is parsed from one buffer in one call, so
 * a span arrives whole; pieces that do not follow each other would make a
 * wrong slice, and are refused.
 */
static int span(struct http_parser *hp, struct slice *s, const char *at, size_t n)
{
    if (s->base == NULL) {
        s->base = at;
        s->len = n;
        return 0;
    }
    if (at != s->base + s->len)
        return proto_error(hp, "message head split across buffers");
    s->len += n;
    return 0;
}

static int on_method(llhttp_t *ll, const char *at, size_t n)
{
    struct http_parser *hp = parser_of(ll);
    return span(hp, &hp->msg.method, at, n);
}

static int on_url(llhttp_t *ll, const char *at, size_t n)
{
    struct http_parser *hp = parser_of(ll);
    return span(hp, &hp->msg.target, at, n);
}

static int on_status(llhttp_t *ll, const char *at, size_t n)
{
    struct http_parser *hp = parser_of(ll);
    return span(hp, &hp->msg.reason, at, n);
}

static int on_header_field(llhttp_t *ll, const char *at, size_t n)
{
    struct http_parser *hp = parser_of(ll);
    struct http_msg *m = &hp->msg;
    if (!hp->in_head) {
        /* RFC 9112 section 7.1.2 lets a recipient discard trailers; chappe refuses them. */
        return proto_error(hp, "trailer fields are not accepted");
    }
    if (m->nfields == 0 || hp->in_field_value) {
        if (m->nfields == HTTP_MAX_FIELDS)
            return proto_error(hp, "too many header fields");
        m->fields[m->nfields++] = (struct http_field){{NULL, 0}, {NULL, 0}};
        hp->in_field_value = false;
    }
    return span(hp, &m->fields[m->nfields - 1].name, at, n);
}

static int on_header_value(llhttp_t *ll, const char *at, size_t n)
{
    struct http_parser *hp = parser_of(ll);
    struct http_msg *m = &hp->msg;
    if (!hp->in_head)
        return proto_error(hp, "trailer fields are not accepted");
    if (m->nfields == 0)
        return proto_error(hp, "field value without a name");
    hp->in_field_value = true;
    return span(hp, &m->fields[m->nfields - 1].value, at, n);
}

static int on_chunk_extension(llhttp_t *ll, const char *at, size_t n)
{
    (void)at;
    (void)n;
    /* RFC 9112 section 7.1.1 says to ignore them; unbounded, they are refused instead. */
    return proto_error(parser_of(ll), "chunk extensions are not accepted");
}

/* Content-Length = 1*DIGIT (RFC 9110 section 8.6), and it must fit int64_t. */
static int parse_content_length(struct slice v, int64_t *out)
{
    if (v.len == 0)
        return -1;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.base[i];
        if (!is_digit(c))
            return -1;
        if (n > ((uint64_t)INT64_MAX - (c - '0')) / 10)
            return -1;
        n = n * 10 + (c - '0');
    }
    *out = (int64_t)n;
    return 0;
}

/*
 * Message framing beyond what llhttp checks (RFC 9112 section 6). llhttp has
 * already refused Content-Length with Transfer-Encoding, a second
 * Content-Length, non-digits in Content-Length and "chunked" not last in a
 * request; these checks repeat the first ones and add the rest.
 */
static int check_framing(struct http_parser *hp)
{
    struct http_msg *m = &hp->msg;
    size_t ncl = http_msg_count(m, "content-length");
    size_t nte = http_msg_count(m, "transfer-encoding");

    m->content_length = -1;
    m->chunked = false;
    if (ncl > 0 && nte > 0) {
        /* Section 6.1: a smuggling vector; refused rather than "TE wins". */
        return proto_error(hp, "Content-Length together with Transfer-Encoding");
    }
    if (ncl > 1) {
        /* Section 6.3 item 5 allows identical duplicates to be merged; chappe refuses any. */
        return proto_error(hp, "more than one Content-Length");
    }
    if (ncl == 1) {
        if (parse_content_length(http_msg_field(m, "content-length")->value, &m->content_length) <
                0 ||
            !(hp->ll.flags & F_CONTENT_LENGTH) ||
            (uint64_t)m->content_length != hp->ll.content_length)
            return proto_error(hp, "invalid Content-Length");
    }
    if (nte > 0) {
        if (m->http_minor == 0) {
            /* Section 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing. */
            return proto_error(hp, "Transfer-Encoding in an HTTP/1.0 message");
        }
        /*
         * Only the one coding "chunked": chunked twice is invalid (section 7),
         * and any other coding would reach the next hop undeclared once this
         * hop-by-hop field is stripped (RFC 9110 section 7.6.1).
         */
        if (nte > 1 || !slice_case_eq_str(http_msg_field(m, "transfer-encoding")->value, "chunked"))
            return proto_error(hp, "Transfer-Encoding other than chunked");
        if (!(hp->ll.flags & F_CHUNKED))
            return proto_error(hp, "invalid Transfer-Encoding");
        m->chunked = true;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
    struct http_parser *hp = parser_of(ll);
    struct http_msg *m = &hp->msg;

    hp->in_head = false;
    hp->in_field_value = false;
    for (size_t i = 0; i < m->nfields; i++) {
        struct http_field *f = &m->fields[i];
        if (f->value.base == NULL)
            f->value = (struct slice){"", 0};
        f->value = slice_trim_ows(f->value);
    }
    if (m->method.base == NULL)
        m->method = (struct slice){"", 0};
    if (m->target.base == NULL)
        m->target = (struct slice){"", 0};
    if (m->reason.base == NULL)
        m->reason = (struct slice){"", 0};
    m->is_request = ll->type == HTTP_REQUEST;
    m->http_major = ll->http_major;
    m->http_minor = ll->http_minor;
    if (m->is_request) {
        if (m->method.len == 0 || m->target.len == 0)
            return proto_error(hp, "invalid request line");
    } else {
        m->status = ll->status_code;
        if (m->status < 100 || m->status > 599)
            return proto_error(hp, "invalid status code");
    }
    if (check_framing(hp) < 0)
        return -1;
    if (hp->proxy_method_connect && (m->content_length >= 0 || m->chunked))
        return proto_error(hp, "CONNECT with Content-Length or Transfer-Encoding");
    const struct http_field *expect = http_msg_field(m, "expect");
    m->expect_continue =
        m->is_request && expect && slice_case_eq_str(expect->value, "100-continue");

    /*
     * chappe never switches protocols: Upgrade and Connection are stripped as
     * hop-by-hop, CONNECT is refused by the caller, and a 101 is just another
     * interim response. Clearing llhttp's flag keeps it parsing HTTP.
     */
    ll->upgrade = 0;
    /* RFC 9112 section 6.3 item 1: no body after 1xx, 204, 304, whatever the fields say. */
    bool skip = !m->is_request && (m->status < 200 || m->status == 204 || m->status == 304);
    if (skip)
        ll->flags |= F_SKIPBODY;
    m->keep_alive = llhttp_should_keep_alive(ll);

    int rc = hp->cb && hp->cb->on_head ? hp->cb->on_head(hp->ud, m) : 0;
    if (rc < 0)
        return cb_failed(hp, rc);
    if (rc > 1)
        return cb_failed(hp, CH_EINVAL);
    if (rc == 1) {
        skip = true;
        ll->flags |= F_SKIPBODY;
        m->keep_alive = llhttp_should_keep_alive(ll);
    }
    return skip ? 1 : 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t n)
{
    struct http_parser *hp = parser_of(ll);
    if (hp->cb && hp->cb->on_body) {
        int rc = hp->cb->on_body(hp->ud, at, n);
        if (rc < 0)
            return cb_failed(hp, rc);
    }
    return 0;
}

/*
 * Pause right after the message: the caller learns where it ended. The user's
 * on_complete runs in http_parser_feed(), after the last framing check.
 */
static int on_message_complete(llhttp_t *ll)
{
    (void)ll;
    return HPE_PAUSED;
}

/* The message is complete: tell the user. */
static int complete(struct http_parser *hp)
{
    if (hp->cb && hp->cb->on_complete) {
        int rc = hp->cb->on_complete(hp->ud);
        if (rc < 0) {
            hp->cb_error = rc;
            return rc;
        }
    }
    return HTTP_PAUSED;
}

/* --- parser -------------------------------------------------------------------------- */

static void clear_msg(struct http_parser *hp)
{
    memset(&hp->msg, 0, sizeof(hp->msg));
    hp->msg.content_length = -1;
    hp->in_head = true;
    hp->in_field_value = false;
    hp->proxy_method_connect = false;
}

void http_parser_init(struct http_parser *hp, llhttp_type_t type, const struct http_parser_cb *cb,
                      void *ud)
{
    llhttp_settings_init(&hp->settings);
    hp->settings.on_method = on_method;
    hp->settings.on_url = on_url;
    hp->settings.on_status = on_status;
    hp->settings.on_header_field = on_header_field;
    hp->settings.on_header_value = on_header_value;
    hp->settings.on_chunk_extension_name = on_chunk_extension;
    hp->settings.on_chunk_extension_value = on_chunk_extension;
    hp->settings.on_headers_complete = on_headers_complete;
    hp->settings.on_body = on_body;
    hp->settings.on_message_complete = on_message_complete;
    /* llhttp keeps a pointer to hp->settings: the parser must not move after this. */
    llhttp_init(&hp->ll, type, &hp->settings);
    hp->cb = cb;
    hp->ud = ud;
    hp->cb_error = 0;
    hp->error = NULL;
    hp->proxy_targets = false;
    clear_msg(hp);
}

/* Turn what llhttp_execute() returned into our result. */
static int execute_result(struct http_parser *hp, llhttp_errno_t e, const char *p, size_t n,
                          size_t *consumed)
{
    switch (e) {
    case HPE_OK:
        /*
         * After the head, in_field_value is free: it carries "the last byte fed
         * was CR" for the end-of-chunked-body check below.
         */
        hp->in_field_value = n > 0 && p[n - 1] == '\r';
        *consumed = n;
        return 0;
    case HPE_PAUSED: {
        size_t used = (size_t)(llhttp_get_error_pos(&hp->ll) - p);
        if ((hp->ll.flags & F_CHUNKED) && !(hp->ll.flags & F_SKIPBODY)) {
            /*
             * llhttp (strict build too) ends the trailer section on a bare LF:
             * "0\r\n\n". RFC 9112 section 7.1 wants CRLF.
             */
            bool cr = used >= 2 ? p[used - 2] == '\r' : hp->in_field_value;
            if (used == 0 || p[used - 1] != '\n' || !cr) {
                proto_error(hp, "chunked body not ended by CRLF");
                return CH_EPROTO;
            }
        }
        hp->in_field_value = false;
        *consumed = used;
        return complete(hp);
    }
    case HPE_PAUSED_UPGRADE:
        proto_error(hp, "protocol upgrade is not supported");
        return CH_EPROTO;
    case HPE_PAUSED_H2_UPGRADE:
        proto_error(hp, "HTTP/2 is not supported");
        return CH_EPROTO;
    default:
        if (hp->cb_error)
            return hp->cb_error;
        hp->error = llhttp_get_error_reason(&hp->ll);
        if (hp->error == NULL)
            hp->error = llhttp_errno_name(e);
        hp->cb_error = CH_EPROTO;
        return CH_EPROTO;
    }
}

/*
 * A request whose target is not in origin-form (a proxy's absolute-form or
 * CONNECT's authority-form): llhttp refuses some of those (a '-' in a URI
 * scheme, "matrix-federation://") and treats CONNECT as a protocol switch.
 * The request line was parsed strictly above; llhttp is given "GET /" in its
 * place, then the fields, and the message keeps the real method and target.
 */
static llhttp_errno_t execute_proxy_head(struct http_parser *hp, const char *p, size_t head_len,
                                         const struct start_line *sl)
{
    char line[] = "GET / HTTP/1.1\r\n";
    line[13] = sl->minor;
    llhttp_errno_t e = llhttp_execute(&hp->ll, line, sizeof(line) - 1);
    if (e != HPE_OK)
        return e;
    hp->msg.method = (struct slice){p + sl->method_off, sl->method_len};
    hp->msg.target = (struct slice){p + sl->target_off, sl->target_len};
    hp->proxy_method_connect = sl->method_len == 7 && memcmp(p + sl->method_off, "CONNECT", 7) == 0;
    return llhttp_execute(&hp->ll, p + sl->end, head_len - sl->end);
}

void http_parser_allow_proxy_targets(struct http_parser *hp)
{
    hp->proxy_targets = true;
}

int http_parser_feed(struct http_parser *hp, const char *p, size_t n, size_t *consumed)
{
    *consumed = 0;
    if (hp->cb_error)
        return hp->cb_error;
    llhttp_errno_t e = llhttp_get_errno(&hp->ll);
    if (e == HPE_PAUSED)
        return HTTP_PAUSED; /* the caller has not called http_parser_next() yet */
    if (e != HPE_OK)
        return execute_result(hp, e, p, n, consumed);
    if (n == 0)
        return 0;
    if (!hp->in_head)
        return execute_result(hp, llhttp_execute(&hp->ll, p, n), p, n, consumed);

    /* A head: scan it again here, so that no caller can skip the checks. */
    size_t head_len = 0;
    const char *why = NULL;
    int rc = http_scan_head(p, n, SIZE_MAX, &head_len, &why);
    if (rc != HTTP_SCAN_DONE) {
        proto_error(hp, rc == HTTP_SCAN_BAD         ? why
                        : rc == HTTP_SCAN_TOO_LARGE ? "too many header fields"
                                                    : "incomplete message head");
        return CH_EPROTO;
    }
    struct start_line sl;
    if (check_start_line((llhttp_type_t)hp->ll.type, p, head_len, &sl, &why) < 0) {
        proto_error(hp, why);
        return CH_EPROTO;
    }
    /* Exactly the head first: llhttp must agree with the scan on where it ends. */
    if (hp->proxy_targets && hp->ll.type == HTTP_REQUEST && p[sl.target_off] != '/')
        e = execute_proxy_head(hp, p, head_len, &sl);
    else
        e = llhttp_execute(&hp->ll, p, head_len);
    if (e == HPE_OK && hp->in_head) {
        proto_error(hp, "message head not understood");
        return CH_EPROTO;
    }
    if (e == HPE_OK && head_len < n)
        e = llhttp_execute(&hp->ll, p + head_len, n - head_len);
    return execute_result(hp, e, p, n, consumed);
}

void http_parser_next(struct http_parser *hp)
{
    llhttp_resume(&hp->ll);
    clear_msg(hp);
}

int http_parser_finish(struct http_parser *hp)
{
    if (hp->cb_error)
        return hp->cb_error;
    llhttp_errno_t e = llhttp_get_errno(&hp->ll);
    if (e == HPE_PAUSED)
        return 0; /* the last message completed and was reported */
    if (e != HPE_OK) {
        size_t unused;
        return execute_result(hp, e, NULL, 0, &unused);
    }
    /*
     * No byte of a next message was fed (a head is fed whole): a clean end.
     * (llhttp itself would say "unsafe" right after llhttp_resume().)
     */
    if (hp->in_head)
        return 0;
    e = llhttp_finish(&hp->ll);
    switch (e) {
    case HPE_OK:
        return 0;
    case HPE_PAUSED:
        /* The end of a read-until-close body; paused, as after a feed. */
        llhttp_pause(&hp->ll);
        return complete(hp);
    case HPE_INVALID_EOF_STATE:
        proto_error(hp, "connection closed before the end of the message");
        return CH_EPROTO;
    default:
        if (hp->cb_error)
            return hp->cb_error;
        proto_error(hp, "invalid end of message");
        return CH_EPROTO;
    }
}

/* --- messages ------------------------------------------------------------------------ */

const struct http_field *http_msg_field(const struct http_msg *msg, const char *name)
{
    for (size_t i = 0; i < msg->nfields; i++)
        if (slice_case_eq_str(msg->fields[i].name, name))
            return &msg->fields[i];
    return NULL;
}

size_t http_msg_count(const struct http_msg *msg, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < msg->nfields; i++)
        if (slice_case_eq_str(msg->fields[i].name, name))
            n++;
    return n;
}

/*
 * origin-form = absolute-path [ "?" query ] (RFC 9112 section 3.2.1) with the
 * characters of RFC 3986 section 3.3 and 3.4: pchar / "/" / "?", and "%"
 * followed by two hex digits. No fragment.
 */
static bool valid_origin_form(struct slice t)
{
    if (t.len == 0 || t.base[0] != '/')
        return false;
    for (size_t i = 0; i < t.len; i++) {
        unsigned char c = (unsigned char)t.base[i];
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
            continue;
        if (c == '%') {
            if (i + 2 >= t.len || !is_hex((unsigned char)t.base[i + 1]) ||
                !is_hex((unsigned char)t.base[i + 2]))
                return false;
            i += 2;
            continue;
        }
        if (strchr("-._~!$&'()*+,;=:@/?", c) == NULL || c == 0)
            return false;
    }
    return true;
}

/*
 * Host = uri-host [ ":" port ] (RFC 9110 section 7.2), narrowed to what a
 * Matrix server name can be (spec appendix "Server Name"): an IP-literal in
 * brackets, or letters, digits, "-", ".", "_", "~"; the port 1 to 65535.
 * No userinfo, path, query, fragment, whitespace, percent-encoding.
 */
static bool valid_host(struct slice h)
{
    size_t i = 0;
    if (h.len == 0 || h.len > 255 + 6)
        return false;
    if (h.base[0] == '[') {
        for (i = 1; i < h.len && h.base[i] != ']'; i++)
            if (!is_hex((unsigned char)h.base[i]) && h.base[i] != ':' && h.base[i] != '.')
                return false;
        if (i == h.len || i == 1)
            return false;
        i++;
    } else {
        for (; i < h.len && h.base[i] != ':'; i++) {
            unsigned char c = (unsigned char)h.base[i];
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '-' || c == '.' || c == '_' || c == '~'))
                return false;
        }
        if (i == 0 || i > 255)
            return false;
    }
    if (i == h.len)
        return true;
    if (h.base[i] != ':' || h.len - i - 1 == 0 || h.len - i - 1 > 5)
        return false;
    unsigned port = 0;
    for (i++; i < h.len; i++) {
        if (!is_digit((unsigned char)h.base[i]))
            return false;
        port = port * 10 + (unsigned)(h.base[i] - '0');
    }
    return port >= 1 && port <= 65535;
}

static int validate_request(const struct http_msg *msg, bool proxy, const char **why);

int http_msg_validate_request(const struct http_msg *msg, const char **why)
{
    return validate_request(msg, false, why);
}

int http_msg_validate_proxy_request(const struct http_msg *msg, const char **why)
{
    return validate_request(msg, true, why);
}

static int validate_request(const struct http_msg *msg, bool proxy, const char **why)
{
    if (!msg->is_request) {
        *why = "not a request";
        return CH_EPROTO;
    }
    if (msg->http_major != 1 || msg->http_minor > 1) {
        *why = "unsupported HTTP version";
        return CH_EPROTO;
    }
    if (msg->method.len == 0) {
        *why = "missing method";
        return CH_EPROTO;
    }
    for (size_t i = 0; i < msg->method.len; i++) {
        if (!is_tchar((unsigned char)msg->method.base[i])) {
            *why = "invalid method";
            return CH_EPROTO;
        }
    }
    if (slice_eq_str(msg->method, "CONNECT") && !proxy) {
        *why = "CONNECT is not supported";
        return CH_EPROTO;
    }
    if (slice_eq_str(msg->target, "*")) {
        *why = "asterisk-form request-target is not supported";
        return CH_EPROTO;
    }
    bool origin_form = msg->target.len > 0 && msg->target.base[0] == '/';
    if (!origin_form && !proxy) {
        *why = "request-target is not in origin-form";
        return CH_EPROTO;
    }
    /* absolute-form and authority-form (proxy only): egress_target judges them */
    if (origin_form && !valid_origin_form(msg->target)) {
        *why = "invalid character in request-target";
        return CH_EPROTO;
    }
    /* RFC 9112 section 3.2: exactly one Host in HTTP/1.1, at most one in HTTP/1.0. */
    size_t nhost = http_msg_count(msg, "host");
    if (nhost > 1) {
        *why = "more than one Host";
        return CH_EPROTO;
    }
    if (nhost == 0 && msg->http_minor == 1) {
        *why = "missing Host";
        return CH_EPROTO;
    }
    if (nhost == 1 && !valid_host(http_msg_field(msg, "host")->value)) {
        *why = "invalid Host";
        return CH_EPROTO;
    }
    return 0;
}

bool http_is_hop_by_hop(const struct http_msg *msg, struct slice name)
{
    /*
     * RFC 9110 section 7.6.1, plus the proxy credentials of section 11.7
     * (Proxy-Authorization carries the homeserver's secret for chappe: it must
     * never travel on).
     */
    static const char *const fixed[] = {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-authentication-info",
    };
    for (size_t i = 0; i < ARRAY_LEN(fixed); i++)
        if (slice_case_eq_str(name, fixed[i]))
            return true;
    /* A Connection option must not make chappe drop the framing or the routing fields. */
    if (slice_case_eq_str(name, "content-length") || slice_case_eq_str(name, "host"))
        return false;
    for (size_t i = 0; i < msg->nfields; i++) {
        if (!slice_case_eq_str(msg->fields[i].name, "connection"))
            continue;
        struct slice rest = msg->fields[i].value, item;
        while (slice_next_list_item(&rest, &item) == 0)
            if (item.len > 0 && slice_case_eq(item, name))
                return true;
    }
    return false;
}

/* --- serializer ---------------------------------------------------------------------- */

/* RFC 9110 section 15. */
static const struct {
    int status;
    const char *reason;
} reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Content"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *http_reason(int status)
{
    for (size_t i = 0; i < ARRAY_LEN(reasons); i++)
        if (reasons[i].status == status)
            return reasons[i].reason;
    return "Unknown";
}

/* Length of the valid UTF-8 sequence at s (RFC 3629 section 4), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* over U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/*
 * JSON string (RFC 8259 section 7): '"', '\\' and control characters are
 * escaped, valid UTF-8 is copied, and each byte that does not start a valid
 * UTF-8 sequence becomes U+FFFD, so the body is always valid JSON.
 */
static int append_json_string(struct buf *out, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)p;
    int rc = buf_reserve(out, n + 2);
    if (rc)
        return rc;
    if ((rc = buf_append(out, "\"", 1)) != 0)
        return rc;
    size_t run = 0; /* bytes copied as they are, pending */
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        const char *esc = NULL;
        char ubuf[6];
        size_t elen = 2;
        if (c == '"' || c == '\\') {
            ubuf[0] = '\\';
            ubuf[1] = (char)c;
            esc = ubuf;
        } else if (c < 0x20) {
            static const char short_esc[] = "btnvfr"; /* indexed by c - 8; \v has no short form */
            if (c >= '\b' && c <= '\r' && c != '\v') {
                ubuf[0] = '\\';
                ubuf[1] = short_esc[c - '\b'];
                esc = ubuf;
            } else {
                ubuf[0] = '\\';
                ubuf[1] = 'u';
                ubuf[2] = '0';
                ubuf[3] = '0';
                ubuf[4] = hex[c >> 4];
                ubuf[5] = hex[c & 15];
                esc = ubuf;
                elen = 6;
            }
        } else {
            size_t ulen = utf8_len(s + i, n - i);
            if (ulen > 0) {
                run += ulen;
                i += ulen;
                continue;
            }
            esc = "\xef\xbf\xbd"; /* U+FFFD REPLACEMENT CHARACTER */
            elen = 3;
        }
        if (run && (rc = buf_append(out, p + i - run, run)) != 0)
            return rc;
        run = 0;
        if ((rc = buf_append(out, esc, elen)) != 0)
            return rc;
        i++;
    }
    if (run && (rc = buf_append(out, p + n - run, run)) != 0)
        return rc;
    return buf_append(out, "\"", 1);
}

int http_append_json_string(struct buf *out, const char *p, size_t n)
{
    size_t len = out->len;
    int rc = append_json_string(out, p, n);
    if (rc)
        out->len = len;
    return rc;
}

int http_error_response(struct buf *out, int status, const char *errcode, const char *error,
                        bool close, const char *extra)
{
    if (status < 200 || status > 599 || status == 204 || status == 304)
        return CH_EINVAL; /* these carry no body (RFC 9110 sections 15.3.5, 15.4.5) */
    if (errcode == NULL)
        errcode = "M_UNKNOWN";
    if (error == NULL)
        error = "";
    struct buf body = BUF_INIT;
    size_t len = out->len;
    int rc;
    if ((rc = buf_append_str(&body, "{\"errcode\":")) != 0 ||
        (rc = append_json_string(&body, errcode, strlen(errcode))) != 0 ||
        (rc = buf_append_str(&body, ",\"error\":")) != 0 ||
        (rc = append_json_string(&body, error, strlen(error))) != 0 ||
        (rc = buf_append(&body, "}", 1)) != 0)
        goto fail;
    rc = buf_appendf(out,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "%s%s\r\n",
                     status, http_reason(status), body.len, close ? "Connection: close\r\n" : "",
                     extra ? extra : "");
    if (rc)
        goto fail;
    if ((rc = buf_append(out, buf_data(&body), body.len)) != 0)
        goto fail;
    buf_free(&body);
    return 0;
fail:
    out->len = len;
    buf_free(&body);
    return rc;
}

int http_append_chunk(struct buf *out, const char *p, size_t n)
{
    if (n == 0)
        return CH_EINVAL; /* a zero-size chunk is the last chunk */
    size_t len = out->len;
    int rc = buf_reserve(out, n + 16 + 4);
    if (rc == 0)
        rc = buf_appendf(out, "%zx\r\n", n);
    if (rc == 0)
        rc = buf_append(out, p, n);
    if (rc == 0)
        rc = buf_append(out, "\r\n", 2);
    if (rc)
        out->len = len;
    return rc;
}

int http_append_last_chunk(struct buf *out)
{
    return buf_append(out, "0\r\n\r\n", 5);
}
