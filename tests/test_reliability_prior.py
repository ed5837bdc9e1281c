"""Failure modes of `wavepatch train` / `sample` and of prior loading: each is one error line and exit 2, with
nothing half-written, or works where it should (bundled prior by default, stale files replaced)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from wavepatch.cli import main
from wavepatch.prior.checkpoint import CheckpointError, load_prior
from wavepatch.resources import prior_path

TINY = ["--channels", "8", "--channel-mult", "1,2", "--blocks", "1", "--no-attention", "--batch", "4",
        "--lr", "1e-3", "--warmup", "1", "--log-every", "1", "--no-progress"]
FAST_SAMPLE = ["--n", "1", "--size", "32", "--steps", "1", "--batch", "1", "--sampler", "euler", "--no-progress"]


def _train_args(data, out, *extra) -> list[str]:
    return ["train", str(data), "--window", "0", "1", "--prior", "patch", "--size", "16", "--patch-sizes", "8,16",
            "--patch-probs", "0.5,0.5", "--steps", "2", "--checkpoint-every", "2", "--out", str(out), *TINY, *extra]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wavepatch: error:"), err
    return lines[0]


def _bundled_meta(name: str = "ct_patch128") -> dict:
    with safe_open(str(prior_path(name)), framework="pt") as f:
        return json.loads(f.metadata()["wavepatch"])


# D2: a small file declaring a huge network is refused from its header, before anything is allocated


def test_load_prior_refuses_huge_declared_architecture_quickly(tmp_path, capsys):
    meta = _bundled_meta()
    meta["config"]["unet"]["base_channels"] = 8192
    path = tmp_path / "huge.safetensors"
    save_file({"a": torch.zeros(4), "b": torch.zeros(2, 3)}, str(path), metadata={"wavepatch": json.dumps(meta)})
    assert path.stat().st_size < 100_000
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="does not match its architecture"):
        load_prior(path)
    assert time.perf_counter() - t0 < 2.0
    assert main(["sample", "--prior", str(path), "--out", str(tmp_path / "s"), *FAST_SAMPLE]) == 2
    assert "does not match its architecture" in _one_error_line(capsys)
    assert not (tmp_path / "s").exists()


def test_load_prior_refuses_wrong_shapes_from_header(tmp_path):
    meta = _bundled_meta()
    tensors = load_file(str(prior_path("ct_patch128")))
    key = next(k for k, v in tensors.items() if v.ndim == 4)
    tensors[key] = torch.zeros(1, 1, 1, 1, dtype=tensors[key].dtype)
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata={"wavepatch": json.dumps(meta)})
    with pytest.raises(CheckpointError, match=f"{key} has shape"):
        load_prior(path)


def test_prior_folder_is_named_a_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert main(["sample", "--prior", str(run), "--out", str(tmp_path / "s"), *FAST_SAMPLE]) == 2
    line = _one_error_line(capsys)
    assert "is a folder" in line and ".safetensors" in line and "does not exist" not in line


# resume from a damaged training state


@pytest.mark.slow
def test_resume_truncated_state_is_one_line(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert main(_train_args(data, run)) == 0
    state = run / "train_state.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    capsys.readouterr()
    assert main(_train_args(data, run, "--resume", "--steps", "4")) == 2
    line = _one_error_line(capsys)
    assert str(state) in line and "corrupt or truncated" in line and "delete it to start over" in line


# disk full while training: the checkpoint writer names the file, nothing half-written under a final name


@pytest.mark.slow
def test_train_disk_full_is_one_line_and_leaves_no_partial_checkpoint(tmp_path, data):
    run = tmp_path / "run"
    limit = 20_000  # bytes: train_config.json fits, the training state (~100s of KB) does not
    code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "from wavepatch.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *_train_args(data, run)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    # (matplotlib may add a line of its own when it cannot write its font cache under the same limit)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("wavepatch")]
    assert len(lines) == 1 and lines[0].startswith("wavepatch: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{run / 'train_state.safetensors'}: cannot write" in lines[0] and "too large" in lines[0]
    assert not (run / "train_state.safetensors").exists() and not (run / "prior.safetensors").exists()
    assert not [p.name for p in run.iterdir() if p.name.startswith(".tmp-")]


# numeric option ranges


@pytest.mark.parametrize("extra, message", [
    (["--patch-probs", "0.9,0.9"], "sum to 1"),
    (["--patch-probs", "1.5,-0.5"], "[0, 1]"),
    (["--patch-probs", "1"], "one probability per patch size"),
    (["--lr", "0"], "lr > 0"),
    (["--lr", "nan"], "lr"),
    (["--steps", "0"], "steps >= 1"),
    (["--dropout", "1"], "dropout"),
    (["--channels", "100000"], "base_channels"),
    (["--size", "100000"], "size"),
    (["--warmup", "-1"], "warmup"),
    (["--minutes", "0"], "minutes"),
])
def test_train_option_ranges(tmp_path, data, capsys, extra, message):
    run = tmp_path / "run"
    assert main(_train_args(data, run, *extra)) == 2
    assert message in _one_error_line(capsys)
    assert not run.exists()


@pytest.mark.parametrize("extra, message", [
    (["--size", "5000"], "--size"),
    (["--size", "4"], "--size"),
    (["--n", "20000"], "--n"),
    (["--batch", "0"], "--batch"),
    (["--steps", "0"], "--steps"),
    (["--sigma-min", "0"], "--sigma-min"),
    (["--sigma-max", "nan"], "--sigma-max"),
    (["--patch-size", "0"], "--patch-size"),
])
def test_sample_option_ranges(tmp_path, capsys, extra, message):
    out = tmp_path / "s"
    assert main(["sample", "--out", str(out), *FAST_SAMPLE, *extra]) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists()


# sample: the bundled prior by default, staged output, non-finite samples refused


@pytest.mark.slow
@pytest.mark.parametrize("modality, name", [("ct", "ct_patch256"), ("mri", "mri_patch256")])
def test_sample_defaults_to_bundled_prior(tmp_path, capsys, modality, name):
    out = tmp_path / "s"
    assert main(["sample", "--modality", modality, "--out", str(out), *FAST_SAMPLE]) == 0
    assert name in capsys.readouterr().out
    assert json.loads((out / "sample_info.json").read_text())["prior"].endswith(f"{name}.safetensors")
    assert np.load(out / "samples.npy").shape == (1, 32, 32)


@pytest.mark.slow
def test_sample_replaces_earlier_run_and_refuses_foreign_folder(tmp_path, capsys):
    prior = str(prior_path("ct_patch128"))
    out = tmp_path / "s"
    assert main(["sample", "--prior", prior, "--dicom", "--out", str(out), *FAST_SAMPLE]) == 0
    assert (out / "samples_dicom").is_dir()
    assert main(["sample", "--prior", prior, "--out", str(out), *FAST_SAMPLE]) == 0
    assert not (out / "samples_dicom").exists()  # no stale series from the first run
    assert (out / "samples.npy").is_file()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    capsys.readouterr()
    assert main(["sample", "--prior", prior, "--out", str(foreign), *FAST_SAMPLE]) == 2
    assert "not written by wavepatch" in _one_error_line(capsys)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_sample_nan_prior_writes_nothing(tmp_path, capsys):
    src = prior_path("ct_patch128")
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(src))
    key = next(k for k, v in tensors.items() if v.ndim == 4)
    tensors[key].view(-1)[0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, str(bad), metadata=metadata)
    out = tmp_path / "s"
    assert main(["sample", "--prior", str(bad), "--out", str(out), *FAST_SAMPLE]) == 2
    assert "NaN" in _one_error_line(capsys)
    assert not out.exists()
    assert [p.name for p in Path(tmp_path).iterdir() if p.name.startswith(".staging")] == []
