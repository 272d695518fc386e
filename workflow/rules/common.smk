"""Helpers shared by the rules: the validated config, the grid, output paths.

The logic lives in the package (nemon.config, nemon.contracts), where it is unit-tested.
"""

import os

from nemon.config import (
    job_environment,
    job_priority,
    load_schema,
    rule_suffix,
    training_groups,
    validate_config,
)
from nemon.contracts import OBJECTIVE_AXIS, fmt_float
from nemon.errors import ConfigurationError
from packaging.version import Version
from snakemake import __version__ as SNAKEMAKE_VERSION
from snakemake.exceptions import WorkflowError

SCHEMA = load_schema(
    os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
)
try:
    _valid = validate_config(dict(config), SCHEMA)
except ConfigurationError as e:
    raise WorkflowError(str(e)) from None
config.clear()
config.update(_valid)

OUT = config["output_prefix"]
# jobs inherit the environment of this process (locally, and with sbatch's default --export)
for _name, _value in job_environment(config).items():
    os.environ[_name] = _value
DATASETS = SCHEMA["properties"]["dataset"]["enum"]
GROUPS = training_groups(config)
# a training and an evaluation rule for each (model, objective) of the config
EXPERIMENTS = {
    rule_suffix(e["model"], e["objective"]): e for e in config["experiments"].values()
}


wildcard_constraints:
    dataset="|".join(DATASETS),
    gamma=r"-?[0-9]+(\.[0-9]+)?(e[-+][0-9]+)?",
    seed=r"[0-9]+",


def group_dir(exp):
    return f"{OUT}results/{{dataset}}/models/{exp['model']}/{exp['objective']}"


def point_pattern(exp):
    """The folder of each grid point of ``exp``, with {dataset}, {gamma}, {seed} wildcards."""
    axis, letter = OBJECTIVE_AXIS[exp["objective"]]
    return [
        f"{group_dir(exp)}/g{{gamma}}_{letter}{fmt_float(w)}_s{{seed}}"
        for w in exp[axis]
    ]


def point_files(exp, name):
    return [f"{p}/{name}" for p in point_pattern(exp)]


def all_point_files(name):
    """Input function: ``name`` of every grid point of the config."""

    def files(wildcards):
        return [
            os.path.join(d, name)
            for g in GROUPS
            for d in g.point_dirs(OUT, wildcards.dataset)
        ]

    return files


# Snakemake takes a function of the wildcards as a rule's priority from 9.17 on; before, every
# job has priority 0 and the order of ready jobs is the scheduler's own.
CALLABLE_PRIORITY = Version(SNAKEMAKE_VERSION) >= Version("9.17")


def priority_of(stage, exp):
    """Priority of ``exp``'s ``stage`` jobs (nemon.config.job_priority): long chains first."""
    if not CALLABLE_PRIORITY:
        return 0
    axis, _ = OBJECTIVE_AXIS[exp["objective"]]

    def priority(wildcards):
        gamma = float(wildcards.gamma)
        return job_priority(
            stage, exp["model"], exp["objective"], gamma, len(exp[axis])
        )

    return priority


def forward_runtime_settings(generic, specific):
    """A profile's ``set-threads``/``set-resources`` for ``generic`` (train, evaluate) also
    apply to rule ``specific`` (e.g. train_nemon_lipschitz), unless it names that rule itself.
    """
    rs = workflow.resource_settings
    for field, parsed in (
        ("overwrite_threads", "_parsed_overwrite_threads"),
        ("overwrite_resources", "_parsed_overwrite_resources"),
    ):
        current = getattr(rs, field)
        if generic in current and specific not in current:
            values = dict(current)
            values[specific] = values[generic]
            setattr(rs, field, type(current)(values))
            rs.__dict__.pop(parsed, None)  # a cached_property: parse again


def check_device_against_gpus():
    """Refuse a profile that gives training or evaluation jobs GPUs the config will not use."""
    if not config["device"] == "cpu":
        return
    with_gpu = sorted(
        r.name
        for r in workflow.rules
        if r.name.startswith(("train_", "evaluate_"))
        and (res := r.resources.get("gpu")) is not None
        and getattr(res, "value", res)
    )
    if with_gpu:
        raise WorkflowError(
            f"invalid config: device = cpu, but the profile gives rule(s) {', '.join(with_gpu)} "
            "a GPU (resources gpu=...), which the jobs would hold unused. Set device: auto or "
            "cuda, or use a profile without GPUs (profiles/slurm)."
        )


def final_targets():
    d, p = config["dataset"], OUT
    tables = [f"{p}results/{d}/summary.csv", f"{p}results/{d}/robustness.csv"]
    figures = [
        f"{p}figures/{d}/{name}.{ext}"
        for name in ("pareto", "accuracy_vs_eps", "lipschitz")
        for ext in ("pdf", "png")
    ]
    return tables + figures
