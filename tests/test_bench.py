"""`wavepatch bench --quick` end to end, and the markdown table's arithmetic."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from wavepatch.bench import Column, Setting, results_markdown, run_suite
from wavepatch.cli import main


def test_bench_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["method"] for r in rows] == ["baseline", "admm-tv", "padis fast", "dps (whole image)"]
    assert all(float(r["psnr"]) > 0 for r in rows) and int(rows[2]["nfe"]) == 2
    md = (out / "results.md").read_text()
    assert "## ct-parallel 20 views" in md and "| admm-tv |" in md
    assert (out / "grid.png").stat().st_size > 0
    assert "results.md" in capsys.readouterr().out


def test_results_markdown_mean_and_std():
    rows = [{"setting": "s", "method": "m", "slice": str(i), "psnr": p, "ssim": 0.5, "seconds": 2.0, "nfe": 10}
            for i, p in enumerate((30.0, 32.0))]
    md = results_markdown(rows, [Setting("s", "ct-parallel", {})], [Column("m", "fbp")], "ct", 2, 64, 1.0)
    assert "| m | 31.00 ± 1.00 | 0.500 ± 0.000 | 2.0 | 10 |" in md


def test_bench_rejects_unknown_methods(tmp_path):
    with pytest.raises(ValueError, match="unknown method labels"):
        run_suite("ct", tmp_path, methods=["nope"], progress=False)
    with pytest.raises(ValueError, match="unknown setting labels"):
        run_suite("ct", tmp_path, settings=["ct-parallel 7 views"], progress=False)
    with pytest.raises(ValueError, match="unknown suite"):
        run_suite("xray", tmp_path, progress=False)


def test_bench_runs_any_registered_method_and_checks_columns_first(tmp_path):
    rows = run_suite("ct", tmp_path / "b", quick=True, methods=["baseline", "cgls"], progress=False)
    assert [r["method"] for r in rows] == ["baseline", "cgls"] and rows[1]["psnr"] > 0
    import wavepatch.bench as bench

    bad = (bench.QUICK[0], [Column("admm-tv", "admm-tv", {"overrides": {"rho": 0}})])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "QUICK", bad)
        with pytest.raises(ValueError, match="rho"):  # refused before any reconstruction runs
            run_suite("ct", tmp_path / "c", quick=True, progress=False)
    assert not (tmp_path / "c").exists()


def test_bench_resume_runs_only_missing_jobs(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    rows = run_suite("ct", out, quick=True, progress=False)
    lines = (out / "results.csv").read_text().splitlines()
    (out / "results.csv").write_text("\n".join(lines[:3]) + "\n")  # header + the first two rows: "interrupted"
    import wavepatch.bench as bench

    calls = []
    real = bench.run_reconstruction_auto

    def counting(*args, **kwargs):
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "run_reconstruction_auto", counting)
    resumed = run_suite("ct", out, quick=True, progress=False, resume=True)
    assert calls == ["padis", "dps"]
    assert [r["method"] for r in resumed] == [r["method"] for r in rows]
    assert resumed[0]["psnr"] == pytest.approx(rows[0]["psnr"], abs=1e-6)
    assert "| dps (whole image) |" in (out / "results.md").read_text()


def test_bench_resume_picks_up_the_rank_files_of_a_stopped_torchrun(tmp_path, monkeypatch):
    # a 2-process run stopped after rank 0 wrote row 0 and rank 1 wrote row 1 (round-robin): resume runs 2 and 3
    out = tmp_path / "bench"
    rows = run_suite("ct", out, quick=True, progress=False)
    lines = (out / "results.csv").read_text().splitlines()
    (out / "results.csv").write_text("\n".join(lines[:2]) + "\n")
    (out / "results.rank1.csv").write_text("\n".join([lines[0], lines[2]]) + "\n")
    import wavepatch.bench as bench

    calls = []
    real = bench.run_reconstruction_auto
    monkeypatch.setattr(bench, "run_reconstruction_auto", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    resumed = run_suite("ct", out, quick=True, progress=False, resume=True)
    assert calls == ["padis", "dps"] and [r["method"] for r in resumed] == [r["method"] for r in rows]
    assert not list(out.glob("results.rank*")), "the rank files are merged and removed"


@pytest.mark.slow
def test_bench_under_torchrun_equals_one_process(tmp_path):
    """2 gloo processes deal out the quick suite's 4 jobs; rank 0 writes the same table as one process (every
    job seeds its own draws; one thread per process so no reduction order differs)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["bench", "--quick", "--no-progress", "--precision", "fp32"]
    one = subprocess.run([sys.executable, "-m", "wavepatch.cli", *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "wavepatch.cli", *args, "--out", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("reconstructions ->") == 1  # rank 0 alone reports

    def table(folder):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(folder / "results.csv"))]

    assert table(tmp_path / "one") == table(tmp_path / "two") and len(table(tmp_path / "two")) == 4
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_bench_resume_refuses_a_file_that_is_not_a_bench_csv(tmp_path, capsys):
    out = tmp_path / "bench"
    out.mkdir()
    (out / "results.csv").write_text("name,value\na,1\n")
    assert main(["bench", "--quick", "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "not a wavepatch bench results.csv" in capsys.readouterr().err
    assert (out / "results.csv").read_text() == "name,value\na,1\n"  # left as it was


def test_bench_resume_refuses_a_run_on_other_data_or_size(tmp_path, capsys):
    out = tmp_path / "bench"
    run_suite("ct", out, quick=True, progress=False)
    info = json.loads((out / "bench_run.json").read_text())
    assert info["size"] == 64 and info["slices"]
    (out / "bench_run.json").write_text(json.dumps({**info, "size": 128}))  # as if the first run was at 128²
    before = (out / "results.csv").read_text()
    assert main(["bench", "--quick", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "other size" in err
    assert (out / "results.csv").read_text() == before


def test_bench_shift_quick(tmp_path):
    """The distribution-shift suite in --quick form: resampled CT and the MRI template in one table, per-column
    priors, and --auto columns whose seconds include the selection."""
    rows = run_suite("shift", tmp_path, quick=True, progress=False)
    settings = {r["setting"] for r in rows}
    assert settings == {"ct20, 32 px upsampled", "mri x4 on the MNI template"} and len(rows) == 8
    assert all(np.isfinite(r["psnr"]) for r in rows)
    by = {(r["setting"], r["method"]): r for r in rows}
    # the final run's NFE only, not the candidates': 2 steps, or 0 where the selection keeps the warm start
    assert by[("mri x4 on the MNI template", "mri patch fast auto")]["nfe"] in (0, 2)
    ct = "ct20, 32 px upsampled"
    assert by[(ct, "admm-tv auto")]["seconds"] > by[(ct, "admm-tv")]["seconds"]
    assert "## ct20, 32 px upsampled" in (tmp_path / "results.md").read_text()
    assert [s.split("[")[0] for s in json.loads((tmp_path / "bench_run.json").read_text())["setting_data"]["mri"]]
