"""Rule present: the data set's results README (every table) and the report's first page.

Both are drawn from summary.csv and robustness.csv (and the Pareto figure) by nemon.results.
"""

import sys
from pathlib import Path

from nemon.fileio import atomic_write_text
from nemon.results import front_page, readme

smk = snakemake  # noqa: F821  (injected by Snakemake's script directive)
sys.stderr = sys.stdout = open(smk.log[0], "w", buffering=1)

folder = Path(smk.input.summary).parent
atomic_write_text(smk.output.readme, readme(folder))
atomic_write_text(smk.output.front, front_page(folder, smk.input.pareto))
print("done")
