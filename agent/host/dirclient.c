/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "agent/host/dirclient.h"
#include "tsfarm/api.h"
#include "tsfarm/list.h"
#include "tsfarm/log.h"
#include "tsfarm/maps.h"

/* The directory holds a feed poll this long when nothing changes (it caps
 * waits at 60 s); the call's own deadline leaves room for the answer. */
#define FEED_WAIT_S 25
#define FEED_TIMEOUT ((FEED_WAIT_S + 10) * USEC_PER_SEC)
#define CALL_TIMEOUT (5 * USEC_PER_SEC)
#define SNAPSHOT_TIMEOUT (60 * USEC_PER_SEC)
#define SNAPSHOT_PAGE 10000
#define HEARTBEAT_INTERVAL (5 * USEC_PER_SEC)
#define BACKOFF_MIN (200 * USEC_PER_MSEC)
#define BACKOFF_MAX (5 * USEC_PER_SEC)

struct dir_node_id {
        char *name;
        uint32_t id;
};

struct queued_event {
        struct queued_event *next;
        json_t *body;
};

struct snapshot_state {
        struct tsf_session_key *keep; /* every key the snapshot wrote */
        size_t n_keep, size_keep;
        uint64_t revision; /* the first page's: the feed resumes there */
        uint64_t after;    /* the next page starts after this session id */
};

struct dirclient_query {
        struct dirclient *dc;
        struct dirclient_query *prev, *next;
        struct tsf_api_call *call;
        dirclient_answer_fn cb;
        void *userdata;
};

/* A retry timer with exponential backoff. */
struct retry {
        sd_event_source *timer;
        usec_t backoff;
};

struct dirclient {
        sd_event *event;
        struct datapath *datapath;
        struct tsf_api_client *client;
        dirclient_nodes_fn on_nodes;
        dirclient_session_ended_fn on_session_ended;
        void *userdata;

        /* Copied from the configuration: a reload does not change it under us. */
        char *base; /* "https://ADDR:PORT", no trailing slash */
        char *self_name;
        struct dir_node_id *ids;
        size_t n_ids;
        json_t *register_body;
        usec_t query_timeout;

        /* What the directory said about the nodes. */
        struct dirclient_node *nodes;
        size_t n_nodes;

        bool registered, reachable;
        long last_refusal;
        struct tsf_api_call *register_call, *heartbeat_call, *feed_call, *event_call;
        struct retry register_retry, feed_retry, event_retry;
        sd_event_source *heartbeat_timer;

        /* The feed: a snapshot (paged) first, then changes from `revision`. */
        bool need_snapshot;
        struct snapshot_state snap;
        uint64_t revision;

        /* Events, oldest first; the head is in flight when event_call is set. */
        struct queued_event *queue_head, *queue_tail;
        struct dirclient_stats stats;

        struct dirclient_query *queries;
};

static void dc_register(struct dirclient *dc);
static void dc_feed(struct dirclient *dc);
static void dc_send_event(struct dirclient *dc);

/* ---- helpers -------------------------------------------------------------- */

static uint32_t node_id_of(const struct dirclient *dc, const char *name) {
        for (size_t i = 0; i < dc->n_ids; i++)
                if (strcmp(dc->ids[i].name, name) == 0)
                        return dc->ids[i].id;
        return 0;
}

/* The error code of a refusal ("unknown-node", "unknown-session", ...). */
static const char *reply_code(json_t *reply) {
        return json_string_value(json_object_get(reply, "error"));
}

static const char *reply_error(json_t *reply) {
        const char *e = json_string_value(json_object_get(reply, "error"));
        const char *reason = json_string_value(json_object_get(reply, "reason"));

        return reason ? reason : e ? e : "?";
}

static int start_call(struct dirclient *dc, const char *method, const char *path, json_t *in, usec_t timeout,
                      tsf_api_done_t done, struct tsf_api_call **ret) {
        _cleanup_free_ char *url = NULL;

        if (asprintf(&url, "%s%s", dc->base, path) < 0)
                return -ENOMEM;
        return tsf_api_client_start(dc->client, method, url, in, timeout, done, dc, ret);
}

/* A call's outcome: 1 for an HTTP answer below 500, 0 for a failure
 * (logged once per outage; the caller retries). */
