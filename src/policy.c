/* policy.c -- the server-name grammar, and which names and addresses chappe may talk to. */
/* SPDX-License-Identifier: ISC */
#include <arpa/inet.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/config.h"
#include "chappe/policy.h"
#include "chappe/util.h"

#define LABEL_MAX 63 /* RFC 1035 section 2.3.4 */

/* ---- server names: the spec's appendices, "Server Name" ---- */

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(unsigned char c)
{
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

static int is_hex(unsigned char c)
{
    return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static void copy_lower(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = lower(src[i]);
    dst[n] = '\0';
}

/* port = 1*5DIGIT, read strictly: 1..65535, no leading zero. */
static int parse_port(const char *s, size_t n, uint16_t *out, const char **why)
{
    if (n == 0) {
        *why = "empty port";
        return CH_EINVAL;
    }
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit((unsigned char)s[i])) {
            *why = "invalid port";
            return CH_EINVAL;
        }
        if (i >= 5) {
            *why = "port out of range";
            return CH_EINVAL;
        }
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (n > 1 && s[0] == '0') {
        *why = "leading zero in port";
        return CH_EINVAL;
    }
    if (v == 0 || v > 65535) {
        *why = "port out of range";
        return CH_EINVAL;
    }
    *out = (uint16_t)v;
    return 0;
}

/* "[" IPv6address "]" at the front of s; *used is the length through the ']'. */
static int parse_ipv6_literal(const char *s, size_t n, struct server_name *out, size_t *used,
                              const char **why)
{
    const char *close = memchr(s, ']', n);
    if (close == NULL) {
        *why = "missing ']' after IPv6 literal";
        return CH_EINVAL;
    }
    const char *a = s + 1;
    size_t alen = (size_t)(close - a);
    char tmp[INET6_ADDRSTRLEN];
    if (memchr(a, '%', alen)) {
        *why = "zone id not allowed in IPv6 literal";
        return CH_EINVAL;
    }
    for (size_t i = 0; i < alen; i++) {
        if (!is_hex((unsigned char)a[i]) && a[i] != ':' && a[i] != '.') {
            *why = "invalid IPv6 literal";
            return CH_EINVAL;
        }
    }
    if (alen == 0 || alen >= sizeof(tmp)) {
        *why = "invalid IPv6 literal";
        return CH_EINVAL;
    }
    copy_lower(tmp, a, alen);
    if (inet_pton(AF_INET6, tmp, out->addr) != 1) {
        *why = "invalid IPv6 literal";
        return CH_EINVAL;
    }
    memcpy(out->host, tmp, alen + 1);
    out->type = SERVER_HOST_IPV6;
    out->family = 6;
    *used = (size_t)(close - s) + 1;
    return 0;
}

/* Every label 1..63 bytes, not starting or ending with '-'; *all_digits when no letter or '-'. */
static int check_labels(const char *h, size_t n, int *all_digits, const char **why)
{
    size_t start = 0;
    *all_digits = 1;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && h[i] != '.') {
            if (!is_digit((unsigned char)h[i]))
                *all_digits = 0;
            continue;
        }
        size_t len = i - start;
        if (len == 0) {
            *why = i == n ? "trailing dot in server name" : "empty label in server name";
            return CH_EINVAL;
        }
        if (len > LABEL_MAX) {
            *why = "label longer than 63 bytes in server name";
            return CH_EINVAL;
        }
        if (h[start] == '-' || h[i - 1] == '-') {
            *why = "label starts or ends with '-' in server name";
            return CH_EINVAL;
        }
        start = i + 1;
    }
    return 0;
}

/* dns-name or IPv4address at the front of s, up to the first ':'. */
static int parse_host(const char *s, size_t n, struct server_name *out, size_t *used,
                      const char **why)
{
    const char *colon = memchr(s, ':', n);
    size_t hlen = colon ? (size_t)(colon - s) : n;
    if (colon && memchr(colon + 1, ':', n - hlen - 1)) {
        *why = "IPv6 literal must be in brackets";
        return CH_EINVAL;
    }
    if (hlen == 0) {
        *why = "empty host in server name";
        return CH_EINVAL;
    }
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '.') {
            *why = "invalid character in server name";
            return CH_EINVAL;
        }
    }
    if (hlen > SERVER_NAME_MAX) {
        *why = "server name longer than 255 bytes";
        return CH_EINVAL;
    }
    int all_digits;
    if (check_labels(s, hlen, &all_digits, why))
        return CH_EINVAL;
    /* Digits-only labels cannot be a DNS name here: the grammar reads them as IPv4address. */
    if (all_digits) {
        int family;
        if (cidr_parse_ip(s, hlen, &family, out->addr) || family != 4) {
            *why = "invalid IPv4 address in server name";
            return CH_EINVAL;
        }
        out->type = SERVER_HOST_IPV4;
        out->family = 4;
    } else {
        out->type = SERVER_HOST_DNS;
    }
    copy_lower(out->host, s, hlen);
    *used = hlen;
    return 0;
}

