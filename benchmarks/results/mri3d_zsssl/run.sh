#!/usr/bin/env bash
# 3-D MRI x8 with the scan-specific self-supervised method (zs-ssl) against zero-filling, 3-D ADMM-TV and the
# learned fast mode, on the volumes of docs/results.md section 14.1 (the MNI template, 64 slices at 128^2) and
# the CT test patient (30 slices at 256^2). Run from the repository root after the defaults were fixed on
# training data (benchmarks/results/tune_zsssl/); writes benchmarks/results/mri3d_zsssl/<run>.json.
set -euo pipefail
OUT=benchmarks/results/mri3d_zsssl
MNI=../shared/data/mri/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz
for m in admm-tv zs-ssl; do
  wavepatch reconstruct $MNI --volume --slices 60:124 --size 128 --task mri3d --accel 8 --method $m \
    --no-progress --out $OUT/mni_mri3d8_$m
  wavepatch reconstruct ../shared/data/ct/test --volume --task mri3d --accel 8 --method $m \
    --no-progress --out $OUT/ct_mri3d8_$m
done
wavepatch reconstruct ../shared/data/ct/test --volume --task mri3d --accel 8 --method padis --fast \
  --no-progress --out $OUT/ct_mri3d8_padis_fast  # the task's default prior: the bundled MRI one
for r in mni_mri3d8_admm-tv mni_mri3d8_zs-ssl ct_mri3d8_admm-tv ct_mri3d8_zs-ssl ct_mri3d8_padis_fast; do
  cp $OUT/$r/metrics.json $OUT/$r.json
done
