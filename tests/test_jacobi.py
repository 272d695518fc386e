"""MATH 17: the nonlinear Jacobi iteration (each unit solved exactly given the others).

What makes it a solver of the package and not a shortcut: it has the same fixed point as the
averaged iteration of MATH 3 (forward, adjoint and the interval embedding of MATH 9), it contracts
at ``rho_J <= rho`` in ``||.||_eta`` (checked on random and trained models, not just taken from the
formula), its error bars hold (MATH 12), its gradients pass gradcheck, and a stack of models with
it stops each member by its own rule. A wrong diagonal sign or a missing ``1 - a_ii`` changes the
fixed point, which the first tests catch (``test_a_wrong_split_is_caught``).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import make_model
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

import nemon
from nemon import core
from nemon.stack import ModelStack
from nemon.training import train

F64 = torch.float64


def eta_norm(model, d):
    return (d.abs() * model.eta.detach()).amax(dim=-1)


def jacobi_map(model, u):
    """``F_J`` of MATH 17 written from its definition (not from the package's split)."""
    A = model.A.detach()
    B_eff, b_eff = model.input_map()
    z = (u @ B_eff.T + b_eff).detach()
    diag = torch.diagonal(A)
    off = A - torch.diag(diag)
    return lambda x: torch.relu((x @ off.T + z) / (1.0 - diag))


def solved(model, u, solver, tol=1e-13, stop="step"):
    m = copy.deepcopy(model)
    with m.solving(solver=solver, tol=tol, stop=stop, max_iter=100_000), torch.no_grad():
        x, stats = m.equilibrium(u)
    assert stats.converged, stats
    return x, stats, m


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    gamma=st.sampled_from([-2.0, 0.0, 0.5, 0.9, 0.99]),
    scale=st.floats(0.1, 4.0),
    weighted=st.booleans(),
)
def test_jacobi_reaches_the_averaged_iterations_fixed_point(seed, gamma, scale, weighted):
    model = make_model(seed=seed, gamma=gamma, scale=scale, weighted=weighted)
    u = torch.rand(16, 12, dtype=F64, generator=torch.Generator().manual_seed(seed))
    x_avg, _, _ = solved(model, u, "average")
    x_jac, st_jac, _ = solved(model, u, "jacobi")
    torch.testing.assert_close(x_jac, x_avg, atol=1e-9, rtol=0)
    # and it is a fixed point of the original map, not only of the package's split
    B_eff, b_eff = model.input_map()
    z = x_jac @ model.A.T + u @ B_eff.T + b_eff
    assert float((x_jac - torch.relu(z)).detach().abs().max()) < 1e-9
    assert st_jac.solver == "jacobi" and st_jac.alpha == 1.0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    gamma=st.sampled_from([-1.0, 0.0, 0.5, 0.9]),
    scale=st.floats(0.1, 5.0),
    weighted=st.booleans(),
)
def test_jacobi_map_contracts_at_rho_j_which_is_at_most_rho(seed, gamma, scale, weighted):
    model = make_model(seed=seed, gamma=gamma, scale=scale, weighted=weighted)
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(8, 12, dtype=F64, generator=g)
    F = jacobi_map(model, u)
    with torch.no_grad():
        rho_j = core.jacobi_constants(model.M[None])[0]
        assert rho_j <= model.rho() + 1e-12
        for _ in range(5):
            x = 3 * torch.randn(8, 8, dtype=F64, generator=g)
            y = x + torch.randn(8, 8, dtype=F64, generator=g) * 10 ** float(torch.rand(1) * 4 - 2)
            lhs = eta_norm(model, F(x) - F(y))
            assert bool((lhs <= rho_j * eta_norm(model, x - y) * (1 + 1e-12) + 1e-14).all())


def test_rho_j_is_attained_so_it_is_the_factor_not_a_loose_bound():
    # all units active and the differences signed like the worst row: the ratio is rho_J
    model = make_model(seed=3, gamma=0.5, scale=2.0)
    with torch.no_grad():
        M = model.M
        rho_j = core.jacobi_constants(M[None])[0]
        off = M - torch.diag(torch.diagonal(M))
        i = int(((off.abs().sum(dim=1)) / (1 - torch.diagonal(M))).argmax())
        E = model.eta
        # x - y = sign(m_ij) / eta_j, large positive base so every unit stays active
        delta = torch.sign(off[i]) / E
        A = model.A
        diag = torch.diagonal(A)
        A_off = A - torch.diag(diag)
        z = torch.full((8,), 1e3, dtype=F64)

        def F(x):
            return torch.relu((A_off @ x + z) / (1 - diag))

        x = torch.zeros(8, dtype=F64)
        ratio = float(((F(x + delta) - F(x)).abs() * E).max()) / float((delta.abs() * E).max())
    assert ratio == pytest.approx(rho_j, rel=1e-12)


