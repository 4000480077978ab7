/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * License-server discovery (docs/licensing.md, "Discovery", is the
 * contract). Three sources feed one list on a terminal server:
 *
 *   multicast  license servers announce themselves on a group of the local
 *              network (the workgroup case): an announcer on each server,
 *              a listener on each terminal server that also asks "who is
 *              there?" at start and on licdisc_restart();
 *   DNS SRV    `_tslicensing._tcp.<domain>` (the domain case), looked up
 *              on a thread so the loop never blocks on a resolver;
 *   config     servers the operator named; they never lapse.
 *
 * The wire format is a fixed binary layout, version 1: an announcement is
 * at most LICDISC_ANNOUNCE_MAX bytes, a query exactly LICDISC_QUERY_SIZE.
 *
 * Discovery is not authentication: anyone on the segment can announce. It
 * only says where to knock; the role-to-role API's TLS (farm CA) says who
 * answered, and tokens are verified against the farm's trusted keys.
 *
 * Library code: logs at debug level only; functions return negative errno.
 */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <systemd/sd-event.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"

/* ---- defaults ------------------------------------------------------------ */

/* Administratively scoped (RFC 2365, 239.255/16 is the local scope): routers
 * at the organisation's edge do not forward it, and TTL 1 keeps it on the
 * segment anyway. */
#define LICDISC_GROUP_DEFAULT "239.255.77.77"
#define LICDISC_PORT_DEFAULT 7402
#define LICDISC_TTL_DEFAULT 1
#define LICDISC_INTERVAL_DEFAULT (30 * USEC_PER_SEC)
/* Announced intervals outside this range are malformed. */
#define LICDISC_INTERVAL_MIN (100 * USEC_PER_MSEC)
#define LICDISC_INTERVAL_MAX (24 * USEC_PER_HOUR)
/* An entry learnt by multicast lapses after this many announced intervals
 * without an announcement. */
#define LICDISC_MISSED_INTERVALS 3
/* Servers learnt by multicast kept at most (config and DNS are bounded by
 * their sources): a flood of forged announcements cannot eat memory. */
#define LICDISC_LEARNED_MAX 128
/* SRV records taken from one answer at most. */
#define LICDISC_SRV_MAX 64

/* ---- wire format --------------------------------------------------------- */

#define LICDISC_VERSION 1
#define LICDISC_MAGIC "TSLD"
#define LICDISC_HEADER_SIZE 8
#define LICDISC_KEY_ID_SIZE 32 /* SHA-256 of the server's raw Ed25519 public key */
/* Text limits in bytes, without the NUL. */
#define LICDISC_NAME_MAX 63
#define LICDISC_SITE_MAX 63
#define LICDISC_ENDPOINT_MAX 255
#define LICDISC_HOST_MAX 253

#define LICDISC_ANNOUNCE_FIXED (LICDISC_HEADER_SIZE + 8 + 4 + LICDISC_KEY_ID_SIZE) /* 52 */
#define LICDISC_ANNOUNCE_MIN (LICDISC_ANNOUNCE_FIXED + 1 + 1 + 1 + 1 + 3)          /* 59 */
#define LICDISC_ANNOUNCE_MAX                                                        \
        (LICDISC_ANNOUNCE_FIXED + 1 + LICDISC_NAME_MAX + 1 + LICDISC_SITE_MAX + 1 + \
         LICDISC_ENDPOINT_MAX) /* 436 */
#define LICDISC_QUERY_SIZE LICDISC_HEADER_SIZE

enum licdisc_msg_type {
        LICDISC_MSG_ANNOUNCE = 1,
        LICDISC_MSG_QUERY = 2,
};

/* What a license server says about itself. */
struct licdisc_announcement {
        uint64_t seq;    /* grows by one per datagram sent */
        usec_t interval; /* the announcer's period, whole milliseconds */
        uint8_t key_id[LICDISC_KEY_ID_SIZE];
        char name[LICDISC_NAME_MAX + 1];         /* 1..63 of [A-Za-z0-9._-] */
        char site[LICDISC_SITE_MAX + 1];         /* 0..63 of the same; "" = none */
        char endpoint[LICDISC_ENDPOINT_MAX + 1]; /* host:port of its HTTPS API */
};

struct licdisc_msg {
        enum licdisc_msg_type type;
        struct licdisc_announcement announce; /* type == LICDISC_MSG_ANNOUNCE */
};

/* Encoders: return the datagram's length, -EINVAL for a field the format
 * cannot carry (a decoder would refuse it), -ENOBUFS when `size` is short. */
ssize_t licdisc_announcement_encode(const struct licdisc_announcement *a, uint8_t *buf, size_t size);
ssize_t licdisc_query_encode(uint8_t *buf, size_t size);

/* Decodes one datagram, strictly: 0 and *ret filled; -EPROTONOSUPPORT for a
 * datagram of ours from another protocol version (magic right, version
 * not 1); -EBADMSG for anything else that is not exactly one well-formed
 * version-1 message (wrong magic, flags set, unknown type, bad lengths,
 * bytes left over, forbidden characters, bad endpoint, interval out of
 * range). A decoded message encodes back to the very same bytes. */
