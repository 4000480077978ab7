/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * BPF tier: `tsctl host ...` against real pinned maps.
 *
 * Loads the steer and track skeletons with a unique pin root (so libbpf
 * pins every map as the agent's would be), fills the maps the way the
 * agent and the programs do, then runs the real tsctl binary with
 * --pin-root and checks what it prints: the JSON member by member against
 * what was written, the tables row by row, and for `sessions set|del` the
 * map itself, read back through its fd.
 *
 * Runs in its own mount namespace with a private bpffs if the host has
 * none at /sys/fs/bpf; the pins and their directory are removed at the
 * end. Needs root; otherwise every test is skipped with the reason.
 *
 * The binary is $TSFARM_BUILD/tsctl, else build/tsctl relative to the
 * current directory (the repository root under make).
 * TSFARM_TEST_VERBOSE=1 prints every command with its output.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/bpf.h>
#include <linux/magic.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <cmocka.h>
#include <jansson.h>

#include "abi/tsfarm_abi.h"
#include "bpf/steer.skel.h"
#include "bpf/track.skel.h"
#include "tsfarm/clock.h"
#include "tsfarm/macro.h"
#include "tsfarm/maps.h"

#define NSEC_PER_SEC 1000000000ULL
/* 2026-11-23T20:00:00Z */
#define ALICE_CHANGED_US 1795464000000000ULL
#define LONG_CHANGED_US 1795464000123456ULL
#define RDP_PORT 3390
#define AFFINITY_TTL_S 600
#define CONN_AGE_S 90

/* 70 bytes: the long form of the sessions key (>= 64). */
static const char long_user[] = "averyveryverylongusernamethatdoesnotfitintheshortformofthesessionkey70";
_Static_assert(sizeof(long_user) - 1 == 70, "long_user length");

extern char **environ;

/* ---- environment ---------------------------------------------------------- */

static struct {
        const char *skip_reason;
        char skip_buf[512];
        char pin_root[PATH_MAX];
        char tsctl[PATH_MAX];
        struct steer *steer;
        struct track *track;
        int ncpus;
} env;

#define REQUIRE_ENV()                                                    \
        do {                                                             \
                if (env.skip_reason) {                                   \
                        print_message("skipped: %s\n", env.skip_reason); \
                        skip();                                          \
                }                                                        \
        } while (0)

static void set_skip(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(env.skip_buf, sizeof(env.skip_buf), fmt, ap);
        va_end(ap);
        env.skip_reason = env.skip_buf;
}

static __be32 ip4(const char *s) {
        struct in_addr a;

        if (inet_pton(AF_INET, s, &a) != 1)
                abort();
        return a.s_addr;
}

static __u64 now_ns(void) {
        struct timespec ts;

        /* bpf_ktime_get_ns() is CLOCK_MONOTONIC. */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (__u64)ts.tv_sec * NSEC_PER_SEC + (__u64)ts.tv_nsec;
}

/* What the agent and the programs would have written. Returns 0 or a
 * negative errno. */
static int fill_maps(void) {
        const struct {
                const char *addr;
                __u32 id;
                __u16 flags;
                __u32 weight;
        } nodes[] = {
                {"10.0.0.3", 3, TSF_NODE_F_PEER | TSF_NODE_F_DRAINING, 50},
                {"10.0.0.1", 1, TSF_NODE_F_SELF, 100},
                {"127.0.0.1", 1, TSF_NODE_F_SELF | TSF_NODE_F_BYPASS, 100},
                {"10.0.0.2", 2, TSF_NODE_F_PEER, 100},
                {"192.0.2.99", TSF_NODE_ID_NONE, TSF_NODE_F_BYPASS, 0},
                {"10.0.0.4", 4, TSF_NODE_F_PEER | TSF_NODE_F_DOWN, 100},
        };
        struct tsf_config cfg = {.abi_version = TSF_ABI_VERSION, .self_node_id = 1, .rdp_port = RDP_PORT};
        size_t stride = (sizeof(struct tsf_stats) + 7) & ~(size_t)7;
        uint8_t *percpu;
        __u32 zero = 0;
        __u64 now = now_ns();
        int r = 0;

        if (bpf_map_update_elem(bpf_map__fd(env.steer->maps.config), &zero, &cfg, BPF_ANY) < 0)
                return -errno;

        /* Counter i on CPU c holds (i + 1) * (c + 1), so only a sum over
         * every CPU gives the expected totals. */
        percpu = calloc((size_t)env.ncpus, stride);
        if (!percpu)
                return -ENOMEM;
        for (int c = 0; c < env.ncpus; c++)
                for (size_t i = 0; i < sizeof(struct tsf_stats) / 8; i++)
                        ((__u64 *)(percpu + (size_t)c * stride))[i] = (i + 1) * (__u64)(c + 1);
        if (bpf_map_update_elem(bpf_map__fd(env.steer->maps.stats), &zero, percpu, BPF_ANY) < 0)
                r = -errno;
        free(percpu);
        if (r < 0)
                return r;

        for (size_t i = 0; i < ELEMENTSOF(nodes); i++) {
                struct tsf_node_key k = {.addr = ip4(nodes[i].addr)};
                struct tsf_node_value v = {.node_id = nodes[i].id,
                                           .rdp_port = htons(RDP_PORT),
                                           .flags = nodes[i].flags,
                                           .weight = nodes[i].weight};

                if (bpf_map_update_elem(bpf_map__fd(env.steer->maps.nodes), &k, &v, BPF_ANY) < 0)
                        return -errno;
        }

        struct {
                const char *user;
                struct tsf_session_value v;
        } sessions[] = {
                {"alice",
                 {.node_id = 2,
                  .session_id = 7,
                  .state = TSF_SESSION_DISCONNECTED,
                  .revision = 42,
                  .state_changed_us = ALICE_CHANGED_US}},
                {long_user,
                 {.node_id = 1,
                  .session_id = 3,
                  .state = TSF_SESSION_ACTIVE,
                  .revision = 5,
                  .state_changed_us = LONG_CHANGED_US}},
                {"zed", {.node_id = 4, .session_id = 11, .state = TSF_SESSION_LOST, .revision = 6}},
        };
        for (size_t i = 0; i < ELEMENTSOF(sessions); i++) {
                struct tsf_session_key k;

                tsf_session_key_from_user(&k, sessions[i].user);
                if (bpf_map_update_elem(bpf_map__fd(env.steer->maps.sessions), &k, &sessions[i].v, BPF_ANY) <
                    0)
                        return -errno;
        }

        struct {
                const char *addr;
                struct tsf_affinity_value v;
        } affinity[] = {
                {"192.0.2.10",
                 {.node_id = 1,
                  .user_hash = tsf_user_key_hash("alice", 5),
                  .expires_ns = now + AFFINITY_TTL_S * NSEC_PER_SEC}},
                {"198.51.100.7",
                 {.node_id = 2,
                  .flags = TSF_AFFINITY_F_MULTI_USER,
                  .user_hash = tsf_user_key_hash("bob", 3),
                  .expires_ns = now - 5 * NSEC_PER_SEC}},
        };
        for (size_t i = 0; i < ELEMENTSOF(affinity); i++) {
                struct tsf_affinity_key k = {.addr = ip4(affinity[i].addr)};

                if (bpf_map_update_elem(bpf_map__fd(env.steer->maps.affinity), &k, &affinity[i].v, BPF_ANY) <
                    0)
                        return -errno;
        }

        /* track writes these from sockops; writing them directly keeps the
         * expected values exact (test_steer covers the program). */
        struct {
                __u64 cookie;
                struct tsf_conn c;
        } conns[] = {
                {4242,
                 {.local_addr = ip4("10.0.0.1"),
                  .remote_addr = ip4("192.0.2.10"),
                  .local_port = 3389,
                  .remote_port = 43759,
                  .dir = TSF_CONN_PASSIVE,
                  .state = 1,
                  .established_ns = now - CONN_AGE_S * NSEC_PER_SEC,
                  .bytes_acked = 6000,
                  .bytes_received = 7000,
                  .srtt_us = 210,
                  .total_retrans = 2,
                  .data_segs_in = 10,
                  .data_segs_out = 12,
                  .rto_count = 1,
                  .last_rto_ns = now - NSEC_PER_SEC}},
                {4243,
                 {.local_addr = ip4("127.0.0.1"),
                  .remote_addr = ip4("127.0.0.1"),
                  .local_port = 40000,
                  .remote_port = 3389,
                  .dir = TSF_CONN_ACTIVE,
                  .state = 4}},
        };
        for (size_t i = 0; i < ELEMENTSOF(conns); i++)
                if (bpf_map_update_elem(bpf_map__fd(env.track->maps.conns), &conns[i].cookie, &conns[i].c,
                                        BPF_ANY) < 0)
                        return -errno;
        return 0;
}

static int group_setup(void **state) {
        LIBBPF_OPTS(bpf_object_open_opts, opts);
        const char *build = getenv("TSFARM_BUILD");
        struct statfs sfs;
        int r;

        if (geteuid() != 0) {
                env.skip_reason = "needs root (BPF maps, a mount namespace)";
                return 0;
        }
        snprintf(env.tsctl, sizeof(env.tsctl), "%s/tsctl", build && *build ? build : "build");
        if (access(env.tsctl, X_OK) < 0) {
                set_skip("no tsctl binary at %s (%s): run 'make build/tsctl' or set TSFARM_BUILD", env.tsctl,
                         strerror(errno));
                return 0;
        }
        if (unshare(CLONE_NEWNS) < 0) {
                set_skip("unshare(CLONE_NEWNS) failed: %s", strerror(errno));
                return 0;
        }
        /* Nothing mounted from here on leaks to the host; tsctl, a child,
         * inherits this namespace and sees the same bpffs. */
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                set_skip("cannot make the mount namespace private: %s", strerror(errno));
                return 0;
        }
        if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_LOOKUP, NULL) <= 0) {
                env.skip_reason = "the kernel cannot load sk_lookup programs";
                return 0;
        }
        if (statfs("/sys/fs/bpf", &sfs) < 0 || sfs.f_type != BPF_FS_MAGIC) {
                if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") < 0) {
                        set_skip("no bpffs at /sys/fs/bpf and mounting one failed: %s", strerror(errno));
                        return 0;
                }
        }
        snprintf(env.pin_root, sizeof(env.pin_root), "/sys/fs/bpf/tsfarm-tsctl-test-XXXXXX");
        if (!mkdtemp(env.pin_root)) {
                set_skip("cannot create %s: %s", env.pin_root, strerror(errno));
                env.pin_root[0] = 0;
                return 0;
        }
        env.ncpus = libbpf_num_possible_cpus();
        if (env.ncpus <= 0) {
                env.skip_reason = "cannot count possible CPUs";
                return 0;
        }

        opts.pin_root_path = env.pin_root;
        env.steer = steer__open_opts(&opts);
        if (!env.steer || (r = steer__load(env.steer)) < 0) {
                fprintf(stderr, "loading steer.bpf.o: %s\n", strerror(env.steer ? -r : errno));
                return -1;
        }
        env.track = track__open_opts(&opts);
        if (!env.track || (r = track__load(env.track)) < 0) {
                fprintf(stderr, "loading track.bpf.o: %s\n", strerror(env.track ? -r : errno));
                return -1;
        }
        r = fill_maps();
        if (r < 0) {
                fprintf(stderr, "filling the maps: %s\n", strerror(-r));
                return -1;
        }
        return 0;
}

