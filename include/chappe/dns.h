/* dns.h -- asynchronous DNS with c-ares on a libuv loop: A/AAAA (and /etc/hosts), SRV, a TTL
 * cache. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_DNS_H
#define CHAPPE_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "chappe/buf.h"

struct config;

#define DNS_MAX_ADDRS 16
#define DNS_MAX_SRV   16

struct dns_srv {
    char target[256]; /* lowercased, no trailing dot */
    uint16_t port;
    uint16_t priority;
    uint16_t weight;
};

struct dns_result {
    /*
     * 0: answers below. CH_ENOENT: the name does not exist or has no record of
     * that type (NXDOMAIN / NODATA; an SRV target of "." also counts).
     * CH_ETIMEOUT: no server answered in time. CH_EIO: SERVFAIL, REFUSED, a
     * malformed answer, or another failure (why says which).
     */
    int status;
    const char *why; /* static text, NULL when status is 0 */
    /* Addresses (port 0): every AAAA answer then every A answer, in answer order. */
    struct sockaddr_storage addrs[DNS_MAX_ADDRS];
    size_t naddrs;
    /* SRV answers in the order to try them (RFC 2782: priority, then weighted random). */
    struct dns_srv srvs[DNS_MAX_SRV];
    size_t nsrvs;
    uint32_t ttl_s;  /* lowest TTL of the answers (negative answers: see dns.c), as cached */
    bool from_cache; /* served from this loop's cache */
    bool from_hosts; /* A/AAAA answered by /etc/hosts */
};

/* One resolver per event loop; not thread-safe. */
struct dns;

/*
 * Make a resolver on loop. cfg->dns_servers (when non-empty) replaces the
 * servers of /etc/resolv.conf. Search domains are never appended (server
 * names are absolute). 0 and *out, or CH_EINVAL / CH_ENOMEM / CH_EIO with the
 * reason appended to err.
 */
int dns_new(uv_loop_t *loop, const struct config *cfg, struct dns **out, struct buf *err);
/*
 * Cancel every pending query (no callbacks) and close the handles. The loop
 * must run afterwards to finish closing; memory is released then.
 */
void dns_free(struct dns *d);

typedef void (*dns_cb)(void *ud, const struct dns_result *r);
struct dns_query;

/*
 * Look up the AAAA and A records of host (a DNS name, lowercase, no trailing
 * dot), /etc/hosts first. The callback runs exactly once, never from inside
 * this call (a cache hit is delivered from the loop), unless dns_cancel is
 * called first. NULL on allocation failure (no callback then).
 */
struct dns_query *dns_lookup_addr(struct dns *d, const char *host, dns_cb cb, void *ud);
/* The same for the SRV records of name (e.g. "_matrix-fed._tcp.example.org"). */
struct dns_query *dns_lookup_srv(struct dns *d, const char *name, dns_cb cb, void *ud);
/* Forget a pending query: its callback will not run. */
void dns_cancel(struct dns_query *q);

/* Drop every cached answer (tests, reload). */
void dns_cache_clear(struct dns *d);

#endif
