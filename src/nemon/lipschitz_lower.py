"""An empirical lower bound of the l_inf -> l_inf Lipschitz constant (MATH 4, 5).

The bound of MATH 5 is an upper bound of the network's Lipschitz constant;
:func:`lipschitz_lower_bound` brackets the true constant from below: the largest local
gain ``max_k ||grad_u y_k||_1`` found by a search over inputs (with the exact implicit
input gradient of MATH 4), checked by finite differences between two inputs that the
network really maps that far apart. Its solves run at the tight tolerance given, on the
relative step (MATH 12a), and are counted in a :class:`SolveCounts` record.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ._checks import check_batch, check_int, check_model, check_positive
from ._solves import Instrumented, SolveCounts, attack_state, device_dtype, solving_at
from .protocol import ImplicitModel

# Finite-difference steps tried by lipschitz_lower_bound, largest first: inside one linear
# region the network is affine, so the largest step that keeps the pattern is the most exact.
FD_STEPS = tuple(10.0**-e for e in range(2, 11))


@dataclass
class LowerBound:
    """An empirical lower bound of the l_inf -> l_inf Lipschitz constant of ``u -> y``.

    ``value`` is ``max_k ||grad_u y_k||_1`` at ``point`` (float64), attained by
    class ``k``. ``fd_pair = (p, q)`` are two inputs in ``[0, 1]`` with
    ``q - p = fd_h * sign(grad_u y_k)`` and ``fd_ratio = |y_k(q) - y_k(p)| /
    ||q - p||_inf``: a ratio actually achieved by the network, so a lower bound
    of its Lipschitz constant up to the solver error ``fd_error`` (NaN where the
    model gives no error bound). ``agree``: ``fd_ratio`` and ``value`` agree to
    ``rtol`` relative; ``pattern_checked``: ``p`` and ``q`` were verified to have
    the activation pattern of ``point``; ``note`` says what went wrong, if anything.
    """

    value: float
    point: Tensor
    k: int
    fd_ratio: float
    fd_h: float
    fd_pair: tuple[Tensor, Tensor]
    fd_rel_diff: float
    fd_error: float
    agree: bool
    pattern_checked: bool
    note: str
    steps: int
    step_size: float
    seed: int
    n_random: int
    tol: float
    max_iter: int
    solves: SolveCounts = field(default_factory=SolveCounts)


def _class_gradients(inst: Instrumented, U: Tensor, ks: Tensor) -> Tensor:
    """Row ``r`` of the result is ``grad_u y_{ks[r]}`` at ``U[r]`` (one forward, one backward)."""
    U = U.detach().requires_grad_(True)
    with torch.enable_grad():
        y = inst(U)
        (g,) = torch.autograd.grad(y.gather(1, ks[:, None]).sum(), U)
    return g


def _pattern_reader(model: nn.Module, log: SolveCounts) -> Callable[[Tensor], Tensor] | None:
    """The activation pattern (which ReLUs are active) at a batch of inputs, where readable.

    Models of the protocol (:class:`nemon.protocol.ImplicitModel`: NEMON, MON and the
    MLP with ``A = 0``): ``z* = A x* + B u + b > 0``, the pattern ``J`` of MATH 4;
    ``x* > 0`` would not do, as the averaged iteration leaves inactive units slightly
    positive. Other models: the inputs of their ``nn.ReLU`` modules. ``None`` when
    neither applies.
    """
    if isinstance(model, ImplicitModel):

        def layer_pattern(v: Tensor) -> Tensor:
            x, stats = model.equilibrium(v)
            log.record(stats, model.tol, "forward")
            B_eff, b_eff = model.input_map()
            return (x @ model.A.t() + v @ B_eff.t() + b_eff) > 0

        return layer_pattern
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        return None

    def relu_pattern(v: Tensor) -> Tensor:
        seen: list[Tensor] = []

        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            seen.append((inputs[0] > 0).reshape(inputs[0].shape[0], -1))

        handles = [m.register_forward_hook(hook) for m in relus]
        try:
            model(v)
        finally:
            for h in handles:
                h.remove()
        return torch.cat(seen, dim=1)

    return relu_pattern


def _output_error(model: nn.Module, k: int) -> float:
    """``|y_k - y_k*| <= ||c_k diag(eta)^-1||_1 * error_bound`` after the last forward solve."""
    if not isinstance(model, ImplicitModel) or model.last_forward_stats is None:
        return math.nan
    stats = model.last_forward_stats
    c_norm = float((model.C[k] / model.eta).abs().sum())
    return c_norm * float(stats.error_bound)


def lipschitz_lower_bound(
    model: nn.Module,
    u: Tensor,
    *,
    steps: int,
    step_size: float,
    seed: int,
    n_random: int = 8,
    tol: float = 1e-12,
    max_iter: int = 10_000,
    batch_size: int = 1000,
    rtol: float = 1e-6,
) -> LowerBound:
    """Empirical lower bound of the l_inf -> l_inf Lipschitz constant of ``u -> y`` (MATH 5).

    Where the activation pattern is fixed the network is affine, and its local
    constant is ``max_k ||grad_u y_k||_1`` (the row l1 norm of the Jacobian is
    the induced l_inf norm); each such value is a lower bound of the global
    constant, and the bound of MATH 5 is an upper one. That local value has
    zero gradient almost everywhere for a ReLU network, so the search moves
    instead: from each start (the rows of ``u`` and ``n_random`` uniform points
    drawn with ``seed``) and for each class ``k``, ``steps`` steps of
    ``step_size * sign(grad_u y_k)`` clipped to ``[0, 1]`` (raising ``y_k``
    crosses into other linear regions), keeping the largest
    ``||grad_u y_k||_1`` seen.

    The best point is then re-evaluated for every class and checked by finite
    differences: with ``s = sign(grad_u y_k)``, ``p = clamp(point, h, 1 - h)``
    and ``q = p + h s``, the largest ``h`` in :data:`FD_STEPS` for which ``p``
    and ``q`` keep the activation pattern of the point gives ``|y_k(q) -
    y_k(p)| / ||q - p||_inf``, a ratio two inputs in ``[0, 1]`` actually achieve.
    Everything runs on a float64 copy of the model at ``tol``/``max_iter``; the
    model itself and the global RNG are untouched.
    """
    where = "lipschitz_lower_bound"
    check_model(model, where)
    check_batch(u, where)
    check_int("steps", steps, 1, where)
    step_size = check_positive("step_size", step_size, where)
    check_int("seed", seed, 0, where)
    check_int("n_random", n_random, 0, where)
    tol = check_positive("tol", tol, where)
    check_int("max_iter", max_iter, 1, where)
    check_int("batch_size", batch_size, 1, where)
    rtol = check_positive("rtol", rtol, where)

    work = copy.deepcopy(model).double()
    device, _ = device_dtype(work, u)
    inst = Instrumented(work, device, torch.float64)
    flat = u.detach().reshape(u.shape[0], -1).to(device=device, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    rand = torch.rand(n_random, flat.shape[1], generator=gen, dtype=torch.float64)
    starts = torch.cat([flat, rand.to(device)])

    with attack_state(work), solving_at(work, tol, max_iter):
        with torch.no_grad():
            classes = inst(starts[:1]).shape[1]
        U = starts.repeat_interleave(classes, dim=0)
        ks = torch.arange(classes, device=device).repeat(starts.shape[0])
        best_val, best_point = -1.0, starts[0]
        for step in range(steps + 1):
            G = torch.cat(
                [
                    _class_gradients(inst, U[i : i + batch_size], ks[i : i + batch_size])
                    for i in range(0, U.shape[0], batch_size)
                ]
            )
            vals = G.abs().sum(dim=1)
            i = int(vals.argmax())
            if float(vals[i]) > best_val:
                best_val, best_point = float(vals[i]), U[i].clone()
            if step < steps:
                U = (U + step_size * G.sign()).clamp(0.0, 1.0)

        point = best_point
        J = _class_gradients(inst, point.expand(classes, -1), torch.arange(classes, device=device))
        norms = J.abs().sum(dim=1)
        k = int(norms.argmax())
        value = float(norms[k])
        s = J[k].sign()
        pattern = _pattern_reader(work, inst.log)
        with torch.no_grad():
            ref = pattern(point[None]) if pattern is not None else None
            fd = _finite_difference(inst, work, pattern, ref, point, s, k, value)

    h, p, q, ratio, rel_diff, fd_error, same = fd
    notes = []
    if value == 0.0:
        notes.append("the gradient is zero at the best point (a constant network?)")
    if pattern is None:
        notes.append(
            "activation pattern not readable for this model; kept the step that agrees best"
        )
    elif not same:
        notes.append(
            "the activation pattern changed for every finite-difference step: the best point "
            "lies on a region boundary"
        )
    agree = rel_diff <= rtol
    if not agree:
        notes.append(
            f"finite-difference ratio {ratio:.12g} and gradient value {value:.12g} differ by "
            f"{rel_diff:.3g} relative (> rtol={rtol:g})"
        )
    return LowerBound(
        value=value,
        point=point.cpu(),
        k=k,
        fd_ratio=ratio,
        fd_h=h,
        fd_pair=(p.cpu(), q.cpu()),
        fd_rel_diff=rel_diff,
        fd_error=fd_error,
        agree=agree,
        pattern_checked=bool(same),
        note="; ".join(notes),
        steps=steps,
        step_size=step_size,
        seed=seed,
        n_random=n_random,
        tol=tol,
        max_iter=max_iter,
        solves=inst.log,
    )


def _finite_difference(
    inst: Instrumented,
    work: nn.Module,
    pattern: Callable[[Tensor], Tensor] | None,
    ref: Tensor | None,
    point: Tensor,
    s: Tensor,
    k: int,
    value: float,
) -> tuple[float, Tensor, Tensor, float, float, float, bool]:
    """``(h, p, q, ratio, rel_diff, error, pattern_kept)`` for the step chosen (see caller)."""
    best = None
    for h in FD_STEPS:
        p = point.clamp(h, 1.0 - h)
        q = p + h * s
        y = inst(torch.stack([p, q]))
        dist = float((q - p).abs().max())
        dy = float((y[1, k] - y[0, k]).abs())
        ratio = dy / dist if dist > 0 else 0.0
        rel = abs(ratio - value) / value if value > 0 else abs(ratio)
        error = 2.0 * _output_error(work, k) / dist if dist > 0 else math.nan
        if pattern is not None:
            same = bool(torch.equal(pattern(p[None]), ref)) and bool(
                torch.equal(pattern(q[None]), ref)
            )
            best = (h, p, q, ratio, rel, error, same)
            if same:
                return best
        elif best is None or rel < best[4]:
            best = (h, p, q, ratio, rel, error, False)
    assert best is not None
    return best
