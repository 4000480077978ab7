/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The project's RDP-style protocol (docs/protocol.md is the contract): the
 * X.224 Connection Confirm that answers lib/x224's Connection Request, and
 * the PDUs that run inside TLS after it, between tsclient and tshost.
 *
 * Every PDU is one frame: a 12-byte header (magic "TSRP", version, type,
 * flags, body length) and a fixed-layout body whose size is capped per
 * type. Decoding is strict: one encoding per message, so a decoded PDU
 * encodes back to the very same bytes.
 *
 * No I/O, no allocation, no logging. Functions return negative errno:
 *   -EAGAIN           not enough bytes yet (nothing wrong so far)
 *   -EBADMSG          malformed (wrong magic, unknown type or flag, bad
 *                     field, bytes left over, ...)
 *   -EPROTONOSUPPORT  a frame of another protocol version
 *   -EMSGSIZE         a body length above the type's cap (refused from
 *                     the header, before any body byte is buffered)
 *   -ENOBUFS          the output buffer is too small
 *   -EINVAL           an encoder was given a field the decoder would refuse
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tsfarm/x224.h"

/* ---- wire constants ------------------------------------------------------- */

#define TSF_PROTO_MAGIC "TSRP"
#define TSF_PROTO_MAGIC_SIZE 4
#define TSF_PROTO_VERSION 1 /* the only version this library speaks */
#define TSF_PROTO_HEADER_SIZE 12

/* Header flags. Only KEEPALIVE defines one; any other bit is malformed. */
#define TSF_PROTO_FLAG_REPLY 0x0001u

/* Field caps (bytes, not counting a NUL). */
#define TSF_PROTO_NONCE_SIZE 32
#define TSF_PROTO_FARM_ID_MAX 63
#define TSF_PROTO_PRODUCT_VERSION_MAX 32 /* TSF_LIC_PRODUCT_VERSION_MAX */
#define TSF_PROTO_HWID_MIN 16            /* the license store's hardware id bounds */
#define TSF_PROTO_HWID_MAX 64
#define TSF_PROTO_DEVICE_NAME_MAX 255 /* the license store's device name cap */
#define TSF_PROTO_TOKEN_MAX 1024      /* a tsl1 token is at most 354; room for later formats */
#define TSF_PROTO_USER_MAX 256        /* TSF_USERKEY_INPUT_MAX */
#define TSF_PROTO_PASSWORD_MAX 512
#define TSF_PROTO_TERM_MAX 63
#define TSF_PROTO_DIMENSION_MAX 4096 /* rows and columns: 1..4096 */
#define TSF_PROTO_COOKIE_MIN 16      /* reconnect cookie: none, or 16..64 bytes */
#define TSF_PROTO_COOKIE_MAX 64
#define TSF_PROTO_REASON_MAX 255
/* A routing token must fit into "Cookie: msts=<token>" of a Connection
 * Request that also carries RDP_NEG_REQ: the TPDU's room (TSF_CR_COOKIE_MAX
 * for the line alone) minus the 8-byte RDP_NEG_REQ and the 13-byte prefix. */
#define TSF_PROTO_ROUTING_TOKEN_MAX (TSF_CR_COOKIE_MAX - TSF_RDP_NEG_REQ_SIZE - 13) /* 225 */
#define TSF_PROTO_TARGET_MAX 255 /* host:port, as licdisc_endpoint_valid() */
#define TSF_PROTO_DATA_MAX 16384 /* terminal data per PDU */

/* The largest body of any type (terminal data) and the largest frame: what
 * a reader buffers at most. */
#define TSF_PROTO_BODY_MAX TSF_PROTO_DATA_MAX
#define TSF_PROTO_FRAME_MAX (TSF_PROTO_HEADER_SIZE + TSF_PROTO_BODY_MAX)

/* ---- PDU types ------------------------------------------------------------ */

enum tsf_pdu_type {
        TSF_PDU_LICENSE_REQUEST = 1,     /* S->C: farm, product version, nonce, max version */
        TSF_PDU_CLIENT_LICENSE_INFO = 2, /* C->S: nonce echo, hardware id, device name, token */
        TSF_PDU_LICENSE_RESPONSE = 3,    /* S->C: new-license / upgrade / valid / error */
        TSF_PDU_CLIENT_INFO = 4,         /* C->S: credentials, device, reconnect cookie, terminal */
        TSF_PDU_LOGON_RESULT = 5,        /* S->C: ok / wrong-password / ..., session id */
        TSF_PDU_REDIRECT = 6,            /* S->C: go to another node with a routing token */
        TSF_PDU_TERMINAL_DATA = 7,       /* both: bytes to or from the pty */
        TSF_PDU_WINDOW_SIZE = 8,         /* C->S: rows and columns */
        TSF_PDU_DISCONNECT = 9,          /* both: leave the session running, close */
        TSF_PDU_LOGOFF = 10,             /* both: end the session */
        TSF_PDU_KEEPALIVE = 11,          /* both: request, or reply (flag REPLY) */
        TSF_PDU_ERROR = 12,              /* both: protocol error, then close */
        _TSF_PDU_TYPE_MAX,
};

