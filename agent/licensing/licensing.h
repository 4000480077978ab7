/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The licensing role, a license server (DESIGN 2.3 and 3): the license store
 * (store.h) served over the role-to-role API (tsfarm/api.h) to the farm's
 * terminal servers, with mutual TLS, and to local operators over a UNIX
 * socket; tokens signed with the server's Ed25519 key (tsfarm/lictoken.h).
 * docs/licensing.md, "The API", is the contract.
 */
#pragma once

#include "agent/manager.h"

extern const struct tsagent_role_ops licensing_role_ops;
