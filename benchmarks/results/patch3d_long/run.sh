#!/usr/bin/env bash
# The 3-D patch prior trained 3.5x longer (rule.md), on the CT test patient: 20-view parallel beam on all 30 slices
# and z-SR x4 on slices 0:28, PaDIS fast with the 3-D prior against 3-D ADMM-TV. Run from the repository root
# after training runs/ct_patch3d_long (docs/models.md); writes benchmarks/results/patch3d_long/<run>.json.
set -euo pipefail
OUT=benchmarks/results/patch3d_long
P=${PRIOR:-runs/ct_patch3d_long/prior.safetensors}
CT=../shared/data/ct/test
run() { name=$1; shift; /usr/bin/time -v wavepatch reconstruct "$@" --no-progress --out $OUT/$name 2> $OUT/$name.time;
        cp $OUT/$name/metrics.json $OUT/$name.json; }
run ct20_admm-tv $CT --volume --task ct-parallel --views 20 --method admm-tv
run ct20_patch3d $CT --volume --task ct-parallel --views 20 --method padis --fast --prior $P
run zsr4_admm-tv $CT --volume --slices 0:28 --task zsr --factor 4 --method admm-tv
run zsr4_patch3d $CT --volume --slices 0:28 --task zsr --factor 4 --method padis --fast --prior $P
# keep the metrics, the time -v reports and one figure (as a 256-colour PNG, the size committed); the volumes
# stay out of the repository (.gitignore ignores them and the lock files if a run stops before this line)
python -c "from PIL import Image; Image.open('$OUT/ct20_patch3d/planes.png').convert('RGB').quantize(256).save(
    'docs/volume/planes_ct20_padis_fast_patch3d_long.png', optimize=True)"
rm -rf $OUT/ct20_admm-tv $OUT/ct20_patch3d $OUT/zsr4_admm-tv $OUT/zsr4_patch3d