enum tsf_license_status {
        TSF_LICENSE_NEW = 1,     /* a token the device did not have: store it */
        TSF_LICENSE_UPGRADE = 2, /* a token replacing the one presented: store it */
        TSF_LICENSE_VALID = 3,   /* admitted, nothing to store */
        TSF_LICENSE_ERROR = 4,   /* not admitted; the server closes */
        _TSF_LICENSE_STATUS_MAX,
};

enum tsf_logon_status {
        TSF_LOGON_OK = 1,
        TSF_LOGON_WRONG_PASSWORD = 2, /* also for an unknown user: no enumeration */
        TSF_LOGON_NO_LICENSE = 3,
        TSF_LOGON_DENIED = 4, /* authenticated, not allowed (account, policy, limit) */
        TSF_LOGON_ERROR = 5,
        _TSF_LOGON_STATUS_MAX,
};

/* Reason codes, one namespace for every PDU that carries one. The set is
 * open: decoders accept any value (a newer peer may know more reasons, and
 * the reason text says it in words); tsf_proto_reason_to_string() is NULL
 * for a code this library does not know. */
enum tsf_proto_reason {
        TSF_REASON_NONE = 0x0000,
        /* license response */
        TSF_REASON_GRACE_PERIOD = 0x0101,       /* valid without a token, inside the grace period */
        TSF_REASON_NO_INVENTORY = 0x0102,       /* valid on the temporary token: no CAL available */
        TSF_REASON_TOKEN_EXPIRED = 0x0103,      /* presented token expired */
        TSF_REASON_TOKEN_OTHER_DEVICE = 0x0104, /* presented token bound to another hardware id */
        TSF_REASON_TOKEN_INVALID = 0x0105,      /* malformed, unknown issuer, bad signature */
        TSF_REASON_TOKEN_VERSION = 0x0106,      /* a token format this server cannot read */
        TSF_REASON_TOKEN_REVOKED = 0x0107,
        TSF_REASON_NO_LICENSE_SERVER = 0x0108, /* none answered and the grace period is over */
        TSF_REASON_RENEWED = 0x0109,           /* upgrade: a renewed Device CAL */
        TSF_REASON_LICENSE_SERVER_ERROR = 0x010A,
        /* logon result */
        TSF_REASON_BAD_CREDENTIALS = 0x0201,
        TSF_REASON_ACCOUNT_DENIED = 0x0202, /* PAM account management refused */
        TSF_REASON_SESSION_LIMIT = 0x0203,
        TSF_REASON_AUTH_ERROR = 0x0204, /* PAM itself failed */
        TSF_REASON_BAD_RECONNECT_COOKIE = 0x0205,
        /* redirect */
        TSF_REASON_SESSION_ELSEWHERE = 0x0301, /* the user's session lives on another node */
        TSF_REASON_PLACEMENT = 0x0302,         /* a new session goes to another node */
        TSF_REASON_DRAINING = 0x0303,          /* this node takes no new sessions */
        /* disconnect */
        TSF_REASON_USER_REQUEST = 0x0401,
        TSF_REASON_IDLE_TIMEOUT = 0x0402,
        TSF_REASON_REPLACED = 0x0403, /* the session was taken over by a newer connection */
        TSF_REASON_ADMIN = 0x0404,
        TSF_REASON_SHUTDOWN = 0x0405,
        TSF_REASON_LOGON_TIMEOUT = 0x0406,
        TSF_REASON_TOO_MANY_ATTEMPTS = 0x0407,
        TSF_REASON_PEER_SILENT = 0x0408, /* no keepalive answered in time */
        /* error */
        TSF_REASON_MALFORMED = 0x0501,
        TSF_REASON_UNSUPPORTED_VERSION = 0x0502,
        TSF_REASON_UNEXPECTED_PDU = 0x0503, /* a valid PDU in the wrong phase or direction */
        TSF_REASON_TOO_LARGE = 0x0504,
        TSF_REASON_TIMEOUT = 0x0505,
        TSF_REASON_INTERNAL = 0x0506,
        TSF_REASON_NONCE_MISMATCH = 0x0507,
};

