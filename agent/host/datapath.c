/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "agent/host/datapath.h"
#include "bpf/steer.skel.h"
#include "bpf/track.skel.h"
#include "tsfarm/log.h"
#include "tsfarm/maps.h"

struct datapath {
        sd_event *event;
        char *pin_root;
        struct steer *steer;
        struct track *track;
        struct bpf_link *steer_link;
        struct bpf_link *track_link;
        struct ring_buffer *ring;
        sd_event_source *ring_source;
        datapath_event_fn on_event;
        void *userdata;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(struct bpf_link *, bpf_link__destroy);

static const char *const pinned_maps[] = {
        TSF_MAP_NODES,  TSF_MAP_SESSIONS, TSF_MAP_AFFINITY, TSF_MAP_GATEWAY,
        TSF_MAP_CONFIG, TSF_MAP_CONNS,    TSF_MAP_STATS,    TSF_MAP_EVENTS,
};
static const char *const pinned_links[] = {TSF_PIN_LINK_STEER, TSF_PIN_LINK_TRACK};

static int pin_path(const struct datapath *d, const char *name, char *buf, size_t size) {
        return snprintf(buf, size, "%s/%s", d->pin_root, name) >= (int)size ? -ENAMETOOLONG : 0;
}

/* Pins from an agent with another ABI would be reused by libbpf as long as
 * the sizes match, with their meaning changed under us: start clean. */
static int check_abi(struct datapath *d) {
        struct tsf_config cfg = {};
        _cleanup_close_ int fd = -1;
        char path[PATH_MAX];
        __u32 zero = 0;
        int r;

        fd = tsf_map_open_pinned(d->pin_root, TSF_MAP_CONFIG, true);
        if (fd == -ENOENT)
                return 0;
        if (fd < 0)
                return log_error_errno(fd, "Failed to open pinned map %s/%s: %m", d->pin_root,
                                       TSF_MAP_CONFIG);
        if (bpf_map_lookup_elem(fd, &zero, &cfg) < 0 || cfg.abi_version == 0 ||
            cfg.abi_version == TSF_ABI_VERSION)
                return 0;

        log_warning("Pins under %s are from ABI version %u, this agent speaks %u: removing them.",
                    d->pin_root, cfg.abi_version, TSF_ABI_VERSION);
        for (size_t i = 0; i < ELEMENTSOF(pinned_links); i++) {
                r = pin_path(d, pinned_links[i], path, sizeof(path));
                if (r == 0 && unlink(path) < 0 && errno != ENOENT)
                        return log_error_errno(negative_errno(), "Failed to remove %s: %m", path);
        }
        for (size_t i = 0; i < ELEMENTSOF(pinned_maps); i++) {
                r = pin_path(d, pinned_maps[i], path, sizeof(path));
                if (r == 0 && unlink(path) < 0 && errno != ENOENT)
                        return log_error_errno(negative_errno(), "Failed to remove %s: %m", path);
        }
        return 0;
}

static int prepare_pin_root(const char *pin_root) {
        _cleanup_free_ char *parent = strdup(pin_root);
        struct statfs sfs;
        char *slash;

        if (!parent)
                return log_oom();
        slash = strrchr(parent, '/');
        if (slash && slash != parent)
                *slash = '\0';
        if (statfs(parent, &sfs) < 0)
                return log_error_errno(negative_errno(), "Failed to look at %s: %m", parent);
        if (sfs.f_type != BPF_FS_MAGIC)
                return log_error_errno(-ENOTDIR,
                                       "%s is not a BPF filesystem; mount one (mount -t bpf bpf %s) or set "
                                       "[host] pin-root.",
                                       parent, parent);
        if (mkdir(pin_root, 0700) < 0 && errno != EEXIST)
                return log_error_errno(negative_errno(), "Failed to create %s: %m", pin_root);
        return 0;
}

/* The cgroup v2 hierarchy's mount point, from /proc/self/mountinfo. */
static int find_cgroup2(char *buf, size_t size) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096];

        if (!f)
                return negative_errno();
        while (fgets(line, sizeof(line), f)) {
                char mnt[PATH_MAX], *sep = strstr(line, " - ");

                if (!sep || strncmp(sep, " - cgroup2 ", 11) != 0)
                        continue;
                if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1)
                        continue;
                if (snprintf(buf, size, "%s", mnt) >= (int)size)
                        return -ENAMETOOLONG;
                return 0;
        }
        return -ENOENT;
}

/* A pinned link outlives the agent; a restarted agent swaps its freshly
 * loaded program into it, so steering never has a gap. */
