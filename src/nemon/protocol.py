"""The model protocol: what training, evaluation, attacks and certificates rely on (MATH 1-5, 12).

:class:`~nemon.model.NEMON`, its feed-forward baseline :class:`~nemon.mlp.MLP` (``A = 0``)
and the l2 baseline :class:`~nemon.mon.MON` are treated alike by the rest of the package
through one small interface, :class:`ImplicitModel`: the sizes, the maps of MATH 1 (the
input normalisation and the input map in pixel units), the equilibrium and the logits, the
Lipschitz bound of MATH 5, the step constants of MATH 3, the records of the last solves,
and how the model solves: one frozen :class:`SolveSettings` (``model.settings``) changed for
a block by one context manager, :meth:`ImplicitModel.solving`, which nests.

What a model keeps between solves that is not a setting (the warm-start memory, the
weights' derived quantities built once inside ``solving(frozen=True)``, the record of the
warnings already given) lives in one private :class:`SolveState` per model. A copy or a
pickle of a model starts outside every ``solving`` block: with the settings in force
outside them, no warm-start memory and no frozen cache.
"""

from __future__ import annotations

import abc
import dataclasses
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from .errors import ConfigurationError
from .solvers import DEFAULT_SOLVER, SolverStats

# the switches of SolveSettings: True or False, never a truthy stand-in
SWITCHES = ("strict", "frozen", "warm_start", "error_bounds", "spend_warnings")


@dataclass(frozen=True)
class SolveSettings:
    """How a model solves its fixed points: the solver, its stopping rule, and the modes.

    * ``solver``, ``tol``, ``max_iter``, ``stop``: the iteration and its stopping rule
      (relative step ``"step"`` or a-posteriori error bound ``"bound"`` at most ``tol``,
      MATH 12); which values are valid depends on the model (:meth:`ImplicitModel.check_settings`).
    * ``strict``: a solve that reaches ``max_iter`` first raises
      :class:`~nemon.errors.ConvergenceError` instead of warning once per model.
    * ``frozen``: what depends on the weights alone (their finiteness check, ``A``,
      ``alpha*``, ``rho``, the weights' part of the rounding bound: MATH 2, 3, 12) is built
      once per state of the weights for all the solves inside, every result bit-identical.
      A parameter or buffer changed in place, replaced, or moved to another dtype or device
      is noticed; a write through ``.data`` is not and must not happen inside.
    * ``warm_start``: every solve starts where the last solve of its kind and shape ended:
      a forward solve from the last ``x*``, a backward one from its gradient ``g`` plus the
      last solution's ``A^T J w`` (``w - g``, which moves less than ``w``); otherwise from
      zero and from ``g``. An attack's successive inputs differ a little, so this saves
      iterations. The fixed point, the stopping rule and the error bound do not depend on
      the start (MATH 3, 12), so results agree with cold starts to the tolerance, not bit
      for bit. The memory starts empty where a block turns warm starts on and is dropped
      where it ends; an inner ``warm_start=False`` suspends it.
    * ``error_bounds``: False skips the a-posteriori error bound of every solve (MATH 3,
      12; a dozen small operations and a host synchronisation per solve, a visible share
      of an attack's forward on a small batch: docs/speed.md, "The levers"):
      ``stats.error_bound`` is NaN and ``last_error_bounds`` None; the iterates, so every
      logit and gradient, are the same bit for bit (an attack reads nothing else).
    * ``spend_warnings``: False forgets, on leaving the block that turned it off, the
      once-per-model warnings given inside it (each still once), so the model warns again
      after it (the attacks, which silence :class:`~nemon.errors.NonConvergenceWarning` and
      count every solve themselves).

    The switches that a model has no use for (an MLP solves nothing, a MON has no warm
    starts, frozen cache or error bounds) are recorded and change nothing.
    """

    solver: str = DEFAULT_SOLVER
    tol: float = 1e-4
    max_iter: int = 300
    stop: str = "step"
    strict: bool = False
    frozen: bool = False
    warm_start: bool = False
    error_bounds: bool = True
    spend_warnings: bool = True

    def __post_init__(self) -> None:
        for name in SWITCHES:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigurationError(f"{name} must be True or False, got {name}={value!r}")


class SolveState:
    """What a model keeps between solves that is not a setting (one per model, private).

    ``outer``: the settings each enclosing :meth:`ImplicitModel.solving` block replaced,
    outermost first; ``warm``: the warm-start memory (None: cold starts); ``frozen``: the
    weights' derived quantities built inside ``solving(frozen=True)`` (None: none built);
    ``warned``: the keys of the once-per-model warnings already given.
    """

    def __init__(self, warned: Any = ()) -> None:
        self.outer: list[SolveSettings] = []
        self.warm: dict | None = None
        self.frozen: Any = None
        self.warned: set[str] = set(warned)


