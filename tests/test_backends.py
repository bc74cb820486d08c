"""zoobench on each Keras backend: the smoke run end to end, no TensorFlow where it is not the backend,
a member moved between backends, and the backend-specific pieces (data parallelism, TensorBoard).

The JAX smoke run happens where TensorFlow is installed and importable, and checks that nothing
imported it; the PyTorch one (and the other JAX and PyTorch pieces) in subprocesses whose
interpreter behaves as if TensorFlow were not installed (tests/no_tensorflow), as on a JAX- or
PyTorch-only GPU machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shrunk_smoke_toml

REPO = Path(__file__).resolve().parents[1]
NO_TENSORFLOW = Path(__file__).resolve().parent / "no_tensorflow"


def _needs(backend: str) -> None:
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"the {backend} backend is not installed (pip install 'zoobench[{backend}]')")


def _python(
    code: str, backend: str, *, hide_tensorflow: bool, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter on ``backend`` (optionally with TensorFlow 'uninstalled')."""
    paths = [str(NO_TENSORFLOW)] if hide_tensorflow else []
    paths += [str(REPO), os.environ.get("PYTHONPATH", "")]
    full_env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
        TF_CPP_MIN_LOG_LEVEL="2",
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


RUN_SMOKE = """
import shutil, sys
from benchmark.cli.app import main
args = ["--backend", "{backend}", "run", {profile!r}, "--out", {out!r}, "--data-dir", {data!r}]
status = main(args)
import importlib.util
print("TENSORFLOW_IMPORTABLE", importlib.util.find_spec("tensorflow") is not None)
print("TENSORFLOW_LOADED", "tensorflow" in sys.modules)
if status == 0:
    shutil.copy({out!r} + "/leaderboard.csv", {out!r} + "/leaderboard-first.csv")
    print("=== RERUN ===")  # a second Runner over the same folder: it must resume, training nothing
    status = main(args)
sys.exit(status)
"""


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, tiny_jpg):
    """``run(backend)``: the shrunk smoke profile (with flip and pad-crop augmentation) run, then
    rerun, through the CLI in one fresh interpreter on ``backend``; each backend runs once a module."""
    done: dict[str, tuple[Path, subprocess.CompletedProcess]] = {}

    def run(backend: str) -> tuple[Path, subprocess.CompletedProcess]:
        _needs(backend)
        if backend not in done:
            folder = tmp_path_factory.mktemp(f"smoke-{backend}")
            profile = shrunk_smoke_toml(folder / "smoke.toml", augment=True)
            out = folder / "smoke"
            code = RUN_SMOKE.format(
                backend=backend, profile=str(profile), out=str(out), data=str(tiny_jpg)
            )
            # JAX runs where TensorFlow could be imported (so not loading it is zoobench's doing),
            # PyTorch where it cannot (a PyTorch-only machine); the decoded-pixel cache is shared.
            done[backend] = out, _python(code, backend, hide_tensorflow=backend == "torch")
        return done[backend]

    return run


# TensorFlow's CLI smoke run is -m slow only (docs/testing.md says so): by default
# tests/test_runner.py runs the same smoke profile on TensorFlow (report included) and
# tests/test_fault_injection.py runs, kills and resumes `zoobench run` on TensorFlow.
@pytest.mark.parametrize(
    "backend", [pytest.param("tensorflow", marks=pytest.mark.slow), "jax", "torch"]
)
def test_the_smoke_profile_runs_and_resumes_on_each_backend(backend, smoke_runs):
    out, proc = smoke_runs(backend)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, _, again = proc.stdout.partition("=== RERUN ===")
    if backend == "jax":  # TensorFlow was there to import, and nothing imported it
        assert "TENSORFLOW_IMPORTABLE True" in first and "TENSORFLOW_LOADED False" in first
    elif backend == "torch":  # it ran where TensorFlow cannot be imported at all
        assert "TENSORFLOW_IMPORTABLE" in first and "TENSORFLOW_LOADED False" in first
    meta = json.loads((out / "run.json").read_text())
    assert meta["backend"] == backend and meta["machine"]["backend"] == backend
    board = pd.read_csv(out / "leaderboard-first.csv")
    members = board[board.kind != "ensemble"]
    # Round 1 of the boosted member runs unless round 0 was no better than chance (SAMME stops).
    assert {"seed_cnn tiny", "seed_cnn tiny (tuned)", "seed_cnn tiny swish [boost 0]"} <= set(
        members.model
    ) and len(members) <= 4, board[["model", "status", "reason"]]
    assert set(members.status) == {"done"}, board[["model", "status", "reason"]]
    assert (board.kind == "ensemble").any()
    _check_accuracies(out, board)
    assert (out / "report" / "index.html").exists()

    assert again.count("kept") >= 3  # the rerun resumed: it trained nothing
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "leaderboard.csv").drop(columns=["images_per_second"]),
        board.drop(columns=["images_per_second"]),
    )


