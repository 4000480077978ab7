#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Self-test of the farm harness (tests/integration/lib/farm.sh): three nodes
# and a client reach each other and nothing else, a listener is reachable,
# a pulled cable cuts it off without resetting open connections and plugging
# it back restores it, each node has its own persistent bpffs and a usable
# cgroup2 of its own (a sockops program attached inside a node sees only that
# node's connections), parallel farms do not clash, and teardown leaves no
# namespace, veth, mount, cgroup or process behind, also when the test fails,
# is killed, or dies without cleaning up.
#
#   sudo tests/integration/farm-selftest.sh
#
# Prints "PASS: name" / "FAIL: name (why)"; exits 1 on any failure, 77 when it
# cannot run (not root, tools missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/farm.sh
source "$here/lib/farm.sh"

if ((EUID != 0)); then
        farm_skip farm-selftest "needs root"
        exit 77
fi
for t in ip nsenter unshare ping socat bpftool ss; do
        if ! command -v "$t" >/dev/null; then
                farm_skip farm-selftest "$t is not installed; tools/deps.sh check installs it"
                exit 77
        fi
done

trap farm_down EXIT

# Links of ours that must never appear in the host's namespace. (Other tests
# may run meanwhile, so the host's state is not compared wholesale.)
our_links_in_host() {
        ip -o link show | awk -F'[:@ ]+' '$2 ~ /^(node[0-9]+|client[0-9]+|br0)$/ { print $2 }'
}

# ---- up --------------------------------------------------------------------------
t0=$(farm_now_ms)
if farm_up 3 1; then
        farm_pass "farm-up ($(($(farm_now_ms) - t0)) ms for 3 nodes and a client)"
else
        farm_fail farm-up "farm_up 3 1 failed"
        exit 1
fi
id=$FARM_ID
dir=$FARM_DIR
cg=$FARM_CG

