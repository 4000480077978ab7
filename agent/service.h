/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the serving roles (directory, licensing) share: the role-to-role
 * API on their own UNIX socket and, with a certificate, over mutual TLS
 * (docs/api.md), set up from their [section]'s struct service_config.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <systemd/sd-event.h>

#include "agent/agent_config.h"
#include "tsfarm/api.h"

struct service_metric {
        const char *name;
        const char *help;
        enum tsf_metric_type type;
        tsf_metric_value_t value;
};

struct service_spec {
        const char *section; /* "directory": for messages */
        const char *
                unreachable; /* what a socket-only service means, e.g. "nodes cannot reach this directory" */
        const struct tsf_api_route *routes;
        const struct service_metric *metrics;
        size_t n_metrics;
        void *userdata; /* for the routes and the metrics */
};

/* Creates the socket's directory and the API server with the routes and
 * metrics, and starts serving. Logs what failed. */
int service_api_start(sd_event *e, const struct service_config *c, const struct service_spec *spec,
                      struct tsf_api_server **ret);

/* "ADDR:PORT and SOCKET" ("- and SOCKET" without TLS), for the log. */
void service_endpoints(const struct service_config *c, const struct tsf_api_server *api, char *buf,
                       size_t size);

/* The settings a running service cannot take without a restart differ. */
bool service_config_changed(const struct service_config *a, const struct service_config *b);
