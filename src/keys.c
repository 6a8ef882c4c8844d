/* keys.c -- the relay's own signed key document, served at /_matrix/key/v2/server. */
/* SPDX-License-Identifier: ISC */
#include <jansson.h>

#include "chappe/cjson.h"
#include "chappe/keys.h"
#include "chappe/util.h"

int keys_own_load(const struct config *cfg, struct keys_own *out, struct buf *err)
{
    out->cfg = cfg;
    out->keys = NULL;
    out->nkeys = 0;
    if (cfg->signing_key_path == NULL)
        return 0;
    int rc = sign_load_keys(cfg->signing_key_path, &out->keys, &out->nkeys, err);
    if (rc == 0 && out->nkeys == 0) {
        buf_appendf(err, "%s: no key in the file\n", cfg->signing_key_path);
        rc = CH_EINVAL;
    }
    return rc;
}

void keys_own_free(struct keys_own *k)
{
    if (k->keys)
        sign_keys_free(k->keys, k->nkeys);
    k->keys = NULL;
    k->nkeys = 0;
}

int keys_server_document(const struct keys_own *k, uint64_t now_ms, struct buf *out,
                         struct buf *err)
{
    if (k->nkeys == 0)
        return CH_ENOENT;
    const struct config *cfg = k->cfg;
    int rc = CH_ENOMEM;
    struct buf pub = BUF_INIT;
    json_t *doc = json_object(), *verify = json_object(), *old = json_object();
    if (doc == NULL || verify == NULL || old == NULL)
        goto out;
    for (size_t i = 0; i < k->nkeys; i++) {
        buf_reset(&pub);
        if (sign_public_b64(&k->keys[i], &pub) < 0)
            goto out;
        if (json_object_set_new(verify, k->keys[i].id,
                                json_pack("{s:s%}", "key", buf_data(&pub), pub.len)) < 0)
            goto out;
    }
    for (size_t i = 0; i < cfg->nold_signing_keys; i++) {
        const struct cfg_old_key *o = &cfg->old_signing_keys[i];
        if (json_object_set_new(
                old, o->id,
                json_pack("{s:s,s:I}", "key", o->key, "expired_ts", (json_int_t)o->expired_ts)) < 0)
            goto out;
    }
    uint64_t until = now_ms + cfg->key_refresh_interval_ms;
    if (json_object_set_new(doc, "server_name", json_string(cfg->server_name)) < 0 ||
        json_object_set(doc, "verify_keys", verify) < 0 ||
        json_object_set(doc, "old_verify_keys", old) < 0 ||
        json_object_set_new(doc, "valid_until_ts", json_integer((json_int_t)until)) < 0)
        goto out;
    /* Signed with every current key, as Synapse does (server-server API, "Publishing Keys"). */
    for (size_t i = 0; i < k->nkeys; i++) {
        rc = sign_json(doc, cfg->server_name, &k->keys[i], err);
        if (rc < 0)
            goto out;
    }
    rc = cjson_encode(doc, out, err);
out:
    buf_free(&pub);
    json_decref(doc);
    json_decref(verify);
    json_decref(old);
    return rc;
}
