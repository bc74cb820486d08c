"""The one inference path: a stored model (a member, a fused ensemble or best, a refit, an exported
ONNX / LiteRT / SavedModel file) to class probabilities on raw pixels.

Every caller that runs a model on pictures comes here: a new member's validation, test and (boosting)
training scores, a refit's test scores, robustness's corrupted and attacked images, ``zoobench
predict`` and the API (:class:`Predictor`), and ``zoobench export``'s check of the written file
(:class:`Artifact`). So they all share:

- the input a model gets: the member's recorded preprocessing on the run-size pictures, then its own
  input size (:func:`model_inputs`, the order training used; :func:`benchmark.data.images.resize_to`);
- bounded memory (:func:`probabilities`): pictures become float32 :data:`CHUNK` at a time, and a
  small input runs as ``predict_on_batch`` calls of :data:`SMALL_BATCH` images (no ``predict`` set-up
  for a few pictures), never one call of everything: a call holds every activation of its batch at
  once (a 160 px backbone on 950 pictures in one call needed over 20 GB). Both routes run the
  model's compiled predict function, so a picture gets the same probabilities whichever it takes
  (an eager call rounds fused activations differently);
- test-time views: a member's own (``training.tta``) are layers inside its saved model; the mirror
  average ``predict --tta`` asks for is :meth:`Predictor.predict_proba`'s.

Any Keras backend runs it: only ``keras.ops`` and ``Model.predict`` are used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.data.images import resize_batch, resize_to

PREDICT_BATCH = 256  # images per ``Model.predict`` batch
CHUNK = 2048  # images converted to float32 (and preprocessed) at once
SMALL_VALUES = 1024 * 32 * 32 * 3  # inputs up to this many values run batch by batch
SMALL_BATCH = 32  # images per predict_on_batch call


def model_side(model) -> tuple[int, int] | None:
    """(H, W) a model takes, or None when it takes any size."""
    want = tuple(model.input_shape[1:3])
    return None if None in want else (int(want[0]), int(want[1]))


def model_inputs(images: np.ndarray, steps: Sequence[dict[str, Any]], model) -> np.ndarray:
    """Run-size pictures as ``model`` takes them: the member's preprocessing ``steps`` first, then
    its input size, as training prepared its arrays."""
    if steps:
        from benchmark.data.preprocess import apply_steps

        images = apply_steps(images, list(steps))
    return resize_to(images, model_side(model))


@dataclass
class Artifact:
    """An exported model file run by its format's own runtime (``benchmark.runtimes``): what
    :func:`probabilities` takes in place of a Keras model, so an export is checked the way every
    model predicts."""

    path: Path
    fmt: str  # a key of benchmark.runtimes.RUNTIMES
    input_shape: tuple  # (None, H, W, 3)
    num_classes: int

    @property
    def output_shape(self) -> tuple:
        return (None, self.num_classes)

    def run(self, x: np.ndarray) -> np.ndarray:
        from benchmark.runtimes import RUNTIMES

        return np.asarray(RUNTIMES[self.fmt](Path(self.path), np.asarray(x, np.float32)))


def probabilities(model, images: np.ndarray, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Class probabilities (float32, (N, classes)) of ``images`` (model inputs, any dtype), in
    inference mode, with bounded memory (module docstring)."""
    if len(images) == 0:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)
    if isinstance(model, Artifact):
        parts = [model.run(images[i : i + CHUNK]) for i in range(0, len(images), CHUNK)]
    elif images.size <= SMALL_VALUES:  # ``predict`` would set up a data pipeline first
        parts = [
            model.predict_on_batch(np.asarray(images[i : i + SMALL_BATCH], np.float32))
            for i in range(0, len(images), SMALL_BATCH)
        ]
    else:
        parts = [
            model.predict(
                np.asarray(images[i : i + CHUNK], np.float32), batch_size=batch_size, verbose=0
            )
            for i in range(0, len(images), CHUNK)
        ]
    return np.concatenate([np.asarray(p, np.float32) for p in parts])


def timed_probabilities(
    model, images: np.ndarray, batch_size: int = PREDICT_BATCH
) -> tuple[np.ndarray, float]:
    """:func:`probabilities` and the measured throughput (images/second), after a warm-up call on
    the first batch (tracing and set-up are not inference speed)."""
    if len(images) == 0:
        return probabilities(model, images, batch_size), 0.0
    probabilities(model, images[:batch_size], batch_size)
    start = time.perf_counter()
    probs = probabilities(model, images, batch_size)
    seconds = time.perf_counter() - start
    return probs, (len(images) / seconds if seconds > 0 else 0.0)


@dataclass
class Unit:
    """One model (Keras or :class:`Artifact`) and the preprocessing its inputs need."""

    model: Any
    preprocess: list[dict[str, Any]] = field(default_factory=list)


class Predictor:
    """Class probabilities for raw pictures from one or more models and a combination of them.

    Pictures of any size are brought to the run's image size first (area interpolation when
    shrinking); each unit then gets :func:`model_inputs` of them, a chunk at a time.
    """

    def __init__(
        self,
        units: list[Unit],
        class_names: Sequence[str],
        description: str,
        combine: Callable[[list[np.ndarray]], np.ndarray] | None = None,
        batch_size: int = PREDICT_BATCH,
        image_size: tuple[int, int] | None = None,
    ):
        if not units:
            raise ValueError("units must hold at least one model")
        if combine is None and len(units) != 1:
            raise ValueError(f"combine is required with {len(units)} units")
        self.units = units
        self.class_names = list(class_names)
        self.description = description
        self.combine = combine
        self.batch_size = batch_size
        self.input_size: tuple[int, int] = image_size or model_side(units[0].model) or (32, 32)

    def _batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        if not len(images):
            raise ValueError("images is empty")
        for i, img in enumerate(images):
            img = np.asarray(img)
            if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
                raise ValueError(
                    f"images[{i}] must be uint8 RGB (H, W, 3), got {img.dtype} {img.shape}"
                )
        return resize_batch(images, self.input_size)

    def _once(self, batch: np.ndarray) -> np.ndarray:
        parts = []
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start : start + CHUNK]
            outs = [
                probabilities(u.model, model_inputs(chunk, u.preprocess, u.model), self.batch_size)
                for u in self.units
            ]
            parts.append(outs[0] if self.combine is None else self.combine(outs))
        return np.concatenate(parts)

    def predict_proba(
        self, images: np.ndarray | Sequence[np.ndarray], tta: bool = False
    ) -> np.ndarray:
        """(N, classes) probabilities; ``tta`` averages them with those of the mirrored images."""
        batch = self._batch(images)
        probs = self._once(batch)
        if tta:
            probs = (probs + self._once(np.ascontiguousarray(batch[:, :, ::-1]))) / 2.0
        return probs

    def predict(self, images: np.ndarray | Sequence[np.ndarray], tta: bool = False) -> np.ndarray:
        """Integer class labels (``class_names[label]`` names them)."""
        return self.predict_proba(images, tta=tta).argmax(axis=1)