int server_name_parse(const char *s, size_t n, struct server_name *out, const char **why)
{
    size_t used = 0;
    memset(out, 0, sizeof(*out));
    if (s == NULL || n == 0) {
        *why = "empty server name";
        return CH_EINVAL;
    }
    int rc =
        s[0] == '[' ? parse_ipv6_literal(s, n, out, &used, why) : parse_host(s, n, out, &used, why);
    if (rc == 0 && used < n && s[used] != ':') {
        *why = "invalid character after IPv6 literal";
        rc = CH_EINVAL;
    }
    if (rc == 0 && used < n)
        rc = parse_port(s + used + 1, n - used - 1, &out->port, why);
    if (rc) {
        memset(out, 0, sizeof(*out));
        return rc;
    }
    const char *open = out->type == SERVER_HOST_IPV6 ? "[" : "";
    const char *close = out->type == SERVER_HOST_IPV6 ? "]" : "";
    if (out->port)
        snprintf(out->name, sizeof(out->name), "%s%s%s:%u", open, out->host, close, out->port);
    else
        snprintf(out->name, sizeof(out->name), "%s%s%s", open, out->host, close);
    return 0;
}

/* ---- the policy snapshot ---- */

/* A federation_domain_whitelist entry, parsed. */
struct name_rule {
    const char *pattern; /* as configured (borrowed from text) */
    const char *label;   /* "FILE:LINE:COL" or NULL (borrowed from text) */
    int wildcard;        /* "*.suffix" */
    size_t suffix_len;   /* wildcard: length of ".suffix" */
    char suffix[SERVER_NAME_MAX + 2];
    struct server_name sn; /* exact: the name; wildcard: the suffix (its port, if any, applies) */
};

struct policy {
    atomic_uint refs;
    bool any_name, any_address;
    struct name_rule *rules;
    size_t nrules;
    char *text; /* patterns and labels of rules, copied */
    struct cidr_set *sovereign, *blacklist, *whitelist;
};

const char *const policy_default_blacklist[] = {
    "127.0.0.0/8",     "10.0.0.0/8",     "172.16.0.0/12",  "192.168.0.0/16", "100.64.0.0/10",
    "192.0.0.0/24",    "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15",  "192.0.2.0/24",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",    "::1/128",        "fe80::/10",
    "fc00::/7",        "2001:db8::/32",  "ff00::/8",       "fec0::/10",      NULL,
};

static const char *const reason_codes[POLICY_REASON_COUNT] = {
    [POLICY_ALLOW_NAME] = "allow_name",
    [POLICY_ALLOW_ANY_NAME] = "allow_any_name",
    [POLICY_ALLOW_ADDRESS] = "allow_address",
    [POLICY_ALLOW_ANY_ADDRESS] = "allow_any_address",
    [POLICY_INVALID_SERVER_NAME] = "invalid_server_name",
    [POLICY_NAME_NOT_ALLOWED] = "name_not_allowed",
    [POLICY_ADDRESS_NOT_SOVEREIGN] = "address_not_sovereign",
    [POLICY_ADDRESS_BLACKLISTED] = "address_blacklisted",
    [POLICY_ADDRESS_UNSPECIFIED] = "address_unspecified",
};

const char *policy_reason_code(enum policy_reason r)
{
    return (unsigned)r < POLICY_REASON_COUNT ? reason_codes[r] : "unknown";
}

static void policy_free(struct policy *p)
{
    cidr_set_free(p->sovereign);
    cidr_set_free(p->blacklist);
    cidr_set_free(p->whitelist);
    free(p->rules);
    free(p->text);
    free(p);
}

void policy_ref(struct policy *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

void policy_unref(struct policy *p)
{
    if (p == NULL)
        return;
    /* Release our writes; the last one out acquires everyone's before freeing. */
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_release) != 1)
        return;
    atomic_thread_fence(memory_order_acquire);
    policy_free(p);
}

bool policy_any_name(const struct policy *p)
{
    return p->any_name;
}

bool policy_any_address(const struct policy *p)
{
    return p->any_address;
}

