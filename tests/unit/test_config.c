/* test_config.c -- unit tests for the YAML configuration loader, its errors and its printer. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "chappe/buf.h"
#include "chappe/config.h"
#include "chappe/util.h"

/* A valid configuration in 9 lines; error cases append after it (their lines start at 10). */
#define HEAD      "server_name: relay.localhost\n"
#define LISTENERS "listeners:\n  - type: federation\n    bind: 127.0.0.1:8448\n"
#define CERTS     "tls:\n  certificates: [{cert: a.crt, key: a.key}]\n"
#define HS                                                                                         \
    "homeservers:\n  - server_name: hs.localhost\n"                                                \
    "    upstream: http://127.0.0.1:8008\n"
#define MINIMAL HEAD LISTENERS CERTS HS

static const char full_yaml[] =
    "# every key the schema knows\n"
    "server_name: Relay.LOCALHOST:8448\n"
    "signing_key_path: var/relay.signing.key\n"
    "workers: 3\n"
    "log_level: debug\n"
    "access_log: var/access.log\n"
    "listeners:\n"
    "  - type: federation\n"
    "    bind: [\"127.0.0.1:8448\", \"[::1]:8448\"]\n"
    "    tls: true\n"
    "  - { type: federation, bind: \"0.0.0.0:8008\", tls: false }\n"
    "tls:\n"
    "  certificates:\n"
    "    - { cert: certs/dev/server.crt, key: certs/dev/server.key }\n"
    "    - cert: certs/dev/other.crt\n"
    "      key: certs/dev/other.key\n"
    "  egress_ca: { cert: certs/dev/egress-ca.crt, key: certs/dev/egress-ca.key }\n"
    "homeservers:\n"
    "  - server_name: HS.localhost\n"
    "    upstream: http://127.0.0.1:8008\n"
    "    egress_secret_path: var/egress.secret\n"
    "  - server_name: \"[::1]:8449\"\n"
    "    upstream: http://[::1]:8009/\n"
    "limits:\n"
    "  max_header_bytes: 32KiB\n"
    "  max_body_bytes: 1MB\n"
    "  header_timeout: 11s\n"
    "  body_timeout: 61s\n"
    "  idle_timeout: 2m\n"
    "  tls_handshake_timeout: 1500ms\n"
    "  upstream_connect_timeout: 4s\n"
    "  upstream_timeout: 1h\n"
    "  upstream_idle_timeout: 31s\n"
    "  upstream_keepalive: 0\n"
    "  drain_timeout: 1d\n"
    "  max_connections: 1000000\n"
    "  outbound_connect_timeout: 3s\n"
    "  outbound_tls_timeout: 4s\n"
    "  outbound_timeout: 5s\n"
    "  outbound_idle_timeout: 6s\n"
    "  outbound_keepalive: 7\n"
    "  well_known_timeout: 8s\n"
    "  key_refetch_interval: 250ms\n"
    "federation_domain_whitelist: [Agent.Finances.Tchap.Gouv.Fr, \"*.TCHAP.gouv.fr\", "
    "\"hs.example:8448\", \"[2001:DB8::1]\"]\n"
    "sovereign_ranges: etc/sovereign-ranges.txt\n"
    "ip_range_blacklist: [\"10.0.0.0/8\", \"::ffff:192.168.0.0/112\", \"fc00::/7\"]\n"
    "ip_range_whitelist: []\n"
    "federation_verify_certificates: false\n"
    "federation_custom_ca_list: [certs/dev/ca.crt, /etc/extra-ca.pem]\n"
    "dns_servers: [\"127.0.0.1\", \"127.0.0.1:5353\", \"[::1]\", \"[::1]:53\"]\n";