static void unpin_all(struct bpf_object *obj) {
        struct bpf_map *map;

        /* Errors ignored: maps shared by both objects are gone already. */
        bpf_object__for_each_map(map, obj) {
                if (bpf_map__pin_path(map))
                        (void)bpf_map__unpin(map, NULL);
        }
}

static int group_teardown(void **state) {
        if (env.track) {
                unpin_all(env.track->obj);
                track__destroy(env.track);
        }
        if (env.steer) {
                unpin_all(env.steer->obj);
                steer__destroy(env.steer);
        }
        if (env.pin_root[0] && rmdir(env.pin_root) < 0)
                fprintf(stderr, "warning: pins left in %s: %s\n", env.pin_root, strerror(errno));
        return 0;
}

/* ---- running tsctl -------------------------------------------------------- */

struct result {
        int status;
        char out[64 * 1024];
        char err[8 * 1024];
};

static void read_memfd(int fd, char *buf, size_t size) {
        ssize_t n = pread(fd, buf, size - 1, 0);

        assert_true(n >= 0);
        buf[n] = 0;
        close(fd);
}

/* Runs tsctl with `args` and the environment minus our variables plus
 * `extra_env` (NULL-terminated, may be NULL); logs to stderr so messages
 * can be checked even under systemd. */
static void run_env(struct result *res, const char *const extra_env[], const char *const args[]) {
        const char *argv[32], *envp[256];
        posix_spawn_file_actions_t fa;
        size_t na = 0, ne = 0;
        int out, err, status;
        pid_t pid;

        argv[na++] = env.tsctl;
        for (size_t i = 0; args[i]; i++) {
                assert_true(na + 1 < ELEMENTSOF(argv));
                argv[na++] = args[i];
        }
        argv[na] = NULL;
        for (char **e = environ; *e && ne + 8 < ELEMENTSOF(envp); e++)
                if (strncmp(*e, "TSFARM_PIN_ROOT=", 16) != 0 && strncmp(*e, "TSFARM_LOG_", 11) != 0)
                        envp[ne++] = *e;
        envp[ne++] = "TSFARM_LOG_TARGET=stderr";
        for (size_t i = 0; extra_env && extra_env[i]; i++) {
                assert_true(ne + 1 < ELEMENTSOF(envp));
                envp[ne++] = extra_env[i];
        }
        envp[ne] = NULL;

        out = memfd_create("tsctl-stdout", MFD_CLOEXEC);
        err = memfd_create("tsctl-stderr", MFD_CLOEXEC);
        assert_true(out >= 0 && err >= 0);
        assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
        assert_int_equal(posix_spawn_file_actions_adddup2(&fa, out, STDOUT_FILENO), 0);
        assert_int_equal(posix_spawn_file_actions_adddup2(&fa, err, STDERR_FILENO), 0);
        assert_int_equal(posix_spawn(&pid, env.tsctl, &fa, NULL, (char *const *)argv, (char *const *)envp),
                         0);
        posix_spawn_file_actions_destroy(&fa);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        read_memfd(out, res->out, sizeof(res->out));
        read_memfd(err, res->err, sizeof(res->err));
        if (!WIFEXITED(status))
                fail_msg("tsctl %s: killed by signal %d; stderr: %s", args[0], WTERMSIG(status), res->err);
        res->status = WEXITSTATUS(status);
        if (getenv("TSFARM_TEST_VERBOSE")) {
                print_message("$ tsctl");
                for (size_t i = 0; args[i]; i++)
                        print_message(" %s", args[i]);
                print_message("   (exit %d)\n%s%s", res->status, res->out, res->err);
        }
}

