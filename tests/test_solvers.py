"""MATH 3: the equilibrium, the three solvers, their statistics and failure modes."""

import math
import warnings

import pytest
import torch
from conftest import make_model

import nemon


def fixed_point_residual(model, u, x):
    B_eff, b_eff = model.input_map()
    z = x @ model.A.T + u.reshape(len(u), -1) @ B_eff.T + b_eff
    return (x - torch.relu(z)).abs().max().item()


def eta_norm(model):
    """Per-sample ``||.||_eta`` of ``model`` (the norm its forward solve contracts in)."""
    eta = model.eta.detach()
    return lambda d: (d.abs() * eta).amax(dim=1)


def forward_map(model, u):
    """The undamped map ``x -> relu(A x + B u + b)`` of ``model`` at ``u``, and ``B u + b``."""
    B_eff, b_eff = model.input_map()
    inj = (u @ B_eff.T + b_eff).detach()
    At = model.A.detach().T
    return (lambda x: torch.relu(inj + x @ At)), inj


@pytest.mark.parametrize("solver", ["average", "anderson", "picard"])
def test_equilibrium_satisfies_fixed_point_equation(solver):
    # scale=0.3 keeps A small enough for plain Picard to converge too
    model = make_model(solver=solver, tol=1e-10, scale=0.3)
    u = torch.rand(16, 12, dtype=torch.float64)
    with torch.no_grad():
        x, stats = model.equilibrium(u)
        assert stats.converged and stats.residual <= 1e-10
        assert fixed_point_residual(model, u, x) < 1e-8


def test_tolerance_is_the_relative_step_and_error_bound_holds():
    model = make_model(tol=1e-3)
    exact = make_model(tol=1e-14)
    u = torch.rand(32, 12, dtype=torch.float64)
    with torch.no_grad():
        x, stats = model.equilibrium(u)
        x_star, _ = exact.equilibrium(u)
    assert stats.converged and stats.residual <= 1e-3
    err = float(((x - x_star).abs() * model.eta.detach()).max())
    assert err <= stats.error_bound + 1e-12
    assert 0 < stats.rho < 1 and 0 < stats.alpha <= 1


def test_different_starting_points_reach_the_same_equilibrium():
    model = make_model()
    u = torch.rand(8, 12, dtype=torch.float64)
    F, inj = forward_map(model, u)

    sols = []
    for x0 in (torch.zeros_like(inj), 100 * torch.randn_like(inj), -50 * torch.ones_like(inj)):
        x, st = nemon.get_solver("average")(
            F,
            x0,
            alpha=model.alpha_star(),
            rho=model.rho(),
            tol=1e-13,
            max_iter=5000,
            err_norm=eta_norm(model),
        )
        assert st.converged
        sols.append(x)
    for x in sols[1:]:
        torch.testing.assert_close(x, sols[0], atol=1e-10, rtol=0)


def test_three_solvers_agree_where_they_converge():
    u = torch.rand(20, 12, dtype=torch.float64)
    xs = {}
    for solver in ("average", "anderson", "picard"):
        model = make_model(solver=solver, tol=1e-12, scale=0.3)
        with torch.no_grad():
            x, st = model.equilibrium(u)
        assert st.converged
        xs[solver] = x
    for x in xs.values():
        torch.testing.assert_close(x, xs["average"], atol=1e-9, rtol=0)


def test_anderson_needs_fewer_iterations_on_a_slow_contraction():
    model = make_model(gamma=0.95, scale=3.0, tol=1e-8, solver="average")
    u = torch.rand(20, 12, dtype=torch.float64)
    with torch.no_grad():
        _, avg = model.equilibrium(u)
        with model.solving(solver="anderson"):
            _, aa = model.equilibrium(u)
    assert avg.converged and aa.converged
    assert aa.iterations < avg.iterations


def test_anderson_falls_back_safely_on_degenerate_history():
    # A constant map makes every residual collinear: the least-squares step is singular.
    x0 = torch.zeros(4, 6, dtype=torch.float64)
    target = torch.randn(4, 6, dtype=torch.float64)
    x, st = nemon.get_solver("anderson")(
        lambda x: target.clone(),
        x0,
        alpha=0.5,
        rho=0.5,
        tol=1e-10,
        max_iter=200,
        err_norm=lambda d: d.abs().amax(dim=1),
        ridge=0.0,
    )
    assert st.converged
    torch.testing.assert_close(x, target, atol=1e-9, rtol=0)


