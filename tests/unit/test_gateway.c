/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The gateway and its relay, end to end on loopback: the real gateway on a
 * real sd-event loop in its own thread, real TCP clients and backends in
 * the test's threads. Every wait has a deadline; nothing sleeps and hopes.
 *
 * TSFARM_GATEWAY_TEST_MIB sets the bulk transfer size per direction
 * (default 1024: 1 GiB each way takes about 3 s under ASan here).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <systemd/sd-event.h>

#include "agent/host/gateway.h"
#include "agent/host/relay.h"
#include "tsfarm/clock.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsfarm/x224.h"

/* ---- small helpers ------------------------------------------------------------------------------ */

static usec_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (usec_t)ts.tv_sec * USEC_PER_SEC + (usec_t)ts.tv_nsec / 1000;
}

static int ms_left(usec_t deadline) {
        usec_t now = now_usec();

        return now >= deadline ? 0 : (int)((deadline - now + 999) / 1000);
}

static struct sockaddr_in loopback(uint16_t port) {
        return (struct sockaddr_in){
                .sin_family = AF_INET,
                .sin_port = htons(port),
                .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
        };
}

static int listen_on_loopback(int backlog, struct sockaddr_in *ret) {
        struct sockaddr_in a = loopback(0);
        socklen_t len = sizeof(a);
        int fd, one = 1;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        assert_int_equal(listen(fd, backlog), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)ret, &len), 0);
        return fd;
}

static int connect_to(const struct sockaddr_in *a) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        assert_true(fd >= 0);
        assert_int_equal(connect(fd, (const struct sockaddr *)a, sizeof(*a)), 0);
        return fd;
}

/* Returns an accepted socket, or -1 if none arrived within ms. */
static int accept_within(int lfd, int ms) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};

        if (poll(&p, 1, ms) <= 0)
                return -1;
        return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

static void write_all(int fd, const void *buf, size_t n) {
        const uint8_t *p = buf;

        while (n > 0) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL);

                if (k < 0 && errno == EINTR)
                        continue;
                assert_true(k > 0);
                p += k;
                n -= (size_t)k;
        }
}

/* Reads exactly n bytes within ms; returns how many arrived. */
static size_t read_within(int fd, void *buf, size_t n, int ms) {
        usec_t deadline = now_usec() + (usec_t)ms * USEC_PER_MSEC;
        uint8_t *p = buf;
        size_t got = 0;

        while (got < n) {
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                ssize_t k;

                if (poll(&pfd, 1, ms_left(deadline)) <= 0)
                        break;
                k = recv(fd, p + got, n - got, MSG_DONTWAIT);
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                if (k <= 0)
                        break;
                got += (size_t)k;
        }
        return got;
}

/* Waits until fd reports EOF (returns 0) or an error (returns -errno), or
 * -ETIMEDOUT after ms. Data arriving meanwhile fails the test. */
static int wait_closed(int fd, int ms) {
        usec_t deadline = now_usec() + (usec_t)ms * USEC_PER_MSEC;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        char c;
        ssize_t k;

        for (;;) {
                if (poll(&p, 1, ms_left(deadline)) <= 0)
                        return -ETIMEDOUT;
                k = recv(fd, &c, 1, MSG_DONTWAIT);
                if (k == 0)
                        return 0;
                if (k < 0 && errno != EAGAIN && errno != EINTR)
                        return -errno;
                assert_true(k < 0);
        }
}

static void set_reset_on_close(int fd) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};

        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)), 0);
}

/* A Connection Request: TPKT + X.224 CR + token line + RDP_NEG_REQ (TLS|CredSSP). */
static size_t make_cr(uint8_t *buf, size_t size, const char *line) {
        size_t line_len = line ? strlen(line) + 2 : 0, li = 6 + line_len + TSF_RDP_NEG_REQ_SIZE,
               total = 5 + li;
        uint8_t *p = buf;

        assert_true(total <= size && li <= TSF_X224_LI_MAX);
        *p++ = TSF_TPKT_VERSION;
        *p++ = 0;
        put_be16(p, (uint16_t)total);
        p += 2;
        *p++ = (uint8_t)li;
        *p++ = TSF_X224_TPDU_CR;
        memset(p, 0, 5);
        p += 5;
        if (line) {
                memcpy(p, line, line_len - 2);
                p += line_len - 2;
                *p++ = '\r';
                *p++ = '\n';
        }
        *p++ = TSF_RDP_NEG_REQ_TYPE;
        *p++ = 0;
        put_le16(p, TSF_RDP_NEG_REQ_SIZE);
        p += 2;
        put_le32(p, TSF_PROTOCOL_SSL | TSF_PROTOCOL_HYBRID);
        p += 4;
        assert_int_equal((size_t)(p - buf), total);
        return total;
}

/* xfreerdp /u:rdpuser1 /sec:tls, captured (../shared/vectors/freerdp-2.11-tls.hex). */
static const char freerdp_tls_hex[] =
        "0300002e29e00000000000436f6f6b69653a206d737473686173683d72647075736572310d0a"
        "0100080001000000";

static size_t unhex(const char *hex, uint8_t *buf, size_t size) {
        size_t n = strlen(hex) / 2;

        assert_true(n <= size);
        for (size_t i = 0; i < n; i++) {
                unsigned v;

                assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
                buf[i] = (uint8_t)v;
        }
        return n;
}

/* ---- the farm: a gateway on its own loop thread, and backends ------------------------------------ */

enum {
        BACKEND_LOCAL = 0, /* "this host's RDP server" */
        BACKEND_PEER,      /* "another farm node" */
        BACKEND_STUCK,     /* a listener whose accept queue is full: connects hang */
        _BACKEND_MAX,
};

struct farm_opts {
        usec_t first_pdu_timeout;
        size_t first_pdu_max;
        usec_t idle_timeout;
        size_t buffer_size;
        unsigned max_connections;
        bool bind_source; /* backend_source = 127.0.0.2 */
};

struct farm {
        struct farm_opts opts;
        pthread_t thread;
        sd_event *event;
        struct gateway *gateway;
        struct sockaddr_in gateway_addr;
        int wake_fd;

        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool ready;
        int start_error;
        void (*call)(struct farm *f, void *arg);
        void *call_arg;
        bool call_done;

        int backend_fd[_BACKEND_MAX];
        struct sockaddr_in backend[_BACKEND_MAX];
        struct sockaddr_in dead; /* nothing listens there */
        int stuck_filler;

        /* Touched only on the loop thread (read through farm_call()). */
        unsigned decide_calls;
        uint64_t later_id;
};

