"""The method registry: every entry's parameters are real, validated, documented, and a new sampler defined here
is reachable from ``run_reconstruction`` and the CLI with no other change."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wavepatch import methods as M
from wavepatch.cli import main
from wavepatch.run import run_reconstruction
from wavepatch.sampling.steps import Counted, level_pairs, report
from wavepatch.tasks import TaskOptions

DOCS = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


@pytest.mark.parametrize("name", M.names())
def test_every_declared_parameter_reaches_the_function(name):
    entry = M.get_method(name)
    fast_run = entry.fast_run or entry.run
    takers = {"always": [entry.run, fast_run], "slow": [entry.run], "fast": [fast_run]}
    for p in entry.params:
        if entry.kind == "sampler" and p.name in M.SCHEDULE_PARAMS:
            continue
        for f in takers[p.applies]:
            assert p.name in inspect.signature(f).parameters, f"{name}: {f.__name__} does not take {p.name}"
    if entry.kind == "classical":  # and no keyword-only parameter of the function is left undeclared
        required = {k for k, v in inspect.signature(entry.run).parameters.items()
                    if v.kind is v.KEYWORD_ONLY and v.default is v.empty}
        network = {"translator"} if entry.network else set()  # the method's network, from run_classical
        assert required <= {p.name for p in entry.params} | network


@pytest.mark.parametrize("name", M.names())
def test_defaults_are_valid_for_every_task(name):
    entry = M.get_method(name)
    for task in ("ct-parallel", "ct-fan", "ct-lowdose", "mri", "deblur", "sr", "inpaint"):
        if entry.tasks is not None and task not in entry.tasks:
            with pytest.raises(ValueError, match="applies to --task"):
                entry.resolve(task)
            continue
        params = entry.resolve(task)
        for p in entry.params:
            assert p.parse(name, params[p.name]) == params[p.name]


@pytest.mark.parametrize("name", M.names())
def test_bad_parameters_are_refused_naming_the_parameter(name):
    entry = M.get_method(name)
    task = entry.tasks[0] if entry.tasks else "ct-parallel"
    with pytest.raises(ValueError, match="bogus"):
        entry.resolve(task, {"bogus": "1"})
    for p in entry.params:
        if p.type in (int, float):
            with pytest.raises(ValueError, match=p.name):
                entry.resolve(task, {p.name: "abc"}, fast=p.applies == "fast")
        if p.low is not None:
            below = p.low if p.low_open else p.low - 1
            with pytest.raises(ValueError, match=p.name):
                entry.resolve(task, {p.name: str(below)}, fast=p.applies == "fast")
        if p.choices:
            with pytest.raises(ValueError, match=p.name):
                entry.resolve(task, {p.name: "nope"})


def test_review_cases_and_type_conversion():
    admm = M.get_method("admm-tv")
    assert admm.resolve("ct-parallel", {"lam": "0.01", "n_iter": "7"}) == {"lam": 0.01, "rho": 0.05, "n_iter": 7}
    assert admm.resolve("mri")["lam"] == 3e-4  # per-task default
    for bad in ({"n_iter": "-3"}, {"rho": "0"}, {"n_iter": "2.5"}, {"lam": "nan"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            admm.resolve("ct-parallel", bad)
    with pytest.raises(ValueError, match="sigma"):
        M.get_method("pnp-admm").resolve("ct-parallel", {"sigma": "0"})
    with pytest.raises(ValueError, match="no parameter 'lam'"):
        M.get_method("fbp").resolve("ct-parallel", {"lam": "1"})
    with pytest.raises(ValueError, match="--fast"):
        admm.resolve("ct-parallel", fast=True)


def test_variants_and_fast_mode_defaults():
    pnp = M.get_method("pnp-admm")
    assert pnp.resolve("ct-parallel")["sigma"] == 0.01
    learned = pnp.resolve("ct-parallel", {"denoiser": "learned"})
    assert (learned["sigma"], learned["n_iter"]) == (0.03, 50)
    assert pnp.resolve("ct-parallel", {"denoiser": "learned", "sigma": "0.05"})["sigma"] == 0.05
    padis = M.get_method("padis")
    assert padis.resolve("ct-parallel")["steps"] == 40 and padis.resolve("ct-parallel", fast=True)["steps"] == 50
    with pytest.raises(ValueError, match="eta does not apply without --fast"):
        padis.resolve("ct-parallel", {"eta": "0.5"})
    with pytest.raises(ValueError, match="n_inner does not apply with --fast"):
        padis.resolve("ct-parallel", {"n_inner": "2"}, fast=True)
    dps = M.get_method("dps")  # per-task fast-mode defaults: phase retrieval starts from HIO at 0.2, 200 steps
    assert dps.resolve("phase-retrieval")["steps"] == 1000
    fast = dps.resolve("phase-retrieval", fast=True)
    assert (fast["steps"], fast["sigma_start"]) == (200, 0.2)
    assert dps.resolve("phase-retrieval", {"steps": "50"}, fast=True)["steps"] == 50  # the user's value wins
    other = dps.resolve("ct-parallel", fast=True)
    assert (other["steps"], other["sigma_start"]) == (100, 0.1)
    # DPS' step: the line search by default; zeta only with the paper's normalised step, c only with the search
    assert dps.resolve("ct-parallel")["step"] == dps.resolve("phase-retrieval")["step"] == "linesearch"
    assert dps.resolve("ct-parallel", {"step": "normalized", "zeta": "0.2"})["zeta"] == 0.2
    with pytest.raises(ValueError, match="zeta applies with step=normalized only"):
        dps.resolve("ct-parallel", {"zeta": "0.2"})
    with pytest.raises(ValueError, match="c applies with step=linesearch only"):
        dps.resolve("phase-retrieval", {"step": "normalized", "c": "0.1"})


def test_docs_table_is_generated_from_the_registry():
    assert DOCS.read_text() == M.methods_doc(), (
        "docs/methods.md is stale: regenerate with `wavepatch methods --markdown`")


def shrink_to_data(denoise, fidelity, x, sigmas, *, generator=None, callback=None, gamma: float = 0.5):
    """A test sampler: at each level, denoise, take a gamma step toward the data's projection, re-noise."""
    denoise = Counted(denoise)
    pairs = level_pairs(sigmas)
    for i, (s, s_next) in enumerate(pairs):
        d = denoise(x, s)
        d = (1 - gamma) * d + gamma * fidelity.project(d)
        x = d + s_next * torch.randn(x.shape, generator=generator)
        report(callback, i, len(pairs), s, x, d, denoise)
    return x


