/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The license server's peers; agent/licensing/peers.h says what, and
 * docs/licensing.md ("Borrowing") is the contract.
 *
 * One entry per endpoint (compared without regard to case), configured
 * (never goes), discovered (goes when its announcements lapse), or both.
 * An entry whose inventory names our own signing key is this server (a
 * configured endpoint that points back at us): kept, marked, never asked.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent/licensing/peers.h"
#include "agent/licensing/store.h"
#include "tsfarm/api.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/config.h"
#include "tsfarm/hex.h"
#include "tsfarm/licdiscovery.h"
#include "tsfarm/lictoken.h"
#include "tsfarm/list.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

#define KEY_ID_HEX (2 * TSF_LIC_KEY_ID_SIZE)
#define PEER_ERROR_MAX 256
/* Lend calls whose answer never came, remembered (oldest replaced first). */
#define IN_DOUBT_MAX 256

/* A lend call that timed out or broke after it was sent: the peer may have
 * committed the CAL. The device's next request asks that peer first,
 * whatever its inventory says, and lending being idempotent it gets that
 * CAL: none is stranded at the lender. */
struct in_doubt {
        uint8_t device_hash[TSF_LIC_DEVICE_HASH_SIZE];
        char endpoint[LICDISC_ENDPOINT_MAX + 1]; /* "" = free slot */
};

struct peer {
        struct peer *prev, *next;
        struct lic_peers *owner;
        char endpoint[LICDISC_ENDPOINT_MAX + 1];
        bool configured;
        bool discovered;
        char announced_name[LICDISC_NAME_MAX + 1]; /* "" unless announced */
        char announced_key_id[KEY_ID_HEX + 1];

        /* From its last answered GET /v1/inventory. */
        bool has_inventory;
        char name[TSF_API_NODE_MAX];
        char key_id[KEY_ID_HEX + 1];
        json_t *packs; /* [{id, product_version, count, available}] */
        usec_t inventory_time;

        bool self;      /* its key id is ours */
        bool reachable; /* the last call to it got an answer */
        bool ever_tried;
        char error[PEER_ERROR_MAX]; /* the last failure; "" none */
        struct tsf_api_call *call;  /* inventory in flight */
};

struct lic_borrow {
        struct lic_borrow *prev, *next;
        struct lic_peers *owner;
        json_t *request;
        uint8_t device_hash[TSF_LIC_DEVICE_HASH_SIZE];
        char version[LIC_PRODUCT_VERSION_MAX + 1];
        /* Endpoints to ask, in order; looked up again before each call, so
         * a peer that went meanwhile is skipped. */
        char (*endpoints)[LICDISC_ENDPOINT_MAX + 1];
        size_t n, i;
        struct tsf_api_call *call;
        char asking[LICDISC_ENDPOINT_MAX + 1];
        char why[PEER_ERROR_MAX];
        lic_borrow_done_t done;
        void *userdata;
};

struct lic_peers {
        sd_event *event;
        const struct licensing_config *config;
        char node_name[LICDISC_NAME_MAX + 1];
        uint8_t key_id[TSF_LIC_KEY_ID_SIZE];
        char key_id_hex[KEY_ID_HEX + 1];
        uint16_t port;
        char own_endpoint[LICDISC_ENDPOINT_MAX + 1]; /* announced; "" when not */

        struct licdisc_announcer *announcer;
        struct licdisc_listener *listener;
        struct tsf_api_client *client;
        sd_event_source *refresh_timer;
        struct peer *peers; /* configured first, in config order, then discovered */
        struct lic_borrow *borrows;
        struct in_doubt in_doubt[IN_DOUBT_MAX];
        size_t in_doubt_next;
};

