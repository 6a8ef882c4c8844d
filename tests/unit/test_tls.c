/* test_tls.c -- unit tests for tls.c: in-memory handshakes with an mbedTLS client, SNI, tickets,
 * certificate checks. */
/* SPDX-License-Identifier: ISC */
#include "../../src/tls.c"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "testcerts.h"

/* ------------------------------------------------------------------------------------------ */
/* Fixtures: certificates made at run time under /tmp, removed at the end. */

static mbedtls_x509_crt ca; /* the dev CA, for clients that verify */

static int group_setup(void **state)
{
    (void)state;
    /* A self-signed EC leaf with only a CN, valid in 2001-2002. */
    static const struct testcerts_crt expired = {
        .name = "expired",
        .subject = "CN=expired.localhost",
        .serial = 7,
        .from = "20010101000000",
        .to = "20020101000000",
    };
    if (tls_global_init() != 0)
        return -1;
    if (testcerts_make("tls") != 0)
        return -1;
    /* An RSA certificate for localhost and *.wild.localhost (dual ECDSA/RSA, wildcards). */
    if (run("openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -subj /CN=rsa "
            "-addext 'subjectAltName=DNS:localhost,DNS:*.wild.localhost' "
            "-keyout '%s' -out '%s' 2>/dev/null",
            path("rsa.key"), path("rsa.crt")) != 0)
        return -1;
    /* A wildcard over names that also have certificates of their own. */
    if (run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 "
            "-subj /CN=wild -addext 'subjectAltName=DNS:*.localhost' "
            "-keyout '%s' -out '%s' 2>/dev/null",
            path("wild.key"), path("wild.crt")) != 0)
        return -1;
    /* No subjectAltName at all: the CN names it. */
    if (run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 "
            "-subj /CN=CN.localhost -keyout '%s' -out '%s' 2>/dev/null",
            path("cn.key"), path("cn.crt")) != 0)
        return -1;
    if (testcerts_write_crt(&expired, &global.drbg) != 0)
        return -1;
    mbedtls_x509_crt_init(&ca);
    if (mbedtls_x509_crt_parse_file(&ca, path("ca.crt")) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    mbedtls_x509_crt_free(&ca);
    testcerts_remove();
    tls_global_free();
    return 0;
}

/* A config holding only certificates, by file name in the fixture directory. */
struct certs {
    struct config cfg;
    struct cfg_cert c[4];
    char paths[8][256];
};

static void certs_set(struct certs *cs, size_t n, const char *const *names)
{
    memset(cs, 0, sizeof(*cs));
    for (size_t i = 0; i < n; i++) {
        snprintf(cs->paths[2 * i], sizeof(cs->paths[0]), "%s", path(names[2 * i]));
        snprintf(cs->paths[2 * i + 1], sizeof(cs->paths[0]), "%s", path(names[2 * i + 1]));
        cs->c[i].cert = cs->paths[2 * i];
        cs->c[i].key = cs->paths[2 * i + 1];
    }
    cs->cfg.tls.certificates = cs->c;
    cs->cfg.tls.ncertificates = n;
}

static struct tls_material *load(size_t n, const char *const *names)
{
    struct certs cs;
    struct buf err = BUF_INIT;
    struct tls_material *m = NULL;
    certs_set(&cs, n, names);
    int rc = tls_material_load(&cs.cfg, &m, &err);
    if (rc != 0)
        fprintf(stderr, "%.*s", (int)err.len, buf_data(&err));
    assert_int_equal(rc, 0);
    assert_non_null(m);
    buf_free(&err);
    return m;
}

static const char *const std_names[] = {"server.crt", "server.key", "alt.crt", "alt.key"};

