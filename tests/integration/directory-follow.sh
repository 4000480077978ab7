#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The host role follows the directory: two nodes, a directory agent in
# node1 and host-role agents on node1 and node2 pointed at it. Sessions
# reported to the directory (as node1, with node1's certificate) reach
# node2's BPF sessions map within 5 s, steer a probe through node2 to
# node1, and go when they end; with the directory stopped node2 keeps
# steering from its map; a restarted directory is followed again.
#
# Prints "PASS: name" / "FAIL: name (why)"; exits 77 when it cannot run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/farm.sh
source "$here/lib/farm.sh"
# shellcheck source=lib/tsagent.sh
source "$here/lib/tsagent.sh"

if ((EUID != 0)); then
        farm_skip directory-follow "needs root"
        exit 77
fi
for t in ip nsenter python3 bpftool jq curl; do
        if ! command -v "$t" >/dev/null; then
                farm_skip directory-follow "$t is not installed; tools/deps.sh check installs it"
                exit 77
        fi
done

trap farm_down EXIT
farm_up 2 1
client=client1
rec=$FARM_DIR/served.log
: >"$rec"
pki=$FARM_DIR/pki
dir_addr=$(farm_addr node1)
url=https://$dir_addr:7400

tsagent_pki follow-test "$dir_addr" node1 node2
tsagent_directory_conf "$dir_addr" </dev/null

dir_ready() {
        farm_alive "$(farm_pid "$1")" || return 125
        farm_listening node1 "$dir_addr" 7400
}
dir_start() { # NAME
        farm_spawn node1 "$1" env TSFARM_LOG_TARGET=stderr "$TSAGENT_BUILD/tsagent" \
                --config "$FARM_DIR/directory.conf"
        farm_wait_until 10 dir_ready "$1"
}

if dir_start directory-1; then
        farm_pass "directory agent listens on $dir_addr:7400"
else
        farm_fail "directory agent listens on $dir_addr:7400" "not listening" "$(farm_log directory-1)"
        exit 1
fi

for n in node1 node2; do
        printf '[host]\ndirectory = %s\ncertificate = %s/%s.crt\nkey = %s/%s.key\nca = %s/ca.crt\n' \
                "$url" "$pki" "$n" "$pki" "$n" "$pki" | tsagent_conf "$n"
        farm_spawn "$n" "backend-$n" python3 "$here/lib/rdp_backend.py" "$n" 3389 "$rec"
        farm_wait_port "$n" 0.0.0.0 3389 10
        if tsagent_start "$n" "agent-$n"; then
                farm_pass "host agent on $n started"
        else
                farm_fail "host agent on $n started" "no 'Host role started'" "$(farm_log "agent-$n")"
                exit 1
        fi
done

