/* keydoc.c -- check the key documents other servers publish, directly or through a notary. */
/* SPDX-License-Identifier: ISC */
#include <stdlib.h>
#include <string.h>

#include "chappe/b64.h"
#include "chappe/cjson.h"
#include "chappe/keydoc.h"
#include "chappe/util.h"

#define ED25519_PREFIX     "ed25519:"
#define ED25519_PREFIX_LEN (sizeof(ED25519_PREFIX) - 1)
#define VERSION_MAX        (KEYDOC_KEY_ID_MAX - sizeof(ED25519_PREFIX))
/* Untrusted text quoted in a message is cut here: an error line stays short. */
#define QUOTE_MAX 80

/*
 * Append s quoted for an error line: printable ASCII as is, '"', '\' and any
 * other byte as \xNN, at most QUOTE_MAX bytes then "...". The line stays one
 * line of ASCII whatever the document holds.
 */
static void put_quoted(struct buf *err, const char *s, size_t n)
{
    buf_append(err, "\"", 1);
    size_t shown = n < QUOTE_MAX ? n : QUOTE_MAX;
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            buf_append(err, s + i, 1);
        else
            buf_appendf(err, "\\x%02x", c);
    }
    buf_append_str(err, n > shown ? "\"..." : "\"");
}

/*
 * Append a message from another module as the rest of one line: its own final
 * newline dropped, control bytes and DEL written \xNN (a JSON path quoting a
 * key of the document may hold a raw DEL).
 */
static void put_line(struct buf *err, const struct buf *why)
{
    size_t n = why->len;
    while (n > 0 && buf_data(why)[n - 1] == '\n')
        n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf_data(why)[i];
        if (c < 0x20 || c == 0x7f)
            buf_appendf(err, "\\x%02x", c);
        else
            buf_append(err, buf_data(why) + i, 1);
    }
    buf_append(err, "\n", 1);
}

/* A JSON string equal to s, byte for byte (a string holding U+0000 is compared whole). */
static bool string_is(const json_t *v, const char *s)
{
    size_t n = strlen(s);
    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0;
}

static bool is_version_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/*
 * Classify a key id: 1 for "ed25519:<version>" with a version of 1 to
 * VERSION_MAX characters of [a-zA-Z0-9_] (server-server API, "Publishing
 * Keys": "The version must have characters matching the regular expression
 * [a-zA-Z0-9_]"), copied to id; 0 for another algorithm (skipped, as Synapse's
 * is_signing_algorithm_supported skips it); CH_EINVAL for an ed25519 id with a
 * bad version.
 */
static int classify_id(const char *k, size_t n, char id[KEYDOC_KEY_ID_MAX])
{
    if (n < ED25519_PREFIX_LEN || memcmp(k, ED25519_PREFIX, ED25519_PREFIX_LEN) != 0)
        return 0;
    size_t vlen = n - ED25519_PREFIX_LEN;
    if (vlen == 0 || vlen > VERSION_MAX)
        return CH_EINVAL;
    for (size_t i = ED25519_PREFIX_LEN; i < n; i++)
        if (!is_version_char(k[i]))
            return CH_EINVAL;
    memcpy(id, k, n);
    id[n] = '\0';
    return 1;
}

/* {"key": "<base64 of 32 bytes>", ...}: 0 with pk, or CH_EINVAL with the line's tail in err. */
static int decode_key(const json_t *entry, unsigned char pk[crypto_sign_PUBLICKEYBYTES],
                      struct buf *err)
{
    if (!json_is_object(entry)) {
        buf_append_str(err, ": not an object\n");
        return CH_EINVAL;
    }
    const json_t *key = json_object_get(entry, "key");
    if (!json_is_string(key)) {
        buf_append_str(err, ".key: missing or not a string\n");
        return CH_EINVAL;
    }
    struct buf raw = BUF_INIT;
    int rc = b64_decode(&raw, json_string_value(key), json_string_length(key));
    if (rc == CH_ENOMEM)
        goto out;
    if (rc < 0 || raw.len != crypto_sign_PUBLICKEYBYTES) {
        /* Unpadded base64 by the spec; padded is accepted, as Synapse's decode_base64 does. */
        buf_append_str(err, ".key: not unpadded base64 of 32 bytes\n");
        rc = CH_EINVAL;
        goto out;
    }
    memcpy(pk, buf_data(&raw), crypto_sign_PUBLICKEYBYTES);
out:
    buf_free(&raw);
    return rc;
}