static struct tls_server *std_server(void)
{
    struct tls_material *m = load(2, std_names);
    struct tls_server *s = NULL;
    assert_int_equal(tls_server_new(m, &s), 0);
    tls_material_unref(m); /* the server keeps its own reference */
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* An mbedTLS client over two buffers, and the pump between it and a server tls_conn. */

struct client_opts {
    const char *host; /* SNI, and the name verified; NULL: no SNI */
    bool no_verify;
    int min_minor, max_minor; /* 0: TLS 1.2 */
    const int *suites;        /* NULL: mbedTLS's defaults */
    const mbedtls_ecp_group_id *curves;
    const mbedtls_ssl_session *session;
};

struct client {
    mbedtls_ssl_config conf;
    mbedtls_ssl_context ssl;
    struct buf in;  /* from the server */
    struct buf out; /* to the server */
};

static int cli_send(void *arg, const unsigned char *p, size_t n)
{
    struct client *cl = arg;
    assert_int_equal(buf_append(&cl->out, p, n), 0);
    return (int)n;
}

static int cli_recv(void *arg, unsigned char *p, size_t n)
{
    struct client *cl = arg;
    if (cl->in.len == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > cl->in.len)
        n = cl->in.len;
    memcpy(p, buf_data(&cl->in), n);
    buf_consume(&cl->in, n);
    return (int)n;
}

static void client_init(struct client *cl, const struct client_opts *o)
{
    memset(cl, 0, sizeof(*cl));
    mbedtls_ssl_config_init(&cl->conf);
    mbedtls_ssl_init(&cl->ssl);
    assert_int_equal(mbedtls_ssl_config_defaults(&cl->conf, MBEDTLS_SSL_IS_CLIENT,
                                                 MBEDTLS_SSL_TRANSPORT_STREAM,
                                                 MBEDTLS_SSL_PRESET_DEFAULT),
                     0);
    mbedtls_ssl_conf_rng(&cl->conf, mbedtls_ctr_drbg_random, &global.drbg);
    mbedtls_ssl_conf_ca_chain(&cl->conf, &ca, NULL);
    mbedtls_ssl_conf_authmode(&cl->conf,
                              o->no_verify ? MBEDTLS_SSL_VERIFY_NONE : MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_min_version(&cl->conf, 3, o->min_minor ? o->min_minor : 3);
    mbedtls_ssl_conf_max_version(&cl->conf, 3, o->max_minor ? o->max_minor : 3);
    if (o->suites)
        mbedtls_ssl_conf_ciphersuites(&cl->conf, o->suites);
    if (o->curves)
        mbedtls_ssl_conf_curves(&cl->conf, o->curves);
    mbedtls_ssl_conf_session_tickets(&cl->conf, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
    assert_int_equal(mbedtls_ssl_setup(&cl->ssl, &cl->conf), 0);
    if (o->host)
        assert_int_equal(mbedtls_ssl_set_hostname(&cl->ssl, o->host), 0);
    if (o->session)
        assert_int_equal(mbedtls_ssl_set_session(&cl->ssl, o->session), 0);
    mbedtls_ssl_set_bio(&cl->ssl, cl, cli_send, cli_recv, NULL);
}

static void client_free(struct client *cl)
{
    mbedtls_ssl_free(&cl->ssl);
    mbedtls_ssl_config_free(&cl->conf);
    buf_free(&cl->in);
    buf_free(&cl->out);
}

static bool want(int ret)
{
    return ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE;
}

/* Feed `from` to the server in pieces of `chunk` bytes (0: at once), stepping its handshake. */
static size_t deliver(struct buf *from, struct tls_conn *sc, size_t chunk, int *srv)
{
    size_t total = from->len;
    do {
        size_t n = from->len;
        if (chunk && n > chunk)
            n = chunk;
        assert_int_equal(tls_conn_feed(sc, buf_data(from), n), 0);
        buf_consume(from, n);
        if (*srv == CH_EAGAIN)
            *srv = tls_conn_handshake(sc);
    } while (from->len > 0);
    return total;
}

static size_t move(struct buf *from, struct buf *to)
{
    size_t n = from->len;
    assert_int_equal(buf_append(to, buf_data(from), n), 0);
    buf_reset(from);
    return n;
}

struct hs {
    int srv; /* 0, CH_EAGAIN, CH_ETLS */
    int cli; /* mbedTLS code */
    int rounds;
};

/* Run both handshakes to the end (or a failure), alternating, in a bounded number of rounds. */
static struct hs pump(struct client *cl, struct tls_conn *sc, size_t chunk)
{
    struct hs r = {CH_EAGAIN, MBEDTLS_ERR_SSL_WANT_READ, 0};
    for (r.rounds = 0; r.rounds < 32; r.rounds++) {
        if (want(r.cli))
            r.cli = mbedtls_ssl_handshake(&cl->ssl);
        size_t moved = deliver(&cl->out, sc, chunk, &r.srv);
        moved += move(&sc->out, &cl->in);
        if (moved == 0 && !(want(r.cli) && cl->in.len > 0))
            break;
    }
    return r;
}

/* Server tls_conn + client, handshaken with the given options. */
static struct hs connect_to(struct tls_server *s, struct tls_conn *sc, struct client *cl,
                            const struct client_opts *o, size_t chunk)
{
    assert_int_equal(tls_conn_init(sc, s), 0);
    client_init(cl, o);
    return pump(cl, sc, chunk);
}

static void assert_ok(struct hs r)
{
    assert_int_equal(r.cli, 0);
    assert_int_equal(r.srv, 0);
}

/* The certificate the client received is the one in file `name`. */
static void assert_peer_is(struct client *cl, const char *name)
{
    mbedtls_x509_crt want_crt;
    mbedtls_x509_crt_init(&want_crt);
    assert_int_equal(mbedtls_x509_crt_parse_file(&want_crt, path(name)), 0);
    const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&cl->ssl);
    assert_non_null(peer);
    assert_int_equal(peer->raw.len, want_crt.raw.len);
    assert_memory_equal(peer->raw.p, want_crt.raw.p, peer->raw.len);
    mbedtls_x509_crt_free(&want_crt);
}

static void fill(char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)((i * 131 + seed + (i >> 10)) & 0xff);
}

/* ------------------------------------------------------------------------------------------ */
/* Handshakes */

static void test_full_handshake(void **state)
{
    (void)state;
    struct tls_server *s = std_server();
    struct tls_conn sc;
    struct client cl;
    struct client_opts o = {.host = "localhost"};
    struct hs r = connect_to(s, &sc, &cl, &o, 0);
    assert_ok(r);
    assert_true(sc.handshake_done);
    assert_false(tls_conn_resumed(&sc));
    assert_string_equal(tls_conn_sni(&sc), "localhost");
    /* Server preference: the first suite of our list that fits the ECDSA key. */
    assert_string_equal(tls_conn_cipher(&sc), "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256");
    assert_string_equal(mbedtls_ssl_get_version(&sc.ssl), "TLSv1.2");
    assert_int_equal(mbedtls_ssl_get_verify_result(&cl.ssl), 0);
    assert_peer_is(&cl, "server.crt");
    assert_int_equal(sc.in.len, 0);
    assert_int_equal(sc.out.len, 0);
    /* Done is done: no more output, no error. */
    assert_int_equal(tls_conn_handshake(&sc), 0);
    assert_int_equal(sc.out.len, 0);
    client_free(&cl);
    tls_conn_free(&sc);
    tls_server_unref(s);
}

static void test_handshake_byte_by_byte(void **state)
{
    (void)state;
    struct tls_server *s = std_server();
    struct tls_conn sc;
    struct client cl;
    struct client_opts o = {.host = "relay.localhost"};
    struct hs r = connect_to(s, &sc, &cl, &o, 1);
    assert_ok(r);
    assert_string_equal(tls_conn_sni(&sc), "relay.localhost");
    client_free(&cl);
    tls_conn_free(&sc);
    tls_server_unref(s);
}

static void test_empty_input_never_spins(void **state)
{
    (void)state;
    struct tls_server *s = std_server();
    struct tls_conn sc;
    assert_int_equal(tls_conn_init(&sc, s), 0);
    struct buf plain = BUF_INIT;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tls_conn_handshake(&sc), CH_EAGAIN);
        assert_int_equal(tls_conn_read(&sc, &plain), 0);
    }
    assert_int_equal(sc.out.len, 0);
    assert_int_equal(plain.len, 0);
    assert_false(sc.handshake_done);
    assert_null(tls_conn_sni(&sc));
    assert_string_equal(tls_conn_cipher(&sc), "");
    assert_string_equal(tls_conn_strerror(&sc), "no TLS error");
    /* No application data before the handshake. */
    assert_int_equal(tls_conn_write(&sc, "x", 1), CH_ETLS);
    /* close_notify before the handshake sends nothing. */
    tls_conn_close_notify(&sc);
    assert_int_equal(sc.out.len, 0);
    buf_free(&plain);
    tls_conn_free(&sc);
    tls_conn_free(&sc); /* idempotent */
    tls_server_unref(s);
}

static void test_curves(void **state)
{
    (void)state;
    static const mbedtls_ecp_group_id p384_p256[] = {MBEDTLS_ECP_DP_SECP384R1,
                                                     MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_NONE};
    static const mbedtls_ecp_group_id p521[] = {MBEDTLS_ECP_DP_SECP521R1, MBEDTLS_ECP_DP_NONE};
    struct tls_server *s = std_server();
    struct tls_conn sc;
    struct client cl;
    struct client_opts o = {.host = "localhost", .curves = p384_p256};
    assert_ok(connect_to(s, &sc, &cl, &o, 0));
    client_free(&cl);
    tls_conn_free(&sc);
    /* No group in common (and the P-256 certificate not acceptable to the client either). */
    o.curves = p521;
    struct hs r = connect_to(s, &sc, &cl, &o, 0);
    assert_int_equal(r.srv, CH_ETLS);
    client_free(&cl);
    tls_conn_free(&sc);
    tls_server_unref(s);
}

static void test_suites(void **state)
{
    (void)state;
    static const struct {
        int suite;
        const char *name;
    } cases[] = {
        {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
         "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"},
        {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
         "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"},
        {MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
         "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256"},
    };
    struct tls_server *s = std_server();
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int suites[] = {cases[i].suite, 0};
        struct tls_conn sc;
        struct client cl;
        struct client_opts o = {.host = "localhost", .suites = suites};
        assert_ok(connect_to(s, &sc, &cl, &o, 0));
        assert_string_equal(tls_conn_cipher(&sc), cases[i].name);
        /* A record each way with this cipher. */
        assert_int_equal(tls_conn_write(&sc, "ping", 4), 0);
        move(&sc.out, &cl.in);
        unsigned char got[8];
        assert_int_equal(mbedtls_ssl_read(&cl.ssl, got, sizeof(got)), 4);
        assert_memory_equal(got, "ping", 4);
        client_free(&cl);
        tls_conn_free(&sc);
    }
    tls_server_unref(s);
}

/* ------------------------------------------------------------------------------------------ */
/* Refusals */

static void expect_refused(const struct client_opts *o, int mbed_error)
{
    struct tls_server *s = std_server();
    struct tls_conn sc;
    struct client cl;
    struct hs r = connect_to(s, &sc, &cl, o, 0);
    assert_int_equal(r.srv, CH_ETLS);
    assert_true(r.cli != 0 && !want(r.cli));
    assert_false(sc.handshake_done);
    if (mbed_error)
        assert_int_equal(sc.last_error, mbed_error);
    assert_true(strlen(tls_conn_strerror(&sc)) > 0);
    assert_string_not_equal(tls_conn_strerror(&sc), "no TLS error");
    client_free(&cl);
    tls_conn_free(&sc);
    tls_server_unref(s);
}

