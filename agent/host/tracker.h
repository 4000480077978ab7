/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Sessions of an RDP server that reports nothing (xrdp), inferred from its
 * connections (DESIGN 2.1, "Tracking"): the first connection of a user is
 * a logon (or the reconnect of the session this node already holds for
 * them), and when the last one has been gone for the grace period, the
 * client vanished: the session is disconnected. Logoffs cannot be seen
 * this way; they come from the local API or the operator.
 *
 * The tracker only counts and times; the host says which connections are
 * whose, and where the reports go.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"

struct tracker;

/* The session this node holds for user_key according to the directory's
 * mirror: 0 with *ret_session_id and *ret_disconnected, or -ENOENT. */
typedef int (*tracker_lookup_fn)(void *userdata, const char *user_key, uint32_t *ret_session_id,
                                 bool *ret_disconnected);
/* An event for the directory: "logon", "reconnect", "disconnect". */
typedef void (*tracker_report_fn)(void *userdata, const char *event, const char *user_key,
                                  uint32_t session_id, uint32_t client_be);

int tracker_new(sd_event *e, usec_t grace, tracker_lookup_fn lookup, tracker_report_fn report,
                void *userdata, struct tracker **ret);
struct tracker *tracker_free(struct tracker *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tracker *, tracker_free);

void tracker_set_grace(struct tracker *t, usec_t grace);

/* A connection of user_key reached the local RDP server / went away. */
int tracker_open(struct tracker *t, const char *user_key, uint32_t client_be);
void tracker_close(struct tracker *t, const char *user_key);

/* The directory ended (logoff: forgotten here) or lost (this node was
 * marked down) session session_id of user_key on this node. A lost
 * session is still held by the RDP server: it is reported again as it is
 * (reconnect with connections up, else disconnect). */
void tracker_session_ended(struct tracker *t, const char *user_key, uint32_t session_id, bool lost);

struct tracker_session {
        const char *user_key;
        uint32_t session_id;
        bool disconnected;
        unsigned connections;
};
typedef int (*tracker_session_fn)(const struct tracker_session *s, void *userdata);
int tracker_foreach(const struct tracker *t, tracker_session_fn fn, void *userdata);
