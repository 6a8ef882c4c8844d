/* trust.h -- the reloadable part of the configuration: who may federate, from where, and with
 * which keys. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_TRUST_H
#define CHAPPE_TRUST_H

#include <stdatomic.h>
#include <stdbool.h>

#include "chappe/buf.h"
#include "chappe/config.h"
#include "chappe/policy.h"

/*
 * An immutable snapshot of federation_domain_whitelist, the address lists
 * (the policy), pinned_keys and trusted_key_servers. SIGHUP builds a new one
 * and hands it to every thread; a request keeps the snapshot it started with
 * until it ends, so a reload never changes the rules under a request in
 * flight. Reference counted with atomics.
 */
struct trust {
    atomic_uint refs;
    const struct config *cfg; /* pinned_keys, trusted_key_servers (and the policy's source) */
    struct config *owned;     /* cfg when the snapshot owns it (a reload), else NULL */
    struct policy *pol;       /* one reference */
};

/*
 * Build a snapshot from cfg: the policy is built (list files read). own: the
 * snapshot frees cfg with itself. 0 and *out (one reference), or a negative
 * code with the reasons appended to err (cfg is then freed when own).
 */
int trust_new(struct config *cfg, bool own, struct trust **out, struct buf *err);
void trust_ref(struct trust *t);
void trust_unref(struct trust *t);

/* The pinned keys of server (normalised name), or NULL. */
const struct cfg_pinned *trust_pinned(const struct trust *t, const char *server);
/* The pinned key key_id of pin, or NULL. */
const struct cfg_verify_key *trust_pinned_key(const struct cfg_pinned *pin, const char *key_id);

#endif
