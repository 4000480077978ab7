#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The demo, run by `make demo` (up) and `make demo-down` (down).
#
# The first-PDU parser on real captured client bytes, then the whole farm
# in network namespaces (tests/integration/lib/sessionfarm.sh): a
# directory, two license servers with small pools, three terminal-server
# hosts (tsagent host role + tshost) and a client machine running
# tsclient, playing DESIGN 1's story: reconnects that would land on the
# wrong node, and per-device licensing. Everything it starts is torn down
# when it exits (make demo-down removes what a killed demo left).
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

# One line of the story; also kept, with its time, for the timeline.
story() {
        sf_mark "$*"
        printf '  %s\n' "$*"
}

# The key id of license server NAME (as node1's licensing client knows it).
key_of() {
        sf_host_api node1 GET /v1/license/diagnose | jq -r --arg n "$1" '.servers[] | select(.name == $n) | .key_id'
}

# Which license server signed the token DEVICE holds.
issuer_of() { # DEVICE
        local v k
        v=$(sf_license_verify "$(sf_device_token "$1")" "$(sf_device_hwid "$1")")
        k=$(jq -r '.token.issuer_key_id // empty' <<<"$v")
        case $k in
        "$LIC1_KEY") echo lic1 ;;
        "$LIC2_KEY") echo lic2 ;;
        *) echo "?" ;;
        esac
}

# connect DEVICE ENTRY USER [tsclient options...]: one client connection
# through node ENTRY (where a load balancer would send it); the shell says
# its pid; one line of the story says what happened.
connect() {
        local dev=$1 entry=$2 user=$3 out json pid lic how n=$((RANDOM + 1000))
        shift 3
        printf 'send echo P$((%d+1))P $$\nexpect P%dP\n' "$n" $((n + 1)) >"$SF_DIR/demo.script"
        out=$(sf_client "$dev" --server "$(farm_addr "$entry")" --user "$(sf_user "$user")" \
                --script "$SF_DIR/demo.script" --json "$@" 2>>"$SF_DIR/demo-client.err") || true
        json=$(tail -n 1 <<<"$out")
        if ! jq -e . <<<"$json" >/dev/null 2>&1; then
                story "$dev via $entry: no answer from tsclient (see $SF_DIR/demo-client.err)"
                return 0
        fi
        pid=$(grep -aoE "P$((n + 1))P [0-9]+" <<<"$out" | tail -n 1 | awk '{ print $2 }' || true)
        lic=$(jq -r '"\(.license.status) \(.license.kind // "(no token)")"' <<<"$json")
        case $lic in new-license\ temporary | new-license\ device-cal | upgrade*) lic="$lic from $(issuer_of "$dev")" ;; esac
        how=$(jq -r '(if .reattached then "reattached" else "new session" end) +
                (if .redirects > 0 then ", after \(.redirects) redirect(s)" else "" end)' <<<"$json")
        if [[ $(jq -r .result <<<"$json") == ok ]]; then
                story "$(printf '%-11s via %-5s -> served by %-5s %s; license %s; shell pid %s' "$dev" "$entry" \
                        "$(jq -r '.server // "?"' <<<"$json")" "$how" "$lic" "${pid:-?}")"
        else
                story "$(printf '%-11s via %-5s -> %s (license %s)' "$dev" "$entry" \
                        "$(jq -r '.result' <<<"$json")" "$lic")"
        fi
}

where() { # USER
        local s
        s=$(sf_directory_session_of "$(sf_user "$1")" | tr '\n' ' ')
        story "            the directory: $(sf_user "$1") ${s:-has no session}"
}

