#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# tsctl decode-cr against the captured vectors and hand-built PDUs: table
# and JSON output, every input form, and every way the input can be wrong
# (with the exit status an operator's script relies on: 0 valid, 1 invalid
# or truncated, 2 usage or input error).
#
#   TSFARM_BUILD=/abs/build TSFARM_VECTORS=/abs/vectors tests/integration/tsctl-decode-cr.sh
#
# Prints "PASS: name" / "FAIL: name (why)" per check; exits 1 on any failure.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${TSFARM_BUILD:-$root/build}
vectors=${TSFARM_VECTORS:-$root/../shared/vectors}
tsctl=$build/tsctl

for tool in jq xxd; do
        if ! command -v "$tool" >/dev/null; then
                echo "SKIP: tsctl-decode-cr ($tool is not installed; tools/deps.sh check installs it)"
                exit 77
        fi
done

failures=0
pass() { echo "PASS: $1"; }
fail() {
        echo "FAIL: $1 ($2)"
        failures=$((failures + 1))
}

if [[ ! -x $tsctl ]]; then
        fail tsctl-built "no executable $tsctl"
        exit 1
fi
if [[ ! -d $vectors ]]; then
        fail vectors-present "no directory $vectors"
        exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run [ARGS...]: runs tsctl with stdin as given; sets $out, $err, $rc.
run() {
        out=$("$tsctl" "$@" 2>"$tmp/stderr")
        rc=$?
        err=$(<"$tmp/stderr")
}

# expect_rc NAME WANT: checks $rc, showing stderr when it is not as wanted.
expect_rc() {
        if [[ $rc == "$2" ]]; then
                return 0
        fi
        fail "$1" "exit status $rc, expected $2; stderr: ${err:0:200}"
        return 1
}

# expect_json NAME JQ_EXPR: $out must be JSON for which JQ_EXPR is true.
expect_json() {
        if ! jq -e . >/dev/null 2>&1 <<<"$out"; then
                fail "$1" "not JSON: ${out:0:200}"
                return 1
        fi
        if ! jq -e "$2" >/dev/null <<<"$out"; then
                fail "$1" "jq '$(tr -s ' \n' ' ' <<<"$2")' is false for: $(jq -c . <<<"$out" | head -c 300)"
                return 1
        fi
        return 0
}

# expect_out NAME REGEX: a line of $out (the table) must match.
expect_out() {
        if grep -qE -- "$2" <<<"$out"; then
                return 0
        fi
        fail "$1" "no line matching /$2/ in: ${out:0:400}"
        return 1
}

# expect_fixed NAME STRING: $out must contain STRING as it is.
expect_fixed() {
        if grep -qF -- "$2" <<<"$out"; then
                return 0
        fi
        fail "$1" "'$2' not in: ${out:0:400}"
        return 1
}

expect_err() {
        if grep -qE -- "$2" <<<"$err"; then
                return 0
        fi
        fail "$1" "stderr does not match /$2/: ${err:0:300}"
        return 1
}

