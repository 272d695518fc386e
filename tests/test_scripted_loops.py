"""The averaged iteration in TorchScript computes what the Python loop computes, bit for bit.

``nemon.solvers._iterate_one`` runs the layer's own step maps (:class:`AffineStep`: the
forward ``relu(A x + inj)`` of MATH 1 and the adjoint ``g + A^T J w`` of MATH 4) in a
loop compiled by TorchScript; the Python loop is the reference
(``scripted_loops(False)``). Same operations in the same order: the iterates, the last
update, the iteration count and the residual must be identical, including where the
iteration blows up or stops at ``max_iter``.
"""

import math
import os
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import make_model
from hypothesis import given, settings
from hypothesis import strategies as st

from nemon import solvers
from nemon.errors import NonConvergenceWarning
from nemon.solvers import AffineStep, scripted_loops


def problem(seed, n, N, scale, adjoint, dtype):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(1, n, n, generator=g, dtype=dtype) * (scale / n**0.5)
    z = torch.randn(1, N, n, generator=g, dtype=dtype)
    j = (torch.rand(1, N, n, generator=g, dtype=dtype) > 0.5).to(dtype) if adjoint else None
    return AffineStep(z, a, j)


def solve(F, x0, alpha, factor, tol, max_iter, scripted):
    w = torch.tensor([alpha], dtype=x0.dtype)[:, None, None]
    with scripted_loops(scripted):
        x, (rec,), last = solvers._iterate_one(F, x0, w, alpha, factor, tol, max_iter)
    return x, last, rec


def assert_same(a, b):
    (xa, la, ra), (xb, lb, rb) = a, b
    assert (ra.iterations, ra.converged) == (rb.iterations, rb.converged)
    assert ra.residual == rb.residual or (math.isnan(ra.residual) and math.isnan(rb.residual))
    for u, v in ((xa, xb), (la, lb)):
        torch.testing.assert_close(u, v, rtol=0, atol=0, equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 24),
    N=st.integers(1, 12),
    scale=st.sampled_from([0.3, 0.9, 1.5]),
    adjoint=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    alpha=st.floats(0.05, 1.0),
    factor=st.sampled_from([1.0, 9.0, math.inf]),
    tol=st.sampled_from([0.0, 1e-9, 1e-4, 1e-2]),
    max_iter=st.integers(1, 60),
    warm=st.booleans(),
)
def test_the_scripted_loop_reproduces_the_python_loop_bit_for_bit(
    seed, n, N, scale, adjoint, dtype, alpha, factor, tol, max_iter, warm
):
    F = problem(seed, n, N, scale, adjoint, dtype)
    x0 = torch.randn(1, N, n, dtype=dtype) if warm else torch.zeros(1, N, n, dtype=dtype)
    ref = solve(F, x0, alpha, factor, tol, max_iter, scripted=False)
    fast = solve(F, x0, alpha, factor, tol, max_iter, scripted=True)
    assert_same(ref, fast)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_a_blow_up_stops_both_loops_alike(bad):
    F = problem(0, 6, 4, 0.9, False, torch.float64)
    F.z[0, 1, 2] = bad
    x0 = torch.zeros(1, 4, 6, dtype=torch.float64)
    ref = solve(F, x0, 0.5, 1.0, 1e-6, 50, scripted=False)
    fast = solve(F, x0, 0.5, 1.0, 1e-6, 50, scripted=True)
    assert ref[2].iterations < 50 and not ref[2].converged
    assert_same(ref, fast)


