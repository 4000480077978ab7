/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "relay.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

/*
 * Design notes (the why; docs/gateway.md has the numbers):
 *
 * - Level-triggered epoll, with readiness hints. Each leg remembers whether
 *   it may still be readable / writable (set by an event, cleared by EAGAIN
 *   or a short read/write), so a dispatch makes no system call that is known
 *   to fail. Level triggering is what makes the per-dispatch budget below
 *   safe: a leg we stopped reading early is reported again by the next
 *   epoll_wait, with no extra bookkeeping. The epoll mask only changes when
 *   a ring fills or empties, which bulk transfers on loopback rarely do.
 * - A budget per dispatch (2 x buffer_size per direction) so one fast
 *   connection cannot starve the rest of the loop (other relays, timers,
 *   new connections).
 * - Rings, filled with readv and drained with sendmsg (MSG_NOSIGNAL: a dead
 *   peer must be an EPIPE here, not a SIGPIPE for the whole agent). An empty
 *   ring rewinds to offset 0, so interactive traffic only ever touches the
 *   first pages of the buffer and most of its 256 KiB is never faulted in.
 */

struct relay_leg {
        int fd;
        sd_event_source *source;
        bool readable; /* no EAGAIN or short read seen since the last event */
        bool writable; /* no EAGAIN or short write seen since the last event */
        bool hup;      /* epoll reported EPOLLHUP, and would keep doing so */
};

struct relay_ring {
        uint8_t *data;
        size_t head; /* oldest byte */
        size_t len;  /* bytes held */
        bool eof;    /* the source said EOF */
        bool shut;   /* ... and we passed it on */
        uint64_t in, out;
};

struct relay {
        sd_event *event;
        size_t size;
        /* leg[s] is read by ring[s] (direction s) and written by ring[!s]. */
        struct relay_leg leg[_RELAY_SIDE_MAX];
        struct relay_ring ring[_RELAY_DIR_MAX];
        size_t peak;

        usec_t idle_timeout;
        usec_t started;
        usec_t last_activity;
        sd_event_source *idle_source;

        relay_end_fn end_cb;
        void *userdata;

        bool ending;   /* the outcome is decided; relay_finish() closes */
        bool finished; /* sockets closed */
        enum relay_end end;
        enum relay_side end_side;
        int end_error;
};

static const char *const relay_end_table[_RELAY_END_MAX] = {
        [RELAY_END_CLOSED] = "closed",
        [RELAY_END_RESET] = "reset",
        [RELAY_END_IDLE] = "idle",
        [RELAY_END_ERROR] = "error",
};

const char *relay_end_to_string(enum relay_end e) {
        return (unsigned)e < _RELAY_END_MAX ? relay_end_table[e] : "unknown";
}

/* The first failure decides the outcome; later ones are consequences. */
static void relay_fail(struct relay *r, enum relay_end end, enum relay_side side, int error) {
        if (r->ending)
                return;
        r->ending = true;
        r->end = end;
        r->end_side = side;
        r->end_error = error;
}

static void set_linger_reset(int fd) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};

        /* Best effort: a socket that cannot take the option is closed all the same. */
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

static void relay_close_legs(struct relay *r, bool reset) {
        for (int s = 0; s < _RELAY_SIDE_MAX; s++) {
                r->leg[s].source = sd_event_source_disable_unref(r->leg[s].source);
                if (r->leg[s].fd < 0)
                        continue;
                if (reset)
                        set_linger_reset(r->leg[s].fd);
                r->leg[s].fd = safe_close(r->leg[s].fd);
        }
        r->idle_source = sd_event_source_disable_unref(r->idle_source);
        r->finished = true;
}

/* Closes both legs and reports. Callers return right after: the callback may
 * free r. */
static bool ring_write(struct relay *r, enum relay_dir d);

