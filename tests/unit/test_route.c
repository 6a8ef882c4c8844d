/* test_route.c -- the federation endpoint table and the strict router. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chappe/route.h"
#include "chappe/util.h"

#define F1 "/_matrix/federation/v1"
#define F2 "/_matrix/federation/v2"
#define K2 "/_matrix/key/v2"

/* Reference hashes of sha256("chappe"): room version 3 (standard) and 4+ (URL-safe) base64. */
#define HASH_STD "Fg+p3dBrX/NvBnCofIOQo/LRsQ87Cylt26QGmXNNwzI"
#define HASH_URL "Fg-p3dBrX_NvBnCofIOQo_LRsQ87Cylt26QGmXNNwzI"
/* The same, percent-encoded the way Synapse does it (urllib quote, safe=""). */
#define HASH_STD_ENC "Fg%2Bp3dBrX%2FNvBnCofIOQo%2FLRsQ87Cylt26QGmXNNwzI"

#define ROOM     "!abc123:matrix.org"
#define ROOM_ENC "%21abc123%3Amatrix.org"
#define ROOM_V12 "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"
#define EVENT_V1 "$abc123:matrix.org"
#define EVENT_V4 "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"
#define USER     "@someone:example.org"
#define USER_ENC "%40someone%3Aexample.org"

static enum route_result match(const char *method, const char *target, struct route_match *m,
                               const char **why)
{
    return route_match(method, strlen(method), target, strlen(target), m, why);
}

/* Matched to this route with these decoded parameters (NULL: none). */
static void expect_route(const char *method, const char *target, enum route_id id, const char *p0,
                         const char *p1)
{
    struct route_match m;
    const char *why = "unset";
    enum route_result r = match(method, target, &m, &why);
    if (r != ROUTE_OK)
        fail_msg("%s %s: result %d (%s)", method, target, r, why ? why : "-");
    assert_null(why);
    assert_non_null(m.route);
    if (m.route->id != id)
        fail_msg("%s %s: route %s, want %s", method, target, m.route->name, route_table[id].name);
    assert_ptr_equal(m.route, &route_table[id]);
    assert_int_equal(m.allow, 0);
    size_t want = (p0 != NULL) + (p1 != NULL);
    assert_int_equal(m.nparams, want);
    if (p0) {
        assert_string_equal(m.params[0].value, p0);
        assert_int_equal(m.params[0].len, strlen(p0));
    }
    if (p1) {
        assert_string_equal(m.params[1].value, p1);
        assert_int_equal(m.params[1].len, strlen(p1));
    }
}

/* Refused with this result; why contains why_part when given. */
static void expect_result(const char *method, const char *target, enum route_result want,
                          const char *why_part)
{
    struct route_match m;
    const char *why = NULL;
    enum route_result r = match(method, target, &m, &why);
    if (r != want)
        fail_msg("%s %s: result %d, want %d (%s)", method, target, r, want, why ? why : "-");
    assert_null(m.route);
    assert_int_equal(m.nparams, 0);
    assert_non_null(why);
    assert_true(why[0] != '\0');
    if (why_part && strstr(why, why_part) == NULL)
        fail_msg("%s %s: why \"%s\" lacks \"%s\"", method, target, why, why_part);
    if (want == ROUTE_BAD_PARAM)
        assert_ptr_equal(why, m.why);
    if (want == ROUTE_METHOD_NOT_ALLOWED)
        assert_int_not_equal(m.allow, 0);
    else
        assert_int_equal(m.allow, 0);
}

static void expect_bad(const char *method, const char *target, const char *why_part)
{
    expect_result(method, target, ROUTE_BAD_PARAM, why_part);
}

static void expect_404(const char *method, const char *target)
{
    expect_result(method, target, ROUTE_NOT_FOUND, NULL);
}

static void expect_405(const char *method, const char *target, unsigned allow)
{
    struct route_match m;
    expect_result(method, target, ROUTE_METHOD_NOT_ALLOWED, NULL);
    match(method, target, &m, NULL);
    assert_int_equal(m.allow, allow);
}

static const char *method_name(enum route_method m)
{
    return m == ROUTE_M_GET ? "GET" : m == ROUTE_M_PUT ? "PUT" : "POST";
}

/* A realistic value for each parameter kind, percent-encoded as Synapse sends it. */
static const char *sample_raw(const char *name)
{
    if (strcmp(name, "{roomId}") == 0)
        return ROOM_ENC;
    if (strcmp(name, "{eventId}") == 0)
        return "%24" HASH_STD_ENC;
    if (strcmp(name, "{userId}") == 0)
        return USER_ENC;
    if (strcmp(name, "{serverName}") == 0)
        return "matrix.org";
    if (strcmp(name, "{keyId}") == 0)
        return "ed25519%3Aa_AbCd";
    if (strcmp(name, "{txnId}") == 0)
        return "1700000000000";
    if (strcmp(name, "{mediaId}") == 0)
        return "ascERGshawAWawugaAcauga";
    if (strcmp(name, "{queryType}") == 0)
        return "org.example.custom";
    return NULL;
}

/* Fill each {param} of a template with its sample. */
static void build_target(const char *tpl, char *out, size_t cap)
{
    size_t o = 0;
    while (*tpl) {
        const char *close = tpl[0] == '{' ? strchr(tpl, '}') : NULL;
        if (close) {
            char name[32];
            size_t n = (size_t)(close - tpl) + 1;
            assert_true(n < sizeof(name));
            memcpy(name, tpl, n);
            name[n] = '\0';
            const char *v = sample_raw(name);
            if (v == NULL)
                fail_msg("no sample for %s", name);
            o += (size_t)snprintf(out + o, cap - o, "%s", v);
            tpl = close + 1;
        } else {
            assert_true(o + 1 < cap);
            out[o++] = *tpl++;
        }
    }
    out[o] = '\0';
}

