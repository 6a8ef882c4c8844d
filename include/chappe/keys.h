/* keys.h -- the relay's own key server (GET /_matrix/key/v2/server); later, the notary and remote
 * keys. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_KEYS_H
#define CHAPPE_KEYS_H

#include <stdint.h>

#include "chappe/buf.h"
#include "chappe/config.h"
#include "chappe/sign.h"

/* The relay's signing keys, loaded once at start-up; read-only afterwards (shared by workers). */
struct keys_own {
    const struct config *cfg;
    struct sign_key *keys; /* NULL when no signing_key_path is configured */
    size_t nkeys;
};

/*
 * Load cfg->signing_key_path (refused when readable by group or others). A
 * missing signing_key_path is not an error: the relay then has no key server.
 * 0, or a negative code with the reason appended to err.
 */
int keys_own_load(const struct config *cfg, struct keys_own *out, struct buf *err);
void keys_own_free(struct keys_own *k);
/*
 * Append the relay's key document (server-server API, "Publishing Keys"):
 * server_name, verify_keys (every key of the key file), old_verify_keys (config
 * old_signing_keys), valid_until_ts = now_ms + key_refresh_interval, signed
 * with every current key, canonical JSON. 0, CH_ENOENT when there is no key,
 * or another negative code with err.
 */
int keys_server_document(const struct keys_own *k, uint64_t now_ms, struct buf *out,
                         struct buf *err);

#endif
