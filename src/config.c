/* config.c -- load the YAML configuration once into struct config, reporting every problem. */
/* SPDX-License-Identifier: ISC */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "chappe/b64.h"
#include "chappe/cjson.h"
#include "chappe/config.h"
#include "chappe/policy.h"
#include "chappe/util.h"

#define MAX_PROBLEMS   100
#define MAX_FILE_BYTES (4u << 20)
#define MAX_EVENTS     10000000u
#define KEY_CAP        128

/* One problem, kept until the end so the report comes out in file order. */
struct problem {
    size_t line, col; /* 1-based */
    size_t seq;       /* discovery order, to keep the sort stable */
    char *msg;
};

struct ctx {
    const char *path;
    const unsigned char *data; /* the file's bytes, for reader-error offsets */
    size_t len;
    yaml_document_t *doc;
    struct problem *probs;
    size_t nprobs, capprobs;
    bool truncated;
    bool oom;
};

/* A key a mapping may hold; walk_map() fills key and val when present. */
struct field {
    const char *name;
    bool required;
    yaml_node_t *key;
    yaml_node_t *val;
};

static const char *listener_names[] = {"federation", "egress", "admin", "client"};

const char *config_listener_type_name(enum listener_type t)
{
    return (unsigned)t < ARRAY_LEN(listener_names) ? listener_names[t] : "?";
}

/* --- problems ------------------------------------------------------------------ */

static void vproblem(struct ctx *c, size_t line0, size_t col0, const char *fmt, va_list ap)
{
    if (c->nprobs >= MAX_PROBLEMS) {
        c->truncated = true;
        return;
    }
    if (c->nprobs == c->capprobs) {
        size_t cap = c->capprobs ? c->capprobs * 2 : 16;
        struct problem *p = realloc(c->probs, cap * sizeof(*p));
        if (p == NULL) {
            c->oom = true;
            return;
        }
        c->probs = p;
        c->capprobs = cap;
    }
    char *msg;
    if (vasprintf(&msg, fmt, ap) < 0) {
        c->oom = true;
        return;
    }
    c->probs[c->nprobs] = (struct problem){line0 + 1, col0 + 1, c->nprobs, msg};
    c->nprobs++;
}

static void __attribute__((format(printf, 4, 5)))
problem_at(struct ctx *c, size_t line0, size_t col0, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vproblem(c, line0, col0, fmt, ap);
    va_end(ap);
}

/* A problem at a node's first character (libyaml marks are 0-based). */
static void __attribute__((format(printf, 3, 4)))
problem_node(struct ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vproblem(c, n->start_mark.line, n->start_mark.column, fmt, ap);
    va_end(ap);
}

static int cmp_problem(const void *a, const void *b)
{
    const struct problem *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Append the problems, sorted by position, to errors and free them. */
static void flush_problems(struct ctx *c, struct buf *errors)
{
    if (c->nprobs > 1)
        qsort(c->probs, c->nprobs, sizeof(*c->probs), cmp_problem);
    for (size_t i = 0; i < c->nprobs; i++) {
        buf_appendf(errors, "%s:%zu:%zu: %s\n", c->path, c->probs[i].line, c->probs[i].col,
                    c->probs[i].msg);
        free(c->probs[i].msg);
    }
    if (c->truncated)
        buf_appendf(errors, "%s: too many errors, stopped after %d\n", c->path, MAX_PROBLEMS);
    free(c->probs);
    c->probs = NULL;
    c->nprobs = c->capprobs = 0;
}

/* --- nodes --------------------------------------------------------------------- */

static yaml_node_t *node_at(struct ctx *c, int idx)
{
    return yaml_document_get_node(c->doc, idx);
}

static const char *scalar_text(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* YAML 1.2 core schema null (section 10.3.2): only plain scalars can be null. */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = scalar_text(n);
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* What a node is, for messages: a scalar is quoted, cut at 60 bytes, control bytes as '?'. */
static const char *describe(const yaml_node_t *n, char *out, size_t cap)
{
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a sequence";
    if (is_null(n))
        return "nothing";
    const unsigned char *s = n->data.scalar.value;
    size_t len = n->data.scalar.length, max = 60, o = 0;
    if (cap < max + 8)
        max = cap > 8 ? cap - 8 : 0;
    bool cut = len > max;
    if (cut) {
        len = max;
        while (len > 0 && (s[len] & 0xc0) == 0x80) /* do not split a UTF-8 sequence */
            len--;
    }
    out[o++] = '\'';
    for (size_t i = 0; i < len; i++)
        out[o++] = (s[i] < 0x20 || s[i] == 0x7f) ? '?' : (char)s[i];
    if (cut) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '\'';
    out[o] = '\0';
    return out;
}

/* Key paths for messages ("limits.header_timeout", "listeners[0].bind[1]"), cut at KEY_CAP. */
static const char *join_key(char *out, const char *where, const char *name)
{
    int n =
        where ? snprintf(out, KEY_CAP, "%s.%s", where, name) : snprintf(out, KEY_CAP, "%s", name);
    if (n < 0 || n >= KEY_CAP)
        memcpy(out + KEY_CAP - 4, "...", 4);
    return out;
}

static const char *index_key(char *out, const char *where, size_t i)
{
    int n = snprintf(out, KEY_CAP, "%s[%zu]", where, i);
    if (n < 0 || n >= KEY_CAP)
        memcpy(out + KEY_CAP - 4, "...", 4);
    return out;
}

/*
 * Match a mapping's keys against fields: unknown keys are reported at the
 * key, duplicates at the second occurrence, missing required keys at the
 * mapping. where is the mapping's key path, NULL for the top level. False
 * when the node is not a mapping at all.
 */
static bool walk_map(struct ctx *c, yaml_node_t *map, const char *where, struct field *f, size_t nf)
{
    char d[80];
    const char *in = where ? " in " : "";
    const char *wh = where ? where : "";
    if (map->type != YAML_MAPPING_NODE) {
        if (where)
            problem_node(c, map, "%s: expected a mapping, got %s", where,
                         describe(map, d, sizeof(d)));
        else
            problem_node(c, map, "expected a mapping at the top level, got %s",
                         describe(map, d, sizeof(d)));
        return false;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
        if (k == NULL || v == NULL)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            problem_node(c, k, "expected a plain key, got %s%s%s", describe(k, d, sizeof(d)), in,
                         wh);
            continue;
        }
        const char *name = scalar_text(k);
        size_t i = 0;
        while (i < nf && (strlen(name) != k->data.scalar.length || strcmp(name, f[i].name) != 0))
            i++;
        if (i == nf) {
            problem_node(c, k, "unknown key %s%s%s", describe(k, d, sizeof(d)), in, wh);
            continue;
        }
        if (f[i].key != NULL) {
            problem_node(c, k, "duplicate key '%s'%s%s", f[i].name, in, wh);
            continue;
        }
        f[i].key = k;
        f[i].val = v;
    }
    for (size_t i = 0; i < nf; i++) {
        if (f[i].required && f[i].key == NULL)
            problem_node(c, map, "missing required key '%s'%s%s", f[i].name, in, wh);
    }
    return true;
}

/* --- typed values -------------------------------------------------------------- */

static char *copy_str(struct ctx *c, const char *s)
{
    char *p = strdup(s);
    if (p == NULL)
        c->oom = true;
    return p;
}

/* The text of a non-empty string scalar, or NULL after reporting why not. */
static const char *want_string(struct ctx *c, const yaml_node_t *n, const char *key)
{
    char d[80];
    if (n->type != YAML_SCALAR_NODE || is_null(n)) {
        problem_node(c, n, "%s: expected a string, got %s", key, describe(n, d, sizeof(d)));
        return NULL;
    }
    if (n->data.scalar.length == 0) {
        problem_node(c, n, "%s: must not be empty", key);
        return NULL;
    }
    if (strlen(scalar_text(n)) != n->data.scalar.length) {
        problem_node(c, n, "%s: must not contain a NUL character", key);
        return NULL;
    }
    return scalar_text(n);
}

/* Integers and booleans are plain scalars: a quoted "2" is a string (YAML 1.2 section 10.3.2). */
static bool want_plain(struct ctx *c, const yaml_node_t *n, const char *key, const char *what)
{
    char d[80];
    if (n->type != YAML_SCALAR_NODE || is_null(n)) {
        problem_node(c, n, "%s: expected %s, got %s", key, what, describe(n, d, sizeof(d)));
        return false;
    }
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        problem_node(c, n, "%s: expected %s, got the quoted string %s", key, what,
                     describe(n, d, sizeof(d)));
        return false;
    }
    return true;
}

static bool want_bool(struct ctx *c, const yaml_node_t *n, const char *key, bool *out)
{
    char d[80];
    if (!want_plain(c, n, key, "true or false"))
        return false;
    const char *s = scalar_text(n);
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0) {
        *out = true;
        return true;
    }
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0) {
        *out = false;
        return true;
    }
    problem_node(c, n, "%s: expected true or false, got %s", key, describe(n, d, sizeof(d)));
    return false;
}

static bool want_uint(struct ctx *c, const yaml_node_t *n, const char *key, uint64_t min,
                      uint64_t max, uint64_t *out)
{
    char d[80];
    if (!want_plain(c, n, key, "an integer"))
        return false;
    const char *s = scalar_text(n);
    uint64_t v = 0;
    size_t i = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned digit = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - digit) / 10) {
            v = UINT64_MAX;
            while (s[i + 1] >= '0' && s[i + 1] <= '9')
                i++;
        } else {
            v = v * 10 + digit;
        }
    }
    if (i == 0 || s[i] != '\0') {
        problem_node(c, n, "%s: expected an integer, got %s", key, describe(n, d, sizeof(d)));
        return false;
    }
    if (v < min || v > max) {
        problem_node(c, n, "%s: must be between %llu and %llu, got %s", key,
                     (unsigned long long)min, (unsigned long long)max, describe(n, d, sizeof(d)));
        return false;
    }
    *out = v;
    return true;
}

