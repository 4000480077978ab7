/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the first-PDU parser and encoder (lib/x224.c): the spec's
 * samples, every error with its offset and the byte at which it is first
 * reported, the routing-token facts, and an encode/parse round trip over
 * many generated PDUs.
 *
 * Every parse runs on a heap copy of exactly the bytes given, so that
 * AddressSanitizer catches a read past `len`.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tsfarm/macro.h"
#include "tsfarm/x224.h"

/* ---- helpers ------------------------------------------------------------ */

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Hex with optional spaces; fails the test on anything else. */
static size_t unhex(const char *hex, uint8_t *out, size_t size) {
        size_t n = 0;

        for (const char *p = hex; *p;) {
                if (*p == ' ') {
                        p++;
                        continue;
                }
                assert_true(hexval(p[0]) >= 0 && p[1] && hexval(p[1]) >= 0);
                assert_true(n < size);
                out[n++] = (uint8_t)(hexval(p[0]) << 4 | hexval(p[1]));
                p += 2;
        }
        return n;
}

/* Parses a heap copy of exactly `len` bytes (ASan sees any overread). */
static enum tsf_cr_status parse_exact(const uint8_t *bytes, size_t len, struct tsf_cr *cr) {
        uint8_t *copy = len > 0 ? malloc(len) : NULL;
        enum tsf_cr_status s;

        if (len > 0) {
                assert_non_null(copy);
                memcpy(copy, bytes, len);
        }
        s = tsf_cr_parse(copy, len, cr);
        free(copy);
        return s;
}

static void assert_all_prefixes_need_more(const uint8_t *bytes, size_t len) {
        struct tsf_cr cr;

        for (size_t k = 0; k < len; k++) {
                enum tsf_cr_status s = parse_exact(bytes, k, &cr);

                if (s != TSF_CR_NEED_MORE)
                        fail_msg("prefix of %zu/%zu bytes: %s (%s at %zu)", k, len,
                                 tsf_cr_status_to_string(s), tsf_cr_error_to_string(cr.error),
                                 cr.error_offset);
        }
}

/* Parses a complete PDU, checks every prefix, bytes after it, and that the
 * encoder writes it back byte for byte. */
static void parse_complete(const uint8_t *bytes, size_t len, struct tsf_cr *cr) {
        uint8_t more[TSF_FIRST_PDU_MAX + 8], enc[TSF_FIRST_PDU_MAX];
        struct tsf_cr again;
        ssize_t n;

        assert_int_equal(parse_exact(bytes, len, cr), TSF_CR_COMPLETE);
        assert_int_equal(cr->consumed, len);
        assert_int_equal(cr->error, TSF_CR_OK);
        assert_all_prefixes_need_more(bytes, len);

        /* What follows the PDU is not ours and changes nothing. */
        assert_true(len + 3 <= sizeof(more));
        memcpy(more, bytes, len);
        memcpy(more + len, "\x03\x00\xff", 3);
        assert_int_equal(parse_exact(more, len + 3, &again), TSF_CR_COMPLETE);
        assert_true(tsf_cr_equal(cr, &again));

        n = tsf_cr_encode(cr, enc, sizeof(enc));
        assert_int_equal(n, (ssize_t)len);
        assert_memory_equal(enc, bytes, len);
}

/* The MS-RDPBCGR 4.1.1 Client X.224 Connection Request sample. */
#define MS_SAMPLE_HEX \
        "0300002c27e00000000000436f6f6b69653a206d737473686173683d656c746f6e730d0a0100080000000000"
/* MS-RDPEPS 4 examples. */
#define PCB_V1_HEX "10000000 00000000 01000000 eb99c6ee"
#define PCB_V2_TESTVM_HEX "20000000 00000000 02000000 00000000 0700 5400 6500 7300 7400 5600 4d00 0000"
/* A Connection Request with nothing but an RDP_NEG_REQ (TLS | CredSSP). */
#define NEG_ONLY_HEX "03000013 0e e0 0000 0000 00 01 00 0800 03000000"
#define MINIMAL_HEX "0300000b 06 e0 0000 0000 00"

/* ---- positive cases ----------------------------------------------------- */

static void test_ms_sample(void **state) {
        uint8_t b[64];
        size_t n = unhex(MS_SAMPLE_HEX, b, sizeof(b));
        struct tsf_cr cr;

        parse_complete(b, n, &cr);
        assert_false(cr.has_pcb);
        assert_int_equal(cr.tpkt_length, 44);
        assert_int_equal(cr.li, 39);
        assert_int_equal(cr.src_ref, 0);
        assert_int_equal(cr.cookie_kind, TSF_COOKIE_MSTSHASH);
        assert_string_equal(cr.cookie, "Cookie: mstshash=eltons");
        assert_int_equal(cr.cookie_len, 23);
        assert_int_equal(cr.cookie_value_offset, 17);
        assert_int_equal(cr.cookie_value_len, 6);
        assert_memory_equal(cr.cookie + cr.cookie_value_offset, "eltons", 6);
        assert_true(cr.has_neg_req);
        assert_int_equal(cr.neg_flags, 0);
        assert_int_equal(cr.requested_protocols, 0);
        assert_false(cr.has_correlation);
        assert_false(cr.routing_decoded);
}

static void test_minimal_and_neg_only(void **state) {
        uint8_t b[64];
        size_t n = unhex(MINIMAL_HEX, b, sizeof(b));
        struct tsf_cr cr;

        /* Old clients send no cookie and no RDP_NEG_REQ at all. */
        parse_complete(b, n, &cr);
        assert_int_equal(cr.consumed, 11);
        assert_int_equal(cr.cookie_kind, TSF_COOKIE_NONE);
        assert_false(cr.has_neg_req);

        /* Current mstsc sends no cookie either. */
        n = unhex(NEG_ONLY_HEX, b, sizeof(b));
        parse_complete(b, n, &cr);
        assert_int_equal(cr.cookie_kind, TSF_COOKIE_NONE);
        assert_true(cr.has_neg_req);
        assert_int_equal(cr.requested_protocols, TSF_PROTOCOL_SSL | TSF_PROTOCOL_HYBRID);
}