static void relay_finish(struct relay *r) {
        /* A reset from one side: what it sent before goes on to the other
         * side ahead of our RST, as far as one non-blocking write takes it,
         * the way a direct connection would deliver it. */
        if (r->end == RELAY_END_RESET) {
                enum relay_dir d = r->end_side == RELAY_SIDE_A ? RELAY_A_TO_B : RELAY_B_TO_A;

                r->leg[!d].writable = true;
                (void)ring_write(r, d);
        }
        relay_close_legs(r, r->end != RELAY_END_CLOSED);
        log_debug("Relay %p %s (side %c, %d): %" PRIu64 "/%" PRIu64 " bytes A->B, %" PRIu64 "/%" PRIu64
                  " bytes B->A.",
                  (void *)r, relay_end_to_string(r->end), r->end_side == RELAY_SIDE_A ? 'A' : 'B',
                  r->end_error, r->ring[RELAY_A_TO_B].in, r->ring[RELAY_A_TO_B].out,
                  r->ring[RELAY_B_TO_A].in, r->ring[RELAY_B_TO_A].out);
        if (r->end_cb)
                r->end_cb(r, r->end, r->end_side, r->end_error, r->userdata);
}

/* One read from the source of direction d into its ring. Returns whether
 * anything changed (bytes or EOF). */
static bool ring_read(struct relay *r, enum relay_dir d, size_t *budget) {
        struct relay_ring *g = &r->ring[d];
        struct relay_leg *src = &r->leg[d];
        struct iovec iov[2];
        size_t room = r->size - g->len, tail;
        int n_iov = 1;
        ssize_t n;

        if (g->eof || !src->readable || room == 0 || *budget == 0)
                return false;

        if (g->len == 0)
                g->head = 0;
        tail = g->head + g->len;
        if (tail >= r->size)
                tail -= r->size;
        if (tail >= g->head) {
                /* Free space is [tail, size) and then [0, head). */
                iov[0] = (struct iovec){g->data + tail, r->size - tail};
                if (g->head > 0)
                        iov[n_iov++] = (struct iovec){g->data, g->head};
        } else
                iov[0] = (struct iovec){g->data + tail, g->head - tail};

        n = readv(src->fd, iov, n_iov);
        if (n > 0) {
                size_t held;

                g->len += (size_t)n;
                g->in += (size_t)n;
                *budget -= MIN(*budget, (size_t)n);
                /* A stream socket returns less than asked only when it had
                 * less; epoll (level-triggered) reports the rest. */
                if ((size_t)n < room)
                        src->readable = false;
                held = r->ring[0].len + r->ring[1].len;
                if (held > r->peak)
                        r->peak = held;
                return true;
        }
        if (n == 0) {
                g->eof = true;
                src->readable = false;
                return true;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
                src->readable = false;
                return false;
        }
        if (errno == EINTR)
                return true;
        relay_fail(r, RELAY_END_RESET, (enum relay_side)d, negative_errno());
        return false;
}

/* One write from the ring of direction d to its destination. */
static bool ring_write(struct relay *r, enum relay_dir d) {
        struct relay_ring *g = &r->ring[d];
        struct relay_leg *dst = &r->leg[!d];
        struct iovec iov[2];
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 1};
        size_t first;
        ssize_t n;

        if (g->len == 0 || !dst->writable)
                return false;

        first = MIN(g->len, r->size - g->head);
        iov[0] = (struct iovec){g->data + g->head, first};
        if (g->len > first) {
                iov[1] = (struct iovec){g->data, g->len - first};
                mh.msg_iovlen = 2;
        }

        n = sendmsg(dst->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
                if ((size_t)n < g->len)
                        dst->writable = false;
                g->head += (size_t)n;
                if (g->head >= r->size)
                        g->head -= r->size;
                g->len -= (size_t)n;
                g->out += (size_t)n;
                if (g->len == 0)
                        g->head = 0;
                return true;
        }
        if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
                dst->writable = false;
                return false;
        }
        if (errno == EINTR)
                return true;
        relay_fail(r, RELAY_END_RESET, (enum relay_side) !d, negative_errno());
        return false;
}

/* EOF from the source goes on as a FIN only once every byte read is out. */
static void ring_pass_eof(struct relay *r, enum relay_dir d) {
        struct relay_ring *g = &r->ring[d];

        if (!g->eof || g->len > 0 || g->shut)
                return;
        if (shutdown(r->leg[!d].fd, SHUT_WR) < 0) {
                relay_fail(r, RELAY_END_RESET, (enum relay_side) !d, negative_errno());
                return;
        }
        g->shut = true;
}

