/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "agent/host/addrs.h"
#include "agent/host/datapath.h"
#include "agent/host/dirclient.h"
#include "agent/host/licclient.h"
#include "agent/host/gateway.h"
#include "agent/host/host.h"
#include "agent/host/sockdiag.h"
#include "agent/host/tracker.h"
#include "tsfarm/api.h"
#include "tsfarm/fs.h"
#include "tsfarm/list.h"
#include "tsfarm/log.h"
#include "tsfarm/userkey.h"

/* Which user a client address was last relayed here for: lets a fast-path
 * connection (straight to the RDP server, no gateway) be attributed to its
 * user. Direct-mapped: a collision forgets, it never answers wrongly. */
#define CLIENT_USERS 4096

struct client_user {
        uint32_t addr_be;
        uint64_t user_hash;
        char user_key[GATEWAY_USER_KEY_MAX];
};

/* A fast-path connection attributed to a user, until it closes. */
struct tracked_conn {
        uint64_t cookie;
        char user_key[GATEWAY_USER_KEY_MAX];
};

/* A decision waiting for the directory's answer. */
struct pending {
        struct host *host;
        struct pending *prev, *next;
        uint64_t id;
        struct sockaddr_in client;
        char user_key[GATEWAY_USER_KEY_MAX];
        char cookie[GATEWAY_USER_KEY_MAX];
        struct dirclient_query *query;
};

struct host {
        struct manager *manager;
        const struct host_config *config; /* the manager's; replaced on reload */
        const struct host_node_config *self;
        struct datapath *datapath;
        struct gateway *gateway;
        struct host_addrs *addrs;
        struct dirclient *dirclient; /* NULL: no [host] directory */
        struct tracker *tracker;     /* NULL: track-sessions = no, or no directory */
        struct tsf_api_server *api;  /* the local API */
        struct licclient *licclient; /* [host] licensing = yes */
        struct pending *pending;
        struct client_user client_users[CLIENT_USERS];
        struct tracked_conn *conns;
        size_t n_conns, size_conns;
        uint64_t events_seen;
        bool stopping;
};

static const struct host_node_config *node_by_id(const struct host *h, uint32_t id) {
        for (size_t i = 0; i < h->config->n_nodes; i++)
                if (h->config->nodes[i].id == id)
                        return &h->config->nodes[i];
        return NULL;
}

static const struct host_node_config *node_by_addr(const struct host *h, uint32_t addr_be) {
        for (size_t i = 0; i < h->config->n_nodes; i++)
                for (size_t j = 0; j < h->config->nodes[i].n_addrs; j++)
                        if (h->config->nodes[i].addrs[j] == addr_be)
                                return &h->config->nodes[i];
        return NULL;
}

static const char *ip4(uint32_t addr_be, char buf[static INET_ADDRSTRLEN]) {
        return inet_ntop(AF_INET, &addr_be, buf, INET_ADDRSTRLEN);
}

/* Rebuilds the nodes map from the configuration and this host's own
 * addresses. Our own addresses (and backend-source) are SELF|BYPASS:
 * a connection from them is a local process, typically the gateway's own
 * backend leg, and must reach the RDP server directly. */
static int host_sync_nodes(struct host *h) {
        struct tsf_node_key keys[TSF_NODES_MAX];
        struct tsf_node_value vals[TSF_NODES_MAX];
        uint32_t local[256];
        size_t n = 0, n_local;

        for (size_t i = 0; i < h->config->n_nodes; i++) {
                const struct host_node_config *node = &h->config->nodes[i];
                uint16_t flags = node == h->self ? TSF_NODE_F_SELF : TSF_NODE_F_PEER;

                const struct dirclient_node *dn = dirclient_node(h->dirclient, node->name);

                if (node->draining || (node == h->self && h->config->drain) || (dn && dn->draining))
                        flags |= TSF_NODE_F_DRAINING;
                if (dn && !dn->up)
                        flags |= TSF_NODE_F_DOWN;
                for (size_t j = 0; j < node->n_addrs && n < TSF_NODES_MAX; j++, n++) {
                        keys[n].addr = node->addrs[j];
                        vals[n] = (struct tsf_node_value){
                                .node_id = node->id,
                                .rdp_port = htons(node->rdp_port),
                                .flags = flags,
                                .weight = node->weight,
                        };
                }
        }

        n_local = h->addrs ? host_addrs_ipv4(h->addrs, local, ELEMENTSOF(local) - 1) : 0;
        n_local = MIN(n_local, ELEMENTSOF(local) - 1);
        local[n_local++] = h->config->backend_source.s_addr;
        for (size_t i = 0; i < n_local && n < TSF_NODES_MAX; i++) {
                bool known = false;

                for (size_t j = 0; j < n && !known; j++)
                        if (keys[j].addr == local[i]) {
                                vals[j].flags |= TSF_NODE_F_BYPASS;
                                known = true;
                        }
                if (known)
                        continue;
                keys[n].addr = local[i];
                vals[n++] = (struct tsf_node_value){
                        .node_id = h->self->id,
                        .rdp_port = htons(h->config->rdp_port),
                        .flags = TSF_NODE_F_SELF | TSF_NODE_F_BYPASS,
                        .weight = h->self->weight,
                };
        }
        return datapath_set_nodes(h->datapath, keys, vals, n);
}

static int host_sync_sessions(struct host *h) {
        for (size_t i = 0; i < h->config->n_sessions; i++) {
                const struct host_node_config *node =
                        host_config_find_node(h->config, h->config->sessions[i].node);
                struct tsf_session_value v = {
                        .node_id = node->id,
                        .state = TSF_SESSION_DISCONNECTED,
                        .revision = 1,
                        .state_changed_us = tsf_now_realtime(),
                };
                int r = datapath_session_set(h->datapath, h->config->sessions[i].user, &v);

                if (r < 0)
                        return log_error_errno(r, "Failed to write session of %s to the sessions map: %m",
                                               h->config->sessions[i].user);
        }
        return 0;
}

