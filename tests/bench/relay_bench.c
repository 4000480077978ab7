/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the gateway's relay costs on loopback: bulk throughput one way and
 * both ways at once, CPU seconds the relay spends per GiB, and 64-byte
 * ping-pong latency, each against a direct connection. Figures, not
 * assertions (tests/unit/test_gateway.c checks correctness).
 *
 *   relay_bench [-s MIB] [-n PINGPONGS] [-c CPU] [-b BUFFER_KIB]
 *
 * -c pins every thread to one CPU, as NOTES-kernel.md measured; without it
 * the scheduler spreads sender, relay and receiver over the machine.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "agent/host/gateway.h"
#include "agent/host/relay.h"
#include "tsfarm/clock.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

#define CHUNK (256u * 1024)

static int pin_cpu = -1;

static void die(const char *what) {
        fprintf(stderr, "relay_bench: %s: %s\n", what, strerror(errno));
        exit(1);
}

static void pin_self(void) {
        cpu_set_t set;

        if (pin_cpu < 0)
                return;
        CPU_ZERO(&set);
        CPU_SET(pin_cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) < 0)
                die("sched_setaffinity");
}

static double now_sec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu_sec(pthread_t t) {
        clockid_t cid;
        struct timespec ts;

        if (pthread_getcpuclockid(t, &cid) != 0 || clock_gettime(cid, &ts) < 0)
                return 0;
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nodelay(int fd) {
        int one = 1;

        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- the gateway on its own thread ---- */

struct bench {
        sd_event *event;
        struct gateway *gateway;
        struct sockaddr_in gateway_addr, backend_addr;
        int backend_lfd, wake_fd;
        pthread_t thread;
        size_t buffer_size;
        volatile int ready;
};

static int decide_local(void *userdata, const struct gateway_request *req, struct gateway_decision *out) {
        struct bench *b = userdata;

        out->verdict = GATEWAY_LOCAL;
        out->backend = b->backend_addr;
        snprintf(out->reason, sizeof(out->reason), "bench");
        return 0;
}

static int on_wake(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        return sd_event_exit(userdata, 0);
}

static void *gateway_thread(void *arg) {
        struct bench *b = arg;
        struct gateway_config c;

        pin_self();
        gateway_config_init(&c);
        c.listen = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        c.idle_timeout = 0;
        if (b->buffer_size)
                c.buffer_size = b->buffer_size;
        if (sd_event_new(&b->event) < 0 || gateway_new(b->event, &c, decide_local, b, &b->gateway) < 0 ||
            gateway_get_address(b->gateway, &b->gateway_addr) < 0 ||
            sd_event_add_io(b->event, NULL, b->wake_fd, EPOLLIN, on_wake, b->event) < 0)
                die("gateway set-up");
        __atomic_store_n(&b->ready, 1, __ATOMIC_RELEASE);
        (void)sd_event_loop(b->event);
        b->gateway = gateway_free(b->gateway);
        b->event = sd_event_unref(b->event);
        return NULL;
}

static int connect_to(const struct sockaddr_in *a) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0 || connect(fd, (const struct sockaddr *)a, sizeof(*a)) < 0)
                die("connect");
        nodelay(fd);
        return fd;
}

/* A connected pair: direct (client to backend) or through the gateway. */
static void open_pair(struct bench *b, bool via_gateway, int *client, int *backend) {
        static const uint8_t cr[] = {0x03, 0x00, 0x00, 0x13, 0x0e, 0xe0, 0x00, 0x00, 0x00, 0x00,
                                     0x00, 0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00};
        uint8_t got[sizeof(cr)];
        size_t n = 0;

        *client = connect_to(via_gateway ? &b->gateway_addr : &b->backend_addr);
        if (via_gateway && write(*client, cr, sizeof(cr)) != (ssize_t)sizeof(cr))
                die("write first PDU");
        *backend = accept4(b->backend_lfd, NULL, NULL, SOCK_CLOEXEC);
        if (*backend < 0)
                die("accept");
        nodelay(*backend);
        while (via_gateway && n < sizeof(cr)) {
                ssize_t k = read(*backend, got + n, sizeof(cr) - n);

                if (k <= 0)
                        die("read replayed PDU");
                n += (size_t)k;
        }
}

