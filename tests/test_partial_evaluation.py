"""Resuming an interrupted group evaluation (nemon.evaluation.PartialEvaluation): a kept record
gives exactly the outputs of evaluating again, and one made under other settings, another model
file, another test set or other code, or a damaged one, is never reused.

The real pipeline's interrupted evaluation is tested in tests/test_faults.py.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

import nemon
from nemon.contracts import ROBUSTNESS_COLUMNS
from nemon.evaluation import (
    AttackSettings,
    EvalSettings,
    PartialEvaluation,
    evaluate_model,
    evaluation_fingerprint,
    source_digest,
)

KEYS = {"dataset": "mnist-5k", "experiment": "paper", "model": "nemon", "objective": "lipschitz",
        "gamma": 0.5, "lam": 0.001, "eps_t": 0.0, "seed": 0}  # fmt: skip
CODE = {"nemon": nemon.__version__, "torch": torch.__version__, "threads": 1, "git_commit": "c0"}


@pytest.fixture(scope="module")
def evaluated():
    torch.manual_seed(0)
    model = nemon.NEMON(784, 20, 10, gamma=0.5, input_mean=0.5, input_std=0.3)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(40, 28, 28, generator=g) * 255).to(torch.uint8)
    y = torch.arange(40) % 10
    settings = EvalSettings(
        tol=1e-5,
        max_iter=2000,
        attack_tol=1e-4,
        batch_size=20,
        inversion_eps=(0.0, 0.1),
        lipschitz_eps=(0.0, 0.05),
        interval_eps=(0.0, 0.05),
        pgd=AttackSettings(eps=(0.05,), images=20, steps=2, restarts=1),
        autoattack=AttackSettings(eps=(), images=10),
        lower_bound_images=1,
        lower_bound_steps=2,
    )
    rows, record = evaluate_model(model, x, y, settings)
    return x, y, settings, rows, record


def csv(rows) -> str:
    return pd.DataFrame(rows).assign(**KEYS)[ROBUSTNESS_COLUMNS].to_csv(index=False)


def test_a_kept_record_gives_the_outputs_of_the_evaluation_exactly(tmp_path, evaluated):
    x, y, settings, rows, record = evaluated
    fp = evaluation_fingerprint(settings, "a" * 64, KEYS, x, y, CODE)
    PartialEvaluation(tmp_path / "g.evaluation-partial.json").add("lam=0.001", fp, rows, record)
    log: list[str] = []
    kept = PartialEvaluation(tmp_path / "g.evaluation-partial.json", log=log.append)
    assert len(kept) == 1 and log == []
    rows2, record2 = kept.get("lam=0.001", fp)
    assert csv(rows2) == csv(rows)  # robustness.csv byte for byte
    assert json.dumps(record2, indent=2) == json.dumps(record, indent=2)  # evaluation.json too
    assert kept.get("lam=0.01", fp) is None  # a model never evaluated


@pytest.mark.parametrize(
    "change",
    ["settings", "model file", "keys", "test images", "test labels", "code"],
)
def test_a_record_made_under_anything_else_is_not_reused(tmp_path, evaluated, change):
    x, y, settings, rows, record = evaluated
    args = dict(settings=settings, model_sha256="a" * 64, keys=KEYS, test_x=x, test_y=y, code=CODE)
    fp = evaluation_fingerprint(**args)
    other = {
        "settings": {"settings": dataclasses.replace(settings, attack_tol=1e-3)},
        "model file": {"model_sha256": "b" * 64},
        "keys": {"keys": {**KEYS, "seed": 1}},
        "test images": {"test_x": torch.cat([x[1:], x[:1]])},
        "test labels": {"test_y": torch.cat([y[1:], y[:1]])},
        "code": {"code": {**CODE, "nemon_source": source_digest()}},
    }[change]
    fp_other = evaluation_fingerprint(**{**args, **other})
    assert fp_other != fp
    path = tmp_path / "g.evaluation-partial.json"
    PartialEvaluation(path).add("lam=0.001", fp, rows, record)
    log: list[str] = []
    kept = PartialEvaluation(path, log=log.append)
    assert kept.get("lam=0.001", fp_other) is None
    assert "made with other evaluation settings" in log[0]
    assert len(kept) == 0  # and it is replaced once evaluated again


def test_the_source_digest_is_of_the_package_as_it_is():
    assert source_digest() == source_digest() and len(source_digest()) == 64


@pytest.mark.parametrize(
    "damage",
    ["truncated", "not json", "another format", "an edited number", "an entry without rows"],
)
def test_a_damaged_side_file_or_entry_is_ignored_and_said(tmp_path, evaluated, damage):
    x, y, settings, rows, record = evaluated
    fp = evaluation_fingerprint(settings, "a" * 64, KEYS, x, y, CODE)
    path = tmp_path / "g.evaluation-partial.json"
    PartialEvaluation(path).add("lam=0.001", fp, rows, record)
    text = path.read_text()
    data = json.loads(text)
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "not json":
        path.write_text("hello")
    elif damage == "another format":
        data["format"] = "nemon.evaluation-partial/0"
        path.write_text(json.dumps(data))
    elif damage == "an edited number":
        data["models"]["lam=0.001"]["record"]["clean_acc"] = 1.0
        path.write_text(json.dumps(data))
    else:
        del data["models"]["lam=0.001"]["rows"]
        path.write_text(json.dumps(data))
    log: list[str] = []
    kept = PartialEvaluation(path, log=log.append)
    assert kept.get("lam=0.001", fp) is None
    assert len(log) == 1 and "ignoring" in log[0] and str(path) in log[0]


def test_the_side_file_goes_when_the_job_is_done(tmp_path, evaluated):
    x, y, settings, rows, record = evaluated
    path = tmp_path / "g.evaluation-partial.json"
    kept = PartialEvaluation(path)
    kept.add("lam=0.001", "f" * 64, rows, record)
    assert path.exists()
    kept.remove()
    assert not path.exists()
    kept.remove()  # and again, harmlessly
