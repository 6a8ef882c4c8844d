/* testcerts.h -- certificate fixtures shared by the TLS unit tests (test_tls, test_tls_client,
 * test_client). */
/* SPDX-License-Identifier: ISC */
/*
 * What it makes: testcerts_make("NAME") creates a fresh directory /tmp/chappe-NAME-test-XXXXXX
 * (mkdtemp; its path is testcerts_dir) and runs certs/gen.sh into it, which writes the dev CA
 * (ca.crt, ca.key), the server leaf (server.crt, server.key), the SNI leaf (alt.crt, alt.key)
 * and the egress CA (egress-ca.crt, egress-ca.key). testcerts_write_crt adds a certificate
 * written with mbedTLS, for what openssl 3.0 cannot make (validity dates in the past).
 *
 * Where: path("file") names a file in that directory. certs/gen.sh is looked for under
 * $CHAPPE_SRCDIR, then in the current directory, then next to this header by __FILE__.
 *
 * Removing it: the caller does, with testcerts_remove() in its group teardown. Nothing else
 * here frees anything: the directory name and the path ring are static storage.
 *
 * Every function here is static: a test includes this header once, from tests/unit/.
 */
#ifndef CHAPPE_TESTS_UNIT_TESTCERTS_H
#define CHAPPE_TESTS_UNIT_TESTCERTS_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>

#include "chappe/buf.h"
#include "chappe/config.h"
#include "chappe/tls.h"

/* The fixture directory, /tmp/chappe-NAME-test-XXXXXX once testcerts_make has run. */
static char testcerts_dir[64];

/* NAME inside the fixture directory. */
static const char *path(const char *name)
{
    /* A small ring so that several paths can be alive in one expression. */
    static char ring[8][256];
    static unsigned next;
    char *p = ring[next++ % 8];
    snprintf(p, sizeof(ring[0]), "%s/%s", testcerts_dir, name);
    return p;
}

/* system() on a printf-formatted command: 0 when it exited with status 0, else -1. */
static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd) == 0 ? 0 : -1;
}

/* certs/gen.sh: from $CHAPPE_SRCDIR, the current directory, or next to this header. */
static int find_gen(char *out, size_t cap)
{
    const char *src = getenv("CHAPPE_SRCDIR");
    if (src) {
        snprintf(out, cap, "%s/certs/gen.sh", src);
        return access(out, R_OK);
    }
    if (access("certs/gen.sh", R_OK) == 0) {
        snprintf(out, cap, "certs/gen.sh");
        return 0;
    }
    /* __FILE__ here is this header as the compiler found it: "<srcdir>/tests/unit/testcerts.h"
     * when the test was compiled by a path that leads to the source tree. */
    const char *me = __FILE__;
    const char *tail = strstr(me, "tests/unit/testcerts.h");
    if (tail == NULL)
        return -1;
    snprintf(out, cap, "%.*scerts/gen.sh", (int)(tail - me), me);
    return access(out, R_OK);
}

/*
 * Make /tmp/chappe-NAME-test-XXXXXX and the certs/gen.sh certificates in it. 0 or -1.
 * The caller calls testcerts_remove() when done, whatever this returned.
 */
static int testcerts_make(const char *name)
{
    char gen[512];
    snprintf(testcerts_dir, sizeof(testcerts_dir), "/tmp/chappe-%s-test-XXXXXX", name);
    if (mkdtemp(testcerts_dir) == NULL) {
        testcerts_dir[0] = '\0'; /* nothing for testcerts_remove to remove */
        return -1;
    }
    if (find_gen(gen, sizeof(gen)) != 0) {
        fprintf(stderr, "certs/gen.sh not found (set CHAPPE_SRCDIR)\n");
        return -1;
    }
    return run("sh '%s' '%s' >/dev/null", gen, testcerts_dir);
}

/* rm -rf the fixture directory; only ever one that testcerts_make made. */
static void testcerts_remove(void)
{
    if (strncmp(testcerts_dir, "/tmp/chappe-", 12) == 0)
        run("rm -rf '%s'", testcerts_dir);
    testcerts_dir[0] = '\0';
}

/*
 * Load NAME.crt and NAME.key of the fixture directory as the only certificate into *out,
 * which the caller then owns (tls_material_unref). 0, or tls_material_load's error code after
 * printing its explanation on stderr.
 */
