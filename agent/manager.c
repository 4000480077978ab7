/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "agent/directory/directory.h"
#include "agent/host/host.h"
#include "agent/licensing/licensing.h"
#include "manager.h"
#include "tsfarm/clock.h"
#include "tsfarm/config.h"
#include "tsfarm/log.h"

/* Roles register here as they are built; a configured role without an
 * entry is refused at start-up rather than silently ignored. */
static const struct tsagent_role_ops *const role_ops[_TSAGENT_ROLE_MAX] = {
        [TSAGENT_ROLE_HOST] = &host_role_ops,
        [TSAGENT_ROLE_DIRECTORY] = &directory_role_ops,
        [TSAGENT_ROLE_LICENSING] = &licensing_role_ops,
};

static void manager_status(struct manager *m) {
        char roles[128] = "";

        for (int i = 0; i < _TSAGENT_ROLE_MAX; i++) {
                if (!m->config->roles[i])
                        continue;
                if (roles[0])
                        strcat(roles, ", ");
                strcat(roles, tsagent_role_to_string(i));
        }
        sd_notifyf(false, "STATUS=Node %s serving roles: %s", m->config->node_name,
                   roles[0] ? roles : "none");
}

static int on_signal_exit(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct manager *m = userdata;

        log_info("Received SIG%s, shutting down.", sigabbrev_np((int)si->ssi_signo));
        sd_notify(false, "STOPPING=1\nSTATUS=Shutting down");
        return sd_event_exit(m->event, 0);
}

static int on_signal_reload(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void)manager_reload(userdata);
        return 0;
}

int manager_new(struct tsagent_config *config, struct manager **ret) {
        _cleanup_(manager_freep) struct manager *m = NULL;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return log_oom();

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate event loop: %m");

        /* sd_event_add_signal wants the signals blocked first. */
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(negative_errno(), "Failed to block signals: %m");
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal_exit, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal_exit, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGHUP, on_signal_reload, m);
        if (r < 0)
                return log_error_errno(r, "Failed to install signal handlers: %m");

        /* Pings systemd at half of WATCHDOG_USEC when the unit asks for it. */
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                return log_error_errno(r, "Failed to enable the watchdog: %m");
        if (r > 0)
                log_debug("Watchdog enabled.");

        m->config = config;
        for (int i = 0; i < _TSAGENT_ROLE_MAX; i++) {
                if (!config->roles[i])
                        continue;
                if (!role_ops[i]) {
                        m->config = NULL; /* the caller still owns it */
                        return log_error_errno(-EOPNOTSUPP,
                                               "Role '%s' is configured but not available in this build of "
                                               "tsagent.",
                                               tsagent_role_to_string(i));
                }
                r = role_ops[i]->new (m, &m->roles[i]);
                if (r < 0) {
                        m->config = NULL;
                        return r; /* the role logged why */
                }
        }

        *ret = TAKE_PTR(m);
        return 0;
}

struct manager *manager_free(struct manager *m) {
        if (!m)
                return NULL;
        for (int i = _TSAGENT_ROLE_MAX - 1; i >= 0; i--)
                if (m->roles[i] && role_ops[i])
                        role_ops[i]->free(m->roles[i]);
        tsagent_config_free(m->config);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

int manager_start(struct manager *m) {
        int r;

        for (int i = 0; i < _TSAGENT_ROLE_MAX; i++) {
                if (!m->roles[i])
                        continue;
                r = role_ops[i]->start(m->roles[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

int manager_reload(struct manager *m) {
        _cleanup_(tsagent_config_freep) struct tsagent_config *c = NULL;
        char err[TSF_CONFIG_ERROR_MAX];
        int r;

        /* MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match
         * this reload to the signal it sent; older systemd ignores it. */
        sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading configuration",
                   (unsigned long long)tsf_now_monotonic());
        r = tsagent_config_load(m->config->path, &c, err, sizeof(err));
        if (r < 0) {
                log_error_errno(r, "Failed to reload configuration, keeping the running one: %s", err);
                goto done;
        }
        if (memcmp(c->roles, m->config->roles, sizeof(c->roles)) != 0)
                log_warning("The set of roles changed in %s; that takes a restart, ignoring.", c->path);
        memcpy(c->roles, m->config->roles, sizeof(c->roles));

        for (int i = 0; i < _TSAGENT_ROLE_MAX; i++) {
                if (!m->roles[i] || !role_ops[i]->reload)
                        continue;
                r = role_ops[i]->reload(m->roles[i], c);
                if (r < 0) {
                        log_error_errno(r, "Role %s refused the new configuration, keeping the running one.",
                                        tsagent_role_to_string(i));
                        goto done;
                }
        }
        tsf_log_set_max_level(c->log_level);
        tsagent_config_free(m->config);
        m->config = TAKE_PTR(c);
        log_info("Configuration reloaded from %s.", m->config->path);
        r = 0;
done:
        sd_notify(false, "READY=1");
        manager_status(m);
        return r;
}

int manager_run(struct manager *m) {
        int r;

        sd_notify(false, "READY=1");
        manager_status(m);
        log_info("tsagent running as node %s.", m->config->node_name);
        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return 0;
}
