#!/usr/bin/env bash
# Issue 22, docs/results.md section 18.4: the low-dose comparison after the post-log and PWLS-weight fixes.
# The same 10 test slices and Poisson draws as sections 18 / 18.3. Run from the repository root; runs/ is not in
# the repo (runs/ldct_{metric,gan}_5k: benchmarks/results/ldct_5k/run.sh). ~45 min on the 2-core CPU.
# Logs: run1.log is the first pass; its BM3D lines used c = 1 (a since-removed fallback) and were redone in
# run2.log; its ADMM-TV lines predate the PWLS-weight fix and were redone with PaDIS fast in run4.log.
set -euo pipefail
R=benchmarks/results/ldct_logfix
M=src/wavepatch/models/ldct_metric256.safetensors
python benchmarks/ldct_log_bias.py --data ../shared/data/ct/train/A0001_B_*.dcm > benchmarks/results/ldct_log_bias/train.md
python benchmarks/ldct_log_bias.py --data ../shared/data/ct/test > benchmarks/results/ldct_log_bias/test.md
python benchmarks/ldct_pwls_weights.py --data ../shared/data/ct/train/A0001_B_*.dcm --doses 2500
# the replacement rule of section 18.3 with the new simulation (training slices)
python benchmarks/ldct_shift.py --data ../shared/data/ct/train/A0001_B_*.dcm --guard > $R/shift_train_2.5k.md
python benchmarks/ldct_shift.py --data ../shared/data/ct/train/A0001_B_*.dcm --guard \
    --translator runs/ldct_metric_5k/ldct.safetensors > $R/shift_train_metric_5k.md
# the test patient
python benchmarks/ldct_denoise.py --doses 1e4 2500 --methods fbp bm3d admm-tv padis-fast --out $R \
    --translator "ldct-metric-2.5k-guard0=$M,guard=0" --translator "ldct-metric-2.5k-guard1=$M,guard=1" \
    --translator "ldct-metric-5k-guard0=runs/ldct_metric_5k/ldct.safetensors,guard=0" \
    --translator "ldct-metric-5k-guard1=runs/ldct_metric_5k/ldct.safetensors,guard=1" \
    --translator "ldct-gan-5k-guard0=runs/ldct_gan_5k/ldct.safetensors,guard=0" \
    --translator "ldct-gan-5k-guard1=runs/ldct_gan_5k/ldct.safetensors,guard=1" \
    --figure-methods fbp bm3d admm-tv padis-fast ldct-metric-2.5k-guard1 ldct-metric-5k-guard0 ldct-gan-5k-guard0