__attribute__((unused)) static int testcerts_material(const char *name, struct tls_material **out)
{
    char crt[256], key[256], file[64];
    snprintf(file, sizeof(file), "%s.crt", name);
    snprintf(crt, sizeof(crt), "%s", path(file));
    snprintf(file, sizeof(file), "%s.key", name);
    snprintf(key, sizeof(key), "%s", path(file));
    struct cfg_cert cc = {crt, key};
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.tls.certificates = &cc;
    cfg.tls.ncertificates = 1;
    struct buf err = BUF_INIT;
    int rc = tls_material_load(&cfg, out, &err);
    if (rc != 0)
        fprintf(stderr, "%.*s", (int)err.len, buf_data(&err));
    buf_free(&err);
    return rc;
}

/* A certificate for testcerts_write_crt to make. */
struct testcerts_crt {
    const char *name;         /* written as NAME.crt (0644) and NAME.key (0600) */
    const char *subject;      /* "CN=..." */
    const char *issuer;       /* signed by ISSUER.crt / ISSUER.key of the directory; NULL: self */
    int serial;               /* the certificate's serial number */
    const char *from, *to;    /* validity, "YYYYMMDDhhmmss" */
    const unsigned char *san; /* DER SubjectAltName value, or NULL for none */
    size_t san_len;
    bool leaf; /* add basicConstraints CA:FALSE */
};

static int write_pem_file(const char *file, const unsigned char *pem, mode_t mode)
{
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0)
        return -1;
    size_t len = strlen((const char *)pem);
    ssize_t w = write(fd, pem, len);
    close(fd);
    return w == (ssize_t)len ? 0 : -1;
}

/*
 * Write the certificate C describes, for a fresh ECDSA P-256 key, into the fixture directory,
 * drawing randomness from DRBG. 0 or -1. Written with mbedTLS because the installed openssl
 * (3.0) cannot backdate a certificate (`x509 -req` has no start date).
 */
__attribute__((unused)) static int testcerts_write_crt(const struct testcerts_crt *c,
                                                       mbedtls_ctr_drbg_context *drbg)
{
    mbedtls_pk_context key, ca_key;
    mbedtls_x509_crt ca_crt;
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    unsigned char pem[4096];
    char issuer[256], file[256];
    int rc = -1;
    mbedtls_pk_init(&key);
    mbedtls_pk_init(&ca_key);
    mbedtls_x509_crt_init(&ca_crt);
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    if (mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) != 0 ||
        mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key), mbedtls_ctr_drbg_random,
                            drbg) != 0)
        goto out;
    if (c->issuer != NULL) {
        snprintf(file, sizeof(file), "%s.key", c->issuer);
        if (mbedtls_pk_parse_keyfile(&ca_key, path(file), NULL) != 0)
            goto out;
        snprintf(file, sizeof(file), "%s.crt", c->issuer);
        if (mbedtls_x509_crt_parse_file(&ca_crt, path(file)) != 0 ||
            mbedtls_x509_dn_gets(issuer, sizeof(issuer), &ca_crt.subject) < 0)
            goto out;
        mbedtls_x509write_crt_set_issuer_key(&w, &ca_key);
    } else {
        snprintf(issuer, sizeof(issuer), "%s", c->subject);
        mbedtls_x509write_crt_set_issuer_key(&w, &key);
    }
    mbedtls_x509write_crt_set_subject_key(&w, &key);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    if (mbedtls_mpi_lset(&serial, c->serial) != 0 ||
        mbedtls_x509write_crt_set_subject_name(&w, c->subject) != 0 ||
        mbedtls_x509write_crt_set_issuer_name(&w, issuer) != 0 ||
        mbedtls_x509write_crt_set_serial(&w, &serial) != 0 ||
        mbedtls_x509write_crt_set_validity(&w, c->from, c->to) != 0)
        goto out;
    if (c->leaf && mbedtls_x509write_crt_set_basic_constraints(&w, 0, -1) != 0)
        goto out;
    if (c->san != NULL &&
        mbedtls_x509write_crt_set_extension(&w, MBEDTLS_OID_SUBJECT_ALT_NAME,
                                            MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0,
                                            c->san, c->san_len) != 0)
        goto out;
    if (mbedtls_x509write_crt_pem(&w, pem, sizeof(pem), mbedtls_ctr_drbg_random, drbg) != 0)
        goto out;
    snprintf(file, sizeof(file), "%s.crt", c->name);
    if (write_pem_file(path(file), pem, 0644) != 0)
        goto out;
    if (mbedtls_pk_write_key_pem(&key, pem, sizeof(pem)) != 0)
        goto out;
    snprintf(file, sizeof(file), "%s.key", c->name);
    rc = write_pem_file(path(file), pem, 0600);
out:
    mbedtls_platform_zeroize(pem, sizeof(pem)); /* may hold the private key */
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&w);
    mbedtls_x509_crt_free(&ca_crt);
    mbedtls_pk_free(&ca_key);
    mbedtls_pk_free(&key);
    return rc;
}

#endif
