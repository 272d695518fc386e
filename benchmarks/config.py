"""What one row of the benchmark trains, and the checks that keep a row meaningful.

The model and the optimiser are the paper's (MATH 8): ``NEMON(784, 100, 10)``,
cross-entropy, Adam at 1e-3, batch 100, one epoch. A :class:`RunConfig` says
which implementation solves the fixed point, with which solver, tolerance and
stopping rule, and how many models train together (``len(lams)``; one for the
comparison with torchdeq).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

from nemon.errors import ConfigurationError
from nemon.solvers import SOLVERS, STOP_RULES

IN_FEATURES, HIDDEN, OUT_FEATURES = 784, 100, 10
BATCH_SIZE, LR = 100, 1e-3
IMPLS = ("nemon", "torchdeq")
TORCHDEQ_SOLVERS = ("fixed_point_iter", "anderson")
# How torchdeq sees a batch. "batch": the batch is one (1, batch * n) state, so torchdeq's
# relative step is nemon's relative step over the whole batch (stop="step", the same rule).
# "sample": torchdeq's native (batch, n) layout, stopping when every sample's relative step
# is below tol (a stricter rule: such rows are shown, never compared).
LAYOUTS = ("batch", "sample")
DATA_CHOICES = ("auto", "fashion-mnist", "synthetic")


def _check_number(name: str, value: object, *, low: float, strict: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if strict else value >= low)
    if not ok:
        rel = ">" if strict else ">="
        raise ConfigurationError(f"{name} must be a finite number {rel} {low:g}, got {value!r}")


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigurationError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """One row of the table: what to train, on what, and how.

    ``lams`` holds one Lipschitz weight per model trained together (MATH 5);
    the rows compared with torchdeq train one model at ``lam = 0``.
    """

    impl: str
    solver: str
    tol: float
    stop: str = "step"  # nemon's stopping rule (MATH 12); torchdeq has "step" only
    layout: str = "batch"  # torchdeq only, see LAYOUTS
    lams: tuple[float, ...] = (0.0,)
    samples: int = 60_000
    test_samples: int = 10_000
    data: str = "auto"
    device: str = "cpu"
    threads: int = 1  # 0: torch's default
    seed: int = 0
    gamma: float = 0.0
    max_iter: int = 300
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "lams", tuple(float(x) for x in self.lams))
        if self.impl not in IMPLS:
            raise ConfigurationError(f"impl must be one of {list(IMPLS)}, got {self.impl!r}")
        known = list(SOLVERS) if self.impl == "nemon" else list(TORCHDEQ_SOLVERS)
        if self.solver not in known:
            raise ConfigurationError(
                f"unknown {self.impl} solver {self.solver!r}; choose one of {known}"
            )
        if self.stop not in STOP_RULES:
            raise ConfigurationError(
                f"stop must be one of {list(STOP_RULES)} (MATH 12), got {self.stop!r}"
            )
        if self.layout not in LAYOUTS:
            raise ConfigurationError(f"layout must be one of {list(LAYOUTS)}, got {self.layout!r}")
        if self.impl == "torchdeq" and (self.stop != "step" or len(self.lams) != 1):
            raise ConfigurationError(
                "torchdeq stops on the relative step only and trains one model: it needs "
                f"stop='step' and one lam, got stop={self.stop!r}, lams={list(self.lams)}"
            )
        if self.impl == "nemon" and self.layout != "batch":
            raise ConfigurationError("layout is torchdeq's; nemon always stops per batch")
        if self.solver == "picard" and self.stop == "bound":
            raise ConfigurationError(
                "solver picard has no known contraction factor, so stop='bound' is never met; "
                "use stop='step' with picard"
            )
        if not self.lams:
            raise ConfigurationError("lams needs at least one value (one per model)")
        for lam in self.lams:
            _check_number("lam", lam, low=0.0, strict=False)
        _check_number("tol", self.tol, low=0.0, strict=True)
        _check_int("samples", self.samples, BATCH_SIZE)
        _check_int("test_samples", self.test_samples, 1)
        _check_int("max_iter", self.max_iter, 1)
        _check_int("threads", self.threads, 0)
        _check_int("seed", self.seed, 0)
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma)):
            raise ConfigurationError(f"gamma must be a finite number below 1, got {self.gamma!r}")
        if self.gamma >= 1:
            raise ConfigurationError(
                f"gamma must be below 1 (mu(A) <= gamma < 1 makes the model well posed, "
                f"MATH 2), got {self.gamma!r}"
            )
        if self.data not in DATA_CHOICES:
            raise ConfigurationError(f"data must be one of {list(DATA_CHOICES)}, got {self.data!r}")

    @property
    def models(self) -> int:
        """How many models train together (``K`` of the stack)."""
        return len(self.lams)

    def label(self) -> str:
        """``nemon average/step tol=0.01``, ``nemon stack K=8 ...``, ``torchdeq anderson/...``."""
        impl = f"nemon stack K={self.models}" if self.models > 1 else self.impl
        rule = self.stop if self.impl == "nemon" else stop_name(self.layout)
        return f"{impl} {self.solver}/{rule} tol={self.tol:g}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        raw = json.loads(text)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ConfigurationError(
                f"unknown RunConfig field(s) {unknown}; known: {sorted(names)}"
            )
        return cls(**raw)


def stop_name(layout: str) -> str:
    """The stop column of a torchdeq row: ``step`` (nemon's rule) or ``step/sample``."""
    return "step" if layout == "batch" else "step/sample"
