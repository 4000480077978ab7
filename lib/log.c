/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "tsfarm/log.h"

static int max_level = LOG_INFO;
static enum tsf_log_target target = TSF_LOG_TARGET_AUTO;
static int journal_resolved = -1; /* AUTO resolved once: 1 journal, 0 stderr */
static char ident[64] = "tsfarm";

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg",     [LOG_ALERT] = "alert",   [LOG_CRIT] = "crit", [LOG_ERR] = "err",
        [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice", [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

void tsf_log_set_max_level(int level) {
        if (level >= LOG_EMERG && level <= LOG_DEBUG)
                max_level = level;
}

int tsf_log_get_max_level(void) {
        return max_level;
}

int tsf_log_level_from_string(const char *s) {
        char *end;
        long n;

        if (!s || !*s)
                return -EINVAL;
        for (int i = LOG_EMERG; i <= LOG_DEBUG; i++)
                if (strcasecmp(s, level_names[i]) == 0)
                        return i;
        if (strcasecmp(s, "error") == 0)
                return LOG_ERR;
        errno = 0;
        n = strtol(s, &end, 10);
        if (errno != 0 || *end || n < LOG_EMERG || n > LOG_DEBUG)
                return -EINVAL;
        return (int)n;
}

void tsf_log_set_target(enum tsf_log_target t) {
        target = t;
        journal_resolved = -1;
}

void tsf_log_set_ident(const char *name) {
        snprintf(ident, sizeof(ident), "%s", name ? name : "tsfarm");
}

/* systemd sets $JOURNAL_STREAM to "<dev>:<inode>" of the stream it connected
 * to stderr; if our stderr is still that stream, structured records are
 * better than lines. A redirected stderr (2>file) no longer matches. */
static int stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return 0;
        if (fstat(STDERR_FILENO, &st) < 0)
                return 0;
        return st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino;
}

static int use_journal(void) {
        switch (target) {
        case TSF_LOG_TARGET_JOURNAL:
                return 1;
        case TSF_LOG_TARGET_STDERR:
                return 0;
        case TSF_LOG_TARGET_AUTO:
        default:
                if (journal_resolved < 0)
                        journal_resolved = stderr_is_journal();
                return journal_resolved;
        }
}

void tsf_log_parse_environment(void) {
        const char *e;
        int level;

        e = getenv("TSFARM_LOG_LEVEL");
        if (e) {
                level = tsf_log_level_from_string(e);
                if (level >= 0)
                        max_level = level;
        }
        e = getenv("TSFARM_LOG_TARGET");
        if (e) {
                if (strcmp(e, "journal") == 0)
                        tsf_log_set_target(TSF_LOG_TARGET_JOURNAL);
                else if (strcmp(e, "stderr") == 0)
                        tsf_log_set_target(TSF_LOG_TARGET_STDERR);
                else if (strcmp(e, "auto") == 0)
                        tsf_log_set_target(TSF_LOG_TARGET_AUTO);
        }
}

int tsf_log_internal(int level, int error, const char *file, int line, const char *func, const char *format,
                     ...) {
        int saved_errno = errno;
        int e = error < 0 ? -error : error;
        char msg[2048];
        va_list ap;

        /* "%m" prints the error we were given, not whatever errno holds. */
        if (e != 0)
                errno = e;
        va_start(ap, format);
        vsnprintf(msg, sizeof(msg), format, ap);
        va_end(ap);

        if (use_journal()) {
                char code_file[256], code_line[32];

                snprintf(code_file, sizeof(code_file), "CODE_FILE=%s", file);
                snprintf(code_line, sizeof(code_line), "CODE_LINE=%d", line);
                if (e != 0)
                        sd_journal_send_with_location(code_file, code_line, func, "MESSAGE=%s", msg,
                                                      "PRIORITY=%d", level, "ERRNO=%d", e,
                                                      "SYSLOG_IDENTIFIER=%s", ident, NULL);
                else
                        sd_journal_send_with_location(code_file, code_line, func, "MESSAGE=%s", msg,
                                                      "PRIORITY=%d", level, "SYSLOG_IDENTIFIER=%s", ident,
                                                      NULL);
        } else {
                /* Warnings and errors say so; info reads as plain text. */
                const char *tag = level <= LOG_ERR       ? "error: "
                                  : level == LOG_WARNING ? "warning: "
                                  : level == LOG_DEBUG   ? "debug: "
                                                         : "";
                fprintf(stderr, "%s: %s%s\n", ident, tag, msg);
        }

        errno = saved_errno;
        return -e;
}