def _check_accuracies(out: Path, board: pd.DataFrame) -> None:
    """Every finished row's test (and every member's validation) accuracy is what its stored
    probabilities score against the stored labels, not just a number in [0, 1]."""
    from benchmark.store.runstore import RunStore

    store = RunStore(out)
    y_val, y_test = store.labels("val"), store.labels("test")
    entries = {e.key: e for e in [*store.members(), *store.ensembles()]}
    done = board[board.status == "done"]
    for _, row in done.iterrows():
        entry = entries[row["id"]]
        test = entry.probs("test")
        assert test.shape == (len(y_test), 10) and np.allclose(test.sum(1), 1, atol=1e-3)
        assert row.test_accuracy == pytest.approx(float(np.mean(test.argmax(1) == y_test))), (
            row.model
        )
        if row.kind != "ensemble":  # ensembles fit on validation carry an out-of-fold figure
            val = entry.probs("val")
            assert row.val_accuracy == pytest.approx(float(np.mean(val.argmax(1) == y_val)))
    # (Not "better than chance": the shrunk smoke members see 100 pictures for 2 epochs, and on JAX
    # they can land at chance; what this checks is that every figure is the one its data gives.)


def test_a_member_trained_on_jax_predicts_the_same_on_tensorflow(smoke_runs, tmp_path):
    """A smoke member trained on JAX (with flip and pad-crop batches) loads on TensorFlow and gives
    the test probabilities JAX stored for it."""
    out, proc = smoke_runs("jax")
    assert proc.returncode == 0, proc.stderr[-3000:]
    member = sorted(
        p
        for p in (out / "members").iterdir()
        if (p / "model.keras").is_file()
        and not json.loads((p / "config.json").read_text())["preprocess"]
    )[0]
    assert json.loads((member / "config.json").read_text())["augment"]
    images = out / "data" / "x_test.npy"
    loaded = _python(
        "import numpy as np, keras, zoo\n"
        "zoo.list_models()  # registers the zoo's layers\n"
        f"model = keras.saving.load_model({str(member / 'model.keras')!r}, safe_mode=True)\n"
        f"np.save({str(tmp_path / 'tf_probs.npy')!r}, model.predict(np.load({str(images)!r})"
        ".astype('float32'), verbose=0))\n"
        "print(keras.backend.backend())",
        "tensorflow",
        hide_tensorflow=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().endswith("tensorflow")
    jax_probs, tf_probs = np.load(member / "test_probs.npy"), np.load(tmp_path / "tf_probs.npy")
    assert jax_probs.shape == (50, 10)
    np.testing.assert_array_equal(jax_probs.argmax(1), tf_probs.argmax(1))
    np.testing.assert_allclose(jax_probs, tf_probs, atol=1e-4)


def test_jax_data_parallel_spreads_over_every_local_device():
    _needs("jax")
    code = (
        "from benchmark.train import distributed\n"
        "s = distributed.make_strategy('mirrored')\n"
        "print(type(s).__name__, len(s.device_mesh.devices.flatten()))\n"
    )
    done = _python(
        code,
        "jax",
        hide_tensorflow=True,
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["DataParallel", "2"]


def test_torch_refuses_a_data_parallel_strategy_with_a_reason():
    _needs("torch")
    code = (
        "from benchmark.train import distributed\n"
        "from benchmark.errors import ZoobenchError\n"
        "try:\n    distributed.make_strategy('mirrored')\n"
        "except ZoobenchError as exc:\n    print(exc)\n"
    )
    done = _python(code, "torch", hide_tensorflow=True)
    assert "the torch backend has no Keras data-parallel engine" in done.stdout, done.stderr[-2000:]


def test_backend_selection_is_checked():
    from zoo import backend
    from zoo.registry import ZooError

    with pytest.raises(ZooError, match="unknown backend 'theano'"):
        backend.select("theano")
    import keras

    other = "jax" if keras.backend.backend() != "jax" else "torch"
    with pytest.raises(ZooError, match="Keras was already imported"):
        backend.select(other)
    backend.select(keras.backend.backend())  # the running backend is accepted


def test_scalar_tensorboard_writes_train_and_validation_events(tmp_path):
    import keras

    from benchmark.train.training import ScalarTensorBoard

    callback = ScalarTensorBoard(str(tmp_path / "tb"))
    callback.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    callback.on_epoch_end(0, {"loss": 1.5, "accuracy": 0.25, "val_loss": 1.7, "val_accuracy": 0.2})
    callback.on_epoch_end(1, {"loss": 1.2, "accuracy": 0.4, "val_loss": 1.4, "val_accuracy": 0.3})
    callback.on_train_end()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for split, expected in (("train", [1.5, 1.2]), ("validation", [1.7, 1.4])):
        events = EventAccumulator(str(tmp_path / "tb" / split))
        events.Reload()
        tags = events.Tags()
        scalars = tags.get("scalars", []) + tags.get("tensors", [])
        assert "epoch_loss" in scalars, tags
        values = (
            [e.value for e in events.Scalars("epoch_loss")]
            if "epoch_loss" in tags.get("scalars", [])
            else [float(np.asarray(_tensor(e))) for e in events.Tensors("epoch_loss")]
        )
        np.testing.assert_allclose(values, expected, rtol=1e-6)


def _tensor(event):
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(event.tensor_proto)


RUN_RECIPE = """
import json, sys
import keras, numpy as np
from benchmark.config.profiles import parse_profile
from benchmark.run.runner import Runner
raw = {{
    "name": "recipe",
    "data": {{"dataset": "cifar10", "train_size": 100, "val_size": 50, "test_size": 50}},
    "members": [{{"architecture": "fastnet", "hp": {{"width": 0.25}},
                 "training": {{"epochs": 2, "batch_size": 25, "ema": 0.5, "tta": "flip"}}}}],
    "ensembles": {{"enabled": False}},
    "report": {{"enabled": False}},
}}
runner = Runner(parse_profile(raw, "recipe"), {out!r}, data_dir={data!r})
runner.run()
(member,) = runner.store.members()
model = keras.saving.load_model(member.model_path, safe_mode=True)
x = runner.store.load_array("x_test").astype("float32")
diff = float(np.abs(model.predict(x, verbose=0) - member.probs("test", calibrated=False)).max())
inner = next(layer for layer in model.layers if isinstance(layer, keras.Model))
print(json.dumps({{"ok": member.ok, "diff": diff, "backend": keras.backend.backend(),
                  "adapted": float(keras.ops.convert_to_numpy(inner.get_layer("whiten").adapted)),
                  "augment": [s["name"] for s in member.config["augment"]],
                  "tensorflow": "tensorflow" in sys.modules}}))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_member_trained_by_the_record_recipe_on_each_backend(backend, tmp_path, tiny_jpg):
    """fastnet by its recipe (whitening, averaged weights, alternating flips, test-time views) on
    JAX and PyTorch, where TensorFlow cannot be imported: the stored model gives the stored
    probabilities."""
    _needs(backend)
    code = RUN_RECIPE.format(out=str(tmp_path / "run"), data=str(tiny_jpg))
    proc = _python(code, backend, hide_tensorflow=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["backend"] == backend and not result["tensorflow"]
    assert result["adapted"] == 1.0 and result["augment"] == ["alternating_flip", "pad_crop"]
    assert result["diff"] < 1e-5
