"""MATH 5-7: the Lipschitz bound, certificates and the inversion attack."""

import pytest
import torch
from conftest import make_model
from hypothesis import given, settings
from hypothesis import strategies as st

import nemon


def sensitivity(model, u, v):
    with torch.no_grad():
        return float((model(u) - model(v)).abs().amax(dim=1).max() / (u - v).abs().max())


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    gamma=st.floats(-1.0, 0.95),
    weighted=st.booleans(),
    scale=st.floats(0.1, 3.0),
    radius=st.floats(1e-4, 1.0),
)
def test_lipschitz_bound_dominates_sensitivity_on_random_pairs(
    seed, gamma, weighted, scale, radius
):
    model = make_model(seed=seed, gamma=gamma, weighted=weighted, scale=scale, tol=1e-13)
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(32, 12, generator=g, dtype=torch.float64)
    v = (u + radius * (2 * torch.rand(32, 12, generator=g, dtype=torch.float64) - 1)).clamp(0, 1)
    per_pair = []
    with torch.no_grad():
        dy = (model(u) - model(v)).abs().amax(dim=1)
        per_pair = dy / (u - v).abs().amax(dim=1)
    assert float(per_pair.max()) <= float(model.lipschitz_bound().detach()) * (1 + 1e-9)


def test_lipschitz_bound_dominates_sensitivity_found_by_gradient_ascent():
    for seed in range(3):
        model = make_model(seed=seed, gamma=0.9, scale=2.0, tol=1e-13)
        bound = float(model.lipschitz_bound().detach())
        u = torch.rand(8, 12, dtype=torch.float64)
        delta = (1e-2 * torch.randn(8, 12, dtype=torch.float64)).requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=1e-2)
        best = 0.0
        for _ in range(150):
            v = (u + delta).clamp(0, 1)  # pixels
            dy = (model(v) - model(u)).abs().amax(dim=1)
            ratio = dy / (v - u).abs().amax(dim=1).clamp(min=1e-12)
            best = max(best, float(ratio.detach().max()))
            opt.zero_grad()
            (-ratio.sum()).backward()
            opt.step()
        assert 0 < best <= bound * (1 + 1e-9)


def test_lipschitz_bound_matches_math_5_and_is_in_pixel_units():
    model = make_model(input_mean=0.3, input_std=0.2)
    eta = model.eta.detach()
    B_pix = model.B.detach() / 0.2
    mu = float(nemon.mu_inf(model.A.detach(), eta))
    expected = (
        float((model.C.detach() / eta).abs().sum(1).max())
        * float((eta[:, None] * B_pix).abs().sum(1).max())
        / (1 - max(mu, 0.0))
    )
    assert float(model.lipschitz_bound().detach()) == pytest.approx(expected, rel=1e-12)
    # differentiable: lambda * Lip is a training regulariser
    model.lipschitz_bound().backward()
    assert model.T.grad is not None and model.B.grad is not None


def test_input_normalisation_is_folded_into_the_first_affine_map():
    model = make_model(input_mean=0.5, input_std=0.25)
    u = torch.rand(4, 12, dtype=torch.float64)
    B_eff, b_eff = model.input_map()
    torch.testing.assert_close(
        u @ B_eff.T + b_eff, ((u - 0.5) / 0.25) @ model.B.T + model.b, rtol=1e-12, atol=1e-12
    )


def test_inversion_attack_endpoints_and_size():
    u = torch.rand(5, 7)
    torch.testing.assert_close(nemon.inversion_attack(u, 0.0), u)
    torch.testing.assert_close(nemon.inversion_attack(u, 1.0), 1 - u)
    for eps in (0.1, 0.37):
        delta = nemon.inversion_attack(u, eps) - u
        assert float(delta.abs().max()) <= eps + 1e-7
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(nemon.ConfigurationError, match="eps"):
            nemon.inversion_attack(u, bad)


def trained_toy_model(seed=0):
    """A model trained a few steps on a separable toy problem, so certificates are non-trivial."""
    torch.manual_seed(seed)
    m = nemon.NEMON(12, 8, 3, gamma=0.3, tol=1e-12, max_iter=3000).double()
    centers = torch.rand(3, 12, dtype=torch.float64)
    labels = torch.arange(3).repeat(40)
    u = (centers[labels] + 0.05 * torch.randn(120, 12, dtype=torch.float64)).clamp(0, 1)
    opt = torch.optim.Adam(m.parameters(), lr=3e-2)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(m(u), labels) + 1e-3 * m.lipschitz_bound()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m, u, labels


def test_certified_accuracy_never_exceeds_attacked_accuracy():
    import torchattacks

    model, u, labels = trained_toy_model()
    radius = nemon.certified_radius(model, u, labels)
    with torch.no_grad():
        pred = model(u).argmax(1)
    assert (radius[pred != labels] == 0).all()
    assert (radius > 0).any(), "toy model should certify something"
    for eps in (0.0, 0.01, 0.05, 0.1, 0.3, 1.0):
        cert = nemon.certified_accuracy(model, u, labels, eps)
        with torch.no_grad():
            inv = float((model(nemon.inversion_attack(u, eps)).argmax(1) == labels).double().mean())
        assert cert <= inv
        if eps > 0:
            # a stronger, gradient-based l_inf attack must not beat the certificate either
            pgd = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True)
            adv = pgd(u.float(), labels).double()
            with torch.no_grad():
                acc = float((model(adv).argmax(1) == labels).double().mean())
            assert cert <= acc


def test_per_class_radius_beats_crude_margin_over_two_lipschitz():
    model, u, labels = trained_toy_model()
    radius = nemon.certified_radius(model, u, labels)
    with torch.no_grad():
        y = model(u)
    top2 = y.topk(2, dim=1).values
    crude = (top2[:, 0] - top2[:, 1]) / (2 * model.lipschitz_bound().detach())
    correct = y.argmax(1) == labels
    assert (radius[correct] >= crude[correct] * (1 - 1e-9)).all()


def test_certified_radius_is_truly_certified_at_the_radius():
    model, u, labels = trained_toy_model()
    radius = nemon.certified_radius(model, u, labels)
    keep = radius > 0
    u, labels, radius = u[keep], labels[keep], radius[keep]
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        sign = torch.randint(0, 2, u.shape, generator=g).double() * 2 - 1
        with torch.no_grad():
            pred = model((u + 0.999 * radius[:, None] * sign).clamp(0, 1)).argmax(1)
        assert (pred == labels).all()
