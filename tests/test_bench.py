"""benchmarks/: its rows time train_stack, torchdeq solves the same problem, the report's
arithmetic (MATH 3, 4, 8) uses rows measured in the same run, and the grid's flop floor is
MATH 8 summed over the committed records."""

import json
import re
import sys

import pytest
import torch
from conftest import make_model

from benchmarks import cli, config, datasets, floor, report, runs, timing
from benchmarks import torchdeq_adapter as adapter
from benchmarks.config import RunConfig
from nemon import NEMON, ConfigurationError, ModelStack
from nemon.solvers import DEFAULT_SOLVER, SOLVERS
from nemon.training import Objective, Schedule, to_pixels, train_stack

needs_torchdeq = pytest.mark.skipif(
    not adapter.torchdeq_available(), reason="torchdeq is not installed (pip install -e .[bench])"
)
SAMPLES, TEST_SAMPLES = 300, 100
TINY = [
    "--samples",
    str(SAMPLES),
    "--test-samples",
    str(TEST_SAMPLES),
    "--tol",
    "1e-2",
    "--data",
    "synthetic",
    "--no-progress",
    "--matmul-seconds",
    "0.02",
    "--repeats",
    "1",
]
SETTINGS = dict(samples=SAMPLES, test_samples=TEST_SAMPLES, data="synthetic", progress=False)


@pytest.fixture(scope="module")
def tiny_data():
    return datasets.load_bench_data("synthetic", SAMPLES, TEST_SAMPLES, seed=0)


# --- torchdeq solves nemon's problem ------------------------------------------------------------
def _grads(model):
    return {k: p.grad.detach().clone() for k, p in model.named_parameters()}


def _loss_and_grads(net, model, u, weights):
    model.zero_grad(set_to_none=True)
    logits = net(u)
    (logits * weights).sum().backward()
    return logits.detach(), _grads(model)


@needs_torchdeq
@pytest.mark.parametrize("layout", config.LAYOUTS)
@pytest.mark.parametrize(
    ("nemon_solver", "deq_solver"), [("average", "fixed_point_iter"), ("anderson", "anderson")]
)
def test_torchdeq_wrapper_has_nemons_equilibrium_and_gradients(nemon_solver, deq_solver, layout):
    # float64, tol 1e-12, weighted with d != 0, and a non-trivial input normalisation
    model = make_model(seed=3, solver=nemon_solver, input_mean=0.3, input_std=0.2)
    deq = adapter.TorchDEQNEMON(model, deq_solver, tol=1e-12, max_iter=2000, layout=layout)
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


