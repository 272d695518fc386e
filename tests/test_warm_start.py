"""``NEMON.solving(warm_start=True)`` and the attacks' ``warm_start``: fewer iterations, the
same fixed point.

A solve may start anywhere: the averaged map contracts (MATH 3), so it has one fixed
point and the iteration reaches it from any start, and the stopping rule and error
bound read the last step only (MATH 12). These tests hold warm starts to that: the
same equilibrium and gradient as a cold start within the error bounds, fewer
iterations for a nearby input, cold (bit-identical) solves outside the context, and
in the attacks warm solves inside the attack only, never in the clean and final checks.
"""

import copy
import dataclasses
import pickle

import pytest
import torch
from _attack_helpers import CLASSES, ForwardSpy, M, sensitive_model, small_attack, toy_data
from conftest import make_model
from hypothesis import given, settings
from hypothesis import strategies as st

import nemon
from nemon import attacks
from nemon.config import validate_config
from nemon.errors import ConfigurationError
from nemon.evaluation import AttackSettings, EvalSettings, evaluate_model, run_attack


def solve(model, u):
    x, stats = model.equilibrium(u)
    return x.detach(), stats, model.last_error_bounds.clone()


def gap(model, a, b):
    """Per-sample distance in the norm the bounds are in: ``max_i eta_i |a_i - b_i|``."""
    return ((a - b).abs() * model.eta.detach()).amax(dim=1)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    gamma=st.sampled_from([0.0, 0.5, 0.9, 0.95]),
    start_scale=st.floats(0.0, 100.0),
)
def test_any_start_reaches_the_fixed_point_within_the_error_bounds(seed, gamma, start_scale):
    """An arbitrary remembered start (here the equilibrium of other, random biases of size
    ``start_scale``) changes nothing but the iterations."""
    model = make_model(seed=seed, gamma=gamma, tol=1e-9)
    u = torch.rand(6, model.in_features, generator=torch.Generator().manual_seed(seed))
    u = u.double()
    x_cold, _, b_cold = solve(model, u)
    with model.solving(warm_start=True):
        b = model.b.detach().clone()
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            model.b.copy_(start_scale * torch.randn(b.shape, generator=g, dtype=torch.float64))
            solve(model, u)  # remembered: the start of the next solve of this shape
            model.b.copy_(b)
        x_warm, stats, b_warm = solve(model, u)
    assert stats.converged
    d = gap(model, x_warm, x_cold)
    assert bool((d <= b_warm + b_cold + 1e-12).all()), (d, b_warm, b_cold)


@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_a_nearby_input_starts_warm_and_needs_fewer_iterations(gamma):
    model = make_model(seed=3, gamma=gamma, tol=1e-8)
    u = torch.rand(5, model.in_features, generator=torch.Generator().manual_seed(0)).double()
    v = (u + 1e-3 * torch.randn(u.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    x_cold, cold, b_cold = solve(model, v)
    with model.solving(warm_start=True):
        solve(model, u)
        x_warm, warm, b_warm = solve(model, v)
    assert warm.iterations < cold.iterations
    assert bool((gap(model, x_warm, x_cold) <= b_warm + b_cold + 1e-12).all())


def test_outside_the_context_and_when_suspended_solves_are_cold_bit_for_bit():
    model = make_model(seed=5, gamma=0.9, tol=1e-6)
    u = torch.rand(4, model.in_features, generator=torch.Generator().manual_seed(2)).double()
    v = (u + 0.01).clamp(0, 1)
    y_cold = model(v)
    with model.solving(warm_start=True):
        model(u)
        with model.solving(warm_start=False):  # suspended: cold
            assert torch.equal(model(v), y_cold)
            with model.solving(warm_start=True):  # turned on again: a memory of its own
                assert torch.equal(model(v), y_cold)
        with model.solving(warm_start=True):  # nested: the enclosing memory
            assert not torch.equal(model(v), y_cold)  # started at u's equilibrium
        assert not torch.equal(model(v), y_cold)  # still remembered after the inner contexts
        for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert not twin.settings.warm_start and torch.equal(twin(v), y_cold)
    assert not model.settings.warm_start
    assert torch.equal(model(v), y_cold)


def test_another_batch_shape_starts_cold():
    model = make_model(seed=6, gamma=0.9, tol=1e-6)
    u = torch.rand(4, model.in_features, generator=torch.Generator().manual_seed(3)).double()
    y_cold = model(u[:3])
    with model.solving(warm_start=True):
        model(u)  # 4 rows: not a start for 3
        assert torch.equal(model(u[:3]), y_cold)


def test_the_input_gradient_starts_warm_and_agrees_with_the_cold_one():
    model = make_model(seed=7, gamma=0.9, tol=1e-10)
    u = torch.rand(5, model.in_features, generator=torch.Generator().manual_seed(4)).double()

    def grad(v):
        v = v.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(v), labels), v)
        return g, model.last_backward_stats.iterations

    labels = torch.arange(5) % model.out_features
    v = (u + 1e-3).clamp(0, 1)
    g_cold, it_cold = grad(v)
    with model.solving(warm_start=True):
        grad(u)
        g_warm, it_warm = grad(v)
    assert it_warm < it_cold
    assert torch.allclose(g_warm, g_cold, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["pgd", "autoattack"])
