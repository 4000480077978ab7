/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The Session Directory under load (docs/bench.md, "The directory"): the
 * programs tests/bench/dir.sh runs. Figures, not assertions.
 *
 *   dir_bench load DB SESSIONS NODES
 *   dir_bench query URL CA CERT KEY RATE SECONDS [-n SESSIONS] [-c CONNS] [-m mix|lookup|place|refused]
 *                   [-e ENTRY_NODE] [-w WARMUP_SECONDS] [-P SERVER_PID] [-x PATH]
 *   dir_bench events URL CA CERT KEY N [-c CONNS] [-b FIRST_SESSION_ID] [-P SERVER_PID]
 *   dir_bench propagate URL CA CERT KEY PIN N [-a NODE_ID] [-b FIRST_SESSION_ID] [-t TIMEOUT_S]
 *   dir_bench get URL CA CERT KEY PATH
 *   dir_bench jitter SECONDS
 *
 * load fills a directory database through the store API, in batches
 * (one transaction, one fsync per 10,000 events), the way a directory agent
 * would then find it: NODES registered nodes ts01, ts02, ... and SESSIONS
 * users, a quarter of them disconnected. query is an open-loop generator
 * for POST /v1/logon-query: request i is due at i/RATE, whatever happened
 * to the others, and its latency runs from when it was due (a request that
 * waited for a free connection counts its wait), so a directory that falls
 * behind shows it instead of slowing the generator down. events reports
 * session events as one node, closed loop. propagate reports events as
 * node A and watches another node's pinned BPF sessions map until each
 * change shows there. get times one GET. jitter measures how late this machine wakes a
 * sleeping thread, the floor under all of these latencies.
 *
 * -P names the server's pid: its CPU time over the run is reported (per
 * request too), with the share of the machine the hypervisor stole and
 * the CPU everything else on the machine took (other_cpu_pct). -x
 * sends one GET of PATH (say /metrics) halfway through a query run, on a
 * connection of its own, and reports how long it took.
 *
 * Every command prints one line of key=value figures on stdout (times in
 * ms); tests/bench/dir.sh collects them. The user names are the same
 * function of the index everywhere, so query knows which users exist.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <curl/curl.h>

#include "agent/directory/store.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsfarm/maps.h"
#include "tsfarm/userkey.h"
#include "tests/bench/benchutil.h"

/* Events per transaction when loading: one fsync each. */
#define LOAD_BATCH 10000u
/* What a node session id of the event generators starts at: far above
 * the loaded ones (SESSIONS / NODES per node). */
#define EVENT_SESSION_BASE 2000000000u
#define ANSWER_MAX 1024
#define CALL_TIMEOUT_MS 10000L

const char *prog = "dir_bench";

static double cpu_s(void) {
        struct rusage ru;

        if (getrusage(RUSAGE_SELF, &ru) < 0)
                return 0;
        return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
               (double)ru.ru_stime.tv_usec / 1e6;
}

/* CPU seconds (user + system, all threads) of process pid; 0 if gone. */
static double proc_cpu_s(long pid) {
        char path[64], buf[1024];
        _cleanup_fclose_ FILE *f = NULL;
        unsigned long long ut = 0, st = 0;
        const char *p;

        if (pid <= 0)
                return 0;
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        f = fopen(path, "re");
        if (!f || !fgets(buf, sizeof(buf), f))
                return 0;
        /* After "pid (comm) ": state is field 3, utime 14, stime 15. */
        p = strrchr(buf, ')');
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
                return 0;
        return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* The machine's CPU time in clock ticks, all CPUs: in all, idle (with
 * iowait), and what the hypervisor took (steal). */
struct ticks {
        unsigned long long all, idle, steal;
};

static void machine_ticks(struct ticks *t) {
        unsigned long long v[8] = {};
        _cleanup_fclose_ FILE *f = fopen("/proc/stat", "re");

        *t = (struct ticks){};
        if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                         &v[5], &v[6], &v[7]) != 8)
                return;
        for (int i = 0; i < 8; i++)
                t->all += v[i];
        t->idle = v[3] + v[4];
        t->steal = v[7];
}

struct usage {
        double wall, cpu, server_cpu;
        struct ticks t;
        /* usage_end(): */
        double steal_pct; /* of the machine */
        double other_pct; /* of one CPU: neither us nor the server */
};

static void usage_start(struct usage *u, long server_pid) {
        u->wall = now_s();
        u->cpu = cpu_s();
        u->server_cpu = proc_cpu_s(server_pid);
        machine_ticks(&u->t);
}

/* Turns the start values into what was used since: seconds of wall
 * clock, CPU seconds of this process and of the server; the share of the
 * machine the hypervisor stole, and how much CPU everything else on the
 * machine took (a build running next to the benchmark shows here). */
static void usage_end(struct usage *u, long server_pid) {
        struct ticks t;
        double hz = (double)sysconf(_SC_CLK_TCK), busy;

        u->wall = now_s() - u->wall;
        u->cpu = cpu_s() - u->cpu;
        u->server_cpu = server_pid > 0 ? proc_cpu_s(server_pid) - u->server_cpu : 0;
        machine_ticks(&t);
        if (t.all <= u->t.all || u->wall <= 0)
                return;
        u->steal_pct = 100.0 * (double)(t.steal - u->t.steal) / (double)(t.all - u->t.all);
        busy = (double)((t.all - u->t.all) - (t.idle - u->t.idle) - (t.steal - u->t.steal)) / hz;
        u->other_pct = MAX(0.0, 100.0 * (busy - u->cpu - u->server_cpu) / u->wall);
}

static double parse_double(const char *s, const char *what) {
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (!*s || *end || errno != 0 || !(v >= 0))
                die("%s: '%s' is not a non-negative number", what, s);
        return v;
}

/* ---- users ------------------------------------------------------------ */

