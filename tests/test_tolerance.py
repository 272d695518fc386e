"""MATH 12 measured: the training default (stop='bound', tol 1e-3) gives accurate gradients for
every gamma, where the paper's rule (relative step <= 1e-2) does not.

Briefly trained models (three epochs on 6,000 Fashion-MNIST images, or synthetic data of the
same shape without the Debian package); gradients of CE + lam * Lip with respect to every
parameter and to the input, against a float64 solve at a 1e-13 step. The README's table
("Stopping rule") comes from this measurement.
"""

import copy

import pytest
import torch

import nemon
from benchmarks.datasets import load_bench_data
from nemon.training import train

RULES = [("step", 1e-2), ("bound", 1e-3)]


@pytest.fixture(scope="module")
def data():
    d = load_bench_data("auto", 6100, 10, seed=0)
    return d


def gradient_errors(data, gamma, lam):
    torch.manual_seed(0)
    model = nemon.NEMON(
        784,
        100,
        10,
        gamma=gamma,
        input_mean=data.mean,
        input_std=data.std,
        tol=1e-3,
        stop="bound",
        max_iter=3000,
    )
    train(
        model,
        data.train_x[:6000],
        data.train_y[:6000],
        epochs=3,
        batch_size=100,
        lr=1e-3,
        lam=lam,
        seed=0,
        progress=False,
    )
    u = data.train_x[6000:6100].float() / 255
    y = data.train_y[6000:6100]
    exact = copy.deepcopy(model).double()

    def grads(m, uu):
        uu = uu.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(m(uu), y) + lam * m.lipschitz_bound()
        g = torch.autograd.grad(loss, [uu, *m.parameters()])
        return g[0].double(), torch.cat([t.reshape(-1) for t in g[1:]]).double()

    with exact.solving(tol=1e-13, max_iter=100_000, stop="step"):
        gu0, gp0 = grads(exact, u.double())
    out = {}
    for stop, tol in RULES:
        with model.solving(tol=tol, stop=stop):
            gu, gp = grads(model, u)
        out[stop, tol] = (
            float((gp - gp0).norm() / gp0.norm()),
            float((gu - gu0).norm() / gu0.norm()),
            model.last_forward_stats.rho,
        )
    return out


@pytest.mark.parametrize("gamma", [0.0, 0.9])
def test_the_default_stopping_rule_gives_gradients_within_a_fraction_of_a_percent(data, gamma):
    for lam in (0.0, 0.1):
        errs = gradient_errors(data, gamma, lam)
        param, inputs, rho = errs["bound", 1e-3]
        print(f"gamma {gamma} lam {lam} rho {rho:.3f}: {errs}")
        assert param < 2e-3 and inputs < 2e-3, errs  # measured: <= 1.0e-3 on Fashion-MNIST
    if gamma == 0.9:
        # the paper's rule is several times less accurate where rho is close to 1
        assert errs["step", 1e-2][1] > 5 * errs["bound", 1e-3][1], errs
