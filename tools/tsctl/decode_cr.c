/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsctl decode-cr: runs the gateway's own parser (tsf_cr_parse) on a PDU
 * an operator took from a capture and prints what it saw, so "why did the
 * farm send this user there / refuse this client" can be answered from the
 * bytes. Nothing here interprets the PDU itself: what is printed is what
 * the parser filled in, and an invalid PDU shows the parser's reason and
 * offset. Output goes to stdout (it is the answer); problems reading the
 * input go to the log (stderr) with exit status 2.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/hex.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsfarm/x224.h"
#include "tsctl.h"

/* A first PDU is at most TSF_FIRST_PDU_MAX (about 1.3 KiB) bytes; the cap
 * leaves room for hex text, line breaks and bytes that followed it in a
 * capture, and keeps a mistaken `tsctl decode-cr big.pcap` from reading
 * a gigabyte. */
#define DECODE_CR_INPUT_MAX (64u * 1024u)

/* Trailing bytes shown in the table; --json gives them all. */
#define TRAILING_SHOWN 16

enum input_format {
        FORMAT_AUTO,
        FORMAT_HEX,
        FORMAT_RAW,
};

static enum input_format arg_format = FORMAT_AUTO;

struct input {
        const char *name; /* file name, or "standard input" */
        uint8_t *data;    /* as read */
        size_t size;
        bool hex;             /* data was hex text, decoded into bytes */
        bool auto_detected;   /* the format was guessed, not given */
        uint8_t *hex_bytes;   /* owned when hex */
        const uint8_t *bytes; /* the PDU bytes: hex_bytes or data */
        size_t len;
};

static void input_done(struct input *in) {
        free(in->data);
        free(in->hex_bytes);
}

int decode_cr_parse_option(int val, const char *arg) {
        enum input_format f;

        switch (val) {
        case DECODE_CR_OPT_HEX:
                f = FORMAT_HEX;
                break;
        case DECODE_CR_OPT_RAW:
                f = FORMAT_RAW;
                break;
        default:
                return log_error_errno(-EINVAL, "decode-cr: unhandled option %d.", val);
        }
        if (arg_format != FORMAT_AUTO && arg_format != f)
                return log_error_errno(-EINVAL, "tsctl decode-cr: --hex and --raw exclude each other.");
        arg_format = f;
        return 0;
}

/* ---- input ------------------------------------------------------------- */

/* Reads at most DECODE_CR_INPUT_MAX bytes; one more means "too big", which
 * is refused rather than cut, since a cut PDU would decode as something it
 * is not. */
static int read_input(const char *path, struct input *in) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t n = 0;
        int src;

        if (!path || strcmp(path, "-") == 0) {
                in->name = "standard input";
                src = STDIN_FILENO;
                if (isatty(src))
                        log_info("Reading the PDU from the terminal: paste hex, then Ctrl-D.");
        } else {
                in->name = path;
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (fd < 0)
                        return log_error_errno(negative_errno(), "Failed to open %s: %m", path);
                src = fd;
        }

        buf = malloc(DECODE_CR_INPUT_MAX + 1);
        if (!buf)
                return log_oom();
        while (n <= DECODE_CR_INPUT_MAX) {
                ssize_t k = read(src, buf + n, DECODE_CR_INPUT_MAX + 1 - n);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(negative_errno(), "Failed to read %s: %m", in->name);
                }
                if (k == 0)
                        break;
                n += (size_t)k;
        }
        if (n > DECODE_CR_INPUT_MAX)
                return log_error_errno(-EFBIG,
                                       "%s: more than %u KiB of input. decode-cr reads one PDU (at most %d "
                                       "bytes, or twice that as hex); cut the input down to it.",
                                       in->name, DECODE_CR_INPUT_MAX / 1024, TSF_FIRST_PDU_MAX);

        in->data = TAKE_PTR(buf);
        in->size = n;
        return 0;
}

