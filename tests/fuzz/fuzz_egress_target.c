/* fuzz_egress_target.c -- libFuzzer target: the egress request-target parser on "METHOD\nTARGET".
 */
/* SPDX-License-Identifier: ISC */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chappe/egress_target.h"
#include "chappe/policy.h"
#include "chappe/util.h"

/* Checked properties abort, so libFuzzer reports them like crashes. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static int is_connect(const char *m, size_t n)
{
    return n == 7 && memcmp(m, "CONNECT", 7) == 0;
}

/* s[0..n) is the normalised name, up to ASCII case: what was parsed is what is passed on. */
static void check_same_name(const char *s, size_t n, const struct server_name *sn)
{
    CHECK(strlen(sn->name) == n);
    for (size_t i = 0; i < n; i++)
        CHECK(lower(s[i]) == sn->name[i]);
}

static int same_dest(const struct server_name *a, const struct server_name *b)
{
    return a->type == b->type && strcmp(a->host, b->host) == 0 && a->port == b->port &&
           strcmp(a->name, b->name) == 0 && a->family == b->family &&
           memcmp(a->addr, b->addr, sizeof(a->addr)) == 0;
}

/* The destination is valid on its own: its name parses back to the same thing. */
static void check_dest(const struct server_name *sn)
{
    struct server_name again;
    const char *why = NULL;
    size_t len = strnlen(sn->name, sizeof(sn->name));
    CHECK(len > 0 && len < sizeof(sn->name));
    CHECK(server_name_parse(sn->name, len, &again, &why) == 0);
    CHECK(same_dest(sn, &again));
}

static void check_connect(const char *t, size_t tlen, const struct egress_target *e)
{
    CHECK(e->path.len == 0 && e->path.base != NULL);
    CHECK(e->dest.port != 0);
    CHECK(memchr(t, '@', tlen) == NULL && memchr(t, '/', tlen) == NULL);
    check_same_name(t, tlen, &e->dest);
}

static int path_byte_ok(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("-._~!$&'()*+,;=:@/?%", c) != NULL);
}

/* scheme "://" authority path, with the path a view of the target's own tail. */
static void check_absolute(const char *t, size_t tlen, const struct egress_target *e)
{
    const char *scheme = e->kind == EGRESS_HTTPS ? "https://" : "matrix-federation://";
    size_t sl = strlen(scheme);
    CHECK(tlen > sl);
    for (size_t i = 0; i < sl; i++)
        CHECK(lower(t[i]) == scheme[i]);

    const char *end = t + tlen;
    CHECK(e->path.len > 0 && e->path.len <= tlen - sl);
    CHECK(e->path.base >= t + sl && e->path.base + e->path.len == end);
    CHECK(e->path.base[0] == '/');
    for (size_t i = 0; i < e->path.len; i++) {
        unsigned char c = (unsigned char)e->path.base[i];
        CHECK(path_byte_ok(c));
        if (c == '%')
            CHECK(i + 2 < e->path.len);
    }

    const char *auth = t + sl;
    size_t alen = (size_t)(e->path.base - auth);
    CHECK(memchr(auth, '@', alen) == NULL && memchr(auth, '%', alen) == NULL);
    CHECK(memchr(auth, '/', alen) == NULL && memchr(auth, '?', alen) == NULL);
    check_same_name(auth, alen, &e->dest);
}

static void check_parse(const char *m, size_t mlen, const char *t, size_t tlen)
{
    struct egress_target e;
    const char *why = NULL;
    int rc = egress_target_parse(m, mlen, t, tlen, &e, &why);
    if (rc != 0) {
        CHECK(rc == CH_EINVAL && why != NULL && why[0] != '\0');
        CHECK(e.kind == EGRESS_NONE && e.path.base == NULL && e.path.len == 0);
        CHECK(e.dest.name[0] == '\0');
        return;
    }
    CHECK(why == NULL);
    CHECK(tlen <= EGRESS_TARGET_MAX);
    /* The kind follows the method: CONNECT and only CONNECT tunnels. */
    CHECK((e.kind == EGRESS_CONNECT) == is_connect(m, mlen));
    CHECK(e.kind == EGRESS_CONNECT || e.kind == EGRESS_HTTPS || e.kind == EGRESS_MATRIX_FEDERATION);
    check_dest(&e.dest);
    if (e.kind == EGRESS_CONNECT)
        check_connect(t, tlen, &e);
    else
        check_absolute(t, tlen, &e);

    /* Parsing is a function of the bytes: the same input again gives the same answer. */
    struct egress_target again;
    CHECK(egress_target_parse(m, mlen, t, tlen, &again, NULL) == 0);
    CHECK(again.kind == e.kind && same_dest(&again.dest, &e.dest));
    CHECK(again.path.base == e.path.base && again.path.len == e.path.len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* "METHOD\nTARGET"; without a newline, the whole input is the target of a GET. */
    const char *nl = memchr(data, '\n', size);
    size_t mlen = nl ? (size_t)(nl - (const char *)data) : 3;
    const char *msrc = nl ? (const char *)data : "GET";
    const char *tsrc = nl ? nl + 1 : (const char *)data;
    size_t tlen = size - (nl ? (size_t)(tsrc - (const char *)data) : 0);

    /* The method and the target each in their own allocation, so ASan catches any overread. */
    char *m = malloc(mlen ? mlen : 1);
    char *t = malloc(tlen ? tlen : 1);
    if (m && t) {
        memcpy(m, msrc, mlen);
        if (tlen)
            memcpy(t, tsrc, tlen);
        check_parse(m, mlen, t, tlen);
        /* The same target under the other kind of method. */
        if (is_connect(m, mlen))
            check_parse("GET", 3, t, tlen);
        else
            check_parse("CONNECT", 7, t, tlen);
    }
    free(m);
    free(t);
    return 0;
}
