/* wellknown.h -- the /.well-known/matrix/server body and its caching headers. Pure. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_WELLKNOWN_H
#define CHAPPE_WELLKNOWN_H

#include <stddef.h>
#include <stdint.h>

#include "chappe/http.h"
#include "chappe/policy.h"

#define WELLKNOWN_MAX_BODY (50 * 1024)

/*
 * Parse a .well-known/matrix/server response body: a JSON object (UTF-8, at
 * most WELLKNOWN_MAX_BODY bytes) whose "m.server" member is a string that is a
 * valid server name (server_name_parse); other members are ignored. 0 and *out,
 * or CH_EINVAL with *why (static text: "body too large", "not JSON", "not a
 * JSON object", "no m.server string"; or "m.server is not a valid server name:
 * ..." in a thread-local buffer valid until the next call).
 */
int wellknown_parse(const char *body, size_t n, struct server_name *out, const char **why);

/*
 * How long a .well-known response may be cached, in ms, from its head:
 * Cache-Control "no-store" or "no-cache" gives 0; "max-age=N" gives N s (the first valid one;
 * invalid directives are ignored); otherwise Expires (an IMF-fixdate, RFC 9110) minus now_ms when
 * in the future, 0 when in the past; otherwise def_ms. The result is capped at max_ms. now_ms is
 * wall-clock ms since the epoch. Details: all Cache-Control lines count, names are
 * case-insensitive, a qualified no-cache="..." also gives 0, max-age may be quoted ("60") and is
 * capped at 2^31 s (RFC 9111 section 1.2.2); Expires also takes the obsolete
 * RFC 850 and asctime forms (RFC 9110 section 5.6.7), and an invalid date or
 * several Expires lines count as in the past (RFC 9111 section 5.3).
 */
uint64_t wellknown_cache_ms(const struct http_msg *msg, uint64_t now_ms, uint64_t def_ms,
                            uint64_t max_ms);

#endif
