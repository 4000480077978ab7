/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <systemd/sd-event.h>

#include "agent/directory/directory.h"
#include "agent/service.h"
#include "agent/directory/store.h"
#include "tsfarm/api.h"
#include "tsfarm/fs.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

#define DIRECTORY_CHANGES_MAX 1000u
#define DIRECTORY_WAIT_MAX_SEC 60
#define DIRECTORY_EXPIRE_INTERVAL USEC_PER_SEC
/* Compaction every this many expiry ticks; a tombstone survives at least
 * one interval, so a client that polls more often never has to resync. */
#define DIRECTORY_COMPACT_TICKS 300u

struct waiter {
        struct directory *d;
        struct tsf_api_request *req;
        uint64_t since;
        struct waiter *prev, *next;
};

struct counts {
        bool valid;
        uint64_t revision;
        uint64_t sessions[_DIR_SESSION_STATE_MAX];
        unsigned nodes_up, nodes_down;
};

struct directory {
        struct manager *manager;
        struct dir_store *store;
        struct tsf_api_server *api;
        sd_event_source *expire_timer;
        sd_event_source *notify;
        struct waiter *waiters;

        /* Live from the configuration (reload changes them). */
        usec_t heartbeat_lapse;
        usec_t started; /* CLOCK_MONOTONIC */
        enum dir_policy policy;

        unsigned ticks;
        uint64_t compact_mark;
        struct counts counts;
        uint64_t notified_revision; /* the long polls were last woken for it */
};

/* ---- JSON ----------------------------------------------------------------- */

static json_t *addresses_to_json(const char *addresses) {
        json_t *a = json_array();
        const char *p = addresses;

        if (!a)
                return NULL;
        while (*p) {
                size_t n;

                p += strspn(p, " ");
                n = strcspn(p, " ");
                if (n > 0 && json_array_append_new(a, json_stringn(p, n)) < 0) {
                        json_decref(a);
                        return NULL;
                }
                p += n;
        }
        return a;
}

static json_t *node_to_json(const struct dir_node *n) {
        return json_pack("{s:I, s:s, s:o, s:i, s:I, s:I, s:I, s:s, s:b, s:I, s:s}", "revision",
                         (json_int_t)n->revision, "name", n->name, "addresses",
                         addresses_to_json(n->addresses), "rdp_port", (int)n->rdp_port, "weight",
                         (json_int_t)n->weight, "session_limit", (json_int_t)n->session_limit, "sessions",
                         (json_int_t)n->sessions, "drain", dir_drain_to_string(n->drain), "up", n->up,
                         "last_heartbeat_usec", (json_int_t)n->last_heartbeat, "boot_id", n->boot_id);
}

static json_t *session_to_json(const struct dir_session *s) {
        return json_pack("{s:I, s:I, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "id",
                         (json_int_t)s->id, "revision", (json_int_t)s->revision, "node", s->node,
                         "session_id", (json_int_t)s->node_session, "user", s->user, "user_key", s->user_key,
                         "domain", s->domain, "state", dir_session_state_to_string(s->state), "device",
                         s->device, "client_address", s->client_addr, "logon_time_usec",
                         (json_int_t)s->logon_time, "state_time_usec", (json_int_t)s->state_time);
}

static json_t *change_to_json(const struct dir_change *c) {
        switch (c->kind) {
        case DIR_CHANGE_NODE:
                return json_pack("{s:I, s:s, s:o}", "revision", (json_int_t)c->revision, "kind", "node",
                                 "node", node_to_json(c->node));
        case DIR_CHANGE_SESSION:
                return json_pack("{s:I, s:s, s:o}", "revision", (json_int_t)c->revision, "kind", "session",
                                 "session", session_to_json(c->session));
        case DIR_CHANGE_SESSION_GONE:
                return json_pack("{s:I, s:s, s:{s:I, s:s, s:I, s:s, s:s}}", "revision",
                                 (json_int_t)c->revision, "kind", "session-gone", "session", "id",
                                 (json_int_t)c->session->id, "node", c->session->node, "session_id",
                                 (json_int_t)c->session->node_session, "user", c->session->user, "user_key",
                                 c->session->user_key);
        }
        return NULL;
}

