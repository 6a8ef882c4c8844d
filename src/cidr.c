/* cidr.c -- strict IPv4/IPv6 prefix parsing, and prefix sets as one binary trie per family. */
/* SPDX-License-Identifier: ISC */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/cidr.h"
#include "chappe/util.h"

/*
 * The trie: nodes live in one array and name their children by index. Node 0
 * is the IPv4 root and node 1 the IPv6 root; a root is never a child, so a
 * child index of 0 means "none".
 */
#define ROOT_V4 0u
#define ROOT_V6 1u
#define NO_NODE 0u

struct node {
    uint32_t child[2];
    uint32_t entry; /* 1 + index into entries when a prefix ends here, else 0 */
};

struct cidr_set {
    struct node *nodes;
    size_t nnodes, capnodes;
    struct cidr_entry **entries; /* in insertion order; each allocated alone, so pointers stay */
    size_t nentries, capentries;
};

/* ::ffff:0:0/96, the IPv4-mapped block (RFC 4291 section 2.5.5.2). */
static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Text of the last host-bits message, per thread (cidr_parse's *why may point here). */
static _Thread_local char why_buf[128];

static int is_mapped(const uint8_t addr[16])
{
    return memcmp(addr, mapped_prefix, sizeof(mapped_prefix)) == 0;
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Refuse what neither form may contain, with the most helpful reason. */
static int check_chars(const char *s, size_t n, int allow_slash, const char **why)
{
    if (s == NULL || n == 0) {
        *why = "empty";
        return CH_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_space(c)) {
            *why = "whitespace not allowed";
            return CH_EINVAL;
        }
        if (c == '[' || c == ']') {
            *why = "brackets not allowed";
            return CH_EINVAL;
        }
        if (c == '%') {
            *why = "zone not allowed";
            return CH_EINVAL;
        }
        if (c == '/' && !allow_slash) {
            *why = "prefix length not allowed";
            return CH_EINVAL;
        }
        if (!is_digit(c) && !((c | 0x20) >= 'a' && (c | 0x20) <= 'f') && c != '.' && c != ':' &&
            c != '/') {
            *why = "invalid character";
            return CH_EINVAL;
        }
    }
    return 0;
}

/* A dotted quad, each part 0..255 in decimal without leading zeros (no octal, no shorthand). */
static int parse_ipv4(const char *s, size_t n, uint8_t out[4], const char **why)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        if (part > 0) {
            if (i >= n || s[i] != '.') {
                *why = "invalid IPv4 address";
                return CH_EINVAL;
            }
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < n && is_digit((unsigned char)s[i]) && i - start < 3)
            v = v * 10 + (unsigned)(s[i++] - '0');
        if (i == start || v > 255 || (i < n && is_digit((unsigned char)s[i]))) {
            *why = "invalid IPv4 address";
            return CH_EINVAL;
        }
        if (i - start > 1 && s[start] == '0') {
            *why = "leading zero in IPv4 address";
            return CH_EINVAL;
        }
        out[part] = (uint8_t)v;
    }
    if (i != n) {
        *why = "invalid IPv4 address";
        return CH_EINVAL;
    }
    return 0;
}

/* An address as written: 4 or 6, no IPv4-mapped folding yet. */
static int parse_raw_ip(const char *s, size_t n, int *family, uint8_t addr[16], const char **why)
{
    memset(addr, 0, 16);
    if (memchr(s, ':', n) == NULL) {
        *family = 4;
        return parse_ipv4(s, n, addr, why);
    }
    char tmp[INET6_ADDRSTRLEN];
    if (n >= sizeof(tmp)) {
        *why = "invalid IPv6 address";
        return CH_EINVAL;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    if (inet_pton(AF_INET6, tmp, addr) != 1) {
        *why = "invalid IPv6 address";
        return CH_EINVAL;
    }
    *family = 6;
    return 0;
}

static int parse_length(const char *s, size_t n, unsigned max, unsigned *out, const char **why)
{
    if (n == 0) {
        *why = "empty prefix length";
        return CH_EINVAL;
    }
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit((unsigned char)s[i])) {
            *why = "invalid prefix length";
            return CH_EINVAL;
        }
        if (i >= 3) {
            *why = "prefix length out of range";
            return CH_EINVAL;
        }
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (n > 1 && s[0] == '0') {
        *why = "leading zero in prefix length";
        return CH_EINVAL;
    }
    if (v > max) {
        *why = "prefix length out of range";
        return CH_EINVAL;
    }
    *out = v;
    return 0;
}

