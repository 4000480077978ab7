/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * BPF tier: the steering (sk_lookup) and tracking (sockops) programs,
 * loaded from their skeletons on the running kernel.
 *
 *   - steer dispatch table through BPF_PROG_TEST_RUN: real listening
 *     sockets, the selected socket read back from ctx.cookie, the per-CPU
 *     counters summed and compared field by field;
 *   - steer attached to the test's network namespace with real loopback
 *     connections;
 *   - track attached to a test cgroup v2 with real loopback connections,
 *     close events read from the ring buffer with a deadline.
 *
 * Runs in its own mount and network namespaces (created here), so sockets
 * and the RDP port never clash with the host; pins go to a unique
 * directory under /sys/fs/bpf (mounted privately if the host has no
 * bpffs there) and the test cgroup is a unique directory; both are removed
 * at the end. Needs root; otherwise every test is skipped with the reason.
 *
 * TSFARM_TEST_RDP_PORT sets the RDP port the end-to-end tests use
 * (default 3389: free inside the private namespace).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/magic.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cmocka.h>

#include "abi/tsfarm_abi.h"
#include "bpf/steer.skel.h"
#include "bpf/track.skel.h"
#include "tsfarm/macro.h"
#include "tsfarm/maps.h"

#define DEADLINE_MS 5000
#define CLIENT_PORT 50000
#define LOCAL_ADDR "10.0.0.1"
#define SELF_ID 1
#define OTHER_ID 2

/* ---- environment ---------------------------------------------------------- */

static struct {
        const char *skip_reason; /* non-NULL: every test skips */
        char skip_buf[256];
        const char *cgroup_skip_reason; /* non-NULL: the cgroup tests skip */
        char cgroup_skip_buf[256];
        char pin_root[PATH_MAX];
        char cg_mount[PATH_MAX];     /* a cgroup2 mount point */
        char cg_tmp_mount[PATH_MAX]; /* set if we mounted it ourselves */
        char cg_test[PATH_MAX];      /* the test cgroup */
        char cg_home[PATH_MAX];      /* cgroup.procs of the cgroup we started in */
        __u16 rdp_port;
        int ncpus;
} env;

#define REQUIRE_ENV()                                                    \
        do {                                                             \
                if (env.skip_reason) {                                   \
                        print_message("skipped: %s\n", env.skip_reason); \
                        skip();                                          \
                }                                                        \
        } while (0)

#define REQUIRE_CGROUP()                                                        \
        do {                                                                    \
                REQUIRE_ENV();                                                  \
                if (env.cgroup_skip_reason) {                                   \
                        print_message("skipped: %s\n", env.cgroup_skip_reason); \
                        skip();                                                 \
                }                                                               \
        } while (0)

static void set_skip(char *buf, size_t size, const char **reason, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        *reason = buf;
}

static int write_file(const char *path, const char *text) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0)
                return negative_errno();
        n = write(fd, text, strlen(text));
        int r = n < 0 ? negative_errno() : 0;
        close(fd);
        return r;
}

static int loopback_up(void) {
        struct ifreq ifr = {0};
        int fd, r = 0;

        fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        strcpy(ifr.ifr_name, "lo");
        if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
                r = negative_errno();
        ifr.ifr_flags |= IFF_UP;
        if (r == 0 && ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
                r = negative_errno();
        close(fd);
        return r;
}

/* The first cgroup2 mount in /proc/self/mountinfo. */
static bool find_cgroup2(char *out, size_t size) {
        char line[4096];
        bool found = false;
        FILE *f = fopen("/proc/self/mountinfo", "re");

        if (!f)
                return false;
        while (!found && fgets(line, sizeof(line), f)) {
                char mnt[PATH_MAX], *sep = strstr(line, " - ");

                if (!sep || strncmp(sep, " - cgroup2 ", 11) != 0)
                        continue;
                if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) == 1) {
                        snprintf(out, size, "%s", mnt);
                        found = true;
                }
        }
        fclose(f);
        return found;
}

/* cgroup.procs of the cgroup v2 this process is in ("0::/path"). */
static bool find_home_cgroup(char *out, size_t size) {
        char line[4096];
        bool found = false;
        FILE *f = fopen("/proc/self/cgroup", "re");

        if (!f)
                return false;
        while (!found && fgets(line, sizeof(line), f)) {
                if (strncmp(line, "0::", 3) != 0)
                        continue;
                line[strcspn(line, "\n")] = 0;
                if (snprintf(out, size, "%s%s/cgroup.procs", env.cg_mount,
                             strcmp(line + 3, "/") ? line + 3 : "") >= (int)size)
                        break;
                found = true;
        }
        fclose(f);
        return found;
}

static void setup_cgroup(void) {
        if (!find_cgroup2(env.cg_mount, sizeof(env.cg_mount))) {
                /* No cgroup2 on the host: mount one in our mount namespace. */
                snprintf(env.cg_tmp_mount, sizeof(env.cg_tmp_mount), "/tmp/tsfarm-cg2-XXXXXX");
                if (!mkdtemp(env.cg_tmp_mount) ||
                    mount("cgroup2", env.cg_tmp_mount, "cgroup2", 0, NULL) < 0) {
                        set_skip(env.cgroup_skip_buf, sizeof(env.cgroup_skip_buf), &env.cgroup_skip_reason,
                                 "no cgroup v2 hierarchy and mounting one failed: %s", strerror(errno));
                        if (env.cg_tmp_mount[0])
                                rmdir(env.cg_tmp_mount);
                        env.cg_tmp_mount[0] = 0;
                        return;
                }
                snprintf(env.cg_mount, sizeof(env.cg_mount), "%s", env.cg_tmp_mount);
        }
        if (!find_home_cgroup(env.cg_home, sizeof(env.cg_home))) {
                set_skip(env.cgroup_skip_buf, sizeof(env.cgroup_skip_buf), &env.cgroup_skip_reason,
                         "cannot tell which cgroup v2 this process is in");
                return;
        }
        if (snprintf(env.cg_test, sizeof(env.cg_test), "%s/tsfarm-test-XXXXXX", env.cg_mount) >=
                    (int)sizeof(env.cg_test) ||
            !mkdtemp(env.cg_test)) {
                set_skip(env.cgroup_skip_buf, sizeof(env.cgroup_skip_buf), &env.cgroup_skip_reason,
                         "cannot create a test cgroup under %s: %s", env.cg_mount, strerror(errno));
                env.cg_test[0] = 0;
        }
}

