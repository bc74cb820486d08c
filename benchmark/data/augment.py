"""Augmentation as batched ``keras.ops`` on whole batches, on whichever backend Keras runs.

A policy is a list of named steps, e.g. ``[{"name": "flip"}, {"name": "cutout", "size": 8}, {"name":
"mixup", "alpha": 0.2}]``, usable from a profile and as a tuner choice. Steps run on whole batches of
float32 pixels in 0..255 with float32 one-hot labels; the two that mix images (mixup, cutmix) mix
the labels too, so they produce soft labels that still sum to 1.

Every step is written once, in ``keras.ops`` and ``keras.random`` with a seeded ``SeedGenerator``, so
the same code runs on TensorFlow, JAX and PyTorch (on the accelerator when there is one). The
geometric steps (flip, translate, rotate, zoom) are Keras's own layers. pad_crop, cutout,
random_erasing, mixup and cutmix are written here because Keras 3.15's layers differ from the
papers (read in ``keras/src/layers/preprocessing/image_preprocessing/``):

- ``RandomCrop`` draws one (top, left) for the whole batch, and only crops a larger input: it has
  no padding, so on 32x32 images cropped to 32x32 it changes nothing (pad_crop reflect-pads and
  draws a window per image).
- ``RandomErasing`` draws the box's width and height fractions as the square roots of two
  independent uniforms in ``scale``, so neither its area is uniform in [s_l, s_h] nor its aspect
  log-uniform as Zhong et al.'s; its ``factor`` is itself drawn per image from [0, factor], so
  factor 0.5 erases a quarter of the images on average; and its noise is ``normal * 255`` clipped to
  0..255 (half the pixels black, a sixth saturated) instead of uniform noise.
- ``CutMix`` mixes the labels by the box's continuous area, (x1 - x0)(y1 - y0) with float corners,
  while its mask pastes the whole pixels whose coordinates fall in [x0, x1): the label weight can be
  off the share of pixels really pasted by a row and a column (about 6% of a 32-px image); it also
  draws alpha itself from [0, factor] once per batch.

The learned policies: ``randaugment`` and ``augmix`` are Keras's layers (AugMix wrapped so that it
is seeded and varies from batch to batch inside ``tf.data``; see :func:`augmix`);
``trivialaugment`` (TrivialAugment Wide), which Keras lacks, is built here from Keras's layers and
ops. Cost on a 256-image 32x32 batch in the ``tf.data`` map (this 2-core CPU, shared): randaugment
about 0.2-0.5 s (every one of its 11 ops runs on the whole batch ``num_ops`` times; ~500-1,300
images/s), augmix 0.05-0.13 s after a start-up of about 0.5-1 s a variant, trivialaugment about
0.17-0.28 s (its 14 ops each run once; ~900-1,500 images/s).

The input pipeline feeding them depends on the backend (:func:`make_dataset`): on TensorFlow a
``tf.data`` pipeline (the steps run in its parallel map, overlapping the training step), elsewhere a
``keras.utils.PyDataset`` over the uint8 arrays. Neither imports anything until it is used, so
checking a profile's policy imports no Keras.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import random as py_random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmark.config.named_steps import check_steps, parameters
from benchmark.errors import ZoobenchError

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
    from benchmark.config.schema import check_step_values, number, one_of, whole

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
        "randaugment": {"num_ops": whole(1), "factor": share},
        "augmix": {
            "factor": share,
            "num_chains": whole(1),
            "chain_depth": whole(1),
            "alpha": number(0, low_open=True),
            "variants": whole(1),
        },
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
    sample_weight: np.ndarray | None = None,
    epochs: int | None = None,
    on_device: bool | None = None,
):
    """Batches of (float32 pixels 0..255, labels) with ``policy`` applied, for ``Model.fit``.

    On JAX (and PyTorch with a GPU) the batches are made on the device from the split held there
    (``benchmark.data.device_batches``) when the policy's steps allow it and the split fits;
    ``on_device`` False forces the host route (a ``PyDataset`` of uint8 arrays), True takes the
    device route on either backend and refuses to fall back.

    With the alternating flip in ``policy`` and ``epochs`` given, the TensorFlow route returns all
    ``epochs`` epochs as one stream (fit it with ``steps_per_epoch``), since each batch must know
    its epoch; the other routes know it already.

    With ``sample_weight`` (one float a row: a boosting round's weights) the batches are
    (pixels, labels, weights) and each weight follows its image through the shuffle; a policy that
    mixes labels (mixup, cutmix) is refused with it, since a mixed image has no one weight.

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
    weights = _check_sample_weight(sample_weight, len(y), policy)
    flips = None
    if alternating_flips(policy) and epochs:
        flips = first_epoch_flips(len(x), seed)
        policy = [s for s in policy if s["name"] != ALTERNATING_FLIP]
    apply = build_policy(policy, seed) if policy else None
    if keras.backend.backend() == "tensorflow":
        if flips is not None:  # streams_epochs(policy, epochs)
            return _tf_epoch_stream(
                x,
                y,
                num_classes,
                batch_size,
                apply,
                seed,
                sparse,
                weights,
                flips=flips,
                epochs=int(epochs),
                shuffle=shuffle,
            )
        return _tf_dataset(
            x, y, num_classes, batch_size, apply, shuffle, seed, sparse, drop_remainder, weights
        )
    from benchmark.data import device_batches

    wanted = on_device if on_device is not None else device_batches.preferred()
    device_ok = device_batches.supports(policy) and device_batches.fits(int(np.asarray(x).nbytes))
    if on_device and not device_ok:
        raise ZoobenchError(
            "the device input pipeline cannot run this policy or hold this split "
            f"(steps it runs: {', '.join(sorted(device_batches.DEVICE_STEPS))})"
        )
    if wanted and device_ok:
        return device_batches.device_batches(
            x,
            y,
            num_classes=num_classes,
            batch_size=batch_size,
            policy=build_policy_with_state(policy, seed) if policy else (None, []),
            shuffle=shuffle,
            seed=seed,
            sparse=sparse,
            drop_remainder=drop_remainder,
            weights=weights,
            flips=flips,
        )
    return _array_batches_class()(
        x,
        y,
        num_classes=num_classes,
        batch_size=batch_size,
        apply=apply,
        shuffle=shuffle,
        seed=seed,
        sparse=sparse,
        drop_remainder=drop_remainder,
        weights=weights,
        flips=flips,
    )


def _check_sample_weight(sample_weight, n: int, policy) -> np.ndarray | None:
    """``sample_weight`` as float32, one finite non-negative weight a row (None: unweighted)."""
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight, dtype=np.float32).ravel()
    if len(weights) != n or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ZoobenchError(f"sample_weight must be {n} finite non-negative numbers, one an image")
    if mixes_labels(policy):
        raise ZoobenchError(
            "sample_weight cannot be combined with mixup / cutmix: a mixed image "
            "has no one weight (boosting resamples by weight instead)"
        )
    return weights


