#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The demo, run by `make demo` (up) and `make demo-down` (down).
#
# What exists today: the first-PDU parser on real captured client bytes,
# then a three-node farm in network namespaces, each node with tsagent
# (host role) and an RDP-like server that says which node served whom,
# showing cookie steering, routing tokens, placement and fail-open. The
# directory, licensing and the reference session host join it later.
# Everything it starts is torn down when it exits.
set -euo pipefail

build=${TSFARM_BUILD:?TSFARM_BUILD must name the build directory}
src=$(cd "$(dirname "$0")/.." && pwd)
vectors=${TSFARM_VECTORS:-$src/../shared/vectors}

up() {
        echo "== tsfarm demo: what a gateway sees in real RDP clients' first PDU"
        if compgen -G "$vectors/*.hex" >/dev/null; then
                for v in "$vectors"/*.hex; do
                        echo
                        echo "-- $(basename "$v" .hex)"
                        "$build/tsctl" decode-cr "$v"
                done
        else
                echo "(no captured vectors at $vectors)"
        fi

        echo
        echo "-- a routing token naming 172.31.249.216:3389 (what a redirect hands the client)"
        cookie=$(printf 'Cookie: msts=3640205228.15629.0000\r\n' | xxd -p | tr -d '\n')
        len=$((4 + 7 + ${#cookie} / 2 + 8))
        printf '0300%04x%02xe00000000000%s0100080003000000\n' "$len" $((len - 5)) "$cookie" |
                "$build/tsctl" decode-cr

        echo
        echo "-- a malformed PDU is refused with the reason and the offset"
        echo "0300002c27f00000000000436f6f6b69653a206d737473686173683d656c746f6e730d0a0100080000000000" |
                "$build/tsctl" decode-cr || true

        farm_demo
}

say() {
        printf '\n\033[1m%s\033[0m\n' "$*"
}

farm_demo() {
        # shellcheck source=../tests/integration/lib/farm.sh
        source "$src/tests/integration/lib/farm.sh"
        # shellcheck source=../tests/integration/lib/tsagent.sh
        source "$src/tests/integration/lib/tsagent.sh"
        trap farm_down EXIT

        say "== a farm: node1, node2, node3 and a client, in network namespaces"
        farm_up 3 1
        local rec=$FARM_DIR/served.log n
        : >"$rec"
        farm_exec client1 ip addr add 10.239.0.150/32 dev eth0
        farm_exec client1 ip addr add 10.239.0.151/32 dev eth0
        for n in node1 node2 node3; do
                printf '[sessions]\nalice = node1\n' | tsagent_conf "$n"
                farm_spawn "$n" "server-$n" python3 "$src/tests/integration/lib/rdp_backend.py" "$n" 3389 "$rec"
                farm_wait_port "$n" 0.0.0.0 3389 10
                tsagent_start "$n" "agent-$n"
                echo "$n $(farm_addr "$n"): RDP server on :3389, tsagent steering it"
        done
        echo "sessions table (the directory's job, later): alice has a disconnected session on node1"

        probe() {
                local entry=$1 src=$2
                shift 2
                printf '  client -> %-6s %-28s => ' "$entry" "$*"
                farm_exec client1 python3 "$src_dir/tests/integration/lib/rdp_probe.py" \
                        "$(farm_addr "$entry")" --source "$src" "$@" | head -1
        }
        local src_dir=$src

        say "== cookie steering: alice reconnects through any node and lands on node1"
        probe node2 10.239.0.150 --user alice
        probe node3 10.239.0.150 --user alice
        say "== a new user is placed on the node the load balancer picked"
        probe node3 10.239.0.151 --user bob
        say "== routing tokens: a farm node is followed, anything else refused (no open relay)"
        probe node1 10.239.0.151 --token "$(farm_addr node3):3389"
        probe node1 10.239.0.151 --token "10.239.0.200:3389"
        say "== a client that sends nothing, and garbage, are closed"
        probe node1 10.239.0.151 --nothing --timeout 10
        probe node1 10.239.0.151 --garbage

        say "== what the agents on node2 and node1 logged"
        grep -E "Relaying|Refusing|Closing" "$(farm_log agent-node2)" | sed 's/^/  /'
        grep -E "Relaying|Refusing|Closing" "$(farm_log agent-node1)" | sed 's/^/  /'

        say "== node2's session map, as bpftool shows it"
        farm_exec node2 bpftool map dump pinned /sys/fs/bpf/tsfarm/sessions | sed 's/^/  /' | head -20
        say "== node2's counters (tsctl host stats)"
        farm_exec node2 "$build/tsctl" host stats | sed 's/^/  /'

        say "== kill -9 node2's agent: the farm fails open to node2's own server"
        farm_stop agent-node2 5 KILL
        probe node2 10.239.0.150 --user alice
        say "== restart it: steering resumes from the pinned maps"
        tsagent_start node2 agent-node2b
        probe node2 10.239.0.150 --user alice

        say "== tearing the farm down"
}

down() {
        # shellcheck source=../tests/integration/lib/farm.sh
        source "$src/tests/integration/lib/farm.sh"
        farm_gc # farms of demos that died without cleaning up
}

case ${1:-up} in
up) up ;;
down) down ;;
*)
        echo "usage: demo.sh up|down" >&2
        exit 2
        ;;
esac
