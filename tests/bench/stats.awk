# SPDX-License-Identifier: LGPL-2.1-or-later
# The benchmarks' summaries (run.sh, dir.sh, lic.sh): awk functions over
# cnt[key] repetitions of val[key, i]; prepended to each summary program.
# median(key): the median, "" when none; m(key, fmt): it formatted, "-"
# when none; spread(key, fmt): "lo-hi".
function median(key,    n, i, j, t, v) {
        n = cnt[key]
        if (!n) return ""
        for (i = 1; i <= n; i++) v[i] = val[key, i]
        for (i = 2; i <= n; i++)
                for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
function spread(key, f,    n, i, lo, hi) {
        n = cnt[key]
        if (!n) return "-"
        lo = hi = val[key, 1]
        for (i = 2; i <= n; i++) {
                if (val[key, i] < lo) lo = val[key, i]
                if (val[key, i] > hi) hi = val[key, i]
        }
        return sprintf(f "-" f, lo, hi)
}
function m(key, f,    x) { x = median(key); return x == "" ? "-" : sprintf(f, x) }
