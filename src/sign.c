/* sign.c -- ed25519 server signing keys, stored the way Synapse stores them, and signed JSON. */
/* SPDX-License-Identifier: ISC */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "chappe/b64.h"
#include "chappe/cjson.h"
#include "chappe/sign.h"
#include "chappe/xmatrix.h"
#include "chappe/util.h"

/* A key file holds a few lines; anything larger is not one. */
#define KEY_FILE_MAX (64 * 1024)
/* "ed25519:" + version + NUL must fit struct sign_key's id. */
#define VERSION_MAX (sizeof(((struct sign_key *)0)->id) - sizeof("ed25519:"))
/* 32 bytes: 43 characters of unpadded base64, 44 with its one "=". */
#define SEED_B64_LEN 43

int sign_keygen(struct buf *out)
{
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    if (sodium_init() < 0)
        return CH_EIO;
    unsigned char seed[crypto_sign_SEEDBYTES];
    randombytes_buf(seed, sizeof(seed));
    char version[7] = "a_";
    for (int i = 2; i < 6; i++)
        version[i] = alnum[randombytes_uniform(sizeof(alnum) - 1)];
    version[6] = '\0';
    int rc = buf_appendf(out, "ed25519 %s ", version);
    if (rc == 0)
        rc = b64_encode(out, seed, sizeof(seed));
    if (rc == 0)
        rc = buf_append(out, "\n", 1);
    sodium_memzero(seed, sizeof(seed));
    return rc;
}

int sign_keygen_file(const char *path, const char **why)
{
    struct buf b = BUF_INIT;
    int rc = sign_keygen(&b);
    if (rc < 0) {
        *why = util_strerror(rc);
        goto out;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = errno == EEXIST ? CH_EEXIST : CH_EIO;
        *why =
            errno == EEXIST ? "file exists (refusing to overwrite a signing key)" : strerror(errno);
        goto out;
    }
    ssize_t w = write(fd, buf_data(&b), b.len);
    if (w != (ssize_t)b.len || fsync(fd) < 0) {
        *why = w < 0 ? strerror(errno) : "short write";
        close(fd);
        unlink(path);
        rc = CH_EIO;
        goto out;
    }
    close(fd);
out:
    buf_free_secret(&b);
    return rc;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int is_version_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/*
 * Decode a 32-byte seed, padded or not. The two bits the last character carries
 * beyond the 256 are ignored, as Synapse's reader (Python's base64.b64decode
 * behind signedjson's decode_base64) ignores them: the Matrix spec's own test
 * seed (appendices, "Cryptographic Test Vectors") ends in "XA1", which sets them.
 */
static int decode_seed(const char *s, size_t n, unsigned char seed[crypto_sign_SEEDBYTES])
{
    if (n == SEED_B64_LEN + 1 && s[SEED_B64_LEN] == '=')
        n = SEED_B64_LEN;
    if (n != SEED_B64_LEN)
        return CH_EINVAL;
    char text[SEED_B64_LEN];
    memcpy(text, s, n);
    const char *last = memchr(b64_alphabet, text[n - 1], sizeof(b64_alphabet) - 1);
    int rc = CH_EINVAL;
    struct buf raw = BUF_INIT;
    if (last == NULL)
        goto out;
    text[n - 1] = b64_alphabet[(last - b64_alphabet) & ~3];
    rc = b64_decode(&raw, text, n);
    if (rc == 0 && raw.len != crypto_sign_SEEDBYTES)
        rc = CH_EINVAL;
    if (rc == 0)
        memcpy(seed, buf_data(&raw), crypto_sign_SEEDBYTES);
out:
    buf_free_secret(&raw);
    sodium_memzero(text, sizeof(text));
    return rc;
}

/* Split off the next whitespace-separated field of [*p, end). */
static struct slice next_field(const char **p, const char *end)
{
    const char *s = *p;
    while (s < end && is_space(*s))
        s++;
    const char *e = s;
    while (e < end && !is_space(*e))
        e++;
    *p = e;
    return (struct slice){s, (size_t)(e - s)};
}

/*
 * One line "ed25519 <version> <seed>", the format signedjson.key.write_signing_keys
 * writes and read_signing_keys reads (fields split on whitespace). 0, 1 for a blank
 * line, or CH_EINVAL with *why set.
 */
static int parse_line(const char *p, const char *end, struct sign_key *key, const char **why)
{
    struct slice alg = next_field(&p, end);
    struct slice version = next_field(&p, end);
    struct slice seed_b64 = next_field(&p, end);
    struct slice extra = next_field(&p, end);
    if (alg.len == 0)
        return 1;
    if (seed_b64.len == 0 || extra.len != 0) {
        *why = "expected \"ed25519 <version> <base64 seed>\"";
        return CH_EINVAL;
    }
    if (!slice_eq_str(alg, "ed25519")) {
        *why = "unsupported algorithm (only ed25519 keys are supported)";
        return CH_EINVAL;
    }
    int ok = version.len <= VERSION_MAX;
    for (size_t i = 0; ok && i < version.len; i++)
        ok = is_version_char(version.base[i]);
    if (!ok) {
        *why = "the key version must be 1 to 55 characters of [a-zA-Z0-9_]";
        return CH_EINVAL;
    }
    unsigned char seed[crypto_sign_SEEDBYTES];
    if (decode_seed(seed_b64.base, seed_b64.len, seed) < 0) {
        *why = "the seed is not base64 of 32 bytes";
        return CH_EINVAL;
    }
    memcpy(key->id, "ed25519:", 8);
    memcpy(key->id + 8, version.base, version.len);
    key->id[8 + version.len] = '\0';
    int rc = crypto_sign_seed_keypair(key->pk, key->sk, seed);
    sodium_memzero(seed, sizeof(seed));
    if (rc != 0) {
        *why = "libsodium could not derive the key pair";
        return CH_EINVAL;
    }
    return 0;
}

int sign_parse_keys(const char *text, size_t len, struct sign_key **keys, size_t *n,
                    struct buf *err)
{
    *keys = NULL;
    *n = 0;
    if (sodium_init() < 0)
        return CH_EIO;
    /* One allocation sized by the line count: growing with realloc would leave copies of keys. */
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    struct sign_key *k = calloc(lines, sizeof(*k));
    if (k == NULL)
        return CH_ENOMEM;
    size_t count = 0, lineno = 0;
    const char *why = NULL;
    int rc = 0;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        lineno++;
        if (memchr(p, '\0', (size_t)(eol - p)) != NULL) {
            why = "NUL byte in the line";
            rc = CH_EINVAL;
            break;
        }
        rc = parse_line(p, eol, &k[count], &why);
        if (rc < 0)
            break;
        if (rc == 0) {
            for (size_t i = 0; i < count; i++) {
                if (strcmp(k[i].id, k[count].id) == 0) {
                    why = "duplicate key id";
                    rc = CH_EINVAL;
                    break;
                }
            }
            if (rc < 0)
                break;
            count++;
        }
        rc = 0;
        p = nl ? nl + 1 : end;
    }
    if (rc == 0 && count == 0) {
        rc = CH_EINVAL;
        buf_append_str(err, "no signing key (expected lines \"ed25519 <version> <base64 seed>\")");
    } else if (rc < 0) {
        buf_appendf(err, "line %zu: %s", lineno, why);
    }
    if (rc < 0) {
        sign_keys_free(k, lines);
        return rc;
    }
    *keys = k;
    *n = count;
    return 0;
}