static void test_refuse_tls11(void **state)
{
    (void)state;
    struct client_opts o = {.host = "localhost",
                            .min_minor = MBEDTLS_SSL_MINOR_VERSION_2,
                            .max_minor = MBEDTLS_SSL_MINOR_VERSION_2};
    expect_refused(&o, MBEDTLS_ERR_SSL_BAD_HS_PROTOCOL_VERSION);
}

static void test_refuse_tls10(void **state)
{
    (void)state;
    struct client_opts o = {.host = "localhost",
                            .min_minor = MBEDTLS_SSL_MINOR_VERSION_1,
                            .max_minor = MBEDTLS_SSL_MINOR_VERSION_1};
    expect_refused(&o, MBEDTLS_ERR_SSL_BAD_HS_PROTOCOL_VERSION);
}

static void test_refuse_cbc(void **state)
{
    (void)state;
    static const int cbc[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
                              MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384,
                              MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
                              MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, 0};
    struct client_opts o = {.host = "localhost", .suites = cbc};
    expect_refused(&o, MBEDTLS_ERR_SSL_NO_CIPHER_CHOSEN);
}

static void test_refuse_static_rsa_and_ccm(void **state)
{
    (void)state;
    static const int other[] = {MBEDTLS_TLS_RSA_WITH_AES_128_GCM_SHA256,
                                MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
                                MBEDTLS_TLS_DHE_RSA_WITH_AES_128_GCM_SHA256, 0};
    struct client_opts o = {.host = "localhost", .suites = other};
    expect_refused(&o, MBEDTLS_ERR_SSL_NO_CIPHER_CHOSEN);
}

static void put16(struct buf *b, unsigned v)
{
    unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    assert_int_equal(buf_append(b, x, 2), 0);
}

/*
 * A ClientHello as a TLS 1.3-only client sends it (RFC 8446 section 4.1.2):
 * legacy_version 1.2, supported_versions, and either only TLS 1.3 suites or
 * (a client that also speaks 1.2) one 1.2 suite more.
 */
static void client_hello_13(struct buf *rec, bool also12)
{
    struct buf ext = BUF_INIT, body = BUF_INIT;
    put16(&ext, 0x0000); /* server_name: localhost */
    put16(&ext, 14);
    put16(&ext, 12);
    buf_append(&ext, "\0", 1);
    put16(&ext, 9);
    buf_append(&ext, "localhost", 9);
    put16(&ext, 0x002b); /* supported_versions */
    put16(&ext, also12 ? 5 : 3);
    buf_append(&ext, also12 ? "\x04\x03\x04\x03\x03" : "\x02\x03\x04", also12 ? 5 : 3);
    put16(&ext, 0x000a); /* supported_groups: x25519, secp256r1 */
    put16(&ext, 6);
    put16(&ext, 4);
    put16(&ext, 0x001d);
    put16(&ext, 0x0017);
    put16(&ext, 0x000d); /* signature_algorithms: ecdsa_secp256r1_sha256 */
    put16(&ext, 4);
    put16(&ext, 2);
    put16(&ext, 0x0403);
    put16(&ext, 0x0033); /* key_share: x25519 */
    put16(&ext, 38);
    put16(&ext, 36);
    put16(&ext, 0x001d);
    put16(&ext, 32);
    char share[32];
    fill(share, sizeof(share), 9);
    buf_append(&ext, share, sizeof(share));

    put16(&body, 0x0303); /* legacy_version */
    char random[32];
    fill(random, sizeof(random), 3);
    buf_append(&body, random, sizeof(random));
    buf_append(&body, "\0", 1); /* legacy_session_id */
    put16(&body, also12 ? 8 : 6);
    put16(&body, 0x1301); /* TLS_AES_128_GCM_SHA256 */
    put16(&body, 0x1302);
    put16(&body, 0x1303);
    if (also12)
        put16(&body, 0xc02b);         /* TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 */
    buf_append(&body, "\x01\x00", 2); /* compression: null */
    put16(&body, (unsigned)ext.len);
    buf_append_slice(&body, buf_slice(&ext));

    buf_append(rec, "\x16\x03\x01", 3);
    put16(rec, (unsigned)body.len + 4);
    unsigned char hs[4] = {1, 0, (unsigned char)(body.len >> 8), (unsigned char)body.len};
    buf_append(rec, hs, 4);
    buf_append_slice(rec, buf_slice(&body));
    buf_free(&ext);
    buf_free(&body);
}

static void test_refuse_tls13_only_client(void **state)
{
    (void)state;
    struct tls_server *s = std_server();
    struct tls_conn sc;
    struct buf hello = BUF_INIT;
    client_hello_13(&hello, false);
    assert_int_equal(tls_conn_init(&sc, s), 0);
    assert_int_equal(tls_conn_feed(&sc, buf_data(&hello), hello.len), 0);
    assert_int_equal(tls_conn_handshake(&sc), CH_ETLS);
    assert_int_equal(sc.last_error, MBEDTLS_ERR_SSL_NO_CIPHER_CHOSEN);
    /* A fatal handshake_failure alert (RFC 5246 section 7.2.2) is queued for the peer. */
    assert_int_equal(sc.out.len, 7);
    assert_memory_equal(buf_data(&sc.out), "\x15\x03\x03\x00\x02\x02\x28", 7);
    tls_conn_free(&sc);

    /* The same client also offering a TLS 1.2 suite gets a TLS 1.2 ServerHello. */
    buf_reset(&hello);
    client_hello_13(&hello, true);
    assert_int_equal(tls_conn_init(&sc, s), 0);
    assert_int_equal(tls_conn_feed(&sc, buf_data(&hello), hello.len), 0);
    assert_int_equal(tls_conn_handshake(&sc), CH_EAGAIN);
    assert_true(sc.out.len > 9);
    assert_memory_equal(buf_data(&sc.out), "\x16\x03\x03", 3);
    assert_int_equal((unsigned char)buf_data(&sc.out)[5], 2);  /* ServerHello */
    assert_memory_equal(buf_data(&sc.out) + 9, "\x03\x03", 2); /* server_version 1.2 */
    assert_string_equal(tls_conn_sni(&sc), "localhost");
    tls_conn_free(&sc);
    buf_free(&hello);
    tls_server_unref(s);
}

static void test_refuse_plain_http(void **state)
{
    (void)state;
    struct tls_server *s = std_server();
    struct tls_conn sc;
    static const char req[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_int_equal(tls_conn_init(&sc, s), 0);
    assert_int_equal(tls_conn_feed(&sc, req, sizeof(req) - 1), 0);
    assert_int_equal(tls_conn_handshake(&sc), CH_ETLS);
    assert_int_not_equal(sc.last_error, 0);
    tls_conn_free(&sc);
    tls_server_unref(s);
}

/* ------------------------------------------------------------------------------------------ */
/* Application data and closing */

static struct tls_server *data_server;
static struct tls_conn data_sc;
static struct client data_cl;

static int data_setup(void **state)
{
    (void)state;
    data_server = std_server();
    struct client_opts o = {.host = "localhost"};
    struct hs r = connect_to(data_server, &data_sc, &data_cl, &o, 0);
    return r.srv == 0 && r.cli == 0 ? 0 : -1;
}

static int data_teardown(void **state)
{
    (void)state;
    client_free(&data_cl);
    tls_conn_free(&data_sc);
    tls_server_unref(data_server);
    return 0;
}

/* Everything the client can read now, appended to got. Returns the last mbedTLS result. */
static int client_read_all(struct client *cl, struct buf *got)
{
    for (int i = 0; i < 100000; i++) {
        assert_int_equal(buf_reserve(got, 16384), 0);
        int ret = mbedtls_ssl_read(&cl->ssl, (unsigned char *)buf_tail(got), buf_avail(got));
        if (ret <= 0)
            return ret;
        buf_commit(got, (size_t)ret);
    }
    fail_msg("client read does not end");
    return -1;
}

static void client_write_all(struct client *cl, const char *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        int ret = mbedtls_ssl_write(&cl->ssl, (const unsigned char *)p + done, n - done);
        assert_true(ret > 0);
        done += (size_t)ret;
    }
}