def _tf_dataset(
    x, y, num_classes, batch_size, apply, shuffle, seed, sparse, drop_remainder, weights=None
):
    """The TensorFlow route: tf.data runs the policy in a parallel map beside the training step."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y) if weights is None else (x, y, weights))
    if shuffle:
        ds = ds.shuffle(min(len(x), 50_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def to_float(images, labels, *weights):
        images = tf.cast(images, tf.float32)
        if not sparse:
            labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        return (images, labels, *weights)

    return _then_policy(ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE), apply)


def _then_policy(ds, apply):
    """``ds`` (float batches) with the policy mapped over it in parallel, prefetched."""
    import tensorflow as tf

    if apply is not None:  # the weights (when there are any) pass through beside the policy
        # The steps are keras.ops with no Python control flow on tensors: AutoGraph has nothing to
        # convert, and skipping it traces a policy faster (AugMix's branches above all).
        policy_map = tf.autograph.experimental.do_not_convert(
            lambda images, labels, *weights: (*apply(images, labels), *weights)
        )
        ds = ds.map(policy_map, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _tf_epoch_stream(
    x, y, num_classes, batch_size, apply, seed, sparse, weights, *, flips, epochs, shuffle
):
    """``epochs`` epochs in one tf.data stream of :func:`stream_steps` batches an epoch: each image
    is mirrored when its first-epoch flip differs from its epoch's parity (the alternating flip),
    then the rest of the policy runs. Batches may straddle two epochs; each image knows its own."""
    import tensorflow as tf

    n = len(x)
    columns = (x, y, flips) if weights is None else (x, y, flips, weights)
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:  # reshuffled in every epoch (the shuffle comes before the repeat)
        ds = ds.shuffle(min(n, 50_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat(epochs).enumerate().batch(min(batch_size, n))

    def prepare(index, columns):
        images, labels, flip, *weights = columns
        images = tf.cast(images, tf.float32)
        odd = tf.equal((index // n) % 2, 1)
        mirror = tf.not_equal(flip, odd)[:, None, None, None]
        images = tf.where(mirror, tf.reverse(images, axis=[2]), images)
        if not sparse:
            labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        return (images, labels, *weights)

    return _then_policy(ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE), apply)


def stream_steps(n: int, batch_size: int) -> int:
    """Batches an epoch of a stream of epochs: whole batches only, so the stream never runs dry."""
    return max(1, n // min(batch_size, n))


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

        def __init__(
            self,
            x,
            y,
            *,
            num_classes,
            batch_size,
            apply,
            shuffle,
            seed,
            sparse,
            drop_remainder,
            weights=None,
            flips=None,
        ):
            super().__init__()
            self.x, self.y, self.weights, self.flips = x, y, weights, flips
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
            if self.flips is not None:  # the alternating flip: mirrored when flip != parity
                mirror = self.flips[rows] != bool(self.epoch % 2)
                images[mirror] = images[mirror, :, ::-1]
            labels = self.y[rows]
            if not self.sparse:
                labels = np.eye(self.num_classes, dtype=np.float32)[labels]
            if self.apply is not None:
                images, labels = self.apply(
                    keras.ops.convert_to_tensor(images), keras.ops.convert_to_tensor(labels)
                )
            if self.weights is not None:
                return images, labels, self.weights[rows]
            return images, labels

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = self._order()

    return ArrayBatches


# --------------------------------------------------------------------------------------------------
# Steps. Geometric ones are Keras's preprocessing layers (already batched and tested upstream).


def _keras_layer_step(layer) -> StepFn:
    _remember_state(*(v for v in layer.non_trainable_variables if "seed" in v.path))

    def fn(images, labels) -> Batch:
        return layer(images, training=True), labels

    return fn


@step("flip")
def flip(seed: int, mode: str = "horizontal") -> StepFn:
    """Random horizontal (or vertical / both) flips."""
    import keras

    return _keras_layer_step(keras.layers.RandomFlip(mode, seed=seed))


ALTERNATING_FLIP = "alternating_flip"


@step(ALTERNATING_FLIP)
def alternating_flip(seed: int) -> StepFn:
    """Derandomised horizontal flips (airbench): each image is mirrored in every other epoch, a
    random half of them in the even epochs and the other half in the odd ones, so no image goes
    two epochs unseen in either orientation.

    :func:`make_dataset` runs it before the rest of the policy, where it knows each image and the
    epoch; applied to a lone batch (no epochs to alternate over) it is a random flip.
    """
    return flip(seed)


def alternating_flips(policy: Sequence[dict[str, Any]]) -> bool:
    """Whether ``policy`` holds the alternating flip (the dataset runs it, epoch by epoch)."""
    return any(s.get("name") == ALTERNATING_FLIP for s in policy)


def streams_epochs(policy: Sequence[dict[str, Any]], epochs: int | None) -> bool:
    """Whether :func:`make_dataset` hands ``fit`` all ``epochs`` as one stream (fit it with
    ``steps_per_epoch``): on TensorFlow with the alternating flip, whose batches must know their
    epoch; a PyDataset (JAX, PyTorch) knows it already."""
    import keras

    return bool(epochs) and alternating_flips(policy) and keras.backend.backend() == "tensorflow"


def first_epoch_flips(n: int, seed: int) -> np.ndarray:
    """Which of ``n`` images are mirrored in even epochs (seeded; the rest in odd ones)."""
    return np.random.default_rng([seed, 1701]).random(n) < 0.5


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

    generator = keras.random.SeedGenerator(seed)
    _remember_state(generator.state)
    return generator


# The random state variables of the steps being built, while build_policy_with_state collects them.
_STATE: contextvars.ContextVar[list | None] = contextvars.ContextVar("augment_state", default=None)


def _remember_state(*variables) -> None:
    collected = _STATE.get()
    if collected is not None:
        collected.extend(variables)


def build_policy_with_state(policy: Sequence[dict[str, Any]], seed: int = 0) -> tuple[StepFn, list]:
    """:func:`build_policy`, and the Keras variables holding its steps' random state (their seed
    generators'), so the policy can run as a pure function of that state inside a compiled one
    (``benchmark.data.device_batches``: ``keras.StatelessScope``)."""
    collected: list = []
    token = _STATE.set(collected)
    try:
        apply = build_policy(policy, seed)
    finally:
        _STATE.reset(token)
    return apply, collected


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
    from keras import random

    padding = int(padding)
    rng = _seed_generator(seed)

    def fn(images, labels) -> Batch:
        n = _sizes(images)[0]
        dy = random.randint((n,), 0, 2 * padding + 1, seed=rng, dtype="int32")
        dx = random.randint((n,), 0, 2 * padding + 1, seed=rng, dtype="int32")
        return _shifted_windows(images, padding, dy, dx, "reflect"), labels

    return fn


def _shifted_windows(images, padding: int, dy, dx, mode: str):
    """Pad every image by ``padding`` px (``mode``: reflect / constant 0) and take the window of the
    old size at offset (``dy``, ``dx``) of each: a per-image integer shift, as one pair of gathers."""
    from keras import ops

    n, h, w = _sizes(images)
    channels = images.shape[-1]
    padded = ops.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], mode=mode)
    big_h, big_w = h + 2 * padding, w + 2 * padding
    image = ops.arange(n, dtype="int32")
    # Rows: gather from (n * big_h, big_w, c) by flat row index, then columns the same way.
    rows = (image * big_h + dy)[:, None] + ops.arange(h, dtype="int32")[None, :]
    out = ops.take(ops.reshape(padded, (-1, big_w, channels)), ops.reshape(rows, (-1,)), axis=0)
    out = ops.transpose(ops.reshape(out, (n, h, big_w, channels)), (0, 2, 1, 3))
    cols = (image * big_w + dx)[:, None] + ops.arange(w, dtype="int32")[None, :]
    out = ops.take(ops.reshape(out, (-1, h, channels)), ops.reshape(cols, (-1,)), axis=0)
    return ops.transpose(ops.reshape(out, (n, w, h, channels)), (0, 2, 1, 3))


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


# --------------------------------------------------------------------------------------------------
# Learned policies: RandAugment and AugMix are Keras's layers; TrivialAugment (which Keras lacks)
# is built here from Keras's layers and ops.


def _sub_seeds(seed: int, count: int) -> list[int]:
    """``count`` independent integer seeds derived from ``seed`` (for the layers inside a step)."""
    return [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(count)]


@step("randaugment")
def randaugment(seed: int, num_ops: int = 2, factor: float = 0.5) -> StepFn:
    """RandAugment (Cubuk et al. 2020), Keras's layer: ``num_ops`` of 11 ops at strength ``factor``.

    Keras draws the ops once per batch (every image of a batch gets the same ops, each with its own
    magnitude), each magnitude uniformly in [0, factor] of the op's range and one-sided (rotations up
    to factor x 360 degrees, shifts, brightness and contrast one way only), where the paper picks
    ops per image at one fixed magnitude. Keras maps ``factor`` so that posterize (bits 1..8 x factor)
    and solarize (threshold up to factor x 255) grow *stronger* as it falls. Mean absolute change of
    a CIFAR pixel (0..255) per call, measured: 50-90 at factor 0.5 (solarize alone ~95, rotation ~50),
    15-30 at 0.1; trivialaugment's is about 35.
    """
    import keras

    return _keras_layer_step(
        keras.layers.RandAugment(
            value_range=(0, 255), num_ops=int(num_ops), factor=float(factor), seed=seed
        )
    )


@contextlib.contextmanager
def _python_random_seeded(seed: int):
    """Python's ``random`` seeded with ``seed`` inside, its old state restored after."""
    state = py_random.getstate()
    py_random.seed(seed)
    try:
        yield
    finally:
        py_random.setstate(state)


