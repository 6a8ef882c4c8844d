/* cjson.c -- parse JSON with Jansson and encode it canonically for Matrix signatures. */
/* SPDX-License-Identifier: ISC */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/cjson.h"
#include "chappe/util.h"

/*
 * Deepest nesting encoded: what Jansson's parser accepts (JSON_PARSER_MAX_DEPTH
 * containers). It also stops a value built with a cycle. The encoder keeps its
 * own stack on the heap, so the C stack does not grow with the depth.
 */
#define MAX_DEPTH JSON_PARSER_MAX_DEPTH

struct member {
    const char *key;
    size_t len;
    const json_t *val;
};

/* One open container: next is the index of the next child to write. */
struct frame {
    const json_t *v;
    struct member *m; /* objects: members sorted by key, NULL for arrays */
    size_t next;
    size_t n;
};

struct enc {
    struct buf *out;
    struct buf *err;
    struct frame *st;
    size_t depth;
    size_t cap;
};

/*
 * Strict UTF-8 (RFC 3629 section 4): no overlong forms, no surrogates, nothing
 * above U+10FFFF. Jansson checks what it parses; this also covers values built
 * with the *_nocheck constructors.
 */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

/*
 * Jansson quotes the input near an error ("near '...'"): keep the line one
 * line of valid UTF-8 by writing control bytes, DEL and broken UTF-8 as \xNN.
 */
static void put_printable(struct buf *out, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)p[i];
        size_t len = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        if (c >= 0x20 && c != 0x7f && len <= n - i &&
            utf8_valid((const unsigned char *)p + i, len)) {
            buf_append(out, p + i, len);
            i += len;
        } else {
            buf_appendf(out, "\\x%02x", c);
            i++;
        }
    }
}

static int is_ident(const char *k, size_t n);
static int put_string(struct buf *out, const char *p, size_t n);

/*
 * Find the first number beyond int64 (read as a real) and append its path to
 * path: Jansson refuses such integers while parsing, where no path is known.
 * Returns 1 when found.
 */
static int find_overflow(const json_t *v, struct buf *path, unsigned depth)
{
    if (json_is_real(v)) {
        double d = json_real_value(v);
        return d >= 9223372036854775807.0 || d <= -9223372036854775808.0;
    }
    if (depth > 4096)
        return 0;
    size_t mark = path->len;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            buf_appendf(path, "[%zu]", i);
            if (find_overflow(json_array_get(v, i), path, depth + 1))
                return 1;
            path->len = mark;
        }
    } else if (json_is_object(v)) {
        const char *k;
        json_t *m;
        void *it;
        json_object_foreach_safe((json_t *)v, it, k, m)
        {
            size_t klen = json_object_iter_key_len(json_object_key_to_iter(k));
            if (is_ident(k, klen)) {
                buf_append(path, ".", 1);
                buf_append(path, k, klen);
            } else {
                buf_append(path, "[", 1);
                put_string(path, k, klen);
                buf_append(path, "]", 1);
            }
            if (find_overflow(m, path, depth + 1))
                return 1;
            path->len = mark;
        }
    }
    return 0;
}

int cjson_parse(const char *p, size_t n, json_t **out, struct buf *err)
{
    json_error_t e;
    /* JSON_DECODE_ANY: any value at the top; trailing non-whitespace is refused by default. */
    const size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY;
    json_t *v = json_loadb(p ? p : "", p ? n : 0, flags, &e);
    if (v == NULL && json_error_code(&e) == json_error_numeric_overflow) {
        /* An integer beyond int64: name its JSON path, as for any non-canonical value. */
        json_error_t e2;
        json_t *r = json_loadb(p, n, flags | JSON_DECODE_INT_AS_REAL, &e2);
        struct buf path = BUF_INIT;
        buf_append(&path, "$", 1);
        if (r != NULL && find_overflow(r, &path, 0)) {
            buf_append(err, buf_data(&path), path.len);
            buf_appendf(err,
                        ": integer outside the canonical range +-(2^53-1) (line %d, column "
                        "%d)\n",
                        e.line, e.column);
            buf_free(&path);
            json_decref(r);
            return CH_EINVAL;
        }
        buf_free(&path);
        json_decref(r);
    }
    if (v == NULL) {
        buf_appendf(err, "line %d, column %d: ", e.line, e.column);
        put_printable(err, e.text, strlen(e.text));
        buf_append(err, "\n", 1);
        return CH_EINVAL;
    }
    *out = v;
    return 0;
}