/* The table is indexed by id, names are unique, and every template routes to itself. */
static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < ROUTE_COUNT; i++) {
        const struct route *r = &route_table[i];
        assert_int_equal(r->id, i);
        assert_non_null(r->name);
        assert_non_null(r->path);
        assert_true(r->path[0] == '/');
        assert_true(r->method == ROUTE_M_GET || r->method == ROUTE_M_PUT ||
                    r->method == ROUTE_M_POST);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(route_table[j].name, r->name);
            if (strcmp(route_table[j].path, r->path) == 0)
                assert_int_not_equal(route_table[j].method, r->method);
        }
        char target[512];
        build_target(r->path, target, sizeof(target));
        struct route_match m;
        const char *why = NULL;
        enum route_result res = match(method_name(r->method), target, &m, &why);
        if (res != ROUTE_OK || m.route != r)
            fail_msg("%s %s: %d %s (%s)", method_name(r->method), target, res,
                     m.route ? m.route->name : "-", why ? why : "-");
    }
}

/* Every endpoint, with a target as a homeserver sends it. */
static void test_every_endpoint(void **state)
{
    (void)state;
    expect_route("GET", "/.well-known/matrix/server", ROUTE_WELLKNOWN_SERVER, NULL, NULL);
    expect_route("GET", F1 "/version", ROUTE_VERSION, NULL, NULL);
    expect_route("GET", K2 "/server", ROUTE_KEY_SERVER, NULL, NULL);
    expect_route("GET", K2 "/server/ed25519%3Aauto", ROUTE_KEY_SERVER_KEYID, "ed25519:auto", NULL);
    expect_route("GET", K2 "/query/matrix.org?minimum_valid_until_ts=1234567890", ROUTE_KEY_QUERY,
                 "matrix.org", NULL);
    expect_route("GET", K2 "/query/matrix.org%3A8448/ed25519%3Aabc123", ROUTE_KEY_QUERY_KEYID,
                 "matrix.org:8448", "ed25519:abc123");
    expect_route("POST", K2 "/query", ROUTE_KEY_QUERY_BATCH, NULL, NULL);
    expect_route("PUT", F1 "/send/1700000000000", ROUTE_SEND, "1700000000000", NULL);
    expect_route("GET", F1 "/event/%24" HASH_STD_ENC, ROUTE_EVENT, "$" HASH_STD, NULL);
    expect_route("GET", F1 "/state/" ROOM_ENC "?event_id=%24abc", ROUTE_STATE, ROOM, NULL);
    expect_route("GET", F1 "/state_ids/" ROOM_ENC "?event_id=%24abc", ROUTE_STATE_IDS, ROOM, NULL);
    expect_route("GET", F1 "/event_auth/" ROOM_ENC "/" EVENT_V4, ROUTE_EVENT_AUTH, ROOM, EVENT_V4);
    expect_route("GET", F1 "/backfill/" ROOM_ENC "?v=%24abc&limit=2", ROUTE_BACKFILL, ROOM, NULL);
    expect_route("POST", F1 "/get_missing_events/" ROOM_ENC, ROUTE_GET_MISSING_EVENTS, ROOM, NULL);
    expect_route("GET", F1 "/timestamp_to_event/" ROOM_ENC "?ts=1432684800000&dir=f",
                 ROUTE_TIMESTAMP_TO_EVENT, ROOM, NULL);
    expect_route("GET", F1 "/make_join/" ROOM_ENC "/" USER_ENC "?ver=10&ver=11", ROUTE_MAKE_JOIN,
                 ROOM, USER);
    expect_route("PUT", F1 "/send_join/" ROOM_ENC "/%24" HASH_STD_ENC, ROUTE_SEND_JOIN_V1, ROOM,
                 "$" HASH_STD);
    expect_route("PUT", F2 "/send_join/" ROOM_ENC "/" EVENT_V4 "?omit_members=true",
                 ROUTE_SEND_JOIN_V2, ROOM, EVENT_V4);
    expect_route("GET", F1 "/make_leave/" ROOM_ENC "/" USER_ENC, ROUTE_MAKE_LEAVE, ROOM, USER);
    expect_route("PUT", F1 "/send_leave/" ROOM_ENC "/" EVENT_V4, ROUTE_SEND_LEAVE_V1, ROOM,
                 EVENT_V4);
    expect_route("PUT", F2 "/send_leave/" ROOM_ENC "/" EVENT_V4, ROUTE_SEND_LEAVE_V2, ROOM,
                 EVENT_V4);
    expect_route("GET", F1 "/make_knock/" ROOM_ENC "/" USER_ENC "?ver=7", ROUTE_MAKE_KNOCK, ROOM,
                 USER);
    expect_route("PUT", F1 "/send_knock/" ROOM_ENC "/" EVENT_V4, ROUTE_SEND_KNOCK, ROOM, EVENT_V4);
    expect_route("PUT", F1 "/invite/" ROOM_ENC "/%24abc123%3Amatrix.org", ROUTE_INVITE_V1, ROOM,
                 EVENT_V1);
    expect_route("PUT", F2 "/invite/" ROOM_ENC "/" EVENT_V4, ROUTE_INVITE_V2, ROOM, EVENT_V4);
    expect_route("PUT", F1 "/exchange_third_party_invite/" ROOM_ENC, ROUTE_EXCHANGE_3PID_INVITE,
                 ROOM, NULL);
    expect_route("PUT", F1 "/3pid/onbind", ROUTE_3PID_ONBIND, NULL, NULL);
    expect_route("POST", F1 "/3pid/onbind", ROUTE_3PID_ONBIND_POST, NULL, NULL);
    expect_route("GET", F1 "/publicRooms?limit=10&since=x", ROUTE_PUBLIC_ROOMS, NULL, NULL);
    expect_route("POST", F1 "/publicRooms", ROUTE_PUBLIC_ROOMS_POST, NULL, NULL);
    expect_route("GET", F1 "/hierarchy/" ROOM_ENC "?suggested_only=true", ROUTE_HIERARCHY, ROOM,
                 NULL);
    expect_route("GET", F1 "/query/directory?room_alias=%23room_alias%3Aexample.org",
                 ROUTE_QUERY_DIRECTORY, NULL, NULL);
    expect_route("GET", F1 "/query/profile?user_id=%40someone%3Aexample.org&field=displayname",
                 ROUTE_QUERY_PROFILE, NULL, NULL);
    expect_route("GET", F1 "/query/org.example.custom?x=1", ROUTE_QUERY, "org.example.custom",
                 NULL);
    expect_route("GET", F1 "/user/devices/" USER_ENC, ROUTE_USER_DEVICES, USER, NULL);
    expect_route("POST", F1 "/user/keys/claim", ROUTE_USER_KEYS_CLAIM, NULL, NULL);
    expect_route("POST", F1 "/user/keys/query", ROUTE_USER_KEYS_QUERY, NULL, NULL);
    expect_route("GET", F1 "/openid/userinfo?access_token=SomeT0kenHere", ROUTE_OPENID_USERINFO,
                 NULL, NULL);
    expect_route("GET", F1 "/media/download/ascERGshawAWawugaAcauga?timeout_ms=5000",
                 ROUTE_MEDIA_DOWNLOAD, "ascERGshawAWawugaAcauga", NULL);
    expect_route("GET", F1 "/media/thumbnail/ascERGshawAWawugaAcauga?width=64&height=64",
                 ROUTE_MEDIA_THUMBNAIL, "ascERGshawAWawugaAcauga", NULL);
    expect_route("POST", "/_matrix/policy/v1/sign", ROUTE_POLICY_SIGN, NULL, NULL);
}