static void test_src_ref_and_correlation(void **state) {
        uint8_t b[128];
        size_t n = unhex("03000037 32 e0 0000 1234 00 01 08 0800 0b000000"
                         "06 00 2400 0102030405060708090a0b0c0e0f1011 00000000000000000000000000000000",
                         b, sizeof(b));
        struct tsf_cr cr;

        parse_complete(b, n, &cr);
        assert_int_equal(cr.src_ref, 0x1234);
        assert_int_equal(cr.neg_flags, TSF_RDP_NEG_FLAG_CORRELATION_INFO_PRESENT);
        assert_int_equal(cr.requested_protocols, 0x0b);
        assert_true(cr.has_correlation);
        assert_int_equal(cr.correlation_id[0], 0x01);
        assert_int_equal(cr.correlation_id[15], 0x11);
}

static void test_pcb_v1(void **state) {
        uint8_t b[128];
        size_t n = unhex(PCB_V1_HEX MS_SAMPLE_HEX, b, sizeof(b));
        struct tsf_cr cr;

        parse_complete(b, n, &cr);
        assert_true(cr.has_pcb);
        assert_int_equal(cr.pcb_version, 1);
        assert_int_equal(cr.pcb_size, 16);
        assert_int_equal(cr.pcb_id, 0xEEC699EB);
        assert_int_equal(cr.pcb_cch, 0);
        assert_string_equal(cr.pcb_string, "");
        assert_int_equal(cr.consumed, 16 + 44);
        assert_int_equal(cr.cookie_kind, TSF_COOKIE_MSTSHASH);

        /* The PCB alone is not the whole first PDU. */
        assert_int_equal(parse_exact(b, 16, &cr), TSF_CR_NEED_MORE);
}

static void test_pcb_v2_then_tpkt(void **state) {
        uint8_t b[256];
        size_t n = unhex(PCB_V2_TESTVM_HEX NEG_ONLY_HEX, b, sizeof(b));
        struct tsf_cr cr;

        parse_complete(b, n, &cr);
        assert_true(cr.has_pcb);
        assert_int_equal(cr.pcb_version, 2);
        assert_int_equal(cr.pcb_size, 32);
        assert_int_equal(cr.pcb_id, 0);
        assert_int_equal(cr.pcb_cch, 7);
        assert_string_equal(cr.pcb_string, "TestVM");
        assert_int_equal(cr.consumed, 32 + 19);
        assert_true(cr.has_neg_req);
}

static void test_pcb_v2_unicode_and_empty(void **state) {
        uint8_t b[256];
        size_t n;
        struct tsf_cr cr;

        /* "é€😀": 2-, 3- and 4-byte UTF-8, the last from a surrogate pair. */
        n = unhex("1c000000 00000000 02000000 2a000000 0500 e900 ac20 3dd8 00de 0000" MINIMAL_HEX, b,
                  sizeof(b));
        parse_complete(b, n, &cr);
        assert_int_equal(cr.pcb_id, 42);
        assert_int_equal(cr.pcb_cch, 5);
        assert_string_equal(cr.pcb_string, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");

        /* cchPCB 0: no string at all (MS-RDPEPS 3.1.5.2), cbSize 18. */
        n = unhex("12000000 00000000 02000000 07000000 0000" MINIMAL_HEX, b, sizeof(b));
        parse_complete(b, n, &cr);
        assert_int_equal(cr.pcb_size, 18);
        assert_int_equal(cr.pcb_cch, 0);
        assert_string_equal(cr.pcb_string, "");

        /* cchPCB 1: just the NUL, cbSize 20. */
        n = unhex("14000000 00000000 02000000 07000000 0100 0000" MINIMAL_HEX, b, sizeof(b));
        parse_complete(b, n, &cr);
        assert_int_equal(cr.pcb_size, 20);
        assert_int_equal(cr.pcb_cch, 1);
        assert_string_equal(cr.pcb_string, "");
}

static void test_pcb_v2_largest(void **state) {
        uint8_t b[TSF_FIRST_PDU_MAX];
        size_t p = 0;
        struct tsf_cr cr;

        /* 511 x U+4E2D (3 bytes of UTF-8 each) + NUL: the largest PCB, and
         * the longest pcb_string. */
        put_le32(b, TSF_PCB_MAX);
        put_le32(b + 4, 0);
        put_le32(b + 8, 2);
        put_le32(b + 12, 9);
        put_le16(b + 16, TSF_PCB_CCH_MAX);
        p = 18;
        for (size_t i = 0; i + 1 < TSF_PCB_CCH_MAX; i++, p += 2)
                put_le16(b + p, 0x4E2D);
        put_le16(b + p, 0);
        p += 2;
        assert_int_equal(p, TSF_PCB_MAX);
        p += unhex(MINIMAL_HEX, b + p, sizeof(b) - p);

        parse_complete(b, p, &cr);
        assert_int_equal(strlen(cr.pcb_string), 3 * (TSF_PCB_CCH_MAX - 1));
}

struct cookie_case {
        const char *line;
        enum tsf_cookie_kind kind;
        const char *value;
        bool decoded;
};

static const struct cookie_case cookie_cases[] = {
        {"Cookie: mstshash=eltons", TSF_COOKIE_MSTSHASH, "eltons", false},
        {"Cookie: mstshash=CORP\\rdpuser1", TSF_COOKIE_MSTSHASH, "CORP\\rdpuser1", false},
        {"Cookie: mstshash=J\xf6rg", TSF_COOKIE_MSTSHASH, "J\xf6rg", false}, /* ANSI code page byte */
        {"Cookie: mstshash==", TSF_COOKIE_MSTSHASH, "=", false},
        {"Cookie: msts=3640205228.15629.0000", TSF_COOKIE_ROUTING_TOKEN, "3640205228.15629.0000", true},
        {"Cookie: msts=3640205228.15629.", TSF_COOKIE_ROUTING_TOKEN, "3640205228.15629.", true},
        {"Cookie: msts=3640205228.15629", TSF_COOKIE_ROUTING_TOKEN, "3640205228.15629", false},
        {"Cookie: msts=opaque-broker-token", TSF_COOKIE_ROUTING_TOKEN, "opaque-broker-token", false},
        {"tsv://MS Terminal Services Plugin.1.Farm1", TSF_COOKIE_TSV,
         "tsv://MS Terminal Services Plugin.1.Farm1", false},
        {"mth://whatever", TSF_COOKIE_MTH, "mth://whatever", false},
        {"Cookie: mstshash", TSF_COOKIE_OTHER, "Cookie: mstshash", false},
        {"cookie: mstshash=lower", TSF_COOKIE_OTHER, "cookie: mstshash=lower", false},
        {"TSV://upper", TSF_COOKIE_OTHER, "TSV://upper", false},
        {"x", TSF_COOKIE_OTHER, "x", false},
};

static size_t build_cr(const char *line, bool neg, uint8_t *b, size_t size) {
        struct tsf_cr cr = {};
        ssize_t n;

        cr.cookie_len = strlen(line);
        assert_true(cr.cookie_len <= TSF_CR_COOKIE_MAX);
        memcpy(cr.cookie, line, cr.cookie_len);
        cr.has_neg_req = neg;
        cr.requested_protocols = TSF_PROTOCOL_SSL;
        /* Ask the encoder for the classification by trying each kind: the
         * parser's answer is checked separately below. */
        for (int k = TSF_COOKIE_MSTSHASH; k < _TSF_COOKIE_KIND_MAX; k++) {
                cr.cookie_kind = (enum tsf_cookie_kind)k;
                n = tsf_cr_encode(&cr, b, size);
                if (n > 0)
                        return (size_t)n;
        }
        fail_msg("no cookie kind encodes \"%s\"", line);
        return 0;
}

static void test_cookie_kinds(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(cookie_cases); i++) {
                const struct cookie_case *c = &cookie_cases[i];
                uint8_t b[TSF_CR_TPKT_MAX];
                size_t n = build_cr(c->line, i % 2, b, sizeof(b));
                struct tsf_cr cr;

                parse_complete(b, n, &cr);
                if (cr.cookie_kind != c->kind)
                        fail_msg("\"%s\": kind %s, expected %s", c->line,
                                 tsf_cookie_kind_to_string(cr.cookie_kind),
                                 tsf_cookie_kind_to_string(c->kind));
                assert_string_equal(cr.cookie, c->line);
                assert_int_equal(cr.cookie_value_len, strlen(c->value));
                assert_memory_equal(cr.cookie + cr.cookie_value_offset, c->value, cr.cookie_value_len);
                assert_int_equal(cr.routing_decoded, c->decoded);
                assert_int_equal(cr.has_neg_req, i % 2);
        }
}

