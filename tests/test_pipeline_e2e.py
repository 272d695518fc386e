"""End-to-end runs of the real Snakemake pipeline with the smoke profile (mnist-5k, every model
and objective of the experiment on a tiny grid, an experiment of its own width and epochs, every
instrument of the evaluation stage).

One smoke run is shared by the tests of this module; a second run from scratch in another
folder checks that the tables and figures are reproduced exactly (wall times aside).
:func:`check_smoke_outputs` holds the checks of a finished smoke run (tests/test_slurm.py runs
them on the run through SLURM).
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, copy_workflow, snakemake

import nemon
from nemon.config import load_schema, training_groups, validate_config
from nemon.contracts import (
    METRICS_SCHEMA,
    ROBUSTNESS_COLUMNS,
    SUMMARY_COLUMNS,
    load_model,
    read_json_record,
)

pytestmark = pytest.mark.e2e


def smoke_config() -> dict:
    """What the smoke profile runs: config.yaml, profiles/smoke/smoke-config.yaml over it."""
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    smoke = yaml.safe_load((REPO / "profiles/smoke/smoke-config.yaml").read_text())

    def merge(a, b):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return out

    return validate_config(merge(base, smoke), load_schema(), cuda_available=lambda: False)


SMOKE = smoke_config()
DATASET = SMOKE["dataset"]
PREFIX = SMOKE["output_prefix"]
GROUPS = training_groups(SMOKE)
POINTS = [k for g in GROUPS for k in g.point_keys(DATASET)]
POINT_DIRS = [d for g in GROUPS for d in g.point_dirs(PREFIX, DATASET)]
FIGURES = [
    f"{PREFIX}figures/{DATASET}/{name}.{ext}"
    for name in ("pareto", "accuracy_vs_eps", "lipschitz")
    for ext in ("pdf", "png")
]
WALL_TIME_COLUMNS = ["train_seconds", "evaluation_seconds"]
KEYS = ["experiment", "model", "objective", "gamma", "lam", "eps_t", "seed"]
# each group's grid points and their experiment's scheduled epochs
EPOCHS = {tuple(k[x] for x in KEYS): g.epochs for g in GROUPS for k in g.point_keys(DATASET)}


def tables(workdir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    base = workdir / f"{PREFIX}results/{DATASET}"
    return pd.read_csv(base / "summary.csv"), pd.read_csv(base / "robustness.csv")


def check_summary(summary: pd.DataFrame) -> None:
    assert list(summary.columns) == SUMMARY_COLUMNS
    got = sorted(zip(*(summary[k] for k in KEYS), strict=True))
    assert got == sorted(tuple(p[k] for k in KEYS) for p in POINTS)
    assert (summary["dataset"] == DATASET).all()
    assert summary["clean_acc"].between(0, 1).all()
    plain = summary[(summary["objective"] == "lipschitz") & (summary["lam"] == 0)]
    assert (plain["clean_acc"] > 0.5).all(), "two epochs on mnist-5k should beat chance clearly"
    nemons = summary[summary["model"].str.startswith("nemon")]
    assert (nemons["mu"] <= nemons["gamma"] + 1e-6).all()
    assert (summary["lipschitz_bound"] > 0).all() and (summary["lipschitz_tightness"] >= 1).all()
    assert (nemons["fwd_iters_mean"] >= 1).all()
    assert (summary[summary["model"] == "mlp"]["fwd_iters_mean"] == 0).all()
    # a model trains its experiment's epochs, and past them only while it misses the
    # convergence record
    scheduled = pd.Series([EPOCHS[k] for k in zip(*(summary[x] for x in KEYS), strict=True)])
    assert sorted(set(scheduled)) == sorted({g.epochs for g in GROUPS})
    assert len(set(scheduled)) > 1, "the smoke grid has an experiment of its own epochs"
    extra = SMOKE["training"]["extra_epochs"]
    extended = summary["epochs"] > scheduled
    assert summary["epochs"].between(scheduled, scheduled + extra).all()
    ran_out = summary["epochs"] == scheduled + extra
    assert (summary.loc[extended & ~ran_out, "training_converged"]).all()
    assert (summary["not_converged"] == 0).all() and (summary["clean_not_converged"] == 0).all()


def check_robustness(rob: pd.DataFrame) -> None:
    assert list(rob.columns) == ROBUSTNESS_COLUMNS
    ev = SMOKE["evaluation"]
    keys = [*KEYS, "attack", "eps", "inputs"]
    assert not rob.duplicated(keys).any()
    assert rob["accuracy"].between(0, 1).all() and (rob["violations"] == 0).all()
    for p in POINTS:
        mine = rob[(rob[KEYS] == pd.Series({k: p[k] for k in KEYS})).all(axis=1)]
        test = mine[mine["inputs"] == "test"]
        assert set(test.loc[test["attack"] == "inversion", "eps"]) == set(ev["inversion"]["eps"])
        assert set(test.loc[test["attack"] == "certified_lipschitz", "eps"]) == set(
            ev["certified_lipschitz"]["eps"]
        )
        interval = set(test.loc[test["attack"] == "certified_interval", "eps"])
        # MON has no l_inf contraction factor, so its interval bounds are not available
        assert interval == (set() if p["model"] == "mon" else set(ev["certified_interval"]["eps"]))
        pgd = mine[mine["attack"] == "pgd"]
        assert set(pgd["eps"]) == set(ev["pgd"]["eps"])
        assert (pgd["inputs"] == f"subset-{ev['pgd']['images']}").all()
        aa = mine[mine["attack"] == "autoattack"]
        assert set(aa["eps"]) == set(ev["autoattack"]["eps"])
        assert (aa["images"] == ev["autoattack"]["images"]).all()
        # the cheap instruments are reported on the attacks' subsets too (same inputs)
        for label in set(pgd["inputs"]) | set(aa["inputs"]):
            assert {"clean", "inversion", "certified_lipschitz"} <= set(
                mine.loc[mine["inputs"] == label, "attack"]
            )


def check_orderings(rob: pd.DataFrame) -> None:
    """MATH 11 on the same inputs: certified <= every attack; inversion and PGD <= clean."""
    wide = rob.pivot_table(index=[*KEYS, "inputs", "eps"], columns="attack", values="accuracy")
    for cert in ("certified_lipschitz", "certified_interval"):
        for atk in ("inversion", "pgd", "autoattack"):
            if cert in wide and atk in wide:
                both = wide[[cert, atk]].dropna()
                assert (both[cert] <= both[atk] + 1e-12).all(), both[both[cert] > both[atk]]
    clean = rob[rob["attack"] == "clean"].set_index([*KEYS, "inputs"])["accuracy"]
    for atk in ("pgd", "autoattack"):
        part = rob[rob["attack"] == atk].set_index([*KEYS, "inputs"])["accuracy"]
        assert (part <= clean.reindex(part.index) + 1e-12).all()


def check_model_folders(workdir: Path) -> None:
    widths = set()
    for g in GROUPS:
        exp = SMOKE["experiments"][g.experiment]
        for d, p in zip(g.point_dirs(PREFIX, DATASET), g.point_keys(DATASET), strict=True):
            folder = workdir / d
            metrics = read_json_record(folder / "metrics.json", METRICS_SCHEMA, expect=p, fix="-")
            assert len(metrics["history"]) == metrics["epochs"] >= g.epochs
            prov = metrics["provenance"]
            assert prov["torch"] == torch.__version__ and prov["nemon"] == nemon.__version__
            assert prov["git_commit"] == "unknown"  # the temporary copy is not a git checkout
            # the experiment's width, epochs and schedule reached the training and its record
            assert prov["hidden"] == g.hidden == exp["hidden"]
            assert prov["training"]["epochs"] == g.epochs == exp["epochs"]
            assert prov["training"]["schedule"] == exp["training"]
            assert [h["lr"] for h in metrics["history"][: g.epochs]] == [
                exp["training"]["lr"] * exp["training"]["lr_factor"] ** passed
                for passed in (
                    sum(e > round(m * g.epochs) for m in exp["training"]["lr_milestones"])
                    for e in range(1, g.epochs + 1)
                )
            ]
            model = load_model(folder / "model.pt", sha256=metrics["model_sha256"])
            assert model.constructor_kwargs()["hidden_features"] == g.hidden
            widths.add(g.hidden)
            check_model(folder, metrics, model)
    assert len(widths) > 1, "the smoke grid has an experiment of its own width"


def check_model(folder: Path, metrics: dict, model) -> None:
    """The model file gives the recorded bound, and the evaluation's lower bound is below it."""
    with torch.no_grad():
        bound = float(model.lipschitz_bound())
    assert bound == pytest.approx(metrics["lipschitz_bound"], rel=1e-5)
    evaluation = json.loads((folder / "evaluation.json").read_text())
    assert evaluation["lipschitz_lower"] <= bound * (1 + 1e-6)