/* tsctl ARGS... --pin-root PIN_ROOT: options may follow a leaf's arguments. */
#define TSCTL(res, ...) \
        run_env(res, NULL, (const char *const[]){__VA_ARGS__, "--pin-root", env.pin_root, NULL})

static void expect_status(const struct result *res, int want, const char *what) {
        if (res->status != want)
                fail_msg("%s: exit status %d, expected %d\nstdout:\n%s\nstderr:\n%s", what, res->status,
                         want, res->out, res->err);
}

static json_t *parse_json(const struct result *res) {
        json_error_t e;
        json_t *j = json_loads(res->out, 0, &e);

        if (!j)
                fail_msg("not JSON (%s, line %d): %s", e.text, e.line, res->out);
        return j;
}

static json_int_t get_int(json_t *o, const char *key) {
        json_t *v = json_object_get(o, key);

        if (!json_is_integer(v))
                fail_msg("member %s is not an integer", key);
        return json_integer_value(v);
}

static const char *get_str(json_t *o, const char *key) {
        json_t *v = json_object_get(o, key);

        if (!json_is_string(v))
                fail_msg("member %s is not a string", key);
        return json_string_value(v);
}

static json_t *get_array(json_t *o, const char *key) {
        json_t *v = json_object_get(o, key);

        if (!json_is_array(v))
                fail_msg("member %s is not an array", key);
        return v;
}