static void relay_pump(struct relay *r) {
        bool moved = false;

        for (int d = 0; d < _RELAY_DIR_MAX; d++) {
                size_t budget = 2 * r->size;
                bool progress;

                do {
                        progress = ring_read(r, d, &budget);
                        if (r->ending)
                                return;
                        progress = ring_write(r, d) || progress;
                        if (r->ending)
                                return;
                        moved = moved || progress;
                } while (progress && budget > 0);

                ring_pass_eof(r, d);
                if (r->ending)
                        return;
        }

        if (moved)
                (void)sd_event_now(r->event, CLOCK_MONOTONIC, &r->last_activity);
}

/* Interest follows state: read a leg while its ring has room and it has not
 * said EOF; watch it for writability while bytes wait for it. A leg that
 * has hung up and needs nothing is switched off, or its EPOLLHUP (level,
 * like everything else) would spin the loop. */
static int leg_update(struct relay *r, enum relay_side s) {
        struct relay_leg *l = &r->leg[s];
        const struct relay_ring *from = &r->ring[s], *to = &r->ring[!s];
        uint32_t events = 0;
        int r2;

        if (!from->eof && from->len < r->size)
                events |= EPOLLIN;
        if (to->len > 0)
                events |= EPOLLOUT;

        r2 = sd_event_source_set_io_events(l->source, events);
        if (r2 < 0)
                return r2;
        return sd_event_source_set_enabled(l->source, events != 0 || !l->hup ? SD_EVENT_ON : SD_EVENT_OFF);
}

static void relay_settle(struct relay *r) {
        int k;

        if (!r->ending && r->ring[RELAY_A_TO_B].shut && r->ring[RELAY_B_TO_A].shut) {
                r->ending = true;
                r->end = RELAY_END_CLOSED;
        }
        for (int s = 0; !r->ending && s < _RELAY_SIDE_MAX; s++) {
                k = leg_update(r, s);
                if (k < 0)
                        relay_fail(r, RELAY_END_ERROR, s, k);
        }
        if (r->ending)
                relay_finish(r);
}

