/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One client connection, docs/protocol.md from the server's side:
 *
 *   X224     read the Connection Request (lib/x224), answer the Confirm
 *   TLS      SSL_accept on the same socket
 *   OPEN     TSRP frames through lib/tsproto's reader, by phase:
 *              license-info      LICENSE_REQUEST sent, CLIENT_LICENSE_INFO due
 *              license-response  the agent decides (POST /v1/license/obtain)
 *              logon             CLIENT_INFO -> PAM (auth.c) -> license
 *                                validation -> directory lookup -> REDIRECT,
 *                                or a session (session.c) -> LOGON_RESULT
 *              session           TERMINAL_DATA, WINDOW_SIZE, LOGOFF
 *   CLOSING  flush what is queued, then TLS close_notify and FIN
 *   LINGER   read and drop until the peer closes (so our last frame is not
 *            lost to a reset), bounded
 *
 * Handlers never free the connection: they move it to CLOSING (or mark it
 * `fatal` when the socket is unusable) and conn_kick() at the end of the
 * top-level callback does the rest.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "tools/tshost/tshost.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/hex.h"
#include "tsfarm/list.h"
#include "tsfarm/log.h"

/* The license server round trip may take the agent up to 60 s. */
#define OBTAIN_TIMEOUT (65 * USEC_PER_SEC)
#define VALIDATE_TIMEOUT (30 * USEC_PER_SEC)
#define LOOKUP_TIMEOUT (5 * USEC_PER_SEC)
#define COOKIE_SIZE 32

enum conn_state {
        CONN_X224,
        CONN_TLS,
        CONN_OPEN,
        CONN_CLOSING,
        CONN_LINGER,
};

enum logon_step {
        STEP_NONE,
        STEP_AUTH,
        STEP_VALIDATE,
        STEP_LOOKUP,
        STEP_STARTING,
};

struct conn {
        struct server *srv;
        struct conn *prev, *next;
        int fd;
        sd_event_source *io, *timer;
        char peer[INET6_ADDRSTRLEN + 8];
        char peer_ip[INET6_ADDRSTRLEN];
        enum conn_state state;
        bool fatal;     /* the socket is unusable: free at once */
        bool in_paused; /* the session's keyboard queue is full */
        usec_t t_accept, t_cc, t_tls, t_license_request, t_closing, last_recv, last_send;
        uint64_t keepalive_echo;

        /* X.224 */
        uint8_t crbuf[TSF_FIRST_PDU_MAX];
        size_t crlen;
        char cookie_user[TSF_CR_COOKIE_MAX + 1]; /* from Cookie: mstshash= */
        bool routed;                             /* came with Cookie: msts= */

        SSL *ssl;
        enum tsf_proto_phase phase;
        struct tsf_proto_reader reader;
        struct bytequeue out;

        /* license exchange */
        uint8_t nonce[TSF_PROTO_NONCE_SIZE];
        uint8_t hwid[TSF_PROTO_HWID_MAX];
        size_t hwid_len;
        char device[TSF_PROTO_DEVICE_NAME_MAX + 1];
        char token[TSF_PROTO_TOKEN_MAX + 1]; /* what the device holds now */
        bool token_temporary;
        bool presented_expired;
        bool license_retried;
        uint16_t license_retry_reason;
        struct agent_pending *call;

        /* logon */
        enum logon_step step;
        unsigned attempts;
        struct auth_job *auth;
        char logon_name[TSF_PROTO_USER_MAX + 1];
        char user[TSHOST_USER_MAX + 1];
        uint16_t rows, cols;
        char term[TSF_PROTO_TERM_MAX + 1];
        struct session *session;  /* attached */
        struct session *starting; /* being started for us */
};

static void conn_update(struct conn *c);
static void conn_read(struct conn *c);

/* ---- sending ---------------------------------------------------------------- */

static void conn_send(struct conn *c, const struct tsf_pdu *pdu) {
        uint8_t buf[TSF_PROTO_FRAME_MAX];
        ssize_t n;
        int r;

        if (c->state != CONN_OPEN || c->fatal)
                return;
        n = tsf_pdu_encode(pdu, buf, sizeof(buf));
        if (n < 0) {
                /* A bug of ours (a field the protocol refuses). */
                log_error_errno((int)n, "Connection %s: cannot encode %s: %m; closing.", c->peer,
                                tsf_pdu_type_to_string(pdu->type));
                c->fatal = true;
                return;
        }
        r = bytequeue_append(&c->out, buf, (size_t)n);
        explicit_bzero(buf, (size_t)n);
        if (r < 0) {
                log_notice(
                        "Connection %s: the client does not read what is sent (%zu bytes queued); closing.",
                        c->peer, bytequeue_len(&c->out));
                c->fatal = true;
                return;
        }
        c->last_send = tsf_now_monotonic();
}

static void conn_close(struct conn *c) {
        if (c->state >= CONN_CLOSING || c->fatal)
                return;
        if (c->state != CONN_OPEN) {
                c->fatal = true;
                return;
        }
        if (c->session) {
                struct session *s = TAKE_PTR(c->session);

                session_forget_conn(s, c);
        }
        c->state = CONN_CLOSING;
        c->t_closing = tsf_now_monotonic();
}

static void send_reason(struct conn *c, enum tsf_pdu_type type, uint16_t reason, const char *text) {
        struct tsf_pdu pdu;

        tsf_pdu_init(&pdu, type);
        pdu.error.reason = reason;
        tshost_text_copy(pdu.error.reason_text, sizeof(pdu.error.reason_text), text ?: "");
        conn_send(c, &pdu);
}

