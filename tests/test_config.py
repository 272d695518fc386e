"""nemon.config: the workflow config is validated before any job, with messages naming the key."""

import copy
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO
from snakemake.utils import update_config

from nemon.config import (
    allowed,
    job_cost,
    job_priority,
    load_schema,
    training_groups,
    validate_config,
)
from nemon.errors import ConfigurationError

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
BASE = yaml.safe_load((REPO / "config.yaml").read_text())


def valid(cfg, **kw):
    return validate_config(copy.deepcopy(cfg), SCHEMA, cuda_available=kw.pop("cuda", lambda: False))


def with_(path, value, cfg=None):
    cfg = copy.deepcopy(cfg or BASE)
    node = cfg
    *head, last = path.split(".")
    for p in head:
        node = node.setdefault(p, {})
    node[last] = value
    return cfg


def test_the_committed_config_is_valid_and_fills_defaults():
    cfg = valid(BASE)
    assert cfg["evaluation"]["lipschitz_lower"]["steps"] >= 1
    assert cfg["training"]["interval"]["kappa"] == 0.75
    assert valid({})["experiments"] == {
        "paper": {"model": "nemon", "objective": "lipschitz", "gamma": [0.0], "lam": [0.0]}
    }


def test_the_smoke_config_is_valid():
    smoke = yaml.safe_load((REPO / "profiles/smoke/smoke-config.yaml").read_text())
    merged = copy.deepcopy(BASE)
    for k, v in smoke.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = {**merged[k], **v}
        else:
            merged[k] = v
    cfg = valid(merged)
    assert cfg["output_prefix"] == "smoke/"


