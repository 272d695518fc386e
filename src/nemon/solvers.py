"""Fixed-point solvers for ``x = F(x)`` with a known contraction factor (MATH 3, 12).

A solver sees the undamped map ``F`` and the averaging step ``alpha``; it
iterates ``G(x) = (1 - alpha) x + alpha F(x)``, a contraction with factor
``rho`` when ``alpha <= alpha*``. The same solvers serve the forward
equilibrium ``x = Phi(A x + B u + b)``, the adjoint ``w = g + A^T J w`` of
MATH 4 and the interval embedding of MATH 9.

Two stopping rules (MATH 12), both on the relative step of the averaged
update over the whole batch, ``s_k = ||x_{k+1} - x_k|| / ||x_{k+1}||``
(Frobenius norms):

* ``"step"``: stop when ``s_k <= tol``, the rule of the paper's code and of
  torchdeq's ``rel`` mode;
* ``"bound"``: stop when ``rho / (1 - rho) * s_k <= tol``, i.e. when the
  a-posteriori error bound relative to the iterate is below ``tol``; this
  keeps the relative error of the equilibrium (and, for the adjoint, of the
  gradient) below ``tol`` whatever ``gamma`` is.

:func:`solve_members` solves ``K`` independent systems (the members of a
:class:`~nemon.stack.ModelStack`, or ``K = 1``) in lockstep with batched
products; each member stops by its own rule, so its iteration count is the one
it would have alone. Every solve reports per member what it did
(:class:`MemberSolve`); the models turn that into :class:`SolverStats`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .errors import ConfigurationError

# F(x) for the active members: built by a factory from the active members' indices
# (None: all members), so that operands are gathered once per change of the active set.
StepMap = Callable[[Tensor], Tensor]
StepFactory = Callable[[Tensor | None], StepMap]
ErrNorm = Callable[[Tensor], Tensor]

STOP_RULES = ("step", "bound")

# Guards the relative step against an all-zero iterate (x* = 0 is legitimate).
_TINY = 1e-12


@dataclass
class SolverStats:
    """What one fixed-point solve did (one model, one batch).

    ``error_bound`` is the a-posteriori bound of MATH 3 with the rounding term
    of MATH 12, ``(rho ||x_k - x_{k-1}|| + e) / (1 - rho)``, maximised over the
    batch, in the norm the solve contracts in; ``inf`` when no contraction is
    known (``rho >= 1``, e.g. Picard) or the iteration blew up, ``nan`` where a
    fast path did not compute it.
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


@dataclass
class MemberSolve:
    """One member's share of :func:`solve_members` (the solver's raw record)."""

    iterations: int
    residual: float  # the last relative step s_k (before the stop-rule factor)
    converged: bool


def stop_factor(stop: str, rho: float) -> float:
    """``c`` in the rule ``c * s_k <= tol``: 1 (``"step"``) or ``rho / (1 - rho)`` (``"bound"``)."""
    if stop == "step":
        return 1.0
    if stop == "bound":
        if not rho < 1.0:
            return math.inf  # no contraction known: the bound rule can never be met
        return rho / (1.0 - rho)
    raise ConfigurationError(f"unknown stopping rule {stop!r}; choose one of {list(STOP_RULES)}")


def solve_members(
    make_F: StepFactory,
    x0: Tensor,
    *,
    alpha: Sequence[float],
    rho: Sequence[float],
    tol: float,
    max_iter: int,
    stop: str = "step",
) -> tuple[Tensor, list[MemberSolve], Tensor]:
    """Averaged iteration on ``K`` independent systems ``x0`` of shape ``(K, N, n)``.

    Member ``k`` iterates ``x <- lerp(x, F(x), alpha_k)`` until its own stop rule
    holds or ``max_iter``; finished members leave the batch. Returns the
    solutions, one :class:`MemberSolve` per member, and the last averaged update
    of each member (for the a-posteriori error bound). The relative step is
    measured over the member's whole batch (Frobenius norms): a surrogate of the
    per-sample weighted bound of MATH 12, which the statistics report exactly.
    """
    factors = [stop_factor(stop, r) for r in rho]
    return _iterate(make_F, x0, list(alpha), factors, tol, max_iter)


