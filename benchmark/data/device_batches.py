"""The input pipeline on the device, for the JAX and PyTorch backends.

The uint8 training split is put on the device once (when it takes at most ``DEVICE_SHARE`` of the
device's free memory); each batch is then one call of a function of device arrays: gather the
batch's rows, cast, the alternating flip, one-hot labels and every step of the augmentation
policy. On JAX that function is compiled with ``jax.jit`` (once per batch shape); on PyTorch (by
default only with a GPU: :func:`preferred`) its ops run on the device one by one
(``torch.compile`` costs minutes of warm-up for small models, ``zoo.backend.jit_compile``). The
steps are :mod:`benchmark.data.augment`'s own, run as a pure
function of their seed generators' state (``keras.StatelessScope``), the state carried from batch to
batch, so the transforms are drawn from the same distributions as the host route's and a run is
repeatable. The only host work is one permutation an epoch (the same seeded order as the host
route's ``ArrayBatches``). On TensorFlow ``tf.data`` stays (it overlaps the steps with training).

Steps whose draws happen in Python (``randaugment``, ``augmix``, ``trivialaugment``: Keras's layers
pick their ops with Python's ``random``) would be frozen into a compiled function: a policy with
one of them stays on the host route.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Steps that are pure functions of their seed state: safe to compile.
DEVICE_STEPS = frozenset(
    {
        "flip",
        "alternating_flip",
        "translate",
        "rotate",
        "zoom",
        "pad_crop",
        "cutout",
        "random_erasing",
        "mixup",
        "cutmix",
    }
)
# The split goes on the device when its uint8 bytes are at most this share of the free memory.
DEVICE_SHARE = 0.25


def supports(policy: Sequence[dict[str, Any]]) -> bool:
    """Whether every step of ``policy`` can run inside the compiled batch function."""
    return all(s["name"] in DEVICE_STEPS for s in policy)


def preferred() -> bool:
    """Whether batches go on the device unless told otherwise: on JAX always (its jitted batch
    function costs a tenth of the host route's work even on a CPU), on PyTorch where there is a
    GPU (on a CPU its eager ops are slower than NumPy's gather: docs/results/device-pipeline.json)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def free_device_bytes() -> int | None:
    """Free memory of the device Keras trains on (None: a CPU, where the arrays are in RAM)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()  # None on a CPU
        if not stats or "bytes_limit" not in stats:
            return None
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0])
    return None


def fits(nbytes: int, free: int | None = None) -> bool:
    """Whether ``nbytes`` of training data may live on the device (always on a CPU)."""
    free = free_device_bytes() if free is None else free
    return free is None or nbytes <= DEVICE_SHARE * free


def device_batches(
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    batch_size: int,
    policy: tuple[Any, list],
    shuffle: bool,
    seed: int,
    sparse: bool,
    drop_remainder: bool,
    weights: np.ndarray | None = None,
    flips: np.ndarray | None = None,
):
    """A ``keras.utils.PyDataset`` whose batches are made on the device (see the module's
    docstring). ``policy`` is the built policy and its random state,
    ``benchmark.data.augment.build_policy_with_state``'s answer ((None, []) for none), free of the
    alternating flip (``flips`` carries it): the caller builds it, so this module needs nothing
    from ``augment``, which calls it."""
    return _device_batches_class()(
        x,
        y,
        num_classes=num_classes,
        batch_size=batch_size,
        policy=policy,
        shuffle=shuffle,
        seed=seed,
        sparse=sparse,
        drop_remainder=drop_remainder,
        weights=weights,
        flips=flips,
    )


def _device_batches_class():
    import keras
    from keras import ops

    class DeviceBatches(keras.utils.PyDataset):
        """Seeded batches made on the device from the split held there (one worker, in order)."""

        def __init__(
            self,
            x,
            y,
            *,
            num_classes,
            batch_size,
            policy,
            shuffle,
            seed,
            sparse,
            drop_remainder,
            weights=None,
            flips=None,
        ):
            super().__init__()
            self.n, self.batch_size = len(x), int(batch_size)
            self.shuffle, self.seed, self.epoch = shuffle, int(seed), 0
            count = self.n / self.batch_size
            self.batches = math.floor(count) if drop_remainder else math.ceil(count)
            # the split on the device, once
            self.x = ops.convert_to_tensor(np.ascontiguousarray(x), dtype="uint8")
            self.y = ops.convert_to_tensor(np.asarray(y), dtype="int32")
            self.flips = None if flips is None else ops.convert_to_tensor(np.asarray(flips))
            self.weights = None if weights is None else ops.convert_to_tensor(weights, "float32")
            apply, variables = policy
            self.state = [ops.convert_to_tensor(v.value) for v in variables]
            self._make = _batch_function(
                apply, variables, num_classes=int(num_classes), sparse=sparse
            )
            self.order = self._order()

        def _order(self):
            if not self.shuffle:
                return ops.arange(self.n, dtype="int32")
            rows = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            return ops.convert_to_tensor(rows.astype(np.int32))

        def __len__(self) -> int:
            return self.batches

        def __getitem__(self, index: int):
            rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
            odd = ops.convert_to_tensor(self.epoch % 2 == 1)
            images, labels, self.state = self._make(
                self.state, self.x, self.y, self.flips, rows, odd
            )
            if self.weights is not None:
                return images, labels, gather(self.weights, rows)
            return images, labels

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = self._order()

    return DeviceBatches


def gather(values, rows):
    """``values[rows]`` along the first axis. On PyTorch ``index_select``: Keras's ``take`` goes
    through advanced indexing, much slower for a batch of images (20 ms against 0.1 ms, measured
    once on this CPU)."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        return torch.index_select(values, 0, rows.long())
    return keras.ops.take(values, rows, axis=0)


def _batch_function(apply, variables: list, *, num_classes: int, sparse: bool):
    """``make(state, x, y, flips, rows, odd) -> (images, labels, state)``: one batch from the
    device arrays, the policy run as a pure function of ``state``; jitted on JAX."""
    import keras
    from keras import ops

    def make(state, x, y, flips, rows, odd):
        images = ops.cast(gather(x, rows), "float32")
        if flips is not None:  # the alternating flip: mirrored when the first-epoch flip != parity
            mirror = ops.not_equal(gather(flips, rows), odd)
            images = ops.where(mirror[:, None, None, None], ops.flip(images, axis=2), images)
        labels = gather(y, rows)
        if not sparse:
            labels = ops.one_hot(labels, num_classes, dtype="float32")
        if apply is None:
            return images, labels, state
        with keras.StatelessScope(state_mapping=list(zip(variables, state, strict=True))) as scope:
            images, labels = apply(images, labels)
        new = [scope.get_current_value(v) for v in variables]
        return images, labels, [s if n is None else n for s, n in zip(state, new, strict=True)]

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(make)
    return make
