/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsagent: the tsfarm agent. One binary, roles chosen in the configuration
 * (host, directory, licensing). Runs under systemd (Type=notify) or alone.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "agent_config.h"
#include "manager.h"
#include "tsfarm/config.h"
#include "tsfarm/log.h"

static const char *arg_config = TSAGENT_DEFAULT_CONFIG;
static int arg_check_config = 0;

static void help(void) {
        printf("Usage: tsagent [OPTIONS]\n"
               "\n"
               "The tsfarm agent: steering, session directory and licensing for RDP farms.\n"
               "\n"
               "Options:\n"
               "  -c, --config FILE   Configuration file (default %s)\n"
               "      --check-config  Parse the configuration, report, and exit\n"
               "  -h, --help          Show this help\n"
               "      --version       Show the version\n"
               "\n"
               "Signals: SIGTERM/SIGINT stop, SIGHUP reloads the configuration.\n"
               "Environment: TSFARM_LOG_LEVEL (err..debug), TSFARM_LOG_TARGET (auto, stderr, journal).\n"
               "\n"
               "Examples:\n"
               "  tsagent --config /etc/tsfarm/tsagent.conf\n"
               "  tsagent --config ./farm.conf --check-config\n"
               "\n"
               "See tsagent(8) and tsagent.conf(5).\n",
               TSAGENT_DEFAULT_CONFIG);
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_CHECK_CONFIG };
        static const struct option options[] = {
                {"config", required_argument, NULL, 'c'},
                {"check-config", no_argument, NULL, ARG_CHECK_CONFIG},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, ARG_VERSION},
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        arg_config = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        arg_check_config = 1;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("tsagent (tsfarm) %s\n", TSFARM_VERSION);
                        return 0;
                default:
                        return -EINVAL; /* getopt said what */
                }
        }
        if (optind < argc) {
                log_error("Unexpected argument '%s'. See tsagent --help.", argv[optind]);
                return -EINVAL;
        }
        return 1;
}

static int run(int argc, char *argv[]) {
        _cleanup_(tsagent_config_freep) struct tsagent_config *config = NULL;
        _cleanup_(manager_freep) struct manager *m = NULL;
        char err[TSF_CONFIG_ERROR_MAX];
        int r;

        tsf_log_set_ident("tsagent");
        tsf_log_parse_environment();

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;

        r = tsagent_config_load(arg_config, &config, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "Invalid configuration: %s", err);
        if (!getenv("TSFARM_LOG_LEVEL"))
                tsf_log_set_max_level(config->log_level);
        if (arg_check_config) {
                printf("%s: OK\n", arg_config);
                return 0;
        }

        r = manager_new(config, &m);
        if (r < 0)
                return r;
        TAKE_PTR(config); /* the manager owns it now */

        r = manager_start(m);
        if (r < 0)
                return r;
        return manager_run(m);
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);

        if (r < 0)
                sd_notifyf(false, "STATUS=Failed: %s\nERRNO=%d", strerror(-r), -r);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
