"""Argument checks shared by the attacks, the certificates and the models' ``forward``.

One copy of each check, so that every public function refuses the same inputs in the
same words. Images are float pixels in ``[0, 1]`` (MATH 1): a uint8 image, a 0-255 float
or a normalised one gives a wrong number without an error, so :func:`check_pixels` refuses
it at the entry of every public function that takes images, with one reduction.
"""

from __future__ import annotations

import math
from typing import NoReturn

import torch
from torch import Tensor, nn

from .errors import ConfigurationError, NonFiniteError

# what the pixel check's message names as the way to convert 8-bit images
TO_PIXELS = "nemon.training.to_pixels"


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


def check_eps(eps: object, where: str | None = None) -> float:
    """``eps`` as a float in ``[0, 1]`` (an l_inf radius in pixel units), else a clear error."""
    try:
        value = float(eps)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{_prefix(where)}eps must be a number in [0, 1], got eps={eps!r}"
        ) from None
    if not (0.0 <= value <= 1.0):
        raise ConfigurationError(
            f"{_prefix(where)}eps must lie in [0, 1] (l_inf radius in pixel units, MATH 7), "
            f"got eps={eps!r}"
        )
    return value


def check_int(name: str, value: object, minimum: int, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigurationError(
            f"{where}: {name} must be an integer >= {minimum}, got {name}={value!r}"
        )
    return value


def check_positive(name: str, value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{where}: {name} must be a positive number, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(
            f"{where}: {name} must be a positive finite number, got {name}={value!r}"
        )
    return float(value)


def check_model(model: object, where: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"{where}: model must be a torch.nn.Module")
    return model


def check_finite(t: Tensor, what: str, hint: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` if ``t`` holds a NaN or an infinity."""
    # max |t| is NaN or inf exactly when some entry is: one reduction, cheaper than isfinite().all()
    if t.numel() and not bool(torch.isfinite(t.abs().amax())):
        bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteError(f"{what} contains {bad} non-finite value(s) (NaN or inf); {hint}")


# --- images -------------------------------------------------------------------------------------
def check_pixels(u: Tensor, where: str, what: str = "images") -> Tensor:
    """``u`` itself if it holds float pixels in ``[0, 1]`` (MATH 1), else a clear error.

    One reduction (``aminmax``) and one host synchronisation per call: check at a public
    entry point, never inside an attack's loop. Refused: integer tensors (uint8 images,
    whatever their values), floats outside ``[0, 1]`` (0-255 images, normalised ones), with
    :class:`ConfigurationError`; NaN or infinity, with :class:`NonFiniteError`. The message
    names ``where`` (the function called), the range found and the range expected. An empty
    tensor passes.
    """
    if not isinstance(u, Tensor):
        raise TypeError(f"{where}: {what} must be a torch.Tensor, got {type(u).__name__}")
    if u.numel() == 0:
        return u
    if u.is_floating_point():
        lo, hi = torch.stack(torch.aminmax(u.detach())).tolist()
        if 0.0 <= lo and hi <= 1.0:  # False for NaN
            return u
    _refuse_pixels(u, where, what)


def _refuse_pixels(u: Tensor, where: str, what: str) -> NoReturn:
    """The error for ``u`` that :func:`check_pixels` refused (off the fast path)."""
    dtype = str(u.dtype).removeprefix("torch.")
    head = f"{where}: {what} must be float pixels in [0, 1], got "
    head += f"{'an' if dtype.startswith('int') else 'a'} {dtype} tensor"
    v = u.detach()
    if u.is_complex():
        raise ConfigurationError(f"{head}; pass real pixels")
    if u.is_floating_point():
        if not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise NonFiniteError(f"{head} with {bad} non-finite value(s) (NaN or inf)")
        lo, hi = float(v.min()), float(v.max())
    else:
        lo, hi = int(v.min()), int(v.max())
    if u.dtype == torch.uint8 or (u.is_floating_point() and lo >= 0 and 1.5 < hi <= 255):
        hint = f"divide by 255 ({TO_PIXELS}) first"
    elif not u.is_floating_point():
        hint = f"convert them to float pixels first ({TO_PIXELS} divides uint8 images by 255)"
    elif lo < 0:
        hint = (
            "pass pixels, not normalised images: the model applies its input normalisation "
            "itself (MATH 1)"
        )
    else:
        hint = "pass pixels in [0, 1]"
    raise ConfigurationError(f"{head} with values {_value(lo, 0)}..{_value(hi, 1)}; {hint}")


def _value(x: float, bound: int) -> str:
    """``x`` in 6 digits, or all of them where 6 would round it onto the ``bound`` it crosses."""
    short = f"{x:.6g}"
    return repr(x) if float(short) == bound and x != bound else short


def check_batch(u: object, where: str) -> Tensor:
    """A non-empty batch ``(N, ...)`` of pixels in ``[0, 1]`` (the attacks' inputs)."""
    if not isinstance(u, Tensor):
        raise ConfigurationError(f"{where}: u must be a torch.Tensor, got {type(u).__name__}")
    if u.dim() < 2 or u.shape[0] == 0:
        raise ConfigurationError(
            f"{where}: u must be a non-empty batch of shape (N, ...) with N >= 1, "
            f"got shape {tuple(u.shape)}"
        )
    return check_pixels(u, where)


# --- labels -------------------------------------------------------------------------------------
def check_labels(labels: object, n: int, where: str) -> Tensor:
    """Integer class indices of shape ``(n,)``, one per input."""
    if not isinstance(labels, Tensor):
        raise ConfigurationError(
            f"{where}: labels must be a torch.Tensor, got {type(labels).__name__}"
        )
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ConfigurationError(
            f"{where}: labels must be integer class indices, got dtype {labels.dtype}"
        )
    if tuple(labels.shape) != (n,):
        raise ConfigurationError(
            f"{where}: labels must have shape ({n},), one class index per input, "
            f"got shape {tuple(labels.shape)}"
        )
    return labels


def check_label_range(labels: Tensor, classes: int, where: str) -> None:
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= classes:
        raise ConfigurationError(
            f"{where}: labels must lie in [0, {classes - 1}] for a model with {classes} "
            f"outputs, got values in [{lo}, {hi}]"
        )


def class_indices(labels: object, n: int, classes: int, device: torch.device, where: str) -> Tensor:
    """:func:`check_labels` and :func:`check_label_range`, as a long tensor on ``device``."""
    k = check_labels(labels, n, where).to(device=device, dtype=torch.long)
    check_label_range(k, classes, where)
    return k
