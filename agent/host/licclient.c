/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agent/host/licclient.h"
#include "agent/host/licgrace.h"
#include "tsfarm/config.h"
#include "tsfarm/hex.h"
#include "tsfarm/licdiscovery.h"
#include "tsfarm/lictoken.h"
#include "tsfarm/list.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

/* A local API request waits at most this long for the license servers. */
#define REQUEST_TIMEOUT (60 * USEC_PER_SEC)
/* Limits of the local API's fields: the license store's. */
#define HWID_MIN 16
#define HWID_MAX 64
#define DEVICE_NAME_MAX 255
#define USER_NAME_MAX 255
/* License servers whose key ids we learnt from their answers. */
#define LEARNT_MAX 256

/* What a license server told us about itself. */
struct learnt {
        char endpoint[LICDISC_ENDPOINT_MAX + 1];
        char name[LICDISC_NAME_MAX + 1];
        char key_id[2 * TSF_LIC_KEY_ID_SIZE + 1];
        bool reachable;
        char error[256];
        usec_t when; /* CLOCK_MONOTONIC of the last answer or failure */
};

struct licclient {
        sd_event *event;
        const struct host_config *config;
        struct licdisc_listener *listener;
        struct tsf_api_client *client;
        struct tsf_lic_trust *trust;
        struct licgrace *grace;
        struct learnt *learnt;
        size_t n_learnt;
        struct op *ops;

        /* Since start, for /metrics. */
        uint64_t n_admitted, n_refused, n_temporary, n_cal, n_renewed, n_validated, n_grace, n_unreachable,
                n_rediscoveries;
};

enum op_kind {
        OP_OBTAIN,
        OP_LOGON,
        OP_DIAGNOSE,
};

/* Which license server call an obtain or logon is making. */
enum step {
        STEP_TEMPORARY, /* POST /v1/licenses/temporary */
        STEP_CAL,       /* POST /v1/licenses/cal: upgrade or renewal */
        STEP_VALIDATE,  /* POST /v1/licenses/validate */
};

struct probe {
        struct op *op;
        struct licdisc_server server;
        struct tsf_api_call *call;
        bool done;
        int r;
        long status;
        json_t *reply;
        char error[256];
};

/* One local API request in progress. */
struct op {
        struct op *prev, *next;
        struct licclient *lc;
        struct tsf_api_request *req;
        enum op_kind kind;
        enum step step;

        uint8_t hwid[HWID_MAX];
        size_t hwid_len;
        char hwid_hex[2 * HWID_MAX + 1];
        char *device_name;
        char *user_name;
        char *token; /* what the device presented; NULL: nothing */
        enum tsf_lic_verdict verdict;
        struct tsf_lic_token presented; /* for OK and EXPIRED */

        /* The servers this step tries, in order. */
        struct licdisc_server *servers;
        size_t n_servers, cursor;
        bool rediscovered;
        unsigned n_unreachable, n_unknown;
        char last_error[640];
        struct tsf_api_call *call;
        sd_event_source *wait;

        /* OP_DIAGNOSE */
        struct probe *probes;
        size_t n_probes, n_pending;
};

static const char *verdict_name(enum tsf_lic_verdict v) {
        return tsf_lic_verdict_to_string(v) ?: "invalid";
}

/* ---- learnt servers ---------------------------------------------------------- */

static struct learnt *learnt_get(struct licclient *lc, const char *endpoint, bool create) {
        for (size_t i = 0; i < lc->n_learnt; i++)
                if (strcasecmp(lc->learnt[i].endpoint, endpoint) == 0)
                        return &lc->learnt[i];
        if (!create)
                return NULL;
        if (lc->n_learnt == LEARNT_MAX) {
                /* Forget the oldest: a flood of servers costs bounded memory. */
                size_t oldest = 0;

                for (size_t i = 1; i < lc->n_learnt; i++)
                        if (lc->learnt[i].when < lc->learnt[oldest].when)
                                oldest = i;
                lc->learnt[oldest] = (struct learnt){};
                snprintf(lc->learnt[oldest].endpoint, sizeof(lc->learnt[oldest].endpoint), "%s", endpoint);
                return &lc->learnt[oldest];
        }
        if (!lc->learnt) {
                lc->learnt = calloc(LEARNT_MAX, sizeof(*lc->learnt));
                if (!lc->learnt)
                        return NULL;
        }
        snprintf(lc->learnt[lc->n_learnt].endpoint, sizeof(lc->learnt[0].endpoint), "%s", endpoint);
        return &lc->learnt[lc->n_learnt++];
}

static void learn_failure(struct licclient *lc, const char *endpoint, const char *error) {
        struct learnt *l = learnt_get(lc, endpoint, true);

        if (!l)
                return;
        l->reachable = false;
        l->when = tsf_now_monotonic();
        snprintf(l->error, sizeof(l->error), "%s", error);
}

/* A server answered: note it, and its key id if the answer shows one
 * (a token's issuer or the inventory's key_id). */
static void learn_answer(struct licclient *lc, const char *endpoint, json_t *reply) {
        struct learnt *l = learnt_get(lc, endpoint, true);
        const char *key_id = json_string_value(json_object_get(reply, "key_id")),
                   *name = json_string_value(json_object_get(reply, "server")),
                   *token = json_string_value(json_object_get(reply, "token"));
        struct tsf_lic_token t;

        if (!l)
                return;
        l->reachable = true;
        l->error[0] = '\0';
        l->when = tsf_now_monotonic();
        if (name && licdisc_name_valid(name, LICDISC_NAME_MAX))
                snprintf(l->name, sizeof(l->name), "%s", name);
        if (key_id && strlen(key_id) == 2 * TSF_LIC_KEY_ID_SIZE)
                snprintf(l->key_id, sizeof(l->key_id), "%s", key_id);
        /* A relayed (borrowed) token names its lender, not this server. */
        else if (token && !json_object_get(reply, "lender") &&
                 tsf_lic_token_parse(token, &t) == TSF_LIC_VERDICT_OK)
                tsf_hex_encode(t.issuer_key_id, TSF_LIC_KEY_ID_SIZE, l->key_id);
}

/* The key id of a server: announced, or learnt from its answers. */
static const char *server_key_id(struct licclient *lc, const struct licdisc_server *s) {
        const struct learnt *l;

        if (s->key_id[0])
                return s->key_id;
        l = learnt_get(lc, s->endpoint, false);
        return l && l->key_id[0] ? l->key_id : NULL;
}

static const char *server_label(struct licclient *lc, const struct licdisc_server *s) {
        const struct learnt *l = learnt_get(lc, s->endpoint, false);

        if (s->name[0])
                return s->name;
        return l && l->name[0] ? l->name : s->endpoint;
}

