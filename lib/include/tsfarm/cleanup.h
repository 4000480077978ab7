/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Scope-bound cleanup, systemd style: a variable declared with one of these
 * attributes is released when it goes out of scope, on every path.
 * TAKE_PTR()/TAKE_FD() hand ownership on and leave the variable empty.
 */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

/* Defines `static inline void fnp(type *p)` that calls `fn(*p)` if set. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, fn) \
        static inline void fn##p(type *p) {   \
                if (*p)                       \
                        fn(*p);               \
        }                                     \
        struct __useless_struct_to_allow_trailing_semicolon__

static inline void freep(void *p) {
        free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

/* Closes fd, preserving errno; returns -1 so `fd = safe_close(fd)` resets. */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                close(fd);
                errno = saved;
        }
        return -1;
}
static inline void closep(int *fd) {
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}
#define _cleanup_fclose_ _cleanup_(fclosep)

#define TAKE_PTR(p)                             \
        ({                                      \
                __typeof__(p) _take_ptr_ = (p); \
                (p) = NULL;                     \
                _take_ptr_;                     \
        })
#define TAKE_FD(fd)                   \
        ({                            \
                int _take_fd_ = (fd); \
                (fd) = -1;            \
                _take_fd_;            \
        })
