/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The host role's kernel plumbing against the real kernel: address
 * following (agent/host/addrs.c) and sock_diag (agent/host/sockdiag.c).
 *
 * Everything runs in a private network namespace, entered once by the group
 * setup (unshare(CLONE_NEWNET)), so the host's addresses and connections
 * are never touched and every port is free. That needs root; without it,
 * each case that needs the namespace is skipped with the reason.
 *
 * Each sock_diag case uses its own port, so TIME_WAIT entries left by an
 * earlier case never show up in a later one's listing.
 *
 * Waiting is always "run the event loop (or poll the kernel) until the
 * condition holds or a deadline passes", never a sleep.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <systemd/sd-event.h>

#include "agent/host/addrs.h"
#include "agent/host/nl_util.h"
#include "agent/host/sockdiag.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/macro.h"

#define DEADLINE_USEC (5 * USEC_PER_SEC)

static char skip_reason[256]; /* empty when the namespace is ready */

#define REQUIRE_NETNS()                                                  \
        do {                                                             \
                if (skip_reason[0]) {                                    \
                        print_message("[   SKIP   ] %s\n", skip_reason); \
                        skip();                                          \
                }                                                        \
        } while (0)

/* ---- rtnetlink helpers (libnl route) ------------------------------------ */

static int rtnl_open(struct nl_sock **ret) {
        _cleanup_(nl_socket_freep) struct nl_sock *sk = nl_socket_alloc();
        int r;

        if (!sk)
                return -ENOMEM;
        r = nl_connect(sk, NETLINK_ROUTE);
        if (r < 0)
                return errno_from_nlerr(r);
        *ret = TAKE_PTR(sk);
        return 0;
}

static int link_set_up(const char *name) {
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        _cleanup_(rtnl_link_putp) struct rtnl_link *link = NULL, *change = NULL;
        int r;

        r = rtnl_open(&sk);
        if (r < 0)
                return r;
        r = rtnl_link_get_kernel(sk, 0, name, &link);
        if (r < 0)
                return errno_from_nlerr(r);
        change = rtnl_link_alloc();
        if (!change)
                return -ENOMEM;
        rtnl_link_set_flags(change, IFF_UP);
        return errno_from_nlerr(rtnl_link_change(sk, link, change, 0));
}

/* Adds or deletes "10.77.0.1/24"-style `text` on lo. With `lifetime` set,
 * replaces an existing address's lifetimes instead (a notification that
 * leaves the set of addresses unchanged). */
static int lo_addr(bool add, const char *text, uint32_t lifetime) {
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        _cleanup_(nl_addr_putp) struct nl_addr *local = NULL;
        _cleanup_(rtnl_addr_putp) struct rtnl_addr *ra = NULL;
        int r;

        r = rtnl_open(&sk);
        if (r < 0)
                return r;
        r = nl_addr_parse(text, AF_UNSPEC, &local);
        if (r < 0)
                return errno_from_nlerr(r);
        ra = rtnl_addr_alloc();
        if (!ra)
                return -ENOMEM;
        rtnl_addr_set_ifindex(ra, (int)if_nametoindex("lo"));
        r = rtnl_addr_set_local(ra, local);
        if (r < 0)
                return errno_from_nlerr(r);
        if (lifetime) {
                rtnl_addr_set_valid_lifetime(ra, lifetime);
                rtnl_addr_set_preferred_lifetime(ra, lifetime);
                return errno_from_nlerr(rtnl_addr_add(sk, ra, NLM_F_REPLACE));
        }
        return errno_from_nlerr(add ? rtnl_addr_add(sk, ra, 0) : rtnl_addr_delete(sk, ra, 0));
}

static uint32_t ipv4(const char *s) {
        struct in_addr a;

        assert_int_equal(inet_pton(AF_INET, s, &a), 1);
        return a.s_addr;
}

static struct in6_addr ipv6(const char *s) {
        struct in6_addr a;

        assert_int_equal(inet_pton(AF_INET6, s, &a), 1);
        return a;
}

/* ---- event loop helpers ------------------------------------------------- */

struct watch {
        struct host_addrs *addrs;
        unsigned calls;
        uint32_t v4; /* the address a case waits for */
        struct in6_addr v6;
        bool want; /* present or absent */
};

static void on_changed(struct host_addrs *a, void *userdata) {
        struct watch *w = userdata;

        assert_ptr_equal(a, w->addrs);
        w->calls++;
}

static bool v4_as_wanted(struct watch *w) {
        return host_addrs_is_local_ipv4(w->addrs, w->v4) == w->want;
}

static bool v6_as_wanted(struct watch *w) {
        return host_addrs_is_local_ipv6(w->addrs, &w->v6) == w->want;
}