def test_the_scripted_loop_is_what_the_layer_runs(monkeypatch):
    calls = []
    real = solvers._scripted_loop()
    assert real is not None  # this torch compiles it

    def counting(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(solvers, "_scripted_loop", lambda: counting)
    model = make_model(seed=3, tol=1e-8)
    u = torch.rand(5, model.in_features, dtype=torch.float64, requires_grad=True)
    model(u).sum().backward()
    assert len(calls) == 2  # the forward and the adjoint solve
    calls.clear()
    with scripted_loops(False):
        model(u).sum().backward()
    assert calls == []


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    gamma=st.sampled_from([0.0, 0.5, 0.9]),
    weighted=st.booleans(),
    solver=st.sampled_from(["average", "picard"]),
)
def test_logits_gradients_and_iterations_of_a_model_are_the_same(seed, gamma, weighted, solver):
    kw = dict(gamma=gamma, weighted=weighted, solver=solver, scale=0.5, tol=1e-9)
    model = make_model(seed=seed, **kw)
    u = torch.rand(7, model.in_features, generator=torch.Generator().manual_seed(seed))
    u = u.double()
    out = []
    for scripted in (False, True):
        with scripted_loops(scripted), warnings.catch_warnings():
            # Picard may stop at max_iter (no contraction known): both loops alike
            warnings.simplefilter("ignore", NonConvergenceWarning)
            v = u.clone().requires_grad_(True)
            y = model(v)
            (g,) = torch.autograd.grad(y.square().sum(), v)
            its = (model.last_forward_stats.iterations, model.last_backward_stats.iterations)
            bounds = model.last_error_bounds
        out.append((y.detach(), g, its, bounds))
    (y0, g0, i0, b0), (y1, g1, i1, b1) = out
    assert torch.equal(y0, y1) and torch.equal(g0, g1) and i0 == i1 and torch.equal(b0, b1)


def test_a_training_run_ends_with_the_same_weights():
    from nemon.stack import ModelStack
    from nemon.training import Objective, Schedule, train_stack

    g = torch.Generator().manual_seed(1)
    X = torch.rand(60, 12, generator=g, dtype=torch.float64)
    Y = torch.randint(0, 4, (60,), generator=g)
    flats = []
    for scripted in (False, True):
        stack = ModelStack([make_model(seed=5, tol=1e-6)])
        with scripted_loops(scripted):
            train_stack(
                stack,
                X,
                Y,
                objective=Objective("lipschitz", [1e-3]),
                schedule=Schedule(epochs=2, batch_size=20, lr=1e-2),
                seed=0,
                progress=False,
                log=lambda _line: None,
            )
        flats.append(stack.flat.detach().clone())
    assert torch.equal(flats[0], flats[1])


def test_a_map_that_is_not_the_layers_runs_in_python(monkeypatch):
    monkeypatch.setattr(solvers, "_scripted_loop", lambda: pytest.fail("scripted loop used"))
    x0 = torch.zeros(1, 3, 2, dtype=torch.float64)
    w = torch.tensor([0.5], dtype=torch.float64)[:, None, None]
    x, (rec,), _ = solvers._iterate_one(lambda x: 0.5 * x + 1, x0, w, 0.5, 1.0, 1e-12, 500)
    assert rec.converged and torch.allclose(x, torch.full_like(x, 2.0))


def test_without_torchscript_the_python_loop_runs_and_says_so(monkeypatch):
    def broken(fn):
        raise RuntimeError("no TorchScript here")

    solvers._scripted_loop.cache_clear()
    monkeypatch.setattr(torch.jit, "script", broken)
    try:
        with pytest.warns(RuntimeWarning, match="Python loop is used instead"):
            assert solvers._scripted_loop() is None
        F = problem(2, 5, 3, 0.9, True, torch.float64)
        x0 = torch.zeros(1, 3, 5, dtype=torch.float64)
        assert_same(solve(F, x0, 0.6, 1.0, 1e-8, 40, False), solve(F, x0, 0.6, 1.0, 1e-8, 40, True))
    finally:
        monkeypatch.undo()
        solvers._scripted_loop.cache_clear()
    assert solvers._scripted_loop() is not None


def test_the_switch_refuses_a_non_bool_and_restores_on_exit():
    with pytest.raises(TypeError, match="True or False"):
        with scripted_loops("no"):
            pass
    before = solvers._SCRIPTED["on"]
    with pytest.raises(KeyError):
        with scripted_loops(not before):
            assert solvers._SCRIPTED["on"] is (not before)
            raise KeyError
    assert solvers._SCRIPTED["on"] is before


@pytest.mark.parametrize(("value", "on"), [("0", False), ("1", True)])
def test_the_environment_variable_sets_the_default(value, on):
    code = "from nemon import solvers; print(solvers._SCRIPTED['on'])"
    env = {**os.environ, "NEMON_SCRIPTED_LOOPS": value}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == str(on)
