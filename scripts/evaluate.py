"""Rule evaluate_<experiment>: every instrument on every model of one training group.

Writes each model's robustness.csv (one row per instrument, eps and input set) and
evaluation.json (clean accuracy, Lipschitz lower bound, timings, settings). Each model's rows and
record are also kept in a side file (nemon.evaluation.PartialEvaluation) until the job ends, so
that a rerun of an interrupted job skips the models already evaluated with the same settings,
model file and code.
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
    member_name,
    point_keys,
    read_json_record,
    write_json,
)
from nemon.evaluation import (
    EvalSettings,
    PartialEvaluation,
    evaluate_model,
    evaluation_fingerprint,
    source_digest,
)
from nemon.fileio import atomic_write_text
from nemon.progress import EvaluationProgress, JobConsole, count, stop_on_signals
from nemon.training import provenance, resolve_device

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

w, p = smk.wildcards, smk.params
# one line per model (and per instrument, throttled) on the console; the log keeps everything
progress = EvaluationProgress(
    JobConsole(f"evaluate {p.experiment} g{w.gamma} s{w.seed}"), len(p.weights)
)
kept = PartialEvaluation(p.partial)
stop_on_signals(lambda signal: progress.stopped(signal, len(kept)))
torch.set_num_threads(smk.threads)
device = resolve_device(p.device, gpus=smk.resources.get("gpu", 0))
ds = load_prepared(smk.input.data, expected_name=w.dataset)
settings = EvalSettings.from_config(p.evaluation)
prov = provenance(smk.scriptdir, device, smk.threads)
code = {**prov, "nemon_source": source_digest()}
progress.start(f"{count(len(p.weights), 'model')}, {smk.threads} thread(s)")


def instrument_done(line):
    print(line)
    progress.instrument(line)


for k, weight in enumerate(p.weights):
    keys = point_keys(
        w.dataset, p.experiment, p.model, p.objective, float(w.gamma), weight, int(w.seed)
    )
    fix = "delete it and rerun snakemake: the training rule rebuilds it"
    metrics = read_json_record(smk.input.metrics[k], METRICS_SCHEMA, expect=keys, fix=fix)
    name = member_name(p.objective, weight)
    fp = evaluation_fingerprint(settings, metrics["model_sha256"], keys, ds.test_x, ds.test_y, code)
    print(f"== {keys}")
    if (done := kept.get(name, fp)) is not None:
        rows, record = done
        print(f"kept from {kept.path}: evaluated before the interruption, same settings and code")
        progress.model_kept(name)
    else:
        model = load_model(smk.input.model[k], sha256=metrics["model_sha256"]).to(device)
        progress.model_started(name)
        rows, record = evaluate_model(
            model, ds.test_x, ds.test_y, settings, progress=instrument_done
        )
        kept.add(name, fp, rows, record)
        progress.model_done()
    df = pd.DataFrame(rows).assign(**keys)[ROBUSTNESS_COLUMNS]
    print(df.to_string(index=False))
    atomic_write_text(smk.output.robustness[k], df.to_csv(index=False))
    evaluation = {**keys, **record, "provenance": prov}
    write_json(smk.output.evaluation[k], evaluation)
    read_json_record(smk.output.evaluation[k], EVALUATION_SCHEMA, expect=keys, fix=fix)
kept.remove()
print("done")
progress.finished()
