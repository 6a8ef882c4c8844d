/* cidr.h -- IPv4 and IPv6 prefix sets with longest-prefix lookup. Pure: no I/O but reading a list
 * file. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_CIDR_H
#define CHAPPE_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "chappe/buf.h"

/* One prefix. IPv4 uses addr[0..3]; bits past len are zero. */
struct cidr {
    uint8_t family; /* 4 or 6 */
    uint8_t len;    /* prefix length: 0..32 or 0..128 */
    uint8_t addr[16];
};

/*
 * Parse "a.b.c.d/n", "a.b.c.d" (a /32), "x:y::z/n" or "x:y::z" (a /128).
 * Strict: dotted quads without leading zeros, IPv6 as inet_pton takes it (no
 * brackets, no zone), a decimal length without leading zeros and in range, no
 * whitespace, and no host bits set past the length ("10.1.0.0/8" is refused:
 * *why then suggests the network, e.g. "host bits set (did you mean
 * 10.0.0.0/8?)"). An IPv4-mapped IPv6 prefix (::ffff:0:0/96 and longer) is
 * stored as the IPv4 prefix it maps. 0, or CH_EINVAL with *why (static text,
 * or text in a thread-local buffer valid until the next call).
 */
int cidr_parse(const char *s, size_t n, struct cidr *out, const char **why);

/* Text form ("10.0.0.0/8", "2001:db8::/32"); returns out. cap >= 64 is always enough. */
const char *cidr_format(const struct cidr *c, char *out, size_t cap);

/*
 * Parse a bare IP address (no brackets, no port, no length): 4 or 6 into
 * *family and the bytes into addr. IPv4-mapped IPv6 comes out as IPv4. 0 or
 * CH_EINVAL.
 */
int cidr_parse_ip(const char *s, size_t n, int *family, uint8_t addr[16]);

/* The address of a sockaddr (AF_INET / AF_INET6; IPv4-mapped IPv6 as IPv4). 0 or CH_EINVAL. */
int cidr_sockaddr_ip(const struct sockaddr *sa, int *family, uint8_t addr[16]);

/* A prefix as added to a set, with where it came from (for explanations). */
struct cidr_entry {
    struct cidr cidr;
    char *label; /* e.g. "etc/sovereign-ranges.txt:12" or "etc/chappe.yaml:40:7"; owned */
};

/* A set of IPv4 and IPv6 prefixes: a binary trie per family. Immutable once built. */
struct cidr_set;

struct cidr_set *cidr_set_new(void);
void cidr_set_free(struct cidr_set *s);
/*
 * Add a prefix (label copied; NULL allowed). Adding the same prefix twice keeps
 * the first label. 0 or CH_ENOMEM.
 */
int cidr_set_add(struct cidr_set *s, const struct cidr *c, const char *label);
/*
 * Add every prefix of a list file: one CIDR or address a line, '#' starts a
 * comment (to the end of the line), blank lines and surrounding whitespace are
 * ignored. Each entry is labelled "PATH:LINE". On error nothing is guaranteed
 * about the set (the caller discards it) and one line per bad line is appended
 * to err, "PATH:LINE: message\n" (or "PATH: message\n" when the file cannot be
 * read). 0, CH_EINVAL, CH_EIO or CH_ENOMEM.
 */
int cidr_set_load_file(struct cidr_set *s, const char *path, struct buf *err);
/* Number of prefixes in the set. */
size_t cidr_set_count(const struct cidr_set *s);
/* The i-th prefix added (i < cidr_set_count), for listings and derived prefixes (6to4). */
const struct cidr_entry *cidr_set_entry(const struct cidr_set *s, size_t i);
/*
 * Longest-prefix match of an address (family 4 or 6, 4 or 16 bytes; an
 * IPv4-mapped IPv6 address ::ffff:a.b.c.d is looked up as IPv4). The most
 * specific prefix containing it, or NULL. Lock-free, safe from any thread.
 */
const struct cidr_entry *cidr_set_lookup(const struct cidr_set *s, int family, const uint8_t *addr);
/* The same for a sockaddr (AF_INET / AF_INET6); NULL for other families. */
const struct cidr_entry *cidr_set_lookup_sa(const struct cidr_set *s, const struct sockaddr *sa);

#endif
