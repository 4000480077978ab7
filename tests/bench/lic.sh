#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# make bench, part 3: the licensing role. Temporary-token and Device CAL
# issuance (each a durable commit) on one license server and with
# borrowing (a server without packs relaying CALs a peer lends), against a
# baseline measured in the same run (the same POST refused before the
# store: TLS, HTTP, JSON and routing only); fsyncs and storage writes per
# request; memory and database size per 100,000 issued records. Figures
# are printed (medians of interleaved repetitions, and ratios), not
# asserted. docs/bench.md ("Licensing") explains what is measured and why.
#
# All in node1 of a farm (tests/integration/lib/farm.sh), on its loopback,
# real tsagent processes, mutual TLS with certificates from `tsctl pki`:
#
#   lic-one  127.0.0.1:7401  a pack of 100000 CALs: the one-server runs
#   lic-a    127.0.0.1:7411  no pack; peers = lic-b: every CAL is borrowed
#   lic-b    127.0.0.1:7412  a pack of 100000; peers = lic-a: lends to A
#   lic-mem  127.0.0.1:7421  memory and size, before and after 100000
#                            records loaded through the store API
#
# None announces itself or listens for announcements (announce = no,
# discover-peers = no): nothing goes to a network.
#
# Knobs (environment): TSFARM_BENCH_LIC_N1 (devices per run at 1
# connection, 1000), _N8 (at 8 connections, 2500), _REPS (3), _BULK
# (devices loaded for the memory figures, 50000 = 100000 records),
# _TRACE_N (requests traced with strace, 300), TSFARM_BENCH_PIN (1: the
# license servers on CPU 0, the load generator on the last CPU),
# TSFARM_BENCH_OUT (build/bench).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export TSFARM_BUILD=${TSFARM_BUILD:-$repo/build}
# shellcheck source=../integration/lib/farm.sh
source "$repo/tests/integration/lib/farm.sh"

N1=${TSFARM_BENCH_LIC_N1:-1000}
N8=${TSFARM_BENCH_LIC_N8:-2500}
REPS=${TSFARM_BENCH_LIC_REPS:-3}
BULK=${TSFARM_BENCH_LIC_BULK:-50000}
TRACE_N=${TSFARM_BENCH_LIC_TRACE_N:-300}
PIN=${TSFARM_BENCH_PIN:-1}
OUT=${TSFARM_BENCH_OUT:-$TSFARM_BUILD/bench}
LICB=$TSFARM_BUILD/tests/bench/lic_bench
TSAGENT=$TSFARM_BUILD/tsagent
TSCTL=$TSFARM_BUILD/tsctl
WARM_N=500 # devices over HTTPS before each memory reading

die() {
        echo "lic-bench: $*" >&2
        exit 1
}
say() {
        echo "lic-bench: $*"
}

((EUID == 0)) || die "needs root (network namespaces)"
for t in ip nsenter unshare timeout taskset; do
        command -v "$t" >/dev/null || die "$t is missing (tools/deps.sh bench installs it)"
done
for f in "$LICB" "$TSAGENT" "$TSCTL"; do
        [[ -x $f ]] || die "$f is missing (make bench builds it)"
done
have_strace=0
command -v strace >/dev/null && have_strace=1
mkdir -p "$OUT"
raw=$OUT/lic-raw.txt
summary=$OUT/lic-summary.txt
: >"$raw"
started=$(farm_now_ms)
elapsed() {
        echo "$((($(farm_now_ms) - started) / 1000)) s"
}

ncpu=$(nproc)
srv_pin=() gen_pin=()
if [[ $PIN == 1 && $ncpu -ge 2 ]]; then
        srv_pin=(taskset -c 0)
        gen_pin=(taskset -c $((ncpu - 1)))
else
        PIN=0
fi

trap farm_down EXIT
farm_up 1 0
node=node1
pki=$FARM_DIR/pki
mkdir -m 700 "$pki"
"$TSCTL" pki init --dir "$pki" --name lic-bench --days 2 >/dev/null
for n in lic-one lic-a lic-b lic-mem ts1; do
        "$TSCTL" pki issue --dir "$pki" "$n" --ip 127.0.0.1 --days 1 >/dev/null