def _iterate(
    make_F: StepFactory,
    x0: Tensor,
    alpha: list[float],
    factors: list[float],
    tol: float,
    max_iter: int,
) -> tuple[Tensor, list[MemberSolve], Tensor]:
    K = x0.shape[0]
    w = torch.tensor(alpha, dtype=x0.dtype, device=x0.device)[:, None, None]
    if K == 1:
        return _iterate_one(make_F(None), x0, w, alpha[0], factors[0], tol, max_iter)
    out = torch.empty_like(x0)
    last = torch.empty_like(x0)
    records: list[MemberSolve | None] = [None] * K
    active = list(range(K))
    x = x0
    # ||x_{k+1}|| <= ||x_k|| + ||step||: an upper bound that spares computing ||x|| until
    # the step is small enough for the stop rule to possibly hold (MATH 12).
    x_up = torch.linalg.vector_norm(x0.flatten(1), dim=1).tolist()
    F = make_F(None)
    for k in range(1, max_iter + 1):
        fx = F(x)
        steps = torch.linalg.vector_norm((fx - x).flatten(1), dim=1).tolist()
        x_new = torch.lerp(x, fx, w)
        check = []
        for j, m in enumerate(active):
            s = alpha[m] * steps[j]
            x_up[m] += s
            if not math.isfinite(s) or s * factors[m] <= tol * x_up[m] or k == max_iter:
                check.append(j)
        done = []
        if check:
            sub = x_new if len(check) == len(active) else x_new[check]
            norms = torch.linalg.vector_norm(sub.flatten(1), dim=1).tolist()
            for j, xn in zip(check, norms, strict=True):
                m = active[j]
                x_up[m] = xn
                res = _residual(alpha[m] * steps[j], xn)
                if res * factors[m] <= tol or not math.isfinite(res) or k == max_iter:
                    records[m] = MemberSolve(k, res, res * factors[m] <= tol)
                    done.append(j)
        if done:
            if len(done) == len(active):  # the last members finish together
                out[active] = x_new
                last[active] = x_new - x
                break
            idx = torch.tensor([active[j] for j in done], device=x0.device)
            sel = torch.tensor(done, device=x0.device)
            out[idx] = x_new[sel]
            last[idx] = x_new[sel] - x[sel]
            gone = set(done)
            keep = [j for j in range(len(active)) if j not in gone]
            active = [active[j] for j in keep]
            kt = torch.tensor(keep, device=x0.device)
            x_new = x_new[kt]
            w = w[kt]
            F = make_F(torch.tensor(active, device=x0.device))
        x = x_new
    return out, [r for r in records if r is not None], last


def _iterate_one(
    F: StepMap, x0: Tensor, w: Tensor, alpha: float, factor: float, tol: float, max_iter: int
) -> tuple[Tensor, list[MemberSolve], Tensor]:
    """:func:`_iterate` for one member: the same tensor operations, less Python."""
    x = x_prev = x0
    x_up = float(torch.linalg.vector_norm(x0))
    res = math.inf
    k = 0
    for k in range(1, max_iter + 1):  # noqa: B007 (k is reported after the loop)
        fx = F(x)
        s = alpha * torch.linalg.vector_norm((fx - x).flatten(1), dim=1).item()
        x_prev, x = x, torch.lerp(x, fx, w)
        x_up += s
        if not math.isfinite(s) or s * factor <= tol * x_up or k == max_iter:
            xn = torch.linalg.vector_norm(x.flatten(1), dim=1).item()
            x_up = xn
            res = _residual(s, xn)
            if res * factor <= tol or not math.isfinite(res) or k == max_iter:
                break
    return x, [MemberSolve(k, res, res * factor <= tol)], x - x_prev


def _residual(step: float, norm: float) -> float:
    """The relative step ``step / ||x||``; NaN or inf when either is not finite."""
    if math.isfinite(step) and math.isfinite(norm):
        return step / (norm + _TINY)
    return math.nan if math.isnan(step) or math.isnan(norm) else math.inf


def _rel(alpha: float, ss: float, xx: float) -> float:
    if math.isfinite(ss) and math.isfinite(xx):
        return alpha * math.sqrt(ss) / (math.sqrt(xx) + _TINY)
    return math.inf if not math.isnan(ss) else math.nan