/* A 32-bit mixer (the murmur3 finaliser): letters that look random. */
static uint32_t mix32(uint32_t h) {
        h ^= h >> 16;
        h *= 0x85ebca6bu;
        h ^= h >> 13;
        h *= 0xc2b2ae35u;
        h ^= h >> 16;
        return h;
}

/* User i's name: five letters, then i. The letters make the first nine
 * bytes (what a Windows client keeps of a long cookie) name one user, or a
 * handful, rather than the first 100,000 users: "qxbmr0000123". */
static void user_part(uint32_t i, char *buf, size_t size) {
        uint32_t h = mix32(i * 2654435761u + 0x9e3779b9u);
        char l[6];

        for (int k = 0; k < 5; k++, h /= 26)
                l[k] = (char)('a' + h % 26);
        l[5] = '\0';
        snprintf(buf, size, "%s%07" PRIu32, l, i);
}

/* As the session host reports it: a third plain (xrdp), the rest
 * DOMAIN\user (Windows). */
static void user_reported(uint32_t i, char *buf, size_t size) {
        char u[32];

        user_part(i, u, sizeof(u));
        if (i % 3 == 0)
                snprintf(buf, size, "%s", u);
        else
                snprintf(buf, size, "CORP\\%s", u);
}

static void node_name(unsigned k, char *buf, size_t size) {
        snprintf(buf, size, "ts%02u", k + 1);
}

/* ---- load ------------------------------------------------------------- */

static void store_check(int r, const char *what, const char *reason) {
        if (r < 0)
                die("%s: %s%s%s", what, strerror(-r), reason ? ": " : "", reason ? reason : "");
}

static int cmd_load(int argc, char **argv) {
        _cleanup_(dir_store_closep) struct dir_store *s = NULL;
        unsigned long n, nodes, events = 0, committed = 0, disconnected = 0;
        double t0, t1;
        int r;

        if (argc != 4)
                die("usage: load DB SESSIONS NODES");
        n = parse_ulong(argv[2], "SESSIONS");
        nodes = parse_ulong(argv[3], "NODES");
        if (nodes == 0 || nodes > 999 || n > UINT32_MAX)
                die("NODES must be 1..999 and SESSIONS fit 32 bits");

        r = dir_store_open(argv[1], &s);
        store_check(r, argv[1], NULL);
        /* Its nodes and user names would clash with what is there. */
        if (dir_store_revision(s) != 0)
                die("%s is not empty: load fills a new database", argv[1]);
        for (unsigned k = 0; k < nodes; k++) {
                char name[16], addrs[32];
                struct dir_node_info info = {
                        .name = name,
                        .addresses = addrs,
                        .rdp_port = 3389,
                        .weight = 100,
                        .boot_id = "dir-bench",
                };

                node_name(k, name, sizeof(name));
                snprintf(addrs, sizeof(addrs), "10.240.%u.%u", (k + 1) / 256, (k + 1) % 256);
                store_check(dir_node_register(s, &info), "register", NULL);
        }

        t0 = now_s();
        store_check(dir_store_batch_begin(s), "batch", NULL);
        for (uint32_t i = 0; i < n; i++) {
                char node[16], user[48], device[24], client[24];
                const char *reason = NULL;
                struct dir_event_info ev = {
                        .event = DIR_EVENT_LOGON,
                        .node_session = (uint32_t)(i / nodes + 1),
                        .user = user,
                        .device = device,
                        .client_addr = client,
                };

                node_name(i % nodes, node, sizeof(node));
                user_reported(i, user, sizeof(user));
                snprintf(device, sizeof(device), "PC-%07" PRIu32, i);
                snprintf(client, sizeof(client), "10.%u.%u.%u", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
                store_check(dir_session_event(s, node, &ev, &reason), "logon", reason);
                events++;
                /* A farm in the day: a quarter of the sessions wait for
                 * their users to come back. */
                if (i % 4 == 3) {
                        ev.event = DIR_EVENT_DISCONNECT;
                        store_check(dir_session_event(s, node, &ev, &reason), "disconnect", reason);
                        events++;
                        disconnected++;
                }
                if (events - committed >= LOAD_BATCH && i + 1 < n) {
                        store_check(dir_store_batch_commit(s), "commit", NULL);
                        store_check(dir_store_batch_begin(s), "batch", NULL);
                        committed = events;
                }
        }
        store_check(dir_store_batch_commit(s), "commit", NULL);
        t1 = now_s();
        printf("load sessions=%lu nodes=%lu disconnected=%lu events=%lu seconds=%.2f events_per_s=%.0f "
               "us_per_event=%.1f revision=%" PRIu64 "\n",
               n, nodes, disconnected, events, t1 - t0, (double)events / (t1 - t0),
               (t1 - t0) * 1e6 / (double)(events ? events : 1), dir_store_revision(s));
        return 0;
}

/* ---- HTTP plumbing ------------------------------------------------------ */

struct call {
        CURL *easy;
        char body[256];
        char answer[ANSWER_MAX];
        size_t answer_len;
        /* The request's own bookkeeping. */
        size_t index; /* query: the request's number; events: the connection's */
        double due;   /* query: when it was due; events: -1 once answered */
        double sent;
        int form;
        uint32_t cycle; /* events: which session of this connection */
        int step;       /* events: logon, disconnect, reconnect, logoff */
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *userdata) {
        struct call *c = userdata;
        size_t n = size * nmemb, room = sizeof(c->answer) - 1 - c->answer_len;

        memcpy(c->answer + c->answer_len, p, MIN(n, room));
        c->answer_len += MIN(n, room);
        c->answer[c->answer_len] = '\0';
        return n;
}

static struct curl_slist *json_headers(void) {
        struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");

        /* No "100 Continue" round trip for our small bodies. */
        if (h)
                h = curl_slist_append(h, "Expect:");
        if (!h)
                die("out of memory");
        return h;
}

static CURL *easy_new(const char *url, const char *ca, const char *cert, const char *key,
                      struct curl_slist *headers, struct call *c) {
        CURL *h = curl_easy_init();
        CURLcode code;

        if (!h)
                die("curl_easy_init failed");
        code = curl_easy_setopt(h, CURLOPT_URL, url);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, CALL_TIMEOUT_MS);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_CAINFO, ca);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_SSLCERT, cert);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_SSLKEY, key);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_WRITEDATA, c);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_PRIVATE, c);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_POSTFIELDS, c->body);
        if (code)
                die("curl_easy_setopt: %s", curl_easy_strerror(code));
        return h;
}