static int group_setup(void **state) {
        struct statfs sfs;
        const char *port;

        env.rdp_port = TSF_RDP_PORT_DEFAULT;
        port = getenv("TSFARM_TEST_RDP_PORT");
        if (port && *port) {
                long p = strtol(port, NULL, 10);

                if (p <= 0 || p > 65535) {
                        fprintf(stderr, "TSFARM_TEST_RDP_PORT=%s is not a port\n", port);
                        return -1;
                }
                env.rdp_port = (__u16)p;
        }

        if (geteuid() != 0) {
                env.skip_reason = "needs root (BPF, namespaces, cgroups)";
                return 0;
        }
        if (unshare(CLONE_NEWNS | CLONE_NEWNET) < 0) {
                set_skip(env.skip_buf, sizeof(env.skip_buf), &env.skip_reason,
                         "unshare(CLONE_NEWNS|CLONE_NEWNET) failed: %s", strerror(errno));
                return 0;
        }
        /* Nothing mounted from here on leaks to the host. */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 || loopback_up() < 0) {
                set_skip(env.skip_buf, sizeof(env.skip_buf), &env.skip_reason,
                         "cannot set up the private namespaces: %s", strerror(errno));
                return 0;
        }
        if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_LOOKUP, NULL) <= 0) {
                env.skip_reason = "the kernel cannot load sk_lookup programs";
                return 0;
        }
        if (statfs("/sys/fs/bpf", &sfs) < 0 || sfs.f_type != BPF_FS_MAGIC) {
                if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") < 0) {
                        set_skip(env.skip_buf, sizeof(env.skip_buf), &env.skip_reason,
                                 "no bpffs at /sys/fs/bpf and mounting one failed: %s", strerror(errno));
                        return 0;
                }
        }
        snprintf(env.pin_root, sizeof(env.pin_root), "/sys/fs/bpf/tsfarm-test-XXXXXX");
        if (!mkdtemp(env.pin_root)) {
                set_skip(env.skip_buf, sizeof(env.skip_buf), &env.skip_reason, "cannot create %s: %s",
                         env.pin_root, strerror(errno));
                env.pin_root[0] = 0;
                return 0;
        }
        env.ncpus = libbpf_num_possible_cpus();
        if (env.ncpus <= 0) {
                env.skip_reason = "cannot count possible CPUs";
                return 0;
        }
        setup_cgroup();
        return 0;
}

static int group_teardown(void **state) {
        if (env.pin_root[0] && rmdir(env.pin_root) < 0)
                fprintf(stderr, "warning: pins left in %s: %s\n", env.pin_root, strerror(errno));
        if (env.cg_test[0] && rmdir(env.cg_test) < 0)
                fprintf(stderr, "warning: cannot remove %s: %s\n", env.cg_test, strerror(errno));
        if (env.cg_tmp_mount[0]) {
                umount2(env.cg_tmp_mount, MNT_DETACH);
                rmdir(env.cg_tmp_mount);
        }
        return 0;
}

/* ---- small helpers ------------------------------------------------------ */

static __be32 ip4(const char *s) {
        struct in_addr a;

        assert_int_equal(inet_pton(AF_INET, s, &a), 1);
        return a.s_addr;
}

static __u64 now_ns(void) {
        struct timespec ts;

        /* bpf_ktime_get_ns() is CLOCK_MONOTONIC. */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
}

static __u64 sock_cookie(int fd) {
        __u64 cookie = 0;
        socklen_t len = sizeof(cookie);

        assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len), 0);
        assert_int_not_equal(cookie, 0);
        return cookie;
}

static __u16 sock_port(int fd, bool peer) {
        struct sockaddr_in sa;
        socklen_t len = sizeof(sa);

        assert_int_equal(peer ? getpeername(fd, (struct sockaddr *)&sa, &len)
                              : getsockname(fd, (struct sockaddr *)&sa, &len),
                         0);
        return ntohs(sa.sin_port);
}

static int make_listener(const char *ip, __u16 port) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = ip4(ip)};
        int one = 1, fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        assert_int_equal(listen(fd, 16), 0);
        return fd;
}

/* A dual-stack listener on [::]:port, the way xrdp listens: IPv4
 * connections arrive on it as IPv4-mapped IPv6 (::ffff:a.b.c.d). */
static int make_dual_stack_listener(__u16 port) {
        struct sockaddr_in6 sa = {
                .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_ANY_INIT};
        int one = 1, zero = 0, fd;

        fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
        assert_int_equal(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)), 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        assert_int_equal(listen(fd, 16), 0);
        return fd;
}

/* Connects from src (any port) to dst:port; blocking, so the handshake is
 * done (and every program has run) when it returns. */
static int make_client(const char *src, const char *dst, __u16 port) {
        struct sockaddr_in from = {.sin_family = AF_INET, .sin_addr.s_addr = ip4(src)};
        struct sockaddr_in to = {
                .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = ip4(dst)};
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&from, sizeof(from)), 0);
        if (connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0)
                fail_msg("connect %s -> %s:%u: %s", src, dst, port, strerror(errno));
        return fd;
}

