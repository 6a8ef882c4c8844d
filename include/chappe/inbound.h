/* inbound.h -- the federation listener's role: requests in, through to the homeserver, responses
 * out. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_INBOUND_H
#define CHAPPE_INBOUND_H

#include "chappe/worker.h"

/* Accept one connection on a federation listener (fd < 0), or adopt one handed over (fd >= 0). */
void inbound_accept(struct listener *l, int fd);

#endif
