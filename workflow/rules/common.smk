"""Helpers shared by the rules: the validated config, the grid, output paths, runtime settings.

The logic lives in the package (nemon.config, nemon.contracts, nemon.progress), where it is
unit-tested. Only Snakemake's public API is used here (tests/test_workflow.py checks that no
private attribute of `workflow` or `snakemake` is).
"""

import os
import shlex
import signal
import sys
import textwrap
import time

from nemon.config import (
    check_cores,
    experiment_training,
    job_environment,
    job_priority,
    load_schema,
    machine_cores,
    output_folders,
    regeneration_message,
    rule_name,
    tracked_files,
    training_groups,
    validate_config,
)
from nemon.contracts import OBJECTIVE_AXIS, fmt_float
from nemon.errors import ConfigurationError
from nemon.progress import rerun_summary
from packaging.version import Version
from snakemake import __version__ as SNAKEMAKE_VERSION
from snakemake.exceptions import WorkflowError
from snakemake.resources import Resource

# the package's own schema (src/nemon/config.schema.yaml): the one copy, defaults included
SCHEMA = load_schema()
try:
    _valid = validate_config(dict(config), SCHEMA)
except ConfigurationError as e:
    raise WorkflowError(str(e)) from None
config.clear()
config.update(_valid)

OUT = config["output_prefix"]
# jobs inherit the environment of this process (locally, and with sbatch's default --export)
for _name, _value in job_environment(config).items():
    os.environ[_name] = _value
