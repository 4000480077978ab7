/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The API server: one libmicrohttpd daemon per listener (TLS on TCP, plain
 * HTTP on the UNIX socket), both in MHD's external-epoll mode so that they
 * run on the agent's sd-event loop: MHD's epoll fd is an sd-event I/O
 * source, MHD_get_timeout() drives a one-shot timer, and every callback
 * ends with MHD_run() + re-arming that timer. No threads.
 *
 * A request goes through these steps, each refusing with a 4xx and a JSON
 * reason before the next:
 *
 *   headers ─▶ authenticate ─▶ route ─▶ body limits ─▶ read body ─▶ JSON ─▶ handler
 *              (cert / creds)  404/405   413/415/400    413          400
 *
 * Refusals decided at "headers" are queued at once, so MHD never reads the
 * body of a request it will refuse and closes the connection after the
 * answer; except that a refused body of up to 1 MiB is read and discarded
 * first, so that the client is not reset mid-send and sees the reason
 * (refuse_body() explains). The connection timeout bounds a slow sender.
 *
 * TLS: MHD with MHD_OPTION_HTTPS_MEM_TRUST asks for a client certificate
 * (GNUTLS_CERT_REQUEST) but does not check it. We do, once per
 * connection, with gnutls_certificate_verify_peers() against the farm CA
 * and the clientAuth purpose, and take the peer's node name from the
 * certificate's single CN.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <jansson.h>
#include <microhttpd.h>
#include <systemd/sd-event.h>

#include "tsfarm/api.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsfarm/pki.h"

/* Certificates and keys are small; a bigger "PEM file" is a mistake. */
#define PEM_FILE_MAX (256 * 1024)
#define REASON_MAX 200
/* TLS 1.2 and 1.3 only, GnuTLS's "NORMAL" ciphers otherwise. */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define PER_IP_CONNECTIONS 64u
/* A refused body up to this size is read and discarded (see refuse_body). */
#define DRAIN_MAX ((size_t)1024 * 1024)
/* A long poll may end a little late, not 250 ms (sd-event's default) late. */
#define DEADLINE_ACCURACY (10 * USEC_PER_MSEC)

struct listener {
        struct tsf_api_server *server;
        enum tsf_api_transport transport;
        struct MHD_Daemon *daemon;
        sd_event_source *io, *timer;
};

struct route_set {
        const struct tsf_api_route *routes;
        void *userdata;
};

struct metric {
        const char *name, *help;
        enum tsf_metric_type type;
        tsf_metric_value_t value;
        void *userdata;
};

struct tsf_api_server {
        sd_event *event;
        size_t body_max;
        usec_t idle_timeout;
        unsigned connection_limit;

        char *listen_address;
        uint16_t port;
        char *cert_pem, *key_pem, *ca_pem;
        size_t key_len;

        char *unix_path;
        mode_t unix_mode;
        gid_t unix_group;
        bool unix_group_set;
        bool unix_bound; /* we made the socket file: remove it at the end */

        struct listener tls, unix_l;
        struct route_set *sets;
        size_t n_sets;
        struct metric *metrics;
        size_t n_metrics;
        struct tsf_api_request *suspended; /* list of suspended requests */

        uint64_t n_requests, n_refused, n_invalid, n_errors;
        unsigned n_suspended;
};

/* Per connection (MHD's socket context): who the peer is, decided once. */
struct conn_ctx {
        bool checked;
        unsigned status; /* != 0: refused, with error and reason */
        const char *error;
        char reason[REASON_MAX];
        struct tsf_api_peer peer;
};

enum req_state {
        REQ_RECEIVING,   /* headers and body arriving */
        REQ_DISPATCHING, /* in the handler */
        REQ_SUSPENDED,   /* long poll: waiting for resume or the deadline */
        REQ_ANSWERED,    /* answer stored, to be queued at MHD's next call */
        REQ_DONE,        /* answer queued */
};

struct tsf_api_request {
        struct listener *l;
        struct MHD_Connection *conn;
        const char *method, *url; /* MHD's, valid until the request completes */
        const struct tsf_api_route *route;
        void *userdata;
        struct conn_ctx *cc;
        enum req_state state;
        bool in_handler;

        char *body;
        size_t body_len, body_alloc;
        /* A refusal found while reading the body, sent when it is read. */
        unsigned fail_status;
        json_t *fail_reply;
        size_t discarded;

        /* The answer of a suspended request, queued when MHD calls again. */
        unsigned status;
        json_t *reply;
        sd_event_source *deadline;
        tsf_api_cancel_t on_cancel;
        void *cancel_userdata;
        struct tsf_api_request *prev, *next;
};

/* GET /metrics is served by the server itself; this marks the route. */
static const struct tsf_api_route metrics_route = {"GET", "/metrics", 0, NULL};

/* ---- small helpers ----------------------------------------------------- */

json_t *tsf_api_error(const char *error, const char *format, ...) {
        char reason[512];
        va_list ap;

        va_start(ap, format);
        vsnprintf(reason, sizeof(reason), format, ap);
        va_end(ap);
        return json_pack("{s:s, s:s}", "error", error, "reason", reason);
}

int tsf_api_field_string(json_t *body, const char *key, bool required, size_t min, size_t max,
                         const char **ret, json_t **ret_reply) {
        json_t *v = json_object_get(body, key);
        size_t n;

        *ret = NULL;
        if (!v || json_is_null(v)) {
                if (!required)
                        return 0;
                *ret_reply = tsf_api_error("invalid-request", "'%s' is required", key);
                return 400;
        }
        if (!json_is_string(v)) {
                *ret_reply = tsf_api_error("invalid-request", "'%s' must be a string", key);
                return 400;
        }
        n = json_string_length(v);
        if (n < min || n > max || strlen(json_string_value(v)) != n) {
                *ret_reply = tsf_api_error("invalid-request", "'%s' must have %zu to %zu bytes, not %zu",
                                           key, min, max, n);
                return 400;
        }
        *ret = json_string_value(v);
        return 0;
}