static void test_routing_cookie_decoded(void **state) {
        uint8_t b[TSF_CR_TPKT_MAX];
        size_t n = build_cr("Cookie: msts=3640205228.15629.0000", true, b, sizeof(b));
        struct tsf_cr cr;
        const uint8_t addr[4] = {172, 31, 249, 216};

        parse_complete(b, n, &cr);
        assert_int_equal(cr.cookie_kind, TSF_COOKIE_ROUTING_TOKEN);
        assert_true(cr.routing_decoded);
        assert_memory_equal(&cr.routing_ipv4_be, addr, 4);
        assert_int_equal(cr.routing_port, 3389);
}

/* ---- routing token helpers ---------------------------------------------- */

struct token_case {
        const char *token;
        int ret;
        uint8_t addr[4];
        uint16_t port;
};

static const struct token_case token_cases[] = {
        {"3640205228.15629.0000", 0, {172, 31, 249, 216}, 3389},
        {"3640205228.15629.", 0, {172, 31, 249, 216}, 3389},
        {"3640205228.15629.123456789", 0, {172, 31, 249, 216}, 3389},
        {"0.0.", 0, {0, 0, 0, 0}, 0},
        {"4294967295.65535.0000", 0, {255, 255, 255, 255}, 65535},
        {"16777343.15629.0000", 0, {127, 0, 0, 1}, 3389},
        {"03640205228.15629.0000", 0, {172, 31, 249, 216}, 3389}, /* leading zeros do not overflow */
        {"3640205228.15629", -EINVAL, {0}, 0},                    /* the final dot is required */
        {"4294967296.15629.0000", -EINVAL, {0}, 0},               /* u32 overflow */
        {"99999999999999999999.1.", -EINVAL, {0}, 0},
        {"3640205228.65536.0000", -EINVAL, {0}, 0}, /* u16 overflow */
        {"3640205228.15629.0000.", -EINVAL, {0}, 0},
        {"3640205228.15629.00x0", -EINVAL, {0}, 0},
        {"3640205228..0000", -EINVAL, {0}, 0},
        {".15629.0000", -EINVAL, {0}, 0},
        {"-1.15629.0000", -EINVAL, {0}, 0},
        {" 3640205228.15629.0000", -EINVAL, {0}, 0},
        {"3640205228 .15629.0000", -EINVAL, {0}, 0},
        {"", -EINVAL, {0}, 0},
        {".", -EINVAL, {0}, 0},
        {"1.2.3.4", -EINVAL, {0}, 0},
};

static void test_routing_token_decode(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(token_cases); i++) {
                const struct token_case *c = &token_cases[i];
                uint32_t addr = 0xdeadbeef;
                uint16_t port = 0xbeef;
                int r = tsf_routing_token_decode(c->token, strlen(c->token), &addr, &port);

                if (r != c->ret)
                        fail_msg("\"%s\": %d, expected %d", c->token, r, c->ret);
                if (r < 0)
                        continue;
                assert_memory_equal(&addr, c->addr, 4);
                assert_int_equal(port, c->port);
        }
        /* The length bounds the token: no NUL is needed or looked for. */
        assert_int_equal(tsf_routing_token_decode("3640205228.15629.0000", 16, NULL, NULL), -EINVAL);
        assert_int_equal(tsf_routing_token_decode("3640205228.15629.0000", 17, NULL, NULL), 0);
}

static void test_routing_token_format(void **state) {
        const uint8_t a[4] = {172, 31, 249, 216};
        uint32_t addr, back;
        uint16_t port;
        char buf[32];

        memcpy(&addr, a, 4);
        assert_int_equal(tsf_routing_token_format(addr, 3389, buf, sizeof(buf)), 21);
        assert_string_equal(buf, "3640205228.15629.0000");
        assert_int_equal(tsf_routing_token_decode(buf, strlen(buf), &back, &port), 0);
        assert_int_equal(back, addr);
        assert_int_equal(port, 3389);

        /* 21 characters and the NUL. */
        assert_int_equal(tsf_routing_token_format(addr, 3389, buf, 22), 21);
        assert_int_equal(tsf_routing_token_format(addr, 3389, buf, 21), -ENOBUFS);
        assert_int_equal(tsf_routing_token_format(addr, 3389, NULL, 0), -ENOBUFS);
        assert_int_equal(tsf_routing_token_format(0, 0, buf, sizeof(buf)), 8);
        assert_string_equal(buf, "0.0.0000");
}