# mkcr COOKIE_LINE [HEX_AFTER]: hex of TPKT + X.224 CR carrying the line
# (CRLF added; "" for none) and then HEX_AFTER (RDP_NEG_REQ and so on).
mkcr() {
        local cookie_hex="" body li
        if [[ -n $1 ]]; then
                cookie_hex=$(printf '%s\r\n' "$1" | xxd -p | tr -d '\n')
        fi
        body="e00000000000${cookie_hex}${2:-}"
        li=$((${#body} / 2))
        printf '0300%04x%02x%s\n' $((li + 5)) "$li" "$body"
}

# ---- the captured vectors (README.md there lists what each holds) -----------

declare -A cookie=(
        [freerdp-2.11-tls]='rdpuser1'
        [rdesktop-1.9-hybrid]='rdpuser1'
        [freerdp-2.11-longname]='averylongusername01'
        [rdesktop-1.9-domain-backslash]='CORP\rdpuser1'
        [freerdp-2.11-upn]='rdpuser1@corp.example'
        [ms-rdpbcgr-4.1.1-sample]='eltons'
)
declare -A protocols=(
        [freerdp-2.11-tls]=1
        [rdesktop-1.9-hybrid]=3
        [freerdp-2.11-longname]=1
        [rdesktop-1.9-domain-backslash]=3
        [freerdp-2.11-upn]=1
        [ms-rdpbcgr-4.1.1-sample]=0
)

nvec=0
for f in "$vectors"/*.hex; do
        [[ -e $f ]] || continue
        v=$(basename "$f" .hex)
        nvec=$((nvec + 1))
        if [[ -z ${cookie[$v]+set} ]]; then
                fail "vector-$v-known" "no expectations for $v in this script"
                continue
        fi
        want=${cookie[$v]}
        bytes=$(($(tr -d ' \n' <"$f" | wc -c) / 2))

        run decode-cr "$f" </dev/null
        expect_rc "vector-$v-table" 0 &&
                expect_out "vector-$v-table" "^Result +complete, $bytes bytes$" &&
                expect_out "vector-$v-table" "^Cookie kind +mstshash$" &&
                expect_fixed "vector-$v-table" "Cookie value         \"$want\"" &&
                pass "vector-$v-table"

        run decode-cr --json "$f" </dev/null
        expect_rc "vector-$v-json" 0 &&
                expect_json "vector-$v-json" \
                        ".status == \"complete\" and .format == \"hex\" and .bytes == $bytes and .consumed == $bytes
                         and .trailing == 0 and .cookie.kind == \"mstshash\"
                         and .cookie.value == $(jq -n --arg w "$want" '$w')
                         and .neg_req.requested_protocols == ${protocols[$v]}
                         and .preconnection == null and .tpkt_length == $bytes and .x224_li == $bytes - 5" &&
                pass "vector-$v-json"

        # Raw bytes, as cut out of a capture: detected, and forced.
        xxd -r -p "$f" >"$tmp/$v.bin"
        run decode-cr --json "$tmp/$v.bin" </dev/null
        expect_rc "vector-$v-raw" 0 &&
                expect_json "vector-$v-raw" ".format == \"raw\" and .cookie.value == $(jq -n --arg w "$want" '$w')" &&
                pass "vector-$v-raw"

        # Standard input, implicit and as "-".
        run decode-cr --json <"$f"
        expect_rc "vector-$v-stdin" 0 &&
                expect_json "vector-$v-stdin" '.source == "standard input" and .status == "complete"' &&
                pass "vector-$v-stdin"
done
if ((nvec >= 6)); then
        pass vectors-found
else
        fail vectors-found "$nvec .hex files in $vectors, expected 6"
fi

tls=$vectors/freerdp-2.11-tls.hex
tls_hex=$(tr -d ' \n' <"$tls")

run decode-cr --raw - <"$tmp/freerdp-2.11-tls.bin"
expect_rc raw-forced-stdin 0 && expect_out raw-forced-stdin '^Input +standard input: raw, 46 bytes$' &&
        pass raw-forced-stdin

run --json decode-cr - <"$tls"
expect_rc json-before-verb 0 && expect_json json-before-verb '.cookie.value == "rdpuser1"' && pass json-before-verb

# ---- hex spellings operators paste --------------------------------------------

sed 's/../&:/g; s/:$//' <<<"$tls_hex" >"$tmp/colons.hex"
run decode-cr --json "$tmp/colons.hex"
expect_rc hex-colons 0 && expect_json hex-colons '.format == "hex" and .cookie.value == "rdpuser1"' && pass hex-colons

sed 's/../0x& /g' <<<"$tls_hex" >"$tmp/0x.hex"
run decode-cr --json "$tmp/0x.hex"
expect_rc hex-0x-prefixed 0 && expect_json hex-0x-prefixed '.cookie.value == "rdpuser1"' && pass hex-0x-prefixed

xxd -r -p "$tls" | xxd -p -c 8 >"$tmp/wrapped.hex" # several lines
run decode-cr --json --hex "$tmp/wrapped.hex"
expect_rc hex-multiline 0 && expect_json hex-multiline '.cookie.value == "rdpuser1"' && pass hex-multiline

# ---- routing token, correlation info, preconnection PDU, trailing bytes -------

mkcr 'Cookie: msts=3640205228.15629.0000' >"$tmp/routing.hex"
run decode-cr "$tmp/routing.hex"
expect_rc routing-token-table 0 && expect_out routing-token-table '^Cookie kind +routing-token$' &&
        expect_out routing-token-table '^Routing target +172\.31\.249\.216:3389$' && pass routing-token-table
run decode-cr --json "$tmp/routing.hex"
expect_rc routing-token-json 0 &&
        expect_json routing-token-json '.cookie.kind == "routing-token" and .cookie.value == "3640205228.15629.0000"
                and .cookie.address == "172.31.249.216" and .cookie.port == 3389 and .neg_req == null' &&
        pass routing-token-json

# RDP_NEG_REQ with CORRELATION_INFO_PRESENT, then RDP_NEG_CORRELATION_INFO.
corr_id=0102030405060708090a0b0c0e0f1011
mkcr 'Cookie: mstshash=eltons' "0108080003000000""06002400${corr_id}$(printf '%032d' 0)" >"$tmp/corr.hex"
run decode-cr "$tmp/corr.hex"
expect_rc correlation-table 0 && expect_out correlation-table "^Correlation id +$corr_id$" &&
        expect_out correlation-table '^Requested protocols +0x00000003 \(SSL\|HYBRID\)$' &&
        expect_out correlation-table '^Negotiation flags +0x08 \(CORRELATION_INFO_PRESENT\)$' &&
        pass correlation-table
run decode-cr --json "$tmp/corr.hex"
expect_rc correlation-json 0 &&
        expect_json correlation-json ".correlation_id == \"$corr_id\" and .neg_req.flags == 8
                and .neg_req.protocols == [\"SSL\", \"HYBRID\"]" && pass correlation-json

# Preconnection PDU v2 (MS-RDPEPS 2.2.1.2): cbSize, Flags, Version, Id,
# cchPCB (with the NUL), wszPCB in UTF-16LE, then the Connection Request.
pcb_str=TestVM
pcb_w=$(for ((i = 0; i < ${#pcb_str}; i++)); do printf '%02x00' "'${pcb_str:i:1}"; done)0000
cch=$((${#pcb_str} + 1))
le32() { printf '%02x%02x%02x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)); }
le16() { printf '%02x%02x' $(($1 & 255)) $(($1 >> 8 & 255)); }
pcb="$(le32 $((18 + 2 * cch)))$(le32 0)$(le32 2)$(le32 7)$(le16 $cch)$pcb_w"
echo "$pcb$tls_hex" >"$tmp/pcb.hex"
run decode-cr "$tmp/pcb.hex"
expect_rc preconnection-table 0 && expect_out preconnection-table "^Preconnection PDU +version 2, $((18 + 2 * cch)) bytes$" &&
        expect_out preconnection-table '^  String +"TestVM"$' && expect_out preconnection-table '^  Id +7 ' &&
        pass preconnection-table
run decode-cr --json "$tmp/pcb.hex"
expect_rc preconnection-json 0 &&
        expect_json preconnection-json ".preconnection.version == 2 and .preconnection.id == 7
                and .preconnection.string == \"TestVM\" and .consumed == $((18 + 2 * cch + 46))
                and .cookie.value == \"rdpuser1\"" && pass preconnection-json

echo "${tls_hex}deadbeef" >"$tmp/trailing.hex"
run decode-cr "$tmp/trailing.hex"
expect_rc trailing-table 0 && expect_out trailing-table '^Trailing bytes +4 after the PDU, not part of it: deadbeef$' &&
        pass trailing-table
run decode-cr --json "$tmp/trailing.hex"
expect_rc trailing-json 0 && expect_json trailing-json '.consumed == 46 and .trailing == 4 and .trailing_hex == "deadbeef"' &&
        pass trailing-json

# ---- what the parser refuses: exit 1 ------------------------------------------

head -c 40 "$tls" >"$tmp/truncated.hex"
run decode-cr "$tmp/truncated.hex"
expect_rc truncated-table 1 && expect_out truncated-table '^Result +incomplete$' &&
        expect_out truncated-table 'truncated: 20 bytes, the PDU needs more' && pass truncated-table
run decode-cr --json "$tmp/truncated.hex"
expect_rc truncated-json 1 && expect_json truncated-json '.status == "incomplete" and .bytes == 20' && pass truncated-json

run decode-cr </dev/null
expect_rc empty-input 1 && expect_out empty-input '^Result +incomplete$' && expect_out empty-input 'the input is empty' &&
        pass empty-input

# Byte 5 is the TPDU code: 0xd0 is a Connection Confirm, not a Request.
echo "${tls_hex:0:10}d0${tls_hex:12}" >"$tmp/code.hex"
run decode-cr "$tmp/code.hex"
expect_rc wrong-tpdu-table 1 && expect_out wrong-tpdu-table '^Result +invalid: x224-code$' &&
        expect_out wrong-tpdu-table '^Reason +[A-Z].+' && expect_out wrong-tpdu-table '^Offset +5 \(0x5\), byte 0xd0$' &&
        expect_out wrong-tpdu-table '^  00000000  03 00 00 2e 29 d0 ' && expect_out wrong-tpdu-table '^ {27}\^\^$' &&
        pass wrong-tpdu-table
run decode-cr --json "$tmp/code.hex"
expect_rc wrong-tpdu-json 1 &&
        expect_json wrong-tpdu-json '.status == "invalid" and .error == "x224-code" and .offset == 5
                and (.reason | type == "string" and length > 0)' && pass wrong-tpdu-json

# Text that is not hex is read as raw bytes (and refused), with a note.
run decode-cr <<<"hello world, this is not a PDU"
expect_rc garbage-text 1 && expect_out garbage-text '^Result +(invalid|incomplete)' &&
        expect_out garbage-text '^Note +the input is text but not hex' && pass garbage-text
run decode-cr --json <<<"hello world, this is not a PDU"
expect_rc garbage-text-json 1 && expect_json garbage-text-json '.format == "raw" and (.status == "invalid" or .status == "incomplete")' &&
        pass garbage-text-json

# ---- input and usage errors: exit 2 -------------------------------------------

run decode-cr --hex <<<"hello world"
expect_rc garbage-forced-hex 2 && expect_err garbage-forced-hex "not valid hex: unexpected character 'h' at offset 0" &&
        pass garbage-forced-hex

run decode-cr <<<"0300002"
expect_rc odd-hex-digits 2 && expect_err odd-hex-digits "digit '2' at offset 6 .*has no partner" && pass odd-hex-digits

run decode-cr "$tmp/does-not-exist.hex"
expect_rc nonexistent-file 2 && expect_err nonexistent-file 'does-not-exist\.hex: No such file' && [[ -z $out ]] &&
        pass nonexistent-file

run decode-cr "$tmp"
expect_rc directory-argument 2 && expect_err directory-argument 'Is a directory' && pass directory-argument

head -c $((64 * 1024 + 1)) /dev/zero | tr '\0' '0' >"$tmp/big.hex"
run decode-cr "$tmp/big.hex"
expect_rc oversize-refused 2 && expect_err oversize-refused 'more than 64 KiB' && [[ -z $out ]] && pass oversize-refused
head -c $((64 * 1024)) /dev/zero | tr '\0' '0' >"$tmp/max.hex"
run decode-cr "$tmp/max.hex"
# 64 KiB exactly is read (and is no PDU: zeros are not TPKT).
expect_rc input-at-cap-read 1 && pass input-at-cap-read

run decode-cr --hex --raw "$tls"
expect_rc hex-raw-conflict 2 && expect_err hex-raw-conflict 'exclude each other' && pass hex-raw-conflict

run decode-cr "$tls" "$tls"
expect_rc too-many-arguments 2 && expect_err too-many-arguments 'expected at most 1 argument' && pass too-many-arguments

run no-such-verb
expect_rc unknown-verb 2 && expect_err unknown-verb "Unknown command 'no-such-verb'" && pass unknown-verb

run decode-cr --no-such-option "$tls"
expect_rc unknown-option 2 && expect_err unknown-option "unknown option '--no-such-option'" && pass unknown-option

run </dev/null
expect_rc no-verb 2 && pass no-verb

# ---- help and version ----------------------------------------------------------

run --help
expect_rc help-main 0 && expect_out help-main '^Usage: tsctl ' && expect_out help-main '^  decode-cr ' &&
        expect_out help-main '^Examples:$' && pass help-main
run decode-cr --help
expect_rc help-decode-cr 0 && expect_out help-decode-cr '^Usage: tsctl decode-cr ' &&
        expect_out help-decode-cr '^Examples:$' && expect_out help-decode-cr '--raw' && pass help-decode-cr
run help decode-cr
expect_rc help-verb 0 && expect_out help-verb '^Usage: tsctl decode-cr ' && pass help-verb
run --version
expect_rc version 0 && expect_out version '^tsctl \(tsfarm\) [0-9]' && pass version

if ((failures > 0)); then
        echo "tsctl-decode-cr: $failures check(s) failed"
        exit 1
fi
exit 0
