/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * The one contract between tsfarm's BPF programs (bpf/steer.bpf.c,
 * bpf/track.bpf.c) and user space (the agent, tsctl, tests).
 *
 * Rules, so both compilers agree on every byte:
 *   - only __u8..__u64, __be16/__be32, char arrays and nested structs of
 *     those; no enums, bools, pointers or bitfields in a struct;
 *   - every hole is an explicit `_pad` field (always written as zero);
 *   - every struct's size is pinned by a _Static_assert below it.
 * Changing any struct, map type or size here means bumping
 * TSF_ABI_VERSION: the maps are pinned and outlive the agent, and libbpf
 * only checks that a reused pin has the same type/key/value/max_entries.
 *
 * BPF side: include "vmlinux.h" first (it defines __VMLINUX_H__ and the
 * __u* types). User space: this header pulls in <linux/types.h>.
 *
 * Byte order: IPv4 addresses are __be32 (network order, as in
 * sockaddr_in and struct bpf_sk_lookup); the node table's rdp_port is
 * __be16 as on the wire; every other port is host order and says so.
 * Times named *_ns are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns());
 * times named *_us are CLOCK_REALTIME microseconds (tsf_now_realtime()).
 */
#ifndef TSFARM_ABI_H
#define TSFARM_ABI_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define TSF_ABI_VERSION 1

/* ---- pins -------------------------------------------------------------- */

/* Every map is declared with LIBBPF_PIN_BY_NAME: open the skeletons with
 * bpf_object_open_opts.pin_root_path = TSF_PIN_ROOT and libbpf pins each
 * map at TSF_PIN_ROOT/<name>, or reuses the pin if it already exists. That
 * is how steer and track share nodes/config/stats, and how the maps
 * survive an agent restart. */
#define TSF_PIN_ROOT "/sys/fs/bpf/tsfarm"
/* Suggested names for the agent's pinned links (not created by libbpf). */
#define TSF_PIN_LINK_STEER "link_steer"
#define TSF_PIN_LINK_TRACK "link_track"

/* Map names (the BPF object names, <= 15 characters, and the pin names). */
#define TSF_MAP_NODES "nodes"
#define TSF_MAP_SESSIONS "sessions"
#define TSF_MAP_AFFINITY "affinity"
#define TSF_MAP_GATEWAY "gateway"
#define TSF_MAP_CONFIG "config"
#define TSF_MAP_CONNS "conns"
#define TSF_MAP_STATS "stats"
#define TSF_MAP_EVENTS "events"

/* Map sizes. Part of the ABI: a pinned map is reused only if they match. */
#define TSF_NODES_MAX 1024
#define TSF_SESSIONS_MAX 65536
#define TSF_AFFINITY_MAX 65536
#define TSF_CONNS_MAX 16384
#define TSF_EVENTS_BYTES (256 * 1024)
#define TSF_GATEWAY_SLOT 0 /* the gateway sockmap has this one slot */

#define TSF_RDP_PORT_DEFAULT 3389

/* Node id 0 means "none/unknown"; real node ids start at 1. */
#define TSF_NODE_ID_NONE 0

/* ---- config: ARRAY, 1 entry (key __u32 0) ------------------------------ */

/* Written by the agent at any time (no reload needed); read by both
 * programs on every run. An all-zero entry (the state right after load)
 * means: default RDP port, self unknown (no affinity fast path). */
struct tsf_config {
        __u32 abi_version;  /* TSF_ABI_VERSION of the writer; lets a new agent spot old pins */
        __u32 self_node_id; /* this node's id in the farm; TSF_NODE_ID_NONE = unknown */
        __u16 rdp_port;     /* host order; 0 = TSF_RDP_PORT_DEFAULT */
        __u8 _pad[6];
};
_Static_assert(sizeof(struct tsf_config) == 16, "tsf_config size");

/* ---- nodes: HASH, tsf_node_key -> tsf_node_value ----------------------- */

/* Every IPv4 address of every farm node, including this node's own
 * addresses (flag SELF) and any address the agent connects *from* when it
 * talks to the local RDP server (flag BYPASS, e.g. 127.0.0.1). steer lets
 * any source found here through to the local RDP server whatever its
 * flags: a peer forwarding a steered connection, or the agent's own
 * backend leg (which would otherwise loop back into the gateway). */
#define TSF_NODE_F_SELF (1u << 0)     /* an address of this node */
#define TSF_NODE_F_PEER (1u << 1)     /* an address of another farm node */
#define TSF_NODE_F_DRAINING (1u << 2) /* node takes no new sessions */
#define TSF_NODE_F_DOWN (1u << 3)     /* heartbeat lapsed */
#define TSF_NODE_F_BYPASS (1u << 4)   /* not a node: a trusted source the gateway must not see */

