"""Training one model: losses, optimizers, learning-rate schedules, callbacks and the fit loop.

Every member of a benchmark (and every tuner trial) is trained through :func:`fit`, so the settings
that a profile's ``[training]`` table names mean the same thing everywhere. A training config is a
plain dict (it is stored in each member's ``config.json``); :func:`resolve_training` fills in the
defaults and rejects unknown keys.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from benchmark import metrics

# The [training] table's options, defaults and checks are plain data in benchmark.config.schema (one
# definition, read by the profile parser without Keras); re-exported for the code that trains.
from benchmark.config.schema import (  # noqa: F401
    DEFAULT_TRAINING,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    resolve_training,
)
from benchmark.data.augment import make_dataset, stream_steps, streams_epochs
from benchmark.errors import ZoobenchError
from zoo.record_layers import PatchWhitening, with_test_time_views

log = logging.getLogger(__name__)

# ---- learning-rate schedules -----------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="zoobench")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Smith's one-cycle policy: linear ramp to ``max_lr`` then cosine annealing to a tiny rate.

    Starts at ``max_lr / div_factor``, peaks at ``pct_start`` of ``total_steps``, ends at
    ``max_lr / (div_factor * final_div_factor)``.
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.25,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
    ):
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        start = self.max_lr / self.div_factor
        end = start / self.final_div_factor
        up_steps = max(1.0, self.pct_start * self.total_steps)
        down_steps = max(1.0, self.total_steps - up_steps)
        ramp = start + (self.max_lr - start) * ops.minimum(step / up_steps, 1.0)
        progress = ops.clip((step - up_steps) / down_steps, 0.0, 1.0)
        anneal = end + (self.max_lr - end) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < up_steps, ramp, anneal)

    def get_config(self) -> dict[str, Any]:
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }


@keras.saving.register_keras_serializable(package="zoobench")
class Triangle(keras.optimizers.schedules.LearningRateSchedule):
    """The speed records' schedule (airbench94): linear from ``start`` x ``peak_lr`` up to
    ``peak_lr`` at ``peak_at`` of the steps, then linear down to ``end`` x ``peak_lr``."""

    def __init__(
        self,
        peak_lr: float,
        total_steps: int,
        peak_at: float = 0.23,
        start: float = 0.2,
        end: float = 0.07,
    ):
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.peak_at = float(peak_at)
        self.start = float(start)
        self.end = float(end)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        up = max(1.0, self.peak_at * self.total_steps)
        down = max(1.0, self.total_steps - up)
        rise = self.start + (1.0 - self.start) * ops.minimum(step / up, 1.0)
        fall = 1.0 + (self.end - 1.0) * ops.clip((step - up) / down, 0.0, 1.0)
        return self.peak_lr * ops.where(step < up, rise, fall)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak_lr": self.peak_lr,
            "total_steps": self.total_steps,
            "peak_at": self.peak_at,
            "start": self.start,
            "end": self.end,
        }


def make_schedule(training: dict[str, Any], steps_per_epoch: int):
    """The learning rate (a float or a LearningRateSchedule) that ``training`` asks for."""
    lr = float(training["learning_rate"])
    steps_per_epoch = max(1, int(steps_per_epoch))
    total = steps_per_epoch * int(training["epochs"])
    kind = training["schedule"]
    if kind == "constant":
        return lr
    if kind == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            lr,
            decay_steps=max(1, int(training["step_epochs"]) * steps_per_epoch),
            decay_rate=float(training["step_factor"]),
            staircase=True,
        )
    if kind == "cosine":
        warmup = int(round(float(training["warmup_epochs"]) * steps_per_epoch))
        if warmup:
            return keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps=max(1, total - warmup), warmup_target=lr, warmup_steps=warmup
            )
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total))
    if kind == "one-cycle":
        return OneCycle(lr, total_steps=total)
    if kind == "triangle":
        return Triangle(lr, total_steps=total)
    raise ZoobenchError(f"training.schedule: unknown schedule {kind!r}")


# The weight average spans at most this share of a run's steps (its horizon is 1 / (1 - momentum)
# steps). A short run (few images, few epochs) would otherwise average over its first, fast-moving
# steps, against batch-norm statistics that are not averaged: fastnet's recipe (momentum 0.99) on
# 10,000 images for 2 epochs (156 steps) reached 20% validation accuracy with it, 62% without
# (docs/results/ema-short-runs.json). airbench's own average warms up over the run for the same
# reason; at the recipes' full lengths this bound is above their momentum and changes nothing.
EMA_HORIZON_SHARE = 0.075


def ema_momentum(training: dict[str, Any], steps_per_epoch: int) -> float:
    """``training["ema"]``, lowered where the run is too short for its averaging horizon."""
    steps = max(1, int(steps_per_epoch) * int(training["epochs"]))
    return min(float(training["ema"]), max(0.0, 1.0 - 1.0 / max(1.0, EMA_HORIZON_SHARE * steps)))


def make_optimizer(training: dict[str, Any], steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam, AdamW, RMSprop, SGD (momentum, Nesterov) or Muon with the schedule, decoupled weight
    decay and, with ``ema``, Keras's weight averaging (the averaged weights replace the trained ones
    when ``fit`` ends)."""
    lr = make_schedule(training, steps_per_epoch)
    kwargs: dict[str, Any] = {"learning_rate": lr}
    if training["weight_decay"]:
        kwargs["weight_decay"] = float(training["weight_decay"])
    if training.get("clipnorm"):
        kwargs["clipnorm"] = float(training["clipnorm"])
    if training.get("ema"):
        kwargs.update(use_ema=True, ema_momentum=ema_momentum(training, steps_per_epoch))
    name = training["optimizer"]
    if name == "muon":
        # Keras's Muon orthogonalises the updates of conv and dense kernels and runs AdamW on the
        # rest; the classifier ("probs", airbench's "logits") stays on AdamW, as in airbench94_muon.
        kwargs.setdefault("weight_decay", 0.0)
        return keras.optimizers.Muon(exclude_layers=["probs", "logits"], **kwargs)
    if name == "adam":
        return keras.optimizers.Adam(**kwargs)
    if name == "adamw":
        kwargs.setdefault(
            "weight_decay", 0.004
        )  # Keras's AdamW default; 0 would make it plain Adam
        return keras.optimizers.AdamW(**kwargs)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(momentum=float(training["momentum"]), **kwargs)
    return keras.optimizers.SGD(
        momentum=float(training["momentum"]), nesterov=bool(training["nesterov"]), **kwargs
    )


