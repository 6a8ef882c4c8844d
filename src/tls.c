/* tls.c -- TLS 1.2 sessions with mbedTLS 2.28 over memory buffers: the server side (SNI, shared
 * tickets) and the verifying client side for outbound federation. */
/* SPDX-License-Identifier: ISC */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_internal.h> /* mbedtls_ssl_handshake_params.resume, see tls_conn_handshake */
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include "chappe/log.h"
#include "chappe/metrics.h"
#include "chappe/tls.h"
#include "chappe/util.h"

/* Certificate and key files above this size are refused (a PEM chain is a few KiB). */
#define PEM_MAX (1024 * 1024)
/* Session tickets: lifetime hint and key rotation period (RFC 5077 section 3.3). */
#define TICKET_LIFETIME_S 86400
/* Largest TLS 1.2 plaintext record (RFC 5246 section 6.2.1) and a bound on its overhead. */
#define RECORD_MAX      16384
#define RECORD_OVERHEAD 64

/*
 * The suites we accept: forward-secret ECDHE with AEAD ciphers only (RFC 7525
 * section 4.2). Order is the server's preference (mbedTLS honours the server
 * order by default). ChaCha20-Poly1305 comes first: in mbedTLS 2.28 it is 2 to
 * 4 times cheaper than AES-GCM even with AES-NI (measured on the build machine:
 * ~400 vs ~100-250 MB/s per core), and the peer (OpenSSL, BoringSSL) is fast at
 * both. Suites whose key type matches no certificate are skipped by mbedTLS.
 */
static const int ciphersuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    0,
};

/* ECDHE groups, in preference order (RFC 8422 section 5.1.1); x25519 is also the cheapest here. */
static const mbedtls_ecp_group_id curves[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};

/* Process-wide: entropy, a locked DRBG, and the ticket keys every worker shares. */
static struct {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_ticket_context ticket;
    bool ready;
} global;

/* One configured (chain, key) pair as validated bytes. Immutable once loaded. */
struct pem_pair {
    char *cert_path;
    char *key_path;
    unsigned char *chain; /* PEM, NUL-terminated */
    size_t chain_len;     /* including the NUL, as mbedtls_x509_crt_parse() wants it */
    unsigned char *key;   /* secret: wiped before it is freed */
    size_t key_len;       /* including the NUL */
    char **names;         /* NULL-terminated, lowercased: SAN dNSNames, or the CN without any */
    size_t nnames;
};

struct tls_material {
    atomic_uint refs;
    size_t n;
    struct pem_pair *pairs;
};

/* A worker's parsed copy of one pair (mbedTLS key contexts are not shared between threads). */
struct server_cert {
    mbedtls_x509_crt chain;
    mbedtls_pk_context key;
    const struct pem_pair *pem; /* names; owned by the material the server references */
};

struct tls_server {
    unsigned refs; /* one worker thread only */
    struct tls_material *m;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_config conf;
    struct server_cert *certs;
    size_t n;
};

/* ------------------------------------------------------------------------------------------ */
/* Process-wide state */

int tls_global_init(void)
{
    static const char pers[] = "chappe tls global";
    if (global.ready)
        return 0;
    mbedtls_entropy_init(&global.entropy);
    mbedtls_ctr_drbg_init(&global.drbg);
    mbedtls_ssl_ticket_init(&global.ticket);
    int ret = mbedtls_ctr_drbg_seed(&global.drbg, mbedtls_entropy_func, &global.entropy,
                                    (const unsigned char *)pers, sizeof(pers) - 1);
    if (ret != 0)
        goto fail;
    /* The ticket context and the DRBG carry their own mutexes (MBEDTLS_THREADING_C). */
    ret = mbedtls_ssl_ticket_setup(&global.ticket, mbedtls_ctr_drbg_random, &global.drbg,
                                   MBEDTLS_CIPHER_AES_256_GCM, TICKET_LIFETIME_S);
    if (ret != 0)
        goto fail;
    global.ready = true;
    return 0;
fail:;
    char msg[128];
    mbedtls_strerror(ret, msg, sizeof(msg));
    log_error("tls: initialisation failed: %s", msg);
    mbedtls_ssl_ticket_free(&global.ticket);
    mbedtls_ctr_drbg_free(&global.drbg);
    mbedtls_entropy_free(&global.entropy);
    return CH_ETLS;
}

void tls_global_free(void)
{
    if (!global.ready)
        return;
    mbedtls_ssl_ticket_free(&global.ticket);
    mbedtls_ctr_drbg_free(&global.drbg);
    mbedtls_entropy_free(&global.entropy);
    global.ready = false;
}

/* ------------------------------------------------------------------------------------------ */
/* Host names */

static char lower(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
}

static bool case_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower(a[i]) != lower(b[i]))
            return false;
    return true;
}