static void on_addrs_changed(struct host_addrs *a, void *userdata) {
        struct host *h = userdata;
        int r = host_sync_nodes(h);

        if (r < 0)
                log_warning_errno(r, "Failed to update the nodes map after an address change, ignoring: %m");
        else
                log_info("Local addresses changed; nodes map updated.");
}

/* ---- session tracking (RDP servers that report nothing) -------------------- */

static struct client_user *client_user_slot(struct host *h, uint32_t addr_be) {
        uint32_t x = addr_be * 2654435761u;

        return &h->client_users[(x >> 20) % CLIENT_USERS];
}

static void client_user_note(struct host *h, uint32_t addr_be, const char *user_key) {
        struct client_user *u = client_user_slot(h, addr_be);

        u->addr_be = addr_be;
        u->user_hash = tsf_user_key_hash(user_key, strlen(user_key));
        snprintf(u->user_key, sizeof(u->user_key), "%s", user_key);
}

/* The user a fast-path connection from addr_be belongs to: sk_lookup took
 * the fast path only if the affinity entry was fresh, single-user and for
 * this node, and that entry's user is the one we noted for the address. */
static const char *fast_path_user(struct host *h, uint32_t addr_be) {
        struct client_user *u = client_user_slot(h, addr_be);
        struct tsf_affinity_value aff;
        struct timespec ts;

        if (u->addr_be != addr_be || !u->user_key[0])
                return NULL;
        if (datapath_affinity_get(h->datapath, addr_be, &aff) < 0 || aff.node_id != h->self->id ||
            (aff.flags & TSF_AFFINITY_F_MULTI_USER) || aff.user_hash != u->user_hash)
                return NULL;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (aff.expires_ns <= (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec)
                return NULL;
        return u->user_key;
}

static void conn_track_open(struct host *h, const struct tsf_conn_event *ev) {
        struct tsf_node_value nv;
        const char *user;

        /* Peers (forwarded connections), our own addresses (the gateway's
         * backend legs, which the relay observer counts) are not clients. */
        if (datapath_lookup_node(h->datapath, ev->conn.remote_addr, &nv) == 0)
                return;
        user = fast_path_user(h, ev->conn.remote_addr);
        if (!user)
                return; /* a gateway client leg, or a client we cannot name */
        if (h->n_conns == h->size_conns) {
                size_t size = h->size_conns ? h->size_conns * 2 : 64;
                struct tracked_conn *grown = realloc(h->conns, size * sizeof(*grown));

                if (!grown)
                        return (void)log_oom();
                h->conns = grown;
                h->size_conns = size;
        }
        h->conns[h->n_conns].cookie = ev->cookie;
        snprintf(h->conns[h->n_conns].user_key, sizeof(h->conns[0].user_key), "%s", user);
        h->n_conns++;
        if (tracker_open(h->tracker, user, ev->conn.remote_addr) < 0)
                log_oom();
}

static void conn_track_close(struct host *h, const struct tsf_conn_event *ev) {
        for (size_t i = 0; i < h->n_conns; i++)
                if (h->conns[i].cookie == ev->cookie) {
                        tracker_close(h->tracker, h->conns[i].user_key);
                        h->conns[i] = h->conns[--h->n_conns];
                        return;
                }
}

static void on_conn_event(const struct tsf_conn_event *ev, void *userdata) {
        struct host *h = userdata;
        char a[INET_ADDRSTRLEN], b[INET_ADDRSTRLEN];

        h->events_seen++;
        if (ev->type == TSF_EVENT_OPEN) {
                if (h->tracker && ev->conn.dir == TSF_CONN_PASSIVE)
                        conn_track_open(h, ev);
                return;
        }
        if (h->tracker)
                conn_track_close(h, ev);
        log_debug("Connection %s:%u <-> %s:%u closed (end %u, error %u, %llu bytes in, %llu out).",
                  ip4(ev->conn.local_addr, a), ev->conn.local_port, ip4(ev->conn.remote_addr, b),
                  ev->conn.remote_port, ev->conn.end, ev->error, (unsigned long long)ev->conn.bytes_received,
                  (unsigned long long)ev->conn.bytes_acked);
}

/* The gateway relays a connection of a known user to our RDP server. */
static void on_relay(void *userdata, uint64_t id, const struct gateway_decision *d,
                     const struct sockaddr_in *client, bool started) {
        struct host *h = userdata;

        if (d->verdict != GATEWAY_LOCAL || !d->user_key[0] || h->stopping)
                return;
        if (started)
                client_user_note(h, client->sin_addr.s_addr, d->user_key);
        if (!h->tracker)
                return;
        if (started) {
                if (tracker_open(h->tracker, d->user_key, client->sin_addr.s_addr) < 0)
                        log_oom();
        } else
                tracker_close(h->tracker, d->user_key);
}

static int tracker_lookup(void *userdata, const char *user_key, uint32_t *ret_session_id,
                          bool *ret_disconnected) {
        struct host *h = userdata;
        struct tsf_session_value v;

        if (datapath_session_get(h->datapath, user_key, &v) < 0 || v.node_id != h->self->id ||
            v.state == TSF_SESSION_LOST)
                return -ENOENT;
        *ret_session_id = v.session_id;
        *ret_disconnected = v.state == TSF_SESSION_DISCONNECTED;
        return 0;
}

static void tracker_report(void *userdata, const char *event, const char *user_key, uint32_t session_id,
                           uint32_t client_be) {
        struct host *h = userdata;
        char a[INET_ADDRSTRLEN];
        struct dirclient_event ev = {
                .event = event,
                .user = user_key,
                .session_id = session_id,
                .client_address = client_be ? ip4(client_be, a) : NULL,
        };

        if (dirclient_report(h->dirclient, &ev) < 0)
                log_oom();
}

static void on_session_ended(void *userdata, const char *user_key, uint32_t session_id, bool lost) {
        struct host *h = userdata;

        if (h->tracker)
                tracker_session_ended(h->tracker, user_key, session_id, lost);
}

static void on_directory_nodes(void *userdata) {
        struct host *h = userdata;
        int r = host_sync_nodes(h);

        if (r < 0)
                log_warning_errno(r, "Failed to update the nodes map from the directory, ignoring: %m");
}

/* Where a node's RDP server is reached from here: this node's own through
 * the local backend (from the bypassed source), a peer at its address. */
static void decision_to_node(const struct host *h, const struct host_node_config *node, uint32_t addr_be,
                             struct gateway_decision *out) {
        if (node == h->self) {
                out->verdict = GATEWAY_LOCAL;
                out->backend = h->config->local_backend;
                return;
        }
        out->verdict = GATEWAY_PEER;
        out->backend = (struct sockaddr_in){
                .sin_family = AF_INET,
                .sin_port = htons(node->rdp_port),
                .sin_addr.s_addr = addr_be ? addr_be : node->addrs[0],
        };
}

/* A Windows client cuts the cookie to 9 characters: find the one session
 * whose key it can be a prefix of. Two candidates mean we cannot tell. */
static int find_truncated(struct host *h, const struct tsf_userkey *cookie, char *key, size_t size) {
        int fd = datapath_sessions_fd(h->datapath);
        struct tsf_session_key k, next;
        bool have = false;
        int found = 0;

        while (bpf_map_get_next_key(fd, have ? &k : NULL, &next) == 0) {
                struct tsf_userkey full;

                k = next;
                have = true;
                if (k.user[TSF_USER_KEY_SIZE - 1] != 0)
                        continue; /* long names are not 9-character prefixes of anything */
                if (tsf_userkey_parse(k.user, strnlen(k.user, TSF_USER_KEY_SIZE), &full) < 0)
                        continue;
                if (!tsf_userkey_match(cookie, &full))
                        continue;
                if (found++ == 0)
                        snprintf(key, size, "%s", tsf_userkey_index(&full));
        }
        return found;
}

/* 1: decided; 0: not by this cookie, with *ret_miss when the mirror simply
 * has no usable session for it (then the directory may know more). */
static int decide_by_user(struct host *h, const struct tsf_cr *cr, struct gateway_decision *out,
                          bool *ret_miss) {
        const char *cookie = cr->cookie + cr->cookie_value_offset;
        char key[TSF_USERKEY_INPUT_MAX + 1];
        struct tsf_session_value s;
        const struct host_node_config *node;
        struct tsf_userkey uk;
        int r;

        r = tsf_userkey_parse_cookie(cookie, cr->cookie_value_len, &uk);
        if (r < 0) {
                log_debug("Cookie '%.*s' is not a user name, ignoring it.", (int)cr->cookie_value_len,
                          cookie);
                return 0;
        }
        snprintf(key, sizeof(key), "%s", tsf_userkey_index(&uk));
        snprintf(out->user_key, sizeof(out->user_key), "%s", key);

        r = datapath_session_get(h->datapath, key, &s);
        if (r == -ENOENT && tsf_userkey_maybe_truncated(&uk)) {
                r = find_truncated(h, &uk, key, sizeof(key));
                if (r > 1) {
                        /* The directory would find the same candidates. */
                        log_info("Cookie '%s' may be truncated and matches %d users; not steering by it.",
                                 uk.folded, r);
                        return 0;
                }
                if (r == 1) {
                        snprintf(out->user_key, sizeof(out->user_key), "%s", key);
                        r = datapath_session_get(h->datapath, key, &s);
                } else
                        r = -ENOENT;
        }
        if (r < 0 || s.state == TSF_SESSION_LOST) {
                *ret_miss = true; /* no session known here: ask, or placement decides */
                return 0;
        }
        node = node_by_id(h, s.node_id);
        if (!node) {
                log_warning("Session of %s names node id %u, which is not in the farm; placing anew.", key,
                            s.node_id);
                return 0;
        }
        decision_to_node(h, node, 0, out);
        snprintf(out->reason, sizeof(out->reason), "mstshash %.56s: %s session on %.32s", key,
                 s.state == TSF_SESSION_ACTIVE ? "active" : "disconnected", node->name);
        return 1;
}

/* Whether a node takes new sessions, by this file and, when it has said,
 * the directory (drain state, down, session limit). */
static bool node_takes_new(const struct host *h, const struct host_node_config *n) {
        const struct dirclient_node *dn = dirclient_node(h->dirclient, n->name);

        if (n->draining || (n == h->self && h->config->drain))
                return false;
        return !dn ||
               (dn->up && !dn->draining && (dn->session_limit == 0 || dn->sessions < dn->session_limit));
}

/* Placement without the directory's answer: here, unless this node takes
 * no new sessions; then the peer that does with the most room for its
 * weight (the directory's last word on session counts, if any). */
static void decide_placement(struct host *h, struct gateway_decision *out) {
        const struct host_node_config *best = NULL;
        uint64_t best_load = 0;

        if (node_takes_new(h, h->self)) {
                decision_to_node(h, h->self, 0, out);
                snprintf(out->reason, sizeof(out->reason), "new session: placed here");
                return;
        }
        for (size_t i = 0; i < h->config->n_nodes; i++) {
                const struct host_node_config *n = &h->config->nodes[i];
                const struct dirclient_node *dn = dirclient_node(h->dirclient, n->name);
                /* (sessions + 1) / weight, compared as cross products. */
                uint64_t load = dn ? dn->sessions + 1 : 1;

                if (n == h->self || !node_takes_new(h, n) || n->weight == 0)
                        continue;
                if (!best || load * best->weight < best_load * n->weight) {
                        best = n;
                        best_load = load;
                }
        }
        if (!best) {
                out->verdict = GATEWAY_REFUSE;
                snprintf(out->reason, sizeof(out->reason), "new session: no node takes new sessions");
                return;
        }
        decision_to_node(h, best, 0, out);
        snprintf(out->reason, sizeof(out->reason), "new session: this node takes none, placed on %.64s",
                 best->name);
}

/* Notes the client's affinity to the node decided. routed: the decision
 * followed a routing token. */
static void decision_finish(struct host *h, const struct sockaddr_in *client, struct gateway_decision *out,
                            bool routed) {
        const struct host_node_config *node;
        uint64_t user_hash;
        int r;

        if (out->verdict == GATEWAY_REFUSE)
                return;
        /* A client without a user (no cookie) placed here may still be
         * redirected by the session host once it logs on (its session is
         * elsewhere): an affinity to this node would open the fast path,
         * and its return with the routing token would then reach this
         * node's RDP server again instead of the gateway. */
        if (out->verdict == GATEWAY_LOCAL && !out->user_key[0] && !routed)
                return;
        node = out->verdict == GATEWAY_LOCAL ? h->self : node_by_addr(h, out->backend.sin_addr.s_addr);
        user_hash = out->user_key[0] ? tsf_user_key_hash(out->user_key, strlen(out->user_key)) : 0;
        if (node && h->config->affinity_ttl > 0) {
                r = datapath_affinity_note(h->datapath, client->sin_addr.s_addr, node->id, user_hash,
                                           h->config->affinity_ttl * 1000);
                if (r < 0)
                        log_debug_errno(r, "Failed to note client affinity, ignoring: %m");
        }
}

/* Steps 3 and 4 without the directory: affinity, then placement here. */
static void decide_locally(struct host *h, const struct sockaddr_in *client, struct gateway_decision *out) {
        struct tsf_affinity_value aff;
        const struct host_node_config *node;

        /* 3. Client affinity (the fast path missed it: expired, shared, or
         *    for another node). Shared addresses never decide. */
        if (datapath_affinity_get(h->datapath, client->sin_addr.s_addr, &aff) == 0 &&
            !(aff.flags & TSF_AFFINITY_F_MULTI_USER) && (node = node_by_id(h, aff.node_id))) {
                decision_to_node(h, node, 0, out);
                snprintf(out->reason, sizeof(out->reason), "client affinity to %.64s", node->name);
                return;
        }
        /* 4. Placement. */
        decide_placement(h, out);
}

static void pending_free(struct pending *p) {
        struct host *h = p->host;

        LIST_REMOVE(h->pending, p);
        dirclient_query_cancel(p->query);
        free(p);
}

static void on_directory_answer(int r, const struct dirclient_answer *a, void *userdata) {
        struct pending *p = userdata;
        struct host *h = p->host;
        struct gateway_decision out = {};
        const struct host_node_config *node = NULL;
        const char *who = p->cookie[0] ? p->cookie : "a client without cookie";

        p->query = NULL;
        snprintf(out.user_key, sizeof(out.user_key), "%s", p->user_key);
        if (r < 0)
                log_info("The directory did not answer for %s in time (%s); deciding from what this node "
                         "knows.",
                         who, strerror(-r));
        else if (a->kind == DIRCLIENT_SESSION ||
                 (a->kind == DIRCLIENT_PLACED && h->config->placement == HOST_PLACEMENT_FARM)) {
                node = host_config_find_node(h->config, a->node);
                if (!node)
                        log_warning("The directory sends %s to node %s, which has no [node] section here; "
                                    "deciding from what this node knows.",
                                    who, a->node);
        }
        if (node) {
                decision_to_node(h, node, 0, &out);
                if (a->kind == DIRCLIENT_SESSION)
                        snprintf(out.reason, sizeof(out.reason), "directory: %s session of %.48s on %.32s",
                                 a->disconnected ? "disconnected" : "active", p->user_key, node->name);
                else
                        snprintf(out.reason, sizeof(out.reason), "directory placed the new session on %.48s",
                                 node->name);
        } else if (r >= 0 && a->kind == DIRCLIENT_NO_NODE && h->config->placement == HOST_PLACEMENT_FARM) {
                out.verdict = GATEWAY_REFUSE;
                snprintf(out.reason, sizeof(out.reason), "directory: no node takes new sessions");
        } else
                decide_locally(h, &p->client, &out);
        decision_finish(h, &p->client, &out, false);
        r = gateway_complete_decision(h->gateway, p->id, &out);
        if (r < 0)
                log_debug_errno(r, "Connection %" PRIu64 " no longer waits for its decision: %m", p->id);
        pending_free(p);
}

/* Asks the directory and answers later; false when it cannot be asked. */
static bool decide_by_directory(struct host *h, const struct gateway_request *req, const char *cookie,
                                const char *user_key) {
        struct pending *p;
        int r;

        if (!h->dirclient || !dirclient_reachable(h->dirclient))
                return false;
        p = calloc(1, sizeof(*p));
        if (!p)
                return false;
        p->host = h;
        p->id = req->id;
        p->client = req->client;
        snprintf(p->cookie, sizeof(p->cookie), "%s", cookie ? cookie : "");
        snprintf(p->user_key, sizeof(p->user_key), "%s", user_key ? user_key : "");
        r = dirclient_query(h->dirclient, cookie, on_directory_answer, p, &p->query);
        if (r < 0) {
                log_warning_errno(r, "Failed to ask the directory, deciding locally: %m");
                free(p);
                return false;
        }
        LIST_PREPEND(h->pending, p);
        return true;
}

int host_decide(struct host *h, const struct gateway_request *req, struct gateway_decision *out) {
        const struct tsf_cr *cr = req->cr;
        const struct host_node_config *node;
        char a[INET_ADDRSTRLEN], cookie[GATEWAY_USER_KEY_MAX];
        bool miss = false;
        int r;

        /* 1. A routing token names a node; anything else is refused: the
         *    gateway must never become an open relay. */
        if (cr->cookie_kind == TSF_COOKIE_ROUTING_TOKEN && cr->routing_decoded) {
                node = node_by_addr(h, cr->routing_ipv4_be);
                if (!node || node->rdp_port != cr->routing_port) {
                        out->verdict = GATEWAY_REFUSE;
                        snprintf(out->reason, sizeof(out->reason),
                                 "routing token names %s:%u, which is not a farm node's RDP port",
                                 ip4(cr->routing_ipv4_be, a), cr->routing_port);
                        return 0;
                }
                decision_to_node(h, node, cr->routing_ipv4_be, out);
                snprintf(out->reason, sizeof(out->reason), "routing token for %.64s", node->name);
                decision_finish(h, &req->client, out, true);
                return 0;
        }

        /* 2. mstshash: the mirror's answer for that user; on a miss, the
         *    directory's (it may know a session the feed has not brought
         *    yet, and it places new ones). */
        if (cr->cookie_kind == TSF_COOKIE_MSTSHASH) {
                r = decide_by_user(h, cr, out, &miss);
                if (r < 0)
                        return r;
                if (r > 0) {
                        decision_finish(h, &req->client, out, false);
                        return 0;
                }
                snprintf(cookie, sizeof(cookie), "%.*s", (int)MIN(cr->cookie_value_len, sizeof(cookie) - 1),
                         cr->cookie + cr->cookie_value_offset);
                if (miss && decide_by_directory(h, req, cookie, out->user_key))
                        return GATEWAY_DECIDE_LATER;
        } else if (h->config->placement == HOST_PLACEMENT_FARM) {
                /* 3. No cookie: affinity first, then the directory places. */
                struct tsf_affinity_value aff;

                if (!(datapath_affinity_get(h->datapath, req->client.sin_addr.s_addr, &aff) == 0 &&
                      !(aff.flags & TSF_AFFINITY_F_MULTI_USER) && node_by_id(h, aff.node_id)) &&
                    decide_by_directory(h, req, NULL, NULL))
                        return GATEWAY_DECIDE_LATER;
        }

        /* 3, 4. Affinity, then placement here. */
        decide_locally(h, &req->client, out);
        decision_finish(h, &req->client, out, false);
        return 0;
}

/* The gateway logs the verdict and its reason once, where it acts on it. */
static int on_decide(void *userdata, const struct gateway_request *req, struct gateway_decision *out) {
        return host_decide(userdata, req, out);
}

/* Entries in the conns map whose socket no longer exists (closed while no
 * agent listened, so no one consumed their event) are removed. */
struct reconcile {
        uint64_t *cookies;
        size_t n, size;
};

static int collect_cookie(const struct sockdiag_sock *s, void *userdata) {
        struct reconcile *rc = userdata;

        if (rc->n == rc->size) {
                size_t size = rc->size ? rc->size * 2 : 256;
                uint64_t *grown = realloc(rc->cookies, size * sizeof(*grown));

                if (!grown)
                        return -ENOMEM;
                rc->cookies = grown;
                rc->size = size;
        }
        rc->cookies[rc->n++] = s->cookie;
        return 0;
}

static void host_reconcile_conns(struct host *h) {
        struct reconcile rc = {};
        int fd = datapath_conns_fd(h->datapath), r, removed = 0;
        __u64 k, next;
        bool have = false;

        r = sockdiag_list_tcp(h->config->rdp_port, collect_cookie, &rc);
        if (r < 0) {
                free(rc.cookies);
                log_warning_errno(r, "Failed to list RDP-port connections, not reconciling, ignoring: %m");
                return;
        }
        while (bpf_map_get_next_key(fd, have ? &k : NULL, &next) == 0) {
                bool live = false;

                for (size_t i = 0; i < rc.n && !live; i++)
                        live = rc.cookies[i] == next;
                /* Backend legs have a remote RDP port, not a local one. */
                if (!live) {
                        struct tsf_conn c;
                        if (bpf_map_lookup_elem(fd, &next, &c) == 0 && c.dir == TSF_CONN_ACTIVE) {
                                k = next;
                                have = true;
                                continue;
                        }
                        if (bpf_map_delete_elem(fd, &next) == 0) {
                                removed++;
                                continue;
                        }
                }
                k = next;
                have = true;
        }
        log_info("%zu RDP-port sockets live at start-up; %d stale connection records removed.", rc.n,
                 removed);
        free(rc.cookies);
}

/* ---- the local API (UNIX socket: session hosts, tsctl) --------------------- */

static const char *const session_events[] = {"logon", "disconnect", "reconnect", "logoff"};

/* A logon or reconnect the session host reports from a client it saw
 * directly: not the gateway's leg (this host's own addresses) nor a peer's
 * (a farm node), so the client took sk_lookup's fast path, which the
 * gateway never sees. Its user is noted with the address's affinity to
 * this node, so that a second user from one address (an office behind
 * NAT, a load generator) marks the address shared, as the gateway would
 * have (docs/decisions.md: one client address, one user, for the fast
 * path). */
static void note_reported_client(struct host *h, const char *event, const struct tsf_userkey *uk,
                                 const char *client) {
        struct tsf_affinity_value before, after;
        struct tsf_node_value nv;
        struct in_addr a;
        const char *key = tsf_userkey_index(uk);
        int r;

        if (!client || h->config->affinity_ttl == 0 ||
            (!streq_ptr(event, "logon") && !streq_ptr(event, "reconnect")))
                return;
        if (inet_pton(AF_INET, client, &a) != 1 || datapath_lookup_node(h->datapath, a.s_addr, &nv) == 0)
                return;
        if (datapath_affinity_get(h->datapath, a.s_addr, &before) < 0)
                before.flags = 0;
        r = datapath_affinity_note(h->datapath, a.s_addr, h->self->id, tsf_user_key_hash(key, strlen(key)),
                                   h->config->affinity_ttl * 1000);
        if (r < 0) {
                log_debug_errno(r, "Failed to note the affinity of %s, ignoring: %m", client);
                return;
        }
        if (datapath_affinity_get(h->datapath, a.s_addr, &after) == 0 &&
            (after.flags & TSF_AFFINITY_F_MULTI_USER) && !(before.flags & TSF_AFFINITY_F_MULTI_USER))
                log_info("Client address %s is shared: %s logged on from it through the fast path, which "
                         "another user took before; its connections go through the gateway now.",
                         client, key);
}

/* POST /v1/sessions/event: a session host reports one of its sessions.
 * Validated here so that a bad report is refused at once, not dropped
 * later; delivered to the directory in order, queued while it is away. */
static int on_api_session_event(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                                json_t **ret_reply, void *userdata) {
        struct host *h = userdata;
        const char *event = json_string_value(json_object_get(body, "event"));
        const char *user = json_string_value(json_object_get(body, "user"));
        const char *device = json_string_value(json_object_get(body, "device"));
        const char *client = json_string_value(json_object_get(body, "client_address"));
        json_t *id = json_object_get(body, "session_id");
        struct dirclient_stats st;
        struct tsf_userkey uk;
        struct in_addr ignored;
        bool known = false;
        int r;

        if (!h->dirclient) {
                *ret_reply =
                        tsf_api_error("no-directory", "this node follows no directory ([host] directory)");
                return 409;
        }
        if (!json_is_object(body)) {
                *ret_reply = tsf_api_error("invalid-request", "a JSON object is required");
                return 400;
        }
        for (size_t i = 0; event && i < ELEMENTSOF(session_events); i++)
                known = known || strcmp(event, session_events[i]) == 0;
        if (!known) {
                *ret_reply = tsf_api_error("invalid-request",
                                           "'event' must be logon, disconnect, reconnect or logoff");
                return 400;
        }
        if (!user || tsf_userkey_parse(user, strlen(user), &uk) < 0) {
                *ret_reply = tsf_api_error("invalid-request", "'user' is missing or not a user name");
                return 400;
        }
        if (!json_is_integer(id) || json_integer_value(id) <= 0 || json_integer_value(id) > UINT32_MAX) {
                *ret_reply =
                        tsf_api_error("invalid-request", "'session_id' must be an integer 1..4294967295");
                return 400;
        }
        if ((device && strlen(device) > 64) || (json_object_get(body, "device") && !device)) {
                *ret_reply =
                        tsf_api_error("invalid-request", "'device' must be a string of at most 64 bytes");
                return 400;
        }
        if (json_object_get(body, "client_address") &&
            (!client || inet_pton(AF_INET, client, &ignored) != 1)) {
                *ret_reply = tsf_api_error("invalid-request", "'client_address' must be an IPv4 address");
                return 400;
        }
        r = dirclient_report(h->dirclient, &(struct dirclient_event){
                                                   .event = event,
                                                   .user = user,
                                                   .session_id = (uint32_t)json_integer_value(id),
                                                   .device = device,
                                                   .client_address = client,
                                           });
        if (r < 0)
                return r;
        log_info("Session host (pid %d) reports %s of %s, session %" JSON_INTEGER_FORMAT ".", (int)peer->pid,
                 event, user, json_integer_value(id));
        note_reported_client(h, event, &uk, client);
        dirclient_get_stats(h->dirclient, &st);
        *ret_reply = json_pack("{s:I}", "queued", (json_int_t)st.queued);
        return *ret_reply ? 202 : -ENOMEM;
}

static int tracked_to_json(const struct tracker_session *s, void *userdata) {
        return json_array_append_new(userdata, json_pack("{s:s, s:I, s:s, s:i}", "user_key", s->user_key,
                                                         "session_id", (json_int_t)s->session_id, "state",
                                                         s->disconnected ? "disconnected" : "active",
                                                         "connections", (int)s->connections)) < 0
                       ? -ENOMEM
                       : 0;
}

/* GET /v1/status: this node as the host role sees it. */
static int on_api_status(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                         json_t **ret_reply, void *userdata) {
        struct host *h = userdata;
        _cleanup_(json_decrefp) json_t *reply = NULL, *tracked = json_array();
        struct dirclient_stats st;

        if (!tracked || (h->tracker && tracker_foreach(h->tracker, tracked_to_json, tracked) < 0))
                return -ENOMEM;
        reply = json_pack("{s:s, s:I, s:O}", "node", h->self->name, "node_id", (json_int_t)h->self->id,
                          "tracked_sessions", tracked);
        if (!reply)
                return -ENOMEM;
        if (h->dirclient) {
                dirclient_get_stats(h->dirclient, &st);
                if (json_object_set_new(reply, "directory",
                                        json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "url",
                                                  h->config->directory, "reachable",
                                                  dirclient_reachable(h->dirclient), "revision",
                                                  (json_int_t)st.revision, "queued", (json_int_t)st.queued,
                                                  "delivered", (json_int_t)st.delivered, "refused",
                                                  (json_int_t)st.refused, "dropped", (json_int_t)st.dropped,
                                                  "queries", (json_int_t)st.queries, "query_failures",
                                                  (json_int_t)st.query_failures)) < 0)
                        return -ENOMEM;
        }
        *ret_reply = TAKE_PTR(reply);
        return 200;
}

