"""Attacks for the evaluation stage: the inversion attack and the strong ones (MATH 4, 7, 11).

- :func:`inversion_attack`: the paper's attack (MATH 7), one fixed direction;
- :func:`pgd`: l_inf PGD with random start and restarts (``torchattacks.PGD``);
- :func:`autoattack`: AutoAttack (Croce and Hein 2020), built from torchattacks' public
  components: APGD-CE, APGD-T, FAB-T and the gradient-free Square attack.

PGD and AutoAttack search the eps-ball for the worst case with the model's exact implicit
input gradient (MATH 4), and solve every fixed point at the tight tolerance they are given,
on the relative step (MATH 12a), never at the model's training tolerance or stopping rule.
Every solve they cause is counted in a :class:`SolveCounts` record, non-converged ones
included, so a reader can check that an attack was run as reported.

A model is any ``nn.Module`` whose ``model(u)`` takes pixels in ``[0, 1]`` (any shape that
flattens to the input size) and returns logits, differentiable in ``u``: one of the model
protocol (:class:`nemon.protocol.ImplicitModel`) solves as the attack says and has its
solves counted (see :mod:`nemon._solves`); any other module (a plain ``torch.nn`` network)
works too, with no solves to count.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ._checks import (
    check_batch,
    check_eps,
    check_int,
    check_label_range,
    check_labels,
    check_model,
    check_pixels,
    check_positive,
)
from ._solves import (
    Instrumented,
    SolveCounts,
    attack_state,
    device_dtype,
    solving_at,
    supports_warm_start,
)
from .errors import ConfigurationError, NemonError

# torchattacks is imported where an attack runs, not here: it takes about a second to import,
# and `import nemon`, which exports inversion_attack, needs none of it
if TYPE_CHECKING:
    from torchattacks.attack import Attack

AUTOATTACK_NORMS = ("Linf",)
# Allowed distance of an adversarial image outside the eps-ball or [0, 1]: float rounding only.
BALL_SLACK = 1e-6


def inversion_attack(u: Tensor, eps: float) -> Tensor:
    """Continuous image inversion ``u + eps (1 - 2u)`` in pixel units (MATH 7).

    ``eps = 0`` is the clean image, ``eps = 1`` the inverted one; for ``u`` in
    ``[0, 1]`` the perturbation has ``||delta||_inf <= eps``.
    """
    eps = check_eps(eps, "inversion_attack")
    check_pixels(u, "inversion_attack")
    return u + eps * (1.0 - 2.0 * u)


class AttackError(NemonError, RuntimeError):
    """An attack produced an image outside the eps-ball or outside ``[0, 1]``."""


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
    # the attack's solves started from the last solution (``solving(warm_start=True)``); False
    # also for a model whose solves (if any) start cold whatever it is asked (MLP, MON)
    warm_start: bool = False
    # inputs correctly classified clean that were not attacked: certified at eps (``certified``)
    certified: int = 0

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
            "certified": self.certified,
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


# --- images -----------------------------------------------------------------------------------
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
    adv = adv.detach()  # a torchattacks component may return images still on its graph
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


def _predict(inst: Instrumented, x: Tensor, batch_size: int) -> Tensor:
    """Logits in the model's own dtype (not rounded to that of the images)."""
    with torch.no_grad():
        out = [inst(x[i : i + batch_size].to(inst.dtype)) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


@dataclass
class _Prepared:
    inst: Instrumented
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
    certified: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, SolveCounts, SolveCounts, float]:
    """Clean check, attack at ``tol``, validity check and final check at ``eval_tol``.

    ``attack_fn(prep, idx)`` returns adversarial images for ``prep.x[idx]``
    (the clean-correct inputs not ``certified``); it runs at ``tol``/``max_iter``, with
    warm starts if ``warm_start``. The clean and final checks always start cold and see
    every input.
    """
    if not isinstance(warm_start, bool):
        raise ConfigurationError(f"{name}: warm_start must be True or False, got {warm_start!r}")
    if certified is not None and (
        not isinstance(certified, Tensor)
        or certified.dtype != torch.bool
        or certified.shape != (len(labels),)
    ):
        raise ConfigurationError(
            f"{name}: certified must be a bool tensor with one flag per input, shape "
            f"({len(labels)},), got {certified!r}"
        )
    start = time.perf_counter()
    device, dtype = device_dtype(model, u)
    x = _image_batch(u, image_shape, name) if name == "autoattack" else u
    x = x.detach().to(device=device, dtype=image_dtype or dtype)
    y = labels.detach().to(device=device, dtype=torch.long)
    inst = Instrumented(model, device, dtype)
    eval_log, attack_log = SolveCounts(), SolveCounts()
    with attack_state(model):
        inst.log = eval_log
        with solving_at(model, eval_tol, eval_max_iter):
            clean_logits = _predict(inst, x, batch_size)
        classes = clean_logits.shape[1]
        if classes < min_classes:
            raise ConfigurationError(
                f"{name}: needs a model with at least {min_classes} classes, this one has "
                f"{classes}"
                + (" (APGD-T's DLR loss reads the 4 largest logits)" if min_classes == 4 else "")
            )
        check_label_range(y, classes, name)
        clean_correct = clean_logits.argmax(dim=1) == y
        prep = _Prepared(inst, x, y, clean_correct, classes, eval_log)
        adv = x.clone()
        todo = clean_correct if certified is None else clean_correct & ~certified.to(device)
        idx = todo.nonzero().flatten()
        if idx.numel():
            inst.log = attack_log
            # the attack reads logits and gradients only: its solves skip the error bound
            with solving_at(model, tol, max_iter, warm_start=warm_start, error_bounds=False):
                adv[idx] = attack_fn(prep, idx).detach()
        _check_adversarial(adv, x, eps, name)
        _check_adversarial(adv.reshape(u.shape), u, eps, name)
        inst.log = eval_log
        with solving_at(model, eval_tol, eval_max_iter):
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