/* The test's policy, standing in for the host role's. */
static int farm_decide(void *userdata, const struct gateway_request *req, struct gateway_decision *out) {
        struct farm *f = userdata;
        const struct tsf_cr *cr = req->cr;
        const char *user = cr->cookie + cr->cookie_value_offset;

        f->decide_calls++;
        switch (cr->cookie_kind) {
        case TSF_COOKIE_ROUTING_TOKEN:
                /* Only farm nodes: anything else would make us an open relay. */
                if (cr->routing_decoded && cr->routing_ipv4_be == f->backend[BACKEND_PEER].sin_addr.s_addr &&
                    cr->routing_port == ntohs(f->backend[BACKEND_PEER].sin_port)) {
                        out->verdict = GATEWAY_PEER;
                        out->backend = f->backend[BACKEND_PEER];
                        snprintf(out->reason, sizeof(out->reason), "routing token names farm node peer");
                } else
                        snprintf(out->reason, sizeof(out->reason), "routing token names a non-farm address");
                return 0;
        case TSF_COOKIE_MSTSHASH:
                snprintf(out->user_key, sizeof(out->user_key), "%.*s", (int)cr->cookie_value_len, user);
                if (strcmp(out->user_key, "later") == 0) {
                        f->later_id = req->id;
                        return GATEWAY_DECIDE_LATER;
                }
                if (strcmp(out->user_key, "broken") == 0)
                        return -EIO;
                if (strcmp(out->user_key, "mallory") == 0) {
                        snprintf(out->reason, sizeof(out->reason), "user mallory is locked out");
                        return 0;
                }
                out->verdict = GATEWAY_LOCAL;
                out->backend = f->backend[BACKEND_LOCAL];
                if (strcmp(out->user_key, "bob") == 0) {
                        out->verdict = GATEWAY_PEER;
                        out->backend = f->backend[BACKEND_PEER];
                } else if (strcmp(out->user_key, "dead") == 0)
                        out->backend = f->dead;
                else if (strcmp(out->user_key, "stuck") == 0)
                        out->backend = f->backend[BACKEND_STUCK];
                else if (strcmp(out->user_key, "twice") == 0)
                        out->keep_others = true;
                snprintf(out->reason, sizeof(out->reason), "mstshash %.100s", out->user_key);
                return 0;
        default:
                out->verdict = GATEWAY_LOCAL;
                out->backend = f->backend[BACKEND_LOCAL];
                snprintf(out->reason, sizeof(out->reason), "no cookie: placement");
                return 0;
        }
}

static int on_wake(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct farm *f = userdata;
        uint64_t v;
        void (*call)(struct farm *, void *);

        (void)read(fd, &v, sizeof(v));
        pthread_mutex_lock(&f->lock);
        call = f->call;
        pthread_mutex_unlock(&f->lock);
        if (!call)
                return 0;
        call(f, f->call_arg);
        pthread_mutex_lock(&f->lock);
        f->call = NULL;
        f->call_done = true;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);
        return 0;
}

static void *farm_loop(void *arg) {
        struct farm *f = arg;
        struct gateway_config c;
        int r;

        gateway_config_init(&c);
        c.listen = loopback(0);
        c.first_pdu_timeout = f->opts.first_pdu_timeout ?: 200 * USEC_PER_MSEC;
        c.decide_timeout = 300 * USEC_PER_MSEC;
        c.connect_timeout = 300 * USEC_PER_MSEC;
        if (f->opts.first_pdu_max)
                c.first_pdu_max = f->opts.first_pdu_max;
        c.idle_timeout = f->opts.idle_timeout;
        if (f->opts.buffer_size)
                c.buffer_size = f->opts.buffer_size;
        if (f->opts.max_connections)
                c.max_connections = f->opts.max_connections;
        if (f->opts.bind_source)
                c.backend_source.sin_addr.s_addr = htonl(0x7f000002);

        r = sd_event_new(&f->event);
        if (r >= 0)
                r = gateway_new(f->event, &c, farm_decide, f, &f->gateway);
        if (r >= 0)
                r = gateway_get_address(f->gateway, &f->gateway_addr);
        if (r >= 0)
                r = sd_event_add_io(f->event, NULL, f->wake_fd, EPOLLIN, on_wake, f);

        pthread_mutex_lock(&f->lock);
        f->ready = true;
        f->start_error = r < 0 ? r : 0;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->lock);

        if (r >= 0)
                (void)sd_event_loop(f->event);
        f->gateway = gateway_free(f->gateway);
        f->event = sd_event_unref(f->event);
        return NULL;
}

/* Runs fn on the loop thread and waits for it: the gateway is not thread-safe. */
static void farm_call(struct farm *f, void (*fn)(struct farm *, void *), void *arg) {
        uint64_t one = 1;

        pthread_mutex_lock(&f->lock);
        f->call = fn;
        f->call_arg = arg;
        f->call_done = false;
        pthread_mutex_unlock(&f->lock);
        assert_int_equal(write(f->wake_fd, &one, sizeof(one)), sizeof(one));
        pthread_mutex_lock(&f->lock);
        while (!f->call_done)
                pthread_cond_wait(&f->cond, &f->lock);
        pthread_mutex_unlock(&f->lock);
}

static void call_get_stats(struct farm *f, void *arg) {
        gateway_get_stats(f->gateway, arg);
}

static struct gateway_stats farm_stats(struct farm *f) {
        struct gateway_stats s;

        farm_call(f, call_get_stats, &s);
        return s;
}

/* Polls the stats (on the loop thread) until pred holds or ms pass. */
static bool farm_wait(struct farm *f, bool (*pred)(const struct gateway_stats *s, uint64_t arg),
                      uint64_t arg, int ms) {
        usec_t deadline = now_usec() + (usec_t)ms * USEC_PER_MSEC;

        for (;;) {
                struct gateway_stats s = farm_stats(f);
                struct timespec ts = {.tv_nsec = 2 * 1000 * 1000};

                if (pred(&s, arg))
                        return true;
                if (now_usec() >= deadline)
                        return false;
                nanosleep(&ts, NULL);
        }
}

static bool active_is(const struct gateway_stats *s, uint64_t n) {
        return s->active == n;
}

static void call_decide_calls(struct farm *f, void *arg) {
        *(unsigned *)arg = f->decide_calls;
}

static unsigned farm_decide_calls(struct farm *f) {
        unsigned n;

        farm_call(f, call_decide_calls, &n);
        return n;
}

static void call_exit(struct farm *f, void *arg) {
        sd_event_exit(f->event, 0);
}

static int farm_setup(void **state) {
        const struct farm_opts *opts = *state;
        struct farm *f = calloc(1, sizeof(*f));
        struct sockaddr_in a;
        int fd;

        assert_non_null(f);
        if (opts)
                f->opts = *opts;
        pthread_mutex_init(&f->lock, NULL);
        pthread_cond_init(&f->cond, NULL);
        f->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        assert_true(f->wake_fd >= 0);

        f->backend_fd[BACKEND_LOCAL] = listen_on_loopback(64, &f->backend[BACKEND_LOCAL]);
        f->backend_fd[BACKEND_PEER] = listen_on_loopback(64, &f->backend[BACKEND_PEER]);
        /* Backlog 0 and one connection waiting: SYNs to it are dropped. */
        f->backend_fd[BACKEND_STUCK] = listen_on_loopback(0, &f->backend[BACKEND_STUCK]);
        f->stuck_filler = connect_to(&f->backend[BACKEND_STUCK]);

        /* A port that was just free: connecting there is refused. */
        fd = listen_on_loopback(1, &a);
        close(fd);
        f->dead = a;

        assert_int_equal(pthread_create(&f->thread, NULL, farm_loop, f), 0);
        pthread_mutex_lock(&f->lock);
        while (!f->ready)
                pthread_cond_wait(&f->cond, &f->lock);
        pthread_mutex_unlock(&f->lock);
        assert_int_equal(f->start_error, 0);
        *state = f;
        return 0;
}

static int farm_teardown(void **state) {
        struct farm *f = *state;

        farm_call(f, call_exit, NULL);
        pthread_join(f->thread, NULL);
        for (int i = 0; i < _BACKEND_MAX; i++)
                close(f->backend_fd[i]);
        close(f->stuck_filler);
        close(f->wake_fd);
        pthread_mutex_destroy(&f->lock);
        pthread_cond_destroy(&f->cond);
        free(f);
        return 0;
}

/* A client connected through the gateway to a backend, the first PDU
 * (cookie `line`) checked on arrival. */
struct leg_pair {
        int client;
        int backend;
};

static struct leg_pair open_relayed(struct farm *f, const char *line, int backend) {
        uint8_t pdu[300], got[300];
        size_t n = make_cr(pdu, sizeof(pdu), line);
        struct leg_pair p;

        p.client = connect_to(&f->gateway_addr);
        write_all(p.client, pdu, n);
        p.backend = accept_within(f->backend_fd[backend], 2000);
        assert_true(p.backend >= 0);
        assert_int_equal(read_within(p.backend, got, n, 2000), n);
        assert_memory_equal(got, pdu, n);
        return p;
}