static void test_data_small_both_ways(void **state)
{
    (void)state;
    struct buf got = BUF_INIT, plain = BUF_INIT;
    assert_int_equal(tls_conn_write(&data_sc, "hello, client", 13), 0);
    assert_int_equal(tls_conn_write(&data_sc, "", 0), 0);
    move(&data_sc.out, &data_cl.in);
    assert_int_equal(client_read_all(&data_cl, &got), MBEDTLS_ERR_SSL_WANT_READ);
    assert_int_equal(got.len, 13);
    assert_memory_equal(buf_data(&got), "hello, client", 13);

    client_write_all(&data_cl, "hello, server", 13);
    client_write_all(&data_cl, "!", 1);
    assert_int_equal(tls_conn_feed(&data_sc, buf_data(&data_cl.out), data_cl.out.len), 0);
    buf_reset(&data_cl.out);
    assert_int_equal(tls_conn_read(&data_sc, &plain), 0);
    assert_int_equal(plain.len, 14);
    assert_memory_equal(buf_data(&plain), "hello, server!", 14);
    assert_int_equal(data_sc.in.len, 0);
    /* Nothing more: 0 again, nothing appended, nothing sent. */
    assert_int_equal(tls_conn_read(&data_sc, &plain), 0);
    assert_int_equal(plain.len, 14);
    assert_int_equal(data_sc.out.len, 0);
    buf_free(&got);
    buf_free(&plain);
}

static void test_data_one_mib_to_client(void **state)
{
    (void)state;
    const size_t n = 1024 * 1024;
    char *data = malloc(n);
    assert_non_null(data);
    fill(data, n, 1);
    struct buf got = BUF_INIT;
    assert_int_equal(tls_conn_write(&data_sc, data, n), 0);
    /* 64 full records, each with a 5-byte header and a 16-byte tag (ChaCha20-Poly1305, RFC 7905).
     */
    assert_int_equal(data_sc.out.len, n + 64 * 21);
    move(&data_sc.out, &data_cl.in);
    assert_int_equal(client_read_all(&data_cl, &got), MBEDTLS_ERR_SSL_WANT_READ);
    assert_int_equal(got.len, n);
    assert_memory_equal(buf_data(&got), data, n);
    buf_free(&got);
    free(data);
}

static void test_data_one_mib_to_server(void **state)
{
    (void)state;
    const size_t n = 1024 * 1024 + 7;
    char *data = malloc(n);
    assert_non_null(data);
    fill(data, n, 2);
    struct buf plain = BUF_INIT;
    client_write_all(&data_cl, data, n);
    /* As the socket delivers it: uneven pieces that split headers and records. */
    static const size_t pieces[] = {1, 2, 3, 4, 5, 6, 100, 1000, 16413, 65536, 3};
    size_t k = 0;
    while (data_cl.out.len > 0) {
        size_t take = pieces[k++ % ARRAY_LEN(pieces)];
        if (take > data_cl.out.len)
            take = data_cl.out.len;
        assert_int_equal(tls_conn_feed(&data_sc, buf_data(&data_cl.out), take), 0);
        buf_consume(&data_cl.out, take);
        assert_int_equal(tls_conn_read(&data_sc, &plain), 0);
        assert_int_equal(data_sc.in.len, 0); /* consumed: partial records wait inside mbedTLS */
    }
    assert_int_equal(plain.len, n);
    assert_memory_equal(buf_data(&plain), data, n);
    assert_int_equal(data_sc.out.len, 0);
    buf_free(&plain);
    free(data);
}

static void test_close_notify_from_client(void **state)
{
    (void)state;
    struct buf plain = BUF_INIT;
    /* Data and close_notify in one segment: the data is delivered, then EOF. */
    client_write_all(&data_cl, "last words", 10);
    assert_int_equal(mbedtls_ssl_close_notify(&data_cl.ssl), 0);
    assert_int_equal(tls_conn_feed(&data_sc, buf_data(&data_cl.out), data_cl.out.len), 0);
    buf_reset(&data_cl.out);
    assert_int_equal(tls_conn_read(&data_sc, &plain), CH_EEOF);
    assert_int_equal(plain.len, 10);
    assert_memory_equal(buf_data(&plain), "last words", 10);
    /* We answer with our own close_notify (RFC 5246 section 7.2.1). */
    tls_conn_close_notify(&data_sc);
    assert_true(data_sc.out.len > 0);
    move(&data_sc.out, &data_cl.in);
    struct buf got = BUF_INIT;
    assert_int_equal(client_read_all(&data_cl, &got), MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY);
    assert_int_equal(got.len, 0);
    buf_free(&got);
    buf_free(&plain);
}

static void test_close_notify_from_server(void **state)
{
    (void)state;
    struct tls_server *s = std_server();
    struct tls_conn sc;
    struct client cl;
    struct client_opts o = {.host = "localhost"};
    assert_ok(connect_to(s, &sc, &cl, &o, 0));
    assert_int_equal(tls_conn_write(&sc, "bye", 3), 0);
    tls_conn_close_notify(&sc);
    move(&sc.out, &cl.in);
    struct buf got = BUF_INIT;
    assert_int_equal(client_read_all(&cl, &got), MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY);
    assert_int_equal(got.len, 3);
    buf_free(&got);
    client_free(&cl);
    tls_conn_free(&sc);
    tls_server_unref(s);
}

static void test_corrupt_record(void **state)
{
    (void)state;
    struct tls_server *s = std_server();
    struct tls_conn sc;
    struct client cl;
    struct client_opts o = {.host = "localhost"};
    assert_ok(connect_to(s, &sc, &cl, &o, 0));
    client_write_all(&cl, "tampered", 8);
    buf_data(&cl.out)[cl.out.len - 1] ^= 1; /* flip a bit of the GCM tag */
    assert_int_equal(tls_conn_feed(&sc, buf_data(&cl.out), cl.out.len), 0);
    struct buf plain = BUF_INIT;
    assert_int_equal(tls_conn_read(&sc, &plain), CH_ETLS);
    assert_int_equal(plain.len, 0);
    assert_int_equal(sc.last_error, MBEDTLS_ERR_SSL_INVALID_MAC);
    buf_free(&plain);
    client_free(&cl);
    tls_conn_free(&sc);
    tls_server_unref(s);
}

/* ------------------------------------------------------------------------------------------ */
/* SNI */

static void sni_case(struct tls_server *s, const char *host, bool verify, const char *want_cert,
                     const char *want_sni, const int *suites)
{
    struct tls_conn sc;
    struct client cl;
    struct client_opts o = {.host = host, .no_verify = !verify, .suites = suites};
    assert_ok(connect_to(s, &sc, &cl, &o, 0));
    assert_peer_is(&cl, want_cert);
    if (want_sni)
        assert_string_equal(tls_conn_sni(&sc), want_sni);
    else
        assert_null(tls_conn_sni(&sc));
    client_free(&cl);
    tls_conn_free(&sc);
}

