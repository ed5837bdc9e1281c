#!/usr/bin/env bash
# zs-ssl refining 3-D ADMM-TV (--param start=admm-tv, docs/results.md section 14.4) on the test volumes of run.sh,
# run once after the rule of benchmarks/results/tune_zsssl/rule_start.md was applied on training data. The
# zero-filled, ADMM-TV and PaDIS fast rows are run.sh's (same code path, deterministic). Run from the repository
# root; writes benchmarks/results/mri3d_zsssl/<run>.json.
set -euo pipefail
OUT=benchmarks/results/mri3d_zsssl
MNI=../shared/data/mri/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz
wavepatch reconstruct $MNI --volume --slices 60:124 --size 128 --task mri3d --accel 8 --method zs-ssl \
  --param start=admm-tv --no-progress --out $OUT/mni_mri3d8_zs-ssl_tvstart
wavepatch reconstruct ../shared/data/ct/test --volume --task mri3d --accel 8 --method zs-ssl \
  --param start=admm-tv --no-progress --out $OUT/ct_mri3d8_zs-ssl_tvstart
for r in mni_mri3d8_zs-ssl_tvstart ct_mri3d8_zs-ssl_tvstart; do
  cp $OUT/$r/metrics.json $OUT/$r.json
done
