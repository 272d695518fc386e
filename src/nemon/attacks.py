"""Strong attacks and an empirical Lipschitz lower bound for the evaluation stage (MATH 4-7, 11).

The inversion attack of MATH 7 is one fixed direction; the instruments here
search for the worst case instead:

- :func:`pgd`: l_inf PGD with random start and restarts (``torchattacks.PGD``);
- :func:`autoattack`: AutoAttack (Croce and Hein 2020) through
  ``torchattacks.AutoAttack``: APGD-CE, APGD-T, FAB-T and the gradient-free
  Square attack;
- :func:`lipschitz_lower_bound`: the largest local l_inf -> l_inf gain found
  by a search over inputs, checked by finite differences; it brackets the
  true constant from below, the bound of MATH 5 from above.

All of them use the model's exact implicit input gradient (MATH 4) and solve
every fixed point at the tight tolerance they are given, on the relative step (MATH 12a),
never at the model's training tolerance or stopping rule. Every solve they cause is counted in a
:class:`SolveCounts` record, non-converged ones included, so a reader can
check that an attack was run as reported.

A model is anything with the protocol of :class:`nemon.NEMON`: ``model(u)``
takes pixels in ``[0, 1]`` (any shape that flattens to the input size) and
returns logits, differentiable in ``u``; optionally ``solver_settings(tol=,
max_iter=, stop=)`` (a context manager), ``tol``, and the :class:`SolverStats`
records ``last_stats`` / ``last_backward_stats``. A model without them (a
plain MLP) is treated as having no solver.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torchattacks
from torch import Tensor, nn

from .errors import ConfigurationError, NemonError, NonConvergenceWarning
from .solvers import SolverStats

AUTOATTACK_NORMS = ("Linf",)
# The components torchattacks chains for each version, in order (checked at run time).
AUTOATTACK_VERSIONS = {
    "standard": ("APGD", "APGDT", "FAB", "Square"),
    "plus": ("APGD", "APGD", "FAB", "Square", "APGDT", "FAB"),
}
# Allowed distance of an adversarial image outside the eps-ball or [0, 1]: float rounding only.
BALL_SLACK = 1e-6
# Finite-difference steps tried by lipschitz_lower_bound, largest first: inside one linear
# region the network is affine, so the largest step that keeps the pattern is the most exact.
FD_STEPS = tuple(10.0**-e for e in range(2, 11))


class AttackError(NemonError, RuntimeError):
    """An attack produced an image outside the eps-ball or outside ``[0, 1]``."""


# --- records --------------------------------------------------------------------------------
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


@dataclass
class AttackResult:
    """Outcome of :func:`pgd` or :func:`autoattack` on a batch of inputs.

    ``robust[i]``: input ``i`` is classified correctly both clean and on
    ``adversarial[i]``, each decided by one solve at ``eval_tol``. Inputs
    misclassified clean are not attacked (their ``adversarial`` is the clean
    image). ``adversarial`` has the caller's shape and lies on the model's
    device, in the model's dtype (float32 for AutoAttack); ``robust`` and
    ``clean_correct`` are CPU tensors.
    ``attack_solves`` counts the solves inside the attack (at ``tol``),
    ``eval_solves`` those of the clean and final classifications.
    """

    attack: str
    eps: float
    robust: Tensor
    clean_correct: Tensor
    adversarial: Tensor
    steps: int
    restarts: int
    step_size: float | None
    tol: float
    max_iter: int
    eval_tol: float
    eval_max_iter: int
    seed: int
    batch_size: int
    attack_solves: SolveCounts
    eval_solves: SolveCounts
    wall_time_s: float
    version: str | None = None
    n_queries: int | None = None
    components: tuple[str, ...] = ()
    # AutoAttack: inputs still unbroken before the first and after each component, as the
    # components themselves judged them (at ``tol``), summed over batches.
    remaining_after: tuple[int, ...] = ()
    # AutoAttack: wall seconds spent in each component, summed over batches (the checks
    # between components, one forward each, are not counted)
    component_seconds: tuple[float, ...] = ()
    # the attack's solves started from the last solution (NEMON.warm_starts); False also for
    # a model without that method, whose solves (if any) start cold
    warm_start: bool = False

    @property
    def accuracy(self) -> float:
        """Robust accuracy: fraction of inputs in ``robust``."""
        return float(self.robust.float().mean())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean())

    def summary(self) -> dict:
        """Scalars only, one row of a tidy table."""
        row = {
            "attack": self.attack,
            "eps": self.eps,
            "n": int(self.robust.numel()),
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.accuracy,
            "steps": self.steps,
            "restarts": self.restarts,
            "step_size": self.step_size,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "eval_tol": self.eval_tol,
            "eval_max_iter": self.eval_max_iter,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "version": self.version,
            "n_queries": self.n_queries,
            "warm_start": self.warm_start,
            "wall_time_s": self.wall_time_s,
        }
        for stage, counts in (("attack", self.attack_solves), ("eval", self.eval_solves)):
            row.update(
                {
                    f"{stage}_forward_solves": counts.forward_solves,
                    f"{stage}_backward_solves": counts.backward_solves,
                    f"{stage}_unconverged": counts.unconverged,
                    f"{stage}_max_tol": counts.max_tol,
                    f"{stage}_max_residual": counts.max_residual,
                }
            )
        return row


@dataclass
class LowerBound:
    """An empirical lower bound of the l_inf -> l_inf Lipschitz constant of ``u -> y``.

    ``value`` is ``max_k ||grad_u y_k||_1`` at ``point`` (float64), attained by
    class ``k``. ``fd_pair = (p, q)`` are two inputs in ``[0, 1]`` with
    ``q - p = fd_h * sign(grad_u y_k)`` and ``fd_ratio = |y_k(q) - y_k(p)| /
    ||q - p||_inf``: a ratio actually achieved by the network, so a lower bound
    of its Lipschitz constant up to the solver error ``fd_error`` (NaN where the
    model gives no error bound). ``agree``: ``fd_ratio`` and ``value`` agree to
    ``rtol`` relative; ``pattern_checked``: ``p`` and ``q`` were verified to have
    the activation pattern of ``point``; ``note`` says what went wrong, if anything.
    """

    value: float
    point: Tensor
    k: int
    fd_ratio: float
    fd_h: float
    fd_pair: tuple[Tensor, Tensor]
    fd_rel_diff: float
    fd_error: float
    agree: bool
    pattern_checked: bool
    note: str
    steps: int
    step_size: float
    seed: int
    n_random: int
    tol: float
    max_iter: int
    solves: SolveCounts = field(default_factory=SolveCounts)


# --- the instrumented model ------------------------------------------------------------------
class _BackwardProbe(torch.autograd.Function):
    """Identity on the input; its backward runs after the model's backward solve."""

    @staticmethod
    def forward(ctx, u: Tensor, inst: _Instrumented) -> Tensor:  # type: ignore[override]
        ctx.inst = inst
        return u.clone()

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        ctx.inst.note_backward()
        return g, None