/* Request fields: absent is fine (NULL, or the default); present with the
 * wrong type is a 400 with a reason. */
static int field_string(json_t *body, const char *key, const char **ret, json_t **ret_reply) {
        json_t *v = body ? json_object_get(body, key) : NULL;

        *ret = NULL;
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v)) {
                *ret_reply = tsf_api_error("invalid-request", "'%s' must be a string", key);
                return 400;
        }
        *ret = json_string_value(v);
        return 0;
}

static int field_uint(json_t *body, const char *key, uint64_t min, uint64_t max, uint64_t *ret,
                      json_t **ret_reply) {
        json_t *v = body ? json_object_get(body, key) : NULL;

        if (!v || json_is_null(v))
                return 0;
        if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min ||
            (uint64_t)json_integer_value(v) > max) {
                *ret_reply =
                        tsf_api_error("invalid-request", "'%s' must be an integer in %" PRIu64 "..%" PRIu64,
                                      key, min, max);
                return 400;
        }
        *ret = (uint64_t)json_integer_value(v);
        return 0;
}

static int require_body(json_t *body, json_t **ret_reply) {
        if (json_is_object(body))
                return 0;
        *ret_reply = tsf_api_error("invalid-request", "the request needs a JSON object as its body");
        return 400;
}

/* Nodes act for themselves only: the certificate's CN is who they are. */
static int require_node(const struct tsf_api_peer *peer, json_t *body, json_t **ret_reply) {
        const char *node;
        int r;

        if (peer->transport != TSF_API_TRANSPORT_TLS || !peer->node[0]) {
                *ret_reply = tsf_api_error("node-required",
                                           "only a node, over TLS with its own certificate, may do this");
                return 403;
        }
        r = field_string(body, "node", &node, ret_reply);
        if (r != 0)
                return r;
        if (node && strcmp(node, peer->node) != 0) {
                *ret_reply =
                        tsf_api_error("not-your-node", "node '%s' may only act for itself, not for '%s'",
                                      peer->node, node);
                return 403;
        }
        return 0;
}

/* Maps a store refusal to an answer; anything unexpected is a 500. */
static int store_refusal(int r, const char *what, const char *reason, json_t **ret_reply) {
        switch (r) {
        case -ENOENT:
                *ret_reply = tsf_api_error(what, "%s", reason ? reason : "no such object");
                return 404;
        case -EHOSTDOWN:
                *ret_reply =
                        tsf_api_error("node-down", "%s",
                                      reason ? reason : "the node is marked down; it must register again");
                return 409;
        case -EINVAL:
        case -ERANGE:
        case -E2BIG:
                *ret_reply = tsf_api_error("invalid-request", "%s", reason ? reason : "invalid arguments");
                return 400;
        default:
                return r;
        }
}

/* ---- change notification -------------------------------------------------- */

struct collect {
        json_t *array;
        uint64_t last;
};

static int collect_change(const struct dir_change *c, void *userdata) {
        struct collect *k = userdata;

        if (json_array_append_new(k->array, change_to_json(c)) < 0)
                return -ENOMEM;
        k->last = MAX(k->last, c->revision);
        return 0;
}

/* The answer to "changes after since": 200 with them, 410 for a client that
 * must resynchronise, 0 for nothing yet, or a negative errno. */
static int changes_answer(struct directory *d, uint64_t since, json_t **ret_reply) {
        _cleanup_(json_decrefp) json_t *changes = json_array();
        struct collect k = {.last = since};
        uint64_t revision;
        int r;

        if (!changes)
                return -ENOMEM;
        k.array = changes;
        r = dir_changes_since(d->store, since, DIRECTORY_CHANGES_MAX, collect_change, &k);
        if (r == -ESTALE) {
                *ret_reply =
                        tsf_api_error("resync",
                                      "revision %" PRIu64 " is outside the retained history (now %" PRIu64
                                      "); fetch GET /v1/snapshot and resume from its revision",
                                      since, dir_store_revision(d->store));
                return 410;
        }
        if (r < 0)
                return r;
        if (r == 0)
                return 0;
        /* All delivered: resume from the newest revision; cut at max: from
         * the last one delivered. */
        revision = (unsigned)r < DIRECTORY_CHANGES_MAX ? MAX(k.last, dir_store_revision(d->store)) : k.last;
        *ret_reply = json_pack("{s:I, s:O, s:b}", "revision", (json_int_t)revision, "changes", changes,
                               "more", (unsigned)r >= DIRECTORY_CHANGES_MAX);
        return *ret_reply ? 200 : -ENOMEM;
}

