#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# make bench: relay throughput, CPU per GiB, small-message latency, new
# connection rate and decision latency of tsfarm's data paths against a
# direct connection and against HAProxy (TCP mode, rdp-cookie), all in one
# run, on one farm node reached from a client namespace over veth.
# Figures are printed (medians of interleaved repetitions, and ratios), not
# asserted. docs/bench.md explains what is measured and why.
#
#   node1 (10.239.0.1)                                     client1
#     tsbench serve 3389 3391   the RDP server stand-in      .101  a farm peer ([node benchclient])
#     tsagent, host role        sk_lookup on 3389, gateway   .150  an ordinary client
#     haproxy :3390 -> 127.0.0.1:3389 (rdp-cookie)
#
#   scenario     client  port  path
#   direct       .101    3391  straight to the server; sk_lookup returns at once (not the RDP port)
#   fastpath     .101    3389  sk_lookup finds a farm peer: straight to the server, tracked
#   gateway      .150    3389  sk_lookup -> tsagent's gateway -> 127.0.0.1:3389 (relayed)
#   haproxy      .150    3390  haproxy -> 127.0.0.1:3389 (bypassed by sk_lookup: a local source)
#
# Knobs (environment): TSFARM_BENCH_REPS (5), TSFARM_BENCH_MIB (1024),
# TSFARM_BENCH_PINGS (20000), TSFARM_BENCH_CONN_SECONDS (2),
# TSFARM_BENCH_CONCURRENCY (4), TSFARM_BENCH_HAPROXY_THREADS (1),
# TSFARM_BENCH_AGENT_LOG_LEVEL (notice), TSFARM_BENCH_PIN (1: server on CPU 0,
# client on the last CPU), TSFARM_BENCH_OUT (build/bench).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export TSFARM_BUILD=${TSFARM_BUILD:-$repo/build}
# shellcheck source=../integration/lib/farm.sh
source "$repo/tests/integration/lib/farm.sh"
# shellcheck source=../integration/lib/tsagent.sh
source "$repo/tests/integration/lib/tsagent.sh"

REPS=${TSFARM_BENCH_REPS:-5}
MIB=${TSFARM_BENCH_MIB:-1024}
PINGS=${TSFARM_BENCH_PINGS:-20000}
CONN_SECONDS=${TSFARM_BENCH_CONN_SECONDS:-2}
CONN_K=${TSFARM_BENCH_CONCURRENCY:-4}
LAT_SECONDS=1
HAPROXY_THREADS=${TSFARM_BENCH_HAPROXY_THREADS:-1}
AGENT_LOG_LEVEL=${TSFARM_BENCH_AGENT_LOG_LEVEL:-notice}
PIN=${TSFARM_BENCH_PIN:-1}
OUT=${TSFARM_BENCH_OUT:-$TSFARM_BUILD/bench}
TSBENCH=$TSFARM_BUILD/tests/bench/tsbench

die() {
        echo "bench: $*" >&2
        exit 1
}

((EUID == 0)) || die "needs root (network namespaces, BPF)"
for t in ip nsenter unshare haproxy jq timeout; do
        command -v "$t" >/dev/null || die "$t is missing (tools/deps.sh bench installs it)"
done
for f in "$TSBENCH" "$TSFARM_BUILD/tsagent" "$TSFARM_BUILD/tsctl"; do
        [[ -x $f ]] || die "$f is missing (make bench builds it)"
done
mkdir -p "$OUT"
raw=$OUT/raw.txt
summary=$OUT/summary.txt
: >"$raw"
started=$(farm_now_ms)

trap farm_down EXIT
farm_up 1 1
node=node1
client=client1
naddr=$(farm_addr $node)
peer_src=$(farm_addr $client)
gw_src=$FARM_SUBNET.150
farm_exec $client ip addr add "$gw_src/32" dev eth0
# Thousands of short connections per second from one address: a wide port
# range, and TIME_WAIT ports reused (both per namespace).
for n in $node $client; do
        farm_exec "$n" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1
done

# ---- the server, the agent, haproxy ----------------------------------------------
farm_spawn $node server "$TSBENCH" serve 3389 3391
farm_wait_port $node 0.0.0.0 3389 5
farm_wait_port $node 0.0.0.0 3391 5
# The server on CPU 0, the client on the last CPU, the relays where the
# scheduler puts them: as if the client were another machine. Unpinned,
# whether sender and receiver share a CPU changes bulk throughput by 2x
# from one run to the next.
ncpu=$(nproc)
client_pin=()
if [[ $PIN == 1 && $ncpu -ge 2 ]]; then
        taskset -pc 0 "$(farm_pid server)" >/dev/null
        client_pin=(taskset -c $((ncpu - 1)))
