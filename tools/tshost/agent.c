/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The host agent's local API (docs/operations.md "The local API",
 * docs/licensing.md "The terminal server's side"), asynchronously on the
 * loop through lib/api_client over the UNIX socket.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tshost/tshost.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/log.h"

/* The agent refuses a session report's device above this (host.c). */
#define REPORT_DEVICE_MAX 64

struct agent_pending {
        struct conn *conn;
        agent_conn_done_t done;
        struct tsf_api_call *call;
};

static void on_conn_call_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct agent_pending p = *(struct agent_pending *)userdata;

        free(userdata);
        p.done(p.conn, r, status, reply, error);
        conn_kick(p.conn);
}

int agent_call(struct server *srv, struct conn *c, const char *method, const char *path, json_t *body,
               usec_t timeout, agent_conn_done_t done, struct agent_pending **ret) {
        _cleanup_free_ struct agent_pending *p = NULL;
        char url[512];
        int r;

        if (!srv->agent)
                return -ENOTCONN;
        p = malloc(sizeof(*p));
        if (!p)
                return -ENOMEM;
        *p = (struct agent_pending){.conn = c, .done = done};
        snprintf(url, sizeof(url), "http://localhost%s", path);
        r = tsf_api_client_start(srv->agent, method, url, body, timeout, on_conn_call_done, p, &p->call);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}

void agent_cancel(struct agent_pending *p) {
        if (!p)
                return;
        tsf_api_call_cancel(p->call);
        free(p);
}

/* One session report. The agent delivers reports to the directory in the
 * order it receives them, and the directory refuses a report that does not
 * follow from the one before (a reconnect after the logoff of the same
 * session): so only one is on the way at a time, in the order made. */
struct report {
        struct report *next;
        struct server *srv;
        json_t *body;
        char what[TSHOST_USER_MAX + 64];
};

static void report_free(struct report *rp) {
        if (!rp)
                return;
        json_decref(rp->body);
        free(rp);
}

static void report_next(struct server *srv);

static void on_report_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct report *rp = userdata;
        struct server *srv = rp->srv;
        const char *code = json_string_value(json_object_get(reply, "error"));

        if (r < 0)
                log_warning_errno(r, "Failed to report %s to the host agent: %s, ignoring.", rp->what,
                                  error);
        else if (status == 409 && streq_ptr(code, "no-directory"))
                log_debug("Host agent follows no directory; %s not reported.", rp->what);
        else if (status / 100 != 2)
                log_warning("Host agent refused the report of %s: %ld %s: %s", rp->what, status, code ?: "?",
                            json_string_value(json_object_get(reply, "reason")) ?: "");
        else
                log_debug("Reported %s to the host agent.", rp->what);
        srv->report_sending = NULL;
        report_free(rp);
        report_next(srv);
}

/* Sends the oldest queued report unless one is on the way. */
static void report_next(struct server *srv) {
        int r;

        while (!srv->report_sending && srv->reports) {
                struct report *rp = srv->reports;

                srv->reports = rp->next;
                if (!srv->reports)
                        srv->reports_tail = NULL;
                rp->next = NULL;
                r = tsf_api_client_start(srv->agent, "POST", "http://localhost/v1/sessions/event", rp->body,
                                         0, on_report_done, rp, NULL);
                if (r < 0) {
                        log_warning_errno(r, "Failed to report %s to the host agent: %m, ignoring.",
                                          rp->what);
                        report_free(rp);
                        continue;
                }
                srv->report_sending = rp;
        }
}

void agent_report(struct server *srv, const char *event, const char *user, uint32_t session_id,
                  const char *device, const char *client_address) {
        struct report *rp;
        char dev[REPORT_DEVICE_MAX + 1];
        struct in_addr a;

        if (!srv->agent)
                return;
        rp = calloc(1, sizeof(*rp));
        if (!rp)
                return (void)log_oom();
        rp->srv = srv;
        rp->body = json_pack("{s:s, s:s, s:I}", "event", event, "user", user, "session_id",
                             (json_int_t)session_id);
        if (!rp->body) {
                report_free(rp);
                return (void)log_oom();
        }
        snprintf(rp->what, sizeof(rp->what), "%s of %s (session %" PRIu32 ")", event, user, session_id);
        if (device && *device) {
                tshost_text_copy(dev, sizeof(dev), device);
                (void)json_object_set_new(rp->body, "device", json_string(dev));
        }
        if (client_address && inet_pton(AF_INET, client_address, &a) == 1)
                (void)json_object_set_new(rp->body, "client_address", json_string(client_address));
        if (srv->reports_tail)
                srv->reports_tail->next = rp;
        else
                srv->reports = rp;
        srv->reports_tail = rp;
        report_next(srv);
}

void agent_reports_free(struct server *srv) {
        while (srv->reports) {
                struct report *rp = srv->reports;

                srv->reports = rp->next;
                report_free(rp);
        }
        srv->reports_tail = NULL;
        report_free(srv->report_sending);
        srv->report_sending = NULL;
}

/* Cut at a UTF-8 boundary; the input is trusted to be UTF-8 (our own
 * agent's JSON, or text the protocol already checked) except that control
 * characters are replaced, so the result is protocol "text". */
void tshost_text_copy(char *dst, size_t size, const char *src) {
        size_t n = 0;

        if (size == 0)
                return;
        for (const unsigned char *p = (const unsigned char *)src; *p;) {
                size_t len = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3 : 4;
                bool ok = true;

                for (size_t i = 1; i < len; i++)
                        if ((p[i] & 0xC0) != 0x80)
                                ok = false;
                if (!ok || (*p & 0xF8) == 0xF8 || (*p & 0xC0) == 0x80)
                        len = 1, ok = false;
                /* C1 controls are U+0080..U+009F: C2 80..C2 9F. */
                if (len == 2 && p[0] == 0xC2 && p[1] < 0xA0)
                        ok = false;
                if (len == 1 && (*p < 0x20 || *p == 0x7F || *p >= 0x80))
                        ok = false;
                if (!ok) {
                        if (n + 1 >= size)
                                break;
                        dst[n++] = '?';
                        p += len;
                        continue;
                }
                if (n + len >= size)
                        break;
                memcpy(dst + n, p, len);
                n += len;
                p += len;
        }
        dst[n] = '\0';
}
