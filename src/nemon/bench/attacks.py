"""What warm starts and a looser attack tolerance save in the attacks, and what they change.

``python -m nemon.bench.attacks results/mnist-5k/models/nemon/lipschitz/g0.9_l0.01_s2``
runs PGD and AutoAttack on a committed model exactly as its evaluation did (the
settings recorded in its ``evaluation.json``: eps, subset, steps, restarts, queries,
tolerances), once with every solve starting cold (from zero; the committed path)
and once the fast way: with warm starts (:meth:`nemon.model.NEMON.warm_starts`: each
solve of the attack starts from the last solution; ``--no-warm`` keeps cold starts)
and, with ``--attack-tol T``, the attack's own solves stopped at relative step ``T``
instead of the recorded ``attack_tol`` (the clean and final checks keep the recorded
``tol``, so every outcome is still judged at the evaluation's tolerance). The two ways
alternate in rounds in one process on one thread. Per attack it reports the median
wall time of each way, the ratio, the mean iterations of the attack's forward and
backward solves, the robust accuracies, how many (image, eps) outcomes differ
between the two (``differ``) and how many of those only the cold way broke
(``only_cold_broke``: where the fast way was the weaker attack). The cold run is
checked against the model's committed ``robustness.csv``: it must give the committed
accuracies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from .. import attacks
from ..config import pin_code_paths
from ..contracts import load_model
from ..data import load_dataset, stratified_subset
from ..errors import ConfigurationError, exit_from
from ..evaluation import AttackSettings, EvalSettings, run_attack
from ..training import to_pixels
from .report import grid

ATTACKS = ("pgd", "autoattack")


def settings_of(record: dict) -> EvalSettings:
    """The :class:`EvalSettings` an ``evaluation.json`` record was made with."""
    s = dict(record["settings"])
    for name in ("pgd", "autoattack"):
        a = dict(s[name])
        a["eps"] = tuple(a["eps"])
        s[name] = AttackSettings(**a)
    for name in ("inversion_eps", "lipschitz_eps", "interval_eps"):
        s[name] = tuple(s[name])
    return EvalSettings(**s)


def run_attack_set(
    model: nn.Module, name: str, X: Tensor, Y: Tensor, s: EvalSettings, *, warm: bool
) -> dict:
    """One attack at every eps of its settings, as the evaluation runs it."""
    atk = getattr(s, name)
    idx = stratified_subset(Y, min(atk.images, len(Y)), seed=s.subset_seed)
    u, y = X[idx], Y[idx]
    robust, fwd, bwd, n_fwd, n_bwd = {}, 0, 0, 0, 0
    t = time.perf_counter()
    for eps in atk.eps:
        res = run_attack(model, name, u, y, eps, s, warm_start=warm)
        if warm and not res.warm_start:
            raise ConfigurationError(f"{type(model).__name__} has no warm starts to measure")
        robust[eps] = res.robust
        c = res.attack_solves
        fwd, bwd = fwd + c.forward_iterations, bwd + c.backward_iterations
        n_fwd, n_bwd = n_fwd + c.forward_solves, n_bwd + c.backward_solves
    return {
        "seconds": time.perf_counter() - t,
        "robust": robust,
        "fwd_it": fwd / max(n_fwd, 1),
        "bwd_it": bwd / max(n_bwd, 1),
    }


def measure(
    model: nn.Module,
    X: Tensor,
    Y: Tensor,
    s: EvalSettings,
    *,
    attacks_: Sequence[str] = ATTACKS,
    rounds: int = 1,
    warm: bool = True,
    attack_tol: float | None = None,
) -> list[dict]:
    """The committed way (cold, ``s.attack_tol``) against the fast way (warm starts if
    ``warm``, the attack's solves at ``attack_tol`` if given) for each attack,
    alternating in ``rounds``; one row each."""
    if attack_tol is not None and not attack_tol > 0:
        raise ConfigurationError(f"attack_tol must be positive, got {attack_tol}")
    if not warm and attack_tol is None:
        raise ConfigurationError(
            "nothing to compare: the fast way needs warm starts or another attack_tol"
        )
    fast_settings = s if attack_tol is None else dataclasses.replace(s, attack_tol=attack_tol)
    ways = {False: (s, False), True: (fast_settings, warm)}  # fast? -> (settings, warm starts)
    rows = []
    with attacks.frozen_weights(model):
        for name in attacks_:
            if not getattr(s, name).eps:
                continue
            runs: dict[bool, list[dict]] = {False: [], True: []}
            for r in range(rounds):
                for is_fast in (False, True) if r % 2 == 0 else (True, False):
                    settings, w = ways[is_fast]
                    runs[is_fast].append(run_attack_set(model, name, X, Y, settings, warm=w))
            cold, fast = runs[False][-1], runs[True][-1]
            for f in (False, True):  # a run must not depend on the round it was made in
                for other in runs[f][:-1]:
                    if any(
                        not torch.equal(other["robust"][e], runs[f][-1]["robust"][e])
                        for e in other["robust"]
                    ):
                        raise RuntimeError(
                            f"{name}: two runs of the {('cold', 'fast')[f]} way disagree"
                        )
            cold_s = statistics.median(r["seconds"] for r in runs[False])
            fast_s = statistics.median(r["seconds"] for r in runs[True])
            rows.append(
                {
                    "attack": name,
                    "eps": " ".join(f"{e:g}" for e in cold["robust"]),
                    "images": int(next(iter(cold["robust"].values())).numel()),
                    "cold_s": cold_s,
                    "fast_s": fast_s,
                    "speedup": cold_s / fast_s,
                    "cold_fwd_it": cold["fwd_it"],
                    "fast_fwd_it": fast["fwd_it"],
                    "cold_bwd_it": cold["bwd_it"],
                    "fast_bwd_it": fast["bwd_it"],
                    "cold_acc": " ".join(
                        f"{float(v.float().mean()):.3f}" for v in cold["robust"].values()
                    ),
                    "fast_acc": " ".join(
                        f"{float(v.float().mean()):.3f}" for v in fast["robust"].values()
                    ),
                    "differ": sum(
                        int((cold["robust"][e] != fast["robust"][e]).sum()) for e in cold["robust"]
                    ),
                    # of those: broken only by the cold way (the fast way was weaker there)
                    "only_cold_broke": sum(
                        int((fast["robust"][e] & ~cold["robust"][e]).sum()) for e in cold["robust"]
                    ),
                    "_cold_robust": cold["robust"],
                }
            )
    return rows


def check_committed(rows: list[dict], committed: pd.DataFrame, where: str) -> None:
    """The cold runs must give the accuracies of the model's committed ``robustness.csv``."""
    for row in rows:
        for eps, robust in row["_cold_robust"].items():
            sel = committed[(committed["attack"] == row["attack"]) & (committed["eps"] == eps)]
            if sel.empty:
                raise ConfigurationError(f"{where}: no committed {row['attack']} row at eps {eps}")
            want = float(sel["accuracy"].iloc[0])
            got = int(robust.sum()) / robust.numel()
            if abs(want - got) > 0.5 / robust.numel():  # the same count of robust images
                raise RuntimeError(
                    f"{where}: cold {row['attack']} at eps {eps} gives {got:.4f}, the committed "
                    f"robustness.csv {want:.4f}: this code does not reproduce the committed run"
                )


def _cell(key: str, v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}x" if key == "speedup" else f"{v:.1f}"
    return str(v)


def load_evaluated(
    folder: Path, data: dict, *, nemon_only: bool = False
) -> tuple[nn.Module, Tensor, Tensor, EvalSettings]:
    """A trained and evaluated model folder of the workflow: the model (checked against its
    recorded sha256, in eval mode), its data set's test pixels and labels (loaded once per
    data set into ``data``) and the settings its ``evaluation.json`` was made with."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        record = json.loads((folder / "evaluation.json").read_text())
    except FileNotFoundError as e:
        raise ConfigurationError(
            f"{folder}: {Path(e.filename).name} missing; give an evaluated model folder of "
            "the workflow, e.g. results/mnist-5k/models/nemon/lipschitz/g0.9_l0.01_s2"
        ) from None
    if nemon_only and metrics["model"] not in ("nemon", "nemon-unweighted"):
        raise ConfigurationError(f"{folder}: a {metrics['model']} model; give a NEMON model")
    if not (folder / "model.pt").exists():
        raise ConfigurationError(
            f"{folder}: model.pt missing (weights are not committed; run the workflow to train "
            "it, e.g. snakemake --cores 2 <folder>/model.pt --config dataset=<its data set>)"
        )
    model = load_model(folder / "model.pt", sha256=metrics["model_sha256"]).eval()
    if metrics["dataset"] not in data:
        ds = load_dataset(metrics["dataset"], progress=False)
        data[metrics["dataset"]] = (to_pixels(ds.test_x), ds.test_y.long())
    X, Y = data[metrics["dataset"]]
    return model, X, Y, settings_of(record)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nemon.bench.attacks",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model_dirs", nargs="+", help="model folders with an evaluation.json")
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    p.add_argument("--rounds", type=int, default=1, help="alternations of cold and fast")
    p.add_argument(
        "--no-warm", dest="warm", action="store_false", help="the fast way starts cold too"
    )
    p.add_argument(
        "--attack-tol",
        type=float,
        default=None,
        help="the fast way's attack solves stop at this relative step (default: as recorded)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    for name in ("rounds", "threads"):
        if getattr(args, name) < 1:
            raise ConfigurationError(f"--{name} must be at least 1")
    torch.set_num_threads(args.threads)
    table, data = [], {}
    for d in args.model_dirs:
        folder = Path(d)
        model, X, Y, s = load_evaluated(folder, data, nemon_only=True)
        rows = measure(
            model,
            X,
            Y,
            s,
            attacks_=args.attacks,
            rounds=args.rounds,
            warm=args.warm,
            attack_tol=args.attack_tol,
        )
        committed = folder / "robustness.csv"
        if committed.exists():
            check_committed(rows, pd.read_csv(committed), str(folder))
        for r in rows:
            r.pop("_cold_robust")
            table.append({"model": "/".join(folder.parts[-3:]), **r})
        print(f"# {folder}: done", file=sys.stderr, flush=True)
    keys = list(table[0])
    fast = ("warm starts" if args.warm else "cold starts") + (
        f", attack_tol {args.attack_tol:g}"
        if args.attack_tol is not None
        else ", recorded attack_tol"
    )
    print(
        f"# cold (as recorded) vs fast ({fast}), {args.rounds} round(s), "
        f"{args.threads} thread(s), medians"
    )
    print(grid(keys, [[_cell(k, r[k]) for k in keys] for r in table], markdown=args.markdown))
    return 0


if __name__ == "__main__":
    pin_code_paths()  # the workflow's kernels, or the committed numbers may not come back
    exit_from(main)
