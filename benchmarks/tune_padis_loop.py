"""The PaDIS loop's step allocation at a fixed budget, on training slices: how many noise levels, how many
Langevin iterations per level (and the step factor eps), for 20-view parallel-beam CT at 256^2 from noise.

    python benchmarks/tune_padis_loop.py --out benchmarks/results/tune_padis_loop

Each configuration is ``LEVELS:N_INNER[:EPS][:KEY=VALUE...]`` (NFE = LEVELS x N_INNER); every one runs on
every ``--slices`` file of the training patient with the bundled patch prior (ct_patch256) and seed 0, next
to ADMM-TV at its defaults. Prints a markdown table (PSNR per slice, mean, mean gain over ADMM-TV, seconds) and writes
tune_padis_loop.json; rows already there are skipped (a stopped run continues). Training slices only: the test
slices report the chosen default elsewhere (docs/results.md section 6.5).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wavepatch.io import normalize_volume, read_image, resize_square
from wavepatch.io.atomic import atomic_write_bytes
from wavepatch.resources import prior_path
from wavepatch.run import run_reconstruction
from wavepatch.tasks import TaskOptions

TRAIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ct" / "train"
CONFIGS = ["20:5", "40:5", "67:3", "100:2", "200:1"]


def parse_config(text: str) -> dict:
    """'LEVELS:N_INNER[:EPS][:KEY=VALUE...]' -> the padis overrides (e.g. 40:5:sigma_max=2)."""
    parts = text.split(":")
    out = {"steps": int(parts[0]), "n_inner": int(parts[1])}
    for part in parts[2:]:
        key, _, value = part.rpartition("=")
        out[key or "eps"] = float(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/tune_padis_loop")
    ap.add_argument("--slices", nargs="+", default=["A0001_B_025.dcm", "A0001_B_045.dcm", "A0001_L_036.dcm"])
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    ap.add_argument("--views", type=int, default=20)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "tune_padis_loop.json"
    data = json.loads(store.read_text()) if store.exists() else {"rows": [], "admm_tv": {}}

    def save() -> None:
        atomic_write_bytes(store, json.dumps(data, indent=1).encode())

    opts = TaskOptions(views=args.views)
    for name in args.slices:
        unit, _ = normalize_volume(read_image(TRAIN / name), None)
        img = resize_square(unit[0], 256)
        if name not in data["admm_tv"]:
            data["admm_tv"][name] = run_reconstruction(img, "ct-parallel", opts, "admm-tv").metrics["psnr"]
            save()
        for config in args.configs:
            if any(r["slice"] == name and r["config"] == config for r in data["rows"]):
                continue
            r = run_reconstruction(img, "ct-parallel", opts, "padis", parse_config(config),
                                   prior=prior_path("ct_patch256"))
            data["rows"].append({"slice": name, "config": config, "nfe": r.nfe, "psnr": r.metrics["psnr"],
                                 "ssim": r.metrics["ssim"], "seconds": r.seconds})
            save()
            print(f"{name} {config}: {r.metrics['psnr']:.2f} dB, {r.nfe} NFE, {r.seconds:.0f} s", flush=True)
    names = [n for n in args.slices if n in data["admm_tv"]]
    print(f"\n{args.views}-view CT, 256^2, from noise, ct_patch256; ADMM-TV "
          + " / ".join(f"{data['admm_tv'][n]:.2f}" for n in names) + "\n")
    print("| levels:n_inner[:eps][:key=value] | NFE | " + " | ".join(Path(n).stem for n in names)
          + " | mean | − ADMM-TV | s per run |")
    print("|---|---|" + "---|" * (len(names) + 3))
    for config in args.configs:
        rows = {r["slice"]: r for r in data["rows"] if r["config"] == config}
        have = [n for n in names if n in rows]
        if not have:
            continue
        cells = " | ".join(f"{rows[n]['psnr']:.2f}" if n in rows else "–" for n in names)
        secs = sum(rows[n]["seconds"] for n in have) / len(have)
        mean, gain = "–", "–"  # only over every slice
        if len(have) == len(names):
            m = sum(rows[n]["psnr"] for n in names) / len(names)
            mean, gain = f"{m:.2f}", f"{m - sum(data['admm_tv'][n] for n in names) / len(names):+.2f}"
        print(f"| {config} | {rows[have[0]]['nfe']} | {cells} | {mean} | {gain} | {secs:.0f} |")


if __name__ == "__main__":
    main()
