#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# tshost end to end (docs/tshost.md): a farm of node1 (host agent with
# steering and its licensing client, tshost on port 3389 behind it), node2
# (only a name in the node table: where carol's session is), a license
# server lic1 with a pack of 5, and client1 speaking the protocol with
# lib/tsrp.py (lib/tshost_check.py does the checks):
#   logon with a new device (new-license, temporary token validated at
#   logon), a login shell on a pty (echo $$, a command); a lost connection
#   leaves it running; the reconnect (a Device CAL now) reattaches the same
#   shell with its history; a reconnect cookie, once; wrong passwords
#   (3 attempts, then too-many-attempts) change nothing at the license
#   server; malformed, oversize and out-of-phase PDUs get ERROR and a close
#   and change nothing; a user whose disconnected session is on node2 is
#   redirected there; LOGOFF and `exit` end the session and the shell; the
#   session reports reach the agent.
#
# Test-only PAM: /etc/pam.d/tshost-test (pam_unix, nodelay) and two users
# made here (useradd + chpasswd), all removed on exit.
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

tsagent_require tshost ip nsenter unshare python3 jq curl xxd useradd userdel chpasswd -- tsagent tsctl tshost
if ! compgen -G "/lib/*/security/pam_unix.so" >/dev/null && ! compgen -G "/lib/security/pam_unix.so" >/dev/null; then
        farm_skip tshost "pam_unix.so is not installed (libpam-modules)"
        exit 77
fi

pam_service=tshost-test-$$
users=(tsh$$a tsh$$c)
cleanup() {
        local u
        farm_down
        for u in "${users[@]}"; do
                userdel -r -f "$u" >/dev/null 2>&1 || true
        done
        rm -f "/etc/pam.d/$pam_service"
}
trap cleanup EXIT

# The test's own PAM service: local accounts, no delay after a failure.
cat >"/etc/pam.d/$pam_service" <<'PAM'
auth     required pam_unix.so nodelay
account  required pam_unix.so
session  required pam_unix.so
PAM
declare -A pw=()
for u in "${users[@]}"; do
        useradd -m -s /bin/bash "$u"
        pw[$u]=pw-$(head -c 9 /dev/urandom | xxd -p)
        echo "$u:${pw[$u]}" | chpasswd
done

farm_up 2 1
farm_add_node lic1 "$FARM_SUBNET.61"
pki=$FARM_DIR/pki
trust=$FARM_DIR/trust
mkdir -m 700 "$pki"
mkdir "$trust"
"$TSCTL" pki init --dir "$pki" --name tshost-test --days 2 >/dev/null
for n in node1 node2 lic1; do
        "$TSCTL" pki issue --dir "$pki" "$n" --ip "$(farm_addr "$n")" --days 1 >/dev/null
done
chmod 755 "$pki" # the client reads ca.crt

lic_conf lic1 east
if lic_start lic1 agent-lic1; then
        farm_pass "license server lic1 serves"
else
        farm_fail "license server lic1 serves" "not ready" "$(farm_log agent-lic1)"
        exit 1
fi
cp "$FARM_DIR/lic1-state/license-signing.pub" "$trust/lic1.pem"
tsctl_lic lic1 install-pack east-2025 --version 2025 --count 5 >/dev/null

# carol's disconnected session is on node2 (the [sessions] table stands in
# for the directory's mirror).
host_conf node1 east "" "[sessions]" "${users[1]} = node2"
if tsagent_start node1 agent-node1; then
        farm_pass "host agent on node1 started with its licensing client"
else
        farm_fail "host agent on node1 started with its licensing client" "no 'Host role started'" \
                "$(farm_log agent-node1)"
        exit 1
fi
if ! farm_wait_until 10 host_sees_servers node1 1; then
        farm_fail "node1 finds the license server" "diagnose shows none" "$(farm_log agent-node1)"
        exit 1
fi

farm_spawn node1 tshost env TSFARM_LOG_TARGET=stderr TSFARM_LOG_LEVEL=debug "$TSAGENT_BUILD/tshost" \
        --listen 0.0.0.0:3389 --certificate "$pki/node1.crt" --key "$pki/node1.key" \
        --pam-service "$pam_service" --node-name node1 --product-version 2025 --license-timeout 3s
if farm_wait_port node1 0.0.0.0 3389 10; then
        farm_pass "tshost listens on node1:3389"
else
        farm_fail "tshost listens on node1:3389" "not listening" "$(farm_log tshost)"
        exit 1
fi

rc=0
farm_exec client1 env TSHOST_ADDR="$(farm_addr node1)" TSHOST_CA="$pki/ca.crt" \
        TSHOST_NODE2="$(farm_addr node2)" TSHOST_USER="${users[0]}" TSHOST_PASSWORD="${pw[${users[0]}]}" \
        TSHOST_REDIRECT_USER="${users[1]}" TSHOST_REDIRECT_PASSWORD="${pw[${users[1]}]}" \
        TSHOST_LOG="$(farm_log tshost)" TSCTL="$TSCTL" TSHOST_LIC_SOCKET="$(lsock lic1)" \
        python3 "$here/lib/tshost_check.py" || rc=$?

# Every report was made; this agent follows no directory, so each is
# answered 409 no-directory, which tshost logs at debug level.
for ev in logon disconnect reconnect logoff; do
        if grep -q "Host agent follows no directory; $ev of ${users[0]}" "$(farm_log tshost)"; then
                farm_pass "tshost reported $ev to the host agent"
        else
                farm_fail "tshost reported $ev to the host agent" "no report logged" "$(farm_log tshost)"
        fi
done

farm_stop tshost 5
if grep -q "ending every session and shutting down" "$(farm_log tshost)"; then
        farm_pass "tshost stops on SIGTERM"
else
        farm_fail "tshost stops on SIGTERM" "no shutdown logged" "$(farm_log tshost)"
fi
if ((rc != 0 || FARM_FAILED > 0)); then
        farm_log_tail "$(farm_log tshost)" 40
        exit 1
fi
exit 0