def test_a_wrong_split_is_caught():
    """The fixed-point test above fails for the two classic slips of the split."""
    model = make_model(seed=1, gamma=0.9, scale=2.0)
    u = torch.rand(8, 12, dtype=F64)
    x_ref, _, _ = solved(model, u, "average")
    A = model.A.detach()
    B_eff, b_eff = model.input_map()
    z = (u @ B_eff.T + b_eff).detach()
    diag = torch.diagonal(A)
    off = A - torch.diag(diag)
    wrong = {
        "sign": lambda x: torch.relu((x @ off.T + z) / (1.0 + diag)),
        "no 1 - a_ii": lambda x: torch.relu(x @ off.T + z),
    }
    right = jacobi_map(model, u)
    x = torch.zeros_like(x_ref)
    for _ in range(500):
        x = right(x)
    torch.testing.assert_close(x, x_ref, atol=1e-9, rtol=0)
    for name, F in wrong.items():
        y = torch.zeros_like(x_ref)
        for _ in range(500):
            y = F(y)
        assert float((y - x_ref).abs().max()) > 1e-3, name


def test_the_split_and_its_constants():
    A = torch.tensor([[[-3.0, 1.0, -0.5], [0.2, 0.5, 0.1], [0.0, -1.0, 0.0]]], dtype=F64)
    A_off, s = core.jacobi_split(A)
    assert torch.equal(torch.diagonal(A_off[0]), torch.zeros(3, dtype=F64))
    assert torch.equal(A_off[0] + torch.diag(torch.diagonal(A[0])), A[0])
    torch.testing.assert_close(s[0], 1 / (1 - torch.tensor([-3.0, 0.5, 0.0], dtype=F64)))
    (rho,) = core.jacobi_constants(A)
    assert rho == pytest.approx(max(1.5 / 4, 0.3 / 0.5, 1.0 / 1.0))


@pytest.mark.parametrize("diag", [1.0, 1.5, math.nan])
def test_a_diagonal_entry_at_or_above_one_is_refused(diag):
    A = torch.zeros(1, 3, 3, dtype=F64)
    A[0, 1, 1] = diag
    for fn in (core.jacobi_split, core.jacobi_constants):
        with pytest.raises(nemon.ConfigurationError, match="a_ii < 1"):
            fn(A)


def test_unknown_solver_names_are_refused():
    with pytest.raises(nemon.ConfigurationError, match="jacobi"):
        nemon.NEMON(4, 3, 2, gamma=0.5, solver="jacobbi")
    with pytest.raises(nemon.ConfigurationError, match="alpha = 1"):
        nemon.get_solver("jacobi")(lambda x: x, torch.zeros(2, 2), alpha=0.5, rho=0.5)


@pytest.mark.parametrize("stop", ["step", "bound"])
@pytest.mark.parametrize("gamma", [0.0, 0.9])
def test_jacobi_error_bars_hold_and_it_needs_fewer_iterations(stop, gamma):
    model = make_model(seed=4, gamma=gamma, scale=3.0, n=20)
    u = torch.rand(32, 12, dtype=F64)
    x_star, _, _ = solved(make_model(seed=4, gamma=gamma, scale=3.0, n=20), u, "average", 1e-14)
    its = {}
    for solver in ("average", "jacobi"):
        x, stats, m = solved(model, u, solver, tol=1e-6, stop=stop)
        err = eta_norm(m, x - x_star)
        assert bool((err <= m.last_error_bounds + 1e-15).all())
        assert stats.error_bound == pytest.approx(float(m.last_error_bounds.max()))
        its[solver] = stats.iterations
        rho = stats.rho
    assert rho == pytest.approx(core.jacobi_constants(model.M[None])[0])
    assert its["jacobi"] * 4 <= its["average"]


def test_error_bars_hold_in_float32_with_rounding():
    model = make_model(seed=5, gamma=0.9, scale=2.0, n=20).float()
    u = torch.rand(64, 12)
    x_star, _, _ = solved(model.double(), u.double(), "average", 1e-14)
    x, stats, m = solved(model, u, "jacobi", tol=1e-6)
    err = eta_norm(m.double(), x.double() - x_star)
    assert bool((err <= m.last_error_bounds.double()).all())


