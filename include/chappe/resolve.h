/* resolve.h -- server discovery ("Resolving server names") behind the policy gate, and requests
 * to a Matrix server name through the outbound client. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_RESOLVE_H
#define CHAPPE_RESOLVE_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "chappe/client.h"
#include "chappe/dns.h"
#include "chappe/policy.h"

struct config;

#define RESOLVE_MAX_TARGETS 16

/* Where a server name leads, every candidate already allowed by the address policy. */
struct resolve_result {
    /*
     * 0: targets[0..ntargets) to try in order. CH_EPERM: the policy denied
     * (reason says which: the name, a delegated or redirect name, or every
     * address found). CH_ENOENT: no address at all (reason "no_address").
     */
    int status;
    const char *reason; /* reason code when status != 0 ("name_not_allowed", "no_address", ...) */
    char why[640];      /* one line for logs and errors */
    struct client_target targets[RESOLVE_MAX_TARGETS];
    size_t ntargets;
};

/*
 * Steps as they happen, one line each without a newline ("name X: allow
 * (...)", "well-known https://X/.well-known/matrix/server", "  -> m.server Y",
 * "lookup X: ...", "srv _matrix-fed._tcp.X: ...", "address A: deny R (...)",
 * "target A:P host=H tls=T"). Used by `chappe policy check` and `fed-request`;
 * NULL when nobody listens.
 */
typedef void (*resolve_trace_fn)(void *ud, const char *line);

/* One per event loop (or CLI command): the .well-known cache, on top of a client and a resolver. */
struct resolve;

/* 0 and *out, or CH_ENOMEM. cl and dns must outlive it; cfg too. */
int resolve_new(uv_loop_t *loop, const struct config *cfg, struct client *cl, struct dns *dns,
                struct resolve **out);
/*
 * Free the resolver and its .well-known cache; fetches in flight are
 * abandoned. Every query and request must have completed or been cancelled
 * first. The loop must run afterwards to finish closing.
 */
void resolve_free(struct resolve *r);

typedef void (*resolve_cb)(void *ud, const struct resolve_result *res);
struct resolve_query;

/*
 * Discover where server_name (as received: validated, lowercased and checked
 * against the name allowlist first, before any DNS query) is served, per the
 * spec: IP literal; explicit port; .well-known (cached, redirects followed
 * with a limit and loop detection, every host's name and address checked);
 * SRV _matrix-fed._tcp then _matrix._tcp; A/AAAA on 8448. Every address is
 * checked; denied ones are left out (and traced). The callback runs exactly
 * once, never from inside this call, unless resolve_cancel comes first.
 * NULL on allocation failure.
 */
struct resolve_query *resolve_server(struct resolve *r, const char *server_name, resolve_cb cb,
                                     resolve_trace_fn trace, void *ud);
void resolve_cancel(struct resolve_query *q);

/*
 * A request to a Matrix server name: resolve_server, then client_send to each
 * target in order until one gives a response; a target that fails before the
 * request could have been sent (denied, refused, TLS failure, connect
 * timeout) is skipped for the next. h->on_connected reports the target used.
 * A denial or resolution failure reaches h->on_error as CH_EPERM / CH_ENOENT
 * with why. NULL on allocation failure.
 */
struct resolve_request;
struct resolve_request *resolve_request(struct resolve *r, const char *server_name,
                                        const struct client_request *req,
                                        const struct client_handler *h, resolve_trace_fn trace,
                                        void *ud);
void resolve_request_abort(struct resolve_request *q);

#endif
