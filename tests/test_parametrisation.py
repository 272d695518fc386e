"""MATH 2: mu_eta(A) <= gamma holds by construction, for every parameter value."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import nemon

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 7),
    gamma=st.floats(-2.0, 0.99),
    weighted=st.booleans(),
    data=st.data(),
)
def test_mu_eta_of_A_never_exceeds_gamma(n, gamma, weighted, data):
    T = data.draw(arrays("float64", (n, n), elements=finite))
    d = data.draw(arrays("float64", (n,), elements=st.floats(-20, 20, width=64)))
    model = nemon.NEMON(3, n, 2, gamma=gamma, weighted=weighted).double()
    with torch.no_grad():
        model.T.copy_(torch.from_numpy(T))
        if weighted:
            model.d.copy_(torch.from_numpy(d))
    # Closed form is exact: never above gamma.
    assert float(model.mu().detach()) <= gamma
    # The measure computed from the effective A agrees up to rounding of the row sums.
    mu_num = float(nemon.mu_inf(model.A, model.eta).detach())
    row_scale = float(model.T.detach().abs().sum(dim=1).max()) + abs(gamma) + 1.0
    assert mu_num <= gamma + 1e-12 * row_scale * n
    assert math.isclose(mu_num, float(model.mu().detach()), abs_tol=1e-12 * row_scale * n)


def test_mu_inf_matches_definition_on_a_known_matrix():
    M = torch.tensor([[-3.0, 1.0, -1.0], [2.0, 0.5, 0.0], [0.0, -4.0, -5.0]])
    # rows: -3 + 2 = -1; 0.5 + 2 = 2.5; -5 + 4 = -1
    assert float(nemon.mu_inf(M)) == 2.5
    eta = torch.tensor([1.0, 2.0, 4.0])
    # weighted: m_ij eta_i / eta_j
    Mw = eta[:, None] * M / eta[None, :]
    assert float(nemon.mu_inf(M, eta)) == float(nemon.mu_inf(Mw))


def test_unweighted_A_is_the_slides_parametrisation():
    model = nemon.NEMON(3, 5, 2, gamma=0.3, weighted=False).double()
    T = model.T.detach()
    expected = T - torch.diag(T.abs().sum(dim=1)) + 0.3 * torch.eye(5, dtype=T.dtype)
    torch.testing.assert_close(model.A.detach(), expected)
    assert "d" not in dict(model.named_parameters())


def test_alpha_star_and_rho_follow_math_3(small_model):
    A = small_model.A.detach()
    amin = float(torch.diagonal(A).clamp(max=0).min())
    mu_plus = max(float(nemon.mu_inf(A, small_model.eta.detach())), 0.0)
    assert math.isclose(small_model.alpha_star(), 1 / (1 - amin), rel_tol=1e-12)
    assert math.isclose(small_model.rho(), 1 - (1 - mu_plus) / (1 - amin), rel_tol=1e-9)
    assert 0 <= small_model.rho() < 1
    # the solver's one-sync shortcut gives the same constants
    alpha, rho = small_model.step_constants()
    assert math.isclose(alpha, small_model.alpha_star(), rel_tol=1e-12)
    assert math.isclose(rho, small_model.rho(), rel_tol=1e-12)