static void call_prepare(struct call *c) {
        c->answer_len = 0;
        c->answer[0] = '\0';
        if (curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(c->body)) != CURLE_OK)
                die("curl_easy_setopt failed");
}

/* The value of "key" in a flat JSON answer, as the start of its text
 * (after the colon and blanks), or NULL. Enough for our own answers;
 * cheaper than parsing 10,000 of them a second. */
static const char *json_field(const char *answer, const char *key) {
        char pat[48];
        const char *p;

        snprintf(pat, sizeof(pat), "\"%s\"", key);
        p = strstr(answer, pat);
        if (!p)
                return NULL;
        p += strlen(pat);
        p += strspn(p, " \t");
        if (*p != ':')
                return NULL;
        p++;
        return p + strspn(p, " \t");
}

struct multi {
        CURLM *m;
        int running;
};

static void multi_init(struct multi *mu, unsigned conns) {
        mu->m = curl_multi_init();
        if (!mu->m)
                die("curl_multi_init failed");
        /* One request per connection at a time (HTTP/1.1, no pipelining),
         * and every connection kept for reuse. */
        if (curl_multi_setopt(mu->m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conns) != CURLM_OK ||
            curl_multi_setopt(mu->m, CURLMOPT_MAXCONNECTS, (long)conns) != CURLM_OK ||
            curl_multi_setopt(mu->m, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING) != CURLM_OK)
                die("curl_multi_setopt failed");
}

static void multi_add(struct multi *mu, struct call *c) {
        call_prepare(c);
        if (curl_multi_add_handle(mu->m, c->easy) != CURLM_OK)
                die("curl_multi_add_handle failed");
}

/* Waits for socket activity or until `until` (monotonic seconds; <= 0:
 * curl's own timeout only), with better than millisecond resolution:
 * the generator's schedule has a request every 100 µs. */
static void multi_wait(struct multi *mu, double until) {
        fd_set r, w, e;
        int maxfd = -1;
        long curl_ms = -1;
        double wait = 1.0;
        struct timespec ts;

        FD_ZERO(&r);
        FD_ZERO(&w);
        FD_ZERO(&e);
        if (curl_multi_fdset(mu->m, &r, &w, &e, &maxfd) != CURLM_OK)
                die("curl_multi_fdset failed");
        (void)curl_multi_timeout(mu->m, &curl_ms);
        if (curl_ms >= 0)
                wait = MIN(wait, (double)curl_ms / 1e3);
        if (until > 0)
                wait = MIN(wait, until - now_s());
        if (wait <= 0)
                return;
        if (maxfd < 0 && curl_ms < 0 && until <= 0)
                return;
        ts.tv_sec = (time_t)wait;
        ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9);
        if (pselect(maxfd + 1, &r, &w, &e, &ts, NULL) < 0 && errno != EINTR)
                die("pselect: %s", strerror(errno));
}

typedef void (*call_done_t)(struct call *c, CURLcode code, long status, void *userdata);

/* Runs curl and hands each finished call to done(); returns how many. */
static unsigned multi_step(struct multi *mu, call_done_t done, void *ud) {
        CURLMsg *msg;
        int left;
        unsigned n = 0;

        if (curl_multi_perform(mu->m, &mu->running) != CURLM_OK)
                die("curl_multi_perform failed");
        while ((msg = curl_multi_info_read(mu->m, &left))) {
                struct call *c = NULL;
                long status = 0;

                if (msg->msg != CURLMSG_DONE)
                        continue;
                (void)curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
                (void)curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
                CURLcode code = msg->data.result;
                (void)curl_multi_remove_handle(mu->m, msg->easy_handle);
                done(c, code, status, ud);
                n++;
        }
        return n;
}

/* ---- query -------------------------------------------------------------- */

enum form {
        FORM_PLAIN,     /* qxbmr0000123 */
        FORM_DOWNLEVEL, /* CORP\QXBMR0000123 */
        FORM_UPN,       /* qxbmr0000123@corp.example */
        FORM_CUT,       /* qxbmr0000: a Windows client's 9 bytes */
        FORM_UNKNOWN,   /* nobody: a placement */
        FORM_REFUSED,   /* {"user": 0}: refused by the handler, no store */
        _FORM_MAX,
};

static const char *const form_names[_FORM_MAX] = {"plain", "downlevel", "upn", "cut", "unknown", "refused"};

enum mode {
        MODE_MIX,     /* 8 in 10 users that have a session, 2 in 10 nobody */
        MODE_LOOKUP,  /* only users that have a session */
        MODE_PLACE,   /* only nobody: every query is a placement */
        MODE_REFUSED, /* the baseline: the handler refuses it */
        _MODE_MAX,
};

static const char *const mode_names[_MODE_MAX] = {"mix", "lookup", "place", "refused"};

struct query_run {
        double rate, t0;
        size_t total, warm, next, done;
        uint32_t sessions, unknown_seq;
        const char *entry;
        enum mode mode;
        struct call *calls;
        struct call **idle;
        size_t n_idle;
        double *lat, *lag;
        size_t n_lat, n_lag;
        unsigned long ok, errors, wrong, connects;
        unsigned long answers[4]; /* session, placed, ambiguous, other */
        unsigned long by_form[_FORM_MAX];
        double last_done;
        char first_error[160];
        /* -x: one GET on a connection of its own, halfway through. */
        struct call *side;
        double side_at, side_ms;
        long side_status;
};

