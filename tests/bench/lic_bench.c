/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The licensing role under load (docs/bench.md, "Licensing"): the programs
 * tests/bench/lic.sh runs. Figures, not assertions.
 *
 *   lic_bench run URL CA CERT KEY N [-c CONNS] [-b FIRST_DEVICE] [-o OPS] [-l LENDER] [-t TOKENS]
 *                 [-P NAME=PID]...
 *   lic_bench load DB DEVICES [-b FIRST_DEVICE]
 *   lic_bench count DB
 *   lic_bench requests SOCKET
 *
 * run drives a license server's API over mutual TLS with lib/api_client
 * (libcurl's multi interface on an sd-event loop, the agent's own client),
 * closed loop: CONNS requests in flight, each connection sending its next
 * request as soon as its answer came. OPS (default
 * "refused,temporary,validate,cal") are phases run one after the other on
 * the same connections, N requests each, for the devices FIRST_DEVICE ..
 * FIRST_DEVICE + N - 1 (hardware id, device and user name a function of
 * the number, so runs with other -b never share a device):
 *
 *   refused    POST /v1/licenses/temporary {"hardware_id": 0}: the handler
 *              refuses it (400) before the store: TLS, HTTP, JSON, routing
 *              and an error answer only (the baseline)
 *   inventory  GET /v1/inventory: a read of the packs, no write
 *   temporary  POST /v1/licenses/temporary for each device (a new record)
 *   validate   POST /v1/licenses/validate of each device's temporary token
 *   cal        POST /v1/licenses/cal presenting it: a new Device CAL
 *
 * validate and cal need the devices' temporary tokens: from a temporary
 * phase before them, or from -t TOKENS, a file of token ids (hex, one per
 * device, in order) that a run with a temporary phase writes and a later
 * run reads (so that a tracer can watch the CAL requests alone). Every
 * answer is checked (status, kind;
 * with -l, a CAL must name LENDER as its lender, without -l none); a
 * wrong one counts as an error. Before the first phase CONNS refused
 * requests open the connections; TLS handshakes are not measured.
 *
 * -P NAME=PID (up to 4): a server process whose CPU time and storage
 * writes (/proc/PID/io write_bytes) over each phase are reported, per
 * request. other_cpu_pct is the CPU everything else on the machine took
 * (a build next to the benchmark shows there), in percent of one CPU;
 * io_some_pct the share of the time some task waited for storage
 * (/proc/pressure/io), which slows every durable commit.
 *
 * load fills a license store through the store API the way the role
 * would: a pack of DEVICES CALs, then per device a temporary token, its
 * validation and a Device CAL (two records, three audit rows), in
 * transactions of 10,000 operations (one fsync each). count prints the
 * records and audit rows of a store. requests prints a server's
 * tsfarm_api_requests_total, read from GET /metrics on its UNIX socket
 * (how many requests a lender served per CAL it lent).
 *
 * Every command prints key=value figures on stdout, one line per phase
 * (times in ms); tests/bench/lic.sh collects them.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <systemd/sd-event.h>

#include "agent/licensing/store.h"
#include "tsfarm/api.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/hex.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tests/bench/benchutil.h"

#define HWID_SIZE 32 /* bytes; hex in JSON */
#define CALL_TIMEOUT (10 * USEC_PER_SEC)
#define RUN_DEADLINE_S 120.0
#define LOAD_BATCH 10000u /* store operations per transaction when loading */
#define MAX_PIDS 4

const char *prog = "lic_bench";

/* ---- what the processes and the machine used ------------------------------ */

struct proc_use {
        char name[16];
        long pid;
        double cpu;                /* s, user + system */
        unsigned long long wbytes; /* /proc/PID/io write_bytes */
};

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

/* CPU seconds of all of pid's threads: their run times in ns from
 * /proc/PID/task/TID/schedstat (utime + stime from /proc/PID/stat count
 * in clock ticks, too coarse for a few hundred requests), else 0. */