/* ERROR, then close (docs/protocol.md 5.9). */
static void conn_error(struct conn *c, uint16_t reason, const char *fmt, ...) _printf_(3, 4);
static void conn_error(struct conn *c, uint16_t reason, const char *fmt, ...) {
        char text[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        log_notice("Connection %s: protocol error %s: %s; closing.", c->peer,
                   tsf_proto_reason_to_string(reason) ?: "?", text);
        send_reason(c, TSF_PDU_ERROR, reason, text);
        conn_close(c);
}

static void conn_disconnect(struct conn *c, uint16_t reason, const char *text) {
        log_info("Connection %s: disconnecting, %s: %s.", c->peer, tsf_proto_reason_to_string(reason) ?: "?",
                 text);
        send_reason(c, TSF_PDU_DISCONNECT, reason, text);
        conn_close(c);
}

static void send_logon_result(struct conn *c, enum tsf_logon_status status, uint16_t reason,
                              const char *text) {
        struct tsf_pdu pdu;

        tsf_pdu_init(&pdu, TSF_PDU_LOGON_RESULT);
        pdu.logon_result.status = status;
        pdu.logon_result.reason = reason;
        tshost_text_copy(pdu.logon_result.reason_text, sizeof(pdu.logon_result.reason_text), text ?: "");
        conn_send(c, &pdu);
}

/* LOGON_RESULT other than ok / wrong-password: the server closes. */
static void logon_fail(struct conn *c, enum tsf_logon_status status, uint16_t reason, const char *text) {
        log_notice("Connection %s: logon of %s refused, %s (%s): %s.", c->peer, c->logon_name,
                   tsf_logon_status_to_string(status), tsf_proto_reason_to_string(reason) ?: "?", text);
        send_logon_result(c, status, reason, text);
        c->step = STEP_NONE;
        conn_close(c);
}

bool conn_send_terminal(struct conn *c, const uint8_t *data, size_t len) {
        struct tsf_pdu pdu;

        if (c->state != CONN_OPEN || c->phase != TSF_PHASE_SESSION || c->fatal)
                return true; /* nobody to send to: dropped, not a backlog */
        while (len > 0) {
                size_t n = MIN(len, (size_t)TSF_PROTO_DATA_MAX);

                tsf_pdu_init(&pdu, TSF_PDU_TERMINAL_DATA);
                pdu.terminal_data.data = data;
                pdu.terminal_data.len = n;
                conn_send(c, &pdu);
                data += n;
                len -= n;
        }
        return conn_output_room(c);
}

bool conn_output_room(const struct conn *c) {
        return bytequeue_len(&c->out) < TSHOST_OUT_SOFT;
}

/* ---- licensing (docs/protocol.md 9.1) ------------------------------------------ */

static void license_respond(struct conn *c, enum tsf_license_status status, uint16_t reason,
                            const char *text, const char *token) {
        struct tsf_pdu pdu;

        tsf_pdu_init(&pdu, TSF_PDU_LICENSE_RESPONSE);
        pdu.license_response.status = status;
        pdu.license_response.reason = reason;
        tshost_text_copy(pdu.license_response.reason_text, sizeof(pdu.license_response.reason_text),
                         text ?: "");
        if (token) {
                if (strlen(token) > TSF_PROTO_TOKEN_MAX) {
                        conn_error(c, TSF_REASON_INTERNAL, "the license token does not fit the protocol");
                        return;
                }
                snprintf(pdu.license_response.token, sizeof(pdu.license_response.token), "%s", token);
        }
        conn_send(c, &pdu);
        if (status == TSF_LICENSE_ERROR) {
                log_notice("Connection %s: device %s refused a license, %s: %s.", c->peer, c->device,
                           tsf_proto_reason_to_string(reason) ?: "?", text);
                conn_close(c);
                return;
        }
        log_info("Connection %s: device %s licensed: %s%s%s.", c->peer, c->device,
                 tsf_license_status_to_string(status), reason ? ", " : "",
                 reason ? tsf_proto_reason_to_string(reason) ?: "?" : "");
        if (token)
                snprintf(c->token, sizeof(c->token), "%s", token);
        c->phase = TSF_PHASE_LOGON;
}

static uint16_t verdict_reason(const char *code) {
        if (streq_ptr(code, "other-device"))
                return TSF_REASON_TOKEN_OTHER_DEVICE;
        if (streq_ptr(code, "unsupported-version"))
                return TSF_REASON_TOKEN_VERSION;
        if (streq_ptr(code, "malformed") || streq_ptr(code, "unknown-issuer") ||
            streq_ptr(code, "bad-signature"))
                return TSF_REASON_TOKEN_INVALID;
        return 0;
}

static void license_obtain(struct conn *c) {
        _cleanup_(json_decrefp) json_t *body = NULL;
        char hex[2 * TSF_PROTO_HWID_MAX + 1];
        int r;

        tsf_hex_encode(c->hwid, c->hwid_len, hex);
        body = json_pack("{s:s, s:s}", "hardware_id", hex, "device_name", c->device);
        if (!body ||
            (c->cookie_user[0] && json_object_set_new(body, "user_name", json_string(c->cookie_user)) < 0) ||
            (c->token[0] && json_object_set_new(body, "token", json_string(c->token)) < 0)) {
                conn_error(c, TSF_REASON_INTERNAL, "out of memory");
                return;
        }
        r = agent_call(c->srv, c, "POST", "/v1/license/obtain", body, OBTAIN_TIMEOUT, conn_obtain_done,
                       &c->call);
        if (r < 0) {
                log_warning_errno(r, "Connection %s: cannot ask the host agent for a license: %m", c->peer);
                license_respond(c, TSF_LICENSE_ERROR, TSF_REASON_LICENSE_SERVER_ERROR,
                                "the terminal server's licensing component is unavailable", NULL);
        }
}

void conn_obtain_done(struct conn *c, int r, long status, json_t *reply, const char *error) {
        const char *decision = json_string_value(json_object_get(reply, "decision"));
        const char *license = json_string_value(json_object_get(reply, "license"));
        const char *code = json_string_value(json_object_get(reply, "reason_code"));
        const char *reason = json_string_value(json_object_get(reply, "reason")) ?: "";
        const char *token = json_string_value(json_object_get(reply, "token"));
        const char *kind = json_string_value(json_object_get(reply, "kind"));
        uint16_t why;

        c->call = NULL;
        c->presented_expired =
                streq_ptr(json_string_value(json_object_get(json_object_get(reply, "presented"), "verdict")),
                          "expired");
        if (r < 0 || status != 200) {
                if (r < 0)
                        log_warning(
                                "Connection %s: the host agent (%s) did not answer the license request: %s",
                                c->peer, c->srv->config->agent_socket, error);
                else
                        log_warning("Connection %s: the host agent refused the license request: %ld %s: %s",
                                    c->peer, status,
                                    json_string_value(json_object_get(reply, "error")) ?: "?", reason);
                license_respond(c, TSF_LICENSE_ERROR, TSF_REASON_LICENSE_SERVER_ERROR,
                                "the terminal server's licensing component is unavailable", NULL);
                return;
        }
        if (!streq_ptr(decision, "admit")) {
                why = verdict_reason(code);
                if (why && c->token[0] && !c->license_retried) {
                        /* docs/protocol.md 9.2: a token that is not this
                         * device's (or not genuine) is not honoured; the
                         * device gets a license of its own instead. */
                        log_info("Connection %s: device %s presented a token that is %s; asking for a new "
                                 "one.",
                                 c->peer, c->device, code);
                        c->license_retried = true;
                        c->license_retry_reason = why;
                        c->token[0] = '\0';
                        license_obtain(c);
                        return;
                }
                if (!why)
                        why = streq_ptr(code, "grace-expired") ||
                                              streq_ptr(code, "license-server-unreachable")
                                      ? TSF_REASON_NO_LICENSE_SERVER
                                      : TSF_REASON_LICENSE_SERVER_ERROR;
                license_respond(c, TSF_LICENSE_ERROR, why, reason, NULL);
                return;
        }
        c->token_temporary = streq_ptr(kind, "temporary");
        if (streq_ptr(license, "new-license") && token) {
                why = c->license_retry_reason ?: c->presented_expired ? TSF_REASON_TOKEN_EXPIRED : 0;
                license_respond(c, TSF_LICENSE_NEW, why, reason, token);
        } else if (streq_ptr(license, "upgrade") && token)
                license_respond(c, TSF_LICENSE_UPGRADE,
                                streq_ptr(code, "cal-renewed") ? TSF_REASON_RENEWED : 0, reason, token);
        else if (streq_ptr(license, "grace"))
                license_respond(c, TSF_LICENSE_VALID, TSF_REASON_GRACE_PERIOD, reason, NULL);
        else
                license_respond(c, TSF_LICENSE_VALID,
                                streq_ptr(code, "no-inventory") ? TSF_REASON_NO_INVENTORY : 0, reason, NULL);
}

static void on_license_info(struct conn *c, const struct tsf_pdu_client_license_info *info) {
        if (CRYPTO_memcmp(info->nonce, c->nonce, sizeof(c->nonce)) != 0) {
                conn_error(c, TSF_REASON_NONCE_MISMATCH,
                           "the license info does not echo this connection's nonce");
                return;
        }
        memcpy(c->hwid, info->hardware_id, info->hardware_id_len);
        c->hwid_len = info->hardware_id_len;
        snprintf(c->device, sizeof(c->device), "%s", info->device_name);
        snprintf(c->token, sizeof(c->token), "%s", info->token);
        c->phase = TSF_PHASE_LICENSE_RESPONSE;
        if (!c->srv->config->licensing) {
                license_respond(c, TSF_LICENSE_VALID, 0, "", NULL);
                return;
        }
        license_obtain(c);
}

/* ---- logon -------------------------------------------------------------------- */

static void session_params_of(struct conn *c, struct session_params *p) {
        *p = (struct session_params){
                .user = c->user,
                .logon_name = c->logon_name,
                .term = c->term,
                .rows = c->rows,
                .cols = c->cols,
                .device = c->device,
                .client_address = c->peer_ip,
                .hwid = c->hwid,
                .hwid_len = c->hwid_len,
        };
}

static void logon_attach(struct conn *c, struct session *s, bool reattached) {
        struct session_params p;
        struct tsf_pdu pdu;

        c->step = STEP_NONE;
        tsf_pdu_init(&pdu, TSF_PDU_LOGON_RESULT);
        pdu.logon_result.status = TSF_LOGON_OK;
        pdu.logon_result.reattached = reattached;
        pdu.logon_result.session_id = session_id(s);
        session_new_cookie(s, pdu.logon_result.reconnect_cookie, COOKIE_SIZE);
        pdu.logon_result.reconnect_cookie_len = COOKIE_SIZE;
        conn_send(c, &pdu);
        tsf_pdu_wipe(&pdu);
        c->phase = TSF_PHASE_SESSION;
        c->session = s;
        log_info("Connection %s: %s logged on from %s, session %" PRIu32 " %s (shell pid %d).", c->peer,
                 c->user, c->device, session_id(s), reattached ? "reattached" : "started",
                 (int)session_shell_pid(s));
        session_params_of(c, &p);
        session_attach(s, c, &p, reattached);
}

static void logon_new_session(struct conn *c) {
        struct session_params p;
        int r;

        c->step = STEP_STARTING;
        session_params_of(c, &p);
        r = session_start(c->srv, c, &p, &c->starting);
        if (r < 0)
                logon_fail(c, TSF_LOGON_ERROR, TSF_REASON_INTERNAL, "the session could not be started");
}

void conn_session_started(struct conn *c, struct session *s, int error) {
        c->starting = NULL;
        if (c->step != STEP_STARTING)
                return;
        if (error < 0 || !s) {
                logon_fail(c, TSF_LOGON_ERROR, TSF_REASON_INTERNAL, "the session could not be started");
                return;
        }
        logon_attach(c, s, false);
}

/* Percent-encodes a query value. */
static void url_escape(const char *s, char *buf, size_t size) {
        size_t n = 0;

        for (; *s && n + 4 < size; s++) {
                unsigned char ch = (unsigned char)*s;

                if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                    ch == '-' || ch == '_' || ch == '.' || ch == '~')
                        buf[n++] = (char)ch;
                else
                        n += (size_t)snprintf(buf + n, size - n, "%%%02X", ch);
        }
        buf[n] = '\0';
}

