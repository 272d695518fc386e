"""NEMON replication: data -> one model per (gamma, lam, seed) -> robustness -> tables -> figures.

snakemake --cores 2                         # the experiment of config.yaml
snakemake --profile profiles/smoke          # the whole DAG on a tiny grid (minutes)
snakemake --profile profiles/slurm          # on a SLURM cluster
snakemake --report report.html              # browsable report of the figures
"""

from snakemake.utils import min_version

min_version("8.10")


configfile: "config.yaml"


include: "workflow/rules/common.smk"


validate_config(config)


report: "workflow/report/workflow.rst"


include: "workflow/rules/data.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/aggregation.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        final_targets(),
