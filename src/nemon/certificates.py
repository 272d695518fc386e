"""Certificates of l_inf robustness: the Lipschitz one (MATH 6) and the interval one (MATH 9).

Two sound certificates of l_inf robustness at a radius ``eps`` (pixel units):

* ``"lipschitz"`` (MATH 6): the clean margins against per-class-pair Lipschitz
  constants of the whole network;
* ``"interval"`` (MATH 9): a box around the equilibrium for every input of the
  ball, from the embedded averaged iteration, and the margins' lower bounds
  over that box (margin elision). Usually far tighter.

Both shrink the margins by the solver's a-posteriori error bound including
floating-point rounding (MATH 12), so a loose or stopped solve never certifies
more than the exact equilibrium would. Neither may ever exceed the accuracy of
any attack at the same ``eps`` on the same inputs (MATH 11).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from . import core
from ._checks import check_eps, check_pixels, class_indices
from .errors import ConfigurationError
from .model import NEMON, SETTLING_SOLVERS, flatten_input
from .protocol import ImplicitModel

METHODS = ("lipschitz", "interval")


def _class_pair_norms(model: ImplicitModel) -> Tensor:
    """``||(C_k - C_j) diag(eta)^-1||_1`` for every pair of classes ``(k, j)``."""
    Cw = model.C / model.eta[None, :]
    return (Cw[:, None, :] - Cw[None, :, :]).abs().sum(dim=2)


def pairwise_lipschitz(model: ImplicitModel, pair_norms: Tensor | None = None) -> Tensor:
    """``L_kj = ||(C_k - C_j) diag(eta)^-1||_1 ||diag(eta) B||_inf / (1 - mu_+)`` (MATH 6).

    Returns the ``(classes, classes)`` matrix (zero diagonal), pixel units.
    """
    if pair_norms is None:
        pair_norms = _class_pair_norms(model)
    B_eff, _ = model.input_map()
    scale = (model.eta[:, None] * B_eff).abs().sum(dim=1).max() / (1.0 - model.mu().clamp(min=0))
    return pair_norms * scale


def _logit_rounding(model: ImplicitModel, x_abs: Tensor) -> Tensor:
    """Bound on the rounding error of ``y_k - y_j`` computed from ``x`` (MATH 12): ``(N, classes)``.

    ``(N, classes)`` of ``g (|C_k| . |x| + |c_k|)``; the pair bound is the sum of two.
    """
    g = core.gamma_k(model.hidden_features + 4, x_abs.dtype)
    return g * (x_abs @ model.C.abs().t() + model.c.abs())


def lipschitz_radius(model: ImplicitModel, u: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample certified l_inf radius (MATH 6) and the predicted class, from one solve.

    ``min_{j != k} (y_k - y_j - slack_kj) / L_kj`` for a correctly classified
    input with label ``k``, 0 for a misclassified one. ``slack`` holds the
    solver's a-posteriori error bound of that sample (``|d(y_k - y_j)| <=
    ||(C_k - C_j) diag(eta)^-1||_1 ||x - x*||_eta``) and the rounding of the
    logits, and ``L`` is inflated by the rounding of its own sums (MATH 12).
    A model whose parametrisation does not bound the l_inf measure (``linf_well_posed``
    False: MON) gets the cruder form ``margin / (2 Lip)`` with its own ``lipschitz_bound``.
    ``u``: float pixels in ``[0, 1]``, checked.
    """
    check_pixels(u, "lipschitz_radius")
    return _lipschitz_radius(model, u, labels, "lipschitz_radius")


