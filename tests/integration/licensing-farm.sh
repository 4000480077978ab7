#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Per-device licensing end to end across real processes (DESIGN 3): two
# terminal-server hosts (node1, node2: tsagent host role with its licensing
# client) and two license servers (lic1 at site east with a pack of 2, lic2
# at site west with a pack of 1: tsagent licensing role, announcing
# themselves by multicast) in network namespaces. The session host's side
# is played with curl on each host's local API. Checked:
#   1. discovery: node1 finds both servers by multicast, its own site first;
#   2. an unknown device gets a temporary token (90 days, verifies offline);
#   3. a logon validates it at its issuer;
#   4. the next connection upgrades it to a Device CAL, recorded at lic1
#      with device name, user name and date; the grace period ends;
#   5. a valid CAL is kept (no server call); check says so;
#   6. lic1's pool empty: a CAL borrowed through lic1 from lic2;
#   7. no inventory anywhere: the device keeps its temporary token;
#   8. forged, altered, other-device tokens are refused and nothing is
#      issued; malformed requests get 400 and change nothing;
#   9. servers unreachable: node2 rediscovers, then admits inside its grace
#      period; a server back: a token again;
#  10. node2 restarted after its grace period ran out (persisted start, a
#      shorter period): a device without a token is refused with
#      grace-expired while no server answers, and licensed when one does;
#  11. tsctl license diagnose on both hosts: servers, reachability, trust,
#      inventory and the grace state, with reason codes.
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

tsagent_require licensing-farm ip nsenter unshare python3 jq curl xxd -- tsagent tsctl

DAY_US=$((86400 * 1000000))

trap farm_down EXIT
farm_up 2 0
farm_add_node lic1 "$FARM_SUBNET.61"
farm_add_node lic2 "$FARM_SUBNET.62"
pki=$FARM_DIR/pki
trust=$FARM_DIR/trust
mkdir -m 700 "$pki"
mkdir "$trust"
"$TSCTL" pki init --dir "$pki" --name licensing-farm --days 2 >/dev/null
for n in node1 node2 lic1 lic2; do
        "$TSCTL" pki issue --dir "$pki" "$n" --ip "$(farm_addr "$n")" --days 1 >/dev/null
done

lic_conf lic1 east
lic_conf lic2 west
for n in lic1 lic2; do
        if lic_start "$n" "agent-$n"; then
                farm_pass "license server $n serves"
        else
                farm_fail "license server $n serves" "not ready" "$(farm_log "agent-$n")"
                exit 1
        fi
        cp "$FARM_DIR/$n-state/license-signing.pub" "$trust/$n.pem"
done
tsctl_lic lic1 install-pack east-2026 --version 2026 --count 2 >/dev/null
tsctl_lic lic2 install-pack west-2026 --version 2026 --count 1 >/dev/null

host_conf node1 east
host_conf node2 west
for n in node1 node2; do
        if tsagent_start "$n" "agent-$n"; then
                farm_pass "host agent on $n started with its licensing client"
        else
                farm_fail "host agent on $n started with its licensing client" "no 'Host role started'" \
                        "$(farm_log "agent-$n")"
                exit 1
        fi
done

verify() { # TOKEN HWID
        "$TSCTL" license verify "$1" --trust "$trust" --hardware-id "$2" --json || true
}
# A report of both servers that changes whenever anything is issued.
reports() {
        tsctl_lic lic1 report --json | jq -S 'del(.generated, .generated_usec)'
        tsctl_lic lic2 report --json | jq -S 'del(.generated, .generated_usec)'
}

# ---- 1. discovery -------------------------------------------------------------------
both_found() {
        local d
        d=$(host_api node1 GET /v1/license/diagnose) || return 1
        jq -e '[.servers[] | select(.reachable and .trusted)] | length == 2' <<<"$d" >/dev/null
}
if farm_wait_until 10 both_found; then
        diag=$(host_api node1 GET /v1/license/diagnose)
        tsagent_expect "node1 discovered both license servers by multicast, its own site (east) first" "$diag" \
                '(.servers | map(.name)) == ["lic1", "lic2"] and (.servers[0].origins | index("multicast")) != null'
else
        farm_fail "node1 discovered both license servers by multicast" "not within 10 s" \
                "$(host_api node1 GET /v1/license/diagnose)"
        exit 1
fi

