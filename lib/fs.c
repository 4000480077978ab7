/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

int tsf_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode, bool force) {
        char tmp[PATH_MAX];
        _cleanup_close_ int fd = -1;
        const char *p = data;
        int r;

        if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp))
                return -ENAMETOOLONG;
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        /* mkostemp makes 0600 (certificates are for everyone to read);
         * fchmod sets exactly `mode`, whatever the umask says. */
        if (fchmod(fd, mode) < 0) {
                r = negative_errno();
                goto fail;
        }
        while (len > 0) {
                ssize_t n = write(fd, p, len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        goto fail;
                }
                p += n;
                len -= (size_t)n;
        }
        /* Before the rename: else a crash can leave an empty file in place. */
        if (fsync(fd) < 0) {
                r = negative_errno();
                goto fail;
        }
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, force ? 0 : RENAME_NOREPLACE) < 0) {
                r = negative_errno();
                goto fail;
        }
        return 0;
fail:
        (void)unlink(tmp);
        return r;
}
