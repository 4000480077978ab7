/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "agent/host/dirclient.h"
#include "tsfarm/api.h"
#include "tsfarm/log.h"
#include "tsfarm/maps.h"

/* The long poll waits at most this long, so that stopping the worker (it
 * has no way to interrupt a libcurl call in progress) is prompt. */
#define POLL_WAIT_S 1
#define CALL_TIMEOUT (3 * USEC_PER_SEC)
#define HEARTBEAT_INTERVAL (5 * USEC_PER_SEC)
#define BACKOFF_MIN (200 * USEC_PER_MSEC)
#define BACKOFF_MAX (5 * USEC_PER_SEC)

struct dir_node {
        char *name;
        uint32_t id;
};

struct dirclient {
        /* Copied at start: the worker never reads the loop's config. */
        char *base; /* "https://ADDR:PORT", no trailing slash */
        char *ca, *cert, *key;
        struct dir_node *nodes;
        size_t n_nodes;
        char *self_name;
        json_t *register_body;

        struct datapath *datapath; /* outlives the worker; bpf syscalls only */
        struct tsf_api_client *client;
        int stop_fd; /* eventfd: wakes the worker's sleeps */
        atomic_bool stop;
        pthread_t thread;
        bool started;

        /* Worker state. */
        bool registered, need_snapshot, reachable;
        uint64_t revision;
        usec_t next_heartbeat;
        long last_refusal; /* the last registration's refusal status, 0: none */
};

static uint32_t node_id_of(const struct dirclient *dc, const char *name) {
        for (size_t i = 0; i < dc->n_nodes; i++)
                if (strcmp(dc->nodes[i].name, name) == 0)
                        return dc->nodes[i].id;
        return 0;
}

/* Sleeps `t` or until asked to stop. Returns true when stopping. */
static bool dc_sleep(struct dirclient *dc, usec_t t) {
        struct pollfd p = {.fd = dc->stop_fd, .events = POLLIN};

        if (atomic_load(&dc->stop))
                return true;
        (void)poll(&p, 1, (int)(t / USEC_PER_MSEC));
        return atomic_load(&dc->stop);
}

static const char *reply_error(json_t *reply) {
        const char *e = json_string_value(json_object_get(reply, "error"));
        return e ? e : "?";
}

/* One call; a transport failure or a 5xx counts as "unreachable" and is
 * logged once per outage, not per retry. */
static int dc_call(struct dirclient *dc, const char *method, const char *path, json_t *in, long *ret_status,
                   json_t **ret_reply) {
        _cleanup_free_ char *url = NULL;
        char why[64] = "";
        int r;

        if (asprintf(&url, "%s%s", dc->base, path) < 0)
                return -ENOMEM;
        *ret_reply = NULL;
        r = tsf_api_client_call(dc->client, method, url, in, ret_status, ret_reply);
        if (r >= 0 && *ret_status >= 500) {
                snprintf(why, sizeof(why), "answered %ld %s", *ret_status, reply_error(*ret_reply));
                json_decref(*ret_reply);
                *ret_reply = NULL;
                r = -EIO;
        }
        if (r < 0) {
                if (dc->reachable)
                        log_warning_errno(r,
                                          "Directory %s unreachable (%s): %m; steering continues from the "
                                          "last known sessions, retrying.",
                                          dc->base, why[0] ? why : tsf_api_client_error(dc->client));
                dc->reachable = false;
                dc->registered = false;
                return r;
        }
        if (!dc->reachable)
                log_info("Directory %s reachable.", dc->base);
        dc->reachable = true;
        return 0;
}

static int dc_register(struct dirclient *dc) {
        _cleanup_(json_decrefp) json_t *reply = NULL;
        long status;
        int r;

        r = dc_call(dc, "POST", "/v1/nodes/register", dc->register_body, &status, &reply);
        if (r < 0)
                return r;
        if (status != 200) {
                /* Retried with backoff: say it once per kind of refusal. */
                if (status != dc->last_refusal)
                        log_warning("Directory refused to register node %s: %ld %s; retrying.",
                                    dc->self_name, status, reply_error(reply));
                dc->last_refusal = status;
                return -EPERM;
        }
        dc->last_refusal = 0;
        log_info("Registered node %s with the directory %s.", dc->self_name, dc->base);
        dc->registered = true;
        dc->next_heartbeat = tsf_now_monotonic() + HEARTBEAT_INTERVAL;
        return 0;
}

