"""MATH 9: interval bounds through the equilibrium (the mixed-monotone embedding).

The three facts of MATH 9, checked against tight float64 solves of the same weights:

* the enclosure: ``x_lo <= x*(v) <= x_hi`` for every ``v`` of the box, here at random points,
  vertices, points found by a projected-gradient search that pushes each hidden unit up or down,
  and PGD's adversarial images; also for a stopped (loose or ``max_iter``-capped) iteration,
  thanks to the widening by the a-posteriori error bound;
* the embedded map, written below from its definition, contracts at ``rho = model.rho()`` in the
  pair norm ``max(||x_lo||_eta, ||x_hi||_eta)`` (and attains it), and each averaged component is
  non-decreasing in its own coordinate for ``alpha <= alpha*``;
* ``eps = 0`` collapses the box onto ``x*(u)``.

Then what the certificates built on it must satisfy (MATH 6, 9, 11): certified implies surviving
PGD, the margin bounds hold at points of the ball, the interval certificate certifies every input
the Lipschitz one does, the MLP case is exact interval bound propagation (MATH 16), and bad
arguments are clear errors.

Every comparison with a "true" equilibrium uses a float64 copy of the model with exactly the same
weights, solved to 1e-13, and allows for that solve's own error bound (MATH 3, 12), so a failure
is a real violation and not the reference's rounding.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from conftest import make_model
from hypothesis import given, settings
from hypothesis import strategies as st

import nemon
from nemon.attacks import pgd
from nemon.training import train

F64, F32 = torch.float64, torch.float32
M_IN, N_HID, CLASSES = 12, 8, 4  # the sizes of conftest.make_model


# --- helpers --------------------------------------------------------------------------------
def build(seed, gamma, weighted, scale, dtype=F64, normalise=False, **kw):
    """A small random NEMON (``conftest.make_model``) in ``dtype``, solved at a tolerance that
    dtype can honour (MATH 12)."""
    kw.setdefault("tol", 1e-12 if dtype == F64 else 1e-5)
    kw.setdefault("max_iter", 20_000)
    if normalise:
        kw.update(input_mean=0.4, input_std=0.3)
    model = make_model(seed=seed, gamma=gamma, weighted=weighted, scale=scale, **kw)
    return model.to(dtype)


def rebuilt(model, dtype=None, **settings):
    """A copy of ``model`` (same weights, in ``dtype``) built with other solver ``settings``."""
    twin = type(model)(**{**model.constructor_kwargs(), **settings})
    twin = twin.to(dtype or next(model.parameters()).dtype)
    twin.load_state_dict(model.state_dict())
    return twin


def reference(model):
    """A float64 copy with the very same weights that solves tightly (the 'true' x*)."""
    return rebuilt(model, F64, solver="average", tol=1e-13, stop="step", max_iter=200_000)


def tight(ref, v):
    """``x*(v)`` for rows ``v`` and a componentwise bound on its error (MATH 3, 12)."""
    with torch.no_grad():
        x, stats = ref.equilibrium(v.double())
    assert stats.converged, stats
    err = ref.last_error_bounds[:, None] / ref.eta.detach()
    assert float(err.max()) < 1e-9, "the reference solve is not tight enough to judge anything"
    return x, err


def ball_box(u, eps):
    """MATH 9's input box: the l_inf ball of radius ``eps`` intersected with ``[0, 1]``."""
    return (u - eps).clamp(0.0, 1.0), (u + eps).clamp(0.0, 1.0)


