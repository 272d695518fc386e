"""Speed benchmark: one training epoch of the paper's model, nemon against torchdeq (MATH 3, 4, 8).

    python -m nemon.bench [--samples 60000] [--tol 1e-2 1e-4] [--markdown] ...

Trains ``NEMON(784, 100, 10, gamma)`` with Adam (lr 1e-3, batch 100) for one
epoch, once per nemon solver and tolerance, and once per torchdeq solver and
tolerance on the *same* fixed point: :class:`TorchDEQNEMON` reuses a NEMON's
parameters (``A`` of MATH 2, the input map of MATH 1, ``C``, ``c``) and hands
the averaged map ``G(x) = (1 - alpha*) x + alpha* relu(A x + B u + b)`` of
MATH 3 to ``torchdeq.get_deq`` with its implicit (``ift``) backward. Every run
starts from the same initial weights (``--seed``) and sees the same data order,
the same ``max_iter`` and the same stopping rule (relative step over the batch,
see :data:`STOP_LAYOUTS`).

Each configuration runs in a fresh ``python -m nemon.bench --one CONFIG``
process, so its peak resident memory is its own. The flop floor of MATH 8,
``2 n^2 (k_fwd + k_bwd) + 4 n m`` per sample over the matrix-multiply rate
measured here at the model's shape, says how far each run is from the machine.

Runs use one intra-op thread unless ``--threads`` says otherwise: at n = 100
a second thread has little to split, and on a shared CPU it makes every small
matmul wait for a descheduled thread (on the 2-core development machine under
load, an epoch took 11 to 53 s with two threads against 2.2 s with one).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import data as data_mod
from .errors import ConfigurationError, NonConvergenceWarning
from .model import NEMON
from .solvers import SOLVERS
from .training import resolve_device

IN_FEATURES, HIDDEN, OUT_FEATURES = 784, 100, 10
BATCH_SIZE, LR = 100, 1e-3
TORCHDEQ_SOLVERS = ("fixed_point_iter", "anderson")
# How torchdeq sees a batch. "batch": the batch is one (1, batch * n) state, so torchdeq's
# per-sample relative step is nemon's relative step over the whole batch (the same stopping
# rule; Anderson then mixes the batch with one set of coefficients). "sample": torchdeq's
# native (batch, n) layout, stopping when every sample's relative step is below tol (stricter).
STOP_LAYOUTS = ("batch", "sample")
RESULT_TAG = "NEMON_BENCH_RESULT "
ACC_WINDOW = 0.005  # "equal accuracy": within 0.5 percentage points
TARGET_SPEEDUP, TARGET_FLOOR = 5.0, 0.25


# --- data ------------------------------------------------------------------------------
def fashion_available() -> bool:
    """Whether Debian's Fashion-MNIST files are where :func:`nemon.data.load_dataset` looks."""
    return (data_mod.DEBIAN_DATASETS_ROOT / "fashion-mnist").is_dir()