class ImplicitModel(nn.Module, abc.ABC):
    """One implicit layer ``x* = relu(A x* + B u_n + b)``, ``y = C x* + c`` (MATH 1), as the
    rest of the package sees it: NEMON, MLP (``A = 0``) and MON implement it alike.

    Class attributes: ``kind`` (``"nemon"``, ``"mlp"``, ``"mon"``); ``linf_well_posed``:
    the parametrisation bounds the weighted l_inf measure of ``A`` by ``gamma < 1`` for every
    parameter value (MATH 2): NEMON and MLP, which then also offer ``mu()`` and
    ``embedded_equilibrium(lo, hi)`` (MATH 9) and get the pairwise Lipschitz certificate of
    MATH 6; a MON bounds only the l2 measure (its :meth:`rho` says whether the l_inf
    machinery applies to its weights); ``supports_warm_start``: ``solving(warm_start=True)``
    changes where solves start (NEMON) rather than nothing.

    Attributes: the sizes ``in_features``, ``hidden_features``, ``out_features``; ``gamma``;
    the parameters ``C``, ``c`` of the output map; the records of the last solves,
    ``last_forward_stats`` and ``last_backward_stats`` (:class:`~nemon.solvers.SolverStats`,
    None before any) and ``last_error_bounds`` (per sample, the a-posteriori bound of the
    last forward solve in ``||.||_eta``, MATH 12: None when not computed, inf when none is
    known). The settings are read through :attr:`settings` and the read-only ``solver``,
    ``tol``, ``max_iter``, ``stop``, ``strict``, and changed with :meth:`solving` only.

    Subclasses validate settings in :meth:`check_settings` and read the per-call state
    (``_solve_state``: warm-start memory, frozen cache, warnings given) kept here.
    """

    kind: ClassVar[str]
    linf_well_posed: ClassVar[bool]
    supports_warm_start: ClassVar[bool] = False

    in_features: int
    hidden_features: int
    out_features: int
    gamma: float
    C: Tensor
    c: Tensor

    def __init__(
        self, in_features: int, hidden_features: int, out_features: int, settings: SolveSettings
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.out_features = out_features
        self._settings = settings
        self._solve_state = SolveState()
        self.last_forward_stats: SolverStats | None = None
        self.last_backward_stats: SolverStats | None = None
        self.last_error_bounds: Tensor | None = None

    # --- how the model solves -----------------------------------------------------------
    @property
    def settings(self) -> SolveSettings:
        """The :class:`SolveSettings` in force (change them with :meth:`solving`)."""
        return self._settings

    @property
    def solver(self) -> str:
        return self._settings.solver

    @property
    def tol(self) -> float:
        return self._settings.tol

    @property
    def max_iter(self) -> int:
        return self._settings.max_iter

    @property
    def stop(self) -> str:
        return self._settings.stop

    @property
    def strict(self) -> bool:
        return self._settings.strict

    @abc.abstractmethod
    def check_settings(self, settings: SolveSettings) -> SolveSettings:
        """``settings`` validated for this model (normalised, e.g. ``tol`` as a float), or a
        :class:`~nemon.errors.ConfigurationError` naming the value that is wrong."""

    @contextmanager
    def solving(
        self,
        *,
        solver: str | None = None,
        tol: float | None = None,
        max_iter: int | None = None,
        stop: str | None = None,
        strict: bool | None = None,
        frozen: bool | None = None,
        warm_start: bool | None = None,
        error_bounds: bool | None = None,
        spend_warnings: bool | None = None,
    ) -> Iterator[ImplicitModel]:
        """Solve inside the block with the given fields of :class:`SolveSettings` replaced.

        ``None`` keeps a field as it is; the new settings are validated before the block
        (:meth:`check_settings`). Everything is restored on leaving, also on error, and
        blocks nest: an inner ``warm_start=False`` suspends an enclosing warm start (whose
        memory comes back after it), an inner ``error_bounds=True`` computes the bounds
        inside an ``error_bounds=False`` block. Evaluation solves tighter than training
        this way (``tol``, ``max_iter``, ``stop="step"``: certificates subtract the error
        bound, so a loose solve certifies little); the attacks run with ``frozen=True``,
        ``error_bounds=False``, ``spend_warnings=False`` and, if asked, ``warm_start=True``.
        """
        changes = {
            name: value
            for name, value in (
                ("solver", solver),
                ("tol", tol),
                ("max_iter", max_iter),
                ("stop", stop),
                ("strict", strict),
                ("frozen", frozen),
                ("warm_start", warm_start),
                ("error_bounds", error_bounds),
                ("spend_warnings", spend_warnings),
            )
            if value is not None
        }
        outer = self._settings
        inner = self.check_settings(dataclasses.replace(outer, **changes))
        state = self._solve_state
        warm, warned = state.warm, state.warned
        state.outer.append(outer)
        self._settings = inner
        if not inner.warm_start:
            state.warm = None
        elif state.warm is None:  # turned on here: a memory of this block's own
            state.warm = {}
        if not inner.frozen:
            state.frozen = None
        if outer.spend_warnings and not inner.spend_warnings:
            state.warned = set(warned)  # turned off here: a copy of the record, dropped on leaving
        try:
            yield self
        finally:
            self._settings = outer
            state.outer.pop()
            state.warm = warm
            state.warned = warned
            if not outer.frozen:
                state.frozen = None

    def _warn_once(self, key: str, msg: str, category: type[Warning], stacklevel: int = 4) -> None:
        """Warn ``msg`` unless this model has already given the warning ``key``."""
        if key not in self._solve_state.warned:
            self._solve_state.warned.add(key)
            warnings.warn(msg + " [warned once per model]", category, stacklevel=stacklevel)

    # --- the maps (MATH 1-5) ------------------------------------------------------------
    @abc.abstractmethod
    def forward(self, u: Tensor) -> Tensor:
        """Logits of float pixels ``u`` in ``[0, 1]`` (any leading shape that flattens to
        ``in_features``; other images are refused), differentiable in ``u`` (MATH 4)."""

    @abc.abstractmethod
    def equilibrium(self, u: Tensor) -> tuple[Tensor, SolverStats]:
        """``(x*, stats)`` for pixels ``u``; sets ``last_forward_stats`` and
        ``last_error_bounds`` (MATH 3, 4, 12)."""

    @abc.abstractmethod
    def normalise(self, u2: Tensor) -> Tensor:
        """``(u - input_mean) / input_std`` for rows of pixels (MATH 1)."""

    @abc.abstractmethod
    def input_map(self) -> tuple[Tensor, Tensor]:
        """``(B_eff, b_eff)`` in pixel units: ``B (u - mean) / std + b = B_eff u + b_eff``."""

    @abc.abstractmethod
    def lipschitz_bound(self) -> Tensor:
        """A sound l_inf Lipschitz bound of ``u -> y`` in pixel units, differentiable (MATH 5)."""

    @property
    @abc.abstractmethod
    def A(self) -> Tensor:
        """The matrix of the implicit layer (zero for an MLP, ``W`` for a MON)."""

    @property
    @abc.abstractmethod
    def eta(self) -> Tensor:
        """The norm weights of ``||.||_eta`` (all ones where the model has none)."""

    @abc.abstractmethod
    def step_constants(self) -> tuple[float, float]:
        """``(alpha*, rho)`` of the l_inf averaged iteration (MATH 3), with one device sync."""

    def alpha_star(self) -> float:
        """The step ``alpha*`` of the l_inf averaged iteration (MATH 3)."""
        return self.step_constants()[0]

    def rho(self) -> float:
        """Contraction factor of the l_inf averaged iteration at ``alpha*`` (MATH 3): below 1
        exactly where the interval bounds of MATH 9 apply."""
        return self.step_constants()[1]

    @abc.abstractmethod
    def constructor_kwargs(self) -> dict:
        """The keyword arguments that rebuild this model (the model file stores them)."""

    @property
    def last_stats(self) -> SolverStats | None:
        """The statistics of the last forward solve (alias of ``last_forward_stats``)."""
        return self.last_forward_stats

    # --- copies and pickles start outside every solving() block --------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        solve = self._solve_state
        state["_settings"] = solve.outer[0] if solve.outer else self._settings
        state["_solve_state"] = SolveState(solve.warned)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        d = self.__dict__
        if "_settings" not in d:  # pickled before SolveSettings: plain attributes
            old = {f: d.pop(f) for f in ("solver", "tol", "max_iter", "stop", "strict") if f in d}
            old.setdefault("solver", "none")  # an MLP kept its solver on the class
            for key in ("_frozen", "_frozen_depth", "_warm", "_error_bounds"):
                d.pop(key, None)
            d["_settings"] = SolveSettings(**old)
            d["_solve_state"] = SolveState(d.pop("_warned", ()))


__all__ = ["ImplicitModel", "SolveSettings", "SolveState"]