static struct in_doubt *in_doubt_find(struct lic_peers *p, const uint8_t *hash, const char *endpoint) {
        for (size_t i = 0; i < IN_DOUBT_MAX; i++) {
                struct in_doubt *d = &p->in_doubt[i];

                if (d->endpoint[0] && memcmp(d->device_hash, hash, sizeof(d->device_hash)) == 0 &&
                    (!endpoint || strcasecmp(d->endpoint, endpoint) == 0))
                        return d;
        }
        return NULL;
}

static void in_doubt_add(struct lic_peers *p, const uint8_t *hash, const char *endpoint) {
        struct in_doubt *d = in_doubt_find(p, hash, endpoint);

        if (!d) {
                d = &p->in_doubt[p->in_doubt_next];
                p->in_doubt_next = (p->in_doubt_next + 1) % IN_DOUBT_MAX;
        }
        memcpy(d->device_hash, hash, sizeof(d->device_hash));
        snprintf(d->endpoint, sizeof(d->endpoint), "%s", endpoint);
}

static void in_doubt_clear(struct lic_peers *p, const uint8_t *hash, const char *endpoint) {
        struct in_doubt *d = in_doubt_find(p, hash, endpoint);

        if (d)
                d->endpoint[0] = '\0';
}

/* ---- entries ------------------------------------------------------------ */

static struct peer *peer_find(const struct lic_peers *p, const char *endpoint) {
        for (struct peer *e = p->peers; e; e = e->next)
                if (strcasecmp(e->endpoint, endpoint) == 0)
                        return e;
        return NULL;
}

static struct peer *peer_add(struct lic_peers *p, const char *endpoint) {
        struct peer *e = calloc(1, sizeof(*e)), **tail = &p->peers, *last = NULL;

        if (!e)
                return NULL;
        e->owner = p;
        snprintf(e->endpoint, sizeof(e->endpoint), "%s", endpoint);
        while (*tail) {
                last = *tail;
                tail = &(*tail)->next;
        }
        e->prev = last;
        *tail = e;
        return e;
}

static void peer_free(struct lic_peers *p, struct peer *e) {
        LIST_REMOVE(p->peers, e);
        if (e->call)
                tsf_api_call_cancel(e->call);
        json_decref(e->packs);
        free(e);
}

/* The name to show and to call it by: its inventory's, else its
 * announcement's, else its endpoint. */
static const char *peer_label(const struct peer *e) {
        return e->name[0] ? e->name : e->announced_name[0] ? e->announced_name : e->endpoint;
}

static bool peer_has_cal(const struct peer *e, const char *version) {
        size_t i;
        json_t *pk;

        if (e->self || !e->reachable || !e->has_inventory)
                return false;
        json_array_foreach(e->packs, i, pk) {
                const char *v = json_string_value(json_object_get(pk, "product_version"));

                if (json_integer_value(json_object_get(pk, "available")) > 0 &&
                    (!version || !*version || (v && strcmp(v, version) == 0)))
                        return true;
        }
        return false;
}

/* A reachable peer whose last inventory showed nothing may have had a pack
 * installed since (inventories are read every inventory-refresh): it is
 * asked after the peers that showed CALs; a lend refused costs one call. */
static bool peer_askable(const struct peer *e) {
        return !e->self && e->reachable;
}

/* Logs a peer's change of state once: reachable again, or not. */
static void peer_failed(struct peer *e, const char *fmt, ...) _printf_(2, 3);
static void peer_failed(struct peer *e, const char *fmt, ...) {
        bool was = e->reachable || !e->ever_tried;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(e->error, sizeof(e->error), fmt, ap);
        va_end(ap);
        e->reachable = false;
        e->ever_tried = true;
        if (was)
                log_warning("Peer license server %s (%s) is not reachable: %s", peer_label(e), e->endpoint,
                            e->error);
}

/* ---- inventories -------------------------------------------------------- */

static bool hex_valid(const char *s, size_t len) {
        if (!s || strlen(s) != len)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
                      (s[i] >= 'A' && s[i] <= 'F')))
                        return false;
        return true;
}

/* The packs of an inventory answer, checked and copied: only the fields we
 * read, in the forms we expect. NULL when anything is off. */
