/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * Connection steering for the RDP port (DESIGN 2.1), attached to the host's
 * network namespace as an sk_lookup program. It runs when the kernel looks
 * for the socket that should receive a new connection, and either lets the
 * normal lookup happen (the local RDP server gets it, zero overhead) or
 * hands the connection to the agent's gateway socket.
 *
 * Dispatch order, first match wins; every outcome is SK_PASS, because
 * refusing a connection is never better than plain local service:
 *   1. not TCP/IPv4 to the RDP port          -> untouched, not counted
 *   2. source address in `nodes`            -> normal lookup (peer, self,
 *                                               or the agent's bypass)
 *   3. fresh `affinity` to this node         -> normal lookup
 *   4. gateway socket in `gateway` slot 0    -> the gateway
 *   5. empty slot / assign refused           -> normal lookup (fail open)
 */
#include "tsfarm_common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The farm's session map, mirrored by the agent. Declared here so the
 * steer skeleton creates and pins it with the other maps; no program
 * reads it yet (sk_lookup runs before any byte of the connection). */
struct {
        __uint(type, BPF_MAP_TYPE_HASH);
        __uint(max_entries, TSF_SESSIONS_MAX);
        __type(key, struct tsf_session_key);
        __type(value, struct tsf_session_value);
        /* Only user space writes it, so it need not be preallocated. */
        __uint(map_flags, BPF_F_NO_PREALLOC);
        __uint(pinning, LIBBPF_PIN_BY_NAME);
} sessions SEC(".maps");

/* LRU: a busy farm sees more client addresses than it needs to remember,
 * and losing an old entry only costs one trip through the gateway. */
struct {
        __uint(type, BPF_MAP_TYPE_LRU_HASH);
        __uint(max_entries, TSF_AFFINITY_MAX);
        __type(key, struct tsf_affinity_key);
        __type(value, struct tsf_affinity_value);
        __uint(pinning, LIBBPF_PIN_BY_NAME);
} affinity SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_SOCKMAP);
        __uint(max_entries, 1);
        __type(key, __u32);
        __type(value, __u64);
        __uint(pinning, LIBBPF_PIN_BY_NAME);
} gateway SEC(".maps");

/* Whether the client's affinity entry sends it straight to this node.
 * Counts why not, so an operator can see an office behind NAT (multi
 * user) or a too-short expiry in the stats. */
static __always_inline bool affinity_is_local(__be32 addr, const struct tsf_config *cfg,
                                              struct tsf_stats *st) {
        struct tsf_affinity_key key = {.addr = addr};
        struct tsf_affinity_value *aff;

        aff = bpf_map_lookup_elem(&affinity, &key);
        if (!aff)
                return false;
        if (aff->flags & TSF_AFFINITY_F_MULTI_USER) {
                TSF_STAT_INC(st, affinity_multi_user);
                return false;
        }
        if (bpf_ktime_get_ns() >= aff->expires_ns) {
                TSF_STAT_INC(st, affinity_expired);
                return false;
        }
        /* With self unknown nothing can point here: the gateway decides. */
        if (cfg->self_node_id == TSF_NODE_ID_NONE || aff->node_id != cfg->self_node_id) {
                TSF_STAT_INC(st, affinity_other_node);
                return false;
        }
        return true;
}

SEC("sk_lookup")
int tsf_steer(struct bpf_sk_lookup *ctx) {
        struct tsf_node_key node_key = {};
        const struct tsf_config *cfg;
        struct tsf_stats *st;
        struct bpf_sock *sk;
        __u32 zero = 0;
        long err;

        /* The ABI keys addresses as IPv4; IPv6 and UDP (RDP's UDP
         * transport) keep their normal lookup. */
        if (ctx->family != AF_INET || ctx->protocol != IPPROTO_TCP)
                return SK_PASS;
        cfg = bpf_map_lookup_elem(&config, &zero);
        if (!cfg || ctx->local_port != tsf_rdp_port(cfg))
                return SK_PASS;

        st = tsf_stats_get();
        TSF_STAT_INC(st, lookup_total);

        node_key.addr = ctx->remote_ip4;
        if (bpf_map_lookup_elem(&nodes, &node_key)) {
                TSF_STAT_INC(st, to_local_peer);
                return SK_PASS;
        }

        if (affinity_is_local(ctx->remote_ip4, cfg, st)) {
                TSF_STAT_INC(st, to_local_affinity);
                return SK_PASS;
        }

        sk = bpf_map_lookup_elem(&gateway, &zero);
        if (!sk) {
                TSF_STAT_INC(st, fail_open);
                return SK_PASS;
        }
        err = bpf_sk_assign(ctx, sk, 0);
        bpf_sk_release(sk);
        if (err) {
                /* A socket the kernel will not hand this lookup to (not a
                 * TCP listener, wrong family): still serve locally. */
                TSF_STAT_INC(st, assign_failed);
                return SK_PASS;
        }
        TSF_STAT_INC(st, to_gateway);
        return SK_PASS;
}
