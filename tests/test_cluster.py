"""Members on a local Ray instance (2 CPUs, this machine only): the same leaderboard as a plain run,
also when a worker is killed in the middle of a member. Skipped without Ray (CI's step 2 has it)."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import shrunk_smoke_toml

pytest.importorskip("ray")

from benchmark.config.profiles import load_profile  # noqa: E402 - after the skip
from benchmark.run import cluster as cluster_mod  # noqa: E402
from benchmark.run.runner import Runner  # noqa: E402
from reports.leaderboard import TIMING_COLUMNS

TIMING = list(TIMING_COLUMNS)


def board(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "leaderboard.csv").drop(columns=TIMING)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    """The shipped smoke profile (deterministic, a boosted member, a search) on a tiny subset."""
    return shrunk_smoke_toml(tmp_path_factory.mktemp("profile") / "smoke.toml", report=False)


@pytest.fixture(scope="module")
def reference(smoke, tmp_path_factory, tiny_jpg) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("plain") / "run"
    Runner(load_profile(smoke), out, data_dir=str(tiny_jpg), progress=lambda s: None).run()
    return board(out)


@pytest.fixture(scope="module")
def cluster():
    ray_cluster = cluster_mod.connect(cluster_mod.LOCAL, cpus=2)
    yield ray_cluster
    ray_cluster.shutdown()


def test_a_local_ray_run_gives_the_plain_runs_leaderboard(
    cluster, smoke, reference, tmp_path, tiny_jpg
):
    assert cluster.slots == 2
    lines: list[str] = []
    out = tmp_path / "ray"
    runner = Runner(
        load_profile(smoke), out, data_dir=str(tiny_jpg), progress=lines.append, cluster=cluster
    )
    runner.run()
    # three jobs: the plain member, the boosting group's two rounds in one, the search
    assert "cluster: 3 jobs submitted to 2 slots" in lines
    assert any("[2 boosting rounds]: finished on a worker" in line for line in lines)
    pd.testing.assert_frame_equal(board(out), reference)
    assert {o.status for o in runner.outcomes} == {"done"} and len(runner.outcomes) == 4


def _job_process(title: str) -> int | None:
    """The pid of the Ray worker whose process title starts with ``title`` (Ray sets it to
    ``ray::<task name>`` while the task runs)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(title.encode()):
            return int(pid)
    return None


def test_a_ray_worker_killed_during_a_member_still_ends_with_that_leaderboard(
    cluster, smoke, reference, tmp_path, tiny_jpg
):
    """The boosting job's worker is killed once round 0 is stored, while round 1 trains: Ray runs
    the job again, which keeps round 0 (its checksums hold) and trains round 1 afresh."""
    out = tmp_path / "killed"
    killed: list[int] = []

    def kill_during_round_1() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            done = [
                p
                for p in (out / "members").glob("*/metrics.json")
                if "[boost 0]" in (p.parent / "config.json").read_text()
            ]
            pid = _job_process("ray::zoobench seed_cnn tiny swish [2 boosting")
            if done and pid:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_during_round_1, daemon=True)
    watcher.start()
    lines: list[str] = []
    Runner(
        load_profile(smoke), out, data_dir=str(tiny_jpg), progress=lines.append, cluster=cluster
    ).run()
    watcher.join(timeout=5)
    assert killed, "the boosting job's worker was never seen after round 0"
    assert not Path(f"/proc/{killed[0]}").exists()
    # the retry kept round 0 and trained round 1; nothing was lost or left to a rerun
    assert any("kept    seed_cnn tiny swish [boost 0]" in line for line in lines), lines
    assert any("done    seed_cnn tiny swish [boost 1]" in line for line in lines), lines
    assert not [line for line in lines if "rerun redoes it" in line]
    pd.testing.assert_frame_equal(board(out), reference)


SEARCH = """
name = "ray-search"
[data]
train_size = 60
val_size = 30
test_size = 30
[training]
epochs = 1
batch_size = 30
early_stopping_patience = 0
[tuner]
algorithm = "random"
max_trials = 4
epochs = 1
[tuner.search]
learning_rate = { min = 0.0005, max = 0.005, sampling = "log" }
[[members]]
architecture = "seed_cnn"
name = "tuned"
hp = { width = 0.5, dense_units = 0 }
tune = true
[ensembles]
enabled = false
[report]
enabled = false
"""


def test_a_search_spreads_its_trials_over_ray_workers_that_join_its_chief(
    cluster, tmp_path, tiny_jpg
):
    """Keras Tuner's own chief/worker mode on Ray: the chief (on the driver's node, with a new
    token) serves the oracle, two Ray workers run the trials, each trial once."""
    import json
    import re

    (tmp_path / "search.toml").write_text(SEARCH)
    lines: list[str] = []
    spread = dataclasses.replace(cluster, search_workers=2)
    out = tmp_path / "run"
    Runner(
        load_profile(tmp_path / "search.toml"),
        out,
        data_dir=str(tiny_jpg),
        progress=lines.append,
        cluster=spread,
    ).run()
    started = [m for line in lines for m in re.findall(r"trial (\d+) started by (\S+)", line)]
    ids = [t for t, _ in started]
    assert len(ids) == 4 and len(set(ids)) == 4, lines  # each trial once
    assert {w for _, w in started} <= {"ray-worker-0", "ray-worker-1"}
    project = next((out / "tuner").iterdir())
    states = [json.loads(p.read_text())["status"] for p in project.glob("trial_*/trial.json")]
    assert states == ["COMPLETED"] * 4
    members = list((out / "members").glob("*/metrics.json"))
    assert len(members) == 1  # the chief stored the best trial
    assert any("(search worker): finished on a worker" in line for line in lines)