static void close_pair(struct leg_pair *p) {
        close(p->client);
        close(p->backend);
}

/* Sends a few bytes each way and checks they arrive. */
static void ping_pong(const struct leg_pair *p) {
        char buf[16];

        write_all(p->client, "ping", 4);
        assert_int_equal(read_within(p->backend, buf, 4, 2000), 4);
        assert_memory_equal(buf, "ping", 4);
        write_all(p->backend, "pong", 4);
        assert_int_equal(read_within(p->client, buf, 4, 2000), 4);
        assert_memory_equal(buf, "pong", 4);
}

/* Nothing must be waiting on a backend's listening socket. */
static void assert_no_backend_connection(struct farm *f) {
        for (int i = BACKEND_LOCAL; i <= BACKEND_PEER; i++) {
                int fd = accept_within(f->backend_fd[i], 0);

                if (fd >= 0)
                        close(fd);
                assert_true(fd < 0);
        }
}

/* ---- log capture -------------------------------------------------------------------------------- */

static int saved_stderr = -1, capture_fd = -1;

static void log_capture_begin(void) {
        fflush(stderr);
        capture_fd = memfd_create("log", MFD_CLOEXEC);
        assert_true(capture_fd >= 0);
        saved_stderr = dup(STDERR_FILENO);
        assert_true(dup2(capture_fd, STDERR_FILENO) >= 0);
}

/* Returns what was logged meanwhile (malloc'd). */
static char *log_capture_end(void) {
        off_t size;
        char *s;

        fflush(stderr);
        assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
        close(saved_stderr);
        size = lseek(capture_fd, 0, SEEK_END);
        s = calloc(1, (size_t)size + 1);
        assert_non_null(s);
        assert_int_equal(pread(capture_fd, s, (size_t)size, 0), size);
        close(capture_fd);
        fprintf(stderr, "%s", s); /* still visible when a test fails */
        return s;
}

/* ---- routing and replay -------------------------------------------------------------------------- */

struct conn_seen {
        unsigned n;
        struct gateway_conn_info info;
        char user[GATEWAY_USER_KEY_MAX];
};

static int collect_conn(const struct gateway_conn_info *info, void *userdata) {
        struct conn_seen *seen = userdata;

        seen->n++;
        seen->info = *info;
        snprintf(seen->user, sizeof(seen->user), "%s", info->user_key);
        seen->info.user_key = NULL;
        return 0;
}

static void call_foreach(struct farm *f, void *arg) {
        assert_int_equal(gateway_foreach_conn(f->gateway, collect_conn, arg), 0);
}

static void test_real_client_pdu_replayed_exactly(void **state) {
        struct farm *f = *state;
        uint8_t pdu[128], sent[256], got[256];
        const char extra[] = "bytes the client sent right after its first PDU";
        size_t n = unhex(freerdp_tls_hex, pdu, sizeof(pdu));
        struct conn_seen seen = {};
        struct leg_pair p;
        struct gateway_stats s;

        /* The PDU and more in one segment: all of it reaches the backend, in order. */
        memcpy(sent, pdu, n);
        memcpy(sent + n, extra, sizeof(extra));
        p.client = connect_to(&f->gateway_addr);
        write_all(p.client, sent, n + sizeof(extra));
        p.backend = accept_within(f->backend_fd[BACKEND_LOCAL], 2000);
        assert_true(p.backend >= 0);
        assert_int_equal(read_within(p.backend, got, n + sizeof(extra), 2000), n + sizeof(extra));
        assert_memory_equal(got, sent, n + sizeof(extra));
        ping_pong(&p);
        assert_no_backend_connection(f);

        farm_call(f, call_foreach, &seen);
        assert_int_equal(seen.n, 1);
        assert_int_equal(seen.info.state, GATEWAY_CONN_RELAYING);
        assert_int_equal(seen.info.verdict, GATEWAY_LOCAL);
        assert_string_equal(seen.user, "rdpuser1");
        assert_int_equal(seen.info.backend.sin_port, f->backend[BACKEND_LOCAL].sin_port);
        assert_int_equal(seen.info.bytes_to_backend, n + sizeof(extra) + 4);
        assert_int_equal(seen.info.bytes_to_client, 4);
        assert_int_equal(seen.info.local.sin_port, f->gateway_addr.sin_port);

        s = farm_stats(f);
        assert_int_equal(s.accepted, 1);
        assert_int_equal(s.relayed, 1);
        assert_int_equal(s.relayed_local, 1);
        assert_int_equal(s.active_relays, 1);
        close_pair(&p);
        assert_true(farm_wait(f, active_is, 0, 2000));
        s = farm_stats(f);
        assert_int_equal(s.ended_closed, 1);
        assert_int_equal(s.bytes_to_backend, n + sizeof(extra) + 4);
        assert_int_equal(s.bytes_to_client, 4);
}

static void test_pdu_in_pieces_routed_to_peer(void **state) {
        struct farm *f = *state;
        uint8_t pdu[300], got[300];
        size_t n = make_cr(pdu, sizeof(pdu), "Cookie: mstshash=bob");
        struct timespec pause = {.tv_nsec = 20 * 1000 * 1000};
        int client, backend;

        /* Byte by byte at first: every NEED_MORE must keep reading. */
        client = connect_to(&f->gateway_addr);
        for (size_t i = 0; i < 12; i++) {
                write_all(client, pdu + i, 1);
                nanosleep(&pause, NULL);
        }
        write_all(client, pdu + 12, n - 12);
        backend = accept_within(f->backend_fd[BACKEND_PEER], 2000);
        assert_true(backend >= 0);
        assert_int_equal(read_within(backend, got, n, 2000), n);
        assert_memory_equal(got, pdu, n);
        assert_no_backend_connection(f);
        assert_int_equal(farm_stats(f).relayed_peer, 1);
        close(client);
        close(backend);
}

static void test_preconnection_pdu_replayed(void **state) {
        struct farm *f = *state;
        uint8_t sent[400], got[400];
        const char *id = "alice";
        size_t cch = strlen(id) + 1, pcb = TSF_PCB_V2_HEADER_SIZE + 2 * cch, n;
        int client, backend;

        /* RDP_PRECONNECTION_PDU_V2 (cbSize, Flags, Version, Id, cchPCB, wszPCB) then the CR. */
        memset(sent, 0, sizeof(sent));
        put_le32(sent, (uint32_t)pcb);
        put_le32(sent + 8, 2);
        put_le32(sent + 12, 42);
        put_le16(sent + 16, (uint16_t)cch);
        for (size_t i = 0; id[i]; i++)
                sent[18 + 2 * i] = (uint8_t)id[i];
        n = pcb + make_cr(sent + pcb, sizeof(sent) - pcb, "Cookie: mstshash=alice");

        client = connect_to(&f->gateway_addr);
        write_all(client, sent, n);
        backend = accept_within(f->backend_fd[BACKEND_LOCAL], 2000);
        assert_true(backend >= 0);
        assert_int_equal(read_within(backend, got, n, 2000), n);
        assert_memory_equal(got, sent, n);
        close(client);
        close(backend);
}

static void test_routing_token_to_farm_node(void **state) {
        struct farm *f = *state;
        char token[64], line[96];
        struct leg_pair p;

        assert_true(tsf_routing_token_format(f->backend[BACKEND_PEER].sin_addr.s_addr,
                                             ntohs(f->backend[BACKEND_PEER].sin_port), token,
                                             sizeof(token)) > 0);
        snprintf(line, sizeof(line), "Cookie: msts=%s", token);
        p = open_relayed(f, line, BACKEND_PEER);
        ping_pong(&p);
        close_pair(&p);
}

