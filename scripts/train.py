"""Rule train_<model>_<objective>: every model of one (gamma, seed) group, trained as one stack.

Writes each model's model.pt (hash recorded) and metrics.json (training curve, convergence
record, provenance); checkpoints after every epoch and resumes from the last one when rerun.
"""

import sys
from pathlib import Path

import torch

from nemon.cache import load_prepared
from nemon.contracts import build_model, point_keys, save_model, write_json
from nemon.progress import (
    JobConsole,
    TrainingProgress,
    checkpoint_epoch,
    count,
    stop_on_signals,
)
from nemon.training import (
    Objective,
    Schedule,
    make_stack,
    provenance,
    resolve_device,
    seed_everything,
    summarise_history,
    train_stack,
)

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

w, p = smk.wildcards, smk.params
tr = p.training
opt = tr[p.objective]
# one line per epoch on the console (the log keeps everything); SIGINT/SIGTERM stop it at once
progress = TrainingProgress(
    JobConsole(f"train {p.model}/{p.objective} g{w.gamma} s{w.seed}"),
    tr["epochs"],
    tr["extra_epochs"],
)
stop_on_signals(lambda signal: progress.stopped(signal, checkpoint_epoch(p.checkpoint)))
torch.set_num_threads(smk.threads)
device = resolve_device(p.device, gpus=smk.resources.get("gpu", 0))
ds = load_prepared(smk.input.data, expected_name=w.dataset)
gamma, seed = float(w.gamma), int(w.seed)
keys = [point_keys(w.dataset, p.model, p.objective, gamma, x, seed) for x in p.weights]
solver = {k: tr[k] for k in ("solver", "tol", "max_iter", "stop")}

members = []
for _ in p.weights:  # the same initial weights for every member: paired comparisons
    seed_everything(seed)
    members.append(
        build_model(
            p.model,
            in_features=ds.train_x[0].numel(),
            hidden=p.hidden,
            out_features=10,
            gamma=gamma,
            input_mean=ds.mean,
            input_std=ds.std,
            solver=solver,
        )
    )
stack = make_stack(members).to(device)
objective = Objective(
    p.objective,
    tuple(p.weights),
    **({k: opt[k] for k in ("kappa", "warmup", "ramp")} if p.objective == "interval" else {}),
)
schedule = Schedule(
    tr["epochs"],
    tr["batch_size"],
    opt["lr"],
    tuple(opt["lr_milestones"]),
    opt["lr_factor"],
    tr["extra_epochs"],
)
names = [
    f"{p.objective.replace('lipschitz', 'lam').replace('interval', 'eps_t')}={x:g}"
    for x in p.weights
]
print(
    f"{p.model}/{p.objective} gamma={gamma} seed={seed}: {names}\n{stack}\n{schedule}\n{objective}"
)
print(f"device {device}, {smk.threads} thread(s)")
progress.start(f"{count(len(names), 'model')}, {tr['epochs']} epochs, {smk.threads} thread(s)")

result = train_stack(
    stack,
    ds.train_x,
    ds.train_y,
    objective=objective,
    schedule=schedule,
    seed=seed,
    test_x=ds.test_x,
    test_y=ds.test_y,
    checkpoint=p.checkpoint,
    run_id={
        "keys": keys,
        "solver": solver,
        "hidden": p.hidden,
        "data": ds.source,
        "device": str(device),
    },
    member_names=names,
    log=progress.log,
)
prov = provenance(smk.scriptdir, device, smk.threads)
group = {"members": names, "size": len(names), "resumed_from_epoch": result.resumed_from}
for k, model in enumerate(stack.members()):
    with torch.no_grad():
        mu = float(model.mu_2() if hasattr(model, "mu_2") else model.mu())
        bound = float(model.lipschitz_bound())
    sha = save_model(model.cpu(), smk.output.model[k])
    write_json(
        smk.output.metrics[k],
        {
            **keys[k],
            "mu": mu,
            "lipschitz_bound": bound,
            **summarise_history(result.histories[k]),
            "train_seconds": result.seconds,
            "model_sha256": sha,
            "history": result.histories[k],
            "provenance": {
                "training": {**tr, "optimiser": opt},
                "hidden": p.hidden,
                "group": group,
                "dataset_source": ds.source,
                **prov,
            },
        },
    )
Path(p.checkpoint).unlink(missing_ok=True)
print("done")
progress.finished()