/* ---- errors ------------------------------------------------------------- */

struct error_case {
        const char *name;
        const char *hex;
        uint8_t pad_byte; /* then pad_len copies of pad_byte */
        size_t pad_len;
        enum tsf_cr_error error;
        size_t offset;
        size_t proof; /* bytes after which INVALID is first reported */
};

#define PCB_V1 "10000000 00000000 01000000 00000000 "
#define CR_HDR(len, li) "0300" len li "e0 0000 0000 00 "

static const struct error_case error_cases[] = {
        /* The first byte is not 3, so it is a cbSize, and 5 is odd. */
        {"pcb odd first byte", "05", 0, 0, TSF_CR_ERR_PCB_SIZE, 0, 1},
        /* 0x0316 would be a fine cbSize; the third byte is what rules it out. */
        {"tls clienthello", "16 0301 0200 01", 0, 0, TSF_CR_ERR_PCB_SIZE, 0, 3},
        {"http request", "474554202f", 0, 0, TSF_CR_ERR_PCB_SIZE, 0, 1},
        {"pcb size 14", "0e00", 0, 0, TSF_CR_ERR_PCB_SIZE, 0, 2},
        {"pcb size 0x500", "0005", 0, 0, TSF_CR_ERR_PCB_SIZE, 0, 2},
        {"pcb size 1044", "1404", 0, 0, TSF_CR_ERR_PCB_SIZE, 0, 2},
        {"pcb size third byte", "100001", 0, 0, TSF_CR_ERR_PCB_SIZE, 0, 3},
        {"pcb size fourth byte", "10000001", 0, 0, TSF_CR_ERR_PCB_SIZE, 0, 4},
        {"pcb flags", "10000000 00000100", 0, 0, TSF_CR_ERR_PCB_FLAGS, 4, 7},
        {"pcb v1 size, version 2", "10000000 00000000 02", 0, 0, TSF_CR_ERR_PCB_VERSION, 8, 9},
        {"pcb v2 size, version 1", "14000000 00000000 01", 0, 0, TSF_CR_ERR_PCB_VERSION, 8, 9},
        {"pcb version high byte", "10000000 00000000 01000001", 0, 0, TSF_CR_ERR_PCB_VERSION, 8, 12},
        {"pcb cch disagrees", "20000000 00000000 02000000 00000000 0800", 0, 0, TSF_CR_ERR_PCB_STRING, 16,
         17},
        {"pcb cch high byte", "20000000 00000000 02000000 00000000 0701", 0, 0, TSF_CR_ERR_PCB_STRING, 16,
         18},
        {"pcb no nul", "16000000 00000000 02000000 00000000 0200 4100 4200", 0, 0, TSF_CR_ERR_PCB_STRING, 20,
         21},
        {"pcb no nul high byte", "16000000 00000000 02000000 00000000 0200 4100 0042", 0, 0,
         TSF_CR_ERR_PCB_STRING, 20, 22},
        {"pcb embedded nul", "18000000 00000000 02000000 00000000 0300 4100 0000 0000", 0, 0,
         TSF_CR_ERR_PCB_STRING, 20, 22},
        {"pcb lone low surrogate", "18000000 00000000 02000000 00000000 0300 00dc 4100 0000", 0, 0,
         TSF_CR_ERR_PCB_STRING, 18, 20},
        {"pcb high surrogate unpaired", "1a000000 00000000 02000000 00000000 0400 3dd8 4100 4200 0000", 0, 0,
         TSF_CR_ERR_PCB_STRING, 18, 22},
        {"pcb high surrogate before nul", "18000000 00000000 02000000 00000000 0300 4100 3dd8 0000", 0, 0,
         TSF_CR_ERR_PCB_STRING, 20, 22},
        {"tpkt version after pcb", PCB_V1 "04", 0, 0, TSF_CR_ERR_TPKT_VERSION, 16, 17},
        {"pcb twice", PCB_V1 PCB_V1, 0, 0, TSF_CR_ERR_TPKT_VERSION, 16, 17},
        {"tpkt reserved", "0301", 0, 0, TSF_CR_ERR_TPKT_RESERVED, 1, 2},
        {"tpkt length high byte", "030002", 0, 0, TSF_CR_ERR_TPKT_LENGTH, 2, 3},
        {"tpkt length 260", "03000104", 0, 0, TSF_CR_ERR_TPKT_LENGTH, 2, 4},
        {"tpkt length 10", "0300000a 05e0", 0, 0, TSF_CR_ERR_TPKT_LENGTH, 2, 4},
        {"tpkt length 0", "03000000", 0, 0, TSF_CR_ERR_TPKT_LENGTH, 2, 4},
        {"tpkt length after pcb", PCB_V1 "03000300", 0, 0, TSF_CR_ERR_TPKT_LENGTH, 18, 19},
        {"li too big", "0300000b 07 e0", 0, 0, TSF_CR_ERR_X224_LENGTH, 4, 5},
        {"li too small", "03000013 0d e0", 0, 0, TSF_CR_ERR_X224_LENGTH, 4, 5},
        {"li 255 needs tpkt length 260", "03000104 ff", 0, 0, TSF_CR_ERR_TPKT_LENGTH, 2, 4},
        {"connection confirm", "0300000b 06 d0 0000 0000 00", 0, 0, TSF_CR_ERR_X224_CODE, 5, 6},
        {"cr with credit", "0300000b 06 e1", 0, 0, TSF_CR_ERR_X224_CODE, 5, 6},
        {"data tpdu", "03000013 02 f0 80", 0, 0, TSF_CR_ERR_X224_LENGTH, 4, 5},
        {"dst-ref", "0300000b 06 e0 0001 0000 00", 0, 0, TSF_CR_ERR_X224_DST_REF, 6, 8},
        {"dst-ref first byte", "0300000b 06 e0 01", 0, 0, TSF_CR_ERR_X224_DST_REF, 6, 7},
        {"class 2", "0300000b 06 e0 0000 0000 20", 0, 0, TSF_CR_ERR_X224_CLASS, 10, 11},
        {"class 0 extended formats", "0300000b 06 e0 0000 0000 02", 0, 0, TSF_CR_ERR_X224_CLASS, 10, 11},
        {"cookie without crlf", CR_HDR("0010", "0b") "6162636465", 0, 0, TSF_CR_ERR_COOKIE_NO_CRLF, 14, 15},
        /* 'b' leaves no room for CR LF: refused before the CR arrives. */
        {"cookie ends at tpdu end", CR_HDR("000e", "09") "61620d", 0, 0, TSF_CR_ERR_COOKIE_NO_CRLF, 12, 13},
        {"cookie crlf after tpdu", CR_HDR("000f", "0a") "6162630d0a", 0, 0, TSF_CR_ERR_COOKIE_NO_CRLF, 13,
         14},
        /* 247 line bytes in the largest TPDU: one more than fits. */
        {"cookie too long", CR_HDR("0103", "fe"), 'a', 248, TSF_CR_ERR_COOKIE_TOO_LONG, 11 + 246, 11 + 247},
        {"cookie control char", CR_HDR("0010", "0b") "61 01 620d0a", 0, 0, TSF_CR_ERR_COOKIE_CHAR, 12, 13},
        {"cookie bare cr", CR_HDR("0010", "0b") "61 0d 620d0a", 0, 0, TSF_CR_ERR_COOKIE_CHAR, 12, 14},
        {"cookie bare lf", CR_HDR("0010", "0b") "61 0a 620d0a", 0, 0, TSF_CR_ERR_COOKIE_CHAR, 12, 13},
        {"cookie del", CR_HDR("0010", "0b") "61 7f 620d0a", 0, 0, TSF_CR_ERR_COOKIE_CHAR, 12, 13},
        {"cookie tab", CR_HDR("0010", "0b") "61 09 620d0a", 0, 0, TSF_CR_ERR_COOKIE_CHAR, 12, 13},
        {"cookie nul", CR_HDR("0010", "0b") "61 00 620d0a", 0, 0, TSF_CR_ERR_COOKIE_CHAR, 12, 13},
        {"empty line", CR_HDR("000d", "08") "0d0a", 0, 0, TSF_CR_ERR_COOKIE_EMPTY, 11, 12},
        {"empty mstshash", CR_HDR("001e", "19") "436f6f6b69653a206d737473686173683d 0d0a", 0, 0,
         TSF_CR_ERR_COOKIE_EMPTY, 28, 29},
        {"empty msts", CR_HDR("001a", "15") "436f6f6b69653a206d7374733d 0d0a", 0, 0, TSF_CR_ERR_COOKIE_EMPTY,
         24, 25},
        {"neg rsp instead of req", CR_HDR("0013", "0e") "02 00 0800 00000000", 0, 0, TSF_CR_ERR_NEG_TYPE, 11,
         12},
        {"correlation without neg req", CR_HDR("002f", "2a") "06 00 2400", 0, 0, TSF_CR_ERR_NEG_TYPE, 11,
         12},
        {"second line", CR_HDR("0013", "0e") "610d0a 620d0a 0100", 0, 0, TSF_CR_ERR_NEG_TYPE, 14, 15},
        {"neg length 9", CR_HDR("0013", "0e") "01 00 0900 03000000", 0, 0, TSF_CR_ERR_NEG_LENGTH, 13, 14},
        {"neg length high byte", CR_HDR("0013", "0e") "01 00 0801 03000000", 0, 0, TSF_CR_ERR_NEG_LENGTH, 13,
         15},
        {"neg does not fit", CR_HDR("0012", "0d") "01 00 0800 030000", 0, 0, TSF_CR_ERR_NEG_LENGTH, 11, 12},
        {"neg does not fit after line", CR_HDR("0011", "0c") "610d0a 01 00 08", 0, 0, TSF_CR_ERR_NEG_LENGTH,
         14, 15},
        {"correlation flagged, absent", CR_HDR("0013", "0e") "01 08 0800 03000000", 0, 0,
         TSF_CR_ERR_CORRELATION, 12, 13},
        {"correlation flagged, truncated", CR_HDR("0023", "1e") "01 08 0800 03000000 06 00 2400", 0, 0,
         TSF_CR_ERR_CORRELATION, 12, 13},
        {"correlation wrong type", CR_HDR("0037", "32") "01 08 0800 03000000 07", 0, 0,
         TSF_CR_ERR_CORRELATION, 19, 20},
        {"correlation flags", CR_HDR("0037", "32") "01 08 0800 03000000 06 01", 0, 0, TSF_CR_ERR_CORRELATION,
         20, 21},
        {"correlation length", CR_HDR("0037", "32") "01 08 0800 03000000 06 00 2500", 0, 0,
         TSF_CR_ERR_CORRELATION, 21, 22},
        {"correlation unflagged", CR_HDR("0037", "32") "01 00 0800 03000000 06 00 2400", 0, 0,
         TSF_CR_ERR_CORRELATION, 19, 20},
        {"trailing after neg", CR_HDR("0014", "0f") "01 00 0800 03000000 ff", 0, 0, TSF_CR_ERR_TRAILING, 19,
         20},
        {"trailing after correlation", CR_HDR("0038", "33") "01 08 0800 03000000 06 00 2400", 0, 37,
         TSF_CR_ERR_TRAILING, 55, 56},
};

