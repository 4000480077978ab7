/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The project's RDP-style protocol: frames, PDU bodies, a streaming reader,
 * and the X.224 Connection Confirm. docs/protocol.md is the contract; this
 * file is its only implementation, shared by tshost and tsclient.
 *
 * Both peers read from a TLS stream a stranger may have opened (the license
 * exchange comes before any authentication), so every decoder is strict:
 * one remaining-bytes check before every read, every field bounded, no
 * trailing bytes, one encoding per message. The encoders refuse what the
 * decoders would refuse, so a bug on one side shows up where it is made.
 */

#include <errno.h>
#include <string.h>

#include "tsfarm/licdiscovery.h"
#include "tsfarm/macro.h"
#include "tsfarm/tsproto.h"

/* What the PDU structs must hold; the caps are the contract. */
_Static_assert(sizeof(TSF_PROTO_MAGIC) - 1 == TSF_PROTO_MAGIC_SIZE, "magic size");
_Static_assert(TSF_PROTO_TARGET_MAX == LICDISC_ENDPOINT_MAX, "target uses the endpoint grammar");
_Static_assert(TSF_TPKT_HEADER_SIZE + TSF_X224_CR_FIXED_SIZE + sizeof("Cookie: msts=") - 1 +
                               TSF_PROTO_ROUTING_TOKEN_MAX + 2 + TSF_RDP_NEG_REQ_SIZE ==
                       TSF_CR_TPKT_MAX,
               "the longest routing token fills a Connection Request exactly");

static void put_be32(uint8_t *p, uint32_t v) {
        put_be16(p, (uint16_t)(v >> 16));
        put_be16(p + 2, (uint16_t)v);
}

static uint32_t get_be32(const uint8_t *p) {
        return (uint32_t)get_be16(p) << 16 | get_be16(p + 2);
}

/* ---- field classes ----------------------------------------------------------
 *
 * Every variable field is a 16-bit big-endian length and that many bytes.
 * What the bytes may be depends on the field: */

enum field_class {
        FIELD_IDENT,   /* [A-Za-z0-9._-]: farm id, product version */
        FIELD_TEXT,    /* UTF-8, no control characters (C0, DEL, C1): safe to print */
        FIELD_SECRET,  /* UTF-8 without NUL: a password is whatever the user typed */
        FIELD_TOKEN,   /* license token text: "tsl" then [A-Za-z0-9._-] */
        FIELD_ROUTING, /* printable ASCII without space: a "Cookie: msts=" value */
        FIELD_TARGET,  /* host:port (licdisc_endpoint_valid) */
        FIELD_TERM,    /* terminfo name: [A-Za-z0-9._+-] */
};

static bool is_ident_char(uint8_t c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
               c == '_' || c == '-';
}

/* One strictly valid UTF-8 sequence (no overlong forms, no surrogates,
 * nothing above U+10FFFF): its length, or 0. */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp) {
        size_t need;
        uint32_t min, c;

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

static bool utf8_valid(const uint8_t *s, size_t n, bool controls_allowed) {
        for (size_t i = 0; i < n;) {
                uint32_t cp;
                size_t k = utf8_next(s + i, n - i, &cp);

                if (k == 0 || cp == 0)
                        return false;
                /* C1 too: a terminal in UTF-8 mode may take U+009B as CSI. */
                if (!controls_allowed && (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)))
                        return false;
                i += k;
        }
        return true;
}

/* `s` is NUL-terminated here (the caller copied it). */
static bool field_valid(enum field_class class, const uint8_t *s, size_t n) {
        switch (class) {
        case FIELD_IDENT:
                for (size_t i = 0; i < n; i++)
                        if (!is_ident_char(s[i]))
                                return false;
                return true;
        case FIELD_TEXT:
                return utf8_valid(s, n, false);
        case FIELD_SECRET:
                return utf8_valid(s, n, true);
        case FIELD_TOKEN:
                /* Empty means "no token"; the caller's bounds decide
                 * whether that is allowed. The format's own version and
                 * base64url rules are lib/lictoken's to judge. */
                if (n == 0)
                        return true;
                if (n < 3 || memcmp(s, "tsl", 3) != 0)
                        return false;
                for (size_t i = 3; i < n; i++)
                        if (!is_ident_char(s[i]))
                                return false;
                return true;
        case FIELD_ROUTING:
                for (size_t i = 0; i < n; i++)
                        if (s[i] < 0x21 || s[i] > 0x7E)
                                return false;
                return true;
        case FIELD_TARGET:
                return licdisc_endpoint_valid((const char *)s);
        case FIELD_TERM:
                for (size_t i = 0; i < n; i++)
                        if (!is_ident_char(s[i]) && s[i] != '+')
                                return false;
                return true;
        }
        return false;
}

/* ---- cursors ------------------------------------------------------------------ */

/* Reading: one remaining-bytes counter, checked before every read. Any
 * failure is -EBADMSG: the header already bounded the body's size. */
struct rd {
        const uint8_t *p;
        size_t left;
};

static bool rd_bytes(struct rd *r, void *out, size_t n) {
        if (r->left < n)
                return false;
        memcpy(out, r->p, n);
        r->p += n;
        r->left -= n;
        return true;
}

static bool rd_u8(struct rd *r, uint8_t *v) {
        return rd_bytes(r, v, 1);
}

static bool rd_u16(struct rd *r, uint16_t *v) {
        uint8_t b[2];

        if (!rd_bytes(r, b, 2))
                return false;
        *v = get_be16(b);
        return true;
}

static bool rd_u32(struct rd *r, uint32_t *v) {
        uint8_t b[4];

        if (!rd_bytes(r, b, 4))
                return false;
        *v = get_be32(b);
        return true;
}

static bool rd_u64(struct rd *r, uint64_t *v) {
        uint32_t hi, lo;

        if (!rd_u32(r, &hi) || !rd_u32(r, &lo))
                return false;
        *v = (uint64_t)hi << 32 | lo;
        return true;
}

/* A length-prefixed binary field of min..max bytes into out[max]. */
static bool rd_blob(struct rd *r, size_t min, size_t max, uint8_t *out, size_t *out_len) {
        uint16_t n;

        if (!rd_u16(r, &n) || n < min || n > max || !rd_bytes(r, out, n))
                return false;
        *out_len = n;
        return true;
}

/* A length-prefixed text field of min..max bytes into out[max + 1],
 * NUL-terminated, of the given class. */
static bool rd_text(struct rd *r, size_t min, size_t max, enum field_class class, char *out) {
        size_t n;

        if (!rd_blob(r, min, max, (uint8_t *)out, &n))
                return false;
        out[n] = '\0';
        /* A NUL inside would cut the string short for every C caller. */
        if (memchr(out, '\0', n))
                return false;
        return field_valid(class, (const uint8_t *)out, n);
}

/* Writing: the encoder first checks every field (-EINVAL), then writes;
 * overflow is noted and reported once at the end (-ENOBUFS). */
struct wr {
        uint8_t *p;
        size_t left;
        bool overflow;
};