/* Runs the loop until cond(w) or the deadline; returns whether it held. */
static bool run_until(sd_event *e, bool (*cond)(struct watch *), struct watch *w) {
        usec_t deadline = tsf_now_monotonic() + DEADLINE_USEC;

        while (!cond(w)) {
                usec_t now = tsf_now_monotonic();

                if (now >= deadline)
                        return false;
                assert_true(sd_event_run(e, deadline - now) >= 0);
        }
        return true;
}

/* ---- group setup -------------------------------------------------------- */

static int group_setup(void **state) {
        int r;

        if (geteuid() != 0) {
                snprintf(skip_reason, sizeof(skip_reason),
                         "needs root to enter a private network namespace (running as uid %u)", geteuid());
                return 0;
        }
        if (unshare(CLONE_NEWNET) < 0) {
                snprintf(skip_reason, sizeof(skip_reason), "unshare(CLONE_NEWNET) failed: %s",
                         strerror(errno));
                return 0;
        }
        r = link_set_up("lo");
        if (r < 0)
                snprintf(skip_reason, sizeof(skip_reason), "could not bring lo up: %s", strerror(-r));
        return 0;
}

/* ---- addresses ---------------------------------------------------------- */

static void test_addrs_initial_dump(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(host_addrs_freep) struct host_addrs *a = NULL;
        struct in6_addr loop6 = ipv6("::1"), v6[8];
        uint32_t v4[8];
        size_t n;

        REQUIRE_NETNS();
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(host_addrs_new(e, NULL, NULL, &a), 0);

        /* A fresh namespace with lo up has exactly 127.0.0.1 and ::1. */
        assert_true(host_addrs_is_local_ipv4(a, ipv4("127.0.0.1")));
        assert_false(host_addrs_is_local_ipv4(a, ipv4("127.0.0.2"))); /* routed to lo, not configured */
        assert_false(host_addrs_is_local_ipv4(a, ipv4("10.77.0.1")));
        n = host_addrs_ipv4(a, v4, ELEMENTSOF(v4));
        assert_int_equal(n, 1);
        assert_int_equal(v4[0], ipv4("127.0.0.1"));

        assert_true(host_addrs_is_local_ipv6(a, &loop6));
        n = host_addrs_ipv6(a, v6, ELEMENTSOF(v6));
        assert_int_equal(n, 1);
        assert_memory_equal(&v6[0], &loop6, sizeof(loop6));
        assert_int_equal(host_addrs_get_resyncs(a), 0);
}

static void test_addrs_follow_add_delete(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct watch w = {};
        unsigned calls;

        REQUIRE_NETNS();
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(host_addrs_new(e, on_changed, &w, &w.addrs), 0);

        assert_int_equal(lo_addr(true, "10.77.0.1/24", 0), 0);
        w.v4 = ipv4("10.77.0.1");
        w.want = true;
        assert_true(run_until(e, v4_as_wanted, &w));
        assert_true(w.calls >= 1);
        /* Only the address itself: not the rest of its prefix. */
        assert_false(host_addrs_is_local_ipv4(w.addrs, ipv4("10.77.0.2")));
        assert_true(host_addrs_is_local_ipv4(w.addrs, ipv4("127.0.0.1")));

        calls = w.calls;
        assert_int_equal(lo_addr(false, "10.77.0.1/24", 0), 0);
        w.want = false;
        assert_true(run_until(e, v4_as_wanted, &w));
        assert_true(w.calls > calls);

        /* IPv6 follows the same path. */
        calls = w.calls;
        assert_int_equal(lo_addr(true, "2001:db8:77::1/64", 0), 0);
        w.v6 = ipv6("2001:db8:77::1");
        w.want = true;
        assert_true(run_until(e, v6_as_wanted, &w));
        assert_true(w.calls > calls);
        assert_int_equal(host_addrs_ipv6(w.addrs, NULL, 0), 2);

        assert_int_equal(lo_addr(false, "2001:db8:77::1/64", 0), 0);
        w.want = false;
        assert_true(run_until(e, v6_as_wanted, &w));
        assert_int_equal(host_addrs_ipv6(w.addrs, NULL, 0), 1);

        host_addrs_free(w.addrs);
}

static void test_addrs_callback_only_on_set_change(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct watch w = {};
        unsigned calls;

        REQUIRE_NETNS();
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(host_addrs_new(e, on_changed, &w, &w.addrs), 0);

        assert_int_equal(lo_addr(true, "10.77.1.1/24", 0), 0);
        w.v4 = ipv4("10.77.1.1");
        w.want = true;
        assert_true(run_until(e, v4_as_wanted, &w));
        calls = w.calls;

        /* New lifetimes: the kernel sends RTM_NEWADDR, and queues it on our
         * socket before it acknowledges the request, so one loop iteration
         * is enough to dispatch it. The set is unchanged: no callback. */
        assert_int_equal(lo_addr(true, "10.77.1.1/24", 3600), 0);
        assert_true(sd_event_run(e, DEADLINE_USEC) > 0);
        assert_int_equal(w.calls, calls);

        /* A real change still gets through. */
        assert_int_equal(lo_addr(true, "10.77.1.2/24", 0), 0);
        w.v4 = ipv4("10.77.1.2");
        assert_true(run_until(e, v4_as_wanted, &w));
        assert_int_equal(w.calls, calls + 1);

        /* Secondary first: deleting a primary IPv4 address takes its
         * secondaries with it (unless promote_secondaries is set). */
        assert_int_equal(lo_addr(false, "10.77.1.2/24", 0), 0);
        assert_int_equal(lo_addr(false, "10.77.1.1/24", 0), 0);
        host_addrs_free(w.addrs);
}