struct tsf_node_key {
        __be32 addr;
};
_Static_assert(sizeof(struct tsf_node_key) == 4, "tsf_node_key size");

struct tsf_node_value {
        __u32 node_id;   /* TSF_NODE_ID_NONE for a pure BYPASS entry */
        __be16 rdp_port; /* network order: the node's RDP port */
        __u16 flags;     /* TSF_NODE_F_* */
        __u32 weight;    /* placement weight (user space only) */
        __u32 _pad;
};
_Static_assert(sizeof(struct tsf_node_value) == 16, "tsf_node_value size");

/* ---- sessions: HASH (no prealloc), tsf_session_key -> tsf_session_value - */

/* The farm's session map mirrored from the directory (written by the
 * agent, read by the gateway and tools; no program reads it yet).
 *
 * Key: the folded user part produced by lib/userkey (tsf_userkey_index()).
 *   - up to 63 bytes: the name, NUL-padded to 64 bytes (user[63] == 0);
 *   - 64 bytes or longer: the first 56 bytes, then tsf_user_key_hash() of
 *     the whole name stored little-endian with its top bit forced to 1, so
 *     user[63] != 0 tells the two forms apart and a long name can never
 *     collide with a short one. tsf_session_key_make() does this. */
#define TSF_USER_KEY_SIZE 64
#define TSF_USER_KEY_PREFIX 56

struct tsf_session_key {
        char user[TSF_USER_KEY_SIZE];
};
_Static_assert(sizeof(struct tsf_session_key) == 64, "tsf_session_key size");

#define TSF_SESSION_ACTIVE 1
#define TSF_SESSION_DISCONNECTED 2
#define TSF_SESSION_LOST 3 /* the node holding it went down */

struct tsf_session_value {
        __u32 node_id;
        __u32 session_id; /* the session's id on that node */
        __u8 state;       /* TSF_SESSION_* */
        __u8 _pad[7];
        __u64 revision;         /* directory revision of the last change */
        __u64 state_changed_us; /* CLOCK_REALTIME µs, the directory's clock */
};
_Static_assert(sizeof(struct tsf_session_value) == 32, "tsf_session_value size");

/* ---- affinity: LRU_HASH, tsf_affinity_key -> tsf_affinity_value -------- */

/* Client address -> node that served it last. Written by the agent (the
 * gateway learns the user key from the first PDU); steer only reads it.
 * An entry takes the fast path only while fresh: not expired, not
 * MULTI_USER, and pointing at this node (tsf_config.self_node_id). */
#define TSF_AFFINITY_F_MULTI_USER (1u << 0) /* seen with two different user keys */

struct tsf_affinity_key {
        __be32 addr;
};
_Static_assert(sizeof(struct tsf_affinity_key) == 4, "tsf_affinity_key size");

struct tsf_affinity_value {
        __u32 node_id;
        __u32 flags;      /* TSF_AFFINITY_F_* */
        __u64 user_hash;  /* tsf_user_key_hash() of the user key last seen */
        __u64 expires_ns; /* CLOCK_MONOTONIC ns; stale at or after this */
};
_Static_assert(sizeof(struct tsf_affinity_value) == 24, "tsf_affinity_value size");

/* ---- gateway: SOCKMAP, 1 slot ------------------------------------------ */

/* Slot TSF_GATEWAY_SLOT holds the agent's listening gateway socket (key
 * __u32, value the socket fd on update / socket cookie on lookup). The
 * kernel empties the slot when the socket closes: steer then fails open. */

/* ---- conns: HASH, __u64 socket cookie -> tsf_conn ---------------------- */

#define TSF_CONN_PASSIVE 1 /* accepted on the RDP port (client or peer leg) */
#define TSF_CONN_ACTIVE 2  /* connected to an RDP port (a gateway backend leg) */

/* How a connection ended (tsf_conn.end; TSF_END_NONE while open). */
#define TSF_END_NONE 0
#define TSF_END_FIN_LOCAL 1    /* orderly: this side closed first */
#define TSF_END_FIN_REMOTE 2   /* orderly: the peer closed first */
#define TSF_END_RST_RECEIVED 3 /* the peer reset it (ECONNRESET/EPIPE) */
#define TSF_END_TIMEOUT 4      /* retransmissions/keepalives gave up (ETIMEDOUT) */
#define TSF_END_ABORT 5        /* this side reset it (linger 0, unread data, kill) */
#define TSF_END_ERROR 6        /* another error; see tsf_conn_event.error */

