/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * License-server discovery: the datagram format, the announcer, the
 * listener's list, and DNS SRV lookups on a thread. docs/licensing.md,
 * "Discovery", is the contract; this file is one way to keep it.
 *
 * Sockets (IPv4, UDP):
 *   group socket  bound to INADDR_ANY:port, joined to the group. The
 *                 announcer reads queries on it and sends announcements
 *                 from it; the listener reads announcements on it. Only
 *                 datagrams whose IP destination is the group count
 *                 (IP_PKTINFO): unicast to the port is ignored, so a
 *                 forged query from off the segment gets no answer.
 *   query socket  (listener only) an ephemeral port: it sends the queries,
 *                 so the unicast replies come back to it and never to a
 *                 group socket of another process on the same host (with
 *                 SO_REUSEADDR the kernel hands a unicast datagram to one
 *                 of the sockets bound to a port, not to all of them).
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <resolv.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

/* <arpa/nameser.h> brings <sys/param.h>, whose MIN and MAX tsfarm/macro.h
 * defines again (same meaning, other spelling). */
#undef MIN
#undef MAX

#include "tsfarm/cleanup.h"
#include "tsfarm/hex.h"
#include "tsfarm/licdiscovery.h"
#include "tsfarm/list.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

/* Datagrams read per wake-up before other sources get a turn; epoll is
 * level-triggered, so whatever is left wakes us again. */
#define READ_BUDGET 64
/* Receive buffer: larger than any valid datagram, so an oversized one is
 * seen as such (MSG_TRUNC) instead of cut down to something that parses. */
#define RX_BUF 512
/* Answers to queries: 10 a second, bursts of 20 (GCRA). A query is 8
 * bytes and an answer up to 436: without a bound, a spoofed query stream
 * would be amplified onto the segment. */
#define REPLY_SPACING (100 * USEC_PER_MSEC)
#define REPLY_BURST 20
/* Queries from licdisc_restart(): at most one a second. */
#define QUERY_SPACING (1 * USEC_PER_SEC)
/* A DNS answer buffer: the largest a UDP or TCP answer can be. */
#define DNS_ANSWER_MAX 65535

/* ---- byte helpers -------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v) {
        put_be32(p, (uint32_t)(v >> 32));
        put_be32(p + 4, (uint32_t)v);
}

static uint32_t get_be32(const uint8_t *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_be64(const uint8_t *p) {
        return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static uint64_t random_u64(void) {
        uint64_t v;

        /* getrandom() of 8 bytes does not fail once the pool is ready;
         * should it, the clock is random enough for jitter. */
        if (getrandom(&v, sizeof(v), 0) != sizeof(v))
                v = tsf_now_monotonic() * 0x9e3779b97f4a7c15ULL;
        return v;
}

/* ---- validation ---------------------------------------------------------- */

/* ASCII only, never the locale's idea of a letter. */
static bool is_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

static bool name_valid_n(const char *s, size_t n, size_t max) {
        if (n == 0 || n > max)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '-' && s[i] != '_')
                        return false;
        return true;
}

bool licdisc_name_valid(const char *s, size_t max) {
        return s && name_valid_n(s, strnlen(s, max + 1), max);
}

bool licdisc_site_valid(const char *s) {
        return s && (s[0] == '\0' || licdisc_name_valid(s, LICDISC_SITE_MAX));
}

/* A DNS name as RFC 1123 allows it for hosts, plus '_' (seen in the wild):
 * labels of 1..63, no hyphen at either end of a label, at most 253 in
 * all, no trailing dot. An all-digit last label is no top-level domain
 * (RFC 3696), so such a name must be a dotted-quad IPv4 address. */
static bool host_valid_n(const char *s, size_t n) {
        size_t label = 0, last = 0;
        bool digits = true;
        char buf[INET_ADDRSTRLEN];
        struct in_addr a;

        if (n == 0 || n > LICDISC_HOST_MAX)
                return false;
        for (size_t i = 0; i <= n; i++) {
                if (i == n || s[i] == '.') {
                        if (label == 0 || label > 63 || s[i - 1] == '-' || s[i - label] == '-')
                                return false;
                        last = i - label;
                        label = 0;
                        continue;
                }
                if (!is_alnum(s[i]) && s[i] != '-' && s[i] != '_')
                        return false;
                label++;
        }
        for (size_t i = last; i < n; i++)
                digits = digits && is_digit(s[i]);
        if (!digits)
                return true;
        if (n >= sizeof(buf))
                return false;
        memcpy(buf, s, n);
        buf[n] = '\0';
        return inet_pton(AF_INET, buf, &a) == 1;
}

static bool endpoint_valid_n(const char *s, size_t n) {
        const char *colon;
        size_t hn, pn;
        unsigned port = 0;

        if (n < 3 || n > LICDISC_ENDPOINT_MAX || memchr(s, '\0', n))
                return false;
        colon = memrchr(s, ':', n);
        if (!colon)
                return false;
        hn = (size_t)(colon - s);
        pn = n - hn - 1;
        if (pn == 0 || pn > 5 || s[hn + 1] == '0')
                return false;
        for (size_t i = hn + 1; i < n; i++) {
                if (!is_digit(s[i]))
                        return false;
                port = port * 10 + (unsigned)(s[i] - '0');
        }
        if (port == 0 || port > 65535)
                return false;

        if (hn > 0 && s[0] == '[') {
                char buf[INET6_ADDRSTRLEN];
                struct in6_addr a6;

                /* "[" address "]": inet_pton refuses zone ids and anything
                 * that is not one address. */
                if (hn < 4 || s[hn - 1] != ']' || hn - 2 >= sizeof(buf))
                        return false;
                memcpy(buf, s + 1, hn - 2);
                buf[hn - 2] = '\0';
                return inet_pton(AF_INET6, buf, &a6) == 1;
        }
        return host_valid_n(s, hn);
}

bool licdisc_endpoint_valid(const char *s) {
        return s && endpoint_valid_n(s, strnlen(s, LICDISC_ENDPOINT_MAX + 1));
}

static bool interval_valid(usec_t u) {
        return u >= LICDISC_INTERVAL_MIN && u <= LICDISC_INTERVAL_MAX && u % USEC_PER_MSEC == 0;
}

/* ---- wire format --------------------------------------------------------- */

/*
 * Every datagram starts with the same 8 bytes; integers are big-endian.
 *
 *    0       4       5       6               8
 *   +-------+-------+-------+---------------+
 *   | "TSLD"|version| type  | flags = 0     |
 *   +-------+-------+-------+---------------+
 *
 * A query (type 2) is the header alone. An announcement (type 1):
 *
 *    8                              16              20
 *   +-------------------------------+---------------+
 *   | sequence number               | interval, ms  |
 *   +-------------------------------+---------------+
 *   20                                              52
 *   +-----------------------------------------------+
 *   | key id (32 bytes)                             |
 *   +-----------------------------------------------+
 *   52
 *   +---+----------+---+----------+---+-------------+
 *   | n | name     | n | site     | n | endpoint    |   and nothing after
 *   +---+----------+---+----------+---+-------------+
 */

_Static_assert(LICDISC_ANNOUNCE_FIXED == 52, "announcement layout");
_Static_assert(LICDISC_ANNOUNCE_MIN == 59, "smallest announcement: name 'x', no site, endpoint 'h:1'");
_Static_assert(LICDISC_ANNOUNCE_MAX == 436 && LICDISC_ANNOUNCE_MAX < RX_BUF, "largest announcement");

static void header_put(uint8_t *p, enum licdisc_msg_type type) {
        memcpy(p, LICDISC_MAGIC, 4);
        p[4] = LICDISC_VERSION;
        p[5] = (uint8_t)type;
        put_be16(p + 6, 0);
}

