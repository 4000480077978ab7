#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A whole farm steered by the directory, end to end: three host nodes
# (node1 = A, node2 = B, node3 = C) with host agents that follow a
# directory agent on a fourth machine ("dirsrv"), track the sessions of
# stand-in RDP servers that report nothing (rdp_backend.py) from the
# connections their gateways relay, and ask the directory to place new
# sessions. A client (rdp_probe.py, one source address per user) connects
# with mstshash cookies. Checked:
#   1. alice logs on at A: served by A (tie: the entry node), the directory
#      has her active on node1, A's and C's BPF mirrors say node 1 state 1;
#   2. her client drops: after the disconnect grace she is disconnected
#      (state 2) in the directory and in both mirrors;
#   3. she reconnects through C: steered to A's RDP server, C says why;
#   4. a logoff reported through A's local API (the session id A tracks)
#      removes her from the directory and from every mirror;
#   5. placement: with sessions reported through A's and B's local APIs, a
#      new user at A is placed on C (least loaded) and served there;
#   6. drain: with node3 drained a new user at C goes elsewhere, and a user
#      with a disconnected session on C still reaches C through A;
#   7. A's agent is killed: after the heartbeat lapse its sessions are lost
#      in the directory and state 3 in B's and C's mirrors;
#   8. a directory restart on the same database loses nothing;
#   9. with the directory down, steering goes on from the mirror, drained C
#      places a new user elsewhere on its own, and B queues a reported
#      logon, delivered when the directory returns.
# The heartbeat lapse is 15 s (see LAPSE): about 25 s in all.
#
# Prints "PASS: name" / "FAIL: name (why)"; exits 77 when it cannot run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/farm.sh
source "$here/lib/farm.sh"
# shellcheck source=lib/tsagent.sh
source "$here/lib/tsagent.sh"

if ((EUID != 0)); then
        farm_skip directory-farm "needs root"
        exit 77
fi
for t in ip nsenter unshare ss python3 bpftool jq curl; do
        if ! command -v "$t" >/dev/null; then
                farm_skip directory-farm "$t is not installed; tools/deps.sh check installs it"
                exit 77
        fi
done
for t in tsagent tsctl; do
        if [[ ! -x $TSAGENT_BUILD/$t ]]; then
                farm_skip directory-farm "$TSAGENT_BUILD/$t is not built; run make"
                exit 77
        fi
done

# The host role heartbeats every 5 s and, after a failed heartbeat, waits
# the full interval again: a lapse under ~10 s would mark nodes down for
# one heartbeat lost to a directory restart. 15 s tolerates one.
LAPSE=15
GRACE_MS=300

trap farm_down EXIT
farm_up 3 1
farm_add_node dirsrv "$FARM_SUBNET.50"
client=client1
pki=$FARM_DIR/pki
dir_addr=$(farm_addr dirsrv)
url=https://$dir_addr:7400
dsock=$FARM_DIR/dir-run/directory.sock
pin=/sys/fs/bpf/tsfarm
asock=/run/tsfarm/agent.sock

tsagent_pki farm-test "$dir_addr" node1 node2 node3

# Every user connects from an address of its own: the affinity fast path
# (one address, one user) then never mixes two users up.
declare -A SRC=()
i=150
for u in alice erin gina hank carol ivan; do
        SRC[$u]=$FARM_SUBNET.$i
        farm_exec "$client" ip addr add "${SRC[$u]}/32" dev eth0
        i=$((i + 1))
done

# ---- the directory ------------------------------------------------------------------
tsagent_directory_conf "$dir_addr" <<CONF
socket = $dsock
heartbeat-lapse = ${LAPSE}s
CONF

