"""``wavepatch bench``: tasks x methods over a folder of test slices -> results.md, results.csv, grid.png.

Suites (settings x columns) are plain lists below; a column is a registered method (:mod:`wavepatch.methods`)
with fixed options, and ``--methods`` may also name any registered method, which then runs as a column of its
own with its defaults. Every method runs with its registered defaults and the bundled priors; nothing is tuned
on the reported slices. ``quick`` is a small subset (one slice, 64 px, few steps) that runs in CI.

Under ``torchrun --nproc_per_node N -m wavepatch.cli bench ...`` the jobs are dealt out round-robin over the N
processes (one GPU each with ``--device cuda``); each writes its finished rows to ``results.rank<R>.csv`` as it
goes, and rank 0 gathers them, in the order one process would have written them, into results.csv, results.md and
grid.png. ``--resume`` also picks up the rank files of an interrupted run.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wavepatch.io import SliceDataset, resize_square
from wavepatch.io.atomic import atomic_path, atomic_write_bytes
from wavepatch.methods import REGISTRY, get_method
from wavepatch.prior.model import resolve_precision
from wavepatch.resources import data_path, prior_path
from wavepatch.selection import check_auto, run_reconstruction_auto
from wavepatch.shard import barrier, gather_to_root, process_group, share
from wavepatch.tasks import TaskOptions


@dataclass
class Column:
    """A column of the table: registered ``method`` with fixed keyword arguments for ``run_reconstruction``."""

    label: str
    method: str
    kwargs: dict = field(default_factory=dict)


@dataclass
class Setting:
    """A row block of the table: ``task`` with ``options``, on the suite's slices or the bundled ``data``
    ('ct', 'mri') when given; ``resample``: each slice is first reduced to resample x resample and brought back
    to the bench size (antialiased bilinear both ways: a smoother, lower-resolution scan than any training
    image, as a small scan upsampled by a viewer)."""

    label: str
    task: str
    options: dict
    data: str | None = None
    resample: int | None = None


CLASSICAL = [Column("baseline", "fbp"), Column("admm-tv", "admm-tv"),
             Column("pnp-admm (learned)", "pnp-admm", {"overrides": {"denoiser": "learned"}}),
             Column("red (learned)", "red", {"overrides": {"denoiser": "learned"}})]
LEARNED = [
    Column("dps (whole image)", "dps"), Column("pigdm (whole image)", "pigdm"), Column("mcg (whole image)", "mcg"),
    Column("langevin", "langevin"),
    Column("pc", "pc"), Column("ddnm", "ddnm"),
    Column("patch averaging", "padis", {"patch_mode": "average"}),
    Column("patch stitching", "padis", {"patch_mode": "stitch"}),
    Column("padis", "padis"), Column("padis fast", "padis", {"fast": True}),
]

SUITES: dict[str, tuple[list[Setting], str]] = {
    "ct": ([Setting("ct-parallel 8 views", "ct-parallel", {"views": 8}),
            Setting("ct-parallel 20 views", "ct-parallel", {"views": 20}),
            Setting("ct-parallel 60 views", "ct-parallel", {"views": 60}),
            Setting("ct-fan 60 views", "ct-fan", {"views": 60}),
            Setting("ct-lowdose I0=1e4", "ct-lowdose", {"dose": 1e4})], "ct"),
    "restoration": ([Setting("deblur gaussian", "deblur", {"kernel": "gaussian"}),
                     Setting("deblur heavy", "deblur", {"kernel": "heavy"}),
                     Setting("deblur varying", "deblur", {"kernel": "varying"}),
                     Setting("sr x4", "sr", {"factor": 4}),
                     Setting("inpaint random 30%", "inpaint", {"mask": "random"}),
                     Setting("inpaint random 30%, noise 0.05", "inpaint", {"mask": "random", "noise": 0.05})], "ct"),
    "mri": ([Setting("mri x4 gaussian", "mri", {"accel": 4.0, "mask": "gaussian"}),
             Setting("mri x4 uniform", "mri", {"accel": 4.0, "mask": "uniform"})], "mri"),
}
# Distribution shift (issue 17): priors on images unlike their training data, patch against whole image, each
# against ADMM-TV; the "auto" columns choose the fast mode's start level per scan by hold-out (wavepatch.selection).
SHIFT_COLUMNS = [
    Column("admm-tv", "admm-tv"), Column("admm-tv auto", "admm-tv", {"auto": True}),
    Column("ct patch fast", "padis", {"fast": True, "prior": "ct_patch256"}),
    Column("ct whole fast", "ddnm", {"fast": True, "prior": "ct_whole256"}),
    Column("mri patch fast", "padis", {"fast": True, "prior": "mri_patch256"}),
    Column("ct patch fast auto", "padis", {"fast": True, "prior": "ct_patch256", "auto": True}),
    Column("mri patch fast auto", "padis", {"fast": True, "prior": "mri_patch256", "auto": True}),
]
SUITES["shift"] = ([Setting("ct20 (in distribution for CT priors)", "ct-parallel", {"views": 20}),
                    Setting("ct20, 128 px upsampled", "ct-parallel", {"views": 20}, resample=128),
                    Setting("ct20, 64 px upsampled", "ct-parallel", {"views": 20}, resample=64),
                    Setting("ct-lowdose I0=2.5e3", "ct-lowdose", {"dose": 2.5e3}),
                    Setting("mri x4 on the MNI template", "mri", {"accel": 4.0, "mask": "gaussian"}, data="mri")],
                   "ct")
QUICK = ([Setting("ct-parallel 20 views", "ct-parallel", {"views": 20})],
         [Column("baseline", "fbp"), Column("admm-tv", "admm-tv"),
          Column("padis fast", "padis", {"fast": True, "overrides": {"steps": 2}}),
          Column("dps (whole image)", "dps", {"overrides": {"steps": 2}})])

QUICK_SHIFT = ([Setting("ct20, 32 px upsampled", "ct-parallel", {"views": 20}, resample=32),
                Setting("mri x4 on the MNI template", "mri", {"accel": 4.0, "mask": "gaussian"}, data="mri")],
               [Column("admm-tv", "admm-tv"), Column("admm-tv auto", "admm-tv", {"auto": True}),
                Column("ct patch fast", "padis", {"fast": True, "prior": "ct_patch256", "overrides": {"steps": 2}}),
                Column("mri patch fast auto", "padis", {"fast": True, "prior": "mri_patch256", "auto": True,
                                                        "overrides": {"steps": 2}})])


def check_column(col: Column, task: str) -> None:
    """ValueError (one line) if the column's method or its fixed parameters are not valid for ``task``: a bench
    table fails before its first reconstruction, not hours into a run."""
    kw = col.kwargs
    get_method(col.method).resolve(task, kw.get("overrides"), kw.get("fast", False))
    if kw.get("auto"):
        check_auto(task, col.method, kw.get("fast", False), kw.get("overrides") or {})


def load_slices(source: str | Path, size: int, limit: int | None = None,
                window: tuple[float, float] | None = None) -> list[tuple[str, np.ndarray]]:
    """(name, unit image (size, size)) for every slice of every volume ``source`` (file or folder) holds,
    normalised and resized by the data layer exactly as ``wavepatch reconstruct`` does."""
    ds = SliceDataset(source, size=size, window=window)
    names = [f"{Path(v['source']).name}[{k}]" for v in ds.volumes for k in range(v["n_slices"])]
    out = list(zip(names, ds.images[:, 0].numpy(), strict=True))
    return out[:limit] if limit else out


def run_suite(suite: str, out: Path, data: str | Path | None = None, size: int = 256, limit: int | None = None,
              methods: list[str] | None = None, settings: list[str] | None = None, quick: bool = False,
              device: str = "cpu", progress: bool = True, resume: bool = False,
              precision: str = "auto") -> list[dict] | None:
    """Run a suite and write results.csv, results.md and grid.png into ``out``; returns the rows (None on a
    torchrun rank other than 0, which only computes its share).

    resume: keep the rows already in ``out/results.csv`` (same data, size and slices, checked against
    ``out/bench_run.json``) and run only the missing
    (setting, method, slice) jobs. results.csv and the grid's images are rewritten after every reconstruction;
    results.md and grid.png at the end."""
    if quick:
        settings, meths = QUICK_SHIFT if suite == "shift" else QUICK
        default_data = "ct"
        size, limit = 64, 1
    else:
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; choose from {', '.join(SUITES)}")
        all_settings, default_data = SUITES[suite]
        meths = SHIFT_COLUMNS if suite == "shift" else CLASSICAL + LEARNED
        if settings:
            unknown = sorted(set(settings) - {s.label for s in all_settings})
            if unknown:
                raise ValueError(f"unknown setting labels {unknown}; choose from {[s.label for s in all_settings]}")
        settings = [s for s in all_settings if not settings or s.label in settings]
    if methods:
        labels = {m.label for m in meths}
        unknown = sorted(set(methods) - labels - set(REGISTRY))
        if unknown:
            raise ValueError(f"unknown method labels {unknown}; choose from {[m.label for m in meths]} or a "
                             f"registered method ({', '.join(REGISTRY)})")
        meths = [m for m in meths if m.label in methods] + [Column(m, m) for m in methods if m not in labels]
    for setting in settings:
        for col in meths:
            check_column(col, setting.task)
    source = Path(data) if data else data_path(default_data)
    slices = load_slices(source, size, limit)
    if not slices:
        raise ValueError(f"no slices in {data or default_data}")
    own = {s.data: load_slices(data_path(s.data), size, limit) for s in settings if s.data}
    run_info = {"data": str(source.resolve()), "size": size, "slices": [name for name, _ in slices],
                "precision": resolve_precision(precision, device)}
    if own:
        run_info["setting_data"] = {k: [name for name, _ in v] for k, v in own.items()}
    if resume:
        _check_same_run(out, run_info)
    rank, world, device = process_group(device)
    rows, images = (_load_partial(out) if resume else ([], {}))
    out.mkdir(parents=True, exist_ok=True)
    done = {(r["setting"], r["method"], r["slice"]) for r in rows}
    per_setting = {s.label: _setting_slices(s, slices, own) for s in settings}  # resampled once
    jobs = [(s, m, name, img) for s in settings for m in meths for name, img in per_setting[s.label]
            if (s.label, m.label, name) not in done]
    barrier()  # every rank has read the partial results before any rank writes
    if rank == 0:
        atomic_write_bytes(out / "bench_run.json", (json.dumps(run_info, indent=1) + "\n").encode())
        if resume and done:
            print(f"resuming: {len(done)} reconstructions already in {out}, {len(jobs)} to run")
    new_rows, new_images = [], {}
    mine = share(jobs, rank, world)
    for setting, meth, name, img in tqdm(mine, disable=not progress or rank != 0, desc=f"bench {suite}"):
        kw = dict(meth.kwargs)
        overrides = kw.pop("overrides", {})
        if "prior" in kw:
            kw["prior"] = _prior_file(kw["prior"])
        res, auto = run_reconstruction_auto(img, setting.task, TaskOptions(**setting.options), meth.method,
                                            overrides, device=device, precision=precision, **kw)
        new_rows.append({"setting": setting.label, "method": meth.label, "slice": name,
                         "psnr": res.metrics["psnr"], "ssim": res.metrics["ssim"],
                         "seconds": res.seconds + (auto["selection_seconds"] if auto else 0.0),
                         "nfe": res.nfe or 0})
        first = name == per_setting[setting.label][0][0]
        if first:
            new_images[f"{setting.label}|{meth.label}"] = res.recon[0, 0].numpy()
            new_images[f"{setting.label}|truth"] = img
        if rank == 0:
            _write_partial(out, rows + new_rows, {**images, **new_images} if first else None)
        else:
            _write_partial(out, new_rows, new_images if first else None, suffix=f".rank{rank}")
    gathered = gather_to_root((new_rows, new_images))
    if rank != 0:
        return None
    order = {(s.label, m.label, name): i for i, (s, m, name, _) in enumerate(jobs)}
    new_rows = sorted((r for part, _ in gathered for r in part),
                      key=lambda r: order[(r["setting"], r["method"], r["slice"])])
    rows = rows + new_rows
    for _, imgs in gathered:
        images.update(imgs)
    if rows:
        _write_partial(out, rows, images)
    for leftover in [*out.glob("results.rank*.csv"), *out.glob("first_slice.rank*.npz")]:
        leftover.unlink()
    md = results_markdown(rows, settings, meths, suite, len(slices), size, sum(r["seconds"] for r in rows))
    atomic_write_bytes(out / "results.md", md.encode())
    _grid_figure(out / "grid.png", images, settings, meths)
    return rows


def _setting_slices(setting: Setting, slices: list, own: dict) -> list[tuple[str, np.ndarray]]:
    """The (name, unit image) slices of ``setting``: its own bundled data or the suite's, resampled if asked."""
    chosen = own[setting.data] if setting.data else slices
    if setting.resample is None:
        return chosen
    return [(f"{name}@{setting.resample}", _resampled(img, setting.resample)) for name, img in chosen]


