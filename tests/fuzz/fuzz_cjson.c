/* fuzz_cjson.c -- libFuzzer target: canonical JSON is a fixed point and failures change nothing. */
/* SPDX-License-Identifier: ISC */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/buf.h"
#include "chappe/cjson.h"
#include "chappe/util.h"

/* Checked properties abort, so libFuzzer reports them like crashes. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define PREFIX "prefix"

/* An error is exactly one line, without control bytes. */
static void check_err(const struct buf *err)
{
    CHECK(err->len > 0);
    CHECK(buf_data(err)[err->len - 1] == '\n');
    for (size_t i = 0; i + 1 < err->len; i++)
        CHECK((unsigned char)buf_data(err)[i] >= 0x20);
}

/* Canonical output holds no raw control bytes and no whitespace outside strings. */
static void check_canonical_bytes(const struct buf *b)
{
    int in_string = 0;
    for (size_t i = 0; i < b->len; i++) {
        unsigned char c = (unsigned char)buf_data(b)[i];
        CHECK(c >= 0x20);
        if (c == '"')
            in_string = !in_string;
        else if (c == '\\' && in_string)
            i++;
        else if (!in_string)
            CHECK(c != ' ');
    }
    CHECK(!in_string);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy in its own allocation, so that reads past the input are caught. */
    char *in = malloc(size ? size : 1);
    CHECK(in != NULL);
    memcpy(in, data, size);
    struct buf first = BUF_INIT, second = BUF_INIT, err = BUF_INIT;
    json_t *v = NULL, *w = NULL;

    /* The fast path may only say "canonical" when canonicalizing gives the same bytes. */
    if (cjson_is_canonical(in, size)) {
        struct buf c = BUF_INIT, e = BUF_INIT;
        CHECK(cjson_canonicalize(in, size, &c, &e) == 0);
        CHECK(c.len == size && memcmp(buf_data(&c), in, size) == 0);
        buf_free(&c);
        buf_free(&e);
    }

    if (cjson_parse(in, size, &v, &err) != 0) {
        CHECK(v == NULL);
        check_err(&err);
        goto out;
    }
    CHECK(buf_append_str(&first, PREFIX) == 0);
    int rc = cjson_encode(v, &first, &err);
    if (rc != 0) {
        /* The header's promise: out is unchanged on failure. */
        CHECK(rc == CH_EINVAL);
        CHECK(first.len == strlen(PREFIX) && memcmp(buf_data(&first), PREFIX, first.len) == 0);
        check_err(&err);
        CHECK(buf_data(&err)[0] == '$');
        goto out;
    }
    CHECK(err.len == 0);
    buf_consume(&first, strlen(PREFIX));
    check_canonical_bytes(&first);

    /* parse -> encode -> parse -> encode: the second encoding is the first, byte for byte. */
    CHECK(cjson_parse(buf_data(&first), first.len, &w, &err) == 0);
    CHECK(json_equal(v, w));
    CHECK(cjson_encode(w, &second, &err) == 0);
    CHECK(second.len == first.len && memcmp(buf_data(&first), buf_data(&second), first.len) == 0);
    buf_reset(&second);
    CHECK(cjson_canonicalize(in, size, &second, &err) == 0);
    CHECK(second.len == first.len && memcmp(buf_data(&first), buf_data(&second), first.len) == 0);

out:
    json_decref(v);
    json_decref(w);
    buf_free(&first);
    buf_free(&second);
    buf_free(&err);
    free(in);
    return 0;
}