/* ---- answers ------------------------------------------------------------------ */

static json_t *grace_json(struct licclient *lc) {
        usec_t now = tsf_now_realtime();
        enum licgrace_state st = licgrace_state(lc->grace, now);
        usec_t started = licgrace_started(lc->grace), ended = licgrace_ended(lc->grace),
               deadline = licgrace_deadline(lc->grace);
        char a[TSF_TIMESTAMP_MAX], b[TSF_TIMESTAMP_MAX];

        return json_pack(
                "{s:s, s:o, s:o, s:o, s:o, s:o, s:I}", "state", licgrace_state_to_string(st), "started_usec",
                started ? json_integer((json_int_t)started) : json_null(), "ended_usec",
                ended ? json_integer((json_int_t)ended) : json_null(), "deadline_usec",
                deadline ? json_integer((json_int_t)deadline) : json_null(), "started",
                started ? json_string(tsf_format_timestamp(started, a, sizeof(a))) : json_null(), "deadline",
                deadline ? json_string(tsf_format_timestamp(deadline, b, sizeof(b))) : json_null(),
                "period_usec", (json_int_t)lc->config->license_grace_period);
}

static void op_free(struct op *op) {
        if (!op)
                return;
        if (op->lc)
                LIST_REMOVE(op->lc->ops, op);
        tsf_api_call_cancel(op->call);
        sd_event_source_disable_unref(op->wait);
        for (size_t i = 0; i < op->n_probes; i++) {
                tsf_api_call_cancel(op->probes[i].call);
                json_decref(op->probes[i].reply);
        }
        free(op->probes);
        free(op->servers);
        free(op->device_name);
        free(op->user_name);
        free(op->token);
        free(op);
}

static void op_finish(struct op *op, int status, json_t *reply) {
        struct tsf_api_request *req = TAKE_PTR(op->req);

        if (!reply)
                status = 500;
        if (req)
                (void)tsf_api_request_resume(req, status, reply);
        else
                json_decref(reply);
        op_free(op);
}

/* The obtain answer. token: the token to push (NULL: the device keeps what
 * it has); kind: what the device holds afterwards. */
static void obtain_answer(struct op *op, bool admit, const char *license, const char *token,
                          const char *kind, usec_t expires, const char *server, const char *lender,
                          const char *code, const char *fmt, ...) _printf_(10, 11);

static void obtain_answer(struct op *op, bool admit, const char *license, const char *token,
                          const char *kind, usec_t expires, const char *server, const char *lender,
                          const char *code, const char *fmt, ...) {
        struct licclient *lc = op->lc;
        char reason[512];
        json_t *reply;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(reason, sizeof(reason), fmt, ap);
        va_end(ap);
        if (admit)
                lc->n_admitted++;
        else
                lc->n_refused++;
        if (admit)
                log_info("Device %s (%s): admitted, %s (%s).", op->device_name, op->hwid_hex, code, reason);
        else
                log_notice("Device %s (%s): refused, %s (%s).", op->device_name, op->hwid_hex, code, reason);
        reply = json_pack(
                "{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:s, s:s, s:o, s:{s:s, s:o}}", "decision",
                admit ? "admit" : "refuse", "license", license ? json_string(license) : json_null(), "token",
                token ? json_string(token) : json_null(), "kind", kind ? json_string(kind) : json_null(),
                "expires_usec", expires ? json_integer((json_int_t)expires) : json_null(), "server",
                server ? json_string(server) : json_null(), "lender",
                lender ? json_string(lender) : json_null(), "reason_code", code, "reason", reason, "grace",
                grace_json(lc), "presented", "verdict", op->token ? verdict_name(op->verdict) : "none",
                "kind",
                op->token && (op->verdict == TSF_LIC_VERDICT_OK || op->verdict == TSF_LIC_VERDICT_EXPIRED)
                        ? json_string(tsf_lic_kind_to_string(op->presented.kind))
                        : json_null());
        op_finish(op, 200, reply);
}

static void logon_answer(struct op *op, bool validated, bool already, const char *server, const char *code,
                         const char *reason) {
        if (validated)
                op->lc->n_validated++;
        log_info("Device %s (%s): logon of %s reported, %s (%s).", op->device_name ?: "?", op->hwid_hex,
                 op->user_name && *op->user_name ? op->user_name : "?", code, reason);
        op_finish(op, 200,
                  json_pack("{s:b, s:b, s:o, s:s, s:s}", "validated", validated, "already", already,
                            "server", server ? json_string(server) : json_null(), "reason_code", code,
                            "reason", reason));
}

/* ---- the servers of a step ---------------------------------------------------- */

static void step_next(struct op *op);

/* The discovered list, with the servers whose key signed the presented
 * token first: only the issuer knows its records. */
static int servers_load(struct op *op) {
        struct licclient *lc = op->lc;
        char issuer[2 * TSF_LIC_KEY_ID_SIZE + 1] = "";
        struct licdisc_server *v = NULL;
        size_t n = 0, front = 0;
        int r;

        free(op->servers);
        op->servers = NULL;
        op->n_servers = op->cursor = 0;
        r = licdisc_listener_list(lc->listener, &v, &n);
        if (r < 0)
                return r;
        if (op->token && op->step != STEP_TEMPORARY)
                tsf_hex_encode(op->presented.issuer_key_id, TSF_LIC_KEY_ID_SIZE, issuer);
        for (size_t i = 0; issuer[0] && i < n; i++) {
                const char *k = server_key_id(lc, &v[i]);

                if (k && strcasecmp(k, issuer) == 0) {
                        struct licdisc_server s = v[i];

                        memmove(&v[front + 1], &v[front], (i - front) * sizeof(*v));
                        v[front++] = s;
                }
        }
        op->servers = v;
        op->n_servers = n;
        return 0;
}

static json_t *step_body(struct op *op) {
        const char *version = op->lc->config->product_version;
        char id[2 * TSF_LIC_TOKEN_ID_SIZE + 1];
        json_t *b;

        tsf_hex_encode(op->presented.token_id, TSF_LIC_TOKEN_ID_SIZE, id);
        switch (op->step) {
        case STEP_TEMPORARY:
                b = json_pack("{s:s, s:s, s:s}", "hardware_id", op->hwid_hex, "device_name", op->device_name,
                              "user_name", op->user_name ?: "");
                break;
        case STEP_CAL:
                b = json_pack("{s:s, s:s, s:s, s:s}", "hardware_id", op->hwid_hex, "device_name",
                              op->device_name, "user_name", op->user_name ?: "", "presented_token_id", id);
                break;
        case STEP_VALIDATE:
                /* The user who logged on: recorded by the license server
                 * when the device came without a cookie. */
                return json_pack("{s:s, s:s, s:s}", "token_id", id, "hardware_id", op->hwid_hex, "user_name",
                                 op->user_name ?: "");
        default:
                return NULL;
        }
        if (b && version && json_object_set_new(b, "product_version", json_string(version)) < 0) {
                json_decref(b);
                return NULL;
        }
        return b;
}