_printf_(2, 0) static void mhd_log(void *cls, const char *format, va_list ap) {
        char buf[512];
        size_t n;

        vsnprintf(buf, sizeof(buf), format, ap);
        n = strlen(buf);
        while (n > 0 && buf[n - 1] == '\n')
                buf[--n] = '\0';
        log_debug("api: libmicrohttpd: %s", buf);
}

/* Reads a whole (small) file, NUL-terminated. */
static int read_small_file(const char *path, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if (st.st_size > PEM_FILE_MAX)
                return -EFBIG;
        buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return -ENOMEM;
        while (len < (size_t)st.st_size) {
                ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        buf[len] = '\0';
        *ret = TAKE_PTR(buf);
        if (ret_len)
                *ret_len = len;
        return 0;
}

/* ---- event loop glue --------------------------------------------------- */

/* After every MHD_run(): MHD says when it next wants to run (a connection
 * timeout, or 0 when TLS has buffered data epoll cannot see). */
static void listener_rearm(struct listener *l) {
        MHD_UNSIGNED_LONG_LONG ms;
        uint64_t now;

        if (MHD_get_timeout(l->daemon, &ms) != MHD_YES) {
                (void)sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
                return;
        }
        if (sd_event_now(l->server->event, CLOCK_MONOTONIC, &now) < 0)
                now = tsf_now_monotonic();
        /* Mostly this is an idle connection's deadline, which every request
         * moves a little. With a coarse accuracy sd-event's wake-up stays
         * where it was and the timerfd is not reprogrammed per request (it
         * was 17% of the directory's CPU at 10k queries/s); an idle
         * connection closed a quarter of a second late costs nothing. */
        (void)sd_event_source_set_time_accuracy(l->timer, ms >= 1000 ? 250 * USEC_PER_MSEC : USEC_PER_MSEC);
        (void)sd_event_source_set_time(l->timer, now + (uint64_t)ms * USEC_PER_MSEC);
        (void)sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
}

/* Asks for an MHD_run() soon, without calling it from inside one (a
 * handler resuming another request runs inside MHD_run). */
static void listener_kick(struct listener *l) {
        if (!l->timer)
                return;
        (void)sd_event_source_set_time_accuracy(l->timer, USEC_PER_MSEC);
        (void)sd_event_source_set_time(l->timer, 1);
        (void)sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
}

static int on_mhd_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        struct listener *l = userdata;

        (void)MHD_run(l->daemon);
        listener_rearm(l);
        return 0;
}

static int on_mhd_timer(sd_event_source *source, uint64_t usec, void *userdata) {
        return on_mhd_io(source, -1, 0, userdata);
}

/* ---- authentication ---------------------------------------------------- */

_printf_(4, 5) static void refuse_peer(struct conn_ctx *cc, unsigned status, const char *error,
                                       const char *format, ...) {
        va_list ap;

        cc->status = status;
        cc->error = error;
        va_start(ap, format);
        vsnprintf(cc->reason, sizeof(cc->reason), format, ap);
        va_end(ap);
        log_debug("api: refusing peer: %s: %s", error, cc->reason);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(gnutls_x509_crt_t, gnutls_x509_crt_deinit);

static void tls_authenticate(struct MHD_Connection *conn, struct conn_ctx *cc) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
        /* The client certificate must be meant for TLS clients: a farm CA
         * that also signs, say, code-signing certificates stays safe. */
        gnutls_typed_vdata_st purpose = {
                .type = GNUTLS_DT_KEY_PURPOSE_OID,
                .data = (void *)GNUTLS_KP_TLS_WWW_CLIENT,
        };
        _cleanup_(gnutls_x509_crt_deinitp) gnutls_x509_crt_t crt = NULL;
        const gnutls_datum_t *certs;
        unsigned n_certs = 0, status = 0;
        char cn[TSF_API_NODE_MAX + 1];
        size_t size = sizeof(cn);
        int r;

        if (!ci || !ci->tls_session)
                return refuse_peer(cc, MHD_HTTP_FORBIDDEN, "certificate-required", "no TLS session");
        certs = gnutls_certificate_get_peers(ci->tls_session, &n_certs);
        if (!certs || n_certs == 0)
                return refuse_peer(cc, MHD_HTTP_FORBIDDEN, "certificate-required",
                                   "a client certificate issued by the farm CA is required");

        r = gnutls_certificate_verify_peers(ci->tls_session, &purpose, 1, &status);
        if (r < 0)
                return refuse_peer(cc, MHD_HTTP_FORBIDDEN, "certificate-rejected",
                                   "the client certificate could not be verified: %s", gnutls_strerror(r));
        if (status != 0) {
                gnutls_datum_t text = {};

                if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) < 0)
                        text.data = NULL;
                refuse_peer(cc, MHD_HTTP_FORBIDDEN, "certificate-rejected",
                            "the client certificate is not valid for the farm CA: %s",
                            text.data ? (const char *)text.data : "verification failed");
                gnutls_free(text.data);
                return;
        }

        /* Verified: now whose is it. Exactly one CN, a valid node name. */
        if (gnutls_x509_crt_init(&crt) < 0 ||
            gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) < 0)
                return refuse_peer(cc, MHD_HTTP_FORBIDDEN, "certificate-rejected",
                                   "the client certificate cannot be parsed");
        r = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, cn, &size);
        if (r < 0 || strlen(cn) != size || !tsf_pki_node_name_valid(cn))
                return refuse_peer(cc, MHD_HTTP_FORBIDDEN, "certificate-rejected",
                                   "the client certificate's CN is missing or not a valid node name");
        {
                char other[8];
                size_t other_size = sizeof(other);

                if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 1, 0, other,
                                                  &other_size) != GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
                        return refuse_peer(cc, MHD_HTTP_FORBIDDEN, "certificate-rejected",
                                           "the client certificate has more than one CN");
        }
        cc->peer.transport = TSF_API_TRANSPORT_TLS;
        memcpy(cc->peer.node, cn, size + 1);
        cc->peer.pid = -1;
        cc->peer.uid = (uid_t)-1;
        cc->peer.gid = (gid_t)-1;
}

