"""The CUDA path (marker ``gpu``): the same computations on CUDA and on the CPU agree.

Skipped where ``torch.cuda.is_available()`` is False. Tolerances: float32 on different
kernels (cuBLAS vs MKL) rounds differently, and fixed-point solves amplify that by at most
1 / (1 - rho); the checks below allow 1e-4 relative on logits and 1e-3 on gradients of one
solve, and compare training by its outcome (one epoch), not bit by bit.
"""

import pytest
import torch

import nemon
from nemon.stack import ModelStack
from nemon.training import Objective, Schedule, stack_accuracy, train_stack

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


def model_pair(gamma=0.5, seed=0, **kw):
    torch.manual_seed(seed)
    cpu = nemon.NEMON(
        784, 100, 10, gamma=gamma, input_mean=0.13, input_std=0.31, tol=1e-6, max_iter=3000, **kw
    )
    with torch.no_grad():
        cpu.T.normal_(0, 0.3 / 10)
        cpu.d.normal_(0, 0.3)
    gpu = nemon.NEMON(
        784, 100, 10, gamma=gamma, input_mean=0.13, input_std=0.31, tol=1e-6, max_iter=3000, **kw
    )
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu.cuda()


def data(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("solver", ["average", "anderson"])
def test_forward_backward_and_input_gradient_agree_with_the_cpu(solver):
    cpu, gpu = model_pair(solver=solver)
    u, y = data(200)
    outs = []
    for m, dev in ((cpu, "cpu"), (gpu, "cuda")):
        uu = u.to(dev).requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(m(uu), y.to(dev)) + 1e-3 * m.lipschitz_bound()
        grads = torch.autograd.grad(loss, [uu, *m.parameters()])
        outs.append((m(u.to(dev)).detach().cpu(), [g.cpu() for g in grads], m.last_forward_stats))
    (y_c, g_c, s_c), (y_g, g_g, s_g) = outs
    torch.testing.assert_close(y_g, y_c, rtol=1e-4, atol=1e-4)
    for a, b in zip(g_g, g_c, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    assert s_g.converged and abs(s_g.iterations - s_c.iterations) <= 3


def test_certificates_agree_with_the_cpu():
    cpu, gpu = model_pair(gamma=0.0)
    u, y = data(300)
    with torch.no_grad():
        y = cpu(u).argmax(1)  # every input correctly classified: certificates decide
    for method in ("lipschitz", "interval"):
        for eps in (0.0, 0.01):
            a = nemon.certified_mask(cpu, u, y, eps, method=method)
            b = nemon.certified_mask(gpu, u.cuda(), y.cuda(), eps, method=method).cpu()
            assert (a != b).float().mean() <= 0.01, (method, eps)


def test_one_training_epoch_of_a_stack_on_cuda_matches_the_cpu_outcome():
    u, y = data(2000)
    ut, yt = data(500, seed=1)
    results = []
    for dev in ("cpu", "cuda"):
        members = []
        for _ in range(2):
            torch.manual_seed(0)
            members.append(
                nemon.NEMON(
                    784, 100, 10, gamma=0.5, input_mean=0.5, input_std=0.29, tol=1e-3, stop="bound"
                )
            )
        stack = ModelStack(members).to(dev)
        res = train_stack(
            stack,
            u,
            y,
            objective=Objective("lipschitz", (0.0, 1e-2)),
            schedule=Schedule(1, 100, 1e-3),
            seed=0,
            progress=False,
        )
        results.append((res.histories, stack_accuracy(stack, ut, yt)))
    (h_c, a_c), (h_g, a_g) = results
    for k in range(2):
        assert h_g[k][0]["not_converged"] == 0
        assert (
            abs(h_g[k][0]["train_loss"] - h_c[k][0]["train_loss"]) <= 0.02 * h_c[k][0]["train_loss"]
        )
        assert abs(a_g[k] - a_c[k]) <= 0.03


def test_interval_training_step_and_pgd_run_on_cuda():
    _, gpu = model_pair(gamma=0.0)
    u, y = data(100)
    stack = ModelStack([gpu])
    lo = stack.normalise((u.cuda() - 0.05).clamp(0, 1))
    hi = stack.normalise((u.cuda() + 0.05).clamp(0, 1))
    z = stack.worst_case_logits(lo, hi, y.cuda())
    torch.nn.functional.cross_entropy(z[0], y.cuda()).backward()
    assert stack.T.grad is not None and torch.isfinite(stack.T.grad).all()
    from nemon.attacks import pgd

    res = pgd(gpu, u.cuda(), y.cuda(), 0.05, steps=10, restarts=1, seed=0, tol=1e-5, max_iter=3000)
    assert res.robust.device.type == "cuda" or res.robust.numel() == 100
