"""The computational core shared by every NEMON: parametrisation, implicit layer, bounds.

Everything here works on a *stack* of ``K`` independent models at once (a leading
member dimension on every parameter: ``T (K, n, n)``, ``d (K, n)``, ...); a single
:class:`~nemon.model.NEMON` is the case ``K = 1``. Batched products make a stack of
small models run at nearly the cost of one, and each member still stops its
solves by its own rule (see :func:`nemon.solvers.solve_members`).

The gradients of the implicit layer (MATH 4), of the interval embedding (MATH 9,
10) and of the Lipschitz bound (MATH 5) are written by hand: one autograd node
each instead of a dozen, which is most of what a training step costs besides the
solves. ``tests/test_gradients.py`` checks them with ``gradcheck`` in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from .errors import ConfigurationError
from .solvers import AffineStep, MemberSolve, anderson_members, solve_members


# --- MATH 2: the parametrisation ------------------------------------------------------------
def build_A(T: Tensor, d: Tensor | None, gamma: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(A, M, R)`` with ``M = T - diag(|T| 1) + gamma I`` and ``A = M * R`` (MATH 2).

    ``R_ij = eta_j / eta_i`` with ``eta = exp(d)``; ``d = None`` is the unweighted
    case (``A = M``, ``R = None``). ``gamma`` has shape ``(K,)``.
    """
    M = T.clone()
    M.diagonal(dim1=-2, dim2=-1).sub_(T.abs().sum(dim=-1)).add_(gamma[:, None])
    if d is None:
        return M, M, None
    eta = d.exp()
    R = eta[:, None, :] / eta[:, :, None]
    return M * R, M, R


def step_constants(M: Tensor, T: Tensor, gamma: Tensor) -> tuple[list[float], list[float]]:
    """Per member ``alpha* = 1 / (1 - min_i min(a_ii, 0))`` and ``rho`` (MATH 3), one sync.

    ``diag A = diag M``, and ``mu_eta(A) = max_i (t_ii - |t_ii|) + gamma`` in closed form.
    """
    a_min = M.diagonal(dim1=-2, dim2=-1).clamp(max=0).amin(dim=-1)
    t = T.diagonal(dim1=-2, dim2=-1)
    mu = (t - t.abs()).amax(dim=-1) + gamma
    a_mins, mus = torch.stack((a_min, mu)).tolist()
    alpha = [1.0 / (1.0 - a) for a in a_mins]
    rho = [1.0 - (1.0 - max(m, 0.0)) / (1.0 - a) for m, a in zip(mus, a_mins, strict=True)]
    return alpha, rho


def jacobi_constants(M: Tensor) -> list[float]:
    """Per member ``rho_J = max_i sum_{j != i} |m_ij| / (1 - m_ii)``, one sync.

    The contraction factor of the nonlinear Jacobi map in ``||.||_eta`` (MATH 17);
    ``diag A = diag M``.
    """
    diag = M.diagonal(dim1=-2, dim2=-1)
    denom = 1.0 - diag
    _check_jacobi_diagonal(denom)
    off = M.abs()
    off.diagonal(dim1=-2, dim2=-1).zero_()
    return (off.sum(dim=-1) / denom).amax(dim=-1).tolist()


def _check_jacobi_diagonal(denom: Tensor) -> None:
    if not bool((denom > 0).all()):  # False for NaN too
        worst = float((1.0 - denom).max())
        raise ConfigurationError(
            f"solver='jacobi' solves each unit as x_i = relu(r_i / (1 - a_ii)), which needs "
            f"every diagonal entry a_ii < 1, but the largest is {worst:.6g}; a NEMON has "
            "a_ii <= gamma < 1 by construction (MATH 2), so this matrix is not a NEMON's: use "
            "solver='average' or check the weights"
        )


def jacobi_split(Amat: Tensor) -> tuple[Tensor, Tensor]:
    """``(A_off, s)``: ``Amat`` with its diagonal set to zero, and ``s = 1 / (1 - diag Amat)``.

    The pieces of the nonlinear Jacobi iteration (MATH 17): the forward map is
    ``x -> relu(diag(s) (A_off x + z))``, the adjoint ``p -> g + A_off^T (J s p)``.
    """
    denom = 1.0 - Amat.diagonal(dim1=-2, dim2=-1)
    _check_jacobi_diagonal(denom)
    A_off = Amat.clone()
    A_off.diagonal(dim1=-2, dim2=-1).zero_()
    return A_off, denom.reciprocal()