static int call_outcome(struct dirclient *dc, int r, long status, json_t *reply, const char *error) {
        char why[256];

        if (r >= 0 && status < 500) {
                if (!dc->reachable)
                        log_info("Directory %s reachable again.", dc->base);
                dc->reachable = true;
                return 1;
        }
        if (r >= 0)
                snprintf(why, sizeof(why), "answered %ld %s", status, reply_error(reply));
        else
                snprintf(why, sizeof(why), "%s", error && error[0] ? error : strerror(-r));
        if (dc->reachable)
                log_warning("Directory %s unreachable (%s); steering continues from the last known "
                            "sessions, events are queued, retrying.",
                            dc->base, why);
        dc->reachable = false;
        return 0;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata);

/* Arms `rt` to call `fn` after the current backoff, then doubles it. */
static void retry_later(struct dirclient *dc, struct retry *rt) {
        int r;

        if (!rt->backoff)
                rt->backoff = BACKOFF_MIN;
        r = sd_event_source_set_time_relative(rt->timer, rt->backoff);
        if (r >= 0)
                r = sd_event_source_set_enabled(rt->timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to arm a directory retry timer: %m");
        rt->backoff = MIN(rt->backoff * 2, BACKOFF_MAX);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        struct dirclient *dc = userdata;

        if (s == dc->register_retry.timer)
                dc_register(dc);
        else if (s == dc->feed_retry.timer)
                dc_feed(dc);
        else
                dc_send_event(dc);
        return 0;
}

/* The directory no longer knows us (404) or marked us down (409). */
static void lost_registration(struct dirclient *dc, long status, json_t *reply) {
        if (!dc->registered)
                return;
        log_info("Directory answered %ld %s; registering again.", status, reply_error(reply));
        dc->registered = false;
        dc_register(dc);
}

/* ---- registration and heartbeat ------------------------------------------- */

static void on_register_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct dirclient *dc = userdata;

        dc->register_call = NULL;
        if (!call_outcome(dc, r, status, reply, error))
                return retry_later(dc, &dc->register_retry);
        if (status != 200) {
                /* Retried with backoff: said once per kind of refusal. */
                if (status != dc->last_refusal)
                        log_warning("Directory refused to register node %s: %ld %s; retrying.",
                                    dc->self_name, status, reply_error(reply));
                dc->last_refusal = status;
                return retry_later(dc, &dc->register_retry);
        }
        dc->last_refusal = 0;
        dc->register_retry.backoff = 0;
        dc->registered = true;
        log_info("Registered node %s with the directory %s.", dc->self_name, dc->base);
        (void)sd_event_source_set_time_relative(dc->heartbeat_timer, HEARTBEAT_INTERVAL);
        (void)sd_event_source_set_enabled(dc->heartbeat_timer, SD_EVENT_ONESHOT);
        dc_feed(dc);
        dc_send_event(dc);
}

static void dc_register(struct dirclient *dc) {
        int r;

        if (dc->register_call || dc->registered)
                return;
        r = start_call(dc, "POST", "/v1/nodes/register", dc->register_body, CALL_TIMEOUT, on_register_done,
                       &dc->register_call);
        if (r < 0) {
                log_warning_errno(r, "Failed to start registering with the directory: %m");
                retry_later(dc, &dc->register_retry);
        }
}

static void on_heartbeat_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct dirclient *dc = userdata;

        dc->heartbeat_call = NULL;
        (void)sd_event_source_set_time_relative(dc->heartbeat_timer, HEARTBEAT_INTERVAL);
        (void)sd_event_source_set_enabled(dc->heartbeat_timer, SD_EVENT_ONESHOT);
        if (!call_outcome(dc, r, status, reply, error))
                return;
        if (status == 404 || status == 409)
                lost_registration(dc, status, reply);
        else if (status != 200)
                log_debug("Heartbeat answered %ld %s.", status, reply_error(reply));
}

static int on_heartbeat_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct dirclient *dc = userdata;
        int r;

        if (!dc->registered || dc->heartbeat_call)
                return 0;
        r = start_call(dc, "POST", "/v1/nodes/heartbeat", NULL, CALL_TIMEOUT, on_heartbeat_done,
                       &dc->heartbeat_call);
        if (r < 0) {
                log_warning_errno(r, "Failed to send a heartbeat: %m");
                (void)sd_event_source_set_time_relative(s, HEARTBEAT_INTERVAL);
                (void)sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        return 0;
}

/* ---- nodes ---------------------------------------------------------------- */