static bool all_overflow_addrs(struct watch *w) {
        size_t n = 0;

        for (unsigned i = 1; i <= 64; i++)
                n += host_addrs_is_local_ipv4(w->addrs, htonl(0x0a4e0000u | i)); /* 10.78.0.i */
        return w->want ? n == 64 : n == 0;
}

static void test_addrs_resync_after_overrun(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct watch w = {};
        char text[32];

        REQUIRE_NETNS();
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(host_addrs_new(e, on_changed, &w, &w.addrs), 0);
        /* The smallest buffer the kernel allows holds a handful of
         * notifications; 64 changes while the loop is not running overrun
         * it for certain. */
        assert_int_equal(host_addrs_set_receive_buffer(w.addrs, 1), 0);

        for (unsigned i = 1; i <= 64; i++) {
                snprintf(text, sizeof(text), "10.78.0.%u/32", i);
                assert_int_equal(lo_addr(true, text, 0), 0);
        }
        w.want = true;
        assert_true(run_until(e, all_overflow_addrs, &w));
        assert_true(host_addrs_get_resyncs(w.addrs) >= 1);
        assert_int_equal(host_addrs_ipv4(w.addrs, NULL, 0), 65);

        for (unsigned i = 1; i <= 64; i++) {
                snprintf(text, sizeof(text), "10.78.0.%u/32", i);
                assert_int_equal(lo_addr(false, text, 0), 0);
        }
        w.want = false;
        assert_true(run_until(e, all_overflow_addrs, &w));
        assert_true(host_addrs_get_resyncs(w.addrs) >= 2);
        assert_int_equal(host_addrs_ipv4(w.addrs, NULL, 0), 1);
        host_addrs_free(w.addrs);
}

static void test_addrs_snapshot_truncates(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct watch w = {};
        uint32_t v4[2] = {0, 0xdeadbeef};

        REQUIRE_NETNS();
        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(host_addrs_new(e, on_changed, &w, &w.addrs), 0);
        assert_int_equal(lo_addr(true, "10.77.2.9/24", 0), 0);
        assert_int_equal(lo_addr(true, "10.77.2.10/24", 0), 0);
        w.v4 = ipv4("10.77.2.10");
        w.want = true;
        assert_true(run_until(e, v4_as_wanted, &w));

        /* Sorted by value: 10.77.2.9 < 10.77.2.10 < 127.0.0.1. The total
         * is returned even when only part of it fits. */
        assert_int_equal(host_addrs_ipv4(w.addrs, NULL, 0), 3);
        assert_int_equal(host_addrs_ipv4(w.addrs, v4, 1), 3);
        assert_int_equal(v4[0], ipv4("10.77.2.9"));
        assert_int_equal(v4[1], 0xdeadbeef);

        assert_int_equal(lo_addr(false, "10.77.2.10/24", 0), 0);
        assert_int_equal(lo_addr(false, "10.77.2.9/24", 0), 0);
        host_addrs_free(w.addrs);
}

/* ---- sockets ------------------------------------------------------------ */

static void set_timeouts(int fd) {
        struct timeval tv = {.tv_sec = 5};

        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
}

static socklen_t sockaddr_make(int family, const char *addr, uint16_t port, struct sockaddr_storage *ss) {
        memset(ss, 0, sizeof(*ss));
        if (family == AF_INET) {
                struct sockaddr_in *sin = (struct sockaddr_in *)ss;

                sin->sin_family = AF_INET;
                sin->sin_port = htons(port);
                assert_int_equal(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
                return sizeof(*sin);
        }
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
        return sizeof(*sin6);
}

static int tcp_listen(int family, const char *addr, uint16_t port) {
        struct sockaddr_storage ss;
        socklen_t len = sockaddr_make(family, addr, port, &ss);
        int fd, zero = 0;

        fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        if (family == AF_INET6) /* dual-stack, like xrdp on [::] */
                assert_int_equal(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)), 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
        assert_int_equal(listen(fd, 16), 0);
        set_timeouts(fd);
        return fd;
}

static int tcp_connect(int family, const char *addr, uint16_t port) {
        struct sockaddr_storage ss;
        socklen_t len = sockaddr_make(family, addr, port, &ss);
        int fd;

        fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        set_timeouts(fd);
        assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), 0);
        return fd;
}