def uses_sparse_labels(training: dict[str, Any], augment: Sequence[dict]) -> bool:
    """Integer labels when nothing needs distributions (no label smoothing, no mixing policy)."""
    mixing = any(step.get("name") in ("mixup", "cutmix") for step in augment)
    if training["loss"] == "sparse":
        if mixing or training["label_smoothing"]:
            raise ZoobenchError(
                "training.loss = 'sparse' cannot be combined with label smoothing or mixup/cutmix"
            )
        return True
    if training["loss"] == "categorical":
        return False
    return not mixing and not training["label_smoothing"]


def make_loss(training: dict[str, Any], sparse: bool) -> keras.losses.Loss:
    if sparse:
        return keras.losses.SparseCategoricalCrossentropy()
    return keras.losses.CategoricalCrossentropy(label_smoothing=float(training["label_smoothing"]))


def compile_model(
    model: keras.Model,
    training: dict[str, Any],
    steps_per_epoch: int,
    *,
    sparse: bool,
    jit_compile: bool = False,
) -> keras.Model:
    """Compile ``model`` for ``training``; an FGSM wrapper is returned when adversarial training is on."""
    metric = (
        keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        if sparse
        else keras.metrics.CategoricalAccuracy(name="accuracy")
    )
    target = model
    if training.get("adversarial"):
        from benchmark.train.adversarial import FGSMTrainer

        target = FGSMTrainer(model, **training["adversarial"])
    from zoo import backend

    target.compile(
        optimizer=make_optimizer(training, steps_per_epoch),
        loss=make_loss(training, sparse),
        metrics=[metric],
        jit_compile=backend.jit_compile(jit_compile),
    )
    return target


