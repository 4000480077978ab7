/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Hex text <-> bytes, for operators pasting PDUs out of packet captures.
 * The accepted forms are what capture tools print: "0300002e",
 * "03 00 00 2e", "03:00:00:2e" (tshark), "0x03 0x00", xxd -p lines.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "tsfarm/hex.h"

static int hex_value(unsigned char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

static bool is_separator(unsigned char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == ':' ||
               c == '-';
}

/* A "0x" prefix counts only where a run of digits starts: "0x03" is the byte
 * 03, but in "030x04" the 'x' follows a digit and is an error. */
static bool is_prefix_at(const unsigned char *s, size_t len, size_t i) {
        return i + 1 < len && s[i] == '0' && (s[i + 1] == 'x' || s[i + 1] == 'X') &&
               (i == 0 || hex_value(s[i - 1]) < 0);
}

/* The whole text is validated before -ENOBUFS is decided, so the answer
 * does not depend on the buffer size: bad text is -EINVAL even when the
 * buffer is also too small, and size 0 (buf NULL) counts the bytes. */
ssize_t tsf_hex_decode(const char *text, size_t len, uint8_t *buf, size_t size, size_t *bad_offset) {
        const unsigned char *s = (const unsigned char *)text;
        size_t n = 0, half_at = 0;
        int high = -1; /* first digit of a byte waiting for its second */

        for (size_t i = 0; i < len; i++) {
                int v;

                if (high < 0 && is_prefix_at(s, len, i)) {
                        /* The prefix must introduce digits: "0x" alone or
                         * "0x " names no byte; blame the 'x'. */
                        if (i + 2 >= len || hex_value(s[i + 2]) < 0) {
                                if (bad_offset)
                                        *bad_offset = i + 1;
                                return -EINVAL;
                        }
                        i++;
                        continue;
                }

                v = hex_value(s[i]);
                if (v < 0) {
                        if (!is_separator(s[i])) {
                                if (bad_offset)
                                        *bad_offset = i;
                                return -EINVAL;
                        }
                        /* A separator after a lone digit ("0 3", "abc\n"):
                         * the digit is what lacks its partner, so point at
                         * it, as for an odd count at the end. */
                        if (high >= 0) {
                                if (bad_offset)
                                        *bad_offset = half_at;
                                return -EINVAL;
                        }
                        continue;
                }

                if (high < 0) {
                        high = v;
                        half_at = i;
                        continue;
                }
                if (n < size)
                        buf[n] = (uint8_t)(high << 4 | v);
                n++;
                high = -1;
        }

        if (high >= 0) {
                /* Odd number of digits: the last digit has no partner. */
                if (bad_offset)
                        *bad_offset = half_at;
                return -EINVAL;
        }
        if (n > size)
                return -ENOBUFS;
        return (ssize_t)n;
}

void tsf_hex_encode(const uint8_t *buf, size_t len, char *out) {
        static const char digits[] = "0123456789abcdef";

        for (size_t i = 0; i < len; i++) {
                out[2 * i] = digits[buf[i] >> 4];
                out[2 * i + 1] = digits[buf[i] & 0xf];
        }
        out[2 * len] = '\0';
}

/* Character set only: text with an odd number of digits still "looks like
 * hex", so a caller that auto-detects the format reports "odd number of hex
 * digits" instead of misreading the text as raw bytes. Empty text is hex
 * (it decodes to zero bytes). */
int tsf_hex_looks_like_hex(const uint8_t *buf, size_t len) {
        for (size_t i = 0; i < len; i++) {
                if (hex_value(buf[i]) >= 0 || is_separator(buf[i]))
                        continue;
                if ((buf[i] == 'x' || buf[i] == 'X') && i > 0 && buf[i - 1] == '0' &&
                    (i == 1 || hex_value(buf[i - 2]) < 0))
                        continue;
                return 0;
        }
        return 1;
}

ssize_t tsf_hex_decode_strict(const char *text, uint8_t *buf, size_t min, size_t max) {
        size_t n = strlen(text);

        if (n % 2 != 0 || n / 2 < min || n / 2 > max)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f') ||
                      (text[i] >= 'A' && text[i] <= 'F')))
                        return -EINVAL;
        return tsf_hex_decode(text, n, buf, max, NULL);
}