def param_grads(
    dA: Tensor, T: Tensor, A: Tensor, R: Tensor | None, need_d: bool
) -> tuple[Tensor, Tensor | None]:
    """Chain rule from ``dL/dA`` to ``dL/dT`` and ``dL/dd`` through MATH 2.

    ``a_ij = m_ij exp(d_j - d_i)`` gives ``dL/dd = colsum(P) - rowsum(P)`` with
    ``P = dA * A`` (the diagonal cancels), and ``m_ij = t_ij - [i = j] sum_l |t_il|``
    gives ``dL/dt_ij = dm_ij - dm_ii sign(t_ij)``.
    """
    dM = dA if R is None else dA * R
    dT = dM - dM.diagonal(dim1=-2, dim2=-1)[..., None] * T.sign()
    dd = None
    if need_d and R is not None:
        P = dA * A
        dd = P.sum(dim=-2) - P.sum(dim=-1)
    return dT, dd


# --- MATH 9: the embedded (mixed-monotone) matrix --------------------------------------------
def _negative_off_diagonal(A: Tensor) -> Tensor:
    n = A.shape[-1]
    off = ~torch.eye(n, dtype=torch.bool, device=A.device)
    return (A < 0) & off


def embed(A: Tensor) -> Tensor:
    """The ``2n x 2n`` matrix of the embedded map on ``(x_lo, x_hi)`` (MATH 9).

    ``[[A_pos, A_neg], [A_neg, A_pos]]`` with ``A_neg`` the negative off-diagonal
    part of ``A`` and ``A_pos = A - A_neg`` (diagonal and non-negative off-diagonal).
    """
    neg = A * _negative_off_diagonal(A)
    pos = A - neg
    top = torch.cat((pos, neg), dim=-1)
    bottom = torch.cat((neg, pos), dim=-1)
    return torch.cat((top, bottom), dim=-2)


def unembed_grad(dE: Tensor, A: Tensor) -> Tensor:
    """``dL/dA`` from ``dL/d embed(A)``: each entry of ``A`` lives in two blocks."""
    n = A.shape[-1]
    d11, d12 = dE[..., :n, :n], dE[..., :n, n:]
    d21, d22 = dE[..., n:, :n], dE[..., n:, n:]
    return torch.where(_negative_off_diagonal(A), d12 + d21, d11 + d22)


# --- the implicit layer ---------------------------------------------------------------------
@dataclass
class SolveRecord:
    """What one forward or backward solve of a stack did, for the caller's statistics."""

    solver: str
    members: list[MemberSolve]
    alpha: list[float]
    rho: list[float]
    last_update: Tensor | None = None  # (K, N, n): for the a-posteriori error bound
    x: Tensor | None = None


@dataclass
class LayerSpec:
    """Constants of one call of the implicit layer (not tensors of the autograd graph)."""

    gamma: Tensor  # (K,)
    weighted: bool
    solver: str
    tol: float
    max_iter: int
    stop: str
    embedded: bool = False
    keep_last_update: bool = True  # False: no error-bound inputs (a solve whose bound is unused)
    # torch.is_grad_enabled() where the layer is called (always False inside forward): without
    # it no backward can come, and the forward skips the activation pattern the backward reads
    grad_enabled: bool = True
    forward: SolveRecord | None = None
    backward: SolveRecord | None = None
    on_backward: object = field(default=None, repr=False)  # callable(SolveRecord) or None
    # the Layer already built from the weights this call passes
    # (``NEMON.solving(frozen=True)``); None: built here
    prepared: Layer | None = field(default=None, repr=False)
    # where the solves start (``NEMON.solving(warm_start=True)``), per kind and shape, updated
    # by every solve: forward from the last x*, backward from g + the last (w - g); None: cold,
    # forward from zero and backward from g
    warm: dict | None = field(default=None, repr=False)