static void logon_lookup(struct conn *c) {
        struct session *s = session_find(c->srv, c->user);
        char path[64 + 3 * TSHOST_USER_MAX];
        char esc[3 * TSHOST_USER_MAX + 1];
        int r;

        if (s) {
                /* A session here is real; whatever the mirror says. */
                logon_attach(c, s, true);
                return;
        }
        if (!c->srv->agent || c->routed) {
                /* A client that followed a routing token is where it was
                 * sent: it is not sent on again (no redirect loops). */
                logon_new_session(c);
                return;
        }
        c->step = STEP_LOOKUP;
        url_escape(c->user, esc, sizeof(esc));
        snprintf(path, sizeof(path), "/v1/sessions/lookup?user=%s", esc);
        r = agent_call(c->srv, c, "GET", path, NULL, LOOKUP_TIMEOUT, conn_lookup_done, &c->call);
        if (r < 0) {
                log_warning_errno(r,
                                  "Connection %s: cannot ask the host agent where %s's session is: %m; "
                                  "starting here.",
                                  c->peer, c->user);
                logon_new_session(c);
        }
}

static void redirect(struct conn *c, const char *node, const char *address, int port, uint32_t sid) {
        struct tsf_pdu pdu;
        struct in_addr a;
        char text[256];

        tsf_pdu_init(&pdu, TSF_PDU_REDIRECT);
        pdu.redirect.reason = TSF_REASON_SESSION_ELSEWHERE;
        pdu.redirect.session_id = sid;
        if (inet_pton(AF_INET, address, &a) != 1 ||
            tsf_routing_token_format(a.s_addr, (uint16_t)port, pdu.redirect.routing_token,
                                     sizeof(pdu.redirect.routing_token)) < 0) {
                log_warning("Connection %s: the directory names %s:%d for %s's session, which is no IPv4 "
                            "address; starting here.",
                            c->peer, address, port, c->user);
                logon_new_session(c);
                return;
        }
        snprintf(pdu.redirect.target, sizeof(pdu.redirect.target), "%s:%d", address, port);
        snprintf(text, sizeof(text), "your disconnected session is on %s", node ?: address);
        tshost_text_copy(pdu.redirect.reason_text, sizeof(pdu.redirect.reason_text), text);
        log_info("Connection %s: redirecting %s to %s (node %s, session %" PRIu32 ").", c->peer, c->user,
                 pdu.redirect.target, node ?: "?", sid);
        c->step = STEP_NONE;
        conn_send(c, &pdu);
        conn_close(c);
}

