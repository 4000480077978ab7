/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the user-key rules (lib/userkey.c, docs/userkey.md): the
 * three forms, ASCII folding, what is refused, domain compatibility, and the
 * 9-character truncation Windows clients apply to cookies.
 */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tsfarm/macro.h"
#include "tsfarm/userkey.h"

struct parse_case {
        const char *input;
        size_t len;  /* 0: strlen(input) */
        bool cookie; /* tsf_userkey_parse_cookie() instead of tsf_userkey_parse() */
        int ret;
        enum tsf_userkey_form form;
        const char *user;
        const char *domain;
};

static const struct parse_case parse_cases[] = {
        {"rdpuser1", 0, false, 0, TSF_USERKEY_PLAIN, "rdpuser1", ""},
        {"RdpUser1", 0, false, 0, TSF_USERKEY_PLAIN, "rdpuser1", ""},
        {"CORP\\RdpUser1", 0, false, 0, TSF_USERKEY_DOWNLEVEL, "rdpuser1", "corp"},
        {"RdpUser1@Corp.Example", 0, false, 0, TSF_USERKEY_UPN, "rdpuser1", "corp.example"},
        /* The last '@' splits a UPN; a backslash wins over '@'. */
        {"first@last@corp.example", 0, false, 0, TSF_USERKEY_UPN, "first@last", "corp.example"},
        {"CORP\\user@elsewhere", 0, false, 0, TSF_USERKEY_DOWNLEVEL, "user@elsewhere", "corp"},
        /* Spaces are allowed; bytes >= 0x80 are kept as they are. */
        {"Jane Doe", 0, false, 0, TSF_USERKEY_PLAIN, "jane doe", ""},
        {"J\xC4RG", 0, false, 0, TSF_USERKEY_PLAIN, "j\xC4rg", ""},
        {"J\xC3\x84RG", 0, false, 0, TSF_USERKEY_PLAIN, "j\xC3\x84rg", ""},
        {"x", 0, false, 0, TSF_USERKEY_PLAIN, "x", ""},
        /* Refused. */
        {"", 0, false, -EINVAL, 0, NULL, NULL},
        {"\\user", 0, false, -EINVAL, 0, NULL, NULL},
        {"CORP\\", 0, false, -EINVAL, 0, NULL, NULL},
        {"@corp.example", 0, false, -EINVAL, 0, NULL, NULL},
        {"user@", 0, false, -EINVAL, 0, NULL, NULL},
        {"CORP\\a\\b", 0, false, -EINVAL, 0, NULL, NULL},
        {"CORP\\\\b", 0, false, -EINVAL, 0, NULL, NULL},
        {"a\tb", 0, false, -EINVAL, 0, NULL, NULL},
        {"a\x7f", 0, false, -EINVAL, 0, NULL, NULL},
        {"a\r\n", 0, false, -EINVAL, 0, NULL, NULL},
        {"a\0b", 3, false, -EINVAL, 0, NULL, NULL},
        /* A 9-byte cookie cut right after its separator. */
        {"rdpuser1@", 0, true, 0, TSF_USERKEY_UPN, "rdpuser1", ""},
        {"CORPORAT\\", 0, true, 0, TSF_USERKEY_DOWNLEVEL, "", "corporat"},
        {"rdpuser1@", 0, false, -EINVAL, 0, NULL, NULL},
        {"CORPORAT\\", 0, false, -EINVAL, 0, NULL, NULL},
        /* Only at exactly 9 bytes, and the other part must not be empty. */
        {"rdpuser@", 0, true, -EINVAL, 0, NULL, NULL},
        {"rdpuser12@", 0, true, -EINVAL, 0, NULL, NULL},
        {"\\abcdefgh", 0, true, -EINVAL, 0, NULL, NULL},
        {"@abcdefgh", 0, true, -EINVAL, 0, NULL, NULL},
        {"CORP\\rdpuser1", 0, true, 0, TSF_USERKEY_DOWNLEVEL, "rdpuser1", "corp"},
        {"a\tbcdefgh", 0, true, -EINVAL, 0, NULL, NULL},
};

static void test_parse(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(parse_cases); i++) {
                const struct parse_case *c = &parse_cases[i];
                size_t len = c->len ? c->len : strlen(c->input);
                struct tsf_userkey k;
                int r = c->cookie ? tsf_userkey_parse_cookie(c->input, len, &k)
                                  : tsf_userkey_parse(c->input, len, &k);

                if (r != c->ret)
                        fail_msg("case %zu \"%s\": %d, expected %d", i, c->input, r, c->ret);
                if (r < 0)
                        continue;
                assert_int_equal(k.form, c->form);
                assert_string_equal(k.user, c->user);
                assert_string_equal(k.domain, c->domain);
                assert_string_equal(tsf_userkey_index(&k), c->user);
                assert_int_equal(k.folded_len, len);
                assert_int_equal(strlen(k.folded), len);
                /* Folding again changes nothing. */
                for (size_t j = 0; j < len; j++)
                        assert_false(k.folded[j] >= 'A' && k.folded[j] <= 'Z');
        }
}

