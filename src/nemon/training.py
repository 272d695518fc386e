"""Training: the objectives of MATH 5 and 10, their schedule, checkpoints and records.

One loop trains a *stack* of models in lockstep (:class:`~nemon.stack.ModelStack`
for NEMON and MLP, :class:`ModuleStack` for any other module such as MON); a
single model is a stack of one (:func:`train`), and :func:`train_group` trains one
training group of the workflow (an experiment's weights at one ``gamma`` and seed) from its
configuration. Per member ``k`` the loss of a mini-batch is

* ``lipschitz``: ``mean_i CE(y_i, k_i) + lam_k * Lip_k`` (MATH 5; ``lam = 0`` is
  plain training; ``lam`` is *not* the paper's lambda, see MATH 14);
* ``interval``: ``(1 - kappa) mean_i CE(y_i, k_i) + kappa mean_i CE(z_i, k_i)``
  with the worst-case logits ``z`` of the interval embedding at radius
  ``eps_t`` (MATH 10); ``eps_t`` and ``kappa`` are 0 for the first
  ``warmup`` fraction of the epochs, then grow linearly over ``ramp``, then hold.

The learning rate is multiplied by ``lr_factor`` at each milestone (fractions of
the epochs). A member whose last scheduled epoch misses the convergence record
(:func:`summarise_history`) trains on, one epoch at a time at the final learning
rate, until it meets it or ``extra_epochs`` are spent; members that met it are
frozen meanwhile (their weights restored after every step), so they end exactly
as without the extension. Every epoch ends with a checkpoint (weights, optimiser, data-order
generator, history); a rerun resumes from it and gives bit-identical weights on
the CPU. A non-finite loss or weight stops the run with an error naming the
member, epoch and step, keeping the last good checkpoint for inspection.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import __version__
from .contracts import build_model, load_checkpoint, member_name, save_checkpoint
from .errors import ConfigurationError, NonFiniteError
from .mlp import MLP
from .model import NEMON
from .stack import ModelStack


@dataclass(frozen=True)
class Schedule:
    """Epochs, batch size, Adam's learning rate and its step decay (fractions of ``epochs``)."""

    epochs: int
    batch_size: int
    lr: float
    lr_milestones: tuple[float, ...] = ()
    lr_factor: float = 0.1
    extra_epochs: int = 0  # at most this many more for a member that missed the record

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {name}={v!r}")
        v = self.extra_epochs
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigurationError(f"extra_epochs must be an integer >= 0, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigurationError(f"lr must be a positive finite number, got lr={self.lr!r}")
        if not (math.isfinite(self.lr_factor) and 0 < self.lr_factor <= 1):
            raise ConfigurationError(f"lr_factor must lie in (0, 1], got {self.lr_factor!r}")
        for m in self.lr_milestones:
            if not (0 < m < 1):
                raise ConfigurationError(
                    f"lr_milestones are fractions of the epochs in (0, 1), got {m!r}"
                )

    def lr_at(self, epoch: int) -> float:
        """Learning rate of epoch ``epoch`` (1-based): decayed once per milestone passed.

        Extra epochs (``epoch > epochs``) run at the final rate."""
        passed = sum(1 for m in self.lr_milestones if epoch > round(m * self.epochs))
        return self.lr * self.lr_factor**passed


@dataclass(frozen=True)
class Objective:
    """What a stack minimises; ``weights`` (one per member) are ``lam`` or ``eps_t``."""

    name: str
    weights: tuple[float, ...]
    kappa: float = 0.75
    warmup: float = 0.25
    ramp: float = 0.25

    def __post_init__(self) -> None:
        if self.name not in ("lipschitz", "interval"):
            raise ConfigurationError(
                f"unknown objective {self.name!r}; choose lipschitz (MATH 5) or interval (MATH 10)"
            )
        what = "lam" if self.name == "lipschitz" else "eps_t"
        for w in self.weights:
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
                raise ConfigurationError(f"{what} must be a finite number >= 0, got {w!r}")
            if what == "eps_t" and w > 1:
                raise ConfigurationError(f"eps_t must lie in [0, 1] (pixel units), got {w!r}")
        if not (0 <= self.kappa <= 1):
            raise ConfigurationError(f"kappa must lie in [0, 1], got {self.kappa!r}")
        if not (0 <= self.warmup and 0 <= self.ramp and self.warmup + self.ramp <= 1):
            raise ConfigurationError(
                f"warmup={self.warmup!r} and ramp={self.ramp!r} are fractions of the epochs "
                "with warmup + ramp <= 1 (the ramp must end within the run)"
            )

    def progress(self, t: float) -> float:
        """Ramp factor in [0, 1] at training progress ``t`` in [0, 1] (MATH 10's schedule)."""
        if self.name != "interval" or t < self.warmup:
            return 0.0
        if self.ramp == 0:
            return 1.0
        return min((t - self.warmup) / self.ramp, 1.0)


# --- the stacks -----------------------------------------------------------------------------
class ModuleStack(nn.Module):
    """Any models with NEMON's interface, looped over: the slow path (e.g. MON).

    The same methods as :class:`~nemon.stack.ModelStack`, with inputs in pixels.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.items = nn.ModuleList(members)
        self.K = len(members)
        self.last_forward = None
        self.last_backward = None

    def normalise(self, u2: Tensor) -> Tensor:
        return u2  # each member normalises inside its forward

    def logits(self, u: Tensor) -> Tensor:
        return torch.stack([m(u) for m in self.items])

    def lipschitz_bound(self) -> Tensor:
        return torch.stack([m.lipschitz_bound() for m in self.items])

    def worst_case_logits(self, lo: Tensor, hi: Tensor, labels: Tensor) -> Tensor:
        raise ConfigurationError(
            f"{type(self.items[0]).__name__} models are trained plainly here: the interval "
            "objective is for NEMON and MLP models"
        )

    def members(self) -> list[nn.Module]:
        return list(self.items)

    def iterations(self) -> list[tuple[int, bool, int, bool]]:
        out = []
        for m in self.items:
            f, b = m.last_forward_stats, m.last_backward_stats
            out.append(
                (
                    f.iterations if f else 0,
                    f.converged if f else True,
                    b.iterations if b else 0,
                    b.converged if b else True,
                )
            )
        return out


def make_stack(models: Sequence[nn.Module]) -> nn.Module:
    """The fastest stack that holds ``models``."""
    if all(isinstance(m, (NEMON, MLP)) for m in models):
        return ModelStack(models)
    return ModuleStack(models)


def _iterations(stack: nn.Module) -> list[tuple[int, bool, int, bool]]:
    if isinstance(stack, ModuleStack):
        return stack.iterations()
    f, b = stack.last_forward, stack.last_backward
    if f is None:  # an MLP: nothing solved
        return [(0, True, 0, True)] * stack.K
    return [
        (fm.iterations, fm.converged, bm.iterations, bm.converged)
        for fm, bm in zip(f.members, b.members, strict=True)
    ]


def to_pixels(images: Tensor) -> Tensor:
    """uint8 images (any shape ``(N, ...)``) to float pixels in [0, 1], flattened per sample."""
    x = images.reshape(images.shape[0], -1)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy per member: ``(K, N, classes)`` -> ``(K,)``."""
    K, N, c = logits.shape
    flat = F.cross_entropy(logits.reshape(K * N, c), labels.repeat(K), reduction="none")
    return flat.view(K, N).mean(dim=1)


@dataclass
class _EpochStats:
    loss: list[float]
    ce: list[float]
    correct: list[int]
    fwd: list[list[int]]
    bwd: list[list[int]]
    not_converged: list[int]
    samples: int = 0

    @classmethod
    def empty(cls, K: int) -> _EpochStats:
        return cls(
            [0.0] * K, [0.0] * K, [0] * K, [[] for _ in range(K)], [[] for _ in range(K)], [0] * K
        )


@dataclass
class TrainResult:
    """Per member: the per-epoch history and the run's summary (see :func:`summarise_history`)."""

    histories: list[list[dict]]
    seconds: float
    resumed_from: int  # the last completed epoch found in a checkpoint (0: fresh start)
    info: dict = field(default_factory=dict)


def fingerprint(config: dict) -> str:
    """SHA-256 of a JSON-able description of a run: a checkpoint of another run is not used."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def train_stack(
    stack: nn.Module,
    train_x: Tensor,
    train_y: Tensor,
    *,
    objective: Objective,
    schedule: Schedule,
    seed: int,
    test_x: Tensor | None = None,
    test_y: Tensor | None = None,
    checkpoint: str | Path | None = None,
    run_id: dict | None = None,
    member_names: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train every member of ``stack`` in place; returns per-member histories.

    ``train_x``: uint8 images or pixels in [0, 1]; the data order of each epoch
    is a permutation drawn from a generator seeded with ``seed`` (the same for
    every member). ``checkpoint``: a file to write after every epoch and to
    resume from when it exists and was written for the same ``run_id``.
    """
    K = stack.K
    if len(objective.weights) != K:
        raise ConfigurationError(f"{len(objective.weights)} objective weights for {K} members")
    names = list(member_names) if member_names else [f"member {k}" for k in range(K)]
    device = next(stack.parameters()).device
    dtype = next(stack.parameters()).dtype
    X = to_pixels(train_x).to(device=device, dtype=dtype)
    Y = train_y.to(device=device, dtype=torch.long)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{X.shape[0]} training images but {Y.shape[0]} labels")
    weights = torch.tensor(objective.weights, dtype=dtype, device=device)
    zero = torch.zeros_like(weights)
    opt = torch.optim.Adam(stack.parameters(), lr=schedule.lr, fused=device.type in ("cpu", "cuda"))
    gen = torch.Generator().manual_seed(seed)
    histories: list[list[dict]] = [[] for _ in range(K)]
    start, elapsed = 1, 0.0
    fp = fingerprint(
        {
            "run": run_id or {},
            "objective": asdict(objective),
            "schedule": asdict(schedule),
            "seed": seed,
            "K": K,
        }
    )
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        if state is not None and state.get("fingerprint") == fp:
            stack.load_state_dict(state["stack"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            histories = state["histories"]
            elapsed = state["seconds"]
            start = state["epoch"] + 1
            log(f"resuming from the checkpoint {checkpoint} after epoch {state['epoch']}")
        elif state is not None:
            log(f"the checkpoint {checkpoint} was written for another run; starting from epoch 1")
    resumed_from = start - 1
    n = len(X)
    steps = math.ceil(n / schedule.batch_size)
    epoch = start - 1
    while True:
        epoch += 1
        active = _active_members(histories, epoch, schedule.epochs)
        if epoch > schedule.epochs + schedule.extra_epochs or not any(active):
            break
        extra = epoch > schedule.epochs
        label = (
            f"extra epoch {epoch - schedule.epochs}/{schedule.extra_epochs}"
            if extra
            else f"epoch {epoch}/{schedule.epochs}"
        )
        if extra:
            log(
                f"{label}: "
                + ", ".join(names[k] for k in range(K) if active[k])
                + f" missed the convergence record (loss change < {LOSS_CHANGE_MAX:.0%}, "
                f"bound change < {BOUND_CHANGE_MAX:.0%}); the others are frozen"
            )
        restore = _freezer(stack, [k for k in range(K) if not active[k]])
        lr = schedule.lr_at(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        if hasattr(stack, "train"):
            stack.train()
        t0 = time.perf_counter()
        st = _EpochStats.empty(K)
        order = torch.randperm(n, generator=gen).to(device)
        bar = tqdm(
            order.split(schedule.batch_size),
            desc=label,
            unit="batch",
            disable=not progress,
            mininterval=5.0,
        )
        ramp = 0.0
        for step, idx in enumerate(bar, start=1):
            ramp = objective.progress(((epoch - 1) + (step - 1) / steps) / schedule.epochs)
            u, labels = X.index_select(0, idx), Y.index_select(0, idx)  # X[idx]: 5x slower
            u_n = stack.normalise(u)  # per batch: cheaper than a normalised copy of the data
            lam = weights if objective.name == "lipschitz" else zero
            if isinstance(stack, ModelStack):  # the whole clean objective in one node
                loss, ce, logits = stack.lipschitz_loss(u_n, labels, lam)
            else:
                logits = stack.logits(u_n)
                loss = ce = _ce(logits, labels)
                if bool((lam > 0).any()):
                    loss = ce + lam * stack.lipschitz_bound()
            if objective.name == "interval" and ramp > 0 and objective.kappa > 0:
                eps = (ramp * weights)[:, None, None]
                lo = stack.normalise((u - eps).clamp(0.0, 1.0))
                hi = stack.normalise((u + eps).clamp(0.0, 1.0))
                worst = _ce(stack.worst_case_logits(lo, hi, labels), labels)
                kappa = ramp * objective.kappa
                loss = (1 - kappa) * loss + kappa * worst
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            hits = (logits.detach().argmax(dim=2) == labels).sum(dim=1)
            values = torch.cat((loss.detach(), ce.detach(), hits.to(loss.dtype))).tolist()
            bad = [k for k in range(K) if not math.isfinite(values[k])]
            if bad:
                raise NonFiniteError(
                    f"training loss of {', '.join(names[k] for k in bad)} became "
                    f"{values[bad[0]]} at epoch {epoch}, step {step} (lr={lr:g}); the training "
                    "diverged: lower the learning rate or the objective's weight. The last good "
                    "checkpoint is kept for inspection" + (f" ({checkpoint})" if checkpoint else "")
                )
            opt.step()
            restore()
            its = _iterations(stack)
            correct = values[2 * K :]
            b = len(idx)
            st.samples += b
            for k in range(K):
                st.loss[k] += values[k] * b
                st.ce[k] += values[K + k] * b
                st.correct[k] += int(correct[k])
                st.fwd[k].append(its[k][0])
                st.bwd[k].append(its[k][2])
                st.not_converged[k] += (not its[k][1]) + (not its[k][3])
        seconds = time.perf_counter() - t0
        elapsed += seconds
        _check_weights(stack, names, epoch)
        with torch.no_grad():
            bounds = stack.lipschitz_bound().tolist()
            mus = _mus(stack)
        test_acc = None
        if test_x is not None and test_y is not None:
            # at the training tolerance: a cheap learning curve, not the reported number
            test_acc = stack_accuracy(stack, test_x, test_y)
        for k in range(K):
            if not active[k]:
                continue
            histories[k].append(
                {
                    "epoch": epoch,
                    "lr": lr,
                    "eps_t": ramp * objective.weights[k] if objective.name == "interval" else 0.0,
                    "kappa": ramp * objective.kappa if objective.name == "interval" else 0.0,
                    "train_loss": st.loss[k] / st.samples,
                    "train_ce": st.ce[k] / st.samples,
                    "train_acc": st.correct[k] / st.samples,
                    "lipschitz_bound": bounds[k],
                    "mu": mus[k],
                    "fwd_iters_mean": sum(st.fwd[k]) / len(st.fwd[k]),
                    "fwd_iters_max": max(st.fwd[k]),
                    "bwd_iters_mean": sum(st.bwd[k]) / len(st.bwd[k]),
                    "bwd_iters_max": max(st.bwd[k]),
                    "not_converged": st.not_converged[k],
                    "seconds": seconds,
                    **({"test_acc": test_acc[k]} if test_acc is not None else {}),
                }
            )
        log(
            f"{label} ({seconds:.1f} s, lr {lr:g}): "
            + "; ".join(
                f"{names[k]} loss {histories[k][-1]['train_loss']:.4f} bound {bounds[k]:.4g}"
                for k in range(K)
                if active[k]
            )
        )
        if checkpoint is not None:
            save_checkpoint(
                {
                    "fingerprint": fp,
                    "epoch": epoch,
                    "stack": stack.state_dict(),
                    "optimizer": opt.state_dict(),
                    "generator": gen.get_state(),
                    "histories": histories,
                    "seconds": elapsed,
                },
                checkpoint,
            )
    return TrainResult(histories, elapsed, resumed_from)


def _active_members(histories: Sequence[Sequence[dict]], epoch: int, epochs: int) -> list[bool]:
    """Who trains in ``epoch``: everyone within the schedule; after it, whoever trained the
    previous epoch and still misses the convergence record."""
    if epoch <= epochs:
        return [True] * len(histories)
    return [
        len(h) == epoch - 1 and not summarise_history(h)["training_converged"] for h in histories
    ]


def _freezer(stack: nn.Module, frozen: Sequence[int]) -> Callable[[], None]:
    """A function that puts the weights of the ``frozen`` members back as they are now.

    Called after every optimiser step: Adam's momentum would move a member even with a zero
    gradient, so freezing is restoring, which leaves a frozen member bit-identical."""
    if not frozen:
        return lambda: None
    if isinstance(stack, ModelStack):
        rows = torch.tensor(list(frozen), device=stack.flat.device)
        saved = stack.flat.detach()[rows].clone()

        def restore() -> None:
            with torch.no_grad():
                stack.flat[rows] = saved

        return restore
    params = [p for k in frozen for p in stack.items[k].parameters()]
    copies = [p.detach().clone() for p in params]

    def restore_items() -> None:
        with torch.no_grad():
            for p, c in zip(params, copies, strict=True):
                p.copy_(c)

    return restore_items


def _mus(stack: nn.Module) -> list[float]:
    if isinstance(stack, ModuleStack):
        return [float(m.mu_2() if hasattr(m, "mu_2") else m.mu()) for m in stack.items]
    if stack.T is None:
        return [0.0] * stack.K
    t = stack.T.diagonal(dim1=-2, dim2=-1)
    return ((t - t.abs()).amax(dim=-1) + stack.gamma).tolist()


def _check_weights(stack: nn.Module, names: Sequence[str], epoch: int) -> None:
    for name, p in stack.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise NonFiniteError(
                f"weights {name} became non-finite during epoch {epoch}; the training diverged: "
                "lower the learning rate or the objective's weight"
            )


@torch.no_grad()
def stack_accuracy(stack: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> list[float]:
    """Clean accuracy of every member at the stack's own solver settings."""
    if hasattr(stack, "eval"):
        stack.eval()
    dev = next(stack.parameters()).device
    dt = next(stack.parameters()).dtype
    X = to_pixels(x)
    Y = y.to(torch.long)
    correct = torch.zeros(stack.K, dtype=torch.long)
    for i in range(0, len(X), batch_size):
        u = X[i : i + batch_size].to(dev, dt)
        pred = stack.logits(stack.normalise(u)).argmax(dim=2).cpu()
        correct += (pred == Y[i : i + batch_size]).sum(dim=1)
    return (correct.double() / len(X)).tolist()


def summarise_history(history: Sequence[dict]) -> dict:
    """Whole-run statistics of one member, and whether it converged (last-epoch changes).

    ``loss_rel_change`` and ``bound_rel_change`` are the relative changes of the
    training loss and the Lipschitz bound over the last epoch; the run counts as
    converged when they are below 3 % and 5 % (0 with a single epoch: unknown is
    not converged).
    """
    if not history:
        raise ValueError("empty training history: train for at least one epoch")
    n = len(history)

    def rel(key: str) -> float:
        if n < 2:
            return math.inf
        a, b = history[-2][key], history[-1][key]
        return abs(b - a) / max(abs(a), 1e-12)

    loss_change, bound_change = rel("train_loss"), rel("lipschitz_bound")
    return {
        "epochs": n,
        "fwd_iters_mean": sum(h["fwd_iters_mean"] for h in history) / n,
        "fwd_iters_max": max(h["fwd_iters_max"] for h in history),
        "bwd_iters_mean": sum(h["bwd_iters_mean"] for h in history) / n,
        "bwd_iters_max": max(h["bwd_iters_max"] for h in history),
        "not_converged": sum(h["not_converged"] for h in history),
        "final_train_loss": history[-1]["train_loss"],
        "loss_rel_change": loss_change if math.isfinite(loss_change) else 1.0,
        "bound_rel_change": bound_change if math.isfinite(bound_change) else 1.0,
        "training_converged": bool(
            loss_change < LOSS_CHANGE_MAX and bound_change < BOUND_CHANGE_MAX
        ),
    }


LOSS_CHANGE_MAX = 0.03
BOUND_CHANGE_MAX = 0.05


def train(
    model: nn.Module,
    train_x: Tensor,
    train_y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    lam: float = 0.0,
    seed: int,
    objective: str = "lipschitz",
    eps_t: float = 0.0,
    kappa: float = 0.75,
    warmup: float = 0.25,
    ramp: float = 0.25,
    lr_milestones: Sequence[float] = (),
    lr_factor: float = 0.1,
    extra_epochs: int = 0,
    test_x: Tensor | None = None,
    test_y: Tensor | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train one model in place (a stack of one); returns its per-epoch history.

    ``objective="lipschitz"`` minimises ``CE + lam * lipschitz_bound()`` (MATH 5);
    ``"interval"`` the certified objective of MATH 10 at radius ``eps_t``.
    """
    if objective == "lipschitz" and eps_t:
        raise ConfigurationError("eps_t belongs to objective='interval'")
    if objective == "interval" and lam:
        raise ConfigurationError("lam belongs to objective='lipschitz'")
    weight = lam if objective == "lipschitz" else eps_t
    obj = Objective(objective, (float(weight),), kappa=kappa, warmup=warmup, ramp=ramp)
    sched = Schedule(epochs, batch_size, lr, tuple(lr_milestones), lr_factor, extra_epochs)
    stack = make_stack([model])
    result = train_stack(
        stack,
        train_x,
        train_y,
        objective=obj,
        schedule=sched,
        seed=seed,
        test_x=test_x,
        test_y=test_y,
        checkpoint=checkpoint,
        progress=progress,
        log=lambda s: None,
    )
    if isinstance(stack, ModelStack):
        trained = stack.member(0)
        with torch.no_grad():
            for (_, p), (_, q) in zip(
                model.named_parameters(), trained.named_parameters(), strict=True
            ):
                p.copy_(q)
    return result.histories[0]


@dataclass
class MemberResult:
    """One trained member of a group: its name (``lam=0.001``), weight, model and records."""

    name: str
    weight: float
    model: nn.Module
    history: list[dict]
    # mu, lipschitz_bound, the run's summary (summarise_history) and train_seconds
    record: dict


@dataclass
class GroupResult:
    """A trained group: its members, and what it ran (for the logs and the records)."""

    members: list[MemberResult]
    objective: Objective
    schedule: Schedule
    seconds: float
    resumed_from: int  # the last completed epoch found in a checkpoint (0: fresh start)

    def group_record(self) -> dict:
        """The ``group`` part of every member's provenance."""
        names = [m.name for m in self.members]
        return {"members": names, "size": len(names), "resumed_from_epoch": self.resumed_from}


def train_group(
    model: str,
    objective: str,
    weights: Sequence[float],
    *,
    gamma: float,
    seed: int,
    hidden: int,
    training: Mapping,
    data,
    device: torch.device | str = "cpu",
    checkpoint: str | Path | None = None,
    run_id: Mapping | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> GroupResult:
    """Train one group of the workflow: a model of kind ``model`` per ``weights`` value (``lam``
    or ``eps_t`` of ``objective``), all from the same initial weights (seeded with ``seed``:
    paired comparisons), as one stack (:func:`train_stack`).

    ``training``: the experiment's training settings (:func:`nemon.config.experiment_training`:
    ``epochs``, ``extra_epochs``, ``batch_size``, the solver's ``solver``, ``tol``,
    ``max_iter``, ``stop``, and the objective's ``schedule``); ``hidden``: the models' width;
    ``data``: a :class:`nemon.data.Dataset`. ``run_id`` is added to what names the run in the
    checkpoint (e.g. the grid points' keys). Returns each member's model (on ``device``),
    history and record.
    """
    schedule_keys = dict(training["schedule"])
    solver = {k: training[k] for k in ("solver", "tol", "max_iter", "stop")}
    members = []
    for _ in weights:  # the same initial weights for every member: paired comparisons
        seed_everything(seed)
        members.append(
            build_model(
                model,
                in_features=data.train_x[0].numel(),
                hidden=hidden,
                out_features=10,
                gamma=gamma,
                input_mean=data.mean,
                input_std=data.std,
                solver=solver,
            )
        )
    stack = make_stack(members).to(device)
    ramp = ("kappa", "warmup", "ramp")
    obj = Objective(
        objective,
        tuple(float(w) for w in weights),
        **({k: schedule_keys[k] for k in ramp} if objective == "interval" else {}),
    )
    schedule = Schedule(
        training["epochs"],
        training["batch_size"],
        schedule_keys["lr"],
        tuple(schedule_keys["lr_milestones"]),
        schedule_keys["lr_factor"],
        training["extra_epochs"],
    )
    names = [member_name(objective, w) for w in weights]
    log(f"{model}/{objective} gamma={gamma} seed={seed} hidden={hidden}: {names}")
    log(f"{stack}\n{schedule}\n{obj}")
    result = train_stack(
        stack,
        data.train_x,
        data.train_y,
        objective=obj,
        schedule=schedule,
        seed=seed,
        test_x=data.test_x,
        test_y=data.test_y,
        checkpoint=checkpoint,
        run_id={
            "model": model,
            "gamma": gamma,
            "solver": solver,
            "hidden": hidden,
            "data": data.source,
            "device": str(device),
            **(run_id or {}),
        },
        member_names=names,
        progress=progress,
        log=log,
    )
    out = []
    for k, trained in enumerate(stack.members()):
        with torch.no_grad():
            mu = float(trained.mu_2() if hasattr(trained, "mu_2") else trained.mu())
            bound = float(trained.lipschitz_bound())
        record = {
            "mu": mu,
            "lipschitz_bound": bound,
            **summarise_history(result.histories[k]),
            "train_seconds": result.seconds,
        }
        out.append(MemberResult(names[k], float(weights[k]), trained, result.histories[k], record))
    return GroupResult(out, obj, schedule, result.seconds, result.resumed_from)


def seed_everything(seed: int) -> None:
    """Seed torch's global generator (initialisation). The CPU kernels used here are
    deterministic without ``torch.use_deterministic_algorithms``, which would add seconds
    of import time to every job (tests/test_training.py checks bit-identical reruns)."""
    torch.manual_seed(seed)


# --- provenance -------------------------------------------------------------------------------
# What provenance() checks for uncommitted changes (paths relative to the checkout).
CODE_PATHS = ("src", "scripts", "workflow", "Snakefile", "pyproject.toml")


def resolve_device(device: str, gpus: int = 0) -> torch.device:
    """``"auto"`` picks CUDA where available, else the CPU; anything else is passed to torch.

    ``gpus``: how many GPUs the job was given (a profile's ``gpu`` resource); a job given
    GPUs that resolves to anything but CUDA is refused rather than holding them unused.
    """
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ConfigurationError(f"unknown device {device!r}: use auto, cpu or cuda[:N]") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigurationError(
                f"device={device!r} asked for CUDA but torch.cuda.is_available() is False; "
                "use device: auto or cpu"
            )
    if gpus and dev.type != "cuda":
        raise ConfigurationError(
            f"this job was given {gpus} GPU(s) but runs on {dev}: torch sees no CUDA device "
            "here (a CPU-only torch, or no GPU on the node); install a CUDA build of torch or "
            "use a profile without GPUs"
        )
    return dev


def provenance(folder: str, device: torch.device | str, threads: int) -> dict:
    """Versions, device, git commit and whether the checkout had uncommitted changes.

    Outside a git checkout the commit is ``"unknown"`` and ``git_dirty`` is ``None``.
    """

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", folder, *args], capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    # only the code: results/ and figures/ are tracked too and change while the workflow runs
    status = git(
        "status", "--porcelain", "--untracked-files=no", "--", *(f":/{p}" for p in CODE_PATHS)
    )
    return {
        "nemon": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": threads,
        # what decides the floating-point path on a CPU (docs/reproducibility.md, "Provenance")
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "environment": {
            k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "DNNL_MAX_CPU_ISA")
        },
        "git_commit": commit,
        # uncommitted changes to the code: the commit alone does not pin it
        "git_dirty": None if status is None else bool(status),
    }
