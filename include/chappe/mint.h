/* mint.h -- certificates minted at run time from the egress CA, for intercepted CONNECT tunnels. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_MINT_H
#define CHAPPE_MINT_H

#include <stdint.h>

#include "chappe/buf.h"
#include "chappe/config.h"
#include "chappe/tls.h"

/* Hosts whose servers one cache keeps; the least recently used goes first. */
#define MINT_CACHE_MAX 1024
/* A minted certificate is valid from an hour ago (clock skew) for this long ... */
#define MINT_VALID_S (7 * 86400)
/* ... and is minted again once less than this remains. */
#define MINT_RENEW_S 86400

/*
 * Process-wide and immutable once made: the egress CA (its certificates and
 * key as PEM) and one leaf key (EC P-256, generated at start) that every
 * minted certificate shares. Shared by all event loops, read only.
 */
struct mint;

/*
 * Read and check cfg->tls.egress_ca (cfg->tls.has_egress_ca must be true):
 * the key file must not be accessible by group or others; the first
 * certificate of the cert file is the CA that signs (CA:TRUE, key usage
 * allowing keyCertSign) and the key must match it; the others, if any, are
 * sent after it. A certificate is minted and verified once as a check. Main
 * thread, at start-up or reload. 0 and *out (owned by the caller, mint_free),
 * or CH_EINVAL / CH_EIO / CH_EPERM / CH_ENOENT / CH_ETLS / CH_ENOMEM with one
 * line per problem appended to err ("tls.egress_ca FILE: reason\n").
 */
int mint_new(const struct config *cfg, struct mint **out, struct buf *err);
/* Wipes the keys. Every mint_cache made from m must be freed first. */
void mint_free(struct mint *m);

/*
 * One event loop's minting state: its own parsed CA and leaf keys (mbedTLS key
 * contexts are not shared between threads), its own DRBG, and the servers it
 * minted, per host. Used on one thread only. Needs tls_global_init().
 */
struct mint_cache;

/* 0 and *out (owned by the caller, mint_cache_free), or CH_ENOMEM / CH_ETLS. m must outlive it. */
int mint_cache_new(struct mint *m, struct mint_cache **out);
/* Drops the cache's references; servers still held by connections live on. */
void mint_cache_free(struct mint_cache *c);

/*
 * A TLS server context presenting a certificate for host: a DNS name (letters,
 * digits, '-', at most 253 bytes, labels of 1 to 63 bytes, last label not all
 * digits) or an IPv4 / IPv6 literal without brackets, any case. Minted on first
 * use: subject CN=host, subjectAltName dNSName or iPAddress, serverAuth, valid
 * from an hour ago for MINT_VALID_S, a random 128-bit serial, signed with
 * SHA-256 by the egress CA; the chain sent is the leaf then the CA file's
 * certificates. Cached per host (lowercased, IP literals in canonical form)
 * and minted again when less than MINT_RENEW_S of validity remains. 0 and
 * *out (one reference, the caller's: tls_server_unref), or CH_EINVAL (host
 * empty, too long or not a host name), CH_ETLS, CH_ENOMEM with a line in err.
 */
int mint_server_for(struct mint_cache *c, const char *host, struct tls_server **out,
                    struct buf *err);

/* Certificates minted and lookups answered from the cache, so far (tests, metrics). */
void mint_cache_stats(const struct mint_cache *c, uint64_t *minted, uint64_t *hits);

#endif