static void test_fold(void **state) {
        struct tsf_userkey k, again;

        assert_int_equal(tsf_userkey_parse("CORP\\RdpUser1", 13, &k), 0);
        assert_string_equal(k.folded, "corp\\rdpuser1");
        assert_int_equal(tsf_userkey_parse(k.folded, k.folded_len, &again), 0);
        assert_memory_equal(&k, &again, sizeof(k));

        /* Only A-Z fold: the Latin-1 and UTF-8 forms of 'Ä' stay as sent. */
        assert_int_equal(tsf_userkey_parse("\xC4\xC3\x84Z[]^_`", 9, &k), 0);
        assert_string_equal(k.user, "\xC4\xC3\x84z[]^_`");
}

static void test_length(void **state) {
        char s[TSF_USERKEY_INPUT_MAX + 2];
        struct tsf_userkey k;

        memset(s, 'a', sizeof(s));
        assert_int_equal(tsf_userkey_parse(s, TSF_USERKEY_INPUT_MAX, &k), 0);
        assert_int_equal(k.folded_len, TSF_USERKEY_INPUT_MAX);
        assert_int_equal(strlen(k.user), TSF_USERKEY_INPUT_MAX);
        assert_int_equal(tsf_userkey_parse(s, TSF_USERKEY_INPUT_MAX + 1, &k), -ENAMETOOLONG);
        assert_int_equal(tsf_userkey_parse_cookie(s, TSF_USERKEY_INPUT_MAX + 1, &k), -ENAMETOOLONG);

        /* Too long is said before what is wrong inside. */
        s[3] = '\t';
        assert_int_equal(tsf_userkey_parse(s, TSF_USERKEY_INPUT_MAX + 1, &k), -ENAMETOOLONG);
        assert_int_equal(tsf_userkey_parse(s, TSF_USERKEY_INPUT_MAX, &k), -EINVAL);

        /* The longest DOMAIN\user and user@domain. */
        memset(s, 'a', sizeof(s));
        s[100] = '\\';
        assert_int_equal(tsf_userkey_parse(s, TSF_USERKEY_INPUT_MAX, &k), 0);
        assert_int_equal(strlen(k.domain), 100);
        assert_int_equal(strlen(k.user), TSF_USERKEY_INPUT_MAX - 101);
        s[100] = '@';
        assert_int_equal(tsf_userkey_parse(s, TSF_USERKEY_INPUT_MAX, &k), 0);
        assert_int_equal(strlen(k.user), 100);
}

struct domain_case {
        const char *a, *b;
        bool match;
};

static const struct domain_case domain_cases[] = {
        {"", "", true},
        {"", "corp", true},
        {"corp.example", "", true},
        {"corp", "CORP", true},
        {"corp.example", "CORP.Example", true},
        {"CORP", "corp.example", true},
        {"corp.example", "CORP", true},
        {"corp", "corp.example.org", true},
        {"corp", "other", false},
        {"corp", "corp2", false},
        {"corp", "corporate.example", false},
        {"c", "corp.example", false},
        {"corp.example", "corp.other", false},
        {"corp.example", "example", false},
        {"example", "corp.example", false},
};

static void test_domain_match(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(domain_cases); i++) {
                const struct domain_case *c = &domain_cases[i];

                if (tsf_userkey_domain_match(c->a, c->b) != c->match)
                        fail_msg("\"%s\" ~ \"%s\": expected %s", c->a, c->b,
                                 c->match ? "match" : "no match");
                /* Symmetric. */
                assert_int_equal(tsf_userkey_domain_match(c->b, c->a), c->match);
        }
}

struct match_case {
        const char *cookie; /* parsed with tsf_userkey_parse_cookie() */
        const char *full;   /* parsed with tsf_userkey_parse() */
        bool match;
};

