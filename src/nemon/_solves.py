"""The instrumented model the attacks and the Lipschitz lower bound run on (MATH 12a).

:class:`Instrumented` is what an attack sees: it flattens and casts the images and counts
every fixed-point solve of the model, converged or not, in a :class:`SolveCounts` record,
so a reader can check that an attack was run as reported. :func:`attack_state` and
:func:`solving_at` set up the model for an attack (eval mode, no weight gradients, a
private RNG, the attack's tolerance on the relative step) and restore it afterwards.

A model is any ``nn.Module`` whose ``model(u)`` takes pixels in ``[0, 1]`` and returns
logits, differentiable in ``u``. Those of the model protocol
(:class:`nemon.protocol.ImplicitModel`: NEMON, MLP, MON) are set up through
:meth:`~nemon.protocol.ImplicitModel.solving` and have their solves counted from their
:class:`SolverStats` records; any other module (e.g. a ``torch.nn.Sequential``) is treated
as having no solver.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import NonConvergenceWarning
from .protocol import ImplicitModel
from .solvers import SolverStats


@dataclass
class SolveCounts:
    """The fixed-point solves behind a stage of an attack, read from the model's records.

    ``max_tol`` is the largest ``model.tol`` in force at any solve, ``max_residual``
    the largest final relative step any solve stopped at; both are NaN when no
    solve was recorded (a model without a solver).
    """

    calls: int = 0
    forward_solves: int = 0
    backward_solves: int = 0
    forward_unconverged: int = 0
    backward_unconverged: int = 0
    max_tol: float = math.nan
    max_residual: float = math.nan
    max_iterations: int = 0
    forward_iterations: int = 0  # summed over the forward solves
    backward_iterations: int = 0

    @property
    def solves(self) -> int:
        return self.forward_solves + self.backward_solves

    @property
    def unconverged(self) -> int:
        return self.forward_unconverged + self.backward_unconverged

    def record(self, stats: SolverStats, tol: float | None, which: str) -> None:
        if which == "forward":
            self.forward_solves += 1
            self.forward_unconverged += not stats.converged
            self.forward_iterations += int(stats.iterations)
        else:
            self.backward_solves += 1
            self.backward_unconverged += not stats.converged
            self.backward_iterations += int(stats.iterations)
        if tol is not None:
            self.max_tol = _nanmax(self.max_tol, float(tol))
        self.max_residual = _nanmax(self.max_residual, float(stats.residual))
        self.max_iterations = max(self.max_iterations, int(stats.iterations))


def _nanmax(a: float, b: float) -> float:
    return b if math.isnan(a) else max(a, b)


class _BackwardProbe(torch.autograd.Function):
    """Identity on the input; its backward runs after the model's backward solve."""

    @staticmethod
    def forward(ctx, u: Tensor, inst: Instrumented) -> Tensor:  # type: ignore[override]
        ctx.inst = inst
        return u.clone()

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        ctx.inst.note_backward()
        return g, None


class Instrumented(nn.Module):
    """What the attack sees: flattens and casts the input, counts every solve of the model.

    torchattacks takes its device from the first parameter of the module it
    attacks; the empty ``anchor`` makes that the model's device even for a
    model without parameters.
    """

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.empty(0, device=device, dtype=dtype), requires_grad=False)
        self.model = model
        self.dtype = dtype
        self.log = SolveCounts()
        # a model of the protocol records its solves; any other module solves nothing
        self.records = isinstance(model, ImplicitModel)
        self._seen_backward = model.last_backward_stats if self.records else None
        # torchattacks puts its module back in training mode after each call when it found it
        # so; the wrapper alone starts in eval mode (the model's modes are attack_state's job)
        self.training = False

    def _tol(self) -> float | None:
        return float(self.model.tol) if self.records else None

    def forward(self, u: Tensor) -> Tensor:
        # Logits come back in the input's dtype: FAB casts images to float32 and then mixes
        # logits and gradients in its projection, which fails on float64 logits.
        in_dtype = u.dtype
        u = u.reshape(u.shape[0], -1).to(self.dtype)
        if u.requires_grad:
            u = _BackwardProbe.apply(u, self)
        before = self.model.last_forward_stats if self.records else None
        y = self.model(u)
        self.log.calls += 1
        after = self.model.last_forward_stats if self.records else None
        if after is not None and after is not before:
            self.log.record(after, self._tol(), "forward")
        return y.to(in_dtype)

    def note_backward(self) -> None:
        stats = self.model.last_backward_stats if self.records else None
        if stats is not None and stats is not self._seen_backward:
            self._seen_backward = stats
            self.log.record(stats, self._tol(), "backward")


def device_dtype(model: nn.Module, u: Tensor) -> tuple[torch.device, torch.dtype]:
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return u.device, u.dtype


def _rng_devices() -> list[int]:
    # torch.manual_seed (which torchattacks calls) reseeds every CUDA device too
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


@contextmanager
def attack_state(model: nn.Module) -> Iterator[None]:
    """Eval mode, no parameter gradients, private RNG; everything restored afterwards.

    Parameters stop requiring gradients so that attacks calling ``.backward()``
    (FAB) leave the model's ``.grad`` alone and no weight gradient is formed.
    NonConvergenceWarning is silenced here because every solve is counted from
    its SolverStats instead; the model's once-per-model warning is left unspent
    (``solving(spend_warnings=False)``), and what depends on the weights alone is
    built once (``solving(frozen=True)``).
    """
    modes = [(m, m.training) for m in model.modules()]
    needs_grad = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in needs_grad:
            p.requires_grad_(False)
        with warnings.catch_warnings(), solving(model, frozen=True, spend_warnings=False):
            warnings.simplefilter("ignore", NonConvergenceWarning)
            with torch.random.fork_rng(devices=_rng_devices()):
                yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in needs_grad:
            p.requires_grad_(flag)


def solving(model: nn.Module, **changes) -> AbstractContextManager:
    """``model.solving(**changes)`` for a model of the protocol; nothing for any other module."""
    return model.solving(**changes) if isinstance(model, ImplicitModel) else nullcontext()


def supports_warm_start(model: nn.Module) -> bool:
    """Whether ``solving(warm_start=True)`` changes where the model's solves start (NEMON)."""
    return isinstance(model, ImplicitModel) and model.supports_warm_start


def solving_at(model: nn.Module, tol: float, max_iter: int, **changes) -> AbstractContextManager:
    """Solve at ``tol`` on the relative step (MATH 12a), whatever rule the model trained with;
    ``changes``: more fields of :class:`nemon.protocol.SolveSettings` to set.

    The error-bound rule asks for steps of ``tol (1 - rho) / rho``: at ``rho`` near 1 and a
    tight ``tol`` that is below what float32 resolves, and the solve stalls at ``max_iter``.
    """
    return solving(model, tol=tol, max_iter=max_iter, stop="step", **changes)
