"""Tests of nemon.figures: the Pareto front, the three plots and byte-reproducible saving."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nemon.figures import (
    pareto_front,
    plot_accuracy_vs_eps,
    plot_lipschitz_vs_lambda,
    plot_pareto,
    save_figure,
)

EPS = [0.0, 0.1, 0.3]


def tables(gammas=(0.0, 0.5), lams=(0.0, 1e-3, 1e-2), seeds=(0,)):
    """Small summary and robustness tables shaped like the workflow's, with distinct values."""
    rng = np.random.default_rng(0)
    summary, robustness = [], []
    for g, l, s in itertools.product(gammas, lams, seeds):
        clean = float(rng.uniform(0.8, 0.99))
        summary.append(
            {
                "dataset": "mnist-5k",
                "gamma": g,
                "lam": l,
                "seed": s,
                "clean_acc": clean,
                "mu": g,
                "lipschitz_bound": float(rng.uniform(10, 500)),
            }
        )
        for eps in EPS:
            inv = clean * (1 - eps) * float(rng.uniform(0.8, 1.0))
            for attack, acc in (("inversion", inv), ("certified", inv * 0.5)):
                robustness.append(
                    {
                        "dataset": "mnist-5k",
                        "gamma": g,
                        "lam": l,
                        "seed": s,
                        "attack": attack,
                        "eps": eps,
                        "accuracy": acc,
                    }
                )
    return pd.DataFrame(summary), pd.DataFrame(robustness)


def brute_force_front(points):
    """Reference: a point is on the front unless another is >= in both and > in one."""
    return [
        not any(q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1]) for q in points)
        for p in points
    ]


# --- pareto_front ---------------------------------------------------------------------------


def test_pareto_front_of_a_staircase_keeps_the_corners_and_drops_the_inside():
    x = [0.9, 0.8, 0.7, 0.75, 0.6]
    y = [0.1, 0.5, 0.6, 0.4, 0.2]
    assert pareto_front(x, y).tolist() == [True, True, True, False, False]


def test_pareto_front_keeps_every_copy_of_an_exactly_tied_point():
    x = [0.9, 0.9, 0.5]
    y = [0.3, 0.3, 0.2]
    assert pareto_front(x, y).tolist() == [True, True, False]


def test_pareto_front_drops_a_point_tied_in_one_coordinate_and_worse_in_the_other():
    # (0.9, 0.2) ties (0.9, 0.3) in x and is worse in y; (0.5, 0.3) ties it in y and is worse in x.
    x = [0.9, 0.9, 0.5]
    y = [0.3, 0.2, 0.3]
    assert pareto_front(x, y).tolist() == [True, False, False]


def test_pareto_front_of_a_single_point_is_that_point():
    assert pareto_front([0.5], [0.5]).tolist() == [True]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.sampled_from([0.0, 0.5, 1.0])),
        min_size=1,
        max_size=12,
    )
)
def test_pareto_front_matches_the_definition_on_random_points_with_many_ties(points):
    x, y = zip(*points, strict=True)
    assert pareto_front(x, y).tolist() == brute_force_front(points)


def test_pareto_front_rejects_nan_and_mismatched_lengths():
    with pytest.raises(ValueError, match="finite"):
        pareto_front([0.1, float("nan")], [0.2, 0.3])
    with pytest.raises(ValueError, match="equal length"):
        pareto_front([0.1, 0.2], [0.3])


# --- the plots ------------------------------------------------------------------------------


def test_pareto_plot_has_one_marker_per_model_and_circles_the_front():
    summary, robustness = tables()
    fig = plot_pareto(summary, robustness, eps=0.1)
    ax = fig.axes[0]
    inv = robustness[(robustness["attack"] == "inversion") & (robustness["eps"] == 0.1)]
    merged = summary.merge(inv, on=["gamma", "lam", "seed"])
    n_front = int(pareto_front(merged["clean_acc"], merged["accuracy"]).sum())
    sizes = [len(c.get_offsets()) for c in ax.collections]
    # seaborn's scatter (all models) and the circles around the front
    assert sorted(sizes) == sorted([len(summary), n_front])
    staircase = ax.lines[0]
    assert len(staircase.get_xdata()) == n_front


def test_pareto_plot_names_the_missing_eps():
    summary, robustness = tables()
    with pytest.raises(ValueError, match=r"no inversion rows at eps=0\.2"):
        plot_pareto(summary, robustness, eps=0.2)


def test_pareto_plot_rejects_a_summary_model_without_robustness_rows():
    summary, robustness = tables()
    robustness = robustness[robustness["lam"] != 0.0]
    with pytest.raises(ValueError, match="no inversion row"):
        plot_pareto(summary, robustness, eps=0.1)


def test_accuracy_vs_eps_draws_a_solid_and_a_dashed_curve_per_model():
    summary, robustness = tables()
    fig = plot_accuracy_vs_eps(robustness)
    assert len(fig.axes) == summary["gamma"].nunique()  # one panel per gamma
    curves = [line for ax in fig.axes for line in ax.lines if len(line.get_xdata()) == len(EPS)]
    assert len(curves) == 2 * len(summary)
    styles = sorted(line.get_linestyle() for line in curves)
    assert styles.count("-") == len(summary) and styles.count("--") == len(summary)


def test_accuracy_vs_eps_rejects_an_unknown_attack():
    _, robustness = tables()
    robustness.loc[0, "attack"] = "pgd"
    with pytest.raises(ValueError, match="unknown attack"):
        plot_accuracy_vs_eps(robustness)


def test_lipschitz_plot_shows_every_model_and_uses_log_axes():
    summary, _ = tables(seeds=(0, 1))
    ax = plot_lipschitz_vs_lambda(summary).axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(summary)
    assert ax.get_xscale() == "symlog" and ax.get_yscale() == "log"


def test_plots_name_the_missing_column():
    summary, robustness = tables()
    with pytest.raises(ValueError, match="lipschitz_bound"):
        plot_lipschitz_vs_lambda(summary.drop(columns="lipschitz_bound"))
    with pytest.raises(ValueError, match="accuracy"):
        plot_accuracy_vs_eps(robustness.drop(columns="accuracy"))


# --- saving ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["pdf", "png"])
def test_rerendering_the_same_tables_gives_identical_bytes(tmp_path, ext):
    summary, robustness = tables()
    paths = []
    for i in range(2):
        fig = plot_pareto(summary, robustness, eps=0.1)
        paths.append(tmp_path / f"pareto{i}.{ext}")
        save_figure(fig, paths[-1])
    a, b = (p.read_bytes() for p in paths)
    assert len(a) > 1000 and a == b


def test_saved_files_carry_no_date_or_software_version(tmp_path):
    import matplotlib

    summary, _ = tables()
    fig = plot_lipschitz_vs_lambda(summary)
    save_figure(fig, tmp_path / "f.pdf", tmp_path / "f.png")
    pdf = (tmp_path / "f.pdf").read_bytes()
    png = (tmp_path / "f.png").read_bytes()
    assert b"CreationDate" not in pdf and b"Producer" not in pdf
    assert b"Software" not in png
    assert matplotlib.__version__.encode() not in pdf + png


def test_save_figure_rejects_other_formats(tmp_path):
    summary, _ = tables()
    with pytest.raises(ValueError, match=r"\.pdf or \.png"):
        save_figure(plot_lipschitz_vs_lambda(summary), tmp_path / "f.svg")