static json_t *inventory_packs(json_t *packs) {
        _cleanup_(json_decrefp) json_t *out = json_array();
        size_t i;
        json_t *pk;

        if (!out || !json_is_array(packs))
                return NULL;
        json_array_foreach(packs, i, pk) {
                json_t *id = json_object_get(pk, "id"), *v = json_object_get(pk, "product_version"),
                       *count = json_object_get(pk, "count"), *avail = json_object_get(pk, "available");

                if (!json_is_string(id) || !json_is_string(v) || !json_is_integer(count) ||
                    !json_is_integer(avail) || json_integer_value(avail) < 0 ||
                    json_integer_value(avail) > json_integer_value(count))
                        return NULL;
                if (json_array_append_new(out, json_pack("{s:O, s:O, s:O, s:O}", "id", id, "product_version",
                                                         v, "count", count, "available", avail)) < 0)
                        return NULL;
        }
        return TAKE_PTR(out);
}

static void on_inventory_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct peer *e = userdata;
        struct lic_peers *p = e->owner;
        const char *server, *key_id;
        json_t *packs;
        bool was = e->reachable;

        e->call = NULL;
        if (r < 0) {
                peer_failed(e, "%s", error && *error ? error : strerror(-r));
                return;
        }
        if (status != 200) {
                const char *code = json_string_value(json_object_get(reply, "error"));

                peer_failed(e, "GET /v1/inventory answered %ld%s%s", status, code ? " " : "", code ?: "");
                return;
        }
        server = json_string_value(json_object_get(reply, "server"));
        key_id = json_string_value(json_object_get(reply, "key_id"));
        packs = inventory_packs(json_object_get(reply, "packs"));
        if (!server || !licdisc_name_valid(server, LICDISC_NAME_MAX) || !hex_valid(key_id, KEY_ID_HEX) ||
            !packs) {
                json_decref(packs);
                peer_failed(e, "its inventory is not one (server, key_id, packs)");
                return;
        }
        if (strcasecmp(key_id, p->key_id_hex) == 0) {
                if (!e->self)
                        log_info("Peer %s is this license server (same signing key), not asking it.",
                                 e->endpoint);
                e->self = true;
                json_decref(packs);
                return;
        }
        snprintf(e->name, sizeof(e->name), "%s", server);
        snprintf(e->key_id, sizeof(e->key_id), "%s", key_id);
        for (char *c = e->key_id; *c; c++)
                *c = (char)(*c >= 'A' && *c <= 'F' ? *c - 'A' + 'a' : *c);
        json_decref(e->packs);
        e->packs = packs;
        e->has_inventory = true;
        e->inventory_time = tsf_now_realtime();
        e->reachable = true;
        e->error[0] = '\0';
        if (!was) {
                json_int_t avail = 0;
                size_t i;
                json_t *pk;

                json_array_foreach(e->packs, i, pk) avail +=
                        json_integer_value(json_object_get(pk, "available"));
                log_info("Peer license server %s (%s) is reachable: %zu packs, %" JSON_INTEGER_FORMAT
                         " Device CALs available.",
                         e->name, e->endpoint, json_array_size(e->packs), avail);
        }
        e->ever_tried = true;
}

/* Reads one peer's inventory now, unless a read is under way. */
static void peer_refresh(struct peer *e) {
        struct lic_peers *p = e->owner;
        char url[LICDISC_ENDPOINT_MAX + 32];
        int r;

        if (e->call || !p->client)
                return;
        snprintf(url, sizeof(url), "https://%s/v1/inventory", e->endpoint);
        r = tsf_api_client_start(p->client, "GET", url, NULL, p->config->peer_timeout, on_inventory_done, e,
                                 &e->call);
        if (r < 0)
                peer_failed(e, "cannot start a call: %s", strerror(-r));
}