def test_gradcheck_through_the_jacobi_layer_forward_and_embedded():
    model = make_model(m=5, n=4, k=3, tol=1e-14, max_iter=10000, solver="jacobi", gamma=0.5)
    u = torch.rand(3, 5, dtype=F64, requires_grad=True)
    names = ["T", "d", "B", "b", "C", "c"]
    inputs = [u] + [getattr(model, p).detach().clone().requires_grad_(True) for p in names]

    def fn(u, T, d, B, b, C, c):
        return torch.func.functional_call(
            model, dict(zip(names, (T, d, B, b, C, c), strict=True)), (u,)
        )

    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)

    lo = torch.rand(3, 5, dtype=F64) * 0.5
    hi = (lo + 0.1).requires_grad_(True)
    lo = lo.requires_grad_(True)

    def emb(lo, hi):
        a, b, _ = model.embedded_equilibrium(lo, hi)
        return torch.cat((a, b), dim=-1)

    assert gradcheck(emb, (lo, hi), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_jacobi_gradients_equal_the_averaged_ones():
    u = torch.rand(10, 12, dtype=F64, requires_grad=True)
    y = torch.randint(0, 4, (10,))
    grads = {}
    for solver in ("average", "jacobi"):
        model = make_model(seed=2, gamma=0.9, scale=2.0, tol=1e-13, max_iter=50_000, solver=solver)
        loss = torch.nn.functional.cross_entropy(model(u), y)
        grads[solver] = torch.autograd.grad(loss, [u, *model.parameters()])
        st = model.last_backward_stats
        assert st.converged and st.solver == solver
    for a, b in zip(grads["average"], grads["jacobi"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_a_stack_with_jacobi_stops_each_member_by_its_own_rule():
    models = [
        make_model(seed=i, gamma=g, scale=s, tol=1e-10, solver="jacobi", max_iter=5000)
        for i, (g, s) in enumerate([(0.0, 0.3), (0.5, 2.0), (0.9, 4.0)])
    ]
    stack = ModelStack(models)
    u = torch.rand(6, 12, dtype=F64)
    y = stack.logits(stack.normalise(u))
    its = [r.iterations for r in stack.last_forward.members]
    assert len(set(its)) > 1  # the members stop at different iterations
    for i, m in enumerate(models):
        torch.testing.assert_close(y[i], m(u), atol=1e-12, rtol=0)
        assert m.last_forward_stats.iterations == its[i]


def test_the_embedded_jacobi_fixed_point_is_math_9s_and_encloses():
    model = make_model(seed=7, gamma=0.9, scale=3.0, tol=1e-13, max_iter=100_000, solver="average")
    u = torch.rand(6, 12, dtype=F64)
    lo, hi = (u - 0.1).clamp(0, 1), (u + 0.1).clamp(0, 1)
    with torch.no_grad():
        lo_a, hi_a, st_a = model.embedded_equilibrium(lo, hi)
        with model.solving(solver="jacobi"):
            lo_j, hi_j, st_j = model.embedded_equilibrium(lo, hi)
        torch.testing.assert_close(lo_j, lo_a, atol=1e-9, rtol=0)
        torch.testing.assert_close(hi_j, hi_a, atol=1e-9, rtol=0)
        assert st_j.iterations * 4 <= st_a.iterations
        with model.solving(solver="jacobi"):
            x_lo, x_hi, _ = nemon.interval_bounds(model, lo, hi)
        g = torch.Generator().manual_seed(0)
        for _ in range(20):
            v = lo + (hi - lo) * torch.rand(lo.shape, dtype=F64, generator=g)
            x, _ = model.equilibrium(v)
            assert bool((x_lo <= x + 1e-12).all()) and bool((x <= x_hi + 1e-12).all())


def test_settling_boxes_with_jacobi_certifies_what_the_averaged_solve_certifies():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(300, 12, generator=g)
    Y = (X @ torch.randn(12, 4, generator=g)).argmax(dim=1)
    torch.manual_seed(0)
    model = nemon.NEMON(12, 16, 4, gamma=0.5, tol=1e-6, max_iter=5000)
    train(model, X, Y, epochs=3, batch_size=50, lr=1e-2, seed=0, progress=False)
    model.double()
    masks = {}
    for solver in ("average", "jacobi"):
        with model.solving(solver=solver, tol=1e-10, stop="step"):
            masks[solver] = [
                nemon.certified_mask(model, X.double(), Y, e, "interval") for e in (0.02, 0.05)
            ]
            assert model.last_forward_stats.solver == solver
    for avg, jac in zip(masks["average"], masks["jacobi"], strict=True):
        assert 0 < int(jac.sum()) < len(X)
        assert torch.equal(avg, jac)
