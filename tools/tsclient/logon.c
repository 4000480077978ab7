/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The client's side of docs/protocol.md section 1, up to the logon result:
 * Connection Request with the cookie (or the routing token after a
 * redirect), TLS, the license exchange against the device store, the
 * client info, then LOGON_RESULT or REDIRECT, which starts over.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "tsfarm/lictoken.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsclient.h"

static const char *const outcome_names[_TSC_OUTCOME_MAX] = {
        [TSC_OK] = "ok",
        [TSC_LOCAL] = "local-error",
        [TSC_CONNECT_FAILED] = "connect-failed",
        [TSC_LICENSE_REFUSED] = "license-refused",
        [TSC_WRONG_PASSWORD] = "wrong-password",
        [TSC_LOGON_REFUSED] = "logon-refused",
        [TSC_REDIRECT_LOOP] = "redirect-loop",
        [TSC_SCRIPT_FAILED] = "script-failed",
        [TSC_LOST] = "lost",
};

const char *tsc_outcome_to_string(enum tsc_outcome o) {
        return (unsigned)o < _TSC_OUTCOME_MAX ? outcome_names[o] : NULL;
}

_printf_(4, 5) static enum tsc_outcome
        fail(struct tsc_result *res, enum tsc_outcome o, int error, const char *fmt, ...) {
        va_list ap;

        res->outcome = o;
        res->error = error;
        va_start(ap, fmt);
        vsnprintf(res->error_text, sizeof(res->error_text), fmt, ap);
        va_end(ap);
        return o;
}

static usec_t deadline_in(const struct tsc_params *p, usec_t def) {
        return tsf_now_monotonic() + (p->timeout ? MIN(p->timeout, def) : def);
}

static const char *reason_name(uint16_t reason, char *buf, size_t size) {
        const char *s = tsf_proto_reason_to_string(reason);

        if (s)
                return s;
        snprintf(buf, size, "0x%04x", reason);
        return buf;
}

/* A PDU that ends the attempt where another was expected: DISCONNECT or
 * ERROR from the server, or a receive error. */
static enum tsc_outcome recv_failed(struct tsc_result *res, int r, const struct tsf_pdu *pdu,
                                    const char *what) {
        char b[16];

        if (r == -ETIMEDOUT)
                return fail(res, TSC_CONNECT_FAILED, r, "no %s in time", what);
        if (r < 0)
                return fail(res, TSC_CONNECT_FAILED, r, "connection lost waiting for the %s: %s", what,
                            strerror(-r));
        if (pdu->type == TSF_PDU_DISCONNECT || pdu->type == TSF_PDU_ERROR)
                return fail(res, TSC_CONNECT_FAILED, -ECONNRESET, "the server sent %s %s%s%s",
                            tsf_pdu_type_to_string(pdu->type), reason_name(pdu->error.reason, b, sizeof(b)),
                            pdu->error.reason_text[0] ? ": " : "", pdu->error.reason_text);
        return fail(res, TSC_CONNECT_FAILED, -EPROTO, "unexpected %s instead of the %s",
                    tsf_pdu_type_to_string(pdu->type), what);
}

static int token_kind(const char *token) {
        struct tsf_lic_token t;

        if (!token || !*token || tsf_lic_token_parse(token, &t) != TSF_LIC_VERDICT_OK)
                return 0;
        return t.kind;
}

/* LICENSE_REQUEST → CLIENT_LICENSE_INFO → LICENSE_RESPONSE, storing what
 * the server hands out before anything else is sent. */
