#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# make bench, part 2: the Session Directory with a million sessions. Logon
# query rate and latency (against a baseline in the same run: the same
# requests refused by the handler before the store), session-event rate
# (durable commits), change propagation from an event reported by one host
# to another host's BPF sessions map, and memory. Figures are printed
# (medians of interleaved repetitions, and ratios), not asserted.
# docs/bench.md ("The directory") explains what is measured and why.
#
#   node1 10.239.0.1   tsagent, directory role, on a database loaded by
#                      `dir_bench load`; the query and event generators
#   node2 10.239.0.2   tsagent, host role following the directory (host A:
#                      propagation events are reported with its certificate)
#   node3 10.239.0.3   tsagent, host role following the directory (host B:
#                      `dir_bench propagate` watches its pinned sessions map)
#
# Knobs (environment): TSFARM_BENCH_DIR_SESSIONS (1000000), _NODES (20),
# _RATE (10000 queries/s), _LOW_RATE (5000), _SECONDS (5 per query run),
# _REPS (3), _CONNS (16), _EVENTS (2000 per run), _EVENT_CONNS (4),
# _PROP_EVENTS (400), _PROP_SESSIONS (see below), _SYNC_TIMEOUT (150 s),
# TSFARM_BENCH_PIN (1: directory on CPU 0, generators on the last CPU),
# TSFARM_BENCH_OUT (build/bench).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export TSFARM_BUILD=${TSFARM_BUILD:-$repo/build}
# shellcheck source=../integration/lib/farm.sh
source "$repo/tests/integration/lib/farm.sh"
# shellcheck source=../integration/lib/tsagent.sh
source "$repo/tests/integration/lib/tsagent.sh"

SESSIONS=${TSFARM_BENCH_DIR_SESSIONS:-1000000}
NODES=${TSFARM_BENCH_DIR_NODES:-20}
RATE=${TSFARM_BENCH_DIR_RATE:-10000}
LOW_RATE=${TSFARM_BENCH_DIR_LOW_RATE:-5000}
SECONDS_PER_RUN=${TSFARM_BENCH_DIR_SECONDS:-5}
REPS=${TSFARM_BENCH_DIR_REPS:-3}
CONNS=${TSFARM_BENCH_DIR_CONNS:-16}
EVENTS=${TSFARM_BENCH_DIR_EVENTS:-2000}
EVENT_CONNS=${TSFARM_BENCH_DIR_EVENT_CONNS:-4}
PROP_EVENTS=${TSFARM_BENCH_DIR_PROP_EVENTS:-400}
SYNC_TIMEOUT=${TSFARM_BENCH_DIR_SYNC_TIMEOUT:-150}
PIN=${TSFARM_BENCH_PIN:-1}
OUT=${TSFARM_BENCH_OUT:-$TSFARM_BUILD/bench}
DIRB=$TSFARM_BUILD/tests/bench/dir_bench
TSAGENT=$TSFARM_BUILD/tsagent
TSCTL=$TSFARM_BUILD/tsctl

# >>> PROPAGATION SIZE ---------------------------------------------------------
# A host mirrors the directory's sessions into its BPF sessions map, which
# holds TSF_SESSIONS_MAX (65,536) entries unless the agent knows `[host]
# sessions-max` (then the hosts get HOST_SESSIONS_MAX = 1,100,000 and follow
# the full directory). Without it, propagation is measured against a second
# directory holding PROP_FALLBACK (60,000) sessions, and the output says so.
# TSFARM_BENCH_DIR_PROP_SESSIONS forces the size (HOST_SESSIONS_MAX then
# applies whenever the agent knows the option). If the hosts cannot load the
# full directory's snapshot within SYNC_TIMEOUT, the run falls back to
# PROP_FALLBACK sessions and says that too.
HOST_SESSIONS_MAX=1100000
PROP_FALLBACK=60000
PROP_SESSIONS=${TSFARM_BENCH_DIR_PROP_SESSIONS:-}
# <<< --------------------------------------------------------------------------

die() {
        echo "dir-bench: $*" >&2
        exit 1
}
say() {
        echo "dir-bench: $*"
}

((EUID == 0)) || die "needs root (network namespaces, BPF)"
for t in ip nsenter unshare jq bpftool timeout taskset; do
        command -v "$t" >/dev/null || die "$t is missing (tools/deps.sh bench installs it)"
