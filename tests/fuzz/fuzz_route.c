/* fuzz_route.c -- libFuzzer target: the router on "METHOD\nTARGET", the decoder, the ID grammars.
 */
/* SPDX-License-Identifier: ISC */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/route.h"
#include "chappe/util.h"

/* Checked properties abort, so libFuzzer reports them like crashes. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static unsigned method_bit(const char *m, size_t n)
{
    if ((n == 3 && memcmp(m, "GET", 3) == 0) || (n == 4 && memcmp(m, "HEAD", 4) == 0))
        return ROUTE_M_GET;
    if (n == 3 && memcmp(m, "PUT", 3) == 0)
        return ROUTE_M_PUT;
    if (n == 4 && memcmp(m, "POST", 4) == 0)
        return ROUTE_M_POST;
    return 0;
}

static int unreserved(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Percent-encode every byte but the unreserved ones, as a careful sender would. */
static size_t encode(const char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    return o;
}

/* The template with each parameter replaced by its encoded value. */
static size_t rebuild(const struct route_match *m, char *out)
{
    const char *t = m->route->path;
    size_t o = 0, k = 0;
    while (*t) {
        if (*t == '{') {
            const char *close = strchr(t, '}');
            CHECK(close != NULL && k < m->nparams);
            CHECK(strncmp(t + 1, m->params[k].name, (size_t)(close - t - 1)) == 0);
            CHECK(strlen(m->params[k].name) == (size_t)(close - t - 1));
            o += encode(m->params[k].value, m->params[k].len, out + o);
            k++;
            t = close + 1;
        } else {
            out[o++] = *t++;
        }
    }
    CHECK(k == m->nparams);
    return o;
}

static void check_ok(const char *method, size_t mlen, const struct route_match *m)
{
    CHECK(m->route != NULL);
    CHECK((unsigned)m->route->id < ROUTE_COUNT && m->route == &route_table[m->route->id]);
    CHECK(m->route->method & method_bit(method, mlen));
    CHECK(m->allow == 0);
    CHECK(m->nparams <= ROUTE_MAX_PARAMS);
    for (size_t i = 0; i < m->nparams; i++) {
        const struct route_param *p = &m->params[i];
        CHECK(p->len <= ROUTE_PARAM_MAX && strlen(p->value) == p->len);
        CHECK(route_param_check(p->kind, p->value, p->len, NULL) == 0);
        CHECK(route_param(m, p->kind) != NULL);
    }

    /* Encoded afresh, the decoded values route to the same place with the same values. */
    char target[ROUTE_MAX_PARAMS * ROUTE_PARAM_MAX * 3 + 128];
    size_t tlen = rebuild(m, target);
    struct route_match again;
    CHECK(route_match(method, mlen, target, tlen, &again, NULL) == ROUTE_OK);
    CHECK(again.route == m->route && again.nparams == m->nparams);
    for (size_t i = 0; i < m->nparams; i++) {
        CHECK(again.params[i].len == m->params[i].len);
        CHECK(memcmp(again.params[i].value, m->params[i].value, m->params[i].len) == 0);
    }
}

static void check_router(const char *method, size_t mlen, const char *target, size_t tlen)
{
    struct route_match m;
    const char *why = NULL;
    enum route_result r = route_match(method, mlen, target, tlen, &m, &why);

    /* path "?" query is the whole target. */
    CHECK(m.path.len + (m.has_query ? 1 + m.query.len : 0) == tlen);
    CHECK(m.has_query || m.query.len == 0);
    CHECK(memchr(m.path.base, '?', m.path.len) == NULL);

    switch (r) {
    case ROUTE_OK:
        CHECK(why == NULL);
        check_ok(method, mlen, &m);
        break;
    case ROUTE_METHOD_NOT_ALLOWED:
        CHECK(m.allow != 0 &&
              (m.allow & ~(unsigned)(ROUTE_M_GET | ROUTE_M_PUT | ROUTE_M_POST)) == 0);
        CHECK((m.allow & method_bit(method, mlen)) == 0);
        /* fall through */
    case ROUTE_NOT_FOUND:
    case ROUTE_BAD_PARAM:
        CHECK(m.route == NULL && m.nparams == 0);
        CHECK(why != NULL && why[0] != '\0');
        CHECK(r == ROUTE_METHOD_NOT_ALLOWED || m.allow == 0);
        CHECK(r != ROUTE_BAD_PARAM || why == m.why);
        break;
    default:
        CHECK(0);
    }

    char allow[64];
    size_t need = route_format_allow(m.allow, allow, sizeof(allow));
    CHECK(need == strlen(allow));

    /* HEAD routes exactly like GET. */
    if (method_bit(method, mlen) == ROUTE_M_GET) {
        struct route_match g;
        enum route_result rg = route_match("HEAD", 4, target, tlen, &g, NULL);
        CHECK(rg == r && g.route == m.route && g.nparams == m.nparams && g.allow == m.allow);
    }
}

/* Whatever decodes is clean text, and decodes to itself once re-encoded. */
static void check_decoder(const char *s, size_t n)
{
    char out[ROUTE_PARAM_MAX + 1], enc[3 * ROUTE_PARAM_MAX + 1], again[ROUTE_PARAM_MAX + 1];
    size_t len = 0, len2 = 0;
    const char *why = NULL;
    int rc = route_decode_segment(s, n, out, sizeof(out), &len, &why);
    if (rc) {
        CHECK((rc == CH_EINVAL || rc == CH_ETOOBIG) && why != NULL && out[0] == '\0');
        return;
    }
    CHECK(len <= ROUTE_PARAM_MAX && strlen(out) == len);
    for (size_t i = 0; i < len; i++)
        CHECK((unsigned char)out[i] >= 0x20 && (unsigned char)out[i] != 0x7f);
    size_t elen = encode(out, len, enc);
    CHECK(route_decode_segment(enc, elen, again, sizeof(again), &len2, NULL) == 0);
    CHECK(len2 == len && memcmp(again, out, len) == 0);
    /* No escapes in, as many bytes out. */
    if (memchr(s, '%', n) == NULL)
        CHECK(len == n && memcmp(out, s, n) == 0);
}

static void check_grammars(const char *s, size_t n)
{
    for (int k = 0; k < ROUTE_P_KIND_COUNT; k++) {
        const char *why = NULL;
        int rc = route_param_check((enum route_param_kind)k, s, n, &why);
        CHECK(rc == 0 || (rc == CH_EINVAL && why != NULL));
        if (rc == 0)
            CHECK(n <= ROUTE_PARAM_MAX && memchr(s, '\0', n) == NULL);
    }
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

    const char *nl = memchr(in, '\n', size);
    size_t mlen = nl ? (size_t)(nl - in) : 0;
    const char *target = nl ? nl + 1 : in;
    size_t tlen = size - (size_t)(target - in);

    /* The method and the target each in their own allocation, for the same reason. */
    char *m = malloc(mlen ? mlen : 1);
    char *t = malloc(tlen ? tlen : 1);
    if (m && t) {
        memcpy(m, in, mlen);
        memcpy(t, target, tlen);
        check_router(m, mlen, t, tlen);
        check_decoder(t, tlen);
        check_grammars(t, tlen);
    }
    free(m);
    free(t);
    free(in);
    return 0;
}