static const char *step_path(enum step s) {
        switch (s) {
        case STEP_TEMPORARY:
                return "/v1/licenses/temporary";
        case STEP_CAL:
                return "/v1/licenses/cal";
        case STEP_VALIDATE:
                return "/v1/licenses/validate";
        }
        return NULL;
}

static void step_start(struct op *op, enum step s) {
        op->step = s;
        op->rediscovered = false;
        op->n_unreachable = op->n_unknown = 0;
        op->last_error[0] = '\0';
        if (servers_load(op) < 0) {
                op_finish(op, 500, tsf_api_error("internal", "out of memory"));
                return;
        }
        step_next(op);
}

/* ---- what to do when the servers are exhausted -------------------------------- */

static void grace_decision(struct op *op) {
        struct licclient *lc = op->lc;
        usec_t now = tsf_now_realtime();
        char when[TSF_TIMESTAMP_MAX];
        const char *why = op->n_servers == 0 ? "no license server is known (discovery found none)"
                                             : "no license server answered";

        switch (licgrace_state(lc->grace, now)) {
        case LICGRACE_ACTIVE:
        case LICGRACE_NOT_STARTED: /* cannot happen: obtain starts it */
                lc->n_grace++;
                obtain_answer(op, true, "grace", NULL, NULL, 0, NULL, NULL, "grace-period",
                              "%s; admitted without a license inside the grace period (until %s)", why,
                              tsf_format_timestamp(licgrace_deadline(lc->grace), when, sizeof(when)));
                return;
        case LICGRACE_ENDED:
                obtain_answer(op, false, NULL, NULL, NULL, 0, NULL, NULL, "license-server-unreachable",
                              "%s, and the grace period ended at %s with the first Device CAL: a device "
                              "needs a license server to get a token",
                              why, tsf_format_timestamp(licgrace_ended(lc->grace), when, sizeof(when)));
                return;
        case LICGRACE_EXPIRED:
                obtain_answer(op, false, NULL, NULL, NULL, 0, NULL, NULL, "grace-expired",
                              "%s, and the licensing grace period expired at %s: a device needs a license "
                              "server to get a token",
                              why, tsf_format_timestamp(licgrace_deadline(lc->grace), when, sizeof(when)));
                return;
        }
}

static void presented_expires_note(struct op *op, char *buf, size_t size) {
        char when[TSF_TIMESTAMP_MAX];

        snprintf(buf, size, "its %s is valid until %s", tsf_lic_kind_to_string(op->presented.kind),
                 tsf_format_timestamp(op->presented.expires, when, sizeof(when)));
}

/* Keep what it has: a valid token (an upgrade or renewal did not happen). */
static void keep_presented(struct op *op, const char *code, const char *why) {
        char note[128];

        presented_expires_note(op, note, sizeof(note));
        obtain_answer(op, true, "valid", NULL, tsf_lic_kind_to_string(op->presented.kind),
                      op->presented.expires, NULL, NULL, code, "%s; %s", why, note);
}

static int on_rediscovery_wait(sd_event_source *s, uint64_t usec, void *userdata);

static void step_exhausted(struct op *op) {
        struct licclient *lc = op->lc;
        bool unreachable = op->n_unreachable > 0 || op->n_servers == 0;

        if (unreachable && op->n_unknown == 0 && !op->rediscovered &&
            lc->config->license_rediscovery_wait > 0) {
                /* DESIGN 3: none answers, rediscover. Ask the group again and
                 * listen a moment before going through the (new) list. */
                int r;

                op->rediscovered = true;
                lc->n_rediscoveries++;
                log_info("No license server answered (%s); rediscovering.",
                         op->last_error[0] ? op->last_error : "none known");
                (void)licdisc_restart(lc->listener);
                r = sd_event_add_time_relative(lc->event, &op->wait, CLOCK_MONOTONIC,
                                               lc->config->license_rediscovery_wait, 0, on_rediscovery_wait,
                                               op);
                if (r >= 0)
                        return;
                log_warning_errno(r, "Failed to wait for rediscovery, going on: %m");
        }
        if (unreachable)
                lc->n_unreachable++;
        switch (op->step) {
        case STEP_TEMPORARY:
                grace_decision(op);
                return;
        case STEP_CAL:
                keep_presented(op, unreachable ? "license-server-unreachable" : "issuer-unknown",
                               unreachable ? "no license server answered the Device CAL request"
                                           : "no license server knows the presented token");
                return;
        case STEP_VALIDATE:
                logon_answer(op, false, false, NULL,
                             unreachable ? "license-server-unreachable" : "issuer-unknown",
                             unreachable ? "no license server answered; the next logon validates"
                                         : "no license server knows the presented token");
                return;
        }
}

static int on_rediscovery_wait(sd_event_source *s, uint64_t usec, void *userdata) {
        struct op *op = userdata;

        op->wait = sd_event_source_disable_unref(op->wait);
        if (servers_load(op) < 0) {
                op_finish(op, 500, tsf_api_error("internal", "out of memory"));
                return 0;
        }
        op->n_unreachable = op->n_unknown = 0;
        step_next(op);
        return 0;
}

/* ---- one server's answer ------------------------------------------------------- */

static const char *reply_error(json_t *reply) {
        return json_string_value(json_object_get(reply, "error")) ?: "";
}

static const char *reply_reason(json_t *reply) {
        return json_string_value(json_object_get(reply, "reason")) ?: "";
}

/* A token answer of a license server: checked before it reaches a device
 * (a server of another farm, or a broken one, must not push garbage). */
static int answer_token(struct op *op, json_t *reply, struct tsf_lic_token *ret) {
        const char *token = json_string_value(json_object_get(reply, "token"));
        int v;

        if (!token)
                return -EBADMSG;
        v = tsf_lic_token_verify(token, op->lc->trust, op->hwid, op->hwid_len, tsf_now_realtime(), ret);
        if (v < 0)
                return v;
        return v == TSF_LIC_VERDICT_OK ? 0 : -v;
}