@needs_torchdeq
def test_torchdeq_fixed_point_iter_stops_where_nemon_average_stops():
    # Same map, same start, same relative step over the batch: the same iteration count.
    model = make_model(seed=5, tol=1e-6, solver="average")
    deq = adapter.TorchDEQNEMON(model, "fixed_point_iter", tol=1e-6, max_iter=2000)
    u = torch.rand(32, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, stats = model.equilibrium(u)
        deq.equilibrium(u)
    assert stats.iterations > 3
    assert deq.last_forward == {"iterations": stats.iterations, "converged": True}


@needs_torchdeq
def test_torchdeq_solve_that_misses_tol_counts_every_iteration():
    model = make_model(seed=5)
    deq = adapter.TorchDEQNEMON(model, "fixed_point_iter", tol=1e-12, max_iter=3)
    with torch.no_grad():
        deq.equilibrium(torch.rand(4, 12, dtype=torch.float64))
    assert deq.last_forward == {"iterations": 3, "converged": False}


# --- the rows time the workflow's loop ----------------------------------------------------------
def test_nemon_rows_train_exactly_what_train_stack_trains(tiny_data):
    lams = (0.0, 1e-3)
    cfg = RunConfig("nemon", "average", 1e-2, lams=lams, **SETTINGS)
    X = to_pixels(tiny_data.train_x)
    stack, result = runs.train_nemon(cfg, X, tiny_data.train_y, tiny_data.mean, tiny_data.std)

    members = []
    for _ in lams:  # what scripts/train.py does: every member from the same seed
        torch.manual_seed(0)
        members.append(
            NEMON(
                784,
                100,
                10,
                gamma=0.0,
                input_mean=tiny_data.mean,
                input_std=tiny_data.std,
                solver="average",
                tol=1e-2,
            )
        )
    direct = ModelStack(members)
    direct_result = train_stack(
        direct,
        tiny_data.train_x,  # uint8, converted by train_stack itself
        tiny_data.train_y,
        objective=Objective("lipschitz", lams),
        schedule=Schedule(epochs=1, batch_size=100, lr=1e-3),
        seed=0,
        progress=False,
        log=lambda _line: None,
    )
    trained, reference = stack.members(), direct.members()  # NEMONs with the stacked weights
    assert len(trained) == len(reference) == len(lams)
    for k, (ours, theirs) in enumerate(zip(trained, reference, strict=True)):
        mine = dict(ours.named_parameters())
        assert set(mine) == {"T", "d", "B", "b", "C", "c"}
        for name, p in theirs.named_parameters():
            assert torch.equal(mine[name], p), f"member {k}: {name} differs from train_stack's"
    for ours, theirs in zip(result.histories, direct_result.histories, strict=True):
        strip = [{k: v for k, v in h.items() if k != "seconds"} for h in ours]
        assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in theirs]

    # and the timed row reports that loop's own statistics
    one = RunConfig("nemon", "average", 1e-2, **SETTINGS)
    solo = runs.train_nemon(one, X, tiny_data.train_y, tiny_data.mean, tiny_data.std)[1]
    (epoch,) = solo.histories[0]
    row = runs.run_config(one, tiny_data)
    for key in ("fwd_iters_mean", "bwd_iters_mean", "not_converged", "train_loss", "train_acc"):
        assert row[key] == epoch[key], key


@needs_torchdeq
def test_nemon_and_torchdeq_start_from_the_same_weights_and_see_the_same_batches(
    monkeypatch, tiny_data
):
    seen = {"nemon": [], "torchdeq": []}
    start = {}
    loss, forward = ModelStack.lipschitz_loss, adapter.TorchDEQNEMON.forward
    stacks = []

    def spy_loss(self, u_n, labels, lam):  # train_stack calls it once per step (normalised batch)
        if "nemon" not in start:
            start["nemon"] = {n: p.detach().clone() for n, p in self.member(0).named_parameters()}
            stacks.append(self)
        seen["nemon"].append(u_n.clone())
        return loss(self, u_n, labels, lam)

    def spy_forward(self, u):
        start.setdefault(
            "torchdeq", {n: p.detach().clone() for n, p in self.model.named_parameters()}
        )
        seen["torchdeq"].append(u.clone())
        return forward(self, u)

    monkeypatch.setattr(ModelStack, "lipschitz_loss", spy_loss)
    monkeypatch.setattr(adapter.TorchDEQNEMON, "forward", spy_forward)
    X = to_pixels(tiny_data.train_x)
    args = (X, tiny_data.train_y, tiny_data.mean, tiny_data.std)
    runs.train_nemon(RunConfig("nemon", "average", 1e-2, seed=7, **SETTINGS), *args)
    runs.train_torchdeq(RunConfig("torchdeq", "fixed_point_iter", 1e-2, seed=7, **SETTINGS), *args)

    assert set(start["nemon"]) == set(start["torchdeq"]) == {"T", "d", "B", "b", "C", "c"}
    for name, p in start["nemon"].items():
        assert torch.equal(p, start["torchdeq"][name]), f"initial {name} differs"
    assert len(seen["nemon"]) == len(seen["torchdeq"]) == SAMPLES // 100
    for a, b in zip(seen["nemon"], seen["torchdeq"], strict=True):
        assert torch.equal(a, stacks[0].normalise(b))
    order = torch.cat(seen["torchdeq"])
    assert torch.equal(order, X[adapter.epoch_order(SAMPLES, 7)])  # seeded, not the file order
    assert not torch.equal(order, X)