static void wr_bytes(struct wr *w, const void *data, size_t n) {
        if (w->overflow || w->left < n) {
                w->overflow = true;
                return;
        }
        if (n > 0)
                memcpy(w->p, data, n);
        w->p += n;
        w->left -= n;
}

static void wr_u8(struct wr *w, uint8_t v) {
        wr_bytes(w, &v, 1);
}

static void wr_u16(struct wr *w, uint16_t v) {
        uint8_t b[2];

        put_be16(b, v);
        wr_bytes(w, b, 2);
}

static void wr_u32(struct wr *w, uint32_t v) {
        uint8_t b[4];

        put_be32(b, v);
        wr_bytes(w, b, 4);
}

static void wr_u64(struct wr *w, uint64_t v) {
        wr_u32(w, (uint32_t)(v >> 32));
        wr_u32(w, (uint32_t)v);
}

static void wr_blob(struct wr *w, const void *data, size_t n) {
        wr_u16(w, (uint16_t)n);
        wr_bytes(w, data, n);
}

/* Whether a text field the caller filled is one the decoder accepts. The
 * array is `size` bytes and must hold a NUL. */
static bool text_ok(const char *s, size_t size, size_t min, size_t max, enum field_class class) {
        size_t n = strnlen(s, size);

        return n < size && n >= min && n <= max && field_valid(class, (const uint8_t *)s, n);
}
#define TEXT_OK(field, min, max, class) text_ok(field, sizeof(field), min, max, class)

static void wr_text(struct wr *w, const char *s) {
        wr_blob(w, s, strlen(s));
}

static bool cookie_len_ok(size_t n) {
        return n == 0 || (n >= TSF_PROTO_COOKIE_MIN && n <= TSF_PROTO_COOKIE_MAX);
}

static bool hwid_len_ok(size_t n) {
        return n >= TSF_PROTO_HWID_MIN && n <= TSF_PROTO_HWID_MAX;
}

static bool dimension_ok(uint16_t v) {
        return v >= 1 && v <= TSF_PROTO_DIMENSION_MAX;
}

/* ---- body sizes ---------------------------------------------------------------- */

#define STR(n) (2 + (n)) /* a length-prefixed field of n bytes */

#define LICENSE_REQUEST_MIN (1 + TSF_PROTO_NONCE_SIZE + STR(1) + STR(1))
#define LICENSE_REQUEST_MAX \
        (1 + TSF_PROTO_NONCE_SIZE + STR(TSF_PROTO_FARM_ID_MAX) + STR(TSF_PROTO_PRODUCT_VERSION_MAX))
#define CLIENT_LICENSE_INFO_MIN (TSF_PROTO_NONCE_SIZE + STR(TSF_PROTO_HWID_MIN) + STR(1) + STR(0))
#define CLIENT_LICENSE_INFO_MAX                                                            \
        (TSF_PROTO_NONCE_SIZE + STR(TSF_PROTO_HWID_MAX) + STR(TSF_PROTO_DEVICE_NAME_MAX) + \
         STR(TSF_PROTO_TOKEN_MAX))
#define LICENSE_RESPONSE_MIN (1 + 2 + STR(0) + STR(0))
#define LICENSE_RESPONSE_MAX (1 + 2 + STR(TSF_PROTO_REASON_MAX) + STR(TSF_PROTO_TOKEN_MAX))
#define CLIENT_INFO_MIN (2 + 2 + STR(1) + STR(0) + STR(1) + STR(TSF_PROTO_HWID_MIN) + STR(0) + STR(0))
#define CLIENT_INFO_MAX                                                                                   \
        (2 + 2 + STR(TSF_PROTO_USER_MAX) + STR(TSF_PROTO_PASSWORD_MAX) + STR(TSF_PROTO_DEVICE_NAME_MAX) + \
         STR(TSF_PROTO_HWID_MAX) + STR(TSF_PROTO_COOKIE_MAX) + STR(TSF_PROTO_TERM_MAX))
#define LOGON_RESULT_MIN (1 + 1 + 4 + 2 + STR(0) + STR(0))
#define LOGON_RESULT_MAX (1 + 1 + 4 + 2 + STR(TSF_PROTO_REASON_MAX) + STR(TSF_PROTO_COOKIE_MAX))
#define REDIRECT_MIN (2 + 4 + STR(1) + STR(3) + STR(0) + STR(0))
#define REDIRECT_MAX                                                                                      \
        (2 + 4 + STR(TSF_PROTO_ROUTING_TOKEN_MAX) + STR(TSF_PROTO_TARGET_MAX) + STR(TSF_PROTO_USER_MAX) + \
         STR(TSF_PROTO_REASON_MAX))
#define REASON_MIN (2 + STR(0))
#define REASON_MAX (2 + STR(TSF_PROTO_REASON_MAX))

static const struct {
        uint32_t min, max;
        uint16_t flags; /* header flags the type may carry */
} body_bounds[_TSF_PDU_TYPE_MAX] = {
        [TSF_PDU_LICENSE_REQUEST] = {LICENSE_REQUEST_MIN, LICENSE_REQUEST_MAX, 0},
        [TSF_PDU_CLIENT_LICENSE_INFO] = {CLIENT_LICENSE_INFO_MIN, CLIENT_LICENSE_INFO_MAX, 0},
        [TSF_PDU_LICENSE_RESPONSE] = {LICENSE_RESPONSE_MIN, LICENSE_RESPONSE_MAX, 0},
        [TSF_PDU_CLIENT_INFO] = {CLIENT_INFO_MIN, CLIENT_INFO_MAX, 0},
        [TSF_PDU_LOGON_RESULT] = {LOGON_RESULT_MIN, LOGON_RESULT_MAX, 0},
        [TSF_PDU_REDIRECT] = {REDIRECT_MIN, REDIRECT_MAX, 0},
        [TSF_PDU_TERMINAL_DATA] = {1, TSF_PROTO_DATA_MAX, 0},
        [TSF_PDU_WINDOW_SIZE] = {4, 4, 0},
        [TSF_PDU_DISCONNECT] = {REASON_MIN, REASON_MAX, 0},
        [TSF_PDU_LOGOFF] = {0, 0, 0},
        [TSF_PDU_KEEPALIVE] = {8, 8, TSF_PROTO_FLAG_REPLY},
        [TSF_PDU_ERROR] = {REASON_MIN, REASON_MAX, 0},
};

_Static_assert(CLIENT_LICENSE_INFO_MAX <= TSF_PROTO_BODY_MAX && CLIENT_INFO_MAX <= TSF_PROTO_BODY_MAX &&
                       LICENSE_RESPONSE_MAX <= TSF_PROTO_BODY_MAX && REDIRECT_MAX <= TSF_PROTO_BODY_MAX,
               "terminal data is the largest body");
/* Every length prefix is 16 bits. */
_Static_assert(TSF_PROTO_PASSWORD_MAX <= UINT16_MAX && TSF_PROTO_TOKEN_MAX <= UINT16_MAX, "u16 prefixes");

static bool type_known(enum tsf_pdu_type t) {
        return (unsigned)t > 0 && (unsigned)t < _TSF_PDU_TYPE_MAX;
}

