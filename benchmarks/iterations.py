"""Iteration counts of the solvers on trained models: averaged (MATH 3) against Jacobi (MATH 17).

    python -m benchmarks.iterations results/mnist-5k [results/fashion-mnist ...] \
        [--images 1000] [--tol 1e-3 1e-5] [--stop step] [--markdown]

For every NEMON model file found (``model.pt`` under the folders given; the workflow writes
them, they are not committed), on ``--images`` test images of its data set (a seeded
class-stratified subset): the contraction factors ``rho`` (MATH 3) and ``rho_J`` (MATH 17), and
per solver and tolerance the forward solve's iterations and its error, and the adjoint solve's
(the cross-entropy's gradient, MATH 4) iterations and the error of the input gradient it gives.
Errors are max-norm distances to a float64 solve at 1e-14, relative to the reference's max-norm.
Solves run in float64, so the counts are the methods', not float32's rounding floor; one
solve per batch of the whole subset, so the relative step is the batch's (MATH 12 (a)).

Counts are deterministic: this is a benchmark of the number of iterations, not of time (the
workflow's records, ``fwd_iters_mean`` and ``train_seconds`` in ``metrics.json``, say what the
training took).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from benchmarks.trained import load_trained, model_files, show
from nemon import core
from nemon.data import load_dataset, stratified_subset
from nemon.errors import exit_from
from nemon.model import NEMON
from nemon.training import to_pixels

SOLVERS = ("average", "jacobi")
REFERENCE_TOL = 1e-14


def _solve(model: NEMON, solver: str, tol: float, stop: str, u, y):
    """Forward and adjoint of the mean cross-entropy: (x, du, forward stats, backward stats)."""
    with model.solving(solver=solver, tol=tol, max_iter=100_000, stop=stop):
        u = u.clone().requires_grad_(True)
        x, fwd = model.equilibrium(u)
        loss = nn.functional.cross_entropy(nn.functional.linear(x, model.C, model.c), y)
        (du,) = torch.autograd.grad(loss, u)
        bwd = model.last_backward_stats
    return x.detach(), du, fwd, bwd


def _rel(a, ref) -> float:
    return float((a - ref).abs().max() / ref.abs().max().clamp(min=1e-300))


def measure(
    path: Path, images: int, tols: list[float], stop: str, cache: dict, dataset: str | None
) -> list[dict]:
    model, dataset, name = load_trained(path, dataset)
    if not isinstance(model, NEMON):
        return []
    model = model.double()
    if dataset not in cache:
        ds = load_dataset(dataset)
        idx = stratified_subset(ds.test_y, min(images, len(ds.test_y)), seed=0)
        cache[dataset] = (to_pixels(ds.test_x[idx]).double(), ds.test_y[idx].long())
    u, y = cache[dataset]
    x_ref, du_ref, _, _ = _solve(model, "average", REFERENCE_TOL, "step", u, y)
    with torch.no_grad():
        rho_j = core.jacobi_constants(model.M[None])[0]
    row = {"dataset": dataset, "model": name, "rho": model.rho(), "rho_J": rho_j}
    rows = []
    for tol in tols:
        out = {**row, "tol": tol}
        for solver in SOLVERS:
            x, du, fwd, bwd = _solve(model, solver, tol, stop, u, y)
            out[f"{solver}_fwd"] = fwd.iterations
            out[f"{solver}_fwd_err"] = _rel(x, x_ref)
            out[f"{solver}_bwd"] = bwd.iterations
            out[f"{solver}_grad_err"] = _rel(du, du_ref)
        out["fwd_ratio"] = out["average_fwd"] / max(out["jacobi_fwd"], 1)
        out["bwd_ratio"] = out["average_bwd"] / max(out["jacobi_bwd"], 1)
        rows.append(out)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.iterations", description=__doc__)
    p.add_argument("folders", nargs="+", help="results folders or model files")
    p.add_argument("--images", type=int, default=1000, help="test images (class-stratified)")
    p.add_argument("--tol", type=float, nargs="+", default=[1e-3, 1e-5], help="tolerances")
    p.add_argument("--stop", choices=["step", "bound"], default="step", help="stopping rule")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--csv", help="also write the table to this file")
    p.add_argument("--dataset", help="the models' data set (default: from their metrics.json)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cache: dict = {}
    rows = []
    for path in model_files(a.folders):
        rows.extend(measure(path, a.images, a.tol, a.stop, cache, a.dataset))
        if rows:
            print(f"{rows[-1]['model']}: done", file=sys.stderr)
    df = pd.DataFrame(rows)
    show(df, a.markdown, a.csv)
    ratios = df.groupby(["dataset", "tol"])[["fwd_ratio", "bwd_ratio"]]
    summary = ratios.agg(["median", "min", "max"])
    models = len(df) // len(set(df["tol"]))
    print(f"\nratio of iterations, averaged / Jacobi, over {models} models:")
    print(summary.to_string())
    return 0


if __name__ == "__main__":
    exit_from(main)
