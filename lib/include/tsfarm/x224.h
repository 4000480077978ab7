/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The first client PDU of an RDP connection: an optional Preconnection PDU
 * (MS-RDPEPS 2.2.1.1, v1 and v2) followed by TPKT + X.224 Connection Request
 * (MS-RDPBCGR 2.2.1.1) carrying an optional cookie / routing token, an
 * optional RDP_NEG_REQ and optional RDP_NEG_CORRELATION_INFO.
 *
 * The parser is strict and incremental: call it on whatever bytes have
 * arrived so far; it answers complete, need-more or invalid (with a reason
 * and the offset of the offending byte). It never reads past `len`.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Wire constants. */
#define TSF_TPKT_VERSION 3
#define TSF_TPKT_HEADER_SIZE 4
#define TSF_X224_CR_FIXED_SIZE 7 /* LI, CR|CDT, DST-REF, SRC-REF, class */
#define TSF_X224_TPDU_CR 0xE0    /* CR code 1110, CDT 0000 */
#define TSF_RDP_NEG_REQ_TYPE 0x01
#define TSF_RDP_NEG_REQ_SIZE 8
#define TSF_RDP_CORRELATION_INFO_TYPE 0x06
#define TSF_RDP_CORRELATION_INFO_SIZE 36
#define TSF_RDP_NEG_FLAG_CORRELATION_INFO_PRESENT 0x08

/* requestedProtocols bits (MS-RDPBCGR 2.2.1.1.1). */
#define TSF_PROTOCOL_SSL 0x00000001u
#define TSF_PROTOCOL_HYBRID 0x00000002u
#define TSF_PROTOCOL_RDSTLS 0x00000004u
#define TSF_PROTOCOL_HYBRID_EX 0x00000008u
#define TSF_PROTOCOL_RDSAAD 0x00000010u

/* Hard caps. The X.224 length indicator is one byte and 255 is reserved,
 * so a Connection Request TPDU is at most 5 + 254 bytes. */
#define TSF_X224_LI_MAX 254
#define TSF_CR_TPKT_MAX (TSF_TPKT_HEADER_SIZE + 1 + TSF_X224_LI_MAX)
/* The cookie / token line (without CRLF). */
#define TSF_CR_COOKIE_MAX (TSF_X224_LI_MAX - (TSF_X224_CR_FIXED_SIZE - 1) - 2)
/* Preconnection PDU: v2 string in UTF-16 code units, including the NUL. */
#define TSF_PCB_V1_SIZE 16
#define TSF_PCB_V2_HEADER_SIZE 18
#define TSF_PCB_CCH_MAX 512
#define TSF_PCB_MAX (TSF_PCB_V2_HEADER_SIZE + 2 * TSF_PCB_CCH_MAX)
/* Everything the first client PDU can be; what a gateway buffers at most. */
#define TSF_FIRST_PDU_MAX (TSF_PCB_MAX + TSF_CR_TPKT_MAX)
/* UTF-8 form of the PCB string: each UTF-16 unit becomes at most 3 bytes. */
#define TSF_PCB_UTF8_MAX (3 * TSF_PCB_CCH_MAX)

enum tsf_cr_status {
        TSF_CR_COMPLETE = 0,
        TSF_CR_NEED_MORE = 1,
        TSF_CR_INVALID = 2,
};

enum tsf_cr_error {
        TSF_CR_OK = 0,
        TSF_CR_ERR_PCB_SIZE,        /* cbSize too small, too large or inconsistent */
        TSF_CR_ERR_PCB_FLAGS,       /* Flags not zero */
        TSF_CR_ERR_PCB_VERSION,     /* Version not 1 or 2 */
        TSF_CR_ERR_PCB_STRING,      /* cchPCB/wszPCB inconsistent, not NUL-terminated, bad UTF-16 */
        TSF_CR_ERR_TPKT_VERSION,    /* first byte not 3 */
        TSF_CR_ERR_TPKT_RESERVED,   /* second byte not 0 */
        TSF_CR_ERR_TPKT_LENGTH,     /* length too small or above TSF_CR_TPKT_MAX */
        TSF_CR_ERR_X224_LENGTH,     /* LI != TPKT length - 5 */
        TSF_CR_ERR_X224_CODE,       /* not a Connection Request (0xE0) */
        TSF_CR_ERR_X224_DST_REF,    /* DST-REF not zero */
        TSF_CR_ERR_X224_CLASS,      /* class option not zero */
        TSF_CR_ERR_COOKIE_NO_CRLF,  /* token line not terminated by CRLF inside the TPDU */
        TSF_CR_ERR_COOKIE_TOO_LONG, /* token line longer than TSF_CR_COOKIE_MAX */
        TSF_CR_ERR_COOKIE_CHAR,     /* control character in the token line */
        TSF_CR_ERR_COOKIE_EMPTY,    /* "Cookie: mstshash=" / "Cookie: msts=" with no value */
        TSF_CR_ERR_NEG_TYPE,        /* bytes after the token are not RDP_NEG_REQ */
        TSF_CR_ERR_NEG_LENGTH,      /* RDP_NEG_REQ length field not 8 */
        TSF_CR_ERR_CORRELATION, /* correlation info flagged but absent, malformed, or unflagged but present
                                 */
        TSF_CR_ERR_TRAILING,    /* bytes left over inside the TPDU */
        _TSF_CR_ERR_MAX,
};