/* The element of array `a` whose string member `key` is `value`. */
static json_t *find_by(json_t *a, const char *key, const char *value) {
        size_t i;
        json_t *e;

        json_array_foreach(a, i, e) {
                json_t *v = json_object_get(e, key);

                if (json_is_string(v) && strcmp(json_string_value(v), value) == 0)
                        return e;
        }
        fail_msg("no element with %s = %s", key, value);
        return NULL;
}

/* Flags as "a,b" from a JSON array of words. */
static void flags_join(json_t *a, char *buf, size_t size) {
        size_t i, used = 0;
        json_t *e;

        assert_true(json_is_array(a));
        buf[0] = 0;
        json_array_foreach(a, i, e) used +=
                (size_t)snprintf(buf + used, size - used, "%s%s", used ? "," : "", json_string_value(e));
}

/* Whether the table in `out` has a line equal to `row` once runs of
 * blanks are one space (column widths are the tool's business). */
static bool has_row(const char *out, const char *row) {
        char line[1024];

        for (const char *p = out; *p;) {
                size_t n = strcspn(p, "\n"), k = 0;
                bool blank = true;

                for (size_t i = 0; i < n && k + 1 < sizeof(line); i++) {
                        if (p[i] == ' ') {
                                if (!blank)
                                        line[k++] = ' ';
                                blank = true;
                        } else {
                                line[k++] = p[i];
                                blank = false;
                        }
                }
                while (k > 0 && line[k - 1] == ' ')
                        k--;
                line[k] = 0;
                if (strcmp(line, row) == 0)
                        return true;
                p += n;
                if (*p)
                        p++;
        }
        return false;
}

static void expect_row(const struct result *res, const char *row) {
        if (!has_row(res->out, row))
                fail_msg("no row \"%s\" in:\n%s", row, res->out);
}

static void expect_err(const struct result *res, const char *text) {
        if (!strstr(res->err, text))
                fail_msg("stderr lacks \"%s\":\n%s", text, res->err);
}

static bool session_lookup(const char *user, struct tsf_session_value *v) {
        struct tsf_session_key k;

        tsf_session_key_from_user(&k, user);
        return bpf_map_lookup_elem(bpf_map__fd(env.steer->maps.sessions), &k, v) == 0;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_stats(void **state) {
        static const char *const names[] = {
                "lookup_total",        "to_local_peer",
                "to_local_affinity",   "to_gateway",
                "fail_open",           "assign_failed",
                "affinity_expired",    "affinity_multi_user",
                "affinity_other_node", "conns_established",
                "conns_closed",        "conns_table_full",
                "events_dropped",      "rto",
        };
        __u64 cpus_sum = (__u64)env.ncpus * (__u64)(env.ncpus + 1) / 2;
        struct result res;
        json_t *j, *cfg, *st;
        char row[128];

        REQUIRE_ENV();
        TSCTL(&res, "host", "stats", "--json");
        expect_status(&res, 0, "host stats --json");
        j = parse_json(&res);
        cfg = json_object_get(j, "config");
        assert_int_equal(get_int(cfg, "abi_version"), TSF_ABI_VERSION);
        assert_int_equal(get_int(cfg, "self_node_id"), 1);
        assert_int_equal(get_int(cfg, "rdp_port"), RDP_PORT);
        st = json_object_get(j, "stats");
        assert_int_equal(json_object_size(st), ELEMENTSOF(names));
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                assert_int_equal(get_int(st, names[i]), (json_int_t)((i + 1) * cpus_sum));
        json_decref(j);

        TSCTL(&res, "host", "stats");
        expect_status(&res, 0, "host stats");
        expect_row(&res, "ABI version 1");
        expect_row(&res, "Self node id 1");
        expect_row(&res, "RDP port 3390");
        expect_row(&res, "COUNTER VALUE");
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                snprintf(row, sizeof(row), "%s %llu", names[i], (unsigned long long)((i + 1) * cpus_sum));
                expect_row(&res, row);
        }
}

