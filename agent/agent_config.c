/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <net/if.h>
#include <strings.h>

#include "agent_config.h"
#include "bpf/abi/tsfarm_abi.h"
#include "tsfarm/config.h"
#include "tsfarm/licdiscovery.h"
#include "tsfarm/macro.h"
#include "tsfarm/userkey.h"

static const char *const role_names[_TSAGENT_ROLE_MAX] = {
        [TSAGENT_ROLE_HOST] = "host",
        [TSAGENT_ROLE_DIRECTORY] = "directory",
        [TSAGENT_ROLE_LICENSING] = "licensing",
};

const char *tsagent_role_to_string(enum tsagent_role r) {
        return r < _TSAGENT_ROLE_MAX ? role_names[r] : NULL;
}

int tsagent_role_from_string(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(role_names); i++)
                if (strcmp(s, role_names[i]) == 0)
                        return (int)i;
        return -EINVAL;
}

#define OFF(field) offsetof(struct tsagent_config, field)

static const struct tsf_config_item agent_items[] = {
        {"agent", "roles", tsf_config_parse_strv, OFF(roles_raw), 0, 0},
        {"agent", "node-name", tsf_config_parse_string, OFF(node_name), 0, 0},
        {"agent", "log-level", tsf_config_parse_log_level, OFF(log_level), 0, 0},
        {"agent", "state-directory", tsf_config_parse_path, OFF(state_directory), 0, 0},
        {"agent", "runtime-directory", tsf_config_parse_path, OFF(runtime_directory), 0, 0},
        {"host", "rdp-port", tsf_config_parse_port, OFF(host.rdp_port), 0, 0},
        {"host", "local-backend", tsf_config_parse_endpoint, OFF(host.local_backend), 0, 0},
        {"host", "backend-source", tsf_config_parse_ipv4, OFF(host.backend_source), 0, 0},
        {"host", "gateway-listen", tsf_config_parse_endpoint, OFF(host.gateway_listen), 0, 0},
        {"host", "first-pdu-timeout", tsf_config_parse_duration, OFF(host.first_pdu_timeout),
         10 * USEC_PER_MSEC, 5 * USEC_PER_MINUTE},
        {"host", "connect-timeout", tsf_config_parse_duration, OFF(host.connect_timeout), 10 * USEC_PER_MSEC,
         5 * USEC_PER_MINUTE},
        {"host", "idle-timeout", tsf_config_parse_duration, OFF(host.idle_timeout), 0, 0},
        {"host", "affinity-ttl", tsf_config_parse_duration, OFF(host.affinity_ttl), 0, 7 * USEC_PER_DAY},
        {"host", "relay-buffer", tsf_config_parse_size, OFF(host.relay_buffer), 4096, 64 << 20},
        {"host", "max-connections", tsf_config_parse_uint, OFF(host.max_connections), 1, 1000000},
        {"host", "session-limit", tsf_config_parse_uint, OFF(host.session_limit), 0, 0},
        {"host", "drain", tsf_config_parse_bool, OFF(host.drain), 0, 0},
        {"host", "pin-root", tsf_config_parse_path, OFF(host.pin_root), 0, 0},
        {"host", "cgroup", tsf_config_parse_path, OFF(host.cgroup), 0, 0},
        {"host", "directory", tsf_config_parse_string, OFF(host.directory), 0, 0},
        {"host", "certificate", tsf_config_parse_path, OFF(host.directory_certificate), 0, 0},
        {"host", "key", tsf_config_parse_path, OFF(host.directory_key), 0, 0},
        {"host", "ca", tsf_config_parse_path, OFF(host.directory_ca), 0, 0},
        {"host", "directory-query-timeout", tsf_config_parse_duration, OFF(host.directory_query_timeout),
         USEC_PER_MSEC, 10 * USEC_PER_SEC},
        {"host", "placement", tsf_config_parse_string, OFF(host.placement_raw), 0, 0},
        {"host", "sessions-max", tsf_config_parse_uint, OFF(host.sessions_max), 1024, 1u << 24},
        {"host", "track-sessions", tsf_config_parse_bool, OFF(host.track_sessions), 0, 0},
        {"host", "disconnect-grace", tsf_config_parse_duration, OFF(host.disconnect_grace), 0,
         5 * USEC_PER_MINUTE},
        {"host", "socket", tsf_config_parse_path, OFF(host.socket), 0, 0},
        {"host", "licensing", tsf_config_parse_bool, OFF(host.licensing), 0, 0},
        {"host", "license-servers", tsf_config_parse_strv, OFF(host.license_servers), 0, 0},
        {"host", "license-domain", tsf_config_parse_string, OFF(host.license_domain), 0, 0},
        {"host", "license-discovery", tsf_config_parse_bool, OFF(host.license_discovery), 0, 0},
        {"host", "license-discovery-group", tsf_config_parse_endpoint, OFF(host.license_discovery_group), 0,
         0},
        {"host", "license-discovery-interface", tsf_config_parse_string,
         OFF(host.license_discovery_interface), 0, 0},
        {"host", "site", tsf_config_parse_string, OFF(host.site), 0, 0},
        {"host", "trusted-license-keys", tsf_config_parse_path, OFF(host.trusted_license_keys), 0, 0},
        {"host", "product-version", tsf_config_parse_string, OFF(host.product_version), 0, 0},
        {"host", "license-grace-period", tsf_config_parse_duration, OFF(host.license_grace_period),
         USEC_PER_SEC, 365 * USEC_PER_DAY},
        {"host", "license-timeout", tsf_config_parse_duration, OFF(host.license_timeout), 10 * USEC_PER_MSEC,
         USEC_PER_MINUTE},
        {"host", "license-rediscovery-wait", tsf_config_parse_duration, OFF(host.license_rediscovery_wait),
         0, USEC_PER_MINUTE},
        {"host", "license-state", tsf_config_parse_path, OFF(host.license_state), 0, 0},
        {"directory", "database", tsf_config_parse_path, OFF(directory.service.database), 0, 0},
        {"directory", "listen", tsf_config_parse_endpoint, OFF(directory.service.listen), 0, 0},
        {"directory", "certificate", tsf_config_parse_path, OFF(directory.service.certificate), 0, 0},
        {"directory", "key", tsf_config_parse_path, OFF(directory.service.key), 0, 0},
        {"directory", "ca", tsf_config_parse_path, OFF(directory.service.ca), 0, 0},
        {"directory", "socket", tsf_config_parse_path, OFF(directory.service.socket), 0, 0},
        {"directory", "heartbeat-lapse", tsf_config_parse_duration, OFF(directory.heartbeat_lapse),
         USEC_PER_SEC, USEC_PER_DAY},
        {"directory", "allow-multiple-sessions", tsf_config_parse_bool,
         OFF(directory.allow_multiple_sessions), 0, 0},
        {"licensing", "database", tsf_config_parse_path, OFF(licensing.service.database), 0, 0},
        {"licensing", "listen", tsf_config_parse_endpoint, OFF(licensing.service.listen), 0, 0},
        {"licensing", "certificate", tsf_config_parse_path, OFF(licensing.service.certificate), 0, 0},
        {"licensing", "key", tsf_config_parse_path, OFF(licensing.service.key), 0, 0},
        {"licensing", "ca", tsf_config_parse_path, OFF(licensing.service.ca), 0, 0},
        {"licensing", "socket", tsf_config_parse_path, OFF(licensing.service.socket), 0, 0},
        {"licensing", "signing-key", tsf_config_parse_path, OFF(licensing.signing_key), 0, 0},
        {"licensing", "peers", tsf_config_parse_strv, OFF(licensing.peers), 0, 0},
        {"licensing", "discover-peers", tsf_config_parse_bool, OFF(licensing.discover_peers), 0, 0},
        {"licensing", "announce", tsf_config_parse_bool, OFF(licensing.announce), 0, 0},
        {"licensing", "announce-endpoint", tsf_config_parse_string, OFF(licensing.announce_endpoint), 0, 0},
        {"licensing", "announce-interval", tsf_config_parse_duration, OFF(licensing.announce_interval),
         LICDISC_INTERVAL_MIN, LICDISC_INTERVAL_MAX},
        {"licensing", "site", tsf_config_parse_string, OFF(licensing.site), 0, 0},
        {"licensing", "discovery-group", tsf_config_parse_endpoint, OFF(licensing.discovery_group), 0, 0},
        {"licensing", "discovery-interface", tsf_config_parse_string, OFF(licensing.discovery_interface), 0,
         0},
        {"licensing", "peer-timeout", tsf_config_parse_duration, OFF(licensing.peer_timeout),
         10 * USEC_PER_MSEC, USEC_PER_MINUTE},
        {"licensing", "inventory-refresh", tsf_config_parse_duration, OFF(licensing.inventory_refresh),
         100 * USEC_PER_MSEC, USEC_PER_DAY},
};

