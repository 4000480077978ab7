/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Following this node's addresses through libnl's route/addr cache.
 *
 * Two netlink sockets:
 *   events  non-blocking, joined to RTNLGRP_IPV4_IFADDR and
 *           RTNLGRP_IPV6_IFADDR, read from the sd-event loop; each
 *           notification is parsed by libnl (nl_msg_parse) and merged into
 *           the cache (nl_cache_include);
 *   sync    blocking, for full dumps: the first fill and the re-read after
 *           the kernel dropped notifications (nl_cache_resync).
 *
 * This is what libnl's nl_cache_mngr does, done by hand for two reasons:
 * the manager in libnl 3.7 (Debian 12) hides its dump socket, so it cannot
 * re-read a cache after an ENOBUFS overrun, and nl_cache_mngr_alloc() frees
 * that socket twice when connecting it fails. libnl 3.10 fixed both
 * (nl_cache_mngr_alloc_ex() takes the dump socket from the caller).
 *
 * Readers never touch the cache: after each batch of notifications the
 * addresses are copied into two sorted arrays, which answers "is this me?"
 * with a binary search and lets the change callback fire only when the set
 * itself changed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <linux/rtnetlink.h>

#include <systemd/sd-event.h>

#include "addrs.h"
#include "nl_util.h"
#include "tsfarm/clock.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

#define HOST_ADDRS_RCVBUF_DEFAULT (1024 * 1024)
/* recv() calls per wake-up before giving other sources a turn; epoll is
 * level-triggered, so whatever is left wakes us again. */
#define HOST_ADDRS_READ_BUDGET 64
#define HOST_ADDRS_RETRY_USEC (1 * USEC_PER_SEC)

struct host_addrs {
        sd_event *event;
        sd_event_source *io;
        sd_event_source *retry; /* armed while a re-read or snapshot failed */
        struct nl_sock *events;
        struct nl_sock *sync;
        struct nl_cache *cache; /* libnl route/addr objects: the truth */

        host_addrs_changed_fn cb;
        void *userdata;

        bool dirty;       /* the cache changed since the last snapshot */
        bool need_resync; /* notifications were lost */
        uint64_t resyncs;

        uint32_t *ipv4; /* network byte order, sorted by value */
        size_t n_ipv4;
        struct in6_addr *ipv6; /* sorted bytewise */
        size_t n_ipv6;
};

static int cmp_ipv4(const void *a, const void *b) {
        uint32_t x = ntohl(*(const uint32_t *)a), y = ntohl(*(const uint32_t *)b);

        return x < y ? -1 : x > y;
}

static int cmp_ipv6(const void *a, const void *b) {
        return memcmp(a, b, sizeof(struct in6_addr));
}

/* Sorts and drops duplicates (one address on two interfaces); returns the
 * new count. */
static size_t sort_unique(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *)) {
        uint8_t *p = base;
        size_t k = 0;

        if (n == 0)
                return 0;
        qsort(base, n, size, cmp);
        for (size_t i = 1; i < n; i++)
                if (cmp(p + k * size, p + i * size) != 0) {
                        k++;
                        if (k != i)
                                memcpy(p + k * size, p + i * size, size);
                }
        return k + 1;
}

/* Copies the cache into fresh arrays; *changed says whether the set differs
 * from the previous snapshot. On failure the old snapshot stays. */
static int snapshot_take(struct host_addrs *a, bool *changed) {
        size_t n = (size_t)nl_cache_nitems(a->cache), n4 = 0, n6 = 0;
        _cleanup_free_ uint32_t *v4 = NULL;
        _cleanup_free_ struct in6_addr *v6 = NULL;

        v4 = calloc(MAX(n, 1), sizeof(*v4));
        v6 = calloc(MAX(n, 1), sizeof(*v6));
        if (!v4 || !v6)
                return -ENOMEM;

        for (struct nl_object *o = nl_cache_get_first(a->cache); o; o = nl_cache_get_next(o)) {
                /* IFA_LOCAL, or IFA_ADDRESS when there is no separate local
                 * address (the usual case except point-to-point links). */
                struct nl_addr *local = rtnl_addr_get_local((struct rtnl_addr *)o);

                if (!local)
                        continue;
                if (nl_addr_get_family(local) == AF_INET && nl_addr_get_len(local) == sizeof(*v4))
                        memcpy(&v4[n4++], nl_addr_get_binary_addr(local), sizeof(*v4));
                else if (nl_addr_get_family(local) == AF_INET6 && nl_addr_get_len(local) == sizeof(*v6))
                        memcpy(&v6[n6++], nl_addr_get_binary_addr(local), sizeof(*v6));
        }
        n4 = sort_unique(v4, n4, sizeof(*v4), cmp_ipv4);
        n6 = sort_unique(v6, n6, sizeof(*v6), cmp_ipv6);

        *changed = n4 != a->n_ipv4 || n6 != a->n_ipv6 ||
                   (n4 && memcmp(v4, a->ipv4, n4 * sizeof(*v4)) != 0) ||
                   (n6 && memcmp(v6, a->ipv6, n6 * sizeof(*v6)) != 0);

        free(a->ipv4);
        free(a->ipv6);
        a->ipv4 = TAKE_PTR(v4);
        a->n_ipv4 = n4;
        a->ipv6 = TAKE_PTR(v6);
        a->n_ipv6 = n6;
        return 0;
}