static void apply_node(struct dirclient *dc, json_t *n) {
        const char *name = json_string_value(json_object_get(n, "name"));
        const char *drain = json_string_value(json_object_get(n, "drain"));
        struct dirclient_node v = {};
        size_t i;

        if (!name || strlen(name) >= sizeof(v.name) || !drain)
                return log_debug("Directory sent a malformed node, skipping it.");
        snprintf(v.name, sizeof(v.name), "%s", name);
        v.up = json_is_true(json_object_get(n, "up"));
        v.draining = strcmp(drain, "enabled") != 0;
        v.weight = (uint32_t)json_integer_value(json_object_get(n, "weight"));
        v.sessions = (uint32_t)json_integer_value(json_object_get(n, "sessions"));
        v.session_limit = (uint32_t)json_integer_value(json_object_get(n, "session_limit"));
        for (i = 0; i < dc->n_nodes; i++)
                if (strcmp(dc->nodes[i].name, name) == 0)
                        break;
        if (i == dc->n_nodes) {
                struct dirclient_node *grown = realloc(dc->nodes, (dc->n_nodes + 1) * sizeof(*grown));

                if (!grown)
                        return (void)log_oom();
                dc->nodes = grown;
                dc->n_nodes++;
        }
        dc->nodes[i] = v;
        if (node_id_of(dc, name) == 0)
                log_debug("Directory knows node %s, which has no [node] section here.", name);
}

/* ---- sessions into the map -------------------------------------------------- */

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
        if (state == TSF_SESSION_LOST && dc->on_session_ended && strcmp(node, dc->self_name) == 0)
                dc->on_session_ended(dc->userdata, key, v.session_id, true);
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
        if (dc->on_session_ended && strcmp(node, dc->self_name) == 0)
                dc->on_session_ended(dc->userdata, key, session_id, false);
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

static int snapshot_keep(struct snapshot_state *k, const char *key) {
        if (k->n_keep == k->size_keep) {
                size_t size = k->size_keep ? k->size_keep * 2 : 1024;
                struct tsf_session_key *grown = realloc(k->keep, size * sizeof(*grown));

                if (!grown)
                        return -ENOMEM;
                k->keep = grown;
                k->size_keep = size;
        }
        tsf_session_key_from_user(&k->keep[k->n_keep++], key);
        return 0;
}

/* The last page is in: every entry the snapshot did not write goes. */
static void snapshot_finish(struct dirclient *dc) {
        struct snapshot_state *k = &dc->snap;
        struct tsf_session_key cur, next;
        int fd = datapath_sessions_fd(dc->datapath), removed = 0;
        bool have = false;

        qsort(k->keep, k->n_keep, sizeof(*k->keep), cmp_key);
        /* Deleting the current key would restart the walk: delete behind it. */
        while (bpf_map_get_next_key(fd, have ? &cur : NULL, &next) == 0) {
                if (have && !bsearch(&cur, k->keep, k->n_keep, sizeof(*k->keep), cmp_key) &&
                    bpf_map_delete_elem(fd, &cur) == 0)
                        removed++;
                cur = next;
                have = true;
        }
        if (have && !bsearch(&cur, k->keep, k->n_keep, sizeof(*k->keep), cmp_key) &&
            bpf_map_delete_elem(fd, &cur) == 0)
                removed++;
        dc->revision = k->revision;
        dc->need_snapshot = false;
        log_info("Loaded the directory snapshot at revision %" PRIu64 ": %zu sessions, %zu nodes, %d stale "
                 "entries removed.",
                 dc->revision, k->n_keep, dc->n_nodes, removed);
        free(k->keep);
        *k = (struct snapshot_state){};
}

/* One page; returns 1 when another page follows, 0 at the end. */
static int apply_snapshot_page(struct dirclient *dc, json_t *reply) {
        struct snapshot_state *k = &dc->snap;
        json_t *sessions = json_object_get(reply, "sessions"), *nodes = json_object_get(reply, "nodes");
        json_t *v;
        size_t i;
        int r;

        if (!json_is_array(sessions) || !json_is_integer(json_object_get(reply, "revision")))
                return -EBADMSG;
        if (k->after == 0) {
                k->revision = (uint64_t)json_integer_value(json_object_get(reply, "revision"));
                json_array_foreach(nodes, i, v) apply_node(dc, v);
                if (dc->on_nodes)
                        dc->on_nodes(dc->userdata);
        }
        json_array_foreach(sessions, i, v) {
                json_t *rev = json_object_get(v, "revision");
                const char *key = json_string_value(json_object_get(v, "user_key"));

                if (apply_session(dc, v, json_is_integer(rev) ? (uint64_t)json_integer_value(rev) : 0) > 0) {
                        r = snapshot_keep(k, key);
                        if (r < 0)
                                return r;
                }
        }
        if (!json_is_true(json_object_get(reply, "more")))
                return 0;
        k->after = (uint64_t)json_integer_value(json_object_get(reply, "after"));
        return 1;
}