/* Clear the bits past len; returns whether any was set. */
static int mask_host_bits(uint8_t *addr, size_t nbytes, unsigned len)
{
    int had = 0;
    for (size_t i = 0; i < nbytes; i++) {
        unsigned keep = len >= (i + 1) * 8 ? 8 : (len > i * 8 ? len - (unsigned)i * 8 : 0);
        uint8_t m = (uint8_t)(keep == 8 ? 0xff : (0xff00u >> keep) & 0xff);
        if (addr[i] & (uint8_t)~m)
            had = 1;
        addr[i] &= m;
    }
    return had;
}

/* Fold ::ffff:0:0/96 and longer into the IPv4 prefix it maps. */
static void fold_mapped(struct cidr *c)
{
    if (c->family != 6 || c->len < 96 || !is_mapped(c->addr))
        return;
    uint8_t v4[4];
    memcpy(v4, c->addr + 12, 4);
    memset(c->addr, 0, sizeof(c->addr));
    memcpy(c->addr, v4, 4);
    c->family = 4;
    c->len = (uint8_t)(c->len - 96);
}

int cidr_parse(const char *s, size_t n, struct cidr *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (check_chars(s, n, 1, why))
        return CH_EINVAL;
    const char *slash = memchr(s, '/', n);
    size_t alen = slash ? (size_t)(slash - s) : n;
    int family;
    uint8_t addr[16];
    if (alen == 0) {
        *why = "empty address";
        return CH_EINVAL;
    }
    if (parse_raw_ip(s, alen, &family, addr, why))
        return CH_EINVAL;
    unsigned max = family == 4 ? 32 : 128, len = max;
    if (slash && parse_length(slash + 1, n - alen - 1, max, &len, why))
        return CH_EINVAL;

    struct cidr c = {.family = (uint8_t)family, .len = (uint8_t)len};
    memcpy(c.addr, addr, sizeof(c.addr));
    if (mask_host_bits(c.addr, family == 4 ? 4 : 16, len)) {
        char net[64];
        snprintf(why_buf, sizeof(why_buf), "host bits set (did you mean %s?)",
                 cidr_format(&c, net, sizeof(net)));
        *why = why_buf;
        return CH_EINVAL;
    }
    fold_mapped(&c);
    *out = c;
    return 0;
}

const char *cidr_format(const struct cidr *c, char *out, size_t cap)
{
    if (cap == 0)
        return out;
    if (c->family == 4) {
        snprintf(out, cap, "%u.%u.%u.%u/%u", c->addr[0], c->addr[1], c->addr[2], c->addr[3],
                 c->len);
        return out;
    }
    char a[INET6_ADDRSTRLEN];
    if (inet_ntop(AF_INET6, c->addr, a, sizeof(a)) == NULL)
        snprintf(a, sizeof(a), "?");
    snprintf(out, cap, "%s/%u", a, c->len);
    return out;
}

int cidr_parse_ip(const char *s, size_t n, int *family, uint8_t addr[16])
{
    const char *why;
    uint8_t raw[16];
    int fam;
    memset(addr, 0, 16);
    if (check_chars(s, n, 0, &why) || parse_raw_ip(s, n, &fam, raw, &why))
        return CH_EINVAL;
    if (fam == 6 && is_mapped(raw)) {
        memcpy(addr, raw + 12, 4);
        *family = 4;
        return 0;
    }
    memcpy(addr, raw, 16);
    *family = fam;
    return 0;
}