# ---- 2-4. temporary, validation, Device CAL ----------------------------------------------
d1=$(hwid)
a=$(obtain node1 "$d1" pc-alice alice)
tsagent_expect "an unknown device is admitted with a new temporary token from lic1" "$a" \
        '.decision == "admit" and .license == "new-license" and .kind == "temporary" and .server == "lic1"'
t1=$(jq -r .token <<<"$a")
v=$(verify "$t1" "$d1")
tsagent_expect "the temporary token verifies offline and lasts 90 days" "$v" \
        ".verdict == \"ok\" and .token.kind == \"temporary\" and (.token.expires_usec - .token.issued_usec) == (90 * $DAY_US)"
g=$(jq -c .grace <<<"$a")
tsagent_expect "the first client connection started node1's grace period (120 days)" "$g" \
        ".state == \"active\" and (.deadline_usec - .started_usec) == (120 * $DAY_US)"
c=$(check node1 "$d1" "$t1")
tsagent_expect "check: a valid temporary token, the next step is a Device CAL" "$c" \
        '.presented == "temporary" and .valid and .action == "request-cal"'

a=$(obtain node1 "$d1" pc-alice alice "$t1")
tsagent_expect "before a logon validated it, the next connection keeps the temporary token" "$a" \
        '.decision == "admit" and .license == "valid" and .token == null and .reason_code == "not-validated"'

l=$(logon node1 "$d1" pc-alice alice "$t1")
tsagent_expect "a logon validates the temporary token at lic1" "$l" '.validated and .server == "lic1"'
rec=$(tsctl_lic lic1 issued --json)
tsagent_expect "lic1 records the temporary token as temporary-validated" "$rec" \
        '[.tokens[] | select(.device_name == "pc-alice" and .state == "temporary-validated")] | length == 1'

a=$(obtain node1 "$d1" pc-alice alice "$t1")
tsagent_expect "the next connection upgrades the device to a Device CAL from lic1" "$a" \
        '.decision == "admit" and .license == "upgrade" and .kind == "device-cal" and .reason_code == "cal-issued"'
cal1=$(jq -r .token <<<"$a")
v=$(verify "$cal1" "$d1")
cal_days=$(jq '(.token.expires_usec - .token.issued_usec) / 86400000000' <<<"$v")
tsagent_expect "the Device CAL verifies offline and expires within 52-89 days ($cal_days)" "$v" \
        ".verdict == \"ok\" and .token.kind == \"device-cal\" and ($cal_days >= 52) and ($cal_days <= 89)"
rec=$(tsctl_lic lic1 issued --json)
today=$(date -u +%Y-%m-%d)
tsagent_expect "lic1 records the CAL with device name, user name and date" "$rec" \
        "[.tokens[] | select(.kind == \"device-cal\" and .state == \"active\" and .device_name == \"pc-alice\" and .user_name == \"alice\" and (.issued | startswith(\"$today\")))] | length == 1"
tsagent_expect "the first Device CAL ended node1's grace period" "$a" '.grace.state == "ended"'

# ---- 5. a valid CAL is kept ----------------------------------------------------------
a=$(obtain node1 "$d1" pc-alice alice "$cal1")
tsagent_expect "a device with a valid Device CAL is admitted and keeps it" "$a" \
        '.decision == "admit" and .license == "valid" and .token == null and .reason_code == "cal-valid"'
c=$(check node1 "$d1" "$cal1")
tsagent_expect "check: a valid Device CAL, nothing to do" "$c" '.presented == "device-cal" and .valid and .action == "none"'