@step("augmix")
def augmix(
    seed: int,
    factor: float = 0.3,
    num_chains: int = 3,
    chain_depth: int = 3,
    alpha: float = 1.0,
    variants: int = 8,
) -> StepFn:
    """AugMix (Hendrycks et al. 2020), Keras's layer: ``num_chains`` chains of up to ``chain_depth``
    ops, mixed with Dirichlet(``alpha``) weights, then with the original by a Beta(``alpha``) weight.

    Keras's layer picks each chain's ops with Python's unseeded global ``random`` when it draws a
    transformation; inside ``tf.data`` that happens once, when the map is traced, so one set of
    chains would serve the whole run and a seed would not repeat it. Here the layer runs in one of
    ``variants`` branches, each drawing its chains under its own seed derived from the step's seed,
    and a seeded draw picks the branch for each batch (``keras.ops.switch``: only that branch runs).
    More variants, more distinct chain sets, but each is traced: about 0.5-1 s of start-up apiece
    on this 2-core CPU (Keras's Equalization builds a large graph). The layer mixes one way per
    batch (same chains and weights for every image of a batch, each op with per-image magnitudes);
    the paper mixes per image.
    """
    import keras
    from keras import ops, random

    layer = keras.layers.AugMix(
        value_range=(0, 255),
        num_chains=int(num_chains),
        chain_depth=int(chain_depth),
        factor=float(factor),
        alpha=float(alpha),
        seed=seed,
    )
    rng = _seed_generator(seed)

    def variant(chain_seed: int):
        def run(images):
            with _python_random_seeded(chain_seed):
                return layer(images, training=True)

        return run

    branches = [variant(s) for s in _sub_seeds(seed, int(variants))]

    def fn(images, labels) -> Batch:
        index = random.randint((), 0, len(branches), seed=rng, dtype="int32")
        if keras.backend.backend() == "tensorflow":
            return ops.switch(index, branches, images), labels
        return branches[int(ops.convert_to_numpy(index))](images), labels

    return fn