# airbench computes its whitening filters from 5,000 training images (4.8M 2x2 patches).
WHITENING_IMAGES = 5000


@contextlib.contextmanager
def precision_scope(precision: str):
    """Build models under ``precision``'s Keras dtype policy (the global one is restored after).

    "auto" is mixed_bfloat16 on an accelerator and float32 on a CPU; mixed_float16 needs a GPU and
    is refused with one line elsewhere.
    """
    policy = resolve_precision(precision)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def resolve_precision(precision: str) -> str:
    """The dtype policy ``precision`` means on this machine (see :func:`precision_scope`)."""
    if precision == "float32":  # the default: no device to ask about
        return precision
    from zoo import backend

    accelerators = backend.accelerators()
    gpus = [d for d in accelerators if "gpu" in d.lower() or "cuda" in d.lower()]
    if precision == "auto":
        return "mixed_bfloat16" if accelerators else "float32"
    if precision == "mixed_float16" and not gpus:
        raise ZoobenchError(
            "training.precision = 'mixed_float16' needs a GPU (none found here); "
            "use 'float32', 'mixed_bfloat16' or 'auto'"
        )
    return precision


# ---- callbacks --------------------------------------------------------------------------------------


class DeadlineStop(keras.callbacks.Callback):
    """Stop training at the end of the epoch that crosses ``deadline`` (a ``time.monotonic`` value)."""

    def __init__(self, deadline: float | None):
        super().__init__()
        self.deadline = deadline
        self.stopped = False

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.stopped = True
            self.model.stop_training = True
            log.info("budget reached: training stops after epoch %d", epoch + 1)


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that remembers it fired, so the member can be recorded as failed."""

    def __init__(self):
        super().__init__()
        self.fired_at: int | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch = epoch

    def on_batch_end(self, batch: int, logs=None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.fired_at = self._epoch + 1
        super().on_batch_end(batch, logs)


class ScalarTensorBoard(keras.callbacks.Callback):
    """Per-epoch scalars (loss, accuracy, their val_ twins, learning rate) for TensorBoard.

    Keras's own ``TensorBoard`` callback writes through ``tf.summary``, so it needs TensorFlow; this
    one writes the same ``train`` / ``validation`` event files with the ``tensorboard`` package alone,
    for the JAX and PyTorch backends.
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = str(log_dir)
        self._writers: dict = {}

    def _writer(self, split: str):
        from tensorboard.summary import Writer

        if split not in self._writers:
            self._writers[split] = Writer(f"{self.log_dir}/{split}")
        return self._writers[split]

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        for key, value in (logs or {}).items():
            split, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._writer(split).add_scalar(f"epoch_{tag}", float(value), step=epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def tensorboard_callback(log_dir: str) -> keras.callbacks.Callback:
    """Keras's TensorBoard callback on TensorFlow; scalar event files on the other backends."""
    if keras.backend.backend() == "tensorflow":
        return keras.callbacks.TensorBoard(log_dir=str(log_dir))
    return ScalarTensorBoard(str(log_dir))


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch (training plus its validation pass), for history.csv, and of
    its training steps alone (up to the validation pass), for the steady-state rate."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self.train_seconds: list[float] = []
        self.rates: list[float] = []
        self._start = 0.0
        self._in_epoch = False

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._start = time.perf_counter()
        self._in_epoch = True

    def on_test_begin(self, logs=None) -> None:  # fit's validation pass starts: training ended
        if self._in_epoch and len(self.train_seconds) == len(self.seconds):
            self.train_seconds.append(time.perf_counter() - self._start)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        now = time.perf_counter()
        if len(self.train_seconds) == len(self.seconds):  # no validation pass this epoch
            self.train_seconds.append(now - self._start)
        self.seconds.append(now - self._start)
        self._in_epoch = False
        try:  # the rate the schedule gave at the end of the epoch
            rate = self.model.optimizer.learning_rate
            self.rates.append(float(keras.ops.convert_to_numpy(rate)))
        except (AttributeError, TypeError, ValueError):
            self.rates.append(float("nan"))


def steady_rates(train_seconds: Sequence[float], images_per_epoch: int) -> dict[str, float]:
    """Training images/s at steady state, apart from the compile: the median of the epochs after
    the first (whose steps trace and compile the model), and the seconds the first epoch took
    beyond that median (``compile_seconds``). {} with fewer than two epochs: no steady state."""
    if len(train_seconds) < 2 or images_per_epoch <= 0:
        return {}
    steady = float(np.median(train_seconds[1:]))
    if steady <= 0:
        return {}
    return {
        "steady_train_images_per_second": round(images_per_epoch / steady, 1),
        "compile_seconds": round(max(0.0, float(train_seconds[0]) - steady), 2),
    }


@dataclass
class FitResult:
    """A trained model and what happened while training it."""

    model: keras.Model
    history: Any  # pandas DataFrame, one row per epoch
    epochs: int
    train_seconds: float
    images_per_second: float
    stopped_by_budget: bool = False
    failed_reason: str = ""
    extra: dict = field(default_factory=dict)
    # Feature extraction already scored val and test through its cached features: no second pass.
    val_probs: np.ndarray | None = None
    test_probs: np.ndarray | None = None
    # A boosting round's probabilities on the training split (benchmark.train.boosting), stored with it.
    train_probs: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return not self.failed_reason


def fit(
    model: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    training: dict[str, Any],
    *,
    num_classes: int,
    augment: Sequence[dict] = (),
    seed: int = 0,
    epochs: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    deadline: float | None = None,
    jit_compile: bool = False,
    tensorboard_dir: str | None = None,
    verbose: int = 0,
    sample_weight: np.ndarray | None = None,
) -> FitResult:
    """Compile and fit ``model``; early stopping, NaN and budget guards are always on.

    The validation set drives early stopping (best weights restored); the test set never enters.
    ``sample_weight`` (one weight a training image, e.g. a boosting round's) weights the training
    loss; validation stays unweighted.
    """
    import pandas as pd

    epochs = int(epochs or training["epochs"])
    sparse = uses_sparse_labels(training, augment)
    batch_size = int(training["batch_size"])
    stream = streams_epochs(augment, epochs)
    n = len(x_train)
    steps = stream_steps(n, batch_size) if stream else max(1, math.ceil(n / batch_size))
    adapt_data_layers(model, x_train, seed=seed)
    train_ds = make_dataset(
        x_train,
        y_train,
        num_classes=num_classes,
        batch_size=batch_size,
        policy=augment,
        shuffle=True,
        seed=seed,
        sparse=sparse,
        sample_weight=sample_weight,
        epochs=epochs,
    )
    val_ds = make_dataset(
        x_val,
        y_val,
        num_classes=num_classes,
        batch_size=max(batch_size, 256),
        shuffle=False,
        sparse=sparse,
    )
    trainer = compile_model(
        model, dict(training, epochs=epochs), steps, sparse=sparse, jit_compile=jit_compile
    )
    timer = EpochTimer()
    guards = Guards(training, deadline, tensorboard_dir)
    all_callbacks = [timer, *guards.callbacks, *callbacks]
    if training.get("ema"):  # each epoch's validation scores the averaged weights, as kept
        all_callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    start = time.perf_counter()
    history = trainer.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        # one stream of every epoch where the alternating flip needs to know the epoch (TensorFlow)
        steps_per_epoch=steps if stream else None,
        callbacks=all_callbacks,
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles (seeded); Keras would only warn about it
    )
    seconds = time.perf_counter() - start
    trained = getattr(trainer, "model", model) if trainer is not model else model
    if training.get("ema"):
        # Keras swaps the averages in at the end of fit; on JAX the variables then share buffers
        # with the optimizer's averages, and the next jitted call frees one of them ("Array has
        # been deleted"). Fresh copies of the values end the sharing.
        trained.set_weights([np.array(w) for w in trained.get_weights()])
    frame = pd.DataFrame(history.history)
    frame.insert(0, "epoch", np.arange(1, len(frame) + 1))
    if len(timer.seconds) == len(frame):
        frame["epoch_seconds"] = np.round(timer.seconds, 3)
    if "learning_rate" not in frame and len(timer.rates) == len(frame):
        frame["learning_rate"] = timer.rates
    done = len(frame)
    per_epoch = steps * min(batch_size, n) if stream else n
    return FitResult(
        model=with_test_time_views(trained, training.get("tta", "none")),
        history=frame,
        epochs=done,
        train_seconds=seconds,
        images_per_second=done * len(x_train) / seconds if seconds > 0 else 0.0,
        stopped_by_budget=guards.deadline.stopped,
        failed_reason=guards.failure(frame),
        extra=steady_rates(timer.train_seconds[:done], per_epoch),
    )