/* Auth requirements that differ from "X-Matrix required". */
static void test_auth_column(void **state)
{
    (void)state;
    size_t none = 0;
    for (size_t i = 0; i < ROUTE_COUNT; i++)
        none += route_table[i].auth != ROUTE_AUTH_XMATRIX;
    assert_int_equal(route_table[ROUTE_WELLKNOWN_SERVER].auth, ROUTE_AUTH_NONE);
    assert_int_equal(route_table[ROUTE_VERSION].auth, ROUTE_AUTH_NONE);
    assert_int_equal(route_table[ROUTE_KEY_SERVER].auth, ROUTE_AUTH_NONE);
    assert_int_equal(route_table[ROUTE_KEY_SERVER_KEYID].auth, ROUTE_AUTH_NONE);
    assert_int_equal(route_table[ROUTE_KEY_QUERY].auth, ROUTE_AUTH_NONE);
    assert_int_equal(route_table[ROUTE_KEY_QUERY_KEYID].auth, ROUTE_AUTH_NONE);
    assert_int_equal(route_table[ROUTE_KEY_QUERY_BATCH].auth, ROUTE_AUTH_NONE);
    assert_int_equal(route_table[ROUTE_3PID_ONBIND].auth, ROUTE_AUTH_NONE);
    assert_int_equal(route_table[ROUTE_3PID_ONBIND_POST].auth, ROUTE_AUTH_NONE);
    assert_int_equal(route_table[ROUTE_OPENID_USERINFO].auth, ROUTE_AUTH_ACCESS_TOKEN);
    assert_int_equal(none, 10);
    assert_int_equal(route_table[ROUTE_TIMESTAMP_TO_EVENT].auth, ROUTE_AUTH_XMATRIX);
    assert_int_equal(route_table[ROUTE_MEDIA_DOWNLOAD].auth, ROUTE_AUTH_XMATRIX);
    assert_string_equal(route_table[ROUTE_SEND].name, "send");
    assert_string_equal(route_table[ROUTE_MAKE_JOIN].name, "make_join");
    assert_string_equal(route_table[ROUTE_SEND].path, "/_matrix/federation/v1/send/{txnId}");
}

/* HEAD is GET without the body (RFC 9110 section 9.3.2); not PUT or POST. */
static void test_head(void **state)
{
    (void)state;
    expect_route("HEAD", F1 "/version", ROUTE_VERSION, NULL, NULL);
    expect_route("HEAD", "/.well-known/matrix/server", ROUTE_WELLKNOWN_SERVER, NULL, NULL);
    expect_route("HEAD", F1 "/media/download/abc", ROUTE_MEDIA_DOWNLOAD, "abc", NULL);
    expect_route("HEAD", F1 "/publicRooms", ROUTE_PUBLIC_ROOMS, NULL, NULL);
    expect_405("HEAD", F1 "/send/1", ROUTE_M_PUT);
    expect_405("HEAD", F1 "/user/keys/query", ROUTE_M_POST);
}

static void test_wrong_method(void **state)
{
    (void)state;
    expect_405("GET", F1 "/send/1", ROUTE_M_PUT);
    expect_405("POST", F1 "/send/1", ROUTE_M_PUT);
    expect_405("PUT", F1 "/version", ROUTE_M_GET);
    expect_405("DELETE", F1 "/publicRooms", ROUTE_M_GET | ROUTE_M_POST);
    expect_405("PUT", F1 "/publicRooms", ROUTE_M_GET | ROUTE_M_POST);
    expect_405("GET", F1 "/3pid/onbind", ROUTE_M_PUT | ROUTE_M_POST);
    expect_405("GET", K2 "/query", ROUTE_M_POST);
    expect_405("POST", K2 "/query/matrix.org", ROUTE_M_GET);
    expect_405("PUT", F1 "/query/directory", ROUTE_M_GET);
    expect_405("POST", "/_matrix/federation/v1/make_join/" ROOM_ENC "/" USER_ENC, ROUTE_M_GET);
    expect_405("GET", F1 "/send_join/" ROOM_ENC "/" EVENT_V4, ROUTE_M_PUT);
    expect_405("GET", "/_matrix/policy/v1/sign", ROUTE_M_POST);
    expect_405("OPTIONS", F1 "/version", ROUTE_M_GET);
    /* Methods are case-sensitive (RFC 9110 section 9.1). */
    expect_405("get", F1 "/version", ROUTE_M_GET);
    expect_405("Put", F1 "/send/1", ROUTE_M_PUT);
    expect_405("GETX", F1 "/version", ROUTE_M_GET);
    expect_405("", F1 "/version", ROUTE_M_GET);
    /* The method decides before the parameters are looked at. */
    expect_405("GET", F1 "/send/..", ROUTE_M_PUT);
}

