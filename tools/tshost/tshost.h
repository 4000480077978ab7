/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tshost: the reference RDP-style terminal server (docs/tshost.md). One
 * process, one sd-event loop:
 *
 *   main.c     options, the listener, signals, sd_notify
 *   conn.c     one client connection: X.224, TLS, the phases and deadlines
 *              of docs/protocol.md section 8, licensing and logon flow
 *   auth.c     PAM authentication + account management in a child process
 *              (pam_unix sleeps on failure; the loop must not)
 *   session.c  persistent sessions: a login shell on a pty whose master
 *              tshost keeps, with a scrollback buffer, across disconnects
 *   agent.c    the host agent's local API (licensing, lookup, reports)
 *   buffer.c   scrollback ring and bounded byte queue (pure, unit-tested)
 *
 * Ownership: the server owns connections, sessions and auth jobs (lists).
 * A connection points at its session and back; either side going away
 * clears the other's pointer. Connections are freed only by conn_kick()
 * at the end of a top-level event callback, never inside a handler.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <openssl/ssl.h>
#include <systemd/sd-event.h>

#include "tools/tshost/buffer.h"
#include "tsfarm/api.h"
#include "tsfarm/clock.h"
#include "tsfarm/tsproto.h"
#include "tsfarm/x224.h"

#define TSHOST_DEFAULT_LISTEN "0.0.0.0:3389"
#define TSHOST_DEFAULT_AGENT_SOCKET "/run/tsfarm/agent.sock"
#define TSHOST_DEFAULT_PAM_SERVICE "tshost"
#define TSHOST_DEFAULT_FARM_ID "tsfarm"
#define TSHOST_DEFAULT_PRODUCT_VERSION "2025"
#define TSHOST_DEFAULT_TERM "xterm-256color"

#define TSHOST_LOGON_ATTEMPTS 3
/* Output waiting for a client: above SOFT we stop reading the pty; HARD is
 * never passed (control frames and one scrollback replay fit). */
#define TSHOST_OUT_SOFT (256u * 1024)
#define TSHOST_OUT_HARD (1024u * 1024)
/* Keyboard input waiting for the pty: above SOFT we stop reading TLS. */
#define TSHOST_IN_SOFT (64u * 1024)
#define TSHOST_IN_HARD (256u * 1024)
#define TSHOST_SCROLLBACK_DEFAULT (64u * 1024)
#define TSHOST_CLOSE_TIMEOUT (5 * USEC_PER_SEC)
#define TSHOST_USER_MAX TSF_PROTO_USER_MAX

struct tshost_config {
        uint32_t listen_addr_be;
        uint16_t listen_port;
        const char *cert_file, *key_file;
        const char *agent_socket; /* NULL: --no-agent */
        bool licensing;
        const char *pam_service;
        const char *node_name;
        const char *farm_id, *product_version;
        usec_t handshake_timeout; /* accept -> CR, CC -> TLS up */
        usec_t license_timeout;   /* LICENSE_REQUEST -> CLIENT_LICENSE_INFO */
        usec_t logon_timeout;     /* TLS up -> LOGON_RESULT ok */
        usec_t keepalive;         /* send a KEEPALIVE after this much silence from us */
        usec_t peer_timeout;      /* peer silent this long: gone */
        unsigned max_connections;
        size_t scrollback;
};

struct conn;
struct session;
struct auth_job;

struct server {
        sd_event *event;
        const struct tshost_config *config;
        SSL_CTX *ssl_ctx;
        int listen_fd;
        sd_event_source *listen_source;
        struct tsf_api_client *agent; /* NULL with --no-agent */
        struct conn *conns;
        unsigned n_conns;
        struct session *sessions;
        unsigned n_sessions;
        uint32_t next_session_id;
        struct auth_job *auth_jobs;
        /* Session reports, sent one at a time in the order they were made
         * (agent.c): concurrent calls could reach the agent in any order. */
        struct report *reports, *reports_tail, *report_sending;
        bool shutting_down;
};

/* ---- connections (conn.c) ---- */

int conn_accept(struct server *srv, int fd, const char *peer_ip, uint16_t peer_port);
/* Flushes, re-arms, and frees the connection when it is done. The caller
 * must not touch c afterwards. Call at the end of every top-level callback
 * that worked on c. */
void conn_kick(struct conn *c);
void conn_free(struct conn *c);
/* The session ended (the shell exited, or it was logged off elsewhere):
 * LOGOFF to the client, then close. */
void conn_session_ended(struct conn *c);
/* Another connection took the session over: DISCONNECT replaced, close. */
void conn_session_replaced(struct conn *c);
/* Terminal output for the client; false when the client is backlogged
 * (stop reading the pty until conn_output_room() says so). */
