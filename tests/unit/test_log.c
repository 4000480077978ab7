/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/log.h"

/* Runs `fn` with stderr pointed at a temporary file; returns what it wrote.
 * With `as_journal_stream`, $JOURNAL_STREAM names that file, as systemd
 * would name the journal stream it gave us. */
static char *capture_stderr_ex(void (*fn)(void), int as_journal_stream) {
        static char buf[4096];
        char path[] = "/tmp/tsfarm-test-log-XXXXXX", id[64];
        int fd = mkstemp(path), saved = dup(STDERR_FILENO);
        struct stat st;
        ssize_t n;

        assert_true(fd >= 0 && saved >= 0);
        unlink(path);
        fflush(stderr);
        assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
        if (as_journal_stream) {
                assert_int_equal(fstat(fd, &st), 0);
                snprintf(id, sizeof(id), "%llu:%llu", (unsigned long long)st.st_dev,
                         (unsigned long long)st.st_ino);
                setenv("JOURNAL_STREAM", id, 1);
                tsf_log_set_target(TSF_LOG_TARGET_AUTO);
        }
        fn();
        if (as_journal_stream) {
                unsetenv("JOURNAL_STREAM");
                tsf_log_set_target(TSF_LOG_TARGET_STDERR);
        }
        fflush(stderr);
        assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
        close(saved);
        n = pread(fd, buf, sizeof(buf) - 1, 0);
        close(fd);
        assert_true(n >= 0);
        buf[n] = '\0';
        return buf;
}

static char *capture_stderr(void (*fn)(void)) {
        return capture_stderr_ex(fn, 0);
}

static int returned;

static void log_enoent(void) {
        errno = EBUSY;
        returned = log_error_errno(-ENOENT, "Failed to open %s: %m", "/nowhere");
        /* Logging never clobbers errno for the caller. */
        assert_int_equal(errno, EBUSY);
}

static void test_errno_logging(void **state) {
        tsf_log_set_ident("unit");
        tsf_log_set_target(TSF_LOG_TARGET_STDERR);
        tsf_log_set_max_level(LOG_INFO);
        assert_string_equal(capture_stderr(log_enoent),
                            "unit: error: Failed to open /nowhere: No such file or directory\n");
        assert_int_equal(returned, -ENOENT);
}

static void log_positive_errno(void) {
        returned = log_warning_errno(EACCES, "Permission check, ignoring: %m");
}

static void test_positive_errno_normalised(void **state) {
        tsf_log_set_ident("unit");
        tsf_log_set_target(TSF_LOG_TARGET_STDERR);
        tsf_log_set_max_level(LOG_INFO);
        assert_string_equal(capture_stderr(log_positive_errno),
                            "unit: warning: Permission check, ignoring: Permission denied\n");
        assert_int_equal(returned, -EACCES);
}

static void log_debug_filtered(void) {
        log_debug("not shown");
        returned = log_debug_errno(-EIO, "not shown either");
        log_info("shown");
}

static void test_level_filter(void **state) {
        tsf_log_set_ident("unit");
        tsf_log_set_target(TSF_LOG_TARGET_STDERR);
        tsf_log_set_max_level(LOG_INFO);
        assert_string_equal(capture_stderr(log_debug_filtered), "unit: shown\n");
        /* Filtered or not, the _errno variants hand the error back. */
        assert_int_equal(returned, -EIO);

        tsf_log_set_max_level(LOG_DEBUG);
        assert_string_equal(capture_stderr(log_debug_filtered),
                            "unit: debug: not shown\nunit: debug: not shown either\nunit: shown\n");
        tsf_log_set_max_level(LOG_INFO);
}

