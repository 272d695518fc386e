"""Rule train_<experiment>: every model of one (gamma, seed) group, trained as one stack.

Writes each model's model.pt (hash recorded) and metrics.json (training curve, convergence
record, provenance); checkpoints after every epoch and resumes from the last one when rerun.
The training itself is nemon.training.train_group.
"""

import sys
from pathlib import Path

import torch

from nemon.cache import load_prepared
from nemon.contracts import point_keys, save_model, write_json
from nemon.progress import JobConsole, TrainingProgress, checkpoint_epoch, count, stop_on_signals
from nemon.training import provenance, resolve_device, train_group

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

w, p = smk.wildcards, smk.params
tr = p.training  # nemon.config.experiment_training: this experiment's epochs and schedule
# one line per epoch on the console (the log keeps everything); SIGINT/SIGTERM stop it at once
progress = TrainingProgress(
    JobConsole(f"train {p.experiment} g{w.gamma} s{w.seed}"), tr["epochs"], tr["extra_epochs"]
)
stop_on_signals(lambda signal: progress.stopped(signal, checkpoint_epoch(p.checkpoint)))
torch.set_num_threads(smk.threads)
device = resolve_device(p.device, gpus=smk.resources.get("gpu", 0))
ds = load_prepared(smk.input.data, expected_name=w.dataset)
gamma, seed = float(w.gamma), int(w.seed)
keys = [
    point_keys(w.dataset, p.experiment, p.model, p.objective, gamma, x, seed) for x in p.weights
]
print(f"experiment {p.experiment}; device {device}, {smk.threads} thread(s)")
progress.start(f"{count(len(keys), 'model')}, {tr['epochs']} epochs, {smk.threads} thread(s)")

result = train_group(
    p.model,
    p.objective,
    p.weights,
    gamma=gamma,
    seed=seed,
    hidden=p.hidden,
    training=tr,
    data=ds,
    device=device,
    checkpoint=p.checkpoint,
    run_id={"keys": keys},
    log=progress.log,
)
prov = provenance(smk.scriptdir, device, smk.threads)
for k, member in enumerate(result.members):
    sha = save_model(member.model.cpu(), smk.output.model[k])
    write_json(
        smk.output.metrics[k],
        {
            **keys[k],
            **member.record,
            "model_sha256": sha,
            "history": member.history,
            "provenance": {
                "training": tr,
                "hidden": p.hidden,
                "group": result.group_record(),
                "dataset_source": ds.source,
                **prov,
            },
        },
    )
Path(p.checkpoint).unlink(missing_ok=True)
print("done")
progress.finished()
