/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * Tracking of RDP-port connections (DESIGN 2.1 "Tracking"), a sockops
 * program attached to a cgroup v2 (the agent uses the root cgroup, so the
 * RDP server's sockets and its own are all seen).
 *
 * Which connections: IPv4 (or IPv4-mapped on a dual-stack socket, which is
 * how xrdp listens)
 *   - passive: accepted with the RDP port as local port (clients, peers,
 *     the gateway's own backend legs seen from the RDP server's side);
 *   - active: connected to the RDP port, or to a farm node's RDP port from
 *     the node table (the gateway's backend legs).
 * For those it asks the kernel for state-change and RTO callbacks, keeps
 * one `conns` entry per socket cookie, refreshes its counters on each
 * state change, and on the final transition to CLOSE sends a close event
 * on `events` and deletes the entry. The agent thus learns that a client
 * vanished even from RDP servers that never report to it.
 */
#include "tsfarm_common.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* A plain hash, not LRU: silently evicting a quiet eight-hour session to
 * make room would lose exactly the connections that matter. When full,
 * new connections go untracked (counted in conns_table_full), and the
 * agent reconciles the table against sock_diag at start-up. */
struct {
        __uint(type, BPF_MAP_TYPE_HASH);
        __uint(max_entries, TSF_CONNS_MAX);
        __type(key, __u64);
        __type(value, struct tsf_conn);
        __uint(pinning, LIBBPF_PIN_BY_NAME);
} conns SEC(".maps");

struct {
        __uint(type, BPF_MAP_TYPE_RINGBUF);
        __uint(max_entries, TSF_EVENTS_BYTES);
        __uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

/* errno values for the close classification (not in vmlinux.h). */
#define TSF_EPIPE 32
#define TSF_ECONNRESET 104
#define TSF_ETIMEDOUT 110

/* The IPv4 addresses of the connection, also for an IPv4-mapped IPv6
 * socket (::ffff:a.b.c.d). False for real IPv6. */
static __always_inline bool conn_addrs(const struct bpf_sock_ops *skops, __be32 *local, __be32 *remote) {
        /* Every field is loaded up front and pinned with barrier_var():
         * clang 14 otherwise sinks the loads past the branch, selects
         * between two ctx offsets and loads through the result, which the
         * verifier rejects ("dereference of modified ctx ptr"). All of
         * them are readable whatever the family. */
        __u32 family = skops->family;
        __be32 l4 = skops->local_ip4, r4 = skops->remote_ip4;
        __be32 l6 = skops->local_ip6[3], r6 = skops->remote_ip6[3];
        __u32 r6_0 = skops->remote_ip6[0], r6_1 = skops->remote_ip6[1], r6_2 = skops->remote_ip6[2];

        barrier_var(l4);
        barrier_var(r4);
        barrier_var(l6);
        barrier_var(r6);
        if (family == AF_INET) {
                *local = l4;
                *remote = r4;
                return true;
        }
        if (family != AF_INET6 || r6_0 || r6_1 || r6_2 != bpf_htonl(0xffff))
                return false;
        *local = l6;
        *remote = r6;
        return true;
}

/* Refreshes the counters the kernel keeps on the socket. */
static __always_inline void conn_refresh(struct tsf_conn *c, const struct bpf_sock_ops *skops) {
        c->bytes_acked = skops->bytes_acked;
        c->bytes_received = skops->bytes_received;
        /* The kernel keeps srtt scaled by 8 (tcp_sock.srtt_us). */
        c->srtt_us = skops->srtt_us >> 3;
        c->total_retrans = skops->total_retrans;
        c->data_segs_in = skops->data_segs_in;
        c->data_segs_out = skops->data_segs_out;
}

static __always_inline bool is_rdp_peer_port(__be32 addr, __u32 port) {
        struct tsf_node_key key = {.addr = addr};
        struct tsf_node_value *node;

        node = bpf_map_lookup_elem(&nodes, &key);
        return node && bpf_ntohs(node->rdp_port) == port;
}

static __always_inline void on_established(struct bpf_sock_ops *skops, __u8 dir) {
        struct tsf_conn c = {};
        const struct tsf_config *cfg;
        struct tsf_stats *st;
        __u32 zero = 0, rdp_port, local_port, remote_port;
        __be32 local, remote;
        __u64 cookie;

        cfg = bpf_map_lookup_elem(&config, &zero);
        if (!cfg || !conn_addrs(skops, &local, &remote))
                return;
        rdp_port = tsf_rdp_port(cfg);
        local_port = skops->local_port;
        /* remote_port is the network-order port in the upper 16 bits. */
        remote_port = bpf_ntohl(skops->remote_port) & 0xffff;
        if (dir == TSF_CONN_PASSIVE && local_port != rdp_port)
                return;
        if (dir == TSF_CONN_ACTIVE && remote_port != rdp_port && !is_rdp_peer_port(remote, remote_port))
                return;

        st = tsf_stats_get();
        cookie = bpf_get_socket_cookie(skops);
        c.local_addr = local;
        c.remote_addr = remote;
        c.local_port = (__u16)local_port;
        c.remote_port = (__u16)remote_port;
        c.dir = dir;
        c.state = BPF_TCP_ESTABLISHED;
        c.established_ns = bpf_ktime_get_ns();
        conn_refresh(&c, skops);
        if (bpf_map_update_elem(&conns, &cookie, &c, BPF_NOEXIST)) {
                /* Untracked: no callbacks either, they would find nothing. */
                TSF_STAT_INC(st, conns_table_full);
                return;
        }
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG |
                                                 BPF_SOCK_OPS_RTO_CB_FLAG);
        TSF_STAT_INC(st, conns_established);
        /* The agent learns of a client that reached the RDP server straight
         * (the fast path), to tell the directory the session is active. */
        if (dir == TSF_CONN_PASSIVE) {
                struct tsf_conn_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

                if (e) {
                        e->type = TSF_EVENT_OPEN;
                        e->error = 0;
                        e->cookie = cookie;
                        e->closed_ns = 0;
                        __builtin_memcpy(&e->conn, &c, sizeof(e->conn));
                        bpf_ringbuf_submit(e, 0);
                } else {
                        TSF_STAT_INC(st, events_dropped);
                }
        }
}

/* The socket's pending error, read through its BTF type: bpf_sock_ops has
 * no field for it. tcp_reset() and the retransmit/keepalive timers set it
 * before moving the socket to CLOSE, so it tells a reset or a timeout
 * apart from an orderly close. */
static __always_inline __u32 sock_error(struct bpf_sock_ops *skops) {
        struct bpf_sock *bsk = skops->sk;
        struct tcp_sock *tp;
        int err;

        if (!bsk)
                return 0;
        tp = bpf_skc_to_tcp_sock(bsk);
        if (!tp)
                return 0;
        err = tp->inet_conn.icsk_inet.sk.sk_err;
        return err > 0 ? (__u32)err : 0;
}

/* How it ended: the pending error first, else the state it left. */
static __always_inline __u8 end_reason(__u32 old_state, __u32 error) {
        switch (error) {
        case 0:
                break;
        case TSF_ECONNRESET:
        case TSF_EPIPE:
                return TSF_END_RST_RECEIVED;
        case TSF_ETIMEDOUT:
                return TSF_END_TIMEOUT;
        default:
                return TSF_END_ERROR;
        }
        switch (old_state) {
        case BPF_TCP_FIN_WAIT1:
        case BPF_TCP_FIN_WAIT2:
        case BPF_TCP_CLOSING:
        case BPF_TCP_TIME_WAIT:
                return TSF_END_FIN_LOCAL;
        case BPF_TCP_LAST_ACK:
                return TSF_END_FIN_REMOTE;
        default:
                /* ESTABLISHED/CLOSE_WAIT straight to CLOSE with no error:
                 * this side sent a reset (SO_LINGER 0, close with unread
                 * data, tcp_abort from sock_diag). */
                return TSF_END_ABORT;
        }
}

static __always_inline void on_state(struct bpf_sock_ops *skops) {
        __u32 old_state = skops->args[0], new_state = skops->args[1];
        struct tsf_conn_event *e;
        struct tsf_stats *st;
        struct tsf_conn *c;
        __u64 cookie;

        cookie = bpf_get_socket_cookie(skops);
        c = bpf_map_lookup_elem(&conns, &cookie);
        if (!c)
                return;
        conn_refresh(c, skops);
        if (new_state != BPF_TCP_CLOSE) {
                c->state = (__u8)new_state;
                return;
        }

        st = tsf_stats_get();
        c->state = (__u8)old_state;
        e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
        if (e) {
                e->type = TSF_EVENT_CLOSE;
                e->error = sock_error(skops);
                e->cookie = cookie;
                e->closed_ns = bpf_ktime_get_ns();
                c->end = end_reason(old_state, e->error);
                __builtin_memcpy(&e->conn, c, sizeof(e->conn));
                bpf_ringbuf_submit(e, 0);
        } else {
                TSF_STAT_INC(st, events_dropped);
        }
        bpf_map_delete_elem(&conns, &cookie);
        TSF_STAT_INC(st, conns_closed);
}

static __always_inline void on_rto(struct bpf_sock_ops *skops) {
        struct tsf_stats *st;
        struct tsf_conn *c;
        __u64 cookie;

        cookie = bpf_get_socket_cookie(skops);
        c = bpf_map_lookup_elem(&conns, &cookie);
        if (!c)
                return;
        conn_refresh(c, skops);
        c->rto_count++;
        c->last_rto_ns = bpf_ktime_get_ns();
        st = tsf_stats_get();
        TSF_STAT_INC(st, rto);
}

SEC("sockops")
int tsf_track(struct bpf_sock_ops *skops) {
        switch (skops->op) {
        case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
                on_established(skops, TSF_CONN_PASSIVE);
                break;
        case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
                on_established(skops, TSF_CONN_ACTIVE);
                break;
        case BPF_SOCK_OPS_STATE_CB:
                on_state(skops);
                break;
        case BPF_SOCK_OPS_RTO_CB:
                on_rto(skops);
                break;
        default:
                break;
        }
        /* 1 = carry on; sockops return values only matter for ops that
         * ask for a reply, none of which we handle. */
        return 1;
}
