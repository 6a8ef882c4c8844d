/* inbound.h -- the federation listener's role: requests in, through to the homeserver, responses
 * out. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_INBOUND_H
#define CHAPPE_INBOUND_H

#include "chappe/worker.h"

/* Accept one connection on a federation listener (fd < 0), or adopt one handed over (fd >= 0). */
void inbound_accept(struct listener *l, int fd);

/*
 * Called on a worker thread for every request whose X-Matrix signature
 * verified: server is up (it just sent a request), so a queue holding
 * transactions for it may retry now rather than at the end of its backoff.
 * Set once before the workers start; fn must be quick and thread-safe.
 */
typedef void (*inbound_peer_up_fn)(void *ud, const char *server);
void inbound_set_peer_up_hook(inbound_peer_up_fn fn, void *ud);

#endif
