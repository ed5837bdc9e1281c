#!/usr/bin/env bash
# Issue 22, a later session: the translator and its no-metric ablation trained 2x longer (5,000 steps, the
# bundled model had 2,500). 2-core CPU, no GPU; the two runs side by side, one thread each (~85 min here: about
# 1 s per step each).
# Run from the repository root; runs/ is not in the repo.
set -euo pipefail
for p in metric gan; do
  OMP_NUM_THREADS=1 wavepatch train ../shared/data/ct/train/A0001_B_*.dcm --prior ldct-$p --steps 5000 \
      --checkpoint-every 500 --out runs/ldct_${p}_5k --no-progress > runs/ldct_${p}_5k.log 2>&1 &
done
wait
M=src/wavepatch/models/ldct_metric256.safetensors
# 1. the decision (fixed before any 5k result was read): training slices, guard widths, bundled vs 5k
R=benchmarks/results/ldct_5k
python benchmarks/ldct_shift.py --data ../shared/data/ct/train/A0001_B_*.dcm --guard --translator $M > $R/shift_train_2.5k.md
python benchmarks/ldct_shift.py --data ../shared/data/ct/train/A0001_B_*.dcm --guard \
    --translator runs/ldct_metric_5k/ldct.safetensors > $R/shift_train_metric_5k.md
python benchmarks/ldct_shift.py --data ../shared/data/ct/train/A0001_B_*.dcm --guard \
    --translator runs/ldct_gan_5k/ldct.safetensors > $R/shift_train_gan_5k.md
# 2. the test patient, same protocol as docs/results.md section 18 (10 slices, one noise draw each)
for d in 1e4 2500; do
  python benchmarks/ldct_denoise.py --doses $d --methods fbp --out $R \
      --translator "ldct-metric-2.5k-guard0=$M,guard=0" --translator "ldct-metric-2.5k-guard1=$M,guard=1" \
      --translator "ldct-metric-5k-guard0=runs/ldct_metric_5k/ldct.safetensors,guard=0" \
      --translator "ldct-metric-5k-guard1=runs/ldct_metric_5k/ldct.safetensors,guard=1" \
      --translator "ldct-gan-5k-guard0=runs/ldct_gan_5k/ldct.safetensors,guard=0" \
      --translator "ldct-gan-5k-guard1=runs/ldct_gan_5k/ldct.safetensors,guard=1"
done