void conn_lookup_done(struct conn *c, int r, long status, json_t *reply, const char *error) {
        const char *state = json_string_value(json_object_get(reply, "state"));
        const char *address = json_string_value(json_object_get(reply, "address"));
        const char *node = json_string_value(json_object_get(reply, "node"));
        json_t *port = json_object_get(reply, "rdp_port"), *sid = json_object_get(reply, "session_id");

        c->call = NULL;
        if (r < 0 || status != 200) {
                log_warning("Connection %s: the host agent did not say where %s's session is (%s); starting "
                            "here.",
                            c->peer, c->user, r < 0 ? error : "refused");
                logon_new_session(c);
                return;
        }
        if (json_is_true(json_object_get(reply, "found")) && streq_ptr(state, "disconnected") &&
            !json_is_true(json_object_get(reply, "here")) && address && json_is_integer(port) &&
            json_integer_value(port) > 0 && json_integer_value(port) < 65536) {
                redirect(c, node, address, (int)json_integer_value(port),
                         json_is_integer(sid) ? (uint32_t)json_integer_value(sid) : 0);
                return;
        }
        logon_new_session(c);
}

void conn_validate_done(struct conn *c, int r, long status, json_t *reply, const char *error) {
        const char *code = json_string_value(json_object_get(reply, "reason_code"));

        c->call = NULL;
        if (r < 0)
                log_warning(
                        "Connection %s: the host agent did not answer the logon report of device %s: %s; "
                        "the next logon validates.",
                        c->peer, c->device, error);
        else if (status == 200)
                log_debug("Connection %s: device %s's temporary token: %s.", c->peer, c->device,
                          code ?: "?");
        else if (status == 409) {
                logon_fail(c, TSF_LOGON_NO_LICENSE, TSF_REASON_TOKEN_INVALID,
                           json_string_value(json_object_get(reply, "reason"))
                                   ?: "the license token is not valid");
                return;
        } else
                log_warning("Connection %s: the host agent refused the logon report of device %s: %ld.",
                            c->peer, c->device, status);
        logon_lookup(c);
}

static void logon_authenticated(struct conn *c) {
        _cleanup_(json_decrefp) json_t *body = NULL;
        char hex[2 * TSF_PROTO_HWID_MAX + 1];
        int r;

        c->attempts = 0;
        if (!c->srv->config->licensing || !c->token_temporary || !c->token[0]) {
                logon_lookup(c);
                return;
        }
        /* DESIGN 3, step 3: a logon validates the temporary token. */
        tsf_hex_encode(c->hwid, c->hwid_len, hex);
        body = json_pack("{s:s, s:s, s:s, s:s}", "hardware_id", hex, "token", c->token, "device_name",
                         c->device, "user_name", c->user);
        c->step = STEP_VALIDATE;
        r = body ? agent_call(c->srv, c, "POST", "/v1/license/logon", body, VALIDATE_TIMEOUT,
                              conn_validate_done, &c->call)
                 : -ENOMEM;
        if (r < 0) {
                log_warning_errno(
                        r, "Connection %s: cannot report the logon of device %s to the host agent: %m",
                        c->peer, c->device);
                logon_lookup(c);
        }
}