static bool want_size(struct ctx *c, const yaml_node_t *n, const char *key, uint64_t min,
                      uint64_t max, uint64_t *out)
{
    char d[80], lo[32], hi[32];
    const char *why = NULL;
    uint64_t v = 0;
    int rc = CH_EINVAL;
    if (n->type == YAML_SCALAR_NODE && !is_null(n))
        rc = util_parse_size(scalar_text(n), &v, &why);
    if (rc != 0) {
        if (why != NULL && strstr(why, "too large") != NULL)
            problem_node(c, n, "%s: %s is too large", key, describe(n, d, sizeof(d)));
        else
            problem_node(c, n, "%s: expected a size like 16KiB, got %s", key,
                         describe(n, d, sizeof(d)));
        return false;
    }
    if (v < min || v > max) {
        util_format_size(min, lo, sizeof(lo));
        util_format_size(max, hi, sizeof(hi));
        if (max == UINT64_MAX)
            problem_node(c, n, "%s: must be at least %s, got %s", key, lo,
                         describe(n, d, sizeof(d)));
        else
            problem_node(c, n, "%s: must be between %s and %s, got %s", key, lo, hi,
                         describe(n, d, sizeof(d)));
        return false;
    }
    *out = v;
    return true;
}

/* A duration greater than zero: every timeout in the schema needs one. */
static bool want_duration(struct ctx *c, const yaml_node_t *n, const char *key, uint64_t *out)
{
    char d[80];
    const char *why = NULL;
    uint64_t v = 0;
    int rc = CH_EINVAL;
    if (n->type == YAML_SCALAR_NODE && !is_null(n))
        rc = util_parse_duration_ms(scalar_text(n), &v, &why);
    if (rc != 0) {
        if (why != NULL && strstr(why, "too large") != NULL)
            problem_node(c, n, "%s: %s is too large", key, describe(n, d, sizeof(d)));
        else
            problem_node(c, n, "%s: expected a duration like 10s, got %s", key,
                         describe(n, d, sizeof(d)));
        return false;
    }
    if (v == 0) {
        problem_node(c, n, "%s: must be greater than 0", key);
        return false;
    }
    *out = v;
    return true;
}

/* A sequence, possibly required to be non-empty; what names an item for messages. */
static bool want_seq(struct ctx *c, const yaml_node_t *n, const char *key, const char *what,
                     bool allow_empty)
{
    char d[80];
    if (n->type != YAML_SEQUENCE_NODE) {
        problem_node(c, n, "%s: expected a sequence of %s, got %s", key, what,
                     describe(n, d, sizeof(d)));
        return false;
    }
    if (!allow_empty && n->data.sequence.items.top == n->data.sequence.items.start) {
        problem_node(c, n, "%s: must not be empty", key);
        return false;
    }
    return true;
}

static size_t seq_len(const yaml_node_t *n)
{
    return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static yaml_node_t *seq_item(struct ctx *c, const yaml_node_t *n, size_t i)
{
    return node_at(c, n->data.sequence.items.start[i]);
}

/* --- addresses and names ------------------------------------------------------- */

/* A decimal TCP port 1..65535 in exactly n bytes. */
static int parse_port(const char *s, size_t n, uint16_t *out)
{
    unsigned v = 0;
    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

/* An IPv6 literal of n bytes (no brackets, no zone id). 0 or -1. */
static int parse_ipv6(const char *s, size_t n, struct in6_addr *out)
{
    char tmp[INET6_ADDRSTRLEN];
    if (n < 2 || n >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET6, tmp, out) == 1 ? 0 : -1;
}

static int parse_ipv4(const char *s, size_t n, struct in_addr *out)
{
    char tmp[INET_ADDRSTRLEN];
    if (n < 7 || n >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET, tmp, out) == 1 ? 0 : -1;
}

/* Matches the spec's IPv4address production: 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT. */
static bool looks_ipv4(const char *s, size_t n)
{
    size_t dots = 0, run = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (run == 0)
                return false;
            dots++;
            run = 0;
        } else if (s[i] >= '0' && s[i] <= '9') {
            if (++run > 3)
                return false;
        } else {
            return false;
        }
    }
    return dots == 3 && run > 0;
}

/*
 * A host that is not a bracketed IPv6 literal: a dotted IPv4 address or a
 * dns-name (Matrix spec, appendix "Server Name": 1*255 of DIGIT / ALPHA /
 * "-" / "."), here also without empty labels. NULL or why not.
 */
