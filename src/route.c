/* route.c -- the spec's federation endpoint table, and the strict router that matches targets. */
/* SPDX-License-Identifier: ISC */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "chappe/policy.h"
#include "chappe/route.h"
#include "chappe/util.h"

/* More segments than any template has (the longest has 6). */
#define MAX_SEGMENTS 8

#define FED1 "/_matrix/federation/v1"
#define FED2 "/_matrix/federation/v2"
#define KEY2 "/_matrix/key/v2"

#define SIGNED ROUTE_AUTH_XMATRIX
#define PUBLIC ROUTE_AUTH_NONE

/*
 * From the OpenAPI files of matrix-spec (data/api/server-server): wellknown,
 * version, keys_server, keys_query, transactions, events, event_auth,
 * backfill, joins-v1/v2, leaving-v1/v2, knocks, invites-v1/v2,
 * third_party_invite, public_rooms, space_hierarchy, query, user_devices,
 * user_keys, openid, content_repository, room_policy. Their `security`
 * decides the auth column, with one correction: timestamp_to_event says
 * accessToken, a copy from the client-server API; it is a federation request
 * and every server signs it (Synapse requires X-Matrix).
 */
const struct route route_table[ROUTE_COUNT] = {
    {ROUTE_WELLKNOWN_SERVER, ROUTE_M_GET, "/.well-known/matrix/server", PUBLIC, "wellknown_server"},
    {ROUTE_VERSION, ROUTE_M_GET, FED1 "/version", PUBLIC, "version"},
    {ROUTE_KEY_SERVER, ROUTE_M_GET, KEY2 "/server", PUBLIC, "key_server"},
    {ROUTE_KEY_SERVER_KEYID, ROUTE_M_GET, KEY2 "/server/{keyId}", PUBLIC, "key_server_keyid"},
    {ROUTE_KEY_QUERY, ROUTE_M_GET, KEY2 "/query/{serverName}", PUBLIC, "key_query"},
    {ROUTE_KEY_QUERY_KEYID, ROUTE_M_GET, KEY2 "/query/{serverName}/{keyId}", PUBLIC,
     "key_query_keyid"},
    {ROUTE_KEY_QUERY_BATCH, ROUTE_M_POST, KEY2 "/query", PUBLIC, "key_query_batch"},
    {ROUTE_SEND, ROUTE_M_PUT, FED1 "/send/{txnId}", SIGNED, "send"},
    {ROUTE_EVENT, ROUTE_M_GET, FED1 "/event/{eventId}", SIGNED, "event"},
    {ROUTE_STATE, ROUTE_M_GET, FED1 "/state/{roomId}", SIGNED, "state"},
    {ROUTE_STATE_IDS, ROUTE_M_GET, FED1 "/state_ids/{roomId}", SIGNED, "state_ids"},
    {ROUTE_EVENT_AUTH, ROUTE_M_GET, FED1 "/event_auth/{roomId}/{eventId}", SIGNED, "event_auth"},
    {ROUTE_BACKFILL, ROUTE_M_GET, FED1 "/backfill/{roomId}", SIGNED, "backfill"},
    {ROUTE_GET_MISSING_EVENTS, ROUTE_M_POST, FED1 "/get_missing_events/{roomId}", SIGNED,
     "get_missing_events"},
    {ROUTE_TIMESTAMP_TO_EVENT, ROUTE_M_GET, FED1 "/timestamp_to_event/{roomId}", SIGNED,
     "timestamp_to_event"},
    {ROUTE_MAKE_JOIN, ROUTE_M_GET, FED1 "/make_join/{roomId}/{userId}", SIGNED, "make_join"},
    {ROUTE_SEND_JOIN_V1, ROUTE_M_PUT, FED1 "/send_join/{roomId}/{eventId}", SIGNED, "send_join_v1"},
    {ROUTE_SEND_JOIN_V2, ROUTE_M_PUT, FED2 "/send_join/{roomId}/{eventId}", SIGNED, "send_join_v2"},
    {ROUTE_MAKE_LEAVE, ROUTE_M_GET, FED1 "/make_leave/{roomId}/{userId}", SIGNED, "make_leave"},
    {ROUTE_SEND_LEAVE_V1, ROUTE_M_PUT, FED1 "/send_leave/{roomId}/{eventId}", SIGNED,
     "send_leave_v1"},
    {ROUTE_SEND_LEAVE_V2, ROUTE_M_PUT, FED2 "/send_leave/{roomId}/{eventId}", SIGNED,
     "send_leave_v2"},
    {ROUTE_MAKE_KNOCK, ROUTE_M_GET, FED1 "/make_knock/{roomId}/{userId}", SIGNED, "make_knock"},
    {ROUTE_SEND_KNOCK, ROUTE_M_PUT, FED1 "/send_knock/{roomId}/{eventId}", SIGNED, "send_knock"},
    {ROUTE_INVITE_V1, ROUTE_M_PUT, FED1 "/invite/{roomId}/{eventId}", SIGNED, "invite_v1"},
    {ROUTE_INVITE_V2, ROUTE_M_PUT, FED2 "/invite/{roomId}/{eventId}", SIGNED, "invite_v2"},
    {ROUTE_EXCHANGE_3PID_INVITE, ROUTE_M_PUT, FED1 "/exchange_third_party_invite/{roomId}", SIGNED,
     "exchange_third_party_invite"},
    {ROUTE_3PID_ONBIND, ROUTE_M_PUT, FED1 "/3pid/onbind", PUBLIC, "3pid_onbind"},
    {ROUTE_3PID_ONBIND_POST, ROUTE_M_POST, FED1 "/3pid/onbind", PUBLIC, "3pid_onbind_post"},
    {ROUTE_PUBLIC_ROOMS, ROUTE_M_GET, FED1 "/publicRooms", SIGNED, "public_rooms"},
    {ROUTE_PUBLIC_ROOMS_POST, ROUTE_M_POST, FED1 "/publicRooms", SIGNED, "public_rooms_post"},
    {ROUTE_HIERARCHY, ROUTE_M_GET, FED1 "/hierarchy/{roomId}", SIGNED, "hierarchy"},
    {ROUTE_QUERY_DIRECTORY, ROUTE_M_GET, FED1 "/query/directory", SIGNED, "query_directory"},
    {ROUTE_QUERY_PROFILE, ROUTE_M_GET, FED1 "/query/profile", SIGNED, "query_profile"},
    {ROUTE_QUERY, ROUTE_M_GET, FED1 "/query/{queryType}", SIGNED, "query"},
    {ROUTE_USER_DEVICES, ROUTE_M_GET, FED1 "/user/devices/{userId}", SIGNED, "user_devices"},
    {ROUTE_USER_KEYS_CLAIM, ROUTE_M_POST, FED1 "/user/keys/claim", SIGNED, "user_keys_claim"},
    {ROUTE_USER_KEYS_QUERY, ROUTE_M_POST, FED1 "/user/keys/query", SIGNED, "user_keys_query"},
    {ROUTE_OPENID_USERINFO, ROUTE_M_GET, FED1 "/openid/userinfo", ROUTE_AUTH_ACCESS_TOKEN,
     "openid_userinfo"},
    {ROUTE_MEDIA_DOWNLOAD, ROUTE_M_GET, FED1 "/media/download/{mediaId}", SIGNED, "media_download"},
    {ROUTE_MEDIA_THUMBNAIL, ROUTE_M_GET, FED1 "/media/thumbnail/{mediaId}", SIGNED,
     "media_thumbnail"},
    {ROUTE_POLICY_SIGN, ROUTE_M_POST, "/_matrix/policy/v1/sign", SIGNED, "policy_sign"},
};

