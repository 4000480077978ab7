/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsbench: the load tool of `make bench` (tests/bench/run.sh). One binary,
 * a server side and three client measurements; every client connection
 * starts like an RDP client, with a TPKT + X.224 Connection Request that
 * carries `Cookie: mstshash=USER`, so a relay in front of the server
 * (tsagent's gateway, HAProxy with rdp-cookie) has something to decide on.
 *
 *   tsbench serve PORT...                 the RDP server stand-in (epoll, one thread)
 *   tsbench throughput -c ADDR:PORT [-s SRC] [-P PID] [-m MIB]
 *   tsbench pingpong   -c ADDR:PORT [-s SRC] [-P PID] [-n ROUND_TRIPS]
 *   tsbench connrate   -c ADDR:PORT [-s SRC] [-P PID] [-k CONCURRENCY] [-t SECONDS] [-n MAX]
 *   common: [-T SOCKET_TIMEOUT_S] [-L MAX_SECONDS]
 *
 * The server reads the first PDU by its TPKT length, answers one line,
 * then serves the mode the user name asks for: "tsbt..." sinks and answers
 * "got N" after the client's EOF, "tsbe..." echoes, "tsbc..." waits for EOF.
 * Every connection uses its own user name: the gateway resets older relayed
 * connections of the same user (stale legs).
 *
 * Each client measurement prints one line of key=value pairs. With -P the
 * CPU time of that process (the relay) over the measurement is included,
 * from /proc/PID/task/TID/schedstat (nanoseconds; /proc/PID/stat's utime +
 * stime when schedstat is missing, 10 ms ticks).
 *
 * Every wait is bounded: socket operations by -T (default 10 s), a
 * measurement by -L (default 60 s) or by its count.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PDU_MAX 1024u
#define CHUNK (256u * 1024)
#define ECHO_BUF (64u * 1024)
#define PING_SIZE 64u
#define LINE_MAX_LEN 64u

/* ---- common ---------------------------------------------------------------- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
        va_list ap;
        int e = errno;

        va_start(ap, fmt);
        fputs("tsbench: ", stderr);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        if (e)
                fprintf(stderr, ": %s", strerror(e));
        fputc('\n', stderr);
        exit(1);
}

static double now_sec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;

        return (x > y) - (x < y);
}

/* Sorts v and returns its q-quantile (0..1), nearest rank. */
static double quantile(double *v, size_t n, double q) {
        size_t i;

        if (n == 0)
                return 0;
        qsort(v, n, sizeof(*v), cmp_double);
        i = (size_t)(q * (double)n);
        return v[i < n ? i : n - 1];
}

static void set_nodelay(int fd) {
        int one = 1;

        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Builds an RDP client's first PDU: TPKT, X.224 Connection Request with
 * the cookie, RDP_NEG_REQ (TLS | CredSSP). Returns its length. */
static size_t build_cr(uint8_t buf[static PDU_MAX], const char *user) {
        char cookie[128];
        int n = snprintf(cookie, sizeof(cookie), "Cookie: mstshash=%s\r\n", user);
        size_t li, len, p;

        if (n < 0 || (size_t)n >= sizeof(cookie))
                die("user name too long");
        li = 6 + (size_t)n + 8; /* code, dst-ref, src-ref, class, cookie, neg */
        len = 5 + li;
        buf[0] = 3;
        buf[1] = 0;
        buf[2] = (uint8_t)(len >> 8);
        buf[3] = (uint8_t)len;
        buf[4] = (uint8_t)li;
        buf[5] = 0xe0;
        memset(buf + 6, 0, 5);
        memcpy(buf + 11, cookie, (size_t)n);
        p = 11 + (size_t)n;
        memcpy(buf + p, (const uint8_t[]){0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00}, 8);
        return p + 8;
}

/* ---- CPU time of another process ------------------------------------------- */

/* Nanoseconds PID has run, all threads; -1 if unknown. */
static int64_t proc_cpu_ns(pid_t pid) {
        char path[64];
        DIR *d;
        struct dirent *de;
        int64_t total = 0;
        bool any = false;

        if (pid <= 0)
                return -1;
        snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
        d = opendir(path);
        if (d) {
                while ((de = readdir(d))) {
                        char p[320];
                        unsigned long long ns;
                        FILE *f;

                        if (de->d_name[0] == '.')
                                continue;
                        snprintf(p, sizeof(p), "/proc/%d/task/%s/schedstat", (int)pid, de->d_name);
                        f = fopen(p, "re");
                        if (!f)
                                continue;
                        if (fscanf(f, "%llu", &ns) == 1) {
                                total += (int64_t)ns;
                                any = true;
                        }
                        fclose(f);
                }
                closedir(d);
        }
        if (!any) {
                /* utime and stime are fields 14 and 15; comm may hold spaces. */
                char buf[1024], *s;
                unsigned long long ut, st;
                FILE *f;
                size_t n;

                snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
                f = fopen(path, "re");
                if (!f)
                        return -1;
                n = fread(buf, 1, sizeof(buf) - 1, f);
                fclose(f);
                buf[n] = 0;
                s = strrchr(buf, ')');
                if (!s ||
                    sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
                        return -1;
                total = (int64_t)((ut + st) * (1000000000ull / (unsigned long long)sysconf(_SC_CLK_TCK)));
        }
        return total;
}

/* ---- server ----------------------------------------------------------------- */

enum kind { K_LISTEN, K_CONN };
enum cstate { S_PDU, S_SINK, S_ECHO, S_CONN };

struct listener {
        enum kind kind;
        int fd;
};

struct conn {
        enum kind kind;
        int fd;
        enum cstate state;
        size_t have;
        uint64_t received;
        uint8_t *out; /* echo: bytes read and not yet written back */
        size_t out_off, out_len;
        uint8_t pdu[PDU_MAX];
};

static int epfd = -1;
static uint8_t sink_buf[1u << 20];

static void conn_close(struct conn *c) {
        close(c->fd); /* also leaves the epoll set */
        free(c->out);
        free(c);
}

static void conn_want(struct conn *c, uint32_t events) {
        struct epoll_event ev = {.events = events, .data.ptr = c};

        if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                die("epoll_ctl");
}

/* A tiny line on a fresh or idle socket always fits the send buffer. */
static bool send_line(struct conn *c, const char *line) {
        size_t n = strlen(line);

        return send(c->fd, line, n, MSG_NOSIGNAL) == (ssize_t)n;
}

static enum cstate mode_of(const struct conn *c, size_t len) {
        static const char tag[] = "mstshash=tsb";
        const uint8_t *p = memmem(c->pdu, len, tag, sizeof(tag) - 1);

        if (!p || p + sizeof(tag) - 1 >= c->pdu + len)
                return S_ECHO;
        switch (p[sizeof(tag) - 1]) {
        case 't':
                return S_SINK;
        case 'c':
                return S_CONN;
        default:
                return S_ECHO;
        }
}

/* Writes back what an echo connection still owes; false when it is gone. */
static bool conn_flush(struct conn *c) {
        while (c->out_off < c->out_len) {
                ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);

                if (n < 0 && errno == EAGAIN) {
                        conn_want(c, EPOLLOUT);
                        return true;
                }
                if (n <= 0)
                        return false;
                c->out_off += (size_t)n;
        }
        if (c->out_len) {
                c->out_off = c->out_len = 0;
                conn_want(c, EPOLLIN);
        }
        return true;
}

/* Reads exactly the first PDU (TPKT length), answers, picks the mode.
 * False when the connection is gone. */
static bool conn_read_pdu(struct conn *c) {
        for (;;) {
                size_t len = c->have >= 4 ? (size_t)((c->pdu[2] << 8) | c->pdu[3]) : 4;
                ssize_t n;

                if (c->have >= 4 && (c->pdu[0] != 3 || len < 11 || len > PDU_MAX))
                        return false;
                if (c->have == len && len > 4)
                        break;
                n = read(c->fd, c->pdu + c->have, len - c->have);
                if (n < 0 && errno == EAGAIN)
                        return true;
                if (n <= 0)
                        return false;
                c->have += (size_t)n;
        }
        c->state = mode_of(c, c->have);
        return send_line(c, "tsbench ok\n");
}

static bool conn_readable(struct conn *c) {
        switch (c->state) {
        case S_PDU:
                return conn_read_pdu(c);
        case S_SINK:
        case S_CONN:
                /* A bounded number of reads per wake-up; level-triggered
                 * epoll brings us back. */
                for (int i = 0; i < 16; i++) {
                        ssize_t n = read(c->fd, sink_buf, sizeof(sink_buf));

                        if (n < 0 && errno == EAGAIN)
                                return true;
                        if (n < 0)
                                return false;
                        if (n == 0) {
                                char line[LINE_MAX_LEN];

                                if (c->state == S_CONN)
                                        return false;
                                snprintf(line, sizeof(line), "got %" PRIu64 "\n", c->received);
                                (void)send_line(c, line);
                                return false;
                        }
                        c->received += (uint64_t)n;
                }
                return true;
        case S_ECHO: {
                ssize_t n;

                if (!c->out && !(c->out = malloc(ECHO_BUF)))
                        return false;
                n = read(c->fd, c->out, ECHO_BUF);
                if (n < 0 && errno == EAGAIN)
                        return true;
                if (n <= 0)
                        return false;
                c->out_off = 0;
                c->out_len = (size_t)n;
                /* out_len set before the flush: a short write switches to EPOLLOUT. */
                {
                        ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);

                        if (w < 0 && errno != EAGAIN)
                                return false;
                        c->out_off = w > 0 ? (size_t)w : 0;
                        if (c->out_off == c->out_len) {
                                c->out_off = c->out_len = 0;
                                return true;
                        }
                        conn_want(c, EPOLLOUT);
                        return true;
                }
        }
        }
        return false;
}

static void accept_all(struct listener *l) {
        for (;;) {
                int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                struct epoll_event ev = {.events = EPOLLIN};
                struct conn *c;

                if (fd < 0) {
                        if (errno != EAGAIN && errno != ECONNABORTED && errno != EINTR)
                                fprintf(stderr, "tsbench serve: accept: %s\n", strerror(errno));
                        return;
                }
                c = calloc(1, sizeof(*c));
                if (!c) {
                        close(fd);
                        continue;
                }
                c->kind = K_CONN;
                c->fd = fd;
                set_nodelay(fd);
                ev.data.ptr = c;
                if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                        close(fd);
                        free(c);
                }
        }
}

