# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# sessionfarm.sh: the whole farm, real processes in namespaces (farm.sh):
#
#   dirsrv   (.50)   tsagent, directory role (embedded SQLite)
#   lic1     (.61)   tsagent, licensing role, site east, a pack of 2 CALs
#   lic2     (.62)   tsagent, licensing role, site west, a pack of 1 CAL
#   node1..3 (.1-3)  tsagent, host role (follows the directory, licensing
#                    client, track-sessions = no, steering to local-backend
#                    = tshost's port), and tshost on 0.0.0.0:3389 as the
#                    node's RDP server with a test-only PAM service
#   client1  (.101)  where tsclient runs (sf_client, sf_load)
#
# plus a farm CA and a certificate per machine (tsctl pki), the license
# servers' signing keys as the hosts' trusted keys, and local test users
# ${SF_USER_PREFIX}1..${SF_USERS} (useradd -m, one password for all,
# chpasswd) with the PAM service /etc/pam.d/tshost-sf-<farm id>.
#
#   source tests/integration/lib/farm.sh
#   source tests/integration/lib/tsagent.sh
#   source tests/integration/lib/licfarm.sh
#   source tests/integration/lib/sessionfarm.sh
#   trap sf_down EXIT               # sf_up installs it if there is no EXIT trap
#   sf_up || exit 1
#   sf_client pc-a --server "$(farm_addr node1)" --user "$(sf_user 1)" --json --script s.txt
#   sf_directory_sessions "$(sf_user 1)"
#
# No assertions here: functions return non-zero on failure and say on
# stderr what failed and which log to read ($FARM_DIR/logs/NAME.log: agent-
# node1, tshost-node1, directory, agent-lic1, ...). Quiet by default;
# SF_VERBOSE=1 narrates the set-up on stderr.
#
# sf_down tears everything down: farm_down (every process of every
# machine, shells included), then the users (userdel -r) and the PAM file.
# A run that died without its teardown leaves users and a PAM file named
# after its farm id; the next sf_up removes them (sf_gc).
#
# Knobs (set before sf_up):
#   SF_USERS=20             test users made
#   SF_PACK1=2 SF_PACK2=1   CALs in lic1's and lic2's packs
#   SF_KEEPALIVE=1s SF_PEER_TIMEOUT=3s   tshost's: a client silent this long
#                           (a pulled cable) is gone, its session disconnected
#   SF_TSHOST_LOG_LEVEL=info
#   SF_PRODUCT_VERSION=2025

SF_USERS=${SF_USERS:-20}
SF_PACK1=${SF_PACK1:-2}
SF_PACK2=${SF_PACK2:-1}
SF_KEEPALIVE=${SF_KEEPALIVE:-1s}
SF_PEER_TIMEOUT=${SF_PEER_TIMEOUT:-3s}
SF_TSHOST_LOG_LEVEL=${SF_TSHOST_LOG_LEVEL:-info}
SF_PRODUCT_VERSION=${SF_PRODUCT_VERSION:-2025}
SF_VERBOSE=${SF_VERBOSE:-0}
SF_SITE=east
SF_NODES=(node1 node2 node3)
SF_CLIENT=client1
SF_FARM_ID=tsfarm # tshost's --farm-id default: the device store's farm.<id>

# Set by sf_up.
SF_DIR=
SF_PAM_SERVICE=
SF_USER_PREFIX=
SF_PASSWORD_FILE=
SF_DIR_SOCKET=
SF_DIR_URL=
_SF_USERS_MADE=()

# ---- messages ------------------------------------------------------------------------

_sf_say() {
        if [[ $SF_VERBOSE == 1 ]]; then
                echo "sessionfarm: $*" >&2
        fi
        return 0
}

# Says what failed and where to look; returns 1.
_sf_fail() { # WHAT [LOG...]
        local what=$1 f
        shift
        echo "sessionfarm: $what" >&2
        for f in "$@"; do
                echo "sessionfarm:   see $f" >&2
                farm_log_tail "$f" 15 >&2
        done
        return 1
}

