/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsctl host ...: shows what the host role's BPF maps hold, and edits the
 * one map an operator may edit by hand, sessions.
 *
 * tsagent owns the pins (bpf/abi/tsfarm_abi.h is the contract, docs/bpf.md
 * explains it): it creates them and writes config, nodes and affinity; the
 * programs write conns and stats. tsctl opens every map read-only
 * (BPF_F_RDONLY on the fd, so a slip here cannot change how connections
 * are steered), except sessions for `sessions set|del`: until the directory
 * role mirrors the farm's sessions, an operator fills that map by hand.
 *
 * Each verb reads the whole map, sorts it and prints a table, or with
 * --json one object holding an array (or the counters).
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <jansson.h>

#include "bpf/abi/tsfarm_abi.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsfarm/maps.h"
#include "tsfarm/userkey.h"
#include "tsctl.h"

#define NSEC_PER_SEC 1000000000ULL

const char *arg_pin_root = NULL;
static __u8 arg_state = TSF_SESSION_ACTIVE;
static __u32 arg_session_id = 0;
static bool arg_session_id_set = false;

/* --pin-root, else $TSFARM_PIN_ROOT (so a test farm or a second agent
 * needs one export, not an option on every command), else the default. */
static const char *pin_root(void) {
        const char *e;

        if (arg_pin_root)
                return arg_pin_root;
        e = getenv("TSFARM_PIN_ROOT");
        return e && *e ? e : TSF_PIN_ROOT;
}

/* Decimal only: "010" or "0x10" as a node id is more likely a slip than
 * an intent. Returns 0 or -EINVAL / -ERANGE. */
static int parse_u32(const char *s, __u32 *ret) {
        unsigned long long v = 0;

        if (!*s)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned)(*p - '0');
                if (v > UINT32_MAX)
                        return -ERANGE;
        }
        *ret = (__u32)v;
        return 0;
}

int host_parse_option(int val, const char *arg) {
        int r;

        switch (val) {
        case HOST_OPT_PIN_ROOT:
                if (!*arg)
                        return log_error_errno(-EINVAL, "--pin-root needs a directory.");
                arg_pin_root = arg;
                return 0;
        case HOST_OPT_STATE:
                if (strcmp(arg, "active") == 0)
                        arg_state = TSF_SESSION_ACTIVE;
                else if (strcmp(arg, "disconnected") == 0)
                        arg_state = TSF_SESSION_DISCONNECTED;
                else
                        return log_error_errno(-EINVAL,
                                               "host sessions set: --state is 'active' or 'disconnected', "
                                               "not '%s' ('lost' is the agent's to set).",
                                               arg);
                return 0;
        case HOST_OPT_SESSION_ID:
                r = parse_u32(arg, &arg_session_id);
                if (r < 0)
                        return log_error_errno(r,
                                               "host sessions set: --session-id '%s' is not a number "
                                               "from 0 to 4294967295.",
                                               arg);
                arg_session_id_set = true;
                return 0;
        }
        return log_error_errno(-EINVAL, "host: unhandled option %d.", val);
}

/* ---- maps -------------------------------------------------------------- */

struct map_spec {
        const char *name;
        __u32 type; /* enum bpf_map_type */
        __u32 key_size, value_size;
};

static const struct map_spec map_config = {TSF_MAP_CONFIG, BPF_MAP_TYPE_ARRAY, sizeof(__u32),
                                           sizeof(struct tsf_config)};
static const struct map_spec map_stats = {TSF_MAP_STATS, BPF_MAP_TYPE_PERCPU_ARRAY, sizeof(__u32),
                                          sizeof(struct tsf_stats)};
static const struct map_spec map_nodes = {TSF_MAP_NODES, BPF_MAP_TYPE_HASH, sizeof(struct tsf_node_key),
                                          sizeof(struct tsf_node_value)};
static const struct map_spec map_sessions = {TSF_MAP_SESSIONS, BPF_MAP_TYPE_HASH,
                                             sizeof(struct tsf_session_key),
                                             sizeof(struct tsf_session_value)};
static const struct map_spec map_affinity = {TSF_MAP_AFFINITY, BPF_MAP_TYPE_LRU_HASH,
                                             sizeof(struct tsf_affinity_key),
                                             sizeof(struct tsf_affinity_value)};
static const struct map_spec map_conns = {TSF_MAP_CONNS, BPF_MAP_TYPE_HASH, sizeof(__u64),
                                          sizeof(struct tsf_conn)};

/* The pin is not there. When other tsfarm pins are, the agent runs but
 * pinned a different set of maps (another tsfarm version); otherwise the
 * agent, or its host role, is not running, or the root is another one. */
static int missing_pins(const char *root, const char *name) {
        char path[PATH_MAX];

        if (snprintf(path, sizeof(path), "%s/%s", root, TSF_MAP_CONFIG) < (int)sizeof(path) &&
            strcmp(name, TSF_MAP_CONFIG) != 0 && access(path, F_OK) == 0)
                log_error("no map '%s' under %s, though other tsfarm maps are there (pinned by another "
                          "tsfarm version? restart tsagent)",
                          name, root);
        else
                log_error("no tsfarm maps under %s (is tsagent running with the host role? see --pin-root)",
                          root);
        return TSCTL_EXIT_NEGATIVE;
}

/* Opens the pinned map `s` and checks that it is the map this tsctl was
 * built for: libbpf reuses a pin with the same sizes, so a pin of another
 * layout can only come from another tsfarm version, and reading it with
 * our structs would print nonsense. Returns 0 and *ret_fd, an exit status
 * (missing pins, logged), or a negative errno (logged). */
