/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The host role (DESIGN 2.1): runs on every terminal-server host. It owns
 * the pinned BPF maps and programs (datapath.h), the gateway (gateway.h)
 * and the kernel plumbing (addrs.h, sockdiag.h), and decides where a
 * connection that needs a decision goes.
 */
#pragma once

#include "agent/manager.h"

extern const struct tsagent_role_ops host_role_ops;

struct gateway_request;
struct gateway_decision;
struct host;

/* The steering decision, exposed for tests: routing token, then mstshash
 * cookie through the sessions map, then client affinity, then placement. */
int host_decide(struct host *h, const struct gateway_request *req, struct gateway_decision *out);
