"""What the benchmarks on trained models share: finding model files, reading their records,
loading a model with its data set, and printing a table (iterations, gradients, certificate_gap).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from nemon.contracts import load_model
from nemon.errors import ConfigurationError


def model_files(folders: list[str]) -> list[Path]:
    """Every model file (``*.pt``, checkpoints aside) under ``folders``, or the files given."""
    files = []
    for f in folders:
        path = Path(f)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(p for p in sorted(path.rglob("*.pt")) if "checkpoint" not in p.name)
        else:
            raise ConfigurationError(f"{f}: no such file or folder")
    if not files:
        raise ConfigurationError(
            f"no model.pt under {folders}: the workflow writes them when it trains (they are not "
            "committed); run snakemake first"
        )
    return files


def record(path: Path) -> dict:
    """The ``metrics.json`` beside a model file (empty where there is none)."""
    metrics = path.parent / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.exists() else {}


def load_trained(path: Path, dataset: str | None = None):
    """``(model, data set name, name)``: the model (hash checked where a record gives one) and
    the data set it was trained on (``dataset``, else its record's)."""
    rec = record(path)
    model = load_model(path, sha256=rec.get("model_sha256"))
    dataset = dataset or rec.get("dataset")
    if dataset is None:
        raise ConfigurationError(f"{path}: no metrics.json beside it names its data set; --dataset")
    return model, dataset, "/".join(path.parent.parts[-2:])


def show(df: pd.DataFrame, markdown: bool, csv: str | None) -> None:
    """Print ``df`` (Markdown or plain) and write it to ``csv`` if given."""
    if csv:
        df.to_csv(csv, index=False)
    print(df.to_markdown(index=False, floatfmt=".3g") if markdown else df.to_string(index=False))
