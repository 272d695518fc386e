"""Models, data and spies shared by the attack tests (test_attacks, test_warm_start, ...)."""

from __future__ import annotations

import functools

import torch
from conftest import make_model

import nemon
import nemon.core
from nemon import attacks

SIDE = 4  # toy images are 1 x 4 x 4: small, and still square for the Square attack
M = SIDE * SIDE
CLASSES = 4


def toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four classes of 4x4 images: fixed prototypes plus pixel noise, clipped to [0, 1]."""
    protos = torch.rand(
        CLASSES, M, generator=torch.Generator().manual_seed(1234), dtype=torch.float64
    )
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat(n // CLASSES + 1)[:n]
    x = (protos[labels] + 0.25 * torch.randn(n, M, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, labels


@functools.cache
def _trained_state() -> dict:
    torch.manual_seed(0)
    model = nemon.NEMON(M, 16, CLASSES, gamma=0.5, tol=1e-6, max_iter=500).double()
    x, y = toy_data(200, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def trained_model(tol: float = 1e-2, max_iter: int = 300, stop: str = "step") -> nemon.NEMON:
    """A float64 NEMON trained on toy_data (cached weights), with a loose training tolerance."""
    model = nemon.NEMON(M, 16, CLASSES, gamma=0.5, tol=tol, max_iter=max_iter, stop=stop)
    model = model.double()
    model.load_state_dict(_trained_state())
    return model


def sensitive_model(seed: int, **kw) -> nemon.NEMON:
    """A random float64 NEMON on 4x4 inputs whose decisions move at small eps."""
    model = make_model(seed=seed, m=M, n=8, k=CLASSES, scale=1.5, **kw)
    with torch.no_grad():
        model.B.mul_(8.0)
        model.C.mul_(4.0)
    return model


class SolverSpy:
    """Records the tol/max_iter of every fixed-point solve NEMON runs (forward and adjoint).

    Installed over ``nemon.core.solve_members``, the averaged iteration every
    NEMON solve with ``solver="average"`` goes through; ``fail_after``: raise
    RuntimeError on that call (to test restoration on error).
    """

    def __init__(self, monkeypatch, fail_after: int | None = None) -> None:
        self.calls: list[tuple[float, int]] = []
        self.stops: list[str] = []
        self.fail_after = fail_after
        self._solve = nemon.core.solve_members
        monkeypatch.setattr(nemon.core, "solve_members", self)

    def __call__(self, make_F, x0, *, tol, max_iter, **kw):
        self.calls.append((tol, max_iter))
        self.stops.append(kw.get("stop", "step"))
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("spy: planned failure")
        return self._solve(make_F, x0, tol=tol, max_iter=max_iter, **kw)


class ForwardSpy:
    """Records, for every forward of ``model``, ``(tol, warm starts on, error bounds on)``."""

    def __init__(self, model, monkeypatch):
        self.calls = []
        forward = model.forward

        def spy(u):
            settings = model.settings
            self.calls.append((model.tol, settings.warm_start, settings.error_bounds))
            return forward(u)

        monkeypatch.setattr(model, "forward", spy)


# the tolerances of the attack tests: the attack at 1e-6, the clean and final checks at 1e-9
ATTACK_KW = dict(seed=0, tol=1e-6, max_iter=2000, eval_tol=1e-9, eval_max_iter=3000)


def small_attack(name, model, u, labels, *, steps, restarts=2, n_queries=60, **kw):
    """PGD (``steps``, ``restarts``) or AutoAttack (``steps``, ``n_queries``) at eps 0.1."""
    kw = {**ATTACK_KW, **kw}
    if name == "pgd":
        return attacks.pgd(model, u, labels, 0.1, steps=steps, restarts=restarts, **kw)
    return attacks.autoattack(model, u, labels, 0.1, steps=steps, n_queries=n_queries, **kw)