/* Which errors the cases above reached; test_every_error_reached() checks
 * all were. cmocka runs the tests in order, and that one runs last. */
static bool error_reached[_TSF_CR_ERR_MAX];

static void test_errors(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(error_cases); i++) {
                const struct error_case *c = &error_cases[i];
                uint8_t b[TSF_FIRST_PDU_MAX + 16];
                size_t n = unhex(c->hex, b, sizeof(b));
                struct tsf_cr cr;

                assert_true(n + c->pad_len <= sizeof(b));
                memset(b + n, c->pad_byte, c->pad_len);
                n += c->pad_len;
                assert_true(c->proof <= n);

                for (size_t k = 0; k <= n; k++) {
                        enum tsf_cr_status s = parse_exact(b, k, &cr);
                        enum tsf_cr_status want = k < c->proof ? TSF_CR_NEED_MORE : TSF_CR_INVALID;

                        if (s != want)
                                fail_msg("%s: %zu bytes: %s (%s at %zu), expected %s", c->name, k,
                                         tsf_cr_status_to_string(s), tsf_cr_error_to_string(cr.error),
                                         cr.error_offset, tsf_cr_status_to_string(want));
                        if (s != TSF_CR_INVALID)
                                continue;
                        if (cr.error != c->error || cr.error_offset != c->offset)
                                fail_msg("%s: %zu bytes: %s at %zu, expected %s at %zu", c->name, k,
                                         tsf_cr_error_to_string(cr.error), cr.error_offset,
                                         tsf_cr_error_to_string(c->error), c->offset);
                        assert_int_equal(cr.consumed, 0);
                }
                error_reached[c->error] = true;
        }
}

