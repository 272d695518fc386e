"""Rule summarise: the per-model files of the grid -> summary.csv and robustness.csv.

summary.csv: one row per model; robustness.csv: one row per (model, attack, eps). Both sorted
by (gamma, lam, seed[, attack, eps]); floats are written in full (shortest round-trip text).
"""

import json
import sys

import pandas as pd

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

KEYS = ["dataset", "gamma", "lam", "seed"]
SUMMARY = [
    *KEYS,
    "clean_acc",
    "mu",
    "lipschitz_bound",
    "fwd_iters_mean",
    "fwd_iters_max",
    "bwd_iters_mean",
    "bwd_iters_max",
    "not_converged",
    "epochs",
    "final_train_loss",
    "train_seconds",
]

records = []
for path in smk.input.metrics:
    with open(path) as f:
        records.append(json.load(f))
summary = pd.DataFrame.from_records(records, columns=SUMMARY).sort_values(KEYS)
robustness = pd.concat([pd.read_csv(p) for p in smk.input.robustness], ignore_index=True)
robustness = robustness.sort_values([*KEYS, "attack", "eps"])

print(summary.to_string(index=False))
summary.to_csv(smk.output.summary, index=False)
robustness.to_csv(smk.output.robustness, index=False)