# ---- addressing and isolation ------------------------------------------------------
members=(node1 node2 node3 client1)
for from in "${members[@]}"; do
        bad=()
        for to in "${members[@]}"; do
                [[ $from == "$to" ]] && continue
                farm_exec "$from" ping -c 1 -W 2 -q "$(farm_addr "$to")" >/dev/null 2>&1 || bad+=("$to")
        done
        if ((${#bad[@]} == 0)); then
                farm_pass "ping-from-$from"
        else
                farm_fail "ping-from-$from" "no reply from ${bad[*]}"
        fi
done

# Nodes have only the farm's subnet: no default route, so nothing a test does
# can leave the machine. The host's links and routes are untouched.
routes=$(farm_exec node1 ip -4 route show)
if [[ $routes != *default* && $routes == *"$FARM_SUBNET.0/24 dev eth0"* ]]; then
        farm_pass "node-has-only-farm-route"
else
        farm_fail "node-has-only-farm-route" "routes in node1: $routes"
fi
if ! ip -4 addr show | grep -q " $FARM_SUBNET\." && [[ -z $(our_links_in_host) ]]; then
        farm_pass "host-untouched"
else
        farm_fail "host-untouched" "the host has a farm address or link: $(our_links_in_host)"
fi
if [[ $(farm_exec node2 hostname) == node2 ]] &&
        [[ $(farm_exec node2 ls /sys/class/net | tr '\n' ' ') == "eth0 lo " ]]; then
        farm_pass "node-sees-itself"
else
        farm_fail "node-sees-itself" "hostname or /sys/class/net of node2 is not its own"
fi

# ---- a TCP service -------------------------------------------------------------------
addr1=$(farm_addr node1)
farm_spawn node1 hello socat TCP-LISTEN:8080,fork,reuseaddr SYSTEM:'echo hello-from-$(hostname)'
farm_spawn node1 echo socat TCP-LISTEN:7007,fork,reuseaddr PIPE
if farm_wait_port node1 "$addr1" 8080 5 && farm_wait_port node1 "$addr1" 7007 5; then
        farm_pass "wait-port"
else
        farm_fail "wait-port" "listeners did not come up" "$(farm_log hello)" "$(farm_log echo)"
fi
got=$(farm_exec client1 socat -T 2 -u "TCP:$addr1:8080,connect-timeout=2" - 2>&1 || true)
if [[ $got == hello-from-node1 ]]; then
        farm_pass "tcp-client-to-node1"
else
        farm_fail "tcp-client-to-node1" "got '$got'"
fi

# ---- pulled cable ----------------------------------------------------------------------
# A connection opened before the pull must survive it (no reset either way),
# as with a real cable: the stale-leg problem the gateway has to solve.
go=$dir/go
farm_spawn client1 longconn bash -c '
        exec 3<>"/dev/tcp/$1/7007"
        echo one >&3; read -r -t 5 a <&3; echo "got $a"
        while [[ ! -e $2 ]]; do sleep 0.05; done
        echo two >&3; read -r -t 10 b <&3; echo "got $b"' _ "$addr1" "$go"
if ! farm_wait_until 5 grep -q 'got one' "$(farm_log longconn)"; then
        farm_fail "long-connection-open" "no echo" "$(farm_log longconn)"
fi
if farm_link_down node1; then
        if ! farm_can_connect client1 "$addr1" 8080 &&
                ! farm_exec client1 ping -c 1 -W 1 -q "$addr1" >/dev/null 2>&1 &&
                farm_exec node2 ping -c 1 -W 1 -q "$(farm_addr node3)" >/dev/null 2>&1; then
                farm_pass "link-down-cuts-node1-only"
        else
                farm_fail "link-down-cuts-node1-only" "node1 still reachable, or others cut off"
        fi
        if nsenter --net="/run/netns/$(farm_netns node1)" ss -Htn state established "( sport = :7007 )" | grep -q .; then
                farm_pass "link-down-keeps-connection"
        else
                farm_fail "link-down-keeps-connection" "node1 dropped the open connection"
        fi
else
        farm_fail "link-down-cuts-node1-only" "farm_link_down failed"
fi
if farm_link_up node1 && farm_wait_connect client1 "$addr1" 8080 5; then
        farm_pass "link-up-restores"
else
        farm_fail "link-up-restores" "node1 unreachable after farm_link_up"
fi
touch "$go"
if farm_wait_until 10 grep -q 'got two' "$(farm_log longconn)"; then
        farm_pass "connection-survives-pulled-cable"
else
        farm_fail "connection-survives-pulled-cable" "no echo after the cable came back" "$(farm_log longconn)"
fi

# ---- bpffs --------------------------------------------------------------------------------
pin=/sys/fs/bpf/tsf-selftest-$id
if farm_exec node1 sh -c "mkdir -p $pin && bpftool map create $pin/m type hash key 4 value 4 entries 4 name m" 2>"$dir/bpftool.err" &&
        farm_exec node1 bpftool map show pinned "$pin/m" >/dev/null 2>>"$dir/bpftool.err"; then
        farm_pass "bpffs-pin-persists-in-node"
else
        farm_fail "bpffs-pin-persists-in-node" "bpftool map create/show failed" "$dir/bpftool.err"
fi
if ! farm_exec node2 test -e "$pin/m" && [[ ! -e $pin/m ]]; then
        farm_pass "bpffs-private-per-node"
else
        farm_fail "bpffs-private-per-node" "node1's pin is visible in node2 or on the host"
fi

# ---- cgroup2 ------------------------------------------------------------------------------
if [[ $(farm_exec node1 stat -f -c %T /sys/fs/cgroup) == cgroup2fs ]] &&
        [[ $(farm_exec node1 grep '^0::' /proc/self/cgroup) == "0::/" ]] &&
        farm_exec node1 mkdir /sys/fs/cgroup/selftest &&
        [[ -d $cg/node1/selftest ]]; then
        farm_pass "cgroup2-in-node"
else
        farm_fail "cgroup2-in-node" "/sys/fs/cgroup in node1 is not the node's own cgroup2"
fi
# A sockops program attached to the node's /sys/fs/cgroup (what the agent
# does) counts node1's connections only. Fails with EBADF under `ip netns
# exec`, which hides the cgroup mounts.
if command -v clang >/dev/null && command -v jq >/dev/null && [[ -e /usr/include/bpf/bpf_helpers.h ]]; then
        cat >"$dir/count.bpf.c" <<'EOF'
// SPDX-License-Identifier: LGPL-2.1-or-later
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} established SEC(".maps");

SEC("sockops")
int count_established(struct bpf_sock_ops *skops)
{
	__u32 key = 0;
	__u64 *v;

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	v = bpf_map_lookup_elem(&established, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
EOF
        multiarch=$(gcc -dumpmachine 2>/dev/null || echo "$(uname -m)-linux-gnu")
        count() {
                farm_exec node1 bpftool -j map dump pinned "$pin/maps/established" |
                        jq -r '.[0].formatted.value' 2>/dev/null
        }
        if clang -O2 -g -target bpf -I"/usr/include/$multiarch" -c "$dir/count.bpf.c" -o "$dir/count.bpf.o" 2>"$dir/clang.err" &&
                farm_exec node1 bpftool prog load "$dir/count.bpf.o" "$pin/prog" type sockops pinmaps "$pin/maps" 2>"$dir/bpftool.err" &&
                farm_exec node1 bpftool cgroup attach /sys/fs/cgroup sock_ops pinned "$pin/prog" 2>>"$dir/bpftool.err"; then
                # node2 -> node3: not node1's business.
                farm_exec node2 socat -T 2 -u "TCP:$(farm_addr node3):7,connect-timeout=1" - >/dev/null 2>&1 || true
                before=$(count)
                farm_spawn node3 hello3 socat TCP-LISTEN:8080,fork,reuseaddr SYSTEM:'echo hi'
                farm_wait_port node3 "$(farm_addr node3)" 8080 5 || true
                farm_exec node2 socat -T 2 -u "TCP:$(farm_addr node3):8080,connect-timeout=2" - >/dev/null 2>&1 || true
                mid=$(count)
                # client1 -> node1: one passive establishment in node1.
                farm_exec client1 socat -T 2 -u "TCP:$addr1:8080,connect-timeout=2" - >/dev/null 2>&1 || true
                after=$(count)
                if [[ $before == 0 && $mid == 0 && $after -ge 1 ]]; then
                        farm_pass "sockops-on-node-cgroup-sees-only-node"
                else
                        farm_fail "sockops-on-node-cgroup-sees-only-node" "counts before/after node2->node3/after client1->node1: $before/$mid/$after"
                fi
        else
                farm_fail "sockops-on-node-cgroup-sees-only-node" "could not build, load or attach" "$dir/clang.err" "$dir/bpftool.err"
        fi
else
        farm_skip "sockops-on-node-cgroup-sees-only-node" "clang, jq or libbpf-dev missing; tools/deps.sh check installs them"
fi

# ---- a node crash ------------------------------------------------------------------------------
farm_spawn node2 crashme sh -c 'sleep 600 & sleep 600 & wait'
crash_pid=$FARM_LAST_PID
# The shell and its two sleeps, all in node2's cgroup.
procs_in_node2() { (($(wc -l <"$cg/node2/cgroup.procs") >= 3)); }
farm_wait_until 5 procs_in_node2 || true
if farm_kill_all node2 && ! farm_alive "$crash_pid" && [[ -z $(cat "$cg/node2/cgroup.procs") ]] &&
        farm_exec client1 ping -c 1 -W 2 -q "$(farm_addr node2)" >/dev/null 2>&1; then
        farm_pass "kill-all-in-node"
else
        farm_fail "kill-all-in-node" "processes left in node2, or node2 gone"
fi

# ---- a parallel farm ---------------------------------------------------------------------------
# Another run at the same time gets its own names, and the same addresses in
# its own namespaces.
other=$(bash -c '
        set -euo pipefail
        source "$1"
        trap farm_down EXIT
        farm_up 1 1 >/dev/null
        farm_exec client1 ping -c 1 -W 2 -q "$(farm_addr node1)" >/dev/null
        echo "$FARM_ID"' _ "$here/lib/farm.sh" 2>&1) || true
if [[ $other =~ ^[0-9a-f]{6}$ && $other != "$id" ]] && farm_exec client1 ping -c 1 -W 2 -q "$addr1" >/dev/null; then
        farm_pass "parallel-farm"
else
        farm_fail "parallel-farm" "second farm failed or clashed: $other"
fi

# ---- teardown -------------------------------------------------------------------------------------
pids=$(cat "$dir"/pids/*)
t0=$(farm_now_ms)
farm_down
down_ms=$(($(farm_now_ms) - t0))

# No namespace, veth, mount, cgroup, process or directory of this run remains.
# $1: farm id, $2: its directory, $3: its cgroup; prints what is left.
leftovers() {
        local id=$1 dir=$2 cg=$3 p
        ip netns list | grep "^tsf-$id-" || true
        grep -F "$dir" /proc/self/mounts || true
        [[ -e $cg ]] && echo "cgroup $cg"
        [[ -e $dir ]] && echo "directory $dir"
        for p in ${4:-}; do
                farm_alive "$p" && echo "process $p"
        done
        return 0
}
left=$(leftovers "$id" "$dir" "$cg" "$pids")
left+=$(our_links_in_host)
if [[ -z $left ]]; then
        farm_pass "farm-down-leaves-nothing ($down_ms ms)"
else
        farm_fail "farm-down-leaves-nothing" "left: $left"
fi

# A test that fails (set -e) or is killed with SIGTERM (run.sh's timeout)
# still tears down through its EXIT trap.
child_script='
        set -euo pipefail
        source "$1"
        trap farm_down EXIT
        farm_up 2 1 >/dev/null
        farm_spawn node1 sleeper sleep 600
        echo "$FARM_ID $FARM_DIR $FARM_CG $FARM_LAST_PID" >"$2"
        [[ $3 == fail ]] && false
        while :; do sleep 0.05; done'
child() {
        bash -c "$child_script" _ "$here/lib/farm.sh" "$1" "$2"
}
info=$(mktemp)
child "$info" fail >/dev/null 2>&1 || true
read -r cid cdir ccg cpid <"$info"
left=$(leftovers "$cid" "$cdir" "$ccg" "$cpid")
if [[ -n $cid && -z $left ]]; then
        farm_pass "teardown-on-failure"
else
        farm_fail "teardown-on-failure" "left: $left"
fi
: >"$info"
bash -c "$child_script" _ "$here/lib/farm.sh" "$info" term >/dev/null 2>&1 &
cpid_script=$!
farm_wait_until 10 test -s "$info" || true
read -r cid cdir ccg cpid <"$info" || true
kill -TERM "$cpid_script" 2>/dev/null || true
wait "$cpid_script" 2>/dev/null || true
left=$(leftovers "$cid" "$cdir" "$ccg" "$cpid")
if [[ -n ${cid:-} && -z $left ]]; then
        farm_pass "teardown-on-sigterm"
else
        farm_fail "teardown-on-sigterm" "left: ${left:-no farm was made}"
fi
# SIGKILL leaves everything; the next farm_up (farm_gc) cleans it.
: >"$info"
bash -c "$child_script" _ "$here/lib/farm.sh" "$info" kill >/dev/null 2>&1 &
cpid_script=$!
farm_wait_until 10 test -s "$info" || true
read -r cid cdir ccg cpid <"$info" || true
kill -KILL "$cpid_script" 2>/dev/null || true
wait "$cpid_script" 2>/dev/null || true
farm_gc 2>/dev/null
left=$(leftovers "$cid" "$cdir" "$ccg" "$cpid")
if [[ -n ${cid:-} && -z $left ]]; then
        farm_pass "gc-after-sigkill"
else
        farm_fail "gc-after-sigkill" "left: ${left:-no farm was made}"
fi
rm -f "$info"

((FARM_FAILED == 0))