static int serve(int argc, char **argv) {
        struct epoll_event evs[64];

        if (argc < 1)
                die("serve: which ports?");
        epfd = epoll_create1(EPOLL_CLOEXEC);
        if (epfd < 0)
                die("epoll_create1");
        for (int i = 0; i < argc; i++) {
                struct listener *l = calloc(1, sizeof(*l));
                struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[i]))};
                struct epoll_event ev = {.events = EPOLLIN};
                int one = 1;

                if (!l)
                        die("calloc");
                l->kind = K_LISTEN;
                l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                ev.data.ptr = l;
                if (l->fd < 0 || setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
                    bind(l->fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l->fd, 4096) < 0 ||
                    epoll_ctl(epfd, EPOLL_CTL_ADD, l->fd, &ev) < 0)
                        die("serve: port %s", argv[i]);
        }
        printf("tsbench: serving on %d port(s)\n", argc);
        fflush(stdout);
        for (;;) {
                int n = epoll_wait(epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), -1);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        die("epoll_wait");
                for (int i = 0; i < n; i++) {
                        enum kind *k = evs[i].data.ptr;
                        struct conn *c;
                        bool alive = true;

                        if (*k == K_LISTEN) {
                                accept_all((struct listener *)k);
                                continue;
                        }
                        c = (struct conn *)k;
                        if (evs[i].events & EPOLLOUT)
                                alive = conn_flush(c);
                        else if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                                alive = conn_readable(c);
                        if (!alive)
                                conn_close(c);
                }
        }
}

