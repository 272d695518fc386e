"""Where the interval certificate loses against the attacks: rounding, relaxation or attack.

    python -m benchmarks.certificate_gap results/fashion-mnist [--eps 0.1] [--images 100] \
        [--time-limit 60] [--markdown] [--csv FILE]

For every interval-trained model found (``model.pt`` under the folders given, NEMON or MLP),
on the evaluation's AutoAttack subset (the first ``--images`` of the seeded class-stratified
order, ``nemon.data.stratified_subset``, seed 0), at radius ``eps``:

* ``cert32``: the interval certificate of MATH 9 computed in float32, as the model runs;
* ``cert64``: the same certificate computed in float64 (same weights): the rounding term of
  MATH 12 (c) shrinks by nine orders of magnitude, nothing else changes;
* an exact verification of every correctly classified image that ``cert64`` leaves open, by a
  mixed-integer linear program (``scipy.optimize.milp``, HiGHS): the variables are the input
  ``u`` in the ball, the equilibrium ``x`` inside the float64 interval bounds and one binary per
  ReLU whose pre-activation bounds straddle 0; the constraints ``x_i = relu(z_i)``,
  ``z = A x + B u + b``, are exact (big-M with the interval bounds of ``z``), so the feasible
  set is the graph of ``u -> x*(u)`` over the ball (the equilibrium is unique, MATH 2), and the
  smallest margin ``y_k - y_j`` over it decides the image: ``verified`` (all margins above 0,
  to the solver's tolerance), ``counterexample`` (a minimiser whose forward solve, in float64,
  is misclassified: a real adversarial image) or ``open`` (time limit, or a minimiser the
  forward solve does not confirm);
* ``autoattack``: the model's committed AutoAttack accuracy on that subset and ``eps``
  (``robustness.csv`` beside the model), when there is one.

So ``autoattack - cert32`` splits into rounding (``cert64 - cert32``), relaxation (what the
exact program verifies beyond ``cert64``), open images, and what the attack missed
(``autoattack`` above ``correct - counterexamples``). The MILP is a measurement, not a
certificate of the package: its answer is exact only up to HiGHS's feasibility tolerance
(1e-6) and its cost is not bounded.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import nemon
from benchmarks.trained import model_files, record, show
from nemon.contracts import load_model
from nemon.data import load_dataset, stratified_subset
from nemon.errors import ConfigurationError, exit_from
from nemon.training import to_pixels


def _hidden_matrix(model) -> torch.Tensor:
    return model.A.detach().double()  # the MLP's is zero (MATH 16)


def exact_margin(model, u, k: int, eps: float, time_limit: float):
    """The smallest margin ``min_j min_v (y_k - y_j)(v)`` over the ball, by MILP.

    ``model`` in float64. Returns ``(margin, status, v)`` with ``status`` "ok" (solved to
    optimality for every ``j``) or "open" (a time limit or a failure), ``v`` the minimiser of
    the smallest margin (None if none was found), and the number of binaries.
    """
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_matrix

    m_in, n = model.in_features, model.hidden_features
    lo = (u - eps).clamp(0, 1)
    hi = (u + eps).clamp(0, 1)
    with torch.no_grad():
        x_lo, x_hi, _ = nemon.interval_bounds(model, lo[None], hi[None])
        x_lo, x_hi = x_lo[0].clamp(min=0), x_hi[0]
        A = _hidden_matrix(model)
        B, b = model.input_map()
        B, b = B.detach().double(), b.detach().double()
        z_lo = A.clamp(min=0) @ x_lo + A.clamp(max=0) @ x_hi + B.clamp(min=0) @ lo
        z_lo += B.clamp(max=0) @ hi + b
        z_hi = A.clamp(min=0) @ x_hi + A.clamp(max=0) @ x_lo + B.clamp(min=0) @ hi
        z_hi += B.clamp(max=0) @ lo + b
    A, B, b = A.numpy(), B.numpy(), b.numpy()
    zl, zh = z_lo.numpy(), z_hi.numpy()
    active, inactive = zl >= 0, zh <= 0
    unstable = np.where(~(active | inactive))[0]
    nu = len(unstable)
    N = m_in + n + nu  # variables: u, x, one binary per unstable unit
    z_row = np.hstack([B, A, np.zeros((n, nu))])  # z - b
    zx_row = z_row.copy()
    zx_row[:, m_in : m_in + n] -= np.eye(n)  # z - x - b
    rows, low, up = [], [], []

    def add(row, lower, upper):
        rows.append(row)
        low.append(lower)
        up.append(upper)

    for i in np.where(active)[0]:  # x_i = z_i >= 0
        add(zx_row[i], -b[i], -b[i])
        add(z_row[i], -b[i], np.inf)
    for i in np.where(inactive)[0]:  # x_i = 0 (its bounds), z_i <= 0
        add(z_row[i], -np.inf, -b[i])
    for t, i in enumerate(unstable):  # x_i = relu(z_i) with zl_i < 0 < zh_i, d_t in {0, 1}
        add(zx_row[i], -np.inf, -b[i])  # x_i >= z_i
        r = zx_row[i].copy()
        r[m_in + n + t] = zl[i]
        add(r, zl[i] - b[i], np.inf)  # x_i <= z_i - zl_i (1 - d_t): z_i - x_i + zl_i d_t >= zl_i
        r = np.zeros(N)
        r[m_in + i], r[m_in + n + t] = 1.0, -zh[i]
        add(r, -np.inf, 0.0)  # x_i <= zh_i d_t
    x_low = np.where(inactive, 0.0, x_lo.numpy())
    x_up = np.where(inactive, 0.0, x_hi.numpy())
    bounds = Bounds(
        np.concatenate([lo.numpy(), x_low, np.zeros(nu)]),
        np.concatenate([hi.numpy(), x_up, np.ones(nu)]),
    )
    constraints = LinearConstraint(csr_matrix(np.array(rows)), np.array(low), np.array(up))
    integrality = np.concatenate([np.zeros(m_in + n), np.ones(nu)])
    C = model.C.detach().double().numpy()
    c = model.c.detach().double().numpy()
    best, status, arg = math.inf, "ok", None
    for j in range(C.shape[0]):
        if j == k:
            continue
        objective = np.concatenate([np.zeros(m_in), C[k] - C[j], np.zeros(nu)])
        res = milp(
            objective,
            constraints=constraints,
            integrality=integrality,
            bounds=bounds,
            options={"time_limit": time_limit, "mip_rel_gap": 1e-9},
        )
        if res.status != 0:
            status = "open"
        if res.x is not None and res.fun + c[k] - c[j] < best:
            best, arg = res.fun + c[k] - c[j], res.x[:m_in]
    return best, status, arg, nu


def measure(path: Path, eps: float, images: int, time_limit: float, cache: dict) -> dict | None:
    rec = record(path)
    if rec.get("objective", "interval") != "interval":
        return None
    model = load_model(path, sha256=rec.get("model_sha256"))
    if not model.linf_well_posed:  # a MON: no interval certificate (MATH 9)
        return None
    dataset = rec.get("dataset")
    if dataset is None:
        raise ConfigurationError(f"{path}: no metrics.json beside it names its data set")
    if dataset not in cache:
        ds = load_dataset(dataset)
        idx = stratified_subset(ds.test_y, images, seed=0)
        cache[dataset] = (to_pixels(ds.test_x[idx]), ds.test_y[idx].long())
    X, Y = cache[dataset]
    t0 = time.perf_counter()
    masks = {}
    for name, dtype in (("cert32", torch.float32), ("cert64", torch.float64)):
        m = load_model(path, sha256=None).to(dtype).eval()
        with m.solving(tol=1e-6 if dtype == torch.float32 else 1e-12, stop="step"):
            with torch.no_grad():
                masks[name] = nemon.certified_mask(m, X.to(dtype), Y, eps, "interval")
                if dtype == torch.float64:
                    correct = m(X.double()).argmax(dim=1) == Y
                    m64 = m
    seconds = time.perf_counter() - t0
    verified = counterexamples = still_open = 0
    binaries = []
    t0 = time.perf_counter()
    with m64.solving(tol=1e-12, stop="step", max_iter=100_000):
        for i in torch.nonzero(correct & ~masks["cert64"]).flatten().tolist():
            margin, status, v, nu = exact_margin(m64, X[i].double(), int(Y[i]), eps, time_limit)
            binaries.append(nu)
            if status == "ok" and margin > 0:
                verified += 1
                continue
            if v is not None and margin <= 0:
                with torch.no_grad():
                    if int(m64(torch.as_tensor(v)[None].clamp(0, 1)).argmax()) != int(Y[i]):
                        counterexamples += 1
                        continue
            still_open += 1
    milp_seconds = time.perf_counter() - t0
    row = {
        "model": "/".join(path.parent.parts[-3:]),
        "dataset": dataset,
        "eps": eps,
        "images": len(Y),
        "correct": int(correct.sum()),
        "cert32": int(masks["cert32"].sum()),
        "cert64": int(masks["cert64"].sum()),
        "milp_verified": verified,
        "counterexamples": counterexamples,
        "open": still_open,
        "binaries_mean": float(np.mean(binaries)) if binaries else 0.0,
        "cert_seconds": seconds,
        "milp_seconds": milp_seconds,
    }
    rob = path.parent / "robustness.csv"
    if rob.exists():
        df = pd.read_csv(rob)
        hit = df[(df["attack"] == "autoattack") & (df["eps"] == eps)]
        hit = hit[hit["images"] == len(Y)]
        if len(hit):
            row["autoattack"] = round(float(hit["accuracy"].iloc[0]) * len(Y))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.certificate_gap", description=__doc__)
    p.add_argument("folders", nargs="+", help="results folders or model files")
    p.add_argument("--eps", type=float, default=0.1, help="radius, pixel units")
    p.add_argument("--images", type=int, default=100, help="the AutoAttack subset's size")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per MILP")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--csv", help="also write the table to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cache: dict = {}
    rows = []
    for path in model_files(a.folders):
        row = measure(path, a.eps, a.images, a.time_limit, cache)
        if row is not None:
            rows.append(row)
            print(f"{row['model']}: done", file=sys.stderr)
    if not rows:
        raise ConfigurationError(f"no interval-trained NEMON or MLP model under {a.folders}")
    show(pd.DataFrame(rows), a.markdown, a.csv)
    return 0


if __name__ == "__main__":
    exit_from(main)