def _resampled(img: np.ndarray, low: int) -> np.ndarray:
    """img (N, N) reduced to low x low and back to N x N (antialiased bilinear both ways), clipped to [0, 1]."""
    n = img.shape[-1]
    return np.clip(resize_square(resize_square(img, low), n), 0.0, 1.0)


def _prior_file(prior: str | Path) -> Path:
    """A bundled prior's name ('ct_patch256') or a checkpoint path."""
    p = Path(prior)
    return p if p.suffix else prior_path(str(prior))


def _check_same_run(out: Path, run_info: dict) -> None:
    """``resume`` only continues a run on the same data, size and slices (recorded in bench_run.json)."""
    path = out / "bench_run.json"
    if not path.exists():
        return
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot resume: {path} is unreadable ({exc!r})") from None
    diff = [k for k in run_info if before.get(k) != run_info[k]]
    if diff:
        raise ValueError(f"cannot resume: {out} was run with other {', '.join(diff)} "
                         f"(data {before.get('data')}, size {before.get('size')}); use another --out")


def _load_partial(out: Path) -> tuple[list[dict], dict]:
    """Rows of an earlier (possibly interrupted) run in ``out`` and its first-slice images, for ``resume``."""
    rows, seen = [], set()
    for path in [out / "results.csv", *sorted(out.glob("results.rank*.csv"))]:  # rank files: torchrun, stopped
        if not path.exists():
            continue
        try:
            with open(path, newline="") as f:
                part = [{"setting": r["setting"], "method": r["method"], "slice": r["slice"],
                         "psnr": float(r["psnr"]), "ssim": float(r["ssim"]), "seconds": float(r["seconds"]),
                         "nfe": int(r["nfe"])} for r in csv.DictReader(f)]
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot resume: {path} is not a wavepatch bench results.csv ({exc!r})") from None
        for r in part:
            key = (r["setting"], r["method"], r["slice"])
            if key not in seen:
                seen.add(key)
                rows.append(r)
    if not rows:
        return [], {}
    images = {}
    for path in [out / "first_slice.npz", *sorted(out.glob("first_slice.rank*.npz"))]:
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                images.update({k: z[k] for k in z.files})
    return rows, images


