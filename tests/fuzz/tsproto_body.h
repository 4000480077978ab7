/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The libFuzzer harness behind every tests/fuzz/fuzz_tsproto_<type>.c: one
 * target per PDU body decoder of lib/tsproto.c. Each target defines
 * FUZZ_PDU_TYPE and includes this file; the input is a body of that type.
 *
 * Checked on every input (every decode runs on a heap copy of exactly the
 * bytes it is given, so ASan sees any read past the end):
 *
 *   verdict   0, -EBADMSG, or -EMSGSIZE exactly when the input is longer
 *             than the type's cap; a refused body leaves a zeroed PDU;
 *   framed    the same body behind a header decodes to the same verdict
 *             (the header refuses lengths outside the type's bounds
 *             first), the same PDU, and so does the streaming reader fed
 *             in two pieces split where the input says;
 *   canonical a decoded body encodes back to exactly the input, and that
 *             frame decodes to an equal PDU (decode -> encode -> decode);
 *             no strict prefix of it is a body (terminal data aside);
 *   encoder   a PDU of this type built from the raw input bytes is either
 *             refused (-EINVAL) or encodes to a frame that decodes back to
 *             an equal PDU.
 */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsfarm/macro.h"
#include "tsfarm/tsproto.h"

#ifndef FUZZ_PDU_TYPE
#error "define FUZZ_PDU_TYPE before including tsproto_body.h"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz_tsproto(%s): invariant violated at %s:%d: %s\n",     \
                                tsf_pdu_type_to_string(FUZZ_PDU_TYPE), __FILE__, __LINE__, #cond); \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static uint8_t *heap_copy(const uint8_t *data, size_t size) {
        uint8_t *copy = malloc(size ? size : 1);

        CHECK(copy);
        if (size)
                memcpy(copy, data, size);
        return copy;
}

static bool is_zero(const void *p, size_t n) {
        const uint8_t *b = p;

        for (size_t i = 0; i < n; i++)
                if (b[i])
                        return false;
        return true;
}

static void put_header(uint8_t *h, uint16_t flags, uint32_t length) {
        memcpy(h, TSF_PROTO_MAGIC, TSF_PROTO_MAGIC_SIZE);
        h[4] = TSF_PROTO_VERSION;
        h[5] = FUZZ_PDU_TYPE;
        put_be16(h + 6, flags);
        h[8] = (uint8_t)(length >> 24);
        h[9] = (uint8_t)(length >> 16);
        h[10] = (uint8_t)(length >> 8);
        h[11] = (uint8_t)length;
}

/* The frame of header + body through tsf_pdu_decode() and the reader. */
static void check_framed(const uint8_t *data, size_t size, uint16_t flags, int verdict,
                         const struct tsf_pdu *decoded, size_t split) {
        size_t n = TSF_PROTO_HEADER_SIZE + size;
        uint8_t *frame = malloc(n);
        struct tsf_proto_reader *r = malloc(sizeof(*r));
        struct tsf_pdu pdu;
        size_t used, at;
        ssize_t s;
        int k;

        CHECK(frame && r);
        put_header(frame, flags, (uint32_t)size);
        if (size)
                memcpy(frame + TSF_PROTO_HEADER_SIZE, data, size);

        s = tsf_pdu_decode(frame, n, &pdu);
        if (verdict == 0) {
                CHECK(s == (ssize_t)n);
                CHECK(tsf_pdu_equal(&pdu, decoded));
        } else if (size < tsf_pdu_body_min(FUZZ_PDU_TYPE))
                CHECK(s == -EBADMSG); /* the header refuses the length */
        else
                CHECK(s == verdict);

        /* The reader, in two pieces. */
        tsf_proto_reader_init(r);
        split %= n + 1;
        k = tsf_proto_reader_feed(r, frame, split, &used, &pdu);
        at = used;
        if (k == -EAGAIN) {
                CHECK(used == split);
                k = tsf_proto_reader_feed(r, frame + at, n - at, &used, &pdu);
                at += used;
        }
        if (s >= 0) {
                CHECK(k == 0 && at == n);
                CHECK(tsf_pdu_equal(&pdu, decoded));
        } else {
                CHECK(k == (int)s);
                /* Over the cap: not one body byte was taken. */
                if (s == -EMSGSIZE)
                        CHECK(at <= TSF_PROTO_HEADER_SIZE);
        }
        tsf_proto_reader_wipe(r);
        free(r);
        free(frame);
}