size_t tsf_pdu_body_min(enum tsf_pdu_type type) {
        return type_known(type) ? body_bounds[type].min : 0;
}

size_t tsf_pdu_body_max(enum tsf_pdu_type type) {
        return type_known(type) ? body_bounds[type].max : 0;
}

/* ---- header ---------------------------------------------------------------------
 *
 *   0        4     5     6        8                12
 *   +--------+-----+-----+--------+----------------+---------------------+
 *   | "TSRP" | ver | type| flags  | body length    | body (per type)     |
 *   +--------+-----+-----+--------+----------------+---------------------+
 *                          BE16     BE32
 *
 * Checked field by field as the bytes arrive: a stream that is not ours
 * (an RDP client's MCS Connect Initial starts 03 00) is refused at its
 * first byte, and a length above the type's cap before the body comes.
 */
int tsf_proto_header_decode(const uint8_t *buf, size_t len, struct tsf_proto_header *ret) {
        enum tsf_pdu_type type;
        uint32_t partial;

        for (size_t i = 0; i < TSF_PROTO_MAGIC_SIZE; i++) {
                if (len <= i)
                        return -EAGAIN;
                if (buf[i] != (uint8_t)TSF_PROTO_MAGIC[i])
                        return -EBADMSG;
        }

        if (len <= 4)
                return -EAGAIN;
        if (buf[4] == 0)
                return -EBADMSG;
        if (buf[4] != TSF_PROTO_VERSION)
                return -EPROTONOSUPPORT;

        if (len <= 5)
                return -EAGAIN;
        type = buf[5];
        if (!type_known(type))
                return -EBADMSG;

        /* Flags and length: the bytes so far, the rest taken as zero, are
         * already the smallest value the field can have. */
        partial = 0;
        for (size_t i = 6; i < 8; i++) {
                if (len <= i)
                        return -EAGAIN;
                partial = partial << 8 | buf[i];
                if ((partial << (8 * (7 - i))) & ~(uint32_t)body_bounds[type].flags)
                        return -EBADMSG;
        }
        partial = 0;
        for (size_t i = 8; i < 12; i++) {
                if (len <= i)
                        return -EAGAIN;
                partial = partial << 8 | buf[i];
                if ((uint64_t)partial << (8 * (11 - i)) > body_bounds[type].max)
                        return -EMSGSIZE;
        }
        if (partial < body_bounds[type].min)
                return -EBADMSG;

        if (ret) {
                ret->version = buf[4];
                ret->type = type;
                ret->flags = get_be16(buf + 6);
                ret->length = partial;
        }
        return 0;
}

/* ---- bodies ------------------------------------------------------------------------
 *
 * Layouts (integers big-endian; str/bin = BE16 length + bytes):
 *
 *   LICENSE_REQUEST      u8 max_version | nonce[32] | str farm_id | str product_version
 *   CLIENT_LICENSE_INFO  nonce[32] | bin hardware_id | str device_name | str token
 *   LICENSE_RESPONSE     u8 status | u16 reason | str reason_text | str token
 *   CLIENT_INFO          u16 rows | u16 cols | str user | str password | str device_name
 *                        | bin hardware_id | bin reconnect_cookie | str term
 *   LOGON_RESULT         u8 status | u8 reattached | u32 session_id | u16 reason
 *                        | str reason_text | bin reconnect_cookie
 *   REDIRECT             u16 reason | u32 session_id | str routing_token | str target
 *                        | str user | str reason_text
 *   TERMINAL_DATA        the bytes (the header's length is theirs)
 *   WINDOW_SIZE          u16 rows | u16 cols
 *   DISCONNECT, ERROR    u16 reason | str reason_text
 *   LOGOFF               nothing
 *   KEEPALIVE            u64 echo (header flag REPLY on a reply)
 */

static bool decode_license_request(struct rd *r, struct tsf_pdu_license_request *b) {
        return rd_u8(r, &b->max_version) && b->max_version >= 1 && rd_bytes(r, b->nonce, sizeof(b->nonce)) &&
               rd_text(r, 1, TSF_PROTO_FARM_ID_MAX, FIELD_IDENT, b->farm_id) &&
               rd_text(r, 1, TSF_PROTO_PRODUCT_VERSION_MAX, FIELD_IDENT, b->product_version);
}

static bool decode_client_license_info(struct rd *r, struct tsf_pdu_client_license_info *b) {
        return rd_bytes(r, b->nonce, sizeof(b->nonce)) &&
               rd_blob(r, TSF_PROTO_HWID_MIN, TSF_PROTO_HWID_MAX, b->hardware_id, &b->hardware_id_len) &&
               rd_text(r, 1, TSF_PROTO_DEVICE_NAME_MAX, FIELD_TEXT, b->device_name) &&
               rd_text(r, 0, TSF_PROTO_TOKEN_MAX, FIELD_TOKEN, b->token);
}

static bool license_response_consistent(const struct tsf_pdu_license_response *b) {
        bool carries_token = b->status == TSF_LICENSE_NEW || b->status == TSF_LICENSE_UPGRADE;

        return (unsigned)b->status >= TSF_LICENSE_NEW && (unsigned)b->status < _TSF_LICENSE_STATUS_MAX &&
               carries_token == (b->token[0] != '\0');
}

static bool decode_license_response(struct rd *r, struct tsf_pdu_license_response *b) {
        uint8_t status;

        if (!rd_u8(r, &status) || !rd_u16(r, &b->reason) ||
            !rd_text(r, 0, TSF_PROTO_REASON_MAX, FIELD_TEXT, b->reason_text) ||
            !rd_text(r, 0, TSF_PROTO_TOKEN_MAX, FIELD_TOKEN, b->token))
                return false;
        b->status = status;
        return license_response_consistent(b);
}

static bool decode_client_info(struct rd *r, struct tsf_pdu_client_info *b) {
        return rd_u16(r, &b->rows) && dimension_ok(b->rows) && rd_u16(r, &b->cols) &&
               dimension_ok(b->cols) && rd_text(r, 1, TSF_PROTO_USER_MAX, FIELD_TEXT, b->user) &&
               rd_text(r, 0, TSF_PROTO_PASSWORD_MAX, FIELD_SECRET, b->password) &&
               rd_text(r, 1, TSF_PROTO_DEVICE_NAME_MAX, FIELD_TEXT, b->device_name) &&
               rd_blob(r, TSF_PROTO_HWID_MIN, TSF_PROTO_HWID_MAX, b->hardware_id, &b->hardware_id_len) &&
               rd_blob(r, 0, TSF_PROTO_COOKIE_MAX, b->reconnect_cookie, &b->reconnect_cookie_len) &&
               cookie_len_ok(b->reconnect_cookie_len) &&
               rd_text(r, 0, TSF_PROTO_TERM_MAX, FIELD_TERM, b->term);
}

/* Session id, reattached and the reconnect cookie belong to a logon that
 * succeeded, and a successful logon has a session. */