static void test_oversized_input(void **state) {
        uint8_t b[TSF_FIRST_PDU_MAX * 2];
        size_t n = unhex(MS_SAMPLE_HEX, b, sizeof(b));
        struct tsf_cr cr;

        /* A buffer longer than any first PDU: the PDU is still found, and
         * the rest left alone. */
        memset(b + n, 0x41, sizeof(b) - n);
        assert_int_equal(parse_exact(b, sizeof(b), &cr), TSF_CR_COMPLETE);
        assert_int_equal(cr.consumed, n);
        assert_int_equal(parse_exact(b, 0, &cr), TSF_CR_NEED_MORE);
        assert_int_equal(tsf_cr_parse(NULL, 0, &cr), TSF_CR_NEED_MORE);
}

/* ---- encoder ------------------------------------------------------------ */

/* splitmix64: a fixed seed, so a failure reproduces. */
static uint64_t rng_state;

static uint64_t rnd(void) {
        uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);

        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
}

static uint32_t rnd_below(uint32_t n) {
        return (uint32_t)(rnd() % n);
}

static char rnd_line_char(void) {
        /* Mostly printable ASCII, sometimes a byte >= 0x80. */
        return rnd_below(8) == 0 ? (char)(0x80 + rnd_below(0x80)) : (char)(0x20 + rnd_below(0x5F));
}

static void rnd_append(char *line, size_t *len, size_t n) {
        for (size_t i = 0; i < n; i++)
                line[(*len)++] = rnd_line_char();
}

static void rnd_cookie(struct tsf_cr *cr, size_t max) {
        static const char *const prefixes[] = {
                [TSF_COOKIE_MSTSHASH] = "Cookie: mstshash=",
                [TSF_COOKIE_ROUTING_TOKEN] = "Cookie: msts=",
                [TSF_COOKIE_TSV] = "tsv://",
                [TSF_COOKIE_MTH] = "mth://",
        };
        enum tsf_cookie_kind kind = (enum tsf_cookie_kind)rnd_below(_TSF_COOKIE_KIND_MAX);
        size_t len = 0, room;

        cr->cookie_kind = kind;
        if (kind == TSF_COOKIE_NONE)
                return;
        if (kind == TSF_COOKIE_OTHER) {
                /* 'X' starts no known prefix. */
                cr->cookie[len++] = 'X';
        } else {
                len = strlen(prefixes[kind]);
                memcpy(cr->cookie, prefixes[kind], len);
        }
        room = max - len;
        if (kind == TSF_COOKIE_ROUTING_TOKEN && rnd_below(2)) {
                char tok[32];
                int n = tsf_routing_token_format((uint32_t)rnd(), (uint16_t)rnd(), tok, sizeof(tok));

                assert_true(n > 0);
                /* Windows writes "0000"; the reserved digits are optional. */
                n -= (int)rnd_below(5);
                memcpy(cr->cookie + len, tok, (size_t)n);
                len += (size_t)n;
        } else
                rnd_append(cr->cookie, &len, 1 + rnd_below((uint32_t)MIN(room, rnd_below(2) ? 24 : room)));
        cr->cookie_len = len;
}

