/* test_tls_client.c -- unit tests for the client side of tls.c: in-memory handshakes against a
 * tls_server, certificate and name verification, SNI, IP literals. */
/* SPDX-License-Identifier: ISC */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>

#include "chappe/buf.h"
#include "chappe/config.h"
#include "chappe/log.h"
#include "chappe/tls.h"
#include "chappe/util.h"

#include "testcerts.h"

/* ------------------------------------------------------------------------------------------ */
/* Fixtures: the dev certificates of certs/gen.sh, plus an expired and a future leaf. */

static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;

/* A leaf for localhost and 127.0.0.1 signed by the dev CA, valid from `from` to `to`
 * ("YYYYMMDDhhmmss"): NAME.crt and NAME.key in the fixture directory. */
static int make_leaf(const char *name, const char *from, const char *to)
{
    /* SEQUENCE { [2] "localhost", [7] 127.0.0.1 } */
    static const unsigned char san[] = {0x30, 0x11, 0x82, 0x09, 'l',  'o',  'c',  'a',  'l', 'h',
                                        'o',  's',  't',  0x87, 0x04, 0x7f, 0x00, 0x00, 0x01};
    const struct testcerts_crt leaf = {
        .name = name,
        .subject = "CN=localhost",
        .issuer = "ca",
        .serial = 4242,
        .from = from,
        .to = to,
        .san = san,
        .san_len = sizeof(san),
        .leaf = true,
    };
    return testcerts_write_crt(&leaf, &drbg);
}

static int group_setup(void **state)
{
    (void)state;
    static const char pers[] = "test_tls_client";
    if (tls_global_init() != 0)
        return -1;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, (const unsigned char *)pers,
                              sizeof(pers) - 1) != 0)
        return -1;
    if (testcerts_make("tlscli") != 0)
        return -1;
    if (make_leaf("expired", "20010101000000", "20020101000000") != 0 ||
        make_leaf("future", "20900101000000", "20910101000000") != 0 ||
        make_leaf("current", "20200101000000", "20900101000000") != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    testcerts_remove();
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    tls_global_free();
    return 0;
}

/* A server whose (only) certificate is NAME.crt / NAME.key from the fixture directory. */
static struct tls_server *server_with(const char *name)
{
    struct tls_material *m = NULL;
    assert_int_equal(testcerts_material(name, &m), 0);
    struct tls_server *s = NULL;
    assert_int_equal(tls_server_new(m, &s), 0);
    tls_material_unref(m);
    return s;
}

/* A client context: verification on or off, trusting the dev CA or the system bundle only. */
static struct tls_client *client_with(bool verify, bool trust_dev_ca)
{
    char *cas[1] = {(char *)path("ca.crt")};
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.federation_verify_certificates = verify;
    if (trust_dev_ca) {
        cfg.federation_custom_ca_list = cas;
        cfg.nfederation_custom_ca_list = 1;
    }
    struct buf err = BUF_INIT;
    struct tls_client *cl = NULL;
    int rc = tls_client_new(&cfg, &cl, &err);
    if (rc != 0)
        fprintf(stderr, "%.*s", (int)err.len, buf_data(&err));
    assert_int_equal(rc, 0);
    assert_non_null(cl);
    assert_int_equal(err.len, 0);
    buf_free(&err);
    return cl;
}

/* ------------------------------------------------------------------------------------------ */
/* Two tls_conns over memory: the pump */

static size_t move(struct tls_conn *from, struct tls_conn *to)
{
    size_t n = from->out.len;
    if (n) {
        assert_int_equal(tls_conn_feed(to, buf_data(&from->out), n), 0);
        buf_reset(&from->out);
    }
    return n;
}

struct hs {
    int cli, srv; /* 0, CH_EAGAIN, CH_ETLS */
};

/* Run both handshakes until both are done or one failed and nothing moves; bounded rounds. */
static struct hs pump(struct tls_conn *cli, struct tls_conn *srv)
{
    struct hs r = {CH_EAGAIN, CH_EAGAIN};
    for (int round = 0; round < 32; round++) {
        if (r.cli == CH_EAGAIN)
            r.cli = tls_conn_handshake(cli);
        size_t moved = move(cli, srv);
        if (r.srv == CH_EAGAIN)
            r.srv = tls_conn_handshake(srv);
        moved += move(srv, cli);
        if (moved == 0 && !(r.cli == CH_EAGAIN && cli->in.len > 0))
            break;
    }
    return r;
}

struct session {
    struct tls_server *s;
    struct tls_client *cl;
    struct tls_conn srv, cli;
    struct hs r;
};

