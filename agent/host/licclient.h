/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The host role's licensing client: the terminal server's licensing
 * component (DESIGN 3, docs/licensing.md "The terminal server's side").
 *
 * It keeps the list of license servers (discovery: multicast, DNS SRV,
 * configuration), judges the tokens devices present offline against the
 * farm's trusted license-server keys, drives the per-device flow
 * (temporary token on first contact, validation after logon, a Device CAL
 * on the next connection, renewal in the last 7 days) and owns the grace
 * period. The session host reaches it through the local API:
 *
 *   POST /v1/license/check     offline verdict on a presented token
 *   POST /v1/license/obtain    admit or refuse a device; the token to push
 *   POST /v1/license/logon     a successful logon: validate the temporary token
 *   GET  /v1/license/diagnose  servers found, reachable, trusted, inventory; grace
 *
 * Everything runs on the agent's loop; calls to license servers are
 * asynchronous and the local API requests wait (suspended) for them.
 */
#pragma once

#include <systemd/sd-event.h>

#include "agent/agent_config.h"
#include "tsfarm/api.h"
#include "tsfarm/cleanup.h"

struct licclient;

/* Validates the configuration, loads the trusted keys and the grace state,
 * starts discovery. Logs its own errors. */
int licclient_new(sd_event *event, const struct host_config *config, struct licclient **ret);
struct licclient *licclient_free(struct licclient *lc);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct licclient *, licclient_free);

/* Adds the routes above and the licensing metrics to the local API. */
int licclient_serve(struct licclient *lc, struct tsf_api_server *api);

/* Reads the trusted-keys directory again (SIGHUP): a new license server's
 * key is trusted without a restart. */
void licclient_reload(struct licclient *lc, const struct host_config *config);
