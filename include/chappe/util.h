/* util.h -- error codes, time, and the size/duration parsers used by config. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_UTIL_H
#define CHAPPE_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* chappe's error codes: 0 or negative. Library errors are translated at the module boundary. */
enum {
    CH_OK = 0,
    CH_ENOMEM = -1,   /* allocation failed */
    CH_EINVAL = -2,   /* invalid argument or input */
    CH_EAGAIN = -3,   /* need more input / try later */
    CH_EIO = -4,      /* I/O error (socket, file) */
    CH_ETLS = -5,     /* TLS failure (handshake, record) */
    CH_EPROTO = -6,   /* protocol violation by the peer */
    CH_ETOOBIG = -7,  /* over a configured limit */
    CH_EEOF = -8,     /* orderly end of stream */
    CH_ENOENT = -9,   /* not found */
    CH_EEXIST = -10,  /* already exists */
    CH_EPERM = -11,   /* refused (permissions, policy) */
    CH_ETIMEOUT = -12 /* timed out */
};

#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))

struct buf;
/*
 * Read a file that holds a secret (a signing key, an egress secret), appending
 * its bytes to out: it must be a regular file, not readable or writable by
 * group or others (what is checked is the open file, not the path), and at
 * most max bytes (a file that changes while it is read is refused). what
 * names it in messages ("a key file"). 0, or CH_ENOENT / CH_EPERM / CH_EINVAL
 * / CH_ETOOBIG / CH_EIO with "PATH: reason" appended to err (no newline).
 */
int util_read_private_file(const char *path, size_t max, const char *what, struct buf *out,
                           struct buf *err);

/* A secret file (an egress secret, an admin token): read with
 * util_read_private_file (at most 4096 bytes), a trailing newline dropped, at
 * least 16 printable ASCII bytes without spaces. 0 and its BLAKE2b-256 hash
 * in hash (tokens presented later are hashed and compared in constant time),
 * or a negative code with one line naming path and `what` ("egress secret")
 * appended to err. */
#define UTIL_SECRET_MIN 16
#define UTIL_SECRET_MAX 4096
int util_read_secret_hash(const char *path, const char *what, unsigned char hash[32],
                          struct buf *err);
const char *util_strerror(int code);

/* Milliseconds since the Unix epoch (wall clock, for logs and Matrix timestamps). */
uint64_t util_wall_ms(void);
/* Milliseconds from a monotonic clock (for durations). */
uint64_t util_mono_ms(void);

/*
 * Parse a size: a non-negative integer with an optional unit B, KiB, MiB, GiB,
 * TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000), no space, e.g.
 * "16KiB", "13107200". 0, or CH_EINVAL with *why set to a static message.
 */
int util_parse_size(const char *s, uint64_t *out, const char **why);
/*
 * Parse a duration into milliseconds: an integer followed by one unit ms, s,
 * m, h or d, e.g. "500ms", "10s", "7d". A bare number is an error (the unit
 * is not guessed). 0, or CH_EINVAL with *why set.
 */
int util_parse_duration_ms(const char *s, uint64_t *out, const char **why);
/* Format a size / duration back in the shortest exact form ("16KiB", "7d"). */
void util_format_size(uint64_t v, char *out, size_t cap);
void util_format_duration_ms(uint64_t ms, char *out, size_t cap);
/* Number of online CPUs, at least 1. */
unsigned util_ncpu(void);

#endif
