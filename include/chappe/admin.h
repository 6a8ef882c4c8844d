/* admin.h -- the admin listener's role: the queue's operator API and Prometheus /metrics. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_ADMIN_H
#define CHAPPE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <sodium.h>

#include "chappe/buf.h"
#include "chappe/config.h"
#include "chappe/worker.h"

/*
 * The admin listeners' bearer tokens (listeners[].token_path), kept as
 * BLAKE2b-256 hashes so that a presented token is compared in constant time
 * whatever its length. One slot per configured listener, same order; only
 * admin listeners with a token_path have one set.
 */
struct admin_tokens {
    size_t n;
    struct admin_token {
        bool set;
        unsigned char hash[crypto_generichash_BYTES];
    } * t;
};

/*
 * Read every admin listener's token: a file of mode 0600 (or stricter)
 * holding at least 16 printable ASCII bytes without spaces (a trailing
 * newline is not part of it). 0 and *out (free with admin_tokens_free), or a
 * negative code with one line per problem appended to err. The admin role
 * reads them itself on first need; main may call this at start-up (and
 * check-config) so that a bad token file is refused before the listeners
 * open.
 */
int admin_tokens_load(const struct config *cfg, struct admin_tokens *out, struct buf *err);
void admin_tokens_free(struct admin_tokens *t);

/* Who may use the admin API. */
enum admin_access {
    ADMIN_ACCESS_OK = 0,
    ADMIN_ACCESS_MISSING_TOKEN, /* 401 M_MISSING_TOKEN: not on loopback, no token presented */
    ADMIN_ACCESS_BAD_TOKEN,     /* 401 M_UNAUTHORIZED: a token that is not the listener's */
    ADMIN_ACCESS_FORBIDDEN,     /* 403 M_FORBIDDEN: not on loopback, and no token_path */
};

/* 127.0.0.0/8, ::1, or an IPv4-mapped ::ffff:127.x.y.z. */
bool admin_is_loopback(const struct sockaddr *sa);

/*
 * The access decision. peer: the TCP peer. authorization: the request's
 * Authorization value (NULL when absent). token_hash: the listener's token
 * hash (NULL without token_path). A request that presents a token must
 * present the listener's ("Bearer TOKEN", constant-time compare), loopback
 * or not; without one, loopback peers are served and the others need one
 * (or, without token_path, are refused). With no token_path an Authorization
 * header is not looked at.
 */
enum admin_access admin_peer_allowed(const struct sockaddr *peer, const struct slice *authorization,
                                     const unsigned char *token_hash);

/* Accept one connection on an admin listener (fd < 0), or adopt one handed over (fd >= 0). */
void admin_accept(struct listener *l, int fd);

#endif