static int open_map(const struct map_spec *s, bool writable, int *ret_fd, __u32 *ret_max_entries) {
        const char *root = pin_root();
        struct bpf_map_info info = {};
        __u32 len = sizeof(info);
        _cleanup_close_ int fd = -EBADF;
        int r;

        fd = tsf_map_open_pinned(root, s->name, !writable);
        if (fd == -ENOENT)
                return missing_pins(root, s->name);
        if (fd == -EACCES || fd == -EPERM)
                return log_error_errno(
                        fd, "Failed to open %s/%s: %m. tsctl host needs root (CAP_BPF and access to %s).",
                        root, s->name, root);
        if (fd < 0)
                return log_error_errno(fd, "Failed to open %s/%s: %m", root, s->name);

        r = bpf_obj_get_info_by_fd(fd, &info, &len);
        if (r < 0)
                return log_error_errno(r, "Failed to query %s/%s: %m", root, s->name);
        if (info.type != s->type || info.key_size != s->key_size || info.value_size != s->value_size) {
                const char *type = libbpf_bpf_map_type_str(info.type),
                           *want = libbpf_bpf_map_type_str(s->type);

                return log_error_errno(
                        -EPROTO,
                        "%s/%s is not the map this tsctl knows (%s, key %u bytes, value %u bytes; "
                        "expected %s, %u, %u): pinned by another tsfarm version?",
                        root, s->name, type ?: "unknown type", info.key_size, info.value_size, want ?: "?",
                        s->key_size, s->value_size);
        }
        if (ret_max_entries)
                *ret_max_entries = info.max_entries;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* A copy of a hash map: `n` records of `rec_size` bytes, each the key at
 * offset 0 and the value at `value_off` (a struct of both, so every field
 * is aligned). */
struct dump {
        uint8_t *recs;
        size_t n, rec_size;
};

static void dump_done(struct dump *d) {
        free(d->recs);
}

static int cmp_key(const void *a, const void *b, void *key_size) {
        return memcmp(a, b, *(const size_t *)key_size);
}

/* Copies every entry, sorted by key bytes. The map changes while we read:
 * an entry deleted between get_next_key and lookup is skipped, and when
 * the key we stand on is deleted the kernel starts over from the first
 * key, so duplicates are dropped after sorting and the walk is capped. */
static int map_dump(int fd, const char *name, size_t key_size, size_t value_off, size_t rec_size,
                    __u32 max_entries, struct dump *ret) {
        _cleanup_free_ uint8_t *recs = NULL, *cur = NULL, *next = NULL;
        size_t n = 0, allocated = 0, steps = 0, limit = 2 * (size_t)max_entries + 16;
        bool first = true;

        cur = calloc(1, key_size);
        next = calloc(1, key_size);
        if (!cur || !next)
                return log_oom();

        for (;;) {
                uint8_t *rec;

                if (bpf_map_get_next_key(fd, first ? NULL : cur, next) < 0) {
                        if (errno == ENOENT)
                                break;
                        return log_error_errno(negative_errno(), "Failed to walk %s/%s: %m", pin_root(),
                                               name);
                }
                first = false;
                memcpy(cur, next, key_size);
                if (++steps > limit) {
                        log_warning("%s/%s changes faster than it can be read; showing what was read.",
                                    pin_root(), name);
                        break;
                }
                if (n == allocated) {
                        size_t m = allocated ? 2 * allocated : 64;
                        uint8_t *p = reallocarray(recs, m, rec_size);

                        if (!p)
                                return log_oom();
                        recs = p;
                        allocated = m;
                }
                rec = recs + n * rec_size;
                memset(rec, 0, rec_size);
                memcpy(rec, next, key_size);
                if (bpf_map_lookup_elem(fd, next, rec + value_off) < 0) {
                        if (errno == ENOENT) /* deleted since get_next_key */
                                continue;
                        return log_error_errno(negative_errno(), "Failed to read %s/%s: %m", pin_root(),
                                               name);
                }
                n++;
        }

        if (n > 0) {
                size_t out = 1;

                qsort_r(recs, n, rec_size, cmp_key, &key_size);
                for (size_t i = 1; i < n; i++) {
                        if (memcmp(recs + i * rec_size, recs + (out - 1) * rec_size, key_size) == 0)
                                continue;
                        memmove(recs + out * rec_size, recs + i * rec_size, rec_size);
                        out++;
                }
                n = out;
        }
        *ret = (struct dump){.recs = TAKE_PTR(recs), .n = n, .rec_size = rec_size};
        return 0;
}

/* Opens (read-only) and copies a hash map into an array of `type`, which
 * has members `k` (the key) and `v` (the value). */
#define DUMP_MAP(spec, type, ret)                                                                        \
        ({                                                                                               \
                _cleanup_close_ int _fd_ = -EBADF;                                                       \
                __u32 _max_ = 0;                                                                         \
                int _r_ = open_map(spec, false, &_fd_, &_max_);                                          \
                _Static_assert(offsetof(type, k) == 0, "key first");                                     \
                if (_r_ == 0)                                                                            \
                        _r_ = map_dump(_fd_, (spec)->name, sizeof(((type *)NULL)->k), offsetof(type, v), \
                                       sizeof(type), _max_, ret);                                        \
                _r_;                                                                                     \
        })

static int read_config(struct tsf_config *ret) {
        _cleanup_close_ int fd = -EBADF;
        __u32 zero = 0;
        int r;

        r = open_map(&map_config, false, &fd, NULL);
        if (r != 0)
                return r;
        if (bpf_map_lookup_elem(fd, &zero, ret) < 0)
                return log_error_errno(negative_errno(), "Failed to read %s/%s: %m", pin_root(),
                                       map_config.name);
        return 0;
}

/* ---- formatting -------------------------------------------------------- */

static const char *addr_to_string(__be32 addr, char buf[static INET_ADDRSTRLEN]) {
        struct in_addr a = {.s_addr = addr};

        return inet_ntop(AF_INET, &a, buf, INET_ADDRSTRLEN) ?: "?";
}

struct flag_name {
        __u32 bit;
        const char *name;
};

static const struct flag_name node_flag_names[] = {
        {TSF_NODE_F_SELF, "self"}, {TSF_NODE_F_PEER, "peer"},     {TSF_NODE_F_DRAINING, "draining"},
        {TSF_NODE_F_DOWN, "down"}, {TSF_NODE_F_BYPASS, "bypass"},
};

static const struct flag_name affinity_flag_names[] = {
        {TSF_AFFINITY_F_MULTI_USER, "multi-user"},
};

/* "self,bypass"; unknown bits as hex; "-" for none. */
static void flags_to_string(char *buf, size_t size, __u32 flags, const struct flag_name *names, size_t n) {
        size_t used = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < n; i++)
                if (flags & names[i].bit) {
                        used += (size_t)snprintf(buf + used, size - MIN(used, size), "%s%s", used ? "," : "",
                                                 names[i].name);
                        flags &= ~names[i].bit;
                        used = MIN(used, size);
                }
        if (flags)
                used += (size_t)snprintf(buf + used, size - MIN(used, size), "%s0x%x", used ? "," : "",
                                         flags);
        if (used == 0)
                snprintf(buf, size, "-");
}

