/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * licdisc-probe: license-server discovery from the command line, on
 * lib/licdiscovery.c. Stands in for the licensing role (announce) and the
 * host role (listen) in tests/integration/licdiscovery.sh, and answers an
 * operator's "which license servers does this host see?".
 *
 *   licdisc-probe announce --name lic1 --endpoint 10.0.0.5:7401 --key-id HEX
 *                          [--site S] [--interval 30s]
 *   licdisc-probe listen [--site S] [--domain D] [--server HOST:PORT]...
 *                        [--duration 10s]
 *   licdisc-probe srv DOMAIN
 *   common: [--group 239.255.77.77] [--port 7402] [--ttl 1] [--interface eth0]
 *
 * `listen` prints one line per change on stdout:
 *   added|updated|removed endpoint=E name=N site=S key=K origin=O source=A seq=Q
 * SIGUSR1 prints the ordered list ("list" lines, then "end"), SIGUSR2 calls
 * licdisc_restart(). Both verbs print their counters ("stats ...") when
 * they end (SIGTERM, SIGINT, --duration).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-event.h>

#include "tsfarm/clock.h"
#include "tsfarm/hex.h"
#include "tsfarm/licdiscovery.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

#define MAX_SERVERS 16

static const char *arg_name;
static const char *arg_site;
static const char *arg_endpoint;
static const char *arg_key_id;
static const char *arg_domain;
static const char *arg_servers[MAX_SERVERS];
static size_t arg_n_servers;
static usec_t arg_interval;
static usec_t arg_duration;
static struct licdisc_net arg_net;

static void help(void) {
        printf("Usage: licdisc-probe announce --name NAME --endpoint HOST:PORT --key-id HEX [--site SITE]\n"
               "                              [--interval DURATION] [NETWORK OPTIONS]\n"
               "       licdisc-probe listen [--site SITE] [--domain DOMAIN] [--server HOST:PORT]...\n"
               "                            [--duration DURATION] [NETWORK OPTIONS]\n"
               "       licdisc-probe srv DOMAIN\n"
               "\n"
               "License-server discovery (docs/licensing.md, \"Discovery\").\n"
               "\n"
               "Network options:\n"
               "  --group ADDR      multicast group (default %s)\n"
               "  --port PORT       UDP port (default %u)\n"
               "  --ttl N           multicast TTL (default %u)\n"
               "  --interface IF    join and send on IF (default: the route to the group)\n"
               "\n"
               "listen prints added/updated/removed lines; SIGUSR1 prints the ordered list,\n"
               "SIGUSR2 asks the group again (licdisc_restart).\n"
               "\n"
               "Examples:\n"
               "  licdisc-probe announce --name lic1 --site berlin --endpoint 10.0.0.5:7401 \\\n"
               "          --key-id $(printf '%%064d' 0) --interface eth0\n"
               "  licdisc-probe listen --site berlin --interface eth0 --duration 5s\n"
               "  licdisc-probe srv corp.example\n",
               LICDISC_GROUP_DEFAULT, LICDISC_PORT_DEFAULT, LICDISC_TTL_DEFAULT);
}

static const char *origin_str(unsigned o, char *buf, size_t size) {
        snprintf(buf, size, "%s%s%s%s", o & LICDISC_ORIGIN_MULTICAST ? "multicast," : "",
                 o & LICDISC_ORIGIN_DNS ? "dns," : "", o & LICDISC_ORIGIN_CONFIG ? "config," : "",
                 o ? "" : "none,");
        buf[strlen(buf) - 1] = '\0';
        return buf;
}

static void print_server(const char *what, const struct licdisc_server *s) {
        char origin[32], src[INET_ADDRSTRLEN] = "-";

        if (s->source.sin_family == AF_INET)
                inet_ntop(AF_INET, &s->source.sin_addr, src, sizeof(src));
        printf("%s endpoint=%s name=%s site=%s key=%s origin=%s source=%s seq=%llu\n", what, s->endpoint,
               s->name[0] ? s->name : "-", s->site[0] ? s->site : "-", s->key_id[0] ? s->key_id : "-",
               origin_str(s->origins, origin, sizeof(origin)), src, (unsigned long long)s->seq);
}

static void print_stats(const struct licdisc_stats *st) {
        printf("stats sent=%llu send_errors=%llu received=%llu malformed=%llu unsupported=%llu ignored=%llu "
               "stale=%llu rate_limited=%llu overflow=%llu queries=%llu dns_lookups=%llu "
               "dns_failures=%llu\n",
               (unsigned long long)st->sent, (unsigned long long)st->send_errors,
               (unsigned long long)st->received, (unsigned long long)st->malformed,
               (unsigned long long)st->unsupported, (unsigned long long)st->ignored,
               (unsigned long long)st->stale, (unsigned long long)st->rate_limited,
               (unsigned long long)st->overflow, (unsigned long long)st->queries,
               (unsigned long long)st->dns_lookups, (unsigned long long)st->dns_failures);
}