static bool logon_result_consistent(const struct tsf_pdu_logon_result *b) {
        bool ok = b->status == TSF_LOGON_OK;

        return (unsigned)b->status >= TSF_LOGON_OK && (unsigned)b->status < _TSF_LOGON_STATUS_MAX &&
               (b->session_id != 0) == ok && (!b->reattached || ok) &&
               cookie_len_ok(b->reconnect_cookie_len) && (b->reconnect_cookie_len == 0 || ok);
}

static bool decode_logon_result(struct rd *r, struct tsf_pdu_logon_result *b) {
        uint8_t status, reattached;

        if (!rd_u8(r, &status) || !rd_u8(r, &reattached) || reattached > 1 || !rd_u32(r, &b->session_id) ||
            !rd_u16(r, &b->reason) || !rd_text(r, 0, TSF_PROTO_REASON_MAX, FIELD_TEXT, b->reason_text) ||
            !rd_blob(r, 0, TSF_PROTO_COOKIE_MAX, b->reconnect_cookie, &b->reconnect_cookie_len))
                return false;
        b->status = status;
        b->reattached = reattached;
        return logon_result_consistent(b);
}

static bool decode_redirect(struct rd *r, struct tsf_pdu_redirect *b) {
        return rd_u16(r, &b->reason) && rd_u32(r, &b->session_id) &&
               rd_text(r, 1, TSF_PROTO_ROUTING_TOKEN_MAX, FIELD_ROUTING, b->routing_token) &&
               rd_text(r, 3, TSF_PROTO_TARGET_MAX, FIELD_TARGET, b->target) &&
               rd_text(r, 0, TSF_PROTO_USER_MAX, FIELD_TEXT, b->user) &&
               rd_text(r, 0, TSF_PROTO_REASON_MAX, FIELD_TEXT, b->reason_text);
}

static bool decode_reason(struct rd *r, struct tsf_pdu_reason *b) {
        return rd_u16(r, &b->reason) && rd_text(r, 0, TSF_PROTO_REASON_MAX, FIELD_TEXT, b->reason_text);
}

int tsf_pdu_body_decode(enum tsf_pdu_type type, uint16_t flags, const uint8_t *body, size_t len,
                        struct tsf_pdu *ret) {
        struct rd r = {body, len};
        bool ok = false;

        tsf_pdu_init(ret, type);
        if (!type_known(type) || (flags & ~body_bounds[type].flags))
                return -EBADMSG;
        if (len > body_bounds[type].max)
                return -EMSGSIZE;
        if (len < body_bounds[type].min)
                return -EBADMSG;

        switch (type) {
        case TSF_PDU_LICENSE_REQUEST:
                ok = decode_license_request(&r, &ret->license_request);
                break;
        case TSF_PDU_CLIENT_LICENSE_INFO:
                ok = decode_client_license_info(&r, &ret->client_license_info);
                break;
        case TSF_PDU_LICENSE_RESPONSE:
                ok = decode_license_response(&r, &ret->license_response);
                break;
        case TSF_PDU_CLIENT_INFO:
                ok = decode_client_info(&r, &ret->client_info);
                break;
        case TSF_PDU_LOGON_RESULT:
                ok = decode_logon_result(&r, &ret->logon_result);
                break;
        case TSF_PDU_REDIRECT:
                ok = decode_redirect(&r, &ret->redirect);
                break;
        case TSF_PDU_TERMINAL_DATA:
                /* No copy: the pty writer takes the bytes from the frame. */
                ret->terminal_data.data = body;
                ret->terminal_data.len = len;
                r.left = 0;
                ok = true;
                break;
        case TSF_PDU_WINDOW_SIZE:
                ok = rd_u16(&r, &ret->window_size.rows) && dimension_ok(ret->window_size.rows) &&
                     rd_u16(&r, &ret->window_size.cols) && dimension_ok(ret->window_size.cols);
                break;
        case TSF_PDU_DISCONNECT:
                ok = decode_reason(&r, &ret->disconnect);
                break;
        case TSF_PDU_LOGOFF:
                ok = true;
                break;
        case TSF_PDU_KEEPALIVE:
                ret->keepalive.reply = flags & TSF_PROTO_FLAG_REPLY;
                ok = rd_u64(&r, &ret->keepalive.echo);
                break;
        case TSF_PDU_ERROR:
                ok = decode_reason(&r, &ret->error);
                break;
        default:
                break;
        }
        /* Nothing may hide after the last field. */
        if (!ok || r.left != 0) {
                tsf_pdu_wipe(ret);
                tsf_pdu_init(ret, type);
                return -EBADMSG;
        }
        return 0;
}

ssize_t tsf_pdu_decode(const uint8_t *buf, size_t len, struct tsf_pdu *ret) {
        struct tsf_proto_header h;
        int r;

        r = tsf_proto_header_decode(buf, len, &h);
        if (r < 0)
                return r;
        if (len - TSF_PROTO_HEADER_SIZE < h.length)
                return -EAGAIN;
        r = tsf_pdu_body_decode(h.type, h.flags, buf + TSF_PROTO_HEADER_SIZE, h.length, ret);
        if (r < 0)
                return r;
        ret->version = h.version;
        return (ssize_t)(TSF_PROTO_HEADER_SIZE + h.length);
}

/* ---- encoding ------------------------------------------------------------------------ */

/* Whether the body is one the decoder accepts; the encoder writes nothing
 * else. */