static int attach_pinned(struct datapath *d, struct bpf_program *prog, const char *pin_name, int target_fd,
                         bool netns, struct bpf_link **ret) {
        _cleanup_(bpf_link__destroyp) struct bpf_link *link = NULL;
        char path[PATH_MAX];
        int r;

        r = pin_path(d, pin_name, path, sizeof(path));
        if (r < 0)
                return r;

        link = access(path, F_OK) == 0 ? bpf_link__open(path) : NULL;
        if (link) {
                r = bpf_link__update_program(link, prog);
                if (r == 0) {
                        log_debug("Updated the program in pinned link %s.", path);
                        *ret = TAKE_PTR(link);
                        return 0;
                }
                log_warning_errno(r, "Failed to update pinned link %s, replacing it: %m", path);
                bpf_link__unpin(link);
                bpf_link__destroy(TAKE_PTR(link));
                (void)unlink(path);
        }

        link = netns ? bpf_program__attach_netns(prog, target_fd)
                     : bpf_program__attach_cgroup(prog, target_fd);
        if (!link)
                return log_error_errno(negative_errno(), "Failed to attach %s: %m", bpf_program__name(prog));
        r = bpf_link__pin(link, path);
        if (r < 0)
                return log_error_errno(r, "Failed to pin link %s: %m", path);
        *ret = TAKE_PTR(link);
        return 0;
}

static int ring_event(void *ctx, void *data, size_t size) {
        struct datapath *d = ctx;

        if (size < sizeof(struct tsf_conn_event))
                return 0; /* a shorter record is not ours to interpret */
        if (d->on_event)
                d->on_event(data, d->userdata);
        return 0;
}

static int on_ring_ready(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct datapath *d = userdata;
        int r = ring_buffer__consume(d->ring);

        if (r < 0)
                log_warning_errno(r, "Failed to consume BPF ring buffer, ignoring: %m");
        return 0;
}

/* libbpf talks on stderr by default; route it through our log so it
 * reaches the journal with the rest. Its warnings include verifier logs. */
static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap) {
        char buf[1024];
        size_t n;

        if (level == LIBBPF_DEBUG && tsf_log_get_max_level() < LOG_DEBUG)
                return 0;
        vsnprintf(buf, sizeof(buf), fmt, ap);
        n = strlen(buf);
        if (n > 0 && buf[n - 1] == '\n')
                buf[n - 1] = '\0';
        if (level == LIBBPF_WARN)
                log_warning("libbpf: %s", buf);
        else
                log_debug("libbpf: %s", buf);
        return 0;
}

/* The sessions map's size is a setting ([host] sessions-max). libbpf
 * refuses to reuse a pin of another size, and the map is only a mirror
 * (the directory or [sessions] refill it within a second), so a pin of
 * the wrong size is dropped and recreated. */
static int resize_sessions(struct datapath *d, uint32_t max) {
        struct bpf_map_info info = {};
        __u32 len = sizeof(info);
        _cleanup_close_ int fd = -1;
        char path[PATH_MAX];
        int r;

        r = bpf_map__set_max_entries(d->steer->maps.sessions, max);
        if (r < 0)
                return log_error_errno(r, "Failed to size the sessions map to %u entries: %m", max);
        fd = tsf_map_open_pinned(d->pin_root, TSF_MAP_SESSIONS, true);
        if (fd == -ENOENT)
                return 0;
        if (fd < 0)
                return log_error_errno(fd, "Failed to open pinned map %s/%s: %m", d->pin_root,
                                       TSF_MAP_SESSIONS);
        if (bpf_obj_get_info_by_fd(fd, &info, &len) < 0)
                return log_error_errno(negative_errno(), "Failed to inspect the pinned sessions map: %m");
        if (info.max_entries == max)
                return 0;
        log_notice("The pinned sessions map holds %u entries, sessions-max says %u: recreating it (it is "
                   "refilled from the directory).",
                   info.max_entries, max);
        r = pin_path(d, TSF_MAP_SESSIONS, path, sizeof(path));
        if (r == 0 && unlink(path) < 0 && errno != ENOENT)
                return log_error_errno(negative_errno(), "Failed to remove %s: %m", path);
        return 0;
}

