"""Where the main job's time goes: the README's 20-view CT run (PaDIS fast, --compare admm-tv) split by phase.

Run: ``python benchmarks/profile_main_job.py [--repeats 3] [--threads N] [--against REV]``. Prints:

1. whole processes (``wavepatch reconstruct ...`` as a user runs it, and ``python -c 'import wavepatch.cli'``
   for start-up and imports), the median of ``--repeats`` runs;
2. the in-process split of one run: each phase's *exclusive* wall time (time inside the phase's functions minus
   the time of the other phases they call), found by wrapping the functions below wherever wavepatch modules
   reference them. "other" is the rest of ``cli.main`` (metrics, argument parsing, glue).

3. with ``--against REV`` (e.g. ``af9c1ed``, the commit before the speed-ups): the main job as a process from a
   git worktree of REV and from this checkout, alternating, ``--repeats`` times each: median seconds, their
   ratio and both PSNRs (same slice, same seed, same venv; REV's source is put first on ``PYTHONPATH``).

4. with ``--methods``: the learned methods that share the pieces (PaDIS fast, DDNM with a warm start, PnP-ADMM
   with the learned denoiser, DPS: forward + backward through the whole-image network), in process on the
   same slice and measurement, at ``--precision fp32`` and ``bf16``: seconds, NFE and PSNR.

Phases: read input, task/operator build, checkpoint load, ADMM-TV (the warm start; --compare reuses it),
network (every patch-denoiser call), data steps (the CG data consistency of each level), sampler rest (noise,
bookkeeping), metrics, write outputs (npy/png/figures/json; the folder publish is part of "other").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLICE = ROOT / "data" / "ct" / "A0002_B40f_015.dcm"
MAIN_ARGS = ["reconstruct", str(SLICE), "--task", "ct-parallel", "--views", "20", "--method", "padis", "--fast",
             "--compare", "admm-tv", "--no-progress"]


def _wavepatch_exe() -> str:
    return str(Path(sys.executable).parent / "wavepatch")


def _timed_job(env: dict, out: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([_wavepatch_exe(), *MAIN_ARGS, "--out", out], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    lines = proc.stdout.strip().splitlines()
    return time.perf_counter() - t0, next((ln for ln in lines if " PSNR " in ln), lines[-1])


def side_by_side(rev: str, repeats: int, env: dict) -> None:
    """The main job from a worktree of ``rev`` and from this checkout, alternating; prints a table."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), rev], check=True,
                       capture_output=True)
        try:
            old_env = {**env, "PYTHONPATH": str(tree / "src")}
            times = {"old": [], "new": []}
            lines = {}
            for i in range(repeats):
                for name, e in (("old", old_env), ("new", env)):
                    sec, lines[name] = _timed_job(e, f"{tmp}/{name}{i}")
                    times[name].append(sec)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"| main job as a process | seconds (median of {repeats}) | last run |\n|---|---|---|")
    print(f"| {rev} | {old:.2f} | {lines['old']} |")
    print(f"| this checkout | {new:.2f} | {lines['new']} |")
    print(f"| ratio new / old | {new / old:.2f} | |")


def whole_process(repeats: int, env: dict) -> list[tuple[str, float]]:
    """Median wall seconds of: python start-up, import of the CLI, and the main job as a process."""
    rows = []
    for label, cmd in (("python start-up (python -c pass)", [sys.executable, "-c", "pass"]),
                       ("import wavepatch.cli", [sys.executable, "-c", "import wavepatch.cli"])):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env)
            times.append(time.perf_counter() - t0)
        rows.append((label, statistics.median(times)))
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            sec, summary = _timed_job(env, f"{tmp}/run{i}")
            times.append(sec)
    rows.append(("main job as a process", statistics.median(times)))
    print(f"last run: {summary}")
    return rows