/* 1-based line and column of a text offset, for messages about hex text. */
static void line_column(const uint8_t *text, size_t offset, size_t *line, size_t *column) {
        *line = 1;
        *column = 1;
        for (size_t i = 0; i < offset; i++) {
                if (text[i] == '\n') {
                        (*line)++;
                        *column = 1;
                } else
                        (*column)++;
        }
}

/* Says what is wrong with hex text at `bad`: a digit without its partner
 * (odd count, or a separator splitting a byte), or a stray character. */
static int hex_error(const struct input *in, size_t bad) {
        size_t line, column;
        unsigned char c = bad < in->size ? in->data[bad] : 0;

        line_column(in->data, bad, &line, &column);
        if (isxdigit(c))
                return log_error_errno(
                        -EINVAL,
                        "%s: not valid hex: the digit '%c' at offset %zu (line %zu, column %zu) "
                        "has no partner; hex digits come in pairs.",
                        in->name, c, bad, line, column);
        if (c >= 0x21 && c < 0x7f)
                return log_error_errno(
                        -EINVAL,
                        "%s: not valid hex: unexpected character '%c' at offset %zu (line %zu, "
                        "column %zu).",
                        in->name, c, bad, line, column);
        return log_error_errno(
                -EINVAL, "%s: not valid hex: unexpected byte 0x%02x at offset %zu (line %zu, column %zu).",
                in->name, c, bad, line, column);
}

static int decode_input(struct input *in) {
        ssize_t n;
        size_t bad = 0;

        in->auto_detected = arg_format == FORMAT_AUTO;
        in->hex = arg_format == FORMAT_HEX ||
                  (arg_format == FORMAT_AUTO && tsf_hex_looks_like_hex(in->data, in->size));
        if (!in->hex) {
                in->bytes = in->data;
                in->len = in->size;
                return 0;
        }

        in->hex_bytes = malloc(in->size / 2 + 1);
        if (!in->hex_bytes)
                return log_oom();
        n = tsf_hex_decode((const char *)in->data, in->size, in->hex_bytes, in->size / 2 + 1, &bad);
        if (n == -EINVAL)
                return hex_error(in, bad);
        if (n < 0)
                return log_error_errno((int)n, "%s: failed to decode hex: %m", in->name);
        in->bytes = in->hex_bytes;
        in->len = (size_t)n;
        return 0;
}

/* Printable text that is not hex was most likely meant as hex (a paste
 * with a typo, the wrong file); say so next to the parser's complaint
 * about byte 0. */
static bool text_but_not_hex(const struct input *in) {
        if (in->hex || !in->auto_detected || in->size == 0)
                return false;
        for (size_t i = 0; i < in->size; i++) {
                uint8_t c = in->data[i];

                if (!(c >= 0x20 && c < 0x7f) && c != '\n' && c != '\r' && c != '\t')
                        return false;
        }
        return true;
}

/* ---- names ------------------------------------------------------------- */

struct bit_name {
        uint32_t bit;
        const char *name;
};

static const struct bit_name protocol_names[] = {
        {TSF_PROTOCOL_SSL, "SSL"},       {TSF_PROTOCOL_HYBRID, "HYBRID"},
        {TSF_PROTOCOL_RDSTLS, "RDSTLS"}, {TSF_PROTOCOL_HYBRID_EX, "HYBRID_EX"},
        {TSF_PROTOCOL_RDSAAD, "RDSAAD"},
};

/* RDP_NEG_REQ flags, MS-RDPBCGR 2.2.1.1.1. The parser passes them through;
 * x224.h names only the one it acts on. */
static const struct bit_name neg_flag_names[] = {
        {0x01, "RESTRICTED_ADMIN_MODE_REQUIRED"},
        {0x02, "REDIRECTED_AUTHENTICATION_MODE_REQUIRED"},
        {TSF_RDP_NEG_FLAG_CORRELATION_INFO_PRESENT, "CORRELATION_INFO_PRESENT"},
};