static void test_unknown_paths(void **state)
{
    (void)state;
    expect_404("GET", "/");
    expect_404("GET", "");
    expect_404("GET", "*");
    expect_404("GET", "?x");
    expect_404("GET", "https://matrix.org/_matrix/federation/v1/version");
    expect_404("GET", "_matrix/federation/v1/version");
    expect_404("GET", F1);
    expect_404("GET", F1 "/unknown");
    expect_404("GET", "/_matrix/federation/v3/version");
    expect_404("GET", "/_matrix/client/v3/sync");
    expect_404("GET", "/_matrix/media/v3/download/matrix.org/abc");
    expect_404("PUT", F1 "/send");
    expect_404("PUT", F1 "/send/1/2");
    expect_404("GET", F1 "/state_ids");
    expect_404("GET", "/_matrix/federation/unstable/rooms/" ROOM_ENC "/complexity");
    expect_404("POST", "/_matrix/federation/unstable/user/keys/claim");
    expect_404("GET", K2 "/query/a/b/c");
    expect_404("GET", "/.well-known/matrix/client");
    expect_404("GET", "/a/b/c/d/e/f/g/h/i/j/k");
    /* Literals are case-sensitive. */
    expect_404("GET", "/_MATRIX/federation/v1/version");
    expect_404("GET", F1 "/Version");
    expect_404("GET", F1 "/publicrooms");
    /* A room version 3 event ID whose '/' was not encoded splits the path. */
    expect_404("GET", F1 "/event/$" HASH_STD);
}

/* Literal segments are never decoded: an encoded literal is another path. */
static void test_encoded_literals(void **state)
{
    (void)state;
    expect_404("PUT", F1 "/%73end/1");
    expect_404("PUT", "/%5Fmatrix/federation/v1/send/1");
    expect_404("PUT", "/_matrix%2Ffederation/v1/send/1");
    expect_404("GET", "/_matrix/federation/v1%2Fversion");
    expect_404("GET", "/.well-known/matrix%2Fserver");
    expect_404("POST", F1 "/user/keys%2Fquery");
    expect_404("GET", K2 "/%73erver");
    /* A parameter in place of a literal still gets the literal's route when unencoded... */
    expect_route("GET", F1 "/query/directory", ROUTE_QUERY_DIRECTORY, NULL, NULL);
    expect_route("GET", F1 "/query/Directory", ROUTE_QUERY, "Directory", NULL);
    /* ...and an escape cannot make {queryType} pose as it. */
    expect_bad("GET", F1 "/query/%64irectory", "queryType");
    expect_bad("GET", F1 "/query/profil%65", "percent-encoding");
}

/* Room version 3 event IDs carry '/' and '+': %2F decodes to '/', '+' stays '+'. */
static void test_event_id_slash(void **state)
{
    (void)state;
    expect_route("GET", F1 "/event/%24" HASH_STD_ENC, ROUTE_EVENT, "$" HASH_STD, NULL);
    expect_route("GET", F1 "/event/$Fg+p3dBrX%2FNvBnCofIOQo%2fLRsQ87Cylt26QGmXNNwzI", ROUTE_EVENT,
                 "$" HASH_STD, NULL);
    expect_route("GET", F1 "/event/" EVENT_V4, ROUTE_EVENT, EVENT_V4, NULL);
    expect_route("GET", F1 "/event/%24" HASH_URL, ROUTE_EVENT, "$" HASH_URL, NULL);
    expect_route("GET", F1 "/event/%24abc123%3Amatrix.org", ROUTE_EVENT, EVENT_V1, NULL);
    expect_route("GET", F1 "/event/$abc123:matrix.org", ROUTE_EVENT, EVENT_V1, NULL);
    expect_route("GET", F1 "/event_auth/" ROOM_V12 "/%24" HASH_STD_ENC, ROUTE_EVENT_AUTH, ROOM_V12,
                 "$" HASH_STD);
}

/* %2F where the grammar has no '/'. */
static void test_slash_refused(void **state)
{
    (void)state;
    expect_bad("GET", K2 "/query/matrix.org%2Fevil", "serverName");
    expect_bad("GET", K2 "/query/%2E%2E%2Fetc", "serverName");
    expect_bad("GET", F1 "/state/%21abc%3Amatrix.org%2Fx", "roomId");
    expect_bad("GET", F1 "/user/devices/%40a%3Aexample.org%2F", "userId");
    expect_bad("GET", K2 "/server/ed25519%3Aa%2Fb", "keyId");
    expect_bad("GET", F1 "/media/download/abc%2Fdef", "mediaId");
    expect_bad("GET", F1 "/event/%24abc%2Fdef", "eventId");
    /* An opaque transaction ID may hold one: the homeserver decodes it the same way. */
    expect_route("PUT", F1 "/send/a%2Fb", ROUTE_SEND, "a/b", NULL);
    /* And so may the localpart of a room version 1-2 ID (any text but ':'). */
    expect_route("GET", F1 "/state/%21a%2Fb%3Amatrix.org", ROUTE_STATE, "!a/b:matrix.org", NULL);
}

/* Each escape is decoded exactly once. */
static void test_double_encoding(void **state)
{
    (void)state;
    /* "%252F" is "%2F" after one decoding: not base64, so not a hash event ID. */
    expect_bad("GET", F1 "/event/%24Fg%2Bp3dBrX%252FNvBnCofIOQo%252FLRsQ87Cylt26QGmXNNwzI",
               "eventId");
    /* A version 1-2 localpart may hold '%': it stays as sent once decoded. */
    expect_route("GET", F1 "/event/%24a%252Fb%3Amatrix.org", ROUTE_EVENT, "$a%2Fb:matrix.org",
                 NULL);
    expect_route("PUT", F1 "/send/%2525", ROUTE_SEND, "%25", NULL);
    expect_bad("GET", K2 "/query/matrix.org%253A8448", "serverName");
}

static void test_trailing_slash_and_empty_segments(void **state)
{
    (void)state;
    expect_404("PUT", F1 "/send/1/");
    expect_404("GET", F1 "/version/");
    expect_404("GET", "/.well-known/matrix/server/");
    expect_404("GET", K2 "/server/");
    expect_404("GET", K2 "/query/matrix.org/");
    expect_404("GET", F1 "/publicRooms/");
    expect_404("GET", "//_matrix/federation/v1/version");
    expect_404("GET", "/_matrix//federation/v1/version");
    expect_404("PUT", F1 "/send//1");
    expect_404("PUT", F1 "/send//");
    expect_404("GET", F1 "/state_ids/");
    expect_404("GET", F1 "/version//");
    expect_404("GET", F1 "/version/?x=1");
}