static void test_nodes(void **state) {
        static const struct {
                const char *addr;
                json_int_t id;
                const char *flags;
                json_int_t weight;
        } want[] = {
                /* by node id, then address */
                {"192.0.2.99", 0, "bypass", 0},       {"10.0.0.1", 1, "self", 100},
                {"127.0.0.1", 1, "self,bypass", 100}, {"10.0.0.2", 2, "peer", 100},
                {"10.0.0.3", 3, "peer,draining", 50}, {"10.0.0.4", 4, "peer,down", 100},
        };
        struct result res;
        json_t *j, *a;
        char flags[64], row[128];

        REQUIRE_ENV();
        TSCTL(&res, "host", "nodes", "--json");
        expect_status(&res, 0, "host nodes --json");
        j = parse_json(&res);
        a = get_array(j, "nodes");
        assert_int_equal(json_array_size(a), ELEMENTSOF(want));
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                json_t *e = json_array_get(a, i);

                assert_string_equal(get_str(e, "address"), want[i].addr);
                assert_int_equal(get_int(e, "node_id"), want[i].id);
                assert_int_equal(get_int(e, "rdp_port"), RDP_PORT);
                assert_int_equal(get_int(e, "weight"), want[i].weight);
                flags_join(json_object_get(e, "flags"), flags, sizeof(flags));
                assert_string_equal(flags, want[i].flags);
        }
        json_decref(j);

        TSCTL(&res, "host", "nodes");
        expect_status(&res, 0, "host nodes");
        expect_row(&res, "ADDRESS NODE PORT FLAGS WEIGHT");
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                snprintf(row, sizeof(row), "%s %lld %d %s %lld", want[i].addr, (long long)want[i].id,
                         RDP_PORT, want[i].flags, (long long)want[i].weight);
                expect_row(&res, row);
        }
        /* Sorted: the bypass-only entry (id 0) first, node 4 last. */
        assert_true(strstr(res.out, "192.0.2.99") < strstr(res.out, "10.0.0.1"));
        assert_true(strstr(res.out, "10.0.0.3") < strstr(res.out, "10.0.0.4"));
}

static void test_sessions(void **state) {
        struct tsf_session_key lk;
        char long_shown[128], ts[TSF_TIMESTAMP_MAX], row[256];
        struct result res;
        json_t *j, *a, *e;

        REQUIRE_ENV();
        tsf_session_key_from_user(&lk, long_user);
        tsf_session_key_format(&lk, long_shown, sizeof(long_shown));
        assert_non_null(strstr(long_shown, "...#"));

        TSCTL(&res, "host", "sessions", "--json");
        expect_status(&res, 0, "host sessions --json");
        j = parse_json(&res);
        a = get_array(j, "sessions");

        e = find_by(a, "user", "alice");
        assert_int_equal(get_int(e, "node_id"), 2);
        assert_int_equal(get_int(e, "session_id"), 7);
        assert_string_equal(get_str(e, "state"), "disconnected");
        assert_int_equal(get_int(e, "revision"), 42);
        assert_int_equal(get_int(e, "state_changed_us"), (json_int_t)ALICE_CHANGED_US);
        assert_string_equal(get_str(e, "state_changed"), "2026-11-23T20:00:00Z");

        e = find_by(a, "user", long_shown);
        assert_int_equal(get_int(e, "node_id"), 1);
        assert_int_equal(get_int(e, "session_id"), 3);
        assert_string_equal(get_str(e, "state"), "active");
        assert_int_equal(get_int(e, "revision"), 5);
        assert_int_equal(get_int(e, "state_changed_us"), (json_int_t)LONG_CHANGED_US);

        e = find_by(a, "user", "zed");
        assert_string_equal(get_str(e, "state"), "lost");
        assert_true(json_is_null(json_object_get(e, "state_changed")));
        json_decref(j);

        TSCTL(&res, "host", "sessions");
        expect_status(&res, 0, "host sessions");
        expect_row(&res, "USER NODE SESSION STATE REVISION CHANGED");
        expect_row(&res, "alice 2 7 disconnected 42 2026-11-23T20:00:00Z");
        snprintf(row, sizeof(row), "%s 1 3 active 5 %s", long_shown,
                 tsf_format_timestamp(LONG_CHANGED_US, ts, sizeof(ts)));
        expect_row(&res, row);
        expect_row(&res, "zed 4 11 lost 6 -");
}

