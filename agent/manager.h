/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The manager owns tsagent's event loop, its configuration and its roles.
 * Roles plug in through struct tsagent_role_ops: each is created from the
 * configuration, started once the loop exists, told about reloads, and
 * freed on the way out.
 */
#pragma once

#include <systemd/sd-event.h>

#include "agent_config.h"
#include "tsfarm/cleanup.h"

struct manager;

struct tsagent_role_ops {
        const char *name;
        int (*new)(struct manager *m, void **ret);
        int (*start)(void *role);
        /* The new config has been validated; apply what can change live. */
        int (*reload)(void *role, const struct tsagent_config *c);
        void (*free)(void *role);
};

struct manager {
        sd_event *event;
        struct tsagent_config *config;
        void *roles[_TSAGENT_ROLE_MAX];
};

int manager_new(struct tsagent_config *config, struct manager **ret);
struct manager *manager_free(struct manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct manager *, manager_free);

int manager_start(struct manager *m);
int manager_run(struct manager *m);
/* Re-reads the configuration file; on any error keeps the running one. */
int manager_reload(struct manager *m);