static int on_leg_io(sd_event_source *source, int fd, uint32_t revents, void *userdata) {
        struct relay *r = userdata;
        enum relay_side s = source == r->leg[RELAY_SIDE_A].source ? RELAY_SIDE_A : RELAY_SIDE_B;
        struct relay_leg *l = &r->leg[s];

        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                l->readable = true;
        if (revents & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                l->writable = true;
        if (revents & EPOLLHUP)
                l->hup = true;

        /* Bytes the peer sent before its RST are still readable: take them
         * first, so they can go on before the reset does. */
        relay_pump(r);

        if (!r->ending && (revents & EPOLLERR)) {
                /* Fetch the error now: the leg may have no read or write
                 * pending that would find it, and EPOLLERR would spin. */
                int error = 0;
                socklen_t len = sizeof(error);

                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                        error = errno;
                if (error != 0)
                        relay_fail(r, RELAY_END_RESET, s, -error);
        }
        relay_settle(r);
        return 0;
}

static usec_t timer_accuracy(usec_t timeout) {
        return MAX(MIN(timeout / 10, USEC_PER_SEC), (usec_t)1);
}

static int on_idle(sd_event_source *source, uint64_t usec, void *userdata) {
        struct relay *r = userdata;
        usec_t deadline = r->last_activity + r->idle_timeout;
        int k;

        /* The deadline moves lazily: activity only stamps a time, and the
         * timer re-arms itself here instead of on every byte. */
        if (usec < deadline) {
                k = sd_event_source_set_time(source, deadline);
                if (k >= 0)
                        k = sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
                if (k >= 0)
                        return 0;
                relay_fail(r, RELAY_END_ERROR, RELAY_SIDE_A, k);
        } else
                relay_fail(r, RELAY_END_IDLE, RELAY_SIDE_A, 0);
        relay_finish(r);
        return 0;
}

int relay_new(sd_event *e, int fd_a, int fd_b, const struct relay_config *c, const void *prefill,
              size_t prefill_size, relay_end_fn end, void *userdata, struct relay **ret) {
        _cleanup_(relay_freep) struct relay *r = NULL;
        size_t size = c && c->buffer_size ? c->buffer_size : RELAY_BUFFER_SIZE_DEFAULT;
        int k;

        if (!e || fd_a < 0 || fd_b < 0 || !ret)
                return -EINVAL;
        if (size < RELAY_BUFFER_SIZE_MIN || size > RELAY_BUFFER_SIZE_MAX || prefill_size > size ||
            (prefill_size > 0 && !prefill))
                return -EINVAL;

        r = calloc(1, sizeof(*r));
        if (!r)
                return -ENOMEM;
        r->leg[RELAY_SIDE_A].fd = r->leg[RELAY_SIDE_B].fd = -1;
        r->event = e;
        r->size = size;
        r->idle_timeout = c ? c->idle_timeout : 0;
        r->end_cb = end;
        r->userdata = userdata;

        /* Untouched pages of these stay virtual; see the notes at the top. */
        r->ring[0].data = malloc(2 * size);
        if (!r->ring[0].data)
                return -ENOMEM;
        r->ring[1].data = r->ring[0].data + size;
        if (prefill_size > 0) {
                memcpy(r->ring[RELAY_A_TO_B].data, prefill, prefill_size);
                r->ring[RELAY_A_TO_B].len = prefill_size;
                r->ring[RELAY_A_TO_B].in = prefill_size;
                r->peak = prefill_size;
        }

        (void)sd_event_now(e, CLOCK_MONOTONIC, &r->started);
        r->last_activity = r->started;

        /* Nothing is read or written here: the first dispatch does it, so
         * the callback can never run before relay_new() has returned. */
        r->leg[RELAY_SIDE_A] = (struct relay_leg){.fd = fd_a, .readable = true, .writable = true};
        r->leg[RELAY_SIDE_B] = (struct relay_leg){.fd = fd_b, .readable = true, .writable = true};
        for (int s = 0; s < _RELAY_SIDE_MAX; s++) {
                k = sd_event_add_io(e, &r->leg[s].source, r->leg[s].fd, EPOLLIN, on_leg_io, r);
                if (k < 0)
                        goto fail;
                k = leg_update(r, s);
                if (k < 0)
                        goto fail;
        }

        if (r->idle_timeout > 0) {
                k = sd_event_add_time(e, &r->idle_source, CLOCK_MONOTONIC, r->started + r->idle_timeout,
                                      timer_accuracy(r->idle_timeout), on_idle, r);
                if (k < 0)
                        goto fail;
        }

        *ret = TAKE_PTR(r);
        return 0;

fail:
        /* The caller keeps the descriptors on failure. */
        for (int s = 0; s < _RELAY_SIDE_MAX; s++) {
                r->leg[s].source = sd_event_source_disable_unref(r->leg[s].source);
                r->leg[s].fd = -1;
        }
        return k;
}

struct relay *relay_free(struct relay *r) {
        if (!r)
                return NULL;
        if (!r->finished)
                relay_close_legs(r, true);
        free(r->ring[0].data);
        free(r);
        return NULL;
}

void relay_get_info(const struct relay *r, struct relay_info *ret) {
        *ret = (struct relay_info){
                .buffered_peak = r->peak,
                .started = r->started,
                .last_activity = r->last_activity,
        };
        for (int d = 0; d < _RELAY_DIR_MAX; d++) {
                ret->bytes_in[d] = r->ring[d].in;
                ret->bytes_out[d] = r->ring[d].out;
                ret->buffered[d] = r->ring[d].len;
                ret->eof[d] = r->ring[d].eof;
                ret->shut[d] = r->ring[d].shut;
        }
}

size_t relay_buffered(const struct relay *r) {
        return r->ring[0].len + r->ring[1].len;
}

bool relay_finished(const struct relay *r) {
        return r->finished;
}
