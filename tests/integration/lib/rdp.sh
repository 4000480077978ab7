# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck shell=bash
#
# rdp.sh: real RDP in a farm (farm.sh): xrdp + xrdp-sesman with Xvnc
# sessions in farm nodes, FreeRDP and rdesktop under Xvfb in a client node.
#
#   source tests/integration/lib/farm.sh
#   source tests/integration/lib/rdp.sh
#   trap farm_down EXIT
#   rdp_require || { echo "SKIP: rdp ($RDP_MISSING)"; exit 77; }
#   farm_up 2 1
#   rdp_user_add tsfuser1               # random password: rdp_user_pass tsfuser1
#   rdp_node_start node1
#   rdp_client_start client1
#   s=$(rdp_login 10.239.0.1 tsfuser1 "$(rdp_user_pass tsfuser1)" freerdp)
#   r=$(rdp_reconnect 10.239.0.1 tsfuser1 "$(rdp_user_pass tsfuser1)" freerdp)
#   [[ $s == "$r" ]]                     # the same session: node1:10:4242
#
# A session's identity is NODE:DISPLAY:PID, written by the session itself: the
# node's startwm.sh (run by xrdp-sesman as the user when it creates a session)
# appends "TIME login USER NODE:DISPLAY:PID" to the farm-wide event file
# $FARM_DIR/rdp/events, and reconnectwm.sh (run by xrdp-sesman when a client
# reattaches) appends "TIME reconnect USER <same identity>". NODE is the
# node's hostname: a client steered through a gateway learns where it landed.
#
# Everything lives inside the farm and goes with farm_down:
#   * users exist only inside the nodes: /etc/passwd, /etc/shadow and
#     /etc/group are bind-mounted copies ($FARM_DIR/rdp/etc) with the test
#     users appended, so the host's user database is never written and a
#     killed run leaves no user behind; homes are per node
#     ($FARM_DIR/nodes/NODE/rdphome/USER, mounted at $FARM_DIR/rdp/home);
#   * each node has its own /etc/xrdp (its own TLS certificate and RSA keys,
#     xrdp.ini with Xvnc only, sesman.ini, the session scripts) bind-mounted
#     from $FARM_DIR/nodes/NODE/xrdp-etc, and /run/xrdp in its private /run;
#   * logs: $FARM_DIR/nodes/NODE/log/{xrdp,xrdp-sesman}.log; the daemons'
#     stdout (Xvnc's output lands in sesman's) in
#     $FARM_DIR/logs/{xrdp,xrdp-sesman}-NODE.log; clients in
#     $FARM_DIR/logs/rdp-client-N.log, Xvfb in $FARM_DIR/logs/xvfb-CLIENT.log;
#   * docs/testing-farm.md has the function list and measured timings;
#   * every process runs in a node's cgroup: farm_down kills sessions too.

RDP_PORT=${RDP_PORT:-3389}
RDP_TIMEOUT=${RDP_TIMEOUT:-20}
RDP_BPP=${RDP_BPP:-16}
RDP_SIZE=${RDP_SIZE:-800x600}
RDP_CLIENT_NODE=${RDP_CLIENT_NODE:-client1}
declare -g RDP_MISSING=''
declare -gA RDP_PASS=()