# --- the benchmark and its report ---------------------------------------------------------------
@needs_torchdeq
def test_benchmark_has_a_row_per_configuration_and_ratios_from_the_same_run(capsys):
    returned = []

    def runner(cfg):
        returned.append(runs.run_config(cfg))
        return returned[-1]

    solver = DEFAULT_SOLVER  # the comparison's nemon side, and the stack's solver
    argv = [*TINY, "--solvers", solver, "--torchdeq-solvers", "fixed_point_iter", "--markdown"]
    result = cli.main([*argv, "--repeats", "2"], runner=runner)
    out = capsys.readouterr().out
    labels = [
        f"nemon {solver}/step tol=0.01",
        f"nemon stack K=8 {solver}/step tol=0.01",
        "torchdeq fixed_point_iter/step tol=0.01",
    ]
    assert [r["label"] for r in result.rows] == labels
    assert [r["label"] for r in returned] == labels * 2  # in rounds
    for i, row in enumerate(result.rows):  # the faster of two runs (the lower median), its range
        first, second = returned[i], returned[i + 3]
        assert row["seconds"] == min(first["seconds"], second["seconds"])
        assert (row["seconds_min"], row["seconds_max"]) == tuple(
            sorted((first["seconds"], second["seconds"]))
        )
        assert row["runs"] == 2 and row["fwd_iters_mean"] == first["fwd_iters_mean"]
    table = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + len(result.rows)  # header + one line per configuration
    assert table[2].startswith(f"| nemon stack K=8 | {solver} | step | 0.01 |")
    r0 = result.rows[0]
    assert f"| {r0['seconds_min']:.2f}-{r0['seconds_max']:.2f} |" in table[1]
    assert "the run of median epoch time of 2 run(s)" in out

    (cmp,) = result.comparisons
    nemon_row, deq_row = result.rows[0], result.rows[2]
    assert cmp.nemon is nemon_row and cmp.torchdeq is deq_row
    assert cmp.speedup == nemon_row["samples_per_s"] / deq_row["samples_per_s"]
    assert cmp.floor_fraction == nemon_row["floor_s"] / nemon_row["seconds"]
    assert f"speed-up {cmp.speedup:.2f}x" in out
    fastest = deq_row["seconds_min"] / nemon_row["seconds_min"]  # same samples, one model each
    shown = re.search(r"\(median runs; ([0-9.]+)x from each side's fastest run\)", out)
    assert float(shown.group(1)) == pytest.approx(fastest, abs=0.006)
    assert "target" not in out.lower() and "MET" not in out
    for r in result.rows:
        assert r["samples"] == SAMPLES and r["data"].startswith("synthetic")
        assert 1 <= r["fwd_iters_mean"] <= r["fwd_iters_max"] <= 300
        assert 1 <= r["bwd_iters_mean"] <= r["bwd_iters_max"] <= 300
        assert 0.0 <= r["test_acc"] <= 1.0 and r["seconds"] > 0
        assert r["floor_s"] == pytest.approx(
            timing.flops_per_sample(r["fwd_iters_mean"], r["bwd_iters_mean"])
            * SAMPLES
            * r["models"]
            / (result.gflops_model * 1e9)
        )
    # the same fixed point: Jacobi's iterations never more than the averaged map's
    assert nemon_row["fwd_iters_mean"] <= deq_row["fwd_iters_mean"]


def test_stack_row_trains_eight_models_and_reports_throughput_per_model(tiny_data):
    lams = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    row = runs.run_config(RunConfig("nemon", "average", 1e-2, lams=lams, **SETTINGS), tiny_data)
    assert row["models"] == 8 and row["lams"] == list(lams)
    assert row["samples_per_s"] == 8 * SAMPLES / row["seconds"]
    assert len(row["test_acc_members"]) == 8
    assert row["test_acc"] == pytest.approx(sum(row["test_acc_members"]) / 8)
    single = {**row, "models": 1, "lams": [0.0], "samples_per_s": row["samples_per_s"] / 2}
    single.update(label="nemon average/step tol=0.01")
    (line,) = report.stack_lines([single, row], 1e-2, None)
    assert "nemon stack K=8" in line and "samples/s per model" in line
    assert "2.00x one model" in line