static int tcp_accept(int listener) {
        int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);

        assert_true(fd >= 0);
        set_timeouts(fd);
        return fd;
}

static uint16_t port_of(int fd) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
        return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                             : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static uint64_t cookie_of(int fd) {
        uint64_t cookie = 0;
        socklen_t len = sizeof(cookie);

        assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len), 0);
        return cookie;
}

static uint32_t inode_of(int fd) {
        struct stat st;

        assert_int_equal(fstat(fd, &st), 0);
        return (uint32_t)st.st_ino;
}

/* recv() of one byte: 1, 0 at EOF, or -errno. */
static int recv_one(int fd) {
        char c;
        ssize_t n = recv(fd, &c, 1, 0);

        return n < 0 ? -errno : (int)n;
}

static void send_all(int fd, size_t len) {
        char buf[4096];

        memset(buf, 'x', sizeof(buf));
        while (len > 0) {
                ssize_t n = send(fd, buf, MIN(len, sizeof(buf)), MSG_NOSIGNAL);

                assert_true(n > 0);
                len -= (size_t)n;
        }
}

static void recv_all(int fd, size_t len) {
        char buf[4096];

        while (len > 0) {
                ssize_t n = recv(fd, buf, MIN(len, sizeof(buf)), 0);

                assert_true(n > 0);
                len -= (size_t)n;
        }
}

/* Waits for `fd` to become readable or fail; checks `want` is among the
 * events. POLLIN only, so an idle writable socket does not return early. */
static void assert_revents(int fd, short want) {
        struct pollfd p = {.fd = fd, .events = POLLIN};

        assert_int_equal(poll(&p, 1, (int)(DEADLINE_USEC / USEC_PER_MSEC)), 1);
        assert_int_equal(p.revents & want, want);
}

/* The connection still carries data both ways. */
static void assert_alive(int a, int b) {
        send_all(a, 3);
        recv_all(b, 3);
        send_all(b, 3);
        recv_all(a, 3);
}

#define MAX_SOCKS 16
struct collected {
        struct sockdiag_sock s[MAX_SOCKS];
        size_t n;
};

static int collect(const struct sockdiag_sock *s, void *userdata) {
        struct collected *c = userdata;

        assert_true(c->n < MAX_SOCKS);
        c->s[c->n++] = *s;
        return 0;
}

static int count(const struct sockdiag_sock *s, void *userdata) {
        (*(unsigned *)userdata)++;
        return 0;
}

static int list_port(uint16_t port, struct collected *c) {
        *c = (struct collected){};
        return sockdiag_list_tcp(port, collect, c);
}

static const struct sockdiag_sock *find_cookie(const struct collected *c, uint64_t cookie) {
        for (size_t i = 0; i < c->n; i++)
                if (c->s[i].cookie == cookie)
                        return &c->s[i];
        return NULL;
}

static struct sockdiag_tuple tuple_v4(const char *local, uint16_t lport, const char *remote,
                                      uint16_t rport) {
        struct sockdiag_tuple t = {.family = AF_INET, .local_port = lport, .remote_port = rport};

        t.local.in.s_addr = ipv4(local);
        t.remote.in.s_addr = ipv4(remote);
        return t;
}

/* The established server-side socket behind accepted fd `a`. */
static struct sockdiag_sock server_side(uint16_t port, int a) {
        struct collected c;
        const struct sockdiag_sock *s;

        assert_true(list_port(port, &c) >= 0);
        s = find_cookie(&c, cookie_of(a));
        assert_non_null(s);
        return *s;
}