/* Whether gid is among the peer's supplementary groups (SO_PEERGROUPS,
 * Linux 4.13): a user added to the group is let in without a re-login of
 * the agent, as with a file's group permission. */
static bool peer_in_group(int fd, gid_t gid) {
        _cleanup_free_ gid_t *groups = NULL;
        socklen_t len = 64 * sizeof(gid_t);

        for (int tries = 0; tries < 3; tries++) {
                gid_t *g = realloc(groups, len);

                if (!g)
                        return false;
                groups = g;
                if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) {
                        for (size_t i = 0; i < len / sizeof(gid_t); i++)
                                if (groups[i] == gid)
                                        return true;
                        return false;
                }
                if (errno != ERANGE)
                        return false;
                /* len now holds the size needed. */
        }
        return false;
}

static void unix_authenticate(struct tsf_api_server *s, struct MHD_Connection *conn, struct conn_ctx *cc) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct ucred uc = {};
        socklen_t len = sizeof(uc);

        if (!ci || getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
                return refuse_peer(cc, MHD_HTTP_FORBIDDEN, "peer-not-allowed",
                                   "the peer's credentials cannot be read");
        cc->peer.transport = TSF_API_TRANSPORT_UNIX;
        cc->peer.pid = uc.pid;
        cc->peer.uid = uc.uid;
        cc->peer.gid = uc.gid;
        if (uc.uid == 0)
                return;
        if (s->unix_group_set && (uc.gid == s->unix_group || peer_in_group(ci->connect_fd, s->unix_group)))
                return;
        if (s->unix_group_set)
                refuse_peer(cc, MHD_HTTP_FORBIDDEN, "peer-not-allowed",
                            "uid %u (pid %d) is neither root nor in group %u", (unsigned)uc.uid, (int)uc.pid,
                            (unsigned)s->unix_group);
        else
                refuse_peer(cc, MHD_HTTP_FORBIDDEN, "peer-not-allowed", "uid %u (pid %d) is not root",
                            (unsigned)uc.uid, (int)uc.pid);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
        if (toe == MHD_CONNECTION_NOTIFY_STARTED)
                /* NULL (out of memory) makes the request handler close it. */
                *socket_context = calloc(1, sizeof(struct conn_ctx));
        else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
                free(*socket_context);
                *socket_context = NULL;
        }
}

/* ---- answers ----------------------------------------------------------- */

