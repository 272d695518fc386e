"""What an attack's solves leave out: the error bound, and the activation pattern of a query.

An attack reads logits and input gradients only. ``solving(error_bounds=False)`` skips the
a-posteriori bound of every solve (MATH 3, 12), and a forward that no backward can
follow (under ``no_grad``, or nothing requiring a gradient) skips the activation
pattern ``J`` the backward reads (MATH 4). Neither may change a logit or a gradient by
one bit; these tests hold them to that, and check the attacks skip the bound inside
the attack only, never in the clean and final checks.
"""

import copy
import math
import pickle

import pytest
import torch
from _attack_helpers import ForwardSpy, sensitive_model, small_attack, toy_data
from conftest import make_model
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from nemon import attacks
from nemon.errors import ConfigurationError


def logits_and_grad(model, u, labels):
    v = u.clone().requires_grad_(True)
    y = model(v)
    fwd = model.last_forward_stats
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(y, labels), v)
    return y.detach(), g, fwd, model.last_backward_stats, model.last_error_bounds


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    gamma=st.sampled_from([0.0, 0.5, 0.9]),
    weighted=st.booleans(),
    frozen=st.booleans(),
)
def test_without_error_bounds_every_logit_and_gradient_is_the_same_bit_for_bit(
    seed, gamma, weighted, frozen
):
    model = make_model(seed=seed, gamma=gamma, weighted=weighted, tol=1e-7)
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(6, model.in_features, generator=g, dtype=torch.float64)
    labels = torch.randint(0, model.out_features, (6,), generator=g)
    with model.solving(frozen=frozen, error_bounds=True):
        y, grad, fwd, bwd, bounds = logits_and_grad(model, u, labels)
        with model.solving(error_bounds=False):
            y2, grad2, fwd2, bwd2, bounds2 = logits_and_grad(model, u, labels)
    assert torch.equal(y, y2) and torch.equal(grad, grad2)
    assert (fwd.iterations, bwd.iterations) == (fwd2.iterations, bwd2.iterations)
    assert math.isfinite(fwd.error_bound) and math.isfinite(bwd.error_bound)
    assert bounds is not None and bool(torch.isfinite(bounds).all())
    assert math.isnan(fwd2.error_bound) and math.isnan(bwd2.error_bound) and bounds2 is None


def test_the_embedded_solve_is_the_same_without_error_bounds():
    model = make_model(seed=4, gamma=0.5, tol=1e-8)
    lo = torch.rand(5, model.in_features, generator=torch.Generator().manual_seed(1)).double()
    hi = (lo + 0.05).clamp(max=1.0)
    x_lo, x_hi, stats = model.embedded_equilibrium(lo, hi)
    with model.solving(error_bounds=False):
        x_lo2, x_hi2, stats2 = model.embedded_equilibrium(lo, hi)
    assert torch.equal(x_lo, x_lo2) and torch.equal(x_hi, x_hi2)
    assert math.isfinite(stats.error_bound) and math.isnan(stats2.error_bound)


def test_error_bounds_nest_restore_and_stay_out_of_copies():
    model = make_model(seed=5, gamma=0.9, tol=1e-6)
    u = torch.rand(3, model.in_features, generator=torch.Generator().manual_seed(2)).double()
    with model.solving(error_bounds=False):
        with model.solving(error_bounds=True):  # an inner True computes them again
            model(u)
            assert math.isfinite(model.last_forward_stats.error_bound)
        model(u)
        assert model.last_error_bounds is None
        twin = copy.deepcopy(model)
        assert twin.settings.error_bounds
        assert pickle.loads(pickle.dumps(model)).settings.error_bounds
        twin(u)
        assert twin.last_error_bounds is not None
    model(u)
    assert model.last_error_bounds is not None  # restored on exit
    for switch in ("error_bounds", "warm_start", "frozen", "strict", "spend_warnings"):
        with pytest.raises(ConfigurationError, match=f"{switch} must be True or False, got"):
            with model.solving(**{switch: "no"}):
                pass
    assert model.settings == make_model(seed=5, gamma=0.9, tol=1e-6).settings


class _ProductCount(TorchDispatchMode):
    """Counts ``baddbmm``: one per averaged iteration, plus one for the activation pattern."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.baddbmm.default:
            self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("gamma", [0.0, 0.9])
def test_a_forward_no_backward_can_follow_skips_the_activation_pattern(gamma):
    model = make_model(seed=6, gamma=gamma, tol=1e-8)
    u = torch.rand(4, model.in_features, generator=torch.Generator().manual_seed(3)).double()
    counts = {}
    for case in ("grad", "no_grad", "nothing_requires_grad"):
        m = model if case != "nothing_requires_grad" else copy.deepcopy(model).requires_grad_(False)
        with _ProductCount() as c, torch.no_grad() if case == "no_grad" else torch.enable_grad():
            y = m(u)
        counts[case] = (c.n, m.last_forward_stats.iterations, y)
    n, it, y = counts["grad"]
    assert n == it + 1  # the pattern J of MATH 4, for the backward
    for case in ("no_grad", "nothing_requires_grad"):
        assert counts[case][:2] == (it, it)
        assert torch.equal(counts[case][2], y)
    # the gradient path still has the pattern: the backward is the exact adjoint
    v = u.clone().requires_grad_(True)
    model(v).sum().backward()
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())


@pytest.mark.parametrize("name", ["pgd", "autoattack"])
def test_attacks_skip_the_bound_inside_the_attack_only_and_change_nothing(name, monkeypatch):
    model = sensitive_model(12)
    u, labels = toy_data(24, seed=4)

    def run():
        return small_attack(name, model, u, labels, steps=6 if name == "pgd" else 4, n_queries=40)

    with monkeypatch.context() as mp:  # the reference: every solve bounds its error
        solving_at = attacks.solving_at

        def bounded(m, tol, max_iter, **kw):
            return solving_at(m, tol, max_iter, **{**kw, "error_bounds": True})

        mp.setattr(attacks, "solving_at", bounded)
        ref = run()
    spy = ForwardSpy(model, monkeypatch)
    res = run()
    # the clean and the final checks bound their errors; every solve inside the attack
    # (PGD's per-restart checks too, which read logits only) skips the bound
    calls = [(tol, bounds) for tol, _, bounds in spy.calls]
    assert calls[0] == (1e-9, True) and calls[-1] == (1e-9, True)
    assert {b for _, b in calls[1:-1]} == {False}
    assert torch.equal(res.adversarial, ref.adversarial) and torch.equal(res.robust, ref.robust)
    assert res.attack_solves == ref.attack_solves
    assert model.settings.error_bounds is True  # nothing left behind
