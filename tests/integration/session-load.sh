#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The load generator against the whole farm (issue 6), set up by
# lib/sessionfarm.sh (a directory, lic1 with 2 CALs and lic2 with 1, three
# nodes with tsagent and tshost, a client): `tsclient load` runs 200
# devices and 20 users for 60 s at 10 connections a second through node1
# (connect / disconnect (a dropped connection) / reconnect (the reconnect
# cookie) / logoff), all from the client's one address. Checked:
#   * no connection failed, and the summary adds up: connections =
#     succeeded + failed = the operations' sum = the license classes' sum;
#     succeeded = new + reattached sessions;
#   * the farm agrees: the tshosts started as many sessions as the summary
#     says were new, reattached as many as it says were reattached, and
#     redirected as often as it says it followed a redirect;
#   * licenses: the pools are smaller than 200 devices, so most keep their
#     temporary tokens: temporary tokens issued = the summary's temporary
#     = the device stores holding a token; Device CALs issued = the
#     summary's cal = the stores holding a CAL <= the 3 CALs installed;
#   * the directory ends with exactly the sessions the tshosts still run,
#     all disconnected;
#   * the sessions went to every node (one client address with many users
#     is marked shared at node1, so the gateway steers each user).
#
# Prints "PASS: name" / "FAIL: name (why)"; exits 77 when it cannot run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/farm.sh
source "$here/lib/farm.sh"
# shellcheck source=lib/tsagent.sh
source "$here/lib/tsagent.sh"
# shellcheck source=lib/licfarm.sh
source "$here/lib/licfarm.sh"
# shellcheck source=lib/sessionfarm.sh
source "$here/lib/sessionfarm.sh"

DEVICES=${SESSION_LOAD_DEVICES:-200}
DURATION=${SESSION_LOAD_DURATION:-60}
RATE=${SESSION_LOAD_RATE:-10}
MIX=connect=40,disconnect=20,reconnect=25,logoff=15
SF_USERS=20

sf_require session-load

trap sf_down EXIT
t0=$(farm_now_ms)
if sf_up; then
        farm_pass "the whole farm is up ($(($(farm_now_ms) - t0)) ms)"
else
        farm_fail "the whole farm is up" "sf_up failed (above)"
        exit 1
fi

count_in_logs() { # ERE: matching lines in every tshost log
        cat "$FARM_DIR"/logs/tshost-node*.log | grep -cE "$1" || true
}

# ---- the run ------------------------------------------------------------------------------
rc=0
t1=$(farm_now_ms)
out=$(sf_load node1 --devices "$DEVICES" --duration "${DURATION}s" --rate "$RATE" --mix "$MIX" --json \
        2>"$SF_DIR/load.err") || rc=$?
ms=$(($(farm_now_ms) - t1))
S=$(tail -n 1 <<<"$out")
summary=$(jq -c '{connections, succeeded, failed, ops: (.ops | map_values(.connections)), license, sessions,
        redirects, skipped_busy, latency_ms}' <<<"$S" 2>/dev/null) || summary=$S
echo "session-load: $DEVICES devices, $SF_USERS users, ${DURATION} s at $RATE/s in $ms ms: $summary"
if ((rc == 0)) && jq -e '.consistent' <<<"$S" >/dev/null 2>&1; then
        farm_pass "tsclient load ran $DEVICES devices for ${DURATION} s: exit status 0, its own identities hold"
else
        farm_fail "tsclient load ran $DEVICES devices for ${DURATION} s" "exit status $rc: $S" "$SF_DIR/load.err"
fi
tsagent_expect "no connection failed ($(jq -r .connections <<<"$S" 2>/dev/null) connections)" "$S" \
        '.failed == 0 and ([.failures[]] | add) == 0 and ([.ops[].failed] | add) == 0 and .connections >= 100'
tsagent_expect "connections = succeeded + failed = the sum over operations, every operation ran" "$S" \
        '.connections == .succeeded + .failed and ([.ops[].connections] | add) == .connections and
         ([.ops[].connections] | all(. > 0))'
tsagent_expect "the license classes add up to the connections" "$S" '([.license[]] | add) == .connections'
tsagent_expect "succeeded = new + reattached sessions, both seen" "$S" \
        '.sessions.new + .sessions.reattached == .succeeded and .sessions.new > 0 and .sessions.reattached > 0'

# ---- the farm agrees ------------------------------------------------------------------------
started=$(count_in_logs "session [0-9]+ started \(shell pid")
reattached=$(count_in_logs "session [0-9]+ reattached \(shell pid")
redirected=$(count_in_logs ": redirecting ")
tsagent_expect "the tshosts started $started sessions and reattached $reattached: the summary's new and reattached" \
        "$S" ".sessions.new == $started and .sessions.reattached == $reattached"
