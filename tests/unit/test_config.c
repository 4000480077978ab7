/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tsfarm/clock.h"
#include "tsfarm/config.h"
#include "tsfarm/macro.h"

struct sample {
        char *name;
        char *path;
        bool enabled;
        uint32_t limit;
        uint16_t port;
        usec_t timeout;
        int level;
        char **peers;
        uint64_t big;
        char fallback_seen[64];
};

#define OFF(f) offsetof(struct sample, f)
static const struct tsf_config_item items[] = {
        {"main", "name", tsf_config_parse_string, OFF(name), 0, 0},
        {"main", "path", tsf_config_parse_path, OFF(path), 0, 0},
        {"main", "enabled", tsf_config_parse_bool, OFF(enabled), 0, 0},
        {"main", "limit", tsf_config_parse_uint, OFF(limit), 1, 1000},
        {"main", "port", tsf_config_parse_port, OFF(port), 0, 0},
        {"main", "timeout", tsf_config_parse_duration, OFF(timeout), 0, 60 * USEC_PER_SEC},
        {"main", "log-level", tsf_config_parse_log_level, OFF(level), 0, 0},
        {"main", "big", tsf_config_parse_u64, OFF(big), 0, 0},
        {"peers", "peer", tsf_config_parse_strv, OFF(peers), 0, 0},
};

static int fallback(void *data, const char *section, const char *key, const char *value, char *err,
                    size_t err_size) {
        struct sample *s = data;

        if (strncmp(section, "node ", 5) != 0)
                return -ENOENT;
        if (strcmp(key, "address") != 0) {
                snprintf(err, err_size, "nodes have only an address");
                return -EINVAL;
        }
        snprintf(s->fallback_seen, sizeof(s->fallback_seen), "%s=%s", section + 5, value);
        return 0;
}

static const struct tsf_config_spec spec = {items, ELEMENTSOF(items), fallback};

static void sample_clear(struct sample *s) {
        free(s->name);
        free(s->path);
        tsf_strv_free(s->peers);
        memset(s, 0, sizeof(*s));
}

static void test_valid(void **state) {
        struct sample s = {0};
        char err[TSF_CONFIG_ERROR_MAX] = "";
        int r;

        r = tsf_config_load_string("# comment\n"
                                   "[main]\n"
                                   "name = farm one ; inline comment\n"
                                   "path=/var/lib/x\n"
                                   "enabled = yes\n"
                                   "limit = 1000\n"
                                   "port = 3389\n"
                                   "timeout = 1min\n"
                                   "log-level = debug\n"
                                   "big = 18446744073709551615\n"
                                   "[peers]\n"
                                   "peer = a b\n"
                                   "peer = c\n"
                                   "[node alpha]\n"
                                   "address = 10.0.0.1\n",
                                   "test.conf", &spec, &s, err, sizeof(err));
        assert_string_equal(err, "");
        assert_int_equal(r, 0);
        assert_string_equal(s.name, "farm one");
        assert_string_equal(s.path, "/var/lib/x");
        assert_true(s.enabled);
        assert_int_equal(s.limit, 1000);
        assert_int_equal(s.port, 3389);
        assert_int_equal(s.timeout, 60 * USEC_PER_SEC);
        assert_int_equal(s.level, 7);
        assert_true(s.big == UINT64_MAX);
        assert_int_equal(tsf_strv_length(s.peers), 3);
        assert_string_equal(s.peers[0], "a");
        assert_string_equal(s.peers[1], "b");
        assert_string_equal(s.peers[2], "c");
        assert_string_equal(s.fallback_seen, "alpha=10.0.0.1");
        sample_clear(&s);
}

