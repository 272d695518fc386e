"""The workflow on a real SLURM cluster, and the SLURM profiles users fill in for their site.

``test_smoke_run_through_slurm_*`` start a single-node cluster on this machine (munged,
slurmctld and slurmd from tests/slurm/cluster.py, state in a temporary folder), run the smoke
profile in a copy of the workflow with ``--executor slurm`` (snakemake-executor-plugin-slurm),
and check the tables with the checks of the local smoke run (tests/test_pipeline_e2e.py).
Without root or the SLURM binaries they skip, saying why; with NEMON_REQUIRE_SLURM=1 (set by
.ci/run) they fail instead, so CI cannot skip them silently.

On a machine with NVIDIA GPUs the cluster offers them as GRES, and
``test_gpu_profile_*`` runs the smoke experiment with profiles/slurm-gpu and CUDA asked for:
SLURM must give exactly the profile's GPU rules a GPU, and every model must be trained on CUDA
(elsewhere it skips, NEMON_REQUIRE_SLURM or not).

The profile tests are fast dry runs: profiles/slurm asks for no GPU (a CPU-only cluster rejects
``--gpus``), profiles/slurm-gpu is the same plus one GPU for training and evaluation.

Only the section "What the pipeline writes" knows the pipeline's files and config keys; the rest
knows rules only through the profiles.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import test_pipeline_e2e as local_e2e
import yaml
from conftest import REPO, copy_workflow, snakemake
from slurm.cluster import (
    PARTITION,
    ClusterError,
    gpu_devices,
    missing_requirements,
    start_cluster,
)

# The cluster-side settings of the test runs, on top of their profile (profiles/smoke or
# profiles/slurm-gpu) and profiles/default. No slurmdbd here, so job states come from squeue (the
# plugin's default, sacct, answers "accounting storage is disabled"); the plugin then checks
# that MinJobAge (3600 s, tests/slurm/slurm.conf.in) outlasts its status-check interval.
ACCOUNT = "nemon-test"  # recorded by sbatch -A; checked against nothing without slurmdbd
SLURM_ARGS = [
    "--jobs",
    "4",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",  # the default, 40 s, would idle longer than a smoke job runs
    "--slurm-keep-successful-logs",
    "--default-resources",
    f"slurm_account={ACCOUNT}",
    f"slurm_partition={PARTITION}",
    "mem_mb=1000",
    "runtime=20",
    "--latency-wait",
    "30",
]


# --- What the pipeline writes (the only part that knows its files and config keys) ---------

# A --configfile on top of the smoke config that asks for CUDA (fails where CUDA is missing).
CUDA_CONFIG = {"device": "cuda"}
# Profiles set resources for the generic names train and evaluate; the workflow gives them to its
# rules train_<experiment> and evaluate_<experiment> (workflow/rules/common.smk).
GENERIC_RULES = {"train", "evaluate"}
RULE = r"[\w-]+"  # a rule name: experiment names may hold '-' (train_followup-mlp)


def check_smoke_outputs(workdir: Path, trained_on_cpu: bool = True) -> None:
    """The checks of the local smoke run (tests/test_pipeline_e2e.py) on ``workdir``."""
    local_e2e.check_smoke_outputs(workdir, trained_on="cpu" if trained_on_cpu else "cuda")


def model_devices(workdir: Path) -> list[str]:
    """The device each model of the smoke grid was trained on (its provenance)."""
    files = [workdir / d / "metrics.json" for d in local_e2e.POINT_DIRS]
    return [json.loads(f.read_text())["provenance"]["device"] for f in files]


def rules_of(name: str) -> str:
    """A regex for the rules a profile's rule name stands for."""
    return rf"{name}_{RULE}" if name in GENERIC_RULES else re.escape(name)


# --- the profiles (fast, no cluster) -------------------------------------------------------


def job_resources(dry_run: str, rule: str) -> str:
    """The ``resources:`` line of the first job of ``rule`` (or a rule it stands for)."""
    blocks = re.split(rf"^(?:local)?rule ({RULE}):$", dry_run, flags=re.MULTILINE)[1:]
    for name, text in zip(blocks[::2], blocks[1::2], strict=True):
        if re.fullmatch(rules_of(rule), name):
            return re.search(r"^\s+resources: (.*)$", text, flags=re.MULTILINE).group(1)
    raise AssertionError(f"no job of rule {rule} in the dry run:\n{dry_run}")


def profile(name: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())


