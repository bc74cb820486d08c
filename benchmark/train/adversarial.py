"""FGSM adversarial training (Goodfellow et al. 2015) as a wrapper around any zoo model.

``FGSMTrainer(model)`` trains ``model`` on a mix of clean images and images pushed one signed-gradient
step of ``epsilon`` pixels (0..255 units, since zoo models take raw pixels) towards higher loss. Save
``trainer.model``: the wrapper exists only for training, the member is the plain model.

The gradient with respect to the images is the only backend-specific part (a GradientTape, ``jax.grad``
or ``torch.autograd``); the training step itself is Keras's own, given the mixed batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops


def input_gradient(predict: Callable[[Any], Any], loss_fn, images, labels):
    """d loss(labels, predict(images)) / d images, on whichever backend Keras runs.

    ``loss_fn`` may return one loss per image; they are summed (each image's gradient is its own).
    """
    backend = keras.backend.backend()

    def objective(x):
        return ops.sum(loss_fn(labels, predict(x)))

    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(images)
            loss = objective(images)
        return tape.gradient(loss, images)
    if backend == "jax":
        import jax

        return jax.grad(objective)(images)
    import torch

    images = images.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(images), images)
    return grad.detach()


def _fgsm(predict, loss_fn, images, labels, epsilon: float):
    grad = input_gradient(predict, loss_fn, images, labels)
    return ops.stop_gradient(ops.clip(images + epsilon * ops.sign(grad), 0.0, 255.0))


def fgsm_examples(model: keras.Model, loss_fn, images, labels, epsilon: float):
    """Images moved by ``epsilon`` along the sign of the loss gradient, clipped to valid pixels."""
    images = ops.convert_to_tensor(images, dtype="float32")
    labels = ops.convert_to_tensor(labels)
    return _fgsm(lambda x: model(x, training=False), loss_fn, images, labels, epsilon)


class FGSMTrainer(keras.Model):
    """Train the wrapped model on clean + FGSM images; ``ratio`` is the adversarial share of a batch.

    The first ``ratio`` of each (already shuffled) batch is replaced by its FGSM images, so the
    share is exact and no random draw is needed inside the compiled step.
    """

    def __init__(self, model: keras.Model, epsilon: float = 2.0, ratio: float = 0.5, **kwargs):
        super().__init__(name=f"fgsm_{model.name}", **kwargs)
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0 pixels, got {epsilon}")
        self.model = model
        self.epsilon = float(epsilon)
        self.ratio = float(ratio)

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def _mixed_batch(self, predict, data) -> tuple:
        x, y = ops.cast(data[0], "float32"), data[1]
        adversarial = _fgsm(predict, keras.losses.get(self.loss), x, y, self.epsilon)
        n = ops.shape(x)[0]
        chosen = ops.cast(ops.arange(n), "float32") < self.ratio * ops.cast(n, "float32")
        x_mix = ops.where(chosen[:, None, None, None], adversarial, x)
        return (x_mix, y, *tuple(data[2:]))

    def train_step(self, *args):
        if keras.backend.backend() == "jax":  # JAX's train step is stateless: (state, data)
            state, data = args
            trainable, non_trainable = state[0], state[1]

            def predict(x):
                return self.stateless_call(trainable, non_trainable, x, training=False)[0]

            return super().train_step(state, self._mixed_batch(predict, data))
        (data,) = args
        return super().train_step(self._mixed_batch(lambda x: self.model(x, training=False), data))
