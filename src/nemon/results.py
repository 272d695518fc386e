"""The README's results tables, computed from the committed tidy tables (nothing else).

    python -m nemon.results results/fashion-mnist     # Markdown tables for one data set

Seeds are aggregated as mean ± standard deviation. Every claim about a trend is a *paired*
difference: models of one group share their initial weights and data order (same seed), so
the difference between two grid points is taken seed by seed, and reported as its mean with a
95% t-interval over the seeds. A configuration is an experiment's grid point (:data:`KEYS`):
two experiments may train the same model with the same objective under other settings, so
every table names the experiment and every difference is taken within named experiments.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .contracts import ROBUSTNESS_COLUMNS, SUMMARY_COLUMNS

KEYS = ["experiment", "model", "objective", "gamma", "lam", "eps_t"]

# (column name, attack, eps, inputs: "test" or "subset") of the summary tables
INSTRUMENTS = [
    ("inversion 0.3", "inversion", 0.3, "test"),
    ("PGD 0.1", "pgd", 0.1, "subset"),
    ("AutoAttack 0.1", "autoattack", 0.1, "subset"),
    ("Lipschitz cert 0.05", "certified_lipschitz", 0.05, "test"),
    ("interval cert 0.05", "certified_interval", 0.05, "test"),
    ("interval cert 0.1", "certified_interval", 0.1, "test"),
]

# 97.5% quantile of Student's t for n - 1 degrees of freedom (n = 2..10)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def load(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``summary.csv`` and ``robustness.csv`` of ``folder``; a table without the columns of
    :data:`~nemon.contracts.SUMMARY_COLUMNS` / ``ROBUSTNESS_COLUMNS`` (e.g. one written before
    the ``experiment`` column) is an error naming it and the missing columns."""
    folder = Path(folder)
    tables = []
    for name, columns in (("summary.csv", SUMMARY_COLUMNS), ("robustness.csv", ROBUSTNESS_COLUMNS)):
        path = folder / name
        if not path.is_file():
            raise ValueError(
                f"{path} does not exist: give a folder holding summary.csv and "
                "robustness.csv (results/<dataset>), made by the workflow"
            )
        df = pd.read_csv(path)
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(
                f"{path} lacks the column(s) {missing} (a table of an older layout); rebuild it "
                "with the workflow (snakemake ... --config regenerate=true, or output_prefix=...)"
            )
        tables.append(df)
    return tables[0], tables[1]


def per_model(summary: pd.DataFrame, robustness: pd.DataFrame) -> pd.DataFrame:
    """One row per model: its summary columns and one column per instrument of INSTRUMENTS."""
    out = summary.copy()
    for name, attack, eps, inputs in INSTRUMENTS:
        rows = robustness[(robustness["attack"] == attack) & (robustness["eps"] == eps)]
        on_test = rows["inputs"] == "test"
        rows = rows[on_test] if inputs == "test" else rows[~on_test]
        if rows.empty:
            continue
        col = rows[[*KEYS, "seed", "accuracy", "degenerate"]].rename(
            columns={"accuracy": name, "degenerate": f"{name} degenerate"}
        )
        out = out.merge(col, on=[*KEYS, "seed"], how="left", validate="one_to_one")
    return out


