"""Does ``torch.compile`` pay for the averaged iteration? Eager against compiled, one process.

``python -m nemon.bench.compiled`` builds a ``NEMON(784, 100, 10)`` at its initial
weights (``--members K``: a stack of ``K``, solved together as the workflow trains
them), a batch of seeded random pixel rows, and times three things eagerly and
compiled (``torch.compile``, the default inductor backend, static shapes), alternating
in rounds so that a slow minute of the machine hits both:

- ``call``: ``x + 1`` on one ``(K, batch, n)`` iterate: what any compiled call costs
  beyond its kernel (guards, the generated wrapper);
- ``iteration``: one averaged iteration as :func:`nemon.solvers.solve_members` makes it
  (``F(x) = relu(A x + inj)``, the step norm read on the host, ``lerp``), against the same
  expression as one compiled graph (inductor fuses the ReLU, the norm and the ``lerp``);
- ``solve``: a whole forward solve by :func:`nemon.solvers.solve_members` with the
  library's step map against a compiled one (the solver's loop stays eager: it stops on
  a host test after every iteration, MATH 3 and 12); both sides run the Python loop
  (``scripted_loops(False)``; the TorchScript loop has its own benchmark,
  :mod:`nemon.bench.loops`).

It reports the median microseconds of each over the rounds, the speed-up (eager time
over compiled time; below 1: compiling is slower) and how far the compiled results are
from the eager ones (inductor may reassociate a reduction or fuse a ``lerp``, so the
two agree to rounding, not bit for bit); the solves must take the same iterations.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import core, solvers
from ..errors import ConfigurationError, exit_from
from ..model import NEMON
from .config import HIDDEN, IN_FEATURES
from .report import grid
from .timing import sync

CASES = ("call", "iteration", "solve")


class _Problem:
    """The forward solve of ``members`` NEMONs on one batch (a stack of the workflow when
    ``members > 1``): step maps, a mid-way iterate, the solver's constants."""

    def __init__(
        self, batch: int, gamma: float, tol: float, device: torch.device, seed: int, members: int
    ):
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
            torch.manual_seed(seed)
            models = [
                NEMON(IN_FEATURES, HIDDEN, 10, gamma=gamma).to(device) for _ in range(members)
            ]
        u = torch.rand(batch, IN_FEATURES, generator=gen).to(device)
        with torch.no_grad():
            T = torch.stack([m.T for m in models])
            d = torch.stack([m.d for m in models]) if models[0].weighted else None
            g = torch.full((members,), gamma, device=device)
            _, _, _, alpha, rho, Amat, _ = core.prepare_layer(T, d, g, False)
            B = torch.stack([m.B for m in models])
            b = torch.stack([m.b for m in models])
            u_n = models[0].normalise(u).expand(members, -1, -1)
            self.inj = torch.baddbmm(b[:, None, :], u_n, B.transpose(1, 2))
        self.Amat, self.At = Amat, Amat.transpose(1, 2).contiguous()
        self.alpha, self.rho, self.tol = alpha, rho, tol
        self.w = torch.tensor(alpha, device=device)[:, None, None]
        # an iterate part of the way to the fixed point, for the single-iteration cases
        self.x = self.solve(core._forward_factory(Amat, self.inj), max_iter=3)[0]

    def solve(self, make_F, max_iter: int = 1000) -> tuple[Tensor, list[int]]:
        x, recs, _ = solvers.solve_members(
            make_F,
            torch.zeros_like(self.inj),
            alpha=self.alpha,
            rho=self.rho,
            tol=self.tol,
            max_iter=max_iter,
            stop="step",
        )
        return x, [r.iterations for r in recs]


def _eager_iteration(x: Tensor, z: Tensor, a: Tensor, w: Tensor) -> tuple[list[float], Tensor]:
    """The solver's own operations: ``solvers._iterate_one`` for one member, else ``_iterate``."""
    fx = torch.baddbmm(z, x, a).relu_()
    if x.shape[0] == 1:
        return [torch.dist(fx, x).item()], torch.lerp(x, fx, w)
    return torch.linalg.vector_norm(fx - x, dim=(1, 2)).tolist(), torch.lerp(x, fx, w)


