#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Steering end to end: three nodes, each with tsagent (host role) and an
# RDP-like backend that records which node served which user, and a client
# namespace. Checks that a mstshash cookie lands on the node the sessions
# map names whatever node the client entered, routing tokens for farm
# nodes are followed and others refused, new users are placed locally,
# affinity takes the sk_lookup fast path, kill -9 of the agent fails open
# and a restarted agent takes over, silent/garbage/oversize first PDUs are
# refused with a logged reason, 1 GiB each way arrives intact, and
# half-close and reset propagate.
#
# Prints "PASS: name" / "FAIL: name (why)"; exits 77 when it cannot run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/farm.sh
source "$here/lib/farm.sh"
# shellcheck source=lib/tsagent.sh
source "$here/lib/tsagent.sh"

if ((EUID != 0)); then
        farm_skip steering "needs root"
        exit 77
fi
for t in ip nsenter python3 bpftool jq; do
        if ! command -v "$t" >/dev/null; then
                farm_skip steering "$t is not installed; tools/deps.sh check installs it"
                exit 77
        fi
done
BULK_MIB=${TSFARM_STEERING_BULK_MIB:-1024}

trap farm_down EXIT
farm_up 3 1
client=client1
rec=$FARM_DIR/served.log
: >"$rec"

# Every user probes from its own client address: one address is one user
# (sk_lookup's affinity fast path assumes no more, see docs/bpf.md).
declare -A src
i=150
for u in alice bob carol dave erin frank grace resetme bulk half nobody stale stale2; do
        src[$u]=10.239.0.$i
        farm_exec "$client" ip addr add "10.239.0.$i/32" dev eth0
        i=$((i + 1))
done

for n in node1 node2 node3; do
        printf '[sessions]\nalice = node1\ncarol = node3\n' | tsagent_conf "$n"
        farm_spawn "$n" "backend-$n" python3 "$here/lib/rdp_backend.py" "$n" 3389 "$rec"
        farm_wait_port "$n" 0.0.0.0 3389 10
        if tsagent_start "$n" "agent-$n-1"; then
                farm_pass "agent on $n started"
        else
                farm_fail "agent on $n started" "no 'Host role started'" "$(farm_log "agent-$n-1")"
                exit 1
        fi
done

probe() { # ENTRY-NODE USER-OR-NOTHING ARGS...
        local entry=$1 who=$2
        shift 2
        farm_exec "$client" python3 "$here/lib/rdp_probe.py" "$(farm_addr "$entry")" \
                --source "${src[$who]}" "$@"
}

expect() { # NAME EXPECTED ACTUAL
        if [[ $3 == "$2"* ]]; then
                farm_pass "$1"
        else
                farm_fail "$1" "expected '$2', got '$3'" "$(farm_log agent-node1-1)"
        fi
}

# ---- cookie steering -----------------------------------------------------------
expect "mstshash alice via node2 lands on node1 (her session)" "served-by node1 user alice" \
        "$(probe node2 alice --user alice)"
expect "mstshash alice via node3 lands on node1" "served-by node1 user alice" \
        "$(probe node3 alice --user alice)"
expect "mstshash carol via node1 lands on node3" "served-by node3 user carol" \
        "$(probe node1 carol --user carol)"
expect "case-folded cookie CORP\\\\Alice finds alice" "served-by node1 user CORP\\Alice" \
        "$(probe node2 alice --user 'CORP\Alice')"
expect "a user without a session is placed on the entry node" "served-by node2 user bob" \
        "$(probe node2 bob --user bob)"

# tsctl on node2 shows the session map, and the decision is in the log.
sess=$(farm_exec node2 "$TSAGENT_BUILD/tsctl" --json host sessions | jq -r '.sessions[] | "\(.user)=\(.node_id)"' | sort | tr '\n' ' ')
expect "tsctl host sessions on node2 lists the map" "alice=1 carol=3" "$sess"
if grep -q "mstshash alice: disconnected session on node1" "$(farm_log agent-node2-1)"; then
        farm_pass "gateway logs the decision and its reason"
else
        farm_fail "gateway logs the decision and its reason" "no decision line" "$(farm_log agent-node2-1)"
fi

# A session set at run time with tsctl takes effect at once.
farm_exec node2 "$TSAGENT_BUILD/tsctl" host sessions set dave 3 --state disconnected >/dev/null
expect "tsctl host sessions set steers the next connection" "served-by node3 user dave" \
        "$(probe node2 dave --user dave)"

# ---- routing tokens --------------------------------------------------------------
expect "routing token for node3 via node1 reaches node3" "served-by node3 user -" \
        "$(probe node1 erin --token "$(farm_addr node3):3389")"
out=$(probe node1 erin --token "10.239.0.200:3389")
expect "routing token for a non-farm address is refused" "closed after" "$out"
if grep -q "routing token names 10.239.0.200:3389, which is not a farm node" "$(farm_log agent-node1-1)"; then
        farm_pass "refused routing token logged with the address"
else
        farm_fail "refused routing token logged with the address" "no log line" "$(farm_log agent-node1-1)"
fi
expect "routing token for a farm node's other port is refused" "closed after" \
        "$(probe node1 erin --token "$(farm_addr node3):22")"

# ---- affinity fast path ------------------------------------------------------------
before=$(farm_exec node2 "$TSAGENT_BUILD/tsctl" --json host stats | jq .stats.to_local_affinity)
expect "bob again via node2 (affinity to node2)" "served-by node2 user bob" "$(probe node2 bob --user bob)"
after=$(farm_exec node2 "$TSAGENT_BUILD/tsctl" --json host stats | jq .stats.to_local_affinity)
if ((after == before + 1)); then
        farm_pass "sk_lookup sent bob's reconnect straight to the local server (affinity)"
