#!/usr/bin/env bash
# On the lent GPU machine: benchmarks/priors.py, then 64 samples per bundled CT prior scored with
# `wavepatch eval-samples` against the test patient's slices (.gpu/ct_test_hu256.npy, made by
# scripts/export_training_slices.py from ../shared/data/ct/test). Everything lands in $OUT/eval.tar.
set -u
OUT=${OUT:-out/gpu}
mkdir -p "$OUT" evalrun
PY="python3 -m wavepatch.cli"
python3 benchmarks/priors.py --device cuda --repeats 10 > evalrun/priors_gpu.md 2> evalrun/priors_gpu.log
real=".gpu/ct_test_hu256.npy --window -1000 1000"
run() {  # name prior size mode
  $PY sample --prior models/$2.safetensors --n 64 --batch 64 --size $3 --steps 32 --patch-mode $4 --seed 1 \
      --out evalrun/$1 --no-progress >> evalrun/log.txt 2>&1
  $PY eval-samples evalrun/$1 --real $real --out evalrun/$1.json > evalrun/$1.md 2>> evalrun/log.txt
  cp evalrun/$1/grid.png evalrun/$1_grid.png; cp evalrun/$1/sample_info.json evalrun/$1_info.json
}
run whole128 ct_whole128 128 padis
run patch128 ct_patch128 128 padis
run whole256 ct_whole256 256 padis
run patch256 ct_patch256 256 padis
run patch256_stitch ct_patch256 256 stitch
run patch256_average ct_patch256 256 average
run patch128_at256 ct_patch128 256 padis
tar -cf "$OUT/eval.tar" evalrun/*.md evalrun/*.json evalrun/*_grid.png evalrun/log.txt evalrun/priors_gpu.log
cat evalrun/priors_gpu.md evalrun/*.md
