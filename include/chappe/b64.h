/* b64.h -- standard base64 as Matrix uses it: unpadded on output, padded or not on input. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_B64_H
#define CHAPPE_B64_H

#include <stddef.h>

#include "chappe/buf.h"

/* Length of the unpadded encoding of n bytes. */
size_t b64_encoded_len(size_t n);
/* Append the unpadded standard base64 encoding of p to out. 0 or CH_ENOMEM. */
int b64_encode(struct buf *out, const void *p, size_t n);
/*
 * Decode standard base64, unpadded or correctly padded; anything else
 * (URL-safe alphabet, whitespace, bad padding, non-zero trailing bits) is
 * CH_EINVAL. Appends the bytes to out.
 */
int b64_decode(struct buf *out, const char *s, size_t n);

#endif
