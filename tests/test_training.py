"""Training: CPU determinism, and that the loop learns and reports honest statistics."""

import pytest
import torch

import nemon
from nemon.training import evaluate_robustness, seed_everything, train


def toy_data(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.rand(3, 20, generator=g)
    labels = torch.arange(3).repeat(n // 3 + 1)[:n]
    x = (centers[labels] + 0.1 * torch.randn(n, 20, generator=g)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8), labels


def run(seed, lam=1e-3):
    seed_everything(seed)
    model = nemon.NEMON(20, 10, 3, gamma=0.5)
    x, y = toy_data()
    hist = train(model, x, y, epochs=2, batch_size=50, lr=3e-2, lam=lam, seed=seed, progress=False)
    return model, hist


def test_same_seed_gives_bit_identical_weights_on_cpu():
    m1, _ = run(3)
    m2, _ = run(3)
    for (n1, p1), (_, p2) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(p1, p2), n1
    m3, _ = run(4)
    assert not torch.equal(m1.T, m3.T)


def test_training_learns_and_reports_statistics():
    model, hist = run(0)
    assert len(hist) == 2
    last = hist[-1]
    assert last["train_acc"] > 0.9
    assert hist[1]["train_loss"] < hist[0]["train_loss"]
    assert last["mu"] <= 0.5 and last["lipschitz_bound"] > 0
    assert last["fwd_iters_mean"] >= 1 and last["bwd_iters_max"] >= last["bwd_iters_mean"]
    assert last["not_converged"] == 0


def test_lipschitz_regulariser_lowers_the_bound():
    _, free = run(0, lam=0.0)
    _, reg = run(0, lam=0.1)
    assert reg[-1]["lipschitz_bound"] < free[-1]["lipschitz_bound"]


def test_evaluate_robustness_rows_are_tidy_and_consistent():
    model, _ = run(0)
    x, y = toy_data(90, seed=1)
    rows = evaluate_robustness(model, x, y, [0.0, 0.1, 0.5])
    assert [(r["attack"], r["eps"]) for r in rows] == [
        (a, e) for e in (0.0, 0.1, 0.5) for a in ("inversion", "certified")
    ]
    by = {(r["attack"], r["eps"]): r["accuracy"] for r in rows}
    for eps in (0.0, 0.1, 0.5):
        assert 0 <= by["certified", eps] <= by["inversion", eps] <= 1


def test_summarise_history_aggregates_epochs():
    _, hist = run(0)
    s = nemon.training.summarise_history(hist)
    assert s["epochs"] == 2
    assert s["fwd_iters_max"] == max(h["fwd_iters_max"] for h in hist)
    assert s["fwd_iters_mean"] == (hist[0]["fwd_iters_mean"] + hist[1]["fwd_iters_mean"]) / 2
    assert s["final_train_loss"] == hist[-1]["train_loss"]


def test_solver_settings_are_temporary_and_validated():
    model = nemon.NEMON(4, 3, 2, gamma=0.5, tol=1e-2, max_iter=50)
    with model.solver_settings(tol=1e-8):
        assert (model.tol, model.max_iter) == (1e-8, 50)
        model(torch.rand(2, 4))
        assert model.last_stats.residual <= 1e-8
    assert (model.tol, model.max_iter) == (1e-2, 50)
    with pytest.raises(nemon.ConfigurationError, match="tol"):
        with model.solver_settings(tol=-1.0):
            pass


def test_provenance_records_versions_and_git_state(tmp_path):
    here = nemon.training.provenance(str(tmp_path), "cpu", 1)
    assert here["git_commit"] == "unknown" and here["git_dirty"] is None
    assert here["torch"] == torch.__version__ and here["nemon"] == nemon.__version__