static int on_refresh(sd_event_source *s, uint64_t usec, void *userdata) {
        struct lic_peers *p = userdata;
        int r;

        for (struct peer *e = p->peers; e; e = e->next)
                if (!e->self)
                        peer_refresh(e);
        r = sd_event_source_set_time_relative(s, p->config->inventory_refresh);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        if (r < 0)
                return log_error_errno(r, "Failed to re-arm the peers' inventory timer: %m");
        return 0;
}

/* ---- discovery ---------------------------------------------------------- */

static bool is_ourselves(const struct lic_peers *p, const struct licdisc_server *s) {
        return strcasecmp(s->key_id, p->key_id_hex) == 0 ||
               (p->own_endpoint[0] && strcasecmp(s->endpoint, p->own_endpoint) == 0);
}

static void on_discovery(struct licdisc_listener *l, enum licdisc_change change,
                         const struct licdisc_server *s, void *userdata) {
        struct lic_peers *p = userdata;
        struct peer *e = peer_find(p, s->endpoint);
        bool added = false;

        if (!(s->origins & LICDISC_ORIGIN_MULTICAST) || is_ourselves(p, s))
                return;
        if (change == LICDISC_REMOVED) {
                if (!e)
                        return;
                log_info("Peer license server %s (%s) stopped announcing itself.", peer_label(e),
                         e->endpoint);
                if (!e->configured) {
                        peer_free(p, e);
                        return;
                }
                e->discovered = false;
                e->announced_name[0] = e->announced_key_id[0] = '\0';
                return;
        }
        if (!e) {
                e = peer_add(p, s->endpoint);
                if (!e) {
                        log_oom();
                        return;
                }
                added = true;
        }
        e->discovered = true;
        snprintf(e->announced_name, sizeof(e->announced_name), "%s", s->name);
        snprintf(e->announced_key_id, sizeof(e->announced_key_id), "%s", s->key_id);
        if (added) {
                log_info("Learnt peer license server %s at %s from its announcement.", s->name, s->endpoint);
                peer_refresh(e);
        }
}

/* The first non-loopback IPv4 address of an interface that is up. */
static int first_ipv4(char *buf, size_t size) {
        struct ifaddrs *ifa = NULL;
        int r = -EADDRNOTAVAIL;

        if (getifaddrs(&ifa) < 0)
                return negative_errno();
        for (struct ifaddrs *i = ifa; i; i = i->ifa_next)
                if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && (i->ifa_flags & IFF_UP) &&
                    !(i->ifa_flags & IFF_LOOPBACK) &&
                    inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf, size)) {
                        r = 0;
                        break;
                }
        freeifaddrs(ifa);
        return r;
}

/* announce-endpoint, else the listen address, else the host's first IPv4. */
static int own_endpoint(struct lic_peers *p) {
        const struct licensing_config *c = p->config;
        char addr[INET_ADDRSTRLEN];
        int r;

        if (c->announce_endpoint) {
                snprintf(p->own_endpoint, sizeof(p->own_endpoint), "%s", c->announce_endpoint);
                return 0;
        }
        if (c->service.listen.sin_addr.s_addr != htonl(INADDR_ANY)) {
                inet_ntop(AF_INET, &c->service.listen.sin_addr, addr, sizeof(addr));
        } else {
                r = first_ipv4(addr, sizeof(addr));
                if (r < 0)
                        return r;
                log_info("[licensing] announce-endpoint not set and listening on 0.0.0.0: announcing %s, "
                         "this "
                         "host's first IPv4 address.",
                         addr);
        }
        snprintf(p->own_endpoint, sizeof(p->own_endpoint), "%s:%u", addr, (unsigned)p->port);
        return 0;
}

/* ---- set-up ------------------------------------------------------------- */

