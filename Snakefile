"""NEMON replication: data -> one model per grid point -> evaluation -> tables -> figures.

snakemake --cores 2                                  # the experiments of config.yaml
snakemake --cores 2 --config dataset=fashion-mnist   # the committed Fashion-MNIST results
snakemake --profile profiles/smoke                   # the whole DAG on a tiny grid, under smoke/
snakemake --profile profiles/slurm                   # on a SLURM cluster
"""

from snakemake.utils import min_version

min_version("8.10")


configfile: "config.yaml"


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


include: "workflow/rules/data.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/aggregation.smk"
include: "workflow/rules/figures.smk"


check_device_against_gpus()


localrules:
    all,
    summarise,
    plot_pareto,
    plot_accuracy_vs_eps,
    plot_lipschitz,


rule all:
    default_target: True
    input:
        final_targets(),
