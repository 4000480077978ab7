/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the X.224 side of lib/tsproto.c:
 *
 *   tsf_cc_decode()       on the input: a verdict on every prefix that is
 *                         -EAGAIN until it is final and then stays; a
 *                         confirm encodes back to exactly its bytes;
 *   tsf_proto_cc_for()    on the input parsed as a Connection Request: the
 *                         answer encodes, decodes to itself, and selects
 *                         TLS exactly when the client offered it;
 *   tsf_proto_cr_build()  with the input as a user name and as a routing
 *                         token: refused, or a request the gateway's parser
 *                         reads back with that very cookie value.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsfarm/macro.h"
#include "tsfarm/tsproto.h"
#include "tsfarm/x224.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                     \
        do {                                                                                            \
                if (!(cond)) {                                                                          \
                        fprintf(stderr, "fuzz_tsproto_cc: invariant violated at %s:%d: %s\n", __FILE__, \
                                __LINE__, #cond);                                                       \
                        abort();                                                                        \
                }                                                                                       \
        } while (0)

static bool cc_equal(const struct tsf_cc *a, const struct tsf_cc *b) {
        return a->dst_ref == b->dst_ref && a->src_ref == b->src_ref && a->neg == b->neg &&
               a->neg_flags == b->neg_flags && a->selected_protocol == b->selected_protocol &&
               a->failure_code == b->failure_code;
}

static ssize_t cc_decode_copy(const uint8_t *data, size_t len, struct tsf_cc *cc) {
        uint8_t *copy = malloc(len ? len : 1);
        ssize_t r;

        CHECK(copy);
        if (len)
                memcpy(copy, data, len);
        r = tsf_cc_decode(copy, len, cc);
        free(copy);
        return r;
}

static void check_cc_decode(const uint8_t *data, size_t size) {
        struct tsf_cc cc, again;
        uint8_t enc[TSF_CC_SIZE_MAX];
        ssize_t verdict = -EAGAIN;

        for (size_t k = 0; k <= MIN(size, (size_t)TSF_CC_SIZE_MAX); k++) {
                ssize_t r = cc_decode_copy(data, k, &cc);

                CHECK(r == -EAGAIN || r == -EBADMSG || r == TSF_CC_SIZE_MIN || r == TSF_CC_SIZE_MAX);
                if (verdict != -EAGAIN)
                        CHECK(r == verdict);
                verdict = r;
                if (r <= 0)
                        continue;
                CHECK((size_t)r <= k);
                CHECK(cc.neg < _TSF_CC_NEG_MAX);
                CHECK(tsf_cc_encode(&cc, enc, sizeof(enc)) == r);
                CHECK(memcmp(enc, data, (size_t)r) == 0);
                CHECK(tsf_cc_decode(enc, (size_t)r, &again) == r && cc_equal(&cc, &again));
        }
}

static void check_cc_for(const uint8_t *data, size_t size) {
        struct tsf_cr cr;
        struct tsf_cc cc, again;
        uint8_t enc[TSF_CC_SIZE_MAX];
        bool tls;

        if (tsf_cr_parse(data, size, &cr) != TSF_CR_COMPLETE)
                return;
        tls = tsf_proto_cc_for(&cr, &cc);
        CHECK(tls == (cr.has_neg_req && (cr.requested_protocols & TSF_PROTOCOL_SSL)));
        CHECK(tls ? cc.neg == TSF_CC_NEG_RESPONSE && cc.selected_protocol == TSF_PROTOCOL_SSL
                  : cc.neg == TSF_CC_NEG_FAILURE);
        CHECK(cc.dst_ref == cr.src_ref);
        CHECK(tsf_cc_encode(&cc, enc, sizeof(enc)) == TSF_CC_SIZE_MAX);
        CHECK(tsf_cc_decode(enc, sizeof(enc), &again) == TSF_CC_SIZE_MAX && cc_equal(&cc, &again));
}

static void check_cr_build(const uint8_t *data, size_t size) {
        char *value = malloc(size + 1);
        uint8_t enc[TSF_CR_TPKT_MAX];
        struct tsf_cr cr, parsed;

        CHECK(value);
        memcpy(value, data, size);
        value[size] = '\0';
        for (int as_token = 0; as_token < 2; as_token++) {
                size_t vlen = strlen(value);
                ssize_t n;
                int r = as_token ? tsf_proto_cr_build(NULL, value, &cr)
                                 : tsf_proto_cr_build(value, NULL, &cr);

                CHECK(r == 0 || r == -EINVAL);
                if (r < 0)
                        continue;
                /* Whatever fits a REDIRECT's routing token fits here. */
                n = tsf_cr_encode(&cr, enc, sizeof(enc));
                CHECK(n > 0);
                CHECK(tsf_cr_parse(enc, (size_t)n, &parsed) == TSF_CR_COMPLETE &&
                      parsed.consumed == (size_t)n);
                CHECK(parsed.cookie_kind == (as_token ? TSF_COOKIE_ROUTING_TOKEN : TSF_COOKIE_MSTSHASH));
                CHECK(parsed.cookie_value_len == vlen);
                CHECK(memcmp(parsed.cookie + parsed.cookie_value_offset, value, vlen) == 0);
                CHECK(parsed.has_neg_req && parsed.requested_protocols == TSF_PROTOCOL_SSL);
        }
        if (strlen(value) >= 1 && strlen(value) <= TSF_PROTO_ROUTING_TOKEN_MAX) {
                bool printable = true;

                for (const char *p = value; *p; p++)
                        printable = printable && *p >= 0x21 && *p <= 0x7E;
                if (printable)
                        CHECK(tsf_proto_cr_build(NULL, value, &cr) == 0);
        }
        free(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        check_cc_decode(data, size);
        check_cc_for(data, size);
        check_cr_build(data, size);
        return 0;
}
