/* egress_target.c -- parse once, strictly, the destination a homeserver asks the egress for. */
/* SPDX-License-Identifier: ISC */
#include <string.h>

#include "chappe/egress_target.h"
#include "chappe/util.h"

/* ---- characters ---- */

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_hex(unsigned char c)
{
    return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* RFC 9110 section 5.6.2: tchar. */
static int is_tchar(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* RFC 3986 section 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). */
static int is_scheme_char(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.';
}

/*
 * RFC 3986 sections 3.3 and 3.4: what a path or a query may hold besides
 * pct-encoded: unreserved, sub-delims, ':', '@', and '/' and '?'.
 */
static int is_path_char(unsigned char c)
{
    return is_alpha(c) || is_digit(c) || (c != 0 && strchr("-._~!$&'()*+,;=:@/?", c) != NULL);
}

/* ---- pieces ---- */

static int check_method(const char *m, size_t n, const char **why)
{
    if (n == 0) {
        *why = "empty method";
        return CH_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_tchar((unsigned char)m[i])) {
            *why = "invalid character in method";
            return CH_EINVAL;
        }
    }
    return 0;
}

/*
 * The length of the scheme at the front of t when it is followed by "://",
 * else 0 (t is not an absolute URI with an authority).
 */
static size_t scheme_len(const char *t, size_t n)
{
    if (n == 0 || !is_alpha((unsigned char)t[0]))
        return 0;
    size_t i = 1;
    while (i < n && is_scheme_char((unsigned char)t[i]))
        i++;
    return n - i >= 3 && memcmp(t + i, "://", 3) == 0 ? i : 0;
}

static int scheme_is(const char *s, size_t n, const char *want)
{
    if (n != strlen(want))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((is_alpha(c) ? (c | 0x20) : c) != (unsigned char)want[i])
            return 0;
    }
    return 1;
}

/*
 * An authority as chappe accepts it: a server name and nothing more. The
 * '@' and '%' checks come first so the reason names the trick rather than
 * "invalid character" (and so no later reader can see userinfo in it).
 */
static int parse_authority(const char *a, size_t n, struct server_name *sn, const char **why)
{
    if (n == 0) {
        *why = "empty host";
        return CH_EINVAL;
    }
    if (memchr(a, '@', n)) {
        *why = "userinfo ('@') in the authority";
        return CH_EINVAL;
    }
    if (memchr(a, '%', n)) {
        *why = a[0] == '[' ? "zone id not allowed in IPv6 literal"
                           : "percent-encoding in the authority";
        return CH_EINVAL;
    }
    return server_name_parse(a, n, sn, why);
}

/* path-abempty ["?" query] without its leading authority; RFC 3986 sections 3.3, 3.4, 2.1. */
static int check_path(const char *p, size_t n, const char **why)
{
    if (n == 0 || p[0] != '/') {
        *why = "no path after the authority";
        return CH_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '%') {
            if (n - i < 3 || !is_hex((unsigned char)p[i + 1]) || !is_hex((unsigned char)p[i + 2])) {
                *why = "invalid percent-escape in the path";
                return CH_EINVAL;
            }
            i += 2;
        } else if (c == '#') {
            /* RFC 9112 section 3.2: a request-target carries no fragment. */
            *why = "fragment ('#') in the target";
            return CH_EINVAL;
        } else if (!is_path_char(c)) {
            *why = "character not allowed in the path";
            return CH_EINVAL;
        }
    }
    return 0;
}

/* The end of the authority: the first '/', '?' or '#' after "://" (RFC 3986 section 3.2). */
static size_t authority_len(const char *a, size_t n)
{
    size_t i = 0;
    while (i < n && a[i] != '/' && a[i] != '?' && a[i] != '#')
        i++;
    return i;
}

/* ---- the three forms ---- */

/* RFC 9112 section 3.2.3: CONNECT uri-host ":" port. */
static int parse_connect(const char *t, size_t n, struct egress_target *out, const char **why)
{
    if (n == 0) {
        *why = "empty target";
        return CH_EINVAL;
    }
    if (scheme_len(t, n) || t[0] == '/' || authority_len(t, n) != n) {
        *why = "CONNECT takes an authority-form target (host:port) only";
        return CH_EINVAL;
    }
    if (parse_authority(t, n, &out->dest, why))
        return CH_EINVAL;
    if (out->dest.port == 0) {
        *why = "CONNECT target without a port";
        return CH_EINVAL;
    }
    out->kind = EGRESS_CONNECT;
    out->path = (struct slice){"", 0};
    return 0;
}

/* Why a non-CONNECT target is not absolute-form, as precisely as can be said. */
static const char *not_absolute(const char *t, size_t n)
{
    if (n == 0)
        return "empty target";
    if (t[0] == '/')
        return "origin-form target: the destination must be in the target";
    if (n == 1 && t[0] == '*')
        return "asterisk-form target not accepted";
    struct server_name sn;
    const char *unused;
    if (server_name_parse(t, n, &sn, &unused) == 0)
        return "authority-form target without CONNECT";
    return "not an absolute-form target (scheme://authority/path)";
}

/* RFC 9112 section 3.2.2: absolute-form, for the two schemes chappe relays. */
static int parse_absolute(const char *t, size_t n, struct egress_target *out, const char **why)
{
    size_t sl = scheme_len(t, n);
    if (sl == 0) {
        *why = not_absolute(t, n);
        return CH_EINVAL;
    }
    enum egress_kind kind;
    if (scheme_is(t, sl, "matrix-federation"))
        kind = EGRESS_MATRIX_FEDERATION;
    else if (scheme_is(t, sl, "https"))
        kind = EGRESS_HTTPS;
    else {
        *why = "scheme is neither matrix-federation nor https";
        return CH_EINVAL;
    }
    const char *a = t + sl + 3;
    size_t rest = n - sl - 3;
    size_t alen = authority_len(a, rest);
    if (parse_authority(a, alen, &out->dest, why))
        return CH_EINVAL;
    if (check_path(a + alen, rest - alen, why))
        return CH_EINVAL;
    out->kind = kind;
    out->path = (struct slice){a + alen, rest - alen};
    return 0;
}

int egress_target_parse(const char *method, size_t mlen, const char *target, size_t tlen,
                        struct egress_target *out, const char **why)
{
    const char *unused;
    if (why == NULL)
        why = &unused;
    memset(out, 0, sizeof(*out));
    *why = NULL;
    if (method == NULL) {
        method = "";
        mlen = 0;
    }
    if (target == NULL) {
        target = "";
        tlen = 0;
    }

    int rc = check_method(method, mlen, why);
    if (rc == 0 && tlen > EGRESS_TARGET_MAX) {
        *why = "target longer than 8 KiB";
        rc = CH_EINVAL;
    }
    if (rc == 0) {
        /* RFC 9110 section 9.1: method names are case-sensitive; "connect" is not CONNECT. */
        if (mlen == 7 && memcmp(method, "CONNECT", 7) == 0)
            rc = parse_connect(target, tlen, out, why);
        else
            rc = parse_absolute(target, tlen, out, why);
    }
    if (rc) {
        memset(out, 0, sizeof(*out));
        return CH_EINVAL;
    }
    return 0;
}

const char *egress_kind_name(enum egress_kind kind)
{
    switch (kind) {
    case EGRESS_MATRIX_FEDERATION:
        return "matrix-federation";
    case EGRESS_HTTPS:
        return "https";
    case EGRESS_CONNECT:
        return "connect";
    case EGRESS_NONE:
        break;
    }
    return "none";
}