done
for f in "$DIRB" "$TSAGENT" "$TSCTL"; do
        [[ -x $f ]] || die "$f is missing (make bench builds it)"
done
mkdir -p "$OUT"
raw=$OUT/dir-raw.txt
summary=$OUT/dir-summary.txt
: >"$raw"
started=$(farm_now_ms)
elapsed() {
        echo "$((($(farm_now_ms) - started) / 1000)) s"
}

ncpu=$(nproc)
dir_pin=() gen_pin=()
if [[ $PIN == 1 && $ncpu -ge 2 ]]; then
        dir_pin=(taskset -c 0)
        gen_pin=(taskset -c $((ncpu - 1)))
else
        PIN=0
fi

trap farm_down EXIT
farm_up 3 0
dnode=node1
daddr=$(farm_addr $dnode)
url=https://$daddr:7400
pki=$FARM_DIR/pki

# ---- certificates ------------------------------------------------------------------
# The directory; ts01, one of the loaded nodes (queries and events go out
# under its name); node2 and node3, the hosts.
mkdir -m 700 "$pki"
"$TSCTL" pki init --dir "$pki" --name dir-bench --days 2 >/dev/null
"$TSCTL" pki issue --dir "$pki" directory --ip "$daddr" --days 1 >/dev/null
"$TSCTL" pki issue --dir "$pki" ts01 --days 1 >/dev/null
for n in node2 node3; do
        "$TSCTL" pki issue --dir "$pki" "$n" --ip "$(farm_addr $n)" --days 1 >/dev/null
done
tls=("$pki/ca.crt" "$pki/ts01.crt" "$pki/ts01.key")