static void on_cache_change(struct nl_cache *cache, struct nl_object *obj, int action, void *userdata) {
        struct host_addrs *a = userdata;

        a->dirty = true;
}

static void include_object(struct nl_object *obj, void *userdata) {
        struct host_addrs *a = userdata;
        int r;

        r = nl_cache_include(a->cache, obj, on_cache_change, a);
        if (r < 0)
                log_debug("Failed to merge an address notification, ignoring: %s", nl_geterror(r));
}

static int on_event_msg(struct nl_msg *msg, void *userdata) {
        struct host_addrs *a = userdata;
        const struct sockaddr_nl *src = nlmsg_get_src(msg);
        int r;

        /* Only the kernel speaks on these groups; anything else unicast to
         * our port id is not to be believed. */
        if (src && src->nl_pid != 0)
                return NL_SKIP;

        r = nl_msg_parse(msg, include_object, a);
        if (r < 0 && r != -NLE_MSGTYPE_NOSUPPORT)
                log_debug("Failed to parse an address notification, ignoring: %s", nl_geterror(r));
        return NL_OK;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata);

static void arm_retry(struct host_addrs *a) {
        int r;

        if (a->retry) {
                r = sd_event_source_set_time_relative(a->retry, HOST_ADDRS_RETRY_USEC);
                if (r >= 0)
                        r = sd_event_source_set_enabled(a->retry, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time_relative(a->event, &a->retry, CLOCK_MONOTONIC, HOST_ADDRS_RETRY_USEC,
                                               0, on_retry, a);
        if (r < 0)
                log_debug_errno(r, "Failed to arm the address re-read timer, ignoring: %m");
}

static void resync(struct host_addrs *a) {
        int r;

        /* Marks every cached address, re-dumps, drops the ones the dump did
         * not mention (reporting them to on_cache_change as deletions). */
        r = nl_cache_resync(a->sync, a->cache, on_cache_change, a);
        if (r < 0) {
                r = errno_from_nlerr(r);
                log_debug_errno(r, "Failed to re-read addresses after lost notifications, retrying: %m");
                arm_retry(a);
                return;
        }
        a->need_resync = false;
        a->resyncs++;
        log_debug("Re-read addresses after the kernel dropped notifications.");
}

static void publish(struct host_addrs *a) {
        bool changed;
        int r;

        if (!a->dirty)
                return;
        r = snapshot_take(a, &changed);
        if (r < 0) {
                log_debug_errno(r, "Failed to snapshot addresses, retrying: %m");
                arm_retry(a);
                return;
        }
        a->dirty = false;
        if (changed && a->cb)
                a->cb(a, a->userdata);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        struct host_addrs *a = userdata;

        if (a->need_resync)
                resync(a);
        publish(a);
        return 0;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct host_addrs *a = userdata;
        int r;

        for (int i = 0; i < HOST_ADDRS_READ_BUDGET; i++) {
                r = nl_recvmsgs_default(a->events);
                if (r == -NLE_AGAIN)
                        break;
                if (r == -NLE_NOMEM) {
                        /* ENOBUFS (libnl cannot tell it from ENOMEM): the
                         * kernel dropped notifications. Drain what is
                         * queued, then re-read everything. */
                        a->need_resync = true;
                        continue;
                }
                if (r < 0) {
                        log_debug("Failed to read address notifications, ignoring: %s", nl_geterror(r));
                        break;
                }
        }
        if (a->need_resync)
                resync(a);
        publish(a);
        return 0;
}

int host_addrs_set_receive_buffer(struct host_addrs *a, int bytes) {
        int fd = nl_socket_get_fd(a->events);

        if (bytes <= 0)
                return -EINVAL;
        /* FORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN. */
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)) >= 0)
                return 0;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes)) >= 0)
                return 0;
        return negative_errno();
}

