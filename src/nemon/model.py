"""The NEMON implicit layer: ``x = relu(A x + B u + b)``, ``y = C x + c`` (MATH 1-5)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigurationError, ConvergenceError, NonConvergenceWarning, NonFiniteError
from .measure import inf_norm
from .solvers import SolverStats, get_solver


def _check_finite(t: Tensor, what: str, hint: str) -> None:
    # max |t| is NaN or inf exactly when some entry is: one reduction, cheaper than isfinite().all()
    if t.numel() and not bool(torch.isfinite(t.abs().amax())):
        bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteError(f"{what} contains {bad} non-finite value(s) (NaN or inf); {hint}")


class _Equilibrium(torch.autograd.Function):
    """``x* = Phi(A x* + inj)`` with the implicit backward of MATH 4.

    ``inj = B u + b`` is computed by ordinary autograd outside, so the
    gradients with respect to ``B``, ``b`` and ``u`` follow from
    ``dL/dinj = v = J w``; only ``dL/dA = v x*^T`` is formed here. Nothing of
    the forward iterations is kept: the graph holds ``A``, ``x*`` and the
    activation pattern ``J``.
    """

    @staticmethod
    def forward(ctx, A: Tensor, inj: Tensor, model: NEMON) -> Tensor:  # type: ignore[override]
        At = A.t().contiguous()

        def F(x: Tensor) -> Tensor:
            return torch.addmm(inj, x, At).clamp_(min=0)

        alpha, rho = model._step_constants()
        x, stats = model._solve(
            F, torch.zeros_like(inj), model._err_norm_primal, "forward", alpha, rho
        )
        ctx.model = model
        ctx.constants = (alpha, rho)
        mask = torch.addmm(inj, x, At) > 0  # J = diag(Phi'(z*)), 0/1 for ReLU
        ctx.save_for_backward(A, x, mask)
        return x

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        A, x, mask = ctx.saved_tensors
        model: NEMON = ctx.model
        J = mask.to(g.dtype)
        g = g.contiguous()

        # Adjoint w = g + A^T J w, in row form: w_row = g_row + (J w)_row A.
        def F(w: Tensor) -> Tensor:
            return torch.addmm(g, w * J, A)

        w, _ = model._solve(F, g.clone(), model._err_norm_dual, "backward", *ctx.constants)
        v = w * J
        grad_A = v.t() @ x if ctx.needs_input_grad[0] else None
        grad_inj = v if ctx.needs_input_grad[1] else None
        return grad_A, grad_inj, None


class NEMON(nn.Module):
    """Non-Euclidean monotone operator network (one implicit layer).

    ``forward(u)`` takes pixels in ``[0, 1]`` of any leading shape that
    flattens to ``in_features`` and returns logits. ``(u - input_mean) /
    input_std`` is folded into the input map, so :meth:`lipschitz_bound` and
    the certificates speak of pixel units (MATH 1).

    ``A`` is built from the free parameters ``T`` and ``d`` (MATH 2) so that
    ``mu_eta(A) <= gamma`` for every parameter value; with ``weighted=False``,
    ``d`` is a zero buffer and the norm is the plain l_inf norm.

    ``solver`` is ``"average"`` (MATH 3, the default), ``"anderson"`` or
    ``"picard"``; ``tol`` is the relative step over the batch. A solve that
    reaches ``max_iter`` above ``tol`` warns once per model
    (:class:`NonConvergenceWarning`), or raises :class:`ConvergenceError`
    when ``strict=True``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int,
        *,
        gamma: float,
        weighted: bool = True,
        input_mean: float | Tensor = 0.0,
        input_std: float | Tensor = 1.0,
        solver: str = "average",
        tol: float = 1e-4,
        max_iter: int = 300,
        strict: bool = False,
    ) -> None:
        super().__init__()
        for name, val in (
            ("in_features", in_features),
            ("hidden_features", hidden_features),
            ("out_features", out_features),
        ):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigurationError(f"{name} must be a positive integer, got {val!r}")
        gamma = float(gamma)
        if not math.isfinite(gamma) or gamma >= 1:
            raise ConfigurationError(
                f"gamma must be a finite number below 1 (mu_eta(A) <= gamma < 1 makes the "
                f"network well posed), got gamma={gamma!r}"
            )
        get_solver(solver)
        if not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
            raise ConfigurationError(f"tol must be a positive number, got tol={tol!r}")
        if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 1:
            raise ConfigurationError(f"max_iter must be a positive integer, got {max_iter!r}")
        # Kept in float64 (cast at use) so that a later .double() loses no precision.
        mean = torch.as_tensor(input_mean, dtype=torch.float64).clone()
        std = torch.as_tensor(input_std, dtype=torch.float64).clone()
        for name, t in (("input_mean", mean), ("input_std", std)):
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != in_features):
                raise ConfigurationError(
                    f"{name} must be a scalar or a vector of length in_features={in_features}, "
                    f"got shape {tuple(t.shape)}"
                )
            _check_finite(t, name, "give finite dataset statistics")
        if not bool((std > 0).all()):
            raise ConfigurationError(f"input_std must be positive, got {input_std!r}")

        self.in_features = in_features
        self.hidden_features = hidden_features
        self.out_features = out_features
        self.gamma = gamma
        self.weighted = bool(weighted)
        self.solver = solver
        self.tol = float(tol)
        self.max_iter = max_iter
        self.strict = bool(strict)

        n, m = hidden_features, in_features
        self.register_buffer("input_mean", mean)
        self.register_buffer("input_std", std)
        self.T = nn.Parameter(torch.empty(n, n))
        if self.weighted:
            self.d = nn.Parameter(torch.zeros(n))
        else:
            self.register_buffer("d", torch.zeros(n))
        self.B = nn.Parameter(torch.empty(n, m))
        self.b = nn.Parameter(torch.empty(n))
        self.C = nn.Parameter(torch.empty(out_features, n))
        self.c = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

        self.last_stats: SolverStats | None = None
        self.last_backward_stats: SolverStats | None = None
        self._warned = False

    def reset_parameters(self) -> None:
        """``T ~ U(-1/n, 1/n)`` keeps ``sum_j |t_ij|`` near 1/2, so ``alpha*`` starts
        near 2/3 instead of the ~1/6 a Linear-style init gives; the rest as ``nn.Linear``."""
        n = self.hidden_features
        with torch.no_grad():
            nn.init.uniform_(self.T, -1.0 / n, 1.0 / n)
            for w, bias in ((self.B, self.b), (self.C, self.c)):
                bound = 1.0 / math.sqrt(w.shape[1])
                nn.init.uniform_(w, -bound, bound)
                nn.init.uniform_(bias, -bound, bound)
            if self.weighted:
                self.d.zero_()

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, hidden_features={self.hidden_features}, "
            f"out_features={self.out_features}, gamma={self.gamma}, weighted={self.weighted}, "
            f"solver={self.solver!r}, tol={self.tol}, max_iter={self.max_iter}, "
            f"strict={self.strict}"
        )

    # --- MATH 2: the parametrisation --------------------------------------------------
    @property
    def eta(self) -> Tensor:
        """Norm weights ``eta = exp(d) > 0``."""
        return torch.exp(self.d)

    @property
    def M(self) -> Tensor:
        """``M = T - diag(|T| 1) + gamma I``, with ``mu_inf(M) <= gamma`` (MATH 2)."""
        T = self.T
        diag = -T.abs().sum(dim=1) + self.gamma
        return T + torch.diag(diag)

    @property
    def A(self) -> Tensor:
        """``A = diag(eta)^-1 M diag(eta)``, so that ``mu_eta(A) = mu_inf(M) <= gamma``."""
        M = self.M
        if not self.weighted:
            return M
        eta = self.eta
        return M * eta[None, :] / eta[:, None]

    def mu(self) -> Tensor:
        """``mu_eta(A)``, in closed form ``max_i (t_ii - |t_ii|) + gamma`` (MATH 2).

        ``t - |t|`` is exactly 0 or ``2t`` in floating point, so the result is
        never above ``gamma``.
        """
        t = torch.diagonal(self.T)
        return (t - t.abs()).max() + self.gamma

    def alpha_star(self) -> float:
        """Largest provably convergent step ``1 / (1 - min_i min(a_ii, 0))`` (MATH 3)."""
        return self._step_constants()[0]

    def rho(self) -> float:
        """Contraction factor of the averaged map at ``alpha*`` in ``||.||_eta`` (MATH 3)."""
        return self._step_constants()[1]

    # --- MATH 1: the input map with normalisation folded in ---------------------------
    def input_map(self) -> tuple[Tensor, Tensor]:
        """``(B_eff, b_eff)`` in pixel units: ``B (u - mean)/std + b = B_eff u + b_eff``."""
        std = self.input_std.to(self.B.dtype)
        B_eff = self.B / std if std.dim() == 0 else self.B / std[None, :]
        mean = self.input_mean.to(self.B.dtype)
        if mean.dim() == 0:
            b_eff = self.b - B_eff.sum(dim=1) * mean
        else:
            b_eff = self.b - B_eff @ mean
        return B_eff, b_eff

    # --- MATH 5: the Lipschitz bound -----------------------------------------------------
    def lipschitz_bound(self) -> Tensor:
        """l_inf Lipschitz bound of ``u -> y`` in pixel units (MATH 5).

        ``||C diag(eta)^-1||_inf ||diag(eta) B||_inf / (1 - mu_eta(A)_+)``.
        """
        B_eff, _ = self.input_map()
        eta = self.eta
        c_norm = inf_norm(self.C / eta[None, :])
        b_norm = inf_norm(eta[:, None] * B_eff)
        return c_norm * b_norm / (1.0 - self.mu().clamp(min=0))

    # --- solving ---------------------------------------------------------------------
    @contextmanager
    def solver_settings(
        self, *, tol: float | None = None, max_iter: int | None = None
    ) -> Iterator[NEMON]:
        """Temporarily solve at another ``tol``/``max_iter`` (``None`` keeps the current one).

        Evaluation uses this to solve tighter than training: certificates
        subtract the a-posteriori error bound, so a loose solve certifies little.
        """
        saved = self.tol, self.max_iter
        if tol is not None and not (tol > 0 and math.isfinite(tol)):
            raise ConfigurationError(f"tol must be a positive number, got tol={tol!r}")
        if max_iter is not None and (not isinstance(max_iter, int) or max_iter < 1):
            raise ConfigurationError(f"max_iter must be a positive integer, got {max_iter!r}")
        self.tol = saved[0] if tol is None else float(tol)
        self.max_iter = saved[1] if max_iter is None else max_iter
        try:
            yield self
        finally:
            self.tol, self.max_iter = saved

    def _err_norm_primal(self, dx: Tensor) -> Tensor:
        return (dx.abs() * self.eta.detach()).amax(dim=1)

    def _err_norm_dual(self, dw: Tensor) -> Tensor:
        return (dw.abs() / self.eta.detach()).sum(dim=1)

    def _step_constants(self) -> tuple[float, float]:
        """``(alpha*, rho)`` of MATH 3 (the diagonal of ``A`` is that of ``M``), one device sync."""
        with torch.no_grad():
            a_min = torch.diagonal(self.M).clamp(max=0).min()
            a_min, mu = torch.stack((a_min, self.mu())).tolist()
        return 1.0 / (1.0 - a_min), 1.0 - (1.0 - max(mu, 0.0)) / (1.0 - a_min)

    def _solve(
        self, F, x0: Tensor, err_norm, which: str, alpha: float, rho: float
    ) -> tuple[Tensor, SolverStats]:
        solve = get_solver(self.solver)
        x, stats = solve(
            F,
            x0,
            alpha=alpha,
            rho=rho,
            tol=self.tol,
            max_iter=self.max_iter,
            err_norm=err_norm,
        )
        if which == "forward":
            self.last_stats = stats
        else:
            self.last_backward_stats = stats
        if not stats.converged:
            msg = (
                f"NEMON {which} solve ({stats.solver}) stopped after {stats.iterations} iterations "
                f"with relative step {stats.residual:.3g} > tol={self.tol:g} "
                f"(alpha={stats.alpha:.3g}, rho={stats.rho:.4g}); raise max_iter, loosen tol, "
                f"or use solver='average' (guaranteed to converge)"
            )
            if self.strict:
                raise ConvergenceError(msg)
            if not self._warned:
                self._warned = True
                warnings.warn(msg + " [warned once per model]", NonConvergenceWarning, stacklevel=4)
        return x, stats

    def _flatten(self, u: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        if not isinstance(u, Tensor):
            raise TypeError(f"NEMON expects a torch.Tensor input, got {type(u).__name__}")
        if u.dim() >= 1 and u.shape[-1] == self.in_features:
            lead = tuple(u.shape[:-1])
        elif u.dim() >= 2 and math.prod(u.shape[1:]) == self.in_features:
            lead = (u.shape[0],)
        else:
            raise ValueError(
                f"input of shape {tuple(u.shape)} does not flatten to rows of "
                f"in_features={self.in_features}; pass (..., {self.in_features}) or "
                f"(batch, *image_shape) with {self.in_features} values per image"
            )
        u2 = u.reshape(-1, self.in_features)
        if u2.dtype != self.B.dtype:
            u2 = u2.to(self.B.dtype)
        _check_finite(u2, "the input u", "inputs must be finite pixel values in [0, 1]")
        return u2, lead

    def _injection(self, u2: Tensor) -> Tensor:
        B_eff, b_eff = self.input_map()
        inj = torch.addmm(b_eff, u2, B_eff.t())
        _check_finite(inj, "B u + b", "the weights B, b (or input_mean/input_std) are not finite")
        return inj

    def equilibrium(self, u: Tensor) -> tuple[Tensor, SolverStats]:
        """Solve ``x* = relu(A x* + B u + b)``; returns ``(x_star, stats)`` (MATH 3, 4)."""
        u2, lead = self._flatten(u)
        A = self.A
        _check_finite(A, "A", "the weights T or d are not finite; the training has diverged")
        x = _Equilibrium.apply(A, self._injection(u2), self)
        assert self.last_stats is not None
        return x.reshape(*lead, self.hidden_features), self.last_stats

    def forward(self, u: Tensor) -> Tensor:
        x, _ = self.equilibrium(u)
        y = torch.nn.functional.linear(x, self.C, self.c)
        return y

    def __setstate__(self, state: dict[str, Any]) -> None:  # keep pickled models usable
        super().__setstate__(state)
        self.__dict__.setdefault("_warned", False)
