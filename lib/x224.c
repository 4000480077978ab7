/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The first client PDU of an RDP connection: a strict, incremental parser
 * and the encoder that writes exactly what the parser accepts.
 *
 * The gateway calls tsf_cr_parse() every time bytes arrive, on everything
 * read so far, before a single byte has been forwarded anywhere. So the
 * parser must never read past `len`, never allocate, never log, and must
 * answer the same way for the same bytes: a prefix of a good PDU is "need
 * more", and a byte that cannot be right makes the answer "invalid" at once
 * (a port scanner or a TLS ClientHello is turned away without waiting for
 * the handshake deadline). docs/x224.md is the operator's version of this.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tsfarm/macro.h"
#include "tsfarm/x224.h"

#define COOKIE_MSTSHASH_PREFIX "Cookie: mstshash="
#define COOKIE_MSTS_PREFIX "Cookie: msts="
#define LB_TSV_PREFIX "tsv://"
#define LB_MTH_PREFIX "mth://"
#define STRLEN(s) (sizeof(s "") - 1)

/* The PCB string in UTF-8 can never overflow pcb_string: at most
 * TSF_PCB_CCH_MAX - 1 units besides the NUL, each at most 3 bytes (a
 * surrogate pair is 2 units and 4 bytes). */
_Static_assert(3 * (TSF_PCB_CCH_MAX - 1) <= TSF_PCB_UTF8_MAX, "pcb_string too small");
_Static_assert(TSF_PCB_MAX == TSF_PCB_V2_HEADER_SIZE + 2 * TSF_PCB_CCH_MAX, "PCB cap");
/* A token line and its CRLF fill at most the TPDU after the fixed part. */
_Static_assert(TSF_CR_COOKIE_MAX + 2 == TSF_X224_LI_MAX - (TSF_X224_CR_FIXED_SIZE - 1), "cookie cap");
/* A valid cbSize is even, so its first byte is never the TPKT version. */
_Static_assert(TSF_TPKT_VERSION % 2 == 1, "TPKT version must be odd to tell it from a PCB");

/* Whether buf[off..off+n) has arrived: the one check before every read. */
static bool have(size_t len, size_t off, size_t n) {
        return off <= len && len - off >= n;
}

static enum tsf_cr_status fail(struct tsf_cr *out, enum tsf_cr_error error, size_t offset) {
        out->error = error;
        out->error_offset = offset;
        out->consumed = 0;
        return TSF_CR_INVALID;
}

/* Checks that the n-byte little-endian field at `off` holds `value`, byte by
 * byte, so that a wrong byte is reported before the rest of the field has
 * arrived. Errors point at the first byte of the field. TSF_CR_COMPLETE
 * means "all there and right". */
static enum tsf_cr_status expect_le(const uint8_t *buf, size_t len, size_t off, size_t n, uint32_t value,
                                    enum tsf_cr_error error, struct tsf_cr *out) {
        for (size_t i = 0; i < n; i++) {
                if (!have(len, off + i, 1))
                        return TSF_CR_NEED_MORE;
                if (buf[off + i] != (uint8_t)(value >> (8 * i)))
                        return fail(out, error, off);
        }
        return TSF_CR_COMPLETE;
}

/* Bytes allowed in a token line: printable ASCII, and anything >= 0x80
 * (clients send user names in their ANSI code page). */
static bool line_char(uint8_t c) {
        return c >= 0x20 && c != 0x7F;
}

static bool has_prefix(const char *s, size_t n, const char *prefix, size_t plen) {
        return n >= plen && memcmp(s, prefix, plen) == 0;
}

/* What a token line is; `*value_offset` is where the value starts. */
static enum tsf_cookie_kind classify_line(const char *line, size_t n, size_t *value_offset) {
        *value_offset = 0;
        if (has_prefix(line, n, COOKIE_MSTSHASH_PREFIX, STRLEN(COOKIE_MSTSHASH_PREFIX))) {
                *value_offset = STRLEN(COOKIE_MSTSHASH_PREFIX);
                return TSF_COOKIE_MSTSHASH;
        }
        if (has_prefix(line, n, COOKIE_MSTS_PREFIX, STRLEN(COOKIE_MSTS_PREFIX))) {
                *value_offset = STRLEN(COOKIE_MSTS_PREFIX);
                return TSF_COOKIE_ROUTING_TOKEN;
        }
        if (has_prefix(line, n, LB_TSV_PREFIX, STRLEN(LB_TSV_PREFIX)))
                return TSF_COOKIE_TSV;
        if (has_prefix(line, n, LB_MTH_PREFIX, STRLEN(LB_MTH_PREFIX)))
                return TSF_COOKIE_MTH;
        return TSF_COOKIE_OTHER;
}

/* An empty line, or a cookie with nothing after "=", names nobody: a client
 * bug or a probe, and a directory lookup for "" must never happen. */
static bool line_empty(const char *line, size_t n) {
        size_t value_offset;
        enum tsf_cookie_kind kind = classify_line(line, n, &value_offset);

        if (n == 0)
                return true;
        return (kind == TSF_COOKIE_MSTSHASH || kind == TSF_COOKIE_ROUTING_TOKEN) && value_offset == n;
}

