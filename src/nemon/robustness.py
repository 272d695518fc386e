"""The inversion attack (MATH 7) and l_inf certificates (MATH 6)."""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import ConfigurationError
from .model import NEMON


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not (0.0 <= eps <= 1.0):
        raise ConfigurationError(f"eps must lie in [0, 1] (pixel units), got eps={eps!r}")
    return eps


def inversion_attack(u: Tensor, eps: float) -> Tensor:
    """Continuous image inversion ``u + eps (1 - 2u)`` in pixel units (MATH 7).

    ``eps = 0`` is the clean image, ``eps = 1`` the inverted one; for ``u`` in
    ``[0, 1]`` the perturbation has ``||delta||_inf <= eps``.
    """
    eps = _check_eps(eps)
    return u + eps * (1.0 - 2.0 * u)


def _class_pair_norms(model: NEMON) -> Tensor:
    """``||(c_k - c_j)^T diag(eta)^-1||_1`` for every pair of classes ``(k, j)``."""
    Cw = model.C / model.eta[None, :]
    return (Cw[:, None, :] - Cw[None, :, :]).abs().sum(dim=2)


def pairwise_lipschitz(model: NEMON, pair_norms: Tensor | None = None) -> Tensor:
    """``L_kj = ||(c_k - c_j)^T diag(eta)^-1||_1 ||diag(eta) B||_inf / (1 - mu_+)`` (MATH 6).

    Returns the ``(classes, classes)`` matrix (zero diagonal).
    """
    if pair_norms is None:
        pair_norms = _class_pair_norms(model)
    B_eff, _ = model.input_map()
    scale = (model.eta[:, None] * B_eff).abs().sum(dim=1).max() / (1.0 - model.mu().clamp(min=0))
    return pair_norms * scale


@torch.no_grad()
def certified_radius(model: NEMON, u: Tensor, labels: Tensor) -> Tensor:
    """Per-sample certified l_inf radius in pixel units (MATH 6, per-class form).

    ``min_{j != k} (y_k - y_j) / L_kj`` for a correctly classified input with
    label ``k``, and 0 for a misclassified one. The margins are shrunk by the
    solver's a-posteriori error bound (``|d(y_k - y_j)| <= ||(c_k - c_j)^T
    diag(eta)^-1||_1 ||x - x*||_eta``), so an inexact equilibrium never
    certifies more than the exact one would.
    """
    x, stats = model.equilibrium(u)
    labels = labels.reshape(-1).to(x.device)
    y = torch.nn.functional.linear(x.reshape(-1, model.hidden_features), model.C, model.c)
    if labels.shape[0] != y.shape[0]:
        raise ValueError(f"{y.shape[0]} inputs but {labels.shape[0]} labels")
    pair_norms = _class_pair_norms(model)
    L = pairwise_lipschitz(model, pair_norms)
    slack = pair_norms * stats.error_bound
    k = labels.long()
    margin = y.gather(1, k[:, None]) - y - slack[k]  # (batch, classes): y_k - y_j - slack
    radius = margin / L[k]
    radius[torch.arange(len(k)), k] = float("inf")  # j = k is not a constraint
    r = radius.min(dim=1).values.clamp(min=0)
    correct = y.argmax(dim=1) == k
    return torch.where(correct, r, torch.zeros_like(r))


def certified_accuracy(model: NEMON, u: Tensor, labels: Tensor, eps: float) -> float:
    """Fraction of inputs correctly classified and certified at ``eps``: radius > eps (MATH 6)."""
    eps = _check_eps(eps)
    return float((certified_radius(model, u, labels) > eps).float().mean())