static void test_sessions_set(void **state) {
        struct tsf_session_value v;
        struct result res;
        usec_t before, after;
        json_t *j, *e;

        REQUIRE_ENV();
        /* Folded like a cookie: the key is "bob". */
        before = tsf_now_realtime();
        TSCTL(&res, "host", "sessions", "set", "CORP\\Bob", "2", "--state", "disconnected", "--session-id",
              "9");
        after = tsf_now_realtime();
        expect_status(&res, 0, "sessions set CORP\\Bob 2");
        expect_row(&res, "USER NODE SESSION STATE REVISION CHANGED");
        assert_true(session_lookup("bob", &v));
        assert_int_equal(v.node_id, 2);
        assert_int_equal(v.session_id, 9);
        assert_int_equal(v.state, TSF_SESSION_DISCONNECTED);
        assert_int_equal(v.revision, 1);
        assert_in_range(v.state_changed_us, before, after);
        for (size_t i = 0; i < sizeof(v._pad); i++)
                assert_int_equal(v._pad[i], 0);

        TSCTL(&res, "host", "sessions", "--json");
        expect_status(&res, 0, "host sessions --json");
        j = parse_json(&res);
        e = find_by(get_array(j, "sessions"), "user", "bob");
        assert_int_equal(get_int(e, "node_id"), 2);
        assert_int_equal(get_int(e, "session_id"), 9);
        assert_string_equal(get_str(e, "state"), "disconnected");
        assert_int_equal(get_int(e, "revision"), 1);
        assert_int_equal(get_int(e, "state_changed_us"), (json_int_t)v.state_changed_us);
        json_decref(j);

        /* Same node: the session id stays; the revision counts up. */
        TSCTL(&res, "host", "sessions", "set", "bob@corp.example", "2", "--json");
        expect_status(&res, 0, "sessions set bob@corp.example 2");
        j = parse_json(&res);
        assert_string_equal(get_str(j, "user"), "bob");
        assert_int_equal(get_int(j, "session_id"), 9);
        assert_string_equal(get_str(j, "state"), "active");
        assert_int_equal(get_int(j, "revision"), 2);
        json_decref(j);

        /* Another node: the old session id means nothing there. */
        TSCTL(&res, "host", "sessions", "set", "bob", "3");
        expect_status(&res, 0, "sessions set bob 3");
        assert_true(session_lookup("bob", &v));
        assert_int_equal(v.node_id, 3);
        assert_int_equal(v.session_id, 0);
        assert_int_equal(v.state, TSF_SESSION_ACTIVE);
        assert_int_equal(v.revision, 3);

        TSCTL(&res, "host", "sessions");
        expect_status(&res, 0, "host sessions");
        assert_non_null(strstr(res.out, "\nbob "));
}

static void test_sessions_set_long_user(void **state) {
        char upper[sizeof(long_user) + 8], shown[128];
        struct tsf_session_key k;
        struct tsf_session_value v;
        struct result res;
        json_t *j;

        REQUIRE_ENV();
        snprintf(upper, sizeof(upper), "CORP\\%s", long_user);
        for (char *p = upper; *p; p++)
                *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
        upper[sizeof(upper) - 9] = 'Q'; /* a name of its own, same 56-byte prefix */
        TSCTL(&res, "host", "sessions", "set", upper, "1", "--json");
        expect_status(&res, 0, "sessions set LONG 1");

        /* The key is the long form of the folded user part. */
        char folded[sizeof(long_user)];
        memcpy(folded, upper + 5, sizeof(folded));
        for (char *p = folded; *p; p++)
                *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        assert_true(session_lookup(folded, &v));
        assert_int_equal(v.node_id, 1);
        assert_int_equal(v.revision, 1);
        tsf_session_key_from_user(&k, folded);
        assert_int_not_equal(k.user[TSF_USER_KEY_SIZE - 1], 0);
        tsf_session_key_format(&k, shown, sizeof(shown));
        j = parse_json(&res);
        assert_string_equal(get_str(j, "user"), shown);
        json_decref(j);

        /* The original long entry is untouched. */
        assert_true(session_lookup(long_user, &v));
        assert_int_equal(v.revision, 5);
}

