"""The hand-written gradient of the Lipschitz bound (MATH 5), for all members at once.

:func:`nemon.core.lipschitz_backward` adds the bound's (sub)gradient to the parameter
gradients of every member with a fixed handful of tensor operations. It replaced a
loop over the members with Python-float arithmetic; the loop is kept here as the
reference, and the vectorised form must give the same bits (signed zeros included),
so that trained weights do not move by one ulp. ``tests/test_gradients.py`` checks the
gradient itself against autograd.
"""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemon import core


def reference_backward(gL, saved, T, B, C, inv_std, dT, dd, dB, dC) -> None:
    """The per-member loop the vectorised form replaced (its arithmetic, verbatim)."""
    eta, c_norm, b_norm, denom, mu, r_star, i_star, j_star = saved
    gc = (gL * b_norm / denom).tolist()
    gb = (gL * c_norm / denom).tolist()
    g_mu = (gL * c_norm * b_norm / denom**2 * (mu > 0).to(gL.dtype)).tolist()
    rs, is_, js = r_star.tolist(), i_star.tolist(), j_star.tolist()
    bn = b_norm.tolist()
    vector_std = inv_std.dim() > 0
    for k in range(B.shape[0]):
        r, i = rs[k], is_[k]
        e = None if eta is None else eta[k]
        if dC is not None:
            row = C[k, r].sign()
            dC[k, r] += (row if e is None else row / e) * gc[k]
        if dB is not None:
            scale = gb[k] * (1.0 if e is None else float(e[i]))
            dB[k, i] += B[k, i].sign() * (inv_std * scale if vector_std else float(inv_std) * scale)
        if e is not None and dd is not None:
            dd[k] -= (C[k, r].abs() / e) * gc[k]
            dd[k, i] += bn[k] * gb[k]
        if T is not None and dT is not None and g_mu[k] != 0.0:
            j = js[k]
            dT[k, j, j] += g_mu[k] * (1.0 - float(T[k, j, j].sign()))


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int64 if t.dtype == torch.float64 else torch.int32)


def start_gradient(shape, dtype, g: torch.Generator) -> torch.Tensor:
    """Random values with some exact zeros of either sign (where a missed skip would show)."""
    x = torch.randn(shape, generator=g, dtype=dtype)
    zero = torch.rand(shape, generator=g) < 0.3
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).to(dtype)
    return torch.where(zero, sign * 0.0, x)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    K=st.integers(1, 8),
    n=st.integers(1, 9),
    m=st.integers(1, 12),
    classes=st.integers(1, 5),
    weighted=st.booleans(),
    implicit=st.booleans(),
    vector_std=st.booleans(),
    gamma=st.sampled_from([0.0, 0.5, 0.9]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    skip=st.sets(st.sampled_from(["dT", "dd", "dB", "dC"]), max_size=2),
)
def test_the_vectorised_gradient_adds_the_same_bits_as_the_loop(
    seed, K, n, m, classes, weighted, implicit, vector_std, gamma, dtype, skip
):
    g = torch.Generator().manual_seed(seed)
    T = torch.randn(K, n, n, generator=g, dtype=dtype) if implicit else None
    d = torch.randn(K, n, generator=g, dtype=dtype) * 0.5 if weighted else None
    B = torch.randn(K, n, m, generator=g, dtype=dtype)
    C = torch.randn(K, classes, n, generator=g, dtype=dtype)
    if vector_std:
        inv_std = 1.0 / (0.2 + torch.rand(m, generator=g, dtype=dtype))
    else:
        inv_std = torch.tensor(1.0 / 0.3081, dtype=dtype)
    gammas = torch.full((K,), gamma, dtype=dtype)
    _, saved = core.lipschitz_forward(T, d, B, C, gammas, inv_std)
    gL = torch.randn(K, generator=g, dtype=dtype)
    grads = {
        "dT": start_gradient((K, n, n), dtype, g) if implicit else None,
        "dd": start_gradient((K, n), dtype, g),
        "dB": start_gradient((K, n, m), dtype, g),
        "dC": start_gradient((K, classes, n), dtype, g),
    }
    grads = {k: (None if k in skip else v) for k, v in grads.items()}
    ref = {k: (None if v is None else v.clone()) for k, v in grads.items()}
    reference_backward(gL, saved, T, B, C, inv_std, ref["dT"], ref["dd"], ref["dB"], ref["dC"])
    core.lipschitz_backward(
        gL, saved, T, B, C, inv_std, grads["dT"], grads["dd"], grads["dB"], grads["dC"]
    )
    for name, v in grads.items():
        if v is not None:
            assert torch.equal(bits(v), bits(ref[name])), name


def test_mu_at_zero_adds_nothing_to_the_diagonal():
    # gamma 0 and a negative diagonal: mu < 0, the bound does not depend on T
    T = -torch.eye(3)[None] * 2.0
    B, C = torch.randn(1, 3, 4), torch.randn(1, 2, 3)
    inv_std = torch.tensor(2.0)
    _, saved = core.lipschitz_forward(T, None, B, C, torch.zeros(1), inv_std)
    dT = torch.full((1, 3, 3), -0.0)
    core.lipschitz_backward(torch.ones(1), saved, T, B, C, inv_std, dT, None, None, None)
    assert torch.equal(bits(dT), bits(torch.full((1, 3, 3), -0.0)))
    assert math.copysign(1.0, float(dT[0, 0, 0])) == -1.0
