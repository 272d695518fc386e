"""Training and evaluation loops for the NEMON experiment (MATH 5-7).

The loss is ``mean_i CE(y_i, C x_i + c) + lam * lipschitz_bound()`` over a
mini-batch (MATH 5 with the cross-entropy averaged over the batch, so ``lam``
does not depend on the batch size).
"""

from __future__ import annotations

import math
import platform
import subprocess
import time
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import __version__
from .errors import ConfigurationError, NonFiniteError
from .model import NEMON
from .robustness import _check_eps, certified_radius, inversion_attack


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA where available, else the CPU; anything else is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigurationError(f"unknown device {device!r}: use auto, cpu or cuda[:N]") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(
            f"device={device!r} asked for CUDA but torch.cuda.is_available() is False; "
            "use device: auto or cpu"
        )
    return dev


def seed_everything(seed: int) -> None:
    """Seed torch and ask for deterministic kernels (bit-identical CPU runs per seed)."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def to_pixels(images: Tensor) -> Tensor:
    """uint8 images (any shape ``(N, ...)``) to float pixels in [0, 1], flattened per sample."""
    x = images.reshape(images.shape[0], -1)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterable[Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return order.split(batch_size)


def train(
    model: NEMON,
    train_x: Tensor,
    train_y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    lam: float,
    seed: int,
    test_x: Tensor | None = None,
    test_y: Tensor | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train ``model`` in place with Adam; returns one record per epoch.

    ``train_x`` holds pixels in [0, 1] (or uint8), on the model's device or
    not. A non-finite loss stops the run with :class:`NonFiniteError` naming
    the epoch and step, before anything is written by the caller.
    """
    if epochs < 1 or batch_size < 1:
        raise ConfigurationError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    if not (lam >= 0 and math.isfinite(lam)):
        raise ConfigurationError(f"lam must be a finite number >= 0, got lam={lam!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ConfigurationError(f"lr must be a positive number, got lr={lr!r}")
    device = model.B.device
    X = to_pixels(train_x).to(device=device, dtype=model.B.dtype)
    Y = train_y.to(device=device, dtype=torch.long)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"{X.shape[0]} training images but {Y.shape[0]} labels")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history: list[dict] = []
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        tot_loss = tot_correct = 0.0
        fwd: list[int] = []
        bwd: list[int] = []
        not_converged = 0
        bar = tqdm(
            _batches(len(X), batch_size, gen),
            desc=f"epoch {epoch}/{epochs}",
            unit="batch",
            disable=not progress,
            mininterval=2.0,
        )
        for step, idx in enumerate(bar, start=1):
            u, labels = X[idx], Y[idx]
            logits = model(u)
            ce = torch.nn.functional.cross_entropy(logits, labels)
            loss = ce + lam * model.lipschitz_bound() if lam > 0 else ce
            if not torch.isfinite(loss):
                raise NonFiniteError(
                    f"training loss became {float(loss.detach())} at epoch {epoch}, step {step} "
                    f"(lam={lam}, lr={lr}, gamma={model.gamma}); lower lr or lam"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            fs, bs = model.last_stats, model.last_backward_stats
            fwd.append(fs.iterations)
            bwd.append(bs.iterations)
            not_converged += (not fs.converged) + (not bs.converged)
            tot_loss += float(loss.detach()) * len(idx)
            tot_correct += float((logits.argmax(1) == labels).sum())
            if step % 50 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", fwd_it=fs.iterations)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            rec = {
                "epoch": epoch,
                "train_loss": tot_loss / len(X),
                "train_acc": tot_correct / len(X),
                "lipschitz_bound": float(model.lipschitz_bound()),
                "mu": float(model.mu()),
                "fwd_iters_mean": sum(fwd) / len(fwd),
                "fwd_iters_max": max(fwd),
                "bwd_iters_mean": sum(bwd) / len(bwd),
                "bwd_iters_max": max(bwd),
                "not_converged": not_converged,
                "seconds": seconds,
            }
        if test_x is not None and test_y is not None:
            # at the training tolerance: a cheap learning curve, not the reported number
            rec["test_acc"] = accuracy(model, test_x, test_y, tol=None, max_iter=None)
        history.append(rec)
    return history


