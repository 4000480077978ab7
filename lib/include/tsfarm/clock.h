/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one place that says what time it is. Everything that stores or
 * compares wall-clock times (token expiry, grace periods, heartbeats) asks
 * tsf_now(); tests install a fake clock and jump 90 days in a line.
 * Whole-process tests use faketime(1) instead, which this honours because
 * the real clock is clock_gettime().
 */
#pragma once

#include <stdint.h>
#include <time.h>

typedef uint64_t usec_t;

#define USEC_PER_MSEC ((usec_t)1000ULL)
#define USEC_PER_SEC ((usec_t)1000000ULL)
#define USEC_PER_MINUTE (60 * USEC_PER_SEC)
#define USEC_PER_HOUR (60 * USEC_PER_MINUTE)
#define USEC_PER_DAY (24 * USEC_PER_HOUR)
#define USEC_INFINITY ((usec_t)UINT64_MAX)

struct tsf_clock {
        /* Returns microseconds on `clock` (CLOCK_REALTIME or CLOCK_MONOTONIC
         * or CLOCK_BOOTTIME). */
        usec_t (*now)(const struct tsf_clock *c, clockid_t clock);
};

/* The real clock: clock_gettime(). */
extern const struct tsf_clock tsf_clock_system;

/* A clock that stands still until told to move. Both timelines move
 * together, so deadlines computed on the monotonic clock see the jump. */
struct tsf_fake_clock {
        struct tsf_clock base;
        usec_t realtime;
        usec_t monotonic;
};

/* Installs `c` as the process clock (NULL restores the system clock).
 * Not thread-safe by design: set it before starting threads. */
void tsf_clock_install(const struct tsf_clock *c);
const struct tsf_clock *tsf_clock_current(void);

usec_t tsf_now(clockid_t clock);
static inline usec_t tsf_now_realtime(void) {
        return tsf_now(CLOCK_REALTIME);
}
static inline usec_t tsf_now_monotonic(void) {
        return tsf_now(CLOCK_MONOTONIC);
}

void tsf_fake_clock_init(struct tsf_fake_clock *f, usec_t realtime, usec_t monotonic);
void tsf_fake_clock_advance(struct tsf_fake_clock *f, usec_t delta);

/* Formats `t` (CLOCK_REALTIME usec) as UTC "2026-11-23T20:10:00Z" into buf
 * (at least TSF_TIMESTAMP_MAX bytes). Returns buf. */
#define TSF_TIMESTAMP_MAX 32
char *tsf_format_timestamp(usec_t t, char *buf, size_t size);

/* Parses a duration such as "5s", "100ms", "90d", "1h30min", "250us", or a
 * plain number of seconds. Returns 0 and sets *ret, -EINVAL for malformed
 * input, -ERANGE on overflow. */
int tsf_parse_duration(const char *s, usec_t *ret);