/* Accepts within the deadline, or fails the test. */
static int accept_within(int lfd) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        int fd;

        assert_int_equal(poll(&p, 1, DEADLINE_MS), 1);
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        assert_true(fd >= 0);
        return fd;
}

static void write_all(int fd, size_t n) {
        char buf[4096];

        memset(buf, 'x', sizeof(buf));
        while (n > 0) {
                ssize_t w = write(fd, buf, MIN(n, sizeof(buf)));

                assert_true(w > 0);
                n -= (size_t)w;
        }
}

static void read_exactly(int fd, size_t n) {
        char buf[4096];

        while (n > 0) {
                ssize_t r = read(fd, buf, MIN(n, sizeof(buf)));

                assert_true(r > 0);
                n -= (size_t)r;
        }
}

/* Waits for the peer's FIN (read returns 0). */
static void expect_eof(int fd) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char b;

        assert_int_equal(poll(&p, 1, DEADLINE_MS), 1);
        assert_int_equal(read(fd, &b, 1), 0);
}

/* Unpins every map of the object; errors ignored, because maps shared
 * with another object may already be gone. */
static void unpin_all(struct bpf_object *obj) {
        struct bpf_map *map;

        bpf_object__for_each_map(map, obj) {
                if (bpf_map__pin_path(map))
                        (void)bpf_map__unpin(map, NULL);
        }
}

static __u32 map_id(const struct bpf_map *map) {
        struct bpf_map_info info = {0};
        __u32 len = sizeof(info);

        assert_int_equal(bpf_obj_get_info_by_fd(bpf_map__fd(map), &info, &len), 0);
        return info.id;
}

/* ---- stats ---------------------------------------------------------------- */

/* Sums the per-CPU copies: the kernel hands back one value per possible
 * CPU, each rounded up to 8 bytes (tsf_stats already is). */
static void stats_read(const struct bpf_map *map, struct tsf_stats *out) {
        struct tsf_stats *percpu = calloc((size_t)env.ncpus, sizeof(*percpu));
        __u32 zero = 0;

        assert_non_null(percpu);
        assert_int_equal(bpf_map_lookup_elem(bpf_map__fd(map), &zero, percpu), 0);
        memset(out, 0, sizeof(*out));
        for (int cpu = 0; cpu < env.ncpus; cpu++) {
                const __u64 *src = (const __u64 *)&percpu[cpu];
                __u64 *dst = (__u64 *)out;

                for (size_t i = 0; i < TSF_STATS_COUNT; i++)
                        dst[i] += src[i];
        }
        free(percpu);
}

/* after - before must equal want, counter by counter. */
static void stats_expect_delta(const struct tsf_stats *before, const struct tsf_stats *after,
                               const struct tsf_stats *want, const char *what) {
        const __u64 *b = (const __u64 *)before, *a = (const __u64 *)after, *w = (const __u64 *)want;
        bool ok = true;

        for (size_t i = 0; i < TSF_STATS_COUNT; i++) {
                if (a[i] - b[i] != w[i]) {
                        print_error("%s: stats.%s changed by %llu, expected %llu\n", what, tsf_stat_names[i],
                                    (unsigned long long)(a[i] - b[i]), (unsigned long long)w[i]);
                        ok = false;
                }
        }
        assert_true(ok);
}

/* ---- fixture -------------------------------------------------------------- */

struct fixture {
        const void *param; /* the table case, for table-driven tests */
        struct steer *steer;
        struct track *track;
        struct bpf_link *link;
        struct ring_buffer *rb;
        bool in_test_cgroup;
        int fds[16];
};

static int fixture_setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        if (!f)
                return -1;
        f->param = *state;
        for (size_t i = 0; i < ELEMENTSOF(f->fds); i++)
                f->fds[i] = -1;
        *state = f;
        return 0;
}

static int fixture_teardown(void **state) {
        struct fixture *f = *state;

        if (f->in_test_cgroup && write_file(env.cg_home, "0") < 0)
                fprintf(stderr, "warning: cannot move back to %s\n", env.cg_home);
        ring_buffer__free(f->rb);
        bpf_link__destroy(f->link);
        for (size_t i = 0; i < ELEMENTSOF(f->fds); i++)
                if (f->fds[i] >= 0)
                        close(f->fds[i]);
        if (f->track) {
                unpin_all(f->track->obj);
                track__destroy(f->track);
        }
        if (f->steer) {
                unpin_all(f->steer->obj);
                steer__destroy(f->steer);
        }
        free(f);
        return 0;
}

/* Remembers fd so teardown closes it even when an assertion fails. */
static int keep_fd(struct fixture *f, int fd) {
        for (size_t i = 0; i < ELEMENTSOF(f->fds); i++) {
                if (f->fds[i] < 0) {
                        f->fds[i] = fd;
                        return fd;
                }
        }
        fail_msg("fixture out of fd slots");
        return -1;
}

static void close_kept(struct fixture *f, int fd) {
        for (size_t i = 0; i < ELEMENTSOF(f->fds); i++)
                if (f->fds[i] == fd)
                        f->fds[i] = -1;
        close(fd);
}

static void load_steer(struct fixture *f) {
        LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = env.pin_root);
        int r;

        f->steer = steer__open_opts(&opts);
        assert_non_null(f->steer);
        r = steer__load(f->steer);
        if (r < 0)
                fail_msg("loading steer.bpf.o: %s", strerror(-r));
}

static void load_track(struct fixture *f) {
        LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = env.pin_root);
        int r;

        f->track = track__open_opts(&opts);
        assert_non_null(f->track);
        r = track__load(f->track);
        if (r < 0)
                fail_msg("loading track.bpf.o: %s", strerror(-r));
}

