/* tls.h -- TLS 1.2 server sessions with mbedTLS over memory buffers (libuv fills and drains them).
 */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_TLS_H
#define CHAPPE_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <mbedtls/ssl.h>

#include "chappe/buf.h"
#include "chappe/config.h"

/*
 * Process-wide state, made once on the main thread before the workers start:
 * the entropy source and the session-ticket keys, shared by every worker so
 * that a ticket issued on one loop resumes on another (mbedTLS is built with
 * MBEDTLS_THREADING_C: the ticket context and its DRBG carry their own locks).
 * 0 or CH_ETLS.
 */
int tls_global_init(void);
void tls_global_free(void);

/*
 * An immutable, validated snapshot of the configured certificates: the PEM
 * bytes of each (chain, key) pair, checked on the main thread (files readable,
 * chain parses, key parses and matches the leaf). Shared by all workers;
 * reference counted with atomics. A reload builds a new one and, if it fails,
 * the old one stays in service.
 */
struct tls_material;

/*
 * Read and check every certificate of cfg->tls.certificates. 0 and *out (one
 * reference, owned by the caller), or CH_EINVAL/CH_EIO with one line per
 * problem appended to err ("cert FILE: reason\n").
 */
int tls_material_load(const struct config *cfg, struct tls_material **out, struct buf *err);
void tls_material_ref(struct tls_material *m);
void tls_material_unref(struct tls_material *m);
/* Number of certificates in the snapshot. */
size_t tls_material_count(const struct tls_material *m);

/*
 * One worker's server context, built from a material snapshot: its own parsed
 * certificates and keys (mbedTLS keys are not shared between threads), its own
 * DRBG, and an mbedtls_ssl_config fixed to TLS 1.2, ECDHE key exchange and
 * AES-GCM / ChaCha20-Poly1305 suites only, SNI choosing among the certificates
 * (exact name or one-label wildcard; the first certificate otherwise), session
 * tickets from tls_global. Single-threaded reference count: connections keep
 * the server they were accepted with, so a reload does not disturb them.
 */
struct tls_server;

/* 0 and *out (one reference), or CH_ENOMEM / CH_ETLS. Runs on the worker thread. */
int tls_server_new(struct tls_material *m, struct tls_server **out);
void tls_server_ref(struct tls_server *s);
void tls_server_unref(struct tls_server *s);

/* A server-side TLS session whose record layer reads `in` and writes `out`. */
struct tls_conn {
    mbedtls_ssl_context ssl;
    struct tls_server *srv; /* one reference, released by tls_conn_free */
    struct buf in;          /* ciphertext received from the socket, not yet consumed */
    struct buf out;         /* ciphertext produced, for the owner to write to the socket */
    bool handshake_done;
    bool resumed;   /* the handshake resumed a session (ticket) */
    char sni[256];  /* SNI host name sent by the client, "" if none */
    int last_error; /* last mbedTLS error code, for tls_conn_strerror */
};

/* 0, or CH_ENOMEM / CH_ETLS. Takes a reference on srv. */
int tls_conn_init(struct tls_conn *c, struct tls_server *srv);
void tls_conn_free(struct tls_conn *c);
/* Append ciphertext from the socket. 0 or CH_ENOMEM. */
int tls_conn_feed(struct tls_conn *c, const char *p, size_t n);
/* Drive the handshake: 0 when done, CH_EAGAIN for more input, CH_ETLS on failure. Output may appear
 * in out. */
int tls_conn_handshake(struct tls_conn *c);
/*
 * Decrypt all complete records into plain (appended). 0 when it needs more
 * input (plain may have grown), CH_EEOF on close_notify, CH_ETLS on failure.
 * Output (alerts, tickets) may appear in out.
 */
int tls_conn_read(struct tls_conn *c, struct buf *plain);
/* Encrypt n bytes into out (as records). 0, CH_ENOMEM or CH_ETLS. */
int tls_conn_write(struct tls_conn *c, const char *p, size_t n);
/* Queue a close_notify alert into out. */
void tls_conn_close_notify(struct tls_conn *c);
/* Name the client asked for with SNI, or NULL. Valid while c lives. */
const char *tls_conn_sni(const struct tls_conn *c);
/* "TLSv1.2", cipher suite name, and whether the session was resumed. */
const char *tls_conn_cipher(const struct tls_conn *c);
bool tls_conn_resumed(const struct tls_conn *c);
/* Human-readable text for c->last_error. */
const char *tls_conn_strerror(const struct tls_conn *c);

#endif
