"""What one evaluation forward of a trained model costs, with and without frozen weights.

``python -m nemon.bench.forward results/mnist-5k/models/nemon/lipschitz/g0.0_l0.0001_s2``
loads a committed model, takes a batch of its data set's test images and times
``model(u)`` at an attack's tolerance (the relative step, MATH 12a) on one thread:
plainly, where every forward checks the weights and rebuilds ``A``, ``alpha*``, ``rho``
and the rounding constants, and inside :meth:`nemon.model.NEMON.frozen_weights`,
which builds them once (the evaluation stage and every attack run there). The two
alternate in rounds in the same process, so a slow minute of the machine hits both;
the report gives the median of each over the rounds, the time spent in the solver's
iterations, the rest (the fixed part of a forward) and the ratio. The logits of the
two paths are checked equal bit for bit.

``--solvers average anderson`` also times, inside ``frozen_weights`` and alternating
in rounds, a forward and a forward with the input gradient (what a PGD step costs)
with each solver at the same tolerance, and reports the iterations, the ratios to
the first solver and how far its logits and gradients are from the first's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import solvers
from ..contracts import load_model
from ..data import load_dataset, stratified_subset
from ..errors import ConfigurationError, exit_from
from .report import grid


def read_record(folder: Path, example: str) -> dict:
    """A model folder's ``metrics.json``, or a clear error naming ``example``, a folder to give."""
    try:
        return json.loads((folder / "metrics.json").read_text())
    except FileNotFoundError:
        raise ConfigurationError(
            f"{folder} has no metrics.json: give a model folder of the workflow, e.g. {example}"
        ) from None


def _time_forwards(model: nn.Module, u: Tensor, repeats: int) -> tuple[float, float, Tensor]:
    """Median seconds of one forward, median seconds of its solves, the last logits."""
    solve_s: list[float] = []
    orig = solvers._iterate_one

    def timed_solve(*args, **kw):  # the solver's iterations alone
        t = time.perf_counter()
        out = orig(*args, **kw)
        solve_s[-1] += time.perf_counter() - t
        return out

    totals = []
    solvers._iterate_one = timed_solve
    try:
        for _ in range(repeats):
            solve_s.append(0.0)
            t = time.perf_counter()
            y = model(u)
            totals.append(time.perf_counter() - t)
    finally:
        solvers._iterate_one = orig
    return statistics.median(totals), statistics.median(solve_s), y


def measure(model: nn.Module, u: Tensor, *, tol: float, rounds: int, repeats: int) -> dict:
    """Alternate ``rounds`` times: ``repeats`` plain forwards, then as many frozen ones."""
    plain, frozen = [], []
    with model.solver_settings(tol=tol, max_iter=5000, stop="step"), torch.no_grad():
        model(u)  # warm-up
        for _ in range(rounds):
            plain.append(_time_forwards(model, u, repeats))
            with model.frozen_weights():
                frozen.append(_time_forwards(model, u, repeats))
        iterations = model.last_forward_stats.iterations
    if not torch.equal(plain[-1][2], frozen[-1][2]):
        raise AssertionError("frozen_weights changed the logits: it must be bit-identical")

    def med(runs: list, i: int) -> float:
        return statistics.median(r[i] for r in runs)

    p_total, p_solve = med(plain, 0), med(plain, 1)
    f_total, f_solve = med(frozen, 0), med(frozen, 1)
    return {
        "images": u.shape[0],
        "iterations": iterations,
        "plain_us": 1e6 * p_total,
        "plain_solve_us": 1e6 * p_solve,
        "plain_rest_us": 1e6 * (p_total - p_solve),
        "frozen_us": 1e6 * f_total,
        "frozen_solve_us": 1e6 * f_solve,
        "frozen_rest_us": 1e6 * (f_total - f_solve),
        "speedup": p_total / f_total,
    }