static void test_routing_token_elsewhere_refused(void **state) {
        struct farm *f = *state;
        uint8_t pdu[300];
        char token[64], line[96], *log;
        size_t n;
        int client;

        /* 192.0.2.1:3389 is no farm node: relaying there would be an open relay. */
        assert_true(tsf_routing_token_format(htonl(0xC0000201), 3389, token, sizeof(token)) > 0);
        snprintf(line, sizeof(line), "Cookie: msts=%s", token);
        n = make_cr(pdu, sizeof(pdu), line);

        log_capture_begin();
        client = connect_to(&f->gateway_addr);
        write_all(client, pdu, n);
        assert_int_equal(wait_closed(client, 2000), 0);
        log = log_capture_end();
        assert_non_null(strstr(log, "routing token names a non-farm address"));
        free(log);
        assert_no_backend_connection(f);
        assert_int_equal(farm_stats(f).refused_decision, 1);
        close(client);
}

static void test_refused_by_policy(void **state) {
        struct farm *f = *state;
        uint8_t pdu[300];
        size_t n = make_cr(pdu, sizeof(pdu), "Cookie: mstshash=mallory");
        int client;
        struct gateway_stats s;

        client = connect_to(&f->gateway_addr);
        write_all(client, pdu, n);
        assert_int_equal(wait_closed(client, 2000), 0);
        assert_no_backend_connection(f);
        s = farm_stats(f);
        assert_int_equal(s.refused_decision, 1);
        assert_int_equal(s.relayed, 0);
        close(client);

        /* decide() failing refuses too. */
        n = make_cr(pdu, sizeof(pdu), "Cookie: mstshash=broken");
        client = connect_to(&f->gateway_addr);
        write_all(client, pdu, n);
        assert_int_equal(wait_closed(client, 2000), 0);
        assert_int_equal(farm_stats(f).refused_error, 1);
        close(client);
}

/* ---- bad clients -------------------------------------------------------------------------------- */

static void test_silent_client_closed_at_deadline(void **state) {
        struct farm *f = *state;
        usec_t t0, elapsed;
        char *log;
        int client;

        log_capture_begin();
        t0 = now_usec();
        client = connect_to(&f->gateway_addr);
        assert_int_equal(wait_closed(client, 3000), 0);
        elapsed = now_usec() - t0;
        log = log_capture_end();

        /* Deadline 200 ms: not before, and not much after. */
        assert_true(elapsed >= 200 * USEC_PER_MSEC);
        assert_true(elapsed < 1200 * USEC_PER_MSEC);
        assert_non_null(strstr(log, "no complete first PDU within 0.2s (0 bytes received)"));
        free(log);
        assert_int_equal(farm_stats(f).refused_timeout, 1);
        assert_int_equal(farm_stats(f).active, 0);
        close(client);
}

static void test_partial_pdu_closed_at_deadline(void **state) {
        struct farm *f = *state;
        uint8_t pdu[300];
        size_t n = make_cr(pdu, sizeof(pdu), "Cookie: mstshash=alice");
        usec_t t0, elapsed;
        int client;

        t0 = now_usec();
        client = connect_to(&f->gateway_addr);
        write_all(client, pdu, n / 2);
        assert_int_equal(wait_closed(client, 3000), 0);
        elapsed = now_usec() - t0;
        assert_true(elapsed >= 200 * USEC_PER_MSEC);
        assert_true(elapsed < 1200 * USEC_PER_MSEC);
        assert_int_equal(farm_stats(f).refused_timeout, 1);
        assert_int_equal(farm_decide_calls(f), 0);
        close(client);
}

static void test_oversize_first_pdu_refused(void **state) {
        struct farm *f = *state;
        uint8_t pdu[300];
        char line[160], *log;
        size_t n;
        int client, r;
        struct leg_pair p;

        /* first_pdu_max is 64 here: a valid CR of 130 bytes is too much. */
        snprintf(line, sizeof(line), "Cookie: mstshash=%0100d", 7);
        n = make_cr(pdu, sizeof(pdu), line);
        assert_true(n > 64);
        log_capture_begin();
        client = connect_to(&f->gateway_addr);
        write_all(client, pdu, n);
        r = wait_closed(client, 2000);
        log = log_capture_end();
        /* Unread bytes make the close a RST; either way it is closed. */
        assert_true(r == 0 || r == -ECONNRESET);
        assert_non_null(strstr(log, "no complete first PDU in 64 bytes"));
        free(log);
        assert_int_equal(farm_stats(f).refused_oversize, 1);
        assert_no_backend_connection(f);
        close(client);

        /* A PDU under the cap still goes through. */
        p = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        ping_pong(&p);
        close_pair(&p);
}

static void test_garbage_refused_with_reason(void **state) {
        struct farm *f = *state;
        const char http[] = "GET / HTTP/1.1\r\nHost: farm\r\n\r\n";
        const uint8_t huge_tpkt[] = {0x03, 0x00, 0xff, 0xff, 0x10, 0xe0, 0x00, 0x00};
        struct sockaddr_in me;
        socklen_t len = sizeof(me);
        char who[128], *log;
        int client, r;

        log_capture_begin();
        client = connect_to(&f->gateway_addr);
        assert_int_equal(getsockname(client, (struct sockaddr *)&me, &len), 0);
        write_all(client, http, strlen(http));
        r = wait_closed(client, 2000);
        assert_true(r == 0 || r == -ECONNRESET);
        close(client);

        client = connect_to(&f->gateway_addr);
        write_all(client, huge_tpkt, sizeof(huge_tpkt));
        r = wait_closed(client, 2000);
        assert_true(r == 0 || r == -ECONNRESET);
        close(client);
        log = log_capture_end();

        /* The reason names the client, the parser's error id and the offset.
         * "GET" does not start with a TPKT version byte, so the parser reads
         * it as a Preconnection PDU's cbSize, an impossible one. */
        snprintf(who, sizeof(who), "Refusing 127.0.0.1:%u: invalid first PDU: pcb-size at offset 0",
                 ntohs(me.sin_port));
        assert_non_null(strstr(log, who));
        assert_non_null(strstr(log, "invalid first PDU: tpkt-length at offset 2"));
        free(log);
        assert_int_equal(farm_stats(f).refused_invalid, 2);
        assert_int_equal(farm_decide_calls(f), 0);
        assert_no_backend_connection(f);
}

static bool refused_eof_is(const struct gateway_stats *s, uint64_t n) {
        return s->refused_eof == n && s->active == 0;
}

static void test_client_leaves_before_first_pdu(void **state) {
        struct farm *f = *state;
        int client;

        /* A health check: connect and leave. */
        client = connect_to(&f->gateway_addr);
        close(client);
        assert_true(farm_wait(f, refused_eof_is, 1, 2000));

        /* Three bytes of a PDU, then gone. */
        client = connect_to(&f->gateway_addr);
        write_all(client, "\x03\x00\x00", 3);
        close(client);
        assert_true(farm_wait(f, refused_eof_is, 2, 2000));
        assert_int_equal(farm_decide_calls(f), 0);
}

/* ---- backends that fail ------------------------------------------------------------------------- */

static void test_backend_refuses_connection(void **state) {
        struct farm *f = *state;
        uint8_t pdu[300];
        size_t n = make_cr(pdu, sizeof(pdu), "Cookie: mstshash=dead");
        char *log;
        int client;

        log_capture_begin();
        client = connect_to(&f->gateway_addr);
        write_all(client, pdu, n);
        assert_int_equal(wait_closed(client, 2000), 0);
        log = log_capture_end();
        assert_non_null(strstr(log, "is unreachable: Connection refused"));
        free(log);
        assert_int_equal(farm_stats(f).backend_failed, 1);
        assert_int_equal(farm_stats(f).relayed, 0);
        close(client);
}