# The directory API as node1 (its certificate names it).
api() { # METHOD PATH [BODY]
        local args=(-sS --max-time 5 --cacert "$pki/ca.crt" --cert "$pki/node1.crt" --key "$pki/node1.key"
                -X "$1" -w '\n%{http_code}')
        [[ $# -gt 2 ]] && args+=(-H 'Content-Type: application/json' --data "$3")
        farm_exec node1 curl "${args[@]}" "$url$2"
}
event() { # EVENT USER SESSION-ID
        api POST /v1/sessions/event \
                "{\"event\":\"$1\",\"user\":\"$2\",\"session_id\":$3,\"device\":\"pc\",\"client_address\":\"10.239.0.150\"}"
}
expect_status() { # NAME OUTPUT
        if [[ ${2##*$'\n'} == 200 ]]; then
                farm_pass "$1"
        else
                farm_fail "$1" "answer: $2" "$(farm_log directory-1)"
        fi
}

registered() { # NODE: the directory lists it as up
        api GET /v1/nodes | head -n -1 | jq -e --arg n "$1" '.nodes[] | select(.name == $n and .up)' >/dev/null
}
for n in node1 node2; do
        if farm_wait_until 10 registered "$n"; then
                farm_pass "$n registered with the directory"
        else
                farm_fail "$n registered with the directory" "not up in /v1/nodes" "$(farm_log "agent-$n")"
        fi
done

map_of() { # NODE USER: "node_id state" from NODE's sessions map, or nothing
        farm_exec "$1" "$TSAGENT_BUILD/tsctl" --json host sessions |
                jq -r --arg u "$2" '.sessions[] | select(.user == $u) | "\(.node_id) \(.state)"'
}
map_is() { # NODE USER EXPECTED
        [[ $(map_of "$1" "$2") == "$3" ]]
}
wait_map() { # NAME NODE USER EXPECTED
        local t0 t1
        t0=$(farm_now_ms)
        if farm_wait_until 5 map_is "$2" "$3" "$4"; then
                t1=$(farm_now_ms)
                farm_pass "$1 ($((t1 - t0)) ms)"
        else
                farm_fail "$1" "map says '$(map_of "$2" "$3")', expected '$4'" "$(farm_log "agent-$2")"
        fi
}

src=10.239.0.150
farm_exec "$client" ip addr add "$src/32" dev eth0
probe() { # ENTRY-NODE USER
        farm_exec "$client" python3 "$here/lib/rdp_probe.py" "$(farm_addr "$1")" --source "$src" --user "$2"
}

# ---- sessions follow ------------------------------------------------------------
expect_status "logon of alice on node1 reported" "$(event logon alice 11)"
wait_map "node2's map shows alice active on node1" node2 alice "1 active"
expect_status "disconnect of alice reported" "$(event disconnect alice 11)"
wait_map "node2's map shows alice disconnected on node1" node2 alice "1 disconnected"

out=$(probe node2 alice)
if [[ $out == "served-by node1 user alice"* ]]; then
        farm_pass "mstshash alice via node2 lands on node1"
else
        farm_fail "mstshash alice via node2 lands on node1" "got '$out'" "$(farm_log agent-node2)"
fi

expect_status "logoff of alice reported" "$(event logoff alice 11)"
wait_map "alice's entry leaves node2's map" node2 alice ""

# ---- the directory goes away: steering continues from the map -------------------
expect_status "logon of alice again (session 12)" "$(event logon alice 12)"
expect_status "disconnect of alice (session 12)" "$(event disconnect alice 12)"
wait_map "node2's map shows alice's new session" node2 alice "1 disconnected"

farm_stop directory-1
sleep 2 # several failed polls and heartbeats
if map_is node2 alice "1 disconnected"; then
        farm_pass "directory stopped: node2's map keeps alice"
else
        farm_fail "directory stopped: node2's map keeps alice" "map says '$(map_of node2 alice)'"
fi
out=$(probe node2 alice)
if [[ $out == "served-by node1 user alice"* ]]; then
        farm_pass "directory stopped: alice via node2 still lands on node1"
else
        farm_fail "directory stopped: alice via node2 still lands on node1" "got '$out'" "$(farm_log agent-node2)"
fi
if farm_alive "$(farm_pid agent-node2)"; then
        farm_pass "node2's agent runs on without the directory"
else
        farm_fail "node2's agent runs on without the directory" "it died" "$(farm_log agent-node2)"
fi

# ---- the directory comes back ----------------------------------------------------
if dir_start directory-2; then
        farm_pass "directory restarted"
else
        farm_fail "directory restarted" "not listening" "$(farm_log directory-2)"
        exit 1
fi
# node1's host agent registers again within its backoff (5 s at most).
farm_wait_until 10 registered node1 || true
expect_status "logon of bob on node1 after the restart" "$(event logon bob 21)"
wait_map "node2 follows the restarted directory: bob on node1" node2 bob "1 active"
wait_map "alice survives the directory's restart in node2's map" node2 alice "1 disconnected"

# ---- clean shutdown: the worker is joined promptly -------------------------------
t0=$(farm_now_ms)
farm_stop agent-node2 5
t1=$(farm_now_ms)
if ((t1 - t0 < 3000)) && ! grep -q "ignored SIGTERM" "$(farm_log agent-node2)"; then
        farm_pass "node2's agent stops promptly with the worker running ($((t1 - t0)) ms)"
else
        farm_fail "node2's agent stops promptly with the worker running" "$((t1 - t0)) ms"
fi

farm_stop agent-node1 5
farm_stop directory-2 5
if grep -qiE "AddressSanitizer|runtime error|LeakSanitizer" "$FARM_DIR"/logs/agent-*.log "$FARM_DIR"/logs/directory-*.log; then
        farm_fail "agents logged no sanitizer reports" "see logs"
else
        farm_pass "agents exited cleanly"
fi
