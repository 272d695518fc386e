"""Exceptions and warnings raised by nemon.

Every error names the offending value and says what to do about it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn


class NemonError(Exception):
    """Base class of every error raised on purpose by nemon."""


class ConfigurationError(NemonError, ValueError):
    """An argument or hyperparameter is outside its allowed range."""


class NonFiniteError(NemonError, FloatingPointError):
    """An input, a weight or a loss contains NaN or infinity."""


class ConvergenceError(NemonError, RuntimeError):
    """A fixed-point solve hit ``max_iter`` without reaching ``tol`` (``strict=True``)."""


class DatasetError(NemonError, RuntimeError):
    """A dataset file is missing, corrupt or cannot be obtained."""


class CorruptFileError(NemonError, RuntimeError):
    """A file that a stage needs is missing, truncated, altered or not what it should be."""


class NonConvergenceWarning(RuntimeWarning):
    """A fixed-point solve stopped at ``max_iter`` above ``tol`` (emitted once per model)."""


class PrecisionWarning(RuntimeWarning):
    """A tolerance below what the floating-point type resolves (MATH 12; emitted once per model)."""


def exit_from(main: Callable[[], int | None]) -> NoReturn:
    """End a command-line tool with ``main()``'s status; a nemon error (a bad argument, a
    missing data set, ...) ends it with ``error: <message>`` and status 1, not a traceback."""
    try:
        sys.exit(main())
    except NemonError as err:
        sys.exit(f"error: {err}")