static void test_backend_connect_timeout(void **state) {
        struct farm *f = *state;
        uint8_t pdu[300];
        size_t n = make_cr(pdu, sizeof(pdu), "Cookie: mstshash=stuck");
        usec_t t0, elapsed;
        int client;

        client = connect_to(&f->gateway_addr);
        t0 = now_usec();
        write_all(client, pdu, n);
        assert_int_equal(wait_closed(client, 3000), 0);
        elapsed = now_usec() - t0;
        /* connect_timeout is 300 ms. */
        assert_true(elapsed >= 300 * USEC_PER_MSEC);
        assert_true(elapsed < 1300 * USEC_PER_MSEC);
        assert_int_equal(farm_stats(f).backend_failed, 1);
        close(client);
}

/* ---- decisions that come later ------------------------------------------------------------------ */

struct completion {
        struct gateway_decision d;
        int r;
};

static void call_complete(struct farm *f, void *arg) {
        struct completion *c = arg;

        c->r = gateway_complete_decision(f->gateway, f->later_id, &c->d);
}

static bool decided_later(struct farm *f) {
        usec_t deadline = now_usec() + 2 * USEC_PER_SEC;

        while (now_usec() < deadline) {
                struct timespec ts = {.tv_nsec = 2 * 1000 * 1000};

                if (farm_decide_calls(f) > 0)
                        return true;
                nanosleep(&ts, NULL);
        }
        return false;
}

static void test_decision_later(void **state) {
        struct farm *f = *state;
        uint8_t pdu[300], got[300];
        size_t n = make_cr(pdu, sizeof(pdu), "Cookie: mstshash=later");
        struct completion c = {.d = {.verdict = GATEWAY_PEER}};
        struct conn_seen seen = {};
        struct leg_pair p;

        p.client = connect_to(&f->gateway_addr);
        write_all(p.client, pdu, n);
        assert_true(decided_later(f));
        farm_call(f, call_foreach, &seen);
        assert_int_equal(seen.info.state, GATEWAY_CONN_DECIDING);

        c.d.backend = f->backend[BACKEND_PEER];
        snprintf(c.d.user_key, sizeof(c.d.user_key), "later");
        snprintf(c.d.reason, sizeof(c.d.reason), "the directory says peer");
        farm_call(f, call_complete, &c);
        assert_int_equal(c.r, 0);
        p.backend = accept_within(f->backend_fd[BACKEND_PEER], 2000);
        assert_true(p.backend >= 0);
        assert_int_equal(read_within(p.backend, got, n, 2000), n);
        assert_memory_equal(got, pdu, n);
        ping_pong(&p);
        /* Answering twice is refused. */
        farm_call(f, call_complete, &c);
        assert_int_equal(c.r, -EBUSY);
        close_pair(&p);
}

static void test_decision_never_comes(void **state) {
        struct farm *f = *state;
        uint8_t pdu[300];
        size_t n = make_cr(pdu, sizeof(pdu), "Cookie: mstshash=later");
        struct completion c = {.d = {.verdict = GATEWAY_LOCAL}};
        usec_t t0, elapsed;
        int client;

        client = connect_to(&f->gateway_addr);
        t0 = now_usec();
        write_all(client, pdu, n);
        assert_int_equal(wait_closed(client, 3000), 0);
        elapsed = now_usec() - t0;
        /* decide_timeout is 300 ms. */
        assert_true(elapsed >= 300 * USEC_PER_MSEC);
        assert_true(elapsed < 1300 * USEC_PER_MSEC);
        assert_int_equal(farm_stats(f).refused_error, 1);

        c.d.backend = f->backend[BACKEND_LOCAL];
        farm_call(f, call_complete, &c);
        assert_int_equal(c.r, -ESRCH);
        assert_no_backend_connection(f);
        close(client);
}

static void test_max_connections(void **state) {
        struct farm *f = *state;
        int c1, c2, c3;
        usec_t t0;

        /* max_connections is 2 and the first-PDU deadline 5 s here. */
        c1 = connect_to(&f->gateway_addr);
        c2 = connect_to(&f->gateway_addr);
        assert_true(farm_wait(f, active_is, 2, 2000));
        t0 = now_usec();
        c3 = connect_to(&f->gateway_addr);
        assert_int_equal(wait_closed(c3, 2000), 0);
        assert_true(now_usec() - t0 < USEC_PER_SEC);
        assert_int_equal(farm_stats(f).refused_full, 1);
        assert_int_equal(farm_stats(f).active, 2);
        close(c1);
        close(c2);
        close(c3);
}

/* ---- the relay: bulk data, half-close, resets --------------------------------------------------- */

#define PATTERN_PERIOD 1000003u /* prime: a lost, doubled or misplaced chunk cannot line up again */
#define STREAM_CHUNK (256u * 1024)

static uint8_t *pattern_new(uint32_t seed) {
        uint8_t *p = malloc(2 * PATTERN_PERIOD);
        uint32_t x = seed;

        assert_non_null(p);
        for (size_t i = 0; i < PATTERN_PERIOD; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                p[i] = (uint8_t)x;
        }
        memcpy(p + PATTERN_PERIOD, p, PATTERN_PERIOD);
        return p;
}

struct stream {
        int fd;
        bool writer;
        uint64_t size; /* writer: bytes to send, then SHUT_WR; reader: until EOF */
        const uint8_t *pattern;
        pthread_t thread;
        uint64_t done;
        int error; /* errno, or -1 for a byte that differs from the pattern */
};

static void *stream_run(void *arg) {
        struct stream *s = arg;
        uint8_t *buf = s->writer ? NULL : malloc(STREAM_CHUNK);

        if (s->writer) {
                while (s->done < s->size) {
                        size_t chunk = (size_t)MIN((uint64_t)STREAM_CHUNK, s->size - s->done);
                        ssize_t n = send(s->fd, s->pattern + s->done % PATTERN_PERIOD, chunk, MSG_NOSIGNAL);

                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0) {
                                s->error = errno;
                                return NULL;
                        }
                        s->done += (uint64_t)n;
                }
                if (shutdown(s->fd, SHUT_WR) < 0)
                        s->error = errno;
                return NULL;
        }

        for (;;) {
                ssize_t n = recv(s->fd, buf, STREAM_CHUNK, 0);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        s->error = errno;
                        break;
                }
                if (n == 0)
                        break;
                if (memcmp(buf, s->pattern + s->done % PATTERN_PERIOD, (size_t)n) != 0) {
                        s->error = -1;
                        break;
                }
                s->done += (uint64_t)n;
        }
        free(buf);
        return NULL;
}

static void stream_start(struct stream *s) {
        assert_int_equal(pthread_create(&s->thread, NULL, stream_run, s), 0);
}

static void stream_join(struct stream *s, int seconds) {
        struct timespec deadline;

        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += seconds;
        assert_int_equal(pthread_timedjoin_np(s->thread, NULL, &deadline), 0);
}

static uint64_t bulk_size(void) {
        const char *e = getenv("TSFARM_GATEWAY_TEST_MIB");
        uint64_t mib = 1024;

        if (e && *e)
                mib = strtoull(e, NULL, 10);
        return (mib ?: 1) * 1024 * 1024;
}

static bool closed_is(const struct gateway_stats *s, uint64_t n) {
        return s->ended_closed == n && s->active == 0;
}

