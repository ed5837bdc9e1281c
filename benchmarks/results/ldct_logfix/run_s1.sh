#!/usr/bin/env bash
# Issue 22, docs/results.md section 18.4: a second 5,000-step pair (seed 1), trained on the current simulation
# (bias-corrected log), then the replacement rule of section 18.3 on training slices and the test-patient rows.
# 2-core CPU, one thread per run, the two side by side (~70 min). Run from the repository root.
set -euo pipefail
R=benchmarks/results/ldct_logfix
for p in metric gan; do
  OMP_NUM_THREADS=1 wavepatch train ../shared/data/ct/train/A0001_B_*.dcm --prior ldct-$p --steps 5000 --seed 1 \
      --checkpoint-every 500 --no-progress --out runs/ldct_${p}_5k_s1 --resume >> runs/ldct_${p}_5k_s1.log 2>&1 &
done
wait
for p in metric gan; do
  python benchmarks/ldct_shift.py --data ../shared/data/ct/train/A0001_B_*.dcm --guard \
      --translator runs/ldct_${p}_5k_s1/ldct.safetensors > $R/shift_train_${p}_5k_s1.md
done
python benchmarks/ldct_denoise.py --doses 1e4 2500 --methods fbp --out $R \
    --translator "ldct-metric-5k-s1-guard0=runs/ldct_metric_5k_s1/ldct.safetensors,guard=0" \
    --translator "ldct-metric-5k-s1-guard1=runs/ldct_metric_5k_s1/ldct.safetensors,guard=1" \
    --translator "ldct-gan-5k-s1-guard0=runs/ldct_gan_5k_s1/ldct.safetensors,guard=0" \
    --translator "ldct-gan-5k-s1-guard1=runs/ldct_gan_5k_s1/ldct.safetensors,guard=1" \
    --figure-methods fbp bm3d admm-tv padis-fast ldct-metric-2.5k-guard1 ldct-metric-5k-guard0 ldct-gan-5k-guard0