tsagent_expect "the tshosts redirected $redirected times: the redirects the summary followed" "$S" ".redirects == $redirected"

# ---- licenses -------------------------------------------------------------------------------
issued=$( {
        tsctl_lic lic1 issued --json
        tsctl_lic lic2 issued --json
} | jq -s '[.[].tokens[]] | unique_by(.token_id)')
temporaries=$(jq '[.[] | select(.kind == "temporary")] | length' <<<"$issued")
cals=$(jq '[.[] | select(.kind == "device-cal")] | length' <<<"$issued")
stores_token=0 stores_cal=0
for d in "$SF_DIR"/load/*/; do
        kind=$("$TSAGENT_BUILD/tsclient" device --store "$d" --machine-id-file "$(sf_machine "$SF_CLIENT")" --json |
                jq -r --arg f "$SF_FARM_ID" '.farms[$f].kind // empty')
        [[ -n $kind ]] && stores_token=$((stores_token + 1))
        [[ $kind == device-cal ]] && stores_cal=$((stores_cal + 1))
done
tsagent_expect "temporary tokens: $temporaries issued = the summary's = $stores_token device stores holding a token" "$S" \
        ".license.temporary == $temporaries and $temporaries == $stores_token"
tsagent_expect "Device CALs: $cals issued = the summary's = $stores_cal stores holding one, at most the $((SF_PACK1 + SF_PACK2)) installed" \
        "$S" ".license.cal == $cals and $cals == $stores_cal and $cals <= $((SF_PACK1 + SF_PACK2))"
tsagent_expect "the pools are exhausted and most devices keep a temporary token" "$S" \
        ".license.cal == $((SF_PACK1 + SF_PACK2)) and .license.temporary > 2 * .license.cal"

# ---- the directory ----------------------------------------------------------------------------
# Sessions whose shell ran and that neither logged off nor ended, by id.
running() {
        local n
        for n in "${SF_NODES[@]}"; do
                sed -nE "s/.*Session ([0-9]+) of [^ ]+ login shell .* running, pid .*/$n \1 up/p;
                         s/.*Session ([0-9]+) of [^ ]+ (logged off \(|ended: ).*/$n \1 gone/p" "$(farm_log "tshost-$n")"
        done | awk '$3 == "up" { up[$1 " " $2] = 1 } $3 == "gone" { gone[$1 " " $2] = 1 }
                END { n = 0; for (k in up) if (!(k in gone)) n++; print n }'
}
dir_matches() {
        local n
        n=$(sf_directory_sessions | jq '([.sessions[] | select(.state == "disconnected")] | length), (.sessions | length)' |
                tr '\n' ' ')
        [[ $n == "$(running) $(running) " ]]
}
if farm_wait_until 15 dir_matches; then
        farm_pass "the directory has the $(running) sessions the tshosts still run, all disconnected"
else
        farm_fail "the directory has the sessions the tshosts still run, all disconnected" \
                "$(sf_directory_sessions | jq -c '[.sessions[] | .state] | group_by(.) | map({(.[0]): length}) | add') vs $(running) running" \
                "$(farm_log directory)"
fi

# ---- spread -----------------------------------------------------------------------------------
per_node=""
spread=1
for n in "${SF_NODES[@]}"; do
        c=$(grep -cE "session [0-9]+ (started|reattached) \(shell pid" "$(farm_log "tshost-$n")" || true)
        per_node+="$n $c, "
        ((c > 0)) || spread=0
done
if ((spread)); then
        farm_pass "every node served sessions (${per_node%, })"
else
        farm_fail "every node served sessions" "${per_node%, }"
fi
aff=$(farm_exec node1 "$TSAGENT_BUILD/tsctl" --json host affinity 2>/dev/null || true)
tsagent_expect "node1 marks the client's address shared (many users from one address)" "$aff" \
        "[.affinity[] | select(.client == \"$(farm_addr "$SF_CLIENT")\") | .flags | index(\"multi-user\")] | length == 1" \
        "$(farm_log agent-node1)"

for n in directory agent-lic1 agent-lic2 agent-node1 agent-node2 agent-node3 tshost-node1 tshost-node2 tshost-node3; do
        if ! farm_alive "$(farm_pid "$n")"; then
                farm_fail "$n ran throughout" "it died" "$(farm_log "$n")"
        fi
done
if grep -qiE "AddressSanitizer|runtime error|LeakSanitizer" "$FARM_DIR"/logs/*.log; then
        farm_fail "no sanitizer reports" "see $FARM_DIR/logs"
fi
echo "session-load: $(($(farm_now_ms) - t0)) ms"
((FARM_FAILED == 0))
