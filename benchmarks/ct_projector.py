"""CT projectors side by side: wavepatch's sparse matrix, wavepatch matrix-free, and ASTRA's CPU projector.

For each geometry (N x N image, V parallel-beam views over 180 degrees, ceil(sqrt(2) N) unit bins) it prints the
build time, forward, adjoint and FBP seconds (median of ``--repeats``, after a warm-up call; the matrix-free
projector with its compiled CPU kernels and with the torch code other devices run), and the memory held
by the operator or used beyond the image and sinogram (peak RSS of the process on a warm call, read from
/proc/self/status after resetting the peak with /proc/self/clear_refs; Linux only). The matrix is skipped where
its estimate exceeds ``--matrix-mb``. ASTRA (``astra-toolbox``, CPU ``linear`` = Joseph-type and ``line``
kernels) runs in its own venv because it is not a wavepatch dependency:
``python3 -m venv /tmp/astravenv && /tmp/astravenv/bin/pip install astra-toolbox numpy`` then
``--astra-python /tmp/astravenv/bin/python``. Each measurement runs in a fresh subprocess.

Run: ``python benchmarks/ct_projector.py [--sizes 256:60 512:720] [--astra-python PY] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

# Shared by both jobs (each job defines ``out``, ``repeats`` and ``jobs``): median seconds of each call and the
# peak memory it adds, from the kernel's high-water mark reset before the calls.
STATUS = textwrap.dedent("""
    import json, re, statistics, sys, time
    def status(key):
        return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
""")
TIMING = textwrap.dedent("""
    for name, fn in jobs:
        times = []
        open("/proc/self/clear_refs", "w").write("5")
        base = status("VmRSS")
        for _ in range(repeats):
            t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
        out[name + "_s"] = statistics.median(times)
        out[name + "_extra_mb"] = status("VmHWM") - base
    print(json.dumps(out))
""")

WAVEPATCH_JOB = STATUS + textwrap.dedent("""
    import torch
    from wavepatch.physics import ray_free
    from wavepatch.physics.ct import ParallelBeamCT
    n, v, projector, repeats = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    if projector == "matrix-free-grid-sample":  # the kernel other devices use, on the CPU
        projector, ray_free.COMPILED_CPU = "matrix-free", False
    x = torch.rand(1, 1, n, n)
    before = status("VmRSS")
    t = time.perf_counter(); op = ParallelBeamCT(n, n_views=v, projector=projector); build = time.perf_counter() - t
    y = op.A(x); op.A_adjoint(y)  # warm-up (the matrix's first conversion; numba's compile or cache load)
    held = status("VmRSS") - before
    out = {"build_s": build, "held_mb": held}
    jobs = (("forward", lambda: op.A(x)), ("adjoint", lambda: op.A_adjoint(y)), ("fbp", lambda: op.fbp(y)))
""") + TIMING

ASTRA_JOB = STATUS + textwrap.dedent("""
    import astra, numpy as np
    n, v, kind, repeats = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    det = n + int(np.ceil(np.sqrt(2) * n - n))
    vol = astra.create_vol_geom(n, n)
    proj = astra.create_proj_geom("parallel", 1.0, det, np.arange(v) * np.pi / v)
    x = np.random.rand(n, n).astype(np.float32)
    t = time.perf_counter(); pid = astra.create_projector(kind, proj, vol); build = time.perf_counter() - t
    sid, sino = astra.create_sino(x, pid); astra.data2d.delete(sid)
    out = {"build_s": build, "held_mb": 0.0}
    def fwd():
        i, _ = astra.create_sino(x, pid); astra.data2d.delete(i)
    def adj():
        i, _ = astra.create_backprojection(sino, pid); astra.data2d.delete(i)
    def fbp():  # ASTRA's CPU FBP (ram-lak filter) with this projector
        sid = astra.data2d.create("-sino", proj, sino); rid = astra.data2d.create("-vol", vol)
        cfg = astra.astra_dict("FBP"); cfg["ProjectorId"] = pid
        cfg["ProjectionDataId"], cfg["ReconstructionDataId"] = sid, rid
        alg = astra.algorithm.create(cfg); astra.algorithm.run(alg)
        astra.algorithm.delete(alg); astra.data2d.delete([sid, rid])
    jobs = (("forward", fwd), ("adjoint", adj), ("fbp", fbp))
""") + TIMING


def run(python: str, job: str, args: list, env: dict) -> dict | None:
    proc = subprocess.run([python, "-c", job, *map(str, args)], capture_output=True, text=True, env=env)
    if proc.returncode:
        print(f"  ({python} {' '.join(map(str, args))} failed: {proc.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["256:60", "512:720"], help="N:V geometries")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--matrix-mb", type=float, default=2048, help="skip the matrix above this estimate")
    ap.add_argument("--astra-python", default=None, help="a python with astra-toolbox (see the docstring)")
    args = ap.parse_args(argv)
    from wavepatch.physics.ct import estimated_matrix_mb

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print("| geometry | projector | build s | forward s | adjoint s | FBP s | memory held MB | "
          "forward / adjoint extra MB |\n|---|---|---|---|---|---|---|---|")
    for spec in args.sizes:
        n, v = (int(t) for t in spec.split(":"))
        rows = []
        if estimated_matrix_mb(n, v) <= args.matrix_mb:
            rows.append(("wavepatch matrix", run(sys.executable, WAVEPATCH_JOB, [n, v, "matrix", args.repeats], env)))
        else:
            rows.append((f"wavepatch matrix (skipped: ~{estimated_matrix_mb(n, v) / 1024:.1f} GB)", None))
        for name, projector in (("wavepatch matrix-free (compiled, CPU default)", "matrix-free"),
                                ("wavepatch matrix-free (grid_sample)", "matrix-free-grid-sample")):
            rows.append((name, run(sys.executable, WAVEPATCH_JOB, [n, v, projector, args.repeats], env)))
        if args.astra_python:
            for kind in ("linear", "line"):
                rows.append((f"ASTRA CPU {kind}", run(args.astra_python, ASTRA_JOB, [n, v, kind, args.repeats],
                                                      env)))
        else:
            rows.append(("ASTRA CPU (not run: --astra-python not given)", None))
        for name, r in rows:
            if r is None:
                print(f"| {n}², {v} views | {name} | | | | | | |")
            else:
                print(f"| {n}², {v} views | {name} | {r['build_s']:.2f} | {r['forward_s']:.3f} | "
                      f"{r['adjoint_s']:.3f} | {r['fbp_s']:.3f} | {r['held_mb']:.0f} | "
                      f"{r['forward_extra_mb']:.0f} / "
                      f"{r['adjoint_extra_mb']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