static int pick_form(const struct query_run *q, size_t i) {
        /* Out of 10: 3 plain, 3 DOMAIN\user, 1 UPN, 1 cut cookie, 2 nobody
         * (the lookups without the last two). */
        static const int mix[10] = {
                FORM_PLAIN, FORM_DOWNLEVEL, FORM_PLAIN,     FORM_DOWNLEVEL, FORM_UPN,
                FORM_PLAIN, FORM_CUT,       FORM_DOWNLEVEL, FORM_UNKNOWN,   FORM_UNKNOWN,
        };

        if (q->mode == MODE_REFUSED)
                return FORM_REFUSED;
        if (q->mode == MODE_PLACE || q->sessions == 0)
                return FORM_UNKNOWN;
        return q->mode == MODE_LOOKUP ? mix[i % 8] : mix[i % 10];
}

static void query_body(struct query_run *q, struct call *c, size_t i) {
        /* Spread over all users, in no order (i * a large odd number). */
        uint32_t u = q->sessions ? (uint32_t)((i * 2654435761u) % q->sessions) : 0;
        char name[64], part[32];

        c->form = pick_form(q, i);
        user_part(u, part, sizeof(part));
        switch (c->form) {
        case FORM_PLAIN:
                snprintf(name, sizeof(name), "%s", part);
                break;
        case FORM_DOWNLEVEL:
                snprintf(name, sizeof(name), "CORP\\%s", part);
                for (char *p = name; *p; p++)
                        if (*p >= 'a' && *p <= 'z')
                                *p = (char)(*p - 'a' + 'A');
                break;
        case FORM_UPN:
                snprintf(name, sizeof(name), "%s@corp.example", part);
                break;
        case FORM_CUT:
                snprintf(name, sizeof(name), "%.9s", part);
                break;
        case FORM_UNKNOWN:
                snprintf(name, sizeof(name), "newuser%08" PRIu32, q->unknown_seq++);
                break;
        default:
                break;
        }
        if (c->form == FORM_REFUSED)
                snprintf(c->body, sizeof(c->body), "{\"user\": 0, \"entry_node\": \"%s\"}", q->entry);
        else if (c->form == FORM_DOWNLEVEL) /* one backslash, escaped in JSON */
                snprintf(c->body, sizeof(c->body), "{\"cookie\": \"CORP\\\\%s\", \"entry_node\": \"%s\"}",
                         name + 5, q->entry);
        else
                snprintf(c->body, sizeof(c->body), "{\"cookie\": \"%s\", \"entry_node\": \"%s\"}", name,
                         q->entry);
}

static void query_start(struct query_run *q, struct multi *mu, size_t i, double due, double now) {
        struct call *c = q->idle[--q->n_idle];

        c->index = i;
        c->due = due;
        c->sent = now;
        query_body(q, c, i);
        multi_add(mu, c);
}

static void query_done(struct call *c, CURLcode code, long status, void *ud) {
        struct query_run *q = ud;
        double t = now_s();
        long connects = 0;
        bool measured = c->index >= q->warm && c->index != SIZE_MAX;

        if (c == q->side) {
                q->side_ms = (t - c->sent) * 1e3;
                q->side_status = code == CURLE_OK ? status : -1;
                return;
        }
        (void)curl_easy_getinfo(c->easy, CURLINFO_NUM_CONNECTS, &connects);
        q->connects += (unsigned long)connects;
        q->idle[q->n_idle++] = c;
        q->done++;
        if (!measured)
                return;
        if (code != CURLE_OK || status != (q->mode == MODE_REFUSED ? 400 : 200)) {
                q->errors++;
                if (!q->first_error[0])
                        snprintf(q->first_error, sizeof(q->first_error), "%s, HTTP %ld: %.100s",
                                 curl_easy_strerror(code), status, c->answer);
                return;
        }
        q->ok++;
        q->lat[q->n_lat++] = t - c->due;
        q->lag[q->n_lag++] = c->sent - c->due;
        q->last_done = t;
        q->by_form[c->form]++;
        if (q->mode != MODE_REFUSED) {
                const char *a = json_field(c->answer, "answer");
                int k = !a                                     ? 3
                        : strncmp(a, "\"session\"", 9) == 0    ? 0
                        : strncmp(a, "\"placed\"", 8) == 0     ? 1
                        : strncmp(a, "\"ambiguous\"", 11) == 0 ? 2
                                                               : 3;

                q->answers[k]++;
                /* A user that exists, named in full, must be found; a cut
                 * cookie may also be ambiguous; nobody must be placed. */
                if ((c->form <= FORM_UPN && k != 0) || (c->form == FORM_CUT && k != 0 && k != 2) ||
                    (c->form == FORM_UNKNOWN && k != 1))
                        q->wrong++;
        }
}

