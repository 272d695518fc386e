"""The committed results reproduce: one committed training group of mnist-5k, retrained from
scratch by the real workflow, against its committed records.

What is promised (docs/reproducibility.md, "What is promised, and where it is tested"):
bit-identical weights on a CPU of the same model with the same code paths (the reproducible
mode pins them; the committed provenance names the CPU), else agreement within the spread
of the committed seeds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, copy_workflow, snakemake

from nemon.config import REPRODUCIBLE_ENV
from nemon.training import provenance

pytestmark = pytest.mark.e2e

DATASET = "mnist-5k"
EXPERIMENT, GAMMA, SEED = "paper", 0.5, 0
# the layout of nemon.contracts.point_dir: results/<dataset>/models/<experiment>/<point>/
COMMITTED = REPO / "results" / DATASET / "models" / EXPERIMENT


def committed_group() -> list:
    exp = yaml.safe_load((REPO / "config.yaml").read_text())["experiments"]["paper"]
    return [
        COMMITTED / f"g{GAMMA!r}_l{float(lam)!r}_s{SEED}" / "metrics.json" for lam in exp["lam"]
    ]


def seed_spread(lam: float, key: str) -> float:
    values = [
        json.loads(p.read_text())[key]
        for p in COMMITTED.glob(f"g{GAMMA!r}_l{float(lam)!r}_s*/metrics.json")
    ]
    return statistics.stdev(values) if len(values) > 1 else float("inf")


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """The committed group retrained from scratch by the real workflow: ``(wf, files, targets)``."""
    files = committed_group()
    if not all(f.is_file() for f in files):
        missing = [str(f.relative_to(REPO)) for f in files if not f.is_file()]
        pytest.skip(
            f"the committed {DATASET} results lack the group {EXPERIMENT} g{GAMMA} s{SEED} in the "
            f"layout results/<dataset>/models/<experiment>/ (missing: {', '.join(missing[:2])}"
            f"{', ...' if len(missing) > 2 else ''}); regenerate them with the workflow"
        )
    for f in files:  # committed in this layout: its records name the experiment
        if json.loads(f.read_text()).get("experiment") != EXPERIMENT:
            pytest.skip(f"{f.relative_to(REPO)} names no experiment {EXPERIMENT!r}: regenerate it")
    wf = copy_workflow(tmp_path_factory.mktemp("repro") / "repro")
    targets = [
        f"repro/results/{DATASET}/{f.relative_to(REPO / 'results' / DATASET)}" for f in files
    ]
    r = snakemake(
        *targets,
        "--cores",
        "1",
        "--config",
        f"dataset={DATASET}",
        "output_prefix=repro/",
        cwd=wf,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return wf, files, targets


def same_cpu_path(old_p: dict, new_p: dict) -> bool:
    """Whether a committed record was made on this CPU model, code path, torch and threads."""
    here = provenance(str(REPO), "cpu", 1)
    return (
        old_p.get("cpu") == here["cpu"]
        and old_p.get("cpu_capability") == new_p["cpu_capability"]
        and old_p.get("environment") == new_p["environment"]
        and old_p.get("torch") == torch.__version__
        and old_p.get("threads") == new_p["threads"]
    )


def test_a_committed_training_group_retrained_from_scratch_reproduces(retrained):
    wf, files, targets = retrained
    here = provenance(str(REPO), "cpu", 1)
    for committed_file, target in zip(files, targets, strict=True):
        old = json.loads(committed_file.read_text())
        new = json.loads((wf / target).read_text())
        old_p, new_p = old["provenance"], new["provenance"]
        assert new_p["environment"] == REPRODUCIBLE_ENV  # the workflow's reproducible mode
        if same_cpu_path(old_p, new_p):  # the promise: bit-identical weights and curves
            assert new["model_sha256"] == old["model_sha256"], committed_file
            for a, b in zip(old["history"], new["history"], strict=True):
                a.pop("seconds"), b.pop("seconds")
                assert a == b, committed_file
        else:  # another CPU or torch: within the committed seeds' spread
            for key in ("final_train_loss", "lipschitz_bound"):
                spread = seed_spread(old["lam"], key)
                assert abs(new[key] - old[key]) <= 3 * spread, (committed_file, key, spread)
            print(
                f"{committed_file}: other CPU ({old_p.get('cpu')} vs {here['cpu']}): compared "
                "within 3 seed SDs"
            )


EVALUATE = """
import json, sys
import pandas as pd, torch, yaml
from nemon.config import validate_config
from nemon.contracts import load_model
from nemon.data import load_dataset
from nemon.evaluation import EvalSettings, evaluate_model
folder, config = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
cfg = validate_config(yaml.safe_load(open(config)))
metrics = json.load(open(folder + "/metrics.json"))
model = load_model(folder + "/model.pt", sha256=metrics["model_sha256"])
ds = load_dataset("mnist-5k", progress=False)
settings = EvalSettings.from_config(cfg["evaluation"])
rows, record = evaluate_model(model, ds.test_x, ds.test_y, settings)
print(json.dumps({"rows": rows, "record": record}, default=str))
"""


def test_a_retrained_committed_model_evaluated_again_reproduces(retrained):
    """One model of the retrained group (lam 1e-4) evaluated by the current code, in the
    workflow's reproducible mode (the code builds the weights' quantities once per model,
    ``NEMON.solving(frozen=True)``): the committed robustness rows and scalars, bit for bit on the
    committed CPU path; within two points of accuracy elsewhere."""
    wf, files, targets = retrained
    k = [json.loads(f.read_text())["lam"] for f in files].index(1e-4)
    committed = files[k].parent
    folder = (wf / targets[k]).parent
    old = json.loads((committed / "evaluation.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    r = subprocess.run(
        [sys.executable, "-c", EVALUATE, str(folder), str(REPO / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **REPRODUCIBLE_ENV},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    new = json.loads(r.stdout.strip().splitlines()[-1])
    old_rows = pd.read_csv(committed / "robustness.csv")
    new_rows = pd.DataFrame(new["rows"])[[c for c in old_rows.columns if c in new["rows"][0]]]
    old_rows = old_rows[new_rows.columns]
    committed_sha = json.loads(files[k].read_text())["model_sha256"]
    same_model = metrics["model_sha256"] == committed_sha
    if same_model and same_cpu_path(old["provenance"], metrics["provenance"]):
        pd.testing.assert_frame_equal(new_rows, old_rows, check_exact=True, check_dtype=False)
        for key in ("clean_acc", "lipschitz_lower", "lipschitz_bound", "lipschitz_tightness"):
            assert new["record"][key] == old[key], key
    else:  # another CPU or torch: the accuracies within two points
        diff = (new_rows["accuracy"] - old_rows["accuracy"]).abs().max()
        assert diff <= 0.02, diff
        print(f"{committed}: another model or CPU path; accuracies within {diff:.3f}")