static void on_step_answer(struct op *op, const struct licdisc_server *s, long status, json_t *reply) {
        struct licclient *lc = op->lc;
        const char *label = server_label(lc, s), *error = reply_error(reply),
                   *lender = json_string_value(json_object_get(reply, "lender"));
        struct tsf_lic_token t;
        int r;

        if (status == 404 && streq_ptr(error, "unknown-token")) {
                /* Not the issuer: the next one may be. */
                op->n_unknown++;
                step_next(op);
                return;
        }
        switch (op->step) {
        case STEP_TEMPORARY:
                if (status != 200) {
                        obtain_answer(op, false, NULL, NULL, NULL, 0, label, NULL, "server-refused",
                                      "license server %s refused a temporary token: %ld %s: %s", label,
                                      status, error, reply_reason(reply));
                        return;
                }
                r = answer_token(op, reply, &t);
                if (r != 0) {
                        snprintf(op->last_error, sizeof(op->last_error),
                                 "%s sent a token that does not verify (%s)", label,
                                 r > 0 ? verdict_name(r) : "malformed answer");
                        log_warning("License server %s: %s; trying the next one.", label, op->last_error);
                        op->n_unreachable++;
                        step_next(op);
                        return;
                }
                lc->n_temporary++;
                obtain_answer(op, true, "new-license", json_string_value(json_object_get(reply, "token")),
                              tsf_lic_kind_to_string(t.kind), t.expires, label, NULL,
                              t.kind == TSF_LIC_CAL ? "cal-valid" : "temporary-issued", "a %s from %s",
                              tsf_lic_kind_to_string(t.kind), label);
                return;
        case STEP_CAL:
                if (status == 200) {
                        bool renewal = op->presented.kind == TSF_LIC_CAL;

                        r = answer_token(op, reply, &t);
                        if (r != 0 || t.kind != TSF_LIC_CAL) {
                                snprintf(op->last_error, sizeof(op->last_error),
                                         "%s sent a Device CAL that does not verify (%s)", label,
                                         r > 0   ? verdict_name(r)
                                         : r < 0 ? "malformed answer"
                                                 : "not a CAL");
                                log_warning("License server %s: %s; trying the next one.", label,
                                            op->last_error);
                                op->n_unreachable++;
                                step_next(op);
                                return;
                        }
                        r = licgrace_end(lc->grace, tsf_now_realtime());
                        if (r > 0)
                                log_notice("First Device CAL: the licensing grace period ends now.");
                        else if (r < 0)
                                log_warning_errno(r,
                                                  "Failed to record the end of the grace period in %s: %m",
                                                  lc->config->license_state);
                        if (renewal)
                                lc->n_renewed++;
                        else
                                lc->n_cal++;
                        obtain_answer(op, true, "upgrade",
                                      json_string_value(json_object_get(reply, "token")), "device-cal",
                                      t.expires, label, lender, renewal ? "cal-renewed" : "cal-issued",
                                      "a Device CAL from %s%s%s%s", lender ? lender : label,
                                      lender ? " (borrowed through " : "", lender ? label : "",
                                      lender ? ")" : "");
                        return;
                }
                if (status == 409 && (streq_ptr(error, "not-validated") ||
                                      streq_ptr(error, "no-inventory") || streq_ptr(error, "too-early"))) {
                        keep_presented(op, error, reply_reason(reply));
                        return;
                }
                if ((status == 409 && (streq_ptr(error, "expired") || streq_ptr(error, "revoked"))) ||
                    (status == 403 && streq_ptr(error, "other-device"))) {
                        /* The record says the presented token is done: start
                         * again as a device without one. */
                        log_info("Device %s: license server %s says its token is %s; asking for a temporary "
                                 "token.",
                                 op->device_name, label, error);
                        step_start(op, STEP_TEMPORARY);
                        return;
                }
                keep_presented(op, "server-refused", reply_reason(reply));
                return;
        case STEP_VALIDATE:
                if (status == 200) {
                        bool already = json_is_true(json_object_get(reply, "already"));

                        logon_answer(op, true, already, label, already ? "already-validated" : "validated",
                                     "the temporary token is validated");
                        return;
                }
                logon_answer(op, false, false, label, *error ? error : "server-refused",
                             reply_reason(reply));
                return;
        }
}

static void on_step_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct op *op = userdata;
        const struct licdisc_server *s = &op->servers[op->cursor - 1];

        op->call = NULL;
        if (r < 0 || status >= 500) {
                char why[200];

                if (r < 0)
                        snprintf(why, sizeof(why), "%s", error && *error ? error : strerror(-r));
                else
                        snprintf(why, sizeof(why), "HTTP %ld %s", status, reply_error(reply));
                learn_failure(op->lc, s->endpoint, why);
                snprintf(op->last_error, sizeof(op->last_error), "%s: %s", server_label(op->lc, s), why);
                log_info("License server %s did not answer: %s.", s->endpoint, why);
                op->n_unreachable++;
                step_next(op);
                return;
        }
        learn_answer(op->lc, s->endpoint, reply);
        on_step_answer(op, s, status, reply);
}

static void step_next(struct op *op) {
        struct licclient *lc = op->lc;
        _cleanup_(json_decrefp) json_t *body = NULL;
        char url[LICDISC_ENDPOINT_MAX + 64];
        int r;

        while (op->cursor < op->n_servers) {
                const struct licdisc_server *s = &op->servers[op->cursor++];

                body = step_body(op);
                if (!body) {
                        op_finish(op, 500, tsf_api_error("internal", "out of memory"));
                        return;
                }
                snprintf(url, sizeof(url), "https://%s%s", s->endpoint, step_path(op->step));
                r = tsf_api_client_start(lc->client, "POST", url, body, lc->config->license_timeout,
                                         on_step_done, op, &op->call);
                if (r >= 0)
                        return;
                log_warning_errno(r, "Failed to call license server %s: %m", s->endpoint);
                op->n_unreachable++;
                json_decref(TAKE_PTR(body));
        }
        step_exhausted(op);
}

/* ---- local API: fields --------------------------------------------------------- */

static void on_request_cancel(struct tsf_api_request *req, void *userdata) {
        struct op *op = userdata;

        /* The API server answered it (timeout) or is going away. */
        op->req = NULL;
        log_warning("A licensing request for device %s was given up (no answer within %llu s).",
                    op->device_name ?: "?", (unsigned long long)(REQUEST_TIMEOUT / USEC_PER_SEC));
        op_free(op);
}

/* A copy of an optional or required string field (tsf_api_field_string). */
static int field_text(json_t *body, const char *key, bool required, size_t min, size_t max, char **ret,
                      json_t **ret_reply) {
        const char *v;
        int r;

        *ret = NULL;
        r = tsf_api_field_string(body, key, required, min, max, &v, ret_reply);
        if (r != 0 || !v)
                return r;
        *ret = strdup(v);
        return *ret ? 0 : -ENOMEM;
}

/* The fields every license route takes: hardware_id (hex), token (optional,
 * the text the device presented), device_name, user_name. */
