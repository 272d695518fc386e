"""The aggregation stage: per-model records -> the two tidy tables, every record checked.

Nothing reaches ``summary.csv`` or ``robustness.csv`` (and so no figure) unless:

* each file is a valid record of its stage (:mod:`nemon.contracts`) whose keys agree with the
  folder it sits in, and whose model file hash matches what training recorded;
* no number comes from a solve that stopped at ``max_iter`` (unless explicitly allowed, then
  the rows keep their ``not_converged`` count and the figures mark them);
* every ordering of MATH 11 holds on the same inputs: no image certified at ``eps`` is broken by
  an attack at ``eps``, no certified accuracy exceeds an attacked one, and AutoAttack is not
  weaker than PGD beyond PGD's randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from .contracts import (
    EVALUATION_SCHEMA,
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
    for m_path, e_path in zip(metrics, evaluations, strict=True):
        keys = keys_from_path(m_path)
        if keys_from_path(e_path) != keys:
            raise CorruptFileError(f"{m_path} and {e_path} belong to different models")
        fix_t = "delete it and rerun snakemake: the training rule rebuilds it"
        fix_e = "delete it and rerun snakemake: the evaluation rule rebuilds it"
        m = read_json_record(m_path, METRICS_SCHEMA, expect=keys, fix=fix_t)
        e = read_json_record(e_path, EVALUATION_SCHEMA, expect=keys, fix=fix_e)
        rows.append(
            {
                **{k: m[k] for k in SUMMARY_COLUMNS if k in m},
                **{k: e[k] for k in SUMMARY_COLUMNS if k in e},
            }
        )
    summary = pd.DataFrame.from_records(rows, columns=SUMMARY_COLUMNS)
    summary = summary.sort_values(POINT_KEYS, kind="stable", ignore_index=True)
    tables = [read_robustness(p, expect=keys_from_path(p)) for p in robustness]
    rob = pd.concat(tables, ignore_index=True)[ROBUSTNESS_COLUMNS]
    rob = rob.sort_values(
        [*POINT_KEYS, "attack", "inputs", "eps"], kind="stable", ignore_index=True
    )
    bad = rob[rob["not_converged"] > 0]
    if len(bad) or (summary["clean_not_converged"] > 0).any():
        what = "; ".join(
            f"{r.model}/{r.objective} gamma={r.gamma} lam={r.lam} eps_t={r.eps_t} seed={r.seed}: "
            f"{r.attack} eps={r.eps} ({r.not_converged} solve(s))"
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
