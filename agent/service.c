/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent/service.h"
#include "tsfarm/fs.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

static const char *strna(const char *s) {
        return s ? s : "n/a";
}

int service_api_start(sd_event *e, const struct service_config *c, const struct service_spec *spec,
                      struct tsf_api_server **ret) {
        _cleanup_(tsf_api_server_freep) struct tsf_api_server *api = NULL;
        char listen[INET_ADDRSTRLEN] = "-";
        struct tsf_api_server_config sc = {.unix_path = c->socket};
        int r;

        if (c->certificate) {
                sc.cert_file = c->certificate;
                sc.key_file = c->key;
                sc.ca_file = c->ca;
                sc.listen_address = inet_ntop(AF_INET, &c->listen.sin_addr, listen, sizeof(listen));
                sc.port = ntohs(c->listen.sin_port);
        } else
                log_warning("[%s] has no certificate, key and ca: serving on %s only, %s.", spec->section,
                            c->socket, spec->unreachable);
        r = tsf_mkdir_parent(c->socket, 0755);
        if (r < 0)
                return log_error_errno(r, "Failed to create the directory for %s: %m", c->socket);

        r = tsf_api_server_new(e, &sc, &api);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the %s API (certificate %s, key %s, ca %s): %m",
                                       spec->section, strna(c->certificate), strna(c->key), strna(c->ca));
        r = tsf_api_server_add_routes(api, spec->routes, spec->userdata);
        if (r < 0)
                return log_error_errno(r, "Failed to add the %s routes: %m", spec->section);
        for (size_t i = 0; i < spec->n_metrics; i++) {
                const struct service_metric *m = &spec->metrics[i];

                r = tsf_api_metric_add(api, m->name, m->help, m->type, m->value, spec->userdata);
                if (r < 0)
                        return log_error_errno(r, "Failed to add metric %s: %m", m->name);
        }
        r = tsf_api_server_start(api);
        if (r < 0)
                return log_error_errno(r, "Failed to serve the %s API on %s:%u and %s: %m", spec->section,
                                       listen, (unsigned)ntohs(c->listen.sin_port), c->socket);
        *ret = TAKE_PTR(api);
        return 0;
}

void service_endpoints(const struct service_config *c, const struct tsf_api_server *api, char *buf,
                       size_t size) {
        char listen[INET_ADDRSTRLEN];

        if (c->certificate && inet_ntop(AF_INET, &c->listen.sin_addr, listen, sizeof(listen)))
                snprintf(buf, size, "%s:%u and %s", listen, (unsigned)tsf_api_server_port(api), c->socket);
        else
                snprintf(buf, size, "- and %s", c->socket);
}

bool service_config_changed(const struct service_config *a, const struct service_config *b) {
        return !streq_ptr(a->database, b->database) || !streq_ptr(a->socket, b->socket) ||
               !streq_ptr(a->certificate, b->certificate) || !streq_ptr(a->key, b->key) ||
               !streq_ptr(a->ca, b->ca) || memcmp(&a->listen, &b->listen, sizeof(a->listen)) != 0;
}
