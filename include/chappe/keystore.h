/* keystore.h -- remote servers' verify keys and signed key documents, kept in the store. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_KEYSTORE_H
#define CHAPPE_KEYSTORE_H

#include <stdint.h>

#include "chappe/buf.h"
#include "chappe/store.h"

/*
 * What keystore keeps is what the caller validated (signatures, names, times
 * are checked before anything is stored, by the key fetcher and the key
 * document validator): it stores and returns records faithfully, and refuses
 * on read a record it cannot decode (CH_EPROTO), never guessing.
 *
 * `keys`: server_name "\0" key_id -> one key record (see keystore.c for the
 * byte layout). `keydocs`: server_name -> the latest validated key document.
 * Pinned keys are not stored: they come from the configuration.
 */

#define KEYSTORE_NAME_MAX   263 /* a server name: a 255-byte host, IPv6 brackets, ":65535" */
#define KEYSTORE_KEY_ID_MAX 128 /* "ed25519:" and the version; Synapse's are far shorter */
#define KEYSTORE_PUBKEY_LEN 32  /* an ed25519 public key */

/* Where a key came from. The values are stored on disk: never renumber. */
enum keystore_source {
    KEYSTORE_SRC_DIRECT = 1, /* the server's own /_matrix/key/v2/server */
    KEYSTORE_SRC_NOTARY = 2, /* a notary's /_matrix/key/v2/query (notary names it) */
};

/* One verify key of one server. */
struct keystore_key {
    char key_id[KEYSTORE_KEY_ID_MAX + 1]; /* "ed25519:abc" */
    uint8_t public_key[KEYSTORE_PUBKEY_LEN];
    uint64_t valid_until_ts; /* ms since the epoch, from the key document */
    uint64_t fetched_at;     /* ms since the epoch, when chappe got the document */
    uint64_t expired_ts;     /* 0: a current key (verify_keys); else from old_verify_keys */
    enum keystore_source source;
    char notary[KEYSTORE_NAME_MAX + 1]; /* the notary's server name; "" when direct */
};

/* "direct", "notary", or "unknown". */
const char *keystore_source_name(enum keystore_source src);

/*
 * Read the key key_id of server into *out (all fields, key_id included), in a
 * read transaction of its own on the calling thread (loop threads too). 0,
 * CH_ENOENT when there is none, CH_EPROTO when the stored record is malformed
 * (wrong length, version or source: *out is then unspecified), CH_EINVAL for
 * an empty or over-long name or key id, or CH_EIO.
 */
int keystore_get(struct store *s, const char *server, const char *key_id, struct keystore_key *out);
/* The same inside a transaction the caller holds (read or write). */
int keystore_get_txn(MDB_txn *txn, const struct store *s, const char *server, const char *key_id,
                     struct keystore_key *out);

/*
 * Write (or replace) the key k->key_id of server, inside a store_write_fn.
 * 0, CH_EINVAL (empty or over-long name, key id or notary, an unknown source,
 * a notary name given with a direct source or missing with a notary one), or
 * the mdb_put error as it is (MDB_MAP_FULL...): return it from the
 * store_write_fn unchanged, the store translates it.
 */
int keystore_put_txn(MDB_txn *txn, const struct store *s, const char *server,
                     const struct keystore_key *k);
/* Delete the key key_id of server, inside a store_write_fn. 0, CH_EINVAL, or the mdb_del error
 * as it is (MDB_NOTFOUND when there was none). */
int keystore_del_txn(MDB_txn *txn, const struct store *s, const char *server, const char *key_id);

/*
 * Called for each stored key in order (server name, then key id, bytewise).
 * status 0: k is complete. status CH_EPROTO: the record (or its database key)
 * is malformed; only server and k->key_id are meaningful, as far as they
 * could be read. Return 0 to go on, anything else to stop (keystore_list
 * returns it). Runs inside a read transaction: be quick, do not write.
 */
typedef int (*keystore_each_fn)(void *ud, const char *server, const struct keystore_key *k,
                                int status);

/*
 * Walk the keys of server (exactly that name), or of every server when server
 * is NULL, for `chappe keys list`. 0 when the walk ended, the callback's
 * non-zero return when it stopped it, CH_EINVAL (over-long server), or CH_EIO.
 */
int keystore_list(struct store *s, const char *server, keystore_each_fn fn, void *ud);

/* The metadata kept with a key document. */
struct keystore_doc {
    uint64_t fetched_at;     /* ms since the epoch, when chappe got the document */
    uint64_t valid_until_ts; /* the document's own valid_until_ts */
};

/*
 * Read the latest key document of server: *meta and the JSON text appended to
 * json (exactly the bytes stored, not NUL-terminated). 0, CH_ENOENT,
 * CH_EPROTO (malformed record: nothing appended), CH_EINVAL (bad name),
 * CH_ENOMEM, or CH_EIO. A read transaction of its own on the calling thread.
 */
int keystore_get_doc(struct store *s, const char *server, struct keystore_doc *meta,
                     struct buf *json);
/* The same inside a transaction the caller holds. */
int keystore_get_doc_txn(MDB_txn *txn, const struct store *s, const char *server,
                         struct keystore_doc *meta, struct buf *json);
/*
 * Write (or replace) the key document of server, inside a store_write_fn: the
 * JSON bytes as given (non-empty). 0, CH_EINVAL, or the mdb_put error as it is.
 */
int keystore_put_doc_txn(MDB_txn *txn, const struct store *s, const char *server,
                         const struct keystore_doc *meta, struct slice json);

#endif
