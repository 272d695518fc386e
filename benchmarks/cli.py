"""``python -m benchmarks``: the command line, the list of configurations, the printed report."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from nemon.errors import ConfigurationError
from nemon.solvers import DEFAULT_SOLVER, SOLVERS, STOP_RULES
from nemon.training import resolve_device

from . import report
from .config import (
    BATCH_SIZE,
    DATA_CHOICES,
    HIDDEN,
    IN_FEATURES,
    LAYOUTS,
    LR,
    OUT_FEATURES,
    TORCHDEQ_SOLVERS,
    RunConfig,
)
from .datasets import fashion_available
from .runs import child_main, run_isolated
from .timing import matmul_gflops
from .torchdeq_adapter import MISSING_TORCHDEQ, torchdeq_available, torchdeq_version

FASHION_SIZES = (60_000, 10_000)  # training and test images of Fashion-MNIST
# The paper's lam grid (config.yaml): the stack row trains one model per value.
PAPER_LAMS = [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]

Runner = Callable[[RunConfig], dict]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            f"One training epoch of NEMON({IN_FEATURES}, {HIDDEN}, {OUT_FEATURES}), batch "
            f"{BATCH_SIZE}, Adam lr {LR:g}: nemon's training loop (train_stack) per solver, "
            "stopping rule and tolerance, a stack of models trained together, and torchdeq "
            "solving the same fixed point. Each configuration runs in a fresh process."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--samples", type=int, default=60_000, help="training samples (one epoch)")
    a("--test-samples", type=int, default=10_000, help="test images for the accuracy")
    a("--tol", type=float, nargs="+", default=[1e-2, 1e-4], help="solver tolerances")
    a("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS), help="nemon solvers")
    a(
        "--stop",
        nargs="+",
        default=["step"],
        choices=list(STOP_RULES),
        help="nemon's stopping rules (MATH 12): step = relative step <= tol, torchdeq's rule "
        "and the one compared; bound = relative error bound <= tol (no picard rows)",
    )
    a(
        "--stack-lams",
        type=float,
        nargs="+",
        default=PAPER_LAMS,
        help="lam of each model of the 'nemon stack' rows (the default solver, same gamma), "
        "trained together; K = the number of values",
    )
    a("--no-stack", action="store_true", help="no 'nemon stack' rows")
    a(
        "--torchdeq-solvers",
        nargs="+",
        default=list(TORCHDEQ_SOLVERS),
        choices=list(TORCHDEQ_SOLVERS),
        help="torchdeq solvers",
    )
    a(
        "--torchdeq-layout",
        nargs="+",
        default=["batch"],
        choices=list(LAYOUTS),
        help="batch: relative step over the batch, nemon's step rule (compared); "
        "sample: every sample's relative step (stricter, shown only)",
    )
    a("--no-torchdeq", action="store_true", help="nemon rows only")
    a("--device", default="auto", help="auto, cpu or cuda[:N]")
    a(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads per run (0: torch's default); at n = 100 a second "
        "thread has little to split, and on a shared CPU it makes every small product wait",
    )
    a("--seed", type=int, default=0, help="initial weights and data order (the same everywhere)")
    a("--gamma", type=float, default=0.0, help="the models' gamma (0 in the paper's script)")
    a("--max-iter", type=int, default=300, help="iteration cap of every solve")
    a("--data", default="auto", choices=list(DATA_CHOICES), help="auto: Fashion-MNIST if present")
    a(
        "--equal-accuracy",
        type=float,
        default=0.005,
        help="test accuracies at most this far apart count as equal in the comparison",
    )
    a(
        "--matmul-seconds",
        type=float,
        default=0.5,
        help="time spent measuring each matmul rate (torch.utils.benchmark)",
    )
    a(
        "--repeats",
        type=int,
        default=3,
        help="runs of every configuration, in rounds (each configuration once per round, so a "
        "slow spell of a shared machine hits all of them); a row is the run of median epoch "
        "time, with the range of all its runs",
    )
    a("--markdown", action="store_true", help="print the table as Markdown")
    a("--no-progress", action="store_true", help="no progress bars on stderr")
    a(
        "--one",
        metavar="CONFIG",
        default=None,
        help="run one configuration (a RunConfig as JSON) in this process and print its row; "
        "the benchmark starts one such process per configuration",
    )
    return p


def check_args(args: argparse.Namespace) -> None:
    """Every value the runs depend on, checked before anything runs."""
    if args.samples < BATCH_SIZE:
        raise ConfigurationError(
            f"--samples must be at least one batch ({BATCH_SIZE}), got {args.samples}"
        )
    if args.test_samples < 1:
        raise ConfigurationError(f"--test-samples must be >= 1, got {args.test_samples}")
    bad = [t for t in args.tol if not (math.isfinite(t) and t > 0)]
    if bad:
        raise ConfigurationError(f"--tol values must be positive finite numbers, got {bad}")
    if args.max_iter < 1:
        raise ConfigurationError(f"--max-iter must be >= 1, got {args.max_iter}")
    if args.repeats < 1:
        raise ConfigurationError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 0:
        raise ConfigurationError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.seed < 0:
        raise ConfigurationError(f"--seed must be >= 0, got {args.seed}")
    if not (math.isfinite(args.gamma) and args.gamma < 1):
        raise ConfigurationError(f"--gamma must be a finite number below 1, got {args.gamma}")
    if not args.no_stack:
        if len(args.stack_lams) < 2:
            raise ConfigurationError(
                f"--stack-lams needs at least two values (one per model), got {args.stack_lams}; "
                "one model is the plain nemon row, or pass --no-stack"
            )
        bad = [x for x in args.stack_lams if not (math.isfinite(x) and x >= 0)]
        if bad:
            raise ConfigurationError(f"--stack-lams must be finite numbers >= 0, got {bad}")
    if not (math.isfinite(args.equal_accuracy) and 0 <= args.equal_accuracy <= 1):
        raise ConfigurationError(
            f"--equal-accuracy must lie in [0, 1] (a difference of accuracies), "
            f"got {args.equal_accuracy}"
        )
    if not (math.isfinite(args.matmul_seconds) and args.matmul_seconds > 0):
        raise ConfigurationError(f"--matmul-seconds must be positive, got {args.matmul_seconds}")
    fashion = args.data == "fashion-mnist" or (args.data == "auto" and fashion_available())
    if fashion and (args.samples > FASHION_SIZES[0] or args.test_samples > FASHION_SIZES[1]):
        raise ConfigurationError(
            f"Fashion-MNIST has {FASHION_SIZES[0]} training and {FASHION_SIZES[1]} test images, "
            f"asked for --samples {args.samples} and --test-samples {args.test_samples}; lower "
            "them or pass --data synthetic"
        )


def make_configs(args: argparse.Namespace, device: str, with_torchdeq: bool) -> list[RunConfig]:
    """The rows, per tolerance: nemon (solver x stop), the stack, torchdeq (solver x layout)."""
    common = dict(
        samples=args.samples,
        test_samples=args.test_samples,
        data=args.data,
        device=device,
        threads=args.threads,
        seed=args.seed,
        gamma=args.gamma,
        max_iter=args.max_iter,
        progress=not args.no_progress,
    )
    configs = []
    for tol in args.tol:
        for solver in args.solvers:
            for stop in args.stop:
                if not (solver == "picard" and stop == "bound"):
                    configs.append(RunConfig("nemon", solver, tol, stop=stop, **common))
        if not args.no_stack:
            lams = tuple(args.stack_lams)
            configs += [
                RunConfig("nemon", DEFAULT_SOLVER, tol, stop=s, lams=lams, **common)
                for s in args.stop
            ]
        if with_torchdeq:
            configs += [
                RunConfig("torchdeq", s, tol, layout=lay, **common)
                for s in args.torchdeq_solvers
                for lay in args.torchdeq_layout
            ]
    if not configs:
        raise ConfigurationError(
            "nothing to run: picard has no stop='bound' rows; add --stop step or another solver"
        )
    return configs


@dataclass
class BenchReport:
    """What one run measured: the rows, the rates behind the floor, and the ratios."""

    rows: list[dict]
    gflops_model: float
    gflops_large: float
    comparisons: list[report.Comparison]
    wall_s: float
    lines: list[str] = field(default_factory=list)  # what was printed

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def run_benchmark(args: argparse.Namespace, runner: Runner = run_isolated) -> BenchReport:
    """Check the arguments, run every configuration with ``runner``, build the report.

    ``runner`` is :func:`~benchmarks.runs.run_isolated` (a fresh process per
    configuration, so each peak RSS is its own) unless a caller passes
    :func:`~benchmarks.runs.run_config` to stay in this process.
    """
    check_args(args)
    device = resolve_device(args.device)
    with_torchdeq = not args.no_torchdeq and torchdeq_available()
    if not args.no_torchdeq and not with_torchdeq:
        print(MISSING_TORCHDEQ, file=sys.stderr, flush=True)
    configs = make_configs(args, str(device), with_torchdeq)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    rate = dict(device=device, threads=args.threads, min_run_time=args.matmul_seconds)
    gf_model = matmul_gflops(BATCH_SIZE, HIDDEN, HIDDEN, **rate)  # one solver iteration
    gf_large = matmul_gflops(1024, 1024, 1024, **rate)
    runs: list[list[dict]] = [[] for _ in configs]
    bar = tqdm(
        total=len(configs) * args.repeats, desc="runs", disable=args.no_progress, file=sys.stderr
    )
    for _ in range(args.repeats):  # rounds: every configuration once per round
        for i, cfg in enumerate(configs):
            runs[i].append(runner(cfg))
            bar.update()
    bar.close()
    rows = [report.median_run(r) for r in runs]
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    report.add_floor(rows, gf_model, gf_large)
    comparisons = [c for t in args.tol if (c := report.compare(rows, t, args.equal_accuracy))]

    mark = "- " if args.markdown else "# "  # a Markdown list, not headings, in --markdown
    version = torchdeq_version() if with_torchdeq else None
    deq = f"torchdeq {version}" if with_torchdeq else "torchdeq not run"
    header = [
        f"python -m benchmarks: one epoch of NEMON({IN_FEATURES}, {HIDDEN}, {OUT_FEATURES}, "
        f"gamma={args.gamma:g}), batch {BATCH_SIZE}, Adam lr {LR:g}, max_iter {args.max_iter}, "
        f"seed {args.seed}; nemon rows run nemon.training.train_stack",
        f"data: {rows[0]['data']}; {args.samples} training samples, {args.test_samples} test "
        "images",
        f"device: {device}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
        f"{deq}; load average {load0[0]:.2f} before, {load1[0]:.2f} after",
        f"matmul rate (float32, torch.utils.benchmark): {gf_model:.1f} GFLOP/s at "
        f"{BATCH_SIZE}x{HIDDEN}x{HIDDEN} (the floor), {gf_large:.1f} GFLOP/s at 1024x1024x1024 "
        "(floor s @1024)",
        "samples/s per model = models x samples / epoch s; floor s = (2 n^2 (fwd it + bwd it) "
        "+ 4 n m) x samples x models / model-shape rate (MATH 8); % of floor = floor s / epoch s; "
        "not conv = solves (forward + backward) stopped at max_iter; +train MiB = peak RSS - RSS "
        "before training; nemon stack rows: iterations and test acc are means over the models",
        f"each row: the run of median epoch time of {args.repeats} run(s) of its configuration, "
        "made in rounds (every configuration once per round); epoch s range: all its runs",
    ]
    if "picard" in args.solvers and "bound" in args.stop:
        header.append("picard has no stop=bound rows: it has no known contraction factor")
    lines = [mark + h for h in header]
    if args.markdown:
        lines.append("")
    lines.append(report.format_table(rows, markdown=args.markdown))
    if args.markdown:
        lines.append("")
    for t in args.tol:
        cmp = next((c for c in comparisons if c.tol == t), None)
        if cmp is not None:
            lines.append(mark + report.format_comparison(cmp, args.equal_accuracy))
        lines += [mark + s for s in report.stack_lines(rows, t, cmp)]
    lines.append(f"{mark}wall time {wall:.0f} s")
    return BenchReport(rows, gf_model, gf_large, comparisons, wall, lines)


def main(argv: Sequence[str] | None = None, runner: Runner = run_isolated) -> BenchReport | dict:
    """Run the benchmark and print its report (or, with ``--one``, one configuration's row)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.one is not None:
            return child_main(args.one)
        result = run_benchmark(args, runner)
    except ConfigurationError as e:
        parser.error(str(e))  # exits with status 2 and the usage line
    print(result.text, flush=True)
    return result