farm_demo() {
        local alice=1 bob=2 carol=3 dave=4 erin=5 mallory=6 d
        # shellcheck source=../tests/integration/lib/farm.sh
        source "$src/tests/integration/lib/farm.sh"
        # shellcheck source=../tests/integration/lib/tsagent.sh
        source "$src/tests/integration/lib/tsagent.sh"
        # shellcheck source=../tests/integration/lib/licfarm.sh
        source "$src/tests/integration/lib/licfarm.sh"
        # shellcheck source=../tests/integration/lib/sessionfarm.sh
        source "$src/tests/integration/lib/sessionfarm.sh"
        trap sf_down EXIT

        say "== the whole farm in network namespaces, on the embedded SQLite default"
        SF_USERS=6
        sf_up
        printf '  %-8s %-12s %s\n' \
                dirsrv "$(farm_addr dirsrv)" "tsagent: the session directory" \
                lic1 "$(farm_addr lic1)" "tsagent: license server, site east, a pack of $SF_PACK1 Device CALs" \
                lic2 "$(farm_addr lic2)" "tsagent: license server, site west, a pack of $SF_PACK2 Device CAL(s)" \
                node1 "$(farm_addr node1)" "tsagent (host role: steering, directory, licensing) + tshost" \
                node2 "$(farm_addr node2)" "the same" \
                node3 "$(farm_addr node3)" "the same" \
                client1 "$(farm_addr client1)" "tsclient, one device store per device"
        echo "  users: $(sf_user 1) (alice) .. $(sf_user 6) (mallory), local accounts behind PAM"
        LIC1_KEY=$(key_of lic1)
        LIC2_KEY=$(key_of lic2)

        say "== alice's laptop: the load balancer sends her to node1; she disconnects"
        connect alice-pc node1 $alice --disconnect
        where $alice
        say "== she comes back through node3: her cookie steers her to her session; her device gets a Device CAL"
        connect alice-pc node3 $alice --disconnect
        where $alice
        say "== bob's client sends no cookie: through node2, then back through node3 (a redirect)"
        connect bob-pc node2 $bob --no-cookie --disconnect
        connect bob-pc node3 $bob --no-cookie --disconnect
        where $bob
        say "== three more devices, two connections each: lic1 runs dry and borrows from lic2, then none is left"
        for d in carol dave erin; do
                connect "$d-pc" node2 "${!d}" --logoff
                connect "$d-pc" node2 "${!d}" --logoff
        done
        say "== alice's device store copied onto another machine: its tokens are not this device's"
        cp -a "$(sf_store alice-pc)" "$(sf_store alice-copy)"
        SF_MACHINE=other-machine connect alice-copy node1 $alice --disconnect
        say "== mallory with a wrong password"
        printf 'not-the-password\n' >"$SF_DIR/wrong-password"
        connect mallory-pc node1 $mallory --password-file "$SF_DIR/wrong-password"
        say "== alice logs off"
        connect alice-pc node2 $alice --logoff
        where $alice

        say "== the directory's sessions (tsctl sessions)"
        sf_tsctl_dir sessions | sed 's/^/  /'
        say "== node2's BPF sessions map, the directory's mirror (bpftool map dump)"
        farm_exec node2 bpftool map dump pinned /sys/fs/bpf/tsfarm/sessions | sed 's/^/  /' | head -40
        say "== the license servers' issuance logs (tsctl license issued)"
        tsctl_lic lic1 issued | sed 's/^/  lic1  /'
        tsctl_lic lic2 issued | sed 's/^/  lic2  /'
        say "== node1's licensing client (tsctl license diagnose)"
        farm_exec node1 "$build/tsctl" license diagnose | sed 's/^/  /' || true
        say "== the timeline"
        sf_timeline | sed 's/^/  /'
        say "== tearing the farm down: processes, namespaces, test users, PAM service"
}

down() {
        # shellcheck source=../tests/integration/lib/farm.sh
        source "$src/tests/integration/lib/farm.sh"
        # shellcheck source=../tests/integration/lib/tsagent.sh
        source "$src/tests/integration/lib/tsagent.sh"
        # shellcheck source=../tests/integration/lib/licfarm.sh
        source "$src/tests/integration/lib/licfarm.sh"
        # shellcheck source=../tests/integration/lib/sessionfarm.sh
        source "$src/tests/integration/lib/sessionfarm.sh"
        farm_gc # farms of demos that died without cleaning up
        sf_gc   # and their test users and PAM services
}

case ${1:-up} in
up) up ;;
down) down ;;
*)
        echo "usage: demo.sh up|down" >&2
        exit 2
        ;;
esac