def _write_partial(out: Path, rows: list[dict], images: dict | None, suffix: str = "") -> None:
    """results<suffix>.csv (and first_slice<suffix>.npz, the grid's images, when ``images`` changed), rewritten
    atomically after every reconstruction so an interrupted run keeps what it finished (``--resume`` continues
    it); suffix ".rank<R>": a torchrun rank's own files."""
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / f"results{suffix}.csv", rows)
    if images is not None:
        buf = io.BytesIO()
        np.savez(buf, **images)
        atomic_write_bytes(out / f"first_slice{suffix}.npz", buf.getvalue())


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def results_markdown(rows, settings, meths, suite, n_slices, size, total_seconds) -> str:
    lines = [f"# wavepatch bench: {suite}", "",
             f"{n_slices} slices, {size}x{size}; PSNR dB / SSIM as mean ± std over slices on the windowed unit "
             f"image; s = seconds per image; NFE = denoiser evaluations per image. Total {total_seconds:.0f} s of "
             "reconstruction (all rows, resumed runs included).", ""]
    for setting in settings:
        lines += [f"## {setting.label}", "", "| method | PSNR | SSIM | s / image | NFE |", "|---|---|---|---|---|"]
        for meth in meths:
            sel = [r for r in rows if r["setting"] == setting.label and r["method"] == meth.label]
            if not sel:
                continue
            p, s = np.array([r["psnr"] for r in sel]), np.array([r["ssim"] for r in sel])
            sec, nfe = np.mean([r["seconds"] for r in sel]), sel[0]["nfe"]
            lines.append(f"| {meth.label} | {p.mean():.2f} ± {p.std():.2f} | {s.mean():.3f} ± {s.std():.3f} "
                         f"| {sec:.1f} | {nfe or '–'} |")
        lines.append("")
    return "\n".join(lines)


def _grid_figure(path: Path, images: dict, settings, meths) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["truth"] + [m.label for m in meths]
    fig, axes = plt.subplots(len(settings), len(cols), figsize=(1.9 * len(cols), 2.0 * len(settings)), squeeze=False)
    for i, setting in enumerate(settings):
        for j, col in enumerate(cols):
            ax = axes[i, j]
            key = f"{setting.label}|{col}"
            if key in images:
                ax.imshow(np.clip(images[key], 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col, fontsize=7)
            if j == 0:
                ax.set_ylabel(setting.label, fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
