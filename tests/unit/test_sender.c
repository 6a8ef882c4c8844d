/* test_sender.c -- the sender's backoff: min, multiplier, cap, jitter x0.8-1.4. */
/* SPDX-License-Identifier: ISC */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "chappe/sender.h"

static struct config cfg_with(uint64_t min, double mult, uint64_t max)
{
    struct config c;
    memset(&c, 0, sizeof(c));
    c.queue.retry_min_ms = min;
    c.queue.retry_multiplier = mult;
    c.queue.retry_max_ms = max;
    return c;
}

static void test_backoff_grows_and_caps(void **state)
{
    (void)state;
    struct config c = cfg_with(5000, 2.0, 3600000);
    uint64_t base = 0, wait;
    /* rnd 0.5: jitter x1.1 */
    wait = sender_next_backoff(&c, 0, 0.5, &base);
    assert_int_equal(base, 5000);
    assert_int_equal(wait, 5500);
    wait = sender_next_backoff(&c, base, 0.5, &base);
    assert_int_equal(base, 10000);
    assert_int_equal(wait, 11000);
    uint64_t b = 0;
    for (int i = 0; i < 20; i++)
        sender_next_backoff(&c, b, 0.5, &b);
    assert_int_equal(b, 3600000); /* capped at max */
    wait = sender_next_backoff(&c, 3600000, 0.0, &base);
    assert_int_equal(base, 3600000);
    assert_int_equal(wait, 2880000); /* x0.8 */
}

static void test_backoff_jitter_bounds(void **state)
{
    (void)state;
    struct config c = cfg_with(1000, 1.5, 60000);
    uint64_t base = 0;
    assert_int_equal(sender_next_backoff(&c, 0, 0.0, &base), 800);
    assert_int_equal(sender_next_backoff(&c, 0, 0.999999, &base), 1399);
    assert_int_equal(sender_next_backoff(&c, 1000, 0.0, &base), 1200);
    assert_int_equal(base, 1500);
    /* a stored backoff below min (min raised since) starts again from min */
    assert_int_equal(sender_next_backoff(&c, 10, 0.0, &base), 800);
    assert_int_equal(base, 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_grows_and_caps),
        cmocka_unit_test(test_backoff_jitter_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