static void waiter_unlink(struct waiter *w) {
        if (w->prev)
                w->prev->next = w->next;
        else
                w->d->waiters = w->next;
        if (w->next)
                w->next->prev = w->prev;
        free(w);
}

static void waiter_cancel(struct tsf_api_request *req, void *userdata) {
        waiter_unlink(userdata);
}

static int on_notify(sd_event_source *s, void *userdata) {
        struct directory *d = userdata;
        struct waiter *next;

        for (struct waiter *w = d->waiters; w; w = next) {
                json_t *reply = NULL;
                int r;

                next = w->next;
                r = changes_answer(d, w->since, &reply);
                if (r == 0)
                        continue;
                if (r < 0) {
                        log_warning_errno(r, "Failed to read the change feed for a long poll: %m");
                        r = 500;
                        reply = tsf_api_error("internal", "the change feed could not be read");
                }
                (void)tsf_api_request_resume(w->req, r, reply);
                waiter_unlink(w);
        }
        return 0;
}

/* Something may have committed: wake the long polls (from the loop, not
 * from inside the handler that made the change). The feed moves with the
 * revision only, so anything that left it alone wakes nobody. */
static void directory_changed(struct directory *d) {
        uint64_t revision = dir_store_revision(d->store);

        if (revision == d->notified_revision)
                return;
        d->notified_revision = revision;
        if (d->waiters && d->notify)
                (void)sd_event_source_set_enabled(d->notify, SD_EVENT_ONESHOT);
}

/* ---- handlers ------------------------------------------------------------- */

static int on_register(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                       json_t **ret_reply, void *userdata) {
        struct directory *d = userdata;
        char addresses[DIR_ADDRESSES_MAX + 1] = "";
        uint64_t rdp_port = 3389, weight = 100, session_limit = 0;
        const char *boot_id;
        struct dir_node_info info;
        json_t *a;
        int r;

        if ((r = require_body(body, ret_reply)) || (r = require_node(peer, body, ret_reply)) ||
            (r = field_uint(body, "rdp_port", 1, UINT16_MAX, &rdp_port, ret_reply)) ||
            (r = field_uint(body, "weight", 1, DIR_WEIGHT_MAX, &weight, ret_reply)) ||
            (r = field_uint(body, "session_limit", 0, UINT32_MAX, &session_limit, ret_reply)) ||
            (r = field_string(body, "boot_id", &boot_id, ret_reply)))
                return r;
        if (!boot_id) {
                *ret_reply = tsf_api_error("invalid-request", "'boot_id' is required");
                return 400;
        }
        a = json_object_get(body, "addresses");
        if (json_is_string(a))
                snprintf(addresses, sizeof(addresses), "%s", json_string_value(a));
        else if (json_is_array(a)) {
                size_t i;
                json_t *v;

                json_array_foreach(a, i, v) {
                        size_t len = strlen(addresses);

                        if (!json_is_string(v) || strchr(json_string_value(v), ' ') ||
                            len + 1 + strlen(json_string_value(v)) > DIR_ADDRESSES_MAX) {
                                *ret_reply = tsf_api_error("invalid-request",
                                                           "'addresses' must be address strings, at most %d "
                                                           "bytes in all",
                                                           DIR_ADDRESSES_MAX);
                                return 400;
                        }
                        snprintf(addresses + len, sizeof(addresses) - len, "%s%s", len ? " " : "",
                                 json_string_value(v));
                }
        } else if (a && !json_is_null(a)) {
                *ret_reply = tsf_api_error("invalid-request", "'addresses' must be an array of strings");
                return 400;
        }

        info = (struct dir_node_info){
                .name = peer->node,
                .addresses = addresses,
                .rdp_port = (uint16_t)rdp_port,
                .weight = (uint32_t)weight,
                .session_limit = (uint32_t)session_limit,
                .boot_id = boot_id,
        };
        r = dir_node_register(d->store, &info);
        if (r < 0)
                return store_refusal(r, "unknown-node", NULL, ret_reply);
        log_info("Node %s registered (%s, weight %" PRIu64 ").", peer->node,
                 addresses[0] ? addresses : "no addresses", weight);
        directory_changed(d);
        *ret_reply = json_pack("{s:I}", "revision", (json_int_t)dir_store_revision(d->store));
        return 200;
}

