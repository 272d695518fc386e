"""nemon.results: the README's tables, from the tidy tables alone, with paired intervals."""

import math

import pandas as pd
import pytest
from test_figures import tables

from nemon.results import T975, main, paired_difference, per_model, report, seed_summary


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


def test_a_paired_difference_refuses_a_selection_of_two_experiments():
    # mlp-ibp and followup-mlp both hold mlp/interval at eps_t 0.1: a seed would pair with two
    summary, _ = tables()
    change = {"model": "mlp", "objective": "interval", "eps_t": 0.1}
    base = {"experiment": "certified", "eps_t": 0.1}
    with pytest.raises(ValueError, match=r"more than one model per seed.*followup-mlp.*mlp-ibp"):
        paired_difference(summary, "clean_acc", change, base)
    mean, *_, n = paired_difference(summary, "clean_acc", {**change, "experiment": "mlp-ibp"}, base)
    assert n == 3 and math.isfinite(mean)


def test_the_report_names_experiments_and_pairs_them_by_name(tmp_path):
    summary, robustness = tables()
    summary.to_csv(tmp_path / "summary.csv", index=False)
    robustness.to_csv(tmp_path / "robustness.csv", index=False)
    text = report(tmp_path)

    def table(caption: str) -> list[list[str]]:
        block = text.split(caption, 1)[1].split("\n\n")[1].splitlines()
        return [[c.strip() for c in line.strip("|").split("|")] for line in block]

    paper = table("Paper grid")
    assert paper[0][:3] == ["experiment", "gamma", "lam"]
    assert {row[0] for row in paper[2:]} == {"paper"}
    # the effect of lam, within the experiment, at the lams each gamma has
    effect = table("Effect of lam")
    assert [row[:3] for row in effect[2:]] == [
        ["paper", "0", "0.001"],
        ["paper", "0", "0.01"],
        ["paper", "0.5", "0.001"],
    ]
    # one NEMON - MLP row per pair of interval experiments with a common eps_t, named
    pairs = table("Interval-trained NEMON minus interval-trained MLP")
    assert pairs[0][:4] == ["nemon", "mlp", "eps_t", "nemon gamma"]
    assert sorted(row[:2] for row in pairs[2:]) == [
        ["certified", "followup-mlp"],
        ["certified", "mlp-ibp"],
    ]
    # the convergence record keeps the two mlp/interval experiments apart
    conv = table("Convergence record")
    assert ["followup-mlp", "mlp", "interval", "3"] in [row[:4] for row in conv]
    assert ["mlp-ibp", "mlp", "interval", "3"] in [row[:4] for row in conv]


def test_tables_of_the_layout_before_experiments_are_refused_naming_the_column(tmp_path, capsys):
    summary, robustness = tables()
    summary.drop(columns="experiment").to_csv(tmp_path / "summary.csv", index=False)
    robustness.to_csv(tmp_path / "robustness.csv", index=False)
    with pytest.raises(ValueError, match=r"summary\.csv lacks the column\(s\) \['experiment'\]"):
        report(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    assert e.value.code == 1
    assert "lacks the column(s) ['experiment']" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["mnist-5k", "fashion-mnist"])
def test_the_committed_results_readme_and_report_page_are_what_the_tables_give(dataset):
    from conftest import REPO

    from nemon.results import front_page, readme

    folder = REPO / "results" / dataset
    if not (folder / "README.md").exists():
        pytest.skip(f"no committed results of {dataset} in the layout with a results README")
    assert (folder / "README.md").read_text() == readme(folder), (
        f"results/{dataset}/README.md differs from its tables: rebuild it with the workflow's "
        "rule present"
    )
    figure = REPO / "figures" / dataset / "pareto.png"
    assert (folder / "front-page.html").read_text() == front_page(folder, figure)


def test_the_readme_headline_table_is_the_one_the_tables_give():
    from conftest import REPO

    from nemon.results import headline

    folders = [REPO / "results" / d for d in ("mnist-5k", "fashion-mnist")]
    if not all((f / "README.md").exists() for f in folders):
        pytest.skip("the committed results predate the results README")
    table = headline(folders)
    assert table in (REPO / "README.md").read_text(), (
        "README.md's headline table differs from `python -m nemon.results --headline "
        "results/mnist-5k results/fashion-mnist`"
    )


def test_headline_and_front_page_come_from_the_tables(tmp_path):
    from nemon.results import front_page, headline

    summary, robustness = tables()
    summary.to_csv(tmp_path / "summary.csv", index=False)
    robustness.to_csv(tmp_path / "robustness.csv", index=False)
    table = headline([tmp_path])
    rows = table.splitlines()[2:]
    assert rows and all(r.startswith("| mnist-5k | ") for r in rows)
    plain = next(r for r in rows if "NEMON, plain" in r)
    models = per_model(summary, robustness)
    sel = models[(models.experiment == "paper") & (models.gamma == 0) & (models.lam == 0)]
    assert f"{sel['clean_acc'].mean():.3f} ± {sel['clean_acc'].std(ddof=1):.3f}" in plain
    png = tmp_path / "pareto.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    page = front_page(tmp_path, png)
    assert "NEMON, plain" in page and "data:image/png;base64,iVBORw0KGgog" in page