static void test_bulk_both_ways_intact(void **state) {
        struct farm *f = *state;
        uint64_t size = bulk_size();
        uint8_t *up = pattern_new(0x12345678), *down = pattern_new(0x9abcdef0);
        struct leg_pair p = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        struct stream s[4] = {
                {.fd = p.client, .writer = true, .size = size, .pattern = up},
                {.fd = p.backend, .writer = false, .pattern = up},
                {.fd = p.backend, .writer = true, .size = size, .pattern = down},
                {.fd = p.client, .writer = false, .pattern = down},
        };
        struct gateway_stats st;
        usec_t t0, elapsed;

        t0 = now_usec();
        for (int i = 0; i < 4; i++)
                stream_start(&s[i]);
        for (int i = 0; i < 4; i++)
                stream_join(&s[i], 300);
        elapsed = now_usec() - t0;
        for (int i = 0; i < 4; i++) {
                assert_int_equal(s[i].error, 0);
                assert_int_equal(s[i].done, size);
        }
        print_message(
                "    %" PRIu64 " MiB each way, both at once, through the gateway: %.2f s (%.0f MiB/s per "
                "direction)\n",
                size >> 20, (double)elapsed / USEC_PER_SEC, (double)(size >> 20) * USEC_PER_SEC / elapsed);

        /* Both sides said EOF: the relay ends cleanly, every byte counted. */
        assert_true(farm_wait(f, closed_is, 1, 5000));
        st = farm_stats(f);
        assert_int_equal(st.bytes_to_backend,
                         size + make_cr((uint8_t[300]){}, 300, "Cookie: mstshash=alice"));
        assert_int_equal(st.bytes_to_client, size);
        assert_true(st.buffered_peak <= 2 * RELAY_BUFFER_SIZE_DEFAULT);
        assert_int_equal(st.ended_reset_client + st.ended_reset_backend, 0);
        close_pair(&p);
        free(up);
        free(down);
}

/* One side is done sending: the other reads the rest, then EOF, and can
 * still answer in full until it is done too. */
static void half_close_case(struct farm *f, bool from_client, unsigned seed) {
        uint8_t *pattern = pattern_new(seed);
        struct leg_pair p = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        int closer = from_client ? p.client : p.backend, other = from_client ? p.backend : p.client;
        const char *words = from_client ? "last words" : "goodbye";
        size_t n = strlen(words);
        struct stream w = {.fd = other, .writer = true, .size = 4 << 20, .pattern = pattern};
        struct stream r = {.fd = closer, .writer = false, .pattern = pattern};
        char buf[16];

        write_all(closer, words, n);
        assert_int_equal(shutdown(closer, SHUT_WR), 0);
        assert_int_equal(read_within(other, buf, n, 2000), n);
        assert_memory_equal(buf, words, n);
        assert_int_equal(wait_closed(other, 2000), 0);

        stream_start(&w);
        stream_run(&r);
        stream_join(&w, 60);
        assert_int_equal(w.error, 0);
        assert_int_equal(r.error, 0);
        assert_int_equal(r.done, 4 << 20);
        assert_true(farm_wait(f, closed_is, 1, 2000));
        close_pair(&p);
        free(pattern);
}

static void test_half_close_from_client(void **state) {
        half_close_case(*state, true, 7);
}

static void test_half_close_from_backend(void **state) {
        half_close_case(*state, false, 11);
}

static bool reset_seen(const struct gateway_stats *s, uint64_t which) {
        return (which == RELAY_SIDE_A ? s->ended_reset_client : s->ended_reset_backend) == 1 &&
               s->active == 0;
}

static void test_reset_from_backend(void **state) {
        struct farm *f = *state;
        struct leg_pair p = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        char buf[4];

        ping_pong(&p);
        /* What the backend sent before its RST still arrives, then the RST. */
        write_all(p.backend, "bye", 3);
        set_reset_on_close(p.backend);
        close(p.backend);
        assert_int_equal(read_within(p.client, buf, 3, 2000), 3);
        assert_memory_equal(buf, "bye", 3);
        assert_int_equal(wait_closed(p.client, 2000), -ECONNRESET);
        assert_true(farm_wait(f, reset_seen, RELAY_SIDE_B, 2000));
        close(p.client);
}

static void test_reset_from_client(void **state) {
        struct farm *f = *state;
        struct leg_pair p = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);

        ping_pong(&p);
        set_reset_on_close(p.client);
        close(p.client);
        assert_int_equal(wait_closed(p.backend, 2000), -ECONNRESET);
        assert_true(farm_wait(f, reset_seen, RELAY_SIDE_A, 2000));
        close(p.backend);
}

static void test_backend_closes_while_client_sends(void **state) {
        struct farm *f = *state;
        struct leg_pair p = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        uint8_t junk[4096] = {};
        usec_t deadline;
        int r = -ETIMEDOUT;

        /* The backend closes for good; the client keeps talking. As on a direct
         * connection, that ends in a reset (after the client saw EOF). */
        close(p.backend);
        assert_int_equal(wait_closed(p.client, 2000), 0);
        deadline = now_usec() + 2 * USEC_PER_SEC;
        while (now_usec() < deadline) {
                struct pollfd pfd = {.fd = p.client, .events = POLLIN};

                if (send(p.client, junk, sizeof(junk), MSG_NOSIGNAL) < 0) {
                        r = -errno;
                        break;
                }
                (void)poll(&pfd, 1, 10);
        }
        assert_true(r == -EPIPE || r == -ECONNRESET);
        assert_true(farm_wait(f, active_is, 0, 2000));
        close(p.client);
}