static double proc_cpu_s(long pid) {
        char path[64];
        _cleanup_(closedirp) DIR *d = NULL;
        unsigned long long sum = 0, ns;
        struct dirent *de;

        snprintf(path, sizeof(path), "/proc/%ld/task", pid);
        d = opendir(path);
        if (!d)
                return 0;
        while ((de = readdir(d))) {
                char p[300];
                FILE *f;

                if (de->d_name[0] == '.')
                        continue;
                snprintf(p, sizeof(p), "/proc/%ld/task/%s/schedstat", pid, de->d_name);
                f = fopen(p, "re");
                if (!f)
                        continue;
                if (fscanf(f, "%llu", &ns) == 1)
                        sum += ns;
                fclose(f);
        }
        return (double)sum / 1e9;
}

static void proc_read(struct proc_use *p) {
        char path[64], buf[256];
        FILE *f;

        p->cpu = proc_cpu_s(p->pid);
        p->wbytes = 0;
        snprintf(path, sizeof(path), "/proc/%ld/io", p->pid);
        f = fopen(path, "re");
        if (f) {
                while (fgets(buf, sizeof(buf), f))
                        if (sscanf(buf, "write_bytes: %llu", &p->wbytes) == 1)
                                break;
                fclose(f);
        }
}

/* Busy CPU time of the whole machine, in s (all CPUs, steal excluded). */
static double machine_busy_s(void) {
        unsigned long long v[8] = {};
        _cleanup_fclose_ FILE *f = fopen("/proc/stat", "re");

        if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                         &v[5], &v[6], &v[7]) != 8)
                return 0;
        return (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / (double)sysconf(_SC_CLK_TCK);
}

/* /proc/pressure/io "some" total: µs during which a task waited for
 * storage; 0 without PSI. */
static double io_some_us(void) {
        unsigned long long total = 0;
        _cleanup_fclose_ FILE *f = fopen("/proc/pressure/io", "re");

        if (!f || fscanf(f, "some avg10=%*f avg60=%*f avg300=%*f total=%llu", &total) != 1)
                return 0;
        return (double)total;
}

