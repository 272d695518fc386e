"""Rule train: one model of the grid, trained with loss CE + lam * lipschitz_bound (MATH 5).

Writes model.pt (state_dict + constructor kwargs) and metrics.json (training curve, final
metrics, solver statistics, provenance). tqdm progress and warnings go to the log.
"""

import json
import sys
import time

import torch

import nemon
from nemon.data import load_prepared
from nemon.training import (
    accuracy,
    provenance,
    resolve_device,
    seed_everything,
    summarise_history,
    train,
)

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)


point = smk.params.point
cfg, tr, ev = point["model"], point["training"], point["attack"]
torch.set_num_threads(smk.threads)
device = resolve_device(tr["device"])
ds = load_prepared(smk.input.data)

seed_everything(point["seed"])
kwargs = {
    "in_features": ds.train_x[0].numel(),
    "hidden_features": cfg["hidden"],
    "out_features": 10,
    "gamma": point["gamma"],
    "weighted": cfg["weighted"],
    "input_mean": ds.mean,
    "input_std": ds.std,
    "solver": tr["solver"],
    "tol": tr["tol"],
    "max_iter": tr["max_iter"],
}
model = nemon.NEMON(**kwargs).to(device)
print(f"{point}\n{model}\ndevice {device}, {smk.threads} thread(s)")

t0 = time.perf_counter()
history = train(
    model,
    ds.train_x,
    ds.train_y,
    epochs=tr["epochs"],
    batch_size=tr["batch_size"],
    lr=tr["lr"],
    lam=point["lam"],
    seed=point["seed"],
    test_x=ds.test_x,
    test_y=ds.test_y,
)
train_seconds = time.perf_counter() - t0

with torch.no_grad():
    metrics = {
        "dataset": point["dataset"],
        "gamma": point["gamma"],
        "lam": point["lam"],
        "seed": point["seed"],
        # clean accuracy at the evaluation tolerance, like every robustness number
        "clean_acc": accuracy(model, ds.test_x, ds.test_y, tol=ev["tol"], max_iter=ev["max_iter"]),
        "mu": float(model.mu()),
        "lipschitz_bound": float(model.lipschitz_bound()),
        **summarise_history(history),
        "train_seconds": train_seconds,
        "history": history,
        "provenance": {
            "config": point,
            "seed": point["seed"],
            "dataset_source": ds.source,
            **provenance(smk.scriptdir, device, smk.threads),
        },
    }
print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))

state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
torch.save({"state_dict": state, "kwargs": kwargs}, smk.output.model)
with open(smk.output.metrics, "w") as f:
    json.dump(metrics, f, indent=2)
    f.write("\n")