int lic_peers_new(const struct lic_peers_setup *setup, struct lic_peers **ret) {
        _cleanup_(lic_peers_freep) struct lic_peers *p = NULL;

        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->event = sd_event_ref(setup->event);
        p->config = setup->config;
        snprintf(p->node_name, sizeof(p->node_name), "%s", setup->node_name);
        memcpy(p->key_id, setup->key_id, sizeof(p->key_id));
        tsf_hex_encode(p->key_id, sizeof(p->key_id), p->key_id_hex);
        p->port = setup->port;
        for (char **ep = p->config->peers; ep && *ep; ep++) {
                struct peer *e = peer_add(p, *ep);

                if (!e)
                        return -ENOMEM;
                e->configured = true;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

static int announcer_start(struct lic_peers *p, const struct licdisc_net *net) {
        struct licdisc_announcer_config ac = {
                .net = *net,
                .interval = p->config->announce_interval,
                .name = p->node_name,
                .site = p->config->site,
                .endpoint = p->own_endpoint,
        };
        int r;

        r = own_endpoint(p);
        if (r < 0) {
                log_warning_errno(r, "No address to announce this license server at (set [licensing] "
                                     "announce-endpoint), not announcing: %m");
                return 0;
        }
        memcpy(ac.key_id, p->key_id, sizeof(ac.key_id));
        r = licdisc_announcer_new(p->event, &ac, &p->announcer);
        if (r < 0)
                return log_error_errno(r, "Cannot announce this license server as %s at %s: %m",
                                       p->node_name, p->own_endpoint);
        r = licdisc_announcer_start(p->announcer);
        if (r < 0) {
                log_warning_errno(r, "Failed to announce this license server on the discovery group, not "
                                     "announcing (peers and terminal servers must name it): %m");
                p->announcer = licdisc_announcer_free(p->announcer);
                p->own_endpoint[0] = '\0';
                return 0;
        }
        log_info("Announcing this license server as %s at %s every %" PRIu64 " ms.", p->node_name,
                 p->own_endpoint, p->config->announce_interval / USEC_PER_MSEC);
        return 0;
}

static int listener_start(struct lic_peers *p, const struct licdisc_net *net) {
        struct licdisc_listener_config lc = {.net = *net, .site = p->config->site};
        int r;

        r = licdisc_listener_new(p->event, &lc, on_discovery, p, &p->listener);
        if (r < 0)
                return log_error_errno(r, "Failed to set up peer discovery: %m");
        r = licdisc_listener_start(p->listener);
        if (r < 0) {
                log_warning_errno(r, "Failed to listen for peer license servers' announcements, ignoring "
                                     "(only configured peers are asked): %m");
                p->listener = licdisc_listener_free(p->listener);
        }
        return 0;
}

int lic_peers_start(struct lic_peers *p) {
        const struct licensing_config *c = p->config;
        const struct service_config *sc = &c->service;
        struct licdisc_net net = {
                .group = c->discovery_group.sin_addr,
                .port = ntohs(c->discovery_group.sin_port),
        };
        struct tsf_api_client_config cc = {
                .ca_file = sc->ca,
                .cert_file = sc->certificate,
                .key_file = sc->key,
                .timeout = c->peer_timeout,
                .response_max = 1024 * 1024,
        };
        int r;

        if (p->port == 0 || !sc->certificate) {
                if (c->peers || c->discover_peers || c->announce)
                        log_info("[licensing] has no certificate: no peers, no announcements.");
                return 0;
        }
        if (c->discovery_interface) {
                net.ifindex = if_nametoindex(c->discovery_interface);
                if (net.ifindex == 0)
                        return log_error_errno(-ENODEV,
                                               "[licensing] discovery-interface %s: no such interface.",
                                               c->discovery_interface);
        }
        if (c->announce) {
                r = announcer_start(p, &net);
                if (r < 0)
                        return r;
        }
        if (!c->peers && !c->discover_peers)
                return 0;

        r = tsf_api_client_new(&cc, &p->client);
        if (r >= 0)
                r = tsf_api_client_attach_event(p->client, p->event);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the API client for peer license servers: %m");
        if (c->discover_peers) {
                r = listener_start(p, &net);
                if (r < 0)
                        return r;
        }
        /* Now, then every inventory-refresh. */
        r = sd_event_add_time_relative(p->event, &p->refresh_timer, CLOCK_MONOTONIC, 0, 0, on_refresh, p);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the peers' inventory timer: %m");
        log_info("Peer license servers: %zu configured, discovery %s; inventories every %" PRIu64 " ms.",
                 tsf_strv_length(c->peers), p->listener ? "on" : "off",
                 c->inventory_refresh / USEC_PER_MSEC);
        return 0;
}

struct lic_peers *lic_peers_free(struct lic_peers *p) {
        if (!p)
                return NULL;
        while (p->borrows)
                lic_borrow_cancel(p->borrows);
        while (p->peers)
                peer_free(p, p->peers);
        sd_event_source_disable_unref(p->refresh_timer);
        licdisc_listener_free(p->listener);
        licdisc_announcer_free(p->announcer);
        tsf_api_client_free(p->client);
        sd_event_unref(p->event);
        free(p);
        return NULL;
}

/* ---- queries ------------------------------------------------------------ */

bool lic_peers_is_peer(const struct lic_peers *p, const char *name) {
        if (!p || !name || !*name)
                return false;
        for (const struct peer *e = p->peers; e; e = e->next)
                if (!e->self && (strcmp(e->name, name) == 0 || strcmp(e->announced_name, name) == 0))
                        return true;
        return false;
}

unsigned lic_peers_known(const struct lic_peers *p) {
        unsigned n = 0;

        for (const struct peer *e = p ? p->peers : NULL; e; e = e->next)
                n += !e->self;
        return n;
}

unsigned lic_peers_reachable(const struct lic_peers *p) {
        unsigned n = 0;

        for (const struct peer *e = p ? p->peers : NULL; e; e = e->next)
                n += !e->self && e->reachable;
        return n;
}

static json_t *str_or_null(const char *s) {
        return s && *s ? json_string(s) : json_null();
}

json_t *lic_peers_to_json(const struct lic_peers *p) {
        _cleanup_(json_decrefp) json_t *list = json_array();

        if (!list)
                return NULL;
        for (const struct peer *e = p ? p->peers : NULL; e; e = e->next) {
                json_t *origins = json_array(), *inv = json_null(), *o;
                char when[TSF_TIMESTAMP_MAX];

                if (!origins)
                        return NULL;
                if (e->configured)
                        json_array_append_new(origins, json_string("config"));
                if (e->discovered)
                        json_array_append_new(origins, json_string("multicast"));
                if (e->has_inventory)
                        inv = json_pack("{s:O, s:s, s:I}", "packs", e->packs, "time",
                                        tsf_format_timestamp(e->inventory_time, when, sizeof(when)),
                                        "time_usec", (json_int_t)e->inventory_time);
                o = json_pack("{s:s, s:o, s:o, s:o, s:o, s:b, s:b, s:o, s:o}", "endpoint", e->endpoint,
                              "name", str_or_null(e->name), "announced_name", str_or_null(e->announced_name),
                              "key_id", str_or_null(e->key_id[0] ? e->key_id : e->announced_key_id),
                              "origins", origins, "self", e->self, "reachable", e->reachable, "inventory",
                              inv ?: json_null(), "last_error", str_or_null(e->error));
                if (!o || json_array_append_new(list, o) < 0)
                        return NULL;
        }
        return json_pack("{s:O}", "peers", list);
}

/* ---- borrowing ---------------------------------------------------------- */

static void borrow_free(struct lic_borrow *b) {
        LIST_REMOVE(b->owner->borrows, b);
        json_decref(b->request);
        free(b->endpoints);
        free(b);
}

void lic_borrow_cancel(struct lic_borrow *b) {
        if (!b)
                return;
        if (b->call)
                tsf_api_call_cancel(b->call);
        borrow_free(b);
}

/* The lender's answer is a Device CAL for this device, signed by the key
 * its inventory named: what a terminal server will check offline anyway,
 * checked here so that a confused peer's answer is not relayed. */
static const char *answer_mismatch(const struct lic_borrow *b, const struct peer *e, json_t *reply) {
        const char *text = json_string_value(json_object_get(reply, "token")),
                   *id = json_string_value(json_object_get(reply, "token_id")),
                   *pack = json_string_value(json_object_get(reply, "pack"));
        uint8_t key_id[TSF_LIC_KEY_ID_SIZE], token_id[TSF_LIC_TOKEN_ID_SIZE];
        struct tsf_lic_token t;

        if (!text || !id || !pack || !hex_valid(id, 2 * TSF_LIC_TOKEN_ID_SIZE))
                return "the answer lacks token, token_id or pack";
        if (tsf_lic_token_parse(text, &t) != TSF_LIC_VERDICT_OK || t.kind != TSF_LIC_CAL)
                return "the answer's token is not a Device CAL";
        if (tsf_hex_decode(id, strlen(id), token_id, sizeof(token_id), NULL) != (ssize_t)sizeof(token_id) ||
            memcmp(token_id, t.token_id, sizeof(token_id)) != 0 || strcmp(pack, t.pack_id) != 0)
                return "the answer's token_id or pack is not its token's";
        if (tsf_hex_decode(e->key_id, strlen(e->key_id), key_id, sizeof(key_id), NULL) !=
                    (ssize_t)sizeof(key_id) ||
            memcmp(key_id, t.issuer_key_id, sizeof(key_id)) != 0)
                return "the token is not signed with the key its inventory names";
        if (memcmp(b->device_hash, t.device_hash, sizeof(t.device_hash)) != 0)
                return "the token is for another device";
        if (b->version[0] && strcmp(b->version, t.product_version) != 0)
                return "the token is for another product version";
        return NULL;
}

static bool borrow_next(struct lic_borrow *b);

static void set_why(struct lic_borrow *b, const char *fmt, ...) _printf_(2, 3);
static void set_why(struct lic_borrow *b, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(b->why, sizeof(b->why), fmt, ap);
        va_end(ap);
}

/* After a candidate failed: the next one, or the end. */
static void borrow_go_on(struct lic_borrow *b) {
        if (borrow_next(b))
                return;
        b->done(-ENOSPC, NULL, NULL, b->why[0] ? b->why : "no peer has a CAL available", b->userdata);
        borrow_free(b);
}

static void on_lend_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct lic_borrow *b = userdata;
        struct peer *e = peer_find(b->owner, b->asking);
        const char *bad;

        b->call = NULL;
        if (!e) {
                /* It went while we asked; an answer is still an answer. */
                set_why(b, "%s left while asked", b->asking);
                borrow_go_on(b);
                return;
        }
        if (r < 0) {
                peer_failed(e, "%s", error && *error ? error : strerror(-r));
                set_why(b, "%s: %s", peer_label(e), e->error);
                /* Refused: nothing reached it. Anything else: it may
                 * have lent the CAL before the answer was lost. */
                if (r != -ECONNREFUSED)
                        in_doubt_add(b->owner, b->device_hash, e->endpoint);
                borrow_go_on(b);
                return;
        }
        e->reachable = true;
        if (status != 200) {
                const char *code = json_string_value(json_object_get(reply, "error")),
                           *reason = json_string_value(json_object_get(reply, "reason"));

                set_why(b, "%s answered %ld %s: %s", peer_label(e), status, code ?: "?", reason ?: "");
                log_debug("Borrowing: %s", b->why);
                in_doubt_clear(b->owner, b->device_hash, e->endpoint);
                peer_refresh(e); /* its inventory was out of date, or it does not know us */
                borrow_go_on(b);
                return;
        }
        bad = answer_mismatch(b, e, reply);
        if (bad) {
                set_why(b, "%s: %s", peer_label(e), bad);
                log_warning("Peer license server %s (%s) lent a CAL that cannot be relayed: %s",
                            peer_label(e), e->endpoint, bad);
                borrow_go_on(b);
                return;
        }
        if (json_object_set_new(reply, "lender", json_string(e->name)) < 0) {
                set_why(b, "out of memory");
                borrow_go_on(b);
                return;
        }
        in_doubt_clear(b->owner, b->device_hash, e->endpoint);
        peer_refresh(e); /* one fewer available there now */
        b->done(0, reply, e->name, NULL, b->userdata);
        borrow_free(b);
}

/* Asks the next candidate that is still there; false when none is left. */
static bool borrow_next(struct lic_borrow *b) {
        struct lic_peers *p = b->owner;

        while (b->i < b->n) {
                struct peer *e = peer_find(p, b->endpoints[b->i++]);
                char url[LICDISC_ENDPOINT_MAX + 32];
                int r;

                if (!e || !peer_askable(e))
                        continue;
                snprintf(b->asking, sizeof(b->asking), "%s", e->endpoint);
                snprintf(url, sizeof(url), "https://%s/v1/licenses/lend", e->endpoint);
                r = tsf_api_client_start(p->client, "POST", url, b->request, p->config->peer_timeout,
                                         on_lend_done, b, &b->call);
                if (r >= 0)
                        return true;
                set_why(b, "%s: cannot start a call: %s", peer_label(e), strerror(-r));
        }
        return false;
}

int lic_peers_borrow(struct lic_peers *p, json_t *request, const uint8_t *hardware_id,
                     size_t hardware_id_len, const char *product_version, lic_borrow_done_t done,
                     void *userdata, struct lic_borrow **ret, usec_t *ret_deadline) {
        uint8_t hash[TSF_LIC_DEVICE_HASH_SIZE];
        struct in_doubt *doubt;
        struct lic_borrow *b;
        size_t n = 0;
        int r;

        if (!p || !p->client || !request || !done)
                return -ENOSPC;
        r = tsf_lic_hardware_hash(hardware_id, hardware_id_len, hash);
        if (r < 0)
                return r;
        /* A peer that may hold a CAL lent for this device already comes
         * first; then the peers with CALs available, in order; then the
         * other reachable ones (their inventory may be stale). */
        doubt = in_doubt_find(p, hash, NULL);
        for (struct peer *e = p->peers; e; e = e->next)
                n += peer_askable(e) || (doubt && strcasecmp(doubt->endpoint, e->endpoint) == 0);
        if (n == 0)
                return -ENOSPC;

        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->owner = p;
        LIST_PREPEND(p->borrows, b);
        b->endpoints = calloc(n, sizeof(*b->endpoints));
        if (!b->endpoints) {
                borrow_free(b);
                return -ENOMEM;
        }
        memcpy(b->device_hash, hash, sizeof(hash));
        if (doubt && peer_find(p, doubt->endpoint))
                snprintf(b->endpoints[b->n++], sizeof(b->endpoints[0]), "%s", doubt->endpoint);
        for (int pass = 0; pass < 2; pass++)
                for (struct peer *e = p->peers; e && b->n < n; e = e->next)
                        if (peer_askable(e) && peer_has_cal(e, product_version) == (pass == 0) &&
                            !(doubt && strcasecmp(doubt->endpoint, e->endpoint) == 0))
                                snprintf(b->endpoints[b->n++], sizeof(b->endpoints[0]), "%s", e->endpoint);
        snprintf(b->version, sizeof(b->version), "%s", product_version ?: "");
        b->request = json_incref(request);
        b->done = done;
        b->userdata = userdata;
        if (!borrow_next(b)) {
                borrow_free(b);
                return -ENOSPC;
        }
        if (ret)
                *ret = b;
        if (ret_deadline)
                *ret_deadline = (b->n + 1) * p->config->peer_timeout;
        return 0;
}
