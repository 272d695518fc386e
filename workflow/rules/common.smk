"""Helpers shared by the rules: config validation, wildcard formatting, the model grid."""

import itertools
import os

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

SCHEMA_PATH = os.path.join(
    workflow.basedir, "workflow", "schemas", "config.schema.yaml"
)
with open(SCHEMA_PATH) as _f:
    SCHEMA = yaml.safe_load(_f)

# The schema's enum is the one list of data sets the workflow knows (equal to nemon.data.DATASETS,
# which tests/test_workflow.py checks).
DATASETS = SCHEMA["properties"]["dataset"]["enum"]

# Text of a float in a wildcard: what repr() writes (0.0, 0.0001, 1e-05, -0.5, 1.5e+20).
FLOAT_RE = r"-?[0-9]+(\.[0-9]+)?(e[-+][0-9]+)?"

MODEL_DIR = "results/{dataset}/models/g{gamma}_l{lam}_s{seed}"


wildcard_constraints:
    dataset="|".join(DATASETS),
    gamma=FLOAT_RE,
    lam=FLOAT_RE,
    seed=r"[0-9]+",


def _key_path(path):
    """``['grid', 'gamma', 1]`` -> ``grid.gamma[1]``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level of the config)"


def _allowed(schema):
    """The constraints of one schema node in words, e.g. ``a number < 1``."""
    if "properties" in schema:
        return "the keys " + ", ".join(schema["properties"])
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    if schema.get("type") == "array":
        n = schema.get("minItems", 0)
        items = _allowed(schema.get("items", {}))
        return f"a list of at least {n} distinct values, each {items}"
    words = {"number": "a number", "integer": "an integer", "string": "a string"}
    kind = schema.get("type", "a value")
    kind = (
        " or ".join(words.get(t, t) for t in kind)
        if isinstance(kind, list)
        else words.get(kind, kind)
    )
    bounds = [
        f"{op} {schema[key]}"
        for key, op in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        )
        if key in schema
    ]
    if "pattern" in schema:
        bounds.append(f"matching {schema['pattern']}")
    return " ".join([kind, " and ".join(bounds)]).strip()


def validate_config(config):
    """Check ``config`` against the schema (filling in defaults) before any job runs.

    Snakemake's own message quotes the schema; this one names the config key,
    the value and the allowed range, and says where to fix it.
    """
    try:
        validate(config, SCHEMA_PATH)
    except WorkflowError as e:
        err = e.__context__
        if not isinstance(err, jsonschema.ValidationError):
            raise
        key = _key_path(err.absolute_path)
        msg = f"invalid config: {key}: {err.message}. Allowed: {_allowed(err.schema)}."
        if err.validator == "type" and isinstance(err.instance, str):
            try:
                float(err.instance)
                msg += (
                    f" YAML reads {err.instance} as text: write it with a decimal point, "
                    "e.g. 1.0e-4 instead of 1e-4."
                )
            except ValueError:
                pass
        fix = "Fix it in config.yaml or in the --configfile or --config that sets it."
        raise WorkflowError(f"{msg} {fix}") from None
    eps, pareto_eps = config["attack"]["eps"], config["figures"]["pareto_eps"]
    if pareto_eps not in eps:
        raise WorkflowError(
            f"invalid config: figures.pareto_eps = {pareto_eps} is not one of attack.eps = {eps}; "
            "the Pareto figure plots the inversion accuracy at that eps, so add it to "
            "attack.eps or choose one of those values."
        )


def fmt_float(x):
    """Wildcard text of a grid value; ``float(fmt_float(x)) == float(x)`` exactly.

    ``repr`` is the shortest text that reads back as the same float, so
    ``0``, ``0.0`` and ``0e0`` all give ``0.0`` and ``1.0e-4`` gives ``0.0001``.
    """
    return repr(float(x))


def grid_points():
    """Wildcard values of every (gamma, lam, seed) combination of ``config["grid"]``."""
    grid = config["grid"]
    return [
        {"gamma": fmt_float(g), "lam": fmt_float(l), "seed": str(s)}
        for g, l, s in itertools.product(grid["gamma"], grid["lam"], grid["seed"])
    ]


def model_files(name):
    """Input function: ``name`` (e.g. ``metrics.json``) of every model of the grid."""

    def files(wildcards):
        return [
            os.path.join(MODEL_DIR.format(dataset=wildcards.dataset, **p), name)
            for p in grid_points()
        ]

    return files


def point_config(wildcards):
    """Everything that defines one trained model: the grid point plus the model/training config."""
    return {
        "dataset": wildcards.dataset,
        "gamma": float(wildcards.gamma),
        "lam": float(wildcards.lam),
        "seed": int(wildcards.seed),
        "model": dict(config["model"]),
        "training": dict(config["training"]),
        # clean accuracy is measured at the evaluation tolerance, like the robustness table
        "attack": {k: config["attack"][k] for k in ("tol", "max_iter")},
    }


def final_targets():
    d = config["dataset"]
    tables = [f"results/{d}/summary.csv", f"results/{d}/robustness.csv"]
    figures = [
        f"figures/{d}/{name}.{ext}"
        for name in ("pareto", "accuracy_vs_eps", "lipschitz_vs_lambda")
        for ext in ("pdf", "png")
    ]
    return tables + figures