/* Copy every rule's pattern and label into one block, so rules can borrow from it. */
static int copy_rule_text(struct policy *p, const struct config *cfg)
{
    size_t total = 1;
    for (size_t i = 0; i < cfg->nfederation_domain_whitelist; i++) {
        const struct cfg_name_rule *r = &cfg->federation_domain_whitelist[i];
        total += strlen(r->pattern ? r->pattern : "") + 1;
        total += r->label ? strlen(r->label) + 1 : 0;
    }
    p->text = malloc(total);
    p->rules = calloc(cfg->nfederation_domain_whitelist + 1, sizeof(*p->rules));
    if (p->text == NULL || p->rules == NULL)
        return CH_ENOMEM;
    char *t = p->text;
    for (size_t i = 0; i < cfg->nfederation_domain_whitelist; i++) {
        const struct cfg_name_rule *r = &cfg->federation_domain_whitelist[i];
        size_t n = strlen(r->pattern ? r->pattern : "") + 1;
        memcpy(t, r->pattern ? r->pattern : "", n);
        p->rules[i].pattern = t;
        t += n;
        if (r->label) {
            n = strlen(r->label) + 1;
            memcpy(t, r->label, n);
            p->rules[i].label = t;
            t += n;
        }
    }
    return 0;
}

/* Parse one rule: an exact server name, or "*." followed by a DNS name (with an optional port). */
static int parse_rule(struct name_rule *r, const char **why)
{
    const char *pat = r->pattern;
    if (strncmp(pat, "*.", 2) != 0)
        return server_name_parse(pat, strlen(pat), &r->sn, why);
    if (server_name_parse(pat + 2, strlen(pat + 2), &r->sn, why))
        return CH_EINVAL;
    if (r->sn.type != SERVER_HOST_DNS) {
        *why = "a wildcard needs a DNS name after \"*.\"";
        return CH_EINVAL;
    }
    r->wildcard = 1;
    r->suffix_len = (size_t)snprintf(r->suffix, sizeof(r->suffix), ".%s", r->sn.host);
    return 0;
}

static int build_rules(struct policy *p, const struct config *cfg, struct buf *err)
{
    int rc = copy_rule_text(p, cfg);
    if (rc)
        return rc;
    /* Report every bad entry; one is enough for the caller to discard the policy. */
    for (size_t i = 0; i < cfg->nfederation_domain_whitelist; i++) {
        struct name_rule *r = &p->rules[i];
        const char *why = NULL;
        if (parse_rule(r, &why) == 0)
            continue;
        if (buf_appendf(err, "%s: federation_domain_whitelist entry \"%s\": %s\n",
                        r->label ? r->label : "config", r->pattern, why))
            return CH_ENOMEM;
        rc = CH_EINVAL;
    }
    if (rc == 0)
        p->nrules = cfg->nfederation_domain_whitelist;
    return rc;
}

/* Add a config list and file to set. 0, or the first error (CH_ENOMEM at once). */
static int load_ranges(struct cidr_set *set, const struct cfg_ranges *r, const char *key,
                       struct buf *err)
{
    int rc = 0;
    if (r->any && strcmp(key, "sovereign_ranges") != 0) {
        if (buf_appendf(err, "%s: %s cannot be `any`\n", r->where ? r->where : "config", key))
            return CH_ENOMEM;
        rc = CH_EINVAL;
    }
    for (size_t i = 0; i < r->nitems; i++) {
        int arc = cidr_set_add(set, &r->items[i].cidr, r->items[i].label);
        if (arc == CH_ENOMEM)
            return arc;
        if (arc && rc == 0) {
            if (buf_appendf(err, "%s: %s: invalid prefix\n",
                            r->items[i].label ? r->items[i].label : "config", key))
                return CH_ENOMEM;
            rc = arc;
        }
    }
    if (r->file) {
        int frc = cidr_set_load_file(set, r->file, err);
        if (frc == CH_ENOMEM)
            return frc;
        if (frc && rc == 0)
            rc = frc;
    }
    return rc;
}

static int load_default_blacklist(struct cidr_set *set)
{
    for (size_t i = 0; policy_default_blacklist[i]; i++) {
        struct cidr c;
        const char *why;
        const char *s = policy_default_blacklist[i];
        if (cidr_parse(s, strlen(s), &c, &why))
            return CH_EINVAL; /* cannot happen: the table is checked by the unit tests */
        if (cidr_set_add(set, &c, "default"))
            return CH_ENOMEM;
    }
    return 0;
}