static void check_canonical(const uint8_t *data, size_t size, uint16_t flags, const struct tsf_pdu *pdu) {
        uint8_t *enc = malloc(TSF_PROTO_FRAME_MAX);
        struct tsf_pdu again;
        ssize_t n;

        CHECK(enc);
        n = tsf_pdu_encode(pdu, enc, TSF_PROTO_FRAME_MAX);
        CHECK(n == (ssize_t)(TSF_PROTO_HEADER_SIZE + size));
        CHECK(get_be16(enc + 6) == flags);
        CHECK(size == 0 || memcmp(enc + TSF_PROTO_HEADER_SIZE, data, size) == 0);
        CHECK(tsf_pdu_decode(enc, (size_t)n, &again) == n);
        CHECK(tsf_pdu_equal(&again, pdu));
        CHECK(tsf_pdu_encode(pdu, enc, (size_t)n - 1) == -ENOBUFS);

        /* A prefix reads the same fields from the same bytes, so it can
         * never come out exactly at its end: no prefix is a body. */
        if (FUZZ_PDU_TYPE != TSF_PDU_TERMINAL_DATA)
                for (size_t k = 0; k < size; k++) {
                        uint8_t *copy = heap_copy(data, k);

                        CHECK(tsf_pdu_body_decode(FUZZ_PDU_TYPE, flags, copy, k, &again) < 0);
                        free(copy);
                }
        free(enc);
}

/* The raw input as the PDU struct: the encoder must refuse it or write
 * something that decodes back to it. Booleans and enums are set from
 * bytes explicitly (a bool holding 2 is undefined behaviour, not a test). */
static void check_encoder(const uint8_t *data, size_t size) {
        uint8_t *enc = malloc(TSF_PROTO_FRAME_MAX);
        uint8_t b0 = size > 0 ? data[0] : 0, b1 = size > 1 ? data[1] : 0;
        struct tsf_pdu pdu, back;
        ssize_t n;

        CHECK(enc);
        tsf_pdu_init(&pdu, FUZZ_PDU_TYPE);
        memcpy((uint8_t *)&pdu + offsetof(struct tsf_pdu, license_request), data,
               MIN(size, sizeof(pdu) - offsetof(struct tsf_pdu, license_request)));
        switch (FUZZ_PDU_TYPE) {
        case TSF_PDU_LICENSE_RESPONSE:
                pdu.license_response.status = (enum tsf_license_status)b0;
                break;
        case TSF_PDU_CLIENT_LICENSE_INFO:
                pdu.client_license_info.hardware_id_len = b0;
                break;
        case TSF_PDU_CLIENT_INFO:
                pdu.client_info.hardware_id_len = b0;
                pdu.client_info.reconnect_cookie_len = b1;
                break;
        case TSF_PDU_LOGON_RESULT:
                pdu.logon_result.status = (enum tsf_logon_status)b0;
                pdu.logon_result.reattached = b1 & 1;
                pdu.logon_result.reconnect_cookie_len = b1 >> 1;
                break;
        case TSF_PDU_TERMINAL_DATA:
                pdu.terminal_data.data = data;
                pdu.terminal_data.len = size;
                break;
        case TSF_PDU_KEEPALIVE:
                pdu.keepalive.reply = b0 & 1;
                break;
        default:
                break;
        }
        n = tsf_pdu_encode(&pdu, enc, TSF_PROTO_FRAME_MAX);
        CHECK(n == -EINVAL || n >= TSF_PROTO_HEADER_SIZE);
        if (n > 0) {
                CHECK(tsf_pdu_decode(enc, (size_t)n, &back) == n);
                CHECK(tsf_pdu_equal(&back, &pdu));
        }
        free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* KEEPALIVE is the one type with a flag; fuzz both ways. */
        const uint16_t flag_sets[] = {0, TSF_PROTO_FLAG_REPLY};
        size_t nflags = FUZZ_PDU_TYPE == TSF_PDU_KEEPALIVE ? 2 : 1;
        size_t split = size > 0 ? (size_t)data[size - 1] * 131 : 0;

        for (size_t f = 0; f < nflags; f++) {
                uint8_t *copy = heap_copy(data, size);
                struct tsf_pdu pdu;
                int r;

                r = tsf_pdu_body_decode(FUZZ_PDU_TYPE, flag_sets[f], copy, size, &pdu);
                CHECK(r == 0 || r == -EBADMSG || r == -EMSGSIZE);
                CHECK((r == -EMSGSIZE) == (size > tsf_pdu_body_max(FUZZ_PDU_TYPE)));
                if (r < 0) {
                        /* Nothing half-decoded is handed back. */
                        CHECK(pdu.type == FUZZ_PDU_TYPE && pdu.version == TSF_PROTO_VERSION);
                        CHECK(is_zero(&pdu.license_request,
                                      sizeof(pdu) - offsetof(struct tsf_pdu, license_request)));
                } else {
                        /* Terminal data points into the copy; compare
                         * against the caller's bytes from here on. */
                        if (FUZZ_PDU_TYPE == TSF_PDU_TERMINAL_DATA) {
                                CHECK(pdu.terminal_data.data == copy && pdu.terminal_data.len == size);
                                pdu.terminal_data.data = data;
                        }
                        check_canonical(data, size, flag_sets[f], &pdu);
                }
                check_framed(data, size, flag_sets[f], r, &pdu, split);
                free(copy);
        }
        check_encoder(data, size);
        return 0;
}