static int cmd_query(int argc, char **argv) {
        const char *url_base, *ca, *cert, *key, *mode = "mix", *side_path = NULL;
        struct query_run q = {.entry = "ts01", .side_ms = -1};
        struct call side = {};
        bool side_started = false;
        struct curl_slist *headers = json_headers();
        unsigned conns = 16;
        double seconds, warm_s = 0.5, deadline;
        long server_pid = 0;
        struct usage u;
        char url[512];
        struct multi mu;
        int opt;

        optind = 8;
        if (argc < 8)
                die("usage: query URL CA CERT KEY RATE SECONDS [-n SESSIONS] [-c CONNS] [-m "
                    "mix|lookup|place|refused] "
                    "[-e ENTRY_NODE] [-w WARMUP_SECONDS] [-P SERVER_PID] [-x PATH]");
        url_base = argv[2];
        ca = argv[3];
        cert = argv[4];
        key = argv[5];
        q.rate = parse_double(argv[6], "RATE");
        seconds = parse_double(argv[7], "SECONDS");
        while ((opt = getopt(argc, argv, "+n:c:m:e:w:P:x:")) != -1)
                switch (opt) {
                case 'n':
                        q.sessions = (uint32_t)parse_ulong(optarg, "-n");
                        break;
                case 'c':
                        conns = (unsigned)parse_ulong(optarg, "-c");
                        break;
                case 'm':
                        mode = optarg;
                        break;
                case 'e':
                        q.entry = optarg;
                        break;
                case 'w':
                        warm_s = parse_double(optarg, "-w");
                        break;
                case 'P':
                        server_pid = (long)parse_ulong(optarg, "-P");
                        break;
                case 'x':
                        side_path = optarg;
                        break;
                default:
                        die("unknown option");
                }
        q.mode = _MODE_MAX;
        for (int k = 0; k < _MODE_MAX; k++)
                if (strcmp(mode, mode_names[k]) == 0)
                        q.mode = k;
        if (q.mode == _MODE_MAX)
                die("-m: mix, lookup, place or refused");
        if (q.rate <= 0 || conns == 0 || conns > 64)
                die("RATE must be > 0 and CONNS 1..64");
        snprintf(url, sizeof(url), "%s/v1/logon-query", url_base);

        q.warm = (size_t)(q.rate * warm_s);
        q.total = q.warm + (size_t)(q.rate * seconds);
        q.calls = calloc(conns, sizeof(*q.calls));
        q.idle = calloc(conns, sizeof(*q.idle));
        q.lat = calloc(q.total + 1, sizeof(double));
        q.lag = calloc(q.total + 1, sizeof(double));
        if (!q.calls || !q.idle || !q.lat || !q.lag)
                die("out of memory");
        multi_init(&mu, conns + 1);
        for (unsigned k = 0; k < conns; k++) {
                q.calls[k].easy = easy_new(url, ca, cert, key, headers, &q.calls[k]);
                q.idle[q.n_idle++] = &q.calls[k];
        }
        if (side_path) {
                char side_url[512];

                snprintf(side_url, sizeof(side_url), "%s%s", url_base, side_path);
                side.easy = easy_new(side_url, ca, cert, key, headers, &side);
                if (curl_easy_setopt(side.easy, CURLOPT_HTTPGET, 1L) != CURLE_OK)
                        die("curl_easy_setopt failed");
                q.side = &side;
        }

        /* Open every connection first (TLS handshakes are not what this
         * measures): conns requests at once, not counted. */
        for (unsigned k = 0; k < conns; k++)
                query_start(&q, &mu, SIZE_MAX, 0, 0);
        deadline = now_s() + 10;
        while (q.n_idle < conns && now_s() < deadline) {
                multi_step(&mu, query_done, &q);
                if (q.n_idle < conns)
                        multi_wait(&mu, 0);
        }
        if (q.n_idle < conns)
                die("the first %u requests did not finish within 10 s", conns);
        q.done = 0;

        usage_start(&u, server_pid);
        q.t0 = u.wall;
        deadline = q.t0 + seconds + warm_s + 2 * seconds + 10;
        q.side_at = q.t0 + warm_s + seconds / 2;
        while (q.done < q.total || (side_started && q.side_ms < 0)) {
                double now = now_s(), due;

                if (now > deadline)
                        break;
                if (q.side && !side_started && now >= q.side_at) {
                        side_started = true;
                        side.sent = now;
                        if (curl_multi_add_handle(mu.m, side.easy) != CURLM_OK)
                                die("curl_multi_add_handle failed");
                }
                /* Everything due goes out now, as far as connections allow;
                 * the rest waits for the next free one, its clock running. */
                while (q.next < q.total && q.n_idle > 0 && (due = q.t0 + (double)q.next / q.rate) <= now) {
                        query_start(&q, &mu, q.next, due, now);
                        q.next++;
                }
                if (multi_step(&mu, query_done, &q) > 0)
                        continue;
                if (q.next < q.total && q.n_idle > 0)
                        multi_wait(&mu, q.t0 + (double)q.next / q.rate);
                else
                        multi_wait(&mu, q.side && !side_started ? q.side_at : 0);
        }

        usage_end(&u, server_pid);
        qsort(q.lat, q.n_lat, sizeof(double), cmp_double);
        qsort(q.lag, q.n_lag, sizeof(double), cmp_double);
        {
                double first = q.t0 + (double)q.warm / q.rate;
                double span = q.last_done > first ? q.last_done - first : 0;

                printf("query mode=%s target_per_s=%.0f seconds=%.1f conns=%u sent=%zu ok=%lu errors=%lu "
                       "unfinished=%zu achieved_per_s=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f "
                       "max_ms=%.3f lag_p99_ms=%.3f session=%lu placed=%lu ambiguous=%lu other=%lu "
                       "wrong=%lu new_connections=%lu client_cpu_pct=%.0f server_cpu_pct=%.0f "
                       "server_us_per_req=%.1f steal_pct=%.1f other_cpu_pct=%.0f",
                       mode, q.rate, seconds, conns, q.next - MIN(q.next, q.warm), q.ok, q.errors,
                       q.total - q.done, span > 0 ? (double)q.ok / span : 0, pct_ms(q.lat, q.n_lat, 0.50),
                       pct_ms(q.lat, q.n_lat, 0.90), pct_ms(q.lat, q.n_lat, 0.99),
                       pct_ms(q.lat, q.n_lat, 0.999), q.n_lat ? q.lat[q.n_lat - 1] * 1e3 : 0,
                       pct_ms(q.lag, q.n_lag, 0.99), q.answers[0], q.answers[1], q.answers[2], q.answers[3],
                       q.wrong, q.connects, 100 * u.cpu / u.wall, 100 * u.server_cpu / u.wall,
                       q.done ? u.server_cpu * 1e6 / (double)q.done : 0, u.steal_pct, u.other_pct);
                if (q.side)
                        printf(" side_ms=%.1f side_status=%ld", q.side_ms, q.side_status);
                putchar('\n');
                if (q.first_error[0])
                        fprintf(stderr, "%s: first error: %s\n", prog, q.first_error);
                for (int f = 0; f < _FORM_MAX; f++)
                        if (q.by_form[f])
                                fprintf(stderr, "%s: %s: %lu\n", prog, form_names[f], q.by_form[f]);
        }
        for (unsigned k = 0; k < conns; k++)
                curl_easy_cleanup(q.calls[k].easy);
        if (side.easy)
                curl_easy_cleanup(side.easy);
        curl_multi_cleanup(mu.m);
        curl_slist_free_all(headers);
        free(q.calls);
        free(q.idle);
        free(q.lat);
        free(q.lag);
        return q.ok > 0 ? 0 : 1;
}