static void set_config(const struct bpf_map *map, __u32 self_id, __u16 rdp_port) {
        struct tsf_config cfg = {
                .abi_version = TSF_ABI_VERSION, .self_node_id = self_id, .rdp_port = rdp_port};
        __u32 zero = 0;

        assert_int_equal(bpf_map_update_elem(bpf_map__fd(map), &zero, &cfg, BPF_ANY), 0);
}

static void add_node(const struct bpf_map *map, const char *addr, __u32 id, __u16 flags) {
        struct tsf_node_key key = {.addr = ip4(addr)};
        struct tsf_node_value val = {
                .node_id = id, .rdp_port = htons(TSF_RDP_PORT_DEFAULT), .flags = flags, .weight = 100};

        assert_int_equal(bpf_map_update_elem(bpf_map__fd(map), &key, &val, BPF_ANY), 0);
}

static void add_affinity(const struct bpf_map *map, const char *addr, __u32 node, __u32 flags,
                         __s64 expires_in_ns) {
        struct tsf_affinity_key key = {.addr = ip4(addr)};
        struct tsf_affinity_value val = {.node_id = node,
                                         .flags = flags,
                                         .user_hash = tsf_user_key_hash("alice", 5),
                                         .expires_ns = now_ns() + (__u64)expires_in_ns};

        assert_int_equal(bpf_map_update_elem(bpf_map__fd(map), &key, &val, BPF_ANY), 0);
}

static void set_gateway(const struct bpf_map *map, int fd) {
        __u32 slot = TSF_GATEWAY_SLOT;
        __u64 value = (__u64)fd;

        assert_int_equal(bpf_map_update_elem(bpf_map__fd(map), &slot, &value, BPF_ANY), 0);
}

/* ---- steer: the dispatch table (BPF_PROG_TEST_RUN) ------------------------ */

enum affinity_kind { AFF_NONE, AFF_FRESH, AFF_EXPIRED, AFF_MULTI_USER, AFF_OTHER_NODE };

struct steer_case {
        const char *name;
        __u32 family;      /* 0: AF_INET */
        __u32 protocol;    /* 0: IPPROTO_TCP */
        __u16 local_port;  /* 0: TSF_RDP_PORT_DEFAULT */
        __u16 config_port; /* tsf_config.rdp_port (0: default) */
        __u32 self_id;     /* tsf_config.self_node_id */
        __u16 node_flags;  /* non-zero: the client address is in nodes */
        enum affinity_kind affinity;
        bool gateway;        /* the gateway slot holds a listener */
        bool expect_gateway; /* the lookup selects the gateway socket */
        struct tsf_stats delta;
};

#define CLIENT "192.0.2.10"

static const struct steer_case steer_cases[] = {
        {
                .name = "non-RDP port is untouched",
                .local_port = 22,
                .self_id = SELF_ID,
                .gateway = true,
        },
        {
                .name = "UDP to the RDP port is untouched",
                .protocol = IPPROTO_UDP,
                .self_id = SELF_ID,
                .gateway = true,
        },
        {
                .name = "IPv6 is untouched",
                .family = AF_INET6,
                .self_id = SELF_ID,
                .gateway = true,
        },
        {
                .name = "peer source goes to the local RDP server",
                .self_id = SELF_ID,
                .node_flags = TSF_NODE_F_PEER,
                .affinity = AFF_OTHER_NODE, /* the node table wins over affinity */
                .gateway = true,
                .delta = {.lookup_total = 1, .to_local_peer = 1},
        },
        {
                .name = "bypass source (the agent's own leg) goes to the local RDP server",
                .self_id = SELF_ID,
                .node_flags = TSF_NODE_F_SELF | TSF_NODE_F_BYPASS,
                .gateway = true,
                .delta = {.lookup_total = 1, .to_local_peer = 1},
        },
        {
                .name = "fresh affinity to this node goes to the local RDP server",
                .self_id = SELF_ID,
                .affinity = AFF_FRESH,
                .gateway = true,
                .delta = {.lookup_total = 1, .to_local_affinity = 1},
        },
        {
                .name = "expired affinity goes to the gateway",
                .self_id = SELF_ID,
                .affinity = AFF_EXPIRED,
                .gateway = true,
                .expect_gateway = true,
                .delta = {.lookup_total = 1, .affinity_expired = 1, .to_gateway = 1},
        },
        {
                .name = "multi-user affinity goes to the gateway",
                .self_id = SELF_ID,
                .affinity = AFF_MULTI_USER,
                .gateway = true,
                .expect_gateway = true,
                .delta = {.lookup_total = 1, .affinity_multi_user = 1, .to_gateway = 1},
        },
        {
                .name = "affinity to another node goes to the gateway",
                .self_id = SELF_ID,
                .affinity = AFF_OTHER_NODE,
                .gateway = true,
                .expect_gateway = true,
                .delta = {.lookup_total = 1, .affinity_other_node = 1, .to_gateway = 1},
        },
        {
                .name = "affinity with self unknown goes to the gateway",
                .self_id = TSF_NODE_ID_NONE,
                .affinity = AFF_FRESH,
                .gateway = true,
                .expect_gateway = true,
                .delta = {.lookup_total = 1, .affinity_other_node = 1, .to_gateway = 1},
        },
        {
                .name = "unknown client goes to the gateway",
                .self_id = SELF_ID,
                .gateway = true,
                .expect_gateway = true,
                .delta = {.lookup_total = 1, .to_gateway = 1},
        },
        {
                .name = "empty gateway slot fails open",
                .self_id = SELF_ID,
                .delta = {.lookup_total = 1, .fail_open = 1},
        },
        {
                .name = "expired affinity with empty gateway slot fails open",
                .self_id = SELF_ID,
                .affinity = AFF_EXPIRED,
                .delta = {.lookup_total = 1, .affinity_expired = 1, .fail_open = 1},
        },
        {
                .name = "RDP port moved at run time: new port steered",
                .local_port = 13389,
                .config_port = 13389,
                .self_id = SELF_ID,
                .gateway = true,
                .expect_gateway = true,
                .delta = {.lookup_total = 1, .to_gateway = 1},
        },
        {
                .name = "RDP port moved at run time: old port untouched",
                .local_port = TSF_RDP_PORT_DEFAULT,
                .config_port = 13389,
                .self_id = SELF_ID,
                .gateway = true,
        },
};