/* ---- bulk ---- */

struct stream {
        int fd;
        bool writer;
        uint64_t size;
        uint64_t done;
};

static void *stream_run(void *arg) {
        struct stream *s = arg;
        uint8_t *buf = calloc(1, CHUNK);

        pin_self();
        if (!buf)
                die("calloc");
        if (s->writer) {
                while (s->done < s->size) {
                        ssize_t n = send(s->fd, buf, (size_t)MIN((uint64_t)CHUNK, s->size - s->done),
                                         MSG_NOSIGNAL);

                        if (n <= 0)
                                die("send");
                        s->done += (uint64_t)n;
                }
                shutdown(s->fd, SHUT_WR);
        } else
                for (;;) {
                        ssize_t n = read(s->fd, buf, CHUNK);

                        if (n < 0)
                                die("read");
                        if (n == 0)
                                break;
                        s->done += (uint64_t)n;
                }
        free(buf);
        return NULL;
}

struct result {
        double seconds;
        double relay_cpu;
};

static struct result bulk(struct bench *b, bool via_gateway, bool both_ways, uint64_t size) {
        struct stream s[4];
        pthread_t t[4];
        int client, backend, n = both_ways ? 4 : 2;
        double t0, cpu0, cpu1;
        struct result r;

        open_pair(b, via_gateway, &client, &backend);
        s[0] = (struct stream){.fd = client, .writer = true, .size = size};
        s[1] = (struct stream){.fd = backend};
        s[2] = (struct stream){.fd = backend, .writer = true, .size = size};
        s[3] = (struct stream){.fd = client};
        if (!both_ways)
                shutdown(backend, SHUT_WR);
        cpu0 = thread_cpu_sec(b->thread);
        t0 = now_sec();
        for (int i = 0; i < n; i++)
                if (pthread_create(&t[i], NULL, stream_run, &s[i]) != 0)
                        die("pthread_create");
        for (int i = 0; i < n; i++)
                pthread_join(t[i], NULL);
        r.seconds = now_sec() - t0;
        cpu1 = thread_cpu_sec(b->thread);
        r.relay_cpu = via_gateway ? cpu1 - cpu0 : 0;
        if (s[1].done != size || (both_ways && s[3].done != size)) {
                fprintf(stderr, "relay_bench: short transfer\n");
                exit(1);
        }
        close(client);
        close(backend);
        return r;
}

/* ---- ping-pong ---- */

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;

        return (x > y) - (x < y);
}

struct echo {
        int fd;
        unsigned count;
};

