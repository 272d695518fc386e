"""Faults in the real pipeline: SIGKILL at any point, then a rerun, gives the uninterrupted result.

A training job checkpoints after every epoch (weights, optimiser, data-order generator,
history) and resumes from the last checkpoint; every output is written atomically.
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
}
GROUP = "out/results/mnist-5k/models/nemon/lipschitz"
TARGETS = [f"{GROUP}/g0.5_l{lam}_s0/metrics.json" for lam in ("0.0", "0.01")]
CHECKPOINT = f"{GROUP}/g0.5_s0.checkpoint.pt"
LOG = "out/logs/train/mnist-5k/nemon/lipschitz/g0.5_s0.log"


def workflow(folder: Path) -> Path:
    wf = copy_workflow(folder)
    (wf / "faults.yaml").write_text(yaml.safe_dump(CONFIG))
    return wf


def args() -> list[str]:
    return [*TARGETS, "--cores", "1", "--configfile", "faults.yaml"]


def job_pids(wf: Path) -> list[int]:
    """The training scripts Snakemake started in ``wf`` (``python .../scripts/tmp*.train.py``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if proc.name.isdigit() and ".train.py" in cmd and str(wf) in cmd:
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
