"""Matrix measures and norms of MATH.md sections 2 and 5."""

from __future__ import annotations

import torch
from torch import Tensor


def mu_inf(M: Tensor, eta: Tensor | None = None) -> Tensor:
    """Weighted l_inf matrix measure (MATH 2).

    ``mu_inf(M) = max_i (m_ii + sum_{j != i} |m_ij|)``; with weights ``eta > 0``
    it is ``mu_inf(diag(eta) M diag(eta)^-1)``, the measure induced by
    ``||x||_eta = max_i eta_i |x_i|``.
    """
    if M.dim() != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"mu_inf needs a square matrix, got shape {tuple(M.shape)}")
    if eta is not None:
        if eta.shape != (M.shape[0],):
            raise ValueError(
                f"eta must have shape ({M.shape[0]},) to weight a {tuple(M.shape)} matrix, "
                f"got {tuple(eta.shape)}"
            )
        if not bool((eta > 0).all()):
            raise ValueError("eta must be strictly positive (it is exp(d) in MATH 2)")
        M = eta[:, None] * M / eta[None, :]
    diag = torch.diagonal(M)
    off = M.abs().sum(dim=1) - diag.abs()
    return (diag + off).max()


def inf_norm(M: Tensor) -> Tensor:
    """Induced l_inf norm: the maximum absolute row sum."""
    return M.abs().sum(dim=1).max()
