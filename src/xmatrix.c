/* xmatrix.c -- parse and build the X-Matrix Authorization header and the JSON a request signs. */
/* SPDX-License-Identifier: ISC */
#include <string.h>

#include "chappe/util.h"
#include "chappe/xmatrix.h"

/* At most this many auth-params in one header (Synapse sends four). */
#define MAX_PARAMS 16

/* RFC 9110 section 5.6.2: tchar. */
static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/*
 * Characters of an unquoted value: a token (RFC 9110 section 11.2), plus ':'
 * (the spec's "Request Authentication": recipients should accept colons
 * without quotes, e.g. key=ed25519:abc or origin=host:8448) and '/' (unpadded
 * base64 in an unquoted sig; Synapse accepts any byte there).
 */
static int is_value_char(unsigned char c)
{
    return is_tchar(c) || c == ':' || c == '/';
}

static int is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Bytes no value may carry: CTLs (RFC 5234 appendix B.1) and non-ASCII (server names,
 * key ids and base64 are ASCII; JSON strings built from them must be valid UTF-8). */
static int is_bad_byte(unsigned char c)
{
    return c < 0x20 || c == 0x7f || c >= 0x80;
}

static int ascii_case_eq(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return 0;
    for (size_t i = 0; i < an; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y - 'A' + 'a');
        if (x != y)
            return 0;
    }
    return 1;
}

static int name_is(struct slice name, const char *s)
{
    return ascii_case_eq(name.base, name.len, s, strlen(s));
}

/*
 * Read one value at p[*i] into val (NUL-terminated, at most XMATRIX_MAX_VALUE
 * bytes): a quoted-string with quoted-pair unescaping (RFC 9110 section 5.6.4)
 * or an unquoted run of is_value_char. Advances *i past it.
 */
static int read_value(const char *p, size_t n, size_t *i, char *val, const char **why)
{
    size_t len = 0, j = *i;
    if (j < n && p[j] == '"') {
        for (j++;; j++) {
            if (j >= n) {
                *why = "unterminated quoted string";
                return CH_EINVAL;
            }
            unsigned char c = (unsigned char)p[j];
            if (c == '"')
                break;
            if (c == '\\') {
                /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
                if (++j >= n) {
                    *why = "unterminated quoted string";
                    return CH_EINVAL;
                }
                c = (unsigned char)p[j];
            }
            /* HTAB is legal qdtext, but no X-Matrix value has any use for it. */
            if (is_bad_byte(c)) {
                *why = "control or non-ASCII character in value";
                return CH_EINVAL;
            }
            if (len == XMATRIX_MAX_VALUE) {
                *why = "value too long";
                return CH_EINVAL;
            }
            val[len++] = (char)c;
        }
        j++; /* the closing quote */
    } else {
        for (; j < n && is_value_char((unsigned char)p[j]); j++) {
            if (len == XMATRIX_MAX_VALUE) {
                *why = "value too long";
                return CH_EINVAL;
            }
            val[len++] = p[j];
        }
        if (len == 0 && j < n && !is_ows((unsigned char)p[j]) && p[j] != ',') {
            *why = "invalid character in unquoted value";
            return CH_EINVAL;
        }
    }
    if (len == 0) {
        *why = "empty value";
        return CH_EINVAL;
    }
    val[len] = '\0';
    *i = j;
    return 0;
}

static int parse(const char *p, size_t n, struct xmatrix *out, const char **why)
{
    struct slice names[MAX_PARAMS];
    size_t nparams = 0, i = 0;
    char val[XMATRIX_MAX_VALUE + 1];
    int have_origin = 0, have_key = 0, have_sig = 0;

    if (p == NULL && n > 0) {
        *why = "no header";
        return CH_EINVAL;
    }
    /* CR, LF and NUL never belong in a field value (RFC 9110 section 5.5); HTAB only as OWS. */
    for (size_t k = 0; k < n; k++) {
        unsigned char c = (unsigned char)p[k];
        if (c != '\t' && is_bad_byte(c)) {
            *why = "control or non-ASCII character in header";
            return CH_EINVAL;
        }
    }
    /* Leading and trailing whitespace is not part of a field value (RFC 9110 section 5.5). */
    while (n && is_ows((unsigned char)p[n - 1]))
        n--;
    while (i < n && is_ows((unsigned char)p[i]))
        i++;
    if (i == n) {
        *why = "empty header";
        return CH_EINVAL;
    }

    /* credentials = auth-scheme [ 1*SP ( token68 / #auth-param ) ] (RFC 9110 section 11.4);
     * the scheme is case-insensitive (section 11.1). */
    size_t s0 = i;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (!ascii_case_eq(p + s0, i - s0, "X-Matrix", 8)) {
        *why = "not the X-Matrix scheme";
        return CH_EINVAL;
    }
    if (i == n) {
        *why = "no parameters after the scheme";
        return CH_EINVAL;
    }
    if (p[i] != ' ') {
        *why = "expected a space after the scheme";
        return CH_EINVAL;
    }
    /* Synapse accepts several spaces here ("X-Matrix +"); tolerate OWS too. */
    while (i < n && is_ows((unsigned char)p[i]))
        i++;

    /* #auth-param (RFC 9110 section 5.6.1): empty list elements are ignored. */
    while (i < n) {
        if (p[i] == ',') {
            i++;
            while (i < n && is_ows((unsigned char)p[i]))
                i++;
            continue;
        }
        /* auth-param = token BWS "=" BWS ( token / quoted-string ) (section 11.2) */
        struct slice name = {p + i, 0};
        while (i < n && is_tchar((unsigned char)p[i]))
            i++;
        name.len = (size_t)(p + i - name.base);
        if (name.len == 0) {
            *why = p[i] == '=' ? "missing parameter name" : "invalid character in parameter name";
            return CH_EINVAL;
        }
        while (i < n && is_ows((unsigned char)p[i]))
            i++;
        if (i == n || p[i] != '=') {
            *why = "missing '=' after parameter name";
            return CH_EINVAL;
        }
        i++;
        while (i < n && is_ows((unsigned char)p[i]))
            i++;
        int rc = read_value(p, n, &i, val, why);
        if (rc)
            return rc;
        while (i < n && is_ows((unsigned char)p[i]))
            i++;
        if (i < n && p[i] != ',') {
            *why = "unexpected character after value";
            return CH_EINVAL;
        }

        /* "Each parameter name MUST only occur once per challenge" (section 11.2);
         * names compare case-insensitively, so ORIGIN duplicates origin. */
        for (size_t k = 0; k < nparams; k++) {
            if (ascii_case_eq(names[k].base, names[k].len, name.base, name.len)) {
                *why = "duplicate parameter";
                return CH_EINVAL;
            }
        }
        if (nparams == MAX_PARAMS) {
            *why = "too many parameters";
            return CH_EINVAL;
        }
        names[nparams++] = name;

        size_t vlen = strlen(val) + 1;
        if (name_is(name, "origin")) {
            memcpy(out->origin, val, vlen);
            have_origin = 1;
        } else if (name_is(name, "destination")) {
            memcpy(out->destination, val, vlen);
            out->has_destination = true;
        } else if (name_is(name, "key")) {
            memcpy(out->key, val, vlen);
            have_key = 1;
        } else if (name_is(name, "sig")) {
            memcpy(out->sig, val, vlen);
            have_sig = 1;
        }
        /* Unknown parameters are ignored (spec, "Request Authentication"). */
    }

    if (nparams == 0) {
        *why = "no parameters after the scheme";
        return CH_EINVAL;
    }
    if (!have_origin) {
        *why = "missing origin parameter";
        return CH_EINVAL;
    }
    if (!have_key) {
        *why = "missing key parameter";
        return CH_EINVAL;
    }
    if (!have_sig) {
        *why = "missing sig parameter";
        return CH_EINVAL;
    }
    return 0;
}