/* ---- events ------------------------------------------------------------- */

static const char *const event_names[] = {"logon", "disconnect", "reconnect", "logoff"};

static void event_body(struct call *c, uint32_t session_id, const char *user) {
        snprintf(c->body, sizeof(c->body),
                 "{\"event\": \"%s\", \"session_id\": %" PRIu32
                 ", \"user\": \"%s\", \"device\": \"PC-%" PRIu32 "\", \"client_address\": \"10.200.%u.%u\"}",
                 event_names[c->step], session_id, user, session_id % 100000, (session_id >> 8) & 0xff,
                 session_id & 0xff);
}

struct event_run {
        size_t total, sent, done;
        unsigned conns;
        uint32_t base;
        double *lat;
        size_t n_lat;
        unsigned long ok, errors;
        double first_measured, last_done;
        char first_error[200];
};

/* Connection k's sessions: base + k * 1,000,000 + cycle. */
static void event_next(struct event_run *e, struct multi *mu, struct call *c) {
        uint32_t sid = e->base + (uint32_t)c->index * 1000000u + c->cycle;
        char user[32];

        /* Named after the session: runs with other -b never share a user. */
        snprintf(user, sizeof(user), "evbench%010" PRIu32, sid);
        event_body(c, sid, user);
        c->sent = now_s();
        e->sent++;
        multi_add(mu, c);
}

static void event_done(struct call *c, CURLcode code, long status, void *ud) {
        struct event_run *e = ud;
        double t = now_s();

        e->done++;
        /* The first event of each connection pays its TLS handshake. */
        if (e->done > e->conns) {
                if (code != CURLE_OK || status != 200) {
                        e->errors++;
                        if (!e->first_error[0])
                                snprintf(e->first_error, sizeof(e->first_error), "%s %s, HTTP %ld: %.120s",
                                         event_names[c->step], curl_easy_strerror(code), status, c->answer);
                } else {
                        if (e->ok == 0)
                                e->first_measured = c->sent;
                        e->ok++;
                        e->lat[e->n_lat++] = t - c->sent;
                        e->last_done = t;
                }
        }
        if (++c->step == 4) {
                c->step = 0;
                c->cycle++;
        }
        /* Marks the call free for the loop in cmd_events. */
        c->due = -1;
}

static int cmd_events(int argc, char **argv) {
        const char *url_base, *ca, *cert, *key;
        struct curl_slist *headers = json_headers();
        struct event_run e = {.conns = 4, .base = EVENT_SESSION_BASE};
        _cleanup_free_ struct call *calls = NULL;
        char url[512];
        struct multi mu;
        double deadline;
        long server_pid = 0;
        struct usage u;
        int opt;

        optind = 7;
        if (argc < 7)
                die("usage: events URL CA CERT KEY N [-c CONNS] [-b FIRST_SESSION_ID] [-P SERVER_PID]");
        url_base = argv[2];
        ca = argv[3];
        cert = argv[4];
        key = argv[5];
        e.total = parse_ulong(argv[6], "N");
        while ((opt = getopt(argc, argv, "+c:b:P:")) != -1)
                switch (opt) {
                case 'c':
                        e.conns = (unsigned)parse_ulong(optarg, "-c");
                        break;
                case 'b':
                        e.base = (uint32_t)parse_ulong(optarg, "-b");
                        break;
                case 'P':
                        server_pid = (long)parse_ulong(optarg, "-P");
                        break;
                default:
                        die("unknown option");
                }
        if (e.conns == 0 || e.conns > 64 || e.total < e.conns * 2)
                die("CONNS must be 1..64 and N at least twice CONNS");
        snprintf(url, sizeof(url), "%s/v1/sessions/event", url_base);
        calls = calloc(e.conns, sizeof(*calls));
        e.lat = calloc(e.total, sizeof(double));
        if (!calls || !e.lat)
                die("out of memory");
        multi_init(&mu, e.conns);
        for (unsigned k = 0; k < e.conns; k++) {
                calls[k].easy = easy_new(url, ca, cert, key, headers, &calls[k]);
                calls[k].index = k;
        }

        usage_start(&u, server_pid);
        deadline = u.wall + 120;
        for (unsigned k = 0; k < e.conns; k++)
                event_next(&e, &mu, &calls[k]);
        while (e.done < e.sent && now_s() < deadline) {
                if (multi_step(&mu, event_done, &e) > 0) {
                        /* Closed loop: a connection that got its answer sends
                         * its next event at once. */
                        for (unsigned k = 0; k < e.conns; k++)
                                if (calls[k].due < 0) {
                                        calls[k].due = 0;
                                        if (e.sent < e.total)
                                                event_next(&e, &mu, &calls[k]);
                                }
                        continue;
                }
                multi_wait(&mu, 0);
        }
        usage_end(&u, server_pid);
        qsort(e.lat, e.n_lat, sizeof(double), cmp_double);
        {
                double span = e.last_done - e.first_measured;

                printf("events conns=%u sent=%zu ok=%lu errors=%lu unfinished=%zu events_per_s=%.0f "
                       "p50_ms=%.3f "
                       "p90_ms=%.3f p99_ms=%.3f max_ms=%.3f client_cpu_pct=%.0f server_cpu_pct=%.0f "
                       "server_us_per_event=%.1f steal_pct=%.1f other_cpu_pct=%.0f\n",
                       e.conns, e.sent, e.ok, e.errors, e.sent - e.done, span > 0 ? (double)e.ok / span : 0,
                       pct_ms(e.lat, e.n_lat, 0.50), pct_ms(e.lat, e.n_lat, 0.90),
                       pct_ms(e.lat, e.n_lat, 0.99), e.n_lat ? e.lat[e.n_lat - 1] * 1e3 : 0,
                       100 * u.cpu / u.wall, 100 * u.server_cpu / u.wall,
                       e.done ? u.server_cpu * 1e6 / (double)e.done : 0, u.steal_pct, u.other_pct);
        }
        if (e.first_error[0])
                fprintf(stderr, "%s: first error: %s\n", prog, e.first_error);
        for (unsigned k = 0; k < e.conns; k++)
                curl_easy_cleanup(calls[k].easy);
        curl_multi_cleanup(mu.m);
        curl_slist_free_all(headers);
        free(e.lat);
        return e.ok > 0 ? 0 : 1;
}

