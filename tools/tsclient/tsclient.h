/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsclient internals: the logon sequence both modes share (logon.c), the
 * session after it (session.c) and the load generator (load.c,
 * loadstats.c). Not installed; tools/tsclient/ only.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tsfarm/clock.h"
#include "tsfarm/tsproto.h"
#include "conn.h"
#include "device.h"

/* Exit status; docs/tsclient.md has the table. */
enum tsc_outcome {
        TSC_OK = 0,
        TSC_LOCAL = 1,           /* usage, store, local trouble */
        TSC_CONNECT_FAILED = 2,  /* TCP, X.224, TLS, protocol error, a deadline */
        TSC_LICENSE_REFUSED = 3, /* LICENSE_RESPONSE error */
        TSC_WRONG_PASSWORD = 4,
        TSC_LOGON_REFUSED = 5, /* denied, no-license, error */
        TSC_REDIRECT_LOOP = 6,
        TSC_SCRIPT_FAILED = 7, /* an expectation was not met in time */
        TSC_LOST = 8,          /* the server ended the session or the connection broke after logon */
        _TSC_OUTCOME_MAX,
};
const char *tsc_outcome_to_string(enum tsc_outcome o);

#define TSC_MAX_REDIRECTS 3

/* Protocol deadlines (docs/protocol.md section 8, client side). */
#define TSC_CONNECT_TIMEOUT (10 * USEC_PER_SEC)
#define TSC_LICENSE_REQUEST_TIMEOUT (10 * USEC_PER_SEC)
#define TSC_LICENSE_RESPONSE_TIMEOUT (60 * USEC_PER_SEC)
#define TSC_LOGON_TIMEOUT (60 * USEC_PER_SEC)
#define TSC_KEEPALIVE_INTERVAL (30 * USEC_PER_SEC)
#define TSC_PEER_SILENT (90 * USEC_PER_SEC)

struct tsc_params {
        struct tsc_tls *tls;
        const char *host, *port; /* the farm's address */
        const char *tls_name;    /* NULL: host; TSC_TLS_NAME_ANY */
        struct tsc_store *store;
        const char *user;
        const char *password;
        const char *device_name;
        const char *term;
        uint16_t rows, cols;
        bool no_cookie; /* no mstshash line in the first request */
        bool direct;    /* follow a REDIRECT to its target, not the farm address */
        unsigned max_redirects;
        /* An automatic reconnect: log on with this instead of the password. */
        const uint8_t *reconnect_cookie;
        size_t reconnect_cookie_len;
        /* Scales every deadline down (load generator: --timeout); 0: the defaults. */
        usec_t timeout;
};

struct tsc_result {
        enum tsc_outcome outcome;
        int error; /* negative errno of a failure, 0 */
        char error_text[TSC_ERR_MAX];
        char server[TSC_NAME_MAX];     /* the CN of the node that answered last */
        char address[TSC_ADDRESS_MAX]; /* where it was reached */
        char farm_id[TSF_PROTO_FARM_ID_MAX + 1];
        /* License exchange (of the last connection): status 0 = not reached. */
        int license_status;
        uint16_t license_reason;
        int token_kind;     /* of the token held after the exchange: 0 none, enum tsf_lic_kind */
        bool token_stored;  /* a new token was written to the store */
        bool token_ignored; /* the stored token was malformed and not presented */
        /* Logon: status 0 = not reached. */
        int logon_status;
        uint16_t logon_reason;
        char reason_text[TSF_PROTO_REASON_MAX + 1];
        uint32_t session_id;
        bool reattached;
        unsigned redirects;
        uint8_t reconnect_cookie[TSF_PROTO_COOKIE_MAX];
        size_t reconnect_cookie_len;
        usec_t latency; /* first connect to LOGON_RESULT ok */
        /* How the session ended ("logoff", "disconnect", "drop", ...); NULL before. */
        const char *end;
};

/* The whole sequence of docs/protocol.md section 1 up to LOGON_RESULT,
 * redirects included. On TSC_OK *ret_conn is in the session phase; on
 * anything else it is NULL and res says why. Never logs above debug. */
enum tsc_outcome tsc_logon(const struct tsc_params *p, struct tsc_result *res, struct tsc_conn **ret_conn);

/* The one-line JSON summary of a result (malloc'd; NULL on OOM). */
char *tsc_result_to_json(const struct tsc_result *res);

/* ---- session.c ------------------------------------------------------------ */

enum tsc_end {
        TSC_END_DISCONNECT = 0, /* DISCONNECT user-request: the session stays */
        TSC_END_DROP,           /* close the socket without a word: the session stays */
        TSC_END_LOGOFF,         /* LOGOFF, wait for the server's */
};

struct tsc_session_opts {
        const char *script; /* a script file, "-" for stdin, NULL */
        enum tsc_end end;   /* what to do when the script or input ends */
        bool quiet;         /* do not copy the terminal's output to stdout */
        usec_t expect_timeout;
};

/* Runs the attached session: interactive (stdin a tty), a script, or
 * stdin's bytes as input. Consumes conn. Fills res->end. */
enum tsc_outcome tsc_session_run(struct tsc_conn *conn, const struct tsc_session_opts *o,
                                 struct tsc_result *res);

/* Ends a session the way `end` says (used by the load generator too). */
int tsc_session_end(struct tsc_conn *conn, enum tsc_end end, usec_t deadline);

/* ---- script.c ------------------------------------------------------------- */

enum tsc_script_op {
        TSC_SCRIPT_SEND = 1, /* bytes as given (escapes decoded) */
        TSC_SCRIPT_EXPECT,   /* wait for output containing the text */
        TSC_SCRIPT_TIMEOUT,  /* set the expect deadline */
        TSC_SCRIPT_SLEEP,
        TSC_SCRIPT_WINDOW, /* rows, cols */
        TSC_SCRIPT_END,    /* disconnect / drop / logoff */
};

struct tsc_script_step {
        enum tsc_script_op op;
        char *text; /* SEND, EXPECT: decoded bytes, NUL-terminated */
        size_t len;
        usec_t usec;         /* TIMEOUT, SLEEP */
        uint16_t rows, cols; /* WINDOW */
        enum tsc_end end;    /* END */
        unsigned line;
};

struct tsc_script {
        struct tsc_script_step *steps;
        size_t n_steps;
};

/* Parses a script (docs/tsclient.md "Scripts"). -EINVAL with *bad_line set
 * for a line it does not understand. */
int tsc_script_parse(const char *text, struct tsc_script *ret, unsigned *bad_line);
void tsc_script_done(struct tsc_script *s);
