/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* lib/licdiscovery: the datagram format, the listener's list (aging on a
 * fake clock, site order, configured servers), SRV answers built by hand,
 * the DNS thread with a fake resolver, and a real round trip over
 * multicast on the loopback interface when this machine allows one. */
#include <arpa/inet.h>
#include <net/if.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <systemd/sd-event.h>

#include "tsfarm/clock.h"
#include "tsfarm/licdiscovery.h"
#include "tsfarm/macro.h"

#define T0 (1000 * USEC_PER_SEC)

/* ---- helpers ------------------------------------------------------------- */

static struct licdisc_announcement ann(const char *name, const char *site, const char *endpoint,
                                       uint64_t seq, usec_t interval) {
        struct licdisc_announcement a = {.seq = seq, .interval = interval};

        snprintf(a.name, sizeof(a.name), "%s", name);
        snprintf(a.site, sizeof(a.site), "%s", site);
        snprintf(a.endpoint, sizeof(a.endpoint), "%s", endpoint);
        for (size_t i = 0; i < sizeof(a.key_id); i++)
                a.key_id[i] = (uint8_t)(0xa0 + i);
        return a;
}

/* 249 bytes of host in labels of 63, 63, 63, 57, then ":65535": 255. */
static void max_endpoint(char *out) {
        size_t p = 0;

        for (int label = 0; label < 4; label++) {
                size_t len = label < 3 ? 63 : 57;

                memset(out + p, 'a' + label, len);
                p += len;
                if (label < 3)
                        out[p++] = '.';
        }
        strcpy(out + p, ":65535");
}

static size_t encode(const struct licdisc_announcement *a, uint8_t *buf) {
        ssize_t n = licdisc_announcement_encode(a, buf, LICDISC_ANNOUNCE_MAX);

        assert_true(n > 0);
        return (size_t)n;
}

struct change {
        enum licdisc_change what;
        char endpoint[LICDISC_ENDPOINT_MAX + 1];
        unsigned origins;
};

struct fixture {
        sd_event *event;
        struct tsf_fake_clock clock;
        struct licdisc_listener *l;
        struct change changes[64];
        size_t n;
};

static void on_change(struct licdisc_listener *l, enum licdisc_change what, const struct licdisc_server *s,
                      void *userdata) {
        struct fixture *f = userdata;

        /* Counts all, keeps the first few. */
        if (f->n < ELEMENTSOF(f->changes)) {
                f->changes[f->n].what = what;
                snprintf(f->changes[f->n].endpoint, sizeof(f->changes[0].endpoint), "%s", s->endpoint);
                f->changes[f->n].origins = s->origins;
        }
        f->n++;
}

static void assert_change(const struct fixture *f, size_t i, enum licdisc_change what,
                          const char *endpoint) {
        assert_true(i < f->n && i < ELEMENTSOF(f->changes));
        assert_int_equal(f->changes[i].what, what);
        assert_string_equal(f->changes[i].endpoint, endpoint);
}

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));
        struct licdisc_listener_config c = {.no_multicast = true, .site = "berlin"};

        assert_non_null(f);
        assert_int_equal(sd_event_new(&f->event), 0);
        tsf_fake_clock_init(&f->clock, 1700000000ULL * USEC_PER_SEC, T0);
        tsf_clock_install(&f->clock.base);
        assert_int_equal(licdisc_listener_new(f->event, &c, on_change, f, &f->l), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;

        licdisc_listener_free(f->l);
        sd_event_unref(f->event);
        tsf_clock_install(NULL);
        free(f);
        return 0;
}

static void feed(struct fixture *f, const struct licdisc_announcement *a, const char *from) {
        uint8_t buf[LICDISC_ANNOUNCE_MAX];
        struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = htons(7402)};

        assert_int_equal(inet_pton(AF_INET, from, &src.sin_addr), 1);
        assert_int_equal(licdisc_listener_feed(f->l, buf, encode(a, buf), &src), 0);
}

static void advance(struct fixture *f, usec_t d) {
        tsf_fake_clock_advance(&f->clock, d);
        licdisc_listener_expire(f->l);
}

/* ---- wire format --------------------------------------------------------- */

static void test_roundtrip(void **state) {
        struct licdisc_announcement a =
                ann("lic1", "berlin", "10.0.0.5:7401", 0x0102030405060708ULL, 30 * USEC_PER_SEC);
        uint8_t buf[LICDISC_ANNOUNCE_MAX], again[LICDISC_ANNOUNCE_MAX];
        struct licdisc_msg m;
        size_t n = encode(&a, buf);

        assert_int_equal(n, LICDISC_ANNOUNCE_FIXED + 3 + 4 + 6 + 13);
        assert_memory_equal(buf, "TSLD\x01\x01\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x75\x30", 20);
        assert_int_equal(licdisc_msg_decode(buf, n, &m), 0);
        assert_int_equal(m.type, LICDISC_MSG_ANNOUNCE);
        assert_memory_equal(&m.announce, &a, sizeof(a));
        assert_int_equal(licdisc_announcement_encode(&m.announce, again, sizeof(again)), (ssize_t)n);
        assert_memory_equal(buf, again, n);

        /* The smallest and the largest announcement. */
        a = ann("x", "", "h:1", 0, LICDISC_INTERVAL_MIN);
        assert_int_equal(encode(&a, buf), LICDISC_ANNOUNCE_MIN);
        assert_int_equal(licdisc_msg_decode(buf, LICDISC_ANNOUNCE_MIN, &m), 0);
        assert_string_equal(m.announce.site, "");
        memset(a.name, 'n', LICDISC_NAME_MAX);
        memset(a.site, 's', LICDISC_SITE_MAX);
        max_endpoint(a.endpoint);
        a.interval = LICDISC_INTERVAL_MAX;
        a.seq = UINT64_MAX;
        assert_true(licdisc_endpoint_valid(a.endpoint));
        assert_int_equal(encode(&a, buf), LICDISC_ANNOUNCE_MAX);
        assert_int_equal(licdisc_msg_decode(buf, LICDISC_ANNOUNCE_MAX, &m), 0);
        assert_memory_equal(&m.announce, &a, sizeof(a));
        assert_int_equal(licdisc_announcement_encode(&a, buf, LICDISC_ANNOUNCE_MAX - 1), -ENOBUFS);

        assert_int_equal(licdisc_query_encode(buf, sizeof(buf)), LICDISC_QUERY_SIZE);
        assert_memory_equal(buf, "TSLD\x01\x02\x00\x00", LICDISC_QUERY_SIZE);
        assert_int_equal(licdisc_msg_decode(buf, LICDISC_QUERY_SIZE, &m), 0);
        assert_int_equal(m.type, LICDISC_MSG_QUERY);
        assert_int_equal(licdisc_query_encode(buf, LICDISC_QUERY_SIZE - 1), -ENOBUFS);
}

