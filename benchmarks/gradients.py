"""How accurate the training gradients are, on trained models (MATH 4, 12, 17).

    python -m benchmarks.gradients results/mnist-5k [...] [--solver jacobi average] \
        [--tol 1e-3 1e-4] [--stop bound] [--batches 5] [--markdown]

For every NEMON model file found (``model.pt`` under the folders given) and every solver and
tolerance: the gradient of a training step's cross-entropy (mean over a batch of 100 training
images, as the workflow trains) with respect to ``T``, ``d``, ``B``, ``b``, ``C``, computed as
training computes it (float32, the given solver, stopping rule and tolerance), against the
same gradient in float64 at 1e-14. Reported per model: the largest relative error over the
parameters and batches, in the max-norm (``max |g - g*| / max |g*|``, per parameter) and in the
l2 norm. The Lipschitz term of the objective is left out: its gradient involves no solve.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
import torch
from torch import nn

from benchmarks.trained import load_trained, model_files, show
from nemon.contracts import load_model
from nemon.data import load_dataset
from nemon.errors import exit_from
from nemon.model import NEMON
from nemon.training import to_pixels

PARAMS = ("T", "d", "B", "b", "C")


def _grads(model: NEMON, u, y, solver, tol, stop) -> dict[str, torch.Tensor]:
    with model.solving(solver=solver, tol=tol, max_iter=100_000, stop=stop):
        loss = nn.functional.cross_entropy(model(u), y)
        names = [p for p in PARAMS if getattr(model, p).requires_grad]
        grads = torch.autograd.grad(loss, [getattr(model, p) for p in names])
    return {n: g.double() for n, g in zip(names, grads, strict=True)}


def measure(path, solvers, tols, stop, batches, cache, dataset) -> list[dict]:
    model, dataset, name = load_trained(path, dataset)
    if not isinstance(model, NEMON):
        return []
    if dataset not in cache:
        ds = load_dataset(dataset)
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(ds.train_y), generator=g)[: 100 * batches]
        cache[dataset] = (to_pixels(ds.train_x[idx]), ds.train_y[idx].long())
    U, Y = cache[dataset]
    ref_model = load_model(path, sha256=None).double()
    f32 = model.float()
    rows = []
    refs = [
        _grads(ref_model, U[i : i + 100].double(), Y[i : i + 100], "average", 1e-14, "step")
        for i in range(0, len(U), 100)
    ]
    for solver in solvers:
        for tol in tols:
            worst_max = worst_l2 = 0.0
            iters = []
            for b, i in enumerate(range(0, len(U), 100)):
                got = _grads(f32, U[i : i + 100], Y[i : i + 100], solver, tol, stop)
                iters.append(f32.last_forward_stats.iterations)
                for n, g in got.items():
                    r = refs[b][n]
                    worst_max = max(worst_max, float((g - r).abs().max() / r.abs().max()))
                    worst_l2 = max(worst_l2, float((g - r).norm() / r.norm()))
            rows.append(
                {
                    "model": name,
                    "gamma": model.gamma,
                    "solver": solver,
                    "stop": stop,
                    "tol": tol,
                    "fwd_iters": sum(iters) / len(iters),
                    "max_rel_err": worst_max,
                    "l2_rel_err": worst_l2,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gradients", description=__doc__)
    p.add_argument("folders", nargs="+", help="results folders or model files")
    p.add_argument("--solver", nargs="+", default=["jacobi", "average"])
    p.add_argument("--tol", type=float, nargs="+", default=[1e-3, 1e-4])
    p.add_argument("--stop", choices=["step", "bound"], default="bound")
    p.add_argument("--batches", type=int, default=5, help="batches of 100 training images")
    p.add_argument("--dataset", help="the models' data set (default: from their metrics.json)")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--csv", help="also write the table to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cache: dict = {}
    rows = []
    for path in model_files(a.folders):
        rows.extend(measure(path, a.solver, a.tol, a.stop, a.batches, cache, a.dataset))
        print(f"{path}: done", file=sys.stderr)
    df = pd.DataFrame(rows)
    show(df, a.markdown, a.csv)
    worst = df.groupby(["solver", "tol", "gamma"])[["max_rel_err", "l2_rel_err"]].max()
    print("\nworst over the models, per solver, tolerance and gamma:")
    print(worst.to_string())
    return 0


if __name__ == "__main__":
    exit_from(main)