tsctl_dir() {
        "$TSAGENT_BUILD/tsctl" --directory-socket "$dsock" "$@"
}
dir_ready() { # NAME
        farm_alive "$(farm_pid "$1")" || return 125
        farm_listening dirsrv "$dir_addr" 7400 && tsctl_dir nodes --json >/dev/null 2>&1
}
dir_start() { # NAME
        farm_spawn dirsrv "$1" env TSFARM_LOG_TARGET=stderr "$TSAGENT_BUILD/tsagent" \
                --config "$FARM_DIR/directory.conf"
        farm_wait_until 15 dir_ready "$1"
}
DIR=directory-1
if dir_start "$DIR"; then
        farm_pass "directory agent serves on $dir_addr:7400 and $dsock"
else
        farm_fail "directory agent serves on $dir_addr:7400 and $dsock" "not listening" "$(farm_log "$DIR")"
        exit 1
fi

# ---- host nodes ---------------------------------------------------------------------
rec=$FARM_DIR/served.log
: >"$rec"
for n in node1 node2 node3; do
        # directory-query-timeout above the 250 ms default: two noisy cores
        # may take longer for a TLS handshake, and a query that times out
        # places locally (which this test would misread as a placement bug).
        cat <<CONF | tsagent_conf "$n"
[host]
directory = $url
certificate = $pki/$n.crt
key = $pki/$n.key
ca = $pki/ca.crt
placement = farm
track-sessions = yes
disconnect-grace = ${GRACE_MS}ms
directory-query-timeout = 3s
CONF
        farm_spawn "$n" "backend-$n" python3 "$here/lib/rdp_backend.py" "$n" 3389 "$rec"
        farm_wait_port "$n" 0.0.0.0 3389 10
        if tsagent_start "$n" "agent-$n"; then
                farm_pass "host agent on $n started"
        else
                farm_fail "host agent on $n started" "no 'Host role started'" "$(farm_log "agent-$n")"
                exit 1
        fi
done

nodes_json() {
        tsctl_dir nodes --json 2>/dev/null
}
node_field() { # NODE FIELD: the directory's value
        nodes_json | jq -r --arg n "$1" --arg f "$2" '.nodes[] | select(.name == $n) | .[$f]'
}
node_up() { # NODE
        [[ $(node_field "$1" up) == true ]]
}
for n in node1 node2 node3; do
        if farm_wait_until 15 node_up "$n"; then
                farm_pass "$n registered with the directory"
        else
                farm_fail "$n registered with the directory" "not up: $(nodes_json)" "$(farm_log "agent-$n")"
                exit 1
        fi
done

# ---- helpers ------------------------------------------------------------------------

# The directory's view of USER's session: "NODE STATE SESSION-ID", or nothing.
dir_session() {
        tsctl_dir sessions "$1" --json 2>/dev/null |
                jq -r --arg u "$1" '.sessions[] | select(.user_key == $u) | "\(.node) \(.state) \(.session_id)"'
}
dir_state_is() { # USER "NODE STATE" (or "" for none)
        local s
        s=$(dir_session "$1")
        [[ ${s% *} == "$2" ]]
}
# NODE's BPF mirror (the pinned sessions map): "NODE-ID STATE" for USER.
mirror_of() {
        farm_exec "$1" bpftool -j map dump pinned "$pin/sessions" 2>/dev/null |
                jq -r --arg u "$2" '.[] | select(.formatted.key.user == $u) |
                        "\(.formatted.value.node_id) \(.formatted.value.state)"'
}
mirror_is() { # NODE USER EXPECTED
        [[ $(mirror_of "$1" "$2") == "$3" ]]
}
# The flags of node id ID in NODE's pinned nodes map, at node ID's farm
# address (a node's own map also has bypass entries, such as 127.0.0.1).
node_flags() { # NODE ID
        local key
        key=$(farm_addr "node$2" | awk -F. '{ printf "[\"0x%02x\",\"0x%02x\",\"0x%02x\",\"0x%02x\"]", $1, $2, $3, $4 }')
        farm_exec "$1" bpftool -j map dump pinned "$pin/nodes" 2>/dev/null |
                jq -r --argjson id "$2" --argjson k "$key" \
                        '.[] | select(.key == $k and .formatted.value.node_id == $id) | .formatted.value.flags'
}
node_flag_set() { # NODE ID BIT
        local f
        f=$(node_flags "$1" "$2")
        [[ -n $f ]] && (((f & $3) != 0))
}