static uint64_t thread_cpu_usec(pthread_t t) {
        clockid_t cid;
        struct timespec ts;

        assert_int_equal(pthread_getcpuclockid(t, &cid), 0);
        assert_int_equal(clock_gettime(cid, &ts), 0);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

static void test_backpressure_bounds_buffers(void **state) {
        struct farm *f = *state;
        const size_t bufsize = 64 * 1024; /* this test's buffer_size */
        uint8_t *up = pattern_new(0x5eed);
        struct leg_pair p = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        uint64_t written = 0, cpu0, cpu1;
        usec_t last_progress = now_usec(), deadline = now_usec() + 20 * USEC_PER_SEC;
        struct timespec window = {.tv_nsec = 300 * 1000 * 1000};
        struct gateway_stats st;
        uint8_t *buf;
        char msg[16];

        /* The backend reads nothing: the client must be stopped, not buffered. */
        while (now_usec() < deadline) {
                struct pollfd pfd = {.fd = p.client, .events = POLLOUT};
                ssize_t n = send(p.client, up + written % PATTERN_PERIOD, STREAM_CHUNK,
                                 MSG_DONTWAIT | MSG_NOSIGNAL);

                if (n > 0) {
                        written += (uint64_t)n;
                        last_progress = now_usec();
                        continue;
                }
                assert_true(n < 0 && (errno == EAGAIN || errno == EINTR));
                if (now_usec() - last_progress > 300 * USEC_PER_MSEC)
                        break;
                (void)poll(&pfd, 1, 50);
        }
        assert_true(now_usec() < deadline);
        print_message("    client stalled after %" PRIu64
                      " KiB (kernel socket buffers + %zu KiB in the gateway)\n",
                      written >> 10, bufsize >> 10);
        /* Kernel buffers on four sockets, autotuned, plus ours: tens of MiB
         * at most. Without backpressure it would not stall at all. */
        assert_true(written < 64 * 1024 * 1024);

        st = farm_stats(f);
        assert_true(st.buffered >= bufsize); /* the client->backend ring is full ... */
        assert_true(st.buffered <= 2 * bufsize);
        assert_true(st.buffered_peak <= 2 * bufsize);

        /* ... and the gateway waits instead of spinning. */
        cpu0 = thread_cpu_usec(f->thread);
        nanosleep(&window, NULL);
        cpu1 = thread_cpu_usec(f->thread);
        assert_true(cpu1 - cpu0 < 50 * USEC_PER_MSEC);

        /* The other direction still flows. */
        write_all(p.backend, "still here", 10);
        assert_int_equal(read_within(p.client, msg, 10, 2000), 10);
        assert_memory_equal(msg, "still here", 10);

        /* The reader wakes up and gets every byte, in order. */
        buf = malloc(written);
        assert_non_null(buf);
        assert_int_equal(read_within(p.backend, buf, written, 20000), written);
        for (uint64_t off = 0; off < written; off += STREAM_CHUNK) {
                size_t n = (size_t)MIN((uint64_t)STREAM_CHUNK, written - off);

                assert_memory_equal(buf + off, up + off % PATTERN_PERIOD, n);
        }
        st = farm_stats(f);
        assert_true(st.buffered_peak <= 2 * bufsize);
        free(buf);
        free(up);
        close_pair(&p);
}

/* ---- stale legs, forced logoff, idle, shutdown --------------------------------------------------- */

static void test_stale_leg_reset(void **state) {
        struct farm *f = *state;
        struct leg_pair old, bob, fresh, t1, t2;

        old = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        ping_pong(&old);
        bob = open_relayed(f, "Cookie: mstshash=bob", BACKEND_PEER);

        /* Alice again (her old link died without closing): the old server leg
         * goes at once, so the RDP server releases her session. */
        fresh = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        assert_int_equal(wait_closed(old.backend, 2000), -ECONNRESET);
        assert_int_equal(wait_closed(old.client, 2000), -ECONNRESET);
        ping_pong(&fresh);
        ping_pong(&bob);
        assert_int_equal(farm_stats(f).stale_closed, 1);
        assert_int_equal(farm_stats(f).active_relays, 2);

        /* A user allowed several sessions keeps them all. */
        t1 = open_relayed(f, "Cookie: mstshash=twice", BACKEND_LOCAL);
        t2 = open_relayed(f, "Cookie: mstshash=twice", BACKEND_LOCAL);
        ping_pong(&t1);
        ping_pong(&t2);
        assert_int_equal(farm_stats(f).stale_closed, 1);

        close_pair(&old);
        close_pair(&bob);
        close_pair(&fresh);
        close_pair(&t1);
        close_pair(&t2);
}

struct close_user {
        const char *user;
        int r;
};

static void call_close_user(struct farm *f, void *arg) {
        struct close_user *c = arg;

        c->r = gateway_close_user(f->gateway, c->user);
}

static void test_close_user(void **state) {
        struct farm *f = *state;
        struct leg_pair bob = open_relayed(f, "Cookie: mstshash=bob", BACKEND_PEER);
        struct leg_pair alice = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        struct close_user c = {.user = "bob"};

        farm_call(f, call_close_user, &c);
        assert_int_equal(c.r, 1);
        assert_int_equal(wait_closed(bob.backend, 2000), -ECONNRESET);
        assert_int_equal(wait_closed(bob.client, 2000), -ECONNRESET);
        ping_pong(&alice);
        assert_int_equal(farm_stats(f).user_closed, 1);

        c.user = "nobody";
        farm_call(f, call_close_user, &c);
        assert_int_equal(c.r, 0);
        c.user = "";
        farm_call(f, call_close_user, &c);
        assert_int_equal(c.r, -EINVAL);
        close_pair(&bob);
        close_pair(&alice);
}

static void test_idle_timeout(void **state) {
        struct farm *f = *state;
        struct leg_pair p = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        usec_t t0, elapsed;
        char buf[4];

        /* idle_timeout is 300 ms here; activity keeps the connection. */
        for (int i = 0; i < 4; i++) {
                struct timespec ts = {.tv_nsec = 150 * 1000 * 1000};

                nanosleep(&ts, NULL);
                ping_pong(&p);
        }
        t0 = now_usec();
        write_all(p.backend, "last", 4);
        assert_int_equal(read_within(p.client, buf, 4, 2000), 4);
        assert_int_equal(wait_closed(p.client, 3000), -ECONNRESET);
        elapsed = now_usec() - t0;
        assert_true(elapsed >= 300 * USEC_PER_MSEC);
        assert_true(elapsed < 1300 * USEC_PER_MSEC);
        assert_int_equal(wait_closed(p.backend, 2000), -ECONNRESET);
        assert_int_equal(farm_stats(f).ended_idle, 1);
        close_pair(&p);
}

static void test_gateway_free_resets_connections(void **state) {
        struct farm *f = *state;
        struct leg_pair p = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        int waiting = connect_to(&f->gateway_addr);

        assert_true(farm_wait(f, active_is, 2, 2000));
        /* The agent stops: relayed connections end with a reset, not a clean
         * EOF that would look like the peer finished. */
        farm_call(f, call_exit, NULL);
        pthread_join(f->thread, NULL);
        assert_int_equal(wait_closed(p.client, 2000), -ECONNRESET);
        assert_int_equal(wait_closed(p.backend, 2000), -ECONNRESET);
        assert_int_equal(wait_closed(waiting, 2000), -ECONNRESET);
        close_pair(&p);
        close(waiting);
        /* Let the teardown find a loop thread to stop. */
        f->ready = false;
        assert_int_equal(pthread_create(&f->thread, NULL, farm_loop, f), 0);
        pthread_mutex_lock(&f->lock);
        while (!f->ready)
                pthread_cond_wait(&f->cond, &f->lock);
        pthread_mutex_unlock(&f->lock);
}

static void test_backend_source_bound(void **state) {
        struct farm *f = *state;
        struct leg_pair p = open_relayed(f, "Cookie: mstshash=alice", BACKEND_LOCAL);
        struct sockaddr_in peer;
        socklen_t len = sizeof(peer);

        /* The agent's own connections come from the address sk_lookup lets
         * through, so they are not steered back into the gateway. */
        assert_int_equal(getpeername(p.backend, (struct sockaddr *)&peer, &len), 0);
        assert_int_equal(ntohl(peer.sin_addr.s_addr), 0x7f000002);
        ping_pong(&p);
        close_pair(&p);
}

/* ---- configuration ------------------------------------------------------------------------------ */

static int decide_nothing(void *userdata, const struct gateway_request *req, struct gateway_decision *out) {
        return 0;
}

static void test_config_rejected(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct gateway_config c;
        struct gateway *g = NULL;
        struct sockaddr_in busy;
        int fd;

        assert_int_equal(sd_event_new(&e), 0);
        gateway_config_init(&c);
        c.listen = loopback(0);
        assert_int_equal(gateway_new(e, &c, decide_nothing, NULL, &g), 0);
        assert_true(gateway_fd(g) >= 0);
        g = gateway_free(g);

        c.first_pdu_max = c.buffer_size + 1;
        assert_int_equal(gateway_new(e, &c, decide_nothing, NULL, &g), -EINVAL);
        gateway_config_init(&c);
        c.listen = loopback(0);
        c.buffer_size = 100;
        assert_int_equal(gateway_new(e, &c, decide_nothing, NULL, &g), -EINVAL);
        gateway_config_init(&c);
        c.listen = loopback(0);
        c.first_pdu_timeout = 0;
        assert_int_equal(gateway_new(e, &c, decide_nothing, NULL, &g), -EINVAL);
        gateway_config_init(&c);
        c.listen.sin_family = AF_INET6;
        assert_int_equal(gateway_new(e, &c, decide_nothing, NULL, &g), -EAFNOSUPPORT);
        gateway_config_init(&c);
        assert_int_equal(gateway_new(e, &c, NULL, NULL, &g), -EINVAL);

        fd = listen_on_loopback(1, &busy);
        c.listen = busy;
        assert_int_equal(gateway_new(e, &c, decide_nothing, NULL, &g), -EADDRINUSE);
        assert_null(g);
        close(fd);
}

/* ---- the relay on its own ----------------------------------------------------------------------- */

struct relay_done {
        sd_event *e;
        enum relay_end end;
        int calls;
};

static void on_relay_done(struct relay *r, enum relay_end end, enum relay_side side, int error,
                          void *userdata) {
        struct relay_done *d = userdata;

        d->end = end;
        d->calls++;
        sd_event_exit(d->e, 0);
}

static void test_relay_socketpairs_with_prefill(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(relay_freep) struct relay *r = NULL;
        struct relay_config c = {.buffer_size = RELAY_BUFFER_SIZE_MIN};
        struct relay_done done = {};
        int a[2], b[2];
        char buf[64];
        struct relay_info info;

        /* One thread: fill, shut down, then let the loop run to the end. */
        assert_int_equal(sd_event_new(&e), 0);
        done.e = e;
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, a), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, b), 0);
        assert_int_equal(relay_new(e, a[1], b[1], &c, "pre:", 4, on_relay_done, &done, &r), 0);
        assert_int_equal(relay_new(e, a[1], b[1], &c, buf, c.buffer_size + 1, on_relay_done, &done,
                                   &(struct relay *){NULL}),
                         -EINVAL);
        write_all(a[0], "up", 2);
        write_all(b[0], "down", 4);
        assert_int_equal(shutdown(a[0], SHUT_WR), 0);
        assert_int_equal(shutdown(b[0], SHUT_WR), 0);
        assert_int_equal(sd_event_loop(e), 0);
        assert_int_equal(done.calls, 1);
        assert_int_equal(done.end, RELAY_END_CLOSED);
        assert_true(relay_finished(r));
        relay_get_info(r, &info);
        assert_int_equal(info.bytes_out[RELAY_A_TO_B], 6);
        assert_int_equal(info.bytes_out[RELAY_B_TO_A], 4);
        assert_int_equal(relay_buffered(r), 0);

        assert_int_equal(read(b[0], buf, sizeof(buf)), 6);
        assert_memory_equal(buf, "pre:up", 6);
        assert_int_equal(read(b[0], buf, sizeof(buf)), 0);
        assert_int_equal(read(a[0], buf, sizeof(buf)), 4);
        assert_memory_equal(buf, "down", 4);
        assert_int_equal(read(a[0], buf, sizeof(buf)), 0);
        close(a[0]);
        close(b[0]);
        assert_string_equal(relay_end_to_string(RELAY_END_IDLE), "idle");
}