BAD = {
    "gamma_one": ("experiments.paper.gamma", [0.0, 1.0], ["experiments.paper.gamma[1]", "< 1"]),
    "gamma_nan": (
        "experiments.paper.gamma",
        [float("nan")],
        ["experiments.paper.gamma[0]", "not a finite number"],
    ),
    "lam_inf": (
        "experiments.paper.lam",
        [float("inf")],
        ["experiments.paper.lam[0]", "not a finite number"],
    ),
    "lam_negative": ("experiments.paper.lam", [0.0, -1.0e-3], ["experiments.paper.lam[1]", ">= 0"]),
    "seed_float": ("seeds", [1.0], ["seeds[0]", "a float but an integer is needed", "write 1"]),
    "epochs_float": ("training.epochs", 1.0, ["training.epochs", "integer"]),
    "lr_nan": ("training.lipschitz.lr", float("nan"), ["training.lipschitz.lr", "finite"]),
    "tol_inf": ("evaluation.tol", float("inf"), ["evaluation.tol", "finite"]),
    "eps_nan": (
        "evaluation.inversion.eps",
        [0.0, float("nan")],
        ["evaluation.inversion.eps[1]", "finite"],
    ),
    "eps_above_one": ("evaluation.pgd.eps", [1.5], ["evaluation.pgd.eps[0]", "<= 1"]),
    "unknown_dataset": ("dataset", "cifar10", ["dataset", "one of mnist, fashion-mnist, mnist-5k"]),
    "misspelt_key": ("training.epoch", 3, ["training", "'epoch' was unexpected"]),
    "unknown_model": ("experiments.paper.model", "resnet", ["experiments.paper.model", "nemon"]),
    "unknown_objective": ("experiments.paper.objective", "ibp", ["objective", "lipschitz"]),
    "kappa_above_one": ("training.interval.kappa", 1.5, ["training.interval.kappa", "<= 1"]),
    "eps_t_above_one": (
        "experiments.certified.eps_t",
        [1.5],
        ["experiments.certified.eps_t[0]", "<= 1"],
    ),
    "ramp_too_long": ("training.interval.ramp", 0.9, ["training.interval", "after the run"]),
    "wrong_axis": (
        "experiments.certified.lam",
        [0.1],
        ["experiments.certified.lam", "no `lam` axis"],
    ),
    "pareto_not_evaluated": ("figures.pareto_eps", 0.25, ["figures.pareto_eps", "0.25"]),
    "inversion_pareto_missing": ("figures.inversion_pareto_eps", 0.25, ["inversion_pareto_eps"]),
    "mnist5k_with_data_dir": ("data_dir", "/tmp", ["data_dir", "mnist-5k"]),
    "cuda_without_gpu": ("device", "cuda", ["device", "no CUDA device"]),
    "bad_device": ("device", "tpu", ["device", "matching"]),
    "bad_prefix": ("output_prefix", "../elsewhere", ["output_prefix", "matching"]),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_configs_are_refused_naming_the_key(name):
    path, value, expected = BAD[name]
    cfg = with_(path, value)
    if name == "mnist5k_with_data_dir":
        cfg["dataset"] = "mnist-5k"
    with pytest.raises(ConfigurationError) as e:
        valid(cfg)
    msg = str(e.value)
    assert msg.startswith("invalid config") or "invalid config" in msg
    for text in expected:
        assert text in msg, (text, msg)


def test_numbers_given_as_text_are_read_as_numbers():
    # YAML 1.1 reads 1e-4 as text; the command line gives text: both are numbers here
    cfg = valid(with_("experiments.paper.lam", ["0.0", "1e-4"]))
    assert cfg["experiments"]["paper"]["lam"] == [0.0, 1e-4]
    cfg = valid(with_("training.epochs", "4"))
    assert cfg["training"]["epochs"] == 4
    with pytest.raises(ConfigurationError, match="training.epochs.*not a number"):
        valid(with_("training.epochs", "four"))


def test_a_section_merged_from_the_command_line_keeps_its_other_keys():
    # `--config "training={epochs: 4}"`: Snakemake merges {'epochs': '4'} into the section
    from snakemake.utils import update_config

    cfg = copy.deepcopy(BASE)
    update_config(cfg, {"training": {"epochs": "4"}})
    out = valid(cfg)
    assert out["training"]["epochs"] == 4
    assert out["training"]["lipschitz"] == BASE["training"]["lipschitz"]


def test_duplicate_model_objective_pairs_are_refused():
    cfg = copy.deepcopy(BASE)
    cfg["experiments"]["again"] = dict(cfg["experiments"]["paper"])
    with pytest.raises(ConfigurationError, match="paper and again both train model nemon"):
        valid(cfg)


def test_mon_is_trained_plainly_and_mlp_has_no_gamma():
    with pytest.raises(ConfigurationError, match="mon models are trained plainly"):
        valid(with_("experiments.mon.lam", [0.0, 0.1]))
    with pytest.raises(ConfigurationError, match="an mlp has A = 0"):
        valid(with_("experiments.mlp.gamma", [0.5]))


def test_cuda_is_accepted_where_it_exists():
    assert valid(with_("device", "cuda"), cuda=lambda: True)["device"] == "cuda"


def test_allowed_describes_a_schema_node_in_words():
    assert allowed({"type": "number", "exclusiveMaximum": 1}) == "a number < 1"
    assert allowed({"enum": ["a", "b"]}) == "one of a, b"


def test_training_groups_cover_the_grid_once_with_slow_groups_first():
    cfg = valid(BASE)
    groups = training_groups(cfg)
    points = [(g.model, g.objective, g.gamma, w, g.seed) for g in groups for w in g.weights]
    assert len(points) == len(set(points))
    n = 0
    for exp in cfg["experiments"].values():
        gammas = [0.0] if exp["model"] == "mlp" else exp.get("gamma", [0.0])
        axis = "lam" if exp["objective"] == "lipschitz" else "eps_t"
        n += len(gammas) * len(exp[axis]) * len(cfg["seeds"])
    assert len(points) == n
    gammas = [g.gamma for g in groups]
    assert gammas == sorted(gammas, reverse=True)
    g = groups[0]
    dirs = g.point_dirs("smoke/", "mnist-5k")
    assert dirs[0].startswith(f"smoke/results/mnist-5k/models/{g.model}/{g.objective}/g")


def test_job_cost_grows_with_gamma_and_points_and_fits_the_measured_paper_grid():
    costs = [job_cost("nemon", "lipschitz", g, 8) for g in (0.0, 0.5, 0.9, 0.99)]
    assert costs == sorted(costs) and len(set(costs)) == 4
    assert job_cost("nemon", "lipschitz", 0.5, 3) < job_cost("nemon", "lipschitz", 0.5, 8)
    # per point 42, 70, 221 s at gamma 0, 0.5, 0.9 (Fashion-MNIST, committed train_seconds)
    ratio = job_cost("nemon", "lipschitz", 0.9, 1) / job_cost("nemon", "lipschitz", 0.0, 1)
    assert ratio == pytest.approx(221 / 42, rel=0.05)
    assert job_cost("mlp", "lipschitz", 0.0, 4) < job_cost("nemon", "lipschitz", 0.0, 4)


def test_the_paper_grids_slowest_group_gets_the_highest_priority():
    groups = training_groups(valid(BASE))
    prio = {
        (g, stage): job_priority(stage, g.model, g.objective, g.gamma, len(g.weights))
        for g in groups
        for stage in ("train", "evaluate")
    }
    top = max(prio, key=prio.get)
    assert top[1] == "train" and top[0].gamma == max(g.gamma for g in groups)
    costs = [job_cost(g.model, g.objective, g.gamma, len(g.weights)) for g in groups]
    assert job_cost(top[0].model, top[0].objective, top[0].gamma, len(top[0].weights)) == max(costs)
    for g in groups:  # a group's training leads a longer chain than its evaluation
        assert prio[g, "train"] > prio[g, "evaluate"] > 0


def test_job_priority_refuses_an_unknown_stage():
    with pytest.raises(ValueError, match="unknown stage 'plot'"):
        job_priority("plot", "nemon", "lipschitz", 0.5, 8)


def test_an_experiment_set_to_null_is_switched_off_as_snakemake_merges_it():
    # a --configfile or --config is merged into config.yaml (snakemake.utils.update_config):
    # a key cannot be removed, only set to null
    cfg = copy.deepcopy(BASE)
    off = [name for name in BASE["experiments"] if name != "paper"]
    update_config(
        cfg, yaml.safe_load("experiments: {" + ", ".join(f"{n}: null" for n in off) + "}")
    )
    assert all(cfg["experiments"][n] is None for n in off)
    done = valid(cfg)
    assert list(done["experiments"]) == ["paper"]
    assert done["experiments"]["paper"] == valid(BASE)["experiments"]["paper"]
    groups = training_groups(done)
    assert {(g.model, g.objective) for g in groups} == {("nemon", "lipschitz")}
    assert len(groups) == len(BASE["experiments"]["paper"]["gamma"]) * len(BASE["seeds"])


@pytest.mark.parametrize("null", [None, "null", "~"])
def test_a_null_as_text_switches_an_experiment_off_too(null):
    # values of --config arrive as text: "experiments={mlp: null}" gives the string 'null'
    assert "mlp" not in valid(with_("experiments.mlp", null))["experiments"]
    with pytest.raises(ConfigurationError, match=r"experiments\.mlp: 'none'"):
        valid(with_("experiments.mlp", "none"))


@pytest.mark.parametrize(("text", "value"), [("true", True), ("True", True), ("false", False)])
def test_a_boolean_given_as_text_is_read_as_a_boolean(text, value):
    # --config "evaluation={warm_start: true}" hands the nested value over as the text 'true'
    merged = copy.deepcopy(BASE)
    update_config(merged, {"evaluation": {"warm_start": text}})
    assert valid(merged)["evaluation"]["warm_start"] is value
    with pytest.raises(ConfigurationError, match=r"evaluation\.warm_start: 'yes'.*true or false"):
        valid(with_("evaluation.warm_start", "yes"))


def test_switching_off_every_experiment_is_refused():
    cfg = with_("experiments", {name: None for name in BASE["experiments"]})
    with pytest.raises(ConfigurationError, match="every experiment is switched off"):
        valid(cfg)
    with pytest.raises(ConfigurationError, match="experiments"):
        valid(with_("experiments", {}))  # the schema's minProperties


# --- the bench tools' pinned code paths --------------------------------------------------------
_SHOW_ENV = (
    "import os; from nemon.config import pin_code_paths, REPRODUCIBLE_ENV; pin_code_paths(); "
    "print(' '.join(os.environ.get(k, '-') for k in sorted(REPRODUCIBLE_ENV)))"
)


def _show_env(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _SHOW_ENV], env=env, capture_output=True, text=True, check=True
    )


def test_pin_code_paths_starts_the_command_again_pinned():
    from nemon.config import REPRODUCIBLE_ENV

    bare = {k: v for k, v in os.environ.items() if k not in REPRODUCIBLE_ENV}
    bare.pop("NEMON_PINNED_REEXEC", None)
    want = " ".join(REPRODUCIBLE_ENV[k] for k in sorted(REPRODUCIBLE_ENV))
    run = _show_env(bare)  # none set: the same command runs again, with them
    assert run.stdout.split("\n")[-2] == want
    assert "started again with the workflow's pinned CPU code paths" in run.stderr
    run = _show_env({**bare, **REPRODUCIBLE_ENV})  # all set: runs once, says nothing
    assert run.stdout.split("\n")[-2] == want and "started again" not in run.stderr
    # already started again and still not pinned: refuses instead of looping
    fail = subprocess.run(
        [sys.executable, "-c", _SHOW_ENV],
        env={**bare, "NEMON_PINNED_REEXEC": "1"},
        capture_output=True,
        text=True,
    )
    assert fail.returncode != 0 and "could not set" in fail.stderr
