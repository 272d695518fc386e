"""Rule evaluate_<model>_<objective>: every instrument on every model of one training group.

Writes each model's robustness.csv (one row per instrument, eps and input set) and
evaluation.json (clean accuracy, Lipschitz lower bound, timings, settings).
"""

import sys

import pandas as pd
import torch

from nemon.cache import load_prepared
from nemon.contracts import (
    EVALUATION_SCHEMA,
    METRICS_SCHEMA,
    ROBUSTNESS_COLUMNS,
    load_model,
    point_keys,
    read_json_record,
    write_json,
)
from nemon.evaluation import EvalSettings, evaluate_model
from nemon.fileio import atomic_write_text
from nemon.training import provenance, resolve_device

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

w, p = smk.wildcards, smk.params
torch.set_num_threads(smk.threads)
device = resolve_device(p.device, gpus=smk.resources.get("gpu", 0))
ds = load_prepared(smk.input.data, expected_name=w.dataset)
settings = EvalSettings.from_config(p.evaluation)
prov = provenance(smk.scriptdir, device, smk.threads)
for k, weight in enumerate(p.weights):
    keys = point_keys(w.dataset, p.model, p.objective, float(w.gamma), weight, int(w.seed))
    fix = "delete it and rerun snakemake: the training rule rebuilds it"
    metrics = read_json_record(smk.input.metrics[k], METRICS_SCHEMA, expect=keys, fix=fix)
    model = load_model(smk.input.model[k], sha256=metrics["model_sha256"]).to(device)
    print(f"== {keys}")
    rows, record = evaluate_model(model, ds.test_x, ds.test_y, settings, progress=print)
    df = pd.DataFrame(rows).assign(**keys)[ROBUSTNESS_COLUMNS]
    print(df.to_string(index=False))
    atomic_write_text(smk.output.robustness[k], df.to_csv(index=False))
    evaluation = {**keys, **record, "provenance": prov}
    write_json(smk.output.evaluation[k], evaluation)
    read_json_record(smk.output.evaluation[k], EVALUATION_SCHEMA, expect=keys, fix=fix)
print("done")