def _average_one(
    F: StepMap, x0: Tensor, alpha: float, factor: float, tol: float, max_iter: int
) -> tuple[Tensor, MemberSolve, Tensor]:
    """One system ``(N, n)``: :func:`solve_members` with ``K = 1``."""
    x, recs, last = _iterate(
        lambda members: lambda x: F(x[0])[None], x0[None], [alpha], [factor], tol, max_iter
    )
    return x[0], recs[0], last[0]


def error_bound(rho: float, last_update: Tensor, err_norm: ErrNorm, rounding: Tensor | float = 0.0):
    """Per-sample bound ``(rho ||last_update|| + rounding) / (1 - rho)`` (MATH 3, 12).

    ``last_update`` is ``(N, n)``; ``err_norm`` maps it to per-sample norms in the
    norm the iteration contracts in; ``rounding`` bounds the floating-point error
    of one step in that norm (per sample or a scalar). ``inf`` when ``rho >= 1``
    or anything is not finite.
    """
    n = err_norm(last_update)
    if not rho < 1.0:
        return torch.full_like(n, math.inf)
    b = (rho * n + rounding) / (1.0 - rho)
    return torch.where(torch.isfinite(b), b, torch.full_like(b, math.inf))


# --- the single-system solvers of the public API ----------------------------------------
def averaged_iteration(
    F: StepMap,
    x0: Tensor,
    *,
    alpha: float,
    rho: float,
    tol: float,
    max_iter: int,
    err_norm: ErrNorm,
    stop: str = "step",
    name: str = "average",
) -> tuple[Tensor, SolverStats]:
    """``x_{k+1} = x_k + alpha (F(x_k) - x_k)`` on one system ``x0`` of shape ``(N, n)``.

    The error bound of the returned stats has no rounding term (the map is
    opaque here); the models add it (MATH 12).
    """
    x, rec, last = _average_one(F, x0, alpha, stop_factor(stop, rho), tol, max_iter)
    eb = error_bound(rho, last, err_norm)
    bound = float(eb.max()) if eb.numel() else 0.0
    return x, SolverStats(name, rec.iterations, rec.residual, rec.converged, alpha, rho, bound)


def picard(F: StepMap, x0: Tensor, *, alpha: float, rho: float, **kw) -> tuple[Tensor, SolverStats]:
    """Plain fixed-point iteration (``alpha = 1``): no convergence guarantee.

    The contraction factor of ``F`` itself is not known, so ``rho`` is reported
    as ``inf`` and so is the error bound.
    """
    if kw.get("stop", "step") == "bound":
        raise ConfigurationError(
            "solver 'picard' has no known contraction factor, so the stopping rule 'bound' "
            "can never be met; use stop='step' or solver='average'"
        )
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
    stop: str = "step",
    memory: int = 5,
    ridge: float = 1e-4,
    max_coef: float = 1e3,
    per_sample: bool = False,
) -> tuple[Tensor, SolverStats]:
    """Anderson acceleration of the averaged map ``G`` (type II), on one system ``(N, n)``.

    The last ``memory`` iterates are mixed with coefficients from a small
    regularised least-squares problem: one for the whole batch by default (the
    stopping rule is batch-wide too), or one per sample with ``per_sample=True``,
    which costs a small linear solve per sample and iteration. Where the problem
    is ill-conditioned (a singular system, non-finite coefficients, or
    coefficients larger than ``max_coef`` in absolute sum, a sign of
    near-collinear residuals) the step falls back to the plain averaged one,
    which always contracts. The returned point is ``G(x)`` of the last iterate,
    so the a-posteriori bound of MATH 3 applies.
    """
    factor = stop_factor(stop, rho)
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
        r, g = R[:, slot].reshape(-1), GX[:, slot].reshape(-1)
        ss, xx = torch.stack((torch.dot(r, r), torch.dot(g, g))).tolist()
        return _rel(1.0, ss, xx)

    res = record(0, x0)
    k, last = 1, 0
    ones = x0.new_ones(bsz, m, 1)
    eye = torch.eye(m, dtype=x0.dtype, device=x0.device)
    tiny = torch.finfo(x0.dtype).tiny
    while res * factor > tol and k < max_iter and math.isfinite(res):
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
    eb = error_bound(rho, step, err_norm)
    bound = float(eb.max()) if eb.numel() else 0.0
    stats = SolverStats("anderson", k, res, res * factor <= tol, alpha, rho, bound)
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
