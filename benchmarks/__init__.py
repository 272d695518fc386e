"""The benchmarks the speed claims rest on, run from the repository root (docs/speed.md).

    python -m benchmarks [--samples 60000] [--tol 1e-2 1e-4] [--markdown] ...
    python -m benchmarks.floor results/<dataset> [--markdown]

``python -m benchmarks`` times one training epoch of the paper's model, nemon against
torchdeq (MATH 3, 4, 8). It trains ``NEMON(784, 100, 10, gamma)`` with Adam (lr 1e-3,
batch 100) for one epoch per row. nemon rows run the workflow's loop,
:func:`nemon.training.train_stack` on a :class:`~nemon.stack.ModelStack`: one model per
solver of :data:`nemon.solvers.SOLVERS`, stopping rule (``step`` or ``bound``, MATH 12)
and tolerance, plus a ``nemon stack K=8`` row that trains eight models of the same
``gamma`` and different ``lam`` together and reports the throughput per model. torchdeq
rows solve the same fixed point (the averaged map at ``alpha*``, MATH 3) with torchdeq's
solvers and implicit backward, from the same initial weights and data order and with the
same stopping rule (:mod:`.torchdeq_adapter`); without torchdeq the nemon rows run alone.

Each configuration runs in a fresh ``python -m benchmarks --one CONFIG`` process, so its
peak resident memory is its own. The flop floor of MATH 8,
``2 n^2 (k_fwd + k_bwd) + 4 n m`` per sample over the matrix-multiply rate measured in
the same run at the model's shape, says how far each row is from the machine. The report
prints the measured ratios (speed-up over torchdeq's fastest configuration at equal
accuracy, fraction of the floor).

``python -m benchmarks.floor`` computes the same floor for a whole trained grid from its
``metrics.json`` files, beside the measured training time (:mod:`.floor`).

Layout: :mod:`.config` (what a row trains), :mod:`.datasets`, :mod:`.runs` (one row, in
or out of process), :mod:`.torchdeq_adapter`, :mod:`.timing` (clocks, matmul rate,
memory), :mod:`.report` (table, floor, ratios), :mod:`.cli`, :mod:`.floor`.
"""
