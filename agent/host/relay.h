/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A bidirectional byte relay between two connected stream sockets, run by an
 * sd-event loop: the gateway's data path once a connection has been routed
 * (DESIGN 2.5, docs/gateway.md).
 *
 *      fd A ──read──► [ ring A→B, buffer_size ] ──write──► fd B
 *      fd A ◄─write── [ ring B→A, buffer_size ] ◄──read─── fd B
 *
 * Guarantees:
 *  - bounded memory: each direction holds at most buffer_size bytes; when a
 *    ring is full its source is no longer read (EPOLLIN off), so TCP flow
 *    control pushes back on the sender instead of memory growing;
 *  - no data loss at EOF: an EOF from one side is passed on as
 *    shutdown(SHUT_WR) on the other only after every byte read has been
 *    written; the other direction keeps flowing until it ends too;
 *  - resets propagate: an error on one socket (ECONNRESET, EPIPE, ...) closes
 *    the other with SO_LINGER {1, 0}, so its peer sees a RST as it would have
 *    on a direct connection, not a clean end of stream;
 *  - an idle timeout (nothing read or written either way) resets both.
 *
 * Not thread-safe: every call happens on the loop's thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"

#define RELAY_BUFFER_SIZE_DEFAULT ((size_t)256 * 1024)
#define RELAY_BUFFER_SIZE_MIN ((size_t)4096)
#define RELAY_BUFFER_SIZE_MAX ((size_t)64 * 1024 * 1024)

enum relay_side {
        RELAY_SIDE_A = 0, /* the gateway's client leg */
        RELAY_SIDE_B = 1, /* the gateway's backend leg */
        _RELAY_SIDE_MAX,
};

/* A direction is named by the side it reads from. */
enum relay_dir {
        RELAY_A_TO_B = 0,
        RELAY_B_TO_A = 1,
        _RELAY_DIR_MAX,
};

struct relay_config {
        size_t buffer_size;  /* per direction; 0 = RELAY_BUFFER_SIZE_DEFAULT */
        usec_t idle_timeout; /* CLOCK_MONOTONIC; 0 = none */
};

enum relay_end {
        RELAY_END_CLOSED = 0, /* both directions reached EOF and were delivered in full */
        RELAY_END_RESET,      /* one socket failed (see `side`, `error`); the other was reset */
        RELAY_END_IDLE,       /* nothing moved for idle_timeout; both were reset */
        RELAY_END_ERROR,      /* the event loop failed us; both were reset */
        _RELAY_END_MAX,
};

struct relay_info {
        uint64_t bytes_in[_RELAY_DIR_MAX];  /* read from the source (prefill included) */
        uint64_t bytes_out[_RELAY_DIR_MAX]; /* written to the destination */
        size_t buffered[_RELAY_DIR_MAX];    /* in our rings right now */
        size_t buffered_peak;               /* largest sum of both rings seen */
        bool eof[_RELAY_DIR_MAX];           /* source said EOF */
        bool shut[_RELAY_DIR_MAX];          /* EOF passed on: destination shut down for writing */
        usec_t started;                     /* CLOCK_MONOTONIC */
        usec_t last_activity;               /* CLOCK_MONOTONIC, last byte read or written */
};

struct relay;

/* Called once, when the relay has finished and both sockets are closed.
 * `side` and `error` (negative errno) say which socket failed for
 * RELAY_END_RESET and RELAY_END_ERROR; otherwise error is 0. The callback may
 * call relay_free(). */
typedef void (*relay_end_fn)(struct relay *r, enum relay_end end, enum relay_side side, int error,
                             void *userdata);

/* Starts relaying between fd_a and fd_b (connected, non-blocking stream
 * sockets). `prefill` (may be NULL when prefill_size is 0) is queued to be
 * written to B before anything read from A: the gateway's replay of the
 * bytes it read while deciding; prefill_size must not exceed the buffer size.
 * On success the relay owns both descriptors; on failure the caller still
 * does. Returns 0 or a negative errno (-EINVAL for a bad config, -ENOMEM). */
int relay_new(sd_event *e, int fd_a, int fd_b, const struct relay_config *c, const void *prefill,
              size_t prefill_size, relay_end_fn end, void *userdata, struct relay **ret);

/* Frees the relay. One that has not finished is aborted: both sockets are
 * reset (a FIN would tell the peers that the stream ended cleanly, which is
 * untrue while bytes may still sit in our rings). No callback is made. */
struct relay *relay_free(struct relay *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct relay *, relay_free);

void relay_get_info(const struct relay *r, struct relay_info *ret);
/* Bytes held in both rings right now. */
size_t relay_buffered(const struct relay *r);
bool relay_finished(const struct relay *r);

const char *relay_end_to_string(enum relay_end e);
