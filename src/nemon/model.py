"""The NEMON implicit layer: ``x = relu(A x + B u + b)``, ``y = C x + c`` (MATH 1-5, 12, 13)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from . import core
from ._checks import check_finite, check_pixels
from .errors import (
    ConfigurationError,
    ConvergenceError,
    NonConvergenceWarning,
    PrecisionWarning,
)
from .measure import inf_norm
from .protocol import ImplicitModel, SolveSettings
from .solvers import _TINY, DEFAULT_SOLVER, STOP_RULES, SolverStats, get_solver, stop_factor


def check_positive_int(name: str, val: Any) -> None:
    if not isinstance(val, int) or isinstance(val, bool) or val < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {val!r}")


def check_tol(tol: Any, name: str = "tol") -> float:
    if (
        isinstance(tol, bool)
        or not isinstance(tol, (int, float))
        or not (math.isfinite(tol) and tol > 0)
    ):
        raise ConfigurationError(f"{name} must be a positive finite number, got {name}={tol!r}")
    return float(tol)


def check_stop(stop: Any) -> str:
    if stop not in STOP_RULES:
        raise ConfigurationError(
            f"unknown stopping rule stop={stop!r}; choose one of {list(STOP_RULES)} (MATH 12)"
        )
    return stop


def precision_floor(dtype: torch.dtype) -> float:
    """Smallest relative step a solve in ``dtype`` can be asked for (MATH 12): 8 machine epsilons.

    Below it the iterates stagnate at rounding level (the relative step of a
    float32 solve rarely falls under ~1e-7), so such a tolerance is not honoured.
    """
    return 8.0 * torch.finfo(dtype).eps


def input_stats(
    mean: float | Tensor, std: float | Tensor, in_features: int
) -> tuple[Tensor, Tensor]:
    """Validated dataset statistics, kept in float64 (cast at use)."""
    m = torch.as_tensor(mean, dtype=torch.float64).clone()
    s = torch.as_tensor(std, dtype=torch.float64).clone()
    for name, t in (("input_mean", m), ("input_std", s)):
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != in_features):
            raise ConfigurationError(
                f"{name} must be a scalar or a vector of length in_features={in_features}, "
                f"got shape {tuple(t.shape)}"
            )
        check_finite(t, name, "give finite dataset statistics")
    if not bool((s > 0).all()):
        raise ConfigurationError(f"input_std must be positive, got {std!r}")
    return m, s


def flatten_input(
    u: Tensor, in_features: int, dtype: torch.dtype, where: str = "the model"
) -> tuple[Tensor, tuple[int, ...]]:
    """``u`` as rows of ``in_features`` values, and the leading shape to restore.

    ``u`` must hold float pixels in ``[0, 1]`` (:func:`nemon._checks.check_pixels`, one
    reduction; the error names ``where``): a uint8 or 0-255 image would give a number
    without an error otherwise.
    """
    if not isinstance(u, Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor input, got {type(u).__name__}")
    check_pixels(u, where)
    if u.dim() >= 1 and u.shape[-1] == in_features:
        lead = tuple(u.shape[:-1])
    elif u.dim() >= 2 and math.prod(u.shape[1:]) == in_features:
        lead = (u.shape[0],)
    else:
        raise ValueError(
            f"input of shape {tuple(u.shape)} does not flatten to rows of "
            f"in_features={in_features}; pass (..., {in_features}) or "
            f"(batch, *image_shape) with {in_features} values per image"
        )
    u2 = u.reshape(-1, in_features)
    if u2.dtype != dtype:
        u2 = u2.to(dtype)
    return u2, lead


class NEMON(ImplicitModel):
    """Non-Euclidean monotone operator network (one implicit layer).

    ``forward(u)`` takes pixels in ``[0, 1]`` of any leading shape that
    flattens to ``in_features`` and returns logits. The input is normalised
    with ``(u - input_mean) / input_std`` first, the first affine map of the
    model (MATH 1), so :meth:`lipschitz_bound`, the certificates and the
    attacks all speak of pixel units.

    ``A`` is built from the free parameters ``T`` and ``d`` (MATH 2) so that
    ``mu_eta(A) <= gamma`` for every parameter value; with ``weighted=False``,
    ``d`` is a zero buffer and the norm is the plain l_inf norm (MATH 13: both
    parametrisations describe the same functions).

    ``solver`` is ``"jacobi"`` (the default: every unit solved exactly given the others,
    MATH 17), ``"average"`` (the paper's averaged iteration at ``alpha*``, MATH 3: the
    same fixed point in 4-30 times more iterations), ``"anderson"`` or ``"picard"``;
    ``stop`` is ``"step"`` (relative step <= ``tol``, the paper's rule) or
    ``"bound"`` (relative a-posteriori error bound <= ``tol``, MATH 12).
    A solve that reaches ``max_iter`` first warns once per model
    (:class:`NonConvergenceWarning`), or raises :class:`ConvergenceError` when
    ``strict=True``. These are the model's :class:`~nemon.protocol.SolveSettings`
    (``model.settings``), changed for a block with :meth:`solving`, which also freezes the
    weights' derived quantities, turns warm starts on and error bounds off
    (:class:`~nemon.protocol.ImplicitModel`).
    """

    kind = "nemon"
    linf_well_posed = True
    supports_warm_start = True

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
        solver: str = DEFAULT_SOLVER,
        tol: float = 1e-4,
        max_iter: int = 300,
        stop: str = "step",
        strict: bool = False,
    ) -> None:
        for name, val in (
            ("in_features", in_features),
            ("hidden_features", hidden_features),
            ("out_features", out_features),
        ):
            check_positive_int(name, val)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
            raise ConfigurationError(f"gamma must be a number below 1, got gamma={gamma!r}")
        gamma = float(gamma)
        if not math.isfinite(gamma) or gamma >= 1:
            raise ConfigurationError(
                f"gamma must be a finite number below 1 (mu_eta(A) <= gamma < 1 makes the "
                f"network well posed), got gamma={gamma!r}"
            )
        settings = self.check_settings(
            SolveSettings(solver=solver, tol=tol, max_iter=max_iter, stop=stop, strict=bool(strict))
        )
        mean, std = input_stats(input_mean, input_std, in_features)

        super().__init__(in_features, hidden_features, out_features, settings)
        self.gamma = gamma
        self.weighted = bool(weighted)

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

    def check_settings(self, settings: SolveSettings) -> SolveSettings:
        """``settings`` checked for a NEMON: a solver of :data:`nemon.solvers.SOLVERS`, a
        positive finite ``tol``, a positive integer ``max_iter``, a stop rule of
        :data:`nemon.solvers.STOP_RULES` (not ``"bound"`` with ``"picard"``)."""
        solver, stop = settings.solver, settings.stop
        get_solver(solver)
        tol = check_tol(settings.tol)
        check_positive_int("max_iter", settings.max_iter)
        check_stop(stop)
        if solver == "picard" and stop == "bound":
            raise ConfigurationError(
                "solver='picard' has no known contraction factor, so stop='bound' can never be "
                "met; use stop='step' or solver='average'"
            )
        return dataclasses.replace(settings, tol=tol)

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
            f"stop={self.stop!r}, strict={self.strict}"
        )

    def constructor_kwargs(self) -> dict:
        """The keyword arguments that rebuild this model (the model file stores them)."""
        mean, std = self.input_mean, self.input_std
        return {
            "in_features": self.in_features,
            "hidden_features": self.hidden_features,
            "out_features": self.out_features,
            "gamma": self.gamma,
            "weighted": self.weighted,
            "input_mean": float(mean) if mean.dim() == 0 else mean.tolist(),
            "input_std": float(std) if std.dim() == 0 else std.tolist(),
            "solver": self.solver,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "stop": self.stop,
        }

    # --- MATH 2: the parametrisation --------------------------------------------------
    def _gamma_t(self) -> Tensor:
        return torch.tensor([self.gamma], dtype=self.T.dtype, device=self.T.device)

    @property
    def eta(self) -> Tensor:
        """Norm weights ``eta = exp(d) > 0``."""
        return torch.exp(self.d)

    @property
    def M(self) -> Tensor:
        """``M = T - diag(|T| 1) + gamma I``, with ``mu_inf(M) <= gamma`` (MATH 2)."""
        T = self.T
        return T + torch.diag(self.gamma - T.abs().sum(dim=1))

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

    def step_constants(self) -> tuple[float, float]:
        """``(alpha*, rho)`` of MATH 3, with one device sync: the largest provably convergent
        step ``1 / (1 - min_i min(a_ii, 0))`` and the contraction factor of the averaged map
        at ``alpha*`` in ``||.||_eta``."""
        with torch.no_grad():
            A, M, _ = core.build_A(self.T[None], None, self._gamma_t())
            alpha, rho = core.step_constants(M, self.T[None], self._gamma_t())
        return alpha[0], rho[0]

    def unweighted_equivalent(self) -> NEMON:
        """The unweighted NEMON computing the same function (MATH 13).

        ``relu`` commutes with positive diagonal scaling, so with ``x' = E x``,
        ``E = diag(eta)``, the weighted model equals the unweighted one with
        matrix ``M``, input map ``E B, E b`` and output map ``C E^-1``; its ``T'``
        keeps the off-diagonal of ``M`` and sets ``t'_ii = r_i / 2`` with
        ``r_i = m_ii - gamma + sum_{j != i} |m_ij| <= 0``. Same Lipschitz bound,
        same ``alpha*`` and ``rho``.
        """
        kw = self.constructor_kwargs()
        kw["weighted"] = False
        twin = type(self)(**kw).to(self.T)
        with torch.no_grad():
            M = self.M
            E = self.eta
            off = M - torch.diag(torch.diagonal(M))
            r = torch.diagonal(M) - self.gamma + off.abs().sum(dim=1)
            twin.T.copy_(off + torch.diag(r.clamp(max=0) / 2))
            twin.B.copy_(E[:, None] * self.B)
            twin.b.copy_(E * self.b)
            twin.C.copy_(self.C / E[None, :])
            twin.c.copy_(self.c)
        return twin

    # --- MATH 1: the input map ---------------------------------------------------------
    def normalise(self, u2: Tensor) -> Tensor:
        """``(u - input_mean) / input_std`` for rows of pixels (MATH 1)."""
        mean = self.input_mean.to(u2.dtype)
        std = self.input_std.to(u2.dtype)
        return (u2 - mean) / std

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
        """l_inf Lipschitz bound of ``u -> y`` in pixel units (MATH 5), differentiable.

        ``||C diag(eta)^-1||_inf ||diag(eta) B_pix||_inf / (1 - mu_eta(A)_+)``.
        """
        inv_std = (1.0 / self.input_std).to(self.B.dtype)
        d = self.d[None] if self.weighted else None
        L = core.LipschitzBound.apply(
            self.T[None], d, self.B[None], self.C[None], self._gamma_t(), inv_std
        )
        return L[0]

    # --- solving ---------------------------------------------------------------------
    def _spec(self, embedded: bool = False, frozen: _FrozenWeights | None = None) -> core.LayerSpec:
        return core.LayerSpec(
            gamma=self._gamma_t() if frozen is None else frozen.gamma,
            weighted=self.weighted,
            solver=self.solver,
            tol=self.tol,
            max_iter=self.max_iter,
            stop=self.stop,
            embedded=embedded,
            keep_last_update=self.settings.error_bounds,
            grad_enabled=torch.is_grad_enabled(),
            on_backward=self._record_backward,
            warm=self._solve_state.warm,
        )

    def _check_precision(self, dtype: torch.dtype, rho: float) -> None:
        step_tol = self.tol / stop_factor(self.stop, rho) if self.stop == "bound" else self.tol
        floor = precision_floor(dtype)
        if step_tol < floor:
            self._warn_once(
                "precision",
                f"NEMON tol={self.tol:g} (stop={self.stop!r}, rho={rho:.4g}) asks for relative "
                f"steps of {step_tol:.2g}, below what {dtype} resolves (about {floor:.1g}); the "
                "solve may stall at rounding level and hit max_iter: use a looser tol or "
                "model.double() (MATH 12)",
                PrecisionWarning,
            )

    def _report(self, rec: core.SolveRecord, which: str) -> SolverStats:
        m = rec.members[0]
        stats = SolverStats(
            rec.solver, m.iterations, m.residual, m.converged, rec.alpha[0], rec.rho[0], math.nan
        )
        if not m.converged:
            msg = (
                f"NEMON {which} solve ({stats.solver}, stop={self.stop!r}) stopped after "
                f"{stats.iterations} iterations with relative step {stats.residual:.3g} above "
                f"tol={self.tol:g} (alpha={stats.alpha:.3g}, rho={stats.rho:.4g}); raise max_iter"
                + (
                    ", loosen tol, or use solver='jacobi' (guaranteed to converge)"
                    if self.solver not in ("average", "jacobi")
                    else f" or loosen tol ({self.solver} converges, at rate rho)"
                )
            )
            if self.strict:
                raise ConvergenceError(msg)
            self._warn_once(which, msg, NonConvergenceWarning)
        return stats

    def _record_backward(self, rec: core.SolveRecord) -> None:
        stats = self._report(rec, "backward")
        if rec.last_update is not None and rec.rho[0] < 1:
            eta = self.eta.detach()
            if rec.last_update.shape[-1] != eta.shape[0]:  # the embedded pair (MATH 10)
                eta = eta.repeat(rec.last_update.shape[-1] // eta.shape[0])
            dual = rec.last_update[0].abs().div(eta).sum(dim=1)
            stats.error_bound = float((rec.rho[0] * dual / (1 - rec.rho[0])).max())
        elif rec.rho[0] >= 1:
            stats.error_bound = math.inf
        self.last_backward_stats = stats

    def _rounding_constants(self) -> tuple[Tensor, float, float, float, float]:
        """``(eta, beta, bbar, max mean/std, mat)``: the weights' part of :meth:`_rounding`."""
        with torch.no_grad():
            eta = self.eta.detach()
            T = self.T.detach()
            M = self.M.detach()
            beta = float((self.B.detach().abs().sum(dim=1) * eta).max())
            bbar = float((self.b.detach().abs() * eta).max())
            mean_over_std = float((self.input_mean.abs() / self.input_std).max())
            mat = float(M.abs().sum(dim=1).max()) + float(T.abs().sum(dim=1).max())
            mat += abs(self.gamma) + 1.0
        return eta, beta, bbar, mean_over_std, mat

    def _rounding(
        self, x: Tensor, inj: Tensor, u_n: Tensor, last: Tensor, alpha: float, constants: tuple
    ) -> Tensor:
        """Per-sample bound on one step's rounding error in ``||.||_eta`` (MATH 12).

        ``alpha``: the averaging step (1 for one evaluation of the undamped map).
        """
        dt = x.dtype
        n, m = self.hidden_features, self.in_features
        eta, beta, bbar, mean_over_std, mat = constants
        with torch.no_grad():
            xe = (x.abs() * eta).amax(dim=-1)  # ||x||_eta
            ie = (inj.abs() * eta).amax(dim=-1)
            de = (last.abs() * eta).amax(dim=-1)
            ue = u_n.abs().amax(dim=-1) + mean_over_std
            g = core.gamma_k(n + m + 16, dt)
            u = core.unit_roundoff(dt)
            return alpha * g * (mat * xe + ie + beta * ue + bbar) + 8 * u * (xe + de)

    def _t_abs(self) -> float:
        """``max_i sum_j |t_ij|``."""
        return float(self.T.detach().abs().sum(dim=1).max())

    def _rho_safe(self, rho: float, dtype: torch.dtype, t_abs: float) -> float:
        """``rho`` inflated by the rounding of ``alpha*`` and ``mu`` (MATH 12)."""
        return min(rho + self._mu_slack(dtype, t_abs), 1.0)

    def _mu_slack(self, dtype: torch.dtype, t_abs: float) -> float:
        """How far the computed ``A``'s measure may exceed ``mu`` by rounding (MATH 12 (c))."""
        return 2 * core.gamma_k(self.hidden_features + 2, dtype) * (t_abs + abs(self.gamma) + 1.0)

    def _residual_bound(
        self,
        x: Tensor,
        inj: Tensor,
        u_n: Tensor,
        Amat: Tensor,
        embedded: bool,
        constants: tuple,
        t_abs: float,
    ) -> Tensor:
        """Per-sample ``||x - x*||_eta <= (||F(x) - x||_eta + e) / (1 - mu_+)`` for any ``x``.

        ``F`` is the undamped map ``x -> relu(Amat x + inj)`` (the embedded one, in the pair
        norm, with ``embedded``), evaluated once more here; ``e`` bounds that evaluation's
        rounding and ``mu_+`` is inflated by the rounding of ``A`` (MATH 12, 17). The bound of
        the Jacobi iteration: it holds for any point, and its rounding term is not multiplied
        by ``1 / (1 - rho_J)``.
        """
        with torch.no_grad():
            r = torch.addmm(inj, x, Amat.transpose(0, 1)).relu_().sub_(x)
            mu = max(float(self.mu()), 0.0) + self._mu_slack(x.dtype, t_abs)
            if not mu < 1.0:
                return torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
            if embedded:
                x, inj, r = self._pair_abs(x), self._pair_abs(inj), self._pair_abs(r)
            e = self._rounding(x, inj, u_n, r, 1.0, constants)
            b = ((r.abs() * constants[0]).amax(dim=-1) + e) / (1.0 - mu)
            return torch.where(torch.isfinite(b), b, torch.full_like(b, math.inf))

    # --- what depends on the weights alone ---------------------------------------------
    def _check_weights(self, *names: str) -> None:
        for name in names:
            if name == "d" and not self.weighted:
                continue
            check_finite(getattr(self, name), name, WEIGHT_HINTS[name])

    def _frozen_state(self) -> _FrozenWeights | None:
        """The weights' derived quantities inside ``solving(frozen=True)``, else None.

        Outside it, every forward checks ``T, d, B, b`` for non-finite values and
        rebuilds ``A``, ``alpha*``, ``rho`` (MATH 2-3) and the weights' part of the
        rounding bound (MATH 12): about a third of what a forward costs besides its
        iterations, paid again by every one of an attack's thousands of forwards. Inside,
        they are built once per state of the weights (the key below), by the same code, so
        every result is bit-identical.
        """
        if not self.settings.frozen:
            return None
        key = (
            self.gamma,
            self.weighted,
            self.solver,
            *((t.data_ptr(), t._version, t.dtype, t.device) for t in self._solve_weights()),
        )
        state = self._solve_state
        frozen = state.frozen
        if frozen is None or frozen.key != key:
            frozen = state.frozen = _FrozenWeights(self, key)
        return frozen

    def _solve_weights(self) -> tuple[Tensor, ...]:
        """Every tensor a solve and its error bound read (not ``C, c``)."""
        return (self.T, self.d, self.B, self.b, self.input_mean, self.input_std)

    def _layer(
        self, u_n: Tensor, inj: Tensor, embedded: bool, frozen: _FrozenWeights | None
    ) -> tuple[Tensor, SolverStats]:
        """Solve the (embedded) layer for the injection ``inj`` of shape ``(N, n or 2n)``.

        ``frozen``: :meth:`_frozen_state`, taken once by the caller for the whole forward.
        """
        if frozen is None:
            self._check_weights("T", "d")
        spec = self._spec(embedded, frozen)
        if frozen is not None:
            spec.prepared = frozen.layer(embedded)
        d = self.d[None] if self.weighted else None
        x = core.ImplicitLayer.apply(self.T[None], d, inj[None], spec)[0]
        rec = spec.forward
        self._check_precision(x.dtype, rec.rho[0])
        stats = self._report(rec, "forward")
        if not spec.keep_last_update:  # inside solving(error_bounds=False): none computed
            bounds = None
        elif rec.rho[0] < 1 and rec.last_update is not None:
            t_abs = frozen.t_abs if frozen is not None else self._t_abs()
            xd, last = x.detach(), rec.last_update[0]
            constants = frozen.rounding if frozen is not None else self._rounding_constants()
            if self.solver == "jacobi":
                Amat = spec.prepared.Amat[0]
                bounds = self._residual_bound(
                    xd, inj.detach(), u_n, Amat, embedded, constants, t_abs
                )
            elif embedded:
                rho = self._rho_safe(rec.rho[0], x.dtype, t_abs)
                inj_n = self._pair_abs(inj).detach()
                bounds = self._pair_bound(xd, last, inj_n, u_n, rec.alpha[0], rho, constants)
            else:
                rho = self._rho_safe(rec.rho[0], x.dtype, t_abs)
                e = self._rounding(xd, inj.detach(), u_n, last, rec.alpha[0], constants)
                bounds = core.per_sample_bound(rho, last, constants[0], e)
        else:
            bounds = torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
        if bounds is not None:
            stats.error_bound = float(bounds.max()) if bounds.numel() else 0.0
        self.last_error_bounds = bounds
        self.last_forward_stats = stats
        spec.forward = None  # release the iterates held for the bound
        return x, stats

    def _injection(self, u_n: Tensor, frozen: _FrozenWeights | None) -> Tensor:
        if frozen is None:
            self._check_weights("B", "b")
        return torch.addmm(self.b, u_n, self.B.t())

    def equilibrium(
        self, u: Tensor, *, _where: str = "NEMON.equilibrium"
    ) -> tuple[Tensor, SolverStats]:
        """Solve ``x* = relu(A x* + B u + b)``; returns ``(x_star, stats)`` (MATH 3, 4).

        ``u``: float pixels in ``[0, 1]`` (anything else is refused, naming the range found).
        """
        u2, lead = flatten_input(u, self.in_features, self.B.dtype, _where)
        u_n = self.normalise(u2)
        frozen = self._frozen_state()
        x, stats = self._layer(u_n, self._injection(u_n, frozen), False, frozen)
        return x.reshape(*lead, self.hidden_features), stats

    def forward(self, u: Tensor) -> Tensor:
        x, _ = self.equilibrium(u, _where="NEMON.forward")
        return torch.nn.functional.linear(x, self.C, self.c)

    def embedded_equilibrium(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, SolverStats]:
        """``(x_lo*, x_hi*)`` of the embedded map for boxes ``[lo, hi]`` of pixels (MATH 9).

        No widening here: see :func:`nemon.certificates.interval_bounds`, which adds it.
        Differentiable (MATH 10) with respect to every parameter and to ``lo``, ``hi``.
        """
        lo2, lead = flatten_input(lo, self.in_features, self.B.dtype, "NEMON.embedded_equilibrium")
        hi2, _ = flatten_input(hi, self.in_features, self.B.dtype, "NEMON.embedded_equilibrium")
        frozen = self._frozen_state()
        if frozen is None:
            self._check_weights("B")
        inj, u_abs = self._box_injection(lo2, hi2)
        x, stats = self._layer(u_abs, inj, True, frozen)
        n = self.hidden_features
        return x[:, :n].reshape(*lead, n), x[:, n:].reshape(*lead, n), stats

    def _box_injection(self, lo2: Tensor, hi2: Tensor) -> tuple[Tensor, Tensor]:
        """``cat(z_lo, z_hi)`` of MATH 9 for boxes of pixels ``(N, m)``, and the largest
        normalised input of each box coordinate, ``max(|lo_n|, |hi_n|)`` (for MATH 12)."""
        lo_n, hi_n = self.normalise(lo2), self.normalise(hi2)
        z_lo, z_hi = core.box_injection(self.B[None], self.b[None], lo_n, hi_n)
        return torch.cat((z_lo[0], z_hi[0]), dim=-1), torch.maximum(lo_n.abs(), hi_n.abs())

    def _pair_abs(self, t: Tensor) -> Tensor:
        """``max(|t_lo|, |t_hi|)`` of an embedded pair ``(N, 2n)`` (its norm, MATH 9)."""
        n = self.hidden_features
        return torch.maximum(t[:, :n].abs(), t[:, n:].abs())

    def _pair_bound(
        self, x: Tensor, last: Tensor, inj_abs: Tensor, u_abs: Tensor, alpha, rho, constants
    ) -> Tensor:
        """Per-box a-posteriori bound ``delta`` of an embedded iterate ``x`` with last update
        ``last`` (MATH 9, 12), at a contraction factor ``rho`` (already made safe)."""
        xd, ld = self._pair_abs(x), self._pair_abs(last)
        e = self._rounding(xd, inj_abs, u_abs, ld, alpha, constants)
        return core.per_sample_bound(rho, ld, constants[0], e)

    @torch.no_grad()
    def settle_boxes(
        self, lo: Tensor, hi: Tensor, settle: BoxSettler, *, every: int = 5
    ) -> tuple[Tensor, SolverStats]:
        """Iterate the embedded map of MATH 9 box by box until each box's question is settled.

        The iteration of :meth:`embedded_equilibrium` (from zeros; averaged at ``alpha*`` or
        Jacobi's, MATH 17) on
        boxes ``[lo, hi]`` of pixels, ``(N, in_features)``. Every ``every`` iterations, for
        the boxes still open, with ``w`` the widening of :func:`nemon.certificates.interval_bounds`
        (the a-posteriori bound of MATH 9 with the rounding of MATH 12):

        * ``outer = (max(x_lo - w, 0), x_hi + w)`` encloses every equilibrium of the box;
        * ``inner = (x_lo + w, max(x_hi - w, 0))``: the embedded fixed point has
          ``x_lo* <= x_lo + w`` and ``x_hi* >= x_hi - w`` (``inner`` may be inverted; only
          these two inequalities are meant), so every enclosure a longer solve could give
          reaches at least as far as ``inner``.

        ``settle(rows, outer, inner) -> (yes, no)``: bool tensors over ``rows`` (indices into
        the batch), ``yes`` where ``outer`` proves the property, ``no`` where ``inner`` proves
        that no enclosure from this iteration ever will. Such a box leaves the batch. A box
        whose own relative step meets the model's stop rule at ``tol``, or that reaches
        ``max_iter``, leaves with its ``yes`` of that check (MATH 9, "Settling box by box").
        Returns the ``yes`` of every box ``(N,)`` and the statistics: the last iteration any
        box was checked at, the largest relative step of the boxes the stop rule settled,
        ``converged`` false when some box reached ``max_iter`` (or a non-finite step) unsettled
        (then a :class:`NonConvergenceWarning`, or :class:`ConvergenceError` when ``strict``),
        ``error_bound`` the largest ``delta`` at the check that settled a box. The averaged
        (MATH 3) or the Jacobi (MATH 17) iteration, as the model's ``solver`` says:
        :func:`nemon.certificates.certified_mask` uses this for those and solves to the stop
        rule otherwise.
        """
        check_positive_int("every", every)
        if self.solver not in SETTLING_SOLVERS:
            raise ConfigurationError(
                f"settle_boxes runs the averaged or the Jacobi iteration, but this model's "
                f"solver is {self.solver!r}; use nemon.certificates.interval_bounds"
            )
        if lo.shape != hi.shape:
            raise ValueError(
                f"lo and hi must have the same shape, got {tuple(lo.shape)} and {tuple(hi.shape)}"
            )
        lo2, _ = flatten_input(lo, self.in_features, self.B.dtype, "NEMON.settle_boxes")
        hi2, _ = flatten_input(hi, self.in_features, self.B.dtype, "NEMON.settle_boxes")
        N, n, dev = lo2.shape[0], self.hidden_features, lo2.device
        frozen = self._frozen_state()
        if frozen is None:
            self._check_weights("T", "d", "B", "b")
            d = self.d[None] if self.weighted else None
            layer = core.prepare_layer(self.T[None], d, self._gamma_t(), True, self.solver)
            rounding, t_abs = self._rounding_constants(), self._t_abs()
        else:
            layer, rounding, t_abs = frozen.layer(True), frozen.rounding, frozen.t_abs
        alpha, rho, a = layer.alpha[0], layer.rho[0], layer.fwd_At[0]
        jacobi = layer.scale is not None  # x <- relu(x a + inj * s), no averaging (MATH 17)
        self._check_precision(lo2.dtype, rho)
        eta = rounding[0]
        factor = stop_factor(self.stop, rho)
        rho_safe = self._rho_safe(rho, lo2.dtype, t_abs)
        inj, u_abs = self._box_injection(lo2, hi2)
        inj_abs = self._pair_abs(inj)
        step_inj = inj * layer.scale[0] if jacobi else inj
        values = torch.zeros(N, dtype=torch.bool, device=dev)
        widening = torch.zeros(N, dtype=lo2.dtype, device=dev)
        rows = torch.arange(N, device=dev)
        x = torch.zeros_like(inj)
        checked, residual, unsettled, due = 0, 0.0, 0, every
        for k in range(1, self.max_iter + 1):
            if not len(rows):
                break
            fx = torch.addmm(step_inj, x, a).relu_()
            x_new = fx if jacobi else torch.lerp(x, fx, alpha)
            if k < due and k < self.max_iter:
                x = x_new
                continue
            last, x = x_new - x, x_new
            checked, due = k, k + max(every, int(k * SETTLE_GROWTH))
            if jacobi:
                delta = self._residual_bound(x, inj, u_abs, layer.Amat[0], True, rounding, t_abs)
            elif rho_safe < 1:
                delta = self._pair_bound(x, last, inj_abs, u_abs, alpha, rho_safe, rounding)
            else:  # no contraction known: nothing is enclosed
                delta = torch.full_like(x[:, 0], math.inf)
            w = delta[:, None] / eta
            outer = ((x[:, :n] - w).clamp(min=0), x[:, n:] + w)
            inner = (x[:, :n] + w, (x[:, n:] - w).clamp(min=0))
            yes, no = settle(rows, outer, inner)
            rel = torch.linalg.vector_norm(last, dim=1) / (
                torch.linalg.vector_norm(x, dim=1) + _TINY
            )
            met = rel * factor <= self.tol  # False where rel is NaN
            decided = yes | no
            final = ~decided & (met | ~torch.isfinite(rel) | (k == self.max_iter))
            if bool(final.any()):
                by_rule = final & met
                if bool(by_rule.any()):
                    residual = max(residual, float(rel[by_rule].max()))
                unsettled += int((final & ~met).sum())
            leave = decided | final
            if bool(leave.any()):
                values[rows[leave]] = yes[leave]
                widening[rows[leave]] = delta[leave]
                stay = ~leave
                rows, x = rows[stay], x[stay]
                step_inj, inj_abs, u_abs = step_inj[stay], inj_abs[stay], u_abs[stay]
                if jacobi:
                    inj = inj[stay]
        stats = SolverStats(self.solver, checked, residual, unsettled == 0, alpha, rho, math.nan)
        stats.error_bound = float(widening.max()) if N else 0.0
        if unsettled:
            msg = (
                f"NEMON embedded solve (settle_boxes, stop={self.stop!r}) left {unsettled} of "
                f"{N} box(es) unsettled, their relative step above tol={self.tol:g} (or not "
                f"finite) after max_iter={self.max_iter} iterations (alpha={alpha:.3g}, "
                f"rho={rho:.4g}); raise max_iter or loosen tol (the averaged iteration "
                "converges, at rate rho)"
            )
            if self.strict:
                raise ConvergenceError(msg)
            self._warn_once("forward", msg, NonConvergenceWarning)
        self.last_error_bounds = widening
        self.last_forward_stats = stats
        return values, stats


# the solvers settle_boxes runs (the others solve to the stop rule: interval_bounds)
SETTLING_SOLVERS = ("average", "jacobi")
# settle_boxes checks every `every` iterations, then every SETTLE_GROWTH * k: checks cost about
# an iteration each, and a box that settles at iteration k waits at most that share longer
SETTLE_GROWTH = 0.1
# settle_boxes' question: (rows, outer, inner) -> (yes, no), bool tensors over rows
BoxSettler = Callable[[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]], tuple[Tensor, Tensor]]

WEIGHT_HINTS = {
    "T": "the weights T or d are not finite; the training has diverged",
    "d": "the weights T or d are not finite; the training has diverged",
    "B": "the weights B, b are not finite; the training has diverged",
    "b": "the weights B, b are not finite; the training has diverged",
}


class _FrozenWeights:
    """What ``NEMON.solving(frozen=True)`` builds once per state of the weights."""

    def __init__(self, model: NEMON, key: tuple) -> None:
        model._check_weights("T", "d", "B", "b")
        self.key = key
        self.solver = model.solver
        self._model_layer = (model.T[None], model.d[None] if model.weighted else None)
        self.gamma = model._gamma_t()
        self._layers: dict[bool, tuple] = {}
        self.rounding = model._rounding_constants()
        self.t_abs = model._t_abs()

    def layer(self, embedded: bool) -> core.Layer:
        """The :class:`nemon.core.Layer` of :class:`nemon.core.ImplicitLayer`."""
        if embedded not in self._layers:
            T, d = self._model_layer
            self._layers[embedded] = core.prepare_layer(T, d, self.gamma, embedded, self.solver)
        return self._layers[embedded]


__all__ = ["NEMON", "inf_norm"]