static int on_heartbeat(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                        json_t **ret_reply, void *userdata) {
        struct directory *d = userdata;
        int r;

        if ((r = require_node(peer, body, ret_reply)))
                return r;
        r = dir_node_heartbeat(d->store, peer->node);
        if (r < 0)
                return store_refusal(r, "unknown-node", r == -ENOENT ? "this node has not registered" : NULL,
                                     ret_reply);
        *ret_reply = json_pack("{s:I}", "revision", (json_int_t)dir_store_revision(d->store));
        return 200;
}

static int parse_query_uint(struct tsf_api_request *req, const char *key, uint64_t def, uint64_t *ret,
                            json_t **ret_reply) {
        const char *v = tsf_api_request_query(req, key);
        char *end;

        *ret = def;
        if (!v)
                return 0;
        errno = 0;
        *ret = strtoull(v, &end, 10);
        if (!*v || *end || errno != 0 || v[0] == '-') {
                *ret_reply = tsf_api_error("invalid-request", "'%s' must be a non-negative integer", key);
                return 400;
        }
        return 0;
}

/* A snapshot page holds at most this many sessions: a million sessions
 * in one JSON answer would be a quarter of a gigabyte. */
#define SNAPSHOT_PAGE_MAX 10000u

struct snapshot {
        json_t *nodes;
        json_t *sessions; /* NULL: nodes only */
        uint64_t last_id;
};

static int snapshot_item(const struct dir_change *c, void *userdata) {
        struct snapshot *k = userdata;

        if (c->kind == DIR_CHANGE_NODE)
                return json_array_append_new(k->nodes, node_to_json(c->node)) < 0 ? -ENOMEM : 0;
        if (c->kind == DIR_CHANGE_SESSION && k->sessions) {
                k->last_id = c->session->id;
                return json_array_append_new(k->sessions, session_to_json(c->session)) < 0 ? -ENOMEM : 0;
        }
        return 0;
}

static int on_nodes(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                    json_t **ret_reply, void *userdata) {
        struct directory *d = userdata;
        _cleanup_(json_decrefp) json_t *n = json_array();
        struct snapshot k = {.nodes = n};
        uint64_t revision;
        int r;

        if (!n)
                return -ENOMEM;
        /* A page of one session: the nodes are what is wanted. */
        r = dir_snapshot(d->store, 0, 1, snapshot_item, &k, &revision);
        if (r < 0)
                return r;
        *ret_reply = json_pack("{s:I, s:O}", "revision", (json_int_t)revision, "nodes", n);
        return *ret_reply ? 200 : -ENOMEM;
}

/* GET /v1/snapshot?after=ID&limit=N: nodes (first page) and sessions by
 * id; "more" says there is another page, asked with after=<"after">. */
static int on_snapshot(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                       json_t **ret_reply, void *userdata) {
        struct directory *d = userdata;
        _cleanup_(json_decrefp) json_t *n = json_array(), *s = json_array();
        struct snapshot k = {.nodes = n, .sessions = s};
        uint64_t revision, after, limit;
        int r;

        if ((r = parse_query_uint(req, "after", 0, &after, ret_reply)) ||
            (r = parse_query_uint(req, "limit", SNAPSHOT_PAGE_MAX, &limit, ret_reply)))
                return r;
        if (!n || !s)
                return -ENOMEM;
        limit = MIN(MAX(limit, (uint64_t)1), (uint64_t)SNAPSHOT_PAGE_MAX);
        r = dir_snapshot(d->store, after, (unsigned)limit, snapshot_item, &k, &revision);
        if (r < 0)
                return r;
        *ret_reply = json_pack("{s:I, s:O, s:O, s:b, s:I}", "revision", (json_int_t)revision, "nodes", n,
                               "sessions", s, "more", (uint64_t)r == limit, "after",
                               (json_int_t)(k.last_id ? k.last_id : after));
        return *ret_reply ? 200 : -ENOMEM;
}

