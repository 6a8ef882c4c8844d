/* mint.c -- server certificates minted from the egress CA for the hosts that CONNECT tunnels name,
 * cached per event loop. */
/* SPDX-License-Identifier: ISC */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>

#include "chappe/log.h"
#include "chappe/mint.h"
#include "chappe/util.h"

/* Certificate and key files above this size are refused (a PEM chain is a few KiB). */
#define FILE_MAX (1024 * 1024)
/* Room for one minted certificate as PEM (about 1 KiB even when an RSA-4096 CA signs it). */
#define LEAF_PEM_MAX 4096
/* X.520 ub-common-name (RFC 5280 appendix A.1): longer names go in the subjectAltName only. */
#define CN_MAX 64
/* Hash buckets of a cache: a power of two, about one host per bucket when full. */
#define BUCKETS 1024
/* Minted at start-up to prove that the CA, its key and mbedTLS make verifiable certificates. */
#define PROBE_HOST "chappe-probe.invalid"

struct mint {
    char *cert_path;         /* for messages */
    unsigned char *ca_pem;   /* the CA file's certificates re-encoded as PEM, NUL-terminated */
    size_t ca_pem_len;       /* without the NUL */
    struct buf ca_key;       /* the CA key file's bytes and a NUL; secret */
    unsigned char *leaf_key; /* PEM, NUL-terminated; secret */
    size_t leaf_key_len;     /* without the NUL */
};

/* A host as minted for: canonical text (lowercase, IP literals as inet_ntop writes them). */
struct host {
    char name[254];
    int family; /* 0: DNS name, 4 or 6: IP literal */
    unsigned char ip[16];
};

struct entry {
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* recency list, most recent first */
    struct tls_server *srv;    /* one reference */
    time_t not_after;
    char host[]; /* canonical */
};

struct mint_cache {
    const struct mint *m;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca; /* the signer first, then the rest of the CA file */
    mbedtls_pk_context ca_key;
    mbedtls_pk_context leaf_key;
    unsigned char ca_ski[64]; /* the signer's subjectKeyIdentifier, ca_ski_len 0 if none */
    size_t ca_ski_len;
    struct entry *buckets[BUCKETS];
    struct entry lru; /* list head: lru.next is the most recent, lru.prev the least */
    size_t n, max;
    uint64_t minted, hits;
};

/* ------------------------------------------------------------------------------------------ */
/* Host names */

static bool is_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/*
 * A DNS name as the Matrix spec's server-name grammar allows (appendix "Server
 * Name": letters, digits, '-', '.'), with the limits of RFC 1035 section 2.3.4
 * (labels of 1 to 63 bytes, at most 253 in all), and a last label that is not
 * all digits (RFC 3696 section 2): "10.1" must not pass for a name.
 */
static bool dns_name_ok(const char *s, size_t len)
{
    size_t label = 0;
    bool digits = true;
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (label == 0)
                return false;
            label = 0;
            digits = true;
            continue;
        }
        if (!is_alnum(s[i]) && s[i] != '-')
            return false;
        if (++label > 63)
            return false;
        digits = digits && s[i] >= '0' && s[i] <= '9';
    }
    return label > 0 && !digits;
}

/* Parse host into h. 0 or CH_EINVAL. */
static int host_parse(const char *host, struct host *h)
{
    size_t len = strnlen(host, sizeof(h->name));
    memset(h, 0, sizeof(*h));
    if (len == 0 || len >= sizeof(h->name))
        return CH_EINVAL;
    if (inet_pton(AF_INET, host, h->ip) == 1) {
        h->family = 4;
        inet_ntop(AF_INET, h->ip, h->name, sizeof(h->name));
        return 0;
    }
    if (inet_pton(AF_INET6, host, h->ip) == 1) {
        h->family = 6;
        inet_ntop(AF_INET6, h->ip, h->name, sizeof(h->name));
        return 0;
    }
    if (!dns_name_ok(host, len))
        return CH_EINVAL;
    /* DNS names compare case-insensitively (RFC 4343): one certificate for every spelling. */
    for (size_t i = 0; i < len; i++)
        h->name[i] = (host[i] >= 'A' && host[i] <= 'Z') ? (char)(host[i] - 'A' + 'a') : host[i];
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Minting */

/* t in UTC as x509write wants it: "YYYYMMDDhhmmss". */
static void x509_time(time_t t, char out[16])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 16, "%Y%m%d%H%M%S", &tm);
}

