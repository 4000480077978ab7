# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# farm.sh: a throwaway farm of terminal-server nodes for integration tests.
#
#   source tests/integration/lib/farm.sh
#   trap farm_down EXIT
#   farm_up 3 1                 # node1..node3 (10.239.0.1-3), client1 (.101)
#   farm_spawn node1 web socat TCP-LISTEN:8080,fork,reuseaddr SYSTEM:'echo hi'
#   farm_wait_port node1 10.239.0.1 8080 5
#   farm_exec client1 socat -u TCP:10.239.0.1:8080 -
#
# Every node (and client) is a small "machine": its own network namespace
# with eth0 on a bridge that lives in a dedicated switch namespace (the host's
# namespaces, links and routes are never touched), plus
#   * its own mount namespace, with a fresh sysfs for its network namespace,
#     its own bpffs on /sys/fs/bpf (pins persist between commands and do not
#     clash with other nodes' /sys/fs/bpf/tsfarm), cgroup2 on /sys/fs/cgroup,
#     and private tmpfs on /tmp and /run (agent sockets, pid files, X sockets);
#   * its own UTS namespace (hostname = node name);
#   * its own cgroup (a child of <cgroup2>/tsf-<id>/) and a cgroup namespace
#     rooted there, so a sockops program attached to /sys/fs/cgroup inside a
#     node sees only that node's sockets, and teardown kills every process a
#     node ever started (daemons that double-fork included) with cgroup.kill.
# Why not `ip netns exec`: it remounts /sys in a throwaway mount namespace, so
# /sys/fs/bpf and the cgroup mounts vanish (bpftool then mounts a bpffs that
# dies with the command, taking its pins along). Why not plain `nsenter
# --net`: /sys and /sys/fs/bpf are then the host's, so nodes share one
# /sys/fs/bpf/tsfarm and bpftool would mount bpffs on the host.
#
# Files shared between the test and the nodes go under $FARM_DIR (the nodes
# see the host's file system except /sys, /tmp and /run). Logs of spawned
# processes: $FARM_DIR/logs/NAME.log. FARM_KEEP=1 keeps $FARM_DIR after
# farm_down (everything else is still torn down).
#
# Names carry a random per-run id (netns tsf-<id>-node1, cgroup tsf-<id>,
# $FARM_DIR=/var/tmp/tsf-<id>), so parallel runs do not clash, and a run that
# died without tearing down is cleaned by the next farm_up (farm_gc).
#
# All functions work under `set -euo pipefail`; farm_down never fails.

FARM_SUBNET=${FARM_SUBNET:-10.239.0}
FARM_TMPDIR=${FARM_TMPDIR:-/var/tmp}
FARM_ID=
FARM_DIR=
FARM_CG=
FARM_CGROOT=
FARM_SWITCH=
FARM_NODES=()
declare -gA FARM_ADDR=()
FARM_LAST_PID=

# ---- reporting ---------------------------------------------------------------

FARM_FAILED=0

# Reports a passed check in the form tests/run.sh counts.
farm_pass() {
        echo "PASS: $1"
}

# Reports a failed check; the optional log files' tails follow, indented, so
# the reader sees why without digging (and run.sh does not count them).
farm_fail() {
        local name=$1 why=$2 f
        shift 2
        echo "FAIL: $name ($why)"
        FARM_FAILED=$((FARM_FAILED + 1))
        for f in "$@"; do
                farm_log_tail "$f" 20
        done
}

# Reports a check that cannot run here, with the reason.
farm_skip() {
        echo "SKIP: $1 ($2)"
}

# Runs "$@"; PASS or FAIL NAME by its exit status. Returns that status.
farm_check() {
        local name=$1
        shift
        if "$@"; then
                farm_pass "$name"
        else
                local rc=$?
                farm_fail "$name" "'$*' exited $rc"
                return "$rc"
        fi
}

# Prints the last N lines of a log, indented and labelled, for failure
# messages; says so when the file is missing or empty.
farm_log_tail() {
        local f=$1 n=${2:-20}
        if [[ -s $f ]]; then
                echo "  --- last $n lines of $f"
                tail -n "$n" "$f" | sed 's/^/  | /'
        else
                echo "  --- $f: missing or empty"
        fi
}

# ---- deadlines -----------------------------------------------------------------