/* Read the whole of fd (a regular file of size bytes) into out, allocated once. */
int sign_load_keys(const char *path, struct sign_key **keys, size_t *n, struct buf *err)
{
    *keys = NULL;
    *n = 0;
    struct buf text = BUF_INIT, why = BUF_INIT;
    int rc = util_read_private_file(path, KEY_FILE_MAX, "a key file", &text, err);
    if (rc == 0) {
        rc = sign_parse_keys(buf_data(&text), text.len, keys, n, &why);
        if (rc < 0)
            buf_appendf(err, "%s: %.*s", path, (int)why.len, buf_data(&why));
    }
    buf_free(&why);
    buf_free_secret(&text);
    return rc;
}

void sign_keys_free(struct sign_key *keys, size_t n)
{
    if (keys == NULL)
        return;
    sodium_memzero(keys, n * sizeof(*keys));
    free(keys);
}

int sign_public_b64(const struct sign_key *key, struct buf *out)
{
    return b64_encode(out, key->pk, sizeof(key->pk));
}

/*
 * Append the bytes a signature covers: the canonical JSON of obj without its
 * "signatures" and "unsigned" members (Matrix appendices, "Signing Details").
 */
static int signed_bytes(const json_t *obj, struct buf *msg, struct buf *err)
{
    if (!json_is_object(obj)) {
        buf_append_str(err, "$: only a JSON object can be signed");
        return CH_EINVAL;
    }
    /* A shallow copy: only top-level members are removed. */
    json_t *copy = json_copy((json_t *)obj);
    if (copy == NULL)
        return CH_ENOMEM;
    json_object_del(copy, "signatures");
    json_object_del(copy, "unsigned");
    int rc = cjson_encode(copy, msg, err);
    json_decref(copy);
    return rc;
}