def points_in_box(lo, hi, k, gen):
    """``k`` points per box ``(N, m)``: half uniformly random, half random vertices."""
    N, m = lo.shape
    t = torch.rand(N, k, m, generator=gen, dtype=lo.dtype)
    inside = lo[:, None] + t * (hi - lo)[:, None]
    inside = torch.minimum(torch.maximum(inside, lo[:, None]), hi[:, None])
    vertex = torch.where(t > 0.5, hi[:, None], lo[:, None])
    return torch.cat((inside[:, : k // 2], vertex[:, k // 2 :]), dim=1)


def unit_extremes(ref, lo, hi, steps=12):
    """Per box and hidden unit ``i``, a point that maximises and one that minimises ``x*_i(v)``
    over the box: signed projected gradient ascent through the implicit layer (MATH 4).

    Returns ``(N, 2 n, m)`` points of the boxes (float64).
    """
    N, m = lo.shape
    n = ref.hidden_features
    L = lo.double().repeat_interleave(2 * n, dim=0)
    H = hi.double().repeat_interleave(2 * n, dim=0)
    rows = torch.arange(N * 2 * n)
    unit = torch.arange(n).repeat_interleave(2).repeat(N)
    sign = torch.tensor([1.0, -1.0], dtype=F64).repeat(N * n)
    v = (L + H) / 2
    for k in range(steps):
        v.requires_grad_(True)
        x, _ = ref.equilibrium(v)
        (grad,) = torch.autograd.grad((sign * x[rows, unit]).sum(), v)
        v = v.detach() + (H - L) * (0.5 * 0.7**k) * grad.sign()
        v = torch.minimum(torch.maximum(v, L), H)
    return v.reshape(N, 2 * n, m)


def assert_encloses(x_lo, x_hi, x, err, what=""):
    """``x_lo <= x <= x_hi`` for boxes ``(N, n)`` and points ``(N, P, n)`` with error ``err``."""
    x_lo, x_hi = x_lo.detach().double()[:, None], x_hi.detach().double()[:, None]
    below = float((x_lo - (x + err)).max())  # > 0: some x*(v) lies under the lower bound
    above = float(((x - err) - x_hi).max())
    assert below <= 0 and above <= 0, (
        f"{what}: x*(v) leaves the interval bounds by {max(below, above):.3g} "
        f"(below x_lo by {below:.3g}, above x_hi by {above:.3g})"
    )


def encloses(x_lo, x_hi, x, err):
    """Whether every point is enclosed (for the tests that must see a failure)."""
    x_lo, x_hi = x_lo.detach().double()[:, None], x_hi.detach().double()[:, None]
    return bool(((x_lo <= x + err) & (x - err <= x_hi)).all())


def input_box_injection(model, lo, hi):
    """``z_lo = B+ lo + B- hi + b``, ``z_hi = B+ hi + B- lo + b`` in pixel units (MATH 9)."""
    B, b = model.input_map()
    Bp, Bm = B.clamp(min=0), B.clamp(max=0)
    return lo @ Bp.T + hi @ Bm.T + b, hi @ Bp.T + lo @ Bm.T + b


def embedded_step(A, z_lo, z_hi, x_lo, x_hi, alpha):
    """One averaged step of MATH 9's embedded map, written from its definition.

    ``x_lo <- (1 - alpha) x_lo + alpha relu(D x_lo + A_off+ x_lo + A_off- x_hi + z_lo)``
    and the mirror image for ``x_hi``.
    """
    D = torch.diag(torch.diagonal(A))
    off = A - D
    same, cross = D + off.clamp(min=0), off.clamp(max=0)
    f_lo = torch.relu(x_lo @ same.T + x_hi @ cross.T + z_lo)
    f_hi = torch.relu(x_hi @ same.T + x_lo @ cross.T + z_hi)
    return (1 - alpha) * x_lo + alpha * f_lo, (1 - alpha) * x_hi + alpha * f_hi


def pair_norm(x_lo, x_hi, eta):
    """``max(||x_lo||_eta, ||x_hi||_eta)`` per row, the norm the embedded map contracts in."""
    return torch.maximum((x_lo.abs() * eta).amax(dim=-1), (x_hi.abs() * eta).amax(dim=-1))


def logit_gaps(ref, v, labels):
    """``y_k(v) - y_j(v)`` of the reference at rows ``v`` ``(P, classes)`` and their error bound."""
    x, _ = tight(ref, v)
    with torch.no_grad():
        y = torch.nn.functional.linear(x, ref.C, ref.c)
        Cw = ref.C / ref.eta[None, :]
        pair = (Cw[labels][:, None, :] - Cw[None, :, :]).abs().sum(dim=2)  # ||E^-1 (C_k - C_j)||_1
    gap = y.gather(1, labels[:, None]) - y
    return gap, pair * ref.last_error_bounds[:, None] + 1e-12


models = dict(
    seed=st.integers(0, 10_000),
    gamma=st.floats(-1.0, 0.95),
    weighted=st.booleans(),
    scale=st.floats(0.1, 3.0),
)
# the two solvers whose embedded iteration settles boxes (MATH 9, 17)
solvers = st.sampled_from(["average", "jacobi"])


# --- 1. the enclosure ------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    **models,
    eps=st.floats(0.0, 0.5),
    dtype=st.sampled_from([F64, F32]),
    normalise=st.booleans(),
    solver=solvers,
)
def test_interval_bounds_and_margins_hold_at_random_points_and_vertices_of_the_box(
    seed, gamma, weighted, scale, eps, dtype, normalise, solver
):
    model = build(seed, gamma, weighted, scale, dtype, normalise, solver=solver)
    ref = reference(model)
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(4, M_IN, generator=g, dtype=dtype)
    labels = torch.randint(0, CLASSES, (4,), generator=g)
    lo, hi = ball_box(u, eps)
    with torch.no_grad():
        x_lo, x_hi, stats = nemon.interval_bounds(model, lo, hi)
        margins = nemon.interval_margins(model, u, labels, eps)
    assert stats.converged and x_lo.dtype == dtype and x_lo.shape == (4, N_HID)
    v = points_in_box(lo, hi, 32, g).reshape(-1, M_IN)
    x, err = tight(ref, v)
    assert_encloses(x_lo, x_hi, x.reshape(4, 32, N_HID), err.reshape(4, 32, N_HID), "random")
    gap, gap_err = logit_gaps(ref, v, labels.repeat_interleave(32))
    gap, gap_err = gap.reshape(4, 32, CLASSES), gap_err.reshape(4, 32, CLASSES)
    assert bool((margins.double()[:, None] <= gap + gap_err).all()), "a margin bound fails"


@pytest.mark.parametrize(
    "seed, gamma, weighted, scale, eps, dtype",
    [
        (0, 0.5, True, 1.0, 0.1, F64),
        (1, 0.95, True, 3.0, 0.05, F64),
        (2, -1.0, False, 2.0, 0.3, F64),
        (3, 0.0, True, 2.5, 0.02, F32),
    ],
)
def test_interval_bounds_enclose_the_points_that_push_each_hidden_unit_to_its_extremes(
    seed, gamma, weighted, scale, eps, dtype
):
    model = build(seed, gamma, weighted, scale, dtype, normalise=True)
    ref = reference(model)
    lo, hi = ball_box(torch.rand(3, M_IN, generator=torch.Generator().manual_seed(seed)), eps)
    lo, hi = lo.to(dtype), hi.to(dtype)
    with torch.no_grad():
        x_lo, x_hi, _ = nemon.interval_bounds(model, lo, hi)
    v = unit_extremes(ref, lo, hi)
    x, err = tight(ref, v.reshape(-1, M_IN))
    x, err = x.reshape(3, -1, N_HID), err.reshape(3, -1, N_HID)
    assert_encloses(x_lo, x_hi, x, err, "extremes")
    # the search did its job: it reaches further than the box's centre in both directions
    centre, _ = tight(ref, (lo.double() + hi.double()) / 2)
    idx = torch.arange(N_HID)
    assert bool((x[:, 0::2][:, idx, idx] >= centre - 1e-12).all())
    assert bool((x[:, 1::2][:, idx, idx] <= centre + 1e-12).all())


@pytest.mark.parametrize("weighted", [True, False])
def test_interval_bounds_are_exact_for_a_monotone_network(weighted):
    # B >= 0 and A's off-diagonal >= 0: the embedded map decouples into the equilibria of the
    # two corners, x_lo* = x*(lo) and x_hi* = x*(hi): the computed half is within delta / eta
    # of it and the widening adds delta / eta.
    model = build(5, 0.5, weighted, 2.0)
    with torch.no_grad():
        model.T.abs_()
        model.B.abs_()
    ref = reference(model)
    lo, hi = ball_box(torch.rand(6, M_IN, generator=torch.Generator().manual_seed(5)), 0.1)
    with torch.no_grad():
        x_lo, x_hi, _ = nemon.interval_bounds(model, lo, hi)
    widen = model.last_error_bounds[:, None] / model.eta.detach()
    for bound, corner in ((x_lo, lo), (x_hi, hi)):
        x, err = tight(ref, corner)
        assert bool(((bound - x).abs() <= 2 * widen + err + 1e-15).all())
    assert float((x_hi - x_lo).min()) > 1e-3  # a real box, not a collapsed one


# --- 2. the embedded map contracts at rho and is monotone ---------------------------------------
@settings(max_examples=100, deadline=None)
@given(**models, eps=st.floats(0.0, 0.5), spread=st.floats(0.01, 10.0))
def test_embedded_map_contracts_at_rho_in_the_pair_norm_and_attains_it(
    seed, gamma, weighted, scale, eps, spread
):
    model = build(seed, gamma, weighted, scale, normalise=True)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        A, M, eta = model.A, model.M, model.eta
        alpha, rho = model.alpha_star(), model.rho()
        lo, hi = ball_box(torch.rand(64, M_IN, generator=g, dtype=F64), eps)
        z_lo, z_hi = input_box_injection(model, lo, hi)

        def step(pair, zl=z_lo, zh=z_hi):
            return embedded_step(A, zl, zh, *pair, alpha)

        P = [spread * torch.randn(64, N_HID, generator=g, dtype=F64) for _ in range(2)]
        Q = [spread * torch.randn(64, N_HID, generator=g, dtype=F64) for _ in range(2)]
        GP, GQ = step(P), step(Q)
        ratio = pair_norm(GP[0] - GQ[0], GP[1] - GQ[1], eta) / pair_norm(
            P[0] - Q[0], P[1] - Q[1], eta
        )
        assert float(ratio.max()) <= rho * (1 + 1e-12)

        # rho is attained, so it is exactly MATH 3's factor: with every unit active, the
        # difference aligned with the row of M of largest measure; with none, any difference
        # (there the map is (1 - alpha) x and rho = 1 - alpha* because mu_+ = 0).
        off = M - torch.diag(torch.diagonal(M))
        row = torch.diagonal(M) + off.abs().sum(dim=1)
        i = int(row.argmax())
        mu = float(row[i])
        assert mu == pytest.approx(float(model.mu()), abs=1e-12)
        xi = torch.where(M[i] < 0, -1.0, 1.0).to(F64)
        xi[i] = 1.0  # the diagonal entry of the row, 1 - alpha + alpha m_ii, is >= 0
        h = 1e-3
        zero = torch.zeros(1, N_HID, dtype=F64)
        z = torch.full((1, N_HID), 1.0 if mu >= 0 else -1.0, dtype=F64)
        G0 = step([zero, zero], z, z)
        G1 = step([h * xi / eta, h * xi / eta], z, z)
        attained = float(pair_norm(G1[0] - G0[0], G1[1] - G0[1], eta)) / h
        assert attained == pytest.approx(rho, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(**models, spread=st.floats(0.01, 10.0), h=st.floats(1e-6, 5.0))
def test_each_averaged_component_is_non_decreasing_in_its_own_coordinate(
    seed, gamma, weighted, scale, spread, h
):
    model = build(seed, gamma, weighted, scale)
    g = torch.Generator().manual_seed(seed)
    n = N_HID
    with torch.no_grad():
        A, alpha = model.A, model.alpha_star()
        x_lo, x_hi, z_lo, z_hi = (
            spread * torch.randn(16, n, generator=g, dtype=F64) for _ in "1234"
        )
        bump = h * torch.eye(n, dtype=F64)  # row i moves coordinate i up by h

        def own_slopes(a, z_lo=z_lo, z_hi=z_hi):
            """``(g_i(x + h e_i) - g_i(x)) / h`` for both halves, every sample and unit."""
            rep = [t.repeat_interleave(n, dim=0) for t in (x_lo, x_hi, z_lo, z_hi)]
            e = bump.repeat(16, 1)
            base = embedded_step(A, z_lo, z_hi, x_lo, x_hi, a)
            up_lo = embedded_step(A, rep[2], rep[3], rep[0] + e, rep[1], a)[0]
            up_hi = embedded_step(A, rep[2], rep[3], rep[0], rep[1] + e, a)[1]
            d = torch.arange(n).repeat(16)
            r = torch.arange(16 * n)
            s_lo = (up_lo[r, d] - base[0].repeat_interleave(n, dim=0)[r, d]) / h
            s_hi = (up_hi[r, d] - base[1].repeat_interleave(n, dim=0)[r, d]) / h
            return torch.cat((s_lo, s_hi))

        slack = 1e-14 * (spread + 1) * (2 + float(A.abs().sum(dim=1).max())) / h  # rounding
        assert float(own_slopes(alpha).min()) >= -slack

        # alpha* is the largest such step: with every unit active the slope of unit i is
        # exactly 1 - alpha + alpha a_ii, 0 for the most negative diagonal at alpha*, and
        # negative above alpha*
        a_min = float(torch.diagonal(A).min())
        if a_min < -1e-3:
            active = torch.full((16, n), 100.0 * (spread + h) * (1 + A.abs().max()), dtype=F64)
            slopes = own_slopes(alpha, active, active)
            assert float(slopes.min()) == pytest.approx(0.0, abs=1e-6)
            assert float(own_slopes(1.5 * alpha, active, active).min()) < -0.4


@settings(max_examples=50, deadline=None)
@given(**models, eps=st.floats(0.0, 0.5))
def test_the_packages_embedded_fixed_point_is_the_fixed_point_of_math_9s_map(
    seed, gamma, weighted, scale, eps
):
    model = build(seed, gamma, weighted, scale, normalise=True)
    lo, hi = ball_box(
        torch.rand(8, M_IN, generator=torch.Generator().manual_seed(seed)).double(), eps
    )
    with torch.no_grad():
        x_lo, x_hi, stats = model.embedded_equilibrium(lo, hi)
        delta = model.last_error_bounds
        z_lo, z_hi = input_box_injection(model, lo, hi)
        G = embedded_step(model.A, z_lo, z_hi, x_lo, x_hi, model.alpha_star())
    assert stats.converged
    # ||G(P) - P|| <= ||G(P) - P*|| + ||P* - P|| <= (1 + rho) delta, plus the rounding of the
    # step computed here (about (n + m) u |z|, far below 1e-13 at these sizes)
    resid = pair_norm(G[0] - x_lo, G[1] - x_hi, model.eta.detach())
    assert bool((resid <= (1 + stats.rho) * delta + 1e-13).all())
    assert bool((x_lo <= x_hi + 1e-12).all())


# --- 3. eps = 0 ----------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(**models, dtype=st.sampled_from([F64, F32]), normalise=st.booleans())
def test_a_box_of_zero_width_collapses_onto_the_equilibrium(
    seed, gamma, weighted, scale, dtype, normalise
):
    model = build(seed, gamma, weighted, scale, dtype, normalise)
    u = torch.rand(8, M_IN, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    with torch.no_grad():
        x_lo, x_hi, _ = nemon.interval_bounds(model, u, u)
    delta = model.last_error_bounds[:, None].double() / model.eta.detach().double()
    x, err = tight(reference(model), u)
    assert_encloses(x_lo, x_hi, x[:, None], err[:, None], "eps = 0")
    # the fixed point is (x*, x*): each computed half is within delta / eta of it, and the
    # widening adds delta / eta on each side, so the width is at most 4 delta / eta
    # (plus the rounding of the widening's two additions and of the difference, in dtype)
    width = (x_hi - x_lo).double()
    u = torch.finfo(dtype).eps / 2
    assert bool((width <= 4 * delta + 4 * u * x_hi.double().abs()).all())
    if dtype == F64:
        assert float(width.max()) < 1e-8


def test_interval_margins_at_eps_zero_are_the_margins_themselves():
    model = build(7, 0.5, True, 1.5, normalise=True)
    u = torch.rand(16, M_IN, generator=torch.Generator().manual_seed(7), dtype=F64)
    labels = torch.arange(16) % CLASSES
    with torch.no_grad():
        m = nemon.interval_margins(model, u, labels, 0.0)
    gap, err = logit_gaps(reference(model), u, labels)
    assert bool((m <= gap + err).all())
    assert float((gap - m).max()) < 1e-8


# --- 4. a stopped iteration is still sound ----------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    **models,
    eps=st.floats(0.0, 0.3),
    dtype=st.sampled_from([F64, F32]),
    stopped=st.one_of(
        st.integers(2, 5).map(lambda k: {"max_iter": k}),
        st.sampled_from([0.3, 1e-1, 1e-2]).map(lambda t: {"tol": t}),
    ),
    solver=solvers,
)
def test_the_widened_bounds_of_a_stopped_iteration_still_enclose(
    seed, gamma, weighted, scale, eps, dtype, stopped, solver
):
    model = build(seed, gamma, weighted, scale, dtype, normalise=True, solver=solver)
    g = torch.Generator().manual_seed(seed)
    lo, hi = ball_box(torch.rand(4, M_IN, generator=g, dtype=dtype), eps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nemon.NonConvergenceWarning)
        with model.solving(**stopped), torch.no_grad():
            x_lo, x_hi, stats = nemon.interval_bounds(model, lo, hi)
            raw_lo, raw_hi, _ = model.embedded_equilibrium(lo, hi)
    # interval_bounds is the embedded iterate widened by delta / eta (x_lo clipped at 0)
    widen = model.last_error_bounds[:, None] / model.eta.detach()
    torch.testing.assert_close(x_hi, raw_hi + widen, rtol=0, atol=0)
    torch.testing.assert_close(x_lo, (raw_lo - widen).clamp(min=0), rtol=0, atol=0)
    v = points_in_box(lo, hi, 32, g)
    x, err = tight(reference(model), v.reshape(-1, M_IN))
    assert_encloses(x_lo, x_hi, x.reshape(4, 32, N_HID), err.reshape(4, 32, N_HID), str(stopped))


@pytest.mark.parametrize("solver", ["average", "jacobi"])
def test_without_the_widening_a_stopped_iteration_would_not_enclose(solver):
    model = build(3, 0.5, True, 2.0, normalise=True, solver=solver)
    lo, hi = ball_box(
        torch.rand(8, M_IN, generator=torch.Generator().manual_seed(3)).double(), 0.05
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", nemon.NonConvergenceWarning)
        steps = 1 if solver == "jacobi" else 2  # one Jacobi step gets as close as two averaged
        with model.solving(max_iter=steps), torch.no_grad():
            raw_lo, raw_hi, stats = model.embedded_equilibrium(lo, hi)
            x_lo, x_hi, _ = nemon.interval_bounds(model, lo, hi)
    assert not stats.converged and stats.iterations == steps
    assert any(issubclass(w.category, nemon.NonConvergenceWarning) for w in caught)
    ref = reference(model)
    v = torch.cat(((lo + hi)[:, None] / 2, points_in_box(lo, hi, 16, torch.Generator())), dim=1)
    x, err = tight(ref, v.reshape(-1, M_IN))
    x, err = x.reshape(8, 17, N_HID), err.reshape(8, 17, N_HID)
    assert not encloses(raw_lo, raw_hi, x, err)  # two steps from 0 fall short of x*
    assert_encloses(x_lo, x_hi, x, err, "widened, max_iter=2")


def test_the_widened_bounds_of_a_loose_anderson_solve_enclose_the_equilibrium():
    for seed in range(4):
        model = build(seed, 0.0, True, 2.0, solver="anderson", tol=1e-2, max_iter=50)
        u = torch.rand(16, M_IN, generator=torch.Generator().manual_seed(seed), dtype=F64)
        with torch.no_grad():
            x_lo, x_hi, _ = nemon.interval_bounds(model, u, u)
        x, err = tight(reference(model), u)
        assert_encloses(x_lo, x_hi, x[:, None], err[:, None], f"anderson, seed {seed}")


# --- 5. certificates on trained models ----------------------------------------------------------
def blobs(n, seed):
    """Four Gaussian clusters of 12 'pixels' in [0, 1], balanced labels."""
    g = torch.Generator().manual_seed(seed)
    centres = 0.2 + 0.6 * torch.rand(CLASSES, M_IN, generator=torch.Generator().manual_seed(99))
    y = torch.arange(n) % CLASSES
    x = (centres[y] + 0.12 * torch.randn(n, M_IN, generator=g)).clamp(0, 1)
    return x.double(), y


@pytest.fixture(scope="module")
def trained():
    """Two briefly trained NEMONs (300 Adam steps each): certified (MATH 10) and Lipschitz
    (MATH 5) objectives; with held-out inputs."""
    threads = torch.get_num_threads()  # the autouse single-thread fixture is per test
    torch.set_num_threads(1)
    x, y = blobs(400, 0)
    out = {}
    for name, kw in (("interval", {"eps_t": 0.05}), ("lipschitz", {"lam": 0.01})):
        torch.manual_seed(0)
        model = nemon.NEMON(
            M_IN, 16, CLASSES, gamma=0.5, input_mean=0.5, input_std=0.25, tol=1e-6, max_iter=500
        ).double()
        train(
            model,
            x,
            y,
            epochs=15,
            batch_size=20,
            lr=5e-3,
            seed=0,
            objective=name,
            progress=False,
            **kw,
        )
        out[name] = rebuilt(model, tol=1e-12, max_iter=20_000)
    torch.set_num_threads(threads)
    return out, blobs(200, 1)


@pytest.mark.parametrize("name", ["interval", "lipschitz"])
def test_certified_by_intervals_implies_surviving_pgd_image_by_image(trained, name):
    models, (u, labels) = trained
    model = models[name]
    counts = []
    for eps in (0.02, 0.05, 0.1):
        cert = nemon.certified_mask(model, u, labels, eps, method="interval")
        attack = pgd(
            model, u, labels, eps, steps=20, restarts=1, seed=0, tol=1e-12, max_iter=20_000
        )
        assert not bool((cert & ~attack.robust).any()), f"eps={eps}: certified yet broken by PGD"
        assert nemon.certified_accuracy(model, u, labels, eps, method="interval") <= attack.accuracy
        # the adversarial images are points of the box: their equilibria are enclosed
        lo, hi = ball_box(u, eps)
        with torch.no_grad():
            x_lo, x_hi, _ = nemon.interval_bounds(model, lo, hi)
        x, err = tight(reference(model), attack.adversarial)
        assert_encloses(x_lo, x_hi, x[:, None], err[:, None], f"PGD eps={eps}")
        counts.append((int(cert.sum()), int((~attack.robust).sum())))
    # not vacuous: many certified at 0.02, PGD breaks some at 0.1
    assert counts[0][0] > 100 and counts[-1][1] > 0, counts


@pytest.mark.parametrize("name", ["interval", "lipschitz"])
def test_interval_margins_lower_bound_the_margins_at_points_of_the_ball(trained, name):
    models, (u, labels) = trained
    model, ref = models[name], reference(models[name])
    u, labels = u[:50], labels[:50]
    g = torch.Generator().manual_seed(1)
    for eps in (0.01, 0.05, 0.1):
        with torch.no_grad():
            m = nemon.interval_margins(model, u, labels, eps)
        lo, hi = ball_box(u, eps)
        v = points_in_box(lo, hi, 16, g)
        adv = pgd(
            model, u, labels, eps, steps=10, restarts=1, seed=0, tol=1e-12, max_iter=20_000
        ).adversarial
        v = torch.cat((v, adv[:, None]), dim=1)  # (50, 17, m)
        gap, err = logit_gaps(ref, v.reshape(-1, M_IN), labels.repeat_interleave(17))
        gap, err = gap.reshape(50, 17, CLASSES), err.reshape(50, 17, CLASSES)
        assert bool((m[:, None] <= gap + err).all()), f"eps={eps}"


@pytest.mark.parametrize("name", ["interval", "lipschitz"])
def test_interval_certificate_certifies_every_input_the_lipschitz_one_does(trained, name):
    # A theorem for exact solves: the box half-widths p = x_hi* - x*, q = x* - x_lo* solve the
    # embedded difference system driven by |B| eps, so max(||p||_eta, ||q||_eta) <= ||E B||_inf
    # eps / (1 - mu_+), and m_kj >= y_k - y_j - ||E^-1 (C_k - C_j)||_1 ||E B||_inf eps/(1 - mu_+).
    models, (u, labels) = trained
    model = models[name]
    strictly_more = 0
    for eps in (0.0, 0.005, 0.01, 0.02, 0.05, 0.1):
        lip = nemon.certified_mask(model, u, labels, eps, method="lipschitz")
        box = nemon.certified_mask(model, u, labels, eps, method="interval")
        assert not bool((lip & ~box).any()), f"eps={eps}: Lipschitz certifies, interval does not"
        strictly_more += int((box & ~lip).sum())
    assert strictly_more > 0


@settings(max_examples=100, deadline=None)
@given(**models, eps=st.floats(0.0, 0.2))
def test_on_random_models_too_interval_certifies_whatever_lipschitz_does(
    seed, gamma, weighted, scale, eps
):
    model = build(seed, gamma, weighted, scale, normalise=True)
    u = torch.rand(32, M_IN, generator=torch.Generator().manual_seed(seed), dtype=F64)
    with torch.no_grad():
        labels = model(u).argmax(dim=1)  # every input correctly classified: margins decide
    lip = nemon.certified_mask(model, u, labels, eps, method="lipschitz")
    box = nemon.certified_mask(model, u, labels, eps, method="interval")
    assert not bool((lip & ~box).any())


# --- 6. the MLP: interval bound propagation -----------------------------------------------------
def make_mlp(seed, dtype):
    torch.manual_seed(seed)
    mlp = nemon.MLP(M_IN, N_HID, CLASSES, input_mean=0.4, input_std=0.3).to(dtype)
    with torch.no_grad():
        mlp.b.normal_(0, 0.5)
    return mlp


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("eps", [0.0, 0.05, 0.4])
def test_mlp_interval_bounds_are_exact_ibp(dtype, eps):
    mlp = make_mlp(11, dtype)
    u = torch.rand(16, M_IN, generator=torch.Generator().manual_seed(11), dtype=dtype)
    lo, hi = ball_box(u, eps)
    with torch.no_grad():
        x_lo, x_hi, stats = nemon.interval_bounds(mlp, lo, hi)
        m64 = copy.deepcopy(mlp).double()
        B, b = m64.input_map()  # pixel units (MATH 1)
        Bp, Bm = B.clamp(min=0), B.clamp(max=0)
        lo64, hi64 = lo.double(), hi.double()
        ibp_lo = torch.relu(lo64 @ Bp.T + hi64 @ Bm.T + b)
        ibp_hi = torch.relu(hi64 @ Bp.T + lo64 @ Bm.T + b)
        # each bound is attained: unit i is largest at the vertex taking hi where B_i > 0
        top = torch.where(B[None] > 0, hi64[:, None], lo64[:, None])  # (N, n, m)
        bottom = torch.where(B[None] > 0, lo64[:, None], hi64[:, None])
        idx = torch.arange(N_HID)
        reach_hi = m64.equilibrium(top.reshape(-1, M_IN))[0].reshape(16, N_HID, N_HID)[:, idx, idx]
        reach_lo = m64.equilibrium(bottom.reshape(-1, M_IN))[0].reshape(16, N_HID, N_HID)[
            :, idx, idx
        ]
    assert stats.rho == 0 and stats.iterations == 1
    widen = mlp.last_error_bounds[:, None].double()
    assert float(widen.max()) < (1e-12 if dtype == F64 else 1e-4)
    for got, want in ((x_lo, ibp_lo), (x_hi, ibp_hi)):
        # the computed bound is within widen of the exact one, and widened by widen
        assert bool(((got.double() - want).abs() <= 2 * widen + 1e-15).all())
    torch.testing.assert_close(reach_hi, ibp_hi, rtol=0, atol=1e-12)
    torch.testing.assert_close(reach_lo, ibp_lo, rtol=0, atol=1e-12)
    assert bool((x_lo.double() <= reach_lo).all() & (reach_hi <= x_hi.double()).all())


def test_a_nemon_with_a_zero_matrix_bounds_like_the_mlp():
    # MATH 16: T = 0, gamma = 0 and no weights give A = 0, alpha* = 1, rho = 0
    mlp = make_mlp(12, F64)
    model = nemon.NEMON(
        M_IN, N_HID, CLASSES, gamma=0.0, weighted=False, input_mean=0.4, input_std=0.3, tol=1e-12
    ).double()
    with torch.no_grad():
        model.T.zero_()
        for name in ("B", "b", "C", "c"):
            getattr(model, name).copy_(getattr(mlp, name))
    assert model.alpha_star() == 1.0 and model.rho() == 0.0
    lo, hi = ball_box(
        torch.rand(16, M_IN, generator=torch.Generator().manual_seed(12)).double(), 0.1
    )
    labels = torch.arange(16) % CLASSES
    with torch.no_grad():
        a = nemon.interval_bounds(model, lo, hi)
        b = nemon.interval_bounds(mlp, lo, hi)
        torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-12)
        torch.testing.assert_close(
            nemon.interval_margins(model, lo, labels, 0.1),
            nemon.interval_margins(mlp, lo, labels, 0.1),
            rtol=0,
            atol=1e-10,
        )


# --- 7. bad arguments ------------------------------------------------------------------------
def test_bad_arguments_are_clear_errors():
    model = build(0, 0.5, True, 1.0)
    u = torch.rand(4, M_IN, dtype=F64)
    labels = torch.zeros(4, dtype=torch.long)
    lo, hi = ball_box(u, 0.1)
    swapped, hi_swapped = lo.clone(), hi.clone()
    swapped[1, 3], hi_swapped[1, 3] = 0.6, 0.5  # pixels both, in the wrong order
    with pytest.raises(nemon.ConfigurationError, match=r"1 coordinate\(s\).*lo > hi"):
        nemon.interval_bounds(model, swapped, hi_swapped)
    with pytest.raises(ValueError, match="same shape"):
        nemon.interval_bounds(model, lo, hi[:3])
    with pytest.raises(ValueError, match="in_features=12"):
        nemon.interval_bounds(model, lo[:, :5], hi[:, :5])
    nan = lo.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(nemon.NonFiniteError, match="non-finite"):
        nemon.interval_bounds(model, nan, hi)
    with pytest.raises(TypeError, match="tensors"):
        nemon.interval_bounds(model, lo.numpy(), hi)
    for eps in (-0.1, 1.5, float("nan")):
        with pytest.raises(nemon.ConfigurationError, match=r"eps must lie in \[0, 1\]"):
            nemon.interval_margins(model, u, labels, eps)
        with pytest.raises(nemon.ConfigurationError, match=r"eps must lie in \[0, 1\]"):
            nemon.certified_mask(model, u, labels, eps, method="interval")
        with pytest.raises(nemon.ConfigurationError, match=r"eps must lie in \[0, 1\]"):
            nemon.certified_accuracy(model, u, labels, eps, method="lipschitz")
    with pytest.raises(nemon.ConfigurationError, match=r"'ibp'.*\['lipschitz', 'interval'\]"):
        nemon.certified_mask(model, u, labels, 0.1, method="ibp")
    with pytest.raises(nemon.ConfigurationError, match="'Interval'"):
        nemon.certified_accuracy(model, u, labels, 0.1, method="Interval")
    with pytest.raises(nemon.ConfigurationError, match=r"labels must have shape \(4,\)"):
        nemon.interval_margins(model, u, labels[:3], 0.1)


@pytest.mark.parametrize("name", ["interval", "lipschitz"])
def test_a_given_clean_correctness_replaces_the_interval_paths_own_solve(trained, name):
    # The evaluation passes its clean pass's correctness instead of solving again: the same
    # mask where it is the model's, and it is really used (not recomputed behind it).
    models, (u, labels) = trained
    model = models[name]
    with torch.no_grad():
        correct = model(u).argmax(dim=1) == labels
    for eps in (0.0, 0.05):
        own = nemon.certified_mask(model, u, labels, eps, method="interval")
        given = nemon.certified_mask(model, u, labels, eps, "interval", correct=correct)
        assert torch.equal(own, given) and bool(own.any())
        none = torch.zeros_like(correct)
        assert not nemon.certified_mask(model, u, labels, eps, "interval", correct=none).any()
    for bad in (correct[:-1], correct.long()):
        with pytest.raises(nemon.ConfigurationError, match="correct must be a bool tensor"):
            nemon.certified_mask(model, u, labels, 0.1, "interval", correct=bad)
    with pytest.raises(nemon.ConfigurationError, match="correct is for method='interval'"):
        nemon.certified_mask(model, u, labels, 0.1, "lipschitz", correct=correct)


# --- settling box by box (MATH 9, "Settling box by box") -------------------------------------
def settled(model, u, labels, eps):
    """``certified_mask(..., "interval")`` and how each box left ``NEMON.settle_boxes``:
    ``"yes"`` or ``"no"`` from a check, absent where the stop rule settled it; and the batch
    size at every check."""
    how, sizes = {}, []
    original = model.settle_boxes

    def spy(lo, hi, settle, **kw):
        def recording(rows, outer, inner):
            yes, no = settle(rows, outer, inner)
            sizes.append(len(rows))
            for r, y, n in zip(rows.tolist(), yes.tolist(), no.tolist(), strict=True):
                if y or n:
                    assert r not in how, "a settled box came back"
                    how[r] = "yes" if y else "no"
            return yes, no

        return original(lo, hi, recording, **kw)

    model.settle_boxes = spy
    try:
        mask = nemon.certified_mask(model, u, labels, eps, method="interval")
    finally:
        del model.settle_boxes
    return mask, how, sizes


def exact_margins(model, u, labels, eps):
    """``min_j m_kj`` of MATH 9 for the embedded fixed point itself (a float64 solve to 1e-13,
    whose widening stays below 1e-10, far inside the 1e-9 the tests allow)."""
    ref = reference(model)
    with torch.no_grad():
        m = nemon.interval_margins(ref, u.double(), labels, eps)
    m[torch.arange(len(labels)), labels] = float("inf")
    assert float(ref.last_error_bounds.max()) < 1e-10
    return m.min(dim=1).values


@settings(max_examples=150, deadline=None)
@given(
    **models,
    eps=st.floats(0.0, 0.3),
    dtype=st.sampled_from([F64, F32]),
    normalise=st.booleans(),
    solver=solvers,
)
def test_a_settled_box_is_certified_or_refuted_as_its_exact_fixed_point_is(
    seed, gamma, weighted, scale, eps, dtype, normalise, solver
):
    # "yes" only where the exact box certifies, "no" only where it does not: the widened
    # enclosure (outer) and the shrunk one (inner) bracket every later enclosure (MATH 9).
    model = build(seed, gamma, weighted, scale, dtype, normalise, solver=solver)
    u = torch.rand(48, M_IN, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    with torch.no_grad():
        labels = model(u).argmax(dim=1)  # every input correctly classified
    mask, how, _ = settled(model, u, labels, eps)
    exact = exact_margins(model, u, labels, eps)
    for r, verdict in how.items():
        if verdict == "yes":
            assert exact[r] > -1e-9, f"box {r} certified, but its exact margin is {exact[r]:.3g}"
            assert mask[r]
        else:
            assert exact[r] < 1e-9, f"box {r} refuted, but its exact margin is {exact[r]:.3g}"
            assert not mask[r]
    if dtype == F64:  # tight solves: the same verdict as the exact box wherever it is clear
        clear = exact.abs() > 1e-6
        assert torch.equal(mask[clear], (exact > 0)[clear])


@pytest.mark.parametrize("solver", ["average", "jacobi"])
@pytest.mark.parametrize("name", ["interval", "lipschitz"])
def test_settling_box_by_box_certifies_what_the_full_solve_certifies(trained, name, solver):
    models, (u, labels) = trained
    model = rebuilt(models[name], solver=solver)
    with torch.no_grad():
        correct = model(u).argmax(dim=1) == labels
    verdicts = set()
    for eps in (0.0, 0.01, 0.02, 0.05, 0.1, 0.2):
        with torch.no_grad():
            m = nemon.interval_margins(model, u, labels, eps)  # one solve of the whole batch
        m[torch.arange(len(labels)), labels] = float("inf")
        full = correct & (m.min(dim=1).values > 0)
        mask, how, sizes = settled(model, u, labels, eps)
        assert torch.equal(mask, full), f"eps={eps}: {int((mask != full).sum())} inputs differ"
        # and boxes really leave early: checks see fewer and fewer of them (the Jacobi
        # iteration may settle every box at its first check)
        assert sizes[0] == int(correct.sum()) and sizes == sorted(sizes, reverse=True), sizes
        if solver == "average":
            assert sizes[-1] < sizes[0], sizes
        verdicts |= set(how.values())
    assert verdicts == {"yes", "no"}  # both kinds of check settle boxes


def test_settle_boxes_leaves_nothing_silent():
    model = build(3, 0.9, True, 1.0)
    u = torch.rand(6, M_IN, generator=torch.Generator().manual_seed(3), dtype=F64)
    lo, hi = ball_box(u, 0.1)

    def never(rows, outer, inner):  # a question no check can settle
        none = torch.zeros(len(rows), dtype=torch.bool)
        return none, none

    with model.solving(max_iter=4):
        with pytest.warns(nemon.NonConvergenceWarning, match="left 6 of 6 box"):
            values, stats = model.settle_boxes(lo, hi, never, every=2)
        assert not stats.converged and stats.iterations == 4 and not values.any()
        with pytest.raises(nemon.ConvergenceError, match="raise max_iter"):
            with model.solving(strict=True):
                model.settle_boxes(lo, hi, never)
    values, stats = model.settle_boxes(lo, hi, never)
    assert stats.converged and stats.residual <= model.tol and stats.error_bound < 1e-9
    for every in (0, -1, 1.5, True):
        with pytest.raises(nemon.ConfigurationError, match="every must be a positive integer"):
            model.settle_boxes(lo, hi, never, every=every)
    with pytest.raises(ValueError, match="same shape"):
        model.settle_boxes(lo, hi[:3], never)


def test_other_solvers_certify_by_solving_the_whole_batch():
    model = build(5, 0.5, True, 1.0)
    u = torch.rand(32, M_IN, generator=torch.Generator().manual_seed(5), dtype=F64)
    with torch.no_grad():
        labels = model(u).argmax(dim=1)
    average = nemon.certified_mask(model, u, labels, 0.3, method="interval")
    with model.solving(solver="anderson"):
        with pytest.raises(nemon.ConfigurationError, match="solver is 'anderson'"):
            model.settle_boxes(u, u, lambda rows, o, i: (None, None))
        anderson = nemon.certified_mask(model, u, labels, 0.3, method="interval")
    assert torch.equal(average, anderson) and bool(average.any()) and not bool(average.all())