#undef SIGNED
#undef PUBLIC

/* Template parameter names and what they hold. */
static const struct {
    const char *name;
    enum route_param_kind kind;
} param_names[] = {
    {"roomId", ROUTE_P_ROOM_ID},   {"eventId", ROUTE_P_EVENT_ID},
    {"userId", ROUTE_P_USER_ID},   {"serverName", ROUTE_P_SERVER_NAME},
    {"keyId", ROUTE_P_KEY_ID},     {"txnId", ROUTE_P_TXN_ID},
    {"mediaId", ROUTE_P_MEDIA_ID}, {"queryType", ROUTE_P_QUERY_TYPE},
};

static const char *const kind_names[ROUTE_P_KIND_COUNT] = {
    [ROUTE_P_ROOM_ID] = "room ID",         [ROUTE_P_EVENT_ID] = "event ID",
    [ROUTE_P_USER_ID] = "user ID",         [ROUTE_P_ROOM_ALIAS] = "room alias",
    [ROUTE_P_SERVER_NAME] = "server name", [ROUTE_P_KEY_ID] = "key ID",
    [ROUTE_P_TXN_ID] = "transaction ID",   [ROUTE_P_MEDIA_ID] = "media ID",
    [ROUTE_P_QUERY_TYPE] = "query type",
};