TRIVIAL_OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)


@step("trivialaugment")
def trivialaugment(seed: int) -> StepFn:
    """TrivialAugment Wide (Müller & Hutter 2021): one op per image, with a uniform random magnitude.

    Keras 3.15 has no TrivialAugment (nor AutoAugment), so it is built here. Per image: one of the 14
    ops of :data:`TRIVIAL_OPS`, drawn uniformly, at a magnitude drawn uniformly over TA-Wide's range
    (continuous, where torchvision picks one of 31 bins), signed ops with a random sign:

    - shear x / y up to 0.99 and rotation up to 135 degrees: Keras's ``RandomShear`` /
      ``RandomRotation`` (black fill, nearest-neighbour sampling, as torchvision's reference);
    - translate x / y up to 32 px, black fill: an integer per-image shift (the gathers of pad_crop);
    - brightness, colour, contrast: PIL's enhance blends ``degenerate + (1 + m) * (image -
      degenerate)``, m in [-0.99, 0.99], with black / the grey image / the grey mean as degenerate
      (keras.ops: Keras's RandomBrightness adds instead of scaling, its RandomColorDegeneration
      cannot saturate, its RandomContrast blends per channel);
    - sharpness: Keras's ``RandomSharpness`` (the same PIL blend with the 3x3 smoothing kernel);
    - posterize to 2..7 bits (8 would be the identity), solarize above a uniform threshold,
      autocontrast, equalize: Keras's ``RandomPosterization``, ``Solarization``, ``AutoContrast``,
      ``Equalization``.

    Every op runs on the whole batch and each image keeps its own op's result: about 14 ops' cost.
    """
    import keras
    from keras import ops, random

    seeds = iter(_sub_seeds(seed, 8))
    geometric = {"fill_mode": "constant", "interpolation": "nearest"}
    layers = {
        "shear_x": keras.layers.RandomShear(x_factor=0.99, seed=next(seeds), **geometric),
        "shear_y": keras.layers.RandomShear(y_factor=0.99, seed=next(seeds), **geometric),
        "rotate": keras.layers.RandomRotation(135 / 360, seed=next(seeds), **geometric),
        "sharpness": keras.layers.RandomSharpness(
            (0.005, 0.995), value_range=(0, 255), seed=next(seeds)
        ),
        "posterize": keras.layers.RandomPosterization(
            (2, 8), value_range=(0, 255), seed=next(seeds)
        ),
        "solarize": keras.layers.Solarization(
            threshold_factor=(0.0, 1.0), value_range=(0, 255), seed=next(seeds)
        ),
        "autocontrast": keras.layers.AutoContrast(value_range=(0, 255)),
        "equalize": keras.layers.Equalization(value_range=(0, 255)),
    }
    rng = _seed_generator(next(seeds))
    shift = 32

    def enhance(images, degenerate, n):
        factor = 1.0 + _uniform(n, rng, -0.99, 0.99)[:, None, None, None]
        return ops.clip(degenerate + factor * (images - degenerate), 0.0, 255.0)

    def translate(images, n, axis):
        moved = random.randint((n,), 0, 2 * shift + 1, seed=rng, dtype="int32")
        still = ops.full((n,), shift, dtype="int32")
        dy, dx = (moved, still) if axis == 0 else (still, moved)
        return _shifted_windows(images, shift, dy, dx, "constant")

    def fn(images, labels) -> Batch:
        n = _sizes(images)[0]
        grey = ops.image.rgb_to_grayscale(images)
        grey_mean = ops.mean(grey, axis=(1, 2, 3), keepdims=True)
        results = {
            "translate_x": translate(images, n, 1),
            "translate_y": translate(images, n, 0),
            "brightness": enhance(images, ops.zeros_like(images), n),
            "color": enhance(images, grey, n),
            "contrast": enhance(images, grey_mean, n),
            **{name: layer(images, training=True) for name, layer in layers.items()},
        }
        chosen = random.randint((n,), 0, len(TRIVIAL_OPS), seed=rng, dtype="int32")
        out = images
        for k, name in enumerate(TRIVIAL_OPS):
            if name in results:
                out = ops.where((chosen == k)[:, None, None, None], results[name], out)
        return out, labels

    return fn
