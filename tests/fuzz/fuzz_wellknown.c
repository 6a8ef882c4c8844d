/* fuzz_wellknown.c -- libFuzzer target: .well-known bodies and the caching headers of a response.
 */
/* SPDX-License-Identifier: ISC */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/buf.h"
#include "chappe/util.h"
#include "chappe/wellknown.h"

/* Checked properties abort, so libFuzzer reports them like crashes. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define NOW_MS 1767225600000ull /* 2026-01-01T00:00:00Z */
#define DEF_MS 86400000ull
#define MAX_MS (48 * 3600000ull)

/*
 * Input: header lines "Name: value" separated by '\n', an empty line, then the
 * body. Without an empty line the whole input is both the body and one field
 * value of each caching header.
 */
static void fill_fields(struct http_msg *msg, const char *p, size_t n)
{
    while (n > 0 && msg->nfields < HTTP_MAX_FIELDS) {
        const char *nl = memchr(p, '\n', n);
        size_t len = nl ? (size_t)(nl - p) : n;
        const char *colon = memchr(p, ':', len);
        if (colon) {
            struct http_field *f = &msg->fields[msg->nfields++];
            f->name = (struct slice){p, (size_t)(colon - p)};
            f->value = slice_trim_ows((struct slice){colon + 1, len - (size_t)(colon - p) - 1});
        }
        if (nl == NULL)
            break;
        p += len + 1;
        n -= len + 1;
    }
}

static void check_body(const char *body, size_t n)
{
    struct server_name sn, again;
    const char *why = NULL;
    if (wellknown_parse(body, n, &sn, &why) != 0) {
        CHECK(why != NULL && why[0] != '\0');
        return;
    }
    size_t len = strnlen(sn.name, sizeof(sn.name));
    CHECK(len > 0 && len < sizeof(sn.name));
    CHECK(server_name_parse(sn.name, len, &again, &why) == 0);
    CHECK(memcmp(&sn, &again, sizeof(sn)) == 0);
}

static void check_cache(const struct http_msg *msg)
{
    uint64_t a = wellknown_cache_ms(msg, NOW_MS, DEF_MS, MAX_MS);
    CHECK(a <= MAX_MS);
    /* Later is never longer (the same year, so two-digit years read the same). */
    uint64_t b = wellknown_cache_ms(msg, NOW_MS + 3600000, DEF_MS, MAX_MS);
    CHECK(b <= a);
    uint64_t c = wellknown_cache_ms(msg, NOW_MS, DEF_MS, UINT64_MAX);
    CHECK(a == (c < MAX_MS ? c : MAX_MS));
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

    struct http_msg *msg = calloc(1, sizeof(*msg));
    CHECK(msg != NULL);
    const char *sep = size ? memmem(in, size, "\n\n", 2) : NULL;
    if (sep) {
        fill_fields(msg, in, (size_t)(sep - in));
        check_body(sep + 2, size - (size_t)(sep - in) - 2);
    } else {
        static const char *const names[] = {"Cache-Control", "Expires"};
        for (size_t i = 0; i < 2; i++) {
            msg->fields[msg->nfields].name = (struct slice){names[i], strlen(names[i])};
            msg->fields[msg->nfields++].value = (struct slice){in, size};
        }
        check_body(in, size);
    }
    check_cache(msg);
    free(msg);
    free(in);
    return 0;
}
