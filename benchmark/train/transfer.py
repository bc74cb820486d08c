"""Transfer learning: feature extraction, fine-tuning and progressive unfreezing of a backbone.

Each strategy is a named option of a pretrained member, so a leaderboard row reads
``efficientnet_lite0 / feature-extraction @128px``. The backbone is a zoo architecture (ImageNet
weights) or, with ``architecture="member:/path/to/runs/X/members/ID"``, a member zoobench trained on
another dataset (its ``probs`` layer stripped; the penultimate, pooled output is the feature).

- ``feature-extraction``: the frozen backbone's pooled features are computed once per split and
  cached as ``.npy`` files (keyed by the backbone's weights, input size, preprocessing and the exact
  pixels of the split); a Keras Tuner search over small heads (linear / MLP: units, dropout,
  learning rate, L2) trains on the cached features in seconds, selecting on validation only.
- ``fine-tuning``: head warm-up with the backbone frozen, then the whole backbone trainable at a
  lower learning rate; batch norm stays in inference mode (the backbone is called with
  ``training=False``, as in the Keras transfer-learning guide).
- ``progressive-unfreezing``: head first, then backbone blocks unfrozen from the top down, one
  group per stage, the learning rate decayed each stage; the history's ``stage`` / ``lr`` columns
  record the schedule.

Every strategy returns a :class:`TransferResult` whose ``model`` takes raw uint8 pixels and outputs
probabilities, saves with ``model.save`` and loads with ``safe_mode=True`` after
``zoo.list_models()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from benchmark import atomic
from benchmark.config import schema
from benchmark.errors import ZoobenchError
from benchmark.naming import member_name
from benchmark.train.extraction import FeaturePass
from zoo import backend

if TYPE_CHECKING:
    from benchmark.train.training import FitResult

log = logging.getLogger(__name__)

STRATEGIES = schema.STRATEGIES
MEMBER_PREFIX = "member:"
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "stage")
FEATURE_CACHE_VERSION = 1

# The transfer options and their defaults are plain data in benchmark.config.schema (one definition, read by
# the profile parser and the planner); ``head_trials`` sizes feature extraction's head search.
DEFAULT_OPTIONS: dict[str, Any] = schema.TRANSFER_DEFAULTS


@dataclass
class TransferResult:
    """What a strategy hands the runner.

    ``model``: raw pixels in, probabilities out. ``history``: one row per epoch with
    :data:`HISTORY_COLUMNS`. ``info``: timings and choices (feature_seconds, head_seconds, speedup,
    stages, best head hyperparameters...). ``val_probs`` / ``test_probs``: filled by
    feature extraction from the cached features (the runner can skip another backbone pass);
    None for the other strategies.
    """

    model: Any
    history: pd.DataFrame
    info: dict = field(default_factory=dict)
    val_probs: np.ndarray | None = None
    test_probs: np.ndarray | None = None


@dataclass
class Backbone:
    """A frozen-or-trainable feature extractor and the layers that feed it raw pixels."""

    name: str  # e.g. "efficientnet_lite0" or "member:<id>"
    pre_layers: list  # raw pixels -> backbone input (resize, normalisation)
    model: Any  # keras.Model named "backbone": backbone input -> pooled features
    input_shape: tuple[int, int, int]  # the raw pixel shape the member takes
    input_size: int  # the side the backbone sees
    preprocess: str  # description for the cache key and the leaderboard
    hp_head: dict  # dropout / dense_units for fine-tuning heads
    features: str = "pooled"  # what ``model`` outputs, for the feature cache key

    def weights_digest(self) -> str:
        """Hash of the backbone's weights: keys the feature cache to exactly these weights."""
        digest = hashlib.sha256()
        for w in self.model.get_weights():
            digest.update(str(w.shape).encode())
            digest.update(np.ascontiguousarray(w).tobytes())
        return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# Building the backbone


def load_backbone(architecture: str, hp, input_shape, num_classes: int) -> Backbone:
    """The backbone of a zoo architecture (``kind="pretrained"``) or of a trained member folder."""
    import keras

    if architecture.startswith(MEMBER_PREFIX):
        return _member_backbone(Path(architecture[len(MEMBER_PREFIX) :]), input_shape)
    import zoo
    from zoo.pretrained import BACKBONE_NAME

    entry = zoo.get(architecture)
    if entry.kind != "pretrained":
        raise ZoobenchError(
            f"transfer strategies need a pretrained architecture or member:PATH; "
            f"{architecture!r} is {entry.kind}"
        )
    model = entry.build(hp, input_shape=input_shape, num_classes=num_classes)
    names = [layer.name for layer in model.layers]
    if BACKBONE_NAME not in names:
        raise ZoobenchError(f"{architecture}: the model has no layer named {BACKBONE_NAME!r}")
    cut = names.index(BACKBONE_NAME)
    pre = [layer for layer in model.layers[1:cut] if not isinstance(layer, keras.layers.InputLayer)]
    backbone = model.layers[cut]
    size = int(backbone.input_shape[1]) if hasattr(backbone, "input_shape") else input_shape[0]
    preprocess = ",".join(f"{layer.__class__.__name__}:{_layer_digest(layer)}" for layer in pre)
    head = {
        "dropout": _hp_value(hp, "dropout", 0.2),
        "dense_units": _hp_value(hp, "dense_units", 0),
    }
    return Backbone(architecture, pre, backbone, tuple(input_shape), size, preprocess, head)