def check_figures(workdir: Path) -> None:
    for f in FIGURES:
        data = (workdir / f).read_bytes()
        magic = b"%PDF" if f.endswith(".pdf") else b"\x89PNG"
        assert data.startswith(magic) and len(data) > 5000, f


def check_smoke_outputs(workdir: Path, trained_on: str = "cpu") -> None:
    """Every check of a finished smoke run in ``workdir`` (used by tests/test_slurm.py too)."""
    summary, rob = tables(workdir)
    check_summary(summary)
    check_robustness(rob)
    check_orderings(rob)
    check_model_folders(workdir)
    check_figures(workdir)
    for d in POINT_DIRS:
        metrics = json.loads((workdir / d / "metrics.json").read_text())
        assert metrics["provenance"]["device"].startswith(trained_on), d
    for exp in {g.experiment for g in GROUPS}:  # one folder per experiment under models/
        assert (workdir / f"{PREFIX}results/{DATASET}/models/{exp}").is_dir(), exp


def smoke_run(folder: Path) -> Path:
    wf = copy_workflow(folder)
    t0 = time.perf_counter()
    r = snakemake("--profile", "profiles/smoke", cwd=wf, timeout=900)
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, f"smoke run failed:\n{r.stdout[-5000:]}\n{r.stderr[-5000:]}"
    print(f"smoke run in {folder}: {seconds:.1f} s")
    (wf / "console.txt").write_text(r.stderr)  # what the person at the console saw
    return wf


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return smoke_run(tmp_path_factory.mktemp("smoke_a"))


