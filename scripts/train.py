"""Rule train: one model of the grid, trained with loss CE + lam * lipschitz_bound (MATH 5).

Writes model.pt (state_dict + constructor kwargs) and metrics.json (training curve, final
metrics, solver statistics, provenance). tqdm progress and warnings go to the log.
"""

import json
import platform
import subprocess
import sys
import time

import torch

import nemon
from nemon.data import load_prepared
from nemon.training import accuracy, resolve_device, seed_everything, train

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)


def git_commit(folder: str) -> str:
    """Commit of the workflow's checkout, or "unknown" when it is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


point = smk.params.point
cfg, tr = point["model"], point["training"]
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
        "epochs": len(history),
        "clean_acc": accuracy(model, ds.test_x, ds.test_y),
        "mu": float(model.mu()),
        "lipschitz_bound": float(model.lipschitz_bound()),
        # Every epoch has the same number of steps, so the mean of the epoch means is the mean.
        "fwd_iters_mean": sum(h["fwd_iters_mean"] for h in history) / len(history),
        "fwd_iters_max": max(h["fwd_iters_max"] for h in history),
        "bwd_iters_mean": sum(h["bwd_iters_mean"] for h in history) / len(history),
        "bwd_iters_max": max(h["bwd_iters_max"] for h in history),
        "not_converged": sum(h["not_converged"] for h in history),
        "final_train_loss": history[-1]["train_loss"],
        "train_seconds": train_seconds,
        "history": history,
        "provenance": {
            "config": point,
            "seed": point["seed"],
            "dataset_source": ds.source,
            "nemon": nemon.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(device),
            "threads": smk.threads,
            "git_commit": git_commit(smk.scriptdir),
        },
    }
print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))

state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
torch.save({"state_dict": state, "kwargs": kwargs}, smk.output.model)
with open(smk.output.metrics, "w") as f:
    json.dump(metrics, f, indent=2)
    f.write("\n")