/*
 * The issuer field, byte for byte the CA's subject: chain building compares
 * them (Go and webpki compare the raw bytes). x509write writes its list last
 * element first, so the copy is built in reverse; each value keeps its string
 * type. A multi-valued RDN is written as separate ones: mint_new's probe
 * notices and refuses such a CA.
 */
static int copy_issuer(mbedtls_x509write_cert *w, const mbedtls_x509_name *subject)
{
    for (const mbedtls_x509_name *nm = subject; nm != NULL && nm->oid.p != NULL; nm = nm->next) {
        mbedtls_asn1_named_data *d = mbedtls_calloc(1, sizeof(*d));
        if (d == NULL)
            return MBEDTLS_ERR_X509_ALLOC_FAILED;
        d->next = w->issuer; /* freed with the list by mbedtls_x509write_crt_free */
        w->issuer = d;
        d->oid.tag = nm->oid.tag;
        d->oid.p = mbedtls_calloc(1, nm->oid.len);
        d->val.p = mbedtls_calloc(1, nm->val.len ? nm->val.len : 1);
        if (d->oid.p == NULL || d->val.p == NULL)
            return MBEDTLS_ERR_X509_ALLOC_FAILED;
        memcpy(d->oid.p, nm->oid.p, nm->oid.len);
        d->oid.len = nm->oid.len;
        memcpy(d->val.p, nm->val.p, nm->val.len);
        d->val.len = nm->val.len;
        d->val.tag = nm->val.tag;
    }
    return 0;
}

/*
 * SubjectAltName (RFC 5280 section 4.2.1.6): SEQUENCE { dNSName [2] IA5String }
 * or SEQUENCE { iPAddress [7] OCTET STRING (4 or 16 bytes) }, written backwards
 * from the end of buf; *der points at it. mbedTLS 2.28 has no writer for it.
 * Its length, or an mbedTLS error.
 */
static int san_der(const struct host *h, unsigned char *buf, size_t cap, unsigned char **der)
{
    const unsigned char *raw = (const unsigned char *)h->name;
    size_t raw_len = strlen(h->name);
    unsigned char tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME;
    if (h->family != 0) {
        raw = h->ip;
        raw_len = h->family == 4 ? 4 : 16;
        tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS;
    }
    unsigned char *p = buf + cap;
    int ret;
    size_t len = 0;
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_raw_buffer(&p, buf, raw, raw_len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&p, buf, raw_len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(&p, buf, tag));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&p, buf, len));
    MBEDTLS_ASN1_CHK_ADD(
        len, mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
    *der = p;
    return (int)len;
}

/* A positive, non-zero 128-bit serial (RFC 5280 section 4.1.2.2), unpredictable to the peer. */
static int random_serial(mbedtls_ctr_drbg_context *drbg, mbedtls_mpi *serial)
{
    unsigned char b[16];
    int ret = mbedtls_ctr_drbg_random(drbg, b, sizeof(b));
    if (ret != 0)
        return ret;
    b[0] = (unsigned char)((b[0] & 0x7f) | 0x40);
    return mbedtls_mpi_read_binary(serial, b, sizeof(b));
}

/*
 * authorityKeyIdentifier (RFC 5280 section 4.2.1.1): SEQUENCE { [0] keyIdentifier }, the CA's
 * own subjectKeyIdentifier. OpenSSL refuses a chain where the two differ, so mbedTLS's computed
 * one (the SHA-1 of the CA's key) is only the fallback for a CA without one. Strict verifiers
 * (OpenSSL's X509_V_FLAG_X509_STRICT, Python 3.13's default) refuse a leaf without it.
 */
