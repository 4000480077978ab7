/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the project's RDP-style protocol (lib/tsproto.c): exact
 * bytes of a few frames (the examples in docs/protocol.md), a round trip of
 * every PDU type at its smallest, a typical and its largest size (which
 * must be exactly the type's bounds), every truncation, every single-byte
 * change of every header, trailing bytes, lengths over the caps, unknown
 * versions, types and flags, every field rule, the streaming reader fed one
 * byte at a time, the state machine table, and the X.224 Connection
 * Confirm.
 *
 * Every decode runs on a heap copy of exactly the bytes given, so that
 * AddressSanitizer catches a read past the end.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tsfarm/macro.h"
#include "tsfarm/tsproto.h"
#include "tsfarm/x224.h"

/* ---- helpers --------------------------------------------------------------- */

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

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

/* tsf_pdu_decode() on a heap copy of exactly len bytes. The decoded
 * terminal data would point into the copy, so it is compared here and
 * then cleared. */
static ssize_t decode_exact(const uint8_t *bytes, size_t len, struct tsf_pdu *pdu,
                            const struct tsf_pdu *expect) {
        uint8_t *copy = malloc(len ? len : 1);
        ssize_t r;

        assert_non_null(copy);
        if (len)
                memcpy(copy, bytes, len);
        r = tsf_pdu_decode(copy, len, pdu);
        if (r >= 0 && expect)
                assert_true(tsf_pdu_equal(pdu, expect));
        if (r >= 0 && pdu->type == TSF_PDU_TERMINAL_DATA)
                pdu->terminal_data.data = NULL;
        free(copy);
        return r;
}

static int body_decode_exact(enum tsf_pdu_type type, uint16_t flags, const uint8_t *body, size_t len) {
        uint8_t *copy = malloc(len ? len : 1);
        struct tsf_pdu pdu;
        int r;

        assert_non_null(copy);
        if (len)
                memcpy(copy, body, len);
        r = tsf_pdu_body_decode(type, flags, copy, len, &pdu);
        free(copy);
        return r;
}

static void put_be32(uint8_t *p, uint32_t v) {
        put_be16(p, (uint16_t)(v >> 16));
        put_be16(p + 2, (uint16_t)v);
}

static void fill(char *dst, size_t n, char c) {
        memset(dst, c, n);
        dst[n] = '\0';
}

/* ---- sample PDUs -----------------------------------------------------------------
 * Every type in three shapes: every optional field empty and every
 * required one at its shortest (the body must be exactly the type's
 * minimum), a typical one, and every field at its cap (exactly the
 * maximum). */

enum shape {
        SHAPE_MIN,
        SHAPE_TYPICAL,
        SHAPE_MAX,
        _SHAPE_COUNT,
};

static uint8_t terminal_bytes[TSF_PROTO_DATA_MAX];

/* A host:port of exactly 255 bytes: labels of 63, 63, 63, 58 and ":3389". */
static void longest_target(char *t) {
        size_t p = 0;
        const size_t labels[] = {63, 63, 63, 58};

        for (size_t i = 0; i < ELEMENTSOF(labels); i++) {
                if (i)
                        t[p++] = '.';
                memset(t + p, 'h', labels[i]);
                p += labels[i];
        }
        memcpy(t + p, ":3389", 6);
        assert_int_equal(strlen(t), TSF_PROTO_TARGET_MAX);
}

static void longest_token(char *t) {
        static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

        memcpy(t, "tsl1.", 5);
        for (size_t i = 5; i < TSF_PROTO_TOKEN_MAX; i++)
                t[i] = alphabet[i % (sizeof(alphabet) - 1)];
        t[TSF_PROTO_TOKEN_MAX] = '\0';
}

/* UTF-8 text of exactly n bytes, with 2-, 3- and 4-byte characters. */
static void utf8_text(char *t, size_t n) {
        static const char *const pieces[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "a", " "};
        size_t p = 0, i = 0;

        while (p < n) {
                const char *piece = pieces[i++ % ELEMENTSOF(pieces)];
                size_t k = strlen(piece);

                if (p + k > n)
                        piece = "z", k = 1;
                memcpy(t + p, piece, k);
                p += k;
        }
        t[n] = '\0';
}

static void build(struct tsf_pdu *p, enum tsf_pdu_type type, enum shape s) {
        tsf_pdu_init(p, type);
        switch (type) {
        case TSF_PDU_LICENSE_REQUEST: {
                struct tsf_pdu_license_request *b = &p->license_request;

                b->max_version = s == SHAPE_MAX ? 255 : 1;
                for (size_t i = 0; i < sizeof(b->nonce); i++)
                        b->nonce[i] = (uint8_t)(0xA0 + i);
                if (s == SHAPE_MIN) {
                        fill(b->farm_id, 1, 'f');
                        fill(b->product_version, 1, '1');
                } else if (s == SHAPE_TYPICAL) {
                        strcpy(b->farm_id, "corp-farm.berlin");
                        strcpy(b->product_version, "2025");
                } else {
                        fill(b->farm_id, TSF_PROTO_FARM_ID_MAX, 'F');
                        fill(b->product_version, TSF_PROTO_PRODUCT_VERSION_MAX, '_');
                }
                break;
        }
        case TSF_PDU_CLIENT_LICENSE_INFO: {
                struct tsf_pdu_client_license_info *b = &p->client_license_info;

                for (size_t i = 0; i < sizeof(b->nonce); i++)
                        b->nonce[i] = (uint8_t)(0xA0 + i);
                b->hardware_id_len = s == SHAPE_MIN   ? TSF_PROTO_HWID_MIN
                                     : s == SHAPE_MAX ? TSF_PROTO_HWID_MAX
                                                      : 32;
                for (size_t i = 0; i < b->hardware_id_len; i++)
                        b->hardware_id[i] = (uint8_t)(i * 7);
                if (s == SHAPE_MIN)
                        fill(b->device_name, 1, 'd');
                else if (s == SHAPE_TYPICAL) {
                        strcpy(b->device_name, "WS-0042");
                        strcpy(b->token, "tsl1.AQEAAQ.c2ln");
                } else {
                        utf8_text(b->device_name, TSF_PROTO_DEVICE_NAME_MAX);
                        longest_token(b->token);
                }
                break;
        }
        case TSF_PDU_LICENSE_RESPONSE: {
                struct tsf_pdu_license_response *b = &p->license_response;

                if (s == SHAPE_MIN)
                        b->status = TSF_LICENSE_VALID;
                else if (s == SHAPE_TYPICAL) {
                        b->status = TSF_LICENSE_UPGRADE;
                        b->reason = TSF_REASON_RENEWED;
                        strcpy(b->reason_text, "Device CAL renewed.");
                        strcpy(b->token, "tsl1.AQIAAQ.c2ln");
                } else {
                        b->status = TSF_LICENSE_NEW;
                        b->reason = 0xFFFF;
                        utf8_text(b->reason_text, TSF_PROTO_REASON_MAX);
                        longest_token(b->token);
                }
                break;
        }
        case TSF_PDU_CLIENT_INFO: {
                struct tsf_pdu_client_info *b = &p->client_info;

                b->rows = s == SHAPE_MAX ? TSF_PROTO_DIMENSION_MAX : s == SHAPE_MIN ? 1 : 24;
                b->cols = s == SHAPE_MAX ? TSF_PROTO_DIMENSION_MAX : s == SHAPE_MIN ? 1 : 80;
                b->hardware_id_len = s == SHAPE_MIN   ? TSF_PROTO_HWID_MIN
                                     : s == SHAPE_MAX ? TSF_PROTO_HWID_MAX
                                                      : 32;
                for (size_t i = 0; i < b->hardware_id_len; i++)
                        b->hardware_id[i] = (uint8_t)(255 - i);
                if (s == SHAPE_MIN) {
                        fill(b->user, 1, 'u');
                        fill(b->device_name, 1, 'd');
                } else if (s == SHAPE_TYPICAL) {
                        strcpy(b->user, "CORP\\alice");
                        strcpy(b->password, "correct horse\tbattery staple");
                        strcpy(b->device_name, "WS-0042");
                        b->reconnect_cookie_len = 32;
                        memset(b->reconnect_cookie, 0x5A, 32);
                        strcpy(b->term, "xterm-256color");
                } else {
                        utf8_text(b->user, TSF_PROTO_USER_MAX);
                        /* Control characters are a password's own business. */
                        fill(b->password, TSF_PROTO_PASSWORD_MAX, '\x1b');
                        utf8_text(b->device_name, TSF_PROTO_DEVICE_NAME_MAX);
                        b->reconnect_cookie_len = TSF_PROTO_COOKIE_MAX;
                        memset(b->reconnect_cookie, 0xFF, TSF_PROTO_COOKIE_MAX);
                        fill(b->term, TSF_PROTO_TERM_MAX, '+');
                }
                break;
        }
        case TSF_PDU_LOGON_RESULT: {
                struct tsf_pdu_logon_result *b = &p->logon_result;

                if (s == SHAPE_MIN)
                        b->status = TSF_LOGON_WRONG_PASSWORD;
                else if (s == SHAPE_TYPICAL) {
                        b->status = TSF_LOGON_OK;
                        b->session_id = 7;
                        b->reattached = true;
                        b->reconnect_cookie_len = TSF_PROTO_COOKIE_MIN;
                        memset(b->reconnect_cookie, 0x11, TSF_PROTO_COOKIE_MIN);
                } else {
                        b->status = TSF_LOGON_OK;
                        b->session_id = UINT32_MAX;
                        b->reason = 0xFFFF;
                        utf8_text(b->reason_text, TSF_PROTO_REASON_MAX);
                        b->reconnect_cookie_len = TSF_PROTO_COOKIE_MAX;
                        memset(b->reconnect_cookie, 0x22, TSF_PROTO_COOKIE_MAX);
                }
                break;
        }
        case TSF_PDU_REDIRECT: {
                struct tsf_pdu_redirect *b = &p->redirect;

                if (s == SHAPE_MIN) {
                        strcpy(b->routing_token, "1");
                        strcpy(b->target, "a:1");
                } else if (s == SHAPE_TYPICAL) {
                        b->reason = TSF_REASON_SESSION_ELSEWHERE;
                        b->session_id = 3;
                        strcpy(b->routing_token, "3640205228.15629.0000");
                        strcpy(b->target, "172.31.249.216:3389");
                        strcpy(b->user, "alice@corp.example");
                        strcpy(b->reason_text, "Your disconnected session is on node2.");
                } else {
                        b->reason = 0xFFFF;
                        b->session_id = UINT32_MAX;
                        fill(b->routing_token, TSF_PROTO_ROUTING_TOKEN_MAX, '~');
                        longest_target(b->target);
                        utf8_text(b->user, TSF_PROTO_USER_MAX);
                        utf8_text(b->reason_text, TSF_PROTO_REASON_MAX);
                }
                break;
        }
        case TSF_PDU_TERMINAL_DATA:
                for (size_t i = 0; i < sizeof(terminal_bytes); i++)
                        terminal_bytes[i] = (uint8_t)(i * 31 + 5);
                p->terminal_data.data = terminal_bytes;
                p->terminal_data.len = s == SHAPE_MIN ? 1 : s == SHAPE_MAX ? TSF_PROTO_DATA_MAX : 100;
                break;
        case TSF_PDU_WINDOW_SIZE:
                p->window_size.rows = s == SHAPE_MIN ? 1 : s == SHAPE_MAX ? TSF_PROTO_DIMENSION_MAX : 50;
                p->window_size.cols = s == SHAPE_MIN ? 1 : s == SHAPE_MAX ? TSF_PROTO_DIMENSION_MAX : 132;
                break;
        case TSF_PDU_DISCONNECT:
        case TSF_PDU_ERROR: {
                struct tsf_pdu_reason *b = type == TSF_PDU_ERROR ? &p->error : &p->disconnect;

                if (s == SHAPE_TYPICAL) {
                        b->reason =
                                type == TSF_PDU_ERROR ? TSF_REASON_UNEXPECTED_PDU : TSF_REASON_IDLE_TIMEOUT;
                        strcpy(b->reason_text, "Bye.");
                } else if (s == SHAPE_MAX) {
                        b->reason = 0xFFFF;
                        utf8_text(b->reason_text, TSF_PROTO_REASON_MAX);
                }
                break;
        }
        case TSF_PDU_LOGOFF:
                break;
        case TSF_PDU_KEEPALIVE:
                p->keepalive.reply = s == SHAPE_TYPICAL;
                p->keepalive.echo = s == SHAPE_MAX ? UINT64_MAX : s == SHAPE_MIN ? 0 : 0x0102030405060708;
                break;
        default:
                fail();
        }
}

/* Encodes into a buffer of exactly the frame's size. */
static size_t encode(const struct tsf_pdu *p, uint8_t *buf, size_t size) {
        ssize_t n = tsf_pdu_encode(p, buf, size);

        if (n < 0)
                fail_msg("encoding %s: %zd", tsf_pdu_type_to_string(p->type), n);
        return (size_t)n;
}

/* ---- exact bytes -------------------------------------------------------------------- */

static void assert_encodes_to(const struct tsf_pdu *p, const char *hex) {
        uint8_t want[512], got[512];
        size_t n = unhex(hex, want, sizeof(want));
        struct tsf_pdu back;

        assert_int_equal(encode(p, got, sizeof(got)), n);
        assert_memory_equal(got, want, n);
        assert_int_equal(decode_exact(want, n, &back, p), (ssize_t)n);
}

static void test_exact_bytes(void **state) {
        struct tsf_pdu p;

        tsf_pdu_init(&p, TSF_PDU_WINDOW_SIZE);
        p.window_size.rows = 24;
        p.window_size.cols = 80;
        assert_encodes_to(&p, "54535250 01 08 0000 00000004 0018 0050");

        tsf_pdu_init(&p, TSF_PDU_KEEPALIVE);
        p.keepalive.reply = true;
        p.keepalive.echo = 0x0102030405060708;
        assert_encodes_to(&p, "54535250 01 0b 0001 00000008 0102030405060708");

        tsf_pdu_init(&p, TSF_PDU_LOGOFF);
        assert_encodes_to(&p, "54535250 01 0a 0000 00000000");

        tsf_pdu_init(&p, TSF_PDU_DISCONNECT);
        p.disconnect.reason = TSF_REASON_USER_REQUEST;
        strcpy(p.disconnect.reason_text, "bye");
        assert_encodes_to(&p, "54535250 01 09 0000 00000007 0401 0003 627965");

        tsf_pdu_init(&p, TSF_PDU_LICENSE_REQUEST);
        p.license_request.max_version = 1;
        memset(p.license_request.nonce, 0xAB, sizeof(p.license_request.nonce));
        strcpy(p.license_request.farm_id, "farm1");
        strcpy(p.license_request.product_version, "2025");
        assert_encodes_to(&p, "54535250 01 01 0000 0000002e 01"
                              " abababababababababababababababab abababababababababababababababab"
                              " 0005 6661726d31 0004 32303235");

        tsf_pdu_init(&p, TSF_PDU_LICENSE_RESPONSE);
        p.license_response.status = TSF_LICENSE_VALID;
        p.license_response.reason = TSF_REASON_GRACE_PERIOD;
        assert_encodes_to(&p, "54535250 01 03 0000 00000007 03 0101 0000 0000");
}

/* ---- round trips ------------------------------------------------------------------------ */

/* Everything that must hold for one valid PDU. */
static void check_pdu(const struct tsf_pdu *p, enum shape s) {
        size_t frame_max = TSF_PROTO_FRAME_MAX + 8;
        uint8_t *buf = malloc(frame_max), *again = malloc(frame_max);
        struct tsf_pdu back;
        size_t n, body;
        uint16_t flags;

        assert_non_null(buf);
        assert_non_null(again);
        n = encode(p, buf, frame_max);
        body = n - TSF_PROTO_HEADER_SIZE;
        flags = get_be16(buf + 6);

        /* The shapes are the bounds: the caps in the header are exact. */
        if (s == SHAPE_MIN)
                assert_int_equal(body, tsf_pdu_body_min(p->type));
        if (s == SHAPE_MAX)
                assert_int_equal(body, tsf_pdu_body_max(p->type));

        /* decode(encode(x)) == x and encode(decode(b)) == b. */
        assert_int_equal(decode_exact(buf, n, &back, p), (ssize_t)n);
        assert_int_equal(tsf_pdu_decode(buf, n, &back), (ssize_t)n);
        assert_int_equal(tsf_pdu_encode(&back, again, frame_max), (ssize_t)n);
        assert_memory_equal(again, buf, n);

        /* An exact buffer is enough, one byte less never is. */
        assert_int_equal(tsf_pdu_encode(p, again, n), (ssize_t)n);
        for (size_t k = 0; k < n; k++)
                assert_int_equal(tsf_pdu_encode(p, again, k), -ENOBUFS);

        /* A frame's bytes after it are the next frame's. */
        memcpy(buf + n, "TSRP\x01", 5);
        assert_int_equal(decode_exact(buf, n + 5, &back, p), (ssize_t)n);

        /* Every prefix of the frame is "need more", never an error. */
        for (size_t k = 0; k < n; k++)
                assert_int_equal(decode_exact(buf, k, &back, NULL), -EAGAIN);

        /* Every truncated body is refused, alone and framed as such
         * (terminal data excepted: any 1.. of its bytes is terminal data). */
        for (size_t k = 0; k < body; k++) {
                int r = body_decode_exact(p->type, flags, buf + TSF_PROTO_HEADER_SIZE, k);

                if (p->type == TSF_PDU_TERMINAL_DATA && k > 0) {
                        assert_int_equal(r, 0);
                        continue;
                }
                assert_int_equal(r, -EBADMSG);
                put_be32(buf + 8, (uint32_t)k);
                assert_int_equal(decode_exact(buf, TSF_PROTO_HEADER_SIZE + k, &back, NULL), -EBADMSG);
        }
        put_be32(buf + 8, (uint32_t)body);

        /* A trailing byte inside the body: malformed, or over the cap. */
        if (p->type != TSF_PDU_TERMINAL_DATA) {
                int r;

                buf[n] = 0;
                r = body_decode_exact(p->type, flags, buf + TSF_PROTO_HEADER_SIZE, body + 1);
                assert_int_equal(r, body + 1 > tsf_pdu_body_max(p->type) ? -EMSGSIZE : -EBADMSG);
                put_be32(buf + 8, (uint32_t)body + 1);
                assert_int_equal(decode_exact(buf, n + 1, &back, NULL), r);
                put_be32(buf + 8, (uint32_t)body);
        }

        free(buf);
        free(again);
}

static void test_round_trip_every_type(void **state) {
        for (enum tsf_pdu_type t = 1; t < _TSF_PDU_TYPE_MAX; t++)
                for (enum shape s = 0; s < _SHAPE_COUNT; s++) {
                        struct tsf_pdu p;

                        build(&p, t, s);
                        check_pdu(&p, s);
                }
}

/* ---- the header ------------------------------------------------------------------------------ */

/* Every byte of every sample's header set to every other value: refused,
 * "need more" (only where the length grew past the bytes there are), or
 * decoded as another valid frame that encodes back to the very bytes. */
static void test_header_corruption(void **state) {
        uint8_t *buf = malloc(TSF_PROTO_FRAME_MAX), *again = malloc(TSF_PROTO_FRAME_MAX);
        size_t refused = 0, other = 0;

        assert_non_null(buf);
        assert_non_null(again);
        for (enum tsf_pdu_type t = 1; t < _TSF_PDU_TYPE_MAX; t++)
                for (enum shape s = 0; s < _SHAPE_COUNT; s++) {
                        struct tsf_pdu p, back;
                        size_t n;

                        build(&p, t, s);
                        n = encode(&p, buf, TSF_PROTO_FRAME_MAX);
                        for (size_t i = 0; i < TSF_PROTO_HEADER_SIZE; i++) {
                                uint8_t orig = buf[i];

                                for (unsigned v = 0; v < 256; v++) {
                                        ssize_t r;

                                        if (v == orig)
                                                continue;
                                        buf[i] = (uint8_t)v;
                                        r = decode_exact(buf, n, &back, NULL);
                                        if (r == -EAGAIN) {
                                                assert_true(i >= 8 && v > orig);
                                                continue;
                                        }
                                        if (r < 0) {
                                                assert_true(r == -EBADMSG || r == -EMSGSIZE ||
                                                            r == -EPROTONOSUPPORT);
                                                refused++;
                                                continue;
                                        }
                                        /* Decoded: consistently. */
                                        other++;
                                        assert_true((size_t)r <= n);
                                        r = tsf_pdu_decode(buf, n, &back);
                                        assert_int_equal(tsf_pdu_encode(&back, again, TSF_PROTO_FRAME_MAX),
                                                         r);
                                        assert_memory_equal(again, buf, (size_t)r);
                                }
                                buf[i] = orig;
                        }
                }
        /* Most changes are refused; a few make another valid frame (a
         * DISCONNECT turned ERROR, terminal data cut shorter). */
        assert_true(refused > 10 * other);
        assert_true(other > 0);
        free(buf);
        free(again);
}

static void test_versions_types_flags(void **state) {
        uint8_t buf[64];
        struct tsf_pdu p, back;
        struct tsf_proto_header h;
        size_t n;

        build(&p, TSF_PDU_WINDOW_SIZE, SHAPE_TYPICAL);
        n = encode(&p, buf, sizeof(buf));

        /* Version: 0 never existed; anything else is a newer protocol. */
        buf[4] = 0;
        assert_int_equal(decode_exact(buf, n, &back, NULL), -EBADMSG);
        for (unsigned v = 2; v < 256; v++) {
                buf[4] = (uint8_t)v;
                assert_int_equal(decode_exact(buf, n, &back, NULL), -EPROTONOSUPPORT);
                /* Known at the 5th byte, before type, flags or length. */
                assert_int_equal(tsf_proto_header_decode(buf, 5, &h), -EPROTONOSUPPORT);
        }
        buf[4] = TSF_PROTO_VERSION;

        /* Types: 0 and everything past ERROR are unknown in version 1. */
        for (unsigned t = 0; t < 256; t++) {
                if (t >= 1 && t < _TSF_PDU_TYPE_MAX)
                        continue;
                buf[5] = (uint8_t)t;
                assert_int_equal(decode_exact(buf, n, &back, NULL), -EBADMSG);
                assert_int_equal(tsf_proto_header_decode(buf, 6, &h), -EBADMSG);
                assert_null(tsf_pdu_type_to_string((enum tsf_pdu_type)t));
                assert_int_equal(tsf_pdu_body_max((enum tsf_pdu_type)t), 0);
        }
        buf[5] = TSF_PDU_WINDOW_SIZE;

        /* Flags: REPLY belongs to KEEPALIVE; no other bit is defined. */
        for (unsigned bit = 0; bit < 16; bit++) {
                put_be16(buf + 6, (uint16_t)(1u << bit));
                assert_int_equal(decode_exact(buf, n, &back, NULL), -EBADMSG);
                assert_int_equal(body_decode_exact(TSF_PDU_WINDOW_SIZE, (uint16_t)(1u << bit), buf + 12, 4),
                                 -EBADMSG);
        }
        /* A high flag byte is refused before the low one arrives. */
        put_be16(buf + 6, 0x8000);
        assert_int_equal(tsf_proto_header_decode(buf, 7, &h), -EBADMSG);

        build(&p, TSF_PDU_KEEPALIVE, SHAPE_MIN);
        n = encode(&p, buf, sizeof(buf));
        put_be16(buf + 6, TSF_PROTO_FLAG_REPLY);
        assert_int_equal(decode_exact(buf, n, &back, NULL), (ssize_t)n);
        assert_true(back.keepalive.reply);
        for (unsigned bit = 1; bit < 16; bit++) {
                put_be16(buf + 6, (uint16_t)(TSF_PROTO_FLAG_REPLY | 1u << bit));
                assert_int_equal(decode_exact(buf, n, &back, NULL), -EBADMSG);
        }

        /* Magic: each byte, as soon as it is there. */
        for (size_t i = 0; i < TSF_PROTO_MAGIC_SIZE; i++) {
                uint8_t b[TSF_PROTO_MAGIC_SIZE];

                memcpy(b, TSF_PROTO_MAGIC, sizeof(b));
                b[i] ^= 0x20;
                assert_int_equal(tsf_proto_header_decode(b, i + 1, &h), -EBADMSG);
                if (i > 0)
                        assert_int_equal(tsf_proto_header_decode(b, i, &h), -EAGAIN);
        }
        /* What a real RDP client sends after TLS (MCS Connect Initial in
         * TPKT) is refused at its first byte. */
        assert_int_equal(tsf_proto_header_decode((const uint8_t *)"\x03\x00\x01\xa0", 1, &h), -EBADMSG);

        /* The encoder writes version 1 only, and known types only. */
        build(&p, TSF_PDU_WINDOW_SIZE, SHAPE_TYPICAL);
        p.version = 2;
        assert_int_equal(tsf_pdu_encode(&p, buf, sizeof(buf)), -EINVAL);
        p.version = TSF_PROTO_VERSION;
        p.type = _TSF_PDU_TYPE_MAX;
        assert_int_equal(tsf_pdu_encode(&p, buf, sizeof(buf)), -EINVAL);
        p.type = 0;
        assert_int_equal(tsf_pdu_encode(&p, buf, sizeof(buf)), -EINVAL);
}

static void test_length_caps(void **state) {
        uint8_t hdr[TSF_PROTO_HEADER_SIZE];
        struct tsf_proto_header h;

        for (enum tsf_pdu_type t = 1; t < _TSF_PDU_TYPE_MAX; t++) {
                size_t min = tsf_pdu_body_min(t), max = tsf_pdu_body_max(t);

                memcpy(hdr, TSF_PROTO_MAGIC, 4);
                hdr[4] = TSF_PROTO_VERSION;
                hdr[5] = (uint8_t)t;
                put_be16(hdr + 6, 0);

                assert_true(min <= max && max <= TSF_PROTO_BODY_MAX);
                put_be32(hdr + 8, (uint32_t)max);
                assert_int_equal(tsf_proto_header_decode(hdr, sizeof(hdr), &h), 0);
                assert_int_equal(h.length, max);
                assert_int_equal(h.type, t);
                put_be32(hdr + 8, (uint32_t)min);
                assert_int_equal(tsf_proto_header_decode(hdr, sizeof(hdr), &h), 0);

                /* Over the cap: refused from the header alone, before a
                 * single body byte. */
                put_be32(hdr + 8, (uint32_t)max + 1);
                assert_int_equal(tsf_proto_header_decode(hdr, sizeof(hdr), &h), -EMSGSIZE);
                put_be32(hdr + 8, UINT32_MAX);
                assert_int_equal(tsf_proto_header_decode(hdr, sizeof(hdr), &h), -EMSGSIZE);
                /* ...and from its first length byte when that alone says so. */
                assert_int_equal(tsf_proto_header_decode(hdr, 9, &h), -EMSGSIZE);
                put_be32(hdr + 8, 0x00010000);
                assert_int_equal(tsf_proto_header_decode(hdr, 10, &h), -EMSGSIZE);

                /* Under the smallest body: no such body is well formed. */
                if (min > 0) {
                        put_be32(hdr + 8, (uint32_t)min - 1);
                        assert_int_equal(tsf_proto_header_decode(hdr, sizeof(hdr), &h), -EBADMSG);
                }
        }
        assert_int_equal(tsf_pdu_body_max(TSF_PDU_TERMINAL_DATA), TSF_PROTO_DATA_MAX);
        assert_int_equal(tsf_pdu_body_max(TSF_PDU_LOGOFF), 0);
}

/* ---- field rules ------------------------------------------------------------------------------ */

/* Encodes the PDU with `placeholder` in some text field, then swaps in
 * `bad` (same length) in the bytes: the decoder must refuse them. */
static void assert_bytes_refused(const struct tsf_pdu *p, const char *placeholder, const char *bad,
                                 size_t len) {
        uint8_t buf[TSF_PROTO_FRAME_MAX];
        struct tsf_pdu back;
        size_t n = encode(p, buf, sizeof(buf));
        uint8_t *at = memmem(buf, n, placeholder, len);

        assert_non_null(at);
        memcpy(at, bad, len);
        assert_int_equal(decode_exact(buf, n, &back, NULL), -EBADMSG);
}

static void test_text_rules(void **state) {
        static const struct {
                const char *bytes;
                size_t len;
                bool text, secret; /* accepted as text / as a password */
        } cases[] = {
                {"plain", 5, true, true},
                {"\xc3\xa9t\xc3\xa9", 5, true, true},   /* été */
                {"a\x1b[31m", 6, false, true},          /* ESC: a control character */
                {"tab\tx", 5, false, true},             /* C0 */
                {"del\x7fx", 5, false, true},           /* DEL */
                {"c1\xc2\x9bx", 5, false, true},        /* U+009B CSI */
                {"nul\0x", 5, false, false},            /* NUL anywhere */
                {"ov\xc0\xafx", 5, false, false},       /* overlong '/' */
                {"su\xed\xa0\x80", 5, false, false},    /* surrogate */
                {"cut\xe2\x82", 5, false, false},       /* truncated sequence */
                {"lo\x80xy", 5, false, false},          /* lone continuation */
                {"big\xf4\x90", 5, false, false},       /* past U+10FFFF (prefix) */
                {"\xf4\x90\x80\x80x", 5, false, false}, /* past U+10FFFF */
                {"\xf0\x9f\x98\x80!", 5, true, true},   /* 4-byte emoji */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct tsf_pdu p;
                uint8_t buf[TSF_PROTO_FRAME_MAX];
                char placeholder[] = "PPPPP";

                /* A text field: the device name in CLIENT_INFO. */
                build(&p, TSF_PDU_CLIENT_INFO, SHAPE_TYPICAL);
                memcpy(p.client_info.device_name, cases[i].bytes, cases[i].len);
                p.client_info.device_name[cases[i].len] = '\0';
                if (cases[i].text)
                        check_pdu(&p, SHAPE_TYPICAL);
                else {
                        /* With a NUL inside, the encoder sees a shorter
                         * string; the bytes are what must be refused. */
                        if (memchr(cases[i].bytes, 0, cases[i].len) == NULL)
                                assert_int_equal(tsf_pdu_encode(&p, buf, sizeof(buf)), -EINVAL);
                        strcpy(p.client_info.device_name, placeholder);
                        assert_bytes_refused(&p, placeholder, cases[i].bytes, cases[i].len);
                }

                /* The password: anything but NUL and broken UTF-8. */
                build(&p, TSF_PDU_CLIENT_INFO, SHAPE_TYPICAL);
                memcpy(p.client_info.password, cases[i].bytes, cases[i].len);
                p.client_info.password[cases[i].len] = '\0';
                if (cases[i].secret)
                        check_pdu(&p, SHAPE_TYPICAL);
                else {
                        if (memchr(cases[i].bytes, 0, cases[i].len) == NULL)
                                assert_int_equal(tsf_pdu_encode(&p, buf, sizeof(buf)), -EINVAL);
                        strcpy(p.client_info.password, placeholder);
                        assert_bytes_refused(&p, placeholder, cases[i].bytes, cases[i].len);
                }
        }
}

static void assert_encode_refused(const struct tsf_pdu *p) {
        uint8_t buf[TSF_PROTO_FRAME_MAX];

        assert_int_equal(tsf_pdu_encode(p, buf, sizeof(buf)), -EINVAL);
}

static void test_field_rules(void **state) {
        struct tsf_pdu p;
        uint8_t buf[TSF_PROTO_FRAME_MAX];
        size_t n;

        /* LICENSE_REQUEST: max_version 0, identifiers only. */
        build(&p, TSF_PDU_LICENSE_REQUEST, SHAPE_TYPICAL);
        p.license_request.max_version = 0;
        assert_encode_refused(&p);
        build(&p, TSF_PDU_LICENSE_REQUEST, SHAPE_TYPICAL);
        strcpy(p.license_request.farm_id, "corp/farm");
        assert_encode_refused(&p);
        strcpy(p.license_request.farm_id, "corp.farm");
        assert_bytes_refused(&p, "corp.farm", "corp/farm", 9);
        build(&p, TSF_PDU_LICENSE_REQUEST, SHAPE_TYPICAL);
        strcpy(p.license_request.farm_id, "");
        assert_encode_refused(&p);
        build(&p, TSF_PDU_LICENSE_REQUEST, SHAPE_TYPICAL);
        fill(p.license_request.farm_id, TSF_PROTO_FARM_ID_MAX, 'x');
        check_pdu(&p, SHAPE_TYPICAL);
        /* No NUL inside the array: a field the caller never terminated. */
        memset(p.license_request.farm_id, 'x', sizeof(p.license_request.farm_id));
        assert_encode_refused(&p);

        /* CLIENT_LICENSE_INFO: hardware id 16..64, token "tsl" + base64url + dots. */
        build(&p, TSF_PDU_CLIENT_LICENSE_INFO, SHAPE_TYPICAL);
        p.client_license_info.hardware_id_len = TSF_PROTO_HWID_MIN - 1;
        assert_encode_refused(&p);
        p.client_license_info.hardware_id_len = TSF_PROTO_HWID_MAX + 1;
        assert_encode_refused(&p);
        build(&p, TSF_PDU_CLIENT_LICENSE_INFO, SHAPE_TYPICAL);
        strcpy(p.client_license_info.token, "xyz1.AQEAAQ.c2ln");
        assert_encode_refused(&p);
        strcpy(p.client_license_info.token, "tsl1.AQEAAQ.c2l=");
        assert_encode_refused(&p);
        strcpy(p.client_license_info.token, "tsl1.AQEAAQ.c2ln");
        assert_bytes_refused(&p, "tsl1.AQEAAQ.c2ln", "tsl1.AQEAAQ.c2l+", 16);
        assert_bytes_refused(&p, "tsl1.AQEAAQ.c2ln", "tsl1 AQEAAQ.c2ln", 16);
        assert_bytes_refused(&p, "tsl1.AQEAAQ.c2ln", "TSL1.AQEAAQ.c2ln", 16);
        /* The hardware id's length prefix, patched out of range. */
        build(&p, TSF_PDU_CLIENT_LICENSE_INFO, SHAPE_MIN);
        n = encode(&p, buf, sizeof(buf));
        assert_int_equal(get_be16(buf + 12 + 32), TSF_PROTO_HWID_MIN);
        put_be16(buf + 12 + 32, TSF_PROTO_HWID_MIN - 1);
        assert_int_equal(decode_exact(buf, n, &p, NULL), -EBADMSG);

        /* LICENSE_RESPONSE: status known, a token exactly with NEW/UPGRADE. */
        build(&p, TSF_PDU_LICENSE_RESPONSE, SHAPE_TYPICAL);
        p.license_response.token[0] = '\0';
        assert_encode_refused(&p);
        build(&p, TSF_PDU_LICENSE_RESPONSE, SHAPE_TYPICAL);
        p.license_response.status = TSF_LICENSE_ERROR;
        assert_encode_refused(&p);
        p.license_response.status = 0;
        assert_encode_refused(&p);
        build(&p, TSF_PDU_LICENSE_RESPONSE, SHAPE_MIN);
        n = encode(&p, buf, sizeof(buf));
        for (unsigned st = 0; st < 256; st++) {
                struct tsf_pdu back;

                buf[12] = (uint8_t)st;
                assert_int_equal(decode_exact(buf, n, &back, NULL),
                                 st == TSF_LICENSE_VALID || st == TSF_LICENSE_ERROR ? (ssize_t)n : -EBADMSG);
        }
        /* Reason codes are an open set: any value decodes. */
        build(&p, TSF_PDU_LICENSE_RESPONSE, SHAPE_MIN);
        p.license_response.reason = 0xBEEF;
        check_pdu(&p, SHAPE_MIN);

        /* CLIENT_INFO: dimensions 1..4096, cookie none or 16..64, terminal name. */
        build(&p, TSF_PDU_CLIENT_INFO, SHAPE_TYPICAL);
        p.client_info.rows = 0;
        assert_encode_refused(&p);
        p.client_info.rows = TSF_PROTO_DIMENSION_MAX + 1;
        assert_encode_refused(&p);
        build(&p, TSF_PDU_CLIENT_INFO, SHAPE_TYPICAL);
        p.client_info.cols = 0;
        assert_encode_refused(&p);
        build(&p, TSF_PDU_CLIENT_INFO, SHAPE_TYPICAL);
        for (size_t k = 1; k < TSF_PROTO_COOKIE_MIN; k++) {
                p.client_info.reconnect_cookie_len = k;
                assert_encode_refused(&p);
        }
        p.client_info.reconnect_cookie_len = TSF_PROTO_COOKIE_MAX + 1;
        assert_encode_refused(&p);
        build(&p, TSF_PDU_CLIENT_INFO, SHAPE_TYPICAL);
        strcpy(p.client_info.term, "xterm 256");
        assert_encode_refused(&p);
        build(&p, TSF_PDU_CLIENT_INFO, SHAPE_TYPICAL);
        p.client_info.user[0] = '\0';
        assert_encode_refused(&p);
        build(&p, TSF_PDU_CLIENT_INFO, SHAPE_TYPICAL);
        n = encode(&p, buf, sizeof(buf));
        put_be16(buf + 12, 0); /* rows */
        assert_int_equal(decode_exact(buf, n, &p, NULL), -EBADMSG);
        put_be16(buf + 12, 24);
        put_be16(buf + 14, TSF_PROTO_DIMENSION_MAX + 1); /* cols */
        assert_int_equal(decode_exact(buf, n, &p, NULL), -EBADMSG);

        /* LOGON_RESULT: a session id, reattached and a cookie exactly with OK. */
        build(&p, TSF_PDU_LOGON_RESULT, SHAPE_TYPICAL);
        p.logon_result.session_id = 0;
        assert_encode_refused(&p);
        build(&p, TSF_PDU_LOGON_RESULT, SHAPE_MIN);
        p.logon_result.session_id = 5;
        assert_encode_refused(&p);
        build(&p, TSF_PDU_LOGON_RESULT, SHAPE_MIN);
        p.logon_result.reattached = true;
        assert_encode_refused(&p);
        build(&p, TSF_PDU_LOGON_RESULT, SHAPE_MIN);
        p.logon_result.reconnect_cookie_len = TSF_PROTO_COOKIE_MIN;
        assert_encode_refused(&p);
        for (enum tsf_logon_status st = TSF_LOGON_WRONG_PASSWORD; st < _TSF_LOGON_STATUS_MAX; st++) {
                build(&p, TSF_PDU_LOGON_RESULT, SHAPE_MIN);
                p.logon_result.status = st;
                check_pdu(&p, SHAPE_MIN);
        }
        build(&p, TSF_PDU_LOGON_RESULT, SHAPE_TYPICAL);
        n = encode(&p, buf, sizeof(buf));
        buf[13] = 2; /* reattached is 0 or 1 */
        assert_int_equal(decode_exact(buf, n, &p, NULL), -EBADMSG);
        buf[13] = 1;
        buf[12] = 0; /* status */
        assert_int_equal(decode_exact(buf, n, &p, NULL), -EBADMSG);
        buf[12] = _TSF_LOGON_STATUS_MAX;
        assert_int_equal(decode_exact(buf, n, &p, NULL), -EBADMSG);

        /* REDIRECT: a routing token that fits a Connection Request, a host:port. */
        {
                static const char *const bad_targets[] = {
                        "host",       "host:",       "host:0",  "host:65536",
                        "host:03389", ":3389",       "-host:1", "[fe80::1%eth0]:3389",
                        "[::1]",      "1.2.3.999:1", "a b:1",   "host.:1",
                };
                static const char *const good_targets[] = {
                        "node2.corp.example:3389", "10.0.0.2:3389", "[2001:db8::2]:3389", "a:65535", "x_y:1",
                };

                for (size_t i = 0; i < ELEMENTSOF(bad_targets); i++) {
                        build(&p, TSF_PDU_REDIRECT, SHAPE_TYPICAL);
                        strcpy(p.redirect.target, bad_targets[i]);
                        assert_encode_refused(&p);
                }
                for (size_t i = 0; i < ELEMENTSOF(good_targets); i++) {
                        build(&p, TSF_PDU_REDIRECT, SHAPE_TYPICAL);
                        strcpy(p.redirect.target, good_targets[i]);
                        check_pdu(&p, SHAPE_TYPICAL);
                }
        }
        build(&p, TSF_PDU_REDIRECT, SHAPE_TYPICAL);
        strcpy(p.redirect.routing_token, "a b");
        assert_encode_refused(&p);
        p.redirect.routing_token[0] = '\0';
        assert_encode_refused(&p);
        strcpy(p.redirect.routing_token, "3640205228.15629.0000");
        assert_bytes_refused(&p, "3640205228.15629.0000", "3640205228.1562\r\n0000", 21);
        assert_bytes_refused(&p, "172.31.249.216:3389", "172.31.249.216:0000", 19);

        /* WINDOW_SIZE. */
        tsf_pdu_init(&p, TSF_PDU_WINDOW_SIZE);
        p.window_size.rows = 1;
        assert_encode_refused(&p);

        /* TERMINAL_DATA: 1..16384 bytes. */
        tsf_pdu_init(&p, TSF_PDU_TERMINAL_DATA);
        p.terminal_data.data = terminal_bytes;
        p.terminal_data.len = 0;
        assert_encode_refused(&p);
        p.terminal_data.len = TSF_PROTO_DATA_MAX + 1;
        assert_encode_refused(&p);
        p.terminal_data.len = 1;
        p.terminal_data.data = NULL;
        assert_encode_refused(&p);

        /* DISCONNECT / ERROR text. */
        tsf_pdu_init(&p, TSF_PDU_ERROR);
        strcpy(p.error.reason_text, "line\nbreak");
        assert_encode_refused(&p);
        fill(p.error.reason_text, TSF_PROTO_REASON_MAX, 'r');
        check_pdu(&p, SHAPE_MAX);
}

static void test_wipe(void **state) {
        struct tsf_pdu p;
        static const struct tsf_pdu zero;

        build(&p, TSF_PDU_CLIENT_INFO, SHAPE_TYPICAL);
        tsf_pdu_wipe(&p);
        assert_memory_equal(&p, &zero, sizeof(p));
}

/* ---- streaming reader ------------------------------------------------------------------------ */

/* Every sample, in order, as one byte stream. */
static size_t build_stream(uint8_t *out, size_t size, struct tsf_pdu *pdus, size_t *count) {
        size_t len = 0, k = 0;

        for (enum tsf_pdu_type t = 1; t < _TSF_PDU_TYPE_MAX; t++)
                for (enum shape s = 0; s < _SHAPE_COUNT; s++) {
                        build(&pdus[k], t, s);
                        len += encode(&pdus[k], out + len, size - len);
                        k++;
                }
        *count = k;
        return len;
}

#define SAMPLES ((_TSF_PDU_TYPE_MAX - 1) * _SHAPE_COUNT)

/* Feeds the stream in chunks of `chunk` bytes (0: varying sizes). */
static void read_stream(const uint8_t *stream, size_t len, const struct tsf_pdu *pdus, size_t count,
                        size_t chunk) {
        struct tsf_proto_reader *r = malloc(sizeof(*r));
        size_t off = 0, got = 0, step = 0;

        assert_non_null(r);
        tsf_proto_reader_init(r);
        while (off < len) {
                size_t n = chunk ? chunk : 1 + (step++ * 7919) % 3000;
                uint8_t *piece;

                n = MIN(n, len - off);
                /* A heap piece of exactly n bytes: no read past it. */
                piece = malloc(n);
                assert_non_null(piece);
                memcpy(piece, stream + off, n);
                for (size_t p = 0; p < n;) {
                        struct tsf_pdu pdu;
                        size_t used;
                        int k = tsf_proto_reader_feed(r, piece + p, n - p, &used, &pdu);

                        assert_true(used <= n - p);
                        p += used;
                        if (k == -EAGAIN) {
                                assert_int_equal(p, n);
                                break;
                        }
                        assert_int_equal(k, 0);
                        assert_true(got < count);
                        assert_true(tsf_pdu_equal(&pdu, &pdus[got]));
                        got++;
                }
                free(piece);
                off += n;
        }
        assert_int_equal(got, count);
        /* Nothing left half-read. */
        {
                struct tsf_pdu pdu;
                size_t used;

                assert_int_equal(tsf_proto_reader_feed(r, NULL, 0, &used, &pdu), -EAGAIN);
                assert_int_equal(r->have, 0);
        }
        tsf_proto_reader_wipe(r);
        free(r);
}

static void test_reader_stream(void **state) {
        size_t size = SAMPLES * TSF_PROTO_FRAME_MAX, count, len;
        uint8_t *stream = malloc(size);
        struct tsf_pdu *pdus = calloc(SAMPLES, sizeof(*pdus));

        assert_non_null(stream);
        assert_non_null(pdus);
        len = build_stream(stream, size, pdus, &count);
        assert_int_equal(count, SAMPLES);

        read_stream(stream, len, pdus, count, 1);
        read_stream(stream, len, pdus, count, 0);
        read_stream(stream, len, pdus, count, len);
        free(stream);
        free(pdus);
}

static void test_reader_refuses(void **state) {
        struct tsf_proto_reader *r = malloc(sizeof(*r));
        uint8_t frame[64];
        struct tsf_pdu pdu;
        size_t used;

        assert_non_null(r);

        /* Not our protocol: refused at the first byte, and for good. */
        tsf_proto_reader_init(r);
        assert_int_equal(tsf_proto_reader_feed(r, (const uint8_t *)"\x03\x00\x01\xa0", 4, &used, &pdu),
                         -EBADMSG);
        assert_int_equal(used, 1);
        assert_int_equal(tsf_proto_reader_feed(r, (const uint8_t *)"TSRP", 4, &used, &pdu), -EBADMSG);
        assert_int_equal(used, 0);

        /* A length over the cap: refused with the header, no body taken. */
        tsf_proto_reader_init(r);
        memcpy(frame, "TSRP\x01\x07\x00\x00\x00\x00\x40\x01", 12); /* terminal data, 16385 */
        memset(frame + 12, 'x', 20);
        assert_int_equal(tsf_proto_reader_feed(r, frame, 32, &used, &pdu), -EMSGSIZE);
        assert_int_equal(used, 12);
        tsf_proto_reader_init(r);
        memcpy(frame, "TSRP\x01\x07\x00\x00\x7f\xff\xff\xff", 12);
        assert_int_equal(tsf_proto_reader_feed(r, frame, 12, &used, &pdu), -EMSGSIZE);
        assert_int_equal(used, 9);

        /* Another version: its own error, at the version byte. */
        tsf_proto_reader_init(r);
        memcpy(frame, "TSRP\x02\x07\x00\x00\x00\x00\x00\x01x", 13);
        assert_int_equal(tsf_proto_reader_feed(r, frame, 13, &used, &pdu), -EPROTONOSUPPORT);
        assert_int_equal(used, 5);

        /* A malformed body after a good frame: the good one first. */
        tsf_proto_reader_init(r);
        memcpy(frame, "TSRP\x01\x0a\x00\x00\x00\x00\x00\x00", 12);                      /* logoff */
        memcpy(frame + 12, "TSRP\x01\x08\x00\x00\x00\x00\x00\x04\x00\x00\x00\x50", 16); /* 0 rows */
        assert_int_equal(tsf_proto_reader_feed(r, frame, 28, &used, &pdu), 0);
        assert_int_equal(used, 12);
        assert_int_equal(pdu.type, TSF_PDU_LOGOFF);
        assert_int_equal(tsf_proto_reader_feed(r, frame + 12, 16, &used, &pdu), -EBADMSG);
        assert_int_equal(used, 16);
        assert_int_equal(tsf_proto_reader_feed(r, frame, 12, &used, &pdu), -EBADMSG);
        free(r);
}

static void test_reader_wipes(void **state) {
        struct tsf_proto_reader *r = malloc(sizeof(*r));
        uint8_t frame[TSF_PROTO_FRAME_MAX];
        struct tsf_pdu p, got;
        size_t n, used;

        assert_non_null(r);
        memset(r->buf, 0, sizeof(r->buf));
        tsf_proto_reader_init(r);
        build(&p, TSF_PDU_CLIENT_INFO, SHAPE_TYPICAL);
        n = encode(&p, frame, sizeof(frame));
        assert_int_equal(tsf_proto_reader_feed(r, frame, n, &used, &got), 0);
        assert_string_equal(got.client_info.password, p.client_info.password);
        assert_non_null(memmem(r->buf, sizeof(r->buf), "battery", 7));
        tsf_pdu_wipe(&got);
        /* The next call forgets the delivered frame. */
        assert_int_equal(tsf_proto_reader_feed(r, NULL, 0, &used, &got), -EAGAIN);
        assert_null(memmem(r->buf, sizeof(r->buf), "battery", 7));
        free(r);
}

/* ---- state machine ----------------------------------------------------------------------------- */

static void test_allowed(void **state) {
        const enum tsf_proto_role S = TSF_PROTO_SERVER, C = TSF_PROTO_CLIENT;

        /* The server speaks first, and only its license request. */
        assert_true(tsf_pdu_allowed(S, TSF_PHASE_LICENSE_REQUEST, TSF_PDU_LICENSE_REQUEST));
        assert_false(tsf_pdu_allowed(C, TSF_PHASE_LICENSE_REQUEST, TSF_PDU_CLIENT_LICENSE_INFO));
        assert_false(tsf_pdu_allowed(C, TSF_PHASE_LICENSE_REQUEST, TSF_PDU_KEEPALIVE));
        assert_true(tsf_pdu_allowed(C, TSF_PHASE_LICENSE_REQUEST, TSF_PDU_DISCONNECT));

        assert_true(tsf_pdu_allowed(C, TSF_PHASE_LICENSE_INFO, TSF_PDU_CLIENT_LICENSE_INFO));
        assert_false(tsf_pdu_allowed(C, TSF_PHASE_LICENSE_INFO, TSF_PDU_CLIENT_INFO));
        assert_true(tsf_pdu_allowed(S, TSF_PHASE_LICENSE_RESPONSE, TSF_PDU_LICENSE_RESPONSE));
        assert_false(tsf_pdu_allowed(C, TSF_PHASE_LICENSE_RESPONSE, TSF_PDU_LICENSE_RESPONSE));

        /* No credentials before the license exchange is over. */
        assert_false(tsf_pdu_allowed(C, TSF_PHASE_LICENSE_RESPONSE, TSF_PDU_CLIENT_INFO));
        assert_true(tsf_pdu_allowed(C, TSF_PHASE_LOGON, TSF_PDU_CLIENT_INFO));
        assert_true(tsf_pdu_allowed(S, TSF_PHASE_LOGON, TSF_PDU_LOGON_RESULT));
        assert_true(tsf_pdu_allowed(S, TSF_PHASE_LOGON, TSF_PDU_REDIRECT));
        assert_false(tsf_pdu_allowed(S, TSF_PHASE_SESSION, TSF_PDU_REDIRECT));

        /* No terminal data before logon, in either direction. */
        for (enum tsf_proto_phase ph = 0; ph < TSF_PHASE_SESSION; ph++) {
                assert_false(tsf_pdu_allowed(S, ph, TSF_PDU_TERMINAL_DATA));
                assert_false(tsf_pdu_allowed(C, ph, TSF_PDU_TERMINAL_DATA));
                assert_false(tsf_pdu_allowed(C, ph, TSF_PDU_LOGOFF));
                assert_true(tsf_pdu_allowed(S, ph, TSF_PDU_ERROR));
                assert_true(tsf_pdu_allowed(C, ph, TSF_PDU_DISCONNECT));
        }
        assert_true(tsf_pdu_allowed(S, TSF_PHASE_SESSION, TSF_PDU_TERMINAL_DATA));
        assert_true(tsf_pdu_allowed(C, TSF_PHASE_SESSION, TSF_PDU_TERMINAL_DATA));
        assert_true(tsf_pdu_allowed(C, TSF_PHASE_SESSION, TSF_PDU_WINDOW_SIZE));
        assert_false(tsf_pdu_allowed(S, TSF_PHASE_SESSION, TSF_PDU_WINDOW_SIZE));
        assert_true(tsf_pdu_allowed(S, TSF_PHASE_SESSION, TSF_PDU_LOGOFF));
        assert_true(tsf_pdu_allowed(C, TSF_PHASE_SESSION, TSF_PDU_KEEPALIVE));

        /* Out of range: never. */
        assert_false(tsf_pdu_allowed(S, _TSF_PHASE_MAX, TSF_PDU_ERROR));
        assert_false(tsf_pdu_allowed(S, TSF_PHASE_SESSION, _TSF_PDU_TYPE_MAX));
        assert_false(tsf_pdu_allowed((enum tsf_proto_role)2, TSF_PHASE_SESSION, TSF_PDU_ERROR));
}

/* ---- X.224 Connection Confirm ------------------------------------------------------------------ */

static void assert_cc_equal(const struct tsf_cc *a, const struct tsf_cc *b) {
        assert_int_equal(a->dst_ref, b->dst_ref);
        assert_int_equal(a->src_ref, b->src_ref);
        assert_int_equal(a->neg, b->neg);
        assert_int_equal(a->neg_flags, b->neg_flags);
        assert_int_equal(a->selected_protocol, b->selected_protocol);
        assert_int_equal(a->failure_code, b->failure_code);
}

static void check_cc(const char *hex, const struct tsf_cc *expect) {
        uint8_t b[32], enc[32];
        size_t n = unhex(hex, b, sizeof(b));
        struct tsf_cc cc;

        assert_int_equal(tsf_cc_decode(b, n, &cc), (ssize_t)n);
        assert_cc_equal(&cc, expect);
        assert_int_equal(tsf_cc_encode(&cc, enc, sizeof(enc)), (ssize_t)n);
        assert_memory_equal(enc, b, n);
        assert_int_equal(tsf_cc_encode(&cc, enc, n - 1), -ENOBUFS);
        for (size_t k = 0; k < n; k++) {
                uint8_t *copy = malloc(k ? k : 1);

                memcpy(copy, b, k);
                assert_int_equal(tsf_cc_decode(copy, k, &cc), -EAGAIN);
                free(copy);
        }
        /* Every single-byte change: refused, or another valid confirm of
         * the same size that encodes back to the bytes. */
        for (size_t i = 0; i < n; i++) {
                uint8_t orig = b[i];

                for (unsigned v = 0; v < 256; v++) {
                        ssize_t r;

                        if (v == orig)
                                continue;
                        b[i] = (uint8_t)v;
                        r = tsf_cc_decode(b, n, &cc);
                        if (r < 0) {
                                /* Only a length that grew can ask for more. */
                                assert_true(r == -EBADMSG || (r == -EAGAIN && (i == 2 || i == 3)));
                                continue;
                        }
                        assert_int_equal(r, (ssize_t)n);
                        assert_true(i >= 6);
                        assert_int_equal(tsf_cc_encode(&cc, enc, sizeof(enc)), r);
                        assert_memory_equal(enc, b, n);
                }
                b[i] = orig;
        }
}

static void test_cc(void **state) {
        /* MS-RDPBCGR 4.1.2 Server X.224 Connection Confirm PDU. */
        check_cc("03 00 00 13 0e d0 00 00 12 34 00 02 1f 08 00 02 00 00 00",
                 &(struct tsf_cc){.src_ref = 0x1234,
                                  .neg = TSF_CC_NEG_RESPONSE,
                                  .neg_flags = 0x1f,
                                  .selected_protocol = TSF_PROTOCOL_HYBRID});
        check_cc("03 00 00 13 0e d0 00 00 12 34 00 03 00 08 00 05 00 00 00",
                 &(struct tsf_cc){.src_ref = 0x1234,
                                  .neg = TSF_CC_NEG_FAILURE,
                                  .failure_code = TSF_NEG_FAILURE_HYBRID_REQUIRED_BY_SERVER});
        check_cc("03 00 00 0b 06 d0 00 07 12 34 00",
                 &(struct tsf_cc){.dst_ref = 7, .src_ref = 0x1234, .neg = TSF_CC_NEG_NONE});

        {
                uint8_t b[32];
                size_t n;
                struct tsf_cc cc;

                /* A Connection Request is not a confirm; flags on a failure;
                 * a negotiation structure of another length. */
                n = unhex("03 00 00 13 0e e0 00 00 00 00 00 01 00 08 00 01 00 00 00", b, sizeof(b));
                assert_int_equal(tsf_cc_decode(b, n, &cc), -EBADMSG);
                n = unhex("03 00 00 13 0e d0 00 00 12 34 00 03 01 08 00 01 00 00 00", b, sizeof(b));
                assert_int_equal(tsf_cc_decode(b, n, &cc), -EBADMSG);
                n = unhex("03 00 00 13 0e d0 00 00 12 34 00 02 00 09 00 01 00 00 00", b, sizeof(b));
                assert_int_equal(tsf_cc_decode(b, n, &cc), -EBADMSG);
                n = unhex("03 00 00 0c 07 d0 00 00 12 34 00 00", b, sizeof(b));
                assert_int_equal(tsf_cc_decode(b, n, &cc), -EBADMSG);
                /* Bytes after the TPKT belong to TLS. */
                n = unhex("03 00 00 0b 06 d0 00 00 12 34 00 16 03 01", b, sizeof(b));
                assert_int_equal(tsf_cc_decode(b, n, &cc), 11);

                assert_int_equal(tsf_cc_encode(&(struct tsf_cc){.neg = TSF_CC_NEG_FAILURE, .neg_flags = 1},
                                               b, sizeof(b)),
                                 -EINVAL);
                assert_int_equal(
                        tsf_cc_encode(&(struct tsf_cc){.neg = TSF_CC_NEG_NONE, .selected_protocol = 1}, b,
                                      sizeof(b)),
                        -EINVAL);
                assert_int_equal(
                        tsf_cc_encode(&(struct tsf_cc){.neg = TSF_CC_NEG_RESPONSE, .failure_code = 1}, b,
                                      sizeof(b)),
                        -EINVAL);
                assert_int_equal(tsf_cc_encode(&(struct tsf_cc){.neg = _TSF_CC_NEG_MAX}, b, sizeof(b)),
                                 -EINVAL);
        }
}

/* The first exchange end to end: what tsclient sends, what tshost parses
 * and answers, what tsclient parses back. */
static void test_connection_sequence(void **state) {
        uint8_t b[TSF_FIRST_PDU_MAX];
        struct tsf_cr cr, parsed;
        struct tsf_cc cc, back;
        char token[TSF_PROTO_ROUTING_TOKEN_MAX + 2];
        ssize_t n;

        assert_int_equal(tsf_proto_cr_build("alice", NULL, &cr), 0);
        n = tsf_cr_encode(&cr, b, sizeof(b));
        assert_true(n > 0);
        assert_int_equal(tsf_cr_parse(b, (size_t)n, &parsed), TSF_CR_COMPLETE);
        assert_int_equal(parsed.cookie_kind, TSF_COOKIE_MSTSHASH);
        assert_string_equal(parsed.cookie, "Cookie: mstshash=alice");
        assert_true(parsed.has_neg_req);
        assert_int_equal(parsed.requested_protocols, TSF_PROTOCOL_SSL);
        assert_true(tsf_proto_cc_for(&parsed, &cc));
        assert_int_equal(cc.neg, TSF_CC_NEG_RESPONSE);
        assert_int_equal(cc.selected_protocol, TSF_PROTOCOL_SSL);
        n = tsf_cc_encode(&cc, b, sizeof(b));
        assert_int_equal(n, TSF_CC_SIZE_MAX);
        assert_int_equal(tsf_cc_decode(b, (size_t)n, &back), n);
        assert_cc_equal(&back, &cc);

        /* After a redirect: the routing token, decoded by the gateway. */
        assert_int_equal(tsf_proto_cr_build("alice", "3640205228.15629.0000", &cr), 0);
        n = tsf_cr_encode(&cr, b, sizeof(b));
        assert_int_equal(tsf_cr_parse(b, (size_t)n, &parsed), TSF_CR_COMPLETE);
        assert_int_equal(parsed.cookie_kind, TSF_COOKIE_ROUTING_TOKEN);
        assert_true(parsed.routing_decoded);
        assert_int_equal(parsed.routing_port, 3389);

        /* The longest routing token a REDIRECT can carry fits. */
        fill(token, TSF_PROTO_ROUTING_TOKEN_MAX, '9');
        assert_int_equal(tsf_proto_cr_build(NULL, token, &cr), 0);
        fill(token, TSF_PROTO_ROUTING_TOKEN_MAX + 1, '9');
        assert_int_equal(tsf_proto_cr_build(NULL, token, &cr), -EINVAL);
        assert_int_equal(tsf_proto_cr_build("bad\r\nuser", NULL, &cr), -EINVAL);
        assert_int_equal(tsf_proto_cr_build("", NULL, &cr), -EINVAL);
        /* No user: no cookie at all (steered by address affinity). */
        assert_int_equal(tsf_proto_cr_build(NULL, NULL, &cr), 0);
        assert_int_equal(cr.cookie_kind, TSF_COOKIE_NONE);

        /* A client that does not offer TLS: refused with a reason. */
        memset(&parsed, 0, sizeof(parsed));
        parsed.has_neg_req = true;
        parsed.requested_protocols = TSF_PROTOCOL_HYBRID;
        assert_false(tsf_proto_cc_for(&parsed, &cc));
        assert_int_equal(cc.neg, TSF_CC_NEG_FAILURE);
        assert_int_equal(cc.failure_code, TSF_NEG_FAILURE_SSL_REQUIRED_BY_SERVER);
        parsed.has_neg_req = false;
        parsed.requested_protocols = 0;
        assert_false(tsf_proto_cc_for(&parsed, &cc));
}

static void test_names(void **state) {
        for (enum tsf_pdu_type t = 1; t < _TSF_PDU_TYPE_MAX; t++)
                assert_non_null(tsf_pdu_type_to_string(t));
        assert_string_equal(tsf_pdu_type_to_string(TSF_PDU_CLIENT_LICENSE_INFO), "client-license-info");
        for (enum tsf_license_status s = 1; s < _TSF_LICENSE_STATUS_MAX; s++)
                assert_non_null(tsf_license_status_to_string(s));
        assert_string_equal(tsf_license_status_to_string(TSF_LICENSE_NEW), "new-license");
        assert_null(tsf_license_status_to_string(0));
        assert_null(tsf_license_status_to_string(_TSF_LICENSE_STATUS_MAX));
        for (enum tsf_logon_status s = 1; s < _TSF_LOGON_STATUS_MAX; s++)
                assert_non_null(tsf_logon_status_to_string(s));
        assert_null(tsf_logon_status_to_string(_TSF_LOGON_STATUS_MAX));
        assert_string_equal(tsf_proto_reason_to_string(TSF_REASON_TOKEN_OTHER_DEVICE), "token-other-device");
        assert_string_equal(tsf_proto_reason_to_string(TSF_REASON_NONE), "none");
        assert_null(tsf_proto_reason_to_string(0xBEEF));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_exact_bytes),
                cmocka_unit_test(test_round_trip_every_type),
                cmocka_unit_test(test_header_corruption),
                cmocka_unit_test(test_versions_types_flags),
                cmocka_unit_test(test_length_caps),
                cmocka_unit_test(test_text_rules),
                cmocka_unit_test(test_field_rules),
                cmocka_unit_test(test_wipe),
                cmocka_unit_test(test_reader_stream),
                cmocka_unit_test(test_reader_refuses),
                cmocka_unit_test(test_reader_wipes),
                cmocka_unit_test(test_allowed),
                cmocka_unit_test(test_cc),
                cmocka_unit_test(test_connection_sequence),
                cmocka_unit_test(test_names),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