int sign_json(json_t *obj, const char *server_name, const struct sign_key *key, struct buf *err)
{
    struct buf msg = BUF_INIT, sig_b64 = BUF_INIT;
    unsigned char sig[crypto_sign_BYTES];
    /* Check the shape first so that a failure leaves obj as it was. */
    json_t *sigs = json_is_object(obj) ? json_object_get(obj, "signatures") : NULL;
    json_t *mine = sigs ? json_object_get(sigs, server_name) : NULL;
    int rc = CH_EINVAL;
    if (sigs && !json_is_object(sigs)) {
        buf_append_str(err, "$.signatures: not an object");
        goto out;
    }
    if (mine && !json_is_object(mine)) {
        buf_appendf(err, "$.signatures.%s: not an object", server_name);
        goto out;
    }
    rc = signed_bytes(obj, &msg, err);
    if (rc < 0)
        goto out;
    if (sodium_init() < 0 || crypto_sign_detached(sig, NULL, (const unsigned char *)buf_data(&msg),
                                                  msg.len, key->sk) != 0) {
        rc = CH_EIO;
        buf_append_str(err, "ed25519 signing failed");
        goto out;
    }
    rc = b64_encode(&sig_b64, sig, sizeof(sig));
    if (rc < 0)
        goto out;
    rc = CH_ENOMEM;
    json_t *s = json_stringn(buf_data(&sig_b64), sig_b64.len);
    if (s == NULL)
        goto out;
    /* Add the signature to the existing ones: other servers' and other keys' stay. */
    json_t *new_sigs = NULL, *new_mine = NULL;
    if (sigs == NULL && (sigs = new_sigs = json_object()) == NULL)
        goto out_s;
    if (mine == NULL && (mine = new_mine = json_object()) == NULL)
        goto out_new;
    if (json_object_set_new(mine, key->id, s) < 0) {
        s = NULL; /* json_object_set_new consumed it */
        goto out_new;
    }
    s = NULL;
    if (new_mine && json_object_set_new(sigs, server_name, new_mine) < 0) {
        new_mine = NULL;
        goto out_new;
    }
    new_mine = NULL;
    if (new_sigs && json_object_set_new(obj, "signatures", new_sigs) < 0) {
        new_sigs = NULL;
        goto out_new;
    }
    new_sigs = NULL;
    rc = 0;
out_new:
    json_decref(new_mine);
    json_decref(new_sigs);
out_s:
    json_decref(s);
out:
    buf_free(&sig_b64);
    buf_free(&msg);
    return rc;
}

int sign_verify_json(const json_t *obj, const char *server_name, const char *key_id,
                     const unsigned char pk[crypto_sign_PUBLICKEYBYTES], struct buf *err)
{
    struct buf msg = BUF_INIT, sig = BUF_INIT;
    int rc = CH_EINVAL;
    if (!json_is_object(obj)) {
        buf_append_str(err, "$: only a JSON object can be signed");
        goto out;
    }
    /* Matrix appendices, "Checking for a Signature", steps 1 to 4. */
    const json_t *sigs = json_object_get(obj, "signatures");
    const json_t *mine = json_is_object(sigs) ? json_object_get(sigs, server_name) : NULL;
    const json_t *s = json_is_object(mine) ? json_object_get(mine, key_id) : NULL;
    if (sigs && !json_is_object(sigs)) {
        buf_append_str(err, "$.signatures: not an object");
        goto out;
    }
    if (mine && !json_is_object(mine)) {
        buf_appendf(err, "$.signatures.%s: not an object", server_name);
        goto out;
    }
    if (s == NULL) {
        rc = CH_ENOENT;
        buf_appendf(err, "no signature by %s with key %s", server_name, key_id);
        goto out;
    }
    if (!json_is_string(s) || b64_decode(&sig, json_string_value(s), json_string_length(s)) < 0 ||
        sig.len != crypto_sign_BYTES) {
        buf_appendf(err, "$.signatures.%s.%s: not unpadded base64 of a 64-byte signature",
                    server_name, key_id);
        goto out;
    }
    /* Steps 5 to 7. */
    rc = signed_bytes(obj, &msg, err);
    if (rc < 0)
        goto out;
    if (sodium_init() < 0) {
        rc = CH_EIO;
        goto out;
    }
    if (crypto_sign_verify_detached((const unsigned char *)buf_data(&sig),
                                    (const unsigned char *)buf_data(&msg), msg.len, pk) != 0) {
        rc = CH_EPERM;
        buf_appendf(err, "signature by %s with key %s does not verify", server_name, key_id);
        goto out;
    }
    rc = 0;
out:
    buf_free(&sig);
    buf_free(&msg);
    return rc;
}