def test_the_smoke_run_writes_checked_tables_models_and_figures(run):
    check_smoke_outputs(run)


def test_the_smoke_run_writes_only_under_its_own_prefix(run):
    for top in ("results", "figures", "logs", "benchmarks"):
        assert not (run / top).exists(), top
    assert (run / PREFIX / "results").is_dir()


def test_every_job_logged_and_training_shows_progress(run):
    for g in GROUPS:
        log = run / f"{PREFIX}logs/train/{DATASET}/{g.experiment}/{g.name()}.log"
        text = log.read_text()
        assert "epoch 1/" in text and "done" in text, log


def test_every_job_shows_a_few_progress_lines_on_the_console(run):
    console = (run / "console.txt").read_text().splitlines()
    for g in GROUPS:
        tag = f"{g.experiment} g{g.gamma} s{g.seed}"
        train = [line for line in console if line.startswith(f"[train {tag}] ")]
        assert train[0].startswith(f"[train {tag}] started: ") and "epochs" in train[0], train
        assert f"epoch 1/{g.epochs}, " in train[1] and "left in this job" in train[1], train
        assert train[-1].startswith(f"[train {tag}] done in "), train
        epochs = g.epochs + SMOKE["training"]["extra_epochs"]
        assert len(train) <= epochs + 2, train  # at most one line per epoch
        evaluate = [line for line in console if line.startswith(f"[evaluate {tag}] ")]
        models = len(g.weights)
        assert f"model {models}/{models} (" in "".join(evaluate), evaluate
        assert evaluate[-1].startswith(f"[evaluate {tag}] done in "), evaluate


