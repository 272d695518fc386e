"""A stack of ``K`` independent models trained in lockstep (the workflow's fast path).

The grid of the experiment is many tiny models (``n = 100``), each too small to
keep a core busy. :class:`ModelStack` holds ``K`` of them (same kind, sizes,
input normalisation and solver settings; ``gamma`` may differ) in one flat
parameter ``flat`` of shape ``(K, P)``, so one batched product serves them all,
one autograd node carries a whole training step (:class:`StackStep`: input map,
equilibrium, logits and their hand-written gradients), and one fused Adam call
updates them all. The members never interact: every loss term, gradient and
Adam moment is per member, each solve stops by the member's own rule
(:func:`nemon.solvers.solve_members`), and :meth:`member` gives back an
ordinary :class:`~nemon.model.NEMON` (or :class:`~nemon.mlp.MLP`) with exactly
the stacked weights, so every output stays per model.

The reference for all of it is the per-model path (:class:`~nemon.model.NEMON`
with :class:`~nemon.core.ImplicitLayer`); ``tests/test_stack.py`` checks that
values and gradients agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import core
from .errors import ConfigurationError
from .mlp import MLP
from .model import NEMON

STACKABLE = (NEMON, MLP)
SHARED = ("in_features", "hidden_features", "out_features", "weighted")
SOLVER_SETTINGS = ("solver", "tol", "max_iter", "stop")


def _forward(stack: ModelStack, flat: Tensor, u_n: Tensor):
    """``(logits, x, mask, A, R, constants)`` of every member: MATH 1-3, no graph."""
    p = stack._views(flat)
    K, N = flat.shape[0], u_n.shape[0]
    inj = torch.baddbmm(p["b"][:, None, :], u_n.expand(K, N, -1), p["B"].transpose(1, 2))
    A = R = constants = None
    if stack.implicit:
        spec = stack._spec(embedded=False)
        layer = core.prepare_layer(p["T"], p.get("d"), stack.gamma, False, stack.solver)
        A, R = layer.A, layer.R
        x, rec = core.forward_solve(spec, layer, inj, torch.zeros_like(inj))
        mask = torch.baddbmm(inj, x, A.transpose(1, 2)) > 0
        stack.last_forward = rec
        constants = (spec, layer)
    else:
        x = torch.relu(inj)
        mask = inj > 0
        stack.last_forward = None
    y = torch.baddbmm(p["c"][:, None, :], x, p["C"].transpose(1, 2))
    return y, x, mask, A, R, constants


def _backward(stack: ModelStack, flat, u_n, x, mask, A, R, constants, gy: Tensor) -> dict:
    """The gradient pieces of :func:`_forward` for ``dL/dy = gy`` (MATH 4), by name."""
    p = stack._views(flat)
    g = {"C": torch.bmm(gy.transpose(1, 2), x), "c": gy.sum(dim=1)}
    gx = torch.bmm(gy, p["C"])  # dL/dx*
    J = mask.to(gx.dtype)
    if stack.implicit:
        spec, layer = constants
        v, _, rec = core.adjoint_solve(spec, layer, gx, J, gx.clone())
        stack.last_backward = rec
        dA = torch.bmm(v.transpose(1, 2), x)
        g["T"], dd = core.param_grads(dA, p["T"], A, R, "d" in stack.layout)
        if dd is not None:
            g["d"] = dd
    else:
        v = gx.mul_(J)
    g["B"] = torch.matmul(v.transpose(1, 2), u_n)  # dB = v^T u
    g["b"] = v.sum(dim=1)
    return g


class StackStep(torch.autograd.Function):
    """``u_n -> logits`` of every member, from the flat parameters (MATH 1-4).

    Forward: ``inj = B u + b``, ``x* = relu(A x* + inj)`` (skipped for an MLP,
    where ``x = relu(inj)``), ``y = C x* + c``. Backward: ``dC, dc`` from the
    logits' gradient, the adjoint solve of MATH 4 for ``v = J w``, then ``dA``
    (to ``dT``, ``dd`` by the chain rule of MATH 2), ``dB = v^T u``, ``db = sum v``,
    assembled into one gradient of ``flat``.
    """

    @staticmethod
    def forward(ctx, flat: Tensor, u_n: Tensor, stack: ModelStack) -> Tensor:  # type: ignore[override]
        with torch.no_grad():
            y, x, mask, A, R, constants = _forward(stack, flat, u_n)
        ctx.stack, ctx.constants, ctx.R = stack, constants, R
        ctx.save_for_backward(flat, u_n, x, mask, A)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):  # type: ignore[override]
        flat, u_n, x, mask, A = ctx.saved_tensors
        g = _backward(ctx.stack, flat, u_n, x, mask, A, ctx.R, ctx.constants, gy)
        return ctx.stack._assemble(g), None, None


class StackLoss(torch.autograd.Function):
    """The lipschitz objective of every member in one node: ``CE + lam * Lip`` (MATH 5).

    Returns ``(loss, ce, logits)`` per member; only ``loss`` carries a gradient.
    The cross-entropy's gradient ``(softmax(y) - onehot) / N`` and the Lipschitz
    bound's (:func:`core.lipschitz_backward`) are written by hand, so a whole
    training step is one autograd node and one fused optimiser call.
    """

    @staticmethod
    def forward(ctx, flat, u_n, labels, lam, stack):  # type: ignore[override]
        with torch.no_grad():
            y, x, mask, A, R, constants = _forward(stack, flat, u_n)
            logp = torch.log_softmax(y, dim=2)
            ce = -logp.gather(2, labels.expand(y.shape[0], -1)[..., None]).mean(dim=(1, 2))
            loss = ce.clone()  # its own tensor: ce is marked non-differentiable
            lip = None
            if bool((lam > 0).any()):
                p = stack._views(flat)
                L, lip = core.lipschitz_forward(
                    p.get("T"), p.get("d"), p["B"], p["C"], stack.gamma, stack._inv_std()
                )
                loss = ce + lam * L
        ctx.stack, ctx.constants, ctx.R, ctx.lip = stack, constants, R, lip
        ctx.save_for_backward(flat, u_n, labels, lam, x, mask, A, logp)
        ctx.mark_non_differentiable(ce, y)
        return loss, ce, y

    @staticmethod
    def backward(ctx, gloss, _gce, _gy):  # type: ignore[override]
        flat, u_n, labels, lam, x, mask, A, logp = ctx.saved_tensors
        stack: ModelStack = ctx.stack
        K, N, _ = logp.shape
        gy = logp.exp_()
        gy.scatter_add_(2, labels.expand(K, -1)[..., None], torch.full_like(gy[..., :1], -1.0))
        gy.mul_((gloss / N)[:, None, None])
        g = _backward(stack, flat, u_n, x, mask, A, ctx.R, ctx.constants, gy)
        grad = stack._assemble(g)
        if ctx.lip is not None:
            p = stack._views(flat)
            gv = stack._views(grad)
            core.lipschitz_backward(
                gloss * lam,
                ctx.lip,
                p.get("T"),
                p["B"],
                p["C"],
                stack._inv_std(),
                gv.get("T"),
                gv.get("d"),
                gv["B"],
                gv["C"],
            )
        return grad, None, None, None, None


class StackLipschitz(torch.autograd.Function):
    """The bound of MATH 5 per member from the flat parameters (:func:`core.lipschitz_forward`)."""

    @staticmethod
    def forward(ctx, flat: Tensor, stack: ModelStack) -> Tensor:  # type: ignore[override]
        with torch.no_grad():
            p = stack._views(flat)
            L, saved = core.lipschitz_forward(
                p.get("T"), p.get("d"), p["B"], p["C"], stack.gamma, stack._inv_std()
            )
        ctx.saved = saved
        ctx.stack = stack
        ctx.save_for_backward(flat)
        return L

    @staticmethod
    def backward(ctx, gL: Tensor):  # type: ignore[override]
        (flat,) = ctx.saved_tensors
        stack: ModelStack = ctx.stack
        p = stack._views(flat)
        grad = torch.zeros_like(flat)
        g = stack._views(grad)
        core.lipschitz_backward(
            gL,
            ctx.saved,
            p.get("T"),
            p["B"],
            p["C"],
            stack._inv_std(),
            g.get("T"),
            g.get("d"),
            g["B"],
            g["C"],
        )
        return grad, None


class ModelStack(nn.Module):
    """``K`` NEMONs (weighted or not) or ``K`` MLPs in one flat parameter ``(K, P)``."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ConfigurationError("a ModelStack needs at least one member")
        first = members[0]
        if not isinstance(first, STACKABLE):
            raise ConfigurationError(
                f"ModelStack stacks NEMON or MLP models, got {type(first).__name__}"
            )
        for k, m in enumerate(members):
            if type(m) is not type(first):
                raise ConfigurationError(
                    f"member {k} is a {type(m).__name__}, member 0 a {type(first).__name__}: "
                    "a stack holds one kind of model"
                )
            for attr in (*SHARED, *SOLVER_SETTINGS):
                if getattr(m, attr) != getattr(first, attr):
                    raise ConfigurationError(
                        f"member {k} has {attr}={getattr(m, attr)!r} but member 0 has "
                        f"{getattr(first, attr)!r}; stacked members must agree on it"
                    )
            for buf in ("input_mean", "input_std"):
                if not torch.equal(getattr(m, buf), getattr(first, buf)):
                    raise ConfigurationError(
                        f"member {k} has another {buf} than member 0; stacked members must "
                        "normalise their input alike"
                    )
        self.model_class = type(first)
        self.member_kwargs = [m.constructor_kwargs() for m in members]
        self.K = len(members)
        for attr in (*SHARED, *SOLVER_SETTINGS):
            setattr(self, attr, getattr(first, attr))
        self.implicit = isinstance(first, NEMON)
        names = ["B", "b", "C", "c"]
        if self.implicit:
            names = ["T", *(["d"] if self.weighted else []), *names]
        self.layout: dict[str, tuple[int, tuple[int, ...]]] = {}
        offset = 0
        for name in names:
            shape = tuple(getattr(first, name).shape)
            self.layout[name] = (offset, shape)
            offset += int(torch.Size(shape).numel())
        rows = [
            torch.cat([getattr(m, name).detach().reshape(-1) for name in names]) for m in members
        ]
        self.flat = nn.Parameter(torch.stack(rows))
        self.register_buffer("input_mean", first.input_mean.clone())
        self.register_buffer("input_std", first.input_std.clone())
        gammas = [m.gamma for m in members]
        self.register_buffer(
            "gamma", torch.tensor(gammas, dtype=first.B.dtype, device=first.B.device)
        )
        self.last_forward: core.SolveRecord | None = None
        self.last_backward: core.SolveRecord | None = None

    def extra_repr(self) -> str:
        return (
            f"K={self.K}, model={self.model_class.__name__}, weighted={self.weighted}, "
            f"gamma={self.gamma.tolist()}, in_features={self.in_features}, "
            f"hidden_features={self.hidden_features}, out_features={self.out_features}, "
            f"solver={self.solver!r}, tol={self.tol}, stop={self.stop!r}, max_iter={self.max_iter}"
        )

    # --- the parameters as views of `flat` -----------------------------------------------------
    def _views(self, flat: Tensor) -> dict[str, Tensor]:
        """The parameters as views of ``flat`` (cached per storage: they are reused every step)."""
        key = (flat.data_ptr(), flat.shape, flat.stride(), flat.dtype, flat.device)
        cache = self.__dict__.setdefault("_view_cache", {})
        grad_mode = torch.is_grad_enabled() and flat.requires_grad
        if key not in cache or grad_mode:
            K = flat.shape[0]
            views = {
                name: flat[:, o : o + int(torch.Size(shape).numel())].view(K, *shape)
                for name, (o, shape) in self.layout.items()
            }
            if grad_mode:  # views that autograd must see: made fresh each time
                return views
            if len(cache) > 8:
                cache.clear()
            cache[key] = views
        return cache[key]

    def _assemble(self, pieces: dict[str, Tensor]) -> Tensor:
        """One ``(K, P)`` gradient from per-parameter pieces (a missing piece is zero)."""
        K = self.K
        parts = []
        for name, (_, shape) in self.layout.items():
            piece = pieces.get(name)
            if piece is None:
                piece = self.flat.new_zeros(K, *shape)
            parts.append(piece.reshape(K, -1))
        return torch.cat(parts, dim=1)

    def __getattr__(self, name: str):
        layout = self.__dict__.get("layout")
        if layout is not None and name in layout:
            return self._views(self.flat)[name]
        if name in ("T", "d") and layout is not None:
            return None  # an MLP has no T, an unweighted NEMON no d
        return super().__getattr__(name)

    def _inv_std(self) -> Tensor:
        return (1.0 / self.input_std).to(self.flat.dtype)

    # --- members ---------------------------------------------------------------------------
    def member(self, k: int) -> nn.Module:
        """Member ``k`` as a standalone model with a copy of its current weights."""
        model = self.model_class(**self.member_kwargs[k])
        model = model.to(dtype=self.flat.dtype, device=self.flat.device)
        views = self._views(self.flat.detach())
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(views[name][k])
        return model

    def members(self) -> list[nn.Module]:
        return [self.member(k) for k in range(self.K)]

    # --- the maps ---------------------------------------------------------------------------
    def normalise(self, u2: Tensor) -> Tensor:
        """Rows of pixels to the normalised input ``(u - mean) / std`` (MATH 1)."""
        return (u2 - self.input_mean.to(u2.dtype)) / self.input_std.to(u2.dtype)

    def _spec(self, embedded: bool) -> core.LayerSpec:
        return core.LayerSpec(
            gamma=self.gamma,
            weighted=self.weighted,
            solver=self.solver,
            tol=self.tol,
            max_iter=self.max_iter,
            stop=self.stop,
            embedded=embedded,
            keep_last_update=False,  # training needs no error bound
            grad_enabled=torch.is_grad_enabled(),
            on_backward=self._record_backward,
        )

    def _record_backward(self, rec: core.SolveRecord) -> None:
        self.last_backward = rec

    def logits(self, u_n: Tensor) -> Tensor:
        """``y = C x* + c`` of every member, ``(K, N, classes)``, from normalised ``(N, m)``."""
        return StackStep.apply(self.flat, u_n, self)

    def lipschitz_loss(
        self, u_n: Tensor, labels: Tensor, lam: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(CE + lam * Lip, CE, logits)`` per member in one autograd node (MATH 5)."""
        return StackLoss.apply(self.flat, u_n, labels, lam, self)

    def lipschitz_bound(self) -> Tensor:
        """The bound of MATH 5 per member, ``(K,)``, differentiable."""
        return StackLipschitz.apply(self.flat, self)

    def box_hidden(self, lo_n: Tensor, hi_n: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_lo*, x_hi*)`` of the embedded map for boxes of normalised inputs (MATH 9)."""
        p = self._views(self.flat)
        z_lo, z_hi = core.box_injection(p["B"], p["b"], lo_n, hi_n)
        if not self.implicit:
            return torch.relu(z_lo), torch.relu(z_hi)
        spec = self._spec(embedded=True)
        inj = torch.cat((z_lo, z_hi), dim=-1)
        x = core.ImplicitLayer.apply(p["T"], p.get("d"), inj, spec)
        self.last_forward = spec.forward
        n = self.hidden_features
        return x[..., :n], x[..., n:]

    def worst_case_logits(self, lo_n: Tensor, hi_n: Tensor, labels: Tensor) -> Tensor:
        """``z_j = -m_kj`` (lower bound of ``y_k - y_j`` over the box), ``z_k = 0`` (MATH 10)."""
        x_lo, x_hi = self.box_hidden(lo_n, hi_n)
        p = self._views(self.flat)
        return core.worst_case_logits(p["C"], p["c"], x_lo, x_hi, labels)