/*
 * A JSON string as the Matrix grammar wants it (appendices, "Canonical JSON",
 * Grammar): only " and \ and U+0000..U+001F are escaped, with the short forms
 * \b \f \n \r \t where they exist and lowercase \u00xx otherwise; DEL, U+2028,
 * U+2029 and everything else go out raw, as python3-canonicaljson does.
 */
static int put_string(struct buf *out, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = buf_append(out, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        rc = buf_append(out, p + run, i - run);
        run = i + 1;
        if (rc)
            break;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t len = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            len = 6;
        }
        rc = buf_append(out, esc, len);
    }
    if (rc == 0)
        rc = buf_append(out, p + run, n - run);
    if (rc == 0)
        rc = buf_append(out, "\"", 1);
    return rc;
}

static int is_ident(const char *k, size_t n)
{
    if (n == 0 || (k[0] >= '0' && k[0] <= '9'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return 0;
    }
    return 1;
}

/*
 * The path of the value being written below the first nframes frames: "$",
 * then ".key" for identifier-like keys, ["key"] (JSON-quoted as above) for any
 * other key, and [i] for array elements, e.g. $.signatures["example.org"][0].
 */
static void put_path(struct enc *e, size_t nframes)
{
    buf_append(e->err, "$", 1);
    for (size_t d = 0; d < nframes; d++) {
        const struct frame *f = &e->st[d];
        size_t i = f->next - 1;
        if (!json_is_object(f->v)) {
            buf_appendf(e->err, "[%zu]", i);
        } else if (is_ident(f->m[i].key, f->m[i].len)) {
            buf_append(e->err, ".", 1);
            buf_append(e->err, f->m[i].key, f->m[i].len);
        } else {
            buf_append(e->err, "[", 1);
            put_string(e->err, f->m[i].key, f->m[i].len);
            buf_append(e->err, "]", 1);
        }
    }
}

static int fail(struct enc *e, size_t nframes, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct enc *e, size_t nframes, const char *fmt, ...)
{
    va_list ap;
    put_path(e, nframes);
    buf_append(e->err, ": ", 2);
    va_start(ap, fmt);
    buf_vappendf(e->err, fmt, ap);
    va_end(ap);
    buf_append(e->err, "\n", 1);
    return CH_EINVAL;
}

/* Unicode code point order is the byte order of UTF-8 (RFC 3629 section 1). */
static int member_cmp(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    int c = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* The shortest %g form that reads back as d, for error messages. */
static void format_real(double d, char *s, size_t cap)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(s, cap, "%.*g", prec, d);
        if (strtod(s, NULL) == d)
            break;
    }
    /* Integral values read better without an exponent: 1e10 -> 10000000000. */
    if (d > -1e16 && d < 1e16 && (double)(long long)d == d)
        snprintf(s, cap, "%.0f", d);
}

static int push(struct enc *e, const json_t *v)
{
    if (e->depth == MAX_DEPTH)
        return fail(e, e->depth, "nested deeper than %d levels", MAX_DEPTH);
    if (e->depth == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 16;
        struct frame *st = realloc(e->st, cap * sizeof(*st));
        if (st == NULL)
            return CH_ENOMEM;
        e->st = st;
        e->cap = cap;
    }
    struct frame *f = &e->st[e->depth];
    *f = (struct frame){v, NULL, 0, 0};
    if (json_is_array(v)) {
        f->n = json_array_size(v);
        e->depth++;
        return buf_append(e->out, "[", 1);
    }
    f->n = json_object_size(v);
    if (f->n) {
        f->m = malloc(f->n * sizeof(*f->m));
        if (f->m == NULL)
            return CH_ENOMEM;
        size_t i = 0;
        for (void *it = json_object_iter((json_t *)v); it && i < f->n;
             it = json_object_iter_next((json_t *)v, it), i++) {
            f->m[i].key = json_object_iter_key(it);
            f->m[i].len = json_object_iter_key_len(it);
            f->m[i].val = json_object_iter_value(it);
        }
        f->n = i;
        qsort(f->m, f->n, sizeof(*f->m), member_cmp);
    }
    e->depth++;
    return buf_append(e->out, "{", 1);
}

