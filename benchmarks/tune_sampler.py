"""A sampler's parameter choices across the bench's settings, on training slices only: each configuration of
``--method`` runs on every ``--slices`` file of the CT training patient for every ``--settings`` label (the
labels of ``wavepatch bench``'s suites), next to the baseline and ADMM-TV at their defaults.

    python benchmarks/tune_sampler.py --method dps --configs step=normalized step=linesearch \\
        --out benchmarks/results/tune_dps

A configuration is ``KEY=VALUE[,KEY=VALUE...]`` of the method's parameters (``-``: the registry defaults). Rows
are stored in tune_sampler.json as they finish (a stopped run continues; several processes with the same
--out merge their rows, but two that reach the same run at once both make it: give them different --slices or
--settings; the file records the method and the prior, and a different run is refused). Prints a
markdown table per setting (PSNR per slice, mean, mean gain over ADMM-TV, seconds) and, last, each
configuration's mean gain over every setting and slice. Training slices only: the chosen default is reported
on the test slices elsewhere (docs/results.md).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from pathlib import Path

from wavepatch.bench import SUITES
from wavepatch.io import normalize_volume, read_image, resize_square
from wavepatch.io.atomic import atomic_write_bytes
from wavepatch.resources import prior_path
from wavepatch.run import run_reconstruction
from wavepatch.tasks import TaskOptions

TRAIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ct" / "train"
SETTINGS = {s.label: s for suite, _ in SUITES.values() for s in suite if s.data is None and s.resample is None}


def parse_config(text: str) -> dict:
    """'KEY=VALUE,KEY=VALUE' -> overrides as strings, which the method's registry parses and checks as
    ``--param`` does; '-' -> {}."""
    out: dict = {}
    for part in filter(None, text.split(",")):
        if part == "-":
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"configuration {text!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _key(row: dict) -> tuple:
    return row["slice"], row["setting"], row.get("config"), row.get("method")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", required=True)
    ap.add_argument("--prior", default="ct_whole256", help="bundled prior name")
    ap.add_argument("--configs", nargs="+", default=["-"])
    ap.add_argument("--settings", nargs="+", default=["ct-parallel 20 views", "deblur gaussian", "deblur heavy",
                                                       "sr x4", "ct-lowdose I0=1e4"])
    ap.add_argument("--slices", nargs="+", default=["A0001_B_025.dcm", "A0001_L_036.dcm"])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        sys.exit(f"unknown setting(s) {unknown}; known: {sorted(SETTINGS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "tune_sampler.json"
    run_info = {"method": args.method, "prior": args.prior}
    data = json.loads(store.read_text()) if store.exists() else {**run_info, "rows": [], "reference": []}
    if any(data.get(k) != v for k, v in run_info.items()):
        sys.exit(f"{store} holds another run ({data.get('method')}, {data.get('prior')}); use another --out")

    def sync() -> None:
        """Merge the rows another process (same --out) wrote into ``data`` and write the union."""
        with open(out / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            disk = json.loads(store.read_text()) if store.exists() else {"rows": [], "reference": []}
            for table in ("rows", "reference"):
                keys = {_key(r) for r in data[table]}
                data[table] += [r for r in disk[table] if _key(r) not in keys]
            atomic_write_bytes(store, json.dumps(data, indent=1).encode())

    def have(table: str, **key) -> bool:
        sync()
        return any(all(r[k] == v for k, v in key.items()) for r in data[table])

    for name in args.slices:
        unit, _ = normalize_volume(read_image(TRAIN / name), None)
        img = resize_square(unit[0], 256)
        for label in args.settings:
            setting = SETTINGS[label]
            opts = TaskOptions(**setting.options)
            for ref in ("fbp", "admm-tv"):
                if not have("reference", slice=name, setting=label, method=ref):
                    r = run_reconstruction(img, setting.task, opts, ref)
                    data["reference"].append({"slice": name, "setting": label, "method": ref,
                                              "psnr": r.metrics["psnr"], "ssim": r.metrics["ssim"]})
                    sync()
            for config in args.configs:
                if have("rows", slice=name, setting=label, config=config):
                    continue
                r = run_reconstruction(img, setting.task, opts, args.method, parse_config(config),
                                       prior=prior_path(args.prior))
                data["rows"].append({"slice": name, "setting": label, "config": config, "nfe": r.nfe,
                                     "psnr": r.metrics["psnr"], "ssim": r.metrics["ssim"], "seconds": r.seconds})
                sync()
                print(f"{name} {label} {config}: {r.metrics['psnr']:.2f} dB, {r.seconds:.0f} s", flush=True)
    print(tables(data, args.slices, args.settings, args.configs))


def tables(data: dict, slices: list[str], settings: list[str], configs: list[str]) -> str:
    """The markdown tables of a run (module docstring)."""
    def ref(name: str, label: str, method: str) -> float | None:
        hits = [r["psnr"] for r in data["reference"]
                if (r["slice"], r["setting"], r["method"]) == (name, label, method)]
        return hits[0] if hits else None

    lines = [f"{data['method']} with {data['prior']}, 256^2, training slices "
             + ", ".join(Path(s).stem for s in slices)]
    gains: dict[str, list[float]] = {c: [] for c in configs}
    for label in settings:
        lines += ["", f"**{label}**", "", "| configuration | NFE | " + " | ".join(Path(s).stem for s in slices)
                  + " | mean | − ADMM-TV | s per run |", "|---|---|" + "---|" * (len(slices) + 3)]
        for method in ("fbp", "admm-tv"):
            vals = [ref(s, label, method) for s in slices]
            if None not in vals:
                name = "baseline" if method == "fbp" else method
                lines.append(f"| {name} | – | " + " | ".join(f"{v:.2f}" for v in vals)
                             + f" | {sum(vals) / len(vals):.2f} | | |")
        for config in configs:
            rows = {r["slice"]: r for r in data["rows"] if r["setting"] == label and r["config"] == config}
            if not all(s in rows for s in slices):
                continue
            psnr = [rows[s]["psnr"] for s in slices]
            gain = [p - (ref(s, label, "admm-tv") or float("nan")) for p, s in zip(psnr, slices, strict=True)]
            gains[config] += gain
            secs = sum(rows[s]["seconds"] for s in slices) / len(slices)
            lines.append(f"| {config} | {rows[slices[0]]['nfe']} | " + " | ".join(f"{p:.2f}" for p in psnr)
                         + f" | {sum(psnr) / len(psnr):.2f} | {sum(gain) / len(gain):+.2f} | {secs:.0f} |")
    lines += ["", "| configuration | mean gain over ADMM-TV, every setting and slice | runs |", "|---|---|---|"]
    for config, g in gains.items():
        if g:
            lines.append(f"| {config} | {sum(g) / len(g):+.2f} | {len(g)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