ssize_t licdisc_query_encode(uint8_t *buf, size_t size) {
        if (!buf)
                return -EINVAL;
        if (size < LICDISC_QUERY_SIZE)
                return -ENOBUFS;
        header_put(buf, LICDISC_MSG_QUERY);
        return LICDISC_QUERY_SIZE;
}

ssize_t licdisc_announcement_encode(const struct licdisc_announcement *a, uint8_t *buf, size_t size) {
        size_t nl, sl, el, n;
        uint8_t *p;

        if (!a || !buf)
                return -EINVAL;
        nl = strnlen(a->name, sizeof(a->name));
        sl = strnlen(a->site, sizeof(a->site));
        el = strnlen(a->endpoint, sizeof(a->endpoint));
        if (!name_valid_n(a->name, nl, LICDISC_NAME_MAX) ||
            (sl > 0 && !name_valid_n(a->site, sl, LICDISC_SITE_MAX)) || !endpoint_valid_n(a->endpoint, el) ||
            !interval_valid(a->interval))
                return -EINVAL;
        n = LICDISC_ANNOUNCE_FIXED + 3 + nl + sl + el;
        if (size < n)
                return -ENOBUFS;

        header_put(buf, LICDISC_MSG_ANNOUNCE);
        put_be64(buf + 8, a->seq);
        put_be32(buf + 16, (uint32_t)(a->interval / USEC_PER_MSEC));
        memcpy(buf + 20, a->key_id, LICDISC_KEY_ID_SIZE);
        p = buf + LICDISC_ANNOUNCE_FIXED;
        *p++ = (uint8_t)nl;
        memcpy(p, a->name, nl);
        p += nl;
        *p++ = (uint8_t)sl;
        memcpy(p, a->site, sl);
        p += sl;
        *p++ = (uint8_t)el;
        memcpy(p, a->endpoint, el);
        return (ssize_t)n;
}

/* One remaining-bytes counter, checked before every read. */
struct cursor {
        const uint8_t *p;
        size_t left;
};

static const uint8_t *take(struct cursor *c, size_t n) {
        const uint8_t *p = c->p;

        if (n > c->left)
                return NULL;
        c->p += n;
        c->left -= n;
        return p;
}

/* A length byte and that many bytes of text, copied NUL-terminated into
 * out[max + 1]. */
static bool take_text(struct cursor *c, size_t max, char *out, size_t *ret_len) {
        const uint8_t *len = take(c, 1), *text;

        if (!len || *len > max || !(text = take(c, *len)))
                return false;
        memcpy(out, text, *len);
        out[*len] = '\0';
        *ret_len = *len;
        return true;
}

static int announcement_decode(const uint8_t *buf, size_t len, struct licdisc_announcement *a) {
        struct cursor c = {buf + LICDISC_HEADER_SIZE, len - LICDISC_HEADER_SIZE};
        const uint8_t *fixed = take(&c, LICDISC_ANNOUNCE_FIXED - LICDISC_HEADER_SIZE);
        size_t nl, sl, el;

        if (len < LICDISC_ANNOUNCE_MIN || len > LICDISC_ANNOUNCE_MAX || !fixed)
                return -EBADMSG;
        a->seq = get_be64(fixed);
        a->interval = (usec_t)get_be32(fixed + 8) * USEC_PER_MSEC;
        memcpy(a->key_id, fixed + 12, LICDISC_KEY_ID_SIZE);
        if (!interval_valid(a->interval))
                return -EBADMSG;
        if (!take_text(&c, LICDISC_NAME_MAX, a->name, &nl) || !name_valid_n(a->name, nl, LICDISC_NAME_MAX))
                return -EBADMSG;
        if (!take_text(&c, LICDISC_SITE_MAX, a->site, &sl) ||
            (sl > 0 && !name_valid_n(a->site, sl, LICDISC_SITE_MAX)))
                return -EBADMSG;
        if (!take_text(&c, LICDISC_ENDPOINT_MAX, a->endpoint, &el) || !endpoint_valid_n(a->endpoint, el))
                return -EBADMSG;
        if (c.left != 0)
                return -EBADMSG;
        return 0;
}

int licdisc_msg_decode(const uint8_t *buf, size_t len, struct licdisc_msg *ret) {
        struct licdisc_msg m = {};
        int r;

        if (!buf || !ret)
                return -EINVAL;
        if (len < LICDISC_HEADER_SIZE || memcmp(buf, LICDISC_MAGIC, 4) != 0)
                return -EBADMSG;
        /* Version 0 never existed: that is noise, not a newer peer. */
        if (buf[4] == 0)
                return -EBADMSG;
        if (buf[4] != LICDISC_VERSION)
                return -EPROTONOSUPPORT;
        if (get_be16(buf + 6) != 0)
                return -EBADMSG;
        switch (buf[5]) {
        case LICDISC_MSG_QUERY:
                if (len != LICDISC_QUERY_SIZE)
                        return -EBADMSG;
                m.type = LICDISC_MSG_QUERY;
                break;
        case LICDISC_MSG_ANNOUNCE:
                m.type = LICDISC_MSG_ANNOUNCE;
                r = announcement_decode(buf, len, &m.announce);
                if (r < 0)
                        return r;
                break;
        default:
                return -EBADMSG;
        }
        *ret = m;
        return 0;
}

/* ---- sockets ------------------------------------------------------------- */

static int net_normalize(const struct licdisc_net *in, struct licdisc_net *out) {
        struct licdisc_net n = in ? *in : (struct licdisc_net){};

        if (n.group.s_addr == htonl(INADDR_ANY))
                (void)inet_pton(AF_INET, LICDISC_GROUP_DEFAULT, &n.group);
        if (!IN_MULTICAST(ntohl(n.group.s_addr)))
                return -EINVAL;
        if (n.port == 0)
                n.port = LICDISC_PORT_DEFAULT;
        if (n.ttl == 0)
                n.ttl = LICDISC_TTL_DEFAULT;
        *out = n;
        return 0;
}

static struct sockaddr_in group_addr(const struct licdisc_net *n) {
        return (struct sockaddr_in){
                .sin_family = AF_INET,
                .sin_port = htons(n->port),
                .sin_addr = n->group,
        };
}

/* TTL, loop (a listener on the announcer's own host must hear it) and the
 * outgoing interface, for any socket that sends to the group. */
static int set_send_options(int fd, const struct licdisc_net *n) {
        int ttl = n->ttl, loop = 1;

        if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof(ttl)) < 0 ||
            setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof(loop)) < 0)
                return negative_errno();
        if (n->ifindex > 0) {
                struct ip_mreqn mr = {.imr_ifindex = (int)n->ifindex};

                if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &mr, sizeof(mr)) < 0)
                        return negative_errno();
        }
        return 0;
}

static int open_group_socket(const struct licdisc_net *n) {
        _cleanup_close_ int fd = -1;
        struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons(n->port)};
        struct ip_mreqn mr = {.imr_multiaddr = n->group, .imr_ifindex = (int)n->ifindex};
        int one = 1, zero = 0, r;

        fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_debug_errno(negative_errno(), "Failed to open a discovery socket: %m");
        /* Several processes on one host may listen (the host role, a
         * licensing role, a probe): all of them get the group's datagrams. */
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)) < 0)
                return log_debug_errno(negative_errno(), "Failed to set discovery socket options: %m");
        /* Linux otherwise delivers every group any socket of the host
         * joined on this port, not just ours. */
        if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_ALL, &zero, sizeof(zero)) < 0)
                log_debug_errno(negative_errno(), "Failed to turn off IP_MULTICAST_ALL, ignoring: %m");
        if (bind(fd, (struct sockaddr *)&any, sizeof(any)) < 0)
                return log_debug_errno(negative_errno(), "Failed to bind the discovery port %u: %m",
                                       n->port);
        if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0)
                return log_debug_errno(negative_errno(), "Failed to join the discovery group: %m");
        r = set_send_options(fd, n);
        if (r < 0)
                return log_debug_errno(r, "Failed to set the discovery socket's multicast options: %m");
        return TAKE_FD(fd);
}

