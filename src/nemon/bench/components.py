"""What each component of AutoAttack breaks, and what it costs.

``python -m nemon.bench.components results/mnist-5k/models/*/*/*_s2`` runs AutoAttack on
trained and evaluated models exactly as their evaluation did (the settings recorded in
each ``evaluation.json``: eps, subset, iterations, queries, tolerances; cold starts) and
reports, per model and eps, how many images each component (APGD-CE, APGD-T, FAB-T,
Square) broke that the components before it left standing, and the wall seconds each
took. A last line sums both over every row. Each run is checked against the model's
committed ``robustness.csv``: it must give the committed AutoAttack accuracy.

The breaks are counted as torchattacks' chain judges them, at the attack's tolerance;
the robust accuracy is decided, as in the evaluation, by one more solve at the
evaluation tolerance. Square and FAB-T guard against gradient masking: an image that
they break and APGD does not is a sign that the gradient misleads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from ..config import pin_code_paths
from ..data import stratified_subset
from ..errors import ConfigurationError, exit_from
from ..evaluation import EvalSettings, run_attack
from .attacks import check_committed, load_evaluated
from .report import grid


def measure(model: nn.Module, X: Tensor, Y: Tensor, s: EvalSettings) -> list[dict]:
    """One row per eps of ``s.autoattack``: images given, broken and seconds per component."""
    atk = s.autoattack
    idx = stratified_subset(Y, min(atk.images, len(Y)), seed=s.subset_seed)
    rows = []
    for eps in atk.eps:
        res = run_attack(model, "autoattack", X[idx], Y[idx], eps, s, warm_start=False)
        rem = res.remaining_after
        row = {"eps": eps, "images": int(res.robust.numel()), "attacked": rem[0]}
        for i, name in enumerate(res.components):
            row[f"{name} broke"] = rem[i] - rem[i + 1]
            row[f"{name} s"] = res.component_seconds[i]
        row["robust"] = int(res.robust.sum())
        row["total s"] = res.wall_time_s
        row["_robust"] = res.robust
        rows.append(row)
    return rows


def totals(table: list[dict]) -> dict:
    """The row ``all``: every numeric column summed over the rows."""
    out: dict = {"model": "all", "eps": "", "images": sum(r["images"] for r in table)}
    for key in table[0]:
        if key in out:  # model, eps, images: set above
            continue
        out[key] = sum(r[key] for r in table)
    return out


def _cell(key: str, v) -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if key.endswith(" s") else f"{v:g}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nemon.bench.components",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model_dirs", nargs="+", help="model folders with an evaluation.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    if args.threads < 1:
        raise ConfigurationError("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    table, data = [], {}
    for d in args.model_dirs:
        folder = Path(d)
        model, X, Y, s = load_evaluated(folder, data)
        if not s.autoattack.eps:
            raise ConfigurationError(f"{folder}: its evaluation ran no AutoAttack (no eps)")
        rows = measure(model, X, Y, s)
        committed = folder / "robustness.csv"
        if committed.exists():
            check_committed(
                [{"attack": "autoattack", "_cold_robust": {r["eps"]: r["_robust"] for r in rows}}],
                pd.read_csv(committed),
                str(folder),
            )
        for r in rows:
            r.pop("_robust")
            table.append({"model": "/".join(folder.parts[-3:]), **r})
        print(f"# {folder}: done", file=sys.stderr, flush=True)
    keys = list(table[0])
    if any(list(r) != keys for r in table):
        raise ConfigurationError("the models' AutoAttack chains differ; give models of one version")
    table.append(totals(table))
    total = table[-1]["total s"]
    share = {k: f"{table[-1][k] / total:.0%}" for k in keys if k.endswith(" s") and k != "total s"}
    print(f"# AutoAttack per component, {args.threads} thread(s), cold starts")
    print(grid(keys, [[_cell(k, r[k]) for k in keys] for r in table], markdown=args.markdown))
    print("# share of the total time: " + ", ".join(f"{k[:-2]} {v}" for k, v in share.items()))
    return 0


if __name__ == "__main__":
    pin_code_paths()  # the workflow's kernels, or the committed numbers may not come back
    exit_from(main)