int datapath_open(sd_event *e, const struct datapath_options *o, struct datapath **ret) {
        _cleanup_(datapath_freep) struct datapath *d = NULL;
        _cleanup_close_ int netns_fd = -1, cg_fd = -1;
        char cgroup[PATH_MAX];
        int r;

        libbpf_set_print(libbpf_log);
        d = calloc(1, sizeof(*d));
        if (!d)
                return log_oom();
        d->event = sd_event_ref(e);
        d->on_event = o->on_event;
        d->userdata = o->userdata;
        d->pin_root = strdup(o->pin_root ? o->pin_root : TSF_PIN_ROOT);
        if (!d->pin_root)
                return log_oom();

        r = prepare_pin_root(d->pin_root);
        if (r < 0)
                return r;
        r = check_abi(d);
        if (r < 0)
                return r;

        LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = d->pin_root);
        d->steer = steer__open_opts(&opts);
        if (!d->steer)
                return log_error_errno(negative_errno(), "Failed to open the steer BPF object: %m");
        if (o->sessions_max) {
                r = resize_sessions(d, o->sessions_max);
                if (r < 0)
                        return r;
        }
        r = steer__load(d->steer);
        if (r < 0)
                return log_error_errno(r, "Failed to load the steer BPF program (pins under %s): %m",
                                       d->pin_root);
        d->track = track__open_opts(&opts);
        if (!d->track)
                return log_error_errno(negative_errno(), "Failed to open the track BPF object: %m");
        r = track__load(d->track);
        if (r < 0)
                return log_error_errno(r, "Failed to load the track BPF program: %m");

        /* Config before attaching: with an empty config a restarted program
         * would briefly see the default port and no self id. */
        r = datapath_set_config(d, o->self_node_id, o->rdp_port);
        if (r < 0)
                return r;

        netns_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (netns_fd < 0)
                return log_error_errno(negative_errno(), "Failed to open our network namespace: %m");
        r = attach_pinned(d, d->steer->progs.tsf_steer, TSF_PIN_LINK_STEER, netns_fd, true, &d->steer_link);
        if (r < 0)
                return r;

        if (o->cgroup_path)
                snprintf(cgroup, sizeof(cgroup), "%s", o->cgroup_path);
        else if ((r = find_cgroup2(cgroup, sizeof(cgroup))) < 0)
                return log_error_errno(r, "No cgroup v2 hierarchy found for connection tracking; mount one "
                                          "or set [host] cgroup.");
        cg_fd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cg_fd < 0)
                return log_error_errno(negative_errno(), "Failed to open cgroup %s: %m", cgroup);
        r = attach_pinned(d, d->track->progs.tsf_track, TSF_PIN_LINK_TRACK, cg_fd, false, &d->track_link);
        if (r < 0)
                return r;

        d->ring = ring_buffer__new(bpf_map__fd(d->track->maps.events), ring_event, d, NULL);
        if (!d->ring)
                return log_error_errno(negative_errno(), "Failed to set up the BPF ring buffer: %m");
        r = sd_event_add_io(e, &d->ring_source, ring_buffer__epoll_fd(d->ring), EPOLLIN, on_ring_ready, d);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the BPF ring buffer: %m");

        log_info("BPF data plane attached: sk_lookup on port %u, sockops on %s, pins under %s.",
                 o->rdp_port ? o->rdp_port : TSF_RDP_PORT_DEFAULT, cgroup, d->pin_root);
        *ret = TAKE_PTR(d);
        return 0;
}

struct datapath *datapath_free(struct datapath *d) {
        if (!d)
                return NULL;
        sd_event_source_disable_unref(d->ring_source);
        ring_buffer__free(d->ring);
        /* Destroying our handles leaves the pinned links attached: steering
         * outlives the agent and fails open once the gateway socket is gone. */
        bpf_link__destroy(d->steer_link);
        bpf_link__destroy(d->track_link);
        track__destroy(d->track);
        steer__destroy(d->steer);
        sd_event_unref(d->event);
        free(d->pin_root);
        free(d);
        return NULL;
}

int datapath_set_config(struct datapath *d, uint32_t self_node_id, uint16_t rdp_port) {
        struct tsf_config cfg = {
                .abi_version = TSF_ABI_VERSION,
                .self_node_id = self_node_id,
                .rdp_port = rdp_port,
        };
        __u32 zero = 0;

        if (bpf_map_update_elem(bpf_map__fd(d->steer->maps.config), &zero, &cfg, BPF_ANY) < 0)
                return log_error_errno(negative_errno(), "Failed to write the BPF config map: %m");
        return 0;
}