static int on_session_event(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                            json_t **ret_reply, void *userdata) {
        struct directory *d = userdata;
        const char *event, *user, *device, *client, *reason = NULL;
        uint64_t session_id = UINT64_MAX;
        struct dir_event_info ev = {};
        struct dir_node node;
        int r;

        if ((r = require_body(body, ret_reply)) || (r = require_node(peer, body, ret_reply)) ||
            (r = field_string(body, "event", &event, ret_reply)) ||
            (r = field_string(body, "user", &user, ret_reply)) ||
            (r = field_string(body, "device", &device, ret_reply)) ||
            (r = field_string(body, "client_address", &client, ret_reply)) ||
            (r = field_uint(body, "session_id", 0, UINT32_MAX, &session_id, ret_reply)))
                return r;
        if (!event || session_id == UINT64_MAX) {
                *ret_reply = tsf_api_error("invalid-request", "'event' and 'session_id' are required");
                return 400;
        }
        ev.event = _DIR_EVENT_MAX;
        for (int i = 0; i < _DIR_EVENT_MAX; i++)
                if (strcmp(event, dir_event_to_string(i)) == 0)
                        ev.event = i;
        if (ev.event == _DIR_EVENT_MAX) {
                *ret_reply =
                        tsf_api_error("invalid-request",
                                      "unknown event '%s' (logon, disconnect, reconnect, logoff)", event);
                return 400;
        }
        ev.node_session = (uint32_t)session_id;
        ev.user = user;
        ev.device = device;
        ev.client_addr = client;

        r = dir_node_get(d->store, peer->node, &node);
        if (r < 0)
                return store_refusal(r, "unknown-node", r == -ENOENT ? "this node has not registered" : NULL,
                                     ret_reply);
        r = dir_session_event(d->store, peer->node, &ev, &reason);
        if (r < 0)
                return store_refusal(r, "unknown-session", reason, ret_reply);
        log_debug("Node %s: %s of session %" PRIu64 " (%s).", peer->node, event, session_id,
                  user ? user : "-");
        directory_changed(d);
        *ret_reply = json_pack("{s:I}", "revision", (json_int_t)dir_store_revision(d->store));
        return 200;
}

static const char *answer_kind_to_string(enum dir_answer_kind k) {
        static const char *const t[] = {"session", "placed", "ambiguous", "no-node"};
        return k < ELEMENTSOF(t) ? t[k] : "unknown";
}

static int on_logon_query(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                          json_t **ret_reply, void *userdata) {
        struct directory *d = userdata;
        const char *user, *cookie, *entry;
        struct dir_answer a;
        json_t *reply;
        int r;

        if ((r = require_body(body, ret_reply)) || (r = field_string(body, "user", &user, ret_reply)) ||
            (r = field_string(body, "cookie", &cookie, ret_reply)) ||
            (r = field_string(body, "entry_node", &entry, ret_reply)))
                return r;
        r = dir_logon_query(d->store, user ? user : cookie, entry, d->policy, &a);
        if (r < 0)
                return store_refusal(r, "unknown-node",
                                     r == -ENOENT ? "the entry node has not registered" : NULL, ret_reply);

        reply = json_pack("{s:s}", "answer", answer_kind_to_string(a.kind));
        if (!reply)
                return -ENOMEM;
        *ret_reply = reply;
        if (a.kind == DIR_ANSWER_SESSION || a.kind == DIR_ANSWER_PLACED) {
                if (json_object_set_new(reply, "node", json_string(a.node)) < 0 ||
                    json_object_set_new(reply, "addresses", addresses_to_json(a.addresses)) < 0 ||
                    json_object_set_new(reply, "rdp_port", json_integer(a.rdp_port)) < 0 ||
                    json_object_set_new(reply, "redirect", json_boolean(a.redirect)) < 0)
                        return -ENOMEM;
        }
        if (a.kind == DIR_ANSWER_SESSION &&
            (json_object_set_new(reply, "id", json_integer((json_int_t)a.session_id)) < 0 ||
             json_object_set_new(reply, "session_id", json_integer(a.node_session)) < 0 ||
             json_object_set_new(reply, "state", json_string(dir_session_state_to_string(a.state))) < 0))
                return -ENOMEM;
        if (a.kind == DIR_ANSWER_PLACED &&
            json_object_set_new(reply, "reserved_until_usec", json_integer((json_int_t)a.reserved_until)) <
                    0)
                return -ENOMEM;
        return 200;
}

