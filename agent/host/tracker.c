/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "agent/host/tracker.h"
#include "tsfarm/list.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

struct tracked {
        struct tracker *tracker;
        struct tracked *prev, *next;
        char *user_key;
        uint32_t session_id;
        uint32_t client_be;
        bool disconnected;
        unsigned connections;
        sd_event_source *grace; /* armed while no connection is left */
};

struct tracker {
        sd_event *event;
        usec_t grace;
        tracker_lookup_fn lookup;
        tracker_report_fn report;
        void *userdata;
        struct tracked *first;
};

static struct tracked *find(const struct tracker *t, const char *user_key) {
        for (struct tracked *s = t->first; s; s = s->next)
                if (strcmp(s->user_key, user_key) == 0)
                        return s;
        return NULL;
}

static void tracked_free(struct tracked *s) {
        struct tracker *t = s->tracker;

        LIST_REMOVE(t->first, s);
        sd_event_source_disable_unref(s->grace);
        free(s->user_key);
        free(s);
}

/* Session ids this node makes up for its RDP server: random, so that an
 * agent restart never reuses one the directory still holds. */
static uint32_t new_session_id(void) {
        uint32_t id = 0;

        while (id == 0)
                if (getrandom(&id, sizeof(id), 0) != sizeof(id))
                        id = (uint32_t)tsf_now_monotonic();
        return id & 0x7fffffff ? id & 0x7fffffff : 1;
}

int tracker_new(sd_event *e, usec_t grace, tracker_lookup_fn lookup, tracker_report_fn report,
                void *userdata, struct tracker **ret) {
        struct tracker *t = calloc(1, sizeof(*t));

        if (!t)
                return -ENOMEM;
        t->event = sd_event_ref(e);
        t->grace = grace;
        t->lookup = lookup;
        t->report = report;
        t->userdata = userdata;
        *ret = t;
        return 0;
}

struct tracker *tracker_free(struct tracker *t) {
        if (!t)
                return NULL;
        while (t->first)
                tracked_free(t->first);
        sd_event_unref(t->event);
        free(t);
        return NULL;
}

void tracker_set_grace(struct tracker *t, usec_t grace) {
        t->grace = grace;
}

int tracker_open(struct tracker *t, const char *user_key, uint32_t client_be) {
        struct tracked *s = find(t, user_key);
        uint32_t id;
        bool disconnected;

        if (!s) {
                s = calloc(1, sizeof(*s));
                if (!s || !(s->user_key = strdup(user_key))) {
                        free(s);
                        return -ENOMEM;
                }
                s->tracker = t;
                LIST_PREPEND(t->first, s);
                s->client_be = client_be;
                /* A session the directory already has here (an agent restart
                 * in between) is the one the user comes back to. */
                if (t->lookup(t->userdata, user_key, &id, &disconnected) == 0) {
                        s->session_id = id;
                        s->disconnected = disconnected;
                } else {
                        s->session_id = new_session_id();
                        log_info("Session %u of %s began on this node (seen by connection tracking).",
                                 s->session_id, user_key);
                        t->report(t->userdata, "logon", user_key, s->session_id, client_be);
                }
        }
        s->grace = sd_event_source_disable_unref(s->grace);
        s->client_be = client_be;
        if (s->disconnected) {
                s->disconnected = false;
                log_info("Session %u of %s reconnected.", s->session_id, user_key);
                t->report(t->userdata, "reconnect", user_key, s->session_id, client_be);
        }
        s->connections++;
        return 0;
}

static int on_grace(sd_event_source *src, uint64_t usec, void *userdata) {
        struct tracked *s = userdata;
        struct tracker *t = s->tracker;

        s->grace = sd_event_source_disable_unref(s->grace);
        if (s->connections > 0 || s->disconnected)
                return 0;
        s->disconnected = true;
        log_info("Session %u of %s disconnected: its client is gone.", s->session_id, s->user_key);
        t->report(t->userdata, "disconnect", s->user_key, s->session_id, s->client_be);
        return 0;
}

void tracker_close(struct tracker *t, const char *user_key) {
        struct tracked *s = find(t, user_key);
        int r;

        if (!s || s->connections == 0)
                return;
        if (--s->connections > 0 || s->disconnected)
                return;
        r = sd_event_add_time_relative(t->event, &s->grace, CLOCK_MONOTONIC, t->grace, USEC_PER_MSEC,
                                       on_grace, s);
        if (r < 0) {
                log_warning_errno(r, "Failed to arm the disconnect timer of %s, reporting now: %m",
                                  user_key);
                on_grace(NULL, 0, s);
        }
}

void tracker_session_ended(struct tracker *t, const char *user_key, uint32_t session_id, bool lost) {
        struct tracked *s = find(t, user_key);

        if (!s || s->session_id != session_id)
                return;
        if (lost) {
                /* The directory marked this node down (a partition, a
                 * stalled agent), but the RDP server still holds the
                 * session: say again what it is, so the user is sent back
                 * to it rather than given a new one elsewhere. */
                log_info("The directory lost session %u of %s, which this node still holds: reporting it "
                         "%s.",
                         session_id, user_key, s->connections > 0 ? "active" : "disconnected");
                t->report(t->userdata, s->connections > 0 ? "reconnect" : "disconnect", user_key,
                          s->session_id, s->client_be);
                s->disconnected = s->connections == 0;
                return;
        }
        tracked_free(s);
}

int tracker_foreach(const struct tracker *t, tracker_session_fn fn, void *userdata) {
        for (const struct tracked *s = t->first; s; s = s->next) {
                struct tracker_session v = {
                        .user_key = s->user_key,
                        .session_id = s->session_id,
                        .disconnected = s->disconnected,
                        .connections = s->connections,
                };
                int r = fn(&v, userdata);

                if (r < 0)
                        return r;
        }
        return 0;
}
