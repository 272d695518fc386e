"""AutoAttack's components as the evaluation runs them (``nemon.evaluation.run_attack``): what
each one breaks adds up to what the chain leaves standing, and each has its own time."""

import pytest
import torch
from _attack_helpers import sensitive_model, toy_data

from nemon.evaluation import AttackSettings, EvalSettings, run_attack

SETTINGS = EvalSettings(
    tol=1e-9,
    attack_tol=1e-6,
    pgd=AttackSettings(eps=(), images=20, steps=3, restarts=1),
    autoattack=AttackSettings(eps=(0.0, 0.15), images=12, steps=3, queries=30),
)
CHAIN = ("APGD-CE", "APGD-T", "FAB-T", "Square")


@pytest.mark.parametrize("eps", SETTINGS.autoattack.eps)
def test_breaks_per_component_add_up_to_what_the_chain_left_standing(eps):
    model = sensitive_model(8, gamma=0.5, tol=1e-6)
    X, Y = toy_data(12, seed=3)
    res = run_attack(model, "autoattack", X, Y, eps, SETTINGS)
    assert res.components == CHAIN
    assert (res.tol, res.eval_tol, res.steps, res.n_queries) == (1e-6, 1e-9, 3, 30)
    rem = res.remaining_after
    broke = [a - b for a, b in zip(rem, rem[1:], strict=False)]
    assert len(broke) == len(CHAIN) and all(b >= 0 for b in broke)
    assert rem[0] == int(res.clean_correct.sum()) > 0
    assert len(res.component_seconds) == len(CHAIN)
    assert 0 < sum(res.component_seconds) <= res.wall_time_s
    # the chain judges at the attack's tolerance, the evaluation at its own: with a
    # margin-sized gap between them the two counts agree on these inputs
    assert int(res.robust.sum()) == rem[-1]
    assert not bool((res.robust & ~res.clean_correct).any())
    if eps == 0.0:
        assert sum(broke) == 0 and torch.equal(res.robust, res.clean_correct)
    else:
        assert sum(broke) > 0  # the chain bites at 0.15
