/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * What steer and track share on the BPF side: the maps both read (config,
 * nodes, stats) and a few constants vmlinux.h does not carry. Both objects
 * declare these maps identically and pinned by name, so whichever loads
 * second reuses the first one's pins under the same pin root: one config,
 * one node table, one set of counters.
 */
#ifndef TSFARM_COMMON_BPF_H
#define TSFARM_COMMON_BPF_H

/* vmlinux.h has `typedef struct config_s config;` (and fields named
 * config), which would take the name our `config` map must have: the map's
 * C name is its BPF name and its pin name. Rename the kernel's token while
 * vmlinux.h is parsed; nothing here uses those kernel types. */
#define config __tsf_vmlinux_config
#include "vmlinux.h"
#undef config
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi/tsfarm_abi.h"

/* Socket-layer constants are macros in the uapi headers, so vmlinux.h
 * lacks them. */
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

struct {
        __uint(type, BPF_MAP_TYPE_ARRAY);
        __uint(max_entries, 1);
        __type(key, __u32);
        __type(value, struct tsf_config);
        __uint(pinning, LIBBPF_PIN_BY_NAME);
} config SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_HASH);
        __uint(max_entries, TSF_NODES_MAX);
        __type(key, struct tsf_node_key);
        __type(value, struct tsf_node_value);
        __uint(pinning, LIBBPF_PIN_BY_NAME);
} nodes SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
        __uint(max_entries, 1);
        __type(key, __u32);
        __type(value, struct tsf_stats);
        __uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

/* The RDP port in host order, from config or the default. */
static __always_inline __u32 tsf_rdp_port(const struct tsf_config *cfg) {
        return cfg->rdp_port ? cfg->rdp_port : TSF_RDP_PORT_DEFAULT;
}

static __always_inline struct tsf_stats *tsf_stats_get(void) {
        __u32 zero = 0;

        return bpf_map_lookup_elem(&stats, &zero);
}

/* Per-CPU counters: a plain increment is enough, the slot is this CPU's.
 * (A program preempted by a softirq program on the same CPU could lose a
 * count; counters are for operators, not for accounting.) */
#define TSF_STAT_INC(s, field)        \
        do {                          \
                if (s)                \
                        (s)->field++; \
        } while (0)

#endif /* TSFARM_COMMON_BPF_H */
