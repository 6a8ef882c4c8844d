/* egress.h -- the egress listener's role: the fronted homeservers' outbound federation requests,
 * checked against the policy and sent on through the outbound client. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_EGRESS_H
#define CHAPPE_EGRESS_H

#include <sodium.h>

#include "chappe/buf.h"
#include "chappe/config.h"
#include "chappe/worker.h"

/*
 * The homeservers' egress secrets (homeservers[].egress_secret_path), kept as
 * BLAKE2b-256 hashes so that a presented token is compared in constant time
 * whatever its length. Loaded once at start-up; read-only afterwards.
 */
struct egress_secrets {
    size_t n; /* one per homeserver, same order */
    unsigned char (*hash)[crypto_generichash_BYTES];
};

/*
 * Load every homeserver's secret: a file of mode 0600 (or stricter) holding
 * at least 16 bytes (a trailing newline is not part of it). Required for
 * every homeserver when an egress listener is configured. 0, or a negative
 * code with one line per problem appended to err.
 */
int egress_secrets_load(const struct config *cfg, struct egress_secrets *out, struct buf *err);
void egress_secrets_free(struct egress_secrets *s);
/* The homeserver whose secret token is (constant time), or -1. */
int egress_secrets_match(const struct egress_secrets *s, const char *token, size_t len);

/* Accept one connection on an egress listener (fd < 0), or adopt one handed over (fd >= 0). */
void egress_accept(struct listener *l, int fd);

#endif
