import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nemon

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "config.yaml", "environment.yml", "workflow", "scripts", "profiles"]


def copy_workflow(dst: Path) -> Path:
    """Copy the workflow files (not results or caches) into ``dst``, for runs outside the repo."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)
    return dst


def snakemake(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run snakemake in ``cwd`` with this interpreter, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def _single_thread():
    # Small float64 problems: threads only add noise and contention.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_model(seed=0, m=12, n=8, k=4, gamma=0.5, weighted=True, scale=1.0, **kw):
    """A small float64 NEMON with non-trivial weights (d != 0, T scaled)."""
    torch.manual_seed(seed)
    kw.setdefault("tol", 1e-12)
    kw.setdefault("max_iter", 2000)
    model = nemon.NEMON(m, n, k, gamma=gamma, weighted=weighted, **kw).double()
    with torch.no_grad():
        model.T.normal_(0, scale / n**0.5)
        if weighted:
            model.d.normal_(0, 0.5)
        model.b.normal_(0, 0.5)
    return model


@pytest.fixture
def small_model():
    return make_model()
