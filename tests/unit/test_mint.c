/* test_mint.c -- unit tests for mint.c: minted certificates verify for their name only (mbedTLS
 * and openssl), in-memory handshakes against them, the per-host cache, mint_new's checks. */
/* SPDX-License-Identifier: ISC */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* The cache's entries and capacity, and mint_cert, are static: test them from the inside. */
#include "../../src/mint.c"

#include "testcerts.h"

/* ------------------------------------------------------------------------------------------ */
/* Fixtures: certs/gen.sh's certificates, and CAs made here with openssl */

/* An openssl configuration for the CAs below (no dependence on the system openssl.cnf). */
static const char ca_cnf[] = "[ req ]\n"
                             "distinguished_name = dn\n"
                             "prompt = no\n"
                             "[ dn ]\n"
                             "[ ca_ext ]\n"
                             "basicConstraints = critical, CA:TRUE\n"
                             "keyUsage = critical, keyCertSign, cRLSign\n"
                             "subjectKeyIdentifier = hash\n"
                             "[ nosign_ext ]\n"
                             "basicConstraints = critical, CA:TRUE\n"
                             "keyUsage = critical, digitalSignature\n";

static int group_setup(void **state)
{
    (void)state;
    if (tls_global_init() != 0 || testcerts_make("mint") != 0)
        return -1;
    FILE *f = fopen(path("ca.cnf"), "w");
    if (f == NULL)
        return -1;
    fputs(ca_cnf, f);
    fclose(f);
    /* An RSA CA whose subject repeats an attribute, holds a comma and a PrintableString. */
    if (run("openssl req -new -x509 -config '%s' -extensions ca_ext -newkey rsa:2048 -nodes "
            "-keyout '%s' -out '%s' -days 30 -subj '/C=DE/O=Foo, Inc./OU=a/OU=b/CN=test RSA CA' "
            "2>/dev/null && chmod 600 '%s'",
            path("ca.cnf"), path("rsa-ca.key"), path("rsa-ca.crt"), path("rsa-ca.key")) != 0)
        return -1;
    /* A multi-valued RDN (O + CN in one SET), which x509write cannot reproduce. */
    if (run("openssl req -new -x509 -config '%s' -extensions ca_ext -newkey ec "
            "-pkeyopt ec_paramgen_curve:P-256 -nodes -keyout '%s' -out '%s' -days 30 "
            "-multivalue-rdn -subj '/O=Foo+CN=multi CA' 2>/dev/null && chmod 600 '%s'",
            path("ca.cnf"), path("multi-ca.key"), path("multi-ca.crt"), path("multi-ca.key")) != 0)
        return -1;
    /* A CA whose key usage does not include keyCertSign. */
    if (run("openssl req -new -x509 -config '%s' -extensions nosign_ext -newkey ec "
            "-pkeyopt ec_paramgen_curve:P-256 -nodes -keyout '%s' -out '%s' -days 30 "
            "-subj '/CN=nosign CA' 2>/dev/null && chmod 600 '%s'",
            path("ca.cnf"), path("nosign-ca.key"), path("nosign-ca.crt"),
            path("nosign-ca.key")) != 0)
        return -1;
    /* The egress CA key, readable by others. */
    if (run("cp '%s' '%s' && chmod 644 '%s'", path("egress-ca.key"), path("open.key"),
            path("open.key")) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    testcerts_remove();
    tls_global_free();
    return 0;
}

/* mint_new for (NAME.crt, NAME.key) of the fixture directory, or for explicit files. */
static int try_mint(const char *crt, const char *key, struct mint **out, struct buf *err)
{
    struct cfg_cert cc = {(char *)crt, (char *)key};
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.tls.has_egress_ca = true;
    cfg.tls.egress_ca = cc;
    return mint_new(&cfg, out, err);
}

static struct mint *mint_of(const char *name)
{
    char crt[64], key[64];
    snprintf(crt, sizeof(crt), "%s.crt", name);
    snprintf(key, sizeof(key), "%s.key", name);
    struct buf err = BUF_INIT;
    struct mint *m = NULL;
    int rc = try_mint(path(crt), path(key), &m, &err);
    if (rc != 0)
        fail_msg("mint_new %s: %d: %.*s", name, rc, (int)err.len, buf_data(&err));
    assert_int_equal(err.len, 0);
    buf_free(&err);
    return m;
}

static struct mint_cache *cache_of(struct mint *m)
{
    struct mint_cache *c = NULL;
    assert_int_equal(mint_cache_new(m, &c), 0);
    assert_non_null(c);
    return c;
}

/* Mint a certificate for host directly and parse it into crt. */
static void mint_parsed(struct mint_cache *c, const char *host, mbedtls_x509_crt *crt)
{
    struct host h;
    unsigned char pem[LEAF_PEM_MAX];
    time_t now = time(NULL);
    assert_int_equal(host_parse(host, &h), 0);
    assert_int_equal(mint_cert(c, &h, now, now + MINT_VALID_S, pem, sizeof(pem)), 0);
    mbedtls_x509_crt_init(crt);
    assert_int_equal(mbedtls_x509_crt_parse(crt, pem, strlen((const char *)pem) + 1), 0);
}

/* Write the certificate of host, minted by c, as PEM into FILE of the fixture directory. */
static void mint_to_file(struct mint_cache *c, const char *host, const char *file)
{
    struct host h;
    unsigned char pem[LEAF_PEM_MAX];
    time_t now = time(NULL);
    assert_int_equal(host_parse(host, &h), 0);
    assert_int_equal(mint_cert(c, &h, now, now + MINT_VALID_S, pem, sizeof(pem)), 0);
    FILE *f = fopen(path(file), "w");
    assert_non_null(f);
    assert_int_equal(fputs((const char *)pem, f) >= 0, 1);
    fclose(f);
}

/* The CA certificate file NAME.crt, parsed. */
static void ca_parsed(const char *name, mbedtls_x509_crt *crt)
{
    char file[64];
    snprintf(file, sizeof(file), "%s.crt", name);
    mbedtls_x509_crt_init(crt);
    assert_int_equal(mbedtls_x509_crt_parse_file(crt, path(file)), 0);
}

/* mbedtls_x509_crt_verify of leaf against the CA for name: the flags (0: it verifies). */
static uint32_t verify_flags(mbedtls_x509_crt *leaf, mbedtls_x509_crt *ca, const char *name)
{
    uint32_t flags = 0;
    int ret = mbedtls_x509_crt_verify(leaf, ca, NULL, name, &flags, NULL, NULL);
    assert_int_equal(ret, flags == 0 ? 0 : MBEDTLS_ERR_X509_CERT_VERIFY_FAILED);
    return flags;
}

static time_t x509_epoch(const mbedtls_x509_time *t)
{
    struct tm tm = {0};
    tm.tm_year = t->year - 1900;
    tm.tm_mon = t->mon - 1;
    tm.tm_mday = t->day;
    tm.tm_hour = t->hour;
    tm.tm_min = t->min;
    tm.tm_sec = t->sec;
    return timegm(&tm);
}

/* ------------------------------------------------------------------------------------------ */
/* Two tls_conns over memory (as in test_tls_client.c) */

static void move(struct tls_conn *from, struct tls_conn *to)
{
    if (from->out.len) {
        assert_int_equal(tls_conn_feed(to, buf_data(&from->out), from->out.len), 0);
        buf_reset(&from->out);
    }
}

struct hs {
    int cli, srv; /* 0, CH_EAGAIN, CH_ETLS */
};

static struct hs pump(struct tls_conn *cli, struct tls_conn *srv)
{
    struct hs r = {CH_EAGAIN, CH_EAGAIN};
    for (int round = 0; round < 32; round++) {
        if (r.cli == CH_EAGAIN)
            r.cli = tls_conn_handshake(cli);
        size_t moved = cli->out.len;
        move(cli, srv);
        if (r.srv == CH_EAGAIN)
            r.srv = tls_conn_handshake(srv);
        moved += srv->out.len;
        move(srv, cli);
        if (moved == 0 && !(r.cli == CH_EAGAIN && cli->in.len > 0))
            break;
    }
    return r;
}

/* A client trusting CA.crt of the fixture directory (plus the system bundle), verification on. */
static struct tls_client *client_trusting(const char *ca)
{
    char file[64];
    snprintf(file, sizeof(file), "%s.crt", ca);
    char *cas[1] = {(char *)path(file)};
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.federation_verify_certificates = true;
    cfg.federation_custom_ca_list = cas;
    cfg.nfederation_custom_ca_list = 1;
    struct buf err = BUF_INIT;
    struct tls_client *cl = NULL;
    int rc = tls_client_new(&cfg, &cl, &err);
    if (rc != 0)
        fail_msg("tls_client_new: %.*s", (int)err.len, buf_data(&err));
    buf_free(&err);
    return cl;
}

struct session {
    struct tls_conn srv, cli;
    struct hs r;
};

/* Handshake a client trusting CA, expecting (name, family, ip_text), with srv. */
static void session_run(struct session *x, struct tls_server *srv, const char *ca, const char *name,
                        int family, const char *ip_text)
{
    unsigned char ip[16] = {0};
    if (family != 0)
        assert_int_equal(inet_pton(family == 4 ? AF_INET : AF_INET6, ip_text, ip), 1);
    struct tls_client *cl = client_trusting(ca);
    assert_int_equal(tls_conn_init(&x->srv, srv), 0);
    assert_int_equal(tls_conn_init_client(&x->cli, cl, name, family, family ? ip : NULL), 0);
    tls_client_unref(cl); /* the connection holds its own reference */
    x->r = pump(&x->cli, &x->srv);
}

static void session_free(struct session *x)
{
    tls_conn_free(&x->cli);
    tls_conn_free(&x->srv);
}

static void assert_ok(const struct session *x)
{
    if (x->r.cli != 0)
        fail_msg("client handshake: %d: %s", x->r.cli, tls_conn_strerror(&x->cli));
    assert_int_equal(x->r.srv, 0);
    assert_true(x->cli.handshake_done);
}

static void assert_refused(const struct session *x, const char *why)
{
    assert_int_equal(x->r.cli, CH_ETLS);
    assert_string_equal(tls_conn_strerror(&x->cli), why);
    assert_int_equal(x->r.srv, CH_ETLS);
}

/* A server for host from c, asserting success. */
static struct tls_server *server_for(struct mint_cache *c, const char *host)
{
    struct buf err = BUF_INIT;
    struct tls_server *s = NULL;
    int rc = mint_server_for(c, host, &s, &err);
    if (rc != 0)
        fail_msg("mint_server_for %s: %d: %.*s", host, rc, (int)err.len, buf_data(&err));
    assert_non_null(s);
    assert_int_equal(err.len, 0);
    buf_free(&err);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* mint_new */

/* mint_new on (crt, key) fails with rc and exactly the text want. */
static void assert_new_fails(const char *crt, const char *key, int rc, const char *want)
{
    struct buf err = BUF_INIT;
    struct mint *m = NULL;
    assert_int_equal(try_mint(crt, key, &m, &err), rc);
    assert_null(m);
    assert_int_equal(buf_append(&err, "", 1), 0);
    assert_string_equal(buf_data(&err), want);
    buf_free(&err);
}

static void test_new_errors(void **state)
{
    (void)state;
    char want[1024];
    struct buf err = BUF_INIT;
    struct mint *m = NULL;
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(mint_new(&cfg, &m, &err), CH_EINVAL);
    assert_null(m);
    assert_int_equal(buf_append(&err, "", 1), 0);
    assert_string_equal(buf_data(&err), "tls.egress_ca -: both cert and key files are required\n");
    buf_free(&err);

    snprintf(want, sizeof(want), "tls.egress_ca %s: No such file or directory\n", path("nope.crt"));
    assert_new_fails(path("nope.crt"), path("egress-ca.key"), CH_ENOENT, want);

    snprintf(want, sizeof(want), "tls.egress_ca %s: No such file or directory\n", path("nope.key"));
    assert_new_fails(path("egress-ca.crt"), path("nope.key"), CH_ENOENT, want);

    snprintf(want, sizeof(want),
             "tls.egress_ca %s: readable by group or others (mode 0644): run chmod 600 %s\n",
             path("open.key"), path("open.key"));
    assert_new_fails(path("egress-ca.crt"), path("open.key"), CH_EPERM, want);

    /* Both files wrong: one line each. */
    snprintf(want, sizeof(want),
             "tls.egress_ca %s: No such file or directory\n"
             "tls.egress_ca %s: readable by group or others (mode 0644): run chmod 600 %s\n",
             path("nope.crt"), path("open.key"), path("open.key"));
    assert_new_fails(path("nope.crt"), path("open.key"), CH_ENOENT, want);

    /* A leaf is no CA. */
    snprintf(want, sizeof(want),
             "tls.egress_ca %s: not a CA certificate (basicConstraints CA:TRUE)\n",
             path("server.crt"));
    assert_new_fails(path("server.crt"), path("server.key"), CH_EINVAL, want);

    /* The dev CA's key with the egress CA's certificate. */
    snprintf(want, sizeof(want),
             "tls.egress_ca %s: the private key %s does not match the certificate\n",
             path("egress-ca.crt"), path("ca.key"));
    assert_new_fails(path("egress-ca.crt"), path("ca.key"), CH_EINVAL, want);

    snprintf(want, sizeof(want), "tls.egress_ca %s: its key usage does not allow keyCertSign\n",
             path("nosign-ca.crt"));
    assert_new_fails(path("nosign-ca.crt"), path("nosign-ca.key"), CH_EINVAL, want);

    /* The probe: x509write cannot copy a multi-valued RDN, so chains would not build. */
    snprintf(want, sizeof(want),
             "tls.egress_ca %s: its subject name cannot be copied exactly into minted "
             "certificates (a multi-valued RDN?)\n",
             path("multi-ca.crt"));
    assert_new_fails(path("multi-ca.crt"), path("multi-ca.key"), CH_ETLS, want);

    /* Not a certificate at all (a key file where the certificate should be). */
    assert_int_equal(try_mint(path("ca.key"), path("egress-ca.key"), &m, &err), CH_EINVAL);
    assert_null(m);
    snprintf(want, sizeof(want), "tls.egress_ca %s: X509 - ", path("ca.key"));
    assert_true(err.len > strlen(want));
    assert_memory_equal(buf_data(&err), want, strlen(want));
    assert_int_equal(buf_data(&err)[err.len - 1], '\n');
    buf_free(&err);
}

/* ------------------------------------------------------------------------------------------ */
/* What is minted */

static void test_minted_dns_fields(void **state)
{
    (void)state;
    struct mint *m = mint_of("egress-ca");
    struct mint_cache *c = cache_of(m);
    mbedtls_x509_crt leaf, ca, other_ca;
    time_t now = time(NULL);
    mint_parsed(c, "Relay.Example.ORG", &leaf);
    ca_parsed("egress-ca", &ca);
    ca_parsed("ca", &other_ca);

    char dn[256];
    assert_true(mbedtls_x509_dn_gets(dn, sizeof(dn), &leaf.subject) > 0);
    assert_string_equal(dn, "CN=relay.example.org");
    assert_true(mbedtls_x509_dn_gets(dn, sizeof(dn), &leaf.issuer) > 0);
    assert_string_equal(dn, "CN=chappe dev egress CA");
    assert_int_equal(leaf.issuer_raw.len, ca.subject_raw.len);
    assert_memory_equal(leaf.issuer_raw.p, ca.subject_raw.p, ca.subject_raw.len);
    assert_int_equal(leaf.version, 3);
    assert_int_equal(leaf.sig_md, MBEDTLS_MD_SHA256);
    assert_int_equal(leaf.ca_istrue, 0);
    assert_int_equal(leaf.key_usage, MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
    assert_int_equal(mbedtls_x509_crt_check_extended_key_usage(
                         &leaf, MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)),
                     0);
    assert_null(leaf.ext_key_usage.next);
    assert_int_equal(mbedtls_pk_get_type(&leaf.pk), MBEDTLS_PK_ECKEY);
    assert_int_equal(mbedtls_pk_get_bitlen(&leaf.pk), 256);

    /* Exactly one subjectAltName: dNSName relay.example.org. */
    assert_int_equal(leaf.subject_alt_names.buf.tag,
                     MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME);
    assert_int_equal(leaf.subject_alt_names.buf.len, strlen("relay.example.org"));
    assert_memory_equal(leaf.subject_alt_names.buf.p, "relay.example.org", 17);
    assert_null(leaf.subject_alt_names.next);

    /* 16 random bytes, positive. */
    assert_int_equal(leaf.serial.len, 16);
    assert_int_equal(leaf.serial.p[0] & 0x80, 0);

    /* now - 1 h .. now + 7 d (a second may have passed). */
    time_t from = x509_epoch(&leaf.valid_from), to = x509_epoch(&leaf.valid_to);
    assert_true(from >= now - 3600 && from <= now - 3600 + 2);
    assert_int_equal(to - from, MINT_VALID_S + 3600);

    /* Verifies for its name in any case, not for another, not against another CA. */
    assert_int_equal(verify_flags(&leaf, &ca, "relay.example.org"), 0);
    assert_int_equal(verify_flags(&leaf, &ca, "RELAY.example.org"), 0);
    assert_int_equal(verify_flags(&leaf, &ca, "other.example.org"),
                     MBEDTLS_X509_BADCERT_CN_MISMATCH);
    assert_int_equal(verify_flags(&leaf, &ca, "example.org"), MBEDTLS_X509_BADCERT_CN_MISMATCH);
    assert_int_equal(verify_flags(&leaf, &other_ca, "relay.example.org"),
                     MBEDTLS_X509_BADCERT_NOT_TRUSTED);

    /* Another certificate: a fresh serial, the same shared leaf key. */
    mbedtls_x509_crt leaf2;
    mint_parsed(c, "relay.example.org", &leaf2);
    assert_int_equal(leaf2.serial.len, 16);
    assert_memory_not_equal(leaf2.serial.p, leaf.serial.p, 16);
    assert_int_equal(leaf2.pk_raw.len, leaf.pk_raw.len);
    assert_memory_equal(leaf2.pk_raw.p, leaf.pk_raw.p, leaf.pk_raw.len);

    mbedtls_x509_crt_free(&leaf2);
    mbedtls_x509_crt_free(&other_ca);
    mbedtls_x509_crt_free(&ca);
    mbedtls_x509_crt_free(&leaf);
    mint_cache_free(c);
    mint_free(m);
}

/* The only subjectAltName of crt is iPAddress ip (len bytes). */
static void assert_ip_san(const mbedtls_x509_crt *crt, const unsigned char *ip, size_t len)
{
    assert_int_equal(crt->subject_alt_names.buf.tag,
                     MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_IP_ADDRESS);
    assert_int_equal(crt->subject_alt_names.buf.len, len);
    assert_memory_equal(crt->subject_alt_names.buf.p, ip, len);
    assert_null(crt->subject_alt_names.next);
}

static void test_minted_ip_fields(void **state)
{
    (void)state;
    static const unsigned char v4[4] = {127, 0, 0, 1};
    static const unsigned char v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
    struct mint *m = mint_of("egress-ca");
    struct mint_cache *c = cache_of(m);
    mbedtls_x509_crt leaf, ca;
    char dn[256];
    ca_parsed("egress-ca", &ca);

    mint_parsed(c, "127.0.0.1", &leaf);
    assert_ip_san(&leaf, v4, sizeof(v4));
    assert_true(mbedtls_x509_dn_gets(dn, sizeof(dn), &leaf.subject) > 0);
    assert_string_equal(dn, "CN=127.0.0.1");
    /* mbedTLS checks no IP name itself (tls.c does): the chain alone verifies. */
    assert_int_equal(verify_flags(&leaf, &ca, NULL), 0);
    mbedtls_x509_crt_free(&leaf);

    /* IPv6 in any spelling: the canonical text, the 16 bytes. */
    mint_parsed(c, "2001:DB8:0:0::1", &leaf);
    assert_ip_san(&leaf, v6, sizeof(v6));
    assert_true(mbedtls_x509_dn_gets(dn, sizeof(dn), &leaf.subject) > 0);
    assert_string_equal(dn, "CN=2001:db8::1");
    assert_int_equal(verify_flags(&leaf, &ca, NULL), 0);
    mbedtls_x509_crt_free(&leaf);

    mbedtls_x509_crt_free(&ca);
    mint_cache_free(c);
    mint_free(m);
}

static void test_long_name_without_cn(void **state)
{
    (void)state;
    /* 63 + 1 + 63 + 1 + 63 + 1 + 7 = 199 bytes: over the 64 of a CN. */
    char name[254];
    memset(name, 'a', 199);
    name[63] = name[127] = name[191] = '.';
    memcpy(name + 192, "example", 7);
    name[199] = '\0';
    struct mint *m = mint_of("egress-ca");
    struct mint_cache *c = cache_of(m);
    mbedtls_x509_crt leaf, ca;
    ca_parsed("egress-ca", &ca);
    mint_parsed(c, name, &leaf);
    assert_int_equal(leaf.subject_raw.len, 2); /* an empty SEQUENCE */
    assert_int_equal(leaf.subject_alt_names.buf.len, 199);
    assert_int_equal(verify_flags(&leaf, &ca, name), 0);
    /* With an empty subject the subjectAltName must be critical (RFC 5280 section 4.2.1.6). */
    FILE *f = fopen(path("long.pem"), "w");
    assert_non_null(f);
    assert_int_equal(fwrite(leaf.raw.p, 1, leaf.raw.len, f), leaf.raw.len);
    fclose(f);
    assert_int_equal(run("openssl x509 -inform DER -in '%s' -noout -ext subjectAltName | "
                         "grep -q 'X509v3 Subject Alternative Name: critical'",
                         path("long.pem")),
                     0);
    mbedtls_x509_crt_free(&ca);
    mbedtls_x509_crt_free(&leaf);
    mint_cache_free(c);
    mint_free(m);
}

/* An independent verifier: openssl verify, strict X.509 (RFC 5280 profile checks, AKI/SKI). */
static int openssl_verify(const char *ca, const char *leaf, const char *check)
{
    return run("openssl verify -x509_strict -purpose sslserver -CAfile '%s' %s '%s' "
               ">/dev/null 2>&1",
               path(ca), check, path(leaf));
}

static void test_openssl_verifies(void **state)
{
    (void)state;
    struct mint *m = mint_of("egress-ca");
    struct mint_cache *c = cache_of(m);
    mint_to_file(c, "relay.example.org", "dns.pem");
    mint_to_file(c, "127.0.0.1", "v4.pem");
    mint_to_file(c, "::1", "v6.pem");
    assert_int_equal(
        openssl_verify("egress-ca.crt", "dns.pem", "-verify_hostname relay.example.org"), 0);
    assert_int_not_equal(
        openssl_verify("egress-ca.crt", "dns.pem", "-verify_hostname other.example.org"), 0);
    assert_int_not_equal(openssl_verify("ca.crt", "dns.pem", "-verify_hostname relay.example.org"),
                         0);
    assert_int_equal(openssl_verify("egress-ca.crt", "v4.pem", "-verify_ip 127.0.0.1"), 0);
    assert_int_not_equal(openssl_verify("egress-ca.crt", "v4.pem", "-verify_ip 127.0.0.2"), 0);
    assert_int_equal(openssl_verify("egress-ca.crt", "v6.pem", "-verify_ip ::1"), 0);
    assert_int_not_equal(openssl_verify("egress-ca.crt", "v6.pem", "-verify_ip 127.0.0.1"), 0);
    mint_cache_free(c);
    mint_free(m);
}

/* A CA made here: RSA, a subject with a repeated OU, a comma and a PrintableString country. */
static void test_generated_rsa_ca(void **state)
{
    (void)state;
    struct mint *m = mint_of("rsa-ca");
    struct mint_cache *c = cache_of(m);
    mbedtls_x509_crt leaf, ca;
    ca_parsed("rsa-ca", &ca);
    mint_parsed(c, "hs.example.net", &leaf);
    assert_int_equal(leaf.issuer_raw.len, ca.subject_raw.len);
    assert_memory_equal(leaf.issuer_raw.p, ca.subject_raw.p, ca.subject_raw.len);
    assert_int_equal(leaf.sig_pk, MBEDTLS_PK_RSA);
    assert_int_equal(leaf.sig_md, MBEDTLS_MD_SHA256);
    assert_int_equal(verify_flags(&leaf, &ca, "hs.example.net"), 0);
    assert_int_equal(verify_flags(&leaf, &ca, "hs.example.com"), MBEDTLS_X509_BADCERT_CN_MISMATCH);
    mbedtls_x509_crt_free(&ca);
    mbedtls_x509_crt_free(&leaf);

    mint_to_file(c, "hs.example.net", "rsa-leaf.pem");
    assert_int_equal(
        openssl_verify("rsa-ca.crt", "rsa-leaf.pem", "-verify_hostname hs.example.net"), 0);

    /* And a handshake through the cache. */
    struct tls_server *s = server_for(c, "hs.example.net");
    struct session x;
    session_run(&x, s, "rsa-ca", "hs.example.net", 0, NULL);
    assert_ok(&x);
    session_free(&x);
    tls_server_unref(s);
    mint_cache_free(c);
    mint_free(m);
}

/* ------------------------------------------------------------------------------------------ */
/* Handshakes */

static void test_handshake_dns(void **state)
{
    (void)state;
    struct mint *m = mint_of("egress-ca");
    struct mint_cache *c = cache_of(m);
    struct tls_server *s = server_for(c, "relay.example.org");
    struct session x;

    session_run(&x, s, "egress-ca", "relay.example.org", 0, NULL);
    assert_ok(&x);
    assert_string_equal(tls_conn_sni(&x.srv), "relay.example.org");
    /* The chain sent: the minted leaf, then the egress CA certificate. */
    const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&x.cli.ssl);
    mbedtls_x509_crt ca;
    ca_parsed("egress-ca", &ca);
    assert_non_null(peer);
    assert_non_null(peer->next);
    assert_int_equal(peer->next->raw.len, ca.raw.len);
    assert_memory_equal(peer->next->raw.p, ca.raw.p, ca.raw.len);
    assert_null(peer->next->next);
    mbedtls_x509_crt_free(&ca);
    session_free(&x);

    /* Another name: the same certificate is refused. */
    session_run(&x, s, "egress-ca", "other.example.org", 0, NULL);
    assert_refused(&x, "certificate is not valid for other.example.org");
    session_free(&x);

    /* A client that trusts only the dev CA refuses it too. */
    session_run(&x, s, "ca", "relay.example.org", 0, NULL);
    assert_refused(&x, "certificate not issued by a trusted CA");
    session_free(&x);

    tls_server_unref(s);
    mint_cache_free(c);
    mint_free(m);
}

static void test_handshake_ip(void **state)
{
    (void)state;
    struct mint *m = mint_of("egress-ca");
    struct mint_cache *c = cache_of(m);
    struct tls_server *s4 = server_for(c, "127.0.0.1");
    struct tls_server *s6 = server_for(c, "::1");
    struct session x;

    session_run(&x, s4, "egress-ca", "127.0.0.1", 4, "127.0.0.1");
    assert_ok(&x);
    session_free(&x);
    session_run(&x, s4, "egress-ca", "127.0.0.2", 4, "127.0.0.2");
    assert_refused(&x, "certificate has no iPAddress SAN for 127.0.0.2");
    session_free(&x);

    session_run(&x, s6, "egress-ca", "::1", 6, "::1");
    assert_ok(&x);
    session_free(&x);
    session_run(&x, s6, "egress-ca", "::2", 6, "::2");
    assert_refused(&x, "certificate has no iPAddress SAN for ::2");
    session_free(&x);

    /* An IP certificate is not valid for a DNS name, even its own text. */
    session_run(&x, s4, "egress-ca", "localhost", 0, NULL);
    assert_refused(&x, "certificate is not valid for localhost");
    session_free(&x);

    tls_server_unref(s6);
    tls_server_unref(s4);
    mint_cache_free(c);
    mint_free(m);
}

/* ------------------------------------------------------------------------------------------ */
/* The cache */

static void assert_stats(const struct mint_cache *c, uint64_t minted, uint64_t hits)
{
    uint64_t mi = 0, hi = 0;
    mint_cache_stats(c, &mi, &hi);
    assert_int_equal(mi, minted);
    assert_int_equal(hi, hits);
}

static void test_cache_hits(void **state)
{
    (void)state;
    struct mint *m = mint_of("egress-ca");
    struct mint_cache *c = cache_of(m);
    assert_stats(c, 0, 0);
    struct tls_server *a = server_for(c, "relay.example.org");
    assert_stats(c, 1, 0);
    struct tls_server *b = server_for(c, "relay.example.org");
    assert_ptr_equal(a, b);
    assert_stats(c, 1, 1);
    /* Another spelling of the same name or address is the same entry. */
    struct tls_server *b2 = server_for(c, "RELAY.Example.org");
    assert_ptr_equal(a, b2);
    struct tls_server *v6 = server_for(c, "::1");
    struct tls_server *v6b = server_for(c, "0:0:0:0:0:0:0:1");
    assert_ptr_equal(v6, v6b);
    assert_stats(c, 2, 3);
    struct tls_server *other = server_for(c, "other.example.org");
    assert_ptr_not_equal(other, a);
    assert_stats(c, 3, 3);
    assert_int_equal(c->n, 3);

    /* The servers outlive the cache: a connection keeps its own. */
    mint_cache_free(c);
    struct tls_conn conn;
    assert_int_equal(tls_conn_init(&conn, a), 0);
    tls_conn_free(&conn);
    for (struct tls_server **s = (struct tls_server *[]){a, b, b2, v6, v6b, other, NULL}; *s; s++)
        tls_server_unref(*s);
    mint_free(m);
}

static void test_cache_evicts_lru(void **state)
{
    (void)state;
    struct mint *m = mint_of("egress-ca");
    struct mint_cache *c = cache_of(m);
    char host[64];
    assert_int_equal(c->max, 1024);
    for (int i = 0; i < MINT_CACHE_MAX; i++) {
        snprintf(host, sizeof(host), "h%d.example.org", i);
        tls_server_unref(server_for(c, host));
    }
    assert_int_equal(c->n, MINT_CACHE_MAX);
    assert_stats(c, MINT_CACHE_MAX, 0);
    /* Use h0 again: h1 is now the least recently used, and goes when h1024 comes. */
    tls_server_unref(server_for(c, "h0.example.org"));
    assert_stats(c, MINT_CACHE_MAX, 1);
    tls_server_unref(server_for(c, "h1024.example.org"));
    assert_int_equal(c->n, MINT_CACHE_MAX);
    assert_stats(c, MINT_CACHE_MAX + 1, 1);
    assert_non_null(cache_find(c, "h0.example.org"));
    assert_null(cache_find(c, "h1.example.org"));
    assert_non_null(cache_find(c, "h2.example.org"));
    assert_non_null(cache_find(c, "h1024.example.org"));
    /* h1 again: minted anew, evicting h2. */
    tls_server_unref(server_for(c, "h1.example.org"));
    assert_stats(c, MINT_CACHE_MAX + 2, 1);
    assert_null(cache_find(c, "h2.example.org"));
    assert_int_equal(c->n, MINT_CACHE_MAX);
    mint_cache_free(c);
    mint_free(m);
}

static void test_cache_renews(void **state)
{
    (void)state;
    struct mint *m = mint_of("egress-ca");
    struct mint_cache *c = cache_of(m);
    struct tls_server *a = server_for(c, "relay.example.org");
    struct entry *e = cache_find(c, "relay.example.org");
    assert_non_null(e);
    time_t now = time(NULL);
    assert_true(e->not_after >= now + MINT_VALID_S - 2 && e->not_after <= now + MINT_VALID_S);
    /* A day and a minute left: still served. */
    e->not_after = now + MINT_RENEW_S + 60;
    struct tls_server *b = server_for(c, "relay.example.org");
    assert_ptr_equal(a, b);
    assert_stats(c, 1, 1);
    /* Under a day left: minted again; the old server lives on with its holders. */
    e->not_after = now + MINT_RENEW_S - 60;
    struct tls_server *d = server_for(c, "relay.example.org");
    assert_ptr_not_equal(a, d);
    assert_stats(c, 2, 1);
    assert_int_equal(c->n, 1);
    struct session x;
    session_run(&x, a, "egress-ca", "relay.example.org", 0, NULL);
    assert_ok(&x);
    session_free(&x);
    tls_server_unref(d);
    tls_server_unref(b);
    tls_server_unref(a);
    mint_cache_free(c);
    mint_free(m);
}

static void test_bad_hosts(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        ".",
        "a..b",
        ".example.org",
        "example.org.",
        "under_score.org",
        "*.example.org",
        "exa mple.org",
        "[::1]",
        "fe80::1%eth0",
        "1.2.3",
        "10.1",
        "127.0.0.1:8448",
        "example.org:443",
        "ex\xc3\xa4mple.org",
    };
    struct mint *m = mint_of("egress-ca");
    struct mint_cache *c = cache_of(m);
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        struct buf err = BUF_INIT;
        struct tls_server *s = (struct tls_server *)&err; /* must be cleared */
        if (mint_server_for(c, bad[i], &s, &err) != CH_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_null(s);
        assert_true(err.len > 0);
        buf_free(&err);
    }
    /* Lengths: a label of 63 passes, 64 not; 253 bytes in all pass, 254 not. */
    char name[300];
    struct host h;
    memset(name, 'a', 64);
    memcpy(name + 64, ".org", 5);
    assert_int_equal(host_parse(name, &h), CH_EINVAL);
    assert_int_equal(host_parse(name + 1, &h), 0);
    for (int i = 0; i < 253; i++)
        name[i] = (i % 50 == 49) ? '.' : 'a';
    name[253] = '\0';
    assert_int_equal(host_parse(name, &h), 0);
    name[253] = 'a';
    name[254] = '\0';
    assert_int_equal(host_parse(name, &h), CH_EINVAL);
    /* Good ones: digits and hyphens in labels, a numeric label that is not the last. */
    assert_int_equal(host_parse("1.example-2.org", &h), 0);
    assert_string_equal(h.name, "1.example-2.org");
    assert_int_equal(h.family, 0);
    assert_int_equal(host_parse("::FFFF:127.0.0.1", &h), 0);
    assert_string_equal(h.name, "::ffff:127.0.0.1");
    assert_int_equal(h.family, 6);
    assert_stats(c, 0, 0);
    mint_cache_free(c);
    mint_free(m);
}

