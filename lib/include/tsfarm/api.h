/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The role-to-role API: HTTP/1.1 + JSON, served by libmicrohttpd on an
 * sd-event loop, over TLS with mutual authentication against the farm CA
 * and over a local UNIX socket with a peer-credential check; and its
 * client, on libcurl. docs/api.md is the contract; this is the plumbing.
 *
 * Handlers see only requests that passed authentication, were routed, and
 * whose body (if any) is valid JSON of at most body_max bytes. Everything
 * else gets a 4xx with {"error": CODE, "reason": TEXT} before any handler
 * runs, so a handler cannot forget a check.
 *
 * Threading: everything here runs on the sd-event loop's thread, handlers
 * included; tsf_api_request_resume() too (call it from a loop callback).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <systemd/sd-event.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/macro.h"

#define TSF_API_BODY_MAX_DEFAULT ((size_t)64 * 1024)
#define TSF_API_IDLE_TIMEOUT_DEFAULT (60 * USEC_PER_SEC)
#define TSF_API_CONNECTIONS_DEFAULT 256u
/* A node name (the certificate's CN) is at most 63 bytes (tsf_pki_node_name_valid). */
#define TSF_API_NODE_MAX 64

enum tsf_api_transport {
        TSF_API_TRANSPORT_TLS,
        TSF_API_TRANSPORT_UNIX,
};

/* Who is asking, as authenticated by the transport. */
struct tsf_api_peer {
        enum tsf_api_transport transport;
        /* TLS: the verified client certificate's CN, the peer's node name. */
        char node[TSF_API_NODE_MAX];
        /* UNIX: SO_PEERCRED at connect time; TLS: -1. */
        pid_t pid;
        uid_t uid;
        gid_t gid;
};

struct tsf_api_server_config {
        /* TLS listener: PEM files. No cert_file: no TCP listener. */
        const char *cert_file;
        const char *key_file;
        const char *ca_file;        /* the farm CA; client certificates must chain to it */
        const char *listen_address; /* IPv4 or IPv6 literal; NULL: "::" (both) */
        uint16_t port;              /* 0: any free port (tsf_api_server_port() says) */

        /* UNIX socket listener. No unix_path: none. */
        const char *unix_path;
        mode_t unix_mode; /* 0: 0666, the credential check is the policy */
        /* Root (uid 0) is always allowed; with unix_group_set, also a peer
         * whose primary or supplementary group is unix_group. */
        gid_t unix_group;
        bool unix_group_set;

        size_t body_max;           /* 0: TSF_API_BODY_MAX_DEFAULT */
        usec_t idle_timeout;       /* 0: TSF_API_IDLE_TIMEOUT_DEFAULT */
        unsigned connection_limit; /* 0: TSF_API_CONNECTIONS_DEFAULT, per listener */
};

struct tsf_api_server;
struct tsf_api_request;

/* Handler result: an HTTP status (200..599) with *ret_reply (NULL: no
 * body; the server takes the reference), TSF_API_SUSPENDED after
 * tsf_api_request_suspend(), or a negative errno: the client gets 500
 * {"error":"internal"} and the error is logged at debug level. */
#define TSF_API_SUSPENDED 0
typedef int (*tsf_api_handler_t)(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                                 json_t **ret_reply, void *userdata);

enum {
        /* `path` is a prefix ending in '/': "/v1/sessions/" matches
         * "/v1/sessions/alice"; tsf_api_request_path() has the full path.
         * An exact route wins over a prefix, a longer prefix over a shorter. */
        TSF_API_PREFIX = 1 << 0,
        /* Takes a JSON body (Content-Type: application/json, object or
         * array). Without it, a request with a body is refused with 400. A
         * route with it still accepts an empty body: `body` is NULL. */
        TSF_API_BODY = 1 << 1,
        /* Only over the UNIX socket (local administration); 403 over TLS. */
        TSF_API_LOCAL = 1 << 2,
};

struct tsf_api_route {
        const char *method; /* "GET", "PUT", ... */
        const char *path;   /* starts with '/' */
        unsigned flags;
        tsf_api_handler_t handler;
};

int tsf_api_server_new(sd_event *event, const struct tsf_api_server_config *config,
                       struct tsf_api_server **ret);
/* Ends suspended requests (their on_cancel runs), closes every connection. */
struct tsf_api_server *tsf_api_server_free(struct tsf_api_server *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tsf_api_server *, tsf_api_server_free);

/* Adds a table of routes ending with an entry whose method is NULL. The
 * table must outlive the server; userdata goes to its handlers. */
int tsf_api_server_add_routes(struct tsf_api_server *s, const struct tsf_api_route *routes, void *userdata);

/* Binds the sockets and starts serving on the event loop. */
int tsf_api_server_start(struct tsf_api_server *s);

/* The TLS listener's port (useful with port 0), or 0 if there is none. */
uint16_t tsf_api_server_port(const struct tsf_api_server *s);