# Evaluation solves tighter than the paper's training tolerance (1e-2): certificates
# subtract the solver's error bound, and clean and attacked accuracy must come from
# equally accurate equilibria to be comparable.
EVAL_TOL = 1e-6
EVAL_MAX_ITER = 3000

# What provenance() checks for uncommitted changes (paths relative to the checkout).
CODE_PATHS = ("src", "scripts", "workflow", "Snakefile", "pyproject.toml")


@torch.no_grad()
def predict(
    model: NEMON,
    x: Tensor,
    batch_size: int = 1000,
    *,
    tol: float | None = EVAL_TOL,
    max_iter: int | None = EVAL_MAX_ITER,
) -> Tensor:
    """Predicted labels for images ``x`` (pixels in [0, 1] or uint8), solved at ``tol``."""
    model.eval()
    X = to_pixels(x)
    dev, dt = model.B.device, model.B.dtype
    with model.solver_settings(tol=tol, max_iter=max_iter):
        out = [
            model(X[i : i + batch_size].to(dev, dt)).argmax(1).cpu()
            for i in range(0, len(X), batch_size)
        ]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: NEMON, x: Tensor, y: Tensor, batch_size: int = 1000, **solver) -> float:
    """Clean accuracy in [0, 1] (``solver``: ``tol``/``max_iter`` as in :func:`predict`)."""
    return float((predict(model, x, batch_size, **solver) == y.cpu()).double().mean())


@torch.no_grad()
def evaluate_robustness(
    model: NEMON,
    x: Tensor,
    y: Tensor,
    eps_list: Sequence[float],
    batch_size: int = 1000,
    tol: float | None = EVAL_TOL,
    max_iter: int | None = EVAL_MAX_ITER,
    progress: bool = False,
) -> list[dict]:
    """Accuracy under :func:`inversion_attack` and certified accuracy at each ``eps``.

    Returns tidy rows ``{"attack": "inversion" | "certified", "eps", "accuracy"}``.
    The certified radius does not depend on ``eps``, so it is computed once.
    ``tol``/``max_iter`` override the model's solver settings for the
    evaluation (``None`` keeps them); see :data:`EVAL_TOL`.
    """
    eps_list = [_check_eps(e) for e in eps_list]
    model.eval()
    X = to_pixels(x)
    Y = y.cpu().long()
    dev, dt = model.B.device, model.B.dtype
    with model.solver_settings(tol=tol, max_iter=max_iter):
        radius = torch.cat(
            [
                certified_radius(
                    model, X[i : i + batch_size].to(dev, dt), Y[i : i + batch_size]
                ).cpu()
                for i in range(0, len(X), batch_size)
            ]
        )
        rows = []
        for eps in tqdm(eps_list, desc="eps", disable=not progress):
            pred = predict(model, inversion_attack(X, eps), batch_size, tol=None, max_iter=None)
            inv = float((pred == Y).double().mean())
            cert = float((radius > eps).double().mean())
            rows.append({"attack": "inversion", "eps": eps, "accuracy": inv})
            rows.append({"attack": "certified", "eps": eps, "accuracy": cert})
    return rows


def summarise_history(history: Sequence[dict]) -> dict:
    """Whole-run solver statistics from the per-epoch records of :func:`train`.

    Every epoch has the same number of steps, so the mean of the epoch means is the mean.
    """
    if not history:
        raise ValueError("empty training history: train for at least one epoch")
    n = len(history)
    return {
        "epochs": n,
        "fwd_iters_mean": sum(h["fwd_iters_mean"] for h in history) / n,
        "fwd_iters_max": max(h["fwd_iters_max"] for h in history),
        "bwd_iters_mean": sum(h["bwd_iters_mean"] for h in history) / n,
        "bwd_iters_max": max(h["bwd_iters_max"] for h in history),
        "not_converged": sum(h["not_converged"] for h in history),
        "final_train_loss": history[-1]["train_loss"],
    }


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
        "git_commit": commit,
        # uncommitted changes to the code: the commit alone does not pin it
        "git_dirty": None if status is None else bool(status),
    }