/* old_verify_keys entries also carry "expired_ts": a non-negative integer (spec: required). */
static int decode_expired_ts(const json_t *entry, uint64_t *ts, struct buf *err)
{
    const json_t *v = json_object_get(entry, "expired_ts");
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        buf_append_str(err, ".expired_ts: missing or not a non-negative integer\n");
        return CH_EINVAL;
    }
    *ts = (uint64_t)json_integer_value(v);
    return 0;
}

static const struct keydoc_key *find_key(const struct keydoc_key *keys, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].id, id) == 0)
            return &keys[i];
    return NULL;
}

/* Add the ed25519 keys of verify_keys (old false) or old_verify_keys (old true) to d. */
static int parse_keys(const json_t *obj, const char *field, bool old, struct keydoc *d,
                      struct buf *err)
{
    if (!json_is_object(obj)) {
        buf_appendf(err, "%s: %s\n", field, obj ? "not an object" : "missing");
        return CH_EINVAL;
    }
    const char *k;
    size_t klen;
    json_t *entry;
    json_object_keylen_foreach((json_t *)obj, k, klen, entry)
    {
        char id[KEYDOC_KEY_ID_MAX];
        int kind = classify_id(k, klen, id);
        if (kind == 0) {
            d->nignored++;
            continue;
        }
        if (kind < 0) {
            buf_appendf(err, "%s: key id ", field);
            put_quoted(err, k, klen);
            buf_appendf(err, ": the version must be 1 to %zu characters of [a-zA-Z0-9_]\n",
                        (size_t)VERSION_MAX);
            return CH_EINVAL;
        }
        if (old && find_key(d->keys, d->ncurrent, id)) {
            buf_appendf(err, "%s is in both verify_keys and old_verify_keys\n", id);
            return CH_EINVAL;
        }
        if (d->nkeys == KEYDOC_MAX_KEYS) {
            buf_appendf(err, "%s: more than %d keys in the document\n", field, KEYDOC_MAX_KEYS);
            return CH_EINVAL;
        }
        struct keydoc_key *key = &d->keys[d->nkeys];
        memset(key, 0, sizeof(*key));
        size_t mark = err->len;
        buf_appendf(err, "%s.%s", field, id);
        int rc = decode_key(entry, key->pk, err);
        if (rc == 0 && old)
            rc = decode_expired_ts(entry, &key->expired_ts, err);
        if (rc < 0) {
            if (rc == CH_ENOMEM)
                err->len = mark;
            return rc;
        }
        err->len = mark;
        memcpy(key->id, id, klen + 1);
        key->old = old;
        d->nkeys++;
        if (!old)
            d->ncurrent++;
    }
    return 0;
}

/* Every current key must have signed the document as its server (see keydoc_parse). */
static int check_self_signed(const json_t *doc, const struct keydoc *d, struct buf *err)
{
    struct buf why = BUF_INIT;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < d->ncurrent; i++) {
        const char *id = d->keys[i].id;
        buf_reset(&why);
        rc = sign_verify_json(doc, d->server_name, id, d->keys[i].pk, &why);
        if (rc == CH_ENOENT) {
            buf_appendf(err, "not signed by %s: no signatures.%s.%s\n", id, d->server_name, id);
            rc = CH_EPERM;
        } else if (rc == CH_EPERM) {
            buf_appendf(err, "signatures.%s.%s does not verify with verify_keys.%s\n",
                        d->server_name, id, id);
        } else if (rc < 0) {
            put_line(err, &why);
        }
    }
    buf_free(&why);
    return rc;
}

/* The checks of keydoc_parse on a parsed document; on success d takes a reference to doc. */
static int parse_doc(json_t *doc, const char *expect, uint64_t now_ms, struct keydoc *d,
                     struct buf *err)
{
    memset(d, 0, sizeof(*d));
    if (!json_is_object(doc)) {
        buf_append_str(err, "the document is not a JSON object\n");
        return CH_EINVAL;
    }
    const json_t *name = json_object_get(doc, "server_name");
    if (!json_is_string(name)) {
        buf_appendf(err, "server_name: %s\n", name ? "not a string" : "missing");
        return CH_EINVAL;
    }
    /* An exact comparison, as Synapse's ServerKeyFetcher makes: signatures are keyed by it. */
    if (!string_is(name, expect)) {
        buf_append_str(err, "server_name is ");
        put_quoted(err, json_string_value(name), json_string_length(name));
        buf_append_str(err, ", expected ");
        put_quoted(err, expect, strlen(expect));
        buf_append_str(err, "\n");
        return CH_EINVAL;
    }
    /* keydoc_parse checked that expect is a server name: it fits. */
    memcpy(d->server_name, expect, strlen(expect) + 1);

