/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tshost: the reference RDP-style terminal server (docs/tshost.md,
 * tshost(8)). Parses options, listens, runs the loop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <systemd/sd-daemon.h>

#include "tools/tshost/tshost.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/config.h"
#include "tsfarm/log.h"

static struct tshost_config arg = {
        .listen_port = 3389,
        .agent_socket = TSHOST_DEFAULT_AGENT_SOCKET,
        .licensing = true,
        .pam_service = TSHOST_DEFAULT_PAM_SERVICE,
        .farm_id = TSHOST_DEFAULT_FARM_ID,
        .product_version = TSHOST_DEFAULT_PRODUCT_VERSION,
        .handshake_timeout = 10 * USEC_PER_SEC,
        .license_timeout = 30 * USEC_PER_SEC,
        .logon_timeout = 120 * USEC_PER_SEC,
        .keepalive = 30 * USEC_PER_SEC,
        .peer_timeout = 90 * USEC_PER_SEC,
        .max_connections = 256,
        .scrollback = TSHOST_SCROLLBACK_DEFAULT,
};
static char node_name[256];

static void help(void) {
        printf("Usage: tshost [OPTIONS]\n"
               "\n"
               "The tsfarm reference terminal server: TLS, per-device licensing through the\n"
               "host agent, PAM logon, persistent login shells on ptys (docs/protocol.md).\n"
               "\n"
               "Options:\n"
               "      --listen ADDR:PORT         Where to listen (default %s)\n"
               "      --certificate FILE         TLS certificate (PEM, chain), e.g. the node's farm "
               "certificate\n"
               "      --key FILE                 Its private key (PEM)\n"
               "      --agent-socket PATH        The host agent's local API (default %s)\n"
               "      --no-agent                 No host agent: no licensing, reports or redirects\n"
               "      --no-licensing             Admit every device without asking the agent\n"
               "      --pam-service NAME         PAM service (default %s)\n"
               "      --node-name NAME           This node's name in logs (default: the host name)\n"
               "      --farm-id ID               Farm id sent in LICENSE_REQUEST (default %s)\n"
               "      --product-version V        Product version sent in LICENSE_REQUEST (default %s)\n"
               "      --handshake-timeout TIME   Connection Request, and TLS handshake (default 10s)\n"
               "      --license-timeout TIME     LICENSE_REQUEST -> CLIENT_LICENSE_INFO (default 30s)\n"
               "      --logon-timeout TIME       TLS up -> logged on (default 120s)\n"
               "      --keepalive TIME           Send a keepalive after this much quiet (default 30s)\n"
               "      --peer-timeout TIME        A client heard nothing from this long is gone (default "
               "90s)\n"
               "      --max-connections N        Connections at once (default 256)\n"
               "      --scrollback SIZE          Output kept per session for reattach (default 64K)\n"
               "  -h, --help                     Show this help\n"
               "      --version                  Show the version\n"
               "\n"
               "Signals: SIGTERM/SIGINT end every session and stop.\n"
               "Environment: TSFARM_LOG_LEVEL (err..debug), TSFARM_LOG_TARGET (auto, stderr, journal).\n"
               "\n"
               "Examples:\n"
               "  tsctl pki issue --dir /etc/tsfarm/pki ts1 --ip 10.0.0.1\n"
               "  tshost --certificate /etc/tsfarm/pki/ts1.crt --key /etc/tsfarm/pki/ts1.key\n"
               "  tshost --listen 127.0.0.1:3390 --no-agent --pam-service tshost-test --certificate c.pem "
               "--key k.pem\n"
               "\n"
               "See tshost(8) and docs/tshost.md.\n",
               TSHOST_DEFAULT_LISTEN, TSHOST_DEFAULT_AGENT_SOCKET, TSHOST_DEFAULT_PAM_SERVICE,
               TSHOST_DEFAULT_FARM_ID, TSHOST_DEFAULT_PRODUCT_VERSION);
}