enum tsf_cookie_kind {
        TSF_COOKIE_NONE = 0,
        TSF_COOKIE_MSTSHASH,      /* "Cookie: mstshash=<user identifier>" */
        TSF_COOKIE_ROUTING_TOKEN, /* "Cookie: msts=<token>" */
        TSF_COOKIE_TSV,           /* "tsv://..." load-balance info, opaque */
        TSF_COOKIE_MTH,           /* "mth://..." load-balance info, opaque */
        TSF_COOKIE_OTHER,         /* any other CRLF-terminated line, opaque */
        _TSF_COOKIE_KIND_MAX,
};

struct tsf_cr {
        /* Preconnection PDU (MS-RDPEPS), present when has_pcb. */
        bool has_pcb;
        uint32_t pcb_version; /* 1 or 2 */
        uint32_t pcb_id;
        uint16_t pcb_cch;                      /* v2: UTF-16 units including NUL */
        char pcb_string[TSF_PCB_UTF8_MAX + 1]; /* v2: wszPCB as UTF-8, NUL-terminated */
        size_t pcb_size;                       /* cbSize */

        /* TPKT + X.224 CR. */
        uint16_t tpkt_length;
        uint8_t li;
        uint16_t src_ref;

        /* Token line, without the CRLF. `cookie` is the whole line;
         * `cookie_value` points into it at the value (after "mstshash=" or
         * "msts="), or at the line start for the opaque kinds. */
        enum tsf_cookie_kind cookie_kind;
        char cookie[TSF_CR_COOKIE_MAX + 1];
        size_t cookie_len;
        size_t cookie_value_offset;
        size_t cookie_value_len;

        /* Routing token decoded from the "<u32>.<u16>.<reserved>" form. */
        bool routing_decoded;
        uint32_t routing_ipv4_be; /* network byte order, ready for struct in_addr */
        uint16_t routing_port;    /* host byte order */

        /* RDP_NEG_REQ. */
        bool has_neg_req;
        uint8_t neg_flags;
        uint32_t requested_protocols;

        /* RDP_NEG_CORRELATION_INFO. */
        bool has_correlation;
        uint8_t correlation_id[16];
        uint8_t correlation_reserved[16];

        /* Bytes of the whole first PDU (PCB + TPKT). */
        size_t consumed;

        /* Set when the result is TSF_CR_INVALID. */
        enum tsf_cr_error error;
        size_t error_offset; /* offset of the offending byte from the start of the buffer */
};

/* Parses the first client PDU in buf[0..len). Returns the status; on
 * TSF_CR_COMPLETE, `out->consumed` bytes make up the PDU (anything after it
 * is not ours). On TSF_CR_NEED_MORE nothing seen so far is wrong. The
 * result is monotonic: a prefix of a complete PDU is never invalid, and more
 * bytes never turn invalid into anything else. */
enum tsf_cr_status tsf_cr_parse(const uint8_t *buf, size_t len, struct tsf_cr *out);

/* Encodes `in` (fields as the parser fills them; `cookie`/`cookie_len`,
 * pcb_* and flags are taken as given). Returns the number of bytes written,
 * -ENOBUFS if `size` is too small, -EINVAL if a field is out of range. */
/* Derived fields are computed, not read: pcb_size, tpkt_length, li,
 * cookie_value_*, routing_*, consumed, error*. cookie_kind must be what the
 * parser would classify `cookie` as. pcb_cch 0 with pcb_version 2 means
 * "no string" for an empty pcb_string, else "count it"; any other value
 * must equal the UTF-16 units of pcb_string plus the NUL. -EINVAL also for
 * a line the parser would refuse (control characters, empty value), bad
 * UTF-8 in pcb_string, or correlation info that disagrees with neg_flags. */
ssize_t tsf_cr_encode(const struct tsf_cr *in, uint8_t *buf, size_t size);

/* Whether two results describe the same PDU: every field the parser fills
 * on TSF_CR_COMPLETE (error and error_offset are not compared). */
bool tsf_cr_equal(const struct tsf_cr *a, const struct tsf_cr *b);

/* Decodes "<u32>.<u16>.<reserved>" (reserved: optional digits, the final dot
 * required) into an IPv4 address (network order) and port (host order).
 * Returns 0, or -EINVAL when `token` does not have that form. */
int tsf_routing_token_decode(const char *token, size_t len, uint32_t *ipv4_be, uint16_t *port);

/* Formats the routing token for an address and port ("%u.%u.0000"). Returns
 * the length written (without NUL) or -ENOBUFS. */
int tsf_routing_token_format(uint32_t ipv4_be, uint16_t port, char *buf, size_t size);

/* Names and descriptions are static strings; NULL for a value outside the enum. */
const char *tsf_cr_status_to_string(enum tsf_cr_status s);
const char *tsf_cr_error_to_string(enum tsf_cr_error e);       /* short id, e.g. "x224-code" */
const char *tsf_cr_error_describe(enum tsf_cr_error e);        /* one readable sentence */
const char *tsf_cookie_kind_to_string(enum tsf_cookie_kind k); /* "mstshash", "routing-token", ... */
