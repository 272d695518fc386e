"""nemon.bench: torchdeq solves the same problem as nemon, and the benchmark runs (MATH 3, 4, 8)."""

import pytest
import torch
from conftest import make_model

from nemon import bench

pytest.importorskip("torchdeq")


def _grads(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()}


def _loss_and_grads(net, model, u, weights):
    model.zero_grad(set_to_none=True)
    logits = net(u)
    (logits * weights).sum().backward()
    return logits.detach(), _grads(model)


@pytest.mark.parametrize("layout", bench.STOP_LAYOUTS)
@pytest.mark.parametrize(
    ("nemon_solver", "deq_solver"), [("average", "fixed_point_iter"), ("anderson", "anderson")]
)
def test_torchdeq_wrapper_has_nemons_equilibrium_and_gradients(nemon_solver, deq_solver, layout):
    model = make_model(seed=3, solver=nemon_solver)  # float64, tol 1e-12, weighted, d != 0
    deq = bench.TorchDEQNEMON(model, deq_solver, tol=1e-12, max_iter=2000, layout=layout)
    u = torch.rand(16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    with torch.no_grad():
        x_nemon, stats = model.equilibrium(u)
        x_deq = deq.equilibrium(u)
    assert stats.converged and deq.last_forward["converged"]
    torch.testing.assert_close(x_deq, x_nemon, atol=1e-9, rtol=0)
    assert float(x_nemon.abs().max()) > 0.1  # a non-trivial equilibrium

    y_nemon, g_nemon = _loss_and_grads(model, model, u, weights)
    y_deq, g_deq = _loss_and_grads(deq, model, u, weights)
    torch.testing.assert_close(y_deq, y_nemon, atol=1e-9, rtol=0)
    assert deq.last_backward["converged"]
    assert set(g_deq) == {"T", "d", "B", "b", "C", "c"}
    for name, g in g_nemon.items():
        torch.testing.assert_close(g_deq[name], g, atol=1e-8, rtol=1e-6, msg=f"dL/d{name} differs")


def test_torchdeq_fixed_point_iter_stops_where_nemon_average_stops():
    # Same map, same start, same relative step over the batch: the same iteration count.
    model = make_model(seed=5, tol=1e-6)
    deq = bench.TorchDEQNEMON(model, "fixed_point_iter", tol=1e-6, max_iter=2000, layout="batch")
    u = torch.rand(32, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, stats = model.equilibrium(u)
        deq.equilibrium(u)
    assert stats.iterations > 3
    assert deq.last_forward == {"iterations": stats.iterations, "converged": True}


def test_torchdeq_solve_that_misses_tol_counts_every_iteration():
    model = make_model(seed=5)
    deq = bench.TorchDEQNEMON(model, "fixed_point_iter", tol=1e-12, max_iter=3)
    with torch.no_grad():
        deq.equilibrium(torch.rand(4, 12, dtype=torch.float64))
    assert deq.last_forward == {"iterations": 3, "converged": False}


def test_flops_per_sample_is_math8():
    # MATH 8: n = 100, m = 784, 15 + 12 iterations: about 0.85 Mflop per sample.
    assert bench.flops_per_sample(15, 12) == 2 * 100**2 * 27 + 4 * 100 * 784
    assert abs(bench.flops_per_sample(15, 12) / 1e6 - 0.85) < 0.01


def _row(impl, solver, sps, acc, tol=1e-4, frac=0.3):
    return {
        "impl": impl,
        "solver": solver,
        "layout": "batch",
        "tol": tol,
        "samples_per_s": sps,
        "test_acc": acc,
        "floor_fraction": frac,
    }


def test_compare_picks_torchdeqs_fastest_config_at_equal_accuracy():
    rows = [
        _row("nemon", "average", 1000.0, 0.850),
        _row("nemon", "anderson", 5000.0, 0.850),  # not nemon's default path: ignored
        _row("torchdeq", "fixed_point_iter", 150.0, 0.846),
        _row("torchdeq", "anderson", 400.0, 0.80),  # faster but 5 points worse: not eligible
    ]
    cmp = bench.compare(rows, 1e-4)
    assert cmp["torchdeq"]["solver"] == "fixed_point_iter" and cmp["equal_accuracy"]
    assert cmp["speedup"] == pytest.approx(1000 / 150)
    assert cmp["target_met"]  # 6.7x and 30 % of the floor
    rows[0]["floor_fraction"] = 0.2
    assert not bench.compare(rows, 1e-4)["target_met"]
    assert bench.compare(rows, 1e-2) is None


def test_main_runs_a_tiny_benchmark_and_its_rows_are_sane(capsys):
    argv = [
        "--samples",
        "300",
        "--test-samples",
        "200",
        "--tol",
        "1e-2",
        "--data",
        "synthetic",
        "--solvers",
        "average",
        "--torchdeq-solvers",
        "fixed_point_iter",
        "--no-progress",
    ]
    rows = bench.main(argv)
    out = capsys.readouterr().out
    assert [(r["impl"], r["solver"]) for r in rows] == [
        ("nemon", "average"),
        ("torchdeq", "fixed_point_iter"),
    ]
    for r in rows:
        assert r["samples"] == 300 and r["tol"] == 1e-2 and r["data"].startswith("synthetic")
        assert r["samples_per_s"] > 0 and r["seconds"] > 0
        assert 1 <= r["fwd_iters_mean"] <= r["fwd_iters_max"] <= 300
        assert 1 <= r["bwd_iters_mean"] <= r["bwd_iters_max"] <= 300
        assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["train_acc"] <= 1.0
        assert r["peak_rss_mib"] >= r["base_rss_mib"] > 0
        assert r["flops_per_sample"] == bench.flops_per_sample(
            r["fwd_iters_mean"], r["bwd_iters_mean"]
        )
        assert r["floor_s"] > 0 and 0 < r["floor_fraction"] == pytest.approx(
            r["floor_s"] / r["seconds"]
        )
    # same fixed point, same start, same stopping rule: (nearly) the same forward iterations;
    # the weights drift apart at the level of the backward tolerance, hence "nearly"
    assert abs(rows[0]["fwd_iters_mean"] - rows[1]["fwd_iters_mean"]) <= 1.0
    assert "tol 0.01: nemon average" in out and "GFLOP/s" in out and "synthetic" in out
