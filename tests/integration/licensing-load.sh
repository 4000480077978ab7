#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The licensing invariant under load and faults (issue 5): 8 terminal-server
# hosts (node1..node8, tsagent host role with its licensing client; node1-4
# at site east, node5-8 at site west) ask CALs for 2,000 devices (250 each,
# a few at a time: tests/integration/lib/licload.py on each host's local
# API, obtain -> logon -> obtain) from two license servers whose pools are
# smaller than demand: lic1 (east, packs of 500 and 400) and lic2 (west, a
# pack of 300), 1,200 CALs for 2,000 devices. lic2 runs out first and
# borrows from lic1. Once lic1 issued 30 % of its CALs and lends to lic2,
# it is killed with SIGKILL (lends in flight), kept down until the hosts
# have failed over to lic2 a number of times, and restarted on the same
# database; the load goes on. Then the devices holding temporary tokens
# connect once more, as their next session would. Checked:
#   a. available + issued = count for every pack at both servers, sampled
#      all along the run, right after the restart, and at the end; nothing
#      lic1 had committed before the kill is lost;
#   b. no token id is issued twice, within a server or across both;
#   c. no device has more than one active CAL across both servers;
#   d. active CALs never exceed the 1,200 installed, and in the end all
#      1,200 are issued (demand exceeds supply: no pool has one left) and
#      every one is held by the device it was issued to. A CAL whose answer
#      the kill lost (a lend lic1 committed, a CAL it signed) may be
#      stranded at the end of the load; the device's next connection gets
#      that same CAL (the store's idempotence, the borrower's in-doubt
#      lenders). The number stranded before is reported;
#   e. the CALs the devices hold are distinct and verify offline (a sample,
#      tsctl license verify against the farm's trusted keys);
#   f. a device without a CAL holds its own valid, validated temporary
#      token (a sample verified offline too);
#   g. the drivers' counts add up: devices = CALs + temporary-only, none
#      given up; borrowed CALs held = CALs recorded as lent;
#   h. no sanitizer reports in the agents' logs.
# Prints the numbers and the duration in a SUMMARY line.
#
# LICLOAD_DEVICES (per host, default 250) and LICLOAD_THREADS (devices in
# flight per host, default 4) scale it.
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

tsagent_require licensing-load ip nsenter unshare python3 jq curl -- tsagent tsctl

HOSTS=8
PER_HOST=${LICLOAD_DEVICES:-250}
THREADS=${LICLOAD_THREADS:-4}
DEVICES=$((HOSTS * PER_HOST))
LIC1_PACKS=(east-a:500 east-b:400)
LIC2_PACKS=(west-a:300)
EAST_HOSTS=4
INSTALLED=1200
# lic1 is killed once it issued this many (30 % of its 900) and lent this
# many to lic2, so that lends are in flight when it dies...
KILL_AT=270
KILL_LENT=10
# ... and restarted once the hosts failed over from it this many times.
FAILOVERS=40
SAMPLE=50
LOAD=$here/lib/licload.py

t_start=$(farm_now_ms)
trap farm_down EXIT
farm_up "$HOSTS" 0
farm_add_node lic1 "$FARM_SUBNET.61"
farm_add_node lic2 "$FARM_SUBNET.62"
pki=$FARM_DIR/pki
trust=$FARM_DIR/trust
mkdir -m 700 "$pki"
mkdir "$trust"
"$TSCTL" pki init --dir "$pki" --name licensing-load --days 2 >/dev/null
for n in $(seq -f 'node%g' 1 "$HOSTS") lic1 lic2; do
        "$TSCTL" pki issue --dir "$pki" "$n" --ip "$(farm_addr "$n")" --days 1 >/dev/null
done


# ---- the farm ---------------------------------------------------------------------
# A peer's inventory is read every 5 s (default 30 s), so that the restarted
# lic1 is a reachable peer of lic2 again within the test's time.
lic_conf lic1 east 'inventory-refresh = 5s'
lic_conf lic2 west 'inventory-refresh = 5s'
for n in lic1 lic2; do
        if ! lic_start "$n" "agent-$n"; then
                farm_fail "license server $n serves" "not ready" "$(farm_log "agent-$n")"
                exit 1
        fi
        cp "$FARM_DIR/$n-state/license-signing.pub" "$trust/$n.pem"
