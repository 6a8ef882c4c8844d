/* test_admin.c -- the admin listener's access decision (loopback or the listener's bearer token)
 * and the reading of its token files. */
/* SPDX-License-Identifier: ISC */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "chappe/admin.h"
#include "chappe/util.h"

#define TOKEN "s3cret-admin-token-0123456789"

static struct sockaddr_storage v4(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s = (struct sockaddr_in *)&ss;
    s->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &s->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage v6(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
    s->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, ip, &s->sin6_addr), 1);
    return ss;
}

static bool loopback4(const char *ip)
{
    struct sockaddr_storage ss = v4(ip);
    return admin_is_loopback((const struct sockaddr *)&ss);
}

static bool loopback6(const char *ip)
{
    struct sockaddr_storage ss = v6(ip);
    return admin_is_loopback((const struct sockaddr *)&ss);
}

static void test_loopback(void **state)
{
    (void)state;
    assert_true(loopback4("127.0.0.1"));
    assert_true(loopback4("127.255.3.9"));
    assert_false(loopback4("128.0.0.1"));
    assert_false(loopback4("126.255.255.255"));
    assert_false(loopback4("10.0.0.1"));
    assert_false(loopback4("0.0.0.0"));
    assert_true(loopback6("::1"));
    assert_false(loopback6("::2"));
    assert_false(loopback6("::"));
    assert_false(loopback6("fe80::1"));
    assert_true(loopback6("::ffff:127.0.0.1"));
    assert_true(loopback6("::ffff:127.9.8.7"));
    assert_false(loopback6("::ffff:10.0.0.1"));
    assert_false(loopback6("::127.0.0.1")); /* IPv4-compatible, deprecated: not loopback */
    struct sockaddr_storage none;
    memset(&none, 0, sizeof(none));
    none.ss_family = AF_UNSPEC;
    assert_false(admin_is_loopback((const struct sockaddr *)&none));
}

static void token_hash(const char *token, unsigned char h[crypto_generichash_BYTES])
{
    crypto_generichash(h, crypto_generichash_BYTES, (const unsigned char *)token, strlen(token),
                       NULL, 0);
}

static enum admin_access decide(const struct sockaddr_storage *peer, const char *auth,
                                const unsigned char *hash)
{
    struct slice a = auth ? slice_from_str(auth) : (struct slice){NULL, 0};
    return admin_peer_allowed((const struct sockaddr *)peer, auth ? &a : NULL, hash);
}

static void test_access_without_token_path(void **state)
{
    (void)state;
    struct sockaddr_storage lo = v4("127.0.0.1"), lo6 = v6("::1"), far = v4("192.0.2.7"),
                            far6 = v6("2001:db8::1"), mapped = v6("::ffff:192.0.2.7");
    assert_int_equal(decide(&lo, NULL, NULL), ADMIN_ACCESS_OK);
    assert_int_equal(decide(&lo6, NULL, NULL), ADMIN_ACCESS_OK);
    /* no token configured: the header is not looked at */
    assert_int_equal(decide(&lo, "Bearer anything", NULL), ADMIN_ACCESS_OK);
    assert_int_equal(decide(&far, NULL, NULL), ADMIN_ACCESS_FORBIDDEN);
    assert_int_equal(decide(&far6, NULL, NULL), ADMIN_ACCESS_FORBIDDEN);
    assert_int_equal(decide(&mapped, NULL, NULL), ADMIN_ACCESS_FORBIDDEN);
    assert_int_equal(decide(&far, "Bearer " TOKEN, NULL), ADMIN_ACCESS_FORBIDDEN);
    assert_int_equal(admin_peer_allowed(NULL, NULL, NULL), ADMIN_ACCESS_FORBIDDEN);
}

static void test_access_with_token(void **state)
{
    (void)state;
    unsigned char h[crypto_generichash_BYTES];
    token_hash(TOKEN, h);
    struct sockaddr_storage lo = v4("127.0.0.1"), far = v4("192.0.2.7"), far6 = v6("2001:db8::1");
    /* loopback: served without a token */
    assert_int_equal(decide(&lo, NULL, h), ADMIN_ACCESS_OK);
    /* elsewhere: the token is required */
    assert_int_equal(decide(&far, NULL, h), ADMIN_ACCESS_MISSING_TOKEN);
    assert_int_equal(decide(&far6, NULL, h), ADMIN_ACCESS_MISSING_TOKEN);
    assert_int_equal(decide(&far, "Bearer " TOKEN, h), ADMIN_ACCESS_OK);
    assert_int_equal(decide(&far6, "Bearer " TOKEN, h), ADMIN_ACCESS_OK);
    /* the scheme is case-insensitive; whitespace around the token is not part of it */
    assert_int_equal(decide(&far, "bEaReR   " TOKEN "  ", h), ADMIN_ACCESS_OK);
    /* a token presented must be the right one, from loopback too */
    const char *bad[] = {"Bearer " TOKEN "x", "Bearer s3cret", "Bearer",
                         "Bearer ",           "Basic " TOKEN,  TOKEN,
                         "Bearer x" TOKEN,    "BearerX" TOKEN, ""};
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        assert_int_equal(decide(&far, bad[i], h), ADMIN_ACCESS_BAD_TOKEN);
        assert_int_equal(decide(&lo, bad[i], h), ADMIN_ACCESS_BAD_TOKEN);
    }
}