class _Instrumented(nn.Module):
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
        self._seen_backward = getattr(model, "last_backward_stats", None)
        # torchattacks puts its module back in training mode after each call when it found it
        # so; the wrapper alone starts in eval mode (the model's modes are _attack_state's job)
        self.training = False

    def _tol(self) -> float | None:
        tol = getattr(self.model, "tol", None)
        return None if tol is None else float(tol)

    def forward(self, u: Tensor) -> Tensor:
        # Logits come back in the input's dtype: FAB casts images to float32 and then mixes
        # logits and gradients in its projection, which fails on float64 logits.
        in_dtype = u.dtype
        u = u.reshape(u.shape[0], -1).to(self.dtype)
        if u.requires_grad:
            u = _BackwardProbe.apply(u, self)
        before = getattr(self.model, "last_stats", None)
        y = self.model(u)
        self.log.calls += 1
        after = getattr(self.model, "last_stats", None)
        if after is not None and after is not before:
            self.log.record(after, self._tol(), "forward")
        return y.to(in_dtype)

    def note_backward(self) -> None:
        stats = getattr(self.model, "last_backward_stats", None)
        if stats is not None and stats is not self._seen_backward:
            self._seen_backward = stats
            self.log.record(stats, self._tol(), "backward")


def _device_dtype(model: nn.Module, u: Tensor) -> tuple[torch.device, torch.dtype]:
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
def _attack_state(model: nn.Module) -> Iterator[None]:
    """Eval mode, no parameter gradients, private RNG; everything restored afterwards.

    Parameters stop requiring gradients so that attacks calling ``.backward()``
    (FAB) leave the model's ``.grad`` alone and no weight gradient is formed.
    NonConvergenceWarning is silenced here because every solve is counted from
    its SolverStats instead; the model's once-per-model warning is left unspent.
    """
    modes = [(m, m.training) for m in model.modules()]
    needs_grad = [(p, p.requires_grad) for p in model.parameters()]
    # the record of warnings already given (a flag or a set of keys, mutated in place)
    warned = copy.copy(model.__dict__.get("_warned"))
    try:
        model.eval()
        for p, _ in needs_grad:
            p.requires_grad_(False)
        with warnings.catch_warnings(), frozen_weights(model):
            warnings.simplefilter("ignore", NonConvergenceWarning)
            with torch.random.fork_rng(devices=_rng_devices()):
                yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in needs_grad:
            p.requires_grad_(flag)
        if warned is not None:
            model.__dict__["_warned"] = warned


def frozen_weights(model: nn.Module) -> AbstractContextManager:
    """The model's ``frozen_weights()`` where it has one (NEMON): weight-only work done once."""
    frozen = getattr(model, "frozen_weights", None)
    return frozen() if frozen is not None else nullcontext()


def warm_starts(model: nn.Module, enabled: bool = True) -> AbstractContextManager:
    """The model's ``warm_starts(enabled)`` where it has one (NEMON), else nothing."""
    warm = getattr(model, "warm_starts", None)
    return warm(enabled) if warm is not None else nullcontext()


def error_bounds(model: nn.Module, enabled: bool = True) -> AbstractContextManager:
    """The model's ``error_bounds(enabled)`` where it has one (NEMON), else nothing."""
    bounds = getattr(model, "error_bounds", None)
    return bounds(enabled) if bounds is not None else nullcontext()


