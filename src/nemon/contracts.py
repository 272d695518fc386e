"""The contracts between workflow stages, in one place (scripts, tests and docs use these).

A *grid point* is one trained model, named by its keys :data:`POINT_KEYS`:
``dataset, experiment, model, objective, gamma, lam, eps_t, seed``. The experiment (its name
under ``experiments:`` in the config) is the identity: two experiments may share model and
objective. Its files live in one folder (:func:`point_dir`,
``<root>/<dataset>/models/<experiment>/g<gamma>_<l|e><weight>_s<seed>/``), which names every key
but the model (:data:`FOLDER_KEYS`; the records name the model):

* ``model.pt`` — the weights (:func:`save_model` / :func:`load_model`); its
  SHA-256 is recorded in ``metrics.json`` and checked on every load;
* ``metrics.json`` — the training record (:data:`METRICS_SCHEMA`);
* ``evaluation.json`` — the evaluation record (:data:`EVALUATION_SCHEMA`);
* ``robustness.csv`` — one row per instrument, ``eps`` and input set
  (:data:`ROBUSTNESS_COLUMNS`).

The aggregation joins them into ``summary.csv`` (:data:`SUMMARY_COLUMNS`) and
``robustness.csv`` per data set. Every record is validated when read
(:func:`read_json_record`, :func:`read_robustness`): ranges, required keys and
agreement with the folder it sits in; a bad file is an error naming it.
:func:`member_name` names a model within its training group (``lam=0.001``, ``eps_t=0.1``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigurationError, CorruptFileError
from .fileio import atomic_torch_save, atomic_write_text, load_torch_verified
from .mlp import MLP
from .model import NEMON

# --- models ---------------------------------------------------------------------------------
MODELS = ("nemon", "nemon-unweighted", "mlp", "mon")
OBJECTIVES = ("lipschitz", "interval")
# the weight axis of each objective, and the letter naming it in a folder
OBJECTIVE_AXIS = {"lipschitz": ("lam", "l"), "interval": ("eps_t", "e")}
POINT_KEYS = ["dataset", "experiment", "model", "objective", "gamma", "lam", "eps_t", "seed"]
# the keys a model's folder names (the model is named by its records)
FOLDER_KEYS = [k for k in POINT_KEYS if k != "model"]
# an experiment name: a folder, part of a rule name and a table cell (the config schema's
# propertyNames of `experiments` says the same; tests/test_contracts.py holds them equal)
EXPERIMENT_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]*$"
MODEL_FORMAT = "nemon.model/1"


def model_class(name: str) -> type[nn.Module]:
    if name in ("nemon", "nemon-unweighted"):
        return NEMON
    if name == "mlp":
        return MLP
    if name == "mon":
        from .mon import MON

        return MON
    raise ConfigurationError(f"unknown model {name!r}; choose one of {list(MODELS)}")


def build_model(
    name: str,
    *,
    in_features: int,
    hidden: int,
    out_features: int,
    gamma: float,
    input_mean: float,
    input_std: float,
    solver: Mapping | None = None,
) -> nn.Module:
    """A freshly initialised model of kind ``name`` (initialisation uses torch's global RNG).

    ``solver``: ``{solver, tol, max_iter, stop}`` for the implicit models (ignored by
    the MLP, which solves nothing).
    """
    cls = model_class(name)
    kw = dict(input_mean=input_mean, input_std=input_std)
    if name == "mlp":
        return cls(in_features, hidden, out_features, **kw)
    solver = dict(solver or {})
    if name == "mon":
        solver.pop("stop", None)  # MON's splitting solvers use the relative-step rule
        solver["solver"] = solver.get("mon_solver", "pr")
        solver.pop("mon_solver", None)
        return cls(in_features, hidden, out_features, gamma=gamma, **kw, **solver)
    solver.pop("mon_solver", None)
    weighted = name == "nemon"
    return cls(in_features, hidden, out_features, gamma=gamma, weighted=weighted, **kw, **solver)


def model_name(model: nn.Module) -> str:
    """The ``model`` key of a model object (inverse of :func:`build_model`)."""
    if isinstance(model, NEMON):
        return "nemon" if model.weighted else "nemon-unweighted"
    if isinstance(model, MLP):
        return "mlp"
    return "mon"


def save_model(model: nn.Module, path: str | os.PathLike[str]) -> str:
    """Write ``model`` atomically (format, kind, kwargs, weights); return its SHA-256."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": MODEL_FORMAT,
        "model": model_name(model),
        "kwargs": model.constructor_kwargs(),
        "state_dict": state,
    }
    return atomic_torch_save(payload, path)


