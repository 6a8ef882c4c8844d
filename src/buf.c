/* buf.c -- growable byte buffers and slices: the one way bytes are held. */
/* SPDX-License-Identifier: ISC */
#include <stdio.h>
#include <stdlib.h>

#include <sodium.h>

#include "chappe/buf.h"
#include "chappe/util.h"

int buf_reserve(struct buf *b, size_t n)
{
    if (buf_avail(b) >= n)
        return 0;
    if (b->off > 0 && b->cap - b->len >= n) {
        memmove(b->base, b->base + b->off, b->len);
        b->off = 0;
        return 0;
    }
    size_t need = b->len + n;
    if (need < b->len)
        return CH_ENOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return CH_ENOMEM;
        cap *= 2;
    }
    char *p = malloc(cap);
    if (p == NULL)
        return CH_ENOMEM;
    if (b->len)
        memcpy(p, b->base + b->off, b->len);
    free(b->base);
    b->base = p;
    b->off = 0;
    b->cap = cap;
    return 0;
}

void buf_commit(struct buf *b, size_t n)
{
    b->len += n;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(buf_tail(b), p, n);
    b->len += n;
    return 0;
}

int buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_append_slice(struct buf *b, struct slice s)
{
    return buf_append(b, s.base, s.len);
}

int buf_vappendf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return CH_EINVAL;
    if ((size_t)n < sizeof(tmp))
        return buf_append(b, tmp, (size_t)n);
    int rc = buf_reserve(b, (size_t)n + 1);
    if (rc)
        return rc;
    vsnprintf(buf_tail(b), (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int buf_appendf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vappendf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->off = 0;
        b->len = 0;
        return;
    }
    b->off += n;
    b->len -= n;
}

void buf_reset(struct buf *b)
{
    b->off = 0;
    b->len = 0;
}

void buf_free(struct buf *b)
{
    free(b->base);
    *b = BUF_INIT;
}

void buf_free_secret(struct buf *b)
{
    if (b->base)
        sodium_memzero(b->base, b->cap);
    buf_free(b);
}

int slice_eq(struct slice a, struct slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

int slice_eq_str(struct slice a, const char *s)
{
    return slice_eq(a, (struct slice){s, strlen(s)});
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

int slice_case_eq(struct slice a, struct slice b)
{
    if (a.len != b.len)
        return 0;
    for (size_t i = 0; i < a.len; i++)
        if (lower((unsigned char)a.base[i]) != lower((unsigned char)b.base[i]))
            return 0;
    return 1;
}

int slice_case_eq_str(struct slice a, const char *s)
{
    return slice_case_eq(a, (struct slice){s, strlen(s)});
}

struct slice slice_trim_ows(struct slice s)
{
    while (s.len && (s.base[0] == ' ' || s.base[0] == '\t')) {
        s.base++;
        s.len--;
    }
    while (s.len && (s.base[s.len - 1] == ' ' || s.base[s.len - 1] == '\t'))
        s.len--;
    return s;
}

int slice_next_list_item(struct slice *rest, struct slice *item)
{
    if (rest->base == NULL)
        return -1;
    const char *comma = memchr(rest->base, ',', rest->len);
    if (comma == NULL) {
        *item = slice_trim_ows(*rest);
        rest->base = NULL;
        rest->len = 0;
        return 0;
    }
    *item = slice_trim_ows((struct slice){rest->base, (size_t)(comma - rest->base)});
    rest->len -= (size_t)(comma - rest->base) + 1;
    rest->base = comma + 1;
    return 0;
}

void buf_trim_newlines(struct buf *b)
{
    while (b->len > 0 && buf_data(b)[b->len - 1] == '\n')
        b->len--;
}