else
        PIN=0
fi

# The client's .101 is a farm peer (sk_lookup passes it straight to the
# server); no affinity, so .150 always goes through the gateway. No
# per-connection log lines (HAProxy below logs nothing either).
printf '[node benchclient]\nid = 100\naddress = %s\n' "$peer_src" | tsagent_conf $node
sed -i -e 's/^affinity-ttl = .*/affinity-ttl = 0/' -e "s/^log-level = .*/log-level = $AGENT_LOG_LEVEL/" \
        "$FARM_DIR/$node.conf"
farm_spawn $node agent env TSFARM_LOG_TARGET=stderr "$TSFARM_BUILD/tsagent" --config "$FARM_DIR/$node.conf"

bpf_stat() { # COUNTER: the sk_lookup counter's value in the node
        local v
        v=$(farm_exec $node "$TSFARM_BUILD/tsctl" --json host stats 2>/dev/null | jq -r ".stats.$1 // 0") || true
        echo "${v:-0}"
}

# Ready when a connection from .150 was handed to the gateway (the log
# level may hide "Host role started").
gateway_ready() {
        farm_alive "$(farm_pid agent)" || return 125
        farm_exec $client "$TSBENCH" connrate -c "$naddr:3389" -s "$gw_src" -k 1 -n 1 -T 1 >/dev/null 2>&1 ||
                return 1
        (($(bpf_stat to_gateway) > 0))
}
if ! farm_wait_until 15 gateway_ready; then
        farm_log_tail "$(farm_log agent)" 30 >&2
        die "tsagent's gateway did not come up"
fi

cat >"$FARM_DIR/haproxy.cfg" <<EOF
global
        nbthread $HAPROXY_THREADS
        maxconn 8000

defaults
        mode tcp
        timeout connect 5s
        timeout client 1h
        timeout server 1h

frontend rdp
        bind $naddr:3390
        tcp-request inspect-delay 5s
        tcp-request content accept if RDP_COOKIE
        default_backend rdp_servers

backend rdp_servers
        balance rdp-cookie
        persist rdp-cookie
        server local 127.0.0.1:3389
EOF
farm_spawn $node haproxy haproxy -db -f "$FARM_DIR/haproxy.cfg"
if ! farm_wait_port $node "$naddr" 3390 10; then
        farm_log_tail "$(farm_log haproxy)" 30 >&2
        die "haproxy did not start"
fi
agent_pid=$(farm_pid agent)
haproxy_pid=$(farm_pid haproxy)

# ---- scenarios -------------------------------------------------------------------
names=(direct fastpath gateway haproxy)
declare -A label=([direct]="direct (no BPF)" [fastpath]="fast path (sk_lookup)"
        [gateway]="tsfarm gateway" [haproxy]="haproxy rdp-cookie")
declare -A target=([direct]=$naddr:3391 [fastpath]=$naddr:3389 [gateway]=$naddr:3389 [haproxy]=$naddr:3390)
declare -A source=([direct]=$peer_src [fastpath]=$peer_src [gateway]=$gw_src [haproxy]=$gw_src)
# Whose CPU counts: the relay (for the fast path, the agent's tracking).
declare -A cpu_pid=([direct]="" [fastpath]=$agent_pid [gateway]=$agent_pid [haproxy]=$haproxy_pid)

run() { # SCENARIO KIND(label for the record; "-" = warm-up) MODE ARGS...
        local s=$1 kind=$2 mode=$3 line
        shift 3
        if line=$(farm_exec $client timeout 150 ${client_pin[@]+"${client_pin[@]}"} "$TSBENCH" "$mode" -c "${target[$s]}" -s "${source[$s]}" \
                ${cpu_pid[$s]:+-P "${cpu_pid[$s]}"} "$@" 2>&1); then
                [[ $kind == - ]] || echo "rep=$rep scenario=$s kind=$kind $line" >>"$raw"
        else
                echo "bench: $s $kind failed: $line" >&2
                [[ $kind == - ]] || echo "rep=$rep scenario=$s kind=$kind failed" >>"$raw"
        fi
}

gw0=$(bpf_stat to_gateway)
peer0=$(bpf_stat to_local_peer)
open0=$(bpf_stat fail_open)

echo "bench: 1 node + 1 client over veth; $REPS repetitions, interleaved; ${MIB} MiB per transfer," \
        "$PINGS ping-pongs, connections for ${CONN_SECONDS}s at concurrency $CONN_K and ${LAT_SECONDS}s at 1"