/* Runs the program once on a synthetic lookup; returns the selected
 * socket's cookie (0: none, the normal lookup proceeds). */
static __u64 steer_test_run(struct steer *skel, __u32 family, __u32 protocol, const char *remote,
                            __u16 local_port) {
        struct bpf_sk_lookup ctx = {
                .family = family,
                .protocol = protocol,
                .remote_port = htons(CLIENT_PORT),
                .local_port = local_port,
        };
        LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &ctx, .ctx_size_in = sizeof(ctx), .ctx_out = &ctx,
                    .ctx_size_out = sizeof(ctx));

        if (family == AF_INET) {
                ctx.remote_ip4 = ip4(remote);
                ctx.local_ip4 = ip4(LOCAL_ADDR);
        } else {
                assert_int_equal(inet_pton(AF_INET6, "2001:db8::10", ctx.remote_ip6), 1);
                assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", ctx.local_ip6), 1);
        }
        if (bpf_prog_test_run_opts(bpf_program__fd(skel->progs.tsf_steer), &opts) < 0)
                fail_msg("BPF_PROG_TEST_RUN: %s", strerror(errno));
        /* Every path of the program says SK_PASS: it never refuses. */
        assert_int_equal(opts.retval, SK_PASS);
        return ctx.cookie;
}

static void test_steer_case(void **state) {
        struct fixture *f = *state;
        const struct steer_case *c = f->param;
        struct tsf_stats before, after;
        __u64 gw_cookie = 0, got;
        int gw;

        REQUIRE_ENV();
        load_steer(f);
        set_config(f->steer->maps.config, c->self_id, c->config_port);
        if (c->node_flags)
                add_node(f->steer->maps.nodes, CLIENT, c->node_flags & TSF_NODE_F_PEER ? OTHER_ID : SELF_ID,
                         c->node_flags);
        switch (c->affinity) {
        case AFF_NONE:
                break;
        case AFF_FRESH:
                add_affinity(f->steer->maps.affinity, CLIENT, SELF_ID, 0, 60 * 1000000000LL);
                break;
        case AFF_EXPIRED:
                add_affinity(f->steer->maps.affinity, CLIENT, SELF_ID, 0, -1);
                break;
        case AFF_MULTI_USER:
                add_affinity(f->steer->maps.affinity, CLIENT, SELF_ID, TSF_AFFINITY_F_MULTI_USER,
                             60 * 1000000000LL);
                break;
        case AFF_OTHER_NODE:
                add_affinity(f->steer->maps.affinity, CLIENT, OTHER_ID, 0, 60 * 1000000000LL);
                break;
        }
        if (c->gateway) {
                /* Bound on another port than the lookup's, as in the agent. */
                gw = keep_fd(f, make_listener("127.0.0.1", 0));
                set_gateway(f->steer->maps.gateway, gw);
                gw_cookie = sock_cookie(gw);
        }

        stats_read(f->steer->maps.stats, &before);
        got = steer_test_run(f->steer, c->family ? c->family : AF_INET,
                             c->protocol ? c->protocol : IPPROTO_TCP, CLIENT,
                             c->local_port ? c->local_port : TSF_RDP_PORT_DEFAULT);
        stats_read(f->steer->maps.stats, &after);

        if (c->expect_gateway)
                assert_int_equal(got, gw_cookie);
        else
                assert_int_equal(got, 0);
        stats_expect_delta(&before, &after, &c->delta, c->name);
}

/* The kernel empties the slot when the gateway socket closes (agent
 * stopped or crashed): the very next lookup fails open. */
static void test_steer_gateway_closed_fails_open(void **state) {
        struct fixture *f = *state;
        struct tsf_stats before, after;
        const struct tsf_stats want = {.lookup_total = 2, .to_gateway = 1, .fail_open = 1};
        __u32 slot = TSF_GATEWAY_SLOT;
        __u64 value;
        int gw;

        REQUIRE_ENV();
        load_steer(f);
        set_config(f->steer->maps.config, SELF_ID, 0);
        gw = keep_fd(f, make_listener("127.0.0.1", 0));
        set_gateway(f->steer->maps.gateway, gw);

        stats_read(f->steer->maps.stats, &before);
        assert_int_equal(steer_test_run(f->steer, AF_INET, IPPROTO_TCP, CLIENT, TSF_RDP_PORT_DEFAULT),
                         sock_cookie(gw));
        close_kept(f, gw);
        assert_int_equal(bpf_map_lookup_elem(bpf_map__fd(f->steer->maps.gateway), &slot, &value), -ENOENT);
        assert_int_equal(steer_test_run(f->steer, AF_INET, IPPROTO_TCP, CLIENT, TSF_RDP_PORT_DEFAULT), 0);
        stats_read(f->steer->maps.stats, &after);
        stats_expect_delta(&before, &after, &want, "gateway closed");
}

/* A connected socket is no listener: bpf_sk_assign() refuses it, and the
 * program still serves the connection locally. */
