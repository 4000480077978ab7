/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* tsagent's configuration: what the [agent] section (and, as roles arrive,
 * their sections) of /etc/tsfarm/tsagent.conf say. */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"

#define TSAGENT_DEFAULT_CONFIG "/etc/tsfarm/tsagent.conf"

enum tsagent_role {
        TSAGENT_ROLE_HOST,
        TSAGENT_ROLE_DIRECTORY,
        TSAGENT_ROLE_LICENSING,
        _TSAGENT_ROLE_MAX,
};

#define HOST_NODE_ADDRS_MAX 16

/* [node NAME]: a farm node as the host role knows it until the directory
 * tells it more. */
struct host_node_config {
        char *name;
        uint32_t id;
        uint32_t addrs[HOST_NODE_ADDRS_MAX]; /* network order */
        size_t n_addrs;
        uint16_t rdp_port;
        uint32_t weight;
        bool draining;
};

/* [sessions] USER = NODE: a disconnected session of USER on NODE. */
struct host_session_config {
        char *user; /* folded user key */
        char *node;
};

enum host_placement {
        HOST_PLACEMENT_LOCAL, /* a new session stays here unless this node drains */
        HOST_PLACEMENT_FARM,  /* the directory places it: fewest sessions for the weight */
};

struct host_config {
        uint16_t rdp_port;
        struct sockaddr_in local_backend;  /* the local RDP server */
        struct in_addr backend_source;     /* our own connections come from here (bypassed by steer) */
        struct sockaddr_in gateway_listen; /* the gateway socket; sk_lookup hands it connections */
        usec_t first_pdu_timeout;
        usec_t connect_timeout;
        usec_t idle_timeout; /* 0: none */
        usec_t affinity_ttl;
        uint64_t relay_buffer;
        uint32_t max_connections;
        uint32_t session_limit; /* 0: none */
        bool drain;
        char *pin_root;
        char *cgroup; /* NULL: the cgroup2 mount */
        /* Following the directory (agent/host/dirclient.h); NULL: none. */
        char *directory; /* "https://ADDR:PORT" */
        char *directory_certificate;
        char *directory_key;
        char *directory_ca;
        usec_t directory_query_timeout; /* a logon query on a cache miss waits this long */
        char *placement_raw;
        enum host_placement placement;
        uint32_t sessions_max; /* the BPF sessions map's size */
        /* Report sessions from connection tracking (RDP servers that
         * report nothing, like xrdp); off when the session host reports
         * through the local API. */
        bool track_sessions;
        usec_t disconnect_grace; /* last connection gone this long: disconnected */
        char *socket;            /* the local API; default <runtime-directory>/agent.sock */
        /* The licensing client (agent/host/licclient.h); off unless licensing. */
        bool licensing;
        char **license_servers; /* HOST:PORT, asked in this order after discovered ones */
        char *license_domain;   /* DNS SRV _tslicensing._tcp.<domain>; NULL: none */
        bool license_discovery; /* multicast announcements of the workgroup */
        struct sockaddr_in license_discovery_group;
        char *license_discovery_interface;
        char *site;                      /* this host's site: its license servers first */
        char *trusted_license_keys;      /* directory of license servers' public keys (*.pem) */
        char *product_version;           /* asked of license servers; NULL: any */
        usec_t license_grace_period;     /* 120 days */
        usec_t license_timeout;          /* one call to a license server */
        usec_t license_rediscovery_wait; /* after none answered: listen this long, then retry */
        char *license_state;             /* the grace period's file */

        struct host_node_config *nodes;
        size_t n_nodes;
        struct host_session_config *sessions;
        size_t n_sessions;
};

/* What a role that serves the API on its own database is configured with
 * (agent/service.h): [directory] and [licensing]. */
struct service_config {
        char *database;            /* default: <state-directory>/<role>.db */
        struct sockaddr_in listen; /* the TLS listener */
        char *certificate;         /* this node's certificate (CN = node-name) */
        char *key;                 /* its key */
        char *ca;                  /* the farm CA */
        char *socket;              /* default: <runtime-directory>/<role>.sock */
};

/* [directory]: the directory role (docs/directory.md, "The API");
 * listen defaults to 0.0.0.0:7400. */
struct directory_config {
        struct service_config service;
        usec_t heartbeat_lapse;       /* a node silent this long is down */
        bool allow_multiple_sessions; /* false: one session per user */
};

/* [licensing]: the licensing role, a license server (docs/licensing.md,
 * "The API"); listen defaults to 0.0.0.0:7401. */
struct licensing_config {
        struct service_config service;
        char *signing_key; /* Ed25519 PEM; default: <state-directory>/license-signing.key */
        /* Peers: other license servers to borrow CALs from and lend to
         * (docs/licensing.md, "Borrowing"). */
        char **peers;                       /* HOST:PORT of their APIs, always asked */
        bool discover_peers;                /* learn peers from their announcements */
        bool announce;                      /* announce this server by multicast */
        char *announce_endpoint;            /* HOST:PORT; NULL: the listen address, or the host's */
        usec_t announce_interval;           /* 30 s */
        char *site;                         /* announced; NULL: none */
        struct sockaddr_in discovery_group; /* 239.255.77.77:7402 */
        char *discovery_interface;          /* NULL: the kernel's route to the group */
        usec_t peer_timeout;                /* one call to a peer; 2 s */
        usec_t inventory_refresh;           /* peers' GET /v1/inventory; 30 s */
};

struct tsagent_config {
        char *path; /* where it came from, for messages and reload */

        /* [agent] */
        char **roles_raw;
        bool roles[_TSAGENT_ROLE_MAX];
        char *node_name;
        int log_level;
        char *state_directory;
        char *runtime_directory;

        struct host_config host;
        struct directory_config directory;
        struct licensing_config licensing;
};

/* The [node NAME] entry for `name`, or NULL. */
const struct host_node_config *host_config_find_node(const struct host_config *h, const char *name);

const char *tsagent_role_to_string(enum tsagent_role r);
int tsagent_role_from_string(const char *s);

/* Loads `path` into a fresh config. On error returns a negative errno and
 * fills err (it does not log: the caller decides how loud to be). */
int tsagent_config_load(const char *path, struct tsagent_config **ret, char *err, size_t err_size);
void tsagent_config_free(struct tsagent_config *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tsagent_config *, tsagent_config_free);