def test_a_finished_run_says_where_its_tables_and_figures_are_and_how_to_report(run):
    console = (run / "console.txt").read_text()
    end = console[console.index(f"The {DATASET} tables and figures:") :]
    for path in [f"{PREFIX}results/{DATASET}/summary.csv", *FIGURES]:
        assert f"\n  {path}\n" in end, path
    command = end.split("A report with all of them and their captions: ", 1)[1].splitlines()[0]
    assert command.startswith(f"snakemake --report {PREFIX}report.html "), command
    r = snakemake(*shlex.split(command)[1:], cwd=run)  # the command works as printed
    assert r.returncode == 0, r.stdout + r.stderr
    assert (run / PREFIX / "report.html").exists()


def test_a_second_run_has_nothing_to_do(run):
    r = snakemake("--profile", "profiles/smoke", "-n", cwd=run)
    assert r.returncode == 0, r.stderr
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout


def test_report_builds_with_the_figure_captions(run):
    r = snakemake("--profile", "profiles/smoke", "--report", "report.html", cwd=run)
    assert r.returncode == 0, r.stdout + r.stderr
    html = (run / "report.html").read_text()
    assert "Pareto" in html and "certified" in html


def test_a_rerun_from_scratch_reproduces_tables_and_figures(run, tmp_path_factory):
    again = smoke_run(tmp_path_factory.mktemp("smoke_b"))
    table = f"{PREFIX}results/{DATASET}/robustness.csv"
    assert (run / table).read_bytes() == (again / table).read_bytes()
    (a, _), (b, _) = tables(run), tables(again)
    pd.testing.assert_frame_equal(
        a.drop(columns=WALL_TIME_COLUMNS), b.drop(columns=WALL_TIME_COLUMNS), check_exact=True
    )
    for f in FIGURES:  # drawn from the tables only, and no wall time is in a figure
        assert (run / f).read_bytes() == (again / f).read_bytes(), f


def test_a_bad_config_stops_the_run_before_any_job(tmp_path):
    wf = copy_workflow(tmp_path / "bad")
    bad = yaml.safe_load((REPO / "profiles/smoke/smoke-config.yaml").read_text())
    bad["experiments"]["paper"]["gamma"] = [1.0]
    (wf / "bad.yaml").write_text(yaml.safe_dump(bad))
    r = snakemake("--profile", "profiles/smoke", "--configfile", "bad.yaml", cwd=wf, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "experiments.paper.gamma[0]" in out and "< 1" in out, out
    for folder in ("smoke", "results", "resources", "figures", "logs", "benchmarks"):
        assert not (wf / folder).exists(), folder


@pytest.mark.parametrize(
    ("experiment", "instrument", "eps"),
    [
        ("paper", "clean", 0.0),
        ("paper", "inversion", 0.1),
        ("paper", "certified_lipschitz", 0.1),
        ("certified", "certified_interval", 0.1),
        ("certified", "pgd", 0.1),
        ("certified", "autoattack", 0.1),
    ],
)
def test_the_audit_recomputes_a_committed_number_exactly(run, experiment, instrument, eps):
    from nemon.audit import recompute

    folder = next((run / "smoke" / "results" / "mnist-5k" / "models" / experiment).glob("g*_s0"))
    out = recompute(folder, instrument, eps)
    assert out["committed"] is not None and out["recomputed"] == out["committed"], out