static const struct match_case match_cases[] = {
        /* Same user, compatible domains. */
        {"rdpuser1", "rdpuser1", true},
        {"RDPUSER1", "rdpuser1", true},
        {"rdpuser1", "CORP\\rdpuser1", true},
        {"CORP\\rdpuser1", "rdpuser1", true},
        {"corp\\RDPUSER1", "CORP\\rdpuser1", true},
        {"rdpuser1@corp.example", "CORP\\rdpuser1", true},
        {"CORP\\rdpuser1", "rdpuser1@corp.example", true},
        {"rdpuser1@CORP.EXAMPLE", "rdpuser1@corp.example", true},
        {"OTHER\\rdpuser1", "CORP\\rdpuser1", false},
        {"rdpuser1@corp.example", "rdpuser1@corp.other", false},
        {"rdpuser2", "rdpuser1", false},
        {"J\xC4RG", "j\xC4rg", true},
        {"J\xC4RG", "j\xE4rg", false}, /* no folding beyond ASCII */
        /* A 9-byte cookie may be cut. */
        {"averylong", "averylongusername01", true},
        {"AVERYLONG", "averylongusername01", true},
        {"AveryLong", "CORP\\averylongusername01", true},
        {"averylong", "averylongusername01@corp.example", true},
        {"corp\\rdpu", "CORP\\rdpuser1", true},
        {"CORP\\RDPU", "CORP\\rdpuser1", true},
        {"corp\\rdpu", "rdpuser1@corp.example", true}, /* NetBIOS form of the DNS domain */
        {"corp.exam", "rdpuser1@corp.example", true},  /* corp.example\rdpuser1, cut */
        {"rdpuser1@", "rdpuser1@corp.example", true},
        {"rdpuser1@", "CORP\\rdpuser1", true},
        {"rdpuser1@", "rdpuser1", true},
        {"averylong", "rdpuser1", false},
        {"other\\rdp", "CORP\\rdpuser1", false},
        {"corp\\rdpx", "CORP\\rdpuser1", false},
        {"CORPORAT\\", "corporat\\bob", true},
        {"CORPORAT\\", "other\\bob", false},
        /* Shorter than 9 was not cut: a prefix is not enough. */
        {"averylon", "averylongusername01", false},
        {"corp\\rdp", "CORP\\rdpuser1", false},
        {"rdpuser", "rdpuser1", false},
        /* Neither was anything longer. */
        {"averylongu", "averylongusername01", false},
        {"rdpuser12", "rdpuser1", false},
        /* The cut one matches a name of exactly 9 too. */
        {"rdpuser12", "rdpuser12", true},
};

static void parse_both(const char *cookie, const char *full, struct tsf_userkey *c, struct tsf_userkey *f) {
        if (tsf_userkey_parse_cookie(cookie, strlen(cookie), c) < 0)
                fail_msg("cookie \"%s\" does not parse", cookie);
        if (tsf_userkey_parse(full, strlen(full), f) < 0)
                fail_msg("\"%s\" does not parse", full);
}

static void test_match(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(match_cases); i++) {
                const struct match_case *m = &match_cases[i];
                struct tsf_userkey c, f;

                parse_both(m->cookie, m->full, &c, &f);
                if (tsf_userkey_match(&c, &f) != m->match)
                        fail_msg("cookie \"%s\" vs \"%s\": expected %s", m->cookie, m->full,
                                 m->match ? "match" : "no match");
                /* Every key matches itself. */
                assert_true(tsf_userkey_match(&c, &c));
                assert_true(tsf_userkey_match(&f, &f));
        }
}

static void test_maybe_truncated(void **state) {
        struct tsf_userkey k;

        assert_int_equal(tsf_userkey_parse("averylong", 9, &k), 0);
        assert_true(tsf_userkey_maybe_truncated(&k));
        assert_int_equal(tsf_userkey_parse("averylon", 8, &k), 0);
        assert_false(tsf_userkey_maybe_truncated(&k));
        assert_int_equal(tsf_userkey_parse("averylong1", 10, &k), 0);
        assert_false(tsf_userkey_maybe_truncated(&k));
}

/* The cookies in ../shared/vectors against the names a session host
 * reports for the same user (xrdp says "rdpuser1", Windows "CORP\rdpuser1"). */
static void test_vector_cookies(void **state) {
        static const char *const cookies[] = {"rdpuser1", "CORP\\rdpuser1", "rdpuser1@corp.example"};
        static const char *const sessions[] = {"rdpuser1", "CORP\\rdpuser1"};

        for (size_t i = 0; i < ELEMENTSOF(cookies); i++)
                for (size_t j = 0; j < ELEMENTSOF(sessions); j++) {
                        struct tsf_userkey c, f;

                        parse_both(cookies[i], sessions[j], &c, &f);
                        if (!tsf_userkey_match(&c, &f))
                                fail_msg("cookie \"%s\" does not match session user \"%s\"", cookies[i],
                                         sessions[j]);
                        /* And all of them file under the same index. */
                        assert_string_equal(tsf_userkey_index(&c), "rdpuser1");
                }

        /* The long-name vector, whole and as mstsc would cut it. */
        struct tsf_userkey c, f;

        parse_both("averylongusername01", "averylongusername01", &c, &f);
        assert_true(tsf_userkey_match(&c, &f));
        parse_both("averylong", "averylongusername01", &c, &f);
        assert_true(tsf_userkey_match(&c, &f));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse),          cmocka_unit_test(test_fold),
                cmocka_unit_test(test_length),         cmocka_unit_test(test_domain_match),
                cmocka_unit_test(test_match),          cmocka_unit_test(test_maybe_truncated),
                cmocka_unit_test(test_vector_cookies),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