static int set_aki(mbedtls_x509write_cert *w, const struct mint_cache *c)
{
    if (c->ca_ski_len == 0)
        return mbedtls_x509write_crt_set_authority_key_identifier(w);
    unsigned char buf[sizeof(c->ca_ski) + 8];
    unsigned char *p = buf + sizeof(buf);
    int ret;
    size_t len = 0;
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_raw_buffer(&p, buf, c->ca_ski, c->ca_ski_len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&p, buf, c->ca_ski_len));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 0));
    MBEDTLS_ASN1_CHK_ADD(len, mbedtls_asn1_write_len(&p, buf, len));
    MBEDTLS_ASN1_CHK_ADD(
        len, mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
    return mbedtls_x509write_crt_set_extension(
        w, MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER,
        MBEDTLS_OID_SIZE(MBEDTLS_OID_AUTHORITY_KEY_IDENTIFIER), 0, p, len);
}

/* The extensions of a TLS server leaf: not a CA, signs handshakes, serverAuth, its one name, and
 * the key identifiers that chain building uses. */
static int leaf_extensions(mbedtls_x509write_cert *w, const struct mint_cache *c,
                           const struct host *h, bool san_critical)
{
    /* ExtKeyUsageSyntax: SEQUENCE { id-kp-serverAuth 1.3.6.1.5.5.7.3.1 } (RFC 5280 4.2.1.12). */
    static const unsigned char eku[] = {0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06,
                                        0x01, 0x05, 0x05, 0x07, 0x03, 0x01};
    unsigned char buf[300];
    unsigned char *san = NULL;
    int ret = mbedtls_x509write_crt_set_basic_constraints(w, 0, -1);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_key_usage(w, MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_extension(w, MBEDTLS_OID_EXTENDED_KEY_USAGE,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE),
                                                  0, eku, sizeof(eku));
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_subject_key_identifier(w);
    if (ret == 0)
        ret = set_aki(w, c);
    if (ret != 0)
        return ret;
    int len = san_der(h, buf, sizeof(buf), &san);
    if (len < 0)
        return len;
    return mbedtls_x509write_crt_set_extension(w, MBEDTLS_OID_SUBJECT_ALT_NAME,
                                               MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME),
                                               san_critical, san, (size_t)len);
}

/* Write a certificate for h, valid from now - 1 h to not_after, as PEM into pem. 0 or mbedTLS's
 * error. */
static int mint_cert(struct mint_cache *c, const struct host *h, time_t now, time_t not_after,
                     unsigned char *pem, size_t cap)
{
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    char from[16], to[16], subject[sizeof(h->name) + 4];
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_subject_key(&w, &c->leaf_key);
    mbedtls_x509write_crt_set_issuer_key(&w, &c->ca_key);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    /* An hour back: a client whose clock runs a little behind still accepts it. */
    x509_time(now - 3600, from);
    x509_time(not_after, to);
    /* The subject may only be empty when the subjectAltName is critical (RFC 5280 4.2.1.6). */
    bool has_cn = strlen(h->name) <= CN_MAX;
    snprintf(subject, sizeof(subject), "CN=%s", h->name);
    int ret = random_serial(&c->drbg, &serial);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_serial(&w, &serial);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_validity(&w, from, to);
    if (ret == 0 && has_cn)
        ret = mbedtls_x509write_crt_set_subject_name(&w, subject);
    if (ret == 0)
        ret = copy_issuer(&w, &c->ca.subject);
    if (ret == 0)
        ret = leaf_extensions(&w, c, h, !has_cn);
    if (ret == 0)
        ret = mbedtls_x509write_crt_pem(&w, pem, cap, mbedtls_ctr_drbg_random, &c->drbg);
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&w);
    return ret;
}

/*
 * The subjectKeyIdentifier of crt (RFC 5280 section 4.2.1.2) into out: mbedTLS
 * 2.28 checks the extension but keeps no copy, so it is read again from the raw
 * Extensions (v3_ext is their SEQUENCE). 0 with *outlen 0 when there is none,
 * or an mbedTLS error.
 */
