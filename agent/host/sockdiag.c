/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * NETLINK_SOCK_DIAG for TCP, through libnl's core (socket, message,
 * callbacks) with the kernel's inet_diag structures.
 *
 * A request is a struct inet_diag_req_v2, optionally followed by attributes:
 *
 *   nlmsghdr { type = SOCK_DIAG_BY_FAMILY | SOCK_DESTROY, flags }
 *   inet_diag_req_v2 { family, IPPROTO_TCP, ext, states,
 *                      id { sport, dport, src[4], dst[4], if, cookie[2] } }
 *   [INET_DIAG_REQ_BYTECODE: inet_diag_bc_op program]     (dumps only)
 *
 * and each answer an inet_diag_msg followed by attributes, of which we read
 * INET_DIAG_INFO (struct tcp_info). A dump (NLM_F_DUMP) ends with
 * NLMSG_DONE; an exact request (no NLM_F_DUMP) looks one socket up by its
 * 4-tuple and is answered by one message and an ACK, or an error.
 *
 * Kernel errors come back in NLMSG_ERROR; libnl would translate them into
 * its own codes and lose ESTALE/ENOENT distinctions, so an error callback
 * keeps the errno as the kernel sent it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/inet_diag.h>
#include <linux/sock_diag.h>

#include "nl_util.h"
#include "sockdiag.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

/*
 * The kernel's struct tcp_info (<linux/tcp.h>) as far as we read it.
 * <linux/tcp.h> cannot be included next to glibc's <netinet/tcp.h> (libnl's
 * headers include the latter), and glibc's copy stops at tcpi_total_retrans.
 * The kernel only ever appends to this struct and reports how much it
 * filled, so a prefix is a stable ABI; the offsets are checked below
 * against linux-libc-dev 6.1.
 */
struct kernel_tcp_info {
        struct tcp_info glibc; /* tcpi_state .. tcpi_total_retrans */
        uint64_t tcpi_pacing_rate;
        uint64_t tcpi_max_pacing_rate;
        uint64_t tcpi_bytes_acked;
        uint64_t tcpi_bytes_received;
        uint32_t tcpi_segs_out;
        uint32_t tcpi_segs_in;
        uint32_t tcpi_notsent_bytes;
        uint32_t tcpi_min_rtt;
        uint32_t tcpi_data_segs_in;
        uint32_t tcpi_data_segs_out;
        uint64_t tcpi_delivery_rate;
        uint64_t tcpi_busy_time;
        uint64_t tcpi_rwnd_limited;
        uint64_t tcpi_sndbuf_limited;
        uint32_t tcpi_delivered;
        uint32_t tcpi_delivered_ce;
        uint64_t tcpi_bytes_sent;
        uint64_t tcpi_bytes_retrans;
};
_Static_assert(sizeof(struct tcp_info) == 104, "glibc's struct tcp_info is not the expected prefix");
_Static_assert(offsetof(struct kernel_tcp_info, tcpi_bytes_acked) == 120, "tcp_info layout");
_Static_assert(offsetof(struct kernel_tcp_info, tcpi_bytes_received) == 128, "tcp_info layout");
_Static_assert(offsetof(struct kernel_tcp_info, tcpi_delivered) == 192, "tcp_info layout");
_Static_assert(offsetof(struct kernel_tcp_info, tcpi_bytes_sent) == 200, "tcp_info layout");

/* Both cookie words at INET_DIAG_NOCOOKIE: the kernel skips the check. */
#define COOKIE_NONE UINT64_MAX

struct diag_call {
        /* Dumps: which sockets, and whom to tell. */
        const struct sockdiag_filter *filter;
        sockdiag_fn cb;
        void *userdata;
        size_t n_reported;
        size_t n_messages; /* in the current dump, before filtering */

        /* Exact lookups: the one answer. */
        struct sockdiag_sock *result;
        bool found;