struct datagram {
        uint8_t buf[RX_BUF];
        size_t len;
        bool truncated;
        struct sockaddr_in src;
        bool to_group; /* the IP destination was the group */
};

/* 1 and *d filled, 0 when nothing is queued, or a negative errno. */
static int recv_datagram(int fd, struct in_addr group, struct datagram *d) {
        union {
                struct cmsghdr hdr;
                uint8_t buf[CMSG_SPACE(sizeof(struct in_pktinfo))];
        } control;
        struct iovec iov = {.iov_base = d->buf, .iov_len = sizeof(d->buf)};
        struct msghdr mh = {
                .msg_name = &d->src,
                .msg_namelen = sizeof(d->src),
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = &control,
                .msg_controllen = sizeof(control),
        };
        ssize_t n;

        memset(&d->src, 0, sizeof(d->src));
        n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                return negative_errno();
        }
        d->truncated = (mh.msg_flags & MSG_TRUNC) || (size_t)n > sizeof(d->buf);
        d->len = MIN((size_t)n, sizeof(d->buf));
        d->to_group = false;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
                    c->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
                        struct in_pktinfo pi;

                        memcpy(&pi, CMSG_DATA(c), sizeof(pi));
                        d->to_group = pi.ipi_addr.s_addr == group.s_addr;
                }
        return 1;
}

static const char *addr_str(const struct sockaddr_in *a, char buf[static INET_ADDRSTRLEN + 6]) {
        char ip[INET_ADDRSTRLEN] = "?";

        if (a && a->sin_family == AF_INET)
                inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        snprintf(buf, INET_ADDRSTRLEN + 6, "%s:%u", ip, a ? ntohs(a->sin_port) : 0);
        return buf;
}

/* Counts and logs a datagram the decoder refused. */
static void count_refused(struct licdisc_stats *st, int r, const struct sockaddr_in *src, size_t len) {
        char from[INET_ADDRSTRLEN + 6];

        if (r == -EPROTONOSUPPORT) {
                st->unsupported++;
                log_debug("Discovery: ignoring a datagram of another protocol version from %s.",
                          addr_str(src, from));
        } else {
                st->malformed++;
                log_debug_errno(r, "Discovery: ignoring a malformed datagram (%zu bytes) from %s: %m", len,
                                addr_str(src, from));
        }
}

/* ---- announcer ----------------------------------------------------------- */

struct licdisc_announcer {
        sd_event *event;
        sd_event_source *io;
        sd_event_source *timer;
        int fd;
        struct licdisc_net net;
        struct licdisc_announcement self;
        usec_t reply_tat; /* GCRA: when the reply budget is whole again */
        struct licdisc_stats stats;
};

int licdisc_announcer_new(sd_event *e, const struct licdisc_announcer_config *c,
                          struct licdisc_announcer **ret) {
        struct licdisc_announcer *a;
        struct licdisc_net net;
        uint8_t probe[LICDISC_ANNOUNCE_MAX];
        int r;

        if (!e || !c || !ret || !c->name || !c->endpoint)
                return -EINVAL;
        r = net_normalize(&c->net, &net);
        if (r < 0)
                return r;
        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->fd = -1;
        a->net = net;
        a->self.interval = c->interval ? c->interval : LICDISC_INTERVAL_DEFAULT;
        memcpy(a->self.key_id, c->key_id, LICDISC_KEY_ID_SIZE);
        if (strlen(c->name) > LICDISC_NAME_MAX || (c->site && strlen(c->site) > LICDISC_SITE_MAX) ||
            strlen(c->endpoint) > LICDISC_ENDPOINT_MAX) {
                free(a);
                return -EINVAL;
        }
        strcpy(a->self.name, c->name);
        strcpy(a->self.site, c->site ? c->site : "");
        strcpy(a->self.endpoint, c->endpoint);
        /* The encoder is the validator: what it refuses, nobody could
         * decode. */
        if (licdisc_announcement_encode(&a->self, probe, sizeof(probe)) < 0) {
                free(a);
                return -EINVAL;
        }
        a->event = sd_event_ref(e);
        *ret = a;
        return 0;
}

struct licdisc_announcer *licdisc_announcer_free(struct licdisc_announcer *a) {
        if (!a)
                return NULL;
        sd_event_source_disable_unref(a->io);
        sd_event_source_disable_unref(a->timer);
        safe_close(a->fd);
        sd_event_unref(a->event);
        free(a);
        return NULL;
}

void licdisc_announcer_get_stats(const struct licdisc_announcer *a, struct licdisc_stats *ret) {
        *ret = a->stats;
}

static int announce_to(struct licdisc_announcer *a, const struct sockaddr_in *to) {
        uint8_t buf[LICDISC_ANNOUNCE_MAX];
        char dst[INET_ADDRSTRLEN + 6];
        ssize_t n;

        n = licdisc_announcement_encode(&a->self, buf, sizeof(buf));
        if (n < 0)
                return (int)n;
        /* Every datagram gets its own number, replies included, so a
         * listener can tell a late copy from news. */
        a->self.seq++;
        if (sendto(a->fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)to,
                   sizeof(*to)) < 0) {
                a->stats.send_errors++;
                return log_debug_errno(negative_errno(), "Discovery: failed to announce to %s: %m",
                                       addr_str(to, dst));
        }
        a->stats.sent++;
        return 0;
}

/* interval minus up to 20 %: never later than the interval promised, so
 * listeners can count missed intervals exactly; never in lockstep with
 * other servers started at the same moment. */
static usec_t jittered(usec_t interval) {
        return interval - random_u64() % (interval / 5 + 1);
}

static int on_announce_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct licdisc_announcer *a = userdata;
        struct sockaddr_in to = group_addr(&a->net);
        int r;

        (void)announce_to(a, &to);
        r = sd_event_source_set_time_relative(a->timer, jittered(a->self.interval));
        if (r >= 0)
                r = sd_event_source_set_enabled(a->timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_debug_errno(r, "Discovery: failed to re-arm the announcement timer: %m");
        return 0;
}

static void answer_query(struct licdisc_announcer *a, const struct datagram *d) {
        usec_t now = tsf_now_monotonic(), tat = MAX(a->reply_tat, now);
        char from[INET_ADDRSTRLEN + 6];

        if (!d->to_group || d->src.sin_family != AF_INET || d->src.sin_port == 0) {
                a->stats.ignored++;
                log_debug("Discovery: ignoring a query from %s not sent to the group.",
                          addr_str(&d->src, from));
                return;
        }
        if (tat - now > (REPLY_BURST - 1) * REPLY_SPACING) {
                a->stats.rate_limited++;
                log_debug("Discovery: not answering %s: over the reply budget.", addr_str(&d->src, from));
                return;
        }
        a->reply_tat = tat + REPLY_SPACING;
        a->stats.queries++;
        (void)announce_to(a, &d->src);
}

