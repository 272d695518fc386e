"""The baseline: the same NEMON, its equilibrium and implicit backward solved by torchdeq.

:class:`TorchDEQNEMON` reuses a :class:`~nemon.model.NEMON`'s parameters (the same
tensors, so the same initial values) and hands torchdeq the averaged map of
MATH 3, ``G(x) = (1 - alpha*) x + alpha* relu(A x + B u_n + b)``, the map nemon's
``average`` solver iterates; torchdeq's implicit (``ift``) backward solves the
adjoint of ``G``, whose solution ``(I - A^T J)^-1 g / alpha*`` gives the gradients
of MATH 4 exactly. With the ``batch`` layout torchdeq's relative step is nemon's
``stop="step"`` rule over the whole batch.

torchdeq cannot train a :class:`~nemon.stack.ModelStack`, so :func:`train_epoch`
is its own loop, written to do per step what :func:`nemon.training.train_stack`
does for a stack of one at ``lam = 0``: the batch ``X[idx]`` of the same
permutation (``torch.randperm`` from a generator seeded with ``seed``), the
input normalised as ``(u - mean) / std`` (MATH 1) before ``B``, mean
cross-entropy, one finiteness check of the loss, fused Adam, the per-step
solver statistics and the correct count; at the end of the epoch the same
weight check, Lipschitz bound and ``mu``. What differs, besides the solvers:

* ``A`` and its gradient come from autograd through the parametrisation
  (``NEMON.A``, MATH 2); nemon's layer builds ``A`` once and has the chain rule
  written by hand (part of what is compared);
* ``alpha*`` is read once per step (``NEMON.alpha_star``, one device sync);
  nemon's layer computes it with the same one sync;
* the logits are ``(N, classes)`` instead of ``(1, N, classes)``, and no member
  loop or history dictionary is kept (a few microseconds per step).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from nemon.errors import ConfigurationError, NonFiniteError
from nemon.model import NEMON

from .config import LAYOUTS, TORCHDEQ_SOLVERS

MISSING_TORCHDEQ = "torchdeq is not installed (pip install -e .[bench]): running nemon rows only"


def torchdeq_available() -> bool:
    """Whether ``import torchdeq`` works (checked before any configuration runs)."""
    try:
        importlib.import_module("torchdeq")
    except ImportError:
        return False
    return True


def torchdeq_version() -> str | None:
    try:
        return importlib.metadata.version("torchdeq")
    except importlib.metadata.PackageNotFoundError:
        return None


class TorchDEQNEMON(nn.Module):
    """A NEMON whose equilibrium and backward are torchdeq's instead of nemon's.

    ``last_forward`` / ``last_backward`` hold each solve's iteration count and
    convergence, read from torchdeq's info dicts.
    """

    def __init__(
        self, model: NEMON, solver: str, *, tol: float, max_iter: int, layout: str = "batch"
    ) -> None:
        super().__init__()
        try:
            import torchdeq  # optional: only the comparison needs it
        except ImportError as e:
            raise ConfigurationError(
                f"the torchdeq baseline needs torchdeq ({e}): pip install -e .[bench]"
            ) from e
        if solver not in TORCHDEQ_SOLVERS:
            raise ConfigurationError(
                f"unknown torchdeq solver {solver!r}; choose one of {list(TORCHDEQ_SOLVERS)}"
            )
        if layout not in LAYOUTS:
            raise ConfigurationError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
        self.model = model
        self.solver = solver
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.layout = layout
        self.deq = torchdeq.get_deq(
            core="indexing",
            ift=True,
            f_solver=solver,
            b_solver=solver,
            f_max_iter=self.max_iter,
            b_max_iter=self.max_iter,
            eval_f_max_iter=self.max_iter,
            f_tol=self.tol,
            b_tol=self.tol,
            f_stop_mode="rel",
            b_stop_mode="rel",
        )
        self.last_forward: dict | None = None
        self.last_backward: dict | None = None

    def extra_repr(self) -> str:
        return (
            f"solver={self.solver!r}, tol={self.tol}, max_iter={self.max_iter}, "
            f"layout={self.layout!r}"
        )

    def _stats(self, info: dict) -> dict:
        # nstep is the step of the lowest residual, which is the last step when the solve
        # stopped on tol; a solve that did not reach tol ran all max_iter evaluations.
        converged = bool(info["rel_lowest"].max() < self.tol)
        iters = int(info["nstep"].max()) if converged else self.max_iter
        return {"iterations": iters, "converged": converged}

    def _record_backward(self, info: dict) -> None:
        self.last_backward = self._stats(info)

    def equilibrium(self, u: Tensor) -> Tensor:
        """``x*`` for pixels ``u`` (rows of ``in_features``), torchdeq's solve of MATH 3."""
        m = self.model
        u2 = u.reshape(-1, m.in_features).to(m.B.dtype)
        inj = torch.addmm(m.b, m.normalise(u2), m.B.t())  # as ModelStack.injection
        At = m.A.t()
        alpha = m.alpha_star()
        bsz, n = inj.shape

        def G(z: Tensor) -> Tensor:
            x = z.reshape(bsz, n)
            return torch.lerp(x, torch.relu(torch.addmm(inj, x, At)), alpha).reshape(z.shape)

        z0 = inj.new_zeros((1, bsz * n) if self.layout == "batch" else (bsz, n))
        z_out, info = self.deq(G, z0, backward_writer=self._record_backward)
        self.last_forward = self._stats(info)
        return z_out[-1].reshape(bsz, n)

    def forward(self, u: Tensor) -> Tensor:
        return F.linear(self.equilibrium(u), self.model.C, self.model.c)


