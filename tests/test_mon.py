"""The l2 baseline MON (Winston and Kolter 2020): parametrisation, solvers, gradients, bounds."""

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

import nemon
from nemon.mon import MON, forward_backward, forward_backward_alpha, peaceman_rachford

SOLVERS = ["pr", "fb"]


def make_mon(seed=0, m=6, n=5, k=3, gamma=0.5, solver="pr", scale=1.0, **kw):
    """A small float64 MON with non-trivial weights (P, Q scaled by ``scale``)."""
    torch.manual_seed(seed)
    kw.setdefault("tol", 1e-13)
    kw.setdefault("max_iter", 20000)
    model = MON(m, n, k, gamma=gamma, solver=solver, **kw).double()
    with torch.no_grad():
        model.P.normal_(0, scale / n**0.5)
        model.Q.normal_(0, scale / n**0.5)
        model.b.normal_(0, 0.5)
    return model


def fixed_point_residual(model, u, z):
    W = model.W.detach()
    U_eff, b_eff = model.input_map()
    return (z - torch.relu(z @ W.T + u @ U_eff.detach().T + b_eff.detach())).abs().max()


# --- the parametrisation ---------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 8),
    gamma=st.floats(-3.0, 0.999),
    scale=st.floats(0.0, 30.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_I_minus_W_is_m_strongly_monotone_for_any_P_Q(n, gamma, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    model = MON(3, n, 2, gamma=gamma).double()
    with torch.no_grad():
        model.P.copy_(scale * torch.randn(n, n, generator=gen, dtype=torch.float64))
        model.Q.copy_(scale * torch.randn(n, n, generator=gen, dtype=torch.float64))
    W = model.W.detach()
    eye = torch.eye(n, dtype=torch.float64)
    sym = 0.5 * ((eye - W) + (eye - W).T)
    tol = 1e-12 * (1.0 + scale**2 * n)
    assert float(torch.linalg.eigvalsh(sym)[0]) >= (1.0 - gamma) - tol
    assert float(model.mu_2().detach()) <= gamma + tol


@pytest.mark.parametrize("gamma", [1.0, 1.5, math.inf, math.nan, "0.5x"])
def test_gamma_at_or_above_one_is_a_configuration_error(gamma):
    with pytest.raises(nemon.ConfigurationError, match="gamma"):
        MON(4, 3, 2, gamma=gamma)


def test_W_is_the_monotone_parametrisation_and_A_eta_mirror_nemon():
    model = make_mon(gamma=0.3)
    P, Q = model.P.detach(), model.Q.detach()
    eye = torch.eye(5, dtype=torch.float64)
    expected = (1 - 0.7) * eye - P.T @ P + Q - Q.T
    torch.testing.assert_close(model.W.detach(), expected)
    torch.testing.assert_close(model.A.detach(), expected)
    torch.testing.assert_close(model.eta, torch.ones(5, dtype=torch.float64))
    assert model.m == pytest.approx(0.7)


# --- the equilibrium ---------------------------------------------------------------------
@pytest.mark.parametrize("solver", SOLVERS)
def test_equilibrium_is_a_fixed_point_at_tight_tol(solver):
    model = make_mon(solver=solver, scale=1.5)
    u = torch.rand(7, 6, dtype=torch.float64)
    z, stats = model.equilibrium(u)
    assert stats.converged and stats.solver == solver and stats.iterations > 1
    assert math.isinf(stats.rho) and math.isinf(stats.error_bound)
    # fb's step is alpha times the residual, so its residual is tol / alpha-sized: still tiny
    assert float(fixed_point_residual(model, u, z.detach())) < 1e-10


def test_both_solvers_and_any_start_reach_the_same_equilibrium():
    pr = make_mon(solver="pr", scale=1.0)
    fb = make_mon(solver="fb", scale=1.0)
    u = torch.rand(7, 6, dtype=torch.float64)
    z_pr, _ = pr.equilibrium(u)
    z_fb, _ = fb.equilibrium(u)
    torch.testing.assert_close(z_pr, z_fb, atol=1e-11, rtol=0)

    W = pr.W.detach()
    U_eff, b_eff = pr.input_map()
    bias = (u @ U_eff.T + b_eff).detach()
    eye = torch.eye(5, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    for start_scale in (0.0, 1.0, 100.0):
        start = start_scale * torch.randn(7, 5, generator=gen, dtype=torch.float64)
        for alpha in (0.3, 1.0, 4.0):  # Peaceman-Rachford converges for every alpha > 0
            inv = torch.linalg.inv(eye + alpha * (eye - W))
            z, st_ = peaceman_rachford(
                lambda r, inv=inv: r @ inv.T,
                torch.relu,
                bias,
                start,
                alpha=alpha,
                tol=1e-14,
                max_iter=20000,
            )
            assert st_.converged
            torch.testing.assert_close(z, z_pr.detach(), atol=1e-11, rtol=0)
        alpha = forward_backward_alpha(W, pr.m)
        for a in (alpha, 1.9 * alpha):  # inside (0, 2 m / L^2)
            z, st_ = forward_backward(
                lambda x: x @ W.T, torch.relu, bias, start, alpha=a, tol=1e-14, max_iter=50000
            )
            assert st_.converged
            torch.testing.assert_close(z, z_pr.detach(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("gamma", [0.9, 0.0, -1.5])
@pytest.mark.parametrize("solver", SOLVERS)
def test_without_P_and_Q_the_equilibrium_is_relu_of_the_injection_over_m(gamma, solver):
    # z = relu(gamma z + x) per coordinate: z = x / (1 - gamma) where x > 0, else 0.
    model = make_mon(gamma=gamma, solver=solver)
    with torch.no_grad():
        model.P.zero_()
        model.Q.zero_()
    u = torch.rand(9, 6, dtype=torch.float64)
    U_eff, b_eff = model.input_map()
    x = (u @ U_eff.T + b_eff).detach()
    assert (x > 0).any() and (x < 0).any()
    z, _ = model.equilibrium(u)
    torch.testing.assert_close(z.detach(), torch.relu(x) / (1 - gamma), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
def test_non_convergence_is_reported_warned_once_and_raised_when_strict(solver):
    model = make_mon(solver=solver, scale=2.0, tol=1e-14, max_iter=2)
    u = torch.rand(4, 6, dtype=torch.float64)
    with pytest.warns(nemon.NonConvergenceWarning, match=r"MON forward solve \(" + solver):
        _, stats = model.equilibrium(u)
    assert not stats.converged and stats.iterations == 2 and stats.residual > 1e-14
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.equilibrium(u)  # once per model: no second warning
    strict = make_mon(solver=solver, scale=2.0, tol=1e-14, max_iter=2, strict=True)
    with pytest.raises(nemon.ConvergenceError, match="raise max_iter"):
        strict(u)


def test_fixed_fb_step_outside_the_convergent_range_is_named_in_the_warning():
    model = make_mon(solver="fb", scale=2.0, alpha=50.0, max_iter=30)
    with pytest.warns(nemon.NonConvergenceWarning, match="converges only below"):
        model(torch.rand(4, 6, dtype=torch.float64))


def test_solver_settings_apply_inside_and_restore_after():
    model = make_mon(tol=1e-3, max_iter=100)
    u = torch.rand(4, 6, dtype=torch.float64)
    _, loose = model.equilibrium(u)
    with model.solving(tol=1e-12, max_iter=4000) as m:
        assert m is model
        _, tight = model.equilibrium(u)
    assert tight.iterations > loose.iterations and tight.residual <= 1e-12
    assert (model.tol, model.max_iter) == (1e-3, 100)
    with pytest.raises(nemon.ConfigurationError, match="tol"):
        with model.solving(tol=0.0):
            pass


# --- gradients ---------------------------------------------------------------------------
# fb's iteration count grows like ||I - W||_2^2 / m^2: a milder W keeps its 170 solves fast
@pytest.mark.parametrize("solver, scale", [("pr", 1.5), ("fb", 0.7)])
def test_gradcheck_all_parameters_and_input_float64(solver, scale):
    model = make_mon(m=5, n=4, k=3, solver=solver, scale=scale, tol=1e-15, max_iter=20000)
    u = torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
    names = ["P", "Q", "U", "b", "C", "c"]

    def fn(u, *params):
        return torch.func.functional_call(model, dict(zip(names, params, strict=True)), (u,))

    inputs = [u] + [getattr(model, p).detach().clone().requires_grad_(True) for p in names]
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def unrolled_output(model, u, iters):
    """Logits by autograd through a long unrolled forward-backward iteration (the reference)."""
    W = model.W
    U_eff, b_eff = model.input_map()
    inj = u @ U_eff.T + b_eff
    alpha = forward_backward_alpha(W.detach(), model.m)
    z = torch.zeros_like(inj)
    for _ in range(iters):
        z = torch.relu((1 - alpha) * z + alpha * (z @ W.T + inj))
    return z @ model.C.T + model.c


@pytest.mark.parametrize("solver", SOLVERS)
def test_implicit_gradients_match_unrolled_autograd(solver):
    model = make_mon(m=8, n=6, k=4, gamma=0.2, solver=solver, scale=1.0)
    u = torch.rand(10, 8, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (10,))
    loss_fn = torch.nn.functional.cross_entropy
    implicit = torch.autograd.grad(loss_fn(model(u), target), [u, *model.parameters()])
    ref_loss = loss_fn(unrolled_output(model, u, 3000), target)
    reference = torch.autograd.grad(ref_loss, [u, *model.parameters()])
    for g, r in zip(implicit, reference, strict=True):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=1e-7)
    bs = model.last_backward_stats
    assert isinstance(bs, nemon.SolverStats) and bs.converged and bs.solver == solver


def test_backward_graph_does_not_grow_with_iterations():
    def saved_bytes(tol):
        model = make_mon(scale=2.0, tol=tol)
        u = torch.rand(16, 6, dtype=torch.float64)
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(u)
        return total, model.last_stats.iterations

    loose, it_loose = saved_bytes(1e-2)
    tight, it_tight = saved_bytes(1e-13)
    assert it_tight > 3 * it_loose
    assert tight == loose


# --- the Lipschitz bound -----------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    gamma=st.floats(-1.0, 0.95),
    scale=st.sampled_from([0.05, 0.5, 2.0]),
    eps=st.floats(1e-4, 1.0),
)
def test_lipschitz_bound_dominates_empirical_sensitivity(seed, gamma, scale, eps):
    model = make_mon(seed=seed % 1000, gamma=gamma, scale=scale, tol=1e-14)
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(32, 6, generator=gen, dtype=torch.float64)
    # pairs at l_inf distance <= eps: random corners of the box (the worst case for l_inf),
    # clipped to pixels
    sign = torch.randint(0, 2, (32, 6), generator=gen, dtype=torch.float64) * 2 - 1
    v = (u + eps * sign).clamp(0, 1)
    dist = (u - v).abs().amax(dim=1)
    with torch.no_grad():
        dy = (model(u) - model(v)).abs().amax(dim=1)
        dz = torch.linalg.vector_norm(model.equilibrium(u)[0] - model.equilibrium(v)[0], dim=1)
        U_eff, _ = model.input_map()
        dx = torch.linalg.vector_norm((u - v) @ U_eff.T, dim=1)
        L = float(model.lipschitz_bound())
    # the lemma of the l2 route: z* is 1/m-Lipschitz in the injection
    assert bool((dz <= dx / model.m * (1 + 1e-9) + 1e-12).all())
    assert bool((dy <= L * dist * (1 + 1e-9) + 1e-12).all())


def test_injection_lemma_is_tight_when_every_unit_is_active():
    # P = Q = 0, all units on: z = x / m, so ||dz||_2 = ||dx||_2 / m exactly.
    model = make_mon(gamma=0.25)
    with torch.no_grad():
        model.P.zero_()
        model.Q.zero_()
        model.b.fill_(10.0)
    u, v = torch.rand(2, 6, dtype=torch.float64)
    with torch.no_grad():
        dz = torch.linalg.vector_norm(model.equilibrium(u)[0] - model.equilibrium(v)[0])
        dx = torch.linalg.vector_norm((u - v) @ model.input_map()[0].T)
    assert float(dz) == pytest.approx(float(dx) / 0.75, rel=1e-12)


@torch.no_grad()
def _routes(model):
    U_eff, _ = model.input_map()
    C = model.C
    l2 = C.norm(dim=1).max() * torch.linalg.matrix_norm(U_eff, 2) * math.sqrt(6) / model.m
    mu = nemon.mu_inf(model.W)
    linf = C.abs().sum(1).max() * U_eff.abs().sum(1).max() / (1 - mu.clamp(min=0))
    return float(l2), float(linf), float(mu)


def test_lipschitz_bound_is_the_smaller_route_and_differentiable():
    small = make_mon(scale=0.05, gamma=0.0)  # mu_inf(W) < 1: both routes apply
    l2, linf, mu = _routes(small)
    assert mu < 1
    bound = small.lipschitz_bound()
    assert float(bound.detach()) == pytest.approx(min(l2, linf), rel=1e-12)
    bound.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in (small.U, small.C))

    big = make_mon(scale=3.0, gamma=0.5)  # mu_inf(W) >= 1: only the l2 route is sound
    l2, _, mu = _routes(big)
    assert mu >= 1
    assert float(big.lipschitz_bound().detach()) == pytest.approx(l2, rel=1e-12)


def test_lipschitz_bound_is_in_pixel_units():
    # Normalising by std s multiplies the injection's sensitivity to pixels by 1/s.
    a = make_mon(input_mean=0.0, input_std=1.0)
    b = make_mon(input_mean=0.3, input_std=0.5)
    with torch.no_grad():
        la, lb = float(a.lipschitz_bound()), float(b.lipschitz_bound())
    assert lb == pytest.approx(2 * la, rel=1e-12)


def test_input_normalisation_is_folded_into_U_and_b():
    mean = torch.linspace(0.1, 0.6, 6, dtype=torch.float64)
    model = make_mon(input_mean=mean, input_std=0.3)
    u = torch.rand(5, 6, dtype=torch.float64)
    x_ref = ((u - mean) / 0.3) @ model.U.T + model.b
    U_eff, b_eff = model.input_map()
    torch.testing.assert_close(u @ U_eff.T + b_eff, x_ref)


# --- l_inf constants ---------------------------------------------------------------------
@pytest.mark.parametrize("scale", [0.05, 0.5, 3.0])
def test_step_constants_and_measures_match_direct_computation(scale):
    model = make_mon(scale=scale, gamma=-0.4)
    W = model.W.detach().tolist()
    n = len(W)
    rows = [W[i][i] + sum(abs(W[i][j]) for j in range(n) if j != i) for i in range(n)]
    mu = max(rows)
    assert float(model.mu_inf().detach()) == pytest.approx(mu, abs=1e-12)
    alpha = 1.0 / (1.0 - min(min(W[i][i], 0.0) for i in range(n)))
    rho = 1.0 - (1.0 - max(mu, 0.0)) * alpha
    a, r = model.alpha_star(), model.rho()
    assert a == pytest.approx(alpha, abs=1e-12) and r == pytest.approx(rho, abs=1e-12)
    assert (r < 1) == (mu < 1)
    Wt = model.W.detach()
    lam = float(torch.linalg.eigvalsh(0.5 * (Wt + Wt.T)).max())
    assert float(model.mu_2().detach()) == pytest.approx(lam, abs=1e-12)
    assert lam <= -0.4 + 1e-12


# --- dtype, device, shapes, errors -------------------------------------------------------
@pytest.mark.parametrize("solver", SOLVERS)
def test_dtype_follows_the_parameters(solver):
    model = make_mon(solver=solver, tol=1e-5)
    y64 = model(torch.rand(3, 6))  # float32 input, float64 model
    assert y64.dtype == torch.float64
    model.float()
    u = torch.rand(3, 6, dtype=torch.float64)
    y32 = model(u)
    assert y32.dtype == torch.float32 and model.lipschitz_bound().dtype == torch.float32
    assert model.W.dtype == torch.float32 and model.eta.dtype == torch.float32
    y32.sum().backward()
    assert model.P.grad.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("solver", SOLVERS)
def test_device_follows_the_parameters(solver):
    model = make_mon(solver=solver, tol=1e-10).cuda()
    u = torch.rand(4, 6, dtype=torch.float64, device="cuda", requires_grad=True)
    y = model(u)
    assert y.device.type == "cuda" and model.eta.device.type == "cuda"
    y.sum().backward()
    assert u.grad.device.type == "cuda" and model.P.grad.device.type == "cuda"
    cpu = make_mon(solver=solver, tol=1e-10)
    torch.testing.assert_close(y.detach().cpu(), cpu(u.detach().cpu()), atol=1e-9, rtol=0)


def test_input_shapes_flatten_to_rows_of_in_features():
    model = make_mon(m=12, n=4)
    u = torch.rand(5, 1, 3, 4, dtype=torch.float64)
    y = model(u)
    assert y.shape == (5, 3)
    torch.testing.assert_close(y, model(u.reshape(5, 12)))
    z, _ = model.equilibrium(torch.rand(2, 3, 12, dtype=torch.float64))
    assert z.shape == (2, 3, 4)
    assert model(torch.rand(12, dtype=torch.float64)).shape == (3,)
    with pytest.raises(ValueError, match="does not flatten"):
        model(torch.rand(5, 11, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([[0.0] * 12])


def test_non_finite_inputs_and_weights_are_clear_errors():
    model = make_mon()
    u = torch.rand(3, 6, dtype=torch.float64)
    u[1, 2] = math.nan
    with pytest.raises(nemon.NonFiniteError, match="MON.forward: images .* non-finite"):
        model(u)
    with torch.no_grad():
        model.P[0, 0] = math.inf
    with pytest.raises(nemon.NonFiniteError, match="W"):
        model(torch.rand(3, 6, dtype=torch.float64))


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"solver": "average"}, "solver"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": math.inf}, "alpha"),
        ({"tol": 0.0}, "tol"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"input_std": -1.0}, "input_std"),
        ({"input_mean": torch.zeros(3)}, "input_mean"),
        ({"stop": "bound"}, "stop"),
    ],
)
def test_bad_arguments_are_configuration_errors_naming_the_argument(kw, name):
    with pytest.raises(nemon.ConfigurationError, match=name):
        MON(6, 4, 2, gamma=0.5, **kw)


def test_non_finite_dataset_statistics_are_rejected():
    with pytest.raises(nemon.NonFiniteError, match="input_mean"):
        MON(6, 4, 2, gamma=0.5, input_mean=math.nan)


@pytest.mark.parametrize("field", ["in_features", "hidden_features", "out_features"])
def test_sizes_must_be_positive_integers(field):
    sizes = {"in_features": 6, "hidden_features": 4, "out_features": 2}
    sizes[field] = 0
    with pytest.raises(nemon.ConfigurationError, match=field):
        MON(**sizes, gamma=0.5)


def test_constructor_kwargs_rebuild_the_model_and_state_dict_round_trips():
    model = make_mon(solver="fb", alpha=0.2, input_mean=torch.linspace(0, 1, 6), input_std=0.5)
    kw = model.constructor_kwargs()
    twin = type(model)(**kw).double()
    twin.load_state_dict(model.state_dict())
    u = torch.rand(4, 6, dtype=torch.float64)
    torch.testing.assert_close(twin(u), model(u))
    assert model.kind == "mon" and set(kw) >= {"gamma", "solver", "alpha", "tol", "max_iter"}
    assert set(dict(model.named_parameters())) == {"P", "Q", "U", "b", "C", "c"}


def test_no_l_inf_error_bound_is_claimed():
    model = make_mon()
    _, stats = model.equilibrium(torch.rand(5, 6, dtype=torch.float64))
    assert model.last_stats is stats is model.last_forward_stats
    assert model.last_error_bounds.shape == (5,) and torch.isinf(model.last_error_bounds).all()
    with pytest.raises(nemon.ConfigurationError, match="stop"):
        with model.solving(stop="bound"):
            pass


def test_repr_names_the_settings():
    text = repr(make_mon(solver="fb", alpha=0.1))
    for part in ("gamma=0.5", "solver='fb'", "alpha=0.1", "tol=1e-13"):
        assert part in text


# --- trainable end to end ----------------------------------------------------------------
# forward-backward needs ~10x the iterations of Peaceman-Rachford here: fewer, looser steps
@pytest.mark.parametrize("solver, steps, tol", [("pr", 300, 1e-6), ("fb", 100, 1e-4)])
def test_short_adam_run_learns_a_nonlinear_two_class_problem(solver, steps, tol):
    torch.manual_seed(0)
    u = torch.rand(256, 2, dtype=torch.float64)
    labels = ((u - 0.5).norm(dim=1) < 0.3).long()  # a disc: not linearly separable
    model = MON(
        2, 16, 2, gamma=0.5, solver=solver, input_mean=0.5, input_std=0.3, tol=tol, max_iter=5000
    )
    model.double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.functional.cross_entropy
    with torch.no_grad():
        first = float(loss_fn(model(u), labels))
    for _ in range(steps):
        loss = loss_fn(model(u), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = model(u)
    last = float(loss_fn(logits, labels))
    acc = float((logits.argmax(1) == labels).double().mean())
    assert last < 0.3 * first and acc > 0.9
    assert model.last_stats.converged and model.last_backward_stats.converged
    assert float(model.mu_2().detach()) <= 0.5 + 1e-12
