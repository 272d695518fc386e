"""One row of the table: train one epoch of one configuration and measure it.

nemon rows run the workflow's own loop, :func:`nemon.training.train_stack`, on a
:class:`~nemon.stack.ModelStack` built as ``scripts/train.py`` builds it (every
member from the same seed, ``lam`` per member); torchdeq rows run
:func:`~benchmarks.torchdeq_adapter.train_epoch` on the same initial weights
and data order. :func:`run_isolated` runs a configuration in a fresh
``python -m benchmarks --one CONFIG`` process, so its peak RSS is its own.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor

from nemon.errors import NonConvergenceWarning
from nemon.model import NEMON
from nemon.stack import ModelStack
from nemon.training import (
    Objective,
    Schedule,
    TrainResult,
    make_stack,
    resolve_device,
    seed_everything,
    stack_accuracy,
    to_pixels,
    train_stack,
)

from . import torchdeq_adapter as deq
from .config import BATCH_SIZE, HIDDEN, IN_FEATURES, LR, OUT_FEATURES, RunConfig, stop_name
from .datasets import BenchData, load_bench_data
from .timing import (
    device_peak_mib,
    flops_per_sample,
    peak_rss_mib,
    reset_device_peak,
    reset_peak_rss,
    rss_mib,
    sync,
    timed,
)

RESULT_TAG = "NEMON_BENCH_RESULT "
ROOT = Path(__file__).resolve().parents[1]  # the repository, where python -m benchmarks resolves


def build_members(cfg: RunConfig, mean: float, std: float, device: torch.device) -> list[NEMON]:
    """One NEMON per ``lam``, each initialised from ``cfg.seed`` (as the workflow does)."""
    members = []
    for _ in cfg.lams:  # the same initial weights for every member: paired comparisons
        seed_everything(cfg.seed)
        model = NEMON(
            IN_FEATURES,
            HIDDEN,
            OUT_FEATURES,
            gamma=cfg.gamma,
            input_mean=mean,
            input_std=std,
            # torchdeq solves its own fixed point; the model's solver settings are unused there
            solver=cfg.solver if cfg.impl == "nemon" else "average",
            tol=cfg.tol,
            max_iter=cfg.max_iter,
            stop=cfg.stop,
        )
        members.append(model.to(device))
    return members


def build(cfg: RunConfig, mean: float, std: float, device: torch.device):
    """What ``cfg`` trains, freshly initialised: a ModelStack or a :class:`TorchDEQNEMON`."""
    members = build_members(cfg, mean, std, device)
    if cfg.impl == "nemon":
        return make_stack(members)
    return deq.TorchDEQNEMON(
        members[0], cfg.solver, tol=cfg.tol, max_iter=cfg.max_iter, layout=cfg.layout
    )


def fit(cfg: RunConfig, trainable, X: Tensor, Y: Tensor) -> TrainResult | dict:
    """One epoch: :func:`~nemon.training.train_stack` (nemon) or torchdeq's loop; the timed call.

    nemon: ``lam`` per member (MATH 5), no per-epoch test accuracy (measured after
    the clock stops), no checkpoint, the data order drawn from ``cfg.seed``.
    """
    if cfg.impl == "torchdeq":
        return deq.train_epoch(
            trainable, X, Y, batch_size=BATCH_SIZE, lr=LR, seed=cfg.seed, progress=cfg.progress
        )
    return train_stack(
        trainable,
        X,
        Y,
        objective=Objective("lipschitz", cfg.lams),
        schedule=Schedule(epochs=1, batch_size=BATCH_SIZE, lr=LR),
        seed=cfg.seed,
        test_x=None,
        progress=cfg.progress,
        log=lambda _line: None,
    )


def train_nemon(
    cfg: RunConfig, X: Tensor, Y: Tensor, mean: float, std: float
) -> tuple[ModelStack, TrainResult]:
    """One epoch of :func:`~nemon.training.train_stack` on a fresh stack, as a row runs it."""
    stack = build(cfg, mean, std, X.device)
    return stack, fit(cfg, stack, X, Y)


def train_torchdeq(
    cfg: RunConfig, X: Tensor, Y: Tensor, mean: float, std: float
) -> tuple[deq.TorchDEQNEMON, dict]:
    """One epoch of torchdeq's loop on a fresh model of the same initial weights."""
    net = build(cfg, mean, std, X.device)
    return net, fit(cfg, net, X, Y)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def run_config(cfg: RunConfig, data: BenchData | None = None) -> dict:
    """Train one epoch of ``cfg`` in this process; returns the row's measurements.

    The training set is converted to float pixels on the device before the
    clock starts (``train_stack`` would otherwise do it inside the call), so the
    epoch time is the loop's and the memory increment is the training's.
    """
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if data is None:
        data = load_bench_data(cfg.data, cfg.samples, cfg.test_samples, cfg.seed)
    X = to_pixels(data.train_x).to(device)
    Y = data.train_y.to(device=device, dtype=torch.long)
    test_x = to_pixels(data.test_x)
    mean, std = data.mean, data.std
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonConvergenceWarning)  # counted in not_converged
        # a throw-away step first: neither the clock nor the baseline memory should hold
        # torch's one-off costs (lazy imports, kernel and code-page loading, thread pools)
        fit(cfg, build(cfg, mean, std, device), X[:BATCH_SIZE], Y[:BATCH_SIZE])
        trainable = build(cfg, mean, std, device)
        gc.collect()
        sync(device)
        base_rss = rss_mib()
        peak_reset = reset_peak_rss()
        reset_device_peak(device)
        stats, seconds = timed(lambda: fit(cfg, trainable, X, Y), device)
        peak_rss = peak_rss_mib()
        device_peak = device_peak_mib(device)
        if cfg.impl == "nemon":
            history = [h[-1] for h in stats.histories]  # the one epoch of every member
            test_acc = stack_accuracy(trainable, test_x, data.test_y)
            loop_seconds = stats.seconds
        else:
            history = [stats]
            test_acc = [deq.accuracy(trainable, test_x, data.test_y)]
            loop_seconds = None
    K, n = cfg.models, len(X)
    k_fwd = _mean([h["fwd_iters_mean"] for h in history])
    k_bwd = _mean([h["bwd_iters_mean"] for h in history])
    return {
        "label": cfg.label(),
        "impl": cfg.impl,
        "solver": cfg.solver,
        "stop": cfg.stop if cfg.impl == "nemon" else stop_name(cfg.layout),
        "layout": cfg.layout,
        "tol": cfg.tol,
        "models": K,
        "lams": list(cfg.lams),
        "data": data.name,
        "samples": n,
        "seconds": seconds,
        "loop_seconds": loop_seconds,  # train_stack's own clock: its loop without set-up
        "samples_per_s": K * n / seconds,  # per model
        "fwd_iters_mean": k_fwd,
        "bwd_iters_mean": k_bwd,
        "fwd_iters_max": max(h["fwd_iters_max"] for h in history),
        "bwd_iters_max": max(h["bwd_iters_max"] for h in history),
        "not_converged": sum(h["not_converged"] for h in history),
        "train_loss": _mean([h["train_loss"] for h in history]),
        "train_acc": _mean([h["train_acc"] for h in history]),
        "test_acc": _mean(test_acc),
        "test_acc_members": list(test_acc),
        "base_rss_mib": base_rss,
        "peak_rss_mib": peak_rss,
        "peak_rss_since_start": not peak_reset,  # True: a lifetime peak (data loading included)
        "cuda_peak_mib": device_peak,
        "flops_per_sample": flops_per_sample(k_fwd, k_bwd),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def child_command(cfg: RunConfig) -> list[str]:
    return [sys.executable, "-m", "benchmarks", "--one", cfg.to_json()]


def run_isolated(cfg: RunConfig) -> dict:
    """:func:`run_config` in a fresh ``python -m benchmarks --one`` process (own peak RSS)."""
    cmd = child_command(cfg)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"benchmark run {cfg.label()} failed (exit code {proc.returncode}); its error is "
            f"printed above; rerun it alone from {ROOT} with: {' '.join(cmd[:4])} '{cmd[4]}'"
        )
    return json.loads(lines[-1][len(RESULT_TAG) :])


def child_main(config_json: str) -> dict:
    """The ``--one`` mode: run one configuration and print its row after :data:`RESULT_TAG`."""
    row = run_config(RunConfig.from_json(config_json))
    print(RESULT_TAG + json.dumps(row), flush=True)
    return row
