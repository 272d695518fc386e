"""Tests of nemon.figures: every number drawn comes from the tidy tables, and only from them.

The tables are synthetic but have exactly the columns of :mod:`nemon.contracts`
(``SUMMARY_COLUMNS``, ``ROBUSTNESS_COLUMNS``): several experiments, models and objectives (two
experiments of the same model, objective and weight), the MLP, seeds 0-2, every instrument on
the full test set and on the attacks' subset, and some degenerate rows.
The plots are checked against independent computations from those tables (which rows, which
input set, which aggregate), then as rendered bytes: identical for identical tables, changed by
a value the figure shows, unchanged by anything it does not.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.collections import PathCollection, PolyCollection

from nemon.contracts import (
    INSTRUMENTS,
    POINT_KEYS,
    ROBUSTNESS_COLUMNS,
    SUMMARY_COLUMNS,
    point_keys,
)
from nemon.figures import (
    INSTRUMENT_LABELS,
    config_label,
    pareto_front,
    plot_accuracy_vs_eps,
    plot_lipschitz,
    plot_pareto,
    save_figure,
    seed_means,
)

# experiment, model, objective, gamma, weights (lam for lipschitz, eps_t for interval)
CONFIGS = [
    ("paper", "nemon", "lipschitz", 0.0, (0.0, 1e-3, 1e-2)),
    ("paper", "nemon", "lipschitz", 0.5, (0.0, 1e-3)),
    ("certified", "nemon", "interval", 0.0, (0.05, 0.1)),
    ("unweighted", "nemon-unweighted", "lipschitz", 0.0, (0.0, 1e-3)),
    ("mlp", "mlp", "lipschitz", 0.0, (0.0, 1e-3)),
    ("mlp-ibp", "mlp", "interval", 0.0, (0.1,)),
    # the same model, objective and weight as mlp-ibp: told apart by the experiment alone
    ("followup-mlp", "mlp", "interval", 0.0, (0.1,)),
]
SMALL = [CONFIGS[1], CONFIGS[5]]  # for the rendering tests: fewer panels, faster
SEEDS = (0, 1, 2)
EPS = (0.0, 0.05, 0.1, 0.3)  # inversion and certificates
ATTACK_EPS = (0.05, 0.1)  # PGD and AutoAttack
SUBSET = "subset-50"
DEGENERATE = ("paper", 0.0, 1e-2, 1)  # experiment, gamma, weight, seed
CONFIG = ["experiment", "model", "objective", "gamma", "lam", "eps_t"]


def tables(configs=CONFIGS, seeds=SEEDS):
    """``(summary, robustness)`` with the workflow's exact columns and distinct values.

    The degenerate model predicts one class from ``eps = 0.1`` on (accuracy 0.1, 97 % of the
    predictions in one class); its rows say so.
    """
    rng = np.random.default_rng(0)
    summary, robustness = [], []
    for (experiment, model, objective, gamma, weights), seed in itertools.product(configs, seeds):
        for w in weights:
            keys = point_keys("mnist-5k", experiment, model, objective, gamma, w, seed)
            clean = float(rng.uniform(0.8, 0.99))
            summary.append(
                {
                    **keys,
                    "clean_acc": clean,
                    "mu": gamma,
                    "lipschitz_bound": float(rng.uniform(5, 50) / (1 + 100 * keys["lam"])),
                    "lipschitz_lower": float(rng.uniform(1, 4)),
                    "lipschitz_tightness": float(rng.uniform(1.5, 20)),
                    "fwd_iters_mean": 12.5,
                    "fwd_iters_max": 30,
                    "bwd_iters_mean": 10.0,
                    "bwd_iters_max": 25,
                    "not_converged": 0,
                    "clean_not_converged": 0,
                    "epochs": 5,
                    "final_train_loss": 0.2,
                    "loss_rel_change": 0.01,
                    "bound_rel_change": 0.02,
                    "training_converged": True,
                    "train_seconds": 100.0,
                    "evaluation_seconds": 50.0,
                }
            )
            degenerate_model = (experiment, gamma, w, seed) == DEGENERATE
            rates = {
                "inversion": rng.uniform(0.5, 1.5),
                "certified_lipschitz": rng.uniform(4, 8),
                "certified_interval": rng.uniform(2, 4),
                "pgd": rng.uniform(2, 3),
                "autoattack": rng.uniform(3, 4),
            }
            for inputs, images in (("test", 1000), (SUBSET, 50)):
                shift = 0.0 if inputs == "test" else float(rng.uniform(-0.05, 0.05))
                grid = [("clean", 0.0)] + [(a, e) for a in INSTRUMENTS if a != "clean" for e in EPS]
                for attack, eps in grid:
                    costly = attack in ("pgd", "autoattack")  # on their subset, fewer radii
                    if costly and (inputs == "test" or eps not in ATTACK_EPS):
                        continue
                    acc = min(max(clean + shift - (rates.get(attack, 0.0) * eps), 0.0), 1.0)
                    top = float(rng.uniform(0.1, 0.3))
                    degenerate = degenerate_model and eps >= 0.1
                    if degenerate:
                        acc, top = 0.1, 0.97
                    robustness.append(
                        {
                            **keys,
                            "attack": attack,
                            "eps": eps,
                            "inputs": inputs,
                            "images": images,
                            "accuracy": acc,
                            "top_class_fraction": top,
                            "degenerate": degenerate,
                            "not_converged": 0,
                            "violations": 0,
                        }
                    )
    summary = pd.DataFrame(summary, columns=SUMMARY_COLUMNS)
    robustness = pd.DataFrame(robustness, columns=ROBUSTNESS_COLUMNS)
    assert not summary.isna().any().any() and not robustness.isna().any().any()
    return summary, robustness


def weight(df):
    return np.where(df["objective"] == "lipschitz", df["lam"], df["eps_t"])


def family_of(experiment, model, gamma):
    """The panel label a configuration is drawn in (independent of the module's helper)."""
    return experiment + ("" if model == "mlp" else f" γ={gamma:g}")


def render(fig, tmp_path, name="f.pdf"):
    save_figure(fig, tmp_path / name)
    return (tmp_path / name).read_bytes()


def brute_force_front(points):
    """Reference: a point is on the front unless another is >= in both and > in one."""
    return [
        not any(q[0] >= p[0] and q[1] >= p[1] and (q[0] > p[0] or q[1] > p[1]) for q in points)
        for p in points
    ]


def offsets(collections):
    return {tuple(np.round(p, 12)) for c in collections for p in np.asarray(c.get_offsets())}


def hollow(c):
    return isinstance(c, PathCollection) and len(c.get_facecolors()) == 0


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


# --- seed_means and config_label --------------------------------------------------------------
def test_seed_means_are_the_mean_sample_sd_and_count_over_seeds():
    _, robustness = tables()
    by = [*CONFIG, "attack", "inputs", "eps"]
    m = seed_means(robustness, "accuracy", by)
    assert len(m) == len(robustness.groupby(by)) and list(m.columns) == [
        *by,
        "mean",
        "std",
        "count",
    ]
    assert (m["count"] == len(SEEDS)).all()
    for row in m.sample(25, random_state=0).itertuples():
        sel = np.ones(len(robustness), dtype=bool)
        for k in by:
            sel &= (robustness[k] == getattr(row, k)).to_numpy()
        vals = robustness.loc[sel, "accuracy"].to_numpy()
        assert row.mean == pytest.approx(vals.mean(), abs=1e-15)
        assert row.std == pytest.approx(vals.std(ddof=1), abs=1e-15)


def test_seed_means_of_a_single_seed_have_zero_spread_not_nan():
    _, robustness = tables(seeds=(0,))
    m = seed_means(robustness, "accuracy", [*CONFIG, "attack", "inputs", "eps"])
    assert (m["std"] == 0).all() and (m["count"] == 1).all()


@pytest.mark.parametrize(
    "keys, label",
    [
        (("paper", "nemon", "lipschitz", 0.5, 1e-3, 0.0), "paper (nemon lipschitz) γ=0.5 λ=0.001"),
        (("paper", "nemon", "lipschitz", 0.0, 0.0, 0.0), "paper (nemon lipschitz) γ=0 λ=0"),
        (
            ("x", "nemon-unweighted", "interval", -0.5, 0.0, 0.05),
            "x (nemon-unweighted interval) γ=-0.5 ε_t=0.05",
        ),
        (("mlp-ibp", "mlp", "interval", 0.0, 0.0, 0.1), "mlp-ibp (mlp interval) ε_t=0.1"),
        (("mlp", "mlp", "lipschitz", 0.0, 1e-4, 0.0), "mlp (mlp lipschitz) λ=0.0001"),
    ],
)
def test_config_label_names_experiment_model_objective_gamma_and_the_weight(keys, label):
    assert config_label(*keys) == label


def test_config_labels_tell_every_configuration_of_the_grid_apart():
    summary, _ = tables()
    configs = summary[CONFIG].drop_duplicates()
    labels = [config_label(*row) for row in configs.itertuples(index=False)]
    assert len(set(labels)) == len(configs) == sum(len(c[4]) for c in CONFIGS)
    # the weight of the other objective is not part of a configuration
    assert config_label("paper", "nemon", "lipschitz", 0.5, 1e-3, 0.2) == config_label(
        "paper", "nemon", "lipschitz", 0.5, 1e-3, 0.0
    )


# --- plot_accuracy_vs_eps ---------------------------------------------------------------------
def test_accuracy_vs_eps_draws_the_seed_means_of_each_instrument_on_its_own_input_set():
    _, robustness = tables()
    fig = plot_accuracy_vs_eps(robustness, title="mnist-5k")
    assert fig.get_suptitle().startswith("mnist-5k")
    families = sorted({family_of(c[0], c[1], c[3]) for c in CONFIGS})
    instruments = [i for i in INSTRUMENTS if i != "clean"]  # the contract's order
    axes = np.array(fig.axes).reshape(len(families), len(instruments))
    assert [ax.get_title() for ax in axes[0]] == [INSTRUMENT_LABELS[i] for i in instruments]
    assert [ax.get_ylabel().split("\n")[0] for ax in axes[:, 0]] == families

    df = robustness.assign(
        family=[
            family_of(*k) for k in robustness[["experiment", "model", "gamma"]].itertuples(False)
        ],
        weight=weight(robustness),
    )
    expected_hollow = set()
    for (r, fam), (c, inst) in itertools.product(enumerate(families), enumerate(instruments)):
        ax = axes[r, c]
        inputs = SUBSET if inst in ("pgd", "autoattack") else "test"
        rows = df[(df["family"] == fam) & (df["attack"] == inst) & (df["inputs"] == inputs)]
        weights = sorted(rows["weight"].unique())
        assert [line.get_label() for line in ax.lines] == [f"{w:g}" for w in weights]
        bands = [p for p in ax.collections if isinstance(p, PolyCollection)]
        assert len(bands) == len(weights)
        for line, band, w in zip(ax.lines, bands, weights, strict=True):
            g = rows[rows["weight"] == w].groupby("eps")["accuracy"]
            mean, sd = g.mean(), g.std()
            np.testing.assert_allclose(line.get_xdata(), mean.index, rtol=0, atol=0)
            np.testing.assert_allclose(line.get_ydata(), mean.to_numpy(), rtol=0, atol=1e-15)
            ys = band.get_paths()[0].vertices[:, 1]
            for edge in (mean - sd, mean + sd):
                assert all(np.isclose(ys, e, rtol=0, atol=1e-12).any() for e in edge)
            deg = rows[(rows["weight"] == w) & rows["degenerate"]]["eps"].unique()
            expected_hollow |= {(r, c, e, round(mean[e], 12)) for e in deg}
        drawn = offsets(p for p in ax.collections if hollow(p))
        assert drawn == {(e, m) for (rr, cc, e, m) in expected_hollow if (rr, cc) == (r, c)}
    assert len(expected_hollow) == 2 * len(instruments) - 2  # eps 0.1 and 0.3; attacks only 0.1


def test_accuracy_vs_eps_facets_only_the_instruments_present():
    _, robustness = tables(SMALL)
    keep = robustness["attack"].isin(["clean", "inversion", "certified_interval"])
    fig = plot_accuracy_vs_eps(robustness[keep])
    assert len(fig.axes) == 2 * 2
    assert [ax.get_title() for ax in fig.axes[:2]] == [
        INSTRUMENT_LABELS["inversion"],
        INSTRUMENT_LABELS["certified_interval"],
    ]


# --- plot_pareto -----------------------------------------------------------------------------
def expected_pareto_points(summary, rows):
    """Per configuration: seed means of clean and of ``rows``' accuracy, and any degenerate."""
    df = summary.merge(rows[[*POINT_KEYS, "accuracy", "degenerate"]], on=POINT_KEYS)
    assert len(df) == len(summary)
    g = df.groupby(CONFIG)
    pts = pd.DataFrame(
        {"clean": g["clean_acc"].mean(), "rob": g["accuracy"].mean(), "deg": g["degenerate"].any()}
    ).reset_index()
    return pts


def test_pareto_panels_show_pgd_best_certificate_and_inversion_seed_means_and_their_fronts():
    summary, robustness = tables()
    eps, inversion_eps = 0.1, 0.3
    fig = plot_pareto(summary, robustness, eps=eps, inversion_eps=inversion_eps, title="mnist-5k")
    assert len(fig.axes) == 3
    pgd_ax, cert_ax, inv_ax = fig.axes
    assert pgd_ax.get_ylabel() == "PGD accuracy, ε = 0.1 (50 images)"
    assert cert_ax.get_ylabel().startswith("certified accuracy, ε = 0.1")
    assert inv_ax.get_ylabel().startswith("inversion-attack accuracy, ε = 0.3")

    test = robustness[robustness["inputs"] == "test"]
    pgd_rows = robustness[(robustness["attack"] == "pgd") & (robustness["eps"] == eps)]
    certs = test[test["attack"].str.startswith("certified") & (test["eps"] == eps)]
    best = certs.groupby(POINT_KEYS, as_index=False).agg(
        accuracy=("accuracy", "max"), degenerate=("degenerate", "any")
    )
    inv_rows = test[(test["attack"] == "inversion") & (test["eps"] == inversion_eps)]
    for ax, rows in ((pgd_ax, pgd_rows), (cert_ax, best), (inv_ax, inv_rows)):
        pts = expected_pareto_points(summary, rows)
        scatter = [c for c in ax.collections if isinstance(c, PathCollection)]
        front = [c for c in scatter if c.get_label() == "Pareto front"]
        points = [c for c in scatter if c.get_label() != "Pareto front"]
        want = {(round(a, 12), round(b, 12)) for a, b in zip(pts["clean"], pts["rob"], strict=True)}
        assert offsets(points) == want
        got_hollow = offsets(c for c in points if hollow(c))
        assert len(got_hollow) == 1  # the degenerate model (one seed suffices), in every panel
        assert got_hollow == {
            (round(a, 12), round(b, 12))
            for a, b in pts.loc[pts["deg"], ["clean", "rob"]].to_numpy()
        }
        on_front = pts[brute_force_front(list(zip(pts["clean"], pts["rob"], strict=True)))]
        assert offsets(front) == {
            (round(a, 12), round(b, 12)) for a, b in on_front[["clean", "rob"]].to_numpy()
        }
        staircase = ax.lines[0]
        assert sorted(staircase.get_xdata()) == pytest.approx(sorted(on_front["clean"]))
    # the legend names every experiment
    legend = {t.get_text() for t in inv_ax.get_legend().get_texts()}
    assert legend == {c[0] for c in CONFIGS} | {"Pareto front"}


def test_pareto_without_an_inversion_row_at_the_requested_eps_is_a_clear_error():
    summary, robustness = tables(SMALL)
    with pytest.raises(ValueError, match=r"no inversion rows at eps=0\.2 .*inversion_pareto_eps"):
        plot_pareto(summary, robustness, eps=0.1, inversion_eps=0.2)


def test_pareto_without_an_inversion_row_lists_the_available_eps_as_plain_numbers():
    summary, robustness = tables(SMALL)
    with pytest.raises(ValueError, match=r"\(it has \[0\.0, 0\.05, 0\.1, 0\.3\]\)"):
        plot_pareto(summary, robustness, eps=0.1, inversion_eps=0.2)


def test_pareto_rejects_a_summary_model_without_robustness_rows():
    summary, robustness = tables(SMALL)
    gone = (robustness["lam"] == 1e-3) & (robustness["attack"] == "inversion")
    with pytest.raises(ValueError, match=r"3 model\(s\) of the summary have no row"):
        plot_pareto(summary, robustness[~gone], eps=0.1, inversion_eps=0.3)


# --- plot_lipschitz --------------------------------------------------------------------------
def test_lipschitz_plot_draws_the_seed_means_of_the_lipschitz_objective_against_lam():
    summary, _ = tables()
    fig = plot_lipschitz(summary, title="mnist-5k")
    lip = summary[summary["objective"] == "lipschitz"]
    for ax, col in zip(fig.axes[:2], ("lipschitz_bound", "lipschitz_tightness"), strict=True):
        # one curve (an errorbar container: line, caps, bars) per experiment and gamma
        curves = {c.get_label().strip(): c.lines[0] for c in ax.containers}
        want = {}
        for (experiment, model, gamma), rows in lip.groupby(["experiment", "model", "gamma"]):
            want[family_of(experiment, model, gamma)] = rows
        assert sorted(curves) == sorted(want)
        for name, rows in want.items():
            m = rows.groupby("lam")[col].mean()
            np.testing.assert_allclose(
                np.asarray(curves[name].get_xdata(), float), m.index, rtol=0, atol=0
            )
            np.testing.assert_allclose(
                np.asarray(curves[name].get_ydata(), float), m.to_numpy(), rtol=0, atol=1e-12
            )
        assert ax.get_xscale() == "symlog" and ax.get_yscale() == "log"
        assert ax.xaxis.get_transform().linthresh == 1e-3  # the smallest positive lam
    assert fig.get_suptitle().startswith("mnist-5k")


def test_lipschitz_plot_needs_a_model_of_the_lipschitz_objective():
    summary, _ = tables()
    with pytest.raises(ValueError, match="no model of the lipschitz objective"):
        plot_lipschitz(summary[summary["objective"] == "interval"])


# --- missing columns and rows ---------------------------------------------------------------
@pytest.mark.parametrize("column", ["accuracy", "degenerate", "inputs", "eps_t", "attack"])
def test_plots_name_a_missing_robustness_column(column):
    summary, robustness = tables(SMALL)
    with pytest.raises(ValueError, match=rf"robustness table lacks column\(s\) \['{column}'\]"):
        plot_accuracy_vs_eps(robustness.drop(columns=column))
    with pytest.raises(ValueError, match=rf"robustness table lacks column\(s\) \['{column}'\]"):
        plot_pareto(summary, robustness.drop(columns=column), eps=0.1, inversion_eps=0.3)


@pytest.mark.parametrize("column", ["clean_acc", "lipschitz_bound", "lipschitz_tightness", "seed"])
def test_plots_name_a_missing_summary_column(column):
    summary, robustness = tables(SMALL)
    uses = {"clean_acc": "pareto", "lipschitz_bound": "lip", "lipschitz_tightness": "lip"}
    pattern = rf"summary table lacks column\(s\) \['{column}'\]"
    if uses.get(column, "pareto") == "pareto":
        with pytest.raises(ValueError, match=pattern):
            plot_pareto(summary.drop(columns=column), robustness, eps=0.1, inversion_eps=0.3)
    if uses.get(column, "lip") == "lip":
        with pytest.raises(ValueError, match=pattern):
            plot_lipschitz(summary.drop(columns=column))


def test_plots_reject_empty_tables():
    summary, robustness = tables(SMALL)
    with pytest.raises(ValueError, match="robustness table has no rows"):
        plot_accuracy_vs_eps(robustness.iloc[:0])
    with pytest.raises(ValueError, match="summary table has no rows"):
        plot_lipschitz(summary.iloc[:0])


# --- drawn from the tables only ------------------------------------------------------------------
def test_figures_change_with_a_value_they_show_and_with_nothing_else(tmp_path):
    summary, robustness = tables(SMALL)

    def accuracy(r):
        return render(plot_accuracy_vs_eps(r), tmp_path, "a.pdf")

    def pareto(s, r):
        return render(plot_pareto(s, r, eps=0.1, inversion_eps=0.3), tmp_path, "p.pdf")

    def lipschitz(s):
        return render(plot_lipschitz(s), tmp_path, "l.pdf")

    base = accuracy(robustness), pareto(summary, robustness), lipschitz(summary)

    # columns no figure reads, rows a figure does not show, and the row order
    s, r = summary.copy(), robustness.copy()
    s[["mu", "train_seconds", "fwd_iters_max", "final_train_loss", "clean_not_converged"]] += 3
    s.loc[s["objective"] == "interval", "lipschitz_bound"] *= 5  # plotted: lipschitz only
    r[["top_class_fraction", "violations"]] = 0.5, 7
    r.loc[r["attack"] == "clean", "accuracy"] = 0.01
    r.loc[(r["attack"] == "certified_interval") & (r["inputs"] == SUBSET), "accuracy"] = 0.0
    assert accuracy(r.sample(frac=1.0, random_state=1)) == base[0]
    assert lipschitz(s.sample(frac=1.0, random_state=1)) == base[2]
    r.loc[r["attack"] == "autoattack", "accuracy"] = 0.02
    r.loc[(r["attack"] == "inversion") & (r["eps"] == 0.05), "accuracy"] = 0.03
    assert pareto(s.sample(frac=1.0, random_state=2), r.sample(frac=1.0, random_state=2)) == base[1]

    # one value of one row, in turn, of what each figure shows
    one = robustness.index[
        (robustness["attack"] == "inversion")
        & (robustness["eps"] == 0.3)
        & (robustness["inputs"] == "test")
    ][0]
    r = robustness.copy()
    r.loc[one, "accuracy"] -= 0.2
    assert accuracy(r) != base[0] and pareto(summary, r) != base[1]
    r = robustness.copy()
    r.loc[one, "degenerate"] = True
    assert accuracy(r) != base[0] and pareto(summary, r) != base[1]
    s = summary.copy()
    s.loc[0, "clean_acc"] -= 0.1
    assert pareto(s, robustness) != base[1]
    s = summary.copy()
    s.loc[s.index[s["objective"] == "lipschitz"][0], "lipschitz_bound"] *= 2
    assert lipschitz(s) != base[2]


def test_points_from_unconverged_solves_are_marked(tmp_path):
    summary, robustness = tables(SMALL)
    base = render(plot_pareto(summary, robustness, eps=0.1, inversion_eps=0.3), tmp_path)
    r = robustness.copy()
    r.loc[(r["attack"] == "inversion") & (r["eps"] == 0.3), "not_converged"] = 4
    assert render(plot_pareto(summary, r, eps=0.1, inversion_eps=0.3), tmp_path) != base


# --- saving ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["pdf", "png"])
def test_rerendering_the_same_tables_gives_identical_bytes(tmp_path, ext):
    summary, robustness = tables(SMALL)
    paths = []
    for i in range(2):
        fig = plot_pareto(summary, robustness, eps=0.1, inversion_eps=0.3, title="mnist-5k")
        paths.append(tmp_path / f"pareto{i}.{ext}")
        save_figure(fig, paths[-1])
    a, b = (p.read_bytes() for p in paths)
    assert len(a) > 1000 and a == b


def test_saved_files_carry_no_date_or_software_version(tmp_path):
    import matplotlib

    summary, _ = tables(SMALL)
    fig = plot_lipschitz(summary)
    save_figure(fig, tmp_path / "f.pdf", tmp_path / "f.png")
    pdf = (tmp_path / "f.pdf").read_bytes()
    png = (tmp_path / "f.png").read_bytes()
    assert pdf.startswith(b"%PDF") and png.startswith(b"\x89PNG")
    assert b"CreationDate" not in pdf and b"Producer" not in pdf
    assert b"Software" not in png
    assert matplotlib.__version__.encode() not in pdf + png


def test_save_figure_rejects_other_formats(tmp_path):
    summary, _ = tables(SMALL)
    with pytest.raises(ValueError, match=r"\.pdf or \.png"):
        save_figure(plot_lipschitz(summary), tmp_path / "f.svg")
    assert not (tmp_path / "f.svg").exists()
