"""Clocks, the matrix-multiply rate behind the flop floor (MATH 8), and memory readings."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.utils import benchmark as tbench

from .config import HIDDEN, IN_FEATURES

T = TypeVar("T")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it means something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``(fn(), seconds)``, with the device drained before and after the clock reads."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def matmul_gflops(
    rows: int,
    inner: int,
    cols: int,
    device: torch.device,
    *,
    threads: int = 1,
    min_run_time: float = 0.5,
) -> float:
    """Measured float32 rate of ``(rows x inner) @ (inner x cols)``, in GFLOP/s.

    Timed with :class:`torch.utils.benchmark.Timer` (``blocked_autorange``:
    repetitions grouped into blocks, the accelerator synchronised around them);
    the fastest block counts, since the floor is what the machine can do, not
    what a busy moment gave. ``threads`` is the intra-op thread count of the
    runs (the Timer sets it for the measurement).
    """
    a = torch.randn(rows, inner, device=device)
    b = torch.randn(inner, cols, device=device)
    out = torch.empty(rows, cols, device=device)
    timer = tbench.Timer(
        stmt="torch.mm(a, b, out=out)",
        globals={"torch": torch, "a": a, "b": b, "out": out},
        num_threads=threads if threads > 0 else torch.get_num_threads(),
        label=f"matmul {rows}x{inner}x{cols}",
    )
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return 2.0 * rows * inner * cols / min(measurement.times) / 1e9


def flops_per_sample(k_fwd: float, k_bwd: float, n: int = HIDDEN, m: int = IN_FEATURES) -> float:
    """One training step per sample, MATH 8: ``2 n^2 (k_fwd + k_bwd) + 4 n m``.

    ``k_fwd``, ``k_bwd``: the forward and backward solves' iteration counts;
    ``4 n m``: the input product ``B u`` and its weight gradient.
    """
    return 2.0 * n * n * (k_fwd + k_bwd) + 4.0 * n * m


# --- memory ------------------------------------------------------------------------------------
def rss_mib() -> float:
    """The process's resident memory now (Linux ``/proc``), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Restart the peak-RSS counter here (Linux >= 4.0: ``5`` into ``/proc/self/clear_refs``).

    Without it the peak is the process's lifetime peak, which includes loading the
    data. Returns whether the reset worked.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    """Peak resident memory since :func:`reset_peak_rss` (or the process start), MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # lifetime; KiB on Linux
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def reset_device_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def device_peak_mib(device: torch.device) -> float | None:
    """Peak memory allocated on a CUDA device since :func:`reset_device_peak`; ``None`` on a CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20