int datapath_set_nodes(struct datapath *d, const struct tsf_node_key *keys,
                       const struct tsf_node_value *vals, size_t n) {
        int fd = bpf_map__fd(d->steer->maps.nodes);
        struct tsf_node_key k, next;
        bool have = false;

        /* Add or update first, then drop what is gone, so an address that
         * stays in the farm is never missing in between. */
        for (size_t i = 0; i < n; i++)
                if (bpf_map_update_elem(fd, &keys[i], &vals[i], BPF_ANY) < 0)
                        return log_error_errno(negative_errno(), "Failed to update the nodes map: %m");

        while (bpf_map_get_next_key(fd, have ? &k : NULL, &next) == 0) {
                bool keep = false;

                for (size_t i = 0; i < n && !keep; i++)
                        keep = keys[i].addr == next.addr;
                if (!keep) {
                        if (bpf_map_delete_elem(fd, &next) < 0 && errno != ENOENT)
                                return log_error_errno(negative_errno(),
                                                       "Failed to prune the nodes map: %m");
                        continue; /* `k` still names the previous key */
                }
                k = next;
                have = true;
        }
        return 0;
}

int datapath_lookup_node(struct datapath *d, uint32_t addr_be, struct tsf_node_value *ret) {
        struct tsf_node_key k = {.addr = addr_be};

        return bpf_map_lookup_elem(bpf_map__fd(d->steer->maps.nodes), &k, ret) < 0 ? -errno : 0;
}

int datapath_session_set(struct datapath *d, const char *user_key, const struct tsf_session_value *v) {
        struct tsf_session_key k;

        tsf_session_key_from_user(&k, user_key);
        return bpf_map_update_elem(bpf_map__fd(d->steer->maps.sessions), &k, v, BPF_ANY) < 0 ? -errno : 0;
}

int datapath_session_del(struct datapath *d, const char *user_key) {
        struct tsf_session_key k;

        tsf_session_key_from_user(&k, user_key);
        return bpf_map_delete_elem(bpf_map__fd(d->steer->maps.sessions), &k) < 0 ? -errno : 0;
}

int datapath_session_get(struct datapath *d, const char *user_key, struct tsf_session_value *ret) {
        struct tsf_session_key k;

        tsf_session_key_from_user(&k, user_key);
        return bpf_map_lookup_elem(bpf_map__fd(d->steer->maps.sessions), &k, ret) < 0 ? -errno : 0;
}

static uint64_t monotonic_ns(void) {
        struct timespec ts;

        /* bpf_ktime_get_ns() is CLOCK_MONOTONIC: compare like with like. */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int datapath_affinity_note(struct datapath *d, uint32_t client_be, uint32_t node_id, uint64_t user_hash,
                           uint64_t ttl_ns) {
        int fd = bpf_map__fd(d->steer->maps.affinity);
        struct tsf_affinity_key k = {.addr = client_be};
        struct tsf_affinity_value old, v = {
                                               .node_id = node_id,
                                               .user_hash = user_hash,
                                               .expires_ns = monotonic_ns() + ttl_ns,
                                       };

        /* An office behind one NAT address: once two users were seen from
         * it, it stays shared until the entry expires. A connection without
         * a cookie (hash 0) names no user, so it neither proves nor
         * disproves sharing; it keeps the user it had. */
        if (bpf_map_lookup_elem(fd, &k, &old) == 0 && old.expires_ns > monotonic_ns()) {
                if ((old.flags & TSF_AFFINITY_F_MULTI_USER) ||
                    (old.user_hash && user_hash && old.user_hash != user_hash))
                        v.flags |= TSF_AFFINITY_F_MULTI_USER;
                if (!user_hash)
                        v.user_hash = old.user_hash;
        }
        return bpf_map_update_elem(fd, &k, &v, BPF_ANY) < 0 ? -errno : 0;
}

int datapath_affinity_get(struct datapath *d, uint32_t client_be, struct tsf_affinity_value *ret) {
        struct tsf_affinity_key k = {.addr = client_be};

        if (bpf_map_lookup_elem(bpf_map__fd(d->steer->maps.affinity), &k, ret) < 0)
                return -errno;
        return ret->expires_ns > monotonic_ns() ? 0 : -ESTALE;
}

int datapath_set_gateway(struct datapath *d, int listen_fd) {
        int fd = bpf_map__fd(d->steer->maps.gateway);
        __u32 slot = TSF_GATEWAY_SLOT;
        __u64 value = (__u64)listen_fd;

        if (listen_fd < 0) {
                if (bpf_map_delete_elem(fd, &slot) < 0 && errno != ENOENT)
                        return -errno;
                return 0;
        }
        return bpf_map_update_elem(fd, &slot, &value, BPF_ANY) < 0 ? -errno : 0;
}

int datapath_read_stats(struct datapath *d, struct tsf_stats *ret) {
        return tsf_stats_read(bpf_map__fd(d->steer->maps.stats), ret);
}

int datapath_conns_fd(struct datapath *d) {
        return bpf_map__fd(d->track->maps.conns);
}

int datapath_sessions_fd(struct datapath *d) {
        return bpf_map__fd(d->steer->maps.sessions);
}
