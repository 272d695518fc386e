"""nemon.config: the workflow config is validated before any job, with messages naming the key."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from snakemake.utils import update_config

from nemon.config import (
    allowed,
    experiment_training,
    job_cost,
    job_priority,
    load_schema,
    rule_name,
    schema_defaults,
    training_groups,
    validate_config,
)
from nemon.errors import ConfigurationError
from nemon.training import Objective, Schedule

SCHEMA = load_schema()  # the package's own schema (nemon/config.schema.yaml)
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
    # every experiment names its own width, epochs and schedule once validated
    assert valid({})["experiments"] == {
        "paper": {
            "model": "nemon",
            "objective": "lipschitz",
            "gamma": [0.0],
            "lam": [0.0],
            "hidden": 100,
            "epochs": 10,
            "training": {"lr": 1.0e-3, "lr_milestones": [], "lr_factor": 0.1},
        }
    }


def test_the_smoke_config_is_valid():
    smoke = yaml.safe_load((REPO / "profiles/smoke/smoke-config.yaml").read_text())
    merged = copy.deepcopy(BASE)
    update_config(merged, smoke)  # as Snakemake merges a --configfile: mapping by mapping
    cfg = valid(merged)
    assert cfg["output_prefix"] == "smoke/"
    # a tiny experiment of its own width, epochs and schedule keys
    exp = cfg["experiments"]["mlp-narrow"]
    assert exp["hidden"] != cfg["model"]["hidden"] and exp["epochs"] != cfg["training"]["epochs"]
    assert exp["training"] == {**cfg["training"]["interval"], "lr": 1.0e-3, "ramp": 0.5}
    # the same grid where config.yaml is not read (a run from another directory; the
    # schedules then come from the schema's training defaults)
    alone = valid(copy.deepcopy(smoke))

    def grid(c):
        return {n: {k: v for k, v in e.items() if k != "training"} for n, e in c.items()}

    assert grid(alone["experiments"]) == grid(cfg["experiments"])


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


def test_two_experiments_may_share_model_and_objective_and_stay_apart():
    cfg = copy.deepcopy(BASE)
    cfg["experiments"]["again"] = {**cfg["experiments"]["paper"], "hidden": 50}
    groups = training_groups(valid(cfg))
    again = [g for g in groups if g.experiment == "again"]
    paper = [g for g in groups if g.experiment == "paper"]
    assert len(again) == len(paper) and {g.hidden for g in again} == {50}
    dirs = {d for g in groups for d in g.point_dirs("", "mnist")}
    assert len(dirs) == sum(len(g.weights) for g in groups)  # no two models share a folder
    keys = [tuple(k.values()) for g in groups for k in g.point_keys("mnist")]
    assert len(keys) == len(set(keys))


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
    points = [(g.experiment, g.gamma, w, g.seed) for g in groups for w in g.weights]
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
    assert dirs[0].startswith(f"smoke/results/mnist-5k/models/{g.experiment}/g")


PAPER_SIZE = {"hidden": 100, "epochs": 30}  # the width and epochs POINT_COST was measured at


def cost(g):
    return job_cost(g.model, g.objective, g.gamma, len(g.weights), hidden=g.hidden, epochs=g.epochs)


def test_job_cost_grows_with_gamma_and_points_and_fits_the_measured_paper_grid():
    costs = [job_cost("nemon", "lipschitz", g, 8, **PAPER_SIZE) for g in (0.0, 0.5, 0.9, 0.99)]
    assert costs == sorted(costs) and len(set(costs)) == 4
    assert job_cost("nemon", "lipschitz", 0.5, 3, **PAPER_SIZE) < job_cost(
        "nemon", "lipschitz", 0.5, 8, **PAPER_SIZE
    )
    # per point 42, 70, 221 s at gamma 0, 0.5, 0.9 (Fashion-MNIST, committed train_seconds)
    ratio = job_cost("nemon", "lipschitz", 0.9, 1, **PAPER_SIZE) / job_cost(
        "nemon", "lipschitz", 0.0, 1, **PAPER_SIZE
    )
    assert ratio == pytest.approx(221 / 42, rel=0.05)
    assert job_cost("mlp", "lipschitz", 0.0, 4, **PAPER_SIZE) < job_cost(
        "nemon", "lipschitz", 0.0, 4, **PAPER_SIZE
    )


def test_job_cost_follows_the_experiments_width_and_epochs():
    base = job_cost("mlp", "interval", 0.0, 1, hidden=100, epochs=40)
    assert job_cost("mlp", "interval", 0.0, 1, hidden=25, epochs=40) == pytest.approx(base / 4)
    assert job_cost("mlp", "interval", 0.0, 1, hidden=100, epochs=20) == pytest.approx(base / 2)
    groups = {g.experiment: g for g in training_groups(valid(BASE)) if g.seed == 0}
    wide, narrow = groups["followup-mlp-wide"], groups["followup-mlp"]
    assert (wide.hidden, narrow.hidden, wide.epochs) == (100, 25, 40)
    assert cost(wide) == pytest.approx(4 * cost(narrow))
    assert cost(groups["followup-nemon"]) == pytest.approx(
        2 * job_cost("nemon", "interval", 0.0, 1, **PAPER_SIZE)
    )  # 60 epochs, twice the reference's 30
    # priorities follow: the wide baseline's training before the narrow one's
    prio = {
        n: job_priority(
            "train", g.model, g.objective, g.gamma, len(g.weights), hidden=g.hidden, epochs=g.epochs
        )
        for n, g in groups.items()
    }
    assert prio["followup-mlp-wide"] > prio["followup-mlp"]


def test_the_paper_grids_slowest_group_gets_the_highest_priority():
    groups = training_groups(valid(BASE))
    prio = {
        (g, stage): job_priority(
            stage,
            g.model,
            g.objective,
            g.gamma,
            len(g.weights),
            hidden=g.hidden,
            epochs=g.epochs,
        )
        for g in groups
        for stage in ("train", "evaluate")
    }
    top = max(prio, key=prio.get)
    assert top[1] == "train" and top[0].gamma == max(g.gamma for g in groups)
    assert top[0].experiment == "paper" and cost(top[0]) == max(cost(g) for g in groups)
    for g in groups:  # a group's training leads a longer chain than its evaluation
        assert prio[g, "train"] > prio[g, "evaluate"] > 0


def test_an_evaluations_priority_does_not_grow_with_the_training_epochs():
    def prio(stage, epochs):
        return job_priority(stage, "nemon", "interval", 0.0, 1, hidden=100, epochs=epochs)

    assert prio("evaluate", 60) == prio("evaluate", 30)
    assert prio("train", 60) > prio("train", 30)


def test_job_priority_refuses_an_unknown_stage():
    with pytest.raises(ValueError, match="unknown stage 'plot'"):
        job_priority("plot", "nemon", "lipschitz", 0.5, 8, **PAPER_SIZE)


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
    assert {g.experiment for g in groups} == {"paper"}
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


# --- per-experiment width, epochs and schedule ---------------------------------------------------
def test_an_experiment_without_its_own_settings_takes_the_global_ones():
    cfg = valid(BASE)
    paper = cfg["experiments"]["paper"]
    assert paper["hidden"] == BASE["model"]["hidden"]
    assert paper["epochs"] == BASE["training"]["epochs"]
    assert paper["training"] == cfg["training"]["lipschitz"]
    assert cfg["experiments"]["certified"]["training"] == cfg["training"]["interval"]
    # a changed global value reaches every experiment without its own
    cfg = valid(with_("training.epochs", 7))
    assert cfg["experiments"]["paper"]["epochs"] == 7
    assert cfg["experiments"]["followup-nemon"]["epochs"] == 60


def test_an_experiments_training_keys_are_merged_over_its_objectives_block():
    cfg = with_("experiments.certified.training", {"lr": 1.0e-4, "warmup": 0.1})
    done = valid(cfg)["experiments"]["certified"]["training"]
    iv = valid(BASE)["training"]["interval"]
    assert done == {**iv, "lr": 1.0e-4, "warmup": 0.1}
    assert valid(BASE)["experiments"]["certified"]["training"]["lr"] == iv["lr"]  # others keep it


def test_the_followup_experiments_train_as_the_follow_up_paper_did():
    cfg = valid(BASE)

    def schedule(name):
        tr = experiment_training(cfg, name)
        sch = tr["schedule"]
        s = Schedule(
            tr["epochs"], tr["batch_size"], sch["lr"], tuple(sch["lr_milestones"]), sch["lr_factor"]
        )
        o = Objective("interval", (0.1,), sch["kappa"], sch["warmup"], sch["ramp"])
        return s, o

    # NEMON: 60 epochs, 10 clean, eps_t and kappa ramped over epochs 11-20, lr x 0.2 at 30
    s, o = schedule("followup-nemon")
    assert s.epochs == 60 and s.lr == 5.0e-4
    assert s.lr_at(30) == 5.0e-4 and s.lr_at(31) == pytest.approx(1.0e-4) == s.lr_at(60)
    assert o.kappa == 0.75
    assert o.progress(10 / 60 - 1e-6) == 0 and o.progress(10 / 60 + 1e-3) > 0
    assert o.progress(20 / 60 - 1e-3) < 1 and o.progress(20 / 60 + 1e-3) == 1
    # the IBP baseline: 40 epochs, 10 clean, ramp over 11-20, lr x 0.2 at epoch 30; 25 units
    for name, hidden in (("followup-mlp", 25), ("followup-mlp-wide", 100)):
        s, o = schedule(name)
        assert s.epochs == 40 and s.lr_at(30) == 5.0e-4 and s.lr_at(31) == pytest.approx(1e-4)
        assert o.progress(10 / 40) == 0 and o.progress(20 / 40) == 1
        assert cfg["experiments"][name]["hidden"] == hidden
        assert cfg["experiments"][name]["model"] == "mlp"
    # the wide one differs from the narrow one in the width only
    narrow, wide = (dict(cfg["experiments"][n]) for n in ("followup-mlp", "followup-mlp-wide"))
    assert {k for k in narrow if narrow[k] != wide[k]} == {"hidden"}


def test_experiment_training_gives_the_rule_its_epochs_and_schedule_and_nothing_else():
    cfg = valid(BASE)
    tr = experiment_training(cfg, "followup-mlp")
    assert tr["epochs"] == 40 and tr["schedule"] == cfg["experiments"]["followup-mlp"]["training"]
    assert "interval" not in tr and "lipschitz" not in tr
    for key in ("extra_epochs", "batch_size", "solver", "stop", "tol", "max_iter"):
        assert tr[key] == cfg["training"][key]


def test_rule_names_are_the_stage_and_the_experiment_name():
    assert rule_name("train", "followup-mlp") == "train_followup-mlp"
    assert rule_name("evaluate", "paper") == "evaluate_paper"
    with pytest.raises(ValueError, match="unknown stage"):
        rule_name("plot", "paper")


FIX = "Fix it in config.yaml or in the --configfile or --config that sets it."
BAD_EXPERIMENTS = {
    "width_zero": (
        "experiments.followup-mlp.hidden",
        0,
        "invalid config: experiments.followup-mlp.hidden: 0 is less than the minimum of 1. "
        "Allowed: an integer >= 1. hidden is a number of hidden units (the models' width). " + FIX,
    ),
    "width_fraction": (
        "experiments.followup-mlp.hidden",
        2.5,
        "invalid config: experiments.followup-mlp.hidden: 2.5 is a float but an integer is "
        "needed (write a whole number). Allowed: an integer >= 1. " + FIX,
    ),
    "epochs_zero": (
        "experiments.followup-nemon.epochs",
        0,
        "invalid config: experiments.followup-nemon.epochs: 0 is less than the minimum of 1. "
        "Allowed: an integer >= 1. " + FIX,
    ),
    "ramp_after_the_run": (
        "experiments.followup-nemon.training.ramp",
        0.9,
        "invalid config: experiments.followup-nemon.training: warmup 0.1667 + ramp 0.9 > 1 (the "
        "keys it does not set come from training.interval), so the ramp would end after the "
        "experiment's 60 epochs; both are fractions of them. " + FIX,
    ),
    "ramp_after_the_run_merged": (
        "experiments.certified.training",
        {"warmup": 0.8},
        "invalid config: experiments.certified.training: warmup 0.8 + ramp 0.25 > 1 (the keys it "
        "does not set come from training.interval), so the ramp would end after the "
        "experiment's 30 epochs; both are fractions of them. " + FIX,
    ),
    "milestone_an_epoch": (
        "experiments.followup-nemon.training.lr_milestones",
        [30],
        "invalid config: experiments.followup-nemon.training.lr_milestones[0]: 30 is greater "
        "than or equal to the maximum of 1. Allowed: a number > 0 and < 1. lr_milestones are "
        "fractions of the epochs (0.5: after half of them), not epoch numbers. " + FIX,
    ),
    "milestone_zero": (
        "experiments.followup-mlp.training.lr_milestones",
        [0.0, 0.5],
        "invalid config: experiments.followup-mlp.training.lr_milestones[0]: 0.0 is less than "
        "or equal to the minimum of 0. Allowed: a number > 0 and < 1. lr_milestones are "
        "fractions of the epochs (0.5: after half of them), not epoch numbers. " + FIX,
    ),
    "interval_key_for_lipschitz": (
        "experiments.paper.training",
        {"kappa": 0.5},
        "invalid config: experiments.paper.training.kappa: `kappa` is not a schedule key of "
        "objective lipschitz (its keys: lr, lr_milestones, lr_factor); remove it. " + FIX,
    ),
    "unknown_schedule_key": (
        "experiments.paper.training",
        {"lr_decay": 0.5},
        "invalid config: experiments.paper.training: Additional properties are not allowed "
        "('lr_decay' was unexpected). Allowed: the keys lr, lr_milestones, lr_factor, kappa, "
        "warmup, ramp. " + FIX,
    ),
    "a_name_that_is_no_folder": (
        "experiments",
        {"paper/2": {"model": "nemon", "objective": "lipschitz", "lam": [0.0]}},
        "invalid config: experiments: the name 'paper/2' cannot name an experiment: a name is a "
        "folder and part of rule names, so it holds letters, digits, '-' and '_' only, and "
        "starts with a letter or digit. Rename it. " + FIX,
    ),
}


@pytest.mark.parametrize("name", BAD_EXPERIMENTS)
def test_bad_experiment_settings_are_refused_naming_the_experiment_and_key(name):
    path, value, message = BAD_EXPERIMENTS[name]
    with pytest.raises(ConfigurationError) as e:
        valid(with_(path, value))
    assert str(e.value) == message


def test_an_experiment_set_from_the_command_line_reads_its_numbers():
    # --config "experiments={followup-mlp: {hidden: 50, training: {lr: 1e-3}}}" gives text
    merged = copy.deepcopy(BASE)
    update_config(merged, {"experiments": {"followup-mlp": {"hidden": "50", "epochs": "3"}}})
    update_config(merged, {"experiments": {"followup-mlp": {"training": {"lr": "1e-3"}}}})
    exp = valid(merged)["experiments"]["followup-mlp"]
    assert (exp["hidden"], exp["epochs"], exp["training"]["lr"]) == (50, 3, 1e-3)
    assert exp["training"]["lr_milestones"] == [0.75]  # the rest of its training: is kept


# --- one source per default: the package's schema -------------------------------------------------
def test_the_schema_is_the_packages_resource_and_the_only_copy():
    from importlib import resources

    text = resources.files("nemon").joinpath("config.schema.yaml").read_text(encoding="utf-8")
    assert load_schema() == yaml.safe_load(text)
    assert not (REPO / "workflow" / "schemas").exists(), "a second copy of the schema"
    copies = [p for p in REPO.rglob("*.schema.yaml") if ".venv" not in p.parts]
    assert copies == [REPO / "src" / "nemon" / "config.schema.yaml"], copies


def test_load_schema_works_from_a_copy_of_the_package_outside_the_repository(tmp_path):
    # a non-editable install: the package alone, no workflow/ beside it (parents[2] is elsewhere)
    import shutil

    import nemon

    pkg = tmp_path / "site" / "nemon"
    shutil.copytree(Path(nemon.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    site = str(tmp_path / "site")
    code = (
        f"import sys; sys.path.insert(0, {site!r}); "
        "import nemon, nemon.config as c; "
        "print(nemon.__file__); "
        "print(c.load_schema()['properties']['evaluation']['properties']['max_iter']['default']); "
        "print(c.schema_defaults()['training']['epochs'])"
    )
    # -I: no PYTHONPATH, no user site; the copy comes first on the path
    run = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout.split()
    assert out[0] == str(pkg / "__init__.py")
    assert out[1:] == ["5000", "10"]


def test_setuptools_ships_the_schema_as_package_data():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "config.schema.yaml" in project["tool"]["setuptools"]["package-data"]["nemon"]


def test_schema_defaults_are_what_an_empty_config_validates_to():
    defaults = schema_defaults()
    done = valid({})
    for key in ("training", "evaluation", "figures", "model", "seeds", "dataset"):
        assert done[key] == defaults[key], key
    defaults["training"]["epochs"] = -1  # a fresh copy every time
    assert schema_defaults()["training"]["epochs"] == 10