static void test_sockdiag_lists_listener_and_accepted(void **state) {
        const uint16_t port = 33901;
        _cleanup_close_ int l = -1, c0 = -1, c1 = -1, c2 = -1, a0 = -1, a1 = -1, a2 = -1;
        struct collected c;
        struct sockdiag_filter f = {.family = AF_UNSPEC};
        int clients[3], accepted[3];

        REQUIRE_NETNS();
        l = tcp_listen(AF_INET, "127.0.0.1", port);
        clients[0] = c0 = tcp_connect(AF_INET, "127.0.0.1", port);
        clients[1] = c1 = tcp_connect(AF_INET, "127.0.0.1", port);
        clients[2] = c2 = tcp_connect(AF_INET, "127.0.0.1", port);
        accepted[0] = a0 = tcp_accept(l);
        accepted[1] = a1 = tcp_accept(l);
        accepted[2] = a2 = tcp_accept(l);

        /* By local port: the listener and the three server sides, not the
         * client sides (their local ports are ephemeral). */
        assert_int_equal(list_port(port, &c), 4);
        assert_int_equal(c.n, 4);

        const struct sockdiag_sock *s = find_cookie(&c, cookie_of(l));
        assert_non_null(s);
        assert_int_equal(s->state, TCP_LISTEN);
        assert_int_equal(s->tuple.family, AF_INET);
        assert_int_equal(s->sock_family, AF_INET);
        assert_int_equal(s->tuple.local.in.s_addr, ipv4("127.0.0.1"));
        assert_int_equal(s->tuple.local_port, port);
        assert_int_equal(s->tuple.remote.in.s_addr, 0);
        assert_int_equal(s->tuple.remote_port, 0);
        assert_int_equal(s->inode, inode_of(l));
        assert_int_equal(s->uid, geteuid());

        for (int i = 0; i < 3; i++) {
                s = find_cookie(&c, cookie_of(accepted[i]));
                assert_non_null(s);
                assert_int_equal(s->state, TCP_ESTABLISHED);
                assert_int_equal(s->tuple.local.in.s_addr, ipv4("127.0.0.1"));
                assert_int_equal(s->tuple.local_port, port);
                assert_int_equal(s->tuple.remote.in.s_addr, ipv4("127.0.0.1"));
                assert_int_equal(s->tuple.remote_port, port_of(clients[i]));
                assert_int_equal(s->inode, inode_of(accepted[i]));
                assert_int_equal(s->uid, geteuid());
                assert_true(s->has_tcp_info);
                assert_int_equal(s->total_retrans, 0);
        }

        /* By remote port: exactly the three client sides. */
        f.remote_port = port;
        c = (struct collected){};
        assert_int_equal(sockdiag_list_tcp_filtered(&f, collect, &c), 3);
        for (int i = 0; i < 3; i++) {
                s = find_cookie(&c, cookie_of(clients[i]));
                assert_non_null(s);
                assert_int_equal(s->state, TCP_ESTABLISHED);
                assert_int_equal(s->tuple.local_port, port_of(clients[i]));
                assert_int_equal(s->tuple.remote_port, port);
        }

        /* By state; by family; a port nobody uses. */
        f = (struct sockdiag_filter){.local_port = port, .states = SOCKDIAG_STATE_BIT(TCP_LISTEN)};
        c = (struct collected){};
        assert_int_equal(sockdiag_list_tcp_filtered(&f, collect, &c), 1);
        assert_int_equal(c.s[0].cookie, cookie_of(l));
        f = (struct sockdiag_filter){.family = AF_INET6, .local_port = port};
        assert_int_equal(sockdiag_list_tcp_filtered(&f, collect, &c), 0);
        assert_int_equal(list_port(port + 1, &c), 0);

        /* Port 0 lists every port: at least our 7 sockets. */
        unsigned n = 0;
        assert_true(sockdiag_list_tcp(0, count, &n) >= 7);
        assert_true(n >= 7);
}

static bool counters_settled(uint16_t port, int a, struct sockdiag_sock *out) {
        usec_t deadline = tsf_now_monotonic() + DEADLINE_USEC;

        /* The client's ACK of our 5000 bytes may be delayed a little. */
        do {
                *out = server_side(port, a);
                if (out->bytes_acked >= 5000)
                        return true;
        } while (tsf_now_monotonic() < deadline);
        return false;
}

static void test_sockdiag_tcp_info_counters(void **state) {
        const uint16_t port = 33902;
        _cleanup_close_ int l = -1, c = -1, a = -1;
        struct sockdiag_sock s;

        REQUIRE_NETNS();
        l = tcp_listen(AF_INET, "127.0.0.1", port);
        c = tcp_connect(AF_INET, "127.0.0.1", port);
        a = tcp_accept(l);

        s = server_side(port, a);
        assert_true(s.has_tcp_info);
        assert_int_equal(s.bytes_received, 0);
        assert_int_equal(s.bytes_acked, 0);

        send_all(c, 10000);
        recv_all(a, 10000);
        send_all(a, 5000);
        recv_all(c, 5000);

        assert_true(counters_settled(port, a, &s));
        print_message("server side after 10000 in / 5000 out: bytes_received=%" PRIu64
                      " bytes_acked=%" PRIu64 " bytes_sent=%" PRIu64 " rtt=%uus rttvar=%uus retrans=%u\n",
                      s.bytes_received, s.bytes_acked, s.bytes_sent, s.rtt_us, s.rttvar_us, s.total_retrans);
        assert_int_equal(s.bytes_received, 10000);
        assert_int_equal(s.bytes_acked, 5000); /* the SYN is not counted on the accepting side */
        assert_int_equal(s.bytes_sent, 5000);
        assert_true(s.rtt_us > 0);
        assert_int_equal(s.total_retrans, 0);
}

