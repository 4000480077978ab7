/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tsfarm/hex.h"
#include "tsfarm/macro.h"

/* Table-driven: every accepted spelling of the same bytes, and every
 * rejected one with the offset an operator would be pointed at. */
struct decode_case {
        const char *text;
        ssize_t ret;       /* byte count or negative errno */
        const char *bytes; /* expected bytes, as a C string literal */
        size_t bad_offset; /* for -EINVAL */
        size_t len;        /* 0: strlen(text); set for embedded NULs */
};

#define OK(t, n, b) \
        { .text = (t), .ret = (n), .bytes = (b) }
#define BAD(t, off) \
        { .text = (t), .ret = -EINVAL, .bad_offset = (off) }

static const struct decode_case decode_cases[] = {
        OK("", 0, ""),
        OK(" \n\t\r", 0, ""),
        OK("0300002e", 4, "\x03\x00\x00\x2e"),
        OK("0300002E", 4, "\x03\x00\x00\x2e"),
        OK("03 00 00 2e\n", 4, "\x03\x00\x00\x2e"),
        OK("03:00:00:2e", 4, "\x03\x00\x00\x2e"), /* tshark */
        OK("03-00-00-2e", 4, "\x03\x00\x00\x2e"),
        OK("0x03 0x00 0x00 0x2e", 4, "\x03\x00\x00\x2e"),
        OK("0X0300002e", 4, "\x03\x00\x00\x2e"),     /* one prefix before a run */
        OK("0300\n002e\r\n", 4, "\x03\x00\x00\x2e"), /* xxd -p wraps lines */
        OK("ff", 1, "\xff"),
        OK("0x00", 1, "\x00"),
        BAD("abc", 2),   /* odd: the lone 'c' */
        BAD("0 3", 0),   /* separator inside a byte: the lone digit */
        BAD("abc\n", 2), /* odd, then a newline: still the lone digit */
        BAD("03g0", 2),
        BAD("hello", 0),
        BAD("030x04", 3), /* "0x" only where a run starts */
        BAD("0x", 1),     /* a prefix with no digits */
        BAD("0x 03", 1),
        BAD("03,00", 2),
        {.text = "03\0000", .len = 4, .ret = -EINVAL, .bad_offset = 2}, /* NUL is no separator */
};

static void test_decode_table(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(decode_cases); i++) {
                const struct decode_case *c = &decode_cases[i];
                size_t len = c->len ? c->len : strlen(c->text);
                uint8_t buf[16];
                size_t bad = 9999;
                ssize_t r;

                r = tsf_hex_decode(c->text, len, buf, sizeof(buf), &bad);
                if (r != c->ret)
                        fail_msg("case %zu \"%s\": returned %zd, expected %zd", i, c->text, r, c->ret);
                if (r >= 0)
                        assert_memory_equal(buf, c->bytes, (size_t)r);
                else
                        assert_int_equal(bad, c->bad_offset);
        }
}

static void test_decode_null_bad_offset(void **state) {
        uint8_t buf[4];

        assert_int_equal(tsf_hex_decode("zz", 2, buf, sizeof(buf), NULL), -EINVAL);
}

static void test_decode_nobufs(void **state) {
        uint8_t buf[3] = {0xaa, 0xaa, 0xaa};

        assert_int_equal(tsf_hex_decode("01020304", 8, buf, 3, NULL), -ENOBUFS);
        /* Never writes past size. */
        assert_memory_equal(buf, "\x01\x02\x03", 3);
        /* Size 0 with no buffer counts; exact size fits. */
        assert_int_equal(tsf_hex_decode("01020304", 8, NULL, 0, NULL), -ENOBUFS);
        assert_int_equal(tsf_hex_decode("010203", 6, buf, 3, NULL), 3);
}

static void test_decode_invalid_wins_over_nobufs(void **state) {
        uint8_t buf[1];
        size_t bad = 0;

        /* The answer does not depend on the buffer size. */
        assert_int_equal(tsf_hex_decode("0102zz", 6, buf, sizeof(buf), &bad), -EINVAL);
        assert_int_equal(bad, 4);
}

static void test_decode_respects_len(void **state) {
        uint8_t buf[4];

        /* Only `len` characters are read, so "0102zz" cut at 4 is fine. */
        assert_int_equal(tsf_hex_decode("0102zz", 4, buf, sizeof(buf), NULL), 2);
        assert_memory_equal(buf, "\x01\x02", 2);
}

static void test_encode(void **state) {
        const uint8_t in[] = {0x03, 0x00, 0xab, 0xff, 0x10};
        char out[2 * sizeof(in) + 1];

        memset(out, 'X', sizeof(out));
        tsf_hex_encode(in, sizeof(in), out);
        assert_string_equal(out, "0300abff10");

        tsf_hex_encode(in, 0, out);
        assert_string_equal(out, "");
}

static void test_roundtrip_all_bytes(void **state) {
        uint8_t in[256], back[256];
        char text[2 * sizeof(in) + 1];

        for (size_t i = 0; i < sizeof(in); i++)
                in[i] = (uint8_t)i;
        tsf_hex_encode(in, sizeof(in), text);
        assert_int_equal(tsf_hex_decode(text, strlen(text), back, sizeof(back), NULL), 256);
        assert_memory_equal(in, back, sizeof(in));
}

static int looks(const char *s) {
        return tsf_hex_looks_like_hex((const uint8_t *)s, strlen(s));
}

static void test_looks_like_hex(void **state) {
        static const uint8_t raw_pdu[] = {0x03, 0x00, 0x00, 0x2e, 0x29, 0xe0};

        assert_true(looks(""));
        assert_true(looks("0300002e29e0\n"));
        assert_true(looks("03:00:00:2e"));
        assert_true(looks("0x03 0x00"));
        assert_true(looks("abc")); /* odd, but hex: decode says where */
        assert_false(looks("hello"));
        assert_false(looks("x03"));
        assert_false(looks("03x0"));
        assert_false(looks("Cookie: mstshash=eltons"));
        /* A raw PDU starts with TPKT version 3, never a hex character. */
        assert_false(tsf_hex_looks_like_hex(raw_pdu, sizeof(raw_pdu)));
}

/* Whatever looks_like_hex rejects, decode rejects too (it is the
 * character-set check of decode). */
static void test_looks_agrees_with_decode(void **state) {
        static const char *const texts[] = {"hello", "x03", "03x0", "03,00", "Cookie: x", "0300\x03"};

        for (size_t i = 0; i < ELEMENTSOF(texts); i++) {
                assert_false(looks(texts[i]));
                assert_int_equal(tsf_hex_decode(texts[i], strlen(texts[i]), NULL, 0, NULL), -EINVAL);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_decode_table),
                cmocka_unit_test(test_decode_null_bad_offset),
                cmocka_unit_test(test_decode_nobufs),
                cmocka_unit_test(test_decode_invalid_wins_over_nobufs),
                cmocka_unit_test(test_decode_respects_len),
                cmocka_unit_test(test_encode),
                cmocka_unit_test(test_roundtrip_all_bytes),
                cmocka_unit_test(test_looks_like_hex),
                cmocka_unit_test(test_looks_agrees_with_decode),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