else
        farm_fail "sk_lookup sent bob's reconnect straight to the local server (affinity)" \
                "to_local_affinity $before -> $after"
fi

# ---- bad first PDUs --------------------------------------------------------------------
out=$(probe node1 nobody --nothing)
secs=${out#closed after }
secs=${secs%s}
if [[ $out == closed\ after* ]] && awk -v s="$secs" 'BEGIN { exit !(s >= 0.95 && s < 3) }'; then
        farm_pass "a client that sends nothing is closed after the 1 s deadline ($out)"
else
        farm_fail "a client that sends nothing is closed after the 1 s deadline" "$out"
fi
expect "garbage first PDU is refused" "closed after" "$(probe node1 nobody --garbage)"
out=$(probe node1 nobody --oversize)
# Unread bytes make the kernel close with a RST; either way nothing served it.
if [[ $out == "closed after"* || $out == "reset after"* ]]; then
        farm_pass "oversize first PDU is refused ($out)"
else
        farm_fail "oversize first PDU is refused" "$out"
fi
log1=$(farm_log agent-node1-1)
for why in "tpkt-length" "pcb-size" "no complete first PDU"; do
        if grep -qi -- "$why" "$log1"; then
                farm_pass "refusal reason logged: $why"
        else
                farm_fail "refusal reason logged: $why" "not in the agent log" "$log1"
        fi
done
if grep -q "nobody\|10.239.0.160" "$rec"; then
        farm_fail "refused connections never reach a backend" "$(grep -c . "$rec") records"
else
        farm_pass "refused connections never reach a backend"
fi

# ---- relay: bulk, half-close, reset ---------------------------------------------
farm_exec node2 "$TSAGENT_BUILD/tsctl" host sessions set half 1 >/dev/null
farm_exec node2 "$TSAGENT_BUILD/tsctl" host sessions set resetme 1 >/dev/null
farm_exec node2 "$TSAGENT_BUILD/tsctl" host sessions set bulk 1 >/dev/null
t0=$(farm_now_ms)
out=$(probe node2 bulk --user bulk --bulk "$BULK_MIB" --timeout 300 | tail -1)
ms=$(($(farm_now_ms) - t0))
expect "${BULK_MIB} MiB each way through node2's gateway to node1 arrives intact (${ms} ms)" \
        "bulk ok $BULK_MIB" "$out"
out=$(probe node2 half --user half --half-close | tr '\n' ' ')
expect "half-close propagates (client EOF reaches node1, its reply still arrives)" \
        "served-by node1 user half bye node1" "$out"
expect "a backend reset reaches the client as a reset" "reset after" \
        "$(probe node2 resetme --user resetme)"

# ---- stale legs: the same user again resets the old relayed connection -------
farm_exec node2 "$TSAGENT_BUILD/tsctl" host sessions set stale 1 >/dev/null
old=$FARM_DIR/stale.out
probe node2 stale --user stale --wait-file "$FARM_DIR/stale.go" --timeout 20 >"$old" 2>&1 &
old_pid=$!
farm_wait_until 10 grep -q "served-by" "$old" || true
expect "the same user reconnecting from elsewhere is served" "served-by node1 user stale" \
        "$(probe node2 stale2 --user stale)"
touch "$FARM_DIR/stale.go"
wait "$old_pid" || true
expect "... and the old relayed connection was closed (stale leg)" "served-by node1 user stale echo lost" \
        "$(tr '\n' ' ' <"$old")"
if grep -q "Resetting stale connection" "$(farm_log agent-node2-1)"; then
        farm_pass "stale leg reset logged"
else
        farm_fail "stale leg reset logged" "no log line" "$(farm_log agent-node2-1)"
fi

# ---- SIGHUP reload keeps relayed connections --------------------------------------
held=$FARM_DIR/held.out
go=$FARM_DIR/held.go
probe node2 half --user half --wait-file "$go" --timeout 20 >"$held" 2>&1 &
held_pid=$!
farm_wait_until 10 grep -q "served-by" "$held" || true
printf '[sessions]\nalice = node1\ncarol = node3\nerin = node3\n' | tsagent_conf node2
kill -HUP "$(farm_pid agent-node2-1)"
farm_wait_until 10 grep -q "Configuration reloaded" "$(farm_log agent-node2-1)" || true
touch "$go"
wait "$held_pid" || true
expect "SIGHUP reload keeps a relayed connection" "served-by node1 user half echo ok" "$(tr '\n' ' ' <"$held")"
expect "the reloaded sessions table is in force" "served-by node3 user erin" "$(probe node2 erin --user erin)"

# ---- fail-open and take-over -----------------------------------------------------
farm_stop agent-node2-1 5 KILL
expect "kill -9 of node2's agent: alice via node2 is served locally (fail-open)" \
        "served-by node2 user alice" "$(probe node2 frank --user alice)"
if tsagent_start node2 agent-node2-2; then
        farm_pass "agent on node2 restarted"
else
        farm_fail "agent on node2 restarted" "no 'Host role started'" "$(farm_log agent-node2-2)"
fi
expect "the restarted agent steers again: alice via node2 lands on node1" "served-by node1 user alice" \
        "$(probe node2 grace --user alice)"
expect "the pinned session set with tsctl survived the restart" "served-by node3 user dave" \
        "$(probe node2 dave --user dave)"

for n in node1 node3; do
        farm_stop "agent-$n-1" 5
done
farm_stop agent-node2-2 5
if grep -qiE "AddressSanitizer|runtime error" "$FARM_DIR"/logs/agent-*.log; then
        farm_fail "agents logged no sanitizer reports" "see logs"
else
        farm_pass "agents exited cleanly"
fi
