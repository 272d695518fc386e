"""Recompute one number of ``robustness.csv`` from its model file, as the evaluation did.

    python -m nemon.audit results/mnist-5k/models/paper/g0.5_l0.01_s0 certified_interval 0.1 \
        --model audit/results/mnist-5k/models/paper/g0.5_l0.01_s0/model.pt

A model's folder holds its ``metrics.json`` (training), ``evaluation.json`` and
``robustness.csv`` (evaluation), and, once the training rule has run, ``model.pt`` (not
committed: the README's "Audit one number" rebuilds it with snakemake). :func:`recompute`
checks ``model.pt`` against the SHA-256 that ``metrics.json`` records, loads the data set in
the model's units (pixels in ``[0, 1]``, :func:`nemon.training.to_pixels`), takes the
evaluation settings ``evaluation.json`` records, and runs :func:`nemon.evaluation.evaluate_model`
with only the instrument asked for (and, for an attack that skips certified inputs, the
certificates at its eps): on the same CPU code path it gives the committed number bit for bit.
The command line runs on one thread with the workflow's pinned CPU code paths, as the jobs do.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd
import torch

from .config import pin_code_paths
from .contracts import INSTRUMENTS, load_model
from .data import load_dataset
from .errors import ConfigurationError, exit_from
from .evaluation import AttackSettings, EvalSettings, evaluate_model


def recorded_settings(folder: Path) -> EvalSettings:
    """The :class:`EvalSettings` a model's ``evaluation.json`` records (JSON's lists become
    tuples as the settings complete themselves)."""
    rec = json.loads((folder / "evaluation.json").read_text())["settings"]
    fields = {f.name for f in dataclasses.fields(EvalSettings)}
    kw = {k: v for k, v in rec.items() if k in fields}
    for name in ("pgd", "autoattack"):
        kw[name] = AttackSettings(**kw[name])
    return EvalSettings(**kw)


def only(settings: EvalSettings, instrument: str, eps: float) -> EvalSettings:
    """``settings`` restricted to one instrument at one eps (plus what it depends on)."""
    if instrument not in INSTRUMENTS:
        raise ConfigurationError(f"unknown instrument {instrument!r}; choose one of {INSTRUMENTS}")
    keep = {
        "inversion_eps": (),
        "lipschitz_eps": (),
        "interval_eps": (),
        "pgd": dataclasses.replace(settings.pgd, eps=()),
        "autoattack": dataclasses.replace(settings.autoattack, eps=()),
    }
    if instrument in ("inversion", "certified_lipschitz", "certified_interval"):
        key = {"inversion": "inversion_eps", "certified_lipschitz": "lipschitz_eps"}.get(
            instrument, "interval_eps"
        )
        keep[key] = (eps,)
    elif instrument in ("pgd", "autoattack"):
        keep[instrument] = dataclasses.replace(getattr(settings, instrument), eps=(eps,))
        if settings.skip_certified:  # the attack leaves out what the certificates prove
            for key in ("lipschitz_eps", "interval_eps"):
                keep[key] = (eps,) if eps in getattr(settings, key) else ()
    return dataclasses.replace(settings, **keep)


def recompute(
    folder: str | Path, instrument: str, eps: float = 0.0, model: str | Path | None = None
) -> dict:
    """``{"recomputed", "committed", "inputs", "images"}`` for one row of ``robustness.csv``.

    ``model``: the model file (default: ``model.pt`` in ``folder``), e.g. one rebuilt under
    another ``output_prefix``; it must have the SHA-256 that ``folder``'s metrics.json records.
    """
    folder = Path(folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    path = Path(model) if model is not None else folder / "model.pt"
    if not path.exists():
        raise ConfigurationError(
            f"{path} does not exist: model files are not committed; rebuild it with the "
            'training rule (README, "Audit one number")'
        )
    net = load_model(path, sha256=metrics["model_sha256"])
    settings = only(recorded_settings(folder), instrument, float(eps))
    ds = load_dataset(metrics["dataset"])
    rows, _ = evaluate_model(net, ds.test_x, ds.test_y, settings)
    table = pd.read_csv(folder / "robustness.csv")
    mine = [r for r in rows if r["attack"] == instrument and r["eps"] == float(eps)]
    if not mine:
        raise ConfigurationError(f"the evaluation computes no {instrument} at eps {eps}")
    row = mine[-1]  # an attack's own subset; a full-test-set instrument's 'test' row first
    if instrument not in ("pgd", "autoattack"):
        row = next(r for r in mine if r["inputs"] == "test")
    hit = table[
        (table["attack"] == instrument)
        & (table["eps"] == float(eps))
        & (table["inputs"] == row["inputs"])
    ]
    return {
        "recomputed": row["accuracy"],
        "committed": float(hit["accuracy"].iloc[0]) if len(hit) else None,
        "inputs": row["inputs"],
        "images": row["images"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nemon.audit", description=__doc__)
    p.add_argument("folder", help="a model's folder under results/<dataset>/models/")
    p.add_argument("instrument", choices=INSTRUMENTS)
    p.add_argument("eps", type=float, nargs="?", default=0.0, help="pixel units")
    p.add_argument("--model", help="the model file (default: model.pt in the folder)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)  # as the evaluation job ran (one thread per job)
    out = recompute(a.folder, a.instrument, a.eps, a.model)
    same = out["recomputed"] == out["committed"]
    print(
        f"{a.instrument} at eps {a.eps:g} on {out['inputs']} ({out['images']} images): "
        f"recomputed {out['recomputed']:.4f}, committed {out['committed']}: "
        + ("the same" if same else "DIFFERENT")
    )
    return 0 if same else 1


if __name__ == "__main__":
    pin_code_paths()  # the workflow's CPU code paths, so that the numbers come back bit for bit
    exit_from(main)