static void test_sessions_set_unknown_node(void **state) {
        struct tsf_session_value v;
        struct result res;

        REQUIRE_ENV();
        TSCTL(&res, "host", "sessions", "set", "carol", "99");
        expect_status(&res, 1, "sessions set carol 99");
        expect_err(&res, "node id 99 is not in the node table");
        expect_err(&res, "known node ids: 1, 2, 3, 4");
        assert_string_equal(res.out, "");
        assert_false(session_lookup("carol", &v));

        /* 0 is "no node", even though a bypass entry carries it. */
        TSCTL(&res, "host", "sessions", "set", "carol", "0");
        expect_status(&res, 2, "sessions set carol 0");
        assert_false(session_lookup("carol", &v));

        TSCTL(&res, "host", "sessions", "set", "carol", "1", "--state", "lost");
        expect_status(&res, 2, "sessions set --state lost");
        expect_err(&res, "--state");
        TSCTL(&res, "host", "sessions", "set", "bad\\user\\name", "1");
        expect_status(&res, 2, "sessions set with a bad name");
        assert_false(session_lookup("carol", &v));
}

static void test_sessions_del(void **state) {
        struct tsf_session_value v;
        struct result res;

        REQUIRE_ENV();
        TSCTL(&res, "host", "sessions", "set", "dave", "1");
        expect_status(&res, 0, "sessions set dave 1");
        assert_true(session_lookup("dave", &v));
        TSCTL(&res, "host", "sessions", "del", "DAVE");
        expect_status(&res, 0, "sessions del DAVE");
        assert_string_equal(res.out, "");
        assert_false(session_lookup("dave", &v));

        TSCTL(&res, "host", "sessions", "del", "dave");
        expect_status(&res, 1, "sessions del dave (gone)");
        expect_err(&res, "no session for user 'dave'");
}

static void test_affinity(void **state) {
        char row[128];
        struct result res;
        json_t *j, *a, *e;
        json_int_t left;

        REQUIRE_ENV();
        TSCTL(&res, "host", "affinity", "--json");
        expect_status(&res, 0, "host affinity --json");
        j = parse_json(&res);
        a = get_array(j, "affinity");
        assert_int_equal(json_array_size(a), 2);
        /* Sorted by address. */
        assert_string_equal(get_str(json_array_get(a, 0), "client"), "192.0.2.10");

        e = find_by(a, "client", "192.0.2.10");
        assert_int_equal(get_int(e, "node_id"), 1);
        assert_int_equal(json_array_size(json_object_get(e, "flags")), 0);
        snprintf(row, sizeof(row), "%016llx", (unsigned long long)tsf_user_key_hash("alice", 5));
        assert_string_equal(get_str(e, "user_hash"), row);
        left = get_int(e, "expires_in_s");
        assert_in_range(left, AFFINITY_TTL_S - 30, AFFINITY_TTL_S);
        assert_false(json_is_true(json_object_get(e, "expired")));

        e = find_by(a, "client", "198.51.100.7");
        assert_int_equal(get_int(e, "node_id"), 2);
        assert_string_equal(json_string_value(json_array_get(json_object_get(e, "flags"), 0)), "multi-user");
        assert_true(json_is_true(json_object_get(e, "expired")));
        assert_true(get_int(e, "expires_in_s") <= -5);
        json_decref(j);

        TSCTL(&res, "host", "affinity");
        expect_status(&res, 0, "host affinity");
        expect_row(&res, "CLIENT NODE FLAGS USER HASH EXPIRES IN");
        snprintf(row, sizeof(row), "198.51.100.7 2 multi-user %016llx expired",
                 (unsigned long long)tsf_user_key_hash("bob", 3));
        expect_row(&res, row);
        assert_non_null(strstr(res.out, "192.0.2.10"));
        assert_non_null(strstr(res.out, "min")); /* ~10 minutes left */
}

static void test_conns(void **state) {
        struct result res;
        json_t *j, *a, *e;

        REQUIRE_ENV();
        TSCTL(&res, "host", "conns", "--json");
        expect_status(&res, 0, "host conns --json");
        j = parse_json(&res);
        a = get_array(j, "conns");
        assert_int_equal(json_array_size(a), 2);

        e = find_by(a, "remote_address", "192.0.2.10");
        assert_int_equal(get_int(e, "cookie"), 4242);
        assert_string_equal(get_str(e, "local_address"), "10.0.0.1");
        assert_int_equal(get_int(e, "local_port"), 3389);
        assert_int_equal(get_int(e, "remote_port"), 43759);
        assert_string_equal(get_str(e, "direction"), "passive");
        assert_string_equal(get_str(e, "state"), "ESTABLISHED");
        assert_string_equal(get_str(e, "end"), "none");
        assert_in_range(get_int(e, "age_s"), CONN_AGE_S, CONN_AGE_S + 30);
        assert_int_equal(get_int(e, "bytes_acked"), 6000);
        assert_int_equal(get_int(e, "bytes_received"), 7000);
        assert_int_equal(get_int(e, "srtt_us"), 210);
        assert_int_equal(get_int(e, "total_retrans"), 2);
        assert_int_equal(get_int(e, "data_segs_in"), 10);
        assert_int_equal(get_int(e, "data_segs_out"), 12);
        assert_int_equal(get_int(e, "rto_count"), 1);

        e = find_by(a, "local_address", "127.0.0.1");
        assert_int_equal(get_int(e, "cookie"), 4243);
        assert_string_equal(get_str(e, "direction"), "active");
        assert_string_equal(get_str(e, "state"), "FIN_WAIT1");
        assert_true(json_is_null(json_object_get(e, "age_s")));
        json_decref(j);

        TSCTL(&res, "host", "conns");
        expect_status(&res, 0, "host conns");
        expect_row(&res, "LOCAL REMOTE DIR STATE AGE ACKED RECEIVED SRTT RETRANS");
        expect_row(&res, "10.0.0.1:3389 192.0.2.10:43759 passive ESTABLISHED 1min 30s 6000 7000 0.21 ms 2");
        expect_row(&res, "127.0.0.1:40000 127.0.0.1:3389 active FIN_WAIT1 - 0 0 0.00 ms 0");
}