/*
 * Does certificate name `pattern` (lowercased, NUL-terminated) cover host
 * `name` (len bytes, any case)? DNS names compare case-insensitively (RFC 4343);
 * a wildcard is only the whole left-most label and stands for exactly one
 * non-empty label (RFC 6125 section 6.4.3): "*.example.org" matches
 * "a.example.org", not "example.org" nor "a.b.example.org".
 */
static bool name_match(const char *pattern, const char *name, size_t len)
{
    size_t plen = strlen(pattern);
    if (plen > 2 && pattern[0] == '*' && pattern[1] == '.') {
        size_t slen = plen - 1; /* ".example.org" */
        if (len <= slen)
            return false;
        size_t head = len - slen;
        if (memchr(name, '.', head) != NULL)
            return false;
        return case_eq(name + head, pattern + 1, slen);
    }
    return plen == len && case_eq(pattern, name, len);
}

/* A printable host name of at most 253 bytes (RFC 1035 section 2.3.4), no NUL. */
static bool name_ok(const unsigned char *p, size_t len)
{
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++)
        if (p[i] <= 0x20 || p[i] >= 0x7f)
            return false;
    return true;
}

static int add_name(struct pem_pair *p, const unsigned char *s, size_t len)
{
    if (!name_ok(s, len))
        return 0; /* not a host name we could ever match: ignore */
    char **v = realloc(p->names, (p->nnames + 2) * sizeof(*v));
    if (v == NULL)
        return CH_ENOMEM;
    p->names = v;
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return CH_ENOMEM;
    for (size_t i = 0; i < len; i++)
        copy[i] = lower((char)s[i]);
    copy[len] = '\0';
    v[p->nnames++] = copy;
    v[p->nnames] = NULL;
    return 0;
}

/* The names a client may reach this leaf by: its SAN dNSNames, else its CN (RFC 6125 6.4.4). */
static int collect_names(struct pem_pair *p, const mbedtls_x509_crt *leaf)
{
    const int dns_tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME;
    for (const mbedtls_x509_sequence *san = &leaf->subject_alt_names; san; san = san->next) {
        if (san->buf.p == NULL || san->buf.tag != dns_tag)
            continue;
        int rc = add_name(p, san->buf.p, san->buf.len);
        if (rc)
            return rc;
    }
    if (p->nnames > 0)
        return 0;
    const mbedtls_x509_name *cn = NULL;
    for (const mbedtls_x509_name *nm = &leaf->subject; nm; nm = nm->next)
        if (nm->oid.p != NULL && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &nm->oid) == 0)
            cn = nm; /* the last, most specific one */
    return cn ? add_name(p, cn->val.p, cn->val.len) : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Certificate material */

/* One problem line, "LABEL FILE: message\n" (label: the config key the file comes from). */
static void verrline(struct buf *err, const char *label, const char *file, const char *fmt,
                     va_list ap)
{
    buf_appendf(err, "%s %s: ", label, file);
    buf_vappendf(err, fmt, ap);
    buf_append_str(err, "\n");
}

