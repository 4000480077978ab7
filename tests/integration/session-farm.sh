#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# The whole farm end to end with real processes in namespaces (issue 6),
# set up by lib/sessionfarm.sh: a directory, two license servers (lic1: 2
# CALs, lic2: 1), three terminal-server nodes each with tsagent (host role:
# directory, licensing, steering) and tshost (PAM logon, persistent shells),
# and a client running tsclient. One user, device pc-a:
#   1. the first connection gets a temporary token, stored in the device
#      store (tsctl license verify: temporary, this device's), validated
#      by the logon;
#   2. the second connection upgrades it to a Device CAL (status upgrade),
#      reattached to the same shell;
#   3. a pulled network link (the client's switch port down) leaves the
#      session disconnected in the directory once tshost finds the client
#      silent (--keepalive 1s --peer-timeout 3s here);
#   4. reconnecting through another node with the cookie is steered to
#      the session's node: same shell pid, its history;
#   5. reconnecting through the third node without a cookie gets a REDIRECT
#      (followed): same shell pid, its history; then LOGOFF ends it: the
#      directory has no session of the user and the shell is gone;
#   6. a wrong password is refused (exit status 4): nothing issued,
#      validated or started, for a licensed device and for a new one;
#   7. pc-a's store copied to another machine (another machine id): its
#      Device CAL is not honoured there (new-license, token-other-device,
#      a temporary token of its own, no CAL issued); pc-a keeps its CAL;
#   8. logons each followed at once by a logoff: tshost's reports reach
#      the directory in order (none refused, no session left behind);
#   9. a report the directory refuses (a reconnect of a session it does
#      not know) is dropped: the node does not register again in a loop,
#      and its next report is delivered.
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

sf_require session-farm

trap sf_down EXIT
t0=$(farm_now_ms)
if sf_up; then
        farm_pass "the whole farm is up: directory, lic1 and lic2, node1..3 with tsagent and tshost ($(($(farm_now_ms) - t0)) ms)"
else
        farm_fail "the whole farm is up" "sf_up failed (above)"
        exit 1
fi

U=$(sf_user 1)
scripts=$SF_DIR/scripts
mkdir "$scripts"

# ---- helpers -------------------------------------------------------------------------

# The JSON summary in tsclient's output (its last line; the terminal's
# output comes before it).
json_of() {
        grep -o '{"result".*}' <<<"$1" | tail -n 1
}
# A connection's tags: the script prints "P<n+1>P <pid> Q<n+2>Q" and, when
# the history holds the marker, "H<n+3>H"; the terminal echoes the typed
# "$((n+1))" forms, never these numbers, and every connection has its own
# n (the scrollback replays earlier output on reattach).
new_tag() {
        echo $((RANDOM * 32768 + RANDOM))
}
MARK=sfmark$(new_tag)
# shellcheck disable=SC2016 # $$ and $((...)) are for the session's shell
script_lines() { # TAG [history]: the pid line, optionally the history check first
        if [[ ${2:-} == history ]]; then
                printf 'send history | grep -q "%s" && echo H$((%d+3))H\n' "${MARK:0:6}[${MARK:6:1}]${MARK:7}" "$1"
        fi
        printf 'send echo P$((%d+1))P $$ Q$((%d+2))Q\nexpect Q%dQ\n' "$1" "$1" $(($1 + 2))
}
pid_in() { # OUTPUT TAG
        grep -aoE "P$(($2 + 1))P [0-9]+ Q$(($2 + 2))Q" <<<"$1" | tail -n 1 | awk '{ print $2 }'
}
history_in() { # OUTPUT TAG
        grep -aq "H$(($2 + 3))H" <<<"$1"
}
# Runs a client connection; sets OUT (stdout), JSON and RC.
connect() { # DEVICE ARGS...
        RC=0
        OUT=$(sf_client "$@" --json 2>>"$SF_DIR/client.err") || RC=$?
        JSON=$(json_of "$OUT")
}
dir_wait() { # NAME USER "NODE STATE" TIMEOUT
        local t
        t=$(farm_now_ms)
        if farm_wait_until "$4" sf_directory_is "$2" "$3"; then
                farm_pass "$1 ($(($(farm_now_ms) - t)) ms)"
        else
                farm_fail "$1" "the directory says '$(sf_directory_session_of "$2" | tr '\n' ';')', expected '$3'" \
                        "$(farm_log directory)"
        fi
}
count_in_logs() { # ERE: matching lines in every tshost log
        cat "$FARM_DIR"/logs/tshost-node*.log | grep -cE "$1" || true
}

