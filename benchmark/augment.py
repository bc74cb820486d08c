"""Augmentation as batched ``keras.ops`` on whole batches, on whichever backend Keras runs.

A policy is a list of named steps, e.g. ``[{"name": "flip"}, {"name": "cutout", "size": 8}, {"name":
"mixup", "alpha": 0.2}]``, usable from a profile and as a tuner choice. Steps run on whole batches of
float32 pixels in 0..255 with float32 one-hot labels; the two that mix images (mixup, cutmix) mix
the labels too, so they produce soft labels that still sum to 1.

Every step is written once, in ``keras.ops`` and ``keras.random`` with a seeded ``SeedGenerator``, so
the same code runs on TensorFlow, JAX and PyTorch (on the accelerator when there is one). The
geometric steps (flip, translate, rotate, zoom) are Keras's own layers. pad_crop, cutout,
random_erasing, mixup and cutmix are written here because Keras's layers differ from the papers:
``RandomCrop`` takes one window for the whole batch and cannot reflect-pad, ``RandomErasing`` draws
its box from other parameters than Zhong et al.'s area and aspect ranges, and ``CutMix`` mixes the
labels by the drawn ratio rather than by the share of pixels really pasted.

The input pipeline feeding them depends on the backend (:func:`make_dataset`): on TensorFlow a
``tf.data`` pipeline (the steps run in its parallel map, overlapping the training step), elsewhere a
``keras.utils.PyDataset`` over the uint8 arrays. Neither imports anything until it is used, so
checking a profile's policy imports no Keras.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmark.errors import ZoobenchError
from benchmark.named_steps import check_steps, parameters

Batch = tuple[Any, Any]
StepFn = Callable[[Any, Any], Batch]
# factory(seed, **params) -> fn(images, labels) -> (images, labels)
_STEPS: dict[str, Callable[..., StepFn]] = {}
LABEL_MIXING = frozenset({"mixup", "cutmix"})


def step(name: str):
    """Register a step factory: ``factory(seed, **params) -> fn(images, labels) -> (images, labels)``."""

    def decorator(factory):
        _STEPS[name] = factory
        return factory

    return decorator


def available_steps() -> dict[str, dict[str, Any]]:
    """Step names with their parameters and defaults."""
    return {name: parameters(factory, skip=1) for name, factory in sorted(_STEPS.items())}


def validate_policy(policy: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check names and parameters; return the steps with defaults filled in (as recorded in config).

    Values are checked too (ranges, choices: Keras's fill modes and flip modes), so a profile's
    mistake fails when it is read, not when the step is first built in the middle of a run.
    """
    from benchmark.schema import check_step_values, number, one_of, whole

    fill = one_of("reflect", "wrap", "constant", "nearest")
    share = number(0, 1)
    area = number(0, 1, low_open=True)
    rules = {
        "flip": {"mode": one_of("horizontal", "vertical", "horizontal_and_vertical")},
        "translate": {"fraction": share, "fill_mode": fill},
        "rotate": {"degrees": number(0, 180), "fill_mode": fill},
        "zoom": {"fraction": number(0, 1, high_open=True), "fill_mode": fill},
        "pad_crop": {"padding": whole(0)},
        "cutout": {"size": whole(1), "probability": share},
        "random_erasing": {
            "probability": share,
            "min_area": area,
            "max_area": area,
            "min_aspect": area,
        },
        "mixup": {"alpha": number(0, low_open=True)},
        "cutmix": {"alpha": number(0, low_open=True)},
    }
    steps = check_step_values(check_steps(policy, available_steps(), "augment"), rules, "augment")
    for s in steps:
        if s["name"] == "random_erasing" and s["min_area"] > s["max_area"]:
            raise ZoobenchError(
                f"augment step 'random_erasing': min_area {s['min_area']!r} exceeds "
                f"max_area {s['max_area']!r}"
            )
    return steps


def mixes_labels(policy: Sequence[dict[str, Any]]) -> bool:
    return any(s["name"] in LABEL_MIXING for s in policy)