/* ---- client ------------------------------------------------------------------ */

struct opts {
        struct sockaddr_in target;
        struct sockaddr_in source;
        bool have_source;
        pid_t relay_pid;
        uint64_t mib;
        uint64_t count;
        unsigned concurrency;
        double seconds;
        double timeout;
        double limit;
};

static uint64_t user_seq;

static void make_user(char *buf, size_t size, char mode) {
        snprintf(buf, size, "tsb%c%dn%" PRIu64, mode, (int)getpid(),
                 __atomic_add_fetch(&user_seq, 1, __ATOMIC_RELAXED));
}

/* A connected socket to the target, or -errno (the caller decides whether
 * that is fatal). */
static int open_conn(const struct opts *o) {
        struct timeval tv = {.tv_sec = (time_t)o->timeout,
                             .tv_usec = (suseconds_t)((o->timeout - (double)(time_t)o->timeout) * 1e6)};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, r;

        if (fd < 0)
                return -errno;
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* connect() too */
        if (o->have_source) {
                /* The port is picked per destination at connect(). */
                (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
                if (bind(fd, (const struct sockaddr *)&o->source, sizeof(o->source)) < 0)
                        goto fail;
        }
        if (connect(fd, (const struct sockaddr *)&o->target, sizeof(o->target)) < 0)
                goto fail;
        set_nodelay(fd);
        return fd;
fail:
        r = -errno;
        close(fd);
        return r;
}

static int write_all(int fd, const void *buf, size_t len) {
        const uint8_t *p = buf;

        while (len) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EPIPE;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Reads one line (up to '\n'); the server sends nothing after it unasked. */
static int read_line(int fd, char *buf, size_t size) {
        size_t have = 0;

        while (have + 1 < size) {
                ssize_t n = read(fd, buf + have, size - 1 - have);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return -ECONNRESET;
                have += (size_t)n;
                buf[have] = 0;
                if (memchr(buf, '\n', have))
                        return 0;
        }
        return -EPROTO;
}

/* First PDU out, the server's first line back. */
static int rdp_start(int fd, char mode) {
        uint8_t pdu[PDU_MAX];
        char user[48], line[LINE_MAX_LEN];
        int r;

        make_user(user, sizeof(user), mode);
        r = write_all(fd, pdu, build_cr(pdu, user));
        if (r < 0)
                return r;
        r = read_line(fd, line, sizeof(line));
        if (r < 0)
                return r;
        return strcmp(line, "tsbench ok\n") == 0 ? 0 : -EPROTO;
}

static void print_cpu(const char *key, int64_t cpu0, int64_t cpu1, double per) {
        if (cpu0 >= 0 && cpu1 >= cpu0 && per > 0)
                printf(" %s=%.4f", key, (double)(cpu1 - cpu0) / 1e9 / per);
}

static int throughput(const struct opts *o) {
        uint64_t size = o->mib << 20, sent = 0, got;
        char line[LINE_MAX_LEN];
        uint8_t *buf = calloc(1, CHUNK);
        double t0, t1;
        int64_t cpu0, cpu1;
        int fd, r;

        if (!buf)
                die("calloc");
        fd = open_conn(o);
        if (fd < 0) {
                errno = -fd;
                die("connect");
        }
        r = rdp_start(fd, 't');
        if (r < 0) {
                errno = -r;
                die("first PDU");
        }
        cpu0 = proc_cpu_ns(o->relay_pid);
        t0 = now_sec();
        while (sent < size) {
                size_t n = size - sent < CHUNK ? (size_t)(size - sent) : CHUNK;

                r = write_all(fd, buf, n);
                if (r < 0) {
                        errno = -r;
                        die("send after %" PRIu64 " bytes", sent);
                }
                sent += n;
                if (now_sec() - t0 > o->limit)
                        die("throughput: over %.0f s", o->limit);
        }
        shutdown(fd, SHUT_WR);
        /* The sink's count arrives after it read our EOF: the clock stops
         * when every byte went through the relay, not when it was queued. */
        r = read_line(fd, line, sizeof(line));
        t1 = now_sec();
        cpu1 = proc_cpu_ns(o->relay_pid);
        if (r < 0) {
                errno = -r;
                die("reading the sink's count");
        }
        if (sscanf(line, "got %" SCNu64, &got) != 1 || got != size) {
                errno = 0;
                die("short transfer: sent %" PRIu64 ", the server says '%.*s'", size,
                    (int)strcspn(line, "\n"), line);
        }
        close(fd);
        free(buf);
        printf("mib=%" PRIu64 " seconds=%.4f gbps=%.3f", o->mib, t1 - t0,
               (double)size * 8 / (t1 - t0) / 1e9);
        print_cpu("relay_cpu_s", cpu0, cpu1, 1);
        print_cpu("cpu_s_per_gib", cpu0, cpu1, (double)size / (1u << 30));
        printf("\n");
        return 0;
}

static int pingpong(const struct opts *o) {
        uint8_t buf[PING_SIZE] = {0};
        double *lat = calloc(o->count, sizeof(double)), t0, start;
        int64_t cpu0, cpu1;
        uint64_t done = 0, warm = o->count / 20;
        int fd, r;

        if (!lat)
                die("calloc");
        fd = open_conn(o);
        if (fd < 0) {
                errno = -fd;
                die("connect");
        }
        r = rdp_start(fd, 'e');
        if (r < 0) {
                errno = -r;
                die("first PDU");
        }
        cpu0 = proc_cpu_ns(o->relay_pid);
        start = now_sec();
        /* A few round trips first, not counted: caches, rings, wake-ups. */
        for (uint64_t i = 0; i < warm + o->count; i++) {
                size_t got = 0;

                t0 = now_sec();
                r = write_all(fd, buf, sizeof(buf));
                while (r == 0 && got < sizeof(buf)) {
                        ssize_t n = read(fd, buf + got, sizeof(buf) - got);

                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0)
                                r = n < 0 ? -errno : -ECONNRESET;
                        else
                                got += (size_t)n;
                }
                if (r < 0) {
                        errno = -r;
                        die("round trip %" PRIu64, i);
                }
                if (i >= warm)
                        lat[done++] = (now_sec() - t0) * 1e6;
                if ((i & 1023) == 0 && now_sec() - start > o->limit)
                        break;
        }
        cpu1 = proc_cpu_ns(o->relay_pid);
        close(fd);
        printf("count=%" PRIu64 " p50_us=%.2f p99_us=%.2f", done, quantile(lat, done, 0.50),
               quantile(lat, done, 0.99));
        print_cpu("relay_cpu_us_per_rt", cpu0, cpu1, (double)(done + warm) / 1e6);
        printf("\n");
        free(lat);
        return 0;
}

struct worker {
        pthread_t thread;
        const struct opts *o;
        double *lat;
        size_t n, size;
        uint64_t errors;
        int first_error;
};

static volatile int stop_workers;
static uint64_t conns_started;

static void *connrate_worker(void *arg) {
        struct worker *w = arg;
        const struct opts *o = w->o;

        while (!__atomic_load_n(&stop_workers, __ATOMIC_RELAXED)) {
                double t0;
                int fd, r;

                if (__atomic_fetch_add(&conns_started, 1, __ATOMIC_RELAXED) >= o->count)
                        break;
                t0 = now_sec();
                fd = open_conn(o);
                r = fd < 0 ? fd : rdp_start(fd, 'c');
                if (r == 0) {
                        if (w->n == w->size) {
                                size_t size = w->size ? w->size * 2 : 4096;
                                double *grown = realloc(w->lat, size * sizeof(double));

                                if (!grown)
                                        die("realloc");
                                w->lat = grown;
                                w->size = size;
                        }
                        w->lat[w->n++] = (now_sec() - t0) * 1e6;
                } else {
                        if (!w->errors++)
                                w->first_error = -r;
                        /* Do not spin on a dead target. */
                        if (w->errors > 1000 && w->errors > w->n)
                                break;
                }
                if (fd >= 0)
                        close(fd);
        }
        return NULL;
}

static int connrate(const struct opts *o) {
        struct worker *w = calloc(o->concurrency, sizeof(*w));
        double t0, t1, *all;
        uint64_t total = 0, errors = 0;
        int64_t cpu0, cpu1;
        int first_error = 0;
        size_t k = 0;

        if (!w)
                die("calloc");
        cpu0 = proc_cpu_ns(o->relay_pid);
        t0 = now_sec();
        for (unsigned i = 0; i < o->concurrency; i++) {
                w[i].o = o;
                if (pthread_create(&w[i].thread, NULL, connrate_worker, &w[i]) != 0)
                        die("pthread_create");
        }
        while (now_sec() - t0 < o->seconds && __atomic_load_n(&conns_started, __ATOMIC_RELAXED) < o->count) {
                struct timespec ts = {0, 10 * 1000 * 1000};

                nanosleep(&ts, NULL);
        }
        __atomic_store_n(&stop_workers, 1, __ATOMIC_RELAXED);
        for (unsigned i = 0; i < o->concurrency; i++) {
                pthread_join(w[i].thread, NULL);
                total += w[i].n;
                errors += w[i].errors;
                if (!first_error)
                        first_error = w[i].first_error;
        }
        t1 = now_sec();
        cpu1 = proc_cpu_ns(o->relay_pid);
        all = calloc(total ? total : 1, sizeof(double));
        if (!all)
                die("calloc");
        for (unsigned i = 0; i < o->concurrency; i++) {
                memcpy(all + k, w[i].lat, w[i].n * sizeof(double));
                k += w[i].n;
                free(w[i].lat);
        }
        printf("concurrency=%u conns=%" PRIu64 " errors=%" PRIu64
               " seconds=%.3f conn_per_s=%.1f p50_us=%.2f "
               "p99_us=%.2f",
               o->concurrency, total, errors, t1 - t0, (double)total / (t1 - t0), quantile(all, total, 0.50),
               quantile(all, total, 0.99));
        print_cpu("relay_cpu_us_per_conn", cpu0, cpu1, (double)(total + errors) / 1e6);
        if (errors)
                printf(" first_error=%s", strerror(first_error));
        printf("\n");
        free(all);
        free(w);
        return total ? 0 : 1;
}

static void parse_addr(const char *s, struct sockaddr_in *a, bool port) {
        char host[64];
        const char *colon = strrchr(s, ':');
        size_t n = port && colon ? (size_t)(colon - s) : strlen(s);

        if ((port && !colon) || n >= sizeof(host)) {
                errno = 0;
                die("bad address '%s'", s);
        }
        memcpy(host, s, n);
        host[n] = 0;
        *a = (struct sockaddr_in){.sin_family = AF_INET};
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
                errno = 0;
                die("bad address '%s'", s);
        }
        if (port)
                a->sin_port = htons((uint16_t)atoi(colon + 1));
}