static int op_new(struct licclient *lc, enum op_kind kind, json_t *body, bool need_device, struct op **ret,
                  json_t **ret_reply) {
        _cleanup_free_ struct op *op = calloc(1, sizeof(*op));
        const char *hwid;
        ssize_t n;
        int r;

        if (!op)
                return -ENOMEM;
        op->kind = kind;
        if (!json_is_object(body)) {
                *ret_reply = tsf_api_error("invalid-request", "the request needs a JSON object as its body");
                return 400;
        }
        hwid = json_string_value(json_object_get(body, "hardware_id"));
        n = hwid ? tsf_hex_decode_strict(hwid, op->hwid, HWID_MIN, HWID_MAX) : -EINVAL;
        if (n < 0) {
                *ret_reply = tsf_api_error("invalid-request",
                                           "'hardware_id' must be %d to %d hex digits (%d to %d bytes)",
                                           2 * HWID_MIN, 2 * HWID_MAX, HWID_MIN, HWID_MAX);
                return 400;
        }
        op->hwid_len = (size_t)n;
        tsf_hex_encode(op->hwid, op->hwid_len, op->hwid_hex);
        if ((r = field_text(body, "device_name", need_device, 1, DEVICE_NAME_MAX, &op->device_name,
                            ret_reply)) ||
            (r = field_text(body, "user_name", false, 0, USER_NAME_MAX, &op->user_name, ret_reply)) ||
            (r = field_text(body, "token", false, 1, TSF_LIC_TEXT_MAX + 64, &op->token, ret_reply))) {
                free(op->device_name);
                free(op->user_name);
                free(op->token);
                return r;
        }
        if (op->token) {
                int v = tsf_lic_token_verify(op->token, lc->trust, op->hwid, op->hwid_len,
                                             tsf_now_realtime(), &op->presented);

                if (v < 0) {
                        free(op->device_name);
                        free(op->user_name);
                        free(op->token);
                        return v;
                }
                op->verdict = v;
        }
        op->lc = lc;
        *ret = TAKE_PTR(op);
        return 0;
}

/* Holds the request until the servers answered. */
static int op_suspend(struct op *op, struct tsf_api_request *req) {
        int r = tsf_api_request_suspend(req, REQUEST_TIMEOUT, on_request_cancel, op);

        if (r < 0) {
                op->lc = NULL; /* not on the list yet */
                op_free(op);
                return r;
        }
        op->req = req;
        LIST_PREPEND(op->lc->ops, op);
        return TSF_API_SUSPENDED;
}

static void grace_note_connection(struct licclient *lc) {
        int r = licgrace_start(lc->grace, tsf_now_realtime());
        char when[TSF_TIMESTAMP_MAX];

        if (r > 0)
                log_notice(
                        "First client connection: the licensing grace period starts now and lasts until %s.",
                        tsf_format_timestamp(licgrace_deadline(lc->grace), when, sizeof(when)));
        else if (r < 0)
                log_warning_errno(
                        r, "Failed to record the start of the grace period in %s (it runs in memory): %m",
                        lc->config->license_state);
}

/* ---- local API: routes ---------------------------------------------------------- */

static int on_check(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                    json_t **ret_reply, void *userdata) {
        struct licclient *lc = userdata;
        struct op *op = NULL;
        const char *presented, *action;
        usec_t now = tsf_now_realtime();
        bool valid;
        json_t *reply;
        int r;

        r = op_new(lc, OP_OBTAIN, body, false, &op, ret_reply);
        if (r != 0)
                return r;
        valid = op->token && op->verdict == TSF_LIC_VERDICT_OK;
        presented = !op->token ? "none"
                    : (op->verdict == TSF_LIC_VERDICT_OK || op->verdict == TSF_LIC_VERDICT_EXPIRED)
                            ? tsf_lic_kind_to_string(op->presented.kind)
                            : "invalid";
        action = license_action_to_string(
                license_action_for(op->token, op->verdict, op->presented.kind, op->presented.expires, now));
        reply = json_pack("{s:s, s:b, s:s, s:s}", "presented", presented, "valid", valid, "verdict",
                          op->token ? verdict_name(op->verdict) : "none", "action", action);
        if (reply && op->token &&
            (op->verdict == TSF_LIC_VERDICT_OK || op->verdict == TSF_LIC_VERDICT_EXPIRED)) {
                char id[2 * TSF_LIC_TOKEN_ID_SIZE + 1], issuer[2 * TSF_LIC_KEY_ID_SIZE + 1];

                tsf_hex_encode(op->presented.token_id, TSF_LIC_TOKEN_ID_SIZE, id);
                tsf_hex_encode(op->presented.issuer_key_id, TSF_LIC_KEY_ID_SIZE, issuer);
                if (json_object_set_new(reply, "token_id", json_string(id)) < 0 ||
                    json_object_set_new(reply, "issuer_key_id", json_string(issuer)) < 0 ||
                    json_object_set_new(reply, "issued_usec",
                                        json_integer((json_int_t)op->presented.issued)) < 0 ||
                    json_object_set_new(reply, "expires_usec",
                                        json_integer((json_int_t)op->presented.expires)) < 0 ||
                    json_object_set_new(reply, "pack",
                                        op->presented.pack_id[0] ? json_string(op->presented.pack_id)
                                                                 : json_null()) < 0)
                        json_decref(TAKE_PTR(reply));
        }
        op_free(op);
        if (!reply)
                return -ENOMEM;
        *ret_reply = reply;
        return 200;
}

static int on_obtain(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                     json_t **ret_reply, void *userdata) {
        struct licclient *lc = userdata;
        usec_t now = tsf_now_realtime();
        enum license_action action;
        struct op *op = NULL;
        int r;

        r = op_new(lc, OP_OBTAIN, body, true, &op, ret_reply);
        if (r != 0)
                return r;
        grace_note_connection(lc);
        r = op_suspend(op, req);
        if (r < 0)
                return r;

        action = license_action_for(op->token, op->verdict, op->presented.kind, op->presented.expires, now);
        if (op->token && op->verdict == TSF_LIC_VERDICT_OK && op->presented.kind == TSF_LIC_CAL &&
            licgrace_end(lc->grace, now) > 0)
                /* A Device CAL exists: whatever the servers say now, the
                 * grace period is over. */
                log_notice("A device presented a Device CAL: the licensing grace period ends now.");
        switch (action) {
        case LICENSE_ACTION_TEMPORARY:
                /* First contact, or what it had ran out: a temporary token
                 * (the server gives back the device's live one if it has one). */
                step_start(op, STEP_TEMPORARY);
                return TSF_API_SUSPENDED;
        case LICENSE_ACTION_REFUSE:
                obtain_answer(op, false, NULL, NULL, NULL, 0, NULL, NULL, verdict_name(op->verdict),
                              "the presented license token is %s: %s", verdict_name(op->verdict),
                              op->verdict == TSF_LIC_VERDICT_OTHER_DEVICE
                                      ? "it was issued to another device (a copied license store?)"
                              : op->verdict == TSF_LIC_VERDICT_UNKNOWN_ISSUER
                                      ? "no trusted license server signed it"
                                      : "it was forged or altered");
                return TSF_API_SUSPENDED;
        case LICENSE_ACTION_NONE:
                keep_presented(op, "cal-valid", "the Device CAL is valid");
                return TSF_API_SUSPENDED;
        case LICENSE_ACTION_CAL:
        case LICENSE_ACTION_RENEW:
                break;
        }
        /* A temporary token asks for a Device CAL, a CAL in its last 7
         * days for a renewal: both at its issuer. */
        step_start(op, STEP_CAL);
        return TSF_API_SUSPENDED;
}

