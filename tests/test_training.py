"""Training: CPU determinism, and that the loop learns and reports honest statistics."""

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