static int on_announcer_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct licdisc_announcer *a = userdata;
        struct datagram d;
        struct licdisc_msg m;
        int r;

        for (int i = 0; i < READ_BUDGET; i++) {
                r = recv_datagram(fd, a->net.group, &d);
                if (r <= 0) {
                        if (r < 0)
                                log_debug_errno(r, "Discovery: failed to read, ignoring: %m");
                        break;
                }
                a->stats.received++;
                r = d.truncated ? -EBADMSG : licdisc_msg_decode(d.buf, d.len, &m);
                if (r < 0) {
                        count_refused(&a->stats, r, &d.src, d.len);
                        continue;
                }
                if (m.type == LICDISC_MSG_QUERY)
                        answer_query(a, &d);
                else
                        a->stats.ignored++; /* other servers, or our own echo */
        }
        return 0;
}

int licdisc_announcer_start(struct licdisc_announcer *a) {
        struct sockaddr_in to = group_addr(&a->net);
        int r;

        if (a->fd >= 0)
                return -EALREADY;
        r = open_group_socket(&a->net);
        if (r < 0)
                return r;
        a->fd = r;
        /* Numbers carry on across restarts (as long as the wall clock does
         * not go back), so listeners do not take a restarted server's
         * datagrams for stale ones. */
        a->self.seq = tsf_now_realtime();

        r = sd_event_add_io(a->event, &a->io, a->fd, EPOLLIN, on_announcer_io, a);
        if (r < 0)
                goto fail;
        (void)sd_event_source_set_description(a->io, "licdisc-announcer");
        r = sd_event_add_time_relative(a->event, &a->timer, CLOCK_MONOTONIC, jittered(a->self.interval),
                                       USEC_PER_MSEC, on_announce_timer, a);
        if (r < 0)
                goto fail;
        (void)sd_event_source_set_description(a->timer, "licdisc-announce");
        (void)sd_event_source_set_enabled(a->timer, SD_EVENT_ONESHOT);
        /* A failed first announcement is not fatal: the timer tries again,
         * and queries are answered meanwhile. */
        (void)announce_to(a, &to);
        return 0;
fail:
        a->io = sd_event_source_disable_unref(a->io);
        a->timer = sd_event_source_disable_unref(a->timer);
        a->fd = safe_close(a->fd);
        return log_debug_errno(r, "Discovery: failed to start announcing: %m");
}

/* ---- DNS SRV ------------------------------------------------------------- */

static bool dns_name_equal(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);

        /* Absolute or not, "x." and "x" name the same owner here. */
        if (la > 0 && a[la - 1] == '.')
                la--;
        if (lb > 0 && b[lb - 1] == '.')
                lb--;
        return la == lb && strncasecmp(a, b, la) == 0;
}

int licdisc_srv_name(const char *domain, char *buf, size_t size) {
        size_t n;
        int k;

        if (!domain || !buf)
                return -EINVAL;
        n = strlen(domain);
        if (n > 0 && domain[n - 1] == '.')
                n--;
        if (n > 0 && !host_valid_n(domain, n))
                return -EINVAL;
        k = n > 0 ? snprintf(buf, size, "%s.%.*s", LICDISC_SRV_PREFIX, (int)n, domain)
                  : snprintf(buf, size, "%s", LICDISC_SRV_PREFIX);
        if (k < 0 || (size_t)k >= size || (size_t)k > LICDISC_HOST_MAX)
                return -ENAMETOOLONG;
        return 0;
}

int licdisc_srv_parse(const uint8_t *msg, size_t len, struct licdisc_srv **ret, size_t *ret_n) {
        _cleanup_free_ struct licdisc_srv *v = NULL;
        char qname[NS_MAXDNAME];
        size_t n = 0;
        ns_msg h;
        ns_rr rr;
        int an, rcode;

        if (!msg || !ret || !ret_n)
                return -EINVAL;
        if (len > DNS_ANSWER_MAX || ns_initparse(msg, (int)len, &h) < 0)
                return -EBADMSG;
        if (!ns_msg_getflag(h, ns_f_qr))
                return -EBADMSG;
        rcode = ns_msg_getflag(h, ns_f_rcode);
        if (rcode == ns_r_nxdomain)
                return -ENOENT;
        if (rcode != ns_r_noerror)
                return -EAGAIN;
        /* The owner every answer must have is the question's name. */
        if (ns_msg_count(h, ns_s_qd) != 1 || ns_parserr(&h, ns_s_qd, 0, &rr) < 0)
                return -EBADMSG;
        if (ns_rr_type(rr) != ns_t_srv || ns_rr_class(rr) != ns_c_in)
                return -EBADMSG;
        snprintf(qname, sizeof(qname), "%s", ns_rr_name(rr));

        an = ns_msg_count(h, ns_s_an);
        v = calloc((size_t)MIN(MAX(an, 1), LICDISC_SRV_MAX), sizeof(*v));
        if (!v)
                return -ENOMEM;
        for (int i = 0; i < an; i++) {
                char target[NS_MAXDNAME];
                const uint8_t *rd;
                uint16_t port;
                size_t tl;
                int k;

                if (ns_parserr(&h, ns_s_an, i, &rr) < 0)
                        return -EBADMSG;
                if (ns_rr_type(rr) != ns_t_srv || ns_rr_class(rr) != ns_c_in ||
                    !dns_name_equal(ns_rr_name(rr), qname))
                        continue; /* a CNAME, a signature, someone else's record */
                rd = ns_rr_rdata(rr);
                if (ns_rr_rdlen(rr) < 7) {
                        log_debug("Discovery: skipping an SRV record of %u bytes.", ns_rr_rdlen(rr));
                        continue;
                }
                /* RFC 2782 forbids compressing the target, but readers
                 * take what servers send: dn_expand follows pointers. */
                k = dn_expand(ns_msg_base(h), ns_msg_end(h), rd + 6, target, sizeof(target));
                if (k < 0 || 6 + (size_t)k != ns_rr_rdlen(rr)) {
                        log_debug("Discovery: skipping an SRV record whose target does not fit its data.");
                        continue;
                }
                port = get_be16(rd + 4);
                tl = strlen(target);
                if (tl > 0 && target[tl - 1] == '.')
                        target[--tl] = '\0';
                if (tl == 0 || (tl == 1 && target[0] == '.')) {
                        /* "." : decidedly not available, said alone. */
                        if (an == 1)
                                break;
                        continue;
                }
                if (port == 0 || !host_valid_n(target, tl)) {
                        log_debug("Discovery: skipping SRV record %s:%u: not a usable endpoint.", target,
                                  port);
                        continue;
                }
                if (n == LICDISC_SRV_MAX) {
                        log_debug("Discovery: more than %d SRV records, ignoring the rest.",
                                  LICDISC_SRV_MAX);
                        break;
                }
                for (size_t j = 0; j < tl; j++)
                        if (target[j] >= 'A' && target[j] <= 'Z')
                                target[j] = (char)(target[j] - 'A' + 'a');
                v[n] = (struct licdisc_srv){
                        .priority = get_be16(rd),
                        .weight = get_be16(rd + 2),
                        .port = port,
                };
                memcpy(v[n].target, target, tl + 1);
                n++;
        }
        *ret = n > 0 ? TAKE_PTR(v) : NULL;
        *ret_n = n;
        return 0;
}

static uint64_t default_rnd(void *userdata) {
        return random_u64();
}

static int cmp_priority(const void *x, const void *y) {
        const struct licdisc_srv *a = x, *b = y;

        return a->priority < b->priority ? -1 : a->priority > b->priority;
}