/* GET /v1/sessions/lookup?user=U: where the farm (the directory's mirror
 * in the BPF sessions map) has U's session, so that a session host can
 * redirect a client that reached it without a cookie (DESIGN 2.4). */
static int on_api_session_lookup(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                                 json_t **ret_reply, void *userdata) {
        static const char *const states[] = {
                [TSF_SESSION_ACTIVE] = "active",
                [TSF_SESSION_DISCONNECTED] = "disconnected",
                [TSF_SESSION_LOST] = "lost",
        };
        struct host *h = userdata;
        const char *user = tsf_api_request_query(req, "user");
        const struct host_node_config *node;
        struct tsf_session_value v;
        struct tsf_userkey uk;
        char a[INET_ADDRSTRLEN];
        int r;

        if (!user || tsf_userkey_parse(user, strlen(user), &uk) < 0) {
                *ret_reply = tsf_api_error("invalid-request", "'user' is missing or not a user name");
                return 400;
        }
        r = datapath_session_get(h->datapath, tsf_userkey_index(&uk), &v);
        if (r == -ENOENT) {
                *ret_reply = json_pack("{s:s, s:b}", "user", tsf_userkey_index(&uk), "found", false);
                return *ret_reply ? 200 : -ENOMEM;
        }
        if (r < 0)
                return r;
        node = node_by_id(h, v.node_id);
        *ret_reply = json_pack("{s:s, s:b, s:o, s:I, s:b, s:o, s:i, s:I, s:s}", "user", tsf_userkey_index(&uk),
                               "found", true, "node", node ? json_string(node->name) : json_null(), "node_id",
                               (json_int_t)v.node_id, "here", v.node_id == h->self->id, "address",
                               node && node->n_addrs ? json_string(ip4(node->addrs[0], a)) : json_null(),
                               "rdp_port", (int)(node && node->rdp_port ? node->rdp_port : h->config->rdp_port),
                               "session_id", (json_int_t)v.session_id, "state",
                               v.state < ELEMENTSOF(states) && states[v.state] ? states[v.state] : "unknown");
        return *ret_reply ? 200 : -ENOMEM;
}