static json_t *flags_to_json(__u32 flags, const struct flag_name *names, size_t n) {
        _cleanup_json_ json_t *a = json_array();

        if (!a)
                return NULL;
        for (size_t i = 0; i < n; i++)
                if (flags & names[i].bit) {
                        if (json_array_append_new(a, json_string(names[i].name)) < 0)
                                return NULL;
                        flags &= ~names[i].bit;
                }
        if (flags) {
                char unknown[16];

                snprintf(unknown, sizeof(unknown), "0x%x", flags);
                if (json_array_append_new(a, json_string(unknown)) < 0)
                        return NULL;
        }
        return TAKE_PTR(a);
}

static const char *session_state_to_string(__u8 state, char buf[static 16]) {
        switch (state) {
        case TSF_SESSION_ACTIVE:
                return "active";
        case TSF_SESSION_DISCONNECTED:
                return "disconnected";
        case TSF_SESSION_LOST:
                return "lost";
        }
        snprintf(buf, 16, "unknown(%u)", state);
        return buf;
}

/* BPF_TCP_* numbering (the kernel's TCP_* states), spelled as in ss(8)
 * source and docs/bpf.md. */
static const char *const tcp_state_names[] = {
        [1] = "ESTABLISHED", [2] = "SYN_SENT",  [3] = "SYN_RECV", [4] = "FIN_WAIT1",
        [5] = "FIN_WAIT2",   [6] = "TIME_WAIT", [7] = "CLOSE",    [8] = "CLOSE_WAIT",
        [9] = "LAST_ACK",    [10] = "LISTEN",   [11] = "CLOSING", [12] = "NEW_SYN_RECV",
};

static const char *tcp_state_to_string(__u8 state, char buf[static 16]) {
        if (state < ELEMENTSOF(tcp_state_names) && tcp_state_names[state])
                return tcp_state_names[state];
        snprintf(buf, 16, "unknown(%u)", state);
        return buf;
}

static const char *conn_dir_to_string(__u8 dir, char buf[static 16]) {
        switch (dir) {
        case TSF_CONN_PASSIVE:
                return "passive";
        case TSF_CONN_ACTIVE:
                return "active";
        }
        snprintf(buf, 16, "unknown(%u)", dir);
        return buf;
}

static const char *conn_end_to_string(__u8 end, char buf[static 16]) {
        static const char *const names[] = {
                [TSF_END_NONE] = "none",
                [TSF_END_FIN_LOCAL] = "fin-local",
                [TSF_END_FIN_REMOTE] = "fin-remote",
                [TSF_END_RST_RECEIVED] = "rst-received",
                [TSF_END_TIMEOUT] = "timeout",
                [TSF_END_ABORT] = "abort",
                [TSF_END_ERROR] = "error",
        };

        if (end < ELEMENTSOF(names) && names[end])
                return names[end];
        snprintf(buf, 16, "unknown(%u)", end);
        return buf;
}

/* "45s", "4min 10s", "8h 3min", "2d 4h": an RDP session lasts hours, and
 * 28800s is not something one reads at a glance. JSON has plain seconds. */
static void format_duration(char *buf, size_t size, uint64_t sec) {
        if (sec < 60)
                snprintf(buf, size, "%" PRIu64 "s", sec);
        else if (sec < 3600)
                snprintf(buf, size, "%" PRIu64 "min %" PRIu64 "s", sec / 60, sec % 60);
        else if (sec < 86400)
                snprintf(buf, size, "%" PRIu64 "h %" PRIu64 "min", sec / 3600, sec % 3600 / 60);
        else
                snprintf(buf, size, "%" PRIu64 "d %" PRIu64 "h", sec / 86400, sec % 86400 / 3600);
}

