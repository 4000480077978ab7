#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# tsctl pki init/issue: the files it writes are what openssl (and so any
# TLS stack) expects of a farm CA and its node certificates, with the
# modes, names and usages docs/api.md promises; nothing is overwritten
# without --force; bad input is refused without writing anything.
#
#   TSFARM_BUILD=/abs/build tests/integration/pki.sh
#
# Prints "PASS: name" / "FAIL: name (why)" per check; exits 1 on any failure.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${TSFARM_BUILD:-$root/build}
tsctl=$build/tsctl

if ! command -v openssl >/dev/null; then
        echo "SKIP: pki (openssl is not installed; tools/deps.sh check installs it)"
        exit 77
fi

failures=0
pass() { echo "PASS: $1"; }
fail() {
        echo "FAIL: $1 ($2)"
        failures=$((failures + 1))
}
check() { # check NAME COMMAND...: passes if the command succeeds
        local name=$1
        shift
        if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(echo "$out" | head -3 | tr '\n' ' ')"; fi
}

if [[ ! -x $tsctl ]]; then
        fail tsctl-built "no executable $tsctl"
        exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ca=$tmp/ca
other=$tmp/other
mkdir -m 0700 "$ca" "$other"

check init "$tsctl" pki init --dir "$ca" --name acme --days 30
check issue "$tsctl" pki issue --dir "$ca" ts1 --ip 10.0.0.1 --ip fd00::1 --dns ts1.corp.example
check verify-chain openssl verify -CAfile "$ca/ca.crt" "$ca/ts1.crt"
# Both ends of a mutual-TLS connection are nodes: the same certificate must
# pass as a server and as a client.
check verify-server openssl verify -purpose sslserver -CAfile "$ca/ca.crt" "$ca/ts1.crt"
check verify-client openssl verify -purpose sslclient -CAfile "$ca/ca.crt" "$ca/ts1.crt"
check key-matches bash -c "[[ \$(openssl x509 -in '$ca/ts1.crt' -noout -pubkey) == \
\$(openssl pkey -in '$ca/ts1.key' -pubout) ]]"

text=$(openssl x509 -in "$ca/ts1.crt" -noout -text 2>&1)
[[ $text == *"Subject: CN = ts1"* ]] && pass subject-cn || fail subject-cn "no CN = ts1"
[[ $text == *"DNS:ts1, DNS:ts1.corp.example, IP Address:10.0.0.1, IP Address:FD00:0:0:0:0:0:0:1"* ]] &&
        pass sans || fail sans "$(grep -A1 'Alternative Name' <<<"$text" | tail -1)"
[[ $text == *"TLS Web Server Authentication, TLS Web Client Authentication"* ]] &&
        pass eku || fail eku "serverAuth+clientAuth missing"
[[ $text == *"ASN1 OID: prime256v1"* ]] && pass key-p256 || fail key-p256 "not an ECDSA P-256 key"
[[ $text == *"CA:FALSE"* ]] && pass node-not-ca || fail node-not-ca "basicConstraints is not CA:FALSE"
catext=$(openssl x509 -in "$ca/ca.crt" -noout -text 2>&1)
[[ $catext == *"CA:TRUE, pathlen:0"* ]] && pass ca-pathlen || fail ca-pathlen "CA is not CA:TRUE, pathlen:0"
[[ $catext == *"Subject: O = tsfarm, OU = acme, CN = acme farm CA"* ]] && pass ca-subject ||
        fail ca-subject "$(grep Subject: <<<"$catext")"

for f in ca.key ts1.key; do
        m=$(stat -c %a "$ca/$f")
        [[ $m == 600 ]] && pass "mode-$f" || fail "mode-$f" "mode $m"
done
for f in ca.crt ts1.crt; do
        m=$(stat -c %a "$ca/$f")
        [[ $m == 644 ]] && pass "mode-$f" || fail "mode-$f" "mode $m"
done

# The node certificate must not outlive its CA (30 days here).
ca_end=$(date -d "$(openssl x509 -in "$ca/ca.crt" -noout -enddate | cut -d= -f2)" +%s)
node_end=$(date -d "$(openssl x509 -in "$ca/ts1.crt" -noout -enddate | cut -d= -f2)" +%s)
((node_end <= ca_end)) && pass node-within-ca || fail node-within-ca "node ends $node_end after CA $ca_end"

# No overwriting without --force; exit status 2; files untouched.
sum=$(sha256sum "$ca/ca.key" "$ca/ts1.key")
"$tsctl" pki init --dir "$ca" >/dev/null 2>"$tmp/err"
rc=$?
((rc == 2)) && grep -q "already exists" "$tmp/err" && pass init-no-overwrite ||
        fail init-no-overwrite "rc $rc: $(cat "$tmp/err")"
"$tsctl" pki issue --dir "$ca" ts1 >/dev/null 2>"$tmp/err"
rc=$?
((rc == 2)) && pass issue-no-overwrite || fail issue-no-overwrite "rc $rc"
[[ $(sha256sum "$ca/ca.key" "$ca/ts1.key") == "$sum" ]] && pass files-untouched || fail files-untouched "changed"
check issue-force "$tsctl" pki issue --dir "$ca" ts1 --force
[[ $(sha256sum "$ca/ts1.key") != "$(grep ts1.key <<<"$sum")" ]] && pass force-new-key || fail force-new-key "same key"
check verify-after-force openssl verify -CAfile "$ca/ca.crt" "$ca/ts1.crt"

# Bad input: refused, exit 2, nothing written.
for args in "bad/name" "a,DNS:evil" "ca" "ts2 --ip 300.1.1.1" "ts2 --dns bad..name" "ts2 --days 0"; do
        # shellcheck disable=SC2086 # word splitting wanted
        "$tsctl" pki issue --dir "$ca" $args >/dev/null 2>&1
        rc=$?
        ((rc == 2)) && pass "refuse '$args'" || fail "refuse '$args'" "rc $rc"
done
[[ ! -e $ca/ts2.key && ! -e $ca/ts2.crt ]] && pass nothing-written || fail nothing-written "ts2 files exist"
"$tsctl" pki issue --dir "$tmp/nonexistent" ts2 >/dev/null 2>&1
(($? == 2)) && pass no-such-dir || fail no-such-dir "accepted"
"$tsctl" pki issue --dir "$other" ts2 >/dev/null 2>"$tmp/err"
(($? == 2)) && grep -q "pki init" "$tmp/err" && pass no-ca-yet || fail no-ca-yet "$(cat "$tmp/err")"

# A certificate from another farm's CA does not verify against ours.
check other-init "$tsctl" pki init --dir "$other"
check other-issue "$tsctl" pki issue --dir "$other" ts1
if openssl verify -CAfile "$ca/ca.crt" "$other/ts1.crt" >/dev/null 2>&1; then
        fail foreign-rejected "a foreign certificate verified"
else
        pass foreign-rejected
fi

# --json for scripts.
out=$("$tsctl" pki issue --dir "$ca" ts3 --json 2>&1)
[[ $out == *'"certificate": "ts3.crt"'* ]] && pass json || fail json "$out"

((failures == 0))
