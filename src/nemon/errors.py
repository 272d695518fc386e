"""Exceptions and warnings raised by nemon.

Every error names the offending value and says what to do about it.
"""

from __future__ import annotations


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