done
for p in "${LIC1_PACKS[@]}"; do
        tsctl_lic lic1 install-pack "${p%:*}" --version 2026 --count "${p#*:}" >/dev/null
done
for p in "${LIC2_PACKS[@]}"; do
        tsctl_lic lic2 install-pack "${p%:*}" --version 2026 --count "${p#*:}" >/dev/null
done
farm_pass "license servers lic1 (east, 500 + 400 CALs) and lic2 (west, 300 CALs) serve"

for ((i = 1; i <= HOSTS; i++)); do
        host_conf "node$i" "$( ((i <= EAST_HOSTS)) && echo east || echo west)"
        if ! tsagent_start "node$i" "agent-node$i"; then
                farm_fail "host agent on node$i started" "no 'Host role started'" "$(farm_log "agent-node$i")"
                exit 1
        fi
done
all_hosts_see_both() {
        local i
        for ((i = 1; i <= HOSTS; i++)); do
                host_sees_servers "node$i" 2 || return 1
        done
}
if farm_wait_until 15 all_hosts_see_both && farm_wait_until 15 lic_sees_peer lic1 lic2 &&
        farm_wait_until 15 lic_sees_peer lic2 lic1; then
        farm_pass "$HOSTS host agents found both license servers; lic1 and lic2 are each other's peers"
else
        farm_fail "$HOSTS host agents found both license servers, lic1 and lic2 each other" "not within 15 s" \
                "$(farm_log agent-lic1)"
        exit 1
fi

# ---- load, with lic1 killed midway ------------------------------------------------------
# Every poll below also checks the invariant at the servers that answer.
SAMPLES=0
VIOLATIONS=()
check_packs() { # NAME PACKS-JSON
        SAMPLES=$((SAMPLES + 1))
        jq -e '[.packs[] | .available + .issued == .count and .available >= 0 and .issued <= .count] | all' \
                <<<"$2" >/dev/null ||
                VIOLATIONS+=("$1: $(jq -c '[.packs[] | {id, count, available, issued}]' <<<"$2")")
}
sample() { # NAME...: the packs of every server that answers (lic1 may be down)
        local n p
        for n in "$@"; do
                p=$(tsctl_lic "$n" packs --json 2>/dev/null) || continue
                check_packs "$n" "$p"
        done
}
DRIVERS=()
drivers_running() {
        local p
        for p in "${DRIVERS[@]}"; do
                farm_alive "$p" && return 0
        done
        return 1
}
LIC1_ISSUED=0
LIC1_LENT=0
# The polls sample at most ~4 times a second: the servers serve the load.
lic1_lending() { # ISSUED LENT
        local p
        sample lic2
        p=$(tsctl_lic lic1 packs --json 2>/dev/null) || return 1
        check_packs lic1 "$p"
        LIC1_ISSUED=$(jq .totals.issued <<<"$p")
        LIC1_LENT=$(grep -c 'lent from pack' "$(farm_log agent-lic1)" || true)
        ((LIC1_ISSUED >= $1 && LIC1_LENT >= $2)) && return 0
        drivers_running || return 125
        sleep 0.25
        return 1
}
# Requests the hosts failed over from lic1 (their log says so).
failovers() {
        cat "$FARM_DIR"/logs/agent-node*.log | grep -c "License server $(farm_addr lic1):7401 did not answer" || true
}
failed_over() { # N
        sample lic2
        (($(failovers) >= $1)) && return 0
        sleep 0.1
        return 1
}
drivers_done() {
        sample lic1 lic2
        drivers_running || return 0
        sleep 0.25
        return 1
}

t_load=$(farm_now_ms)
for ((i = 1; i <= HOSTS; i++)); do
        farm_exec "node$i" python3 "$LOAD" run --node "node$i" --devices "$PER_HOST" --threads "$THREADS" \
                --deadline 100 --out "$FARM_DIR/load-node$i.json" >"$FARM_DIR/logs/licload-node$i.log" 2>&1 &
        DRIVERS+=($!)
done