static const char *check_host(const char *h, size_t n)
{
    struct in_addr a4;
    if (n == 0)
        return "the host is empty";
    if (n > 255)
        return "the host is longer than 255 characters";
    for (size_t i = 0; i < n; i++) {
        char ch = h[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '-' || ch == '.';
        if (!ok)
            return ch == ':' ? "an IPv6 address needs brackets, e.g. [::1]"
                             : "the host may only hold letters, digits, '-' and '.'";
    }
    if (looks_ipv4(h, n))
        return parse_ipv4(h, n, &a4) == 0 ? NULL : "invalid IPv4 address";
    if (h[0] == '.' || h[n - 1] == '.' || memmem(h, n, "..", 2) != NULL)
        return "empty label in the host name";
    return NULL;
}

/*
 * A server name (Matrix spec appendix "Server Name") with the one parser the
 * whole program uses (policy.h): NULL and the normalised name in sn, or why not.
 */
static const char *check_server_name(const char *s, struct server_name *sn)
{
    const char *why = NULL;
    return server_name_parse(s, strlen(s), sn, &why) == 0 ? NULL : why;
}

/* "IPv4:PORT" or "[IPv6]:PORT", numeric only. NULL or why not. */
static const char *parse_bind(const char *s, struct cfg_addr *a)
{
    char host[INET6_ADDRSTRLEN];
    const char *port;
    uint16_t p;
    memset(a, 0, sizeof(*a));
    if (s[0] == '[') {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
        const char *rb = strchr(s, ']');
        if (rb == NULL || parse_ipv6(s + 1, (size_t)(rb - s - 1), &sin6->sin6_addr) != 0)
            return "invalid IPv6 address";
        if (rb[1] != ':')
            return "missing :PORT";
        port = rb + 2;
        sin6->sin6_family = AF_INET6;
        a->len = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
        const char *colon = strrchr(s, ':');
        if (colon == NULL)
            return "missing :PORT";
        if (memchr(s, ':', (size_t)(colon - s)) != NULL)
            return "an IPv6 address needs brackets, e.g. [::1]:8448";
        if (parse_ipv4(s, (size_t)(colon - s), &sin->sin_addr) != 0)
            return "expected a numeric IPv4 address or a bracketed IPv6 address";
        port = colon + 1;
        sin->sin_family = AF_INET;
        a->len = sizeof(*sin);
    }
    if (parse_port(port, strlen(port), &p) != 0)
        return "the port must be a number from 1 to 65535";
    if (a->ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
        sin6->sin6_port = htons(p);
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(a->text, sizeof(a->text), "[%s]:%u", host, p);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
        sin->sin_port = htons(p);
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(a->text, sizeof(a->text), "%s:%u", host, p);
    }
    return NULL;
}

/*
 * "http://" HOST [":" PORT] ["/"] (RFC 3986 section 3; the scheme is
 * case-insensitive, section 3.1). Fills url, host, port and authority;
 * *literal says whether the host is an IP literal. NULL or why not.
 */
static const char *parse_upstream(struct ctx *c, const char *url, struct cfg_upstream *u,
                                  bool *literal)
{
    struct in6_addr a6;
    const char *host, *after;
    size_t hlen;
    bool v6 = false;
    u->port = 80;
    if (strncasecmp(url, "https://", 8) == 0)
        return "https upstreams are not supported yet: use http:// on a trusted network";
    if (strncasecmp(url, "http://", 7) != 0)
        return strstr(url, "://") ? "unsupported scheme: use http://"
                                  : "expected a URL like http://127.0.0.1:8008";
    const char *auth = url + 7;
    size_t alen = strcspn(auth, "/?#");
    const char *tail = auth + alen;
    if (memchr(auth, '@', alen) != NULL)
        return "user information (user@) is not allowed";
    if (strchr(tail, '?') != NULL)
        return "a query is not allowed";
    if (strchr(tail, '#') != NULL)
        return "a fragment is not allowed";
    if (tail[0] == '/' && tail[1] != '\0')
        return "a path is not allowed: the upstream is a server root";
    if (auth[0] == '[') {
        const char *rb = memchr(auth, ']', alen);
        if (rb == NULL || parse_ipv6(auth + 1, (size_t)(rb - auth - 1), &a6) != 0)
            return "invalid IPv6 literal";
        host = auth + 1;
        hlen = (size_t)(rb - host);
        after = rb + 1;
        v6 = true;
        *literal = true;
    } else {
        const char *colon = memchr(auth, ':', alen);
        hlen = colon ? (size_t)(colon - auth) : alen;
        if (colon && memchr(colon + 1, ':', alen - hlen - 1) != NULL)
            return "an IPv6 address needs brackets, e.g. http://[::1]:8008";
        host = auth;
        const char *why = check_host(host, hlen);
        if (why != NULL)
            return why;
        after = auth + hlen;
        *literal = looks_ipv4(host, hlen);
    }
    if (after < tail) {
        if (*after != ':')
            return "unexpected characters after the host";
        if (parse_port(after + 1, (size_t)(tail - after - 1), &u->port) != 0)
            return "the port must be a number from 1 to 65535";
    }
    u->url = copy_str(c, url);
    u->host = strndup(host, hlen);
    if (u->host == NULL ||
        asprintf(&u->authority, v6 ? "[%s]:%u" : "%s:%u", u->host, u->port) < 0) {
        u->authority = NULL;
        c->oom = true;
    }
    return NULL;
}

/* Resolve the upstream once, at load time; the first address wins. 0 or -1 with why. */
static int resolve_upstream(struct cfg_upstream *u, bool literal, char *why, size_t cap)
{
    struct addrinfo hints = {0}, *res = NULL;
    char port[8];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (literal ? AI_NUMERICHOST : 0);
    snprintf(port, sizeof(port), "%u", u->port);
    int rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(why, cap, "%s", rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        if (res)
            freeaddrinfo(res);
        return -1;
    }
    memcpy(&u->addr, res->ai_addr, res->ai_addrlen);
    u->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* --- sections ------------------------------------------------------------------ */

/* Where a listener asks for TLS: its tls value, or the listener itself when TLS is the default. */
struct tls_use {
    const yaml_node_t *at; /* NULL: no TLS */
};

static void load_listeners(struct ctx *c, struct config *cfg, yaml_node_t *seq,
                           struct tls_use *tls_use)
{
    char key[KEY_CAP], where[KEY_CAP], d[80];
    if (!want_seq(c, seq, "listeners", "listeners", false))
        return;
    size_t n = seq_len(seq);
    cfg->listeners = calloc(n, sizeof(*cfg->listeners));
    if (cfg->listeners == NULL) {
        c->oom = true;
        return;
    }
    cfg->nlisteners = n;
    for (size_t i = 0; i < n; i++) {
        struct cfg_listener *l = &cfg->listeners[i];
        struct field f[] = {{"type", true}, {"bind", true}, {"tls", false}, {"token_path", false}};
        yaml_node_t *item = seq_item(c, seq, i);
        index_key(where, "listeners", i);
        if (item == NULL || !walk_map(c, item, where, f, ARRAY_LEN(f)))
            continue;
        bool type_ok = false;
        const char *t = f[0].val ? want_string(c, f[0].val, join_key(key, where, "type")) : NULL;
        if (t != NULL) {
            size_t k = 0;
            while (k < ARRAY_LEN(listener_names) && strcmp(t, listener_names[k]) != 0)
                k++;
            if (k == LISTENER_FEDERATION || k == LISTENER_EGRESS || k == LISTENER_ADMIN) {
                type_ok = true;
                l->type = (enum listener_type)k;
            } else if (k < ARRAY_LEN(listener_names)) {
                l->type = (enum listener_type)k;
                problem_node(c, f[0].val,
                             "%s: listener type '%s' is not supported by this version of chappe",
                             key, t);
            } else {
                problem_node(c, f[0].val,
                             "%s: unknown listener type %s (this version supports: federation, "
                             "egress, admin)",
                             key, describe(f[0].val, d, sizeof(d)));
            }
        }
        if (f[1].val != NULL) {
            yaml_node_t *b = f[1].val;
            join_key(key, where, "bind");
            bool single = b->type == YAML_SCALAR_NODE;
            if (single || want_seq(c, b, key, "addresses", false)) {
                size_t nb = single ? 1 : seq_len(b);
                l->binds = calloc(nb, sizeof(*l->binds));
                if (l->binds == NULL) {
                    c->oom = true;
                    return;
                }
                for (size_t j = 0; j < nb; j++) {
                    char bkey[KEY_CAP];
                    yaml_node_t *bn = single ? b : seq_item(c, b, j);
                    if (bn == NULL)
                        continue;
                    if (!single)
                        index_key(bkey, key, j);
                    else
                        memcpy(bkey, key, KEY_CAP);
                    const char *s = want_string(c, bn, bkey);
                    if (s == NULL)
                        continue;
                    struct cfg_addr *a = &l->binds[l->nbinds];
                    const char *why = parse_bind(s, a);
                    if (why != NULL) {
                        problem_node(c, bn, "%s: invalid address %s: %s", bkey,
                                     describe(bn, d, sizeof(d)), why);
                        continue;
                    }
                    /* The same address twice would split one socket's accepts (SO_REUSEPORT). */
                    bool seen = false;
                    for (size_t li = 0; li <= i && !seen; li++) {
                        const struct cfg_listener *o = &cfg->listeners[li];
                        size_t lim = li == i ? l->nbinds : o->nbinds;
                        for (size_t bi = 0; bi < lim && !seen; bi++)
                            seen = strcmp(o->binds[bi].text, a->text) == 0;
                    }
                    if (seen) {
                        problem_node(c, bn, "%s: address %s is listed twice", bkey, a->text);
                        continue;
                    }
                    l->nbinds++;
                }
            }
        }
        l->tls = l->type == LISTENER_FEDERATION;
        if (f[2].val != NULL && !want_bool(c, f[2].val, join_key(key, where, "tls"), &l->tls))
            continue;
        if ((l->type == LISTENER_EGRESS || l->type == LISTENER_ADMIN) && l->tls) {
            /* the homeservers' side, the operators' side: plain HTTP on an address only they
             * reach */
            problem_node(c, f[2].val, "%s: an %s listener is plain HTTP (tls: false)",
                         join_key(key, where, "tls"), config_listener_type_name(l->type));
            continue;
        }
        if (type_ok && l->tls) {
            tls_use[i].at = f[2].val ? f[2].val : item;
        }
        if (f[3].val != NULL) {
            const char *s = want_string(c, f[3].val, join_key(key, where, "token_path"));
            if (s != NULL && l->type != LISTENER_ADMIN)
                problem_node(c, f[3].val, "%s: only an admin listener takes a token", key);
            else if (s != NULL)
                l->token_path = copy_str(c, s);
        }
    }
}

static void load_cert(struct ctx *c, yaml_node_t *n, const char *where, struct cfg_cert *out)
{
    char key[KEY_CAP];
    struct field f[] = {{"cert", true}, {"key", true}};
    if (!walk_map(c, n, where, f, ARRAY_LEN(f)))
        return;
    const char *s;
    if (f[0].val && (s = want_string(c, f[0].val, join_key(key, where, "cert"))) != NULL)
        out->cert = copy_str(c, s);
    if (f[1].val && (s = want_string(c, f[1].val, join_key(key, where, "key"))) != NULL)
        out->key = copy_str(c, s);
}

/*
 * Loads the tls section. True when it lists at least one certificate entry,
 * or is too malformed to tell (already reported: no second complaint).
 */
static bool load_tls(struct ctx *c, struct config *cfg, yaml_node_t *n)
{
    char where[KEY_CAP];
    struct field f[] = {{"certificates", false}, {"egress_ca", false}};
    bool listed = false;
    if (!walk_map(c, n, "tls", f, ARRAY_LEN(f)))
        return true;
    yaml_node_t *seq = f[0].val;
    if (seq != NULL && !want_seq(c, seq, "tls.certificates", "{cert, key} mappings", true)) {
        listed = true;
    } else if (seq != NULL) {
        size_t nc = seq_len(seq);
        listed = nc > 0;
        if (nc > 0) {
            cfg->tls.certificates = calloc(nc, sizeof(*cfg->tls.certificates));
            if (cfg->tls.certificates == NULL) {
                c->oom = true;
                return listed;
            }
            cfg->tls.ncertificates = nc;
        }
        for (size_t i = 0; i < nc; i++) {
            yaml_node_t *item = seq_item(c, seq, i);
            if (item != NULL)
                load_cert(c, item, index_key(where, "tls.certificates", i),
                          &cfg->tls.certificates[i]);
        }
    }
    if (f[1].val != NULL) {
        cfg->tls.has_egress_ca = true;
        load_cert(c, f[1].val, "tls.egress_ca", &cfg->tls.egress_ca);
    }
    return listed;
}

static void load_homeservers(struct ctx *c, struct config *cfg, yaml_node_t *seq)
{
    char key[KEY_CAP], where[KEY_CAP], d[80], why[256];
    if (!want_seq(c, seq, "homeservers", "homeservers", false))
        return;
    size_t n = seq_len(seq);
    cfg->homeservers = calloc(n, sizeof(*cfg->homeservers));
    if (cfg->homeservers == NULL) {
        c->oom = true;
        return;
    }
    cfg->nhomeservers = n;
    for (size_t i = 0; i < n; i++) {
        struct cfg_homeserver *h = &cfg->homeservers[i];
        struct field f[] = {{"server_name", true}, {"upstream", true}, {"egress_secret_path"}};
        yaml_node_t *item = seq_item(c, seq, i);
        index_key(where, "homeservers", i);
        if (item == NULL || !walk_map(c, item, where, f, ARRAY_LEN(f)))
            continue;
        const char *s;
        if (f[0].val && (s = want_string(c, f[0].val, join_key(key, where, "server_name")))) {
            struct server_name sn;
            const char *bad = check_server_name(s, &sn);
            if (bad != NULL) {
                problem_node(c, f[0].val, "%s: invalid server name %s: %s", key,
                             describe(f[0].val, d, sizeof(d)), bad);
            } else if ((h->server_name = copy_str(c, sn.name)) != NULL) {
                for (size_t j = 0; j < i; j++) {
                    const char *o = cfg->homeservers[j].server_name;
                    if (o != NULL && strcmp(o, h->server_name) == 0) {
                        problem_node(c, f[0].val, "%s: '%s' is already listed as homeservers[%zu]",
                                     key, h->server_name, j);
                        free(h->server_name);
                        h->server_name = NULL;
                        break;
                    }
                }
            }
        }
        if (f[1].val && (s = want_string(c, f[1].val, join_key(key, where, "upstream")))) {
            bool literal = false;
            const char *bad = parse_upstream(c, s, &h->upstream, &literal);
            if (bad != NULL)
                problem_node(c, f[1].val, "%s: invalid upstream %s: %s", key,
                             describe(f[1].val, d, sizeof(d)), bad);
            else if (h->upstream.host != NULL &&
                     resolve_upstream(&h->upstream, literal, why, sizeof(why)) != 0)
                problem_node(c, f[1].val, "%s: cannot resolve '%s': %s", key, h->upstream.host,
                             why);
        }
        if (f[2].val && (s = want_string(c, f[2].val, join_key(key, where, "egress_secret_path"))))
            h->egress_secret_path = copy_str(c, s);
    }
}

enum limit_kind { LIMIT_SIZE, LIMIT_DURATION, LIMIT_INT };

struct limit_spec {
    const char *name;
    enum limit_kind kind;
    size_t off; /* offset of the uint64_t in struct cfg_limits */
    uint64_t min, max, def;
};

#define LIMIT(name, kind, field, min, max, def)                                                    \
    {                                                                                              \
        name, kind, offsetof(struct cfg_limits, field), min, max, def                              \
    }

static const struct limit_spec limit_specs[] = {
    LIMIT("max_header_bytes", LIMIT_SIZE, max_header_bytes, 1024, 1048576, 16384),
    LIMIT("max_body_bytes", LIMIT_SIZE, max_body_bytes, 1, UINT64_MAX, 13107200),
    LIMIT("header_timeout", LIMIT_DURATION, header_timeout_ms, 1, UINT64_MAX, 10000),
    LIMIT("body_timeout", LIMIT_DURATION, body_timeout_ms, 1, UINT64_MAX, 60000),
    LIMIT("idle_timeout", LIMIT_DURATION, idle_timeout_ms, 1, UINT64_MAX, 60000),
    LIMIT("tls_handshake_timeout", LIMIT_DURATION, tls_handshake_timeout_ms, 1, UINT64_MAX, 10000),
    LIMIT("upstream_connect_timeout", LIMIT_DURATION, upstream_connect_timeout_ms, 1, UINT64_MAX,
          5000),
    LIMIT("upstream_timeout", LIMIT_DURATION, upstream_timeout_ms, 1, UINT64_MAX, 60000),
    LIMIT("upstream_idle_timeout", LIMIT_DURATION, upstream_idle_timeout_ms, 1, UINT64_MAX, 30000),
    LIMIT("upstream_keepalive", LIMIT_INT, upstream_keepalive, 0, 100000, 128),
    LIMIT("drain_timeout", LIMIT_DURATION, drain_timeout_ms, 1, UINT64_MAX, 30000),
    LIMIT("max_connections", LIMIT_INT, max_connections, 1, 1000000, 10000),
    LIMIT("outbound_connect_timeout", LIMIT_DURATION, outbound_connect_timeout_ms, 1, UINT64_MAX,
          10000),
    LIMIT("outbound_tls_timeout", LIMIT_DURATION, outbound_tls_timeout_ms, 1, UINT64_MAX, 10000),
    LIMIT("outbound_timeout", LIMIT_DURATION, outbound_timeout_ms, 1, UINT64_MAX, 60000),
    LIMIT("outbound_idle_timeout", LIMIT_DURATION, outbound_idle_timeout_ms, 1, UINT64_MAX, 60000),
    LIMIT("outbound_keepalive", LIMIT_INT, outbound_keepalive, 0, 100000, 16),
    LIMIT("well_known_timeout", LIMIT_DURATION, well_known_timeout_ms, 1, UINT64_MAX, 10000),
    LIMIT("key_refetch_interval", LIMIT_DURATION, key_refetch_interval_ms, 1, UINT64_MAX, 30000),
};

static uint64_t *limit_field(struct cfg_limits *l, const struct limit_spec *s)
{
    return (uint64_t *)((char *)l + s->off);
}

static uint64_t limit_value(const struct cfg_limits *l, const struct limit_spec *s)
{
    return *(const uint64_t *)((const char *)l + s->off);
}

static void load_limits(struct ctx *c, struct cfg_limits *l, yaml_node_t *n)
{
    char key[KEY_CAP];
    struct field f[ARRAY_LEN(limit_specs)];
    for (size_t i = 0; i < ARRAY_LEN(limit_specs); i++)
        f[i] = (struct field){limit_specs[i].name, false, NULL, NULL};
    if (!walk_map(c, n, "limits", f, ARRAY_LEN(f)))
        return;
    for (size_t i = 0; i < ARRAY_LEN(limit_specs); i++) {
        const struct limit_spec *s = &limit_specs[i];
        uint64_t v;
        bool ok;
        if (f[i].val == NULL)
            continue;
        join_key(key, "limits", s->name);
        if (s->kind == LIMIT_SIZE)
            ok = want_size(c, f[i].val, key, s->min, s->max, &v);
        else if (s->kind == LIMIT_DURATION)
            ok = want_duration(c, f[i].val, key, &v);
        else
            ok = want_uint(c, f[i].val, key, s->min, s->max, &v);
        if (ok)
            *limit_field(l, s) = v;
    }
}

/* A key id as Synapse writes them: "ed25519:" then [a-zA-Z0-9_]+ (at most 63 bytes in all). */
static bool valid_key_id(const char *id, size_t len)
{
    bool ok = strncmp(id, "ed25519:", 8) == 0 && id[8] != '\0' && strlen(id) == len && len < 64;
    for (size_t i = 8; ok && id[i]; i++)
        ok = (id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
             (id[i] >= '0' && id[i] <= '9') || id[i] == '_';
    return ok;
}

/* Synapse's old_signing_keys: { "ed25519:id": { key: <unpadded base64>, expired_ts: <ms> } }. */
static void load_old_keys(struct ctx *c, struct config *cfg, yaml_node_t *map)
{
    char d[80], where[KEY_CAP], key[KEY_CAP];
    if (map->type != YAML_MAPPING_NODE) {
        problem_node(c, map,
                     "old_signing_keys: expected a mapping of key id to {key, expired_ts}, "
                     "got %s",
                     describe(map, d, sizeof(d)));
        return;
    }
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    cfg->old_signing_keys = calloc(n ? n : 1, sizeof(*cfg->old_signing_keys));
    if (cfg->old_signing_keys == NULL) {
        c->oom = true;
        return;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
        if (k == NULL || v == NULL)
            continue;
        if (k->type != YAML_SCALAR_NODE) {
            problem_node(c, k, "old_signing_keys: expected a key id, got %s",
                         describe(k, d, sizeof(d)));
            continue;
        }
        const char *id = scalar_text(k);
        bool id_ok = valid_key_id(id, k->data.scalar.length);
        if (!id_ok) {
            problem_node(c, k,
                         "old_signing_keys: invalid key id %s: expected ed25519:<version>, "
                         "version of [a-zA-Z0-9_]",
                         describe(k, d, sizeof(d)));
            continue;
        }
        for (size_t i = 0; i < cfg->nold_signing_keys; i++) {
            const char *seen = cfg->old_signing_keys[i].id;
            if (seen != NULL && strcmp(seen, id) == 0) {
                problem_node(c, k, "duplicate key '%s' in old_signing_keys", id);
                id_ok = false;
            }
        }
        if (!id_ok)
            continue;
        snprintf(where, sizeof(where), "old_signing_keys.%s", id);
        struct field f[] = {{"key", true}, {"expired_ts", true}};
        if (!walk_map(c, v, where, f, ARRAY_LEN(f)))
            continue;
        struct cfg_old_key *ok = &cfg->old_signing_keys[cfg->nold_signing_keys];
        const char *b64 = f[0].val ? want_string(c, f[0].val, join_key(key, where, "key")) : NULL;
        uint64_t ts = 0;
        bool ts_ok = f[1].val && want_uint(c, f[1].val, join_key(key, where, "expired_ts"), 0,
                                           CJSON_INT_MAX, &ts);
        if (b64 != NULL) {
            struct buf raw = BUF_INIT;
            if (b64_decode(&raw, b64, strlen(b64)) < 0 || raw.len != 32) {
                problem_node(c, f[0].val,
                             "%s: expected the unpadded base64 of a 32-byte ed25519 "
                             "public key, got %s",
                             join_key(key, where, "key"), describe(f[0].val, d, sizeof(d)));
                b64 = NULL;
            }
            buf_free(&raw);
        }
        if (b64 == NULL || !ts_ok)
            continue;
        ok->id = copy_str(c, id);
        ok->key = copy_str(c, b64);
        ok->expired_ts = ts;
        cfg->nold_signing_keys++; /* counted even on OOM: config_free frees what was copied */
    }
}

/* --- policy and outbound ------------------------------------------------------- */

/* "FILE:LINE:COL" of a node, for explanations of which rule decided. */
static char *node_label(struct ctx *c, const yaml_node_t *n)
{
    char *s;
    if (asprintf(&s, "%s:%zu:%zu", c->path, n->start_mark.line + 1, n->start_mark.column + 1) < 0) {
        c->oom = true;
        return NULL;
    }
    return s;
}

/* The word, quoted or not (a list file named "any" would be a trap, not a feature). */
static bool is_word(const yaml_node_t *n, const char *word)
{
    return n->type == YAML_SCALAR_NODE && strcmp(scalar_text(n), word) == 0;
}

/*
 * federation_domain_whitelist: the word `any`, or a list of server names and
 * "*.suffix" wildcards. Unlike Synapse an absent list is an error (the
 * operator says who may federate), and so is an empty one.
 */
static void load_name_rules(struct ctx *c, struct config *cfg, yaml_node_t *n)
{
    static const char key[] = "federation_domain_whitelist";
    char where[KEY_CAP], d[80];
    if (is_word(n, "any")) {
        cfg->federation_any = true;
        return;
    }
    if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
        problem_node(c, n, "%s: expected a list of server names or the word any, got %s", key,
                     describe(n, d, sizeof(d)));
        return;
    }
    if (!want_seq(c, n, key, "server names", true))
        return;
    size_t count = seq_len(n);
    if (count == 0) {
        problem_node(
            c, n, "%s: must not be empty (list the servers to federate with, or write any)", key);
        return;
    }
    cfg->federation_domain_whitelist = calloc(count, sizeof(struct cfg_name_rule));
    if (cfg->federation_domain_whitelist == NULL) {
        c->oom = true;
        return;
    }
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = seq_item(c, n, i);
        const char *s, *why = NULL;
        struct server_name sn;
        char norm[sizeof(sn.name) + 2];
        if (item == NULL || (s = want_string(c, item, index_key(where, key, i))) == NULL)
            continue;
        if (s[0] == '*') {
            /* "*.suffix": the suffix is a DNS name without a port. */
            if (s[1] != '.' || server_name_parse(s + 2, strlen(s + 2), &sn, &why) != 0 ||
                sn.type != SERVER_HOST_DNS || sn.port != 0) {
                problem_node(c, item,
                             "%s: invalid wildcard %s: expected *.suffix with a host name suffix "
                             "(no port)%s%s",
                             where, describe(item, d, sizeof(d)), why ? ": " : "", why ? why : "");
                continue;
            }
            snprintf(norm, sizeof(norm), "*.%s", sn.name);
        } else if (server_name_parse(s, strlen(s), &sn, &why) != 0) {
            problem_node(c, item, "%s: invalid server name %s: %s", where,
                         describe(item, d, sizeof(d)), why);
            continue;
        } else {
            snprintf(norm, sizeof(norm), "%s", sn.name);
        }
        struct cfg_name_rule *r =
            &cfg->federation_domain_whitelist[cfg->nfederation_domain_whitelist];
        if ((r->pattern = copy_str(c, norm)) == NULL || (r->label = node_label(c, item)) == NULL) {
            free(r->pattern);
            r->pattern = NULL;
            continue;
        }
        cfg->nfederation_domain_whitelist++;
    }
}

/*
 * An address list: a YAML list of CIDRs, a path to a list file (read by
 * policy_new, so that a reload reads it again), or -- for sovereign_ranges --
 * the word `any`. The list may be empty only where emptiness means "nothing".
 */
static void load_ranges(struct ctx *c, struct cfg_ranges *r, yaml_node_t *n, const char *key,
                        bool sovereign)
{
    char where[KEY_CAP], d[80];
    r->present = true;
    r->where = node_label(c, n);
    if (is_word(n, "any")) {
        if (sovereign)
            r->any = true;
        else
            problem_node(c, n, "%s: the word any is only meaningful for sovereign_ranges", key);
        return;
    }
    if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
        const char *s = want_string(c, n, key);
        if (s != NULL)
            r->file = copy_str(c, s);
        return;
    }
    if (!want_seq(c, n, key, "CIDR ranges", true))
        return;
    size_t count = seq_len(n);
    if (count == 0 && sovereign) {
        problem_node(c, n,
                     "%s: must not be empty (list the sovereign ranges, or write any to disable "
                     "the check)",
                     key);
        return;
    }
    r->items = calloc(count ? count : 1, sizeof(*r->items));
    if (r->items == NULL) {
        c->oom = true;
        return;
    }
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = seq_item(c, n, i);
        const char *s, *why = NULL;
        struct cfg_cidr *e = &r->items[r->nitems];
        if (item == NULL || (s = want_string(c, item, index_key(where, key, i))) == NULL)
            continue;
        if (cidr_parse(s, strlen(s), &e->cidr, &why) != 0) {
            problem_node(c, item, "%s: invalid CIDR %s: %s", where, describe(item, d, sizeof(d)),
                         why);
            continue;
        }
        if ((e->label = node_label(c, item)) != NULL)
            r->nitems++;
    }
}

