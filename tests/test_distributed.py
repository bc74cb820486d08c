"""Distributed paths on one CPU machine: Keras Tuner chief + workers on 127.0.0.1, MirroredStrategy
over two logical CPU devices."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import SHARED_JPG

from benchmark import distributed
from benchmark.errors import ZoobenchError

PROFILE = """
name = "dist"
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
max_trials = {trials}
epochs = 1
[tuner.search]
learning_rate = {{ min = 0.0005, max = 0.005, sampling = "log" }}
[[members]]
architecture = "seed_cnn"
name = "tuned"
hp = {{ width = 0.5, dense_units = 0 }}
tune = true
[ensembles]
enabled = false
[report]
enabled = false
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_roles_come_from_flags_and_environment(monkeypatch):
    for name in (
        distributed.ENV_ID,
        distributed.ENV_IP,
        distributed.ENV_PORT,
        "ZOOBENCH_BASE_ORACLE_PORT",
    ):
        monkeypatch.setenv(name, "")  # recorded, so teardown restores the variable's absence
        monkeypatch.delenv(name)
    assert distributed.role() is None
    assert distributed.configure_tuning(chief="8000") == "chief"
    assert os.environ[distributed.ENV_IP] == "127.0.0.1"  # loopback unless told otherwise
    with distributed.search_port(2):
        assert os.environ[distributed.ENV_PORT] == "8002"
    assert os.environ[distributed.ENV_PORT] == "8000"
    assert distributed.configure_tuning(worker="10.0.0.1:9000", tuner_id="w1") == "worker"
    assert os.environ[distributed.ENV_ID] == "w1"
    for bad in ({"worker": "9000"}, {"chief": "x:abc"}, {"chief": "1", "worker": "h:1"},
                {"worker": "h:1", "tuner_id": "chief2"}):  # fmt: skip
        before = {
            k: os.environ.get(k)
            for k in (distributed.ENV_ID, distributed.ENV_IP, distributed.ENV_PORT)
        }
        with pytest.raises(ZoobenchError):
            distributed.configure_tuning(**bad)
        assert {k: os.environ.get(k) for k in before} == before  # a refused call changes nothing
    monkeypatch.delenv(distributed.ENV_ID)
    with pytest.raises(ZoobenchError, match="KERASTUNER_TUNER_ID"):
        distributed.role()


def _run_distributed(tmp_path: Path, workers: int, trials: int) -> None:
    if not (SHARED_JPG / "train").is_dir():
        pytest.skip("no shared CIFAR-10 copy")
    profile = tmp_path / "dist.toml"
    profile.write_text(PROFILE.format(trials=trials))
    port, out = free_port(), tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env["ZOOBENCH_CACHE"] = str(tmp_path / "cache")
    base = [sys.executable, "-m", "benchmark.cli", "-v", "run", str(profile), "--out", str(out),
            "--data-dir", str(SHARED_JPG)]  # fmt: skip
    chief = subprocess.Popen(base + ["--chief", str(port)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    procs = [
        subprocess.Popen(
            base + ["--worker", f"127.0.0.1:{port}", "--tuner-id", f"worker{i}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(workers)
    ]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
        chief_log = chief.communicate(timeout=120)[0]
    finally:
        for p in (chief, *procs):
            if p.poll() is None:
                p.kill()
    assert chief.returncode == 0, chief_log[-3000:]
    assert all(p.returncode == 0 for p in procs), logs
    started = [m for log in logs for m in re.findall(r"trial (\d+) started by (worker\d+)", log)]
    ids = [t for t, _ in started]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == trials, (
        started
    )  # each trial exactly once
    project = next((out / "tuner").iterdir())
    states = [json.loads(p.read_text())["status"] for p in project.glob("trial_*/trial.json")]
    assert states == ["COMPLETED"] * trials
    members = list((out / "members").iterdir())
    assert len(members) == 1 and (members[0] / "metrics.json").is_file()  # in the chief's store
    config = json.loads((members[0] / "config.json").read_text())
    assert config["tuner"]["trial"] in ids
    assert len(list(project.glob("trial_*/model.keras"))) == 1  # unused trial models pruned


def test_chief_and_one_worker(tmp_path):
    _run_distributed(tmp_path, workers=1, trials=2)


def test_chief_and_two_workers_share_a_search(tmp_path):
    _run_distributed(tmp_path, workers=2, trials=4)


def test_mirrored_strategy_trains_on_two_logical_cpus():
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
        import keras
        from benchmark import distributed, training
        strategy = distributed.make_strategy("mirrored")
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
        rng = np.random.default_rng(0)
        x = rng.integers(0, 255, size=(32, 8, 8, 3)).astype(np.uint8)
        y = np.arange(32) % 2
        with distributed.scope(strategy):
            inputs = keras.Input((8, 8, 3))
            h = keras.layers.Conv2D(4, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
            model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
                keras.layers.GlobalAveragePooling2D()(h)))
            result = training.fit(model, x, y, x, y, training.resolve_training(
                {"epochs": 2, "batch_size": 16}), num_classes=2)
        assert result.ok and result.epochs == 2, result
        print("REPLICAS", strategy.num_replicas_in_sync, "EPOCHS", result.epochs)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REPLICAS 2 EPOCHS 2" in proc.stdout