def gpu_rules() -> set[str]:
    """The rules profiles/slurm-gpu gives a GPU."""
    return {r for r, res in profile("slurm-gpu")["set-resources"].items() if "gpu" in res}


@pytest.fixture(scope="module")
def wf(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("slurm_profiles"))


@pytest.mark.parametrize("name", ["slurm", "slurm-gpu"])
def test_slurm_profiles_set_resources_only_for_rules_of_the_workflow(wf, name):
    r = snakemake("--list-rules", cwd=wf, timeout=120)
    assert r.returncode == 0, r.stderr
    rules = set(r.stdout.split()) | GENERIC_RULES
    p = profile(name)
    named = set(p["set-threads"]) | set(p["set-resources"])
    assert named <= rules, f"profiles/{name} names rules the workflow lacks: {named - rules}"


def test_cpu_slurm_profile_asks_no_job_for_a_gpu(wf):
    r = snakemake("--profile", "profiles/slurm", "-n", cwd=wf, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resources:" in r.stdout
    assert not re.search(r"\b(gpu|gres|gpu_model)=", r.stdout), r.stdout


def test_gpu_slurm_profile_gives_training_and_evaluation_one_gpu(wf):
    r = snakemake("--profile", "profiles/slurm-gpu", "-n", cwd=wf, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert gpu_rules() == {"train", "evaluate"}
    for rule in gpu_rules():
        assert re.search(r"\bgpu=1\b", job_resources(r.stdout, rule)), rule
    assert not re.search(r"\bgpu=", job_resources(r.stdout, "prepare_data"))


def test_gpu_slurm_profile_is_the_cpu_profile_plus_gpus():
    gpu = profile("slurm-gpu")
    for res in gpu["set-resources"].values():
        res.pop("gpu", None)
    assert gpu == profile("slurm"), "keep profiles/slurm-gpu equal to profiles/slurm but for gpu"


# --- runs on a real single-node cluster ----------------------------------------------------


def why_not_slurm() -> str | None:
    """Why the SLURM tests cannot run here, or ``None``."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return 'snakemake-executor-plugin-slurm is not installed (pip install -e ".[slurm]")'
    return missing_requirements()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = why_not_slurm()
    if why:
        if os.environ.get("NEMON_REQUIRE_SLURM") == "1":
            pytest.fail(f"NEMON_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)
    try:
        c = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterError as e:
        pytest.fail(f"the single-node SLURM cluster did not start:\n{e}")
    print(f"SLURM cluster up in {c.startup_seconds:.1f} s")
    yield c
    c.stop()


@dataclass
class SlurmRun:
    """One snakemake run through the cluster: its folder, arguments and SLURM jobs."""

    workdir: Path
    args: tuple[str, ...]  # the profile and config arguments (without SLURM_ARGS)
    jobs: pd.DataFrame  # one row per job: jobid, state, comment, gres (scontrol show job)


def scontrol_jobs(cluster) -> pd.DataFrame:
    """Every job the cluster has seen (finished ones stay for MinJobAge = 3600 s)."""
    rows = []
    for line in cluster.run("scontrol", "--oneliner", "show", "jobs").splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" in fields:
            rows.append({"TresPerJob": "", **fields})  # TresPerJob=gres:gpu:1 with --gpus=1
    return pd.DataFrame(rows)


def run_through_slurm(cluster, workdir: Path, *args: str) -> SlurmRun:
    """Run snakemake in ``workdir`` against ``cluster``; fail with the logs if it fails."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in cluster.variables.items():
            mp.setenv(name, value)
        t0 = time.perf_counter()
        r = snakemake(*args, *SLURM_ARGS, cwd=workdir, timeout=1200)
        seconds = time.perf_counter() - t0
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"run through SLURM failed:\n{out[-8000:]}\n{cluster.logs()}"
    found = re.search(r"SLURM run ID: (\S+)", out)  # the plugin's sbatch --job-name for all jobs
    assert found, f"no SLURM run ID in the output: did the slurm executor run?\n{out[-3000:]}"
    jobs = scontrol_jobs(cluster)
    jobs = jobs[jobs["JobName"] == found.group(1)].rename(
        columns={"JobId": "jobid", "JobState": "state", "Comment": "comment", "TresPerJob": "gres"}
    )
    print(f"{' '.join(args)} through SLURM: {seconds:.1f} s, {len(jobs)} SLURM jobs")
    return SlurmRun(workdir, args, jobs[["jobid", "state", "comment", "gres"]])


def outputs_by_rule(run: SlurmRun) -> dict[str, str]:
    """Output file -> the rule that made it, from ``snakemake --summary`` of the run."""
    r = snakemake(*run.args, "--summary", cwd=run.workdir, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout[r.stdout.index("output_file\t") :].splitlines()
    rows = csv.DictReader(lines, delimiter="\t")
    return {row["output_file"]: row["rule"] for row in rows if row.get("rule")}


def cluster_rule_outputs_came_from_completed_jobs(run: SlurmRun) -> None:
    """Every job completed, and the heavy rules' outputs were all made inside SLURM jobs.

    Heavy: the rules profiles/slurm gives resources to. Whatever the jobs or groups are called,
    snakemake inside a SLURM job names the job's outputs in the job's log.
    """
    jobs = run.jobs
    assert len(jobs) > 0, "no job reached the cluster: did snakemake run them locally?"
    assert (jobs["state"] == "COMPLETED").all(), jobs
    logs = {p.stem: p.read_text() for p in (run.workdir / ".snakemake/slurm_logs").rglob("*.log")}
    assert set(logs) == set(jobs["jobid"]), "one SLURM log per job, named by its job id"
    # what snakemake inside the jobs wrote to the job logs: "    output: a, b"
    made_in_jobs = {
        f.strip()
        for text in logs.values()
        for line in re.findall(r"^\s+output: (.*)$", text, flags=re.MULTILINE)
        for f in line.split(",")
    }
    heavy = set(profile("slurm")["set-resources"])
    outputs = {
        f: rule
        for f, rule in outputs_by_rule(run).items()
        if any(re.fullmatch(rules_of(h), rule) for h in heavy)
    }
    assert outputs, f"no output of {heavy} in the run"
    missing = sorted(f for f in outputs if f not in made_in_jobs)
    assert not missing, f"made outside SLURM: {missing}"


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory) -> SlurmRun:
    wf = copy_workflow(tmp_path_factory.mktemp("smoke_slurm"))
    return run_through_slurm(cluster, wf, "--profile", "profiles/smoke", "--executor", "slurm")


@pytest.mark.slurm
@pytest.mark.e2e
def test_smoke_run_through_slurm_makes_the_heavy_outputs_in_completed_cluster_jobs(slurm_run):
    cluster_rule_outputs_came_from_completed_jobs(slurm_run)
    assert not slurm_run.jobs["gres"].str.contains("gpu").any(), slurm_run.jobs


@pytest.mark.slurm
@pytest.mark.e2e
def test_smoke_run_through_slurm_writes_the_tables_of_the_local_run(slurm_run):
    check_smoke_outputs(slurm_run.workdir)


@pytest.mark.slurm
@pytest.mark.e2e
def test_smoke_run_through_slurm_leaves_nothing_to_do(slurm_run, cluster):
    with pytest.MonkeyPatch.context() as mp:
        for name, value in cluster.variables.items():
            mp.setenv(name, value)
        r = snakemake(*slurm_run.args, *SLURM_ARGS, "-n", cwd=slurm_run.workdir)
    assert r.returncode == 0, r.stderr
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout


@pytest.mark.slurm
@pytest.mark.e2e
@pytest.mark.skipif(not gpu_devices(), reason="no NVIDIA GPU here (/dev/nvidia0 ...)")
def test_gpu_profile_trains_and_evaluates_on_the_gpu_slurm_gives_each_job(cluster, tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    (wf / "cuda.yaml").write_text(yaml.safe_dump(CUDA_CONFIG))
    run = run_through_slurm(
        cluster,
        wf,
        "--profile",
        "profiles/slurm-gpu",
        "--configfile",
        "profiles/smoke/smoke-config.yaml",
        "cuda.yaml",
    )
    cluster_rule_outputs_came_from_completed_jobs(run)
    # the plugin's job comment is rule_<name>[_wildcards_<values>]
    rule = run.jobs["comment"].str.extract(rf"^rule_({RULE}?)(?:_wildcards_|$)", expand=False)
    has_gpu = run.jobs["gres"] == "gres:gpu:1"
    wants_gpu = rule.map(lambda r: any(re.fullmatch(rules_of(g), r) for g in gpu_rules()))
    assert (has_gpu == wants_gpu).all(), run.jobs
    check_smoke_outputs(wf, trained_on_cpu=False)
    devices = model_devices(wf)
    assert all(d.startswith("cuda") for d in devices), devices