def measure_solvers(
    model: nn.Module,
    u: Tensor,
    labels: Tensor,
    *,
    solvers_: Sequence[str],
    tol: float,
    rounds: int,
    repeats: int,
) -> list[dict]:
    """Each solver at ``tol`` (frozen weights), alternating ``rounds`` times: medians of a forward
    (an attack's query) and of a forward with the input gradient (a PGD step), against the first.
    """
    for name in solvers_:
        solvers.get_solver(name)  # an unknown name: a clear error before any timing
    saved = model.solver
    times: dict[str, dict[str, list[float]]] = {s: {"fwd": [], "grad": []} for s in solvers_}
    out: dict[str, tuple[Tensor, int, Tensor]] = {}
    try:
        with model.solver_settings(tol=tol, max_iter=5000, stop="step"), model.frozen_weights():
            for _ in range(rounds):
                for name in solvers_:
                    model.solver = name
                    with torch.no_grad():
                        model(u)  # warm
                        t = time.perf_counter()
                        for _ in range(repeats):
                            y = model(u)
                        times[name]["fwd"].append((time.perf_counter() - t) / repeats)
                        iterations = model.last_forward_stats.iterations
                    t = time.perf_counter()
                    for _ in range(repeats):
                        x = u.clone().requires_grad_(True)
                        loss = torch.nn.functional.cross_entropy(model(x), labels)
                        (g,) = torch.autograd.grad(loss, x)
                    times[name]["grad"].append((time.perf_counter() - t) / repeats)
                    out[name] = (y, iterations, g)
    finally:
        model.solver = saved
    ref = solvers_[0]
    y0, _, g0 = out[ref]
    f0 = statistics.median(times[ref]["fwd"])
    b0 = statistics.median(times[ref]["grad"])
    rows = []
    for name in solvers_:
        y, iterations, g = out[name]
        f, b = statistics.median(times[name]["fwd"]), statistics.median(times[name]["grad"])
        rows.append(
            {
                "solver": name,
                "iterations": iterations,
                "forward_us": 1e6 * f,
                "forward_grad_us": 1e6 * b,
                "speedup_forward": f0 / f,
                "speedup_forward_grad": b0 / b,
                "max_abs_dlogit": float((y - y0).abs().max()),
                "same_predictions": bool((y.argmax(1) == y0.argmax(1)).all()),
                "max_abs_dgrad": float((g - g0).abs().max()),
            }
        )
    return rows


def _solver_cell(key: str, v) -> str:
    if key.endswith("_us"):
        return f"{v:,.0f}"
    if key.startswith("speedup"):
        return f"{v:.2f}x"
    return f"{v:.2g}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nemon.bench.forward",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model_dir", help="a model folder of the workflow (model.pt, metrics.json)")
    p.add_argument("--images", type=int, default=100, help="test images per forward")
    p.add_argument("--tol", type=float, default=1e-5, help="relative step of the solves")
    p.add_argument("--rounds", type=int, default=5, help="alternations of the two paths")
    p.add_argument("--repeats", type=int, default=100, help="forwards per path and round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--solvers",
        nargs="+",
        metavar="SOLVER",
        help="also time these solvers against the first, frozen: a forward and a forward with "
        "the input gradient, --repeats/10 of each per round (e.g. average anderson)",
    )
    args = p.parse_args(argv)
    folder = Path(args.model_dir)
    metrics = read_record(folder, "results/mnist-5k/models/nemon/lipschitz/g0.0_l0.0001_s2")
    if metrics["model"] not in ("nemon", "nemon-unweighted"):
        raise ConfigurationError(f"{folder}: a {metrics['model']} model; give a NEMON model")
    for name in ("images", "rounds", "repeats", "threads"):
        if getattr(args, name) < 1:
            raise ConfigurationError(f"--{name} must be at least 1")
    for name in args.solvers or ():
        solvers.get_solver(name)  # an unknown name fails before any timing
    torch.set_num_threads(args.threads)
    model = load_model(folder / "model.pt", sha256=metrics["model_sha256"]).eval()
    ds = load_dataset(metrics["dataset"], progress=False)
    if args.images > len(ds.test_y):
        raise ConfigurationError(f"--images {args.images} > {len(ds.test_y)} test images")
    idx = stratified_subset(ds.test_y, args.images, seed=0)
    u = ds.test_x[idx].reshape(args.images, -1).to(next(model.parameters()).dtype) / 255
    row = measure(model, u, tol=args.tol, rounds=args.rounds, repeats=args.repeats)
    print(f"# {folder}: {args.images} images, tol {args.tol:g}, {args.threads} thread(s)")
    print(f"# medians over {args.rounds} alternating rounds of {args.repeats} forwards each")
    for key, value in row.items():
        print(f"{key:16s} {value:.4g}" if isinstance(value, float) else f"{key:16s} {value}")
    if args.solvers:
        labels = ds.test_y[idx].long()
        rows = measure_solvers(
            model,
            u,
            labels,
            solvers_=args.solvers,
            tol=args.tol,
            rounds=args.rounds,
            repeats=max(1, args.repeats // 10),
        )
        print(f"# solvers, frozen weights, {args.rounds} alternating rounds, medians:")
        keys = list(rows[0])
        print(grid(keys, [[_solver_cell(k, r[k]) for k in keys] for r in rows], markdown=True))
    return 0


if __name__ == "__main__":
    exit_from(main)
