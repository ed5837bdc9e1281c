#!/usr/bin/env bash
# Train the bundled priors on the lent GPU machine (see docs/models.md). Runs five trainings side by side on
# one GPU for $MINUTES each, then draws sample grids; packs each run (without its optimizer state) into $OUT.
# Data: .gpu/*.npy made by scripts/export_training_slices.py (the GPU machine cannot see ../shared/data).
set -u
MINUTES=${MINUTES:-8}
OUT=${OUT:-out/gpu}
mkdir -p "$OUT" runs
PY="python3 -m wavepatch.cli"
common="--steps 1000000 --lr 3e-4 --ema-halflife 500 --checkpoint-every 1000 --log-every 20 --minutes $MINUTES --no-progress ${RESUME:+--resume}"
ct=".gpu/ct_train_hu256.npy --window -1000 1000"
$PY train $ct --prior whole --size 128 --channels 32 --channel-mult 1,2,2,2 --batch 32 $common --out runs/ct_whole128 > runs/ct_whole128.log 2>&1 &
$PY train $ct --prior patch --size 128 --patch-sizes 16,32,64 --patch-probs 0.2,0.5,0.3 --patch-size 32 --channels 32 --channel-mult 1,2,2 --batch 32 $common --out runs/ct_patch128 > runs/ct_patch128.log 2>&1 &
$PY train $ct --prior patch --size 256 --patch-sizes 16,32,56 --patch-probs 0.2,0.3,0.5 --patch-size 56 --channels 32 --channel-mult 1,2,2 --batch 32 $common --out runs/ct_patch256 > runs/ct_patch256.log 2>&1 &
$PY train $ct --prior whole --size 256 --channels 32 --channel-mult 1,2,2,2,2 --batch 16 $common --out runs/ct_whole256 > runs/ct_whole256.log 2>&1 &
$PY train .gpu/mri_train256.npy --window 0 1 --prior patch --size 256 --patch-sizes 16,32,56 --patch-probs 0.2,0.3,0.5 --patch-size 56 --channels 32 --channel-mult 1,2,2 --batch 32 $common --out runs/mri_patch256 > runs/mri_patch256.log 2>&1 &
wait
nvidia-smi --query-gpu=name,memory.used --format=csv > runs/gpu.txt 2>&1
for r in ct_whole128 ct_patch128 ct_patch256 ct_whole256 mri_patch256; do
  size=128; case $r in *256) size=256;; esac
  $PY sample --prior runs/$r/prior.safetensors --n 16 --size $size --steps 32 --batch 16 --out runs/$r/samples --no-progress >> runs/$r.log 2>&1
  case $r in *patch*) $PY sample --prior runs/$r/prior.safetensors --n 16 --size 256 --steps 32 --batch 16 --patch-mode stitch --out runs/$r/samples_stitch256 --no-progress >> runs/$r.log 2>&1
                      $PY sample --prior runs/$r/prior.safetensors --n 16 --size 256 --steps 32 --batch 16 --out runs/$r/samples256 --no-progress >> runs/$r.log 2>&1;; esac
  tar --exclude=train_state.safetensors --exclude="*.npy" -cf "$OUT/$r.tar" runs/$r runs/$r.log
done
cp runs/gpu.txt "$OUT/" 2>/dev/null
tail -n 3 runs/*.log
