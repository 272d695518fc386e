"""MATH 1: every public function that takes images refuses anything but float pixels in [0, 1].

A uint8 image, a 0-255 float or a normalised image gives a wrong number without an error
(``load_dataset("mnist-5k").test_x`` once gave a certified accuracy of 0.764 instead of
0.612): each is refused, by name, at the entry of every attack, certificate and model
forward, with one reduction per call.
"""

from __future__ import annotations

import pytest
import torch
from _attack_helpers import CLASSES, M, sensitive_model, toy_data
from torch.utils._python_dispatch import TorchDispatchMode

import nemon
from nemon import attacks
from nemon._checks import check_pixels
from nemon.certificates import lipschitz_radius
from nemon.errors import ConfigurationError, NonFiniteError
from nemon.lipschitz_lower import lipschitz_lower_bound
from nemon.training import to_pixels

FAST = dict(seed=0, tol=1e-6, max_iter=200)


def labels_of(u):
    return torch.arange(CLASSES).repeat(len(u))[: len(u)]


# every public function of the attacks, the certificates and the lower bound that takes images
CALLS = {
    "pgd": lambda m, u: attacks.pgd(m, u, labels_of(u), 0.1, steps=1, restarts=1, **FAST),
    "autoattack": lambda m, u: attacks.autoattack(
        m, u, labels_of(u), 0.1, steps=1, n_queries=2, **FAST
    ),
    "inversion_attack": lambda m, u: nemon.inversion_attack(u, 0.1),
    "certified_mask": lambda m, u: nemon.certified_mask(m, u, labels_of(u), 0.1),
    "certified_accuracy": lambda m, u: nemon.certified_accuracy(
        m, u, labels_of(u), 0.1, "interval"
    ),
    "certified_radius": lambda m, u: nemon.certified_radius(m, u, labels_of(u)),
    "lipschitz_radius": lambda m, u: lipschitz_radius(m, u, labels_of(u)),
    "interval_margins": lambda m, u: nemon.interval_margins(m, u, labels_of(u), 0.1),
    "interval_bounds": lambda m, u: nemon.interval_bounds(m, u, u),
    "lipschitz_lower_bound": lambda m, u: lipschitz_lower_bound(
        m, u, steps=1, step_size=0.1, seed=0, n_random=0
    ),
    "NEMON.forward": lambda m, u: m(u),
    "NEMON.equilibrium": lambda m, u: m.equilibrium(u),
    "NEMON.embedded_equilibrium": lambda m, u: m.embedded_equilibrium(u, u),
    "NEMON.settle_boxes": lambda m, u: m.settle_boxes(u, u, lambda r, o, i: (r < 0, r < 0)),
    "MLP.forward": lambda m, u: nemon.MLP(M, 8, CLASSES).double()(u),
    "MON.forward": lambda m, u: nemon.MON(M, 8, CLASSES, gamma=0.0).double()(u),
}


def pixels(n: int = 8) -> torch.Tensor:
    """Float64 pixels in [0, 1], with a pixel exactly 0 and one exactly 1."""
    u, _ = toy_data(n, seed=0)
    u[0, 0], u[0, 1] = 0.0, 1.0
    return u


# (kind, images, error, what the message must say besides the function's name)
BAD = [
    ("uint8", lambda u: (u * 255).round().to(torch.uint8), ConfigurationError,
     "a uint8 tensor with values 0..255; divide by 255 (nemon.training.to_pixels) first"),
    ("0-255 floats", lambda u: (u * 255).round(), ConfigurationError,
     "a float64 tensor with values 0..255; divide by 255 (nemon.training.to_pixels) first"),
    ("normalised", lambda u: (u - 0.5) / 0.25, ConfigurationError,
     "a float64 tensor with values -2..2; pass pixels, not normalised images"),
    ("negative", lambda u: u - 0.25, ConfigurationError,
     "a float64 tensor with values -0.25..0.75; pass pixels, not normalised images"),
    ("just above 1", lambda u: u * (1 + 1e-6), ConfigurationError,
     "a float64 tensor with values 0..1.000001; pass pixels in [0, 1]"),
    ("int64", lambda u: u.round().long(), ConfigurationError,
     "an int64 tensor with values 0..1; convert them to float pixels first"),
    ("NaN", lambda u: u.masked_fill(u > 0.9, float("nan")), NonFiniteError,
     "non-finite value(s) (NaN or inf)"),
    ("inf", lambda u: u.masked_fill(u < 0.1, -float("inf")), NonFiniteError,
     "non-finite value(s) (NaN or inf)"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "make", "error", "says"), BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("name", list(CALLS))
def test_every_public_function_refuses_images_outside_float_pixels(name, kind, make, error, says):
    model = sensitive_model(0)
    u = make(pixels())
    what = "lo" if name == "interval_bounds" else "images"
    with pytest.raises(error) as info:
        CALLS[name](model, u)
    message = str(info.value)
    assert message.startswith(f"{name}: {what} must be float pixels in [0, 1], got a")
    assert says in message


@pytest.mark.parametrize("name", list(CALLS))
def test_pixels_exactly_zero_and_one_pass(name):
    model = sensitive_model(0)
    u = pixels().round()  # binary images: every pixel is exactly 0 or 1
    assert set(u.unique().tolist()) == {0.0, 1.0}
    CALLS[name](model, u)  # no error
    CALLS[name](model, u.float())  # float32 too


def test_the_reported_case_a_uint8_test_set_given_to_certified_accuracy():
    model = sensitive_model(0)
    test_x = (pixels() * 255).round().to(torch.uint8).reshape(-1, 1, 4, 4)  # as load_dataset's
    with pytest.raises(ConfigurationError) as info:
        nemon.certified_accuracy(model, test_x, labels_of(test_x), 0.1)
    assert str(info.value) == (
        "certified_accuracy: images must be float pixels in [0, 1], got a uint8 tensor with "
        "values 0..255; divide by 255 (nemon.training.to_pixels) first"
    )
    fixed = to_pixels(test_x).double()  # the helper the message names
    assert 0 <= nemon.certified_accuracy(model, fixed, labels_of(test_x), 0.1) <= 1


def test_interval_bounds_checks_both_ends_of_the_boxes():
    model = sensitive_model(0)
    u = pixels()
    with pytest.raises(ConfigurationError, match=r"^interval_bounds: hi must be float pixels"):
        nemon.interval_bounds(model, u, u * 255)
    with pytest.raises(ConfigurationError, match=r"^interval_bounds: lo must be float pixels"):
        nemon.interval_bounds(model, u - 1, u)


def test_empty_batches_pass_the_pixel_check():
    assert check_pixels(torch.zeros(0, M, dtype=torch.uint8), "f").shape == (0, M)


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


REDUCTIONS = {"aminmax", "min", "max", "amin", "amax", "all", "any", "sum", "isfinite", "isnan"}


def test_the_check_costs_one_reduction():
    u = pixels()
    with _Ops() as ops:
        check_pixels(u, "f")
    assert [n for n in ops.names if n in REDUCTIONS] == ["aminmax"]
