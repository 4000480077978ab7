/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include <arpa/inet.h>

#include "agent/agent_config.h"
#include "tsfarm/config.h"

static char *write_conf(const char *text) {
        static char path[64];
        int fd;

        strcpy(path, "/tmp/tsfarm-agent-conf-XXXXXX");
        fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        return path;
}

static void test_defaults(void **state) {
        struct tsagent_config *c = NULL;
        char err[TSF_CONFIG_ERROR_MAX] = "", *path = write_conf("");

        assert_int_equal(tsagent_config_load(path, &c, err, sizeof(err)), 0);
        unlink(path);
        assert_non_null(c);
        assert_false(c->roles[TSAGENT_ROLE_HOST]);
        assert_int_equal(c->log_level, LOG_INFO);
        assert_string_equal(c->state_directory, "/var/lib/tsfarm");
        assert_string_equal(c->runtime_directory, "/run/tsfarm");
        assert_true(strlen(c->node_name) > 0);
        tsagent_config_free(c);
}

static void test_roles_and_values(void **state) {
        struct tsagent_config *c = NULL;
        char err[TSF_CONFIG_ERROR_MAX] = "";
        char *path = write_conf("[agent]\nroles = host licensing\nnode-name = ts1\nlog-level = debug\n"
                                "state-directory = /srv/tsfarm\n[node ts1]\nid = 1\naddress = 10.0.0.1\n");

        assert_int_equal(tsagent_config_load(path, &c, err, sizeof(err)), 0);
        unlink(path);
        assert_true(c->roles[TSAGENT_ROLE_HOST]);
        assert_false(c->roles[TSAGENT_ROLE_DIRECTORY]);
        assert_true(c->roles[TSAGENT_ROLE_LICENSING]);
        assert_string_equal(c->node_name, "ts1");
        assert_int_equal(c->log_level, LOG_DEBUG);
        assert_string_equal(c->state_directory, "/srv/tsfarm");
        assert_string_equal(c->path, path);
        tsagent_config_free(c);
}

static void test_bad_role(void **state) {
        struct tsagent_config *c = NULL;
        char err[TSF_CONFIG_ERROR_MAX] = "", *path = write_conf("[agent]\nroles = host broker\n");

        assert_int_equal(tsagent_config_load(path, &c, err, sizeof(err)), -EINVAL);
        unlink(path);
        assert_null(c);
        assert_non_null(strstr(err, "unknown role 'broker'"));
}

static void test_bad_key(void **state) {
        struct tsagent_config *c = NULL;
        char err[TSF_CONFIG_ERROR_MAX] = "", *path = write_conf("[agent]\nrole = host\n");

        assert_int_equal(tsagent_config_load(path, &c, err, sizeof(err)), -EINVAL);
        unlink(path);
        assert_null(c);
        assert_non_null(strstr(err, ":2: [agent] role: unknown key"));
}