struct tsf_conn {
        __be32 local_addr;
        __be32 remote_addr;
        __u16 local_port;  /* host order */
        __u16 remote_port; /* host order */
        __u8 dir;          /* TSF_CONN_* */
        __u8 state;        /* last TCP state, BPF_TCP_* numbering (1 = ESTABLISHED) */
        __u8 end;          /* TSF_END_* */
        __u8 _pad0;
        __u64 established_ns; /* CLOCK_MONOTONIC ns */
        __u64 bytes_acked;    /* sent and acknowledged by the peer */
        __u64 bytes_received;
        __u32 srtt_us; /* smoothed RTT, µs */
        __u32 total_retrans;
        __u32 data_segs_in;
        __u32 data_segs_out;
        __u32 rto_count; /* retransmission timeouts seen */
        __u32 _pad1;
        __u64 last_rto_ns; /* CLOCK_MONOTONIC ns of the last RTO; 0 = none */
};
_Static_assert(sizeof(struct tsf_conn) == 72, "tsf_conn size");

/* Counters are refreshed on every TCP state change and RTO, not per
 * packet: between those, read live values with sock_diag. */

/* ---- events: RINGBUF of tsf_conn_event --------------------------------- */

#define TSF_EVENT_CLOSE 1
#define TSF_EVENT_OPEN 2 /* a passive RDP-port connection was established (closed_ns = 0) */

struct tsf_conn_event {
        __u32 type;           /* TSF_EVENT_* */
        __u32 error;          /* the socket's pending errno at close (positive), 0 = none */
        __u64 cookie;         /* socket cookie (the conns key) */
        __u64 closed_ns;      /* CLOCK_MONOTONIC ns */
        struct tsf_conn conn; /* final counters; conn.state = state before CLOSE */
};
_Static_assert(sizeof(struct tsf_conn_event) == 96, "tsf_conn_event size");

/* ---- stats: PERCPU_ARRAY, 1 entry (key __u32 0) ------------------------ */

/* One struct of counters per CPU (user space sums them). Lookup counters
 * count only TCP/IPv4 lookups for the RDP port; every such lookup bumps
 * lookup_total and exactly one of to_local_peer, to_local_affinity,
 * to_gateway, fail_open, assign_failed. */
struct tsf_stats {
        __u64 lookup_total;
        __u64 to_local_peer;       /* source in nodes: normal lookup */
        __u64 to_local_affinity;   /* fresh affinity to this node: normal lookup */
        __u64 to_gateway;          /* assigned to the gateway socket */
        __u64 fail_open;           /* gateway slot empty: normal lookup */
        __u64 assign_failed;       /* bpf_sk_assign() refused the socket: normal lookup */
        __u64 affinity_expired;    /* an entry existed but was stale */
        __u64 affinity_multi_user; /* an entry existed but was shared */
        __u64 affinity_other_node; /* an entry existed for another node */
        __u64 conns_established;   /* connections tracked */
        __u64 conns_closed;        /* tracked connections closed (event sent or not) */
        __u64 conns_table_full;    /* RDP connections not tracked: conns full */
        __u64 events_dropped;      /* close events lost: ring buffer full */
        __u64 rto;                 /* RTOs on tracked connections */
};
_Static_assert(sizeof(struct tsf_stats) == 14 * 8, "tsf_stats size");

/* ---- user-key helpers (user space only) -------------------------------- */

#ifndef __bpf__
/* FNV-1a, 64-bit: the hash for long session keys and affinity user_hash.
 * Fixed here, not "some hash", because the agent and tsctl on different
 * builds must compute the same key. */
static inline __u64 tsf_user_key_hash(const char *s, __u64 len) {
        __u64 h = 0xcbf29ce484222325ULL;

        for (__u64 i = 0; i < len; i++) {
                h ^= (__u8)s[i];
                h *= 0x100000001b3ULL;
        }
        return h;
}

/* Builds the sessions map key from a folded user part of `len` bytes (see
 * the rules above the struct). */
static inline void tsf_session_key_make(struct tsf_session_key *k, const char *user, __u64 len) {
        for (__u64 i = 0; i < TSF_USER_KEY_SIZE; i++)
                k->user[i] = 0;
        if (len < TSF_USER_KEY_SIZE) {
                for (__u64 i = 0; i < len; i++)
                        k->user[i] = user[i];
                return;
        }
        __u64 h = tsf_user_key_hash(user, len) | (1ULL << 63);
        for (__u64 i = 0; i < TSF_USER_KEY_PREFIX; i++)
                k->user[i] = user[i];
        for (__u64 i = 0; i < 8; i++)
                k->user[TSF_USER_KEY_PREFIX + i] = (char)(__u8)(h >> (8 * i));
}
#endif

#endif /* TSFARM_ABI_H */
