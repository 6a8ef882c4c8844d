/* route.h -- the federation endpoints of the Matrix spec, and a strict router for request targets.
 */
/* SPDX-License-Identifier: ISC */
#ifndef CHAPPE_ROUTE_H
#define CHAPPE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include "chappe/buf.h"

/*
 * Every endpoint a remote server (or an identity server) may call on the
 * federation listener, one per (method, path template), from the server-server
 * OpenAPI files of the current spec (matrix-spec, data/api/server-server).
 * The order is the table's and the matching order: a literal template comes
 * before a parameter template of the same shape (query/directory before
 * query/{queryType}). Below, ".../v1" stands for /_matrix/federation/v1.
 */
enum route_id {
    ROUTE_WELLKNOWN_SERVER = 0, /* GET  /.well-known/matrix/server */
    ROUTE_VERSION,              /* GET  /_matrix/federation/v1/version */
    ROUTE_KEY_SERVER,           /* GET  /_matrix/key/v2/server */
    ROUTE_KEY_SERVER_KEYID,     /* GET  /_matrix/key/v2/server/{keyId} (removed from the spec,
                                        still served by Synapse) */
    ROUTE_KEY_QUERY,            /* GET  /_matrix/key/v2/query/{serverName} */
    ROUTE_KEY_QUERY_KEYID,      /* GET  /_matrix/key/v2/query/{serverName}/{keyId} (idem) */
    ROUTE_KEY_QUERY_BATCH,      /* POST /_matrix/key/v2/query */
    ROUTE_SEND,                 /* PUT  .../v1/send/{txnId} */
    ROUTE_EVENT,                /* GET  .../v1/event/{eventId} */
    ROUTE_STATE,                /* GET  .../v1/state/{roomId} */
    ROUTE_STATE_IDS,            /* GET  .../v1/state_ids/{roomId} */
    ROUTE_EVENT_AUTH,           /* GET  .../v1/event_auth/{roomId}/{eventId} */
    ROUTE_BACKFILL,             /* GET  .../v1/backfill/{roomId} */
    ROUTE_GET_MISSING_EVENTS,   /* POST .../v1/get_missing_events/{roomId} */
    ROUTE_TIMESTAMP_TO_EVENT,   /* GET  .../v1/timestamp_to_event/{roomId} */
    ROUTE_MAKE_JOIN,            /* GET  .../v1/make_join/{roomId}/{userId} */
    ROUTE_SEND_JOIN_V1,         /* PUT  .../v1/send_join/{roomId}/{eventId} (deprecated) */
    ROUTE_SEND_JOIN_V2,         /* PUT  .../v2/send_join/{roomId}/{eventId} */
    ROUTE_MAKE_LEAVE,           /* GET  .../v1/make_leave/{roomId}/{userId} */
    ROUTE_SEND_LEAVE_V1,        /* PUT  .../v1/send_leave/{roomId}/{eventId} (deprecated) */
    ROUTE_SEND_LEAVE_V2,        /* PUT  .../v2/send_leave/{roomId}/{eventId} */
    ROUTE_MAKE_KNOCK,           /* GET  .../v1/make_knock/{roomId}/{userId} */
    ROUTE_SEND_KNOCK,           /* PUT  .../v1/send_knock/{roomId}/{eventId} */
    ROUTE_INVITE_V1,            /* PUT  .../v1/invite/{roomId}/{eventId} */
    ROUTE_INVITE_V2,            /* PUT  .../v2/invite/{roomId}/{eventId} */
    ROUTE_EXCHANGE_3PID_INVITE, /* PUT  .../v1/exchange_third_party_invite/{roomId} */
    ROUTE_3PID_ONBIND,          /* PUT  .../v1/3pid/onbind (identity servers, no X-Matrix) */
    ROUTE_3PID_ONBIND_POST,     /* POST .../v1/3pid/onbind: what Synapse and Sydent use
                                   (matrix-spec issue #524) */
    ROUTE_PUBLIC_ROOMS,         /* GET  .../v1/publicRooms */
    ROUTE_PUBLIC_ROOMS_POST,    /* POST .../v1/publicRooms (with a filter) */
    ROUTE_HIERARCHY,            /* GET  .../v1/hierarchy/{roomId} */
    ROUTE_QUERY_DIRECTORY,      /* GET  .../v1/query/directory */
    ROUTE_QUERY_PROFILE,        /* GET  .../v1/query/profile */
    ROUTE_QUERY,                /* GET  .../v1/query/{queryType} (any other query type) */
    ROUTE_USER_DEVICES,         /* GET  .../v1/user/devices/{userId} */
    ROUTE_USER_KEYS_CLAIM,      /* POST .../v1/user/keys/claim */
    ROUTE_USER_KEYS_QUERY,      /* POST .../v1/user/keys/query */
    ROUTE_OPENID_USERINFO,      /* GET  .../v1/openid/userinfo (?access_token=, no X-Matrix) */
    ROUTE_MEDIA_DOWNLOAD,       /* GET  .../v1/media/download/{mediaId} */
    ROUTE_MEDIA_THUMBNAIL,      /* GET  .../v1/media/thumbnail/{mediaId} */
    ROUTE_POLICY_SIGN,          /* POST /_matrix/policy/v1/sign (policy servers) */
    ROUTE_COUNT
};