/* bpf_ktime_get_ns() is the kernel's CLOCK_MONOTONIC; the *_ns times in
 * the maps are compared with the same clock. */
static uint64_t now_monotonic_ns(void) {
        return tsf_now_monotonic() * 1000;
}

/* A session key for a terminal (escaped) or for JSON (valid UTF-8; the
 * long form's 56-byte prefix can cut a character in two). */
static char *session_user_display(const struct tsf_session_key *k, bool for_json) {
        char buf[2 * TSF_USER_KEY_SIZE];

        tsf_session_key_format(k, buf, sizeof(buf));
        if (for_json && tsctl_utf8_valid(buf, strlen(buf)))
                return strdup(buf);
        return tsctl_escape(buf, strlen(buf));
}

/* ---- column tables ----------------------------------------------------- */

/* Shared with directory.c; struct columns is in tsctl.h. */

void columns_done(struct columns *t) {
        for (size_t i = 0; i < t->n; i++)
                free(t->cells[i]);
        free(t->cells);
}

void columns_add(struct columns *t, const char *format, ...) {
        char *cell;
        va_list ap;
        int r;

        if (t->oom)
                return;
        if (t->n == t->allocated) {
                size_t m = t->allocated ? 2 * t->allocated : 64;
                char **cells = reallocarray(t->cells, m, sizeof(*cells));

                if (!cells) {
                        t->oom = true;
                        return;
                }
                t->cells = cells;
                t->allocated = m;
        }
        va_start(ap, format);
        r = vasprintf(&cell, format, ap);
        va_end(ap);
        if (r < 0) {
                t->oom = true;
                return;
        }
        t->cells[t->n++] = cell;
}

/* Terminal columns of UTF-8 text, counting each character as one (user
 * names are the only non-ASCII cells; wide characters are rare there). */
static size_t text_width(const char *s) {
        size_t w = 0;

        for (; *s; s++)
                if (((unsigned char)*s & 0xc0) != 0x80)
                        w++;
        return w;
}

static void print_cell(FILE *f, const struct column *c, const char *s, size_t width, bool last) {
        size_t pad = width - MIN(width, text_width(s));

        if (c->right)
                fprintf(f, "%*s%s", (int)pad, "", s);
        else if (last)
                fputs(s, f);
        else
                fprintf(f, "%s%*s", s, (int)pad, "");
        fputs(last ? "\n" : "  ", f);
}

int columns_print(const struct columns *t, FILE *f) {
        size_t width[16] = {};

        if (t->oom)
                return log_oom();
        assert(t->ncols <= ELEMENTSOF(width));
        for (size_t c = 0; c < t->ncols; c++)
                width[c] = text_width(t->cols[c].header);
        for (size_t i = 0; i < t->n; i++)
                width[i % t->ncols] = MAX(width[i % t->ncols], text_width(t->cells[i]));
        for (size_t c = 0; c < t->ncols; c++)
                print_cell(f, &t->cols[c], t->cols[c].header, width[c], c + 1 == t->ncols);
        for (size_t i = 0; i < t->n; i++)
                print_cell(f, &t->cols[i % t->ncols], t->cells[i], width[i % t->ncols],
                           i % t->ncols + 1 == t->ncols);
        return 0;
}

/* Prints the table, or a sentence when there is nothing to list (a bare
 * header reads like a bug). */
static int columns_print_or_empty(const struct columns *t, const char *what) {
        if (t->n == 0 && !t->oom) {
                printf("No %s in %s.\n", what, pin_root());
                return 0;
        }
        return columns_print(t, stdout);
}

/* {"<name>": array}: one object per answer, as every tsctl --json. */
static int print_json_list(const char *name, json_t *array) {
        _cleanup_json_ json_t *o = json_object();

        if (!o || json_object_set_new(o, name, array) < 0)
                return log_oom();
        return tsctl_json_print(o);
}

/* ---- host stats -------------------------------------------------------- */

