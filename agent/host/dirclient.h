/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The host role's directory client (DESIGN 2.1): registers this node and
 * heartbeats; follows the directory's change feed (a long poll) into the
 * pinned BPF sessions map and into a table of node states; delivers the
 * session events the host reports, in order, queued while the directory
 * is unreachable; and asks logon queries for the gateway's cache misses.
 *
 * Everything runs on the agent's sd-event loop through the asynchronous
 * API client: the long poll, a heartbeat, an event and a query proceed
 * side by side, and nothing blocks the gateway.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "agent/agent_config.h"
#include "agent/host/datapath.h"
#include "tsfarm/cleanup.h"

/* Session events waiting for the directory, at most; beyond, the oldest
 * are dropped (and counted): the directory then resynchronises from the
 * node's next events, a bounded loss instead of unbounded memory. */
#define DIRCLIENT_QUEUE_MAX 65536u

/* What the directory says about a node. */
struct dirclient_node {
        char name[64];
        bool up;
        bool draining; /* drain is not "enabled": no new sessions */
        uint32_t weight;
        uint32_t sessions;
        uint32_t session_limit;
};

struct dirclient;

typedef void (*dirclient_nodes_fn)(void *userdata);
/* The directory ended (logoff, lost = false) or lost (its node was marked
 * down) a session of this node. */
typedef void (*dirclient_session_ended_fn)(void *userdata, const char *user_key, uint32_t session_id,
                                           bool lost);

struct dirclient_options {
        sd_event *event;
        const struct tsagent_config *config;
        const struct host_node_config *self;
        struct datapath *datapath;
        dirclient_nodes_fn on_nodes; /* the node table changed */
        dirclient_session_ended_fn on_session_ended;
        void *userdata;
};

int dirclient_new(const struct dirclient_options *o, struct dirclient **ret);
struct dirclient *dirclient_free(struct dirclient *dc);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct dirclient *, dirclient_free);

/* The directory's view of node `name`, or NULL when it has not said. */
const struct dirclient_node *dirclient_node(const struct dirclient *dc, const char *name);
/* The last call reached the directory. */
bool dirclient_reachable(const struct dirclient *dc);

/* ---- session events ------------------------------------------------------ */

struct dirclient_event {
        const char *event; /* logon, disconnect, reconnect, logoff */
        const char *user;
        uint32_t session_id;
        const char *device;         /* NULL: none */
        const char *client_address; /* NULL: none */
};

/* Queues an event for delivery (in order, retried while the directory is
 * unreachable). Returns 0 or -ENOMEM. */
int dirclient_report(struct dirclient *dc, const struct dirclient_event *ev);

struct dirclient_stats {
        uint64_t queued;    /* waiting now */
        uint64_t delivered; /* accepted by the directory */
        uint64_t refused;   /* refused by the directory (4xx): logged and dropped */
        uint64_t dropped;   /* lost to DIRCLIENT_QUEUE_MAX */
        uint64_t revision;  /* the feed's position */
        uint64_t queries, query_failures;
};
void dirclient_get_stats(const struct dirclient *dc, struct dirclient_stats *ret);

/* ---- logon queries ------------------------------------------------------- */

enum dirclient_answer_kind {
        DIRCLIENT_SESSION,   /* the user has a session on `node` */
        DIRCLIENT_PLACED,    /* a new session goes to `node` */
        DIRCLIENT_AMBIGUOUS, /* the cookie names several users */
        DIRCLIENT_NO_NODE,   /* no node takes new sessions */
};

struct dirclient_answer {
        enum dirclient_answer_kind kind;
        char node[64];
        uint32_t session_id;
        bool disconnected;
};

struct dirclient_query;
/* r < 0: no answer (timeout, unreachable, refused); then `a` is NULL. */
typedef void (*dirclient_answer_fn)(int r, const struct dirclient_answer *a, void *userdata);

/* Asks where `cookie` (NULL: nobody in particular, placement only) logging
 * on here goes, with the [host] directory-query-timeout deadline. The
 * callback runs from the loop, unless the query is cancelled or the
 * client freed first. *ret (optional) is valid until then. */
int dirclient_query(struct dirclient *dc, const char *cookie, dirclient_answer_fn cb, void *userdata,
                    struct dirclient_query **ret);
void dirclient_query_cancel(struct dirclient_query *q);