        int kernel_error; /* from NLMSG_ERROR: negative errno */
        int stop_error;   /* the callback's, or a malformed answer */
        bool done;
};

/* ::ffff:a.b.c.d to AF_INET, when both ends are IPv4 (or the remote end is
 * unset, as for a listener bound to a mapped address). */
static void tuple_normalize(const struct sockdiag_tuple *in, struct sockdiag_tuple *out) {
        struct sockdiag_tuple t = *in;

        if (t.family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in->local.in6) &&
            (IN6_IS_ADDR_V4MAPPED(&in->remote.in6) || IN6_IS_ADDR_UNSPECIFIED(&in->remote.in6))) {
                t.family = AF_INET;
                memset(&t.local, 0, sizeof(t.local));
                memset(&t.remote, 0, sizeof(t.remote));
                memcpy(&t.local.in, &in->local.bytes[12], 4);
                if (IN6_IS_ADDR_V4MAPPED(&in->remote.in6))
                        memcpy(&t.remote.in, &in->remote.bytes[12], 4);
        } else if (t.family == AF_INET) {
                /* Only the first four bytes mean anything; compare cleanly. */
                memset(&t.local.bytes[4], 0, 12);
                memset(&t.remote.bytes[4], 0, 12);
        }
        *out = t;
}

/* `want` and `got` normalised; an unset ifindex in `want` matches any. */
static bool tuple_matches(const struct sockdiag_tuple *want, const struct sockdiag_tuple *got) {
        size_t len = want->family == AF_INET ? 4 : 16;

        return want->family == got->family && want->local_port == got->local_port &&
               want->remote_port == got->remote_port &&
               memcmp(want->local.bytes, got->local.bytes, len) == 0 &&
               memcmp(want->remote.bytes, got->remote.bytes, len) == 0 &&
               (want->ifindex == 0 || want->ifindex == got->ifindex);
}

static int tuple_check(const struct sockdiag_tuple *t) {
        if (!t || (t->family != AF_INET && t->family != AF_INET6) || t->local_port == 0)
                return -EINVAL;
        return 0;
}

static int parse_diag_msg(struct nlmsghdr *h, struct sockdiag_sock *s) {
        struct nlattr *tb[INET_DIAG_MAX + 1];
        const struct inet_diag_msg *d;
        struct sockdiag_tuple t = {};

        if (!nlmsg_valid_hdr(h, sizeof(*d)))
                return -EBADMSG;
        d = nlmsg_data(h);
        if (nlmsg_parse(h, sizeof(*d), tb, INET_DIAG_MAX, NULL) < 0)
                return -EBADMSG;

        t.family = d->idiag_family;
        if (t.family == AF_INET) {
                memcpy(&t.local.in, &d->id.idiag_src[0], 4);
                memcpy(&t.remote.in, &d->id.idiag_dst[0], 4);
        } else if (t.family == AF_INET6) {
                memcpy(&t.local.in6, d->id.idiag_src, 16);
                memcpy(&t.remote.in6, d->id.idiag_dst, 16);
        } else
                return -EBADMSG;
        t.local_port = ntohs(d->id.idiag_sport);
        t.remote_port = ntohs(d->id.idiag_dport);
        t.ifindex = d->id.idiag_if;

        *s = (struct sockdiag_sock){
                .sock_family = d->idiag_family,
                .state = d->idiag_state,
                .cookie = (uint64_t)d->id.idiag_cookie[1] << 32 | d->id.idiag_cookie[0],
                .uid = d->idiag_uid,
                .inode = d->idiag_inode,
                .rqueue = d->idiag_rqueue,
                .wqueue = d->idiag_wqueue,
        };
        tuple_normalize(&t, &s->tuple);

        if (tb[INET_DIAG_INFO]) {
                struct kernel_tcp_info ti = {};
                int len = nla_len(tb[INET_DIAG_INFO]);

                /* Older kernels send less (the rest stays 0), newer more. */
                memcpy(&ti, nla_data(tb[INET_DIAG_INFO]), MIN((size_t)MAX(len, 0), sizeof(ti)));
                s->has_tcp_info = true;
                s->bytes_acked = ti.tcpi_bytes_acked;
                s->bytes_received = ti.tcpi_bytes_received;
                s->bytes_sent = ti.tcpi_bytes_sent;
                s->rtt_us = ti.glibc.tcpi_rtt;
                s->rttvar_us = ti.glibc.tcpi_rttvar;
                s->total_retrans = ti.glibc.tcpi_total_retrans;
                s->last_data_recv_ms = ti.glibc.tcpi_last_data_recv;
                s->last_data_sent_ms = ti.glibc.tcpi_last_data_sent;
        }
        return 0;
}