/* "SSL|HYBRID", unknown bits as hex ("SSL|0x40"). `zero` names the value 0. */
static void bits_to_string(char *buf, size_t size, uint32_t value, const struct bit_name *names, size_t n,
                           const char *zero) {
        size_t used = 0;

        buf[0] = '\0';
        if (value == 0) {
                snprintf(buf, size, "%s", zero);
                return;
        }
        for (size_t i = 0; i < n; i++)
                if (value & names[i].bit) {
                        used += (size_t)snprintf(buf + used, size - MIN(used, size), "%s%s", used ? "|" : "",
                                                 names[i].name);
                        value &= ~names[i].bit;
                }
        if (value)
                snprintf(buf + MIN(used, size), size - MIN(used, size), "%s0x%x", used ? "|" : "", value);
}

static json_t *bits_to_json(uint32_t value, const struct bit_name *names, size_t n) {
        _cleanup_json_ json_t *a = json_array();

        if (!a)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (value & names[i].bit) {
                        if (json_array_append_new(a, json_string(names[i].name)) < 0)
                                return NULL;
                        value &= ~names[i].bit;
                }
        if (value) {
                char unknown[16];

                snprintf(unknown, sizeof(unknown), "0x%x", value);
                if (json_array_append_new(a, json_string(unknown)) < 0)
                        return NULL;
        }
        return TAKE_PTR(a);
}

/* ---- human output ------------------------------------------------------ */

static void add_input_row(struct tsctl_table *t, const struct input *in) {
        _cleanup_free_ char *name = tsctl_escape(in->name, strlen(in->name));

        if (in->hex)
                tsctl_table_add(t, "Input", "%s: hex text (%zu characters), %zu bytes", name ?: "?",
                                in->size, in->len);
        else
                tsctl_table_add(t, "Input", "%s: raw, %zu bytes", name ?: "?", in->len);
}

static void add_note_row(struct tsctl_table *t, const struct input *in) {
        if (in->len == 0)
                tsctl_table_add(t, "Note", "the input is empty");
        else if (text_but_not_hex(in))
                tsctl_table_add(t, "Note",
                                "the input is text but not hex (--hex shows where), so it was read as "
                                "raw bytes");
}

static void add_cookie_rows(struct tsctl_table *t, const struct tsf_cr *cr) {
        tsctl_table_add(t, "Cookie kind", "%s", tsf_cookie_kind_to_string(cr->cookie_kind));
        if (cr->cookie_kind == TSF_COOKIE_NONE)
                return;
        tsctl_table_add_text(t, "Cookie value", cr->cookie + cr->cookie_value_offset, cr->cookie_value_len);
        if (cr->cookie_kind == TSF_COOKIE_ROUTING_TOKEN) {
                char addr[INET_ADDRSTRLEN];
                struct in_addr a = {.s_addr = cr->routing_ipv4_be};

                if (cr->routing_decoded && inet_ntop(AF_INET, &a, addr, sizeof(addr)))
                        tsctl_table_add(t, "Routing target", "%s:%u", addr, cr->routing_port);
                else
                        tsctl_table_add(t, "Routing target",
                                        "not decodable (expected <u32 address>.<u16 port>.<reserved>)");
        }
}

static void add_negotiation_rows(struct tsctl_table *t, const struct tsf_cr *cr) {
        char names[160];

        if (!cr->has_neg_req) {
                tsctl_table_add(t, "Requested protocols", "not sent (standard RDP security)");
                tsctl_table_add(t, "Negotiation flags", "not sent");
                return;
        }
        bits_to_string(names, sizeof(names), cr->requested_protocols, protocol_names,
                       ELEMENTSOF(protocol_names), "RDP, standard RDP security");
        tsctl_table_add(t, "Requested protocols", "0x%08x (%s)", cr->requested_protocols, names);
        if (cr->neg_flags == 0) {
                tsctl_table_add(t, "Negotiation flags", "0x00");
                return;
        }
        bits_to_string(names, sizeof(names), cr->neg_flags, neg_flag_names, ELEMENTSOF(neg_flag_names), "");
        tsctl_table_add(t, "Negotiation flags", "0x%02x (%s)", cr->neg_flags, names);
}