static int on_changes(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                      json_t **ret_reply, void *userdata) {
        struct directory *d = userdata;
        uint64_t since, wait;
        struct waiter *w;
        int r;

        if ((r = parse_query_uint(req, "since", 0, &since, ret_reply)) ||
            (r = parse_query_uint(req, "wait", 0, &wait, ret_reply)))
                return r;
        wait = MIN(wait, (uint64_t)DIRECTORY_WAIT_MAX_SEC);

        r = changes_answer(d, since, ret_reply);
        if (r != 0)
                return r;
        if (wait == 0) {
                *ret_reply = json_pack("{s:I, s:[], s:b}", "revision", (json_int_t)since, "changes", "more",
                                       false);
                return *ret_reply ? 200 : -ENOMEM;
        }

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        *w = (struct waiter){.d = d, .req = req, .since = since, .next = d->waiters};
        r = tsf_api_request_suspend(req, wait * USEC_PER_SEC, waiter_cancel, w);
        if (r < 0) {
                free(w);
                return r;
        }
        if (d->waiters)
                d->waiters->prev = w;
        d->waiters = w;
        return TSF_API_SUSPENDED;
}

static int on_drain(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                    json_t **ret_reply, void *userdata) {
        static const struct {
                const char *name;
                enum dir_drain drain;
        } states[] = {
                {"enable", DIR_DRAIN_ENABLED},
                {"enabled", DIR_DRAIN_ENABLED},
                {"disable", DIR_DRAIN_DISABLED},
                {"disabled", DIR_DRAIN_DISABLED},
                {"drain-until-restart", DIR_DRAIN_UNTIL_RESTART},
        };
        struct directory *d = userdata;
        const char *node, *state;
        int r;

        if ((r = require_body(body, ret_reply)) || (r = field_string(body, "node", &node, ret_reply)) ||
            (r = field_string(body, "state", &state, ret_reply)))
                return r;
        if (!node || !state) {
                *ret_reply = tsf_api_error("invalid-request", "'node' and 'state' are required");
                return 400;
        }
        for (size_t i = 0; i < ELEMENTSOF(states); i++) {
                if (strcmp(state, states[i].name) != 0)
                        continue;
                r = dir_node_set_drain(d->store, node, states[i].drain);
                if (r < 0)
                        return store_refusal(r, "unknown-node", r == -ENOENT ? "no such node" : NULL,
                                             ret_reply);
                log_info("Node %s: logons %s (by uid %u).", node, dir_drain_to_string(states[i].drain),
                         (unsigned)peer->uid);
                directory_changed(d);
                *ret_reply = json_pack("{s:I}", "revision", (json_int_t)dir_store_revision(d->store));
                return 200;
        }
        *ret_reply = tsf_api_error("invalid-request",
                                   "unknown state '%s' (enable, disable, drain-until-restart)", state);
        return 400;
}

static const struct tsf_api_route directory_routes[] = {
        {"POST", "/v1/nodes/register", TSF_API_BODY, on_register},
        {"POST", "/v1/nodes/heartbeat", TSF_API_BODY, on_heartbeat},
        {"GET", "/v1/nodes", 0, on_nodes},
        {"POST", "/v1/nodes/drain", TSF_API_BODY | TSF_API_LOCAL, on_drain},
        {"POST", "/v1/sessions/event", TSF_API_BODY, on_session_event},
        {"POST", "/v1/logon-query", TSF_API_BODY, on_logon_query},
        {"GET", "/v1/changes", 0, on_changes},
        {"GET", "/v1/snapshot", 0, on_snapshot},
        {},
};

