/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the load generator's accounting (tools/tsclient/
 * loadstats.c): the mix parser and picker, license classes, the summary's
 * identities over a table of results, percentiles; and the script parser
 * (tools/tsclient/script.c) the client's test mode runs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tsfarm/lictoken.h"
#include "tsfarm/macro.h"
#include "tools/tsclient/loadstats.h"

static void test_mix_parse(void **state) {
        static const char *const bad[] = {
                "",
                "connect",
                "connect=",
                "connect=-1",
                "connect=1,",
                ",connect=1",
                "connect=1,connect=2",
                "connect=0",
                "connect=0,logoff=0",
                "conect=1",
                "connect=1x",
                "connect=1000001",
                "connect=99999999999999999999",
                "connect= 1",
        };
        struct tsc_load_mix m;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                assert_int_equal(tsc_load_mix_parse(bad[i], &m), -EINVAL);
        }
        assert_int_equal(tsc_load_mix_parse(NULL, &m), -EINVAL);

        assert_int_equal(tsc_load_mix_parse("connect=60,disconnect=20,reconnect=15,logoff=5", &m), 0);
        assert_int_equal(m.total, 100);
        assert_int_equal(m.weight[TSC_LOAD_CONNECT], 60);
        assert_int_equal(m.weight[TSC_LOAD_LOGOFF], 5);
        /* Every number in [0, total) picks the operation owning that share. */
        {
                unsigned count[_TSC_LOAD_OP_MAX] = {};

                for (unsigned r = 0; r < m.total; r++)
                        count[tsc_load_mix_pick(&m, r)]++;
                for (int i = 0; i < _TSC_LOAD_OP_MAX; i++)
                        assert_int_equal(count[i], m.weight[i]);
        }
        /* Names left out weigh nothing. */
        assert_int_equal(tsc_load_mix_parse("logoff=3", &m), 0);
        assert_int_equal(m.total, 3);
        for (unsigned r = 0; r < 3; r++)
                assert_int_equal(tsc_load_mix_pick(&m, r), TSC_LOAD_LOGOFF);
        assert_int_equal(tsc_load_mix_parse("reconnect=0,connect=1", &m), 0);
        assert_int_equal(tsc_load_mix_pick(&m, 0), TSC_LOAD_CONNECT);
}

static void test_license_class(void **state) {
        static const struct {
                int status, kind;
                enum tsc_load_license want;
        } cases[] = {
                {0, 0, TSC_LOAD_LIC_NOT_REACHED},
                {TSF_LICENSE_NEW, TSF_LIC_TEMPORARY, TSC_LOAD_LIC_TEMPORARY},
                {TSF_LICENSE_NEW, TSF_LIC_CAL, TSC_LOAD_LIC_CAL},
                {TSF_LICENSE_NEW, 0, TSC_LOAD_LIC_UNKNOWN},
                {TSF_LICENSE_UPGRADE, TSF_LIC_CAL, TSC_LOAD_LIC_CAL},
                {TSF_LICENSE_VALID, TSF_LIC_TEMPORARY, TSC_LOAD_LIC_VALID},
                {TSF_LICENSE_VALID, 0, TSC_LOAD_LIC_VALID},
                {TSF_LICENSE_ERROR, 0, TSC_LOAD_LIC_REFUSED},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct tsc_result r = {.license_status = cases[i].status, .token_kind = cases[i].kind};

                assert_int_equal(tsc_load_license_of(&r), cases[i].want);
                assert_non_null(tsc_load_license_to_string(cases[i].want));
        }
}

/* A run's worth of results: every outcome, every license class, every
 * operation; the identities hold after each one. */
