/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The load generator: N simulated devices (each a device store of its own
 * under one directory, so each has its own hardware id), M users, a mix of
 * operations started at a steady rate for a duration by a pool of worker
 * threads, each running the same blocking-with-deadlines connection code
 * as the interactive client. A device runs one connection at a time (its
 * store and reconnect cookie are its own); a slot that finds every device
 * busy is counted as skipped, not as a connection. A user is logged on from
 * one device at a time, as a person uses one device at a time: two devices
 * of one user at once would take the user's session from each other (the
 * host's "replaced", the gateway's stale-leg reset), which is the farm
 * working as designed, not a failure to count.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "load.h"
#include "loadstats.h"

struct device {
        pthread_mutex_t lock; /* held while the device is connected */
        struct tsc_store *store;
        char name[32];
        char user[TSF_PROTO_USER_MAX + 1]; /* the last user logged on, "" none */
        unsigned user_index;               /* its index in users[] */
        uint8_t cookie[TSF_PROTO_COOKIE_MAX];
        size_t cookie_len;
};

struct load {
        const struct tsc_load_opts *o;
        struct device *devices;
        pthread_mutex_t *users; /* held while a device is logged on as that user */
        pthread_mutex_t lock;   /* the schedule and the stats */
        usec_t next_slot, end, interval;
        struct tsc_load_stats stats;
        int error; /* a worker's fatal local error */
};

static unsigned rnd(unsigned *seed, unsigned n) {
        return n ? (unsigned)(rand_r(seed) % n) : 0;
}