/* ---- PDU bodies -------------------------------------------------------------
 * Text fields are NUL-terminated arrays (no NUL may occur inside on the
 * wire); binary fields are arrays with a length. */

struct tsf_pdu_license_request {
        uint8_t max_version; /* highest version the server speaks, >= 1 */
        uint8_t nonce[TSF_PROTO_NONCE_SIZE];
        char farm_id[TSF_PROTO_FARM_ID_MAX + 1];                 /* 1.. of [A-Za-z0-9._-] */
        char product_version[TSF_PROTO_PRODUCT_VERSION_MAX + 1]; /* 1.. of [A-Za-z0-9._-] */
};

struct tsf_pdu_client_license_info {
        uint8_t nonce[TSF_PROTO_NONCE_SIZE]; /* the license request's, echoed */
        uint8_t hardware_id[TSF_PROTO_HWID_MAX];
        size_t hardware_id_len;                          /* 16..64 */
        char device_name[TSF_PROTO_DEVICE_NAME_MAX + 1]; /* 1.. of text */
        char token[TSF_PROTO_TOKEN_MAX + 1];             /* "" = none, asks for one */
};

struct tsf_pdu_license_response {
        enum tsf_license_status status;
        uint16_t reason; /* enum tsf_proto_reason, open set */
        char reason_text[TSF_PROTO_REASON_MAX + 1];
        char token[TSF_PROTO_TOKEN_MAX + 1]; /* set exactly for NEW and UPGRADE */
};

struct tsf_pdu_client_info {
        uint16_t rows, cols; /* initial window size, 1..4096 each */
        char user[TSF_PROTO_USER_MAX + 1];
        char password[TSF_PROTO_PASSWORD_MAX + 1]; /* may be "" with a reconnect cookie */
        char device_name[TSF_PROTO_DEVICE_NAME_MAX + 1];
        uint8_t hardware_id[TSF_PROTO_HWID_MAX];
        size_t hardware_id_len;
        uint8_t reconnect_cookie[TSF_PROTO_COOKIE_MAX];
        size_t reconnect_cookie_len;       /* 0, or 16..64 */
        char term[TSF_PROTO_TERM_MAX + 1]; /* "" = the server's default */
};

struct tsf_pdu_logon_result {
        enum tsf_logon_status status;
        bool reattached;     /* OK only: an existing session was attached */
        uint32_t session_id; /* non-zero exactly when OK */
        uint16_t reason;
        char reason_text[TSF_PROTO_REASON_MAX + 1];
        uint8_t reconnect_cookie[TSF_PROTO_COOKIE_MAX];
        size_t reconnect_cookie_len; /* 0, or 16..64, and only when OK */
};

struct tsf_pdu_redirect {
        uint16_t reason;
        uint32_t session_id; /* the session on the target node, 0 = a new one */
        char routing_token[TSF_PROTO_ROUTING_TOKEN_MAX + 1]; /* for "Cookie: msts=" */
        char target[TSF_PROTO_TARGET_MAX + 1];               /* host:port */
        char user[TSF_PROTO_USER_MAX + 1];                   /* "" = log on as before */
        char reason_text[TSF_PROTO_REASON_MAX + 1];
};

/* Points into the buffer it was decoded from: valid as long as that is. */
struct tsf_pdu_terminal_data {
        const uint8_t *data;
        size_t len; /* 1..TSF_PROTO_DATA_MAX */
};

struct tsf_pdu_window_size {
        uint16_t rows, cols; /* 1..4096 each */
};

/* DISCONNECT and ERROR share a body. */
struct tsf_pdu_reason {
        uint16_t reason;
        char reason_text[TSF_PROTO_REASON_MAX + 1];
};

struct tsf_pdu_keepalive {
        bool reply;    /* the header flag REPLY */
        uint64_t echo; /* a reply carries the request's value */
};

struct tsf_pdu {
        enum tsf_pdu_type type;
        uint8_t version; /* TSF_PROTO_VERSION; tsf_pdu_init() sets it */
        union {
                struct tsf_pdu_license_request license_request;
                struct tsf_pdu_client_license_info client_license_info;
                struct tsf_pdu_license_response license_response;
                struct tsf_pdu_client_info client_info;
                struct tsf_pdu_logon_result logon_result;
                struct tsf_pdu_redirect redirect;
                struct tsf_pdu_terminal_data terminal_data;
                struct tsf_pdu_window_size window_size;
                struct tsf_pdu_reason disconnect;
                /* LOGOFF has an empty body. */
                struct tsf_pdu_keepalive keepalive;
                struct tsf_pdu_reason error;
        };
};