/* ------------------------------------------------------------------------------------------ */
/* tls_material_from_pem, which mint_server_for builds on */

/* The whole of file NAME of the fixture directory into b (no NUL). */
static void slurp(const char *name, struct buf *b)
{
    FILE *f = fopen(path(name), "r");
    assert_non_null(f);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        assert_int_equal(buf_append(b, chunk, n), 0);
    fclose(f);
}

static void test_material_from_pem(void **state)
{
    (void)state;
    struct buf crt = BUF_INIT, key = BUF_INIT, other = BUF_INIT, err = BUF_INIT;
    struct tls_material *mat = NULL;
    slurp("server.crt", &crt);
    slurp("server.key", &key);
    slurp("alt.key", &other);

    assert_int_equal(tls_material_from_pem(buf_data(&crt), crt.len, buf_data(&key), key.len,
                                           "minted for x", &mat, &err),
                     0);
    assert_non_null(mat);
    assert_int_equal(err.len, 0);
    assert_int_equal(tls_material_count(mat), 1);
    /* It serves: a handshake for one of the leaf's names, trusting the dev CA. */
    struct tls_server *s = NULL;
    assert_int_equal(tls_server_new(mat, &s), 0);
    tls_material_unref(mat);
    struct session x;
    session_run(&x, s, "ca", "localhost", 0, NULL);
    assert_ok(&x);
    session_free(&x);
    tls_server_unref(s);

    /* A trailing NUL counts for nothing. */
    assert_int_equal(buf_append(&crt, "", 1), 0);
    assert_int_equal(tls_material_from_pem(buf_data(&crt), crt.len, buf_data(&key), key.len,
                                           "minted for x", &mat, &err),
                     0);
    tls_material_unref(mat);

    /* The key of another certificate. */
    mat = (struct tls_material *)&err; /* must be cleared */
    assert_int_equal(tls_material_from_pem(buf_data(&crt), crt.len, buf_data(&other), other.len,
                                           "minted for x", &mat, &err),
                     CH_EINVAL);
    assert_null(mat);
    assert_int_equal(buf_append(&err, "", 1), 0);
    assert_string_equal(buf_data(&err), "cert minted for x: the private key minted for x (key) "
                                        "does not match the certificate\n");
    buf_reset(&err);

    /* No certificate: the key where the chain should be. */
    assert_int_equal(tls_material_from_pem(buf_data(&key), key.len, buf_data(&key), key.len,
                                           "minted for y", &mat, &err),
                     CH_EINVAL);
    assert_null(mat);
    static const char want[] = "cert minted for y: no certificate could be parsed: ";
    assert_true(err.len > strlen(want));
    assert_memory_equal(buf_data(&err), want, strlen(want));
    buf_free(&err);
    buf_free(&other);
    buf_free(&key);
    buf_free(&crt);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_errors),        cmocka_unit_test(test_minted_dns_fields),
        cmocka_unit_test(test_minted_ip_fields),  cmocka_unit_test(test_long_name_without_cn),
        cmocka_unit_test(test_openssl_verifies),  cmocka_unit_test(test_generated_rsa_ca),
        cmocka_unit_test(test_handshake_dns),     cmocka_unit_test(test_handshake_ip),
        cmocka_unit_test(test_cache_hits),        cmocka_unit_test(test_cache_evicts_lru),
        cmocka_unit_test(test_cache_renews),      cmocka_unit_test(test_bad_hosts),
        cmocka_unit_test(test_material_from_pem),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
