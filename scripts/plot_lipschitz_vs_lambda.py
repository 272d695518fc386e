"""Rule plot_lipschitz_vs_lambda: each trained model's Lipschitz bound against lam."""

import sys

import pandas as pd

from nemon.figures import dataset_title, plot_lipschitz_vs_lambda, save_figure

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

title = dataset_title(smk.wildcards.dataset)
fig = plot_lipschitz_vs_lambda(pd.read_csv(smk.input.summary), title=title)
save_figure(fig, smk.output.pdf, smk.output.png)
