"""Rule evaluate: inversion-attack and certified accuracy of one model at every attack.eps.

Full test set; one tidy row per (attack, eps), with the model's gamma, lam and seed.
"""

import sys

import pandas as pd
import torch

import nemon
from nemon.data import load_prepared
from nemon.training import evaluate_robustness, resolve_device

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

torch.set_num_threads(smk.threads)
device = resolve_device(smk.params.device)
ds = load_prepared(smk.input.data)
saved = torch.load(smk.input.model, map_location="cpu", weights_only=True)
model = nemon.NEMON(**saved["kwargs"])
model.load_state_dict(saved["state_dict"])
model.to(device)

rows = evaluate_robustness(
    model,
    ds.test_x,
    ds.test_y,
    smk.params.eps,
    tol=smk.params.tol,
    max_iter=smk.params.max_iter,
    progress=True,
)
w = smk.wildcards
df = pd.DataFrame(rows).assign(
    dataset=w.dataset, gamma=float(w.gamma), lam=float(w.lam), seed=int(w.seed)
)
df = df[["dataset", "gamma", "lam", "seed", "attack", "eps", "accuracy"]]
print(df.to_string(index=False))
df.to_csv(smk.output[0], index=False)
