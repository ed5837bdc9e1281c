#!/usr/bin/env bash
# Issue 18, item 3: the from-noise samplers on low-dose CT (Poisson, I0 = 1e4) at their current defaults, ct[0].
set -euo pipefail
wavepatch bench --suite ct --limit 1 --resume --no-progress --out benchmarks/results/bench_talk_table/lowdose \
    --settings "ct-lowdose I0=1e4" --methods baseline admm-tv "dps (whole image)" "pigdm (whole image)" \
    "mcg (whole image)" langevin pc ddnm padis "padis fast"
