#!/usr/bin/env bash
# WSGM on real CT (issue 5, item 4): train a WSGM at 128² (J = 2) and at 256² (J = 3) for $MINUTES each (both
# have a 32² coarse band, the same networks per scale and the same steps per scale), then draw samples from each
# and from the bundled whole-image priors at equal total NFE and score them with `wavepatch eval-samples` against
# the test patient (.gpu/ct_test_hu256.npy) and the training slices. Results in evalrun/, packed into
# $OUT/wsgm_ct.tar. Data: .gpu/*.npy made by scripts/export_training_slices.py.
#
#   GPU machine: MINUTES=7 PARALLEL=1 bash scripts/wsgm_ct.sh           (both trainings side by side)
#   2-core CPU:  MINUTES=60 BATCH=16 CROP=32 EMA=200 N128=16 N256=8 bash scripts/wsgm_ct.sh   (one after the other;
#                docs/results.md §8 ran 60 min at 128², 38 min at 256²)
#   MINUTES=0 skips training (score what runs/ holds); RESUME=1 continues the trainings in runs/.
set -u
MINUTES=${MINUTES:-7}
OUT=${OUT:-out/gpu}
STEPS=${STEPS:-16}     # Heun levels per scale (2 NFE per level, the last 1)
BATCH=${BATCH:-32}
N128=${N128:-64}; N256=${N256:-64}
mkdir -p "$OUT" runs evalrun
PY="python3 -m wavepatch.cli"
crop=${CROP:+--detail-crop $CROP}
common="--steps 1000000 --lr 3e-4 --ema-halflife ${EMA:-500} --checkpoint-every 50 --log-every 10 --minutes $MINUTES --no-progress ${RESUME:+--resume}"
ct=".gpu/ct_train_hu256.npy --window -1000 1000"
arch="--prior wavelet --channels 32 --channel-mult 1,2,2 --batch $BATCH $crop"
if [ "$MINUTES" != 0 ]; then
  $PY train $ct $arch --levels 2 --size 128 $common --out runs/ct_wsgm128 > runs/ct_wsgm128.log 2>&1 &
  [ -n "${PARALLEL:-}" ] || wait
  $PY train $ct $arch --levels 3 --size 256 $common --out runs/ct_wsgm256 > runs/ct_wsgm256.log 2>&1 &
  wait
fi
real=".gpu/ct_test_hu256.npy --window -1000 1000 --train .gpu/ct_train_hu256.npy"
score() {  # name prior size levels n [extra]
  $PY sample --prior $2 --n $5 --batch $5 --size $3 --steps $4 --seed 1 ${6:-} --out evalrun/$1 --no-progress >> evalrun/log.txt 2>&1
  $PY eval-samples evalrun/$1 --real $real --out evalrun/$1.json > evalrun/$1.md 2>> evalrun/log.txt
  cp evalrun/$1/grid.png evalrun/$1_grid.png; cp evalrun/$1/sample_info.json evalrun/$1_info.json
}
# WSGM: STEPS levels per scale at both sizes; whole image: the same total NFE (3 or 4 scales x (2 STEPS - 1))
n128=$((3 * (2 * STEPS - 1))); n256=$((4 * (2 * STEPS - 1)))
score wsgm128 runs/ct_wsgm128/prior.safetensors 128 $STEPS $N128 "--sigma-max 20"
score wsgm256 runs/ct_wsgm256/prior.safetensors 256 $STEPS $N256 "--sigma-max 20"
score whole128_eqnfe models/ct_whole128.safetensors 128 $(((n128 + 1) / 2)) $N128
score whole256_eqnfe models/ct_whole256.safetensors 256 $(((n256 + 1) / 2)) $N256
nvidia-smi --query-gpu=name,memory.used --format=csv > evalrun/gpu.txt 2>&1
tar -cf "$OUT/wsgm_ct.tar" evalrun/*.md evalrun/*.json evalrun/*_grid.png evalrun/log.txt evalrun/gpu.txt \
    runs/ct_wsgm128.log runs/ct_wsgm256.log runs/ct_wsgm128/prior.* runs/ct_wsgm256/prior.* runs/ct_wsgm*/train_log.csv
tail -n 2 runs/ct_wsgm*.log; cat evalrun/*.md