static int parse_time(const char *name, const char *value, usec_t *ret) {
        int r = tsf_parse_duration(value, ret);

        if (r < 0 || *ret == 0) {
                log_error("Invalid %s '%s': a duration such as 10s or 500ms is needed.", name, value);
                return -EINVAL;
        }
        return 0;
}

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_LISTEN,
                ARG_CERT,
                ARG_KEY,
                ARG_AGENT_SOCKET,
                ARG_NO_AGENT,
                ARG_NO_LICENSING,
                ARG_PAM_SERVICE,
                ARG_NODE_NAME,
                ARG_FARM_ID,
                ARG_PRODUCT_VERSION,
                ARG_HANDSHAKE_TIMEOUT,
                ARG_LICENSE_TIMEOUT,
                ARG_LOGON_TIMEOUT,
                ARG_KEEPALIVE,
                ARG_PEER_TIMEOUT,
                ARG_MAX_CONNECTIONS,
                ARG_SCROLLBACK,
        };
        static const struct option options[] = {
                {"listen", required_argument, NULL, ARG_LISTEN},
                {"certificate", required_argument, NULL, ARG_CERT},
                {"key", required_argument, NULL, ARG_KEY},
                {"agent-socket", required_argument, NULL, ARG_AGENT_SOCKET},
                {"no-agent", no_argument, NULL, ARG_NO_AGENT},
                {"no-licensing", no_argument, NULL, ARG_NO_LICENSING},
                {"pam-service", required_argument, NULL, ARG_PAM_SERVICE},
                {"node-name", required_argument, NULL, ARG_NODE_NAME},
                {"farm-id", required_argument, NULL, ARG_FARM_ID},
                {"product-version", required_argument, NULL, ARG_PRODUCT_VERSION},
                {"handshake-timeout", required_argument, NULL, ARG_HANDSHAKE_TIMEOUT},
                {"license-timeout", required_argument, NULL, ARG_LICENSE_TIMEOUT},
                {"logon-timeout", required_argument, NULL, ARG_LOGON_TIMEOUT},
                {"keepalive", required_argument, NULL, ARG_KEEPALIVE},
                {"peer-timeout", required_argument, NULL, ARG_PEER_TIMEOUT},
                {"max-connections", required_argument, NULL, ARG_MAX_CONNECTIONS},
                {"scrollback", required_argument, NULL, ARG_SCROLLBACK},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, ARG_VERSION},
                {},
        };
        uint64_t u;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                r = 0;
                switch (c) {
                case ARG_LISTEN:
                        if (!strchr(optarg, ':') ||
                            tsf_parse_endpoint(optarg, &arg.listen_addr_be, &arg.listen_port) < 0 ||
                            arg.listen_port == 0) {
                                log_error("Invalid --listen '%s': ADDR:PORT with an IPv4 address is needed.",
                                          optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_CERT:
                        arg.cert_file = optarg;
                        break;
                case ARG_KEY:
                        arg.key_file = optarg;
                        break;
                case ARG_AGENT_SOCKET:
                        arg.agent_socket = optarg;
                        break;
                case ARG_NO_AGENT:
                        arg.agent_socket = NULL;
                        arg.licensing = false;
                        break;
                case ARG_NO_LICENSING:
                        arg.licensing = false;
                        break;
                case ARG_PAM_SERVICE:
                        arg.pam_service = optarg;
                        break;
                case ARG_NODE_NAME:
                        arg.node_name = optarg;
                        break;
                case ARG_FARM_ID:
                        arg.farm_id = optarg;
                        break;
                case ARG_PRODUCT_VERSION:
                        arg.product_version = optarg;
                        break;
                case ARG_HANDSHAKE_TIMEOUT:
                        r = parse_time("--handshake-timeout", optarg, &arg.handshake_timeout);
                        break;
                case ARG_LICENSE_TIMEOUT:
                        r = parse_time("--license-timeout", optarg, &arg.license_timeout);
                        break;
                case ARG_LOGON_TIMEOUT:
                        r = parse_time("--logon-timeout", optarg, &arg.logon_timeout);
                        break;
                case ARG_KEEPALIVE:
                        r = parse_time("--keepalive", optarg, &arg.keepalive);
                        break;
                case ARG_PEER_TIMEOUT:
                        r = parse_time("--peer-timeout", optarg, &arg.peer_timeout);
                        break;
                case ARG_MAX_CONNECTIONS:
                        if (tsf_parse_u64(optarg, &u) < 0 || u == 0 || u > 65536) {
                                log_error("Invalid --max-connections '%s': 1..65536.", optarg);
                                return -EINVAL;
                        }
                        arg.max_connections = (unsigned)u;
                        break;
                case ARG_SCROLLBACK:
                        if (tsf_parse_size(optarg, &u) < 0 || u > 64 * 1024 * 1024) {
                                log_error("Invalid --scrollback '%s': a size up to 64M.", optarg);
                                return -EINVAL;
                        }
                        arg.scrollback = (size_t)u;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("tshost (tsfarm) %s\n", TSFARM_VERSION);
                        return 0;
                default:
                        return -EINVAL; /* getopt said what */
                }
                if (r < 0)
                        return r;
        }
        if (optind < argc) {
                log_error("Unexpected argument '%s'. See tshost --help.", argv[optind]);
                return -EINVAL;
        }
        if (!arg.cert_file || !arg.key_file) {
                log_error("--certificate and --key are required: the protocol runs inside TLS.");
                return -EINVAL;
        }
        if (arg.keepalive >= arg.peer_timeout) {
                log_error("--keepalive must be shorter than --peer-timeout.");
                return -EINVAL;
        }
        if (!arg.node_name) {
                if (gethostname(node_name, sizeof(node_name) - 1) < 0)
                        snprintf(node_name, sizeof(node_name), "localhost");
                arg.node_name = node_name;
        }
        return 1;
}