/* Uniform in [0, bound] without modulo bias. */
static uint64_t uniform(uint64_t bound, uint64_t (*rnd)(void *), void *userdata) {
        uint64_t span = bound + 1, limit, x;

        if (span == 0)
                return rnd(userdata);
        limit = UINT64_MAX - UINT64_MAX % span;
        do
                x = rnd(userdata);
        while (x >= limit);
        return x % span;
}

void licdisc_srv_order(struct licdisc_srv *v, size_t n, uint64_t (*rnd)(void *userdata), void *userdata) {
        if (!v || n < 2)
                return;
        if (!rnd)
                rnd = default_rnd;
        /* Insertion sort keeps equal priorities in the order given, which
         * the weight-0-first step below relies on being deterministic. */
        for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && cmp_priority(&v[j - 1], &v[j]) > 0; j--) {
                        struct licdisc_srv t = v[j];

                        v[j] = v[j - 1];
                        v[j - 1] = t;
                }
        for (size_t start = 0; start < n;) {
                size_t end = start;

                while (end < n && v[end].priority == v[start].priority)
                        end++;
                /* RFC 2782: put the weight-0 records first, then repeatedly
                 * draw a number in [0, sum of weights] and take the first
                 * record whose running sum reaches it. */
                for (size_t i = start, k = start; i < end; i++)
                        if (v[i].weight == 0) {
                                struct licdisc_srv t = v[i];

                                memmove(&v[k + 1], &v[k], (i - k) * sizeof(*v));
                                v[k++] = t;
                        }
                for (size_t pos = start; pos + 1 < end; pos++) {
                        uint64_t sum = 0, pick, run = 0;
                        size_t chosen = end - 1;
                        bool zero = false;

                        for (size_t i = pos; i < end; i++) {
                                sum += v[i].weight;
                                zero = zero || v[i].weight == 0;
                        }
                        /* The RFC draws in [0, sum]; 0 is the weight-0
                         * records' small chance. With none left it would
                         * be an extra chance for whichever record comes
                         * first, so the draw is in [1, sum] then: exact
                         * proportions. */
                        if (zero)
                                pick = uniform(sum, rnd, userdata);
                        else
                                pick = 1 + uniform(sum - 1, rnd, userdata);
                        for (size_t i = pos; i < end; i++) {
                                run += v[i].weight;
                                if (run >= pick) {
                                        chosen = i;
                                        break;
                                }
                        }
                        if (chosen != pos) {
                                struct licdisc_srv t = v[chosen];

                                memmove(&v[pos + 1], &v[pos], (chosen - pos) * sizeof(*v));
                                v[pos] = t;
                        }
                }
                start = end;
        }
}

static int system_resolve(const char *name, bool search, uint8_t *answer, size_t size, void *userdata) {
        struct __res_state rs;
        int n, r;

        /* A private resolver state: res_query()'s global one is per thread
         * too, but res_ninit re-reads resolv.conf on every lookup, which is
         * what an operator who just fixed it expects. */
        memset(&rs, 0, sizeof(rs));
        if (res_ninit(&rs) < 0)
                return -EIO;
        n = search ? res_nsearch(&rs, name, ns_c_in, ns_t_srv, answer, (int)MIN(size, (size_t)INT32_MAX))
                   : res_nquery(&rs, name, ns_c_in, ns_t_srv, answer, (int)MIN(size, (size_t)INT32_MAX));
        if (n < 0) {
                switch (rs.res_h_errno) {
                case HOST_NOT_FOUND:
                        r = -ENOENT;
                        break;
                case NO_DATA:
                        r = -ENODATA;
                        break;
                case TRY_AGAIN:
                        r = -EAGAIN;
                        break;
                default:
                        r = -EIO;
                }
        } else
                /* A truncated answer reports its full length. */
                r = (int)MIN((size_t)n, size);
        res_nclose(&rs);
        return r;
}

/* Lookup, parse, order: what the thread and licdisc_srv_lookup() do. */
static int srv_lookup_with(const char *name, bool search, licdisc_resolve_fn resolve, void *userdata,
                           struct licdisc_srv **ret, size_t *ret_n) {
        _cleanup_free_ uint8_t *answer = malloc(DNS_ANSWER_MAX);
        int n, r;

        if (!answer)
                return -ENOMEM;
        n = resolve(name, search, answer, DNS_ANSWER_MAX, userdata);
        if (n < 0)
                return n;
        r = licdisc_srv_parse(answer, (size_t)n, ret, ret_n);
        if (r < 0)
                return r;
        licdisc_srv_order(*ret, *ret_n, NULL, NULL);
        return 0;
}

int licdisc_srv_lookup(const char *domain, struct licdisc_srv **ret, size_t *ret_n) {
        char name[LICDISC_HOST_MAX + 1];
        int r;

        if (!ret || !ret_n)
                return -EINVAL;
        r = licdisc_srv_name(domain, name, sizeof(name));
        if (r < 0)
                return r;
        return srv_lookup_with(name, domain[0] == '\0', system_resolve, NULL, ret, ret_n);
}

/* One lookup on its own thread. Shared by the thread and the listener,
 * freed by whichever lets go last, so freeing a listener never waits for
 * a resolver that takes its time (timeouts × attempts × servers). */
struct dns_job {
        atomic_uint refs;
        int efd; /* the thread writes to it when done */
        char name[LICDISC_HOST_MAX + 1];
        bool search;
        licdisc_resolve_fn resolve;
        void *userdata;
        /* Results, published by `done` (release/acquire). */
        atomic_bool done;
        int error;
        struct licdisc_srv *srv;
        size_t n_srv;
};

static void dns_job_unref(struct dns_job *j) {
        if (!j || atomic_fetch_sub(&j->refs, 1) != 1)
                return;
        safe_close(j->efd);
        free(j->srv);
        free(j);
}

static void *dns_thread(void *p) {
        struct dns_job *j = p;
        uint64_t one = 1;

        j->error = srv_lookup_with(j->name, j->search, j->resolve, j->userdata, &j->srv, &j->n_srv);
        atomic_store_explicit(&j->done, true, memory_order_release);
        if (write(j->efd, &one, sizeof(one)) < 0) {
                /* An eventfd counter does not overflow at one write per job. */
        }
        dns_job_unref(j);
        return NULL;
}

/* ---- listener ------------------------------------------------------------ */

struct entry {
        struct entry *prev, *next;
        struct licdisc_server s;
        unsigned config_order;
        bool mark;
};

struct licdisc_listener {
        sd_event *event;
        sd_event_source *group_io;
        sd_event_source *query_io;
        sd_event_source *expiry;
        sd_event_source *query_timer; /* a restart folded into the next second */
        sd_event_source *dns_io;
        int group_fd;
        int query_fd;
        struct licdisc_net net;
        bool multicast;
        bool started;
        char site[LICDISC_SITE_MAX + 1];
        char *domain;
        licdisc_change_fn cb;
        void *userdata;
        licdisc_resolve_fn resolve;
        void *resolve_userdata;

        struct entry *entries;
        size_t n_entries;
        size_t n_learned; /* entries with LICDISC_ORIGIN_MULTICAST */
        unsigned n_static;
        usec_t last_query; /* monotonic; 0 = never */
        struct dns_job *job;
        struct licdisc_stats stats;
};