def _graph_iteration(x: Tensor, z: Tensor, a: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    fx = torch.baddbmm(z, x, a).relu()
    return torch.linalg.vector_norm(fx - x, dim=(1, 2)), torch.lerp(x, fx, w)


def _step_map(x: Tensor, z: Tensor, a: Tensor) -> Tensor:
    return torch.baddbmm(z, x, a).relu()


def build_cases(p: _Problem) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """Per case, ``(eager, compiled)`` callables; compiling happens on their first call."""
    add_one = torch.compile(lambda x: x + 1, dynamic=False)
    graph = torch.compile(_graph_iteration, dynamic=False)
    # in a stack, members leave the solve as they finish: shapes change, so let dynamo
    # generalise them (its default) rather than compile one graph per member count
    step_map = torch.compile(_step_map, dynamic=None if p.At.shape[0] > 1 else False)

    def compiled_iteration():
        s, x_new = graph(p.x, p.inj, p.At, p.w)
        return s.tolist(), x_new

    def compiled_factory(members):
        if members is None:
            return lambda x: step_map(x, p.inj, p.At)
        z, a = p.inj[members], p.At[members]
        return lambda x: step_map(x, z, a)

    eager_factory = core._forward_factory(p.Amat, p.inj)

    def eager_solve():
        with solvers.scripted_loops(False):  # eager: the Python loop, as the compiled side runs
            return p.solve(eager_factory)

    return {
        "call": (lambda: p.x + 1, lambda: add_one(p.x)),
        "iteration": (lambda: _eager_iteration(p.x, p.inj, p.At, p.w), compiled_iteration),
        "solve": (eager_solve, lambda: p.solve(compiled_factory)),
    }


def _difference(case: str, eager: Any, compiled: Any) -> tuple[float, str]:
    """Largest absolute difference of the two results, and what else differs."""
    if case == "call":
        return float((eager - compiled).abs().max()), ""
    if case == "iteration":  # (step norms, next iterate)
        steps = max(abs(a - b) for a, b in zip(eager[0], compiled[0], strict=True))
        return max(steps, float((eager[1] - compiled[1]).abs().max())), ""
    (xe, ke), (xc, kc) = eager, compiled  # (x*, iterations per member)
    note = "" if ke == kc else f"iterations differ: {ke} eager, {kc} compiled"
    return float((xe - xc).abs().max()), note


def measure(
    *,
    batch: int = 100,
    gamma: float = 0.0,
    tol: float = 1e-4,
    rounds: int = 5,
    repeats: int = 200,
    device: str = "cpu",
    seed: int = 0,
    members: int = 1,
    cases: tuple[str, ...] = CASES,
) -> list[dict]:
    """One row per case: median us eager and compiled, the speed-up, the difference."""
    dev = torch.device(device)
    p = _Problem(batch, gamma, tol, dev, seed, members)
    built = build_cases(p)
    rows = []
    with torch.no_grad():
        for name in cases:
            eager, compiled = built[name]
            t0 = time.perf_counter()
            try:
                out_c = compiled()  # compiles
            except Exception as err:  # inductor's errors have no common base class
                raise ConfigurationError(
                    f"torch.compile failed on this machine ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}); on the CPU its "
                    "backend needs a C++ compiler (g++)"
                ) from err
            compile_s = time.perf_counter() - t0
            diff, note = _difference(name, eager(), out_c)
            times: dict[str, list[float]] = {"eager": [], "compiled": []}
            for _ in range(rounds):
                for label, fn in (("eager", eager), ("compiled", compiled)):
                    fn()  # warm
                    sync(dev)
                    t = time.perf_counter()
                    for _ in range(repeats):
                        fn()
                    sync(dev)
                    times[label].append((time.perf_counter() - t) / repeats * 1e6)
            e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
            row = {
                "case": name,
                "eager_us": e,
                "compiled_us": c,
                "speedup": e / c,
                "max_abs_diff": diff,
                "compile_s": compile_s,
            }
            if name == "solve":
                row["iterations"] = sum(out_c[1]) / len(out_c[1])  # mean over members
            if note:
                row["note"] = note
            rows.append(row)
    return rows


def format_rows(rows: list[dict], markdown: bool = False) -> str:
    keys = ["case", "eager_us", "compiled_us", "speedup", "max_abs_diff", "iterations", "compile_s"]

    def cell(row: dict, key: str) -> str:
        v = row.get(key, "-")
        if key in ("eager_us", "compiled_us"):
            return f"{v:,.1f}"
        if key == "speedup":
            return f"{v:.2f}x"
        if key == "max_abs_diff":
            return f"{v:.2g}"
        if key in ("compile_s", "iterations") and isinstance(v, float):
            return f"{v:.1f}"
        return str(v)

    lines = [grid(keys, [[cell(r, k) for k in keys] for r in rows], markdown)]
    lines += [f"- {r['case']}: {r['note']}" for r in rows if "note" in r]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nemon.bench.compiled",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--batch", type=int, default=100, help="images per solve")
    p.add_argument(
        "--members", type=int, default=1, help="models solved together (the workflow stacks 8)"
    )
    p.add_argument("--gamma", type=float, default=0.0, help="the model's gamma (MATH 2)")
    p.add_argument("--tol", type=float, default=1e-4, help="relative step of the solves")
    p.add_argument("--rounds", type=int, default=5, help="alternations of the two paths")
    p.add_argument("--repeats", type=int, default=200, help="calls per path and round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = p.parse_args(argv)
    for name in ("batch", "members", "rounds", "repeats", "threads"):
        if getattr(args, name) < 1:
            raise ConfigurationError(f"--{name} must be at least 1")
    if not 0.0 <= args.gamma < 1.0:
        raise ConfigurationError(f"--gamma {args.gamma} is outside [0, 1)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError("--device cuda, but CUDA is not available here")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = measure(
        batch=args.batch,
        members=args.members,
        gamma=args.gamma,
        tol=args.tol,
        rounds=args.rounds,
        repeats=args.repeats,
        device=args.device,
    )
    print(
        f"# {args.members} x NEMON({IN_FEATURES}, {HIDDEN}, 10), gamma {args.gamma:g}, "
        f"batch {args.batch}, "
        f"tol {args.tol:g}, {args.device}, {args.threads} thread(s), torch {torch.__version__}"
    )
    print(f"# medians over {args.rounds} alternating rounds of {args.repeats} calls each")
    print(format_rows(rows, markdown=args.markdown))
    print(f"- wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    exit_from(main)