# ---- 1. the first connection: a temporary token ------------------------------------
tag=$(new_tag)
{
        printf 'send : %s\n' "$MARK"
        script_lines "$tag"
} >"$scripts/1"
connect pc-a --server "$(farm_addr node1)" --user "$U" --script "$scripts/1"
tsagent_expect "1: the first connection logs on in a new session: new-license, a temporary token stored" "$JSON" \
        '.result == "ok" and .reattached == false and .license.status == "new-license" and
         .license.kind == "temporary" and .license.stored' "$SF_DIR/client.err"
home=$(jq -r '.server // empty' <<<"$JSON")
pid=$(pid_in "$OUT" "$tag")
if [[ -n $home && -n $pid ]] && farm_alive "$pid"; then
        farm_pass "1: the session lives on $home, shell pid $pid"
else
        farm_fail "1: the session lives on a node, with a shell" "server '$home', pid '$pid': $OUT"
        exit 1
fi
others=()
for n in "${SF_NODES[@]}"; do
        [[ $n != "$home" ]] && others+=("$n")
done
hwid=$(sf_device_hwid pc-a)
tok1=$(sf_device_token pc-a)
v=$(sf_license_verify "$tok1" "$hwid")
tsagent_expect "1: the device store holds a temporary token, genuine and this device's (tsctl license verify)" "$v" \
        '.verdict == "ok" and .token.kind == "temporary"'
issued=$(tsctl_lic lic1 issued --json)
tsagent_expect "1: the logon validated it at lic1 (temporary-validated)" "$issued" \
        '[.tokens[] | select(.device_name == "pc-a" and .kind == "temporary" and .state == "temporary-validated")] | length == 1'
dir_wait "1: the directory has the session disconnected on $home after the client's DISCONNECT" "$U" "$home disconnected" 10

# ---- 2. the second connection: a Device CAL -----------------------------------------------
tag=$(new_tag)
script_lines "$tag" >"$scripts/2"
connect pc-a --server "$(farm_addr node1)" --user "$U" --script "$scripts/2"
tsagent_expect "2: the second connection upgrades the device to a Device CAL, stored" "$JSON" \
        '.result == "ok" and .license.status == "upgrade" and .license.kind == "device-cal" and .license.stored'
tsagent_expect "2: ... and reattaches the session on $home" "$JSON" ".reattached and .server == \"$home\""
p=$(pid_in "$OUT" "$tag")
if [[ $p == "$pid" ]]; then
        farm_pass "2: the same shell (pid $pid)"
else
        farm_fail "2: the same shell" "pid '$p', expected $pid"
fi
tok2=$(sf_device_token pc-a)
v=$(sf_license_verify "$tok2" "$hwid")
tsagent_expect "2: the device store now holds a Device CAL for this device (tsctl license verify)" "$v" \
        '.verdict == "ok" and .token.kind == "device-cal"'
issued=$(tsctl_lic lic1 issued --json)
tsagent_expect "2: lic1 records the Device CAL with device pc-a and user $U" "$issued" \
        "[.tokens[] | select(.kind == \"device-cal\" and .state == \"active\" and .device_name == \"pc-a\" and .user_name == \"$U\")] | length == 1"
dir_wait "2: disconnected on $home again" "$U" "$home disconnected" 10

# ---- 3. a pulled network link -----------------------------------------------------------------
tag=$(new_tag)
{
        script_lines "$tag"
        echo "sleep 600s"
} >"$scripts/3"
attached() { grep -aq "Q$((tag + 2))Q" "$(farm_log client-held)"; }
sf_client_spawn client-held pc-a --server "$(farm_addr node1)" --user "$U" --script "$scripts/3"
if farm_wait_until 15 attached; then
        p=$(pid_in "$(cat "$(farm_log client-held)")" "$tag")
        if [[ $p == "$pid" ]]; then
                farm_pass "3: a third connection is attached to the same shell"
        else
                farm_fail "3: a third connection is attached to the same shell" "pid '$p', expected $pid"
        fi
else
        farm_fail "3: a third connection is attached to the same shell" "no pid line" "$(farm_log client-held)"
fi
dir_wait "3: the directory has the session active on $home" "$U" "$home active" 10
silent_before=$(count_in_logs "peer-silent")
farm_link_down "$SF_CLIENT"
dir_wait "3: the client's link pulled: the directory has the session disconnected (tshost: peer silent ${SF_PEER_TIMEOUT})" \
        "$U" "$home disconnected" 15
if (($(count_in_logs "peer-silent") > silent_before)); then
        farm_pass "3: tshost on $home disconnected the silent client (peer-silent)"
