"""End-to-end run of the real Snakemake pipeline with the smoke profile (mnist-5k, 2 x 2 grid).

One smoke run is shared by the tests of this module; a second run from scratch in another
folder checks that the tables and figures are reproduced exactly (wall time aside).
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, copy_workflow, snakemake

import nemon

pytestmark = pytest.mark.e2e

SMOKE = yaml.safe_load((REPO / "profiles/smoke/smoke-config.yaml").read_text())
DATASET = SMOKE["dataset"]
GRID = list(itertools.product(SMOKE["grid"]["gamma"], SMOKE["grid"]["lam"], SMOKE["grid"]["seed"]))
EPS = SMOKE["attack"]["eps"]
FIGURES = [
    f"figures/{DATASET}/{name}.{ext}"
    for name in ("pareto", "accuracy_vs_eps", "lipschitz_vs_lambda")
    for ext in ("pdf", "png")
]
WALL_TIME_COLUMNS = ["train_seconds"]


def smoke_run(folder: Path) -> Path:
    wf = copy_workflow(folder)
    t0 = time.perf_counter()
    r = snakemake("--profile", "profiles/smoke", "--cores", "2", cwd=wf)
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, f"smoke run failed:\n{r.stdout[-5000:]}\n{r.stderr[-5000:]}"
    print(f"smoke run in {folder}: {seconds:.1f} s")
    return wf


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return smoke_run(tmp_path_factory.mktemp("smoke_a"))


@pytest.fixture(scope="module")
def summary(run) -> pd.DataFrame:
    return pd.read_csv(run / f"results/{DATASET}/summary.csv")


@pytest.fixture(scope="module")
def robustness(run) -> pd.DataFrame:
    return pd.read_csv(run / f"results/{DATASET}/robustness.csv")


def test_summary_has_one_row_per_model_with_sane_values(summary):
    required = [
        "dataset",
        "gamma",
        "lam",
        "seed",
        "clean_acc",
        "mu",
        "lipschitz_bound",
        "fwd_iters_mean",
        "bwd_iters_mean",
        "not_converged",
        "epochs",
        "train_seconds",
    ]
    assert set(required) <= set(summary.columns)
    assert sorted(zip(summary["gamma"], summary["lam"], summary["seed"], strict=True)) == sorted(
        GRID
    )
    assert (summary["dataset"] == DATASET).all()
    assert summary["clean_acc"].between(0, 1).all()
    assert (summary["clean_acc"] > 0.3).all(), "one epoch on mnist-5k should beat chance clearly"
    assert (summary["mu"] <= summary["gamma"] + 1e-6).all()
    assert (summary["lipschitz_bound"] > 0).all()
    assert (summary["fwd_iters_mean"] >= 1).all() and (summary["bwd_iters_mean"] >= 1).all()
    assert (summary["epochs"] == SMOKE["training"]["epochs"]).all()
    assert (summary["train_seconds"] > 0).all()
    keys = ["gamma", "lam", "seed"]
    assert summary[keys].equals(summary[keys].sort_values(keys, ignore_index=True))


def test_robustness_has_one_row_per_model_attack_and_eps(robustness):
    assert list(robustness.columns) == [
        "dataset",
        "gamma",
        "lam",
        "seed",
        "attack",
        "eps",
        "accuracy",
    ]
    keys = ["gamma", "lam", "seed", "attack", "eps"]
    assert not robustness.duplicated(keys).any()
    expected = {(*p, a, e) for p in GRID for a in ("inversion", "certified") for e in EPS}
    assert set(robustness[keys].itertuples(index=False, name=None)) == expected
    assert robustness["accuracy"].between(0, 1).all()


def test_certified_accuracy_never_exceeds_attacked_accuracy(robustness):
    wide = robustness.pivot_table(
        index=["gamma", "lam", "seed", "eps"], columns="attack", values="accuracy"
    )
    assert len(wide) == len(GRID) * len(EPS)
    assert (wide["certified"] <= wide["inversion"]).all(), wide


def test_each_model_directory_holds_a_loadable_model_and_its_metrics(run):
    gamma, lam, seed = GRID[-1]
    point = f"g{float(gamma)!r}_l{float(lam)!r}_s{seed}"  # as common.smk's fmt_float writes it
    folder = run / f"results/{DATASET}/models/{point}"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert len(metrics["history"]) == SMOKE["training"]["epochs"]
    assert {"train_loss", "test_acc", "lipschitz_bound", "fwd_iters_mean"} <= set(
        metrics["history"][0]
    )
    prov = metrics["provenance"]
    assert prov["config"]["gamma"] == gamma and prov["config"]["lam"] == lam
    assert prov["seed"] == seed and prov["device"] == "cpu"
    assert prov["torch"] == torch.__version__ and prov["nemon"] == nemon.__version__
    assert prov["git_commit"] == "unknown"  # the temporary copy is not a git checkout
    saved = torch.load(folder / "model.pt", weights_only=True)
    model = nemon.NEMON(**saved["kwargs"])
    model.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        bound = float(model.lipschitz_bound())
    assert bound == pytest.approx(metrics["lipschitz_bound"], rel=1e-6)
    log = (run / f"logs/train/{DATASET}/{point}.log").read_text()
    assert "epoch 1/" in log  # tqdm progress lands in the log


def test_figures_exist_as_pdf_and_png(run):
    for f in FIGURES:
        data = (run / f).read_bytes()
        magic = b"%PDF" if f.endswith(".pdf") else b"\x89PNG"
        assert data.startswith(magic) and len(data) > 5000, f


def test_a_second_run_has_nothing_to_do(run):
    r = snakemake("--profile", "profiles/smoke", "-n", cwd=run)
    assert r.returncode == 0, r.stderr
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout


def test_report_builds_with_the_figure_captions(run):
    r = snakemake("--profile", "profiles/smoke", "--report", "report.html", cwd=run)
    assert r.returncode == 0, r.stdout + r.stderr
    html = (run / "report.html").read_text()
    assert "Pareto front" in html and "certified accuracy" in html


def test_a_rerun_from_scratch_reproduces_tables_and_figures(run, tmp_path_factory):
    again = smoke_run(tmp_path_factory.mktemp("smoke_b"))
    table = f"results/{DATASET}/robustness.csv"
    assert (run / table).read_bytes() == (again / table).read_bytes()
    a, b = (pd.read_csv(w / f"results/{DATASET}/summary.csv") for w in (run, again))
    pd.testing.assert_frame_equal(
        a.drop(columns=WALL_TIME_COLUMNS), b.drop(columns=WALL_TIME_COLUMNS), check_exact=True
    )
    for f in FIGURES:  # drawn from the tables only, and train_seconds is in none of them
        assert (run / f).read_bytes() == (again / f).read_bytes(), f


def test_a_bad_config_stops_the_run_before_any_job(tmp_path):
    wf = copy_workflow(tmp_path / "bad")
    (wf / "bad.yaml").write_text(
        yaml.safe_dump({**SMOKE, "grid": {**SMOKE["grid"], "gamma": [1.0]}})
    )
    r = snakemake("--profile", "profiles/smoke", "--configfile", "bad.yaml", cwd=wf, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "grid.gamma[0]" in out and "< 1" in out, out
    for folder in ("results", "resources", "figures", "logs", "benchmarks"):
        assert not (wf / folder).exists(), folder