int sign_request(struct buf *out, const struct sign_key *key, const char *method, const char *uri,
                 const char *origin, const char *destination, const json_t *content,
                 struct buf *err)
{
    json_t *obj = xmatrix_request_object(method, uri, origin, destination, content);
    if (obj == NULL) {
        buf_append_str(err, "cannot build the request object (invalid method, uri or origin)\n");
        return CH_EINVAL;
    }
    int rc = sign_json(obj, origin, key, err);
    if (rc == 0) {
        const char *sig = json_string_value(
            json_object_get(json_object_get(json_object_get(obj, "signatures"), origin), key->id));
        rc = sig ? xmatrix_build(out, origin, destination, key->id, sig) : CH_EINVAL;
    }
    json_decref(obj);
    return rc;
}

int sign_verify_request(const struct xmatrix *x, const char *method, const char *uri,
                        const char *destination, const json_t *content,
                        const unsigned char pk[crypto_sign_PUBLICKEYBYTES], struct buf *err)
{
    json_t *obj = xmatrix_request_object(method, uri, x->origin, destination, content);
    if (obj == NULL) {
        buf_append_str(err, "cannot build the request object\n");
        return CH_EINVAL;
    }
    int rc = CH_ENOMEM;
    json_t *sigs = json_pack("{s:{s:s}}", x->origin, x->key, x->sig);
    if (sigs != NULL && json_object_set_new(obj, "signatures", sigs) == 0)
        rc = sign_verify_json(obj, x->origin, x->key, pk, err);
    json_decref(obj);
    return rc;
}

/* Printable ASCII: such a string is valid UTF-8 as it is (anything else takes the general path). */
static bool ascii_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

/* {"content":BODY,"destination":...,"method":...,"origin":...,"uri":...}: keys in code-point order.
 */
static int request_bytes(struct buf *b, const struct xmatrix *x, const char *method,
                         const char *uri, const char *destination, const char *body, size_t n)
{
    int rc = buf_append_str(b, "{\"content\":");
    rc = rc ? rc : buf_append(b, body, n);
    if (destination) {
        rc = rc ? rc : buf_append_str(b, ",\"destination\":");
        rc = rc ? rc : cjson_append_string(b, destination, strlen(destination));
    }
    rc = rc ? rc : buf_append_str(b, ",\"method\":");
    rc = rc ? rc : cjson_append_string(b, method, strlen(method));
    rc = rc ? rc : buf_append_str(b, ",\"origin\":");
    rc = rc ? rc : cjson_append_string(b, x->origin, strlen(x->origin));
    rc = rc ? rc : buf_append_str(b, ",\"uri\":");
    rc = rc ? rc : cjson_append_string(b, uri, strlen(uri));
    return rc ? rc : buf_append(b, "}", 1);
}

int sign_verify_request_body(const struct xmatrix *x, const char *method, const char *uri,
                             const char *destination, const char *body, size_t n,
                             const unsigned char pk[crypto_sign_PUBLICKEYBYTES], struct buf *err)
{
    if (n == 0)
        return sign_verify_request(x, method, uri, destination, NULL, pk, err);
    if (!cjson_is_canonical(body, n) || !ascii_ok(method) || !ascii_ok(uri) ||
        !ascii_ok(x->origin) || (destination && !ascii_ok(destination))) {
        json_t *content = NULL;
        int rc = cjson_parse(body, n, &content, err);
        if (rc == 0)
            rc = sign_verify_request(x, method, uri, destination, content, pk, err);
        json_decref(content);
        return rc;
    }
    struct buf sig = BUF_INIT, msg = BUF_INIT;
    int rc = b64_decode(&sig, x->sig, strlen(x->sig));
    if (rc < 0 || sig.len != crypto_sign_BYTES) {
        buf_appendf(err, "signature %s of %s is not base64 of %d bytes\n", x->key, x->origin,
                    crypto_sign_BYTES);
        rc = CH_EINVAL;
    } else if ((rc = request_bytes(&msg, x, method, uri, destination, body, n)) == 0) {
        if (crypto_sign_verify_detached((const unsigned char *)buf_data(&sig),
                                        (const unsigned char *)buf_data(&msg), msg.len, pk) != 0) {
            buf_appendf(err, "signature %s of %s does not verify\n", x->key, x->origin);
            rc = CH_EPERM;
        }
    }
    buf_free(&sig);
    buf_free(&msg);
    return rc;
}
