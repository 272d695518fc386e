"""nemon: robust implicit networks via non-Euclidean (l_inf) contraction.

Reference implementation of Jafarpour, Davydov, Proskurnikov and Bullo,
"Robust Implicit Networks via Non-Euclidean Contractions" (NeurIPS 2021).
Section numbers in docstrings refer to ``reference/MATH.md``.
"""

from .errors import (
    ConfigurationError,
    ConvergenceError,
    DatasetError,
    NemonError,
    NonConvergenceWarning,
    NonFiniteError,
)
from .measure import inf_norm, mu_inf
from .model import NEMON
from .robustness import certified_accuracy, certified_radius, inversion_attack, pairwise_lipschitz
from .solvers import SOLVERS, SolverStats, get_solver

__version__ = "0.1.0"

__all__ = [
    "NEMON",
    "SOLVERS",
    "ConfigurationError",
    "ConvergenceError",
    "DatasetError",
    "NemonError",
    "NonConvergenceWarning",
    "NonFiniteError",
    "SolverStats",
    "certified_accuracy",
    "certified_radius",
    "get_solver",
    "inf_norm",
    "inversion_attack",
    "mu_inf",
    "pairwise_lipschitz",
    "__version__",
]
