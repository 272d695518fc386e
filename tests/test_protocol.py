"""The model protocol (``nemon.protocol``): NEMON, MLP and MON alike, one ``SolveSettings``
per model, changed for a block by one context manager, ``solving``, which nests, restores
and validates; copies and pickles start outside every block."""

import copy
import dataclasses
import pickle
import warnings

import pytest
import torch

import nemon
from nemon import ImplicitModel, SolveSettings
from nemon.errors import ConfigurationError, NonConvergenceWarning

KINDS = ("nemon", "mlp", "mon")

# what training, evaluation, attacks and certificates read from every model
MEMBERS = (
    "in_features",
    "hidden_features",
    "out_features",
    "gamma",
    "C",
    "c",
    "A",
    "eta",
    "settings",
    "solver",
    "tol",
    "max_iter",
    "stop",
    "strict",
    "solving",
    "check_settings",
    "forward",
    "equilibrium",
    "normalise",
    "input_map",
    "lipschitz_bound",
    "step_constants",
    "alpha_star",
    "rho",
    "constructor_kwargs",
    "last_forward_stats",
    "last_backward_stats",
    "last_error_bounds",
)


def build(kind, **kw):
    torch.manual_seed(0)
    if kind == "nemon":
        model = nemon.NEMON(6, 5, 4, gamma=0.5, **{"tol": 1e-6, **kw})
    elif kind == "mon":
        model = nemon.MON(6, 5, 4, gamma=0.5, **{"tol": 1e-6, **kw})
    else:
        model = nemon.MLP(6, 5, 4, **kw)
    return model.double()


def pixels(n=4, seed=0):
    return torch.rand(n, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("kind", KINDS)
def test_every_model_implements_the_protocol(kind):
    model = build(kind)
    assert isinstance(model, ImplicitModel) and model.kind == kind
    missing = [name for name in MEMBERS if not hasattr(model, name)]
    assert not missing
    # the l_inf machinery (mu, the embedded iteration of MATH 9) where the parametrisation
    # bounds the l_inf measure; warm starts where they change anything
    assert model.linf_well_posed == (kind != "mon")
    assert hasattr(model, "mu") == hasattr(model, "embedded_equilibrium") == model.linf_well_posed
    assert model.supports_warm_start == (kind == "nemon")
    u = pixels()
    x, stats = model.equilibrium(u)
    assert x.shape == (4, 5) and stats is model.last_forward_stats is model.last_stats
    assert model.last_error_bounds.shape == (4,)
    assert model.step_constants() == (model.alpha_star(), model.rho())
    twin = type(model)(**model.constructor_kwargs()).double()
    twin.load_state_dict(model.state_dict())
    assert twin.settings == model.settings and torch.equal(twin(u), model(u))


def test_a_model_that_leaves_out_part_of_the_protocol_cannot_be_built():
    class Half(ImplicitModel):
        kind = "half"
        linf_well_posed = False

        def forward(self, u):
            return u

    with pytest.raises(TypeError, match="abstract"):
        Half(1, 1, 1, SolveSettings())


@pytest.mark.parametrize("kind", KINDS)
def test_solving_replaces_fields_nests_and_restores_also_on_error(kind):
    model = build(kind)
    base = model.settings
    with model.solving(tol=1e-3, max_iter=7, warm_start=True) as m:
        assert m is model
        assert model.settings == dataclasses.replace(base, tol=1e-3, max_iter=7, warm_start=True)
        with model.solving(error_bounds=False, frozen=True, strict=True):
            s = model.settings
            assert (s.tol, s.warm_start, s.error_bounds, s.frozen, s.strict) == (
                1e-3,
                True,
                False,
                True,
                True,
            )
        assert model.settings.error_bounds and not model.settings.frozen
    assert model.settings == base
    with pytest.raises(RuntimeError, match="inside"), model.solving(tol=1e-3, frozen=True):
        raise RuntimeError("inside")
    assert model.settings == base


@pytest.mark.parametrize("kind", ["nemon", "mon"])
def test_the_attributes_read_the_settings_and_are_read_only(kind):
    model = build(kind, max_iter=40, strict=True)
    s = model.settings
    assert (model.solver, model.tol, model.max_iter, model.stop, model.strict) == (
        s.solver,
        s.tol,
        s.max_iter,
        s.stop,
        s.strict,
    ) and (s.max_iter, s.strict) == (40, True)
    with model.solving(tol=1e-9):
        assert model.tol == 1e-9 == model.settings.tol
    for name in ("solver", "tol", "max_iter", "stop", "strict", "settings"):
        with pytest.raises(AttributeError):
            setattr(model, name, getattr(model, name))


def test_an_mlp_records_the_settings_and_still_solves_exactly():
    mlp = build("mlp")
    u = pixels()
    y = mlp(u)
    assert mlp.settings == SolveSettings(solver="none", tol=0.0, max_iter=1, stop="step")
    with mlp.solving(solver="average", tol=1e-6, max_iter=50, warm_start=True):
        assert (mlp.settings.solver, mlp.settings.tol, mlp.settings.max_iter) == (
            "average",
            1e-6,
            50,
        )
        # how it solves: one exact step, whatever the settings ask
        assert (mlp.solver, mlp.tol, mlp.max_iter, mlp.stop) == ("none", 0.0, 1, "step")
        assert torch.equal(mlp(u), y)
    assert mlp.settings.solver == "none"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"tol": -1.0}, "tol must be a positive finite number"),
        ({"tol": float("nan")}, "tol must be a positive finite number"),
        ({"max_iter": 0}, "max_iter must be a positive integer"),
        ({"max_iter": 2.5}, "max_iter must be a positive integer"),
        ({"stop": "never"}, "stop"),
        ({"solver": "newton"}, "newton"),
        ({"warm_start": "yes"}, "warm_start must be True or False, got warm_start='yes'"),
        ({"error_bounds": 1}, "error_bounds must be True or False"),
        ({"frozen": None, "strict": 0}, "strict must be True or False"),
    ],
)
def test_bad_settings_are_refused_before_the_block(kind, change, match):
    model = build(kind)
    base = model.settings
    with pytest.raises(ConfigurationError, match=match):
        with model.solving(**change):
            pytest.fail("the block ran")
    assert model.settings == base