else
        farm_fail "3: tshost on $home disconnected the silent client (peer-silent)" "no such line" "$(farm_log "tshost-$home")"
fi
if farm_alive "$pid"; then
        farm_pass "3: the shell keeps running"
else
        farm_fail "3: the shell keeps running" "pid $pid is gone"
fi
farm_stop client-held 1 KILL # the client machine "crashed" too
farm_link_up "$SF_CLIENT"

# ---- 4. reconnect through another node, with the cookie ----------------------------------------
via=${others[0]}
tag=$(new_tag)
script_lines "$tag" history >"$scripts/4"
connect pc-a --server "$(farm_addr "$via")" --user "$U" --script "$scripts/4"
tsagent_expect "4: reconnecting through $via with the cookie: logged on, steered to $home, no redirect" "$JSON" \
        ".result == \"ok\" and .server == \"$home\" and .redirects == 0 and .reattached and .license.status == \"valid\""
p=$(pid_in "$OUT" "$tag")
if [[ $p == "$pid" ]] && history_in "$OUT" "$tag"; then
        farm_pass "4: the same shell (pid $pid) with its history"
else
        farm_fail "4: the same shell with its history" "pid '$p' (expected $pid), history marker $(history_in "$OUT" "$tag" && echo found || echo missing)"
fi
if grep -qE "to peer backend $(farm_addr "$home" | sed 's/\./\\./g'):3389, user $U: mstshash $U: disconnected session on $home" \
        "$(farm_log "agent-$via")"; then
        farm_pass "4: $via's gateway steered by the cookie to the disconnected session on $home"
else
        farm_fail "4: $via's gateway steered by the cookie" "no such line" "$(farm_log "agent-$via")"
fi
dir_wait "4: disconnected on $home again" "$U" "$home disconnected" 10

# ---- 5. reconnect through the third node without a cookie: REDIRECT; then logoff ---------------
via=${others[1]}
lookup_says() { sf_lookup "$via" "$U" | jq -e --arg n "$home" '.found and .node == $n and .state == "disconnected" and (.here | not)' >/dev/null; }
if farm_wait_until 10 lookup_says; then
        farm_pass "5: $via's agent knows the session disconnected on $home (what tshost asks before a redirect)"
else
        farm_fail "5: $via's agent knows the session disconnected on $home" "$(sf_lookup "$via" "$U")"
fi
redirects_before=$(count_in_logs "redirecting $U to ")
tag=$(new_tag)
{
        script_lines "$tag" history
        echo logoff
} >"$scripts/5"
connect pc-a --server "$(farm_addr "$via")" --user "$U" --no-cookie --script "$scripts/5"
tsagent_expect "5: reconnecting through $via without a cookie: a REDIRECT followed, logged on at $home" "$JSON" \
        ".result == \"ok\" and .server == \"$home\" and .redirects == 1 and .reattached"
p=$(pid_in "$OUT" "$tag")
if [[ $p == "$pid" ]] && history_in "$OUT" "$tag"; then
        farm_pass "5: the same shell (pid $pid) with its history"
else
        farm_fail "5: the same shell with its history" "pid '$p' (expected $pid), history marker $(history_in "$OUT" "$tag" && echo found || echo missing)"
fi
if (($(count_in_logs "redirecting $U to $(farm_addr "$home" | sed 's/\./\\./g'):3389") > redirects_before)); then
        farm_pass "5: a tshost the client reached first redirected it to $home"
else
        farm_fail "5: a tshost redirected the client to $home" "no such line in the tshost logs"
fi
tsagent_expect "5: the session ended with LOGOFF" "$JSON" '.end == "logoff" and .exit == 0'
dir_wait "5: after the logoff the directory has no session of $U" "$U" "" 10
if farm_wait_until 10 _farm_not_alive "$pid"; then
        farm_pass "5: the shell (pid $pid) is gone"
else
        farm_fail "5: the shell (pid $pid) is gone" "still running" "$(farm_log "tshost-$home")"
fi

# ---- 6. wrong passwords ----------------------------------------------------------------------
wrong=$SF_DIR/wrong-password
(umask 077 && echo "not-$(cat "$SF_PASSWORD_FILE")" >"$wrong")
shells_before=$(count_in_logs "starting a login shell")
before=$(sf_license_reports)
connect pc-a --server "$(farm_addr node1)" --user "$U" --password-file "$wrong" </dev/null
if ((RC == 4)); then
        farm_pass "6: a wrong password is refused: exit status 4"