DATASETS = SCHEMA["properties"]["dataset"]["enum"]
GROUPS = training_groups(config)
# a training and an evaluation rule per experiment (train_<name>, evaluate_<name>, rule_name);
# each experiment names its own hidden, epochs and training schedule (validate_config)
EXPERIMENTS = config["experiments"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    gamma=r"-?[0-9]+(\.[0-9]+)?(e[-+][0-9]+)?",
    seed=r"[0-9]+",


def group_dir(name):
    """The folder of experiment ``name``'s grid points (nemon.contracts.point_dir)."""
    return f"{OUT}results/{{dataset}}/models/{name}"


def point_pattern(name, exp):
    """The folder of each grid point of ``exp``, with {dataset}, {gamma}, {seed} wildcards."""
    axis, letter = OBJECTIVE_AXIS[exp["objective"]]
    return [
        f"{group_dir(name)}/g{{gamma}}_{letter}{fmt_float(w)}_s{{seed}}"
        for w in exp[axis]
    ]


def point_files(name, exp, file):
    return [f"{p}/{file}" for p in point_pattern(name, exp)]


def weights_of(exp):
    """The experiment's lam or eps_t values, as floats."""
    return [float(w) for w in exp[OBJECTIVE_AXIS[exp["objective"]][0]]]


def all_point_files(name):
    """Input function: ``name`` of every grid point of the config."""

    def files(wildcards):
        return [
            os.path.join(d, name)
            for g in GROUPS
            for d in g.point_dirs(OUT, wildcards.dataset)
        ]

    return files


# Snakemake takes a function of the wildcards as a rule's priority from 9.17 on; before, every
# job has priority 0 and the order of ready jobs is the scheduler's own.
CALLABLE_PRIORITY = Version(SNAKEMAKE_VERSION) >= Version("9.17")


def priority_of(stage, exp):
    """Priority of ``exp``'s ``stage`` jobs (nemon.config.job_priority): long chains first."""
    if not CALLABLE_PRIORITY:
        return 0
    points = len(weights_of(exp))

    def priority(wildcards):
        return job_priority(
            stage,
            exp["model"],
            exp["objective"],
            float(wildcards.gamma),
            points,
            hidden=exp["hidden"],
            epochs=exp["epochs"],
        )

    return priority


# --- a profile's settings for the generic names train and evaluate ---------------------------
# Profiles cannot name the rules of every experiment, so their set-threads and set-resources
# name `train` and `evaluate`; the generated rules take those as their own threads and
# resources, read from Snakemake's public settings (workflow.resource_settings.overwrite_threads
# and overwrite_resources). Snakemake applies a profile's entry for a rule's own name (e.g.
# train_paper) over them, resource by resource.
def profile_value(value):
    """A value of a profile's set-threads/set-resources as a rule's threads/resources value: a
    number or text as it is, an expression (e.g. 1000 * attempt) as a function of the job.
    """
    if not isinstance(value, Resource):  # the API also takes plain values
        return value
    if not value.is_evaluable():
        return value.value

    def evaluate(wildcards, **aux):
        return value.evaluate(wildcards, **aux).value

    return evaluate


def generic_threads(generic):
    """The threads the profile gives ``generic`` (train, evaluate); None: Snakemake's 1."""
    value = workflow.resource_settings.overwrite_threads.get(generic)
    return None if value is None else profile_value(value)


def generic_resources(generic):
    """The resources the profile gives ``generic`` (train, evaluate), as a rule's resources."""
    values = workflow.resource_settings.overwrite_resources.get(generic, {})
    return {name: profile_value(value) for name, value in values.items()}


def check_device_against_gpus():
    """Refuse a profile that gives training or evaluation jobs GPUs the config will not use."""
    if not config["device"] == "cpu":
        return
    with_gpu = sorted(
        r.name
        for r in workflow.rules
        if r.name.startswith(("train_", "evaluate_"))
        and (res := r.resources.get("gpu")) is not None
        and getattr(res, "value", res)
    )
    if with_gpu:
        raise WorkflowError(
            f"invalid config: device = cpu, but the profile gives rule(s) {', '.join(with_gpu)} "
            "a GPU (resources gpu=...), which the jobs would hold unused. Set device: auto or "
            "cuda, or use a profile without GPUs (profiles/slurm)."
        )


def final_targets():
    d, p = config["dataset"], OUT
    tables = [
        f"{p}results/{d}/{name}"
        for name in ("summary.csv", "robustness.csv", "README.md", "front-page.html")
    ]
    figures = [
        f"{p}figures/{d}/{name}.{ext}"
        for name in ("pareto", "accuracy_vs_eps", "lipschitz")
        for ext in ("pdf", "png")
    ]
    return tables + figures


# --- before the first job, after the last: what the person at the console is told ------------
RUN_STARTED = time.time()


def runtime_cores():
    """Snakemake's --cores (None where the command gives none, e.g. --lint)."""
    try:
        return workflow.cores
    except WorkflowError:
        return None


def check_runtime_settings():
    """Refuse --cores below 1 before any job: Snakemake would wait for ever at 'Select jobs to
    execute...'. A note when a local run asks for more cores than the machine has."""
    if not workflow.is_main_process:
        return
    try:
        note = check_cores(runtime_cores(), machine_cores())
    except ConfigurationError as e:
        raise WorkflowError(str(e)) from None
    # --jobs without --cores (a cluster) sets nodes: not this machine's cores
    if note and workflow.nodes is None:
        print(note, file=sys.stderr)


def committed_results():
    """The files of this run's output folders that git tracks (nemon.config.tracked_files): the
    committed results it would replace. Empty with regenerate: true, and in a job's process.
    """
    if config["regenerate"] or not workflow.is_main_process:
        return []
    return tracked_files(output_folders(config), os.getcwd())


COMMITTED = committed_results()


def warn_of_committed_results_in_a_dry_run():
    if COMMITTED and workflow.output_settings.dryrun:
        print(regeneration_message(config, COMMITTED, dry_run=True), file=sys.stderr)


def refuse_to_replace_committed_results():
    """onstart (a run with jobs to do, never a dry run or --report): stop before the first job
    if the run would replace committed results, unless regenerate: true."""
    if COMMITTED:
        raise WorkflowError(
            regeneration_message(config, COMMITTED, cores=runtime_cores())
        )


STOPPED = {}  # the signal that stopped the run, once one has


def stop_jobs_at_once_on_signals():
    """onstart: SIGINT and SIGTERM stop the running jobs now, not after they have finished.

    Snakemake waits for them: on SIGTERM by design ("Will exit after finishing currently
    running jobs"), and on a SIGINT sent to Snakemake alone (Ctrl-C at a terminal reaches the
    jobs too) because its jobs never hear of it. Here either signal is passed on as SIGINT to
    every process Snakemake started, so each job stops within moments (scripts/train.py keeps
    its last checkpoint, scripts/evaluate.py its evaluated models) and Snakemake stops as on
    Ctrl-C. Local runs only: on a cluster, Ctrl-C makes Snakemake cancel the jobs itself.
    """
    if not workflow.executor_plugin.common_settings.local_exec:
        return
    import psutil  # a dependency of Snakemake

    def stop(signum, frame):
        name = signal.Signals(signum).name
        if STOPPED:
            print(f"{name}: already stopping the running jobs", file=sys.stderr)
            return
        STOPPED["signal"] = name
        for job in psutil.Process().children(recursive=True):
            try:
                job.send_signal(signal.SIGINT)
            except psutil.Error:  # ended meanwhile
                pass
        print(f"{name}: stopping the running jobs now", file=sys.stderr)
        raise KeyboardInterrupt  # Snakemake's own way out, as on Ctrl-C

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def restore_signals():
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def report_command():
    """The command that builds the report of this run's results."""
    words = ["snakemake", "--report", f"{OUT}report.html"]
    # the --configfile of the command, a profile's too
    settings = getattr(workflow, "config_settings", None)
    files = [os.path.relpath(f) for f in getattr(settings, "configfiles", ())]
    if files:
        words += ["--configfile", *files]
    words += ["--config", f"dataset={config['dataset']}"]
    if OUT:
        words.append(f"output_prefix={OUT}")
    return shlex.join(words)


def say_where_the_results_are():
    """onsuccess: the tables and figures of the run, and the report command."""
    restore_signals()
    made = [t for t in final_targets() if os.path.exists(t)]
    if made:
        lines = [
            f"The {config['dataset']} tables and figures:",
            *(f"  {t}" for t in made),
        ]
        lines.append(
            f"A report with all of them and their captions: {report_command()}"
        )
        print("", *lines, sep="\n", file=sys.stderr)


def say_what_a_rerun_redoes():
    """onerror: after a stop by a signal, what a rerun will redo; after prepare_data failed,
    its message (the log's `error: ...` line), last, where it cannot be missed."""
    restore_signals()
    if STOPPED:
        # what the files under results/<dataset>/models/<experiment>/ let a rerun skip
        kept = rerun_summary(f"{OUT}results/{config['dataset']}/models")
        head = (
            f"Stopped by {STOPPED['signal']}. No output is left half-written (each is written "
            "atomically), and the next run makes the stopped jobs' outputs again. Run the same "
            "command again to go on; it redoes only what is missing"
        )
        if kept:
            lines = [f"{head}, and keeps:", *(f"  {line}" for line in kept)]
            lines.append("Every other unfinished job starts from its beginning.")
        else:
            lines = [
                f"{head}: every unfinished job starts from its beginning (none had a finished "
                "epoch or evaluated model to keep)."
            ]
        print("", *lines, sep="\n", file=sys.stderr)
    log = f"{OUT}logs/prepare_data/{config['dataset']}.log"
    if os.path.exists(log) and os.path.getmtime(log) >= RUN_STARTED:
        with open(log) as f:
            lines = [line.strip() for line in f if line.strip()]
        if lines and lines[-1].startswith("error: "):
            cause = lines[-1].removeprefix("error: ")
            message = f"The data set could not be prepared: {cause}"
            print("", textwrap.fill(message, width=100), sep="\n", file=sys.stderr)