@pytest.mark.parametrize("kind", KINDS)
def test_a_misspelt_setting_is_an_error_not_ignored(kind):
    with pytest.raises(TypeError, match="warm_starts"):
        with build(kind).solving(warm_starts=True):
            pass


def test_each_model_refuses_what_it_cannot_do():
    with pytest.raises(ConfigurationError, match="picard"):
        with build("nemon").solving(solver="picard", stop="bound"):
            pass
    with pytest.raises(ConfigurationError, match="MON supports only stop='step'"):
        with build("mon").solving(stop="bound"):
            pass
    with pytest.raises(ConfigurationError, match="unknown MON solver 'average'"):
        with build("mon").solving(solver="average"):
            pass
    with build("mon").solving(solver="fb") as mon:
        assert mon(pixels()).shape == (4, 4) and mon.last_forward_stats.solver == "fb"


@pytest.mark.parametrize("kind", KINDS)
def test_copies_and_pickles_start_outside_every_block(kind):
    model = build(kind)
    base = model.settings
    u = pixels()
    with model.solving(tol=1e-3, max_iter=9, frozen=True, warm_start=True, error_bounds=False):
        model(u)
        with model.solving(spend_warnings=False):
            for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
                assert twin.settings == base
                twin(u)
                assert twin.last_error_bounds is not None  # bounded: outside the block
    assert model.settings == base


def test_warnings_given_where_spending_is_off_are_given_again_after_the_block():
    for kind in ("nemon", "mon"):
        model = build(kind, tol=1e-14, max_iter=2)
        u = pixels()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with model.solving(spend_warnings=False):
                model(u)
                with model.solving(tol=1e-13):  # a nested block shares the record
                    model(u)
                model(u)
            inside = len(caught)
            model(u)
            model(u)
        messages = [w for w in caught if issubclass(w.category, NonConvergenceWarning)]
        assert inside == 1 and len(messages) == 2, (kind, [str(w.message) for w in caught])
        assert all("warned once per model" in str(w.message) for w in messages)


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_pickled_before_solve_settings_still_loads(kind):
    model = build(kind, strict=True) if kind != "mlp" else build(kind)
    u = pixels()
    y = model(u)
    # the attributes a model kept before SolveSettings: plain solver settings and _warned
    old = dict(model.__getstate__())
    settings = old.pop("_settings")
    del old["_solve_state"]
    old.update(tol=settings.tol, max_iter=settings.max_iter, stop=settings.stop)
    if kind != "mlp":  # an MLP kept its solver on the class, and had no strict
        old.update(solver=settings.solver, strict=settings.strict, _warned={"forward"})
    twin = type(model).__new__(type(model))
    twin.__setstate__(old)
    assert twin.settings == settings and torch.equal(twin(u), y)