/* ---- metrics -------------------------------------------------------------- */

/* Per-state counts are kept by the store's triggers; the nodes are read
 * once per revision. */

static int count_node(const struct dir_change *c, void *userdata) {
        struct counts *k = userdata;

        if (c->kind == DIR_CHANGE_NODE) {
                if (c->node->up)
                        k->nodes_up++;
                else
                        k->nodes_down++;
        }
        return 0;
}

static const struct counts *directory_counts(struct directory *d) {
        struct counts k = {};
        uint64_t sessions[_DIR_SESSION_STATE_MAX];

        if (d->counts.valid && d->counts.revision == dir_store_revision(d->store))
                return &d->counts;
        if (dir_snapshot(d->store, 0, 1, count_node, &k, &k.revision) >= 0 &&
            dir_session_counts(d->store, sessions, NULL) >= 0) {
                for (size_t i = 0; i < _DIR_SESSION_STATE_MAX; i++)
                        k.sessions[i] = sessions[i];
                k.valid = true;
                d->counts = k;
        }
        return &d->counts;
}

static double metric_active(void *userdata) {
        return directory_counts(userdata)->sessions[DIR_SESSION_ACTIVE];
}
static double metric_disconnected(void *userdata) {
        return directory_counts(userdata)->sessions[DIR_SESSION_DISCONNECTED];
}
static double metric_lost(void *userdata) {
        return directory_counts(userdata)->sessions[DIR_SESSION_LOST];
}
static double metric_up(void *userdata) {
        return directory_counts(userdata)->nodes_up;
}
static double metric_down(void *userdata) {
        return directory_counts(userdata)->nodes_down;
}
static double metric_revision(void *userdata) {
        struct directory *d = userdata;
        return (double)dir_store_revision(d->store);
}

static const struct service_metric directory_metrics[] = {
        {"tsfarm_directory_sessions_active", "Sessions in the active state.", TSF_METRIC_GAUGE,
         metric_active},
        {"tsfarm_directory_sessions_disconnected", "Sessions in the disconnected state.", TSF_METRIC_GAUGE,
         metric_disconnected},
        {"tsfarm_directory_sessions_lost", "Sessions lost with their node.", TSF_METRIC_GAUGE, metric_lost},
        {"tsfarm_directory_nodes_up", "Registered nodes that are up.", TSF_METRIC_GAUGE, metric_up},
        {"tsfarm_directory_nodes_down", "Registered nodes marked down (heartbeat lapsed).", TSF_METRIC_GAUGE,
         metric_down},
        {"tsfarm_directory_revision", "The directory's newest revision.", TSF_METRIC_GAUGE, metric_revision},
};

/* ---- the role ------------------------------------------------------------- */

static int on_expire(sd_event_source *s, uint64_t usec, void *userdata) {
        struct directory *d = userdata;
        int r;

        /* Right after a start, every heartbeat on record is from before it:
         * the nodes had no directory to heartbeat to. A whole lapse goes by
         * before anyone is judged, or a directory outage longer than the
         * lapse would cost the farm every session. */
        if (tsf_now_monotonic() < d->started + d->heartbeat_lapse)
                r = 0;
        else
                r = dir_nodes_expire(d->store, tsf_now_realtime(), d->heartbeat_lapse);
        if (r < 0)
                log_warning_errno(r, "Failed to expire lapsed nodes: %m");
        else if (r > 0) {
                log_notice("%d node(s) missed their heartbeats for %" PRIu64
                           " ms, marked down; their sessions "
                           "are lost.",
                           r, d->heartbeat_lapse / USEC_PER_MSEC);
                directory_changed(d);
        }

        if (++d->ticks >= DIRECTORY_COMPACT_TICKS) {
                d->ticks = 0;
                if (d->compact_mark > 0) {
                        r = dir_changes_compact(d->store, d->compact_mark);
                        if (r < 0)
                                log_warning_errno(r, "Failed to compact the change history: %m");
                        else if (r > 0)
                                log_debug("Compacted %d tombstone(s) up to revision %" PRIu64 ".", r,
                                          d->compact_mark);
                }
                d->compact_mark = dir_store_revision(d->store);
                d->notified_revision = d->compact_mark;
        }

        r = sd_event_source_set_time_relative(s, DIRECTORY_EXPIRE_INTERVAL);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        if (r < 0)
                return log_error_errno(r, "Failed to re-arm the heartbeat timer: %m");
        return 0;
}