const struct host_node_config *host_config_find_node(const struct host_config *h, const char *name) {
        for (size_t i = 0; i < h->n_nodes; i++)
                if (strcmp(h->nodes[i].name, name) == 0)
                        return &h->nodes[i];
        return NULL;
}

static struct host_node_config *node_get(struct host_config *h, const char *name) {
        struct host_node_config *grown;

        for (size_t i = 0; i < h->n_nodes; i++)
                if (strcmp(h->nodes[i].name, name) == 0)
                        return &h->nodes[i];
        if (h->n_nodes >= TSF_NODES_MAX)
                return NULL;
        grown = realloc(h->nodes, (h->n_nodes + 1) * sizeof(*grown));
        if (!grown)
                return NULL;
        h->nodes = grown;
        grown[h->n_nodes] = (struct host_node_config){.weight = 100};
        grown[h->n_nodes].name = strdup(name);
        if (!grown[h->n_nodes].name)
                return NULL;
        return &grown[h->n_nodes++];
}

static int parse_node_key(struct host_node_config *n, const char *key, const char *value, char *err,
                          size_t err_size) {
        uint64_t v;

        if (strcmp(key, "id") == 0) {
                if (tsf_parse_u64(value, &v) < 0 || v == TSF_NODE_ID_NONE || v > UINT32_MAX) {
                        snprintf(err, err_size, "'%s' is not a node id in 1..%u", value, UINT32_MAX);
                        return -EINVAL;
                }
                n->id = (uint32_t)v;
        } else if (strcmp(key, "address") == 0) {
                char buf[256];
                char *save = NULL;

                snprintf(buf, sizeof(buf), "%s", value);
                for (char *w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
                        struct in_addr a;

                        if (inet_pton(AF_INET, w, &a) != 1) {
                                snprintf(err, err_size, "'%s' is not an IPv4 address", w);
                                return -EINVAL;
                        }
                        if (n->n_addrs >= HOST_NODE_ADDRS_MAX) {
                                snprintf(err, err_size, "more than %d addresses", HOST_NODE_ADDRS_MAX);
                                return -E2BIG;
                        }
                        n->addrs[n->n_addrs++] = a.s_addr;
                }
        } else if (strcmp(key, "rdp-port") == 0) {
                if (tsf_parse_u64(value, &v) < 0 || v == 0 || v > UINT16_MAX) {
                        snprintf(err, err_size, "'%s' is not a number in 1..65535", value);
                        return -EINVAL;
                }
                n->rdp_port = (uint16_t)v;
        } else if (strcmp(key, "weight") == 0) {
                if (tsf_parse_u64(value, &v) < 0 || v == 0 || v > 1000000) {
                        snprintf(err, err_size, "'%s' is not a weight in 1..1000000", value);
                        return -EINVAL;
                }
                n->weight = (uint32_t)v;
        } else if (strcmp(key, "drain") == 0) {
                int b = tsf_parse_boolean(value);
                if (b < 0) {
                        snprintf(err, err_size, "'%s' is not a boolean", value);
                        return -EINVAL;
                }
                n->draining = b;
        } else {
                snprintf(err, err_size, "unknown key (a node has id, address, rdp-port, weight, drain)");
                return -EINVAL;
        }
        return 0;
}