static void test_endpoint_valid(void **state) {
        static const char *const good[] = {
                "h:1",           "10.0.0.5:7401",   "lic1.corp.example:65535", "[::1]:7401", "[fe80::1:2]:1",
                "a-b.c_d.e:443", "[2001:db8::]:80", "LIC1.Example:7401",       "1.2.3.4:9",  "x1.y2.z3:5",
        };
        static const char *const bad[] = {
                "",
                "h",
                ":1",
                "h:",
                "h:0",
                "h:65536",
                "h:007",
                "h:-1",
                "h:+1",
                "h:1a",
                "h:123456",
                "a..b:1",
                ".a:1",
                "a.:1",
                "-a:1",
                "a-:1",
                "a.-b:1",
                "a b:1",
                "a/b:1",
                "[::1:1",
                "[::1]",
                "::1:7401",
                "[zz]:1",
                "[]:1",
                "[::1]x:1",
                "1.2.3.999:1",
                "1.2.3:1",
                "300.1.1.1:1",
                "[fe80::1%eth0]:1",
                "a\xc3\xa9:1",
        };
        char longlabel[80];

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                assert_true(licdisc_endpoint_valid(good[i]));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                if (licdisc_endpoint_valid(bad[i]))
                        fail_msg("endpoint '%s' accepted", bad[i]);
        }
        memset(longlabel, 'a', 64);
        strcpy(longlabel + 64, ":1");
        assert_false(licdisc_endpoint_valid(longlabel));
        strcpy(longlabel + 63, ":1");
        assert_true(licdisc_endpoint_valid(longlabel));
        assert_false(licdisc_endpoint_valid(NULL));

        assert_true(licdisc_name_valid("lic-1_a.b", LICDISC_NAME_MAX));
        assert_false(licdisc_name_valid("", LICDISC_NAME_MAX));
        assert_false(licdisc_name_valid("a b", LICDISC_NAME_MAX));
        assert_false(licdisc_name_valid("abcd", 3));
        assert_true(licdisc_site_valid(""));
        assert_false(licdisc_site_valid("ber lin"));
}

static void test_encode_refuses(void **state) {
        uint8_t buf[LICDISC_ANNOUNCE_MAX];
        struct licdisc_announcement a;

        a = ann("", "s", "h:1", 0, USEC_PER_SEC);
        assert_int_equal(licdisc_announcement_encode(&a, buf, sizeof(buf)), -EINVAL);
        a = ann("a b", "s", "h:1", 0, USEC_PER_SEC);
        assert_int_equal(licdisc_announcement_encode(&a, buf, sizeof(buf)), -EINVAL);
        a = ann("n", "s/x", "h:1", 0, USEC_PER_SEC);
        assert_int_equal(licdisc_announcement_encode(&a, buf, sizeof(buf)), -EINVAL);
        a = ann("n", "s", "h:0", 0, USEC_PER_SEC);
        assert_int_equal(licdisc_announcement_encode(&a, buf, sizeof(buf)), -EINVAL);
        a = ann("n", "s", "h:1", 0, LICDISC_INTERVAL_MIN - USEC_PER_MSEC);
        assert_int_equal(licdisc_announcement_encode(&a, buf, sizeof(buf)), -EINVAL);
        a = ann("n", "s", "h:1", 0, LICDISC_INTERVAL_MAX + USEC_PER_MSEC);
        assert_int_equal(licdisc_announcement_encode(&a, buf, sizeof(buf)), -EINVAL);
        a = ann("n", "s", "h:1", 0, USEC_PER_SEC + 1); /* not whole milliseconds */
        assert_int_equal(licdisc_announcement_encode(&a, buf, sizeof(buf)), -EINVAL);
        /* A name that fills its array has no NUL: too long. */
        a = ann("n", "s", "h:1", 0, USEC_PER_SEC);
        memset(a.name, 'n', sizeof(a.name));
        assert_int_equal(licdisc_announcement_encode(&a, buf, sizeof(buf)), -EINVAL);
}

/* Offsets in the datagram of ann("lic1", "berlin", "10.0.0.5:7401"). */
#define OFF_NAME_LEN 52
#define OFF_SITE_LEN (OFF_NAME_LEN + 1 + 4)
#define OFF_EP_LEN (OFF_SITE_LEN + 1 + 6)
#define OFF_EP (OFF_EP_LEN + 1)

