"""Keras Tuner searches: the space, trial bookkeeping, pruning, and flat memory over many trials."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")
keras_tuner = pytest.importorskip("keras_tuner")

from benchmark.train import training  # noqa: E402
from benchmark.tune import tuning  # noqa: E402

ISOLATED = "ZOOBENCH_TEST_ISOLATED"  # set in the child process that reruns a memory test alone


def test_training_hps_are_declared_and_split_back():
    hp = keras_tuner.HyperParameters()
    search = {
        "learning_rate": {"min": 1e-4, "max": 1e-2, "sampling": "log"},
        "optimizer": ["adam", "sgd"],
        "augment": {"none": [], "flip": [{"name": "flip"}]},
    }
    base = training.resolve_training({})
    trained, augment = tuning.declare_training_hps(hp, search, base, [])
    assert trained["optimizer"] == "adam" and augment == []
    assert {"train_learning_rate", "train_optimizer", "train_augment"} <= set(hp.values)
    hp.values.update(
        {"train_optimizer": "sgd", "train_augment": "flip", "width": 2.0, "tuner/epochs": 3}
    )
    trained, augment = tuning.declare_training_hps(hp, search, base, [])
    assert trained["optimizer"] == "sgd" and augment == [{"name": "flip"}]
    arch, train = tuning.split_values(hp.values)
    assert arch == {"width": 2.0}
    assert train["optimizer"] == "sgd" and train["augment"] == "flip"


def _data(n=16):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.integers(0, 255, size=(n, 8, 8, 3)).astype(np.uint8)
    return x, y.astype(np.int64)


def _tuner(tmp_path, max_trials, algorithm="random", deadline=None, epochs=1):
    x, y = _data()
    base = training.resolve_training({"batch_size": 16, "early_stopping_patience": 0})
    search = {"learning_rate": {"min": 1e-3, "max": 1e-2, "sampling": "log"}}

    def declare(hp):
        tuning.declare_training_hps(hp, search, base, [])
        return build(hp)

    def build(hp):
        inputs = keras.Input((8, 8, 3))
        h = keras.layers.Rescaling(1 / 255)(inputs)
        h = keras.layers.Conv2D(hp.Int("filters", 2, 4), 3, activation="relu")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        h = keras.layers.Dense(1024)(keras.layers.Dense(512)(h))  # 0.5M weights: ~6 MB with Adam's
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))

    def train_fn(hp, epochs, seed):
        trained, augment = tuning.declare_training_hps(hp, search, base, [])
        keras.utils.set_random_seed(seed)
        return training.fit(build(hp), x, y, x, y, trained, num_classes=2, epochs=epochs, seed=seed)

    settings = {
        "algorithm": algorithm,
        "max_trials": max_trials,
        "epochs": epochs,
        "hyperband_factor": 3,
    }
    oracle = tuning.make_oracle(settings, keras_tuner.HyperParameters(), seed=0)
    return tuning.ZooTuner(
        oracle,
        tuning.SpaceModel(declare),
        train_fn,
        directory=tmp_path,
        project_name="p",
        epochs=1,
        deadline=deadline,
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _plain_fit_growth(tuner, fits: int = 6) -> float:
    """MB of RSS each plain ``model.fit`` of the same model leaves behind in TensorFlow itself.

    TensorFlow 2.x keeps part of every trained model's state after ``clear_session`` (upstream:
    keras-team/keras#17458, tensorflow/tensorflow#61791); a search cannot do better than this.
    """
    x, y = _data()
    hp = keras_tuner.HyperParameters()
    rss = []
    for _ in range(fits):
        keras.backend.clear_session()
        rss.append(_rss_mb())
        model = tuner.hypermodel.build(hp)
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        del model
    return (rss[-1] - rss[1]) / (fits - 2)


@pytest.mark.parametrize(
    "trials",
    [8, pytest.param(20, marks=pytest.mark.slow, id="20-trials")],
    ids=lambda n: f"{n}-trials",
)
def test_trials_keep_memory_flat_and_prune_unused_models(tmp_path, trials, request):
    if os.environ.get(ISOLATED) != request.node.nodeid:
        # Resident memory is only comparable in a fresh process: whatever earlier tests left in
        # TensorFlow's allocator would blur the per-trial growth. Rerun this test alone.
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-m",
                "slow or not slow",
                request.node.nodeid,
            ],
            cwd=request.config.rootpath,
            env={**os.environ, ISOLATED: request.node.nodeid},
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        return
    tuner = _tuner(tmp_path, max_trials=trials)
    baseline = _plain_fit_growth(tuner, fits=6 if trials >= 20 else 5)
    rss = []
    original = tuner.train_fn

    def measured(hp, epochs, seed):
        rss.append(_rss_mb())
        return original(hp, epochs, seed)

    tuner.train_fn = measured
    tuner.search(verbose=0)
    done = list(tuner.oracle.trials.values())
    assert len(done) == trials and all(t.status == "COMPLETED" for t in done)
    # A trial that kept its model, data or tuner state alive would add its ~6 MB of weights and
    # optimizer slots on top of TensorFlow's own per-fit residue (the baseline).
    warm = 3  # after warm-up (tracing caches, allocator pools)
    growth = (rss[-1] - rss[warm]) / (trials - 1 - warm)
    assert growth < 1.5 * baseline + 2, (
        f"{growth:.1f} MB a trial vs {baseline:.1f} MB a plain fit: {rss}"
    )
    best = tuner.best_trials(2)
    assert len(best) == 2 and best[0].score >= best[1].score
    costs = json.loads((tuner.trial_dir(best[0].trial_id) / tuning.TRIAL_COSTS).read_text())
    assert costs["train_seconds"] > 0
    assert tuner.prune({t.trial_id for t in best}) == trials - 2
    assert len(list(tmp_path.glob("p/trial_*/model.keras"))) == 2


def test_a_search_resumes_and_respects_the_deadline(tmp_path):
    import time

    tuner = _tuner(tmp_path, max_trials=3)
    tuner.search(verbose=0)
    assert len(tuner.oracle.trials) == 3
    again = _tuner(tmp_path, max_trials=5)  # reloads the 3 finished trials
    calls = []
    original = again.train_fn
    again.train_fn = lambda hp, epochs, seed: calls.append(1) or original(hp, epochs, seed)
    again.deadline = time.monotonic() - 1  # budget already spent: no new trial starts
    again.search(verbose=0)
    assert calls == [] and len(again.oracle.trials) == 3


class _Killed(BaseException):
    """Stands for ``kill -9``: nothing after the raise runs, as nothing runs after a SIGKILL."""


def _tied(tuner):
    """Every trial scores the same: the best trial is decided by the tie-break alone."""
    original = tuner.train_fn

    def train_fn(hp, epochs, seed):
        result = original(hp, epochs, seed)
        result.history["val_accuracy"] = 0.5
        return result

    tuner.train_fn = train_fn
    return tuner


def _trials(tuner):
    return {t.trial_id: (t.status, t.hyperparameters.values) for t in tuner.oracle.trials.values()}


@pytest.fixture(scope="module")
def unbroken_trials(tmp_path_factory):
    """The trials of an unbroken, tied 3-trial search: what each killed search must resume to."""
    unbroken = _tied(_tuner(tmp_path_factory.mktemp("unbroken"), max_trials=3))
    unbroken.search(verbose=0)
    return _trials(unbroken)


@pytest.mark.parametrize("kill", ["inside trial 2", "between trial 1's file and oracle.json"])
def test_a_killed_search_resumes_to_the_same_trials_and_best_trial(
    tmp_path, monkeypatch, kill, unbroken_trials
):
    broken = _tied(_tuner(tmp_path / "b", max_trials=3))
    if kill == "inside trial 2":
        calls = []
        original = broken.train_fn

        def train_fn(hp, epochs, seed):
            calls.append(1)
            if len(calls) == 3:
                raise _Killed
            return original(hp, epochs, seed)

        broken.train_fn = train_fn
    else:
        oracle, save = broken.oracle, broken.oracle.save

        def save_unless_trial_1_was_just_created():
            if len(oracle.start_order) == 2 and oracle.trials["1"].status == "RUNNING":
                raise _Killed
            save()

        oracle.save = save_unless_trial_1_was_just_created
    with pytest.raises(_Killed):
        broken.search(verbose=0)

    # Keras Tuner reloads trials in the file system's listing order; make it the worst one.
    from keras_tuner.src.backend import io as kt_io

    listing = kt_io.glob
    monkeypatch.setattr(kt_io, "glob", lambda pattern: sorted(listing(pattern), reverse=True))
    resumed = _tied(_tuner(tmp_path / "b", max_trials=3))
    resumed.search(verbose=0)

    assert _trials(resumed) == unbroken_trials
    assert all(status == "COMPLETED" for status, _ in _trials(resumed).values())
    assert [t.trial_id for t in resumed.best_trials(3)] == ["0", "1", "2"]
    assert resumed.oracle.get_best_trials(1)[0].trial_id == "0"  # Keras Tuner's own answer too
    assert not list((tmp_path / "b").rglob("*.tmp"))


@pytest.mark.parametrize("max_trials", [4, 50])
def test_hyperband_runs_the_schedule_the_planner_costs_and_stops_at_max_trials(
    tmp_path, max_trials
):
    tuner = _tuner(tmp_path, max_trials=max_trials, algorithm="hyperband", epochs=3)
    ran = []
    original = tuner.train_fn
    tuner.train_fn = lambda hp, epochs, seed: ran.append(epochs) or original(hp, 1, seed)
    tuner.search(verbose=0)
    planned = tuning.trial_epochs(
        {"algorithm": "hyperband", "epochs": 3, "max_trials": max_trials, "hyperband_factor": 3}
    )
    assert ran == planned
    assert len(ran) == min(max_trials, 6) and max(ran) == 3