def adapt_data_layers(model: keras.Model, x_train: np.ndarray, *, seed: int = 0) -> int:
    """Set the weights of layers that take them from data (``PatchWhitening``) before training.

    Each sees what it will see in the model: a seeded sample of ``WHITENING_IMAGES`` training images
    passed through the layers before it. Returns how many layers were adapted.
    """
    layers = [layer for layer in model.layers if isinstance(layer, PatchWhitening)]
    if not layers:
        return 0
    rng = np.random.default_rng([seed, 7])
    rows = np.sort(rng.permutation(len(x_train))[:WHITENING_IMAGES])
    sample = x_train[rows].astype(np.float32)
    for layer in layers:
        before = keras.Model(model.inputs, layer.input)
        layer.adapt(np.asarray(before.predict(sample, batch_size=500, verbose=0)))
    return len(layers)


class Guards:
    """The callbacks every fit gets: NaN guard, budget deadline, early stopping, TensorBoard."""

    def __init__(
        self,
        training: dict[str, Any],
        deadline: float | None,
        tensorboard_dir: str | None = None,
        early_stopping: bool = True,
    ):
        self.nan = NaNGuard()
        self.deadline = DeadlineStop(deadline)
        self.callbacks: list[keras.callbacks.Callback] = [self.nan, self.deadline]
        if early_stopping and training["early_stopping_patience"]:
            self.callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_accuracy",
                    mode="max",
                    patience=int(training["early_stopping_patience"]),
                    restore_best_weights=True,
                )
            )
        if tensorboard_dir:
            self.callbacks.append(tensorboard_callback(str(tensorboard_dir)))

    def failure(self, history) -> str:
        """Why the fit failed ("" when it did not): a loss that became NaN or infinite."""
        if self.nan.fired_at is None and not has_nan(history):
            return ""
        return f"loss became NaN/inf in epoch {self.nan.fired_at or len(history)} (TerminateOnNaN)"


def has_nan(history) -> bool:
    """Whether a history's loss column holds a NaN or an infinity."""
    if "loss" not in history:
        return False
    values = history["loss"].to_numpy(dtype=float)
    return bool(len(values) and not np.all(np.isfinite(values)))


def evaluate_probs(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and cross-entropy of stored probabilities (what the leaderboard compares).

    Both come from :mod:`benchmark.metrics`, as the ensembles' and the reports' do; ``nan`` when
    ``y`` is empty.
    """
    return {"accuracy": metrics.accuracy(probs, y), "loss": metrics.log_loss(probs, y)}