static void set_cookie(struct tsf_cr *out, const uint8_t *line, size_t n) {
        size_t value_offset;

        memcpy(out->cookie, line, n);
        out->cookie[n] = '\0';
        out->cookie_len = n;
        out->cookie_kind = classify_line(out->cookie, n, &value_offset);
        out->cookie_value_offset = value_offset;
        out->cookie_value_len = n - value_offset;
        if (out->cookie_kind == TSF_COOKIE_ROUTING_TOKEN)
                out->routing_decoded =
                        tsf_routing_token_decode(out->cookie + value_offset, n - value_offset,
                                                 &out->routing_ipv4_be, &out->routing_port) >= 0;
}

/* ---- Preconnection PDU ------------------------------------------------- */

static bool pcb_size_valid(uint32_t size) {
        /* V1 is exactly 16 bytes; V2 is 18 + 2 * cchPCB (cchPCB may be 0:
         * MS-RDPEPS 3.1.5.2 says the string is then absent). */
        return size == TSF_PCB_V1_SIZE ||
               (size >= TSF_PCB_V2_HEADER_SIZE && size <= TSF_PCB_MAX && size % 2 == 0);
}

static size_t put_utf8(char *p, uint32_t cp) {
        if (cp < 0x80) {
                p[0] = (char)cp;
                return 1;
        }
        if (cp < 0x800) {
                p[0] = (char)(0xC0 | (cp >> 6));
                p[1] = (char)(0x80 | (cp & 0x3F));
                return 2;
        }
        if (cp < 0x10000) {
                p[0] = (char)(0xE0 | (cp >> 12));
                p[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                p[2] = (char)(0x80 | (cp & 0x3F));
                return 3;
        }
        p[0] = (char)(0xF0 | (cp >> 18));
        p[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        p[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        p[3] = (char)(0x80 | (cp & 0x3F));
        return 4;
}

static bool is_high_surrogate(uint32_t u) {
        return u >= 0xD800 && u <= 0xDBFF;
}

static bool is_low_surrogate(uint32_t u) {
        return u >= 0xDC00 && u <= 0xDFFF;
}

/* wszPCB: `cch` UTF-16LE units at `off`, the last one NUL and no other NUL,
 * surrogates paired. Converted to UTF-8 into out->pcb_string as it goes. */
static enum tsf_cr_status parse_pcb_string(const uint8_t *buf, size_t len, size_t off, size_t cch,
                                           struct tsf_cr *out) {
        size_t w = 0;
        uint32_t high = 0;

        for (size_t i = 0; i < cch; i++) {
                size_t at = off + 2 * i;
                uint32_t u;

                if (i + 1 == cch)
                        /* The terminator; checked byte by byte so that a
                         * missing NUL is reported as soon as it shows. A
                         * pending high surrogate was refused below. */
                        return expect_le(buf, len, at, 2, 0, TSF_CR_ERR_PCB_STRING, out);

                if (!have(len, at, 2))
                        return TSF_CR_NEED_MORE;
                u = get_le16(buf + at);

                if (high != 0) {
                        if (!is_low_surrogate(u))
                                return fail(out, TSF_CR_ERR_PCB_STRING, at - 2);
                        w += put_utf8(out->pcb_string + w, 0x10000 + ((high - 0xD800) << 10) + (u - 0xDC00));
                        high = 0;
                        continue;
                }
                if (u == 0 || is_low_surrogate(u))
                        return fail(out, TSF_CR_ERR_PCB_STRING, at);
                if (is_high_surrogate(u)) {
                        /* The next unit is the NUL: no low surrogate can come. */
                        if (i + 2 == cch)
                                return fail(out, TSF_CR_ERR_PCB_STRING, at);
                        high = u;
                        continue;
                }
                w += put_utf8(out->pcb_string + w, u);
        }
        return TSF_CR_COMPLETE;
}

/*
 * Preconnection PDU (MS-RDPEPS 2.2.1.1 and 2.2.1.2), all little-endian:
 *
 *   0         4         8         12        16      18
 *   +---------+---------+---------+---------+-------+--------------------+
 *   | cbSize  | Flags=0 | Version | Id      | cchPCB| wszPCB (v2 only)   |
 *   +---------+---------+---------+---------+-------+--------------------+
 *   |<------------- V1: cbSize = 16 ------->|
 *   |<------------- V2: cbSize = 18 + 2 * cchPCB ------------------------>|
 *
 * cbSize decides the layout (16: V1, 18 or more: V2, as MS-RDPEPS 3.2.5.1
 * says); Version must agree with it. wszPCB is cchPCB UTF-16LE units, the
 * last one NUL; cchPCB = 0 means no string at all.
 */
static enum tsf_cr_status parse_pcb(const uint8_t *buf, size_t len, struct tsf_cr *out) {
        enum tsf_cr_status s;
        uint32_t size, version;

        /* Every valid cbSize is even: an odd first byte is not a PCB, and
         * need not wait for three more bytes to be refused. */
        if (!have(len, 0, 1))
                return TSF_CR_NEED_MORE;
        if (buf[0] & 1)
                return fail(out, TSF_CR_ERR_PCB_SIZE, 0);
        /* The upper two bytes must be 0, so two bytes decide the size. */
        if (!have(len, 0, 2))
                return TSF_CR_NEED_MORE;
        size = get_le16(buf);
        if (!pcb_size_valid(size))
                return fail(out, TSF_CR_ERR_PCB_SIZE, 0);
        for (size_t i = 2; i < 4; i++) {
                if (!have(len, i, 1))
                        return TSF_CR_NEED_MORE;
                if (buf[i] != 0)
                        return fail(out, TSF_CR_ERR_PCB_SIZE, 0);
        }

        s = expect_le(buf, len, 4, 4, 0, TSF_CR_ERR_PCB_FLAGS, out);
        if (s != TSF_CR_COMPLETE)
                return s;

        version = size == TSF_PCB_V1_SIZE ? 1 : 2;
        s = expect_le(buf, len, 8, 4, version, TSF_CR_ERR_PCB_VERSION, out);
        if (s != TSF_CR_COMPLETE)
                return s;

        if (!have(len, 12, 4))
                return TSF_CR_NEED_MORE;
        out->has_pcb = true;
        out->pcb_size = size;
        out->pcb_version = version;
        out->pcb_id = get_le32(buf + 12);
        if (version == 1)
                return TSF_CR_COMPLETE;

        /* cbSize already fixed the string length; cchPCB must repeat it. */
        out->pcb_cch = (uint16_t)((size - TSF_PCB_V2_HEADER_SIZE) / 2);
        s = expect_le(buf, len, 16, 2, out->pcb_cch, TSF_CR_ERR_PCB_STRING, out);
        if (s != TSF_CR_COMPLETE)
                return s;

        return parse_pcb_string(buf, len, TSF_PCB_V2_HEADER_SIZE, out->pcb_cch, out);
}

/* ---- TPKT + X.224 Connection Request ----------------------------------- */

/*
 * The token line: bytes allowed by line_char(), then CR LF, all inside the
 * TPDU. `p` is its first byte; on success `*next` is the byte after the LF.
 */
static enum tsf_cr_status parse_token_line(const uint8_t *buf, size_t len, size_t p, size_t end,
                                           struct tsf_cr *out, size_t *next) {
        for (size_t q = p;; q++) {
                size_t n = q - p; /* line bytes before q */

                if (!have(len, q, 1))
                        return TSF_CR_NEED_MORE;

                if (buf[q] == '\r') {
                        /* The line ends here (or the CR is a stray control
                         * character; either way it cannot be a value). */
                        if (line_empty((const char *)buf + p, n))
                                return fail(out, TSF_CR_ERR_COOKIE_EMPTY, q);
                        /* Cannot trigger today (the byte before a CR was
                         * only accepted with room for CR LF after it); kept
                         * so the LF can never be taken from past the TPDU. */
                        if (q + 1 >= end)
                                return fail(out, TSF_CR_ERR_COOKIE_NO_CRLF, q);
                        if (!have(len, q + 1, 1))
                                return TSF_CR_NEED_MORE;
                        if (buf[q + 1] != '\n')
                                return fail(out, TSF_CR_ERR_COOKIE_CHAR, q);
                        set_cookie(out, buf + p, n);
                        *next = q + 2;
                        return TSF_CR_COMPLETE;
                }

                if (!line_char(buf[q]))
                        return fail(out, TSF_CR_ERR_COOKIE_CHAR, q);
                /* With the caps in x224.h this can only happen in a TPDU of
                 * the largest size, where it is also NO_CRLF; the cap is
                 * still what the cookie buffer is sized by. */
                if (n >= TSF_CR_COOKIE_MAX)
                        return fail(out, TSF_CR_ERR_COOKIE_TOO_LONG, q);
                /* No room left for CR LF after this byte. */
                if (q + 2 >= end)
                        return fail(out, TSF_CR_ERR_COOKIE_NO_CRLF, q);
        }
}

/* RDP_NEG_REQ at `p` (its type byte, already seen), then the correlation
 * info its flags announce, then the end of the TPDU. */
static enum tsf_cr_status parse_neg_req(const uint8_t *buf, size_t len, size_t p, size_t end,
                                        struct tsf_cr *out) {
        enum tsf_cr_status s;
        bool correlation;

        if (end - p < TSF_RDP_NEG_REQ_SIZE)
                return fail(out, TSF_CR_ERR_NEG_LENGTH, p);

        if (!have(len, p + 1, 1))
                return TSF_CR_NEED_MORE;
        correlation = buf[p + 1] & TSF_RDP_NEG_FLAG_CORRELATION_INFO_PRESENT;
        /* Flagged, but the TPDU ends before 36 more bytes could. */
        if (correlation && end - p < TSF_RDP_NEG_REQ_SIZE + TSF_RDP_CORRELATION_INFO_SIZE)
                return fail(out, TSF_CR_ERR_CORRELATION, p + 1);

        s = expect_le(buf, len, p + 2, 2, TSF_RDP_NEG_REQ_SIZE, TSF_CR_ERR_NEG_LENGTH, out);
        if (s != TSF_CR_COMPLETE)
                return s;
        if (!have(len, p + 4, 4))
                return TSF_CR_NEED_MORE;
        out->has_neg_req = true;
        out->neg_flags = buf[p + 1];
        out->requested_protocols = get_le32(buf + p + 4);
        p += TSF_RDP_NEG_REQ_SIZE;

        if (correlation) {
                s = expect_le(buf, len, p, 1, TSF_RDP_CORRELATION_INFO_TYPE, TSF_CR_ERR_CORRELATION, out);
                if (s != TSF_CR_COMPLETE)
                        return s;
                s = expect_le(buf, len, p + 1, 1, 0, TSF_CR_ERR_CORRELATION, out);
                if (s != TSF_CR_COMPLETE)
                        return s;
                s = expect_le(buf, len, p + 2, 2, TSF_RDP_CORRELATION_INFO_SIZE, TSF_CR_ERR_CORRELATION,
                              out);
                if (s != TSF_CR_COMPLETE)
                        return s;
                if (!have(len, p + 4, 32))
                        return TSF_CR_NEED_MORE;
                /* correlationId and reserved are kept as sent: the
                 * gateway replays them, and reserved bytes a future client
                 * sets are not ours to judge. */
                memcpy(out->correlation_id, buf + p + 4, 16);
                memcpy(out->correlation_reserved, buf + p + 20, 16);
                out->has_correlation = true;
                p += TSF_RDP_CORRELATION_INFO_SIZE;
        }

        if (p < end) {
                if (!have(len, p, 1))
                        return TSF_CR_NEED_MORE;
                if (!correlation && buf[p] == TSF_RDP_CORRELATION_INFO_TYPE)
                        return fail(out, TSF_CR_ERR_CORRELATION, p);
                return fail(out, TSF_CR_ERR_TRAILING, p);
        }
        return TSF_CR_COMPLETE;
}

/*
 * TPKT (RFC 1006) + X.224 Class 0 Connection Request (MS-RDPBCGR 2.2.1.1),
 * starting at `base` (0, or right after a Preconnection PDU):
 *
 *   0     1     2     3     4     5     6     7     8     9     10    11
 *   +-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+----
 *   | 03  | 00  | length BE | LI  | E0  | DST-REF=0 | SRC-REF   |class| ...
 *   +-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+----
 *   |<-- TPKT header ------>|<-- X.224 CR, LI + 1 = length - 4 bytes ------
 *
 *   ... variable part, in this order, each optional:
 *   +------------------------------------+------------------+------------------+
 *   | token line "...\r\n"               | RDP_NEG_REQ (8)  | CORRELATION (36) |
 *   +------------------------------------+------------------+------------------+
 *     Cookie: mstshash=<id> | msts=<tok>   01 flags 08 00     06 00 24 00
 *     | tsv://... | mth://... | other      requestedProtocols id[16] reserved[16]
 *
 * The TPDU ends exactly at base + length: nothing may be left over.
 */
static enum tsf_cr_status parse_tpkt(const uint8_t *buf, size_t len, size_t base, struct tsf_cr *out) {
        enum tsf_cr_status s;
        size_t p, end;
        uint16_t length;

        if (!have(len, base, 1))
                return TSF_CR_NEED_MORE;
        if (buf[base] != TSF_TPKT_VERSION)
                return fail(out, TSF_CR_ERR_TPKT_VERSION, base);

        if (!have(len, base + 1, 1))
                return TSF_CR_NEED_MORE;
        if (buf[base + 1] != 0)
                return fail(out, TSF_CR_ERR_TPKT_RESERVED, base + 1);

        /* The high byte alone can already exceed the cap. */
        if (!have(len, base + 2, 1))
                return TSF_CR_NEED_MORE;
        if (buf[base + 2] > (TSF_CR_TPKT_MAX >> 8))
                return fail(out, TSF_CR_ERR_TPKT_LENGTH, base + 2);
        if (!have(len, base + 2, 2))
                return TSF_CR_NEED_MORE;
        length = get_be16(buf + base + 2);
        if (length < TSF_TPKT_HEADER_SIZE + TSF_X224_CR_FIXED_SIZE || length > TSF_CR_TPKT_MAX)
                return fail(out, TSF_CR_ERR_TPKT_LENGTH, base + 2);
        out->tpkt_length = length;
        end = base + length;

        if (!have(len, base + 4, 1))
                return TSF_CR_NEED_MORE;
        if (buf[base + 4] != length - TSF_TPKT_HEADER_SIZE - 1)
                return fail(out, TSF_CR_ERR_X224_LENGTH, base + 4);
        out->li = buf[base + 4];

        if (!have(len, base + 5, 1))
                return TSF_CR_NEED_MORE;
        if (buf[base + 5] != TSF_X224_TPDU_CR)
                return fail(out, TSF_CR_ERR_X224_CODE, base + 5);

        s = expect_le(buf, len, base + 6, 2, 0, TSF_CR_ERR_X224_DST_REF, out);
        if (s != TSF_CR_COMPLETE)
                return s;

        if (!have(len, base + 8, 2))
                return TSF_CR_NEED_MORE;
        out->src_ref = get_be16(buf + base + 8);

        if (!have(len, base + 10, 1))
                return TSF_CR_NEED_MORE;
        if (buf[base + 10] != 0)
                return fail(out, TSF_CR_ERR_X224_CLASS, base + 10);

        p = base + TSF_TPKT_HEADER_SIZE + TSF_X224_CR_FIXED_SIZE;
        if (p == end)
                return TSF_CR_COMPLETE;

        if (!have(len, p, 1))
                return TSF_CR_NEED_MORE;
        if (buf[p] != TSF_RDP_NEG_REQ_TYPE) {
                /* A token line starts with a line byte (or CR, which makes
                 * it empty); any other binary byte here is no structure we
                 * know. */
                if (!line_char(buf[p]) && buf[p] != '\r')
                        return fail(out, TSF_CR_ERR_NEG_TYPE, p);
                s = parse_token_line(buf, len, p, end, out, &p);
                if (s != TSF_CR_COMPLETE)
                        return s;
                if (p == end)
                        return TSF_CR_COMPLETE;
                if (!have(len, p, 1))
                        return TSF_CR_NEED_MORE;
                if (buf[p] != TSF_RDP_NEG_REQ_TYPE)
                        return fail(out, TSF_CR_ERR_NEG_TYPE, p);
        }
        return parse_neg_req(buf, len, p, end, out);
}

enum tsf_cr_status tsf_cr_parse(const uint8_t *buf, size_t len, struct tsf_cr *out) {
        enum tsf_cr_status s;
        size_t base = 0;

        memset(out, 0, sizeof(*out));

        if (!have(len, 0, 1))
                return TSF_CR_NEED_MORE;
        /* 0x03 is the TPKT version; anything else must be a PCB's cbSize,
         * whose first byte is always even (see pcb_size_valid()). */
        if (buf[0] != TSF_TPKT_VERSION) {
                s = parse_pcb(buf, len, out);
                if (s != TSF_CR_COMPLETE)
                        return s;
                base = out->pcb_size;
        }

        s = parse_tpkt(buf, len, base, out);
        if (s != TSF_CR_COMPLETE)
                return s;
        out->consumed = base + out->tpkt_length;
        return TSF_CR_COMPLETE;
}

/* ---- Encoder ------------------------------------------------------------ */

/* Decodes one strictly valid UTF-8 sequence (no overlong forms, no
 * surrogates, nothing above U+10FFFF). Returns its length, or 0. */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp) {
        size_t need;
        uint32_t min, c;

        if (n == 0)
                return 0;
        c = s[0];
        if (c < 0x80) {
                *cp = c;
                return 1;
        } else if (c >= 0xC2 && c <= 0xDF) {
                need = 2, min = 0x80, c &= 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
                need = 3, min = 0x800, c &= 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
                need = 4, min = 0x10000, c &= 0x07;
        } else
                return 0;
        if (n < need)
                return 0;
        for (size_t i = 1; i < need; i++) {
                if ((s[i] & 0xC0) != 0x80)
                        return 0;
                c = (c << 6) | (s[i] & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
                return 0;
        *cp = c;
        return need;
}

/* The wszPCB units (without the NUL) pcb_string needs, or -EINVAL. */
static int pcb_string_units(const struct tsf_cr *in, size_t *ret) {
        const uint8_t *s = (const uint8_t *)in->pcb_string;
        const uint8_t *nul = memchr(s, 0, sizeof(in->pcb_string));
        size_t n, units = 0;

        if (!nul)
                return -EINVAL;
        n = (size_t)(nul - s);
        for (size_t i = 0; i < n;) {
                uint32_t cp;
                size_t k = utf8_next(s + i, n - i, &cp);

                if (k == 0)
                        return -EINVAL;
                units += cp >= 0x10000 ? 2 : 1;
                i += k;
        }
        *ret = units;
        return 0;
}

static size_t put_pcb_string(uint8_t *p, const char *str) {
        const uint8_t *s = (const uint8_t *)str;
        size_t n = strlen(str), w = 0;

        for (size_t i = 0; i < n;) {
                uint32_t cp = 0;
                size_t k = utf8_next(s + i, n - i, &cp);

                /* pcb_string_units() validated the string; stop rather than
                 * loop should the two ever disagree. */
                if (k == 0)
                        break;
                i += k;
                if (cp >= 0x10000) {
                        cp -= 0x10000;
                        put_le16(p + w, (uint16_t)(0xD800 | (cp >> 10)));
                        put_le16(p + w + 2, (uint16_t)(0xDC00 | (cp & 0x3FF)));
                        w += 4;
                } else {
                        put_le16(p + w, (uint16_t)cp);
                        w += 2;
                }
        }
        put_le16(p + w, 0);
        return w + 2;
}

/* Size of the PCB `in` describes, with its cchPCB, or -EINVAL. */
static int pcb_layout(const struct tsf_cr *in, size_t *size, uint16_t *cch) {
        size_t units;
        int r;

        if (in->pcb_version == 1) {
                if (in->pcb_cch != 0 || in->pcb_string[0] != '\0')
                        return -EINVAL;
                *size = TSF_PCB_V1_SIZE;
                *cch = 0;
                return 0;
        }
        if (in->pcb_version != 2)
                return -EINVAL;

        r = pcb_string_units(in, &units);
        if (r < 0)
                return r;
        if (units + 1 > TSF_PCB_CCH_MAX)
                return -EINVAL;
        if (in->pcb_cch == 0)
                /* Not given: no string at all when empty (cbSize 18),
                 * otherwise the string and its NUL. */
                *cch = units == 0 ? 0 : (uint16_t)(units + 1);
        else if (in->pcb_cch == units + 1)
                *cch = in->pcb_cch;
        else
                return -EINVAL;
        *size = TSF_PCB_V2_HEADER_SIZE + 2 * (size_t)*cch;
        return 0;
}

static bool line_valid(const char *line, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!line_char((uint8_t)line[i]))
                        return false;
        return true;
}

ssize_t tsf_cr_encode(const struct tsf_cr *in, uint8_t *buf, size_t size) {
        size_t pcb_size = 0, var_size = 0, tpkt_size, total, value_offset, p;
        uint16_t cch = 0;
        int r;

        if (in->has_pcb) {
                r = pcb_layout(in, &pcb_size, &cch);
                if (r < 0)
                        return r;
        }

        if (in->cookie_len > TSF_CR_COOKIE_MAX)
                return -EINVAL;
        if (in->cookie_len > 0) {
                if (!line_valid(in->cookie, in->cookie_len) || line_empty(in->cookie, in->cookie_len) ||
                    classify_line(in->cookie, in->cookie_len, &value_offset) != in->cookie_kind)
                        return -EINVAL;
                var_size += in->cookie_len + 2;
        } else if (in->cookie_kind != TSF_COOKIE_NONE)
                return -EINVAL;

        if (in->has_correlation && !in->has_neg_req)
                return -EINVAL;
        if (in->has_neg_req) {
                if (!!(in->neg_flags & TSF_RDP_NEG_FLAG_CORRELATION_INFO_PRESENT) != in->has_correlation)
                        return -EINVAL;
                var_size += TSF_RDP_NEG_REQ_SIZE;
                if (in->has_correlation)
                        var_size += TSF_RDP_CORRELATION_INFO_SIZE;
        }

        tpkt_size = TSF_TPKT_HEADER_SIZE + TSF_X224_CR_FIXED_SIZE + var_size;
        if (tpkt_size > TSF_CR_TPKT_MAX)
                return -EINVAL;
        total = pcb_size + tpkt_size;
        if (!buf || size < total)
                return -ENOBUFS;

        p = 0;
        if (in->has_pcb) {
                put_le32(buf, (uint32_t)pcb_size);
                put_le32(buf + 4, 0);
                put_le32(buf + 8, in->pcb_version);
                put_le32(buf + 12, in->pcb_id);
                p = TSF_PCB_V1_SIZE;
                if (in->pcb_version == 2) {
                        put_le16(buf + p, cch);
                        p += 2;
                        if (cch > 0)
                                p += put_pcb_string(buf + p, in->pcb_string);
                }
        }

        buf[p] = TSF_TPKT_VERSION;
        buf[p + 1] = 0;
        put_be16(buf + p + 2, (uint16_t)tpkt_size);
        buf[p + 4] = (uint8_t)(tpkt_size - TSF_TPKT_HEADER_SIZE - 1);
        buf[p + 5] = TSF_X224_TPDU_CR;
        put_be16(buf + p + 6, 0);
        put_be16(buf + p + 8, in->src_ref);
        buf[p + 10] = 0;
        p += TSF_TPKT_HEADER_SIZE + TSF_X224_CR_FIXED_SIZE;

        if (in->cookie_len > 0) {
                memcpy(buf + p, in->cookie, in->cookie_len);
                p += in->cookie_len;
                buf[p++] = '\r';
                buf[p++] = '\n';
        }
        if (in->has_neg_req) {
                buf[p] = TSF_RDP_NEG_REQ_TYPE;
                buf[p + 1] = in->neg_flags;
                put_le16(buf + p + 2, TSF_RDP_NEG_REQ_SIZE);
                put_le32(buf + p + 4, in->requested_protocols);
                p += TSF_RDP_NEG_REQ_SIZE;
        }
        if (in->has_correlation) {
                buf[p] = TSF_RDP_CORRELATION_INFO_TYPE;
                buf[p + 1] = 0;
                put_le16(buf + p + 2, TSF_RDP_CORRELATION_INFO_SIZE);
                memcpy(buf + p + 4, in->correlation_id, 16);
                memcpy(buf + p + 20, in->correlation_reserved, 16);
                p += TSF_RDP_CORRELATION_INFO_SIZE;
        }
        return (ssize_t)p;
}

bool tsf_cr_equal(const struct tsf_cr *a, const struct tsf_cr *b) {
        return a->has_pcb == b->has_pcb && a->pcb_version == b->pcb_version && a->pcb_id == b->pcb_id &&
               a->pcb_cch == b->pcb_cch && strcmp(a->pcb_string, b->pcb_string) == 0 &&
               a->pcb_size == b->pcb_size && a->tpkt_length == b->tpkt_length && a->li == b->li &&
               a->src_ref == b->src_ref && a->cookie_kind == b->cookie_kind &&
               a->cookie_len == b->cookie_len && a->cookie_len <= TSF_CR_COOKIE_MAX &&
               memcmp(a->cookie, b->cookie, a->cookie_len) == 0 &&
               a->cookie_value_offset == b->cookie_value_offset &&
               a->cookie_value_len == b->cookie_value_len && a->routing_decoded == b->routing_decoded &&
               a->routing_ipv4_be == b->routing_ipv4_be && a->routing_port == b->routing_port &&
               a->has_neg_req == b->has_neg_req && a->neg_flags == b->neg_flags &&
               a->requested_protocols == b->requested_protocols &&
               a->has_correlation == b->has_correlation &&
               memcmp(a->correlation_id, b->correlation_id, sizeof(a->correlation_id)) == 0 &&
               memcmp(a->correlation_reserved, b->correlation_reserved, sizeof(a->correlation_reserved)) ==
                       0 &&
               a->consumed == b->consumed;
}

/* ---- Routing token ------------------------------------------------------ */

/* Decimal digits at s[*i..), at least one, value at most `max`. */
static int parse_decimal(const char *s, size_t len, size_t *i, uint32_t max, uint32_t *ret) {
        uint64_t v = 0;
        size_t start = *i;

        for (; *i < len && s[*i] >= '0' && s[*i] <= '9'; (*i)++) {
                v = v * 10 + (uint64_t)(s[*i] - '0');
                if (v > max)
                        return -EINVAL;
        }
        if (*i == start)
                return -EINVAL;
        *ret = (uint32_t)v;
        return 0;
}

/*
 * "<u32>.<u16>.<reserved>": u32 is the IPv4 address's four bytes in network
 * order read as a little-endian integer, u16 the port byte-swapped, reserved
 * optional digits (Windows writes "0000"). 172.31.249.216:3389 is
 * "3640205228.15629.0000".
 */
int tsf_routing_token_decode(const char *token, size_t len, uint32_t *ipv4_be, uint16_t *port) {
        uint32_t addr, p16;
        size_t i = 0;
        uint8_t bytes[4];

        if (!token)
                return -EINVAL;
        if (parse_decimal(token, len, &i, UINT32_MAX, &addr) < 0)
                return -EINVAL;
        if (i >= len || token[i++] != '.')
                return -EINVAL;
        if (parse_decimal(token, len, &i, UINT16_MAX, &p16) < 0)
                return -EINVAL;
        if (i >= len || token[i++] != '.')
                return -EINVAL;
        for (; i < len; i++)
                if (token[i] < '0' || token[i] > '9')
                        return -EINVAL;

        bytes[0] = (uint8_t)addr;
        bytes[1] = (uint8_t)(addr >> 8);
        bytes[2] = (uint8_t)(addr >> 16);
        bytes[3] = (uint8_t)(addr >> 24);
        if (ipv4_be)
                memcpy(ipv4_be, bytes, sizeof(bytes));
        if (port)
                *port = (uint16_t)((p16 >> 8) | ((p16 & 0xFF) << 8));
        return 0;
}

int tsf_routing_token_format(uint32_t ipv4_be, uint16_t port, char *buf, size_t size) {
        uint8_t b[4];
        uint32_t addr;
        int n;

        memcpy(b, &ipv4_be, sizeof(b));
        addr = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
        if (!buf || size == 0)
                return -ENOBUFS;
        n = snprintf(buf, size, "%" PRIu32 ".%u.0000", addr,
                     (unsigned)(uint16_t)((port >> 8) | (port << 8)));
        if (n < 0 || (size_t)n >= size)
                return -ENOBUFS;
        return n;
}

/* ---- Names -------------------------------------------------------------- */

static const char *const status_table[] = {
        [TSF_CR_COMPLETE] = "complete",
        [TSF_CR_NEED_MORE] = "need-more",
        [TSF_CR_INVALID] = "invalid",
};

static const char *const error_table[_TSF_CR_ERR_MAX] = {
        [TSF_CR_OK] = "ok",
        [TSF_CR_ERR_PCB_SIZE] = "pcb-size",
        [TSF_CR_ERR_PCB_FLAGS] = "pcb-flags",
        [TSF_CR_ERR_PCB_VERSION] = "pcb-version",
        [TSF_CR_ERR_PCB_STRING] = "pcb-string",
        [TSF_CR_ERR_TPKT_VERSION] = "tpkt-version",
        [TSF_CR_ERR_TPKT_RESERVED] = "tpkt-reserved",
        [TSF_CR_ERR_TPKT_LENGTH] = "tpkt-length",
        [TSF_CR_ERR_X224_LENGTH] = "x224-length",
        [TSF_CR_ERR_X224_CODE] = "x224-code",
        [TSF_CR_ERR_X224_DST_REF] = "x224-dst-ref",
        [TSF_CR_ERR_X224_CLASS] = "x224-class",
        [TSF_CR_ERR_COOKIE_NO_CRLF] = "cookie-no-crlf",
        [TSF_CR_ERR_COOKIE_TOO_LONG] = "cookie-too-long",
        [TSF_CR_ERR_COOKIE_CHAR] = "cookie-char",
        [TSF_CR_ERR_COOKIE_EMPTY] = "cookie-empty",
        [TSF_CR_ERR_NEG_TYPE] = "neg-type",
        [TSF_CR_ERR_NEG_LENGTH] = "neg-length",
        [TSF_CR_ERR_CORRELATION] = "correlation",
        [TSF_CR_ERR_TRAILING] = "trailing",
};

static const char *const error_description_table[_TSF_CR_ERR_MAX] = {
        [TSF_CR_OK] = "No error.",
        [TSF_CR_ERR_PCB_SIZE] =
                "The first byte is not a TPKT header (0x03), and as the cbSize of a Preconnection "
                "PDU it is impossible: odd, below 16, 17, or above the size cap.",
        [TSF_CR_ERR_PCB_FLAGS] = "The Preconnection PDU's Flags field is not zero.",
        [TSF_CR_ERR_PCB_VERSION] =
                "The Preconnection PDU's Version is not 1 (for a 16-byte PDU) or 2 (for a "
                "longer one).",
        [TSF_CR_ERR_PCB_STRING] =
                "The Preconnection PDU's string is malformed: cchPCB disagrees with cbSize, the "
                "last character is not NUL, there is a NUL before it, or a UTF-16 surrogate is "
                "unpaired.",
        [TSF_CR_ERR_TPKT_VERSION] =
                "The PDU after the Preconnection PDU does not start with TPKT version 3.",
        [TSF_CR_ERR_TPKT_RESERVED] = "The TPKT header's reserved byte is not zero.",
        [TSF_CR_ERR_TPKT_LENGTH] =
                "The TPKT length is too small for a Connection Request or above the size cap.",
        [TSF_CR_ERR_X224_LENGTH] = "The X.224 length indicator does not equal the TPKT length minus 5.",
        [TSF_CR_ERR_X224_CODE] = "The X.224 TPDU is not a Connection Request (code 0xE0).",
        [TSF_CR_ERR_X224_DST_REF] = "The X.224 Connection Request's DST-REF is not zero.",
        [TSF_CR_ERR_X224_CLASS] =
                "The X.224 Connection Request asks for a class or option other than class 0.",
        [TSF_CR_ERR_COOKIE_NO_CRLF] =
                "The cookie or routing-token line does not end with CR LF inside the TPDU.",
        [TSF_CR_ERR_COOKIE_TOO_LONG] = "The cookie or routing-token line is longer than the cap.",
        [TSF_CR_ERR_COOKIE_CHAR] = "The cookie or routing-token line contains a control character.",
        [TSF_CR_ERR_COOKIE_EMPTY] = "The cookie or routing-token line is empty, or has nothing after "
                                    "\"mstshash=\" or \"msts=\".",
        [TSF_CR_ERR_NEG_TYPE] =
                "The bytes after the cookie line (or the fixed header) are not an RDP_NEG_REQ "
                "(type 0x01).",
        [TSF_CR_ERR_NEG_LENGTH] = "The RDP_NEG_REQ length field is not 8, or the TPDU ends inside it.",
        [TSF_CR_ERR_CORRELATION] =
                "The correlation info is flagged but missing or malformed, or present without "
                "the flag in RDP_NEG_REQ.",
        [TSF_CR_ERR_TRAILING] = "Bytes are left over inside the TPDU after the last structure.",
};

static const char *const cookie_kind_table[_TSF_COOKIE_KIND_MAX] = {
        [TSF_COOKIE_NONE] = "none",
        [TSF_COOKIE_MSTSHASH] = "mstshash",
        [TSF_COOKIE_ROUTING_TOKEN] = "routing-token",
        [TSF_COOKIE_TSV] = "tsv",
        [TSF_COOKIE_MTH] = "mth",
        [TSF_COOKIE_OTHER] = "other",
};

const char *tsf_cr_status_to_string(enum tsf_cr_status s) {
        return (unsigned)s < ELEMENTSOF(status_table) ? status_table[s] : NULL;
}

const char *tsf_cr_error_to_string(enum tsf_cr_error e) {
        return (unsigned)e < ELEMENTSOF(error_table) ? error_table[e] : NULL;
}

const char *tsf_cr_error_describe(enum tsf_cr_error e) {
        return (unsigned)e < ELEMENTSOF(error_description_table) ? error_description_table[e] : NULL;
}

const char *tsf_cookie_kind_to_string(enum tsf_cookie_kind k) {
        return (unsigned)k < ELEMENTSOF(cookie_kind_table) ? cookie_kind_table[k] : NULL;
}