static void test_decode_refuses(void **state) {
        struct licdisc_announcement a = ann("lic1", "berlin", "10.0.0.5:7401", 7, 30 * USEC_PER_SEC);
        uint8_t good[LICDISC_ANNOUNCE_MAX], buf[LICDISC_ANNOUNCE_MAX + 8];
        size_t n = encode(&a, good);
        struct licdisc_msg m;
        static const struct {
                const char *what;
                size_t offset;
                uint8_t value;
                int expect;
        } flips[] = {
                {"magic", 0, 'X', -EBADMSG},
                {"magic end", 3, 'd', -EBADMSG},
                {"version 0", 4, 0, -EBADMSG},
                {"version 2", 4, 2, -EPROTONOSUPPORT},
                {"version 255", 4, 255, -EPROTONOSUPPORT},
                {"type 0", 5, 0, -EBADMSG},
                {"type 3", 5, 3, -EBADMSG},
                {"type query with a body", 5, 2, -EBADMSG},
                {"flags high", 6, 0x80, -EBADMSG},
                {"flags low", 7, 0x01, -EBADMSG},
                {"interval 48 ms", 18, 0, -EBADMSG}, /* 30000 ms is 00 00 75 30 */
                {"interval > a day", 16, 0xff, -EBADMSG},
                {"name empty", OFF_NAME_LEN, 0, -EBADMSG},
                {"name longer", OFF_NAME_LEN, 5, -EBADMSG},
                {"name 64", OFF_NAME_LEN, 64, -EBADMSG},
                {"name char", OFF_NAME_LEN + 2, ' ', -EBADMSG},
                {"name NUL", OFF_NAME_LEN + 1, 0, -EBADMSG},
                {"name 8-bit", OFF_NAME_LEN + 4, 0xe9, -EBADMSG},
                {"site shorter", OFF_SITE_LEN, 5, -EBADMSG},
                {"site 64", OFF_SITE_LEN, 64, -EBADMSG},
                {"site char", OFF_SITE_LEN + 1, '/', -EBADMSG},
                {"endpoint shorter", OFF_EP_LEN, 12, -EBADMSG},
                {"endpoint longer", OFF_EP_LEN, 14, -EBADMSG},
                {"endpoint 255", OFF_EP_LEN, 255, -EBADMSG},
                {"endpoint no colon", OFF_EP + 8, '.', -EBADMSG},
                {"endpoint host char", OFF_EP + 1, '/', -EBADMSG},
                {"endpoint not IPv4", OFF_EP + 6, '0', -EBADMSG}, /* 10.0.005: numeric, not IPv4 */
                {"endpoint port 0", OFF_EP + 9, '0', -EBADMSG},
                {"endpoint NUL", OFF_EP + 2, 0, -EBADMSG},
        };

        assert_int_equal(licdisc_msg_decode(good, n, &m), 0);
        for (size_t i = 0; i < ELEMENTSOF(flips); i++) {
                int r;

                memcpy(buf, good, n);
                buf[flips[i].offset] = flips[i].value;
                r = licdisc_msg_decode(buf, n, &m);
                if (r != flips[i].expect)
                        fail_msg("%s: got %d, want %d", flips[i].what, r, flips[i].expect);
        }
        /* The interval's bounds: 100 ms and one day. */
        memcpy(buf, good, n);
        memcpy(buf + 16, "\x00\x00\x00\x63", 4); /* 99 ms */
        assert_int_equal(licdisc_msg_decode(buf, n, &m), -EBADMSG);
        memcpy(buf + 16, "\x00\x00\x00\x64", 4); /* 100 ms */
        assert_int_equal(licdisc_msg_decode(buf, n, &m), 0);
        memcpy(buf + 16, "\x05\x26\x5c\x01", 4); /* 86400001 ms */
        assert_int_equal(licdisc_msg_decode(buf, n, &m), -EBADMSG);
        memcpy(buf + 16, "\x05\x26\x5c\x00", 4); /* 86400000 ms: one day, allowed */
        assert_int_equal(licdisc_msg_decode(buf, n, &m), 0);

        /* Every prefix, and any byte more. */
        for (size_t k = 0; k < n; k++)
                assert_int_equal(licdisc_msg_decode(good, k, &m), -EBADMSG);
        memcpy(buf, good, n);
        buf[n] = 0;
        assert_int_equal(licdisc_msg_decode(buf, n + 1, &m), -EBADMSG);
        assert_int_equal(licdisc_msg_decode(buf, LICDISC_ANNOUNCE_MAX + 1, &m), -EBADMSG);

        /* Queries: exactly eight bytes. */
        assert_int_equal(licdisc_query_encode(buf, sizeof(buf)), LICDISC_QUERY_SIZE);
        assert_int_equal(licdisc_msg_decode(buf, LICDISC_QUERY_SIZE - 1, &m), -EBADMSG);
        assert_int_equal(licdisc_msg_decode(buf, LICDISC_QUERY_SIZE + 1, &m), -EBADMSG);
        buf[7] = 1;
        assert_int_equal(licdisc_msg_decode(buf, LICDISC_QUERY_SIZE, &m), -EBADMSG);
        assert_int_equal(licdisc_msg_decode(NULL, 8, &m), -EINVAL);
}

/* ---- the listener's list ------------------------------------------------- */