static void usage(void) __attribute__((noreturn));
static void usage(void) {
        fputs("usage: tsbench serve PORT...\n"
              "       tsbench throughput -c ADDR:PORT [-s SRC] [-P PID] [-m MIB]\n"
              "       tsbench pingpong   -c ADDR:PORT [-s SRC] [-P PID] [-n ROUND_TRIPS]\n"
              "       tsbench connrate   -c ADDR:PORT [-s SRC] [-P PID] [-k CONCURRENCY] [-t SECONDS] "
              "[-n MAX]\n"
              "       common: [-T SOCKET_TIMEOUT_S] [-L MAX_SECONDS]\n",
              stderr);
        exit(2);
}

int main(int argc, char **argv) {
        struct opts o = {.mib = 1024, .concurrency = 4, .seconds = 2, .timeout = 10, .limit = 60};
        bool have_target = false, have_count = false;
        const char *mode;
        int opt;

        signal(SIGPIPE, SIG_IGN);
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (argc < 2)
                usage();
        mode = argv[1];
        if (strcmp(mode, "serve") == 0)
                return serve(argc - 2, argv + 2);
        optind = 2;
        while ((opt = getopt(argc, argv, "c:s:P:m:n:k:t:T:L:")) >= 0)
                switch (opt) {
                case 'c':
                        parse_addr(optarg, &o.target, true);
                        have_target = true;
                        break;
                case 's':
                        parse_addr(optarg, &o.source, false);
                        o.have_source = true;
                        break;
                case 'P':
                        o.relay_pid = (pid_t)atoi(optarg);
                        break;
                case 'm':
                        o.mib = strtoull(optarg, NULL, 10);
                        break;
                case 'n':
                        o.count = strtoull(optarg, NULL, 10);
                        have_count = true;
                        break;
                case 'k':
                        o.concurrency = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 't':
                        o.seconds = strtod(optarg, NULL);
                        break;
                case 'T':
                        o.timeout = strtod(optarg, NULL);
                        break;
                case 'L':
                        o.limit = strtod(optarg, NULL);
                        break;
                default:
                        usage();
                }
        if (!have_target || optind != argc || o.mib == 0 || o.concurrency == 0 || o.concurrency > 256 ||
            !(o.timeout > 0) || !(o.limit > 0) || !(o.seconds > 0))
                usage();
        if (strcmp(mode, "throughput") == 0)
                return throughput(&o);
        if (strcmp(mode, "pingpong") == 0) {
                o.count = have_count ? o.count : 20000;
                if (!o.count)
                        usage();
                return pingpong(&o);
        }
        if (strcmp(mode, "connrate") == 0) {
                o.count = have_count ? o.count : 1000000;
                return connrate(&o);
        }
        usage();
}
