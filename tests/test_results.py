"""nemon.results: the README's tables, from the tidy tables alone, with paired intervals."""

import math

import pandas as pd
import pytest
from test_figures import tables

from nemon.results import T975, paired_difference, per_model, report, seed_summary


def test_paired_difference_is_the_seedwise_mean_with_a_t_interval():
    models = pd.DataFrame(
        {
            "model": "nemon",
            "objective": "lipschitz",
            "gamma": 0.0,
            "eps_t": 0.0,
            "lam": [0.0, 0.0, 0.0, 0.1, 0.1, 0.1],
            "seed": [0, 1, 2, 0, 1, 2],
            "clean_acc": [0.90, 0.92, 0.91, 0.80, 0.83, 0.80],
        }
    )
    mean, lo, hi, n = paired_difference(models, "clean_acc", {"lam": 0.1}, {"lam": 0.0})
    d = [-0.10, -0.09, -0.11]
    sd = pd.Series(d).std(ddof=1)
    assert n == 3 and mean == pytest.approx(-0.10)
    assert hi - mean == pytest.approx(T975[2] * sd / math.sqrt(3))
    assert lo < mean < hi < 0


def test_report_builds_every_table_from_the_tidy_tables(tmp_path):
    summary, robustness = tables()
    models = per_model(summary, robustness)
    assert {"PGD 0.1", "Lipschitz cert 0.05", "interval cert 0.1"} <= set(models.columns)
    s = seed_summary(models, ["clean_acc"])
    assert (s["seeds"] == 3).all()
    summary.to_csv(tmp_path / "summary.csv", index=False)
    robustness.to_csv(tmp_path / "robustness.csv", index=False)
    text = report(tmp_path)
    for part in ("Paper grid", "Effect of lam", "Convergence record", "Degenerate rows"):
        assert part in text