void conn_auth_done(struct conn *c, const struct auth_result *res) {
        c->auth = NULL;
        if (c->step != STEP_AUTH || c->state != CONN_OPEN)
                return;
        switch (res->verdict) {
        case AUTH_OK:
                snprintf(c->user, sizeof(c->user), "%s", res->user);
                log_info("Connection %s: %s authenticated (PAM service %s).", c->peer, c->user,
                         c->srv->config->pam_service);
                logon_authenticated(c);
                return;
        case AUTH_WRONG_PASSWORD:
                c->attempts++;
                c->step = STEP_NONE;
                log_notice("Connection %s: logon of %s failed: %s (attempt %u of %d).", c->peer,
                           c->logon_name, res->pam_error, c->attempts, TSHOST_LOGON_ATTEMPTS);
                send_logon_result(c, TSF_LOGON_WRONG_PASSWORD, TSF_REASON_BAD_CREDENTIALS,
                                  "the user name or password is not right");
                if (c->attempts >= TSHOST_LOGON_ATTEMPTS)
                        conn_disconnect(c, TSF_REASON_TOO_MANY_ATTEMPTS, "too many failed logon attempts");
                return;
        case AUTH_DENIED:
                logon_fail(c, TSF_LOGON_DENIED, TSF_REASON_ACCOUNT_DENIED, res->pam_error);
                return;
        case AUTH_ERROR:
                log_error("Connection %s: PAM failed for %s: %s", c->peer, c->logon_name, res->pam_error);
                logon_fail(c, TSF_LOGON_ERROR, TSF_REASON_AUTH_ERROR, "authentication failed on the server");
                return;
        }
}

static void on_client_info(struct conn *c, const struct tsf_pdu_client_info *ci) {
        int r;

        if (c->step != STEP_NONE) {
                conn_error(c, TSF_REASON_UNEXPECTED_PDU, "a second client info before the logon result");
                return;
        }
        if (ci->hardware_id_len != c->hwid_len || memcmp(ci->hardware_id, c->hwid, c->hwid_len) != 0) {
                conn_error(c, TSF_REASON_MALFORMED, "the hardware id differs from the license exchange's");
                return;
        }
        snprintf(c->logon_name, sizeof(c->logon_name), "%s", ci->user);
        snprintf(c->term, sizeof(c->term), "%s", ci->term[0] ? ci->term : TSHOST_DEFAULT_TERM);
        c->rows = ci->rows;
        c->cols = ci->cols;
        c->step = STEP_AUTH;

        if (ci->reconnect_cookie_len > 0) {
                struct session *s =
                        session_claim_cookie(c->srv, ci->user, ci->reconnect_cookie,
                                             ci->reconnect_cookie_len, ci->hardware_id, ci->hardware_id_len);

                if (s) {
                        snprintf(c->user, sizeof(c->user), "%s", session_user(s));
                        log_info("Connection %s: %s authenticated by a reconnect cookie.", c->peer, c->user);
                        logon_authenticated(c);
                        return;
                }
                if (!ci->password[0]) {
                        c->attempts++;
                        c->step = STEP_NONE;
                        log_notice("Connection %s: reconnect cookie of %s unknown, used or expired (attempt "
                                   "%u of %d).",
                                   c->peer, c->logon_name, c->attempts, TSHOST_LOGON_ATTEMPTS);
                        send_logon_result(c, TSF_LOGON_WRONG_PASSWORD, TSF_REASON_BAD_RECONNECT_COOKIE,
                                          "the reconnect cookie is not valid; log on with a password");
                        if (c->attempts >= TSHOST_LOGON_ATTEMPTS)
                                conn_disconnect(c, TSF_REASON_TOO_MANY_ATTEMPTS,
                                                "too many failed logon attempts");
                        return;
                }
        }
        r = auth_start(c->srv, c, ci->user, ci->password, c->peer_ip, &c->auth);
        if (r < 0) {
                log_error_errno(r, "Connection %s: cannot start PAM authentication: %m", c->peer);
                logon_fail(c, TSF_LOGON_ERROR, TSF_REASON_AUTH_ERROR, "authentication failed on the server");
        }
}

/* ---- the session phase ------------------------------------------------------------ */

void conn_session_ended(struct conn *c) {
        struct tsf_pdu pdu;

        c->session = NULL;
        tsf_pdu_init(&pdu, TSF_PDU_LOGOFF);
        conn_send(c, &pdu);
        conn_close(c);
}

void conn_session_replaced(struct conn *c) {
        c->session = NULL;
        conn_disconnect(c, TSF_REASON_REPLACED, "the session was taken over by a newer connection");
}

void conn_input_drained(struct conn *c) {
        if (!c->in_paused)
                return;
        c->in_paused = false;
        conn_read(c); /* TLS may hold decrypted bytes epoll knows nothing of */
}

