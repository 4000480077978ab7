/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The terminal server's licensing grace period (agent/host/licgrace.c):
 * start at the first connection, 120 days, early end by the first Device
 * CAL, persisted across restarts; damaged state refused. Time comes from
 * the injectable clock. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/host/licgrace.h"
#include "tsfarm/lictoken.h"
#include "tsfarm/clock.h"
#include "tsfarm/macro.h"

#define T0 (1795000000ULL * USEC_PER_SEC)

struct fixture {
        char dir[64];
        char path[96];
        struct tsf_fake_clock clock;
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "/tmp/test_licgrace.XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        /* A directory below: the module creates it. */
        snprintf(f->path, sizeof(f->path), "%s/state/license-grace.json", f->dir);
        tsf_fake_clock_init(&f->clock, T0, 1000 * USEC_PER_SEC);
        tsf_clock_install(&f->clock.base);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        char cmd[128];

        tsf_clock_install(NULL);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static struct licgrace *load(const struct fixture *f) {
        struct licgrace *g = NULL;

        assert_int_equal(licgrace_load(f->path, LICGRACE_PERIOD_DEFAULT, &g), 0);
        return g;
}

static void write_text(const char *path, const char *text) {
        FILE *fp = fopen(path, "w");

        assert_non_null(fp);
        assert_int_equal(fputs(text, fp) >= 0, 1);
        assert_int_equal(fclose(fp), 0);
}

static void test_starts_at_first_connection_and_expires_after_120_days(void **state) {
        struct fixture *f = *state;
        struct licgrace *g = load(f);

        /* No file yet: nothing has connected. */
        assert_int_equal(licgrace_state(g, tsf_now_realtime()), LICGRACE_NOT_STARTED);
        assert_int_equal(licgrace_deadline(g), 0);
        assert_int_equal(access(f->path, F_OK), -1);

        tsf_fake_clock_advance(&f->clock, 3 * USEC_PER_DAY);
        assert_int_equal(licgrace_start(g, tsf_now_realtime()), 1);
        assert_int_equal(licgrace_started(g), T0 + 3 * USEC_PER_DAY);
        assert_int_equal(licgrace_deadline(g), T0 + 123 * USEC_PER_DAY);
        assert_int_equal(licgrace_state(g, tsf_now_realtime()), LICGRACE_ACTIVE);

        /* A second connection does not move the start. */
        tsf_fake_clock_advance(&f->clock, USEC_PER_DAY);
        assert_int_equal(licgrace_start(g, tsf_now_realtime()), 0);
        assert_int_equal(licgrace_started(g), T0 + 3 * USEC_PER_DAY);
        licgrace_free(g);

        /* A restart reads the same period back. */
        g = load(f);
        assert_int_equal(licgrace_started(g), T0 + 3 * USEC_PER_DAY);
        assert_int_equal(licgrace_start(g, tsf_now_realtime()), 0);

        /* One microsecond before the end: active; at the end: expired. */
        tsf_fake_clock_advance(&f->clock, 119 * USEC_PER_DAY - 1);
        assert_int_equal(tsf_now_realtime(), T0 + 123 * USEC_PER_DAY - 1);
        assert_int_equal(licgrace_state(g, tsf_now_realtime()), LICGRACE_ACTIVE);
        tsf_fake_clock_advance(&f->clock, 1);
        assert_int_equal(licgrace_state(g, tsf_now_realtime()), LICGRACE_EXPIRED);
        tsf_fake_clock_advance(&f->clock, 400 * USEC_PER_DAY);
        assert_int_equal(licgrace_state(g, tsf_now_realtime()), LICGRACE_EXPIRED);
        licgrace_free(g);
}

static void test_first_device_cal_ends_it_early(void **state) {
        struct fixture *f = *state;
        struct licgrace *g = load(f);

        assert_int_equal(licgrace_start(g, tsf_now_realtime()), 1);
        tsf_fake_clock_advance(&f->clock, 10 * USEC_PER_DAY);
        assert_int_equal(licgrace_end(g, tsf_now_realtime()), 1);
        assert_int_equal(licgrace_state(g, tsf_now_realtime()), LICGRACE_ENDED);
        assert_int_equal(licgrace_ended(g), T0 + 10 * USEC_PER_DAY);
        /* A second CAL changes nothing. */
        tsf_fake_clock_advance(&f->clock, USEC_PER_DAY);
        assert_int_equal(licgrace_end(g, tsf_now_realtime()), 0);
        assert_int_equal(licgrace_ended(g), T0 + 10 * USEC_PER_DAY);
        licgrace_free(g);

        /* Ended stays ended after a restart, and past the 120 days. */
        g = load(f);
        assert_int_equal(licgrace_state(g, tsf_now_realtime()), LICGRACE_ENDED);
        assert_int_equal(licgrace_start(g, tsf_now_realtime()), 0);
        tsf_fake_clock_advance(&f->clock, 200 * USEC_PER_DAY);
        assert_int_equal(licgrace_state(g, tsf_now_realtime()), LICGRACE_ENDED);
        licgrace_free(g);
}

static void test_cal_before_any_connection_gives_no_period(void **state) {
        struct fixture *f = *state;
        struct licgrace *g = load(f);

        assert_int_equal(licgrace_end(g, tsf_now_realtime()), 1);
        assert_int_equal(licgrace_started(g), T0);
        assert_int_equal(licgrace_ended(g), T0);
        assert_int_equal(licgrace_state(g, tsf_now_realtime()), LICGRACE_ENDED);
        assert_int_equal(licgrace_start(g, tsf_now_realtime()), 0);
        licgrace_free(g);
}

static void test_damaged_state_is_refused_and_left_alone(void **state) {
        static const char *const bad[] = {
                "",
                "not json",
                "[]",
                "{\"version\":2,\"started_usec\":1,\"ended_usec\":null}",
                "{\"started_usec\":1}",
                "{\"version\":1,\"started_usec\":-5,\"ended_usec\":null}",
                "{\"version\":1,\"started_usec\":\"yesterday\",\"ended_usec\":null}",
                "{\"version\":1,\"started_usec\":null,\"ended_usec\":5}",
                "{\"version\":1,\"started_usec\":10,\"ended_usec\":5}",
                "{\"version\":1,\"started_usec\":10,\"started_usec\":20}",
        };
        struct fixture *f = *state;
        struct licgrace *g = load(f);
        char big[LICGRACE_FILE_MAX + 10];

        /* Make the directory, then damage the file in every way. */
        assert_int_equal(licgrace_start(g, tsf_now_realtime()), 1);
        licgrace_free(g);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                struct licgrace *d = NULL;
                char back[256] = "";
                FILE *fp;

                write_text(f->path, bad[i]);
                assert_int_equal(licgrace_load(f->path, LICGRACE_PERIOD_DEFAULT, &d), -EBADMSG);
                assert_null(d);
                /* Refused, not repaired: the operator decides. */
                fp = fopen(f->path, "r");
                assert_non_null(fp);
                if (!fgets(back, sizeof(back), fp))
                        back[0] = '\0';
                fclose(fp);
                assert_string_equal(back, bad[i]);
        }
        memset(big, ' ', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        write_text(f->path, big);
        g = NULL;
        assert_int_equal(licgrace_load(f->path, LICGRACE_PERIOD_DEFAULT, &g), -EFBIG);
        assert_null(g);
}

static void test_unwritable_state_runs_in_memory(void **state) {
        struct licgrace *g = NULL;

        (void)state;
        assert_int_equal(
                licgrace_load("/proc/self/no-such-dir/license-grace.json", LICGRACE_PERIOD_DEFAULT, &g), 0);
        assert_true(licgrace_start(g, tsf_now_realtime()) < 0);
        assert_int_equal(licgrace_state(g, tsf_now_realtime()), LICGRACE_ACTIVE);
        assert_int_equal(licgrace_start(g, tsf_now_realtime()), 0);
        licgrace_free(g);
}

/* docs/licensing.md's table: what each presented token calls for, renewal
 * exactly inside the last 7 days. */
static void test_what_a_presented_token_calls_for(void **state) {
        usec_t now = T0;

        (void)state;
        assert_int_equal(license_action_for(false, 0, 0, 0, now), LICENSE_ACTION_TEMPORARY);
        assert_int_equal(license_action_for(true, TSF_LIC_VERDICT_EXPIRED, TSF_LIC_CAL, now - 1, now),
                         LICENSE_ACTION_TEMPORARY);
        assert_int_equal(license_action_for(true, TSF_LIC_VERDICT_EXPIRED, TSF_LIC_TEMPORARY, now, now),
                         LICENSE_ACTION_TEMPORARY);
        for (int v = TSF_LIC_VERDICT_MALFORMED; v < _TSF_LIC_VERDICT_MAX; v++)
                if (v != TSF_LIC_VERDICT_EXPIRED)
                        assert_int_equal(
                                license_action_for(true, v, TSF_LIC_CAL, now + 60 * USEC_PER_DAY, now),
                                LICENSE_ACTION_REFUSE);
        assert_int_equal(
                license_action_for(true, TSF_LIC_VERDICT_OK, TSF_LIC_TEMPORARY, now + USEC_PER_DAY, now),
                LICENSE_ACTION_CAL);
        /* A CAL: 89 days left, 7 days and a microsecond, exactly 7 days, one microsecond. */
        assert_int_equal(
                license_action_for(true, TSF_LIC_VERDICT_OK, TSF_LIC_CAL, now + 89 * USEC_PER_DAY, now),
                LICENSE_ACTION_NONE);
        assert_int_equal(
                license_action_for(true, TSF_LIC_VERDICT_OK, TSF_LIC_CAL, now + 7 * USEC_PER_DAY + 1, now),
                LICENSE_ACTION_NONE);
        assert_int_equal(
                license_action_for(true, TSF_LIC_VERDICT_OK, TSF_LIC_CAL, now + 7 * USEC_PER_DAY, now),
                LICENSE_ACTION_RENEW);
        assert_int_equal(license_action_for(true, TSF_LIC_VERDICT_OK, TSF_LIC_CAL, now + 1, now),
                         LICENSE_ACTION_RENEW);
        assert_string_equal(license_action_to_string(LICENSE_ACTION_RENEW), "renew");
        assert_string_equal(license_action_to_string(LICENSE_ACTION_TEMPORARY), "obtain-temporary");
        assert_null(license_action_to_string(99));
}

static void test_state_names(void **state) {
        (void)state;
        assert_string_equal(licgrace_state_to_string(LICGRACE_NOT_STARTED), "not-started");
        assert_string_equal(licgrace_state_to_string(LICGRACE_ACTIVE), "active");
        assert_string_equal(licgrace_state_to_string(LICGRACE_ENDED), "ended");
        assert_string_equal(licgrace_state_to_string(LICGRACE_EXPIRED), "expired");
        assert_null(licgrace_state_to_string(42));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_starts_at_first_connection_and_expires_after_120_days,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(test_first_device_cal_ends_it_early, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cal_before_any_connection_gives_no_period, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_damaged_state_is_refused_and_left_alone, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_unwritable_state_runs_in_memory, setup, teardown),
                cmocka_unit_test(test_what_a_presented_token_calls_for),
                cmocka_unit_test(test_state_names),
        };
        return cmocka_run_group_tests_name("licgrace", tests, NULL, NULL);
}