static int find_ski(const mbedtls_x509_crt *crt, unsigned char *out, size_t cap, size_t *outlen)
{
    *outlen = 0;
    if (crt->v3_ext.p == NULL || crt->v3_ext.len == 0)
        return 0;
    unsigned char *p = crt->v3_ext.p, *end = p + crt->v3_ext.len;
    size_t len;
    int ret = mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
    if (ret != 0)
        return ret;
    end = p + len;
    while (p < end) {
        /* Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET
         * STRING } */
        ret = mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
        if (ret != 0)
            break;
        unsigned char *next = p + len;
        mbedtls_asn1_buf oid = {0};
        int critical = 0;
        ret = mbedtls_asn1_get_tag(&p, next, &oid.len, MBEDTLS_ASN1_OID);
        if (ret != 0)
            break;
        oid.p = p;
        p += oid.len;
        if (mbedtls_asn1_get_bool(&p, next, &critical) == MBEDTLS_ERR_ASN1_OUT_OF_DATA)
            return MBEDTLS_ERR_X509_INVALID_EXTENSIONS;
        ret = mbedtls_asn1_get_tag(&p, next, &len, MBEDTLS_ASN1_OCTET_STRING);
        if (ret != 0)
            break;
        if (MBEDTLS_OID_CMP(MBEDTLS_OID_SUBJECT_KEY_IDENTIFIER, &oid) == 0) {
            /* SubjectKeyIdentifier ::= KeyIdentifier ::= OCTET STRING */
            ret = mbedtls_asn1_get_tag(&p, next, &len, MBEDTLS_ASN1_OCTET_STRING);
            if (ret == 0 && (len == 0 || len > cap))
                ret = MBEDTLS_ERR_X509_INVALID_EXTENSIONS;
            if (ret == 0) {
                memcpy(out, p, len);
                *outlen = len;
            }
            return ret;
        }
        p = next;
    }
    return ret;
}

/* mbedTLS's explanation of ret as one "tls.egress_ca ...: " line in err. */
static void mbed_errline(struct buf *err, const char *what, int ret)
{
    char why[160];
    mbedtls_strerror(ret, why, sizeof(why));
    buf_appendf(err, "tls.egress_ca %s: %s\n", what, why);
}

/* ------------------------------------------------------------------------------------------ */
/* The cache */

static size_t bucket_of(const char *host)
{
    uint64_t hash = 14695981039346656037ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)host; *p; p++)
        hash = (hash ^ *p) * 1099511628211ULL;
    return (size_t)(hash & (BUCKETS - 1));
}