static void rnd_pcb_string(struct tsf_cr *cr) {
        size_t units = 0, w = 0;
        size_t max_units = rnd_below(4) == 0 ? TSF_PCB_CCH_MAX - 1 : 12;
        size_t want = rnd_below((uint32_t)max_units + 1);

        while (units < want) {
                uint32_t cp;

                switch (rnd_below(4)) {
                case 0:
                        cp = 1 + rnd_below(0x7F);
                        break;
                case 1:
                        cp = 0x80 + rnd_below(0x800 - 0x80);
                        break;
                case 2:
                        do
                                cp = 0x800 + rnd_below(0x10000 - 0x800);
                        while (cp >= 0xD800 && cp <= 0xDFFF);
                        break;
                default:
                        cp = 0x10000 + rnd_below(0x110000 - 0x10000);
                        break;
                }
                if (cp >= 0x10000 && units + 2 > want)
                        continue;
                if (cp < 0x80)
                        cr->pcb_string[w++] = (char)cp;
                else if (cp < 0x800) {
                        cr->pcb_string[w++] = (char)(0xC0 | (cp >> 6));
                        cr->pcb_string[w++] = (char)(0x80 | (cp & 0x3F));
                } else if (cp < 0x10000) {
                        cr->pcb_string[w++] = (char)(0xE0 | (cp >> 12));
                        cr->pcb_string[w++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                        cr->pcb_string[w++] = (char)(0x80 | (cp & 0x3F));
                } else {
                        cr->pcb_string[w++] = (char)(0xF0 | (cp >> 18));
                        cr->pcb_string[w++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                        cr->pcb_string[w++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                        cr->pcb_string[w++] = (char)(0x80 | (cp & 0x3F));
                }
                units += cp >= 0x10000 ? 2 : 1;
        }
        cr->pcb_string[w] = '\0';
        /* Give cchPCB, or leave it 0 for the encoder to count. */
        if (units > 0 && rnd_below(2))
                cr->pcb_cch = (uint16_t)(units + 1);
        else if (units == 0 && rnd_below(2))
                cr->pcb_cch = 1;
}

static void rnd_cr(struct tsf_cr *cr) {
        size_t room = TSF_X224_LI_MAX - (TSF_X224_CR_FIXED_SIZE - 1);

        memset(cr, 0, sizeof(*cr));
        if (rnd_below(3) == 0) {
                cr->has_pcb = true;
                cr->pcb_version = 1 + rnd_below(2);
                cr->pcb_id = (uint32_t)rnd();
                if (cr->pcb_version == 2)
                        rnd_pcb_string(cr);
        }
        cr->src_ref = (uint16_t)(rnd_below(2) ? rnd() : 0);
        if (rnd_below(4)) {
                cr->has_neg_req = true;
                cr->neg_flags = (uint8_t)rnd();
                cr->requested_protocols = rnd_below(2) ? (uint32_t)rnd() : rnd_below(0x20);
                cr->has_correlation = cr->neg_flags & TSF_RDP_NEG_FLAG_CORRELATION_INFO_PRESENT;
                room -= TSF_RDP_NEG_REQ_SIZE;
                if (cr->has_correlation) {
                        for (size_t i = 0; i < 16; i++) {
                                cr->correlation_id[i] = (uint8_t)rnd();
                                cr->correlation_reserved[i] = rnd_below(8) ? 0 : (uint8_t)rnd();
                        }
                        room -= TSF_RDP_CORRELATION_INFO_SIZE;
                }
        }
        rnd_cookie(cr, MIN(room - 2, (size_t)TSF_CR_COOKIE_MAX));
}

static void test_round_trip_generated(void **state) {
        uint8_t b[TSF_FIRST_PDU_MAX], again[TSF_FIRST_PDU_MAX];
        struct tsf_cr in, out, out2;
        size_t kinds[_TSF_COOKIE_KIND_MAX] = {0}, decoded = 0, pcbs = 0, correlations = 0;

        rng_state = 0x74736661726dull;
        for (unsigned iter = 0; iter < 20000; iter++) {
                ssize_t n;

                rnd_cr(&in);
                n = tsf_cr_encode(&in, b, sizeof(b));
                if (n < 0)
                        fail_msg("iteration %u: encode: %zd", iter, n);
                assert_true((size_t)n <= TSF_FIRST_PDU_MAX);

                if (parse_exact(b, (size_t)n, &out) != TSF_CR_COMPLETE)
                        fail_msg("iteration %u: %s at %zu", iter, tsf_cr_error_to_string(out.error),
                                 out.error_offset);
                assert_int_equal(out.consumed, (size_t)n);

                /* What was given comes back. */
                assert_int_equal(out.has_pcb, in.has_pcb);
                if (in.has_pcb) {
                        assert_int_equal(out.pcb_version, in.pcb_version);
                        assert_int_equal(out.pcb_id, in.pcb_id);
                        assert_string_equal(out.pcb_string, in.pcb_string);
                        if (in.pcb_cch != 0)
                                assert_int_equal(out.pcb_cch, in.pcb_cch);
                        pcbs++;
                }
                assert_int_equal(out.src_ref, in.src_ref);
                assert_int_equal(out.cookie_kind, in.cookie_kind);
                assert_int_equal(out.cookie_len, in.cookie_len);
                assert_memory_equal(out.cookie, in.cookie, in.cookie_len);
                assert_int_equal(out.has_neg_req, in.has_neg_req);
                assert_int_equal(out.neg_flags, in.neg_flags);
                assert_int_equal(out.requested_protocols, in.requested_protocols);
                assert_int_equal(out.has_correlation, in.has_correlation);
                assert_memory_equal(out.correlation_id, in.correlation_id, 16);
                assert_memory_equal(out.correlation_reserved, in.correlation_reserved, 16);
                assert_int_equal(out.consumed, out.pcb_size + out.tpkt_length);
                assert_int_equal(out.li, out.tpkt_length - 5);
                kinds[out.cookie_kind]++;
                decoded += out.routing_decoded;
                correlations += out.has_correlation;

                /* And re-encodes to the same bytes. */
                assert_int_equal(tsf_cr_encode(&out, again, sizeof(again)), n);
                assert_memory_equal(again, b, (size_t)n);
                assert_int_equal(parse_exact(again, (size_t)n, &out2), TSF_CR_COMPLETE);
                assert_true(tsf_cr_equal(&out, &out2));

                /* One size short is too small, at every size. */
                assert_int_equal(tsf_cr_encode(&in, b, (size_t)n - 1), -ENOBUFS);

                if (iter % 64 == 0)
                        assert_all_prefixes_need_more(b, (size_t)n);
        }
        /* The generator reached every kind of PDU. */
        for (size_t k = 0; k < _TSF_COOKIE_KIND_MAX; k++)
                assert_true(kinds[k] > 100);
        assert_true(decoded > 100 && pcbs > 1000 && correlations > 1000);
}

static void test_encode_enobufs(void **state) {
        uint8_t b[64], out[64];
        size_t n = unhex(PCB_V2_TESTVM_HEX MINIMAL_HEX, b, sizeof(b));
        struct tsf_cr cr;

        assert_int_equal(parse_exact(b, n, &cr), TSF_CR_COMPLETE);
        for (size_t size = 0; size < n; size++)
                assert_int_equal(tsf_cr_encode(&cr, out, size), -ENOBUFS);
        assert_int_equal(tsf_cr_encode(&cr, NULL, 0), -ENOBUFS);
        assert_int_equal(tsf_cr_encode(&cr, out, n), (ssize_t)n);
        assert_memory_equal(out, b, n);
}

static void set_cookie(struct tsf_cr *cr, const char *line, enum tsf_cookie_kind kind) {
        cr->cookie_len = strlen(line);
        memcpy(cr->cookie, line, cr->cookie_len + 1);
        cr->cookie_kind = kind;
}

static void test_encode_einval(void **state) {
        uint8_t b[TSF_FIRST_PDU_MAX];
        struct tsf_cr cr, base = {};
        char longline[TSF_CR_COOKIE_MAX + 1];

        set_cookie(&base, "Cookie: mstshash=eltons", TSF_COOKIE_MSTSHASH);
        base.has_neg_req = true;
        assert_int_equal(tsf_cr_encode(&base, b, sizeof(b)), 44);

#define EXPECT_EINVAL(what)                                      \
        do {                                                     \
                cr = base;                                       \
                what;                                            \
                if (tsf_cr_encode(&cr, b, sizeof(b)) != -EINVAL) \
                        fail_msg("accepted: %s", #what);         \
        } while (0)

        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 0));
        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 3));
        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 1, cr.pcb_cch = 1));
        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 1, strcpy(cr.pcb_string, "x")));
        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 2, strcpy(cr.pcb_string, "\xc0\xaf")));
        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 2, strcpy(cr.pcb_string, "\xed\xa0\x80")));
        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 2, strcpy(cr.pcb_string, "\xe2\x82")));
        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 2, strcpy(cr.pcb_string, "\xf4\x90\x80\x80")));
        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 2, strcpy(cr.pcb_string, "\x80")));
        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 2, strcpy(cr.pcb_string, "ab"), cr.pcb_cch = 4));
        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 2, strcpy(cr.pcb_string, "ab"), cr.pcb_cch = 2));
        EXPECT_EINVAL((cr.has_pcb = true, cr.pcb_version = 2, memset(cr.pcb_string, 'a', TSF_PCB_CCH_MAX)));
        EXPECT_EINVAL(
                (cr.has_pcb = true, cr.pcb_version = 2, memset(cr.pcb_string, 'a', sizeof(cr.pcb_string))));
        EXPECT_EINVAL(cr.cookie_len = TSF_CR_COOKIE_MAX + 1);
        EXPECT_EINVAL(set_cookie(&cr, "Cookie: mstshash=a\r\nb", TSF_COOKIE_MSTSHASH));
        EXPECT_EINVAL(set_cookie(&cr, "Cookie: mstshash=a\x7f", TSF_COOKIE_MSTSHASH));
        EXPECT_EINVAL(set_cookie(&cr, "Cookie: mstshash=", TSF_COOKIE_MSTSHASH));
        EXPECT_EINVAL(set_cookie(&cr, "Cookie: msts=", TSF_COOKIE_ROUTING_TOKEN));
        EXPECT_EINVAL(set_cookie(&cr, "Cookie: mstshash=a", TSF_COOKIE_OTHER));
        EXPECT_EINVAL(set_cookie(&cr, "tsv://a", TSF_COOKIE_MTH));
        EXPECT_EINVAL(set_cookie(&cr, "", TSF_COOKIE_OTHER));
        EXPECT_EINVAL(cr.cookie_kind = _TSF_COOKIE_KIND_MAX);
        EXPECT_EINVAL((cr.has_neg_req = false, cr.has_correlation = true));
        EXPECT_EINVAL(cr.has_correlation = true);
        EXPECT_EINVAL(cr.neg_flags = TSF_RDP_NEG_FLAG_CORRELATION_INFO_PRESENT);
        /* The longest line with an RDP_NEG_REQ does not fit in a TPDU. */
        memset(longline, 'a', TSF_CR_COOKIE_MAX);
        longline[TSF_CR_COOKIE_MAX] = '\0';
        EXPECT_EINVAL(set_cookie(&cr, longline, TSF_COOKIE_OTHER));
