"""Whole training groups with each solver: what the grid's jobs would cost, and what they give.

``python -m nemon.bench`` times one epoch from the initial weights, where every solve is
short. A job of the workflow trains a stack of ``lam`` values for the whole schedule, and
late in it, at ``gamma = 0.9`` under the error-bound rule, a solve takes hundreds of
averaged iterations. ``python -m nemon.bench.groups`` trains such jobs exactly as
``scripts/train.py`` does (one stack per ``(gamma, seed)``, every member from the seed's
initial weights, the schedule of ``config.yaml``) once per solver, each in its own process,
and reports per job its training time and iteration counts and per member what the model
is: test accuracy at a tight tolerance (the averaged iteration at relative step 1e-6, for
every solver), the Lipschitz bound and the convergence record.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import torch

from ..contracts import build_model
from ..data import load_dataset, stratified_subset
from ..errors import ConfigurationError, exit_from
from ..solvers import SOLVERS
from ..training import (
    Objective,
    Schedule,
    make_stack,
    seed_everything,
    summarise_history,
    to_pixels,
    train_stack,
)
from .config import HIDDEN, IN_FEATURES, OUT_FEATURES

# the paper grid's lam values and the training section of config.yaml (tests check they agree)
LAMS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
TRAINING = dict(
    epochs=30,
    extra_epochs=10,
    batch_size=100,
    tol=1e-3,
    stop="bound",
    max_iter=1000,
    lr=1e-3,
    lr_milestones=(0.5, 0.8),
    lr_factor=0.1,
)
EVAL_TOL, EVAL_MAX_ITER = 1e-6, 5000


def train_group(
    data: str, gamma: float, seed: int, solver: str, lams=LAMS, samples=None, **training
) -> dict:
    """One job: the stack of ``lams`` at ``gamma``, ``seed`` trained with ``solver``.

    Built as ``scripts/train.py`` builds a job: :func:`~nemon.contracts.build_model`
    per member, every member from the seed's initial weights."""
    torch.set_num_threads(1)
    tr = {**TRAINING, **training}
    ds = load_dataset(data, progress=False)
    train_x, train_y = ds.train_x, ds.train_y
    if samples is not None:
        idx = stratified_subset(train_y.long(), samples, seed=0)
        train_x, train_y = train_x[idx], train_y[idx]
    members = []
    for _ in lams:
        seed_everything(seed)
        members.append(
            build_model(
                "nemon",
                in_features=IN_FEATURES,
                hidden=HIDDEN,
                out_features=OUT_FEATURES,
                gamma=gamma,
                input_mean=ds.mean,
                input_std=ds.std,
                solver={"solver": solver, **{k: tr[k] for k in ("tol", "max_iter", "stop")}},
            )
        )
    stack = make_stack(members)
    schedule = Schedule(
        tr["epochs"],
        tr["batch_size"],
        tr["lr"],
        tuple(tr["lr_milestones"]),
        tr["lr_factor"],
        tr["extra_epochs"],
    )
    t0 = time.perf_counter()
    result = train_stack(
        stack,
        train_x,
        train_y,
        objective=Objective("lipschitz", tuple(lams)),
        schedule=schedule,
        seed=seed,
        progress=False,
        log=lambda s: None,
    )
    wall = time.perf_counter() - t0
    X = to_pixels(ds.test_x).reshape(len(ds.test_x), -1)
    rows = []
    for k, model in enumerate(stack.members()):
        model.solver = "average"  # the same instrument for every solver's model
        with model.solver_settings(tol=EVAL_TOL, max_iter=EVAL_MAX_ITER, stop="step"):
            with torch.no_grad():
                pred = torch.cat([model(X[i : i + 1000]).argmax(1) for i in range(0, len(X), 1000)])
                bound = float(model.lipschitz_bound())
        s = summarise_history(result.histories[k])
        rows.append(
            {
                "data": data,
                "gamma": gamma,
                "seed": seed,
                "solver": solver,
                "lam": lams[k],
                "job_s": wall,
                "epochs": s["epochs"],
                "fwd_it": s["fwd_iters_mean"],
                "bwd_it": s["bwd_iters_mean"],
                "not_conv": s["not_converged"],
                "converged": s["training_converged"],
                "test_acc": float((pred == ds.test_y.long()).double().mean()),
                "bound": bound,
            }
        )
    return {"rows": rows}