static void lru_unlink(struct entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void lru_push_front(struct mint_cache *c, struct entry *e)
{
    e->prev = &c->lru;
    e->next = c->lru.next;
    c->lru.next->prev = e;
    c->lru.next = e;
}

static struct entry *cache_find(struct mint_cache *c, const char *host)
{
    for (struct entry *e = c->buckets[bucket_of(host)]; e != NULL; e = e->hnext)
        if (strcmp(e->host, host) == 0)
            return e;
    return NULL;
}

/* Forget e; connections holding its server keep it alive. */
static void cache_remove(struct mint_cache *c, struct entry *e)
{
    struct entry **pp = &c->buckets[bucket_of(e->host)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(e);
    tls_server_unref(e->srv);
    free(e);
    c->n--;
}

/* Add srv for host (the cache takes its own reference), evicting the least recently used. */
static int cache_add(struct mint_cache *c, const char *host, struct tls_server *srv,
                     time_t not_after)
{
    size_t len = strlen(host);
    struct entry *e = malloc(sizeof(*e) + len + 1);
    if (e == NULL)
        return CH_ENOMEM;
    memcpy(e->host, host, len + 1);
    e->not_after = not_after;
    tls_server_ref(srv);
    e->srv = srv;
    if (c->n >= c->max && c->lru.prev != &c->lru)
        cache_remove(c, c->lru.prev); /* n never exceeds max: one makes room */
    size_t b = bucket_of(host);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    lru_push_front(c, e);
    c->n++;
    return 0;
}

/* Mint a certificate for h and build the server presenting it. 0 and *out (one reference). */
static int mint_server(struct mint_cache *c, const struct host *h, time_t now, time_t not_after,
                       struct tls_server **out, struct buf *err)
{
    unsigned char pem[LEAF_PEM_MAX];
    int ret = mint_cert(c, h, now, not_after, pem, sizeof(pem));
    if (ret != 0) {
        char what[300];
        snprintf(what, sizeof(what), "%s: cannot mint a certificate for %s", c->m->cert_path,
                 h->name);
        mbed_errline(err, what, ret);
        return ret == MBEDTLS_ERR_X509_ALLOC_FAILED || ret == MBEDTLS_ERR_ASN1_ALLOC_FAILED
                   ? CH_ENOMEM
                   : CH_ETLS;
    }
    struct buf chain = BUF_INIT;
    char label[300];
    snprintf(label, sizeof(label), "minted for %s", h->name);
    struct tls_material *mat = NULL;
    int rc = buf_append_str(&chain, (const char *)pem);
    if (rc == 0)
        rc = buf_append(&chain, c->m->ca_pem, c->m->ca_pem_len);
    if (rc == 0)
        rc = tls_material_from_pem(buf_data(&chain), chain.len, (const char *)c->m->leaf_key,
                                   c->m->leaf_key_len, label, &mat, err);
    buf_free(&chain);
    if (rc != 0)
        return rc == CH_ENOMEM ? CH_ENOMEM : CH_ETLS;
    rc = tls_server_new(mat, out); /* logs its own failures */
    tls_material_unref(mat);
    if (rc != 0)
        buf_appendf(err, "tls.egress_ca: no TLS server for %s: %s\n", h->name, util_strerror(rc));
    return rc;
}

int mint_server_for(struct mint_cache *c, const char *host, struct tls_server **out,
                    struct buf *err)
{
    struct host h;
    *out = NULL;
    if (host_parse(host, &h) != 0) {
        buf_appendf(err, "tls.egress_ca: not a host name to mint a certificate for: \"%.64s\"\n",
                    host);
        return CH_EINVAL;
    }
    time_t now = time(NULL);
    struct entry *e = cache_find(c, h.name);
    if (e != NULL && e->not_after - now >= MINT_RENEW_S) {
        c->hits++;
        lru_unlink(e);
        lru_push_front(c, e);
        tls_server_ref(e->srv);
        *out = e->srv;
        return 0;
    }
    if (e != NULL)
        cache_remove(c, e); /* close to expiry: a fresh one */
    time_t not_after = now + MINT_VALID_S;
    struct tls_server *srv = NULL;
    int rc = mint_server(c, &h, now, not_after, &srv, err);
    if (rc != 0)
        return rc;
    c->minted++;
    log_debug("tls: minted a certificate for %s", h.name);
    rc = cache_add(c, h.name, srv, not_after);
    if (rc != 0) {
        tls_server_unref(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

void mint_cache_stats(const struct mint_cache *c, uint64_t *minted, uint64_t *hits)
{
    *minted = c->minted;
    *hits = c->hits;
}

void mint_cache_free(struct mint_cache *c)
{
    if (c == NULL)
        return;
    for (struct entry *e = c->lru.next, *next; e != &c->lru; e = next) {
        next = e->next;
        tls_server_unref(e->srv);
        free(e);
    }
    mbedtls_pk_free(&c->leaf_key);
    mbedtls_pk_free(&c->ca_key);
    mbedtls_x509_crt_free(&c->ca);
    mbedtls_ctr_drbg_free(&c->drbg);
    mbedtls_entropy_free(&c->entropy);
    free(c);
}

int mint_cache_new(struct mint *m, struct mint_cache **out)
{
    static const char pers[] = "chappe mint";
    *out = NULL;
    struct mint_cache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return CH_ENOMEM;
    c->m = m;
    c->max = MINT_CACHE_MAX;
    c->lru.next = c->lru.prev = &c->lru;
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    mbedtls_x509_crt_init(&c->ca);
    mbedtls_pk_init(&c->ca_key);
    mbedtls_pk_init(&c->leaf_key);
    /* Checked by mint_new: a failure here is memory or entropy. */
    int ret = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
                                    (const unsigned char *)pers, sizeof(pers) - 1);
    if (ret == 0)
        ret = mbedtls_x509_crt_parse(&c->ca, m->ca_pem, m->ca_pem_len + 1);
    if (ret == 0)
        ret = mbedtls_pk_parse_key(&c->ca_key, (const unsigned char *)buf_data(&m->ca_key),
                                   m->ca_key.len, NULL, 0);
    if (ret == 0)
        ret = mbedtls_pk_parse_key(&c->leaf_key, m->leaf_key, m->leaf_key_len + 1, NULL, 0);
    if (ret == 0)
        ret = find_ski(&c->ca, c->ca_ski, sizeof(c->ca_ski), &c->ca_ski_len);
    if (ret != 0) {
        char why[160];
        mbedtls_strerror(ret, why, sizeof(why));
        log_error("tls: egress CA minting context: %s", why);
        mint_cache_free(c);
        return ret == MBEDTLS_ERR_X509_ALLOC_FAILED || ret == MBEDTLS_ERR_PK_ALLOC_FAILED
                   ? CH_ENOMEM
                   : CH_ETLS;
    }
    *out = c;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The egress CA */

/* Read a certificate file (not secret) with a NUL after it. 0 or CH_ENOENT / CH_EIO / CH_EINVAL /
 * CH_ENOMEM. */
static int read_cert_file(const char *path, struct buf *out, struct buf *err)
{
    /* O_NONBLOCK: a FIFO named by mistake must not hang the start. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        buf_appendf(err, "tls.egress_ca %s: %s\n", path, strerror(e));
        return e == ENOENT ? CH_ENOENT : CH_EIO;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > FILE_MAX) {
        buf_appendf(err, "tls.egress_ca %s: not a regular file of at most %d bytes\n", path,
                    FILE_MAX);
        rc = CH_EINVAL;
    }
    while (rc == 0) {
        if (buf_reserve(out, 4096) != 0) {
            rc = CH_ENOMEM;
            break;
        }
        ssize_t r = read(fd, buf_tail(out), buf_avail(out));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            buf_appendf(err, "tls.egress_ca %s: cannot read: %s\n", path, strerror(errno));
            rc = CH_EIO;
        } else if (r == 0) {
            break;
        } else if (out->len + (size_t)r > FILE_MAX) {
            buf_appendf(err, "tls.egress_ca %s: larger than %d bytes\n", path, FILE_MAX);
            rc = CH_EINVAL;
        } else {
            buf_commit(out, (size_t)r);
        }
    }
    close(fd);
    if (rc == 0 && out->len == 0) {
        buf_appendf(err, "tls.egress_ca %s: empty file\n", path);
        rc = CH_EINVAL;
    }
    if (rc == 0)
        rc = buf_append(out, "", 1);
    return rc;
}

/* The CA file's certificates again as PEM, without whatever text surrounds them in the file. */
static int encode_chain(struct mint *m, const mbedtls_x509_crt *crt)
{
    struct buf pem = BUF_INIT;
    int rc = 0;
    for (; rc == 0 && crt != NULL && crt->raw.p != NULL; crt = crt->next) {
        size_t need = crt->raw.len * 4 / 3 + crt->raw.len / 48 + 128, olen = 0;
        rc = buf_reserve(&pem, need);
        if (rc != 0)
            break;
        if (mbedtls_pem_write_buffer("-----BEGIN CERTIFICATE-----\n", "-----END CERTIFICATE-----\n",
                                     crt->raw.p, crt->raw.len, (unsigned char *)buf_tail(&pem),
                                     buf_avail(&pem), &olen) != 0)
            rc = CH_ENOMEM;
        else
            buf_commit(&pem, strlen(buf_tail(&pem)));
    }
    if (rc == 0)
        rc = buf_append(&pem, "", 1);
    if (rc != 0) {
        buf_free(&pem);
        return rc;
    }
    m->ca_pem_len = pem.len - 1;
    m->ca_pem = (unsigned char *)pem.base; /* off is 0: nothing was consumed */
    return 0;
}

/* The signer: a CA allowed to sign certificates, whose key is the one configured. */
static int check_ca(const struct cfg_cert *cc, const mbedtls_x509_crt *ca, mbedtls_pk_context *key,
                    struct buf *err)
{
    const char *path = cc->cert;
    if (!ca->ca_istrue) {
        buf_appendf(err, "tls.egress_ca %s: not a CA certificate (basicConstraints CA:TRUE)\n",
                    path);
        return CH_EINVAL;
    }
    if (mbedtls_x509_crt_check_key_usage(ca, MBEDTLS_X509_KU_KEY_CERT_SIGN) != 0) {
        buf_appendf(err, "tls.egress_ca %s: its key usage does not allow keyCertSign\n", path);
        return CH_EINVAL;
    }
    mbedtls_pk_type_t type = mbedtls_pk_get_type(key);
    if (type != MBEDTLS_PK_RSA && type != MBEDTLS_PK_ECKEY && type != MBEDTLS_PK_ECDSA) {
        buf_appendf(err, "tls.egress_ca %s: %s keys are not supported (EC or RSA only)\n", path,
                    mbedtls_pk_get_name(key));
        return CH_EINVAL;
    }
    if (mbedtls_pk_check_pair(&ca->pk, key) != 0) {
        buf_appendf(err, "tls.egress_ca %s: the private key %s does not match the certificate\n",
                    path, cc->key);
        return CH_EINVAL;
    }
    const mbedtls_x509_time *to = &ca->valid_to, *from = &ca->valid_from;
    if (mbedtls_x509_time_is_past(to))
        log_warn("tls.egress_ca %s: expired on %04d-%02d-%02d: minted certificates will not "
                 "verify",
                 path, to->year, to->mon, to->day);
    if (mbedtls_x509_time_is_future(from))
        log_warn("tls.egress_ca %s: not valid before %04d-%02d-%02d", path, from->year, from->mon,
                 from->day);
    return 0;
}

/* Read both files and check the pair; keep the CA certificates as PEM and the key's bytes. */
static int load_ca(struct mint *m, const struct cfg_cert *cc, struct buf *err)
{
    struct buf crt_file = BUF_INIT, why = BUF_INIT;
    mbedtls_x509_crt ca;
    mbedtls_pk_context key;
    mbedtls_x509_crt_init(&ca);
    mbedtls_pk_init(&key);
    int rc = read_cert_file(cc->cert, &crt_file, err);
    int rc_key = util_read_private_file(cc->key, FILE_MAX, "a key file", &m->ca_key, &why);
    if (rc_key == 0)
        rc_key = buf_append(&m->ca_key, "", 1);
    else
        buf_appendf(err, "tls.egress_ca %.*s\n", (int)why.len, buf_data(&why));
    if (rc == 0)
        rc = rc_key;
    if (rc != 0)
        goto out;
    rc = CH_EINVAL;
    int ret = mbedtls_x509_crt_parse(&ca, (const unsigned char *)buf_data(&crt_file), crt_file.len);
    if (ret < 0) {
        mbed_errline(err, cc->cert, ret);
        goto out;
    }
    if (ret > 0) {
        buf_appendf(err, "tls.egress_ca %s: %d certificate(s) could not be parsed\n", cc->cert,
                    ret);
        goto out;
    }
    ret = mbedtls_pk_parse_key(&key, (const unsigned char *)buf_data(&m->ca_key), m->ca_key.len,
                               NULL, 0);
    if (ret == MBEDTLS_ERR_PK_PASSWORD_REQUIRED) {
        buf_appendf(err,
                    "tls.egress_ca %s: the private key is encrypted (no password can be "
                    "given)\n",
                    cc->key);
        goto out;
    }
    if (ret != 0) {
        mbed_errline(err, cc->key, ret);
        goto out;
    }
    rc = check_ca(cc, &ca, &key, err);
    if (rc == 0)
        rc = encode_chain(m, &ca);
out:
    mbedtls_pk_free(&key);
    mbedtls_x509_crt_free(&ca);
    buf_free(&crt_file);
    buf_free(&why);
    return rc;
}

/* The key every minted certificate carries: EC P-256, made here, kept as PEM. */
static int make_leaf_key(struct mint *m, struct buf *err)
{
    static const char pers[] = "chappe mint leaf key";
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_pk_context key;
    unsigned char pem[512];
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_pk_init(&key);
    int ret = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
                                    (const unsigned char *)pers, sizeof(pers) - 1);
    if (ret == 0)
        ret = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (ret == 0)
        ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                                  mbedtls_ctr_drbg_random, &drbg);
    if (ret == 0)
        ret = mbedtls_pk_write_key_pem(&key, pem, sizeof(pem));
    int rc = 0;
    if (ret != 0) {
        mbed_errline(err, "leaf key", ret);
        rc = CH_ETLS;
    } else {
        m->leaf_key_len = strlen((const char *)pem);
        m->leaf_key = malloc(m->leaf_key_len + 1);
        if (m->leaf_key == NULL)
            rc = CH_ENOMEM;
        else
            memcpy(m->leaf_key, pem, m->leaf_key_len + 1);
    }
    mbedtls_platform_zeroize(pem, sizeof(pem));
    mbedtls_pk_free(&key);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    return rc;
}

/*
 * Mint one certificate and verify it as a client would: it chains to the CA
 * for its name, and its issuer is the CA's subject byte for byte. Catches a
 * CA mbedTLS cannot sign for properly (a multi-valued RDN, an odd key) at
 * start-up instead of at the first CONNECT. The CA's own validity dates are
 * left to check_ca's warnings.
 */
static int probe(struct mint *m, struct buf *err)
{
    struct mint_cache *c = NULL;
    unsigned char pem[LEAF_PEM_MAX];
    struct host h;
    mbedtls_x509_crt leaf;
    mbedtls_x509_crt_init(&leaf);
    int rc = mint_cache_new(m, &c);
    if (rc != 0) {
        buf_appendf(err, "tls.egress_ca %s: cannot use the CA: %s\n", m->cert_path,
                    util_strerror(rc));
        return rc;
    }
    rc = CH_ETLS;
    time_t now = time(NULL);
    host_parse(PROBE_HOST, &h);
    int ret = mint_cert(c, &h, now, now + MINT_VALID_S, pem, sizeof(pem));
    if (ret == 0)
        ret = mbedtls_x509_crt_parse(&leaf, pem, strlen((const char *)pem) + 1);
    uint32_t flags = 0;
    bool same_name = false;
    if (ret == 0) {
        same_name = leaf.issuer_raw.len == c->ca.subject_raw.len &&
                    memcmp(leaf.issuer_raw.p, c->ca.subject_raw.p, leaf.issuer_raw.len) == 0;
        ret = mbedtls_x509_crt_verify(&leaf, &c->ca, NULL, PROBE_HOST, &flags, NULL, NULL);
    }
    flags &= ~(uint32_t)(MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE);
    if (ret != 0 && ret != MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        char what[300];
        snprintf(what, sizeof(what), "%s: cannot mint a certificate", m->cert_path);
        mbed_errline(err, what, ret);
    } else if (!same_name) {
        buf_appendf(err,
                    "tls.egress_ca %s: its subject name cannot be copied exactly into "
                    "minted certificates (a multi-valued RDN?)\n",
                    m->cert_path);
    } else if (flags != 0) {
        buf_appendf(err, "tls.egress_ca %s: a minted certificate does not verify (flags 0x%x)\n",
                    m->cert_path, (unsigned)flags);
    } else {
        rc = 0;
    }
    mbedtls_x509_crt_free(&leaf);
    mint_cache_free(c);
    return rc;
}

void mint_free(struct mint *m)
{
    if (m == NULL)
        return;
    buf_free_secret(&m->ca_key);
    if (m->leaf_key != NULL)
        mbedtls_platform_zeroize(m->leaf_key, m->leaf_key_len);
    free(m->leaf_key);
    free(m->ca_pem);
    free(m->cert_path);
    free(m);
}

int mint_new(const struct config *cfg, struct mint **out, struct buf *err)
{
    *out = NULL;
    const struct cfg_cert *cc = &cfg->tls.egress_ca;
    if (!cfg->tls.has_egress_ca || cc->cert == NULL || cc->key == NULL) {
        buf_appendf(err, "tls.egress_ca -: both cert and key files are required\n");
        return CH_EINVAL;
    }
    struct mint *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return CH_ENOMEM;
    m->cert_path = strdup(cc->cert);
    int rc = m->cert_path ? load_ca(m, cc, err) : CH_ENOMEM;
    if (rc == 0)
        rc = make_leaf_key(m, err);
    if (rc == 0)
        rc = probe(m, err);
    if (rc != 0) {
        mint_free(m);
        return rc;
    }
    log_debug("tls.egress_ca %s: ready to mint", m->cert_path);
    *out = m;
    return 0;
}