# True when every program the harness runs is installed; otherwise sets
# RDP_MISSING to the missing ones (the caller prints SKIP and exits 77).
rdp_require() {
        local t missing=()
        for t in xrdp xrdp-sesman xrdp-keygen Xvnc Xvfb xfreerdp rdesktop openssl \
                ss nsenter unshare; do
                command -v "$t" >/dev/null || missing+=("$t")
        done
        [[ -n $(find /usr/lib -name libvnc.so -path '*xrdp*' -print -quit 2>/dev/null) ]] ||
                missing+=(xrdp/libvnc.so)
        if ((${#missing[@]})); then
                # shellcheck disable=SC2034 # the caller prints it
                RDP_MISSING="missing ${missing[*]}; tools/deps.sh check installs them"
                return 1
        fi
}

# Prepares the farm-wide RDP state: the user database copies the nodes will
# mount, the event file the sessions write. Once per farm, after farm_up;
# the other rdp_ functions call it when it has not run yet.
rdp_setup() {
        local d=$FARM_DIR/rdp
        [[ -n $FARM_DIR ]] || {
                echo "rdp: no farm (farm_up first)" >&2
                return 1
        }
        [[ -d $d ]] && return 0
        mkdir -m 0755 "$d" "$d/etc" "$d/home"
        cp /etc/passwd /etc/group "$d/etc/"
        cp /etc/shadow "$d/etc/shadow"
        chmod 0640 "$d/etc/shadow"
        chgrp shadow "$d/etc/shadow" 2>/dev/null || true
        # Sessions run as the test users and append here.
        : >"$d/events"
        chmod 0666 "$d/events"
        echo 0 >"$d/clients"
}

# Adds a login USER with password PASS (random if omitted) to the farm's user
# database, with a home on every node. Prints nothing; the password is
# available with rdp_user_pass. Works before or after rdp_node_start (the
# files are appended to in place, so the nodes' bind mounts see the change).
rdp_user_add() {
        local user=$1 pass=${2:-} d=$FARM_DIR/rdp uid hash
        rdp_setup || return 1
        [[ $user =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || {
                echo "rdp_user_add: bad user name '$user'" >&2
                return 1
        }
        if grep -q "^$user:" "$d/etc/passwd"; then
                echo "rdp_user_add: $user exists" >&2
                return 1
        fi
        [[ -n $pass ]] || pass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
        # An id free in the host's database and in ours.
        uid=$(awk -F: '{ u[$3] = 1 } END { for (i = 61000; i < 62000; i++) if (!(i in u)) { print i; exit } }' \
                /etc/passwd /etc/group "$d/etc/passwd" "$d/etc/group")
        hash=$(openssl passwd -6 -stdin <<<"$pass")
        echo "$user:x:$uid:$uid:tsfarm test user:$d/home/$user:/bin/sh" >>"$d/etc/passwd"
        echo "$user:x:$uid:" >>"$d/etc/group"
        echo "$user:$hash:$(($(date +%s) / 86400)):0:99999:7:::" >>"$d/etc/shadow"
        (umask 077 && echo "$user $pass" >>"$d/users")
        RDP_PASS[$user]=$pass
        _rdp_make_homes
}

# Prints USER's password.
rdp_user_pass() {
        if [[ -n ${RDP_PASS[$1]:-} ]]; then
                echo "${RDP_PASS[$1]}"
        else
                awk -v u="$1" '$1 == u { print $2; f = 1 } END { exit !f }' "$FARM_DIR/rdp/users"
        fi
}

# Creates every user's home on every node that runs RDP (homes are per node,
# as on real terminal servers without shared home directories).
_rdp_make_homes() {
        local nd user uid h
        for nd in "$FARM_DIR"/nodes/*/rdphome; do
                [[ -d $nd ]] || continue
                while IFS=: read -r user _ uid _; do
                        h=$nd/$user
                        [[ -d $h ]] && continue
                        mkdir -m 0700 "$h"
                        chown "$uid:$uid" "$h"
                done < <(awk -F: '$5 == "tsfarm test user"' "$FARM_DIR/rdp/etc/passwd")
        done
}

# Writes NODE's private /etc/xrdp: the packaged keymaps, a certificate and
# RSA keys of its own, xrdp.ini (Xvnc only, so an auto-logon never lands in
# the Xorg module the package lists first, whose xorgxrdp is not installed),
# sesman.ini, and the session scripts that record identities.
_rdp_write_etc() {
        local node=$1 port=$2 nd etc log
        nd=$(farm_node_dir "$node")
        etc=$nd/xrdp-etc
        log=$nd/log
        mkdir -p "$etc" "$log"
        cp /etc/xrdp/km-*.ini /etc/xrdp/xrdp_keyboard.ini "$etc/"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$node" \
                -keyout "$etc/key.pem" -out "$etc/cert.pem" 2>"$log/openssl.log" ||
                { farm_log_tail "$log/openssl.log" >&2; return 1; }
        xrdp-keygen xrdp "$etc/rsakeys.ini" 2048 >"$log/xrdp-keygen.log" 2>&1 ||
                { farm_log_tail "$log/xrdp-keygen.log" >&2; return 1; }
        chmod 0600 "$etc/key.pem" "$etc/rsakeys.ini"
        cat >"$etc/xrdp.ini" <<EOF
; Written by tests/integration/lib/rdp.sh for farm node $node.
[Globals]
ini_version=1
fork=true
port=tcp://:$port
use_vsock=false
tcp_nodelay=true
tcp_keepalive=true
security_layer=negotiate
crypt_level=high
certificate=/etc/xrdp/cert.pem
key_file=/etc/xrdp/key.pem
ssl_protocols=TLSv1.2, TLSv1.3
autorun=Xvnc
allow_channels=true
allow_multimon=false
bitmap_cache=true
bitmap_compression=true
bulk_compression=true
max_bpp=32
new_cursors=true
use_fastpath=both

[Logging]
LogFile=$log/xrdp.log
LogLevel=INFO
EnableSyslog=false

[Channels]
rdpdr=false
rdpsnd=false
drdynvc=false
cliprdr=false
rail=false
xrdpvr=false
tcutils=false

[Xvnc]
name=Xvnc
lib=libvnc.so
username=ask
password=ask
ip=127.0.0.1
port=-1
EOF
        cat >"$etc/sesman.ini" <<EOF
; Written by tests/integration/lib/rdp.sh for farm node $node.
[Globals]
ListenAddress=127.0.0.1
ListenPort=3350
EnableUserWindowManager=false
UserWindowManager=startwm.sh
DefaultWindowManager=startwm.sh
ReconnectScript=reconnectwm.sh

[Security]
AllowRootLogin=false
MaxLoginRetry=4
TerminalServerUsers=tsusers
TerminalServerAdmins=tsadmins
AlwaysGroupCheck=false

[Sessions]
X11DisplayOffset=10
MaxSessions=50
KillDisconnected=false
DisconnectedTimeLimit=0
IdleTimeLimit=0
Policy=Default

[Logging]
LogFile=$log/xrdp-sesman.log
LogLevel=INFO
EnableSyslog=false

[Xvnc]
param=Xvnc
param=-bs
param=-nolisten
param=tcp
param=-localhost
param=-dpi
param=96

[Chansrv]
FuseMountName=thinclient_drives
FileUmask=077

[ChansrvLogging]
LogLevel=INFO
EnableSyslog=false

[SessionVariables]
EOF
        # The session: records its identity, then stands in for a desktop
        # (exec keeps the pid) until sesman ends it at logoff.
        cat >"$etc/startwm.sh" <<EOF
#!/bin/sh
# Written by tests/integration/lib/rdp.sh: records this session's identity.
d=\${DISPLAY#*:}
d=\${d%%.*}
id="\$(hostname):\$d:\$\$"
echo "\$id" >"\$HOME/.tsf-session-\$d"
echo "\$(date +%s.%N) login \$USER \$id" >>"$FARM_DIR/rdp/events"
exec sleep infinity
EOF
        cat >"$etc/reconnectwm.sh" <<EOF
#!/bin/sh
# Written by tests/integration/lib/rdp.sh: records a reattach to a session.
d=\${DISPLAY#*:}
d=\${d%%.*}
id=\$(cat "\$HOME/.tsf-session-\$d" 2>/dev/null || echo "\$(hostname):\$d:unknown")
echo "\$(date +%s.%N) reconnect \$USER \$id" >>"$FARM_DIR/rdp/events"
EOF
        chmod 0755 "$etc/startwm.sh" "$etc/reconnectwm.sh"
}

# Starts xrdp-sesman and xrdp in NODE, xrdp listening on PORT (default
# $RDP_PORT) on all of the node's addresses, and waits until both listen.
# The node's mount namespace gets the user database, /etc/xrdp and home
# mounts first (they persist there for later farm_exec commands too).
rdp_node_start() {
        local node=$1 port=${2:-$RDP_PORT} nd
        nd=$(farm_node_dir "$node") || return 1
        rdp_setup || return 1
        mkdir -p "$nd/rdphome" "$nd/log"
        chmod 0755 "$nd/rdphome"
        _rdp_make_homes
        _rdp_write_etc "$node" "$port"
        # A restart after farm_kill_all (a crashed node coming back) starts
        # clean, as after a reboot: no pid files, no X locks or sockets (all
        # in the node's private /run and /tmp), and reuses the mounts.
        if [[ -e $nd/rdp-mounted ]]; then
                farm_exec "$node" sh -c 'rm -f /run/xrdp/*.pid /tmp/.X*-lock /tmp/.X11-unix/X*'
        fi
        [[ -e $nd/rdp-mounted ]] || farm_exec "$node" /bin/sh -ec '
                d=$1 nd=$2
                for f in passwd group shadow; do
                        mount --bind "$d/etc/$f" "/etc/$f"
                done
                mount --bind "$nd/xrdp-etc" /etc/xrdp
                mount --bind "$nd/rdphome" "$d/home"
                mkdir -p -m 0755 /run/xrdp
                mkdir -p -m 3777 /run/xrdp/sockdir
                ' sh "$FARM_DIR/rdp" "$nd"
        touch "$nd/rdp-mounted"
        farm_spawn "$node" "xrdp-sesman-$node" xrdp-sesman --nodaemon
        farm_spawn "$node" "xrdp-$node" xrdp --nodaemon
        # sesman's "127.0.0.1" ends up as [::1] with 0.9.21: any address.
        if ! farm_wait_port "$node" '*' 3350 10 ||
                ! farm_wait_port "$node" "$(farm_addr "$node")" "$port" 10; then
                echo "rdp_node_start: xrdp did not come up in $node" >&2
                _rdp_node_logs "$node" >&2
                return 1
        fi
}

# Prints the tails of NODE's xrdp logs (for failure messages).
_rdp_node_logs() {
        local node=$1 nd
        nd=$(farm_node_dir "$node")
        farm_log_tail "$nd/log/xrdp.log" 15
        farm_log_tail "$nd/log/xrdp-sesman.log" 15
        farm_log_tail "$(farm_log "xrdp-$node")" 5
        farm_log_tail "$(farm_log "xrdp-sesman-$node")" 5
}

# Starts the X server the RDP clients in CLIENT draw on (Xvfb :0 in the
# client's private /tmp) and waits for its socket. Sets RDP_CLIENT_NODE.
rdp_client_start() {
        local client=${1:-$RDP_CLIENT_NODE} nd
        nd=$(farm_node_dir "$client") || return 1
        rdp_setup || return 1
        mkdir -p "$nd/home"
        chmod 0700 "$nd/home"
        farm_spawn "$client" "xvfb-$client" Xvfb :0 -screen 0 1280x1024x24 -nolisten tcp -noreset
        if ! farm_wait_until 10 farm_exec "$client" test -S /tmp/.X11-unix/X0; then
                echo "rdp_client_start: Xvfb did not start in $client" >&2
                farm_log_tail "$(farm_log "xvfb-$client")" >&2
                return 1
        fi
        RDP_CLIENT_NODE=$client
}

# Connects CLIENT (freerdp or rdesktop) from $RDP_CLIENT_NODE to ADDR[:PORT]
# as USER with PASS (auto-logon: xrdp skips its login screen), extra client
# arguments after the four (e.g. /load-balance-info:... for FreeRDP), and
# waits until the session reports in. Leaves the client connected: end it
# with rdp_disconnect. Prints the session's identity NODE:DISPLAY:PID;
# $FARM_DIR/rdp/last holds "EVENT IDENTITY MS CLIENT-NAME" (EVENT is login
# for a new session, reconnect for a reattach; MS from the client's start
# until xrdp connected it to the session); read it with rdp_last_*.
rdp_connect() {
        local addr=$1 user=$2 pass=$3 client=$4
        shift 4
        local host port n name events size cmd line home _farm_ms t0 t1
        host=${addr%:*}
        port=$RDP_PORT
        [[ $addr == *:* ]] && port=${addr##*:}
        events=$FARM_DIR/rdp/events
        home=$(farm_node_dir "$RDP_CLIENT_NODE")/home
        case $client in
        freerdp)
                # /cert:ignore: every node has its own self-signed certificate.
                cmd=(xfreerdp "/v:$host:$port" "/u:$user" "/p:$pass" /sec:tls /cert:ignore
                        "/bpp:$RDP_BPP" "/size:$RDP_SIZE" -clipboard "$@")
                ;;
        rdesktop)
                cmd=(rdesktop -u "$user" -p - -a "$RDP_BPP" -g "$RDP_SIZE" "$@" "$host:$port")
                ;;
        *)
                echo "rdp_connect: unknown client '$client' (freerdp, rdesktop)" >&2
                return 2
                ;;
        esac
        n=$(($(cat "$FARM_DIR/rdp/clients") + 1))
        echo "$n" >"$FARM_DIR/rdp/clients"
        name=rdp-client-$n
        size=$(stat -c %s "$events")
        _rdp_mark_logs
        echo "$client ${cmd[*]//$pass/***}" >"$(farm_log "$name")"
        _farm_now
        t0=$_farm_ms
        if [[ $client == rdesktop ]]; then
                # rdesktop reads the password from stdin with -p - (so it
                # never shows in ps), then asks on stdin whether to trust the
                # node's self-signed certificate the first time it sees it
                # (remembered in $HOME/.local/share/rdesktop/certs).
                farm_spawn "$RDP_CLIENT_NODE" "$name" /bin/sh -c 'p=$1; shift; exec env "$@" <<EOF
$p
yes
EOF' sh "$pass" DISPLAY=:0 HOME="$home" "${cmd[@]}"
        else
                farm_spawn "$RDP_CLIENT_NODE" "$name" env DISPLAY=:0 HOME="$home" "${cmd[@]}"
        fi
        if ! farm_wait_until "$RDP_TIMEOUT" _rdp_new_event "$events" "$size" "$user" "$FARM_LAST_PID"; then
                if farm_alive "$FARM_LAST_PID"; then
                        echo "rdp_connect: no session for $user via $client to $addr after ${RDP_TIMEOUT}s" >&2
                else
                        echo "rdp_connect: $client to $addr exited before a session for $user reported in" >&2
                fi
                farm_log_tail "$(farm_log "$name")" >&2
                _rdp_all_node_logs >&2
                farm_stop "$name" 2 >/dev/null 2>&1 || true
                return 1
        fi
        line=$(tail -c +"$((size + 1))" "$events" | awk -v u="$user" '$3 == u { print; exit }')
        # "TIME EVENT USER IDENTITY"; IDENTITY is NODE:DISPLAY:PID.
        # shellcheck disable=SC2086 # split into fields on purpose
        set -- $line
        # The session reports in when sesman starts or reattaches it; the
        # client has its desktop once xrdp has connected it to the session's
        # Xvnc, a moment later.
        if ! farm_wait_until "$RDP_TIMEOUT" _rdp_attached "${4%%:*}" "$FARM_LAST_PID"; then
                echo "rdp_connect: $client to $addr: session $4 reported in, but xrdp did not connect the client to it" >&2
                farm_log_tail "$(farm_log "$name")" >&2
                _rdp_node_logs "${4%%:*}" >&2
                farm_stop "$name" 2 >/dev/null 2>&1 || true
                return 1
        fi
        _farm_now
        t1=$_farm_ms
        echo "$2 $4 $((t1 - t0)) $name" >"$FARM_DIR/rdp/last"
        echo "$4"
}

# True once a session event for USER was appended after byte OFFSET; ends
# the wait (125) when the client died.
_rdp_new_event() {
        local events=$1 offset=$2 user=$3 pid=$4
        if tail -c +"$((offset + 1))" "$events" | awk -v u="$user" '$3 == u { f = 1 } END { exit !f }'; then
                return 0
        fi
        farm_alive "$pid" || return 125
        return 1
}

# Records the size of every node's xrdp.log, so _rdp_attached looks only at
# what the connection being made writes.
_rdp_mark_logs() {
        local f
        : >"$FARM_DIR/rdp/marks"
        for f in "$FARM_DIR"/nodes/*/log/xrdp.log; do
                [[ -e $f ]] && echo "$f $(stat -c %s "$f")" >>"$FARM_DIR/rdp/marks"
        done
        return 0
}

# True once NODE's xrdp logged that it connected a client to its session
# (after the mark); ends the wait (125) when the client died. A node that
# does not run this harness's xrdp (a tsfarm reference host) counts as done.
_rdp_attached() {
        local node=$1 pid=$2 f off
        f=$FARM_DIR/nodes/$node/log/xrdp.log
        [[ -e $f ]] || return 0
        off=$(awk -v f="$f" '$1 == f { print $2 }' "$FARM_DIR/rdp/marks")
        tail -c +"$((${off:-0} + 1))" "$f" | grep -q 'VNC connection complete, connected ok' && return 0
        farm_alive "$pid" || return 125
        return 1
}

# Prints the xrdp log tails of every node that runs xrdp.
_rdp_all_node_logs() {
        local nd
        for nd in "$FARM_DIR"/nodes/*/xrdp-etc; do
                [[ -d $nd ]] && _rdp_node_logs "$(basename "$(dirname "$nd")")"
        done
        return 0
}

# Disconnects the client rdp_connect started (the last one, or NAME): kills
# it as a user closing the window would, and waits until it is gone. The
# session stays on its node, disconnected.
# shellcheck disable=SC2120 # NAME is for callers outside this file
rdp_disconnect() {
        local name=${1:-}
        [[ -n $name ]] || name=$(awk '{ print $4 }' "$FARM_DIR/rdp/last")
        farm_stop "$name" 5
}

# Logs in (rdp_connect), then disconnects: the session is left disconnected
# on its node. Prints its identity.
rdp_login() {
        local id
        id=$(rdp_connect "$@") || return 1
        rdp_disconnect
        echo "$id"
}

# Like rdp_login, but the client must reattach to an existing session (a
# reconnect event, not a new session): fails otherwise, saying what it got.
# With EXPECTED_ID in $RDP_EXPECT, it must also be that session.
rdp_reconnect() {
        local id ev
        id=$(rdp_login "$@") || return 1
        ev=$(rdp_last_event)
        if [[ $ev != reconnect ]]; then
                echo "rdp_reconnect: $4 as $2 to $1 got a new session $id, not a reattach" >&2
                echo "$id"
                return 1
        fi
        if [[ -n ${RDP_EXPECT:-} && $id != "$RDP_EXPECT" ]]; then
                echo "rdp_reconnect: reattached to $id, expected $RDP_EXPECT" >&2
                echo "$id"
                return 1
        fi
        echo "$id"
}

# Print fields of the last rdp_connect: event (login|reconnect), identity,
# milliseconds from the client's start until xrdp connected it to the session.
rdp_last_event() { awk '{ print $1 }' "$FARM_DIR/rdp/last"; }
rdp_last_id() { awk '{ print $2 }' "$FARM_DIR/rdp/last"; }
rdp_last_ms() { awk '{ print $3 }' "$FARM_DIR/rdp/last"; }
# The farm_spawn name of the last client (for rdp_disconnect NAME, farm_log).
rdp_last_client() { awk '{ print $4 }' "$FARM_DIR/rdp/last"; }

# Prints the session events so far ("TIME EVENT USER NODE:DISPLAY:PID").
rdp_events() {
        cat "$FARM_DIR/rdp/events"
}

# True while session ID (NODE:DISPLAY:PID) is alive on its node.
rdp_session_alive() {
        local pid=${1##*:}
        [[ $pid =~ ^[0-9]+$ ]] && farm_alive "$pid"
}
