#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The demo, run by `make demo` (up) and `make demo-down` (down).
#
# What exists today: the first-PDU parser on real captured client bytes,
# and the agent as a notify service. The three-node farm in network
# namespaces joins this script with the reference session host.
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

        echo
        echo "-- the agent validates its configuration"
        "$build/tsagent" --config "$src/dist/config/tsagent.conf" --check-config
        echo
        echo "The farm demo (three hosts, a directory, two license servers in network"
        echo "namespaces) arrives with the reference session host; see README.md."
}

down() {
        : # nothing is left running by this version of the demo
}

case ${1:-up} in
up) up ;;
down) down ;;
*)
        echo "usage: demo.sh up|down" >&2
        exit 2
        ;;
esac
