/* buf.h -- growable byte buffers and {base, len} slices. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_BUF_H
#define CHAPPE_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

/* A view into bytes owned by someone else; never freed through the slice. */
struct slice {
    const char *base;
    size_t len;
};

#define SLICE_LIT(s) ((struct slice){(s), sizeof(s) - 1})

/*
 * A growable buffer: readable bytes are base[off .. off+len), free space is
 * base[off+len .. cap). Consuming from the front advances off; reserve()
 * compacts before it grows. The buffer owns base; buf_free() releases it.
 */
struct buf {
    char *base;
    size_t off;
    size_t len;
    size_t cap;
};

#define BUF_INIT ((struct buf){NULL, 0, 0, 0})

static inline char *buf_data(const struct buf *b)
{
    return b->base + b->off;
}

static inline char *buf_tail(const struct buf *b)
{
    return b->base + b->off + b->len;
}

static inline size_t buf_avail(const struct buf *b)
{
    return b->cap - b->off - b->len;
}

static inline struct slice buf_slice(const struct buf *b)
{
    return (struct slice){b->base ? buf_data(b) : "", b->len};
}

/* A slice over a C string (not copied). */
static inline struct slice slice_from_str(const char *s)
{
    return (struct slice){s, strlen(s)};
}

/* Make room for at least n bytes after the data. 0 or CH_ENOMEM. */
int buf_reserve(struct buf *b, size_t n);
/* Account for n bytes written at buf_tail() after a reserve. */
void buf_commit(struct buf *b, size_t n);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
int buf_append_slice(struct buf *b, struct slice s);
/* Formatted append; no argument may point into b itself (it may be reallocated). */
int buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vappendf(struct buf *b, const char *fmt, va_list ap);
/* Drop n bytes from the front (n <= len). */
void buf_consume(struct buf *b, size_t n);
/* Empty the buffer, keep its memory. */
void buf_reset(struct buf *b);
/* Release the memory; the buffer is BUF_INIT afterwards. */
void buf_free(struct buf *b);
/* Wipe the whole allocation (secrets), then free it. */
void buf_free_secret(struct buf *b);
/* Drop trailing newlines (error texts built a line at a time, logged as one line). */
void buf_trim_newlines(struct buf *b);

/* Slice helpers. */
int slice_eq(struct slice a, struct slice b);
int slice_eq_str(struct slice a, const char *s);
/* ASCII case-insensitive comparison (header names, tokens). */
int slice_case_eq(struct slice a, struct slice b);
int slice_case_eq_str(struct slice a, const char *s);
/* Strip leading and trailing SP and HTAB (RFC 9110 OWS). */
struct slice slice_trim_ows(struct slice s);
/*
 * Split off the next comma-separated element of a list header (RFC 9110
 * section 5.6.1): *rest advances past it. Returns 0 and sets *item (trimmed,
 * possibly empty), or -1 when the list is exhausted.
 */
int slice_next_list_item(struct slice *rest, struct slice *item);

#endif
