"""The aggregation stage: per-model records -> the two tidy tables, every record checked.

Nothing reaches ``summary.csv`` or ``robustness.csv`` (and so no figure) unless:

* each file is a valid record of its stage (:mod:`nemon.contracts`) whose keys agree with the
  folder it sits in (experiment, objective, gamma, weight, seed) and with the model's training
  record (the model, which no folder names), and whose model file hash matches what training
  recorded;
* no number comes from a solve that stopped at ``max_iter`` (unless explicitly allowed, then
  the rows keep their ``not_converged`` count and the figures mark them);
* every ordering of MATH 11 holds on the same inputs: no image certified at ``eps`` is broken by
  an attack at ``eps``, no certified accuracy exceeds an attacked one, and AutoAttack is not
  weaker than PGD beyond PGD's randomness (checked experiment by experiment: two experiments
  may hold models of the same model, objective, weight and seed).

Both tables are keyed by :data:`~nemon.contracts.POINT_KEYS`, the experiment first after the
data set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from .contracts import (
    EVALUATION_SCHEMA,
    FOLDER_KEYS,
    METRICS_SCHEMA,
    POINT_KEYS,
    ROBUSTNESS_COLUMNS,
    SUMMARY_COLUMNS,
    keys_from_path,
    read_json_record,
    read_robustness,
)
from .errors import CorruptFileError, NemonError
from .evaluation import check_orderings


def _folder_id(folder: dict) -> tuple:
    return tuple(folder[k] for k in FOLDER_KEYS)


class OrderingError(NemonError, RuntimeError):
    """An ordering of MATH 11 does not hold: a bug in an instrument, never a result."""


class NotConvergedError(NemonError, RuntimeError):
    """A number comes from solves that stopped at ``max_iter``."""


def summarise(
    metrics: Sequence[str],
    evaluations: Sequence[str],
    robustness: Sequence[str],
    *,
    allow_not_converged: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate every per-model file and join them into ``(summary, robustness)``."""
    rows = []
    fix_t = "delete it and rerun snakemake: the training rule rebuilds it"
    fix_e = "delete it and rerun snakemake: the evaluation rule rebuilds it"
    models: dict[tuple, dict] = {}  # folder keys -> the model's POINT_KEYS (its training record)
    for m_path, e_path in zip(metrics, evaluations, strict=True):
        folder = keys_from_path(m_path)
        if keys_from_path(e_path) != folder:
            raise CorruptFileError(f"{m_path} and {e_path} belong to different models")
        m = read_json_record(m_path, METRICS_SCHEMA, expect=folder, fix=fix_t)
        keys = {k: m[k] for k in POINT_KEYS}
        e = read_json_record(e_path, EVALUATION_SCHEMA, expect=keys, fix=fix_e)
        models[_folder_id(folder)] = keys
        rows.append(
            {
                **{k: m[k] for k in SUMMARY_COLUMNS if k in m},
                **{k: e[k] for k in SUMMARY_COLUMNS if k in e},
            }
        )
    summary = pd.DataFrame.from_records(rows, columns=SUMMARY_COLUMNS)
    summary = summary.sort_values(POINT_KEYS, kind="stable", ignore_index=True)
    tables = []
    for path in robustness:
        keys = models.get(_folder_id(keys_from_path(path)))
        if keys is None:
            raise CorruptFileError(
                f"{path} belongs to no model of the metrics.json files given; rerun snakemake so "
                "that every evaluated model has its training record"
            )
        tables.append(read_robustness(path, expect=keys))
    rob = pd.concat(tables, ignore_index=True)[ROBUSTNESS_COLUMNS]
    rob = rob.sort_values(
        [*POINT_KEYS, "attack", "inputs", "eps"], kind="stable", ignore_index=True
    )
    bad = rob[rob["not_converged"] > 0]
    if len(bad) or (summary["clean_not_converged"] > 0).any():
        what = "; ".join(
            f"{r.experiment} ({r.model}/{r.objective}) gamma={r.gamma} lam={r.lam} "
            f"eps_t={r.eps_t} seed={r.seed}: {r.attack} eps={r.eps} ({r.not_converged} solve(s))"
            for r in bad.head(5).itertuples()
        )
        msg = (
            f"{len(bad)} row(s) of the robustness table come from solves that stopped at "
            f"evaluation.max_iter ({what}); raise evaluation.max_iter, or set "
            "evaluation.allow_not_converged: true to keep them marked"
        )
        if not allow_not_converged:
            raise NotConvergedError(msg)
        log("WARNING: " + msg)
    problems = check_orderings(rob)
    if problems:
        raise OrderingError(
            f"{len(problems)} ordering(s) of MATH 11 do not hold (a bug in an instrument, never "
            "a result): " + "; ".join(problems[:10])
        )
    degenerate = int(rob["degenerate"].sum())
    log(
        f"{len(summary)} models, {len(rob)} robustness rows ({degenerate} degenerate: one class "
        f"takes >= 90% of the predictions), orderings of MATH 11 hold"
    )
    return summary, rob
