"""Progress lines for logs: the ETA arithmetic, the timer, and the lines of a real (tiny) run."""
from __future__ import annotations

import io
import re
import subprocess
import sys
import time

import pytest

from ser.progress import JobETA, Progress, fmt_duration, lines_enabled
from tests.conftest import ROOT
from tests.synthetic import tiny_overrides, write_pairs


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_job_eta_by_hand():
    c = Clock()
    eta = JobETA(c)
    eta.plan("ser", 100)
    eta.plan("full", 200)
    assert eta.eta_s() is None  # nothing measured yet
    eta.begin("ser", 0)
    c.t = 20.0
    eta.advance("ser", 10)  # 2 s/step: 90 ser steps left, 200 full steps at the mean rate (2 s)
    assert eta.eta_s() == pytest.approx(90 * 2 + 200 * 2)
    c.t = 200.0
    eta.advance("ser", 100)
    eta.end("ser")  # ser took 200 s for 100 steps
    c.t = 210.0
    eta.begin("full", 0)
    c.t = 220.0
    eta.advance("full", 20)  # 0.5 s/step for full: 180 left
    assert eta.eta_s() == pytest.approx(180 * 0.5)


def test_job_eta_counts_only_this_process_after_a_resume():
    c = Clock()
    eta = JobETA(c)
    eta.plan("ser", 100)
    eta.begin("ser", 60)  # 60 steps were done before the restart
    c.t = 10.0
    eta.advance("ser", 70)  # 10 steps in 10 s here: 1 s/step, 30 left
    assert eta.eta_s() == pytest.approx(30.0)


def test_training_line_by_hand():
    c, lines = Clock(), []
    pr = Progress(every_s=30, clock=c, emit=lines.append, enabled=True)
    pr.eta.plan("ser", 100)
    pr.eta.begin("ser", 0)
    c.t = 40.0
    pr.eta.advance("ser", 34)
    pr.training("ser", "loop 1", 34, 62, 0.67123, 1.2)
    assert pr.write() == ("[ser] train loop 1: step 34/62, loss 0.6712, 1.20 s/step, loop ETA 34 s, "
                          "job ETA ~78 s")  # 66 steps left at 40/34 s/step = 77.6 s
    on_batch = pr.scorer("ser", "loop 1 (pool)")
    c.t = 50.0
    on_batch(640, 2742)
    assert pr.write().startswith("[ser] scoring loop 1 (pool): 640/2742 sequences, 64.0 seq/s, ETA 33 s")


def test_timer_writes_the_latest_status_every_interval():
    lines = []
    pr = Progress(every_s=0.05, emit=lines.append, enabled=True)
    with pr:
        pr.set_status("first")
        time.sleep(0.3)
        pr.set_status(lambda: "second")
        time.sleep(0.3)
    n = len(lines)
    time.sleep(0.15)
    assert len(lines) == n, "the timer must stop with the job"
    assert lines.count("first") >= 3 and lines.count("second") >= 3
    assert lines.index("second") > lines.index("first")


def test_disabled_progress_writes_nothing():
    lines = []
    with Progress(every_s=0.01, emit=lines.append, lines="never") as pr:
        pr.set_status("x")
        time.sleep(0.1)
    assert lines == []


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_lines_follow_the_terminal():
    assert lines_enabled("auto", io.StringIO()) is True  # a log file: plain lines
    assert lines_enabled("auto", TTY()) is False  # a terminal: Lightning's bar
    assert lines_enabled("always", TTY()) is True and lines_enabled("never", io.StringIO()) is False
    with pytest.raises(ValueError, match="progress.lines"):
        lines_enabled("sometimes")


def test_fmt_duration():
    assert [fmt_duration(x) for x in (5, 89, 600, 7200, None)] == ["5 s", "89 s", "10.0 min", "2.0 h", "?"]


def test_a_run_logged_to_a_file_shows_progress(tmp_path):
    """`python -m ser.train ... > log` (stdout not a TTY): plain progress lines land in the log."""
    data = write_pairs(tmp_path / "pairs.jsonl", 200)
    log_file = tmp_path / "run.log"
    over = [o for o in tiny_overrides(data, "loop=ser", "loop.max_loops=1", "compare_full=true", "progress.every_s=0.2")
            if not o.startswith("trainer.enable_progress_bar")]  # bars on, as a user has them
    cmd = [sys.executable, "-m", "ser.train", *over, f"output_dir={tmp_path / 'run'}"]
    with open(log_file, "w") as f:
        subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True, timeout=300)
    text = log_file.read_text()
    assert re.search(r"precision: (32-true|bf16-mixed) \(auto: .*\) on ", text)
    train = re.findall(r"\[(ser|full)\] train loop (\d): step (\d+)/(\d+), loss [\d.]+, [\d.]+ s/step, "
                       r"loop ETA [^,]+, job ETA ~", text)
    assert train, text[-3000:]
    assert all(int(step) <= int(total) for _, _, step, total in train)
    assert "\x1b[" not in text and "\r" not in text  # no bar control characters in a log
