"""``python -m nemon.bench.schedule``: replaying a grid's jobs on a few cores."""

import json

import pandas as pd
import pytest
from conftest import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from nemon.bench import schedule
from nemon.errors import ConfigurationError


def jobs_of(times):
    """A job table of (train_s, eval_s) pairs, NEMON lipschitz groups at gamma 0."""
    return pd.DataFrame(
        [
            {"model": "nemon", "objective": "lipschitz", "gamma": 0.0, "seed": i, "points": 1,
             "train_s": t, "eval_s": e}
            for i, (t, e) in enumerate(times)
        ]
    )  # fmt: skip


def test_list_schedule_by_hand():
    jobs = jobs_of([(10, 5), (2, 1), (2, 1)])
    first = {0: 3, 1: 2, 2: 1}
    # one core: A 0-10, eval A 10-15; the other: B 0-2, eval B 2-3, C 3-5, eval C 5-6
    assert schedule.list_schedule(jobs, first.get, first.get, 2) == 15
    last = {0: 1, 1: 3, 2: 2}
    # B 0-2 and C 0-2, eval B 2-3 and eval C 2-3 (both above A), A 3-13, eval A 13-18
    assert schedule.list_schedule(jobs, last.get, last.get, 2) == 18
    assert schedule.lower_bound(jobs, 2) == 15
    with pytest.raises(ValueError, match="cores must be at least 1"):
        schedule.list_schedule(jobs, first.get, first.get, 0)


times = st.lists(st.tuples(st.integers(1, 100), st.integers(1, 100)), min_size=1, max_size=12).map(
    lambda ts: [(float(t), float(e)) for t, e in ts]
)


@settings(max_examples=60, deadline=None)
@given(times, st.integers(1, 4), st.randoms(use_true_random=False))
def test_no_order_beats_the_lower_bound_or_idles_a_core_with_a_ready_job(ts, cores, rnd):
    jobs = jobs_of(ts)
    prio = {i: rnd.random() for i in range(len(ts))}
    total = sum(t + e for t, e in ts)
    wall = schedule.list_schedule(jobs, prio.get, prio.get, cores)
    assert schedule.lower_bound(jobs, cores) <= wall + 1e-9
    assert wall <= total + 1e-9
    assert schedule.list_schedule(jobs, prio.get, prio.get, 1) == pytest.approx(total)
    if cores >= len(ts):  # every chain on its own core
        assert wall == pytest.approx(max(t + e for t, e in ts))


def write_point(root, model, objective, gamma, weight, seed, train_s, eval_s):
    d = root / "models" / model / objective / f"g{gamma}_l{weight}_s{seed}"
    d.mkdir(parents=True)
    keys = {"model": model, "objective": objective, "gamma": gamma, "seed": seed}
    (d / "metrics.json").write_text(json.dumps({**keys, "train_seconds": train_s}))
    (d / "evaluation.json").write_text(json.dumps({**keys, "evaluation_seconds": eval_s}))
    return d


def test_load_jobs_takes_a_stacks_training_time_once_and_sums_its_evaluations(tmp_path):
    for w, e in ((0.0, 10.0), (0.1, 30.0)):
        write_point(tmp_path, "nemon", "lipschitz", 0.9, w, 0, 600.0, e)
    write_point(tmp_path, "nemon", "lipschitz", 0.0, 0.0, 0, 100.0, 5.0)
    jobs = schedule.load_jobs(tmp_path)
    assert len(jobs) == 2
    slow = jobs[jobs["gamma"] == 0.9].iloc[0]
    assert (slow["points"], slow["train_s"], slow["eval_s"]) == (2, 600.0, 40.0)
    r = schedule.replay(jobs, cores=2, n_random=5)
    assert r["bound"] == r["workflow"] == r["measured"] == 640.0
    assert r["random_min"] <= r["random_mean"] <= r["random_max"]


def test_load_jobs_refuses_an_empty_folder_and_unevaluated_models(tmp_path):
    with pytest.raises(ConfigurationError, match="no models"):
        schedule.load_jobs(tmp_path)
    d = write_point(tmp_path, "mlp", "lipschitz", 0.0, 0.0, 0, 1.0, 1.0)
    (d / "evaluation.json").unlink()
    with pytest.raises(ConfigurationError, match="no evaluation.json"):
        schedule.load_jobs(tmp_path)


def test_main_prints_every_order_and_refuses_bad_arguments(tmp_path, capsys):
    write_point(tmp_path, "nemon", "lipschitz", 0.5, 0.0, 0, 60.0, 30.0)
    assert schedule.main([str(tmp_path), "--random", "3"]) == 0
    out = capsys.readouterr().out
    for text in ("lower bound: 1.5 min", "workflow priorities", "measured times", "3 random"):
        assert text in out
    for bad in (["--cores", "0"], ["--random", "-1"]):
        with pytest.raises(SystemExit, match="must be at least"):
            schedule.main([str(tmp_path), *bad])
    with pytest.raises(SystemExit, match="no models"):
        schedule.main([str(tmp_path / "nothing")])


@pytest.mark.parametrize("dataset", ["fashion-mnist", "mnist-5k"])
def test_the_workflows_order_is_within_a_percent_of_the_bound_on_the_committed_grids(dataset):
    r = schedule.replay(schedule.load_jobs(REPO / "results" / dataset), cores=2, n_random=0)
    assert r["workflow"] <= 1.01 * r["bound"]