static void test_query_ignored(void **state)
{
    (void)state;
    struct route_match m;
    const char *target = F1 "/version?a=b/c//d?e";
    assert_int_equal(match("GET", target, &m, NULL), ROUTE_OK);
    assert_int_equal(m.route->id, ROUTE_VERSION);
    assert_true(m.has_query);
    assert_int_equal(m.path.len, strlen(F1 "/version"));
    assert_ptr_equal(m.path.base, target);
    assert_int_equal(m.query.len, strlen("a=b/c//d?e"));
    assert_memory_equal(m.query.base, "a=b/c//d?e", m.query.len);

    assert_int_equal(match("GET", F1 "/version?", &m, NULL), ROUTE_OK);
    assert_true(m.has_query);
    assert_int_equal(m.query.len, 0);

    assert_int_equal(match("GET", F1 "/version", &m, NULL), ROUTE_OK);
    assert_false(m.has_query);
    assert_int_equal(m.query.len, 0);

    /* The query's escapes are not the router's business, good or bad. */
    expect_route("PUT", F1 "/send/1?%zz=%00", ROUTE_SEND, "1", NULL);
    expect_route("GET", F1 "/state/" ROOM_ENC "?event_id=$x/y", ROUTE_STATE, ROOM, NULL);
    /* A fragment is not part of a request-target. */
    expect_404("GET", F1 "/version#x");
    expect_bad("PUT", F1 "/send/1#x", "txnId");
}

static void test_invalid_escapes(void **state)
{
    (void)state;
    expect_bad("PUT", F1 "/send/%", "invalid percent-escape");
    expect_bad("PUT", F1 "/send/a%", "invalid percent-escape");
    expect_bad("PUT", F1 "/send/%4", "invalid percent-escape");
    expect_bad("PUT", F1 "/send/%G1", "invalid percent-escape");
    expect_bad("PUT", F1 "/send/%1G", "invalid percent-escape");
    expect_bad("PUT", F1 "/send/%%41", "invalid percent-escape");
    expect_bad("PUT", F1 "/send/%00", "NUL");
    expect_bad("PUT", F1 "/send/a%00b", "NUL");
    expect_bad("PUT", F1 "/send/%0A", "control");
    expect_bad("PUT", F1 "/send/%0d%0a", "control");
    expect_bad("PUT", F1 "/send/%1F", "control");
    expect_bad("PUT", F1 "/send/%7F", "control");
    expect_bad("PUT", F1 "/send/%C2%85", "control");  /* U+0085 NEL, a C1 control */
    expect_bad("PUT", F1 "/send/%C0%AF", "UTF-8");    /* overlong '/' */
    expect_bad("PUT", F1 "/send/%E0%80%AF", "UTF-8"); /* overlong '/' */
    expect_bad("PUT", F1 "/send/%ED%A0%80", "UTF-8"); /* surrogate */
    expect_bad("PUT", F1 "/send/%F4%90%80%80", "UTF-8");
    expect_bad("PUT", F1 "/send/%FF", "UTF-8");
    expect_bad("PUT", F1 "/send/%C3", "UTF-8");
    expect_bad("PUT", F1 "/send/%C3%28", "UTF-8");
    /* Raw bytes outside pchar (RFC 3986 section 3.3). */
    expect_bad("PUT", F1 "/send/a b", "not allowed");
    expect_bad("PUT", F1 "/send/a\"b", "not allowed");
    expect_bad("PUT", F1 "/send/a%b", "invalid percent-escape");
    expect_bad("PUT", F1 "/send/<x>", "not allowed");
    expect_bad("PUT", F1 "/send/a\\b", "not allowed");
    expect_bad("PUT", F1 "/send/{1}", "not allowed");
    expect_bad("PUT", F1 "/send/\xc3\xa9", "not allowed");
    expect_bad("GET", K2 "/query/[::1]", "not allowed");
    /* Encoded, the same characters are fine where the grammar allows them. */
    expect_route("PUT", F1 "/send/%C3%A9%E2%82%AC%F0%9F%98%80", ROUTE_SEND,
                 "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", NULL);
    expect_route("GET", K2 "/query/%5B%3A%3A1%5D%3A8448", ROUTE_KEY_QUERY, "[::1]:8448", NULL);
    expect_route("PUT", F1 "/send/a%20b", ROUTE_SEND, "a b", NULL);
    /* A raw NUL in the target. */
    struct route_match m;
    const char t[] = F1 "/send/a\0b";
    assert_int_equal(route_match("PUT", 3, t, sizeof(t) - 1, &m, NULL), ROUTE_BAD_PARAM);
    const char t2[] = F1 "/vers\0ion";
    assert_int_equal(route_match("GET", 3, t2, sizeof(t2) - 1, &m, NULL), ROUTE_NOT_FOUND);
}

static void fill(char *out, char c, size_t n)
{
    memset(out, c, n);
    out[n] = '\0';
}

static void test_overlong(void **state)
{
    (void)state;
    char local[400], target[1600], want[420];
    /* A room ID of 255 bytes is the longest allowed: "!" + 243 + ":matrix.org". */
    fill(local, 'a', 244);
    snprintf(want, sizeof(want), "!%s:matrix.org", local);
    snprintf(target, sizeof(target), F1 "/state/%s", want);
    expect_bad("GET", target, "too long");
    fill(local, 'a', 243);
    snprintf(want, sizeof(want), "!%s:matrix.org", local);
    assert_int_equal(strlen(want), ROUTE_ID_MAX);
    snprintf(target, sizeof(target), F1 "/state/%s", want);
    expect_route("GET", target, ROUTE_STATE, want, NULL);

    /* Transaction IDs: 255 bytes, decoded. */
    fill(local, 'x', ROUTE_ID_MAX);
    snprintf(target, sizeof(target), F1 "/send/%s", local);
    expect_route("PUT", target, ROUTE_SEND, local, NULL);
    fill(local, 'x', ROUTE_ID_MAX + 1);
    snprintf(target, sizeof(target), F1 "/send/%s", local);
    expect_bad("PUT", target, "too long");

    /* Longer than the decoding room. */
    fill(local, 'x', ROUTE_PARAM_MAX + 1);
    snprintf(target, sizeof(target), F1 "/send/%s", local);
    expect_bad("PUT", target, "too long");

    /* 255 escapes decode to 255 bytes: the raw length is not the limit. */
    size_t o = (size_t)snprintf(target, sizeof(target), F1 "/send/");
    for (size_t i = 0; i < ROUTE_ID_MAX; i++)
        o += (size_t)snprintf(target + o, sizeof(target) - o, "%%41");
    fill(want, 'A', ROUTE_ID_MAX);
    expect_route("PUT", target, ROUTE_SEND, want, NULL);

    /* Media IDs and query types. */
    fill(local, 'm', ROUTE_ID_MAX + 1);
    snprintf(target, sizeof(target), F1 "/media/download/%s", local);
    expect_bad("GET", target, "mediaId");
    fill(local, 'q', ROUTE_ID_MAX + 1);
    snprintf(target, sizeof(target), F1 "/query/%s", local);
    expect_bad("GET", target, "queryType");
}