class Layer(NamedTuple):
    """What the solves of one state of the weights need, built once (MATH 2, 3, 9, 17).

    ``A, M, R`` of MATH 2; ``Amat`` is ``A`` or its embedding (MATH 9). The step maps the
    solver iterates: the forward ``x -> relu(x fwd_At + inj * scale)`` in row form and the
    adjoint ``p -> g + (p * J * scale) adj_A``; ``scale`` is None for the averaged iteration
    (``fwd_At = Amat^T``, ``adj_A = Amat``) and ``1 / (1 - diag Amat)`` for the Jacobi one
    (``Amat`` with a zero diagonal, rows scaled by ``scale`` in ``fwd_At``). ``alpha``, ``rho``:
    per member, the averaging step and the contraction factor of the solver's map.
    """

    A: Tensor
    M: Tensor
    R: Tensor | None
    alpha: list[float]
    rho: list[float]
    Amat: Tensor
    fwd_At: Tensor
    adj_A: Tensor
    scale: Tensor | None


def _warm_key(kind: str, t: Tensor) -> tuple:
    return (kind, tuple(t.shape), t.dtype, t.device)


def _start(spec: LayerSpec, kind: str, like: Tensor, cold: Tensor | None) -> Tensor | None:
    """What the last ``kind`` solve of ``like``'s shape left (:func:`_remember`), else ``cold``.

    Any start converges to the same fixed point (the averaged map contracts, MATH 3), and
    the stopping rule and error bound read the last step only, so a warm start changes the
    iteration count and the rounding of the result, never what it approximates.
    """
    if spec.warm is None:
        return cold
    x0 = spec.warm.get(_warm_key(kind, like))
    return cold if x0 is None else x0


def _remember(spec: LayerSpec, kind: str, x: Tensor) -> None:
    """For the next solve of ``x``'s shape: the forward's ``x*``, the backward's ``w - g``."""
    if spec.warm is not None:
        spec.warm[_warm_key(kind, x)] = x.detach().clone()


def prepare_layer(
    T: Tensor, d: Tensor | None, gamma: Tensor, embedded: bool, solver: str = "average"
) -> Layer:
    """The :class:`Layer` of MATH 2-3 (9 if ``embedded``, 17 for ``solver="jacobi"``), no graph."""
    with torch.no_grad():
        A, M, R = build_A(T, d, gamma)
        Amat = embed(A) if embedded else A
        if solver == "jacobi":
            rho = jacobi_constants(M)
            A_off, scale = jacobi_split(Amat)
            fwd_At = (A_off * scale[:, :, None]).transpose(1, 2).contiguous()
            return Layer(A, M, R, [1.0] * len(rho), rho, Amat, fwd_At, A_off, scale)
        alpha, rho = step_constants(M, T, gamma)
        if solver == "picard":
            alpha, rho = [1.0] * len(alpha), [math.inf] * len(rho)
        At = Amat.transpose(1, 2).contiguous()
        return Layer(A, M, R, alpha, rho, Amat, At, Amat, None)


def _solve(spec: LayerSpec, make_F, x0: Tensor, alpha, rho) -> tuple[Tensor, SolveRecord]:
    if spec.solver == "anderson":
        return _solve_anderson(spec, make_F, x0, alpha, rho)
    x, recs, last = solve_members(
        make_F, x0, alpha=alpha, rho=rho, tol=spec.tol, max_iter=spec.max_iter, stop=spec.stop
    )
    return x, SolveRecord(spec.solver, recs, alpha, rho, last if spec.keep_last_update else None)


def _solve_anderson(spec: LayerSpec, make_F, x0: Tensor, alpha, rho) -> tuple[Tensor, SolveRecord]:
    # every member mixes its own history and stops by its own rule, in one batch
    xk, recs, _ = anderson_members(
        make_F, x0, alpha=alpha, rho=rho, tol=spec.tol, max_iter=spec.max_iter, stop=spec.stop
    )
    # return G(x_k), with the step x_k -> G(x_k) that bounds its error (MATH 3): the
    # bound rho / (1 - rho) * step holds for the image of the step, not for its start
    w = torch.tensor(list(alpha), dtype=x0.dtype, device=x0.device)[:, None, None]
    step = (make_F(None)(xk) - xk).mul_(w)
    out = xk + step
    return out, SolveRecord("anderson", recs, alpha, rho, step if spec.keep_last_update else None)


def _forward_factory(At: Tensor, inj: Tensor):
    def make_F(members: Tensor | None) -> AffineStep:
        if members is None:
            return AffineStep(inj, At)
        return AffineStep(inj[members], At[members])

    return make_F


def _adjoint_factory(Amat: Tensor, g: Tensor, J: Tensor):
    # w = g + A^T J w in row form: w_row = g_row + (J w)_row A
    def make_F(members: Tensor | None) -> AffineStep:
        if members is None:
            return AffineStep(g, Amat, J)
        return AffineStep(g[members], Amat[members], J[members])

    return make_F


