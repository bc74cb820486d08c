"""Augmentation as batched TensorFlow ops in the tf.data input pipeline (no per-image Python).

A policy is a list of named steps, e.g. ``[{"name": "flip"}, {"name": "cutout", "size": 8},
{"name": "mixup", "alpha": 0.2}]``, usable from a profile and as a tuner choice. Steps run on whole
batches of float32 pixels in 0..255 with float32 one-hot labels; the two that mix images (mixup,
cutmix) mix the labels too, so they produce soft labels that still sum to 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from benchmark.errors import ZoobenchError
from benchmark.named_steps import check_steps, parameters

Batch = tuple[tf.Tensor, tf.Tensor]
_STEPS: dict[str, Callable[..., Callable[[tf.Tensor, tf.Tensor], Batch]]] = {}
LABEL_MIXING = frozenset({"mixup", "cutmix"})


def step(name: str):
    """Register a step factory: ``factory(**params) -> fn(images, labels) -> (images, labels)``."""

    def decorator(factory):
        _STEPS[name] = factory
        return factory

    return decorator


def available_steps() -> dict[str, dict[str, Any]]:
    """Step names with their parameters and defaults."""
    return {name: parameters(factory) for name, factory in sorted(_STEPS.items())}


def validate_policy(policy: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check names and parameters; return the steps with defaults filled in (as recorded in config)."""
    return check_steps(policy, available_steps(), "augment")


def mixes_labels(policy: Sequence[dict[str, Any]]) -> bool:
    return any(s["name"] in LABEL_MIXING for s in policy)


def build_policy(policy: Sequence[dict[str, Any]]) -> Callable[[tf.Tensor, tf.Tensor], Batch]:
    """One function applying every step of ``policy`` in order to a batch."""
    fns = [
        _STEPS[s["name"]](**{k: v for k, v in s.items() if k != "name"})
        for s in validate_policy(policy)
    ]

    def apply(images: tf.Tensor, labels: tf.Tensor) -> Batch:
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
) -> tf.data.Dataset:
    """A batched ``tf.data.Dataset`` of (float32 pixels 0..255, labels) with ``policy`` applied.

    Labels are one-hot float32 (soft after mixup / cutmix), or int64 when ``sparse`` and the policy
    mixes no labels. The uint8 arrays are placed in the pipeline once; the cast to float happens per
    batch, after shuffling, so memory stays at one copy of the uint8 data.
    """
    policy = validate_policy(policy)
    if sparse and mixes_labels(policy):
        raise ZoobenchError(
            "sparse labels cannot carry mixup / cutmix soft labels; use one-hot labels"
        )
    if len(x) != len(y):
        raise ZoobenchError(f"{len(x)} images but {len(y)} labels")
    ds = tf.data.Dataset.from_tensor_slices((x, np.asarray(y, dtype=np.int64)))
    if shuffle:
        ds = ds.shuffle(min(len(x), 50_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def to_float(images: tf.Tensor, labels: tf.Tensor) -> Batch:
        images = tf.cast(images, tf.float32)
        if sparse:
            return images, labels
        return images, tf.one_hot(labels, num_classes, dtype=tf.float32)

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if policy:
        ds = ds.map(build_policy(policy), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------------------------------
# Steps. Geometric ones are Keras's preprocessing layers (already batched and tested upstream).


def _keras_layer_step(layer) -> Callable[[tf.Tensor, tf.Tensor], Batch]:
    def fn(images: tf.Tensor, labels: tf.Tensor) -> Batch:
        return layer(images, training=True), labels

    return fn


@step("flip")
def flip(mode: str = "horizontal"):
    """Random horizontal (or vertical / both) flips."""
    import keras

    return _keras_layer_step(keras.layers.RandomFlip(mode))


@step("translate")
def translate(fraction: float = 0.125, fill_mode: str = "reflect"):
    """Random shifts of up to ``fraction`` of the side (0.125 = 4 px on CIFAR)."""
    import keras

    return _keras_layer_step(
        keras.layers.RandomTranslation(fraction, fraction, fill_mode=fill_mode)
    )


@step("rotate")
def rotate(degrees: float = 15.0, fill_mode: str = "reflect"):
    """Random rotations within +-``degrees``."""
    import keras

    return _keras_layer_step(keras.layers.RandomRotation(degrees / 360.0, fill_mode=fill_mode))


@step("zoom")
def zoom(fraction: float = 0.1, fill_mode: str = "reflect"):
    """Random zoom in or out by up to ``fraction``."""
    import keras

    return _keras_layer_step(keras.layers.RandomZoom((-fraction, fraction), fill_mode=fill_mode))


@step("pad_crop")
def pad_crop(padding: int = 4):
    """The classic CIFAR recipe: reflect-pad by ``padding`` px, take a random crop of the old size."""
    padding = int(padding)

    def fn(images: tf.Tensor, labels: tf.Tensor) -> Batch:
        shape = tf.shape(images)
        n, h, w = shape[0], shape[1], shape[2]
        padded = tf.pad(
            images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode="REFLECT"
        )
        dy = tf.random.uniform([n], 0, 2 * padding + 1, dtype=tf.int32)
        dx = tf.random.uniform([n], 0, 2 * padding + 1, dtype=tf.int32)
        rows = dy[:, None] + tf.range(h)[None, :]  # (n, h)
        cols = dx[:, None] + tf.range(w)[None, :]  # (n, w)
        out = tf.gather(padded, rows, axis=1, batch_dims=1)
        out = tf.gather(out, cols, axis=2, batch_dims=1)
        return out, labels

    return fn


def _box_mask(n, h, w, top, left, box_h, box_w) -> tf.Tensor:
    """(n, h, w, 1) float mask, 1 inside each image's box [top, top+box_h) x [left, left+box_w)."""
    ys = tf.range(h)[None, :, None]
    xs = tf.range(w)[None, None, :]
    inside = (
        (ys >= top[:, None, None])
        & (ys < (top + box_h)[:, None, None])
        & (xs >= left[:, None, None])
        & (xs < (left + box_w)[:, None, None])
    )
    return tf.cast(inside, tf.float32)[..., None]


@step("cutout")
def cutout(size: int = 8, probability: float = 1.0):
    """Zero a ``size`` x ``size`` square at a random place inside each image (DeVries & Taylor 2017)."""
    size = int(size)

    def fn(images: tf.Tensor, labels: tf.Tensor) -> Batch:
        shape = tf.shape(images)
        n, h, w = shape[0], shape[1], shape[2]
        top = tf.random.uniform([n], 0, h - size + 1, dtype=tf.int32)
        left = tf.random.uniform([n], 0, w - size + 1, dtype=tf.int32)
        box = tf.fill([n], size)
        mask = _box_mask(n, h, w, top, left, box, box)
        apply = tf.cast(tf.random.uniform([n]) < probability, tf.float32)[:, None, None, None]
        return images * (1.0 - mask * apply), labels

    return fn


@step("random_erasing")
def random_erasing(
    probability: float = 0.5,
    min_area: float = 0.02,
    max_area: float = 0.33,
    min_aspect: float = 0.3,
):
    """Random Erasing (Zhong et al. 2020): a random-size, random-aspect box filled with noise."""

    def fn(images: tf.Tensor, labels: tf.Tensor) -> Batch:
        shape = tf.shape(images)
        n, h, w = shape[0], shape[1], shape[2]
        hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
        area = tf.random.uniform([n], min_area, max_area) * hf * wf
        log_r = tf.random.uniform([n], np.log(min_aspect), -np.log(min_aspect))
        aspect = tf.exp(log_r)
        box_h = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), 1, h)
        box_w = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), 1, w)
        top = tf.cast(tf.random.uniform([n]) * tf.cast(h - box_h + 1, tf.float32), tf.int32)
        left = tf.cast(tf.random.uniform([n]) * tf.cast(w - box_w + 1, tf.float32), tf.int32)
        mask = _box_mask(n, h, w, top, left, box_h, box_w)
        mask *= tf.cast(tf.random.uniform([n]) < probability, tf.float32)[:, None, None, None]
        noise = tf.random.uniform(tf.shape(images), 0.0, 255.0)
        return images * (1.0 - mask) + noise * mask, labels

    return fn


