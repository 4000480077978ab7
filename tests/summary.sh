#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Adds up what tests/run.sh recorded for every tier and prints the final
# "N passed, N failed" line. A tier that never finished (its build failed,
# say) counts as one failure: a broken build is never a green run.
#
#   tests/summary.sh RESULTS_DIR
set -uo pipefail
results=$1
tp=0 tf=0 ts=0
for tier in unit bpf integration fuzz; do
        if [[ ! -e $results/$tier.done ]]; then
                echo "summary: tier '$tier' did not complete (see its output above)"
                tf=$((tf + 1))
        fi
        [[ -e $results/$tier.counts ]] || continue
        while read -r p f s name; do
                tp=$((tp + p)) tf=$((tf + f)) ts=$((ts + s))
                ((f > 0)) && echo "summary: FAILED in $tier: $name"
        done <"$results/$tier.counts"
done
echo "total: $tp passed, $tf failed, $ts skipped"
((tf == 0))