static void test_stats_add_up(void **state) {
        static const struct {
                enum tsc_load_op op;
                enum tsc_outcome outcome;
                int license_status, kind;
                bool reattached;
                unsigned redirects;
                usec_t latency;
        } rows[] = {
                {TSC_LOAD_CONNECT, TSC_OK, TSF_LICENSE_NEW, TSF_LIC_TEMPORARY, false, 0, 10000},
                {TSC_LOAD_CONNECT, TSC_OK, TSF_LICENSE_UPGRADE, TSF_LIC_CAL, false, 1, 20000},
                {TSC_LOAD_RECONNECT, TSC_OK, TSF_LICENSE_VALID, TSF_LIC_CAL, true, 0, 5000},
                {TSC_LOAD_DISCONNECT, TSC_OK, TSF_LICENSE_VALID, TSF_LIC_CAL, true, 1, 7000},
                {TSC_LOAD_LOGOFF, TSC_OK, TSF_LICENSE_VALID, TSF_LIC_CAL, false, 0, 3000},
                {TSC_LOAD_CONNECT, TSC_CONNECT_FAILED, 0, 0, false, 0, 0},
                {TSC_LOAD_CONNECT, TSC_LICENSE_REFUSED, TSF_LICENSE_ERROR, 0, false, 0, 0},
                {TSC_LOAD_RECONNECT, TSC_WRONG_PASSWORD, TSF_LICENSE_VALID, TSF_LIC_CAL, false, 0, 0},
                {TSC_LOAD_LOGOFF, TSC_LOST, TSF_LICENSE_VALID, TSF_LIC_CAL, false, 0, 0},
                {TSC_LOAD_DISCONNECT, TSC_REDIRECT_LOOP, TSF_LICENSE_VALID, 0, false, 3, 0},
                {TSC_LOAD_CONNECT, TSC_LOGON_REFUSED, TSF_LICENSE_NEW, 0, false, 0, 0},
        };
        struct tsc_load_stats s = {};
        uint64_t ok = 0;

        assert_int_equal(tsc_load_stats_check(&s), 0);
        assert_int_equal(tsc_load_stats_percentile(&s, 50), 0);
        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                struct tsc_result r = {
                        .outcome = rows[i].outcome,
                        .license_status = rows[i].license_status,
                        .token_kind = rows[i].kind,
                        .reattached = rows[i].reattached,
                        .redirects = rows[i].redirects,
                        .latency = rows[i].latency,
                };

                assert_int_equal(tsc_load_stats_record(&s, rows[i].op, &r), 0);
                assert_int_equal(tsc_load_stats_check(&s), 0);
                ok += rows[i].outcome == TSC_OK;
        }
        assert_int_equal(s.connections, ELEMENTSOF(rows));
        assert_int_equal(s.succeeded, ok);
        assert_int_equal(s.failed, ELEMENTSOF(rows) - ok);
        assert_int_equal(s.ops[TSC_LOAD_CONNECT], 5);
        assert_int_equal(s.op_failed[TSC_LOAD_CONNECT], 3);
        assert_int_equal(s.failures[TSC_CONNECT_FAILED], 1);
        assert_int_equal(s.failures[TSC_LOST], 1);
        assert_int_equal(s.license[TSC_LOAD_LIC_NOT_REACHED], 1);
        assert_int_equal(s.license[TSC_LOAD_LIC_TEMPORARY], 1);
        assert_int_equal(s.license[TSC_LOAD_LIC_CAL], 1);
        assert_int_equal(s.license[TSC_LOAD_LIC_VALID], 6);
        assert_int_equal(s.license[TSC_LOAD_LIC_REFUSED], 1);
        assert_int_equal(s.license[TSC_LOAD_LIC_UNKNOWN], 1);
        assert_int_equal(s.sessions_new, 3);
        assert_int_equal(s.sessions_reattached, 2);
        assert_int_equal(s.redirects, 5);

        /* Latencies 3, 5, 7, 10, 20 ms: nearest-rank percentiles. */
        assert_int_equal(tsc_load_stats_percentile(&s, 50), 7000);
        assert_int_equal(tsc_load_stats_percentile(&s, 99), 20000);
        assert_int_equal(tsc_load_stats_percentile(&s, 100), 20000);
        assert_int_equal(tsc_load_stats_percentile(&s, 20), 3000);
        assert_int_equal(tsc_load_stats_percentile(&s, 21), 5000);
        assert_int_equal(tsc_load_stats_percentile(&s, 0), 0);

        /* A broken count is noticed. */
        s.failed++;
        assert_int_equal(tsc_load_stats_check(&s), -EBADMSG);
        s.failed--;
        s.license[TSC_LOAD_LIC_VALID]--;
        assert_int_equal(tsc_load_stats_check(&s), -EBADMSG);
        s.license[TSC_LOAD_LIC_VALID]++;
        s.sessions_new++;
        assert_int_equal(tsc_load_stats_check(&s), -EBADMSG);
        s.sessions_new--;
        assert_int_equal(tsc_load_stats_check(&s), 0);

        /* Out-of-range input changes nothing. */
        {
                struct tsc_result r = {.outcome = TSC_OK};

                assert_int_equal(tsc_load_stats_record(&s, _TSC_LOAD_OP_MAX, &r), -EINVAL);
                r.outcome = _TSC_OUTCOME_MAX;
                assert_int_equal(tsc_load_stats_record(&s, TSC_LOAD_CONNECT, &r), -EINVAL);
                assert_int_equal(s.connections, ELEMENTSOF(rows));
        }

        /* The summary prints, and says the counts are consistent. */
        {
                char *buf = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&buf, &len);

                assert_non_null(f);
                tsc_load_stats_print(f, &s, true, 2 * USEC_PER_SEC, 4, 2);
                fclose(f);
                assert_non_null(strstr(buf, "\"connections\":11"));
                assert_non_null(strstr(buf, "\"consistent\":true"));
                free(buf);
        }
        tsc_load_stats_done(&s);
}