/* Write text to a fresh file under /tmp; path receives its name. */
static void write_tmp(char *path, size_t cap, const char *text)
{
    snprintf(path, cap, "/tmp/chappe-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

/*
 * The policy keys are required. A text that does not mention them gets
 * permissive ones appended at its end, so that the lines it was written with
 * keep their numbers in the expected errors.
 */
#define POLICY_TAIL "federation_domain_whitelist: any\nsovereign_ranges: any\n"

/* Load text; returns the rc and leaves the NUL-terminated error text in errors. */
static int load_text(const char *text, struct config **cfg, struct buf *errors, char *path,
                     size_t cap)
{
    struct buf full = BUF_INIT;
    if (strstr(text, "federation_domain_whitelist") == NULL &&
        strstr(text, "sovereign_ranges") == NULL && strstr(text, "homeservers") != NULL) {
        buf_append_str(&full, text);
        if (full.len > 0 && buf_data(&full)[full.len - 1] != '\n')
            buf_append_str(&full, "\n");
        buf_append_str(&full, POLICY_TAIL);
        buf_append(&full, "", 1);
        text = buf_data(&full);
    }
    write_tmp(path, cap, text);
    buf_free(&full);
    int rc = config_load(path, cfg, errors);
    unlink(path);
    assert_int_equal(buf_append(errors, "", 1), 0);
    return rc;
}

static struct config *load_ok(const char *text)
{
    char path[64];
    struct buf errors = BUF_INIT;
    struct config *cfg = NULL;
    int rc = load_text(text, &cfg, &errors, path, sizeof(path));
    if (rc != 0)
        fail_msg("config_load failed (%d):\n%s", rc, buf_data(&errors));
    assert_non_null(cfg);
    assert_string_equal(buf_data(&errors), "");
    assert_string_equal(cfg->path, path);
    buf_free(&errors);
    return cfg;
}

/*
 * Load text and require exactly the expected errors: want holds lines
 * "LINE:COL: message\n" that get the temporary file's name in front.
 */
static void expect_errors(const char *text, const char *want)
{
    char path[64];
    struct buf errors = BUF_INIT, expected = BUF_INIT;
    struct config *cfg = (struct config *)&errors; /* must be reset to NULL */
    int rc = load_text(text, &cfg, &errors, path, sizeof(path));
    assert_int_equal(rc, CH_EINVAL);
    assert_null(cfg);
    for (const char *p = want; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
        buf_appendf(&expected, "%s:%.*s", path, (int)n, p);
        p += n;
    }
    buf_append(&expected, "", 1);
    assert_string_equal(buf_data(&errors), buf_data(&expected));
    buf_free(&errors);
    buf_free(&expected);
}

static void check_addr4(const struct cfg_addr *a, const char *ip, uint16_t port, const char *text)
{
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
    struct in_addr want;
    assert_int_equal(inet_pton(AF_INET, ip, &want), 1);
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(a->len, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(sin->sin_port), port);
    assert_memory_equal(&sin->sin_addr, &want, sizeof(want));
    assert_string_equal(a->text, text);
}

static void check_addr6(const struct cfg_addr *a, const char *ip, uint16_t port, const char *text)
{
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;
    struct in6_addr want;
    assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(a->len, sizeof(struct sockaddr_in6));
    assert_int_equal(ntohs(sin6->sin6_port), port);
    assert_memory_equal(&sin6->sin6_addr, &want, sizeof(want));
    assert_string_equal(a->text, text);
}

static void test_full_config(void **state)
{
    (void)state;
    struct config *cfg = load_ok(full_yaml);
    assert_string_equal(cfg->server_name, "relay.localhost:8448");
    assert_string_equal(cfg->signing_key_path, "var/relay.signing.key");
    assert_int_equal(cfg->workers, 3);
    assert_int_equal(cfg->log_level, LOG_DEBUG);
    assert_string_equal(cfg->access_log, "var/access.log");

    assert_int_equal(cfg->nlisteners, 2);
    assert_int_equal(cfg->listeners[0].type, LISTENER_FEDERATION);
    assert_true(cfg->listeners[0].tls);
    assert_int_equal(cfg->listeners[0].nbinds, 2);
    check_addr4(&cfg->listeners[0].binds[0], "127.0.0.1", 8448, "127.0.0.1:8448");
    check_addr6(&cfg->listeners[0].binds[1], "::1", 8448, "[::1]:8448");
    assert_false(cfg->listeners[1].tls);
    assert_int_equal(cfg->listeners[1].nbinds, 1);
    check_addr4(&cfg->listeners[1].binds[0], "0.0.0.0", 8008, "0.0.0.0:8008");
    assert_string_equal(config_listener_type_name(cfg->listeners[1].type), "federation");

    assert_int_equal(cfg->tls.ncertificates, 2);
    assert_string_equal(cfg->tls.certificates[0].cert, "certs/dev/server.crt");
    assert_string_equal(cfg->tls.certificates[0].key, "certs/dev/server.key");
    assert_string_equal(cfg->tls.certificates[1].cert, "certs/dev/other.crt");
    assert_string_equal(cfg->tls.certificates[1].key, "certs/dev/other.key");
    assert_true(cfg->tls.has_egress_ca);
    assert_string_equal(cfg->tls.egress_ca.cert, "certs/dev/egress-ca.crt");
    assert_string_equal(cfg->tls.egress_ca.key, "certs/dev/egress-ca.key");

    assert_int_equal(cfg->nhomeservers, 2);
    const struct cfg_homeserver *h = &cfg->homeservers[0];
    assert_string_equal(h->server_name, "hs.localhost");
    assert_string_equal(h->egress_secret_path, "var/egress.secret");
    assert_string_equal(h->upstream.url, "http://127.0.0.1:8008");
    assert_string_equal(h->upstream.host, "127.0.0.1");
    assert_int_equal(h->upstream.port, 8008);
    assert_string_equal(h->upstream.authority, "127.0.0.1:8008");
    assert_int_equal(h->upstream.addrlen, sizeof(struct sockaddr_in));
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&h->upstream.addr;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 8008);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), 0x7f000001);
    h = &cfg->homeservers[1];
    assert_string_equal(h->server_name, "[::1]:8449");
    assert_null(h->egress_secret_path);
    assert_string_equal(h->upstream.url, "http://[::1]:8009/");
    assert_string_equal(h->upstream.host, "::1");
    assert_int_equal(h->upstream.port, 8009);
    assert_string_equal(h->upstream.authority, "[::1]:8009");
    assert_int_equal(h->upstream.addrlen, sizeof(struct sockaddr_in6));
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&h->upstream.addr;
    assert_int_equal(sin6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(sin6->sin6_port), 8009);
    assert_true(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));

    const struct cfg_limits *l = &cfg->limits;
    assert_int_equal(l->max_header_bytes, 32768);
    assert_int_equal(l->max_body_bytes, 1000000);
    assert_int_equal(l->header_timeout_ms, 11000);
    assert_int_equal(l->body_timeout_ms, 61000);
    assert_int_equal(l->idle_timeout_ms, 120000);
    assert_int_equal(l->tls_handshake_timeout_ms, 1500);
    assert_int_equal(l->upstream_connect_timeout_ms, 4000);
    assert_int_equal(l->upstream_timeout_ms, 3600000);
    assert_int_equal(l->upstream_idle_timeout_ms, 31000);
    assert_int_equal(l->upstream_keepalive, 0);
    assert_int_equal(l->drain_timeout_ms, 86400000);
    assert_int_equal(l->max_connections, 1000000);

    assert_int_equal(cfg->limits.outbound_connect_timeout_ms, 3000);
    assert_int_equal(cfg->limits.outbound_tls_timeout_ms, 4000);
    assert_int_equal(cfg->limits.outbound_timeout_ms, 5000);
    assert_int_equal(cfg->limits.outbound_idle_timeout_ms, 6000);
    assert_int_equal(cfg->limits.outbound_keepalive, 7);
    assert_int_equal(cfg->limits.well_known_timeout_ms, 8000);
    assert_int_equal(cfg->limits.key_refetch_interval_ms, 250);
    assert_false(cfg->federation_any);
    assert_int_equal(cfg->nfederation_domain_whitelist, 4);
    assert_string_equal(cfg->federation_domain_whitelist[0].pattern,
                        "agent.finances.tchap.gouv.fr");
    assert_string_equal(cfg->federation_domain_whitelist[1].pattern, "*.tchap.gouv.fr");
    assert_string_equal(cfg->federation_domain_whitelist[2].pattern, "hs.example:8448");
    assert_string_equal(cfg->federation_domain_whitelist[3].pattern, "[2001:db8::1]");
    assert_non_null(strstr(cfg->federation_domain_whitelist[1].label, ":44:61"));
    assert_true(cfg->sovereign_ranges.present);
    assert_false(cfg->sovereign_ranges.any);
    assert_string_equal(cfg->sovereign_ranges.file, "etc/sovereign-ranges.txt");
    assert_int_equal(cfg->ip_range_blacklist.nitems, 3);
    char t[64];
    assert_string_equal(cidr_format(&cfg->ip_range_blacklist.items[1].cidr, t, sizeof(t)),
                        "192.168.0.0/16");
    assert_true(cfg->ip_range_whitelist.present);
    assert_int_equal(cfg->ip_range_whitelist.nitems, 0);
    assert_false(cfg->federation_verify_certificates);
    assert_int_equal(cfg->nfederation_custom_ca_list, 2);
    assert_string_equal(cfg->federation_custom_ca_list[1], "/etc/extra-ca.pem");
    assert_int_equal(cfg->ndns_servers, 4);
    assert_string_equal(cfg->dns_servers[0], "127.0.0.1:53");
    assert_string_equal(cfg->dns_servers[1], "127.0.0.1:5353");
    assert_string_equal(cfg->dns_servers[2], "[::1]:53");
    assert_string_equal(cfg->dns_servers[3], "[::1]:53");
    config_free(cfg);
}

static void test_defaults(void **state)
{
    (void)state;
    struct config *cfg = load_ok(MINIMAL);
    unsigned ncpu = util_ncpu();
    assert_string_equal(cfg->server_name, "relay.localhost");
    assert_null(cfg->signing_key_path);
    assert_int_equal(cfg->workers, ncpu > 64 ? 64 : ncpu);
    assert_int_equal(cfg->log_level, LOG_INFO);
    assert_string_equal(cfg->access_log, "-");
    assert_int_equal(cfg->nlisteners, 1);
    assert_true(cfg->listeners[0].tls); /* default for federation */
    check_addr4(&cfg->listeners[0].binds[0], "127.0.0.1", 8448, "127.0.0.1:8448");
    assert_int_equal(cfg->tls.ncertificates, 1);
    assert_false(cfg->tls.has_egress_ca);
    assert_null(cfg->tls.egress_ca.cert);
    assert_null(cfg->homeservers[0].egress_secret_path);

    const struct cfg_limits *l = &cfg->limits;
    assert_int_equal(l->max_header_bytes, 16384);
    assert_int_equal(l->max_body_bytes, 13107200);
    assert_int_equal(l->header_timeout_ms, 10000);
    assert_int_equal(l->body_timeout_ms, 60000);
    assert_int_equal(l->idle_timeout_ms, 60000);
    assert_int_equal(l->tls_handshake_timeout_ms, 10000);
    assert_int_equal(l->upstream_connect_timeout_ms, 5000);
    assert_int_equal(l->upstream_timeout_ms, 60000);
    assert_int_equal(l->upstream_idle_timeout_ms, 30000);
    assert_int_equal(l->upstream_keepalive, 128);
    assert_int_equal(l->drain_timeout_ms, 30000);
    assert_int_equal(l->max_connections, 10000);
    config_free(cfg);

    /* No tls section at all is fine when no listener uses TLS; an empty limits mapping too. */
    cfg = load_ok(HEAD "listeners: [{type: federation, bind: '[::]:8448', tls: false}]\n" HS
                       "limits: {}\n");
    assert_false(cfg->listeners[0].tls);
    check_addr6(&cfg->listeners[0].binds[0], "::", 8448, "[::]:8448");
    assert_int_equal(cfg->tls.ncertificates, 0);
    assert_null(cfg->tls.certificates);
    assert_int_equal(cfg->limits.max_connections, 10000);
    config_free(cfg);
}

static void round_trip(const char *yaml);

