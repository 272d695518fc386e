"""MATH 4, 5: the empirical Lipschitz lower bound (nemon.lipschitz_lower)."""

import pytest
import torch
from _attack_helpers import CLASSES, M, sensitive_model
from conftest import make_model
from hypothesis import given, settings
from hypothesis import strategies as st

from nemon.errors import ConfigurationError, NonFiniteError
from nemon.lipschitz_lower import lipschitz_lower_bound


def ratio_of_pair(model, p, q, k):
    with torch.no_grad(), model.solving(tol=1e-13, max_iter=10_000):
        y = model(torch.stack([p, q]).to(model.T.dtype)).double()
    return float((y[1, k] - y[0, k]).abs() / (q - p).abs().max())


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    gamma=st.floats(-1.0, 0.95),
    weighted=st.booleans(),
    scale=st.floats(0.1, 3.0),
)
def test_lipschitz_lower_bound_is_below_math_5_and_checked_by_finite_differences(
    seed, gamma, weighted, scale
):
    model = make_model(seed=seed, gamma=gamma, weighted=weighted, scale=scale)
    u = torch.rand(3, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    lb = lipschitz_lower_bound(model, u, steps=8, step_size=0.05, seed=seed, n_random=2)
    bound = float(model.lipschitz_bound().detach())
    assert 0 < lb.value <= bound * (1 + 1e-9)
    assert lb.fd_ratio <= bound * (1 + 1e-9)
    assert lb.agree and lb.pattern_checked and lb.note == ""
    assert lb.fd_rel_diff <= 1e-6
    # the solver's error bound keeps the pair's ratio a proven (if pessimistic) lower bound
    assert 0 <= lb.fd_error < 0.01 * lb.fd_ratio
    p, q = lb.fd_pair
    assert float(p.min()) >= 0 and float(q.min()) >= 0 and float(p.max()) <= 1 and q.max() <= 1
    assert float((q - p).abs().max()) == pytest.approx(lb.fd_h, rel=1e-9)
    # the pair really achieves the ratio: recomputed independently with the model
    assert ratio_of_pair(model, p, q, lb.k) == pytest.approx(lb.fd_ratio, rel=1e-8)


def affine_on_the_box(seed):
    """A NEMON with every unit active on [0, 1]^m: non-negative off-diagonal A (so
    (I - A)^-1 >= 0), and B u + b > 0 on the box. Its Lipschitz constant is
    ||C (I - A)^-1 B||_inf exactly."""
    model = make_model(seed=seed, m=12, n=8, k=4, gamma=0.5)
    with torch.no_grad():
        model.T.abs_()
        model.b.copy_(model.B.abs().sum(dim=1) + 0.1)
    A = model.A.detach()
    jac = model.C.detach() @ torch.linalg.solve(torch.eye(8, dtype=A.dtype) - A, model.B.detach())
    return model, float(jac.abs().sum(dim=1).max())


@pytest.mark.parametrize("seed", [0, 1])
def test_lipschitz_lower_bound_finds_the_exact_constant_of_an_affine_network(seed):
    model, exact = affine_on_the_box(seed)
    u = torch.rand(2, 12, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x, _ = model.equilibrium(u)
    assert bool((x > 0).all())  # the network is affine here
    lb = lipschitz_lower_bound(model, u, steps=3, step_size=0.1, seed=seed)
    assert lb.value == pytest.approx(exact, rel=1e-9)
    assert lb.fd_ratio == pytest.approx(exact, rel=1e-7)
    assert lb.fd_h == 1e-2  # the largest step: nothing changes pattern on the box
    assert exact <= float(model.lipschitz_bound().detach()) * (1 + 1e-12)


def test_lipschitz_lower_bound_is_deterministic_and_leaves_model_and_rng_alone():
    model = sensitive_model(2)
    model = model.float()
    u = torch.rand(2, M)
    state = torch.get_rng_state()
    a = lipschitz_lower_bound(model, u, steps=5, step_size=0.05, seed=3, n_random=2)
    b = lipschitz_lower_bound(model, u, steps=5, step_size=0.05, seed=3, n_random=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.value == b.value and torch.equal(a.point, b.point) and a.k == b.k
    assert model.T.dtype == torch.float32 and model.tol == 1e-12 and model.training
    assert a.solves.max_tol == 1e-12 and a.solves.backward_solves > 0


def test_a_model_without_a_solver_works_and_reports_no_solves():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(M, 10), torch.nn.ReLU(), torch.nn.Linear(10, CLASSES)
    ).double()
    u = torch.rand(2, M, dtype=torch.float64)
    lb = lipschitz_lower_bound(mlp, u, steps=5, step_size=0.05, seed=0)
    assert lb.solves.solves == 0 and lb.solves.calls > 0
    W1, W2 = mlp[1].weight.detach(), mlp[3].weight.detach()
    crude = float(W2.abs().sum(1).max() * W1.abs().sum(1).max())
    assert 0 < lb.value <= crude and lb.agree and lb.pattern_checked


@pytest.mark.parametrize(
    ("match", "bad"),
    [
        ("steps must", dict(steps=0)),
        ("step_size must", dict(step_size=0.0)),
        ("n_random must", dict(n_random=-1)),
        ("tol must", dict(tol=-1.0)),
        ("pixels in", dict(u=torch.full((2, 12), 1.1, dtype=torch.float64))),
    ],
)
def test_lipschitz_lower_bound_rejects_bad_arguments_clearly(match, bad):
    model = make_model()
    kw = dict(u=torch.rand(2, 12, dtype=torch.float64), steps=2, step_size=0.1, seed=0) | bad
    with pytest.raises(ConfigurationError, match=match):
        lipschitz_lower_bound(model, **kw)


def test_lipschitz_lower_bound_refuses_non_finite_inputs():
    u = torch.full((2, 12), float("inf"), dtype=torch.float64)
    with pytest.raises(NonFiniteError, match="non-finite"):
        lipschitz_lower_bound(make_model(), u, steps=2, step_size=0.1, seed=0)