/*
 * Blacklist the 6to4 image (RFC 3056: 2002:AABB:CCDD::/48 carries a.b.c.d) of
 * every IPv4 prefix already in set, as Synapse's generate_ip_set does: a 6to4
 * address reaches the IPv4 host it embeds through a relay.
 */
static int add_6to4(struct cidr_set *set)
{
    size_t n = cidr_set_count(set);
    struct buf label = BUF_INIT;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct cidr_entry *e = cidr_set_entry(set, i);
        if (e->cidr.family != 4)
            continue;
        struct cidr c = {.family = 6, .len = (uint8_t)(16 + e->cidr.len)};
        c.addr[0] = 0x20;
        c.addr[1] = 0x02;
        memcpy(c.addr + 2, e->cidr.addr, 4);
        char v4[64];
        cidr_format(&e->cidr, v4, sizeof(v4));
        buf_reset(&label);
        if (e->label)
            rc = buf_appendf(&label, "%s (6to4 of %s)", e->label, v4);
        else
            rc = buf_appendf(&label, "6to4 of %s", v4);
        if (rc == 0)
            rc = buf_append(&label, "", 1);
        if (rc == 0)
            rc = cidr_set_add(set, &c, buf_data(&label));
    }
    buf_free(&label);
    return rc;
}

static int build_sets(struct policy *p, const struct config *cfg, struct buf *err)
{
    p->sovereign = cidr_set_new();
    p->blacklist = cidr_set_new();
    p->whitelist = cidr_set_new();
    if (p->sovereign == NULL || p->blacklist == NULL || p->whitelist == NULL)
        return CH_ENOMEM;

    p->any_address = cfg->sovereign_ranges.any;
    int r = load_ranges(p->sovereign, &cfg->sovereign_ranges, "sovereign_ranges", err);
    if (r == CH_ENOMEM)
        return r;
    int rc = r;
    if (cfg->ip_range_blacklist.present)
        r = load_ranges(p->blacklist, &cfg->ip_range_blacklist, "ip_range_blacklist", err);
    else
        r = load_default_blacklist(p->blacklist);
    if (r == CH_ENOMEM)
        return r;
    rc = rc ? rc : r;
    if ((r = add_6to4(p->blacklist)))
        return r;
    r = load_ranges(p->whitelist, &cfg->ip_range_whitelist, "ip_range_whitelist", err);
    if (r == CH_ENOMEM)
        return r;
    return rc ? rc : r;
}

int policy_new(const struct config *cfg, struct policy **out, struct buf *err)
{
    *out = NULL;
    struct policy *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return CH_ENOMEM;
    atomic_init(&p->refs, 1);
    p->any_name = cfg->federation_any;

    int rc = build_rules(p, cfg, err);
    if (rc != CH_ENOMEM) {
        int src = build_sets(p, cfg, err);
        if (src == CH_ENOMEM || rc == 0)
            rc = src;
    }
    if (rc) {
        policy_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* ---- decisions ---- */

static struct policy_decision decide(bool allow, enum policy_reason reason)
{
    struct policy_decision d;
    d.allow = allow;
    d.reason = reason;
    d.rule[0] = '\0';
    return d;
}

static bool port_matches(uint16_t rule_port, uint16_t port)
{
    return rule_port == 0 || rule_port == port;
}

static bool rule_matches(const struct name_rule *r, const struct server_name *sn)
{
    if (!port_matches(r->sn.port, sn->port))
        return false;
    if (r->wildcard) {
        /* At least one label before ".suffix": the host is longer than the suffix and every
         * label of a valid name is non-empty. */
        size_t hl = strlen(sn->host);
        return sn->type == SERVER_HOST_DNS && hl > r->suffix_len &&
               memcmp(sn->host + hl - r->suffix_len, r->suffix, r->suffix_len) == 0;
    }
    if (r->sn.type != sn->type)
        return false;
    if (sn->type == SERVER_HOST_DNS)
        return strcmp(r->sn.host, sn->host) == 0;
    /* IP literals compare as addresses: "[::1]" and "[0::1]" name the same host. */
    return memcmp(r->sn.addr, sn->addr, sn->type == SERVER_HOST_IPV4 ? 4 : 16) == 0;
}

/* Append text to a decision's rule, separated by ", " (truncated to fit). */
static void rule_append(struct policy_decision *d, const char *key, const char *what,
                        const char *label)
{
    size_t used = strlen(d->rule);
    if (used >= sizeof(d->rule) - 1)
        return;
    snprintf(d->rule + used, sizeof(d->rule) - used, "%s%s %s%s%s%s", used ? ", " : "", key, what,
             label ? " (" : "", label ? label : "", label ? ")" : "");
}

static void rule_append_entry(struct policy_decision *d, const char *key,
                              const struct cidr_entry *e)
{
    char c[64];
    rule_append(d, key, cidr_format(&e->cidr, c, sizeof(c)), e->label);
}

struct policy_decision policy_check_name(const struct policy *p, const struct server_name *sn)
{
    if (p->any_name) {
        struct policy_decision d = decide(true, POLICY_ALLOW_ANY_NAME);
        rule_append(&d, "federation_domain_whitelist", "any", NULL);
        return d;
    }
    for (size_t i = 0; i < p->nrules; i++) {
        const struct name_rule *r = &p->rules[i];
        if (rule_matches(r, sn)) {
            struct policy_decision d = decide(true, POLICY_ALLOW_NAME);
            rule_append(&d, "federation_domain_whitelist", r->pattern, r->label);
            return d;
        }
    }
    struct policy_decision d = decide(false, POLICY_NAME_NOT_ALLOWED);
    snprintf(d.rule, sizeof(d.rule), "no federation_domain_whitelist entry matches");
    return d;
}

struct policy_decision policy_check_name_str(const struct policy *p, const char *s, size_t n)
{
    struct server_name sn;
    const char *why;
    if (server_name_parse(s, n, &sn, &why)) {
        struct policy_decision d = decide(false, POLICY_INVALID_SERVER_NAME);
        snprintf(d.rule, sizeof(d.rule), "%s", why);
        return d;
    }
    return policy_check_name(p, &sn);
}

static bool all_zero(const uint8_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i])
            return false;
    return true;
}