static void *echo_run(void *arg) {
        struct echo *e = arg;
        uint8_t buf[64];

        pin_self();
        for (unsigned i = 0; i < e->count; i++) {
                size_t got = 0;

                while (got < sizeof(buf)) {
                        ssize_t k = read(e->fd, buf + got, sizeof(buf) - got);

                        if (k <= 0)
                                die("echo read");
                        got += (size_t)k;
                }
                if (write(e->fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
                        die("echo write");
        }
        return NULL;
}

static void pingpong(struct bench *b, bool via_gateway, unsigned count, double *p50, double *p99) {
        double *lat = calloc(count, sizeof(double));
        uint8_t buf[64] = {};
        struct echo e;
        pthread_t t;
        int client, backend;

        if (!lat)
                die("calloc");
        open_pair(b, via_gateway, &client, &backend);
        e = (struct echo){.fd = backend, .count = count};
        if (pthread_create(&t, NULL, echo_run, &e) != 0)
                die("pthread_create");
        for (unsigned i = 0; i < count; i++) {
                double t0 = now_sec();
                size_t got = 0;

                if (write(client, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
                        die("ping write");
                while (got < sizeof(buf)) {
                        ssize_t k = read(client, buf + got, sizeof(buf) - got);

                        if (k <= 0)
                                die("ping read");
                        got += (size_t)k;
                }
                lat[i] = now_sec() - t0;
        }
        pthread_join(t, NULL);
        qsort(lat, count, sizeof(double), cmp_double);
        *p50 = lat[count / 2] * 1e6;
        *p99 = lat[count * 99 / 100] * 1e6;
        free(lat);
        close(client);
        close(backend);
}

int main(int argc, char **argv) {
        struct bench b = {};
        uint64_t mib = 1024, size;
        unsigned count = 20000;
        uint64_t one = 1;
        int opt;
        socklen_t len = sizeof(b.backend_addr);

        while ((opt = getopt(argc, argv, "s:n:c:b:")) >= 0)
                switch (opt) {
                case 's':
                        mib = strtoull(optarg, NULL, 10);
                        break;
                case 'n':
                        count = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'c':
                        pin_cpu = atoi(optarg);
                        break;
                case 'b':
                        b.buffer_size = (size_t)strtoul(optarg, NULL, 10) * 1024;
                        break;
                default:
                        fprintf(stderr,
                                "usage: relay_bench [-s MIB] [-n PINGPONGS] [-c CPU] [-b BUFFER_KIB]\n");
                        return 2;
                }
        size = (mib ?: 1) << 20;
        count = count ?: 1;
        signal(SIGPIPE, SIG_IGN);
        tsf_log_set_max_level(LOG_WARNING);
        pin_self();

        b.backend_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        b.backend_addr =
                (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (b.backend_lfd < 0 ||
            bind(b.backend_lfd, (struct sockaddr *)&b.backend_addr, sizeof(b.backend_addr)) < 0 ||
            listen(b.backend_lfd, 16) < 0 ||
            getsockname(b.backend_lfd, (struct sockaddr *)&b.backend_addr, &len) < 0)
                die("backend");
        b.wake_fd = eventfd(0, EFD_CLOEXEC);
        if (b.wake_fd < 0 || pthread_create(&b.thread, NULL, gateway_thread, &b) != 0)
                die("gateway thread");
        while (!__atomic_load_n(&b.ready, __ATOMIC_ACQUIRE))
                sched_yield();

        printf("relay_bench: %" PRIu64 " MiB, %u ping-pongs, relay buffer %zu KiB, %s\n", mib, count,
               (b.buffer_size ?: RELAY_BUFFER_SIZE_DEFAULT) >> 10,
               pin_cpu >= 0 ? "all threads on one CPU" : "threads unpinned");
        for (int both = 0; both <= 1; both++) {
                struct result d = bulk(&b, false, both, size), g = bulk(&b, true, both, size);
                double dir = both ? 2.0 : 1.0;
                double gd = (double)size * 8 * dir / d.seconds / 1e9,
                       gg = (double)size * 8 * dir / g.seconds / 1e9;

                printf("%-10s direct  %6.2f s %6.1f Gbit/s\n", both ? "both ways" : "one way", d.seconds,
                       gd);
                printf("%-10s gateway %6.2f s %6.1f Gbit/s (%.2fx direct), relay %.2f CPU-s per GiB\n", "",
                       g.seconds, gg, gg / gd, g.relay_cpu / ((double)size * dir / (1 << 30)));
        }
        {
                double d50, d99, g50, g99;

                pingpong(&b, false, count, &d50, &d99);
                pingpong(&b, true, count, &g50, &g99);
                printf("ping-pong  direct  p50 %6.1f us  p99 %6.1f us\n", d50, d99);
                printf("           gateway p50 %6.1f us  p99 %6.1f us (+%.1f us p50)\n", g50, g99,
                       g50 - d50);
        }

        if (write(b.wake_fd, &one, sizeof(one)) != sizeof(one))
                die("wake");
        pthread_join(b.thread, NULL);
        close(b.wake_fd);
        close(b.backend_lfd);
        return 0;
}