def test_without_torchdeq_the_benchmark_says_so_once_and_runs_nemon_rows(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchdeq", None)  # import torchdeq now raises ImportError
    assert not adapter.torchdeq_available()
    result = cli.main([*TINY, "--solvers", "average", "--no-stack"], runner=runs.run_config)
    captured = capsys.readouterr()
    assert captured.err.count(adapter.MISSING_TORCHDEQ) == 1
    assert "torchdeq is not installed (pip install -e .[bench]): running nemon rows only" in (
        captured.err
    )
    assert [r["impl"] for r in result.rows] == ["nemon"] and not result.comparisons
    assert "speed-up" not in captured.out and "torchdeq not run" in captured.out
    with pytest.raises(ConfigurationError, match="pip install"):
        adapter.TorchDEQNEMON(make_model(), "anderson", tol=1e-2, max_iter=10)


def test_no_torchdeq_flag_runs_nemon_rows_without_the_warning(capsys):
    result = cli.main(
        [*TINY, "--solvers", "average", "--no-stack", "--no-torchdeq"], runs.run_config
    )
    assert [r["impl"] for r in result.rows] == ["nemon"]
    assert adapter.MISSING_TORCHDEQ not in capsys.readouterr().err


def test_every_solver_of_the_package_gets_its_rows_a_newly_added_one_too(monkeypatch):
    # the choices are nemon.solvers.SOLVERS as it is when the parser is built, not a copy
    monkeypatch.setitem(SOLVERS, "added", SOLVERS["average"])
    args = cli.build_parser().parse_args([*TINY, "--no-stack", "--stop", "step", "bound"])
    assert args.solvers == list(SOLVERS) and "added" in args.solvers
    rows = [(c.impl, c.solver, c.stop) for c in cli.make_configs(args, "cpu", False)]
    assert rows == [
        ("nemon", s, stop)
        for s in SOLVERS
        for stop in ("step", "bound")
        if (s, stop) != ("picard", "bound")  # no contraction factor, so no error bound
    ]
    assert cli.build_parser().parse_args(["--solvers", "added"]).solvers == ["added"]


BAD_ARGS = [
    (["--samples", "50"], "--samples must be at least one batch (100), got 50"),
    (["--test-samples", "0"], "--test-samples must be >= 1"),
    (["--tol", "0"], "--tol values must be positive finite numbers, got [0.0]"),
    (["--tol", "nan"], "--tol values must be positive finite numbers"),
    (["--max-iter", "0"], "--max-iter must be >= 1"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--threads", "-1"], "--threads must be >= 0"),
    (["--gamma", "1"], "--gamma must be a finite number below 1"),
    (["--stack-lams", "0"], "--stack-lams needs at least two values"),
    (["--stack-lams", "0", "-1"], "--stack-lams must be finite numbers >= 0, got [-1.0]"),
    (["--equal-accuracy", "-0.1"], "--equal-accuracy must lie in [0, 1]"),
    (["--matmul-seconds", "0"], "--matmul-seconds must be positive"),
    (["--solvers", "newton"], "invalid choice: 'newton'"),
    (["--stop", "residual"], "invalid choice: 'residual'"),
    (["--samples", "many"], "invalid int value: 'many'"),
    (["--data", "fashion-mnist", "--samples", "70000"], "Fashion-MNIST has 60000 training"),
    (
        ["--solvers", "picard", "--stop", "bound", "--no-stack", "--no-torchdeq"],
        "nothing to run: picard has no stop='bound' rows",
    ),
]


@pytest.mark.parametrize(("extra", "message"), BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_arguments_stop_before_anything_runs_with_a_clear_error(extra, message, capsys):
    def runner(cfg):
        raise AssertionError("no configuration may run")

    with pytest.raises(SystemExit) as exc:
        cli.main([*TINY, *extra], runner=runner)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: python -m benchmarks" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available: --device cuda is valid")
def test_device_cuda_without_cuda_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        cli.main([*TINY, "--device", "cuda"], runner=runs.run_config)
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err


def test_run_configs_reject_combinations_that_cannot_be_compared():
    with pytest.raises(ConfigurationError, match="torchdeq stops on the relative step only"):
        RunConfig("torchdeq", "anderson", 1e-2, stop="bound")
    with pytest.raises(ConfigurationError, match="trains one model"):
        RunConfig("torchdeq", "anderson", 1e-2, lams=(0.0, 0.1))
    with pytest.raises(ConfigurationError, match="unknown torchdeq solver 'average'"):
        RunConfig("torchdeq", "average", 1e-2)
    with pytest.raises(ConfigurationError, match="picard"):
        RunConfig("nemon", "picard", 1e-2, stop="bound")
    with pytest.raises(ConfigurationError, match=r"unknown RunConfig field\(s\) \['tolerance'\]"):
        RunConfig.from_json('{"impl": "nemon", "solver": "average", "tolerance": 0.01}')
    cfg = RunConfig("nemon", "average", 1e-4, stop="bound", lams=(0.0, 0.1), **SETTINGS)
    assert RunConfig.from_json(cfg.to_json()) == cfg


def test_help_shows_every_default_and_cites_no_internal_constant():
    parser = cli.build_parser()
    text = parser.format_help()
    options = [a for a in parser._actions if a.option_strings != ["-h", "--help"]]
    assert text.count("(default:") == len(options)
    for a in options:
        assert a.option_strings[0] in text
    assert "(default: [0.01, 0.0001])" in text and "(default: 60000)" in text
    modules = (cli, config, datasets, report, runs, timing, adapter)
    constants = {
        name
        for m in modules
        for name, value in vars(m).items()
        if re.fullmatch(r"[A-Z][A-Z0-9_]{3,}", name) and not callable(value)  # not NEMON
    }
    assert constants  # the check below looks for something
    cited = sorted(c for c in constants if re.search(rf"\b{c}\b", text))
    assert not cited, f"--help cites internal constants {cited}"


# --- the flop floor (MATH 8) ----------------------------------------------------------------
def test_flops_per_sample_is_math8():
    # MATH 8: n = 100, m = 784, 15 + 12 iterations: about 0.85 Mflop per sample.
    assert timing.flops_per_sample(15, 12) == 2 * 100**2 * 27 + 4 * 100 * 784
    assert abs(timing.flops_per_sample(15, 12) / 1e6 - 0.85) < 0.01
    assert timing.flops_per_sample(3, 2, n=10, m=20) == 2 * 10**2 * 5 + 4 * 10 * 20


def test_matmul_rate_is_measured_with_torch_utils_benchmark_at_the_given_shape(monkeypatch):
    made = {}

    class FakeMeasurement:
        times = [3e-4, 1e-4, 2e-4]  # seconds per product, per block

    class FakeTimer:
        def __init__(self, stmt, globals, num_threads, label):
            made.update(stmt=stmt, shapes=[tuple(globals[k].shape) for k in "ab"])
            made["threads"] = num_threads

        def blocked_autorange(self, min_run_time):
            made["min_run_time"] = min_run_time
            return FakeMeasurement()

    monkeypatch.setattr(timing.tbench, "Timer", FakeTimer)
    rate = timing.matmul_gflops(100, 784, 10, torch.device("cpu"), threads=1, min_run_time=0.3)
    assert rate == pytest.approx(2 * 100 * 784 * 10 / 1e-4 / 1e9)  # the fastest block counts
    assert made == {
        "stmt": "torch.mm(a, b, out=out)",
        "shapes": [(100, 784), (784, 10)],
        "threads": 1,
        "min_run_time": 0.3,
    }
    monkeypatch.undo()
    real = timing.matmul_gflops(100, 100, 100, torch.device("cpu"), min_run_time=0.01)
    assert 0.01 < real < 1e5


def test_floor_and_comparison_use_only_the_rows_given():
    def row(impl, solver, sps, acc, *, stop="step", models=1, tol=1e-4):
        return dict(
            impl=impl,
            solver=solver,
            stop=stop,
            tol=tol,
            models=models,
            samples=1000,
            seconds=1000 * models / sps,
            samples_per_s=sps,
            test_acc=acc,
            flops_per_sample=timing.flops_per_sample(10, 8),
        )

    rows = [
        row("nemon", DEFAULT_SOLVER, 1000.0, 0.850),
        row("nemon", DEFAULT_SOLVER, 3000.0, 0.850, stop="bound"),  # another rule: not compared
        row("nemon", DEFAULT_SOLVER, 4000.0, 0.850, models=8),  # a stack: not compared
        row("nemon", "anderson", 5000.0, 0.850),  # not nemon's default path
        row("torchdeq", "fixed_point_iter", 150.0, 0.846),
        row("torchdeq", "anderson", 400.0, 0.80),  # faster but 5 points worse
        row("torchdeq", "anderson", 900.0, 0.85, stop="step/sample"),  # a stricter rule
    ]
    report.add_floor(rows, gflops_model=2.0, gflops_large=4.0)
    s = rows[2]
    assert s["floor_s"] == timing.flops_per_sample(10, 8) * 1000 * 8 / 2e9
    assert s["floor_large_s"] == s["floor_s"] / 2
    assert s["floor_fraction"] == s["floor_s"] / s["seconds"]

    cmp = report.compare(rows, 1e-4, window=0.005)
    assert cmp.nemon is rows[0] and cmp.torchdeq is rows[4] and cmp.equal_accuracy
    assert cmp.speedup == 1000 / 150 and cmp.floor_fraction == rows[0]["floor_fraction"]
    assert report.compare(rows, 1e-2, window=0.005) is None
    wide = report.compare(rows, 1e-4, window=0.1)
    assert wide.torchdeq is rows[5] and wide.speedup == 1000 / 400
    line = report.format_comparison(cmp, 0.005)
    assert "speed-up 6.67x" in line and "within 0.5 points" in line


def test_median_run_keeps_the_median_run_and_the_range():
    runs_ = [{"seconds": s, "tag": t} for s, t in ((3.0, "a"), (1.0, "b"), (2.0, "c"))]
    row = report.median_run(runs_)
    assert row["tag"] == "c" and row["seconds"] == 2.0 and row["runs"] == 3
    assert (row["seconds_min"], row["seconds_max"]) == (1.0, 3.0)
    assert "runs" not in runs_[2]  # a copy
    with pytest.raises(ValueError, match="no runs"):
        report.median_run([])


# --- the real child process ---------------------------------------------------------------------
def test_each_configuration_runs_in_its_own_process_with_its_own_memory():
    cfg = RunConfig(
        "nemon", "average", 1e-2, samples=200, test_samples=50, data="synthetic", progress=False
    )
    row = runs.run_isolated(cfg)
    assert row["label"] == "nemon average/step tol=0.01" and row["samples"] == 200
    assert row["peak_rss_mib"] >= row["base_rss_mib"] > 0
    assert row["peak_rss_since_start"] is False  # the peak is the training's, not the data's
    assert row["threads"] == 1 and row["device"] == "cpu" and row["cuda_peak_mib"] is None


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device here: the --device cuda path runs where a GPU exists",
)
def test_cuda_rows_synchronise_and_report_the_device_peak(tiny_data):
    row = runs.run_config(RunConfig("nemon", "average", 1e-2, device="cuda", **SETTINGS), tiny_data)
    assert row["device"].startswith("cuda") and row["cuda_peak_mib"] > 0
    assert row["seconds"] > 0 and row["samples"] == SAMPLES


# --- the grid's flop floor (python -m benchmarks.floor) ----------------------------------------
def _metrics(tmp_path, model, objective, gamma, lam, seed, history, seconds, dataset="mnist-5k"):
    experiment = f"{model}-{objective}"
    folder = tmp_path / "models" / experiment / f"g{gamma}_l{lam}_s{seed}"
    folder.mkdir(parents=True)
    keys = dict(
        dataset=dataset,
        experiment=experiment,
        model=model,
        objective=objective,
        gamma=gamma,
        seed=seed,
    )
    hist = [{"fwd_iters_mean": f, "bwd_iters_mean": b} for f, b in history]
    (folder / "metrics.json").write_text(
        json.dumps({**keys, "lam": lam, "history": hist, "train_seconds": seconds})
    )


def test_grid_floor_is_math8_summed_over_epochs_members_and_seeds(tmp_path, capsys):
    # one job of two members (3 and 2 epochs), a second seed, and an uncovered objective
    _metrics(tmp_path, "nemon", "lipschitz", 0.9, 0.0, 0, [(10, 8), (20, 18), (30, 28)], 50.0)
    _metrics(tmp_path, "nemon", "lipschitz", 0.9, 0.1, 0, [(12, 9), (14, 11)], 50.0)
    _metrics(tmp_path, "nemon", "lipschitz", 0.9, 0.0, 1, [(5, 5)], 20.0)
    _metrics(tmp_path, "nemon", "interval", 0.0, 0.0, 0, [(7, 7)], 30.0)
    jobs = floor.grid_flops(tmp_path)
    f = timing.flops_per_sample
    j0 = jobs[(jobs.objective == "lipschitz") & (jobs.seed == 0)].iloc[0]
    want = (f(10, 8) + f(20, 18) + f(30, 28) + f(12, 9) + f(14, 11)) * 4000  # mnist-5k: 4,000
    assert j0.flops == pytest.approx(want, rel=1e-12)
    assert (j0.members, j0.epochs, j0.train_seconds) == (2, 5, 50.0)  # the job's time, once
    assert jobs[jobs.objective == "interval"].flops.isna().all()
    by, t = floor.summarise(jobs, gflops=2.0, cores=2)
    row = by[by.objective == "lipschitz"].iloc[0]
    floor_min = (want + f(5, 5) * 4000) / 2e9 / 60
    assert row.jobs == 2 and row.floor_min == pytest.approx(floor_min)
    assert row.cpu_min == pytest.approx(70 / 60)
    assert row.pct_of_floor == pytest.approx(100 * floor_min / (70 / 60))
    assert t["covered_models"] == 3 and t["models"] == 4
    assert t["covered_floor_wall_min"] == pytest.approx(floor_min / 2)
    assert t["cpu_min"] == pytest.approx(100 / 60)
    # the command line: a given rate is used as given, nothing is measured
    assert floor.main([str(tmp_path), "--gflops", "2", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "2.0 GFLOP/s" in out and "given" in out and "| nemon" in out


def test_grid_floor_refuses_what_it_cannot_count(tmp_path):
    with pytest.raises(ConfigurationError, match="no models/<experiment>/<model>/metrics.json"):
        floor.grid_flops(tmp_path)
    _metrics(tmp_path, "nemon", "lipschitz", 0.0, 0.0, 0, [(1, 1)], 1.0, dataset="cifar")
    with pytest.raises(ConfigurationError, match="unknown data set 'cifar'.*--train-samples"):
        floor.grid_flops(tmp_path)
    assert floor.grid_flops(tmp_path, train_samples=10).flops.iloc[0] == pytest.approx(
        timing.flops_per_sample(1, 1) * 10
    )
    with pytest.raises(SystemExit, match="--cores"):
        floor.main([str(tmp_path), "--cores", "0"])


def _model_files(tmp_path, n=2):
    """Tiny trained-like NEMONs written as the workflow writes them (model.pt, metrics.json)."""
    from nemon.contracts import save_model

    paths = []
    for i, gamma in enumerate([0.0, 0.9][:n]):
        model = make_model(seed=i, m=784, n=16, k=10, gamma=gamma, scale=3.0).float()
        folder = tmp_path / "results" / "mnist-5k" / "models" / "nemon" / "lipschitz" / f"g{i}"
        folder.mkdir(parents=True)
        sha = save_model(model, folder / "model.pt")
        (folder / "metrics.json").write_text(
            json.dumps({"dataset": "mnist-5k", "model_sha256": sha})
        )
        paths.append(folder / "model.pt")
    return paths


def test_iteration_benchmark_counts_both_solvers_on_every_model_found(tmp_path, capsys):
    import pandas as pd

    from benchmarks import iterations

    _model_files(tmp_path)
    table = tmp_path / "iterations.csv"
    args = [str(tmp_path / "results"), "--images", "50", "--tol", "1e-3", "1e-6", "--csv"]
    iterations.main([*args, str(table)])
    assert "ratio of iterations" in capsys.readouterr().out
    df = pd.read_csv(table)
    assert len(df) == 4 and set(df["tol"]) == {1e-3, 1e-6}  # two models, two tolerances
    # Jacobi is never slower in iterations, and both reach the tolerance's accuracy
    assert (df["jacobi_fwd"] <= df["average_fwd"]).all()
    assert (df["jacobi_bwd"] <= df["average_bwd"]).all()
    assert (df["rho_J"] <= df["rho"] + 1e-12).all()
    tight = df[df["tol"] == 1e-6]
    assert (tight[["average_fwd_err", "jacobi_fwd_err"]] < 1e-3).all().all()


def test_iteration_benchmark_without_models_says_what_to_do(tmp_path):
    from benchmarks import iterations

    with pytest.raises(ConfigurationError, match="run snakemake first"):
        iterations.main([str(tmp_path)])


def test_gradient_benchmark_compares_float32_training_gradients_with_float64(tmp_path):
    import pandas as pd

    from benchmarks import gradients

    _model_files(tmp_path, n=1)
    table = tmp_path / "gradients.csv"
    args = [str(tmp_path / "results"), "--batches", "1", "--tol", "1e-2", "1e-4"]
    gradients.main([*args, "--csv", str(table)])
    df = pd.read_csv(table).set_index(["solver", "tol"])
    assert len(df) == 4  # two solvers, two tolerances
    # a tighter tolerance gives a more accurate gradient, down to float32's floor
    for solver in ("jacobi", "average"):
        assert df.loc[(solver, 1e-4), "max_rel_err"] <= df.loc[(solver, 1e-2), "max_rel_err"]
        assert df.loc[(solver, 1e-4), "max_rel_err"] < 1e-3


def test_the_exact_program_finds_the_smallest_margin_over_the_ball():
    from benchmarks.certificate_gap import exact_margin

    model = make_model(
        seed=2, m=3, n=6, k=3, gamma=0.5, scale=2.0, tol=1e-13, max_iter=100_000, solver="average"
    )
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        u = torch.rand(3, dtype=torch.float64, generator=g)
        with torch.no_grad():
            k = int(model(u[None]).argmax())
        margin, status, v, _ = exact_margin(model, u, k, 0.2, time_limit=30)
        assert status == "ok" and v is not None
        # attained: the minimiser's forward solve gives the program's margin
        with torch.no_grad():
            y = model(torch.as_tensor(v)[None].clamp(0, 1))[0]
        others = torch.cat((y[:k], y[k + 1 :]))
        assert float(y[k] - others.max()) == pytest.approx(margin, abs=1e-6)
        # and nothing in the ball goes lower: a dense grid of the box and its vertices
        lo, hi = (u - 0.2).clamp(0, 1), (u + 0.2).clamp(0, 1)
        t = torch.stack(torch.meshgrid(*[torch.linspace(0, 1, 9, dtype=torch.float64)] * 3,
                                       indexing="ij"), dim=-1).reshape(-1, 3)  # fmt: skip
        with torch.no_grad():
            ys = model(lo + (hi - lo) * t)
        gaps = ys[:, k : k + 1] - torch.cat((ys[:, :k], ys[:, k + 1 :]), dim=1)
        assert float(gaps.min()) >= margin - 1e-6