const char *route_param_kind_name(enum route_param_kind kind)
{
    return (unsigned)kind < ROUTE_P_KIND_COUNT ? kind_names[kind] : "parameter";
}

/* ---- characters ---- */

static int is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RFC 3986 section 2.3. */
static int is_unreserved(unsigned char c)
{
    return is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* RFC 3986 section 3.3: pchar without pct-encoded. */
static int is_pchar(unsigned char c)
{
    return is_unreserved(c) || (c != 0 && strchr("!$&'()*+,;=:@", c) != NULL);
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* The length of the sequence a UTF-8 lead byte starts, with its payload bits and the smallest
 * code point that length may carry (shorter would be overlong); 0 when c cannot lead. */
static size_t utf8_lead(unsigned char c, uint32_t *cp, uint32_t *min)
{
    if ((c & 0xe0) == 0xc0) {
        *cp = c & 0x1f;
        *min = 0x80;
        return 2;
    }
    if ((c & 0xf0) == 0xe0) {
        *cp = c & 0x0f;
        *min = 0x800;
        return 3;
    }
    if ((c & 0xf8) == 0xf0) {
        *cp = c & 0x07;
        *min = 0x10000;
        return 4;
    }
    return 0;
}

/*
 * Valid UTF-8 (RFC 3629: shortest form, no surrogate, at most U+10FFFF)
 * without NUL or control characters: IDs end up in logs and JSON.
 */
static int check_text(const char *s, size_t n, const char **why)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            if (c == 0) {
                *why = "NUL byte";
                return CH_EINVAL;
            }
            if (c < 0x20 || c == 0x7f) {
                *why = "control character";
                return CH_EINVAL;
            }
            i++;
            continue;
        }
        uint32_t cp, min;
        size_t len = utf8_lead(c, &cp, &min);
        if (len == 0 || n - i < len) {
            *why = "invalid UTF-8";
            return CH_EINVAL;
        }
        for (size_t k = 1; k < len; k++) {
            unsigned char cc = (unsigned char)s[i + k];
            if ((cc & 0xc0) != 0x80) {
                *why = "invalid UTF-8";
                return CH_EINVAL;
            }
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            *why = "invalid UTF-8";
            return CH_EINVAL;
        }
        if (cp <= 0x9f) {
            *why = "control character";
            return CH_EINVAL;
        }
        i += len;
    }
    return 0;
}