def fmt(mean: float, sd: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd > 0 else f"{mean:.{digits}f}"


def seed_summary(models: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean ± SD over seeds of ``columns`` per configuration (and the number of seeds)."""
    g = models.groupby(KEYS, sort=True)
    rows = []
    for key, part in g:
        row = dict(zip(KEYS, key, strict=True))
        row["seeds"] = len(part)
        for c in columns:
            if c in part:
                row[c] = fmt(part[c].mean(), part[c].std(ddof=1) if len(part) > 1 else 0.0)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_difference(
    models: pd.DataFrame, column: str, change: dict, base: dict, by: Sequence[str] = ("seed",)
) -> tuple[float, float, float, int]:
    """Mean of ``column``(change) - ``column``(base), seed by seed, and its 95% t-interval.

    ``change`` and ``base`` must each select at most one model per seed (name the experiment:
    two experiments can hold the same model, objective and weight)."""

    def pick(sel: dict) -> pd.Series:
        m = models
        for k, v in sel.items():
            m = m[m[k] == v]
        if m.duplicated(list(by)).any():
            raise ValueError(
                f"{sel} selects more than one model per {', '.join(by)} "
                f"({sorted(set(m['experiment'])) if 'experiment' in m else 'no experiment'}); "
                "add the experiment to the selection"
            )
        return m.set_index(list(by))[column]

    d = (pick(change) - pick(base)).dropna()
    n = len(d)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(d.mean())
    if n == 1:
        return mean, math.nan, math.nan, 1
    half = T975.get(n - 1, 1.96) * float(d.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def fmt_diff(mean: float, lo: float, hi: float, n: int) -> str:
    if n == 0:
        return "-"
    if n == 1 or not math.isfinite(lo):
        return f"{mean:+.3f} (n = 1)"
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_cell(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _experiments(models: pd.DataFrame, model: str, objective: str) -> list[str]:
    """The experiments of ``models`` that train ``model`` with ``objective``, by name."""
    sel = models[(models["model"] == model) & (models["objective"] == objective)]
    return sorted(sel["experiment"].unique())


def report(folder: str | Path) -> str:
    """Every README table of one data set, as Markdown."""
    summary, robustness = load(folder)
    models = per_model(summary, robustness)
    inst = [name for name, *_ in INSTRUMENTS if name in models]
    parts = []
    is_paper = (models["model"] == "nemon") & (models["objective"] == "lipschitz")
    paper = models[is_paper]
    cols = ["clean_acc", "lipschitz_bound", "lipschitz_tightness", *inst]
    t = seed_summary(paper, cols).drop(columns=["model", "objective", "eps_t"])
    parts.append(
        "Paper grid (experiments of nemon with the lipschitz objective), mean ± SD over seeds:\n\n"
        + markdown(t)
    )
    others = pd.concat([models[~is_paper], paper[paper["lam"].isin([0.0, 0.01])]])
    t = seed_summary(others, ["clean_acc", *inst])
    parts.append("Certified training and baselines, mean ± SD over seeds:\n\n" + markdown(t))
    rows = []
    for experiment in _experiments(models, "nemon", "lipschitz"):
        mine = paper[paper["experiment"] == experiment]
        for gamma in sorted(mine["gamma"].unique()):
            for lam in sorted(mine.loc[mine["gamma"] == gamma, "lam"].unique()):
                if lam == 0:
                    continue
                row = {"experiment": experiment, "gamma": gamma, "lam": lam}
                for c in ["clean_acc", *[i for i in inst if i != "interval cert 0.1"]]:
                    base = {"experiment": experiment, "gamma": gamma, "lam": 0.0}
                    change = {**base, "lam": lam}
                    row[c] = fmt_diff(*paired_difference(models, c, change, base))
                rows.append(row)
    parts.append(
        "Effect of lam against lam = 0 (same experiment, gamma and seed): mean paired "
        "difference [95% t-interval]:\n\n" + markdown(pd.DataFrame(rows))
    )
    rows = []
    for nemon_exp in _experiments(models, "nemon", "interval"):
        nemons = models[models["experiment"] == nemon_exp]
        for mlp_exp in _experiments(models, "mlp", "interval"):
            mlps = models[models["experiment"] == mlp_exp]
            common = sorted(set(nemons["eps_t"]) & set(mlps["eps_t"]))
            for eps_t in common:
                for gamma in sorted(nemons["gamma"].unique()):
                    row = {
                        "nemon": nemon_exp,
                        "mlp": mlp_exp,
                        "eps_t": eps_t,
                        "nemon gamma": gamma,
                    }
                    for c in ["clean_acc", *inst]:
                        change = {"experiment": nemon_exp, "gamma": gamma, "eps_t": eps_t}
                        base = {"experiment": mlp_exp, "eps_t": eps_t}
                        row[c] = fmt_diff(*paired_difference(models, c, change, base))
                    rows.append(row)
    if rows:
        parts.append(
            "Interval-trained NEMON minus interval-trained MLP, for every pair of such "
            "experiments (same eps_t and seed):\n\n" + markdown(pd.DataFrame(rows))
        )
    rows = _same_model_pairs(models, inst)
    if rows:
        parts.append(
            "Experiments of one model and objective against each other (width, epochs, "
            "schedule), at every common gamma and weight, seed by seed: mean paired difference "
            "[95% t-interval]:\n\n" + markdown(pd.DataFrame(rows))
        )
    conv = (
        models.groupby(["experiment", "model", "objective"])
        .agg(
            models=("seed", "size"),
            converged=("training_converged", "sum"),
            max_loss_change=("loss_rel_change", "max"),
            max_bound_change=("bound_rel_change", "max"),
        )
        .reset_index()
    )
    parts.append("Convergence record (last epoch):\n\n" + markdown(conv))
    deg = robustness[robustness["degenerate"] & (robustness["inputs"] == "test")]
    counts = deg.groupby(["attack", "eps"]).size().reset_index(name="degenerate models")
    parts.append(
        "Degenerate rows (one class >= 90% of predictions), full test set:\n\n" + markdown(counts)
    )
    return "\n\n".join(parts)


def _same_model_pairs(models: pd.DataFrame, inst: Sequence[str]) -> list[dict]:
    """Paired differences between experiments that train the same model with the same
    objective (they differ in width, epochs or schedule), at their common (gamma, weight)."""
    rows = []
    pairs = models.groupby(["model", "objective"])["experiment"].unique()
    for (model, _objective), names in pairs.items():
        names = sorted(names)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                ma, mb = models[models["experiment"] == a], models[models["experiment"] == b]
                points = sorted(
                    set(map(tuple, ma[["gamma", "lam", "eps_t"]].to_numpy()))
                    & set(map(tuple, mb[["gamma", "lam", "eps_t"]].to_numpy()))
                )
                for gamma, lam, eps_t in points:
                    at = {"gamma": gamma, "lam": lam, "eps_t": eps_t}
                    row = {"model": model, "change": b, "base": a, **at}
                    for c in ["clean_acc", *inst]:
                        diff = paired_difference(
                            models, c, {"experiment": b, **at}, {"experiment": a, **at}
                        )
                        row[c] = fmt_diff(*diff)
                    rows.append(row)
    return rows


# The README's headline: (label, experiment, gamma, lam, eps_t) per row, where present
HEADLINE_ROWS = [
    ("NEMON, plain", "paper", 0.0, 0.0, 0.0),
    ("NEMON, lam 1e-2", "paper", 0.0, 0.01, 0.0),
    ("NEMON, lam 3e-2", "paper", 0.0, 0.03, 0.0),
    ("NEMON, certified training (30 epochs)", "certified", 0.0, 0.0, 0.1),
    ("NEMON, the follow-up's schedule (60 epochs)", "followup-nemon", 0.0, 0.0, 0.1),
    ("MLP-100, IBP (30 epochs)", "mlp-ibp", 0.0, 0.0, 0.1),
    ("MLP-100, IBP (40 epochs)", "followup-mlp-wide", 0.0, 0.0, 0.1),
    ("MLP-25, IBP (40 epochs, the follow-up's)", "followup-mlp", 0.0, 0.0, 0.1),
    ("MON (l2 monotone), plain", "mon", 0.9, 0.0, 0.0),
]
HEADLINE_COLUMNS = ["PGD 0.1", "AutoAttack 0.1", "Lipschitz cert 0.05", "interval cert 0.1"]


def headline(folders: Sequence[str | Path]) -> str:
    """The README's one table: a few configurations of every data set given, mean ± SD."""
    return markdown(_headline_table(folders))


def _headline_table(folders: Sequence[str | Path]) -> pd.DataFrame:
    """:func:`headline`'s rows, formatted, one per configuration present in each folder."""
    rows = []
    for folder in folders:
        summary, robustness = load(folder)
        models = per_model(summary, robustness)
        dataset = str(summary["dataset"].iloc[0])
        for label, experiment, gamma, lam, eps_t in HEADLINE_ROWS:
            sel = models[
                (models["experiment"] == experiment)
                & (models["gamma"] == gamma)
                & (models["lam"] == lam)
                & (models["eps_t"] == eps_t)
            ]
            if sel.empty:
                continue
            row = {"data set": dataset, "model": label, "seeds": len(sel)}
            for c in ["clean_acc", *HEADLINE_COLUMNS]:
                v = sel[c] if c in sel else pd.Series([math.nan])  # not evaluated: "-"
                sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
                row["clean" if c == "clean_acc" else c] = fmt(float(v.mean()), sd)
            rows.append(row)
    return pd.DataFrame(rows)


def readme(folder: str | Path) -> str:
    """``results/<dataset>/README.md``: every table of :func:`report`, under a heading that says
    where they come from (the workflow writes it; a test holds the committed one to this)."""
    folder = Path(folder)
    summary, _ = load(folder)
    dataset = str(summary["dataset"].iloc[0])
    return (
        f"# {dataset}: every results table\n\n"
        "Generated from `summary.csv` and `robustness.csv` in this folder by "
        f"`python -m nemon.results results/{dataset}` (the workflow's rule `present`); do not "
        "edit. Means ± standard deviations over seeds; differences are paired seed by seed, "
        "with their 95% t-interval.\n\n" + report(folder) + "\n"
    )


def front_page(folder: str | Path, figure: str | Path) -> str:
    """The report's first page (HTML): the headline table of the data set and its Pareto
    figure, embedded, so that the page needs nothing beside it."""
    import base64
    import html

    table = _headline_table([folder])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r) + "</tr>"
        for r in table.itertuples(index=False)
    )
    png = base64.b64encode(Path(figure).read_bytes()).decode()
    return (
        "<p><b>The headline</b> (mean ± SD over seeds; every table: "
        "<code>results/&lt;dataset&gt;/README.md</code>):</p>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
        f'<p><img alt="Pareto fronts" style="max-width: 100%" '
        f'src="data:image/png;base64,{png}"/></p>\n'
    )


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m nemon.results",
        description="The README's results tables of one data set, from its summary.csv and "
        "robustness.csv.",
    )
    p.add_argument(
        "folder", nargs="+", help="results/<dataset> (holding summary.csv and robustness.csv)"
    )
    p.add_argument(
        "--headline",
        action="store_true",
        help="the README's one table, a few configurations of every data set given",
    )
    args = p.parse_args(argv)
    try:
        if args.headline:
            text = headline(args.folder)
        else:
            text = "\n\n".join(report(f) for f in args.folder)
    except ValueError as e:
        p.exit(1, f"error: {e}\n")
    print(text)


if __name__ == "__main__":
    main()