done
# The load generator is a terminal server.
tls=("$pki/ca.crt" "$pki/ts1.crt" "$pki/ts1.key")

declare -A port=([lic-one]=7401 [lic-a]=7411 [lic-b]=7412 [lic-mem]=7421)

# ---- license servers ---------------------------------------------------------------
lic_conf() { # NAME [EXTRA LINES]: writes $FARM_DIR/NAME.conf
        mkdir -p "$FARM_DIR/$1-run" "$FARM_DIR/$1-state"
        # log-level notice: no line per token (issuance logs at info).
        cat >"$FARM_DIR/$1.conf" <<EOF
[agent]
roles = licensing
node-name = $1
log-level = notice
state-directory = $FARM_DIR/$1-state
runtime-directory = $FARM_DIR/$1-run

[licensing]
listen = 127.0.0.1:${port[$1]}
certificate = $pki/$1.crt
key = $pki/$1.key
ca = $pki/ca.crt
announce = no
discover-peers = no
${2:-}
EOF
}
db_of() { echo "$FARM_DIR/$1-state/licensing.db"; }
sock_of() { echo "$FARM_DIR/$1-run/licensing.sock"; }
lic_ready() { # NAME
        farm_alive "$(lic_pid "$1")" || return 125
        farm_listening $node 127.0.0.1 "${port[$1]}" && [[ -S $(sock_of "$1") ]]
}
# Each start of a server is a process of its own for farm.sh: NAME-1,
# NAME-2, ... (logs $FARM_DIR/logs/NAME-K.log); lic_pid NAME is the
# running one's.
declare -A lic_run=() lic_starts=()
lic_start() { # NAME
        local run
        lic_starts[$1]=$((${lic_starts[$1]:-0} + 1))
        run=$1-${lic_starts[$1]}
        lic_run[$1]=$run
        farm_spawn $node "$run" ${srv_pin[@]+"${srv_pin[@]}"} env TSFARM_LOG_TARGET=stderr "$TSAGENT" \
                --config "$FARM_DIR/$1.conf"
        if ! farm_wait_until 30 lic_ready "$1"; then
                farm_log_tail "$(farm_log "$run")" 20 >&2
                die "license server $1 did not come up"
        fi
}
lic_pid() { farm_pid "${lic_run[$1]}"; }
lic_log() { farm_log "${lic_run[$1]}"; }
lic_stop() { # NAME
        farm_stop "${lic_run[$1]}" 10
}
install_pack() { # NAME PACK COUNT
        "$TSCTL" license install-pack "$2" --version 2025 --count "$3" --licensing-socket "$(sock_of "$1")" \
                >/dev/null || die "installing pack $2 at $1 failed"
}
status_kib() { # PID FIELD: VmRSS, VmHWM, ... in KiB
        awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}
db_bytes() { # DATABASE: the file with its -wal and -shm
        local f n=0
        for f in "$1" "$1-wal" "$1-shm"; do
                [[ -e $f ]] && n=$((n + $(stat -c %s "$f")))
        done
        echo $n
}

# Devices: every run gets numbers of its own, so no device is seen twice.
next_device=1000000
devices() { # N: sets dev_base and moves on
        dev_base=$next_device
        next_device=$((next_device + $1 + 1000))
}
bench() { # TAG URL N CONNS ARGS...: one lic_bench run; its lines into $raw
        local tag=$1 url=$2 n=$3 conns=$4 out line
        shift 4
        devices "$n"
        if out=$(farm_exec $node timeout 150 ${gen_pin[@]+"${gen_pin[@]}"} "$LICB" run "$url" "${tls[@]}" \
                "$n" -c "$conns" -b "$dev_base" "$@" 2>"$FARM_DIR/gen.err"); then
                :
        else
                echo "lic-bench: $tag (conns $conns) failed: $(tail -3 "$FARM_DIR/gen.err")" >&2
                echo "$tag conns=$conns failed" >>"$raw"
        fi
        while read -r line; do
                [[ -n $line ]] && echo "$tag $line" >>"$raw"
        done <<<"$out"
        return 0
}

