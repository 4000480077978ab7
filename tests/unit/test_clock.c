/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "tsfarm/clock.h"
#include "tsfarm/macro.h"

static void test_system_clock_moves(void **state) {
        usec_t a = tsf_now_monotonic(), b;
        struct timespec ts = {.tv_nsec = 2 * 1000 * 1000};

        nanosleep(&ts, NULL);
        b = tsf_now_monotonic();
        assert_true(b >= a + 2 * USEC_PER_MSEC);
        /* The realtime clock is in this century, not an uninitialised zero. */
        assert_true(tsf_now_realtime() > 1700000000ULL * USEC_PER_SEC);
}

static void test_fake_clock_jumps_90_days(void **state) {
        struct tsf_fake_clock f;
        char buf[TSF_TIMESTAMP_MAX];

        tsf_fake_clock_init(&f, 1795000000ULL * USEC_PER_SEC, 42 * USEC_PER_SEC);
        tsf_clock_install(&f.base);
        assert_int_equal(tsf_now_realtime(), 1795000000ULL * USEC_PER_SEC);
        assert_int_equal(tsf_now_monotonic(), 42 * USEC_PER_SEC);

        tsf_fake_clock_advance(&f, 90 * USEC_PER_DAY);
        assert_int_equal(tsf_now_realtime(), 1795000000ULL * USEC_PER_SEC + 90 * USEC_PER_DAY);
        assert_int_equal(tsf_now_monotonic(), 42 * USEC_PER_SEC + 90 * USEC_PER_DAY);
        assert_string_equal(tsf_format_timestamp(tsf_now_realtime(), buf, sizeof(buf)),
                            "2027-02-16T11:06:40Z");

        tsf_clock_install(NULL);
        assert_ptr_equal(tsf_clock_current(), &tsf_clock_system);
        assert_true(tsf_now_realtime() < 1795000000ULL * USEC_PER_SEC + 90 * USEC_PER_DAY);
}

static void test_parse_duration(void **state) {
        static const struct {
                const char *text;
                int r;
                usec_t value;
        } cases[] = {
                {"5", 0, 5 * USEC_PER_SEC},
                {"5s", 0, 5 * USEC_PER_SEC},
                {"100ms", 0, 100 * USEC_PER_MSEC},
                {"250us", 0, 250},
                {"2min", 0, 2 * USEC_PER_MINUTE},
                {"2m", 0, 2 * USEC_PER_MINUTE},
                {"1h30min", 0, 90 * USEC_PER_MINUTE},
                {"1h 30min", 0, 90 * USEC_PER_MINUTE},
                {"90d", 0, 90 * USEC_PER_DAY},
                {"1w", 0, 7 * USEC_PER_DAY},
                {" 3s ", 0, 3 * USEC_PER_SEC},
                {"", -EINVAL, 0},
                {"s", -EINVAL, 0},
                {"5 3", -EINVAL, 0},
                {"1h 30", -EINVAL, 0},
                {"5x", -EINVAL, 0},
                {"5sec", -EINVAL, 0},
                {"-5s", -EINVAL, 0},
                {"99999999999999999999", -ERANGE, 0},
                {"99999999999999d", -ERANGE, 0},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                usec_t v = 12345;
                int r = tsf_parse_duration(cases[i].text, &v);

                if (r != cases[i].r)
                        fail_msg("'%s': got %d, want %d", cases[i].text, r, cases[i].r);
                if (r == 0 && v != cases[i].value)
                        fail_msg("'%s': got %llu, want %llu", cases[i].text, (unsigned long long)v,
                                 (unsigned long long)cases[i].value);
                if (r < 0)
                        assert_int_equal(v, 12345); /* untouched on error */
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_system_clock_moves),
                cmocka_unit_test(test_fake_clock_jumps_90_days),
                cmocka_unit_test(test_parse_duration),
        };
        return cmocka_run_group_tests_name("clock", tests, NULL, NULL);
}