static void load_ca_list(struct ctx *c, struct config *cfg, yaml_node_t *n)
{
    static const char key[] = "federation_custom_ca_list";
    char where[KEY_CAP];
    if (!want_seq(c, n, key, "PEM file paths", true))
        return;
    size_t count = seq_len(n);
    cfg->federation_custom_ca_list = calloc(count ? count : 1, sizeof(char *));
    if (cfg->federation_custom_ca_list == NULL) {
        c->oom = true;
        return;
    }
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = seq_item(c, n, i);
        const char *s;
        if (item == NULL || (s = want_string(c, item, index_key(where, key, i))) == NULL)
            continue;
        char *p = copy_str(c, s);
        if (p != NULL)
            cfg->federation_custom_ca_list[cfg->nfederation_custom_ca_list++] = p;
    }
}

/* "IP", "IP:PORT", "[IPv6]" or "[IPv6]:PORT" (numeric) -> "IP:PORT" / "[IPv6]:PORT". */
static const char *parse_dns_server(const char *s, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    struct in_addr a4;
    struct in6_addr a6;
    uint16_t port = 53;
    const char *tail;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || parse_ipv6(s + 1, (size_t)(rb - s - 1), &a6) != 0)
            return "invalid IPv6 address";
        tail = rb + 1;
        inet_ntop(AF_INET6, &a6, host, sizeof(host));
    } else {
        size_t hlen = strcspn(s, ":");
        if (s[hlen] == ':' && strchr(s + hlen + 1, ':') != NULL)
            return "an IPv6 address needs brackets, e.g. [::1]:53";
        if (parse_ipv4(s, hlen, &a4) != 0)
            return "expected a numeric IPv4 address or a bracketed IPv6 address";
        tail = s + hlen;
        inet_ntop(AF_INET, &a4, host, sizeof(host));
    }
    if (*tail == ':' && parse_port(tail + 1, strlen(tail + 1), &port) != 0)
        return "the port must be a number from 1 to 65535";
    if (*tail != '\0' && *tail != ':')
        return "unexpected characters after the address";
    snprintf(out, cap, s[0] == '[' ? "[%s]:%u" : "%s:%u", host, port);
    return NULL;
}