say "starting lic-one, lic-b, lic-a ($( ((PIN)) && echo "servers on CPU 0, the generator on CPU $((ncpu - 1))" || echo "nothing pinned"))"
# inventory-refresh 2s: each of A and B must have read the other's
# inventory once (B lends only to a peer whose inventory named it; A asks
# only a peer that answered); the default 30 s would make the first to
# start wait that long for the other.
lic_conf lic-one
lic_conf lic-b "peers = 127.0.0.1:${port[lic-a]}
inventory-refresh = 2s"
lic_conf lic-a "peers = 127.0.0.1:${port[lic-b]}
inventory-refresh = 2s"
lic_start lic-one
lic_start lic-b
lic_start lic-a
install_pack lic-one P1 100000
install_pack lic-b PB 100000
one_pid=$(lic_pid lic-one)
a_pid=$(lic_pid lic-a)
b_pid=$(lic_pid lic-b)
url_one=https://127.0.0.1:${port[lic-one]}
url_a=https://127.0.0.1:${port[lic-a]}

# A borrows once it has B's inventory and B has A's: a device's CAL, lent.
borrow_works() {
        devices 4
        farm_exec $node "$LICB" run "$url_a" "${tls[@]}" 4 -c 1 -b "$dev_base" -o temporary,validate,cal \
                -l lic-b >/dev/null 2>&1
}
farm_wait_until 20 borrow_works || die "lic-a does not borrow from lic-b; see $(lic_log lic-a), $(lic_log lic-b)"
say "lic-a borrows from lic-b ($(elapsed))"

