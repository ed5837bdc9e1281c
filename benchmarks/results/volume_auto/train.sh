#!/bin/bash
# volume --auto on the TRAINING patient: 16 slices (24:40) of series 1, 256^2, 20 views; the choice against
# every candidate run in full (the oracle)
set -e
# run from the repository root; outputs under runs/vauto
W=.venv/bin/wavepatch
S=1.3.6.1.4.1.14519.5.2.1.6655.2359.213534032021332276911485641315
A="../shared/data/ct/train --series $S --volume --slices 24:40 --task ct-parallel --views 20 --no-progress"
echo "== auto $(date +%T)"; $W reconstruct $A --method padis --fast --auto --out runs/vauto/train_auto | tail -2
for v in 0 0.02 0.05 0.1; do echo "== $v $(date +%T)"; $W reconstruct $A --method padis --fast --param sigma_start=$v --out runs/vauto/train_s$v | tail -1; done
echo "== done $(date +%T)"