bool conn_send_terminal(struct conn *c, const uint8_t *data, size_t len);
bool conn_output_room(const struct conn *c);
/* The session's keyboard queue drained: read the client again. */
void conn_input_drained(struct conn *c);
/* Results from auth.c, session.c and agent.c. */
struct auth_result;
void conn_auth_done(struct conn *c, const struct auth_result *res);
void conn_session_started(struct conn *c, struct session *s, int error);
void conn_obtain_done(struct conn *c, int r, long status, json_t *reply, const char *error);
void conn_validate_done(struct conn *c, int r, long status, json_t *reply, const char *error);
void conn_lookup_done(struct conn *c, int r, long status, json_t *reply, const char *error);
/* Shutdown: DISCONNECT shutdown to everyone. */
void conn_shutdown_all(struct server *srv);

/* ---- PAM authentication (auth.c) ---- */

enum auth_verdict {
        AUTH_OK,
        AUTH_WRONG_PASSWORD, /* also an unknown user */
        AUTH_DENIED,         /* pam_acct_mgmt refused (expired, locked, ...) */
        AUTH_ERROR,          /* PAM itself failed */
};

struct auth_result {
        enum auth_verdict verdict;
        int pam_code;
        char pam_error[128];
        char user[TSHOST_USER_MAX + 1]; /* PAM_USER after authentication */
};

int auth_start(struct server *srv, struct conn *c, const char *user, const char *password, const char *rhost,
               struct auth_job **ret);
/* The connection went away: the job's result will be dropped. */
void auth_job_abandon(struct auth_job *j);
void auth_jobs_free(struct server *srv);

/* ---- sessions (session.c) ---- */

struct session_params {
        const char *user;       /* the PAM user */
        const char *logon_name; /* as typed */
        const char *term;
        uint16_t rows, cols;
        const char *device;
        const char *client_address;
        const uint8_t *hwid;
        size_t hwid_len;
};

struct session *session_find(struct server *srv, const char *user);
/* Starts a login shell; conn_session_started() runs when it runs (or failed). */
int session_start(struct server *srv, struct conn *c, const struct session_params *p, struct session **ret);
/* Attaches c (the caller answered LOGON_RESULT ok): replays the
 * scrollback and starts forwarding. A previous connection is replaced. */
void session_attach(struct session *s, struct conn *c, const struct session_params *p, bool reattached);
/* The connection went away: the session keeps running, disconnected. */
void session_detach(struct session *s);
/* c goes away: whatever s holds of it (attached, or waiting for the start). */
void session_forget_conn(struct session *s, struct conn *c);
/* LOGOFF from the client: hang up the shell, report logoff. */
void session_logoff(struct session *s, const char *why);
int session_input(struct session *s, const uint8_t *data, size_t len);
bool session_input_full(const struct session *s);
int session_resize(struct session *s, uint16_t rows, uint16_t cols);
/* The client has room for output again. */
void session_output_resume(struct session *s);
uint32_t session_id(const struct session *s);
pid_t session_shell_pid(const struct session *s);
const char *session_user(const struct session *s);
const char *session_logon_name(const struct session *s);
/* Reconnect cookies: one use, bound to the session and the hardware id. */
void session_new_cookie(struct session *s, uint8_t *buf, size_t len);
/* The live session of `user` (PAM or logon name) whose cookie this is,
 * bound to this hardware id; the cookie is used up. NULL: none. */
struct session *session_claim_cookie(struct server *srv, const char *user, const uint8_t *cookie, size_t len,
                                     const uint8_t *hwid, size_t hwid_len);
void sessions_hangup_all(struct server *srv);
void sessions_free(struct server *srv);

/* ---- the host agent (agent.c) ---- */

typedef void (*agent_conn_done_t)(struct conn *c, int r, long status, json_t *reply, const char *error);
struct agent_pending;
/* A call for a connection; `done` gets c back (clear your *ret first
 * thing: the pending call is gone then). agent_cancel() when c goes
 * first; its callback then never runs. */
int agent_call(struct server *srv, struct conn *c, const char *method, const char *path, json_t *body,
               usec_t timeout, agent_conn_done_t done, struct agent_pending **ret);
void agent_cancel(struct agent_pending *p);
/* Fire-and-forget session report (POST /v1/sessions/event), queued
 * behind the reports made before it. */
void agent_report(struct server *srv, const char *event, const char *user, uint32_t session_id,
                  const char *device, const char *client_address);
/* Frees the reports not sent (after the agent client is gone). */
void agent_reports_free(struct server *srv);

/* In a forked child: default signals, fds above 2 closed but keep_fd. */
void tshost_child_reset(int keep_fd);

/* Copies text into dst (size bytes) cut at a UTF-8 boundary, control
 * characters replaced by '?': for reason texts taken from elsewhere. */
void tshost_text_copy(char *dst, size_t size, const char *src);