# ---- issuance rates ------------------------------------------------------------------
# Per repetition, four runs, rotated: one server at 1 and 8 connections,
# borrowing at 1 and 8. Each run: the baseline (refused), then for new
# devices temporary -> validate -> CAL, each phase timed on its own (the
# one-server runs also read the inventory).
runs=(one1 one8 borrow1 borrow8)
run_one() { # CONNS REP
        local n=$N1
        (($1 == 8)) && n=$N8
        bench "scen=one rep=$2" "$url_one" "$n" "$1" -o refused,inventory,temporary,validate,cal \
                -P "srv=$one_pid"
}
# How many requests B served per borrowed CAL (the lend, and the
# inventory reads A makes after each lend): tsfarm_api_requests_total.
b_requests() {
        "$LICB" requests "$(sock_of lic-b)" 2>/dev/null | sed -n 's/^requests_total=//p' | grep . || echo 0
}
run_borrow() { # CONNS REP
        local n=$N1 r0 r1
        (($1 == 8)) && n=$N8
        r0=$(b_requests)
        bench "scen=borrow rep=$2" "$url_a" "$n" "$1" -o refused,temporary,validate,cal -l lic-b \
                -P "srv=$a_pid" -P "lender=$b_pid"
        r1=$(b_requests)
        # Less one: the first GET /metrics counts itself.
        echo "scen=borrow rep=$2 conns=$1 phase=cal lender_requests_per_cal=$(awk -v a="$r0" -v b="$r1" -v n="$n" \
                'BEGIN { printf "%.2f", (b - a - 1) / n }')" >>"$raw"
}
# Not recorded: first runs warm the page cache, SQLite's and TLS's.
bench "scen=warmup rep=0" "$url_one" 300 8 -o refused,temporary,validate,cal
bench "scen=warmup rep=0" "$url_a" 100 8 -o refused,temporary,validate,cal -l lic-b
sed -i '/scen=warmup/d' "$raw"
say "$REPS repetitions: one server and borrowing, at 1 connection ($N1 devices) and 8 ($N8), closed loop"
for ((rep = 1; rep <= REPS; rep++)); do
        for ((i = 0; i < ${#runs[@]}; i++)); do
                r=${runs[$(((i + rep - 1) % ${#runs[@]}))]}
                case $r in
                one*) run_one "${r#one}" "$rep" ;;
                borrow*) run_borrow "${r#borrow}" "$rep" ;;
                esac
        done
        say "repetition $rep/$REPS done ($(elapsed))"
done
for s in lic-one lic-a lic-b; do
        farm_alive "$(lic_pid $s)" || die "$s died; see $(lic_log $s)"
done
rss_one=$(status_kib "$one_pid" VmRSS)
rss_a=$(status_kib "$a_pid" VmRSS)
rss_b=$(status_kib "$b_pid" VmRSS)

# ---- fsyncs per request ------------------------------------------------------------------
# strace -c -w (counts, and the wall time spent in each call) on the
# server(s) while one kind of request runs alone, one connection: the
# tokens come from a run that is not traced (-t). Under strace everything
# is slower; only the counts and the fdatasync times are used.
trace_calls() { # OUTFILE: "fsync fdatasync pwrite64 µs-per-fdatasync" from strace -c -w
        awk '$NF == "fsync" { f = $4 } $NF == "fdatasync" { d = $4; us = $3 } $NF == "pwrite64" { w = $4 }
             END { printf "%d %d %d %d\n", f, d, w, us }' "$1" 2>/dev/null || echo "0 0 0 0"
}
traced() { # LABEL N "NAME=PID..." URL ARGS...: runs lic_bench with strace on the pids
        local label=$1 n=$2 pids=$3 url=$4 p name pid spids=() f
        shift 4
        for p in $pids; do
                name=${p%%=*} pid=${p#*=}
                strace -f -c -w -e trace=fsync,fdatasync,pwrite64 -o "$FARM_DIR/strace-$label-$name" -p "$pid" 2>/dev/null &
                spids+=($!)
        done
        sleep 0.5 # attached
        farm_exec $node timeout 120 "$LICB" run "$url" "${tls[@]}" "$n" -c 1 -b "$dev_base" "$@" \
                >/dev/null 2>"$FARM_DIR/gen.err" || echo "lic-bench: traced $label failed: $(tail -2 "$FARM_DIR/gen.err")" >&2
        for pid in "${spids[@]}"; do
                kill -INT "$pid" 2>/dev/null || true
                wait "$pid" 2>/dev/null || true
        done
        for p in $pids; do
                name=${p%%=*}
                f=$FARM_DIR/strace-$label-$name
                read -r fs fd pw us <<<"$(trace_calls "$f")"
                echo "trace op=$label server=$name n=$n fsync=$fs fdatasync=$fd pwrite64=$pw fdatasync_us=$us" >>"$raw"
        done
}
if ((have_strace)); then
        say "counting fsyncs with strace: $TRACE_N requests of each kind, 1 connection ($(elapsed))"
        tok=$FARM_DIR/tokens
        devices "$TRACE_N"
        rm -f "$tok"
        traced temporary "$TRACE_N" "srv=$one_pid" "$url_one" -o temporary -t "$tok"
        traced validate "$TRACE_N" "srv=$one_pid" "$url_one" -o validate -t "$tok"
        traced cal "$TRACE_N" "srv=$one_pid" "$url_one" -o cal -t "$tok"
        devices "$TRACE_N"
        rm -f "$tok"
        farm_exec $node "$LICB" run "$url_a" "${tls[@]}" "$TRACE_N" -c 1 -b "$dev_base" -o temporary,validate \
                -t "$tok" >/dev/null
        traced borrowed-cal "$TRACE_N" "srv=$a_pid lender=$b_pid" "$url_a" -o cal -l lic-b -t "$tok"
else
        say "strace is not installed: no fsync counts"
fi
lic_stop lic-a
lic_stop lic-b
lic_stop lic-one

# ---- memory and size per 100000 records -------------------------------------------------
# lic-mem: the same HTTPS warm-up (WARM_N devices: temporary, validate,
# CAL, then WARM_N inventory reads, at 8 connections) before each reading,
# in a fresh process: once on a new store, once after BULK devices
# (2 x BULK records) were loaded through the store API while the server
# was stopped.
mem_db=$(db_of lic-mem)
mem_reading() { # LABEL
        local pid counts
        lic_start lic-mem
        pid=$(lic_pid lic-mem)
        echo "mem phase=$1 step=open open_rss_kib=$(status_kib "$pid" VmRSS)" >>"$raw"
        bench "scen=mem-$1 rep=1" "$url_mem" "$WARM_N" 8 -o temporary,validate,cal,inventory -P "srv=$pid"
        echo "mem phase=$1 step=served rss_kib=$(status_kib "$pid" VmRSS) hwm_kib=$(status_kib "$pid" VmHWM)" \
                "db_live_bytes=$(db_bytes "$mem_db")" >>"$raw"
        lic_stop lic-mem
        counts=$(farm_exec $node "$LICB" count "$mem_db") || die "lic_bench count failed (exit status $?)"
        echo "mem phase=$1 step=closed db_bytes=$(db_bytes "$mem_db") ${counts#count }" >>"$raw"
}
say "memory: lic-mem before and after $BULK devices ($((2 * BULK)) records) loaded through the store API ($(elapsed))"
url_mem=https://127.0.0.1:${port[lic-mem]}
lic_conf lic-mem
lic_start lic-mem
install_pack lic-mem PM $((4 * WARM_N))
lic_stop lic-mem
mem_reading before
load_line=$(farm_exec $node "$LICB" load "$mem_db" "$BULK" 2>"$FARM_DIR/load.err") ||
        die "lic_bench load failed (exit status $?): $(cat "$FARM_DIR/load.err")"
echo "mem phase=load $load_line" >>"$raw"
say "$load_line ($(elapsed))"
mem_reading after

# ---- summary ---------------------------------------------------------------------------------
{
        echo
        awk -v reps="$REPS" -v n1="$N1" -v n8="$N8" -v warm="$WARM_N" -v bulk="$BULK" \
                -v rss_one="$rss_one" -v rss_a="$rss_a" -v rss_b="$rss_b" -v strace="$have_strace" "$(<"$here/stats.awk")"'
        function k(s, c, p, f) { return s SUBSEP c SUBSEP p SUBSEP f }
        function ratio(a, b,    x, y) { x = median(a); y = median(b); return (x == "" || y == "" || y == 0) ? "-" : sprintf("%.2f", x / y) }
        function mib(kib) { return sprintf("%.1f", kib / 1024) }
        function row(label, s, c, p, base,    us, wb, r) {
                if (!cnt[k(s, c, p, "per_s")]) return
                us = median(k(s, c, p, "srv_us_per_req"))
                if (s == "borrow" && cnt[k(s, c, p, "lender_us_per_req")])
                        us = sprintf("%.0f+%.0f", us, median(k(s, c, p, "lender_us_per_req")))
                else if (us != "") us = sprintf("%.0f", us)
                wb = median(k(s, c, p, "srv_wbytes_per_req"))
                if (s == "borrow" && cnt[k(s, c, p, "lender_wbytes_per_req")])
                        wb = sprintf("%.0f+%.0f", wb / 1024, median(k(s, c, p, "lender_wbytes_per_req")) / 1024)
                else if (wb != "") wb = sprintf("%.0f", wb / 1024)
                r = base == "" ? "1.00" : ratio(k(s, c, p, "per_s"), base)
                printf "%-34s %5s %7s %6s %7s %7s %7s %9s %8s %5s%% %4s%% %6d\n", label, c,
                        m(k(s, c, p, "per_s"), "%.0f"), r, m(k(s, c, p, "p50_ms"), "%.2f"),
                        m(k(s, c, p, "p90_ms"), "%.2f"), m(k(s, c, p, "p99_ms"), "%.2f"), us, wb,
                        m(k(s, c, p, "other_cpu_pct"), "%.0f"), m(k(s, c, p, "io_some_pct"), "%.0f"),
                        bad[s, c, p] + 0
        }
        {
                s = ""; c = ""; p = ""
                for (i = 1; i <= NF; i++) {
                        split($i, kv, "=")
                        if (kv[1] == "scen") s = kv[2]
                        else if (kv[1] == "conns") c = kv[2]
                        else if (kv[1] == "phase") p = kv[2]
                }
                if ($1 == "trace") {
                        for (i = 2; i <= NF; i++) { split($i, kv, "="); tr[kv[1]] = kv[2] }
                        n = tr["n"] > 0 ? tr["n"] : 1
                        fs[tr["op"], tr["server"]] = sprintf("%.2f", (tr["fsync"] + tr["fdatasync"]) / n)
                        pw[tr["op"], tr["server"]] = sprintf("%.1f", tr["pwrite64"] / n)
                        if (tr["fdatasync"] > 0) { sync_us += tr["fdatasync_us"] * tr["fdatasync"]; sync_n += tr["fdatasync"] }
                        next
                }
                if ($1 == "mem") {
                        for (i = 2; i <= NF; i++) {
                                split($i, kv, "=")
                                if (kv[1] != "phase" && kv[1] != "step") mem[p, kv[1]] = kv[2]
                        }
                        next
                }
                if ($NF == "failed") { failed[s "/" c]++; next }
                for (i = 1; i <= NF; i++) {
                        split($i, kv, "=")
                        if (kv[2] !~ /^-?[0-9.]+$/) continue
                        if (kv[1] == "errors") bad[s, c, p] += kv[2]
                        key = k(s, c, p, kv[1])
                        val[key, ++cnt[key]] = kv[2] + 0
                }
        }
        END {
                printf "licensing: closed loop over 1 and 8 connections, medians of %d runs (%d devices per run at 1" \
                        " connection, %d at 8); ratio: req/s / the baseline at the same connections (borrowed CAL:" \
                        " / the one-server CAL)\n\n", reps, n1, n8
                h = sprintf("%-34s %5s %7s %6s %7s %7s %7s %9s %8s %6s %5s %6s", "request", "conns", "req/s", "ratio",
                        "p50 ms", "p90 ms", "p99 ms", "srv us/r", "KiB/r", "others", "io", "errors")
                gsub(/us\/r/, "µs/r", h)
                print h
                for (ci = 1; ci <= 2; ci++) {
                        c = ci == 1 ? 1 : 8
                        base = k("one", c, "refused", "per_s")
                        row("baseline: refused (transport)", "one", c, "refused", "")
                        row("inventory (read, no write)", "one", c, "inventory", base)
                        row("temporary token", "one", c, "temporary", base)
                        row("validate", "one", c, "validate", base)
                        row("Device CAL, one server", "one", c, "cal", base)
                        row("A: baseline: refused", "borrow", c, "refused", "")
                        row("A: temporary token", "borrow", c, "temporary", k("borrow", c, "refused", "per_s"))
                        row("A: Device CAL borrowed from B", "borrow", c, "cal", k("one", c, "cal", "per_s"))
                        if (ci == 1) print ""
                }
                printf "\n(srv µs/r: the license server'"'"'s CPU per request, borrowing: A+B; KiB/r: what it wrote to" \
                        " storage per request,\n /proc/PID/io write_bytes, A+B; others: CPU of everything else on the" \
                        " machine, of one core; io: share of the\n time some task waited for storage, /proc/pressure/io;" \
                        " errors: failed and wrong answers over all runs)\n"
                printf "spread (min-max) of req/s: CAL one server %s (1 conn), %s (8); borrowed %s (1), %s (8);" \
                        " baseline %s (1), %s (8)\n", spread(k("one", 1, "cal", "per_s"), "%.0f"),
                        spread(k("one", 8, "cal", "per_s"), "%.0f"), spread(k("borrow", 1, "cal", "per_s"), "%.0f"),
                        spread(k("borrow", 8, "cal", "per_s"), "%.0f"), spread(k("one", 1, "refused", "per_s"), "%.0f"),
                        spread(k("one", 8, "refused", "per_s"), "%.0f")

                printf "\nratios of medians                                    1 conn   8 conns\n"
                printf "  temporary token / baseline, req/s                 %6s    %6s\n",
                        ratio(k("one", 1, "temporary", "per_s"), k("one", 1, "refused", "per_s")),
                        ratio(k("one", 8, "temporary", "per_s"), k("one", 8, "refused", "per_s"))
                printf "  Device CAL / baseline, req/s                      %6s    %6s\n",
                        ratio(k("one", 1, "cal", "per_s"), k("one", 1, "refused", "per_s")),
                        ratio(k("one", 8, "cal", "per_s"), k("one", 8, "refused", "per_s"))
                printf "  Device CAL / baseline, p50                        %6s    %6s\n",
                        ratio(k("one", 1, "cal", "p50_ms"), k("one", 1, "refused", "p50_ms")),
                        ratio(k("one", 8, "cal", "p50_ms"), k("one", 8, "refused", "p50_ms"))
                printf "  Device CAL, 8 conns / 1 conn, req/s                         %6s\n",
                        ratio(k("one", 8, "cal", "per_s"), k("one", 1, "cal", "per_s"))
                printf "  borrowed CAL / one-server CAL, req/s              %6s    %6s\n",
                        ratio(k("borrow", 1, "cal", "per_s"), k("one", 1, "cal", "per_s")),
                        ratio(k("borrow", 8, "cal", "per_s"), k("one", 8, "cal", "per_s"))
                printf "  borrowed CAL / one-server CAL, p50                %6s    %6s\n",
                        ratio(k("borrow", 1, "cal", "p50_ms"), k("one", 1, "cal", "p50_ms")),
                        ratio(k("borrow", 8, "cal", "p50_ms"), k("one", 8, "cal", "p50_ms"))
                printf "  borrowed CAL / one-server CAL, p99                %6s    %6s\n",
                        ratio(k("borrow", 1, "cal", "p99_ms"), k("one", 1, "cal", "p99_ms")),
                        ratio(k("borrow", 8, "cal", "p99_ms"), k("one", 8, "cal", "p99_ms"))
                printf "  requests B served per borrowed CAL (a lend + inventory reads) %s (1 conn), %s (8 conns)\n",
                        m(k("borrow", 1, "cal", "lender_requests_per_cal"), "%.2f"),
                        m(k("borrow", 8, "cal", "lender_requests_per_cal"), "%.2f")

                printf "\ndurability: SQLite WAL with synchronous=FULL (lib/sqlite.c): a write is answered after its" \
                        " commit reached the disk\n"
                if (strace == 1)
                        printf "  fsync+fdatasync per request (strace -c, 1 connection): temporary %s, validate %s," \
                                " Device CAL %s; borrowed CAL: A %s + B %s\n  pwrite64 per request: temporary %s," \
                                " validate %s, Device CAL %s; borrowed CAL: A %s + B %s\n",
                                fs["temporary", "srv"], fs["validate", "srv"], fs["cal", "srv"],
                                fs["borrowed-cal", "srv"], fs["borrowed-cal", "lender"], pw["temporary", "srv"],
                                pw["validate", "srv"], pw["cal", "srv"], pw["borrowed-cal", "srv"],
                                pw["borrowed-cal", "lender"]
                if (strace == 1 && sync_n > 0)
                        printf "  an fdatasync took %.0f µs on average (strace -w, all traced requests), while the" \
                                " server'"'"'s one event loop waits\n", sync_us / sync_n
                if (strace != 1)
                        printf "  (strace not installed: fsyncs not counted)\n"
                b1 = median(k("one", 1, "refused", "srv_us_per_req"))
                if (b1 != "")
                        printf "  server CPU per request over the baseline'"'"'s %.0f µs (1 conn): temporary %+.0f," \
                                " validate %+.0f, Device CAL %+.0f; borrowed CAL: A %+.0f, and B %.0f\n", b1,
                                median(k("one", 1, "temporary", "srv_us_per_req")) - b1,
                                median(k("one", 1, "validate", "srv_us_per_req")) - b1,
                                median(k("one", 1, "cal", "srv_us_per_req")) - b1,
                                median(k("borrow", 1, "cal", "srv_us_per_req")) - b1,
                                median(k("borrow", 1, "cal", "lender_us_per_req"))

                printf "\nmemory and size per 100000 records (lic-mem; %d devices loaded through the store API: a" \
                        " temporary token,\nits validation and a Device CAL each, transactions of 10000 operations;" \
                        " each reading after the same\nHTTPS warm-up of %d devices in a fresh process)\n", bulk, warm
                if (mem["load", "seconds"] != "")
                        printf "  load: %s records in %s s, %s records/s\n", mem["load", "records"],
                                mem["load", "seconds"], mem["load", "records_per_s"]
                dr = mem["after", "records"] - mem["before", "records"]
                if (dr > 0) {
                        f = 100000 / dr
                        printf "  records in the store: %d before, %d after (audit rows %d, %d)\n", mem["before", "records"],
                                mem["after", "records"], mem["before", "audit_rows"], mem["after", "audit_rows"]
                        printf "  VmRSS after opening: %s MiB before, %s MiB after\n", mib(mem["before", "open_rss_kib"]),
                                mib(mem["after", "open_rss_kib"])
                        printf "  VmRSS after the warm-up: %s MiB before, %s MiB after: %+.1f MiB per 100000 records;" \
                                " VmHWM %s / %s MiB\n", mib(mem["before", "rss_kib"]), mib(mem["after", "rss_kib"]),
                                (mem["after", "rss_kib"] - mem["before", "rss_kib"]) * f / 1024,
                                mib(mem["before", "hwm_kib"]), mib(mem["after", "hwm_kib"])
                        printf "  database (closed, WAL checkpointed): %s MiB before, %s MiB after: %.1f MiB per" \
                                " 100000 records (%.0f bytes a record, audit rows and indexes included)\n",
                                mib(mem["before", "db_bytes"] / 1024), mib(mem["after", "db_bytes"] / 1024),
                                (mem["after", "db_bytes"] - mem["before", "db_bytes"]) * f / 1048576,
                                (mem["after", "db_bytes"] - mem["before", "db_bytes"]) / dr
                        printf "  database while serving, with -wal and -shm: %s MiB before, %s MiB after\n",
                                mib(mem["before", "db_live_bytes"] / 1024), mib(mem["after", "db_live_bytes"] / 1024)
                }
                printf "  the warm-up at 8 connections (one run each), on the new store -> with the loaded records:\n"
                printf "    Device CAL %s -> %s req/s, server CPU %s -> %s µs per CAL\n",
                        m(k("mem-before", 8, "cal", "per_s"), "%.0f"), m(k("mem-after", 8, "cal", "per_s"), "%.0f"),
                        m(k("mem-before", 8, "cal", "srv_us_per_req"), "%.0f"),
                        m(k("mem-after", 8, "cal", "srv_us_per_req"), "%.0f")
                printf "    GET /v1/inventory %s -> %s req/s, server CPU %s -> %s µs per read (it counts the pack'"'"'s" \
                        " records)\n", m(k("mem-before", 8, "inventory", "per_s"), "%.0f"),
                        m(k("mem-after", 8, "inventory", "per_s"), "%.0f"),
                        m(k("mem-before", 8, "inventory", "srv_us_per_req"), "%.0f"),
                        m(k("mem-after", 8, "inventory", "srv_us_per_req"), "%.0f")
                printf "  after the rate runs: VmRSS lic-one %s MiB, lic-a %s MiB, lic-b %s MiB\n", mib(rss_one),
                        mib(rss_a), mib(rss_b)

                bad_runs = ""
                for (key in failed) bad_runs = bad_runs " " key "(" failed[key] ")"
                if (bad_runs != "") printf "\nWARNING: failed runs:%s\n", bad_runs
        }' "$raw"
        echo
        echo "lic-bench: raw figures in $raw; $(elapsed)"
} | tee "$summary"
