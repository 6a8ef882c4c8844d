/* cjson.h -- JSON parsed with Jansson, encoded canonically (Matrix appendices, "Canonical JSON").
 */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_CJSON_H
#define CHAPPE_CJSON_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "chappe/buf.h"

/* Integers outside +-(2^53 - 1) are not canonical (Matrix appendices, "Canonical JSON"). */
#define CJSON_INT_MAX 9007199254740991LL

/*
 * Parse one JSON value: duplicate object keys are rejected, NUL in strings is
 * allowed, nothing but whitespace may follow the value. 0 and *out (a new
 * reference, the caller json_decref()s it), or CH_EINVAL with one line
 * appended to err: "line L, column C: <jansson's text>".
 */
int cjson_parse(const char *p, size_t n, json_t **out, struct buf *err);
/*
 * Append the canonical encoding of v: object keys sorted by Unicode code
 * point (byte order of their UTF-8), no insignificant whitespace, UTF-8 as is,
 * only \" \\ \b \f \n \r \t and lowercase \u00xx for the other control
 * characters escaped, integers within +-CJSON_INT_MAX, no floats (not even
 * integral ones such as 1.0), no -0. 0, or CH_EINVAL with one line appended to
 * err naming the JSON path of the offending value and why, e.g.
 * "$.content.pdus[3].depth: float 1.5 is not allowed in canonical JSON".
 * out holds exactly what it held before on failure.
 */
int cjson_encode(const json_t *v, struct buf *out, struct buf *err);
/*
 * True when p[0..n) is already exactly the canonical encoding of a JSON value,
 * so that cjson_canonicalize() would give back the same bytes. One pass, no
 * allocation: the fast path for bodies Synapse sends (it encodes them
 * canonically). Conservative: false for anything it does not handle (keys over
 * 128 bytes, nesting over 64 levels, U+0000 in keys) -- callers then parse.
 */
bool cjson_is_canonical(const char *p, size_t n);
/* Append s as a canonical JSON string (quotes included); s must be valid UTF-8. */
int cjson_append_string(struct buf *out, const char *s, size_t n);
/* Parse then encode: 0 or CH_EINVAL with err as above. */
int cjson_canonicalize(const char *p, size_t n, struct buf *out, struct buf *err);

#endif