def _not_attacked(clean_correct: Tensor, certified: Tensor | None) -> int:
    """How many clean-correct inputs were left out of the attack as certified."""
    if certified is None:
        return 0
    return int((clean_correct & certified.cpu()).sum())


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
    check_model(model, where)
    check_batch(u, where)
    check_labels(labels, u.shape[0], where)
    check_int("seed", seed, 0, where)
    check_positive("tol", tol, where)
    check_int("max_iter", max_iter, 1, where)
    check_int("batch_size", batch_size, 1, where)
    eval_tol = tol if eval_tol is None else check_positive("eval_tol", eval_tol, where)
    eval_max_iter = (
        max_iter if eval_max_iter is None else check_int("eval_max_iter", eval_max_iter, 1, where)
    )
    return check_eps(eps, where), float(eval_tol), eval_max_iter


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
    certified: Tensor | None = None,
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
    batch shape (``solving(warm_start=True)`` of :class:`nemon.protocol.ImplicitModel`;
    models without warm starts start cold). Each step moves the inputs a little, so
    this saves iterations; the results agree with cold starts to the attack's
    tolerance, not bit for bit.
    The clean, per-restart and final checks start cold either way.

    ``certified``: one flag per input, set where a sound certificate at this ``eps``
    (MATH 6, 9) proves the input robust. Those inputs are not attacked (no attack can
    break them); the final check classifies them like the others, so a certificate that
    were wrong about a misclassified input would still show.
    """
    where = "pgd"
    eps, eval_tol, eval_max_iter = _common_checks(
        model, u, labels, eps, seed, tol, max_iter, eval_tol, eval_max_iter, batch_size, where
    )
    check_int("steps", steps, 1, where)
    check_int("restarts", restarts, 1, where)
    if step_size is None:
        step_size = 2.5 * eps / steps
    else:
        step_size = check_positive("step_size", step_size, where)
    restart_seeds = torch.randint(
        0, 2**62, (restarts,), generator=torch.Generator().manual_seed(seed)
    ).tolist()

    def attack_fn(prep: _Prepared, idx: Tensor) -> Tensor:
        import torchattacks

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
            # checked before the model sees them, which refuses images outside [0, 1] itself
            _check_adversarial(out[todo], prep.x[idx[todo]], eps, where)
            # which inputs this restart broke, judged as the final check judges them
            inst_log = prep.inst.log
            prep.inst.log = prep.eval_log
            with solving_at(model, eval_tol, eval_max_iter, warm_start=False):
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
        certified=certified,
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
        warm_start=bool(warm_start and supports_warm_start(model)),
        certified=_not_attacked(clean, certified),
    )


# --- AutoAttack ------------------------------------------------------------------------------
# The chains of torchattacks.AutoAttack (3.5), component by component: a label, the public
# torchattacks class, and the arguments AutoAttack gives it besides model, eps, norm, seed
# and verbose. ``steps`` sets the iteration count of every component but Square, whose
# budget is ``n_queries`` (None below: filled in at run time, as are the classes).
AUTOATTACK_VERSIONS: dict[str, tuple[tuple[str, str, dict], ...]] = {
    "standard": (
        ("APGD-CE", "APGD", {"loss": "ce", "n_restarts": 1}),
        ("APGD-T", "APGDT", {"n_classes": None, "n_restarts": 1}),
        ("FAB-T", "FAB", {"multi_targeted": True, "n_classes": None, "n_restarts": 1}),
        ("Square", "Square", {"n_queries": None, "n_restarts": 1}),
    ),
    "plus": (
        ("APGD-CE", "APGD", {"loss": "ce", "n_restarts": 5}),
        ("APGD-DLR", "APGD", {"loss": "dlr", "n_restarts": 5}),
        ("FAB", "FAB", {"n_classes": None, "n_restarts": 5}),
        ("Square", "Square", {"n_queries": None, "n_restarts": 1}),
        ("APGD-T", "APGDT", {"n_classes": None, "n_restarts": 1}),
        ("FAB-T", "FAB", {"multi_targeted": True, "n_classes": None, "n_restarts": 1}),
    ),
}


def _torchattacks_steps() -> int:
    """The iteration count torchattacks gives APGD, APGD-T and FAB itself (10 in 3.5)."""
    import torchattacks

    return inspect.signature(torchattacks.APGD).parameters["steps"].default


def _autoattack_chain(
    inst: Instrumented,
    version: str,
    eps: float,
    *,
    classes: int,
    seed: int,
    steps: int | None,
    n_queries: int,
) -> list[tuple[str, Attack]]:
    """The components of ``torchattacks.AutoAttack(inst, "Linf", eps, version, classes, seed)``.

    Built from the public classes with the arguments AutoAttack gives them, so that the
    chain runs as AutoAttack's would, bit for bit, without reading its private attributes;
    ``steps`` (unless None: torchattacks' own count) and ``n_queries`` set the budgets.
    """
    import torchattacks

    chain = []
    for label, name, args in AUTOATTACK_VERSIONS[version]:
        kw = dict(args)
        if "n_classes" in kw:
            kw["n_classes"] = classes
        if "n_queries" in kw:
            kw["n_queries"] = n_queries
        elif steps is not None:
            kw["steps"] = steps
        atk = getattr(torchattacks, name)(
            inst, eps=eps, norm="Linf", seed=seed, verbose=False, **kw
        )
        chain.append((label, atk))
    return chain


def _run_chain(
    chain: list[tuple[str, Attack]],
    inst: Instrumented,
    images: Tensor,
    labels: Tensor,
    eps: float,
    remaining: list[int],
    seconds: list[float],
) -> Tensor:
    """Adversarial images of the chain, as ``torchattacks.MultiAttack`` makes them (MATH 11).

    Each component attacks only the inputs no earlier one broke, judged by one forward of
    its images; the chain stops once all are broken. Adds to ``remaining`` the inputs left
    before the first and after each component, to ``seconds`` each component's wall time
    (not the forwards between components).
    """
    final = images.clone()
    fails = torch.arange(images.shape[0], device=images.device)
    remaining[0] += len(fails)
    for i, (_, atk) in enumerate(chain):
        start = time.perf_counter()
        adv = atk(images[fails], labels[fails])
        seconds[i] += time.perf_counter() - start
        _check_adversarial(adv, images[fails], eps, "autoattack")  # before the model sees them
        # as MultiAttack does: with gradients enabled, the class by torch.max
        broken = torch.max(inst(adv).detach(), 1).indices != labels[fails]
        final[fails[broken]] = adv[broken]
        fails = fails[~broken]
        remaining[i + 1] += len(fails)
        if len(fails) == 0:
            break
    return final


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
    certified: Tensor | None = None,
) -> AttackResult:
    """AutoAttack (Croce and Hein 2020) from torchattacks' public components (MATH 11).

    ``version="standard"`` chains APGD-CE, APGD-T (DLR loss, the 9 most likely
    other classes as targets), FAB-T (same targets) and Square (``n_queries``
    queries, gradient-free, which guards against gradient masking), one restart
    each; each component attacks only the inputs the previous ones left
    unbroken. ``version="plus"`` is torchattacks' "plus" chain. The chain is
    ``torchattacks.AutoAttack``'s, built from the same classes with the same arguments
    (:data:`AUTOATTACK_VERSIONS`) and run as its ``MultiAttack`` runs it, so that the
    per-component counts (``remaining_after``) come from public interfaces only.

    ``steps`` is the iteration count of APGD-CE, APGD-T and FAB-T. It defaults
    to 100, the value of the original standard AutoAttack; torchattacks 3.5
    silently uses 10 (``steps=None`` keeps torchattacks' own count,
    :func:`_torchattacks_steps`: ten times cheaper and weaker).

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
    point by one small square, APGD's and FAB's steps are small); ``certified`` as there.
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
        check_int("steps", steps, 1, where)
    check_int("n_queries", n_queries, 1, where)
    _image_batch(u, image_shape, where)  # fail early on a shape Square cannot use

    used: dict[str, object] = {}

    def attack_fn(prep: _Prepared, idx: Tensor) -> Tensor:
        chain = _autoattack_chain(
            prep.inst,
            version,
            eps,
            classes=prep.classes,
            seed=seed,
            steps=steps,
            n_queries=n_queries,
        )
        used["components"] = tuple(label for label, _ in chain)
        used["restarts"] = max(atk.n_restarts for _, atk in chain)
        # inputs left before the first and after each component, summed over batches; a chain
        # that empties early leaves zeros, correctly
        remaining = [0] * (len(chain) + 1)
        seconds = [0.0] * len(chain)
        out = prep.x[idx].clone()
        for part in _chunks(torch.arange(idx.numel(), device=idx.device), batch_size):
            x, y = prep.x[idx[part]], prep.labels[idx[part]]
            out[part] = _run_chain(chain, prep.inst, x, y, eps, remaining, seconds)
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
        certified=certified,
    )
    return AttackResult(
        attack="autoattack",
        eps=eps,
        robust=robust,
        clean_correct=clean,
        adversarial=adv,
        steps=_torchattacks_steps() if steps is None else steps,
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
        warm_start=bool(warm_start and supports_warm_start(model)),
        certified=_not_attacked(clean, certified),
    )