@pytest.fixture
def test_sampler():
    entry = M.register(M.Method("shrink-to-data", "sampler", shrink_to_data, "a sampler defined in a test file",
                                (M.Param("steps", int, 3, "levels", low=1),
                                 M.Param("gamma", float, 0.5, "step toward the data", low=0, high=1),
                                 *M.get_method("ddnm").params[-3:])))
    yield entry
    del M.REGISTRY[entry.name]


def test_a_sampler_defined_in_a_test_is_reachable(test_sampler, tmp_path):
    img = np.clip(np.random.default_rng(0).random((32, 32)), 0, 1).astype(np.float32)
    res = run_reconstruction(img, "mri", TaskOptions(), "shrink-to-data", {"gamma": "1.0"}, seed=0)
    assert res.nfe == 3 and res.params["gamma"] == 1.0 and torch.isfinite(res.recon).all()
    # gamma = 1 ends on the projection: the measured k-space lines are reproduced exactly
    fid = res.task.fidelity(res.task.simulate(torch.from_numpy(img)[None, None], torch.Generator().manual_seed(1)))
    assert float(fid.residual(fid.project(res.recon))) < 1e-6 * float(fid.residual(torch.zeros_like(res.recon)))
    with pytest.raises(ValueError, match="gamma"):
        run_reconstruction(img, "mri", TaskOptions(), "shrink-to-data", {"gamma": "2"})
    np.save(tmp_path / "img.npy", img)
    out = tmp_path / "out"
    code = main(["reconstruct", str(tmp_path / "img.npy"), "--task", "mri", "--method", "shrink-to-data",
                 "--size", "32", "--steps", "2", "--out", str(out), "--no-progress"])
    assert code == 0 and json.loads((out / "metrics.json").read_text())["nfe"] == 2


def test_cli_param_errors_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "img.npy", np.zeros((32, 32), np.float32) + 0.5)
    for method, param in (("fbp", "lam=1"), ("admm-tv", "rho=0"), ("admm-tv", "n_iter=-3"), ("red", "sigma=x")):
        code = main(["reconstruct", str(tmp_path / "img.npy"), "--task", "deblur", "--method", method, "--size", "32",
                     "--param", param, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and err.startswith("wavepatch: error:") and param.split("=")[0] in err
    assert not (tmp_path / "o").exists()
