#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Runs every libFuzzer target for $FUZZ_SECONDS (default 60) at once, one
# process each, with a corpus seeded from ../shared/vectors (hex turned
# into raw bytes) and tests/fuzz/seeds/<target>/. A crash, leak, sanitizer
# report or timeout is a failure; the reproducer is kept in the results.
#
#   tests/fuzz/run.sh RESULTS_DIR FUZZER...
set -uo pipefail
results=$1
shift
seconds=${FUZZ_SECONDS:-60}
src=$(cd "$(dirname "$0")/../.." && pwd)
vectors=${TSFARM_VECTORS:-$src/../shared/vectors}
mkdir -p "$results/fuzz"
counts=$results/fuzz.counts
: >>"$counts"

pids=()
for f in "$@"; do
        name=$(basename "$f")
        corpus=$results/fuzz/$name.corpus
        mkdir -p "$corpus" "$results/fuzz/$name.artifacts"
        for v in "$vectors"/*.hex; do
                [[ -e $v ]] || continue
                xxd -r -p "$v" >"$corpus/vector-$(basename "$v" .hex)"
        done
        if [[ -d $src/tests/fuzz/seeds/$name ]]; then
                cp "$src"/tests/fuzz/seeds/"$name"/* "$corpus"/ 2>/dev/null
        fi
        echo "=== fuzz: $name for ${seconds}s ($(ls "$corpus" | wc -l) seeds)"
        "$f" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
                -print_final_stats=1 \
                -artifact_prefix="$results/fuzz/$name.artifacts/" \
                "$corpus" >"$results/fuzz/$name.log" 2>&1 &
        pids+=("$!:$name")
done

tp=0 tf=0
for entry in "${pids[@]}"; do
        pid=${entry%%:*}
        name=${entry#*:}
        wait "$pid"
        rc=$?
        log=$results/fuzz/$name.log
        runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
        if ((rc == 0)) && [[ -n $runs ]]; then
                echo "PASS: fuzz $name: ${runs:-0} executions in ${seconds}s, no finding"
                echo "1 0 0 $name" >>"$counts"
                tp=$((tp + 1))
        else
                echo "FAIL: fuzz $name: exit $rc; last lines of $log:"
                tail -n 40 "$log"
                echo "0 1 0 $name" >>"$counts"
                tf=$((tf + 1))
        fi
done
touch "$results/fuzz.done"
echo "fuzz: $tp passed, $tf failed, 0 skipped"
((tf == 0))