/* "[node NAME]" sections and the "[sessions]" USER = NODE table: names are
 * data, so no fixed table can list them. */
static int config_fallback(void *data, const char *section, const char *key, const char *value, char *err,
                           size_t err_size) {
        struct tsagent_config *c = data;
        struct host_config *h = &c->host;

        if (strncmp(section, "node ", 5) == 0 && section[5]) {
                struct host_node_config *n = node_get(h, section + 5);

                if (!n) {
                        snprintf(err, err_size, "too many nodes (at most %d)", TSF_NODES_MAX);
                        return -E2BIG;
                }
                return parse_node_key(n, key, value, err, err_size);
        }
        if (strcmp(section, "sessions") == 0) {
                struct host_session_config *grown;
                struct tsf_userkey uk;

                if (tsf_userkey_parse(key, strlen(key), &uk) < 0) {
                        snprintf(err, err_size, "'%s' is not a user name", key);
                        return -EINVAL;
                }
                for (size_t i = 0; i < h->n_sessions; i++)
                        if (strcmp(h->sessions[i].user, tsf_userkey_index(&uk)) == 0) {
                                snprintf(err, err_size, "user '%s' listed twice", tsf_userkey_index(&uk));
                                return -EINVAL;
                        }
                grown = realloc(h->sessions, (h->n_sessions + 1) * sizeof(*grown));
                if (!grown)
                        return -ENOMEM;
                h->sessions = grown;
                grown[h->n_sessions].user = strdup(tsf_userkey_index(&uk));
                grown[h->n_sessions].node = strdup(value);
                h->n_sessions++;
                if (!grown[h->n_sessions - 1].user || !grown[h->n_sessions - 1].node)
                        return -ENOMEM;
                return 0;
        }
        return -ENOENT;
}

