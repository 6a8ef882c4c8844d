/* util.c -- error strings, clocks, and the strict size/duration parsers behind the config. */
/* SPDX-License-Identifier: ISC */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "chappe/buf.h"
#include "chappe/util.h"

const char *util_strerror(int code)
{
    switch (code) {
    case CH_OK:
        return "success";
    case CH_ENOMEM:
        return "out of memory";
    case CH_EINVAL:
        return "invalid argument";
    case CH_EAGAIN:
        return "resource temporarily unavailable";
    case CH_EIO:
        return "input/output error";
    case CH_ETLS:
        return "TLS error";
    case CH_EPROTO:
        return "protocol error";
    case CH_ETOOBIG:
        return "over a configured limit";
    case CH_EEOF:
        return "end of stream";
    case CH_ENOENT:
        return "not found";
    case CH_EEXIST:
        return "already exists";
    case CH_EPERM:
        return "not permitted";
    case CH_ETIMEOUT:
        return "timed out";
    default:
        return "unknown error";
    }
}

static uint64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t util_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

uint64_t util_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

struct unit {
    const char *name;
    uint64_t mult;
};

/* Largest first: the formatters try them in this order. */
static const struct unit size_units[] = {
    {"TiB", 1099511627776ull}, {"TB", 1000000000000ull}, {"GiB", 1073741824ull},
    {"GB", 1000000000ull},     {"MiB", 1048576ull},      {"MB", 1000000ull},
    {"KiB", 1024ull},          {"KB", 1000ull},          {"B", 1ull},
};

static const struct unit duration_units[] = {
    {"d", 86400000ull}, {"h", 3600000ull}, {"m", 60000ull}, {"s", 1000ull}, {"ms", 1ull},
};

/*
 * Digits, then a unit looked up exactly (case-sensitive) in the table; an
 * empty unit is accepted only when bare_mult is non-zero. No sign, space or
 * fraction is accepted anywhere, and every overflow is reported.
 */
static int parse_with_units(const char *s, const struct unit *units, size_t nunits,
                            uint64_t bare_mult, const char *unit_why, uint64_t *out,
                            const char **why)
{
    const char *dummy;
    if (why == NULL)
        why = &dummy;
    if (s == NULL || *s == '\0') {
        *why = "empty value";
        return CH_EINVAL;
    }
    if (*s < '0' || *s > '9') {
        *why = "expected a number (digits, no sign or space)";
        return CH_EINVAL;
    }
    uint64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            *why = "number too large";
            return CH_EINVAL;
        }
        v = v * 10 + d;
    }
    uint64_t mult = 0;
    if (*p == '\0') {
        mult = bare_mult;
    } else {
        for (size_t i = 0; i < nunits; i++) {
            if (strcmp(p, units[i].name) == 0) {
                mult = units[i].mult;
                break;
            }
        }
    }
    if (mult == 0) {
        *why = unit_why;
        return CH_EINVAL;
    }
    if (v > UINT64_MAX / mult) {
        *why = "number too large";
        return CH_EINVAL;
    }
    *out = v * mult;
    return 0;
}

int util_parse_size(const char *s, uint64_t *out, const char **why)
{
    return parse_with_units(s, size_units, ARRAY_LEN(size_units), 1,
                            "unknown unit (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)", out, why);
}

int util_parse_duration_ms(const char *s, uint64_t *out, const char **why)
{
    return parse_with_units(s, duration_units, ARRAY_LEN(duration_units), 0,
                            "missing or unknown unit (use ms, s, m, h or d)", out, why);
}

/*
 * Shortest exact spelling: every unit that divides v is a candidate, tried
 * largest first, and only a strictly shorter text replaces the current best;
 * the bare number (when allowed) comes last, so "1024" prints as "1KiB".
 */
static void format_with_units(uint64_t v, const struct unit *units, size_t nunits, const char *zero,
                              int bare, char *out, size_t cap)
{
    char best[32] = "", cand[32];
    if (v == 0) {
        snprintf(out, cap, "%s", zero);
        return;
    }
    for (size_t i = 0; i < nunits; i++) {
        if (v % units[i].mult != 0)
            continue;
        snprintf(cand, sizeof(cand), "%llu%s", (unsigned long long)(v / units[i].mult),
                 units[i].name);
        if (best[0] == '\0' || strlen(cand) < strlen(best))
            memcpy(best, cand, sizeof(best));
    }
    if (bare) {
        snprintf(cand, sizeof(cand), "%llu", (unsigned long long)v);
        if (best[0] == '\0' || strlen(cand) < strlen(best))
            memcpy(best, cand, sizeof(best));
    }
    snprintf(out, cap, "%s", best);
}

