/* test_buf.c -- unit tests for src/buf.c: growable buffers and slice helpers. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "chappe/buf.h"
#include "chappe/util.h"

static void assert_buf(const struct buf *b, const char *want)
{
    size_t n = strlen(want);
    assert_int_equal(b->len, n);
    if (n)
        assert_memory_equal(buf_data(b), want, n);
    assert_true(b->off + b->len <= b->cap);
}

static void test_init_and_empty(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_null(b.base);
    assert_int_equal(buf_avail(&b), 0);
    struct slice s = buf_slice(&b);
    assert_non_null(s.base);
    assert_int_equal(s.len, 0);
    /* Appending nothing allocates nothing. */
    assert_int_equal(buf_append(&b, NULL, 0), 0);
    assert_int_equal(buf_append_str(&b, ""), 0);
    assert_null(b.base);
    buf_consume(&b, 0);
    buf_reset(&b);
    buf_free(&b);
    assert_null(b.base);
}

static void test_reserve_commit(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_reserve(&b, 1), 0);
    assert_int_equal(b.cap, 256);
    assert_int_equal(buf_avail(&b), 256);
    memcpy(buf_tail(&b), "abc", 3);
    buf_commit(&b, 3);
    assert_buf(&b, "abc");
    assert_int_equal(buf_avail(&b), 253);
    /* Enough room: nothing moves. */
    char *base = b.base;
    assert_int_equal(buf_reserve(&b, 253), 0);
    assert_ptr_equal(b.base, base);
    /* Grows by doubling to fit len + n. */
    assert_int_equal(buf_reserve(&b, 1000), 0);
    assert_int_equal(b.cap, 1024);
    assert_true(buf_avail(&b) >= 1000);
    assert_buf(&b, "abc");
    assert_int_equal(buf_reserve(&b, 5000), 0);
    assert_int_equal(b.cap, 8192);
    assert_buf(&b, "abc");
    buf_free(&b);
}

static void test_reserve_compacts_before_growing(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    char data[200];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)('a' + i % 26);
    assert_int_equal(buf_append(&b, data, sizeof(data)), 0);
    assert_int_equal(b.cap, 256);
    buf_consume(&b, 150);
    assert_int_equal(b.off, 150);
    assert_int_equal(b.len, 50);
    assert_int_equal(buf_avail(&b), 56);
    /* 200 more fit after moving the 50 live bytes to the front: same block. */
    char *base = b.base;
    assert_int_equal(buf_reserve(&b, 200), 0);
    assert_ptr_equal(b.base, base);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.cap, 256);
    assert_int_equal(b.len, 50);
    assert_memory_equal(buf_data(&b), data + 150, 50);
    assert_true(buf_avail(&b) >= 200);
    /* Past what compaction gives: a new block, the data carried over. */
    buf_consume(&b, 10);
    assert_int_equal(buf_reserve(&b, 300), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 40);
    assert_int_equal(b.cap, 512);
    assert_memory_equal(buf_data(&b), data + 160, 40);
    buf_free(&b);
}

static void test_reserve_overflow(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_reserve(&b, SIZE_MAX), CH_ENOMEM);
    assert_null(b.base);
    assert_int_equal(buf_append_str(&b, "x"), 0);
    assert_int_equal(buf_reserve(&b, SIZE_MAX), CH_ENOMEM);
    assert_int_equal(buf_reserve(&b, SIZE_MAX / 2 + 2), CH_ENOMEM);
    assert_buf(&b, "x");
    buf_free(&b);
}

static void test_append_and_consume(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append(&b, "hello", 5), 0);
    assert_int_equal(buf_append_str(&b, ", "), 0);
    assert_int_equal(buf_append_slice(&b, SLICE_LIT("world")), 0);
    assert_buf(&b, "hello, world");
    buf_consume(&b, 7);
    assert_buf(&b, "world");
    assert_int_equal(b.off, 7);
    assert_true(slice_eq_str(buf_slice(&b), "world"));
    buf_consume(&b, 0);
    assert_buf(&b, "world");
    /* Consuming everything (or more) rewinds to the start of the block. */
    buf_consume(&b, 5);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(buf_append_str(&b, "ab"), 0);
    buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.off, 0);
    /* Many appends across growth keep every byte. */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_append(&b, (const char[]){(char)('0' + i % 10)}, 1), 0);
    assert_int_equal(b.len, 1000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(buf_data(&b)[i], '0' + i % 10);
    /* reset keeps the block. */
    char *base = b.base;
    size_t cap = b.cap;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.base, base);
    assert_int_equal(b.cap, cap);
    buf_free(&b);
    assert_null(b.base);
    assert_int_equal(b.cap, 0);
}