static int on_logon(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                    json_t **ret_reply, void *userdata) {
        struct licclient *lc = userdata;
        struct op *op = NULL;
        int r;

        r = op_new(lc, OP_LOGON, body, false, &op, ret_reply);
        if (r != 0)
                return r;
        if (!op->token) {
                op_free(op);
                *ret_reply =
                        tsf_api_error("invalid-request", "'token' is required: the token the device holds");
                return 400;
        }
        if (op->verdict != TSF_LIC_VERDICT_OK) {
                *ret_reply = tsf_api_error(verdict_name(op->verdict), "the token is %s; nothing to validate",
                                           verdict_name(op->verdict));
                op_free(op);
                return 409;
        }
        r = op_suspend(op, req);
        if (r < 0)
                return r;
        if (op->presented.kind == TSF_LIC_CAL) {
                logon_answer(op, false, false, NULL, "device-cal", "a Device CAL needs no validation");
                return TSF_API_SUSPENDED;
        }
        step_start(op, STEP_VALIDATE);
        return TSF_API_SUSPENDED;
}

/* ---- diagnose ------------------------------------------------------------------ */

static json_t *origins_json(unsigned origins) {
        json_t *a = json_array();

        if (a && (origins & LICDISC_ORIGIN_MULTICAST))
                json_array_append_new(a, json_string("multicast"));
        if (a && (origins & LICDISC_ORIGIN_DNS))
                json_array_append_new(a, json_string("dns"));
        if (a && (origins & LICDISC_ORIGIN_CONFIG))
                json_array_append_new(a, json_string("config"));
        return a;
}

static int problem_add(json_t *list, const char *code, const char *fmt, ...) _printf_(3, 4);
static int problem_add(json_t *list, const char *code, const char *fmt, ...) {
        char reason[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(reason, sizeof(reason), fmt, ap);
        va_end(ap);
        return json_array_append_new(list, json_pack("{s:s, s:s}", "code", code, "reason", reason));
}

static json_t *probe_json(struct licclient *lc, struct probe *p, bool *ret_usable) {
        _cleanup_(json_decrefp) json_t *problems = json_array(), *o = NULL;
        const char *key_id = json_string_value(json_object_get(p->reply, "key_id")) ?: p->server.key_id;
        json_t *packs = json_object_get(p->reply, "packs"), *pack;
        bool reachable = p->r >= 0 && p->status == 200, trusted = false;
        uint64_t available = 0, count = 0;
        size_t i;

        if (!problems)
                return NULL;
        if (key_id && strlen(key_id) == 2 * TSF_LIC_KEY_ID_SIZE) {
                uint8_t id[TSF_LIC_KEY_ID_SIZE];

                if (tsf_hex_decode_strict(key_id, id, sizeof(id), sizeof(id)) == sizeof(id))
                        trusted = tsf_lic_trust_find(lc->trust, id) != NULL;
        }
        json_array_foreach(packs, i, pack) {
                available += (uint64_t)json_integer_value(json_object_get(pack, "available"));
                count += (uint64_t)json_integer_value(json_object_get(pack, "count"));
        }
        if (!reachable)
                problem_add(problems, p->r == -EKEYREJECTED ? "tls-rejected" : "unreachable", "%s",
                            p->error);
        else if (!trusted)
                problem_add(problems, "untrusted",
                            "its signing key %s is not in %s: tokens it issues are refused here (copy its "
                            "license-signing.pub there as NAME.pem)",
                            key_id && *key_id ? key_id : "(none given)", lc->config->trusted_license_keys);
        if (reachable && available == 0 && count > 0)
                problem_add(problems, "no-inventory",
                            "all %" PRIu64
                            " of its Device CALs are issued: new devices keep temporary tokens "
                            "unless it borrows from a peer",
                            count);
        else if (reachable && count == 0)
                problem_add(problems, "no-inventory",
                            "no key pack is installed: devices get temporary tokens only (unless it borrows "
                            "from a peer)");
        *ret_usable = reachable && trusted;
        o = json_pack("{s:s, s:s, s:s, s:o, s:o, s:b, s:o, s:b, s:I, s:I, s:O}", "endpoint",
                      p->server.endpoint, "name",
                      json_string_value(json_object_get(p->reply, "server")) ?: p->server.name, "site",
                      p->server.site, "origins", origins_json(p->server.origins), "key_id",
                      key_id && *key_id ? json_string(key_id) : json_null(), "reachable", reachable, "error",
                      reachable ? json_null() : json_string(p->error), "trusted", trusted, "available",
                      (json_int_t)available, "installed", (json_int_t)count, "problems", problems);
        return TAKE_PTR(o);
}

static void diagnose_finish(struct op *op) {
        struct licclient *lc = op->lc;
        _cleanup_(json_decrefp) json_t *servers = json_array(), *problems = json_array();
        struct licdisc_stats st;
        usec_t now = tsf_now_realtime();
        char when[TSF_TIMESTAMP_MAX];
        size_t usable = 0;
        json_t *reply;

        if (!servers || !problems) {
                op_finish(op, 500, NULL);
                return;
        }
        for (size_t i = 0; i < op->n_probes; i++) {
                bool ok = false;

                json_array_append_new(servers, probe_json(lc, &op->probes[i], &ok));
                usable += ok;
        }
        if (tsf_lic_trust_size(lc->trust) == 0)
                problem_add(
                        problems, "no-trusted-keys",
                        "%s holds no license-server key: every presented token is refused as unknown-issuer",
                        lc->config->trusted_license_keys);
        if (op->n_probes == 0)
                problem_add(problems, "no-license-server",
                            "discovery found no license server (multicast %s, DNS %s, %zu configured)",
                            lc->config->license_discovery ? "on" : "off",
                            lc->config->license_domain ? lc->config->license_domain : "off",
                            tsf_strv_length(lc->config->license_servers));
        else if (usable == 0)
                problem_add(problems, "none-usable", "no license server is both reachable and trusted");
        switch (licgrace_state(lc->grace, now)) {
        case LICGRACE_EXPIRED:
                problem_add(problems, "grace-expired",
                            "the grace period expired at %s: devices without a token are refused when no "
                            "license server answers",
                            tsf_format_timestamp(licgrace_deadline(lc->grace), when, sizeof(when)));
                break;
        case LICGRACE_ACTIVE:
                if (usable == 0)
                        problem_add(problems, "grace-active",
                                    "devices are admitted without a license only until %s",
                                    tsf_format_timestamp(licgrace_deadline(lc->grace), when, sizeof(when)));
                break;
        default:
                break;
        }
        licdisc_listener_get_stats(lc->listener, &st);
        reply = json_pack("{s:O, s:o, s:s, s:I, s:s, s:O, s:{s:I, s:I, s:I, s:I}}", "servers", servers,
                          "grace", grace_json(lc), "trusted_keys_directory",
                          lc->config->trusted_license_keys, "trusted_keys",
                          (json_int_t)tsf_lic_trust_size(lc->trust), "site", lc->config->site ?: "",
                          "problems", problems, "discovery", "received", (json_int_t)st.received,
                          "malformed", (json_int_t)st.malformed, "queries", (json_int_t)st.queries,
                          "dns_failures", (json_int_t)st.dns_failures);
        op_finish(op, 200, reply);
}

static void on_probe_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct probe *p = userdata;
        struct op *op = p->op;

        p->call = NULL;
        p->done = true;
        p->r = r;
        p->status = status;
        if (r >= 0 && status == 200) {
                p->reply = json_incref(reply);
                learn_answer(op->lc, p->server.endpoint, reply);
        } else {
                if (r < 0)
                        snprintf(p->error, sizeof(p->error), "%s", error && *error ? error : strerror(-r));
                else
                        snprintf(p->error, sizeof(p->error), "HTTP %ld %s", status, reply_error(reply));
                learn_failure(op->lc, p->server.endpoint, p->error);
        }
        if (--op->n_pending == 0)
                diagnose_finish(op);
}