static void test_aging(void **state) {
        struct fixture *f = *state;
        struct licdisc_announcement a = ann("lic1", "berlin", "10.0.0.5:7401", 100, 30 * USEC_PER_SEC);
        struct licdisc_server *v;
        struct licdisc_stats st;
        size_t n;

        feed(f, &a, "10.0.0.5");
        assert_int_equal(f->n, 1);
        assert_change(f, 0, LICDISC_ADDED, "10.0.0.5:7401");
        assert_int_equal(f->changes[0].origins, LICDISC_ORIGIN_MULTICAST);
        assert_int_equal(licdisc_listener_list(f->l, &v, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(v[0].name, "lic1");
        assert_string_equal(v[0].site, "berlin");
        assert_string_equal(v[0].key_id, "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf");
        assert_int_equal(v[0].last_seen, T0);
        assert_int_equal(v[0].seq, 100);
        assert_int_equal(v[0].interval, 30 * USEC_PER_SEC);
        assert_int_equal(ntohl(v[0].source.sin_addr.s_addr), 0x0a000005);
        free(v);

        /* Two missed intervals and a bit: still there. A refresh is not news. */
        advance(f, 89 * USEC_PER_SEC);
        assert_int_equal(licdisc_listener_count(f->l), 1);
        a.seq++;
        feed(f, &a, "10.0.0.5");
        assert_int_equal(f->n, 1);
        advance(f, 89 * USEC_PER_SEC);
        assert_int_equal(licdisc_listener_count(f->l), 1);
        /* The same number again (a copy) refreshes but says nothing; an
         * older one is stale and refreshes nothing. */
        feed(f, &a, "10.0.0.5");
        a.seq--;
        feed(f, &a, "10.0.0.5");
        licdisc_listener_get_stats(f->l, &st);
        assert_int_equal(st.stale, 1);
        assert_int_equal(f->n, 1);
        /* Three intervals after the last fresh one, it lapses. */
        advance(f, 90 * USEC_PER_SEC - 1);
        assert_int_equal(licdisc_listener_count(f->l), 1);
        advance(f, 1);
        assert_int_equal(licdisc_listener_count(f->l), 0);
        assert_int_equal(f->n, 2);
        assert_change(f, 1, LICDISC_REMOVED, "10.0.0.5:7401");

        /* Back after the lapse with a lower number (a restart whose clock
         * went back): accepted, it is a new entry. */
        a.seq = 5;
        feed(f, &a, "10.0.0.5");
        assert_int_equal(f->n, 3);
        assert_change(f, 2, LICDISC_ADDED, "10.0.0.5:7401");
        /* A change of site, key or interval is news. */
        a = ann("lic1", "paris", "10.0.0.5:7401", 6, 30 * USEC_PER_SEC);
        feed(f, &a, "10.0.0.5");
        assert_int_equal(f->n, 4);
        assert_change(f, 3, LICDISC_UPDATED, "10.0.0.5:7401");
        a.seq++;
        a.interval = 10 * USEC_PER_SEC;
        feed(f, &a, "10.0.0.5");
        assert_int_equal(f->n, 5);
        advance(f, 30 * USEC_PER_SEC);
        assert_int_equal(licdisc_listener_count(f->l), 0);

        /* Queries and garbage change nothing, and are counted. */
        {
                uint8_t q[LICDISC_QUERY_SIZE];

                assert_int_equal(licdisc_query_encode(q, sizeof(q)), LICDISC_QUERY_SIZE);
                assert_int_equal(licdisc_listener_feed(f->l, q, sizeof(q), NULL), 0);
                assert_int_equal(licdisc_listener_feed(f->l, (const uint8_t *)"hello", 5, NULL), -EBADMSG);
                q[4] = 9;
                assert_int_equal(licdisc_listener_feed(f->l, q, sizeof(q), NULL), -EPROTONOSUPPORT);
                assert_int_equal(licdisc_listener_feed(f->l, NULL, 0, NULL), -EBADMSG);
        }
        licdisc_listener_get_stats(f->l, &st);
        assert_int_equal(st.ignored, 1);
        assert_int_equal(st.malformed, 2);
        assert_int_equal(st.unsupported, 1);
        assert_int_equal(licdisc_listener_count(f->l), 0);
}

static void test_learned_max(void **state) {
        struct fixture *f = *state;
        char ep[32];
        struct licdisc_stats st;

        for (int i = 0; i < LICDISC_LEARNED_MAX + 5; i++) {
                struct licdisc_announcement a;

                snprintf(ep, sizeof(ep), "10.1.%d.%d:7401", i / 200, i % 200 + 1);
                a = ann("x", "", ep, 1, USEC_PER_SEC);
                feed(f, &a, "10.0.0.1");
        }
        assert_int_equal(licdisc_listener_count(f->l), LICDISC_LEARNED_MAX);
        licdisc_listener_get_stats(f->l, &st);
        assert_int_equal(st.overflow, 5);
        /* Configured servers are not bounded by it. */
        assert_int_equal(licdisc_listener_add_static(f->l, "cfg.example:7401", NULL, NULL, NULL), 0);
        assert_int_equal(licdisc_listener_count(f->l), LICDISC_LEARNED_MAX + 1);
        advance(f, 3 * USEC_PER_SEC);
        assert_int_equal(licdisc_listener_count(f->l), 1);
}

static void test_site_order(void **state) {
        struct fixture *f = *state;
        struct licdisc_announcement a;
        struct licdisc_server *v;
        size_t n;
        static const char *const want[] = {
                "10.0.0.3:7401",           /* berlin, heard last */
                "10.0.0.2:7401",           /* berlin, heard before */
                "cfg-berlin.example:7401", /* berlin, configured */
                "10.0.0.1:7401",           /* paris, heard */
                "cfg-any.example:7401",    /* no site, configured first */
                "cfg-other.example:7401",  /* configured second */
        };

        assert_int_equal(licdisc_listener_add_static(f->l, "cfg-any.example:7401", NULL, NULL, NULL), 0);
        assert_int_equal(licdisc_listener_add_static(f->l, "cfg-berlin.example:7401", "cb", "Berlin", NULL),
                         0);
        assert_int_equal(licdisc_listener_add_static(f->l, "cfg-other.example:7401", NULL, "rome", NULL), 0);
        a = ann("p1", "paris", "10.0.0.1:7401", 1, 30 * USEC_PER_SEC);
        feed(f, &a, "10.0.0.1");
        advance(f, USEC_PER_SEC);
        a = ann("b1", "berlin", "10.0.0.2:7401", 1, 30 * USEC_PER_SEC);
        feed(f, &a, "10.0.0.2");
        advance(f, USEC_PER_SEC);
        a = ann("b2", "berlin", "10.0.0.3:7401", 1, 30 * USEC_PER_SEC);
        feed(f, &a, "10.0.0.3");

        assert_int_equal(licdisc_listener_list(f->l, &v, &n), 0);
        assert_int_equal(n, ELEMENTSOF(want));
        for (size_t i = 0; i < n; i++)
                assert_string_equal(v[i].endpoint, want[i]);
        free(v);

        /* b1 speaks again: now it is the freshest. */
        advance(f, USEC_PER_SEC);
        a = ann("b1", "berlin", "10.0.0.2:7401", 2, 30 * USEC_PER_SEC);
        feed(f, &a, "10.0.0.2");
        assert_int_equal(licdisc_listener_list(f->l, &v, &n), 0);
        assert_string_equal(v[0].endpoint, "10.0.0.2:7401");
        assert_string_equal(v[1].endpoint, "10.0.0.3:7401");
        free(v);
}

static void test_static_kept(void **state) {
        struct fixture *f = *state;
        struct licdisc_announcement a;
        struct licdisc_server *v;
        size_t n;
        const char *key = "A0A1A2A3A4A5A6A7A8A9AAABACADAEAFB0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF";

        assert_int_equal(licdisc_listener_add_static(f->l, "lic9.example:7401", "lic9", "berlin", key), 0);
        assert_change(f, 0, LICDISC_ADDED, "lic9.example:7401");
        assert_int_equal(f->changes[0].origins, LICDISC_ORIGIN_CONFIG);
        assert_int_equal(licdisc_listener_add_static(f->l, "LIC9.example:7401", NULL, NULL, NULL), -EEXIST);
        assert_int_equal(licdisc_listener_add_static(f->l, "lic9.example", NULL, NULL, NULL), -EINVAL);
        assert_int_equal(licdisc_listener_add_static(f->l, "x.example:1", "a b", NULL, NULL), -EINVAL);
        assert_int_equal(licdisc_listener_add_static(f->l, "x.example:1", NULL, "a/b", NULL), -EINVAL);
        assert_int_equal(licdisc_listener_add_static(f->l, "x.example:1", NULL, NULL, "abcd"), -EINVAL);
        assert_int_equal(licdisc_listener_add_static(f->l, "x.example:1", NULL, NULL, "zz"), -EINVAL);
        assert_int_equal(f->n, 1);

        assert_int_equal(licdisc_listener_list(f->l, &v, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(v[0].key_id, "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf");
        assert_int_equal(v[0].last_seen, 0);
        free(v);

        /* It announces itself too (endpoints compare without case): one
         * entry, two origins, the announcement's name. */
        a = ann("lic9-real", "berlin", "LIC9.example:7401", 1, 30 * USEC_PER_SEC);
        feed(f, &a, "10.0.0.9");
        assert_int_equal(f->n, 2);
        assert_change(f, 1, LICDISC_UPDATED, "LIC9.example:7401");
        assert_int_equal(f->changes[1].origins, LICDISC_ORIGIN_CONFIG | LICDISC_ORIGIN_MULTICAST);
        assert_int_equal(licdisc_listener_count(f->l), 1);

        /* It falls silent: the entry stays, configured only. */
        advance(f, 90 * USEC_PER_SEC);
        assert_int_equal(f->n, 3);
        assert_change(f, 2, LICDISC_UPDATED, "LIC9.example:7401");
        assert_int_equal(f->changes[2].origins, LICDISC_ORIGIN_CONFIG);
        advance(f, 100 * USEC_PER_DAY);
        assert_int_equal(licdisc_listener_list(f->l, &v, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(v[0].name, "lic9-real");
        assert_int_equal(v[0].origins, LICDISC_ORIGIN_CONFIG);
        free(v);
}

/* ---- DNS SRV ------------------------------------------------------------- */

struct pkt {
        uint8_t b[1024];
        size_t n;
};

static void p8(struct pkt *p, uint8_t v) {
        assert_true(p->n < sizeof(p->b));
        p->b[p->n++] = v;
}

static void p16(struct pkt *p, uint16_t v) {
        p8(p, (uint8_t)(v >> 8));
        p8(p, (uint8_t)v);
}

static void p32(struct pkt *p, uint32_t v) {
        p16(p, (uint16_t)(v >> 16));
        p16(p, (uint16_t)v);
}

/* A name in labels; a trailing "@N" ends it with a pointer to offset N. */
static void pname(struct pkt *p, const char *name) {
        const char *s = name;

        while (*s && *s != '@') {
                size_t l = strcspn(s, ".@");

                p8(p, (uint8_t)l);
                for (size_t i = 0; i < l; i++)
                        p8(p, (uint8_t)s[i]);
                s += l;
                if (*s == '.')
                        s++;
        }
        if (*s == '@')
                p16(p, (uint16_t)(0xc000 | atoi(s + 1)));
        else
                p8(p, 0);
}

#define QNAME "_tslicensing._tcp.corp.example"
#define QNAME_OFF 12
#define CORP_OFF (QNAME_OFF + 13 + 5) /* "corp.example" inside the question */

static void pheader(struct pkt *p, uint16_t flags, uint16_t an, uint16_t ar) {
        p->n = 0;
        p16(p, 0x1234);
        p16(p, flags);
        p16(p, 1);
        p16(p, an);
        p16(p, 0);
        p16(p, ar);
        pname(p, QNAME);
        p16(p, 33); /* SRV */
        p16(p, 1);  /* IN */
}

/* An SRV record owned by the question's name (a pointer to it). */
static void psrv(struct pkt *p, uint16_t prio, uint16_t weight, uint16_t port, const char *target) {
        size_t len_at;

        p16(p, 0xc000 | QNAME_OFF);
        p16(p, 33);
        p16(p, 1);
        p32(p, 300);
        len_at = p->n;
        p16(p, 0);
        p16(p, prio);
        p16(p, weight);
        p16(p, port);
        pname(p, target);
        p->b[len_at] = (uint8_t)((p->n - len_at - 2) >> 8);
        p->b[len_at + 1] = (uint8_t)(p->n - len_at - 2);
}

#define FLAGS_OK 0x8580 /* QR, AA, RD, RA, NOERROR */

static void build_answer(struct pkt *p) {
        size_t len_at;

        pheader(p, FLAGS_OK, 6, 1);
        psrv(p, 10, 60, 7401, "lic1.corp.example");
        psrv(p, 10, 20, 7401,
             "LIC2@"
             "30"); /* compressed: lic2 + corp.example */
        /* A CNAME, and an SRV of someone else: not ours. */
        p16(p, 0xc000 | QNAME_OFF);
        p16(p, 5);
        p16(p, 1);
        p32(p, 300);
        p16(p, 2);
        p16(p, 0xc000 | CORP_OFF);
        pname(p, "other.corp.example");
        p16(p, 33);
        p16(p, 1);
        p32(p, 300);
        len_at = p->n;
        p16(p, 0);
        p16(p, 0);
        p16(p, 0);
        p16(p, 7401);
        pname(p, "evil.example");
        p->b[len_at + 1] = (uint8_t)(p->n - len_at - 2);
        psrv(p, 0, 0, 7402, "lic0.corp.example.");
        psrv(p, 5, 0, 0, "noport.corp.example"); /* port 0: skipped */
        /* Additional: an A record for lic1. */
        pname(p, "lic1@"
                 "30");
        p16(p, 1);
        p16(p, 1);
        p32(p, 300);
        p16(p, 4);
        p32(p, 0x0a000005);
}

static void test_srv_parse(void **state) {
        struct licdisc_srv *v = NULL;
        struct pkt p;
        size_t n;

        assert_int_equal(CORP_OFF, 30);
        build_answer(&p);
        assert_int_equal(licdisc_srv_parse(p.b, p.n, &v, &n), 0);
        assert_int_equal(n, 3);
        assert_string_equal(v[0].target, "lic1.corp.example");
        assert_int_equal(v[0].priority, 10);
        assert_int_equal(v[0].weight, 60);
        assert_int_equal(v[0].port, 7401);
        assert_string_equal(v[1].target, "lic2.corp.example");
        assert_int_equal(v[1].weight, 20);
        assert_string_equal(v[2].target, "lic0.corp.example");
        assert_int_equal(v[2].priority, 0);
        assert_int_equal(v[2].port, 7402);
        free(v);

        /* Every prefix is malformed, and so is a byte more. */
        for (size_t k = 0; k < p.n; k++) {
                v = NULL;
                assert_int_equal(licdisc_srv_parse(p.b, k, &v, &n), -EBADMSG);
                assert_null(v);
        }
        p.b[p.n] = 0;
        assert_int_equal(licdisc_srv_parse(p.b, p.n + 1, &v, &n), -EBADMSG);

        /* Error codes. */
        pheader(&p, 0x8583, 0, 0);
        assert_int_equal(licdisc_srv_parse(p.b, p.n, &v, &n), -ENOENT);
        pheader(&p, 0x8582, 0, 0);
        assert_int_equal(licdisc_srv_parse(p.b, p.n, &v, &n), -EAGAIN);
        pheader(&p, 0x0100, 0, 0); /* a query, not an answer */
        assert_int_equal(licdisc_srv_parse(p.b, p.n, &v, &n), -EBADMSG);
        /* NOERROR without records: none. */
        pheader(&p, FLAGS_OK, 0, 0);
        assert_int_equal(licdisc_srv_parse(p.b, p.n, &v, &n), 0);
        assert_int_equal(n, 0);
        assert_null(v);

        /* "." alone: decidedly not available. */
        pheader(&p, FLAGS_OK, 1, 0);
        psrv(&p, 0, 0, 7401, "");
        assert_int_equal(licdisc_srv_parse(p.b, p.n, &v, &n), 0);
        assert_int_equal(n, 0);

        /* A record running past the message, and a target that ends
         * before its record does. The data of psrv(.., "a.example") is 17
         * bytes: 6 of numbers, then 1 a 7 example 0. */
        pheader(&p, FLAGS_OK, 1, 0);
        psrv(&p, 0, 0, 7401, "a.example");
        p.b[p.n - 18]++; /* rdlength one more than there is */
        assert_int_equal(licdisc_srv_parse(p.b, p.n, &v, &n), -EBADMSG);
        pheader(&p, FLAGS_OK, 2, 0);
        psrv(&p, 0, 0, 7401, "a.example");
        p.b[p.n - 9] = 3; /* 1 a 3 exa 0: the name ends 4 bytes early */
        p.b[p.n - 5] = 0;
        psrv(&p, 1, 0, 7401, "b.example");
        assert_int_equal(licdisc_srv_parse(p.b, p.n, &v, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(v[0].target, "b.example");
        free(v);
        /* A target the endpoint syntax refuses. */
        pheader(&p, FLAGS_OK, 1, 0);
        psrv(&p, 0, 0, 7401, "-bad.example");
        assert_int_equal(licdisc_srv_parse(p.b, p.n, &v, &n), 0);
        assert_int_equal(n, 0);
}

struct script {
        const uint64_t *v;
        size_t n, i;
};

static uint64_t scripted(void *userdata) {
        struct script *s = userdata;

        assert_true(s->i < s->n);
        return s->v[s->i++];
}

static void test_srv_order(void **state) {
        struct licdisc_srv base[] = {
                {.priority = 10, .weight = 60, .port = 1, .target = "a"},
                {.priority = 10, .weight = 20, .port = 1, .target = "b"},
                {.priority = 10, .weight = 0, .port = 1, .target = "c"},
                {.priority = 0, .weight = 5, .port = 1, .target = "d"},
        };
        struct licdisc_srv v[4];
        /* One draw per pick with more than one record left. */
        const uint64_t s1[] = {70, 0};
        const uint64_t s2[] = {0, 61};
        const uint64_t s3[] = {0, 1};
        struct script s;
        unsigned first_a = 0;

        /* Priority first; then weight-0 first in the running sum: [c 0,
         * a 60, b 80]. 70 picks b; [c 0, a 60] and 0 picks c; a last. */
        memcpy(v, base, sizeof(v));
        s = (struct script){s1, ELEMENTSOF(s1), 0};
        licdisc_srv_order(v, 4, scripted, &s);
        assert_string_equal(v[0].target, "d");
        assert_string_equal(v[1].target, "b");
        assert_string_equal(v[2].target, "c");
        assert_string_equal(v[3].target, "a");
        /* 0 picks c (weight 0 can win); then no weight 0 is left, so the
         * draw is in [1, 80]: 61 is 62 there, b. */
        memcpy(v, base, sizeof(v));
        s = (struct script){s2, ELEMENTSOF(s2), 0};
        licdisc_srv_order(v, 4, scripted, &s);
        assert_string_equal(v[0].target, "d");
        assert_string_equal(v[1].target, "c");
        assert_string_equal(v[2].target, "b");
        assert_string_equal(v[3].target, "a");
        /* [c 0, b 20, a 80]: 0 picks c; then [b 20, a 80] in [1, 80]: 1 is 2, b. */
        memcpy(v, base + 1, 2 * sizeof(*v)); /* b 20, c 0 */
        memcpy(&v[2], base, sizeof(*v));     /* a 60 */
        s = (struct script){s3, ELEMENTSOF(s3), 0};
        licdisc_srv_order(v, 3, scripted, &s);
        assert_string_equal(v[0].target, "c");
        assert_string_equal(v[1].target, "b");
        assert_string_equal(v[2].target, "a");

        /* Weights 3:1 with real randomness: about 3 in 4 first. */
        for (int i = 0; i < 4000; i++) {
                struct licdisc_srv w[2] = {
                        {.priority = 1, .weight = 1, .port = 1, .target = "b"},
                        {.priority = 1, .weight = 3, .port = 1, .target = "a"},
                };

                licdisc_srv_order(w, 2, NULL, NULL);
                first_a += w[0].target[0] == 'a';
        }
        assert_in_range(first_a, 2800, 3200);
        licdisc_srv_order(NULL, 0, NULL, NULL);

        char name[LICDISC_HOST_MAX + 1];
        assert_int_equal(licdisc_srv_name("corp.example.", name, sizeof(name)), 0);
        assert_string_equal(name, QNAME);
        assert_int_equal(licdisc_srv_name("", name, sizeof(name)), 0);
        assert_string_equal(name, "_tslicensing._tcp");
        assert_int_equal(licdisc_srv_name("bad..example", name, sizeof(name)), -EINVAL);
        assert_int_equal(licdisc_srv_name("x.example", name, 10), -ENAMETOOLONG);
}

/* The lookup thread with a fake resolver: answers come back on the loop. */
struct fake_dns {
        struct pkt answer;
        int error; /* returned instead of the answer when non-zero */
        unsigned delay_ms;
        char last_name[LICDISC_HOST_MAX + 1];
        bool last_search;
};

static int fake_resolve(const char *name, bool search, uint8_t *answer, size_t size, void *userdata) {
        struct fake_dns *d = userdata;

        if (d->delay_ms)
                usleep(d->delay_ms * 1000);
        snprintf(d->last_name, sizeof(d->last_name), "%s", name);
        d->last_search = search;
        if (d->error)
                return d->error;
        assert_true(d->answer.n <= size);
        memcpy(answer, d->answer.b, d->answer.n);
        return (int)d->answer.n;
}

/* Runs the loop on the real clock (the fake one stands still) until `done`
 * or 5 s. */
static void run_until(struct fixture *f, bool (*done)(struct fixture *f)) {
        usec_t end;

        tsf_clock_install(NULL);
        end = tsf_now_monotonic() + 5 * USEC_PER_SEC;
        while (!done(f) && tsf_now_monotonic() < end)
                assert_true(sd_event_run(f->event, 100 * USEC_PER_MSEC) >= 0);
        tsf_clock_install(&f->clock.base);
        assert_true(done(f));
}

static bool three_changes(struct fixture *f) {
        return f->n >= 3;
}

static bool one_failure(struct fixture *f) {
        struct licdisc_stats st;

        licdisc_listener_get_stats(f->l, &st);
        return st.dns_failures >= 1;
}

static void test_dns_thread(void **state) {
        struct fixture *f = *state;
        struct licdisc_listener_config c = {
                .no_multicast = true, .site = "berlin", .domain = "corp.example"};
        static struct fake_dns d; /* read by the lookup thread */
        struct licdisc_server *v;
        struct licdisc_stats st;
        size_t n;

        licdisc_listener_free(f->l);
        assert_int_equal(licdisc_listener_new(f->event, &c, on_change, f, &f->l), 0);
        licdisc_listener_set_resolver(f->l, fake_resolve, &d);
        memset(&d, 0, sizeof(d));
        build_answer(&d.answer);
        assert_int_equal(licdisc_restart(f->l), -ENOTCONN);
        assert_int_equal(licdisc_listener_add_static(f->l, "lic1.corp.example:7401", NULL, NULL, NULL), 0);
        f->n = 0;

        assert_int_equal(licdisc_listener_start(f->l), 0);
        assert_int_equal(licdisc_listener_start(f->l), -EALREADY);
        run_until(f, three_changes);
        assert_string_equal(d.last_name, QNAME);
        assert_false(d.last_search);
        assert_int_equal(f->n, 3); /* lic1 updated (config + dns), lic2 and lic0 added */
        assert_int_equal(licdisc_listener_list(f->l, &v, &n), 0);
        assert_int_equal(n, 3);
        /* Configured first, then DNS in priority order. */
        assert_string_equal(v[0].endpoint, "lic1.corp.example:7401");
        assert_int_equal(v[0].origins, LICDISC_ORIGIN_CONFIG | LICDISC_ORIGIN_DNS);
        assert_int_equal(v[0].priority, 10);
        assert_string_equal(v[1].endpoint, "lic0.corp.example:7402");
        assert_int_equal(v[1].origins, LICDISC_ORIGIN_DNS);
        assert_string_equal(v[2].endpoint, "lic2.corp.example:7401");
        free(v);

        /* A lookup that fails says nothing: the entries stay. */
        d.error = -EAGAIN;
        f->n = 0;
        assert_int_equal(licdisc_restart(f->l), 0);
        run_until(f, one_failure);
        assert_int_equal(f->n, 0);
        assert_int_equal(licdisc_listener_count(f->l), 3);

        /* NXDOMAIN: the DNS entries go, the configured one stays. */
        d.error = -ENOENT;
        assert_int_equal(licdisc_restart(f->l), 0);
        run_until(f, three_changes);
        assert_int_equal(f->n, 3);
        assert_int_equal(licdisc_listener_count(f->l), 1);
        licdisc_listener_get_stats(f->l, &st);
        assert_int_equal(st.dns_lookups, 3);
        assert_int_equal(st.dns_failures, 1);

        /* Freed while a lookup is under way: the thread finishes alone
         * (ASan and LeakSanitizer watch). */
        d.error = 0;
        d.delay_ms = 100;
        assert_int_equal(licdisc_restart(f->l), 0);
        licdisc_listener_free(f->l);
        f->l = NULL;
        usleep(300 * 1000);
}

static void test_dns_search(void **state) {
        struct fixture *f = *state;
        struct licdisc_listener_config c = {.no_multicast = true, .domain = ""};
        static struct fake_dns d;

        licdisc_listener_free(f->l);
        assert_int_equal(licdisc_listener_new(f->event, &c, on_change, f, &f->l), 0);
        memset(&d, 0, sizeof(d));
        build_answer(&d.answer);
        licdisc_listener_set_resolver(f->l, fake_resolve, &d);
        f->n = 0;
        assert_int_equal(licdisc_listener_start(f->l), 0);
        run_until(f, three_changes);
        assert_string_equal(d.last_name, "_tslicensing._tcp");
        assert_true(d.last_search);
        assert_int_equal(f->n, 3);

        c.domain = "bad..domain";
        assert_int_equal(
                licdisc_listener_new(f->event, &c, on_change, f, &(struct licdisc_listener *){NULL}),
                -EINVAL);
        c.domain = NULL;
        c.site = "a b";
        assert_int_equal(
                licdisc_listener_new(f->event, &c, on_change, f, &(struct licdisc_listener *){NULL}),
                -EINVAL);
        c.site = NULL;
        c.net.group.s_addr = htonl(0x0a000001); /* not a multicast group */
        assert_int_equal(
                licdisc_listener_new(f->event, &c, on_change, f, &(struct licdisc_listener *){NULL}),
                -EINVAL);
}

/* ---- a real round trip on the loopback interface ------------------------- */

static void test_loopback(void **state) {
        _cleanup_(licdisc_announcer_freep) struct licdisc_announcer *a = NULL;
        _cleanup_(licdisc_listener_freep) struct licdisc_listener *l = NULL;
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct fixture f = {};
        uint16_t port;
        unsigned ifindex = if_nametoindex("lo");
        struct licdisc_announcer_config ac = {
                .name = "lic-lo",
                .site = "berlin",
                .endpoint = "127.0.0.1:7401",
                .interval = 10 * USEC_PER_SEC,
        };
        struct licdisc_listener_config lc = {.site = "berlin"};
        struct licdisc_stats as, ls;
        struct licdisc_server *v;
        size_t n;
        usec_t end;
        int r;

        tsf_clock_install(NULL);
        if (ifindex == 0)
                skip();
        assert_int_equal(getrandom(&port, sizeof(port), 0), (ssize_t)sizeof(port));
        port = (uint16_t)(20000 + port % 40000);
        ac.net = (struct licdisc_net){.port = port, .ifindex = ifindex};
        lc.net = ac.net;
        memset(ac.key_id, 0x5a, sizeof(ac.key_id));

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(licdisc_announcer_new(e, &ac, &a), 0);
        r = licdisc_announcer_start(a);
        if (r < 0) {
                print_message("multicast on lo unavailable here (%s): skipped\n", strerror(-r));
                skip();
        }
        assert_int_equal(licdisc_announcer_start(a), -EALREADY);
        /* The first announcement went out before the listener joined: it
         * learns the server from the answer to its query. */
        assert_int_equal(licdisc_listener_new(e, &lc, on_change, &f, &l), 0);
        r = licdisc_listener_start(l);
        if (r < 0) {
                print_message("multicast on lo unavailable here (%s): skipped\n", strerror(-r));
                skip();
        }
        for (end = tsf_now_monotonic() + 3 * USEC_PER_SEC; f.n < 1 && tsf_now_monotonic() < end;)
                assert_true(sd_event_run(e, 100 * USEC_PER_MSEC) >= 0);
        if (f.n == 0) {
                licdisc_announcer_get_stats(a, &as);
                if (as.sent == 0) {
                        print_message("multicast on lo does not deliver here: skipped\n");
                        skip();
                }
        }
        assert_int_equal(f.n, 1);
        assert_int_equal(f.changes[0].what, LICDISC_ADDED);
        assert_int_equal(licdisc_listener_list(l, &v, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(v[0].name, "lic-lo");
        assert_string_equal(v[0].endpoint, "127.0.0.1:7401");
        assert_int_equal(v[0].origins, LICDISC_ORIGIN_MULTICAST);
        assert_int_equal(v[0].interval, 10 * USEC_PER_SEC);
        free(v);
        licdisc_announcer_get_stats(a, &as);
        assert_int_equal(as.queries, 1);

        /* Garbage on the group, and a query sent to the port by unicast. */
        {
                _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                struct ip_mreqn mr = {.imr_ifindex = (int)ifindex};
                struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
                uint8_t q[LICDISC_QUERY_SIZE];

                assert_true(fd >= 0);
                assert_int_equal(setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &mr, sizeof(mr)), 0);
                inet_pton(AF_INET, LICDISC_GROUP_DEFAULT, &to.sin_addr);
                assert_int_equal(sendto(fd, "TSLD\x01\x01junk", 10, 0, (struct sockaddr *)&to, sizeof(to)),
                                 10);
                assert_int_equal(licdisc_query_encode(q, sizeof(q)), LICDISC_QUERY_SIZE);
                to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                assert_int_equal(sendto(fd, q, sizeof(q), 0, (struct sockaddr *)&to, sizeof(to)),
                                 (ssize_t)sizeof(q));
        }
        /* Two restarts within the second: one query, at its end. */
        assert_int_equal(licdisc_restart(l), 0);
        assert_int_equal(licdisc_restart(l), 0);
        for (end = tsf_now_monotonic() + 3 * USEC_PER_SEC; tsf_now_monotonic() < end;) {
                assert_true(sd_event_run(e, 100 * USEC_PER_MSEC) >= 0);
                licdisc_announcer_get_stats(a, &as);
                licdisc_listener_get_stats(l, &ls);
                if (as.queries == 2 && as.malformed == 1 && ls.malformed == 1 && as.ignored >= 1)
                        break;
        }
        assert_int_equal(as.queries, 2);
        assert_int_equal(as.malformed, 1);
        assert_int_equal(ls.malformed, 1);
        assert_true(as.ignored >= 1); /* the unicast query (and our own announcements' echo) */
        assert_int_equal(ls.queries, 2);
        assert_int_equal(f.n, 1); /* answers refresh; nothing new */
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_roundtrip),
                cmocka_unit_test(test_endpoint_valid),
                cmocka_unit_test(test_encode_refuses),
                cmocka_unit_test(test_decode_refuses),
                cmocka_unit_test_setup_teardown(test_aging, setup, teardown),
                cmocka_unit_test_setup_teardown(test_learned_max, setup, teardown),
                cmocka_unit_test_setup_teardown(test_site_order, setup, teardown),
                cmocka_unit_test_setup_teardown(test_static_kept, setup, teardown),
                cmocka_unit_test(test_srv_parse),
                cmocka_unit_test(test_srv_order),
                cmocka_unit_test_setup_teardown(test_dns_thread, setup, teardown),
                cmocka_unit_test_setup_teardown(test_dns_search, setup, teardown),
                cmocka_unit_test(test_loopback),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
