/* policy.h -- server-name grammar, and the allow/deny decisions on names and addresses. Pure. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_POLICY_H
#define CHAPPE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "chappe/buf.h"
#include "chappe/cidr.h"

struct config;

/* ---- server names (appendices, "Server Name") ---- */

#define SERVER_NAME_MAX 255 /* hostname part, as the grammar's dns-name */

enum server_host_type { SERVER_HOST_DNS = 0, SERVER_HOST_IPV4, SERVER_HOST_IPV6 };

/*
 * A validated server name: host [":" port]. The grammar is the spec's, applied
 * strictly: a dns-name is dot-separated labels of 1..63 letters, digits and
 * '-' (no label starts or ends with '-', no empty label, no trailing dot), at
 * most 255 bytes; a name whose labels are all digits must be a valid dotted
 * quad (each part 0..255, no leading zero) and is then an IPv4 literal; an
 * IPv6 literal is bracketed and valid for inet_pton (no zone); the port is
 * 1..65535 in decimal without leading zeros. Letters are lowercased.
 */
struct server_name {
    enum server_host_type type;
    char host[SERVER_NAME_MAX + 1]; /* lowercased, IPv6 without brackets: "::1" */
    uint16_t port;                  /* 0 when absent */
    char name[SERVER_NAME_MAX + 9]; /* normalised whole name: host (IPv6 bracketed) [":" port] */
    int family;                     /* IP literals: 4 or 6 */
    uint8_t addr[16];               /* IP literals: the address bytes */
};

/* 0, or CH_EINVAL with *why (static text). */
int server_name_parse(const char *s, size_t n, struct server_name *out, const char **why);

/* ---- decisions ---- */

enum policy_reason {
    /* allow */
    POLICY_ALLOW_NAME = 0,    /* matched a federation_domain_whitelist entry */
    POLICY_ALLOW_ANY_NAME,    /* federation_domain_whitelist: any */
    POLICY_ALLOW_ADDRESS,     /* in sovereign_ranges, not blacklisted (or whitelisted) */
    POLICY_ALLOW_ANY_ADDRESS, /* sovereign_ranges: any, not blacklisted (or whitelisted) */
    /* deny */
    POLICY_INVALID_SERVER_NAME,
    POLICY_NAME_NOT_ALLOWED,
    POLICY_ADDRESS_NOT_SOVEREIGN,
    POLICY_ADDRESS_BLACKLISTED,
    POLICY_ADDRESS_UNSPECIFIED, /* 0.0.0.0 or ::, always denied */
    POLICY_REASON_COUNT
};

/* The reason's code for logs, metrics and errors: "name_not_allowed", ... */
const char *policy_reason_code(enum policy_reason r);

struct policy_decision {
    bool allow;
    enum policy_reason reason;
    /*
     * The rule that decided, for explanations; "" when none matched. E.g.
     * "federation_domain_whitelist *.tchap.gouv.fr (etc/chappe.yaml:30:5)",
     * "sovereign_ranges 10.0.0.0/8 (etc/sovereign-ranges.txt:12)",
     * "ip_range_blacklist 127.0.0.0/8 (default)",
     * "ip_range_whitelist 127.0.0.0/8 (etc/chappe.yaml:41:5)".
     * When an address is allowed through the whitelist after matching the
     * blacklist, both rules are named.
     */
    char rule[256];
};

/*
 * An immutable policy snapshot built from a config: the name allowlist and the
 * three address sets (sovereign_ranges read from its file when the config
 * names one). Shared between threads; reference counted with atomics. A reload
 * builds a new one; the old one lives until its last user lets go.
 */
struct policy;

/*
 * Build from cfg. 0 and *out (one reference), or CH_EINVAL / CH_EIO /
 * CH_ENOMEM with one line per problem appended to err (list files:
 * "PATH:LINE: message\n").
 */
int policy_new(const struct config *cfg, struct policy **out, struct buf *err);
void policy_ref(struct policy *p);
void policy_unref(struct policy *p);
/* True when federation_domain_whitelist / sovereign_ranges is the word `any`. */
bool policy_any_name(const struct policy *p);
bool policy_any_address(const struct policy *p);

/*
 * May chappe talk to this server name? Exact entries match the whole host
 * (an entry with a port matches only that port, one without matches any
 * port); "*.suffix" matches any name ending in ".suffix" with at least one
 * label before it (so "*.gouv.fr" matches neither "gouv.fr" nor
 * "evilgouv.fr"). IP literals only match exact entries.
 */
struct policy_decision policy_check_name(const struct policy *p, const struct server_name *sn);
/* The same for unparsed text: invalid_server_name when it does not parse. */
struct policy_decision policy_check_name_str(const struct policy *p, const char *s, size_t n);
/*
 * May chappe connect to (or accept from) this address? In order:
 * unspecified (0.0.0.0, ::) -> deny address_unspecified;
 * in ip_range_blacklist and not in ip_range_whitelist -> deny address_blacklisted;
 * outside sovereign_ranges (unless `any`) -> deny address_not_sovereign;
 * else allow. IPv4-mapped IPv6 is checked as IPv4.
 */
struct policy_decision policy_check_ip(const struct policy *p, int family, const uint8_t *addr);
struct policy_decision policy_check_addr(const struct policy *p, const struct sockaddr *sa);

/* Counters of decisions by direction and reason, for metrics (relaxed atomics). */
enum policy_direction { POLICY_OUTBOUND = 0, POLICY_INBOUND, POLICY_DIRECTION_COUNT };
void policy_count(enum policy_direction d, enum policy_reason r);
uint64_t policy_counter(enum policy_direction d, enum policy_reason r);

/* Synapse's default ip_range_blacklist, NULL-terminated (used when the config has none). */
extern const char *const policy_default_blacklist[];

#endif
