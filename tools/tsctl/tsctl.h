/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsctl internals: the verb table's types, the verbs' entry points and the
 * output helpers they share. Not installed; tools/tsctl/ only.
 *
 * Adding a verb: write `int verb_foo(int argc, char *argv[])` (argv holds
 * only the positional arguments, options are already parsed) in its own
 * file, and its entry in the table in tsctl.c: name, arguments, help,
 * examples. The table is the whole command-line surface in one place; the
 * verb files hold behaviour. Verb-specific options are a `struct
 * tsctl_option` array in the table plus a `parse_option` callback in the
 * verb's file. A verb group (`tsctl host conns`) is an entry whose `sub`
 * points at another table.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "tsfarm/cleanup.h"

/* jansson (>= 2.11, under GCC and clang) already ships json_decrefp()
 * for its json_auto_t; defining our own with DEFINE_TRIVIAL_CLEANUP_FUNC
 * would clash with it. The attribute keeps our _cleanup_*_ spelling. */
#define _cleanup_json_ _cleanup_(json_decrefp)

/* Exit status, the diff/cmp convention: 0 yes / success, 1 the answer is
 * negative (e.g. the PDU is invalid), 2 the question could not be answered
 * (usage error, unreadable input, a failing system call). */
enum {
        TSCTL_EXIT_OK = 0,
        TSCTL_EXIT_NEGATIVE = 1,
        TSCTL_EXIT_TROUBLE = 2,
};

/* max_args for "any number". */
#define TSCTL_ARGS_ANY ((unsigned)-1)

/* A verb-specific long option. `val` is handed to the verb's parse_option
 * (use values >= 0x100 so they never clash with short options). */
struct tsctl_option {
        const char *name; /* without the leading "--" */
        const char *arg;  /* argument name shown in help, NULL: takes none */
        int val;
        const char *help;
};

struct tsctl_verb {
        const char *name;
        const char *synopsis; /* arguments after the name, for usage lines */
        unsigned min_args, max_args;
        /* Returns an exit status (>= 0), or a negative errno that was
         * already logged (exit TSCTL_EXIT_TROUBLE). NULL for a pure group. */
        int (*fn)(int argc, char *argv[]);
        const struct tsctl_option *options; /* NULL-name terminated, or NULL */
        /* Returns 0, or a negative errno after logging the problem. */
        int (*parse_option)(int val, const char *arg);
        const struct tsctl_verb *sub; /* sub-verbs, NULL-name terminated */
        const char *summary;          /* one line for the command list */
        const char *help;             /* paragraphs shown by `tsctl VERB --help` */
        const char *examples;         /* required: one example per line */
};

/* Global options, valid before or after the verb. */
extern bool arg_json;

/* ---- verbs ------------------------------------------------------------- */

/* decode_cr.c */
enum {
        DECODE_CR_OPT_HEX = 0x100,
        DECODE_CR_OPT_RAW,
};
int decode_cr_parse_option(int val, const char *arg);
int verb_decode_cr(int argc, char *argv[]);

/* host.c: the host role's pinned BPF maps. */
enum {
        HOST_OPT_PIN_ROOT = 0x200,
        HOST_OPT_STATE,
        HOST_OPT_SESSION_ID,
};
/* --pin-root (global, or after any host command); NULL: $TSFARM_PIN_ROOT,
 * else TSF_PIN_ROOT. */
extern const char *arg_pin_root;
int host_parse_option(int val, const char *arg);
int verb_host_stats(int argc, char *argv[]);
int verb_host_nodes(int argc, char *argv[]);
int verb_host_sessions(int argc, char *argv[]);
int verb_host_sessions_set(int argc, char *argv[]);
int verb_host_sessions_del(int argc, char *argv[]);
int verb_host_affinity(int argc, char *argv[]);
int verb_host_conns(int argc, char *argv[]);

/* pki.c: a farm CA and node certificates (lib/pki.c). */
enum {
        PKI_OPT_DIR = 0x300,
        PKI_OPT_NAME,
        PKI_OPT_DAYS,
        PKI_OPT_FORCE,
        PKI_OPT_IP,
        PKI_OPT_DNS,
};
int pki_parse_option(int val, const char *arg);
int verb_pki_init(int argc, char *argv[]);
int verb_pki_issue(int argc, char *argv[]);

/* directory.c: the directory role's API over its UNIX socket. */
enum {
        DIRECTORY_OPT_SOCKET = 0x400,
        DIRECTORY_OPT_UNTIL_RESTART,
};
int directory_parse_option(int val, const char *arg);
int verb_nodes(int argc, char *argv[]);
int verb_sessions(int argc, char *argv[]);
int verb_drain(int argc, char *argv[]);
int verb_undrain(int argc, char *argv[]);

/* license.c: the licensing role's API over its UNIX socket, and offline
 * token verification. */
