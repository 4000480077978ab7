/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the C benchmarks (dir_bench, lic_bench) share: dying with a
 * message, the clock, argument parsing, percentiles. */
#pragma once

#include <stddef.h>

#include "tsfarm/macro.h"

/* The program's name for messages; each benchmark sets it. */
extern const char *prog;

/* Prints "PROG: message" on stderr and exits 1. */
__attribute__((noreturn)) _printf_(1, 2) void die(const char *fmt, ...);
/* CLOCK_MONOTONIC in seconds. */
double now_s(void);
/* A decimal argument, or die() naming `what`. */
unsigned long parse_ulong(const char *s, const char *what);
/* qsort() order of doubles. */
int cmp_double(const void *a, const void *b);
/* The nearest-rank percentile p (0..1) of sorted v[0..n), in ms; 0 when
 * empty. */
double pct_ms(const double *v, size_t n, double p);
