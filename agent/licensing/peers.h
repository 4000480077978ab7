/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The license server's peers (docs/licensing.md, "Borrowing"): the other
 * license servers of the farm, configured ([licensing] peers) or learnt
 * from their multicast announcements, whose GET /v1/inventory is read
 * every inventory-refresh over mutual TLS; the announcer that makes this
 * server known; and borrowing: asking, in order, the peers whose last
 * inventory shows a CAL available to lend one (POST /v1/licenses/lend).
 *
 * Everything runs on the role's sd-event loop. Errors are logged here only
 * at start (lic_peers_start); the rest is logged once per change of a
 * peer's state (reachable or not), never per call.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <systemd/sd-event.h>

#include "agent/agent_config.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"

struct lic_peers;
struct lic_borrow;

struct lic_peers_setup {
        sd_event *event;
        const struct licensing_config *config; /* must outlive the peers */
        const char *node_name;                 /* announced; our certificate's CN */
        const uint8_t *key_id;                 /* the signing key's id, 32 bytes */
        uint16_t port;                         /* the TLS listener's port; 0: none (no peers) */
};

int lic_peers_new(const struct lic_peers_setup *setup, struct lic_peers **ret);
/* Announces (announce = yes), listens (discover-peers = yes), reads the
 * configured peers' inventories. A multicast set-up that fails is a
 * warning, not a failure; a discovery-interface that does not exist is. */
int lic_peers_start(struct lic_peers *p);
/* Cancels borrows in flight (their callbacks do not run). */
struct lic_peers *lic_peers_free(struct lic_peers *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct lic_peers *, lic_peers_free);

/* Whether `name`, an authenticated client's certificate CN, is a peer
 * license server: the name a configured or announced peer gave in its
 * inventory, or the name a peer announced by multicast. */
bool lic_peers_is_peer(const struct lic_peers *p, const char *name);

/* Peers known (not ourselves), and those whose last inventory call
 * succeeded. */
unsigned lic_peers_known(const struct lic_peers *p);
unsigned lic_peers_reachable(const struct lic_peers *p);

/* {peers: [...]} for GET /v1/peers; NULL when out of memory. */
json_t *lic_peers_to_json(const struct lic_peers *p);

/* A finished borrow: r = 0 and the lender's answer (a token answer plus
 * "lender", borrowed: take a reference to keep it), or -ENOSPC when no
 * peer lent one (`why` says what the last one said). */
typedef void (*lic_borrow_done_t)(int r, json_t *answer, const char *lender, const char *why,
                                  void *userdata);

/* Asks the peers whose last inventory shows a CAL available (of
 * product_version, when given), in order, to lend one to the device
 * described by `request` ({hardware_id, device_name, user_name,
 * product_version?}; hardware_id/len for checking the answer). -ENOSPC at
 * once when no peer qualifies; else 0, `done` runs later from the loop,
 * and *ret_deadline says how long it may take at most. */
int lic_peers_borrow(struct lic_peers *p, json_t *request, const uint8_t *hardware_id,
                     size_t hardware_id_len, const char *product_version, lic_borrow_done_t done,
                     void *userdata, struct lic_borrow **ret, usec_t *ret_deadline);
/* Abandons a borrow in flight; its callback does not run. */
void lic_borrow_cancel(struct lic_borrow *b);
