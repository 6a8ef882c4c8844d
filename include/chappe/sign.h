/* sign.h -- ed25519 signing keys in Synapse's file format, and signed JSON (Matrix appendices,
 * "Signing JSON"). */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_SIGN_H
#define CHAPPE_SIGN_H

#include <stddef.h>

#include <jansson.h>
#include <sodium.h>

#include "chappe/buf.h"

/* One ed25519 signing key. Wipe with sign_keys_free. */
struct sign_key {
    char id[64]; /* "ed25519:<version>", version [a-zA-Z0-9_]+ */
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    unsigned char sk[crypto_sign_SECRETKEYBYTES];
};

/*
 * Append one new key line "ed25519 a_XXXX <unpadded base64 seed>\n" (Synapse's
 * signing key format; version "a_" and four random alphanumerics, as Synapse's
 * generate_signing_key does). 0 or a negative code.
 */
int sign_keygen(struct buf *out);
/*
 * Write a new key to path, mode 0600, refusing to overwrite an existing file
 * (CH_EEXIST). 0 or a negative code; *why says what failed.
 */
int sign_keygen_file(const char *path, const char **why);

/*
 * Parse key lines "ed25519 <version> <base64 seed>" (one a line; blank lines
 * ignored; the seed may be padded or not, 32 bytes). 0 and *keys, *n (caller
 * frees with sign_keys_free), or CH_EINVAL with "line N: why" appended to err.
 */
int sign_parse_keys(const char *text, size_t len, struct sign_key **keys, size_t *n,
                    struct buf *err);
/*
 * Load a key file: refuses (CH_EPERM) a file readable or writable by group or
 * others, with a message saying so and how to fix it (chmod 600). Then as
 * sign_parse_keys; errors are prefixed with the path. 0 or a negative code.
 */
int sign_load_keys(const char *path, struct sign_key **keys, size_t *n, struct buf *err);
void sign_keys_free(struct sign_key *keys, size_t n);
/* Append the unpadded base64 public key. */
int sign_public_b64(const struct sign_key *key, struct buf *out);

/*
 * Sign a JSON object in place (Matrix appendices, "Signing JSON"): remove
 * "signatures" and "unsigned", canonicalize, sign with ed25519, put the
 * unpadded base64 signature at signatures.<server_name>.<key id>, restore
 * "unsigned" and keep every other server's signatures. 0, or CH_EINVAL with
 * err (the value cannot be canonical, or is not an object).
 */
int sign_json(json_t *obj, const char *server_name, const struct sign_key *key, struct buf *err);
/*
 * Verify signatures.<server_name>.<key_id> of obj against the 32-byte public
 * key pk. 0 when valid; CH_ENOENT when there is no such signature; CH_EPERM
 * when it does not verify; CH_EINVAL when obj cannot be canonical or the
 * signature is not valid base64 of 64 bytes. err says which.
 */
int sign_verify_json(const json_t *obj, const char *server_name, const char *key_id,
                     const unsigned char pk[crypto_sign_PUBLICKEYBYTES], struct buf *err);

struct xmatrix;

/*
 * Sign a federation request (server-server API, "Request Authentication") as
 * origin with key: append the Authorization value "X-Matrix origin=...,key=...,
 * sig=...,destination=..." to out. uri is the path and query as sent; content
 * is the parsed body or NULL. 0 or a negative code with err.
 */
int sign_request(struct buf *out, const struct sign_key *key, const char *method, const char *uri,
                 const char *origin, const char *destination, const json_t *content,
                 struct buf *err);
/*
 * Verify the X-Matrix header x of a received request with the origin's public
 * key pk. destination is the receiver's own server name: it is what the
 * signature must cover, whatever the header says (as Synapse does; the caller
 * checks x->destination against it). Returns as sign_verify_json.
 */
int sign_verify_request(const struct xmatrix *x, const char *method, const char *uri,
                        const char *destination, const json_t *content,
                        const unsigned char pk[crypto_sign_PUBLICKEYBYTES], struct buf *err);
/*
 * As sign_verify_request, from the raw body bytes (n == 0: no content). When
 * the body is already canonical (cjson_is_canonical: Synapse sends it so) the
 * signed object's bytes are assembled around it without parsing; otherwise
 * the body is parsed (CH_EINVAL for a body that is not JSON) and the general
 * path is taken. Both give the same answer.
 */
int sign_verify_request_body(const struct xmatrix *x, const char *method, const char *uri,
                             const char *destination, const char *body, size_t n,
                             const unsigned char pk[crypto_sign_PUBLICKEYBYTES], struct buf *err);

#endif