static void test_missing_pin_root(void **state) {
        static const char *const verbs[][6] = {
                {"host", "stats"},
                {"host", "nodes"},
                {"host", "sessions"},
                {"host", "affinity"},
                {"host", "conns"},
                {"host", "sessions", "del", "alice"},
                {"host", "sessions", "set", "alice", "1"},
        };
        char missing[PATH_MAX + 16];
        struct result res;

        REQUIRE_ENV();
        snprintf(missing, sizeof(missing), "%s-missing", env.pin_root);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                const char *args[8];
                size_t n = 0;

                for (size_t k = 0; k < ELEMENTSOF(verbs[i]) && verbs[i][k]; k++)
                        args[n++] = verbs[i][k];
                args[n++] = "--pin-root";
                args[n++] = missing;
                args[n] = NULL;
                run_env(&res, NULL, args);
                expect_status(&res, 1, args[1]);
                expect_err(&res, "no tsfarm maps under ");
                expect_err(&res, missing);
                expect_err(&res, "is tsagent running with the host role? see --pin-root");
                assert_string_equal(res.out, "");
        }
}

/* --pin-root before the command, at the group, after the command; or
 * $TSFARM_PIN_ROOT; the option wins over the variable. */
static void test_pin_root_sources(void **state) {
        char var[PATH_MAX + 32], bogus[PATH_MAX + 32];
        struct result res;

        REQUIRE_ENV();
        snprintf(var, sizeof(var), "TSFARM_PIN_ROOT=%s", env.pin_root);
        snprintf(bogus, sizeof(bogus), "TSFARM_PIN_ROOT=%s-bogus", env.pin_root);

        run_env(&res, (const char *const[]){var, NULL}, (const char *const[]){"host", "nodes", NULL});
        expect_status(&res, 0, "TSFARM_PIN_ROOT");
        expect_row(&res, "10.0.0.1 1 3390 self 100");

        run_env(&res, (const char *const[]){bogus, NULL},
                (const char *const[]){"--pin-root", env.pin_root, "host", "nodes", NULL});
        expect_status(&res, 0, "global --pin-root over TSFARM_PIN_ROOT");
        expect_row(&res, "10.0.0.1 1 3390 self 100");

        run_env(&res, NULL,
                (const char *const[]){"host", "--pin-root", env.pin_root, "sessions", "--json", NULL});
        expect_status(&res, 0, "group-level --pin-root");
        json_decref(parse_json(&res));

        run_env(&res, (const char *const[]){bogus, NULL}, (const char *const[]){"host", "nodes", NULL});
        expect_status(&res, 1, "bogus TSFARM_PIN_ROOT");
        expect_err(&res, "-bogus");
}

static void test_help_has_examples(void **state) {
        static const char *const verbs[][3] = {
                {"host"},
                {"host", "stats"},
                {"host", "nodes"},
                {"host", "sessions"},
                {"host", "sessions", "set"},
                {"host", "sessions", "del"},
                {"host", "affinity"},
                {"host", "conns"},
        };
        struct result res;

        REQUIRE_ENV();
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                const char *args[5];
                size_t n = 0;

                for (size_t k = 0; k < 3 && verbs[i][k]; k++)
                        args[n++] = verbs[i][k];
                args[n++] = "--help";
                args[n] = NULL;
                run_env(&res, NULL, args);
                expect_status(&res, 0, "--help");
                assert_non_null(strstr(res.out, "\nExamples:\n  tsctl host"));
                assert_non_null(strstr(res.out, "--pin-root"));
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_stats),
                cmocka_unit_test(test_nodes),
                cmocka_unit_test(test_sessions),
                cmocka_unit_test(test_sessions_set),
                cmocka_unit_test(test_sessions_set_long_user),
                cmocka_unit_test(test_sessions_set_unknown_node),
                cmocka_unit_test(test_sessions_del),
                cmocka_unit_test(test_affinity),
                cmocka_unit_test(test_conns),
                cmocka_unit_test(test_missing_pin_root),
                cmocka_unit_test(test_pin_root_sources),
                cmocka_unit_test(test_help_has_examples),
        };

        return cmocka_run_group_tests_name("bpf_tsctl_host", tests, group_setup, group_teardown);
}
