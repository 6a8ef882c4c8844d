/* fuzz_xmatrix.c -- libFuzzer target: X-Matrix header parse, then build/parse roundtrip. */
/* SPDX-License-Identifier: ISC */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/buf.h"
#include "chappe/util.h"
#include "chappe/xmatrix.h"

/* Checked properties abort, so libFuzzer reports them like crashes. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static void check_value(const char *v, int may_be_empty)
{
    size_t len = strnlen(v, XMATRIX_MAX_VALUE + 1);
    CHECK(len <= XMATRIX_MAX_VALUE);
    CHECK(may_be_empty || len > 0);
    for (size_t i = 0; i < len; i++)
        CHECK((unsigned char)v[i] >= 0x20 && (unsigned char)v[i] < 0x7f);
}

static void check_equal(const struct xmatrix *a, const struct xmatrix *b)
{
    CHECK(strcmp(a->origin, b->origin) == 0);
    CHECK(strcmp(a->key, b->key) == 0);
    CHECK(strcmp(a->sig, b->sig) == 0);
    CHECK(a->has_destination == b->has_destination);
    CHECK(strcmp(a->destination, b->destination) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, so ASan catches any read past the end. */
    char *in = malloc(size ? size : 1);
    if (in == NULL)
        return 0;
    if (size)
        memcpy(in, data, size);

    struct xmatrix x, y;
    const char *why = NULL;
    int rc = xmatrix_parse(in, size, &x, &why);
    if (rc != 0) {
        CHECK(rc == CH_EINVAL);
        CHECK(why != NULL && why[0] != '\0');
        goto done;
    }
    CHECK(why == NULL);
    check_value(x.origin, 0);
    check_value(x.key, 0);
    check_value(x.sig, 0);
    check_value(x.destination, !x.has_destination);
    CHECK(x.has_destination || x.destination[0] == '\0');

    /* Whatever parses builds, and the built header parses to the same fields. */
    struct buf b = BUF_INIT, b2 = BUF_INIT;
    const char *dest = x.has_destination ? x.destination : NULL;
    CHECK(xmatrix_build(&b, x.origin, dest, x.key, x.sig) == 0);
    CHECK(xmatrix_parse(buf_data(&b), b.len, &y, &why) == 0);
    check_equal(&x, &y);

    /* Building is a fixed point from there on. */
    CHECK(xmatrix_build(&b2, y.origin, y.has_destination ? y.destination : NULL, y.key, y.sig) ==
          0);
    CHECK(b.len == b2.len && memcmp(buf_data(&b), buf_data(&b2), b.len) == 0);

    /* And the fields make a signable JSON object. */
    json_t *obj = xmatrix_request_object("GET", "/", x.origin, dest, NULL);
    CHECK(obj != NULL);
    json_decref(obj);

    buf_free(&b);
    buf_free(&b2);
done:
    free(in);
    return 0;
}