static double self_cpu_s(void) {
        struct rusage ru;

        if (getrusage(RUSAGE_SELF, &ru) < 0)
                return 0;
        return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
               (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- devices ---------------------------------------------------------------- */

static uint64_t mix64(uint64_t x) {
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ULL;
        x ^= x >> 33;
        return x;
}

/* Device i's hardware id: its number, then bytes that look random. */
static void device_hwid(uint64_t i, uint8_t out[static HWID_SIZE]) {
        for (int k = 0; k < 8; k++)
                out[k] = (uint8_t)(i >> (56 - 8 * k));
        for (int w = 0; w < 3; w++) {
                uint64_t h = mix64(i * 4 + (uint64_t)w + 1);

                for (int k = 0; k < 8; k++)
                        out[8 + 8 * w + k] = (uint8_t)(h >> (8 * k));
        }
}

/* ---- run ------------------------------------------------------------------ */

enum op { OP_REFUSED, OP_INVENTORY, OP_TEMPORARY, OP_VALIDATE, OP_CAL, _OP_MAX };
static const char *const op_names[_OP_MAX] = {"refused", "inventory", "temporary", "validate", "cal"};

struct run;

struct slot {
        struct run *run;
        size_t index; /* the request's number in its phase; SIZE_MAX: warm-up */
        double sent;
};

struct run {
        sd_event *event;
        sd_event_source *kick; /* see start_call() */
        struct tsf_api_client *client;
        const char *base_url;
        enum op op;
        size_t n, sent, done;
        unsigned conns;
        uint64_t first_device;
        uint8_t (*token)[LIC_TOKEN_ID_SIZE]; /* each device's temporary token */
        bool *have_token;
        double *lat;
        size_t n_lat;
        unsigned long ok, errors, lent;
        double first_sent, last_done;
        const char *lender;
        char first_error[240];
        bool failed;   /* a call could not even start */
        bool finished; /* the phase is over: run_phase() returns */
};

static void run_error(struct run *r, const char *fmt, ...) _printf_(2, 3);
static void run_error(struct run *r, const char *fmt, ...) {
        va_list ap;

        r->errors++;
        if (r->first_error[0])
                return;
        va_start(ap, fmt);
        vsnprintf(r->first_error, sizeof(r->first_error), fmt, ap);
        va_end(ap);
}

static void on_done(int res, long status, json_t *reply, const char *error, void *userdata);

static void start_call(struct run *r, struct slot *s, size_t index) {
        _cleanup_(json_decrefp) json_t *body = NULL;
        char url[512], hwid[2 * HWID_SIZE + 1], tok[2 * LIC_TOKEN_ID_SIZE + 1], name[32], user[32];
        const char *method = "POST", *path = "/v1/licenses/temporary";
        enum op op = index == SIZE_MAX ? OP_REFUSED : r->op;
        uint64_t dev = r->first_device + (index == SIZE_MAX ? 0 : index);
        uint8_t hw[HWID_SIZE];
        int k;

        device_hwid(dev, hw);
        tsf_hex_encode(hw, sizeof(hw), hwid);
        snprintf(name, sizeof(name), "BENCH-%" PRIu64, dev);
        snprintf(user, sizeof(user), "bench%" PRIu64, dev);
        switch (op) {
        case OP_REFUSED:
                body = json_pack("{s:i}", "hardware_id", 0);
                break;
        case OP_INVENTORY:
                method = "GET";
                path = "/v1/inventory";
                break;
        case OP_TEMPORARY:
                body = json_pack("{s:s, s:s, s:s}", "hardware_id", hwid, "device_name", name, "user_name",
                                 user);
                break;
        case OP_VALIDATE:
        case OP_CAL:
                if (!r->have_token[index])
                        die("%s of device %" PRIu64 ": no temporary token (run the temporary phase first)",
                            op_names[op], dev);
                tsf_hex_encode(r->token[index], LIC_TOKEN_ID_SIZE, tok);
                if (op == OP_VALIDATE) {
                        path = "/v1/licenses/validate";
                        body = json_pack("{s:s, s:s}", "token_id", tok, "hardware_id", hwid);
                } else {
                        path = "/v1/licenses/cal";
                        body = json_pack("{s:s, s:s, s:s, s:s}", "hardware_id", hwid, "device_name", name,
                                         "user_name", user, "presented_token_id", tok);
                }
                break;
        default:
                die("unknown operation");
        }
        if (!body && op != OP_INVENTORY)
                die("out of memory");
        snprintf(url, sizeof(url), "%s%s", r->base_url, path);
        s->index = index;
        s->sent = now_s();
        if (index != SIZE_MAX)
                r->sent++;
        k = tsf_api_client_start(r->client, method, url, body, CALL_TIMEOUT, on_done, s, NULL);
        /* curl asks to be called at once for a new transfer, and
         * lib/api_client arms that timer with 1 ms accuracy: sd-event then
         * sleeps until the end of that window, 1 ms added to every call
         * (docs/bench.md, "Licensing"). One turn of a no-op defer source
         * makes the loop look at its timers without sleeping. */
        if (k >= 0)
                k = sd_event_source_set_enabled(r->kick, SD_EVENT_ONESHOT);
        if (k < 0) {
                run_error(r, "cannot start a call: %s", strerror(-k));
                r->failed = r->finished = true;
        }
}

/* Checks one answer; true when it is what the phase expects. */
static bool answer_ok(struct run *r, size_t index, long status, json_t *reply) {
        const char *kind = json_string_value(json_object_get(reply, "kind"));
        const char *lender = json_string_value(json_object_get(reply, "lender"));
        const char *id;

        switch (index == SIZE_MAX ? OP_REFUSED : r->op) {
        case OP_REFUSED:
                return status == 400;
        case OP_INVENTORY:
                return status == 200 && json_is_array(json_object_get(reply, "packs"));
        case OP_TEMPORARY:
                id = json_string_value(json_object_get(reply, "token_id"));
                if (status != 200 || !kind || strcmp(kind, "temporary") != 0 || !id ||
                    tsf_hex_decode(id, strlen(id), r->token[index], LIC_TOKEN_ID_SIZE, NULL) !=
                            LIC_TOKEN_ID_SIZE)
                        return false;
                r->have_token[index] = true;
                return true;
        case OP_VALIDATE:
                return status == 200;
        case OP_CAL:
                if (status != 200 || !kind || strcmp(kind, "device-cal") != 0)
                        return false;
                if (lender)
                        r->lent++;
                return r->lender ? lender && strcmp(lender, r->lender) == 0 : !lender;
        default:
                return false;
        }
}

static void on_done(int res, long status, json_t *reply, const char *error, void *userdata) {
        struct slot *s = userdata;
        struct run *r = s->run;
        double t = now_s();

        if (s->index != SIZE_MAX) {
                r->done++;
                if (res < 0)
                        run_error(r, "%s: %s", op_names[r->op], error && *error ? error : strerror(-res));
                else if (!answer_ok(r, s->index, status, reply)) {
                        _cleanup_free_ char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;

                        run_error(r, "%s: HTTP %ld %.160s", op_names[r->op], status, text ?: "");
                } else {
                        r->ok++;
                        r->lat[r->n_lat++] = t - s->sent;
                        r->last_done = t;
                }
        } else {
                r->done++;
                if (res < 0 || !answer_ok(r, SIZE_MAX, status, reply))
                        run_error(r, "warm-up: %s, HTTP %ld", res < 0 && error ? error : "", status);
        }
        /* Closed loop: the next request at once, on the freed connection. */
        if (s->index != SIZE_MAX && r->sent < r->n)
                start_call(r, s, r->sent);
        else if (r->done >= (s->index == SIZE_MAX ? r->conns : r->n))
                r->finished = true;
}

static int on_kick(sd_event_source *es, void *userdata) {
        return 0;
}

static int on_deadline(sd_event_source *es, uint64_t usec, void *userdata) {
        struct run *r = userdata;

        run_error(r, "the phase did not finish within %.0f s", RUN_DEADLINE_S);
        r->failed = r->finished = true;
        return 0;
}

/* Runs one phase (or the warm-up: conns refused requests at once). */
static void run_phase(struct run *r, struct slot *slots, bool warmup) {
        _cleanup_(sd_event_source_unrefp) sd_event_source *deadline = NULL;
        int k;

        r->sent = r->done = 0;
        r->finished = false;
        r->first_sent = now_s();
        k = sd_event_add_time_relative(r->event, &deadline, CLOCK_MONOTONIC,
                                       (uint64_t)(RUN_DEADLINE_S * USEC_PER_SEC), 0, on_deadline, r);
        if (k < 0)
                die("sd_event_add_time_relative: %s", strerror(-k));
        for (unsigned c = 0; c < r->conns && (warmup || c < r->n); c++)
                start_call(r, &slots[c], warmup ? SIZE_MAX : r->sent);
        /* Not sd_event_loop(): an event loop that exited cannot run again. */
        while (!r->finished) {
                k = sd_event_run(r->event, UINT64_MAX);
                if (k < 0)
                        die("sd_event_run: %s", strerror(-k));
        }
}

/* -t: the devices' temporary token ids, one line of hex each. */
static void tokens_write(const struct run *r, const char *path) {
        _cleanup_fclose_ FILE *f = fopen(path, "we");
        char hex[2 * LIC_TOKEN_ID_SIZE + 1];

        if (!f)
                die("%s: %s", path, strerror(errno));
        for (size_t i = 0; i < r->n; i++) {
                if (r->have_token[i])
                        tsf_hex_encode(r->token[i], LIC_TOKEN_ID_SIZE, hex);
                else
                        hex[0] = '\0';
                fprintf(f, "%s\n", hex);
        }
        if (fflush(f) != 0 || ferror(f))
                die("%s: write failed", path);
}

static void tokens_read(struct run *r, const char *path) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        char line[128];

        if (!f)
                die("%s: %s", path, strerror(errno));
        for (size_t i = 0; i < r->n && fgets(line, sizeof(line), f); i++)
                r->have_token[i] = tsf_hex_decode(line, strcspn(line, "\n"), r->token[i], LIC_TOKEN_ID_SIZE,
                                                  NULL) == LIC_TOKEN_ID_SIZE;
}

static int cmd_run(int argc, char **argv) {
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *client = NULL;
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_free_ struct slot *slots = NULL;
        struct run r = {.conns = 1, .first_device = 1000000};
        struct proc_use procs[MAX_PIDS];
        const char *ops = "refused,temporary,validate,cal", *tokens = NULL;
        bool issued_tokens = false;
        _cleanup_free_ char *ops_copy = NULL;
        char *save = NULL;
        unsigned n_procs = 0;
        int opt, k, rc = 0;

        optind = 7;
        if (argc < 7)
                die("usage: run URL CA CERT KEY N [-c CONNS] [-b FIRST_DEVICE] [-o OPS] [-l LENDER] [-t "
                    "TOKENS] [-P NAME=PID]...");
        r.base_url = argv[2];
        r.n = parse_ulong(argv[6], "N");
        while ((opt = getopt(argc, argv, "+c:b:o:l:t:P:")) != -1)
                switch (opt) {
                case 'c':
                        r.conns = (unsigned)parse_ulong(optarg, "-c");
                        break;
                case 'b':
                        r.first_device = parse_ulong(optarg, "-b");
                        break;
                case 'o':
                        ops = optarg;
                        break;
                case 'l':
                        r.lender = optarg;
                        break;
                case 't':
                        tokens = optarg;
                        break;
                case 'P': {
                        const char *eq = strchr(optarg, '=');

                        if (!eq || eq == optarg || (size_t)(eq - optarg) >= sizeof(procs[0].name) ||
                            n_procs == MAX_PIDS)
                                die("-P NAME=PID, at most %d", MAX_PIDS);
                        snprintf(procs[n_procs].name, sizeof(procs[0].name), "%.*s", (int)(eq - optarg),
                                 optarg);
                        procs[n_procs++].pid = (long)parse_ulong(eq + 1, "-P");
                        break;
                }
                default:
                        die("unknown option");
                }
        if (r.n == 0 || r.conns == 0 || r.conns > 64)
                die("N must be > 0 and CONNS 1..64");

        k = sd_event_new(&event);
        if (k < 0)
                die("sd_event_new: %s", strerror(-k));
        k = tsf_api_client_new(&(struct tsf_api_client_config){.ca_file = argv[3],
                                                               .cert_file = argv[4],
                                                               .key_file = argv[5],
                                                               .timeout = CALL_TIMEOUT},
                               &client);
        if (k >= 0)
                k = tsf_api_client_attach_event(client, event);
        if (k < 0)
                die("the API client: %s", strerror(-k));
        r.event = event;
        r.client = client;
        k = sd_event_add_defer(event, &r.kick, on_kick, NULL);
        if (k >= 0)
                k = sd_event_source_set_enabled(r.kick, SD_EVENT_OFF);
        if (k < 0)
                die("sd_event_add_defer: %s", strerror(-k));
        slots = calloc(r.conns, sizeof(*slots));
        r.token = calloc(r.n, sizeof(*r.token));
        r.have_token = calloc(r.n, sizeof(*r.have_token));
        r.lat = calloc(r.n, sizeof(*r.lat));
        ops_copy = strdup(ops);
        if (!slots || !r.token || !r.have_token || !r.lat || !ops_copy)
                die("out of memory");
        for (unsigned c = 0; c < r.conns; c++)
                slots[c].run = &r;
        if (tokens && access(tokens, F_OK) == 0)
                tokens_read(&r, tokens);

        /* Opens the connections: conns requests at once, not measured. */
        run_phase(&r, slots, true);
        if (r.errors)
                die("warm-up failed: %s", r.first_error);

        for (char *w = strtok_r(ops_copy, ",", &save); w; w = strtok_r(NULL, ",", &save)) {
                double t0, busy0, self0, io0, wall, other;

                r.op = _OP_MAX;
                for (int o = 0; o < _OP_MAX; o++)
                        if (strcmp(w, op_names[o]) == 0)
                                r.op = o;
                if (r.op == _OP_MAX)
                        die("-o: refused, inventory, temporary, validate, cal");
                r.ok = r.errors = r.lent = 0;
                r.n_lat = 0;
                r.first_error[0] = '\0';
                for (unsigned p = 0; p < n_procs; p++)
                        proc_read(&procs[p]);
                busy0 = machine_busy_s();
                self0 = self_cpu_s();
                io0 = io_some_us();
                t0 = now_s();
                run_phase(&r, slots, false);
                wall = now_s() - t0;
                other = machine_busy_s() - busy0 - (self_cpu_s() - self0);
                qsort(r.lat, r.n_lat, sizeof(double), cmp_double);
                {
                        double span = r.last_done - r.first_sent;

                        printf("phase=%s conns=%u n=%zu ok=%lu errors=%lu lent=%lu per_s=%.0f p50_ms=%.3f "
                               "p90_ms=%.3f p99_ms=%.3f max_ms=%.3f client_cpu_pct=%.0f",
                               op_names[r.op], r.conns, r.n, r.ok, r.errors, r.lent,
                               r.ok && span > 0 ? (double)r.ok / span : 0, pct_ms(r.lat, r.n_lat, 0.50),
                               pct_ms(r.lat, r.n_lat, 0.90), pct_ms(r.lat, r.n_lat, 0.99),
                               r.n_lat ? r.lat[r.n_lat - 1] * 1e3 : 0,
                               wall > 0 ? 100 * (self_cpu_s() - self0) / wall : 0);
                }
                for (unsigned p = 0; p < n_procs; p++) {
                        struct proc_use before = procs[p];

                        proc_read(&procs[p]);
                        other -= procs[p].cpu - before.cpu;
                        printf(" %s_us_per_req=%.1f %s_cpu_pct=%.0f %s_wbytes_per_req=%.0f", procs[p].name,
                               r.done ? (procs[p].cpu - before.cpu) * 1e6 / (double)r.done : 0,
                               procs[p].name, wall > 0 ? 100 * (procs[p].cpu - before.cpu) / wall : 0,
                               procs[p].name,
                               r.done ? (double)(procs[p].wbytes - before.wbytes) / (double)r.done : 0);
                }
                printf(" other_cpu_pct=%.0f io_some_pct=%.0f\n", wall > 0 ? MAX(0.0, 100 * other / wall) : 0,
                       wall > 0 ? 100 * (io_some_us() - io0) / 1e6 / wall : 0);
                fflush(stdout);
                if (r.first_error[0])
                        fprintf(stderr, "%s: %s: first error: %s\n", prog, op_names[r.op], r.first_error);
                if (r.op == OP_TEMPORARY)
                        issued_tokens = true;
                if (r.errors || r.failed)
                        rc = 1;
                if (r.failed)
                        break;
        }
        if (tokens && issued_tokens)
                tokens_write(&r, tokens);
        sd_event_source_unref(r.kick);
        free(r.token);
        free(r.have_token);
        free(r.lat);
        return rc;
}

/* ---- load and count --------------------------------------------------------- */

static void store_check(int r, const char *what, const char *reason) {
        if (r < 0)
                die("%s: %s%s%s", what, strerror(-r), reason ? ": " : "", reason ? reason : "");
}

static int cmd_load(int argc, char **argv) {
        _cleanup_(lic_store_closep) struct lic_store *s = NULL;
        unsigned long devices, ops = 0, committed = 0;
        uint64_t first = 5000000000ULL;
        char pack[32];
        double t0, t1;
        int opt, r;

        optind = 4;
        if (argc < 4)
                die("usage: load DB DEVICES [-b FIRST_DEVICE]");
        devices = parse_ulong(argv[3], "DEVICES");
        while ((opt = getopt(argc, argv, "+b:")) != -1)
                switch (opt) {
                case 'b':
                        first = parse_ulong(optarg, "-b");
                        break;
                default:
                        die("unknown option");
                }
        if (devices == 0 || devices > LIC_PACK_COUNT_MAX)
                die("DEVICES: 1..%u", LIC_PACK_COUNT_MAX);

        r = lic_store_open(argv[2], &s);
        store_check(r, argv[2], NULL);
        snprintf(pack, sizeof(pack), "bulk-%" PRIu64, first);
        store_check(lic_pack_install(s, pack, "2025", (uint32_t)devices), "install a pack", NULL);

        t0 = now_s();
        store_check(lic_store_batch_begin(s), "batch", NULL);
        for (unsigned long i = 0; i < devices; i++) {
                uint8_t hw[HWID_SIZE];
                char name[32], user[32];
                const char *reason = NULL;
                struct lic_token temp, cal;
                struct lic_device dev = {
                        .hardware_id = hw,
                        .hardware_id_len = sizeof(hw),
                        .device_name = name,
                        .user_name = user,
                };

                device_hwid(first + i, hw);
                snprintf(name, sizeof(name), "BENCH-%" PRIu64, first + i);
                snprintf(user, sizeof(user), "bench%" PRIu64, first + i);
                store_check(lic_temporary_issue(s, &dev, NULL, NULL, &temp), "temporary", NULL);
                store_check(lic_temporary_validate(s, temp.token_id, hw, sizeof(hw), &reason), "validate",
                            reason);
                store_check(lic_cal_issue(s, &dev, "2025", temp.token_id, NULL, &cal, &reason), "cal",
                            reason);
                ops += 3;
                if (ops - committed >= LOAD_BATCH && i + 1 < devices) {
                        store_check(lic_store_batch_commit(s), "commit", NULL);
                        store_check(lic_store_batch_begin(s), "batch", NULL);
                        committed = ops;
                }
        }
        store_check(lic_store_batch_commit(s), "commit", NULL);
        t1 = now_s();
        printf("load devices=%lu records=%lu audit_rows=%lu seconds=%.2f records_per_s=%.0f "
               "us_per_device=%.1f\n",
               devices, 2 * devices, 3 * devices, t1 - t0, (double)(2 * devices) / (t1 - t0),
               (t1 - t0) * 1e6 / (double)devices);
        return 0;
}

static int count_token(const struct lic_token *t, void *userdata) {
        (*(unsigned long *)userdata)++;
        return 0;
}

static int count_audit(const struct lic_audit *a, void *userdata) {
        (*(unsigned long *)userdata)++;
        return 0;
}

static int cmd_count(int argc, char **argv) {
        _cleanup_(lic_store_closep) struct lic_store *s = NULL;
        unsigned long records = 0, audit = 0;

        if (argc != 3)
                die("usage: count DB");
        store_check(lic_store_open(argv[2], &s), argv[2], NULL);
        store_check(lic_tokens_list(s, NULL, count_token, &records), "records", NULL);
        store_check(lic_audit_list(s, 0, 0, count_audit, &audit), "audit", NULL);
        printf("count records=%lu audit_rows=%lu\n", records, audit);
        return 0;
}

static size_t on_metrics(char *p, size_t size, size_t nmemb, void *userdata) {
        char **text = userdata;
        size_t n = size * nmemb, have = *text ? strlen(*text) : 0;
        char *grown = realloc(*text, have + n + 1);

        if (!grown)
                return 0;
        memcpy(grown + have, p, n);
        grown[have + n] = '\0';
        *text = grown;
        return n;
}

static int cmd_requests(int argc, char **argv) {
        static const char name[] = "tsfarm_api_requests_total ";
        _cleanup_free_ char *text = NULL;
        const char *line;
        CURL *h;
        CURLcode code;

        if (argc != 3)
                die("usage: requests SOCKET");
        h = curl_easy_init();
        if (!h)
                die("curl_easy_init failed");
        code = curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, argv[2]);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_URL, "http://localhost/metrics");
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_metrics);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_WRITEDATA, &text);
        if (!code)
                code = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
        if (!code)
                code = curl_easy_perform(h);
        curl_easy_cleanup(h);
        if (code)
                die("GET /metrics on %s: %s", argv[2], curl_easy_strerror(code));
        for (line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
                if (strncmp(line, name, sizeof(name) - 1) == 0) {
                        printf("requests_total=%.0f\n", strtod(line + sizeof(name) - 1, NULL));
                        return 0;
                }
        die("no %s in GET /metrics on %s", name, argv[2]);
}

int main(int argc, char **argv) {
        /* The store and the client log at debug level only; keep the
         * figures clean. */
        tsf_log_set_max_level(LOG_WARNING);
        tsf_log_parse_environment();
        if (argc < 2)
                die("usage: lic_bench run|load|count|requests ... (see the top of lic_bench.c)");
        if (strcmp(argv[1], "run") == 0)
                return cmd_run(argc, argv);
        if (strcmp(argv[1], "load") == 0)
                return cmd_load(argc, argv);
        if (strcmp(argv[1], "count") == 0)
                return cmd_count(argc, argv);
        if (strcmp(argv[1], "requests") == 0)
                return cmd_requests(argc, argv);
        die("unknown command '%s' (run, load, count, requests)", argv[1]);
}