static void on_pdu(struct conn *c, const struct tsf_pdu *pdu) {
        struct tsf_pdu reply;
        int r;

        if (!tsf_pdu_allowed(TSF_PROTO_CLIENT, c->phase, pdu->type)) {
                conn_error(c, TSF_REASON_UNEXPECTED_PDU, "%s is not expected now",
                           tsf_pdu_type_to_string(pdu->type));
                return;
        }
        switch (pdu->type) {
        case TSF_PDU_KEEPALIVE:
                if (!pdu->keepalive.reply) {
                        tsf_pdu_init(&reply, TSF_PDU_KEEPALIVE);
                        reply.keepalive.reply = true;
                        reply.keepalive.echo = pdu->keepalive.echo;
                        conn_send(c, &reply);
                }
                return;
        case TSF_PDU_DISCONNECT:
                log_info("Connection %s: the client disconnects (%s: %s).", c->peer,
                         tsf_proto_reason_to_string(pdu->disconnect.reason) ?: "?",
                         pdu->disconnect.reason_text);
                conn_close(c);
                return;
        case TSF_PDU_ERROR:
                log_notice("Connection %s: the client reports a protocol error (%s: %s); closing.", c->peer,
                           tsf_proto_reason_to_string(pdu->error.reason) ?: "?", pdu->error.reason_text);
                conn_close(c);
                return;
        case TSF_PDU_CLIENT_LICENSE_INFO:
                on_license_info(c, &pdu->client_license_info);
                return;
        case TSF_PDU_CLIENT_INFO:
                on_client_info(c, &pdu->client_info);
                return;
        case TSF_PDU_TERMINAL_DATA:
                if (!c->session)
                        return;
                r = session_input(c->session, pdu->terminal_data.data, pdu->terminal_data.len);
                if (r < 0)
                        conn_error(c, TSF_REASON_INTERNAL, "the session cannot take more input");
                return;
        case TSF_PDU_WINDOW_SIZE:
                c->rows = pdu->window_size.rows;
                c->cols = pdu->window_size.cols;
                if (c->session)
                        (void)session_resize(c->session, c->rows, c->cols);
                return;
        case TSF_PDU_LOGOFF:
                if (c->session) {
                        struct session *s = TAKE_PTR(c->session);

                        session_logoff(s, "the client logged off");
                }
                tsf_pdu_init(&reply, TSF_PDU_LOGOFF);
                conn_send(c, &reply);
                conn_close(c);
                return;
        default:
                /* tsf_pdu_allowed() let through only what is handled above. */
                conn_error(c, TSF_REASON_UNEXPECTED_PDU, "%s is not expected",
                           tsf_pdu_type_to_string(pdu->type));
                return;
        }
}

/* ---- TLS I/O ------------------------------------------------------------------------ */

static const char *ssl_error_string(char *buf, size_t size) {
        unsigned long e = ERR_get_error();

        if (!e)
                return "connection closed or reset";
        ERR_error_string_n(e, buf, size);
        ERR_clear_error();
        return buf;
}

static void conn_reader_error(struct conn *c, int r) {
        switch (r) {
        case -EPROTONOSUPPORT:
                conn_error(c, TSF_REASON_UNSUPPORTED_VERSION, "protocol version not supported (1 is)");
                return;
        case -EMSGSIZE:
                conn_error(c, TSF_REASON_TOO_LARGE, "a frame longer than its type allows");
                return;
        default:
                conn_error(c, TSF_REASON_MALFORMED, "a malformed frame (%s)", strerror(-r));
                return;
        }
}

static void conn_read(struct conn *c) {
        uint8_t buf[TSF_PROTO_FRAME_MAX];

        while (c->state == CONN_OPEN && !c->fatal) {
                char e[256];
                size_t off = 0;
                int n;

                if (c->session && session_input_full(c->session)) {
                        c->in_paused = true; /* resumed by conn_input_drained() */
                        return;
                }
                ERR_clear_error();
                n = SSL_read(c->ssl, buf, sizeof(buf));
                if (n <= 0) {
                        int err = SSL_get_error(c->ssl, n);

                        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
                                return;
                        if (err == SSL_ERROR_ZERO_RETURN)
                                log_info("Connection %s: the client closed the connection.", c->peer);
                        else
                                log_info("Connection %s: lost (%s).", c->peer,
                                         ssl_error_string(e, sizeof(e)));
                        c->fatal = true;
                        return;
                }
                c->last_recv = tsf_now_monotonic();
                while (off < (size_t)n && c->state == CONN_OPEN && !c->fatal) {
                        struct tsf_pdu pdu;
                        size_t used = 0;
                        int r = tsf_proto_reader_feed(&c->reader, buf + off, (size_t)n - off, &used, &pdu);

                        off += used;
                        if (r == -EAGAIN)
                                continue;
                        if (r < 0) {
                                conn_reader_error(c, r);
                                break;
                        }
                        on_pdu(c, &pdu);
                        tsf_pdu_wipe(&pdu);
                }
                explicit_bzero(buf, (size_t)n);
        }
}

static void conn_flush(struct conn *c) {
        char e[256];

        while (bytequeue_len(&c->out) > 0 && !c->fatal) {
                int n;

                ERR_clear_error();
                n = SSL_write(c->ssl, bytequeue_peek(&c->out),
                              (int)MIN(bytequeue_len(&c->out), (size_t)65536));
                if (n <= 0) {
                        int err = SSL_get_error(c->ssl, n);

                        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
                                return;
                        log_info("Connection %s: lost while sending (%s).", c->peer,
                                 ssl_error_string(e, sizeof(e)));
                        c->fatal = true;
                        return;
                }
                bytequeue_consume(&c->out, (size_t)n);
        }
        if (c->session && conn_output_room(c))
                session_output_resume(c->session);
}

static void conn_tls_up(struct conn *c) {
        struct tsf_pdu pdu;

        c->state = CONN_OPEN;
        c->t_tls = c->last_recv = tsf_now_monotonic();
        log_debug("Connection %s: %s up (%s).", c->peer, SSL_get_version(c->ssl),
                  SSL_get_cipher_name(c->ssl));
        tsf_pdu_init(&pdu, TSF_PDU_LICENSE_REQUEST);
        pdu.license_request.max_version = TSF_PROTO_VERSION;
        if (getrandom(c->nonce, sizeof(c->nonce), 0) != (ssize_t)sizeof(c->nonce)) {
                log_error_errno(negative_errno(), "Connection %s: no random bytes for the nonce: %m",
                                c->peer);
                c->fatal = true;
                return;
        }
        memcpy(pdu.license_request.nonce, c->nonce, sizeof(c->nonce));
        snprintf(pdu.license_request.farm_id, sizeof(pdu.license_request.farm_id), "%s",
                 c->srv->config->farm_id);
        snprintf(pdu.license_request.product_version, sizeof(pdu.license_request.product_version), "%s",
                 c->srv->config->product_version);
        conn_send(c, &pdu);
        c->phase = TSF_PHASE_LICENSE_INFO;
        c->t_license_request = tsf_now_monotonic();
}

