"""FGSM adversarial training (Goodfellow et al. 2015) as a wrapper around any zoo model.

``FGSMTrainer(model)`` trains ``model`` on a mix of clean images and images pushed one signed-gradient
step of ``epsilon`` pixels (0..255 units, since zoo models take raw pixels) towards higher loss. Save
``trainer.model``: the wrapper exists only for training, the member is the plain model.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def fgsm_examples(
    model: keras.Model, loss_fn, images: tf.Tensor, labels: tf.Tensor, epsilon: float
) -> tf.Tensor:
    """Images moved by ``epsilon`` along the sign of the loss gradient, clipped to valid pixels."""
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = loss_fn(labels, model(images, training=False))
    grad = tape.gradient(loss, images)
    return tf.stop_gradient(tf.clip_by_value(images + epsilon * tf.sign(grad), 0.0, 255.0))


class FGSMTrainer(keras.Model):
    """Train the wrapped model on clean + FGSM images; ``ratio`` is the adversarial share of a batch."""

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

    def train_step(self, data):
        x, y = data[0], data[1]
        x = tf.cast(x, tf.float32)
        adversarial = fgsm_examples(
            self.model, lambda t, p: self.compute_loss(x=x, y=t, y_pred=p), x, y, self.epsilon
        )
        chosen = tf.random.uniform([tf.shape(x)[0]]) < self.ratio
        x_mix = tf.where(chosen[:, None, None, None], adversarial, x)
        with tf.GradientTape() as tape:
            y_pred = self(x_mix, training=True)
            loss = self.compute_loss(x=x_mix, y=y, y_pred=y_pred)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self.compute_metrics(x_mix, y, y_pred, sample_weight=None)