# Waits for the directory's view of USER; PASS/FAIL with the time it took.
wait_dir() { # NAME USER "NODE STATE" [TIMEOUT]
        local t0
        t0=$(farm_now_ms)
        if farm_wait_until "${4:-10}" dir_state_is "$2" "$3"; then
                farm_pass "$1 ($(($(farm_now_ms) - t0)) ms)"
        else
                farm_fail "$1" "directory says '$(dir_session "$2")', expected '$3'" "$(farm_log "$DIR")"
        fi
}
wait_mirror() { # NAME NODE USER EXPECTED [TIMEOUT]
        local t0
        t0=$(farm_now_ms)
        if farm_wait_until "${5:-10}" mirror_is "$2" "$3" "$4"; then
                farm_pass "$1 ($(($(farm_now_ms) - t0)) ms)"
        else
                farm_fail "$1" "$2's map says '$(mirror_of "$2" "$3")', expected '$4'" "$(farm_log "agent-$2")"
        fi
}
log_has() { # NAME ERE
        grep -qE "$2" "$(farm_log "$1")"
}
wait_log() { # NAME AGENT ERE
        if farm_wait_until 5 log_has "$2" "$3"; then
                farm_pass "$1"
        else
                farm_fail "$1" "no line matching '$3' in $2's log" "$(farm_log "$2")"
        fi
}