enum {
        LICENSE_OPT_SOCKET = 0x500,
        LICENSE_OPT_VERSION,
        LICENSE_OPT_COUNT,
        LICENSE_OPT_STATE,
        LICENSE_OPT_DEVICE,
        LICENSE_OPT_PACK,
        LICENSE_OPT_HARDWARE_ID,
        LICENSE_OPT_TRUST,
        LICENSE_OPT_CSV,
};
int license_parse_option(int val, const char *arg);
int verb_license_install_pack(int argc, char *argv[]);
int verb_license_packs(int argc, char *argv[]);
int verb_license_issued(int argc, char *argv[]);
int verb_license_report(int argc, char *argv[]);
int verb_license_revoke(int argc, char *argv[]);
int verb_license_verify(int argc, char *argv[]);

/* ---- output helpers (tsctl.c) ------------------------------------------ */

/* A two-column "key  value" table for human output. Rows are kept until
 * printed so the key column fits the longest key. Running out of memory is
 * remembered and reported by tsctl_table_print(), like ferror() for a
 * FILE, so building a table needs no check per row. */
struct tsctl_table;
struct tsctl_table *tsctl_table_new(void);
void tsctl_table_free(struct tsctl_table *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tsctl_table *, tsctl_table_free);
void tsctl_table_add(struct tsctl_table *t, const char *key, const char *format, ...)
        __attribute__((format(printf, 3, 4)));
/* Adds a row whose value is bytes from the wire, escaped (tsctl_escape). */
void tsctl_table_add_text(struct tsctl_table *t, const char *key, const char *s, size_t len);
/* Returns 0, or -ENOMEM (logged, nothing printed) if a row was lost. */
int tsctl_table_print(const struct tsctl_table *t, FILE *f);

/* Writes bytes for a terminal: valid UTF-8 text as it is, control
 * characters, DEL, C1 controls and invalid UTF-8 as \xNN, so nothing from
 * the wire can move the cursor or change colours. Returns a new string or
 * NULL (out of memory). */
char *tsctl_escape(const char *s, size_t len);

/* tsctl_escape() fails only when out of memory; a cell then reads "?"
 * rather than failing the whole listing. */
static inline const char *tsctl_strna(const char *s) {
        return s ? s : "?";
}

/* Wall-clock microseconds (a JSON integer) as "2026-01-31 12:00:00 UTC";
 * 0 (never) as "-". UTC because the farm's nodes may sit in different
 * time zones. */
void tsctl_format_usec(json_t *v, char *buf, size_t size);

/* A string field for a terminal: escaped, since users, devices and node
 * names come from the wire; "-" when missing or empty. NULL: out of memory. */
char *tsctl_text_field(json_t *o, const char *key);

/* An agent role tsctl talks to over its UNIX socket, for messages. */
struct tsctl_role {
        const char *what;   /* "the directory" */
        const char *role;   /* "directory": the role to run */
        const char *option; /* "--directory-socket": how to point elsewhere */
};

/* The socket: the option's value, else $env, else the default. */
const char *tsctl_socket_path(const char *arg, const char *env, const char *fallback);

/* One call to a role. Returns 0 with the 2xx JSON object in *ret_reply,
 * or TSCTL_EXIT_NEGATIVE after printing why: the role's refusal (its
 * reason, escaped), an unusable answer, or that it could not be reached
 * (naming the socket, since a wrong path is the usual cause); or a
 * negative errno (logged) when tsctl itself failed. */
int tsctl_role_call(const struct tsctl_role *role, const char *socket, const char *method, const char *path,
                    json_t *in, json_t **ret_reply);

/* Whether s[0..len) is valid UTF-8 (what jansson accepts in a string). */
bool tsctl_utf8_valid(const char *s, size_t len);

/* Prints a hexdump excerpt of buf[0..len) around byte `mark`: the 16-byte
 * row holding it, `context` rows either side, a caret line under the
 * marked byte. Offsets are absolute. Every line starts with `indent`. */
void tsctl_hexdump_excerpt(FILE *f, const uint8_t *buf, size_t len, size_t mark, unsigned context,
                           const char *indent);

/* A table with a header row, every column as wide as its widest cell,
 * two spaces between columns, numbers right-aligned, no trailing blanks
 * (host.c). Like tsctl_table, running out of memory is remembered and
 * reported by columns_print(), so adding cells needs no checks. */
struct column {
        const char *header;
        bool right;
};

struct columns {
        const struct column *cols;
        size_t ncols;
        char **cells;
        size_t n, allocated;
        bool oom;
};

void columns_done(struct columns *t);
/* Adds the next cell, row by row. */
void columns_add(struct columns *t, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Returns 0, or -ENOMEM (logged, nothing printed) if a cell was lost. */
int columns_print(const struct columns *t, FILE *f);

/* Prints a JSON value to stdout, indented, with a final newline. Returns 0
 * or a negative errno (logged). */
int tsctl_json_print(json_t *v);

/* license_diagnose.c: the host role's licensing client, over the agent's
 * local socket. */
enum {
        LICDIAG_OPT_SOCKET = 0x600,
};
int licdiag_parse_option(int val, const char *arg);
int verb_license_diagnose(int argc, char *argv[]);
