"""Faults in the real pipeline: SIGKILL at any point, then a rerun, gives the uninterrupted result.

A training job checkpoints after every epoch (weights, optimiser, data-order generator,
history) and resumes from the last checkpoint; a group evaluation keeps each evaluated model's
rows and record until the job ends and a rerun skips them; every output is written atomically.
SIGINT or SIGTERM to Snakemake stops the running jobs within seconds, saying what a rerun redoes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import copy_workflow, snakemake

pytestmark = pytest.mark.e2e

CONFIG = {
    "dataset": "mnist-5k",
    "output_prefix": "out/",
    "device": "cpu",
    "experiments": {
        "paper": {"model": "nemon", "objective": "lipschitz", "gamma": [0.5], "lam": [0.0, 0.01]}
    },
    "seeds": [0],
    "training": {"epochs": 12, "extra_epochs": 0},
    # a light evaluation (the smoke profile's): a few seconds per model
    "evaluation": {
        "inversion": {"eps": [0.0, 0.1, 0.3]},
        "certified_lipschitz": {"eps": [0.0, 0.1]},
        "certified_interval": {"eps": [0.0, 0.1]},
        "pgd": {"eps": [0.1], "images": 50, "steps": 10, "restarts": 1},
        "autoattack": {"eps": [0.1], "images": 20, "steps": 10, "queries": 100},
        "lipschitz_lower": {"images": 2, "steps": 5},
    },
}
GROUP = "out/results/mnist-5k/models/paper"
TARGETS = [f"{GROUP}/g0.5_l{lam}_s0/metrics.json" for lam in ("0.0", "0.01")]
EVALUATED = [
    f"{GROUP}/g0.5_l{lam}_s0/{name}"
    for lam in ("0.0", "0.01")
    for name in ("robustness.csv", "evaluation.json")
]
CHECKPOINT = f"{GROUP}/g0.5_s0.checkpoint.pt"
PARTIAL = f"{GROUP}/g0.5_s0.evaluation-partial.json"
LOG = "out/logs/train/mnist-5k/paper/g0.5_s0.log"
EVAL_LOG = "out/logs/evaluate/mnist-5k/paper/g0.5_s0.log"


def workflow(folder: Path) -> Path:
    wf = copy_workflow(folder)
    (wf / "faults.yaml").write_text(yaml.safe_dump(CONFIG))
    return wf


def args(targets: list[str] = TARGETS) -> list[str]:
    return [*targets, "--cores", "1", "--configfile", "faults.yaml"]


def job_pids(wf: Path, script: str = ".train.py") -> list[int]:
    """The training scripts Snakemake started in ``wf`` (``python .../scripts/tmp*.train.py``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if proc.name.isdigit() and script in cmd and str(wf) in cmd:
            pids.append(int(proc.name))
    return pids


def records(wf: Path) -> list[dict]:
    out = []
    for t in TARGETS:
        m = json.loads((wf / t).read_text())
        for h in m["history"]:
            h.pop("seconds")
        out.append({k: m[k] for k in ("model_sha256", "history", "final_train_loss")})
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    wf = workflow(tmp_path_factory.mktemp("uninterrupted"))
    r = snakemake(*args(), cwd=wf, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (wf / CHECKPOINT).exists(), "a finished training removes its checkpoint"
    return records(wf)


def kill_job_when(wf: Path, proc: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """SIGKILL the training job as soon as ``ready()`` holds; False if the job ended first."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        pids = job_pids(wf)
        if pids and ready():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            return True
        time.sleep(0.05)
    return False


def test_sigkill_of_the_training_job_then_a_rerun_gives_the_uninterrupted_model(
    reference, tmp_path
):
    wf = workflow(tmp_path / "killed")
    ckpt = wf / CHECKPOINT
    started = {"t": None}

    def after_a_checkpoint():
        return ckpt.exists()

    def mid_epoch():  # some time into the run, wherever that falls
        if started["t"] is None:
            started["t"] = time.monotonic()
        return time.monotonic() - started["t"] > 1.7

    kills = 0
    for ready in (after_a_checkpoint, mid_epoch, after_a_checkpoint):
        started["t"] = None
        proc = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args()],
            cwd=wf,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kills += kill_job_when(wf, proc, ready)
        proc.wait(timeout=300)
    assert kills >= 2, "the job finished before it could be killed twice: make it longer"
    r = snakemake(*args(), cwd=wf, timeout=600)  # the default profile reruns incomplete jobs
    assert r.returncode == 0, r.stdout + r.stderr
    log = (wf / LOG).read_text()
    assert "resuming from the checkpoint" in log and "after epoch" in log, log[-2000:]
    assert records(wf) == reference  # bit-identical weights (hash), identical curves
    assert not ckpt.exists()


def test_sigkill_of_snakemake_itself_then_a_rerun_completes(reference, tmp_path):
    wf = workflow(tmp_path / "snakemake_killed")
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args()],
        cwd=wf,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ckpt = wf / CHECKPOINT
    t0 = time.monotonic()
    while not ckpt.exists() and proc.poll() is None and time.monotonic() - t0 < 300:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job, mid-run
    proc.wait(timeout=60)
    r = snakemake(*args(), cwd=wf, timeout=600)
    assert r.returncode != 0 and "--unlock" in r.stdout + r.stderr  # Snakemake's own lock
    r = snakemake(*args(), "--unlock", cwd=wf, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = snakemake(*args(), cwd=wf, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert records(wf) == reference


# --- SIGINT and SIGTERM to Snakemake: a prompt stop, then a rerun that goes on -------------------
def start(wf: Path, targets: list[str]) -> tuple[subprocess.Popen, Path]:
    """Snakemake in ``wf``, in a session of its own (a signal to it reaches it alone)."""
    out = wf / "snakemake.out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args(targets)],
        cwd=wf,
        stdout=out.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, out


def stop_when(proc: subprocess.Popen, ready, sig: signal.Signals, timeout: float = 300) -> float:
    """Send ``sig`` to Snakemake once ``ready()`` holds; the seconds until Snakemake ended."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the run ended (or never got there) before it could be stopped")
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    t0 = time.monotonic()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{sig.name}: Snakemake was still running 60 s later")
    return time.monotonic() - t0


def left_behind(wf: Path) -> list[str]:
    """Temporary files of atomic writes under the run's folder: there must be none."""
    return [str(p) for p in (wf / "out").rglob("*.tmp")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_snakemake_stops_training_at_once_and_the_rerun_resumes_it(
    reference, tmp_path, sig
):
    wf = workflow(tmp_path / sig.name)
    proc, out = start(wf, TARGETS)
    seconds = stop_when(proc, (wf / CHECKPOINT).exists, sig)
    text = out.read_text()
    assert proc.returncode != 0 and seconds < 15, (seconds, text[-3000:])
    assert job_pids(wf) == [], "a job outlived Snakemake"
    assert left_behind(wf) == [] and not any((wf / t).exists() for t in TARGETS)
    assert "[train paper g0.5 s0] stopped by SIGINT: a rerun resumes from its " in text
    assert f"Stopped by {sig.name}. No output is left half-written" in text, text[-3000:]
    assert "training paper g0.5_s0: resumes after epoch " in text
    r = snakemake(*args(), cwd=wf, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming from its checkpoint after epoch" in r.stderr
    assert "resuming from the checkpoint" in (wf / LOG).read_text()
    assert records(wf) == reference  # bit-identical weights (hash), identical curves


def evaluation_outputs(wf: Path) -> dict[str, object]:
    """The evaluation's outputs, without what differs between any two runs (wall times,
    provenance)."""
    out: dict[str, object] = {}
    for name in EVALUATED:
        if name.endswith(".csv"):
            out[name] = (wf / name).read_text()
        else:
            record = json.loads((wf / name).read_text())
            for key in ("evaluation_seconds", "timings", "provenance"):
                record.pop(key)
            out[name] = record
    return out


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> dict[str, object]:
    wf = workflow(tmp_path_factory.mktemp("evaluated"))
    r = snakemake(*args(EVALUATED), cwd=wf, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (wf / PARTIAL).exists(), "a finished evaluation removes its side file"
    return evaluation_outputs(wf)


def test_an_interrupted_evaluation_keeps_its_evaluated_models_for_the_rerun(evaluated, tmp_path):
    wf = workflow(tmp_path / "evaluation_stopped")
    proc, out = start(wf, EVALUATED)
    seconds = stop_when(proc, (wf / PARTIAL).exists, signal.SIGTERM)  # after the first model
    text = out.read_text()
    assert proc.returncode != 0 and seconds < 15, (seconds, text[-3000:])
    assert job_pids(wf, ".evaluate.py") == [] and left_behind(wf) == []
    assert "] stopped by SIGINT: 1 of 2 models evaluated and kept, a rerun evaluates the " in text
    assert "evaluation paper g0.5_s0: keeps 1 evaluated model(s)" in text, text[-3000:]
    assert (wf / PARTIAL).exists()
    for name in EVALUATED:  # the first model's files may be there, whole (Snakemake marks them
        if (wf / name).exists():  # incomplete, so the rerun makes them again)
            text = (wf / name).read_text()
            assert json.loads(text) if name.endswith(".json") else text.count("\n") > 10
    r = snakemake(*args(EVALUATED), cwd=wf, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "model 1/2 (lam=0): kept from the interrupted run" in r.stderr
    assert "model 2/2 (lam=0.01) evaluated in" in r.stderr
    assert "kept from" in (wf / EVAL_LOG).read_text()
    assert not (wf / PARTIAL).exists()
    assert evaluation_outputs(wf) == evaluated  # as if never interrupted