echo "bench: haproxy $(haproxy -v | sed -n '1s/^HAProxy version \([^ ]*\).*/\1/p'), nbthread $HAPROXY_THREADS;" \
        "tsagent log level $AGENT_LOG_LEVEL, affinity-ttl 0;" \
        "$( ((PIN)) && echo "server on CPU 0, client on CPU $((ncpu - 1)), relays unpinned" || echo "nothing pinned")"
echo "bench: raw figures in $raw"
rep=0
for s in "${names[@]}"; do # warm-up, not recorded
        run "$s" - throughput -m 128
        run "$s" - pingpong -n 2000
        run "$s" - connrate -k "$CONN_K" -t 0.3
done
for ((rep = 1; rep <= REPS; rep++)); do
        # A B C D, then B C D A, ...: no scenario always runs first.
        order=()
        for ((i = 0; i < ${#names[@]}; i++)); do
                order+=("${names[$(((i + rep - 1) % ${#names[@]}))]}")
        done
        for s in "${order[@]}"; do run "$s" throughput throughput -m "$MIB"; done
        for s in "${order[@]}"; do run "$s" pingpong pingpong -n "$PINGS"; done
        for s in "${order[@]}"; do run "$s" rate connrate -k "$CONN_K" -t "$CONN_SECONDS"; done
        for s in "${order[@]}"; do run "$s" latency connrate -k 1 -t "$LAT_SECONDS"; done
        echo "bench: repetition $rep/$REPS done ($((($(farm_now_ms) - started) / 1000)) s)"
done

gw=$(($(bpf_stat to_gateway) - gw0))
peer=$(($(bpf_stat to_local_peer) - peer0))
open=$(($(bpf_stat fail_open) - open0))
farm_alive "$agent_pid" || echo "bench: WARNING: tsagent died during the run" >&2
farm_alive "$haproxy_pid" || echo "bench: WARNING: haproxy died during the run" >&2

# ---- summary -------------------------------------------------------------------
{
        echo
        awk -v names="${names[*]}" -v reps="$REPS" \
                -v l_direct="${label[direct]}" -v l_fastpath="${label[fastpath]}" \
                -v l_gateway="${label[gateway]}" -v l_haproxy="${label[haproxy]}" "$(<"$here/stats.awk")"'
        function fmt(x, f) { return x == "" ? "-" : sprintf(f, x) }
        function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf("%.2f", a / b) }
        function verdict(r, higher_is_better, tol) {
                if (r == "-") return ""
                if (higher_is_better) return r + 0 >= 1 - tol ? "met" : "behind"
                return r + 0 <= 1 + tol ? "met" : "behind"
        }
        {
                s = ""; k = ""
                for (i = 1; i <= NF; i++) {
                        split($i, kv, "=")
                        if (kv[1] == "scenario") s = kv[2]
                        else if (kv[1] == "kind") k = kv[2]
                }
                if ($NF == "failed") { failed[s, k]++; next }
                for (i = 1; i <= NF; i++) {
                        split($i, kv, "=")
                        if (kv[1] == "errors") errs[s, k] += kv[2]
                        key = s SUBSEP k SUBSEP kv[1]
                        val[key, ++cnt[key]] = kv[2] + 0
                }
        }
        END {
                n = split(names, sc, " ")
                lab["direct"] = l_direct; lab["fastpath"] = l_fastpath
                lab["gateway"] = l_gateway; lab["haproxy"] = l_haproxy
                for (i = 1; i <= n; i++) {
                        s = sc[i]
                        g[s] = median(s SUBSEP "throughput" SUBSEP "gbps")
                        cpu[s] = median(s SUBSEP "throughput" SUBSEP "cpu_s_per_gib")
                        p50[s] = median(s SUBSEP "pingpong" SUBSEP "p50_us")
                        p99[s] = median(s SUBSEP "pingpong" SUBSEP "p99_us")
                        cps[s] = median(s SUBSEP "rate" SUBSEP "conn_per_s")
                        cpc[s] = median(s SUBSEP "rate" SUBSEP "relay_cpu_us_per_conn")
                        d50[s] = median(s SUBSEP "latency" SUBSEP "p50_us")
                        d99[s] = median(s SUBSEP "latency" SUBSEP "p99_us")
                }
                printf "medians of %d runs each; ratio = / direct (no BPF); CPU = the relay process (fast path: tsagent)\n\n", reps
                # Widths count bytes: format with "us", then write µs.
                h = sprintf("%-22s %7s %6s %9s %7s %7s %8s %6s %8s %17s", "scenario", "Gbit/s", "ratio",
                        "CPU-s/GiB", "p50 us", "p99 us", "conn/s", "ratio", "CPU us/c", "decide p50/p99 us")
                gsub(/us/, "µs", h)
                print h
                for (i = 1; i <= n; i++) {
                        s = sc[i]
                        printf "%-22s %7s %6s %9s %7s %7s %8s %6s %8s %17s\n", lab[s], fmt(g[s], "%.2f"),
                                ratio(g[s], g["direct"]), fmt(cpu[s], "%.3f"), fmt(p50[s], "%.1f"),
                                fmt(p99[s], "%.1f"), fmt(cps[s], "%.0f"), ratio(cps[s], cps["direct"]),
                                fmt(cpc[s], "%.1f"), fmt(d50[s], "%.0f") " / " fmt(d99[s], "%.0f")
                }
                printf "\n(p50/p99: 64-byte ping-pong round trips; conn/s at the given concurrency; decide: connect() to\n"
                printf " the server'"'"'s first reply byte, one connection at a time; CPU µs/c: relay CPU per connection)\n"

                h = sprintf("\n%-22s %13s %13s %13s %13s", "spread (min-max)", "Gbit/s", "p50 us", "conn/s",
                        "decide p50 us")
                gsub(/us/, "µs", h)
                print h
                for (i = 1; i <= n; i++) {
                        s = sc[i]
                        printf "%-22s %13s %13s %13s %13s\n", lab[s], spread(s SUBSEP "throughput" SUBSEP "gbps", "%.1f"),
                                spread(s SUBSEP "pingpong" SUBSEP "p50_us", "%.0f"),
                                spread(s SUBSEP "rate" SUBSEP "conn_per_s", "%.0f"),
                                spread(s SUBSEP "latency" SUBSEP "p50_us", "%.0f")
                }

                printf "\ntsfarm gateway / haproxy rdp-cookie      ratio   target\n"
                r = ratio(g["gateway"], g["haproxy"]);      printf "  throughput                           %6s   >= 1  %s\n", r, verdict(r, 1, 0)
                r = ratio(cpu["gateway"], cpu["haproxy"]);  printf "  CPU-s per GiB                        %6s   <= 1  %s\n", r, verdict(r, 0, 0)
                r = ratio(p99["gateway"], p99["haproxy"]);  printf "  ping-pong p99                        %6s   <= 1  %s\n", r, verdict(r, 0, 0)
                r = ratio(p50["gateway"], p50["haproxy"]);  printf "  ping-pong p50                        %6s\n", r
                r = ratio(cps["gateway"], cps["haproxy"]);  printf "  connections per second               %6s   >= 1  %s\n", r, verdict(r, 1, 0)
                r = ratio(cpc["gateway"], cpc["haproxy"]);  printf "  CPU per connection                   %6s\n", r
                r = ratio(d50["gateway"], d50["haproxy"]);  printf "  decision latency p50                 %6s\n", r
                r = ratio(d99["gateway"], d99["haproxy"]);  printf "  decision latency p99                 %6s\n", r

                printf "\nfast path (sk_lookup) / direct (no BPF)  ratio   target\n"
                r = ratio(g["fastpath"], g["direct"]);      printf "  throughput                           %6s   >= 0.95  %s\n", r, verdict(r, 1, 0.05)
                r = ratio(p50["fastpath"], p50["direct"]);  printf "  ping-pong p50                        %6s   <= 1.05  %s\n", r, verdict(r, 0, 0.05)
                r = ratio(p99["fastpath"], p99["direct"]);  printf "  ping-pong p99                        %6s\n", r
                r = ratio(cps["fastpath"], cps["direct"]);  printf "  connections per second               %6s   >= 0.95  %s\n", r, verdict(r, 1, 0.05)
                r = ratio(d50["fastpath"], d50["direct"]);  printf "  decision latency p50                 %6s   <= 1.05  %s\n", r, verdict(r, 0, 0.05)

                bad = ""
                for (key in failed) { split(key, p, SUBSEP); bad = bad " " p[1] "/" p[2] "(" failed[key] ")" }
                for (key in errs) if (errs[key]) { split(key, p, SUBSEP); bad = bad " " p[1] "/" p[2] ":" errs[key] "-conn-errors" }
                if (bad != "") printf "\nWARNING: failed runs or connection errors:%s\n", bad
        }' "$raw"
        echo
        echo "sk_lookup during the runs: to_gateway $gw, to_local_peer $peer, fail_open $open" \
                "(gateway and haproxy backend legs come from 127.0.0.1 and count as local_peer)"
        echo "bench: $((($(farm_now_ms) - started) / 1000)) s"
} | tee "$summary"