static void test_host_section(void **state) {
        struct tsagent_config *c = NULL;
        char err[TSF_CONFIG_ERROR_MAX] = "";
        char *path = write_conf("[agent]\nroles = host\nnode-name = ts2\n"
                                "[host]\nrdp-port = 3390\nlocal-backend = 127.0.0.1\n"
                                "gateway-listen = 127.0.0.1:4000\nfirst-pdu-timeout = 2s\n"
                                "relay-buffer = 64K\naffinity-ttl = 5min\n"
                                "[node ts1]\nid = 1\naddress = 10.0.0.1 10.0.1.1\nweight = 50\n"
                                "[node ts2]\nid = 2\naddress = 10.0.0.2\nrdp-port = 3389\n"
                                "[sessions]\nCORP\\Alice = ts1\nbob@corp.example = ts2\n");
        const struct host_node_config *n;

        assert_int_equal(tsagent_config_load(path, &c, err, sizeof(err)), 0);
        unlink(path);
        assert_int_equal(c->host.rdp_port, 3390);
        /* local-backend without a port takes the RDP port. */
        assert_int_equal(ntohs(c->host.local_backend.sin_port), 3390);
        assert_int_equal(ntohs(c->host.gateway_listen.sin_port), 4000);
        assert_int_equal(c->host.first_pdu_timeout, 2 * USEC_PER_SEC);
        assert_int_equal(c->host.relay_buffer, 65536);
        assert_int_equal(c->host.affinity_ttl, 5 * USEC_PER_MINUTE);
        assert_int_equal(c->host.n_nodes, 2);
        n = host_config_find_node(&c->host, "ts1");
        assert_non_null(n);
        assert_int_equal(n->id, 1);
        assert_int_equal(n->n_addrs, 2);
        assert_int_equal(n->addrs[1], inet_addr("10.0.1.1"));
        assert_int_equal(n->weight, 50);
        /* A node without rdp-port inherits this host's. */
        assert_int_equal(n->rdp_port, 3390);
        assert_int_equal(host_config_find_node(&c->host, "ts2")->rdp_port, 3389);
        assert_int_equal(c->host.n_sessions, 2);
        assert_string_equal(c->host.sessions[0].user, "alice"); /* folded user part */
        assert_string_equal(c->host.sessions[0].node, "ts1");
        assert_string_equal(c->host.sessions[1].user, "bob");
        /* Without a directory: placement here, the default socket. */
        assert_int_equal(c->host.placement, HOST_PLACEMENT_LOCAL);
        assert_string_equal(c->host.socket, "/run/tsfarm/agent.sock");
        assert_int_equal(c->host.sessions_max, 65536);
        tsagent_config_free(c);

        /* With one: the directory places, connections are tracked. */
        path = write_conf("[agent]\nroles = host\nnode-name = ts1\nruntime-directory = /run/x\n"
                          "[host]\ndirectory = https://10.0.0.9:7400\ncertificate = /c\nkey = /k\nca = /a\n"
                          "disconnect-grace = 500ms\nsessions-max = 2000000\n"
                          "[node ts1]\nid = 1\naddress = 10.0.0.1\n");
        assert_int_equal(tsagent_config_load(path, &c, err, sizeof(err)), 0);
        unlink(path);
        assert_int_equal(c->host.placement, HOST_PLACEMENT_FARM);
        assert_true(c->host.track_sessions);
        assert_int_equal(c->host.disconnect_grace, 500 * USEC_PER_MSEC);
        assert_int_equal(c->host.directory_query_timeout, 250 * USEC_PER_MSEC);
        assert_int_equal(c->host.sessions_max, 2000000);
        assert_string_equal(c->host.socket, "/run/x/agent.sock");
        /* The serving roles' paths default under the agent's directories. */
        assert_string_equal(c->licensing.service.socket, "/run/x/licensing.sock");
        assert_string_equal(c->licensing.service.database, "/var/lib/tsfarm/licensing.db");
        assert_string_equal(c->licensing.signing_key, "/var/lib/tsfarm/license-signing.key");
        assert_int_equal(ntohs(c->licensing.service.listen.sin_port), 7401);
        assert_string_equal(c->directory.service.socket, "/run/x/directory.sock");
        tsagent_config_free(c);
}