/* Handshake a client for (name, ip) with a server holding certificate `cert`. */
static void session_run(struct session *x, const char *cert, bool verify, bool trust_dev_ca,
                        const char *name, int family, const char *ip_text)
{
    unsigned char ip[16] = {0};
    if (family == 4)
        assert_int_equal(inet_pton(AF_INET, ip_text, ip), 1);
    else if (family == 6)
        assert_int_equal(inet_pton(AF_INET6, ip_text, ip), 1);
    x->s = server_with(cert);
    x->cl = client_with(verify, trust_dev_ca);
    assert_int_equal(tls_conn_init(&x->srv, x->s), 0);
    assert_int_equal(tls_conn_init_client(&x->cli, x->cl, name, family, family ? ip : NULL), 0);
    /* The connections hold their own references. */
    tls_server_unref(x->s);
    tls_client_unref(x->cl);
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

/* The client refused the certificate with exactly this explanation; the server got the alert. */
static void assert_refused(const struct session *x, const char *why)
{
    assert_int_equal(x->r.cli, CH_ETLS);
    assert_false(x->cli.handshake_done);
    assert_string_equal(tls_conn_strerror(&x->cli), why);
    assert_int_equal(x->r.srv, CH_ETLS);
}

/* ------------------------------------------------------------------------------------------ */
/* Tests */

static void test_good_name_and_data(void **state)
{
    (void)state;
    struct session x;
    session_run(&x, "server", true, true, "localhost", 0, NULL);
    assert_ok(&x);
    assert_string_equal(tls_conn_sni(&x.srv), "localhost");
    assert_null(tls_conn_sni(&x.cli));
    assert_string_equal(tls_conn_cipher(&x.cli), "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256");
    assert_string_equal(mbedtls_ssl_get_version(&x.cli.ssl), "TLSv1.2");
    assert_string_equal(tls_conn_strerror(&x.cli), "no TLS error");

    /* Application data both ways, then close_notify from the server. */
    static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    static const char resp[] = "HTTP/1.1 204 No Content\r\n\r\n";
    struct buf plain = BUF_INIT;
    assert_int_equal(tls_conn_write(&x.cli, req, sizeof(req) - 1), 0);
    move(&x.cli, &x.srv);
    assert_int_equal(tls_conn_read(&x.srv, &plain), 0);
    assert_int_equal(plain.len, sizeof(req) - 1);
    assert_memory_equal(buf_data(&plain), req, plain.len);
    buf_reset(&plain);
    assert_int_equal(tls_conn_write(&x.srv, resp, sizeof(resp) - 1), 0);
    tls_conn_close_notify(&x.srv);
    move(&x.srv, &x.cli);
    assert_int_equal(tls_conn_read(&x.cli, &plain), CH_EEOF);
    assert_int_equal(plain.len, sizeof(resp) - 1);
    assert_memory_equal(buf_data(&plain), resp, plain.len);
    buf_free(&plain);
    session_free(&x);
}

static void test_name_case_insensitive(void **state)
{
    (void)state;
    struct session x;
    session_run(&x, "server", true, true, "Relay.LocalHost", 0, NULL);
    assert_ok(&x);
    assert_string_equal(tls_conn_sni(&x.srv), "relay.localhost");
    session_free(&x);
}

static void test_wrong_name(void **state)
{
    (void)state;
    struct session x;
    session_run(&x, "server", true, true, "wrong.localhost", 0, NULL);
    assert_refused(&x, "certificate is not valid for wrong.localhost");
    /* The name was still sent as SNI. */
    assert_string_equal(tls_conn_sni(&x.srv), "wrong.localhost");
    session_free(&x);
}

static void test_no_wildcard_of_parent(void **state)
{
    (void)state;
    struct session x;
    /* alt.crt is for alt.localhost only: a sub-name does not match. */
    session_run(&x, "alt", true, true, "x.alt.localhost", 0, NULL);
    assert_refused(&x, "certificate is not valid for x.alt.localhost");
    session_free(&x);
}

static void test_unknown_ca(void **state)
{
    (void)state;
    struct session x;
    /* Only the system bundle: the dev CA is not in it. */
    session_run(&x, "server", true, false, "localhost", 0, NULL);
    assert_refused(&x, "certificate not issued by a trusted CA");
    session_free(&x);
}

static void test_unknown_ca_and_wrong_name(void **state)
{
    (void)state;
    struct session x;
    session_run(&x, "server", true, false, "wrong.localhost", 0, NULL);
    assert_refused(&x, "certificate not issued by a trusted CA; "
                       "certificate is not valid for wrong.localhost");
    session_free(&x);
}

static void test_ipv4_literal(void **state)
{
    (void)state;
    struct session x;
    session_run(&x, "server", true, true, "127.0.0.1", 4, "127.0.0.1");
    assert_ok(&x);
    assert_null(tls_conn_sni(&x.srv)); /* no SNI for an IP literal (RFC 6066 section 3) */
    session_free(&x);
}

static void test_ipv6_literal(void **state)
{
    (void)state;
    struct session x;
    session_run(&x, "server", true, true, "::1", 6, "::1");
    assert_ok(&x);
    assert_null(tls_conn_sni(&x.srv));
    session_free(&x);
}

static void test_ip_literal_not_in_san(void **state)
{
    (void)state;
    struct session x;
    session_run(&x, "server", true, true, "127.0.0.2", 4, "127.0.0.2");
    assert_refused(&x, "certificate has no iPAddress SAN for 127.0.0.2");
    assert_null(tls_conn_sni(&x.srv));
    session_free(&x);

    /* An IPv6 address is not its IPv4 cousin: ::ffff:127.0.0.1 is 16 bytes, the SAN 4. */
    session_run(&x, "server", true, true, "::ffff:127.0.0.1", 6, "::ffff:127.0.0.1");
    assert_refused(&x, "certificate has no iPAddress SAN for ::ffff:127.0.0.1");
    session_free(&x);
}

static void test_ip_literal_dns_only_cert(void **state)
{
    (void)state;
    struct session x;
    /* alt.crt has a dNSName only; its text is never compared with the address. */
    session_run(&x, "alt", true, true, "127.0.0.1", 4, "127.0.0.1");
    assert_refused(&x, "certificate has no iPAddress SAN for 127.0.0.1");
    session_free(&x);
}

static void test_expired(void **state)
{
    (void)state;
    struct session x;
    session_run(&x, "expired", true, true, "localhost", 0, NULL);
    assert_refused(&x, "certificate has expired");
    session_free(&x);
    /* The same certificate by its IP SAN: the address matches, the dates still do not. */
    session_run(&x, "expired", true, true, "127.0.0.1", 4, "127.0.0.1");
    assert_refused(&x, "certificate has expired");
    session_free(&x);
}

static void test_not_yet_valid(void **state)
{
    (void)state;
    struct session x;
    session_run(&x, "future", true, true, "localhost", 0, NULL);
    assert_refused(&x, "certificate is not yet valid");
    session_free(&x);
}

static void test_made_leaf_is_good(void **state)
{
    (void)state;
    /* The certificates written by make_leaf verify when their dates are right. */
    struct session x;
    session_run(&x, "current", true, true, "127.0.0.1", 4, "127.0.0.1");
    assert_ok(&x);
    session_free(&x);
    session_run(&x, "current", true, true, "localhost", 0, NULL);
    assert_ok(&x);
    session_free(&x);
}

static void test_verification_off(void **state)
{
    (void)state;
    struct session x;
    session_run(&x, "server", false, false, "wrong.localhost", 0, NULL);
    assert_ok(&x);
    assert_string_equal(tls_conn_sni(&x.srv), "wrong.localhost");
    assert_false(tls_client_verifies(x.cli.cli));
    session_free(&x);
    session_run(&x, "expired", false, true, "127.0.0.2", 4, "127.0.0.2");
    assert_ok(&x);
    assert_null(tls_conn_sni(&x.srv));
    session_free(&x);
}

static void test_verifies_flag(void **state)
{
    (void)state;
    struct tls_client *on = client_with(true, true);
    struct tls_client *off = client_with(false, false);
    assert_true(tls_client_verifies(on));
    assert_false(tls_client_verifies(off));
    tls_client_ref(on);
    tls_client_unref(on);
    assert_true(tls_client_verifies(on));
    tls_client_unref(on);
    tls_client_unref(off);
    tls_client_unref(NULL);
}

static int new_client_err(const char *const *files, size_t n, struct buf *err)
{
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.federation_verify_certificates = true;
    cfg.federation_custom_ca_list = (char **)files;
    cfg.nfederation_custom_ca_list = n;
    struct tls_client *cl = (struct tls_client *)&cfg; /* must be reset to NULL */
    int rc = tls_client_new(&cfg, &cl, err);
    if (rc == 0)
        tls_client_unref(cl);
    else
        assert_null(cl);
    return rc;
}

static void write_text(const char *file, const char *text)
{
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_custom_ca_errors(void **state)
{
    (void)state;
    struct buf err = BUF_INIT;
    char missing[256], garbage[256], empty[256], want[1024];
    snprintf(missing, sizeof(missing), "%s", path("missing.pem"));
    snprintf(garbage, sizeof(garbage), "%s", path("garbage.pem"));
    snprintf(empty, sizeof(empty), "%s", path("empty.pem"));
    write_text(garbage,
               "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
    write_text(empty, "");

    const char *one[] = {missing};
    assert_int_equal(new_client_err(one, 1, &err), CH_EIO);
    snprintf(want, sizeof(want),
             "federation_custom_ca_list %s: cannot open: No such file or directory\n", missing);
    assert_int_equal(err.len, strlen(want));
    assert_memory_equal(buf_data(&err), want, err.len);
    buf_reset(&err);

    const char *g[] = {garbage};
    assert_int_equal(new_client_err(g, 1, &err), CH_EINVAL);
    snprintf(want, sizeof(want),
             "federation_custom_ca_list %s: no certificate could be parsed: ", garbage);
    assert_true(err.len > strlen(want));
    assert_memory_equal(buf_data(&err), want, strlen(want));
    assert_int_equal(buf_data(&err)[err.len - 1], '\n');
    buf_reset(&err);

    /* Every bad file is reported, one line each; the worst code wins (unreadable beats invalid). */
    const char *all[] = {garbage, path("ca.crt"), empty, missing};
    assert_int_equal(new_client_err(all, 4, &err), CH_EIO);
    size_t lines = 0;
    for (size_t i = 0; i < err.len; i++)
        lines += buf_data(&err)[i] == '\n';
    assert_int_equal(lines, 3);
    snprintf(want, sizeof(want), "federation_custom_ca_list %s: empty file\n", empty);
    assert_non_null(memmem(buf_data(&err), err.len, want, strlen(want)));
    buf_reset(&err);

    /* A directory is not a CA file. */
    const char *d[] = {testcerts_dir};
    assert_int_equal(new_client_err(d, 1, &err), CH_EINVAL);
    snprintf(want, sizeof(want), "federation_custom_ca_list %s: not a regular file\n",
             testcerts_dir);
    assert_int_equal(buf_append(&err, "", 1), 0); /* NUL-terminate for the comparison */
    assert_string_equal(buf_data(&err), want);
    buf_reset(&err);

    /* A good file: no error text. */
    const char *good[] = {path("ca.crt")};
    assert_int_equal(new_client_err(good, 1, &err), 0);
    assert_int_equal(err.len, 0);
    buf_free(&err);
}

static void test_init_client_bad_input(void **state)
{
    (void)state;
    struct tls_client *cl = client_with(true, true);
    struct tls_conn c;
    char long_name[300];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_int_equal(tls_conn_init_client(&c, cl, "", 0, NULL), CH_ETLS);
    assert_int_equal(tls_conn_init_client(&c, cl, NULL, 0, NULL), CH_ETLS);
    assert_int_equal(tls_conn_init_client(&c, cl, long_name, 0, NULL), CH_ETLS);
    assert_int_equal(tls_conn_init_client(&c, cl, "127.0.0.1", 4, NULL), CH_ETLS);
    assert_int_equal(tls_conn_init_client(&c, cl, "127.0.0.1", 5, (const unsigned char *)"abcd"),
                     CH_ETLS);
    /* Nothing was taken: this is the last reference (LeakSanitizer checks the rest). */
    tls_client_unref(cl);
}

static void test_client_hello_waits(void **state)
{
    (void)state;
    struct tls_client *cl = client_with(true, true);
    struct tls_conn c;
    assert_int_equal(tls_conn_init_client(&c, cl, "localhost", 0, NULL), 0);
    tls_client_unref(cl);
    /* The ClientHello is produced once; with no input the handshake only waits. */
    assert_int_equal(tls_conn_handshake(&c), CH_EAGAIN);
    assert_true(c.out.len > 0);
    assert_int_equal((unsigned char)buf_data(&c.out)[0], 22); /* handshake record */
    size_t hello = c.out.len;
    for (int i = 0; i < 3; i++)
        assert_int_equal(tls_conn_handshake(&c), CH_EAGAIN);
    assert_int_equal(c.out.len, hello);
    /* Writing before the handshake is refused. */
    assert_int_equal(tls_conn_write(&c, "x", 1), CH_ETLS);
    tls_conn_free(&c);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_name_and_data),
        cmocka_unit_test(test_name_case_insensitive),
        cmocka_unit_test(test_wrong_name),
        cmocka_unit_test(test_no_wildcard_of_parent),
        cmocka_unit_test(test_unknown_ca),
        cmocka_unit_test(test_unknown_ca_and_wrong_name),
        cmocka_unit_test(test_ipv4_literal),
        cmocka_unit_test(test_ipv6_literal),
        cmocka_unit_test(test_ip_literal_not_in_san),
        cmocka_unit_test(test_ip_literal_dns_only_cert),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_not_yet_valid),
        cmocka_unit_test(test_made_leaf_is_good),
        cmocka_unit_test(test_verification_off),
        cmocka_unit_test(test_verifies_flag),
        cmocka_unit_test(test_custom_ca_errors),
        cmocka_unit_test(test_init_client_bad_input),
        cmocka_unit_test(test_client_hello_waits),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
