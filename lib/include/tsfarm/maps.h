/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reading and writing the pinned maps of bpf/abi/tsfarm_abi.h from user
 * space: shared by the agent (which owns the pins) and tsctl (which opens
 * them, read-only where it only looks).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bpf/abi/tsfarm_abi.h"

/* Opens TSF map `name` pinned under `pin_root` (NULL: TSF_PIN_ROOT).
 * Returns an fd or a negative errno (-ENOENT: no agent has pinned it). */
int tsf_map_open_pinned(const char *pin_root, const char *name, bool read_only);

/* The counters of struct tsf_stats, in order: names for tables and JSON. */
#define TSF_STATS_COUNT (sizeof(struct tsf_stats) / sizeof(__u64))
extern const char *const tsf_stat_names[];

/* Sums the per-CPU copies of the stats map. */
int tsf_stats_read(int stats_fd, struct tsf_stats *ret);

/* Builds the sessions map key for a folded user name. */
void tsf_session_key_from_user(struct tsf_session_key *k, const char *user);

/* Formats a session key for display: the name, or "<prefix>…#<hash>" for
 * the long form. */
void tsf_session_key_format(const struct tsf_session_key *k, char *buf, size_t size);
