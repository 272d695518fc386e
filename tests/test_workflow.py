"""Fast checks of the Snakemake workflow: formatting, lint, dry runs, and the config schema.

Every snakemake call runs in a temporary copy of the workflow files, so nothing is written
into the repository (not even .snakemake/).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, copy_workflow, snakemake

from nemon.data import DATASETS


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> number of jobs."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    }


@pytest.fixture(scope="module")
def wf(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("workflow"))


def test_snakemake_files_are_snakefmt_formatted():
    files = ["Snakefile", "workflow"]
    r = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_snakemake_lint_reports_nothing(wf):
    r = snakemake("--lint", cwd=wf)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Lints for" not in out, out


def test_dry_run_of_the_default_config_plans_one_model_per_grid_point(wf):
    r = snakemake("-n", cwd=wf)
    assert r.returncode == 0, r.stderr
    grid = yaml.safe_load((REPO / "config.yaml").read_text())["grid"]
    n = len(grid["gamma"]) * len(grid["lam"]) * len(grid["seed"])
    counts = job_counts(r.stdout)
    assert counts["train"] == counts["evaluate"] == n
    assert counts["prepare_data"] == counts["summarise"] == 1
    for rule in ("plot_pareto", "plot_accuracy_vs_eps", "plot_lipschitz_vs_lambda"):
        assert counts[rule] == 1


def test_every_job_has_a_log_and_a_benchmark(wf):
    r = snakemake("-n", cwd=wf)
    blocks = re.split(r"^(?:local)?rule (\w+):$", r.stdout, flags=re.MULTILINE)[1:]
    jobs = list(zip(blocks[::2], blocks[1::2], strict=True))
    assert len(jobs) > 5
    for rule, text in jobs:
        if rule == "all":
            continue
        assert re.search(rf"^\s+log: logs/{rule}/", text, flags=re.MULTILINE), (rule, text)
        assert re.search(rf"^\s+benchmark: benchmarks/{rule}/", text, flags=re.MULTILINE), rule


def test_grid_values_round_trip_through_the_wildcards(wf):
    lams = [0, 1.0e-4, 1.0e-5, 0.3]
    cfg = wf / "roundtrip.yaml"
    cfg.write_text(yaml.safe_dump({"grid": {"gamma": [-0.5, 0.0], "lam": lams, "seed": [0, 7]}}))
    r = snakemake("-n", "--configfile", cfg.name, cwd=wf)
    assert r.returncode == 0, r.stderr
    points = set(re.findall(r"gamma=([^,\s]+), lam=([^,\s]+), seed=(\d+)", r.stdout))
    assert {(float(g), float(l), int(s)) for g, l, s in points} == set(
        itertools.product([-0.5, 0.0], [float(v) for v in lams], [0, 7])
    )
    # 0 and 0.0 give one text, so one model directory per grid point
    assert {l for _, l, _ in points} == {"0.0", "0.0001", "1e-05", "0.3"}


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
    smoke = yaml.safe_load((REPO / "profiles" / "smoke" / "smoke-config.yaml").read_text())
    grid = smoke["grid"]
    counts = job_counts(r.stdout)
    assert counts["train"] == len(grid["gamma"]) * len(grid["lam"]) * len(grid["seed"]) == 4
    assert f"resources/{smoke['dataset']}.pt" in r.stdout


def test_slurm_profile_dry_run_requests_a_gpu_for_training(wf):
    r = snakemake("--profile", "profiles/slurm", "-n", cwd=wf)
    assert r.returncode == 0, r.stdout + r.stderr
    train = re.split(r"^rule train:$", r.stdout, flags=re.MULTILINE)[1].split("\n\n")[0]
    assert re.search(r"resources: .*\bgpu=1\b", train), train


def test_schema_datasets_are_the_package_datasets():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert tuple(schema["properties"]["dataset"]["enum"]) == tuple(DATASETS)


BAD_CONFIGS = {
    "gamma_one": ({"grid": {"gamma": [0.0, 1.0]}}, ["grid.gamma[1]", "1.0", "< 1"]),
    "negative_lam": ({"grid": {"lam": [0.0, -1.0e-3]}}, ["grid.lam[1]", "-0.001", ">= 0"]),
    "unknown_dataset": (
        {"dataset": "cifar10"},
        ["dataset", "cifar10", "one of mnist, fashion-mnist, mnist-5k"],
    ),
    "misspelt_key": (
        {"training": {"epoch": 3}},
        ["training", "'epoch' was unexpected", "epochs, batch_size"],
    ),
    "misspelt_top_key": ({"datset": "mnist"}, ["'datset' was unexpected", "dataset, data_dir"]),
    "eps_above_one": ({"attack": {"eps": [0.0, 1.5]}}, ["attack.eps[1]", "1.5", ">= 0 and <= 1"]),
    "negative_eps": ({"attack": {"eps": [-0.1]}}, ["attack.eps[0]", ">= 0 and <= 1"]),
    "pareto_eps_not_attacked": ({"figures": {"pareto_eps": 0.25}}, ["figures.pareto_eps", "0.25"]),
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_schema_rejects_a_bad_config_naming_the_key_and_the_range(wf, name):
    cfg, expected = BAD_CONFIGS[name]
    (wf / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    r = snakemake("-n", "--configfile", f"{name}.yaml", cwd=wf)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "invalid config" in out, out
    for text in expected:
        assert text in out, (text, out)


def test_schema_explains_a_float_that_yaml_read_as_text(wf):
    (wf / "text.yaml").write_text("grid:\n  lam: [0.0, 1e-4]\n")
    r = snakemake("-n", "--configfile", "text.yaml", cwd=wf)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "grid.lam[1]" in out and "1.0e-4" in out, out


def test_schema_fills_in_defaults_for_missing_keys(wf):
    (wf / "minimal.yaml").write_text("dataset: mnist-5k\n")
    # config.yaml is relative to the working directory: run where there is none, so every key
    # that minimal.yaml does not set comes from the schema's defaults.
    (wf / "empty").mkdir(exist_ok=True)
    r = snakemake(
        "-n",
        "--snakefile",
        str(wf / "Snakefile"),
        "--directory",
        str(wf / "empty"),
        "--configfile",
        str(wf / "minimal.yaml"),
        cwd=wf,
    )
    assert r.returncode == 0, r.stderr
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    grid = schema["properties"]["grid"]["properties"]
    n = len(grid["gamma"]["default"]) * len(grid["lam"]["default"]) * len(grid["seed"]["default"])
    assert job_counts(r.stdout)["train"] == n
