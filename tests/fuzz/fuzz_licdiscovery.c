/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for license-server discovery (lib/licdiscovery.c). Each
 * input is used three ways:
 *
 *   as one datagram   licdisc_msg_decode(): no crash, only the documented
 *                     errors, and what it accepts is valid field by field
 *                     and encodes back to exactly the input bytes;
 *   as datagrams      split where "TSLD" starts (every datagram starts so,
 *                     so a concatenation of real ones splits into them),
 *                     fed to a fresh listener with the fake clock moving 7 s
 *                     between them: the list stays consistent (count, valid
 *                     fields, site order) through adds, updates, stale
 *                     copies and lapses;
 *   as a DNS answer   licdisc_srv_parse() and licdisc_srv_order(): only the
 *                     documented errors, records usable as endpoints, sorted
 *                     by priority.
 *
 * Seeds in tests/fuzz/seeds/fuzz_licdiscovery/.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <systemd/sd-event.h>

#include "tsfarm/clock.h"
#include "tsfarm/licdiscovery.h"
#include "tsfarm/macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(cond)                                                                                       \
        do {                                                                                              \
                if (!(cond)) {                                                                            \
                        fprintf(stderr, "fuzz_licdiscovery: invariant violated at %s:%d: %s\n", __FILE__, \
                                __LINE__, #cond);                                                         \
                        abort();                                                                          \
                }                                                                                         \
        } while (0)

static sd_event *event;
static struct tsf_fake_clock fake;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        CHECK(sd_event_new(&event) >= 0);
        tsf_fake_clock_init(&fake, 1795000000ULL * USEC_PER_SEC, 1000 * USEC_PER_SEC);
        tsf_clock_install(&fake.base);
        return 0;
}

static void check_decoded(const uint8_t *data, size_t size, const struct licdisc_msg *m) {
        uint8_t enc[LICDISC_ANNOUNCE_MAX];
        ssize_t n;

        if (m->type == LICDISC_MSG_QUERY) {
                CHECK(size == LICDISC_QUERY_SIZE);
                n = licdisc_query_encode(enc, sizeof(enc));
        } else {
                const struct licdisc_announcement *a = &m->announce;

                CHECK(m->type == LICDISC_MSG_ANNOUNCE);
                CHECK(size >= LICDISC_ANNOUNCE_MIN && size <= LICDISC_ANNOUNCE_MAX);
                CHECK(licdisc_name_valid(a->name, LICDISC_NAME_MAX));
                CHECK(licdisc_site_valid(a->site));
                CHECK(licdisc_endpoint_valid(a->endpoint));
                CHECK(a->interval >= LICDISC_INTERVAL_MIN && a->interval <= LICDISC_INTERVAL_MAX);
                CHECK(a->interval % USEC_PER_MSEC == 0);
                n = licdisc_announcement_encode(a, enc, sizeof(enc));
                CHECK(licdisc_announcement_encode(a, enc, (size_t)n - 1) == -ENOBUFS);
        }
        CHECK(n == (ssize_t)size);
        CHECK(memcmp(enc, data, size) == 0);
}

static bool own_site(const struct licdisc_server *s) {
        return strcasecmp(s->site, "berlin") == 0;
}

static void check_list(const struct licdisc_listener *l) {
        struct licdisc_server *v = NULL;
        size_t n;

        CHECK(licdisc_listener_list(l, &v, &n) == 0);
        CHECK(n == licdisc_listener_count(l));
        CHECK(n <= LICDISC_LEARNED_MAX + 1);
        for (size_t i = 0; i < n; i++) {
                const struct licdisc_server *s = &v[i];

                CHECK(s->origins != 0);
                CHECK((s->origins & ~(unsigned)(LICDISC_ORIGIN_MULTICAST | LICDISC_ORIGIN_CONFIG)) == 0);
                CHECK(licdisc_endpoint_valid(s->endpoint));
                CHECK(licdisc_site_valid(s->site));
                if (s->origins & LICDISC_ORIGIN_MULTICAST) {
                        CHECK(licdisc_name_valid(s->name, LICDISC_NAME_MAX));
                        CHECK(strlen(s->key_id) == 2 * LICDISC_KEY_ID_SIZE);
                        CHECK(s->last_seen + LICDISC_MISSED_INTERVALS * s->interval > tsf_now_monotonic());
                }
                if (i > 0)
                        CHECK(own_site(&v[i - 1]) || !own_site(s));
                for (size_t j = 0; j < i; j++)
                        CHECK(strcasecmp(v[j].endpoint, s->endpoint) != 0);
        }
        free(v);
}

static void feed_all(const uint8_t *data, size_t size) {
        struct licdisc_listener_config c = {.no_multicast = true, .site = "berlin"};
        struct licdisc_listener *l = NULL;
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(7402)};
        size_t start = 0;

        CHECK(licdisc_listener_new(event, &c, NULL, NULL, &l) == 0);
        /* A configured server that announcements may also name. */
        CHECK(licdisc_listener_add_static(l, "10.0.0.5:7401", "cfg", "berlin", NULL) == 0);
        while (start < size) {
                const uint8_t *next =
                        size - start > 4 ? memmem(data + start + 4, size - start - 4, "TSLD", 4) : NULL;
                size_t end = next ? (size_t)(next - data) : size;
                struct licdisc_msg m;
                int r = licdisc_msg_decode(data + start, end - start, &m);

                src.sin_addr.s_addr = htonl(0x0a000000 | (uint32_t)start);
                CHECK(licdisc_listener_feed(l, data + start, end - start, &src) == r);
                tsf_fake_clock_advance(&fake, 7 * USEC_PER_SEC);
                licdisc_listener_expire(l);
                check_list(l);
                start = end;
        }
        licdisc_listener_free(l);
}

static void check_srv(const uint8_t *data, size_t size) {
        struct licdisc_srv *v = NULL;
        size_t n = 0;
        int r;

        r = licdisc_srv_parse(data, size, &v, &n);
        CHECK(r == 0 || r == -EBADMSG || r == -ENOENT || r == -EAGAIN);
        if (r < 0) {
                CHECK(v == NULL);
                return;
        }
        CHECK(n <= LICDISC_SRV_MAX);
        CHECK((n == 0) == (v == NULL));
        licdisc_srv_order(v, n, NULL, NULL);
        for (size_t i = 0; i < n; i++) {
                char endpoint[LICDISC_HOST_MAX + 8];

                CHECK(v[i].port != 0);
                snprintf(endpoint, sizeof(endpoint), "%s:%u", v[i].target, v[i].port);
                CHECK(licdisc_endpoint_valid(endpoint) || strlen(endpoint) > LICDISC_ENDPOINT_MAX);
                CHECK(i == 0 || v[i - 1].priority <= v[i].priority);
        }
        free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct licdisc_msg m;
        int r;

        r = licdisc_msg_decode(data, size, &m);
        CHECK(r == 0 || r == -EBADMSG || r == -EPROTONOSUPPORT);
        if (r == -EPROTONOSUPPORT)
                CHECK(size >= LICDISC_HEADER_SIZE && memcmp(data, LICDISC_MAGIC, 4) == 0 && data[4] > 1);
        if (r == 0)
                check_decoded(data, size, &m);

        feed_all(data, size);
        check_srv(data, size);
        return 0;
}
