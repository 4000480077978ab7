/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the first-PDU parser and encoder. Beyond "no crash"
 * (ASan sees any read past `len`: every parse below runs on a heap copy of
 * exactly the bytes it is given), it checks what the gateway relies on:
 *
 *   COMPLETE  consumed <= len; buf[0..consumed) alone parses the same;
 *             every strict prefix is NEED_MORE; bytes after it change
 *             nothing; encode(parse(x)) == x[0..consumed) and re-parses
 *             to an equal result.
 *   NEED_MORE no prefix is anything else; len is below the cap.
 *   INVALID   error_offset < len and names a real error; the bytes before
 *             error_offset are NEED_MORE; INVALID (same error, same offset)
 *             is reported within 4 bytes of error_offset, the widest field,
 *             and stays so whatever is appended.
 *
 * The same input also drives the encoder through a struct built from its
 * bytes: whatever the encoder accepts, the parser must parse back to the
 * same bytes.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsfarm/macro.h"
#include "tsfarm/x224.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                         \
        do {                                                                                                \
                if (!(cond)) {                                                                              \
                        fprintf(stderr, "fuzz_x224: invariant violated at %s:%d: %s\n", __FILE__, __LINE__, \
                                #cond);                                                                     \
                        abort();                                                                            \
                }                                                                                           \
        } while (0)

/* Parses a heap copy of data[0..len) followed by `extra` bytes of `fill`. */
static enum tsf_cr_status parse_copy(const uint8_t *data, size_t len, size_t extra, uint8_t fill,
                                     struct tsf_cr *cr) {
        size_t n = len + extra;
        uint8_t *copy = n > 0 ? malloc(n) : NULL;
        enum tsf_cr_status s;

        CHECK(n == 0 || copy);
        if (len > 0)
                memcpy(copy, data, len);
        if (extra > 0)
                memset(copy + len, fill, extra);
        s = tsf_cr_parse(copy, n, cr);
        free(copy);
        return s;
}

static void check_fields(const struct tsf_cr *cr) {
        CHECK(cr->cookie_kind < _TSF_COOKIE_KIND_MAX);
        CHECK(cr->cookie_len <= TSF_CR_COOKIE_MAX);
        CHECK(cr->cookie[cr->cookie_len] == '\0');
        CHECK((cr->cookie_len == 0) == (cr->cookie_kind == TSF_COOKIE_NONE));
        CHECK(cr->cookie_value_offset + cr->cookie_value_len == cr->cookie_len);
        CHECK(!cr->routing_decoded || cr->cookie_kind == TSF_COOKIE_ROUTING_TOKEN);
        CHECK(cr->tpkt_length >= TSF_TPKT_HEADER_SIZE + TSF_X224_CR_FIXED_SIZE &&
              cr->tpkt_length <= TSF_CR_TPKT_MAX);
        CHECK(cr->li == cr->tpkt_length - 5);
        CHECK(cr->consumed == cr->pcb_size + cr->tpkt_length);
        CHECK(!cr->has_correlation || cr->has_neg_req);
        CHECK(!cr->has_neg_req ||
              !!(cr->neg_flags & TSF_RDP_NEG_FLAG_CORRELATION_INFO_PRESENT) == cr->has_correlation);
        CHECK(memchr(cr->pcb_string, 0, sizeof(cr->pcb_string)) != NULL);
        if (cr->has_pcb) {
                CHECK(cr->pcb_version == 1 || cr->pcb_version == 2);
                CHECK(cr->pcb_size <= TSF_PCB_MAX);
                CHECK(cr->pcb_version == 2 || (cr->pcb_cch == 0 && cr->pcb_string[0] == '\0'));
                CHECK(cr->pcb_version == 1 || cr->pcb_size == TSF_PCB_V2_HEADER_SIZE + 2u * cr->pcb_cch);
        } else
                CHECK(cr->pcb_size == 0);
}

static void check_routing(const struct tsf_cr *cr) {
        uint32_t addr;
        uint16_t port;
        char tok[32];
        int n;

        if (!cr->routing_decoded)
                return;
        n = tsf_routing_token_format(cr->routing_ipv4_be, cr->routing_port, tok, sizeof(tok));
        CHECK(n > 0);
        CHECK(tsf_routing_token_decode(tok, (size_t)n, &addr, &port) == 0);
        CHECK(addr == cr->routing_ipv4_be && port == cr->routing_port);
}

static void check_complete(const uint8_t *data, size_t size, const struct tsf_cr *cr) {
        uint8_t enc[TSF_FIRST_PDU_MAX];
        struct tsf_cr again;
        ssize_t n;

        CHECK(cr->consumed > 0 && cr->consumed <= size && cr->consumed <= TSF_FIRST_PDU_MAX);
        CHECK(cr->error == TSF_CR_OK);
        check_fields(cr);
        check_routing(cr);

        /* The PDU alone, and with other bytes after it. */
        CHECK(parse_copy(data, cr->consumed, 0, 0, &again) == TSF_CR_COMPLETE);
        CHECK(tsf_cr_equal(cr, &again));
        CHECK(parse_copy(data, cr->consumed, 7, 0xff, &again) == TSF_CR_COMPLETE);
        CHECK(tsf_cr_equal(cr, &again));

        for (size_t k = 0; k < cr->consumed; k++)
                CHECK(parse_copy(data, k, 0, 0, &again) == TSF_CR_NEED_MORE);

        /* The encoding is unique: the encoder writes the very bytes. */
        n = tsf_cr_encode(cr, enc, sizeof(enc));
        CHECK(n == (ssize_t)cr->consumed);
        CHECK(memcmp(enc, data, cr->consumed) == 0);
        CHECK(tsf_cr_encode(cr, enc, cr->consumed - 1) == -ENOBUFS);
}

static void check_need_more(const uint8_t *data, size_t size, const struct tsf_cr *cr) {
        struct tsf_cr again;

        CHECK(cr->error == TSF_CR_OK && cr->consumed == 0);
        CHECK(size < TSF_FIRST_PDU_MAX);
        for (size_t k = 0; k < size; k++)
                CHECK(parse_copy(data, k, 0, 0, &again) == TSF_CR_NEED_MORE);
}

static void check_invalid(const uint8_t *data, size_t size, const struct tsf_cr *cr) {
        static const uint8_t fills[] = {0x00, 0x01, 0x03, 0x0d, 0x0a, 0x41, 0xff};
        size_t first_invalid = SIZE_MAX;
        struct tsf_cr again;

        CHECK(cr->error > TSF_CR_OK && cr->error < _TSF_CR_ERR_MAX);
        CHECK(cr->error_offset < size);
        CHECK(cr->consumed == 0);
        CHECK(tsf_cr_error_to_string(cr->error) && tsf_cr_error_describe(cr->error));

        /* Prefixes: NEED_MORE up to the offending field, then INVALID with
         * this very error, reported within the field (at most 4 bytes). */
        for (size_t k = 0; k <= size && k <= cr->error_offset + 8; k++) {
                enum tsf_cr_status s = parse_copy(data, k, 0, 0, &again);

                if (k <= cr->error_offset) {
                        CHECK(s == TSF_CR_NEED_MORE);
                        continue;
                }
                if (s == TSF_CR_NEED_MORE) {
                        CHECK(first_invalid == SIZE_MAX);
                        continue;
                }
                CHECK(s == TSF_CR_INVALID);
                CHECK(again.error == cr->error && again.error_offset == cr->error_offset);
                if (first_invalid == SIZE_MAX)
                        first_invalid = k;
        }
        CHECK(first_invalid != SIZE_MAX && first_invalid - cr->error_offset <= 4);

        /* More bytes never change the verdict. */
        for (size_t i = 0; i < ELEMENTSOF(fills); i++) {
                CHECK(parse_copy(data, size, 1 + i * 37, fills[i], &again) == TSF_CR_INVALID);
                CHECK(again.error == cr->error && again.error_offset == cr->error_offset);
        }
}

/* ---- encoder driven by a struct built from the input -------------------- */

struct reader {
        const uint8_t *p;
        size_t left;
};

static uint8_t take(struct reader *r) {
        if (r->left == 0)
                return 0;
        r->left--;
        return *r->p++;
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

static void build(struct reader *r, struct tsf_cr *cr) {
        static const char *const prefixes[] = {"", "Cookie: mstshash=", "Cookie: msts=", "tsv://", "mth://"};
        uint8_t shape = take(r), n;
        size_t w = 0;

        memset(cr, 0, sizeof(*cr));
        cr->has_pcb = shape & 1;
        cr->pcb_version = (shape >> 1) & 3;
        cr->pcb_id = (uint32_t)take(r) << 24;
        cr->pcb_id |= take(r);
        cr->pcb_cch = (shape & 0x08) ? take(r) : 0;
        n = take(r);
        /* Mostly valid code points, sometimes raw bytes for the encoder
         * to refuse. */
        for (uint8_t i = 0; i < n && w + 4 < sizeof(cr->pcb_string); i++) {
                uint8_t a = take(r), b = take(r);

                if (shape & 0x10)
                        cr->pcb_string[w++] = (char)(a ? a : 'x');
                else
                        w += put_utf8(cr->pcb_string + w,
                                      a < 0x40   ? (uint32_t)(a ? a : 'y')
                                      : a < 0x80 ? 0x80 + ((uint32_t)(a & 0x3F) << 5 | (b & 0x1F))
                                      : a < 0xC0 ? (uint32_t)a << 8 | b
                                                 : 0x10000u + ((uint32_t)a << 10) + b);
        }
        cr->src_ref = (uint16_t)(take(r) << 8);
        cr->src_ref |= take(r);
        cr->has_neg_req = shape & 0x20;
        cr->neg_flags = take(r);
        cr->has_correlation = shape & 0x40;
        cr->requested_protocols = take(r);
        for (size_t i = 0; i < 16; i++)
                cr->correlation_id[i] = take(r);

        cr->cookie_kind = (enum tsf_cookie_kind)(take(r) % (_TSF_COOKIE_KIND_MAX + 1));
        n = take(r);
        if (shape & 0x80) {
                const char *prefix = prefixes[n % ELEMENTSOF(prefixes)];

                cr->cookie_len = strlen(prefix);
                memcpy(cr->cookie, prefix, cr->cookie_len);
        }
        for (uint8_t i = 0; i < n && cr->cookie_len < TSF_CR_COOKIE_MAX + 1; i++)
                cr->cookie[cr->cookie_len++] = (char)take(r);
        if (cr->cookie_len > TSF_CR_COOKIE_MAX)
                cr->cookie_len = TSF_CR_COOKIE_MAX + (take(r) & 1);
}

static void check_encoder(const uint8_t *data, size_t size) {
        struct reader r = {data, size};
        uint8_t enc[TSF_FIRST_PDU_MAX], enc2[TSF_FIRST_PDU_MAX];
        struct tsf_cr in, out;
        ssize_t n;

        build(&r, &in);
        n = tsf_cr_encode(&in, enc, sizeof(enc));
        CHECK(n == -EINVAL || n > 0);
        if (n < 0)
                return;
        CHECK(parse_copy(enc, (size_t)n, 0, 0, &out) == TSF_CR_COMPLETE);
        CHECK(out.consumed == (size_t)n);
        check_fields(&out);
        CHECK(out.has_pcb == in.has_pcb && out.cookie_kind == in.cookie_kind &&
              out.cookie_len == in.cookie_len);
        CHECK(memcmp(out.cookie, in.cookie, in.cookie_len) == 0);
        CHECK(!in.has_pcb || strcmp(out.pcb_string, in.pcb_string) == 0);
        CHECK(tsf_cr_encode(&out, enc2, sizeof(enc2)) == n);
        CHECK(memcmp(enc, enc2, (size_t)n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct tsf_cr cr;
        enum tsf_cr_status s;

        s = parse_copy(data, size, 0, 0, &cr);
        switch (s) {
        case TSF_CR_COMPLETE:
                check_complete(data, size, &cr);
                break;
        case TSF_CR_NEED_MORE:
                check_need_more(data, size, &cr);
                break;
        case TSF_CR_INVALID:
                check_invalid(data, size, &cr);
                break;
        default:
                CHECK(!"unknown status");
        }

        /* The routing-token helpers on raw input: decode(format(x)) == x. */
        {
                uint32_t addr, addr2;
                uint16_t port, port2;
                char tok[32];

                if (tsf_routing_token_decode((const char *)data, size, &addr, &port) == 0) {
                        int n = tsf_routing_token_format(addr, port, tok, sizeof(tok));

                        CHECK(n > 0 && tsf_routing_token_decode(tok, (size_t)n, &addr2, &port2) == 0);
                        CHECK(addr == addr2 && port == port2);
                }
        }

        check_encoder(data, size);
        return 0;
}
