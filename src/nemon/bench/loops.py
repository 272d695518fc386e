"""The averaged iteration in TorchScript against the Python loop, in one process.

``python -m nemon.bench.loops`` measures what :func:`nemon.solvers.scripted_loops`
changes, alternating the two loops in rounds so that a slow minute of the machine
hits both:

- ``solve``: a forward and a backward solve as an attack makes them (logits and input
  gradient, relative step ``--tol``, no error bound, weights frozen) on ``--batch``
  images: of a ``NEMON(784, 100, 10)`` at its initial weights and ``--gamma`` on
  Fashion-MNIST (or synthetic) images, or of a trained model (``--model-dir``, a grid
  point's folder with ``model.pt`` and ``metrics.json``) on its data set's test images.
  Initial weights need few iterations; a trained gamma-0.9 model 100-150 per solve;
- ``epoch``: one training epoch of ``--samples`` images, as a row of ``python -m
  nemon.bench`` trains one (:func:`nemon.training.train_stack`, tol 1e-4, ``lam`` 1e-3).

Both loops run the same tensor operations in the same order: the table says whether
the logits, gradients and trained weights came out identical (they must).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import solvers
from ..contracts import load_model
from ..data import load_dataset
from ..errors import ConfigurationError, exit_from
from ..model import NEMON
from ..training import to_pixels
from . import runs
from .config import BATCH_SIZE, RunConfig
from .datasets import load_bench_data
from .report import grid


def _trained(model_dir: Path, batch: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    try:
        metrics = json.loads((model_dir / "metrics.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigurationError(
            f"--model-dir {model_dir}: no readable metrics.json ({err}); give a grid point's "
            "folder, results/<dataset>/models/<model>/<objective>/g..._s.../"
        ) from None
    if not (model_dir / "model.pt").is_file():
        raise ConfigurationError(
            f"--model-dir {model_dir} has no model.pt: model weights are not committed; "
            "train its group first (snakemake with that file as the target) or give a "
            "folder of a regenerated results tree"
        )
    model = load_model(model_dir / "model.pt", sha256=metrics.get("model_sha256"))
    if not isinstance(model, NEMON):
        raise ConfigurationError(
            f"--model-dir {model_dir} holds a {type(model).__name__}, not a NEMON"
        )
    ds = load_dataset(metrics["dataset"], progress=False)
    if batch > len(ds.test_x):
        raise ConfigurationError(f"--batch {batch} is larger than the {len(ds.test_x)} test images")
    return model.eval(), to_pixels(ds.test_x[:batch]), ds.test_y[:batch].long()


def _solve_case(model, u: torch.Tensor, labels: torch.Tensor, tol: float) -> Callable[[], tuple]:
    def run() -> tuple:
        with (
            model.solver_settings(tol=tol, max_iter=10_000, stop="step"),
            model.error_bounds(False),
            model.frozen_weights(),
        ):
            v = u.clone().requires_grad_(True)
            y = model(v)
            (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(y, labels), v)
        return y.detach(), g, model.last_forward_stats.iterations

    return run


def _epoch_case(cfg: RunConfig, data) -> Callable[[], tuple]:
    X, Y = to_pixels(data.train_x), data.train_y

    def run() -> tuple:
        stack = runs.build(cfg, data.mean, data.std, X.device)
        result = runs.fit(cfg, stack, X, Y)
        return stack.flat.detach().clone(), result.histories[0][-1]["fwd_iters_mean"]

    return run


def _same(a: tuple, b: tuple) -> bool:
    return all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
        for x, y in zip(a, b, strict=True)
    )


def measure(
    *,
    samples: int,
    batch: int,
    gamma: float,
    tol: float,
    rounds: int,
    model_dir: Path | None = None,
    seed: int = 0,
) -> list[dict]:
    """One row per case: median seconds with each loop, the speed-up, identical or not."""
    data = load_bench_data("auto", samples, BATCH_SIZE, seed)
    if model_dir is None:
        cfg = RunConfig("nemon", "average", tol, samples=samples, gamma=gamma, seed=seed)
        model = runs.build_members(cfg, data.mean, data.std, torch.device("cpu"))[0]
        u, labels = to_pixels(data.train_x[:batch]), data.train_y[:batch].long()
    else:
        model, u, labels = _trained(Path(model_dir), batch)
    epoch_cfg = RunConfig(
        "nemon", "average", 1e-4, lams=(1e-3,), samples=samples, seed=seed, progress=False
    )
    cases = {
        "solve": (_solve_case(model, u, labels, tol), 10),
        "epoch": (_epoch_case(epoch_cfg, data), 1),
    }
    return [_measure_case(name, run, repeats, rounds) for name, (run, repeats) in cases.items()]


def _measure_case(name: str, run: Callable[[], tuple], repeats: int, rounds: int) -> dict:
    """Both loops on ``run``, alternating (the first call of each is a warm-up)."""
    out: dict[bool, tuple] = {}
    times: dict[bool, list[float]] = {False: [], True: []}
    for scripted in (False, True):  # TorchScript compiles on its first call
        with solvers.scripted_loops(scripted):
            out[scripted] = run()
    for r in range(rounds):
        for scripted in (False, True) if r % 2 == 0 else (True, False):
            with solvers.scripted_loops(scripted):
                t = time.perf_counter()
                for _ in range(repeats):
                    run()
                times[scripted].append((time.perf_counter() - t) / repeats)
    py, sc = statistics.median(times[False]), statistics.median(times[True])
    return {
        "case": name,
        "python_s": py,
        "scripted_s": sc,
        "speedup": py / sc,
        "fwd_iters": out[True][-1],
        "identical": _same(out[False], out[True]),
        "range_python_s": f"{min(times[False]):.4f}-{max(times[False]):.4f}",
        "range_scripted_s": f"{min(times[True]):.4f}-{max(times[True]):.4f}",
    }


def format_rows(rows: list[dict], markdown: bool = False) -> str:
    keys = [
        "case",
        "python_s",
        "scripted_s",
        "speedup",
        "range_python_s",
        "range_scripted_s",
        "fwd_iters",
        "identical",
    ]

    def cell(row: dict, key: str) -> str:
        v = row[key]
        if key in ("python_s", "scripted_s"):
            return f"{v:.4f}"
        if key == "speedup":
            return f"{v:.3f}x"
        if key == "fwd_iters" and isinstance(v, float):
            return f"{v:.1f}"
        return str(v)

    return grid(keys, [[cell(r, k) for k in keys] for r in rows], markdown)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nemon.bench.loops",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--samples", type=int, default=12_000, help="training images of the epoch")
    p.add_argument("--batch", type=int, default=100, help="images of the solve case")
    p.add_argument("--gamma", type=float, default=0.9, help="gamma of the solve case (MATH 2)")
    p.add_argument("--tol", type=float, default=1e-6, help="relative step of the solve case")
    p.add_argument("--model-dir", type=Path, help="a trained grid point for the solve case")
    p.add_argument("--rounds", type=int, default=6, help="alternations of the two loops")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = p.parse_args(argv)
    for name in ("samples", "batch", "rounds"):
        if getattr(args, name) < 1:
            raise ConfigurationError(f"--{name} must be at least 1")
    if args.batch > args.samples:
        raise ConfigurationError(f"--batch {args.batch} is larger than --samples {args.samples}")
    if not 0.0 <= args.gamma < 1.0:
        raise ConfigurationError(f"--gamma {args.gamma} is outside [0, 1)")
    if not 0.0 < args.tol < 1.0:
        raise ConfigurationError(f"--tol {args.tol} is outside (0, 1)")
    if solvers._scripted_loop() is None:
        raise ConfigurationError("TorchScript cannot compile the loop here: nothing to compare")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = measure(
        samples=args.samples,
        batch=args.batch,
        gamma=args.gamma,
        tol=args.tol,
        rounds=args.rounds,
        model_dir=args.model_dir,
    )
    what = args.model_dir or f"initial weights, gamma {args.gamma:g}"
    print(
        f"# NEMON(784, 100, 10), one thread, torch {torch.__version__}; solve: {what}, batch "
        f"{args.batch}, tol {args.tol:g}, a forward and a backward solve (10 per timing); "
        f"epoch: {args.samples} images, tol 1e-4, lam 1e-3"
    )
    print(f"# medians over {args.rounds} alternating rounds; speedup = python_s / scripted_s")
    print(format_rows(rows, markdown=args.markdown))
    print(f"- wall time {time.perf_counter() - t0:.0f} s")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    exit_from(main)
