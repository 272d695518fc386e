"""Speed benchmark: one training epoch of the paper's model, nemon against torchdeq (MATH 3, 4, 8).

    python -m nemon.bench [--samples 60000] [--tol 1e-2 1e-4] [--markdown] ...

Trains ``NEMON(784, 100, 10, gamma)`` with Adam (lr 1e-3, batch 100) for one
epoch per row. nemon rows run the workflow's loop, :func:`nemon.training.train_stack`
on a :class:`~nemon.stack.ModelStack`: one model per nemon solver, stopping rule
(``step`` or ``bound``, MATH 12) and tolerance, plus a ``nemon stack K=8`` row that
trains eight models of the same ``gamma`` and different ``lam`` together and
reports the throughput per model. torchdeq rows solve the same fixed point (the
averaged map at ``alpha*``, MATH 3) with torchdeq's solvers and implicit
backward, from the same initial weights and data order and with the same
stopping rule (:mod:`.torchdeq_adapter`); without torchdeq the nemon rows run alone.

Each configuration runs in a fresh ``python -m nemon.bench --one CONFIG`` process,
so its peak resident memory is its own. The flop floor of MATH 8,
``2 n^2 (k_fwd + k_bwd) + 4 n m`` per sample over the matrix-multiply rate measured
in the same run at the model's shape, says how far each row is from the machine.
The report prints the measured ratios (speed-up over torchdeq's fastest
configuration at equal accuracy, fraction of the floor); the README states the
targets they are read against.

Two companions look at whole jobs rather than one epoch: ``python -m nemon.bench.groups``
trains the workflow's jobs (a stack of the paper grid's ``lam`` values, the whole
schedule) once per solver and compares time, iterations and the models it gives
(:mod:`.groups`); ``python -m nemon.bench.floor results/<dataset>`` computes the flop
floor of a trained grid from its ``metrics.json`` files, beside the measured training
time (:mod:`.floor`).

Layout: :mod:`.config` (what a row trains), :mod:`.datasets`, :mod:`.runs` (one
row, in or out of process), :mod:`.torchdeq_adapter`, :mod:`.timing` (clocks,
matmul rate, memory), :mod:`.report` (table, floor, ratios), :mod:`.cli`,
:mod:`.groups`, :mod:`.floor`.
"""

from .cli import BenchReport, build_parser, main, run_benchmark
from .config import RunConfig
from .report import Comparison, add_floor, compare, format_table
from .runs import run_config, run_isolated, train_nemon, train_torchdeq
from .timing import flops_per_sample, matmul_gflops
from .torchdeq_adapter import MISSING_TORCHDEQ, TorchDEQNEMON, torchdeq_available

__all__ = [
    "MISSING_TORCHDEQ",
    "BenchReport",
    "Comparison",
    "RunConfig",
    "TorchDEQNEMON",
    "add_floor",
    "build_parser",
    "compare",
    "flops_per_sample",
    "format_table",
    "main",
    "matmul_gflops",
    "run_benchmark",
    "run_config",
    "run_isolated",
    "torchdeq_available",
    "train_nemon",
    "train_torchdeq",
]