if farm_wait_until 60 lic1_lending "$KILL_AT" "$KILL_LENT"; then
        farm_pass "load on $HOSTS hosts: lic1 issued $LIC1_ISSUED CALs, $LIC1_LENT of them lent to lic2, after $((($(farm_now_ms) - t_load) / 1000)) s"
else
        farm_fail "load on $HOSTS hosts: lic1 issued $KILL_AT CALs and lent $KILL_LENT" \
                "only $LIC1_ISSUED and $LIC1_LENT within 60 s" "$(farm_log agent-lic1)" "$FARM_DIR/logs/licload-node1.log"
        exit 1
fi
tsctl_lic lic1 issued --json >"$FARM_DIR/lic1-before-kill.json"
pid=$(farm_pid agent-lic1)
before=$(failovers)
kill -KILL "$pid"
t_kill=$(farm_now_ms)
lic1_dead() { ! farm_alive "$pid"; }
farm_wait_until 5 lic1_dead
rm -f "$FARM_DIR/pids/agent-lic1" # farm_down must not signal a reused pid
# Down until the hosts noticed (a bounded wait: the load may be near its end).
farm_wait_until 10 failed_over $((before + FAILOVERS)) || true
FAILED_OVER=$(($(failovers) - before))
if lic_start lic1 agent-lic1-restarted; then
        t_back=$(farm_now_ms)
        OUTAGE=$((t_back - t_kill))
        farm_pass "lic1 killed (SIGKILL) mid-run, down for $OUTAGE ms ($FAILED_OVER host requests failed over), restarted on its database"
else
        farm_fail "lic1 restarted after SIGKILL" "not ready" "$(farm_log agent-lic1-restarted)"
        exit 1
fi
if drivers_running; then
        farm_pass "the hosts' drivers went on through lic1's outage"
else
        farm_fail "the hosts' drivers went on through lic1's outage" "all had finished: the kill came too late"
fi
for n in lic1 lic2; do
        p=$(tsctl_lic "$n" packs --json)
        tsagent_expect "right after the restart, $n: available + issued = count for every pack" "$p" \
                '[.packs[] | .available + .issued == .count] | all'
