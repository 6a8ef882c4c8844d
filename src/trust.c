/* trust.c -- the reloadable snapshot of names, addresses, pins and notaries. */
/* SPDX-License-Identifier: ISC */
#include <stdlib.h>
#include <string.h>

#include "chappe/trust.h"
#include "chappe/util.h"

int trust_new(struct config *cfg, bool own, struct trust **out, struct buf *err)
{
    struct trust *t = calloc(1, sizeof(*t));
    int rc = t ? policy_new(cfg, &t->pol, err) : CH_ENOMEM;
    if (rc < 0) {
        free(t);
        if (own)
            config_free(cfg);
        return rc;
    }
    atomic_init(&t->refs, 1);
    t->cfg = cfg;
    t->owned = own ? cfg : NULL;
    *out = t;
    return 0;
}

void trust_ref(struct trust *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void trust_unref(struct trust *t)
{
    if (t == NULL || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_release) != 1)
        return;
    atomic_thread_fence(memory_order_acquire);
    policy_unref(t->pol);
    config_free(t->owned);
    free(t);
}

const struct cfg_pinned *trust_pinned(const struct trust *t, const char *server)
{
    for (size_t i = 0; i < t->cfg->npinned_keys; i++)
        if (strcmp(t->cfg->pinned_keys[i].server_name, server) == 0)
            return &t->cfg->pinned_keys[i];
    return NULL;
}

const struct cfg_verify_key *trust_pinned_key(const struct cfg_pinned *pin, const char *key_id)
{
    for (size_t i = 0; i < pin->nkeys; i++)
        if (strcmp(pin->keys[i].id, key_id) == 0)
            return &pin->keys[i];
    return NULL;
}
