"""Training: objectives (MATH 5, 10), schedule, stacks, determinism, checkpoints, records."""

import math
import subprocess

import pytest
import torch

import nemon
from nemon.stack import ModelStack
from nemon.training import (
    Objective,
    Schedule,
    provenance,
    resolve_device,
    seed_everything,
    summarise_history,
    train,
    train_group,
    train_stack,
)


def toy_data(n=400, seed=0, m=20):
    """Three Gaussian clusters (fixed centres) in [0, 1]^m as uint8 images; ``seed``: the noise."""
    centers = torch.rand(3, m, generator=torch.Generator().manual_seed(12345))
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat(n // 3 + 1)[:n]
    x = (centers[labels] + 0.1 * torch.randn(n, m, generator=g)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8), labels


def new_model(seed, gamma=0.5, kind="nemon", **kw):
    seed_everything(seed)
    if kind == "mlp":
        return nemon.MLP(20, 10, 3)
    return nemon.NEMON(20, 10, 3, gamma=gamma, weighted=kind == "nemon", **kw)


def run(seed, lam=1e-3, epochs=2, **kw):
    model = new_model(seed)
    x, y = toy_data()
    hist = train(
        model, x, y, epochs=epochs, batch_size=50, lr=3e-2, lam=lam, seed=seed, progress=False, **kw
    )
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
    assert last["lr"] == 3e-2 and last["eps_t"] == 0.0


def test_lipschitz_regulariser_lowers_the_bound():
    _, free = run(0, lam=0.0)
    _, reg = run(0, lam=0.1)
    assert reg[-1]["lipschitz_bound"] < free[-1]["lipschitz_bound"]


def test_a_stack_member_trains_as_it_would_alone_up_to_rounding():
    # Members never interact; they differ from a lone run only where a vectorised kernel
    # (Adam, elementwise maps) treats an element in its tail loop instead of its SIMD body.
    x, y = toy_data()
    sched = Schedule(epochs=2, batch_size=50, lr=3e-2)
    lams = (0.0, 1e-2, 1e-1)
    members = [new_model(5, gamma=g) for g in (0.0, 0.5, 0.9)]
    stack = ModelStack(members)
    train_stack(
        stack, x, y, objective=Objective("lipschitz", lams), schedule=sched, seed=5, progress=False
    )
    for k, (g, lam) in enumerate(zip((0.0, 0.5, 0.9), lams, strict=True)):
        alone = ModelStack([new_model(5, gamma=g)])
        train_stack(
            alone,
            x,
            y,
            objective=Objective("lipschitz", (lam,)),
            schedule=sched,
            seed=5,
            progress=False,
        )
        together = dict(stack.member(k).named_parameters())
        for name, p in alone.member(0).named_parameters():
            torch.testing.assert_close(together[name], p, rtol=1e-4, atol=1e-5, msg=name)


def extended_run(extra, checkpoint=None, log=None):
    """8 epochs of which the last 4 at 1e-3: lam 1e-2 meets the convergence record, 0.3 and 1
    need one and three extra epochs (measured)."""
    x, y = toy_data()
    lams = (1e-2, 3e-1, 1.0)
    stack = ModelStack([new_model(11) for _ in lams])
    sched = Schedule(8, 50, 1e-2, (0.5,), 0.1, extra_epochs=extra)
    res = train_stack(
        stack,
        x,
        y,
        objective=Objective("lipschitz", lams),
        schedule=sched,
        seed=11,
        progress=False,
        checkpoint=checkpoint,
        **({"log": log} if log else {}),
    )
    return stack, res


def test_extra_epochs_train_on_only_the_members_that_missed_the_record():
    plain, base = extended_run(0)
    logs = []
    stack, res = extended_run(3, log=logs.append)
    record = [summarise_history(h)["training_converged"] for h in base.histories]
    assert True in record and False in record, "the toy setting must mix both cases"
    for k, converged in enumerate(record):
        hist = res.histories[k]
        same = [{**h, "seconds": hist[i]["seconds"]} for i, h in enumerate(base.histories[k])]
        assert hist[:8] == same
        if converged:  # frozen: bit-identical to the run without the extension
            assert len(hist) == 8
            assert torch.equal(stack.flat[k], plain.flat[k])
        else:
            assert 8 < len(hist) <= 11
            assert [h["epoch"] for h in hist] == list(range(1, len(hist) + 1))
            assert all(h["lr"] == pytest.approx(1e-3) for h in hist[8:])
            # it stopped because it met the record, or because the extra epochs were spent
            assert summarise_history(hist)["training_converged"] or len(hist) == 11
            for e in range(8, len(hist)):
                assert not summarise_history(hist[:e])["training_converged"]
            assert not torch.equal(stack.flat[k], plain.flat[k])
    assert any(
        m.startswith("extra epoch 1/3: ") and "missed the convergence record" in m for m in logs
    )


def test_resuming_inside_the_extra_epochs_is_bit_identical(tmp_path):
    straight, ref = extended_run(3)
    assert max(len(h) for h in ref.histories) > 9, "the toy setting must need two extra epochs"

    class Stop(Exception):
        pass

    def stop(msg):
        if msg.startswith("extra epoch 2/"):
            raise Stop

    ckpt = tmp_path / "group.checkpoint.pt"
    with pytest.raises(Stop):
        extended_run(3, checkpoint=ckpt, log=stop)
    resumed, res = extended_run(3, checkpoint=ckpt, log=lambda m: None)
    assert res.resumed_from == 9
    assert torch.equal(resumed.flat, straight.flat)
    assert [len(h) for h in res.histories] == [len(h) for h in ref.histories]


@pytest.mark.parametrize("kind", ["stack", "modules"])
def test_frozen_members_do_not_move_under_adam_momentum(kind):
    from nemon.training import ModuleStack, _freezer

    x, _ = toy_data(n=20)
    if kind == "stack":
        stack = ModelStack([new_model(s) for s in (1, 2)])
    else:
        seed_everything(1)
        stack = ModuleStack([nemon.MON(20, 10, 3, gamma=0.5, tol=1e-6) for _ in range(2)])
    before = [[p.detach().clone() for p in m.parameters()] for m in stack.members()]
    opt = torch.optim.Adam(stack.parameters(), lr=1e-2)
    u = stack.normalise(x.float() / 255)
    stack.logits(u).square().sum().backward()
    opt.step()  # momentum from here on, even with zero gradients
    moved = [[p.detach().clone() for p in m.parameters()] for m in stack.members()]
    restore = _freezer(stack, [0])
    opt.zero_grad()
    stack.logits(u).square().sum().backward()
    opt.step()
    restore()
    after = [[p.detach() for p in m.parameters()] for m in stack.members()]
    assert all(torch.equal(a, b) for a, b in zip(after[0], moved[0], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(after[1], moved[1], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(moved[0], before[0], strict=True))


def test_a_negative_or_fractional_extra_epochs_is_refused():
    for bad in (-1, 1.5, True):
        with pytest.raises(nemon.ConfigurationError, match="extra_epochs"):
            Schedule(epochs=2, batch_size=50, lr=1e-3, extra_epochs=bad)


def test_mlp_stack_trains_and_its_bound_is_the_a_zero_case():
    x, y = toy_data()
    model = new_model(0, kind="mlp")
    hist = train(model, x, y, epochs=2, batch_size=50, lr=3e-2, lam=1e-3, seed=0, progress=False)
    assert hist[-1]["train_acc"] > 0.9 and hist[-1]["fwd_iters_mean"] == 0
    B = model.B.detach()
    expected = model.C.detach().abs().sum(1).max() * B.abs().sum(1).max()
    assert float(model.lipschitz_bound().detach()) == pytest.approx(float(expected), rel=1e-6)


def test_lr_schedule_and_ramp():
    s = Schedule(epochs=40, batch_size=100, lr=1e-3, lr_milestones=(0.75,), lr_factor=0.2)
    assert s.lr_at(30) == 1e-3 and s.lr_at(31) == pytest.approx(2e-4)
    o = Objective("interval", (0.1,), kappa=0.75, warmup=0.25, ramp=0.25)
    assert o.progress(0.0) == 0 and o.progress(0.2499) == 0
    assert o.progress(0.375) == pytest.approx(0.5) and o.progress(0.5) == 1 and o.progress(1) == 1
    assert Objective("lipschitz", (0.1,)).progress(0.9) == 0


@pytest.mark.parametrize(
    "kw, key",
    [
        (dict(name="interval", weights=(1.5,)), "eps_t"),
        (dict(name="interval", weights=(0.1,), kappa=1.5), "kappa"),
        (dict(name="interval", weights=(0.1,), warmup=0.8, ramp=0.3), "ramp"),
        (dict(name="lipschitz", weights=(-1.0,)), "lam"),
        (dict(name="ibp", weights=(0.1,)), "objective"),
    ],
)
def test_bad_objectives_are_refused_naming_the_key(kw, key):
    with pytest.raises(nemon.ConfigurationError, match=key):
        Objective(**kw)


def interval_loss_parts(model, u, y, eps, kappa):
    stack = ModelStack([model])
    u_n = stack.normalise(u)
    ce = torch.nn.functional.cross_entropy(stack.logits(u_n)[0], y)
    lo = stack.normalise((u - eps).clamp(0, 1))
    hi = stack.normalise((u + eps).clamp(0, 1))
    z = stack.worst_case_logits(lo, hi, y)[0]
    return ce, z, stack


def test_kappa_zero_is_exactly_the_clean_loss():
    x, y = toy_data(100)
    base = new_model(1, tol=1e-10)
    h_clean = train(base, x, y, epochs=2, batch_size=50, lr=1e-2, seed=1, progress=False)
    other = new_model(1, tol=1e-10)
    h_int = train(
        other,
        x,
        y,
        epochs=2,
        batch_size=50,
        lr=1e-2,
        seed=1,
        progress=False,
        objective="interval",
        eps_t=0.1,
        kappa=0.0,
        warmup=0.0,
        ramp=0.5,
    )
    assert [h["train_loss"] for h in h_clean] == [h["train_loss"] for h in h_int]
    assert torch.equal(base.T, other.T) and torch.equal(base.B, other.B)


def test_worst_case_logits_at_eps_zero_are_the_clean_margins():
    model = new_model(2, gamma=0.9, tol=1e-12, max_iter=5000).double()
    x, y = toy_data(30)
    u = x.double() / 255
    _, z, stack = interval_loss_parts(model, u, y, 0.0, 0.75)
    logits = model(u)
    margins = logits.gather(1, y[:, None]) - logits
    torch.testing.assert_close(z, -margins, atol=1e-9, rtol=0)


def test_worst_case_logits_bound_the_logits_inside_the_box():
    model = new_model(3, gamma=0.5, tol=1e-12, max_iter=5000).double()
    x, y = toy_data(20)
    u = x.double() / 255
    _, z, _ = interval_loss_parts(model, u, y, 0.05, 0.75)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        v = (u + 0.05 * (2 * torch.rand(u.shape, generator=g, dtype=u.dtype) - 1)).clamp(0, 1)
        yv = model(v)
        diff = yv.gather(1, y[:, None]) - yv  # y_k - y_j >= m_kj = -z_j
        assert bool((diff >= -z - 1e-9).all())


def test_interval_training_raises_the_interval_certificate():
    x, y = toy_data(300)
    xt, yt = toy_data(150, seed=1)
    ut = xt.float() / 255
    common = dict(epochs=6, batch_size=50, lr=1e-2, seed=0, progress=False)
    plain = new_model(0, gamma=0.0)
    train(plain, x, y, **common)
    cert = new_model(0, gamma=0.0)
    train(cert, x, y, objective="interval", eps_t=0.2, kappa=0.75, warmup=0.0, ramp=0.5, **common)
    a = nemon.certified_accuracy(plain, ut, yt, 0.2, method="interval")
    b = nemon.certified_accuracy(cert, ut, yt, 0.2, method="interval")
    assert b > a + 0.3, (a, b)  # measured: 0.0 -> 0.51


def test_nan_loss_stops_naming_member_epoch_and_step(tmp_path):
    model = new_model(0)
    x, y = toy_data(40)
    with pytest.raises(nemon.NonFiniteError, match=r"epoch 1, step 1.*lower the learning rate"):
        train(model, x, y, epochs=1, batch_size=10, lr=1e-3, lam=1e308, seed=0, progress=False)


def test_summarise_history_records_convergence():
    _, hist = run(0, epochs=3)
    s = summarise_history(hist)
    assert s["epochs"] == 3
    assert s["fwd_iters_max"] == max(h["fwd_iters_max"] for h in hist)
    assert s["final_train_loss"] == hist[-1]["train_loss"]
    a, b = hist[-2]["train_loss"], hist[-1]["train_loss"]
    assert s["loss_rel_change"] == pytest.approx(abs(b - a) / a)
    flat = [dict(h, train_loss=1.0, lipschitz_bound=2.0) for h in hist]
    assert summarise_history(flat)["training_converged"] is True
    moving = [dict(h, train_loss=1.0 + 0.1 * i, lipschitz_bound=2.0) for i, h in enumerate(hist)]
    assert summarise_history(moving)["training_converged"] is False
    assert summarise_history(hist[:1])["training_converged"] is False


def test_resuming_from_a_checkpoint_is_bit_identical(tmp_path):
    x, y = toy_data()
    sched = Schedule(epochs=3, batch_size=50, lr=3e-2, lr_milestones=(0.5,))
    obj = Objective("lipschitz", (1e-3,))
    straight = ModelStack([new_model(7)])
    train_stack(straight, x, y, objective=obj, schedule=sched, seed=7, progress=False)
    ckpt = tmp_path / "group.checkpoint.pt"
    first = ModelStack([new_model(7)])
    short = Schedule(epochs=3, batch_size=50, lr=3e-2, lr_milestones=(0.5,))

    class Stop(Exception):
        pass

    def stop_after_two(msg):
        if msg.startswith("epoch 2/"):
            raise Stop

    with pytest.raises(Stop):
        train_stack(
            first,
            x,
            y,
            objective=obj,
            schedule=short,
            seed=7,
            progress=False,
            checkpoint=ckpt,
            log=stop_after_two,
        )
    logs = []
    resumed = ModelStack([new_model(7)])  # fresh weights: everything must come from the checkpoint
    res = train_stack(
        resumed,
        x,
        y,
        objective=obj,
        schedule=sched,
        seed=7,
        progress=False,
        checkpoint=ckpt,
        log=logs.append,
    )
    assert res.resumed_from == 1 and any("resuming" in m and "after epoch 1" in m for m in logs)
    for name, p in straight.named_parameters():
        assert torch.equal(p, getattr(resumed, name)), name
    assert [h["epoch"] for h in res.histories[0]] == [1, 2, 3]


def test_a_checkpoint_of_another_run_is_not_used(tmp_path):
    x, y = toy_data()
    ckpt = tmp_path / "c.pt"
    sched = Schedule(epochs=1, batch_size=50, lr=3e-2)
    train_stack(
        ModelStack([new_model(1)]),
        x,
        y,
        objective=Objective("lipschitz", (0.0,)),
        schedule=sched,
        seed=1,
        progress=False,
        checkpoint=ckpt,
    )
    logs = []
    res = train_stack(
        ModelStack([new_model(1)]),
        x,
        y,
        objective=Objective("lipschitz", (0.1,)),
        schedule=sched,
        seed=1,
        progress=False,
        checkpoint=ckpt,
        log=logs.append,
    )
    assert res.resumed_from == 0 and any("another run" in m for m in logs)


def test_a_damaged_checkpoint_is_an_error_naming_it(tmp_path):
    x, y = toy_data()
    ckpt = tmp_path / "c.pt"
    sched = Schedule(epochs=1, batch_size=50, lr=3e-2)
    obj = Objective("lipschitz", (0.0,))
    train_stack(
        ModelStack([new_model(1)]),
        x,
        y,
        objective=obj,
        schedule=sched,
        seed=1,
        progress=False,
        checkpoint=ckpt,
    )
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    with pytest.raises(nemon.CorruptFileError, match=r"c\.pt.*delete it to restart"):
        train_stack(
            ModelStack([new_model(1)]),
            x,
            y,
            objective=obj,
            schedule=sched,
            seed=1,
            progress=False,
            checkpoint=ckpt,
        )


def test_mon_trains_through_the_module_stack():
    x, y = toy_data()
    seed_everything(0)
    model = nemon.MON(20, 10, 3, gamma=0.5, tol=1e-6)
    hist = train(model, x, y, epochs=2, batch_size=50, lr=1e-2, seed=0, progress=False)
    assert hist[-1]["train_acc"] > 0.9 and hist[-1]["fwd_iters_mean"] > 1


def test_solver_settings_are_temporary_and_validated():
    model = nemon.NEMON(4, 3, 2, gamma=0.5, tol=1e-2, max_iter=50).double()
    with model.solving(tol=1e-10, stop="bound"):
        assert (model.tol, model.max_iter, model.stop) == (1e-10, 50, "bound")
        model(torch.rand(2, 4, dtype=torch.float64))
        st = model.last_forward_stats
        assert st.residual * st.rho / (1 - st.rho) <= 1e-10
    assert (model.tol, model.max_iter, model.stop) == (1e-2, 50, "step")
    with pytest.raises(nemon.ConfigurationError, match="tol"):
        with model.solving(tol=-1.0):
            pass
    with pytest.raises(nemon.ConfigurationError, match="stop"):
        with model.solving(stop="never"):
            pass


def test_provenance_outside_and_inside_a_git_checkout(tmp_path):
    here = provenance(str(tmp_path), "cpu", 1)
    assert here["git_commit"] == "unknown" and here["git_dirty"] is None
    assert here["torch"] == torch.__version__ and here["nemon"] == nemon.__version__

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@example.invalid")
    git("config", "user.name", "t")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "r.csv").write_text("a\n")
    git("add", ".")
    git("commit", "-q", "-m", "c")
    clean = provenance(str(tmp_path), "cpu", 1)
    assert len(clean["git_commit"]) == 40 and clean["git_dirty"] is False
    (tmp_path / "results" / "r.csv").write_text("b\n")  # results change while the workflow runs
    assert provenance(str(tmp_path), "cpu", 1)["git_dirty"] is False
    (tmp_path / "src" / "a.py").write_text("x = 2\n")  # the code does not
    assert provenance(str(tmp_path), "cpu", 1)["git_dirty"] is True
    assert math.isfinite(1.0)


def test_a_diverging_run_names_epoch_and_step_and_keeps_its_last_good_checkpoint(
    tmp_path, monkeypatch
):
    x, y = toy_data(200)  # 4 steps per epoch at batch 50
    real = ModelStack.lipschitz_loss
    calls = {"n": 0}

    def diverging(self, u_n, labels, lam):
        loss, ce, logits = real(self, u_n, labels, lam)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 6 else loss), ce, logits

    monkeypatch.setattr(ModelStack, "lipschitz_loss", diverging)
    ckpt = tmp_path / "group.checkpoint.pt"
    with pytest.raises(nemon.NonFiniteError, match=r"epoch 2, step 2.*last good checkpoint"):
        train_stack(
            ModelStack([new_model(0)]),
            x,
            y,
            objective=Objective("lipschitz", (0.0,)),
            schedule=Schedule(3, 50, 1e-2),
            seed=0,
            progress=False,
            checkpoint=ckpt,
        )
    state = nemon.contracts.load_checkpoint(ckpt)
    assert state["epoch"] == 1 and len(state["histories"][0]) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU exists")
def test_a_job_given_gpus_that_torch_cannot_see_is_refused_naming_them():
    assert resolve_device("auto").type == "cpu"
    assert resolve_device("cpu", gpus=0).type == "cpu"
    for device in ("auto", "cpu"):
        with pytest.raises(nemon.ConfigurationError, match="given 1 GPU"):
            resolve_device(device, gpus=1)


# --- train_group: one training job of the workflow, from its configuration ------------------
def toy_set():
    """What train_group reads of a data set (nemon.data.Dataset's fields), on the toy data."""
    from types import SimpleNamespace

    x, y = toy_data(300)
    tx, ty = toy_data(60, seed=1)
    return SimpleNamespace(
        train_x=x, train_y=y, test_x=tx, test_y=ty, mean=0.5, std=0.3, source="toy"
    )


def group_training(epochs=4, **schedule):
    """An experiment's training settings (nemon.config.experiment_training's shape)."""
    return {
        "epochs": epochs,
        "extra_epochs": 0,
        "batch_size": 50,
        "solver": "jacobi",
        "stop": "bound",
        "tol": 1e-4,
        "max_iter": 500,
        "schedule": {"lr": 1e-2, "lr_milestones": [0.5], "lr_factor": 0.1, **schedule},
    }


def test_train_group_builds_every_member_at_the_experiments_width_and_schedule():
    weights = [0.0, 1e-2]
    result = train_group(
        "nemon",
        "lipschitz",
        weights,
        gamma=0.5,
        seed=0,
        hidden=7,
        training=group_training(epochs=4),
        data=toy_set(),
        log=lambda s: None,
        progress=False,
    )
    assert [m.name for m in result.members] == ["lam=0", "lam=0.01"]  # OBJECTIVE_AXIS's names
    assert result.group_record() == {
        "members": ["lam=0", "lam=0.01"],
        "size": 2,
        "resumed_from_epoch": 0,
    }
    for member, w in zip(result.members, weights, strict=True):
        assert member.weight == w
        assert member.model.constructor_kwargs()["hidden_features"] == 7  # reached build_model
        assert [h["lr"] for h in member.history] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3])
        assert member.record["epochs"] == 4
        with torch.no_grad():
            assert member.record["lipschitz_bound"] == float(member.model.lipschitz_bound())
    # the same initial weights and data order: lam = 0 is the plain model, lam > 0 lowers the bound
    plain, regularised = (m.record["lipschitz_bound"] for m in result.members)
    assert regularised < plain


