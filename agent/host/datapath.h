/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The host role's eBPF data plane: loads the steer (sk_lookup) and track
 * (sockops) skeletons with their maps pinned under one root, attaches them
 * through pinned links that survive the agent (a restarted agent updates
 * the programs in place), and hands close events to the caller from the
 * ring buffer through the sd-event loop.
 *
 * Start-up order matters (docs/bpf.md): write config and nodes before the
 * gateway socket goes into its slot, or the gateway's own backend
 * connection would be steered back into the gateway.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "bpf/abi/tsfarm_abi.h"
#include "tsfarm/cleanup.h"

struct datapath;

typedef void (*datapath_event_fn)(const struct tsf_conn_event *ev, void *userdata);

struct datapath_options {
        const char *pin_root;    /* default TSF_PIN_ROOT */
        const char *cgroup_path; /* cgroup v2 directory for sockops; NULL: the cgroup2 mount */
        uint32_t self_node_id;
        uint16_t rdp_port;     /* host order */
        uint32_t sessions_max; /* the sessions map's size; 0: TSF_SESSIONS_MAX */
        datapath_event_fn on_event;
        void *userdata;
};

int datapath_open(sd_event *e, const struct datapath_options *o, struct datapath **ret);
struct datapath *datapath_free(struct datapath *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct datapath *, datapath_free);

/* Live tunables (no reload of the programs). */
int datapath_set_config(struct datapath *d, uint32_t self_node_id, uint16_t rdp_port);

/* Node table: replaces the whole table with `n` entries. */
int datapath_set_nodes(struct datapath *d, const struct tsf_node_key *keys,
                       const struct tsf_node_value *vals, size_t n);
int datapath_lookup_node(struct datapath *d, uint32_t addr_be, struct tsf_node_value *ret);

/* Sessions: keyed by the folded user part (lib/userkey). */
int datapath_session_set(struct datapath *d, const char *user_key, const struct tsf_session_value *v);
int datapath_session_del(struct datapath *d, const char *user_key);
int datapath_session_get(struct datapath *d, const char *user_key, struct tsf_session_value *ret);

/* Affinity: remembers that `client` was served by `node_id` for user
 * `user_hash` until `ttl_ns` from now; an address seen with a second user
 * becomes MULTI_USER and never takes the fast path again until it expires. */
int datapath_affinity_note(struct datapath *d, uint32_t client_be, uint32_t node_id, uint64_t user_hash,
                           uint64_t ttl_ns);
int datapath_affinity_get(struct datapath *d, uint32_t client_be, struct tsf_affinity_value *ret);

/* Puts the gateway's listening socket into the sockmap slot (fd < 0: empty it). */
int datapath_set_gateway(struct datapath *d, int listen_fd);

int datapath_read_stats(struct datapath *d, struct tsf_stats *ret);
int datapath_conns_fd(struct datapath *d);
int datapath_sessions_fd(struct datapath *d);