static enum tsc_outcome license_exchange(const struct tsc_params *p, struct tsc_conn *c,
                                         struct tsc_result *res) {
        struct tsf_pdu pdu, info;
        char token[TSF_PROTO_TOKEN_MAX + 1] = "";
        char b[16];
        int r;

        r = tsc_conn_recv(c, &pdu, deadline_in(p, TSC_LICENSE_REQUEST_TIMEOUT));
        if (r == -ETIMEDOUT)
                return fail(res, TSC_CONNECT_FAILED, r,
                            "the server does not speak the tsfarm protocol "
                            "(no license request)");
        if (r < 0 || pdu.type != TSF_PDU_LICENSE_REQUEST)
                return recv_failed(res, r, &pdu, "license request");
        snprintf(res->farm_id, sizeof(res->farm_id), "%s", pdu.license_request.farm_id);

        r = tsc_store_token_load(p->store, res->farm_id, token, sizeof(token));
        if (r == -EBADMSG) {
                res->token_ignored = true;
                log_debug("The stored token for farm %s is malformed, presenting none.", res->farm_id);
        } else if (r < 0 && r != -ENOENT)
                return fail(res, TSC_LOCAL, r, "cannot read the device store's token for farm %s: %s",
                            res->farm_id, strerror(-r));
        if (r < 0)
                token[0] = '\0';

        tsf_pdu_init(&info, TSF_PDU_CLIENT_LICENSE_INFO);
        memcpy(info.client_license_info.nonce, pdu.license_request.nonce, TSF_PROTO_NONCE_SIZE);
        memcpy(info.client_license_info.hardware_id, p->store->hwid, TSC_HWID_SIZE);
        info.client_license_info.hardware_id_len = TSC_HWID_SIZE;
        snprintf(info.client_license_info.device_name, sizeof(info.client_license_info.device_name), "%s",
                 p->device_name);
        strcpy(info.client_license_info.token, token);
        r = tsc_conn_send(c, &info, deadline_in(p, TSC_LICENSE_REQUEST_TIMEOUT));
        if (r < 0)
                return fail(res, TSC_CONNECT_FAILED, r, "cannot send the license info: %s", strerror(-r));

        r = tsc_conn_recv(c, &pdu, deadline_in(p, TSC_LICENSE_RESPONSE_TIMEOUT));
        if (r < 0 || pdu.type != TSF_PDU_LICENSE_RESPONSE)
                return recv_failed(res, r, &pdu, "license response");
        res->license_status = pdu.license_response.status;
        res->license_reason = pdu.license_response.reason;
        switch (pdu.license_response.status) {
        case TSF_LICENSE_NEW:
        case TSF_LICENSE_UPGRADE:
                /* Stored before CLIENT_INFO: a crash loses nothing the
                 * license server already counted. */
                r = tsc_store_token_save(p->store, res->farm_id, pdu.license_response.token);
                if (r < 0)
                        return fail(res, TSC_LOCAL, r, "cannot store the license token for farm %s: %s",
                                    res->farm_id, strerror(-r));
                res->token_stored = true;
                res->token_kind = token_kind(pdu.license_response.token);
                break;
        case TSF_LICENSE_VALID:
                res->token_kind = token_kind(token);
                break;
        default:
                snprintf(res->reason_text, sizeof(res->reason_text), "%s", pdu.license_response.reason_text);
                return fail(res, TSC_LICENSE_REFUSED, -EACCES, "license refused: %s%s%s",
                            reason_name(pdu.license_response.reason, b, sizeof(b)),
                            pdu.license_response.reason_text[0] ? ": " : "",
                            pdu.license_response.reason_text);
        }
        return TSC_OK;
}

/* CLIENT_INFO with the reconnect cookie (with_cookie, when there is one) or
 * the password, and the answer to it. */
static enum tsc_outcome client_info(const struct tsc_params *p, const char *user, bool with_cookie,
                                    struct tsc_conn *c, struct tsc_result *res, struct tsf_pdu *answer) {
        struct tsf_pdu info;
        int r;

        tsf_pdu_init(&info, TSF_PDU_CLIENT_INFO);
        info.client_info.rows = p->rows ?: 24;
        info.client_info.cols = p->cols ?: 80;
        snprintf(info.client_info.user, sizeof(info.client_info.user), "%s", user);
        if (with_cookie && p->reconnect_cookie_len > 0) {
                memcpy(info.client_info.reconnect_cookie, p->reconnect_cookie, p->reconnect_cookie_len);
                info.client_info.reconnect_cookie_len = p->reconnect_cookie_len;
        } else
                snprintf(info.client_info.password, sizeof(info.client_info.password), "%s",
                         p->password ?: "");
        snprintf(info.client_info.device_name, sizeof(info.client_info.device_name), "%s", p->device_name);
        memcpy(info.client_info.hardware_id, p->store->hwid, TSC_HWID_SIZE);
        info.client_info.hardware_id_len = TSC_HWID_SIZE;
        snprintf(info.client_info.term, sizeof(info.client_info.term), "%s", p->term ?: "");
        r = tsc_conn_send(c, &info, deadline_in(p, TSC_LOGON_TIMEOUT));
        tsf_pdu_wipe(&info);
        if (r < 0)
                return fail(res, r == -EINVAL ? TSC_LOCAL : TSC_CONNECT_FAILED, r,
                            "cannot send the logon: %s",
                            r == -EINVAL ? "a field the protocol refuses (user, device name or terminal)"
                                         : strerror(-r));
        r = tsc_conn_recv(c, answer, deadline_in(p, TSC_LOGON_TIMEOUT));
        if (r < 0 || (answer->type != TSF_PDU_LOGON_RESULT && answer->type != TSF_PDU_REDIRECT))
                return recv_failed(res, r, answer, "logon result");
        return TSC_OK;
}

