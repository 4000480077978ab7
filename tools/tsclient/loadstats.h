/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The load generator's accounting, apart from its threads so that the
 * unit tests can check that the summary adds up:
 *
 *   connections = succeeded + failed = sum over operations
 *   failed      = sum over failure outcomes
 *   connections = sum over license classes ("not-reached" included)
 *   succeeded   = new sessions + reattached sessions = latencies recorded
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "tsclient.h"

enum tsc_load_op {
        TSC_LOAD_CONNECT = 0, /* log on, DISCONNECT: the session stays */
        TSC_LOAD_DISCONNECT,  /* log on, drop the connection: the session stays */
        TSC_LOAD_RECONNECT,   /* log on as the device's last user (its reconnect cookie), DISCONNECT */
        TSC_LOAD_LOGOFF,      /* log on, LOGOFF: the session ends */
        _TSC_LOAD_OP_MAX,
};

enum tsc_load_license {
        TSC_LOAD_LIC_NOT_REACHED = 0, /* the attempt failed before LICENSE_RESPONSE */
        TSC_LOAD_LIC_TEMPORARY,       /* new-license with a temporary token */
        TSC_LOAD_LIC_CAL,             /* new-license or upgrade with a Device CAL */
        TSC_LOAD_LIC_VALID,           /* what the device held was accepted */
        TSC_LOAD_LIC_REFUSED,         /* LICENSE_RESPONSE error */
        TSC_LOAD_LIC_UNKNOWN,         /* a token this client cannot read */
        _TSC_LOAD_LIC_MAX,
};

struct tsc_load_mix {
        unsigned weight[_TSC_LOAD_OP_MAX];
        unsigned total;
};

struct tsc_load_stats {
        uint64_t connections;
        uint64_t succeeded, failed;
        uint64_t ops[_TSC_LOAD_OP_MAX];
        uint64_t op_failed[_TSC_LOAD_OP_MAX];
        uint64_t failures[_TSC_OUTCOME_MAX]; /* by outcome; [TSC_OK] stays 0 */
        uint64_t license[_TSC_LOAD_LIC_MAX];
        uint64_t sessions_new, sessions_reattached;
        uint64_t redirects;
        uint64_t skipped_busy; /* a slot found every device busy: no connection made */
        usec_t *latency;       /* one per success: first connect to LOGON_RESULT ok */
        size_t n_latency, latency_cap;
};

const char *tsc_load_op_to_string(enum tsc_load_op op);
const char *tsc_load_license_to_string(enum tsc_load_license l);

/* "connect=60,disconnect=20,reconnect=10,logoff=10": every name at most
 * once, weights 0..1000000, at least one above 0; names left out weigh 0.
 * -EINVAL otherwise. */
int tsc_load_mix_parse(const char *s, struct tsc_load_mix *ret);
/* The operation for a number r in [0, total). */
enum tsc_load_op tsc_load_mix_pick(const struct tsc_load_mix *m, unsigned r);

/* The license class of a result. */
enum tsc_load_license tsc_load_license_of(const struct tsc_result *res);

/* Counts one connection attempt (res->outcome TSC_OK: a success). -ENOMEM
 * if its latency could not be kept (nothing is counted then). */
int tsc_load_stats_record(struct tsc_load_stats *s, enum tsc_load_op op, const struct tsc_result *res);
/* 0 when the identities above hold, -EBADMSG when one does not. */
int tsc_load_stats_check(const struct tsc_load_stats *s);
/* The p-th percentile (0 < p <= 100, nearest rank) of the latencies; 0
 * when there are none. Sorts them. */
usec_t tsc_load_stats_percentile(struct tsc_load_stats *s, double p);
void tsc_load_stats_done(struct tsc_load_stats *s);

/* The summary: a table for people, or one JSON object. */
void tsc_load_stats_print(FILE *f, struct tsc_load_stats *s, bool json, usec_t elapsed, unsigned devices,
                          unsigned users);
