/* keydoc.h -- validation of other servers' key documents (server-server API, "Retrieving server
 * keys"), fetched from the origin or through a notary, and co-signing for the notary role. Pure. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_KEYDOC_H
#define CHAPPE_KEYDOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "chappe/buf.h"
#include "chappe/policy.h"
#include "chappe/sign.h"

/* Keys kept from one document, verify_keys and old_verify_keys together; more is an error. */
#define KEYDOC_MAX_KEYS 32
/* "ed25519:" + version [a-zA-Z0-9_]{1,55} + NUL, as struct sign_key's id. */
#define KEYDOC_KEY_ID_MAX 64
/*
 * The longest a document is trusted: "Servers MUST use the lesser of this field
 * and 7 days into the future when determining if a key is valid"
 * (server-server API, "Publishing Keys", valid_until_ts).
 */
#define KEYDOC_MAX_VALIDITY_MS (7ULL * 24 * 3600 * 1000)

/* One ed25519 key of a document. */
struct keydoc_key {
    char id[KEYDOC_KEY_ID_MAX]; /* "ed25519:<version>" */
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    /*
     * From old_verify_keys: valid only for events signed before expired_ts,
     * never for requests (server-server API, "Publishing Keys").
     */
    bool old;
    uint64_t expired_ts; /* old keys only; 0 for current keys */
};

/* A validated key document. Release with keydoc_free. */
struct keydoc {
    char server_name[SERVER_NAME_MAX + 9]; /* exactly as in the document (== the expected name) */
    /* min(valid_until_ts of the document, now + KEYDOC_MAX_VALIDITY_MS); always > now. */
    uint64_t valid_until_ts;
    /* The current keys (verify_keys) first, then the old ones; at least one current key. */
    struct keydoc_key keys[KEYDOC_MAX_KEYS];
    size_t nkeys;
    size_t ncurrent; /* keys[0 .. ncurrent) are current (old == false) */
    size_t nignored; /* keys of other algorithms than ed25519, skipped */
    json_t *doc;     /* the parsed document, one reference: what a notary re-serves */
};

/*
 * Validate the body of a GET /_matrix/key/v2/server response from expect_server
 * (server-server API, "Publishing Keys"):
 * - a JSON object under cjson_parse's rules (no duplicate keys);
 * - server_name: a string equal, byte for byte, to expect_server (as Synapse
 *   compares it), which must itself be a valid server name;
 * - verify_keys: an object of "ed25519:<version>" -> {"key": base64 of 32 bytes},
 *   version [a-zA-Z0-9_]{1,55}, with at least one ed25519 key; ids of other
 *   algorithms are skipped and counted in nignored;
 * - old_verify_keys, optional: the same with an integer expired_ts >= 0; an id
 *   may not be both current and old;
 * - valid_until_ts: an integer after now_ms, capped at now_ms + 7 days;
 * - signatures.<server_name>: a valid signature by EVERY ed25519 key of
 *   verify_keys (Matrix appendices, "Checking for a Signature"; the document
 *   without signatures and unsigned is what is signed). chappe signs its own
 *   document so (keys_server_document), and so does Synapse. Signatures by
 *   other key ids, and by other servers (notaries), are not looked at.
 * Returns 0 and *out (caller calls keydoc_free); or, with one line appended to
 * err saying what is wrong and *out empty (keydoc_free is harmless on it):
 * CH_EINVAL for a malformed, mismatched or expired document (a signature that
 * is not base64 of 64 bytes included), CH_EPERM for a missing signature or one
 * that does not verify, CH_ENOMEM.
 */
int keydoc_parse(const char *body, size_t n, const char *expect_server, uint64_t now_ms,
                 struct keydoc *out, struct buf *err);

/* A notary trusted to vouch for other servers' keys, and its keys (id and pk are used). */
struct keydoc_notary {
    const char *name;
    const struct keydoc_key *keys;
    size_t nkeys;
};

/*
 * Check the notary's signature on a document from its server_keys list (server-
 * server API, "Querying Keys Through Another Server": "The notary server will
 * additionally sign the response"). Valid when signed by at least one of the
 * notary's keys and every signature by one of its keys that is present verifies
 * (as Synapse's _validate_perspectives_response). 0, CH_ENOENT (no signature by
 * any of the keys), CH_EPERM (one does not verify) or CH_EINVAL (malformed),
 * with one line appended to err.
 */
int keydoc_verify_notary(const json_t *doc, const struct keydoc_notary *notary, struct buf *err);

/*
 * Validate the body of a notary's POST /_matrix/key/v2/query or GET
 * /_matrix/key/v2/query/{serverName} response, {"server_keys": [doc, ...]}, and
 * keep every document for expect_server that passes keydoc_parse's checks and
 * keydoc_verify_notary. Documents for other servers are skipped silently; a
 * rejected document for expect_server is skipped with a line
 * "server_keys[I]: why" appended to err. Returns 0 and *docs, *ndocs >= 1 in
 * response order (caller calls keydoc_free_array); CH_ENOENT and *docs NULL
 * when no document is kept (err says why: the skipped ones, or that there was
 * none); CH_EINVAL when the body is not such an object; CH_ENOMEM.
 */
int keydoc_parse_query_response(const char *body, size_t n, const char *expect_server,
                                const struct keydoc_notary *notary, uint64_t now_ms,
                                struct keydoc **docs, size_t *ndocs, struct buf *err);

/*
 * The notary role: a deep copy of doc (a document validated by keydoc_parse)
 * signed as notary_name with each of keys, next to the signatures it has (the
 * origin's stay: Matrix appendices, "Signing JSON"; a previous signature by
 * the same key id is replaced). doc itself is not changed, so a cached
 * document can be shared. 0 and *out (a new reference), or a negative code
 * with err and *out NULL.
 */
int keydoc_cosign(const json_t *doc, const char *notary_name, const struct sign_key *keys,
                  size_t nkeys, json_t **out, struct buf *err);

/* The key with this id (current or old), or NULL. */
const struct keydoc_key *keydoc_find_key(const struct keydoc *d, const char *key_id);

/* Drop the document reference and empty d. */
void keydoc_free(struct keydoc *d);
/* keydoc_free on each, then free the array (NULL is allowed). */
void keydoc_free_array(struct keydoc *docs, size_t n);

#endif