/* Cross-checks that no single key can make: unique ids and addresses,
 * sessions naming known nodes, this node present when it hosts. */
/* *field, unless set, becomes dir/name. */
static int default_path(char **field, const char *dir, const char *name) {
        if (*field)
                return 0;
        if (asprintf(field, "%s/%s", dir, name) < 0) {
                *field = NULL;
                return -ENOMEM;
        }
        return 0;
}

static int host_config_verify(struct tsagent_config *c, char *err, size_t err_size) {
        struct host_config *h = &c->host;
        int r;

        for (size_t i = 0; i < h->n_nodes; i++) {
                struct host_node_config *n = &h->nodes[i];

                if (n->id == TSF_NODE_ID_NONE) {
                        snprintf(err, err_size, "%s: [node %s] has no id", c->path, n->name);
                        return -EINVAL;
                }
                if (n->n_addrs == 0) {
                        snprintf(err, err_size, "%s: [node %s] has no address", c->path, n->name);
                        return -EINVAL;
                }
                if (n->rdp_port == 0)
                        n->rdp_port = h->rdp_port;
                for (size_t j = 0; j < i; j++) {
                        if (h->nodes[j].id == n->id) {
                                snprintf(err, err_size, "%s: [node %s] and [node %s] share id %u", c->path,
                                         h->nodes[j].name, n->name, n->id);
                                return -EINVAL;
                        }
                        for (size_t a = 0; a < n->n_addrs; a++)
                                for (size_t b = 0; b < h->nodes[j].n_addrs; b++)
                                        if (n->addrs[a] == h->nodes[j].addrs[b]) {
                                                char ip[INET_ADDRSTRLEN];
                                                inet_ntop(AF_INET, &n->addrs[a], ip, sizeof(ip));
                                                snprintf(err, err_size,
                                                         "%s: [node %s] and [node %s] share address %s",
                                                         c->path, h->nodes[j].name, n->name, ip);
                                                return -EINVAL;
                                        }
                }
        }
        for (size_t i = 0; i < h->n_sessions; i++)
                if (!host_config_find_node(h, h->sessions[i].node)) {
                        snprintf(err, err_size, "%s: [sessions] %s: no [node %s] section", c->path,
                                 h->sessions[i].user, h->sessions[i].node);
                        return -EINVAL;
                }
        if (c->roles[TSAGENT_ROLE_HOST] && !host_config_find_node(h, c->node_name)) {
                snprintf(err, err_size,
                         "%s: the host role needs a [node %s] section for this node (node-name)", c->path,
                         c->node_name);
                return -EINVAL;
        }
        if (h->directory && (strncmp(h->directory, "https://", 8) != 0 || !h->directory[8])) {
                snprintf(err, err_size, "%s: [host] directory: '%s' is not an https://ADDR:PORT URL",
                         c->path, h->directory);
                return -EINVAL;
        }
        /* Mutual TLS: the directory knows a node only by its certificate. */
        if (h->directory && (!h->directory_certificate || !h->directory_key || !h->directory_ca)) {
                snprintf(err, err_size, "%s: [host] directory needs certificate, key and ca", c->path);
                return -EINVAL;
        }
        if (h->local_backend.sin_port == 0)
                h->local_backend.sin_port = htons(h->rdp_port);
        /* With a directory, new sessions go where it places them (the
         * least loaded node, like a Connection Broker); without, here. */
        if (!h->placement_raw)
                h->placement = h->directory ? HOST_PLACEMENT_FARM : HOST_PLACEMENT_LOCAL;
        else if (strcmp(h->placement_raw, "farm") == 0)
                h->placement = HOST_PLACEMENT_FARM;
        else if (strcmp(h->placement_raw, "local") == 0)
                h->placement = HOST_PLACEMENT_LOCAL;
        else {
                snprintf(err, err_size, "%s: [host] placement: '%s' is neither farm nor local", c->path,
                         h->placement_raw);
                return -EINVAL;
        }
        if (h->placement == HOST_PLACEMENT_FARM && !h->directory) {
                snprintf(err, err_size, "%s: [host] placement = farm needs a directory", c->path);
                return -EINVAL;
        }
        if (h->licensing && !(h->directory_certificate && h->directory_key && h->directory_ca)) {
                snprintf(err, err_size,
                         "%s: [host] licensing = yes needs certificate, key and ca (license servers "
                         "answer only farm nodes)",
                         c->path);
                return -EINVAL;
        }
        if (h->license_discovery_group.sin_addr.s_addr != 0 &&
            !IN_MULTICAST(ntohl(h->license_discovery_group.sin_addr.s_addr))) {
                snprintf(err, err_size, "%s: [host] license-discovery-group: not a multicast group", c->path);
                return -EINVAL;
        }
        r = default_path(&h->trusted_license_keys, "/etc/tsfarm", "license-keys");
        if (r >= 0)
                r = default_path(&h->license_state, c->state_directory, "license-grace.json");
        if (r >= 0)
                r = default_path(&h->socket, c->runtime_directory, "agent.sock");
        return r;
}