/* queue: the defaults, each key, and the errors (issue 6). */
static void test_queue_keys(void **state)
{
    (void)state;
    struct config *cfg = load_ok(MINIMAL);
    assert_string_equal(cfg->queue.path, "var/queue");
    assert_int_equal(cfg->queue.max_bytes, 1ull << 30);
    assert_int_equal(cfg->queue.max_bytes_per_destination, 256ull << 20);
    assert_int_equal(cfg->queue.map_size, (1ull << 30) + (256ull << 20) + (64ull << 20));
    assert_int_equal(cfg->queue.max_age_ms, 7ull * 86400000);
    assert_int_equal(cfg->queue.max_in_flight, 64);
    assert_int_equal(cfg->queue.retry_min_ms, 5000);
    assert_true(cfg->queue.retry_multiplier == 2.0);
    assert_int_equal(cfg->queue.retry_max_ms, 3600000);
    assert_true(cfg->queue.group_commit);
    config_free(cfg);

    cfg = load_ok(MINIMAL "queue:\n  path: /tmp/q\n  max_bytes: 100MiB\n  map_size: 1GiB\n"
                          "  max_age: 2d\n  max_in_flight: 8\n  group_commit: false\n"
                          "  retry: {min: 200ms, multiplier: 1.5, max: 10s}\n");
    assert_string_equal(cfg->queue.path, "/tmp/q");
    assert_int_equal(cfg->queue.max_bytes, 100ull << 20);
    assert_int_equal(cfg->queue.max_bytes_per_destination, 100ull << 20); /* capped */
    assert_int_equal(cfg->queue.map_size, 1ull << 30);
    assert_int_equal(cfg->queue.max_age_ms, 2ull * 86400000);
    assert_int_equal(cfg->queue.max_in_flight, 8);
    assert_int_equal(cfg->queue.retry_min_ms, 200);
    assert_true(cfg->queue.retry_multiplier == 1.5);
    assert_int_equal(cfg->queue.retry_max_ms, 10000);
    assert_false(cfg->queue.group_commit);
    config_free(cfg);
    round_trip(MINIMAL "queue: {max_bytes: 10MiB, retry: {multiplier: 3}}\n");

    expect_errors(MINIMAL "queue:\n  max_bytes: 1KiB\n",
                  "11:14: queue.max_bytes: must be between 64KiB and 16TiB, got '1KiB'\n");
    expect_errors(MINIMAL "queue:\n  max_bytes: 1MiB\n  max_bytes_per_destination: 2MiB\n",
                  "12:30: queue.max_bytes_per_destination: must not be above queue.max_bytes\n");
    expect_errors(MINIMAL "queue:\n  retry: {multiplier: 0.5}\n",
                  "11:23: queue.retry.multiplier: expected a number from 1 to 100, got '0.5'\n");
    expect_errors(MINIMAL "queue:\n  retry: {min: 10s, max: 1s}\n",
                  "11:26: queue.retry.max: must not be below queue.retry.min\n");
    expect_errors(MINIMAL "queue:\n  max_in_flight: 0\n",
                  "11:18: queue.max_in_flight: must be between 1 and 10000, got '0'\n");
    expect_errors(MINIMAL "queue:\n  retry: {jitter: 1}\n",
                  "11:11: unknown key 'jitter' in queue.retry\n");
}

static char *print_to_string(const struct config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    config_print(cfg, f);
    assert_int_equal(fclose(f), 0);
    return text;
}

/* load -> print -> load -> print gives the same text twice. */
static void round_trip(const char *yaml)
{
    struct config *a = load_ok(yaml);
    char *first = print_to_string(a);
    struct config *b = load_ok(first);
    char *second = print_to_string(b);
    assert_string_equal(first, second);
    free(first);
    free(second);
    config_free(a);
    config_free(b);
}

static void test_print_round_trip(void **state)
{
    (void)state;
    round_trip(full_yaml);
    round_trip(MINIMAL);
    /* Strings YAML would otherwise misread: quotes, backslashes, '#', ': ', leading '-'. */
    round_trip(HEAD LISTENERS CERTS HS "signing_key_path: \"we\\\"ird: #path\\\\x\"\n"
                                       "access_log: \"off\"\n"
                                       "log_level: error\n");

    struct config *cfg = load_ok(MINIMAL);
    char *text = print_to_string(cfg);
    assert_non_null(strstr(text, "server_name: \"relay.localhost\"\n"));
    assert_non_null(strstr(text, "access_log: \"-\"\n"));
    assert_non_null(strstr(text, "log_level: info\n"));
    assert_non_null(strstr(text, "    bind: [\"127.0.0.1:8448\"]\n    tls: true\n"));
    assert_non_null(strstr(text, "  max_header_bytes: 16KiB\n"));
    assert_non_null(strstr(text, "  max_body_bytes: 12800KiB\n"));
    assert_non_null(strstr(text, "  header_timeout: 10s\n"));
    assert_non_null(strstr(text, "  idle_timeout: 1m\n"));
    assert_non_null(strstr(text, "  upstream_keepalive: 128\n"));
    assert_null(strstr(text, "signing_key_path"));
    free(text);
    config_free(cfg);

    cfg = load_ok(HEAD LISTENERS CERTS HS "signing_key_path: \"we\\\"ird: #path\\\\x\"\n");
    assert_string_equal(cfg->signing_key_path, "we\"ird: #path\\x");
    text = print_to_string(cfg);
    assert_non_null(strstr(text, "signing_key_path: \"we\\\"ird: #path\\\\x\"\n"));
    free(text);
    config_free(cfg);
}

static void test_unknown_keys(void **state)
{
    (void)state;
    expect_errors(MINIMAL "foo: 1\n", "10:1: unknown key 'foo'\n");
    expect_errors(MINIMAL "limits:\n  foo: 1s\n", "11:3: unknown key 'foo' in limits\n");
    expect_errors(
        HEAD "listeners:\n  - type: federation\n    bind: 127.0.0.1:8448\n    port: 1\n" CERTS HS,
        "5:5: unknown key 'port' in listeners[0]\n");
    expect_errors(MINIMAL "    extra: x\n", "10:5: unknown key 'extra' in homeservers[0]\n");
    expect_errors(HEAD LISTENERS
                  "tls:\n  certificates: [{cert: a, key: b, chain: c}]\n  ca: x\n" HS,
                  "6:36: unknown key 'chain' in tls.certificates[0]\n"
                  "7:3: unknown key 'ca' in tls\n");
    /* Keys are case-sensitive; a non-scalar key is refused. */
    expect_errors(MINIMAL "Workers: 2\n", "10:1: unknown key 'Workers'\n");
    expect_errors(MINIMAL "? [a]\n: 1\n", "10:3: expected a plain key, got a sequence\n");
}

static void test_wrong_types(void **state)
{
    (void)state;
    expect_errors(MINIMAL "limits:\n  header_timeout: 10\n",
                  "11:19: limits.header_timeout: expected a duration like 10s, got '10'\n");
    expect_errors(MINIMAL "limits:\n  max_header_bytes: lots\n",
                  "11:21: limits.max_header_bytes: expected a size like 16KiB, got 'lots'\n");
    expect_errors(MINIMAL "limits:\n  upstream_keepalive: -1\n",
                  "11:23: limits.upstream_keepalive: expected an integer, got '-1'\n");
    expect_errors(MINIMAL "limits:\n  max_connections: \"10\"\n",
                  "11:20: limits.max_connections: expected an integer, got the quoted string "
                  "'10'\n");
    expect_errors(MINIMAL "limits: 5\n", "10:9: limits: expected a mapping, got '5'\n");
    expect_errors(MINIMAL "limits:\n", "10:8: limits: expected a mapping, got nothing\n");
    expect_errors(MINIMAL "workers: two\n", "10:10: workers: expected an integer, got 'two'\n");
    expect_errors(MINIMAL "workers: 2.0\n", "10:10: workers: expected an integer, got '2.0'\n");
    expect_errors(MINIMAL "signing_key_path: [a]\n",
                  "10:19: signing_key_path: expected a string, got a sequence\n");
    expect_errors(MINIMAL "signing_key_path:\n",
                  "10:18: signing_key_path: expected a string, got nothing\n");
    expect_errors(MINIMAL "access_log: \"\"\n", "10:13: access_log: must not be empty\n");
    expect_errors(MINIMAL "access_log: \"a\\0b\"\n",
                  "10:13: access_log: must not contain a NUL character\n");
    expect_errors(HEAD "listeners: {type: federation}\n" CERTS HS,
                  "2:12: listeners: expected a sequence of listeners, got a mapping\n");
    expect_errors(HEAD "listeners: []\n" CERTS HS, "2:12: listeners: must not be empty\n");
    expect_errors(HEAD "listeners: [federation]\n" CERTS HS,
                  "2:13: listeners[0]: expected a mapping, got 'federation'\n");
    expect_errors(HEAD "listeners: [{type: federation, bind: 127.0.0.1:1, tls: yes}]\n" CERTS HS,
                  "2:56: listeners[0].tls: expected true or false, got 'yes'\n");
    expect_errors(HEAD
                  "listeners: [{type: federation, bind: 127.0.0.1:1, tls: \"true\"}]\n" CERTS HS,
                  "2:56: listeners[0].tls: expected true or false, got the quoted string "
                  "'true'\n");
    expect_errors(HEAD "listeners: [{type: federation, bind: {a: 1}}]\n" CERTS HS,
                  "2:38: listeners[0].bind: expected a sequence of addresses, got a mapping\n");
    expect_errors(HEAD "listeners: [{type: federation, bind: [[1]]}]\n" CERTS HS,
                  "2:39: listeners[0].bind[0]: expected a string, got a sequence\n");
    expect_errors(HEAD LISTENERS "tls: [a]\n" HS, "5:6: tls: expected a mapping, got a sequence\n");
    expect_errors(HEAD LISTENERS "tls: {certificates: {cert: a, key: b}}\n" HS,
                  "5:21: tls.certificates: expected a sequence of {cert, key} mappings, got a "
                  "mapping\n");
    expect_errors(HEAD LISTENERS CERTS "homeservers: hs.localhost\n",
                  "7:14: homeservers: expected a sequence of homeservers, got "
                  "'hs.localhost'\n");
    expect_errors("[1, 2]\n", "1:1: expected a mapping at the top level, got a sequence\n");
    expect_errors("just a string\n",
                  "1:1: expected a mapping at the top level, got 'just a string'\n");
}

