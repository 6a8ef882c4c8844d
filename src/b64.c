/* b64.c -- unpadded standard base64 (Matrix appendices, "Unpadded Base64"). */
/* SPDX-License-Identifier: ISC */
#include <stdint.h>

#include "chappe/b64.h"
#include "chappe/util.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t b64_encoded_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

int b64_encode(struct buf *out, const void *p, size_t n)
{
    const unsigned char *s = p;
    int rc = buf_reserve(out, b64_encoded_len(n));
    if (rc)
        return rc;
    char *d = buf_tail(out);
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *d++ = alphabet[v >> 18];
        *d++ = alphabet[(v >> 12) & 63];
        *d++ = alphabet[(v >> 6) & 63];
        *d++ = alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *d++ = alphabet[v >> 18];
        *d++ = alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *d++ = alphabet[v >> 18];
        *d++ = alphabet[(v >> 12) & 63];
        *d++ = alphabet[(v >> 6) & 63];
    }
    buf_commit(out, b64_encoded_len(n));
    return 0;
}

static int value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int b64_decode(struct buf *out, const char *s, size_t n)
{
    if (n % 4 == 0 && n >= 4) {
        /* Padded input: strip exactly the padding a full encoding would carry. */
        if (s[n - 1] == '=')
            n--;
        if (s[n - 1] == '=')
            n--;
    }
    if (n % 4 == 1)
        return CH_EINVAL;
    int rc = buf_reserve(out, n / 4 * 3 + 2);
    if (rc)
        return rc;
    uint32_t acc = 0;
    int bits = 0;
    size_t written = 0;
    char *d = buf_tail(out);
    for (size_t i = 0; i < n; i++) {
        int v = value(s[i]);
        if (v < 0)
            return CH_EINVAL;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[written++] = (char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return CH_EINVAL; /* non-zero trailing bits: not a canonical encoding */
    buf_commit(out, written);
    return 0;
}