int xmatrix_parse(const char *p, size_t n, struct xmatrix *out, const char **why)
{
    const char *dummy;
    if (why == NULL)
        why = &dummy;
    *why = NULL;
    memset(out, 0, sizeof(*out));
    int rc = parse(p, n, out, why);
    if (rc)
        memset(out, 0, sizeof(*out)); /* no half-parsed result */
    return rc;
}

/* What xmatrix_parse accepts back: 1..XMATRIX_MAX_VALUE bytes, no CTL, ASCII only. */
static int valid_value(const char *s)
{
    if (s == NULL)
        return 0;
    size_t len = strlen(s);
    if (len == 0 || len > XMATRIX_MAX_VALUE)
        return 0;
    for (size_t k = 0; k < len; k++)
        if (is_bad_byte((unsigned char)s[k]))
            return 0;
    return 1;
}

/* name="value" with '"' and '\' escaped as quoted-pairs (RFC 9110 section 5.6.4). */
static int append_param(struct buf *out, const char *sep, const char *name, const char *value)
{
    int rc = buf_appendf(out, "%s%s=\"", sep, name);
    for (const char *s = value; rc == 0 && *s; s++) {
        size_t run = strcspn(s, "\"\\");
        if (run) {
            rc = buf_append(out, s, run);
            s += run - 1;
        } else {
            char esc[2] = {'\\', *s};
            rc = buf_append(out, esc, 2);
        }
    }
    if (rc == 0)
        rc = buf_append(out, "\"", 1);
    return rc;
}

int xmatrix_build(struct buf *out, const char *origin, const char *destination, const char *key_id,
                  const char *sig)
{
    if (!valid_value(origin) || !valid_value(key_id) || !valid_value(sig) ||
        (destination != NULL && !valid_value(destination)))
        return CH_EINVAL;
    /* Synapse's order (matrixfederationclient.py): origin, key, sig, destination. */
    size_t start = out->len;
    int rc = append_param(out, "X-Matrix ", "origin", origin);
    if (rc == 0)
        rc = append_param(out, ",", "key", key_id);
    if (rc == 0)
        rc = append_param(out, ",", "sig", sig);
    if (rc == 0 && destination != NULL)
        rc = append_param(out, ",", "destination", destination);
    if (rc)
        out->len = start; /* leave the buffer as it was */
    return rc;
}

/*
 * content is shared, not copied (a copy cost 3 us a request in bench/crypto): the
 * result holds one more reference to it and never modifies it. Returns NULL on a
 * NULL argument, a string that is not valid UTF-8, or allocation failure.
 */
json_t *xmatrix_request_object(const char *method, const char *uri, const char *origin,
                               const char *destination, const json_t *content)
{
    if (method == NULL || uri == NULL || origin == NULL)
        return NULL;
    json_t *obj = json_object();
    if (obj == NULL)
        goto fail;
    if (json_object_set_new(obj, "method", json_string(method)) ||
        json_object_set_new(obj, "uri", json_string(uri)) ||
        json_object_set_new(obj, "origin", json_string(origin)))
        goto fail_obj;
    if (destination != NULL && json_object_set_new(obj, "destination", json_string(destination)))
        goto fail_obj;
    if (content != NULL && json_object_set(obj, "content", (json_t *)content))
        goto fail_obj;
    return obj;

fail_obj:
    json_decref(obj);
fail:
    return NULL;
}