static const struct tsf_api_route host_routes[] = {
        {"POST", "/v1/sessions/event", TSF_API_BODY, on_api_session_event},
        {"GET", "/v1/sessions/lookup", 0, on_api_session_lookup},
        {"GET", "/v1/status", 0, on_api_status},
        {},
};

static double metric_queued(void *userdata) {
        struct host *h = userdata;
        struct dirclient_stats st = {};

        if (h->dirclient)
                dirclient_get_stats(h->dirclient, &st);
        return (double)st.queued;
}

static double metric_delivered(void *userdata) {
        struct host *h = userdata;
        struct dirclient_stats st = {};

        if (h->dirclient)
                dirclient_get_stats(h->dirclient, &st);
        return (double)st.delivered;
}

static int host_api_start(struct host *h) {
        struct tsf_api_server_config c = {.unix_path = h->config->socket, .unix_mode = 0600};
        int r;

        r = tsf_mkdir_parent(h->config->socket, 0755);
        if (r >= 0)
                r = tsf_api_server_new(h->manager->event, &c, &h->api);
        if (r >= 0)
                r = tsf_api_server_add_routes(h->api, host_routes, h);
        if (r >= 0)
                r = tsf_api_metric_add(h->api, "tsfarm_host_directory_events_queued",
                                       "Session events waiting for the directory.", TSF_METRIC_GAUGE,
                                       metric_queued, h);
        if (r >= 0)
                r = tsf_api_metric_add(h->api, "tsfarm_host_directory_events_delivered_total",
                                       "Session events the directory accepted.", TSF_METRIC_COUNTER,
                                       metric_delivered, h);
        if (r >= 0 && h->licclient)
                r = licclient_serve(h->licclient, h->api);
        if (r >= 0)
                r = tsf_api_server_start(h->api);
        if (r < 0)
                return log_error_errno(r, "Failed to serve the local API on %s: %m", h->config->socket);
        return 0;
}