static void test_room_id_grammar(void **state)
{
    (void)state;
    expect_route("GET", F1 "/state/" ROOM_V12, ROUTE_STATE, ROOM_V12, NULL);
    expect_route("GET", F1 "/state/!a:%5B::1%5D", ROUTE_STATE, "!a:[::1]", NULL);
    expect_route("GET", F1 "/state/!a:1.2.3.4:8448", ROUTE_STATE, "!a:1.2.3.4:8448", NULL);
    expect_route("GET", F1 "/state/!a:Matrix.ORG", ROUTE_STATE, "!a:Matrix.ORG", NULL);
    expect_route("GET", F1 "/state/%21%C3%A9t%C3%A9:matrix.org", ROUTE_STATE,
                 "!\xc3\xa9t\xc3\xa9:matrix.org", NULL);
    expect_bad("GET", F1 "/state/!abc", "roomId: invalid room ID");
    expect_bad("GET", F1 "/state/abc:matrix.org", "sigil");
    expect_bad("GET", F1 "/state/%24abc:matrix.org", "sigil");
    expect_bad("GET", F1 "/state/!:matrix.org", "empty localpart");
    expect_bad("GET", F1 "/state/!abc:", "empty server name");
    expect_bad("GET", F1 "/state/!abc:matrix.org:", "port");
    expect_bad("GET", F1 "/state/!abc:matrix.org:99999", "port");
    expect_bad("GET", F1 "/state/!abc:exa_mple.org", "server name");
    expect_bad("GET", F1 "/state/!abc:matrix.org.", "trailing dot");
    expect_bad("GET", F1 "/state/!abc:a:b", "port");
    /* Version 12: URL-safe only. */
    expect_bad("GET", F1 "/state/!" HASH_STD_ENC, "alphabet");
    expect_route("GET", F1 "/state/!" HASH_URL, ROUTE_STATE, "!" HASH_URL, NULL);
    expect_bad("GET", F1 "/state/!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpY", "43");
}

static void test_event_id_grammar(void **state)
{
    (void)state;
    /* 42 or 44 characters. */
    expect_bad("GET", F1 "/event/$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Z", "43");
    expect_bad("GET", F1 "/event/$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5ZgA", "43");
    /* The last character of 32 bytes has two zero bits: 'h' is not one. */
    expect_bad("GET", F1 "/event/$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zh", "32 bytes");
    /* One ID, one alphabet. */
    expect_bad("GET", F1 "/event/$Fg+p3dBrX_NvBnCofIOQo_LRsQ87Cylt26QGmXNNwzI", "mixes");
    expect_bad("GET", F1 "/event/$Rqnc=F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", "character");
    expect_bad("GET", F1 "/event/abc123:matrix.org", "sigil");
    expect_bad("GET", F1 "/event/$:matrix.org", "empty localpart");
    expect_bad("GET", F1 "/event/$a:", "server name");
    expect_bad("GET", F1 "/event/$", "43");
}

/* User IDs: the historical grammar the spec says servers MUST accept (appendices). */
static void test_user_id_grammar(void **state)
{
    (void)state;
    expect_route("GET", F1 "/user/devices/@Alice:example.org", ROUTE_USER_DEVICES,
                 "@Alice:example.org", NULL);
    expect_route("GET", F1 "/user/devices/%40:example.org", ROUTE_USER_DEVICES, "@:example.org",
                 NULL);
    expect_route("GET", F1 "/user/devices/@a!b$c:example.org", ROUTE_USER_DEVICES,
                 "@a!b$c:example.org", NULL);
    expect_route("GET", F1 "/user/devices/%40%C3%A9%20x%23:example.org:8448", ROUTE_USER_DEVICES,
                 "@\xc3\xa9 x#:example.org:8448", NULL);
    expect_bad("GET", F1 "/user/devices/alice:example.org", "sigil");
    expect_bad("GET", F1 "/user/devices/@alice", "':'");
    expect_bad("GET", F1 "/user/devices/@alice:", "empty server name");
    expect_bad("GET", F1 "/user/devices/@al%09ice:example.org", "control");
    expect_bad("GET", F1 "/make_join/" ROOM_ENC "/%21x%3Aexample.org", "userId");
    expect_bad("GET", F1 "/make_join/%40x%3Aexample.org/" USER_ENC, "roomId");
}

