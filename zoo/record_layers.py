"""The speed records' building blocks (airbench94/95/96), as Keras layers and an initializer.

They are what lets a small net learn CIFAR-10 in a few epochs (Jordan 2024, KellerJordan/cifar10-
airbench): a first layer that whitens 2x2 patches with filters computed from the training images,
batch norm without a learned scale whose bias learns faster than the weights, identity-initialised
convolutions, and test-time views averaged at inference. Each is a registered Keras object, so a
model that holds them saves, reloads and exports like any other.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="zoobench")
class PatchWhitening(keras.layers.Layer):
    """A k x k 'valid' convolution whose filters whiten image patches (airbench's first layer).

    The filters come from data, not from gradient descent: :meth:`adapt` takes the covariance of
    every k x k patch of the images it is given and sets the kernel to the covariance's eigenvectors
    scaled by 1/sqrt(eigenvalue + eps), plus their negatives (2 * k * k * channels filters), and the
    bias so that the mean patch maps to zero. The kernel is frozen; the bias trains. Until it is
    adapted the layer is an ordinary conv with random filters, so a model still builds, runs and can
    be counted; ``adapted`` (a saved weight) says which it is.
    """

    def __init__(self, kernel_size: int = 2, epsilon: float = 5e-4, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)
        self.epsilon = float(epsilon)

    def build(self, input_shape) -> None:
        channels, k = int(input_shape[-1]), self.kernel_size
        self.filters = 2 * k * k * channels
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, k, channels, self.filters),
            initializer="glorot_uniform",
            trainable=False,
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        self.adapted = self.add_weight(
            name="adapted", shape=(), initializer="zeros", trainable=False
        )

    def call(self, inputs):
        kernel = ops.cast(self.kernel, inputs.dtype)
        return ops.conv(inputs, kernel, strides=1, padding="valid") + ops.cast(
            self.bias, inputs.dtype
        )

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        k = self.kernel_size
        return (n, None if h is None else h - k + 1, None if w is None else w - k + 1, self.filters)

    def adapt(self, images: np.ndarray, chunk: int = 500) -> None:
        """Set the filters and bias from ``images`` (N, H, W, C): what this layer receives."""
        images = np.asarray(images)
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"PatchWhitening.adapt needs a batch of images, got {images.shape}")
        if not self.built:
            self.build(images.shape)
        k, channels = self.kernel_size, images.shape[-1]
        dim = k * k * channels
        total, outer, count = np.zeros(dim), np.zeros((dim, dim)), 0
        for start in range(
            0, len(images), chunk
        ):  # the patches of a chunk at a time: bounded memory
            windows = np.lib.stride_tricks.sliding_window_view(
                images[start : start + chunk].astype(np.float64), (k, k), axis=(1, 2)
            )  # (n, H', W', C, k, k): reorder to the kernel's (k, k, C) layout
            patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, dim)
            total += patches.sum(axis=0)
            outer += patches.T @ patches
            count += len(patches)
        mean = total / count
        covariance = outer / count - np.outer(mean, mean)
        values, vectors = np.linalg.eigh(covariance)
        values, vectors = values[::-1], vectors[:, ::-1]  # largest first, as airbench orders them
        eps = self.epsilon * max(float(values.mean()), 1e-12)  # relative: any pixel scale
        scaled = vectors / np.sqrt(np.clip(values, 0.0, None) + eps)
        filters = np.concatenate([scaled, -scaled], axis=1)
        self.kernel.assign(filters.reshape(k, k, channels, 2 * dim).astype("float32"))
        self.bias.assign((-mean @ filters).astype("float32"))
        self.adapted.assign(1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kernel_size": self.kernel_size, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="zoobench")
class ScaleFreeBatchNorm(keras.layers.BatchNormalization):
    """Batch norm with no learned scale and a bias that learns faster (airbench's BatchNorm).

    The bias is stored divided by ``bias_scale`` and multiplied back in the forward pass: its
    gradient grows by ``bias_scale`` and so does each step's effect, so under SGD the bias learns
    ``bias_scale ** 2`` times faster than a plain one (airbench's ``bias_scaler = 64`` is
    ``bias_scale = 8``) without a second optimizer; under Adam, ``bias_scale`` times faster.
    """

    def __init__(self, bias_scale: float = 8.0, momentum: float = 0.6, epsilon: float = 1e-5, **kw):
        kw.pop("center", None)
        kw.pop("scale", None)
        super().__init__(momentum=momentum, epsilon=epsilon, center=False, scale=False, **kw)
        self.bias_scale = float(bias_scale)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.bias = self.add_weight(name="bias", shape=(int(input_shape[-1]),), initializer="zeros")

    def call(self, inputs, training=None, mask=None):
        outputs = super().call(inputs, training=training, mask=mask)
        return outputs + ops.cast(self.bias * self.bias_scale, outputs.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "bias_scale": self.bias_scale}


@keras.saving.register_keras_serializable(package="zoobench")
class Dirac(keras.initializers.VarianceScaling):
    """PyTorch's default conv init with the first filters set to the identity (airbench's Conv).

    Output channel i < in_channels passes input channel i through unchanged at the centre tap, so a
    fresh deep stack starts close to the identity; the other filters are uniform in
    +-1/sqrt(fan_in) (what ``torch.nn.Conv2d`` draws).
    """

    def __init__(self, seed=None):
        super().__init__(scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed)

    def __call__(self, shape, dtype=None):
        weights = super().__call__(shape, dtype=dtype)
        if len(shape) != 4:
            return weights
        kh, kw, cin, cout = (int(s) for s in shape)
        n = min(cin, cout)
        keep = np.ones(shape, dtype="float32")
        keep[..., :n] = 0.0
        eye = np.zeros(shape, dtype="float32")
        eye[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
        return weights * ops.cast(keep, weights.dtype) + ops.cast(eye, weights.dtype)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed if isinstance(self.seed, int) else None}


# ---- test-time views ------------------------------------------------------------------------------

# airbench's tta_level 2: the image and its mirror, each also shifted one pixel up-left and
# down-right (reflect padding); tta_level 1 is the first two.
VIEWS: tuple[tuple[bool, int], ...] = (
    (False, 0),
    (True, 0),
    (False, -1),
    (True, -1),
    (False, 1),
    (True, 1),
)
TTA_NAMED = {"none": 1, "flip": 2, "flip-translate": 6}


def view_count(tta: str | int) -> int:
    """How many views ``tta`` means: "none" 1, "flip" 2, "flip-translate" 6, or a number 1-6."""
    if isinstance(tta, bool):
        raise ValueError(f"tta must be one of {', '.join(TTA_NAMED)} or a number of views 1-6")
    if isinstance(tta, int) and 1 <= tta <= len(VIEWS):
        return tta
    if isinstance(tta, str) and tta in TTA_NAMED:
        return TTA_NAMED[tta]
    raise ValueError(
        f"tta must be one of {', '.join(TTA_NAMED)} or a number of views 1-{len(VIEWS)}, got {tta!r}"
    )


@keras.saving.register_keras_serializable(package="zoobench")
class ImageView(keras.layers.Layer):
    """One test-time view of a batch: optionally mirrored, optionally shifted by ``shift`` pixels
    along both axes (reflect padding), the size unchanged."""

    def __init__(self, flip: bool = False, shift: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.flip = bool(flip)
        self.shift = int(shift)

    def call(self, images):
        if self.shift:
            s = abs(self.shift)
            h, w = images.shape[1], images.shape[2]
            padded = ops.pad(images, [[0, 0], [s, s], [s, s], [0, 0]], mode="reflect")
            top = s + self.shift  # shift -1: the window starts one pixel up-left
            images = padded[:, top : top + h, top : top + w, :]
        if self.flip:
            images = ops.flip(images, axis=2)
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "flip": self.flip, "shift": self.shift}


def with_test_time_views(model: keras.Model, tta: str | int) -> keras.Model:
    """``model`` wrapped to average its probabilities over ``tta``'s views (itself when one view).

    The views live inside the returned model, so what it saves, exports and predicts is what was
    scored: the mean of the views' probabilities.
    """
    count = view_count(tta)
    if count == 1:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    outputs = []
    for i, (flip, shift) in enumerate(VIEWS[:count]):
        outputs.append(model(ImageView(flip, shift, name=f"view_{i}")(inputs)))
    mean = keras.layers.Average(name="tta_mean", dtype="float32")(outputs)
    return keras.Model(inputs, mean, name=f"{model.name}_tta{count}")
