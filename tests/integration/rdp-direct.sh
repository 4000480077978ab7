#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Real RDP without any tsfarm component, to prove the harness
# (tests/integration/lib/rdp.sh) that the steering tests reuse: two nodes run
# xrdp with Xvnc sessions, a client namespace runs FreeRDP and rdesktop.
#   * FreeRDP logs in to node1 (a new session S1), disconnects, reconnects to
#     node1 and reattaches to S1;
#   * rdesktop does the same as another user (S2), and as the first user
#     reattaches to S1 (same user and colour depth: xrdp's session policy);
#   * a login to node2 gets a session of its own;
#   * disconnected sessions stay alive; teardown leaves no process, user,
#     namespace or mount behind.
#
#   sudo tests/integration/rdp-direct.sh
#
# Prints "PASS: name" / "FAIL: name (why)"; exits 1 on any failure, 77 when
# xrdp or the clients are not installed (tools/deps.sh check installs them).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/farm.sh
source "$here/lib/farm.sh"
# shellcheck source=lib/rdp.sh
source "$here/lib/rdp.sh"

if ((EUID != 0)); then
        farm_skip rdp-direct "needs root"
        exit 77
fi
if ! rdp_require; then
        farm_skip rdp-direct "$RDP_MISSING"
        exit 77
fi

trap farm_down EXIT

users_before=$(cat /etc/passwd /etc/shadow /etc/group | md5sum)
# The host's own RDP-ish listeners (other tests may run meanwhile and listen
# on ephemeral ports): xrdp, sesman, Xvnc's VNC and X ports.
host_rdp_listeners() {
        ss -Hltn | awk '{ n = split($4, f, ":"); p = f[n] }
                p == 3389 || p == 3350 || (p >= 5900 && p < 6100) { print $4 }' | sort
}
host_listeners_before=$(host_rdp_listeners)

farm_up 2 1
rdp_setup
rdp_user_add tsfuser1
rdp_user_add tsfuser2
pass1=$(rdp_user_pass tsfuser1)
pass2=$(rdp_user_pass tsfuser2)
addr1=$(farm_addr node1)
addr2=$(farm_addr node2)

# Prints milliseconds since $1 (a farm_now_ms value).
since() {
        echo $(($(farm_now_ms) - $1))
}

for node in node1 node2; do
        t0=$(farm_now_ms)
        if rdp_node_start "$node"; then
                farm_pass "xrdp-starts-in-$node ($(since "$t0") ms)"
        else
                farm_fail "xrdp-starts-in-$node" "rdp_node_start failed (see above)"
                exit 1
        fi
done
if ! rdp_client_start client1; then
        farm_fail "xvfb-starts-in-client1" "rdp_client_start failed (see above)"
        exit 1
fi

# One login and its checks. $1: check name; $2: login (a new session, which
# must differ from the identities given before "--") or reconnect (a
# reattach to the identity $3, through rdp_reconnect); after "--" the
# rdp_login arguments. Sets $got to the session's identity ("" on failure).
got=
expect_session() {
        local name=$1 event=$2 want=$3
        shift 3
        local others=() err=$FARM_DIR/last.err ok=0 o
        while [[ $1 != -- ]]; do
                others+=("$1")
                shift
        done
        shift
        if [[ $event == reconnect ]]; then
                got=$(RDP_EXPECT=$want rdp_reconnect "$@" 2>"$err") && ok=1
        else
                got=$(rdp_login "$@" 2>"$err") && ok=1
                if ((ok)) && [[ $(rdp_last_event) != login ]]; then
                        echo "expected a new session, got a reattach to $got" >"$err"
                        ok=0
                fi
                for o in "${others[@]}"; do
                        if ((ok)) && [[ $got == "$o" ]]; then
                                echo "a new session should differ from $o" >"$err"
                                ok=0
                        fi
                done
        fi
        if ((ok)); then
                farm_pass "$name ($got, $(rdp_last_ms) ms)"
        else
                # The first line says what went wrong, the rest are the
                # client's and the servers' log tails.
                farm_fail "$name" "$(head -n 1 "$err")"
                tail -n +2 "$err" | sed 's/^/  /'
                got=
        fi
        return 0
}

# FreeRDP: new session, then a reattach after a disconnect.
expect_session freerdp-login-node1 login "" -- "$addr1" tsfuser1 "$pass1" freerdp
s1=$got
if [[ -n $s1 ]] && rdp_session_alive "$s1"; then
        farm_pass "session-survives-disconnect"
else
        farm_fail "session-survives-disconnect" "session ${s1:-?} is gone after the client left"
fi
expect_session freerdp-reconnect-node1 reconnect "$s1" -- "$addr1" tsfuser1 "$pass1" freerdp

# rdesktop: a second user gets a session of their own and reattaches to it.
expect_session rdesktop-login-node1 login "" "$s1" -- "$addr1" tsfuser2 "$pass2" rdesktop
s2=$got
expect_session rdesktop-reconnect-node1 reconnect "$s2" -- "$addr1" tsfuser2 "$pass2" rdesktop
# The first user with the other client: same user and colour depth, so the
# same session (a user moving between devices).
expect_session rdesktop-reattaches-freerdp-session reconnect "$s1" -- "$addr1" tsfuser1 "$pass1" rdesktop

# node2 knows nothing of node1's sessions: a new one there.
expect_session freerdp-login-node2-new-session login "" "$s1" "$s2" -- "$addr2" tsfuser1 "$pass1" freerdp
s3=$got
if [[ ${s3%%:*} == node2 ]]; then
        farm_pass "node2-session-is-on-node2"
else
        farm_fail "node2-session-is-on-node2" "session ${s3:-?} is not on node2"
fi
expect_session freerdp-reconnect-node2 reconnect "$s3" -- "$addr2" tsfuser1 "$pass1" freerdp

# The events file is what a steering test reads: one line per event.
if [[ $(rdp_events | awk '$2 == "login"' | wc -l) == 3 && $(rdp_events | awk '$2 == "reconnect"' | wc -l) == 4 ]]; then
        farm_pass "event-log"
else
        farm_fail "event-log" "expected 3 logins and 4 reconnects: $(rdp_events | awk '{ print $2, $3, $4 }' | tr '\n' ';')"
fi

# ---- teardown ----------------------------------------------------------------------------
session_pids="${s1##*:} ${s2##*:} ${s3##*:}"
dir=$FARM_DIR
id=$FARM_ID
farm_down
left=
for p in $session_pids; do
        farm_alive "$p" && left+=" session-pid-$p"
done
# Processes started from this run's namespaces would still name its files.
if pgrep -f "tsf-$id" >/dev/null; then
        left+=" processes"
fi
ip netns list | grep -q "^tsf-$id-" && left+=" netns"
grep -qF "$dir" /proc/self/mounts && left+=" mounts"
[[ -e $dir ]] && left+=" $dir"
[[ $(cat /etc/passwd /etc/shadow /etc/group | md5sum) == "$users_before" ]] || left+=" host-user-database-changed"
[[ $(host_rdp_listeners) == "$host_listeners_before" ]] || left+=" host-rdp-listeners-changed"
if [[ -z $left ]]; then
        farm_pass "teardown-leaves-nothing"
else
        farm_fail "teardown-leaves-nothing" "left:$left"
fi

((FARM_FAILED == 0))
