"""What a workflow job tells the console (nemon.progress): short lines with estimates, never
more than one per interval, and a prompt, clean stop on SIGINT and SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from nemon.contracts import build_model, save_checkpoint
from nemon.progress import (
    EvaluationProgress,
    JobConsole,
    TrainingProgress,
    checkpoint_epoch,
    count,
    duration,
    rerun_summary,
)
from nemon.training import Objective, Schedule, make_stack, train_stack


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def console(min_interval: float = 10.0):
    lines: list[str] = []
    clock = Clock()
    c = JobConsole(
        "train nemon/lipschitz g0.9 s0", write=lines.append, clock=clock, min_interval=min_interval
    )
    return c, lines, clock


@pytest.mark.parametrize(
    "seconds, text",
    [(3, "under a minute"), (44, "under a minute"), (1140, "19 min"), (5400, "1 h 30 min")],
)
def test_durations_read_as_a_person_says_them(seconds, text):
    assert duration(seconds) == text


def test_counts_agree_in_number():
    assert (count(1, "model"), count(8, "model")) == ("1 model", "8 models")


def test_the_console_drops_lines_sooner_than_the_interval_unless_forced():
    c, lines, clock = console()
    assert c.say("a")
    clock.t = 5
    assert not c.say("b")
    assert c.say("c", force=True)
    clock.t = 16
    assert c.say("d")
    assert lines == [f"[{c.tag}] {x}\n" for x in "acd"]


def test_an_epoch_line_says_the_epoch_the_time_per_epoch_and_what_is_left():
    c, lines, _ = console()
    logged: list[str] = []
    progress = TrainingProgress(c, epochs=30, extra_epochs=0, log=logged.append)
    progress.log("epoch 3/30 (41.2 s, lr 0.001): lam=0 loss 0.3 bound 12")
    assert logged == ["epoch 3/30 (41.2 s, lr 0.001): lam=0 loss 0.3 bound 12"]  # all to the log
    assert lines == [
        "[train nemon/lipschitz g0.9 s0] epoch 3/30, 41 s/epoch, about 19 min left in this job\n"
    ]


def test_training_prints_at_most_one_line_per_interval_and_none_for_other_log_lines():
    c, lines, clock = console(min_interval=10)
    progress = TrainingProgress(c, epochs=100, log=lambda s: None)
    for epoch in range(1, 101):
        clock.t = 2.0 * epoch
        progress.log(f"epoch {epoch}/100 ({2.0:.1f} s, lr 0.001): lam=0 loss 0.1 bound 3")
        progress.log("device cpu, 1 thread(s)")
    assert 15 <= len(lines) <= 21  # 200 s of epochs, a line every 10 s
    assert all("epoch" in line for line in lines)


def test_extra_epochs_give_an_upper_bound_on_what_is_left():
    c, lines, clock = console(min_interval=0)
    progress = TrainingProgress(c, epochs=2, extra_epochs=10, log=lambda s: None)
    progress.log("epoch 2/2 (60.0 s, lr 0.001): ...")
    progress.log("extra epoch 1/10: lam=0 missed the convergence record ...; the others are frozen")
    progress.log("extra epoch 1/10 (60.0 s, lr 1e-05): lam=0 loss 0.1 bound 3")
    assert lines[0].endswith("epoch 2/2, 60 s/epoch, at most 10 min left in this job\n")
    assert lines[1].endswith("extra epoch 1/10, 60 s/epoch, at most 9 min left in this job\n")
    assert len(lines) == 2


def test_the_progress_reads_the_lines_train_stack_really_logs(tmp_path):
    torch.manual_seed(0)
    solver = {"solver": "average", "tol": 1e-3, "max_iter": 200, "stop": "bound"}
    shape = dict(in_features=16, hidden=6, out_features=10, input_mean=0.5, input_std=0.25)
    members = [build_model("nemon", gamma=0.5, solver=solver, **shape) for _ in range(2)]
    x = torch.randint(0, 256, (40, 4, 4), dtype=torch.uint8)
    y = torch.arange(40) % 10
    c, lines, _ = console(min_interval=0)
    progress = TrainingProgress(c, epochs=3, log=lambda s: None)
    kwargs = dict(
        objective=Objective("lipschitz", (0.0, 0.01)),
        schedule=Schedule(3, 20, 1e-3, (), 0.1, 0),
        seed=0,
        checkpoint=tmp_path / "g.checkpoint.pt",
        progress=False,
        log=progress.log,
    )
    train_stack(make_stack(members), x, y, **kwargs)
    assert [line.split("] ")[1].split(",")[0] for line in lines] == [
        "epoch 1/3",
        "epoch 2/3",
        "epoch 3/3",
    ]
    assert checkpoint_epoch(tmp_path / "g.checkpoint.pt") == 3
    # a rerun finds the checkpoint and says so on the console
    lines.clear()
    train_stack(make_stack(members), x, y, **kwargs)
    assert lines == [
        "[train nemon/lipschitz g0.9 s0] resuming from its checkpoint after epoch 3/3\n"
    ]


def test_evaluation_lines_estimate_what_is_left_from_the_models_done():
    lines: list[str] = []
    clock = Clock()
    c = JobConsole(
        "evaluate nemon/lipschitz g0.9 s0", write=lines.append, clock=clock, min_interval=10
    )
    progress = EvaluationProgress(c, models=4)
    progress.model_kept("lam=0")
    progress.model_started("lam=0.001")
    clock.t = 5
    progress.instrument("clean accuracy 0.9")  # too soon after the last line: dropped
    clock.t = 20
    progress.instrument("clean accuracy 0.9")  # no estimate before a model was timed
    clock.t = 120
    progress.model_done()
    clock.t = 125
    progress.model_started("lam=0.01")
    clock.t = 180
    progress.instrument("pgd at eps 0.1: 0.4 on 500 images (50.0 s)")
    clock.t = 181
    progress.instrument("autoattack ...")  # throttled
    assert [line.split("] ", 1)[1] for line in lines] == [
        "model 1/4 (lam=0): kept from the interrupted run\n",
        "model 2/4 (lam=0.001): clean accuracy 0.9\n",
        "model 2/4 (lam=0.001) evaluated in 2 min; about 4 min left in this job\n",
        "model 3/4 (lam=0.01): pgd at eps 0.1: 0.4 on 500 images (50.0 s); about 3 min left in "
        "this job\n",
    ]


STOPPABLE = """
import sys, time
from pathlib import Path
from nemon.fileio import atomic_write_bytes
from nemon.progress import JobConsole, stop_on_signals
sys.stderr = sys.stdout = open(sys.argv[1], "w", buffering=1)
console = JobConsole("job", min_interval=0)