#undef EXPECT_EINVAL

        /* Without the RDP_NEG_REQ it fits exactly: the largest TPDU. */
        cr = base;
        cr.has_neg_req = false;
        set_cookie(&cr, longline, TSF_COOKIE_OTHER);
        assert_int_equal(tsf_cr_encode(&cr, b, sizeof(b)), TSF_CR_TPKT_MAX);
        parse_complete(b, TSF_CR_TPKT_MAX, &cr);
        assert_int_equal(cr.cookie_len, TSF_CR_COOKIE_MAX);
}

/* ---- names -------------------------------------------------------------- */

static void test_names(void **state) {
        for (int e = 0; e < _TSF_CR_ERR_MAX; e++) {
                const char *id = tsf_cr_error_to_string((enum tsf_cr_error)e);
                const char *text = tsf_cr_error_describe((enum tsf_cr_error)e);

                assert_non_null(id);
                assert_non_null(text);
                /* Short ids: lowercase words and dashes, unique. */
                assert_true(strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(id));
                assert_true(strlen(text) > 5 && text[strlen(text) - 1] == '.');
                for (int f = 0; f < e; f++)
                        assert_string_not_equal(id, tsf_cr_error_to_string((enum tsf_cr_error)f));
        }
        assert_string_equal(tsf_cr_error_to_string(TSF_CR_ERR_X224_CODE), "x224-code");
        assert_null(tsf_cr_error_to_string(_TSF_CR_ERR_MAX));
        assert_null(tsf_cr_error_describe(_TSF_CR_ERR_MAX));
        assert_null(tsf_cr_error_to_string((enum tsf_cr_error) - 1));

        for (int k = 0; k < _TSF_COOKIE_KIND_MAX; k++)
                assert_non_null(tsf_cookie_kind_to_string((enum tsf_cookie_kind)k));
        assert_string_equal(tsf_cookie_kind_to_string(TSF_COOKIE_MSTSHASH), "mstshash");
        assert_string_equal(tsf_cookie_kind_to_string(TSF_COOKIE_ROUTING_TOKEN), "routing-token");
        assert_null(tsf_cookie_kind_to_string(_TSF_COOKIE_KIND_MAX));

        assert_string_equal(tsf_cr_status_to_string(TSF_CR_COMPLETE), "complete");
        assert_string_equal(tsf_cr_status_to_string(TSF_CR_NEED_MORE), "need-more");
        assert_string_equal(tsf_cr_status_to_string(TSF_CR_INVALID), "invalid");
        assert_null(tsf_cr_status_to_string((enum tsf_cr_status)3));
}

static void test_every_error_reached(void **state) {
        for (int e = 1; e < _TSF_CR_ERR_MAX; e++)
                if (!error_reached[e])
                        fail_msg("no test case reaches %s", tsf_cr_error_to_string((enum tsf_cr_error)e));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ms_sample),
                cmocka_unit_test(test_minimal_and_neg_only),
                cmocka_unit_test(test_src_ref_and_correlation),
                cmocka_unit_test(test_pcb_v1),
                cmocka_unit_test(test_pcb_v2_then_tpkt),
                cmocka_unit_test(test_pcb_v2_unicode_and_empty),
                cmocka_unit_test(test_pcb_v2_largest),
                cmocka_unit_test(test_cookie_kinds),
                cmocka_unit_test(test_routing_cookie_decoded),
                cmocka_unit_test(test_routing_token_decode),
                cmocka_unit_test(test_routing_token_format),
                cmocka_unit_test(test_errors),
                cmocka_unit_test(test_oversized_input),
                cmocka_unit_test(test_round_trip_generated),
                cmocka_unit_test(test_encode_enobufs),
                cmocka_unit_test(test_encode_einval),
                cmocka_unit_test(test_names),
                /* Last: it reads what test_errors recorded. */
                cmocka_unit_test(test_every_error_reached),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