static bool filter_matches(const struct sockdiag_filter *f, const struct sockdiag_sock *s) {
        return (f->family == AF_UNSPEC || f->family == s->tuple.family) &&
               (f->local_port == 0 || f->local_port == s->tuple.local_port) &&
               (f->remote_port == 0 || f->remote_port == s->tuple.remote_port) && s->state < 32 &&
               (f->states & SOCKDIAG_STATE_BIT(s->state));
}

static int on_diag_msg(struct nl_msg *msg, void *userdata) {
        struct diag_call *c = userdata;
        struct nlmsghdr *h = nlmsg_hdr(msg);
        struct sockdiag_sock s;
        int r;

        if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY)
                return NL_OK;
        c->n_messages++;
        r = parse_diag_msg(h, &s);
        if (r < 0) {
                c->stop_error = r;
                c->done = true;
                return NL_STOP;
        }

        if (c->result) {
                if (!c->found) {
                        *c->result = s;
                        c->found = true;
                }
                return NL_OK;
        }

        if (!filter_matches(c->filter, &s))
                return NL_OK;
        c->n_reported++;
        r = c->cb(&s, c->userdata);
        if (r < 0) {
                c->stop_error = r;
                c->done = true;
                return NL_STOP;
        }
        return NL_OK;
}

static int on_done(struct nl_msg *msg, void *userdata) {
        struct diag_call *c = userdata;

        c->done = true;
        return NL_STOP;
}

static int on_error(struct sockaddr_nl *nla, struct nlmsgerr *e, void *userdata) {
        struct diag_call *c = userdata;

        c->kernel_error = e->error < 0 ? e->error : -e->error;
        c->done = true;
        return NL_STOP;
}

/* Sends `m` and reads answers until NLMSG_DONE, an ACK or an error. */
static int diag_transact(struct nl_sock *sk, struct nl_msg *m, struct diag_call *c) {
        _cleanup_(nl_cb_putp) struct nl_cb *cb = NULL;
        int r;

        cb = nl_cb_alloc(NL_CB_DEFAULT);
        if (!cb)
                return -ENOMEM;
        nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, on_diag_msg, c);
        nl_cb_set(cb, NL_CB_FINISH, NL_CB_CUSTOM, on_done, c);
        nl_cb_set(cb, NL_CB_ACK, NL_CB_CUSTOM, on_done, c);
        nl_cb_err(cb, NL_CB_CUSTOM, on_error, c);

        c->done = false;
        c->kernel_error = c->stop_error = 0;
        c->n_messages = 0;

        /* Adds NLM_F_REQUEST, a sequence number and NLM_F_ACK (libnl's
         * auto-ack; the kernel does not ACK dumps, NLMSG_DONE ends them). */
        r = nl_send_auto(sk, m);
        if (r < 0)
                return errno_from_nlerr(r);

        while (!c->done) {
                r = nl_recvmsgs(sk, cb);
                if (c->kernel_error < 0)
                        return c->kernel_error;
                if (c->stop_error < 0)
                        return c->stop_error;
                if (r < 0)
                        return errno_from_nlerr(r);
        }
        return 0;
}