static const struct tsf_config_spec agent_spec = {
        .items = agent_items,
        .n_items = ELEMENTSOF(agent_items),
        .fallback = config_fallback,
};

static void host_config_defaults(struct host_config *h) {
        h->rdp_port = TSF_RDP_PORT_DEFAULT;
        h->local_backend =
                (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        h->backend_source.s_addr = htonl(INADDR_LOOPBACK);
        h->gateway_listen =
                (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        h->first_pdu_timeout = 5 * USEC_PER_SEC;
        h->connect_timeout = 5 * USEC_PER_SEC;
        h->idle_timeout = 0;
        h->affinity_ttl = 10 * USEC_PER_MINUTE;
        h->relay_buffer = 256 * 1024;
        h->max_connections = 10000;
        h->directory_query_timeout = 250 * USEC_PER_MSEC;
        h->sessions_max = 65536;
        h->track_sessions = true;
        h->disconnect_grace = 2 * USEC_PER_SEC;
        h->license_discovery = true;
        h->license_discovery_group = (struct sockaddr_in){.sin_family = AF_INET};
        h->license_grace_period = 120 * USEC_PER_DAY;
        h->license_timeout = 2 * USEC_PER_SEC;
        h->license_rediscovery_wait = USEC_PER_SEC;
}

static void host_config_done(struct host_config *h) {
        for (size_t i = 0; i < h->n_nodes; i++)
                free(h->nodes[i].name);
        free(h->nodes);
        for (size_t i = 0; i < h->n_sessions; i++) {
                free(h->sessions[i].user);
                free(h->sessions[i].node);
        }
        free(h->sessions);
        free(h->pin_root);
        free(h->cgroup);
        free(h->directory);
        free(h->directory_certificate);
        free(h->directory_key);
        free(h->directory_ca);
        free(h->placement_raw);
        free(h->socket);
        tsf_strv_free(h->license_servers);
        free(h->license_domain);
        free(h->license_discovery_interface);
        free(h->site);
        free(h->trusted_license_keys);
        free(h->product_version);
        free(h->license_state);
}

static void service_config_done(struct service_config *v) {
        free(v->database);
        free(v->certificate);
        free(v->key);
        free(v->ca);
        free(v->socket);
}

/* A serving role's TLS files come all together or not at all (then only
 * its UNIX socket serves); its database and socket default to
 * <state-directory>/<section>.db and <runtime-directory>/<section>.sock. */
static int service_config_verify(struct tsagent_config *c, const char *section, struct service_config *v,
                                 char *err, size_t err_size) {
        int n_tls = !!v->certificate + !!v->key + !!v->ca;
        _cleanup_free_ char *db = NULL, *sock = NULL;
        int r;

        if (n_tls != 0 && n_tls != 3) {
                snprintf(err, err_size, "%s: [%s] certificate, key and ca go together (give all three)",
                         c->path, section);
                return -EINVAL;
        }
        if (asprintf(&db, "%s.db", section) < 0 || asprintf(&sock, "%s.sock", section) < 0)
                return -ENOMEM;
        r = default_path(&v->database, c->state_directory, db);
        if (r >= 0)
                r = default_path(&v->socket, c->runtime_directory, sock);
        return r;
}

static void directory_config_defaults(struct directory_config *d) {
        d->service.listen = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(7400)};
        d->heartbeat_lapse = 30 * USEC_PER_SEC;
}

static void licensing_config_defaults(struct licensing_config *l) {
        l->service.listen = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(7401)};
        l->discover_peers = true;
        l->announce = true;
        l->announce_interval = LICDISC_INTERVAL_DEFAULT;
        l->discovery_group =
                (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(LICDISC_PORT_DEFAULT)};
        inet_pton(AF_INET, LICDISC_GROUP_DEFAULT, &l->discovery_group.sin_addr);
        l->peer_timeout = 2 * USEC_PER_SEC;
        l->inventory_refresh = 30 * USEC_PER_SEC;
}