static int host_new(struct manager *m, void **ret) {
        struct host *h = calloc(1, sizeof(*h));

        if (!h)
                return log_oom();
        h->manager = m;
        h->config = &m->config->host;
        h->self = host_config_find_node(h->config, m->config->node_name);
        *ret = h;
        return 0;
}

static int host_start(void *userdata) {
        struct host *h = userdata;
        struct gateway_config gc;
        struct datapath_options o = {
                .pin_root = h->config->pin_root,
                .cgroup_path = h->config->cgroup,
                .self_node_id = h->self->id,
                .rdp_port = h->config->rdp_port,
                .sessions_max = h->config->sessions_max,
                .on_event = on_conn_event,
                .userdata = h,
        };
        struct sockaddr_in listen;
        char a[INET_ADDRSTRLEN];
        int r;

        r = datapath_open(h->manager->event, &o, &h->datapath);
        if (r < 0)
                return r;

        r = host_addrs_new(h->manager->event, on_addrs_changed, h, &h->addrs);
        if (r < 0)
                return log_error_errno(r, "Failed to follow this host's addresses: %m");

        /* Nodes and sessions before the gateway enters its slot: the
         * gateway's own backend legs must already be bypassed. */
        r = host_sync_nodes(h);
        if (r < 0)
                return r;
        r = host_sync_sessions(h);
        if (r < 0)
                return r;
        host_reconcile_conns(h);

        gateway_config_init(&gc);
        gc.listen = h->config->gateway_listen;
        gc.backend_source =
                (struct sockaddr_in){.sin_family = AF_INET, .sin_addr = h->config->backend_source};
        gc.first_pdu_timeout = h->config->first_pdu_timeout;
        gc.connect_timeout = h->config->connect_timeout;
        gc.idle_timeout = h->config->idle_timeout;
        gc.buffer_size = h->config->relay_buffer;
        gc.max_connections = h->config->max_connections;
        r = gateway_new(h->manager->event, &gc, on_decide, h, &h->gateway);
        if (r < 0)
                return log_error_errno(r, "Failed to start the gateway on %s:%u: %m",
                                       ip4(gc.listen.sin_addr.s_addr, a), ntohs(gc.listen.sin_port));
        r = datapath_set_gateway(h->datapath, gateway_fd(h->gateway));
        if (r < 0)
                return log_error_errno(r, "Failed to put the gateway socket into the BPF gateway map: %m");
        /* The directory's sessions replace [sessions] once its snapshot
         * arrives; until then (and while it is unreachable) steering goes on
         * from what the map holds. */
        if (h->config->directory) {
                struct dirclient_options dco = {
                        .event = h->manager->event,
                        .config = h->manager->config,
                        .self = h->self,
                        .datapath = h->datapath,
                        .on_nodes = on_directory_nodes,
                        .on_session_ended = on_session_ended,
                        .userdata = h,
                };

                r = dirclient_new(&dco, &h->dirclient);
                if (r < 0)
                        return r;
                if (h->config->track_sessions) {
                        r = tracker_new(h->manager->event, h->config->disconnect_grace, tracker_lookup,
                                        tracker_report, h, &h->tracker);
                        if (r < 0)
                                return log_error_errno(r, "Failed to set up session tracking: %m");
                }
        }
        gateway_set_relay_observer(h->gateway, on_relay, h);
        if (h->config->licensing) {
                r = licclient_new(h->manager->event, h->config, &h->licclient);
                if (r < 0)
                        return r;
        }
        r = host_api_start(h);
        if (r < 0)
                return r;
        (void)gateway_get_address(h->gateway, &listen);
        log_info(
                "Host role started: node %s (id %u), RDP port %u, gateway on %s:%u, local RDP server %s:%u.",
                h->self->name, h->self->id, h->config->rdp_port, ip4(listen.sin_addr.s_addr, a),
                ntohs(listen.sin_port), ip4(h->config->local_backend.sin_addr.s_addr, a),
                ntohs(h->config->local_backend.sin_port));
        return 0;
}