static int diag_open(struct nl_sock **ret) {
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        int r;

        sk = nl_socket_alloc();
        if (!sk)
                return -ENOMEM;
        r = nl_connect(sk, NETLINK_SOCK_DIAG);
        if (r < 0)
                return log_debug_errno(errno_from_nlerr(r), "Failed to open a sock_diag socket: %m");
        *ret = TAKE_PTR(sk);
        return 0;
}

static void req_init(struct inet_diag_req_v2 *req, int family) {
        *req = (struct inet_diag_req_v2){
                .sdiag_family = (uint8_t)family,
                .sdiag_protocol = IPPROTO_TCP,
                .idiag_ext = 1 << (INET_DIAG_INFO - 1),
                .idiag_states = SOCKDIAG_STATES_DEFAULT,
                .id.idiag_cookie = {INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE},
        };
}

static void req_set_tuple(struct inet_diag_req_v2 *req, const struct sockdiag_tuple *t, uint64_t cookie) {
        req->id.idiag_sport = htons(t->local_port);
        req->id.idiag_dport = htons(t->remote_port);
        memcpy(req->id.idiag_src, t->local.bytes, t->family == AF_INET ? 4 : 16);
        memcpy(req->id.idiag_dst, t->remote.bytes, t->family == AF_INET ? 4 : 16);
        req->id.idiag_if = t->ifindex;
        req->id.idiag_cookie[0] = (uint32_t)cookie;
        req->id.idiag_cookie[1] = (uint32_t)(cookie >> 32);
}

/*
 * inet_diag bytecode for "local port == L and remote port == R": each
 * comparison is an op followed by a second op word whose `no` holds the
 * port. A true comparison steps `yes` bytes to the next op; a false one
 * jumps `no` bytes, which we aim 4 bytes past the end: the kernel accepts
 * a socket when the program runs off its end exactly, rejects it
 * otherwise.
 */
static size_t bytecode_build(const struct sockdiag_filter *f, struct inet_diag_bc_op bc[static 4]) {
        size_t n = 0;

        if (f->local_port) {
                bc[n++] = (struct inet_diag_bc_op){.code = INET_DIAG_BC_S_EQ, .yes = 2 * sizeof(*bc)};
                bc[n++] = (struct inet_diag_bc_op){.no = f->local_port};
        }
        if (f->remote_port) {
                bc[n++] = (struct inet_diag_bc_op){.code = INET_DIAG_BC_D_EQ, .yes = 2 * sizeof(*bc)};
                bc[n++] = (struct inet_diag_bc_op){.no = f->remote_port};
        }
        for (size_t i = 0; i < n; i += 2)
                bc[i].no = (uint16_t)((n - i + 1) * sizeof(*bc));
        return n * sizeof(*bc);
}

static int diag_dump(struct nl_sock *sk, int family, const struct sockdiag_filter *f, bool bytecode,
                     struct diag_call *c) {
        _cleanup_(nlmsg_freep) struct nl_msg *m = NULL;
        struct inet_diag_req_v2 req;
        struct inet_diag_bc_op bc[4];
        size_t bc_len = bytecode ? bytecode_build(f, bc) : 0;

        req_init(&req, family);
        req.idiag_states = f->states;
        m = nlmsg_alloc_simple(SOCK_DIAG_BY_FAMILY, NLM_F_DUMP);
        if (!m || nlmsg_append(m, &req, sizeof(req), NLMSG_ALIGNTO) < 0)
                return -ENOMEM;
        if (bc_len > 0 && nla_put(m, INET_DIAG_REQ_BYTECODE, (int)bc_len, bc) < 0)
                return -ENOMEM;
        return diag_transact(sk, m, c);
}

