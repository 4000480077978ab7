#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Runs one tier's tests and records what they counted.
#
#   tests/run.sh TIER RESULTS_DIR TEST...
#
# A test is an executable. It is counted from its own output:
#   cmocka's "[  PASSED  ] N test(s)." / "[  FAILED  ] N test(s)" /
#   "[  SKIPPED ] N test(s)" lines, or else lines beginning "PASS: ",
#   "FAIL: ", "SKIP: " (integration scripts); a test that prints neither
#   counts as one, by its exit code (77 = skipped). A test that exits non-zero
#   without reporting a failure counts one failure more: a crash is never
#   a pass. Each test has a deadline ($TEST_TIMEOUT, default 600 s).
#
# Appends "passed failed skipped name" lines to RESULTS_DIR/TIER.counts,
# prints the tier's total, exits non-zero if anything failed.
set -uo pipefail

tier=$1
results=$2
shift 2
mkdir -p "$results/$tier"
counts=$results/$tier.counts
: >>"$counts"
timeout_s=${TEST_TIMEOUT:-600}
export TSFARM_VECTORS=${TSFARM_VECTORS:-$(cd "$(dirname "$0")/../.." && pwd)/shared/vectors}
export TSFARM_SRC=${TSFARM_SRC:-$(cd "$(dirname "$0")/.." && pwd)}

tp=0 tf=0 ts=0
for t in "$@"; do
        name=$(basename "$t")
        log=$results/$tier/$name.log
        echo "=== $tier: $name"
        timeout --kill-after=10 "$timeout_s" "$t" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
        p=0 f=0 s=0
        if grep -qE '^\[ +(PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$log"; then
                p=$(sed -nE 's/^\[ +PASSED +\] ([0-9]+) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
                f=$(sed -nE 's/^\[ +FAILED +\] ([0-9]+) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
                s=$(sed -nE 's/^\[ +SKIPPED +\] ([0-9]+) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
        elif grep -qE '^(PASS|FAIL|SKIP): ' "$log"; then
                p=$(grep -cE '^PASS: ' "$log")
                f=$(grep -cE '^FAIL: ' "$log")
                s=$(grep -cE '^SKIP: ' "$log")
        elif ((rc == 0)); then
                p=1
        elif ((rc == 77)); then
                s=1
        fi
        if ((rc != 0 && rc != 77 && f == 0)); then
                ((rc == 124)) && echo "$tier: $name: timed out after ${timeout_s}s"
                echo "$tier: $name: exited with status $rc"
                f=$((f + 1))
        fi
        echo "$p $f $s $name" >>"$counts"
        tp=$((tp + p)) tf=$((tf + f)) ts=$((ts + s))
done
touch "$results/$tier.done"
echo "$tier: $tp passed, $tf failed, $ts skipped"
((tf == 0))
