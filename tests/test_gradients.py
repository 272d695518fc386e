"""MATH 4: the implicit backward is exact, for every parameter and for the input."""

import torch
from conftest import make_model
from torch.autograd import gradcheck

import nemon


def test_gradcheck_all_parameters_and_input_float64():
    model = make_model(m=5, n=4, k=3, tol=1e-14, max_iter=10000)
    u = torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
    names = ["T", "d", "B", "b", "C", "c"]
    params = [getattr(model, p) for p in names]

    def fn(u, T, d, B, b, C, c):
        return torch.func.functional_call(
            model, {"T": T, "d": d, "B": B, "b": b, "C": C, "c": c}, (u,)
        )

    inputs = [u] + [p.detach().clone().requires_grad_(True) for p in params]
    assert gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def unrolled_output(model, u, iters):
    """Forward by autograd through a long unrolled averaged iteration (the reference)."""
    A = model.A
    B_eff, b_eff = model.input_map()
    inj = u @ B_eff.T + b_eff
    alpha = model.alpha_star()
    x = torch.zeros_like(inj)
    for _ in range(iters):
        x = (1 - alpha) * x + alpha * torch.relu(x @ A.T + inj)
    return x @ model.C.T + model.c


def test_implicit_gradients_match_unrolled_autograd():
    model = make_model(m=12, n=8, k=4, tol=1e-14, max_iter=10000)
    u = torch.rand(10, 12, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (10,))
    loss_fn = torch.nn.functional.cross_entropy

    loss = loss_fn(model(u), target) + 0.1 * model.lipschitz_bound()
    implicit = torch.autograd.grad(loss, [u, *model.parameters()])

    loss_ref = loss_fn(unrolled_output(model, u, 600), target) + 0.1 * model.lipschitz_bound()
    reference = torch.autograd.grad(loss_ref, [u, *model.parameters()])
    for g, r in zip(implicit, reference, strict=True):
        torch.testing.assert_close(g, r, atol=1e-9, rtol=1e-7)


def test_backward_stats_are_recorded_and_converged():
    model = make_model(tol=1e-10)
    model(torch.rand(4, 12, dtype=torch.float64)).sum().backward()
    st = model.last_backward_stats
    assert isinstance(st, nemon.SolverStats) and st.converged and st.iterations >= 1


def test_backward_graph_does_not_grow_with_iterations():
    # The autograd graph holds A, x*, J, whatever the iteration count: the same
    # saved-tensor footprint for a loose and a very tight tolerance.
    def saved_bytes(tol):
        model = make_model(tol=tol)
        u = torch.rand(16, 12, dtype=torch.float64)
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = model(u)
        return total, model.last_stats.iterations, y

    loose, it_loose, _ = saved_bytes(1e-2)
    tight, it_tight, _ = saved_bytes(1e-13)
    assert it_tight > 3 * it_loose
    assert tight == loose