/* Queues status + reply (reference taken; NULL: no body). */
static enum MHD_Result queue_json(struct tsf_api_request *req, unsigned status, json_t *reply,
                                  const char *allow) {
        struct MHD_Response *resp;
        enum MHD_Result ret;
        char *text = NULL;
        size_t len = 0;

        if (reply) {
                text = json_dumps(reply, JSON_COMPACT);
                json_decref(reply);
                if (!text)
                        return MHD_NO; /* out of memory: drop the connection */
                len = strlen(text);
                text[len] = '\n'; /* replaces the NUL: curl users get a tidy line */
                len++;
        }
        resp = len > 0 ? MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE)
                       : MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (!resp) {
                free(text);
                return MHD_NO;
        }
        if (len > 0)
                (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        if (allow)
                (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        ret = MHD_queue_response(req->conn, status, resp);
        MHD_destroy_response(resp);
        req->state = REQ_DONE;
        return ret;
}

/* A refusal by the plumbing: 4xx with {"error", "reason"}. */
_printf_(4, 5) static enum MHD_Result
        refuse(struct tsf_api_request *req, unsigned status, const char *error, const char *format, ...) {
        char reason[REASON_MAX];
        va_list ap;

        va_start(ap, format);
        vsnprintf(reason, sizeof(reason), format, ap);
        va_end(ap);
        req->l->server->n_invalid++;
        log_debug("api: %s %s: %u %s: %s", req->method, req->url, status, error, reason);
        return queue_json(req, status, tsf_api_error(error, "%s", reason), NULL);
}

/* A refusal because of the body, decided from the headers. Answering
 * before the body is read makes MHD close the connection with the body
 * still unread, and the kernel then resets it: a client still sending
 * sees "connection reset", not our 413. So unless the client waits for
 * "100 Continue" (then MHD answers instead of inviting the body), a body
 * of up to DRAIN_MAX bytes is read and thrown away and the refusal sent
 * after it; a bigger one is refused at once, reset or not. */
_printf_(5, 6) static enum MHD_Result
        refuse_body(struct tsf_api_request *req, unsigned long long length, unsigned status,
                    const char *error, const char *format, ...) {
        const char *expect = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
        char reason[REASON_MAX];
        va_list ap;

        va_start(ap, format);
        vsnprintf(reason, sizeof(reason), format, ap);
        va_end(ap);
        if ((expect && strcasecmp(expect, "100-continue") == 0) || length > DRAIN_MAX)
                return refuse(req, status, error, "%s", reason);
        log_debug("api: %s %s: %u %s after the body: %s", req->method, req->url, status, error, reason);
        req->fail_status = status;
        req->fail_reply = tsf_api_error(error, "%s", reason);
        return MHD_YES;
}

/* ---- /metrics ---------------------------------------------------------- */

static void metric_value(FILE *f, double v) {
        if (isnan(v))
                fputs("NaN", f);
        else if (isinf(v))
                fputs(v > 0 ? "+Inf" : "-Inf", f);
        else if (v == floor(v) && fabs(v) < 9007199254740992.0) /* 2^53: exact as an integer */
                fprintf(f, "%.0f", v);
        else
                fprintf(f, "%.17g", v);
}

/* HELP text escapes backslash and newline (text format 0.0.4). */
static void metric_help(FILE *f, const char *help) {
        for (const char *p = help; *p; p++) {
                if (*p == '\\')
                        fputs("\\\\", f);
                else if (*p == '\n')
                        fputs("\\n", f);
                else
                        fputc(*p, f);
        }
}

static enum MHD_Result queue_metrics(struct tsf_api_request *req) {
        struct tsf_api_server *s = req->l->server;
        struct MHD_Response *resp;
        enum MHD_Result ret;
        char *text = NULL;
        size_t len = 0;
        FILE *f;

        f = open_memstream(&text, &len);
        if (!f)
                return MHD_NO;
        for (size_t i = 0; i < s->n_metrics; i++) {
                const struct metric *m = &s->metrics[i];

                fprintf(f, "# HELP %s ", m->name);
                metric_help(f, m->help);
                fprintf(f, "\n# TYPE %s %s\n%s ", m->name,
                        m->type == TSF_METRIC_COUNTER ? "counter" : "gauge", m->name);
                metric_value(f, m->value(m->userdata));
                fputc('\n', f);
        }
        if (fclose(f) != 0 || !text) {
                free(text);
                return MHD_NO;
        }
        resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(text);
                return MHD_NO;
        }
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                      "text/plain; version=0.0.4; charset=utf-8");
        ret = MHD_queue_response(req->conn, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp);
        req->state = REQ_DONE;
        return ret;
}

static bool metric_name_valid(const char *name) {
        if (!name || !*name)
                return false;
        for (const char *p = name; *p; p++) {
                char c = *p;
                bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                          (p > name && c >= '0' && c <= '9');

                if (!ok)
                        return false;
        }
        return true;
}

int tsf_api_metric_add(struct tsf_api_server *s, const char *name, const char *help,
                       enum tsf_metric_type type, tsf_metric_value_t value, void *userdata) {
        struct metric *m;

        if (!metric_name_valid(name) || !help || !value ||
            (type != TSF_METRIC_COUNTER && type != TSF_METRIC_GAUGE))
                return -EINVAL;
        for (size_t i = 0; i < s->n_metrics; i++)
                if (strcmp(s->metrics[i].name, name) == 0)
                        return -EEXIST;
        m = reallocarray(s->metrics, s->n_metrics + 1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        s->metrics = m;
        s->metrics[s->n_metrics++] = (struct metric){name, help, type, value, userdata};
        return 0;
}

static double metric_requests(void *userdata) {
        return (double)((struct tsf_api_server *)userdata)->n_requests;
}
static double metric_refused(void *userdata) {
        return (double)((struct tsf_api_server *)userdata)->n_refused;
}
static double metric_invalid(void *userdata) {
        return (double)((struct tsf_api_server *)userdata)->n_invalid;
}
static double metric_errors(void *userdata) {
        return (double)((struct tsf_api_server *)userdata)->n_errors;
}
static double metric_suspended(void *userdata) {
        return (double)((struct tsf_api_server *)userdata)->n_suspended;
}

/* ---- routing ----------------------------------------------------------- */

/* Finds the route for method + path: the exact path, else the longest
 * prefix. Returns 0, -ENOENT (no such path), or -EOPNOTSUPP (the path
 * exists, not with this method; `allow` lists the methods it has). */
static int find_route(struct tsf_api_server *s, const char *method, const char *path,
                      const struct tsf_api_route **ret, void **ret_userdata, char *allow,
                      size_t allow_size) {
        const struct tsf_api_route *best = NULL;
        size_t best_len = 0;
        bool best_exact = false;

        allow[0] = '\0';
        if (strcmp(path, metrics_route.path) == 0) {
                if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
                        snprintf(allow, allow_size, "GET");
                        return -EOPNOTSUPP;
                }
                *ret = &metrics_route;
                *ret_userdata = NULL;
                return 0;
        }

        /* First pass: the best matching path, whatever the method. */
        for (size_t i = 0; i < s->n_sets; i++)
                for (const struct tsf_api_route *r = s->sets[i].routes; r->method; r++) {
                        size_t n = strlen(r->path);
                        bool exact = strcmp(path, r->path) == 0;
                        bool prefix = (r->flags & TSF_API_PREFIX) && strncmp(path, r->path, n) == 0;

                        if (exact && !(r->flags & TSF_API_PREFIX)) {
                                if (!best_exact)
                                        best = r, best_len = n, best_exact = true;
                        } else if (prefix && !best_exact && n > best_len)
                                best = r, best_len = n;
                }
        if (!best)
                return -ENOENT;

        /* Second pass: among routes with that same path, the method. */
        for (size_t i = 0; i < s->n_sets; i++)
                for (const struct tsf_api_route *r = s->sets[i].routes; r->method; r++) {
                        size_t used = strlen(allow);

                        if (strcmp(r->path, best->path) != 0 ||
                            (r->flags & TSF_API_PREFIX) != (best->flags & TSF_API_PREFIX))
                                continue;
                        if (strcmp(r->method, method) == 0) {
                                *ret = r;
                                *ret_userdata = s->sets[i].userdata;
                                return 0;
                        }
                        snprintf(allow + used, allow_size - used, "%s%s", used ? ", " : "", r->method);
                }
        return -EOPNOTSUPP;
}

