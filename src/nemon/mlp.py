"""The feed-forward baseline: the ``A = 0`` case of the implicit layer (MATH 16).

``x = relu(B u + b)``, ``y = C x + c`` with the same sizes, the same input
normalisation and the same interface as :class:`~nemon.model.NEMON`, so that
the training objectives, attacks, certificates and interval bounds treat both
alike. With ``A = 0`` there is nothing to solve: ``alpha* = 1``, ``rho = 0``,
the embedded iteration of MATH 9 is exact after one step (interval bound
propagation), and the Lipschitz bound of MATH 5 reads ``||C||_inf ||B||_inf``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from . import core
from ._checks import check_finite
from .model import check_positive_int, check_stop, check_tol, flatten_input, input_stats
from .protocol import ImplicitModel, SolveSettings
from .solvers import SolverStats, get_solver

# what an MLP solves with: one exact step, whatever its settings ask
EXACT = SolveSettings(solver="none", tol=0.0, max_iter=1, stop="step")


class MLP(ImplicitModel):
    """One hidden ReLU layer, ``in_features -> hidden_features -> out_features``.

    ``gamma`` is 0 (``A = 0`` has ``mu(A) = 0``); there is no solver, so every solve
    reports one exact step with an error bound that holds only the rounding of
    ``B u + b`` (MATH 12). :meth:`solving` accepts and records settings like the
    implicit models' (``settings``) and changes nothing: ``solver``, ``tol``,
    ``max_iter`` and ``stop`` always say how an MLP solves, ``"none"``, 0, 1, ``"step"``.
    """

    kind = "mlp"
    linf_well_posed = True
    gamma = 0.0
    weighted = False

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int,
        *,
        input_mean: float | Tensor = 0.0,
        input_std: float | Tensor = 1.0,
    ) -> None:
        for name, val in (
            ("in_features", in_features),
            ("hidden_features", hidden_features),
            ("out_features", out_features),
        ):
            check_positive_int(name, val)
        mean, std = input_stats(input_mean, input_std, in_features)
        super().__init__(in_features, hidden_features, out_features, EXACT)
        self.register_buffer("input_mean", mean)
        self.register_buffer("input_std", std)
        self.B = nn.Parameter(torch.empty(hidden_features, in_features))
        self.b = nn.Parameter(torch.empty(hidden_features))
        self.C = nn.Parameter(torch.empty(out_features, hidden_features))
        self.c = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As ``nn.Linear``: uniform in ``+-1/sqrt(fan_in)``, the init of NEMON's ``B, b, C, c``."""
        with torch.no_grad():
            for w, bias in ((self.B, self.b), (self.C, self.c)):
                bound = 1.0 / math.sqrt(w.shape[1])
                nn.init.uniform_(w, -bound, bound)
                nn.init.uniform_(bias, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, hidden_features={self.hidden_features}, "
            f"out_features={self.out_features}"
        )

    def constructor_kwargs(self) -> dict:
        mean, std = self.input_mean, self.input_std
        return {
            "in_features": self.in_features,
            "hidden_features": self.hidden_features,
            "out_features": self.out_features,
            "input_mean": float(mean) if mean.dim() == 0 else mean.tolist(),
            "input_std": float(std) if std.dim() == 0 else std.tolist(),
        }

    # --- settings: recorded, and nothing to solve ----------------------------------------
    def check_settings(self, settings: SolveSettings) -> SolveSettings:
        """``settings`` checked as a NEMON's would be (``solver`` may also be ``"none"``,
        ``tol`` also 0: the exact step), though an MLP solves nothing with them."""
        if settings.solver != "none":
            get_solver(settings.solver)
        tol = settings.tol
        tol = check_tol(tol) if isinstance(tol, bool) or tol != 0 else 0.0
        check_positive_int("max_iter", settings.max_iter)
        check_stop(settings.stop)
        return dataclasses.replace(settings, tol=tol)

    @property
    def solver(self) -> str:
        return EXACT.solver

    @property
    def tol(self) -> float:
        return EXACT.tol

    @property
    def max_iter(self) -> int:
        return EXACT.max_iter

    @property
    def stop(self) -> str:
        return EXACT.stop

    @property
    def eta(self) -> Tensor:
        return torch.ones(self.hidden_features, dtype=self.B.dtype, device=self.B.device)

    @property
    def A(self) -> Tensor:
        """The zero matrix: an MLP is the implicit layer with ``A = 0``."""
        n = self.hidden_features
        return torch.zeros(n, n, dtype=self.B.dtype, device=self.B.device)

    def mu(self) -> Tensor:
        return torch.zeros((), dtype=self.B.dtype, device=self.B.device)

    def step_constants(self) -> tuple[float, float]:
        """``(alpha*, rho) = (1, 0)``: with ``A = 0`` one step of MATH 3 is exact."""
        return 1.0, 0.0

    def normalise(self, u2: Tensor) -> Tensor:
        return (u2 - self.input_mean.to(u2.dtype)) / self.input_std.to(u2.dtype)

    def input_map(self) -> tuple[Tensor, Tensor]:
        std = self.input_std.to(self.B.dtype)
        B_eff = self.B / std if std.dim() == 0 else self.B / std[None, :]
        mean = self.input_mean.to(self.B.dtype)
        b_eff = self.b - (B_eff.sum(dim=1) * mean if mean.dim() == 0 else B_eff @ mean)
        return B_eff, b_eff

    def lipschitz_bound(self) -> Tensor:
        """``||C||_inf ||B_pix||_inf`` (MATH 5 with ``A = 0``, ``eta = 1``), differentiable."""
        inv_std = (1.0 / self.input_std).to(self.B.dtype)
        zero = torch.zeros(1, dtype=self.B.dtype, device=self.B.device)
        return core.LipschitzBound.apply(None, None, self.B[None], self.C[None], zero, inv_std)[0]

    def _stats(self, x: Tensor, inj: Tensor, u_n: Tensor) -> SolverStats:
        with torch.no_grad():
            g = core.gamma_k(self.in_features + 4, x.dtype)
            beta = float(self.B.detach().abs().sum(dim=1).max())
            shift = float((self.input_mean.abs() / self.input_std).max())
            ue = u_n.detach().abs().amax(dim=-1) + shift
            bounds = g * (beta * ue + float(self.b.detach().abs().max()))
        self.last_error_bounds = bounds
        stats = SolverStats(
            "none", 1, 0.0, True, 1.0, 0.0, float(bounds.max()) if len(bounds) else 0.0
        )
        self.last_forward_stats = stats
        return stats

    def equilibrium(
        self, u: Tensor, *, _where: str = "MLP.equilibrium"
    ) -> tuple[Tensor, SolverStats]:
        u2, lead = flatten_input(u, self.in_features, self.B.dtype, _where)
        u_n = self.normalise(u2)
        check_finite(self.B, "B", "the weights B, b are not finite; the training has diverged")
        inj = torch.addmm(self.b, u_n, self.B.t())
        x = torch.relu(inj)
        stats = self._stats(x, inj, u_n)
        return x.reshape(*lead, self.hidden_features), stats

    def forward(self, u: Tensor) -> Tensor:
        """Logits of pixels ``u`` in ``[0, 1]`` (checked: uint8 or 0-255 images are refused)."""
        x, _ = self.equilibrium(u, _where="MLP.forward")
        return torch.nn.functional.linear(x, self.C, self.c)

    def embedded_equilibrium(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, SolverStats]:
        """Interval bound propagation through the hidden layer (MATH 9 with ``A = 0``)."""
        lo2, lead = flatten_input(lo, self.in_features, self.B.dtype, "MLP.embedded_equilibrium")
        hi2, _ = flatten_input(hi, self.in_features, self.B.dtype, "MLP.embedded_equilibrium")
        lo_n, hi_n = self.normalise(lo2), self.normalise(hi2)
        z_lo, z_hi = core.box_injection(self.B[None], self.b[None], lo_n, hi_n)
        x_lo, x_hi = torch.relu(z_lo[0]), torch.relu(z_hi[0])
        stats = self._stats(x_hi, z_hi[0], torch.maximum(lo_n.abs(), hi_n.abs()))
        n = self.hidden_features
        return x_lo.reshape(*lead, n), x_hi.reshape(*lead, n), stats
