"""Does a regenerated results tree reproduce a reference one, run times aside?

    python -m nemon.compare /tmp/clone/results/mnist-5k results/mnist-5k
    python -m nemon.compare /tmp/clone/figures/mnist-5k figures/mnist-5k

Every file under REFERENCE must exist under REGENERATED and hold the same content:
JSON records compare as parsed values without what differs from run to run by design
(``provenance``, ``timings`` and every key ending in ``seconds``); CSV tables compare
cell for cell without the columns ending in ``seconds``; every other file byte for
byte. Model files (``*.pt``) and logs are not compared: the records carry each model's
sha256. ``--ignore KEY`` leaves out one more key or column (for example ``warm_start``,
which records made before it existed lack). Exit status 0 when everything matches, 1
with one line per differing or missing file otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from .errors import ConfigurationError

VOLATILE = ("provenance", "timings")
SKIPPED_SUFFIXES = (".pt", ".log")


def _volatile(key: str, extra: Iterable[str]) -> bool:
    return key in VOLATILE or key.endswith("seconds") or key in extra


def _strip(value, extra: frozenset[str]):
    if isinstance(value, dict):
        return {k: _strip(v, extra) for k, v in value.items() if not _volatile(k, extra)}
    if isinstance(value, list):
        return [_strip(v, extra) for v in value]
    return value


def _py(v):
    """A pandas cell as a plain Python value (``0.5``, not ``np.float64(0.5)``)."""
    return v.item() if hasattr(v, "item") else v


def _first_difference(a, b, path: str = "") -> str:
    """Where two parsed JSON values first differ, as ``key.key[index]: a != b``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}{k}: only in the {'reference' if k in b else 'regenerated'} file"
            if a[k] != b[k]:
                return _first_difference(a[k], b[k], f"{path}{k}.")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}].")
    return f"{path.rstrip('.')}: {a!r} != {b!r}"


def compare_file(new: Path, ref: Path, ignore: Iterable[str] = ()) -> str | None:
    """``None`` when ``new`` reproduces ``ref``, else what differs first."""
    extra = frozenset(ignore)
    if ref.suffix == ".json":
        a = _strip(json.loads(new.read_text()), extra)
        b = _strip(json.loads(ref.read_text()), extra)
        return None if a == b else _first_difference(a, b)
    if ref.suffix == ".csv":
        a, b = pd.read_csv(new), pd.read_csv(ref)
        a = a[[c for c in a.columns if not _volatile(c, extra)]]
        b = b[[c for c in b.columns if not _volatile(c, extra)]]
        if list(a.columns) != list(b.columns):
            return f"columns {list(a.columns)} != {list(b.columns)}"
        if a.shape != b.shape:
            return f"{len(a)} rows != {len(b)} rows"
        if a.equals(b):
            return None
        diff = (a != b) & ~(a.isna() & b.isna())
        cells = [(r, c) for r in diff.index for c in diff.columns if diff.at[r, c]]
        if not cells:  # equal values read as different types (1 and 1.0)
            return f"column types {a.dtypes.to_dict()} != {b.dtypes.to_dict()}"
        row, col = cells[0]
        return f"row {row}, column {col}: {_py(a.at[row, col])!r} != {_py(b.at[row, col])!r}"
    return None if new.read_bytes() == ref.read_bytes() else "the bytes differ"


def compare_trees(
    regenerated: Path, reference: Path, ignore: Iterable[str] = ()
) -> tuple[int, list[str]]:
    """``(files compared, problems)`` for every file under ``reference``."""
    for name, folder in (("regenerated", regenerated), ("reference", reference)):
        if not folder.is_dir():
            raise ConfigurationError(f"{name} folder {folder} does not exist or is not a folder")
    files = sorted(
        p
        for p in reference.rglob("*")
        if p.is_file()
        and p.suffix not in SKIPPED_SUFFIXES
        and "logs" not in p.relative_to(reference).parts
    )
    if not files:
        raise ConfigurationError(f"{reference} holds no file to compare")
    problems = []
    for ref in files:
        rel = ref.relative_to(reference)
        new = regenerated / rel
        if not new.is_file():
            problems.append(f"{rel}: missing in {regenerated}")
            continue
        try:
            what = compare_file(new, ref, ignore)
        except (ValueError, UnicodeDecodeError) as e:  # unreadable JSON or CSV
            what = f"cannot be read ({type(e).__name__}: {e})"
        if what is not None:
            problems.append(f"{rel}: {what}")
    return len(files), problems


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nemon.compare",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    p.add_argument("regenerated", type=Path, help="the results (or figures) folder to check")
    p.add_argument("reference", type=Path, help="the folder it should reproduce")
    p.add_argument("--ignore", action="append", default=[], metavar="KEY")
    args = p.parse_args(argv)
    try:
        n, problems = compare_trees(args.regenerated, args.reference, args.ignore)
    except ConfigurationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in problems:
        print(line)
    print(
        f"{n} files compared: {n - len(problems)} reproduced, {len(problems)} not"
        + (" (run times and provenance aside)" if not problems else "")
    )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
