"""NEMON replication: data -> one model per grid point -> evaluation -> tables -> figures.

snakemake --cores 2                                  # the experiments of config.yaml
snakemake --cores 2 --config dataset=mnist-5k output_prefix=mine/   # a fresh copy, under mine/
snakemake --cores 2 --config dataset=mnist-5k regenerate=true       # replace the committed ones
snakemake --profile profiles/smoke                   # the whole DAG on a tiny grid, under smoke/
snakemake --profile profiles/slurm                   # on a SLURM cluster

Each experiment of config.yaml has its rules, train_<experiment> and evaluate_<experiment>, and
its folder, results/<dataset>/models/<experiment>/; profiles give threads and resources to all of
them under the names train and evaluate (workflow/rules/common.smk).

Before the first job: --cores below 1 is refused, and so is a run that would replace committed
results (results/<dataset>/ tracked by git) without regenerate=true; a dry run only warns.
SIGINT or SIGTERM stops the running jobs at once; a rerun resumes (common.smk).
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
check_runtime_settings()
warn_of_committed_results_in_a_dry_run()


onstart:
    refuse_to_replace_committed_results()
    stop_jobs_at_once_on_signals()


onsuccess:
    say_where_the_results_are()


onerror:
    say_what_a_rerun_redoes()


localrules:
    all,
    summarise,
    present,
    plot_pareto,
    plot_accuracy_vs_eps,
    plot_lipschitz,


rule all:
    default_target: True
    input:
        final_targets(),