def scaled_injection(layer: Layer, inj: Tensor) -> Tensor:
    """The injection as the solver's forward map takes it: ``inj``, or ``inj * s`` (MATH 17)."""
    return inj if layer.scale is None else inj * layer.scale[:, None, :]


def forward_solve(spec: LayerSpec, layer: Layer, inj: Tensor, x0: Tensor):
    """``x* = relu(Amat x* + inj)`` per member by the spec's solver; ``(x, record)``."""
    make_F = _forward_factory(layer.fwd_At, scaled_injection(layer, inj))
    return _solve(spec, make_F, x0, layer.alpha, layer.rho)


def adjoint_solve(spec: LayerSpec, layer: Layer, g: Tensor, J: Tensor, w0: Tensor):
    """The adjoint of MATH 4, ``w = g + Amat^T J w``, by the spec's solver: ``(v, w, record)``.

    ``v = J w`` is what the gradients need. With the Jacobi solver the iterate is
    ``p = g + A_off^T v`` (MATH 17): then ``v = J s p``, and ``w = p`` on inactive units.
    """
    if layer.scale is None:
        w, rec = _solve(spec, _adjoint_factory(layer.adj_A, g, J), w0, layer.alpha, layer.rho)
        return w.mul(J), w, rec
    js = J * layer.scale[:, None, :]
    p, rec = _solve(spec, _adjoint_factory(layer.adj_A, g, js), w0, layer.alpha, layer.rho)
    return p.mul(js), p, rec


class ImplicitLayer(torch.autograd.Function):
    """``x* = relu(A x* + inj)`` per member, with the implicit backward of MATH 4.

    ``A`` is built from ``(T, d)`` inside (MATH 2), so the backward returns
    ``dL/dT``, ``dL/dd`` and ``dL/dinj = J w`` directly. With ``spec.embedded``
    the matrix is :func:`embed` ``(A)`` and ``inj`` is ``cat(z_lo, z_hi)``: the
    fixed point is the pair ``(x_lo*, x_hi*)`` of MATH 9 and the backward is the
    adjoint of the 2n-dimensional embedded map (MATH 10). The graph holds ``T``,
    ``d``, ``x*`` and the activation pattern only, whatever the iteration count.
    """

    @staticmethod
    def forward(ctx, T: Tensor, d: Tensor | None, inj: Tensor, spec: LayerSpec) -> Tensor:  # type: ignore[override]
        layer = spec.prepared
        if layer is None:  # kept in the spec: the caller's error bound may read it
            layer = spec.prepared = prepare_layer(
                T, d if spec.weighted else None, spec.gamma, spec.embedded, spec.solver
            )
        with torch.no_grad():
            x0 = _start(spec, "forward", inj, torch.zeros_like(inj))
            x, rec = forward_solve(spec, layer, inj, x0)
            _remember(spec, "forward", x)
            rec.x = x
        spec.forward = rec
        if not (spec.grad_enabled and any(ctx.needs_input_grad[:3])):
            return x  # no backward will come (under no_grad, or nothing requires a gradient)
        with torch.no_grad():
            mask = torch.baddbmm(inj, x, layer.Amat.transpose(1, 2)) > 0  # J = diag(Phi'(z*))
        ctx.spec = spec
        ctx.layer = layer
        R = layer.R
        ctx.save_for_backward(T, layer.A, x, mask, R if R is not None else torch.empty(0))
        return x

    @staticmethod
    def backward(ctx, gx: Tensor):  # type: ignore[override]
        T, A, x, mask, R = ctx.saved_tensors
        spec: LayerSpec = ctx.spec
        R = R if R.numel() else None
        J = mask.to(gx.dtype)
        g = gx.contiguous()
        # warm: g plus the last solution's A^T J w (= w - g), which moves less than w does
        shift = _start(spec, "backward", g, None)
        w0 = g.clone() if shift is None else g + shift
        v, w, rec = adjoint_solve(spec, ctx.layer, g, J, w0)
        if spec.warm is not None:  # the cold path does no extra work
            _remember(spec, "backward", w - g)
        spec.backward = rec
        if callable(spec.on_backward):
            spec.on_backward(rec)
        dT = dd = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            dAmat = torch.bmm(v.transpose(1, 2), x)
            dA = unembed_grad(dAmat, A) if spec.embedded else dAmat
            dT, dd = param_grads(dA, T, A, R, ctx.needs_input_grad[1])
        dinj = v if ctx.needs_input_grad[2] else None
        return dT, dd, dinj, None