def _hp_value(hp, name: str, default):
    try:
        return hp.get(name)
    except (KeyError, ValueError):
        return default


def _layer_digest(layer) -> str:
    cfg = layer.get_config()
    cfg.pop("name", None)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _member_backbone(folder: Path, input_shape) -> Backbone:
    """A zoobench member (``model.keras`` in a run store) without its ``probs`` layer."""
    import keras

    from benchmark.modelfile import load_model

    path = folder / "model.keras"
    if not path.is_file():
        raise ZoobenchError(f"member:{folder}: no model.keras there (is it a run-store member?)")
    trained = load_model(path, f"member:{folder}")  # safe mode; a refusal is one line
    try:
        probs = trained.get_layer("probs")
    except ValueError:
        raise ZoobenchError(f"member:{folder}: model.keras has no layer named 'probs'") from None
    features = keras.Model(trained.inputs, probs.input, name="backbone")
    member_shape = tuple(int(d) for d in trained.inputs[0].shape[1:])
    pre = []
    if tuple(input_shape[:2]) != member_shape[:2]:
        pre.append(
            keras.layers.Resizing(member_shape[0], member_shape[1], name="resize_for_backbone")
        )
    # The model's own name (its architecture's: the zoo's builders name their models), so that
    # training needs nothing of the run store to label a member backbone.
    name = f"member:{trained.name or folder.name}"
    head = {"dropout": 0.2, "dense_units": 0}
    size = member_shape[0]
    return Backbone(name, pre, features, tuple(input_shape), size, "member-own", head)