/* "application/json", any case, optionally with parameters. */
static bool content_type_json(struct MHD_Connection *conn) {
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        size_t n = strlen("application/json");

        if (!ct || strncasecmp(ct, "application/json", n) != 0)
                return false;
        return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t';
}

/* ---- the request handler ----------------------------------------------- */

static enum MHD_Result request_begin(struct tsf_api_request *req) {
        struct tsf_api_server *s = req->l->server;
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        const char *cl, *te;
        unsigned long long length = 0;
        char allow[128];
        bool has_body;
        int r;

        req->cc = ci ? ci->socket_context : NULL;
        if (!req->cc)
                return MHD_NO;
        if (!req->cc->checked) {
                if (req->l->transport == TSF_API_TRANSPORT_TLS)
                        tls_authenticate(req->conn, req->cc);
                else
                        unix_authenticate(s, req->conn, req->cc);
                req->cc->checked = true;
        }
        if (req->cc->status != 0) {
                s->n_refused++;
                return queue_json(req, req->cc->status, tsf_api_error(req->cc->error, "%s", req->cc->reason),
                                  NULL);
        }

        r = find_route(s, req->method, req->url, &req->route, &req->userdata, allow, sizeof(allow));
        if (r == -ENOENT)
                return refuse(req, MHD_HTTP_NOT_FOUND, "not-found", "no such resource: %s", req->url);
        if (r == -EOPNOTSUPP) {
                req->l->server->n_invalid++;
                return queue_json(req, MHD_HTTP_METHOD_NOT_ALLOWED,
                                  tsf_api_error("method-not-allowed",
                                                "%s is not allowed on %s (allowed: %s)", req->method,
                                                req->url, allow),
                                  allow);
        }
        if ((req->route->flags & TSF_API_LOCAL) && req->l->transport != TSF_API_TRANSPORT_UNIX)
                return refuse(req, MHD_HTTP_FORBIDDEN, "local-only", "%s is only served on the local socket",
                              req->url);

        /* MHD has checked Content-Length's syntax already. */
        cl = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        te = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        if (cl)
                length = strtoull(cl, NULL, 10);
        has_body = length > 0 || te;
        if (has_body && !(req->route->flags & TSF_API_BODY))
                return refuse_body(req, length, MHD_HTTP_BAD_REQUEST, "unexpected-body",
                                   "%s %s takes no body", req->method, req->url);
        if (length > s->body_max)
                return refuse_body(req, length, MHD_HTTP_CONTENT_TOO_LARGE, "too-large",
                                   "the body has %llu bytes, at most %zu are accepted", length, s->body_max);
        if (has_body && !content_type_json(req->conn))
                return refuse_body(req, length, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type",
                                   "the body must be Content-Type: application/json");
        return MHD_YES;
}

/* Returns false when the connection should be dropped: a refused body
 * that goes on past DRAIN_MAX, or no memory for it. */
static bool request_body(struct tsf_api_request *req, const char *data, size_t size) {
        struct tsf_api_server *s = req->l->server;

        if (req->fail_status != 0) {
                /* Refused already: discard, within reason. */
                req->discarded += size;
                return req->discarded <= DRAIN_MAX;
        }
        if (size > s->body_max - req->body_len) {
                req->fail_status = MHD_HTTP_CONTENT_TOO_LARGE;
                req->fail_reply =
                        tsf_api_error("too-large", "the body has more than %zu bytes", s->body_max);
                req->discarded = req->body_len + size;
                free(req->body);
                req->body = NULL;
                req->body_len = req->body_alloc = 0;
                return true;
        }
        if (req->body_len + size > req->body_alloc) {
                size_t n = MAX(req->body_alloc * 2, req->body_len + size);
                char *b;

                n = MIN(n, s->body_max);
                b = realloc(req->body, n);
                if (!b)
                        return false;
                req->body = b;
                req->body_alloc = n;
        }
        memcpy(req->body + req->body_len, data, size);
        req->body_len += size;
        return true;
}

static void suspended_unlink(struct tsf_api_request *req) {
        struct tsf_api_server *s = req->l->server;

        if (req->prev)
                req->prev->next = req->next;
        else if (s->suspended == req)
                s->suspended = req->next;
        if (req->next)
                req->next->prev = req->prev;
        req->prev = req->next = NULL;
        req->deadline = sd_event_source_disable_unref(req->deadline);
        req->on_cancel = NULL;
        s->n_suspended--;
}

static enum MHD_Result request_dispatch(struct tsf_api_request *req) {
        struct tsf_api_server *s = req->l->server;
        json_t *body = NULL, *reply = NULL;
        int r;

