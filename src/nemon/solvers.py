"""Fixed-point solvers for ``x = F(x)`` with a known contraction factor (MATH 3, 12, 17).

A solver sees the undamped map ``F`` and the averaging step ``alpha``; it
iterates ``G(x) = (1 - alpha) x + alpha F(x)``, a contraction with factor
``rho`` when ``alpha <= alpha*``. The same solvers serve the forward
equilibrium ``x = Phi(A x + B u + b)``, the adjoint ``w = g + A^T J w`` of
MATH 4 and the interval embedding of MATH 9. The nonlinear Jacobi iteration
(MATH 17) is this loop at ``alpha = 1`` on another map of the same fixed point,
``F_J``, which solves every unit exactly given the others; its factor ``rho_J``
is never above ``rho``, and usually far below it.

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

import functools
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
# what a NEMON solves with unless told otherwise (MATH 17); "average" is the paper's (MATH 3)
DEFAULT_SOLVER = "jacobi"

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
    # alpha = 1 (Jacobi, Picard): x <- F(x), which is what lerp gives at weight 1, bit for bit
    plain = all(a == 1.0 for a in alpha)
    if K == 1:
        return _iterate_one(make_F(None), x0, w, alpha[0], factors[0], tol, max_iter, plain)
    out = torch.empty_like(x0)
    last = torch.empty_like(x0)
    records: list[MemberSolve | None] = [None] * K
    active = list(range(K))
    x = x0
    # ||x_{k+1}|| <= ||x_k|| + ||step||: an upper bound that spares computing ||x|| until
    # the step is small enough for the stop rule to possibly hold (MATH 12).
    x_up = torch.linalg.vector_norm(x0, dim=(1, 2)).tolist()
    F = make_F(None)
    for k in range(1, max_iter + 1):
        fx = F(x)
        steps = torch.linalg.vector_norm(fx - x, dim=(1, 2)).tolist()
        x_new = fx if plain else torch.lerp(x, fx, w)
        check = []
        for j, m in enumerate(active):
            s = alpha[m] * steps[j]
            x_up[m] += s
            if not math.isfinite(s) or s * factors[m] <= tol * x_up[m] or k == max_iter:
                check.append(j)
        done = []
        if check:
            sub = x_new if len(check) == len(active) else x_new[check]
            norms = torch.linalg.vector_norm(sub, dim=(1, 2)).tolist()
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
    F: StepMap,
    x0: Tensor,
    w: Tensor,
    alpha: float,
    factor: float,
    tol: float,
    max_iter: int,
    plain: bool = False,
) -> tuple[Tensor, list[MemberSolve], Tensor]:
    """:func:`_iterate` for one member: the same tensor operations, less Python.

    An :class:`AffineStep` (the layer's own maps) runs in :func:`_averaged_loop`, compiled
    by TorchScript (:func:`scripted_loops`); any other map, or with scripting off, runs
    in the Python loop below, the reference that the scripted one reproduces bit for bit.
    """
    loop = _scripted_loop() if isinstance(F, AffineStep) and _SCRIPTED["on"] else None
    if loop is not None:
        # optimisation off: no graph rewriting or fusion that could change the arithmetic
        with torch.jit.optimized_execution(False):
            x, x_prev, k, res = loop(
                F.z, F.a, F.j, x0, w, alpha, factor, tol, max_iter, _TINY, plain
            )
        return x, [MemberSolve(k, res, res * factor <= tol)], x - x_prev
    x = x_prev = x0
    x_up = float(torch.linalg.vector_norm(x0))
    res = math.inf
    k = 0
    for k in range(1, max_iter + 1):  # noqa: B007 (k is reported after the loop)
        fx = F(x)
        s = alpha * torch.dist(fx, x).item()  # ||fx - x||, one call (the hot loop)
        x_prev, x = x, (fx if plain else torch.lerp(x, fx, w))
        x_up += s
        if not math.isfinite(s) or s * factor <= tol * x_up or k == max_iter:
            xn = torch.linalg.vector_norm(x).item()
            x_up = xn
            res = _residual(s, xn)
            if res * factor <= tol or not math.isfinite(res) or k == max_iter:
                break
    return x, [MemberSolve(k, res, res * factor <= tol)], x - x_prev


class AffineStep:
    """The layer's step maps as data: ``relu(z + x a)``, or ``z + (x * j) a`` with ``j``.

    Row form, batched over members (``x (K, N, n)``, ``a (K, n, n)``): the forward map
    ``x -> relu(A x + inj)`` of MATH 1 and the adjoint ``w -> g + A^T J w`` of MATH 4.
    Calling it is the eager map; holding the operands as tensors rather than in a
    closure lets :func:`_iterate_one` run the whole loop in TorchScript.
    """

    __slots__ = ("z", "a", "j")

    def __init__(self, z: Tensor, a: Tensor, j: Tensor | None = None) -> None:
        self.z, self.a, self.j = z, a, j

    def __call__(self, x: Tensor) -> Tensor:
        if self.j is None:
            return torch.baddbmm(self.z, x, self.a).relu_()
        return torch.baddbmm(self.z, x * self.j, self.a)


def _averaged_loop(
    z: Tensor,
    a: Tensor,
    j: Tensor | None,
    x0: Tensor,
    w: Tensor,
    alpha: float,
    factor: float,
    tol: float,
    max_iter: int,
    tiny: float,
    plain: bool,
) -> tuple[Tensor, Tensor, int, float]:
    """The loop of :func:`_iterate_one` on an :class:`AffineStep`, in TorchScript's subset.

    The same tensor operations in the same order, so the same bits: it only takes the
    loop out of the Python interpreter, which saves about a tenth of an iteration at
    ``n = 100``, batch 100 (``python -m nemon.bench.loops``). Returns ``(x, x_prev,
    iterations, residual)``.
    """
    x = x0
    x_prev = x0
    x_up = float(torch.linalg.vector_norm(x0))
    res = math.inf
    k = 0
    for i in range(1, max_iter + 1):
        k = i
        if j is None:
            fx = torch.baddbmm(z, x, a).relu_()
        else:
            fx = torch.baddbmm(z, x * j, a)
        s = alpha * float(torch.dist(fx, x))
        x_prev = x
        if plain:
            x = fx
        else:
            x = torch.lerp(x, fx, w)
        x_up += s
        if not math.isfinite(s) or s * factor <= tol * x_up or k == max_iter:
            xn = float(torch.linalg.vector_norm(x))
            x_up = xn
            res = _residual(s, xn, tiny)
            if res * factor <= tol or not math.isfinite(res) or k == max_iter:
                break
    return x, x_prev, k, res


# NEMON_SCRIPTED_LOOPS=0 in the environment starts with the Python loops
_SCRIPTED = {"on": os.environ.get("NEMON_SCRIPTED_LOOPS", "1") != "0"}


@contextmanager
def scripted_loops(enabled: bool) -> Iterator[None]:
    """Run the averaged iteration of the layer's maps in TorchScript (``True``, the default)
    or in Python (``False``, the reference). Both compute the same bits; the tests check it.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"scripted_loops(enabled) takes True or False, got {enabled!r}")
    before = _SCRIPTED["on"]
    _SCRIPTED["on"] = enabled
    try:
        yield
    finally:
        _SCRIPTED["on"] = before