static void conn_handshake(struct conn *c) {
        char e[256];
        int r, err;

        ERR_clear_error();
        r = SSL_accept(c->ssl);
        if (r == 1) {
                conn_tls_up(c);
                return;
        }
        err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
                return;
        log_notice("Connection %s: TLS handshake failed: %s.", c->peer, ssl_error_string(e, sizeof(e)));
        c->fatal = true;
}

/* ---- X.224 --------------------------------------------------------------------------- */

static void conn_linger(struct conn *c) {
        (void)shutdown(c->fd, SHUT_WR);
        c->state = CONN_LINGER;
        c->t_closing = tsf_now_monotonic();
}

static void conn_read_cr(struct conn *c) {
        struct tsf_cr cr;
        struct tsf_cc cc;
        uint8_t out[TSF_CC_SIZE_MAX];
        enum tsf_cr_status st;
        ssize_t n;
        bool tls;

        n = read(c->fd, c->crbuf + c->crlen, sizeof(c->crbuf) - c->crlen);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0) {
                log_info("Connection %s: closed before a complete Connection Request (%zu bytes).", c->peer,
                         c->crlen);
                c->fatal = true;
                return;
        }
        c->crlen += (size_t)n;
        st = tsf_cr_parse(c->crbuf, c->crlen, &cr);
        if (st == TSF_CR_NEED_MORE)
                return;
        if (st == TSF_CR_INVALID) {
                log_notice("Connection %s: invalid Connection Request: %s (byte %zu); closing.", c->peer,
                           tsf_cr_error_describe(cr.error) ?: "?", cr.error_offset);
                c->fatal = true;
                return;
        }
        if (cr.consumed != c->crlen) {
                log_notice("Connection %s: %zu bytes after the Connection Request, before the confirm; "
                           "closing.",
                           c->peer, c->crlen - cr.consumed);
                c->fatal = true;
                return;
        }
        if (cr.cookie_kind == TSF_COOKIE_MSTSHASH)
                snprintf(c->cookie_user, sizeof(c->cookie_user), "%.*s", (int)cr.cookie_value_len,
                         cr.cookie + cr.cookie_value_offset);
        c->routed = cr.cookie_kind == TSF_COOKIE_ROUTING_TOKEN;
        tls = tsf_proto_cc_for(&cr, &cc);
        n = tsf_cc_encode(&cc, out, sizeof(out));
        if (n < 0 || write(c->fd, out, (size_t)n) != n) {
                log_info("Connection %s: cannot send the Connection Confirm; closing.", c->peer);
                c->fatal = true;
                return;
        }
        if (!tls) {
                log_notice("Connection %s: the client does not offer TLS (requested protocols 0x%" PRIx32
                           "); refused with SSL_REQUIRED_BY_SERVER.",
                           c->peer, cr.requested_protocols);
                conn_linger(c);
                return;
        }
        log_debug("Connection %s: Connection Request%s%s; TLS selected.", c->peer,
                  c->cookie_user[0] ? ", cookie for "
                  : c->routed       ? ", routing token"
                                    : "",
                  c->cookie_user);
        c->ssl = SSL_new(c->srv->ssl_ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
                log_error("Connection %s: cannot set up TLS; closing.", c->peer);
                c->fatal = true;
                return;
        }
        c->state = CONN_TLS;
        c->t_cc = tsf_now_monotonic();
}

/* ---- events ------------------------------------------------------------------------------ */

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct conn *c = userdata;

        switch (c->state) {
        case CONN_X224:
                conn_read_cr(c);
                break;
        case CONN_TLS:
                conn_handshake(c);
                if (c->state == CONN_OPEN)
                        conn_read(c); /* the client may have sent already */
                break;
        case CONN_OPEN:
                if (revents & EPOLLOUT)
                        conn_flush(c);
                if (!c->in_paused)
                        conn_read(c);
                break;
        case CONN_CLOSING:
                break; /* conn_kick() flushes */
        case CONN_LINGER: {
                uint8_t buf[4096];
                ssize_t n = read(c->fd, buf, sizeof(buf));

                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                        c->fatal = true;
                break;
        }
        }
        conn_kick(c);
        return 0;
}

static void conn_keepalive(struct conn *c) {
        struct tsf_pdu pdu;

        tsf_pdu_init(&pdu, TSF_PDU_KEEPALIVE);
        pdu.keepalive.echo = ++c->keepalive_echo;
        conn_send(c, &pdu);
}

