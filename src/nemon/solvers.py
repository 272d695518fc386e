"""Fixed-point solvers for ``x = F(x)`` with a known contraction factor (MATH 3).

A solver sees only two things: the undamped map ``F`` (a callable on a
``(batch, n)`` tensor) and the averaging step ``alpha``. It iterates the
averaged map ``G(x) = (1 - alpha) x + alpha F(x)``, which is a contraction
with factor ``rho`` when ``alpha <= alpha*``. The same solvers serve the
forward equilibrium ``x = Phi(A x + B u + b)`` and the adjoint
``w = g + A^T J w`` of MATH 4.

Every solve returns its result and a :class:`SolverStats` record. ``tol``
is the relative step ``||x_{k+1} - x_k|| / ||x_{k+1}||`` over the whole
batch (Frobenius norms), the criterion of the paper's code and of torchdeq's
``rel`` mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .errors import ConfigurationError

StepMap = Callable[[Tensor], Tensor]
ErrNorm = Callable[[Tensor], Tensor]

# Guards the relative step against an all-zero iterate (x* = 0 is legitimate).
_TINY = 1e-12


@dataclass
class SolverStats:
    """What one fixed-point solve did.

    ``error_bound`` is the a-posteriori bound of MATH 3,
    ``rho / (1 - rho) * ||x_k - x_{k-1}||`` (maximum over the batch, in the
    norm the solve contracts in); it is ``inf`` when no contraction is known
    (``rho >= 1``, e.g. Picard) or the iteration blew up.
    """

    solver: str
    iterations: int
    residual: float
    converged: bool
    alpha: float
    rho: float
    error_bound: float

    def as_dict(self) -> dict:
        return asdict(self)


def _rel_step(step: Tensor, x: Tensor) -> float:
    # Both squared norms as dot products, read back with a single device sync.
    s, v = step.reshape(-1), x.reshape(-1)
    ss, xx = torch.stack((torch.dot(s, s), torch.dot(v, v))).tolist()
    if math.isfinite(ss) and math.isfinite(xx):
        return math.sqrt(ss) / (math.sqrt(xx) + _TINY)
    # squares overflowed (huge iterates, e.g. a diverging Picard run): rescaled norms
    return float(torch.linalg.vector_norm(s) / (torch.linalg.vector_norm(v) + _TINY))


def _bound(rho: float, last_step: Tensor, err_norm: ErrNorm) -> float:
    if not (rho < 1.0) or not bool(torch.isfinite(last_step).all()):
        return math.inf
    if last_step.numel() == 0:
        return 0.0
    return float(rho / (1.0 - rho) * err_norm(last_step).max())


def averaged_iteration(
    F: StepMap,
    x0: Tensor,
    *,
    alpha: float,
    rho: float,
    tol: float,
    max_iter: int,
    err_norm: ErrNorm,
    name: str = "average",
) -> tuple[Tensor, SolverStats]:
    """``x_{k+1} = x_k + alpha (F(x_k) - x_k)`` until the relative step is below ``tol``."""
    x = x0.clone()
    r = torch.zeros_like(x)
    res = math.inf
    k = 0
    for k in range(1, max_iter + 1):  # noqa: B007 (k is reported after the loop)
        r = F(x).sub_(x)
        x.add_(r, alpha=alpha)
        res = alpha * _rel_step(r, x)
        if res <= tol or not math.isfinite(res):
            break
    converged = res <= tol
    stats = SolverStats(name, k, res, converged, alpha, rho, _bound(rho, r.mul_(alpha), err_norm))
    return x, stats


def picard(F: StepMap, x0: Tensor, *, alpha: float, rho: float, **kw) -> tuple[Tensor, SolverStats]:
    """Plain fixed-point iteration (``alpha = 1``): no convergence guarantee.

    The contraction factor of ``F`` itself is not known, so ``rho`` is reported
    as ``inf`` and so is the error bound.
    """
    return averaged_iteration(F, x0, alpha=1.0, rho=math.inf, name="picard", **kw)


def anderson(
    F: StepMap,
    x0: Tensor,
    *,
    alpha: float,
    rho: float,
    tol: float,
    max_iter: int,
    err_norm: ErrNorm,
    memory: int = 5,
    ridge: float = 1e-4,
    max_coef: float = 1e3,
    per_sample: bool = False,
) -> tuple[Tensor, SolverStats]:
    """Anderson acceleration of the averaged map ``G`` (type II).

    The last ``memory`` iterates are mixed with coefficients from a small
    regularised least-squares problem: one for the whole batch by default (the
    stopping rule is batch-wide too), or one per sample with ``per_sample=True``,
    which costs a small linear solve per sample and iteration (on a CPU that
    solve loop, not the matrix products, then dominates). Where the problem is
    ill-conditioned (a singular system, non-finite coefficients, or coefficients
    larger than ``max_coef`` in absolute sum, a sign of near-collinear
    residuals) the step falls back to the plain averaged one, which always
    contracts. The returned point is ``G(x)`` of the last iterate, so the
    a-posteriori bound of MATH 3 applies.
    """
    shape = x0.shape
    bsz = x0.shape[0] if per_sample else 1
    x0 = x0.reshape(bsz, -1)
    d = x0.shape[1]

    def G(x: Tensor) -> Tensor:
        x = x.reshape(shape)
        return torch.lerp(x, F(x), alpha).reshape(bsz, -1)

    m = memory
    X = x0.new_zeros(bsz, m, d)  # iterates x_i
    GX = x0.new_zeros(bsz, m, d)  # G(x_i)
    R = x0.new_zeros(bsz, m, d)  # residuals G(x_i) - x_i
    gram = x0.new_zeros(bsz, m, m)  # <r_i, r_j>, updated one row and column per iteration

    def record(slot: int, x: Tensor) -> float:
        X[:, slot] = x
        GX[:, slot] = G(x)
        torch.sub(GX[:, slot], x, out=R[:, slot])
        row = torch.bmm(R, R[:, slot, :, None])[:, :, 0]
        gram[:, slot, :] = row
        gram[:, :, slot] = row
        return _rel_step(R[:, slot], GX[:, slot])

    res = record(0, x0)
    k, last = 1, 0
    ones = x0.new_ones(bsz, m, 1)
    eye = torch.eye(m, dtype=x0.dtype, device=x0.device)
    tiny = torch.finfo(x0.dtype).tiny
    while res > tol and k < max_iter and math.isfinite(res):
        n = min(k, m)
        Gn = gram[:, :n, :n]
        # min ||sum_i c_i r_i|| s.t. sum_i c_i = 1: c = z / sum(z) with (Gram + ridge) z = 1.
        # The ridge is relative to the residuals' size: an absolute one would swamp tiny
        # late residuals and degrade the step to a plain average of iterates.
        scale = torch.diagonal(Gn, dim1=1, dim2=2).mean(dim=1).clamp(min=tiny)
        # solve_ex: a singular system marks its sample (info > 0) instead of raising
        z, info = torch.linalg.solve_ex(
            Gn + (ridge * scale)[:, None, None] * eye[:n, :n], ones[:, :n]
        )
        coef = z[:, :, 0] / z[:, :, 0].sum(dim=1, keepdim=True)
        bad = (info > 0) | ~torch.isfinite(coef).all(dim=1) | (coef.abs().sum(dim=1) > max_coef)
        coef = torch.where(bad[:, None], torch.zeros_like(coef), coef)  # keep NaN out of bmm
        mixed = torch.bmm(coef[:, None], GX[:, :n])[:, 0]
        mixed = torch.where(bad[:, None], GX[:, last], mixed)
        last = k % m
        res = record(last, mixed)
        k += 1
    step = (GX[:, last] - X[:, last]).reshape(shape)
    stats = SolverStats("anderson", k, res, res <= tol, alpha, rho, _bound(rho, step, err_norm))
    return GX[:, last].reshape(shape).clone(), stats


SOLVERS: dict[str, Callable[..., tuple[Tensor, SolverStats]]] = {
    "average": averaged_iteration,
    "anderson": anderson,
    "picard": picard,
}


def get_solver(name: str) -> Callable[..., tuple[Tensor, SolverStats]]:
    """Look a solver up by name; unknown names are an error listing the known ones."""
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}"
        ) from None