static int on_diagnose(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                       json_t **ret_reply, void *userdata) {
        struct licclient *lc = userdata;
        struct licdisc_server *v = NULL;
        struct op *op;
        size_t n = 0;
        int r;

        op = calloc(1, sizeof(*op));
        if (!op)
                return -ENOMEM;
        op->lc = lc;
        op->kind = OP_DIAGNOSE;
        r = licdisc_listener_list(lc->listener, &v, &n);
        if (r < 0) {
                free(op);
                return r;
        }
        op->probes = calloc(n ?: 1, sizeof(*op->probes));
        if (!op->probes) {
                free(v);
                free(op);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
                op->probes[i] = (struct probe){.op = op, .server = v[i]};
        op->n_probes = n;
        free(v);
        r = op_suspend(op, req);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                char url[LICDISC_ENDPOINT_MAX + 32];

                snprintf(url, sizeof(url), "https://%s/v1/inventory", op->probes[i].server.endpoint);
                op->n_pending++;
                r = tsf_api_client_start(lc->client, "GET", url, NULL, lc->config->license_timeout,
                                         on_probe_done, &op->probes[i], &op->probes[i].call);
                if (r < 0) {
                        op->n_pending--;
                        op->probes[i].done = true;
                        op->probes[i].r = r;
                        snprintf(op->probes[i].error, sizeof(op->probes[i].error), "%s", strerror(-r));
                }
        }
        if (op->n_pending == 0)
                diagnose_finish(op);
        return TSF_API_SUSPENDED;
}

static const struct tsf_api_route licclient_routes[] = {
        {"POST", "/v1/license/check", TSF_API_BODY, on_check},
        {"POST", "/v1/license/obtain", TSF_API_BODY, on_obtain},
        {"POST", "/v1/license/logon", TSF_API_BODY, on_logon},
        {"GET", "/v1/license/diagnose", 0, on_diagnose},
        {},
};

/* ---- metrics -------------------------------------------------------------------- */

#define COUNTER(field)                                                \
        static double metric_##field(void *userdata) {                \
                return (double)((struct licclient *)userdata)->field; \
        }
COUNTER(n_admitted)
COUNTER(n_refused)
COUNTER(n_temporary)
COUNTER(n_cal)
COUNTER(n_renewed)
COUNTER(n_validated)
COUNTER(n_grace)
COUNTER(n_unreachable)
COUNTER(n_rediscoveries)

static double metric_servers(void *userdata) {
        return (double)licdisc_listener_count(((struct licclient *)userdata)->listener);
}

static double metric_grace_deadline(void *userdata) {
        return (double)licgrace_deadline(((struct licclient *)userdata)->grace) / USEC_PER_SEC;
}

static const struct {
        const char *name, *help;
        enum tsf_metric_type type;
        tsf_metric_value_t value;
} licclient_metrics[] = {
        {"tsfarm_host_license_servers", "License servers known (discovered and configured).",
         TSF_METRIC_GAUGE, metric_servers},
        {"tsfarm_host_license_grace_deadline_seconds",
         "When the licensing grace period runs out (Unix time; 0: not started).", TSF_METRIC_GAUGE,
         metric_grace_deadline},
        {"tsfarm_host_license_admitted_total", "Devices admitted.", TSF_METRIC_COUNTER, metric_n_admitted},
        {"tsfarm_host_license_refused_total", "Devices refused.", TSF_METRIC_COUNTER, metric_n_refused},
        {"tsfarm_host_license_temporary_total", "Temporary tokens obtained for devices.", TSF_METRIC_COUNTER,
         metric_n_temporary},
        {"tsfarm_host_license_cals_total", "Device CALs obtained (upgrades).", TSF_METRIC_COUNTER,
         metric_n_cal},
        {"tsfarm_host_license_renewals_total", "Device CALs renewed.", TSF_METRIC_COUNTER, metric_n_renewed},
        {"tsfarm_host_license_validations_total", "Temporary tokens validated after logon.",
         TSF_METRIC_COUNTER, metric_n_validated},
        {"tsfarm_host_license_grace_admissions_total",
         "Devices admitted without a token inside the grace period.", TSF_METRIC_COUNTER, metric_n_grace},
        {"tsfarm_host_license_unreachable_total", "Requests no license server answered.", TSF_METRIC_COUNTER,
         metric_n_unreachable},
        {"tsfarm_host_license_rediscoveries_total", "Rediscoveries after no license server answered.",
         TSF_METRIC_COUNTER, metric_n_rediscoveries},
};

