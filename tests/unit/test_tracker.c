/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* agent/host/tracker: sessions inferred from connections, on a real
 * sd-event loop with a short grace period. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <systemd/sd-event.h>

#include "agent/host/tracker.h"
#include "tsfarm/clock.h"
#include "tsfarm/macro.h"

#define GRACE (50 * USEC_PER_MSEC)

struct report {
        char event[16];
        char user[64];
        uint32_t session_id;
};

struct fixture {
        sd_event *event;
        struct tracker *t;
        struct report reports[16];
        size_t n;
        /* What the directory's mirror says this node holds. */
        const char *mirror_user;
        uint32_t mirror_id;
        bool mirror_disconnected;
};

static int lookup(void *userdata, const char *user_key, uint32_t *ret_id, bool *ret_disconnected) {
        struct fixture *f = userdata;

        if (!f->mirror_user || strcmp(f->mirror_user, user_key) != 0)
                return -ENOENT;
        *ret_id = f->mirror_id;
        *ret_disconnected = f->mirror_disconnected;
        return 0;
}

static void report(void *userdata, const char *event, const char *user_key, uint32_t session_id,
                   uint32_t client_be) {
        struct fixture *f = userdata;

        assert_true(f->n < ELEMENTSOF(f->reports));
        snprintf(f->reports[f->n].event, sizeof(f->reports[0].event), "%s", event);
        snprintf(f->reports[f->n].user, sizeof(f->reports[0].user), "%s", user_key);
        f->reports[f->n].session_id = session_id;
        f->n++;
}

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        assert_int_equal(sd_event_new(&f->event), 0);
        assert_int_equal(tracker_new(f->event, GRACE, lookup, report, f, &f->t), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;

        tracker_free(f->t);
        sd_event_unref(f->event);
        free(f);
        return 0;
}

/* Runs the loop until `n` reports or the deadline (10 grace periods). */
static void run_until(struct fixture *f, size_t n) {
        usec_t end = tsf_now_monotonic() + 10 * GRACE;

        while (f->n < n && tsf_now_monotonic() < end)
                assert_true(sd_event_run(f->event, GRACE) >= 0);
        assert_int_equal(f->n, n);
}

/* Runs the loop for three grace periods and checks nothing more came. */
static void run_quiet(struct fixture *f) {
        size_t n = f->n;
        usec_t end = tsf_now_monotonic() + 3 * GRACE;

        while (tsf_now_monotonic() < end)
                assert_true(sd_event_run(f->event, GRACE) >= 0);
        assert_int_equal(f->n, n);
}

static void assert_report(const struct report *r, const char *event, const char *user) {
        assert_string_equal(r->event, event);
        assert_string_equal(r->user, user);
}

static void test_logon_disconnect_reconnect(void **state) {
        struct fixture *f = *state;
        uint32_t id;

        assert_int_equal(tracker_open(f->t, "alice", 0x0100000a), 0);
        assert_int_equal(f->n, 1);
        assert_report(&f->reports[0], "logon", "alice");
        id = f->reports[0].session_id;
        assert_true(id > 0 && id <= INT32_MAX);

        tracker_close(f->t, "alice");
        assert_int_equal(f->n, 1); /* not before the grace period */
        run_until(f, 2);
        assert_report(&f->reports[1], "disconnect", "alice");
        assert_int_equal(f->reports[1].session_id, id);

        assert_int_equal(tracker_open(f->t, "alice", 0x0100000a), 0);
        assert_int_equal(f->n, 3);
        assert_report(&f->reports[2], "reconnect", "alice");
        assert_int_equal(f->reports[2].session_id, id);
        run_quiet(f);
}

/* A user's second connection, and a reconnect inside the grace period,
 * are not news. */
static void test_overlapping_connections(void **state) {
        struct fixture *f = *state;

        assert_int_equal(tracker_open(f->t, "bob", 1), 0);
        assert_int_equal(tracker_open(f->t, "bob", 1), 0);
        assert_int_equal(f->n, 1);
        tracker_close(f->t, "bob");
        run_quiet(f);
        tracker_close(f->t, "bob");
        assert_int_equal(tracker_open(f->t, "bob", 1), 0); /* back within the grace */
        run_quiet(f);
        assert_int_equal(f->n, 1);
        tracker_close(f->t, "bob");
        tracker_close(f->t, "bob"); /* one too many: ignored */
        tracker_close(f->t, "nobody");
        run_until(f, 2);
        assert_report(&f->reports[1], "disconnect", "bob");
        run_quiet(f);
}

/* After an agent restart the mirror says which session is ours. */
static void test_session_from_mirror(void **state) {
        struct fixture *f = *state;

        f->mirror_user = "carol";
        f->mirror_id = 77;
        f->mirror_disconnected = true;
        assert_int_equal(tracker_open(f->t, "carol", 1), 0);
        assert_int_equal(f->n, 1);
        assert_report(&f->reports[0], "reconnect", "carol");
        assert_int_equal(f->reports[0].session_id, 77);

        f->mirror_user = "dave";
        f->mirror_id = 78;
        f->mirror_disconnected = false;
        assert_int_equal(tracker_open(f->t, "dave", 1), 0);
        assert_int_equal(f->n, 1); /* active already: nothing to say */
}

static int count(const struct tracker_session *s, void *userdata) {
        (*(int *)userdata)++;
        return 0;
}

static void test_session_ended(void **state) {
        struct fixture *f = *state;
        uint32_t id;
        int n = 0;

        /* Lost (this node was marked down) while connected: still alive
         * here, so reported again as it is, same session. */
        assert_int_equal(tracker_open(f->t, "erin", 1), 0);
        id = f->reports[0].session_id;
        tracker_session_ended(f->t, "erin", id + 1, true); /* another session: not ours */
        assert_int_equal(f->n, 1);
        tracker_session_ended(f->t, "erin", id, true);
        assert_int_equal(f->n, 2);
        assert_report(&f->reports[1], "reconnect", "erin");
        assert_int_equal(f->reports[1].session_id, id);

        /* Logged off (by the operator or the session host): forgotten; the
         * next connection is a new logon. */
        tracker_close(f->t, "erin");
        run_until(f, 3);
        assert_report(&f->reports[2], "disconnect", "erin");
        /* Lost while disconnected: reported disconnected again. */
        tracker_session_ended(f->t, "erin", id, true);
        assert_int_equal(f->n, 4);
        assert_report(&f->reports[3], "disconnect", "erin");
        assert_int_equal(f->reports[3].session_id, id);
        tracker_session_ended(f->t, "erin", id, false);
        assert_int_equal(tracker_foreach(f->t, count, &n), 0);
        assert_int_equal(n, 0);
        assert_int_equal(tracker_open(f->t, "erin", 1), 0);
        assert_int_equal(f->n, 5);
        assert_report(&f->reports[4], "logon", "erin");
        assert_true(f->reports[4].session_id != id);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_logon_disconnect_reconnect, setup, teardown),
                cmocka_unit_test_setup_teardown(test_overlapping_connections, setup, teardown),
                cmocka_unit_test_setup_teardown(test_session_from_mirror, setup, teardown),
                cmocka_unit_test_setup_teardown(test_session_ended, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