def build_policy(policy: Sequence[dict[str, Any]], seed: int = 0) -> StepFn:
    """One function applying every step of ``policy`` in order to a batch (seeded: same draws)."""
    fns = [
        _STEPS[s["name"]](seed * 1000 + i, **{k: v for k, v in s.items() if k != "name"})
        for i, s in enumerate(validate_policy(policy))
    ]

    def apply(images, labels) -> Batch:
        for fn in fns:
            images, labels = fn(images, labels)
        return images, labels

    return apply


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    batch_size: int = 128,
    policy: Sequence[dict[str, Any]] = (),
    shuffle: bool = True,
    seed: int = 0,
    sparse: bool = False,
    drop_remainder: bool = False,
):
    """Batches of (float32 pixels 0..255, labels) with ``policy`` applied, for ``Model.fit``.

    Labels are one-hot float32 (soft after mixup / cutmix), or int64 when ``sparse`` and the policy
    mixes no labels. The uint8 arrays are kept once; the cast to float happens per batch, after
    shuffling. Shuffling is seeded and differs from epoch to epoch. Returns a ``tf.data.Dataset``
    on the TensorFlow backend and a ``keras.utils.PyDataset`` on the others.
    """
    import keras

    policy = validate_policy(policy)
    if sparse and mixes_labels(policy):
        raise ZoobenchError(
            "sparse labels cannot carry mixup / cutmix soft labels; use one-hot labels"
        )
    if len(x) != len(y):
        raise ZoobenchError(f"{len(x)} images but {len(y)} labels")
    y = np.asarray(y, dtype=np.int64)
    apply = build_policy(policy, seed) if policy else None
    if keras.backend.backend() == "tensorflow":
        return _tf_dataset(x, y, num_classes, batch_size, apply, shuffle, seed, sparse,
                           drop_remainder)  # fmt: skip
    return _array_batches_class()(
        x, y, num_classes=num_classes, batch_size=batch_size, apply=apply, shuffle=shuffle,
        seed=seed, sparse=sparse, drop_remainder=drop_remainder,
    )  # fmt: skip