static bool body_valid(const struct tsf_pdu *pdu) {
        switch (pdu->type) {
        case TSF_PDU_LICENSE_REQUEST: {
                const struct tsf_pdu_license_request *b = &pdu->license_request;

                return b->max_version >= 1 && TEXT_OK(b->farm_id, 1, TSF_PROTO_FARM_ID_MAX, FIELD_IDENT) &&
                       TEXT_OK(b->product_version, 1, TSF_PROTO_PRODUCT_VERSION_MAX, FIELD_IDENT);
        }
        case TSF_PDU_CLIENT_LICENSE_INFO: {
                const struct tsf_pdu_client_license_info *b = &pdu->client_license_info;

                return hwid_len_ok(b->hardware_id_len) &&
                       TEXT_OK(b->device_name, 1, TSF_PROTO_DEVICE_NAME_MAX, FIELD_TEXT) &&
                       TEXT_OK(b->token, 0, TSF_PROTO_TOKEN_MAX, FIELD_TOKEN);
        }
        case TSF_PDU_LICENSE_RESPONSE: {
                const struct tsf_pdu_license_response *b = &pdu->license_response;

                return TEXT_OK(b->reason_text, 0, TSF_PROTO_REASON_MAX, FIELD_TEXT) &&
                       TEXT_OK(b->token, 0, TSF_PROTO_TOKEN_MAX, FIELD_TOKEN) &&
                       license_response_consistent(b);
        }
        case TSF_PDU_CLIENT_INFO: {
                const struct tsf_pdu_client_info *b = &pdu->client_info;

                return dimension_ok(b->rows) && dimension_ok(b->cols) &&
                       TEXT_OK(b->user, 1, TSF_PROTO_USER_MAX, FIELD_TEXT) &&
                       TEXT_OK(b->password, 0, TSF_PROTO_PASSWORD_MAX, FIELD_SECRET) &&
                       TEXT_OK(b->device_name, 1, TSF_PROTO_DEVICE_NAME_MAX, FIELD_TEXT) &&
                       hwid_len_ok(b->hardware_id_len) && cookie_len_ok(b->reconnect_cookie_len) &&
                       TEXT_OK(b->term, 0, TSF_PROTO_TERM_MAX, FIELD_TERM);
        }
        case TSF_PDU_LOGON_RESULT:
                return TEXT_OK(pdu->logon_result.reason_text, 0, TSF_PROTO_REASON_MAX, FIELD_TEXT) &&
                       logon_result_consistent(&pdu->logon_result);
        case TSF_PDU_REDIRECT: {
                const struct tsf_pdu_redirect *b = &pdu->redirect;

                return TEXT_OK(b->routing_token, 1, TSF_PROTO_ROUTING_TOKEN_MAX, FIELD_ROUTING) &&
                       TEXT_OK(b->target, 3, TSF_PROTO_TARGET_MAX, FIELD_TARGET) &&
                       TEXT_OK(b->user, 0, TSF_PROTO_USER_MAX, FIELD_TEXT) &&
                       TEXT_OK(b->reason_text, 0, TSF_PROTO_REASON_MAX, FIELD_TEXT);
        }
        case TSF_PDU_TERMINAL_DATA:
                return pdu->terminal_data.len >= 1 && pdu->terminal_data.len <= TSF_PROTO_DATA_MAX &&
                       pdu->terminal_data.data;
        case TSF_PDU_WINDOW_SIZE:
                return dimension_ok(pdu->window_size.rows) && dimension_ok(pdu->window_size.cols);
        case TSF_PDU_DISCONNECT:
                return TEXT_OK(pdu->disconnect.reason_text, 0, TSF_PROTO_REASON_MAX, FIELD_TEXT);
        case TSF_PDU_ERROR:
                return TEXT_OK(pdu->error.reason_text, 0, TSF_PROTO_REASON_MAX, FIELD_TEXT);
        case TSF_PDU_LOGOFF:
        case TSF_PDU_KEEPALIVE:
                return true;
        default:
                return false;
        }
}

static void encode_body(const struct tsf_pdu *pdu, struct wr *w) {
        switch (pdu->type) {
        case TSF_PDU_LICENSE_REQUEST: {
                const struct tsf_pdu_license_request *b = &pdu->license_request;

                wr_u8(w, b->max_version);
                wr_bytes(w, b->nonce, sizeof(b->nonce));
                wr_text(w, b->farm_id);
                wr_text(w, b->product_version);
                break;
        }
        case TSF_PDU_CLIENT_LICENSE_INFO: {
                const struct tsf_pdu_client_license_info *b = &pdu->client_license_info;

                wr_bytes(w, b->nonce, sizeof(b->nonce));
                wr_blob(w, b->hardware_id, b->hardware_id_len);
                wr_text(w, b->device_name);
                wr_text(w, b->token);
                break;
        }
        case TSF_PDU_LICENSE_RESPONSE: {
                const struct tsf_pdu_license_response *b = &pdu->license_response;

                wr_u8(w, (uint8_t)b->status);
                wr_u16(w, b->reason);
                wr_text(w, b->reason_text);
                wr_text(w, b->token);
                break;
        }
        case TSF_PDU_CLIENT_INFO: {
                const struct tsf_pdu_client_info *b = &pdu->client_info;

                wr_u16(w, b->rows);
                wr_u16(w, b->cols);
                wr_text(w, b->user);
                wr_text(w, b->password);
                wr_text(w, b->device_name);
                wr_blob(w, b->hardware_id, b->hardware_id_len);
                wr_blob(w, b->reconnect_cookie, b->reconnect_cookie_len);
                wr_text(w, b->term);
                break;
        }
        case TSF_PDU_LOGON_RESULT: {
                const struct tsf_pdu_logon_result *b = &pdu->logon_result;

                wr_u8(w, (uint8_t)b->status);
                wr_u8(w, b->reattached);
                wr_u32(w, b->session_id);
                wr_u16(w, b->reason);
                wr_text(w, b->reason_text);
                wr_blob(w, b->reconnect_cookie, b->reconnect_cookie_len);
                break;
        }
        case TSF_PDU_REDIRECT: {
                const struct tsf_pdu_redirect *b = &pdu->redirect;

                wr_u16(w, b->reason);
                wr_u32(w, b->session_id);
                wr_text(w, b->routing_token);
                wr_text(w, b->target);
                wr_text(w, b->user);
                wr_text(w, b->reason_text);
                break;
        }
        case TSF_PDU_TERMINAL_DATA:
                wr_bytes(w, pdu->terminal_data.data, pdu->terminal_data.len);
                break;
        case TSF_PDU_WINDOW_SIZE:
                wr_u16(w, pdu->window_size.rows);
                wr_u16(w, pdu->window_size.cols);
                break;
        case TSF_PDU_DISCONNECT:
                wr_u16(w, pdu->disconnect.reason);
                wr_text(w, pdu->disconnect.reason_text);
                break;
        case TSF_PDU_ERROR:
                wr_u16(w, pdu->error.reason);
                wr_text(w, pdu->error.reason_text);
                break;
        case TSF_PDU_KEEPALIVE:
                wr_u64(w, pdu->keepalive.echo);
                break;
        case TSF_PDU_LOGOFF:
        default:
                break;
        }
}

ssize_t tsf_pdu_encode(const struct tsf_pdu *pdu, uint8_t *buf, size_t size) {
        struct wr w;
        size_t body_len;
        uint16_t flags = 0;

        if (!pdu || !type_known(pdu->type) || pdu->version != TSF_PROTO_VERSION || !body_valid(pdu))
                return -EINVAL;
        if (!buf || size < TSF_PROTO_HEADER_SIZE)
                return -ENOBUFS;

        w = (struct wr){buf + TSF_PROTO_HEADER_SIZE, size - TSF_PROTO_HEADER_SIZE, false};
        encode_body(pdu, &w);
        if (w.overflow)
                return -ENOBUFS;
        body_len = (size_t)(w.p - buf) - TSF_PROTO_HEADER_SIZE;
        /* The bounds are derived from the same caps body_valid() checks;
         * this only catches the two disagreeing. */
        if (body_len < body_bounds[pdu->type].min || body_len > body_bounds[pdu->type].max)
                return -EINVAL;

        if (pdu->type == TSF_PDU_KEEPALIVE && pdu->keepalive.reply)
                flags |= TSF_PROTO_FLAG_REPLY;
        memcpy(buf, TSF_PROTO_MAGIC, TSF_PROTO_MAGIC_SIZE);
        buf[4] = pdu->version;
        buf[5] = (uint8_t)pdu->type;
        put_be16(buf + 6, flags);
        put_be32(buf + 8, (uint32_t)body_len);
        return (ssize_t)(TSF_PROTO_HEADER_SIZE + body_len);
}

void tsf_pdu_init(struct tsf_pdu *pdu, enum tsf_pdu_type type) {
        memset(pdu, 0, sizeof(*pdu));
        pdu->type = type;
        pdu->version = TSF_PROTO_VERSION;
}

