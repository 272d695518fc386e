"""The fast path (ModelStack, one flat parameter, hand-written gradients) equals the reference.

The reference is the per-model path: nemon.NEMON / nemon.MLP with autograd through the
parametrisation and the implicit layer of MATH 4 (itself checked by gradcheck and against an
unrolled iteration in test_gradients.py).
"""

import pytest
import torch
from conftest import make_model
from torch.autograd import gradcheck

import nemon
from nemon.stack import ModelStack
from nemon.training import _ce


def members(kind, K=3, m=12, n=8, k=4, solver="average"):
    out = []
    for i in range(K):
        if kind == "mlp":
            torch.manual_seed(i)
            out.append(nemon.MLP(m, n, k, input_mean=0.3, input_std=0.2).double())
        else:
            mod = make_model(
                seed=i,
                m=m,
                n=n,
                k=k,
                gamma=[0.0, 0.5, 0.9][i % 3],
                weighted=kind == "nemon",
                scale=1.5,
                tol=1e-13,
                max_iter=20000,
                input_mean=0.3,
                input_std=0.2,
                solver=solver,
            )
            out.append(mod)
    return out


@pytest.mark.parametrize(
    ("kind", "solver"),
    [
        ("nemon", "average"),
        ("nemon-unweighted", "average"),
        ("mlp", "average"),
        ("nemon", "anderson"),
        ("nemon", "jacobi"),
        ("nemon-unweighted", "jacobi"),
    ],
)
def test_stack_loss_and_gradients_equal_each_member_alone(kind, solver):
    models = members(kind, solver=solver)
    stack = ModelStack(models)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(10, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (10,), generator=g)
    lam = torch.tensor([0.0, 0.1, 1.0], dtype=torch.float64)
    loss = _ce(stack.logits(stack.normalise(u)), y) + lam * stack.lipschitz_bound()
    loss.sum().backward()
    grads = stack._views(stack.flat.grad)
    for i, m in enumerate(models):
        ref = torch.nn.functional.cross_entropy(m(u), y) + lam[i] * m.lipschitz_bound()
        assert float(loss[i].detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
        ref_grads = torch.autograd.grad(ref, list(m.parameters()))
        for (name, _), gr in zip(m.named_parameters(), ref_grads, strict=True):
            torch.testing.assert_close(grads[name][i], gr, rtol=1e-8, atol=1e-10, msg=name)


def test_stack_step_passes_gradcheck_in_float64():
    stack = ModelStack(members("nemon", K=2, m=5, n=4, k=3))
    u_n = torch.rand(3, 5, dtype=torch.float64)
    flat = stack.flat.detach().clone().requires_grad_(True)

    def f(flat):
        return nemon.stack.StackStep.apply(flat, u_n, stack)

    assert gradcheck(f, (flat,), eps=1e-6, atol=1e-7, rtol=1e-5)

    def lip(flat):
        return nemon.stack.StackLipschitz.apply(flat, stack)

    assert gradcheck(lip, (flat,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("kind", ["nemon", "mlp"])
def test_stack_worst_case_logits_equal_each_member_alone(kind):
    models = members(kind, K=2)
    stack = ModelStack(models)
    u = torch.rand(6, 12, dtype=torch.float64)
    y = torch.randint(0, 4, (6,))
    eps = torch.tensor([0.05, 0.1], dtype=torch.float64)[:, None, None]
    lo = stack.normalise((u - eps).clamp(0, 1))
    hi = stack.normalise((u + eps).clamp(0, 1))
    z = stack.worst_case_logits(lo, hi, y)
    z.sum().backward()
    grads = stack._views(stack.flat.grad)
    for i, m in enumerate(models):
        alone = ModelStack([m])
        e = float(eps[i])
        zi = alone.worst_case_logits(
            alone.normalise((u - e).clamp(0, 1)), alone.normalise((u + e).clamp(0, 1)), y
        )
        torch.testing.assert_close(z[i], zi[0], rtol=1e-10, atol=1e-10)
        # against the NEMON/MLP path (margins of robustness.interval_margins before rounding)
        x_lo, x_hi, _ = m.embedded_equilibrium((u - e).clamp(0, 1), (u + e).clamp(0, 1))
        ref = nemon.core.worst_case_logits(m.C[None], m.c[None], x_lo[None], x_hi[None], y)[0]
        torch.testing.assert_close(zi[0], ref, rtol=1e-9, atol=1e-9)
        ref_grads = torch.autograd.grad(ref.sum(), list(m.parameters()))
        for (name, _), gr in zip(m.named_parameters(), ref_grads, strict=True):
            torch.testing.assert_close(grads[name][i], gr, rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.parametrize("solver", ["average", "anderson", "jacobi"])
def test_members_round_trip_and_solves_stop_per_member(solver):
    models = members("nemon", solver=solver)
    stack = ModelStack(models)
    for i, m in enumerate(models):
        back = stack.member(i)
        for (name, p), (_, q) in zip(m.named_parameters(), back.named_parameters(), strict=True):
            assert torch.equal(p, q), name
    u = torch.rand(5, 12, dtype=torch.float64)
    stack.logits(stack.normalise(u))
    its = [r.iterations for r in stack.last_forward.members]
    alone = []
    for m in models:
        m(u)
        alone.append(m.last_forward_stats.iterations)
    assert its == alone  # each member stops by its own rule
    assert len(set(its)) > 1  # gamma 0, 0.5, 0.9 need different counts


def test_stacking_incompatible_members_is_an_error():
    a = nemon.NEMON(4, 3, 2, gamma=0.5)
    with pytest.raises(nemon.ConfigurationError, match="tol"):
        ModelStack([a, nemon.NEMON(4, 3, 2, gamma=0.5, tol=1e-3)])
    with pytest.raises(nemon.ConfigurationError, match="one kind"):
        ModelStack([a, nemon.MLP(4, 3, 2)])
    with pytest.raises(nemon.ConfigurationError, match="input_std"):
        ModelStack([a, nemon.NEMON(4, 3, 2, gamma=0.5, input_std=0.5)])
