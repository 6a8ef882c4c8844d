/* test_util.c -- unit tests for error strings, clocks and the size/duration parsers. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "chappe/util.h"

static void test_strerror_every_code(void **state)
{
    (void)state;
    static const int codes[] = {CH_OK,     CH_ENOMEM, CH_EINVAL,  CH_EAGAIN, CH_EIO,
                                CH_ETLS,   CH_EPROTO, CH_ETOOBIG, CH_EEOF,   CH_ENOENT,
                                CH_EEXIST, CH_EPERM,  CH_ETIMEOUT};
    const char *unknown = util_strerror(-1000);
    assert_non_null(unknown);
    for (size_t i = 0; i < ARRAY_LEN(codes); i++) {
        const char *s = util_strerror(codes[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        assert_string_not_equal(s, unknown);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, util_strerror(codes[j]));
    }
    assert_string_equal(util_strerror(CH_ETIMEOUT), "timed out");
    assert_string_equal(util_strerror(1), unknown);
}

static void test_clocks(void **state)
{
    (void)state;
    uint64_t wall = util_wall_ms();
    /* 2020-01-01T00:00:00Z .. 2100-01-01T00:00:00Z */
    assert_true(wall > 1577836800000ull);
    assert_true(wall < 4102444800000ull);
    uint64_t t = (uint64_t)time(NULL) * 1000;
    assert_true(wall + 2000 >= t && wall <= t + 2000);

    uint64_t a = util_mono_ms();
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    uint64_t b = util_mono_ms();
    assert_true(b >= a + 19);
    assert_true(b < a + 5000);
}

static void test_ncpu(void **state)
{
    (void)state;
    unsigned n = util_ncpu();
    assert_true(n >= 1);
    assert_true(n <= 4096);
}

static uint64_t size_ok(const char *s)
{
    uint64_t v = 12345;
    const char *why = NULL;
    int rc = util_parse_size(s, &v, &why);
    if (rc != 0)
        fail_msg("util_parse_size(\"%s\") failed: %s", s, why ? why : "?");
    return v;
}

static void size_bad(const char *s)
{
    uint64_t v = 12345;
    const char *why = NULL;
    assert_int_equal(util_parse_size(s, &v, &why), CH_EINVAL);
    assert_non_null(why);
    assert_int_equal(v, 12345); /* untouched on error */
}

static uint64_t dur_ok(const char *s)
{
    uint64_t v = 12345;
    const char *why = NULL;
    int rc = util_parse_duration_ms(s, &v, &why);
    if (rc != 0)
        fail_msg("util_parse_duration_ms(\"%s\") failed: %s", s, why ? why : "?");
    return v;
}

static void dur_bad(const char *s)
{
    uint64_t v = 12345;
    const char *why = NULL;
    assert_int_equal(util_parse_duration_ms(s, &v, &why), CH_EINVAL);
    assert_non_null(why);
    assert_int_equal(v, 12345);
}

static void test_parse_size(void **state)
{
    (void)state;
    assert_int_equal(size_ok("0"), 0);
    assert_int_equal(size_ok("13107200"), 13107200);
    assert_int_equal(size_ok("007"), 7);
    assert_int_equal(size_ok("16KiB"), 16384);
    assert_int_equal(size_ok("1GiB"), 1073741824ull);
    assert_int_equal(size_ok("3MiB"), 3145728);
    assert_int_equal(size_ok("2TiB"), 2199023255552ull);
    assert_int_equal(size_ok("5B"), 5);
    assert_int_equal(size_ok("2KB"), 2000);
    assert_int_equal(size_ok("2MB"), 2000000);
    assert_int_equal(size_ok("2GB"), 2000000000ull);
    assert_int_equal(size_ok("2TB"), 2000000000000ull);
    assert_int_equal(size_ok("0KiB"), 0);
    assert_int_equal(size_ok("18446744073709551615"), UINT64_MAX);
    assert_int_equal(size_ok("16777215TiB"), 16777215ull << 40);

    size_bad("");
    size_bad("18446744073709551616"); /* UINT64_MAX + 1 */
    size_bad("99999999999999999999999");
    size_bad("16777216TiB");            /* 2^64 */
    size_bad("18446744073709551615B0"); /* junk after the unit */
    size_bad("18446744073709552KB");    /* overflow in the multiplication */
    size_bad("-1");
    size_bad("+1");
    size_bad(" 16KiB");
    size_bad("16KiB ");
    size_bad("16 KiB");
    size_bad("1.5MiB");
    size_bad("16kib");
    size_bad("16KIB");
    size_bad("16kB");
    size_bad("16K");
    size_bad("16Ki");
    size_bad("16b");
    size_bad("KiB");
    size_bad("0x10");
    size_bad("1e3");
    size_bad("16KiBKiB");
}