int licdisc_listener_new(sd_event *e, const struct licdisc_listener_config *c, licdisc_change_fn cb,
                         void *userdata, struct licdisc_listener **ret) {
        _cleanup_(licdisc_listener_freep) struct licdisc_listener *l = NULL;
        char probe[LICDISC_HOST_MAX + 1];
        int r;

        if (!e || !c || !ret)
                return -EINVAL;
        if (c->site && !licdisc_site_valid(c->site))
                return -EINVAL;
        if (c->domain && licdisc_srv_name(c->domain, probe, sizeof(probe)) < 0)
                return -EINVAL;
        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->group_fd = l->query_fd = -1;
        l->event = sd_event_ref(e);
        r = net_normalize(&c->net, &l->net);
        if (r < 0)
                return r;
        l->multicast = !c->no_multicast;
        strcpy(l->site, c->site ? c->site : "");
        if (c->domain && !(l->domain = strdup(c->domain)))
                return -ENOMEM;
        l->cb = cb;
        l->userdata = userdata;
        l->resolve = system_resolve;
        *ret = TAKE_PTR(l);
        return 0;
}

struct licdisc_listener *licdisc_listener_free(struct licdisc_listener *l) {
        if (!l)
                return NULL;
        /* Sources first: their fds are about to be closed. */
        sd_event_source_disable_unref(l->group_io);
        sd_event_source_disable_unref(l->query_io);
        sd_event_source_disable_unref(l->expiry);
        sd_event_source_disable_unref(l->query_timer);
        sd_event_source_disable_unref(l->dns_io);
        dns_job_unref(l->job);
        safe_close(l->group_fd);
        safe_close(l->query_fd);
        while (l->entries) {
                struct entry *e = l->entries;

                LIST_REMOVE(l->entries, e);
                free(e);
        }
        sd_event_unref(l->event);
        free(l->domain);
        free(l);
        return NULL;
}

void licdisc_listener_set_resolver(struct licdisc_listener *l, licdisc_resolve_fn fn, void *userdata) {
        l->resolve = fn ? fn : system_resolve;
        l->resolve_userdata = fn ? userdata : NULL;
}

void licdisc_listener_get_stats(const struct licdisc_listener *l, struct licdisc_stats *ret) {
        *ret = l->stats;
}

size_t licdisc_listener_count(const struct licdisc_listener *l) {
        return l->n_entries;
}

static struct entry *find(const struct licdisc_listener *l, const char *endpoint) {
        for (struct entry *e = l->entries; e; e = e->next)
                if (strcasecmp(e->s.endpoint, endpoint) == 0)
                        return e;
        return NULL;
}

static void notify(struct licdisc_listener *l, enum licdisc_change change, const struct entry *e) {
        if (l->cb)
                l->cb(l, change, &e->s, l->userdata);
}

static struct entry *entry_add(struct licdisc_listener *l, const char *endpoint) {
        struct entry *e = calloc(1, sizeof(*e));

        if (!e)
                return NULL;
        snprintf(e->s.endpoint, sizeof(e->s.endpoint), "%s", endpoint);
        LIST_PREPEND(l->entries, e);
        l->n_entries++;
        return e;
}

static void entry_remove(struct licdisc_listener *l, struct entry *e) {
        LIST_REMOVE(l->entries, e);
        l->n_entries--;
        notify(l, LICDISC_REMOVED, e);
        free(e);
}

/* Takes `bits` away from an entry: it goes when nothing else vouches for
 * it (reported with the origins it had, so a reader sees why), else it
 * stays with what it last learnt. */
static void entry_drop_origin(struct licdisc_listener *l, struct entry *e, unsigned bits) {
        if (!(e->s.origins & bits))
                return;
        if (bits & e->s.origins & LICDISC_ORIGIN_MULTICAST)
                l->n_learned--;
        if ((e->s.origins & ~bits) == 0) {
                entry_remove(l, e);
                return;
        }
        e->s.origins &= ~bits;
        notify(l, LICDISC_UPDATED, e);
}

static usec_t entry_deadline(const struct entry *e) {
        return e->s.last_seen + LICDISC_MISSED_INTERVALS * e->s.interval;
}

static int on_expiry(sd_event_source *s, uint64_t usec, void *userdata) {
        licdisc_listener_expire(userdata);
        return 0;
}

/* Arms the one timer at the earliest lapse, computed on tsf_now()'s
 * timeline (a fake clock in tests), waited for on the loop's. */
static void arm_expiry(struct licdisc_listener *l) {
        usec_t next = USEC_INFINITY, now;
        int r;

        for (struct entry *e = l->entries; e; e = e->next)
                if (e->s.origins & LICDISC_ORIGIN_MULTICAST)
                        next = MIN(next, entry_deadline(e));
        if (next == USEC_INFINITY) {
                if (l->expiry)
                        (void)sd_event_source_set_enabled(l->expiry, SD_EVENT_OFF);
                return;
        }
        now = tsf_now_monotonic();
        next = next > now ? next - now : 0;
        if (l->expiry) {
                r = sd_event_source_set_time_relative(l->expiry, next);
                if (r >= 0)
                        r = sd_event_source_set_enabled(l->expiry, SD_EVENT_ONESHOT);
        } else {
                r = sd_event_add_time_relative(l->event, &l->expiry, CLOCK_MONOTONIC, next, USEC_PER_MSEC,
                                               on_expiry, l);
                if (r >= 0)
                        (void)sd_event_source_set_description(l->expiry, "licdisc-expiry");
        }
        if (r < 0)
                log_debug_errno(r, "Discovery: failed to arm the expiry timer, entries lapse late: %m");
}

void licdisc_listener_expire(struct licdisc_listener *l) {
        usec_t now = tsf_now_monotonic();
        struct entry *next;

        for (struct entry *e = l->entries; e; e = next) {
                next = e->next;
                if ((e->s.origins & LICDISC_ORIGIN_MULTICAST) && now >= entry_deadline(e)) {
                        log_debug("Discovery: license server %s (%s) lapsed: no announcement for %d "
                                  "intervals.",
                                  e->s.name, e->s.endpoint, LICDISC_MISSED_INTERVALS);
                        entry_drop_origin(l, e, LICDISC_ORIGIN_MULTICAST);
                }
        }
        arm_expiry(l);
}

static void learn(struct licdisc_listener *l, const struct licdisc_announcement *a,
                  const struct sockaddr_in *src) {
        char key[sizeof(((struct licdisc_server *)NULL)->key_id)];
        struct entry *e = find(l, a->endpoint);
        bool added = false, changed;

        tsf_hex_encode(a->key_id, sizeof(a->key_id), key);
        if (!e) {
                if (l->n_learned >= LICDISC_LEARNED_MAX) {
                        l->stats.overflow++;
                        log_debug("Discovery: %d servers known already, ignoring %s.", LICDISC_LEARNED_MAX,
                                  a->endpoint);
                        return;
                }
                e = entry_add(l, a->endpoint);
                if (!e) {
                        log_debug("Discovery: out of memory, ignoring %s.", a->endpoint);
                        return;
                }
                added = true;
        } else if ((e->s.origins & LICDISC_ORIGIN_MULTICAST) && a->seq < e->s.seq) {
                /* A copy that took a slower path, or a replay. */
                l->stats.stale++;
                return;
        }

        changed = !(e->s.origins & LICDISC_ORIGIN_MULTICAST) || strcmp(e->s.name, a->name) != 0 ||
                  strcmp(e->s.site, a->site) != 0 || strcmp(e->s.key_id, key) != 0 ||
                  strcmp(e->s.endpoint, a->endpoint) != 0 || e->s.interval != a->interval;
        if (!(e->s.origins & LICDISC_ORIGIN_MULTICAST))
                l->n_learned++;
        e->s.origins |= LICDISC_ORIGIN_MULTICAST;
        /* The server's own word is the freshest about its name, site and
         * key, also for a configured or DNS entry. */
        memcpy(e->s.name, a->name, sizeof(e->s.name));
        memcpy(e->s.site, a->site, sizeof(e->s.site));
        memcpy(e->s.key_id, key, sizeof(e->s.key_id));
        memcpy(e->s.endpoint, a->endpoint, sizeof(e->s.endpoint));
        e->s.seq = a->seq;
        e->s.interval = a->interval;
        e->s.last_seen = tsf_now_monotonic();
        e->s.source = src ? *src : (struct sockaddr_in){};
        if (added) {
                log_debug("Discovery: license server %s (%s, site '%s') appeared.", a->name, a->endpoint,
                          a->site);
                notify(l, LICDISC_ADDED, e);
        } else if (changed)
                notify(l, LICDISC_UPDATED, e);
        arm_expiry(l);
}