static bool keepalive_phase(const struct conn *c) {
        return c->state == CONN_OPEN && c->phase >= TSF_PHASE_LICENSE_INFO;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct conn *c = userdata;
        const struct tshost_config *cfg = c->srv->config;
        usec_t now = tsf_now_monotonic();

        switch (c->state) {
        case CONN_X224:
                if (now >= c->t_accept + cfg->handshake_timeout) {
                        log_notice("Connection %s: no complete Connection Request within %s (%zu bytes); "
                                   "closing.",
                                   c->peer, "the handshake timeout", c->crlen);
                        c->fatal = true;
                }
                break;
        case CONN_TLS:
                if (now >= c->t_cc + cfg->handshake_timeout) {
                        log_notice("Connection %s: TLS handshake not done in time; closing.", c->peer);
                        c->fatal = true;
                }
                break;
        case CONN_OPEN:
                if (c->phase == TSF_PHASE_LICENSE_INFO &&
                    now >= c->t_license_request + cfg->license_timeout) {
                        conn_error(c, TSF_REASON_TIMEOUT, "no license info in time");
                        break;
                }
                if (c->phase < TSF_PHASE_SESSION && now >= c->t_tls + cfg->logon_timeout) {
                        conn_disconnect(c, TSF_REASON_LOGON_TIMEOUT, "the logon took too long");
                        break;
                }
                if (now >= c->last_recv + cfg->peer_timeout) {
                        conn_disconnect(c, TSF_REASON_PEER_SILENT, "nothing heard from the client");
                        break;
                }
                if (keepalive_phase(c) && now >= c->last_send + cfg->keepalive)
                        conn_keepalive(c);
                break;
        case CONN_CLOSING:
        case CONN_LINGER:
                if (now >= c->t_closing + TSHOST_CLOSE_TIMEOUT) {
                        log_debug("Connection %s: closing timed out.", c->peer);
                        c->fatal = true;
                }
                break;
        }
        conn_kick(c);
        return 0;
}

static usec_t conn_deadline(const struct conn *c) {
        const struct tshost_config *cfg = c->srv->config;
        usec_t d = USEC_INFINITY;

        switch (c->state) {
        case CONN_X224:
                return c->t_accept + cfg->handshake_timeout;
        case CONN_TLS:
                return c->t_cc + cfg->handshake_timeout;
        case CONN_OPEN:
                if (c->phase == TSF_PHASE_LICENSE_INFO)
                        d = MIN(d, c->t_license_request + cfg->license_timeout);
                if (c->phase < TSF_PHASE_SESSION)
                        d = MIN(d, c->t_tls + cfg->logon_timeout);
                d = MIN(d, c->last_recv + cfg->peer_timeout);
                if (keepalive_phase(c))
                        d = MIN(d, c->last_send + cfg->keepalive);
                return d;
        case CONN_CLOSING:
        case CONN_LINGER:
                return c->t_closing + TSHOST_CLOSE_TIMEOUT;
        }
        return d;
}

static void conn_update(struct conn *c) {
        uint32_t events = 0;

        switch (c->state) {
        case CONN_X224:
        case CONN_LINGER:
                events = EPOLLIN;
                break;
        case CONN_TLS:
                events = SSL_want_write(c->ssl) ? EPOLLOUT : EPOLLIN;
                break;
        case CONN_OPEN:
                if (!c->in_paused)
                        events |= EPOLLIN;
                if (bytequeue_len(&c->out) > 0 || SSL_want_write(c->ssl))
                        events |= EPOLLOUT;
                break;
        case CONN_CLOSING:
                events = EPOLLOUT;
                break;
        }
        (void)sd_event_source_set_io_events(c->io, events);
        (void)sd_event_source_set_enabled(c->io, events ? SD_EVENT_ON : SD_EVENT_OFF);
        (void)sd_event_source_set_time(c->timer, conn_deadline(c));
        (void)sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
}

void conn_kick(struct conn *c) {
        if (!c->fatal && (c->state == CONN_OPEN || c->state == CONN_CLOSING))
                conn_flush(c);
        if (!c->fatal && c->state == CONN_CLOSING && bytequeue_len(&c->out) == 0) {
                /* TLS close_notify, then FIN (docs/protocol.md section 8). */
                ERR_clear_error();
                (void)SSL_shutdown(c->ssl);
                conn_linger(c);
        }
        if (c->fatal) {
                conn_free(c);
                return;
        }
        conn_update(c);
}

void conn_free(struct conn *c) {
        if (!c)
                return;
        if (c->srv) {
                LIST_REMOVE(c->srv->conns, c);
                c->srv->n_conns--;
        }
        agent_cancel(c->call);
        auth_job_abandon(c->auth);
        if (c->starting)
                session_forget_conn(c->starting, c);
        if (c->session)
                session_forget_conn(c->session, c);
        log_debug("Connection %s: closed.", c->peer);
        SSL_free(c->ssl);
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->timer);
        safe_close(c->fd);
        tsf_proto_reader_wipe(&c->reader);
        bytequeue_done(&c->out);
        explicit_bzero(c, sizeof(*c));
        free(c);
}

int conn_accept(struct server *srv, int fd, const char *peer_ip, uint16_t peer_port) {
        struct conn *c;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c) {
                safe_close(fd);
                return -ENOMEM;
        }
        c->fd = fd;
        c->srv = srv;
        snprintf(c->peer_ip, sizeof(c->peer_ip), "%s", peer_ip);
        snprintf(c->peer, sizeof(c->peer), "%s:%u", peer_ip, peer_port);
        c->t_accept = c->last_recv = c->last_send = tsf_now_monotonic();
        tsf_proto_reader_init(&c->reader);
        bytequeue_init(&c->out, TSHOST_OUT_HARD);
        LIST_PREPEND(srv->conns, c);
        srv->n_conns++;
        r = sd_event_add_io(srv->event, &c->io, fd, EPOLLIN, on_io, c);
        if (r >= 0)
                r = sd_event_add_time(srv->event, &c->timer, CLOCK_MONOTONIC,
                                      c->t_accept + srv->config->handshake_timeout, 0, on_timer, c);
        if (r < 0) {
                conn_free(c);
                return r;
        }
        log_debug("Connection %s: accepted.", c->peer);
        conn_update(c);
        return 0;
}

void conn_shutdown_all(struct server *srv) {
        struct conn *c = srv->conns, *next;

        for (; c; c = next) {
                next = c->next;
                if (c->state == CONN_OPEN)
                        conn_disconnect(c, TSF_REASON_SHUTDOWN, "the terminal server is shutting down");
                else if (c->state != CONN_CLOSING && c->state != CONN_LINGER)
                        c->fatal = true;
                conn_kick(c);
        }
}