static void test_sni_alt_default_none(void **state)
{
    (void)state;
    struct tls_server *s = std_server();
    sni_case(s, "alt.localhost", true, "alt.crt", "alt.localhost", NULL);
    sni_case(s, "ALT.LocalHost", true, "alt.crt", "alt.localhost", NULL); /* RFC 4343 */
    sni_case(s, "hs.localhost", true, "server.crt", "hs.localhost", NULL);
    /* Unknown name: the default (first) certificate, and the name is still remembered. */
    sni_case(s, "unknown.example.org", false, "server.crt", "unknown.example.org", NULL);
    sni_case(s, "alt.localhost.", false, "server.crt", "alt.localhost.", NULL);
    sni_case(s, "x.alt.localhost", false, "server.crt", "x.alt.localhost", NULL);
    /* No SNI at all. */
    sni_case(s, NULL, false, "server.crt", NULL, NULL);
    tls_server_unref(s);
}

static void test_sni_wildcard_and_dual_keys(void **state)
{
    (void)state;
    static const char *const names[] = {"server.crt", "server.key", "alt.crt",
                                        "alt.key",    "rsa.crt",    "rsa.key"};
    static const int rsa_only[] = {MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, 0};
    struct tls_material *m = load(3, names);
    assert_int_equal(tls_material_count(m), 3);
    struct tls_server *s = NULL;
    assert_int_equal(tls_server_new(m, &s), 0);
    sni_case(s, "a.wild.localhost", false, "rsa.crt", "a.wild.localhost", NULL);
    sni_case(s, "A.Wild.LOCALHOST", false, "rsa.crt", "a.wild.localhost", NULL);
    sni_case(s, "wild.localhost", false, "server.crt", "wild.localhost", NULL);
    sni_case(s, "a.b.wild.localhost", false, "server.crt", "a.b.wild.localhost", NULL);
    sni_case(s, ".wild.localhost", false, "server.crt", ".wild.localhost", NULL);
    /* localhost is on an ECDSA and an RSA certificate: the suite decides. */
    sni_case(s, "localhost", true, "server.crt", "localhost", NULL);
    sni_case(s, "localhost", false, "rsa.crt", "localhost", rsa_only);
    /* alt.localhost has only an ECDSA certificate: an RSA-only client fails. */
    struct tls_conn sc;
    struct client cl;
    struct client_opts o = {.host = "alt.localhost", .no_verify = true, .suites = rsa_only};
    struct hs r = connect_to(s, &sc, &cl, &o, 0);
    assert_int_equal(r.srv, CH_ETLS);
    client_free(&cl);
    tls_conn_free(&sc);
    tls_server_unref(s);
    tls_material_unref(m);
}

/* An exact name beats a wildcard whatever the order (nginx's server_name rule). */
static void test_sni_exact_beats_wildcard(void **state)
{
    (void)state;
    static const char *const names[] = {"server.crt", "server.key", "wild.crt",
                                        "wild.key",   "alt.crt",    "alt.key"};
    struct tls_material *m = load(3, names);
    struct tls_server *s = NULL;
    assert_int_equal(tls_server_new(m, &s), 0);
    sni_case(s, "alt.localhost", true, "alt.crt", "alt.localhost", NULL);
    sni_case(s, "other.localhost", false, "wild.crt", "other.localhost", NULL);
    sni_case(s, "relay.localhost", true, "server.crt", "relay.localhost", NULL);
    sni_case(s, "localhost", true, "server.crt", "localhost", NULL);
    tls_server_unref(s);
    tls_material_unref(m);
}

static void test_sni_cn_without_san(void **state)
{
    (void)state;
    static const char *const names[] = {"server.crt", "server.key", "cn.crt", "cn.key"};
    struct tls_material *m = load(2, names);
    assert_int_equal(m->pairs[1].nnames, 1);
    assert_string_equal(m->pairs[1].names[0], "cn.localhost"); /* lowercased */
    assert_null(m->pairs[1].names[1]);
    /* The server certificate: SAN dNSNames only, the IP addresses are not host names. */
    assert_int_equal(m->pairs[0].nnames, 3);
    assert_string_equal(m->pairs[0].names[0], "localhost");
    assert_string_equal(m->pairs[0].names[1], "relay.localhost");
    assert_string_equal(m->pairs[0].names[2], "hs.localhost");
    struct tls_server *s = NULL;
    assert_int_equal(tls_server_new(m, &s), 0);
    sni_case(s, "cn.localhost", false, "cn.crt", "cn.localhost", NULL);
    tls_server_unref(s);
    tls_material_unref(m);
}

static void test_name_match(void **state)
{
    (void)state;
    static const struct {
        const char *pattern, *name;
        bool match;
    } cases[] = {
        {"example.org", "example.org", true},
        {"example.org", "EXAMPLE.org", true},
        {"example.org", "example.org.", false},
        {"example.org", "xexample.org", false},
        {"example.org", "example.or", false},
        {"*.example.org", "a.example.org", true},
        {"*.example.org", "A.Example.ORG", true},
        {"*.example.org", "example.org", false},
        {"*.example.org", ".example.org", false},
        {"*.example.org", "a.b.example.org", false},
        {"*.example.org", "aexample.org", false},
        {"*.example.org", "a.example.org.evil", false},
        {"*", "a", false},
        {"*.", "a.", false},
        {"a*.example.org", "ab.example.org", false}, /* partial wildcards: not supported */
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        bool got = name_match(cases[i].pattern, cases[i].name, strlen(cases[i].name));
        if (got != cases[i].match)
            fail_msg("name_match(%s, %s) = %d", cases[i].pattern, cases[i].name, got);
    }
    assert_false(name_ok((const unsigned char *)"a\0b", 3));
    assert_false(name_ok((const unsigned char *)"a b", 3));
    assert_false(name_ok((const unsigned char *)"", 0));
    assert_true(name_ok((const unsigned char *)"a-b.example", 11));
}

/* ------------------------------------------------------------------------------------------ */
/* Session tickets */

/* A full handshake with s; returns the session the client keeps (with its ticket). */
static void get_ticket(struct tls_server *s, mbedtls_ssl_session *sess)
{
    struct tls_conn sc;
    struct client cl;
    struct client_opts o = {.host = "localhost"};
    assert_ok(connect_to(s, &sc, &cl, &o, 0));
    assert_false(tls_conn_resumed(&sc));
    mbedtls_ssl_session_init(sess);
    assert_int_equal(mbedtls_ssl_get_session(&cl.ssl, sess), 0);
    assert_true(sess->ticket_len > 0);
    client_free(&cl);
    tls_conn_free(&sc);
}

static bool try_resume(struct tls_server *s, const mbedtls_ssl_session *sess, size_t chunk)
{
    struct tls_conn sc;
    struct client cl;
    struct client_opts o = {.host = "localhost", .session = sess};
    assert_ok(connect_to(s, &sc, &cl, &o, chunk));
    bool resumed = tls_conn_resumed(&sc);
    /* The SNI callback runs on resumption too. */
    assert_string_equal(tls_conn_sni(&sc), "localhost");
    /* The resumed session carries data. */
    assert_int_equal(tls_conn_write(&sc, "resumed", 7), 0);
    move(&sc.out, &cl.in);
    unsigned char got[16];
    assert_int_equal(mbedtls_ssl_read(&cl.ssl, got, sizeof(got)), 7);
    client_free(&cl);
    tls_conn_free(&sc);
    return resumed;
}

