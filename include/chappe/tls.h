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
/*
 * A one-pair snapshot from memory (a certificate minted at run time): chain_pem
 * (leaf first) and key_pem, checked as tls_material_load checks a file pair
 * (the chain parses, the key parses and matches the leaf). The bytes are
 * copied; trailing NULs are ignored. label names the pair in messages where a
 * file name would ("cert LABEL: reason\n" appended to err). 0 and *out (one
 * reference, owned by the caller), or CH_EINVAL / CH_ENOMEM.
 */
int tls_material_from_pem(const char *chain_pem, size_t chain_len, const char *key_pem,
                          size_t key_len, const char *label, struct tls_material **out,
                          struct buf *err);
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

/*
 * The client side (outbound federation): one per event loop (or per CLI
 * command), built and used on that thread. TLS 1.2 with the same suites as the
 * server; certificates verified against the system CA bundle
 * (/etc/ssl/certs/ca-certificates.crt) plus cfg->federation_custom_ca_list.
 * With cfg->federation_verify_certificates false the chain and name are not
 * enforced (the caller logs a warning per connection: tls_client_verifies).
 * Single-threaded reference count.
 */
struct tls_client;

/*
 * 0 and *out (one reference), or CH_EIO / CH_EINVAL / CH_ETLS / CH_ENOMEM with
 * one line per problem appended to err ("federation_custom_ca_list FILE:
 * reason\n"). A missing system bundle is not an error when custom CAs are
 * given (or verification is off); with neither it is.
 */
int tls_client_new(const struct config *cfg, struct tls_client **out, struct buf *err);
void tls_client_ref(struct tls_client *cl);
void tls_client_unref(struct tls_client *cl);
bool tls_client_verifies(const struct tls_client *cl);

/* A TLS session (server or client side) whose record layer reads `in` and writes `out`. */
struct tls_conn {
    mbedtls_ssl_context ssl;
    struct tls_server *srv; /* server side: one reference, released by tls_conn_free */
    struct tls_client *cli; /* client side: one reference, released by tls_conn_free */
    /* client side: the name the certificate must be valid for */
    char expect_name[256]; /* DNS name (also sent as SNI), or IP literal text (no SNI) */
    int expect_family;     /* 0 for a DNS name, 4 or 6 for an IP literal */
    unsigned char expect_ip[16];
    struct buf in;  /* ciphertext received from the socket, not yet consumed */
    struct buf out; /* ciphertext produced, for the owner to write to the socket */
    bool handshake_done;
    bool resumed;   /* the handshake resumed a session (ticket) */
    char sni[256];  /* SNI host name sent by the client, "" if none */
    int last_error; /* last mbedTLS error code, for tls_conn_strerror */
};

/* 0, or CH_ENOMEM / CH_ETLS. Takes a reference on srv. */
int tls_conn_init(struct tls_conn *c, struct tls_server *srv);
/*
 * Client side. name is what the certificate must be valid for: a DNS name
 * (sent as SNI, matched against the subjectAltName dNSNames, one-label
 * wildcards allowed, or the CN when there are none), or, when ip_family is 4
 * or 6, an IP literal whose bytes are ip (no SNI is sent; an iPAddress
 * subjectAltName must equal it). tls_conn_handshake then fails with CH_ETLS
 * when the chain does not verify or the name does not match (unless
 * verification is off), and tls_conn_strerror says why ("certificate has
 * expired", "certificate not issued by a trusted CA", "certificate is not
 * valid for NAME", ...). 0, or CH_ENOMEM / CH_ETLS. Takes a reference on cl.
 */
int tls_conn_init_client(struct tls_conn *c, struct tls_client *cl, const char *name, int ip_family,
                         const unsigned char *ip);
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
