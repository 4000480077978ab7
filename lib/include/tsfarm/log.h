/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Logging. Under systemd (stderr connected to the journal, as $JOURNAL_STREAM
 * says) records go to journald with structured fields (PRIORITY, ERRNO,
 * CODE_FILE/LINE/FUNC, TSFARM_COMPONENT); otherwise one line on stderr.
 *
 * Conventions (systemd's): an error is logged once, where it is handled;
 * library code logs at debug level only; log_*_errno(r, ...) logs with
 * errno = -r (so "%m" prints the error) and returns r, which is always
 * negative: `return log_error_errno(r, "Failed to open %s: %m", path);`.
 */
#pragma once

#include <stdarg.h>
#include <syslog.h>

#include "tsfarm/macro.h"

enum tsf_log_target {
        TSF_LOG_TARGET_AUTO = 0, /* journal if $JOURNAL_STREAM matches stderr, else stderr */
        TSF_LOG_TARGET_STDERR,
        TSF_LOG_TARGET_JOURNAL,
};

/* Maximum level printed (LOG_ERR .. LOG_DEBUG); default LOG_INFO, or
 * $TSFARM_LOG_LEVEL ("debug", "info", ... or a number). */
void tsf_log_set_max_level(int level);
int tsf_log_get_max_level(void);
/* Parses "emerg".."debug" or 0..7; returns the level or -EINVAL. */
int tsf_log_level_from_string(const char *s);
void tsf_log_set_target(enum tsf_log_target t);
/* Name shown before messages on stderr and as SYSLOG_IDENTIFIER. */
void tsf_log_set_ident(const char *ident);
/* Reads $TSFARM_LOG_LEVEL and $TSFARM_LOG_TARGET ("stderr"/"journal"/"auto"). */
void tsf_log_parse_environment(void);

/* Returns -abs(error) if error != 0, else 0. */
int tsf_log_internal(int level, int error, const char *file, int line, const char *func, const char *format,
                     ...) _printf_(6, 7);

#define tsf_log_full_errno(level, error, ...)                                                       \
        ({                                                                                          \
                int _level_ = (level), _e_ = (error);                                               \
                (tsf_log_get_max_level() >= _level_)                                                \
                        ? tsf_log_internal(_level_, _e_, __FILE__, __LINE__, __func__, __VA_ARGS__) \
                        : -((_e_) < 0 ? -(_e_) : (_e_));                                            \
        })

#define log_debug(...) ((void)tsf_log_full_errno(LOG_DEBUG, 0, __VA_ARGS__))
#define log_info(...) ((void)tsf_log_full_errno(LOG_INFO, 0, __VA_ARGS__))
#define log_notice(...) ((void)tsf_log_full_errno(LOG_NOTICE, 0, __VA_ARGS__))
#define log_warning(...) ((void)tsf_log_full_errno(LOG_WARNING, 0, __VA_ARGS__))
#define log_error(...) ((void)tsf_log_full_errno(LOG_ERR, 0, __VA_ARGS__))

/* These return the (negative) error so they can end a function. */
#define log_debug_errno(e, ...) tsf_log_full_errno(LOG_DEBUG, e, __VA_ARGS__)
#define log_info_errno(e, ...) tsf_log_full_errno(LOG_INFO, e, __VA_ARGS__)
#define log_notice_errno(e, ...) tsf_log_full_errno(LOG_NOTICE, e, __VA_ARGS__)
#define log_warning_errno(e, ...) tsf_log_full_errno(LOG_WARNING, e, __VA_ARGS__)
#define log_error_errno(e, ...) tsf_log_full_errno(LOG_ERR, e, __VA_ARGS__)

/* For "out of memory", which is logged the same way everywhere. */
#define log_oom() log_error_errno(-ENOMEM, "Out of memory.")
