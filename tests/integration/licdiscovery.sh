#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# License-server discovery over multicast on the farm switch, with
# tools/licdisc-probe (lib/licdiscovery.c) standing in for the licensing
# role (announce, in node1) and the host role (listen, in node2):
#   * a listener learns an announcer that starts after it (its first
#     announcement), with every field right;
#   * a listener that starts later learns a slow announcer (60 s) from the
#     answer to its query, at once;
#   * the ordered list puts the listener's own site first, configured
#     servers after the announced ones;
#   * garbage, oversized and other-version datagrams on the group are
#     counted and change nothing;
#   * an announcer killed with SIGKILL lapses after 3 missed intervals (1 s
#     interval: 2..3 s after its last word), the others stay, and it is
#     learnt again when it comes back;
#   * an announcement lost on a pulled cable is recovered by
#     licdisc_restart() (SIGUSR2 to the probe), not by waiting 60 s.
#
# Prints "PASS: name" / "FAIL: name (why)"; exits 77 when it cannot run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/farm.sh
source "$here/lib/farm.sh"

build=${TSFARM_BUILD:-$(cd "$here/../.." && pwd)/build}
probe=$build/tools/licdisc-probe

if ((EUID != 0)); then
        farm_skip licdiscovery "needs root"
        exit 77
fi
if [[ ! -x $probe ]]; then
        farm_skip licdiscovery "$probe is not built; run make"
        exit 77
fi
for t in ip nsenter python3; do
        if ! command -v "$t" >/dev/null; then
                farm_skip licdiscovery "$t is not installed; tools/deps.sh check installs it"
                exit 77
        fi
done

trap farm_down EXIT
farm_up 2 0
lic=$(farm_addr node1)
key=$(printf 'ab%.0s' {1..32})

# Starts the probe in NODE as NAME with "$@" and waits until it serves.
probe_start() {
        local node=$1 name=$2 ready
        shift 2
        case $1 in announce) ready=Announcing ;; *) ready=Listening ;; esac
        farm_spawn "$node" "$name" env TSFARM_LOG_TARGET=stderr "$probe" "$@" --interface eth0
        farm_wait_until 5 _probe_says "$name" "$ready" || {
                farm_fail "$name starts" "no '$ready' within 5 s" "$(farm_log "$name")"
                exit 1
        }
}

# True once NAME's log has a line matching the extended regex; 125 (stop
# waiting) when the process died.
_probe_says() {
        grep -qE "$2" "$(farm_log "$1")" && return 0
        farm_alive "$(farm_pid "$1")" || return 125
        return 1
}

# How many lines of NAME's log match the regex.
_count() {
        grep -cE "$2" "$(farm_log "$1")" || true
}

# Asks listener NAME for its ordered list; prints the endpoints in order.
list_of() {
        local name=$1 before
        before=$(_count "$name" '^end$')
        kill -USR1 "$(farm_pid "$name")"
        farm_wait_until 3 _more_ends "$name" "$before" || return 1
        # The last list: the lines between the last "end" and the one before.
        awk '/^list /{ cur = cur $2 " " } /^end$/{ last = cur; cur = "" } END { print last }' \
                "$(farm_log "$name")" | sed -e 's/endpoint=//g' -e 's/ $//'
}

_count_is() {
        (($(_count "$1" "$2") == $3))
}

_more_ends() {
        (($(_count "$1" '^end$') > $2))
}

# ---- 1. a listener learns an announcer that starts after it -------------------
probe_start node2 listen1 listen --site siteA --server 10.239.0.9:7401
probe_start node1 fast announce --name lic-fast --site siteA --endpoint "$lic:7401" \
        --key-id "$key" --interval 1s
want="^added endpoint=$lic:7401 name=lic-fast site=siteA key=$key origin=multicast source=$lic seq=[0-9]+$"
if farm_wait_until 3 _probe_says listen1 "$want"; then
        farm_pass "a listener learns an announcer that starts after it, every field right"
else
        farm_fail "a listener learns an announcer that starts after it" "no matching line in 3 s" \
                "$(farm_log listen1)" "$(farm_log fast)"
fi

# ---- 2. a late listener learns a slow announcer from its query's answer --------
probe_start node1 slow announce --name lic-slow --site siteB --endpoint "$lic:7411" \
        --key-id "$key" --interval 60s
probe_start node2 listen2 listen --site siteB
t0=$(farm_now_ms)
if farm_wait_until 2 _probe_says listen2 "^added endpoint=$lic:7411 name=lic-slow site=siteB "; then
        farm_pass "a late listener learns a 60 s announcer from its query's answer ($(($(farm_now_ms) - t0)) ms)"
else
        farm_fail "a late listener learns a 60 s announcer from its query's answer" "not within 2 s" \
                "$(farm_log listen2)" "$(farm_log slow)"
fi
farm_wait_until 3 _probe_says listen2 "^added endpoint=$lic:7401 " || true
farm_wait_until 3 _probe_says listen1 "^added endpoint=$lic:7411 " || true

# ---- 3. the ordered view ---------------------------------------------------------
got=$(list_of listen1 || true)
want="$lic:7401 $lic:7411 10.239.0.9:7401"
if [[ $got == "$want" ]]; then
        farm_pass "site siteA: own site, then other announced, then configured ($got)"