int licdisc_msg_decode(const uint8_t *buf, size_t len, struct licdisc_msg *ret);

/* Validators the decoder uses, for callers that take these from config. */
bool licdisc_name_valid(const char *s, size_t max); /* 1..max of [A-Za-z0-9._-] */
bool licdisc_site_valid(const char *s);             /* "" or a name of at most 63 */
/* host:port, host a DNS name or dotted IPv4 (labels of [A-Za-z0-9_-], 1..63
 * each, at most 253 in all, no trailing dot) or [IPv6]; port 1..65535 in
 * decimal without leading zeros; at most LICDISC_ENDPOINT_MAX bytes. */
bool licdisc_endpoint_valid(const char *s);

/* ---- network settings, shared by both sides ------------------------------ */

struct licdisc_net {
        struct in_addr group; /* network order; INADDR_ANY = the default group */
        uint16_t port;        /* 0 = LICDISC_PORT_DEFAULT */
        uint8_t ttl;          /* 0 = LICDISC_TTL_DEFAULT */
        /* Interface to join and send on (IP_MULTICAST_IF); 0 leaves it to
         * the kernel's route for the group, which needs a default route. */
        unsigned ifindex;
};

/* Counters an operator reads to tell a quiet network from a noisy one. */
struct licdisc_stats {
        uint64_t sent;         /* announcements, replies or queries sent */
        uint64_t send_errors;  /* sendto() failures */
        uint64_t received;     /* datagrams read */
        uint64_t malformed;    /* refused by licdisc_msg_decode() */
        uint64_t unsupported;  /* another protocol version */
        uint64_t ignored;      /* well-formed, not for us (see the docs) */
        uint64_t stale;        /* announcements older than one already seen */
        uint64_t rate_limited; /* queries left unanswered: over the budget */
        uint64_t overflow;     /* new servers refused: LICDISC_LEARNED_MAX */
        uint64_t queries;      /* queries sent (listener) or answered (announcer) */
        uint64_t dns_lookups;
        uint64_t dns_failures;
};

/* ---- announcer (license server side) ------------------------------------- */

struct licdisc_announcer_config {
        struct licdisc_net net;
        usec_t interval; /* 0 = LICDISC_INTERVAL_DEFAULT; whole milliseconds */
        const char *name;
        const char *site; /* NULL or "" = none */
        const char *endpoint;
        uint8_t key_id[LICDISC_KEY_ID_SIZE];
};

struct licdisc_announcer;

/* Validates and copies the configuration (-EINVAL); no I/O yet. */
int licdisc_announcer_new(sd_event *e, const struct licdisc_announcer_config *c,
                          struct licdisc_announcer **ret);
/* Opens the socket, joins the group, announces once, arms the timer:
 * announcements every interval minus up to 20 % jitter (never longer, so
 * "3 missed intervals" on the listener is exact), answers to queries at
 * once. */
int licdisc_announcer_start(struct licdisc_announcer *a);
struct licdisc_announcer *licdisc_announcer_free(struct licdisc_announcer *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct licdisc_announcer *, licdisc_announcer_free);
void licdisc_announcer_get_stats(const struct licdisc_announcer *a, struct licdisc_stats *ret);

/* ---- listener (terminal server side) ------------------------------------- */

enum licdisc_origin {
        LICDISC_ORIGIN_MULTICAST = 1 << 0,
        LICDISC_ORIGIN_DNS = 1 << 1,
        LICDISC_ORIGIN_CONFIG = 1 << 2,
};

/* One server as the listener knows it. Entries are keyed by endpoint
 * (case-insensitive): a configured server that also announces itself is
 * one entry with two origins. */
struct licdisc_server {
        char name[LICDISC_NAME_MAX + 1]; /* "" when unknown (DNS, config) */
        char site[LICDISC_SITE_MAX + 1]; /* "" when unknown */
        char endpoint[LICDISC_ENDPOINT_MAX + 1];
        char key_id[2 * LICDISC_KEY_ID_SIZE + 1]; /* lowercase hex, "" when unknown */
        unsigned origins;                         /* enum licdisc_origin bits */
        /* Multicast: the last announcement's sender, time (tsf_now() on
         * CLOCK_MONOTONIC), sequence number and interval. last_seen is 0
         * for a server never heard from. */
        struct sockaddr_in source;
        usec_t last_seen;
        uint64_t seq;
        usec_t interval;
        /* DNS: the record's priority and weight; rank is the position in
         * RFC 2782 order of the last lookup (config: position in config). */
        uint16_t priority;
        uint16_t weight;
        unsigned rank;
};

enum licdisc_change {
        LICDISC_ADDED,
        LICDISC_UPDATED, /* a field or an origin changed; not a mere refresh */
        LICDISC_REMOVED, /* with the origins it had when it went */
};

struct licdisc_listener;

/* `s` is valid during the call only. The callback may read the list and
 * call licdisc_restart(), not free the listener. */
typedef void (*licdisc_change_fn)(struct licdisc_listener *l, enum licdisc_change change,
                                  const struct licdisc_server *s, void *userdata);

