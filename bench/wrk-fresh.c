/* wrk-fresh.c -- LD_PRELOAD shim that makes wrk do a full TLS handshake on every connection. */
/* SPDX-License-Identifier: ISC */

/*
 * wrk keeps one SSL object per connection slot and calls SSL_clear() when it reconnects, which
 * keeps the last session: the next handshake is then an abbreviated one (RFC 5246 section 7.3,
 * resumption by ticket, RFC 5077, or by session id) whenever the server allows it. A federation
 * peer such as Synapse starts each connection with a fresh session, and the point of the
 * "handshake" workload is the cost of a full ECDHE-ECDSA handshake, so drop the session before
 * each handshake starts. Built by bench/proxy.sh:
 *     cc -shared -fPIC -O2 -o wrk-fresh.so bench/wrk-fresh.c -ldl
 * Declares the three libssl functions it needs itself: no OpenSSL headers required.
 */
#include <dlfcn.h>
#include <stddef.h>

struct ssl_st;

int SSL_connect(struct ssl_st *ssl);
int SSL_in_before(const struct ssl_st *ssl);
int SSL_set_session(struct ssl_st *ssl, void *session);

static int (*real_connect)(struct ssl_st *ssl);

__attribute__((constructor)) static void resolve(void)
{
    real_connect = (int (*)(struct ssl_st *))dlsym(RTLD_NEXT, "SSL_connect");
}

/* Same contract as OpenSSL's SSL_connect(); wrk calls it again after WANT_READ/WANT_WRITE. */
int SSL_connect(struct ssl_st *ssl)
{
    if (real_connect == NULL)
        return -1;
    if (SSL_in_before(ssl))
        SSL_set_session(ssl, NULL); /* NULL frees the kept session: the next hello has none */
    return real_connect(ssl);
}