int verb_host_stats(int argc, char *argv[]) {
        static const struct column cols[] = {{"COUNTER", false}, {"VALUE", true}};
        _cleanup_(columns_done) struct columns t = {.cols = cols, .ncols = ELEMENTSOF(cols)};
        _cleanup_(tsctl_table_freep) struct tsctl_table *head = NULL;
        _cleanup_close_ int fd = -EBADF;
        struct tsf_config cfg = {};
        struct tsf_stats st;
        const __u64 *counters = (const __u64 *)&st;
        __u16 port;
        int r;

        r = read_config(&cfg);
        if (r != 0)
                return r;
        r = open_map(&map_stats, false, &fd, NULL);
        if (r != 0)
                return r;
        r = tsf_stats_read(fd, &st);
        if (r < 0)
                return log_error_errno(r, "Failed to read %s/%s: %m", pin_root(), map_stats.name);
        port = cfg.rdp_port ?: TSF_RDP_PORT_DEFAULT;

        if (arg_json) {
                _cleanup_json_ json_t *o = NULL, *counts = json_object();

                if (!counts)
                        return log_oom();
                for (size_t i = 0; i < TSF_STATS_COUNT; i++)
                        if (json_object_set_new(counts, tsf_stat_names[i],
                                                json_integer((json_int_t)counters[i])) < 0)
                                return log_oom();
                o = json_pack("{s:{s:I, s:I, s:I}, s:O}", "config", "abi_version",
                              (json_int_t)cfg.abi_version, "self_node_id", (json_int_t)cfg.self_node_id,
                              "rdp_port", (json_int_t)port, "stats", counts);
                if (!o)
                        return log_oom();
                return tsctl_json_print(o);
        }

        head = tsctl_table_new();
        if (!head)
                return log_oom();
        tsctl_table_add(head, "Pin root", "%s", pin_root());
        if (cfg.abi_version == 0)
                tsctl_table_add(head, "ABI version",
                                "0 (config not written yet: the agent is starting or gone)");
        else if (cfg.abi_version != TSF_ABI_VERSION)
                tsctl_table_add(head, "ABI version", "%u (this tsctl knows %u: values may be misread)",
                                cfg.abi_version, TSF_ABI_VERSION);
        else
                tsctl_table_add(head, "ABI version", "%u", cfg.abi_version);
        if (cfg.self_node_id == TSF_NODE_ID_NONE)
                tsctl_table_add(head, "Self node id", "0 (unknown: no affinity fast path)");
        else
                tsctl_table_add(head, "Self node id", "%u", cfg.self_node_id);
        tsctl_table_add(head, "RDP port", "%u%s", port, cfg.rdp_port ? "" : " (default)");
        r = tsctl_table_print(head, stdout);
        if (r < 0)
                return r;
        fputc('\n', stdout);

        for (size_t i = 0; i < TSF_STATS_COUNT; i++) {
                columns_add(&t, "%s", tsf_stat_names[i]);
                columns_add(&t, "%llu", (unsigned long long)counters[i]);
        }
        r = columns_print(&t, stdout);
        return r < 0 ? r : TSCTL_EXIT_OK;
}

/* ---- host nodes -------------------------------------------------------- */

struct node_entry {
        struct tsf_node_key k;
        struct tsf_node_value v;
};

static int cmp_node(const void *a, const void *b) {
        const struct node_entry *x = a, *y = b;
        __u32 ax = ntohl(x->k.addr), ay = ntohl(y->k.addr);

        if (x->v.node_id != y->v.node_id)
                return x->v.node_id < y->v.node_id ? -1 : 1;
        return ax < ay ? -1 : ax > ay;
}

static int dump_nodes(struct dump *d) {
        int r = DUMP_MAP(&map_nodes, struct node_entry, d);

        if (r == 0 && d->n > 0)
                qsort(d->recs, d->n, d->rec_size, cmp_node);
        return r;
}

int verb_host_nodes(int argc, char *argv[]) {
        static const struct column cols[] = {
                {"ADDRESS", false}, {"NODE", true}, {"PORT", true}, {"FLAGS", false}, {"WEIGHT", true},
        };
        _cleanup_(columns_done) struct columns t = {.cols = cols, .ncols = ELEMENTSOF(cols)};
        _cleanup_(dump_done) struct dump d = {};
        _cleanup_json_ json_t *a = NULL;
        int r;

        r = dump_nodes(&d);
        if (r != 0)
                return r;
        a = arg_json ? json_array() : NULL;
        if (arg_json && !a)
                return log_oom();

        for (size_t i = 0; i < d.n; i++) {
                const struct node_entry *e = (const struct node_entry *)(d.recs + i * d.rec_size);
                char addr[INET_ADDRSTRLEN], flags[96];

                addr_to_string(e->k.addr, addr);
                if (arg_json) {
                        if (json_array_append_new(a,
                                                  json_pack("{s:s, s:I, s:I, s:o, s:I}", "address", addr,
                                                            "node_id", (json_int_t)e->v.node_id, "rdp_port",
                                                            (json_int_t)ntohs(e->v.rdp_port), "flags",
                                                            flags_to_json(e->v.flags, node_flag_names,
                                                                          ELEMENTSOF(node_flag_names)),
                                                            "weight", (json_int_t)e->v.weight)) < 0)
                                return log_oom();
                        continue;
                }
                flags_to_string(flags, sizeof(flags), e->v.flags, node_flag_names,
                                ELEMENTSOF(node_flag_names));
                columns_add(&t, "%s", addr);
                columns_add(&t, "%u", e->v.node_id);
                columns_add(&t, "%u", ntohs(e->v.rdp_port));
                columns_add(&t, "%s", flags);
                columns_add(&t, "%u", e->v.weight);
        }
        r = arg_json ? print_json_list("nodes", TAKE_PTR(a)) : columns_print_or_empty(&t, "nodes");
        return r < 0 ? r : TSCTL_EXIT_OK;
}

/* ---- host sessions ----------------------------------------------------- */

struct session_entry {
        struct tsf_session_key k;
        struct tsf_session_value v;
};

static json_t *session_to_json(const struct tsf_session_key *k, const struct tsf_session_value *v) {
        _cleanup_free_ char *user = session_user_display(k, true);
        char state[16], ts[TSF_TIMESTAMP_MAX];

        if (!user)
                return NULL;
        return json_pack("{s:s, s:I, s:I, s:s, s:I, s:I, s:o}", "user", user, "node_id",
                         (json_int_t)v->node_id, "session_id", (json_int_t)v->session_id, "state",
                         session_state_to_string(v->state, state), "revision", (json_int_t)v->revision,
                         "state_changed_us", (json_int_t)v->state_changed_us, "state_changed",
                         v->state_changed_us
                                 ? json_string(tsf_format_timestamp(v->state_changed_us, ts, sizeof(ts)))
                                 : json_null());
}