def epoch_order(n: int, seed: int) -> Tensor:
    """The first epoch's permutation, drawn as :func:`nemon.training.train_stack` draws it."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def train_epoch(
    net: TorchDEQNEMON,
    X: Tensor,
    Y: Tensor,
    *,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool = False,
) -> dict:
    """One epoch of ``net`` on float pixels ``X`` (on the model's device), as train_stack would.

    Returns the epoch's statistics under the names of a train_stack history entry.
    """
    model = net.model
    device = model.B.device
    Y = Y.to(device=device, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=device.type in ("cpu", "cuda"))
    order = epoch_order(len(X), seed).to(device)
    net.train()
    loss_sum, correct, samples, not_converged = 0.0, 0, 0, 0
    fwd: list[int] = []
    bwd: list[int] = []
    batches = order.split(batch_size)
    bar = tqdm(batches, desc="epoch 1/1", unit="batch", disable=not progress, mininterval=5.0)
    for step, idx in enumerate(bar, start=1):
        u, labels = X[idx], Y[idx]
        logits = net(u)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteError(f"torchdeq training loss became {value} at step {step}")
        opt.step()
        f, b = net.last_forward, net.last_backward
        fwd.append(f["iterations"])
        bwd.append(b["iterations"])
        not_converged += (not f["converged"]) + (not b["converged"])
        correct += int((logits.detach().argmax(dim=1) == labels).sum())
        samples += len(idx)
        loss_sum += value * len(idx)
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise NonFiniteError(f"torchdeq training made the weights {name} non-finite")
    with torch.no_grad():
        bound, mu = float(model.lipschitz_bound()), float(model.mu())
    return {
        "train_loss": loss_sum / samples,
        "train_ce": loss_sum / samples,
        "train_acc": correct / samples,
        "lipschitz_bound": bound,
        "mu": mu,
        "fwd_iters_mean": sum(fwd) / len(fwd),
        "fwd_iters_max": max(fwd),
        "bwd_iters_mean": sum(bwd) / len(bwd),
        "bwd_iters_max": max(bwd),
        "not_converged": not_converged,
    }


@torch.no_grad()
def accuracy(net: TorchDEQNEMON, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Test accuracy at the training tolerance (as nemon's ``stack_accuracy``), batch 1000."""
    net.eval()
    device = net.model.B.device
    correct = 0
    for i in range(0, len(x), batch_size):
        u = x[i : i + batch_size].to(device)
        pred = net(u).argmax(dim=1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    return correct / len(x)