static void test_other_grammars(void **state)
{
    (void)state;
    /* Key IDs: algorithm ":" version, version [a-zA-Z0-9_] (definitions/keys.yaml). */
    expect_route("GET", K2 "/server/ed25519:a_AbCd", ROUTE_KEY_SERVER_KEYID, "ed25519:a_AbCd",
                 NULL);
    expect_bad("GET", K2 "/server/ed25519", "algorithm:version");
    expect_bad("GET", K2 "/server/ed25519%3A", "algorithm:version");
    expect_bad("GET", K2 "/server/%3Aabc", "algorithm:version");
    expect_bad("GET", K2 "/server/ED25519:abc", "keyId");
    expect_bad("GET", K2 "/server/ed25519:a-b", "keyId");
    expect_bad("GET", K2 "/server/ed25519:a:b", "keyId");
    /* Server names. */
    expect_route("GET", K2 "/query/Matrix.Org", ROUTE_KEY_QUERY, "Matrix.Org", NULL);
    expect_route("GET", K2 "/query/1.2.3.4:8448", ROUTE_KEY_QUERY, "1.2.3.4:8448", NULL);
    expect_bad("GET", K2 "/query/1.2.3.256", "IPv4");
    expect_bad("GET", K2 "/query/matrix.org:0", "port");
    expect_bad("GET", K2 "/query/-matrix.org", "serverName");
    expect_bad("GET", K2 "/query/%5B%3A%3A1%25eth0%5D", "serverName");
    /* Media IDs: [A-Za-z0-9_-], never encoded. */
    expect_route("GET", F1 "/media/download/a_B-9", ROUTE_MEDIA_DOWNLOAD, "a_B-9", NULL);
    expect_bad("GET", F1 "/media/download/a.b", "mediaId");
    expect_bad("GET", F1 "/media/thumbnail/a~b", "mediaId");
    expect_bad("GET", F1 "/media/thumbnail/%41", "percent-encoding");
    /* Query types: the opaque identifier grammar [0-9A-Za-z._~-]. */
    expect_route("GET", F1 "/query/m.x_y-z~1", ROUTE_QUERY, "m.x_y-z~1", NULL);
    expect_bad("GET", F1 "/query/a:b", "queryType");
    expect_bad("GET", F1 "/query/a@b", "queryType");
    /* Transaction IDs: opaque, but no dot-segment. */
    expect_route("PUT", F1 "/send/...", ROUTE_SEND, "...", NULL);
    expect_route("PUT", F1 "/send/m1.2~x", ROUTE_SEND, "m1.2~x", NULL);
    expect_bad("PUT", F1 "/send/.", "dot-segment");
    expect_bad("PUT", F1 "/send/..", "dot-segment");
    expect_bad("PUT", F1 "/send/%2E%2E", "dot-segment");
    expect_bad("PUT", F1 "/send/.%2e", "dot-segment");
}

static void expect_decode(const char *raw, const char *want)
{
    char out[64];
    size_t len = 12345;
    const char *why = NULL;
    int rc = route_decode_segment(raw, strlen(raw), out, sizeof(out), &len, &why);
    if (rc)
        fail_msg("%s: %s", raw, why);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(out, want, len + 1);
}

static void expect_decode_fail(const char *raw, size_t cap, int rc_want, const char *why_part)
{
    char out[64];
    size_t len = 12345;
    const char *why = NULL;
    assert_true(cap <= sizeof(out));
    memset(out, 'Z', sizeof(out));
    assert_int_equal(route_decode_segment(raw, strlen(raw), out, cap, &len, &why), rc_want);
    assert_int_equal(len, 12345);
    assert_non_null(why);
    if (strstr(why, why_part) == NULL)
        fail_msg("%s: why \"%s\" lacks \"%s\"", raw, why, why_part);
    if (cap)
        assert_int_equal(out[0], '\0');
}

static void test_decode_segment(void **state)
{
    (void)state;
    expect_decode("", "");
    expect_decode("abc", "abc");
    expect_decode("%41%62%2f%2F", "Ab//");
    expect_decode("%252F", "%2F");
    expect_decode("a+b", "a+b");
    expect_decode("%2B", "+");
    expect_decode("!$&'()*+,;=:@-._~", "!$&'()*+,;=:@-._~");
    expect_decode("%e2%82%ac", "\xe2\x82\xac");
    expect_decode("%F0%9F%98%80", "\xf0\x9f\x98\x80");
    expect_decode_fail("%", 64, CH_EINVAL, "percent-escape");
    expect_decode_fail("%2", 64, CH_EINVAL, "percent-escape");
    expect_decode_fail("%-1", 64, CH_EINVAL, "percent-escape");
    expect_decode_fail("%00", 64, CH_EINVAL, "NUL");
    expect_decode_fail("a/b", 64, CH_EINVAL, "not allowed");
    expect_decode_fail("a?b", 64, CH_EINVAL, "not allowed");
    expect_decode_fail("a#b", 64, CH_EINVAL, "not allowed");
    expect_decode_fail("%C2%9F", 64, CH_EINVAL, "control");
    expect_decode_fail("%C2%A0%80", 64, CH_EINVAL, "UTF-8");
    /* cap counts the NUL. */
    expect_decode_fail("abcd", 4, CH_ETOOBIG, "too long");
    expect_decode_fail("%41%41%41%41", 4, CH_ETOOBIG, "too long");
    expect_decode_fail("a", 0, CH_ETOOBIG, "room");
    char out[4];
    size_t len = 0;
    assert_int_equal(route_decode_segment("abc", 3, out, sizeof(out), &len, NULL), 0);
    assert_int_equal(len, 3);
    assert_string_equal(out, "abc");
    assert_int_equal(route_decode_segment("%", 1, out, sizeof(out), &len, NULL), CH_EINVAL);
}

static void test_param_check(void **state)
{
    (void)state;
    const char *why = NULL;
#define OK(kind, s)  assert_int_equal(route_param_check(kind, s, strlen(s), &why), 0)
#define BAD(kind, s) assert_int_equal(route_param_check(kind, s, strlen(s), &why), CH_EINVAL)
    OK(ROUTE_P_ROOM_ALIAS, "#room_alias:example.org");
    OK(ROUTE_P_ROOM_ALIAS, "#\xc3\xa9:example.org");
    BAD(ROUTE_P_ROOM_ALIAS, "#:example.org");
    BAD(ROUTE_P_ROOM_ALIAS, "#room");
    BAD(ROUTE_P_ROOM_ALIAS, "!room:example.org");
    OK(ROUTE_P_ROOM_ID, ROOM);
    OK(ROUTE_P_EVENT_ID, "$" HASH_STD);
    OK(ROUTE_P_USER_ID, USER);
    OK(ROUTE_P_SERVER_NAME, "[1234:5678::abcd]:5678");
    BAD(ROUTE_P_SERVER_NAME, "");
    OK(ROUTE_P_KEY_ID, "ed25519:1");
    OK(ROUTE_P_KEY_ID, "signed_curve25519:AAAAHg");
    OK(ROUTE_P_TXN_ID, "t");
    BAD(ROUTE_P_TXN_ID, "");
    OK(ROUTE_P_MEDIA_ID, "x");
    BAD(ROUTE_P_MEDIA_ID, "");
    OK(ROUTE_P_QUERY_TYPE, "profile");
    BAD(ROUTE_P_QUERY_TYPE, "");
    BAD(ROUTE_P_TXN_ID, "a\nb");
    assert_int_equal(route_param_check(ROUTE_P_TXN_ID, "a\0b", 3, &why), CH_EINVAL);
    assert_string_equal(why, "NUL byte");
    assert_int_equal(route_param_check(ROUTE_P_KIND_COUNT, "a", 1, &why), CH_EINVAL);
    assert_int_equal(route_param_check(ROUTE_P_TXN_ID, NULL, 0, NULL), CH_EINVAL);
    assert_int_equal(route_param_check(ROUTE_P_TXN_ID, "a", 1, NULL), 0);
#undef OK
#undef BAD
    assert_string_equal(route_param_kind_name(ROUTE_P_EVENT_ID), "event ID");
    assert_string_equal(route_param_kind_name(ROUTE_P_KIND_COUNT), "parameter");
}

