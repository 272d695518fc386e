"""One source per default: the evaluation's settings take theirs from the config schema only."""

from __future__ import annotations

import dataclasses

import pytest

import nemon.config
from nemon.config import schema_defaults
from nemon.errors import ConfigurationError
from nemon.evaluation import AttackSettings, EvalSettings


def test_no_evaluation_setting_carries_a_default_of_its_own():
    for cls in (EvalSettings, AttackSettings):
        for f in dataclasses.fields(cls):
            assert f.default is None and f.default_factory is dataclasses.MISSING, (cls, f.name)


def test_the_evaluation_settings_left_out_are_the_schemas_defaults():
    ev = schema_defaults()["evaluation"]
    s = EvalSettings()
    assert s.max_iter == ev["max_iter"] == 5000  # the dataclass once said 3000
    assert (s.tol, s.attack_tol, s.batch_size, s.subset_seed) == (
        ev["tol"],
        ev["attack_tol"],
        ev["batch_size"],
        ev["subset_seed"],
    )
    assert s.inversion_eps == tuple(ev["inversion"]["eps"])
    assert s.lipschitz_eps == tuple(ev["certified_lipschitz"]["eps"])
    assert s.interval_eps == tuple(ev["certified_interval"]["eps"])
    assert (s.lower_bound_images, s.lower_bound_steps, s.lower_bound_step_size) == tuple(
        ev["lipschitz_lower"][k] for k in ("images", "steps", "step_size")
    )
    assert (s.warm_start, s.certificate_dtype, s.skip_certified) == (
        ev["warm_start"],
        ev["certificate_dtype"],
        ev["skip_certified"],
    )
    # each attack from its own block; a key the attack has not stays None
    assert s.pgd == AttackSettings(
        eps=tuple(ev["pgd"]["eps"]),
        images=ev["pgd"]["images"],
        steps=ev["pgd"]["steps"],
        restarts=ev["pgd"]["restarts"],
        queries=None,
    )
    assert s.autoattack == AttackSettings(
        eps=tuple(ev["autoattack"]["eps"]),
        images=ev["autoattack"]["images"],
        steps=ev["autoattack"]["steps"],
        restarts=None,
        queries=ev["autoattack"]["queries"],
    )
    assert s == EvalSettings.from_config(ev) == EvalSettings.from_config({})


def test_settings_given_keep_their_values_and_the_rest_come_from_the_schema():
    s = EvalSettings(
        tol=1e-8,
        lipschitz_eps=[0.0, 0.2],
        pgd=AttackSettings(eps=(0.05,), images=8, steps=2),
        autoattack=AttackSettings(eps=()),
    )
    ev = schema_defaults()["evaluation"]
    assert s.tol == 1e-8 and s.lipschitz_eps == (0.0, 0.2) and s.max_iter == ev["max_iter"]
    assert (s.pgd.images, s.pgd.steps, s.pgd.restarts) == (8, 2, ev["pgd"]["restarts"])
    assert s.autoattack.images == ev["autoattack"]["images"] and s.autoattack.eps == ()
    # a copy with one change keeps every other value
    t = dataclasses.replace(s, attack_tol=1e-2)
    assert t.attack_tol == 1e-2 and dataclasses.replace(t, attack_tol=s.attack_tol) == s


def test_a_partial_evaluation_block_is_completed_from_the_schema():
    s = EvalSettings.from_config({"max_iter": 100, "pgd": {"images": 400}})
    ev = schema_defaults()["evaluation"]
    assert s.max_iter == 100 and s.pgd.images == 400 and s.pgd.steps == ev["pgd"]["steps"]


def test_a_changed_schema_default_changes_the_evaluation_settings(monkeypatch):
    changed = schema_defaults()
    changed["evaluation"]["max_iter"] = 1234
    changed["evaluation"]["autoattack"]["queries"] = 77
    monkeypatch.setattr(nemon.config, "schema_defaults", lambda: changed)
    s = EvalSettings()
    assert s.max_iter == 1234 and s.autoattack.queries == 77


def test_impossible_settings_are_still_refused():
    with pytest.raises(ConfigurationError, match="AutoAttack's subset is nested in PGD's"):
        EvalSettings(pgd=AttackSettings(eps=(0.1,), images=10))  # autoattack's 200 > 10
    with pytest.raises(ConfigurationError, match="attack settings must be >= 1"):
        EvalSettings(pgd=AttackSettings(steps=0))