/* ---- propagate ---------------------------------------------------------- */

/* Is the change the directory answered with (revision rev) in the map? */
static bool map_shows(int fd, const struct tsf_session_key *k, int step, uint32_t node_id, uint32_t sid,
                      uint64_t rev) {
        struct tsf_session_value v;

        if (bpf_map_lookup_elem(fd, k, &v) < 0) {
                if (errno != ENOENT)
                        die("bpf_map_lookup_elem: %s", strerror(errno));
                return step == 3; /* logoff: gone */
        }
        if (step == 3 || v.node_id != node_id || v.session_id != sid || v.revision < rev)
                return false;
        return v.state == (step == 1 ? TSF_SESSION_DISCONNECTED : TSF_SESSION_ACTIVE);
}

static int cmd_propagate(int argc, char **argv) {
        LIBBPF_OPTS(bpf_obj_get_opts, get_opts, .file_flags = BPF_F_RDONLY);
        const char *url_base, *ca, *cert, *key, *pin;
        struct curl_slist *headers = json_headers();
        _cleanup_close_ int fd = -1;
        _cleanup_free_ double *prop = NULL, *after = NULL, *commit = NULL;
        unsigned long n, node_id = 1, base = 3000000000u, ok = 0, timeouts = 0, errors = 0;
        double timeout = 5;
        size_t n_ok = 0;
        struct call c = {};
        char url[512];
        int opt;

        optind = 8;
        if (argc < 8)
                die("usage: propagate URL CA CERT KEY PIN N [-a NODE_ID] [-b FIRST_SESSION_ID] [-t "
                    "TIMEOUT_S]");
        url_base = argv[2];
        ca = argv[3];
        cert = argv[4];
        key = argv[5];
        pin = argv[6];
        n = parse_ulong(argv[7], "N");
        while ((opt = getopt(argc, argv, "+a:b:t:")) != -1)
                switch (opt) {
                case 'a':
                        node_id = parse_ulong(optarg, "-a");
                        break;
                case 'b':
                        base = parse_ulong(optarg, "-b");
                        break;
                case 't':
                        timeout = parse_double(optarg, "-t");
                        break;
                default:
                        die("unknown option");
                }
        fd = bpf_obj_get_opts(pin, &get_opts);
        if (fd < 0)
                die("%s: %s", pin, strerror(errno));
        snprintf(url, sizeof(url), "%s/v1/sessions/event", url_base);
        prop = calloc(n + 1, sizeof(double));
        after = calloc(n + 1, sizeof(double));
        commit = calloc(n + 1, sizeof(double));
        if (!prop || !after || !commit)
                die("out of memory");
        c.easy = easy_new(url, ca, cert, key, headers, &c);

        /* One session per four events: logon, disconnect, reconnect,
         * logoff; each event waits for the previous one to show. */
        for (unsigned long i = 0; i < n; i++) {
                uint32_t sid = (uint32_t)(base + i / 4);
                struct tsf_session_key k;
                struct tsf_userkey uk;
                char user[32];
                const char *revp;
                double t0, t1, t2, until;
                long status = 0;
                CURLcode code;
                uint64_t rev;

                c.step = (int)(i % 4);
                snprintf(user, sizeof(user), "propbench%06lu", i / 4);
                if (tsf_userkey_parse(user, strlen(user), &uk) < 0)
                        die("%s: not a user name", user);
                tsf_session_key_from_user(&k, tsf_userkey_index(&uk));
                event_body(&c, sid, user);
                call_prepare(&c);
                t0 = now_s();
                code = curl_easy_perform(c.easy);
                t1 = now_s();
                (void)curl_easy_getinfo(c.easy, CURLINFO_RESPONSE_CODE, &status);
                revp = json_field(c.answer, "revision");
                if (code != CURLE_OK || status != 200 || !revp) {
                        errors++;
                        fprintf(stderr, "%s: %s of %s: %s, HTTP %ld: %.160s\n", prog, event_names[c.step],
                                user, curl_easy_strerror(code), status, c.answer);
                        if (errors > 10)
                                die("too many errors");
                        continue;
                }
                rev = strtoull(revp, NULL, 10);
                /* Poll the map: each lookup is one syscall; between them the
                 * CPU goes to the agents (two cores for everything here). */
                until = t1 + timeout;
                for (;;) {
                        struct timespec nap = {.tv_nsec = 50 * 1000};

                        t2 = now_s();
                        if (map_shows(fd, &k, c.step, (uint32_t)node_id, sid, rev))
                                break;
                        if (t2 > until) {
                                t2 = -1;
                                break;
                        }
                        nanosleep(&nap, NULL);
                }
                if (t2 < 0) {
                        timeouts++;
                        fprintf(stderr, "%s: %s of %s (revision %" PRIu64 ") not in the map after %.1f s\n",
                                prog, event_names[c.step], user, rev, timeout);
                        if (timeouts > 5)
                                die("too many timeouts");
                        continue;
                }
                /* The connection's first request pays its TLS handshake. */
                if (i == 0)
                        continue;
                ok++;
                commit[n_ok] = t1 - t0;
                after[n_ok] = t2 - t1;
                prop[n_ok++] = t2 - t0;
        }
        qsort(prop, n_ok, sizeof(double), cmp_double);
        qsort(after, n_ok, sizeof(double), cmp_double);
        qsort(commit, n_ok, sizeof(double), cmp_double);
        printf("propagate events=%lu ok=%lu errors=%lu timeouts=%lu p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f "
               "max_ms=%.2f commit_p50_ms=%.2f commit_p99_ms=%.2f after_commit_p50_ms=%.2f "
               "after_commit_p99_ms=%.2f\n",
               n, ok, errors, timeouts, pct_ms(prop, n_ok, 0.50), pct_ms(prop, n_ok, 0.90),
               pct_ms(prop, n_ok, 0.99), n_ok ? prop[n_ok - 1] * 1e3 : 0, pct_ms(commit, n_ok, 0.50),
               pct_ms(commit, n_ok, 0.99), pct_ms(after, n_ok, 0.50), pct_ms(after, n_ok, 0.99));
        curl_easy_cleanup(c.easy);
        curl_slist_free_all(headers);
        return ok > 0 ? 0 : 1;
}

