"""The interval certificate of trained models, settled box by box against one solve per batch.

``python -m nemon.bench.certify results/fashion-mnist/models/nemon/lipschitz/g0.9_l0.1_s0 ...``
loads each committed NEMON model and certifies its data set's test images with interval
bounds (MATH 9) at the evaluation's settings (relative step 1e-6, batches of 1,000, one
thread), two ways, alternating per batch and eps so that a slow minute of the machine hits
both: the whole batch solved until its joint step meets the rule, then margins
(:func:`nemon.robustness.interval_margins`, what the evaluation did before), and
:func:`nemon.robustness.certified_mask`, which settles each box on its own
(``NEMON.settle_boxes``; MATH 9, "Settling box by box"). Both take the same clean
correctness, computed once. It prints, per model, the seconds of each, their ratio, how
many verdicts each certifies and how many differ in each direction, then the totals.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..contracts import load_model
from ..data import load_dataset
from ..errors import ConfigurationError, exit_from
from ..robustness import certified_mask, check_eps, interval_margins
from .forward import read_record
from .report import grid

DEFAULT_EPS = (0.01, 0.02, 0.05, 0.1, 0.2)  # the evaluation's nonzero certified_interval eps


def whole_batch_mask(model: nn.Module, u: Tensor, labels: Tensor, eps: float, correct: Tensor):
    """The reference: one embedded solve of the whole batch to the stop rule, then margins."""
    m = interval_margins(model, u, labels, eps)
    m[torch.arange(len(labels)), labels] = float("inf")
    return correct & (m.min(dim=1).values > 0)


def measure(
    model: nn.Module,
    X: Tensor,
    Y: Tensor,
    eps: Sequence[float] = DEFAULT_EPS,
    *,
    batch_size: int = 1000,
    tol: float = 1e-6,
    max_iter: int = 5000,
) -> dict:
    """Seconds and verdicts of both ways on images ``X`` (pixels, ``(N, m)``), labels ``Y``."""
    eps = [check_eps(e) for e in eps]
    whole_s = settled_s = 0.0
    n_whole = n_settled = only_whole = only_settled = verdicts = 0
    with (
        model.solver_settings(tol=tol, max_iter=max_iter, stop="step"),
        model.frozen_weights(),
        torch.no_grad(),
    ):
        for i in range(0, len(X), batch_size):
            u, y = X[i : i + batch_size], Y[i : i + batch_size]
            correct = model(u).argmax(dim=1) == y
            for e in eps:
                t = time.perf_counter()
                whole = whole_batch_mask(model, u, y, e, correct)
                t1 = time.perf_counter()
                settled = certified_mask(model, u, y, e, "interval", correct=correct)
                t2 = time.perf_counter()
                whole_s, settled_s = whole_s + t1 - t, settled_s + t2 - t1
                n_whole += int(whole.sum())
                n_settled += int(settled.sum())
                only_whole += int((whole & ~settled).sum())
                only_settled += int((settled & ~whole).sum())
                verdicts += len(y)
    return {
        "verdicts": verdicts,
        "whole_s": whole_s,
        "settled_s": settled_s,
        "speedup": whole_s / settled_s if settled_s > 0 else float("nan"),
        "certified_whole": n_whole,
        "certified_settled": n_settled,
        "only_whole": only_whole,
        "only_settled": only_settled,
    }


def _cell(key: str, v) -> str:
    if key.endswith("_s"):
        return f"{v:.1f}"
    if key == "speedup":
        return f"{v:.2f}x"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nemon.bench.certify",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model_dirs", nargs="+", help="NEMON model folders of the workflow")
    p.add_argument("--eps", type=float, nargs="+", default=list(DEFAULT_EPS))
    p.add_argument("--images", type=int, default=None, help="the first N test images (all)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.threads < 1 or (args.images is not None and args.images < 1):
        raise ConfigurationError("--threads and --images must be at least 1")
    jobs = []
    for folder in map(Path, args.model_dirs):
        metrics = read_record(folder, "results/fashion-mnist/models/nemon/lipschitz/g0.9_l0.1_s0")
        if metrics["model"] not in ("nemon", "nemon-unweighted"):
            raise ConfigurationError(
                f"{folder}: a {metrics['model']} model; give NEMON models (the MLP's bounds "
                "are one step, MATH 16)"
            )
        jobs.append((folder, metrics))
    torch.set_num_threads(args.threads)
    data: dict[str, tuple[Tensor, Tensor]] = {}
    keys = ["model"]
    rows, total = [], None
    for folder, metrics in jobs:
        if metrics["dataset"] not in data:
            ds = load_dataset(metrics["dataset"], progress=False)
            n = len(ds.test_y) if args.images is None else args.images
            if n > len(ds.test_y):
                raise ConfigurationError(f"--images {n} > {len(ds.test_y)} test images")
            data[metrics["dataset"]] = (
                ds.test_x[:n].reshape(n, -1).float() / 255,
                ds.test_y[:n].long(),
            )
        X, Y = data[metrics["dataset"]]
        model = load_model(folder / "model.pt", sha256=metrics["model_sha256"]).eval()
        row = measure(model, X.to(next(model.parameters()).dtype), Y, args.eps)
        if total is None:
            keys += list(row)
            total = dict.fromkeys(row, 0)
        for k, v in row.items():
            total[k] += v
        rows.append([str(folder)] + [_cell(k, row[k]) for k in keys[1:]])
        print(f"# {folder}: {row['speedup']:.2f}x", file=sys.stderr, flush=True)
    assert total is not None
    total["speedup"] = total["whole_s"] / total["settled_s"]
    rows.append(["total"] + [_cell(k, total[k]) for k in keys[1:]])
    print(f"# eps {args.eps}, {len(jobs)} model(s), {args.threads} thread(s)")
    print(grid(keys, rows, markdown=True))
    return 0


if __name__ == "__main__":
    exit_from(main)
