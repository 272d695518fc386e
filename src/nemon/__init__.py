"""nemon: robust implicit networks via non-Euclidean (l_inf) contraction.

Reference implementation of Jafarpour, Davydov, Proskurnikov and Bullo,
"Robust Implicit Networks via Non-Euclidean Contractions" (NeurIPS 2021), with
the interval bounds and certified training of its follow-ups and the baselines
a reviewer asks for. Section numbers in docstrings (``MATH n``) refer to
``docs/MATH.md`` in the repository.
"""

__version__ = "0.2.0"

from .attacks import inversion_attack  # noqa: E402
from .certificates import (  # noqa: E402
    certified_accuracy,
    certified_mask,
    certified_radius,
    interval_bounds,
    interval_margins,
    pairwise_lipschitz,
)
from .errors import (  # noqa: E402
    ConfigurationError,
    ConvergenceError,
    CorruptFileError,
    DatasetError,
    NemonError,
    NonConvergenceWarning,
    NonFiniteError,
    PrecisionWarning,
)
from .measure import inf_norm, mu_inf  # noqa: E402
from .mlp import MLP  # noqa: E402
from .model import NEMON  # noqa: E402
from .mon import MON  # noqa: E402
from .protocol import ImplicitModel, SolveSettings  # noqa: E402
from .solvers import SOLVERS, STOP_RULES, SolverStats, get_solver  # noqa: E402
from .stack import ModelStack  # noqa: E402

__all__ = [
    "MLP",
    "MON",
    "NEMON",
    "SOLVERS",
    "STOP_RULES",
    "ConfigurationError",
    "ConvergenceError",
    "CorruptFileError",
    "DatasetError",
    "ImplicitModel",
    "ModelStack",
    "NemonError",
    "NonConvergenceWarning",
    "NonFiniteError",
    "PrecisionWarning",
    "SolveSettings",
    "SolverStats",
    "certified_accuracy",
    "certified_mask",
    "certified_radius",
    "get_solver",
    "inf_norm",
    "interval_bounds",
    "interval_margins",
    "inversion_attack",
    "mu_inf",
    "pairwise_lipschitz",
    "__version__",
]