/* Write a scalar, or open a container and push it. */
static int put_value(struct enc *e, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        return push(e, v);
    case JSON_STRING: {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (!utf8_valid((const unsigned char *)s, n))
            return fail(e, e->depth, "string is not valid UTF-8");
        return put_string(e->out, s, n);
    }
    case JSON_INTEGER: {
        /* Matrix appendices, "Canonical JSON": integers in [-(2**53)+1, (2**53)-1]. */
        json_int_t i = json_integer_value(v);
        if (i > CJSON_INT_MAX || i < -CJSON_INT_MAX)
            return fail(
                e, e->depth,
                "integer %" JSON_INTEGER_FORMAT " is outside the canonical range +-(2^53-1)", i);
        /* Jansson reads "-0" as the integer 0: it is written "0", never "-0". */
        return buf_appendf(e->out, "%" JSON_INTEGER_FORMAT, i);
    }
    case JSON_REAL: {
        /* "Float values are not permitted by this encoding", integral ones included. */
        char num[32];
        format_real(json_real_value(v), num, sizeof(num));
        return fail(e, e->depth, "float %s is not allowed in canonical JSON", num);
    }
    case JSON_TRUE:
        return buf_append(e->out, "true", 4);
    case JSON_FALSE:
        return buf_append(e->out, "false", 5);
    case JSON_NULL:
        return buf_append(e->out, "null", 4);
    }
    return fail(e, e->depth, "unknown JSON type");
}

static int encode(struct enc *e, const json_t *root)
{
    int rc = put_value(e, root);
    while (rc == 0 && e->depth > 0) {
        struct frame *f = &e->st[e->depth - 1];
        if (f->next == f->n) {
            rc = buf_append(e->out, json_is_object(f->v) ? "}" : "]", 1);
            free(f->m);
            e->depth--;
            continue;
        }
        if (f->next > 0 && (rc = buf_append(e->out, ",", 1)) != 0)
            break;
        const json_t *child;
        if (json_is_object(f->v)) {
            const struct member *m = &f->m[f->next];
            if (!utf8_valid((const unsigned char *)m->key, m->len))
                return fail(e, e->depth - 1, "object key is not valid UTF-8");
            if ((rc = put_string(e->out, m->key, m->len)) != 0 ||
                (rc = buf_append(e->out, ":", 1)) != 0)
                break;
            child = m->val;
        } else {
            child = json_array_get(f->v, f->next);
        }
        f->next++;
        rc = put_value(e, child);
    }
    return rc;
}

int cjson_encode(const json_t *v, struct buf *out, struct buf *err)
{
    struct enc e = {out, err, NULL, 0, 0};
    size_t len = out->len;
    int rc = v ? encode(&e, v) : CH_EINVAL;
    if (v == NULL)
        buf_append_str(err, "$: no value\n");
    while (e.depth > 0)
        free(e.st[--e.depth].m);
    free(e.st);
    if (rc)
        out->len = len; /* the header's promise: out is unchanged on failure */
    return rc;
}

int cjson_canonicalize(const char *p, size_t n, struct buf *out, struct buf *err)
{
    json_t *v = NULL;
    int rc = cjson_parse(p, n, &v, err);
    if (rc)
        return rc;
    rc = cjson_encode(v, out, err);
    json_decref(v);
    return rc;
}

/* --- the canonical fast path ------------------------------------------------------------ */

#define CANON_KEY_MAX   128
#define CANON_DEPTH_MAX 64

struct cv {
    const unsigned char *p, *end;
};

/* Length of one valid UTF-8 sequence at p (not ASCII), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
    size_t len = p[0] >= 0xc2 && p[0] <= 0xdf   ? 2
                 : p[0] >= 0xe0 && p[0] <= 0xef ? 3
                 : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4
                                                : 0;
    if (len == 0 || avail < len || !utf8_valid(p, len))
        return 0;
    return len;
}

static int hexval(unsigned char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * A string in exactly the form put_string() writes. With key != NULL its
 * decoded bytes go there (at most CANON_KEY_MAX, no U+0000: Jansson refuses it).
 */