# Exits 77 (skipped, with the reason) unless the whole farm can run here:
# root, the tools, the four binaries built, pam_unix for the test users.
sf_require() { # NAME
        tsagent_require "$1" ip nsenter unshare ss jq curl useradd userdel chpasswd -- \
                tsagent tsctl tshost tsclient
        if ! compgen -G "/lib/*/security/pam_unix.so" >/dev/null &&
                ! compgen -G "/lib/security/pam_unix.so" >/dev/null; then
                farm_skip "$1" "pam_unix.so is not installed (libpam-modules)"
                exit 77
        fi
}

# ---- the whole farm ----------------------------------------------------------------------

# Brings the whole farm up (see the top of this file). Returns non-zero,
# with what failed on stderr, when any part does not come up in time.
sf_up() {
        local n
        for n in tsagent tsctl tshost tsclient; do
                [[ -x $TSAGENT_BUILD/$n ]] || {
                        _sf_fail "$TSAGENT_BUILD/$n is not built (make)"
                        return 1
                }
        done
        if [[ -z $(trap -p EXIT) || $(trap -p EXIT) == *"'farm_down'"* ]]; then
                trap sf_down EXIT
        fi
        farm_up 3 1 || return 1
        farm_add_node dirsrv "$FARM_SUBNET.50" || return 1
        farm_add_node lic1 "$FARM_SUBNET.61" || return 1
        farm_add_node lic2 "$FARM_SUBNET.62" || return 1
        SF_DIR=$FARM_DIR/sessionfarm
        mkdir -m 0700 "$SF_DIR" "$SF_DIR/devices" "$SF_DIR/machines"
        : >"$SF_DIR/timeline"
        sf_mark "farm $FARM_ID up: namespaces"

        sf_gc
        sf_users_up || return 1
        sf_mark "PAM service $SF_PAM_SERVICE, users ${SF_USER_PREFIX}1..$SF_USERS"

        # PKI: a farm CA, a certificate per machine. licfarm.sh's
        # functions read $pki and $trust.
        pki=$FARM_DIR/pki
        trust=$FARM_DIR/trust
        tsagent_pki "sessionfarm-$FARM_ID" "$(farm_addr dirsrv)" "${SF_NODES[@]}" lic1 lic2 ||
                { _sf_fail "tsctl pki failed"; return 1; }
        mkdir -m 0755 "$trust"

        sf_directory_up || return 1
        sf_license_servers_up || return 1
        sf_hosts_up || return 1
        sf_machine "$SF_CLIENT" >/dev/null
        sf_mark "farm ready"
        _sf_say "farm $FARM_ID ready in $FARM_DIR"
}

# Tears the whole farm down: processes, namespaces, users, the PAM file.
# Never fails; safe to call twice and from an EXIT trap at any stage.
sf_down() {
        farm_down
        sf_users_down
        return 0
}

# ---- PAM and users -----------------------------------------------------------------------

# The PAM service and the users, named after the farm id so that sf_gc can
# tell a dead run's leftovers.
sf_users_up() {
        local i u
        SF_PAM_SERVICE=tshost-sf-$FARM_ID
        SF_USER_PREFIX=sf${FARM_ID}u
        SF_PASSWORD_FILE=$SF_DIR/password
        cat >"/etc/pam.d/$SF_PAM_SERVICE" <<'PAM'
# tsfarm tests (tests/integration/lib/sessionfarm.sh): local accounts, no delay.
auth     required pam_unix.so nodelay
account  required pam_unix.so
session  required pam_unix.so
PAM
        (umask 077 && echo "pw-$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n')" >"$SF_PASSWORD_FILE")
        for ((i = 1; i <= SF_USERS; i++)); do
                u=$SF_USER_PREFIX$i
                useradd -m -s /bin/bash "$u" || {
                        _sf_fail "useradd $u failed"
                        return 1
                }
                _SF_USERS_MADE+=("$u")
        done
        for u in "${_SF_USERS_MADE[@]}"; do
                echo "$u:$(cat "$SF_PASSWORD_FILE")"
        done | chpasswd || {
                _sf_fail "chpasswd failed"
                return 1
        }
}