static void test_parse_duration(void **state)
{
    (void)state;
    assert_int_equal(dur_ok("500ms"), 500);
    assert_int_equal(dur_ok("10s"), 10000);
    assert_int_equal(dur_ok("1m"), 60000);
    assert_int_equal(dur_ok("2h"), 7200000);
    assert_int_equal(dur_ok("7d"), 604800000);
    assert_int_equal(dur_ok("0s"), 0); /* the parser accepts it; config requires > 0 */
    assert_int_equal(dur_ok("0ms"), 0);
    assert_int_equal(dur_ok("18446744073709551615ms"), UINT64_MAX);
    assert_int_equal(dur_ok("213503982334d"), 213503982334ull * 86400000ull);

    dur_bad("");
    dur_bad("10"); /* a bare number: the unit is not guessed */
    dur_bad("0");
    dur_bad(" 10s");
    dur_bad("10s ");
    dur_bad("10 s");
    dur_bad("-1s");
    dur_bad("+1s");
    dur_bad("1.5s");
    dur_bad("10S");
    dur_bad("10MS");
    dur_bad("10sec");
    dur_bad("1w");
    dur_bad("1h30m");
    dur_bad("s");
    dur_bad("18446744073709551616ms");
    dur_bad("213503982335d"); /* overflow in the multiplication */
    dur_bad("18446744073709552s");
}

static void test_null_why(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(util_parse_size("x", &v, NULL), CH_EINVAL);
    assert_int_equal(util_parse_duration_ms("10", &v, NULL), CH_EINVAL);
    assert_int_equal(util_parse_size("1KiB", &v, NULL), 0);
    assert_int_equal(v, 1024);
}

static void check_size_fmt(uint64_t v, const char *want)
{
    char out[32];
    util_format_size(v, out, sizeof(out));
    assert_string_equal(out, want);
}

static void check_dur_fmt(uint64_t v, const char *want)
{
    char out[32];
    util_format_duration_ms(v, out, sizeof(out));
    assert_string_equal(out, want);
}

static void test_format(void **state)
{
    (void)state;
    check_size_fmt(0, "0");
    check_size_fmt(1, "1");
    check_size_fmt(1000, "1KB");
    check_size_fmt(1023, "1023");
    check_size_fmt(1024, "1KiB");
    check_size_fmt(16384, "16KiB");
    check_size_fmt(13107200, "12800KiB");
    check_size_fmt(1048576, "1MiB");
    check_size_fmt(1073741824ull, "1GiB");
    check_size_fmt(1099511627776ull, "1TiB");
    check_size_fmt(2048000, "2048KB");
    check_size_fmt(5000000000000ull, "5TB");
    check_size_fmt(UINT64_MAX, "18446744073709551615");

    check_dur_fmt(0, "0s");
    check_dur_fmt(1, "1ms");
    check_dur_fmt(500, "500ms");
    check_dur_fmt(1500, "1500ms");
    check_dur_fmt(10000, "10s");
    check_dur_fmt(60000, "1m");
    check_dur_fmt(90000, "90s");
    check_dur_fmt(3600000, "1h");
    check_dur_fmt(604800000, "7d");
    check_dur_fmt(UINT64_MAX, "18446744073709551615ms");

    char small[4];
    util_format_size(16384, small, sizeof(small)); /* truncated, still terminated */
    assert_string_equal(small, "16K");
}

/* Every formatted value parses back to itself (xorshift sample, bounded). */
static void test_format_round_trip(void **state)
{
    (void)state;
    uint64_t x = 88172645463325252ull;
    static const uint64_t mults[] = {1, 1000, 1024, 60000, 86400000, 1048576, 1000000000000ull};
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t m = mults[(unsigned)i % ARRAY_LEN(mults)];
        uint64_t v = (x >> (i % 64)) / m * m;
        char out[32];
        uint64_t back = 0;
        util_format_size(v, out, sizeof(out));
        assert_int_equal(util_parse_size(out, &back, NULL), 0);
        assert_int_equal(back, v);
        util_format_duration_ms(v, out, sizeof(out));
        assert_int_equal(util_parse_duration_ms(out, &back, NULL), 0);
        assert_int_equal(back, v);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_every_code),
        cmocka_unit_test(test_clocks),
        cmocka_unit_test(test_ncpu),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_null_why),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