static int dc_heartbeat(struct dirclient *dc) {
        _cleanup_(json_decrefp) json_t *reply = NULL;
        long status;
        int r;

        r = dc_call(dc, "POST", "/v1/nodes/heartbeat", NULL, &status, &reply);
        if (r < 0)
                return r;
        dc->next_heartbeat = tsf_now_monotonic() + HEARTBEAT_INTERVAL;
        if (status == 404 || status == 409) {
                /* Unknown or marked down: our sessions may be LOST there; register again. */
                log_info("Directory answered the heartbeat with %ld %s; registering again.", status,
                         reply_error(reply));
                dc->registered = false;
        } else if (status != 200)
                log_debug("Heartbeat answered %ld %s.", status, reply_error(reply));
        return 0;
}

static int session_state(const char *s) {
        if (!s)
                return -EINVAL;
        if (strcmp(s, "active") == 0)
                return TSF_SESSION_ACTIVE;
        if (strcmp(s, "disconnected") == 0)
                return TSF_SESSION_DISCONNECTED;
        if (strcmp(s, "lost") == 0)
                return TSF_SESSION_LOST;
        return -EINVAL;
}

/* A session object from the feed or the snapshot into the map. Returns 1
 * when written, 0 when skipped. */
static int apply_session(struct dirclient *dc, json_t *s, uint64_t revision) {
        const char *node = json_string_value(json_object_get(s, "node"));
        const char *key = json_string_value(json_object_get(s, "user_key"));
        int state = session_state(json_string_value(json_object_get(s, "state")));
        json_t *t = json_object_get(s, "state_time_usec");
        struct tsf_session_value v;
        uint32_t id;
        int r;

        if (!node || !key || !key[0] || state < 0) {
                log_debug("Directory sent a malformed session, skipping it.");
                return 0;
        }
        id = node_id_of(dc, node);
        if (id == 0) {
                log_debug("Session of %s is on node %s, which has no [node] section here; skipping it.", key,
                          node);
                return 0;
        }
        v = (struct tsf_session_value){
                .node_id = id,
                .session_id = (uint32_t)json_integer_value(json_object_get(s, "session_id")),
                .state = (uint8_t)state,
                .revision = revision,
                .state_changed_us = json_is_integer(t) ? (uint64_t)json_integer_value(t) : 0,
        };
        r = datapath_session_set(dc->datapath, key, &v);
        if (r < 0) {
                log_warning_errno(r, "Failed to write the session of %s to the sessions map, ignoring: %m",
                                  key);
                return 0;
        }
        log_debug("Sessions map: %s -> node %s (id %u), state %d, revision %" PRIu64 ".", key, node, id,
                  state, revision);
        return 1;
}

/* A session that ended: its entry goes, unless the map already names a
 * different (newer) session of that user. */
static void apply_session_gone(struct dirclient *dc, json_t *s) {
        const char *node = json_string_value(json_object_get(s, "node"));
        const char *key = json_string_value(json_object_get(s, "user_key"));
        uint32_t session_id = (uint32_t)json_integer_value(json_object_get(s, "session_id"));
        struct tsf_session_value cur;
        int r;

        if (!node || !key || !key[0])
                return;
        if (datapath_session_get(dc->datapath, key, &cur) < 0)
                return;
        if (cur.node_id != node_id_of(dc, node) || cur.session_id != session_id) {
                log_debug("Session of %s on %s ended; the map names another one, keeping it.", key, node);
                return;
        }
        r = datapath_session_del(dc->datapath, key);
        if (r < 0 && r != -ENOENT)
                log_warning_errno(
                        r, "Failed to remove the session of %s from the sessions map, ignoring: %m", key);
        else
                log_debug("Sessions map: %s removed (session ended).", key);
}

static int cmp_key(const void *a, const void *b) {
        return memcmp(a, b, sizeof(struct tsf_session_key));
}

/* The snapshot replaces the map: every session in it is written, every
 * entry not in it removed. */