int route_decode_segment(const char *s, size_t n, char *out, size_t cap, size_t *outlen,
                         const char **why)
{
    const char *unused;
    if (why == NULL)
        why = &unused;
    size_t o = 0;
    if (cap == 0) {
        *why = "no room to decode into";
        return CH_ETOOBIG;
    }
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hex_value((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_value((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                *why = "invalid percent-escape";
                out[0] = '\0';
                return CH_EINVAL;
            }
            c = (unsigned char)(hi * 16 + lo);
            i += 2;
        } else if (!is_pchar(c)) {
            *why = "character not allowed in a path segment";
            out[0] = '\0';
            return CH_EINVAL;
        }
        if (o + 1 >= cap) {
            *why = "too long";
            out[0] = '\0';
            return CH_ETOOBIG;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    if (check_text(out, o, why)) {
        out[0] = '\0';
        return CH_EINVAL;
    }
    *outlen = o;
    return 0;
}

/* ---- identifier grammars (appendices, "Identifier Grammar"; room versions 1-12) ---- */

/* sigil localpart ":" server_name, the localpart any text without ':'. */
static int check_namespaced(const char *s, size_t n, char sigil, int empty_ok, const char **why)
{
    if (n == 0 || s[0] != sigil) {
        *why = "wrong sigil";
        return CH_EINVAL;
    }
    const char *colon = memchr(s + 1, ':', n - 1);
    if (colon == NULL) {
        *why = "no ':' before a server name";
        return CH_EINVAL;
    }
    if (colon == s + 1 && !empty_ok) {
        *why = "empty localpart";
        return CH_EINVAL;
    }
    struct server_name sn;
    size_t off = (size_t)(colon + 1 - s);
    return server_name_parse(colon + 1, n - off, &sn, why);
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/*
 * A sigil then a SHA-256 reference hash in unpadded base64: 43 characters,
 * the last carrying 4 bits and two zero bits. std_ok admits the standard
 * alphabet ('+', '/': room version 3), url_ok the URL-safe one ('-', '_':
 * version 4+); one ID never mixes them.
 */
static int check_hash_id(const char *s, size_t n, int std_ok, int url_ok, const char **why)
{
    if (n != 44) {
        *why = "hash ID not 43 base64 characters";
        return CH_EINVAL;
    }
    int std = 0, url = 0;
    for (size_t i = 1; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+' || c == '/')
            std = 1;
        else if (c == '-' || c == '_')
            url = 1;
        else if (!is_alnum(c)) {
            *why = "invalid character in hash ID";
            return CH_EINVAL;
        }
    }
    if ((std && !std_ok) || (url && !url_ok) || (std && url)) {
        *why = std && url ? "hash ID mixes base64 alphabets" : "wrong base64 alphabet in hash ID";
        return CH_EINVAL;
    }
    if (b64_value((unsigned char)s[n - 1]) % 4 != 0) {
        *why = "hash ID is not the encoding of 32 bytes";
        return CH_EINVAL;
    }
    return 0;
}

static int check_room_id(const char *s, size_t n, const char **why)
{
    if (n > 0 && s[0] == '!' && memchr(s, ':', n) == NULL)
        return check_hash_id(s, n, 0, 1, why); /* room version 12+ */
    return check_namespaced(s, n, '!', 0, why);
}

static int check_event_id(const char *s, size_t n, const char **why)
{
    if (n > 0 && s[0] == '$' && memchr(s, ':', n) == NULL)
        return check_hash_id(s, n, 1, 1, why); /* room versions 3+ */
    return check_namespaced(s, n, '$', 0, why);
}

/* algorithm ":" version, the version as keys.yaml says: [a-zA-Z0-9_]. */
static int check_key_id(const char *s, size_t n, const char **why)
{
    const char *colon = memchr(s, ':', n);
    if (colon == NULL || colon == s || colon == s + n - 1) {
        *why = "not algorithm:version";
        return CH_EINVAL;
    }
    for (const char *p = s; p < s + n; p++) {
        unsigned char c = (unsigned char)*p;
        int ok = p < colon ? ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')
                           : (p == colon || is_alnum(c) || c == '_');
        if (!ok) {
            *why = "invalid character in key ID";
            return CH_EINVAL;
        }
    }
    return 0;
}

/* 1*chars from an allowed set: media IDs [A-Za-z0-9_-], query types [A-Za-z0-9._~-]. */
static int check_token(const char *s, size_t n, int with_dot_tilde, const char **why)
{
    if (n == 0) {
        *why = "empty";
        return CH_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(is_alnum(c) || c == '-' || c == '_' || (with_dot_tilde && (c == '.' || c == '~')))) {
            *why = "invalid character";
            return CH_EINVAL;
        }
    }
    return 0;
}

static int check_txn_id(const char *s, size_t n, const char **why)
{
    if (n == 0) {
        *why = "empty";
        return CH_EINVAL;
    }
    /* A dot-segment (RFC 3986 section 5.2.4): a normalising hop would remove it. */
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) {
        *why = "dot-segment";
        return CH_EINVAL;
    }
    return 0;
}

int route_param_check(enum route_param_kind kind, const char *s, size_t n, const char **why)
{
    const char *unused;
    if (why == NULL)
        why = &unused;
    if (s == NULL || (unsigned)kind >= ROUTE_P_KIND_COUNT) {
        *why = "invalid argument";
        return CH_EINVAL;
    }
    if (check_text(s, n, why))
        return CH_EINVAL;
    size_t max = kind == ROUTE_P_SERVER_NAME ? ROUTE_PARAM_MAX : ROUTE_ID_MAX;
    if (n > max) {
        *why = "too long";
        return CH_EINVAL;
    }
    struct server_name sn;
    switch (kind) {
    case ROUTE_P_ROOM_ID:
        return check_room_id(s, n, why);
    case ROUTE_P_EVENT_ID:
        return check_event_id(s, n, why);
    case ROUTE_P_USER_ID:
        return check_namespaced(s, n, '@', 1, why);
    case ROUTE_P_ROOM_ALIAS:
        return check_namespaced(s, n, '#', 0, why);
    case ROUTE_P_SERVER_NAME:
        return server_name_parse(s, n, &sn, why);
    case ROUTE_P_KEY_ID:
        return check_key_id(s, n, why);
    case ROUTE_P_TXN_ID:
        return check_txn_id(s, n, why);
    case ROUTE_P_MEDIA_ID:
        return check_token(s, n, 0, why);
    case ROUTE_P_QUERY_TYPE:
        return check_token(s, n, 1, why);
    default:
        *why = "invalid argument";
        return CH_EINVAL;
    }
}

/* ---- matching ---- */

/* The method's bit; HEAD counts as GET. 0 for any other method. */
static unsigned method_bit(const char *m, size_t n)
{
    if (m == NULL)
        return 0;
    if ((n == 3 && memcmp(m, "GET", 3) == 0) || (n == 4 && memcmp(m, "HEAD", 4) == 0))
        return ROUTE_M_GET;
    if (n == 3 && memcmp(m, "PUT", 3) == 0)
        return ROUTE_M_PUT;
    if (n == 4 && memcmp(m, "POST", 4) == 0)
        return ROUTE_M_POST;
    return 0;
}

/* Split an absolute path into its segments; NULL, or why no template can match it. */
static const char *split_path(struct slice path, struct slice *seg, size_t *nseg)
{
    if (path.len == 0 || path.base[0] != '/')
        return "not an origin-form target";
    size_t n = 0, start = 1;
    for (size_t i = 1; i <= path.len; i++) {
        if (i < path.len && path.base[i] != '/')
            continue;
        if (i == start)
            return "empty path segment";
        if (n == MAX_SEGMENTS)
            return "too many path segments";
        seg[n++] = (struct slice){path.base + start, i - start};
        start = i + 1;
    }
    *nseg = n;
    return NULL;
}

/* The next template segment at *t (just after a '/'); advances *t to the next '/' or the end. */
static struct slice next_template_segment(const char **t)
{
    const char *s = *t + 1;
    const char *e = strchr(s, '/');
    if (e == NULL)
        e = s + strlen(s);
    *t = e;
    return (struct slice){s, (size_t)(e - s)};
}

static int is_param(struct slice ts)
{
    return ts.len >= 2 && ts.base[0] == '{' && ts.base[ts.len - 1] == '}';
}

/* Same number of segments, literal segments equal byte for byte (never decoded). */
static int shape_matches(const char *tpl, const struct slice *seg, size_t nseg)
{
    size_t i = 0;
    while (*tpl == '/') {
        struct slice ts = next_template_segment(&tpl);
        if (i == nseg)
            return 0;
        if (!is_param(ts) && !slice_eq(ts, seg[i]))
            return 0;
        i++;
    }
    return i == nseg;
}

static int lookup_param(struct slice ts, const char **name, enum route_param_kind *kind)
{
    struct slice inner = {ts.base + 1, ts.len - 2};
    for (size_t i = 0; i < ARRAY_LEN(param_names); i++) {
        if (slice_eq_str(inner, param_names[i].name)) {
            *name = param_names[i].name;
            *kind = param_names[i].kind;
            return 0;
        }
    }
    return CH_ENOENT;
}

/* Decode and check one parameter segment into p; on failure out->why names it. */
static int bind_param(struct slice ts, struct slice raw, struct route_param *p,
                      struct route_match *out)
{
    const char *why = NULL;
    if (lookup_param(ts, &p->name, &p->kind)) {
        snprintf(out->why, sizeof(out->why), "%.*s: unknown parameter in the route table",
                 (int)ts.len, ts.base);
        return CH_EINVAL;
    }
    /* Grammars of unreserved characters only: an escape there is never needed
     * (RFC 3986 section 2.3) and would let "%64irectory" pose as another query type. */
    if ((p->kind == ROUTE_P_QUERY_TYPE || p->kind == ROUTE_P_MEDIA_ID) &&
        memchr(raw.base, '%', raw.len)) {
        why = "percent-encoding not allowed here";
    } else if (route_decode_segment(raw.base, raw.len, p->value, sizeof(p->value), &p->len, &why) ==
               0) {
        route_param_check(p->kind, p->value, p->len, &why);
    }
    if (why == NULL)
        return 0;
    snprintf(out->why, sizeof(out->why), "%s: invalid %s: %s", p->name,
             route_param_kind_name(p->kind), why);
    return CH_EINVAL;
}

static enum route_result bind_params(const struct route *r, const struct slice *seg,
                                     struct route_match *out, const char **why)
{
    const char *tpl = r->path;
    size_t i = 0;
    while (*tpl == '/') {
        struct slice ts = next_template_segment(&tpl);
        if (is_param(ts)) {
            if (out->nparams == ROUTE_MAX_PARAMS ||
                bind_param(ts, seg[i], &out->params[out->nparams], out)) {
                memset(out->params, 0, sizeof(out->params));
                out->nparams = 0;
                *why = out->why;
                return ROUTE_BAD_PARAM;
            }
            out->nparams++;
        }
        i++;
    }
    out->route = r;
    return ROUTE_OK;
}

enum route_result route_match(const char *method, size_t mlen, const char *target, size_t tlen,
                              struct route_match *out, const char **why)
{
    const char *unused;
    if (why == NULL)
        why = &unused;
    memset(out, 0, sizeof(*out));
    *why = NULL;
    if (target == NULL)
        tlen = 0;

    /* RFC 9112 section 3.2.1: origin-form = absolute-path [ "?" query ]. */
    const char *q = tlen ? memchr(target, '?', tlen) : NULL;
    out->path = (struct slice){target ? target : "", q ? (size_t)(q - target) : tlen};
    if (q) {
        out->has_query = true;
        out->query = (struct slice){q + 1, tlen - out->path.len - 1};
    }

    struct slice seg[MAX_SEGMENTS];
    size_t nseg = 0;
    const char *bad = split_path(out->path, seg, &nseg);
    if (bad) {
        *why = bad;
        return ROUTE_NOT_FOUND;
    }

    unsigned m = method_bit(method, mlen);
    const struct route *hit = NULL;
    for (size_t i = 0; i < ROUTE_COUNT; i++) {
        const struct route *r = &route_table[i];
        if (!shape_matches(r->path, seg, nseg))
            continue;
        out->allow |= r->method;
        if (hit == NULL && (r->method & m))
            hit = r;
    }
    if (hit) {
        out->allow = 0;
        return bind_params(hit, seg, out, why);
    }
    if (out->allow) {
        *why = "method not allowed on this path";
        return ROUTE_METHOD_NOT_ALLOWED;
    }
    *why = "unknown path";
    return ROUTE_NOT_FOUND;
}

const char *route_param(const struct route_match *m, enum route_param_kind kind)
{
    for (size_t i = 0; i < m->nparams; i++)
        if (m->params[i].kind == kind)
            return m->params[i].value;
    return NULL;
}

int route_result_status(enum route_result r)
{
    switch (r) {
    case ROUTE_OK:
        return 200;
    case ROUTE_NOT_FOUND:
        return 404;
    case ROUTE_METHOD_NOT_ALLOWED:
        return 405;
    case ROUTE_BAD_PARAM:
        return 400;
    }
    return 500;
}

/* Spec, "Unsupported endpoints": 404 or 405 with M_UNRECOGNIZED. */
const char *route_result_errcode(enum route_result r)
{
    switch (r) {
    case ROUTE_OK:
        return "";
    case ROUTE_NOT_FOUND:
    case ROUTE_METHOD_NOT_ALLOWED:
        return "M_UNRECOGNIZED";
    case ROUTE_BAD_PARAM:
        return "M_INVALID_PARAM";
    }
    return "M_UNKNOWN";
}

size_t route_format_allow(unsigned allow, char *out, size_t cap)
{
    static const struct {
        unsigned bit;
        const char *names;
    } order[] = {{ROUTE_M_GET, "GET, HEAD"}, {ROUTE_M_PUT, "PUT"}, {ROUTE_M_POST, "POST"}};
    size_t len = 0;
    if (cap)
        out[0] = '\0';
    for (size_t i = 0; i < ARRAY_LEN(order); i++) {
        if (!(allow & order[i].bit))
            continue;
        const char *sep = len ? ", " : "";
        int w = snprintf(cap > len ? out + len : NULL, cap > len ? cap - len : 0, "%s%s", sep,
                         order[i].names);
        len += (size_t)w;
    }
    return len;
}