else
        farm_fail "6: a wrong password is refused: exit status 4" "exit status $RC: $JSON"
fi
tsagent_expect "6: ... wrong-password, the Device CAL still valid" "$JSON" \
        '.result == "wrong-password" and .logon.status == "wrong-password" and .license.status == "valid"'
after=$(sf_license_reports)
if [[ -n $before && $before == "$after" ]]; then
        farm_pass "6: nothing issued or changed at either license server"
else
        farm_fail "6: nothing issued or changed at either license server" \
                "$(diff <(echo "$before") <(echo "$after") | head -n 10 | tr '\n' ' ')"
fi
# A new device: the license exchange comes before the credentials
# (docs/protocol.md 9), so it holds a temporary token; a wrong password
# validates nothing, so its next connection is no upgrade either.
connect pc-w --server "$(farm_addr node2)" --user "$U" --password-file "$wrong" </dev/null
rc1=$RC json1=$JSON
mid=$(sf_license_reports)
connect pc-w --server "$(farm_addr node2)" --user "$U" --password-file "$wrong" </dev/null
if ((rc1 == 4 && RC == 4)); then
        farm_pass "6: a new device with a wrong password is refused twice: exit status 4"
else
        farm_fail "6: a new device with a wrong password is refused twice" "exit statuses $rc1, $RC: $json1 $JSON"
fi
tsagent_expect "6: ... its temporary token, not validated, stays as it is (valid, no upgrade)" "$JSON" \
        '.result == "wrong-password" and .license.status == "valid" and .license.kind == "temporary"'
after=$(sf_license_reports)
issued=$(tsctl_lic lic1 issued --json)
if [[ -n $mid && $mid == "$after" ]] &&
        jq -e '[.tokens[] | select(.device_name == "pc-w")] | length == 1 and .[0].state == "temporary"' \
                <<<"$issued" >/dev/null 2>&1; then
        farm_pass "6: the second wrong password issued and validated nothing (lic1: pc-w temporary, not validated)"
else
        farm_fail "6: the second wrong password issued and validated nothing" \
                "$(diff <(echo "$mid") <(echo "$after") | head -n 10 | tr '\n' ' ') pc-w: $(jq -c '[.tokens[] | select(.device_name == "pc-w")]' <<<"$issued")"
fi
if (($(count_in_logs "starting a login shell") == shells_before)) && sf_directory_is "$U" ""; then
        farm_pass "6: no session started, none in the directory"
else
        farm_fail "6: no session started, none in the directory" \
                "shells $shells_before -> $(count_in_logs "starting a login shell"), directory '$(sf_directory_session_of "$U")'"
fi

# ---- 7. a copied device store on another machine --------------------------------------------
cp -a "$(sf_store pc-a)" "$(sf_store pc-copy)"
copy_hwid=$(SF_MACHINE=other-pc sf_device_hwid pc-copy)
before=$(sf_license_reports)
cals() { sf_license_reports | jq -s '[.[] | .tokens? // empty | .[] | select(.kind == "device-cal")] | length'; }
cals_before=$(cals)
SF_MACHINE=other-pc connect pc-copy --server "$(farm_addr node1)" --user "$U" --logoff </dev/null
tsagent_expect "7: pc-a's store copied to another machine: its Device CAL is not honoured (new-license, token-other-device)" \
        "$JSON" '.result == "ok" and .license.status == "new-license" and .license.reason == "token-other-device" and
                 .license.kind == "temporary" and .license.stored'
v=$(sf_license_verify "$tok2" "$copy_hwid")
tsagent_expect "7: ... offline verification of the copied CAL on that machine says other-device" "$v" '.verdict == "other-device"'
tokc=$(sf_device_token pc-copy)
v=$(sf_license_verify "$tokc" "$copy_hwid")
if [[ $tokc != "$tok2" ]] && jq -e '.verdict == "ok" and .token.kind == "temporary"' <<<"$v" >/dev/null; then
        farm_pass "7: the copy now holds a temporary token of its own"
else
        farm_fail "7: the copy now holds a temporary token of its own" "$v"
fi
if [[ $(cals) == "$cals_before" ]]; then
        farm_pass "7: no Device CAL was issued to the copy ($cals_before in all)"
else
        farm_fail "7: no Device CAL was issued to the copy" "$cals_before -> $(cals)"
fi
if grep -q "device pc-copy presented a token that is other-device" "$(farm_log "tshost-node1")" \
        "$(farm_log "tshost-$home")" 2>/dev/null; then
        farm_pass "7: tshost logged the other-device token"
