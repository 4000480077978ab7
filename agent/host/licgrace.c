/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "agent/host/licgrace.h"
#include "tsfarm/lictoken.h"
#include "tsfarm/fs.h"
#include "tsfarm/macro.h"

#define LICGRACE_VERSION 1

struct licgrace {
        char *path;
        usec_t period;
        usec_t started; /* 0: not started */
        usec_t ended;   /* 0: not ended early */
};

static int read_small_file(const char *path, char *buf, size_t size, size_t *ret_len) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        size_t len = 0;
        ssize_t n;

        if (fd < 0)
                return -errno;
        while ((n = read(fd, buf + len, size - len)) > 0) {
                len += (size_t)n;
                if (len == size) {
                        close(fd);
                        return -EFBIG;
                }
        }
        if (n < 0) {
                int r = -errno;

                close(fd);
                return r;
        }
        close(fd);
        *ret_len = len;
        return 0;
}

/* A time field: a non-negative integer, or null/absent for 0. */
static int time_field(json_t *o, const char *key, usec_t *ret) {
        json_t *v = json_object_get(o, key);

        if (!v || json_is_null(v)) {
                *ret = 0;
                return 0;
        }
        if (!json_is_integer(v) || json_integer_value(v) <= 0)
                return -EBADMSG;
        *ret = (usec_t)json_integer_value(v);
        return 0;
}

static int parse(struct licgrace *g, const char *text, size_t len) {
        _cleanup_(json_decrefp) json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
        json_t *version;

        if (!json_is_object(o))
                return -EBADMSG;
        version = json_object_get(o, "version");
        if (!json_is_integer(version) || json_integer_value(version) != LICGRACE_VERSION)
                return -EBADMSG;
        if (time_field(o, "started_usec", &g->started) < 0 || time_field(o, "ended_usec", &g->ended) < 0)
                return -EBADMSG;
        /* Ended without having started, or before it started: not ours. */
        if ((g->ended && !g->started) || (g->ended && g->ended < g->started))
                return -EBADMSG;
        return 0;
}

int licgrace_load(const char *path, usec_t period, struct licgrace **ret) {
        _cleanup_(licgrace_freep) struct licgrace *g = NULL;
        char buf[LICGRACE_FILE_MAX];
        size_t len = 0;
        int r;

        if (!path || period == 0 || !ret)
                return -EINVAL;
        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->period = period;
        g->path = strdup(path);
        if (!g->path)
                return -ENOMEM;
        r = read_small_file(path, buf, sizeof(buf), &len);
        if (r < 0 && r != -ENOENT)
                return r;
        if (r >= 0) {
                r = parse(g, buf, len);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(g);
        return 0;
}

struct licgrace *licgrace_free(struct licgrace *g) {
        if (g) {
                free(g->path);
                free(g);
        }
        return NULL;
}

static int save(const struct licgrace *g) {
        _cleanup_(json_decrefp) json_t *o = NULL;
        _cleanup_free_ char *text = NULL;
        int r;

        o = json_pack("{s:i, s:o, s:o}", "version", LICGRACE_VERSION, "started_usec",
                      g->started ? json_integer((json_int_t)g->started) : json_null(), "ended_usec",
                      g->ended ? json_integer((json_int_t)g->ended) : json_null());
        if (!o)
                return -ENOMEM;
        text = json_dumps(o, JSON_COMPACT);
        if (!text)
                return -ENOMEM;
        r = tsf_mkdir_parent(g->path, 0755);
        if (r < 0)
                return r;
        /* One line with a newline: an operator may cat it. */
        {
                size_t n = strlen(text);
                _cleanup_free_ char *line = malloc(n + 2);

                if (!line)
                        return -ENOMEM;
                memcpy(line, text, n);
                line[n] = '\n';
                line[n + 1] = '\0';
                return tsf_write_file_atomic(g->path, line, n + 1, 0644, true);
        }
}

int licgrace_start(struct licgrace *g, usec_t now) {
        int r;

        if (g->started)
                return 0;
        g->started = now ? now : 1;
        r = save(g);
        return r < 0 ? r : 1;
}

int licgrace_end(struct licgrace *g, usec_t now) {
        int r;

        if (g->ended)
                return 0;
        if (!g->started)
                g->started = now ? now : 1;
        g->ended = now < g->started ? g->started : now;
        r = save(g);
        return r < 0 ? r : 1;
}

enum licgrace_state licgrace_state(const struct licgrace *g, usec_t now) {
        if (!g->started)
                return LICGRACE_NOT_STARTED;
        if (g->ended)
                return LICGRACE_ENDED;
        if (now >= licgrace_deadline(g))
                return LICGRACE_EXPIRED;
        return LICGRACE_ACTIVE;
}

const char *licgrace_state_to_string(enum licgrace_state s) {
        static const char *const names[] = {
                [LICGRACE_NOT_STARTED] = "not-started",
                [LICGRACE_ACTIVE] = "active",
                [LICGRACE_ENDED] = "ended",
                [LICGRACE_EXPIRED] = "expired",
        };

        return (unsigned)s < ELEMENTSOF(names) ? names[s] : NULL;
}

usec_t licgrace_started(const struct licgrace *g) {
        return g->started;
}

usec_t licgrace_ended(const struct licgrace *g) {
        return g->ended;
}

usec_t licgrace_deadline(const struct licgrace *g) {
        if (!g->started)
                return 0;
        return g->started > USEC_INFINITY - g->period ? USEC_INFINITY : g->started + g->period;
}

enum license_action license_action_for(bool has_token, int verdict, int kind, usec_t expires, usec_t now) {
        /* An expired token is the normal end of one (docs/decisions.md): the
         * device starts again as one without. */
        if (!has_token || verdict == TSF_LIC_VERDICT_EXPIRED)
                return LICENSE_ACTION_TEMPORARY;
        if (verdict != TSF_LIC_VERDICT_OK)
                return LICENSE_ACTION_REFUSE;
        if (kind == TSF_LIC_TEMPORARY)
                return LICENSE_ACTION_CAL;
        /* OK means now < expires. */
        return expires - now <= LICENSE_RENEW_WINDOW ? LICENSE_ACTION_RENEW : LICENSE_ACTION_NONE;
}

const char *license_action_to_string(enum license_action a) {
        static const char *const names[] = {
                [LICENSE_ACTION_TEMPORARY] = "obtain-temporary",
                [LICENSE_ACTION_REFUSE] = "refuse",
                [LICENSE_ACTION_CAL] = "request-cal",
                [LICENSE_ACTION_RENEW] = "renew",
                [LICENSE_ACTION_NONE] = "none",
        };

        return (unsigned)a < ELEMENTSOF(names) ? names[a] : NULL;
}
