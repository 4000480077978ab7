/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "tsfarm/clock.h"
#include "tsfarm/macro.h"

static usec_t system_now(const struct tsf_clock *c, clockid_t clock) {
        struct timespec ts;

        if (clock_gettime(clock, &ts) < 0)
                return 0; /* only with an invalid clockid: a programming error */
        return (usec_t)ts.tv_sec * USEC_PER_SEC + (usec_t)ts.tv_nsec / 1000;
}

const struct tsf_clock tsf_clock_system = {.now = system_now};

static const struct tsf_clock *current_clock = &tsf_clock_system;

void tsf_clock_install(const struct tsf_clock *c) {
        current_clock = c ? c : &tsf_clock_system;
}

const struct tsf_clock *tsf_clock_current(void) {
        return current_clock;
}

usec_t tsf_now(clockid_t clock) {
        return current_clock->now(current_clock, clock);
}

static usec_t fake_now(const struct tsf_clock *c, clockid_t clock) {
        const struct tsf_fake_clock *f = (const struct tsf_fake_clock *)c;

        return clock == CLOCK_REALTIME ? f->realtime : f->monotonic;
}

void tsf_fake_clock_init(struct tsf_fake_clock *f, usec_t realtime, usec_t monotonic) {
        *f = (struct tsf_fake_clock){
                .base.now = fake_now,
                .realtime = realtime,
                .monotonic = monotonic,
        };
}

void tsf_fake_clock_advance(struct tsf_fake_clock *f, usec_t delta) {
        f->realtime += delta;
        f->monotonic += delta;
}

char *tsf_format_timestamp(usec_t t, char *buf, size_t size) {
        time_t sec = (time_t)(t / USEC_PER_SEC);
        struct tm tm;

        if (!gmtime_r(&sec, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
                if (size > 0)
                        buf[0] = '\0';
        }
        return buf;
}

static const struct {
        const char *suffix;
        usec_t usec;
} duration_units[] = {
        /* Longest first so "ms" is not read as "m" + garbage. */
        {"usec", 1},           {"msec", USEC_PER_MSEC}, {"min", USEC_PER_MINUTE}, {"us", 1},
        {"ms", USEC_PER_MSEC}, {"s", USEC_PER_SEC},     {"m", USEC_PER_MINUTE},   {"h", USEC_PER_HOUR},
        {"d", USEC_PER_DAY},   {"w", 7 * USEC_PER_DAY},
};

int tsf_parse_duration(const char *s, usec_t *ret) {
        usec_t total = 0;
        bool any = false;

        if (!s)
                return -EINVAL;
        while (isspace((unsigned char)*s))
                s++;
        while (*s) {
                usec_t value = 0, unit = USEC_PER_SEC;
                const char *digits = s;
                size_t i;

                while (isdigit((unsigned char)*s)) {
                        if (value > (UINT64_MAX - 9) / 10)
                                return -ERANGE;
                        value = value * 10 + (usec_t)(*s - '0');
                        s++;
                }
                if (s == digits)
                        return -EINVAL;
                while (isspace((unsigned char)*s))
                        s++;
                for (i = 0; i < ELEMENTSOF(duration_units); i++) {
                        size_t n = strlen(duration_units[i].suffix);

                        if (strncmp(s, duration_units[i].suffix, n) == 0 && !isalpha((unsigned char)s[n])) {
                                unit = duration_units[i].usec;
                                s += n;
                                break;
                        }
                }
                if (i == ELEMENTSOF(duration_units) && isalpha((unsigned char)*s))
                        return -EINVAL;
                /* A bare number is seconds, but only alone: "5 3" is a typo. */
                if (i == ELEMENTSOF(duration_units) && (any || *s))
                        return -EINVAL;
                if (value > UINT64_MAX / unit || total > UINT64_MAX - value * unit)
                        return -ERANGE;
                total += value * unit;
                any = true;
                while (isspace((unsigned char)*s))
                        s++;
        }
        if (!any)
                return -EINVAL;
        *ret = total;
        return 0;
}