# Sets _farm_ms to the wall clock in milliseconds, without a subshell
# (deadlines are computed in loops). Callers declare `local _farm_ms`.
_farm_ms=0
_farm_now() {
        local t=${EPOCHREALTIME//[!0-9]/}
        _farm_ms=$((10#$t / 1000))
}

# Polls "$@" until it succeeds or TIMEOUT seconds (may be fractional) pass.
# Deadline-based: the interval only bounds CPU use, never the result. A
# predicate that knows waiting is pointless (the process it waits for died)
# returns 125 to end the wait at once.
farm_wait_until() {
        local timeout=$1
        shift
        local _farm_ms end rc
        _farm_now
        end=$((_farm_ms + $(_farm_s_to_ms "$timeout")))
        while true; do
                rc=0
                "$@" || rc=$?
                ((rc == 0)) && return 0
                ((rc == 125)) && return 1
                _farm_now
                ((_farm_ms < end)) || return 1
                sleep 0.02
        done
}

# Prints the wall clock in milliseconds (for the timings tests report).
farm_now_ms() {
        _farm_now
        echo "$_farm_ms"
}

# Converts seconds ("2", "0.5") to milliseconds.
_farm_s_to_ms() {
        local s=$1 int frac
        int=${s%%.*}
        frac=
        [[ $s == *.* ]] && frac=${s#*.}
        frac=${frac}000
        echo $((10#${int:-0} * 1000 + 10#${frac:0:3}))
}

# ---- farm lifecycle --------------------------------------------------------------

# Prints a random 6-hex-digit id (nodes' names must fit IFNAMSIZ elsewhere).
_farm_new_id() {
        od -An -N3 -tx1 /dev/urandom | tr -d ' \n'
}

# Prints the mount point of the cgroup2 hierarchy in the host's mount
# namespace (/sys/fs/cgroup on systemd hosts, /sys/fs/cgroup/unified on hybrid
# ones), or nothing.
_farm_cgroup2_mount() {
        awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts
}

# Creates an empty farm: run directory, switch namespace with a bridge, the
# farm's cgroup. Called by farm_up; exposed for tests that name nodes freely.
farm_create() {
        [[ -z $FARM_ID ]] || {
                echo "farm_create: a farm ($FARM_ID) is already up" >&2
                return 1
        }
        ((EUID == 0)) || {
                echo "farm_create: needs root" >&2
                return 1
        }
        local t
        for t in ip nsenter unshare; do
                command -v "$t" >/dev/null || {
                        echo "farm_create: $t is missing (tools/deps.sh check)" >&2
                        return 1
                }
        done
        farm_gc
        _farm_install_signal_traps
        # The run directory appears whole, with its owner and the owner's
        # start time (so farm_gc tells a dead run's leftovers from a live
        # parallel run, even after pid reuse), before anything else exists.
        local tmp
        tmp=$(mktemp -d "$FARM_TMPDIR/tsf-new.XXXXXX")
        chmod 0755 "$tmp"
        mkdir -m 0755 "$tmp/ns" "$tmp/logs" "$tmp/pids" "$tmp/nodes"
        echo "$$ $(_farm_starttime $$)" >"$tmp/owner"
        while true; do
                FARM_ID=$(_farm_new_id)
                FARM_DIR=$FARM_TMPDIR/tsf-$FARM_ID
                # mv -T fails if FARM_DIR exists (a non-empty directory).
                [[ ! -e $FARM_DIR ]] && mv -T "$tmp" "$FARM_DIR" 2>/dev/null && break
        done
        FARM_SWITCH=tsf-$FARM_ID-sw
        # Namespace files can only be bind-mounted onto a private mount.
        mount --bind "$FARM_DIR/ns" "$FARM_DIR/ns"
        mount --make-private "$FARM_DIR/ns"

        FARM_CGROOT=$(_farm_cgroup2_mount)
        if [[ -z $FARM_CGROOT ]]; then
                mkdir -p "$FARM_DIR/cgroup2"
                mount -t cgroup2 cgroup2 "$FARM_DIR/cgroup2"
                FARM_CGROOT=$FARM_DIR/cgroup2
        fi
        FARM_CG=$FARM_CGROOT/tsf-$FARM_ID
        mkdir "$FARM_CG"

        ip netns add "$FARM_SWITCH"
        ip -n "$FARM_SWITCH" link add br0 type bridge stp_state 0 forward_delay 0
        ip -n "$FARM_SWITCH" link set br0 up
}

# Creates the farm most tests want: NODES nodes node1..nodeN at .1...N and
# CLIENTS clients client1..clientM at .101..., all on one switch.
farm_up() {
        local nodes=${1:-3} clients=${2:-1} i
        farm_create
        for ((i = 1; i <= nodes; i++)); do
                farm_add_node "node$i" "$FARM_SUBNET.$i"
        done
        for ((i = 1; i <= clients; i++)); do
                farm_add_node "client$i" "$FARM_SUBNET.$((100 + i))"
        done
}

# Adds a node NAME with address ADDR (/24) to the farm: network namespace,
# veth to the switch, and the node's mount, UTS and cgroup namespaces (see the
# top of this file for why each exists).
farm_add_node() {
        local node=$1 addr=$2
        [[ $node =~ ^[a-z][a-z0-9-]{0,14}$ ]] || {
                echo "farm_add_node: bad node name '$node' (1-15 of a-z0-9-)" >&2
                return 1
        }
        [[ -z ${FARM_ADDR[$node]:-} ]] || {
                echo "farm_add_node: $node exists" >&2
                return 1
        }
        local ns=tsf-$FARM_ID-$node nsd=$FARM_DIR/ns/$node
        ip netns add "$ns"
        FARM_NODES+=("$node")
        FARM_ADDR[$node]=$addr
        mkdir -m 0755 "$FARM_DIR/nodes/$node"
        mkdir "$FARM_CG/$node"
        touch "$nsd.mnt" "$nsd.uts" "$nsd.cgroup"

        # The switch side is named after the node; the node sees eth0.
        ip -n "$FARM_SWITCH" link add "$node" type veth peer name eth0 netns "$ns"
        ip -n "$FARM_SWITCH" link set "$node" master br0 up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up

        # Join the node's cgroup first: the cgroup namespace is rooted at the
        # creator's cgroup. unshare binds each new namespace to its file.
        (
                echo "$BASHPID" >"$FARM_CG/$node/cgroup.procs"
                exec unshare --mount="$nsd.mnt" --uts="$nsd.uts" --cgroup="$nsd.cgroup" \
                        --propagation private \
                        nsenter --net="/run/netns/$ns" \
                        /bin/sh -ec '
                        hostname "$1"
                        # A copy of the namespace files would keep the other
                        # nodes alive after their teardown.
                        umount -l "$2"
                        umount -l /sys
                        mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
                        mount -t bpf -o mode=0700 bpf /sys/fs/bpf
                        mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
                        mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
                        mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
                        mkdir -m 1777 /run/lock
                        ' sh "$node" "$FARM_DIR/ns"
        )
        # The subshell's exit left the cgroup empty: namespaces live on in
        # their files.
        _farm_wait_link "$node"
}

# Waits until NODE's eth0 has carrier and its switch port forwards.
_farm_wait_link() {
        farm_wait_until 5 _farm_link_ready "$1" || {
                echo "farm: link of $1 did not come up" >&2
                ip -n "tsf-$FARM_ID-$1" link show eth0 >&2 || true
                return 1
        }
}

_farm_link_ready() {
        ip -n "tsf-$FARM_ID-$1" -o link show eth0 | grep -q 'LOWER_UP' &&
                bridge -n "$FARM_SWITCH" link show dev "$1" | grep -q 'state forwarding'
}

# Sets up traps so that SIGTERM (tests/run.sh's timeout), SIGINT and SIGHUP
# end the script through its EXIT trap (bash skips EXIT traps on fatal
# signals that have no trap of their own). Leaves existing traps alone.
_farm_install_signal_traps() {
        local sig code
        for sig in TERM:143 INT:130 HUP:129; do
                code=${sig#*:}
                sig=${sig%:*}
                # shellcheck disable=SC2064 # the code is fixed now, on purpose
                [[ -n $(trap -p "$sig") ]] || trap "exit $code" "$sig"
        done
}

# Prints the start time (clock ticks since boot) of PID, or nothing.
_farm_starttime() {
        local stat
        stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
        stat=${stat##*) }
        # Field 22 overall, 20 after "pid (comm) ".
        awk '{ print $20 }' <<<"$stat"
}

# Tears down everything the farm made: kills every process of every node
# (cgroup.kill, then the recorded pids), unmounts the namespace files, deletes
# the namespaces (their veths and the bridge go with them), removes the
# cgroups and the run directory (kept with FARM_KEEP=1). Idempotent, never
# fails, safe from an EXIT trap in any state of a half-built farm.
farm_down() {
        [[ -n ${FARM_ID:-} ]] || return 0
        local pid
        # Our own children first, so they can be reaped below.
        for pid in $(cat "$FARM_DIR"/pids/* 2>/dev/null); do
                kill -KILL "$pid" 2>/dev/null || true
        done
        _farm_down_id "$FARM_ID" "$FARM_DIR" "$FARM_CG" "${FARM_KEEP:-0}"
        for pid in $(cat "$FARM_DIR"/pids/* 2>/dev/null); do
                wait "$pid" 2>/dev/null || true
        done
        if [[ ${FARM_KEEP:-0} == 1 ]]; then
                echo "farm: kept $FARM_DIR" >&2
        fi
        FARM_ID='' FARM_DIR='' FARM_CG='' FARM_CGROOT='' FARM_SWITCH='' FARM_LAST_PID=
        FARM_NODES=()
        FARM_ADDR=()
        return 0
}

# Tears down farm ID's resources, found from the system's state rather than
# from shell variables (so it also cleans what a dead run left).
_farm_down_id() {
        local id=$1 dir=$2 cg=$3 keep=${4:-0} d ns m
        (
                set +e
                # 1. Kill every process of every node, forks and sessions included.
                if [[ -d $cg ]]; then
                        for d in "$cg"/*/; do
                                [[ -e $d/cgroup.kill ]] && echo 1 >"$d/cgroup.kill" 2>/dev/null
                        done
                        farm_wait_until 5 _farm_cgroup_empty "$cg" ||
                                _farm_cgroup_pids "$cg" | xargs -r kill -KILL 2>/dev/null
                fi
                # 2. Unmount everything under the run directory, deepest first
                #    (namespace files, the ns directory, a cgroup2 we mounted).
                if [[ -n $dir ]]; then
                        awk -v p="$dir/" 'index($2, p) == 1 { print $2 }' /proc/self/mounts |
                                sort -r | while read -r m; do
                                umount -l "$m" 2>/dev/null
                        done
                fi
                # 3. Network namespaces: nodes, clients, switch (veths and the
                #    bridge go with them).
                for ns in $(ip netns list 2>/dev/null | awk -v p="tsf-$id-" 'index($1, p) == 1 { print $1 }'); do
                        ip netns del "$ns" 2>/dev/null
                done
                # 4. cgroups, children first; processes exit asynchronously.
                if [[ -d $cg ]]; then
                        farm_wait_until 5 _farm_rmdir_tree "$cg" ||
                                echo "farm: could not remove $cg" >&2
                fi
                if [[ -n $dir && $keep != 1 ]]; then
                        rm -rf "$dir"
                elif [[ -d $dir ]]; then
                        touch "$dir/kept"
                fi
        )
        return 0
}

_farm_cgroup_pids() {
        find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null
}

_farm_cgroup_empty() {
        [[ -z $(_farm_cgroup_pids "$1") ]]
}

_farm_rmdir_tree() {
        find "$1" -depth -type d -exec rmdir {} + 2>/dev/null
        [[ ! -d $1 ]]
}

# Cleans the leftovers of farms whose owning script is gone (killed with
# SIGKILL, machine reset mid-run): namespaces, cgroups, mounts; run
# directories too unless they were kept with FARM_KEEP=1. A live parallel
# run's farm is left alone.
farm_gc() {
        local ids id dir owner pid start cgroot
        cgroot=$(_farm_cgroup2_mount)
        ids=$( {
                ip netns list 2>/dev/null | sed -nE 's/^tsf-([0-9a-f]{6})-.*/\1/p'
                for dir in "$FARM_TMPDIR"/tsf-?????? ${cgroot:+"$cgroot"/tsf-??????}; do
                        if [[ -d $dir ]]; then
                                echo "${dir##*/tsf-}"
                        fi
                done
        } | sort -u)
        for id in $ids; do
                [[ $id == "${FARM_ID:-}" ]] && continue
                dir=$FARM_TMPDIR/tsf-$id
                owner=$(cat "$dir/owner" 2>/dev/null || true)
                pid=${owner%% *}
                start=${owner#* }
                if [[ -n $owner && $(_farm_starttime "$pid") == "$start" ]]; then
                        continue
                fi
                # A directory left by FARM_KEEP=1 has no namespaces: keep it.
                if [[ -e $dir/kept ]] && ! ip netns list | grep -q "^tsf-$id-"; then
                        continue
                fi
                echo "farm: cleaning up farm $id of a dead run" >&2
                local keep=0
                [[ -e $dir/kept ]] && keep=1
                _farm_down_id "$id" "$dir" "${cgroot:+$cgroot/tsf-$id}" "$keep"
        done
        return 0
}

# ---- nodes ---------------------------------------------------------------------------

# Prints the address of NODE.
farm_addr() {
        [[ -n ${FARM_ADDR[$1]:-} ]] || {
                echo "farm: no node '$1'" >&2
                return 1
        }
        echo "${FARM_ADDR[$1]}"
}

# Prints the network namespace name of NODE (for `ip -n`, `ip netns exec`).
farm_netns() {
        farm_addr "$1" >/dev/null && echo "tsf-$FARM_ID-$1"
}

# Prints NODE's own directory (on the host's file system, visible inside
# every node): state and logs a test keeps per node.
farm_node_dir() {
        farm_addr "$1" >/dev/null && echo "$FARM_DIR/nodes/$1"
}

# Sets _FARM_ARGV to the nsenter command that enters NODE's namespaces in the
# current working directory (or / when the directory is private to nodes).
_farm_argv() {
        local node=$1 nsd wd=$PWD
        farm_addr "$node" >/dev/null || return 1
        nsd=$FARM_DIR/ns/$node
        case $wd in /tmp | /tmp/* | /run | /run/* | /sys | /sys/*) wd=/ ;; esac
        _FARM_ARGV=(nsenter "--net=/run/netns/tsf-$FARM_ID-$node" "--mount=$nsd.mnt"
                "--uts=$nsd.uts" "--cgroup=$nsd.cgroup" "--wd=$wd" --)
}

# Runs a command in NODE, in the foreground: the node's network, mount, UTS
# and cgroup namespaces, inside the node's cgroup (so farm_down can kill
# whatever it leaves behind). Returns the command's exit status.
farm_exec() {
        local node=$1
        shift
        _farm_argv "$node" || return 2
        (
                echo "$BASHPID" >"$FARM_CG/$node/cgroup.procs"
                _farm_fix_tmpdir
                exec "${_FARM_ARGV[@]}" "$@"
        )
}

# A TMPDIR under the host's /tmp or /run does not exist in a node (both are
# private there): point it at the node's own /tmp instead.
_farm_fix_tmpdir() {
        case ${TMPDIR:-} in /tmp/* | /run | /run/*) export TMPDIR=/tmp ;; esac
}

# Starts a command in NODE in the background, stdin from /dev/null, stdout
# and stderr appended to $FARM_DIR/logs/NAME.log. Its pid (the command
# itself: the subshell execs into nsenter, nsenter into the command) is in
# $FARM_LAST_PID and $FARM_DIR/pids/NAME. NAME must be unique in the farm.
farm_spawn() {
        local node=$1 name=$2
        shift 2
        [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || {
                echo "farm_spawn: bad name '$name'" >&2
                return 1
        }
        _farm_argv "$node" || return 2
        (
                echo "$BASHPID" >"$FARM_CG/$node/cgroup.procs"
                _farm_fix_tmpdir
                exec "${_FARM_ARGV[@]}" "$@"
        ) </dev/null >>"$FARM_DIR/logs/$name.log" 2>&1 &
        FARM_LAST_PID=$!
        # Not a job of this shell: no "Killed" notices when farm_down ends it
        # (bash still reaps it; farm_alive treats zombies as gone).
        disown "$FARM_LAST_PID"
        echo "$FARM_LAST_PID" >"$FARM_DIR/pids/$name"
}

# Prints the pid of the process farm_spawn started as NAME.
farm_pid() {
        cat "$FARM_DIR/pids/$1"
}

# Prints the log file of the process farm_spawn started as NAME.
farm_log() {
        echo "$FARM_DIR/logs/$1.log"
}

# True while PID exists and is not a zombie.
farm_alive() {
        local st
        st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
        [[ -n $st && $st != Z ]]
}

# Stops the process farm_spawn started as NAME: SIGTERM (or SIG), waits up to
# TIMEOUT seconds (default 5), then SIGKILL. Reaps it when it is our child.
farm_stop() {
        local name=$1 timeout=${2:-5} sig=${3:-TERM} pid
        pid=$(farm_pid "$name") || return 1
        kill "-$sig" "$pid" 2>/dev/null || true
        if ! farm_wait_until "$timeout" _farm_not_alive "$pid"; then
                echo "farm: $name ($pid) ignored SIG$sig for ${timeout}s, killing" >&2
                kill -KILL "$pid" 2>/dev/null || true
                farm_wait_until 2 _farm_not_alive "$pid" || true
        fi
        wait "$pid" 2>/dev/null || true
        rm -f "$FARM_DIR/pids/$name"
}

_farm_not_alive() {
        ! farm_alive "$1"
}

# Simulates a node crash: kills every process NODE ever started (daemons,
# their children, RDP sessions) at once, and waits until they are gone. The
# node's namespaces, address and mounts stay, so it can be started again.
farm_kill_all() {
        farm_addr "$1" >/dev/null || return 1
        local cg=$FARM_CG/$1
        if [[ -e $cg/cgroup.kill ]]; then
                echo 1 >"$cg/cgroup.kill"
        else
                _farm_cgroup_pids "$cg" | xargs -r kill -KILL 2>/dev/null || true
        fi
        farm_wait_until 5 _farm_cgroup_empty "$cg"
}

# True if a TCP socket listens on ADDR:PORT in NODE (ADDR, or a wildcard;
# ADDR "*" accepts any address).
# Looks at the socket table only: no connection, so nothing shows up in the
# RDP server's log or in a tracking map.
farm_listening() {
        local node=$1 addr=$2 port=$3
        nsenter --net="/run/netns/tsf-$FARM_ID-$node" ss -Hltn 2>/dev/null |
                awk -v a="$addr" -v p="$port" '
                { n = split($4, f, ":"); lp = f[n]; la = substr($4, 1, length($4) - length(lp) - 1) }
                lp == p && (a == "*" || la == a || la == "0.0.0.0" || la == "*" || la == "[::]" || la == "[::ffff:" a "]") { ok = 1 }
                END { exit !ok }'
}

# Waits up to TIMEOUT seconds until something listens on ADDR:PORT in NODE.
# On timeout, prints the node's listeners to stderr and fails.
farm_wait_port() {
        local node=$1 addr=$2 port=$3 timeout=${4:-10}
        farm_addr "$node" >/dev/null || return 1
        farm_wait_until "$timeout" farm_listening "$node" "$addr" "$port" && return 0
        echo "farm: nothing listens on $addr:$port in $node after ${timeout}s; listeners:" >&2
        nsenter --net="/run/netns/tsf-$FARM_ID-$node" ss -Hltn >&2 || true
        return 1
}

# True if a TCP connection from node FROM to ADDR:PORT succeeds within 1 s.
# Sends traffic (a connect and a close): use farm_listening to avoid that.
farm_can_connect() {
        local from=$1 addr=$2 port=$3
        nsenter --net="/run/netns/tsf-$FARM_ID-$from" \
                timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$addr" "$port" 2>/dev/null
}

# Waits up to TIMEOUT seconds until FROM can connect to ADDR:PORT.
farm_wait_connect() {
        local from=$1 addr=$2 port=$3 timeout=${4:-10}
        farm_wait_until "$timeout" farm_can_connect "$from" "$addr" "$port"
}

# Simulates a pulled cable: NODE's switch port goes down, so NODE's eth0
# loses carrier. Its addresses, routes and sockets stay; packets are lost
# both ways and open TCP connections neither close nor reset.
farm_link_down() {
        farm_addr "$1" >/dev/null || return 1
        ip -n "$FARM_SWITCH" link set "$1" down
        farm_wait_until 5 _farm_no_carrier "$1"
}

_farm_no_carrier() {
        ip -n "tsf-$FARM_ID-$1" -o link show eth0 | grep -q 'NO-CARRIER'
}

# Plugs NODE's cable back in and waits until its switch port forwards.
farm_link_up() {
        farm_addr "$1" >/dev/null || return 1
        ip -n "$FARM_SWITCH" link set "$1" up
        _farm_wait_link "$1"
}