def _run(args_kw: dict) -> dict:
    return train_group(**args_kw)


def compare(rows: pd.DataFrame, base: str = "average") -> pd.DataFrame:
    """Per job and solver: time, mean iterations, and the paired differences to ``base``."""
    jobs = rows.groupby(["data", "gamma", "seed", "solver"], as_index=False).agg(
        job_s=("job_s", "first"),
        fwd_it=("fwd_it", "mean"),
        bwd_it=("bwd_it", "mean"),
        not_conv=("not_conv", "sum"),
        converged=("converged", "sum"),
        members=("lam", "size"),
    )
    ref = rows[rows.solver == base].set_index(["data", "gamma", "seed", "lam"])
    out = []
    for _, j in jobs.iterrows():
        mine = rows[
            (rows.data == j.data)
            & (rows.gamma == j.gamma)
            & (rows.seed == j.seed)
            & (rows.solver == j.solver)
        ].set_index(["data", "gamma", "seed", "lam"])
        d = {**j.to_dict()}
        if base in set(jobs.solver) and len(ref.index.intersection(mine.index)):
            r = ref.loc[mine.index]
            d["speedup"] = float(r["job_s"].iloc[0] / j.job_s)
            d["max_abs_dacc"] = float((mine["test_acc"] - r["test_acc"]).abs().max())
            d["max_rel_dbound"] = float(((mine["bound"] - r["bound"]) / r["bound"]).abs().max())
        out.append(d)
    return pd.DataFrame(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nemon.bench.groups",
        description=(
            "Train whole workflow jobs (the stack of the paper grid's lam values at one gamma "
            "and seed, config.yaml's schedule) once per solver; report time, iterations and "
            "the models' accuracy (averaged iteration, relative step 1e-6), bound and "
            "convergence."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", default="mnist-5k", help="mnist, fashion-mnist or mnist-5k")
    p.add_argument("--gamma", type=float, nargs="+", default=[0.9])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--solvers", nargs="+", default=["average", "anderson"], choices=SOLVERS)
    p.add_argument("--lams", type=float, nargs="+", default=list(LAMS))
    p.add_argument("--epochs", type=int, default=TRAINING["epochs"])
    p.add_argument("--extra-epochs", type=int, default=TRAINING["extra_epochs"])
    p.add_argument(
        "--samples", type=int, default=None, help="a stratified subset of the training images"
    )
    p.add_argument("--jobs", type=int, default=2, help="jobs run at once, one thread each")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--members", action="store_true", help="also print every member's row")
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    for g in a.gamma:
        if not g < 1:
            raise SystemExit(f"--gamma must be below 1 (MATH 2), got {g}")
    if a.jobs < 1 or a.epochs < 1 or a.extra_epochs < 0:
        raise SystemExit("--jobs and --epochs must be at least 1, --extra-epochs at least 0")
    configs = [
        dict(
            data=a.data,
            gamma=g,
            seed=s,
            solver=solver,
            lams=tuple(a.lams),
            samples=a.samples,
            epochs=a.epochs,
            extra_epochs=a.extra_epochs,
        )
        for g in a.gamma
        for s in a.seeds
        for solver in a.solvers
    ]
    t0 = time.perf_counter()
    try:
        with ProcessPoolExecutor(max_workers=a.jobs) as pool:
            results = list(pool.map(_run, configs))
    except ConfigurationError as e:
        raise SystemExit(str(e)) from None
    rows = pd.DataFrame([r for res in results for r in res["rows"]])
    table = compare(rows).round(4)
    print(
        f"- nemon.bench.groups: {a.data}, gamma {a.gamma}, seeds {a.seeds}, lam {a.lams}, "
        f"{a.epochs} epochs (+ at most {a.extra_epochs}), stop bound, tol "
        f"{TRAINING['tol']:g}; {a.jobs} job(s) at a time, one thread each; wall "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print(
        "- job_s: training time of the job; fwd_it, bwd_it: mean iterations per solve; "
        "converged: members meeting the record; speedup, max_abs_dacc, max_rel_dbound: "
        "against the averaged iteration's job of the same gamma and seed (accuracy at relative "
        f"step {EVAL_TOL:g} with the averaged iteration for every model)"
    )
    print(table.to_markdown(index=False) if a.markdown else table.to_string(index=False))
    if a.members:
        print(rows.round(4).to_string(index=False))
    return 0


if __name__ == "__main__":
    exit_from(main)
