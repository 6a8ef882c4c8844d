/* sign.h -- ed25519 signing keys in Synapse's file format. */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_SIGN_H
#define CHAPPE_SIGN_H

#include "chappe/buf.h"

/*
 * Append one new key line "ed25519 a_XXXX <unpadded base64 seed>\n" (Synapse's
 * signing key format; version "a_" and four random alphanumerics, as Synapse's
 * generate_signing_key does). 0 or a negative code.
 */
int sign_keygen(struct buf *out);
/*
 * Write a new key to path, mode 0600, refusing to overwrite an existing file
 * (CH_EEXIST). 0 or a negative code; *why says what failed.
 */
int sign_keygen_file(const char *path, const char **why);

#endif