/* Methods, as bits so a set of them can say what a path allows. */
enum route_method {
    ROUTE_M_GET = 1u << 0,
    ROUTE_M_PUT = 1u << 1,
    ROUTE_M_POST = 1u << 2,
};

/* What authenticates a request on a route. */
enum route_auth {
    ROUTE_AUTH_XMATRIX = 0,  /* an X-Matrix Authorization header is required */
    ROUTE_AUTH_NONE,         /* public: discovery, keys, version, identity-server callback */
    ROUTE_AUTH_ACCESS_TOKEN, /* no X-Matrix; an OpenID access_token in the query string,
                                which logs must not record */
};

/*
 * Kinds of path parameter, each with its grammar. Every decoded value is
 * valid UTF-8 without NUL or control characters (C0, DEL, C1), at most
 * ROUTE_ID_MAX bytes unless said otherwise. "localpart" below means any such
 * text without ':'.
 */
enum route_param_kind {
    ROUTE_P_ROOM_ID = 0, /* "!" non-empty localpart ":" server name (room versions 1-11), or
                            "!" + 43 URL-safe unpadded base64 chars (version 12+: the create
                            event's reference hash) */
    ROUTE_P_EVENT_ID,    /* "$" non-empty localpart ":" server name (room versions 1-2), or
                            "$" + 43 unpadded base64 chars of a 32-byte hash, either the
                            standard alphabet (version 3, may hold '/' and '+') or the URL-safe
                            one (version 4+), not mixed */
    ROUTE_P_USER_ID,     /* "@" localpart ":" server name, the historical grammar the spec says
                            servers MUST accept (upper case, non-ASCII, empty localpart) */
    ROUTE_P_ROOM_ALIAS,  /* "#" non-empty localpart ":" server name (not in any path today;
                            for callers validating query parameters) */
    ROUTE_P_SERVER_NAME, /* server_name_parse() grammar, kept as sent (server names are
                            case-sensitive) */
    ROUTE_P_KEY_ID,      /* algorithm ":" version: 1*[a-z0-9_] ":" 1*[A-Za-z0-9_] */
    ROUTE_P_TXN_ID,      /* opaque transaction ID: non-empty, not "." or ".." */
    ROUTE_P_MEDIA_ID,    /* 1*[A-Za-z0-9_-] (client-server spec, "Content repository") */
    ROUTE_P_QUERY_TYPE,  /* opaque identifier: 1*[A-Za-z0-9._~-] (appendices) */
    ROUTE_P_KIND_COUNT
};

/* Longest ID the spec allows (appendices: user, room, event IDs and aliases <= 255 bytes). */
#define ROUTE_ID_MAX 255
/* Room for one decoded parameter (a server name with port is a little over 255). */
#define ROUTE_PARAM_MAX 300
/* No template has more parameters than this. */
#define ROUTE_MAX_PARAMS 2

struct route {
    enum route_id id;
    enum route_method method;
    const char *path; /* template, e.g. "/_matrix/federation/v1/send/{txnId}" */
    enum route_auth auth;
    const char *name; /* short, unique, for logs and metrics: "send", "make_join", ... */
};

/* The table, indexed by enum route_id (route_table[i].id == i). */
extern const struct route route_table[ROUTE_COUNT];

struct route_param {
    enum route_param_kind kind;
    const char *name; /* as in the template: "roomId" (static) */
    size_t len;
    char value[ROUTE_PARAM_MAX + 1]; /* percent-decoded once, validated, NUL-terminated */
};

