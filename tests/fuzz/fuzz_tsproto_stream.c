/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the frame level of lib/tsproto.c: the input is a
 * byte stream as it comes out of TLS. Checked:
 *
 *   header  on every prefix of the first 12 bytes, tsf_proto_header_decode()
 *           answers -EAGAIN until its verdict, and then keeps it;
 *   frames  tsf_pdu_decode() walks the stream frame by frame; each frame
 *           encodes back to exactly its bytes and decodes again to an
 *           equal PDU (decode -> encode -> decode);
 *   reader  the streaming reader, fed in pieces of sizes the input picks
 *           (one byte at a time included), delivers the very same PDUs and
 *           ends with the same error, or with -EAGAIN having taken every
 *           byte when the stream ends inside a frame.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsfarm/macro.h"
#include "tsfarm/tsproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                         \
        do {                                                                                                \
                if (!(cond)) {                                                                              \
                        fprintf(stderr, "fuzz_tsproto_stream: invariant violated at %s:%d: %s\n", __FILE__, \
                                __LINE__, #cond);                                                           \
                        abort();                                                                            \
                }                                                                                           \
        } while (0)

#define FRAMES_MAX 4096

struct walk {
        struct tsf_pdu pdus[64]; /* the first ones, compared in full */
        size_t ends[FRAMES_MAX]; /* where each frame ends */
        size_t count;
        int verdict; /* -EAGAIN (or 0 at the exact end), or the error */
};

static void check_header_prefixes(const uint8_t *data, size_t size) {
        struct tsf_proto_header h;
        int verdict = -EAGAIN;

        for (size_t k = 0; k <= MIN(size, (size_t)TSF_PROTO_HEADER_SIZE); k++) {
                uint8_t *copy = malloc(k ? k : 1);
                int r;

                CHECK(copy);
                if (k)
                        memcpy(copy, data, k);
                r = tsf_proto_header_decode(copy, k, &h);
                free(copy);
                CHECK(r == 0 || r == -EAGAIN || r == -EBADMSG || r == -EMSGSIZE || r == -EPROTONOSUPPORT);
                CHECK(r != 0 || k == TSF_PROTO_HEADER_SIZE);
                if (verdict != -EAGAIN)
                        CHECK(r == verdict);
                verdict = r;
        }
}

/* tsf_pdu_decode() along the stream, on a heap copy of exactly the rest. */
static void walk_frames(const uint8_t *data, size_t size, struct walk *w) {
        uint8_t *enc = malloc(TSF_PROTO_FRAME_MAX);
        size_t off = 0;

        CHECK(enc);
        w->count = 0;
        w->verdict = 0;
        while (off < size && w->count < FRAMES_MAX) {
                size_t rest = size - off;
                uint8_t *copy = malloc(rest);
                struct tsf_pdu pdu, again;
                ssize_t n;

                CHECK(copy);
                memcpy(copy, data + off, rest);
                n = tsf_pdu_decode(copy, rest, &pdu);
                if (n < 0) {
                        CHECK(n == -EAGAIN || n == -EBADMSG || n == -EMSGSIZE || n == -EPROTONOSUPPORT);
                        w->verdict = (int)n;
                        free(copy);
                        break;
                }
                CHECK(n >= TSF_PROTO_HEADER_SIZE && (size_t)n <= rest && (size_t)n <= TSF_PROTO_FRAME_MAX);
                CHECK(tsf_pdu_type_to_string(pdu.type) != NULL);

                /* Canonical: the encoder writes the very bytes. */
                CHECK(tsf_pdu_encode(&pdu, enc, TSF_PROTO_FRAME_MAX) == n);
                CHECK(memcmp(enc, data + off, (size_t)n) == 0);
                CHECK(tsf_pdu_decode(enc, (size_t)n, &again) == n);
                CHECK(tsf_pdu_equal(&again, &pdu));

                if (w->count < ELEMENTSOF(w->pdus)) {
                        /* Terminal data must outlive the copy: point it
                         * at the caller's bytes, which are the same. */
                        if (pdu.type == TSF_PDU_TERMINAL_DATA)
                                pdu.terminal_data.data = data + off + TSF_PROTO_HEADER_SIZE;
                        w->pdus[w->count] = pdu;
                }
                off += (size_t)n;
                w->ends[w->count++] = off;
                free(copy);
        }
        free(enc);
}

static void check_reader(const uint8_t *data, size_t size, const struct walk *w, uint8_t seed) {
        struct tsf_proto_reader *r = malloc(sizeof(*r));
        size_t off = 0, got = 0, step = 0;
        int last = -EAGAIN;

        CHECK(r);
        tsf_proto_reader_init(r);
        while (off < size) {
                /* seed 0: one byte at a time; else pieces of 1..seed*64. */
                size_t piece = seed == 0 ? 1 : 1 + (step++ * 2654435761u) % ((size_t)seed * 64);
                size_t n = MIN(piece, size - off), p = 0;
                uint8_t *copy = malloc(n);

                CHECK(copy);
                memcpy(copy, data + off, n);
                while (p < n) {
                        struct tsf_pdu pdu;
                        size_t used;

                        last = tsf_proto_reader_feed(r, copy + p, n - p, &used, &pdu);
                        CHECK(used <= n - p);
                        p += used;
                        if (last != 0)
                                break;
                        /* A frame: the next the walk found, ending here. */
                        CHECK(got < w->count);
                        CHECK(off + p == w->ends[got]);
                        if (got < ELEMENTSOF(w->pdus))
                                CHECK(tsf_pdu_equal(&pdu, &w->pdus[got]));
                        got++;
                }
                free(copy);
                if (last != 0 && last != -EAGAIN)
                        break;
                CHECK(p == n);
                off += n;
        }
        if (w->count == FRAMES_MAX) {
                free(r);
                return;
        }
        CHECK(got == w->count);
        if (w->verdict == 0 || w->verdict == -EAGAIN)
                CHECK(last == -EAGAIN || (last == 0 && off == size) || size == 0);
        else
                CHECK(last == w->verdict);
        tsf_proto_reader_wipe(r);
        free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static struct walk w;

        check_header_prefixes(data, size);
        walk_frames(data, size, &w);
        check_reader(data, size, &w, 0);
        check_reader(data, size, &w, size > 0 ? data[0] : 1);
        return 0;
}