static void test_level_from_string(void **state) {
        assert_int_equal(tsf_log_level_from_string("debug"), LOG_DEBUG);
        assert_int_equal(tsf_log_level_from_string("WARNING"), LOG_WARNING);
        assert_int_equal(tsf_log_level_from_string("err"), LOG_ERR);
        assert_int_equal(tsf_log_level_from_string("error"), LOG_ERR);
        assert_int_equal(tsf_log_level_from_string("6"), LOG_INFO);
        assert_int_equal(tsf_log_level_from_string("8"), -EINVAL);
        assert_int_equal(tsf_log_level_from_string("loud"), -EINVAL);
        assert_int_equal(tsf_log_level_from_string(""), -EINVAL);
        assert_int_equal(tsf_log_level_from_string("6x"), -EINVAL);
}

static void test_environment(void **state) {
        setenv("TSFARM_LOG_LEVEL", "debug", 1);
        tsf_log_parse_environment();
        assert_int_equal(tsf_log_get_max_level(), LOG_DEBUG);
        setenv("TSFARM_LOG_LEVEL", "nonsense", 1);
        tsf_log_parse_environment(); /* a bad value leaves the level alone */
        assert_int_equal(tsf_log_get_max_level(), LOG_DEBUG);
        unsetenv("TSFARM_LOG_LEVEL");
        tsf_log_set_max_level(LOG_INFO);
}

/* The journal path: stand in for journald on its well-known socket (only
 * possible where no journald runs and we may create /run/systemd/journal)
 * and check the structured fields of one record. */
static void test_journal_fields(void **state) {
        const char *dir = "/run/systemd/journal", *path = "/run/systemd/journal/socket";
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        _cleanup_close_ int fd = -1;
        char rec[4096];
        ssize_t n;
        int r;

        if (access(path, F_OK) == 0)
                skip(); /* a real journald: do not write test records into it */
        if (mkdir("/run/systemd", 0755) < 0 && errno != EEXIST)
                skip();
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                skip();

        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        strcpy(sa.sun_path, path);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                skip();

        tsf_log_set_ident("unit-journal");
        tsf_log_set_target(TSF_LOG_TARGET_JOURNAL);
        r = log_error_errno(-ENOENT, "Failed to open %s: %m", "/x");
        tsf_log_set_target(TSF_LOG_TARGET_STDERR);
        assert_int_equal(r, -ENOENT);

        n = recv(fd, rec, sizeof(rec) - 1, MSG_DONTWAIT);
        unlink(path);
        rmdir(dir);
        assert_true(n > 0);
        rec[n] = '\0';
        for (ssize_t i = 0; i < n; i++)
                if (rec[i] == '\0')
                        rec[i] = '\n';
        assert_non_null(strstr(rec, "MESSAGE=Failed to open /x: No such file or directory\n"));
        assert_non_null(strstr(rec, "PRIORITY=3\n"));
        assert_non_null(strstr(rec, "ERRNO=2\n"));
        assert_non_null(strstr(rec, "SYSLOG_IDENTIFIER=unit-journal\n"));
        assert_non_null(strstr(rec, "CODE_FILE=tests/unit/test_log.c\n"));
        assert_non_null(strstr(rec, "CODE_FUNC=test_journal_fields\n"));
}

/* $JOURNAL_STREAM naming our stderr selects the journal (nothing is
 * written to stderr); naming something else (stderr redirected by hand
 * under systemd) keeps lines on stderr. */
static void test_journal_stream_detection(void **state) {
        tsf_log_set_ident("unit");
        assert_string_equal(capture_stderr_ex(log_enoent, 1), "");
        assert_int_equal(returned, -ENOENT);

        setenv("JOURNAL_STREAM", "1:1", 1);
        tsf_log_set_target(TSF_LOG_TARGET_AUTO);
        assert_string_equal(capture_stderr(log_enoent),
                            "unit: error: Failed to open /nowhere: No such file or directory\n");
        unsetenv("JOURNAL_STREAM");
        tsf_log_set_target(TSF_LOG_TARGET_STDERR);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_errno_logging),
                cmocka_unit_test(test_positive_errno_normalised),
                cmocka_unit_test(test_level_filter),
                cmocka_unit_test(test_level_from_string),
                cmocka_unit_test(test_environment),
                cmocka_unit_test(test_journal_fields),
                cmocka_unit_test(test_journal_stream_detection),
        };
        return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
