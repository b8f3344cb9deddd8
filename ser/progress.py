"""Progress that shows in any log: a plain line every ``progress.every_s`` seconds.

A terminal gets Lightning's bar; a log file under nohup, SLURM or CI gets nothing from a bar but
control characters. So when stdout is not a TTY (``progress.lines: auto``), training, pool
scoring, evaluation and PPO keep a status up to date, and a timer thread writes it as one plain
line through the ``ser`` logger (so into Hydra's log file too) every ``every_s`` seconds:

    [ser] train loop 1: step 34/62, loss 0.6712, 1.21 s/step, loop ETA 34 s, job ETA ~6.5 min

The job ETA is ``elapsed / steps done * steps left`` over every phase's planned training steps
(scoring and evaluation are folded into the per-step cost); a loop whose size is not known yet
is planned as large as the last one, so the ETA is a lower bound while the SER loop grows.
"""
from __future__ import annotations

import logging
import math
import sys
import threading
import time
from typing import Callable

from pytorch_lightning.callbacks import Callback

log = logging.getLogger("ser")
LINE_MODES = ("auto", "always", "never")


def lines_enabled(mode: str, stream=None) -> bool:
    """``auto``: plain lines when the stream (stdout) is not a terminal."""
    if mode not in LINE_MODES:
        raise ValueError(f"progress.lines='{mode}' must be one of {', '.join(LINE_MODES)}")
    if mode != "auto":
        return mode == "always"
    stream = stream if stream is not None else sys.stdout
    return not (hasattr(stream, "isatty") and stream.isatty())


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class JobETA:
    """Planned and done steps per phase; the job's ETA from the rates measured so far.

    Each phase's remaining steps cost its own measured seconds per step (scoring and evaluation
    within the phase included); a phase that has not started yet costs the mean rate so far.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.planned: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.start: dict[str, tuple[int, float]] = {}  # steps done before this process, and when it began
        self.ended: dict[str, float] = {}  # seconds a finished phase took in this process

    def plan(self, phase: str, steps: int) -> None:
        self.planned[phase] = max(int(steps), self.done.get(phase, 0))

    def plan_if_new(self, phase: str, steps: int) -> None:
        if phase not in self.planned:
            self.plan(phase, steps)

    def begin(self, phase: str, steps_done: int) -> None:
        """A phase starts (or resumes) in this process with ``steps_done`` steps behind it."""
        self.start.setdefault(phase, (int(steps_done), self.clock()))
        self.advance(phase, steps_done)

    def advance(self, phase: str, steps_done: int) -> None:
        self.done[phase] = int(steps_done)
        self.planned[phase] = max(self.planned.get(phase, 0), int(steps_done))

    def end(self, phase: str) -> None:
        if phase in self.start:
            self.ended[phase] = self.clock() - self.start[phase][1]

    def _rate(self, phase: str) -> float | None:
        if phase not in self.start:
            return None
        steps0, t0 = self.start[phase]
        ran = self.done.get(phase, 0) - steps0
        took = self.ended.get(phase, self.clock() - t0)
        return took / ran if ran > 0 else None

    def eta_s(self) -> float | None:
        rates = {p: r for p in self.planned if (r := self._rate(p)) is not None}
        if not rates:
            return None
        mean = sum(rates.values()) / len(rates)
        return sum(max(0, n - self.done.get(p, 0)) * rates.get(p, mean) for p, n in self.planned.items())


class Progress:
    """A job's progress reporter: the latest status of what runs, written by a timer thread.

    Activities (training batches, scoring batches, PPO steps) only *update* the status, which
    costs nothing; a daemon thread writes it every ``every_s`` seconds, so a line comes at that
    pace whatever the length of one step (a 19 s PPO step or a 40 s training step on a slow CPU).
    Use it as a context manager (or ``start()``/``stop()``); disabled, it writes nothing.
    """

    def __init__(self, every_s: float = 30.0, lines: str = "auto", clock: Callable[[], float] = time.monotonic,
                 emit: Callable[[str], None] | None = None, enabled: bool | None = None):
        self.every_s = float(every_s)
        self.enabled = lines_enabled(lines) if enabled is None else enabled
        self.emit = emit or (lambda msg: log.info(msg))
        self.clock = clock
        self.eta = JobETA(clock)
        self._status: Callable[[], str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the timer ------------------------------------------------------------------------
    def start(self) -> "Progress":
        if self.enabled and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="ser-progress", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "Progress":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.write()

    def write(self) -> str | None:
        """Emit the current status now (the timer calls this); returns the line."""
        status = self._status
        if status is None:
            return None
        try:
            line = status()
        except Exception as e:  # noqa: BLE001 - a progress line must never kill the job
            line = f"(progress line failed: {e!r})"
        self.emit(line)
        return line

    # -- what runs now --------------------------------------------------------------------
    def set_status(self, status: str | Callable[[], str] | None) -> None:
        self._status = (lambda: status) if isinstance(status, str) else status

    def _job_eta(self) -> str:
        return f"job ETA ~{fmt_duration(self.eta.eta_s())}"

    def training(self, phase: str, what: str, step: int, total: int, loss: float | None,
                 s_per_step: float | None) -> None:
        """Training of ``what`` (e.g. ``loop 1``) is at ``step`` of ``total``."""
        def line() -> str:
            parts = [f"[{phase}] train {what}: step {step}/{total}"]
            if loss is not None and math.isfinite(loss):
                parts.append(f"loss {loss:.4f}")
            if s_per_step:
                parts.append(f"{s_per_step:.2f} s/step")
            left = s_per_step * max(0, total - step) if s_per_step else None
            parts += [f"{what.split(' ')[0]} ETA {fmt_duration(left)}", self._job_eta()]
            return ", ".join(parts)

        self.set_status(line)

    def scorer(self, phase: str, what: str) -> Callable[[int, int], None]:
        """A per-batch callback for :func:`ser.model.score_sequences`: ``(done, total)`` sequences."""
        t0 = self.clock()

        def on_batch(done: int, total: int) -> None:
            def line() -> str:
                el = self.clock() - t0
                rate = done / el if el > 0 else 0.0
                left = (total - done) / rate if rate > 0 else None
                return (f"[{phase}] scoring {what}: {done}/{total} sequences, {rate:.1f} seq/s, "
                        f"ETA {fmt_duration(left)}, {self._job_eta()}")

            self.set_status(line)

        on_batch(0, 0)
        return on_batch


class ProgressLines(Callback):
    """Lightning side of :class:`Progress`: keeps the training status up to date every batch.

    ``label(trainer)`` names what trains (e.g. ``loop 1``) and ``position(trainer)`` gives
    ``(step, total)`` within it, so step/total and the ETA are those of the loop (or PPO stage);
    ``steps_done(trainer)`` counts the phase's steps for the job ETA (default: optimizer steps).
    """

    def __init__(self, progress: Progress, phase: str, label: Callable | None = None, position: Callable | None = None,
                 steps_done: Callable | None = None):
        self.progress = progress
        self.phase = phase
        self.label = label or (lambda trainer: f"epoch {trainer.current_epoch}")
        self.position = position or (lambda trainer: (trainer.global_step, int(trainer.estimated_stepping_batches)))
        self.steps_done = steps_done or (lambda trainer: trainer.global_step)
        self._start: tuple[float, int] | None = None  # (time, step) when this epoch began

    def on_train_start(self, trainer, pl_module) -> None:
        self.progress.eta.begin(self.phase, self.steps_done(trainer))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = (self.progress.clock(), self.position(trainer)[0])
        step, total = self.position(trainer)  # until the first batch ends: what starts now
        self.progress.training(self.phase, self.label(trainer), step, total, None, None)

    def on_train_end(self, trainer, pl_module) -> None:
        self.progress.eta.end(self.phase)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, total = self.position(trainer)
        self.progress.eta.advance(self.phase, self.steps_done(trainer))
        if not self.progress.enabled:
            return
        t0, step0 = self._start or (self.progress.clock(), step)
        s_per_step = (self.progress.clock() - t0) / (step - step0) if step > step0 else None
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        loss = float(loss.detach()) if hasattr(loss, "detach") else (float(loss) if loss is not None else None)
        self.progress.training(self.phase, self.label(trainer), step, total, loss, s_per_step)