int sockdiag_list_tcp_filtered(const struct sockdiag_filter *f, sockdiag_fn cb, void *userdata) {
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        struct sockdiag_filter flt = f ? *f : (struct sockdiag_filter){.family = AF_UNSPEC};
        struct diag_call c = {.filter = &flt, .cb = cb, .userdata = userdata};
        bool bytecode = flt.local_port != 0 || flt.remote_port != 0;
        int r;

        if (!cb || (flt.family != AF_UNSPEC && flt.family != AF_INET && flt.family != AF_INET6))
                return -EINVAL;
        if (flt.states == 0)
                flt.states = SOCKDIAG_STATES_DEFAULT;

        r = diag_open(&sk);
        if (r < 0)
                return r;

        /* The kernel dumps by the socket's own family, and a dual-stack
         * socket reported with an AF_INET tuple lives in the AF_INET6
         * dump, so only an AF_INET6 filter can skip a dump. */
        for (int family = AF_INET; family != 0; family = family == AF_INET ? AF_INET6 : 0) {
                if (flt.family == AF_INET6 && family == AF_INET)
                        continue;
                r = diag_dump(sk, family, &flt, bytecode, &c);
                if (r == -EINVAL && bytecode && c.n_messages == 0) {
                        /* An old kernel without the S_EQ/D_EQ ops
                         * refuses the program before dumping anything;
                         * dump everything and filter here. */
                        log_debug("sock_diag refused the port filter, filtering in user space.");
                        bytecode = false;
                        r = diag_dump(sk, family, &flt, bytecode, &c);
                }
                if (r < 0)
                        return log_debug_errno(r, "Failed to dump %s TCP sockets: %m",
                                               family == AF_INET ? "IPv4" : "IPv6");
        }
        return (int)MIN(c.n_reported, (size_t)INT32_MAX);
}

int sockdiag_list_tcp(uint16_t local_port, sockdiag_fn cb, void *userdata) {
        struct sockdiag_filter f = {.family = AF_UNSPEC, .local_port = local_port};

        return sockdiag_list_tcp_filtered(&f, cb, userdata);
}

/* `t` normalised. */
static int diag_get(struct nl_sock *sk, const struct sockdiag_tuple *t, struct sockdiag_sock *ret) {
        _cleanup_(nlmsg_freep) struct nl_msg *m = NULL;
        struct inet_diag_req_v2 req;
        struct sockdiag_sock s;
        struct diag_call c = {.result = &s};
        int r;

        req_init(&req, t->family);
        req_set_tuple(&req, t, COOKIE_NONE);
        m = nlmsg_alloc_simple(SOCK_DIAG_BY_FAMILY, 0);
        if (!m || nlmsg_append(m, &req, sizeof(req), NLMSG_ALIGNTO) < 0)
                return -ENOMEM;
        r = diag_transact(sk, m, &c);
        if (r < 0)
                return r;
        /* Found nothing, or the listener the kernel's lookup falls back
         * to: not the connection asked for. */
        if (!c.found || !tuple_matches(t, &s.tuple))
                return -ENOENT;
        *ret = s;
        return 0;
}

static int diag_destroy(struct nl_sock *sk, const struct sockdiag_tuple *t, uint64_t cookie) {
        _cleanup_(nlmsg_freep) struct nl_msg *m = NULL;
        struct inet_diag_req_v2 req;
        struct diag_call c = {};

        req_init(&req, t->family);
        req_set_tuple(&req, t, cookie);
        m = nlmsg_alloc_simple(SOCK_DESTROY, 0);
        if (!m || nlmsg_append(m, &req, sizeof(req), NLMSG_ALIGNTO) < 0)
                return -ENOMEM;
        return diag_transact(sk, m, &c);
}

int sockdiag_get_tcp(const struct sockdiag_tuple *t, struct sockdiag_sock *ret) {
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        struct sockdiag_tuple n;
        int r;

        r = tuple_check(t);
        if (r < 0 || !ret)
                return -EINVAL;
        tuple_normalize(t, &n);
        r = diag_open(&sk);
        if (r < 0)
                return r;
        return diag_get(sk, &n, ret);
}