static void test_bad_values(void **state)
{
    (void)state;
    expect_errors(MINIMAL "workers: 0\n", "10:10: workers: must be between 1 and 64, got '0'\n");
    expect_errors(MINIMAL "workers: 65\n", "10:10: workers: must be between 1 and 64, got '65'\n");
    expect_errors(MINIMAL "workers: 99999999999999999999999\n",
                  "10:10: workers: must be between 1 and 64, got '99999999999999999999999'\n");
    expect_errors(MINIMAL "log_level: verbose\n",
                  "10:12: log_level: expected one of error, warn, info, debug, got 'verbose'\n");
    expect_errors(MINIMAL "limits:\n  header_timeout: 0s\n",
                  "11:19: limits.header_timeout: must be greater than 0\n");
    expect_errors(MINIMAL "limits:\n  drain_timeout: 0ms\n",
                  "11:18: limits.drain_timeout: must be greater than 0\n");
    expect_errors(MINIMAL "limits:\n  max_header_bytes: 1023\n",
                  "11:21: limits.max_header_bytes: must be between 1KiB and 1MiB, got '1023'\n");
    expect_errors(MINIMAL "limits:\n  max_header_bytes: 1MiB\n  max_header_bytes: 2MiB\n",
                  "12:3: duplicate key 'max_header_bytes' in limits\n");
    expect_errors(MINIMAL "limits:\n  max_header_bytes: 1025KiB\n",
                  "11:21: limits.max_header_bytes: must be between 1KiB and 1MiB, got "
                  "'1025KiB'\n");
    expect_errors(MINIMAL "limits:\n  max_body_bytes: 0\n",
                  "11:19: limits.max_body_bytes: must be at least 1, got '0'\n");
    expect_errors(MINIMAL "limits:\n  max_body_bytes: 18446744073709551616\n",
                  "11:19: limits.max_body_bytes: '18446744073709551616' is too large\n");
    expect_errors(MINIMAL "limits:\n  max_body_bytes: 16777216TiB\n",
                  "11:19: limits.max_body_bytes: '16777216TiB' is too large\n");
    expect_errors(MINIMAL "limits:\n  idle_timeout: 213503982335d\n",
                  "11:17: limits.idle_timeout: '213503982335d' is too large\n");
    expect_errors(MINIMAL "limits:\n  idle_timeout: 1.5s\n",
                  "11:17: limits.idle_timeout: expected a duration like 10s, got '1.5s'\n");
    expect_errors(MINIMAL "limits:\n  idle_timeout: \" 10s\"\n",
                  "11:17: limits.idle_timeout: expected a duration like 10s, got ' 10s'\n");
    expect_errors(MINIMAL "limits:\n  idle_timeout: 10 s\n",
                  "11:17: limits.idle_timeout: expected a duration like 10s, got '10 s'\n");
    expect_errors(MINIMAL "limits:\n  idle_timeout: -1s\n",
                  "11:17: limits.idle_timeout: expected a duration like 10s, got '-1s'\n");
    expect_errors(MINIMAL "limits:\n  upstream_keepalive: 100001\n",
                  "11:23: limits.upstream_keepalive: must be between 0 and 100000, got "
                  "'100001'\n");
    expect_errors(MINIMAL "limits:\n  max_connections: 0\n",
                  "11:20: limits.max_connections: must be between 1 and 1000000, got '0'\n");

    /* Values at the edges of their ranges are accepted. */
    struct config *cfg = load_ok(MINIMAL "workers: 64\nlimits:\n  max_header_bytes: 1KiB\n"
                                         "  max_connections: 1\n  upstream_keepalive: 100000\n"
                                         "  max_body_bytes: 1\n  header_timeout: 1ms\n");
    assert_int_equal(cfg->workers, 64);
    assert_int_equal(cfg->limits.max_header_bytes, 1024);
    assert_int_equal(cfg->limits.max_connections, 1);
    assert_int_equal(cfg->limits.upstream_keepalive, 100000);
    assert_int_equal(cfg->limits.max_body_bytes, 1);
    assert_int_equal(cfg->limits.header_timeout_ms, 1);
    config_free(cfg);
    cfg = load_ok(MINIMAL "workers: 1\nlimits: {max_header_bytes: 1MiB}\n");
    assert_int_equal(cfg->workers, 1);
    assert_int_equal(cfg->limits.max_header_bytes, 1048576);
    config_free(cfg);
}

static void test_missing_required(void **state)
{
    (void)state;
    expect_errors("log_level: info\n", "1:1: missing required key 'server_name'\n"
                                       "1:1: missing required key 'listeners'\n"
                                       "1:1: missing required key 'homeservers'\n"
                                       "1:1: missing required key 'federation_domain_whitelist'\n"
                                       "1:1: missing required key 'sovereign_ranges'\n");
    /* The policy is the operator's to write: no silent default for either key. */
    expect_errors(MINIMAL "federation_domain_whitelist: any\n",
                  "1:1: missing required key 'sovereign_ranges'\n");
    expect_errors(MINIMAL "sovereign_ranges: any\n",
                  "1:1: missing required key 'federation_domain_whitelist'\n");
    expect_errors("# comment\n\n" LISTENERS CERTS HS, "3:1: missing required key 'server_name'\n");
    expect_errors(HEAD "listeners:\n  - type: federation\n" CERTS HS,
                  "3:5: missing required key 'bind' in listeners[0]\n");
    expect_errors(HEAD "listeners: [{bind: 127.0.0.1:8448}]\n" CERTS HS,
                  "2:13: missing required key 'type' in listeners[0]\n");
    expect_errors(HEAD LISTENERS CERTS "homeservers:\n  - server_name: hs.localhost\n",
                  "8:5: missing required key 'upstream' in homeservers[0]\n");
    expect_errors(HEAD LISTENERS "tls:\n  certificates:\n    - cert: a.crt\n" HS,
                  "7:7: missing required key 'key' in tls.certificates[0]\n");
    expect_errors(HEAD LISTENERS CERTS "  egress_ca: {key: a.key}\n" HS,
                  "7:14: missing required key 'cert' in tls.egress_ca\n");
}

static void test_duplicate_keys(void **state)
{
    (void)state;
    expect_errors(MINIMAL "server_name: other.localhost\n", "10:1: duplicate key 'server_name'\n");
    expect_errors(HEAD
                  "listeners: [{type: federation, type: federation, bind: 127.0.0.1:1}]\n" CERTS HS,
                  "2:32: duplicate key 'type' in listeners[0]\n");
    /* Homeserver names are unique after lowercasing. */
    expect_errors(MINIMAL "  - server_name: HS.localhost\n    upstream: http://127.0.0.1:8009\n",
                  "10:18: homeservers[1].server_name: 'hs.localhost' is already listed as "
                  "homeservers[0]\n");
}

static void test_yaml_syntax_errors(void **state)
{
    (void)state;
    expect_errors(
        "server_name: [a, b\n",
        "2:1: did not find expected ',' or ']' (while parsing a flow sequence at 1:14)\n");
    expect_errors("server_name: a: b\n", "1:15: mapping values are not allowed in this context\n");
    expect_errors("server_name: a\n\tworkers: 2\n",
                  "2:1: found a tab character that violates indentation (while scanning a plain "
                  "scalar at 1:14)\n");
    expect_errors("listeners:\n  - a\n b: c\n",
                  "3:2: did not find expected key (while parsing a block mapping at 1:1)\n");
    expect_errors("server_name: \"abc\n",
                  "2:1: found unexpected end of stream (while scanning a quoted scalar at "
                  "1:14)\n");
    expect_errors("a: 1\n\x01: 2\n", "2:1: control characters are not allowed\n");
    expect_errors("a: \xff\n", "1:4: invalid leading UTF-8 octet\n");
}