    const json_t *until = json_object_get(doc, "valid_until_ts");
    if (!json_is_integer(until)) {
        buf_appendf(err, "valid_until_ts: %s\n", until ? "not an integer" : "missing");
        return CH_EINVAL;
    }
    json_int_t u = json_integer_value(until);
    if (u <= 0 || (uint64_t)u <= now_ms) {
        buf_appendf(err,
                    "valid_until_ts %" JSON_INTEGER_FORMAT
                    " is not after now (%llu): the document has expired\n",
                    u, (unsigned long long)now_ms);
        return CH_EINVAL;
    }
    /* Server-server API, "Publishing Keys", valid_until_ts: "the lesser of this field and 7 days".
     */
    uint64_t cap =
        now_ms > UINT64_MAX - KEYDOC_MAX_VALIDITY_MS ? UINT64_MAX : now_ms + KEYDOC_MAX_VALIDITY_MS;
    d->valid_until_ts = (uint64_t)u < cap ? (uint64_t)u : cap;

    int rc = parse_keys(json_object_get(doc, "verify_keys"), "verify_keys", false, d, err);
    if (rc < 0)
        goto fail;
    if (d->ncurrent == 0) {
        buf_append_str(err, "verify_keys: no ed25519 key\n");
        rc = CH_EINVAL;
        goto fail;
    }
    const json_t *old = json_object_get(doc, "old_verify_keys");
    if (old != NULL && (rc = parse_keys(old, "old_verify_keys", true, d, err)) < 0)
        goto fail;
    rc = check_self_signed(doc, d, err);
    if (rc < 0)
        goto fail;
    d->doc = json_incref(doc);
    return 0;
fail:
    memset(d, 0, sizeof(*d));
    return rc;
}

/* The name the caller expects must be a server name: it bounds the copy into struct keydoc. */
static int check_expect(const char *expect, struct buf *err)
{
    struct server_name sn;
    const char *why = NULL;
    if (expect != NULL && server_name_parse(expect, strlen(expect), &sn, &why) == 0)
        return 0;
    buf_append_str(err, "the expected server name ");
    if (expect)
        put_quoted(err, expect, strlen(expect));
    buf_appendf(err, " is not a server name: %s\n", why ? why : "NULL");
    return CH_EINVAL;
}

/* cjson_parse, with its message prefixed. */
static int parse_json(const char *body, size_t n, json_t **out, struct buf *err)
{
    struct buf why = BUF_INIT;
    int rc = cjson_parse(body, n, out, &why);
    if (rc < 0) {
        buf_append_str(err, "not JSON: ");
        put_line(err, &why);
    }
    buf_free(&why);
    return rc;
}

int keydoc_parse(const char *body, size_t n, const char *expect_server, uint64_t now_ms,
                 struct keydoc *out, struct buf *err)
{
    memset(out, 0, sizeof(*out));
    int rc = check_expect(expect_server, err);
    if (rc < 0)
        return rc;
    json_t *doc = NULL;
    rc = parse_json(body, n, &doc, err);
    if (rc < 0)
        return rc;
    rc = parse_doc(doc, expect_server, now_ms, out, err);
    json_decref(doc);
    return rc;
}

/* "ed25519:a or ed25519:b": the keys a notary was expected to sign with. */
static void put_key_ids(struct buf *err, const struct keydoc_notary *notary)
{
    for (size_t i = 0; i < notary->nkeys; i++)
        buf_appendf(err, "%s%s", i ? " or " : "", notary->keys[i].id);
}

int keydoc_verify_notary(const json_t *doc, const struct keydoc_notary *notary, struct buf *err)
{
    struct buf why = BUF_INIT;
    bool verified = false;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < notary->nkeys; i++) {
        const struct keydoc_key *k = &notary->keys[i];
        buf_reset(&why);
        rc = sign_verify_json(doc, notary->name, k->id, k->pk, &why);
        if (rc == CH_ENOENT) {
            rc = 0;
        } else if (rc == CH_EPERM) {
            buf_append_str(err, "the notary's signature signatures.");
            put_quoted(err, notary->name, strlen(notary->name));
            buf_appendf(err, ".%s does not verify\n", k->id);
        } else if (rc < 0) {
            put_line(err, &why);
        } else {
            verified = true;
        }
    }
    if (rc == 0 && !verified) {
        buf_append_str(err, "not signed by the notary ");
        put_quoted(err, notary->name, strlen(notary->name));
        buf_append_str(err, " with ");
        if (notary->nkeys)
            put_key_ids(err, notary);
        else
            buf_append_str(err, "any key (none is trusted)");
        buf_append_str(err, "\n");
        rc = CH_ENOENT;
    }
    buf_free(&why);
    return rc;
}