# ---- 6-7. borrowing, then no inventory ----------------------------------------------------
# full_cal NODE HWID DEVICE USER: temporary, logon, upgrade; prints the last answer.
full_cal() {
        local a t
        a=$(obtain "$1" "$2" "$3" "$4")
        t=$(jq -r .token <<<"$a")
        logon "$1" "$2" "$3" "$4" "$t" >/dev/null
        obtain "$1" "$2" "$3" "$4" "$t"
}
d2=$(hwid)
a=$(full_cal node1 "$d2" pc-bob bob)
tsagent_expect "a second device takes lic1's last CAL" "$a" '.license == "upgrade" and .lender == null'
lic_peers() { curl -sS --max-time 5 --unix-socket "$(lsock "$1")" http://localhost/v1/peers; }
lic1_sees_lic2() {
        lic_peers lic1 | jq -e '[.peers[] | select(.name == "lic2" and .reachable)] | length == 1' >/dev/null
}
if farm_wait_until 10 lic1_sees_lic2; then
        farm_pass "lic1 knows lic2 as a reachable peer (multicast) and its inventory"
else
        farm_fail "lic1 knows lic2 as a reachable peer" "$(lic_peers lic1)"
fi
d3=$(hwid)
a=$(full_cal node1 "$d3" pc-carol carol)
tsagent_expect "lic1's pool empty: the CAL is borrowed through lic1 from lic2" "$a" \
        '.license == "upgrade" and .kind == "device-cal" and .lender == "lic2" and .server == "lic1"'
v=$(verify "$(jq -r .token <<<"$a")" "$d3")
lic2_key=$(host_api node1 GET /v1/license/diagnose | jq -r '.servers[] | select(.name == "lic2") | .key_id')
tsagent_expect "the borrowed CAL is signed by lic2" "$v" ".verdict == \"ok\" and .token.issuer_key_id == \"$lic2_key\""
d4=$(hwid)
a=$(full_cal node1 "$d4" pc-dave dave)
tsagent_expect "no inventory anywhere: the device keeps its temporary token" "$a" \
        '.decision == "admit" and .license == "valid" and .kind == "temporary" and .reason_code == "no-inventory"'
for n in lic1 lic2; do
        p=$(tsctl_lic "$n" packs --json)
        tsagent_expect "$n: available + issued = installed" "$p" \
                '[.packs[] | .available + .issued == .count] | all'
done

# ---- 8. security: forged, altered, other-device; malformed -----------------------------
before=$(reports)
sig=${cal1##*.}
forged="${cal1%.*}.${sig:0:10}$([[ ${sig:10:1} == A ]] && echo B || echo A)${sig:11}"
a=$(obtain node1 "$d1" pc-alice alice "$forged")
tsagent_expect "a token with an altered signature is refused (bad-signature)" "$a" \
        '.decision == "refuse" and .reason_code == "bad-signature" and .token == null'
body=${cal1#tsl1.}
body=${body%%.*}
# Character 120 of the body's base64 is in its validity dates.
altered="tsl1.${body:0:120}$([[ ${body:120:1} == A ]] && echo B || echo A)${body:121}.$sig"
a=$(obtain node1 "$d1" pc-alice alice "$altered")
tsagent_expect "a token with an altered expiry is refused (bad-signature)" "$a" \
        '.decision == "refuse" and .reason_code == "bad-signature"'
a=$(obtain node1 "$d2" pc-bob bob "$cal1")
tsagent_expect "alice's CAL presented by another device is refused (other-device)" "$a" \
        '.decision == "refuse" and .reason_code == "other-device"'
a=$(obtain node1 "$d1" pc-alice alice "garbage")
tsagent_expect "a malformed token is refused (malformed)" "$a" '.decision == "refuse" and .reason_code == "malformed"'
bad=0
for b in 'not json' '[]' '{"hardware_id":"zz","device_name":"x"}' '{"hardware_id":"00"}' \
        "{\"hardware_id\":\"$d1\"}" "{\"hardware_id\":\"$d1\",\"device_name\":\"\"}" \
        "{\"hardware_id\":\"$d1\",\"device_name\":\"$(printf 'x%.0s' {1..300})\"}" \
        "{\"hardware_id\":\"$d1\",\"device_name\":7}"; do
        s=$(host_status node1 POST /v1/license/obtain "$b")
        [[ $s == 400 ]] || {
                bad=1
                echo "  $b -> $s"
        }
done
((bad == 0)) && farm_pass "malformed obtain requests are refused with 400" ||
        farm_fail "malformed obtain requests are refused with 400" "see above"
after=$(reports)
if [[ $before == "$after" ]]; then
        farm_pass "refused tokens and malformed requests issued nothing (both reports unchanged)"
else
        farm_fail "refused tokens and malformed requests issued nothing" "$(diff <(echo "$before") <(echo "$after") | head)"
fi

# ---- 9. unreachable: rediscovery, then grace ---------------------------------------------
d5=$(hwid)
kill -STOP "$(farm_pid agent-lic1)" "$(farm_pid agent-lic2)"
a=$(obtain node2 "$d5" pc-erin erin)
tsagent_expect "no license server answers: node2 admits a new device inside its grace period" "$a" \
        '.decision == "admit" and .license == "grace" and .token == null and .reason_code == "grace-period" and .grace.state == "active"'
if grep -q "rediscovering" "$(farm_log agent-node2)"; then
        farm_pass "node2 rediscovered before falling back on the grace period"
else
        farm_fail "node2 rediscovered before falling back on the grace period" "no 'rediscovering' in its log"
fi
kill -CONT "$(farm_pid agent-lic1)" "$(farm_pid agent-lic2)"
a=$(obtain node2 "$d5" pc-erin erin)
tsagent_expect "a license server back: the device gets its temporary token" "$a" \
        '.decision == "admit" and .license == "new-license" and .kind == "temporary"'

# ---- 10. after the grace period ---------------------------------------------------------
farm_stop agent-node2
# The period is counted from the start persisted in node2's state file; a
# restart with a period shorter than the time since node2's first client
# connection is that period having run out, without waiting 120 days (the
# 120-day arithmetic is test_licgrace's, on the injectable clock). A whole
# process under faketime(1) does not work here: libfaketime shifts the
# agent's timerfd deadlines and its local API stops answering.
sed -i 's/^license-grace-period = .*//' "$FARM_DIR/node2.conf"
echo 'license-grace-period = 1s' >>"$FARM_DIR/node2.conf"
farm_spawn node2 agent-node2-late env TSFARM_LOG_TARGET=stderr "$TSAGENT_BUILD/tsagent" \
        --config "$FARM_DIR/node2.conf"
node2_found_both() {
        host_api node2 GET /v1/license/diagnose 2>/dev/null | jq -e '.servers | length == 2' >/dev/null
}
if farm_wait_until 15 tsagent_ready agent-node2-late && farm_wait_until 10 node2_found_both; then
        farm_pass "node2 restarted after its grace period ran out, found both servers again"
else
        farm_fail "node2 restarted after its grace period ran out" "not ready" "$(farm_log agent-node2-late)"
        exit 1
fi
kill -STOP "$(farm_pid agent-lic1)" "$(farm_pid agent-lic2)"
d6=$(hwid)
a=$(obtain node2 "$d6" pc-frank frank)
tsagent_expect "after the grace period a device without a token is refused with a clear reason" "$a" \
        '.decision == "refuse" and .reason_code == "grace-expired" and (.reason | test("no license server answered.*grace period expired")) and .grace.state == "expired"'
diag=$(host_api node2 GET /v1/license/diagnose)
tsagent_expect "diagnose on node2: both servers unreachable, grace expired, reason codes" "$diag" \
        '([.servers[] | select(.reachable | not) | .problems[0].code] | all(. == "unreachable")) and ([.problems[].code] | index("grace-expired") != null)'
kill -CONT "$(farm_pid agent-lic1)" "$(farm_pid agent-lic2)"
a=$(obtain node2 "$d6" pc-frank frank)
tsagent_expect "after the grace period a license server still licenses new devices" "$a" \
        '.decision == "admit" and .license == "new-license"'

# ---- 11. tsctl license diagnose ------------------------------------------------------------
out=$(farm_exec node1 "$TSCTL" license diagnose 2>&1) && rc=0 || rc=$?
if [[ $rc == 0 ]] && grep -q lic1 <<<"$out" && grep -q lic2 <<<"$out" && grep -qi 'no-inventory' <<<"$out" &&
        grep -qi 'grace' <<<"$out"; then
        farm_pass "tsctl license diagnose names the servers, their inventory problem and the grace state"
else
        farm_fail "tsctl license diagnose names the servers, their inventory problem and the grace state" \
                "exit $rc: $out"
fi
rm -f "$trust/lic2.pem"
farm_exec node1 kill -HUP "$(farm_pid agent-node1)" || kill -HUP "$(farm_pid agent-node1)"
untrusted() {
        host_api node1 GET /v1/license/diagnose |
                jq -e '.servers[] | select(.name == "lic2") | .problems | map(.code) | index("untrusted") != null' >/dev/null
}
if farm_wait_until 10 untrusted; then
        farm_pass "a server whose key is no longer trusted is reported untrusted (after SIGHUP)"
else
        farm_fail "a server whose key is no longer trusted is reported untrusted" "$(host_api node1 GET /v1/license/diagnose)"
fi

if grep -qiE "AddressSanitizer|runtime error|LeakSanitizer" "$FARM_DIR"/logs/agent-*.log; then
        farm_fail "agents logged no sanitizer reports" "see logs"
fi
((FARM_FAILED == 0))