static void load_dns_servers(struct ctx *c, struct config *cfg, yaml_node_t *n)
{
    static const char key[] = "dns_servers";
    char where[KEY_CAP], d[80], norm[INET6_ADDRSTRLEN + 8];
    if (!want_seq(c, n, key, "DNS server addresses", true))
        return;
    size_t count = seq_len(n);
    cfg->dns_servers = calloc(count ? count : 1, sizeof(char *));
    if (cfg->dns_servers == NULL) {
        c->oom = true;
        return;
    }
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = seq_item(c, n, i);
        const char *s, *why;
        if (item == NULL || (s = want_string(c, item, index_key(where, key, i))) == NULL)
            continue;
        if ((why = parse_dns_server(s, norm, sizeof(norm))) != NULL) {
            problem_node(c, item, "%s: invalid DNS server %s: %s", where,
                         describe(item, d, sizeof(d)), why);
            continue;
        }
        char *p = copy_str(c, norm);
        if (p != NULL)
            cfg->dns_servers[cfg->ndns_servers++] = p;
    }
}

/* { "ed25519:id": "<unpadded base64 of 32 bytes>", ... }, non-empty. */
static void load_key_map(struct ctx *c, yaml_node_t *map, const char *where,
                         struct cfg_verify_key **out, size_t *nout)
{
    char d[80], key[KEY_CAP];
    if (map->type != YAML_MAPPING_NODE) {
        problem_node(c, map, "%s: expected a mapping of key id to base64 key, got %s", where,
                     describe(map, d, sizeof(d)));
        return;
    }
    if (map->data.mapping.pairs.top == map->data.mapping.pairs.start) {
        problem_node(c, map, "%s: must not be empty", where);
        return;
    }
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    if ((*out = calloc(n, sizeof(**out))) == NULL) {
        c->oom = true;
        return;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
        if (k == NULL || v == NULL)
            continue;
        if (k->type != YAML_SCALAR_NODE || !valid_key_id(scalar_text(k), k->data.scalar.length)) {
            problem_node(c, k,
                         "%s: invalid key id %s: expected ed25519:<version>, version of "
                         "[a-zA-Z0-9_]",
                         where, describe(k, d, sizeof(d)));
            continue;
        }
        const char *id = scalar_text(k);
        bool dup = false;
        for (size_t i = 0; i < *nout; i++)
            dup = dup || ((*out)[i].id != NULL && strcmp((*out)[i].id, id) == 0);
        if (dup) {
            problem_node(c, k, "duplicate key '%s' in %s", id, where);
            continue;
        }
        const char *b64 = want_string(c, v, join_key(key, where, id));
        if (b64 == NULL)
            continue;
        struct buf raw = BUF_INIT;
        if (b64_decode(&raw, b64, strlen(b64)) < 0 || raw.len != 32) {
            problem_node(c, v,
                         "%s: expected the unpadded base64 of a 32-byte ed25519 public key, "
                         "got %s",
                         key, describe(v, d, sizeof(d)));
            buf_free(&raw);
            continue;
        }
        struct cfg_verify_key *vk = &(*out)[*nout];
        memcpy(vk->pk, buf_data(&raw), 32);
        buf_free(&raw);
        vk->id = copy_str(c, id);
        vk->label = node_label(c, k);
        if (vk->id != NULL)
            (*nout)++;
        else
            free(vk->label);
    }
}

/* A server name key of a mapping or list entry: normalised copy, or NULL after a problem. */
static char *want_server_name(struct ctx *c, yaml_node_t *n, const char *where)
{
    char d[80];
    struct server_name sn;
    const char *s = want_string(c, n, where), *why = NULL;
    if (s == NULL)
        return NULL;
    if (server_name_parse(s, strlen(s), &sn, &why) != 0) {
        problem_node(c, n, "%s: invalid server name %s: %s", where, describe(n, d, sizeof(d)), why);
        return NULL;
    }
    return copy_str(c, sn.name);
}

/* pinned_keys: { server_name: { "ed25519:id": "<base64>" } }, as Tchap's border gateway pins. */
static void load_pinned(struct ctx *c, struct config *cfg, yaml_node_t *map)
{
    char d[80], where[KEY_CAP];
    if (map->type != YAML_MAPPING_NODE) {
        problem_node(c, map, "pinned_keys: expected a mapping of server name to keys, got %s",
                     describe(map, d, sizeof(d)));
        return;
    }
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    if ((cfg->pinned_keys = calloc(n ? n : 1, sizeof(*cfg->pinned_keys))) == NULL) {
        c->oom = true;
        return;
    }
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
        if (k == NULL || v == NULL)
            continue;
        char *name = want_server_name(c, k, "pinned_keys");
        if (name == NULL)
            continue;
        bool dup = false;
        for (size_t i = 0; i < cfg->npinned_keys; i++)
            dup = dup || (cfg->pinned_keys[i].server_name != NULL &&
                          strcmp(cfg->pinned_keys[i].server_name, name) == 0);
        if (dup) {
            problem_node(c, k, "duplicate server '%s' in pinned_keys", name);
            free(name);
            continue;
        }
        struct cfg_pinned *pin = &cfg->pinned_keys[cfg->npinned_keys++];
        pin->server_name = name;
        snprintf(where, sizeof(where), "pinned_keys.%s", name);
        load_key_map(c, v, where, &pin->keys, &pin->nkeys);
    }
}

/*
 * trusted_key_servers, Synapse's format: [{server_name, verify_keys}]. Unlike
 * Synapse, verify_keys is required: a notary whose answers cannot be checked
 * is not trusted (accept_keys_insecurely does not exist here).
 */