/* ---- the feed --------------------------------------------------------------- */

static int apply_changes(struct dirclient *dc, json_t *reply) {
        json_t *changes = json_object_get(reply, "changes"), *c;
        bool nodes_changed = false;
        size_t i;

        if (!json_is_array(changes) || !json_is_integer(json_object_get(reply, "revision")))
                return -EBADMSG;
        json_array_foreach(changes, i, c) {
                const char *kind = json_string_value(json_object_get(c, "kind"));
                uint64_t rev = (uint64_t)json_integer_value(json_object_get(c, "revision"));

                if (!kind)
                        continue;
                if (strcmp(kind, "session") == 0)
                        (void)apply_session(dc, json_object_get(c, "session"), rev);
                else if (strcmp(kind, "session-gone") == 0)
                        apply_session_gone(dc, json_object_get(c, "session"));
                else if (strcmp(kind, "node") == 0) {
                        apply_node(dc, json_object_get(c, "node"));
                        nodes_changed = true;
                }
        }
        dc->revision = (uint64_t)json_integer_value(json_object_get(reply, "revision"));
        if (nodes_changed && dc->on_nodes)
                dc->on_nodes(dc->userdata);
        return 0;
}

static void on_feed_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct dirclient *dc = userdata;

        dc->feed_call = NULL;
        if (!call_outcome(dc, r, status, reply, error))
                return retry_later(dc, &dc->feed_retry);
        if (dc->need_snapshot) {
                if (status == 200)
                        r = apply_snapshot_page(dc, reply);
                else
                        r = -EBADMSG;
                if (r < 0) {
                        log_warning("Directory answered the snapshot with %ld %s.", status,
                                    r == -EBADMSG ? reply_error(reply) : strerror(-r));
                        free(dc->snap.keep);
                        dc->snap = (struct snapshot_state){};
                        return retry_later(dc, &dc->feed_retry);
                }
                if (r == 0)
                        snapshot_finish(dc);
        } else if (status == 410) {
                log_info("Directory asks for a resync from revision %" PRIu64 "; loading the snapshot.",
                         dc->revision);
                dc->need_snapshot = true;
        } else if (status == 200) {
                if (apply_changes(dc, reply) < 0) {
                        log_warning("Directory sent a malformed change feed answer.");
                        return retry_later(dc, &dc->feed_retry);
                }
        } else if (status != 204) {
                log_warning("Directory answered the change feed with %ld %s.", status, reply_error(reply));
                return retry_later(dc, &dc->feed_retry);
        }
        dc->feed_retry.backoff = 0;
        dc_feed(dc);
}

static void dc_feed(struct dirclient *dc) {
        char path[128];
        int r;

        if (dc->feed_call)
                return;
        if (dc->need_snapshot)
                snprintf(path, sizeof(path), "/v1/snapshot?after=%" PRIu64 "&limit=%d", dc->snap.after,
                         SNAPSHOT_PAGE);
        else
                snprintf(path, sizeof(path), "/v1/changes?since=%" PRIu64 "&wait=%d", dc->revision,
                         FEED_WAIT_S);
        r = start_call(dc, "GET", path, NULL, dc->need_snapshot ? SNAPSHOT_TIMEOUT : FEED_TIMEOUT,
                       on_feed_done, &dc->feed_call);
        if (r < 0) {
                log_warning_errno(r, "Failed to start following the directory: %m");
                retry_later(dc, &dc->feed_retry);
        }
}

/* ---- session events ------------------------------------------------------- */

static void queue_pop(struct dirclient *dc) {
        struct queued_event *e = dc->queue_head;

        dc->queue_head = e->next;
        if (!dc->queue_head)
                dc->queue_tail = NULL;
        json_decref(e->body);
        free(e);
        dc->stats.queued--;
}

