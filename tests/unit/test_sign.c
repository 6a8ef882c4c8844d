/* test_sign.c -- signing keys in Synapse's file format: generation and the key file. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "chappe/b64.h"
#include "chappe/sign.h"
#include "chappe/util.h"

/* "ed25519 a_XXXX <43 chars of unpadded base64 of a 32-byte seed>\n" */
static void check_line(const char *p, size_t n)
{
    assert_true(n > 8);
    assert_memory_equal(p, "ed25519 a_", 10);
    for (int i = 10; i < 14; i++)
        assert_true((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
                    (p[i] >= '0' && p[i] <= '9'));
    assert_int_equal(p[14], ' ');
    assert_int_equal(p[n - 1], '\n');
    struct buf seed = BUF_INIT;
    assert_int_equal(b64_decode(&seed, p + 15, n - 16), 0);
    assert_int_equal(seed.len, 32);
    buf_free(&seed);
}

static void test_keygen_format(void **state)
{
    (void)state;
    struct buf a = BUF_INIT, b = BUF_INIT;
    assert_int_equal(sign_keygen(&a), 0);
    assert_int_equal(sign_keygen(&b), 0);
    check_line(buf_data(&a), a.len);
    check_line(buf_data(&b), b.len);
    assert_false(a.len == b.len && memcmp(buf_data(&a), buf_data(&b), a.len) == 0);
    buf_free(&a);
    buf_free(&b);
}

static void test_keygen_file_mode_and_no_overwrite(void **state)
{
    (void)state;
    char dir[] = "/tmp/chappe-sign-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/relay.signing.key", dir);
    const char *why = NULL;
    assert_int_equal(sign_keygen_file(path, &why), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char line[128];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(line, 1, sizeof(line), f);
    fclose(f);
    check_line(line, n);
    /* A second keygen must not replace the key. */
    assert_int_equal(sign_keygen_file(path, &why), CH_EEXIST);
    assert_non_null(why);
    f = fopen(path, "r");
    char again[128];
    size_t m = fread(again, 1, sizeof(again), f);
    fclose(f);
    assert_int_equal(m, n);
    assert_memory_equal(again, line, n);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keygen_format),
        cmocka_unit_test(test_keygen_file_mode_and_no_overwrite),
    };
    return cmocka_run_group_tests_name("sign", tests, NULL, NULL);
}