static void load_notaries(struct ctx *c, struct config *cfg, yaml_node_t *seq)
{
    char where[KEY_CAP], key[KEY_CAP];
    if (!want_seq(c, seq, "trusted_key_servers", "key servers", true))
        return;
    size_t n = seq_len(seq);
    if ((cfg->trusted_key_servers = calloc(n ? n : 1, sizeof(*cfg->trusted_key_servers))) == NULL) {
        c->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = seq_item(c, seq, i);
        struct field f[] = {{"server_name", true}, {"verify_keys", true}};
        index_key(where, "trusted_key_servers", i);
        if (item == NULL || !walk_map(c, item, where, f, ARRAY_LEN(f)) || f[0].val == NULL ||
            f[1].val == NULL)
            continue;
        char *name = want_server_name(c, f[0].val, join_key(key, where, "server_name"));
        if (name == NULL)
            continue;
        struct cfg_notary *nt = &cfg->trusted_key_servers[cfg->ntrusted_key_servers++];
        nt->server_name = name;
        load_key_map(c, f[1].val, join_key(key, where, "verify_keys"), &nt->keys, &nt->nkeys);
    }
}

static void free_key_list(struct cfg_verify_key *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(k[i].id);
        free(k[i].label);
    }
    free(k);
}

/* queue: { path, max_bytes, max_bytes_per_destination, map_size, max_age, max_in_flight,
 * retry: { min, multiplier, max } }. */
static void load_retry(struct ctx *c, struct config *cfg, yaml_node_t *n)
{
    char d[80];
    struct field f[] = {{"min"}, {"multiplier"}, {"max"}};
    if (!walk_map(c, n, "queue.retry", f, ARRAY_LEN(f)))
        return;
    if (f[0].val)
        want_duration(c, f[0].val, "queue.retry.min", &cfg->queue.retry_min_ms);
    if (f[2].val)
        want_duration(c, f[2].val, "queue.retry.max", &cfg->queue.retry_max_ms);
    if (f[1].val) {
        const char *s =
            f[1].val->type == YAML_SCALAR_NODE && !is_null(f[1].val) ? scalar_text(f[1].val) : NULL;
        char *end = NULL;
        double m = s != NULL && *s != '\0' ? strtod(s, &end) : 0;
        if (s == NULL || end == NULL || *end != '\0' || !(m >= 1.0 && m <= 100.0))
            problem_node(c, f[1].val,
                         "queue.retry.multiplier: expected a number from 1 to 100, got %s",
                         describe(f[1].val, d, sizeof(d)));
        else
            cfg->queue.retry_multiplier = m;
    }
    if (f[0].val && f[2].val && cfg->queue.retry_max_ms < cfg->queue.retry_min_ms)
        problem_node(c, f[2].val, "queue.retry.max: must not be below queue.retry.min");
}

static void load_queue(struct ctx *c, struct config *cfg, yaml_node_t *n)
{
    enum { Q_PATH, Q_MAX, Q_PERDEST, Q_MAP, Q_AGE, Q_INFLIGHT, Q_RETRY, Q_GROUP };
    struct field f[] = {[Q_PATH] = {"path"},
                        [Q_MAX] = {"max_bytes"},
                        [Q_PERDEST] = {"max_bytes_per_destination"},
                        [Q_MAP] = {"map_size"},
                        [Q_AGE] = {"max_age"},
                        [Q_INFLIGHT] = {"max_in_flight"},
                        [Q_RETRY] = {"retry"},
                        [Q_GROUP] = {"group_commit"}};
    const char *s = "var/queue";
    bool perdest_set = false, map_set = false;
    cfg->queue.max_bytes = 1ull << 30;
    cfg->queue.max_age_ms = 7ull * 86400000;
    cfg->queue.max_in_flight = 64;
    cfg->queue.retry_min_ms = 5000;
    cfg->queue.retry_multiplier = 2.0;
    cfg->queue.retry_max_ms = 3600000;
    cfg->queue.group_commit = true;
    if (n != NULL && walk_map(c, n, "queue", f, ARRAY_LEN(f))) {
        if (f[Q_PATH].val != NULL)
            s = want_string(c, f[Q_PATH].val, "queue.path");
        if (f[Q_MAX].val)
            want_size(c, f[Q_MAX].val, "queue.max_bytes", 65536, 1ull << 44, &cfg->queue.max_bytes);
        if (f[Q_PERDEST].val)
            perdest_set = want_size(c, f[Q_PERDEST].val, "queue.max_bytes_per_destination", 65536,
                                    1ull << 44, &cfg->queue.max_bytes_per_destination);
        if (f[Q_MAP].val)
            map_set = want_size(c, f[Q_MAP].val, "queue.map_size", 1ull << 20, 1ull << 46,
                                &cfg->queue.map_size);
        if (f[Q_AGE].val)
            want_duration(c, f[Q_AGE].val, "queue.max_age", &cfg->queue.max_age_ms);
        if (f[Q_INFLIGHT].val)
            want_uint(c, f[Q_INFLIGHT].val, "queue.max_in_flight", 1, 10000,
                      &cfg->queue.max_in_flight);
        if (f[Q_RETRY].val)
            load_retry(c, cfg, f[Q_RETRY].val);
        if (f[Q_GROUP].val)
            want_bool(c, f[Q_GROUP].val, "queue.group_commit", &cfg->queue.group_commit);
        if (perdest_set && cfg->queue.max_bytes_per_destination > cfg->queue.max_bytes)
            problem_node(c, f[Q_PERDEST].val,
                         "queue.max_bytes_per_destination: must not be above queue.max_bytes");
    }
    if (!perdest_set)
        cfg->queue.max_bytes_per_destination =
            cfg->queue.max_bytes < (256ull << 20) ? cfg->queue.max_bytes : 256ull << 20;
    if (!map_set)
        cfg->queue.map_size = cfg->queue.max_bytes + cfg->queue.max_bytes / 4 + (64ull << 20);
    if (s != NULL)
        cfg->queue.path = copy_str(c, s);
}

static void load_root(struct ctx *c, struct config *cfg, yaml_node_t *root)
{
    enum {
        F_NAME,
        F_KEY,
        F_OLDKEYS,
        F_REFRESH,
        F_WORKERS,
        F_LEVEL,
        F_ACCESS,
        F_LISTENERS,
        F_TLS,
        F_HS,
        F_LIMITS,
        F_WHITELIST,
        F_SOVEREIGN,
        F_BLACKLIST,
        F_IPWHITELIST,
        F_VERIFY,
        F_CAS,
        F_DNS,
        F_QUEUE,
        F_PINNED,
        F_NOTARIES,
        F_SOURCE
    };
    struct field f[] = {
        [F_NAME] = {"server_name", true},
        [F_KEY] = {"signing_key_path"},
        [F_OLDKEYS] = {"old_signing_keys"},
        [F_REFRESH] = {"key_refresh_interval"},
        [F_WORKERS] = {"workers"},
        [F_LEVEL] = {"log_level"},
        [F_ACCESS] = {"access_log"},
        [F_LISTENERS] = {"listeners", true},
        [F_TLS] = {"tls"},
        [F_HS] = {"homeservers", true},
        [F_LIMITS] = {"limits"},
        [F_WHITELIST] = {"federation_domain_whitelist", true},
        [F_SOVEREIGN] = {"sovereign_ranges", true},
        [F_BLACKLIST] = {"ip_range_blacklist"},
        [F_IPWHITELIST] = {"ip_range_whitelist"},
        [F_VERIFY] = {"federation_verify_certificates"},
        [F_CAS] = {"federation_custom_ca_list"},
        [F_DNS] = {"dns_servers"},
        [F_QUEUE] = {"queue"},
        [F_PINNED] = {"pinned_keys"},
        [F_NOTARIES] = {"trusted_key_servers"},
        [F_SOURCE] = {"inbound_source_policy"},
    };
    char d[80];
    const char *s;
    uint64_t v;

    cfg->log_level = LOG_INFO;
    cfg->workers = util_ncpu() > 64 ? 64 : util_ncpu();
    for (size_t i = 0; i < ARRAY_LEN(limit_specs); i++)
        *limit_field(&cfg->limits, &limit_specs[i]) = limit_specs[i].def;
    if (!walk_map(c, root, NULL, f, ARRAY_LEN(f)))
        return;

    if (f[F_NAME].val && (s = want_string(c, f[F_NAME].val, "server_name")) != NULL) {
        struct server_name sn;
        const char *bad = check_server_name(s, &sn);
        if (bad != NULL)
            problem_node(c, f[F_NAME].val, "server_name: invalid server name %s: %s",
                         describe(f[F_NAME].val, d, sizeof(d)), bad);
        else
            cfg->server_name = copy_str(c, sn.name);
    }
    if (f[F_KEY].val && (s = want_string(c, f[F_KEY].val, "signing_key_path")) != NULL)
        cfg->signing_key_path = copy_str(c, s);
    if (f[F_OLDKEYS].val)
        load_old_keys(c, cfg, f[F_OLDKEYS].val);
    cfg->key_refresh_interval_ms = 86400000;
    if (f[F_REFRESH].val)
        want_duration(c, f[F_REFRESH].val, "key_refresh_interval", &cfg->key_refresh_interval_ms);
    if (f[F_WORKERS].val && want_uint(c, f[F_WORKERS].val, "workers", 1, 64, &v))
        cfg->workers = (unsigned)v;
    if (f[F_LEVEL].val && (s = want_string(c, f[F_LEVEL].val, "log_level")) != NULL &&
        log_parse_level(s, &cfg->log_level) != 0)
        problem_node(c, f[F_LEVEL].val,
                     "log_level: expected one of error, warn, info, debug, got %s",
                     describe(f[F_LEVEL].val, d, sizeof(d)));
    s = f[F_ACCESS].val ? want_string(c, f[F_ACCESS].val, "access_log") : "-";
    if (s != NULL)
        cfg->access_log = copy_str(c, s);

    size_t nl = 0;
    if (f[F_LISTENERS].val && f[F_LISTENERS].val->type == YAML_SEQUENCE_NODE)
        nl = seq_len(f[F_LISTENERS].val);
    struct tls_use *tls_use = calloc(nl + 1, sizeof(*tls_use));
    if (tls_use == NULL) {
        c->oom = true;
        goto out;
    }
    if (f[F_LISTENERS].val)
        load_listeners(c, cfg, f[F_LISTENERS].val, tls_use);
    bool certs_listed = f[F_TLS].val && load_tls(c, cfg, f[F_TLS].val);
    if (!certs_listed) {
        for (size_t i = 0; i < nl; i++) {
            if (tls_use[i].at != NULL)
                problem_node(c, tls_use[i].at,
                             "listeners[%zu]: listener uses TLS but tls.certificates is empty", i);
        }
    }
    if (f[F_HS].val)
        load_homeservers(c, cfg, f[F_HS].val);
    if (f[F_LIMITS].val)
        load_limits(c, &cfg->limits, f[F_LIMITS].val);
    if (f[F_WHITELIST].val)
        load_name_rules(c, cfg, f[F_WHITELIST].val);
    if (f[F_SOVEREIGN].val)
        load_ranges(c, &cfg->sovereign_ranges, f[F_SOVEREIGN].val, "sovereign_ranges", true);
    if (f[F_BLACKLIST].val)
        load_ranges(c, &cfg->ip_range_blacklist, f[F_BLACKLIST].val, "ip_range_blacklist", false);
    if (f[F_IPWHITELIST].val)
        load_ranges(c, &cfg->ip_range_whitelist, f[F_IPWHITELIST].val, "ip_range_whitelist", false);
    cfg->federation_verify_certificates = true;
    if (f[F_VERIFY].val)
        want_bool(c, f[F_VERIFY].val, "federation_verify_certificates",
                  &cfg->federation_verify_certificates);
    if (f[F_CAS].val)
        load_ca_list(c, cfg, f[F_CAS].val);
    if (f[F_DNS].val)
        load_dns_servers(c, cfg, f[F_DNS].val);
    load_queue(c, cfg, f[F_QUEUE].val);
    if (f[F_PINNED].val)
        load_pinned(c, cfg, f[F_PINNED].val);
    if (f[F_NOTARIES].val)
        load_notaries(c, cfg, f[F_NOTARIES].val);
    if (f[F_SOURCE].val && (s = want_string(c, f[F_SOURCE].val, "inbound_source_policy"))) {
        if (strcmp(s, "enforce") == 0)
            cfg->inbound_source_policy = SOURCE_POLICY_ENFORCE;
        else if (strcmp(s, "off") == 0)
            cfg->inbound_source_policy = SOURCE_POLICY_OFF;
        else if (strcmp(s, "log") != 0)
            problem_node(c, f[F_SOURCE].val,
                         "inbound_source_policy: expected one of enforce, log, off, got %s",
                         describe(f[F_SOURCE].val, d, sizeof(d)));
    }
out:
    free(tls_use);
}