static void test_appendf(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_appendf(&b, "%d-%s-%zu", 42, "x", (size_t)7), 0);
    assert_buf(&b, "42-x-7");
    /* Around the 256-byte stack buffer: 255, 256 and 257 characters. */
    for (size_t n = 254; n <= 258; n++) {
        char s[300];
        memset(s, 'q', n);
        s[n] = 0;
        buf_reset(&b);
        assert_int_equal(buf_append_str(&b, "<"), 0);
        assert_int_equal(buf_appendf(&b, "%s>", s), 0);
        assert_int_equal(b.len, n + 2);
        assert_int_equal(buf_data(&b)[0], '<');
        assert_int_equal(buf_data(&b)[n], 'q');
        assert_int_equal(buf_data(&b)[n + 1], '>');
    }
    /* Long strings, on a buffer with consumed bytes in front. */
    char big[10000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    buf_reset(&b);
    assert_int_equal(buf_append_str(&b, "0123456789"), 0);
    buf_consume(&b, 4);
    assert_int_equal(buf_appendf(&b, "[%s][%s]", big, "end"), 0);
    assert_int_equal(b.len, 6 + 2 + 9999 + 5);
    assert_memory_equal(buf_data(&b), "456789[zzz", 10);
    assert_memory_equal(buf_data(&b) + b.len - 6, "][end]", 6);
    /* Padding is formatted, not just copied. */
    buf_reset(&b);
    assert_int_equal(buf_appendf(&b, "%1000d|", 5), 0);
    assert_int_equal(b.len, 1001);
    assert_memory_equal(buf_data(&b) + 998, " 5|", 3);
    buf_reset(&b);
    assert_int_equal(buf_appendf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

static void test_free_secret(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    assert_int_equal(buf_append_str(&b, "secret key material"), 0);
    buf_free_secret(&b);
    assert_null(b.base);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    buf_free_secret(&b); /* on an empty buffer too */
}

static void test_slice_eq(void **state)
{
    (void)state;
    struct slice empty = {NULL, 0};
    assert_true(slice_eq(empty, SLICE_LIT("")));
    assert_true(slice_eq(empty, empty));
    assert_true(slice_eq(SLICE_LIT("abc"), SLICE_LIT("abc")));
    assert_false(slice_eq(SLICE_LIT("abc"), SLICE_LIT("abd")));
    assert_false(slice_eq(SLICE_LIT("abc"), SLICE_LIT("ab")));
    assert_false(slice_eq(SLICE_LIT("abc"), SLICE_LIT("ABC")));
    assert_true(slice_eq_str(SLICE_LIT("abc"), "abc"));
    assert_false(slice_eq_str(SLICE_LIT("abc"), "abcd"));
    assert_true(slice_eq_str(empty, ""));
    /* Embedded NUL is compared, not a terminator. */
    assert_false(slice_eq((struct slice){"a\0b", 3}, (struct slice){"a\0c", 3}));
    assert_true(slice_eq((struct slice){"a\0b", 3}, (struct slice){"a\0b", 3}));
}

static void test_slice_case_eq(void **state)
{
    (void)state;
    assert_true(slice_case_eq(SLICE_LIT("Content-Length"), SLICE_LIT("content-length")));
    assert_true(slice_case_eq(SLICE_LIT("TRANSFER-ENCODING"), SLICE_LIT("transfer-encoding")));
    assert_true(slice_case_eq_str(SLICE_LIT("HoSt"), "hOsT"));
    assert_true(slice_case_eq_str((struct slice){NULL, 0}, ""));
    assert_false(slice_case_eq_str(SLICE_LIT("Host"), "Hos"));
    assert_false(slice_case_eq_str(SLICE_LIT("Host"), "Hosts"));
    /* Only A-Z fold: characters 32 apart that are not letters stay different. */
    assert_false(slice_case_eq(SLICE_LIT("@"), SLICE_LIT("`")));
    assert_false(slice_case_eq(SLICE_LIT("["), SLICE_LIT("{")));
    assert_false(slice_case_eq(SLICE_LIT("]"), SLICE_LIT("}")));
    assert_false(slice_case_eq(SLICE_LIT("^"), SLICE_LIT("~")));
    assert_false(slice_case_eq(SLICE_LIT("\xc3\xa9"), SLICE_LIT("\xc3\x89")));
    assert_false(slice_case_eq(SLICE_LIT("\xc9"), SLICE_LIT("\xe9")));
    /* No Unicode or locale tricks: KELVIN SIGN is not "k". */
    assert_false(slice_case_eq_str(SLICE_LIT("\xe2\x84\xaa"
                                             "eep-alive"),
                                   "keep-alive"));
    /* Every byte pair: equal exactly when they are the same letter or the same byte. */
    for (int x = 0; x < 256; x++) {
        for (int y = 0; y < 256; y++) {
            char cx = (char)x, cy = (char)y;
            int lx = x >= 'A' && x <= 'Z' ? x + 32 : x;
            int ly = y >= 'A' && y <= 'Z' ? y + 32 : y;
            assert_int_equal(slice_case_eq((struct slice){&cx, 1}, (struct slice){&cy, 1}),
                             lx == ly);
        }
    }
}

static void test_slice_trim_ows(void **state)
{
    (void)state;
    assert_true(slice_eq_str(slice_trim_ows(SLICE_LIT("  a b \t")), "a b"));
    assert_true(slice_eq_str(slice_trim_ows(SLICE_LIT("\t\tx")), "x"));
    assert_true(slice_eq_str(slice_trim_ows(SLICE_LIT("x")), "x"));
    assert_int_equal(slice_trim_ows(SLICE_LIT(" \t \t")).len, 0);
    assert_int_equal(slice_trim_ows(SLICE_LIT("")).len, 0);
    assert_int_equal(slice_trim_ows((struct slice){NULL, 0}).len, 0);
    /* Only SP and HTAB are OWS (RFC 9110 section 5.6.3). */
    assert_true(slice_eq_str(slice_trim_ows(SLICE_LIT("\r\nx\v\f")), "\r\nx\v\f"));
    struct slice in = SLICE_LIT(" ab ");
    struct slice out = slice_trim_ows(in);
    assert_ptr_equal(out.base, in.base + 1);
}

/* Collect the items of a list into "a|b|c" form. */
static void list_is(const char *in, const char *want)
{
    char got[256] = "";
    struct slice rest = {in, strlen(in)}, item;
    int n = 0;
    while (slice_next_list_item(&rest, &item) == 0) {
        assert_true(n++ < 50);
        if (n > 1)
            strcat(got, "|");
        strncat(got, item.base, item.len);
        assert_true(item.base >= in && item.base + item.len <= in + strlen(in));
    }
    /* Exhausted stays exhausted. */
    assert_int_equal(slice_next_list_item(&rest, &item), -1);
    if (strcmp(got, want) != 0)
        fail_msg("list [%s]: got [%s] want [%s]", in, got, want);
}

static void test_slice_next_list_item(void **state)
{
    (void)state;
    list_is("a", "a");
    list_is("a,b,c", "a|b|c");
    list_is(" close ,\tX-Foo\t, keep-alive ", "close|X-Foo|keep-alive");
    list_is("chunked, gzip", "chunked|gzip");
    /* Empty elements come back empty (RFC 9110 section 5.6.1: recipients skip them). */
    list_is("a,,b", "a||b");
    list_is(",a,", "|a|");
    list_is(" , ", "|");
    /* An empty list is one empty element. */
    list_is("", "");
    /* Quotes are not special: this is a plain splitter. */
    list_is("\"a,b\"", "\"a|b\"");
    struct slice rest = {NULL, 0}, item;
    assert_int_equal(slice_next_list_item(&rest, &item), -1);
    /* Items are views into the input. */
    const char *in = "x, yz";
    rest = (struct slice){in, strlen(in)};
    assert_int_equal(slice_next_list_item(&rest, &item), 0);
    assert_ptr_equal(item.base, in);
    assert_int_equal(slice_next_list_item(&rest, &item), 0);
    assert_ptr_equal(item.base, in + 3);
    assert_int_equal(item.len, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_empty),
        cmocka_unit_test(test_reserve_commit),
        cmocka_unit_test(test_reserve_compacts_before_growing),
        cmocka_unit_test(test_reserve_overflow),
        cmocka_unit_test(test_append_and_consume),
        cmocka_unit_test(test_appendf),
        cmocka_unit_test(test_free_secret),
        cmocka_unit_test(test_slice_eq),
        cmocka_unit_test(test_slice_case_eq),
        cmocka_unit_test(test_slice_trim_ows),
        cmocka_unit_test(test_slice_next_list_item),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