static void test_route_param(void **state)
{
    (void)state;
    struct route_match m;
    assert_int_equal(match("GET", F1 "/make_join/" ROOM_ENC "/" USER_ENC, &m, NULL), ROUTE_OK);
    assert_string_equal(route_param(&m, ROUTE_P_ROOM_ID), ROOM);
    assert_string_equal(route_param(&m, ROUTE_P_USER_ID), USER);
    assert_null(route_param(&m, ROUTE_P_EVENT_ID));
    assert_string_equal(m.params[0].name, "roomId");
    assert_int_equal(m.params[0].kind, ROUTE_P_ROOM_ID);
    assert_string_equal(m.params[1].name, "userId");
    assert_int_equal(m.params[1].kind, ROUTE_P_USER_ID);
    assert_int_equal(match("GET", F1 "/version", &m, NULL), ROUTE_OK);
    assert_null(route_param(&m, ROUTE_P_ROOM_ID));
}

/* why names the parameter and the reason; a failed match keeps nothing half-decoded. */
static void test_why(void **state)
{
    (void)state;
    struct route_match m;
    const char *why = NULL;
    assert_int_equal(match("GET", F1 "/event_auth/" ROOM_ENC "/%24bad", &m, &why), ROUTE_BAD_PARAM);
    assert_string_equal(why, "eventId: invalid event ID: hash ID not 43 base64 characters");
    assert_int_equal(m.nparams, 0);
    assert_string_equal(m.params[0].value, "");
    assert_null(m.route);
    assert_int_equal(match("GET", F1 "/nope", &m, &why), ROUTE_NOT_FOUND);
    assert_string_equal(why, "unknown path");
    assert_int_equal(match("GET", F1 "/send/1", &m, &why), ROUTE_METHOD_NOT_ALLOWED);
    assert_string_equal(why, "method not allowed on this path");
    assert_int_equal(match("GET", F1 "//x", &m, &why), ROUTE_NOT_FOUND);
    assert_string_equal(why, "empty path segment");
    assert_int_equal(match("GET", "x", &m, &why), ROUTE_NOT_FOUND);
    assert_string_equal(why, "not an origin-form target");
    /* why may be NULL; a NULL target is an empty one. */
    assert_int_equal(match("GET", F1 "/version", &m, NULL), ROUTE_OK);
    assert_int_equal(route_match("GET", 3, NULL, 0, &m, &why), ROUTE_NOT_FOUND);
    assert_int_equal(route_match(NULL, 0, F1 "/version", strlen(F1 "/version"), &m, &why),
                     ROUTE_METHOD_NOT_ALLOWED);
}

static void test_result_helpers(void **state)
{
    (void)state;
    assert_int_equal(route_result_status(ROUTE_OK), 200);
    assert_int_equal(route_result_status(ROUTE_NOT_FOUND), 404);
    assert_int_equal(route_result_status(ROUTE_METHOD_NOT_ALLOWED), 405);
    assert_int_equal(route_result_status(ROUTE_BAD_PARAM), 400);
    assert_string_equal(route_result_errcode(ROUTE_OK), "");
    assert_string_equal(route_result_errcode(ROUTE_NOT_FOUND), "M_UNRECOGNIZED");
    assert_string_equal(route_result_errcode(ROUTE_METHOD_NOT_ALLOWED), "M_UNRECOGNIZED");
    assert_string_equal(route_result_errcode(ROUTE_BAD_PARAM), "M_INVALID_PARAM");

    char buf[64];
    assert_int_equal(route_format_allow(ROUTE_M_GET, buf, sizeof(buf)), 9);
    assert_string_equal(buf, "GET, HEAD");
    route_format_allow(ROUTE_M_PUT, buf, sizeof(buf));
    assert_string_equal(buf, "PUT");
    route_format_allow(ROUTE_M_GET | ROUTE_M_POST, buf, sizeof(buf));
    assert_string_equal(buf, "GET, HEAD, POST");
    route_format_allow(ROUTE_M_PUT | ROUTE_M_POST, buf, sizeof(buf));
    assert_string_equal(buf, "PUT, POST");
    assert_int_equal(route_format_allow(0, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
    /* Truncated, still terminated; the return says what it needed. */
    assert_int_equal(route_format_allow(ROUTE_M_GET | ROUTE_M_PUT, buf, 6), 14);
    assert_string_equal(buf, "GET, ");
    assert_int_equal(route_format_allow(ROUTE_M_GET | ROUTE_M_PUT, NULL, 0), 14);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_every_endpoint),
        cmocka_unit_test(test_auth_column),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_wrong_method),
        cmocka_unit_test(test_unknown_paths),
        cmocka_unit_test(test_encoded_literals),
        cmocka_unit_test(test_event_id_slash),
        cmocka_unit_test(test_slash_refused),
        cmocka_unit_test(test_double_encoding),
        cmocka_unit_test(test_trailing_slash_and_empty_segments),
        cmocka_unit_test(test_query_ignored),
        cmocka_unit_test(test_invalid_escapes),
        cmocka_unit_test(test_overlong),
        cmocka_unit_test(test_room_id_grammar),
        cmocka_unit_test(test_event_id_grammar),
        cmocka_unit_test(test_user_id_grammar),
        cmocka_unit_test(test_other_grammars),
        cmocka_unit_test(test_decode_segment),
        cmocka_unit_test(test_param_check),
        cmocka_unit_test(test_route_param),
        cmocka_unit_test(test_why),
        cmocka_unit_test(test_result_helpers),
    };
    return cmocka_run_group_tests_name("route", tests, NULL, NULL);
}
