"""MATH 4-7, 11: PGD and AutoAttack (nemon.attacks)."""

import math

import pytest
import torch
import torchattacks
from _attack_helpers import CLASSES, SIDE, M, SolverSpy, sensitive_model, toy_data, trained_model
from conftest import make_model
from hypothesis import given, settings
from hypothesis import strategies as st

import nemon
from nemon.attacks import AttackError, AttackResult, autoattack, pgd
from nemon.errors import ConfigurationError, NonConvergenceWarning

TIGHT = {"tol": 1e-10, "max_iter": 2000}
# AutoAttack with a small budget (the standard is steps=100, n_queries=5000): same chain
SMALL_AA = {"steps": 10, "n_queries": 100}


def labelled_inputs(model, n, seed):
    """Random pixels labelled by the model itself, a few labels flipped (misclassified clean)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, model.in_features, generator=g, dtype=torch.float64)
    with torch.no_grad(), model.solving(**TIGHT):
        labels = model(u).argmax(dim=1)
    labels[:3] = (labels[:3] + 1) % model.out_features
    return u, labels


def in_ball_and_box(result: AttackResult, u: torch.Tensor) -> bool:
    adv = result.adversarial.double().reshape(u.shape)
    dist = float((adv - u).abs().max())
    return dist <= result.eps + 1e-6 and float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def certified(model, u, labels, eps):
    with model.solving(**TIGHT):
        return nemon.certified_radius(model, u, labels) > eps


# --- PGD: accuracy, the eps-ball, eps = 0 ------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 1000),
    eps=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)),
    steps=st.integers(1, 6),
    restarts=st.integers(1, 3),
    step_scale=st.one_of(st.none(), st.floats(0.01, 5.0)),
    binary=st.booleans(),
    batch_size=st.sampled_from([5, 1000]),
)
def test_pgd_stays_in_the_eps_ball_and_box_and_never_beats_clean_accuracy(
    seed, eps, steps, restarts, step_scale, binary, batch_size
):
    model = sensitive_model(seed)
    u, labels = labelled_inputs(model, 16, seed)
    if binary:  # pixels exactly at 0 and 1 stress the projection onto [0, 1]
        u = u.round()
    step_size = None if step_scale is None or eps == 0 else step_scale * eps
    res = pgd(
        model,
        u,
        labels,
        eps,
        steps=steps,
        restarts=restarts,
        step_size=step_size,
        seed=seed,
        batch_size=batch_size,
        **TIGHT,
    )
    assert in_ball_and_box(res, u)
    assert not bool((res.robust & ~res.clean_correct).any())
    assert res.accuracy <= res.clean_accuracy
    if eps == 0:
        assert torch.equal(res.robust, res.clean_correct)
        assert torch.equal(res.adversarial, u)


def test_pgd_default_step_size_is_madry_rule_and_settings_are_recorded():
    model = sensitive_model(0)
    u, labels = labelled_inputs(model, 8, 0)
    res = pgd(model, u, labels, 0.1, steps=20, restarts=2, seed=5, **TIGHT, eval_tol=1e-8)
    assert res.step_size == pytest.approx(2.5 * 0.1 / 20)
    assert (res.steps, res.restarts, res.seed, res.tol, res.max_iter) == (20, 2, 5, 1e-10, 2000)
    assert (res.eval_tol, res.eval_max_iter) == (1e-8, 2000)
    row = res.summary()
    assert row["robust_accuracy"] == res.accuracy and row["attack_backward_solves"] > 0


def test_pgd_breaks_inputs_of_a_sensitive_model():
    # not a vacuous attack: a model whose decisions move at small eps loses accuracy
    model = sensitive_model(0)
    u, labels = labelled_inputs(model, 24, 0)
    res = pgd(model, u, labels, 0.1, steps=10, restarts=1, seed=0, **TIGHT)
    assert res.accuracy < res.clean_accuracy


# --- AutoAttack ---------------------------------------------------------------------------
def test_autoattack_runs_the_standard_chain_and_respects_clean_accuracy_and_eps_zero():
    model = trained_model(**TIGHT)
    u, labels = toy_data(24, seed=1)
    res0 = autoattack(model, u, labels, 0.0, seed=0, **TIGHT, **SMALL_AA)
    assert res0.components == ("APGD-CE", "APGD-T", "FAB-T", "Square")
    assert torch.equal(res0.robust, res0.clean_correct)
    assert in_ball_and_box(res0, u)
    res = autoattack(model, u, labels, 0.15, seed=0, **TIGHT, **SMALL_AA)
    assert in_ball_and_box(res, u)
    assert not bool((res.robust & ~res.clean_correct).any())
    assert res.accuracy < res.clean_accuracy  # the attack bites at this eps
    rem = res.remaining_after
    assert len(rem) == 5 and rem[0] == int(res.clean_correct.sum())
    # each component's own time: all four ran at eps 0 (nothing broke), and together they
    # take part of the attack's wall time
    assert len(res0.component_seconds) == 4 and all(t > 0 for t in res0.component_seconds)
    assert 0 < sum(res.component_seconds) <= res.wall_time_s
    assert all(a >= b for a, b in zip(rem, rem[1:], strict=False))
    assert res.adversarial.shape == u.shape and res.adversarial.dtype == torch.float32


def test_autoattack_plus_version_runs_its_chain_in_batches():
    model = trained_model(**TIGHT)
    u, labels = toy_data(16, seed=3)
    res = autoattack(
        model, u, labels, 0.1, seed=0, **TIGHT, version="plus", steps=3, n_queries=10, batch_size=5
    )
    assert res.components == ("APGD-CE", "APGD-DLR", "FAB", "Square", "APGD-T", "FAB-T")
    assert res.restarts == 5 and in_ball_and_box(res, u)
    assert res.remaining_after[0] == int(res.clean_correct.sum())
    assert not bool((res.robust & ~res.clean_correct).any())


def test_autoattack_works_on_a_float32_model_with_image_shaped_inputs():
    torch.manual_seed(0)
    model = nemon.NEMON(M, 8, CLASSES, gamma=0.5, tol=1e-3)
    with torch.no_grad():
        model.B.mul_(10.0)
    u = torch.rand(12, 1, SIDE, SIDE)
    with torch.no_grad():
        labels = model(u).argmax(dim=1)
    res = autoattack(model, u, labels, 0.1, seed=0, tol=1e-6, max_iter=500, **SMALL_AA)
    assert res.adversarial.shape == u.shape and in_ball_and_box(res, u)
    assert res.attack_solves.backward_solves > 0 and res.attack_solves.max_tol == 1e-6
    assert model.tol == 1e-3 and model.T.dtype == torch.float32 and model.T.grad is None


# --- the ordering certified <= attacked (MATH 6, 11) ------------------------------------------
@settings(max_examples=6, deadline=None)
@given(eps=st.floats(0.0, 0.06), seed=st.integers(0, 100))
def test_certified_inputs_are_never_broken_by_pgd(eps, seed):
    model = trained_model(**TIGHT)
    u, labels = toy_data(40, seed=seed)
    cert = certified(model, u, labels, eps)
    res = pgd(model, u, labels, eps, steps=10, restarts=1, seed=seed, **TIGHT)
    assert not bool((cert & ~res.robust).any())
    assert float(cert.float().mean()) <= res.accuracy


def test_certified_inputs_are_never_broken_by_autoattack_and_both_sets_are_nontrivial():
    model = trained_model(**TIGHT)
    u, labels = toy_data(40, seed=2)
    eps = 0.04
    cert = certified(model, u, labels, eps)
    res = autoattack(model, u, labels, eps, seed=0, **TIGHT, **SMALL_AA)
    assert not bool((cert & ~res.robust).any())
    assert nemon.certified_accuracy(model, u, labels, eps) <= res.accuracy
    # neither side is vacuous: some inputs certified, some broken
    assert bool(cert.any()) and res.accuracy < res.clean_accuracy


# --- PGD against the fixed-direction attacks ---------------------------------------------------
def test_pgd_is_at_least_as_strong_as_inversion_and_stronger_than_random_noise():
    """Inversion (MATH 7) is one fixed point of the eps-ball, random sign noise a random vertex.

    PGD searches the ball, so on a trained model its accuracy is no higher than
    under either; per input there is no such guarantee (PGD is a local search),
    hence the aggregate comparison.
    """
    model = trained_model(**TIGHT)
    u, labels = toy_data(100, seed=3)
    g = torch.Generator().manual_seed(0)
    sign = torch.randint(0, 2, u.shape, generator=g).double() * 2 - 1
    strictly_below_noise = 0
    for eps in (0.05, 0.1, 0.2):
        res = pgd(model, u, labels, eps, steps=20, restarts=1, seed=0, **TIGHT)
        with torch.no_grad():
            inv = float((model(nemon.inversion_attack(u, eps)).argmax(1) == labels).float().mean())
            noisy = (u + eps * sign).clamp(0, 1)
            noise = float((model(noisy).argmax(1) == labels).float().mean())
        assert res.accuracy <= inv
        assert res.accuracy <= noise
        strictly_below_noise += res.accuracy < noise
    assert strictly_below_noise >= 2


# --- solver tolerance, model state, non-convergence ----------------------------------------
def run_attack(kind, model, u, labels, **kw):
    if kind == "pgd":
        return pgd(model, u, labels, 0.1, steps=3, restarts=2, seed=0, **kw)
    return autoattack(model, u, labels, 0.1, seed=0, steps=3, n_queries=20, **kw)


@pytest.mark.parametrize("kind", ["pgd", "autoattack"])
def test_every_solve_runs_at_the_requested_tolerance_not_the_training_one(kind, monkeypatch):
    spy = SolverSpy(monkeypatch)
    # the training tolerance and rule: the error-bound rule stalls below float32's resolution
    # at rho near 1 (MATH 12), so attacks solve on the relative step whatever the model's rule
    model = trained_model(tol=1e-2, max_iter=300, stop="bound")
    model.train()
    modes = []
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    u, labels = toy_data(16, seed=4)
    res = run_attack(kind, model, u, labels, tol=1e-9, max_iter=4000, eval_tol=1e-7)
    assert modes and not any(modes)  # every call in eval mode
    tols = [t for t, _ in spy.calls]
    assert set(spy.calls) == {(1e-9, 4000), (1e-7, 4000)}  # never (1e-2, 300)
    assert set(spy.stops) == {"step"}
    assert tols.count(1e-9) == res.attack_solves.solves > 0
    assert tols.count(1e-7) == res.eval_solves.solves > 0
    assert res.attack_solves.backward_solves > 0
    assert res.attack_solves.max_tol == 1e-9 and res.eval_solves.max_tol == 1e-7
    assert res.attack_solves.max_residual <= 1e-9 and res.attack_solves.unconverged == 0
    # the model is as it was
    assert (model.tol, model.max_iter, model.stop, model.training) == (1e-2, 300, "bound", True)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind", ["pgd", "autoattack"])
def test_model_settings_mode_and_rng_are_restored_when_the_attack_fails(kind, monkeypatch):
    SolverSpy(monkeypatch, fail_after=6)
    model = trained_model(tol=1e-2, max_iter=300)
    model.train()
    u, labels = toy_data(8, seed=5)
    state = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="planned failure"):
        run_attack(kind, model, u, labels, tol=1e-9, max_iter=4000)
    assert (model.tol, model.max_iter, model.training) == (1e-2, 300, True)
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), state)


def test_unconverged_solves_are_counted_and_the_models_warning_is_left_unspent():
    model = trained_model(tol=1e-2, max_iter=300)
    u, labels = toy_data(8, seed=6)
    # max_iter=2 cannot reach tol=1e-12: every solve stops early; pytest would turn a leaked
    # NonConvergenceWarning into an error
    res = pgd(model, u, labels, 0.1, steps=2, restarts=1, seed=0, tol=1e-12, max_iter=2)
    assert res.attack_solves.forward_unconverged == res.attack_solves.forward_solves > 0
    assert res.attack_solves.backward_unconverged == res.attack_solves.backward_solves > 0
    assert res.eval_solves.unconverged > 0
    with pytest.warns(NonConvergenceWarning), model.solving(tol=1e-12, max_iter=2):
        model(u)


@pytest.mark.parametrize("kind", ["pgd", "autoattack"])
@pytest.mark.parametrize(
    ("shift", "match"),
    # eps = 0.1: a shift of -0.05 stays in the ball but leaves the box
    [(0.2, "left the eps-ball"), (-0.05, r"left \[0, 1\]")],
)
def test_an_attack_leaving_the_eps_ball_or_the_box_is_an_error_not_clipped(
    kind, shift, match, monkeypatch
):
    # raised as soon as the attack returns, before the model sees the images (a model that
    # checks its inputs would refuse them with a less telling error)
    broken = torchattacks.PGD if kind == "pgd" else torchattacks.APGD
    monkeypatch.setattr(broken, "forward", lambda self, images, labels: images + shift)
    model = trained_model(**TIGHT)
    forwards = []
    model.register_forward_pre_hook(lambda module, args: forwards.append(args[0].clone()))
    u, labels = toy_data(8, seed=7)
    assert float(u.min()) == 0.0  # some pixel sits on the box's face
    with pytest.raises(AttackError, match=f"{kind} {match}"):
        run_attack(kind, model, u, labels, **TIGHT)
    assert all(float(x.min()) >= 0 and float(x.max()) <= 1 for x in forwards)


# --- determinism ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pgd", "autoattack"])
def test_same_seed_same_result_whatever_the_global_rng_and_rng_untouched(kind):
    model = sensitive_model(1)
    u, labels = labelled_inputs(model, 12, 1)

    def attack(seed):
        if kind == "pgd":
            return pgd(model, u, labels, 0.1, steps=4, restarts=2, seed=seed, **TIGHT)
        return autoattack(model, u, labels, 0.1, seed=seed, **TIGHT, steps=4, n_queries=30)

    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = attack(7)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(1000)  # a different global RNG state must not matter
    second = attack(7)
    assert torch.equal(first.adversarial, second.adversarial)
    assert torch.equal(first.robust, second.robust)
    if kind == "pgd":  # the random start depends on the seed (AutoAttack's first APGD step
        # of 2 eps projects onto the same vertex from any start, so its images may coincide)
        assert not torch.equal(first.adversarial, attack(8).adversarial)


def test_a_model_without_a_solver_works_and_reports_no_solves():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(M, 10), torch.nn.ReLU(), torch.nn.Linear(10, CLASSES)
    ).double()
    u = torch.rand(10, M, dtype=torch.float64)
    with torch.no_grad():
        labels = mlp(u).argmax(dim=1)
    res = pgd(mlp, u, labels, 0.1, steps=5, restarts=1, seed=0, **TIGHT)
    assert res.attack_solves.solves == 0 and math.isnan(res.attack_solves.max_tol)
    assert res.attack_solves.calls > 0 and in_ball_and_box(res, u)


# --- bad arguments --------------------------------------------------------------------------
def _inputs():
    u, labels = toy_data(6, seed=0)
    return u, labels


BAD_CALLS = [
    ("eps must lie", dict(eps=-0.1)),
    ("eps must lie", dict(eps=1.5)),
    ("eps must lie", dict(eps=float("nan"))),
    ("steps must", dict(steps=0)),
    ("restarts must", dict(restarts=0)),
    ("step_size must", dict(step_size=-0.1)),
    ("tol must", dict(tol=0.0)),
    ("max_iter must", dict(max_iter=0)),
    ("batch_size must", dict(batch_size=0)),
    ("seed must", dict(seed=-1)),
    ("labels must have shape", dict(labels=torch.zeros(5, dtype=torch.long))),
    ("labels must have shape", dict(labels=torch.zeros(6, 1, dtype=torch.long))),
    ("integer class indices", dict(labels=torch.zeros(6))),
    ("labels must lie in", dict(labels=torch.full((6,), CLASSES))),
    ("pixels in", dict(u=torch.full((6, M), 1.5, dtype=torch.float64))),
    ("pixels in", dict(u=torch.full((6, M), -0.5, dtype=torch.float64))),
    ("non-empty batch", dict(u=torch.zeros(0, M, dtype=torch.float64))),
]


@pytest.mark.parametrize(("match", "bad"), BAD_CALLS)
def test_pgd_rejects_bad_arguments_clearly(match, bad):
    model = trained_model()
    u, labels = _inputs()
    kw = dict(u=u, labels=labels, eps=0.1, steps=2, restarts=1, seed=0, **TIGHT) | bad
    with pytest.raises(ConfigurationError, match=match):
        pgd(model, **kw)


@pytest.mark.parametrize(
    ("match", "bad"),
    [
        ("unknown norm", dict(norm="L2")),
        ("unknown version", dict(version="rand")),
        ("unknown version", dict(version="fast")),
        ("n_queries must", dict(n_queries=0)),
        ("steps must", dict(steps=0)),
        ("image_shape", dict(image_shape=(1, 3, 3))),
        ("eps must lie", dict(eps=2.0)),
        ("labels must have shape", dict(labels=torch.zeros(7, dtype=torch.long))),
        ("pixels in", dict(u=torch.full((6, M), 2.0, dtype=torch.float64))),
    ],
)
def test_autoattack_rejects_bad_arguments_clearly(match, bad):
    model = trained_model()
    u, labels = _inputs()
    kw = dict(u=u, labels=labels, eps=0.1, seed=0, **TIGHT) | bad
    with pytest.raises(ConfigurationError, match=match):
        autoattack(model, **kw)


def test_autoattack_rejects_a_non_square_flat_input_and_too_few_classes():
    model = make_model(m=12, n=8, k=4)
    u = torch.rand(4, 12, dtype=torch.float64)
    with pytest.raises(ConfigurationError, match="image_shape"):
        autoattack(model, u, torch.zeros(4, dtype=torch.long), 0.1, seed=0, **TIGHT)
    three = make_model(m=16, n=8, k=3)
    u = torch.rand(4, 16, dtype=torch.float64)
    with pytest.raises(ConfigurationError, match="at least 4 classes"):
        autoattack(three, u, torch.zeros(4, dtype=torch.long), 0.1, seed=0, **TIGHT)


# --- torchattacks through its public API -----------------------------------------------------
class _Flat(torch.nn.Module):
    """``model`` on (N, C, H, W) images, as torchattacks hands them over."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("version", ["standard", "plus"])
def test_autoattack_is_torchattacks_autoattack_bit_for_bit(version):
    """The chain built from torchattacks' public components gives exactly the images of
    ``torchattacks.AutoAttack`` itself, at AutoAttack's own budgets (``steps=None``,
    ``n_queries=5000``): the guard that lets nemon follow torchattacks' new versions."""
    torch.manual_seed(0)
    model = nemon.MLP(M, 8, CLASSES)
    with torch.no_grad():
        model.B.mul_(4.0)
    model.eval()
    u = torch.rand(6, 1, SIDE, SIDE)
    with torch.no_grad():
        labels = model(u).argmax(dim=1)  # every input classified correctly: all are attacked
    kw = dict(seed=3, tol=1e-6, max_iter=1, steps=None, n_queries=5000, version=version)
    res = autoattack(model, u, labels, 0.08, **kw)
    ref = torchattacks.AutoAttack(
        _Flat(model), norm="Linf", eps=0.08, version=version, n_classes=CLASSES, seed=3
    )(u, labels)
    assert torch.equal(res.adversarial, ref)
    assert 0 < res.remaining_after[-1] < len(u)  # some inputs broken, some left for Square
    assert res.steps == 10 and res.n_queries == 5000