def _supports_warm_start(model: nn.Module) -> bool:
    return callable(getattr(model, "warm_starts", None))


@contextmanager
def _solving_at(model: nn.Module, tol: float, max_iter: int) -> Iterator[None]:
    """Solve at ``tol`` on the relative step (MATH 12a), whatever rule the model trained with.

    The error-bound rule asks for steps of ``tol (1 - rho) / rho``: at ``rho`` near 1 and a
    tight ``tol`` that is below what float32 resolves, and the solve stalls at ``max_iter``.
    """
    settings = getattr(model, "solver_settings", None)
    if settings is None:  # no solver: nothing to set
        yield
        return
    with settings(tol=tol, max_iter=max_iter, stop="step"):
        yield


# --- argument checks --------------------------------------------------------------------------
def _check_eps(eps: float, where: str) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{where}: eps must be a number in [0, 1], got {eps!r}") from None
    if not (0.0 <= value <= 1.0):
        raise ConfigurationError(
            f"{where}: eps must lie in [0, 1] (l_inf radius in pixel units, MATH 7), "
            f"got eps={eps!r}"
        )
    return value


def _check_int(name: str, value: object, minimum: int, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(
            f"{where}: {name} must be an integer >= {minimum}, got {name}={value!r}"
        )
    return value


def _check_positive(name: str, value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{where}: {name} must be a positive number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(
            f"{where}: {name} must be a positive finite number, got {name}={value!r}"
        )
    return float(value)


def _check_pixels(u: object, where: str) -> Tensor:
    if not isinstance(u, Tensor):
        raise ConfigurationError(f"{where}: u must be a torch.Tensor, got {type(u).__name__}")
    if u.dim() < 2 or u.shape[0] == 0:
        raise ConfigurationError(
            f"{where}: u must be a non-empty batch of shape (N, ...) with N >= 1, "
            f"got shape {tuple(u.shape)}"
        )
    if not u.is_floating_point():
        raise ConfigurationError(
            f"{where}: u must hold floating-point pixels in [0, 1], got dtype {u.dtype}; "
            f"convert uint8 images with u.float() / 255"
        )
    if not bool(torch.isfinite(u).all()):
        bad = int((~torch.isfinite(u)).sum())
        raise ConfigurationError(f"{where}: u contains {bad} non-finite value(s) (NaN or inf)")
    lo, hi = float(u.min()), float(u.max())
    if lo < 0.0 or hi > 1.0:
        raise ConfigurationError(
            f"{where}: u must hold pixels in [0, 1] (MATH 1), got values in [{lo:.4g}, {hi:.4g}]; "
            f"pass unnormalised images (the model folds the normalisation into B, b)"
        )
    return u


def _check_labels(labels: object, n: int, where: str) -> Tensor:
    if not isinstance(labels, Tensor):
        raise ConfigurationError(
            f"{where}: labels must be a torch.Tensor, got {type(labels).__name__}"
        )
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ConfigurationError(
            f"{where}: labels must be integer class indices, got dtype {labels.dtype}"
        )
    if tuple(labels.shape) != (n,):
        raise ConfigurationError(
            f"{where}: labels must have shape ({n},), one class index per input of u, "
            f"got shape {tuple(labels.shape)}"
        )
    return labels


def _check_label_range(labels: Tensor, classes: int, where: str) -> None:
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= classes:
        raise ConfigurationError(
            f"{where}: labels must lie in [0, {classes - 1}] for a model with {classes} "
            f"outputs, got values in [{lo}, {hi}]"
        )


def _image_batch(u: Tensor, image_shape: tuple[int, ...] | None, where: str) -> Tensor:
    """``(N, C, H, W)`` view of ``u``, as torchattacks' APGD, FAB and Square expect."""
    n = u.shape[0]
    if image_shape is not None:
        shape = tuple(image_shape)
        if len(shape) != 3 or math.prod(shape) != math.prod(u.shape[1:]):
            raise ConfigurationError(
                f"{where}: image_shape must be (channels, height, width) with "
                f"{math.prod(u.shape[1:])} values, got {image_shape!r}"
            )
        return u.reshape(n, *shape)
    if u.dim() == 4:
        return u
    if u.dim() == 3:
        return u.unsqueeze(1)
    side = math.isqrt(u.shape[1])
    if side * side != u.shape[1]:
        raise ConfigurationError(
            f"{where}: cannot view inputs of {u.shape[1]} values as a square image; "
            f"pass image_shape=(channels, height, width) or images of shape (N, C, H, W)"
        )
    return u.reshape(n, 1, side, side)


def _check_adversarial(adv: Tensor, u: Tensor, eps: float, attack: str) -> None:
    """An adversarial image outside the eps-ball or [0, 1] is a bug: raise, never clip."""
    if not bool(torch.isfinite(adv).all()):
        raise AttackError(f"{attack} returned non-finite adversarial images")
    dist = float((adv.double() - u.to(adv.device).double()).abs().amax())
    lo, hi = float(adv.min()), float(adv.max())
    if dist > eps + BALL_SLACK:
        raise AttackError(
            f"{attack} left the eps-ball: ||delta||_inf = {dist:.9g} > eps = {eps:g} "
            f"(+{BALL_SLACK:g} rounding)"
        )
    if lo < -BALL_SLACK or hi > 1.0 + BALL_SLACK:
        raise AttackError(f"{attack} left [0, 1]: adversarial pixels span [{lo:.9g}, {hi:.9g}]")


# --- shared machinery of pgd and autoattack -------------------------------------------------
def _chunks(idx: Tensor, size: int) -> Iterator[Tensor]:
    for start in range(0, idx.numel(), size):
        yield idx[start : start + size]


def _predict(inst: _Instrumented, x: Tensor, batch_size: int) -> Tensor:
    """Logits in the model's own dtype (not rounded to that of the images)."""
    with torch.no_grad():
        out = [inst(x[i : i + batch_size].to(inst.dtype)) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


@dataclass
class _Prepared:
    inst: _Instrumented
    x: Tensor  # inputs on the model's device, in the dtype and shape the attack needs
    labels: Tensor
    clean_correct: Tensor
    classes: int
    eval_log: SolveCounts


def _run_attack(
    name: str,
    model: nn.Module,
    u: Tensor,
    labels: Tensor,
    eps: float,
    *,
    tol: float,
    max_iter: int,
    eval_tol: float,
    eval_max_iter: int,
    batch_size: int,
    image_shape: tuple[int, ...] | None,
    attack_fn: Callable[[_Prepared, Tensor], Tensor],
    min_classes: int = 2,
    image_dtype: torch.dtype | None = None,
    warm_start: bool = False,
) -> tuple[Tensor, Tensor, Tensor, SolveCounts, SolveCounts, float]:
    """Clean check, attack at ``tol``, validity check and final check at ``eval_tol``.

    ``attack_fn(prep, idx)`` returns adversarial images for ``prep.x[idx]``
    (the clean-correct inputs); it runs at ``tol``/``max_iter``, with warm starts
    if ``warm_start``. The clean and final checks always start cold.
    """
    if not isinstance(warm_start, bool):
        raise ConfigurationError(f"{name}: warm_start must be True or False, got {warm_start!r}")
    start = time.perf_counter()
    device, dtype = _device_dtype(model, u)
    x = _image_batch(u, image_shape, name) if name == "autoattack" else u
    x = x.detach().to(device=device, dtype=image_dtype or dtype)
    y = labels.detach().to(device=device, dtype=torch.long)
    inst = _Instrumented(model, device, dtype)
    eval_log, attack_log = SolveCounts(), SolveCounts()
    with _attack_state(model):
        inst.log = eval_log
        with _solving_at(model, eval_tol, eval_max_iter):
            clean_logits = _predict(inst, x, batch_size)
        classes = clean_logits.shape[1]
        if classes < min_classes:
            raise ConfigurationError(
                f"{name}: needs a model with at least {min_classes} classes, this one has "
                f"{classes}"
                + (" (APGD-T's DLR loss reads the 4 largest logits)" if min_classes == 4 else "")
            )
        _check_label_range(y, classes, name)
        clean_correct = clean_logits.argmax(dim=1) == y
        prep = _Prepared(inst, x, y, clean_correct, classes, eval_log)
        adv = x.clone()
        idx = clean_correct.nonzero().flatten()
        if idx.numel():
            inst.log = attack_log
            # the attack reads logits and gradients only: its solves skip the error bound
            with (
                _solving_at(model, tol, max_iter),
                warm_starts(model, warm_start),
                error_bounds(model, False),
            ):
                adv[idx] = attack_fn(prep, idx).detach()
        _check_adversarial(adv, x, eps, name)
        _check_adversarial(adv.reshape(u.shape), u, eps, name)
        inst.log = eval_log
        with _solving_at(model, eval_tol, eval_max_iter):
            adv_pred = _predict(inst, adv, batch_size).argmax(dim=1)
    robust = clean_correct & (adv_pred == y)
    wall = time.perf_counter() - start
    return (
        robust.cpu(),
        clean_correct.cpu(),
        adv.reshape(u.shape),
        attack_log,
        eval_log,
        wall,
    )


def _common_checks(
    model: nn.Module,
    u: Tensor,
    labels: Tensor,
    eps: float,
    seed: int,
    tol: float,
    max_iter: int,
    eval_tol: float | None,
    eval_max_iter: int | None,
    batch_size: int,
    where: str,
) -> tuple[float, float, int]:
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"{where}: model must be a torch.nn.Module")
    _check_pixels(u, where)
    _check_labels(labels, u.shape[0], where)
    _check_int("seed", seed, 0, where)
    _check_positive("tol", tol, where)
    _check_int("max_iter", max_iter, 1, where)
    _check_int("batch_size", batch_size, 1, where)
    eval_tol = tol if eval_tol is None else _check_positive("eval_tol", eval_tol, where)
    eval_max_iter = (
        max_iter if eval_max_iter is None else _check_int("eval_max_iter", eval_max_iter, 1, where)
    )
    return _check_eps(eps, where), float(eval_tol), eval_max_iter


# --- PGD -----------------------------------------------------------------------------------
def pgd(
    model: nn.Module,
    u: Tensor,
    labels: Tensor,
    eps: float,
    *,
    steps: int,
    restarts: int,
    step_size: float | None = None,
    seed: int,
    tol: float,
    max_iter: int,
    eval_tol: float | None = None,
    eval_max_iter: int | None = None,
    batch_size: int = 1000,
    warm_start: bool = False,
) -> AttackResult:
    """l_inf PGD with random start and ``restarts`` restarts (MATH 11), via ``torchattacks.PGD``.

    Each restart starts at a uniformly random point of the eps-ball, takes
    ``steps`` signed-gradient steps of the cross-entropy with the exact implicit
    input gradient (MATH 4), and projects onto the eps-ball and onto ``[0, 1]``.
    An input is robust only if it is correctly classified clean and survives
    every restart: each restart attacks the inputs no earlier restart broke.

    ``step_size`` defaults to ``2.5 * eps / steps`` (the rule of Madry et al.
    2018 and their ``robustness`` library): the path is long enough (2.5 eps)
    to cross the ball from any random start to any face, with room to spare
    for the steps that oscillate, yet each step is small enough to follow a
    curved loss.

    Every forward and backward solve of the attack runs at ``tol``/``max_iter``
    with the model in eval mode; clean and adversarial inputs are classified at
    ``eval_tol``/``eval_max_iter`` (default: the same). The model's solver
    settings, training mode and ``requires_grad`` flags are restored afterwards,
    also on error. Deterministic on the CPU for a given ``seed`` and
    ``batch_size`` (a batch is solved together, and the random starts are
    drawn per batch); the caller's global RNG state is left untouched.

    ``warm_start``: the attack's solves start from the last solution of the same
    batch shape (:meth:`nemon.model.NEMON.warm_starts`; models without it start
    cold). Each step moves the inputs a little, so this saves iterations; the
    results agree with cold starts to the attack's tolerance, not bit for bit.
    The clean, per-restart and final checks start cold either way.
    """
    where = "pgd"
    eps, eval_tol, eval_max_iter = _common_checks(
        model, u, labels, eps, seed, tol, max_iter, eval_tol, eval_max_iter, batch_size, where
    )
    _check_int("steps", steps, 1, where)
    _check_int("restarts", restarts, 1, where)
    if step_size is None:
        step_size = 2.5 * eps / steps
    else:
        step_size = _check_positive("step_size", step_size, where)
    restart_seeds = torch.randint(
        0, 2**62, (restarts,), generator=torch.Generator().manual_seed(seed)
    ).tolist()

    def attack_fn(prep: _Prepared, idx: Tensor) -> Tensor:
        atk = torchattacks.PGD(prep.inst, eps=eps, alpha=step_size, steps=steps, random_start=True)
        out = prep.x[idx].clone()
        alive = torch.ones(idx.numel(), dtype=torch.bool, device=idx.device)
        for r in range(restarts):
            todo = alive.nonzero().flatten()
            if todo.numel() == 0:
                break
            torch.manual_seed(restart_seeds[r])
            for part in _chunks(todo, batch_size):
                out[part] = atk(prep.x[idx[part]], prep.labels[idx[part]])
            # which inputs this restart broke, judged as the final check judges them
            inst_log = prep.inst.log
            prep.inst.log = prep.eval_log
            with _solving_at(model, eval_tol, eval_max_iter), warm_starts(model, False):
                pred = _predict(prep.inst, out[todo], batch_size).argmax(dim=1)
            prep.inst.log = inst_log
            alive[todo] = pred == prep.labels[idx[todo]]
        return out

    robust, clean, adv, attack_log, eval_log, wall = _run_attack(
        where,
        model,
        u,
        labels,
        eps,
        tol=tol,
        max_iter=max_iter,
        eval_tol=eval_tol,
        eval_max_iter=eval_max_iter,
        batch_size=batch_size,
        image_shape=None,
        attack_fn=attack_fn,
        warm_start=warm_start,
    )
    return AttackResult(
        attack="pgd",
        eps=eps,
        robust=robust,
        clean_correct=clean,
        adversarial=adv,
        steps=steps,
        restarts=restarts,
        step_size=float(step_size),
        tol=float(tol),
        max_iter=max_iter,
        eval_tol=eval_tol,
        eval_max_iter=eval_max_iter,
        seed=seed,
        batch_size=batch_size,
        attack_solves=attack_log,
        eval_solves=eval_log,
        wall_time_s=wall,
        warm_start=bool(warm_start and _supports_warm_start(model)),
    )


# --- AutoAttack ------------------------------------------------------------------------------
def _timed(forward: Callable[..., Tensor], seconds: list[float], i: int) -> Callable[..., Tensor]:
    """``forward`` that adds its wall time to ``seconds[i]`` (one AutoAttack component)."""

    def run(*args, **kwargs) -> Tensor:
        t = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            seconds[i] += time.perf_counter() - t

    return run


def _configure_autoattack(
    atk: torchattacks.AutoAttack, version: str, steps: int | None, n_queries: int
) -> tuple[str, ...]:
    """Check the chain torchattacks built and set the iteration budgets; return its names."""
    chain = getattr(getattr(atk, "_autoattack", None), "attacks", None)
    names = tuple(type(a).__name__ for a in chain) if chain is not None else ()
    if names != AUTOATTACK_VERSIONS[version]:
        raise RuntimeError(
            f"torchattacks.AutoAttack(version={version!r}) chains {names or 'unknown attacks'}, "
            f"expected {AUTOATTACK_VERSIONS[version]}; this torchattacks version "
            f"({torchattacks.__version__}) is not the one nemon.attacks was written for (3.5)"
        )
    labels = []
    for a in chain:
        if isinstance(a, torchattacks.Square):
            a.n_queries = n_queries
            labels.append("Square")
            continue
        if steps is not None:
            a.steps = steps
        if isinstance(a, torchattacks.APGD):
            labels.append(f"APGD-{a.loss.upper()}")
        elif isinstance(a, torchattacks.APGDT):
            labels.append("APGD-T")
        else:
            labels.append("FAB-T" if a.multi_targeted else "FAB")
    return tuple(labels)


def autoattack(
    model: nn.Module,
    u: Tensor,
    labels: Tensor,
    eps: float,
    *,
    seed: int,
    tol: float,
    max_iter: int,
    eval_tol: float | None = None,
    eval_max_iter: int | None = None,
    norm: str = "Linf",
    version: str = "standard",
    steps: int | None = 100,
    n_queries: int = 5000,
    image_shape: tuple[int, int, int] | None = None,
    batch_size: int = 1000,
    warm_start: bool = False,
) -> AttackResult:
    """AutoAttack (Croce and Hein 2020) via ``torchattacks.AutoAttack`` (MATH 11).

    ``version="standard"`` chains APGD-CE, APGD-T (DLR loss, the 9 most likely
    other classes as targets), FAB-T (same targets) and Square (``n_queries``
    queries, gradient-free, which guards against gradient masking), one restart
    each; each component attacks only the inputs the previous ones left
    unbroken. ``version="plus"`` is torchattacks' "plus" chain.

    ``steps`` is the iteration count of APGD-CE, APGD-T and FAB-T. It defaults
    to 100, the value of the original standard AutoAttack; torchattacks 3.5
    silently uses 10 (``steps=None`` keeps that, ten times cheaper and weaker).

    The inputs are given to torchattacks as ``(N, C, H, W)`` images (Square
    needs them): a 4-d ``u`` as it is, a 3-d one with one channel, a flat one
    as ``image_shape`` or, if its size is a square, one ``side x side`` channel.
    The model needs at least 4 classes (APGD-T's DLR loss reads the 4 largest
    logits). Solver settings, mode, RNG isolation and the final check at
    ``eval_tol`` are as in :func:`pgd`. The images are float32 whatever the
    model's dtype: torchattacks' FAB casts them to float32 and fails on float64
    ones; the model still solves, and the final check classifies, in its own
    dtype. So ``adversarial`` is float32, and the clean inputs are judged after
    rounding to float32 (exact for 8-bit images divided by 255 in float32).
    ``warm_start`` as in :func:`pgd` (Square's queries differ from the best
    point by one small square, APGD's and FAB's steps are small).
    """
    where = "autoattack"
    eps, eval_tol, eval_max_iter = _common_checks(
        model, u, labels, eps, seed, tol, max_iter, eval_tol, eval_max_iter, batch_size, where
    )
    if norm not in AUTOATTACK_NORMS:
        raise ConfigurationError(
            f"{where}: unknown norm {norm!r}; choose one of {list(AUTOATTACK_NORMS)} "
            f"(the norm of the certificates, MATH 6)"
        )
    if version not in AUTOATTACK_VERSIONS:
        raise ConfigurationError(
            f"{where}: unknown version {version!r}; choose one of {sorted(AUTOATTACK_VERSIONS)}"
        )
    if steps is not None:
        _check_int("steps", steps, 1, where)
    _check_int("n_queries", n_queries, 1, where)
    _image_batch(u, image_shape, where)  # fail early on a shape Square cannot use

    used: dict[str, object] = {}

    def attack_fn(prep: _Prepared, idx: Tensor) -> Tensor:
        atk = torchattacks.AutoAttack(
            prep.inst, norm=norm, eps=eps, version=version, n_classes=prep.classes, seed=seed
        )
        used["components"] = _configure_autoattack(atk, version, steps, n_queries)
        used["restarts"] = max(a.n_restarts for a in atk._autoattack.attacks)
        # MultiAttack's own bookkeeping (private API): inputs left before the first and after
        # each component, summed over batches; a chain that empties early leaves zeros, correctly
        multi = atk._autoattack
        multi._multi_atk_records = [0.0] * (len(multi.attacks) + 1)
        multi._accumulate_multi_atk_records = True
        seconds = [0.0] * len(multi.attacks)
        for i, component in enumerate(multi.attacks):
            component.forward = _timed(component.forward, seconds, i)
        out = prep.x[idx].clone()
        for part in _chunks(torch.arange(idx.numel(), device=idx.device), batch_size):
            out[part] = atk(prep.x[idx[part]], prep.labels[idx[part]])
        remaining = [int(r) for r in multi._multi_atk_records]
        used["remaining"] = tuple(remaining)
        used["seconds"] = tuple(seconds)
        return out

    robust, clean, adv, attack_log, eval_log, wall = _run_attack(
        where,
        model,
        u,
        labels,
        eps,
        tol=tol,
        max_iter=max_iter,
        eval_tol=eval_tol,
        eval_max_iter=eval_max_iter,
        batch_size=batch_size,
        image_shape=image_shape,
        attack_fn=attack_fn,
        min_classes=4,
        image_dtype=torch.float32,
        warm_start=warm_start,
    )
    return AttackResult(
        attack="autoattack",
        eps=eps,
        robust=robust,
        clean_correct=clean,
        adversarial=adv,
        steps=10 if steps is None else steps,
        restarts=int(used.get("restarts", 1)),
        step_size=None,
        tol=float(tol),
        max_iter=max_iter,
        eval_tol=eval_tol,
        eval_max_iter=eval_max_iter,
        seed=seed,
        batch_size=batch_size,
        attack_solves=attack_log,
        eval_solves=eval_log,
        wall_time_s=wall,
        version=version,
        n_queries=n_queries,
        components=tuple(used.get("components", ())),
        remaining_after=tuple(used.get("remaining", ())),
        component_seconds=tuple(used.get("seconds", ())),
        warm_start=bool(warm_start and _supports_warm_start(model)),
    )


# --- the empirical Lipschitz lower bound -----------------------------------------------------
def _class_gradients(inst: _Instrumented, U: Tensor, ks: Tensor) -> Tensor:
    """Row ``r`` of the result is ``grad_u y_{ks[r]}`` at ``U[r]`` (one forward, one backward)."""
    U = U.detach().requires_grad_(True)
    with torch.enable_grad():
        y = inst(U)
        (g,) = torch.autograd.grad(y.gather(1, ks[:, None]).sum(), U)
    return g


def _pattern_reader(model: nn.Module, log: SolveCounts) -> Callable[[Tensor], Tensor] | None:
    """The activation pattern (which ReLUs are active) at a batch of inputs, where readable.

    Implicit layers with the NEMON interface (``equilibrium``, ``A``,
    ``input_map``; also MON and the MLP with ``A = 0``): ``z* = A x* + B u + b >
    0``, the pattern ``J`` of MATH 4; ``x* > 0`` would not do, as the averaged
    iteration leaves inactive units slightly positive. Other models: the inputs
    of their ``nn.ReLU`` modules. ``None`` when neither applies.
    """
    if all(hasattr(model, a) for a in ("equilibrium", "A", "input_map")):

        def layer_pattern(v: Tensor) -> Tensor:
            x, stats = model.equilibrium(v)
            log.record(stats, getattr(model, "tol", None), "forward")
            B_eff, b_eff = model.input_map()
            return (x @ model.A.t() + v @ B_eff.t() + b_eff) > 0

        return layer_pattern
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        return None

    def relu_pattern(v: Tensor) -> Tensor:
        seen: list[Tensor] = []

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            seen.append((inputs[0] > 0).reshape(inputs[0].shape[0], -1))

        handles = [m.register_forward_hook(hook) for m in relus]
        try:
            model(v)
        finally:
            for h in handles:
                h.remove()
        return torch.cat(seen, dim=1)

    return relu_pattern


def _output_error(model: nn.Module, k: int) -> float:
    """``|y_k - y_k*| <= ||c_k diag(eta)^-1||_1 * error_bound`` after the last forward solve."""
    stats = getattr(model, "last_stats", None)
    if stats is None or not hasattr(model, "C") or not hasattr(model, "eta"):
        return math.nan
    c_norm = float((model.C[k] / model.eta).abs().sum())
    return c_norm * float(stats.error_bound)


def lipschitz_lower_bound(
    model: nn.Module,
    u: Tensor,
    *,
    steps: int,
    step_size: float,
    seed: int,
    n_random: int = 8,
    tol: float = 1e-12,
    max_iter: int = 10_000,
    batch_size: int = 1000,
    rtol: float = 1e-6,
) -> LowerBound:
    """Empirical lower bound of the l_inf -> l_inf Lipschitz constant of ``u -> y`` (MATH 5).

    Where the activation pattern is fixed the network is affine, and its local
    constant is ``max_k ||grad_u y_k||_1`` (the row l1 norm of the Jacobian is
    the induced l_inf norm); each such value is a lower bound of the global
    constant, and the bound of MATH 5 is an upper one. That local value has
    zero gradient almost everywhere for a ReLU network, so the search moves
    instead: from each start (the rows of ``u`` and ``n_random`` uniform points
    drawn with ``seed``) and for each class ``k``, ``steps`` steps of
    ``step_size * sign(grad_u y_k)`` clipped to ``[0, 1]`` (raising ``y_k``
    crosses into other linear regions), keeping the largest
    ``||grad_u y_k||_1`` seen.

    The best point is then re-evaluated for every class and checked by finite
    differences: with ``s = sign(grad_u y_k)``, ``p = clamp(point, h, 1 - h)``
    and ``q = p + h s``, the largest ``h`` in :data:`FD_STEPS` for which ``p``
    and ``q`` keep the activation pattern of the point gives ``|y_k(q) -
    y_k(p)| / ||q - p||_inf``, a ratio two inputs in ``[0, 1]`` actually achieve.
    Everything runs on a float64 copy of the model at ``tol``/``max_iter``; the
    model itself and the global RNG are untouched.
    """
    where = "lipschitz_lower_bound"
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"{where}: model must be a torch.nn.Module")
    _check_pixels(u, where)
    _check_int("steps", steps, 1, where)
    step_size = _check_positive("step_size", step_size, where)
    _check_int("seed", seed, 0, where)
    _check_int("n_random", n_random, 0, where)
    tol = _check_positive("tol", tol, where)
    _check_int("max_iter", max_iter, 1, where)
    _check_int("batch_size", batch_size, 1, where)
    rtol = _check_positive("rtol", rtol, where)

    work = copy.deepcopy(model).double()
    device, _ = _device_dtype(work, u)
    inst = _Instrumented(work, device, torch.float64)
    flat = u.detach().reshape(u.shape[0], -1).to(device=device, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    rand = torch.rand(n_random, flat.shape[1], generator=gen, dtype=torch.float64)
    starts = torch.cat([flat, rand.to(device)])

    with _attack_state(work), _solving_at(work, tol, max_iter):
        with torch.no_grad():
            classes = inst(starts[:1]).shape[1]
        U = starts.repeat_interleave(classes, dim=0)
        ks = torch.arange(classes, device=device).repeat(starts.shape[0])
        best_val, best_point = -1.0, starts[0]
        for step in range(steps + 1):
            G = torch.cat(
                [
                    _class_gradients(inst, U[i : i + batch_size], ks[i : i + batch_size])
                    for i in range(0, U.shape[0], batch_size)
                ]
            )
            vals = G.abs().sum(dim=1)
            i = int(vals.argmax())
            if float(vals[i]) > best_val:
                best_val, best_point = float(vals[i]), U[i].clone()
            if step < steps:
                U = (U + step_size * G.sign()).clamp(0.0, 1.0)

        point = best_point
        J = _class_gradients(inst, point.expand(classes, -1), torch.arange(classes, device=device))
        norms = J.abs().sum(dim=1)
        k = int(norms.argmax())
        value = float(norms[k])
        s = J[k].sign()
        pattern = _pattern_reader(work, inst.log)
        with torch.no_grad():
            ref = pattern(point[None]) if pattern is not None else None
            fd = _finite_difference(inst, work, pattern, ref, point, s, k, value)

    h, p, q, ratio, rel_diff, fd_error, same = fd
    notes = []
    if value == 0.0:
        notes.append("the gradient is zero at the best point (a constant network?)")
    if pattern is None:
        notes.append(
            "activation pattern not readable for this model; kept the step that agrees best"
        )
    elif not same:
        notes.append(
            "the activation pattern changed for every finite-difference step: the best point "
            "lies on a region boundary"
        )
    agree = rel_diff <= rtol
    if not agree:
        notes.append(
            f"finite-difference ratio {ratio:.12g} and gradient value {value:.12g} differ by "
            f"{rel_diff:.3g} relative (> rtol={rtol:g})"
        )
    return LowerBound(
        value=value,
        point=point.cpu(),
        k=k,
        fd_ratio=ratio,
        fd_h=h,
        fd_pair=(p.cpu(), q.cpu()),
        fd_rel_diff=rel_diff,
        fd_error=fd_error,
        agree=agree,
        pattern_checked=bool(same),
        note="; ".join(notes),
        steps=steps,
        step_size=step_size,
        seed=seed,
        n_random=n_random,
        tol=tol,
        max_iter=max_iter,
        solves=inst.log,
    )


def _finite_difference(
    inst: _Instrumented,
    work: nn.Module,
    pattern: Callable[[Tensor], Tensor] | None,
    ref: Tensor | None,
    point: Tensor,
    s: Tensor,
    k: int,
    value: float,
) -> tuple[float, Tensor, Tensor, float, float, float, bool]:
    """``(h, p, q, ratio, rel_diff, error, pattern_kept)`` for the step chosen (see caller)."""
    best = None
    for h in FD_STEPS:
        p = point.clamp(h, 1.0 - h)
        q = p + h * s
        y = inst(torch.stack([p, q]))
        dist = float((q - p).abs().max())
        dy = float((y[1, k] - y[0, k]).abs())
        ratio = dy / dist if dist > 0 else 0.0
        rel = abs(ratio - value) / value if value > 0 else abs(ratio)
        error = 2.0 * _output_error(work, k) / dist if dist > 0 else math.nan
        if pattern is not None:
            same = bool(torch.equal(pattern(p[None]), ref)) and bool(
                torch.equal(pattern(q[None]), ref)
            )
            best = (h, p, q, ratio, rel, error, same)
            if same:
                return best
        elif best is None or rel < best[4]:
            best = (h, p, q, ratio, rel, error, False)
    assert best is not None
    return best
