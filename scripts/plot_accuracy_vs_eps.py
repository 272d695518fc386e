"""Rule plot_accuracy_vs_eps: accuracy against eps for every instrument, seeds aggregated."""

import sys

import pandas as pd

from nemon.figures import dataset_title, plot_accuracy_vs_eps, save_figure

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

fig = plot_accuracy_vs_eps(
    pd.read_csv(smk.input.robustness), title=dataset_title(smk.wildcards.dataset)
)
save_figure(fig, smk.output.pdf, smk.output.png)
