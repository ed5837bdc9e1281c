#!/usr/bin/env bash
# Issue 18, item 2: the talk's table (seed 002) with every method at its current default, first bench slice (ct[0]).
# Needs `wavepatch` on PATH (PATH=.venv/bin:$PATH). --resume continues a stopped run.
set -euo pipefail
M=(baseline admm-tv "pnp-admm (learned)" "red (learned)" "dps (whole image)" "pigdm (whole image)"
   "mcg (whole image)" langevin pc ddnm "patch averaging" "patch stitching" padis "padis fast")
wavepatch bench --suite ct --limit 1 --resume --no-progress --out benchmarks/results/bench_talk_table/ct \
    --settings "ct-parallel 20 views" "ct-parallel 8 views" "ct-parallel 60 views" "ct-fan 60 views" --methods "${M[@]}"
wavepatch bench --suite restoration --limit 1 --resume --no-progress --out benchmarks/results/bench_talk_table/restoration \
    --settings "deblur gaussian" "deblur heavy" "sr x4" --methods "${M[@]}"