# --- MATH 5: the Lipschitz bound --------------------------------------------------------------
def lipschitz_forward(T, d, B, C, gamma, inv_std) -> tuple[Tensor, tuple]:
    """The bound of MATH 5 per member and what its (sub)gradient needs.

    ``||C diag(eta)^-1||_inf ||diag(eta) B_pix||_inf / (1 - mu_+)`` with
    ``B_pix = B / std`` (pixel units, ``std`` of shape ``()`` or ``(m,)``); ``d = None``
    is the unweighted case, ``T = None`` means ``A = 0`` (an MLP, ``mu = 0``).
    """
    K = B.shape[0]
    eta = d.exp() if d is not None else None
    crow = C.abs().sum(dim=-1) if eta is None else (C.abs() / eta[:, None, :]).sum(dim=-1)
    if inv_std.dim() == 0:
        brow = B.abs().sum(dim=-1) * inv_std
    else:
        brow = (B.abs() * inv_std).sum(dim=-1)
    bw = brow if eta is None else brow * eta
    c_norm, r_star = crow.max(dim=-1)
    b_norm, i_star = bw.max(dim=-1)
    if T is not None:
        t = T.diagonal(dim1=-2, dim2=-1)
        mu_raw, j_star = (t - t.abs()).max(dim=-1)
        mu = mu_raw + gamma
    else:
        mu = torch.zeros(K, dtype=B.dtype, device=B.device)
        j_star = torch.zeros(K, dtype=torch.long, device=B.device)
    denom = 1.0 - mu.clamp(min=0)
    L = c_norm * b_norm / denom
    return L, (eta, c_norm, b_norm, denom, mu, r_star, i_star, j_star)


def lipschitz_backward(gL, saved, T, B, C, inv_std, dT, dd, dB, dC) -> None:
    """Add the (sub)gradient of :func:`lipschitz_forward` to ``dT, dd, dB, dC`` (None: skip).

    Each maximum is attained at one row, so the gradient touches one row of ``C``,
    one row of ``B`` and one diagonal entry of ``T`` per member: written by hand, for
    all members at once (a fixed handful of operations, whatever ``K``), it costs a
    fraction of what autograd spends on the expression. The factor of ``B``'s row is
    formed in float64 and rounded once to the parameters' dtype, as the product of
    Python floats was in the per-member loop this replaced
    (``tests/test_lipschitz_backward.py`` holds it to that loop, bit for bit).
    """
    eta, c_norm, b_norm, denom, mu, r_star, i_star, j_star = saved
    dtype = B.dtype
    k = torch.arange(B.shape[0], device=B.device)
    gc = (gL * b_norm / denom)[:, None]  # dL/dc_norm
    gb = gL * c_norm / denom  # dL/db_norm
    if dC is not None:
        row = C[k, r_star].sign()
        dC[k, r_star] += (row if eta is None else row / eta) * gc
    if dB is not None:
        scale = gb.double() if eta is None else gb.double() * eta[k, i_star].double()
        if inv_std.dim() > 0:
            step = inv_std * scale.to(dtype)[:, None]
        else:
            step = (inv_std.double() * scale).to(dtype)[:, None]
        dB[k, i_star] += B[k, i_star].sign() * step
    if eta is not None and dd is not None:
        # c_norm = sum_i |C_r*i| / eta_i and b_norm = eta_i* sum_j |B_i*j| / std_j
        dd -= (C[k, r_star].abs() / eta) * gc
        dd[k, i_star] += b_norm * gb
    if T is not None and dT is not None:
        g_mu = gL * c_norm * b_norm / denom**2 * (mu > 0).to(gL.dtype)
        diag = dT[k, j_star, j_star]
        step = g_mu * (1.0 - T[k, j_star, j_star].sign())
        # where g_mu is 0 nothing is added (an added +0.0 would turn a -0.0 into +0.0)
        dT[k, j_star, j_star] = torch.where(g_mu != 0.0, diag + step, diag)