static const struct column session_cols[] = {
        {"USER", false},  {"NODE", true},     {"SESSION", true},
        {"STATE", false}, {"REVISION", true}, {"CHANGED", false},
};

static void session_add_row(struct columns *t, const struct tsf_session_key *k,
                            const struct tsf_session_value *v) {
        _cleanup_free_ char *user = session_user_display(k, false);
        char state[16], ts[TSF_TIMESTAMP_MAX];

        if (!user) {
                t->oom = true;
                return;
        }
        columns_add(t, "%s", user);
        columns_add(t, "%u", v->node_id);
        columns_add(t, "%u", v->session_id);
        columns_add(t, "%s", session_state_to_string(v->state, state));
        columns_add(t, "%llu", (unsigned long long)v->revision);
        columns_add(t, "%s",
                    v->state_changed_us ? tsf_format_timestamp(v->state_changed_us, ts, sizeof(ts)) : "-");
}

int verb_host_sessions(int argc, char *argv[]) {
        _cleanup_(columns_done) struct columns t = {.cols = session_cols, .ncols = ELEMENTSOF(session_cols)};
        _cleanup_(dump_done) struct dump d = {};
        _cleanup_json_ json_t *a = NULL;
        int r;

        /* Sorted by key bytes: names in byte order (NUL padding sorts a
         * name before its extensions). */
        r = DUMP_MAP(&map_sessions, struct session_entry, &d);
        if (r != 0)
                return r;
        a = arg_json ? json_array() : NULL;
        if (arg_json && !a)
                return log_oom();

        for (size_t i = 0; i < d.n; i++) {
                const struct session_entry *e = (const struct session_entry *)(d.recs + i * d.rec_size);

                if (arg_json) {
                        if (json_array_append_new(a, session_to_json(&e->k, &e->v)) < 0)
                                return log_oom();
                } else
                        session_add_row(&t, &e->k, &e->v);
        }
        r = arg_json ? print_json_list("sessions", TAKE_PTR(a)) : columns_print_or_empty(&t, "sessions");
        return r < 0 ? r : TSCTL_EXIT_OK;
}

/* The sessions key for what an operator typed: the same folding the
 * gateway applies to a cookie (docs/userkey.md), so "CORP\Alice" and
 * "alice@corp.example" both land on "alice". Returns 0, or an exit status
 * after logging. */
static int user_to_key(const char *verb, const char *user, struct tsf_session_key *ret) {
        _cleanup_free_ struct tsf_userkey *uk = calloc(1, sizeof(*uk));
        _cleanup_free_ char *shown = tsctl_escape(user, strlen(user));
        int r;

        if (!uk || !shown)
                return log_oom();
        r = tsf_userkey_parse(user, strlen(user), uk);
        if (r == -ENAMETOOLONG) {
                log_error("host sessions %s: user name '%s' is longer than %d bytes.", verb, shown,
                          TSF_USERKEY_INPUT_MAX);
                return TSCTL_EXIT_TROUBLE;
        }
        if (r < 0) {
                log_error("host sessions %s: '%s' is not a user name tsfarm accepts (empty user or domain "
                          "part, a control character, or a backslash in the user part).",
                          verb, shown);
                return TSCTL_EXIT_TROUBLE;
        }
        tsf_session_key_from_user(ret, tsf_userkey_index(uk));
        return 0;
}

/* A node id must name a farm node: a session on a node the gateway does
 * not know would send the user nowhere. Returns 0, or an exit status after
 * logging. */
static int check_node_id(__u32 node_id) {
        _cleanup_(dump_done) struct dump d = {};
        char known[256] = "";
        size_t used = 0;
        __u32 last = TSF_NODE_ID_NONE;
        int r;

        r = dump_nodes(&d);
        if (r != 0)
                return r;
        for (size_t i = 0; i < d.n; i++) {
                const struct node_entry *e = (const struct node_entry *)(d.recs + i * d.rec_size);

                if (e->v.node_id == node_id)
                        return 0;
                /* Sorted by id: list each id once; 0 is a pure bypass entry. */
                if (e->v.node_id == TSF_NODE_ID_NONE || e->v.node_id == last)
                        continue;
                last = e->v.node_id;
                if (used < sizeof(known))
                        used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%u",
                                                 used ? ", " : "", e->v.node_id);
        }
        log_error("host sessions set: node id %u is not in the node table (%s/%s); known node ids: %s. See "
                  "'tsctl host nodes'.",
                  node_id, pin_root(), TSF_MAP_NODES, used ? known : "none");
        return TSCTL_EXIT_NEGATIVE;
}

