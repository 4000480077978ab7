# SPDX-License-Identifier: LGPL-2.1-or-later
#
# tsagent in a farm made by farm.sh: a host-role configuration naming every
# node of the farm, and start/readiness helpers. Source after farm.sh.

TSAGENT_BUILD=${TSFARM_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/build}

# Writes $FARM_DIR/NODE.conf: host role, every farm node (node1.. in order,
# ids 1..), then whatever extra text follows on stdin (e.g. a [sessions]
# table standing in for the directory).
tsagent_conf() {
        local node=$1 n i=1
        {
                printf '[agent]\nroles = host\nnode-name = %s\nlog-level = debug\n' "$node"
                printf '[host]\nfirst-pdu-timeout = 1s\naffinity-ttl = 10min\n'
                for n in $(ls "$FARM_DIR/ns" | sed -n 's/^\(node[0-9]*\)\.mnt$/\1/p' | sort -V); do
                        printf '[node %s]\nid = %d\naddress = %s\n' "$n" "$i" "$(farm_addr "$n")"
                        i=$((i + 1))
                done
                cat
        } >"$FARM_DIR/$node.conf"
}

# True once the agent NAME says its host role started; 125 (stop waiting)
# when it died.
tsagent_ready() {
        farm_alive "$(farm_pid "$1")" || return 125
        grep -q "Host role started" "$(farm_log "$1")"
}

# Starts tsagent in NODE as NAME with $FARM_DIR/NODE.conf and waits until it
# serves (10 s).
tsagent_start() {
        local node=$1 name=$2
        farm_spawn "$node" "$name" env TSFARM_LOG_TARGET=stderr "$TSAGENT_BUILD/tsagent" \
                --config "$FARM_DIR/$node.conf"
        farm_wait_until 10 tsagent_ready "$name"
}