static void test_empty(void **state)
{
    (void)state;
    expect_errors("", "1:1: empty configuration\n");
    expect_errors("# nothing but a comment\n\n", "1:1: empty configuration\n");
    expect_errors("---\n", "1:1: empty configuration\n");
    expect_errors("---\n...\n", "1:1: empty configuration\n");
    expect_errors("~\n", "1:1: empty configuration\n");
}

static void test_yaml_features_refused(void **state)
{
    (void)state;
    expect_errors(MINIMAL "signing_key_path: &k var/key\naccess_log: *k\n",
                  "10:19: anchors are not supported\n"
                  "11:13: aliases are not supported\n");
    expect_errors(MINIMAL "limits: &l {}\n", "10:9: anchors are not supported\n");
    /* An alias inside its own anchor would be a cycle: refused before any node is built. */
    expect_errors("a: &x [*x]\n", "1:4: anchors are not supported\n"
                                  "1:8: aliases are not supported\n");
    expect_errors(MINIMAL "workers: !!int 2\n", "10:10: tags are not supported\n");
    expect_errors(MINIMAL "---\nserver_name: x\n", "10:1: only one YAML document is allowed\n");
}

static void test_unreadable(void **state)
{
    (void)state;
    struct buf errors = BUF_INIT;
    struct config *cfg = (struct config *)&errors;
    assert_int_equal(config_load("/nonexistent/chappe.yaml", &cfg, &errors), CH_EIO);
    assert_null(cfg);
    buf_append(&errors, "", 1);
    assert_string_equal(buf_data(&errors),
                        "/nonexistent/chappe.yaml: cannot open: No such file or directory\n");
    buf_reset(&errors);

    assert_int_equal(config_load("/tmp", &cfg, &errors), CH_EIO);
    assert_null(cfg);
    buf_append(&errors, "", 1);
    assert_string_equal(buf_data(&errors), "/tmp: cannot read: Is a directory\n");
    buf_free(&errors);

    /* A NULL errors buffer is tolerated. */
    assert_int_equal(config_load("/nonexistent/chappe.yaml", &cfg, NULL), CH_EIO);
}

static void test_multiple_errors(void **state)
{
    (void)state;
    /* Every problem of the file in one run, in file order. */
    expect_errors("workers: 0\n"
                  "log_level: loud\n"
                  "listeners:\n"
                  "  - type: client\n"
                  "    bind: [\"127.0.0.1\", \"[::1]:8448\"]\n"
                  "  - type: federation\n"
                  "    bind: 10.0.0.1:99999\n"
                  "homeservers:\n"
                  "  - server_name: hs..localhost\n"
                  "    upstream: https://hs.localhost\n"
                  "limits:\n"
                  "  header_timeout: 10\n"
                  "  max_header_bytes: 2MiB\n"
                  "  bogus: 1\n",
                  "1:1: missing required key 'server_name'\n"
                  "1:10: workers: must be between 1 and 64, got '0'\n"
                  "2:12: log_level: expected one of error, warn, info, debug, got 'loud'\n"
                  "4:11: listeners[0].type: listener type 'client' is not supported by this "
                  "version of chappe\n"
                  "5:12: listeners[0].bind[0]: invalid address '127.0.0.1': missing :PORT\n"
                  "6:5: listeners[1]: listener uses TLS but tls.certificates is empty\n"
                  "7:11: listeners[1].bind: invalid address '10.0.0.1:99999': the port must be "
                  "a number from 1 to 65535\n"
                  "9:18: homeservers[0].server_name: invalid server name 'hs..localhost': empty "
                  "label in server name\n"
                  "10:15: homeservers[0].upstream: invalid upstream 'https://hs.localhost': "
                  "https upstreams are not supported yet: use http:// on a trusted network\n"
                  "12:19: limits.header_timeout: expected a duration like 10s, got '10'\n"
                  "13:21: limits.max_header_bytes: must be between 1KiB and 1MiB, got '2MiB'\n"
                  "14:3: unknown key 'bogus' in limits\n");
}

/* The report is bounded: a file with hundreds of problems gets the first 100 and a note. */
static void test_too_many_errors(void **state)
{
    (void)state;
    struct buf yaml = BUF_INIT;
    for (int i = 0; i < 300; i++)
        buf_appendf(&yaml, "k%d: 1\n", i);
    buf_append(&yaml, "", 1);
    char path[64];
    struct buf errors = BUF_INIT;
    struct config *cfg = NULL;
    assert_int_equal(load_text(buf_data(&yaml), &cfg, &errors, path, sizeof(path)), CH_EINVAL);
    size_t lines = 0;
    for (const char *p = buf_data(&errors); *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 101);
    char last[128];
    snprintf(last, sizeof(last), "%s: too many errors, stopped after 100\n", path);
    assert_non_null(strstr(buf_data(&errors), last));
    buf_free(&yaml);
    buf_free(&errors);
}

static void test_listener_types(void **state)
{
    (void)state;
    static const char *unsupported[] = {"client"};
    for (size_t i = 0; i < ARRAY_LEN(unsupported); i++) {
        char yaml[512], want[256];
        snprintf(yaml, sizeof(yaml), HEAD "listeners: [{type: %s, bind: 127.0.0.1:1}]\n" CERTS HS,
                 unsupported[i]);
        snprintf(want, sizeof(want),
                 "2:20: listeners[0].type: listener type '%s' is not supported by this version "
                 "of chappe\n",
                 unsupported[i]);
        expect_errors(yaml, want);
    }
    expect_errors(HEAD "listeners: [{type: Federation, bind: 127.0.0.1:1}]\n" CERTS HS,
                  "2:20: listeners[0].type: unknown listener type 'Federation' (this version "
                  "supports: federation, egress, admin)\n");
    expect_errors(HEAD "listeners: [{type: 1, bind: 127.0.0.1:1}]\n" CERTS HS,
                  "2:20: listeners[0].type: unknown listener type '1' (this version supports: "
                  "federation, egress, admin)\n");
    /* an egress listener: plain HTTP by default, and only */
    char path[64];
    struct buf errors = BUF_INIT;
    struct config *cfg = NULL;
    assert_int_equal(load_text(HEAD "listeners: [{type: egress, bind: 127.0.0.1:1}]\n" HS, &cfg,
                               &errors, path, sizeof(path)),
                     0);
    assert_int_equal(cfg->listeners[0].type, LISTENER_EGRESS);
    assert_false(cfg->listeners[0].tls);
    config_free(cfg);
    cfg = NULL;
    expect_errors(HEAD "listeners: [{type: egress, bind: 127.0.0.1:1, tls: true}]\n" CERTS HS,
                  "2:52: listeners[0].tls: an egress listener is plain HTTP (tls: false)\n");
    /* an admin listener: plain HTTP too; a token file only there */
    cfg = load_ok(HEAD "listeners: [{type: admin, bind: 127.0.0.1:1, token_path: t}]\n" HS);
    assert_int_equal(cfg->listeners[0].type, LISTENER_ADMIN);
    assert_false(cfg->listeners[0].tls);
    assert_string_equal(cfg->listeners[0].token_path, "t");
    config_free(cfg);
    expect_errors(HEAD "listeners: [{type: admin, bind: 127.0.0.1:1, tls: true}]\n" CERTS HS,
                  "2:51: listeners[0].tls: an admin listener is plain HTTP (tls: false)\n");
    expect_errors(HEAD "listeners: [{type: egress, bind: 127.0.0.1:1, token_path: t}]\n" HS,
                  "2:59: listeners[0].token_path: only an admin listener takes a token\n");
    buf_free(&errors);
    assert_string_equal(config_listener_type_name(LISTENER_EGRESS), "egress");
    assert_string_equal(config_listener_type_name(LISTENER_ADMIN), "admin");
    assert_string_equal(config_listener_type_name(LISTENER_CLIENT), "client");
    assert_string_equal(config_listener_type_name((enum listener_type)42), "?");
}

