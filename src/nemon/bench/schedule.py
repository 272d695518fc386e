"""Replay a committed grid's jobs on a few cores: what the workflow's job order costs in wall time.

``python -m nemon.bench.schedule results/fashion-mnist --cores 2`` reads each training job's
time (``train_seconds``, which every member of a stack records) and each evaluation job's
time (the sum of its members' ``evaluation_seconds``) from the committed records, and replays
them by list scheduling: whenever a core is free, the ready job of highest priority starts,
and a group's evaluation becomes ready when its training ends. Orders compared:

- ``workflow``: the priorities the rules give (:func:`nemon.config.job_priority`);
- ``measured``: the measured times as priorities (a training job counts its evaluation too),
  what a perfect cost estimate would give;
- ``random``: uniformly random priorities, seeded, as a scheduler without priorities may pick;

against the lower bound ``max(CPU time / cores, longest training + evaluation chain)``.
Process start-up, data preparation, aggregation and figures are not counted (seconds of a
run of about an hour), and a job's time is taken as fixed, although two jobs at once on a
shared machine slow each other: read the orders against each other, not as a forecast.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..config import job_priority
from ..errors import ConfigurationError, exit_from

GROUP = ["model", "objective", "gamma", "seed"]


def load_jobs(folder: str | Path) -> pd.DataFrame:
    """One row per training group: its keys, ``points``, ``train_s`` and ``eval_s``."""
    folder = Path(folder)
    rows = []
    for d in sorted(p.parent for p in folder.glob("models/*/*/*/metrics.json")):
        ev = d / "evaluation.json"
        if not ev.is_file():
            raise ConfigurationError(
                f"{d} has metrics.json but no evaluation.json: the replay needs evaluated "
                "models (run the workflow to the end first)"
            )
        m, e = json.loads((d / "metrics.json").read_text()), json.loads(ev.read_text())
        rows.append(
            {
                **{k: m[k] for k in GROUP},
                "train_s": float(m["train_seconds"]),
                "eval_s": float(e["evaluation_seconds"]),
            }
        )
    if not rows:
        raise ConfigurationError(
            f"no models/*/*/*/metrics.json under {folder}: give a results folder of the "
            "workflow, e.g. results/fashion-mnist"
        )
    return (
        pd.DataFrame(rows)
        .groupby(GROUP, as_index=False, sort=True)
        .agg(
            points=("train_s", "size"),
            train_s=("train_s", "first"),  # the stack's time, recorded by every member
            eval_s=("eval_s", "sum"),  # one job evaluates the whole group
        )
    )


def lower_bound(jobs: pd.DataFrame, cores: int) -> float:
    """No order finishes sooner: all the work spread evenly, or the longest chain alone."""
    total = float((jobs["train_s"] + jobs["eval_s"]).sum())
    return max(total / cores, float((jobs["train_s"] + jobs["eval_s"]).max()))


def list_schedule(
    jobs: pd.DataFrame,
    train_priority: Callable[[int], float],
    eval_priority: Callable[[int], float],
    cores: int,
) -> float:
    """Wall time of list scheduling ``jobs`` on ``cores`` by the given priorities (row -> value).

    Ties go to the lower row. Each group's evaluation becomes ready when its training ends.
    """
    if cores < 1:
        raise ValueError(f"cores must be at least 1, got {cores}")
    ready = [(-train_priority(i), i, "train") for i in range(len(jobs))]
    heapq.heapify(ready)
    running: list[tuple[float, int, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < cores:
            _, i, stage = heapq.heappop(ready)
            seconds = jobs["train_s"].iat[i] if stage == "train" else jobs["eval_s"].iat[i]
            heapq.heappush(running, (now + float(seconds), i, stage))
        now, i, stage = heapq.heappop(running)
        if stage == "train":
            heapq.heappush(ready, (-eval_priority(i), i, "evaluate"))
    return now


def workflow_priorities(jobs: pd.DataFrame) -> tuple[Callable, Callable]:
    def prio(stage):
        return lambda i: job_priority(
            stage,
            jobs["model"].iat[i],
            jobs["objective"].iat[i],
            float(jobs["gamma"].iat[i]),
            int(jobs["points"].iat[i]),
        )

    return prio("train"), prio("evaluate")


def replay(jobs: pd.DataFrame, cores: int = 2, n_random: int = 200, seed: int = 0) -> dict:
    """Wall times (seconds) of the orders of the module docstring, and the lower bound."""
    out = {
        "bound": lower_bound(jobs, cores),
        "workflow": list_schedule(jobs, *workflow_priorities(jobs), cores),
        "measured": list_schedule(
            jobs,
            lambda i: jobs["train_s"].iat[i] + jobs["eval_s"].iat[i],
            lambda i: jobs["eval_s"].iat[i],
            cores,
        ),
    }
    rng = random.Random(seed)
    times = []
    for _ in range(n_random):
        draws = {key: rng.random() for key in [(i, s) for i in range(len(jobs)) for s in "te"]}
        times.append(
            list_schedule(jobs, lambda i, d=draws: d[i, "t"], lambda i, d=draws: d[i, "e"], cores)
        )
    if times:
        out["random_mean"] = sum(times) / len(times)
        out["random_min"], out["random_max"] = min(times), max(times)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nemon.bench.schedule",
        description=(
            "Replay a results folder's training and evaluation jobs (their recorded times) on "
            "a few cores in the workflow's priority order, in the order of the measured times "
            "and in random orders, against the lower bound."
        ),
    )
    p.add_argument("folder", help="a results folder of the workflow, e.g. results/fashion-mnist")
    p.add_argument("--cores", type=int, default=2, help="cores to replay on (default 2)")
    p.add_argument("--random", type=int, default=200, help="random orders to draw (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random orders")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cores < 1:
        raise SystemExit("--cores must be at least 1")
    if args.random < 0:
        raise SystemExit("--random must be at least 0")
    try:
        jobs = load_jobs(args.folder)
    except ConfigurationError as e:
        raise SystemExit(str(e)) from None
    r = replay(jobs, args.cores, args.random, args.seed)
    cpu = float((jobs["train_s"] + jobs["eval_s"]).sum())
    print(
        f"- {args.folder}: {int(jobs['points'].sum())} models, {len(jobs)} training and "
        f"{len(jobs)} evaluation jobs, {cpu / 60:.1f} CPU-minutes recorded, on {args.cores} cores"
    )
    print(f"- lower bound: {r['bound'] / 60:.1f} min")
    print(f"- workflow priorities (nemon.config.job_priority): {r['workflow'] / 60:.1f} min")
    print(f"- measured times as priorities: {r['measured'] / 60:.1f} min")
    if "random_mean" in r:
        print(
            f"- {args.random} random orders (seed {args.seed}): mean {r['random_mean'] / 60:.1f}"
            f" min, {r['random_min'] / 60:.1f}-{r['random_max'] / 60:.1f}"
        )
    return 0


if __name__ == "__main__":
    exit_from(main)
