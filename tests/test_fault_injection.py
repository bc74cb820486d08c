"""Kill `zoobench run` at random moments, resume it, and get the unbroken run's leaderboard.

Every file is written atomically and a member is complete only once its metrics.json exists, so
a run killed at any instant (SIGKILL: no cleanup runs) resumes to the same results; its lock is
taken over and `zoobench predict` works afterwards. Two kills run by default; `-m slow` runs 20.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports.leaderboard import TIMING_COLUMNS

REPO = Path(__file__).resolve().parents[1]
TIMING = list(TIMING_COLUMNS)
IMPORT_SECONDS = 8.0  # a CLI run's start-up (TensorFlow's import) that the in-process run skips
# Kills land before this share of the unbroken run's time, so the CLI run (which also imports
# TensorFlow and, on a busy machine, runs slower) is still going when its kill comes: a run that
# ended before its kill fails the test instead of passing without a kill.
KILL_BEFORE = 0.85
PROFILE = """
name = "fault-test"
seed = 0
deterministic = true
[data]
dataset = "cifar10"
train_size = 100
val_size = 50
test_size = 50
[training]
epochs = 2
batch_size = 50
early_stopping_patience = 0
[[members]]
architecture = "seed_cnn"
name = "a"
hp = { width = 0.5, dense_units = 0 }
[[members]]
architecture = "seed_cnn"
name = "b"
hp = { width = 0.5, dense_units = 0, dropout = 0.0 }
[ensembles]
methods = ["average-all", "greedy", "stacking"]
[report]
enabled = %s
"""


def zoobench(*args: str, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZOOBENCH_CACHE": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmark.cli", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(*args: str, cache: Path) -> None:
    proc = zoobench(*args, cache=cache)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def board(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "leaderboard.csv").drop(columns=TIMING)


def kill_and_resume(kills: int, report: bool, tmp_path: Path, tiny_jpg: Path) -> None:
    cache = tmp_path / "cache"
    profile = tmp_path / "fault.toml"
    profile.write_text(PROFILE % ("true" if report else "false"))
    common = [str(profile), "--data-dir", str(tiny_jpg)]
    from benchmark.config.profiles import load_profile
    from benchmark.run.runner import Runner
    from ensembles.predictor import load_predictor

    reference = tmp_path / "reference"
    start = time.monotonic()
    Runner(load_profile(profile), reference, data_dir=str(tiny_jpg), progress=lambda s: None).run()
    whole = time.monotonic() - start + IMPORT_SECONDS  # a CLI run's wall time here, about
    expected = board(reference)
    images = np.load(reference / "data" / "x_test.npy")[:3]
    rng = random.Random(12)
    for k in range(kills):
        out = tmp_path / f"killed{k}"
        delay = rng.uniform(0.5 * IMPORT_SECONDS, KILL_BEFORE * whole)  # start-up to near the end
        proc = zoobench("run", *common, "--out", str(out), cache=cache)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        else:  # it ended by itself: nothing was killed, so nothing about resuming was tested
            _, err = proc.communicate()
            pytest.fail(
                f"the run ended (exit {proc.returncode}) before its kill at {delay:.1f}s: "
                f"{'it crashed: ' + err[-2000:] if proc.returncode else 'it finished first'}"
            )
        assert proc.returncode == -signal.SIGKILL, f"not killed: exit {proc.returncode}"
        finish("run", *common, "--out", str(out), cache=cache)
        got = board(out)
        pd.testing.assert_frame_equal(
            got,
            expected,
            check_exact=False,
            rtol=1e-6,
            obj=f"leaderboard after a kill at {delay:.1f}s",
        )
        assert load_predictor(out).predict_proba(images).shape == (3, 10)


def test_a_killed_run_resumes_to_the_same_leaderboard(tmp_path, tiny_jpg):
    kill_and_resume(2, report=False, tmp_path=tmp_path, tiny_jpg=tiny_jpg)


@pytest.mark.slow
def test_twenty_killed_runs_resume_to_the_same_leaderboard(tmp_path, tiny_jpg):
    kill_and_resume(20, report=True, tmp_path=tmp_path, tiny_jpg=tiny_jpg)
