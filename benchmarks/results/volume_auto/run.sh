#!/bin/bash
# docs/results.md section 14.2: reconstruct --volume --auto on the MNI template (mri3d x8) and the CT test patient
# (20-view parallel beam), learned fast mode and 3-D ADMM-TV. Run from the repository root, nothing else running;
# the metrics.json of each run was copied here as NAME.json.
set -e
W=.venv/bin/wavepatch
M=../shared/data/mri/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz
OUT=${OUT:-runs/vauto}
run() { name=$1; shift; echo "== $name $(date +%T)"; /usr/bin/time -v $W reconstruct "$@" --no-progress --out $OUT/$name; }
run mni_mri3d_padis_auto $M --volume --slices 60:124 --size 128 --task mri3d --accel 8 --method padis --fast --auto
run mni_mri3d_admm_auto $M --volume --slices 60:124 --size 128 --task mri3d --accel 8 --method admm-tv --auto
run ct_test_padis_auto ../shared/data/ct/test --volume --task ct-parallel --views 20 --method padis --fast --auto
run ct_test_admm_auto ../shared/data/ct/test --volume --task ct-parallel --views 20 --method admm-tv --auto