/* The documents of server_keys that claim to be for expect (server_name equal). */
static size_t count_for(const json_t *list, const char *expect)
{
    size_t count = 0;
    for (size_t i = 0; i < json_array_size(list); i++)
        count += string_is(json_object_get(json_array_get(list, i), "server_name"), expect);
    return count;
}

/*
 * One element of server_keys: 1 and d filled when kept, 0 when skipped (a line
 * in err when it was for expect), or CH_ENOMEM.
 */
static int query_element(json_t *el, size_t index, const char *expect,
                         const struct keydoc_notary *notary, uint64_t now_ms, struct keydoc *d,
                         struct buf *err)
{
    if (!string_is(json_object_get(el, "server_name"), expect))
        return 0;
    struct buf why = BUF_INIT;
    int rc = parse_doc(el, expect, now_ms, d, &why);
    if (rc == 0) {
        rc = keydoc_verify_notary(el, notary, &why);
        if (rc < 0)
            keydoc_free(d);
    }
    if (rc < 0 && rc != CH_ENOMEM) {
        buf_appendf(err, "server_keys[%zu]: ", index);
        put_line(err, &why);
    }
    buf_free(&why);
    return rc == 0 ? 1 : rc == CH_ENOMEM ? rc : 0;
}

int keydoc_parse_query_response(const char *body, size_t n, const char *expect_server,
                                const struct keydoc_notary *notary, uint64_t now_ms,
                                struct keydoc **docs, size_t *ndocs, struct buf *err)
{
    *docs = NULL;
    *ndocs = 0;
    int rc = check_expect(expect_server, err);
    if (rc < 0)
        return rc;
    json_t *root = NULL;
    rc = parse_json(body, n, &root, err);
    if (rc < 0)
        return rc;
    json_t *list = json_is_object(root) ? json_object_get(root, "server_keys") : NULL;
    if (!json_is_array(list)) {
        buf_append_str(err, json_is_object(root) ? "server_keys: missing or not an array\n"
                                                 : "the response is not a JSON object\n");
        rc = CH_EINVAL;
        goto out;
    }
    size_t want = count_for(list, expect_server), kept = 0;
    struct keydoc *out = want ? calloc(want, sizeof(*out)) : NULL;
    if (want && out == NULL) {
        rc = CH_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < json_array_size(list) && kept < want; i++) {
        rc = query_element(json_array_get(list, i), i, expect_server, notary, now_ms, &out[kept],
                           err);
        if (rc < 0) {
            keydoc_free_array(out, kept);
            goto out;
        }
        kept += (size_t)rc;
    }
    rc = 0;
    if (kept == 0) {
        free(out);
        if (want == 0) {
            buf_append_str(err, "no document for ");
            put_quoted(err, expect_server, strlen(expect_server));
            buf_append_str(err, " in the response\n");
        }
        rc = CH_ENOENT;
        goto out;
    }
    *docs = out;
    *ndocs = kept;
out:
    json_decref(root);
    return rc;
}

int keydoc_cosign(const json_t *doc, const char *notary_name, const struct sign_key *keys,
                  size_t nkeys, json_t **out, struct buf *err)
{
    *out = NULL;
    if (!json_is_object(doc) || nkeys == 0) {
        buf_append_str(err, nkeys ? "only a JSON object can be signed\n" : "no notary key\n");
        return CH_EINVAL;
    }
    json_t *copy = json_deep_copy(doc);
    if (copy == NULL)
        return CH_ENOMEM;
    struct buf why = BUF_INIT;
    int rc = 0;
    /* sign_json keeps the signatures already there: the origin's, and other notaries'. */
    for (size_t i = 0; rc == 0 && i < nkeys; i++)
        rc = sign_json(copy, notary_name, &keys[i], &why);
    if (rc < 0) {
        put_line(err, &why);
        json_decref(copy);
    } else {
        *out = copy;
    }
    buf_free(&why);
    return rc;
}

const struct keydoc_key *keydoc_find_key(const struct keydoc *d, const char *key_id)
{
    return find_key(d->keys, d->nkeys, key_id);
}

void keydoc_free(struct keydoc *d)
{
    json_decref(d->doc);
    memset(d, 0, sizeof(*d));
}

void keydoc_free_array(struct keydoc *docs, size_t n)
{
    if (docs == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        keydoc_free(&docs[i]);
    free(docs);
}