def last_words(signal_name):
    text = f"stopped by {signal_name}: a rerun resumes after epoch 3"
    console.say(text)
    return text


stop_on_signals(last_words)
print("ready", flush=True)
while True:  # writing a file again and again: a stop must never leave its temporary file
    atomic_write_bytes(Path(sys.argv[2]) / "out.bin", b"x" * 10_000_000)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_job_stops_within_moments_on_a_signal_saying_what_a_rerun_redoes(tmp_path, sig):
    log = tmp_path / "job.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(STOPPABLE), str(log), str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.monotonic()
    while "ready" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() - t0 < 60 and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)
    proc.send_signal(sig)  # a second one (Ctrl-C reaches a job twice) changes nothing
    t0 = time.monotonic()
    console_text = proc.communicate(timeout=30)[1]
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 1
    name = signal.Signals(sig).name
    assert console_text == f"[job] stopped by {name}: a rerun resumes after epoch 3\n"
    text = log.read_text()
    assert text.endswith(f"stopped by {name}: a rerun resumes after epoch 3\n")
    assert "Traceback" not in text
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_the_rerun_summary_lists_checkpoints_and_partial_evaluations(tmp_path):
    from nemon.evaluation import PartialEvaluation

    group = tmp_path / "models" / "paper"
    group.mkdir(parents=True)
    save_checkpoint({"epoch": 7}, group / "g0.5_s0.checkpoint.pt")
    partial = PartialEvaluation(group / "g0.9_s1.evaluation-partial.json")
    partial.add("lam=0", "f" * 64, [{"attack": "clean"}], {"clean_acc": 0.9})
    partial.add("lam=0.01", "e" * 64, [{"attack": "clean"}], {"clean_acc": 0.8})
    assert rerun_summary(tmp_path / "models") == [
        f"training paper g0.5_s0: resumes after epoch 7 ({group}/g0.5_s0.checkpoint.pt)",
        f"evaluation paper g0.9_s1: keeps 2 evaluated model(s) "
        f"({group}/g0.9_s1.evaluation-partial.json)",
    ]
    assert rerun_summary(tmp_path / "nothing") == []
