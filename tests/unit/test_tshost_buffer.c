/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* tshost's scrollback ring and bounded byte queue (tools/tshost/buffer.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tools/tshost/buffer.h"
#include "tsfarm/macro.h"

/* Reads the whole scrollback into buf (NUL-terminated). */
static size_t sb_text(const struct scrollback *s, char *buf, size_t size) {
        size_t n = scrollback_read(s, 0, (uint8_t *)buf, size - 1);

        buf[n] = '\0';
        return n;
}

static void test_scrollback_fills_then_forgets_oldest(void **state) {
        struct scrollback s;
        char buf[64];

        assert_int_equal(scrollback_init(&s, 8), 0);
        assert_int_equal(sb_text(&s, buf, sizeof(buf)), 0);
        scrollback_write(&s, (const uint8_t *)"abc", 3);
        assert_int_equal(sb_text(&s, buf, sizeof(buf)), 3);
        assert_string_equal(buf, "abc");
        scrollback_write(&s, (const uint8_t *)"defgh", 5); /* exactly full */
        sb_text(&s, buf, sizeof(buf));
        assert_string_equal(buf, "abcdefgh");
        scrollback_write(&s, (const uint8_t *)"ij", 2); /* wraps */
        assert_int_equal(scrollback_len(&s), 8);
        sb_text(&s, buf, sizeof(buf));
        assert_string_equal(buf, "cdefghij");
        scrollback_write(&s, (const uint8_t *)"klmnopq", 7); /* wraps across the end */
        sb_text(&s, buf, sizeof(buf));
        assert_string_equal(buf, "jklmnopq");
        scrollback_done(&s);
}

static void test_scrollback_write_larger_than_capacity(void **state) {
        struct scrollback s;
        char buf[64];

        assert_int_equal(scrollback_init(&s, 4), 0);
        scrollback_write(&s, (const uint8_t *)"xy", 2);
        scrollback_write(&s, (const uint8_t *)"0123456789", 10);
        sb_text(&s, buf, sizeof(buf));
        assert_string_equal(buf, "6789");
        scrollback_done(&s);
}

static void test_scrollback_read_in_pieces(void **state) {
        struct scrollback s;
        char all[32] = "";
        uint8_t piece[3];
        size_t off = 0, n;

        assert_int_equal(scrollback_init(&s, 10), 0);
        for (int i = 0; i < 7; i++)
                scrollback_write(&s, (const uint8_t *)"abc", 3); /* 21 bytes through 10 */
        while ((n = scrollback_read(&s, off, piece, sizeof(piece))) > 0) {
                memcpy(all + off, piece, n);
                off += n;
        }
        assert_int_equal(off, 10);
        assert_string_equal(all, "cabcabcabc");
        assert_int_equal(scrollback_read(&s, 10, piece, sizeof(piece)), 0);
        assert_int_equal(scrollback_read(&s, 99, piece, sizeof(piece)), 0);
        scrollback_done(&s);
}

static void test_scrollback_zero_capacity(void **state) {
        struct scrollback s;
        uint8_t b[4];

        assert_int_equal(scrollback_init(&s, 0), 0);
        scrollback_write(&s, (const uint8_t *)"abc", 3);
        assert_int_equal(scrollback_len(&s), 0);
        assert_int_equal(scrollback_read(&s, 0, b, sizeof(b)), 0);
        scrollback_done(&s);
}

/* Byte by byte against a model: every split of writes and reads keeps order. */
static void test_scrollback_matches_model(void **state) {
        struct scrollback s;
        uint8_t model[4096], out[64];
        size_t mlen = 0;
        uint32_t x = 12345;

        assert_int_equal(scrollback_init(&s, 37), 0);
        for (int round = 0; round < 500; round++) {
                uint8_t chunk[100];
                size_t n;

                x = x * 1103515245 + 12345;
                n = (x >> 16) % sizeof(chunk);
                for (size_t i = 0; i < n; i++)
                        chunk[i] = (uint8_t)(round + i);
                scrollback_write(&s, chunk, n);
                if (mlen + n > sizeof(model)) {
                        memmove(model, model + mlen - 37, 37);
                        mlen = 37;
                }
                memcpy(model + mlen, chunk, n);
                mlen += n;
                n = scrollback_read(&s, 0, out, sizeof(out));
                assert_int_equal(n, MIN(mlen, (size_t)37));
                assert_memory_equal(out, model + mlen - n, n);
        }
        scrollback_done(&s);
}

static void test_bytequeue_fifo_and_cap(void **state) {
        struct bytequeue q;

        bytequeue_init(&q, 10);
        assert_int_equal(bytequeue_len(&q), 0);
        assert_int_equal(bytequeue_append(&q, "hello", 5), 0);
        assert_int_equal(bytequeue_append(&q, "world", 5), 0);
        assert_int_equal(bytequeue_room(&q), 0);
        assert_int_equal(bytequeue_append(&q, "!", 1), -ENOBUFS); /* refused whole */
        assert_int_equal(bytequeue_len(&q), 10);
        assert_memory_equal(bytequeue_peek(&q), "helloworld", 10);
        bytequeue_consume(&q, 3);
        assert_int_equal(bytequeue_len(&q), 7);
        assert_memory_equal(bytequeue_peek(&q), "loworld", 7);
        /* Room again: the consumed bytes make space (moved, not grown). */
        assert_int_equal(bytequeue_append(&q, "abc", 3), 0);
        assert_memory_equal(bytequeue_peek(&q), "loworldabc", 10);
        assert_int_equal(bytequeue_append(&q, "x", 1), -ENOBUFS);
        bytequeue_consume(&q, 100); /* more than held: empties */
        assert_int_equal(bytequeue_len(&q), 0);
        assert_int_equal(bytequeue_append(&q, "", 0), 0);
        bytequeue_done(&q);
        assert_int_equal(bytequeue_len(&q), 0);
        assert_int_equal(q.max, 10); /* reusable */
}

static void test_bytequeue_grows_and_keeps_order(void **state) {
        struct bytequeue q;
        uint8_t in[1000], got[20000];
        size_t total_in = 0, total_out = 0;

        for (size_t i = 0; i < sizeof(in); i++)
                in[i] = (uint8_t)(i * 7);
        bytequeue_init(&q, 5000);
        for (int round = 0; round < 200; round++) {
                size_t n = (size_t)(round * 37) % sizeof(in);

                if (bytequeue_append(&q, in, n) == 0) {
                        total_in += n;
                } else {
                        assert_true(n > bytequeue_room(&q));
                }
                size_t take = MIN(bytequeue_len(&q), (size_t)(round * 13) % 700);
                if (take > 0 && total_out + take <= sizeof(got))
                        memcpy(got + total_out, bytequeue_peek(&q), take);
                total_out += take;
                bytequeue_consume(&q, take);
                assert_true(bytequeue_len(&q) <= 5000);
        }
        assert_int_equal(total_in - total_out, bytequeue_len(&q));
        bytequeue_done(&q);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_scrollback_fills_then_forgets_oldest),
                cmocka_unit_test(test_scrollback_write_larger_than_capacity),
                cmocka_unit_test(test_scrollback_read_in_pieces),
                cmocka_unit_test(test_scrollback_zero_capacity),
                cmocka_unit_test(test_scrollback_matches_model),
                cmocka_unit_test(test_bytequeue_fifo_and_cap),
                cmocka_unit_test(test_bytequeue_grows_and_keeps_order),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
