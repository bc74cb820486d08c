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
import time
from pathlib import Path

import pytest
from conftest import TINY_JPG

from benchmark.errors import ZoobenchError
from benchmark.train import distributed

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
        distributed.ENV_TOKEN,
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
    for bad in (
        {"worker": "9000"},
        {"chief": "x:abc"},
        {"chief": "1", "worker": "h:1"},
        {"worker": "h:1", "tuner_id": "chief2"},
    ):
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
    profile = tmp_path / "dist.toml"
    profile.write_text(PROFILE.format(trials=trials))
    port, out = free_port(), tmp_path / "run"
    # nothing a test before this one left in the environment reaches the processes (a stale base
    # oracle port would send chief and workers elsewhere)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERASTUNER_", "ZOOBENCH_"))}
    env["ZOOBENCH_CACHE"] = str(tmp_path / "cache")
    base = [
        sys.executable,
        "-m",
        "benchmark.cli",
        "-v",
        "run",
        str(profile),
        "--out",
        str(out),
        "--data-dir",
        str(TINY_JPG),
    ]
    # The chief demands a token (--token), the workers present it (ZOOBENCH_TOKEN).
    chief = subprocess.Popen(
        base + ["--chief", str(port), "--token", "dist-test-token"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    procs = [
        subprocess.Popen(
            base + ["--worker", f"127.0.0.1:{port}", "--tuner-id", f"worker{i}"],
            env={**env, "ZOOBENCH_TOKEN": "dist-test-token"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(workers)
    ]
    deadline = time.monotonic() + 300
    try:
        # a chief that dies leaves its workers waiting for it: stop at once and show its log
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if chief.poll() not in (None, 0):
                break
            time.sleep(0.5)
        waiting = [i for i, p in enumerate(procs) if p.poll() is None]
    finally:
        for p in (chief, *procs) if any(p.poll() is None for p in procs) else ():
            p.kill()
    chief_log = chief.communicate(timeout=120)[0]
    logs = [p.communicate(timeout=60)[0] for p in procs]
    assert not waiting, f"workers {waiting} still waiting:\n" + "\n---\n".join(
        [chief_log[-3000:], *(log[-2000:] for log in logs)]
    )
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


@pytest.mark.slow  # the two-worker search below runs the same chief / worker path by default
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
        from benchmark.train import distributed
        from benchmark.train import training
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


# ---- the chief's token ---------------------------------------------------------------------------
REFUSED = "the chief at {} refused this worker: wrong or missing token (--token / ZOOBENCH_TOKEN)"


@pytest.fixture
def clean_env(monkeypatch):
    """No KERASTUNER_* or ZOOBENCH_TOKEN variable; teardown restores them as they were."""
    for name in (
        distributed.ENV_ID,
        distributed.ENV_IP,
        distributed.ENV_PORT,
        distributed.ENV_TOKEN,
        "ZOOBENCH_BASE_ORACLE_PORT",
    ):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def _oracle():
    import keras_tuner

    from benchmark.tune import tuning

    hp = keras_tuner.HyperParameters()
    hp.Int("width", 1, 4)
    return tuning.RandomSearchOracle(
        objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=2, hyperparameters=hp
    )


@pytest.fixture
def chief(clean_env, tmp_path):
    """A chief's oracle server on a free loopback port that demands the token "right-token"."""
    from benchmark.tune import tuning

    oracle, address = _oracle(), f"127.0.0.1:{free_port()}"
    oracle._set_project_dir(str(tmp_path / "tuner"), "project")  # where it saves its trials
    server, _ = tuning.start_oracle_server(oracle, address, "right-token")
    yield address, oracle
    server.stop(0)


def _worker_client(monkeypatch, address: str, token: str | None):
    """The worker's proxy to the chief at ``address``, as a ZooTuner on a worker makes it."""
    from keras_tuner.src.distribute.oracle_client import OracleClient

    from benchmark.tune import tuning

    host, port = address.rsplit(":", 1)
    monkeypatch.setenv(distributed.ENV_IP, host)
    monkeypatch.setenv(distributed.ENV_PORT, port)
    monkeypatch.setenv(distributed.ENV_ID, "worker1")
    if token is not None:
        monkeypatch.setenv(distributed.ENV_TOKEN, token)
    client = OracleClient(_oracle())
    tuning.authenticate_client(client)
    return client


def _raw_get_space(address: str, metadata=None):
    """GetSpace over a plain channel (no zoobench interceptor): what any local process can send."""
    import grpc
    from keras_tuner.src import protos

    with grpc.insecure_channel(address) as channel:
        stub = protos.get_service_grpc().OracleStub(channel)
        return stub.GetSpace(protos.get_service().GetSpaceRequest(), metadata=metadata, timeout=30)


def test_a_worker_with_the_token_reaches_the_oracle(chief, clean_env):
    address, oracle = chief
    client = _worker_client(clean_env, address, "right-token")
    assert client.get_space().values == {"width": 1}
    trial = client.create_trial("worker1")
    assert trial.trial_id in oracle.trials  # created on the chief's oracle
    response = _raw_get_space(address, metadata=[("authorization", "Bearer right-token")])
    assert response.hyperparameters  # the metadata alone is the whole protocol


@pytest.mark.parametrize("token", [None, "wrong-token", "right-token-2", "right-toke"])
def test_a_worker_without_the_token_is_refused(chief, clean_env, token):
    import grpc

    address, oracle = chief
    client = _worker_client(clean_env, address, token)
    for call in (client.get_space, lambda: client.create_trial("worker1")):
        with pytest.raises(ZoobenchError) as refused:
            call()
        assert str(refused.value) == REFUSED.format(address)
        assert refused.value.__cause__ is None and refused.value.__context__ is None
    assert not oracle.trials and not oracle.tuner_ids  # nothing reached the oracle
    # On the wire: gRPC's own UNAUTHENTICATED with a one-line detail, whatever the client.
    metadata = None if token is None else [("authorization", f"Bearer {token}")]
    with pytest.raises(grpc.RpcError) as rpc:
        _raw_get_space(address, metadata)
    assert rpc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rpc.value.details() == distributed.REFUSAL and "\n" not in rpc.value.details()


def test_a_loopback_chief_needs_no_token_but_honours_one(clean_env, capsys):
    from benchmark.tune import tuning

    port = free_port()
    assert distributed.configure_tuning(chief=str(port)) == "chief"
    assert distributed.chief_token() is None and capsys.readouterr().err == ""
    server, _ = tuning.start_oracle_server(_oracle(), f"127.0.0.1:{port}", None)
    try:
        assert _raw_get_space(f"127.0.0.1:{port}").hyperparameters  # as before: no token asked
    finally:
        server.stop(0)
    assert distributed.configure_tuning(chief=f"localhost:{port}", token="given") == "chief"
    assert distributed.chief_token() == "given" and capsys.readouterr().err == ""  # not printed
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "[::1]", "::1"):
        assert distributed.is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.org", ""):
        assert not distributed.is_loopback(host), host


def test_a_chief_beyond_loopback_generates_and_prints_a_token(clean_env, capsys):
    from benchmark.tune import tuning

    port = free_port()
    assert distributed.configure_tuning(chief=f"0.0.0.0:{port}") == "chief"
    token = os.environ[distributed.ENV_TOKEN]
    err = capsys.readouterr().err
    assert len(token) >= 32 and err.count("\n") == 1 and f"--token {token}" in err, err
    assert distributed.chief_token() == token  # every search of the run: the same token,
    assert capsys.readouterr().err == ""  # printed once
    server, _ = tuning.start_oracle_server(_oracle(), f"0.0.0.0:{port}", distributed.chief_token())
    try:
        assert _raw_get_space(f"127.0.0.1:{port}", [("authorization", f"Bearer {token}")])
        clean_env.delenv(distributed.ENV_TOKEN)
        client = _worker_client(clean_env, f"127.0.0.1:{port}", None)
        with pytest.raises(ZoobenchError, match="refused this worker"):
            client.get_space()
    finally:
        server.stop(0)
    # Another generated token differs; a token given is kept, not replaced or printed.
    clean_env.delenv(distributed.ENV_TOKEN, raising=False)
    distributed.configure_tuning(chief=f"0.0.0.0:{port}")
    assert os.environ[distributed.ENV_TOKEN] != token
    capsys.readouterr()
    distributed.configure_tuning(chief=f"0.0.0.0:{port}", token="mine")
    assert os.environ[distributed.ENV_TOKEN] == "mine" and capsys.readouterr().err == ""


def test_bad_tokens_are_refused_before_anything_changes(clean_env):
    for bad in ("", "has space", "tab\there", "caf\u00e9"):
        with pytest.raises(ZoobenchError, match="--token"):
            distributed.configure_tuning(chief="8000", token=bad)
        assert distributed.ENV_IP not in os.environ and distributed.ENV_TOKEN not in os.environ
    clean_env.setenv(distributed.ENV_TOKEN, "bad token")
    with pytest.raises(ZoobenchError, match="ZOOBENCH_TOKEN"):
        distributed.configure_tuning(worker="127.0.0.1:8000")


def test_the_cli_worker_refused_by_the_chief_says_one_line(chief, tmp_path):
    """``zoobench run --worker`` without the chief's token: exit 2, the one line, no traceback."""
    address, oracle = chief
    profile = tmp_path / "dist.toml"
    profile.write_text(PROFILE.format(trials=2))
    # nothing a test before this one left in the environment reaches the processes (a stale base
    # oracle port would send chief and workers elsewhere)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERASTUNER_", "ZOOBENCH_"))}
    env["ZOOBENCH_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark.cli",
            "run",
            str(profile),
            "--out",
            str(tmp_path / "run"),
            "--data-dir",
            str(TINY_JPG),
            "--worker",
            address,
            "--token",
            "wrong-token",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "zoobench: error: " + REFUSED.format(address)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not oracle.trials


def test_a_local_search_hides_the_chief_settings_and_restores_them(monkeypatch):
    """Feature extraction's head search must not start Keras Tuner's own (token-less) chief."""
    monkeypatch.setenv(distributed.ENV_ID, "chief")
    monkeypatch.setenv(distributed.ENV_IP, "127.0.0.1")
    monkeypatch.setenv(distributed.ENV_PORT, "8000")
    with distributed.local_search():
        assert distributed.role() is None
    assert distributed.role() == "chief" and os.environ[distributed.ENV_PORT] == "8000"
