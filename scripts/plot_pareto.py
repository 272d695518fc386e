"""Rule plot_pareto: clean accuracy against PGD, certified and inversion accuracy."""

import sys

import pandas as pd

from nemon.figures import dataset_title, plot_pareto, save_figure

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

fig = plot_pareto(
    pd.read_csv(smk.input.summary),
    pd.read_csv(smk.input.robustness),
    eps=smk.params.eps,
    inversion_eps=smk.params.inversion_eps,
    title=dataset_title(smk.wildcards.dataset),
)
save_figure(fig, smk.output.pdf, smk.output.png)