static void on_change(struct licdisc_listener *l, enum licdisc_change change, const struct licdisc_server *s,
                      void *userdata) {
        print_server(change == LICDISC_ADDED     ? "added"
                     : change == LICDISC_UPDATED ? "updated"
                                                 : "removed",
                     s);
}

static int on_list(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct licdisc_server *v = NULL;
        size_t n;
        int r;

        r = licdisc_listener_list(userdata, &v, &n);
        if (r < 0)
                return log_error_errno(r, "Failed to list servers: %m");
        for (size_t i = 0; i < n; i++)
                print_server("list", &v[i]);
        printf("end\n");
        free(v);
        return 0;
}

static int on_restart(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        int r = licdisc_restart(userdata);

        if (r < 0)
                log_warning_errno(r, "Failed to restart discovery, ignoring: %m");
        else
                log_info("Discovery restarted.");
        return 0;
}

static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int on_duration(sd_event_source *s, uint64_t usec, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int setup_event(sd_event **ret) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        sigset_t mask;
        int r;

        r = sd_event_default(&e);
        if (r < 0)
                return log_error_errno(r, "Failed to create the event loop: %m");
        /* sd_event_add_signal wants the signals blocked first. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGUSR1);
        sigaddset(&mask, SIGUSR2);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(negative_errno(), "Failed to block signals: %m");
        r = sd_event_add_signal(e, NULL, SIGTERM, on_exit_signal, NULL);
        if (r >= 0)
                r = sd_event_add_signal(e, NULL, SIGINT, on_exit_signal, NULL);
        if (r >= 0 && arg_duration > 0)
                r = sd_event_add_time_relative(e, NULL, CLOCK_MONOTONIC, arg_duration, USEC_PER_MSEC,
                                               on_duration, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the event loop: %m");
        *ret = TAKE_PTR(e);
        return 0;
}

static int verb_announce(void) {
        _cleanup_(licdisc_announcer_freep) struct licdisc_announcer *a = NULL;
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct licdisc_announcer_config c = {
                .net = arg_net,
                .interval = arg_interval,
                .name = arg_name,
                .site = arg_site,
                .endpoint = arg_endpoint,
        };
        struct licdisc_stats st;
        ssize_t n;
        int r;

        if (!arg_name || !arg_endpoint || !arg_key_id) {
                log_error("announce needs --name, --endpoint and --key-id.");
                return -EINVAL;
        }
        n = tsf_hex_decode(arg_key_id, strlen(arg_key_id), c.key_id, sizeof(c.key_id), NULL);
        if (n != LICDISC_KEY_ID_SIZE) {
                log_error("--key-id wants %d bytes in hex.", LICDISC_KEY_ID_SIZE);
                return -EINVAL;
        }
        r = setup_event(&e);
        if (r < 0)
                return r;
        r = licdisc_announcer_new(e, &c, &a);
        if (r < 0)
                return log_error_errno(r, "Invalid announcement (name, site, endpoint or interval): %m");
        r = licdisc_announcer_start(a);
        if (r < 0)
                return log_error_errno(r, "Failed to start announcing: %m");
        log_info("Announcing %s (%s) every %llu ms.", arg_name, arg_endpoint,
                 (unsigned long long)((arg_interval ? arg_interval : LICDISC_INTERVAL_DEFAULT) /
                                      USEC_PER_MSEC));
        r = sd_event_loop(e);
        licdisc_announcer_get_stats(a, &st);
        print_stats(&st);
        return r < 0 ? log_error_errno(r, "Event loop failed: %m") : 0;
}

static int verb_listen(void) {
        _cleanup_(licdisc_listener_freep) struct licdisc_listener *l = NULL;
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct licdisc_listener_config c = {
                .net = arg_net,
                .site = arg_site,
                .domain = arg_domain,
        };
        struct licdisc_stats st;
        int r;

        r = setup_event(&e);
        if (r < 0)
                return r;
        r = licdisc_listener_new(e, &c, on_change, NULL, &l);
        if (r < 0)
                return log_error_errno(r, "Invalid listener settings (site or domain): %m");
        for (size_t i = 0; i < arg_n_servers; i++) {
                r = licdisc_listener_add_static(l, arg_servers[i], NULL, NULL, NULL);
                if (r < 0)
                        return log_error_errno(r, "Invalid --server %s: %m", arg_servers[i]);
        }
        r = sd_event_add_signal(e, NULL, SIGUSR1, on_list, l);
        if (r >= 0)
                r = sd_event_add_signal(e, NULL, SIGUSR2, on_restart, l);
        if (r < 0)
                return log_error_errno(r, "Failed to install signal handlers: %m");
        r = licdisc_listener_start(l);
        if (r < 0)
                return log_error_errno(r, "Failed to start listening: %m");
        log_info("Listening for license servers.");
        r = sd_event_loop(e);
        licdisc_listener_get_stats(l, &st);
        print_stats(&st);
        return r < 0 ? log_error_errno(r, "Event loop failed: %m") : 0;
}

static int verb_srv(const char *domain) {
        struct licdisc_srv *v = NULL;
        size_t n;
        int r;

        r = licdisc_srv_lookup(domain, &v, &n);
        if (r < 0)
                return log_error_errno(r, "Failed to look up %s SRV records of '%s': %m", LICDISC_SRV_PREFIX,
                                       domain);
        for (size_t i = 0; i < n; i++)
                printf("srv priority=%u weight=%u endpoint=%s:%u\n", v[i].priority, v[i].weight, v[i].target,
                       v[i].port);
        free(v);
        return 0;
}

static int parse_args(int argc, char **argv) {
        enum {
                ARG_NAME = 0x100,
                ARG_SITE,
                ARG_ENDPOINT,
                ARG_KEY_ID,
                ARG_INTERVAL,
                ARG_DOMAIN,
                ARG_SERVER,
                ARG_DURATION,
                ARG_GROUP,
                ARG_PORT,
                ARG_TTL,
                ARG_INTERFACE
        };
        static const struct option options[] = {
                {"help", no_argument, NULL, 'h'},
                {"name", required_argument, NULL, ARG_NAME},
                {"site", required_argument, NULL, ARG_SITE},
                {"endpoint", required_argument, NULL, ARG_ENDPOINT},
                {"key-id", required_argument, NULL, ARG_KEY_ID},
                {"interval", required_argument, NULL, ARG_INTERVAL},
                {"domain", required_argument, NULL, ARG_DOMAIN},
                {"server", required_argument, NULL, ARG_SERVER},
                {"duration", required_argument, NULL, ARG_DURATION},
                {"group", required_argument, NULL, ARG_GROUP},
                {"port", required_argument, NULL, ARG_PORT},
                {"ttl", required_argument, NULL, ARG_TTL},
                {"interface", required_argument, NULL, ARG_INTERFACE},
                {},
        };
        unsigned long v;
        char *end;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        exit(0);
                case ARG_NAME:
                        arg_name = optarg;
                        break;
                case ARG_SITE:
                        arg_site = optarg;
                        break;
                case ARG_ENDPOINT:
                        arg_endpoint = optarg;
                        break;
                case ARG_KEY_ID:
                        arg_key_id = optarg;
                        break;
                case ARG_DOMAIN:
                        arg_domain = optarg;
                        break;
                case ARG_SERVER:
                        if (arg_n_servers == MAX_SERVERS) {
                                log_error("At most %d --server options.", MAX_SERVERS);
                                return -E2BIG;
                        }
                        arg_servers[arg_n_servers++] = optarg;
                        break;
                case ARG_INTERVAL:
                case ARG_DURATION:
                        if (tsf_parse_duration(optarg, c == ARG_INTERVAL ? &arg_interval : &arg_duration) <
                            0) {
                                log_error("Invalid duration '%s'.", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_GROUP:
                        if (inet_pton(AF_INET, optarg, &arg_net.group) != 1) {
                                log_error("Invalid IPv4 group '%s'.", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_PORT:
                case ARG_TTL:
                        errno = 0;
                        v = strtoul(optarg, &end, 10);
                        if (errno || *end || v == 0 || v > (c == ARG_PORT ? 65535u : 255u)) {
                                log_error("Invalid %s '%s'.", c == ARG_PORT ? "port" : "TTL", optarg);
                                return -EINVAL;
                        }
                        if (c == ARG_PORT)
                                arg_net.port = (uint16_t)v;
                        else
                                arg_net.ttl = (uint8_t)v;
                        break;
                case ARG_INTERFACE:
                        arg_net.ifindex = if_nametoindex(optarg);
                        if (arg_net.ifindex == 0)
                                return log_error_errno(negative_errno(), "Unknown interface '%s': %m",
                                                       optarg);
                        break;
                default:
                        return -EINVAL;
                }
        return 0;
}

int main(int argc, char **argv) {
        const char *verb;
        int r;

        tsf_log_set_ident("licdisc-probe");
        tsf_log_parse_environment();
        /* Lines go to a log file in tests: one write per line. */
        setvbuf(stdout, NULL, _IOLBF, 0);
        r = parse_args(argc, argv);
        if (r < 0)
                return 2;
        verb = optind < argc ? argv[optind] : NULL;
        if (!verb) {
                help();
                return 2;
        }
        if (strcmp(verb, "announce") == 0 && optind + 1 == argc)
                r = verb_announce();
        else if (strcmp(verb, "listen") == 0 && optind + 1 == argc)
                r = verb_listen();
        else if (strcmp(verb, "srv") == 0 && optind + 2 == argc)
                r = verb_srv(argv[optind + 1]);
        else {
                log_error("Unknown verb or wrong arguments; see --help.");
                return 2;
        }
        return r < 0 ? 1 : 0;
}
