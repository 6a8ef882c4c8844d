/* fuzz_b64.c -- libFuzzer target: strict base64 decoding agrees with encoding. */
/* SPDX-License-Identifier: ISC */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/b64.h"
#include "chappe/buf.h"
#include "chappe/util.h"

/* Checked properties abort, so libFuzzer reports them like crashes. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define PREFIX "prefix"

static int buf_is(const struct buf *b, const void *p, size_t n)
{
    return b->len == n && (n == 0 || memcmp(buf_data(b), p, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy in its own allocation, so that reads past the input are caught. */
    char *in = malloc(size ? size : 1);
    CHECK(in != NULL);
    memcpy(in, data, size);
    struct buf dec = BUF_INIT, enc = BUF_INIT, back = BUF_INIT;

    /* Arbitrary text: what decodes re-encodes to the same text, without its padding. */
    CHECK(buf_append_str(&dec, PREFIX) == 0);
    int rc = b64_decode(&dec, in, size);
    if (rc != 0) {
        CHECK(rc == CH_EINVAL);
        CHECK(buf_is(&dec, PREFIX, strlen(PREFIX)));
    } else {
        size_t text = size;
        while (text > 0 && in[text - 1] == '=')
            text--;
        CHECK(size - text <= 2);
        CHECK(size == text || size % 4 == 0); /* padding only completes a quantum */
        buf_consume(&dec, strlen(PREFIX));
        CHECK(dec.len == text * 3 / 4);
        CHECK(b64_encode(&enc, buf_data(&dec), dec.len) == 0);
        CHECK(buf_is(&enc, in, text));
        CHECK(b64_encoded_len(dec.len) == text);
    }

    /* Arbitrary bytes: encode -> decode gives them back, padded or not. */
    buf_reset(&enc);
    CHECK(b64_encode(&enc, in, size) == 0);
    CHECK(enc.len == b64_encoded_len(size));
    for (size_t i = 0; i < enc.len; i++) {
        char c = buf_data(&enc)[i];
        CHECK((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/');
    }
    CHECK(b64_decode(&back, buf_data(&enc), enc.len) == 0);
    CHECK(buf_is(&back, in, size));
    while (enc.len % 4)
        CHECK(buf_append_str(&enc, "=") == 0);
    buf_reset(&back);
    CHECK(b64_decode(&back, buf_data(&enc), enc.len) == 0);
    CHECK(buf_is(&back, in, size));

    buf_free(&dec);
    buf_free(&enc);
    buf_free(&back);
    free(in);
    return 0;
}