done
tsctl_lic lic1 issued --json >"$FARM_DIR/lic1-after-restart.json"
lost=$(jq -n --slurpfile a "$FARM_DIR/lic1-before-kill.json" --slurpfile b "$FARM_DIR/lic1-after-restart.json" '
        ($b[0].tokens | map({key: .token_id, value: .}) | from_entries) as $m
        | [$a[0].tokens[] | select($m[.token_id] == null or $m[.token_id].hardware_id != .hardware_id
                or $m[.token_id].kind != .kind or (.state == "active" and $m[.token_id].state != "active"))
           | .token_id]')
tsagent_expect "nothing lic1 committed before the kill was lost ($(jq '.tokens | length' "$FARM_DIR/lic1-before-kill.json") records)" \
        "$lost" 'length == 0'

if farm_wait_until 110 drivers_done; then
        farm_pass "the $HOSTS drivers finished $DEVICES devices in $((($(farm_now_ms) - t_load) / 1000)) s"
else
        farm_fail "the $HOSTS drivers finished" "not within 110 s of the restart" "$FARM_DIR/logs/licload-node1.log"
        exit 1
fi
bad=0
for ((i = 1; i <= HOSTS; i++)); do
        rc=0
        wait "${DRIVERS[i - 1]}" || rc=$?
        if ((rc != 0)) || [[ ! -s $FARM_DIR/load-node$i.json ]]; then
                bad=1
                farm_fail "driver on node$i" "exit $rc" "$FARM_DIR/logs/licload-node$i.log"
        fi
done
((bad == 0)) || exit 1
t_loaded=$(farm_now_ms)

# ---- the devices reconnect --------------------------------------------------------------
# Both servers' records and packs against the drivers' files.
# analyse TAG [SUFFIX]: the drivers' load-nodeN[SUFFIX].json files; with a
# SUFFIX, the retries of load-nodeN.json count too.
analyse() {
        local n files=() more=()
        for n in lic1 lic2; do
                tsctl_lic "$n" issued --json >"$FARM_DIR/$n-issued-$1.json"
                tsctl_lic "$n" packs --json >"$FARM_DIR/$n-packs-$1.json"
        done
        for ((i = 1; i <= HOSTS; i++)); do
                files+=("$FARM_DIR/load-node$i${2:-}.json")
                [[ -z ${2:-} ]] || more+=("$FARM_DIR/load-node$i.json")
        done
        python3 "$LOAD" analyse --devices "${files[@]}" --counts "${more[@]}" \
                --issued "lic1=$FARM_DIR/lic1-issued-$1.json" "lic2=$FARM_DIR/lic2-issued-$1.json" \
                --packs "lic1=$FARM_DIR/lic1-packs-$1.json" "lic2=$FARM_DIR/lic2-packs-$1.json"
}
loaded=$(analyse loaded)
echo "$loaded" >"$FARM_DIR/facts-loaded.json"
STRANDED=$(jq '.stranded_cals | length' <<<"$loaded")
echo "  after the load: $(jq -c '{active_cals, available, held_cals, held_temporary, held_borrowed, stranded: (.stranded_cals | length), drivers}' <<<"$loaded")"
if ((STRANDED > 0)); then
        echo "  CALs issued whose answer did not reach their device (yet): $(jq -c '.stranded_cals[:10]' <<<"$loaded")"
fi

# The devices holding temporary tokens connect again, as their next session
# would, once the servers and hosts know each other again after the restart.
if farm_wait_until 20 lic_sees_peer lic2 lic1 && farm_wait_until 20 lic_sees_peer lic1 lic2 &&
        farm_wait_until 20 all_hosts_see_both; then
        farm_pass "after the restart lic1 and lic2 are reachable peers again, and every host reaches both"
else
        farm_fail "after the restart lic1 and lic2 are reachable peers again, and every host reaches both" \
                "not within 20 s" "$(farm_log agent-lic2)"
fi
DRIVERS=()
for ((i = 1; i <= HOSTS; i++)); do
        farm_exec "node$i" python3 "$LOAD" reconnect --in "$FARM_DIR/load-node$i.json" --threads "$THREADS" \
                --deadline 30 --out "$FARM_DIR/load-node$i-final.json" >>"$FARM_DIR/logs/licload-node$i.log" 2>&1 &
        DRIVERS+=($!)
done
if farm_wait_until 40 drivers_done; then
        :
else
        farm_fail "the devices holding temporary tokens reconnected" "not within 40 s"
        exit 1
fi
for ((i = 1; i <= HOSTS; i++)); do
        rc=0
        wait "${DRIVERS[i - 1]}" || rc=$?
        ((rc == 0)) || farm_fail "reconnect driver on node$i" "exit $rc" "$FARM_DIR/logs/licload-node$i.log"
done
RECONNECTED=$(cat "$FARM_DIR"/load-node*-final.json | jq -s 'map(.counts.reconnected // 0) | add')
RECONNECT_CALS=$(cat "$FARM_DIR"/load-node*-final.json | jq -s 'map(.counts["reconnect-cal"] // 0) | add')
farm_pass "$RECONNECTED devices holding temporary tokens reconnected; $RECONNECT_CALS got a CAL then"

# ---- checks -----------------------------------------------------------------------------
f=$(analyse final -final)
echo "$f" >"$FARM_DIR/facts-final.json"
if ((${#VIOLATIONS[@]} == 0)); then
        farm_pass "(a) available + issued = count at every pack of both servers in all $SAMPLES samples during the run"
else
        farm_fail "(a) available + issued = count in every sample during the run" \
                "${#VIOLATIONS[@]} of $SAMPLES broken: ${VIOLATIONS[*]:0:3}"
fi
tsagent_expect "(a) at the end: available + issued = count for every pack ($(jq -c '.packs' <<<"$f"))" "$f" \
        '.invariant_broken == [] and .issued_per_packs == .active_cals'
tsagent_expect "(b) no token id issued twice, within or across the servers ($(jq .records <<<"$f") records)" "$f" \
        '.duplicate_token_ids == []'
tsagent_expect "(c) no device has more than one active CAL across both servers" "$f" \
        '.devices_with_several_cals == {}'
tsagent_expect "(d) all $INSTALLED CALs issued, no more: $(jq -c .active_cals_by_server <<<"$f"), pools empty" "$f" \
        ".active_cals == $INSTALLED and .installed == $INSTALLED and .available == 0"
tsagent_expect "(d) every active CAL is held by its device (none stranded; $STRANDED were before the reconnection)" "$f" \
        ".stranded_cals == [] and .held_cals == $INSTALLED and .held_cals_not_matching_records == []"
tsagent_expect "(e) the $INSTALLED CALs the devices hold are distinct" "$f" ".held_cals_distinct == $INSTALLED"

# (e, f) offline verification of a sample, as a terminal server would.
verify_sample() { # KIND: prints the failures
        jq -r --arg k "$1" '.devices[] | select(.kind == $k) | "\(.hardware_id) \(.token_id) \(.token)"' \
                "$FARM_DIR"/load-node*-final.json | shuf -n "$SAMPLE" --random-source=<(yes) |
                while read -r hw id tok; do
                        v=$("$TSCTL" license verify "$tok" --trust "$trust" --hardware-id "$hw" --json || true)
                        jq -e --arg k "$1" --arg id "$id" \
                                '.verdict == "ok" and .token.kind == $k and .token.token_id == $id' \
                                <<<"$v" >/dev/null || echo "$id: $v"
                done
}
out=$(verify_sample device-cal)
if [[ -z $out ]]; then
        farm_pass "(e) $SAMPLE sampled CALs verify offline against the farm's trusted keys"
else
        farm_fail "(e) sampled CALs verify offline" "$(head -3 <<<"$out")"
fi
tsagent_expect "(f) every device without a CAL holds its own live, validated temporary token" "$f" \
        '.temporaries_not_valid == [] and .held_nothing == []'
out=$(verify_sample temporary)
if [[ -z $out ]]; then
        farm_pass "(f) $SAMPLE sampled temporary tokens verify offline"
else
        farm_fail "(f) sampled temporary tokens verify offline" "$(head -3 <<<"$out")"
fi
tsagent_expect "(g) the drivers' counts add up: $DEVICES devices = CALs + temporary-only, none given up" "$f" \
        ".devices == $DEVICES and .held_cals + .held_temporary == $DEVICES and .gave_up == [] and
         .drivers.devices == $DEVICES and .drivers.cal + .drivers.temporary == $DEVICES and .drivers.cal == .held_cals and
         .drivers.borrowed == .held_borrowed"
tsagent_expect "(g) the drivers tried again only when no license server answered ($(jq -c .retry_reasons <<<"$f"))" "$f" \
        '[.retry_reasons | keys[] | select(test(":(license-server-unreachable|grace-period)$") | not)] == []'
tsagent_expect "(g) borrowed CALs held = CALs recorded as lent ($(jq .held_borrowed <<<"$f"))" "$f" \
        '.held_borrowed == .lent'
if grep -qiE "AddressSanitizer|runtime error|LeakSanitizer" "$FARM_DIR"/logs/agent-*.log; then
        farm_fail "(h) agents logged no sanitizer reports" \
                "$(grep -hiE -m3 "AddressSanitizer|runtime error|LeakSanitizer" "$FARM_DIR"/logs/agent-*.log)"
else
        farm_pass "(h) agents logged no sanitizer reports"
fi

t_end=$(farm_now_ms)
retries=$(jq '.drivers.retries' <<<"$loaded")
printf 'SUMMARY: devices=%d cals=%d (lic1 %d, lic2 %d) borrowed=%d temporary-only=%d stranded-before-reconnect=%d reconnect-cals=%d retries=%d failovers=%d outage=%dms load=%ds duration=%ds\n' \
        "$DEVICES" "$(jq .held_cals <<<"$f")" "$(jq .active_cals_by_server.lic1 <<<"$f")" \
        "$(jq .active_cals_by_server.lic2 <<<"$f")" "$(jq .held_borrowed <<<"$f")" \
        "$(jq .held_temporary <<<"$f")" "$STRANDED" "$RECONNECT_CALS" "$retries" "$FAILED_OVER" "$OUTAGE" \
        $(((t_loaded - t_load) / 1000)) $(((t_end - t_start) / 1000))
((FARM_FAILED == 0))
