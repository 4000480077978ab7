/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The load generator's accounting (loadstats.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tsfarm/lictoken.h"
#include "tsfarm/macro.h"
#include "loadstats.h"

static const char *const op_names[_TSC_LOAD_OP_MAX] = {
        [TSC_LOAD_CONNECT] = "connect",
        [TSC_LOAD_DISCONNECT] = "disconnect",
        [TSC_LOAD_RECONNECT] = "reconnect",
        [TSC_LOAD_LOGOFF] = "logoff",
};

static const char *const lic_names[_TSC_LOAD_LIC_MAX] = {
        [TSC_LOAD_LIC_NOT_REACHED] = "not-reached",
        [TSC_LOAD_LIC_TEMPORARY] = "temporary",
        [TSC_LOAD_LIC_CAL] = "cal",
        [TSC_LOAD_LIC_VALID] = "valid",
        [TSC_LOAD_LIC_REFUSED] = "refused",
        [TSC_LOAD_LIC_UNKNOWN] = "unknown",
};

const char *tsc_load_op_to_string(enum tsc_load_op op) {
        return (unsigned)op < _TSC_LOAD_OP_MAX ? op_names[op] : NULL;
}

const char *tsc_load_license_to_string(enum tsc_load_license l) {
        return (unsigned)l < _TSC_LOAD_LIC_MAX ? lic_names[l] : NULL;
}

int tsc_load_mix_parse(const char *s, struct tsc_load_mix *ret) {
        struct tsc_load_mix m = {};
        bool seen[_TSC_LOAD_OP_MAX] = {};
        const char *p = s;

        if (!s || !*s)
                return -EINVAL;
        for (;;) {
                const char *eq = strchr(p, '='), *end = strchrnul(p, ',');
                unsigned long v;
                char *e;
                int op = -1;

                if (!eq || eq > end)
                        return -EINVAL;
                for (int i = 0; i < _TSC_LOAD_OP_MAX; i++)
                        if (strlen(op_names[i]) == (size_t)(eq - p) && strncmp(p, op_names[i], eq - p) == 0)
                                op = i;
                if (op < 0 || seen[op] || eq[1] < '0' || eq[1] > '9')
                        return -EINVAL;
                errno = 0;
                v = strtoul(eq + 1, &e, 10);
                if (errno || e != end || v > 1000000)
                        return -EINVAL;
                seen[op] = true;
                m.weight[op] = (unsigned)v;
                m.total += (unsigned)v;
                if (!*end)
                        break;
                p = end + 1;
        }
        if (m.total == 0)
                return -EINVAL;
        *ret = m;
        return 0;
}

enum tsc_load_op tsc_load_mix_pick(const struct tsc_load_mix *m, unsigned r) {
        for (int i = 0; i < _TSC_LOAD_OP_MAX; i++) {
                if (r < m->weight[i])
                        return (enum tsc_load_op)i;
                r -= m->weight[i];
        }
        return TSC_LOAD_CONNECT; /* r out of range: the caller's bug, never reached by tests */
}

enum tsc_load_license tsc_load_license_of(const struct tsc_result *res) {
        switch (res->license_status) {
        case TSF_LICENSE_NEW:
        case TSF_LICENSE_UPGRADE:
                return res->token_kind == TSF_LIC_TEMPORARY ? TSC_LOAD_LIC_TEMPORARY
                       : res->token_kind == TSF_LIC_CAL     ? TSC_LOAD_LIC_CAL
                                                            : TSC_LOAD_LIC_UNKNOWN;
        case TSF_LICENSE_VALID:
                return TSC_LOAD_LIC_VALID;
        case TSF_LICENSE_ERROR:
                return TSC_LOAD_LIC_REFUSED;
        default:
                return TSC_LOAD_LIC_NOT_REACHED;
        }
}

int tsc_load_stats_record(struct tsc_load_stats *s, enum tsc_load_op op, const struct tsc_result *res) {
        bool ok = res->outcome == TSC_OK;

        if ((unsigned)op >= _TSC_LOAD_OP_MAX || (unsigned)res->outcome >= _TSC_OUTCOME_MAX)
                return -EINVAL;
        if (ok && s->n_latency == s->latency_cap) {
                size_t cap = s->latency_cap ? 2 * s->latency_cap : 1024;
                usec_t *l = realloc(s->latency, cap * sizeof(*l));

                if (!l)
                        return -ENOMEM;
                s->latency = l;
                s->latency_cap = cap;
        }
        s->connections++;
        s->ops[op]++;
        s->license[tsc_load_license_of(res)]++;
        s->redirects += res->redirects;
        if (ok) {
                s->succeeded++;
                if (res->reattached)
                        s->sessions_reattached++;
                else
                        s->sessions_new++;
                s->latency[s->n_latency++] = res->latency;
        } else {
                s->failed++;
                s->op_failed[op]++;
                s->failures[res->outcome]++;
        }
        return 0;
}

int tsc_load_stats_check(const struct tsc_load_stats *s) {
        uint64_t ops = 0, op_failed = 0, failures = 0, lic = 0;

        for (int i = 0; i < _TSC_LOAD_OP_MAX; i++) {
                ops += s->ops[i];
                op_failed += s->op_failed[i];
                if (s->op_failed[i] > s->ops[i])
                        return -EBADMSG;
        }
        for (int i = 0; i < _TSC_OUTCOME_MAX; i++)
                failures += s->failures[i];
        for (int i = 0; i < _TSC_LOAD_LIC_MAX; i++)
                lic += s->license[i];
        if (s->connections != s->succeeded + s->failed || ops != s->connections || op_failed != s->failed ||
            failures != s->failed || s->failures[TSC_OK] != 0 || lic != s->connections ||
            s->sessions_new + s->sessions_reattached != s->succeeded || s->n_latency != s->succeeded)
                return -EBADMSG;
        return 0;
}