static int licensing_config_verify(struct tsagent_config *c, char *err, size_t err_size) {
        struct licensing_config *l = &c->licensing;
        int r;

        for (char **p = l->peers; p && *p; p++) {
                if (!licdisc_endpoint_valid(*p)) {
                        snprintf(err, err_size, "%s: [licensing] peers: '%s' is not HOST:PORT", c->path, *p);
                        return -EINVAL;
                }
                for (char **q = l->peers; q < p; q++)
                        if (strcasecmp(*p, *q) == 0) {
                                snprintf(err, err_size, "%s: [licensing] peers: '%s' listed twice", c->path,
                                         *p);
                                return -EINVAL;
                        }
        }
        if (l->announce_endpoint && !licdisc_endpoint_valid(l->announce_endpoint)) {
                snprintf(err, err_size, "%s: [licensing] announce-endpoint: '%s' is not HOST:PORT", c->path,
                         l->announce_endpoint);
                return -EINVAL;
        }
        if (l->site && !licdisc_site_valid(l->site)) {
                snprintf(err, err_size,
                         "%s: [licensing] site: '%s' is not 1..63 of letters, digits, '.', '-', '_'",
                         c->path, l->site);
                return -EINVAL;
        }
        if (!IN_MULTICAST(ntohl(l->discovery_group.sin_addr.s_addr))) {
                snprintf(err, err_size, "%s: [licensing] discovery-group: not an IPv4 multicast address",
                         c->path);
                return -EINVAL;
        }
        if (l->discovery_interface &&
            (!*l->discovery_interface || strlen(l->discovery_interface) >= IF_NAMESIZE)) {
                snprintf(err, err_size, "%s: [licensing] discovery-interface: '%s' is not an interface name",
                         c->path, l->discovery_interface);
                return -EINVAL;
        }
        /* Announcements carry the node name; the lend route trusts it. */
        if (c->roles[TSAGENT_ROLE_LICENSING] && l->announce &&
            !licdisc_name_valid(c->node_name, LICDISC_NAME_MAX)) {
                snprintf(err, err_size,
                         "%s: [licensing] announce: node-name '%s' cannot be announced (1..63 of letters, "
                         "digits, '.', '-', '_'); set node-name or announce = no",
                         c->path, c->node_name);
                return -EINVAL;
        }
        r = service_config_verify(c, "licensing", &l->service, err, err_size);
        if (r >= 0)
                r = default_path(&l->signing_key, c->state_directory, "license-signing.key");
        return r;
}