int licclient_serve(struct licclient *lc, struct tsf_api_server *api) {
        int r;

        r = tsf_api_server_add_routes(api, licclient_routes, lc);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(licclient_metrics); i++)
                r = tsf_api_metric_add(api, licclient_metrics[i].name, licclient_metrics[i].help,
                                       licclient_metrics[i].type, licclient_metrics[i].value, lc);
        return r;
}

/* ---- set-up --------------------------------------------------------------------- */

static void on_trust_skip(const char *path, int error, void *userdata) {
        log_warning_errno(error, "Not trusting %s: %m", path);
}

static int trust_load(const char *dir, struct tsf_lic_trust **ret) {
        _cleanup_(tsf_lic_trust_freep) struct tsf_lic_trust *t = NULL;
        int r;

        r = tsf_lic_trust_new(&t);
        if (r < 0)
                return log_oom();
        r = tsf_lic_trust_load_dir(t, dir, on_trust_skip, NULL);
        if (r == -ENOENT)
                log_warning(
                        "%s does not exist: no license server is trusted, every presented token is refused. "
                        "Put the license servers' license-signing.pub files there as NAME.pem.",
                        dir);
        else if (r < 0)
                return log_error_errno(r, "Failed to read the trusted license-server keys in %s: %m", dir);
        else
                log_info("Trusting %d license-server key(s) from %s.", r, dir);
        *ret = TAKE_PTR(t);
        return 0;
}

static void on_discovery(struct licdisc_listener *l, enum licdisc_change change,
                         const struct licdisc_server *s, void *userdata) {
        const char *what = change == LICDISC_ADDED     ? "found"
                           : change == LICDISC_REMOVED ? "lapsed"
                                                       : "updated";

        if (change == LICDISC_UPDATED)
                log_debug("License server %s (%s) updated.", s->endpoint, s->name[0] ? s->name : "?");
        else
                log_info("License server %s%s%s%s %s.", s->endpoint, s->name[0] ? " (" : "", s->name,
                         s->name[0] ? ")" : "", what);
}

int licclient_new(sd_event *event, const struct host_config *config, struct licclient **ret) {
        _cleanup_(licclient_freep) struct licclient *lc = NULL;
        struct tsf_api_client_config cc = {
                .ca_file = config->directory_ca,
                .cert_file = config->directory_certificate,
                .key_file = config->directory_key,
                .timeout = config->license_timeout,
                .response_max = 1 << 20,
        };
        struct licdisc_listener_config dc = {
                .net.group = config->license_discovery_group.sin_addr,
                .net.port = ntohs(config->license_discovery_group.sin_port),
                .no_multicast = !config->license_discovery,
                .site = config->site,
                .domain = config->license_domain,
        };
        char when[TSF_TIMESTAMP_MAX];
        int r;

        if (config->site && !licdisc_site_valid(config->site))
                return log_error_errno(-EINVAL,
                                       "[host] site: '%s' is not a site name (1..63 of A-Z a-z 0-9 . - _)",
                                       config->site);
        if (config->license_discovery_interface) {
                dc.net.ifindex = if_nametoindex(config->license_discovery_interface);
                if (dc.net.ifindex == 0)
                        return log_error_errno(-ENODEV,
                                               "[host] license-discovery-interface: no interface '%s'",
                                               config->license_discovery_interface);
        }
        lc = calloc(1, sizeof(*lc));
        if (!lc)
                return log_oom();
        lc->event = sd_event_ref(event);
        lc->config = config;

        r = trust_load(config->trusted_license_keys, &lc->trust);
        if (r < 0)
                return r;
        r = licgrace_load(config->license_state, config->license_grace_period, &lc->grace);
        if (r == -EBADMSG || r == -EFBIG)
                return log_error_errno(
                        r,
                        "%s is not a licensing grace-period file of this version; refusing to "
                        "start rather than grant a new grace period. Restore it or, to start "
                        "the grace period again deliberately, remove it.",
                        config->license_state);
        if (r < 0)
                return log_error_errno(r, "Failed to read the grace-period state %s: %m",
                                       config->license_state);

        r = tsf_api_client_new(&cc, &lc->client);
        if (r >= 0)
                r = tsf_api_client_attach_event(lc->client, event);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the license-server client: %m");

        r = licdisc_listener_new(event, &dc, on_discovery, lc, &lc->listener);
        if (r < 0)
                return log_error_errno(r, "Invalid license discovery settings: %m");
        for (char **s = config->license_servers; s && *s; s++) {
                r = licdisc_listener_add_static(lc->listener, *s, NULL, NULL, NULL);
                if (r == -EEXIST)
                        log_warning("[host] license-servers names %s twice; once is enough.", *s);
                else if (r < 0)
                        return log_error_errno(r, "[host] license-servers: '%s' is not HOST:PORT", *s);
        }
        r = licdisc_listener_start(lc->listener);
        if (r < 0)
                return log_error_errno(r, "Failed to start license-server discovery: %m");

        switch (licgrace_state(lc->grace, tsf_now_realtime())) {
        case LICGRACE_NOT_STARTED:
                log_info("Licensing: the grace period starts with the first client connection.");
                break;
        case LICGRACE_ACTIVE:
                log_info("Licensing: inside the grace period until %s.",
                         tsf_format_timestamp(licgrace_deadline(lc->grace), when, sizeof(when)));
                break;
        case LICGRACE_ENDED:
                log_info("Licensing: the grace period ended with the first Device CAL.");
                break;
        case LICGRACE_EXPIRED:
                log_notice(
                        "Licensing: the grace period expired at %s; devices without a token need a license "
                        "server.",
                        tsf_format_timestamp(licgrace_deadline(lc->grace), when, sizeof(when)));
                break;
        }
        *ret = TAKE_PTR(lc);
        return 0;
}

void licclient_reload(struct licclient *lc, const struct host_config *config) {
        struct tsf_lic_trust *t = NULL;

        if (!lc)
                return;
        lc->config = config;
        if (trust_load(config->trusted_license_keys, &t) >= 0) {
                tsf_lic_trust_free(lc->trust);
                lc->trust = t;
        }
}

struct licclient *licclient_free(struct licclient *lc) {
        if (!lc)
                return NULL;
        /* Requests still waiting are answered by the API server as it goes
         * (their on_cancel frees them); whatever is left goes here. */
        while (lc->ops) {
                struct op *op = lc->ops;

                if (op->req)
                        (void)tsf_api_request_resume(
                                TAKE_PTR(op->req), 503,
                                tsf_api_error("shutting-down", "the agent is stopping"));
                op_free(op);
        }
        licdisc_listener_free(lc->listener);
        tsf_api_client_free(lc->client);
        tsf_lic_trust_free(lc->trust);
        licgrace_free(lc->grace);
        sd_event_unref(lc->event);
        free(lc->learnt);
        free(lc);
        return NULL;
}