int licdisc_listener_feed(struct licdisc_listener *l, const uint8_t *buf, size_t len,
                          const struct sockaddr_in *src) {
        struct licdisc_msg m;
        int r;

        if (!l || (!buf && len > 0))
                return -EINVAL;
        l->stats.received++;
        r = licdisc_msg_decode(buf ? buf : (const uint8_t *)"", len, &m);
        if (r < 0) {
                count_refused(&l->stats, r, src, len);
                return r;
        }
        if (m.type != LICDISC_MSG_ANNOUNCE) {
                l->stats.ignored++; /* other terminal servers asking */
                return 0;
        }
        learn(l, &m.announce, src);
        return 0;
}

int licdisc_listener_add_static(struct licdisc_listener *l, const char *endpoint, const char *name,
                                const char *site, const char *key_id_hex) {
        uint8_t key[LICDISC_KEY_ID_SIZE];
        char key_text[2 * LICDISC_KEY_ID_SIZE + 1] = "";
        struct entry *e;

        if (!l || !licdisc_endpoint_valid(endpoint) ||
            (name && name[0] && !licdisc_name_valid(name, LICDISC_NAME_MAX)) ||
            (site && !licdisc_site_valid(site)))
                return -EINVAL;
        if (key_id_hex && key_id_hex[0]) {
                size_t kl = strlen(key_id_hex);

                /* Exactly 64 digits: the way the id is shown everywhere. */
                if (kl != 2 * LICDISC_KEY_ID_SIZE ||
                    tsf_hex_decode(key_id_hex, kl, key, sizeof(key), NULL) != LICDISC_KEY_ID_SIZE)
                        return -EINVAL;
                tsf_hex_encode(key, sizeof(key), key_text);
        }
        e = find(l, endpoint);
        if (e && (e->s.origins & LICDISC_ORIGIN_CONFIG))
                return -EEXIST;
        if (!e) {
                e = entry_add(l, endpoint);
                if (!e)
                        return -ENOMEM;
                snprintf(e->s.name, sizeof(e->s.name), "%s", name ? name : "");
                snprintf(e->s.site, sizeof(e->s.site), "%s", site ? site : "");
                memcpy(e->s.key_id, key_text, sizeof(key_text));
                e->s.origins = LICDISC_ORIGIN_CONFIG;
                e->config_order = l->n_static++;
                notify(l, LICDISC_ADDED, e);
                return 0;
        }
        e->s.origins |= LICDISC_ORIGIN_CONFIG;
        e->config_order = l->n_static++;
        notify(l, LICDISC_UPDATED, e);
        return 0;
}

/* Replaces the DNS-origin entries with a lookup's records (already in RFC
 * 2782 order). */
static void dns_apply(struct licdisc_listener *l, const struct licdisc_srv *v, size_t n) {
        struct entry *next;

        for (struct entry *e = l->entries; e; e = e->next)
                e->mark = e->s.origins & LICDISC_ORIGIN_DNS;
        for (size_t i = 0; i < n; i++) {
                char endpoint[LICDISC_ENDPOINT_MAX + 2];
                struct entry *e;
                bool changed;

                snprintf(endpoint, sizeof(endpoint), "%s:%u", v[i].target, v[i].port);
                if (!licdisc_endpoint_valid(endpoint))
                        continue; /* a 250-byte target with a port does not fit */
                e = find(l, endpoint);
                if (e && (e->s.origins & LICDISC_ORIGIN_DNS) && !e->mark)
                        continue; /* the same target twice: the first one counts */
                if (!e) {
                        e = entry_add(l, endpoint);
                        if (!e) {
                                log_debug("Discovery: out of memory, ignoring %s.", endpoint);
                                continue;
                        }
                        e->s.origins = LICDISC_ORIGIN_DNS;
                        e->s.priority = v[i].priority;
                        e->s.weight = v[i].weight;
                        e->s.rank = (unsigned)i;
                        notify(l, LICDISC_ADDED, e);
                        continue;
                }
                changed = !(e->s.origins & LICDISC_ORIGIN_DNS) || e->s.priority != v[i].priority ||
                          e->s.weight != v[i].weight;
                e->mark = false;
                e->s.origins |= LICDISC_ORIGIN_DNS;
                e->s.priority = v[i].priority;
                e->s.weight = v[i].weight;
                /* A new draw of the weighted order is not news. */
                e->s.rank = (unsigned)i;
                if (changed)
                        notify(l, LICDISC_UPDATED, e);
        }
        for (struct entry *e = l->entries; e; e = next) {
                next = e->next;
                if (e->mark) {
                        e->mark = false;
                        entry_drop_origin(l, e, LICDISC_ORIGIN_DNS);
                }
        }
}

static int on_dns_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct licdisc_listener *l = userdata;
        struct dns_job *j = l->job;
        uint64_t v;

        if (read(fd, &v, sizeof(v)) < 0 && errno == EAGAIN)
                return 0;
        if (!atomic_load_explicit(&j->done, memory_order_acquire))
                return 0;
        /* The job and its eventfd go with the source, before the callback
         * can call licdisc_restart() and start the next one. */
        l->job = NULL;
        l->dns_io = sd_event_source_disable_unref(l->dns_io);

        if (j->error >= 0) {
                log_debug("Discovery: %s has %zu SRV records.", j->name, j->n_srv);
                dns_apply(l, j->srv, j->n_srv);
        } else if (j->error == -ENOENT || j->error == -ENODATA) {
                log_debug("Discovery: %s has no SRV records.", j->name);
                dns_apply(l, NULL, 0);
        } else {
                /* A resolver that timed out says nothing about the servers:
                 * keep what the last lookup found. */
                l->stats.dns_failures++;
                log_debug_errno(j->error, "Discovery: failed to look up %s, keeping %s: %m", j->name,
                                "what was found before");
        }
        dns_job_unref(j);
        return 0;
}

