"""What a running workflow job tells the person at the console, and how it stops when asked.

A job script sends its full log to its log file (``sys.stdout`` and ``sys.stderr`` point
there). :class:`JobConsole` writes a few short lines to the console Snakemake runs in (the
job's inherited standard error, file descriptor 2): a job's first and last line, one per
finished model, and otherwise at most one every ``min_interval`` seconds (30 by default: two
jobs at a time give a few lines a minute), each with an estimate of the time left in the job.
Snakemake's own ``N of M steps (x%) done`` gives the progress of the grid.
:class:`TrainingProgress` reads the per-epoch lines of :func:`nemon.training.train_stack`,
:class:`EvaluationProgress` follows the models of a group evaluation.

:func:`stop_on_signals` makes SIGINT and SIGTERM end a job within moments, cleanly: the first
one raises :class:`JobInterrupted` in the main thread (atomic writes remove their temporary
file, :mod:`nemon.fileio`), later ones are ignored, and the job's last words are one line
saying what a rerun will redo, not a traceback. :func:`rerun_summary` lists, after a run was
stopped, what the kept files let a rerun skip.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "EvaluationProgress",
    "JobConsole",
    "JobInterrupted",
    "TrainingProgress",
    "checkpoint_epoch",
    "count",
    "duration",
    "rerun_summary",
    "stop_on_signals",
]


def duration(seconds: float) -> str:
    """``12`` -> ``under a minute``, ``1140`` -> ``19 min``, ``5400`` -> ``1 h 30 min``."""
    if seconds < 45:
        return "under a minute"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


def _per_step(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 100 else f"{seconds / 60:.1f} min"


def count(n: int, noun: str) -> str:
    """``1 model``, ``8 models``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _left(seconds: float, qualifier: str) -> str:
    """``about 19 min left``, ``at most 5 min left``, ``less than a minute left``."""
    if seconds < 45:
        return "less than a minute left"
    return f"{qualifier} {duration(seconds)} left"


def _console_writer() -> Callable[[str], None]:
    """Write to file descriptor 2 as the job inherited it, whatever ``sys.stderr`` is now."""
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
    except (AttributeError, OSError, ValueError):
        fd = 2

    def write(text: str) -> None:
        try:
            os.write(fd, text.encode("utf-8", "replace"))  # one call: whole lines, unbuffered
        except OSError:  # no console (closed, detached): the log has everything anyway
            pass

    return write


