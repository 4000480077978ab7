#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Real RDP through tsfarm: three nodes, each with xrdp and tsagent (host
# role); the sessions table (standing in for the directory) says tsfuser1
# lives on node2 and tsfuser2 on node3. FreeRDP and rdesktop log in
# through one node's gateway, land on the node that holds the user,
# disconnect, and reconnect through a third node into the same session.
#
# Prints "PASS: name" / "FAIL: name (why)"; exits 77 when it cannot run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/farm.sh
source "$here/lib/farm.sh"
# shellcheck source=lib/rdp.sh
source "$here/lib/rdp.sh"
# shellcheck source=lib/tsagent.sh
source "$here/lib/tsagent.sh"

if ((EUID != 0)); then
        farm_skip rdp-steering "needs root"
        exit 77
fi
if ! rdp_require; then
        farm_skip rdp-steering "$RDP_MISSING"
        exit 77
fi

trap farm_down EXIT
farm_up 3 1
rdp_setup
rdp_user_add tsfuser1
rdp_user_add tsfuser2
pass1=$(rdp_user_pass tsfuser1)
pass2=$(rdp_user_pass tsfuser2)

for n in node1 node2 node3; do
        if ! rdp_node_start "$n"; then
                farm_fail "xrdp starts in $n" "rdp_node_start failed"
                exit 1
        fi
        printf '[sessions]\ntsfuser1 = node2\ntsfuser2 = node3\n' | tsagent_conf "$n"
        if ! tsagent_start "$n" "agent-$n"; then
                farm_fail "tsagent starts in $n" "no 'Host role started'" "$(farm_log "agent-$n")"
                exit 1
        fi
done
farm_pass "xrdp and tsagent run on three nodes"
rdp_client_start client1

# CLIENT-TOOL USER PASS VIA-LOGIN WANT-NODE VIA-RECONNECT
steer_case() {
        local tool=$1 user=$2 pass=$3 via1=$4 want=$5 via2=$6 id err=$FARM_DIR/last.err
        if id=$(rdp_login "$(farm_addr "$via1")" "$user" "$pass" "$tool" 2>"$err") &&
                [[ $(rdp_last_event) == login && ${id%%:*} == "$want" ]]; then
                farm_pass "$tool: $user logs in through $via1's gateway onto $want ($id, $(rdp_last_ms) ms)"
        else
                farm_fail "$tool: $user logs in through $via1's gateway onto $want" \
                        "got '${id:-nothing}' ($(head -n 1 "$err"))" "$(farm_log "agent-$via1")"
                return 0
        fi
        if grep -q "mstshash $user: disconnected session on $want" "$(farm_log "agent-$via1")"; then
                farm_pass "$tool: $via1's gateway steered by the cookie"
        else
                farm_fail "$tool: $via1's gateway steered by the cookie" "no decision line" "$(farm_log "agent-$via1")"
        fi
        local again
        if again=$(RDP_EXPECT=$id rdp_reconnect "$(farm_addr "$via2")" "$user" "$pass" "$tool" 2>"$err"); then
                farm_pass "$tool: $user reconnects through $via2 into the same session ($again, $(rdp_last_ms) ms)"
        else
                farm_fail "$tool: $user reconnects through $via2 into the same session" \
                        "got '${again:-nothing}' ($(head -n 1 "$err"))" "$(farm_log "agent-$via2")"
        fi
}

steer_case freerdp tsfuser1 "$pass1" node1 node2 node3
steer_case rdesktop tsfuser2 "$pass2" node1 node3 node2

for n in node1 node2 node3; do
        farm_stop "agent-$n" 5
done