static void test_host_cross_checks(void **state) {
        static const struct {
                const char *text;
                const char *error;
        } cases[] = {
                {"[agent]\nroles = host\nnode-name = ts9\n[node ts1]\nid = 1\naddress = 10.0.0.1\n",
                 "the host role needs a [node ts9] section"},
                {"[node a]\nid = 1\naddress = 10.0.0.1\n[node b]\nid = 1\naddress = 10.0.0.2\n",
                 "[node a] and [node b] share id 1"},
                {"[node a]\nid = 1\naddress = 10.0.0.1\n[node b]\nid = 2\naddress = 10.0.0.1\n",
                 "[node a] and [node b] share address 10.0.0.1"},
                {"[node a]\naddress = 10.0.0.1\n", "[node a] has no id"},
                {"[node a]\nid = 1\n", "[node a] has no address"},
                {"[node a]\nid = 0\naddress = 10.0.0.1\n", "'0' is not a node id"},
                {"[node a]\nid = 1\naddress = 10.0.0.300\n", "'10.0.0.300' is not an IPv4 address"},
                {"[node a]\nid = 1\naddres = 10.0.0.1\n", "unknown key (a node has"},
                {"[node a]\nid = 1\naddress = 10.0.0.1\n[sessions]\nalice = b\n",
                 "[sessions] alice: no [node b] section"},
                {"[node a]\nid = 1\naddress = 10.0.0.1\n[sessions]\nalice = a\nALICE = a\n",
                 "user 'alice' listed twice"},
                {"[host]\nlocal-backend = 127.0.0.1:0\n", "is not an IPv4 address with an optional :port"},
                {"[host]\nbackend-source = 127.0.0.1:5\n", "'127.0.0.1:5' is not an IPv4 address"},
                {"[host]\nrelay-buffer = 1K\n", "'1K' is not a size in 4096..67108864 bytes"},
                {"[host]\ndirectory = http://10.0.0.1:7400\n", "is not an https://ADDR:PORT URL"},
                {"[host]\ndirectory = https://\n", "is not an https://ADDR:PORT URL"},
                {"[host]\ndirectory = https://10.0.0.1:7400\ncertificate = /c.crt\nkey = /c.key\n",
                 "[host] directory needs certificate, key and ca"},
                {"[licensing]\ncertificate = /c\n", "[licensing] certificate, key and ca go together"},
                {"[directory]\nkey = /k\n", "[directory] certificate, key and ca go together"},
                {"[host]\nplacement = nearest\n", "[host] placement: 'nearest' is neither farm nor local"},
                {"[host]\nplacement = farm\n", "[host] placement = farm needs a directory"},
                {"[host]\nsessions-max = 10\n", "sessions-max"},
                {"[host]\ndirectory-query-timeout = 0\n", "directory-query-timeout"},
                {"[host]\nlicensing = yes\n", "[host] licensing = yes needs certificate, key and ca"},
                {"[host]\nlicense-grace-period = 400d\n", "license-grace-period"},
                {"[host]\nlicense-timeout = 0\n", "license-timeout"},
                {"[host]\nlicense-discovery-group = 10.0.0.1:7402\n", "license-discovery-group: not a multicast group"},
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct tsagent_config *c = NULL;
                char err[TSF_CONFIG_ERROR_MAX] = "", *path = write_conf(cases[i].text);
                int r = tsagent_config_load(path, &c, err, sizeof(err));

                unlink(path);
                if (r >= 0 || !strstr(err, cases[i].error))
                        fail_msg("case %zu: r=%d err='%s', want '%s'", i, r, err, cases[i].error);
                assert_null(c);
        }
}