@torch.no_grad()
def _lipschitz_radius(
    model: ImplicitModel, u: Tensor, labels: Tensor, where: str
) -> tuple[Tensor, Tensor]:
    """:func:`lipschitz_radius` of pixels already checked by the caller ``where``."""
    x, _ = model.equilibrium(u)
    x = x.reshape(-1, model.hidden_features)
    bounds = model.last_error_bounds
    y = torch.nn.functional.linear(x, model.C, model.c)
    k = class_indices(labels, y.shape[0], model.out_features, y.device, where)
    pred = y.argmax(dim=1)
    rnd = _logit_rounding(model, x.abs())
    if model.linf_well_posed:
        pair_norms = _class_pair_norms(model)
        L = pairwise_lipschitz(model, pair_norms)
        err = pair_norms[k] * bounds[:, None]
    else:  # the crude form: |d(y_k - y_j)| <= 2 max_i |dy_i| <= 2 ||C||_2->inf ||x - x*||_2 ...
        L = 2 * model.lipschitz_bound() * torch.ones_like(y[0])[None, :].expand(y.shape[1], -1)
        err = 2 * model.C.norm(dim=1).max() * bounds[:, None].expand_as(y)
    L = L * (1 + core.gamma_k(model.in_features + model.hidden_features + 8, L.dtype))
    slack = err + rnd + rnd.gather(1, k[:, None])
    margin = y.gather(1, k[:, None]) - y - slack  # (batch, classes)
    radius = margin / L[k]
    radius[torch.arange(len(k)), k] = float("inf")  # j = k is not a constraint
    r = radius.min(dim=1).values.clamp(min=0)
    r = torch.where(torch.isnan(r), torch.zeros_like(r), r)
    return torch.where(pred == k, r, torch.zeros_like(r)), pred


def certified_radius(model: ImplicitModel, u: Tensor, labels: Tensor) -> Tensor:
    """Per-sample certified l_inf radius in pixel units (MATH 6); see :func:`lipschitz_radius`."""
    check_pixels(u, "certified_radius")
    return _lipschitz_radius(model, u, labels, "certified_radius")[0]


def _box(u: Tensor, eps: float, lo: Tensor | None, hi: Tensor | None) -> tuple[Tensor, Tensor]:
    return (u - eps).clamp(0.0, 1.0), (u + eps).clamp(0.0, 1.0)


def interval_bounds(model: ImplicitModel, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, object]:
    """Sound bounds ``x_lo <= x*(v) <= x_hi`` for every ``v`` in each box ``[lo, hi]`` (MATH 9).

    ``lo``, ``hi``: pixels, same shape (any shape that flattens to
    ``in_features`` per box). The embedded averaged iteration runs at the
    model's solver settings; the result is widened by the a-posteriori error
    bound of the stopped iteration including rounding (``delta / eta``, MATH 9,
    12), and ``x_lo`` is clipped at 0 (every equilibrium is a ReLU output).
    Returns ``(x_lo, x_hi, stats)``; differentiable like the model itself.
    """
    if not isinstance(lo, Tensor) or not isinstance(hi, Tensor):
        raise TypeError("interval_bounds expects tensors lo and hi")
    if lo.shape != hi.shape:
        raise ValueError(
            f"lo and hi must have the same shape, got {tuple(lo.shape)} and {tuple(hi.shape)}"
        )
    check_pixels(lo, "interval_bounds", "lo")
    check_pixels(hi, "interval_bounds", "hi")
    if bool((lo > hi).any()):
        bad = int((lo > hi).sum())
        raise ConfigurationError(
            f"{bad} coordinate(s) of the boxes have lo > hi; pass lo <= hi elementwise "
            "(for a ball of radius eps around u: lo = clamp(u - eps, 0, 1), "
            "hi = clamp(u + eps, 0, 1))"
        )
    return _interval_bounds(model, lo, hi)


def _interval_bounds(model: ImplicitModel, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, object]:
    """:func:`interval_bounds` of boxes of pixels already checked."""
    x_lo, x_hi, stats = model.embedded_equilibrium(lo, hi)
    delta = model.last_error_bounds
    widen = delta.reshape(*x_lo.shape[:-1], 1) / model.eta.detach()
    return (x_lo - widen).clamp(min=0), x_hi + widen, stats


def interval_margins(model: ImplicitModel, u: Tensor, labels: Tensor, eps: float) -> Tensor:
    """Lower bounds ``m_kj`` of ``y_k - y_j`` over the l_inf ball of radius ``eps`` (MATH 9).

    ``(N, classes)``, ``m_kk = 0``; the ball is clipped to ``[0, 1]`` pixels.
    Rounding of the margin itself is subtracted (MATH 12).
    """
    where = "interval_margins"
    eps = check_eps(eps, where)
    check_pixels(u, where)
    u2, _ = flatten_input(u, model.in_features, next(model.parameters()).dtype)
    k = class_indices(labels, u2.shape[0], model.out_features, u2.device, where)
    return _interval_margins(model, u2, k, eps)