static void errline_as(struct buf *err, const char *label, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void errline_as(struct buf *err, const char *label, const char *file, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verrline(err, label, file, fmt, ap);
    va_end(ap);
}

static void errline(struct buf *err, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errline(struct buf *err, const char *file, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verrline(err, "cert", file, fmt, ap);
    va_end(ap);
}

/* The more serious of two results: out of memory, then unreadable, then invalid. */
static int worse(int a, int b)
{
    static const int rank[] = {CH_ENOMEM, CH_EIO, CH_EINVAL};
    for (size_t i = 0; i < ARRAY_LEN(rank); i++)
        if (a == rank[i] || b == rank[i])
            return rank[i];
    return a ? a : b;
}

/*
 * Read a whole PEM file into a NUL-terminated buffer. A key's buffer is
 * allocated once at its final size so no copy of the secret is left behind.
 */
static int read_pem(const char *label, const char *path, bool secret, unsigned char **out,
                    size_t *outlen, struct buf *err)
{
    /* O_NONBLOCK: a FIFO or device named by mistake must not hang the reload. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        errline_as(err, label, path, "cannot open: %s", strerror(errno));
        return CH_EIO;
    }
    int rc = CH_EIO;
    unsigned char *data = NULL;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        errline_as(err, label, path, "cannot stat: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        errline_as(err, label, path, "not a regular file");
        rc = CH_EINVAL;
        goto out;
    }
    if (st.st_size > PEM_MAX) {
        errline_as(err, label, path, "larger than %d bytes: not a PEM certificate or key", PEM_MAX);
        rc = CH_EINVAL;
        goto out;
    }
    if (secret && (st.st_mode & 077))
        log_warn("cert %s: private key readable by group or others (mode %03o); chmod 600 it", path,
                 (unsigned)(st.st_mode & 0777));
    size_t cap = (size_t)st.st_size, len = 0;
    data = malloc(cap + 1);
    if (data == NULL) {
        rc = CH_ENOMEM;
        goto out;
    }
    while (len < cap) {
        ssize_t r = read(fd, data + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            errline_as(err, label, path, "cannot read: %s", strerror(errno));
            goto out;
        }
        if (r == 0)
            break; /* shrank while we read: take what is there */
        len += (size_t)r;
    }
    if (len == 0) {
        errline_as(err, label, path, "empty file");
        rc = CH_EINVAL;
        goto out;
    }
    data[len] = '\0';
    *out = data;
    *outlen = len + 1;
    data = NULL;
    rc = 0;
out:
    if (data != NULL) {
        mbedtls_platform_zeroize(data, cap + 1);
        free(data);
    }
    close(fd);
    return rc;
}

/* Parse the pair once: the chain, the key, that they match; collect the leaf's names. */
static int check_pair(struct pem_pair *p, struct buf *err)
{
    mbedtls_x509_crt chain;
    mbedtls_pk_context key;
    char why[160];
    int rc = CH_EINVAL;
    mbedtls_x509_crt_init(&chain);
    mbedtls_pk_init(&key);

    int ret = mbedtls_x509_crt_parse(&chain, p->chain, p->chain_len);
    if (ret < 0) {
        mbedtls_strerror(ret, why, sizeof(why));
        errline(err, p->cert_path, "no certificate could be parsed: %s", why);
        goto out;
    }
    if (ret > 0) {
        errline(err, p->cert_path, "%d certificate(s) of the chain could not be parsed", ret);
        goto out;
    }
    ret = mbedtls_pk_parse_key(&key, p->key, p->key_len, NULL, 0);
    if (ret == MBEDTLS_ERR_PK_PASSWORD_REQUIRED) {
        errline(err, p->key_path, "the private key is encrypted (no password can be given)");
        goto out;
    }
    if (ret != 0) {
        mbedtls_strerror(ret, why, sizeof(why));
        errline(err, p->key_path, "the private key could not be parsed: %s", why);
        goto out;
    }
    mbedtls_pk_type_t type = mbedtls_pk_get_type(&key);
    if (type != MBEDTLS_PK_RSA && type != MBEDTLS_PK_ECKEY && type != MBEDTLS_PK_ECDSA) {
        errline(err, p->key_path, "%s keys are not supported (EC or RSA only)",
                mbedtls_pk_get_name(&key));
        goto out;
    }
    if (mbedtls_pk_check_pair(&chain.pk, &key) != 0) {
        errline(err, p->cert_path, "the private key %s does not match the certificate",
                p->key_path);
        goto out;
    }
    const mbedtls_x509_time *to = &chain.valid_to, *from = &chain.valid_from;
    if (mbedtls_x509_time_is_past(to))
        log_warn("cert %s: expired on %04d-%02d-%02d", p->cert_path, to->year, to->mon, to->day);
    if (mbedtls_x509_time_is_future(from))
        log_warn("cert %s: not valid before %04d-%02d-%02d", p->cert_path, from->year, from->mon,
                 from->day);
    rc = collect_names(p, &chain);
    if (rc == 0 && p->nnames == 0)
        log_warn("cert %s: no DNS name (SAN or CN): only reachable as the default", p->cert_path);
out:
    mbedtls_pk_free(&key); /* zeroizes the parsed key */
    mbedtls_x509_crt_free(&chain);
    return rc;
}

static int load_pair(struct pem_pair *p, const struct cfg_cert *cc, struct buf *err)
{
    if (cc->cert == NULL || cc->key == NULL) {
        errline(err, cc->cert ? cc->cert : "-", "both cert and key files are required");
        return CH_EINVAL;
    }
    p->cert_path = strdup(cc->cert);
    p->key_path = strdup(cc->key);
    if (p->cert_path == NULL || p->key_path == NULL)
        return CH_ENOMEM;
    int rc_cert = read_pem("cert", cc->cert, false, &p->chain, &p->chain_len, err);
    int rc_key = read_pem("cert", cc->key, true, &p->key, &p->key_len, err);
    if (rc_cert || rc_key)
        return worse(rc_cert, rc_key);
    return check_pair(p, err);
}

static void material_free(struct tls_material *m)
{
    for (size_t i = 0; i < m->n; i++) {
        struct pem_pair *p = &m->pairs[i];
        if (p->key != NULL)
            mbedtls_platform_zeroize(p->key, p->key_len);
        free(p->key);
        free(p->chain);
        free(p->cert_path);
        free(p->key_path);
        for (size_t j = 0; j < p->nnames; j++)
            free(p->names[j]);
        free(p->names);
    }
    free(m->pairs);
    free(m);
}

int tls_material_load(const struct config *cfg, struct tls_material **out, struct buf *err)
{
    *out = NULL;
    size_t n = cfg->tls.ncertificates;
    if (n == 0) {
        errline(err, "-", "tls.certificates is empty");
        return CH_EINVAL;
    }
    struct tls_material *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return CH_ENOMEM;
    m->pairs = calloc(n, sizeof(*m->pairs));
    if (m->pairs == NULL) {
        free(m);
        return CH_ENOMEM;
    }
    m->n = n;
    atomic_init(&m->refs, 1);
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        rc = worse(rc, load_pair(&m->pairs[i], &cfg->tls.certificates[i], err));
    if (rc != 0) {
        material_free(m);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        const struct pem_pair *p = &m->pairs[i];
        log_debug("cert %s: %zu name(s), first %s", p->cert_path, p->nnames,
                  p->nnames ? p->names[0] : "-");
    }
    *out = m;
    return 0;
}

/* A copy of n bytes plus the NUL that mbedtls_x509_crt_parse() wants after PEM; trailing NULs
 * of the input are dropped first. */
static unsigned char *pem_copy(const char *p, size_t n, size_t *outlen)
{
    while (n > 0 && p[n - 1] == '\0')
        n--;
    unsigned char *copy = malloc(n + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, p, n);
    copy[n] = '\0';
    *outlen = n + 1;
    return copy;
}

int tls_material_from_pem(const char *chain_pem, size_t chain_len, const char *key_pem,
                          size_t key_len, const char *label, struct tls_material **out,
                          struct buf *err)
{
    *out = NULL;
    struct tls_material *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return CH_ENOMEM;
    m->pairs = calloc(1, sizeof(*m->pairs));
    if (m->pairs == NULL) {
        free(m);
        return CH_ENOMEM;
    }
    m->n = 1;
    atomic_init(&m->refs, 1);
    struct pem_pair *p = &m->pairs[0];
    /* The label stands where the file names would: "cert LABEL: reason". */
    size_t klen = strlen(label) + sizeof(" (key)");
    p->cert_path = strdup(label);
    p->key_path = malloc(klen);
    if (p->key_path != NULL)
        snprintf(p->key_path, klen, "%s (key)", label);
    p->chain = pem_copy(chain_pem, chain_len, &p->chain_len);
    p->key = pem_copy(key_pem, key_len, &p->key_len);
    int rc = CH_ENOMEM;
    if (p->cert_path != NULL && p->key_path != NULL && p->chain != NULL && p->key != NULL)
        rc = check_pair(p, err);
    if (rc != 0) {
        material_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void tls_material_ref(struct tls_material *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void tls_material_unref(struct tls_material *m)
{
    if (m == NULL)
        return;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        material_free(m);
}

size_t tls_material_count(const struct tls_material *m)
{
    return m->n;
}

/* ------------------------------------------------------------------------------------------ */
/* Per-worker server contexts */

/* Keep the requested name, lowercased, for the owner; c->sni stays "" if it is no host name. */
static void remember_sni(struct tls_conn *c, const unsigned char *name, size_t len)
{
    if (!name_ok(name, len) || len >= sizeof(c->sni))
        return;
    for (size_t i = 0; i < len; i++)
        c->sni[i] = lower((char)name[i]);
    c->sni[len] = '\0';
}

/*
 * SNI (RFC 6066 section 3): offer every certificate with an exact name match,
 * else every one with a wildcard match (so an ECDSA and an RSA certificate for
 * the same name both stay candidates and mbedTLS picks by cipher suite). An
 * unknown name gets the default, first certificate, as nginx does; we do not
 * send unrecognized_name.
 */
static int on_sni(void *arg, mbedtls_ssl_context *ssl, const unsigned char *name, size_t len)
{
    struct tls_server *s = arg;
    struct tls_conn *c = CONTAINER_OF(ssl, struct tls_conn, ssl);
    remember_sni(c, name, len);
    if (!name_ok(name, len))
        return 0;
    for (int wildcard = 0; wildcard <= 1; wildcard++) {
        int found = 0;
        for (size_t i = 0; i < s->n; i++) {
            const struct pem_pair *p = s->certs[i].pem;
            for (size_t j = 0; j < p->nnames; j++) {
                bool is_wild = p->names[j][0] == '*';
                if (is_wild != (wildcard == 1) || !name_match(p->names[j], (const char *)name, len))
                    continue;
                int ret = mbedtls_ssl_set_hs_own_cert(ssl, &s->certs[i].chain, &s->certs[i].key);
                if (ret != 0)
                    return ret;
                found++;
                break;
            }
        }
        if (found)
            return 0;
    }
    return 0;
}

static void server_free(struct tls_server *s)
{
    for (size_t i = 0; i < s->n; i++) {
        mbedtls_pk_free(&s->certs[i].key);
        mbedtls_x509_crt_free(&s->certs[i].chain);
    }
    free(s->certs);
    mbedtls_ssl_config_free(&s->conf);
    mbedtls_ctr_drbg_free(&s->drbg);
    tls_material_unref(s->m);
    free(s);
}

int tls_server_new(struct tls_material *m, struct tls_server **out)
{
    static const char pers[] = "chappe tls worker";
    *out = NULL;
    if (!global.ready) {
        log_error("tls: tls_global_init() was not called");
        return CH_ETLS;
    }
    struct tls_server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return CH_ENOMEM;
    s->refs = 1;
    mbedtls_ctr_drbg_init(&s->drbg);
    mbedtls_ssl_config_init(&s->conf);
    tls_material_ref(m);
    s->m = m;
    s->certs = calloc(m->n, sizeof(*s->certs));
    if (s->certs == NULL) {
        server_free(s);
        return CH_ENOMEM;
    }
    for (size_t i = 0; i < m->n; i++) {
        mbedtls_x509_crt_init(&s->certs[i].chain);
        mbedtls_pk_init(&s->certs[i].key);
        s->certs[i].pem = &m->pairs[i];
    }
    s->n = m->n;

    const char *what = "seeding the worker DRBG";
    int ret = mbedtls_ctr_drbg_seed(&s->drbg, mbedtls_ctr_drbg_random, &global.drbg,
                                    (const unsigned char *)pers, sizeof(pers) - 1);
    if (ret != 0)
        goto fail;
    for (size_t i = 0; i < m->n; i++) {
        const struct pem_pair *p = &m->pairs[i];
        what = p->cert_path;
        ret = mbedtls_x509_crt_parse(&s->certs[i].chain, p->chain, p->chain_len);
        if (ret != 0)
            goto fail;
        ret = mbedtls_pk_parse_key(&s->certs[i].key, p->key, p->key_len, NULL, 0);
        if (ret != 0)
            goto fail;
    }
    what = "configuring";
    mbedtls_ssl_config *conf = &s->conf;
    ret = mbedtls_ssl_config_defaults(conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                      MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0)
        goto fail;
    mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random, &s->drbg);
    /* TLS 1.2 only (RFC 8996 deprecates 1.0 and 1.1; mbedTLS 2.28 has no usable 1.3). */
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(conf, ciphersuites);
    mbedtls_ssl_conf_curves(conf, curves);
    mbedtls_ssl_conf_authmode(conf, MBEDTLS_SSL_VERIFY_NONE);
    mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    mbedtls_ssl_conf_session_tickets_cb(conf, mbedtls_ssl_ticket_write, mbedtls_ssl_ticket_parse,
                                        &global.ticket);
    mbedtls_ssl_conf_sni(conf, on_sni, s);
    ret = mbedtls_ssl_conf_own_cert(conf, &s->certs[0].chain, &s->certs[0].key);
    if (ret != 0)
        goto fail;
    *out = s;
    return 0;
fail:;
    char why[160];
    mbedtls_strerror(ret, why, sizeof(why));
    log_error("tls: worker context: %s: %s", what, why);
    server_free(s);
    return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED || ret == MBEDTLS_ERR_X509_ALLOC_FAILED ||
                   ret == MBEDTLS_ERR_PK_ALLOC_FAILED
               ? CH_ENOMEM
               : CH_ETLS;
}

void tls_server_ref(struct tls_server *s)
{
    s->refs++;
}

void tls_server_unref(struct tls_server *s)
{
    if (s != NULL && --s->refs == 0)
        server_free(s);
}

/* ------------------------------------------------------------------------------------------ */
/* Client contexts (outbound federation) */

/* Debian's and Ubuntu's bundle of the system's trusted roots (ca-certificates). */
#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

struct tls_client {
    unsigned refs; /* one thread only */
    bool verify;   /* federation_verify_certificates */
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca; /* the system bundle, then every federation_custom_ca_list file */
    mbedtls_ssl_config conf;
};

static void tls_client_destroy(struct tls_client *cl)
{
    mbedtls_ssl_config_free(&cl->conf);
    mbedtls_x509_crt_free(&cl->ca);
    mbedtls_ctr_drbg_free(&cl->drbg);
    mbedtls_entropy_free(&cl->entropy);
    free(cl);
}

static size_t chain_len(const mbedtls_x509_crt *crt)
{
    size_t n = 0;
    for (; crt != NULL && crt->raw.p != NULL; crt = crt->next)
        n++;
    return n;
}

/*
 * Add the certificates of one PEM (or DER) file to cl->ca. Every certificate
 * of a file the operator named must parse; in the system bundle, one that
 * mbedTLS cannot read (an algorithm it lacks) is skipped, as other clients do.
 */
static int add_ca_file(struct tls_client *cl, const char *label, const char *file, bool strict,
                       struct buf *err)
{
    unsigned char *data = NULL;
    size_t len = 0;
    int rc = read_pem(label, file, false, &data, &len, err);
    if (rc != 0)
        return rc;
    size_t before = chain_len(&cl->ca);
    int ret = mbedtls_x509_crt_parse(&cl->ca, data, len);
    free(data);
    char why[160];
    if (ret == MBEDTLS_ERR_X509_ALLOC_FAILED)
        return CH_ENOMEM;
    if (ret < 0) {
        mbedtls_strerror(ret, why, sizeof(why));
        errline_as(err, label, file, "no certificate could be parsed: %s", why);
        return CH_EINVAL;
    }
    if (ret > 0 && strict) {
        errline_as(err, label, file, "%d certificate(s) could not be parsed", ret);
        return CH_EINVAL;
    }
    if (ret > 0)
        log_debug("tls: %s: %d certificate(s) skipped (not understood by mbedTLS)", file, ret);
    if (chain_len(&cl->ca) == before) {
        errline_as(err, label, file, "no certificate in the file");
        return CH_EINVAL;
    }
    return 0;
}

/* The trust anchors: the system bundle (when present) and the operator's own CAs. */
static int load_trust(struct tls_client *cl, const struct config *cfg, struct buf *err)
{
    int rc = 0;
    bool need_system = cfg->federation_verify_certificates && cfg->nfederation_custom_ca_list == 0;
    if (access(SYSTEM_CA_BUNDLE, F_OK) == 0 || need_system)
        rc = add_ca_file(cl, "system CA bundle", SYSTEM_CA_BUNDLE, false, err);
    else
        log_info("tls: no system CA bundle %s: only federation_custom_ca_list is trusted",
                 SYSTEM_CA_BUNDLE);
    for (size_t i = 0; i < cfg->nfederation_custom_ca_list; i++)
        rc = worse(rc, add_ca_file(cl, "federation_custom_ca_list",
                                   cfg->federation_custom_ca_list[i], true, err));
    return rc;
}

int tls_client_new(const struct config *cfg, struct tls_client **out, struct buf *err)
{
    static const char pers[] = "chappe tls client";
    *out = NULL;
    struct tls_client *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return CH_ENOMEM;
    cl->refs = 1;
    cl->verify = cfg->federation_verify_certificates;
    mbedtls_entropy_init(&cl->entropy);
    mbedtls_ctr_drbg_init(&cl->drbg);
    mbedtls_x509_crt_init(&cl->ca);
    mbedtls_ssl_config_init(&cl->conf);

    int rc = load_trust(cl, cfg, err);
    if (rc != 0) {
        tls_client_destroy(cl);
        return rc;
    }
    /* Its own entropy source: a CLI command has no tls_global_init(). */
    int ret = mbedtls_ctr_drbg_seed(&cl->drbg, mbedtls_entropy_func, &cl->entropy,
                                    (const unsigned char *)pers, sizeof(pers) - 1);
    if (ret == 0)
        ret = mbedtls_ssl_config_defaults(&cl->conf, MBEDTLS_SSL_IS_CLIENT,
                                          MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        char why[160];
        mbedtls_strerror(ret, why, sizeof(why));
        buf_appendf(err, "tls client: %s\n", why);
        tls_client_destroy(cl);
        return CH_ETLS;
    }
    mbedtls_ssl_config *conf = &cl->conf;
    mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random, &cl->drbg);
    /* The same protocol and suites as the server side (RFC 7525 section 4.2). */
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(conf, ciphersuites);
    mbedtls_ssl_conf_curves(conf, curves);
    mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    if (chain_len(&cl->ca) > 0)
        mbedtls_ssl_conf_ca_chain(conf, &cl->ca, NULL);
    /* Off, the chain and the name are still computed but not enforced: the owner warns. */
    mbedtls_ssl_conf_authmode(conf,
                              cl->verify ? MBEDTLS_SSL_VERIFY_REQUIRED : MBEDTLS_SSL_VERIFY_NONE);
    log_debug("tls: client context: %zu trusted CA certificate(s), verification %s",
              chain_len(&cl->ca), cl->verify ? "on" : "OFF");
    *out = cl;
    return 0;
}

void tls_client_ref(struct tls_client *cl)
{
    cl->refs++;
}

void tls_client_unref(struct tls_client *cl)
{
    if (cl != NULL && --cl->refs == 0)
        tls_client_destroy(cl);
}

bool tls_client_verifies(const struct tls_client *cl)
{
    return cl->verify;
}

/* ------------------------------------------------------------------------------------------ */
/* Connections */

/* Record layer output: append to c->out; the owner writes it to the socket. */
static int bio_send(void *arg, const unsigned char *p, size_t n)
{
    struct tls_conn *c = arg;
    if (n > INT_MAX)
        n = INT_MAX;
    if (buf_append(&c->out, p, n) != 0)
        return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    return (int)n;
}

/* Record layer input: consume from the front of c->in; empty means "wait for the next read". */
static int bio_recv(void *arg, unsigned char *p, size_t n)
{
    struct tls_conn *c = arg;
    if (c->in.len == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > c->in.len)
        n = c->in.len;
    if (n > INT_MAX)
        n = INT_MAX;
    memcpy(p, buf_data(&c->in), n);
    buf_consume(&c->in, n);
    return (int)n;
}

int tls_conn_init(struct tls_conn *c, struct tls_server *srv)
{
    memset(c, 0, sizeof(*c));
    mbedtls_ssl_init(&c->ssl);
    c->in = BUF_INIT;
    c->out = BUF_INIT;
    int ret = mbedtls_ssl_setup(&c->ssl, &srv->conf);
    if (ret != 0) {
        c->last_error = ret;
        mbedtls_ssl_free(&c->ssl);
        return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? CH_ENOMEM : CH_ETLS;
    }
    /* c must not move from here on: the BIO and the SNI callback find it by address. */
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    tls_server_ref(srv);
    c->srv = srv;
    return 0;
}

/* Does the leaf carry an iPAddress subjectAltName equal to ip (RFC 5280 section 4.2.1.6)? */
static bool has_ip_san(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t len)
{
    /* mbedTLS 2.28 keeps every GeneralName with its raw tag but compares dNSNames only. */
    const int ip_tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS;
    for (const mbedtls_x509_sequence *san = &crt->subject_alt_names; san; san = san->next)
        if (san->buf.p != NULL && san->buf.tag == ip_tag && san->buf.len == len &&
            memcmp(san->buf.p, ip, len) == 0)
            return true;
    return false;
}

/*
 * Called by mbedTLS for each certificate of the verified chain, the leaf last
 * (depth 0), only when verification is required. An IP literal is checked
 * here: there is no host name for mbedTLS to check, and a mismatch becomes
 * an ordinary name mismatch, failing the handshake with a bad_certificate alert.
 */
static int verify_ip(void *arg, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    const struct tls_conn *c = arg;
    size_t len = c->expect_family == 4 ? 4 : 16;
    if (depth == 0 && c->expect_family != 0 && !has_ip_san(crt, c->expect_ip, len))
        *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
    return 0;
}

int tls_conn_init_client(struct tls_conn *c, struct tls_client *cl, const char *name, int ip_family,
                         const unsigned char *ip)
{
    memset(c, 0, sizeof(*c));
    mbedtls_ssl_init(&c->ssl);
    c->in = BUF_INIT;
    c->out = BUF_INIT;
    size_t len = name ? strlen(name) : 0;
    bool ip_ok = ip_family == 0 || ((ip_family == 4 || ip_family == 6) && ip != NULL);
    if (len == 0 || len >= sizeof(c->expect_name) || !ip_ok) {
        c->last_error = MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
        return CH_ETLS;
    }
    memcpy(c->expect_name, name, len + 1);
    c->expect_family = ip_family;
    if (ip_family != 0)
        memcpy(c->expect_ip, ip, ip_family == 4 ? 4 : 16);
    int ret = mbedtls_ssl_setup(&c->ssl, &cl->conf);
    /* A DNS name is both SNI and the name checked; an IP literal is neither (RFC 6066 section 3
     * forbids literal addresses in SNI). */
    if (ret == 0 && ip_family == 0)
        ret = mbedtls_ssl_set_hostname(&c->ssl, name);
    if (ret != 0) {
        c->last_error = ret;
        mbedtls_ssl_free(&c->ssl);
        return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? CH_ENOMEM : CH_ETLS;
    }
    /* c must not move from here on: the BIO and the verify callback find it by address. */
    mbedtls_ssl_set_verify(&c->ssl, verify_ip, c);
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    tls_client_ref(cl);
    c->cli = cl;
    return 0;
}

void tls_conn_free(struct tls_conn *c)
{
    mbedtls_ssl_free(&c->ssl); /* wipes the session keys */
    buf_free(&c->in);
    buf_free(&c->out);
    tls_server_unref(c->srv);
    c->srv = NULL;
    tls_client_unref(c->cli);
    c->cli = NULL;
}

int tls_conn_feed(struct tls_conn *c, const char *p, size_t n)
{
    return buf_append(&c->in, p, n);
}

int tls_conn_handshake(struct tls_conn *c)
{
    if (c->handshake_done)
        return 0;
    int ret = 0;
    /*
     * mbedtls_ssl_handshake() is this loop; we step ourselves because mbedTLS
     * 2.28 has no "was this session resumed" query: the flag lives in the
     * handshake parameters, set when a ticket from ClientHello is accepted
     * (RFC 5077 section 3.4), and they are freed by the final step. Its Finished
     * exchange follows, so a resumption that fails later still fails here.
     */
    while (c->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        ret = mbedtls_ssl_handshake_step(&c->ssl);
        if (c->ssl.handshake != NULL && c->ssl.handshake->resume)
            c->resumed = true;
        if (ret != 0)
            break;
    }
    if (ret == 0) {
        c->handshake_done = true;
        metrics_count_tls_handshake(c->srv != NULL, true);
        return 0;
    }
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return CH_EAGAIN;
    metrics_count_tls_handshake(c->srv != NULL, false);
    c->last_error = ret;
    c->resumed = false;
    return CH_ETLS;
}

int tls_conn_read(struct tls_conn *c, struct buf *plain)
{
    if (!c->handshake_done) {
        int rc = tls_conn_handshake(c);
        if (rc != 0)
            return rc == CH_EAGAIN ? 0 : rc;
    }
    for (;;) {
        if (buf_reserve(plain, RECORD_MAX) != 0)
            return CH_ENOMEM;
        int ret = mbedtls_ssl_read(&c->ssl, (unsigned char *)buf_tail(plain), buf_avail(plain));
        if (ret > 0) {
            buf_commit(plain, (size_t)ret);
            continue;
        }
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
            return 0;
        /* close_notify (RFC 5246 section 7.2.1), or the transport ended (never from our BIO). */
        if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == 0)
            return CH_EEOF;
        c->last_error = ret;
        return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? CH_ENOMEM : CH_ETLS;
    }
}

int tls_conn_write(struct tls_conn *c, const char *p, size_t n)
{
    if (!c->handshake_done) {
        c->last_error = MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
        return CH_ETLS;
    }
    /* Room for all the records at once: one growth, not one per 16 KiB. */
    size_t records = n / RECORD_MAX + 1;
    if (buf_reserve(&c->out, n + records * RECORD_OVERHEAD) != 0)
        return CH_ENOMEM;
    size_t done = 0;
    while (done < n) {
        int ret = mbedtls_ssl_write(&c->ssl, (const unsigned char *)p + done, n - done);
        if (ret > 0) {
            done += (size_t)ret;
            continue;
        }
        c->last_error = ret;
        return ret == MBEDTLS_ERR_SSL_ALLOC_FAILED ? CH_ENOMEM : CH_ETLS;
    }
    return 0;
}

void tls_conn_close_notify(struct tls_conn *c)
{
    /* Only after the handshake; mbedTLS sends nothing before (RFC 5246 section 7.2.1). */
    int ret = mbedtls_ssl_close_notify(&c->ssl);
    if (ret != 0 && ret != MBEDTLS_ERR_SSL_WANT_WRITE)
        c->last_error = ret;
}

const char *tls_conn_sni(const struct tls_conn *c)
{
    return c->sni[0] ? c->sni : NULL;
}

const char *tls_conn_cipher(const struct tls_conn *c)
{
    const char *name = mbedtls_ssl_get_ciphersuite(&c->ssl);
    return name ? name : "";
}

bool tls_conn_resumed(const struct tls_conn *c)
{
    return c->resumed;
}

/* Why the peer's certificate was refused, from mbedTLS's verification flags, "; "-separated. */
static void describe_verify(const struct tls_conn *c, uint32_t flags, char *msg, size_t cap)
{
    static const struct {
        uint32_t flag;
        const char *text;
    } reasons[] = {
        {MBEDTLS_X509_BADCERT_MISSING, "no certificate was sent"},
        {MBEDTLS_X509_BADCERT_EXPIRED, "certificate has expired"},
        {MBEDTLS_X509_BADCERT_FUTURE, "certificate is not yet valid"},
        {MBEDTLS_X509_BADCERT_NOT_TRUSTED, "certificate not issued by a trusted CA"},
        {MBEDTLS_X509_BADCERT_REVOKED, "certificate has been revoked"},
        {MBEDTLS_X509_BADCERT_KEY_USAGE, "certificate key usage does not allow TLS"},
        {MBEDTLS_X509_BADCERT_EXT_KEY_USAGE, "certificate is not for TLS servers (extended key "
                                             "usage)"},
        {MBEDTLS_X509_BADCERT_NS_CERT_TYPE, "certificate is not for TLS servers (cert type)"},
        {MBEDTLS_X509_BADCERT_BAD_MD, "certificate signed with an unacceptable hash"},
        {MBEDTLS_X509_BADCERT_BAD_PK, "certificate signed with an unacceptable algorithm"},
        {MBEDTLS_X509_BADCERT_BAD_KEY, "certificate has an unacceptable key"},
        {MBEDTLS_X509_BADCERT_OTHER, "certificate rejected"},
    };
    size_t n = 0;
    msg[0] = '\0';
    for (size_t i = 0; i < ARRAY_LEN(reasons) && n < cap; i++)
        if (flags & reasons[i].flag)
            n += (size_t)snprintf(msg + n, cap - n, "%s%s", n ? "; " : "", reasons[i].text);
    if ((flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) && n < cap) {
        if (c->expect_family != 0)
            n += (size_t)snprintf(msg + n, cap - n, "%scertificate has no iPAddress SAN for %s",
                                  n ? "; " : "", c->expect_name);
        else
            n += (size_t)snprintf(msg + n, cap - n, "%scertificate is not valid for %s",
                                  n ? "; " : "", c->expect_name);
    }
    if (n == 0)
        snprintf(msg, cap, "certificate verification failed (flags 0x%x)", (unsigned)flags);
}

const char *tls_conn_strerror(const struct tls_conn *c)
{
    static _Thread_local char msg[600];
    if (c->last_error == 0)
        return "no TLS error";
    if (c->cli != NULL && c->last_error == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        describe_verify(c, mbedtls_ssl_get_verify_result(&c->ssl), msg, sizeof(msg));
        return msg;
    }
    mbedtls_strerror(c->last_error, msg, sizeof(msg));
    return msg;
}