def _tf_dataset(x, y, num_classes, batch_size, apply, shuffle, seed, sparse, drop_remainder):
    """The TensorFlow route: tf.data runs the policy in a parallel map beside the training step."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(min(len(x), 50_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def to_float(images, labels):
        images = tf.cast(images, tf.float32)
        if sparse:
            return images, labels
        return images, tf.one_hot(labels, num_classes, dtype=tf.float32)

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if apply is not None:
        ds = ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


@functools.cache
def _array_batches_class():
    """``ArrayBatches``, made on first use: subclassing PyDataset means importing Keras."""
    import keras

    class ArrayBatches(keras.utils.PyDataset):
        """Seeded batches of uint8 arrays for the JAX and PyTorch backends.

        The policy runs in ``keras.ops`` on each batch as it is handed to ``fit`` (on the
        accelerator when there is one). The batch order is a seeded permutation per epoch, and one
        worker hands batches out in order, so a run is repeatable.
        """

        def __init__(self, x, y, *, num_classes, batch_size, apply, shuffle, seed, sparse,
                     drop_remainder):  # fmt: skip
            super().__init__()
            self.x, self.y = x, y
            self.num_classes, self.batch_size = int(num_classes), int(batch_size)
            self.apply, self.shuffle, self.seed, self.sparse = apply, shuffle, int(seed), sparse
            count = len(x) / self.batch_size
            self.batches = math.floor(count) if drop_remainder else math.ceil(count)
            self.epoch = 0
            self.order = self._order()

        def _order(self) -> np.ndarray:
            if not self.shuffle:
                return np.arange(len(self.x))
            return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.x))

        def __len__(self) -> int:
            return self.batches

        def __getitem__(self, index: int) -> Batch:
            rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
            images = self.x[rows].astype(np.float32)
            labels = self.y[rows]
            if not self.sparse:
                labels = np.eye(self.num_classes, dtype=np.float32)[labels]
            if self.apply is not None:
                images, labels = self.apply(
                    keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(labels)
                )
            return images, labels

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = self._order()

    return ArrayBatches


# --------------------------------------------------------------------------------------------------
# Steps. Geometric ones are Keras's preprocessing layers (already batched and tested upstream).


def _keras_layer_step(layer) -> StepFn:
    def fn(images, labels) -> Batch:
        return layer(images, training=True), labels

    return fn


@step("flip")
def flip(seed: int, mode: str = "horizontal") -> StepFn:
    """Random horizontal (or vertical / both) flips."""
    import keras

    return _keras_layer_step(keras.layers.RandomFlip(mode, seed=seed))


@step("translate")
def translate(seed: int, fraction: float = 0.125, fill_mode: str = "reflect") -> StepFn:
    """Random shifts of up to ``fraction`` of the side (0.125 = 4 px on CIFAR)."""
    import keras

    return _keras_layer_step(
        keras.layers.RandomTranslation(fraction, fraction, fill_mode=fill_mode, seed=seed)
    )


@step("rotate")
def rotate(seed: int, degrees: float = 15.0, fill_mode: str = "reflect") -> StepFn:
    """Random rotations within +-``degrees``."""
    import keras

    return _keras_layer_step(
        keras.layers.RandomRotation(degrees / 360.0, fill_mode=fill_mode, seed=seed)
    )


@step("zoom")
def zoom(seed: int, fraction: float = 0.1, fill_mode: str = "reflect") -> StepFn:
    """Random zoom in or out by up to ``fraction``."""
    import keras

    return _keras_layer_step(
        keras.layers.RandomZoom((-fraction, fraction), fill_mode=fill_mode, seed=seed)
    )


def _seed_generator(seed: int):
    import keras

    return keras.random.SeedGenerator(seed)


def _sizes(images):
    """(n, h, w) of a batch; dynamic tensors inside a tf.data graph, ints elsewhere."""
    from keras import ops

    shape = ops.shape(images)
    return shape[0], shape[1], shape[2]


@step("pad_crop")
def pad_crop(seed: int, padding: int = 4) -> StepFn:
    """The classic CIFAR recipe: reflect-pad by ``padding`` px, take a random crop of the old size.

    Each image gets its own window (Keras's RandomCrop draws one window per batch).
    """
    from keras import ops, random

    padding = int(padding)
    rng = _seed_generator(seed)

    def fn(images, labels) -> Batch:
        n, h, w = _sizes(images)
        channels = images.shape[-1]
        padded = ops.pad(
            images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode="reflect"
        )
        big_h, big_w = h + 2 * padding, w + 2 * padding
        dy = random.randint((n,), 0, 2 * padding + 1, seed=rng, dtype="int32")
        dx = random.randint((n,), 0, 2 * padding + 1, seed=rng, dtype="int32")
        image = ops.arange(n, dtype="int32")
        # Rows: gather from (n * big_h, big_w, c) by flat row index, then columns the same way.
        rows = (image * big_h + dy)[:, None] + ops.arange(h, dtype="int32")[None, :]
        out = ops.take(ops.reshape(padded, (-1, big_w, channels)), ops.reshape(rows, (-1,)), axis=0)
        out = ops.transpose(ops.reshape(out, (n, h, big_w, channels)), (0, 2, 1, 3))
        cols = (image * big_w + dx)[:, None] + ops.arange(w, dtype="int32")[None, :]
        out = ops.take(ops.reshape(out, (-1, h, channels)), ops.reshape(cols, (-1,)), axis=0)
        return ops.transpose(ops.reshape(out, (n, w, h, channels)), (0, 2, 1, 3)), labels

    return fn


def _box_mask(h, w, top, left, box_h, box_w):
    """(n, h, w, 1) float mask, 1 inside each image's box [top, top+box_h) x [left, left+box_w)."""
    from keras import ops

    ys = ops.arange(h, dtype="int32")[None, :, None]
    xs = ops.arange(w, dtype="int32")[None, None, :]
    top, left = top[:, None, None], left[:, None, None]
    inside = ops.logical_and(
        ops.logical_and(ys >= top, ys < top + box_h[:, None, None]),
        ops.logical_and(xs >= left, xs < left + box_w[:, None, None]),
    )
    return ops.cast(inside, "float32")[..., None]


def _uniform(n, rng, low=0.0, high=1.0):
    from keras import random

    return random.uniform((n,), low, high, seed=rng)


def _place(n, size, room, rng):
    """A random integer offset in [0, room - size] for each of ``n`` boxes (``size`` per box)."""
    from keras import ops

    span = ops.cast(room - size + 1, "float32")
    return ops.cast(ops.floor(_uniform(n, rng) * span), "int32")


@step("cutout")
def cutout(seed: int, size: int = 8, probability: float = 1.0) -> StepFn:
    """Zero a ``size`` x ``size`` square at a random place inside each image (DeVries & Taylor 2017)."""
    from keras import ops

    size = int(size)
    rng = _seed_generator(seed)

    def fn(images, labels) -> Batch:
        n, h, w = _sizes(images)
        box = ops.full((n,), size, dtype="int32")
        mask = _box_mask(h, w, _place(n, box, h, rng), _place(n, box, w, rng), box, box)
        apply = ops.cast(_uniform(n, rng) < probability, "float32")[:, None, None, None]
        return images * (1.0 - mask * apply), labels

    return fn


@step("random_erasing")
def random_erasing(
    seed: int,
    probability: float = 0.5,
    min_area: float = 0.02,
    max_area: float = 0.33,
    min_aspect: float = 0.3,
) -> StepFn:
    """Random Erasing (Zhong et al. 2020): a random-size, random-aspect box filled with noise."""
    from keras import ops, random

    rng = _seed_generator(seed)

    def fn(images, labels) -> Batch:
        n, h, w = _sizes(images)
        hf, wf = ops.cast(h, "float32"), ops.cast(w, "float32")
        area = _uniform(n, rng, min_area, max_area) * hf * wf
        aspect = ops.exp(_uniform(n, rng, math.log(min_aspect), -math.log(min_aspect)))
        box_h = ops.clip(ops.cast(ops.round(ops.sqrt(area * aspect)), "int32"), 1, h)
        box_w = ops.clip(ops.cast(ops.round(ops.sqrt(area / aspect)), "int32"), 1, w)
        mask = _box_mask(h, w, _place(n, box_h, h, rng), _place(n, box_w, w, rng), box_h, box_w)
        mask = mask * ops.cast(_uniform(n, rng) < probability, "float32")[:, None, None, None]
        noise = random.uniform(ops.shape(images), 0.0, 255.0, seed=rng)
        return images * (1.0 - mask) + noise * mask, labels

    return fn


def _partners(n, rng):
    """A random permutation of the batch: each image's mixing partner."""
    from keras import ops, random

    return random.shuffle(ops.arange(n, dtype="int32"), seed=rng)


@step("mixup")
def mixup(seed: int, alpha: float = 0.2) -> StepFn:
    """mixup (Zhang et al. 2018): convex mixes of image pairs and of their labels."""
    from keras import ops, random

    rng = _seed_generator(seed)

    def fn(images, labels) -> Batch:
        n = ops.shape(images)[0]
        lam = random.beta((n,), alpha, alpha, seed=rng)
        perm = _partners(n, rng)
        li = lam[:, None, None, None]
        mixed = li * images + (1.0 - li) * ops.take(images, perm, axis=0)
        mixed_labels = lam[:, None] * labels + (1.0 - lam[:, None]) * ops.take(labels, perm, axis=0)
        return mixed, mixed_labels

    return fn


@step("cutmix")
def cutmix(seed: int, alpha: float = 1.0) -> StepFn:
    """CutMix (Yun et al. 2019): paste a box from another image; labels mix by the box's area."""
    from keras import ops, random

    rng = _seed_generator(seed)

    def fn(images, labels) -> Batch:
        n, h, w = _sizes(images)
        hf, wf = ops.cast(h, "float32"), ops.cast(w, "float32")
        cut = ops.sqrt(1.0 - random.beta((n,), alpha, alpha, seed=rng))
        box_h = ops.cast(ops.round(cut * hf), "int32")
        box_w = ops.cast(ops.round(cut * wf), "int32")
        mask = _box_mask(h, w, _place(n, box_h, h, rng), _place(n, box_w, w, rng), box_h, box_w)
        perm = _partners(n, rng)
        mixed = images * (1.0 - mask) + ops.take(images, perm, axis=0) * mask
        pasted = ops.cast(box_h * box_w, "float32") / (hf * wf)  # the exact share that was pasted
        mixed_labels = (1.0 - pasted)[:, None] * labels + pasted[:, None] * ops.take(
            labels, perm, axis=0
        )
        return mixed, mixed_labels

    return fn