/* --- reading and parsing ------------------------------------------------------- */

static void yaml_problem(struct ctx *c, const yaml_parser_t *p)
{
    if (p->error == YAML_MEMORY_ERROR) {
        c->oom = true;
        return;
    }
    const char *problem = p->problem ? p->problem : "invalid YAML";
    if (p->error == YAML_READER_ERROR) {
        /* Reader errors carry a byte offset, not a mark. */
        size_t line = 0, col = 0, end = p->problem_offset < c->len ? p->problem_offset : c->len;
        for (size_t i = 0; i < end; i++) {
            if (c->data[i] == '\n') {
                line++;
                col = 0;
            } else if ((c->data[i] & 0xc0) != 0x80) {
                col++;
            }
        }
        problem_at(c, line, col, "%s", problem);
        return;
    }
    if (p->context != NULL)
        problem_at(c, p->problem_mark.line, p->problem_mark.column, "%s (%s at %zu:%zu)", problem,
                   p->context, p->context_mark.line + 1, p->context_mark.column + 1);
    else
        problem_at(c, p->problem_mark.line, p->problem_mark.column, "%s", problem);
}

/*
 * First pass over the events: syntax errors, and the YAML features the
 * schema has no use for (several documents, anchors and aliases, tags).
 * The loader resolves aliases to shared nodes, and an alias inside its own
 * anchor would make a cycle, so they are refused before any node is built.
 */
static size_t scan_events(struct ctx *c)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    size_t ndocs = 0;
    if (!yaml_parser_initialize(&parser)) {
        c->oom = true;
        return 0;
    }
    yaml_parser_set_input_string(&parser, c->data, c->len);
    for (size_t count = 0; count < MAX_EVENTS; count++) {
        if (!yaml_parser_parse(&parser, &ev)) {
            yaml_problem(c, &parser);
            break;
        }
        yaml_char_t *anchor = NULL, *tag = NULL;
        switch (ev.type) {
        case YAML_DOCUMENT_START_EVENT:
            if (++ndocs == 2)
                problem_at(c, ev.start_mark.line, ev.start_mark.column,
                           "only one YAML document is allowed");
            break;
        case YAML_ALIAS_EVENT:
            problem_at(c, ev.start_mark.line, ev.start_mark.column, "aliases are not supported");
            break;
        case YAML_SCALAR_EVENT:
            anchor = ev.data.scalar.anchor;
            tag = ev.data.scalar.tag;
            break;
        case YAML_SEQUENCE_START_EVENT:
            anchor = ev.data.sequence_start.anchor;
            tag = ev.data.sequence_start.tag;
            break;
        case YAML_MAPPING_START_EVENT:
            anchor = ev.data.mapping_start.anchor;
            tag = ev.data.mapping_start.tag;
            break;
        default:
            break;
        }
        if (anchor != NULL)
            problem_at(c, ev.start_mark.line, ev.start_mark.column, "anchors are not supported");
        if (tag != NULL)
            problem_at(c, ev.start_mark.line, ev.start_mark.column, "tags are not supported");
        bool end = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (end)
            break;
    }
    yaml_parser_delete(&parser);
    return ndocs;
}

static int read_file(const char *path, struct buf *data, struct buf *errors)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        buf_appendf(errors, "%s: cannot open: %s\n", path, strerror(errno));
        return CH_EIO;
    }
    int rc = 0;
    for (;;) {
        if (data->len >= MAX_FILE_BYTES) {
            buf_appendf(errors, "%s: larger than 4MiB, not a configuration file\n", path);
            rc = CH_EINVAL;
            break;
        }
        if ((rc = buf_reserve(data, 65536)) != 0)
            break;
        size_t n = fread(buf_tail(data), 1, buf_avail(data), f);
        buf_commit(data, n);
        if (n == 0) {
            if (ferror(f)) {
                buf_appendf(errors, "%s: cannot read: %s\n", path, strerror(errno));
                rc = CH_EIO;
            }
            break;
        }
    }
    fclose(f);
    return rc;
}

int config_load(const char *path, struct config **out, struct buf *errors)
{
    struct buf scratch = BUF_INIT, data = BUF_INIT;
    struct ctx c = {.path = path};
    yaml_parser_t parser;
    yaml_document_t doc;
    struct config *cfg = NULL;
    bool parser_ok = false, doc_ok = false;
    int rc;

    *out = NULL;
    if (errors == NULL)
        errors = &scratch;
    if ((rc = read_file(path, &data, errors)) != 0)
        goto done;
    c.data = (const unsigned char *)buf_data(&data);
    c.len = data.len;

    rc = CH_EINVAL;
    size_t ndocs = scan_events(&c);
    if (c.oom || c.nprobs > 0)
        goto done;
    if (ndocs == 0) {
        problem_at(&c, 0, 0, "empty configuration");
        goto done;
    }
    if (!yaml_parser_initialize(&parser)) {
        c.oom = true;
        goto done;
    }
    parser_ok = true;
    yaml_parser_set_input_string(&parser, c.data, c.len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_problem(&c, &parser);
        goto done;
    }
    doc_ok = true;
    c.doc = &doc;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL || is_null(root)) {
        problem_at(&c, 0, 0, "empty configuration");
        goto done;
    }
    if ((cfg = calloc(1, sizeof(*cfg))) == NULL || (cfg->path = strdup(path)) == NULL) {
        c.oom = true;
        goto done;
    }
    load_root(&c, cfg, root);
    if (!c.oom && c.nprobs == 0 && !c.truncated) {
        *out = cfg;
        cfg = NULL;
        rc = 0;
    }

done:
    if (c.oom) {
        rc = CH_ENOMEM;
        buf_appendf(errors, "%s: out of memory\n", path);
    }
    flush_problems(&c, errors);
    config_free(cfg);
    if (doc_ok)
        yaml_document_delete(&doc);
    if (parser_ok)
        yaml_parser_delete(&parser);
    buf_free(&data);
    buf_free(&scratch);
    return rc;
}

static void free_cert(struct cfg_cert *cert)
{
    free(cert->cert);
    free(cert->key);
}

static void free_ranges(struct cfg_ranges *r)
{
    for (size_t i = 0; i < r->nitems; i++)
        free(r->items[i].label);
    free(r->items);
    free(r->file);
    free(r->where);
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        free(cfg->listeners[i].binds);
        free(cfg->listeners[i].token_path);
    }
    free(cfg->listeners);
    for (size_t i = 0; i < cfg->tls.ncertificates; i++)
        free_cert(&cfg->tls.certificates[i]);
    free(cfg->tls.certificates);
    free_cert(&cfg->tls.egress_ca);
    for (size_t i = 0; i < cfg->nhomeservers; i++) {
        struct cfg_homeserver *h = &cfg->homeservers[i];
        free(h->server_name);
        free(h->upstream.url);
        free(h->upstream.host);
        free(h->upstream.authority);
        free(h->egress_secret_path);
    }
    free(cfg->homeservers);
    free(cfg->server_name);
    free(cfg->signing_key_path);
    for (size_t i = 0; i < cfg->nold_signing_keys; i++) {
        free(cfg->old_signing_keys[i].id);
        free(cfg->old_signing_keys[i].key);
    }
    free(cfg->old_signing_keys);
    free(cfg->access_log);
    for (size_t i = 0; i < cfg->nfederation_domain_whitelist; i++) {
        free(cfg->federation_domain_whitelist[i].pattern);
        free(cfg->federation_domain_whitelist[i].label);
    }
    free(cfg->federation_domain_whitelist);
    free_ranges(&cfg->sovereign_ranges);
    free_ranges(&cfg->ip_range_blacklist);
    free_ranges(&cfg->ip_range_whitelist);
    free_strings(cfg->federation_custom_ca_list, cfg->nfederation_custom_ca_list);
    free_strings(cfg->dns_servers, cfg->ndns_servers);
    free(cfg->queue.path);
    for (size_t i = 0; i < cfg->npinned_keys; i++) {
        free(cfg->pinned_keys[i].server_name);
        free_key_list(cfg->pinned_keys[i].keys, cfg->pinned_keys[i].nkeys);
    }
    free(cfg->pinned_keys);
    for (size_t i = 0; i < cfg->ntrusted_key_servers; i++) {
        free(cfg->trusted_key_servers[i].server_name);
        free_key_list(cfg->trusted_key_servers[i].keys, cfg->trusted_key_servers[i].nkeys);
    }
    free(cfg->trusted_key_servers);
    free(cfg->path);
    free(cfg);
}

