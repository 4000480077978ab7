/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * TCP sockets through NETLINK_SOCK_DIAG: list the connections on a port
 * (at start-up, to reconcile with what the BPF maps recorded) and destroy
 * one (forced logoff, a session moving, the stale server-side leg a
 * reconnecting user left behind).
 *
 * Every call is synchronous and opens its own netlink socket: these are
 * rare, operator-paced operations and the kernel answers from memory, so
 * nothing here waits on the network. Functions return negative errno and
 * log at debug level only; the caller logs once.
 *
 * Addresses: an IPv6 socket talking IPv4 (a dual-stack listener on [::]
 * accepting an IPv4 client, which is how xrdp listens by default) is
 * reported with an AF_INET tuple; `sock_family` keeps the socket's own
 * family. Tuples passed in may use either spelling.
 */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

union sockdiag_addr {
        struct in_addr in;
        struct in6_addr in6;
        uint8_t bytes[16];
};

/* A connection as seen from this host: local is our end. */
struct sockdiag_tuple {
        int family; /* AF_INET or AF_INET6 */
        union sockdiag_addr local;
        union sockdiag_addr remote; /* all zero for a listener */
        uint16_t local_port;        /* host byte order */
        uint16_t remote_port;       /* host byte order; 0 for a listener */
        uint32_t ifindex;           /* SO_BINDTODEVICE, 0 if unbound (matches any) */
};

/* States as a mask of (1 << TCP_*) from <netinet/tcp.h>. */
#define SOCKDIAG_STATE_BIT(state) (UINT32_C(1) << (state))
/* TCP_ESTABLISHED..TCP_CLOSING: everything in the kernel's lookup tables,
 * including TIME_WAIT and half-open (SYN_RECV) connections; not sockets
 * that are merely bound (TCP_BOUND_INACTIVE, a pseudo-state that recent
 * kernels report only when asked for). */
#define SOCKDIAG_STATES_DEFAULT UINT32_C(0x0ffe)

struct sockdiag_filter {
        int family;           /* AF_INET, AF_INET6 (as reported) or AF_UNSPEC for both */
        uint16_t local_port;  /* 0: any */
        uint16_t remote_port; /* 0: any */
        uint32_t states;      /* 0: SOCKDIAG_STATES_DEFAULT */
};

struct sockdiag_sock {
        struct sockdiag_tuple tuple;
        int sock_family; /* the socket's own: AF_INET6 for a dual-stack socket with an AF_INET tuple */
        uint8_t state;   /* TCP_ESTABLISHED, TCP_LISTEN, ... (<netinet/tcp.h>) */
        uint64_t cookie; /* == getsockopt(SO_COOKIE) == bpf_get_socket_cookie() */
        uint32_t uid;    /* owner; 0 for TIME_WAIT and SYN_RECV entries */
        uint32_t inode;  /* of the owning file (/proc/PID/fd -> socket:[inode]); 0 if none */
        uint32_t rqueue; /* bytes unread (listener: accept queue length) */
        uint32_t wqueue; /* bytes unacknowledged (listener: backlog) */

        /* From struct tcp_info; has_tcp_info is false for TIME_WAIT and
         * SYN_RECV entries, which have none. Fields a kernel too old to
         * report them stay 0 (bytes_sent needs Linux >= 4.19). */
        bool has_tcp_info;
        uint64_t bytes_acked;    /* sent and acknowledged by the peer */
        uint64_t bytes_received; /* received in order */
        uint64_t bytes_sent;     /* sent, retransmissions included */
        uint32_t rtt_us;         /* smoothed RTT */
        uint32_t rttvar_us;
        uint32_t total_retrans;     /* segments retransmitted over the connection's life */
        uint32_t last_data_recv_ms; /* since data last arrived: idle legs */
        uint32_t last_data_sent_ms;
};

/* Return negative errno to stop the enumeration; the list function then
 * returns that value. */
typedef int (*sockdiag_fn)(const struct sockdiag_sock *s, void *userdata);

/* Calls `cb` for every TCP socket (IPv4 and IPv6) whose LOCAL port is
 * `local_port` (0: every port) in the default states: the listener and the
 * server side of every connection accepted on that port. The client side
 * of a connection *to* that port has it as its remote port and is not
 * listed (use sockdiag_list_tcp_filtered() with remote_port for those).
 * The kernel filters by port (inet_diag bytecode); the check is repeated
 * in user space so a kernel without the bytecode op gets the same answer.
 * Returns the number of sockets reported, or negative errno. */
int sockdiag_list_tcp(uint16_t local_port, sockdiag_fn cb, void *userdata);
int sockdiag_list_tcp_filtered(const struct sockdiag_filter *f, sockdiag_fn cb, void *userdata);

/* Looks up exactly this connection. The kernel's lookup falls back to a
 * listener on the local port when no connection matches; that does not
 * count as found here. Returns 0 and fills *ret, or -ENOENT. */
int sockdiag_get_tcp(const struct sockdiag_tuple *t, struct sockdiag_sock *ret);

/* SOCK_DESTROY: the kernel aborts the socket as if the peer had reset it.
 * The peer is sent a RST (its recv() fails with ECONNRESET), the owner's
 * next recv() fails with ECONNABORTED, and the socket leaves the tables at
 * once (no TIME_WAIT). Destroying a listener (a tuple with a zero remote
 * end) stops it listening.
 *
 * The socket is first looked up exactly (sockdiag_get_tcp) and then
 * destroyed by its cookie, because SOCK_DESTROY alone would fall back to,
 * and destroy, the listener when the connection is already gone.
 *
 * Returns 0, -ENOENT (no such connection, or with a cookie: that tuple is
 * now a different socket), -EPERM (no CAP_NET_ADMIN in the socket's network
 * namespace's user namespace), -EOPNOTSUPP (kernel without
 * CONFIG_INET_DIAG_DESTROY), or another negative errno. */
int sockdiag_destroy_tcp(const struct sockdiag_tuple *t);
int sockdiag_destroy_tcp_cookie(const struct sockdiag_tuple *t, uint64_t cookie);

/* "ESTABLISHED", "LISTEN", ...; "UNKNOWN" for anything else. */
const char *sockdiag_state_to_string(uint8_t state);

/* "192.0.2.7:3389 <-> 198.51.100.4:50122" or "[2001:db8::1]:3389 <-> ...";
 * returns buf. */
#define SOCKDIAG_TUPLE_STRING_MAX 128
char *sockdiag_tuple_to_string(const struct sockdiag_tuple *t, char *buf, size_t size);
