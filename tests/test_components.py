"""``python -m nemon.bench.components``: what each AutoAttack component breaks and costs."""

import pandas as pd
import pytest
from _attack_helpers import sensitive_model, toy_data

from nemon.bench import components
from nemon.errors import ConfigurationError
from nemon.evaluation import AttackSettings, EvalSettings

SETTINGS = EvalSettings(
    tol=1e-9,
    attack_tol=1e-6,
    pgd=AttackSettings(eps=(), images=20, steps=3, restarts=1),
    autoattack=AttackSettings(eps=(0.0, 0.15), images=12, steps=3, queries=30),
)
CHAIN = ("APGD-CE", "APGD-T", "FAB-T", "Square")


def test_breaks_per_component_add_up_to_what_the_chain_left_standing():
    model = sensitive_model(8, gamma=0.5, tol=1e-6)
    X, Y = toy_data(30, seed=3)
    rows = components.measure(model, X, Y, SETTINGS)
    assert [r["eps"] for r in rows] == [0.0, 0.15]
    for r in rows:
        broke = sum(r[f"{c} broke"] for c in CHAIN)
        assert r["images"] == 12 and 0 < r["attacked"] <= 12
        assert all(r[f"{c} broke"] >= 0 for c in CHAIN)
        assert 0 < sum(r[f"{c} s"] for c in CHAIN) <= r["total s"]
        # the chain judges at the attack's tolerance, the evaluation at its own: with a
        # margin-sized gap between them the two counts agree on these inputs
        assert r["robust"] == r["attacked"] - broke
    assert sum(rows[0][f"{c} broke"] for c in CHAIN) == 0  # eps 0 breaks nothing
    assert sum(rows[1][f"{c} broke"] for c in CHAIN) > 0  # the chain bites at 0.15
    total = components.totals([{"model": "a", **r} for r in rows])
    assert total["model"] == "all" and total["images"] == 24
    assert total["APGD-CE broke"] == sum(r["APGD-CE broke"] for r in rows)
    assert total["total s"] == pytest.approx(sum(r["total s"] for r in rows))


def test_main_prints_the_table_and_checks_the_committed_accuracy(tmp_path, monkeypatch, capsys):
    model = sensitive_model(8, gamma=0.5, tol=1e-6)
    X, Y = toy_data(30, seed=3)
    folder = tmp_path / "nemon" / "lipschitz" / "g0.5_l0.0_s0"
    folder.mkdir(parents=True)
    monkeypatch.setattr(components, "load_evaluated", lambda f, data: (model, X, Y, SETTINGS))
    acc = [r["robust"] / r["images"] for r in components.measure(model, X, Y, SETTINGS)]
    committed = pd.DataFrame(
        {"attack": "autoattack", "eps": [0.0, 0.15], "accuracy": acc, "images": 12}
    )
    committed.to_csv(folder / "robustness.csv", index=False)
    assert components.main([str(folder), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| nemon/lipschitz/g0.5_l0.0_s0 | 0.15 |" in out and "| all |" in out
    assert "# share of the total time: APGD-CE " in out and "Square " in out
    committed.loc[1, "accuracy"] += 1 / 12  # one image more than this code finds robust
    committed.to_csv(folder / "robustness.csv", index=False)
    with pytest.raises(RuntimeError, match="does not reproduce the committed run"):
        components.main([str(folder)])


def test_refuses_what_it_cannot_measure(tmp_path, monkeypatch):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ConfigurationError, match="evaluation.json missing"):
        components.main([str(tmp_path)])
    with pytest.raises(ConfigurationError, match="--threads must be at least 1"):
        components.main([str(tmp_path), "--threads", "0"])
    model = sensitive_model(8, gamma=0.5, tol=1e-6)
    X, Y = toy_data(30, seed=3)
    none = EvalSettings(autoattack=AttackSettings(eps=(), images=12, steps=3, queries=30))
    monkeypatch.setattr(components, "load_evaluated", lambda f, data: (model, X, Y, none))
    with pytest.raises(ConfigurationError, match="ran no AutoAttack"):
        components.main([str(tmp_path)])