static int dns_start(struct licdisc_listener *l) {
        struct dns_job *j;
        pthread_attr_t attr;
        pthread_t t;
        sigset_t all, old;
        int r;

        if (!l->domain || l->job)
                return 0;
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        atomic_init(&j->refs, 1);
        atomic_init(&j->done, false);
        j->resolve = l->resolve;
        j->userdata = l->resolve_userdata;
        j->search = l->domain[0] == '\0';
        r = licdisc_srv_name(l->domain, j->name, sizeof(j->name));
        if (r >= 0) {
                j->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                r = j->efd < 0 ? negative_errno() : 0;
        } else
                j->efd = -1;
        if (r >= 0)
                r = sd_event_add_io(l->event, &l->dns_io, j->efd, EPOLLIN, on_dns_done, l);
        if (r < 0) {
                dns_job_unref(j);
                return r;
        }
        (void)sd_event_source_set_description(l->dns_io, "licdisc-dns");

        /* The thread takes no signals: under sd-event they are blocked and
         * read from a signalfd, and a thread with them unblocked would
         * steal them. */
        r = pthread_attr_init(&attr);
        if (r != 0)
                goto fail;
        (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        sigfillset(&all);
        (void)pthread_sigmask(SIG_SETMASK, &all, &old);
        atomic_fetch_add(&j->refs, 1);
        r = pthread_create(&t, &attr, dns_thread, j);
        (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
        if (r != 0) {
                atomic_fetch_sub(&j->refs, 1);
                goto fail;
        }
        l->job = j;
        l->stats.dns_lookups++;
        return 0;
fail:
        l->dns_io = sd_event_source_disable_unref(l->dns_io);
        dns_job_unref(j);
        return -r;
}

static int send_query(struct licdisc_listener *l) {
        struct sockaddr_in to = group_addr(&l->net);
        uint8_t buf[LICDISC_QUERY_SIZE];
        ssize_t n = licdisc_query_encode(buf, sizeof(buf));

        if (n < 0)
                return (int)n;
        l->last_query = tsf_now_monotonic();
        if (sendto(l->query_fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL, (const struct sockaddr *)&to,
                   sizeof(to)) < 0) {
                l->stats.send_errors++;
                return log_debug_errno(negative_errno(), "Discovery: failed to send a query: %m");
        }
        l->stats.sent++;
        l->stats.queries++;
        return 0;
}

static int on_query_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        (void)send_query(userdata);
        return 0;
}

static void on_datagrams(struct licdisc_listener *l, int fd, bool group) {
        struct datagram d;
        int r;

        for (int i = 0; i < READ_BUDGET; i++) {
                r = recv_datagram(fd, l->net.group, &d);
                if (r <= 0) {
                        if (r < 0)
                                log_debug_errno(r, "Discovery: failed to read, ignoring: %m");
                        return;
                }
                if (group && !d.to_group) {
                        char from[INET_ADDRSTRLEN + 6];

                        l->stats.received++;
                        l->stats.ignored++;
                        log_debug("Discovery: ignoring a datagram from %s not sent to the group.",
                                  addr_str(&d.src, from));
                        continue;
                }
                if (d.truncated) {
                        l->stats.received++;
                        count_refused(&l->stats, -EBADMSG, &d.src, d.len);
                        continue;
                }
                (void)licdisc_listener_feed(l, d.buf, d.len, &d.src);
        }
}

static int on_group_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        on_datagrams(userdata, fd, true);
        return 0;
}

static int on_query_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        on_datagrams(userdata, fd, false);
        return 0;
}

static int open_sockets(struct licdisc_listener *l) {
        _cleanup_close_ int group = -1, query = -1;
        int r;

        group = open_group_socket(&l->net);
        if (group < 0)
                return group;
        query = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (query < 0)
                return log_debug_errno(negative_errno(), "Failed to open a discovery query socket: %m");
        r = set_send_options(query, &l->net);
        if (r < 0)
                return log_debug_errno(r, "Failed to set the query socket's multicast options: %m");
        r = sd_event_add_io(l->event, &l->group_io, group, EPOLLIN, on_group_io, l);
        if (r >= 0)
                r = sd_event_add_io(l->event, &l->query_io, query, EPOLLIN, on_query_io, l);
        if (r < 0) {
                l->group_io = sd_event_source_disable_unref(l->group_io);
                return r;
        }
        (void)sd_event_source_set_description(l->group_io, "licdisc-group");
        (void)sd_event_source_set_description(l->query_io, "licdisc-replies");
        l->group_fd = TAKE_FD(group);
        l->query_fd = TAKE_FD(query);
        return 0;
}

int licdisc_listener_start(struct licdisc_listener *l) {
        int r;

        if (!l)
                return -EINVAL;
        if (l->started)
                return -EALREADY;
        if (l->multicast) {
                r = open_sockets(l);
                if (r < 0)
                        return r;
                /* A lost first query costs one interval at most: the
                 * periodic announcements still come. */
                (void)send_query(l);
        }
        r = dns_start(l);
        if (r < 0)
                log_debug_errno(r, "Discovery: failed to start the DNS lookup, ignoring: %m");
        l->started = true;
        return 0;
}

int licdisc_restart(struct licdisc_listener *l) {
        usec_t now;
        int r;

        if (!l)
                return -EINVAL;
        if (!l->started)
                return -ENOTCONN;
        r = dns_start(l);
        if (r < 0) {
                l->stats.dns_failures++;
                log_debug_errno(r, "Discovery: failed to start the DNS lookup, ignoring: %m");
        }
        if (!l->multicast)
                return 0;
        now = tsf_now_monotonic();
        if (l->last_query == 0 || now >= l->last_query + QUERY_SPACING)
                return send_query(l);
        /* Asked again within the second: one query at its end answers all. */
        if (l->query_timer && sd_event_source_get_enabled(l->query_timer, NULL) > 0)
                return 0;
        if (l->query_timer) {
                r = sd_event_source_set_time_relative(l->query_timer, l->last_query + QUERY_SPACING - now);
                if (r >= 0)
                        r = sd_event_source_set_enabled(l->query_timer, SD_EVENT_ONESHOT);
        } else
                r = sd_event_add_time_relative(l->event, &l->query_timer, CLOCK_MONOTONIC,
                                               l->last_query + QUERY_SPACING - now, USEC_PER_MSEC,
                                               on_query_timer, l);
        return r < 0 ? log_debug_errno(r, "Discovery: failed to arm the query timer: %m") : 0;
}

/* ---- the ordered view ---------------------------------------------------- */

struct order_entry {
        struct licdisc_server s;
        unsigned config_order;
};

/* 0: heard by multicast, 1: configured, 2: DNS only. */
static int class_of(const struct licdisc_server *s) {
        if (s->origins & LICDISC_ORIGIN_MULTICAST)
                return 0;
        if (s->origins & LICDISC_ORIGIN_CONFIG)
                return 1;
        return 2;
}

static int cmp_order(const void *x, const void *y, void *userdata) {
        const struct order_entry *a = x, *b = y;
        const char *site = userdata;
        bool as = site[0] && strcasecmp(a->s.site, site) == 0,
             bs = site[0] && strcasecmp(b->s.site, site) == 0;
        int ac = class_of(&a->s), bc = class_of(&b->s), r;

        if (as != bs)
                return as ? -1 : 1;
        if (ac != bc)
                return ac < bc ? -1 : 1;
        if (ac == 0 && a->s.last_seen != b->s.last_seen)
                return a->s.last_seen > b->s.last_seen ? -1 : 1;
        if (ac == 1 && a->config_order != b->config_order)
                return a->config_order < b->config_order ? -1 : 1;
        if (ac == 2 && a->s.rank != b->s.rank)
                return a->s.rank < b->s.rank ? -1 : 1;
        r = strcmp(a->s.name, b->s.name);
        return r ? r : strcasecmp(a->s.endpoint, b->s.endpoint);
}

int licdisc_listener_list(const struct licdisc_listener *l, struct licdisc_server **ret, size_t *ret_n) {
        _cleanup_free_ struct order_entry *v = NULL;
        struct licdisc_server *out;
        size_t n = 0;

        if (!l || !ret || !ret_n)
                return -EINVAL;
        v = calloc(MAX(l->n_entries, 1), sizeof(*v));
        out = calloc(MAX(l->n_entries, 1), sizeof(*out));
        if (!v || !out) {
                free(out);
                return -ENOMEM;
        }
        for (const struct entry *e = l->entries; e; e = e->next) {
                v[n].s = e->s;
                v[n].config_order = e->config_order;
                n++;
        }
        qsort_r(v, n, sizeof(*v), cmp_order, (void *)l->site);
        for (size_t i = 0; i < n; i++)
                out[i] = v[i].s;
        *ret = out;
        *ret_n = n;
        return 0;
}