static void test_relay_hung_up_leg_does_not_spin(void **state) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(relay_freep) struct relay *r = NULL;
        struct relay_config c = {.buffer_size = RELAY_BUFFER_SIZE_MIN};
        struct relay_done done = {};
        uint64_t written = 0, got = 0;
        uint8_t buf[4096];
        int a[2], b[2], k, idle = 0;

        /* UNIX socket buffers do not grow on their own, so this is exact:
         * the backend has finished sending, the client sends until every
         * buffer is full and leaves; the relay's client leg then reports
         * EPOLLHUP (level-triggered) while it has nothing to do with it,
         * since its bytes wait for the backend. The loop must sleep. */
        assert_int_equal(sd_event_new(&e), 0);
        done.e = e;
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, a), 0);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, b), 0);
        assert_int_equal(relay_new(e, a[1], b[1], &c, NULL, 0, on_relay_done, &done, &r), 0);

        assert_int_equal(shutdown(b[0], SHUT_WR), 0);
        for (int stalls = 0; stalls < 3;) {
                ssize_t n = send(a[0], buf, sizeof(buf), MSG_DONTWAIT | MSG_NOSIGNAL);

                if (n > 0) {
                        written += (uint64_t)n;
                        stalls = 0;
                        continue;
                }
                assert_true(n < 0 && errno == EAGAIN);
                if (sd_event_run(e, 20 * 1000) == 0)
                        stalls++;
        }
        assert_int_equal(read(a[0], buf, sizeof(buf)), 0); /* the backend's EOF arrived */
        close(a[0]);

        for (int i = 0; i < 10 && idle < 3; i++) {
                k = sd_event_run(e, 20 * 1000);
                assert_true(k >= 0);
                idle = k == 0 ? idle + 1 : 0;
        }
        assert_int_equal(idle, 3);
        assert_int_equal(relay_buffered(r), RELAY_BUFFER_SIZE_MIN);
        assert_int_equal(done.calls, 0);

        /* The backend drains: every byte, then EOF, and a clean end. */
        for (;;) {
                ssize_t n = read(b[0], buf, sizeof(buf));

                if (n > 0) {
                        got += (uint64_t)n;
                        continue;
                }
                if (n == 0)
                        break;
                assert_true(errno == EAGAIN);
                assert_true(sd_event_run(e, 1000 * 1000) >= 0);
        }
        assert_int_equal(got, written);
        if (done.calls == 0)
                assert_true(sd_event_run(e, 1000 * 1000) >= 0);
        assert_int_equal(done.calls, 1);
        assert_int_equal(done.end, RELAY_END_CLOSED);
        close(b[0]);
}

/* ------------------------------------------------------------------------------------------------- */

static struct farm_opts defaults;
static struct farm_opts long_deadline = {.first_pdu_timeout = 5 * USEC_PER_SEC};
static struct farm_opts small_cap = {.first_pdu_max = 64};
static struct farm_opts two_max = {.max_connections = 2, .first_pdu_timeout = 5 * USEC_PER_SEC};
static struct farm_opts small_buffers = {.buffer_size = 64 * 1024};
static struct farm_opts bound_source = {.bind_source = true};
static struct farm_opts short_idle = {.idle_timeout = 300 * USEC_PER_MSEC};

#define farm_test(fn, opts) cmocka_unit_test_prestate_setup_teardown(fn, farm_setup, farm_teardown, &(opts))

int main(void) {
        const struct CMUnitTest tests[] = {
                farm_test(test_real_client_pdu_replayed_exactly, defaults),
                farm_test(test_pdu_in_pieces_routed_to_peer, long_deadline),
                farm_test(test_preconnection_pdu_replayed, defaults),
                farm_test(test_routing_token_to_farm_node, defaults),
                farm_test(test_routing_token_elsewhere_refused, defaults),
                farm_test(test_refused_by_policy, defaults),
                farm_test(test_silent_client_closed_at_deadline, defaults),
                farm_test(test_partial_pdu_closed_at_deadline, defaults),
                farm_test(test_oversize_first_pdu_refused, small_cap),
                farm_test(test_garbage_refused_with_reason, defaults),
                farm_test(test_client_leaves_before_first_pdu, defaults),
                farm_test(test_backend_refuses_connection, defaults),
                farm_test(test_backend_connect_timeout, defaults),
                farm_test(test_decision_later, defaults),
                farm_test(test_decision_never_comes, defaults),
                farm_test(test_max_connections, two_max),
                farm_test(test_bulk_both_ways_intact, defaults),
                farm_test(test_half_close_from_client, defaults),
                farm_test(test_half_close_from_backend, defaults),
                farm_test(test_reset_from_backend, defaults),
                farm_test(test_reset_from_client, defaults),
                farm_test(test_backend_closes_while_client_sends, defaults),
                farm_test(test_backpressure_bounds_buffers, small_buffers),
                farm_test(test_stale_leg_reset, defaults),
                farm_test(test_close_user, defaults),
                farm_test(test_idle_timeout, short_idle),
                farm_test(test_gateway_free_resets_connections, defaults),
                farm_test(test_backend_source_bound, bound_source),
                cmocka_unit_test(test_config_rejected),
                cmocka_unit_test(test_relay_socketpairs_with_prefill),
                cmocka_unit_test(test_relay_hung_up_leg_does_not_spin),
        };

        tsf_log_set_target(TSF_LOG_TARGET_STDERR);
        tsf_log_parse_environment();
        /* A peer that vanishes must be an EPIPE in the test, not a signal. */
        signal(SIGPIPE, SIG_IGN);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