enum tsc_outcome tsc_logon(const struct tsc_params *p, struct tsc_result *res, struct tsc_conn **ret_conn) {
        char routing[TSF_PROTO_ROUTING_TOKEN_MAX + 1] = "";
        char user[TSF_PROTO_USER_MAX + 1];
        char host[TSF_PROTO_TARGET_MAX + 1], port[8];
        usec_t start = tsf_now_monotonic();
        unsigned max = p->max_redirects ?: TSC_MAX_REDIRECTS;
        char b[16];

        *ret_conn = NULL;
        snprintf(user, sizeof(user), "%s", p->user);
        snprintf(host, sizeof(host), "%s", p->host);
        snprintf(port, sizeof(port), "%s", p->port);

        for (;;) {
                _cleanup_(tsc_conn_closep) struct tsc_conn *c = NULL;
                struct tsf_pdu answer;
                struct tsf_cr cr;
                enum tsc_outcome o;
                bool with_cookie;
                int r;

                /* The cookie: the routing token after a redirect, else the
                 * user (a name that does not fit goes without one). */
                if (routing[0])
                        r = tsf_proto_cr_build(NULL, routing, &cr);
                else {
                        r = tsf_proto_cr_build(p->no_cookie ? NULL : user, NULL, &cr);
                        if (r < 0)
                                r = tsf_proto_cr_build(NULL, NULL, &cr);
                }
                if (r < 0)
                        return fail(res, TSC_CONNECT_FAILED, r, "cannot build the Connection Request");

                r = tsc_conn_open(p->tls, host, port, p->tls_name, &cr, deadline_in(p, TSC_CONNECT_TIMEOUT),
                                  &c, res->error_text, sizeof(res->error_text));
                if (r < 0) {
                        res->outcome = TSC_CONNECT_FAILED;
                        res->error = r;
                        return TSC_CONNECT_FAILED;
                }
                snprintf(res->server, sizeof(res->server), "%s", tsc_conn_peer_name(c));
                snprintf(res->address, sizeof(res->address), "%s", tsc_conn_address(c));

                o = license_exchange(p, c, res);
                if (o != TSC_OK)
                        return o;
                with_cookie = p->reconnect_cookie_len > 0;
                o = client_info(p, user, with_cookie, c, res, &answer);
                if (o != TSC_OK)
                        return o;
                /* A cookie the host no longer honours (used, expired, or the
                 * session taken over by another device's logon meanwhile):
                 * the password follows on the same connection, as an RDP
                 * client's automatic reconnection falls back to its
                 * credentials (the protocol allows 3 attempts). */
                if (with_cookie && answer.type == TSF_PDU_LOGON_RESULT &&
                    answer.logon_result.status == TSF_LOGON_WRONG_PASSWORD &&
                    answer.logon_result.reason == TSF_REASON_BAD_RECONNECT_COOKIE && p->password &&
                    p->password[0]) {
                        log_debug("The reconnect cookie was refused; logging on with the password.");
                        with_cookie = false;
                        o = client_info(p, user, with_cookie, c, res, &answer);
                        if (o != TSC_OK)
                                return o;
                }

                if (answer.type == TSF_PDU_REDIRECT) {
                        const struct tsf_pdu_redirect *rd = &answer.redirect;

                        if (res->redirects >= max)
                                return fail(res, TSC_REDIRECT_LOOP, -ELOOP,
                                            "redirect loop: %u redirects in a row, the last to %s",
                                            res->redirects, rd->target);
                        res->redirects++;
                        log_debug("Redirected to %s (%s), routing token %s.", rd->target,
                                  reason_name(rd->reason, b, sizeof(b)), rd->routing_token);
                        snprintf(routing, sizeof(routing), "%s", rd->routing_token);
                        if (rd->user[0])
                                snprintf(user, sizeof(user), "%s", rd->user);
                        if (p->direct &&
                            tsc_split_host_port(rd->target, host, sizeof(host), port, sizeof(port)) < 0)
                                return fail(res, TSC_CONNECT_FAILED, -EINVAL, "bad redirect target %s",
                                            rd->target);
                        continue; /* c closes (the server closes too) */
                }

                res->logon_status = answer.logon_result.status;
                res->logon_reason = answer.logon_result.reason;
                snprintf(res->reason_text, sizeof(res->reason_text), "%s", answer.logon_result.reason_text);
                switch (answer.logon_result.status) {
                case TSF_LOGON_OK:
                        res->session_id = answer.logon_result.session_id;
                        res->reattached = answer.logon_result.reattached;
                        memcpy(res->reconnect_cookie, answer.logon_result.reconnect_cookie,
                               answer.logon_result.reconnect_cookie_len);
                        res->reconnect_cookie_len = answer.logon_result.reconnect_cookie_len;
                        res->latency = tsf_now_monotonic() - start;
                        res->outcome = TSC_OK;
                        tsf_pdu_wipe(&answer);
                        *ret_conn = TAKE_PTR(c);
                        return TSC_OK;
                case TSF_LOGON_WRONG_PASSWORD:
                        return fail(res, TSC_WRONG_PASSWORD, -EACCES, "logon refused: wrong user name or %s",
                                    with_cookie ? "reconnect cookie" : "password");
                default:
                        return fail(res, TSC_LOGON_REFUSED, -EACCES, "logon refused: %s, %s%s%s",
                                    tsf_logon_status_to_string(answer.logon_result.status),
                                    reason_name(answer.logon_result.reason, b, sizeof(b)),
                                    answer.logon_result.reason_text[0] ? ": " : "",
                                    answer.logon_result.reason_text);
                }
        }
}

