/* config.h -- the YAML configuration, parsed once into a typed struct. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_CONFIG_H
#define CHAPPE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "chappe/buf.h"
#include "chappe/cidr.h"
#include "chappe/log.h"

#define CONFIG_DEFAULT_PATH "etc/chappe.yaml"

enum listener_type { LISTENER_FEDERATION = 0, LISTENER_EGRESS, LISTENER_ADMIN, LISTENER_CLIENT };

/* A socket address as written in the config ("127.0.0.1:8448", "[::1]:8448", "0.0.0.0:8448"). */
struct cfg_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64]; /* normalised text form, for logs and check-config */
};

struct cfg_listener {
    enum listener_type type;
    struct cfg_addr *binds;
    size_t nbinds;
    bool tls;         /* default: true for federation, false otherwise */
    char *token_path; /* admin only: a file holding the bearer token that lets
                         non-loopback peers in; NULL: loopback peers only */
};

struct cfg_cert {
    char *cert; /* PEM file: the certificate chain, leaf first */
    char *key;  /* PEM file: the private key */
};

/* An http:// upstream, resolved once at load time (start-up or reload, never on a loop). */
struct cfg_upstream {
    char *url;       /* as written, e.g. "http://127.0.0.1:8008" */
    char *host;      /* host part without brackets, e.g. "127.0.0.1", "::1", "localhost" */
    uint16_t port;   /* default 80 */
    char *authority; /* host:port (IPv6 bracketed), for a Host header when the client sent none */
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

struct cfg_homeserver {
    char *server_name; /* lowercased Matrix server name, may carry ":port" */
    struct cfg_upstream upstream;
    char *egress_secret_path; /* optional (egress issue) */
};

/* A key the relay signed with before (Synapse's old_signing_keys): published, never used. */
struct cfg_old_key {
    char *id;            /* "ed25519:<version>" */
    char *key;           /* unpadded base64 public key, 32 bytes decoded */
    uint64_t expired_ts; /* ms since the epoch */
};

struct cfg_limits {
    uint64_t max_header_bytes;            /* default 16KiB: request/response head, else 431 / 502 */
    uint64_t max_body_bytes;              /* default 13107200 (12.5 MiB): request body, else 413 */
    uint64_t header_timeout_ms;           /* default 10s: from first byte to the end of the head */
    uint64_t body_timeout_ms;             /* default 60s: inactivity while reading a request body */
    uint64_t idle_timeout_ms;             /* default 60s: keep-alive idle between requests */
    uint64_t tls_handshake_timeout_ms;    /* default 10s */
    uint64_t upstream_connect_timeout_ms; /* default 5s, then 504 */
    uint64_t upstream_timeout_ms; /* default 60s: upstream inactivity while awaiting/reading a
                                     response, then 504 */
    uint64_t
        upstream_idle_timeout_ms; /* default 30s: pooled keep-alive connection lifetime when idle */
    uint64_t upstream_keepalive;  /* default 128: idle upstream connections kept per upstream per
                                     worker */
    uint64_t drain_timeout_ms;    /* default 30s: SIGTERM grace for in-flight requests */
    uint64_t max_connections;     /* default 10000 per worker: further accepts are closed at once */
    /* outbound federation (client.h, resolve.h) */
    uint64_t outbound_connect_timeout_ms; /* default 10s: TCP connect to a remote server */
    uint64_t outbound_tls_timeout_ms;     /* default 10s: TLS handshake with a remote server */
    uint64_t outbound_timeout_ms; /* default 60s: inactivity while awaiting/reading a response */
    uint64_t outbound_idle_timeout_ms; /* default 60s: pooled idle connection lifetime */
    uint64_t outbound_keepalive;    /* default 16: idle connections kept per (address, TLS name) */
    uint64_t well_known_timeout_ms; /* default 10s: a whole .well-known fetch, redirects included */
    /* default 30s: after fetching a server's keys (or failing to), the least time before the
     * next fetch that an unknown or expired key id may cause; failures back off from it,
     * doubling up to an hour */
    uint64_t key_refetch_interval_ms;
};

/* A prefix from the config or a list file, with where it was written ("FILE:LINE:COL"). */
struct cfg_cidr {
    struct cidr cidr;
    char *label;
};

/* An address list key: absent, the word `any`, a list file path, or a YAML list of CIDRs. */
struct cfg_ranges {
    bool present;           /* written in the config */
    bool any;               /* the word `any` (sovereign_ranges only) */
    char *file;             /* a list file (one CIDR a line, '#' comments), read by policy_new */
    struct cfg_cidr *items; /* a YAML list */
    size_t nitems;
    char *where; /* "FILE:LINE:COL" of the value, for messages */
};

/* An ed25519 verify key given in the config: "ed25519:<version>" and its 32 bytes. */
struct cfg_verify_key {
    char *id;
    unsigned char pk[32];
    char *label; /* "FILE:LINE:COL" */
};

/* pinned_keys: a server's keys fixed by the operator, never fetched. */
struct cfg_pinned {
    char *server_name; /* normalised (server_name_parse) */
    struct cfg_verify_key *keys;
    size_t nkeys;
};

/* trusted_key_servers (Synapse's format): a notary and the keys its answers must be signed with. */
struct cfg_notary {
    char *server_name; /* normalised */
    struct cfg_verify_key *keys;
    size_t nkeys;
};

/* A federation_domain_whitelist entry: an exact server name, or "*.suffix". Lowercased. */
struct cfg_name_rule {
    char *pattern;
    char *label; /* "FILE:LINE:COL" */
};

/* inbound_source_policy: the address rules applied to the TCP peer of inbound connections. */
enum source_policy {
    SOURCE_POLICY_LOG = 0, /* default: a denied peer is logged and counted, then served */
    SOURCE_POLICY_ENFORCE, /* a denied peer's connection is closed at once */
    SOURCE_POLICY_OFF
};

struct config {
    char *path;             /* the file this was loaded from */
    char *server_name;      /* required: the relay's own Matrix server name */
    char *signing_key_path; /* the relay's key (Synapse format); without it no key server */
    struct cfg_old_key *old_signing_keys;
    size_t nold_signing_keys;
    uint64_t key_refresh_interval_ms; /* default 1d: valid_until_ts = now + this */
    struct cfg_listener *listeners;
    size_t nlisteners;
    struct {
        struct cfg_cert *certificates; /* SNI chooses; the first is the default */
        size_t ncertificates;
        bool has_egress_ca;
        struct cfg_cert egress_ca;
    } tls;
    struct cfg_homeserver *homeservers;
    size_t nhomeservers;
    struct cfg_limits limits;
    /* policy (policy.h): federation_domain_whitelist and sovereign_ranges are required */
    bool federation_any; /* federation_domain_whitelist: any */
    struct cfg_name_rule *federation_domain_whitelist;
    size_t nfederation_domain_whitelist;
    struct cfg_ranges sovereign_ranges;   /* required: a list, a file, or `any` */
    struct cfg_ranges ip_range_blacklist; /* absent: Synapse's defaults; 0.0.0.0 and :: always */
    struct cfg_ranges ip_range_whitelist; /* overrides the blacklist (not sovereign_ranges) */
    /* outbound TLS and DNS */
    bool federation_verify_certificates; /* default true; false logs a warning */
    char **federation_custom_ca_list;    /* PEM files trusted in addition to the system bundle */
    size_t nfederation_custom_ca_list;
    char **dns_servers; /* "IP" or "IP:PORT" / "[IPv6]:PORT" normalised as "IP:PORT"; empty:
                           resolv.conf */
    size_t ndns_servers;
    enum source_policy inbound_source_policy;
    struct cfg_pinned *pinned_keys;
    size_t npinned_keys;
    struct cfg_notary *trusted_key_servers;
    size_t ntrusted_key_servers;
    /* storage (store.h) and the outbound transaction queue (queue.h, sender.h) */
    struct {
        char *path;                         /* default "var/queue" (DESIGN.md: queue.path) */
        uint64_t max_bytes;                 /* default 1GiB: every queued transaction */
        uint64_t max_bytes_per_destination; /* default min(256MiB, max_bytes) */
        uint64_t map_size;       /* default max_bytes + max_bytes/4 + 64MiB: the LMDB map */
        uint64_t max_age_ms;     /* default 7d: older undelivered transactions go to dead */
        uint64_t max_in_flight;  /* default 64: deliveries at once, all destinations */
        uint64_t retry_min_ms;   /* default 5s: the first backoff */
        double retry_multiplier; /* default 2 */
        uint64_t retry_max_ms;   /* default 1h */
        bool group_commit; /* default true; false: one durable commit per write (benchmarks) */
    } queue;
    unsigned workers;         /* event-loop threads, 1..64; default (absent): number of cores */
    char *access_log;         /* "-" (stdout, default), "off", or a file path */
    enum log_level log_level; /* default info */
};

/*
 * Load and validate a configuration file. On success returns 0 and *out (the
 * caller owns it: config_free). On failure returns CH_EINVAL (or CH_EIO when
 * the file cannot be read) and appends to errors one line per problem, each
 * "FILE:LINE:COL: message\n" (1-based), as many as could be found.
 */
int config_load(const char *path, struct config **out, struct buf *errors);
void config_free(struct config *cfg);
/* Print the effective configuration (defaults filled in) as YAML. */
void config_print(const struct config *cfg, FILE *f);
const char *config_listener_type_name(enum listener_type t);

#endif