static void apply_live_config(struct directory *d, const struct directory_config *c) {
        d->heartbeat_lapse = c->heartbeat_lapse;
        d->policy = c->allow_multiple_sessions ? DIR_POLICY_ALLOW_MULTIPLE : DIR_POLICY_ONE_SESSION;
}

static int directory_new(struct manager *m, void **ret) {
        struct directory *d = calloc(1, sizeof(*d));

        if (!d)
                return log_oom();
        d->manager = m;
        apply_live_config(d, &m->config->directory);
        *ret = d;
        return 0;
}

static int directory_start(void *userdata) {
        struct directory *d = userdata;
        const struct service_config *c = &d->manager->config->directory.service;
        const struct service_spec spec = {
                .section = "directory",
                .unreachable = "nodes cannot reach this directory",
                .routes = directory_routes,
                .metrics = directory_metrics,
                .n_metrics = ELEMENTSOF(directory_metrics),
                .userdata = d,
        };
        char endpoints[PATH_MAX + 64];
        int r;

        r = tsf_mkdir_parent(c->database, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create the directory for %s: %m", c->database);
        r = dir_store_open(c->database, &d->store);
        if (r == -EPROTONOSUPPORT)
                return log_error_errno(r, "%s was written by a newer tsfarm; refusing to touch it.",
                                       c->database);
        if (r == -EMEDIUMTYPE)
                return log_error_errno(r, "%s is not a directory database.", c->database);
        if (r < 0)
                return log_error_errno(r, "Failed to open the directory database %s: %m", c->database);
        d->compact_mark = dir_store_revision(d->store);

        r = service_api_start(d->manager->event, c, &spec, &d->api);
        if (r < 0)
                return r;

        d->started = tsf_now_monotonic();
        /* Host agents heartbeat every 5 s and retry 5 s after a failure. */
        if (d->heartbeat_lapse < 11 * USEC_PER_SEC)
                log_warning("heartbeat-lapse is %" PRIu64 " ms: host agents heartbeat every 5 s, so a "
                            "single lost heartbeat marks a node down; 11 s or more is advised.",
                            d->heartbeat_lapse / USEC_PER_MSEC);
        r = sd_event_add_defer(d->manager->event, &d->notify, on_notify, d);
        if (r >= 0)
                r = sd_event_source_set_enabled(d->notify, SD_EVENT_OFF);
        if (r >= 0)
                r = sd_event_add_time_relative(d->manager->event, &d->expire_timer, CLOCK_MONOTONIC,
                                               DIRECTORY_EXPIRE_INTERVAL, 0, on_expire, d);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the directory's event sources: %m");

        service_endpoints(c, d->api, endpoints, sizeof(endpoints));
        log_info("Directory serving %s (revision %" PRIu64 ") on %s.", c->database,
                 dir_store_revision(d->store), endpoints);
        return 0;
}

static int directory_reload(void *userdata, const struct tsagent_config *c) {
        struct directory *d = userdata;
        const struct directory_config *old = &d->manager->config->directory;
        const struct directory_config *new = &c->directory;

        if (service_config_changed(&old->service, &new->service))
                log_warning("[directory] database, listen, socket and the TLS files change only on restart, "
                            "ignoring the new values.");
        apply_live_config(d, new);
        return 0;
}

static void directory_free(void *userdata) {
        struct directory *d = userdata;

        if (!d)
                return;
        sd_event_source_disable_unref(d->expire_timer);
        /* The server ends the long polls (their on_cancel frees the waiters). */
        tsf_api_server_free(d->api);
        sd_event_source_disable_unref(d->notify);
        dir_store_close(d->store);
        free(d);
}

const struct tsagent_role_ops directory_role_ops = {
        .name = "directory",
        .new = directory_new,
        .start = directory_start,
        .reload = directory_reload,
        .free = directory_free,
};