static void test_sockdiag_destroy_established(void **state) {
        const uint16_t port = 33903;
        _cleanup_close_ int l = -1, c0 = -1, c1 = -1, a0 = -1, a1 = -1;
        struct sockdiag_sock s, again;
        struct collected c;

        REQUIRE_NETNS();
        l = tcp_listen(AF_INET, "127.0.0.1", port);
        c0 = tcp_connect(AF_INET, "127.0.0.1", port);
        c1 = tcp_connect(AF_INET, "127.0.0.1", port);
        a0 = tcp_accept(l);
        a1 = tcp_accept(l);
        s = server_side(port, a0);

        assert_int_equal(sockdiag_get_tcp(&s.tuple, &again), 0);
        assert_int_equal(again.cookie, s.cookie);

        assert_int_equal(sockdiag_destroy_tcp(&s.tuple), 0);

        /* Measured: both ends wake up with POLLERR|POLLHUP (an event
         * loop's EPOLLERR/EPOLLHUP); the peer is reset; the owner's socket
         * reports the abort once, then reads as closed. */
        assert_revents(a0, POLLERR | POLLHUP);
        assert_revents(c0, POLLERR | POLLHUP);
        assert_int_equal(recv_one(c0), -ECONNRESET);
        assert_int_equal(recv_one(a0), -ECONNABORTED);
        assert_int_equal(recv_one(a0), 0);
        assert_int_equal(send(a0, "x", 1, MSG_NOSIGNAL), -1);
        assert_int_equal(errno, EPIPE);

        /* Gone at once on both ends (no TIME_WAIT): the listener and the
         * other connection remain. */
        assert_int_equal(list_port(port, &c), 2);
        assert_non_null(find_cookie(&c, cookie_of(l)));
        assert_non_null(find_cookie(&c, cookie_of(a1)));
        struct sockdiag_filter f = {.remote_port = port};
        c = (struct collected){};
        assert_int_equal(sockdiag_list_tcp_filtered(&f, collect, &c), 1);
        assert_int_equal(c.s[0].cookie, cookie_of(c1));

        assert_int_equal(sockdiag_get_tcp(&s.tuple, &again), -ENOENT);
        assert_int_equal(sockdiag_destroy_tcp(&s.tuple), -ENOENT);
        assert_alive(c1, a1);
}

static void test_sockdiag_destroy_client_side(void **state) {
        const uint16_t port = 33904;
        _cleanup_close_ int l = -1, c = -1, a = -1;
        struct sockdiag_tuple t;

        REQUIRE_NETNS();
        l = tcp_listen(AF_INET, "127.0.0.1", port);
        c = tcp_connect(AF_INET, "127.0.0.1", port);
        a = tcp_accept(l);

        /* The agent's own outgoing leg: our end is the ephemeral port. */
        t = tuple_v4("127.0.0.1", port_of(c), "127.0.0.1", port);
        assert_int_equal(sockdiag_destroy_tcp(&t), 0);
        assert_int_equal(recv_one(a), -ECONNRESET);
        assert_int_equal(recv_one(c), -ECONNABORTED);
}

static void test_sockdiag_destroy_nonexistent(void **state) {
        const uint16_t port = 33905;
        _cleanup_close_ int l = -1, c = -1, a = -1, c2 = -1, a2 = -1;
        struct sockdiag_tuple t;
        struct sockdiag_sock s;
        struct collected col;

        REQUIRE_NETNS();
        l = tcp_listen(AF_INET, "127.0.0.1", port);
        c = tcp_connect(AF_INET, "127.0.0.1", port);
        a = tcp_accept(l);

        /* No such connection, but a listener on the local port: the
         * kernel's own lookup would pick (and destroy) the listener. */
        t = tuple_v4("127.0.0.1", port, "127.0.0.1", 1);
        assert_int_equal(sockdiag_get_tcp(&t, &s), -ENOENT);
        assert_int_equal(sockdiag_destroy_tcp(&t), -ENOENT);
        /* Nothing at all on that port. */
        t = tuple_v4("127.0.0.1", port + 1, "127.0.0.1", 1);
        assert_int_equal(sockdiag_destroy_tcp(&t), -ENOENT);
        /* Nonsense. */
        t.family = AF_UNIX;
        assert_int_equal(sockdiag_destroy_tcp(&t), -EINVAL);
        assert_int_equal(sockdiag_destroy_tcp(NULL), -EINVAL);

        /* The listener and the connection are untouched. */
        assert_int_equal(list_port(port, &col), 2);
        assert_non_null(find_cookie(&col, cookie_of(l)));
        assert_int_equal(find_cookie(&col, cookie_of(l))->state, TCP_LISTEN);
        c2 = tcp_connect(AF_INET, "127.0.0.1", port);
        a2 = tcp_accept(l);
        assert_alive(c, a);
        assert_alive(c2, a2);
}