int cidr_sockaddr_ip(const struct sockaddr *sa, int *family, uint8_t addr[16])
{
    memset(addr, 0, 16);
    if (sa == NULL)
        return CH_EINVAL;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        memcpy(addr, &sin->sin_addr, 4);
        *family = 4;
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        const uint8_t *a = sin6->sin6_addr.s6_addr;
        if (is_mapped(a)) {
            memcpy(addr, a + 12, 4);
            *family = 4;
        } else {
            memcpy(addr, a, 16);
            *family = 6;
        }
        return 0;
    }
    return CH_EINVAL;
}

/* ---- sets ---- */

struct cidr_set *cidr_set_new(void)
{
    struct cidr_set *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->nodes = calloc(16, sizeof(*s->nodes));
    if (s->nodes == NULL) {
        free(s);
        return NULL;
    }
    s->capnodes = 16;
    s->nnodes = 2; /* the two roots */
    return s;
}

void cidr_set_free(struct cidr_set *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nentries; i++) {
        free(s->entries[i]->label);
        free(s->entries[i]);
    }
    free(s->entries);
    free(s->nodes);
    free(s);
}

/* Index of a new empty node, or NO_NODE when out of memory. */
static uint32_t new_node(struct cidr_set *s)
{
    if (s->nnodes == s->capnodes) {
        if (s->capnodes > UINT32_MAX / 2)
            return NO_NODE;
        size_t cap = s->capnodes * 2;
        struct node *n = realloc(s->nodes, cap * sizeof(*n));
        if (n == NULL)
            return NO_NODE;
        s->nodes = n;
        s->capnodes = cap;
    }
    memset(&s->nodes[s->nnodes], 0, sizeof(s->nodes[0]));
    return (uint32_t)s->nnodes++;
}

static int bit_at(const uint8_t *addr, unsigned bit)
{
    return (addr[bit >> 3] >> (7 - (bit & 7))) & 1;
}

static int push_entry(struct cidr_set *s, const struct cidr *c, const char *label)
{
    if (s->nentries == s->capentries) {
        size_t cap = s->capentries ? s->capentries * 2 : 16;
        struct cidr_entry **e = reallocarray(s->entries, cap, sizeof(struct cidr_entry *));
        if (e == NULL)
            return CH_ENOMEM;
        s->entries = e;
        s->capentries = cap;
    }
    struct cidr_entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return CH_ENOMEM;
    if (label && (e->label = strdup(label)) == NULL) {
        free(e);
        return CH_ENOMEM;
    }
    e->cidr = *c;
    s->entries[s->nentries++] = e;
    return 0;
}

int cidr_set_add(struct cidr_set *s, const struct cidr *c, const char *label)
{
    if ((c->family != 4 && c->family != 6) || c->len > (c->family == 4 ? 32 : 128))
        return CH_EINVAL;
    struct cidr norm = *c;
    fold_mapped(&norm);
    /* Lookups only walk the first len bits; the stored prefix is kept clean for display. */
    mask_host_bits(norm.addr, sizeof(norm.addr), norm.len);

    uint32_t i = norm.family == 4 ? ROOT_V4 : ROOT_V6;
    for (unsigned bit = 0; bit < norm.len; bit++) {
        int b = bit_at(norm.addr, bit);
        if (s->nodes[i].child[b] == NO_NODE) {
            uint32_t n = new_node(s);
            if (n == NO_NODE)
                return CH_ENOMEM;
            s->nodes[i].child[b] = n;
        }
        i = s->nodes[i].child[b];
    }
    if (s->nodes[i].entry)
        return 0; /* the first label stays */
    if (s->nentries >= UINT32_MAX - 1 || push_entry(s, &norm, label))
        return CH_ENOMEM;
    s->nodes[i].entry = (uint32_t)s->nentries;
    return 0;
}

size_t cidr_set_count(const struct cidr_set *s)
{
    return s->nentries;
}

const struct cidr_entry *cidr_set_entry(const struct cidr_set *s, size_t i)
{
    return i < s->nentries ? s->entries[i] : NULL;
}