int host_addrs_new(sd_event *e, host_addrs_changed_fn cb, void *userdata, struct host_addrs **ret) {
        _cleanup_(host_addrs_freep) struct host_addrs *a = NULL;
        bool changed;
        int r;

        if (!e || !ret)
                return -EINVAL;

        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->event = sd_event_ref(e);
        a->cb = cb;
        a->userdata = userdata;

        a->events = nl_socket_alloc();
        a->sync = nl_socket_alloc();
        if (!a->events || !a->sync)
                return -ENOMEM;

        /* Notifications carry sequence number 0: nothing to check. */
        nl_socket_disable_seq_check(a->events);
        r = nl_socket_modify_cb(a->events, NL_CB_VALID, NL_CB_CUSTOM, on_event_msg, a);
        if (r < 0)
                return log_debug_errno(errno_from_nlerr(r),
                                       "Failed to set the address notification handler: %m");
        r = nl_connect(a->events, NETLINK_ROUTE);
        if (r < 0)
                return log_debug_errno(errno_from_nlerr(r), "Failed to open an rtnetlink socket: %m");
        r = nl_socket_set_nonblocking(a->events);
        if (r < 0)
                return log_debug_errno(errno_from_nlerr(r),
                                       "Failed to make the rtnetlink socket non-blocking: %m");
        r = nl_socket_add_memberships(a->events, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR, 0);
        if (r < 0)
                return log_debug_errno(errno_from_nlerr(r),
                                       "Failed to subscribe to address notifications: %m");
        r = host_addrs_set_receive_buffer(a, HOST_ADDRS_RCVBUF_DEFAULT);
        if (r < 0)
                log_debug_errno(r, "Failed to enlarge the rtnetlink receive buffer, ignoring: %m");

        r = nl_connect(a->sync, NETLINK_ROUTE);
        if (r < 0)
                return log_debug_errno(errno_from_nlerr(r), "Failed to open an rtnetlink socket: %m");

        /* Subscribed first, dumped second: a change that races the dump is
         * queued on the event socket and merged afterwards, and merging an
         * address the dump already showed (or deleting one it did not) is
         * harmless. */
        r = rtnl_addr_alloc_cache(a->sync, &a->cache);
        if (r < 0)
                return log_debug_errno(errno_from_nlerr(r), "Failed to dump addresses: %m");
        r = snapshot_take(a, &changed);
        if (r < 0)
                return r;

        r = sd_event_add_io(e, &a->io, nl_socket_get_fd(a->events), EPOLLIN, on_io, a);
        if (r < 0)
                return log_debug_errno(r, "Failed to watch address notifications: %m");
        (void)sd_event_source_set_description(a->io, "host-addrs");

        *ret = TAKE_PTR(a);
        return 0;
}

struct host_addrs *host_addrs_free(struct host_addrs *a) {
        if (!a)
                return NULL;
        /* Sources first: their fd is about to be closed. */
        sd_event_source_disable_unref(a->io);
        sd_event_source_disable_unref(a->retry);
        if (a->cache)
                nl_cache_free(a->cache);
        if (a->events)
                nl_socket_free(a->events);
        if (a->sync)
                nl_socket_free(a->sync);
        sd_event_unref(a->event);
        free(a->ipv4);
        free(a->ipv6);
        free(a);
        return NULL;
}

bool host_addrs_is_local_ipv4(const struct host_addrs *a, uint32_t ipv4_be) {
        return a && bsearch(&ipv4_be, a->ipv4, a->n_ipv4, sizeof(*a->ipv4), cmp_ipv4);
}

bool host_addrs_is_local_ipv6(const struct host_addrs *a, const struct in6_addr *ipv6) {
        return a && ipv6 && bsearch(ipv6, a->ipv6, a->n_ipv6, sizeof(*a->ipv6), cmp_ipv6);
}

size_t host_addrs_ipv4(const struct host_addrs *a, uint32_t *out, size_t max) {
        if (out && max)
                memcpy(out, a->ipv4, MIN(max, a->n_ipv4) * sizeof(*out));
        return a->n_ipv4;
}

size_t host_addrs_ipv6(const struct host_addrs *a, struct in6_addr *out, size_t max) {
        if (out && max)
                memcpy(out, a->ipv6, MIN(max, a->n_ipv6) * sizeof(*out));
        return a->n_ipv6;
}

uint64_t host_addrs_get_resyncs(const struct host_addrs *a) {
        return a->resyncs;
}
