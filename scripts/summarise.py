"""Rule summarise: every model's records, validated -> summary.csv and robustness.csv.

Refuses (naming the file or the model) a record that breaks its schema or disagrees with its
folder, a number from a solve that stopped at max_iter (unless evaluation.allow_not_converged),
and any ordering of MATH 11 that does not hold (a certificate above an attack).
"""

import sys

from nemon.aggregate import summarise
from nemon.contracts import write_table

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

summary, robustness = summarise(
    smk.input.metrics,
    smk.input.evaluation,
    smk.input.robustness,
    allow_not_converged=smk.params.allow_not_converged,
    log=print,
)
print(summary.to_string(index=False))
write_table(summary, smk.output.summary)
write_table(robustness, smk.output.robustness)
print("done")