static void test_steer_assign_refused_fails_open(void **state) {
        struct fixture *f = *state;
        struct tsf_stats before, after;
        const struct tsf_stats want = {.lookup_total = 1, .assign_failed = 1};
        int l, c, s;

        REQUIRE_ENV();
        load_steer(f);
        set_config(f->steer->maps.config, SELF_ID, 0);
        l = keep_fd(f, make_listener("127.0.0.1", 0));
        c = keep_fd(f, make_client("127.0.0.1", "127.0.0.1", sock_port(l, false)));
        s = keep_fd(f, accept_within(l));
        (void)c;
        set_gateway(f->steer->maps.gateway, s);

        stats_read(f->steer->maps.stats, &before);
        assert_int_equal(steer_test_run(f->steer, AF_INET, IPPROTO_TCP, CLIENT, TSF_RDP_PORT_DEFAULT), 0);
        stats_read(f->steer->maps.stats, &after);
        stats_expect_delta(&before, &after, &want, "assign refused");
}

/* The agent may make its gateway socket dual-stack; the kernel hands it
 * IPv4 lookups unless it is IPV6_V6ONLY. */
static void test_steer_dual_stack_gateway(void **state) {
        struct fixture *f = *state;
        int gw;

        REQUIRE_ENV();
        load_steer(f);
        set_config(f->steer->maps.config, SELF_ID, 0);
        gw = keep_fd(f, make_dual_stack_listener(0));
        set_gateway(f->steer->maps.gateway, gw);
        assert_int_equal(steer_test_run(f->steer, AF_INET, IPPROTO_TCP, CLIENT, TSF_RDP_PORT_DEFAULT),
                         sock_cookie(gw));
}

/* ---- steer: attached to the namespace, real connections ------------------- */

/* Connects from src to the RDP port and checks which listener got it. */
static void expect_landing(struct fixture *f, const char *src, int want_fd, int other_fd, const char *what) {
        struct sockaddr_in peer;
        socklen_t len = sizeof(peer);
        struct pollfd p = {.fd = other_fd, .events = POLLIN};
        int c, s;

        c = keep_fd(f, make_client(src, "127.0.0.1", env.rdp_port));
        s = accept_within(want_fd);
        assert_int_equal(getpeername(s, (struct sockaddr *)&peer, &len), 0);
        if (peer.sin_addr.s_addr != ip4(src))
                fail_msg("%s: accepted a connection from the wrong client", what);
        /* Whichever listener took it, the connection keeps the address the
         * client dialled: the gateway sees the RDP port as its local port. */
        assert_int_equal(sock_port(s, false), env.rdp_port);
        if (other_fd >= 0 && poll(&p, 1, 0) != 0)
                fail_msg("%s: the other listener has a connection too", what);
        close(s);
        close_kept(f, c);
}