static void test_many_latencies(void **state) {
        struct tsc_load_stats s = {};

        /* Past the first allocation, in reverse order. */
        for (unsigned i = 3000; i >= 1; i--) {
                struct tsc_result r = {.outcome = TSC_OK, .latency = i};

                assert_int_equal(tsc_load_stats_record(&s, TSC_LOAD_CONNECT, &r), 0);
        }
        assert_int_equal(tsc_load_stats_check(&s), 0);
        assert_int_equal(tsc_load_stats_percentile(&s, 50), 1500);
        assert_int_equal(tsc_load_stats_percentile(&s, 99), 2970);
        tsc_load_stats_done(&s);
}

static void test_script_parse(void **state) {
        static const char *const bad[] = {
                "frobnicate\n",   "sendx y\n",   "expect\n",      "timeout\n",
                "timeout soon\n", "window 24\n", "window 0 80\n", "window 24 5000\n",
                "logoff now\n",   "send \\q\n",  "send \\x4\n",   "sleep -1s\n",
        };
        struct tsc_script s;
        unsigned line = 0;

        assert_int_equal(
                tsc_script_parse("# comment\n\nsend echo hi\nsendraw a\\tb\\x41\\\\\n"
                                 "expect hi\\r\\n\ntimeout 2s\nsleep 100ms\nwindow 50 132\nlogoff\n",
                                 &s, &line),
                0);
        assert_int_equal(s.n_steps, 7);
        assert_int_equal(s.steps[0].op, TSC_SCRIPT_SEND);
        assert_int_equal(s.steps[0].len, 8);
        assert_memory_equal(s.steps[0].text, "echo hi\n", 8);
        assert_int_equal(s.steps[0].line, 3);
        assert_int_equal(s.steps[1].len, 5);
        assert_memory_equal(s.steps[1].text, "a\tbA\\", 5);
        assert_int_equal(s.steps[2].op, TSC_SCRIPT_EXPECT);
        assert_string_equal(s.steps[2].text, "hi\r\n");
        assert_int_equal(s.steps[3].op, TSC_SCRIPT_TIMEOUT);
        assert_int_equal(s.steps[3].usec, 2 * USEC_PER_SEC);
        assert_int_equal(s.steps[4].usec, 100 * USEC_PER_MSEC);
        assert_int_equal(s.steps[5].rows, 50);
        assert_int_equal(s.steps[5].cols, 132);
        assert_int_equal(s.steps[6].op, TSC_SCRIPT_END);
        assert_int_equal(s.steps[6].end, TSC_END_LOGOFF);
        tsc_script_done(&s);

        /* "send" alone sends a newline; CRLF line ends are accepted. */
        assert_int_equal(tsc_script_parse("send\r\ndrop\r\n", &s, &line), 0);
        assert_int_equal(s.n_steps, 2);
        assert_int_equal(s.steps[0].len, 1);
        assert_int_equal(s.steps[1].end, TSC_END_DROP);
        tsc_script_done(&s);

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char text[128];

                snprintf(text, sizeof(text), "send ok\n%s", bad[i]);
                line = 0;
                assert_int_equal(tsc_script_parse(text, &s, &line), -EINVAL);
                assert_int_equal(line, 2);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_mix_parse),    cmocka_unit_test(test_license_class),
                cmocka_unit_test(test_stats_add_up), cmocka_unit_test(test_many_latencies),
                cmocka_unit_test(test_script_parse),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