/* --- printing ------------------------------------------------------------------ */

/* A YAML double-quoted scalar (YAML 1.2 section 7.3.1): '"', '\' and control bytes escaped. */
static void print_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void print_kv(FILE *f, const char *indent, const char *key, const char *s)
{
    fprintf(f, "%s%s: ", indent, key);
    print_str(f, s);
    fputc('\n', f);
}

static void print_keys(FILE *f, const char *indent, const struct cfg_verify_key *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct buf b = BUF_INIT;
        b64_encode(&b, k[i].pk, sizeof(k[i].pk));
        buf_append(&b, "", 1);
        print_kv(f, indent, k[i].id, buf_data(&b));
        buf_free(&b);
    }
}

/* defaults: what an absent key means (NULL: nothing). */
static void print_ranges(FILE *f, const char *key, const struct cfg_ranges *r,
                         const char *const *defaults)
{
    char t[64];
    if (r->any) {
        fprintf(f, "%s: any\n", key);
    } else if (r->file != NULL) {
        fprintf(f, "%s: ", key);
        print_str(f, r->file);
        fputc('\n', f);
    } else if (!r->present) {
        fprintf(f, "%s: [", key);
        for (size_t i = 0; defaults != NULL && defaults[i] != NULL; i++) {
            fputs(i ? ", " : "", f);
            print_str(f, defaults[i]);
        }
        fprintf(f, "]\n");
    } else {
        fprintf(f, "%s: [", key);
        for (size_t i = 0; i < r->nitems; i++) {
            fputs(i ? ", " : "", f);
            print_str(f, cidr_format(&r->items[i].cidr, t, sizeof(t)));
        }
        fprintf(f, "]\n");
    }
}

void config_print(const struct config *cfg, FILE *f)
{
    char v[32];
    print_kv(f, "", "server_name", cfg->server_name);
    if (cfg->signing_key_path != NULL)
        print_kv(f, "", "signing_key_path", cfg->signing_key_path);
    if (cfg->nold_signing_keys) {
        fprintf(f, "old_signing_keys:\n");
        for (size_t i = 0; i < cfg->nold_signing_keys; i++) {
            fprintf(f, "  ");
            print_str(f, cfg->old_signing_keys[i].id);
            fprintf(f, ":\n");
            print_kv(f, "    ", "key", cfg->old_signing_keys[i].key);
            fprintf(f, "    expired_ts: %llu\n",
                    (unsigned long long)cfg->old_signing_keys[i].expired_ts);
        }
    }
    util_format_duration_ms(cfg->key_refresh_interval_ms, v, sizeof(v));
    fprintf(f, "key_refresh_interval: %s\n", v);
    fprintf(f, "workers: %u\n", cfg->workers);
    fprintf(f, "log_level: %s\n", log_level_name(cfg->log_level));
    print_kv(f, "", "access_log", cfg->access_log ? cfg->access_log : "-");

    fprintf(f, "listeners:\n");
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct cfg_listener *l = &cfg->listeners[i];
        fprintf(f, "  - type: %s\n    bind: [", config_listener_type_name(l->type));
        for (size_t j = 0; j < l->nbinds; j++) {
            if (j > 0)
                fputs(", ", f);
            print_str(f, l->binds[j].text);
        }
        fprintf(f, "]\n    tls: %s\n", l->tls ? "true" : "false");
        if (l->token_path != NULL)
            print_kv(f, "    ", "token_path", l->token_path);
    }

    fprintf(f, "tls:\n");
    if (cfg->tls.ncertificates == 0)
        fprintf(f, "  certificates: []\n");
    else
        fprintf(f, "  certificates:\n");
    for (size_t i = 0; i < cfg->tls.ncertificates; i++) {
        print_kv(f, "    - ", "cert", cfg->tls.certificates[i].cert);
        print_kv(f, "      ", "key", cfg->tls.certificates[i].key);
    }
    if (cfg->tls.has_egress_ca) {
        fprintf(f, "  egress_ca:\n");
        print_kv(f, "    ", "cert", cfg->tls.egress_ca.cert);
        print_kv(f, "    ", "key", cfg->tls.egress_ca.key);
    }

    fprintf(f, "homeservers:\n");
    for (size_t i = 0; i < cfg->nhomeservers; i++) {
        const struct cfg_homeserver *h = &cfg->homeservers[i];
        print_kv(f, "  - ", "server_name", h->server_name);
        print_kv(f, "    ", "upstream", h->upstream.url);
        if (h->egress_secret_path != NULL)
            print_kv(f, "    ", "egress_secret_path", h->egress_secret_path);
    }

    fprintf(f, "limits:\n");
    for (size_t i = 0; i < ARRAY_LEN(limit_specs); i++) {
        const struct limit_spec *s = &limit_specs[i];
        uint64_t x = limit_value(&cfg->limits, s);
        if (s->kind == LIMIT_SIZE)
            util_format_size(x, v, sizeof(v));
        else if (s->kind == LIMIT_DURATION)
            util_format_duration_ms(x, v, sizeof(v));
        else
            snprintf(v, sizeof(v), "%llu", (unsigned long long)x);
        fprintf(f, "  %s: %s\n", s->name, v);
    }

    if (cfg->federation_any) {
        fprintf(f, "federation_domain_whitelist: any\n");
    } else {
        fprintf(f, "federation_domain_whitelist:\n");
        for (size_t i = 0; i < cfg->nfederation_domain_whitelist; i++) {
            fputs("  - ", f);
            print_str(f, cfg->federation_domain_whitelist[i].pattern);
            fputc('\n', f);
        }
    }
    print_ranges(f, "sovereign_ranges", &cfg->sovereign_ranges, NULL);
    print_ranges(f, "ip_range_blacklist", &cfg->ip_range_blacklist, policy_default_blacklist);
    print_ranges(f, "ip_range_whitelist", &cfg->ip_range_whitelist, NULL);
    fprintf(f, "federation_verify_certificates: %s\n",
            cfg->federation_verify_certificates ? "true" : "false");
    fprintf(f, "federation_custom_ca_list: [");
    for (size_t i = 0; i < cfg->nfederation_custom_ca_list; i++) {
        if (i > 0)
            fputs(", ", f);
        print_str(f, cfg->federation_custom_ca_list[i]);
    }
    fprintf(f, "]\ndns_servers: [");
    for (size_t i = 0; i < cfg->ndns_servers; i++) {
        if (i > 0)
            fputs(", ", f);
        print_str(f, cfg->dns_servers[i]);
    }
    fprintf(f, "]%s\n", cfg->ndns_servers ? "" : "  # empty: /etc/resolv.conf");
    fprintf(f, "inbound_source_policy: %s\n",
            cfg->inbound_source_policy == SOURCE_POLICY_ENFORCE ? "enforce"
            : cfg->inbound_source_policy == SOURCE_POLICY_OFF   ? "off"
                                                                : "log");
    fprintf(f, "queue:\n");
    print_kv(f, "  ", "path", cfg->queue.path);
    {
        util_format_size(cfg->queue.max_bytes, v, sizeof(v));
        fprintf(f, "  max_bytes: %s\n", v);
        util_format_size(cfg->queue.max_bytes_per_destination, v, sizeof(v));
        fprintf(f, "  max_bytes_per_destination: %s\n", v);
        util_format_size(cfg->queue.map_size, v, sizeof(v));
        fprintf(f, "  map_size: %s\n", v);
        util_format_duration_ms(cfg->queue.max_age_ms, v, sizeof(v));
        fprintf(f, "  max_age: %s\n", v);
        fprintf(f, "  max_in_flight: %llu\n", (unsigned long long)cfg->queue.max_in_flight);
        util_format_duration_ms(cfg->queue.retry_min_ms, v, sizeof(v));
        fprintf(f, "  retry:\n    min: %s\n", v);
        fprintf(f, "    multiplier: %g\n", cfg->queue.retry_multiplier);
        util_format_duration_ms(cfg->queue.retry_max_ms, v, sizeof(v));
        fprintf(f, "    max: %s\n", v);
        fprintf(f, "  group_commit: %s\n", cfg->queue.group_commit ? "true" : "false");
    }
    fprintf(f, "pinned_keys:%s\n", cfg->npinned_keys ? "" : " {}");
    for (size_t i = 0; i < cfg->npinned_keys; i++) {
        fputs("  ", f);
        print_str(f, cfg->pinned_keys[i].server_name);
        fputs(":\n", f);
        print_keys(f, "    ", cfg->pinned_keys[i].keys, cfg->pinned_keys[i].nkeys);
    }
    fprintf(f, "trusted_key_servers:%s\n", cfg->ntrusted_key_servers ? "" : " []");
    for (size_t i = 0; i < cfg->ntrusted_key_servers; i++) {
        print_kv(f, "  - ", "server_name", cfg->trusted_key_servers[i].server_name);
        fputs("    verify_keys:\n", f);
        print_keys(f, "      ", cfg->trusted_key_servers[i].keys,
                   cfg->trusted_key_servers[i].nkeys);
    }
}