/* ---- get ---------------------------------------------------------------- */

static size_t on_count(char *p, size_t size, size_t nmemb, void *userdata) {
        *(size_t *)userdata += size * nmemb;
        return size * nmemb;
}

/* One GET, timed from the first byte sent to the last received (the
 * connection's handshake excluded: a client that polls keeps it open). */
static int cmd_get(int argc, char **argv) {
        struct curl_slist *headers = json_headers();
        struct call c = {};
        char url[512];
        size_t bytes = 0;
        double total = 0, pre = 0;
        long status = 0;
        CURLcode code;

        if (argc != 7)
                die("usage: get URL CA CERT KEY PATH");
        snprintf(url, sizeof(url), "%s%s", argv[2], argv[6]);
        c.easy = easy_new(url, argv[3], argv[4], argv[5], headers, &c);
        if (curl_easy_setopt(c.easy, CURLOPT_HTTPGET, 1L) != CURLE_OK ||
            curl_easy_setopt(c.easy, CURLOPT_WRITEFUNCTION, on_count) != CURLE_OK ||
            curl_easy_setopt(c.easy, CURLOPT_WRITEDATA, &bytes) != CURLE_OK ||
            curl_easy_setopt(c.easy, CURLOPT_TIMEOUT_MS, 60000L) != CURLE_OK)
                die("curl_easy_setopt failed");
        code = curl_easy_perform(c.easy);
        (void)curl_easy_getinfo(c.easy, CURLINFO_RESPONSE_CODE, &status);
        (void)curl_easy_getinfo(c.easy, CURLINFO_TOTAL_TIME, &total);
        (void)curl_easy_getinfo(c.easy, CURLINFO_APPCONNECT_TIME, &pre);
        printf("get path=%s status=%ld ms=%.1f bytes=%zu\n", argv[6], code == CURLE_OK ? status : 0,
               (total - pre) * 1e3, bytes);
        curl_easy_cleanup(c.easy);
        curl_slist_free_all(headers);
        return code == CURLE_OK && status == 200 ? 0 : 1;
}

/* ---- jitter ------------------------------------------------------------- */

/* How late this machine wakes a thread that sleeps 1 ms, the way the
 * query generator sleeps (pselect): the floor under every latency figure
 * here. A VM's vCPU that the host deschedules shows up as a long tail. */
static int cmd_jitter(int argc, char **argv) {
        _cleanup_free_ double *late = NULL;
        size_t n;

        if (argc != 2)
                die("usage: jitter SECONDS");
        n = (size_t)(parse_double(argv[1], "SECONDS") * 1000);
        if (n == 0)
                die("SECONDS: at least 0.001");
        late = calloc(n, sizeof(double));
        if (!late)
                die("out of memory");
        for (size_t i = 0; i < n; i++) {
                struct timespec ts = {.tv_nsec = 1000 * 1000};
                double t0 = now_s();

                if (pselect(0, NULL, NULL, NULL, &ts, NULL) < 0 && errno != EINTR)
                        die("pselect: %s", strerror(errno));
                late[i] = now_s() - t0 - 1e-3;
        }
        qsort(late, n, sizeof(double), cmp_double);
        printf("jitter samples=%zu p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f\n", n,
               pct_ms(late, n, 0.50), pct_ms(late, n, 0.99), pct_ms(late, n, 0.999), late[n - 1] * 1e3);
        return 0;
}

int main(int argc, char **argv) {
        int r;

        /* The store logs at debug level only; keep the figures clean. */
        tsf_log_set_max_level(LOG_WARNING);
        tsf_log_parse_environment();
        if (argc < 2)
                die("usage: dir_bench load|query|events|propagate|get|jitter ... (see the top of "
                    "dir_bench.c)");
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
                die("curl_global_init failed");
        if (strcmp(argv[1], "load") == 0)
                r = cmd_load(argc - 1, argv + 1);
        else if (strcmp(argv[1], "query") == 0)
                r = cmd_query(argc, argv);
        else if (strcmp(argv[1], "events") == 0)
                r = cmd_events(argc, argv);
        else if (strcmp(argv[1], "propagate") == 0)
                r = cmd_propagate(argc, argv);
        else if (strcmp(argv[1], "get") == 0)
                r = cmd_get(argc, argv);
        else if (strcmp(argv[1], "jitter") == 0)
                r = cmd_jitter(argc - 1, argv + 1);
        else
                die("unknown command '%s' (load, query, events, propagate, get, jitter)", argv[1]);
        curl_global_cleanup();
        return r;
}