static void on_event_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct dirclient *dc = userdata;
        json_t *body = dc->queue_head->body;

        dc->event_call = NULL;
        if (!call_outcome(dc, r, status, reply, error))
                return retry_later(dc, &dc->event_retry);
        /* Not (or no longer) registered: the event waits for it. A 404 for
         * the session itself (a reconnect or logoff of a session the
         * directory no longer has) is a refusal like any other: registering
         * again cannot change it, and retrying it would hold up every later
         * event of this node. */
        if (status == 409 || (status == 404 && !streq_ptr(reply_code(reply), "unknown-session"))) {
                lost_registration(dc, status, reply);
                return retry_later(dc, &dc->event_retry);
        }
        if (status == 200)
                dc->stats.delivered++;
        else {
                /* A refusal is final: retrying the same event cannot help. */
                log_warning("Directory refused the %s of %s (session %" JSON_INTEGER_FORMAT "): %ld %s; "
                            "dropping it.",
                            json_string_value(json_object_get(body, "event")),
                            json_string_value(json_object_get(body, "user")),
                            json_integer_value(json_object_get(body, "session_id")), status,
                            reply_error(reply));
                dc->stats.refused++;
        }
        queue_pop(dc);
        dc->event_retry.backoff = 0;
        dc_send_event(dc);
}

static void dc_send_event(struct dirclient *dc) {
        int r;

        if (dc->event_call || !dc->queue_head || !dc->registered)
                return;
        r = start_call(dc, "POST", "/v1/sessions/event", dc->queue_head->body, CALL_TIMEOUT, on_event_done,
                       &dc->event_call);
        if (r < 0) {
                log_warning_errno(r, "Failed to send a session event: %m");
                retry_later(dc, &dc->event_retry);
        }
}

int dirclient_report(struct dirclient *dc, const struct dirclient_event *ev) {
        struct queued_event *e;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->body = json_pack("{s:s, s:s, s:I, s:s, s:s}", "event", ev->event, "user", ev->user, "session_id",
                            (json_int_t)ev->session_id, "device", ev->device ? ev->device : "",
                            "client_address", ev->client_address ? ev->client_address : "");
        if (!e->body) {
                free(e);
                return -ENOMEM;
        }
        /* Full: the oldest not in flight goes. */
        if (dc->stats.queued >= DIRCLIENT_QUEUE_MAX) {
                struct queued_event *victim = dc->event_call ? dc->queue_head->next : dc->queue_head;

                if (victim) {
                        if (victim == dc->queue_head)
                                queue_pop(dc);
                        else {
                                dc->queue_head->next = victim->next;
                                if (dc->queue_tail == victim)
                                        dc->queue_tail = dc->queue_head;
                                json_decref(victim->body);
                                free(victim);
                                dc->stats.queued--;
                        }
                        if (dc->stats.dropped++ == 0)
                                log_warning("More than %u session events wait for the directory; dropping "
                                            "the oldest.",
                                            DIRCLIENT_QUEUE_MAX);
                }
        }
        if (dc->queue_tail)
                dc->queue_tail->next = e;
        else
                dc->queue_head = e;
        dc->queue_tail = e;
        dc->stats.queued++;
        log_debug("Session event queued: %s of %s, session %u.", ev->event, ev->user, ev->session_id);
        /* While a retry timer runs, it sends; otherwise now. */
        if (sd_event_source_get_enabled(dc->event_retry.timer, NULL) <= 0)
                dc_send_event(dc);
        return 0;
}

void dirclient_get_stats(const struct dirclient *dc, struct dirclient_stats *ret) {
        *ret = dc->stats;
        ret->revision = dc->revision;
}

/* ---- logon queries -------------------------------------------------------- */

static void query_free(struct dirclient_query *q) {
        struct dirclient *dc = q->dc;

        LIST_REMOVE(dc->queries, q);
        tsf_api_call_cancel(q->call);
        free(q);
}

void dirclient_query_cancel(struct dirclient_query *q) {
        if (q)
                query_free(q);
}