/* ---- frames ----------------------------------------------------------------- */

struct tsf_proto_header {
        uint8_t version;
        enum tsf_pdu_type type;
        uint16_t flags;
        uint32_t length; /* of the body */
};

/* Smallest and largest body a type can have; 0 for an unknown type. */
size_t tsf_pdu_body_min(enum tsf_pdu_type type);
size_t tsf_pdu_body_max(enum tsf_pdu_type type);

/* Checks the header bytes buf[0..len) that have arrived, as far as they
 * go: -EAGAIN when all of them are right but fewer than 12, 0 with *ret
 * filled when the header is whole and right, else the error of the first
 * wrong field (-EBADMSG magic, version 0, type, flags, a length below the
 * type's smallest body; -EPROTONOSUPPORT another version; -EMSGSIZE a
 * length above the type's cap). */
int tsf_proto_header_decode(const uint8_t *buf, size_t len, struct tsf_proto_header *ret);

/* Zeroes *pdu and sets type and version. */
void tsf_pdu_init(struct tsf_pdu *pdu, enum tsf_pdu_type type);

/* Writes the whole frame. Returns its size, -ENOBUFS, or -EINVAL for a PDU
 * the decoder would refuse (then nothing useful is in buf). */
ssize_t tsf_pdu_encode(const struct tsf_pdu *pdu, uint8_t *buf, size_t size);

/* Decodes the one frame at buf[0..): returns its size (bytes after it are
 * the next frame's and are not looked at), -EAGAIN while it is incomplete,
 * or the header's or body's error. terminal_data points into buf. */
ssize_t tsf_pdu_decode(const uint8_t *buf, size_t len, struct tsf_pdu *ret);

/* Decodes a body alone, as tsf_pdu_decode() does after the header: exactly
 * `len` bytes, `flags` from the header. 0, -EBADMSG or -EMSGSIZE. */
int tsf_pdu_body_decode(enum tsf_pdu_type type, uint16_t flags, const uint8_t *body, size_t len,
                        struct tsf_pdu *ret);

/* Whether two PDUs are the same message (terminal data compared by
 * content; bytes after a text field's NUL are not compared). */
bool tsf_pdu_equal(const struct tsf_pdu *a, const struct tsf_pdu *b);

/* Overwrites *pdu with zeros in a way the compiler keeps: for PDUs that
 * held a password or a reconnect cookie. */
void tsf_pdu_wipe(struct tsf_pdu *pdu);

/* ---- streaming reader ---------------------------------------------------------
 *
 * Feed it bytes as they come out of TLS; it buffers at most one frame and
 * never more than the frame's type allows: the header is checked byte by
 * byte as it arrives, and the body length against the type's cap before a
 * single body byte is taken. Consumed frames are wiped (a CLIENT_INFO's
 * password does not linger). An error is sticky: the connection is over.
 *
 * Embed or allocate it; it is about 16 KiB. */
struct tsf_proto_reader {
        uint8_t buf[TSF_PROTO_FRAME_MAX];
        size_t have;    /* bytes of the current frame buffered */
        size_t need;    /* its size once the header is known, else 0 */
        bool delivered; /* buf holds the frame last returned */
        int error;      /* sticky, 0 while fine */
};

void tsf_proto_reader_init(struct tsf_proto_reader *r);

/* Takes bytes from data[0..len), never past the end of the current frame.
 * Returns 0 with *ret filled when a frame is complete (its terminal data
 * points into the reader and stays valid until the next call), -EAGAIN
 * when every byte was taken and the frame is not complete yet, or the
 * frame's error. *consumed says how many bytes were taken in every case:
 * call again with the rest. */
int tsf_proto_reader_feed(struct tsf_proto_reader *r, const uint8_t *data, size_t len, size_t *consumed,
                          struct tsf_pdu *ret);

/* Wipes the buffer (call before freeing a reader). */
void tsf_proto_reader_wipe(struct tsf_proto_reader *r);

/* ---- who may send what when (docs/protocol.md, "State machine") ---------- */

enum tsf_proto_role {
        TSF_PROTO_SERVER = 0,
        TSF_PROTO_CLIENT = 1,
};

