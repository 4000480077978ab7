/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Small file-system helpers. */
#pragma once

#include <sys/types.h>

/* Makes the directory that will hold `path` (one level: its own parent is
 * the system's business, e.g. /run). 0 if it exists already. */
int tsf_mkdir_parent(const char *path, mode_t mode);