@pytest.mark.parametrize("stop", ["step", "bound"])
@pytest.mark.parametrize("seed", [0, 1])
def test_anderson_members_equal_each_member_alone(stop, seed):
    # K = 3 systems with different contraction factors: each stops at its own count and
    # ends where it ends alone (what lets a stack of models train with Anderson)
    g = torch.Generator().manual_seed(seed)
    K, N, n = 3, 6, 10
    A = torch.randn(K, n, n, generator=g, dtype=torch.float64)
    rho = [0.3, 0.8, 0.95]
    A = A / A.abs().sum(dim=2).amax(dim=1)[:, None, None] * torch.tensor(rho)[:, None, None]
    inj = torch.randn(K, N, n, generator=g, dtype=torch.float64)
    At = A.transpose(1, 2)

    def make_F(members):
        a, z = (At, inj) if members is None else (At[members], inj[members])
        return lambda x: torch.baddbmm(z, x, a).clamp(min=0)

    kw = dict(tol=1e-9, max_iter=500, stop=stop)
    x, recs, step = nemon.solvers.anderson_members(
        make_F, torch.zeros_like(inj), alpha=[1.0] * K, rho=rho, **kw
    )
    its = []
    for k in range(K):
        F = make_F(torch.tensor([k]))
        xk, st = nemon.get_solver("anderson")(
            lambda v, F=F: F(v[None])[0],
            torch.zeros_like(inj[k]),
            alpha=1.0,
            rho=rho[k],
            err_norm=lambda d: d.abs().amax(dim=1),
            **kw,
        )
        assert recs[k].converged and st.converged
        assert recs[k].iterations == st.iterations, k
        torch.testing.assert_close(x[k], xk, rtol=0, atol=1e-12)
        its.append(st.iterations)
    assert len(set(its)) == K  # the members really stop at different iterations
    # the last step bounds the returned point's error (MATH 3): |x - x*| <= rho/(1-rho) |step|
    x_star, _, _ = nemon.solvers.solve_members(
        make_F, torch.zeros_like(inj), alpha=[1.0] * K, rho=rho, tol=1e-15, max_iter=5000
    )
    for k in range(K):
        err = float((x[k] - x_star[k]).abs().amax())
        bound = rho[k] / (1 - rho[k]) * float(step[k].abs().amax())
        assert err <= bound + 1e-14, (k, err, bound)


def picard_diverging_model(**kw):
    # A = -2 I (gamma = -2, T = 0): alpha* = 1/3 contracts, Picard oscillates without end.
    model = nemon.NEMON(2, 3, 2, gamma=-2.0, weighted=False, solver="picard", max_iter=50, **kw)
    model = model.double()
    with torch.no_grad():
        model.T.zero_()
        model.B.fill_(1.0)
        model.b.zero_()
    return model


def test_picard_non_convergence_is_reported_and_warned_once():
    model = picard_diverging_model()
    u = torch.ones(3, 2, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            _, st = model.equilibrium(u)
            model.equilibrium(u)
    assert not st.converged and st.iterations == 50
    assert math.isinf(st.error_bound) and math.isinf(st.rho)
    msgs = [w for w in caught if issubclass(w.category, nemon.NonConvergenceWarning)]
    assert len(msgs) == 1 and "picard" in str(msgs[0].message)
    # the averaged iteration converges on the same problem
    with model.solving(solver="average"), torch.no_grad():
        _, st = model.equilibrium(u)
    assert st.converged and st.alpha == pytest.approx(1 / 3)


def test_strict_mode_raises_on_non_convergence():
    model = picard_diverging_model(strict=True)
    with pytest.raises(nemon.ConvergenceError, match="max_iter"):
        with torch.no_grad():
            model.equilibrium(torch.ones(3, 2, dtype=torch.float64))


def test_max_iter_hit_by_the_averaged_iteration_is_not_silent():
    model = make_model(tol=1e-12, max_iter=2, strict=True)
    with pytest.raises(nemon.ConvergenceError, match="stopped after 2 iterations"):
        model(torch.rand(4, 12, dtype=torch.float64))


def test_per_sample_anderson_reaches_the_same_equilibrium():
    model = make_model(gamma=0.9, scale=2.0)
    u = torch.rand(10, 12, dtype=torch.float64)
    F, inj = forward_map(model, u)

    kw = dict(
        alpha=model.alpha_star(),
        rho=model.rho(),
        tol=1e-12,
        max_iter=3000,
        err_norm=eta_norm(model),
    )
    x_avg, _ = nemon.get_solver("average")(F, torch.zeros_like(inj), **kw)
    for per_sample in (False, True):
        x, st = nemon.get_solver("anderson")(F, torch.zeros_like(inj), per_sample=per_sample, **kw)
        assert st.converged
        torch.testing.assert_close(x, x_avg, atol=1e-9, rtol=0)
