/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/fs.h"
#include "tsfarm/macro.h"

int tsf_mkdir_parent(const char *path, mode_t mode) {
        _cleanup_free_ char *copy = strdup(path);

        if (!copy)
                return -ENOMEM;
        if (mkdir(dirname(copy), mode) < 0 && errno != EEXIST)
                return negative_errno();
        return 0;
}
