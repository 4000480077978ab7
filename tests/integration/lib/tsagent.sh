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

# Makes a farm CA in $FARM_DIR/pki and a certificate for "directory" at
# DIR_ADDR and for each NODE at its farm address (NAME: the CA's name).
tsagent_pki() { # NAME DIR_ADDR NODE...
        local name=$1 dir_addr=$2 n pki=$FARM_DIR/pki
        shift 2
        mkdir -m 700 "$pki"
        "$TSAGENT_BUILD/tsctl" pki init --dir "$pki" --name "$name" --days 2 >/dev/null
        "$TSAGENT_BUILD/tsctl" pki issue --dir "$pki" directory --ip "$dir_addr" --days 1 >/dev/null
        for n in "$@"; do
                "$TSAGENT_BUILD/tsctl" pki issue --dir "$pki" "$n" --ip "$(farm_addr "$n")" --days 1 >/dev/null
        done
}

# Writes $FARM_DIR/directory.conf: the directory role on DIR_ADDR:7400 with
# the certificate from tsagent_pki, its state and runtime directories under
# $FARM_DIR, then whatever extra [directory] lines follow on stdin.
tsagent_directory_conf() { # DIR_ADDR
        mkdir -p "$FARM_DIR/dir-state" "$FARM_DIR/dir-run"
        {
                printf '[agent]\nroles = directory\nnode-name = directory\nlog-level = debug\n'
                printf 'state-directory = %s\nruntime-directory = %s\n\n' "$FARM_DIR/dir-state" "$FARM_DIR/dir-run"
                printf '[directory]\nlisten = %s:7400\n' "$1"
                printf 'certificate = %s\nkey = %s\nca = %s\n' "$FARM_DIR/pki/directory.crt" \
                        "$FARM_DIR/pki/directory.key" "$FARM_DIR/pki/ca.crt"
                cat
        } >"$FARM_DIR/directory.conf"
}

# Exits 77 (skipped, with the reason) unless this runs as root with every
# TOOL on the PATH and every BINARY built in $TSAGENT_BUILD.
tsagent_require() { # NAME TOOL... [-- BINARY...]
        local name=$1 t
        shift
        if ((EUID != 0)); then
                farm_skip "$name" "needs root"
                exit 77
        fi
        while (($#)) && [[ $1 != -- ]]; do
                if ! command -v "$1" >/dev/null; then
                        farm_skip "$name" "$1 is not installed; tools/deps.sh check installs it"
                        exit 77
                fi
                shift
        done
        (($#)) && shift
        for t in "$@"; do
                if [[ ! -x $TSAGENT_BUILD/$t ]]; then
                        farm_skip "$name" "$TSAGENT_BUILD/$t is not built; run make"
                        exit 77
                fi
        done
}

# PASS when the jq FILTER holds for JSON, else FAIL with the filter, the
# JSON (its first 2000 bytes) and the tails of the LOG files named.
tsagent_expect() { # NAME JSON JQ-FILTER [LOG...]
        local name=$1 json=$2 filter=$3
        shift 3
        if jq -e "$filter" <<<"$json" >/dev/null 2>&1; then
                farm_pass "$name"
        else
                farm_fail "$name" "$filter is false for: $(head -c 2000 <<<"${json:-nothing}")" "$@"
        fi
}