static void sleep_until(usec_t t) {
        usec_t now = tsf_now_monotonic();
        struct timespec ts;

        if (t <= now)
                return;
        ts.tv_sec = (time_t)((t - now) / USEC_PER_SEC);
        ts.tv_nsec = (long)((t - now) % USEC_PER_SEC) * 1000;
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* The next start time, or false once the duration is over. */
static bool next_slot(struct load *l, usec_t *ret) {
        usec_t now = tsf_now_monotonic(), slot;
        bool ok;

        pthread_mutex_lock(&l->lock);
        slot = MAX(l->next_slot, now);
        ok = slot < l->end && l->error == 0;
        if (ok)
                l->next_slot = slot + l->interval;
        pthread_mutex_unlock(&l->lock);
        *ret = slot;
        return ok;
}

static struct device *grab_device(struct load *l, unsigned *seed) {
        unsigned n = l->o->devices, start = rnd(seed, n);

        for (unsigned i = 0; i < n; i++) {
                struct device *d = &l->devices[(start + i) % n];

                if (pthread_mutex_trylock(&d->lock) == 0)
                        return d;
        }
        return NULL;
}

/* A user no other device is logged on as, picked at random (locked); when
 * every user is busy, waits for one. */
static unsigned grab_user(struct load *l, unsigned *seed) {
        unsigned n = l->o->users, start = rnd(seed, n);

        for (unsigned i = 0; i < n; i++)
                if (pthread_mutex_trylock(&l->users[(start + i) % n]) == 0)
                        return (start + i) % n;
        pthread_mutex_lock(&l->users[start]);
        return start;
}

static void run_op(struct load *l, struct device *d, enum tsc_load_op op, unsigned *seed) {
        const struct tsc_load_opts *o = l->o;
        struct tsc_params p = o->params;
        struct tsc_result res = {};
        struct tsc_conn *conn = NULL;
        char user[TSF_PROTO_USER_MAX + 1];
        unsigned ui;
        enum tsc_end end;
        int r;

        if (op == TSC_LOAD_RECONNECT && d->user[0]) {
                ui = d->user_index;
                pthread_mutex_lock(&l->users[ui]); /* its other device finishes first */
                snprintf(user, sizeof(user), "%s", d->user);
                if (d->cookie_len > 0) {
                        p.reconnect_cookie = d->cookie;
                        p.reconnect_cookie_len = d->cookie_len;
                }
        } else {
                ui = grab_user(l, seed);
                snprintf(user, sizeof(user), "%s%u", o->user_prefix, 1 + ui);
        }
        p.user = user;
        p.store = d->store;
        p.device_name = d->name;

        (void)tsc_logon(&p, &res, &conn);
        /* A cookie is good for one logon, whatever came of it. */
        d->cookie_len = 0;
        if (res.outcome == TSC_OK) {
                end = op == TSC_LOAD_DISCONNECT ? TSC_END_DROP
                      : op == TSC_LOAD_LOGOFF   ? TSC_END_LOGOFF
                                                : TSC_END_DISCONNECT;
                if (o->hold)
                        sleep_until(tsf_now_monotonic() + o->hold);
                r = tsc_session_end(conn, end,
                                    tsf_now_monotonic() + (o->params.timeout ?: 10 * USEC_PER_SEC));
                if (r < 0) {
                        res.outcome = TSC_LOST;
                        res.error = r;
                } else if (end == TSC_END_LOGOFF)
                        d->user[0] = '\0';
                else {
                        snprintf(d->user, sizeof(d->user), "%s", user);
                        d->user_index = ui;
                        memcpy(d->cookie, res.reconnect_cookie, res.reconnect_cookie_len);
                        d->cookie_len = res.reconnect_cookie_len;
                }
        }
        pthread_mutex_unlock(&l->users[ui]);
        if (res.outcome != TSC_OK)
                log_debug("%s %s as %s: %s: %s", d->name, tsc_load_op_to_string(op), user,
                          tsc_outcome_to_string(res.outcome), res.error_text);

        pthread_mutex_lock(&l->lock);
        r = tsc_load_stats_record(&l->stats, op, &res);
        if (r < 0 && l->error == 0)
                l->error = r;
        if (res.outcome == TSC_LOCAL && l->error == 0) {
                /* The store or the script is broken: more load will not help. */
                log_error("%s: %s", d->name, res.error_text);
                l->error = res.error ?: -EIO;
        }
        pthread_mutex_unlock(&l->lock);
}

static void *worker(void *userdata) {
        struct load *l = userdata;
        unsigned seed;
        usec_t slot;

        if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
                seed = (unsigned)tsf_now_monotonic();
        while (next_slot(l, &slot)) {
                enum tsc_load_op op = tsc_load_mix_pick(&l->o->mix, rnd(&seed, l->o->mix.total));
                struct device *d;

                sleep_until(slot);
                d = grab_device(l, &seed);
                if (!d) {
                        pthread_mutex_lock(&l->lock);
                        l->stats.skipped_busy++;
                        pthread_mutex_unlock(&l->lock);
                        continue;
                }
                run_op(l, d, op, &seed);
                pthread_mutex_unlock(&d->lock);
        }
        return NULL;
}

int tsc_load_run(const struct tsc_load_opts *o, FILE *out) {
        struct load l = {.o = o};
        pthread_t *threads = NULL;
        unsigned n_threads = 0;
        usec_t start;
        int r = 0;

        l.devices = calloc(o->devices, sizeof(*l.devices));
        l.users = calloc(o->users, sizeof(*l.users));
        threads = calloc(o->concurrency, sizeof(*threads));
        if (!l.devices || !l.users || !threads) {
                free(l.devices);
                free(l.users);
                free(threads);
                return log_oom();
        }
        pthread_mutex_init(&l.lock, NULL);
        for (unsigned i = 0; i < o->users; i++)
                pthread_mutex_init(&l.users[i], NULL);
        for (unsigned i = 0; i < o->devices; i++) {
                char dir[4096];
                struct device *d = &l.devices[i];

                pthread_mutex_init(&d->lock, NULL);
                snprintf(d->name, sizeof(d->name), "%s%04u", o->device_prefix, i + 1);
                snprintf(dir, sizeof(dir), "%s/%s", o->store_dir, d->name);
                r = tsc_store_open(dir, o->machine_id_file, true, &d->store);
                if (r < 0) {
                        log_error_errno(r, "Failed to open the device store %s: %m", dir);
                        goto finish;
                }
        }

        start = tsf_now_monotonic();
        l.next_slot = start;
        l.end = start + o->duration;
        l.interval = o->rate > 0 ? (usec_t)((double)USEC_PER_SEC / o->rate) : 0;
        for (; n_threads < o->concurrency; n_threads++) {
                r = -pthread_create(&threads[n_threads], NULL, worker, &l);
                if (r < 0) {
                        log_error_errno(r, "Failed to start a worker thread: %m");
                        pthread_mutex_lock(&l.lock);
                        l.error = r;
                        pthread_mutex_unlock(&l.lock);
                        break;
                }
        }
        for (unsigned i = 0; i < n_threads; i++)
                pthread_join(threads[i], NULL);
        tsc_load_stats_print(out, &l.stats, o->json, tsf_now_monotonic() - start, o->devices, o->users);
        r = l.error < 0 ? l.error : tsc_load_stats_check(&l.stats);
        if (r == 0 && l.stats.failed > 0)
                r = 1; /* some failed: the caller's exit status says so */

finish:
        for (unsigned i = 0; i < o->devices; i++) {
                tsc_store_free(l.devices[i].store);
                pthread_mutex_destroy(&l.devices[i].lock);
        }
        for (unsigned i = 0; i < o->users; i++)
                pthread_mutex_destroy(&l.users[i]);
        pthread_mutex_destroy(&l.lock);
        tsc_load_stats_done(&l.stats);
        free(l.devices);
        free(l.users);
        free(threads);
        return r;
}