struct licdisc_listener_config {
        struct licdisc_net net;
        bool no_multicast; /* DNS and config only: no sockets */
        const char *site;  /* this host's site; its servers come first */
        /* NULL: no DNS. "": the resolver's search list (resolv.conf
         * `search`/`domain`) for `_tslicensing._tcp`. Else the domain. */
        const char *domain;
};

int licdisc_listener_new(sd_event *e, const struct licdisc_listener_config *c, licdisc_change_fn cb,
                         void *userdata, struct licdisc_listener **ret);
/* An operator-named server; never lapses. name, site and key_id_hex may be
 * NULL. -EINVAL for invalid fields, -EEXIST for an endpoint named twice. */
int licdisc_listener_add_static(struct licdisc_listener *l, const char *endpoint, const char *name,
                                const char *site, const char *key_id_hex);
/* Opens the sockets and joins the group (unless no_multicast), sends a
 * query, starts the DNS lookup (when a domain is set). When the sockets
 * fail nothing is started: the caller may go on with no_multicast. */
int licdisc_listener_start(struct licdisc_listener *l);
/* "None of the servers I know answered": asks the group again (at most one
 * query a second; more calls within that second are folded into it) and
 * repeats the DNS lookup unless one is under way. */
int licdisc_restart(struct licdisc_listener *l);
struct licdisc_listener *licdisc_listener_free(struct licdisc_listener *l);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct licdisc_listener *, licdisc_listener_free);

/* The ordered view, a copy the caller frees: servers of this host's site
 * first, then the others; within each, servers heard from by multicast,
 * most recently heard first; then configured servers in config order; then
 * DNS servers in RFC 2782 order; name and endpoint break ties. */
int licdisc_listener_list(const struct licdisc_listener *l, struct licdisc_server **ret, size_t *ret_n);
size_t licdisc_listener_count(const struct licdisc_listener *l);
void licdisc_listener_get_stats(const struct licdisc_listener *l, struct licdisc_stats *ret);

/* Handles one datagram from `src` (may be NULL) as if it had arrived on the
 * group or as a reply: the receive path without sockets, for tests and the
 * fuzz target. Returns what licdisc_msg_decode() said. */
int licdisc_listener_feed(struct licdisc_listener *l, const uint8_t *buf, size_t len,
                          const struct sockaddr_in *src);
/* Lapses entries whose time is up by tsf_now(); the listener's timer calls
 * it, tests with a fake clock call it directly. */
void licdisc_listener_expire(struct licdisc_listener *l);

/* Replaces the resolver (tests): called on the lookup thread with the
 * query name and whether to use the search list; returns the answer's
 * length, or a negative errno: -ENOENT/-ENODATA mean "authoritatively
 * none" (the DNS entries go), anything else keeps the previous ones. */
typedef int (*licdisc_resolve_fn)(const char *name, bool search, uint8_t *answer, size_t size,
                                  void *userdata);
void licdisc_listener_set_resolver(struct licdisc_listener *l, licdisc_resolve_fn fn, void *userdata);

/* ---- DNS SRV ------------------------------------------------------------- */

#define LICDISC_SRV_PREFIX "_tslicensing._tcp"

struct licdisc_srv {
        uint16_t priority;
        uint16_t weight;
        uint16_t port;
        char target[LICDISC_HOST_MAX + 1]; /* lowercase, no trailing dot */
};

/* Parses a DNS response to an SRV question (ns_initparse/ns_parserr): the
 * answer records of type SRV, class IN, owned by the question's name, in
 * the order given. Records with a target the endpoint syntax refuses, or
 * port 0, are skipped; a lone "." target (RFC 2782: "decidedly not
 * available") yields none. Returns 0 (maybe with *ret_n == 0), -ENOENT for
 * NXDOMAIN, -EAGAIN for another error code, -EBADMSG for a malformed
 * message. *ret is NULL when *ret_n is 0. */
int licdisc_srv_parse(const uint8_t *msg, size_t len, struct licdisc_srv **ret, size_t *ret_n);
/* Orders records as RFC 2782 says: by priority, and within one priority by
 * weighted random selection (weight-0 records first in the running sum, so
 * they are rarely but possibly chosen first). One departure: when no
 * weight-0 record is left the draw is in [1, sum], not [0, sum], which
 * would give the first record an extra chance. `rnd` returns uniformly
 * random 64-bit numbers (NULL: getrandom()). */
void licdisc_srv_order(struct licdisc_srv *v, size_t n, uint64_t (*rnd)(void *userdata), void *userdata);
/* Builds the query name for `domain` ("" = the bare prefix, for the search
 * list): -EINVAL for a malformed domain, -ENAMETOOLONG. */
int licdisc_srv_name(const char *domain, char *buf, size_t size);
/* Blocking lookup (res_nquery, or res_nsearch for domain ""), parsed and
 * ordered. For tools and the listener's thread; never on an event loop. */
int licdisc_srv_lookup(const char *domain, struct licdisc_srv **ret, size_t *ret_n);
