# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Licensing in a farm made by farm.sh: license servers (tsagent licensing
# role) and terminal-server hosts with the licensing client, and the host's
# local licensing API as a session host calls it. Source after farm.sh and
# tsagent.sh; needs $pki (a farm CA from `tsctl pki`) and $trust (the
# trusted-keys directory the hosts read).

TSCTL=${TSCTL:-$TSAGENT_BUILD/tsctl}

# Writes $FARM_DIR/NAME.conf: the licensing role on NAME's farm address,
# announcing itself every 2 s on eth0 at SITE; more [licensing] lines as
# further arguments.
lic_conf() { # NAME SITE [LINE...]
        local n=$1 site=$2
        shift 2
        mkdir -p "$FARM_DIR/$n-state" "$FARM_DIR/$n-run"
        cat >"$FARM_DIR/$n.conf" <<CONF
[agent]
roles = licensing
node-name = $n
log-level = debug
state-directory = $FARM_DIR/$n-state
runtime-directory = $FARM_DIR/$n-run

[licensing]
listen = $(farm_addr "$n"):7401
certificate = $pki/$n.crt
key = $pki/$n.key
ca = $pki/ca.crt
site = $site
announce-interval = 2s
discovery-interface = eth0
CONF
        printf '%s\n' "$@" >>"$FARM_DIR/$n.conf"
}
lsock() { echo "$FARM_DIR/$1-run/licensing.sock"; }
tsctl_lic() { # NAME ARGS...
        local n=$1
        shift
        "$TSCTL" license "$@" --licensing-socket "$(lsock "$n")"
}
lic_ready() {
        farm_alive "$(farm_pid "$1")" || return 125
        farm_listening "$2" "$(farm_addr "$2")" 7401 && tsctl_lic "$2" packs --json >/dev/null 2>&1
}
lic_start() { # NODE NAME
        farm_spawn "$1" "$2" env TSFARM_LOG_TARGET=stderr "$TSAGENT_BUILD/tsagent" --config "$FARM_DIR/$1.conf"
        farm_wait_until 15 lic_ready "$2" "$1"
}
# Writes $FARM_DIR/NODE.conf: host role with its licensing client at SITE;
# more [host] lines as further arguments.
host_conf() { # NODE SITE [LINE...]
        local n=$1 site=$2
        shift 2
        { cat <<CONF; printf '%s\n' "$@"; } | tsagent_conf "$n"
[host]
certificate = $pki/$n.crt
key = $pki/$n.key
ca = $pki/ca.crt
track-sessions = no
licensing = yes
site = $site
trusted-license-keys = $trust
license-state = $FARM_DIR/$n-grace.json
license-discovery-interface = eth0
license-timeout = 1s
license-rediscovery-wait = 500ms
CONF
}
# host_api NODE METHOD PATH [BODY]: the local API, as the session host calls it.
host_api() {
        farm_exec "$1" curl -sS --max-time 30 --unix-socket /run/tsfarm/agent.sock -X "$2" \
                -H 'Content-Type: application/json' ${4:+--data-binary "$4"} "http://localhost$3"
}
host_status() { # NODE METHOD PATH BODY: the HTTP status only
        farm_exec "$1" curl -sS -o /dev/null -w '%{http_code}' --max-time 30 --unix-socket /run/tsfarm/agent.sock \
                -X "$2" -H 'Content-Type: application/json' --data-binary "$4" "http://localhost$3"
}
# device_body HWID DEVICE USER [TOKEN]
device_body() {
        jq -nc --arg h "$1" --arg d "$2" --arg u "$3" --arg t "${4:-}" \
                '{hardware_id: $h, device_name: $d, user_name: $u} + (if $t == "" then {} else {token: $t} end)'
}
obtain() { host_api "$1" POST /v1/license/obtain "$(device_body "$2" "$3" "$4" "${5:-}")"; }
logon() { host_api "$1" POST /v1/license/logon "$(device_body "$2" "$3" "$4" "$5")"; }
check() { host_api "$1" POST /v1/license/check "$(jq -nc --arg h "$2" --arg t "$3" '{hardware_id: $h, token: $t}')"; }
hwid() { head -c 32 /dev/urandom | xxd -p -c 64; }
# True when license server NAME knows PEER (by name) as a reachable peer.
lic_sees_peer() { # NAME PEER
        curl -sS --max-time 5 --unix-socket "$(lsock "$1")" http://localhost/v1/peers |
                jq -e --arg p "$2" '[.peers[] | select(.name == $p and .reachable)] | length == 1' >/dev/null
}
# True when host NODE's licensing client finds N license servers reachable
# and trusted (GET /v1/license/diagnose probes each one).
host_sees_servers() { # NODE N
        host_api "$1" GET /v1/license/diagnose 2>/dev/null |
                jq -e --argjson n "$2" '[.servers[] | select(.reachable and .trusted)] | length == $n' >/dev/null
}