def test_attacks_start_warm_inside_the_attack_only(name, monkeypatch):
    model = sensitive_model(11)
    u, labels = toy_data(24, seed=2)
    steps = 8 if name == "pgd" else 5

    def run(warm):
        return small_attack(name, model, u, labels, steps=steps, warm_start=warm)

    cold = run(False)
    spy = ForwardSpy(model, monkeypatch)
    warm = run(True)
    assert not cold.warm_start and warm.warm_start
    assert {w for tol, w, _ in spy.calls if tol == 1e-9} == {False}  # clean, restart, final
    assert {w for tol, w, _ in spy.calls if tol == 1e-6} == {True}  # every solve of the attack
    assert torch.equal(warm.clean_correct, cold.clean_correct)
    c, w = cold.attack_solves, warm.attack_solves
    assert w.forward_iterations / w.forward_solves < c.forward_iterations / c.forward_solves
    assert not model.settings.warm_start  # nothing left behind
    assert abs(warm.accuracy - cold.accuracy) <= 2 / len(labels)


def test_a_model_without_warm_starts_runs_cold_and_says_so():
    torch.manual_seed(0)
    mlp = nemon.MLP(M, 8, CLASSES).double()
    u, labels = toy_data(12, seed=1)
    res = attacks.pgd(
        mlp, u, labels, 0.05, steps=3, restarts=1, seed=0, tol=1e-6, max_iter=100, warm_start=True
    )
    assert res.warm_start is False
    mon = nemon.MON(M, 8, CLASSES, gamma=0.5, tol=1e-6).double()
    kw = dict(steps=2, restarts=1, seed=0, tol=1e-6, max_iter=100)
    warm = attacks.pgd(mon, u, labels, 0.05, warm_start=True, **kw)
    cold = attacks.pgd(mon, u, labels, 0.05, **kw)
    assert warm.warm_start is False and torch.equal(warm.adversarial, cold.adversarial)
    assert warm.attack_solves == cold.attack_solves
    with pytest.raises(ConfigurationError, match="warm_start must be True or False"):
        attacks.pgd(
            mlp,
            u,
            labels,
            0.05,
            steps=3,
            restarts=1,
            seed=0,
            tol=1e-6,
            max_iter=100,
            warm_start="yes",
        )


# --- the evaluation stage and its config --------------------------------------------------
def test_the_config_key_is_validated_defaults_to_cold_and_reaches_the_attacks(monkeypatch):
    base = {"dataset": "mnist-5k", "evaluation": {}}
    cfg = validate_config(copy.deepcopy(base))
    assert cfg["evaluation"]["warm_start"] is False
    assert EvalSettings.from_config(cfg["evaluation"]).warm_start is False
    on = validate_config({**base, "evaluation": {"warm_start": True}})
    assert EvalSettings.from_config(on["evaluation"]).warm_start is True
    with pytest.raises(ConfigurationError, match="warm_start"):
        validate_config({**base, "evaluation": {"warm_start": "sometimes"}})

    seen = []
    for name in ("pgd", "autoattack"):
        real = getattr(attacks, name)

        def spy(*a, _real=real, **kw):
            seen.append(kw["warm_start"])
            return _real(*a, **kw)

        monkeypatch.setattr(attacks, name, spy)
    model = sensitive_model(4)
    x, y = toy_data(16, seed=5)
    s = EvalSettings(
        tol=1e-8,
        attack_tol=1e-6,
        inversion_eps=(),
        lipschitz_eps=(),
        interval_eps=(),
        pgd=AttackSettings(eps=(0.05,), images=8, steps=2),
        autoattack=AttackSettings(eps=(0.05,), images=8, steps=2, queries=10),
        lower_bound_images=1,
        lower_bound_steps=1,
        warm_start=True,
    )
    _, record = evaluate_model(model, x, y, s)
    assert seen == [True, True] and record["settings"]["warm_start"] is True


# --- the attack's tolerance -----------------------------------------------------------------
def test_a_looser_attack_tol_stops_the_attacks_solves_earlier_and_keeps_the_judge():
    model = sensitive_model(8, gamma=0.9, tol=1e-6)
    X, Y = toy_data(20, seed=3)
    s = EvalSettings(
        tol=1e-9,
        attack_tol=1e-7,
        pgd=AttackSettings(eps=(0.1,), images=20, steps=4, restarts=1),
        autoattack=AttackSettings(eps=(), images=8),
    )
    tight = run_attack(model, "pgd", X, Y, 0.1, s)
    loose = run_attack(model, "pgd", X, Y, 0.1, dataclasses.replace(s, attack_tol=1e-2))
    assert (tight.tol, loose.tol) == (1e-7, 1e-2) and tight.eval_tol == loose.eval_tol == 1e-9
    for kind in ("forward", "backward"):  # mean iterations per solve of the attack
        per = [
            getattr(r.attack_solves, f"{kind}_iterations")
            / getattr(r.attack_solves, f"{kind}_solves")
            for r in (tight, loose)
        ]
        assert per[1] < per[0], (kind, per)
    again = run_attack(model, "pgd", X, Y, 0.1, s)  # the same settings: the same outcomes
    assert torch.equal(again.robust, tight.robust)
    assert again.attack_solves.forward_iterations == tight.attack_solves.forward_iterations
