"""``NEMON.solving(frozen=True)``: weight-only work built once, with bit-identical results.

Inside the context a forward reuses the finiteness checks of the weights, ``A``,
``alpha*``, ``rho`` (MATH 2-3) and the weights' part of the rounding bound (MATH
12). These tests hold it to the plain path: every output, error bound and gradient
equal bit for bit, a weight changed in place inside the context is noticed, a
non-finite weight still raises, and copies start outside the context.
"""

import copy
import pickle

import pytest
import torch
from conftest import make_model
from hypothesis import given, settings
from hypothesis import strategies as st

import nemon
import nemon.core
from nemon.errors import NonFiniteError


class Builds:
    """Counts the layers built from the weights (``A``, ``alpha*``, ``rho``: MATH 2-3)."""

    def __init__(self, monkeypatch):
        self.n = 0
        prepare = nemon.core.prepare_layer

        def counted(*args, **kw):
            self.n += 1
            return prepare(*args, **kw)

        monkeypatch.setattr(nemon.core, "prepare_layer", counted)


def outputs(model, u, lo, hi):
    """Everything a forward gives: logits, error bounds, stats, the box, an input gradient."""
    y = model(u)
    bounds = model.last_error_bounds.clone()
    stats = model.last_forward_stats.as_dict()
    x_lo, x_hi, box_stats = model.embedded_equilibrium(lo, hi)
    box_bounds = model.last_error_bounds.clone()
    v = u.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(v)[:, 0].sum(), v)
    return [y, bounds, x_lo, x_hi, box_bounds, g], [stats, box_stats.as_dict()]


def assert_same(a, b):
    tensors_a, stats_a = a
    tensors_b, stats_b = b
    for ta, tb in zip(tensors_a, tensors_b, strict=True):
        assert torch.equal(ta, tb)
    assert stats_a == stats_b


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    gamma=st.sampled_from([0.0, 0.5, 0.9]),
    weighted=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_frozen_forward_equals_plain_forward_bit_for_bit(seed, gamma, weighted, dtype):
    model = make_model(seed=seed, gamma=gamma, weighted=weighted, tol=1e-6).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(5, 12, generator=gen, dtype=dtype)
    lo, hi = (u - 0.05).clamp(0, 1), (u + 0.05).clamp(0, 1)
    plain = outputs(model, u, lo, hi)
    with model.solving(frozen=True):
        frozen = outputs(model, u, lo, hi)
        again = outputs(model, u, lo, hi)  # from the cache built by the first
    assert_same(plain, frozen)
    assert_same(plain, again)


def test_frozen_evaluation_instruments_equal_the_plain_ones():
    model = make_model(seed=3, gamma=0.5, tol=1e-8)
    u = torch.rand(6, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = model(u).argmax(dim=1)
    plain = [
        nemon.certified_accuracy(model, u, labels, 0.02, method="interval"),
        nemon.interval_bounds(model, (u - 0.02).clamp(0, 1), (u + 0.02).clamp(0, 1))[:2],
    ]
    with model.solving(frozen=True):
        frozen = [
            nemon.certified_accuracy(model, u, labels, 0.02, method="interval"),
            nemon.interval_bounds(model, (u - 0.02).clamp(0, 1), (u + 0.02).clamp(0, 1))[:2],
        ]
    assert plain[0] == frozen[0]
    for a, b in zip(plain[1], frozen[1], strict=True):
        assert torch.equal(a, b)


def test_a_weight_changed_in_place_inside_the_context_is_noticed(monkeypatch):
    model = make_model(seed=1, gamma=0.5)
    u = torch.rand(4, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    builds = Builds(monkeypatch)
    with model.solving(frozen=True):
        model(u)
        assert builds.n == 1
        model(u).sum().backward()
        assert builds.n == 1  # built once for the forwards and the backward
        opt.step()  # in place: every parameter's version counter moves
        y = model(u)
        assert builds.n == 2
    assert torch.equal(y, model(u))  # the plain path on the new weights
    with model.solving(frozen=True):
        model(u)
        n = builds.n
        with torch.no_grad():
            model.input_std.mul_(2.0)  # a buffer too
        y = model(u)
        assert builds.n == n + 1
    assert torch.equal(y, model(u))


@pytest.mark.parametrize("name", ["T", "d", "B", "b"])
def test_a_non_finite_weight_still_raises_inside_the_context(name):
    model = make_model(seed=2)
    u = torch.rand(3, 12, dtype=torch.float64)
    with model.solving(frozen=True):
        model(u)
        with torch.no_grad():
            getattr(model, name).view(-1)[0] = float("nan")
        with pytest.raises(NonFiniteError, match=f"^{name} contains 1 non-finite"):
            model(u)


def test_the_context_nests_and_ends_with_the_outermost(monkeypatch):
    model = make_model(seed=4)
    u = torch.rand(3, 12, dtype=torch.float64)
    builds = Builds(monkeypatch)
    with model.solving(frozen=True):
        with model.solving(frozen=True, tol=1e-9):
            model(u)
        model(u)  # the outer context still holds what the inner one built
        assert builds.n == 1 and model.settings.frozen
        with model.solving(frozen=False):  # suspended: built per forward
            model(u)
            model(u)
        assert builds.n == 3
        model(u)
        assert builds.n == 4  # built again once
    assert not model.settings.frozen
    model(u)
    model(u)
    assert builds.n == 6


def test_copies_start_outside_the_context(monkeypatch):
    model = make_model(seed=5)
    u = torch.rand(3, 12, dtype=torch.float64)
    with model.solving(frozen=True):
        model(u)
        for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert not twin.settings.frozen
            builds = Builds(monkeypatch)
            assert torch.equal(twin(u), model(u))
            twin(u)
            assert builds.n == 2  # the twin builds per forward, the model not at all


def test_frozen_is_recorded_and_changes_nothing_for_the_baselines():
    for model in (nemon.MLP(12, 8, 4), nemon.MON(12, 8, 4, gamma=0.5, tol=1e-6)):
        u = torch.rand(3, 12)
        y = model(u)
        with model.solving(frozen=True):
            assert model.settings.frozen and torch.equal(model(u), y)
        assert not model.settings.frozen