static int print_complete(const struct input *in, const struct tsf_cr *cr) {
        _cleanup_(tsctl_table_freep) struct tsctl_table *t = tsctl_table_new();

        if (!t)
                return log_oom();

        add_input_row(t, in);
        tsctl_table_add(t, "Result", "complete, %zu bytes", cr->consumed);

        if (cr->has_pcb) {
                tsctl_table_add(t, "Preconnection PDU", "version %u, %zu bytes", cr->pcb_version,
                                cr->pcb_size);
                tsctl_table_add(t, "  Id", "%u (0x%08x)", cr->pcb_id, cr->pcb_id);
                if (cr->pcb_version >= 2)
                        tsctl_table_add_text(t, "  String", cr->pcb_string, strlen(cr->pcb_string));
        } else
                tsctl_table_add(t, "Preconnection PDU", "none");

        tsctl_table_add(t, "TPKT length", "%u", cr->tpkt_length);
        tsctl_table_add(t, "X.224 LI", "%u (0x%02x)", cr->li, cr->li);
        tsctl_table_add(t, "Source reference", "0x%04x", cr->src_ref);
        add_cookie_rows(t, cr);
        add_negotiation_rows(t, cr);

        if (cr->has_correlation) {
                char id[2 * sizeof(cr->correlation_id) + 1];

                tsf_hex_encode(cr->correlation_id, sizeof(cr->correlation_id), id);
                tsctl_table_add(t, "Correlation id", "%s", id);
        } else
                tsctl_table_add(t, "Correlation id", "none");

        tsctl_table_add(t, "Bytes consumed", "%zu", cr->consumed);
        if (in->len > cr->consumed) {
                size_t extra = in->len - cr->consumed, shown = MIN(extra, (size_t)TRAILING_SHOWN);
                char hex[2 * TRAILING_SHOWN + 1];

                tsf_hex_encode(in->bytes + cr->consumed, shown, hex);
                tsctl_table_add(t, "Trailing bytes", "%zu after the PDU, not part of it: %s%s", extra, hex,
                                extra > shown ? "..." : "");
        } else
                tsctl_table_add(t, "Trailing bytes", "none");

        return tsctl_table_print(t, stdout);
}

static int print_invalid(const struct input *in, const struct tsf_cr *cr) {
        _cleanup_(tsctl_table_freep) struct tsctl_table *t = tsctl_table_new();
        int r;

        if (!t)
                return log_oom();
        add_input_row(t, in);
        tsctl_table_add(t, "Result", "invalid: %s", tsf_cr_error_to_string(cr->error));
        tsctl_table_add(t, "Reason", "%s", tsf_cr_error_describe(cr->error));
        if (cr->error_offset < in->len)
                tsctl_table_add(t, "Offset", "%zu (0x%zx), byte 0x%02x", cr->error_offset, cr->error_offset,
                                in->bytes[cr->error_offset]);
        else
                tsctl_table_add(t, "Offset", "%zu (0x%zx), past the end", cr->error_offset,
                                cr->error_offset);
        add_note_row(t, in);

        r = tsctl_table_print(t, stdout);
        if (r < 0)
                return r;
        fputc('\n', stdout);
        tsctl_hexdump_excerpt(stdout, in->bytes, in->len, cr->error_offset, 1, "  ");
        return 0;
}

static int print_incomplete(const struct input *in) {
        _cleanup_(tsctl_table_freep) struct tsctl_table *t = tsctl_table_new();

        if (!t)
                return log_oom();
        add_input_row(t, in);
        tsctl_table_add(t, "Result", "incomplete");
        tsctl_table_add(t, "Reason", "truncated: %zu bytes, the PDU needs more", in->len);
        add_note_row(t, in);
        return tsctl_table_print(t, stdout);
}