@functools.cache
def _scripted_loop() -> Callable | None:
    """:func:`_averaged_loop` compiled by TorchScript once per process; None where it cannot be."""
    try:
        with warnings.catch_warnings():
            # torch 2.14 marks torch.jit.script deprecated; it is still the cheapest way to
            # run a small loop without the interpreter (torch.compile costs more per call)
            warnings.filterwarnings("ignore", ".*torch.jit.script.*", FutureWarning)
            return torch.jit.script(_averaged_loop)
    except Exception as err:  # any failure: fall back to the reference loop
        warnings.warn(
            f"nemon: TorchScript could not compile the solver loop ({type(err).__name__}: "
            f"{err}); the Python loop is used instead: the same results, a slower solve",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _residual(step: float, norm: float, tiny: float = _TINY) -> float:
    """The relative step ``step / ||x||``; NaN or inf when either is not finite."""
    if math.isfinite(step) and math.isfinite(norm):
        return step / (norm + tiny)
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


def jacobi(
    F: StepMap, x0: Tensor, *, alpha: float = 1.0, rho: float, **kw
) -> tuple[Tensor, SolverStats]:
    """The nonlinear Jacobi iteration ``x_{k+1} = F_J(x_k)`` on one system ``(N, n)`` (MATH 17).

    ``F`` must be the Jacobi map ``x -> relu(diag(s) (A_off x + z))``, ``s = 1 / (1 - diag A)``,
    which solves every unit exactly given the others (:func:`nemon.core.jacobi_split` builds
    its pieces); ``rho`` its contraction factor ``rho_J`` (:func:`nemon.core.jacobi_constants`).
    No averaging: ``alpha`` must be 1. The stopping rules and the error bound are those of
    MATH 3 and 12 with ``rho_J`` in place of ``rho``.
    """
    if alpha != 1.0:
        raise ConfigurationError(
            f"the Jacobi iteration takes no averaging step (alpha = 1), got alpha={alpha!r}"
        )
    return averaged_iteration(F, x0, alpha=1.0, rho=rho, name="jacobi", **kw)


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
    shape = x0.shape
    bsz = x0.shape[0] if per_sample else 1

    def make_G(active: Tensor | None) -> StepMap:  # joint stop: the systems finish together
        return lambda x: torch.lerp(x.reshape(shape), F(x.reshape(shape)), alpha).reshape(bsz, -1)

    out, recs, step = _anderson(
        make_G,
        x0.reshape(bsz, -1),
        [stop_factor(stop, rho)],
        tol,
        max_iter,
        memory=memory,
        ridge=ridge,
        max_coef=max_coef,
        joint=True,
    )
    eb = error_bound(rho, step.reshape(shape), err_norm)
    bound = float(eb.max()) if eb.numel() else 0.0
    rec = recs[0]
    stats = SolverStats("anderson", rec.iterations, rec.residual, rec.converged, alpha, rho, bound)
    return out.reshape(shape), stats


def anderson_members(
    make_F: StepFactory,
    x0: Tensor,
    *,
    alpha: Sequence[float],
    rho: Sequence[float],
    tol: float,
    max_iter: int,
    stop: str = "step",
    memory: int = 5,
    ridge: float = 1e-4,
    max_coef: float = 1e3,
) -> tuple[Tensor, list[MemberSolve], Tensor]:
    """:func:`anderson` on ``K`` independent systems ``x0`` of shape ``(K, N, n)`` at once.

    What :func:`solve_members` is to the averaged iteration: member ``k`` mixes its
    own history (one set of coefficients over its whole batch) and stops by its own
    rule, so its iterates and iteration count are the ones it would have alone; the
    members' products are batched and finished members leave the batch. Returns
    ``G(x)`` of each member's last iterate, its record, and that last step.
    """
    K, N, n = x0.shape
    w_all = torch.tensor(list(alpha), dtype=x0.dtype, device=x0.device)[:, None, None]

    def make_G(active: Tensor | None) -> StepMap:
        F = make_F(active)
        w = w_all if active is None else w_all[active]

        def G(x: Tensor) -> Tensor:
            x = x.reshape(x.shape[0], N, n)
            return torch.lerp(x, F(x), w).reshape(x.shape[0], -1)

        return G

    factors = [stop_factor(stop, r) for r in rho]
    out, recs, step = _anderson(
        make_G,
        x0.reshape(K, -1),
        factors,
        tol,
        max_iter,
        memory=memory,
        ridge=ridge,
        max_coef=max_coef,
        joint=False,
    )
    return out.reshape(K, N, n), recs, step.reshape(K, N, n)


class _History:
    """Anderson's memory for the active systems: ``G(x_i)``, residuals, their Gram matrix.

    Layout ``(S, m, d)``; the views the loop needs every iteration (a slot, the first
    ``n`` slots) are made once here, not per iteration: on a CPU a view costs as much as
    a small product, and the loop needs about fifteen of them.
    """

    def __init__(self, GX: Tensor, R: Tensor, gram: Tensor, diag: list[list[float]]) -> None:
        S, m, _ = GX.shape
        self.GX, self.R, self.gram, self.diag = GX, R, gram, diag
        self.gx = [GX[:, i] for i in range(m)]
        self.r = [R[:, i] for i in range(m)]
        self.r_row = [R[:, i : i + 1] for i in range(m)]
        self.gram_row = [gram[:, i, :] for i in range(m)]
        self.gram_col = [gram[:, :, i] for i in range(m)]
        self.first = [(gram[:, :n, :n], GX[:, :n]) for n in range(m + 1)]
        eye = torch.eye(m, dtype=GX.dtype, device=GX.device)
        self.eye = [eye[:n, :n] for n in range(m + 1)]
        ones = GX.new_ones(S, m, 1)
        self.ones = [ones[:, :n] for n in range(m + 1)]

    def keep(self, rows: list[int]) -> _History:
        kt = torch.tensor(rows, device=self.GX.device)
        return _History(self.GX[kt], self.R[kt], self.gram[kt], [self.diag[j] for j in rows])


def _anderson(
    make_G: StepFactory,
    x0: Tensor,
    factors: list[float],
    tol: float,
    max_iter: int,
    *,
    memory: int,
    ridge: float,
    max_coef: float,
    joint: bool,
) -> tuple[Tensor, list[MemberSolve], Tensor]:
    """Type-II Anderson on ``S`` systems ``x0`` of shape ``(S, d)``, coefficients per system.

    ``joint``: one stop rule (``factors[0]``) on the relative residual of all systems
    together, and one record; else system ``s`` stops by ``factors[s]`` on its own
    residual and leaves the batch (``make_G`` gets the indices of those left). Returns
    ``G(x_last)`` per system, the records and the last steps ``G(x_last) - x_last``.
    """
    S, d = x0.shape
    m = memory
    h = _History(
        x0.new_zeros(S, m, d),  # G(x_i)
        x0.new_zeros(S, m, d),  # residuals r_i = G(x_i) - x_i
        x0.new_zeros(S, m, m),  # <r_i, r_j>, updated one row and column per iteration
        [[0.0] * m for _ in range(S)],  # its diagonal, on the host
    )
    out = torch.empty_like(x0)
    steps = torch.empty_like(x0)
    records: list[MemberSolve | None] = [None] * (1 if joint else S)
    active = list(range(S))
    G = make_G(None)
    tiny = torch.finfo(x0.dtype).tiny

    def record(slot: int, x: Tensor) -> list[float]:
        gx = G(x)
        h.gx[slot].copy_(gx)
        torch.sub(gx, x, out=h.r[slot])
        row = torch.linalg.vecdot(h.R, h.r_row[slot])  # a bmm here is 6x slower on CPU
        h.gram_row[slot].copy_(row)
        h.gram_col[slot].copy_(row)
        host = torch.cat((row, torch.linalg.vecdot(gx, gx)[:, None]), dim=1).tolist()
        for j, r in enumerate(host):
            h.diag[j][slot] = r[slot]
        if joint:
            return [_rel(1.0, math.fsum(r[slot] for r in host), math.fsum(r[m] for r in host))]
        return [_rel(1.0, r[slot], r[m]) for r in host]

    res = record(0, x0)
    k, last = 1, 0
    while True:
        done = []
        for j in range(len(res)):
            s = 0 if joint else active[j]
            r, f = res[j], factors[s]
            if not (r * f > tol and k < max_iter and math.isfinite(r)):
                records[s] = MemberSolve(k, r, r * f <= tol)
                done.append(j)
        if done:
            rows = list(range(len(active))) if joint else done
            idx = torch.tensor([active[j] for j in rows], device=x0.device)
            sel = torch.tensor(rows, device=x0.device)
            out[idx] = h.gx[last][sel]
            steps[idx] = h.r[last][sel]
            if joint or len(done) == len(active):
                break
            gone = set(done)
            keep = [j for j in range(len(active)) if j not in gone]
            active = [active[j] for j in keep]
            res = [res[j] for j in keep]
            h = h.keep(keep)
            G = make_G(torch.tensor(active, device=x0.device))
        n = min(k, m)
        Gn, GXn = h.first[n]
        # min ||sum_i c_i r_i|| s.t. sum_i c_i = 1: c = z / sum(z) with (Gram + ridge) z = 1.
        # The ridge is relative to the residuals' size (the mean of the Gram diagonal): an
        # absolute one would swamp tiny late residuals and degrade the step to a plain average.
        reg = torch.tensor(
            [ridge * max(math.fsum(dg[:n]) / n, tiny) for dg in h.diag],
            dtype=x0.dtype,
            device=x0.device,
        )
        # solve_ex: a singular system marks its sample (info > 0) instead of raising
        z, info = torch.linalg.solve_ex(torch.addcmul(Gn, reg[:, None, None], h.eye[n]), h.ones[n])
        coef = z / z.sum(dim=1, keepdim=True)  # (S, n, 1)
        check = torch.cat((coef[:, :, 0], info[:, None].to(coef.dtype)), dim=1).tolist()
        bad = [
            c[n] > 0
            or not all(math.isfinite(v) for v in c[:n])
            or math.fsum(abs(v) for v in c[:n]) > max_coef
            for c in check
        ]
        mixed = torch.bmm(coef.transpose(1, 2), GXn)[:, 0]
        if any(bad):  # the plain averaged step for those systems, which always contracts
            b = torch.tensor(bad, device=x0.device)[:, None]
            mixed = torch.where(b, h.gx[last], mixed)  # NaN rows of `mixed` are not taken
        last = k % m
        res = record(last, mixed)
        k += 1
    return out, [r for r in records if r is not None], steps


SOLVERS: dict[str, Callable[..., tuple[Tensor, SolverStats]]] = {
    "average": averaged_iteration,
    "jacobi": jacobi,
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