struct policy_decision policy_check_ip(const struct policy *p, int family, const uint8_t *addr)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family == 6 && memcmp(addr, mapped, sizeof(mapped)) == 0) {
        family = 4;
        addr += 12;
    }
    /* An address of no family we know is in no range. */
    if (family != 4 && family != 6)
        return decide(false, POLICY_ADDRESS_NOT_SOVEREIGN);
    if (all_zero(addr, family == 4 ? 4 : 16)) {
        struct policy_decision u = decide(false, POLICY_ADDRESS_UNSPECIFIED);
        snprintf(u.rule, sizeof(u.rule), "0.0.0.0 and :: are never allowed");
        return u;
    }

    struct policy_decision d = decide(false, POLICY_ADDRESS_BLACKLISTED);
    const struct cidr_entry *bl = cidr_set_lookup(p->blacklist, family, addr);
    if (bl) {
        const struct cidr_entry *wl = cidr_set_lookup(p->whitelist, family, addr);
        rule_append_entry(&d, "ip_range_blacklist", bl);
        if (wl == NULL)
            return d;
        rule_append_entry(&d, "ip_range_whitelist", wl);
    }
    if (p->any_address) {
        d.allow = true;
        d.reason = POLICY_ALLOW_ANY_ADDRESS;
        rule_append(&d, "sovereign_ranges", "any", NULL);
        return d;
    }
    const struct cidr_entry *sv = cidr_set_lookup(p->sovereign, family, addr);
    if (sv == NULL) {
        d.reason = POLICY_ADDRESS_NOT_SOVEREIGN;
        rule_append(&d, "outside", "sovereign_ranges", NULL);
        return d;
    }
    d.allow = true;
    d.reason = POLICY_ALLOW_ADDRESS;
    rule_append_entry(&d, "sovereign_ranges", sv);
    return d;
}

struct policy_decision policy_check_addr(const struct policy *p, const struct sockaddr *sa)
{
    int family;
    uint8_t addr[16];
    if (cidr_sockaddr_ip(sa, &family, addr))
        return decide(false, POLICY_ADDRESS_NOT_SOVEREIGN);
    return policy_check_ip(p, family, addr);
}

/* ---- counters ---- */

static _Atomic uint64_t counters[POLICY_DIRECTION_COUNT][POLICY_REASON_COUNT];

void policy_count(enum policy_direction d, enum policy_reason r)
{
    if ((unsigned)d < POLICY_DIRECTION_COUNT && (unsigned)r < POLICY_REASON_COUNT)
        atomic_fetch_add_explicit(&counters[d][r], 1, memory_order_relaxed);
}

uint64_t policy_counter(enum policy_direction d, enum policy_reason r)
{
    if ((unsigned)d < POLICY_DIRECTION_COUNT && (unsigned)r < POLICY_REASON_COUNT)
        return atomic_load_explicit(&counters[d][r], memory_order_relaxed);
    return 0;
}