        if (req->fail_status != 0) {
                s->n_invalid++;
                return queue_json(req, req->fail_status, TAKE_PTR(req->fail_reply), NULL);
        }
        /* A chunked body bypassed the Content-Type check of request_begin. */
        if (req->body_len > 0) {
                json_error_t e;

                body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &e);
                if (!body)
                        return refuse(req, MHD_HTTP_BAD_REQUEST, "invalid-json", "line %d, column %d: %s",
                                      e.line, e.column, e.text);
                free(req->body);
                req->body = NULL;
        }
        if (req->route == &metrics_route)
                return queue_metrics(req);

        req->state = REQ_DISPATCHING;
        req->in_handler = true;
        r = req->route->handler(req, body, &req->cc->peer, &reply, req->userdata);
        req->in_handler = false;
        json_decref(body);

        if (r == TSF_API_SUSPENDED && req->state == REQ_SUSPENDED) {
                json_decref(reply);
                MHD_suspend_connection(req->conn);
                return MHD_YES;
        }
        if (r == TSF_API_SUSPENDED && req->state == REQ_ANSWERED)
                /* Suspended and resumed within the handler. */
                return queue_json(req, req->status, TAKE_PTR(req->reply), NULL);
        if (req->state == REQ_SUSPENDED)
                suspended_unlink(req); /* suspended, then answered directly after all */
        if (r == TSF_API_SUSPENDED) {
                json_decref(reply);
                r = -EPROTO; /* a handler bug: "suspended" without suspending */
        }
        if (r < 200 || r > 599) {
                json_decref(reply);
                s->n_errors++;
                log_debug_errno(r < 0 ? r : -EPROTO, "api: %s %s: handler failed (%d): %m", req->method,
                                req->url, r);
                return queue_json(req, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                  tsf_api_error("internal", "the request could not be handled"), NULL);
        }
        return queue_json(req, (unsigned)r, reply, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls) {
        struct listener *l = cls;
        struct tsf_api_request *req = *req_cls;

        if (!req) {
                /* First call: the headers are in, the body is not read yet. */
                req = calloc(1, sizeof(*req));
                if (!req)
                        return MHD_NO;
                req->l = l;
                req->conn = conn;
                req->method = method;
                req->url = url;
                *req_cls = req;
                l->server->n_requests++;
                return request_begin(req);
        }
        if (*upload_data_size > 0) {
                if (!request_body(req, upload_data, *upload_data_size))
                        return MHD_NO;
                *upload_data_size = 0;
                return MHD_YES;
        }
        switch (req->state) {
        case REQ_RECEIVING:
                return request_dispatch(req);
        case REQ_ANSWERED:
                return queue_json(req, req->status, TAKE_PTR(req->reply), NULL);
        default:
                return MHD_YES;
        }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
        struct tsf_api_request *req = *req_cls;

        if (!req)
                return;
        if (req->state == REQ_SUSPENDED)
                suspended_unlink(req);
        req->deadline = sd_event_source_disable_unref(req->deadline);
        json_decref(req->reply);
        json_decref(req->fail_reply);
        free(req->body);
        free(req);
        *req_cls = NULL;
}

/* ---- long poll --------------------------------------------------------- */

const char *tsf_api_request_method(const struct tsf_api_request *req) {
        return req->method;
}

const char *tsf_api_request_path(const struct tsf_api_request *req) {
        return req->url;
}

const char *tsf_api_request_query(const struct tsf_api_request *req, const char *key) {
        return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

/* Stores the answer, wakes MHD to send it; `cancel`: the server ends it. */
static void request_answer(struct tsf_api_request *req, unsigned status, json_t *reply, bool cancel) {
        tsf_api_cancel_t cb = req->on_cancel;
        void *cb_userdata = req->cancel_userdata;

        suspended_unlink(req);
        req->status = status;
        req->reply = reply;
        req->state = REQ_ANSWERED;
        if (cancel && cb)
                cb(req, cb_userdata);
        /* Within the handler that suspended it, MHD has not suspended the
         * connection yet: request_dispatch() queues the answer. */
        if (!req->in_handler) {
                MHD_resume_connection(req->conn);
                listener_kick(req->l);
        }
}

static int on_deadline(sd_event_source *source, uint64_t usec, void *userdata) {
        struct tsf_api_request *req = userdata;

        log_debug("api: %s %s: long poll deadline, answering 204.", req->method, req->url);
        request_answer(req, MHD_HTTP_NO_CONTENT, NULL, true);
        return 0;
}

int tsf_api_request_suspend(struct tsf_api_request *req, usec_t timeout, tsf_api_cancel_t on_cancel,
                            void *userdata) {
        struct tsf_api_server *s = req->l->server;
        int r;

        if (req->state != REQ_DISPATCHING)
                return -EBUSY;
        r = sd_event_add_time_relative(s->event, &req->deadline, CLOCK_MONOTONIC, timeout, DEADLINE_ACCURACY,
                                       on_deadline, req);
        if (r < 0)
                return r;
        req->on_cancel = on_cancel;
        req->cancel_userdata = userdata;
        req->state = REQ_SUSPENDED;
        req->next = s->suspended;
        if (s->suspended)
                s->suspended->prev = req;
        s->suspended = req;
        s->n_suspended++;
        return 0;
}

int tsf_api_request_resume(struct tsf_api_request *req, int status, json_t *reply) {
        if (!req || req->state != REQ_SUSPENDED || status < 200 || status > 599) {
                json_decref(reply);
                return -EINVAL;
        }
        request_answer(req, (unsigned)status, reply, false);
        return 0;
}

/* ---- listeners --------------------------------------------------------- */

static int tcp_listen(const char *address, uint16_t port, int *ret_fd, uint16_t *ret_port) {
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
        } sa = {};
        socklen_t len;
        _cleanup_close_ int fd = -1;
        int one = 1, zero = 0;

        if (!address)
                address = "::";
        if (inet_pton(AF_INET, address, &sa.in.sin_addr) == 1) {
                sa.in.sin_family = AF_INET;
                sa.in.sin_port = htons(port);
                len = sizeof(sa.in);
        } else if (inet_pton(AF_INET6, address, &sa.in6.sin6_addr) == 1) {
                sa.in6.sin6_family = AF_INET6;
                sa.in6.sin6_port = htons(port);
                len = sizeof(sa.in6);
        } else
                return -EINVAL;

        fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return negative_errno();
        /* A restarted agent must not wait out TIME_WAIT for its own port. */
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                return negative_errno();
        /* "::" serves IPv4 too, whatever net.ipv6.bindv6only says. */
        if (sa.sa.sa_family == AF_INET6 &&
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) < 0)
                return negative_errno();
        if (bind(fd, &sa.sa, len) < 0 || listen(fd, SOMAXCONN) < 0)
                return negative_errno();
        if (getsockname(fd, &sa.sa, &len) < 0)
                return negative_errno();
        *ret_port = ntohs(sa.sa.sa_family == AF_INET ? sa.in.sin_port : sa.in6.sin6_port);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* Binds the UNIX socket. A socket file left by a dead agent is replaced; a
 * live one (something accepts on it) is not. */