static void test_binds(void **state)
{
    (void)state;
    struct config *cfg = load_ok(HEAD "listeners:\n  - type: federation\n    bind:\n"
                                      "      - \"[::1]:8448\"\n"
                                      "      - \"[2001:DB8:0:0:0:0:0:1]:443\"\n"
                                      "      - \"[::ffff:127.0.0.1]:80\"\n"
                                      "      - 0.0.0.0:65535\n"
                                      "      - \"[0:0:0:0:0:0:0:1]:1\"\n" CERTS HS);
    const struct cfg_listener *l = &cfg->listeners[0];
    assert_int_equal(l->nbinds, 5);
    check_addr6(&l->binds[0], "::1", 8448, "[::1]:8448");
    check_addr6(&l->binds[1], "2001:db8::1", 443, "[2001:db8::1]:443");
    check_addr6(&l->binds[2], "::ffff:127.0.0.1", 80, "[::ffff:127.0.0.1]:80");
    check_addr4(&l->binds[3], "0.0.0.0", 65535, "0.0.0.0:65535");
    check_addr6(&l->binds[4], "::1", 1, "[::1]:1");
    config_free(cfg);

    static const struct {
        const char *bind, *why;
    } bad[] = {
        {"127.0.0.1", "missing :PORT"},
        {"[::1]", "missing :PORT"},
        {"[::1]8448", "missing :PORT"},
        {"127.0.0.1:", "the port must be a number from 1 to 65535"},
        {"127.0.0.1:0", "the port must be a number from 1 to 65535"},
        {"127.0.0.1:65536", "the port must be a number from 1 to 65535"},
        {"127.0.0.1:80x", "the port must be a number from 1 to 65535"},
        {"127.0.0.1:+80", "the port must be a number from 1 to 65535"},
        {"[::1]:0", "the port must be a number from 1 to 65535"},
        {"[::1]:", "the port must be a number from 1 to 65535"},
        {"localhost:8448", "expected a numeric IPv4 address or a bracketed IPv6 address"},
        {"127.1:8448", "expected a numeric IPv4 address or a bracketed IPv6 address"},
        {"127.0.0.01:8448", "expected a numeric IPv4 address or a bracketed IPv6 address"},
        {"256.0.0.1:8448", "expected a numeric IPv4 address or a bracketed IPv6 address"},
        {" 127.0.0.1:8448", "expected a numeric IPv4 address or a bracketed IPv6 address"},
        {"::1:8448", "an IPv6 address needs brackets, e.g. [::1]:8448"},
        {"[::1:8448", "invalid IPv6 address"},
        {"[fe80::1%lo]:8448", "invalid IPv6 address"},
        {"[127.0.0.1]:8448", "invalid IPv6 address"},
        {"[]:8448", "invalid IPv6 address"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char yaml[512], want[256];
        snprintf(yaml, sizeof(yaml),
                 HEAD "listeners:\n  - type: federation\n    bind: \"%s\"\n" CERTS HS, bad[i].bind);
        snprintf(want, sizeof(want), "4:11: listeners[0].bind: invalid address '%s': %s\n",
                 bad[i].bind, bad[i].why);
        expect_errors(yaml, want);
    }

    /* The same address twice, in one listener or across two, would split its accepts. */
    expect_errors(HEAD "listeners:\n  - {type: federation, bind: [\"[::1]:1\", \"[0::1]:1\"]}\n"
                       "  - {type: federation, bind: \"[::1]:2\"}\n"
                       "  - {type: federation, bind: \"[::1]:2\"}\n" CERTS HS,
                  "3:42: listeners[0].bind[1]: address [::1]:1 is listed twice\n"
                  "5:30: listeners[2].bind: address [::1]:2 is listed twice\n");
}

static void test_upstreams(void **state)
{
    (void)state;
    static const struct {
        const char *url, *host, *authority;
        uint16_t port;
        int family;
    } good[] = {
        {"http://127.0.0.1:8008", "127.0.0.1", "127.0.0.1:8008", 8008, AF_INET},
        {"http://127.0.0.1:8008/", "127.0.0.1", "127.0.0.1:8008", 8008, AF_INET},
        {"http://127.0.0.1", "127.0.0.1", "127.0.0.1:80", 80, AF_INET},
        {"http://127.0.0.1/", "127.0.0.1", "127.0.0.1:80", 80, AF_INET},
        {"HTTP://127.0.0.2:1", "127.0.0.2", "127.0.0.2:1", 1, AF_INET},
        {"http://[::1]:8008", "::1", "[::1]:8008", 8008, AF_INET6},
        {"http://[::1]", "::1", "[::1]:80", 80, AF_INET6},
        {"http://localhost:65535", "localhost", "localhost:65535", 65535, 0},
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        char yaml[512];
        snprintf(yaml, sizeof(yaml),
                 HEAD LISTENERS CERTS "homeservers:\n  - server_name: hs\n    upstream: \"%s\"\n",
                 good[i].url);
        struct config *cfg = load_ok(yaml);
        const struct cfg_upstream *u = &cfg->homeservers[0].upstream;
        assert_string_equal(u->url, good[i].url);
        assert_string_equal(u->host, good[i].host);
        assert_string_equal(u->authority, good[i].authority);
        assert_int_equal(u->port, good[i].port);
        const struct sockaddr *sa = (const struct sockaddr *)&u->addr;
        if (good[i].family != 0)
            assert_int_equal(sa->sa_family, good[i].family);
        if (sa->sa_family == AF_INET) {
            assert_int_equal(u->addrlen, sizeof(struct sockaddr_in));
            assert_int_equal(ntohs(((const struct sockaddr_in *)sa)->sin_port), good[i].port);
        } else {
            assert_int_equal(sa->sa_family, AF_INET6);
            assert_int_equal(u->addrlen, sizeof(struct sockaddr_in6));
            assert_int_equal(ntohs(((const struct sockaddr_in6 *)sa)->sin6_port), good[i].port);
        }
        config_free(cfg);
    }

    static const struct {
        const char *url, *why;
    } bad[] = {
        {"https://127.0.0.1:8448",
         "https upstreams are not supported yet: use http:// on a trusted network"},
        {"HTTPS://127.0.0.1", "https upstreams are not supported yet: use http:// on a trusted "
                              "network"},
        {"ftp://127.0.0.1", "unsupported scheme: use http://"},
        {"127.0.0.1:8008", "expected a URL like http://127.0.0.1:8008"},
        {"http:/127.0.0.1", "expected a URL like http://127.0.0.1:8008"},
        {"http://user:pw@127.0.0.1:8008", "user information (user@) is not allowed"},
        {"http://127.0.0.1:8008/_matrix", "a path is not allowed: the upstream is a server root"},
        {"http://127.0.0.1:8008//", "a path is not allowed: the upstream is a server root"},
        {"http://127.0.0.1:8008?a=b", "a query is not allowed"},
        {"http://127.0.0.1:8008/?a=b", "a query is not allowed"},
        {"http://127.0.0.1:8008#top", "a fragment is not allowed"},
        {"http://127.0.0.1:0", "the port must be a number from 1 to 65535"},
        {"http://127.0.0.1:65536", "the port must be a number from 1 to 65535"},
        {"http://127.0.0.1:", "the port must be a number from 1 to 65535"},
        {"http://127.0.0.1:http", "the port must be a number from 1 to 65535"},
        {"http://", "the host is empty"},
        {"http://:8008", "the host is empty"},
        {"http://[::1", "invalid IPv6 literal"},
        {"http://[::1%lo]:80", "invalid IPv6 literal"},
        {"http://[::1]x", "unexpected characters after the host"},
        {"http://::1:8008", "an IPv6 address needs brackets, e.g. http://[::1]:8008"},
        {"http://1::1:8008", "an IPv6 address needs brackets, e.g. http://[::1]:8008"},
        {"http://999.0.0.1", "invalid IPv4 address"},
        {"http://a..b", "empty label in the host name"},
        {"http://a_b", "the host may only hold letters, digits, '-' and '.'"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char yaml[512], want[512];
        snprintf(yaml, sizeof(yaml),
                 HEAD LISTENERS CERTS "homeservers:\n  - server_name: hs\n    upstream: \"%s\"\n",
                 bad[i].url);
        snprintf(want, sizeof(want), "9:15: homeservers[0].upstream: invalid upstream '%s': %s\n",
                 bad[i].url, bad[i].why);
        expect_errors(yaml, want);
    }

    /* A name that cannot resolve: a 64-byte label is refused by the resolver itself, offline. */
    char label[65], yaml[512], path[64], want[256];
    memset(label, 'a', 64);
    label[64] = '\0';
    snprintf(yaml, sizeof(yaml),
             HEAD LISTENERS CERTS
             "homeservers:\n  - server_name: hs\n    upstream: http://%s.invalid\n",
             label);
    struct buf errors = BUF_INIT;
    struct config *cfg = NULL;
    assert_int_equal(load_text(yaml, &cfg, &errors, path, sizeof(path)), CH_EINVAL);
    assert_null(cfg);
    snprintf(want, sizeof(want),
             "%s:9:15: homeservers[0].upstream: cannot resolve '%s.invalid': ", path, label);
    assert_memory_equal(buf_data(&errors), want, strlen(want));
    buf_free(&errors);
}

static void test_server_names(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } good[] = {
        {"Example.COM", "example.com"},
        {"example.com:8448", "example.com:8448"},
        {"localhost", "localhost"},
        {"1.2.3.4", "1.2.3.4"},
        {"1.2.3.4:1", "1.2.3.4:1"},
        {"[::1]", "[::1]"},
        {"[2001:DB8::1]:65535", "[2001:db8::1]:65535"},
        {"a-b.c", "a-b.c"},
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        char yaml[512];
        snprintf(yaml, sizeof(yaml), "server_name: \"%s\"\n" LISTENERS CERTS HS, good[i].in);
        struct config *cfg = load_ok(yaml);
        assert_string_equal(cfg->server_name, good[i].out);
        config_free(cfg);
    }

    /* labels of 63 bytes: the whole host may be 255 bytes, not 256 */
    char longname[300];
    memset(longname, 'a', 256);
    for (size_t i = 63; i < 256; i += 64)
        longname[i] = '.';
    longname[256] = '\0';
    static const struct {
        const char *in, *why;
    } bad[] = {
        {"bad name", "invalid character in server name"},
        {"ex..com", "empty label in server name"},
        {".example.com", "empty label in server name"},
        {"example.com.", "trailing dot in server name"},
        {"example.com:0", "port out of range"},
        {"example.com:65536", "port out of range"},
        {"example.com:", "empty port"},
        {"example.com:123456", "port out of range"},
        {":8448", "empty host in server name"},
        {"999.0.0.1", "invalid IPv4 address in server name"},
        {"123", "invalid IPv4 address in server name"},
        {"[::1", "missing ']' after IPv6 literal"},
        {"[xyz]", "invalid IPv6 literal"},
        {"[::1]x", "invalid character after IPv6 literal"},
        {"::1", "IPv6 literal must be in brackets"},
        {"fe80::1:8448", "IPv6 literal must be in brackets"},
        {"ex_ample.com", "invalid character in server name"},
        {"\xc3\xa9t\xc3\xa9.fr", "invalid character in server name"},
        {"a-b-.c", "label starts or ends with '-' in server name"},
        {"user@attacker.com@elysee.fr", "invalid character in server name"},
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        char yaml[512], want[512];
        snprintf(yaml, sizeof(yaml), "server_name: \"%s\"\n" LISTENERS CERTS HS, bad[i].in);
        snprintf(want, sizeof(want), "1:14: server_name: invalid server name '%s': %s\n", bad[i].in,
                 bad[i].why);
        expect_errors(yaml, want);
    }

    /* 255 bytes of host are fine, 256 are not (the quoted value is cut at 60 bytes). */
    char yaml[1024], want[512];
    longname[255] = '\0';
    snprintf(yaml, sizeof(yaml), "server_name: %s\n" LISTENERS CERTS HS, longname);
    struct config *cfg = load_ok(yaml);
    assert_int_equal(strlen(cfg->server_name), 255);
    config_free(cfg);
    longname[255] = 'a';
    snprintf(yaml, sizeof(yaml), "server_name: %s\n" LISTENERS CERTS HS, longname);
    snprintf(want, sizeof(want),
             "1:14: server_name: invalid server name '%.60s...': server name longer than 255 "
             "bytes\n",
             longname);
    expect_errors(yaml, want);

    /* The homeserver names follow the same grammar. */
    expect_errors(HEAD LISTENERS CERTS
                  "homeservers:\n  - server_name: \"hs:99999\"\n    upstream: http://[::1]\n",
                  "8:18: homeservers[0].server_name: invalid server name 'hs:99999': port out "
                  "of range\n");
}

static void test_tls_requires_certificates(void **state)
{
    (void)state;
    /* Federation listeners default to TLS: the error points at the listener. */
    expect_errors(HEAD LISTENERS HS,
                  "3:5: listeners[0]: listener uses TLS but tls.certificates is empty\n");
    /* An explicit tls: true: the error points at it. */
    expect_errors(HEAD "listeners:\n  - type: federation\n    bind: 127.0.0.1:8448\n"
                       "    tls: true\n"
                       "tls:\n  certificates: []\n" HS,
                  "5:10: listeners[0]: listener uses TLS but tls.certificates is empty\n");
    expect_errors(HEAD LISTENERS "tls: {}\n" HS,
                  "3:5: listeners[0]: listener uses TLS but tls.certificates is empty\n");
    expect_errors(HEAD LISTENERS "tls:\n  egress_ca: {cert: a, key: b}\n" HS,
                  "3:5: listeners[0]: listener uses TLS but tls.certificates is empty\n");
    /* A malformed certificate entry is reported once, without a second complaint. */
    expect_errors(HEAD LISTENERS "tls:\n  certificates: [{cert: a}]\n" HS,
                  "6:18: missing required key 'key' in tls.certificates[0]\n");

    struct config *cfg =
        load_ok(HEAD "listeners: [{type: federation, bind: 127.0.0.1:1, tls: false}]\n"
                     "tls: {certificates: []}\n" HS);
    assert_false(cfg->listeners[0].tls);
    assert_int_equal(cfg->tls.ncertificates, 0);
    config_free(cfg);
}

/* Synapse's old_signing_keys and the key document's refresh interval. */
static void test_old_signing_keys(void **state)
{
    (void)state;
    struct config *cfg = load_ok(MINIMAL "key_refresh_interval: 2h\n"
                                         "old_signing_keys:\n"
                                         "  \"ed25519:old_1\":\n"
                                         "    key: l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ\n"
                                         "    expired_ts: 1576767829750\n");
    assert_int_equal(cfg->key_refresh_interval_ms, 2 * 3600 * 1000);
    assert_int_equal(cfg->nold_signing_keys, 1);
    assert_string_equal(cfg->old_signing_keys[0].id, "ed25519:old_1");
    assert_string_equal(cfg->old_signing_keys[0].key,
                        "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ");
    assert_int_equal(cfg->old_signing_keys[0].expired_ts, 1576767829750ULL);
    config_free(cfg);
    cfg = load_ok(MINIMAL);
    assert_int_equal(cfg->key_refresh_interval_ms, 86400000);
    assert_int_equal(cfg->nold_signing_keys, 0);
    config_free(cfg);

    expect_errors(MINIMAL "old_signing_keys:\n  rsa:1: {key: AAAA, expired_ts: 1}\n",
                  "11:3: old_signing_keys: invalid key id 'rsa:1': expected ed25519:<version>, "
                  "version of [a-zA-Z0-9_]\n");
    expect_errors(MINIMAL "old_signing_keys:\n  \"ed25519:a\": {key: AAAA, expired_ts: 1}\n",
                  "11:22: old_signing_keys.ed25519:a.key: expected the unpadded base64 of a "
                  "32-byte ed25519 public key, got 'AAAA'\n");
    expect_errors(MINIMAL "old_signing_keys:\n  \"ed25519:a\": {key: "
                          "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ}\n",
                  "11:16: missing required key 'expired_ts' in old_signing_keys.ed25519:a\n");
    expect_errors(MINIMAL "key_refresh_interval: 0s\n",
                  "10:23: key_refresh_interval: must be greater than 0\n");
    expect_errors(MINIMAL "old_signing_keys: [a]\n",
                  "10:19: old_signing_keys: expected a mapping of key id to {key, expired_ts}, "
                  "got a sequence\n");
}

static void test_policy_keys(void **state)
{
    (void)state;
    /* the words */
    struct config *cfg = load_ok(MINIMAL "federation_domain_whitelist: any\n"
                                         "sovereign_ranges: any\n");
    assert_true(cfg->federation_any);
    assert_true(cfg->sovereign_ranges.any);
    assert_false(cfg->ip_range_blacklist.present);
    assert_true(cfg->federation_verify_certificates);
    assert_int_equal(cfg->ndns_servers, 0);
    assert_int_equal(cfg->limits.outbound_connect_timeout_ms, 10000);
    assert_int_equal(cfg->limits.well_known_timeout_ms, 10000);
    assert_int_equal(cfg->limits.key_refetch_interval_ms, 30000);
    assert_int_equal(cfg->limits.outbound_keepalive, 16);
    assert_string_equal(cfg->queue.path, "var/queue");
    char *text = print_to_string(cfg);
    assert_non_null(strstr(text, "federation_domain_whitelist: any\n"));
    assert_non_null(strstr(text, "sovereign_ranges: any\n"));
    /* an absent blacklist prints as the defaults it means */
    assert_non_null(strstr(text, "ip_range_blacklist: [\"127.0.0.0/8\", \"10.0.0.0/8\""));
    free(text);
    config_free(cfg);

    /* quoted, the word is still the word (not a list file named any) */
    cfg = load_ok(MINIMAL "federation_domain_whitelist: \"any\"\nsovereign_ranges: 'any'\n");
    assert_true(cfg->federation_any);
    assert_true(cfg->sovereign_ranges.any);
    assert_null(cfg->sovereign_ranges.file);
    config_free(cfg);

    /* a list of CIDRs keeps where each came from */
    cfg = load_ok(MINIMAL "federation_domain_whitelist: [a.example]\n"
                          "sovereign_ranges:\n  - 192.0.2.0/24\n  - \"2001:db8::/32\"\n");
    assert_int_equal(cfg->sovereign_ranges.nitems, 2);
    assert_int_equal(cfg->sovereign_ranges.items[1].cidr.family, 6);
    assert_non_null(strstr(cfg->sovereign_ranges.items[1].label, ":13:5"));
    config_free(cfg);

    cfg = load_ok(MINIMAL "federation_domain_whitelist: any\nsovereign_ranges: any\n"
                          "queue: {path: /srv/chappe/store}\n");
    assert_string_equal(cfg->queue.path, "/srv/chappe/store");
    config_free(cfg);
    expect_errors(MINIMAL "federation_domain_whitelist: any\nsovereign_ranges: any\n"
                          "queue: {path: x, max_size: 1GiB}\n",
                  "12:18: unknown key 'max_size' in queue\n");

    expect_errors(MINIMAL "federation_domain_whitelist: []\nsovereign_ranges: any\n",
                  "10:30: federation_domain_whitelist: must not be empty (list the servers to "
                  "federate with, or write any)\n");
    expect_errors(MINIMAL "federation_domain_whitelist: all\nsovereign_ranges: any\n",
                  "10:30: federation_domain_whitelist: expected a list of server names or the "
                  "word any, got 'all'\n");
    expect_errors(MINIMAL "federation_domain_whitelist: [\"*\", \"*example.org\", \"*.a:80\", "
                          "\"user@attacker.com@elysee.fr\", \"a..b\"]\n"
                          "sovereign_ranges: any\n",
                  "10:31: federation_domain_whitelist[0]: invalid wildcard '*': expected *.suffix "
                  "with a host name suffix (no port)\n"
                  "10:36: federation_domain_whitelist[1]: invalid wildcard '*example.org': "
                  "expected *.suffix with a host name suffix (no port)\n"
                  "10:52: federation_domain_whitelist[2]: invalid wildcard '*.a:80': expected "
                  "*.suffix with a host name suffix (no port)\n"
                  "10:62: federation_domain_whitelist[3]: invalid server name "
                  "'user@attacker.com@elysee.fr': invalid character in server name\n"
                  "10:93: federation_domain_whitelist[4]: invalid server name 'a..b': empty label "
                  "in server name\n");
    expect_errors(MINIMAL "federation_domain_whitelist: any\nsovereign_ranges: []\n",
                  "11:19: sovereign_ranges: must not be empty (list the sovereign ranges, or write "
                  "any to disable the check)\n");
    expect_errors(MINIMAL "federation_domain_whitelist: any\nsovereign_ranges: [10.1.0.0/8]\n"
                          "ip_range_blacklist: any\nip_range_whitelist: [\"::1/129\"]\n",
                  "11:20: sovereign_ranges[0]: invalid CIDR '10.1.0.0/8': host bits set (did you "
                  "mean 10.0.0.0/8?)\n"
                  "12:21: ip_range_blacklist: the word any is only meaningful for "
                  "sovereign_ranges\n"
                  "13:22: ip_range_whitelist[0]: invalid CIDR '::1/129': prefix length out of "
                  "range\n");
    expect_errors(MINIMAL "federation_domain_whitelist: any\nsovereign_ranges: any\n"
                          "dns_servers: [\"::1\", \"1.2.3.4:0\", localhost]\n"
                          "federation_verify_certificates: yes\n",
                  "12:15: dns_servers[0]: invalid DNS server '::1': an IPv6 address needs "
                  "brackets, e.g. [::1]:53\n"
                  "12:22: dns_servers[1]: invalid DNS server '1.2.3.4:0': the port must be a "
                  "number from 1 to 65535\n"
                  "12:35: dns_servers[2]: invalid DNS server 'localhost': expected a numeric IPv4 "
                  "address or a bracketed IPv6 address\n"
                  "13:33: federation_verify_certificates: expected true or false, got 'yes'\n");
}

static void test_key_trust(void **state)
{
    (void)state;
#define PK  "iojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1w"
#define POL "federation_domain_whitelist: any\nsovereign_ranges: any\n"
    struct config *cfg =
        load_ok(MINIMAL POL "pinned_keys:\n"
                            "  Agent.Finances.Tchap.Gouv.Fr: {\"ed25519:a_RXGa\": " PK "}\n"
                            "trusted_key_servers:\n"
                            "  - server_name: relay.interieur.gouv.fr\n"
                            "    verify_keys: {\"ed25519:auto\": " PK ", \"ed25519:b\": " PK "}\n");
    assert_int_equal(cfg->npinned_keys, 1);
    assert_string_equal(cfg->pinned_keys[0].server_name, "agent.finances.tchap.gouv.fr");
    assert_int_equal(cfg->pinned_keys[0].nkeys, 1);
    assert_string_equal(cfg->pinned_keys[0].keys[0].id, "ed25519:a_RXGa");
    assert_int_equal(cfg->pinned_keys[0].keys[0].pk[0], 0x8a);
    assert_non_null(strstr(cfg->pinned_keys[0].keys[0].label, ":13:34"));
    assert_int_equal(cfg->ntrusted_key_servers, 1);
    assert_string_equal(cfg->trusted_key_servers[0].server_name, "relay.interieur.gouv.fr");
    assert_int_equal(cfg->trusted_key_servers[0].nkeys, 2);
    assert_string_equal(cfg->trusted_key_servers[0].keys[1].id, "ed25519:b");
    char *text = print_to_string(cfg);
    assert_non_null(
        strstr(text, "  \"agent.finances.tchap.gouv.fr\":\n    ed25519:a_RXGa: \"" PK "\"\n"));
    free(text);
    config_free(cfg);
    round_trip(MINIMAL POL "pinned_keys: {a.example: {\"ed25519:x\": " PK "}}\n"
                           "trusted_key_servers: [{server_name: n.example, verify_keys: "
                           "{\"ed25519:y\": " PK "}}]\n");

    expect_errors(MINIMAL POL "pinned_keys:\n"
                              "  \"a..b\": {\"ed25519:x\": " PK "}\n"
                              "  c.example: {\"rsa:x\": " PK ", \"ed25519:y\": short}\n"
                              "  d.example: {}\n",
                  "13:3: pinned_keys: invalid server name 'a..b': empty label in server name\n"
                  "14:15: pinned_keys.c.example: invalid key id 'rsa:x': expected "
                  "ed25519:<version>, version of [a-zA-Z0-9_]\n"
                  "14:82: pinned_keys.c.example.ed25519:y: expected the unpadded base64 of a "
                  "32-byte ed25519 public key, got 'short'\n"
                  "15:14: pinned_keys.d.example: must not be empty\n");
    cfg = load_ok(MINIMAL POL "inbound_source_policy: enforce\n");
    assert_int_equal(cfg->inbound_source_policy, SOURCE_POLICY_ENFORCE);
    config_free(cfg);
    cfg = load_ok(MINIMAL POL);
    assert_int_equal(cfg->inbound_source_policy, SOURCE_POLICY_LOG);
    config_free(cfg);
    expect_errors(MINIMAL POL "inbound_source_policy: deny\n",
                  "12:24: inbound_source_policy: expected one of enforce, log, off, got 'deny'\n");
    /* a notary whose answers cannot be checked is not trusted */
    expect_errors(MINIMAL POL "trusted_key_servers:\n  - server_name: matrix.org\n",
                  "13:5: missing required key 'verify_keys' in trusted_key_servers[0]\n");
#undef PK
#undef POL
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_queue_keys),
        cmocka_unit_test(test_print_round_trip),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_yaml_syntax_errors),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_yaml_features_refused),
        cmocka_unit_test(test_unreadable),
        cmocka_unit_test(test_multiple_errors),
        cmocka_unit_test(test_too_many_errors),
        cmocka_unit_test(test_listener_types),
        cmocka_unit_test(test_binds),
        cmocka_unit_test(test_upstreams),
        cmocka_unit_test(test_server_names),
        cmocka_unit_test(test_tls_requires_certificates),
        cmocka_unit_test(test_old_signing_keys),
        cmocka_unit_test(test_policy_keys),
        cmocka_unit_test(test_key_trust),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