static bool cv_string(struct cv *c, unsigned char *key, size_t *klen)
{
    if (c->p >= c->end || *c->p != '"')
        return false;
    c->p++;
    size_t kl = 0;
    while (c->p < c->end) {
        unsigned char ch = *c->p;
        size_t len = 1;
        unsigned char dec = ch;
        if (ch == '"') {
            c->p++;
            if (klen)
                *klen = kl;
            return true;
        }
        if (ch < 0x20)
            return false;
        if (ch == '\\') {
            if (c->end - c->p < 2)
                return false;
            switch (c->p[1]) {
            case '"':
            case '\\':
                dec = c->p[1];
                break;
            case 'b':
                dec = 8;
                break;
            case 't':
                dec = 9;
                break;
            case 'n':
                dec = 10;
                break;
            case 'f':
                dec = 12;
                break;
            case 'r':
                dec = 13;
                break;
            case 'u': {
                if (c->end - c->p < 6 || c->p[2] != '0' || c->p[3] != '0')
                    return false;
                int hi = hexval(c->p[4]), lo = hexval(c->p[5]);
                if (hi < 0 || hi > 1 || lo < 0)
                    return false;
                dec = (unsigned char)(hi << 4 | lo);
                /* The short forms are the canonical ones where they exist. */
                if (dec == 8 || dec == 9 || dec == 10 || dec == 12 || dec == 13)
                    return false;
                len = 6;
                break;
            }
            default:
                return false;
            }
            if (len == 1)
                len = 2;
            if (key && dec == 0)
                return false;
        } else if (ch >= 0x80) {
            len = utf8_seq(c->p, (size_t)(c->end - c->p));
            if (len == 0)
                return false;
        }
        if (key) {
            size_t add = ch >= 0x80 ? len : 1;
            if (kl + add > CANON_KEY_MAX)
                return false;
            if (ch >= 0x80)
                memcpy(key + kl, c->p, len);
            else
                key[kl] = dec;
            kl += add;
        }
        c->p += len;
    }
    return false;
}

/* -?(0|[1-9][0-9]*) within +-CJSON_INT_MAX, no -0. */
static bool cv_number(struct cv *c)
{
    bool neg = false;
    if (c->p < c->end && *c->p == '-') {
        neg = true;
        c->p++;
    }
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
        return false;
    if (*c->p == '0') {
        c->p++;
        return !neg && !(c->p < c->end && *c->p >= '0' && *c->p <= '9');
    }
    uint64_t v = 0;
    int digits = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (++digits > 16)
            return false;
        v = v * 10 + (uint64_t)(*c->p++ - '0');
    }
    return v <= (uint64_t)CJSON_INT_MAX;
}

static bool cv_literal(struct cv *c, const char *lit, size_t n)
{
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
        return false;
    c->p += n;
    return true;
}

static bool cv_value(struct cv *c, unsigned depth)
{
    if (c->p >= c->end || depth > CANON_DEPTH_MAX)
        return false;
    switch (*c->p) {
    case '"':
        return cv_string(c, NULL, NULL);
    case 't':
        return cv_literal(c, "true", 4);
    case 'f':
        return cv_literal(c, "false", 5);
    case 'n':
        return cv_literal(c, "null", 4);
    case '[':
        c->p++;
        if (c->p < c->end && *c->p == ']') {
            c->p++;
            return true;
        }
        for (;;) {
            if (!cv_value(c, depth + 1) || c->p >= c->end)
                return false;
            if (*c->p == ']') {
                c->p++;
                return true;
            }
            if (*c->p++ != ',')
                return false;
        }
    case '{': {
        unsigned char keys[2][CANON_KEY_MAX];
        size_t klen[2] = {0, 0};
        int cur = 0;
        bool first = true;
        c->p++;
        if (c->p < c->end && *c->p == '}') {
            c->p++;
            return true;
        }
        for (;;) {
            if (!cv_string(c, keys[cur], &klen[cur]))
                return false;
            if (!first) {
                /* Strictly increasing by code point, i.e. by UTF-8 bytes (no duplicates). */
                const unsigned char *a = keys[1 - cur], *b = keys[cur];
                size_t la = klen[1 - cur], lb = klen[cur], m = la < lb ? la : lb;
                int d = memcmp(a, b, m);
                if (d > 0 || (d == 0 && la >= lb))
                    return false;
            }
            first = false;
            cur = 1 - cur;
            if (c->p >= c->end || *c->p++ != ':' || !cv_value(c, depth + 1) || c->p >= c->end)
                return false;
            if (*c->p == '}') {
                c->p++;
                return true;
            }
            if (*c->p++ != ',')
                return false;
        }
    }
    default:
        return cv_number(c);
    }
}

bool cjson_is_canonical(const char *p, size_t n)
{
    if (p == NULL || n == 0)
        return false;
    struct cv c = {(const unsigned char *)p, (const unsigned char *)p + n};
    return cv_value(&c, 0) && c.p == c.end;
}

int cjson_append_string(struct buf *out, const char *s, size_t n)
{
    return put_string(out, s, n);
}