static int parse_answer(json_t *reply, struct dirclient_answer *a) {
        const char *kind = json_string_value(json_object_get(reply, "answer"));
        const char *node = json_string_value(json_object_get(reply, "node"));
        const char *state = json_string_value(json_object_get(reply, "state"));

        *a = (struct dirclient_answer){};
        if (!kind)
                return -EBADMSG;
        if (strcmp(kind, "ambiguous") == 0) {
                a->kind = DIRCLIENT_AMBIGUOUS;
                return 0;
        }
        if (strcmp(kind, "no-node") == 0) {
                a->kind = DIRCLIENT_NO_NODE;
                return 0;
        }
        if (strcmp(kind, "session") == 0)
                a->kind = DIRCLIENT_SESSION;
        else if (strcmp(kind, "placed") == 0)
                a->kind = DIRCLIENT_PLACED;
        else
                return -EBADMSG;
        if (!node || strlen(node) >= sizeof(a->node))
                return -EBADMSG;
        snprintf(a->node, sizeof(a->node), "%s", node);
        a->session_id = (uint32_t)json_integer_value(json_object_get(reply, "session_id"));
        a->disconnected = state && strcmp(state, "disconnected") == 0;
        return 0;
}

static void on_query_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct dirclient_query *q = userdata;
        struct dirclient *dc = q->dc;
        struct dirclient_answer a;
        dirclient_answer_fn cb = q->cb;
        void *cb_userdata = q->userdata;

        q->call = NULL;
        query_free(q);
        if (!call_outcome(dc, r, status, reply, error))
                r = r < 0 ? r : -EIO;
        else if (status != 200) {
                log_debug("Directory answered a logon query with %ld %s.", status, reply_error(reply));
                r = -EPROTO;
        } else
                r = parse_answer(reply, &a);
        if (r < 0) {
                dc->stats.query_failures++;
                return cb(r, NULL, cb_userdata);
        }
        cb(0, &a, cb_userdata);
}

/* The api client calls back with the call's userdata: the query. */
int dirclient_query(struct dirclient *dc, const char *cookie, dirclient_answer_fn cb, void *userdata,
                    struct dirclient_query **ret) {
        _cleanup_(json_decrefp) json_t *body = NULL;
        _cleanup_free_ char *url = NULL;
        struct dirclient_query *q;
        int r;

        body = cookie ? json_pack("{s:s, s:s}", "cookie", cookie, "entry_node", dc->self_name)
                      : json_pack("{s:s}", "entry_node", dc->self_name);
        q = calloc(1, sizeof(*q));
        if (!body || !q || asprintf(&url, "%s/v1/logon-query", dc->base) < 0) {
                free(q);
                return -ENOMEM;
        }
        q->dc = dc;
        q->cb = cb;
        q->userdata = userdata;
        r = tsf_api_client_start(dc->client, "POST", url, body, dc->query_timeout, on_query_done, q,
                                 &q->call);
        if (r < 0) {
                free(q);
                return r;
        }
        LIST_PREPEND(dc->queries, q);
        dc->stats.queries++;
        if (ret)
                *ret = q;
        return 0;
}

/* ---- life cycle ----------------------------------------------------------- */

const struct dirclient_node *dirclient_node(const struct dirclient *dc, const char *name) {
        for (size_t i = 0; dc && i < dc->n_nodes; i++)
                if (strcmp(dc->nodes[i].name, name) == 0)
                        return &dc->nodes[i];
        return NULL;
}

bool dirclient_reachable(const struct dirclient *dc) {
        return dc->reachable;
}

struct dirclient *dirclient_free(struct dirclient *dc) {
        if (!dc)
                return NULL;
        while (dc->queries)
                query_free(dc->queries);
        /* Frees the calls in flight without calling back. */
        tsf_api_client_free(dc->client);
        while (dc->queue_head)
                queue_pop(dc);
        sd_event_source_disable_unref(dc->register_retry.timer);
        sd_event_source_disable_unref(dc->feed_retry.timer);
        sd_event_source_disable_unref(dc->event_retry.timer);
        sd_event_source_disable_unref(dc->heartbeat_timer);
        sd_event_unref(dc->event);
        for (size_t i = 0; i < dc->n_ids; i++)
                free(dc->ids[i].name);
        free(dc->ids);
        free(dc->nodes);
        free(dc->snap.keep);
        json_decref(dc->register_body);
        free(dc->self_name);
        free(dc->base);
        free(dc);
        return NULL;
}

/* The kernel's boot id: a node's sessions die with its boot, not with an
 * agent restart (an upgrade must not log everybody off). */
static int read_boot_id(char ret[static 33]) {
        _cleanup_fclose_ FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
        char line[64];
        size_t n = 0;

        if (!f)
                return negative_errno();
        if (!fgets(line, sizeof(line), f))
                return -EIO;
        for (const char *p = line; *p && n < 32; p++)
                if (*p != '-' && *p != '\n')
                        ret[n++] = *p;
        ret[n] = '\0';
        return n == 32 ? 0 : -EBADMSG;
}