else
        farm_fail "site siteA order" "got '$got', want '$want'" "$(farm_log listen1)"
fi
got=$(list_of listen2 || true)
want="$lic:7411 $lic:7401"
if [[ $got == "$want" ]]; then
        farm_pass "site siteB: own site first ($got)"
else
        farm_fail "site siteB order" "got '$got', want '$want'" "$(farm_log listen2)"
fi

# ---- 4. garbage on the group -------------------------------------------------------
farm_exec node1 python3 - <<'PY'
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.239.0.1"))
g = ("239.255.77.77", 7402)
s.sendto(b"hello, license servers", g)                      # not ours
s.sendto(b"TSLD\x01\x01\x00\x00" + b"\xff" * 600, g)        # oversized
s.sendto(b"TSLD\x02\x01\x00\x00" + b"\x00" * 60, g)         # a future version
s.sendto(b"TSLD\x01\x01\x00\x00" + b"\x00" * 51, g)         # truncated announcement
PY
sleep 0.5
if farm_alive "$(farm_pid listen1)" && farm_alive "$(farm_pid listen2)" && farm_alive "$(farm_pid fast)"; then
        farm_pass "garbage on the group: everyone still running"
else
        farm_fail "garbage on the group" "a probe died" "$(farm_log listen1)" "$(farm_log fast)"
fi

# ---- 5. an announcer that dies lapses after 3 missed intervals --------------------
farm_stop fast 1 KILL
t0=$(farm_now_ms)
if farm_wait_until 6 _probe_says listen1 "^removed endpoint=$lic:7401 "; then
        dt=$(($(farm_now_ms) - t0))
        # Last word at most 1 s before the kill, lapse 3 s after the last word.
        if ((dt >= 1800 && dt <= 4500)); then
                farm_pass "a killed 1 s announcer lapses after 3 missed intervals (${dt} ms)"
        else
                farm_fail "a killed 1 s announcer lapses after 3 missed intervals" "after ${dt} ms" \
                        "$(farm_log listen1)"
        fi
else
        farm_fail "a killed announcer lapses" "still listed 6 s later" "$(farm_log listen1)"
fi
got=$(list_of listen1 || true)
want="$lic:7411 10.239.0.9:7401"
if [[ $got == "$want" ]]; then
        farm_pass "the others stay: a live announcer and the configured server ($got)"
else
        farm_fail "the others stay" "got '$got', want '$want'" "$(farm_log listen1)"
fi
probe_start node1 fast2 announce --name lic-fast --site siteA --endpoint "$lic:7401" \
        --key-id "$key" --interval 1s
if farm_wait_until 3 _count_is listen1 "^added endpoint=$lic:7401 " 2; then
        farm_pass "a restarted announcer is learnt again"
else
        farm_fail "a restarted announcer is learnt again" "no second 'added'" "$(farm_log listen1)"
fi

# ---- 6. licdisc_restart() recovers an announcement lost on the wire ---------------
farm_link_down node2
probe_start node1 late announce --name lic-late --endpoint "$lic:7421" --key-id "$key" --interval 60s
sleep 0.3
farm_link_up node2
sleep 0.5
if (($(_count listen1 "^added endpoint=$lic:7421 ") == 0)); then
        farm_pass "an announcement sent while the cable was out is missed"
else
        farm_fail "an announcement sent while the cable was out is missed" "it arrived anyway"
fi
kill -USR2 "$(farm_pid listen1)"
t0=$(farm_now_ms)
if farm_wait_until 2 _probe_says listen1 "^added endpoint=$lic:7421 name=lic-late site=- "; then
        farm_pass "licdisc_restart() asks again and learns it ($(($(farm_now_ms) - t0)) ms)"
else
        farm_fail "licdisc_restart() asks again and learns it" "not within 2 s" "$(farm_log listen1)" \
                "$(farm_log late)"
fi

# ---- 7. the counters say what happened -----------------------------------------------
farm_stop listen1 3
farm_stop slow 3
stats=$(grep '^stats ' "$(farm_log listen1)" || true)
malformed=$(sed -nE 's/.* malformed=([0-9]+).*/\1/p' <<<"$stats")
unsupported=$(sed -nE 's/.* unsupported=([0-9]+).*/\1/p' <<<"$stats")
queries=$(sed -nE 's/.* queries=([0-9]+).*/\1/p' <<<"$stats")
if [[ ${malformed:-0} -ge 3 && ${unsupported:-0} -ge 1 && ${queries:-0} -ge 2 ]]; then
        farm_pass "listener counted 3 malformed, 1 other-version datagram, 2 queries sent"
else
        farm_fail "listener counters" "'$stats'" "$(farm_log listen1)"
fi
stats=$(grep '^stats ' "$(farm_log slow)" || true)
answered=$(sed -nE 's/.* queries=([0-9]+).*/\1/p' <<<"$stats")
malformed=$(sed -nE 's/.* malformed=([0-9]+).*/\1/p' <<<"$stats")
if [[ ${answered:-0} -ge 2 && ${malformed:-0} -ge 3 ]]; then
        farm_pass "announcer answered the queries and counted the garbage ($stats)"
else
        farm_fail "announcer counters" "'$stats'" "$(farm_log slow)"
fi

((FARM_FAILED == 0))