const struct cidr_entry *cidr_set_lookup(const struct cidr_set *s, int family, const uint8_t *addr)
{
    uint32_t i;
    unsigned nbits;
    if (s == NULL || addr == NULL)
        return NULL;
    if (family == 6 && is_mapped(addr)) {
        addr += 12;
        family = 4;
    }
    if (family == 4) {
        i = ROOT_V4;
        nbits = 32;
    } else if (family == 6) {
        i = ROOT_V6;
        nbits = 128;
    } else {
        return NULL;
    }
    const struct cidr_entry *best = NULL;
    for (unsigned bit = 0;; bit++) {
        const struct node *nd = &s->nodes[i];
        if (nd->entry)
            best = s->entries[nd->entry - 1];
        if (bit == nbits)
            break;
        uint32_t next = nd->child[bit_at(addr, bit)];
        if (next == NO_NODE)
            break;
        i = next;
    }
    return best;
}

const struct cidr_entry *cidr_set_lookup_sa(const struct cidr_set *s, const struct sockaddr *sa)
{
    int family;
    uint8_t addr[16];
    if (cidr_sockaddr_ip(sa, &family, addr))
        return NULL;
    return cidr_set_lookup(s, family, addr);
}

/* ---- list files ---- */

/* Append text for a message: printable ASCII as is, other bytes as \xNN, at most 64 bytes. */
static int append_quoted(struct buf *b, const char *p, size_t n)
{
    size_t shown = n > 64 ? 64 : n;
    int rc = buf_append_str(b, "\"");
    for (size_t i = 0; rc == 0 && i < shown; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            rc = buf_append(b, &p[i], 1);
        else
            rc = buf_appendf(b, "\\x%02x", c);
    }
    if (rc == 0 && shown < n)
        rc = buf_append_str(b, "...");
    return rc ? rc : buf_append_str(b, "\"");
}

/*
 * One line of a list file: 0 (entry added, or nothing on the line), CH_EINVAL
 * (reported in err) or CH_ENOMEM. label is scratch space for "PATH:LINE".
 */
static int load_line(struct cidr_set *s, const char *path, size_t lineno, const char *line,
                     size_t n, struct buf *label, struct buf *err)
{
    const char *hash = memchr(line, '#', n);
    if (hash)
        n = (size_t)(hash - line);
    while (n && is_space((unsigned char)line[n - 1]))
        n--;
    size_t i = 0;
    while (i < n && is_space((unsigned char)line[i]))
        i++;
    if (i == n)
        return 0;

    struct cidr c;
    const char *why = NULL;
    if (cidr_parse(line + i, n - i, &c, &why)) {
        if (buf_appendf(err, "%s:%zu: invalid prefix ", path, lineno) ||
            append_quoted(err, line + i, n - i) || buf_appendf(err, ": %s\n", why))
            return CH_ENOMEM;
        return CH_EINVAL;
    }
    buf_reset(label);
    if (buf_appendf(label, "%s:%zu", path, lineno) || buf_append(label, "", 1))
        return CH_ENOMEM;
    return cidr_set_add(s, &c, buf_data(label));
}

int cidr_set_load_file(struct cidr_set *s, const char *path, struct buf *err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        int e = errno;
        return buf_appendf(err, "%s: %s\n", path, strerror(e)) ? CH_ENOMEM : CH_EIO;
    }
    struct buf label = BUF_INIT;
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t got;
    int rc = 0;
    while ((got = getline(&line, &cap, f)) >= 0) {
        int lrc = load_line(s, path, ++lineno, line, (size_t)got, &label, err);
        if (lrc == CH_ENOMEM) {
            rc = CH_ENOMEM;
            goto out;
        }
        if (lrc && rc == 0)
            rc = lrc;
    }
    if (!feof(f)) { /* getline stopped on an error, not at the end */
        int e = errno;
        if (e == ENOMEM)
            rc = CH_ENOMEM;
        else
            rc = buf_appendf(err, "%s: %s\n", path, strerror(e)) ? CH_ENOMEM : CH_EIO;
    }
out:
    free(line);
    buf_free(&label);
    fclose(f);
    return rc;
}
