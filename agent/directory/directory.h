/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The directory role (DESIGN 2.2): the store (store.h) served over the
 * role-to-role API (tsfarm/api.h) to the farm's nodes, with mutual TLS,
 * and to local operators over a UNIX socket. docs/directory.md, "The API",
 * is the contract.
 */
#pragma once

#include "agent/manager.h"

extern const struct tsagent_role_ops directory_role_ops;
