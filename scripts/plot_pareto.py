"""Rule plot_pareto: clean against inversion accuracy at figures.pareto_eps, Pareto front drawn."""

import sys

import pandas as pd

from nemon.figures import dataset_title, plot_pareto, save_figure

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

summary = pd.read_csv(smk.input.summary)
robustness = pd.read_csv(smk.input.robustness)
title = dataset_title(smk.wildcards.dataset)
fig = plot_pareto(summary, robustness, eps=smk.params.eps, title=title)
save_figure(fig, smk.output.pdf, smk.output.png)