static void test_host_licensing(void **state) {
        struct tsagent_config *c = NULL;
        char err[TSF_CONFIG_ERROR_MAX] = "", *path = write_conf("[agent]\nstate-directory = /var/lib/x\n");

        /* Off by default; the defaults an operator relies on. */
        assert_int_equal(tsagent_config_load(path, &c, err, sizeof(err)), 0);
        unlink(path);
        assert_false(c->host.licensing);
        assert_true(c->host.license_discovery);
        assert_int_equal(c->host.license_grace_period, 120 * USEC_PER_DAY);
        assert_int_equal(c->host.license_timeout, 2 * USEC_PER_SEC);
        assert_int_equal(c->host.license_rediscovery_wait, USEC_PER_SEC);
        assert_string_equal(c->host.trusted_license_keys, "/etc/tsfarm/license-keys");
        assert_string_equal(c->host.license_state, "/var/lib/x/license-grace.json");
        assert_null(c->host.license_servers);
        tsagent_config_free(c);

        path = write_conf("[host]\nlicensing = yes\ncertificate = /c.crt\nkey = /c.key\nca = /ca.crt\n"
                          "license-servers = 10.0.0.5:7401 lic2.example:7401\nlicense-servers = 10.0.0.6:7401\n"
                          "license-domain = corp.example\nlicense-discovery = no\nsite = berlin\n"
                          "trusted-license-keys = /k\nproduct-version = 2026\nlicense-grace-period = 30d\n"
                          "license-timeout = 500ms\nlicense-rediscovery-wait = 0\nlicense-state = /s/g.json\n");
        c = NULL;
        assert_int_equal(tsagent_config_load(path, &c, err, sizeof(err)), 0);
        unlink(path);
        assert_true(c->host.licensing);
        assert_int_equal(tsf_strv_length(c->host.license_servers), 3);
        assert_string_equal(c->host.license_servers[2], "10.0.0.6:7401");
        assert_string_equal(c->host.license_domain, "corp.example");
        assert_false(c->host.license_discovery);
        assert_string_equal(c->host.site, "berlin");
        assert_string_equal(c->host.trusted_license_keys, "/k");
        assert_string_equal(c->host.product_version, "2026");
        assert_int_equal(c->host.license_grace_period, 30 * USEC_PER_DAY);
        assert_int_equal(c->host.license_timeout, 500 * USEC_PER_MSEC);
        assert_int_equal(c->host.license_rediscovery_wait, 0);
        assert_string_equal(c->host.license_state, "/s/g.json");
        tsagent_config_free(c);
}

static void test_role_names(void **state) {
        for (int i = 0; i < _TSAGENT_ROLE_MAX; i++)
                assert_int_equal(tsagent_role_from_string(tsagent_role_to_string(i)), i);
        assert_int_equal(tsagent_role_from_string("Host"), -EINVAL);
        assert_null(tsagent_role_to_string(_TSAGENT_ROLE_MAX));
}

static void test_licensing_peers(void **state) {
        struct tsagent_config *c = NULL;
        char err[TSF_CONFIG_ERROR_MAX] = "",
             *path = write_conf("[agent]\nroles = licensing\nnode-name = lic1\n");
        const struct licensing_config *l;

        /* Defaults: discover and announce on the default group, no peers. */
        assert_int_equal(tsagent_config_load(path, &c, err, sizeof(err)), 0);
        unlink(path);
        l = &c->licensing;
        assert_null(l->peers);
        assert_true(l->discover_peers);
        assert_true(l->announce);
        assert_null(l->announce_endpoint);
        assert_int_equal(l->announce_interval, 30 * USEC_PER_SEC);
        assert_null(l->site);
        assert_int_equal(l->discovery_group.sin_addr.s_addr, inet_addr("239.255.77.77"));
        assert_int_equal(ntohs(l->discovery_group.sin_port), 7402);
        assert_null(l->discovery_interface);
        assert_int_equal(l->peer_timeout, 2 * USEC_PER_SEC);
        assert_int_equal(l->inventory_refresh, 30 * USEC_PER_SEC);
        tsagent_config_free(c);

        path = write_conf(
                "[agent]\nroles = licensing\nnode-name = lic1\n"
                "[licensing]\npeers = 10.0.0.2:7401 lic3.corp.example:7401\npeers = [fd00::5]:7401\n"
                "discover-peers = no\nannounce = no\nannounce-endpoint = 10.0.0.1:7401\n"
                "announce-interval = 5s\nsite = berlin\ndiscovery-group = 239.255.1.2\n"
                "discovery-interface = eth1\npeer-timeout = 500ms\ninventory-refresh = 1min\n");
        assert_int_equal(tsagent_config_load(path, &c, err, sizeof(err)), 0);
        unlink(path);
        l = &c->licensing;
        assert_int_equal(tsf_strv_length(l->peers), 3);
        assert_string_equal(l->peers[0], "10.0.0.2:7401");
        assert_string_equal(l->peers[1], "lic3.corp.example:7401");
        assert_string_equal(l->peers[2], "[fd00::5]:7401");
        assert_false(l->discover_peers);
        assert_false(l->announce);
        assert_string_equal(l->announce_endpoint, "10.0.0.1:7401");
        assert_int_equal(l->announce_interval, 5 * USEC_PER_SEC);
        assert_string_equal(l->site, "berlin");
        /* Without :port the group keeps the default port. */
        assert_int_equal(l->discovery_group.sin_addr.s_addr, inet_addr("239.255.1.2"));
        assert_int_equal(ntohs(l->discovery_group.sin_port), 7402);
        assert_string_equal(l->discovery_interface, "eth1");
        assert_int_equal(l->peer_timeout, 500 * USEC_PER_MSEC);
        assert_int_equal(l->inventory_refresh, USEC_PER_MINUTE);
        tsagent_config_free(c);
}

