/* client.h -- outbound HTTPS/1.1 to federation servers: policy-checked connect, verified TLS,
 * keep-alive pool, streamed responses. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_CLIENT_H
#define CHAPPE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "chappe/buf.h"
#include "chappe/http.h"
#include "chappe/policy.h"

struct config;

/*
 * One concrete place to send a request to, as server discovery (resolve.h)
 * found it: the address and port to connect to, the Host header, and the name
 * the certificate must be valid for.
 */
struct client_target {
    struct sockaddr_storage addr; /* address and port; AF_INET or AF_INET6 */
    socklen_t addrlen;
    char host[SERVER_NAME_MAX + 9];     /* Host header value */
    char tls_name[SERVER_NAME_MAX + 1]; /* DNS name (sent as SNI) or IP literal text (no SNI) */
    int tls_ip_family;                  /* 0: tls_name is a DNS name; 4 or 6: an IP literal */
    uint8_t tls_ip[16];                 /* the IP literal's bytes when tls_ip_family != 0 */
    /* A place the operator configured (a fronted homeserver's upstream, the relay's own
     * federation listener): not subject to the address policy. */
    bool local;
    bool plain; /* http:// without TLS (a fronted homeserver's upstream; local only) */
};

/* "203.0.113.5:8448" or "[2001:db8::1]:8448"; returns out. cap >= 64 is enough. */
const char *client_format_addr(const struct sockaddr *sa, char *out, size_t cap);

/*
 * The outbound client of one event loop (or of one CLI command): the TLS
 * client context, the policy snapshot, and the pool of idle keep-alive
 * connections keyed by (address and port, TLS name). Not thread-safe.
 */
struct client;

/*
 * 0 and *out, or CH_E* with the reason appended to err (CA files). Takes a
 * reference on pol. Timeouts and pool sizes come from cfg->limits
 * (outbound_connect_timeout, outbound_tls_timeout, outbound_timeout,
 * outbound_idle_timeout, outbound_keepalive); cfg must outlive the client.
 */
int client_new(uv_loop_t *loop, const struct config *cfg, struct policy *pol, struct client **out,
               struct buf *err);
/*
 * Abort every exchange still in flight (silently: no callbacks) and close
 * every pooled connection. The loop must run afterwards to finish closing;
 * memory is released then.
 */
void client_free(struct client *c);
/* Use a new policy snapshot for connections made from now on (reload). Takes a reference. */
void client_set_policy(struct client *c, struct policy *pol);
struct policy *client_policy(const struct client *c);

struct client_request {
    const char *method; /* "GET", "PUT", ... */
    const char *target; /* origin-form request-target: "/_matrix/federation/v1/version" */
    /* Extra header lines, each "Name: value\r\n" (Authorization, Content-Type, ...), or NULL.
     * The client writes Host, Content-Length (when there is a body), and nothing else. */
    const char *headers;
    const char *body; /* NULL: no body */
    size_t body_len;
};

/* What the owner of an exchange hears. Every callback runs on the loop, never from client_send. */
struct client_handler {
    /* Optional: the exchange has a connection (new and verified, or reused). */
    void (*on_connected)(void *ud, const struct client_target *t, bool reused);
    /* The response head (1xx skipped). msg and its slices are valid during the call. <0 aborts. */
    int (*on_head)(void *ud, const struct http_msg *msg);
    /* Response body bytes, de-chunked; valid during the call. <0 aborts. */
    int (*on_body)(void *ud, const char *p, size_t n);
    /* The response is complete; the exchange is over (no more callbacks). */
    void (*on_complete)(void *ud);
    /*
     * The exchange failed and is over (no more callbacks). err:
     *   CH_EPERM     the policy denied the address (why starts with the reason
     *                code: "address_not_sovereign: 198.51.100.7 ...");
     *                nothing was sent, no connection was attempted;
     *   CH_EIO       connection refused / reset / closed before a response;
     *   CH_ETLS      handshake or certificate verification failed (why says which);
     *   CH_ETIMEOUT  connect, TLS or response timeout;
     *   CH_EPROTO    invalid response (framing, head too large);
     *   CH_ETOOBIG   the response head exceeds limits.max_header_bytes;
     *   CH_ENOMEM, or the negative code a callback returned.
     * sent is true when request bytes may have reached the server (a caller
     * must not send a non-idempotent request again elsewhere then).
     */
    void (*on_error)(void *ud, int err, const char *why, bool sent);
};

struct client_exchange;

/*
 * Send req to t. The policy is checked on t->addr first (an address the
 * policy denies gets on_error(CH_EPERM) and no connection); then an idle
 * pooled connection to (t->addr, t->tls_name) is reused, or a new one is
 * connected to exactly t->addr. The request (head and body) is copied: the
 * caller's buffers need not outlive this call. A request that fails on a
 * reused connection before any response byte is sent once more on a new
 * connection, only when its method is idempotent (GET, HEAD, OPTIONS, PUT,
 * DELETE). NULL on allocation failure (no callbacks then).
 */
struct client_exchange *client_send(struct client *c, const struct client_target *t,
                                    const struct client_request *req,
                                    const struct client_handler *h, void *ud);
/* Stop now: the connection is closed, no callbacks afterwards. */
void client_abort(struct client_exchange *x);
/* Flow control of the response body (a slow consumer). */
void client_pause_read(struct client_exchange *x);
void client_resume_read(struct client_exchange *x);

/* Counters for this client, for tests and metrics. */
struct client_stats {
    uint64_t connects;   /* TCP connections attempted */
    uint64_t reuses;     /* exchanges that used a pooled connection */
    uint64_t denied;     /* exchanges refused by the policy before connecting */
    uint64_t tls_failed; /* handshakes or verifications that failed */
};
void client_get_stats(const struct client *c, struct client_stats *out);

#endif
