#!/usr/bin/env bash
# z-SR x4 with the self-supervised method (smore) against cubic-z and 3-D ADMM-TV, on the volumes of
# docs/results.md section 14.1 (the CT test patient, 28 slices at 256^2; the MNI template, 64 slices at 128^2),
# plus ct-style x2. Run from the repository root; writes benchmarks/results/zsr_smore/<run>/metrics.json.
set -euo pipefail
OUT=benchmarks/results/zsr_smore
MNI=../shared/data/mri/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz
for m in admm-tv smore; do
  wavepatch reconstruct ../shared/data/ct/test --volume --slices 0:28 --task zsr --factor 4 --method $m \
    --no-progress --out $OUT/ct_zsr4_$m
  wavepatch reconstruct $MNI --volume --slices 60:124 --size 128 --task zsr --factor 4 --method $m \
    --no-progress --out $OUT/mni_zsr4_$m
done
for r in ct_zsr4_admm-tv ct_zsr4_smore mni_zsr4_admm-tv mni_zsr4_smore; do cp $OUT/$r/metrics.json $OUT/$r.json; done
# a real thick-slice volume as acquired (no reference): the CT test patient's 30 slices of 8 mm -> 120 of 2 mm
wavepatch reconstruct ../shared/data/ct/test --volume --as-measured --task zsr --factor 4 --method smore \
  --no-progress --out $OUT/ct_test_as_measured
cp $OUT/ct_test_as_measured/metrics.json $OUT/ct_test_as_measured.json