class LipschitzBound(torch.autograd.Function):
    """The bound of MATH 5 per member; its gradient is :func:`lipschitz_backward`."""

    @staticmethod
    def forward(ctx, T, d, B, C, gamma, inv_std):  # type: ignore[override]
        with torch.no_grad():
            L, saved = lipschitz_forward(T, d, B, C, gamma, inv_std)
        ctx.saved = saved
        ctx.save_for_backward(T, B, C, inv_std)
        ctx.has_T = T is not None
        return L

    @staticmethod
    def backward(ctx, gL):  # type: ignore[override]
        T, B, C, inv_std = ctx.saved_tensors
        need = ctx.needs_input_grad
        dT = torch.zeros_like(T) if ctx.has_T and need[0] else None
        dd = torch.zeros_like(B[:, :, 0]) if need[1] else None
        dB = torch.zeros_like(B) if need[2] else None
        dC = torch.zeros_like(C) if need[3] else None
        lipschitz_backward(gL, ctx.saved, T, B, C, inv_std, dT, dd, dB, dC)
        return dT, dd, dB, dC, None, None


# --- MATH 12: rounding ---------------------------------------------------------------------
def unit_roundoff(dtype: torch.dtype) -> float:
    """``u = eps / 2`` of a floating-point dtype (2^-24 for float32, 2^-53 for float64)."""
    return torch.finfo(dtype).eps / 2.0


def gamma_k(k: int, dtype: torch.dtype) -> float:
    """``gamma_k = k u / (1 - k u)``, the classical bound on a length-k dot product's error."""
    ku = k * unit_roundoff(dtype)
    return ku / (1.0 - ku) if ku < 1 else math.inf


def per_sample_bound(rho: float, last: Tensor, eta: Tensor, rounding: Tensor) -> Tensor:
    """Per-sample ``(rho ||last||_eta + rounding) / (1 - rho)`` (MATH 3, 12).

    ``last`` is the last averaged update ``(N, n)``; ``rounding`` bounds one
    step's floating-point error in ``||.||_eta`` (per sample).
    """
    b = (rho * (last.abs() * eta).amax(dim=-1) + rounding) / (1.0 - rho)
    return torch.where(torch.isfinite(b), b, torch.full_like(b, math.inf))


def box_injection(B: Tensor, b: Tensor, lo_n: Tensor, hi_n: Tensor) -> tuple[Tensor, Tensor]:
    """``z_lo = B+ lo + B- hi + b``, ``z_hi = B+ hi + B- lo + b`` per member (MATH 9).

    ``B (K, n, m)``, ``b (K, n)``, boxes ``(N, m)`` (shared) or ``(K, N, m)`` (one per
    member) in normalised units. Computed from centre and radius,
    ``B c + b -/+ |B| r``: two products instead of four.
    """
    c = (hi_n + lo_n) / 2
    r = (hi_n - lo_n) / 2
    K = B.shape[0]
    if c.dim() == 2:
        c, r = c.expand(K, *c.shape), r.expand(K, *r.shape)
    zc = torch.baddbmm(b[:, None, :], c, B.transpose(1, 2))
    zr = torch.bmm(r, B.abs().transpose(1, 2))
    return zc - zr, zc + zr


def worst_case_logits(C: Tensor, c: Tensor, x_lo: Tensor, x_hi: Tensor, labels: Tensor) -> Tensor:
    """``z_j = -m_kj`` per member, with ``m_kj`` the lower bound of ``y_k - y_j`` (MATH 9, 10).

    ``m_kj = sum_i (w_i+ x_lo_i + w_i- x_hi_i) + c_k - c_j`` with ``w = c_k - c_j``
    (rows of ``C``), computed as ``w . x_c - |w| . x_r`` from the box's centre and
    radius; ``z_k = 0`` since ``w = 0`` there. ``C (K, classes, n)``, ``c (K,
    classes)``, boxes ``(K, N, n)``, ``labels (N,)``. Returns ``(K, N, classes)``.
    """
    xc = (x_hi + x_lo) / 2
    xr = (x_hi - x_lo) / 2
    yc = torch.baddbmm(c[:, None, :], xc, C.transpose(1, 2))  # (K, N, classes)
    W = C[:, labels, None, :] - C[:, None, :, :]  # (K, N, classes, n): c_k - c_j
    spread = torch.einsum("knjh,knh->knj", W.abs(), xr)
    margin = yc.gather(2, labels.expand(C.shape[0], -1)[..., None]) - yc - spread
    return -margin