static void test_errors(void **state) {
        static const struct {
                const char *text;
                const char *error;
        } cases[] = {
                {"[main]\nnmae = x\n",
                 "t.conf:2: [main] nmae: unknown key (misspelt, or in the wrong section?)"},
                {"[other]\nname = x\n",
                 "t.conf:2: [other] name: unknown key (misspelt, or in the wrong section?)"},
                {"[main]\nname = a\nname = b\n", "t.conf:3: [main] name: set more than once"},
                {"[main]\nport = 0\n", "t.conf:2: [main] port: '0' is not a number in 1..65535"},
                {"[main]\nport = 65536\n", "t.conf:2: [main] port: '65536' is not a number in 1..65535"},
                {"[main]\nport = 33a\n", "t.conf:2: [main] port: '33a' is not a number in 1..65535"},
                {"[main]\nlimit = 0\n", "t.conf:2: [main] limit: '0' is not a number in 1..1000"},
                {"[main]\nlimit = -1\n", "t.conf:2: [main] limit: '-1' is not a number in 1..1000"},
                {"[main]\nbig = 18446744073709551616\n",
                 "t.conf:2: [main] big: '18446744073709551616' is not a number in 0..18446744073709551615"},
                {"[main]\nenabled = maybe\n",
                 "t.conf:2: [main] enabled: 'maybe' is not a boolean (yes/no, true/false, on/off, 1/0)"},
                {"[main]\npath = relative/x\n",
                 "t.conf:2: [main] path: 'relative/x' is not an absolute path"},
                {"[main]\ntimeout = 2min\n", "t.conf:2: [main] timeout: '2min' is not a valid duration in "
                                             "the allowed range (e.g. 500ms, "
                                             "5s, 2min, 90d)"},
                {"[main]\ntimeout = soon\n",
                 "t.conf:2: [main] timeout: 'soon' is not a valid duration (e.g. 500ms, 5s, 2min, 90d)"},
                {"[main]\nlog-level = loud\n", "t.conf:2: [main] log-level: 'loud' is not a log level (err, "
                                               "warning, notice, info, debug)"},
                {"[main]\njust words\n", "t.conf:2: syntax error (expected [section] or key = value)"},
                {"[main\nname = x\n", "t.conf:1: syntax error (expected [section] or key = value)"},
                {"name = x\n", "t.conf:1: [] name: key outside any [section]"},
                {"[node beta]\nport = 1\n", "t.conf:2: [node beta] port: nodes have only an address"},
                /* Only the first error is reported, even when more follow. */
                {"[main]\nname = a\nbogus = 1\nport = 0\n",
                 "t.conf:3: [main] bogus: unknown key (misspelt, or in the wrong section?)"},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct sample s = {0};
                char err[TSF_CONFIG_ERROR_MAX] = "";
                int r = tsf_config_load_string(cases[i].text, "t.conf", &spec, &s, err, sizeof(err));

                if (r >= 0 || strcmp(err, cases[i].error) != 0)
                        fail_msg("case %zu: r=%d err='%s', want '%s'", i, r, err, cases[i].error);
                sample_clear(&s);
        }
}

static void test_long_line_refused(void **state) {
        char text[512], err[TSF_CONFIG_ERROR_MAX] = "";
        struct sample s = {0};
        int n;

        n = snprintf(text, sizeof(text), "[main]\nname = ");
        memset(text + n, 'x', 300);
        text[n + 300] = '\0';
        assert_int_equal(tsf_config_load_string(text, "t.conf", &spec, &s, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "t.conf:2: line longer than 198 characters");
        assert_null(s.name); /* nothing was applied */
}

static void test_files(void **state) {
        char dir[] = "/tmp/tsfarm-test-config-XXXXXX", path[128], err[TSF_CONFIG_ERROR_MAX];
        struct sample s = {0};
        FILE *f;
        int fd;

        assert_non_null(mkdtemp(dir));

        snprintf(path, sizeof(path), "%s/missing.conf", dir);
        assert_int_equal(tsf_config_load_file(path, &spec, &s, err, sizeof(err)), -ENOENT);
        assert_non_null(strstr(err, "missing.conf: No such file or directory"));

        assert_int_equal(tsf_config_load_file(dir, &spec, &s, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "not a regular file"));

        snprintf(path, sizeof(path), "%s/nul.conf", dir);
        f = fopen(path, "w");
        assert_non_null(f);
        fwrite("[main]\nname = a\0b\n", 1, 18, f);
        fclose(f);
        assert_int_equal(tsf_config_load_file(path, &spec, &s, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "NUL byte"));
        unlink(path);

        snprintf(path, sizeof(path), "%s/huge.conf", dir);
        fd = open(path, O_CREAT | O_WRONLY, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, TSF_CONFIG_FILE_MAX + 1), 0);
        close(fd);
        assert_int_equal(tsf_config_load_file(path, &spec, &s, err, sizeof(err)), -EFBIG);
        unlink(path);

        snprintf(path, sizeof(path), "%s/good.conf", dir);
        f = fopen(path, "w");
        assert_non_null(f);
        fputs("[main]\nport = 4000\n", f);
        fclose(f);
        assert_int_equal(tsf_config_load_file(path, &spec, &s, err, sizeof(err)), 0);
        assert_int_equal(s.port, 4000);
        unlink(path);
        rmdir(dir);
        sample_clear(&s);
}

static void test_parse_helpers(void **state) {
        uint64_t v;

        assert_int_equal(tsf_parse_boolean("ON"), 1);
        assert_int_equal(tsf_parse_boolean("f"), 0);
        assert_int_equal(tsf_parse_boolean(""), -EINVAL);
        assert_int_equal(tsf_parse_u64("0", &v), 0);
        assert_int_equal(v, 0);
        assert_int_equal(tsf_parse_u64("+1", &v), -EINVAL);
        assert_int_equal(tsf_parse_u64(" 1", &v), -EINVAL);
        assert_int_equal(tsf_parse_u64("", &v), -EINVAL);
        assert_int_equal(tsf_parse_u64("18446744073709551616", &v), -ERANGE);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_valid),
                cmocka_unit_test(test_errors),
                cmocka_unit_test(test_long_line_refused),
                cmocka_unit_test(test_files),
                cmocka_unit_test(test_parse_helpers),
        };
        return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
