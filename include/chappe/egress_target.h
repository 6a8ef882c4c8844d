/* egress_target.h -- the request targets the egress listener accepts from fronted homeservers. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_EGRESS_TARGET_H
#define CHAPPE_EGRESS_TARGET_H

#include <stddef.h>

#include "chappe/buf.h"
#include "chappe/policy.h"

/* Longest request-target accepted, in bytes (RFC 9112 section 3 recommends at least 8000). */
#define EGRESS_TARGET_MAX 8192

/*
 * The three ways a homeserver names the destination of an outbound
 * federation request when chappe is its egress (chappe issue 6).
 */
enum egress_kind {
    EGRESS_NONE = 0, /* not parsed */
    /*
     * Synapse >= 1.89 with outbound_federation_restricted_to pointing at
     * chappe: the federation client proxies through a "worker" and writes
     * the whole URI it would have used into the request line
     * (synapse/http/proxyagent.py sends request_path = uri;
     * matrixfederationclient.py builds it with urlunparse):
     *
     *   GET matrix-federation://agent.finances.tchap.gouv.fr:8448/_matrix/federation/v1/version
     *   PUT matrix-federation://matrix.org/_matrix/federation/v1/send/1700000000000
     *   GET matrix-federation://[2001:db8::1]:8448/_matrix/key/v2/server
     *
     * The authority is a Matrix server name: without a port it still has to
     * go through server discovery (.well-known, SRV), as Synapse would.
     * Twisted adds "Host: <destination>:80" when the name has no port (the
     * scheme is neither http nor https); the Host field says nothing here.
     */
    EGRESS_MATRIX_FEDERATION,
    /*
     * An HTTP proxy request for an https URL, sent in cleartext to chappe
     * (absolute-form, RFC 9112 section 3.2.2):
     *
     *   GET https://matrix.example.org:8448/_matrix/key/v2/server HTTP/1.1
     *   GET https://matrix.example.org/_matrix/federation/v1/version HTTP/1.1
     *
     * The authority is a host and port already resolved by the sender: no
     * port means 443 (RFC 9110 section 4.2.2), not server discovery. dest
     * keeps port 0 in that case; the caller applies the default.
     */
    EGRESS_HTTPS,
    /*
     * A tunnel request (RFC 9110 section 9.3.6, authority-form RFC 9112
     * section 3.2.3): the method is CONNECT, the target host ":" port and
     * nothing else; the port is required.
     *
     *   CONNECT matrix.example.org:8448 HTTP/1.1
     *   CONNECT 192.0.2.10:443 HTTP/1.1
     *   CONNECT [2001:db8::1]:443 HTTP/1.1
     */
    EGRESS_CONNECT,
};

/*
 * A parsed target. Nothing is allocated; path points into the caller's
 * target and lives as long as it does (copy it before the read buffer is
 * reused).
 */
struct egress_target {
    enum egress_kind kind;
    /*
     * The authority, parsed by server_name_parse() (the one server-name
     * grammar of chappe) and normalised: lowercased, IPv6 in brackets in
     * dest.name. dest.port is 0 when the authority had none (never for
     * EGRESS_CONNECT).
     */
    struct server_name dest;
    /*
     * EGRESS_MATRIX_FEDERATION and EGRESS_HTTPS: the origin-form target to
     * send on (RFC 9112 section 3.2.1: absolute-path ["?" query]), the bytes
     * exactly as received, from the '/' after the authority to the end.
     * EGRESS_CONNECT: empty ("").
     */
    struct slice path;
};

/*
 * Parse the method and request-target of a request received on the egress
 * listener. method is case-sensitive (RFC 9110 section 9.1); target is the
 * request-target as received, not decoded.
 *
 * Accepted:
 * - method CONNECT (exactly) with an authority-form target: host ":" port,
 *   the host a DNS name, an IPv4 literal or a bracketed IPv6 literal, as
 *   server_name_parse() reads them, and the port present;
 * - any other method (an RFC 9110 token) with an absolute-form target:
 *   scheme "://" authority path-abempty ["?" query], where
 *     - the scheme is "matrix-federation" or "https", in any case (RFC 3986
 *       section 3.1);
 *     - the authority is a server name (server_name_parse(): host [":" port],
 *       the port optional);
 *     - the path is not empty and starts with '/' (Synapse always sends one);
 *     - path and query hold only pchar, '/' and '?' (RFC 3986 sections 3.3
 *       and 3.4) and '%' followed by two hex digits.
 *
 * Refused: an empty or non-token method; an origin-form ("/x"),
 * asterisk-form ("*") or over-long (> EGRESS_TARGET_MAX) target; another
 * scheme (http included), or a scheme without "//"; userinfo ('@' anywhere
 * in the authority: "https://a.b@c.d/x" names no destination chappe would
 * pass on); an empty host, percent-encoding or any character outside the
 * server-name grammar in the authority (trailing dot, IPv6 zone id, empty
 * port, ...); an authority-form target without CONNECT, CONNECT with
 * anything else, or with no port; a fragment ('#'), a space, a control
 * character, a backslash, a non-ASCII byte or a bad escape in the path.
 *
 * Returns 0 and fills *out; or CH_EINVAL with *out zeroed (kind EGRESS_NONE)
 * and *why (may be NULL) set to a static reason.
 */
int egress_target_parse(const char *method, size_t mlen, const char *target, size_t tlen,
                        struct egress_target *out, const char **why);

/* The kind's name for logs and metrics: "matrix-federation", "https", "connect", "none". */
const char *egress_kind_name(enum egress_kind kind);

#endif