/* ---- requests ---------------------------------------------------------- */

const char *tsf_api_request_method(const struct tsf_api_request *req);
const char *tsf_api_request_path(const struct tsf_api_request *req);
/* A query argument ("?since=42"), or NULL. */
const char *tsf_api_request_query(const struct tsf_api_request *req, const char *key);

/* Long poll: keeps the request open until tsf_api_request_resume() or
 * `timeout` passes; then the server answers 204 (no body) by itself and
 * calls on_cancel. on_cancel also runs when the server is freed; after it
 * the request is gone. Call from the handler, then return
 * TSF_API_SUSPENDED. */
typedef void (*tsf_api_cancel_t)(struct tsf_api_request *req, void *userdata);
int tsf_api_request_suspend(struct tsf_api_request *req, usec_t timeout, tsf_api_cancel_t on_cancel,
                            void *userdata);
/* Answers a suspended request with status and reply (reference taken).
 * After it the request is gone; on_cancel does not run. */
int tsf_api_request_resume(struct tsf_api_request *req, int status, json_t *reply);

/* A string field of a request body. Absent (or null): *ret = NULL and 0,
 * unless `required`. Present: a string of min..max bytes (jansson
 * guarantees valid UTF-8; the API refuses \u0000), borrowed from body.
 * Anything else: 400 with *ret_reply a reason naming the field. */
int tsf_api_field_string(json_t *body, const char *key, bool required, size_t min, size_t max,
                         const char **ret, json_t **ret_reply);

/* {"error": error, "reason": <format>}, or NULL (out of memory). */
json_t *tsf_api_error(const char *error, const char *format, ...) _printf_(2, 3);

/* ---- /metrics ---------------------------------------------------------- */

enum tsf_metric_type {
        TSF_METRIC_COUNTER,
        TSF_METRIC_GAUGE,
};

typedef double (*tsf_metric_value_t)(void *userdata);

/* Registers a metric shown by GET /metrics (Prometheus text format 0.0.4).
 * name: [a-zA-Z_:][a-zA-Z0-9_:]*, unique (-EEXIST); counters end in
 * "_total". The strings must outlive the server. */
int tsf_api_metric_add(struct tsf_api_server *s, const char *name, const char *help,
                       enum tsf_metric_type type, tsf_metric_value_t value, void *userdata);

/* ---- client ------------------------------------------------------------ */

struct tsf_api_client_config {
        /* https:// URLs: the farm CA, our node's certificate and key. */
        const char *ca_file;
        const char *cert_file;
        const char *key_file;
        /* Talk over this UNIX socket instead (the URL's host is ignored;
         * use "http://localhost/..."). */
        const char *unix_path;
        usec_t timeout;      /* the whole call; 0: 30 s */
        size_t response_max; /* 0: 16 MiB */
};

struct tsf_api_client;

int tsf_api_client_new(const struct tsf_api_client_config *config, struct tsf_api_client **ret);
struct tsf_api_client *tsf_api_client_free(struct tsf_api_client *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tsf_api_client *, tsf_api_client_free);

/* One synchronous call: sends `in` (NULL: no body) as JSON, waits for the
 * answer. Returns 0 when an HTTP answer came (any status, in *ret_status;
 * its JSON body in *ret_reply, NULL when empty), or a negative errno:
 * -ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH, -EKEYREJECTED (TLS: the server
 * or our certificate was not accepted), -EFBIG (answer over response_max),
 * -EBADMSG (the answer's body is not JSON), -EIO.
 * tsf_api_client_error() then says more. Keeps the connection for the
 * next call. */
int tsf_api_client_call(struct tsf_api_client *c, const char *method, const char *url, json_t *in,
                        long *ret_status, json_t **ret_reply);
/* A human-readable reason for the last failed call ("" if none). */
const char *tsf_api_client_error(const struct tsf_api_client *c);

/* Asynchronous calls on an sd-event loop (the agent's roles). The client
 * must be attached once; calls then run concurrently, each with its own
 * deadline, and share the connection cache. */
int tsf_api_client_attach_event(struct tsf_api_client *c, sd_event *event);

struct tsf_api_call;
/* A finished call: r as tsf_api_client_call() returns it (then `error`
 * says why), else the HTTP status and the JSON answer (NULL when empty;
 * borrowed: take a reference to keep it). The call is gone after the
 * callback. The callback may start and cancel other calls but must not
 * free the client. */
typedef void (*tsf_api_done_t)(int r, long status, json_t *reply, const char *error, void *userdata);
/* Starts a call; `done` runs from the loop when it ends (never from here).
 * timeout 0: the client's. *ret (optional) is valid until `done` runs. */
int tsf_api_client_start(struct tsf_api_client *c, const char *method, const char *url, json_t *in,
                         usec_t timeout, tsf_api_done_t done, void *userdata, struct tsf_api_call **ret);
/* Abandons a call in progress; its callback does not run. */
void tsf_api_call_cancel(struct tsf_api_call *call);