enum tsf_proto_phase {
        TSF_PHASE_LICENSE_REQUEST = 0, /* TLS is up, the server has not sent its request */
        TSF_PHASE_LICENSE_INFO,        /* the request is out, the client's answer is due */
        TSF_PHASE_LICENSE_RESPONSE,    /* the client's answer is in, the server's is due */
        TSF_PHASE_LOGON,               /* licensed; CLIENT_INFO and the server's answer */
        TSF_PHASE_SESSION,             /* logged on */
        _TSF_PHASE_MAX,
};

/* Whether `sender` may send `type` in `phase`. A receiver answers anything
 * else with ERROR unexpected-pdu and closes. */
bool tsf_pdu_allowed(enum tsf_proto_role sender, enum tsf_proto_phase phase, enum tsf_pdu_type type);

/* ---- X.224 Connection Confirm (MS-RDPBCGR 2.2.1.2) ---------------------------
 * The server's answer to the Connection Request (lib/x224.h parses that). */

#define TSF_X224_TPDU_CC 0xD0
#define TSF_RDP_NEG_RSP_TYPE 0x02
#define TSF_RDP_NEG_FAILURE_TYPE 0x03
#define TSF_CC_SIZE_MIN 11 /* without negotiation data */
#define TSF_CC_SIZE_MAX 19 /* with RDP_NEG_RSP or RDP_NEG_FAILURE */

/* RDP_NEG_FAILURE failureCode (MS-RDPBCGR 2.2.1.2.2). */
#define TSF_NEG_FAILURE_SSL_REQUIRED_BY_SERVER 0x00000001u
#define TSF_NEG_FAILURE_SSL_NOT_ALLOWED_BY_SERVER 0x00000002u
#define TSF_NEG_FAILURE_SSL_CERT_NOT_ON_SERVER 0x00000003u
#define TSF_NEG_FAILURE_INCONSISTENT_FLAGS 0x00000004u
#define TSF_NEG_FAILURE_HYBRID_REQUIRED_BY_SERVER 0x00000005u
#define TSF_NEG_FAILURE_SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER 0x00000006u

enum tsf_cc_neg {
        TSF_CC_NEG_NONE = 0, /* legacy: no negotiation data */
        TSF_CC_NEG_RESPONSE, /* RDP_NEG_RSP: selected_protocol */
        TSF_CC_NEG_FAILURE,  /* RDP_NEG_FAILURE: failure_code */
        _TSF_CC_NEG_MAX,
};

struct tsf_cc {
        uint16_t dst_ref, src_ref; /* kept as sent */
        enum tsf_cc_neg neg;
        uint8_t neg_flags; /* RDP_NEG_RSP flags; 0 otherwise */
        uint32_t selected_protocol;
        uint32_t failure_code;
};

/* Returns the TPKT's size, -EAGAIN, or -EBADMSG: TPKT version 3, reserved
 * 0, length 11 or 19, LI = length - 5, code D0, class 0, then nothing or
 * exactly one RDP_NEG_RSP / RDP_NEG_FAILURE (length 8; FAILURE flags 0). */
ssize_t tsf_cc_decode(const uint8_t *buf, size_t len, struct tsf_cc *ret);
/* -EINVAL for fields the decoder would refuse (flags on a failure,
 * fields of the kind not chosen), -ENOBUFS. */
ssize_t tsf_cc_encode(const struct tsf_cc *cc, uint8_t *buf, size_t size);

/* What tshost answers a parsed Connection Request with: RDP_NEG_RSP
 * selecting PROTOCOL_SSL when the client asked for it, else RDP_NEG_FAILURE
 * SSL_REQUIRED_BY_SERVER (returns false: close after sending it). */
bool tsf_proto_cc_for(const struct tsf_cr *cr, struct tsf_cc *ret);

/* What tsclient sends first: a Connection Request with "Cookie: mstshash=
 * <user>" (routing_token NULL) or "Cookie: msts=<routing_token>" (after a
 * redirect), and RDP_NEG_REQ asking for PROTOCOL_SSL. user may be NULL for
 * no cookie. -EINVAL for a value that does not fit or is not a valid line. */
int tsf_proto_cr_build(const char *user, const char *routing_token, struct tsf_cr *ret);

/* ---- names ------------------------------------------------------------------ */

/* Static strings ("license-request", "new-license", ...); NULL outside the enums. */
const char *tsf_pdu_type_to_string(enum tsf_pdu_type t);
const char *tsf_license_status_to_string(enum tsf_license_status s);
const char *tsf_logon_status_to_string(enum tsf_logon_status s);
const char *tsf_proto_reason_to_string(uint16_t reason);