void tsagent_config_free(struct tsagent_config *c) {
        if (!c)
                return;
        free(c->path);
        tsf_strv_free(c->roles_raw);
        free(c->node_name);
        free(c->state_directory);
        free(c->runtime_directory);
        host_config_done(&c->host);
        service_config_done(&c->directory.service);
        service_config_done(&c->licensing.service);
        free(c->licensing.signing_key);
        tsf_strv_free(c->licensing.peers);
        free(c->licensing.announce_endpoint);
        free(c->licensing.site);
        free(c->licensing.discovery_interface);
        free(c);
}

static int set_default(char **field, const char *value) {
        if (*field)
                return 0;
        *field = strdup(value);
        return *field ? 0 : -ENOMEM;
}

int tsagent_config_load(const char *path, struct tsagent_config **ret, char *err, size_t err_size) {
        _cleanup_(tsagent_config_freep) struct tsagent_config *c = NULL;
        char host[256];
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->log_level = LOG_INFO;
        host_config_defaults(&c->host);
        directory_config_defaults(&c->directory);
        licensing_config_defaults(&c->licensing);
        c->path = strdup(path);
        if (!c->path)
                return -ENOMEM;

        r = tsf_config_load_file(path, &agent_spec, c, err, err_size);
        if (r < 0)
                return r;

        for (char **role = c->roles_raw; role && *role; role++) {
                int i = tsagent_role_from_string(*role);

                if (i < 0) {
                        snprintf(err, err_size,
                                 "%s: [agent] roles: unknown role '%s' (host, directory, licensing)", path,
                                 *role);
                        return -EINVAL;
                }
                c->roles[i] = true;
        }
        if (!c->node_name) {
                if (gethostname(host, sizeof(host)) < 0)
                        return negative_errno();
                host[sizeof(host) - 1] = '\0';
                r = set_default(&c->node_name, host);
                if (r < 0)
                        return r;
        }
        r = set_default(&c->state_directory, "/var/lib/tsfarm");
        if (r < 0)
                return r;
        r = set_default(&c->runtime_directory, "/run/tsfarm");
        if (r < 0)
                return r;
        r = set_default(&c->host.pin_root, TSF_PIN_ROOT);
        if (r < 0)
                return r;
        r = host_config_verify(c, err, err_size);
        if (r < 0)
                return r;
        r = service_config_verify(c, "directory", &c->directory.service, err, err_size);
        if (r < 0)
                return r;
        r = licensing_config_verify(c, err, err_size);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}
