/* xmatrix.h -- the X-Matrix Authorization scheme (Matrix server-server API, "Request
 * Authentication"). */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_XMATRIX_H
#define CHAPPE_XMATRIX_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "chappe/buf.h"

/* Longest parameter value accepted (a server name is at most 255 bytes, a signature 86). */
#define XMATRIX_MAX_VALUE 512

struct xmatrix {
    char origin[XMATRIX_MAX_VALUE + 1];
    char destination[XMATRIX_MAX_VALUE + 1]; /* "" when absent */
    bool has_destination;
    char key[XMATRIX_MAX_VALUE + 1]; /* key id, e.g. "ed25519:a_abcd" */
    char sig[XMATRIX_MAX_VALUE + 1]; /* unpadded base64 */
};

/*
 * Parse an Authorization field value "X-Matrix origin=...,destination=...,
 * key=\"...\",sig=\"...\"" (RFC 9110 section 11.4 auth-params: scheme
 * case-insensitive, parameter names case-insensitive in any order, token or
 * quoted-string values with backslash unescaping, colons accepted in unquoted
 * values, OWS around commas and '=' tolerated as Synapse does, unknown
 * parameters ignored, duplicates rejected; origin, key and sig required,
 * destination optional). Values with control characters or longer than
 * XMATRIX_MAX_VALUE are rejected, and so are non-ASCII bytes. 0, or CH_EINVAL
 * with *why (static text; why may be NULL) and *out zeroed. Origin and
 * destination are not checked as server names here: that is the caller's job.
 */
int xmatrix_parse(const char *p, size_t n, struct xmatrix *out, const char **why);
/* Append a header value the way Synapse builds it:
 * X-Matrix origin="o",key="k",sig="s",destination="d" (destination omitted when NULL; '"' and
 * '\' escaped). CH_EINVAL for NULL, empty, over-long, control or non-ASCII values. */
int xmatrix_build(struct buf *out, const char *origin, const char *destination, const char *key_id,
                  const char *sig);
/*
 * The JSON object a request signature covers (spec "Request Authentication"):
 * {"method":..., "uri": path and query as sent, "origin":..., "destination":...
 * (when not NULL), "content": the parsed body (when not NULL)}. New reference;
 * content is shared (one more reference), never modified. NULL on invalid input.
 */
json_t *xmatrix_request_object(const char *method, const char *uri, const char *origin,
                               const char *destination, const json_t *content);

#endif