static void test_ticket_resumes_on_other_worker(void **state)
{
    (void)state;
    struct tls_material *m = load(2, std_names);
    struct tls_server *w1 = NULL, *w2 = NULL;
    assert_int_equal(tls_server_new(m, &w1), 0);
    assert_int_equal(tls_server_new(m, &w2), 0);
    mbedtls_ssl_session sess;
    get_ticket(w1, &sess);
    assert_true(try_resume(w2, &sess, 0));
    assert_true(try_resume(w1, &sess, 0));
    assert_true(try_resume(w2, &sess, 1)); /* byte by byte */

    /* After a reload (new material, new server), the process-wide keys still accept it. */
    struct tls_material *m2 = load(2, std_names);
    struct tls_server *w3 = NULL;
    assert_int_equal(tls_server_new(m2, &w3), 0);
    assert_true(try_resume(w3, &sess, 0));

    /* A ticket that does not authenticate is ignored: a full handshake follows. */
    sess.ticket[sess.ticket_len / 2] ^= 0x40;
    assert_false(try_resume(w2, &sess, 0));
    mbedtls_ssl_session_free(&sess);
    tls_server_unref(w1);
    tls_server_unref(w2);
    tls_server_unref(w3);
    tls_material_unref(m);
    tls_material_unref(m2);
}

/* Two worker threads, each with its own server from the same material, handshaking at once. */
static void *worker_thread(void *arg)
{
    struct tls_material *m = arg;
    struct tls_server *s = NULL;
    if (tls_server_new(m, &s) != 0)
        return (void *)1;
    intptr_t bad = 0;
    for (int i = 0; i < 8; i++) {
        struct tls_conn sc;
        struct client cl;
        struct client_opts o = {.host = (i & 1) ? "alt.localhost" : "localhost"};
        struct hs r = connect_to(s, &sc, &cl, &o, 0);
        if (r.srv != 0 || r.cli != 0)
            bad++;
        client_free(&cl);
        tls_conn_free(&sc);
    }
    tls_server_unref(s);
    return (void *)bad;
}

static void test_workers_in_threads(void **state)
{
    (void)state;
    struct tls_material *m = load(2, std_names);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker_thread, m), 0);
    for (int i = 0; i < 2; i++) {
        void *bad = NULL;
        assert_int_equal(pthread_join(t[i], &bad), 0);
        assert_null(bad);
    }
    tls_material_unref(m);
}

/* A resumption whose client Finished and first request arrive in one segment (RFC 5077 3.1). */
static void test_resume_finished_and_data_together(void **state)
{
    (void)state;
    struct tls_server *s = std_server();
    mbedtls_ssl_session sess;
    get_ticket(s, &sess);
    struct tls_conn sc;
    struct client cl;
    struct client_opts o = {.host = "localhost", .session = &sess};
    assert_int_equal(tls_conn_init(&sc, s), 0);
    client_init(&cl, &o);
    assert_int_equal(mbedtls_ssl_handshake(&cl.ssl), MBEDTLS_ERR_SSL_WANT_READ);
    assert_int_equal(tls_conn_feed(&sc, buf_data(&cl.out), cl.out.len), 0);
    buf_reset(&cl.out);
    assert_int_equal(tls_conn_handshake(&sc), CH_EAGAIN);
    move(&sc.out, &cl.in);
    assert_int_equal(mbedtls_ssl_handshake(&cl.ssl), 0); /* abbreviated: the client is done */
    client_write_all(&cl, "GET / HTTP/1.1\r\n\r\n", 18);
    assert_int_equal(tls_conn_feed(&sc, buf_data(&cl.out), cl.out.len), 0);
    buf_reset(&cl.out);
    assert_int_equal(tls_conn_handshake(&sc), 0);
    assert_true(tls_conn_resumed(&sc));
    struct buf plain = BUF_INIT;
    assert_int_equal(tls_conn_read(&sc, &plain), 0);
    assert_int_equal(plain.len, 18);
    assert_memory_equal(buf_data(&plain), "GET / HTTP/1.1\r\n\r\n", 18);
    buf_free(&plain);
    mbedtls_ssl_session_free(&sess);
    client_free(&cl);
    tls_conn_free(&sc);
    tls_server_unref(s);
}

/* ------------------------------------------------------------------------------------------ */
/* Interoperability: OpenSSL's s_client against a tls_conn on a loopback socket */

struct interop {
    int lfd;
    struct tls_server *s;
    int hs;  /* last tls_conn_handshake() result */
    int end; /* CH_EEOF (close_notify), CH_ETLS, CH_EIO (socket closed), CH_ETIMEOUT */
    bool resumed;
    char sni[256];
    char cipher[64];
    struct buf plain;
};

static bool write_all(int fd, struct buf *b)
{
    while (b->len > 0) {
        ssize_t w = write(fd, buf_data(b), b->len);
        if (w <= 0)
            return false;
        buf_consume(b, (size_t)w);
    }
    return true;
}