int verb_host_sessions_set(int argc, char *argv[]) {
        _cleanup_(columns_done) struct columns t = {.cols = session_cols, .ncols = ELEMENTSOF(session_cols)};
        _cleanup_close_ int fd = -EBADF;
        struct tsf_session_key key;
        struct tsf_session_value prev = {}, v;
        bool had_prev;
        __u32 node_id;
        int r;

        r = user_to_key("set", argv[0], &key);
        if (r != 0)
                return r;
        r = parse_u32(argv[1], &node_id);
        if (r < 0 || node_id == TSF_NODE_ID_NONE) {
                log_error("host sessions set: NODE_ID '%s' is not a node id (a number from 1 to 4294967295; "
                          "see 'tsctl host nodes').",
                          argv[1]);
                return TSCTL_EXIT_TROUBLE;
        }
        r = check_node_id(node_id);
        if (r != 0)
                return r;

        r = open_map(&map_sessions, true, &fd, NULL);
        if (r != 0)
                return r;
        if (bpf_map_lookup_elem(fd, &key, &prev) == 0)
                had_prev = true;
        else if (errno == ENOENT)
                had_prev = false;
        else
                return log_error_errno(negative_errno(), "Failed to read %s/%s: %m", pin_root(),
                                       map_sessions.name);

        /* The revision orders changes the way the directory's will, so a
         * reader can tell a newer entry from an older one. A session id is
         * only meaningful on its node: keep it when the node stays. */
        v = (struct tsf_session_value){
                .node_id = node_id,
                .session_id = arg_session_id_set                    ? arg_session_id
                              : had_prev && prev.node_id == node_id ? prev.session_id
                                                                    : 0,
                .state = arg_state,
                .revision = had_prev ? prev.revision + 1 : 1,
                .state_changed_us = tsf_now_realtime(),
        };
        if (bpf_map_update_elem(fd, &key, &v, BPF_ANY) < 0)
                return log_error_errno(negative_errno(), "Failed to write %s/%s: %m", pin_root(),
                                       map_sessions.name);

        if (arg_json) {
                _cleanup_json_ json_t *o = session_to_json(&key, &v);

                if (!o)
                        return log_oom();
                r = tsctl_json_print(o);
        } else {
                session_add_row(&t, &key, &v);
                r = columns_print(&t, stdout);
        }
        return r < 0 ? r : TSCTL_EXIT_OK;
}

int verb_host_sessions_del(int argc, char *argv[]) {
        _cleanup_close_ int fd = -EBADF;
        struct tsf_session_key key;
        int r;

        r = user_to_key("del", argv[0], &key);
        if (r != 0)
                return r;
        r = open_map(&map_sessions, true, &fd, NULL);
        if (r != 0)
                return r;
        if (bpf_map_delete_elem(fd, &key) < 0) {
                if (errno == ENOENT) {
                        _cleanup_free_ char *user = session_user_display(&key, false);

                        log_error("host sessions del: no session for user '%s' in %s/%s. See 'tsctl host "
                                  "sessions'.",
                                  user ?: "?", pin_root(), map_sessions.name);
                        return TSCTL_EXIT_NEGATIVE;
                }
                return log_error_errno(negative_errno(), "Failed to delete from %s/%s: %m", pin_root(),
                                       map_sessions.name);
        }
        return TSCTL_EXIT_OK;
}

/* ---- host affinity ----------------------------------------------------- */

struct affinity_entry {
        struct tsf_affinity_key k;
        struct tsf_affinity_value v;
};

static int cmp_affinity(const void *a, const void *b) {
        __u32 x = ntohl(((const struct affinity_entry *)a)->k.addr);
        __u32 y = ntohl(((const struct affinity_entry *)b)->k.addr);

        return x < y ? -1 : x > y;
}

int verb_host_affinity(int argc, char *argv[]) {
        static const struct column cols[] = {
                {"CLIENT", false},    {"NODE", true},        {"FLAGS", false},
                {"USER HASH", false}, {"EXPIRES IN", false},
        };
        _cleanup_(columns_done) struct columns t = {.cols = cols, .ncols = ELEMENTSOF(cols)};
        _cleanup_(dump_done) struct dump d = {};
        _cleanup_json_ json_t *a = NULL;
        uint64_t now;
        int r;

        r = DUMP_MAP(&map_affinity, struct affinity_entry, &d);
        if (r != 0)
                return r;
        if (d.n > 0)
                qsort(d.recs, d.n, d.rec_size, cmp_affinity);
        now = now_monotonic_ns();
        a = arg_json ? json_array() : NULL;
        if (arg_json && !a)
                return log_oom();

        for (size_t i = 0; i < d.n; i++) {
                const struct affinity_entry *e = (const struct affinity_entry *)(d.recs + i * d.rec_size);
                /* steer: stale at or after expires_ns. */
                bool expired = now >= e->v.expires_ns;
                int64_t left_s = expired ? -(int64_t)((now - e->v.expires_ns) / NSEC_PER_SEC)
                                         : (int64_t)((e->v.expires_ns - now) / NSEC_PER_SEC);
                char addr[INET_ADDRSTRLEN], flags[64], hash[17], left[32];

                addr_to_string(e->k.addr, addr);
                snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)e->v.user_hash);
                if (arg_json) {
                        if (json_array_append_new(
                                    a,
                                    json_pack("{s:s, s:I, s:o, s:s, s:I, s:I, s:b}", "client", addr,
                                              "node_id", (json_int_t)e->v.node_id, "flags",
                                              flags_to_json(e->v.flags, affinity_flag_names,
                                                            ELEMENTSOF(affinity_flag_names)),
                                              "user_hash", hash, "expires_ns", (json_int_t)e->v.expires_ns,
                                              "expires_in_s", (json_int_t)left_s, "expired", expired)) < 0)
                                return log_oom();
                        continue;
                }
                flags_to_string(flags, sizeof(flags), e->v.flags, affinity_flag_names,
                                ELEMENTSOF(affinity_flag_names));
                if (expired)
                        snprintf(left, sizeof(left), "expired");
                else
                        format_duration(left, sizeof(left), (uint64_t)left_s);
                columns_add(&t, "%s", addr);
                columns_add(&t, "%u", e->v.node_id);
                columns_add(&t, "%s", flags);
                columns_add(&t, "%s", hash);
                columns_add(&t, "%s", left);
        }
        r = arg_json ? print_json_list("affinity", TAKE_PTR(a))
                     : columns_print_or_empty(&t, "affinity entries");
        return r < 0 ? r : TSCTL_EXIT_OK;
}

