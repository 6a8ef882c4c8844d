/* http.h -- strict HTTP/1.1 message heads (RFC 9112) over llhttp, and the serializer. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_HTTP_H
#define CHAPPE_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include <llhttp.h>

#include "chappe/buf.h"

#define HTTP_MAX_FIELDS 100

/*
 * Scan the front of a byte stream for a complete message head (start line,
 * fields, empty line), before any parser sees it. Leading empty lines (CRLF)
 * are allowed (RFC 9112 section 2.2) and counted in *head_len.
 * Returns:
 *   HTTP_SCAN_DONE     a complete head of *head_len bytes (through CRLF CRLF)
 *   HTTP_SCAN_MORE     no complete head yet, and fewer than max bytes seen
 *   HTTP_SCAN_TOO_LARGE the head does not fit in max bytes, or has more than
 *                      HTTP_MAX_FIELDS field lines (431)
 *   HTTP_SCAN_BAD      a framing violation, *why says which (400 and close):
 *                      bare CR, bare LF (a line not ended by CRLF), NUL or
 *                      another control byte (other than HTAB in field values),
 *                      DEL, obs-fold (a field line starting with SP or HTAB,
 *                      RFC 9112 section 5.2), whitespace before the colon
 *                      (section 5.1), a field line without a colon, an empty
 *                      field name.
 * Pure; bytes past the head are not looked at.
 */
enum { HTTP_SCAN_DONE = 0, HTTP_SCAN_MORE = 1, HTTP_SCAN_TOO_LARGE = -1, HTTP_SCAN_BAD = -2 };
int http_scan_head(const char *p, size_t len, size_t max, size_t *head_len, const char **why);

struct http_field {
    struct slice name;
    struct slice value; /* OWS trimmed */
};

/* A parsed head. Slices point into the bytes given to the parser for the head. */
struct http_msg {
    bool is_request;
    struct slice method; /* request: "GET" */
    struct slice target; /* request: request-target as sent */
    int status;          /* response: 200 */
    struct slice reason; /* response: reason phrase, may be empty */
    unsigned http_major, http_minor;
    struct http_field fields[HTTP_MAX_FIELDS];
    size_t nfields;
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding ends in chunked */
    bool keep_alive;        /* llhttp_should_keep_alive() at the end of the head */
    bool expect_continue;   /* request: Expect: 100-continue */
};

struct http_parser_cb {
    /*
     * The head is complete (msg filled). Return 0 to go on, 1 when the message
     * has no body whatever its fields say (response to HEAD; 1xx, 204 and 304
     * responses are forced bodiless by http.c itself), or a negative code to
     * stop with an error.
     */
    int (*on_head)(void *ud, struct http_msg *msg);
    /* Body bytes, de-chunked. p points into the fed buffer: copy what must outlive the call. */
    int (*on_body)(void *ud, const char *p, size_t n);
    /* The message is complete and passed every framing check; the parser pauses right after it. */
    int (*on_complete)(void *ud);
};

/* Owned by its embedder; holds no heap memory. Must not move after http_parser_init (llhttp
 * keeps a pointer to settings). */
struct http_parser {
    llhttp_t ll;
    llhttp_settings_t settings;
    struct http_msg msg;
    const struct http_parser_cb *cb;
    void *ud;
    int cb_error;              /* the negative code a callback returned, if any */
    bool in_head;              /* still parsing the head */
    bool in_field_value;       /* last head callback was a value span */
    const char *error;         /* static description of the last parse error */
    bool proxy_targets;        /* absolute-form and authority-form targets accepted */
    bool proxy_method_connect; /* scratch: the current request is a CONNECT */
};

/* Initialise for requests (HTTP_REQUEST) or responses (HTTP_RESPONSE). Strict: no lenient flags. */
void http_parser_init(struct http_parser *hp, llhttp_type_t type, const struct http_parser_cb *cb,
                      void *ud);
/*
 * For a proxy's requests (the egress listener): accept request-targets in
 * absolute-form ("https://a.example/x", "matrix-federation://a.example/x")
 * and authority-form (CONNECT a.example:443), besides origin-form. The
 * request line is checked as always (method token, 1*VCHAR target, version);
 * what the target means is the caller's to parse (egress_target). A CONNECT
 * head has no body (RFC 9110 section 9.3.6): a Content-Length or
 * Transfer-Encoding on it is a framing error. Call after http_parser_init.
 */
void http_parser_allow_proxy_targets(struct http_parser *hp);
/*
 * Feed bytes. The first call for a message must be given exactly its head
 * (as found by http_scan_head), the later calls body bytes.
 * Returns:
 *   0            all n bytes consumed, the message goes on
 *   HTTP_PAUSED  the message completed; *consumed bytes were used (the rest
 *                belongs to the next message: call http_parser_next() first)
 *   negative     CH_EPROTO (framing error: invalid chunk size, CL with TE,
 *                differing Content-Length, Transfer-Encoding not ending in
 *                chunked, ...; hp->error says which) or the callback's code.
 */
enum { HTTP_PAUSED = 1 };
int http_parser_feed(struct http_parser *hp, const char *p, size_t n, size_t *consumed);
/* Ready the parser for the next message on the same connection. */
void http_parser_next(struct http_parser *hp);
/* For a response parser whose peer closed: ends a read-until-close body. 0, HTTP_PAUSED or <0. */
int http_parser_finish(struct http_parser *hp);

/* First field named name (case-insensitive), or NULL. */
const struct http_field *http_msg_field(const struct http_msg *msg, const char *name);
/* Number of fields named name. */
size_t http_msg_count(const struct http_msg *msg, const char *name);
/*
 * Request checks beyond framing: HTTP/1.x only; exactly one Host for 1.1
 * (RFC 9112 section 3.2); request-target in origin-form ("/..."); no
 * CONNECT/upgrade. 0, or CH_EPROTO with *why.
 */
int http_msg_validate_request(const struct http_msg *msg, const char **why);
/*
 * The same for a proxy's requests (http_parser_allow_proxy_targets): CONNECT
 * allowed, and a target not in origin-form left for the caller to parse.
 */
int http_msg_validate_proxy_request(const struct http_msg *msg, const char **why);
/*
 * Hop-by-hop field (RFC 9110 section 7.6.1): Connection, Proxy-Connection,
 * Keep-Alive, TE, Transfer-Encoding, Upgrade, Trailer, the Proxy-Authorization
 * family (credentials meant for chappe itself), and every field named in the
 * message's Connection header -- except Content-Length and Host, never
 * stripped whatever Connection says.
 */
bool http_is_hop_by_hop(const struct http_msg *msg, struct slice name);

/* Reason phrase for a status code ("Bad Gateway"); "Unknown" otherwise. */
const char *http_reason(int status);
/*
 * Append a whole response carrying a Matrix JSON error:
 * {"errcode":"M_...","error":"..."} with Content-Type: application/json,
 * Content-Length, and "Connection: close" when close is true. The error text
 * is JSON-escaped. Extra is NULL or preformatted header lines ending in CRLF.
 */
int http_error_response(struct buf *out, int status, const char *errcode, const char *error,
                        bool close, const char *extra);
/* Append "<size-hex>\r\n<bytes>\r\n" (one chunk, n > 0). */
int http_append_chunk(struct buf *out, const char *p, size_t n);
/* Append the last chunk "0\r\n\r\n". */
int http_append_last_chunk(struct buf *out);
/* Append p as a JSON string body (quotes included), escaping per RFC 8259. */
int http_append_json_string(struct buf *out, const char *p, size_t n);

#endif