static void test_sockdiag_destroy_by_cookie(void **state) {
        const uint16_t port = 33906;
        _cleanup_close_ int l = -1, c = -1, a = -1;
        struct sockdiag_sock s;

        REQUIRE_NETNS();
        l = tcp_listen(AF_INET, "127.0.0.1", port);
        c = tcp_connect(AF_INET, "127.0.0.1", port);
        a = tcp_accept(l);
        s = server_side(port, a);
        assert_int_equal(s.cookie, cookie_of(a));

        /* Same tuple, other socket (as after the port was reused). */
        assert_int_equal(sockdiag_destroy_tcp_cookie(&s.tuple, s.cookie + 1), -ENOENT);
        assert_int_equal(sockdiag_destroy_tcp_cookie(&s.tuple, UINT64_MAX), -EINVAL);
        assert_alive(c, a);

        assert_int_equal(sockdiag_destroy_tcp_cookie(&s.tuple, s.cookie), 0);
        assert_int_equal(recv_one(c), -ECONNRESET);
        assert_int_equal(recv_one(a), -ECONNABORTED);
        assert_int_equal(sockdiag_destroy_tcp_cookie(&s.tuple, s.cookie), -ENOENT);
}

static void test_sockdiag_destroy_listener(void **state) {
        const uint16_t port = 33907;
        _cleanup_close_ int l = -1, c = -1, a = -1, queued = -1;
        struct sockdiag_tuple t = tuple_v4("127.0.0.1", port, "0.0.0.0", 0);
        struct sockdiag_sock s;
        struct sockaddr_storage ss;
        socklen_t len = sockaddr_make(AF_INET, "127.0.0.1", port, &ss);
        int fd;

        REQUIRE_NETNS();
        l = tcp_listen(AF_INET, "127.0.0.1", port);
        c = tcp_connect(AF_INET, "127.0.0.1", port);
        a = tcp_accept(l);
        queued = tcp_connect(AF_INET, "127.0.0.1", port); /* never accepted */

        assert_int_equal(sockdiag_get_tcp(&t, &s), 0);
        assert_int_equal(s.state, TCP_LISTEN);
        assert_int_equal(sockdiag_destroy_tcp(&t), 0);

        /* Measured: the listener stops (accept fails with EINVAL, as on a
         * socket that never listened), new connections are refused, the
         * connection still in its accept queue is reset, and connections
         * already accepted carry on. */
        assert_int_equal(accept(l, NULL, NULL), -1);
        assert_int_equal(errno, EINVAL);
        assert_int_equal(recv_one(queued), -ECONNRESET);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), -1);
        assert_int_equal(errno, ECONNREFUSED);
        close(fd);
        assert_alive(c, a);
}

static void test_sockdiag_destroy_needs_cap_net_admin(void **state) {
        const uint16_t port = 33908;
        _cleanup_close_ int l = -1, c = -1, a = -1;
        struct sockdiag_sock s;
        int status;
        pid_t pid;

        REQUIRE_NETNS();
        l = tcp_listen(AF_INET, "127.0.0.1", port);
        c = tcp_connect(AF_INET, "127.0.0.1", port);
        a = tcp_accept(l);
        s = server_side(port, a);

        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct collected col;
                int r;

                /* nobody: no capabilities left. Listing needs none. */
                if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
                    setresuid(65534, 65534, 65534) < 0)
                        _exit(100);
                if (list_port(port, &col) != 2)
                        _exit(101);
                r = sockdiag_destroy_tcp(&s.tuple);
                _exit(r == -EPERM ? 0 : r < 0 ? MIN(-r, 99) : 102);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
        assert_alive(c, a);
}

static void test_sockdiag_ipv6_and_dual_stack(void **state) {
        const uint16_t port = 33909;
        _cleanup_close_ int l = -1, c4 = -1, c4b = -1, c6 = -1, a4 = -1, a4b = -1, a6 = -1;
        struct in6_addr loop6 = ipv6("::1"), any6 = ipv6("::");
        const struct sockdiag_sock *s;
        struct sockdiag_tuple mapped;
        struct collected c;

        REQUIRE_NETNS();
        l = tcp_listen(AF_INET6, "::", port);
        c4 = tcp_connect(AF_INET, "127.0.0.1", port);
        a4 = tcp_accept(l);
        c4b = tcp_connect(AF_INET, "127.0.0.1", port);
        a4b = tcp_accept(l);
        c6 = tcp_connect(AF_INET6, "::1", port);
        a6 = tcp_accept(l);

        assert_int_equal(list_port(port, &c), 4);
        s = find_cookie(&c, cookie_of(l));
        assert_non_null(s);
        assert_int_equal(s->tuple.family, AF_INET6);
        assert_memory_equal(&s->tuple.local.in6, &any6, 16);

        /* An IPv4 client of a dual-stack listener: an IPv6 socket, reported
         * with its IPv4 addresses. */
        s = find_cookie(&c, cookie_of(a4));
        assert_non_null(s);
        assert_int_equal(s->sock_family, AF_INET6);
        assert_int_equal(s->tuple.family, AF_INET);
        assert_int_equal(s->tuple.local.in.s_addr, ipv4("127.0.0.1"));
        assert_int_equal(s->tuple.remote.in.s_addr, ipv4("127.0.0.1"));
        assert_int_equal(s->tuple.remote_port, port_of(c4));
        assert_int_equal(sockdiag_destroy_tcp(&s->tuple), 0);
        assert_int_equal(recv_one(c4), -ECONNRESET);
        assert_int_equal(recv_one(a4), -ECONNABORTED);

        /* The same connection spelled as ::ffff:127.0.0.1 works too. */
        s = find_cookie(&c, cookie_of(a4b));
        assert_non_null(s);
        mapped =
                (struct sockdiag_tuple){.family = AF_INET6, .local_port = port, .remote_port = port_of(c4b)};
        assert_int_equal(inet_pton(AF_INET6, "::ffff:127.0.0.1", &mapped.local.in6), 1);
        mapped.remote.in6 = mapped.local.in6;
        assert_int_equal(sockdiag_destroy_tcp(&mapped), 0);
        assert_int_equal(recv_one(c4b), -ECONNRESET);

        s = find_cookie(&c, cookie_of(a6));
        assert_non_null(s);
        assert_int_equal(s->sock_family, AF_INET6);
        assert_int_equal(s->tuple.family, AF_INET6);
        assert_memory_equal(&s->tuple.local.in6, &loop6, 16);
        assert_memory_equal(&s->tuple.remote.in6, &loop6, 16);
        assert_int_equal(sockdiag_destroy_tcp(&s->tuple), 0);
        assert_int_equal(recv_one(c6), -ECONNRESET);

        assert_int_equal(list_port(port, &c), 1);
}