def test_train_group_takes_the_interval_schedule_from_its_settings():
    training = group_training(epochs=4, kappa=0.5, warmup=0.25, ramp=0.5)
    result = train_group(
        "mlp",
        "interval",
        [0.1],
        gamma=0.0,
        seed=1,
        hidden=5,
        training=training,
        data=toy_set(),
        log=lambda s: None,
        progress=False,
    )
    (member,) = result.members
    assert member.name == "eps_t=0.1"
    assert result.objective.kappa == 0.5 and result.objective.ramp == 0.5
    hist = member.history
    assert hist[0]["kappa"] == 0.0  # clean during the warmup (the first epoch)
    assert 0 < hist[1]["kappa"] < 0.5 and hist[-1]["kappa"] == 0.5
    assert hist[-1]["eps_t"] == pytest.approx(0.1)
    assert member.model.constructor_kwargs()["hidden_features"] == 5


def test_train_group_is_train_stack_on_the_members_it_builds():
    """The group is exactly the documented recipe: every member seeded alike, one stack."""
    data = toy_set()
    training = group_training(epochs=2)
    result = train_group(
        "nemon",
        "lipschitz",
        [0.0, 1e-3],
        gamma=0.5,
        seed=3,
        hidden=6,
        training=training,
        data=data,
        log=lambda s: None,
        progress=False,
    )
    solver = {k: training[k] for k in ("solver", "tol", "max_iter", "stop")}
    members = []
    for _ in range(2):
        seed_everything(3)
        members.append(
            nemon.contracts.build_model(
                "nemon",
                in_features=20,
                hidden=6,
                out_features=10,
                gamma=0.5,
                input_mean=0.5,
                input_std=0.3,
                solver=solver,
            )
        )
    stack = ModelStack(members)
    train_stack(
        stack,
        data.train_x,
        data.train_y,
        objective=Objective("lipschitz", (0.0, 1e-3)),
        schedule=Schedule(2, 50, 1e-2, (0.5,), 0.1, 0),
        seed=3,
        progress=False,
        log=lambda s: None,
    )
    for k, member in enumerate(result.members):
        by_hand = stack.member(k)
        for (n, p), (_, q) in zip(
            member.model.state_dict().items(), by_hand.state_dict().items(), strict=True
        ):
            assert torch.equal(p, q), (k, n)