# Removes what sf_users_up made. Never fails.
sf_users_down() {
        local u
        for u in "${_SF_USERS_MADE[@]}"; do
                userdel -r -f "$u" >/dev/null 2>&1 || true
        done
        _SF_USERS_MADE=()
        if [[ -n $SF_PAM_SERVICE ]]; then
                rm -f "/etc/pam.d/$SF_PAM_SERVICE"
        fi
        SF_PAM_SERVICE=
        return 0
}

# Removes the users and PAM files of session farms whose run is gone
# (farm_gc, run by farm_up, has already taken their namespaces).
sf_gc() {
        local f id dir owner pid u
        for f in /etc/pam.d/tshost-sf-??????; do
                [[ -e $f ]] || continue
                id=${f##*-}
                [[ $id == "${FARM_ID:-}" ]] && continue
                dir=$FARM_TMPDIR/tsf-$id
                owner=$(cat "$dir/owner" 2>/dev/null || true)
                pid=${owner%% *}
                if [[ -n $owner && ! -e $dir/kept && $(_farm_starttime "$pid") == "${owner#* }" ]]; then
                        continue # a live parallel run
                fi
                echo "sessionfarm: removing the test users and PAM service of dead run $id" >&2
                awk -F: -v p="sf${id}u" 'index($1, p) == 1 && substr($1, length(p) + 1) ~ /^[0-9]+$/ { print $1 }' \
                        /etc/passwd | while read -r u; do
                        userdel -r -f "$u" >/dev/null 2>&1 || true
                done
                rm -f "$f"
        done
        return 0
}

# Prints test user number N's name.
sf_user() {
        echo "$SF_USER_PREFIX$1"
}

# ---- the directory ---------------------------------------------------------------------------

sf_directory_up() {
        local addr
        addr=$(farm_addr dirsrv)
        SF_DIR_SOCKET=$FARM_DIR/dir-run/directory.sock
        SF_DIR_URL=https://$addr:7400
        tsagent_directory_conf "$addr" <<CONF
socket = $SF_DIR_SOCKET
CONF
        farm_spawn dirsrv directory env TSFARM_LOG_TARGET=stderr "$TSAGENT_BUILD/tsagent" \
                --config "$FARM_DIR/directory.conf"
        farm_wait_until 15 _sf_directory_ready ||
                { _sf_fail "the directory does not serve on $addr:7400" "$(farm_log directory)"; return 1; }
        sf_mark "directory serves on $addr:7400"
}

_sf_directory_ready() {
        farm_alive "$(farm_pid directory)" || return 125
        farm_listening dirsrv "$(farm_addr dirsrv)" 7400 && sf_tsctl_dir nodes --json >/dev/null 2>&1
}

# tsctl against the directory's local socket.
sf_tsctl_dir() {
        "$TSAGENT_BUILD/tsctl" --directory-socket "$SF_DIR_SOCKET" "$@"
}

# Prints the directory's sessions as JSON ({"sessions": [...]}), USER's only
# when given.
sf_directory_sessions() { # [USER]
        sf_tsctl_dir sessions ${1:+"$1"} --json
}

# Prints "NODE STATE" of USER's session in the directory (one line per
# session; nothing when it has none).
sf_directory_session_of() { # USER
        sf_directory_sessions "$1" 2>/dev/null |
                jq -r --arg u "$1" '.sessions[] | select(.user == $u or .user_key == $u) | "\(.node) \(.state)"'
}

# True when the directory has exactly "NODE STATE" for USER ("" for none).
sf_directory_is() { # USER "NODE STATE"
        [[ $(sf_directory_session_of "$1") == "$2" ]]
}

# True when the directory knows NODE up.
sf_node_up() {
        sf_tsctl_dir nodes --json 2>/dev/null |
                jq -e --arg n "$1" '.nodes[] | select(.name == $n) | .up' >/dev/null
}

# ---- license servers -------------------------------------------------------------------------

sf_license_servers_up() {
        local n site count
        for n in lic1 lic2; do
                site=east count=$SF_PACK1
                [[ $n == lic2 ]] && site=west count=$SF_PACK2
                lic_conf "$n" "$site"
                lic_start "$n" "agent-$n" ||
                        { _sf_fail "license server $n does not serve" "$(farm_log "agent-$n")"; return 1; }
                cp "$FARM_DIR/$n-state/license-signing.pub" "$trust/$n.pem"
                if ((count > 0)); then
                        tsctl_lic "$n" install-pack "$n-$SF_PRODUCT_VERSION" --version "$SF_PRODUCT_VERSION" \
                                --count "$count" >/dev/null ||
                                { _sf_fail "install-pack at $n failed" "$(farm_log "agent-$n")"; return 1; }
                fi
        done
        sf_mark "license servers lic1 ($SF_PACK1 CALs, east) and lic2 ($SF_PACK2, west) serve"
}

# Prints both license servers' reports (packs and records) without their
# time stamps: equal output, nothing issued or changed in between.
sf_license_reports() {
        local n
        for n in lic1 lic2; do
                tsctl_lic "$n" report --json | jq -S 'del(.generated, .generated_usec)' || return 1
                tsctl_lic "$n" issued --json | jq -S . || return 1
        done
}

# Verifies TOKEN offline for hardware id HWID against the farm's trusted
# keys (tsctl license verify --json); prints its JSON.
sf_license_verify() { # TOKEN HWID
        "$TSCTL" license verify "$1" --trust "$trust" --hardware-id "$2" --json || true
}

# ---- terminal-server hosts -----------------------------------------------------------------

sf_hosts_up() {
        local n
        for n in "${SF_NODES[@]}"; do
                # directory-query-timeout above the 250 ms default: a TLS
                # handshake on two busy cores may take longer, and a query
                # that times out places locally.
                host_conf "$n" "$SF_SITE" \
                        "directory = $SF_DIR_URL" \
                        "local-backend = 127.0.0.1:3389" \
                        "directory-query-timeout = 3s" \
                        "product-version = $SF_PRODUCT_VERSION"
                tsagent_start "$n" "agent-$n" ||
                        { _sf_fail "the host agent on $n did not start" "$(farm_log "agent-$n")"; return 1; }
        done
        for n in "${SF_NODES[@]}"; do
                farm_wait_until 15 sf_node_up "$n" ||
                        { _sf_fail "$n did not register with the directory" "$(farm_log "agent-$n")" \
                                "$(farm_log directory)"; return 1; }
                farm_wait_until 15 host_sees_servers "$n" 2 ||
                        { _sf_fail "$n does not find both license servers" "$(farm_log "agent-$n")"; return 1; }
        done
        sf_mark "host agents on ${SF_NODES[*]}: registered, both license servers found"
        for n in "${SF_NODES[@]}"; do
                sf_tshost_start "$n" || return 1
        done
        sf_mark "tshost listens on ${SF_NODES[*]}"
}

# Starts tshost on NODE as "tshost-NODE" (a log of its own) and waits until
# it listens.
sf_tshost_start() { # NODE
        local n=$1
        farm_spawn "$n" "tshost-$n" env TSFARM_LOG_TARGET=stderr TSFARM_LOG_LEVEL="$SF_TSHOST_LOG_LEVEL" \
                "$TSAGENT_BUILD/tshost" --listen 0.0.0.0:3389 \
                --certificate "$pki/$n.crt" --key "$pki/$n.key" --pam-service "$SF_PAM_SERVICE" \
                --node-name "$n" --product-version "$SF_PRODUCT_VERSION" \
                --keepalive "$SF_KEEPALIVE" --peer-timeout "$SF_PEER_TIMEOUT"
        farm_wait_port "$n" 0.0.0.0 3389 10 2>/dev/null ||
                { _sf_fail "tshost does not listen on $n:3389" "$(farm_log "tshost-$n")"; return 1; }
}

# The host agent's local API on NODE, as a session host calls it
# (licfarm.sh's host_api): prints the body.
sf_host_api() { # NODE METHOD PATH [BODY]
        host_api "$@"
}

# Prints NODE's agent's answer to "where is USER's session" (JSON: found,
# node, address, state, here, ...), the question tshost asks before a
# redirect.
sf_lookup() { # NODE USER
        host_api "$1" GET "/v1/sessions/lookup?user=$2"
}

# ---- clients and devices -----------------------------------------------------------------

# Prints the machine-id file of machine NAME, making it (random) the first
# time. A device store moved to another machine is another device.
sf_machine() { # NAME
        local f=$SF_DIR/machines/$1
        if [[ ! -s $f ]]; then
                od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$f.tmp" && echo >>"$f.tmp" && mv "$f.tmp" "$f"
        fi
        echo "$f"
}

# Prints the store directory of DEVICE.
sf_store() { # DEVICE
        echo "$SF_DIR/devices/$1"
}

# Runs tsclient in the client namespace as device DEVICE: its own store
# (sf_store), the farm's CA (any node's certificate: --tls-name any), the
# client machine's id (SF_MACHINE=NAME: another machine's), the device name
# DEVICE and the test users' password; then ARGS (later options win, e.g.
# --password-file F). Returns tsclient's exit status.
sf_client() { # DEVICE ARGS...
        local dev=$1
        shift
        farm_exec "$SF_CLIENT" "$TSAGENT_BUILD/tsclient" --ca "$pki/ca.crt" --tls-name any \
                --store "$(sf_store "$dev")" --machine-id-file "$(sf_machine "${SF_MACHINE:-$SF_CLIENT}")" \
                --device-name "$dev" --password-file "$SF_PASSWORD_FILE" "$@"
}

# Like sf_client, in the background as farm_spawn NAME (output in
# $(farm_log NAME), pid in $FARM_LAST_PID).
sf_client_spawn() { # NAME DEVICE ARGS...
        local name=$1 dev=$2
        shift 2
        farm_spawn "$SF_CLIENT" "$name" "$TSAGENT_BUILD/tsclient" --ca "$pki/ca.crt" --tls-name any \
                --store "$(sf_store "$dev")" --machine-id-file "$(sf_machine "${SF_MACHINE:-$SF_CLIENT}")" \
                --device-name "$dev" --password-file "$SF_PASSWORD_FILE" "$@"
}

# Prints DEVICE's hardware id (tsclient device), for tsctl license verify.
sf_device_hwid() { # DEVICE
        farm_exec "$SF_CLIENT" "$TSAGENT_BUILD/tsclient" device --store "$(sf_store "$1")" \
                --machine-id-file "$(sf_machine "${SF_MACHINE:-$SF_CLIENT}")" --json | jq -r .hardware_id
}

# Prints the license token DEVICE holds for the farm (nothing when none).
sf_device_token() { # DEVICE
        cat "$(sf_store "$1")/farm.$SF_FARM_ID" 2>/dev/null || true
}

# Runs the load generator in the client namespace against ENTRY-NODE with
# the test users (all of them unless ARGS say --users) and device stores
# under $SF_DIR/load; then ARGS (e.g. --devices 200 --duration 60s --json).
sf_load() { # ENTRY-NODE ARGS...
        local entry=$1
        shift
        farm_exec "$SF_CLIENT" "$TSAGENT_BUILD/tsclient" load --server "$(farm_addr "$entry")" \
                --ca "$pki/ca.crt" --tls-name any --store "$SF_DIR/load" \
                --machine-id-file "$(sf_machine "$SF_CLIENT")" --password-file "$SF_PASSWORD_FILE" \
                --users "$SF_USERS" --user-prefix "$SF_USER_PREFIX" "$@"
}

# ---- timeline --------------------------------------------------------------------------------

# Notes an event with the time since the farm came up (for a demo's
# narration or a failure's context).
sf_mark() { # TEXT...
        [[ -n $SF_DIR && -d $SF_DIR ]] || return 0
        local _farm_ms
        _farm_now
        echo "$_farm_ms $*" >>"$SF_DIR/timeline"
        _sf_say "$*"
}

# Prints the timeline: seconds since the first mark, then the event.
sf_timeline() {
        [[ -s $SF_DIR/timeline ]] || return 0
        awk 'NR == 1 { t0 = $1 } { ms = $1; $1 = ""; printf "%8.3f s %s\n", (ms - t0) / 1000, substr($0, 2) }' \
                "$SF_DIR/timeline"
}

# Prints the farm's log files, one a line (where to look).
sf_logs() {
        ls -1 "$FARM_DIR"/logs/*.log 2>/dev/null
}