void util_format_size(uint64_t v, char *out, size_t cap)
{
    /* "B" never beats the bare number: skip it (last entry). */
    format_with_units(v, size_units, ARRAY_LEN(size_units) - 1, "0", 1, out, cap);
}

void util_format_duration_ms(uint64_t ms, char *out, size_t cap)
{
    format_with_units(ms, duration_units, ARRAY_LEN(duration_units), "0s", 0, out, cap);
}

unsigned util_ncpu(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    if (n > 4096)
        return 4096;
    return (unsigned)n;
}

static int read_all(int fd, size_t size, struct buf *out)
{
    /* One byte more than the size: a file that grew while being read is noticed. */
    int rc = buf_reserve(out, size + 1);
    if (rc < 0)
        return rc;
    for (int i = 0; i < 1024 && buf_avail(out) > 0; i++) {
        ssize_t r = read(fd, buf_tail(out), buf_avail(out));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return CH_EIO;
        if (r == 0)
            return out->len == size ? 0 : CH_EAGAIN;
        buf_commit(out, (size_t)r);
    }
    return CH_EAGAIN;
}

int util_read_private_file(const char *path, size_t max, const char *what, struct buf *out,
                           struct buf *err)
{
    int rc;
    /* O_NONBLOCK: a FIFO in place of the file must not hang start-up. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rc = errno == ENOENT ? CH_ENOENT : errno == EACCES ? CH_EPERM : CH_EIO;
        buf_appendf(err, "%s: %s", path, strerror(errno));
        return rc;
    }
    /* fstat of the open file, not stat of the path: what is checked is what is read. */
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = CH_EIO;
        buf_appendf(err, "%s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        rc = CH_EINVAL;
        buf_appendf(err, "%s: not a regular file", path);
    } else if (st.st_mode & 077) {
        rc = CH_EPERM;
        buf_appendf(err, "%s: %s by group or others (mode %04o): run chmod 600 %s", path,
                    st.st_mode & 044   ? "readable"
                    : st.st_mode & 022 ? "writable"
                                       : "accessible",
                    (unsigned)(st.st_mode & 07777), path);
    } else if ((uint64_t)st.st_size > max) {
        rc = CH_ETOOBIG;
        buf_appendf(err, "%s: %lld bytes is too large for %s", path, (long long)st.st_size, what);
    } else if ((rc = read_all(fd, (size_t)st.st_size, out)) < 0) {
        buf_appendf(err, "%s: %s", path,
                    rc == CH_EAGAIN ? "changed while being read"
                    : rc == CH_EIO  ? strerror(errno)
                                    : util_strerror(rc));
        rc = rc == CH_EAGAIN ? CH_EIO : rc;
    }
    close(fd);
    return rc;
}

int util_read_secret_hash(const char *path, const char *what, unsigned char hash[32],
                          struct buf *err)
{
    struct buf data = BUF_INIT;
    char article[64];
    snprintf(article, sizeof(article), "an %s", what);
    int rc = util_read_private_file(path, UTIL_SECRET_MAX, article, &data, err);
    size_t len = data.len;
    while (rc == 0 && len > 0 &&
           (buf_data(&data)[len - 1] == '\n' || buf_data(&data)[len - 1] == '\r'))
        len--;
    for (size_t i = 0; rc == 0 && i < len; i++) {
        unsigned char c = (unsigned char)buf_data(&data)[i];
        if (c <= 0x20 || c >= 0x7f) {
            buf_appendf(err, "%s: the %s must be printable ASCII without spaces", path, what);
            rc = CH_EINVAL;
        }
    }
    if (rc == 0 && len < UTIL_SECRET_MIN) {
        buf_appendf(err, "%s: the %s is shorter than %d bytes", path, what, UTIL_SECRET_MIN);
        rc = CH_EINVAL;
    }
    if (rc == 0)
        crypto_generichash(hash, 32, (const unsigned char *)buf_data(&data), len, NULL, 0);
    else
        buf_append_str(err, "\n");
    buf_free_secret(&data);
    return rc;
}