/* --- token files --------------------------------------------------------------------------- */

struct files {
    char dir[64];
    char good[96], open[96], shortp[96], spaced[96];
};

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static int setup(void **state)
{
    struct files *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/chappe-admin-test-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->good, sizeof(f->good), "%s/good", f->dir);
    snprintf(f->open, sizeof(f->open), "%s/open", f->dir);
    snprintf(f->shortp, sizeof(f->shortp), "%s/short", f->dir);
    snprintf(f->spaced, sizeof(f->spaced), "%s/spaced", f->dir);
    write_file(f->good, TOKEN "\r\n", 0600);
    write_file(f->open, TOKEN "\n", 0644);
    write_file(f->shortp, "tooshort\n", 0600);
    write_file(f->spaced, "a token with spaces inside\n", 0400);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct files *f = *state;
    unlink(f->good);
    unlink(f->open);
    unlink(f->shortp);
    unlink(f->spaced);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void test_tokens_load(void **state)
{
    struct files *f = *state;
    struct cfg_listener ls[4];
    memset(ls, 0, sizeof(ls));
    ls[0].type = LISTENER_FEDERATION;
    ls[0].token_path = f->open; /* not an admin listener: never read */
    ls[1].type = LISTENER_ADMIN;
    ls[1].token_path = f->good;
    ls[2].type = LISTENER_ADMIN; /* no token_path */
    ls[3].type = LISTENER_EGRESS;
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.listeners = ls;
    cfg.nlisteners = 4;
    struct admin_tokens t;
    struct buf err = BUF_INIT;
    assert_int_equal(admin_tokens_load(&cfg, &t, &err), 0);
    assert_int_equal(err.len, 0);
    assert_int_equal(t.n, 4);
    assert_false(t.t[0].set);
    assert_true(t.t[1].set);
    assert_false(t.t[2].set);
    assert_false(t.t[3].set);
    unsigned char h[crypto_generichash_BYTES];
    token_hash(TOKEN, h); /* the line ending is not part of the token */
    assert_memory_equal(t.t[1].hash, h, sizeof(h));
    struct sockaddr_storage far = v4("198.51.100.1");
    assert_int_equal(decide(&far, "Bearer " TOKEN, t.t[1].hash), ADMIN_ACCESS_OK);
    admin_tokens_free(&t);
    assert_null(t.t);
    assert_int_equal(t.n, 0);
    admin_tokens_free(&t); /* twice is harmless */
}

static void expect_refused(const char *path, int code, const char *why)
{
    struct cfg_listener l;
    memset(&l, 0, sizeof(l));
    l.type = LISTENER_ADMIN;
    l.token_path = (char *)path;
    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.listeners = &l;
    cfg.nlisteners = 1;
    struct admin_tokens t;
    struct buf err = BUF_INIT;
    assert_int_equal(admin_tokens_load(&cfg, &t, &err), code);
    assert_null(t.t);
    assert_int_equal(buf_append(&err, "", 1), 0);
    assert_non_null(strstr(buf_data(&err), path));
    assert_non_null(strstr(buf_data(&err), why));
    assert_int_equal(buf_data(&err)[err.len - 2], '\n'); /* one line per problem */
    assert_null(strstr(buf_data(&err), TOKEN));          /* never the secret itself */
    buf_free(&err);
}

static void test_tokens_refused(void **state)
{
    struct files *f = *state;
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/missing", f->dir);
    expect_refused(f->open, CH_EPERM, f->open);
    expect_refused(f->shortp, CH_EINVAL, "shorter than 16 bytes");
    expect_refused(f->spaced, CH_EINVAL, "printable ASCII without spaces");
    expect_refused(missing, CH_ENOENT, missing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_access_without_token_path),
        cmocka_unit_test(test_access_with_token),
        cmocka_unit_test_setup_teardown(test_tokens_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokens_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