def _interval_margins(model: ImplicitModel, u2: Tensor, k: Tensor, eps: float) -> Tensor:
    """:func:`interval_margins` of checked pixels ``(N, in_features)`` and labels ``k``."""
    lo, hi = _box(u2, eps, None, None)
    x_lo, x_hi, _ = _interval_bounds(model, lo, hi)
    z = core.worst_case_logits(model.C[None], model.c[None], x_lo[None], x_hi[None], k)[0]
    rnd = _logit_rounding(model, torch.maximum(x_lo.abs(), x_hi.abs()))
    m = -z - (rnd + rnd.gather(1, k[:, None]))
    m[torch.arange(len(k)), k] = 0.0
    return m


class _PairMargins:
    """``m_kj`` of :func:`interval_margins` for many boxes at a fixed model, as two products.

    The spread ``|C_k - C_j| . x_r`` of every class pair comes from one product with the
    ``classes^2`` rows ``|C_k - C_j|``, built once, instead of forming ``|C_k - C_j|`` per box
    (:func:`nemon.core.worst_case_logits`): the same sums in another order, inside the same
    rounding bound (MATH 12). Boxes may be inverted (``x_lo > x_hi``): the formula is then
    ``sum_i (w_i)+ x_lo_i + (w_i)- x_hi_i`` all the same, which is what settling needs.
    """

    def __init__(self, model: ImplicitModel) -> None:
        C = model.C.detach()
        self.model, self.C, self.c = model, C, model.c.detach()
        self.classes = C.shape[0]
        self.pairs = (C[:, None, :] - C[None, :, :]).abs().reshape(-1, C.shape[1]).t()

    def __call__(self, x_lo: Tensor, x_hi: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """``(N, classes)`` bounds of ``y_k - y_j`` less their rounding (inf at ``j = k``),
        and that rounding bound."""
        xc = (x_hi + x_lo) / 2
        xr = (x_hi - x_lo) / 2
        yc = torch.addmm(self.c, xc, self.C.t())
        rows = torch.arange(len(k), device=k.device)
        spread = (xr @ self.pairs).view(len(k), self.classes, self.classes)[rows, k]
        rnd = _logit_rounding(self.model, torch.maximum(x_lo.abs(), x_hi.abs()))
        slack = rnd + rnd.gather(1, k[:, None])
        m = yc.gather(1, k[:, None]) - yc - spread - slack
        m[rows, k] = float("inf")
        return m, slack


def _certify_boxes(model: NEMON, lo: Tensor, hi: Tensor, k: Tensor) -> Tensor:
    """Every box certified at label ``k`` (MATH 9), each box iterated only until it is settled.

    ``NEMON.settle_boxes`` with ``yes`` where every margin bound of the widened enclosure
    ``outer`` is positive (the certificate of :func:`interval_margins`, from an earlier
    iterate: as sound), ``no`` where some margin bound is negative, by more than its
    rounding, over ``inner``: then no enclosure of a longer solve certifies the box either
    (MATH 9, "Settling box by box").
    """
    margins = _PairMargins(model)

    def settle(rows: Tensor, outer: tuple[Tensor, Tensor], inner: tuple[Tensor, Tensor]):
        kk = k[rows]
        yes = margins(outer[0], outer[1], kk)[0].min(dim=1).values > 0
        # m_in is the bound less its rounding: m_in + 2 slack < 0 proves the bound negative,
        # its rounding included
        m_in, slack = margins(inner[0], inner[1], kk)
        no = (m_in + 2 * slack).min(dim=1).values < 0
        return yes, no & ~yes

    return model.settle_boxes(lo, hi, settle)[0]


@torch.no_grad()
def certified_mask(
    model: ImplicitModel,
    u: Tensor,
    labels: Tensor,
    eps: float,
    method: str = "lipschitz",
    *,
    correct: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Per input: correctly classified and certified at ``eps`` by ``method`` (MATH 6, 9).

    ``correct``: for ``method="interval"``, whether ``model`` classifies each input
    correctly, where the caller has already solved for it at the same settings (the
    evaluation's clean pass); the interval path then skips its own clean solve.

    ``dtype``: compute the certificate on a copy of the model in this dtype (the same weights,
    so the same exact equilibria); ``torch.float64`` makes the rounding term of the error bars
    (MATH 12 (c)) negligible, which in float32 can cost an interval-trained model ten points of
    certified accuracy (docs/speed.md, "The levers"). The evaluation does this.

    For a NEMON with ``solver="average"`` or ``"jacobi"`` the interval path iterates only the
    correctly classified inputs' boxes, each until it is certified or refuted or meets the stop rule
    itself (``NEMON.settle_boxes``; MATH 9, "Settling box by box"); otherwise it solves the
    whole batch to the stop rule (:func:`interval_margins`).
    """
    where = "certified_mask"
    eps = check_eps(eps, where)
    check_pixels(u, where)
    model, u = _in_dtype(model, u, dtype)
    return _certified_mask(model, u, labels, eps, method, correct, where)


def _in_dtype(model: ImplicitModel, u: Tensor, dtype: torch.dtype | None):
    """``model`` and ``u`` in ``dtype``: a copy of the model where its dtype differs."""
    if dtype is None or next(model.parameters()).dtype == dtype:
        return model, u if dtype is None else u.to(dtype)
    return copy.deepcopy(model).to(dtype), u.to(dtype)


@torch.no_grad()
def _certified_mask(
    model: ImplicitModel,
    u: Tensor,
    labels: Tensor,
    eps: float,
    method: str,
    correct: Tensor | None,
    where: str,
) -> Tensor:
    """:func:`certified_mask` of pixels and ``eps`` already checked by the caller ``where``."""
    if method == "lipschitz":
        if correct is not None:
            raise ConfigurationError(
                "correct is for method='interval'; the Lipschitz certificate takes the "
                "correctness from its own solve (the margin it needs)"
            )
        return _lipschitz_radius(model, u, labels, where)[0] > eps
    if method == "interval":
        u2, _ = flatten_input(u, model.in_features, next(model.parameters()).dtype)
        k = class_indices(labels, u2.shape[0], model.out_features, u2.device, where)
        if correct is None:
            correct = model(u2).argmax(dim=1) == k
        elif correct.shape != k.shape or correct.dtype != torch.bool:
            raise ConfigurationError(
                f"correct must be a bool tensor of shape {tuple(k.shape)} (one flag per "
                f"input), got {correct.dtype} of shape {tuple(correct.shape)}"
            )
        correct = correct.to(k.device)
        if isinstance(model, NEMON) and model.solver in SETTLING_SOLVERS:
            out = torch.zeros_like(correct)
            todo = correct.nonzero().flatten()  # a misclassified input is never certified
            lo, hi = _box(u2[todo], eps, None, None)
            # run even for no box: the statistics the caller reads are this call's
            out[todo] = _certify_boxes(model, lo, hi, k[todo])
            return out
        m = _interval_margins(model, u2, k, eps)
        m[torch.arange(len(k)), k] = float("inf")
        return correct & (m.min(dim=1).values > 0)
    raise ConfigurationError(
        f"unknown certification method {method!r}; choose one of {list(METHODS)}"
    )


def certified_accuracy(
    model: ImplicitModel,
    u: Tensor,
    labels: Tensor,
    eps: float,
    method: str = "lipschitz",
    *,
    dtype: torch.dtype | None = None,
) -> float:
    """Fraction of inputs correctly classified and certified at ``eps`` (MATH 6, 9).

    ``u``: float pixels in ``[0, 1]`` (uint8 images are refused: convert them with
    :func:`nemon.training.to_pixels`). ``dtype`` as in :func:`certified_mask`.
    """
    where = "certified_accuracy"
    eps = check_eps(eps, where)
    check_pixels(u, where)
    model, u = _in_dtype(model, u, dtype)
    return float(_certified_mask(model, u, labels, eps, method, None, where).float().mean())