static void test_licensing_peers_refused(void **state) {
        static const struct {
                const char *text;
                const char *error;
        } cases[] = {
                {"[licensing]\npeers = 10.0.0.2\n", "[licensing] peers: '10.0.0.2' is not HOST:PORT"},
                {"[licensing]\npeers = 10.0.0.2:0\n", "'10.0.0.2:0' is not HOST:PORT"},
                {"[licensing]\npeers = a:1 A:1\n", "peers: 'A:1' listed twice"},
                {"[licensing]\nannounce-endpoint = 0.0.0.0\n",
                 "announce-endpoint: '0.0.0.0' is not HOST:PORT"},
                {"[licensing]\nsite = two words\n", "[licensing] site: 'two words'"},
                {"[licensing]\ndiscovery-group = 10.0.0.1:7402\n", "discovery-group: not an IPv4 multicast"},
                {"[licensing]\ndiscovery-interface = abcdefghijklmnopq\n", "discovery-interface"},
                {"[licensing]\nannounce-interval = 50ms\n", "announce-interval"},
                {"[licensing]\npeer-timeout = 0\n", "peer-timeout"},
                {"[licensing]\npeer-timeout = 2min\n", "peer-timeout"},
                {"[licensing]\ninventory-refresh = 10ms\n", "inventory-refresh"},
                {"[licensing]\ndiscover-peers = maybe\n", "discover-peers"},
                {"[agent]\nroles = licensing\nnode-name = lic 1\n", "node-name 'lic 1' cannot be announced"},
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct tsagent_config *c = NULL;
                char err[TSF_CONFIG_ERROR_MAX] = "", *path = write_conf(cases[i].text);
                int r = tsagent_config_load(path, &c, err, sizeof(err));

                unlink(path);
                if (r >= 0 || !strstr(err, cases[i].error))
                        fail_msg("case %zu: r=%d err='%s', want '%s'", i, r, err, cases[i].error);
                assert_null(c);
        }
        /* A node name that cannot be announced is fine when not announcing. */
        {
                struct tsagent_config *c = NULL;
                char err[TSF_CONFIG_ERROR_MAX] = "",
                     *path = write_conf(
                             "[agent]\nroles = licensing\nnode-name = lic 1\n[licensing]\nannounce = no\n");

                assert_int_equal(tsagent_config_load(path, &c, err, sizeof(err)), 0);
                unlink(path);
                tsagent_config_free(c);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_roles_and_values),
                cmocka_unit_test(test_bad_role),
                cmocka_unit_test(test_bad_key),
                cmocka_unit_test(test_host_section),
                cmocka_unit_test(test_host_cross_checks),
                cmocka_unit_test(test_role_names),
                cmocka_unit_test(test_host_licensing),
                cmocka_unit_test(test_licensing_peers),
                cmocka_unit_test(test_licensing_peers_refused),
        };
        return cmocka_run_group_tests_name("agent_config", tests, NULL, NULL);
}