/* ---- JSON output ------------------------------------------------------- */

/* jansson's reference rules make the builders below leak-free without
 * checks at every step: json_pack's "o" and json_object_set_new() take the
 * reference they are given even when they fail, and both fail on a NULL
 * value, so an allocation failure anywhere surfaces as one failed set. */

/* Wire text as a JSON string: jansson takes only valid UTF-8, so anything
 * else is shown escaped (the exact bytes are in a *_hex field then). */
static json_t *json_text(const char *s, size_t len) {
        _cleanup_free_ char *e = NULL;

        if (tsctl_utf8_valid(s, len))
                return json_stringn(s, len);
        e = tsctl_escape(s, len);
        return e ? json_string(e) : NULL;
}

static json_t *json_hex(const uint8_t *buf, size_t len) {
        _cleanup_free_ char *h = malloc(2 * len + 1);

        if (!h)
                return NULL;
        tsf_hex_encode(buf, len, h);
        return json_string(h);
}

/* Fields every answer has: status and where the bytes came from. */
static json_t *json_answer(const struct input *in, const char *status) {
        return json_pack("{s:s, s:o, s:s, s:I}", "status", status, "source",
                         json_text(in->name, strlen(in->name)), "format", in->hex ? "hex" : "raw", "bytes",
                         (json_int_t)in->len);
}

static json_t *json_preconnection(const struct tsf_cr *cr) {
        _cleanup_json_ json_t *p = NULL;

        if (!cr->has_pcb)
                return json_null();
        p = json_pack("{s:I, s:I, s:I}", "version", (json_int_t)cr->pcb_version, "id",
                      (json_int_t)cr->pcb_id, "size", (json_int_t)cr->pcb_size);
        if (!p)
                return NULL;
        if (cr->pcb_version >= 2 &&
            (json_object_set_new(p, "cch", json_integer(cr->pcb_cch)) < 0 ||
             json_object_set_new(p, "string", json_text(cr->pcb_string, strlen(cr->pcb_string))) < 0))
                return NULL;
        return TAKE_PTR(p);
}

static json_t *json_cookie(const struct tsf_cr *cr) {
        _cleanup_json_ json_t *c = NULL;
        const char *value = cr->cookie + cr->cookie_value_offset;

        if (cr->cookie_kind == TSF_COOKIE_NONE)
                return json_null();

        c = json_pack("{s:s, s:o, s:o}", "kind", tsf_cookie_kind_to_string(cr->cookie_kind), "line",
                      json_text(cr->cookie, cr->cookie_len), "value",
                      json_text(value, cr->cookie_value_len));
        if (!c)
                return NULL;
        if (!tsctl_utf8_valid(cr->cookie, cr->cookie_len) &&
            json_object_set_new(c, "line_hex", json_hex((const uint8_t *)cr->cookie, cr->cookie_len)) < 0)
                return NULL;

        if (cr->cookie_kind == TSF_COOKIE_ROUTING_TOKEN) {
                char addr[INET_ADDRSTRLEN];
                struct in_addr a = {.s_addr = cr->routing_ipv4_be};
                bool ok = cr->routing_decoded && inet_ntop(AF_INET, &a, addr, sizeof(addr));

                /* null, not absent, when undecodable: scripts can tell
                 * "not a routing token" from "a token we cannot read". */
                if (json_object_set_new(c, "address", ok ? json_string(addr) : json_null()) < 0 ||
                    json_object_set_new(c, "port", ok ? json_integer(cr->routing_port) : json_null()) < 0)
                        return NULL;
        }
        return TAKE_PTR(c);
}

