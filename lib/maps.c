/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/macro.h"
#include "tsfarm/maps.h"

const char *const tsf_stat_names[] = {
        "lookup_total",        "to_local_peer",
        "to_local_affinity",   "to_gateway",
        "fail_open",           "assign_failed",
        "affinity_expired",    "affinity_multi_user",
        "affinity_other_node", "conns_established",
        "conns_closed",        "conns_table_full",
        "events_dropped",      "rto",
};
_Static_assert(ELEMENTSOF(tsf_stat_names) == TSF_STATS_COUNT, "a name per counter in struct tsf_stats");

int tsf_map_open_pinned(const char *pin_root, const char *name, bool read_only) {
        LIBBPF_OPTS(bpf_obj_get_opts, opts, .file_flags = read_only ? BPF_F_RDONLY : 0);
        char path[PATH_MAX];
        int fd;

        if (snprintf(path, sizeof(path), "%s/%s", pin_root ? pin_root : TSF_PIN_ROOT, name) >=
            (int)sizeof(path))
                return -ENAMETOOLONG;
        fd = bpf_obj_get_opts(path, &opts);
        return fd < 0 ? -errno : fd;
}

int tsf_stats_read(int stats_fd, struct tsf_stats *ret) {
        /* Per-CPU values come back as ncpus copies, each rounded up to 8. */
        size_t stride = (sizeof(struct tsf_stats) + 7) & ~(size_t)7;
        int ncpus = libbpf_num_possible_cpus();
        _cleanup_free_ uint8_t *buf = NULL;
        __u32 zero = 0;

        if (ncpus <= 0)
                return ncpus < 0 ? ncpus : -EINVAL;
        buf = calloc((size_t)ncpus, stride);
        if (!buf)
                return -ENOMEM;
        if (bpf_map_lookup_elem(stats_fd, &zero, buf) < 0)
                return -errno;

        memset(ret, 0, sizeof(*ret));
        for (int cpu = 0; cpu < ncpus; cpu++) {
                const __u64 *src = (const __u64 *)(buf + (size_t)cpu * stride);
                __u64 *dst = (__u64 *)ret;

                /* tsf_stats is all __u64 counters (asserted in the ABI). */
                for (size_t i = 0; i < sizeof(*ret) / sizeof(__u64); i++)
                        dst[i] += src[i];
        }
        return 0;
}

void tsf_session_key_from_user(struct tsf_session_key *k, const char *user) {
        tsf_session_key_make(k, user, strlen(user));
}

void tsf_session_key_format(const struct tsf_session_key *k, char *buf, size_t size) {
        if (k->user[TSF_USER_KEY_SIZE - 1] == 0) {
                snprintf(buf, size, "%.*s", TSF_USER_KEY_SIZE, k->user);
                return;
        }
        __u64 h = 0;
        for (int i = 0; i < 8; i++)
                h |= (__u64)(__u8)k->user[TSF_USER_KEY_PREFIX + i] << (8 * i);
        snprintf(buf, size, "%.*s...#%016llx", TSF_USER_KEY_PREFIX, k->user, (unsigned long long)h);
}