/* One connection: no cmocka assertions here (another thread); results go to *x. */
static void *interop_server(void *arg)
{
    struct interop *x = arg;
    struct pollfd p = {x->lfd, POLLIN, 0};
    x->end = CH_ETIMEOUT;
    x->hs = CH_EAGAIN;
    if (poll(&p, 1, 10000) != 1)
        return NULL;
    int fd = accept(x->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct tls_conn c;
    if (tls_conn_init(&c, x->s) != 0) {
        close(fd);
        return NULL;
    }
    for (int i = 0; i < 1000; i++) {
        p = (struct pollfd){fd, POLLIN, 0};
        if (poll(&p, 1, 10000) != 1)
            break;
        char b[16384];
        ssize_t r = read(fd, b, sizeof(b));
        if (r <= 0) {
            x->end = CH_EIO;
            break;
        }
        tls_conn_feed(&c, b, (size_t)r);
        int rc = 0;
        if (x->hs == CH_EAGAIN)
            x->hs = tls_conn_handshake(&c);
        if (x->hs == 0)
            rc = tls_conn_read(&c, &x->plain);
        if (rc == CH_EEOF)
            tls_conn_close_notify(&c);
        write_all(fd, &c.out);
        if (x->hs == CH_ETLS || rc < 0) {
            x->end = x->hs == CH_ETLS ? CH_ETLS : rc;
            break;
        }
    }
    x->resumed = tls_conn_resumed(&c);
    snprintf(x->sni, sizeof(x->sni), "%s", tls_conn_sni(&c) ? tls_conn_sni(&c) : "");
    snprintf(x->cipher, sizeof(x->cipher), "%s", tls_conn_cipher(&c));
    tls_conn_free(&c);
    close(fd);
    return NULL;
}

/* Run `openssl s_client ARGS` (stdin "ping\n") against s; 0 if s_client exited 0. */
static int s_client(struct tls_server *s, struct interop *x, const char *args)
{
    memset(x, 0, sizeof(*x));
    x->s = s;
    x->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(x->lfd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(x->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(x->lfd, 4), 0);
    assert_int_equal(getsockname(x->lfd, (struct sockaddr *)&sin, &len), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, interop_server, x), 0);
    int rc = run("printf 'ping\\n' | timeout 20 openssl s_client -connect 127.0.0.1:%u "
                 "-CAfile '%s' -verify_return_error %s >'%s' 2>&1",
                 ntohs(sin.sin_port), path("ca.crt"), args, path("s_client.log"));
    assert_int_equal(pthread_join(t, NULL), 0);
    close(x->lfd);
    return rc;
}

static bool log_has(const char *needle)
{
    char text[65536];
    FILE *f = fopen(path("s_client.log"), "r");
    if (f == NULL)
        return false;
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    return strstr(text, needle) != NULL;
}

static void test_interop_openssl(void **state)
{
    (void)state;
    struct tls_material *m = load(2, std_names);
    struct tls_server *w1 = NULL, *w2 = NULL;
    assert_int_equal(tls_server_new(m, &w1), 0);
    assert_int_equal(tls_server_new(m, &w2), 0);
    struct interop x;
    char args[1024];

    /* Full handshake, chain and name verified by OpenSSL; the session saved for later. */
    snprintf(args, sizeof(args),
             "-servername alt.localhost -verify_hostname alt.localhost -sess_out '%s'",
             path("sess.pem"));
    assert_int_equal(s_client(w1, &x, args), 0);
    assert_int_equal(x.hs, 0);
    assert_int_equal(x.end, CH_EEOF);
    assert_false(x.resumed);
    assert_string_equal(x.sni, "alt.localhost");
    assert_true(x.plain.len == 5 && memcmp(buf_data(&x.plain), "ping\n", 5) == 0);
    assert_true(log_has("Verification: OK"));
    buf_free(&x.plain);

    /* Its ticket resumes on the other worker. */
    snprintf(args, sizeof(args), "-servername alt.localhost -sess_in '%s'", path("sess.pem"));
    assert_int_equal(s_client(w2, &x, args), 0);
    assert_int_equal(x.hs, 0);
    assert_true(x.resumed);
    assert_true(log_has("Reused, TLSv1.2"));
    buf_free(&x.plain);

    /* The IP address SANs verify, without SNI (RFC 6066: no SNI for IP literals). */
    assert_int_equal(s_client(w1, &x, "-noservername -verify_ip 127.0.0.1"), 0);
    assert_int_equal(x.hs, 0);
    assert_string_equal(x.sni, "");
    buf_free(&x.plain);

    /* OpenSSL's default offer gets our preference; AES-256-GCM when asked for only. */
    assert_string_equal(x.cipher, "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256");
    buf_free(&x.plain);
    assert_int_equal(
        s_client(w1, &x, "-servername localhost -cipher ECDHE-ECDSA-AES256-GCM-SHA384"), 0);
    assert_string_equal(x.cipher, "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384");
    buf_free(&x.plain);

    /* Refused: TLS 1.3 only, TLS 1.1, CBC only. */
    assert_int_not_equal(s_client(w1, &x, "-servername localhost -tls1_3"), 0);
    assert_int_equal(x.hs, CH_ETLS);
    buf_free(&x.plain);
    assert_int_not_equal(
        s_client(w1, &x, "-servername localhost -tls1_1 -cipher DEFAULT@SECLEVEL=0"), 0);
    assert_int_equal(x.hs, CH_ETLS);
    buf_free(&x.plain);
    assert_int_not_equal(
        s_client(w1, &x, "-servername localhost -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA256"), 0);
    assert_int_equal(x.hs, CH_ETLS);
    buf_free(&x.plain);

    tls_server_unref(w1);
    tls_server_unref(w2);
    tls_material_unref(m);
}

/* ------------------------------------------------------------------------------------------ */
/* Certificate material */

/* Diagnostics on stderr, captured while a test provokes them (and kept off the test output). */
static int capture_fd = -1, saved_stderr = -1;

static void capture_begin(void)
{
    char tmpl[] = "/tmp/chappe-tls-log-XXXXXX";
    capture_fd = mkstemp(tmpl);
    assert_true(capture_fd >= 0);
    unlink(tmpl);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(capture_fd, STDERR_FILENO) >= 0);
}

static void capture_end(struct buf *out)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    char tmp[8192];
    ssize_t r = pread(capture_fd, tmp, sizeof(tmp), 0);
    close(capture_fd);
    capture_fd = saved_stderr = -1;
    if (r > 0 && out != NULL)
        assert_int_equal(buf_append(out, tmp, (size_t)r), 0);
}

static int load_err(size_t n, const char *const *names, struct buf *err)
{
    struct certs cs;
    struct tls_material *m = (struct tls_material *)&cs; /* must be reset to NULL */
    certs_set(&cs, n, names);
    int rc = tls_material_load(&cs.cfg, &m, err);
    assert_null(m);
    return rc;
}

static void assert_err_has(const struct buf *err, const char *needle)
{
    char *s = strndup(err->base ? buf_data(err) : "", err->len);
    assert_non_null(s);
    if (strstr(s, needle) == NULL)
        fail_msg("error text has no \"%s\":\n%s", needle, s);
    free(s);
}

static size_t count_lines(const struct buf *err)
{
    size_t n = 0;
    for (size_t i = 0; i < err->len; i++)
        n += buf_data(err)[i] == '\n';
    return n;
}