class PhaseTimer:
    """Exclusive wall time per phase: a phase's time excludes the nested phases it calls."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list] = []

    @contextmanager
    def phase(self, name: str):
        self._stack.append([name, 0.0])
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            _, child = self._stack.pop()
            self.total[name] = self.total.get(name, 0.0) + dt - child
            self.calls[name] = self.calls.get(name, 0) + 1
            if self._stack:
                self._stack[-1][1] += dt

    def wrap(self, func, name: str):
        def timed(*args, **kwargs):
            with self.phase(name):
                return func(*args, **kwargs)
        timed.__wrapped__ = func
        return timed


def _patch_everywhere(func, replacement) -> int:
    """Replace ``func`` by ``replacement`` in every loaded wavepatch module that references it."""
    n = 0
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith("wavepatch") or mod is None:
            continue
        for attr, value in list(vars(mod).items()):
            if value is func:
                setattr(mod, attr, replacement)
                n += 1
    return n


def in_process_split() -> tuple[list[tuple[str, float, int]], float]:
    import wavepatch.cli as cli
    import wavepatch.learned as learned
    import wavepatch.report as report
    import wavepatch.run as run
    import wavepatch.sampling.posterior as posterior
    import wavepatch.tasks as tasks
    from wavepatch import io as wio
    from wavepatch import metrics

    timer = PhaseTimer()
    targets = [(cli._load_slice, "read input"), (tasks.make_task, "task / operator build"),
               (learned.cached_prior, "checkpoint load (cached_prior)"), (run.run_classical, "ADMM-TV"),
               (posterior.data_consistency, "data steps (CG)"), (learned.run_sampler, "sampler rest"),
               (metrics.image_metrics, "metrics"), (wio.save_npy, "write outputs"),
               (wio.save_png, "write outputs"), (report.compare_figure, "write outputs"),
               (report.save_json, "write outputs")]
    for func, name in targets:  # staged_output's publishing is a context manager: it lands in "other"
        _patch_everywhere(func, timer.wrap(func, name))
    make_denoiser = learned.make_denoiser

    def timed_make_denoiser(*args, **kwargs):
        return timer.wrap(make_denoiser(*args, **kwargs), "network (patch denoiser)")

    learned.make_denoiser = timed_make_denoiser
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with timer.phase("other (cli glue)"):
            code = cli.main([*MAIN_ARGS, "--out", f"{tmp}/out"])
        total = time.perf_counter() - t0
    if code:
        raise SystemExit(f"main job failed with exit {code}")
    rows = sorted(((n, t, timer.calls[n]) for n, t in timer.total.items()), key=lambda r: -r[1])
    return rows, total


LEARNED_METHODS = (("padis fast", "padis", {}, True), ("ddnm fast", "ddnm", {}, True),
                   ("pnp-admm (learned)", "pnp-admm", {"denoiser": "learned"}, False),
                   ("dps", "dps", {}, False))


def learned_methods(precisions=("fp32", "bf16")) -> None:
    """Seconds / NFE / PSNR of each learned method at each precision on the main job's slice and measurement."""
    from wavepatch.io import normalize_volume, read_image, resize_square
    from wavepatch.run import run_reconstruction
    from wavepatch.tasks import task_options

    img = resize_square(normalize_volume(read_image(SLICE), None)[0][0], 256)
    print("| method | precision | seconds | NFE | PSNR (dB) | SSIM |\n|---|---|---|---|---|---|")
    for label, method, overrides, fast in LEARNED_METHODS:
        for precision in precisions:
            r = run_reconstruction(img, "ct-parallel", task_options("ct-parallel", views=20), method, overrides,
                                   fast=fast, precision=precision)
            print(f"| {label} | {precision} | {r.seconds:.1f} | {r.nfe} | {r.metrics['psnr']:.2f} | "
                  f"{r.metrics['ssim']:.4f} |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="OMP/torch threads (default: torch's own)")
    ap.add_argument("--skip-processes", action="store_true", help="only the in-process split")
    ap.add_argument("--against", default=None, metavar="REV", help="also time REV's main job side by side")
    ap.add_argument("--methods", action="store_true", help="also the learned methods at fp32 and bf16")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
        import torch
        torch.set_num_threads(args.threads)
    if not args.skip_processes:
        print(f"| whole process | seconds (median of {args.repeats}) |\n|---|---|")
        for label, sec in whole_process(args.repeats, env):
            print(f"| {label} | {sec:.2f} |")
        print()
    if args.against:
        side_by_side(args.against, args.repeats, env)
        print()
    rows, total = in_process_split()
    print("| phase (in process, one run) | seconds | share | calls |\n|---|---|---|---|")
    for name, sec, calls in rows:
        print(f"| {name} | {sec:.2f} | {sec / total:.0%} | {calls} |")
    print(f"| **total cli.main** | {total:.2f} | 100% | |")
    if args.methods:
        print()
        learned_methods()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