static int host_reload(void *userdata, const struct tsagent_config *c) {
        struct host *h = userdata;
        const struct host_config *old = h->config;
        const struct host_node_config *self = host_config_find_node(&c->host, c->node_name);
        int r;

        /* What the running gateway and programs were built with stays; the
         * node table, sessions, drain and port are live. */
        if (strcmp(old->pin_root, c->host.pin_root) != 0 ||
            memcmp(&old->gateway_listen, &c->host.gateway_listen, sizeof(old->gateway_listen)) != 0)
                log_warning("pin-root and gateway-listen change only on restart, ignoring the new values.");
        if (!!old->directory != !!c->host.directory ||
            (old->directory && strcmp(old->directory, c->host.directory) != 0))
                log_warning("[host] directory changes only on restart, ignoring the new value.");
        if (!self)
                return -EINVAL;
        h->config = &c->host;
        h->self = self;
        if (h->tracker)
                tracker_set_grace(h->tracker, c->host.disconnect_grace);
        if (old->licensing != c->host.licensing)
                log_warning("[host] licensing changes only on restart, ignoring the new value.");
        r = datapath_set_config(h->datapath, self->id, c->host.rdp_port);
        if (r >= 0)
                r = host_sync_nodes(h);
        /* With a directory, the worker owns the sessions map. */
        if (r >= 0 && !h->dirclient)
                r = host_sync_sessions(h);
        if (r < 0) {
                h->config = old;
                h->self = host_config_find_node(old, h->manager->config->node_name);
                return r;
        }
        licclient_reload(h->licclient, &c->host);
        return 0;
}

static void host_free(void *userdata) {
        struct host *h = userdata;

        if (!h)
                return;
        /* The gateway first: its socket leaves the sockmap as it closes, so
         * new connections fail open to the local RDP server from here on.
         * Its relays end with it; that is not news for the directory. */
        h->stopping = true;
        tsf_api_server_free(h->api);
        licclient_free(h->licclient);
        gateway_free(h->gateway);
        while (h->pending)
                pending_free(h->pending);
        tracker_free(h->tracker);
        /* It writes the sessions map: it goes before the datapath. */
        dirclient_free(h->dirclient);
        free(h->conns);
        host_addrs_free(h->addrs);
        datapath_free(h->datapath);
        free(h);
}

const struct tsagent_role_ops host_role_ops = {
        .name = "host",
        .new = host_new,
        .start = host_start,
        .reload = host_reload,
        .free = host_free,
};
