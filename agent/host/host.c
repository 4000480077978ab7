/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>

#include "agent/host/addrs.h"
#include "agent/host/datapath.h"
#include "agent/host/dirclient.h"
#include "agent/host/gateway.h"
#include "agent/host/host.h"
#include "agent/host/sockdiag.h"
#include "tsfarm/log.h"
#include "tsfarm/userkey.h"

struct host {
        struct manager *manager;
        const struct host_config *config; /* the manager's; replaced on reload */
        const struct host_node_config *self;
        struct datapath *datapath;
        struct gateway *gateway;
        struct host_addrs *addrs;
        struct dirclient *dirclient; /* NULL: no [host] directory */
        uint64_t events_seen;
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

                if (node->draining || (node == h->self && h->config->drain))
                        flags |= TSF_NODE_F_DRAINING;
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

static void on_conn_event(const struct tsf_conn_event *ev, void *userdata) {
        struct host *h = userdata;
        char a[INET_ADDRSTRLEN], b[INET_ADDRSTRLEN];

        h->events_seen++;
        log_debug("Connection %s:%u <-> %s:%u closed (end %u, error %u, %llu bytes in, %llu out).",
                  ip4(ev->conn.local_addr, a), ev->conn.local_port, ip4(ev->conn.remote_addr, b),
                  ev->conn.remote_port, ev->conn.end, ev->error, (unsigned long long)ev->conn.bytes_received,
                  (unsigned long long)ev->conn.bytes_acked);
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

static int decide_by_user(struct host *h, const struct tsf_cr *cr, struct gateway_decision *out) {
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
        if (r < 0)
                return 0; /* no session: placement decides */
        if (s.state == TSF_SESSION_LOST)
                return 0;
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

/* Placement in host mode: here, unless this node is drained; then the
 * first peer that is not, by weight. (Session counts arrive with the
 * directory.) */
static void decide_placement(struct host *h, struct gateway_decision *out) {
        const struct host_node_config *best = NULL;

        if (!h->config->drain && !h->self->draining) {
                decision_to_node(h, h->self, 0, out);
                snprintf(out->reason, sizeof(out->reason), "new session: placed here");
                return;
        }
        for (size_t i = 0; i < h->config->n_nodes; i++) {
                const struct host_node_config *n = &h->config->nodes[i];

                if (n == h->self || n->draining)
                        continue;
                if (!best || n->weight > best->weight)
                        best = n;
        }
        if (!best) {
                out->verdict = GATEWAY_REFUSE;
                snprintf(out->reason, sizeof(out->reason), "new session: every node is draining");
                return;
        }
        decision_to_node(h, best, 0, out);
        snprintf(out->reason, sizeof(out->reason), "new session: this node drains, placed on %.64s",
                 best->name);
}

int host_decide(struct host *h, const struct gateway_request *req, struct gateway_decision *out) {
        const struct tsf_cr *cr = req->cr;
        struct tsf_affinity_value aff;
        const struct host_node_config *node;
        char a[INET_ADDRSTRLEN];
        uint64_t user_hash;
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
                goto done;
        }

        /* 2. mstshash: the session map's answer for that user. */
        if (cr->cookie_kind == TSF_COOKIE_MSTSHASH) {
                r = decide_by_user(h, cr, out);
                if (r < 0)
                        return r;
                if (r > 0)
                        goto done;
        }

        /* 3. Client affinity (the fast path missed it: expired, shared, or
         *    for another node). Shared addresses never decide. */
        if (datapath_affinity_get(h->datapath, req->client.sin_addr.s_addr, &aff) == 0 &&
            !(aff.flags & TSF_AFFINITY_F_MULTI_USER) && (node = node_by_id(h, aff.node_id))) {
                decision_to_node(h, node, 0, out);
                snprintf(out->reason, sizeof(out->reason), "client affinity to %.64s", node->name);
                goto done;
        }

        /* 4. Placement. */
        decide_placement(h, out);
        if (out->verdict == GATEWAY_REFUSE)
                return 0;

done:
        node = out->verdict == GATEWAY_LOCAL ? h->self : node_by_addr(h, out->backend.sin_addr.s_addr);
        user_hash = out->user_key[0] ? tsf_user_key_hash(out->user_key, strlen(out->user_key)) : 0;
        if (node && h->config->affinity_ttl > 0) {
                r = datapath_affinity_note(h->datapath, req->client.sin_addr.s_addr, node->id, user_hash,
                                           h->config->affinity_ttl * 1000);
                if (r < 0)
                        log_debug_errno(r, "Failed to note client affinity, ignoring: %m");
        }
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
                r = dirclient_start(h->manager->config, h->self, h->datapath, &h->dirclient);
                if (r < 0)
                        return r;
        }
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
        return 0;
}

static void host_free(void *userdata) {
        struct host *h = userdata;

        if (!h)
                return;
        /* The gateway first: its socket leaves the sockmap as it closes, so
         * new connections fail open to the local RDP server from here on. */
        gateway_free(h->gateway);
        /* The worker writes the sessions map: it stops before the datapath goes. */
        dirclient_free(h->dirclient);
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