void tsf_pdu_wipe(struct tsf_pdu *pdu) {
        explicit_bzero(pdu, sizeof(*pdu));
}

/* ---- equality ---------------------------------------------------------------------- */

#define STREQ(a, b) (strcmp((a), (b)) == 0)
#define BLOBEQ(a, alen, b, blen) ((alen) == (blen) && (alen) <= sizeof(a) && memcmp((a), (b), (alen)) == 0)

bool tsf_pdu_equal(const struct tsf_pdu *a, const struct tsf_pdu *b) {
        if (a->type != b->type || a->version != b->version)
                return false;

        switch (a->type) {
        case TSF_PDU_LICENSE_REQUEST: {
                const struct tsf_pdu_license_request *x = &a->license_request, *y = &b->license_request;

                return x->max_version == y->max_version &&
                       memcmp(x->nonce, y->nonce, sizeof(x->nonce)) == 0 && STREQ(x->farm_id, y->farm_id) &&
                       STREQ(x->product_version, y->product_version);
        }
        case TSF_PDU_CLIENT_LICENSE_INFO: {
                const struct tsf_pdu_client_license_info *x = &a->client_license_info,
                                                         *y = &b->client_license_info;

                return memcmp(x->nonce, y->nonce, sizeof(x->nonce)) == 0 &&
                       BLOBEQ(x->hardware_id, x->hardware_id_len, y->hardware_id, y->hardware_id_len) &&
                       STREQ(x->device_name, y->device_name) && STREQ(x->token, y->token);
        }
        case TSF_PDU_LICENSE_RESPONSE: {
                const struct tsf_pdu_license_response *x = &a->license_response, *y = &b->license_response;

                return x->status == y->status && x->reason == y->reason &&
                       STREQ(x->reason_text, y->reason_text) && STREQ(x->token, y->token);
        }
        case TSF_PDU_CLIENT_INFO: {
                const struct tsf_pdu_client_info *x = &a->client_info, *y = &b->client_info;

                return x->rows == y->rows && x->cols == y->cols && STREQ(x->user, y->user) &&
                       STREQ(x->password, y->password) && STREQ(x->device_name, y->device_name) &&
                       BLOBEQ(x->hardware_id, x->hardware_id_len, y->hardware_id, y->hardware_id_len) &&
                       BLOBEQ(x->reconnect_cookie, x->reconnect_cookie_len, y->reconnect_cookie,
                              y->reconnect_cookie_len) &&
                       STREQ(x->term, y->term);
        }
        case TSF_PDU_LOGON_RESULT: {
                const struct tsf_pdu_logon_result *x = &a->logon_result, *y = &b->logon_result;

                return x->status == y->status && x->reattached == y->reattached &&
                       x->session_id == y->session_id && x->reason == y->reason &&
                       STREQ(x->reason_text, y->reason_text) &&
                       BLOBEQ(x->reconnect_cookie, x->reconnect_cookie_len, y->reconnect_cookie,
                              y->reconnect_cookie_len);
        }
        case TSF_PDU_REDIRECT: {
                const struct tsf_pdu_redirect *x = &a->redirect, *y = &b->redirect;

                return x->reason == y->reason && x->session_id == y->session_id &&
                       STREQ(x->routing_token, y->routing_token) && STREQ(x->target, y->target) &&
                       STREQ(x->user, y->user) && STREQ(x->reason_text, y->reason_text);
        }
        case TSF_PDU_TERMINAL_DATA:
                return a->terminal_data.len == b->terminal_data.len &&
                       (a->terminal_data.len == 0 ||
                        memcmp(a->terminal_data.data, b->terminal_data.data, a->terminal_data.len) == 0);
        case TSF_PDU_WINDOW_SIZE:
                return a->window_size.rows == b->window_size.rows &&
                       a->window_size.cols == b->window_size.cols;
        case TSF_PDU_DISCONNECT:
                return a->disconnect.reason == b->disconnect.reason &&
                       STREQ(a->disconnect.reason_text, b->disconnect.reason_text);
        case TSF_PDU_ERROR:
                return a->error.reason == b->error.reason &&
                       STREQ(a->error.reason_text, b->error.reason_text);
        case TSF_PDU_KEEPALIVE:
                return a->keepalive.reply == b->keepalive.reply && a->keepalive.echo == b->keepalive.echo;
        case TSF_PDU_LOGOFF:
                return true;
        default:
                return false;
        }
}

/* ---- streaming reader ---------------------------------------------------------------- */

void tsf_proto_reader_init(struct tsf_proto_reader *r) {
        r->have = 0;
        r->need = 0;
        r->delivered = false;
        r->error = 0;
}

void tsf_proto_reader_wipe(struct tsf_proto_reader *r) {
        explicit_bzero(r->buf, sizeof(r->buf));
        tsf_proto_reader_init(r);
}

static int reader_fail(struct tsf_proto_reader *r, int error) {
        /* Sticky, and the partial frame is of no use to anyone. */
        r->error = error;
        explicit_bzero(r->buf, r->have);
        r->have = r->need = 0;
        return error;
}

int tsf_proto_reader_feed(struct tsf_proto_reader *r, const uint8_t *data, size_t len, size_t *consumed,
                          struct tsf_pdu *ret) {
        size_t taken = 0;

        *consumed = 0;
        if (r->error)
                return r->error;
        if (r->delivered) {
                /* The caller is done with the last frame (its terminal data
                 * pointed here); a password must not outlive its use. */
                explicit_bzero(r->buf, r->have);
                r->have = r->need = 0;
                r->delivered = false;
        }

        for (;;) {
                size_t want, n;

                if (r->need == 0) {
                        /* The header is taken one byte at a time, so a
                         * wrong byte is refused before the next is read
                         * and a length above the cap before any body. */
                        if (r->have > 0) {
                                struct tsf_proto_header h;
                                int k = tsf_proto_header_decode(r->buf, r->have, &h);

                                if (k == 0)
                                        r->need = TSF_PROTO_HEADER_SIZE + h.length;
                                else if (k != -EAGAIN) {
                                        *consumed = taken;
                                        return reader_fail(r, k);
                                }
                        }
                        want = r->need == 0 ? 1 : r->need - r->have;
                } else
                        want = r->need - r->have;

                if (r->need != 0 && want == 0) {
                        ssize_t k = tsf_pdu_decode(r->buf, r->have, ret);

                        *consumed = taken;
                        if (k < 0)
                                return reader_fail(r, (int)k);
                        r->delivered = true;
                        return 0;
                }
                if (taken == len) {
                        *consumed = taken;
                        return -EAGAIN;
                }
                n = MIN(want, len - taken);
                memcpy(r->buf + r->have, data + taken, n);
                r->have += n;
                taken += n;
        }
}

/* ---- state machine ---------------------------------------------------------------------- */

