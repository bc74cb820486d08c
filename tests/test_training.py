"""Training settings: schedules give the expected rates, optimizers are what they say, guards fire."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from benchmark.errors import ZoobenchError  # noqa: E402
from benchmark.train import training  # noqa: E402


def lr_at(schedule, step: int) -> float:
    return (
        float(keras.ops.convert_to_numpy(schedule(step))) if callable(schedule) else float(schedule)
    )


def cfg(**kw):
    return training.resolve_training(kw)


def test_constant_and_step_schedules():
    assert training.make_schedule(cfg(learning_rate=0.1), 10) == 0.1
    s = training.make_schedule(
        cfg(learning_rate=0.1, schedule="step", step_epochs=2, step_factor=0.5), 10
    )
    assert lr_at(s, 0) == pytest.approx(0.1)
    assert lr_at(s, 19) == pytest.approx(0.1)
    assert lr_at(s, 20) == pytest.approx(0.05)
    assert lr_at(s, 45) == pytest.approx(0.025)


def test_cosine_with_warmup():
    s = training.make_schedule(
        cfg(learning_rate=0.2, schedule="cosine", epochs=10, warmup_epochs=1), 10
    )
    assert lr_at(s, 0) == pytest.approx(0.0, abs=1e-7)
    assert lr_at(s, 5) == pytest.approx(0.1, rel=1e-4)  # half-way up the warm-up
    assert lr_at(s, 10) == pytest.approx(0.2, rel=1e-4)  # peak at the end of warm-up
    assert lr_at(s, 55) == pytest.approx(0.1, rel=1e-3)  # half-way down the cosine
    assert lr_at(s, 100) == pytest.approx(0.0, abs=1e-6)


def test_cosine_without_warmup_starts_at_the_rate():
    s = training.make_schedule(cfg(learning_rate=0.2, schedule="cosine", epochs=2), 5)
    assert lr_at(s, 0) == pytest.approx(0.2)
    assert lr_at(s, 5) == pytest.approx(0.1, rel=1e-4)


def test_one_cycle_shape_and_serialisation():
    s = training.make_schedule(
        cfg(learning_rate=1.0, schedule="one-cycle", epochs=4), 25
    )  # 100 steps
    assert lr_at(s, 0) == pytest.approx(1.0 / 25)
    assert lr_at(s, 25) == pytest.approx(1.0, rel=1e-5)  # pct_start 0.25 of 100 steps
    assert lr_at(s, 12) == pytest.approx(1 / 25 + (1 - 1 / 25) * 12 / 25, rel=1e-5)
    assert lr_at(s, 100) == pytest.approx(1 / 25 / 1e4, rel=1e-3)
    values = [lr_at(s, i) for i in range(25, 101, 5)]
    assert all(
        a >= b for a, b in zip(values, values[1:], strict=False)
    )  # monotone annealing after the peak
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert isinstance(again, training.OneCycle) and lr_at(again, 60) == pytest.approx(lr_at(s, 60))


def test_optimizers_carry_momentum_nesterov_and_weight_decay():
    sgd = training.make_optimizer(
        cfg(optimizer="sgd", momentum=0.8, nesterov=True, weight_decay=1e-4), 10
    )
    assert (
        isinstance(sgd, keras.optimizers.SGD)
        and sgd.nesterov
        and sgd.momentum == pytest.approx(0.8)
    )
    assert sgd.weight_decay == pytest.approx(1e-4)
    assert isinstance(training.make_optimizer(cfg(optimizer="adamw"), 10), keras.optimizers.AdamW)
    assert isinstance(
        training.make_optimizer(cfg(optimizer="rmsprop"), 10), keras.optimizers.RMSprop
    )


def test_resolve_training_names_the_bad_key():
    with pytest.raises(ZoobenchError, match="optimiser"):
        training.resolve_training({"optimiser": "adam"}, where="members[0].training")
    with pytest.raises(ZoobenchError, match=r"members\[0\]\.training\.schedule"):
        training.resolve_training({"schedule": "linear"}, where="members[0].training")
    with pytest.raises(ZoobenchError, match="epochs"):
        training.resolve_training({"epochs": 0})


def test_label_format_follows_smoothing_and_mixing():
    assert training.uses_sparse_labels(cfg(), [])
    assert not training.uses_sparse_labels(cfg(label_smoothing=0.1), [])
    assert not training.uses_sparse_labels(cfg(), [{"name": "mixup"}])
    with pytest.raises(ZoobenchError):
        training.uses_sparse_labels(cfg(loss="sparse", label_smoothing=0.1), [])


def tiny_model(num_classes: int = 3, activation: str | None = "relu") -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation=activation)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def tiny_data(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 60, size=(n, 8, 8, 3)).astype(np.uint8)
    x[..., 0] = (y * 100)[:, None, None]  # learnable: the red channel encodes the label
    return x, y.astype(np.int64)


def test_fit_learns_and_records_history():
    keras.utils.set_random_seed(0)
    x, y = tiny_data()
    result = training.fit(
        tiny_model(),
        x,
        y,
        x,
        y,
        cfg(epochs=3, batch_size=8, learning_rate=0.01),
        num_classes=3,
        augment=[{"name": "flip"}],
    )
    assert result.ok and result.epochs == 3
    assert list(result.history["epoch"]) == [1, 2, 3]
    assert {"loss", "accuracy", "val_accuracy", "val_loss", "epoch_seconds"} <= set(
        result.history.columns
    )
    assert result.history["learning_rate"].iloc[-1] == pytest.approx(0.01)
    loss, val_loss = result.history["loss"], result.history["val_loss"]
    assert loss.iloc[-1] < loss.iloc[0], list(loss)  # learns: the training loss falls
    assert val_loss.iloc[-1] < val_loss.iloc[0], list(val_loss)
    from benchmark.store.inference import timed_probabilities

    probs, ips = timed_probabilities(result.model, x)
    assert probs.shape == (len(x), 3) and ips > 0
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the steady rate leaves the first epoch (tracing) out; the first epoch's excess is apart
    assert result.extra["steady_train_images_per_second"] > 0
    assert result.extra["compile_seconds"] >= 0


def test_steady_rates_take_the_median_epoch_after_the_first():
    rates = training.steady_rates([30.0, 2.0, 3.0, 2.5], 45_000)
    assert rates == {"steady_train_images_per_second": 18_000.0, "compile_seconds": 27.5}
    assert training.steady_rates([30.0], 45_000) == {}  # one epoch: no steady state to tell
    assert training.steady_rates([1.0, 3.0], 300)["compile_seconds"] == 0.0  # never negative


def test_nan_loss_marks_the_fit_failed():
    keras.utils.set_random_seed(0)
    x, y = tiny_data()
    x = x.astype(np.float32)
    x[5, 0, 0, 0] = np.nan  # one bad pixel poisons the loss of its batch (no ReLU to hide it)
    result = training.fit(
        tiny_model(activation=None), x, y, x, y, cfg(epochs=4, batch_size=8), num_classes=3
    )
    assert not result.ok and "NaN" in result.failed_reason
    assert result.epochs < 4


def test_deadline_stops_at_the_end_of_the_crossing_epoch():
    x, y = tiny_data()
    result = training.fit(
        tiny_model(),
        x,
        y,
        x,
        y,
        cfg(epochs=50, batch_size=8),
        num_classes=3,
        deadline=time.monotonic() - 1,
    )
    assert result.ok and result.stopped_by_budget and result.epochs == 1


def test_evaluate_probs():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    got = training.evaluate_probs(probs, np.array([0, 1, 1]))
    assert got["accuracy"] == pytest.approx(2 / 3)
    assert got["loss"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)