static json_t *json_neg_req(const struct tsf_cr *cr) {
        if (!cr->has_neg_req)
                return json_null();
        return json_pack("{s:I, s:o, s:I, s:o}", "flags", (json_int_t)cr->neg_flags, "flag_names",
                         bits_to_json(cr->neg_flags, neg_flag_names, ELEMENTSOF(neg_flag_names)),
                         "requested_protocols", (json_int_t)cr->requested_protocols, "protocols",
                         bits_to_json(cr->requested_protocols, protocol_names, ELEMENTSOF(protocol_names)));
}

static int json_complete(const struct input *in, const struct tsf_cr *cr) {
        _cleanup_json_ json_t *o = json_answer(in, "complete");
        size_t trailing = in->len - cr->consumed;

        if (!o || json_object_set_new(o, "consumed", json_integer((json_int_t)cr->consumed)) < 0 ||
            json_object_set_new(o, "trailing", json_integer((json_int_t)trailing)) < 0 ||
            json_object_set_new(o, "preconnection", json_preconnection(cr)) < 0 ||
            json_object_set_new(o, "tpkt_length", json_integer(cr->tpkt_length)) < 0 ||
            json_object_set_new(o, "x224_li", json_integer(cr->li)) < 0 ||
            json_object_set_new(o, "src_ref", json_integer(cr->src_ref)) < 0 ||
            json_object_set_new(o, "cookie", json_cookie(cr)) < 0 ||
            json_object_set_new(o, "neg_req", json_neg_req(cr)) < 0 ||
            json_object_set_new(o, "correlation_id",
                                cr->has_correlation
                                        ? json_hex(cr->correlation_id, sizeof(cr->correlation_id))
                                        : json_null()) < 0)
                return log_oom();
        if (trailing > 0 &&
            json_object_set_new(o, "trailing_hex", json_hex(in->bytes + cr->consumed, trailing)) < 0)
                return log_oom();

        return tsctl_json_print(o);
}

static int json_invalid(const struct input *in, const struct tsf_cr *cr) {
        _cleanup_json_ json_t *o = json_answer(in, "invalid");

        if (!o || json_object_set_new(o, "error", json_string(tsf_cr_error_to_string(cr->error))) < 0 ||
            json_object_set_new(o, "reason", json_string(tsf_cr_error_describe(cr->error))) < 0 ||
            json_object_set_new(o, "offset", json_integer((json_int_t)cr->error_offset)) < 0)
                return log_oom();
        return tsctl_json_print(o);
}

static int json_incomplete(const struct input *in) {
        _cleanup_json_ json_t *o = json_answer(in, "incomplete");
        char reason[96];

        snprintf(reason, sizeof(reason), "truncated: %zu bytes, the PDU needs more", in->len);
        if (!o || json_object_set_new(o, "reason", json_string(reason)) < 0)
                return log_oom();
        return tsctl_json_print(o);
}

/* ---- the verb ---------------------------------------------------------- */

int verb_decode_cr(int argc, char *argv[]) {
        _cleanup_(input_done) struct input in = {};
        struct tsf_cr cr = {};
        enum tsf_cr_status status;
        int r;

        r = read_input(argc > 0 ? argv[0] : NULL, &in);
        if (r < 0)
                return r;
        r = decode_input(&in);
        if (r < 0)
                return r;

        status = tsf_cr_parse(in.bytes, in.len, &cr);
        switch (status) {
        case TSF_CR_COMPLETE:
                r = arg_json ? json_complete(&in, &cr) : print_complete(&in, &cr);
                return r < 0 ? r : TSCTL_EXIT_OK;
        case TSF_CR_NEED_MORE:
                r = arg_json ? json_incomplete(&in) : print_incomplete(&in);
                return r < 0 ? r : TSCTL_EXIT_NEGATIVE;
        case TSF_CR_INVALID:
                r = arg_json ? json_invalid(&in, &cr) : print_invalid(&in, &cr);
                return r < 0 ? r : TSCTL_EXIT_NEGATIVE;
        }
        return log_error_errno(-EPROTO, "tsf_cr_parse() returned unknown status %d.", (int)status);
}