else
        farm_fail "7: tshost logged the other-device token" "no such line" "$(farm_log tshost-node1)"
fi
connect pc-a --server "$(farm_addr node1)" --user "$U" --logoff </dev/null
tsagent_expect "7: pc-a on its own machine keeps its Device CAL (valid)" "$JSON" \
        '.result == "ok" and .license.status == "valid" and .license.stored == false'
if [[ $(sf_device_token pc-a) == "$tok2" ]]; then
        farm_pass "7: pc-a's store still holds the same CAL"
else
        farm_fail "7: pc-a's store still holds the same CAL" "it changed"
fi

# ---- 8. session reports arrive in order -----------------------------------------------------
# A logon and its logoff are reported back to back: the directory must get
# them in that order (a logoff first is refused, and the logon then leaves
# a session behind that no longer exists).
refused() { # NODE: the directory events the node's agent had refused
        host_api "$1" GET /v1/status | jq -r '.directory.refused'
}
declare -A refused_before=()
for n in "${SF_NODES[@]}"; do
        refused_before[$n]=$(refused "$n")
done
ok=0
for i in 1 2 3 4 5; do
        connect pc-a --server "$(farm_addr node1)" --user "$U" --logoff </dev/null
        jq -e '.result == "ok" and .end == "logoff"' <<<"$JSON" >/dev/null && ok=$((ok + 1))
done
queues_empty() {
        local n
        for n in "${SF_NODES[@]}"; do
                host_api "$n" GET /v1/status | jq -e '.directory.queued == 0' >/dev/null || return 1
        done
}
if ((ok == 5)) && farm_wait_until 10 queues_empty && sf_directory_is "$U" ""; then
        farm_pass "8: five logons each followed at once by a logoff: the directory has no session of $U left"
else
        farm_fail "8: five logons each followed at once by a logoff leave no session"                 "$ok/5 logged on and off; the directory says '$(sf_directory_session_of "$U" | tr '\n' ';')'"
fi
bad=""
for n in "${SF_NODES[@]}"; do
        r=$(refused "$n")
        [[ $r == "${refused_before[$n]}" ]] || bad+="$n: ${refused_before[$n]} -> $r; "
done
if [[ -z $bad ]]; then
        farm_pass "8: the directory refused none of the nodes' reports"
else
        farm_fail "8: the directory refused none of the nodes' reports" "$bad"
fi

# ---- 9. a report the directory refuses does not hold up the next ones ------------------------
report() { # NODE EVENT USER SESSION-ID
        host_api "$1" POST /v1/sessions/event \
                "{\"event\":\"$2\",\"user\":\"$3\",\"session_id\":$4,\"device\":\"probe\"}" >/dev/null
}
probe_user=$(sf_user 2)
reregistered=$(grep -c "registering again" "$(farm_log agent-node2)" || true)
before=$(refused node2)
report node2 reconnect "$probe_user" 4242
report node2 logon "$probe_user" 4243
if farm_wait_until 10 sf_directory_is "$probe_user" "node2 active"; then
        farm_pass "9: after a reconnect of a session the directory does not know, node2's next report is delivered"
else
        farm_fail "9: after a reconnect of an unknown session, node2's next report is delivered"                 "the directory says '$(sf_directory_session_of "$probe_user")'" "$(farm_log agent-node2)"
fi
if [[ $(refused node2) == $((before + 1)) && $(grep -c "registering again" "$(farm_log agent-node2)" || true) == "$reregistered" ]]; then
        farm_pass "9: ... the unknown session's report was refused once, node2 did not register again"
else
        farm_fail "9: ... the unknown session's report was refused once, node2 did not register again"                 "refused $before -> $(refused node2), 'registering again' $reregistered -> $(grep -c "registering again" "$(farm_log agent-node2)" || true)"
fi
report node2 logoff "$probe_user" 4243
farm_wait_until 10 sf_directory_is "$probe_user" "" || true

# ---- the end ---------------------------------------------------------------------------------
for n in directory agent-lic1 agent-lic2 agent-node1 agent-node2 agent-node3 tshost-node1 tshost-node2 tshost-node3; do
        if ! farm_alive "$(farm_pid "$n")"; then
                farm_fail "$n ran throughout" "it died" "$(farm_log "$n")"
        fi
done
if grep -qiE "AddressSanitizer|runtime error|LeakSanitizer" "$FARM_DIR"/logs/*.log; then
        farm_fail "no sanitizer reports" "see $FARM_DIR/logs"
fi
echo "session-farm: $(($(farm_now_ms) - t0)) ms"
((FARM_FAILED == 0))