static json_t *register_body(const struct host_config *h, const struct host_node_config *self) {
        _cleanup_(json_decrefp) json_t *addrs = json_array();
        char boot_id[33], a[INET_ADDRSTRLEN];
        int r;

        if (!addrs)
                return NULL;
        for (size_t i = 0; i < self->n_addrs; i++)
                if (!inet_ntop(AF_INET, &self->addrs[i], a, sizeof(a)) ||
                    json_array_append_new(addrs, json_string(a)) < 0)
                        return NULL;
        r = read_boot_id(boot_id);
        if (r < 0) {
                log_error_errno(r, "Failed to read /proc/sys/kernel/random/boot_id: %m");
                return NULL;
        }
        return json_pack("{s:O, s:i, s:I, s:I, s:s}", "addresses", addrs, "rdp_port",
                         (int)(self->rdp_port ? self->rdp_port : h->rdp_port), "weight",
                         (json_int_t)self->weight, "session_limit", (json_int_t)h->session_limit, "boot_id",
                         boot_id);
}

int dirclient_new(const struct dirclient_options *o, struct dirclient **ret) {
        const struct host_config *h = &o->config->host;
        _cleanup_(dirclient_freep) struct dirclient *dc = calloc(1, sizeof(*dc));
        struct tsf_api_client_config cc;
        struct retry *retries[3];
        size_t len;
        int r;

        if (!dc)
                return log_oom();
        dc->event = sd_event_ref(o->event);
        dc->datapath = o->datapath;
        dc->on_nodes = o->on_nodes;
        dc->on_session_ended = o->on_session_ended;
        dc->userdata = o->userdata;
        dc->need_snapshot = true; /* the map follows the directory from the start */
        dc->reachable = true;
        dc->query_timeout = h->directory_query_timeout;
        dc->base = strdup(h->directory);
        dc->self_name = strdup(o->self->name);
        dc->ids = calloc(h->n_nodes ? h->n_nodes : 1, sizeof(*dc->ids));
        if (!dc->base || !dc->self_name || !dc->ids)
                return log_oom();
        len = strlen(dc->base);
        while (len > 0 && dc->base[len - 1] == '/')
                dc->base[--len] = '\0';
        for (size_t i = 0; i < h->n_nodes; i++, dc->n_ids++) {
                dc->ids[i] = (struct dir_node_id){.name = strdup(h->nodes[i].name), .id = h->nodes[i].id};
                if (!dc->ids[i].name)
                        return log_oom();
        }
        dc->register_body = register_body(h, o->self);
        if (!dc->register_body)
                return log_error_errno(-ENOMEM, "Failed to build the directory registration: %m");

        cc = (struct tsf_api_client_config){
                .ca_file = h->directory_ca,
                .cert_file = h->directory_certificate,
                .key_file = h->directory_key,
                .timeout = CALL_TIMEOUT,
                .response_max = 64 << 20, /* a snapshot page */
        };
        r = tsf_api_client_new(&cc, &dc->client);
        if (r >= 0)
                r = tsf_api_client_attach_event(dc->client, o->event);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the directory client: %m");

        retries[0] = &dc->register_retry;
        retries[1] = &dc->feed_retry;
        retries[2] = &dc->event_retry;
        for (size_t i = 0; i < ELEMENTSOF(retries); i++) {
                r = sd_event_add_time(o->event, &retries[i]->timer, CLOCK_MONOTONIC, UINT64_MAX,
                                      USEC_PER_MSEC, on_retry, dc);
                if (r >= 0)
                        r = sd_event_source_set_enabled(retries[i]->timer, SD_EVENT_OFF);
                if (r < 0)
                        return log_error_errno(r, "Failed to create a timer: %m");
        }
        r = sd_event_add_time(o->event, &dc->heartbeat_timer, CLOCK_MONOTONIC, UINT64_MAX, USEC_PER_MSEC,
                              on_heartbeat_timer, dc);
        if (r >= 0)
                r = sd_event_source_set_enabled(dc->heartbeat_timer, SD_EVENT_OFF);
        if (r < 0)
                return log_error_errno(r, "Failed to create a timer: %m");

        dc_register(dc);
        dc_feed(dc); /* reading needs no registration */
        log_info("Following the directory at %s.", dc->base);
        *ret = TAKE_PTR(dc);
        return 0;
}