char *tsc_result_to_json(const struct tsc_result *res) {
        _cleanup_(json_decrefp) json_t *o = NULL;
        json_t *lic = NULL, *logon = NULL;
        const char *kind = res->token_kind ? tsf_lic_kind_to_string(res->token_kind) : NULL;

        if (res->license_status)
                lic = json_pack("{s:s, s:s?, s:s?, s:b, s:b}", "status",
                                tsf_license_status_to_string(res->license_status), "reason",
                                tsf_proto_reason_to_string(res->license_reason), "kind", kind, "stored",
                                res->token_stored, "ignored_stored_token", res->token_ignored);
        if (res->logon_status)
                logon = json_pack("{s:s, s:s?}", "status", tsf_logon_status_to_string(res->logon_status),
                                  "reason", tsf_proto_reason_to_string(res->logon_reason));
        o = json_pack("{s:s, s:i, s:s?, s:s?, s:s?, s:o*, s:o*, s:I, s:b, s:i, s:s?, s:s?, s:f}", "result",
                      tsc_outcome_to_string(res->outcome), "exit", (int)res->outcome, "server",
                      res->server[0] ? res->server : NULL, "address", res->address[0] ? res->address : NULL,
                      "farm", res->farm_id[0] ? res->farm_id : NULL, "license", lic, "logon", logon,
                      "session_id", (json_int_t)res->session_id, "reattached", res->reattached, "redirects",
                      (int)res->redirects, "end", res->end, "error",
                      res->outcome != TSC_OK && res->error_text[0] ? res->error_text : NULL, "latency_ms",
                      (double)res->latency / 1000.0);
        if (!o)
                return NULL;
        return json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
}