static int unix_listen(const char *path, mode_t mode, int *ret_fd) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        _cleanup_close_ int fd = -1;
        struct stat st;

        if (strlen(path) >= sizeof(sun.sun_path))
                return -ENAMETOOLONG;
        strcpy(sun.sun_path, path);

        if (lstat(path, &st) == 0) {
                _cleanup_close_ int probe = -1;

                if (!S_ISSOCK(st.st_mode))
                        return -EEXIST;
                probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (probe < 0)
                        return negative_errno();
                if (connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0)
                        return -EADDRINUSE;
                if (unlink(path) < 0 && errno != ENOENT)
                        return negative_errno();
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return negative_errno();
        if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
                return negative_errno();
        /* bind() honours the umask; the mode is policy, so set it exactly. */
        if (chmod(path, mode) < 0 || listen(fd, SOMAXCONN) < 0) {
                int r = negative_errno();

                (void)unlink(path);
                return r;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int listener_start(struct tsf_api_server *s, struct listener *l, enum tsf_api_transport transport,
                          int fd) {
        unsigned timeout_sec = (unsigned)MAX(s->idle_timeout / USEC_PER_SEC, (usec_t)1);
        const union MHD_DaemonInfo *info;
        int r;

        l->server = s;
        l->transport = transport;
        /* External epoll mode: no MHD thread, sd-event polls MHD's epoll fd.
         * ERROR_LOG + the logger route MHD's messages to our debug log. */
        if (transport == TSF_API_TRANSPORT_TLS)
                l->daemon = MHD_start_daemon(
                        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_TLS, 0, NULL,
                        NULL, on_request, l, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_HTTPS_MEM_KEY, s->key_pem,
                        MHD_OPTION_HTTPS_MEM_CERT, s->cert_pem, MHD_OPTION_HTTPS_MEM_TRUST, s->ca_pem,
                        MHD_OPTION_HTTPS_PRIORITIES, TLS_PRIORITIES, MHD_OPTION_CONNECTION_LIMIT,
                        s->connection_limit, MHD_OPTION_PER_IP_CONNECTION_LIMIT, PER_IP_CONNECTIONS,
                        MHD_OPTION_CONNECTION_TIMEOUT, timeout_sec, MHD_OPTION_NOTIFY_COMPLETED,
                        on_completed, l, MHD_OPTION_NOTIFY_CONNECTION, on_connection, l, MHD_OPTION_END);
        else
                l->daemon = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0,
                                             NULL, NULL, on_request, l, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
                                             NULL, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT,
                                             s->connection_limit, MHD_OPTION_CONNECTION_TIMEOUT, timeout_sec,
                                             MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
                                             MHD_OPTION_NOTIFY_CONNECTION, on_connection, l, MHD_OPTION_END);
        if (!l->daemon) {
                safe_close(fd);
                return log_debug_errno(-EINVAL, "api: libmicrohttpd refused to start the %s listener.",
                                       transport == TSF_API_TRANSPORT_TLS ? "TLS" : "UNIX");
        }
        /* From here MHD_stop_daemon() closes fd. */
        info = MHD_get_daemon_info(l->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info)
                return -EIO;
        r = sd_event_add_io(s->event, &l->io, info->epoll_fd, EPOLLIN, on_mhd_io, l);
        if (r < 0)
                return r;
        /* Accuracy 1 µs: sd-event's default (0 = 250 ms) would delay every
         * "run again now" from MHD, i.e. every TLS read with data left. */
        r = sd_event_add_time(s->event, &l->timer, CLOCK_MONOTONIC, 1, 1, on_mhd_timer, l);
        if (r < 0)
                return r;
        listener_rearm(l);
        return 0;
}

static void listener_stop(struct listener *l) {
        if (l->daemon) {
                /* Resumed connections leave MHD's suspended list only in
                 * MHD_run(); stopping with any still on it is an API
                 * violation. */
                (void)MHD_run(l->daemon);
                MHD_stop_daemon(l->daemon);
                l->daemon = NULL;
        }
        l->io = sd_event_source_disable_unref(l->io);
        l->timer = sd_event_source_disable_unref(l->timer);
}

/* ---- the server -------------------------------------------------------- */

int tsf_api_server_new(sd_event *event, const struct tsf_api_server_config *c, struct tsf_api_server **ret) {
        _cleanup_(tsf_api_server_freep) struct tsf_api_server *s = NULL;
        int r;

        if (!event || !c || (!c->cert_file && !c->unix_path))
                return -EINVAL;
        if (c->cert_file && (!c->key_file || !c->ca_file))
                return log_debug_errno(-EINVAL, "api: TLS needs a certificate, its key and the farm CA.");

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(event);
        s->body_max = c->body_max ? c->body_max : TSF_API_BODY_MAX_DEFAULT;
        s->idle_timeout = c->idle_timeout ? c->idle_timeout : TSF_API_IDLE_TIMEOUT_DEFAULT;
        s->connection_limit = c->connection_limit ? c->connection_limit : TSF_API_CONNECTIONS_DEFAULT;
        s->port = c->port;
        s->unix_mode = c->unix_mode ? c->unix_mode : 0666;
        s->unix_group = c->unix_group;
        s->unix_group_set = c->unix_group_set;

        if (c->cert_file) {
                r = read_small_file(c->cert_file, &s->cert_pem, NULL);
                if (r < 0)
                        return log_debug_errno(r, "api: cannot read %s: %m", c->cert_file);
                r = read_small_file(c->key_file, &s->key_pem, &s->key_len);
                if (r < 0)
                        return log_debug_errno(r, "api: cannot read %s: %m", c->key_file);
                r = read_small_file(c->ca_file, &s->ca_pem, NULL);
                if (r < 0)
                        return log_debug_errno(r, "api: cannot read %s: %m", c->ca_file);
                if (c->listen_address) {
                        s->listen_address = strdup(c->listen_address);
                        if (!s->listen_address)
                                return -ENOMEM;
                }
        }
        if (c->unix_path) {
                s->unix_path = strdup(c->unix_path);
                if (!s->unix_path)
                        return -ENOMEM;
        }

        r = tsf_api_metric_add(s, "tsfarm_api_requests_total", "HTTP requests received by the API server.",
                               TSF_METRIC_COUNTER, metric_requests, s);
        if (r >= 0)
                r = tsf_api_metric_add(s, "tsfarm_api_refused_total",
                                       "Requests refused because the peer was not authenticated or allowed.",
                                       TSF_METRIC_COUNTER, metric_refused, s);
        if (r >= 0)
                r = tsf_api_metric_add(s, "tsfarm_api_invalid_total",
                                       "Requests refused as malformed (no such route, bad method, body too "
                                       "large, not JSON).",
                                       TSF_METRIC_COUNTER, metric_invalid, s);
        if (r >= 0)
                r = tsf_api_metric_add(s, "tsfarm_api_errors_total",
                                       "Requests whose handler failed (HTTP 500).", TSF_METRIC_COUNTER,
                                       metric_errors, s);
        if (r >= 0)
                r = tsf_api_metric_add(s, "tsfarm_api_long_polls", "Requests waiting in a long poll.",
                                       TSF_METRIC_GAUGE, metric_suspended, s);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(s);
        return 0;
}

int tsf_api_server_add_routes(struct tsf_api_server *s, const struct tsf_api_route *routes, void *userdata) {
        struct route_set *sets;

        for (const struct tsf_api_route *r = routes; r->method; r++)
                if (!r->path || r->path[0] != '/' || !r->handler ||
                    ((r->flags & TSF_API_PREFIX) && r->path[strlen(r->path) - 1] != '/'))
                        return -EINVAL;
        sets = reallocarray(s->sets, s->n_sets + 1, sizeof(*sets));
        if (!sets)
                return -ENOMEM;
        s->sets = sets;
        s->sets[s->n_sets++] = (struct route_set){routes, userdata};
        return 0;
}

int tsf_api_server_start(struct tsf_api_server *s) {
        int fd = -1, r;

        if (s->tls.daemon || s->unix_l.daemon)
                return -EALREADY;
        if (s->cert_pem) {
                r = tcp_listen(s->listen_address, s->port, &fd, &s->port);
                if (r < 0)
                        return log_debug_errno(r, "api: cannot listen on [%s]:%u: %m",
                                               s->listen_address ? s->listen_address : "::", s->port);
                r = listener_start(s, &s->tls, TSF_API_TRANSPORT_TLS, fd);
                if (r < 0)
                        return r;
        }
        if (s->unix_path) {
                r = unix_listen(s->unix_path, s->unix_mode, &fd);
                if (r < 0)
                        return log_debug_errno(r, "api: cannot listen on %s: %m", s->unix_path);
                s->unix_bound = true;
                r = listener_start(s, &s->unix_l, TSF_API_TRANSPORT_UNIX, fd);
                if (r < 0)
                        return r;
        }
        return 0;
}

uint16_t tsf_api_server_port(const struct tsf_api_server *s) {
        return s->cert_pem ? s->port : 0;
}

struct tsf_api_server *tsf_api_server_free(struct tsf_api_server *s) {
        if (!s)
                return NULL;
        /* Long polls end with 503; their owners hear it through on_cancel. */
        while (s->suspended)
                request_answer(s->suspended, MHD_HTTP_SERVICE_UNAVAILABLE,
                               tsf_api_error("shutting-down", "the server is shutting down"), true);
        listener_stop(&s->tls);
        listener_stop(&s->unix_l);
        if (s->unix_bound)
                (void)unlink(s->unix_path);
        if (s->key_pem)
                explicit_bzero(s->key_pem, s->key_len);
        free(s->key_pem);
        free(s->cert_pem);
        free(s->ca_pem);
        free(s->listen_address);
        free(s->unix_path);
        free(s->sets);
        free(s->metrics);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}
