/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Small file-system helpers. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Makes the directory that will hold `path` (one level: its own parent is
 * the system's business, e.g. /run). 0 if it exists already. */
int tsf_mkdir_parent(const char *path, mode_t mode);

/* Writes data to a temporary file beside `path` with exactly `mode`, syncs
 * it, then moves it into place: atomically over an old file when `force`,
 * else only if there is none (-EEXIST; RENAME_NOREPLACE, so two racing
 * writers cannot replace each other's file). A reader sees the old file or
 * the whole new one, never half of it; on failure nothing is left behind. */
int tsf_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, bool force);
