/* test_b64.c -- unpadded base64 encode and strict decode. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "chappe/b64.h"
#include "chappe/util.h"

static void check_encode(const char *in, const char *want)
{
    struct buf b = BUF_INIT;
    assert_int_equal(b64_encode(&b, in, strlen(in)), 0);
    assert_int_equal(b.len, strlen(want));
    assert_memory_equal(buf_data(&b), want, b.len);
    assert_int_equal(b64_encoded_len(strlen(in)), strlen(want));
    buf_free(&b);
}

/* RFC 4648 section 10 vectors, without padding (Matrix appendices, "Unpadded Base64"). */
static void test_encode_rfc4648(void **state)
{
    (void)state;
    check_encode("", "");
    check_encode("f", "Zg");
    check_encode("fo", "Zm8");
    check_encode("foo", "Zm9v");
    check_encode("foob", "Zm9vYg");
    check_encode("fooba", "Zm9vYmE");
    check_encode("foobar", "Zm9vYmFy");
}

static int decode(const char *in, struct buf *out)
{
    buf_reset(out);
    return b64_decode(out, in, strlen(in));
}

static void test_decode_padded_and_unpadded(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    const char *ok[][2] = {{"Zg", "f"},    {"Zg==", "f"},      {"Zm8", "fo"},
                           {"Zm8=", "fo"}, {"Zm9v", "foo"},    {"Zm9vYmFy", "foobar"},
                           {"", ""},       {"+/8", "\xfb\xff"}};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(decode(ok[i][0], &b), 0);
        assert_int_equal(b.len, strlen(ok[i][1]));
        assert_memory_equal(buf_data(&b), ok[i][1], b.len);
    }
    buf_free(&b);
}

static void test_decode_rejects(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    const char *bad[] = {
        "Z",                      /* one char: no whole byte */
        "Zg=",                    /* wrong padding length */
        "Zg===",                  /* too much padding */
        "Zh",                     /* non-zero trailing bits */
        "Zm9v\n", "Zm 9v", "-_8", /* URL-safe alphabet */
        "Zm9=v",                  /* padding in the middle */
        "=Zm9",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(decode(bad[i], &b), CH_EINVAL);
    buf_free(&b);
}

static void test_roundtrip_all_lengths(void **state)
{
    (void)state;
    unsigned char data[64];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof(data); n++) {
        struct buf e = BUF_INIT, d = BUF_INIT;
        assert_int_equal(b64_encode(&e, data, n), 0);
        assert_int_equal(b64_decode(&d, buf_data(&e), e.len), 0);
        assert_int_equal(d.len, n);
        if (n)
            assert_memory_equal(buf_data(&d), data, n);
        buf_free(&e);
        buf_free(&d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_rfc4648),
        cmocka_unit_test(test_decode_padded_and_unpadded),
        cmocka_unit_test(test_decode_rejects),
        cmocka_unit_test(test_roundtrip_all_lengths),
    };
    return cmocka_run_group_tests_name("b64", tests, NULL, NULL);
}