static int ssl_setup(struct server *srv) {
        char e[256];

        srv->ssl_ctx = SSL_CTX_new(TLS_server_method());
        if (!srv->ssl_ctx)
                return log_oom();
        (void)SSL_CTX_set_min_proto_version(srv->ssl_ctx, TLS1_2_VERSION);
        SSL_CTX_set_options(srv->ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
        SSL_CTX_set_mode(srv->ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        if (SSL_CTX_use_certificate_chain_file(srv->ssl_ctx, srv->config->cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(srv->ssl_ctx, srv->config->key_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(srv->ssl_ctx) != 1) {
                ERR_error_string_n(ERR_get_error(), e, sizeof(e));
                log_error("Failed to load the certificate %s and key %s: %s", srv->config->cert_file,
                          srv->config->key_file, e);
                return -EINVAL;
        }
        return 0;
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct server *srv = userdata;

        for (;;) {
                struct sockaddr_in sa;
                socklen_t len = sizeof(sa);
                char ip[INET_ADDRSTRLEN];
                int cfd, r;

                cfd = accept4(fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                                log_warning_errno(negative_errno(), "Failed to accept a connection: %m");
                        return 0;
                }
                inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
                if (srv->n_conns >= srv->config->max_connections || srv->shutting_down) {
                        log_warning("Refusing %s:%u: %u connections already (--max-connections).", ip,
                                    ntohs(sa.sin_port), srv->n_conns);
                        safe_close(cfd);
                        continue;
                }
                r = conn_accept(srv, cfd, ip, ntohs(sa.sin_port));
                if (r < 0)
                        log_warning_errno(r, "Failed to set up connection %s:%u: %m", ip,
                                          ntohs(sa.sin_port));
        }
}

static int listen_setup(struct server *srv) {
        struct sockaddr_in sa = {
                .sin_family = AF_INET,
                .sin_addr.s_addr = srv->config->listen_addr_be,
                .sin_port = htons(srv->config->listen_port),
        };
        char ip[INET_ADDRSTRLEN];
        int one = 1, r;

        inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
        srv->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (srv->listen_fd < 0)
                return log_error_errno(negative_errno(), "Failed to create a socket: %m");
        (void)setsockopt(srv->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(srv->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                return log_error_errno(negative_errno(), "Failed to bind %s:%u: %m", ip,
                                       srv->config->listen_port);
        if (listen(srv->listen_fd, 128) < 0)
                return log_error_errno(negative_errno(), "Failed to listen on %s:%u: %m", ip,
                                       srv->config->listen_port);
        r = sd_event_add_io(srv->event, &srv->listen_source, srv->listen_fd, EPOLLIN, on_accept, srv);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the listening socket: %m");
        log_info("Listening on %s:%u.", ip, srv->config->listen_port);
        return 0;
}

static int on_exit_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct server *srv = userdata;

        return sd_event_exit(srv->event, 0);
}

static int on_signal_exit(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct server *srv = userdata;

        if (srv->shutting_down)
                return sd_event_exit(srv->event, 0);
        log_info("Received SIG%s, ending every session and shutting down.",
                 sigabbrev_np((int)si->ssi_signo));
        sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");
        srv->shutting_down = true;
        srv->listen_source = sd_event_source_disable_unref(srv->listen_source);
        conn_shutdown_all(srv);
        sessions_hangup_all(srv);
        /* A moment for the last frames, the logoff reports and the shells. */
        (void)sd_event_add_time_relative(srv->event, NULL, CLOCK_MONOTONIC, USEC_PER_SEC, 0, on_exit_timer,
                                         srv);
        return 0;
}

static void server_done(struct server *srv) {
        while (srv->conns)
                conn_free(srv->conns);
        auth_jobs_free(srv);
        sessions_free(srv);
        sd_event_source_disable_unref(srv->listen_source);
        safe_close(srv->listen_fd);
        tsf_api_client_free(srv->agent); /* cancels a report on the way, without its callback */
        agent_reports_free(srv);
        SSL_CTX_free(srv->ssl_ctx);
        sd_event_unref(srv->event);
}

static int run(int argc, char *argv[]) {
        struct server srv = {.config = &arg, .listen_fd = -1};
        sigset_t mask;
        int r;

        tsf_log_set_ident("tshost");
        tsf_log_parse_environment();
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;

        if (getrandom(&srv.next_session_id, sizeof(srv.next_session_id), 0) != sizeof(srv.next_session_id))
                srv.next_session_id = (uint32_t)getpid();
        srv.next_session_id = (srv.next_session_id % 0x7fffffff) + 1;

        (void)signal(SIGPIPE, SIG_IGN);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD); /* sd_event_add_child() */
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
                r = log_error_errno(negative_errno(), "Failed to block signals: %m");
                goto finish;
        }
        r = sd_event_default(&srv.event);
        if (r < 0) {
                log_error_errno(r, "Failed to allocate the event loop: %m");
                goto finish;
        }
        r = sd_event_add_signal(srv.event, NULL, SIGTERM, on_signal_exit, &srv);
        if (r >= 0)
                r = sd_event_add_signal(srv.event, NULL, SIGINT, on_signal_exit, &srv);
        if (r < 0) {
                log_error_errno(r, "Failed to install signal handlers: %m");
                goto finish;
        }
        (void)sd_event_set_watchdog(srv.event, true);

        r = ssl_setup(&srv);
        if (r < 0)
                goto finish;
        if (arg.agent_socket) {
                struct tsf_api_client_config cc = {.unix_path = arg.agent_socket,
                                                   .timeout = 5 * USEC_PER_SEC};

                r = tsf_api_client_new(&cc, &srv.agent);
                if (r >= 0)
                        r = tsf_api_client_attach_event(srv.agent, srv.event);
                if (r < 0) {
                        log_error_errno(r, "Failed to set up the host agent client: %m");
                        goto finish;
                }
        }
        r = listen_setup(&srv);
        if (r < 0)
                goto finish;

        log_info("tshost running as node %s: PAM service %s, %s.", arg.node_name, arg.pam_service,
                 !arg.agent_socket ? "no host agent (no licensing, reports or redirects)"
                 : arg.licensing   ? "licensing and session reports through the host agent"
                                   : "session reports through the host agent, licensing off");
        sd_notifyf(false, "READY=1\nSTATUS=Serving on port %u as node %s", arg.listen_port, arg.node_name);
        r = sd_event_loop(srv.event);
        if (r < 0)
                log_error_errno(r, "Event loop failed: %m");
finish:
        server_done(&srv);
        return r;
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);

        if (r < 0)
                sd_notifyf(false, "STATUS=Failed: %s\nERRNO=%d", strerror(-r), -r);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