/* ---- host conns -------------------------------------------------------- */

struct conn_entry {
        __u64 k; /* socket cookie */
        struct tsf_conn v;
};

static int cmp_conn(const void *a, const void *b) {
        const struct tsf_conn *x = &((const struct conn_entry *)a)->v,
                              *y = &((const struct conn_entry *)b)->v;
        uint64_t kx = (uint64_t)ntohl(x->local_addr) << 16 | x->local_port;
        uint64_t ky = (uint64_t)ntohl(y->local_addr) << 16 | y->local_port;

        if (kx != ky)
                return kx < ky ? -1 : 1;
        kx = (uint64_t)ntohl(x->remote_addr) << 16 | x->remote_port;
        ky = (uint64_t)ntohl(y->remote_addr) << 16 | y->remote_port;
        return kx < ky ? -1 : kx > ky;
}

static json_t *conn_to_json(__u64 cookie, const struct tsf_conn *c, uint64_t now) {
        char local[INET_ADDRSTRLEN], remote[INET_ADDRSTRLEN], dir[16], state[16], end[16];
        _cleanup_json_ json_t *o = NULL;

        addr_to_string(c->local_addr, local);
        addr_to_string(c->remote_addr, remote);
        o = json_pack(
                "{s:I, s:s, s:I, s:s, s:I, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                "cookie", (json_int_t)cookie, "local_address", local, "local_port",
                (json_int_t)c->local_port, "remote_address", remote, "remote_port",
                (json_int_t)c->remote_port, "direction", conn_dir_to_string(c->dir, dir), "state",
                tcp_state_to_string(c->state, state), "end", conn_end_to_string(c->end, end),
                "established_ns", (json_int_t)c->established_ns, "bytes_acked", (json_int_t)c->bytes_acked,
                "bytes_received", (json_int_t)c->bytes_received, "srtt_us", (json_int_t)c->srtt_us,
                "total_retrans", (json_int_t)c->total_retrans, "data_segs_in", (json_int_t)c->data_segs_in,
                "data_segs_out", (json_int_t)c->data_segs_out, "rto_count", (json_int_t)c->rto_count,
                "last_rto_ns", (json_int_t)c->last_rto_ns);
        if (!o)
                return NULL;
        /* 0: not known (an entry the agent reconciled from sock_diag). */
        if (json_object_set_new(
                    o, "age_s",
                    c->established_ns
                            ? json_integer(
                                      (json_int_t)((now > c->established_ns ? now - c->established_ns : 0) /
                                                   NSEC_PER_SEC))
                            : json_null()) < 0)
                return NULL;
        return TAKE_PTR(o);
}

int verb_host_conns(int argc, char *argv[]) {
        static const struct column cols[] = {
                {"LOCAL", false}, {"REMOTE", false},  {"DIR", false}, {"STATE", false},  {"AGE", false},
                {"ACKED", true},  {"RECEIVED", true}, {"SRTT", true}, {"RETRANS", true},
        };
        _cleanup_(columns_done) struct columns t = {.cols = cols, .ncols = ELEMENTSOF(cols)};
        _cleanup_(dump_done) struct dump d = {};
        _cleanup_json_ json_t *a = NULL;
        uint64_t now;
        int r;

        r = DUMP_MAP(&map_conns, struct conn_entry, &d);
        if (r != 0)
                return r;
        if (d.n > 0)
                qsort(d.recs, d.n, d.rec_size, cmp_conn);
        now = now_monotonic_ns();
        a = arg_json ? json_array() : NULL;
        if (arg_json && !a)
                return log_oom();

        for (size_t i = 0; i < d.n; i++) {
                const struct conn_entry *e = (const struct conn_entry *)(d.recs + i * d.rec_size);
                const struct tsf_conn *c = &e->v;
                char local[INET_ADDRSTRLEN], remote[INET_ADDRSTRLEN], dir[16], state[16], age[32];

                if (arg_json) {
                        if (json_array_append_new(a, conn_to_json(e->k, c, now)) < 0)
                                return log_oom();
                        continue;
                }
                if (c->established_ns)
                        format_duration(age, sizeof(age),
                                        (now > c->established_ns ? now - c->established_ns : 0) /
                                                NSEC_PER_SEC);
                else
                        snprintf(age, sizeof(age), "-");
                columns_add(&t, "%s:%u", addr_to_string(c->local_addr, local), c->local_port);
                columns_add(&t, "%s:%u", addr_to_string(c->remote_addr, remote), c->remote_port);
                columns_add(&t, "%s", conn_dir_to_string(c->dir, dir));
                columns_add(&t, "%s", tcp_state_to_string(c->state, state));
                columns_add(&t, "%s", age);
                columns_add(&t, "%llu", (unsigned long long)c->bytes_acked);
                columns_add(&t, "%llu", (unsigned long long)c->bytes_received);
                columns_add(&t, "%.2f ms", c->srtt_us / 1000.0);
                columns_add(&t, "%u", c->total_retrans);
        }
        r = arg_json ? print_json_list("conns", TAKE_PTR(a))
                     : columns_print_or_empty(&t, "tracked connections");
        return r < 0 ? r : TSCTL_EXIT_OK;
}