bool tsf_pdu_allowed(enum tsf_proto_role sender, enum tsf_proto_phase phase, enum tsf_pdu_type type) {
        bool server = sender == TSF_PROTO_SERVER;

        if ((unsigned)phase >= _TSF_PHASE_MAX || !type_known(type) ||
            (sender != TSF_PROTO_SERVER && sender != TSF_PROTO_CLIENT))
                return false;

        switch (type) {
        case TSF_PDU_ERROR:
        case TSF_PDU_DISCONNECT:
                /* Either side may give up at any time, saying why. */
                return true;
        case TSF_PDU_KEEPALIVE:
                /* Not before the server has spoken: its license request
                 * is what says this is our protocol at all. */
                return phase != TSF_PHASE_LICENSE_REQUEST;
        case TSF_PDU_LICENSE_REQUEST:
                return server && phase == TSF_PHASE_LICENSE_REQUEST;
        case TSF_PDU_CLIENT_LICENSE_INFO:
                return !server && phase == TSF_PHASE_LICENSE_INFO;
        case TSF_PDU_LICENSE_RESPONSE:
                return server && phase == TSF_PHASE_LICENSE_RESPONSE;
        case TSF_PDU_CLIENT_INFO:
                return !server && phase == TSF_PHASE_LOGON;
        case TSF_PDU_LOGON_RESULT:
        case TSF_PDU_REDIRECT:
                return server && phase == TSF_PHASE_LOGON;
        case TSF_PDU_WINDOW_SIZE:
                return !server && phase == TSF_PHASE_SESSION;
        case TSF_PDU_TERMINAL_DATA:
        case TSF_PDU_LOGOFF:
                return phase == TSF_PHASE_SESSION;
        default:
                return false;
        }
}

/* ---- X.224 Connection Confirm --------------------------------------------------------------
 *
 *   0     1     2     3     4     5     6     7     8     9     10
 *   +-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+
 *   | 03  | 00  | length BE | LI  | D0  | DST-REF   | SRC-REF   |class|
 *   +-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+-----+
 *   then, when length is 19, one of (little-endian, MS-RDPBCGR 2.2.1.2):
 *   | 02 | flags | 08 00 | selectedProtocol (4) |   RDP_NEG_RSP
 *   | 03 | 00    | 08 00 | failureCode (4)      |   RDP_NEG_FAILURE
 */
ssize_t tsf_cc_decode(const uint8_t *buf, size_t len, struct tsf_cc *ret) {
        uint16_t length;

        memset(ret, 0, sizeof(*ret));
        /* Each byte is judged as soon as it is there. */
        if (len < 1)
                return -EAGAIN;
        if (buf[0] != TSF_TPKT_VERSION)
                return -EBADMSG;
        if (len < 2)
                return -EAGAIN;
        if (buf[1] != 0)
                return -EBADMSG;
        if (len < 3)
                return -EAGAIN;
        if (buf[2] != 0)
                return -EBADMSG;
        if (len < 4)
                return -EAGAIN;
        length = get_be16(buf + 2);
        if (length != TSF_CC_SIZE_MIN && length != TSF_CC_SIZE_MAX)
                return -EBADMSG;
        if (len < 5)
                return -EAGAIN;
        if (buf[4] != length - TSF_TPKT_HEADER_SIZE - 1)
                return -EBADMSG;
        if (len < 6)
                return -EAGAIN;
        if (buf[5] != TSF_X224_TPDU_CC)
                return -EBADMSG;
        if (len < 11)
                return -EAGAIN;
        if (buf[10] != 0)
                return -EBADMSG;
        ret->dst_ref = get_be16(buf + 6);
        ret->src_ref = get_be16(buf + 8);
        if (length == TSF_CC_SIZE_MIN) {
                ret->neg = TSF_CC_NEG_NONE;
                return TSF_CC_SIZE_MIN;
        }

        if (len < 12)
                return -EAGAIN;
        if (buf[11] != TSF_RDP_NEG_RSP_TYPE && buf[11] != TSF_RDP_NEG_FAILURE_TYPE)
                return -EBADMSG;
        if (len < 13)
                return -EAGAIN;
        /* RDP_NEG_FAILURE has no flags (MS-RDPBCGR: 0); RDP_NEG_RSP's are
         * the server's to choose, and the client ignores what it does not
         * know. */
        if (buf[11] == TSF_RDP_NEG_FAILURE_TYPE && buf[12] != 0)
                return -EBADMSG;
        if (len < 15)
                return -EAGAIN;
        if (get_le16(buf + 13) != 8)
                return -EBADMSG;
        if (len < TSF_CC_SIZE_MAX)
                return -EAGAIN;
        if (buf[11] == TSF_RDP_NEG_RSP_TYPE) {
                ret->neg = TSF_CC_NEG_RESPONSE;
                ret->neg_flags = buf[12];
                ret->selected_protocol = get_le32(buf + 15);
        } else {
                ret->neg = TSF_CC_NEG_FAILURE;
                ret->failure_code = get_le32(buf + 15);
        }
        return TSF_CC_SIZE_MAX;
}

ssize_t tsf_cc_encode(const struct tsf_cc *cc, uint8_t *buf, size_t size) {
        size_t length;

        switch (cc->neg) {
        case TSF_CC_NEG_NONE:
                if (cc->neg_flags || cc->selected_protocol || cc->failure_code)
                        return -EINVAL;
                length = TSF_CC_SIZE_MIN;
                break;
        case TSF_CC_NEG_RESPONSE:
                if (cc->failure_code)
                        return -EINVAL;
                length = TSF_CC_SIZE_MAX;
                break;
        case TSF_CC_NEG_FAILURE:
                if (cc->neg_flags || cc->selected_protocol)
                        return -EINVAL;
                length = TSF_CC_SIZE_MAX;
                break;
        default:
                return -EINVAL;
        }
        if (!buf || size < length)
                return -ENOBUFS;

        buf[0] = TSF_TPKT_VERSION;
        buf[1] = 0;
        put_be16(buf + 2, (uint16_t)length);
        buf[4] = (uint8_t)(length - TSF_TPKT_HEADER_SIZE - 1);
        buf[5] = TSF_X224_TPDU_CC;
        put_be16(buf + 6, cc->dst_ref);
        put_be16(buf + 8, cc->src_ref);
        buf[10] = 0;
        if (cc->neg == TSF_CC_NEG_NONE)
                return (ssize_t)length;
        buf[11] = cc->neg == TSF_CC_NEG_RESPONSE ? TSF_RDP_NEG_RSP_TYPE : TSF_RDP_NEG_FAILURE_TYPE;
        buf[12] = cc->neg_flags;
        put_le16(buf + 13, 8);
        put_le32(buf + 15, cc->neg == TSF_CC_NEG_RESPONSE ? cc->selected_protocol : cc->failure_code);
        return (ssize_t)length;
}