static int stop_after_one(const struct sockdiag_sock *s, void *userdata) {
        unsigned *calls = userdata;

        (*calls)++;
        return -ECANCELED;
}

static void test_sockdiag_callback_stops_listing(void **state) {
        const uint16_t port = 33910;
        _cleanup_close_ int l = -1, c = -1, a = -1;
        struct sockdiag_filter bad = {.family = AF_UNIX};
        unsigned calls = 0;

        REQUIRE_NETNS();
        l = tcp_listen(AF_INET, "127.0.0.1", port);
        c = tcp_connect(AF_INET, "127.0.0.1", port);
        a = tcp_accept(l);

        assert_int_equal(sockdiag_list_tcp(port, stop_after_one, &calls), -ECANCELED);
        assert_int_equal(calls, 1);
        assert_int_equal(sockdiag_list_tcp_filtered(&bad, stop_after_one, &calls), -EINVAL);
        assert_int_equal(sockdiag_list_tcp(port, NULL, NULL), -EINVAL);
}

static void test_sockdiag_strings(void **state) {
        char buf[SOCKDIAG_TUPLE_STRING_MAX];
        struct sockdiag_tuple t = {.family = AF_INET6, .local_port = 3389, .remote_port = 50122};

        assert_string_equal(sockdiag_state_to_string(TCP_ESTABLISHED), "ESTABLISHED");
        assert_string_equal(sockdiag_state_to_string(TCP_LISTEN), "LISTEN");
        assert_string_equal(sockdiag_state_to_string(TCP_TIME_WAIT), "TIME_WAIT");
        assert_string_equal(sockdiag_state_to_string(0), "UNKNOWN");
        assert_string_equal(sockdiag_state_to_string(200), "UNKNOWN");

        assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &t.local.in6), 1);
        assert_int_equal(inet_pton(AF_INET6, "2001:db8::2", &t.remote.in6), 1);
        assert_string_equal(sockdiag_tuple_to_string(&t, buf, sizeof(buf)),
                            "[2001:db8::1]:3389 <-> [2001:db8::2]:50122");
        t = tuple_v4("192.0.2.7", 3389, "198.51.100.4", 50122);
        assert_string_equal(sockdiag_tuple_to_string(&t, buf, sizeof(buf)),
                            "192.0.2.7:3389 <-> 198.51.100.4:50122");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_addrs_initial_dump),
                cmocka_unit_test(test_addrs_follow_add_delete),
                cmocka_unit_test(test_addrs_callback_only_on_set_change),
                cmocka_unit_test(test_addrs_resync_after_overrun),
                cmocka_unit_test(test_addrs_snapshot_truncates),
                cmocka_unit_test(test_sockdiag_lists_listener_and_accepted),
                cmocka_unit_test(test_sockdiag_tcp_info_counters),
                cmocka_unit_test(test_sockdiag_destroy_established),
                cmocka_unit_test(test_sockdiag_destroy_client_side),
                cmocka_unit_test(test_sockdiag_destroy_nonexistent),
                cmocka_unit_test(test_sockdiag_destroy_by_cookie),
                cmocka_unit_test(test_sockdiag_destroy_listener),
                cmocka_unit_test(test_sockdiag_destroy_needs_cap_net_admin),
                cmocka_unit_test(test_sockdiag_ipv6_and_dual_stack),
                cmocka_unit_test(test_sockdiag_callback_stops_listing),
                cmocka_unit_test(test_sockdiag_strings),
        };

        return cmocka_run_group_tests_name("netlink", tests, group_setup, NULL);
}
