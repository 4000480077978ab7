#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# `make install` honours DESTDIR and PREFIX, and the unit it installs passes
# `systemd-analyze verify` and keeps a good hardening score
# (`systemd-analyze security --offline`). Runs without systemd as PID 1.
set -euo pipefail
src=${TSFARM_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${TSFARM_BUILD:-$src/build}

if ! command -v systemd-analyze >/dev/null; then
        echo "SKIP: systemd-unit (systemd-analyze is not installed)"
        exit 77
fi
root=$(mktemp -d /tmp/tsfarm-install-XXXXXX)
trap 'rm -rf "$root"' EXIT
failed=0
check() { # NAME COMMAND...
        local name=$1
        shift
        if "$@"; then
                echo "PASS: $name"
        else
                echo "FAIL: $name"
                failed=1
        fi
}

make -C "$src" --no-print-directory O="$build" install DESTDIR="$root" PREFIX=/usr UNITDIR=/lib/systemd/system >/dev/null
for f in usr/sbin/tsagent usr/bin/tsctl usr/share/man/man8/tsagent.8 usr/share/man/man5/tsagent.conf.5 \
        usr/share/man/man1/tsctl.1 lib/systemd/system/tsagent.service etc/tsfarm/tsagent.conf; do
        check "install puts $f under DESTDIR" test -e "$root/$f"
done
unit=$root/lib/systemd/system/tsagent.service
check "unit ExecStart follows PREFIX" grep -q "^ExecStart=/usr/sbin/tsagent " "$unit"
check "unit is Type=notify with a watchdog" grep -qz "Type=notify.*WatchdogSec=" "$unit"

# verify wants ExecStart to exist on this filesystem: point it at the build.
sed "s|^ExecStart=/usr/sbin/tsagent|ExecStart=$build/tsagent|" "$unit" >"$root/tsagent.service"
if out=$(systemd-analyze verify --man=no "$root/tsagent.service" 2>&1) && [[ -z $out ]]; then
        echo "PASS: systemd-analyze verify"
else
        echo "FAIL: systemd-analyze verify ($out)"
        failed=1
fi
score=$(systemd-analyze security --offline=true "$root/tsagent.service" 2>/dev/null |
        sed -n 's/.*Overall exposure level for tsagent.service: \([0-9.]*\).*/\1/p')
if [[ -n $score ]] && awk -v s="$score" 'BEGIN { exit !(s <= 5.0) }'; then
        echo "PASS: hardening exposure $score (<= 5.0)"
else
        echo "FAIL: hardening exposure '${score:-none}' (want <= 5.0)"
        failed=1
fi
# The installed config must be one the agent accepts.
check "installed tsagent.conf parses" "$build/tsagent" --config "$root/etc/tsfarm/tsagent.conf" --check-config
exit $failed