def synthetic_images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` 28x28 uint8 images of ten classes, about as hard as Fashion-MNIST in one epoch.

    Each image is its class's fixed blob template blended with a random other
    class's template (weight up to 0.6, so some images are ambiguous) plus
    uniform noise; a NEMON reaches about 85 % test accuracy after one epoch.
    """
    g = torch.Generator().manual_seed(seed)
    proto_g = torch.Generator().manual_seed(12345)  # the same classes for train and test
    protos = (torch.rand(10, 1, 7, 7, generator=proto_g) > 0.55).float()
    protos = F.interpolate(protos, size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    labels = torch.randint(0, 10, (n,), generator=g)
    x = torch.empty(n, 28, 28, dtype=torch.uint8)
    for i in range(0, n, 10_000):  # chunks keep the float temporaries small
        lab = labels[i : i + 10_000]
        k = len(lab)
        other = torch.randint(0, 10, (k,), generator=g)
        w = 0.6 * torch.rand(k, 1, 1, generator=g)
        noise = 0.5 * torch.rand(k, 28, 28, generator=g)
        img = ((1 - w) * protos[lab] + w * protos[other] + noise).clamp_(0, 1)
        x[i : i + k] = img.mul_(255).round_().to(torch.uint8)
    return x.reshape(n, -1), labels


@dataclass
class BenchData:
    name: str  # what the table says the data were
    train_x: Tensor  # uint8 (N, 784); converted to pixels per batch, so memory stays small
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    mean: float  # training pixel statistics in [0, 1] units, folded into the model (MATH 1)
    std: float


def load_bench_data(data: str, samples: int, test_samples: int, seed: int) -> BenchData:
    """Fashion-MNIST (Debian files, via :mod:`nemon.data`) when present, else synthetic."""
    if data not in ("auto", "fashion-mnist", "synthetic"):
        raise ConfigurationError(f"--data must be auto, fashion-mnist or synthetic, got {data!r}")
    if data == "fashion-mnist" or (data == "auto" and fashion_available()):
        ds = data_mod.load_dataset("fashion-mnist", progress=False)  # checksum-verified
        tx, ty = ds.train_x.reshape(-1, IN_FEATURES), ds.train_y
        vx, vy = ds.test_x.reshape(-1, IN_FEATURES), ds.test_y
        if samples > len(tx) or test_samples > len(vx):
            raise ConfigurationError(
                f"Fashion-MNIST has {len(tx)} training and {len(vx)} test images, asked for "
                f"--samples {samples} and --test-samples {test_samples}; lower them"
            )
        tx, ty, vx, vy = tx[:samples], ty[:samples], vx[:test_samples], vy[:test_samples]
        name = f"Fashion-MNIST ({ds.source})"
    else:
        tx, ty = synthetic_images(samples, seed)
        vx, vy = synthetic_images(test_samples, seed + 1)
        name = "synthetic (10 blended blob classes, Fashion-MNIST shape)"
    mean, std = data_mod.pixel_stats(tx)
    return BenchData(name, tx.contiguous(), ty, vx.contiguous(), vy, mean, std)


# --- torchdeq on the same fixed point --------------------------------------------------
class TorchDEQNEMON(nn.Module):
    """A NEMON whose equilibrium and backward are torchdeq's instead of nemon's.

    The parameters are those of ``model`` (so Adam sees the same tensors and the
    same initial values); the fixed-point map is the averaged map of MATH 3 at
    ``alpha = model.alpha_star()``, the same one nemon's ``average`` solver
    iterates, and torchdeq's implicit backward solves the adjoint of that map,
    whose solution is ``(I - A^T J)^-1 g / alpha`` and gives the gradients of
    MATH 4 exactly. ``last_forward`` / ``last_backward`` hold each solve's
    iteration count and convergence, read from torchdeq's info dicts.
    """

    def __init__(
        self,
        model: NEMON,
        solver: str,
        *,
        tol: float,
        max_iter: int,
        layout: str = "batch",
    ) -> None:
        super().__init__()
        import torchdeq  # optional dependency: only the comparison needs it

        if solver not in TORCHDEQ_SOLVERS:
            raise ConfigurationError(
                f"unknown torchdeq solver {solver!r}; choose one of {list(TORCHDEQ_SOLVERS)}"
            )
        if layout not in STOP_LAYOUTS:
            raise ConfigurationError(f"layout must be one of {list(STOP_LAYOUTS)}, got {layout!r}")
        self.model = model
        self.solver = solver
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.layout = layout
        self.deq = torchdeq.get_deq(
            core="indexing",
            ift=True,
            f_solver=solver,
            b_solver=solver,
            f_max_iter=self.max_iter,
            b_max_iter=self.max_iter,
            eval_f_max_iter=self.max_iter,
            f_tol=self.tol,
            b_tol=self.tol,
            f_stop_mode="rel",
            b_stop_mode="rel",
        )
        self.last_forward: dict | None = None
        self.last_backward: dict | None = None

    def extra_repr(self) -> str:
        return (
            f"solver={self.solver!r}, tol={self.tol}, max_iter={self.max_iter}, "
            f"layout={self.layout!r}"
        )

    def _stats(self, info: dict) -> dict:
        # nstep is the step of the lowest residual, which is the last step when the solve
        # stopped on tol; a solve that did not reach tol ran all max_iter evaluations.
        converged = bool(info["rel_lowest"].max() < self.tol)
        iters = int(info["nstep"].max()) if converged else self.max_iter
        return {"iterations": iters, "converged": converged}

    def _record_backward(self, info: dict) -> None:
        self.last_backward = self._stats(info)

    def equilibrium(self, u: Tensor) -> Tensor:
        m = self.model
        u2 = u.reshape(-1, m.in_features).to(m.B.dtype)
        A = m.A
        B_eff, b_eff = m.input_map()
        inj = torch.addmm(b_eff, u2, B_eff.t())
        At = A.t()
        alpha = m.alpha_star()
        bsz, n = inj.shape

        def G(z: Tensor) -> Tensor:
            x = z.reshape(bsz, n)
            return torch.lerp(x, torch.relu(torch.addmm(inj, x, At)), alpha).reshape(z.shape)

        z0 = inj.new_zeros((1, bsz * n) if self.layout == "batch" else (bsz, n))
        z_out, info = self.deq(G, z0, backward_writer=self._record_backward)
        self.last_forward = self._stats(info)
        return z_out[-1].reshape(bsz, n)

    def forward(self, u: Tensor) -> Tensor:
        return F.linear(self.equilibrium(u), self.model.C, self.model.c)


# --- measurements ----------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(size: int, device: torch.device, min_seconds: float = 0.5) -> float:
    """Best measured ``torch.mm`` rate at ``(size x size) @ (size x size)``, float32, GFLOP/s.

    Repetitions are grouped into trials of at least 20 ms and the fastest trial
    counts: the floor is what the machine can do, not what a busy moment gave.
    """
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)

    def trial(reps: int) -> float:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        _sync(device)
        return time.perf_counter() - t0

    trial(3)
    reps = 1
    while (dt := trial(reps)) < 0.02:
        reps *= 2
    best, spent, n = dt / reps, dt, 1
    while spent < min_seconds or n < 5:
        dt = trial(reps)
        best, spent, n = min(best, dt / reps), spent + dt, n + 1
    return 2.0 * size**3 / best / 1e9


def flops_per_sample(k_fwd: float, k_bwd: float, n: int = HIDDEN, m: int = IN_FEATURES) -> float:
    """One training step per sample, MATH 8: ``2 n^2 (k_fwd + k_bwd) + 4 n m``."""
    return 2.0 * n * n * (k_fwd + k_bwd) + 4.0 * n * m


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


@dataclass
class RunConfig:
    """One row of the table: what to train, on what, and how."""

    impl: str  # "nemon" or "torchdeq"
    solver: str
    tol: float
    layout: str = "batch"  # torchdeq only, see STOP_LAYOUTS
    samples: int = 60_000
    test_samples: int = 10_000
    data: str = "auto"
    device: str = "cpu"
    threads: int = 1  # 0: torch's default; see the module docstring
    seed: int = 0
    gamma: float = 0.0
    max_iter: int = 300
    progress: bool = True

    def label(self) -> str:
        lay = f"/{self.layout}" if self.impl == "torchdeq" else ""
        return f"{self.impl} {self.solver}{lay} tol={self.tol:g}"


def _make_net(cfg: RunConfig, data: BenchData, device: torch.device) -> tuple[nn.Module, NEMON]:
    torch.manual_seed(cfg.seed)  # the same initial weights for every configuration
    model = NEMON(
        IN_FEATURES,
        HIDDEN,
        OUT_FEATURES,
        gamma=cfg.gamma,
        input_mean=data.mean,
        input_std=data.std,
        solver=cfg.solver if cfg.impl == "nemon" else "average",
        tol=cfg.tol,
        max_iter=cfg.max_iter,
    ).to(device)
    if cfg.impl == "nemon":
        return model, model
    if cfg.impl == "torchdeq":
        net = TorchDEQNEMON(
            model, cfg.solver, tol=cfg.tol, max_iter=cfg.max_iter, layout=cfg.layout
        )
        return net, model
    raise ConfigurationError(f"impl must be nemon or torchdeq, got {cfg.impl!r}")


def _solve_stats(net: nn.Module) -> tuple[int, bool, int, bool]:
    if isinstance(net, NEMON):
        f, b = net.last_stats, net.last_backward_stats
        return f.iterations, f.converged, b.iterations, b.converged
    f, b = net.last_forward, net.last_backward
    return f["iterations"], f["converged"], b["iterations"], b["converged"]


@torch.no_grad()
def _accuracy(net: nn.Module, x: Tensor, y: Tensor, dtype: torch.dtype, batch: int = 1000) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(x), batch):
        u = x[i : i + batch].to(dtype).div_(255.0)
        correct += int((net(u).argmax(1) == y[i : i + batch]).sum())
    return correct / len(x)


def _train_step(
    net: nn.Module, opt: torch.optim.Optimizer, u: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """One Adam step on cross-entropy; returns the detached logits and loss."""
    logits = net(u)
    loss = F.cross_entropy(logits, labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return logits.detach(), loss.detach()


def _warm_up(cfg: RunConfig, data: BenchData, u8: Tensor, labels: Tensor, device) -> None:
    """One step of a throw-away copy, so that neither the timing nor the baseline memory of
    the real run include torch's one-off costs (kernel and code-page loading, thread pools)."""
    net, model = _make_net(cfg, data, device)
    _train_step(
        net, torch.optim.Adam(model.parameters(), lr=LR), u8.to(model.B.dtype) / 255, labels
    )
    del net, model
    gc.collect()
    _sync(device)


def run_config(cfg: RunConfig, data: BenchData | None = None) -> dict:
    """Train one epoch for ``cfg`` in this process; returns the row's measurements."""
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    own_data = data is None
    if data is None:
        data = load_bench_data(cfg.data, cfg.samples, cfg.test_samples, cfg.seed)
    # The epoch's order is applied once, outside the timing: batches are then contiguous
    # slices, and neither implementation pays for a gather.
    order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(cfg.seed))
    X, Y = data.train_x[order].to(device), data.train_y[order].to(device)
    if own_data:  # keep one copy of the training set, not two
        data.train_x, data.train_y = X, Y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonConvergenceWarning)
        _warm_up(cfg, data, X[:BATCH_SIZE], Y[:BATCH_SIZE], device)
    base_rss = _rss_mib()
    net, model = _make_net(cfg, data, device)
    dtype = model.B.dtype
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fwd: list[int] = []
    bwd: list[int] = []
    not_converged = 0
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    net.train()
    _sync(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonConvergenceWarning)  # counted in not_converged
        t0 = time.perf_counter()
        for start in tqdm(
            range(0, len(X), BATCH_SIZE),
            desc=cfg.label(),
            unit="batch",
            disable=not cfg.progress,
            file=sys.stderr,
            mininterval=1.0,
            leave=False,
        ):
            u8, labels = X[start : start + BATCH_SIZE], Y[start : start + BATCH_SIZE]
            logits, loss = _train_step(net, opt, u8.to(dtype).div_(255.0), labels)
            kf, cf, kb, cb = _solve_stats(net)
            fwd.append(kf)
            bwd.append(kb)
            not_converged += (not cf) + (not cb)
            loss_sum += loss * len(labels)
            correct += (logits.argmax(1) == labels).sum()
        _sync(device)
        seconds = time.perf_counter() - t0
        peak_rss = _peak_rss_mib()
        cuda_peak = (
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        )
        test_acc = _accuracy(net, data.test_x.to(device), data.test_y.to(device), dtype)
    n = len(X)
    k_fwd, k_bwd = sum(fwd) / len(fwd), sum(bwd) / len(bwd)
    return {
        **{k: v for k, v in asdict(cfg).items() if k in ("impl", "solver", "tol", "layout")},
        "layout": cfg.layout if cfg.impl == "torchdeq" else "batch",
        "data": data.name,
        "samples": n,
        "seconds": seconds,
        "samples_per_s": n / seconds,
        "fwd_iters_mean": k_fwd,
        "bwd_iters_mean": k_bwd,
        "fwd_iters_max": max(fwd),
        "bwd_iters_max": max(bwd),
        "not_converged": not_converged,
        "train_loss": float(loss_sum) / n,
        "train_acc": int(correct) / n,
        "test_acc": test_acc,
        "base_rss_mib": base_rss,
        "peak_rss_mib": peak_rss,
        "cuda_peak_mib": cuda_peak,
        "flops_per_sample": flops_per_sample(k_fwd, k_bwd),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def run_isolated(cfg: RunConfig) -> dict:
    """:func:`run_config` in a fresh ``python -m nemon.bench --one`` process (own peak RSS)."""
    cmd = [sys.executable, "-m", "nemon.bench", "--one", json.dumps(asdict(cfg))]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"benchmark run {cfg.label()} failed (exit code {proc.returncode}); its error is "
            f"printed above; rerun it alone with: {' '.join(cmd[:4])} '{cmd[4]}'"
        )
    return json.loads(lines[-1][len(RESULT_TAG) :])


# --- the report ------------------------------------------------------------------------
def add_floor(rows: list[dict], gflops_model: float, gflops_large: float) -> None:
    """Floor time of an epoch at the model-shape matmul rate, and the fraction reached (MATH 8).

    ``floor_large_s`` is the same floor at the large-shape rate, for reference.
    """
    for r in rows:
        flops = r["flops_per_sample"] * r["samples"]
        r["floor_s"] = flops / (gflops_model * 1e9)
        r["floor_large_s"] = flops / (gflops_large * 1e9)
        r["floor_fraction"] = r["floor_s"] / r["seconds"]


def compare(rows: list[dict], tol: float) -> dict | None:
    """nemon's default path (``average``) against torchdeq's best config at equal accuracy.

    torchdeq's best is its fastest configuration at ``tol`` whose test accuracy is
    within 0.5 points of nemon's; ``None`` when either side has no row at ``tol``.
    """
    ref = [r for r in rows if r["impl"] == "nemon" and r["solver"] == "average" and r["tol"] == tol]
    deq = [r for r in rows if r["impl"] == "torchdeq" and r["tol"] == tol]
    if not ref or not deq:
        return None
    ref_row = ref[0]
    equal = [r for r in deq if abs(r["test_acc"] - ref_row["test_acc"]) <= ACC_WINDOW + 1e-12]
    pool = equal or deq
    best = max(pool, key=lambda r: r["samples_per_s"])
    speedup = ref_row["samples_per_s"] / best["samples_per_s"]
    return {
        "tol": tol,
        "nemon": ref_row,
        "torchdeq": best,
        "equal_accuracy": bool(equal),
        "speedup": speedup,
        "floor_fraction": ref_row.get("floor_fraction"),
        "target_met": bool(equal)
        and speedup >= TARGET_SPEEDUP
        and ref_row.get("floor_fraction", 0.0) >= TARGET_FLOOR,
    }


_COLUMNS = [
    ("impl", "impl", "{}"),
    ("solver", "solver", "{}"),
    ("layout", "stop", "{}"),
    ("tol", "tol", "{:g}"),
    ("samples_per_s", "samples/s", "{:.0f}"),
    ("seconds", "epoch s", "{:.2f}"),
    ("fwd_iters_mean", "fwd it", "{:.1f}"),
    ("bwd_iters_mean", "bwd it", "{:.1f}"),
    ("not_converged", "not conv", "{}"),
    ("test_acc", "test acc", "{:.4f}"),
    ("base_rss_mib", "base RSS MiB", "{:.0f}"),
    ("peak_rss_mib", "peak RSS MiB", "{:.0f}"),
    ("train_rss_mib", "+train MiB", "{:.0f}"),
    ("cuda_peak_mib", "CUDA peak MiB", "{:.1f}"),
    ("flops_per_sample", "Mflop/sample", "{:.3f}"),
    ("floor_s", "floor s", "{:.2f}"),
    ("floor_large_s", "floor s @1024", "{:.3f}"),
    ("floor_fraction", "% of floor", "{:.1%}"),
]


def _cell(row: dict, key: str, fmt: str) -> str:
    if key == "train_rss_mib":
        return fmt.format(row["peak_rss_mib"] - row["base_rss_mib"])
    val = row.get(key)
    if val is None:
        return "-"
    if key == "flops_per_sample":
        val = val / 1e6
    if key == "layout" and row["impl"] == "nemon":
        return "batch"
    return fmt.format(val)


def format_table(rows: list[dict], markdown: bool = False) -> str:
    head = [h for _, h, _ in _COLUMNS]
    body = [[_cell(r, k, f) for k, _, f in _COLUMNS] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt_row = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([fmt_row(head), fmt_row(["-" * w for w in widths]), *map(fmt_row, body)])


def format_comparison(cmp: dict) -> str:
    n, d = cmp["nemon"], cmp["torchdeq"]
    acc = "within 0.5 points" if cmp["equal_accuracy"] else "NONE within 0.5 points; fastest shown"
    verdict = "MET" if cmp["target_met"] else "NOT met"
    return (
        f"tol {cmp['tol']:g}: nemon average {n['samples_per_s']:.0f} samples/s "
        f"(test acc {n['test_acc']:.4f}, {n['floor_fraction']:.1%} of the flop floor) vs torchdeq "
        f"{d['solver']}/{d['layout']} {d['samples_per_s']:.0f} samples/s (test acc "
        f"{d['test_acc']:.4f}, {acc}): {cmp['speedup']:.2f}x faster; "
        f"target (>= {TARGET_SPEEDUP:g}x and >= {TARGET_FLOOR:.0%} of floor) {verdict}"
    )


# --- command line ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nemon.bench",
        description="One training epoch of NEMON(784, 100, 10): nemon's solvers vs torchdeq.",
    )
    p.add_argument("--samples", type=int, default=60_000, help="training samples (one epoch)")
    p.add_argument("--test-samples", type=int, default=10_000, help="test images for accuracy")
    p.add_argument("--tol", type=float, nargs="+", default=[1e-2, 1e-4])
    p.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    p.add_argument(
        "--torchdeq-solvers", nargs="+", default=list(TORCHDEQ_SOLVERS), choices=TORCHDEQ_SOLVERS
    )
    p.add_argument(
        "--torchdeq-stop",
        nargs="+",
        default=["batch"],
        choices=STOP_LAYOUTS,
        help="batch: relative step over the batch, as nemon (default); sample: every sample's",
    )
    p.add_argument("--no-torchdeq", action="store_true", help="benchmark nemon only")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads per run (0: torch's default); 1 by default, see THREADS_NOTE",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gamma", type=float, default=0.0, help="0 in the paper's released script")
    p.add_argument("--max-iter", type=int, default=300)
    p.add_argument("--data", default="auto", choices=["auto", "fashion-mnist", "synthetic"])
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars on stderr")
    p.add_argument("--one", metavar="CONFIG", help=argparse.SUPPRESS)  # child process mode
    return p


def _check_args(a: argparse.Namespace) -> None:
    if a.samples < BATCH_SIZE or a.test_samples < 1:
        raise ConfigurationError(
            f"--samples must be >= {BATCH_SIZE} (one batch) and --test-samples >= 1, "
            f"got {a.samples} and {a.test_samples}"
        )
    bad = [t for t in a.tol if not (t > 0 and math.isfinite(t))]
    if bad:
        raise ConfigurationError(f"--tol values must be positive numbers, got {bad}")
    if a.max_iter < 1:
        raise ConfigurationError(f"--max-iter must be >= 1, got {a.max_iter}")


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table and the comparison lines; return the rows."""
    args = build_parser().parse_args(argv)
    if args.one is not None:
        row = run_config(RunConfig(**json.loads(args.one)))
        print(RESULT_TAG + json.dumps(row), flush=True)
        return [row]
    _check_args(args)
    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    common = dict(
        samples=args.samples,
        test_samples=args.test_samples,
        data=args.data,
        device=str(device),
        threads=args.threads,
        seed=args.seed,
        gamma=args.gamma,
        max_iter=args.max_iter,
        progress=not args.no_progress,
    )
    configs = []
    for tol in args.tol:
        configs += [RunConfig("nemon", s, tol, **common) for s in args.solvers]
        if not args.no_torchdeq:
            configs += [
                RunConfig("torchdeq", s, tol, layout=lay, **common)
                for s in args.torchdeq_solvers
                for lay in args.torchdeq_stop
            ]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    gf_model = matmul_gflops(HIDDEN, device)
    gf_large = matmul_gflops(1024, device)
    rows = []
    for cfg in tqdm(configs, desc="configurations", disable=args.no_progress, file=sys.stderr):
        rows.append(run_isolated(cfg))
    wall = time.perf_counter() - t0
    add_floor(rows, gf_model, gf_large)
    load1 = os.getloadavg()

    try:
        deq_version = importlib.metadata.version("torchdeq")
    except importlib.metadata.PackageNotFoundError:
        deq_version = "not installed"
    mark = "- " if args.markdown else "# "  # a Markdown list, not headings, in --markdown
    header = [
        f"nemon.bench: one epoch of NEMON({IN_FEATURES}, {HIDDEN}, {OUT_FEATURES}, "
        f"gamma={args.gamma:g}), batch {BATCH_SIZE}, Adam lr {LR:g}, max_iter {args.max_iter}, "
        f"seed {args.seed}",
        f"data: {rows[0]['data'] if rows else '-'}; {args.samples} training samples, "
        f"{args.test_samples} test images",
        f"device: {device}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
        f"torchdeq {deq_version}; load average {load0[0]:.2f} before, {load1[0]:.2f} after",
        f"matmul rate (float32): {gf_model:.1f} GFLOP/s at {HIDDEN}x{HIDDEN}x{HIDDEN} "
        f"(the floor), {gf_large:.1f} GFLOP/s at 1024x1024x1024 (floor s @1024)",
        "floor s = (2 n^2 (fwd it + bwd it) + 4 n m) x samples / model-shape rate (MATH 8); "
        "% of floor = floor s / epoch s; not conv = solves (forward + backward) stopped at "
        "max_iter; +train MiB = peak RSS - RSS before training",
    ]
    print("\n".join(mark + h for h in header))
    if args.markdown:
        print()
    print(format_table(rows, markdown=args.markdown))
    if args.markdown:
        print()
    for tol in args.tol:
        cmp = compare(rows, tol)
        if cmp is not None:
            print(mark + format_comparison(cmp))
    print(f"{mark}wall time {wall:.0f} s")
    return rows


if __name__ == "__main__":
    main()