bool tsf_proto_cc_for(const struct tsf_cr *cr, struct tsf_cc *ret) {
        memset(ret, 0, sizeof(*ret));
        /* X.224: the confirm's DST-REF is the request's SRC-REF. 0x1234 is
         * what Windows sends as its own reference; clients ignore it. */
        ret->dst_ref = cr->src_ref;
        ret->src_ref = 0x1234;
        /* TLS only: no CredSSP (the password goes in CLIENT_INFO inside
         * TLS) and never Standard RDP Security. */
        if (cr->has_neg_req && (cr->requested_protocols & TSF_PROTOCOL_SSL)) {
                ret->neg = TSF_CC_NEG_RESPONSE;
                ret->selected_protocol = TSF_PROTOCOL_SSL;
                return true;
        }
        ret->neg = TSF_CC_NEG_FAILURE;
        ret->failure_code = TSF_NEG_FAILURE_SSL_REQUIRED_BY_SERVER;
        return false;
}

int tsf_proto_cr_build(const char *user, const char *routing_token, struct tsf_cr *ret) {
        uint8_t scratch[TSF_CR_TPKT_MAX];
        const char *prefix = NULL, *value = NULL;
        size_t plen, vlen;

        memset(ret, 0, sizeof(*ret));
        ret->has_neg_req = true;
        ret->requested_protocols = TSF_PROTOCOL_SSL;

        if (routing_token) {
                prefix = "Cookie: msts=";
                value = routing_token;
                ret->cookie_kind = TSF_COOKIE_ROUTING_TOKEN;
        } else if (user) {
                prefix = "Cookie: mstshash=";
                value = user;
                ret->cookie_kind = TSF_COOKIE_MSTSHASH;
        }
        if (prefix) {
                plen = strlen(prefix);
                vlen = strnlen(value, TSF_CR_COOKIE_MAX + 1);
                if (vlen == 0 || plen + vlen > TSF_CR_COOKIE_MAX)
                        return -EINVAL;
                memcpy(ret->cookie, prefix, plen);
                memcpy(ret->cookie + plen, value, vlen);
                ret->cookie_len = plen + vlen;
                ret->cookie[ret->cookie_len] = '\0';
        }
        /* The x224 encoder knows what a valid line is (no control
         * characters, the kind the prefix says). */
        if (tsf_cr_encode(ret, scratch, sizeof(scratch)) < 0) {
                memset(ret, 0, sizeof(*ret));
                return -EINVAL;
        }
        return 0;
}

/* ---- names ------------------------------------------------------------------------------ */

static const char *const pdu_type_table[_TSF_PDU_TYPE_MAX] = {
        [TSF_PDU_LICENSE_REQUEST] = "license-request",
        [TSF_PDU_CLIENT_LICENSE_INFO] = "client-license-info",
        [TSF_PDU_LICENSE_RESPONSE] = "license-response",
        [TSF_PDU_CLIENT_INFO] = "client-info",
        [TSF_PDU_LOGON_RESULT] = "logon-result",
        [TSF_PDU_REDIRECT] = "redirect",
        [TSF_PDU_TERMINAL_DATA] = "terminal-data",
        [TSF_PDU_WINDOW_SIZE] = "window-size",
        [TSF_PDU_DISCONNECT] = "disconnect",
        [TSF_PDU_LOGOFF] = "logoff",
        [TSF_PDU_KEEPALIVE] = "keepalive",
        [TSF_PDU_ERROR] = "error",
};

static const char *const license_status_table[_TSF_LICENSE_STATUS_MAX] = {
        [TSF_LICENSE_NEW] = "new-license",
        [TSF_LICENSE_UPGRADE] = "upgrade",
        [TSF_LICENSE_VALID] = "valid",
        [TSF_LICENSE_ERROR] = "error",
};

static const char *const logon_status_table[_TSF_LOGON_STATUS_MAX] = {
        [TSF_LOGON_OK] = "ok",
        [TSF_LOGON_WRONG_PASSWORD] = "wrong-password",
        [TSF_LOGON_NO_LICENSE] = "no-license",
        [TSF_LOGON_DENIED] = "denied",
        [TSF_LOGON_ERROR] = "error",
};

static const struct {
        uint16_t code;
        const char *name;
} reason_table[] = {
        {TSF_REASON_NONE, "none"},
        {TSF_REASON_GRACE_PERIOD, "grace-period"},
        {TSF_REASON_NO_INVENTORY, "no-inventory"},
        {TSF_REASON_TOKEN_EXPIRED, "token-expired"},
        {TSF_REASON_TOKEN_OTHER_DEVICE, "token-other-device"},
        {TSF_REASON_TOKEN_INVALID, "token-invalid"},
        {TSF_REASON_TOKEN_VERSION, "token-version"},
        {TSF_REASON_TOKEN_REVOKED, "token-revoked"},
        {TSF_REASON_NO_LICENSE_SERVER, "no-license-server"},
        {TSF_REASON_RENEWED, "renewed"},
        {TSF_REASON_LICENSE_SERVER_ERROR, "license-server-error"},
        {TSF_REASON_BAD_CREDENTIALS, "bad-credentials"},
        {TSF_REASON_ACCOUNT_DENIED, "account-denied"},
        {TSF_REASON_SESSION_LIMIT, "session-limit"},
        {TSF_REASON_AUTH_ERROR, "auth-error"},
        {TSF_REASON_BAD_RECONNECT_COOKIE, "bad-reconnect-cookie"},
        {TSF_REASON_SESSION_ELSEWHERE, "session-elsewhere"},
        {TSF_REASON_PLACEMENT, "placement"},
        {TSF_REASON_DRAINING, "draining"},
        {TSF_REASON_USER_REQUEST, "user-request"},
        {TSF_REASON_IDLE_TIMEOUT, "idle-timeout"},
        {TSF_REASON_REPLACED, "replaced"},
        {TSF_REASON_ADMIN, "admin"},
        {TSF_REASON_SHUTDOWN, "shutdown"},
        {TSF_REASON_LOGON_TIMEOUT, "logon-timeout"},
        {TSF_REASON_TOO_MANY_ATTEMPTS, "too-many-attempts"},
        {TSF_REASON_PEER_SILENT, "peer-silent"},
        {TSF_REASON_MALFORMED, "malformed"},
        {TSF_REASON_UNSUPPORTED_VERSION, "unsupported-version"},
        {TSF_REASON_UNEXPECTED_PDU, "unexpected-pdu"},
        {TSF_REASON_TOO_LARGE, "too-large"},
        {TSF_REASON_TIMEOUT, "timeout"},
        {TSF_REASON_INTERNAL, "internal"},
        {TSF_REASON_NONCE_MISMATCH, "nonce-mismatch"},
};

const char *tsf_pdu_type_to_string(enum tsf_pdu_type t) {
        return type_known(t) ? pdu_type_table[t] : NULL;
}

const char *tsf_license_status_to_string(enum tsf_license_status s) {
        return (unsigned)s < ELEMENTSOF(license_status_table) ? license_status_table[s] : NULL;
}

const char *tsf_logon_status_to_string(enum tsf_logon_status s) {
        return (unsigned)s < ELEMENTSOF(logon_status_table) ? logon_status_table[s] : NULL;
}

const char *tsf_proto_reason_to_string(uint16_t reason) {
        for (size_t i = 0; i < ELEMENTSOF(reason_table); i++)
                if (reason_table[i].code == reason)
                        return reason_table[i].name;
        return NULL;
}