struct route_match {
    const struct route *route; /* ROUTE_OK: the matched entry; NULL otherwise */
    unsigned allow;            /* ROUTE_METHOD_NOT_ALLOWED: the route_method bits the path
                                  accepts (route_format_allow() writes the Allow header) */
    struct slice path;         /* the target up to '?' (raw, a view into the target) */
    struct slice query;        /* after the first '?', without it; len 0 when none */
    bool has_query;            /* a '?' was present (even with nothing after it) */
    size_t nparams;
    struct route_param params[ROUTE_MAX_PARAMS];
    char why[192]; /* ROUTE_BAD_PARAM: which parameter and why */
};

enum route_result {
    ROUTE_OK = 0,
    ROUTE_NOT_FOUND,          /* no template has this path: 404 M_UNRECOGNIZED */
    ROUTE_METHOD_NOT_ALLOWED, /* a template has it, for other methods: 405 M_UNRECOGNIZED + Allow */
    ROUTE_BAD_PARAM,          /* the path is known, a parameter is not valid: 400 M_INVALID_PARAM */
};

/*
 * Route a request. method is the request method as received (case-sensitive,
 * RFC 9110 section 9.1); target is the request-target in origin-form
 * (absolute-path ["?" query], RFC 9112 section 3.2.1). Anything else (an
 * absolute-form or asterisk-form target, an empty path) is ROUTE_NOT_FOUND.
 *
 * The path is split on '/' and compared with each template in table order:
 * same number of segments, no empty segment anywhere (so "//" and a trailing
 * '/' match nothing: no template of the spec has one), literal segments equal
 * byte for byte and never percent-decoded (".../v1/%73end/..." is not "send").
 * The query is not looked at. The first template whose literals and method
 * match decides: its parameters are percent-decoded exactly once
 * (route_decode_segment) and checked against their kind; query types and
 * media IDs, whose grammars are made of unreserved characters only, must
 * arrive without any percent-encoding (RFC 3986 section 2.3), so that
 * ".../query/%64irectory" cannot pose as a query type other than
 * ROUTE_QUERY_DIRECTORY.
 *
 * HEAD is accepted wherever GET is (RFC 9110 section 9.3.2: HEAD is GET
 * without the content; Synapse answers it the same way): out->route is then
 * the GET route, and the caller sends no body back.
 *
 * Returns the result; *out is always filled (route NULL unless ROUTE_OK).
 * *why (may be NULL) is NULL on ROUTE_OK, otherwise a reason: static text,
 * or out->why for ROUTE_BAD_PARAM, so it lives as long as *out.
 */
enum route_result route_match(const char *method, size_t mlen, const char *target, size_t tlen,
                              struct route_match *out, const char **why);

/* The decoded value of the first parameter of this kind, or NULL when the route has none. */
const char *route_param(const struct route_match *m, enum route_param_kind kind);

/*
 * Percent-decode one path segment s[0..n) into out (cap bytes, NUL added).
 * The raw segment may hold only pchar (RFC 3986 section 3.3: unreserved,
 * sub-delims, ':', '@') and "%" HEXDIG HEXDIG; each escape is decoded once
 * ("%252F" gives "%2F"). The decoded bytes must be valid UTF-8 (no overlong
 * form, surrogate or code point past U+10FFFF) without NUL or control
 * characters (C0, DEL, C1). 0 and *outlen; CH_EINVAL (bad byte or escape,
 * bad decoded text) or CH_ETOOBIG (the decoded value and its NUL do not fit
 * in cap) with *why (static text).
 */
int route_decode_segment(const char *s, size_t n, char *out, size_t cap, size_t *outlen,
                         const char **why);

/*
 * Check a decoded value against the grammar of its kind (enum
 * route_param_kind), including the text rules of route_decode_segment.
 * 0, or CH_EINVAL with *why (static text).
 */
int route_param_check(enum route_param_kind kind, const char *s, size_t n, const char **why);

/* The kind's name for messages: "room ID", "event ID", ... */
const char *route_param_kind_name(enum route_param_kind kind);

/* HTTP status and Matrix errcode for a result: 200 ""; 404, 405 "M_UNRECOGNIZED"; 400
 * "M_INVALID_PARAM". */
int route_result_status(enum route_result r);
const char *route_result_errcode(enum route_result r);

/* Write an Allow field value for a set of route_method bits, HEAD after GET: "GET, HEAD, PUT".
 * Truncated to fit cap (NUL included); returns the length it needed. */
size_t route_format_allow(unsigned allow, char *out, size_t cap);

#endif
