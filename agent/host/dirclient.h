/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The host role follows the directory: a worker thread registers this
 * node, heartbeats, and applies the directory's change feed to the BPF
 * sessions map. A thread, because the API client (lib/api_client) is
 * synchronous libcurl and must never block the event loop.
 *
 * Thread-safety: the worker copies what it needs from the configuration at
 * start and afterwards touches only its own state and the sessions map
 * (plain bpf syscalls through the datapath, which outlives it).
 */
#pragma once

#include "agent/agent_config.h"
#include "agent/host/datapath.h"
#include "tsfarm/cleanup.h"

struct dirclient;

/* Starts following c->host.directory from node `self`. */
int dirclient_start(const struct tsagent_config *c, const struct host_node_config *self, struct datapath *d,
                    struct dirclient **ret);
/* Stops the worker (promptly: its waits are at most about a second) and
 * joins it. The sessions map keeps what it last wrote. */
struct dirclient *dirclient_free(struct dirclient *dc);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct dirclient *, dirclient_free);