static int cmp_usec(const void *a, const void *b) {
        usec_t x = *(const usec_t *)a, y = *(const usec_t *)b;

        return x < y ? -1 : x > y;
}

usec_t tsc_load_stats_percentile(struct tsc_load_stats *s, double p) {
        size_t rank;

        if (s->n_latency == 0 || p <= 0 || p > 100)
                return 0;
        qsort(s->latency, s->n_latency, sizeof(*s->latency), cmp_usec);
        /* Nearest rank: the smallest value with at least p% at or below it. */
        rank = (size_t)((p / 100.0) * (double)s->n_latency + 0.999999999);
        if (rank < 1)
                rank = 1;
        if (rank > s->n_latency)
                rank = s->n_latency;
        return s->latency[rank - 1];
}

void tsc_load_stats_done(struct tsc_load_stats *s) {
        free(s->latency);
        *s = (struct tsc_load_stats){};
}

void tsc_load_stats_print(FILE *f, struct tsc_load_stats *s, bool json, usec_t elapsed, unsigned devices,
                          unsigned users) {
        double p50 = (double)tsc_load_stats_percentile(s, 50) / 1000.0;
        double p99 = (double)tsc_load_stats_percentile(s, 99) / 1000.0;
        double secs = (double)elapsed / (double)USEC_PER_SEC;
        bool consistent = tsc_load_stats_check(s) == 0;

        if (json) {
                _cleanup_(json_decrefp) json_t *o = NULL;
                json_t *ops = json_object(), *fails = json_object(), *lic = json_object();
                char *text;

                for (int i = 0; i < _TSC_LOAD_OP_MAX; i++)
                        json_object_set_new(ops, op_names[i],
                                            json_pack("{s:I, s:I}", "connections", (json_int_t)s->ops[i],
                                                      "failed", (json_int_t)s->op_failed[i]));
                for (int i = 1; i < _TSC_OUTCOME_MAX; i++)
                        json_object_set_new(fails, tsc_outcome_to_string(i),
                                            json_integer((json_int_t)s->failures[i]));
                for (int i = 0; i < _TSC_LOAD_LIC_MAX; i++)
                        json_object_set_new(lic, lic_names[i], json_integer((json_int_t)s->license[i]));
                o = json_pack(
                        "{s:f, s:i, s:i, s:I, s:I, s:I, s:o, s:o, s:o, s:{s:I, s:I}, s:I, s:I, s:{s:f, "
                        "s:f}, s:b}",
                        "elapsed_s", secs, "devices", (int)devices, "users", (int)users, "connections",
                        (json_int_t)s->connections, "succeeded", (json_int_t)s->succeeded, "failed",
                        (json_int_t)s->failed, "ops", ops, "failures", fails, "license", lic, "sessions",
                        "new", (json_int_t)s->sessions_new, "reattached", (json_int_t)s->sessions_reattached,
                        "redirects", (json_int_t)s->redirects, "skipped_busy", (json_int_t)s->skipped_busy,
                        "latency_ms", "p50", p50, "p99", p99, "consistent", consistent);
                text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
                fprintf(f, "%s\n", text ?: "{}");
                free(text);
                return;
        }

        fprintf(f, "tsclient load: %.1f s, %u devices, %u users\n", secs, devices, users);
        fprintf(f, "connections  %llu (%.1f/s): succeeded %llu, failed %llu\n",
                (unsigned long long)s->connections, secs > 0 ? (double)s->connections / secs : 0.0,
                (unsigned long long)s->succeeded, (unsigned long long)s->failed);
        fprintf(f, "operations  ");
        for (int i = 0; i < _TSC_LOAD_OP_MAX; i++)
                fprintf(f, " %s %llu (%llu failed)%s", op_names[i], (unsigned long long)s->ops[i],
                        (unsigned long long)s->op_failed[i], i + 1 < _TSC_LOAD_OP_MAX ? "," : "\n");
        fprintf(f, "failures    ");
        for (int i = 1; i < _TSC_OUTCOME_MAX; i++)
                fprintf(f, " %s %llu%s", tsc_outcome_to_string(i), (unsigned long long)s->failures[i],
                        i + 1 < _TSC_OUTCOME_MAX ? "," : "\n");
        fprintf(f, "licenses    ");
        for (int i = 0; i < _TSC_LOAD_LIC_MAX; i++)
                fprintf(f, " %s %llu%s", lic_names[i], (unsigned long long)s->license[i],
                        i + 1 < _TSC_LOAD_LIC_MAX ? "," : "\n");
        fprintf(f,
                "sessions     new %llu, reattached %llu; redirects followed %llu; slots skipped (all "
                "devices "
                "busy) %llu\n",
                (unsigned long long)s->sessions_new, (unsigned long long)s->sessions_reattached,
                (unsigned long long)s->redirects, (unsigned long long)s->skipped_busy);
        fprintf(f, "logon latency p50 %.1f ms, p99 %.1f ms (%zu successes)\n", p50, p99, s->n_latency);
        if (!consistent)
                fprintf(f, "WARNING: the counts do not add up (a tsclient bug)\n");
}