# The local API of NODE's host agent: prints the body, then the status.
host_api() { # NODE METHOD PATH [BODY]
        local args=(-sS --max-time 5 --unix-socket "$asock" -X "$2" -w '\n%{http_code}')
        [[ $# -gt 3 ]] && args+=(-H 'Content-Type: application/json' --data "$4")
        farm_exec "$1" curl "${args[@]}" "http://localhost$3"
}
report() { # NODE EVENT USER SESSION-ID
        host_api "$1" POST /v1/sessions/event \
                "{\"event\":\"$2\",\"user\":\"$3\",\"session_id\":$4,\"device\":\"pc-$3\",\"client_address\":\"10.0.0.5\"}"
}
expect_report() { # NAME NODE EVENT USER SESSION-ID
        local out
        out=$(report "$2" "$3" "$4" "$5" 2>&1) || true
        if [[ ${out##*$'\n'} == 202 ]] && jq -e '.queued >= 0' <<<"${out%$'\n'*}" >/dev/null 2>&1; then
                farm_pass "$1"
        else
                farm_fail "$1" "answer: ${out//$'\n'/ }" "$(farm_log "agent-$2")"
        fi
}
status() { # NODE: GET /v1/status's body
        host_api "$1" GET /v1/status 2>/dev/null | head -n -1
}
status_is() { # NODE JQ-EXPRESSION: true when it holds for NODE's status
        status "$1" | jq -e "$2" >/dev/null 2>&1
}

# A probe from the client as USER through ENTRY; prints its answer line.
probe() { # ENTRY USER
        farm_exec "$client" python3 "$here/lib/rdp_probe.py" "$(farm_addr "$1")" \
                --source "${SRC[$2]}" --user "$2" --timeout 10 2>&1 | head -n 1
}
expect_served() { # NAME ENTRY USER NODE
        local out
        out=$(probe "$2" "$3") || true
        if [[ $out == "served-by $4 user $3" ]]; then
                farm_pass "$1"
        else
                farm_fail "$1" "got '$out'" "$(farm_log "agent-$2")"
        fi
}
# A client that holds its connection until release NAME.
held() { # NAME
        farm_alive "$(farm_pid "$1")" || return 125
        grep -q '^served-by ' "$(farm_log "$1")"
}
hold() { # NAME ENTRY USER
        farm_spawn "$client" "$1" python3 "$here/lib/rdp_probe.py" "$(farm_addr "$2")" \
                --source "${SRC[$3]}" --user "$3" --timeout 60 --wait-file "$FARM_DIR/release-$1"
        farm_wait_until 10 held "$1" || true
        head -n 1 "$(farm_log "$1")"
}
release() { # NAME
        touch "$FARM_DIR/release-$1"
        farm_wait_until 10 _farm_not_alive "$(farm_pid "$1")"
}

# ---- 1. alice logs on at A ----------------------------------------------------------------
out=$(hold alice-1 node1 alice)
if [[ $out == "served-by node1 user alice" ]]; then
        farm_pass "1: alice at node1 is served by node1"
else
        farm_fail "1: alice at node1 is served by node1" "got '$out'" "$(farm_log agent-node1)"
fi
wait_log "1: node1 asked the directory, which placed alice on the entry node (a tie)" agent-node1 \
        "Relaying ${SRC[alice]//./\\.}:[0-9]+ to local backend .*user alice: directory placed the new session on node1"
wait_dir "1: the directory has alice active on node1" alice "node1 active"
wait_mirror "1: node1's mirror shows alice -> node 1, active" node1 alice "1 1"
wait_mirror "1: node3's mirror shows alice -> node 1, active" node3 alice "1 1"
if status_is node1 '.tracked_sessions | any(.user_key == "alice" and .state == "active" and .connections == 1)'; then
        farm_pass "1: node1's /v1/status tracks alice's session with one connection"
else
        farm_fail "1: node1's /v1/status tracks alice's session with one connection" "$(status node1)"
fi

# ---- 2. the client drops --------------------------------------------------------------------
t0=$(farm_now_ms)
if release alice-1 && grep -q '^echo ok' "$(farm_log alice-1)"; then
        farm_pass "2: alice's connection carried data until she dropped it"
else
        farm_fail "2: alice's connection carried data until she dropped it" "probe: $(tr '\n' ' ' <"$(farm_log alice-1)")"
fi
if farm_wait_until 10 dir_state_is alice "node1 disconnected"; then
        t1=$(farm_now_ms)
        if ((t1 - t0 >= GRACE_MS - 50)); then
                farm_pass "2: the directory has alice disconnected after the grace ($((t1 - t0)) ms)"
        else
                farm_fail "2: the directory has alice disconnected after the grace" "after $((t1 - t0)) ms < ${GRACE_MS} ms"
        fi
else
        farm_fail "2: the directory has alice disconnected after the grace" \
                "directory says '$(dir_session alice)'" "$(farm_log agent-node1)"
fi
wait_mirror "2: node1's mirror shows alice -> node 1, disconnected" node1 alice "1 2"
wait_mirror "2: node3's mirror shows alice -> node 1, disconnected" node3 alice "1 2"
lookup=$(farm_exec node3 curl -sS --max-time 5 --unix-socket "$asock" "http://localhost/v1/sessions/lookup?user=ALICE")
if jq -e --arg a "$(farm_addr node1)" '.found and .node == "node1" and .address == $a and .state == "disconnected" and (.here | not)' <<<"$lookup" >/dev/null; then
        farm_pass "2: node3's local API says where alice's session is (for a redirect): node1, disconnected"
else
        farm_fail "2: node3's local API says where alice's session is" "$lookup"
fi
lookup=$(farm_exec node3 curl -sS --max-time 5 --unix-socket "$asock" "http://localhost/v1/sessions/lookup?user=nobody")
lookup_bad=$(farm_exec node3 curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --unix-socket "$asock" "http://localhost/v1/sessions/lookup?user=")
if jq -e '.found == false' <<<"$lookup" >/dev/null && [[ $lookup_bad == 400 ]]; then
        farm_pass "2: lookup of a user without a session: found false; of no user: 400"
else
        farm_fail "2: lookup of a user without a session / no user" "$lookup / $lookup_bad"
fi

# ---- 3. alice reconnects through C ------------------------------------------------------------
expect_served "3: alice via node3 is served by node1's RDP server" node3 alice node1
wait_log "3: node3's gateway says why: alice's disconnected session on node1" agent-node3 \
        "Relaying ${SRC[alice]//./\\.}:[0-9]+ to peer backend $(farm_addr node1 | sed 's/\./\\./g'):3389, user alice: mstshash alice: disconnected session on node1"

# ---- 4. logoff through A's local API ----------------------------------------------------------------
sid=$(status node1 | jq -r '.tracked_sessions[] | select(.user_key == "alice") | .session_id')
dsid=$(dir_session alice | awk '{ print $3 }')
if [[ -n $sid && $sid == "$dsid" ]]; then
        farm_pass "4: node1 tracks alice's session $sid, the one the directory has"
else
        farm_fail "4: node1 tracks alice's session, the one the directory has" \
                "node1 says '$sid', the directory '$dsid'" "$(farm_log agent-node1)"
fi
# Bad reports are refused with a reason and reach nobody.
before=$(status node1 | jq -c '.directory | {queued, delivered, refused}')
long=$(printf 'd%.0s' {1..65})
for bad in '{"event":"logout","user":"alice","session_id":1}' \
        '{"event":"logoff","session_id":1}' \
        '{"event":"logoff","user":"","session_id":1}' \
        '{"event":"logoff","user":"alice","session_id":0}' \
        '{"event":"logoff","user":"alice","session_id":"1"}' \
        '{"event":"logoff","user":"alice","session_id":4294967296}' \
        "{\"event\":\"logoff\",\"user\":\"alice\",\"session_id\":1,\"device\":\"$long\"}" \
        '{"event":"logoff","user":"alice","session_id":1,"client_address":"10.0.0"}' \
        '["logoff"]' '{"event":'; do
        out=$(host_api node1 POST /v1/sessions/event "$bad" 2>&1) || true
        if [[ ${out##*$'\n'} == 400 ]] && jq -e '.reason | length > 0' <<<"${out%$'\n'*}" >/dev/null 2>&1; then
                farm_pass "4: node1's local API refuses $bad with 400 and a reason"
        else
                farm_fail "4: node1's local API refuses $bad with 400 and a reason" "answer: ${out//$'\n'/ }"
        fi
done
after=$(status node1 | jq -c '.directory | {queued, delivered, refused}')
if [[ -n $before && $before == "$after" ]]; then
        farm_pass "4: the refused reports queued and delivered nothing"
else
        farm_fail "4: the refused reports queued and delivered nothing" "before $before, after $after"
fi
expect_report "4: node1's local API accepts alice's logoff (202)" node1 logoff alice "${sid:-${dsid:-1}}"
wait_dir "4: alice is gone from the directory" alice ""
for n in node1 node2 node3; do
        wait_mirror "4: alice is gone from $n's mirror" "$n" alice ""
done
if farm_wait_until 5 status_is node1 '.tracked_sessions | all(.user_key != "alice")'; then
        farm_pass "4: node1 no longer tracks alice"
else
        farm_fail "4: node1 no longer tracks alice" "$(status node1)"
fi

# ---- 5. placement: the least-loaded node --------------------------------------------------------------
expect_report "5: node1's local API accepts bob's logon" node1 logon bob 101
expect_report "5: node1's local API accepts ben's logon" node1 logon ben 102
expect_report "5: node2's local API accepts carol's logon" node2 logon carol 201
loads() {
        nodes_json | jq -r '[.nodes[] | select(.name | test("^node")) | "\(.name)=\(.sessions)"] | sort | join(" ")'
}
loads_are() {
        [[ $(loads) == "$1" ]]
}
if farm_wait_until 10 loads_are "node1=2 node2=1 node3=0"; then
        farm_pass "5: the directory counts 2, 1, 0 sessions on node1, node2, node3"
else
        farm_fail "5: the directory counts 2, 1, 0 sessions on node1, node2, node3" "$(loads)" "$(farm_log "$DIR")"
fi
wait_mirror "5: node3's mirror shows carol -> node 2, active" node3 carol "2 1"
expect_served "5: new user erin at node1 is served by node3 (least loaded)" node1 erin node3
wait_log "5: node1's gateway says the directory placed erin on node3" agent-node1 \
        "Relaying ${SRC[erin]//./\\.}:[0-9]+ to peer backend .*user erin: directory placed the new session on node3"

# ---- 6. drain ------------------------------------------------------------------------------
out=$(tsctl_dir drain node3 2>&1) || true
if awk '$1 == "node3" && $3 == "disabled" { f = 1 } END { exit !f }' <<<"$out"; then
        farm_pass "6: tsctl drain node3"
else
        farm_fail "6: tsctl drain node3" "output: $out"
fi
for n in node1 node3; do
        if farm_wait_until 10 node_flag_set "$n" 3 4; then
                farm_pass "6: $n's nodes map marks node3 draining"
        else
                farm_fail "6: $n's nodes map marks node3 draining" "flags '$(node_flags "$n" 3)'" "$(farm_log "agent-$n")"
        fi
done
expect_served "6: new user gina at drained node3 is served by node2 (least loaded that takes sessions)" node3 gina node2
wait_log "6: node3's gateway says the directory placed gina on node2" agent-node3 \
        "user gina: directory placed the new session on node2"
expect_report "6: node3's local API accepts hank's logon" node3 logon hank 301
expect_report "6: node3's local API accepts hank's disconnect" node3 disconnect hank 301
wait_dir "6: the directory has hank disconnected on node3" hank "node3 disconnected"
wait_mirror "6: node1's mirror shows hank -> node 3, disconnected" node1 hank "3 2"
expect_served "6: hank via node1 is still steered to drained node3" node1 hank node3
wait_log "6: node1's gateway says why: hank's disconnected session on node3" agent-node1 \
        "user hank: mstshash hank: disconnected session on node3"

# ---- 7. A's agent dies --------------------------------------------------------------------------
farm_stop agent-node1 5 KILL
t0=$(farm_now_ms)
node_down() {
        [[ $(node_field node1 up) == false ]]
}
if farm_wait_until $((LAPSE + 10)) node_down; then
        farm_pass "7: the directory marks node1 down after its heartbeats lapse ($(($(farm_now_ms) - t0)) ms after the kill)"
else
        farm_fail "7: the directory marks node1 down after its heartbeats lapse" "$(nodes_json)" "$(farm_log "$DIR")"
fi
for u in bob ben; do
        wait_dir "7: $u's session on node1 is lost in the directory" "$u" "node1 lost" 5
        for n in node2 node3; do
                wait_mirror "7: $n's mirror shows $u -> node 1, lost (3)" "$n" "$u" "1 3"
        done
done
if farm_wait_until 10 node_flag_set node2 1 8; then
        farm_pass "7: node2's nodes map marks node1 down"
else
        farm_fail "7: node2's nodes map marks node1 down" "flags '$(node_flags node2 1)'" "$(farm_log agent-node2)"
fi

# ---- 8. a directory restart loses nothing ---------------------------------------------------------
# Heartbeat times move; everything else must not.
snapshot() {
        curl -sS --max-time 5 --unix-socket "$dsock" http://localhost/v1/snapshot |
                jq -S '{revision, sessions: (.sessions | sort_by(.id)),
                        nodes: (.nodes | map(del(.last_heartbeat_usec)) | sort_by(.name))}'
}
before=$(snapshot) || before=
sessions_before=$(tsctl_dir sessions --json 2>/dev/null | jq -S '.sessions | sort_by(.id)') || sessions_before=
farm_stop "$DIR" 5
t_restart=$(($(date +%s%6N)))
DIR=directory-2
if dir_start "$DIR"; then
        farm_pass "8: directory restarted on the same database"
else
        farm_fail "8: directory restarted on the same database" "not serving" "$(farm_log "$DIR")"
        exit 1
fi
after=$(snapshot) || after=
sessions_after=$(tsctl_dir sessions --json 2>/dev/null | jq -S '.sessions | sort_by(.id)') || sessions_after=
if [[ -n $before && $before == "$after" ]] && jq -e '.sessions | length == 4' <<<"$after" >/dev/null; then
        farm_pass "8: snapshot identical before and after the restart (revision, 4 sessions, nodes)"
else
        farm_fail "8: snapshot identical before and after the restart" \
                "diff: $(diff <(echo "$before") <(echo "$after") | head -n 20 | tr '\n' ' ')"
fi
if [[ -n $sessions_before && $sessions_before == "$sessions_after" ]]; then
        farm_pass "8: tsctl sessions --json identical before and after the restart"
else
        farm_fail "8: tsctl sessions --json identical before and after the restart" \
                "diff: $(diff <(echo "$sessions_before") <(echo "$sessions_after") | head -n 20 | tr '\n' ' ')"
fi
# Both live nodes heartbeat the new directory before it goes away again
# (so no node carries a lost heartbeat into the next outage).
heartbeat_since() { # NODE USEC
        local hb
        hb=$(node_field "$1" last_heartbeat_usec)
        [[ -n $hb && $hb != null ]] && ((hb > $2)) && node_up "$1"
}
for n in node2 node3; do
        if farm_wait_until 15 heartbeat_since "$n" "$t_restart"; then
                farm_pass "8: $n heartbeats the restarted directory and stays up"
        else
                farm_fail "8: $n heartbeats the restarted directory and stays up" "$(nodes_json)" "$(farm_log "agent-$n")"
        fi
done

# ---- 9. the directory is down ---------------------------------------------------------------
farm_stop "$DIR" 5
expect_served "9: directory down: carol via node3 is still steered to node2 from the mirror" node3 carol node2
wait_log "9: node3's gateway says why: carol's active session on node2" agent-node3 \
        "user carol: mstshash carol: active session on node2"
# node3 knows it is drained (its nodes map says so, step 6): deciding
# without the directory, it must not place a new session on itself
# (DESIGN 2.1: "in host mode the local node unless drained"), nor on node1,
# which the directory marked down (step 7).
expect_served "9: directory down: new user ivan at drained node3 is placed on node2 (up, not draining)" node3 ivan node2
delivered=$(status node2 | jq -r '.directory.delivered')
expect_report "9: node2's local API accepts dave's logon while the directory is down" node2 logon dave 202
if farm_wait_until 10 status_is node2 '.directory.queued >= 1 and .directory.reachable == false'; then
        farm_pass "9: node2's /v1/status: dave's logon queued, directory unreachable"
else
        farm_fail "9: node2's /v1/status: dave's logon queued, directory unreachable" "$(status node2)"
fi
DIR=directory-3
if dir_start "$DIR"; then
        farm_pass "9: directory started again"
else
        farm_fail "9: directory started again" "not serving" "$(farm_log "$DIR")"
        exit 1
fi
if farm_wait_until 15 status_is node2 ".directory.queued == 0 and .directory.delivered > ${delivered:-0} and .directory.reachable"; then
        farm_pass "9: node2's queue drains into the directory (delivered was $delivered)"
else
        farm_fail "9: node2's queue drains into the directory" "$(status node2)" "$(farm_log agent-node2)"
fi
wait_dir "9: the directory has dave active on node2" dave "node2 active"
wait_mirror "9: node3's mirror shows dave -> node 2, active" node3 dave "2 1"
for n in node2 node3; do
        if node_up "$n"; then
                farm_pass "9: $n is still up after the directory's outage"
        else
                farm_fail "9: $n is still up after the directory's outage" "$(nodes_json)"
        fi
done

# ---- the end ---------------------------------------------------------------------------------
for n in node2 node3; do
        if farm_alive "$(farm_pid "agent-$n")"; then
                farm_pass "host agent on $n ran throughout"
        else
                farm_fail "host agent on $n ran throughout" "it died" "$(farm_log "agent-$n")"
        fi
        farm_stop "agent-$n" 5
done
farm_stop "$DIR" 5
if grep -qiE "AddressSanitizer|runtime error|LeakSanitizer" "$FARM_DIR"/logs/agent-*.log "$FARM_DIR"/logs/directory-*.log; then
        farm_fail "agents logged no sanitizer reports" "see logs"
fi
((FARM_FAILED == 0))