def _beta(n, alpha: float) -> tf.Tensor:
    a = tf.random.gamma([n], alpha)
    b = tf.random.gamma([n], alpha)
    return a / (a + b)


@step("mixup")
def mixup(alpha: float = 0.2):
    """mixup (Zhang et al. 2018): convex mixes of image pairs and of their labels."""

    def fn(images: tf.Tensor, labels: tf.Tensor) -> Batch:
        n = tf.shape(images)[0]
        lam = _beta(n, alpha)
        perm = tf.random.shuffle(tf.range(n))
        li = lam[:, None, None, None]
        mixed = li * images + (1.0 - li) * tf.gather(images, perm)
        mixed_labels = lam[:, None] * labels + (1.0 - lam[:, None]) * tf.gather(labels, perm)
        return mixed, mixed_labels

    return fn


@step("cutmix")
def cutmix(alpha: float = 1.0):
    """CutMix (Yun et al. 2019): paste a box from another image; labels mix by the box's area."""

    def fn(images: tf.Tensor, labels: tf.Tensor) -> Batch:
        shape = tf.shape(images)
        n, h, w = shape[0], shape[1], shape[2]
        hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
        lam = _beta(n, alpha)
        cut = tf.sqrt(1.0 - lam)
        box_h = tf.cast(tf.round(cut * hf), tf.int32)
        box_w = tf.cast(tf.round(cut * wf), tf.int32)
        top = tf.cast(tf.random.uniform([n]) * tf.cast(h - box_h + 1, tf.float32), tf.int32)
        left = tf.cast(tf.random.uniform([n]) * tf.cast(w - box_w + 1, tf.float32), tf.int32)
        mask = _box_mask(n, h, w, top, left, box_h, box_w)
        perm = tf.random.shuffle(tf.range(n))
        mixed = images * (1.0 - mask) + tf.gather(images, perm) * mask
        pasted = tf.cast(box_h * box_w, tf.float32) / (hf * wf)  # the exact share that was pasted
        mixed_labels = (1.0 - pasted)[:, None] * labels + pasted[:, None] * tf.gather(labels, perm)
        return mixed, mixed_labels

    return fn
