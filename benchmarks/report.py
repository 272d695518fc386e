"""The table, the flop floor (MATH 8) and the measured ratios, from the rows of one run.

No targets live here: the lines state the measured speed-up over torchdeq's best
configuration at equal accuracy and the fraction of the flop floor.
"""

from __future__ import annotations

from dataclasses import dataclass

from nemon.solvers import DEFAULT_SOLVER


def add_floor(rows: list[dict], gflops_model: float, gflops_large: float) -> None:
    """Floor time of each row's epoch and the fraction of it reached (MATH 8), in place.

    ``floor_s = flops_per_sample x samples x models / rate`` at the model-shape
    matmul rate; ``floor_large_s`` is the same at the large-shape rate, for reference.
    """
    for r in rows:
        flops = r["flops_per_sample"] * r["samples"] * r["models"]
        r["floor_s"] = flops / (gflops_model * 1e9)
        r["floor_large_s"] = flops / (gflops_large * 1e9)
        r["floor_fraction"] = r["floor_s"] / r["seconds"]


def median_run(runs: list[dict]) -> dict:
    """The run of median epoch time (the lower median of an even count), with every run's range.

    Runs of one configuration differ in time only: the same weights, data order and
    iteration counts. The row keeps that run's fields and adds ``runs``,
    ``seconds_min`` and ``seconds_max``.
    """
    if not runs:
        raise ValueError("no runs to summarise")
    ordered = sorted(runs, key=lambda r: r["seconds"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row.update(
        runs=len(runs), seconds_min=ordered[0]["seconds"], seconds_max=ordered[-1]["seconds"]
    )
    return row


def _is_reference(r: dict, tol: float) -> bool:
    # nemon's default path on the rule torchdeq shares: one model, its default solver, step
    return (
        r["impl"] == "nemon"
        and r["models"] == 1
        and r["solver"] == DEFAULT_SOLVER
        and r["stop"] == "step"
        and r["tol"] == tol
    )


@dataclass
class Comparison:
    """nemon's default path against torchdeq's fastest configuration at equal accuracy."""

    tol: float
    nemon: dict
    torchdeq: dict
    equal_accuracy: bool  # False: no torchdeq row within the window; the fastest is shown
    speedup: float  # nemon samples/s over torchdeq samples/s
    floor_fraction: float | None


def compare(rows: list[dict], tol: float, window: float) -> Comparison | None:
    """Compare at ``tol`` the rows of one run; ``None`` when either side has no row.

    nemon's side is its default solver (``nemon.solvers.DEFAULT_SOLVER``) with
    ``stop="step"`` on one model;
    torchdeq's side is its fastest configuration with the same stopping rule
    (``batch`` layout) whose test accuracy is within ``window`` of nemon's.
    """
    ref = [r for r in rows if _is_reference(r, tol)]
    deq = [r for r in rows if r["impl"] == "torchdeq" and r["stop"] == "step" and r["tol"] == tol]
    if not ref or not deq:
        return None
    n = ref[0]
    equal = [r for r in deq if abs(r["test_acc"] - n["test_acc"]) <= window + 1e-12]
    best = max(equal or deq, key=lambda r: r["samples_per_s"])
    return Comparison(
        tol,
        n,
        best,
        bool(equal),
        n["samples_per_s"] / best["samples_per_s"],
        n.get("floor_fraction"),
    )


def format_comparison(cmp: Comparison, window: float) -> str:
    n, d = cmp.nemon, cmp.torchdeq
    acc = (
        f"within {window * 100:g} points of nemon's"
        if cmp.equal_accuracy
        else f"NONE within {window * 100:g} points; the fastest is shown"
    )
    floor = "" if cmp.floor_fraction is None else f", {cmp.floor_fraction:.1%} of the flop floor"
    runs = ""
    if n.get("runs", 1) > 1 and d.get("runs", 1) > 1:  # the same ratio from each side's fastest run
        fastest = (n["samples_per_s"] * n["seconds"] / n["seconds_min"]) / (
            d["samples_per_s"] * d["seconds"] / d["seconds_min"]
        )
        runs = f" (median runs; {fastest:.2f}x from each side's fastest run)"
    return (
        f"tol {cmp.tol:g}: nemon {n['solver']}/step {n['samples_per_s']:.0f} samples/s (test acc "
        f"{n['test_acc']:.4f}{floor}) vs torchdeq {d['solver']}/{d['stop']} "
        f"{d['samples_per_s']:.0f} samples/s (test acc {d['test_acc']:.4f}, {acc}): "
        f"speed-up {cmp.speedup:.2f}x{runs}"
    )


def stack_lines(rows: list[dict], tol: float, cmp: Comparison | None) -> list[str]:
    """Per-model throughput of each stack row at ``tol`` against the single-model rows."""
    out = []
    for s in (r for r in rows if r["models"] > 1 and r["tol"] == tol):
        single = [
            r
            for r in rows
            if r["impl"] == "nemon"
            and r["models"] == 1
            and (r["solver"], r["stop"], r["tol"]) == (s["solver"], s["stop"], tol)
        ]
        parts = [f"{s['samples_per_s']:.0f} samples/s per model"]
        if single:
            parts.append(f"{s['samples_per_s'] / single[0]['samples_per_s']:.2f}x one model")
        if cmp is not None:
            parts.append(f"{s['samples_per_s'] / cmp.torchdeq['samples_per_s']:.2f}x torchdeq's")
        if s.get("floor_fraction") is not None:
            parts.append(f"{s['floor_fraction']:.1%} of the flop floor")
        lams = ", ".join(f"{x:g}" for x in s["lams"])
        out.append(
            f"tol {tol:g}: nemon stack K={s['models']} {s['solver']}/{s['stop']} "
            f"(lam {lams}): " + ", ".join(parts)
        )
    return out


# key, header, format; the stack row's samples/s are per model
COLUMNS = [
    ("impl", "impl", "{}"),
    ("solver", "solver", "{}"),
    ("stop", "stop", "{}"),
    ("tol", "tol", "{:g}"),
    ("samples_per_s", "samples/s per model", "{:.0f}"),
    ("seconds", "epoch s", "{:.2f}"),
    ("seconds_range", "epoch s range", "{:.2f}-{:.2f}"),
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
    if key == "impl":
        return f"nemon stack K={row['models']}" if row["models"] > 1 else row["impl"]
    if key == "seconds_range":
        if row.get("seconds_min") is None:
            return "-"
        return fmt.format(row["seconds_min"], row["seconds_max"])
    if key == "train_rss_mib":
        return fmt.format(row["peak_rss_mib"] - row["base_rss_mib"])
    val = row.get(key)
    if val is None:
        return "-"
    if key == "flops_per_sample":
        val = val / 1e6
    return fmt.format(val)


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """One line per row; Markdown (``--markdown``) or right-aligned plain text."""
    head = [h for _, h, _ in COLUMNS]
    body = [[_cell(r, k, f) for k, _, f in COLUMNS] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])