static int dc_snapshot(struct dirclient *dc) {
        _cleanup_(json_decrefp) json_t *reply = NULL;
        _cleanup_free_ struct tsf_session_key *keep = NULL;
        struct tsf_session_key k, next;
        json_t *sessions, *s;
        size_t i, n_keep = 0;
        int fd = datapath_sessions_fd(dc->datapath), removed = 0;
        bool have = false;
        long status;
        int r;

        r = dc_call(dc, "GET", "/v1/snapshot", NULL, &status, &reply);
        if (r < 0)
                return r;
        sessions = json_object_get(reply, "sessions");
        if (status != 200 || !json_is_array(sessions) ||
            !json_is_integer(json_object_get(reply, "revision"))) {
                log_warning("Directory answered the snapshot with %ld %s.", status, reply_error(reply));
                return -EBADMSG;
        }
        keep = calloc(json_array_size(sessions) + 1, sizeof(*keep));
        if (!keep)
                return log_oom();
        json_array_foreach(sessions, i, s) {
                const char *key = json_string_value(json_object_get(s, "user_key"));
                json_t *rev = json_object_get(s, "revision");

                if (apply_session(dc, s, json_is_integer(rev) ? (uint64_t)json_integer_value(rev) : 0) > 0)
                        tsf_session_key_from_user(&keep[n_keep++], key);
        }
        qsort(keep, n_keep, sizeof(*keep), cmp_key);
        /* Deleting the current key would restart the walk: delete behind it. */
        while (bpf_map_get_next_key(fd, have ? &k : NULL, &next) == 0) {
                if (have && !bsearch(&k, keep, n_keep, sizeof(*keep), cmp_key) &&
                    bpf_map_delete_elem(fd, &k) == 0)
                        removed++;
                k = next;
                have = true;
        }
        if (have && !bsearch(&k, keep, n_keep, sizeof(*keep), cmp_key) && bpf_map_delete_elem(fd, &k) == 0)
                removed++;
        dc->revision = (uint64_t)json_integer_value(json_object_get(reply, "revision"));
        dc->need_snapshot = false;
        log_info("Loaded the directory snapshot at revision %" PRIu64 ": %zu sessions, %d stale entries "
                 "removed.",
                 dc->revision, n_keep, removed);
        return 0;
}

static int dc_changes(struct dirclient *dc) {
        _cleanup_(json_decrefp) json_t *reply = NULL;
        char path[96];
        json_t *changes, *c;
        size_t i;
        long status;
        int r;

        snprintf(path, sizeof(path), "/v1/changes?since=%" PRIu64 "&wait=%d", dc->revision, POLL_WAIT_S);
        r = dc_call(dc, "GET", path, NULL, &status, &reply);
        if (r < 0)
                return r;
        if (status == 204)
                return 0;
        if (status == 410) {
                log_info("Directory asks for a resync from revision %" PRIu64 "; loading the snapshot.",
                         dc->revision);
                dc->need_snapshot = true;
                return 0;
        }
        changes = json_object_get(reply, "changes");
        if (status != 200 || !json_is_array(changes) ||
            !json_is_integer(json_object_get(reply, "revision"))) {
                log_warning("Directory answered the change feed with %ld %s.", status, reply_error(reply));
                return -EBADMSG;
        }
        json_array_foreach(changes, i, c) {
                const char *kind = json_string_value(json_object_get(c, "kind"));
                uint64_t rev = (uint64_t)json_integer_value(json_object_get(c, "revision"));

                if (!kind)
                        continue;
                if (strcmp(kind, "session") == 0)
                        (void)apply_session(dc, json_object_get(c, "session"), rev);
                else if (strcmp(kind, "session-gone") == 0)
                        apply_session_gone(dc, json_object_get(c, "session"));
                /* Nodes: the nodes map still comes from [node] sections. */
        }
        dc->revision = (uint64_t)json_integer_value(json_object_get(reply, "revision"));
        return json_is_true(json_object_get(reply, "more")) ? 1 : 0;
}

static void *dc_run(void *userdata) {
        struct dirclient *dc = userdata;
        usec_t backoff = BACKOFF_MIN;

        while (!atomic_load(&dc->stop)) {
                int r = 0;

                if (!dc->registered)
                        r = dc_register(dc);
                else if (tsf_now_monotonic() >= dc->next_heartbeat)
                        r = dc_heartbeat(dc);
                else if (dc->need_snapshot)
                        r = dc_snapshot(dc);
                else
                        r = dc_changes(dc);
                if (r >= 0) {
                        backoff = BACKOFF_MIN;
                        continue;
                }
                if (dc_sleep(dc, backoff))
                        break;
                backoff = MIN(backoff * 2, BACKOFF_MAX);
        }
        return NULL;
}