def load_model(path: str | os.PathLike[str], *, sha256: str | None) -> nn.Module:
    """Read a file of :func:`save_model`, verifying its SHA-256 (recorded in ``metrics.json``)."""
    fix = "delete it (and its metrics.json) and rerun snakemake: rule train rebuilds it"
    payload = load_torch_verified(path, sha256=sha256, what="model file", fix=fix)
    if not isinstance(payload, Mapping) or payload.get("format") != MODEL_FORMAT:
        found = payload.get("format") if isinstance(payload, Mapping) else type(payload).__name__
        raise CorruptFileError(
            f"model file {path} has format {found!r}, expected {MODEL_FORMAT!r}; {fix}"
        )
    try:
        cls = model_class(payload["model"])
        model = cls(**payload["kwargs"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError, ConfigurationError) as e:
        raise CorruptFileError(f"model file {path} cannot be rebuilt ({e}); {fix}") from e
    return model


# --- checkpoints --------------------------------------------------------------------------------
CHECKPOINT_FORMAT = "nemon.checkpoint/1"


def save_checkpoint(state: Mapping, path: str | os.PathLike[str]) -> None:
    """Write a training checkpoint atomically, with its digest inside the file."""
    import hashlib
    import io

    buf = io.BytesIO()
    torch.save(dict(state), buf)
    blob = buf.getvalue()
    atomic_torch_save(
        {"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(blob).hexdigest(), "payload": blob},
        path,
    )


def load_checkpoint(path: str | os.PathLike[str]) -> dict | None:
    """The checkpoint at ``path``, ``None`` when there is none; a damaged one is an error."""
    import hashlib
    import io

    path = Path(path)
    if not path.exists():
        return None
    fix = "delete it to restart that training from epoch 1"
    outer = load_torch_verified(path, what="training checkpoint", fix=fix)
    ok = isinstance(outer, Mapping) and outer.get("format") == CHECKPOINT_FORMAT
    if not ok or not isinstance(outer.get("payload"), bytes):
        raise CorruptFileError(
            f"training checkpoint {path} is not a {CHECKPOINT_FORMAT} file; {fix}"
        )
    blob = outer["payload"]
    digest = hashlib.sha256(blob).hexdigest()
    if digest != outer.get("sha256"):
        raise CorruptFileError(
            f"training checkpoint {path} is damaged: its content has SHA-256 {digest}, the "
            f"recorded one is {outer.get('sha256')}; {fix}"
        )
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


# --- folders --------------------------------------------------------------------------------
def fmt_float(x: float) -> str:
    """Folder text of a grid value; ``float(fmt_float(x)) == float(x)`` exactly (``repr``)."""
    return repr(float(x))


def point_name(objective: str, gamma: float, weight: float, seed: int) -> str:
    """``g{gamma}_l{lam}_s{seed}`` (lipschitz) or ``g{gamma}_e{eps_t}_s{seed}`` (interval)."""
    _, letter = OBJECTIVE_AXIS[objective]
    return f"g{fmt_float(gamma)}_{letter}{fmt_float(weight)}_s{int(seed)}"


def member_name(objective: str, weight: float) -> str:
    """``lam=0.001`` / ``eps_t=0.1``: a model within its training group (logs, side files)."""
    axis, _ = OBJECTIVE_AXIS[objective]
    return f"{axis}={weight:g}"


def point_dir(root: str, dataset: str, experiment: str, objective: str, gamma, weight, seed) -> str:
    """``{root}/{dataset}/models/{experiment}/{point_name}``."""
    return f"{root}/{dataset}/models/{experiment}/{point_name(objective, gamma, weight, seed)}"


def point_keys(
    dataset: str, experiment: str, model: str, objective: str, gamma, weight, seed
) -> dict:
    """The :data:`POINT_KEYS` of a grid point (the unused weight axis is 0)."""
    axis, _ = OBJECTIVE_AXIS[objective]
    return {
        "dataset": dataset,
        "experiment": experiment,
        "model": model,
        "objective": objective,
        "gamma": float(gamma),
        "lam": float(weight) if axis == "lam" else 0.0,
        "eps_t": float(weight) if axis == "eps_t" else 0.0,
        "seed": int(seed),
    }


# --- records ------------------------------------------------------------------------------
_PROB = {"type": "number", "minimum": 0, "maximum": 1}
_NONNEG = {"type": "number", "minimum": 0}
_COUNT = {"type": "integer", "minimum": 0}
_KEYS_SCHEMA = {
    "dataset": {"type": "string"},
    "experiment": {"type": "string", "pattern": EXPERIMENT_PATTERN},
    "model": {"enum": list(MODELS)},
    "objective": {"enum": list(OBJECTIVES)},
    "gamma": {"type": "number", "exclusiveMaximum": 1},
    "lam": _NONNEG,
    "eps_t": _PROB,
    "seed": _COUNT,
}

METRICS_SCHEMA = {
    "type": "object",
    "required": [
        *POINT_KEYS,
        "mu",
        "lipschitz_bound",
        "epochs",
        "fwd_iters_mean",
        "fwd_iters_max",
        "bwd_iters_mean",
        "bwd_iters_max",
        "not_converged",
        "final_train_loss",
        "loss_rel_change",
        "bound_rel_change",
        "training_converged",
        "train_seconds",
        "model_sha256",
        "history",
        "provenance",
    ],
    "properties": {
        **_KEYS_SCHEMA,
        "mu": {"type": "number"},
        "lipschitz_bound": {"type": "number", "exclusiveMinimum": 0},
        "epochs": {"type": "integer", "minimum": 1},
        "fwd_iters_mean": _NONNEG,
        "fwd_iters_max": _COUNT,
        "bwd_iters_mean": _NONNEG,
        "bwd_iters_max": _COUNT,
        "not_converged": _COUNT,
        "final_train_loss": _NONNEG,
        "loss_rel_change": _NONNEG,
        "bound_rel_change": _NONNEG,
        "training_converged": {"type": "boolean"},
        "train_seconds": _NONNEG,
        "model_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "history": {"type": "array", "minItems": 1},
        "provenance": {"type": "object"},
    },
}

EVALUATION_SCHEMA = {
    "type": "object",
    "required": [
        *POINT_KEYS,
        "clean_acc",
        "clean_not_converged",
        "lipschitz_lower",
        "lipschitz_bound",
        "lipschitz_tightness",
        "evaluation_seconds",
        "settings",
        "provenance",
    ],
    "properties": {
        **_KEYS_SCHEMA,
        "clean_acc": _PROB,
        "clean_not_converged": _COUNT,
        "lipschitz_lower": _NONNEG,
        "lipschitz_bound": {"type": "number", "exclusiveMinimum": 0},
        "lipschitz_tightness": {"type": "number", "minimum": 1},
        "evaluation_seconds": _NONNEG,
        "settings": {"type": "object"},
        "provenance": {"type": "object"},
    },
}

SUMMARY_COLUMNS = [
    *POINT_KEYS,
    "clean_acc",
    "mu",
    "lipschitz_bound",
    "lipschitz_lower",
    "lipschitz_tightness",
    "fwd_iters_mean",
    "fwd_iters_max",
    "bwd_iters_mean",
    "bwd_iters_max",
    "not_converged",
    "clean_not_converged",
    "epochs",
    "final_train_loss",
    "loss_rel_change",
    "bound_rel_change",
    "training_converged",
    "train_seconds",
    "evaluation_seconds",
]

INSTRUMENTS = (
    "clean",
    "inversion",
    "pgd",
    "autoattack",
    "certified_lipschitz",
    "certified_interval",
)
ATTACKS = ("inversion", "pgd", "autoattack")
CERTIFICATES = ("certified_lipschitz", "certified_interval")

ROBUSTNESS_COLUMNS = [
    *POINT_KEYS,
    "attack",  # one of INSTRUMENTS
    "eps",
    "inputs",  # which images: "test" (the full test set) or "subset-<n>" (seeded, stratified)
    "images",
    "accuracy",
    "top_class_fraction",  # share of the most frequent predicted class (degenerate when >= 0.9)
    "degenerate",
    "not_converged",  # solves behind this number that stopped at max_iter
    "violations",  # images certified at this eps yet broken by this attack (must be 0)
]
DEGENERATE_SHARE = 0.9


def _fail(path, problem: str, fix: str) -> CorruptFileError:
    return CorruptFileError(f"{path}: {problem}; {fix}")


def _check_keys(record: Mapping, expect: Mapping | None, path, fix: str) -> None:
    for key, want in (expect or {}).items():
        got = record.get(key)
        same = got == want
        if isinstance(want, float) and isinstance(got, (int, float)):
            same = float(got) == want
        if not same:
            raise _fail(path, f"{key} is {got!r} but its folder says {want!r}", fix)


def read_json_record(
    path: str | os.PathLike[str], schema: Mapping, *, expect: Mapping | None = None, fix: str
) -> dict:
    """Read and validate a JSON record: schema, finite numbers, agreement with ``expect``."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise _fail(path, f"cannot be read ({e})", fix) from e
    try:
        record = json.loads(text, parse_constant=lambda c: float(c))
    except json.JSONDecodeError as e:
        raise _fail(path, f"is not valid JSON ({e}); it is truncated or damaged", fix) from e
    import jsonschema  # the workflow's dependency; imported where records are read

    try:
        jsonschema.validate(record, schema)
    except jsonschema.ValidationError as e:
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise _fail(path, f"invalid record at {where}: {e.message}", fix) from None
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value) and key in schema["properties"]:
            raise _fail(path, f"{key} is {value}, not a finite number", fix)
    _check_keys(record, expect, path, fix)
    return record


def write_json(path: str | os.PathLike[str], record: Mapping) -> None:
    """Write a record atomically (no NaN or infinity: they are not JSON)."""
    atomic_write_text(path, json.dumps(record, indent=2, allow_nan=False) + "\n")


def read_robustness(path: str | os.PathLike[str], *, expect: Mapping | None = None):
    """Read one model's ``robustness.csv`` (a pandas DataFrame) and check columns, values, keys."""
    import pandas as pd  # the workflow's dependency

    fix = "delete it and rerun snakemake: rule evaluate rebuilds it"
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise _fail(path, f"cannot be read as CSV ({e})", fix) from e
    if list(df.columns) != ROBUSTNESS_COLUMNS:
        raise _fail(path, f"has columns {list(df.columns)}, expected {ROBUSTNESS_COLUMNS}", fix)
    if df.empty:
        raise _fail(path, "has no rows", fix)
    if df.isna().any().any():
        bad = df.columns[df.isna().any()].tolist()
        raise _fail(path, f"has empty cells in {bad}", fix)
    if not df["accuracy"].between(0, 1).all() or not df["eps"].between(0, 1).all():
        raise _fail(path, "has an accuracy or eps outside [0, 1]", fix)
    if not set(df["attack"]) <= set(INSTRUMENTS):
        raise _fail(
            path, f"has unknown instruments {sorted(set(df['attack']) - set(INSTRUMENTS))}", fix
        )
    for key, want in (expect or {}).items():
        values = set(df[key])
        if len(values) != 1 or next(iter(values)) != want:
            raise _fail(path, f"{key} is {sorted(values)} but its folder says {want!r}", fix)
    return df


def keys_from_path(path: str | os.PathLike[str]) -> dict:
    """The :data:`FOLDER_KEYS` a per-model file's folder names (inverse of :func:`point_dir`):
    every key of :data:`POINT_KEYS` but the model, which only the records name. The objective
    is the weight's letter (``l``: lipschitz, ``e``: interval)."""
    import re

    parts = Path(path).parts
    try:
        i = len(parts) - 1 - parts[::-1].index("models")
        dataset, experiment, point = parts[i - 1], parts[i + 1], parts[i + 2]
        if i + 4 != len(parts):  # models/<experiment>/<point>/<file>
            raise IndexError
    except (ValueError, IndexError):
        raise ConfigurationError(
            f"{path} is not a file in .../<dataset>/models/<experiment>/<point>/ (the layout of "
            "nemon.contracts.point_dir); rebuild it with the workflow"
        ) from None
    if not re.fullmatch(EXPERIMENT_PATTERN, experiment):
        raise ConfigurationError(f"{path}: {experiment!r} is not an experiment name")
    letters = {letter: objective for objective, (_, letter) in OBJECTIVE_AXIS.items()}
    m = re.fullmatch(rf"g([^_]+)_([{''.join(letters)}])([^_]+)_s([0-9]+)", point)
    if not m:
        raise ConfigurationError(f"{path}: the folder {point!r} does not name a grid point")
    objective = letters[m.group(2)]
    keys = point_keys(
        dataset, experiment, "", objective, float(m.group(1)), float(m.group(3)), int(m.group(4))
    )
    del keys["model"]
    return keys


def write_table(df, path: str | os.PathLike[str]) -> None:
    """Write a tidy table atomically (floats in full: the shortest text that reads back exactly)."""
    atomic_write_text(path, df.to_csv(index=False))