def validate_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` checked against :data:`DEFAULT_OPTIONS`: known names, values of the right kind."""
    return schema.validate_transfer_options(options)


def multi_level(backbone: Backbone, levels: int) -> Backbone:
    """``backbone`` whose features are its pooled output plus the pooled ends of the stages below.

    ``levels - 1`` stage ends (:func:`zoo.pretrained.stage_ends`) are average-pooled and joined to
    the usual features: an upscaled 32-pixel image is described at several depths, which a linear
    head on the last layer alone cannot see (+2 points on a CIFAR-10 subset with Lite0).
    """
    if levels <= 1:
        return backbone
    import keras

    from zoo.pretrained import BACKBONE_NAME, stage_ends

    model = backbone.model
    pooled_from = getattr(model.layers[-1], "input", None)  # already in the usual features
    taps = [layer for layer in stage_ends(model) if layer.output is not pooled_from]
    taps = taps[-(levels - 1) :]
    pooled = [keras.layers.GlobalAveragePooling2D(name=f"{t.name}_pool")(t.output) for t in taps]
    outputs = keras.layers.Concatenate(name="levels")([*pooled, model.output])
    features = keras.Model(model.inputs, outputs, name=BACKBONE_NAME)
    spec = f"levels={levels}:" + "+".join(t.name for t in taps)
    return dataclasses.replace(backbone, model=features, features=spec)


def assemble(backbone: Backbone, head_layers: list, name: str, *, flip: bool = False):
    """Raw pixels -> pre-layers -> backbone(training=False) -> head layers: one saveable model.

    ``flip``: the features of the image and of its mirror image are averaged before the head
    (test-time augmentation, as feature extraction with ``flip_features`` scores val and test).
    """
    import keras

    from zoo.layers import HorizontalFlip

    def features(x):
        for layer in backbone.pre_layers:
            x = layer(x)
        return backbone.model(x, training=False)

    inputs = keras.Input(shape=backbone.input_shape, name="image")
    x = features(inputs)
    if flip:
        mirrored = features(HorizontalFlip(name="mirror")(inputs))
        x = keras.layers.Average(name="flip_average")([x, mirrored])
    for layer in head_layers:
        x = layer(x)
    return keras.Model(inputs, x, name=_safe_model_name(name))


def _safe_model_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name).strip("_") or "transfer"


def _head_layers(num_classes: int, *, dropout: float, dense_units: int, l2: float = 0.0) -> list:
    import keras

    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    layers: list = []
    if dropout > 0:
        layers.append(keras.layers.Dropout(dropout, name="head_dropout"))
    if dense_units:
        layers.append(
            keras.layers.Dense(
                dense_units, activation="relu", kernel_regularizer=reg, name="head_dense"
            )
        )
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout, name="head_dense_dropout"))
    layers.append(
        keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=reg, name="probs")
    )
    return layers


# --------------------------------------------------------------------------------------------------
# Entry point


def run_strategy(
    strategy: str,
    architecture: str,
    hp,
    data,
    *,
    cache_dir: Path,
    epochs: int,
    batch_size: int = 64,
    seed: int = 0,
    learning_rate: float = 1e-3,
    callbacks: list | None = None,
    tuner: dict | None = None,
    options: dict | None = None,
    verbose: int = 0,
    recipe: dict | None = None,
    deadline: float | None = None,
) -> TransferResult:
    """Train ``architecture``'s backbone on ``data`` (a ``benchmark.data.datasets.Dataset``) by ``strategy``.

    ``hp`` is the architecture's HyperParameters (``input_size``, head ``dropout`` /
    ``dense_units``); None means defaults. ``tuner`` configures the feature-extraction head search
    (Keras Tuner's ``max_trials``, which overrides the ``head_trials`` option, ``directory``,
    ``project_name``, ``overwrite``). ``options`` overrides
    :data:`DEFAULT_OPTIONS`. Validation data is used for monitoring and selection only; the test
    split is only passed through the finished model (feature extraction's ``test_probs``).
    ``verbose`` 1 shows Keras's progress bar while features are extracted (minutes on a CPU).

    ``recipe`` (``{"training": {...}, "augment": [...]}``, a member's resolved options when it
    names a recipe, e.g. ``lite-finetune``): fine-tuning and progressive unfreezing then train each
    stage with its optimizer, warm-up and schedule, loss and label smoothing, augmentation (seeded
    batches from ``benchmark.data.augment``) and test-time views, under its precision. Without it
    they keep Adam at a constant rate on plain batches. ``deadline`` (``time.monotonic``):
    progressive unfreezing re-fits its remaining stages into what is left of it after each stage
    (:func:`fit_stages`).
    """
    import keras_tuner

    if strategy not in STRATEGIES:
        raise ZoobenchError(
            f"unknown transfer strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if epochs < 1:
        raise ZoobenchError(f"epochs must be at least 1 for {strategy}, got {epochs}")
    opts = schema.transfer_options(options)
    hp = keras_tuner.HyperParameters() if hp is None else hp
    backend.set_random_seed(seed)
    backbone = load_backbone(architecture, hp, data.input_shape, data.num_classes)
    name = member_name(backbone.name, strategy, backbone.input_size)
    common = dict(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        callbacks=list(callbacks or []),
        opts=opts,
        name=name,
    )
    if strategy != "feature-extraction":
        common.update(
            fitter=_StageFitter(recipe, seed, data.num_classes, batch_size), deadline=deadline
        )
    t0 = time.perf_counter()
    if strategy == "feature-extraction":
        result = _feature_extraction(
            backbone,
            data,
            cache_dir=Path(cache_dir),
            seed=seed,
            tuner=dict(tuner or {}),
            verbose=verbose,
            **common,
        )
    elif strategy == "fine-tuning":
        result = _fine_tuning(backbone, data, **common)
    else:
        result = _progressive_unfreezing(backbone, data, **common)
    result.info.update(
        name=name,
        strategy=strategy,
        architecture=architecture,
        input_size=backbone.input_size,
        seconds=round(time.perf_counter() - t0, 3),
    )
    return result


# --------------------------------------------------------------------------------------------------
# Feature extraction


def feature_cache_dir() -> Path:
    """``$ZOOBENCH_CACHE/features``: shared by every run and profile on this machine (the key
    below holds everything that changes the features, so a second run reuses them)."""
    from zoo.weights import cache_root

    return cache_root() / "features"


def feature_cache_key(backbone: Backbone, x: np.ndarray, data_fingerprint: str) -> str:
    """Cache key of one split's features: backbone weights, input size, preprocessing and pixels."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "v": FEATURE_CACHE_VERSION,
                "backbone": backbone.name,
                "weights": backbone.weights_digest(),
                "input_size": backbone.input_size,
                "input_shape": list(backbone.input_shape),
                "preprocess": backbone.preprocess,
                "features": backbone.features,
                "data": data_fingerprint,
            },
            sort_keys=True,
        ).encode()
    )
    digest.update(str(x.shape).encode())
    digest.update(np.ascontiguousarray(x).data)  # the split's exact pixels: indices and order
    return digest.hexdigest()[:24]


def extract_features(
    backbone: Backbone,
    x: np.ndarray,
    *,
    cache_dir: Path,
    data_fingerprint: str,
    batch_size: int = 128,
    split: str = "split",
    verbose: int = 0,
    runtime: str = "auto",
    feature_pass: FeaturePass | None = None,
) -> tuple[np.ndarray, dict]:
    """Pooled features of ``x`` (float32), read from the cache or computed once and cached.

    The pass runs on ``runtime`` (:mod:`benchmark.train.extraction`), or through ``feature_pass`` when a
    member extracts several splits. The cache key leaves the runtime out: a runtime is used only
    where its features equal TensorFlow's within 1e-3. Returns the features and
    ``{"cache": "hit"|"miss", "seconds", "images_per_second", "runtime", "path"}``.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = feature_cache_key(backbone, x, data_fingerprint)
    safe = _safe_model_name(backbone.name)
    path = cache_dir / f"features-{safe}-{backbone.input_size}px-{split}-{key}.npy"
    if path.is_file():
        try:
            feats = np.load(path, allow_pickle=False)
            if feats.shape[0] == len(x):
                return feats, {"cache": "hit", "seconds": 0.0, "path": str(path)}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable feature cache %s (%s)", path, exc)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if feature_pass is None:
            feature_pass = stack.enter_context(FeaturePass(backbone, runtime, batch_size))
        feats = feature_pass(x, verbose=verbose).astype(np.float32)
    seconds = time.perf_counter() - t0
    atomic.save_npy(path, feats)
    info = {
        "cache": "miss",
        "seconds": round(seconds, 3),
        "path": str(path),
        "runtime": feature_pass.runtime_used,
        "images_per_second": round(len(x) / max(seconds, 1e-9), 1),
    }
    log.info(
        "features %s: %d images in %.1fs on %s -> %s",
        split,
        len(x),
        seconds,
        feature_pass.runtime_used,
        path.name,
    )
    return feats, info


def _head_hypermodel(
    num_classes: int, feature_dim: int, mean: np.ndarray, var: np.ndarray, default_lr: float = 1e-3
):
    """Keras Tuner hypermodel: standardise features -> [dense] -> softmax over a small space."""
    import keras

    def build(hp) -> keras.Model:
        # default (the search's first trial): the head that won on full-split Lite features
        # (docs/results/feature-sweep.json; linear heads were never chosen in the searches of
        # docs/results/feature-extraction-lite0.json and feature-extraction-last-layer.json)
        units = hp.Choice("units", [0, 256, 512], default=512)
        dropout = hp.Choice("dropout", [0.0, 0.2, 0.4], default=0.2)
        lr = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=default_lr)
        l2 = hp.Choice("l2", [0.0, 1e-5, 1e-4, 1e-3], default=1e-4)
        inputs = keras.Input(shape=(feature_dim,), name="features")
        x = keras.layers.Normalization(axis=-1, mean=mean, variance=var, name="feature_norm")(
            inputs
        )
        for layer in _head_layers(num_classes, dropout=dropout, dense_units=units, l2=l2):
            x = layer(x)
        model = keras.Model(inputs, x, name="head")
        model.compile(
            optimizer=keras.optimizers.Adam(lr),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            # XLA compiling every trial costs more than the head's training (JAX always compiles)
            jit_compile=backend.jit_compile(False),
        )
        return model

    return build


def _feature_extraction(
    backbone,
    data,
    *,
    cache_dir,
    seed,
    tuner,
    epochs,
    batch_size,
    learning_rate,
    callbacks,
    opts,
    name,
    verbose=0,
) -> TransferResult:
    import keras
    import keras_tuner

    from benchmark.train import distributed
    from benchmark.tune import tuning

    backbone = multi_level(backbone, int(opts["feature_levels"]))
    flip = bool(opts["flip_features"])
    feats: dict[str, np.ndarray] = {}
    cache: dict[str, dict] = {}
    batch = int(opts["extract_batch_size"])
    with FeaturePass(backbone, str(opts["extract_runtime"]), batch) as feature_pass:
        for split in ("train", "val", "test"):
            x = getattr(data, f"x_{split}")
            views = {split: x, f"{split}-mirrored": x[:, :, ::-1]} if flip else {split: x}
            for view, pixels in views.items():
                feats[view], cache[view] = extract_features(
                    backbone,
                    np.ascontiguousarray(pixels),
                    cache_dir=cache_dir,
                    data_fingerprint=data.fingerprint,
                    batch_size=batch,
                    split=view,
                    verbose=verbose,
                    feature_pass=feature_pass,
                )
    feature_seconds = sum(c["seconds"] for c in cache.values())
    y_train = data.y_train
    if flip:  # mirrors are extra training rows; val and test average each image with its mirror
        feats["train"] = np.concatenate([feats["train"], feats.pop("train-mirrored")])
        y_train = np.concatenate([y_train, y_train])
        for split in ("val", "test"):
            feats[split] = (feats[split] + feats.pop(f"{split}-mirrored")) / 2
    f_train, f_val = feats["train"], feats["val"]
    mean, var = f_train.mean(axis=0), f_train.var(axis=0) + 1e-6
    default_lr = float(np.clip(learning_rate, 1e-4, 1e-2))  # the first trial's learning rate
    build = _head_hypermodel(data.num_classes, f_train.shape[1], mean, var, default_lr)
    head_bs = int(opts["head_batch_size"])
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=int(opts["patience"]), restore_best_weights=True
    )
    directory = tuner.get("directory")
    tmp_dir = None
    if directory is None:
        tmp_dir = tempfile.TemporaryDirectory(prefix="zoobench-head-tuner-")
        directory = tmp_dir.name
    t0 = time.perf_counter()
    try:
        oracle = tuning.DefaultsFirstOracle(
            objective=keras_tuner.Objective("val_accuracy", direction="max"),
            max_trials=int(tuner.get("max_trials", opts["head_trials"])),
            seed=seed,
        )
        with distributed.local_search():  # seconds of work: never a distributed search
            search = tuning.HistoryTuner(
                oracle,
                build,
                directory=str(directory),
                project_name=tuner.get("project_name", _safe_model_name(name)),
                overwrite=bool(tuner.get("overwrite", tmp_dir is not None)),
            )
            # every trial gets the member's guards too (NaN, deadline, TensorBoard); Keras Tuner
            # copies callbacks per trial, so a NaN shows in the trial's history, not the guard
            search.search(
                f_train,
                y_train,
                validation_data=(f_val, data.y_val),
                epochs=epochs,
                batch_size=head_bs,
                callbacks=[stop, *callbacks],
                verbose=0,
            )
        done = [
            t
            for t in search.oracle.trials.values()
            if t.status == "COMPLETED" and t.score is not None
        ]
        if not done:
            raise ZoobenchError(f"{name}: no head trial finished (every trial failed)")
        best = search.oracle.get_best_trials(1)[0]
        best_hp = best.hyperparameters
        # The best trial's head at its best epoch (Keras Tuner's checkpoint): what validation
        # chose, with its own history. Training it again only to record a history cost a third
        # of a two-trial search on full-split features.
        with warnings.catch_warnings():  # the checkpoint's optimizer state is not needed
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            head = search.load_model(best)
        fit_history = search.history(best)
        epochs_searched = sum(len(search.history(t).get("loss", [])) for t in done)
        search_seconds = time.perf_counter() - t0
    finally:
        if tmp_dir is not None:
            tmp_dir.cleanup()
    epochs_run = len(fit_history["loss"])
    history = _history_frame(fit_history, stage="head", lr=float(best_hp.get("learning_rate")))
    model = assemble(backbone, head.layers[1:], name, flip=flip)
    val_probs = head.predict(f_val, batch_size=1024, verbose=0)
    test_probs = head.predict(feats["test"], batch_size=1024, verbose=0)
    # Speed-up: a frozen-backbone epoch runs the backbone over the training split every epoch; its
    # cost is at least the train-split extraction time. Cached features pay that once.
    n_train = len(y_train)
    ips = cache["train"].get("images_per_second")
    frozen_epoch = n_train / ips if ips else None
    head_epoch = search_seconds / max(epochs_searched, 1)
    info = {
        "feature_seconds": round(feature_seconds, 3),
        "feature_cache": {k: v["cache"] for k, v in cache.items()},
        "feature_files": {k: v["path"] for k, v in cache.items()},
        "extract_images_per_second": ips,
        "extract_runtime": feature_pass.runtime_used,  # None: every split came from the cache
        "head_seconds": round(search_seconds, 3),
        "head_search_seconds": round(search_seconds, 3),
        "head_epoch_seconds": round(head_epoch, 4),
        "frozen_backbone_epoch_seconds": round(frozen_epoch, 3) if frozen_epoch else None,
        "speedup": round(frozen_epoch / head_epoch, 1) if frozen_epoch and head_epoch > 0 else None,
        "head_hp": dict(best_hp.values),
        "head_trials": int(tuner.get("max_trials", opts["head_trials"])),
        "features": backbone.features,
        "feature_dim": int(f_train.shape[1]),
        "flip_features": flip,
        "stages": [
            {"stage": "head", "epochs": epochs_run, "lr": float(best_hp.get("learning_rate"))}
        ],
    }
    return TransferResult(model, history, info, val_probs=val_probs, test_probs=test_probs)


# --------------------------------------------------------------------------------------------------
# Fine-tuning and progressive unfreezing


class _BestWeights:
    """Keeps the weights of the epoch with the best validation accuracy across all stages."""

    def __init__(self, model):
        import keras

        self.model = model
        self.best = -math.inf
        self.weights = None
        outer = self

        class Tracker(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                acc = (logs or {}).get("val_accuracy")
                if acc is not None and acc > outer.best:
                    outer.best = float(acc)
                    outer.weights = outer.model.get_weights()

        self.callback = Tracker()

    def restore(self) -> None:
        if self.weights is not None:
            self.model.set_weights(self.weights)


def _is_batch_norm(layer) -> bool:
    """Batch norm stays frozen when its block is unfrozen.

    A frozen Keras 3 BatchNormalization runs in inference mode (moving statistics, no updates),
    whatever ``training`` the outer ``fit`` passes down; ``training=False`` at the backbone call
    alone is overridden by ``fit``'s ``training=True`` in Keras 3 functional models.
    """
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def _compile(model, lr: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        # TensorFlow's XLA on CPU: minutes of compiling per stage for little gain (JAX always compiles)
        jit_compile=backend.jit_compile(False),
    )


def _evaluate_val(model, data, batch_size: int) -> float:
    _, acc = model.evaluate(data.x_val, data.y_val, batch_size=batch_size, verbose=0)
    return float(acc)


class _StageFitter:
    """How one stage is compiled and fitted: Adam at the stage's rate on plain batches (no
    recipe), or the recipe's optimizer, schedule (over the stage's own epochs, warm-up first),
    loss and augmented batches."""

    def __init__(self, recipe: dict | None, seed: int, num_classes: int, batch_size: int):
        self.recipe, self.seed = recipe, int(seed)
        self.num_classes, self.batch_size = int(num_classes), int(batch_size)
        if recipe is not None:
            from benchmark.train.training import uses_sparse_labels

            self.sparse = uses_sparse_labels(recipe["training"], recipe.get("augment", []))

    def compile(self, model, lr: float, epochs: int, n_train: int) -> None:
        if self.recipe is None:
            _compile(model, lr)
            return
        import keras

        from benchmark.train.training import make_loss, make_optimizer

        training = dict(self.recipe["training"], learning_rate=lr, epochs=max(1, epochs))
        steps = max(1, math.ceil(n_train / self.batch_size))
        metric = (
            keras.metrics.SparseCategoricalAccuracy(name="accuracy")
            if self.sparse
            else keras.metrics.CategoricalAccuracy(name="accuracy")
        )
        model.compile(
            optimizer=make_optimizer(training, steps),
            loss=make_loss(training, self.sparse),
            metrics=[metric],
            jit_compile=backend.jit_compile(False),
        )

    def evaluate(self, model, data) -> float:
        """Validation accuracy as the stages' fits measure it (the recipe's label format)."""
        if self.recipe is None:
            return _evaluate_val(model, data, self.batch_size)
        _, acc = model.evaluate(self._val(data), verbose=0)
        return float(acc)

    def _val(self, data):
        from benchmark.data.augment import make_dataset

        return make_dataset(
            data.x_val,
            data.y_val,
            num_classes=self.num_classes,
            sparse=self.sparse,
            batch_size=max(self.batch_size, 256),
            shuffle=False,
        )

    def fit(self, model, data, *, epochs: int, initial_epoch: int, callbacks: list):
        if self.recipe is None:
            return model.fit(
                data.x_train,
                data.y_train,
                validation_data=(data.x_val, data.y_val),
                epochs=epochs,
                initial_epoch=initial_epoch,
                batch_size=self.batch_size,
                callbacks=callbacks,
                verbose=0,
            )
        from benchmark.data.augment import make_dataset

        batches = dict(num_classes=self.num_classes, sparse=self.sparse)
        train = make_dataset(
            data.x_train,
            data.y_train,
            batch_size=self.batch_size,
            policy=[s for s in self.recipe.get("augment", []) if s["name"] != "alternating_flip"],
            shuffle=True,
            seed=self.seed + initial_epoch,  # each stage draws its own batches and transforms
            **batches,
        )
        from benchmark.train.training import EpochTimer

        timer = EpochTimer()  # the rate the schedule reached at each epoch's end, for the history
        fit = model.fit(
            train,
            validation_data=self._val(data),
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=[timer, *callbacks],
            verbose=0,
        )
        if len(timer.rates) == len(fit.history.get("loss", [])):
            fit.history["learning_rate"] = timer.rates
        return fit


# A stage that trains backbone weights costs about this many times an epoch of the head alone
# (the frozen backbone's forward pass): the gradients of activations and weights (costmodel).
UNFROZEN_EPOCH_COST = 3.0


def fit_stages(stages: list[dict], epochs_left: int) -> list[dict]:
    """``stages`` (each ``{"stage", "epochs", "lr", "set_trainable"}``, unfreezing from the top
    down) cut to ``epochs_left`` epochs in all: unchanged when they fit; else each keeps at least
    one epoch and the asked epochs are scaled down; with fewer epochs than stages, the first
    stages are merged into one that unfreezes what they would have (at the last one's rate), so
    the deepest unfreezing still happens. [] when no epoch is left."""
    if epochs_left <= 0 or not stages:
        return []
    if sum(s["epochs"] for s in stages) <= epochs_left:
        return stages
    if len(stages) > epochs_left:
        merged, rest = (
            stages[: len(stages) - epochs_left + 1],
            stages[len(stages) - epochs_left + 1 :],
        )
        setters = [s["set_trainable"] for s in merged]

        def merged_setter():
            for setter in setters:
                setter()

        stages = [
            {
                "stage": " + ".join(s["stage"] for s in merged),
                "epochs": sum(s["epochs"] for s in merged),
                "lr": merged[-1]["lr"],
                "set_trainable": merged_setter,
            },
            *rest,
        ]
    asked = [s["epochs"] for s in stages]
    epochs = [1] * len(stages)
    spare = epochs_left - len(stages)
    while spare > 0:  # one epoch at a time to the stage furthest below its share of what was asked
        k = max(range(len(stages)), key=lambda i: (asked[i] / epochs[i], i))
        epochs[k] += 1
        spare -= 1
    return [dict(s, epochs=n) for s, n in zip(stages, epochs, strict=True)]


def _run_stages(
    model,
    backbone,
    data,
    stages: list[dict],
    *,
    batch_size,
    callbacks,
    fitter: _StageFitter | None = None,
    deadline: float | None = None,
) -> tuple:
    """Fit ``stages`` one after the other: each sets trainable layers, recompiles, fits its epochs.

    With a ``deadline`` the stages still to come are re-fitted to the time left after each one
    (:func:`fit_stages`), from its measured epoch time (a head stage's times
    ``UNFROZEN_EPOCH_COST``)."""
    fitter = fitter or _StageFitter(None, 0, data.num_classes, batch_size)
    best = _BestWeights(model)
    frames = []
    records = []
    epoch = 0
    n_train = len(data.x_train)
    fitter.compile(model, stages[0]["lr"], stages[0]["epochs"], n_train)
    initial = fitter.evaluate(model, data)  # the untrained head's starting point
    stages = list(stages)
    while stages:
        stage = stages.pop(0)
        stage["set_trainable"]()
        fitter.compile(model, stage["lr"], stage["epochs"], n_train)
        start = float(frames[-1]["val_accuracy"].iloc[-1]) if frames else initial
        t0 = time.perf_counter()
        fit = fitter.fit(
            model,
            data,
            epochs=epoch + stage["epochs"],
            initial_epoch=epoch,
            callbacks=[best.callback, *callbacks],
        )
        ran = len(fit.history.get("loss", []))
        frames.append(
            _history_frame(fit.history, stage=stage["stage"], lr=stage["lr"], start=epoch)
        )
        records.append(
            {
                "stage": stage["stage"],
                "epochs": ran,
                "lr": stage["lr"],
                "trainable_weights": int(
                    sum(np.prod(w.shape) for w in backbone.model.trainable_weights)
                ),
                "val_accuracy_start": round(start, 4),
                "val_accuracy_end": round(float(fit.history.get("val_accuracy", [start])[-1]), 4),
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        epoch += ran
        if any(getattr(cb, "stopped", False) is True for cb in callbacks):
            break  # a budget callback (``.stopped``) ended training: no further stages
        if any(getattr(cb, "fired_at", None) is not None for cb in callbacks):
            break  # the loss went NaN (the runner's NaNGuard): later stages would train NaN weights
        # an early stop inside a stage only ends that stage: the next one unfreezes more
        if deadline is not None and stages and ran:
            per_epoch = (time.perf_counter() - t0) / ran
            if stage["stage"] == "head":
                per_epoch *= UNFROZEN_EPOCH_COST
            left = int((deadline - time.monotonic()) // max(per_epoch, 1e-9))
            planned = fit_stages(stages, left)
            if [s["epochs"] for s in planned] != [s["epochs"] for s in stages]:
                log.info(
                    "%d epoch(s) of the stages left fit the budget: %s",
                    left,
                    ", ".join(f"{s['stage']} x{s['epochs']}" for s in planned) or "none",
                )
            stages = planned
    best.restore()
    history = pd.concat(frames, ignore_index=True) if frames else _history_frame({}, "", 0.0)
    return history, records, initial, best.best


def _fine_tuning(
    backbone,
    data,
    *,
    epochs,
    batch_size,
    learning_rate,
    callbacks,
    opts,
    name,
    fitter=None,
    deadline=None,
):
    head = _head_layers(data.num_classes, **backbone.hp_head)
    model = assemble(backbone, head, name)
    warmup = opts["warmup_epochs"]
    warmup = max(1, epochs // 3) if warmup is None else int(warmup)
    warmup = min(warmup, epochs)
    fine_lr = learning_rate * float(opts["fine_tune_lr_factor"])

    def freeze():
        backbone.model.trainable = False

    def unfreeze():
        backbone.model.trainable = True
        for layer in backbone.model.layers:
            layer.trainable = not _is_batch_norm(layer)

    stages = [{"stage": "head", "epochs": warmup, "lr": learning_rate, "set_trainable": freeze}]
    if epochs > warmup:
        stages.append(
            {
                "stage": "fine-tune",
                "epochs": epochs - warmup,
                "lr": fine_lr,
                "set_trainable": unfreeze,
            }
        )
    history, records, initial, best = _run_stages(
        model,
        backbone,
        data,
        stages,
        batch_size=batch_size,
        callbacks=callbacks,
        fitter=fitter,
        deadline=deadline,
    )
    info = {
        "stages": records,
        "initial_val_accuracy": round(initial, 4),
        "best_val_accuracy": round(best, 4),
    }
    return TransferResult(model, history, info)


def unfreeze_schedule(blocks: list[list], stages: int) -> list[list[list]]:
    """Split ``blocks`` (bottom to top) into ``stages`` groups, top group first."""
    if not blocks:
        return []
    stages = max(1, min(stages, len(blocks)))
    bounds = [round(i * len(blocks) / stages) for i in range(stages + 1)]
    groups = [blocks[bounds[i] : bounds[i + 1]] for i in range(stages)]
    return [g for g in reversed(groups) if g]


def _progressive_unfreezing(
    backbone,
    data,
    *,
    epochs,
    batch_size,
    learning_rate,
    callbacks,
    opts,
    name,
    fitter=None,
    deadline=None,
):
    from zoo.pretrained import backbone_blocks

    head = _head_layers(data.num_classes, **backbone.hp_head)
    model = assemble(backbone, head, name)
    groups = unfreeze_schedule(backbone_blocks(backbone.model), int(opts["stages"]))
    n_stages = len(groups) + 1
    per_stage = max(1, epochs // n_stages)
    decay = float(opts["stage_lr_decay"])
    unfrozen: set[int] = set()

    def freeze_all():
        backbone.model.trainable = False

    def unfreeze_group(group):
        def apply():
            for block in group:
                unfrozen.update(id(layer) for layer in block)
            backbone.model.trainable = True
            for layer in backbone.model.layers:
                layer.trainable = id(layer) in unfrozen and not _is_batch_norm(layer)

        return apply

    stages = [
        {"stage": "head", "epochs": per_stage, "lr": learning_rate, "set_trainable": freeze_all}
    ]
    used = per_stage
    for k, group in enumerate(groups, start=1):
        n = per_stage if k < len(groups) else max(1, epochs - used)
        if used >= epochs:
            break
        first, last = group[0][0].name, group[-1][-1].name  # bottom..top of this group
        stages.append(
            {
                "stage": f"unfreeze-{k} ({first}..{last})",
                "epochs": n,
                "lr": learning_rate * decay**k,
                "set_trainable": unfreeze_group(group),
            }
        )
        used += n
    history, records, initial, best = _run_stages(
        model,
        backbone,
        data,
        stages,
        batch_size=batch_size,
        callbacks=callbacks,
        fitter=fitter,
        deadline=deadline,
    )
    info = {
        "stages": records,
        "initial_val_accuracy": round(initial, 4),
        "best_val_accuracy": round(best, 4),
        "blocks": sum(len(g) for g in groups),
    }
    return TransferResult(model, history, info)


def _history_frame(hist: dict, stage: str, lr: float, start: int = 0) -> pd.DataFrame:
    n = len(hist.get("loss", []))
    frame = pd.DataFrame({"epoch": np.arange(start + 1, start + n + 1)})
    for col in ("loss", "accuracy", "val_loss", "val_accuracy"):
        frame[col] = hist.get(col, [np.nan] * n)
    frame["lr"] = hist.get("learning_rate", [lr] * n)
    frame["stage"] = stage
    return frame[list(HISTORY_COLUMNS)]


def fit_pretrained(
    strategy: str,
    architecture: str,
    hp,
    data,
    training: dict[str, Any],
    *,
    seed: int = 0,
    epochs: int | None = None,
    deadline: float | None = None,
    tensorboard_dir: str | None = None,
    cache_dir: str,
    tuner: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    verbose: int = 0,
    augment: Sequence[dict] = (),
) -> FitResult:
    """A pretrained member trained by :func:`run_strategy`, with ``training.fit``'s guards (this
    module uses ``training``'s parts; ``training`` does not import it back).

    ``data`` holds the member's preprocessed arrays, so the probabilities feature extraction
    computes from its cached features match the returned model's. A member that names a recipe
    (``training["recipe"]``, e.g. ``lite-finetune``) fine-tunes by it: its optimizer, schedule,
    loss, ``augment`` and test-time views, built under its precision (recorded as
    ``dtype_policy``); without one the strategies keep their plain Adam stages in float32.
    """
    from benchmark.train.training import FitResult, Guards, precision_scope
    from zoo.record_layers import with_test_time_views

    # Feature extraction stops its head trials by its own ``patience`` option (the guards' NaN and
    # deadline callbacks go to every trial); a second EarlyStopping would cut them shorter.
    guards = Guards(
        training, deadline, tensorboard_dir, early_stopping=strategy != "feature-extraction"
    )
    by_recipe = bool(training.get("recipe")) and strategy != "feature-extraction"
    recipe = {"training": dict(training), "augment": list(augment)} if by_recipe else None
    start = time.perf_counter()
    with precision_scope(training["precision"] if by_recipe else "float32") as policy:
        result = run_strategy(
            strategy,
            architecture,
            hp,
            data,
            cache_dir=cache_dir,
            epochs=int(epochs or training["epochs"]),
            batch_size=int(training["batch_size"]),
            seed=seed,
            learning_rate=float(training["learning_rate"]),
            callbacks=guards.callbacks,
            tuner=tuner or {},
            options=options or {},
            verbose=verbose,
            recipe=recipe,
            deadline=deadline,
        )
    seconds = time.perf_counter() - start
    if strategy == "feature-extraction" and deadline is not None:
        # its head trials ran copies of the deadline guard (Keras Tuner copies callbacks)
        guards.deadline.stopped = guards.deadline.stopped or time.monotonic() >= deadline
    history, done = result.history, len(result.history)
    info = {
        f"transfer_{k}": v
        for k, v in (result.info or {}).items()
        if isinstance(v, (int, float, str, bool)) or v is None
    }
    info["dtype_policy"] = policy
    model = result.model
    if strategy != "feature-extraction":  # which has its own mirrored features (flip_features)
        model = with_test_time_views(model, training.get("tta", "none"))
    return FitResult(
        model=model,
        history=history,
        epochs=done,
        train_seconds=seconds,
        images_per_second=done * len(data.x_train) / seconds if seconds > 0 else 0.0,
        stopped_by_budget=guards.deadline.stopped,
        failed_reason=guards.failure(history),
        extra=info,
        val_probs=result.val_probs,
        test_probs=result.test_probs,
    )