# ---- the directory -------------------------------------------------------------------
dir_conf() { # NAME DATABASE: writes $FARM_DIR/NAME.conf
        mkdir -p "$FARM_DIR/$1-run"
        # The loaded nodes never heartbeat: a day's lapse keeps them up
        # (and their sessions countable) for the whole run.
        cat >"$FARM_DIR/$1.conf" <<EOF
[agent]
roles = directory
node-name = directory
log-level = info
state-directory = $(dirname "$2")
runtime-directory = $FARM_DIR/$1-run

[directory]
database = $2
listen = $daddr:7400
certificate = $pki/directory.crt
key = $pki/directory.key
ca = $pki/ca.crt
heartbeat-lapse = 1d
EOF
}
dir_ready() {
        farm_alive "$(farm_pid "$1")" || return 125
        farm_listening $dnode "$daddr" 7400
}
dir_start() { # NAME: prints how long it took to listen (ms)
        local t0
        t0=$(farm_now_ms)
        farm_spawn $dnode "$1" ${dir_pin[@]+"${dir_pin[@]}"} env TSFARM_LOG_TARGET=stderr "$TSAGENT" \
                --config "$FARM_DIR/$1.conf"
        if ! farm_wait_until 60 dir_ready "$1"; then
                farm_log_tail "$(farm_log "$1")" 20 >&2
                die "the directory agent ($1) did not come up"
        fi
        echo $(($(farm_now_ms) - t0))
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
timed_get() { # PATH: "HTTP-STATUS MS BYTES" of one GET as ts01 (status 0: it failed)
        local line
        line=$(farm_exec $dnode "$DIRB" get "$url" "${tls[@]}" "$1" 2>/dev/null) || true
        sed -n 's/.* status=\([0-9]*\) ms=\([0-9.]*\) bytes=\([0-9]*\).*/\1 \2 \3/p' <<<"$line" | grep . || echo "0 - 0"
}

db=$FARM_DIR/state-main/directory.db
mkdir -p "$(dirname "$db")"
say "loading $SESSIONS sessions over $NODES nodes into $db (store API, batches of 10000 events)"
load_line=$("$DIRB" load "$db" "$SESSIONS" "$NODES")
echo "phase=load $load_line" >>"$raw"
say "$load_line ($(elapsed))"
# The load left a couple of hundred MiB for the kernel to write back; out
# of the way before anything is measured (sync returns when it is done).
sync
dir_conf directory "$db"
start_ms=$(dir_start directory)
dir_pid=$(farm_pid directory)
say "directory listening after $start_ms ms; VmRSS $(status_kib "$dir_pid" VmRSS) KiB"
rss_open=$(status_kib "$dir_pid" VmRSS)

# One request each on the idle directory: the routes that read more
# than a few rows (a host's first snapshot page, the metrics' counts).
metrics_cold=$(timed_get /metrics)
nodes_get=$(timed_get /v1/nodes)
page_get=$(timed_get "/v1/snapshot?limit=10000")

# ---- logon queries -----------------------------------------------------------------------
# Four runs per repetition, rotated so that none always comes first:
#   refused  POST /v1/logon-query {"user": 0} at RATE: the handler refuses
#            it (400) before the store: TLS, HTTP, JSON and routing only
#   lookup   users that have a session (exact, DOMAIN\user, UPN, cut) at RATE
#   mix      the same with 2 in 10 users that have none (placements) at RATE
#   low      the mix at LOW_RATE: the same work with headroom
# then the machine's wake-up jitter (1 s) and the session events. After
# the repetitions, one more mix run with a GET /metrics halfway through.
runs=(refused lookup mix low)
declare -A run_args=([refused]="$RATE -m refused" [lookup]="$RATE -m lookup" [mix]="$RATE -m mix"
        [low]="$LOW_RATE -m mix" [scrape]="$RATE -m mix -x /metrics")
gen() { # PHASE RUN REP ARGS...: one generator run, its line into $raw
        local phase=$1 run=$2 rep=$3 line
        shift 3
        if line=$(farm_exec $dnode timeout 150 ${gen_pin[@]+"${gen_pin[@]}"} "$DIRB" "$@" 2>"$FARM_DIR/gen.err"); then
                echo "phase=$phase run=$run rep=$rep $line" >>"$raw"
        else
                echo "phase=$phase run=$run rep=$rep failed" >>"$raw"
                echo "dir-bench: $phase $run failed: $line $(cat "$FARM_DIR/gen.err")" >&2
        fi
}
query() { # RUN REP
        local a=${run_args[$1]}
        # shellcheck disable=SC2086 # the options are words on purpose
        gen query "$1" "$2" query "$url" "${tls[@]}" "${a%% *}" "$SECONDS_PER_RUN" -n "$SESSIONS" -c "$CONNS" \
                -e ts01 -P "$dir_pid" ${a#* }
}

say "queries: refused (baseline), lookup and mix at ${RATE}/s, the mix at ${LOW_RATE}/s, ${SECONDS_PER_RUN}s" \
        "each over $CONNS connections; events: $EVENTS per run over $EVENT_CONNS connections; $REPS repetitions;" \
        "$( ((PIN)) && echo "directory on CPU 0, generators on CPU $((ncpu - 1))" || echo "nothing pinned")"
# Not recorded: the directory's page cache and memory are cold.
farm_exec $dnode timeout 60 ${gen_pin[@]+"${gen_pin[@]}"} "$DIRB" query "$url" "${tls[@]}" "$RATE" 2 \
        -n "$SESSIONS" -c "$CONNS" -e ts01 >/dev/null 2>&1 || true
for ((rep = 1; rep <= REPS; rep++)); do
        for ((i = 0; i < ${#runs[@]}; i++)); do
                query "${runs[$(((i + rep - 1) % ${#runs[@]}))]}" "$rep"
        done
        gen jitter "" "$rep" jitter 1
        gen events "" "$rep" events "$url" "${tls[@]}" "$EVENTS" -c "$EVENT_CONNS" \
                -b $((2000000000 + rep * 10000000)) -P "$dir_pid"
        say "repetition $rep/$REPS done ($(elapsed))"
done
query scrape 1
farm_alive "$dir_pid" || die "the directory agent died; see $(farm_log directory)"
rss_end=$(status_kib "$dir_pid" VmRSS)
hwm_end=$(status_kib "$dir_pid" VmHWM)
db_size=$(db_bytes "$db")

# ---- propagation ---------------------------------------------------------------------------
# Can the hosts size their map for the whole directory?
probe=$FARM_DIR/probe.conf
printf '[agent]\nroles = host\nnode-name = probe\n[host]\nsessions-max = %s\n[node probe]\nid = 1\naddress = 10.0.0.1\n' \
        "$HOST_SESSIONS_MAX" >"$probe"
if "$TSAGENT" --config "$probe" --check-config >/dev/null 2>&1; then
        have_sessions_max=1
        PROP_SESSIONS=${PROP_SESSIONS:-$SESSIONS}
else
        have_sessions_max=0
        PROP_SESSIONS=${PROP_SESSIONS:-$((SESSIONS < PROP_FALLBACK ? SESSIONS : PROP_FALLBACK))}
fi
prop_note=""
((have_sessions_max)) || prop_note="this tsagent has no [host] sessions-max: the hosts' maps hold 65536 entries"

host_conf() { # NODE
        {
                printf '[host]\ndirectory = %s\ncertificate = %s/%s.crt\nkey = %s/%s.key\nca = %s/ca.crt\n' \
                        "$url" "$pki" "$1" "$pki" "$1" "$pki"
                ((have_sessions_max)) && printf 'sessions-max = %s\n' "$HOST_SESSIONS_MAX"
                # The loaded nodes, so that their sessions go into the map
                # (a host mirrors sessions of nodes it has a [node] for).
                for ((k = 1; k <= NODES; k++)); do
                        printf '[node ts%02d]\nid = %d\naddress = 10.240.%d.%d\n' "$k" $((100 + k)) $((k / 256)) $((k % 256))
                done
        } | tsagent_conf "$1"
        # Per-session debug lines would cost more than the mirroring.
        sed -i 's/^log-level = .*/log-level = info/' "$FARM_DIR/$1.conf"
}
synced() { # NAME: the host loaded a snapshot; 125 when it died
        farm_alive "$(farm_pid "$1")" || return 125
        grep -q "Loaded the directory snapshot" "$(farm_log "$1")"
}
registered() { # NAME
        farm_alive "$(farm_pid "$1")" || return 125
        grep -q "Registered node" "$(farm_log "$1")"
}
cpu_ms() { # PID: user + system CPU time so far, in ms (0 when it is gone)
        awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.0f", ($12 + $13) * 1000 / hz }' \
                "/proc/$1/stat" 2>/dev/null || echo 0
}
# Starts both hosts (names suffixed $1) and waits until host B mirrors the
# directory; sets sync_ms, sync_line and sync_cpu. Fails when B does not
# get there.
hosts_start() { # SUFFIX
        local t0 d0
        t0=$(farm_now_ms)
        d0=$(cpu_ms "$(farm_pid $pdir)")
        for n in node2 node3; do
                farm_spawn "$n" "agent-$n$1" env TSFARM_LOG_TARGET=stderr "$TSAGENT" --config "$FARM_DIR/$n.conf"
        done
        farm_wait_until 20 registered "agent-node2$1" || return 1
        farm_wait_until "$SYNC_TIMEOUT" synced "agent-node3$1" || return 1
        sync_ms=$(($(farm_now_ms) - t0))
        sync_line=$(grep -m1 "Loaded the directory snapshot" "$(farm_log "agent-node3$1")")
        # Where the time went: the directory served both hosts' pages.
        sync_cpu="host B $(cpu_ms "$(farm_pid "agent-node3$1")") ms, host A $(cpu_ms "$(farm_pid "agent-node2$1")") ms,"
        sync_cpu+=" the directory $(($(cpu_ms "$(farm_pid $pdir)") - d0)) ms"
}
hosts_stop() { # SUFFIX
        farm_stop "agent-node2$1" 5
        farm_stop "agent-node3$1" 5
}
# Replaces the directory $pdir with directory-prop on a database of
# PROP_SESSIONS sessions.
prop_directory() {
        local pdb=$FARM_DIR/state-prop/directory.db
        farm_stop "$pdir" 10
        mkdir -p "$(dirname "$pdb")"
        echo "phase=load-prop $("$DIRB" load "$pdb" "$PROP_SESSIONS" "$NODES")" >>"$raw"
        pdir=directory-prop
        dir_conf $pdir "$pdb"
        dir_start $pdir >/dev/null
}

for n in node2 node3; do host_conf "$n"; done
pdir=directory
if ((PROP_SESSIONS != SESSIONS)); then
        say "propagation against a directory of $PROP_SESSIONS sessions${prop_note:+ ($prop_note)}"
        prop_directory
fi
say "starting hosts node2 (A) and node3 (B), following the directory ($PROP_SESSIONS sessions) ($(elapsed))"
suffix=""
if ! hosts_start "$suffix"; then
        say "host B did not load the snapshot of $PROP_SESSIONS sessions within ${SYNC_TIMEOUT}s; its log says:"
        farm_log_tail "$(farm_log agent-node3)" 8
        ((PROP_SESSIONS > PROP_FALLBACK)) || die "giving up"
        prop_note="the hosts could not load the snapshot of $PROP_SESSIONS sessions within ${SYNC_TIMEOUT}s"
        hosts_stop "$suffix"
        PROP_SESSIONS=$PROP_FALLBACK
        say "falling back: propagation against a directory of $PROP_SESSIONS sessions ($(elapsed))"
        prop_directory
        suffix=-2
        hosts_start "$suffix" || die "host B did not load the snapshot of $PROP_SESSIONS sessions either"
fi
say "host B: ${sync_line#*: } ($sync_ms ms after start)"
if prop_line=$(farm_exec node3 timeout 300 "$DIRB" propagate "$url" "$pki/ca.crt" "$pki/node2.crt" \
        "$pki/node2.key" /sys/fs/bpf/tsfarm/sessions "$PROP_EVENTS" -a 2 2>"$FARM_DIR/prop.err"); then
        echo "phase=propagate $prop_line" >>"$raw"
else
        echo "phase=propagate failed" >>"$raw"
        echo "dir-bench: propagate failed: $prop_line $(cat "$FARM_DIR/prop.err")" >&2
fi
hostb_pid=$(farm_pid "agent-node3$suffix")
hostb_rss=$(status_kib "$hostb_pid" VmRSS)
hostb_hwm=$(status_kib "$hostb_pid" VmHWM)
map_json=$(farm_exec node3 bpftool -j map show pinned /sys/fs/bpf/tsfarm/sessions 2>/dev/null || echo '{}')
map_max=$(jq -r '.max_entries // "-"' <<<"$map_json")
map_memlock=$(jq -r '.bytes_memlock // 0' <<<"$map_json")
map_entries=$(farm_exec node3 "$TSCTL" --json host sessions 2>/dev/null | jq -r '.sessions | length' || echo "-")
pdir_pid=$(farm_pid $pdir)
pdir_rss=$(status_kib "$pdir_pid" VmRSS)
pdir_hwm=$(status_kib "$pdir_pid" VmHWM)

# ---- summary ---------------------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
ms() { awk -v v="$1" 'BEGIN { if (v ~ /^[0-9.]+$/) printf "%.0f ms", v; else print "failed" }'; }
read -r mc_status mc_s _ <<<"$metrics_cold"
read -r nd_status nd_s _ <<<"$nodes_get"
read -r pg_status pg_s pg_bytes <<<"$page_get"
{
        echo
        awk -v reps="$REPS" -v rate="$RATE" -v low="$LOW_RATE" -v sessions="$SESSIONS" "$(<"$here/stats.awk")"'
        function q(r, k) { return "query" SUBSEP r SUBSEP k }
        function ratio(a, b,    x, y) { x = median(a); y = median(b); return (x == "" || y == "" || y == 0) ? "-" : sprintf("%.2f", x / y) }
        {
                ph = ""; r = ""
                for (i = 1; i <= NF; i++) {
                        split($i, kv, "=")
                        if (kv[1] == "phase") ph = kv[2]
                        else if (kv[1] == "run") r = kv[2]
                }
                if ($NF == "failed") { failed[ph "/" r]++; next }
                for (i = 1; i <= NF; i++) {
                        split($i, kv, "=")
                        if (kv[2] !~ /^-?[0-9.]+$/) continue
                        key = ph SUBSEP r SUBSEP kv[1]
                        val[key, ++cnt[key]] = kv[2] + 0
                        if (kv[1] == "errors" || kv[1] == "wrong" || kv[1] == "unfinished" || kv[1] == "timeouts") bad[ph "/" r] += kv[2]
                }
        }
        END {
                k = "load" SUBSEP "" SUBSEP
                printf "load through the store API, batches of 10000 events: %s sessions + %s disconnects in %s s," \
                        " %s events/s (%s µs each)\n\n", m(k "sessions", "%d"), m(k "disconnected", "%d"),
                        m(k "seconds", "%.1f"), m(k "events_per_s", "%.0f"), m(k "us_per_event", "%.1f")

                printf "logon queries, %s sessions: medians of %d runs; latency in ms from when each request was due\n\n",
                        sessions, reps
                h = sprintf("%-30s %8s %8s %7s %7s %7s %7s %8s %7s %6s %6s %6s", "run", "target/s", "done/s", "p50",
                        "p90", "p99", "p99.9", "dir us/q", "dir cpu", "others", "steal", "errors")
                gsub(/us\/q/, "µs/q", h)
                print h
                split("refused lookup mix low", runs, " ")
                lab["refused"] = "baseline: refused (no store)"
                lab["lookup"] = "lookup: users with a session"
                lab["mix"] = "mix: 8 lookups, 2 placements"
                lab["low"] = "mix at " low "/s"
                for (i = 1; i <= 4; i++) {
                        r = runs[i]
                        printf "%-30s %8s %8s %7s %7s %7s %7s %8s %6s%% %5s%% %5s%% %6s\n", lab[r],
                                m(q(r, "target_per_s"), "%.0f"), m(q(r, "achieved_per_s"), "%.0f"), m(q(r, "p50_ms"), "%.3f"),
                                m(q(r, "p90_ms"), "%.3f"), m(q(r, "p99_ms"), "%.3f"), m(q(r, "p999_ms"), "%.3f"),
                                m(q(r, "server_us_per_req"), "%.1f"), m(q(r, "server_cpu_pct"), "%.0f"),
                                m(q(r, "other_cpu_pct"), "%.0f"), m(q(r, "steal_pct"), "%.1f"), bad["query/" r] + 0
                }
                printf "\n(dir µs/q: the directory process'"'"'s CPU per query, all of it; dir cpu: of one core; others:" \
                        " CPU of everything\n but the directory and the generator, of one core; steal: of the machine," \
                        " taken by the hypervisor;\n errors: failed, wrong and unfinished requests over all runs)\n"
                printf "spread (min-max) at %s/s: lookup p99 %s ms, mix p99 %s ms, mix done/s %s, baseline p99 %s ms\n",
                        rate, spread(q("lookup", "p99_ms"), "%.3f"), spread(q("mix", "p99_ms"), "%.3f"),
                        spread(q("mix", "achieved_per_s"), "%.0f"), spread(q("refused", "p99_ms"), "%.3f")
                printf "mix answers per run: session %s, placed %s, ambiguous %s, other %s; TLS connections opened per run %s\n",
                        m(q("mix", "session"), "%d"), m(q("mix", "placed"), "%d"), m(q("mix", "ambiguous"), "%d"),
                        m(q("mix", "other"), "%d"), m(q("mix", "new_connections"), "%d")
                printf "machine: wake-up lateness of a 1 ms sleep p50 %s, p99 %s, p99.9 %s ms\n",
                        m("jitter" SUBSEP "" SUBSEP "p50_ms", "%.3f"), m("jitter" SUBSEP "" SUBSEP "p99_ms", "%.3f"),
                        m("jitter" SUBSEP "" SUBSEP "p999_ms", "%.3f")

                printf "\nagainst the baseline at %s/s                 ratio\n", rate
                printf "  mix p50                                  %6s\n", ratio(q("mix", "p50_ms"), q("refused", "p50_ms"))
                printf "  mix p99                                  %6s\n", ratio(q("mix", "p99_ms"), q("refused", "p99_ms"))
                printf "  lookup p99                               %6s\n", ratio(q("lookup", "p99_ms"), q("refused", "p99_ms"))
                printf "  directory CPU per query, lookup          %6s\n", ratio(q("lookup", "server_us_per_req"), q("refused", "server_us_per_req"))
                printf "  directory CPU per query, mix             %6s\n", ratio(q("mix", "server_us_per_req"), q("refused", "server_us_per_req"))
                us = median(q("mix", "server_us_per_req")); b = median(q("refused", "server_us_per_req"))
                if (us != "" && b != "" && us > 0)
                        printf "  one core at these costs: %.0f mix queries/s (%.0f of the %.0f µs are the transport)\n",
                                1e6 / us, b, us
                p99 = median(q("mix", "p99_ms")); got = median(q("mix", "achieved_per_s"))
                printf "target (p99 < 1 ms at 10000 queries/s, 1000000 sessions): mix p99 %s ms at %s/s with %s sessions: %s\n",
                        p99 == "" ? "-" : sprintf("%.3f", p99), got == "" ? "-" : sprintf("%.0f", got), sessions,
                        (p99 != "" && p99 < 1 && got >= 0.98 * rate && rate >= 10000 && sessions >= 1000000) ? "met" : "not met"

                k = "query" SUBSEP "scrape" SUBSEP
                if (cnt[k "p99_ms"])
                        printf "\none GET /metrics halfway through a mix run at %s/s: it took %s ms; the run: p50 %s ms," \
                                " p99 %s ms, done/s %s\n", rate, m(k "side_ms", "%.1f"), m(k "p50_ms", "%.3f"),
                                m(k "p99_ms", "%.3f"), m(k "achieved_per_s", "%.0f")

                k = "events" SUBSEP "" SUBSEP
                printf "\nsession events: POST /v1/sessions/event, closed loop over %s connections, each a durable commit\n",
                        m(k "conns", "%d")
                printf "  %s events/s (spread %s), latency p50 %s ms, p90 %s ms, p99 %s ms; directory CPU %s µs/event;" \
                        " errors %d\n", m(k "events_per_s", "%.0f"), spread(k "events_per_s", "%.0f"), m(k "p50_ms", "%.3f"),
                        m(k "p90_ms", "%.3f"), m(k "p99_ms", "%.3f"), m(k "server_us_per_event", "%.0f"), bad["events/"] + 0

                k = "propagate" SUBSEP "" SUBSEP
                printf "\npropagation: an event reported as node2 until it shows in node3'"'"'s BPF sessions map" \
                        " (%s events, one at a time)\n", m(k "events", "%d")
                printf "  sent -> in the map: p50 %s ms, p90 %s ms, p99 %s ms, max %s ms\n", m(k "p50_ms", "%.2f"),
                        m(k "p90_ms", "%.2f"), m(k "p99_ms", "%.2f"), m(k "max_ms", "%.2f")
                printf "  of which the commit (until the POST is answered) p50 %s ms, p99 %s ms;" \
                        " answer -> map p50 %s ms, p99 %s ms\n", m(k "commit_p50_ms", "%.2f"), m(k "commit_p99_ms", "%.2f"),
                        m(k "after_commit_p50_ms", "%.2f"), m(k "after_commit_p99_ms", "%.2f")
                p99 = median(k "p99_ms")
                printf "  target (p99 < 100 ms): %s; errors and timeouts %d\n",
                        p99 == "" ? "-" : (p99 < 100 ? "met" : "not met"), bad["propagate/"] + 0

                bad_runs = ""
                for (key in failed) bad_runs = bad_runs " " key "(" failed[key] ")"
                if (bad_runs != "") printf "\nWARNING: failed runs:%s\n", bad_runs
        }' "$raw"
        echo "  directory: $PROP_SESSIONS sessions${prop_note:+ ($prop_note)}"
        echo "  host B at start: ${sync_line#*: } ($sync_ms ms after it started; CPU until then: $sync_cpu)"
        if [[ $map_entries =~ ^[0-9]+$ ]] && ((map_entries < PROP_SESSIONS)); then
                echo "  WARNING: host B's sessions map holds $map_entries entries, the directory $PROP_SESSIONS sessions"
        fi
        echo
        echo "memory and size"
        echo "  directory, $SESSIONS sessions: VmRSS $(mib "$rss_open") MiB after opening, $(mib "$rss_end") MiB" \
                "after the runs, VmHWM $(mib "$hwm_end") MiB; database $((db_size / 1048576)) MiB with -wal and -shm;" \
                "listening $start_ms ms after start"
        if [[ $pdir != directory ]]; then
                echo "  directory, $PROP_SESSIONS sessions (propagation): VmRSS $(mib "$pdir_rss") MiB, VmHWM $(mib "$pdir_hwm") MiB"
        fi
        echo "  host B following $PROP_SESSIONS sessions: VmRSS $(mib "$hostb_rss") MiB, VmHWM $(mib "$hostb_hwm") MiB;" \
                "sessions map $map_entries entries, max_entries $map_max, memlock $((map_memlock / 1048576)) MiB"
        echo
        echo "single requests on the idle directory ($SESSIONS sessions; the event loop serves nothing else meanwhile)"
        echo "  GET /metrics                      $(ms "$mc_s") (HTTP $mc_status)"
        echo "  GET /v1/nodes                     $(ms "$nd_s") (HTTP $nd_status)"
        echo "  GET /v1/snapshot?limit=10000      $(ms "$pg_s") (HTTP $pg_status, $((${pg_bytes:-0} / 1024)) KiB): one of" \
                "$(((SESSIONS + 9999) / 10000)) pages a host loads"
        echo
        echo "dir-bench: raw figures in $raw; $(elapsed)"
} | tee "$summary"
