"""Rule plot_lipschitz: the Lipschitz bound and its tightness against lam."""

import sys

import pandas as pd

from nemon.figures import dataset_title, plot_lipschitz, save_figure

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

fig = plot_lipschitz(pd.read_csv(smk.input.summary), title=dataset_title(smk.wildcards.dataset))
save_figure(fig, smk.output.pdf, smk.output.png)