static void write_file(const char *name, const char *text, mode_t mode)
{
    int fd = open(path(name), O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    chmod(path(name), mode);
}

static void test_material_missing_file(void **state)
{
    (void)state;
    struct buf err = BUF_INIT;
    static const char *const names[] = {"nope.crt", "server.key"};
    assert_int_equal(load_err(1, names, &err), CH_EIO);
    char line[512];
    snprintf(line, sizeof(line), "cert %s: cannot open: No such file or directory\n",
             path("nope.crt"));
    assert_int_equal(err.len, strlen(line));
    assert_memory_equal(buf_data(&err), line, err.len);
    buf_reset(&err);
    static const char *const names2[] = {"server.crt", "nope.key"};
    assert_int_equal(load_err(1, names2, &err), CH_EIO);
    assert_err_has(&err, path("nope.key"));
    buf_free(&err);
}

static void test_material_key_mismatch(void **state)
{
    (void)state;
    struct buf err = BUF_INIT;
    static const char *const names[] = {"server.crt", "alt.key"};
    assert_int_equal(load_err(1, names, &err), CH_EINVAL);
    assert_err_has(&err, path("server.crt"));
    assert_err_has(&err, path("alt.key"));
    assert_err_has(&err, "does not match");
    assert_int_equal(count_lines(&err), 1);
    buf_free(&err);
}

static void test_material_garbage(void **state)
{
    (void)state;
    struct buf err = BUF_INIT;
    write_file("garbage.pem",
               "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n"
               "-----END CERTIFICATE-----\n",
               0600);
    write_file("text.pem", "hello\n", 0600);
    write_file("empty.pem", "", 0600);
    static const char *const bad_cert[] = {"garbage.pem", "server.key"};
    assert_int_equal(load_err(1, bad_cert, &err), CH_EINVAL);
    assert_err_has(&err, path("garbage.pem"));
    assert_err_has(&err, "no certificate could be parsed");
    buf_reset(&err);
    static const char *const bad_key[] = {"server.crt", "text.pem"};
    assert_int_equal(load_err(1, bad_key, &err), CH_EINVAL);
    assert_err_has(&err, path("text.pem"));
    assert_err_has(&err, "private key could not be parsed");
    buf_reset(&err);
    static const char *const empty[] = {"empty.pem", "server.key"};
    assert_int_equal(load_err(1, empty, &err), CH_EINVAL);
    assert_err_has(&err, "empty file");
    buf_reset(&err);
    /* A key where the certificate should be, and a directory. */
    static const char *const swapped[] = {"server.key", "server.crt"};
    struct buf log = BUF_INIT;
    capture_begin();
    assert_int_equal(load_err(1, swapped, &err), CH_EINVAL);
    capture_end(&log);
    assert_err_has(&err, path("server.key"));
    assert_err_has(&log, "readable by group or others"); /* server.crt, taken as the key */
    buf_free(&log);
    buf_reset(&err);
    static const char *const dir_entry[] = {".", "server.key"};
    assert_int_equal(load_err(1, dir_entry, &err), CH_EINVAL);
    assert_err_has(&err, "not a regular file");
    buf_reset(&err);
    assert_int_equal(mkfifo(path("fifo"), 0600), 0); /* opening it must not block */
    static const char *const fifo[] = {"server.crt", "fifo"};
    assert_int_equal(load_err(1, fifo, &err), CH_EINVAL);
    assert_err_has(&err, path("fifo"));
    assert_err_has(&err, "not a regular file");
    buf_free(&err);
}

static void test_material_encrypted_key(void **state)
{
    (void)state;
    assert_int_equal(run("openssl pkey -in '%s' -aes-128-cbc -passout pass:secret -out '%s'",
                         path("server.key"), path("enc.key")),
                     0);
    struct buf err = BUF_INIT;
    static const char *const names[] = {"server.crt", "enc.key"};
    assert_int_equal(load_err(1, names, &err), CH_EINVAL);
    assert_err_has(&err, path("enc.key"));
    assert_err_has(&err, "encrypted");
    buf_free(&err);
}

static void test_material_all_errors_collected(void **state)
{
    (void)state;
    struct buf err = BUF_INIT;
    static const char *const names[] = {"server.crt", "server.key",  "server.crt",
                                        "alt.key",    "missing.crt", "missing.key"};
    /* One mismatch and two unreadable files: three lines, and CH_EIO wins. */
    assert_int_equal(load_err(3, names, &err), CH_EIO);
    assert_int_equal(count_lines(&err), 3);
    assert_err_has(&err, path("missing.crt"));
    assert_err_has(&err, path("missing.key"));
    assert_err_has(&err, "does not match");
    buf_free(&err);

    struct certs cs;
    struct tls_material *m = NULL;
    certs_set(&cs, 0, NULL);
    struct buf e2 = BUF_INIT;
    assert_int_equal(tls_material_load(&cs.cfg, &m, &e2), CH_EINVAL);
    assert_err_has(&e2, "tls.certificates is empty");
    buf_free(&e2);
}

/* Run a load with stderr captured into out (log_warn lines). */
static int load_capturing(size_t n, const char *const *names, struct buf *out)
{
    struct certs cs;
    struct tls_material *m = NULL;
    struct buf err = BUF_INIT;
    certs_set(&cs, n, names);
    capture_begin();
    int rc = tls_material_load(&cs.cfg, &m, &err);
    capture_end(out);
    tls_material_unref(m);
    buf_free(&err);
    return rc;
}

static void test_material_warnings(void **state)
{
    (void)state;
    struct buf log = BUF_INIT;
    /* Expired: a warning, not an error (the operator may be mid-renewal). */
    static const char *const expired[] = {"expired.crt", "expired.key"};
    assert_int_equal(load_capturing(1, expired, &log), 0);
    assert_err_has(&log, "expired on 2002-01-01");
    assert_err_has(&log, path("expired.crt"));
    buf_reset(&log);
    /* A key readable by others: a warning too. */
    assert_int_equal(run("cp '%s' '%s' && chmod 644 '%s'", path("server.key"), path("open.key"),
                         path("open.key")),
                     0);
    static const char *const open_key[] = {"server.crt", "open.key"};
    assert_int_equal(load_capturing(1, open_key, &log), 0);
    assert_err_has(&log, "readable by group or others (mode 644)");
    buf_reset(&log);
    /* The generated ones are clean. */
    assert_int_equal(load_capturing(2, std_names, &log), 0);
    assert_int_equal(log.len, 0);
    buf_free(&log);
}

static void test_material_refcount(void **state)
{
    (void)state;
    struct tls_material *m = load(2, std_names);
    tls_material_ref(m);
    tls_material_unref(m);
    struct tls_server *s = NULL;
    assert_int_equal(tls_server_new(m, &s), 0);
    tls_material_unref(m); /* the server's reference keeps it */
    tls_server_ref(s);
    struct tls_conn sc;
    struct client cl;
    struct client_opts o = {.host = "alt.localhost"};
    assert_ok(connect_to(s, &sc, &cl, &o, 0));
    tls_server_unref(s);
    tls_server_unref(s); /* the connection's reference keeps the server */
    assert_int_equal(tls_conn_write(&sc, "x", 1), 0);
    client_free(&cl);
    tls_conn_free(&sc);
    tls_material_unref(NULL);
    tls_server_unref(NULL);
}

static void test_server_needs_global(void **state)
{
    (void)state;
    struct tls_material *m = load(1, std_names);
    tls_global_free();
    struct tls_server *s = (struct tls_server *)m;
    struct buf log = BUF_INIT;
    capture_begin();
    assert_int_equal(tls_server_new(m, &s), CH_ETLS);
    capture_end(&log);
    assert_err_has(&log, "tls_global_init");
    buf_free(&log);
    assert_null(s);
    assert_int_equal(tls_global_init(), 0);
    assert_int_equal(tls_global_init(), 0); /* idempotent */
    tls_material_unref(m);
}

int main(void)
{
    log_set_level(LOG_WARN);
    const struct CMUnitTest handshakes[] = {
        cmocka_unit_test(test_full_handshake),
        cmocka_unit_test(test_handshake_byte_by_byte),
        cmocka_unit_test(test_empty_input_never_spins),
        cmocka_unit_test(test_curves),
        cmocka_unit_test(test_suites),
        cmocka_unit_test(test_refuse_tls11),
        cmocka_unit_test(test_refuse_tls10),
        cmocka_unit_test(test_refuse_cbc),
        cmocka_unit_test(test_refuse_static_rsa_and_ccm),
        cmocka_unit_test(test_refuse_tls13_only_client),
        cmocka_unit_test(test_refuse_plain_http),
        cmocka_unit_test_setup_teardown(test_data_small_both_ways, data_setup, data_teardown),
        cmocka_unit_test_setup_teardown(test_data_one_mib_to_client, data_setup, data_teardown),
        cmocka_unit_test_setup_teardown(test_data_one_mib_to_server, data_setup, data_teardown),
        cmocka_unit_test_setup_teardown(test_close_notify_from_client, data_setup, data_teardown),
        cmocka_unit_test(test_close_notify_from_server),
        cmocka_unit_test(test_corrupt_record),
        cmocka_unit_test(test_sni_alt_default_none),
        cmocka_unit_test(test_sni_wildcard_and_dual_keys),
        cmocka_unit_test(test_sni_exact_beats_wildcard),
        cmocka_unit_test(test_sni_cn_without_san),
        cmocka_unit_test(test_name_match),
        cmocka_unit_test(test_ticket_resumes_on_other_worker),
        cmocka_unit_test(test_workers_in_threads),
        cmocka_unit_test(test_resume_finished_and_data_together),
        cmocka_unit_test(test_interop_openssl),
        cmocka_unit_test(test_material_missing_file),
        cmocka_unit_test(test_material_key_mismatch),
        cmocka_unit_test(test_material_garbage),
        cmocka_unit_test(test_material_encrypted_key),
        cmocka_unit_test(test_material_all_errors_collected),
        cmocka_unit_test(test_material_warnings),
        cmocka_unit_test(test_material_refcount),
        cmocka_unit_test(test_server_needs_global),
    };
    return cmocka_run_group_tests(handshakes, group_setup, group_teardown);
}
