/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The terminal server's licensing grace period (DESIGN 3, docs/licensing.md
 * "The terminal server's side"): it starts at the first client connection,
 * lasts 120 days, and ends early with the first Device CAL. Inside it a
 * device without a token is admitted when no license server answers; after
 * it, such a device is refused.
 *
 * The state lives in one small JSON file in the state directory, written
 * atomically at each change, so a restart (or a reinstall that keeps
 * /var/lib/tsfarm) does not give the host a fresh 120 days.
 */
#pragma once

#include <stdbool.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"

#define LICGRACE_PERIOD_DEFAULT (120 * USEC_PER_DAY)
#define LICGRACE_FILE_MAX 4096

enum licgrace_state {
        LICGRACE_NOT_STARTED, /* no client has connected yet */
        LICGRACE_ACTIVE,      /* started, not ended, not yet expired */
        LICGRACE_ENDED,       /* ended early: a Device CAL was issued */
        LICGRACE_EXPIRED,     /* the period ran out */
};

struct licgrace;

/* Reads `path` (a missing file: not started). -EBADMSG for a file that is
 * not ours or is damaged, -EFBIG over LICGRACE_FILE_MAX, or open()'s errno:
 * the caller refuses to guess (a lost file would hand out a new period). */
int licgrace_load(const char *path, usec_t period, struct licgrace **ret);
struct licgrace *licgrace_free(struct licgrace *g);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct licgrace *, licgrace_free);

/* A client connected at `now`: starts the period unless it started before.
 * 1 when it started now (and was written), 0 when nothing changed, or the
 * errno of writing the file (the period then runs in memory only). */
int licgrace_start(struct licgrace *g, usec_t now);
/* A Device CAL was issued at `now`: ends the period early (1), 0 if it had
 * ended already, or the errno of writing. An unstarted period is started
 * and ended at once: it never gets its 120 days. */
int licgrace_end(struct licgrace *g, usec_t now);

enum licgrace_state licgrace_state(const struct licgrace *g, usec_t now);
/* "not-started", "active", "ended", "expired". */
const char *licgrace_state_to_string(enum licgrace_state s);
/* When it started (0: not yet), when it ended early (0: not), when it runs
 * out (0: not started). */
usec_t licgrace_started(const struct licgrace *g);
usec_t licgrace_ended(const struct licgrace *g);
usec_t licgrace_deadline(const struct licgrace *g);

/* ---- what a presented token calls for -------------------------------------- */

/* A Device CAL with this much left or less is renewed (the license server
 * grants renewals from the same moment). */
#define LICENSE_RENEW_WINDOW (7 * USEC_PER_DAY)

enum license_action {
        LICENSE_ACTION_TEMPORARY, /* nothing usable presented: ask for a temporary token */
        LICENSE_ACTION_REFUSE,    /* forged, altered, another device's, unknown issuer */
        LICENSE_ACTION_CAL,       /* a valid temporary token: ask its issuer for a Device CAL */
        LICENSE_ACTION_RENEW,     /* a Device CAL in its last 7 days: ask its issuer */
        LICENSE_ACTION_NONE,      /* a Device CAL with more left: keep it */
};

/* The one rule of docs/licensing.md's table, from the offline verdict
 * (enum tsf_lic_verdict; has_token false: nothing presented), the token's
 * kind (enum tsf_lic_kind) and expiry, at `now`. */
enum license_action license_action_for(bool has_token, int verdict, int kind, usec_t expires, usec_t now);
/* "obtain-temporary", "refuse", "request-cal", "renew", "none". */
const char *license_action_to_string(enum license_action a);
