"""The flop floor of a trained grid (MATH 8), from its committed ``metrics.json`` files.

``python -m benchmarks.floor results/fashion-mnist`` asks what the grid's training could
cost at best: for every model trained with the Lipschitz objective (NEMON, weighted or
not, and the MLP), the flops of MATH 8 per sample, ``2 n^2 (k_fwd + k_bwd) + 4 n m``,
epoch by epoch with that epoch's mean iteration counts, times the training samples;
divided by the matrix-multiply rate measured now at the model's shapes. Beside it, the
measured training time of each group job (``train_seconds``: one job trains a stack, on
one thread). The ratio says how close the implementation runs to the arithmetic its
solver needs; the floor itself says what no implementation of that solver can beat at
those iteration counts. Models of other objectives (interval training solves the
2n-dimensional embedding as well) and the l2 MON are listed, not covered by MATH 8.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from nemon.errors import ConfigurationError, exit_from

from .config import HIDDEN, IN_FEATURES
from .timing import flops_per_sample, matmul_gflops

# training images per epoch of each data set (mnist-5k: the stratified 4,000 of 5,000)
TRAIN_SAMPLES = {"mnist": 60000, "fashion-mnist": 60000, "mnist-5k": 4000}
COVERED_MODELS = ("nemon", "nemon-unweighted", "mlp")
GROUP = ["dataset", "experiment", "model", "objective", "gamma", "seed"]


def covered(model: str, objective: str) -> bool:
    """Whether MATH 8's count describes a training step of this model and objective."""
    return objective == "lipschitz" and model in COVERED_MODELS


def grid_flops(folder: str | Path, train_samples: int | None = None) -> pd.DataFrame:
    """One row per training job (a stack of one ``(model, objective, gamma, seed)``).

    Columns: the job's keys, ``members``, ``epochs`` (summed over members), ``flops``
    (MATH 8 over every member's epochs; NaN where not covered), ``train_seconds``
    (the job's measured time) and ``covered``.
    """
    folder = Path(folder)
    files = sorted(folder.glob("models/*/*/metrics.json"))
    if not files:
        raise ConfigurationError(
            f"no models/<experiment>/<model>/metrics.json under {folder}: give a results "
            "folder of the workflow, e.g. results/fashion-mnist"
        )
    rows = []
    for f in files:
        m = json.loads(f.read_text())
        samples = train_samples or TRAIN_SAMPLES.get(m["dataset"])
        if samples is None:
            raise ConfigurationError(
                f"{f}: unknown data set {m['dataset']!r}; give --train-samples"
            )
        ok = covered(m["model"], m["objective"])
        width = m.get("provenance", {}).get("hidden", HIDDEN)  # the experiment's width
        flops = (
            sum(
                flops_per_sample(e["fwd_iters_mean"], e["bwd_iters_mean"], width, IN_FEATURES)
                for e in m["history"]
            )
            * samples
            if ok
            else float("nan")
        )
        rows.append(
            {
                **{k: m[k] for k in GROUP},
                "epochs": len(m["history"]),
                "flops": flops,
                "train_seconds": float(m["train_seconds"]),
                "covered": ok,
            }
        )
    df = pd.DataFrame(rows)
    jobs = df.groupby(GROUP, as_index=False).agg(
        members=("epochs", "size"),
        epochs=("epochs", "sum"),
        flops=("flops", "sum"),
        train_seconds=("train_seconds", "first"),  # the job's time, recorded by every member
        covered=("covered", "all"),
    )
    jobs.loc[~jobs["covered"], "flops"] = float("nan")
    return jobs


def summarise(jobs: pd.DataFrame, gflops: float, cores: int) -> tuple[pd.DataFrame, dict]:
    """Per ``(model, objective, gamma)``, summed over seeds, and the covered grid's totals."""
    jobs = jobs.assign(floor_s=jobs["flops"] / (gflops * 1e9))
    by = (
        jobs.groupby(["model", "objective", "gamma"], as_index=False)
        .agg(
            jobs=("seed", "size"),
            members=("members", "sum"),
            cpu_min=("train_seconds", "sum"),
            floor_min=("floor_s", lambda s: s.sum(min_count=1)),
        )
        .assign(cpu_min=lambda d: d["cpu_min"] / 60, floor_min=lambda d: d["floor_min"] / 60)
    )
    by["pct_of_floor"] = 100 * by["floor_min"] / by["cpu_min"]
    cov = jobs[jobs["covered"]]
    totals = {
        "models": int(jobs["members"].sum()),
        "covered_models": int(cov["members"].sum()),
        "cpu_min": float(jobs["train_seconds"].sum() / 60),
        "covered_cpu_min": float(cov["train_seconds"].sum() / 60),
        "covered_floor_min": float(cov["floor_s"].sum() / 60),
        "gflops": gflops,
        "cores": cores,
    }
    totals["covered_pct_of_floor"] = 100 * totals["covered_floor_min"] / totals["covered_cpu_min"]
    totals["covered_floor_wall_min"] = totals["covered_floor_min"] / cores
    return by.sort_values("floor_min", ascending=False, na_position="last"), totals


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.floor",
        description=(
            "The flop floor (MATH 8) of a trained grid's Lipschitz-objective models, from "
            "their metrics.json, at the matrix-multiply rate measured now, beside the "
            "measured training time."
        ),
    )
    p.add_argument("folder", help="a results folder of the workflow, e.g. results/fashion-mnist")
    p.add_argument("--train-samples", type=int, default=None, help="training images per epoch")
    p.add_argument(
        "--gflops",
        type=float,
        default=None,
        help="the matrix-multiply rate to divide by (default: measured now, one thread, "
        "float32, at the model's shape 100x100x100)",
    )
    p.add_argument("--cores", type=int, default=2, help="cores for the wall-time floor")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cores < 1:
        raise SystemExit("--cores must be at least 1")
    if args.gflops is not None and not args.gflops > 0:
        raise SystemExit("--gflops must be positive")
    try:
        jobs = grid_flops(args.folder, args.train_samples)
    except ConfigurationError as e:
        raise SystemExit(str(e)) from None
    gflops = args.gflops or matmul_gflops(HIDDEN, HIDDEN, HIDDEN, torch.device("cpu"))
    by, t = summarise(jobs, gflops, args.cores)
    print(
        f"- {args.folder}: {t['models']} models, {len(jobs)} training jobs, "
        f"{t['cpu_min']:.1f} CPU-minutes of training measured"
    )
    print(
        f"- floor: MATH 8 flops of each epoch (its mean iteration counts) x training samples / "
        f"{gflops:.1f} GFLOP/s (float32, 100x100x100, "
        f"{'given' if args.gflops else 'measured now, one thread'})"
    )
    table = by.round({"cpu_min": 1, "floor_min": 1, "pct_of_floor": 1})
    print(
        f"\n{table.to_markdown(index=False)}\n" if args.markdown else table.to_string(index=False)
    )
    print(
        f"- covered ({t['covered_models']} models, the Lipschitz objective): measured "
        f"{t['covered_cpu_min']:.1f} CPU-min, floor {t['covered_floor_min']:.1f} CPU-min "
        f"({t['covered_pct_of_floor']:.1f}% of the floor); on {t['cores']} cores the floor "
        f"alone is {t['covered_floor_wall_min']:.1f} min of wall time"
    )
    return 0


if __name__ == "__main__":
    exit_from(main)
