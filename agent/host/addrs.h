/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * This node's own addresses, learned from rtnetlink and followed as they
 * change. Steering and the gateway ask "is this address me?" (a routing
 * token naming this node, a peer forwarding to us); the answer must follow
 * DHCP renewals, VIPs moving between nodes and interfaces going away.
 *
 * host_addrs_new() dumps the addresses of the calling thread's network
 * namespace synchronously, so the snapshot is complete when it returns, and
 * then follows RTM_NEWADDR/RTM_DELADDR on the given sd-event loop. If the
 * kernel drops notifications (the socket's receive buffer overran) the set
 * is re-read in full, so it never stays stale.
 *
 * What counts: every address configured on an interface (IFA_LOCAL, or
 * IFA_ADDRESS where there is no separate local address), whatever its scope,
 * flags (IPv6 tentative/deprecated included) or interface state. This is
 * the set `ip addr` shows, not the set the kernel routes locally: 127.0.0.2
 * is not "local" here although 127.0.0.0/8 is routed to lo.
 */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "tsfarm/cleanup.h"

struct host_addrs;

/* Called from the event loop after a batch of notifications changed the set
 * of addresses (a notification that leaves the set as it was, such as an
 * IPv6 lifetime refresh, does not call it). Not called for the initial
 * dump. The callback may read the snapshot but must not free `a`. */
typedef void (*host_addrs_changed_fn)(struct host_addrs *a, void *userdata);

/* Returns 0, or negative errno: -ENOMEM, or what socket(), bind() or the
 * dump failed with (libnl reports unknown errors as -EIO). Logs at debug
 * level only. `cb` may be NULL. */
int host_addrs_new(sd_event *e, host_addrs_changed_fn cb, void *userdata, struct host_addrs **ret);
struct host_addrs *host_addrs_free(struct host_addrs *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct host_addrs *, host_addrs_free);

/* `ipv4_be` in network byte order, as in struct in_addr. */
bool host_addrs_is_local_ipv4(const struct host_addrs *a, uint32_t ipv4_be);
bool host_addrs_is_local_ipv6(const struct host_addrs *a, const struct in6_addr *ipv6);

/* Snapshot: copies up to `max` addresses (sorted, without duplicates;
 * IPv4 in network byte order) into `out` and returns how many there are in
 * total, which may exceed `max` (call with max 0 to size a buffer). */
size_t host_addrs_ipv4(const struct host_addrs *a, uint32_t *out, size_t max);
size_t host_addrs_ipv6(const struct host_addrs *a, struct in6_addr *out, size_t max);

/* Sets the notification socket's receive buffer (SO_RCVBUFFORCE when
 * privileged, else SO_RCVBUF capped by net.core.rmem_max). The default is
 * 1 MiB, which holds thousands of address notifications; an overrun is
 * survivable anyway (full re-read). Returns 0 or negative errno. */
int host_addrs_set_receive_buffer(struct host_addrs *a, int bytes);

/* How many times the set was re-read after the kernel dropped
 * notifications. For STATUS= lines and tests. */
uint64_t host_addrs_get_resyncs(const struct host_addrs *a);