struct dirclient *dirclient_free(struct dirclient *dc) {
        if (!dc)
                return NULL;
        if (dc->started) {
                uint64_t one = 1;

                atomic_store(&dc->stop, true);
                if (write(dc->stop_fd, &one, sizeof(one)) < 0)
                        log_debug_errno(-errno, "Failed to wake the directory worker: %m");
                (void)pthread_join(dc->thread, NULL);
        }
        tsf_api_client_free(dc->client);
        if (dc->stop_fd >= 0)
                close(dc->stop_fd);
        for (size_t i = 0; i < dc->n_nodes; i++)
                free(dc->nodes[i].name);
        free(dc->nodes);
        json_decref(dc->register_body);
        free(dc->self_name);
        free(dc->base);
        free(dc->ca);
        free(dc->cert);
        free(dc->key);
        free(dc);
        return NULL;
}

static json_t *register_body(const struct host_config *h, const struct host_node_config *self) {
        _cleanup_(json_decrefp) json_t *addrs = json_array();
        uint8_t boot[16];
        char boot_id[33], a[INET_ADDRSTRLEN];

        if (!addrs)
                return NULL;
        for (size_t i = 0; i < self->n_addrs; i++)
                if (!inet_ntop(AF_INET, &self->addrs[i], a, sizeof(a)) ||
                    json_array_append_new(addrs, json_string(a)) < 0)
                        return NULL;
        /* A fresh boot id per start tells the directory this is a new agent. */
        if (getrandom(boot, sizeof(boot), 0) != sizeof(boot))
                return NULL;
        for (size_t i = 0; i < sizeof(boot); i++)
                snprintf(boot_id + 2 * i, 3, "%02x", boot[i]);
        return json_pack("{s:O, s:i, s:I, s:I, s:s}", "addresses", addrs, "rdp_port",
                         (int)(self->rdp_port ? self->rdp_port : h->rdp_port), "weight",
                         (json_int_t)self->weight, "session_limit", (json_int_t)h->session_limit, "boot_id",
                         boot_id);
}

int dirclient_start(const struct tsagent_config *c, const struct host_node_config *self, struct datapath *d,
                    struct dirclient **ret) {
        const struct host_config *h = &c->host;
        _cleanup_(dirclient_freep) struct dirclient *dc = calloc(1, sizeof(*dc));
        struct tsf_api_client_config cc;
        size_t len;
        int r;

        if (!dc)
                return log_oom();
        dc->stop_fd = -1;
        dc->datapath = d;
        dc->need_snapshot = true; /* the map follows the directory from the start */
        dc->reachable = true;
        dc->base = strdup(h->directory);
        dc->ca = strdup(h->directory_ca);
        dc->cert = strdup(h->directory_certificate);
        dc->key = strdup(h->directory_key);
        dc->self_name = strdup(self->name);
        dc->nodes = calloc(h->n_nodes ? h->n_nodes : 1, sizeof(*dc->nodes));
        if (!dc->base || !dc->ca || !dc->cert || !dc->key || !dc->self_name || !dc->nodes)
                return log_oom();
        len = strlen(dc->base);
        while (len > 0 && dc->base[len - 1] == '/')
                dc->base[--len] = '\0';
        for (size_t i = 0; i < h->n_nodes; i++, dc->n_nodes++) {
                dc->nodes[i] = (struct dir_node){.name = strdup(h->nodes[i].name), .id = h->nodes[i].id};
                if (!dc->nodes[i].name)
                        return log_oom();
        }
        dc->register_body = register_body(h, self);
        if (!dc->register_body)
                return log_error_errno(-ENOMEM, "Failed to build the directory registration: %m");

        cc = (struct tsf_api_client_config){
                .ca_file = dc->ca,
                .cert_file = dc->cert,
                .key_file = dc->key,
                .timeout = CALL_TIMEOUT,
        };
        r = tsf_api_client_new(&cc, &dc->client);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the directory client: %m");
        dc->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (dc->stop_fd < 0)
                return log_error_errno(-errno, "Failed to create an eventfd: %m");
        r = -pthread_create(&dc->thread, NULL, dc_run, dc);
        if (r < 0)
                return log_error_errno(r, "Failed to start the directory worker: %m");
        dc->started = true;
        log_info("Following the directory at %s.", dc->base);
        *ret = TAKE_PTR(dc);
        return 0;
}