class JobConsole:
    """Short ``[tag] text`` lines on the console, at most one per ``min_interval`` seconds
    unless ``force``d (a job's first and last lines, a finished model)."""

    def __init__(
        self,
        tag: str,
        *,
        write: Callable[[str], None] | None = None,
        min_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tag = tag
        self.write = write or _console_writer()
        self.min_interval = min_interval
        self.clock = clock
        self._last: float | None = None

    def say(self, text: str, *, force: bool = False) -> bool:
        """Write ``[tag] text``; ``False`` when it was dropped as too soon after the last."""
        now = self.clock()
        if not force and self._last is not None and now - self._last < self.min_interval:
            return False
        self._last = now
        self.write(f"[{self.tag}] {text}\n")
        return True


# train_stack's lines: "epoch 3/30 (41.2 s, lr 0.001): ...", "extra epoch 1/10 (40.0 s, ...",
# "resuming from the checkpoint <path> after epoch 3" (nemon.training.train_stack)
_EPOCH = re.compile(r"^(extra )?epoch (\d+)/(\d+) \((\d+(?:\.\d*)?) s\b")
_RESUMED = re.compile(r"^resuming from the checkpoint .* after epoch (\d+)$")


class TrainingProgress:
    """Use :meth:`log` as ``train_stack``'s ``log``: every line goes to ``log`` (the log
    file), and each epoch gives one console line, e.g. ``epoch 3/30, 41 s/epoch, about 19 min
    left in this job``."""

    def __init__(
        self,
        console: JobConsole,
        epochs: int,
        extra_epochs: int = 0,
        *,
        log: Callable[[str], None] = print,
    ) -> None:
        self.console = console
        self.epochs = epochs
        self.extra_epochs = extra_epochs
        self._log = log
        self.seconds: list[float] = []  # the epochs run by this process
        self.resumed_after = 0
        self.last_epoch = 0  # the last epoch finished, counting the extra ones on
        self._t0 = console.clock()

    def start(self, what: str) -> None:
        self.console.say(f"started: {what}", force=True)

    def log(self, line: str) -> None:
        self._log(line)
        if m := _RESUMED.match(line):
            self.resumed_after = self.last_epoch = int(m.group(1))
            self.console.say(f"resuming from its checkpoint after {self._epoch_name()}", force=True)
        elif m := _EPOCH.match(line):
            extra, n, total = bool(m.group(1)), int(m.group(2)), int(m.group(3))
            self.seconds.append(float(m.group(4)))
            self.last_epoch = (self.epochs if extra else 0) + n
            mean = sum(self.seconds) / len(self.seconds)
            if extra:
                label, left = f"extra epoch {n}/{total}", _left(mean * (total - n), "at most")
            elif n < total or not self.extra_epochs:
                label, left = f"epoch {n}/{total}", _left(mean * (total - n), "about")
            else:  # extra epochs follow for the models that miss the convergence record
                label, left = f"epoch {n}/{total}", _left(mean * self.extra_epochs, "at most")
            self.console.say(
                f"{label}, {_per_step(mean)}/epoch, {left} in this job",
                force=len(self.seconds) == 1,
            )

    def _epoch_name(self, epoch: int | None = None) -> str:
        n = self.last_epoch if epoch is None else epoch
        if n > self.epochs:
            return f"extra epoch {n - self.epochs}/{self.extra_epochs}"
        return f"epoch {n}/{self.epochs}"

    def finished(self) -> None:
        self.console.say(f"done in {duration(self.console.clock() - self._t0)}", force=True)

    def stopped(self, signal_name: str, kept_epoch: int | None) -> str:
        """The job's last words after ``signal_name``; ``kept_epoch``: the checkpoint's epoch."""
        if kept_epoch:
            redo = f"a rerun resumes from its checkpoint after {self._epoch_name(kept_epoch)}"
        else:
            redo = "no epoch had finished, a rerun starts from epoch 1"
        text = f"stopped by {signal_name}: {redo}"
        self.console.say(text, force=True)
        return text


class EvaluationProgress:
    """Console lines of a group evaluation: one per model, and a throttled one per instrument,
    with the time left estimated from the models evaluated so far."""

    def __init__(self, console: JobConsole, models: int) -> None:
        self.console = console
        self.models = models
        self.times: list[float] = []  # seconds per model evaluated by this process
        self.done = 0
        self._name = ""
        self._started = console.clock()
        self._t0 = self._started

    def _left(self) -> str:
        if not self.times or self.done >= self.models:
            return ""
        mean = sum(self.times) / len(self.times)
        current = self.console.clock() - self._t0 if self._name else 0.0
        left = max(mean * (self.models - self.done) - current, 0.0)
        return f"; {_left(left, 'about')} in this job"

    def start(self, what: str) -> None:
        self.console.say(f"started: {what}", force=True)

    def model_started(self, name: str) -> None:
        self._name = name
        self._t0 = self.console.clock()

    def instrument(self, text: str) -> None:
        """After each instrument (``evaluate_model``'s ``progress`` lines): throttled."""
        self.console.say(
            f"model {self.done + 1}/{self.models} ({self._name}): {text}{self._left()}"
        )

    def model_done(self) -> None:
        seconds = self.console.clock() - self._t0
        self.times.append(seconds)
        self.done += 1
        name, self._name = self._name, ""
        self.console.say(
            f"model {self.done}/{self.models} ({name}) evaluated in {duration(seconds)}"
            + self._left(),
            force=True,
        )

    def model_kept(self, name: str) -> None:
        self.done += 1
        self.console.say(
            f"model {self.done}/{self.models} ({name}): kept from the interrupted run", force=True
        )

    def finished(self) -> None:
        self.console.say(f"done in {duration(self.console.clock() - self._started)}", force=True)

    def stopped(self, signal_name: str, kept: int) -> str:
        """The job's last words after ``signal_name``; ``kept``: models whose records are kept."""
        redo = self.models - kept
        text = (
            f"stopped by {signal_name}: {kept} of {self.models} models evaluated and kept, a "
            f"rerun evaluates the other {redo}"
        )
        self.console.say(text, force=True)
        return text


class JobInterrupted(KeyboardInterrupt):
    """Raised in a job's main thread by the first SIGINT or SIGTERM (:func:`stop_on_signals`)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def stop_on_signals(last_words: Callable[[str], object] | None = None) -> None:
    """Let SIGINT and SIGTERM end this job promptly and cleanly.

    The first of them raises :class:`JobInterrupted` in the main thread (a KeyboardInterrupt,
    so no ``except Exception`` swallows it and atomic writes remove their temporary file) and
    ignores any later one, so that a second signal (Ctrl-C reaches a job from the terminal
    and again through Snakemake) cannot break the cleanup. Uncaught, it ends the process with
    status 1 after ``last_words(signal_name)``, which should print what a rerun will redo,
    instead of a traceback.
    """

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise JobInterrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    previous = sys.excepthook

    def hook(kind, value, tb) -> None:
        if not isinstance(value, JobInterrupted):
            previous(kind, value, tb)
            return
        text = f"stopped by {value.signal_name}"
        if last_words is not None:
            try:
                text = str(last_words(value.signal_name))
            except Exception as e:  # the last words must not hide the stop itself
                text += f" (and saying what a rerun redoes failed: {type(e).__name__}: {e})"
        print(text, file=sys.stderr, flush=True)

    sys.excepthook = hook


def checkpoint_epoch(path: str | os.PathLike[str]) -> int | None:
    """The last epoch in the training checkpoint at ``path``; ``None`` if none can be read."""
    from .contracts import load_checkpoint

    try:
        state = load_checkpoint(path)
    except Exception:  # damaged: the rerun says so and starts again
        return None
    return None if state is None else int(state["epoch"])


def rerun_summary(models_root: str | os.PathLike[str]) -> list[str]:
    """What the files an interrupted run kept under ``models_root`` (``results/<dataset>/models``)
    let a rerun skip: one line per training checkpoint and per partial group evaluation, named
    ``<experiment> g<gamma>_s<seed>``."""
    from .evaluation import PartialEvaluation

    CKPT, SIDE = ".checkpoint.pt", PartialEvaluation.SUFFIX
    root = Path(models_root)
    lines = []
    for ckpt in sorted(root.glob(f"*/*{CKPT}")):
        epoch = checkpoint_epoch(ckpt)
        group = f"{ckpt.parent.name} {ckpt.name[: -len(CKPT)]}"
        if epoch:
            lines.append(f"training {group}: resumes after epoch {epoch} ({ckpt})")
    for side in sorted(root.glob(f"*/*{SIDE}")):
        kept = len(PartialEvaluation(side, log=lambda s: None))
        group = f"{side.parent.name} {side.name[: -len(SIDE)]}"
        if kept:
            lines.append(f"evaluation {group}: keeps {kept} evaluated model(s) ({side})")
    return lines
