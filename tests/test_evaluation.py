"""The evaluation stage's choices (MATH 6, 9, 11, 12): certificates in float64, and attacks that
leave certified inputs out.

* The certificates run on a float64 copy of the model: the same weights, so they certify the
  same exact equilibria, with a rounding term nine orders of magnitude smaller (MATH 12);
  never less than the float32 certificate on a trained model, never more than any attack.
* An input certified at an attack's eps is not attacked (no attack can break it, MATH 6): it
  counts as robust, and the attack's solves are spent on the others only.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _attack_helpers import CLASSES, M, toy_data

import nemon
from nemon import attacks
from nemon.evaluation import AttackSettings, EvalSettings, evaluate_model, run_attack
from nemon.training import train

SETTINGS = EvalSettings(
    tol=1e-6,
    max_iter=3000,
    attack_tol=1e-5,
    batch_size=100,
    subset_seed=0,
    inversion_eps=(0.0, 0.1),
    lipschitz_eps=(0.0, 0.05, 0.1),
    interval_eps=(0.0, 0.05, 0.1),
    pgd=AttackSettings(eps=(0.05, 0.1), images=60, steps=10, restarts=1),
    autoattack=AttackSettings(eps=(0.1,), images=20, steps=5, queries=50),
    lower_bound_images=2,
    lower_bound_steps=3,
    certificate_dtype="float64",
    skip_certified=True,
)


@pytest.fixture(scope="module")
def robust_model():
    """A float32 NEMON trained with the interval objective: many inputs certified at 0.05."""
    torch.manual_seed(0)
    x, y = toy_data(400, seed=0)
    model = nemon.NEMON(M, 16, CLASSES, gamma=0.5, tol=1e-4)
    train(
        model, x.float(), y, epochs=6, batch_size=50, lr=1e-2, seed=0, objective="interval",
        eps_t=0.1, warmup=0.0, ramp=0.3, progress=False,
    )  # fmt: skip
    test_x, test_y = toy_data(120, seed=1)
    return model.eval(), (test_x.float(), test_y)


def rows_of(rows):
    return {(r["attack"], r["eps"], r["inputs"]): r for r in rows}


def test_float64_certificates_certify_at_least_what_float32_ones_do_and_no_attack_breaks_them(
    robust_model,
):
    model, (x, y) = robust_model
    out = {}
    for dtype in ("float32", "float64"):
        s = dataclasses.replace(SETTINGS, certificate_dtype=dtype, skip_certified=False)
        rows, _ = evaluate_model(model, x, y, s)
        out[dtype] = rows_of(rows)
        assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched
    for eps in (0.05, 0.1):
        for cert in ("certified_interval", "certified_lipschitz"):
            lo = out["float32"][cert, eps, "test"]["accuracy"]
            hi = out["float64"][cert, eps, "test"]["accuracy"]
            assert lo <= hi, (cert, eps)
    assert out["float64"]["certified_interval", 0.05, "test"]["accuracy"] > 0.3
    for (attack, _eps, _inputs), r in out["float64"].items():  # attacked, yet never broken
        assert r["violations"] == 0, (attack, r)
    # clean accuracy comes from the model as it is, whatever the certificates' dtype
    clean = [out[d]["clean", 0.0, "test"]["accuracy"] for d in out]
    assert clean[0] == clean[1]


def test_certified_inputs_are_not_attacked_and_count_as_robust(robust_model):
    model, (x, y) = robust_model
    rows_skip, rec = evaluate_model(model, x, y, SETTINGS)
    rows_all, rec_all = evaluate_model(
        model, x, y, dataclasses.replace(SETTINGS, skip_certified=False)
    )
    skip, full = rows_of(rows_skip), rows_of(rows_all)
    assert rec["certified_not_attacked"]["pgd@0.05"] > 0
    assert set(rec_all["certified_not_attacked"].values()) == {0}
    for key, r in skip.items():
        if key[0] in ("clean", "certified_interval", "certified_lipschitz", "inversion"):
            assert r["accuracy"] == full[key]["accuracy"], key  # no attack: identical
    for eps in (0.05, 0.1):  # the attacks' accuracies stay above both certificates
        cert = skip["certified_interval", eps, "subset-60"]["accuracy"]
        assert skip["pgd", eps, "subset-60"]["accuracy"] >= cert


def test_an_attack_spends_no_solve_on_the_inputs_it_is_told_are_certified(robust_model):
    model, (x, y) = robust_model
    u, labels = x[:40], y[:40]
    everything = torch.ones(40, dtype=torch.bool)
    res = run_attack(model, "pgd", u, labels, 0.1, SETTINGS, certified=everything)
    assert res.attack_solves.solves == 0
    assert torch.equal(res.robust, res.clean_correct)  # correct ones robust, others not
    assert res.certified == int(res.clean_correct.sum())
    assert torch.equal(res.adversarial, u)
    some = torch.arange(40) % 2 == 0
    part = run_attack(model, "pgd", u, labels, 0.1, SETTINGS, certified=some)
    assert part.certified == int((part.clean_correct & some).sum())
    assert bool(part.robust[some & part.clean_correct].all())


@pytest.mark.parametrize(
    "certified, message",
    [(torch.ones(3, dtype=torch.bool), r"shape \(8,\)"), (torch.ones(8), "bool tensor")],
)
def test_a_malformed_certified_mask_is_refused(robust_model, certified, message):
    model, (x, y) = robust_model
    with pytest.raises(nemon.ConfigurationError, match=message):
        attacks.pgd(model, x[:8], y[:8], 0.1, steps=2, restarts=1, seed=0, tol=1e-5,
                    max_iter=100, certified=certified)  # fmt: skip


def test_an_unknown_certificate_dtype_is_refused():
    with pytest.raises(nemon.ConfigurationError, match="certificate_dtype"):
        dataclasses.replace(SETTINGS, certificate_dtype="float16")


def test_orderings_are_checked_per_model_even_where_two_experiments_share_the_other_keys():
    import pandas as pd

    from nemon.evaluation import check_orderings

    base = dict(dataset="d", model="nemon", objective="interval", gamma=0.0, lam=0.0, eps_t=0.1,
                seed=0, inputs="subset-100", eps=0.1, violations=0)  # fmt: skip
    rows = [
        {**base, "experiment": "certified", "attack": "certified_interval", "accuracy": 0.5},
        {**base, "experiment": "certified", "attack": "autoattack", "accuracy": 0.6},
        {**base, "experiment": "followup-nemon", "attack": "certified_interval", "accuracy": 0.7},
        {**base, "experiment": "followup-nemon", "attack": "autoattack", "accuracy": 0.65},
    ]
    problems = check_orderings(pd.DataFrame(rows))
    assert len(problems) == 1 and "followup-nemon" in problems[0], problems


def test_a_certificate_in_float64_is_the_float32_one_on_a_double_copy(robust_model):
    import copy

    model, (x, y) = robust_model
    f32 = nemon.certified_accuracy(model, x, y, 0.05, "interval")
    f64 = nemon.certified_accuracy(model, x, y, 0.05, "interval", dtype=torch.float64)
    by_hand = nemon.certified_accuracy(
        copy.deepcopy(model).double(), x.double(), y, 0.05, "interval"
    )
    assert f64 == by_hand and f32 <= f64
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched
    mask = nemon.certified_mask(model, x, y, 0.05, "interval", dtype=torch.float64)
    assert float(mask.float().mean()) == f64


def test_the_soundness_check_catches_a_box_that_misses_points_of_the_ball(robust_model):
    """A certificate of the ball of radius 0.02 passed off as one of radius 0.2 (its box misses
    most of the ball): PGD at 0.2 breaks images it 'certified'. The true certificate at 0.2 is
    never broken. So the evaluation's violation count has teeth."""
    model, (x, y) = robust_model
    small = nemon.certified_mask(model, x, y, 0.02, "interval", dtype=torch.float64)
    true = nemon.certified_mask(model, x, y, 0.2, "interval", dtype=torch.float64)
    res = attacks.pgd(model, x, y, 0.2, steps=20, restarts=1, seed=0, tol=1e-5, max_iter=3000)
    assert int((small & ~res.robust).sum()) > 0  # the wrong box would be a violation
    assert int((true & ~res.robust).sum()) == 0