static void test_steer_attached_netns(void **state) {
        struct fixture *f = *state;
        struct tsf_stats before, after;
        const struct tsf_stats want = {.lookup_total = 4,
                                       .to_local_peer = 1,
                                       .to_local_affinity = 1,
                                       .to_gateway = 1,
                                       .fail_open = 1};
        int rdp, gw, netns;

        REQUIRE_ENV();
        load_steer(f);
        set_config(f->steer->maps.config, SELF_ID, env.rdp_port);
        /* The RDP server listens on the RDP port; the gateway anywhere. */
        rdp = keep_fd(f, make_listener("127.0.0.1", env.rdp_port));
        gw = keep_fd(f, make_listener("127.0.0.1", 0));
        set_gateway(f->steer->maps.gateway, gw);
        add_node(f->steer->maps.nodes, "127.0.0.3", OTHER_ID, TSF_NODE_F_PEER);
        add_affinity(f->steer->maps.affinity, "127.0.0.4", SELF_ID, 0, 60 * 1000000000LL);

        netns = keep_fd(f, open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
        assert_true(netns >= 0);
        f->link = bpf_program__attach_netns(f->steer->progs.tsf_steer, netns);
        if (!f->link)
                fail_msg("attaching to the network namespace: %s", strerror(errno));

        stats_read(f->steer->maps.stats, &before);
        expect_landing(f, "127.0.0.2", gw, rdp, "unknown client");
        expect_landing(f, "127.0.0.3", rdp, gw, "peer");
        expect_landing(f, "127.0.0.4", rdp, gw, "affinity");
        close_kept(f, gw);
        expect_landing(f, "127.0.0.2", rdp, -1, "gateway gone");
        stats_read(f->steer->maps.stats, &after);
        stats_expect_delta(&before, &after, &want, "attached");
}

/* ---- track ---------------------------------------------------------------- */

/* steer and track pin the maps they share under one root: one config, one
 * node table, one set of counters, whichever loads first. */
static void test_track_shares_pinned_maps(void **state) {
        struct fixture *f = *state;
        char path[PATH_MAX];
        struct stat st;

        REQUIRE_ENV();
        load_steer(f);
        load_track(f);
        assert_int_equal(map_id(f->steer->maps.config), map_id(f->track->maps.config));
        assert_int_equal(map_id(f->steer->maps.nodes), map_id(f->track->maps.nodes));
        assert_int_equal(map_id(f->steer->maps.stats), map_id(f->track->maps.stats));
        const char *const pins[] = {TSF_MAP_NODES,  TSF_MAP_SESSIONS, TSF_MAP_AFFINITY, TSF_MAP_GATEWAY,
                                    TSF_MAP_CONFIG, TSF_MAP_CONNS,    TSF_MAP_STATS,    TSF_MAP_EVENTS};
        for (size_t i = 0; i < ELEMENTSOF(pins); i++) {
                assert_true(snprintf(path, sizeof(path), "%s/%s", env.pin_root, pins[i]) <
                            (int)sizeof(path));
                if (stat(path, &st) < 0)
                        fail_msg("%s is not pinned: %s", path, strerror(errno));
        }
}

/* Close events in ev[], open events (passive sides only) in open[]. */
struct events {
        struct tsf_conn_event ev[8];
        size_t n;
        struct tsf_conn_event open[8];
        size_t n_open;
};

static int on_event(void *ctx, void *data, size_t size) {
        struct events *evs = ctx;
        const struct tsf_conn_event *e = data;

        if (size < sizeof(struct tsf_conn_event))
                return 0;
        if (e->type == TSF_EVENT_OPEN) {
                if (evs->n_open < ELEMENTSOF(evs->open))
                        memcpy(&evs->open[evs->n_open++], data, sizeof(*e));
                return 0;
        }
        if (evs->n >= ELEMENTSOF(evs->ev))
                return 0;
        memcpy(&evs->ev[evs->n++], data, sizeof(struct tsf_conn_event));
        return 0;
}

/* Polls the ring buffer until `want` events arrived or the deadline. */
static void wait_events(struct fixture *f, struct events *evs, size_t want) {
        __u64 deadline = now_ns() + DEADLINE_MS * 1000000ULL;

        while (evs->n < want && now_ns() < deadline) {
                int r = ring_buffer__poll(f->rb, 100);

                if (r < 0 && r != -EINTR)
                        fail_msg("ring_buffer__poll: %s", strerror(-r));
        }
        if (evs->n < want)
                fail_msg("%zu close event(s) after %d ms, expected %zu", evs->n, DEADLINE_MS, want);
}

static const struct tsf_conn_event *find_event(const struct events *evs, __u64 cookie) {
        for (size_t i = 0; i < evs->n; i++)
                if (evs->ev[i].cookie == cookie)
                        return &evs->ev[i];
        fail_msg("no close event for socket cookie %llu", (unsigned long long)cookie);
        return NULL;
}

/* Loads track with the test RDP port, attaches it to the test cgroup and
 * moves this process there, so the sockets made next are seen. */
static void track_start(struct fixture *f, struct events *evs) {
        int cg;

        load_track(f);
        set_config(f->track->maps.config, SELF_ID, env.rdp_port);
        cg = keep_fd(f, open(env.cg_test, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        assert_true(cg >= 0);
        f->link = bpf_program__attach_cgroup(f->track->progs.tsf_track, cg);
        if (!f->link)
                fail_msg("attaching sockops to %s: %s", env.cg_test, strerror(errno));
        f->rb = ring_buffer__new(bpf_map__fd(f->track->maps.events), on_event, evs, NULL);
        assert_non_null(f->rb);
        char procs[PATH_MAX + 16];
        snprintf(procs, sizeof(procs), "%s/cgroup.procs", env.cg_test);
        assert_int_equal(write_file(procs, "0"), 0);
        f->in_test_cgroup = true;
}

static void conn_expect(int conns_fd, __u64 cookie, __u8 dir, __u16 local_port, __u16 remote_port) {
        struct tsf_conn c;

        if (bpf_map_lookup_elem(conns_fd, &cookie, &c) < 0)
                fail_msg("no conns entry for cookie %llu: %s", (unsigned long long)cookie, strerror(errno));
        assert_int_equal(c.dir, dir);
        assert_int_equal(c.state, 1 /* BPF_TCP_ESTABLISHED */);
        assert_int_equal(c.end, TSF_END_NONE);
        assert_int_equal(c.local_addr, ip4("127.0.0.1"));
        assert_int_equal(c.remote_addr, ip4("127.0.0.1"));
        assert_int_equal(c.local_port, local_port);
        assert_int_equal(c.remote_port, remote_port);
        assert_true(c.established_ns > 0 && c.established_ns <= now_ns());
}

/* A byte count at close. The kernel's counters (the ones `ss -ti` shows)
 * count sequence space: the SYN of an outgoing connection and a FIN take
 * one each, so a counter may exceed the data by up to two. */
static void assert_bytes(__u64 got, __u64 data) {
        if (got < data || got > data + 2)
                fail_msg("byte counter %llu, expected %llu (+ SYN/FIN)", (unsigned long long)got,
                         (unsigned long long)data);
}

#define TO_SERVER 1000
#define TO_CLIENT 3000

static void test_track_orderly_close(void **state) {
        struct fixture *f = *state;
        struct events evs = {0};
        struct tsf_stats before, after;
        const struct tsf_stats want = {.conns_established = 2, .conns_closed = 2};
        const struct tsf_conn_event *ce, *se;
        __u64 c_cookie, s_cookie;
        __u16 c_port;
        int l, c, s, ol, oc, os;
        __u64 t0 = now_ns();

        REQUIRE_CGROUP();
        track_start(f, &evs);
        stats_read(f->track->maps.stats, &before);

        /* Not the RDP port: neither tracked nor reported. */
        ol = keep_fd(f, make_listener("127.0.0.1", 0));
        oc = keep_fd(f, make_client("127.0.0.1", "127.0.0.1", sock_port(ol, false)));
        os = keep_fd(f, accept_within(ol));
        write_all(oc, 10);
        read_exactly(os, 10);
        close_kept(f, oc);
        close_kept(f, os);

        l = keep_fd(f, make_listener("127.0.0.1", env.rdp_port));
        c = keep_fd(f, make_client("127.0.0.1", "127.0.0.1", env.rdp_port));
        s = keep_fd(f, accept_within(l));
        c_cookie = sock_cookie(c);
        s_cookie = sock_cookie(s);
        c_port = sock_port(c, false);

        /* Both ends are tracked while open, under their socket cookies. */
        conn_expect(bpf_map__fd(f->track->maps.conns), s_cookie, TSF_CONN_PASSIVE, env.rdp_port, c_port);
        conn_expect(bpf_map__fd(f->track->maps.conns), c_cookie, TSF_CONN_ACTIVE, c_port, env.rdp_port);

        write_all(c, TO_SERVER);
        read_exactly(s, TO_SERVER);
        write_all(s, TO_CLIENT);
        read_exactly(c, TO_CLIENT);
        /* The client hangs up first; the server follows. */
        close_kept(f, c);
        expect_eof(s);
        close_kept(f, s);

        wait_events(f, &evs, 2);
        ce = find_event(&evs, c_cookie);
        se = find_event(&evs, s_cookie);

        assert_int_equal(se->type, TSF_EVENT_CLOSE);
        assert_int_equal(se->conn.dir, TSF_CONN_PASSIVE);
        assert_int_equal(se->conn.local_port, env.rdp_port);
        assert_int_equal(se->conn.remote_port, c_port);
        assert_int_equal(se->conn.end, TSF_END_FIN_REMOTE);
        /* The passive side was announced when it was established, once;
         * the active side never is (the agent attributes clients only). */
        assert_int_equal(evs.n_open, 1);
        assert_int_equal(evs.open[0].cookie, s_cookie);
        assert_int_equal(evs.open[0].conn.dir, TSF_CONN_PASSIVE);
        assert_int_equal(evs.open[0].conn.remote_port, c_port);
        assert_int_equal(evs.open[0].closed_ns, 0);
        assert_int_equal(se->error, 0);
        assert_bytes(se->conn.bytes_received, TO_SERVER);
        assert_bytes(se->conn.bytes_acked, TO_CLIENT);
        assert_true(se->conn.established_ns >= t0 && se->closed_ns >= se->conn.established_ns);

        assert_int_equal(ce->type, TSF_EVENT_CLOSE);
        assert_int_equal(ce->conn.dir, TSF_CONN_ACTIVE);
        assert_int_equal(ce->conn.remote_port, env.rdp_port);
        assert_int_equal(ce->conn.end, TSF_END_FIN_LOCAL);
        assert_int_equal(ce->error, 0);
        assert_bytes(ce->conn.bytes_acked, TO_SERVER);
        assert_bytes(ce->conn.bytes_received, TO_CLIENT);

        /* Only the two RDP sockets were reported, and their entries are gone. */
        assert_int_equal(evs.n, 2);
        __u64 cookies[] = {c_cookie, s_cookie};
        struct tsf_conn gone;
        for (size_t i = 0; i < ELEMENTSOF(cookies); i++)
                assert_int_equal(bpf_map_lookup_elem(bpf_map__fd(f->track->maps.conns), &cookies[i], &gone),
                                 -ENOENT);
        stats_read(f->track->maps.stats, &after);
        stats_expect_delta(&before, &after, &want, "orderly close");
}

static void test_track_reset(void **state) {
        struct fixture *f = *state;
        struct events evs = {0};
        const struct tsf_conn_event *ce, *se;
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        __u64 c_cookie, s_cookie;
        int l, c, s;

        REQUIRE_CGROUP();
        track_start(f, &evs);
        l = keep_fd(f, make_listener("127.0.0.1", env.rdp_port));
        c = keep_fd(f, make_client("127.0.0.1", "127.0.0.1", env.rdp_port));
        s = keep_fd(f, accept_within(l));
        c_cookie = sock_cookie(c);
        s_cookie = sock_cookie(s);
        write_all(c, TO_SERVER);
        read_exactly(s, TO_SERVER);

        /* SO_LINGER 0: close() sends a reset instead of a FIN. */
        assert_int_equal(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
        close_kept(f, c);
        wait_events(f, &evs, 2);
        ce = find_event(&evs, c_cookie);
        se = find_event(&evs, s_cookie);

        assert_int_equal(ce->conn.end, TSF_END_ABORT);
        assert_int_equal(ce->conn.state, 1 /* closed from ESTABLISHED */);
        assert_int_equal(se->conn.end, TSF_END_RST_RECEIVED);
        assert_int_equal(se->error, ECONNRESET);
        assert_bytes(se->conn.bytes_received, TO_SERVER);
        close_kept(f, s);
}

/* xrdp listens dual-stack: IPv4 clients come in on an AF_INET6 socket with
 * an IPv4-mapped address, and must be tracked all the same. */
static void test_track_dual_stack_listener(void **state) {
        struct fixture *f = *state;
        struct events evs = {0};
        const struct tsf_conn_event *se;
        __u64 s_cookie;
        __u16 c_port;
        int l, c, s;

        REQUIRE_CGROUP();
        track_start(f, &evs);
        l = keep_fd(f, make_dual_stack_listener(env.rdp_port));
        c = keep_fd(f, make_client("127.0.0.1", "127.0.0.1", env.rdp_port));
        s = keep_fd(f, accept_within(l));
        s_cookie = sock_cookie(s);
        c_port = sock_port(c, false);
        conn_expect(bpf_map__fd(f->track->maps.conns), s_cookie, TSF_CONN_PASSIVE, env.rdp_port, c_port);
        close_kept(f, c);
        expect_eof(s);
        close_kept(f, s);
        wait_events(f, &evs, 2);
        se = find_event(&evs, s_cookie);
        assert_int_equal(se->conn.remote_addr, ip4("127.0.0.1"));
        assert_int_equal(se->conn.end, TSF_END_FIN_REMOTE);
}

int main(void) {
        struct CMUnitTest tests[ELEMENTSOF(steer_cases) + 8];
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(steer_cases); i++)
                tests[n++] = (struct CMUnitTest){.name = steer_cases[i].name,
                                                 .test_func = test_steer_case,
                                                 .setup_func = fixture_setup,
                                                 .teardown_func = fixture_teardown,
                                                 .initial_state = (void *)&steer_cases[i]};
#define T(fn) \
        tests[n++] = (struct CMUnitTest)cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)
        T(test_steer_gateway_closed_fails_open);
        T(test_steer_assign_refused_fails_open);
        T(test_steer_dual_stack_gateway);
        T(test_steer_attached_netns);
        T(test_track_shares_pinned_maps);
        T(test_track_orderly_close);
        T(test_track_reset);
        T(test_track_dual_stack_listener);
#undef T
        return _cmocka_run_group_tests("bpf_steer_track", tests, n, group_setup, group_teardown);
}