int sockdiag_destroy_tcp(const struct sockdiag_tuple *t) {
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        char buf[SOCKDIAG_TUPLE_STRING_MAX];
        struct sockdiag_tuple n;
        struct sockdiag_sock s;
        int r;

        r = tuple_check(t);
        if (r < 0)
                return r;
        tuple_normalize(t, &n);
        r = diag_open(&sk);
        if (r < 0)
                return r;

        /* SOCK_DESTROY looks the tuple up like an incoming packet would:
         * with no such connection it finds the listener on the local port
         * and destroys that. Pin the exact socket by its cookie first. */
        r = diag_get(sk, &n, &s);
        if (r < 0)
                return log_debug_errno(r, "No TCP socket %s: %m",
                                       sockdiag_tuple_to_string(&n, buf, sizeof(buf)));
        r = diag_destroy(sk, &s.tuple, s.cookie);
        if (r < 0)
                return log_debug_errno(r, "Failed to destroy TCP socket %s: %m",
                                       sockdiag_tuple_to_string(&n, buf, sizeof(buf)));
        return 0;
}

int sockdiag_destroy_tcp_cookie(const struct sockdiag_tuple *t, uint64_t cookie) {
        _cleanup_(nl_socket_freep) struct nl_sock *sk = NULL;
        char buf[SOCKDIAG_TUPLE_STRING_MAX];
        struct sockdiag_tuple n;
        int r;

        r = tuple_check(t);
        if (r < 0)
                return r;
        /* All ones means "no cookie" to the kernel: it would not check. */
        if (cookie == COOKIE_NONE)
                return -EINVAL;
        tuple_normalize(t, &n);
        r = diag_open(&sk);
        if (r < 0)
                return r;
        r = diag_destroy(sk, &n, cookie);
        if (r < 0)
                return log_debug_errno(r, "Failed to destroy TCP socket %s cookie %" PRIu64 ": %m",
                                       sockdiag_tuple_to_string(&n, buf, sizeof(buf)), cookie);
        return 0;
}

const char *sockdiag_state_to_string(uint8_t state) {
        static const char *const names[] = {
                [TCP_ESTABLISHED] = "ESTABLISHED",
                [TCP_SYN_SENT] = "SYN_SENT",
                [TCP_SYN_RECV] = "SYN_RECV",
                [TCP_FIN_WAIT1] = "FIN_WAIT1",
                [TCP_FIN_WAIT2] = "FIN_WAIT2",
                [TCP_TIME_WAIT] = "TIME_WAIT",
                [TCP_CLOSE] = "CLOSE",
                [TCP_CLOSE_WAIT] = "CLOSE_WAIT",
                [TCP_LAST_ACK] = "LAST_ACK",
                [TCP_LISTEN] = "LISTEN",
                [TCP_CLOSING] = "CLOSING",
                [12] = "NEW_SYN_RECV",
                [13] = "BOUND_INACTIVE",
        };

        return state < ELEMENTSOF(names) && names[state] ? names[state] : "UNKNOWN";
}

char *sockdiag_tuple_to_string(const struct sockdiag_tuple *t, char *buf, size_t size) {
        char l[INET6_ADDRSTRLEN] = "?", r[INET6_ADDRSTRLEN] = "?";
        bool v6 = t->family == AF_INET6;

        if (t->family == AF_INET || v6) {
                (void)inet_ntop(t->family, t->local.bytes, l, sizeof(l));
                (void)inet_ntop(t->family, t->remote.bytes, r, sizeof(r));
        }
        snprintf(buf, size, "%s%s%s:%u <-> %s%s%s:%u", v6 ? "[" : "", l, v6 ? "]" : "", t->local_port,
                 v6 ? "[" : "", r, v6 ? "]" : "", t->remote_port);
        return buf;
}
