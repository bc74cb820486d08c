"""Building blocks shared by the architectures: the raw-pixel input stem and regularisers from hp."""

from __future__ import annotations

import keras
import numpy as np


def raw_image_input(input_shape) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Model input taking raw uint8-range pixels, and the same scaled to [0, 1].

    Rescaling lives inside the model so a saved model predicts on raw pixels: nobody has to remember
    to divide by 255 at prediction time.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit_range")(inputs)
    return inputs, x


def weight_regularizer(hp, default_l2: float = 5e-4):
    """L1/L2 kernel regulariser from the architecture's search space (``l1``, ``l2``)."""
    l2 = hp.Float("l2", 1e-6, 1e-2, sampling="log", default=default_l2)
    l1 = hp.Choice("l1", [0.0, 1e-6, 1e-5], default=0.0)
    if l1 == 0.0 and l2 == 0.0:
        return None
    return keras.regularizers.L1L2(l1=l1, l2=l2)


def classifier_head(x, num_classes: int, dropout: float = 0.0, regularizer=None):
    """Global pooling, optional dropout, softmax: every zoo model outputs probabilities."""
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return keras.layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=regularizer, name="probs"
    )(x)


# Keras's default 0.99 leaves the moving statistics far from the batch statistics after the few
# hundred steps of a CPU budget, so inference-mode accuracy collapses; 0.9 (PyTorch's 0.1) settles
# within ~50 steps and costs nothing on long runs.
BN_MOMENTUM = 0.9


def bn_layer(name: str) -> keras.layers.BatchNormalization:
    """BatchNormalization with the zoo's momentum (see ``BN_MOMENTUM``)."""
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


def conv_bn_act(
    x,
    filters: int,
    kernel_size: int = 3,
    *,
    name: str,
    strides: int = 1,
    padding: str = "same",
    batch_norm: bool = True,
    activation: str | None = "relu",
    regularizer=None,
):
    """Conv2D, then BatchNormalization (when on) and the activation (when given).

    Without batch norm the convolution keeps its bias, so switching BN off in a search does not
    also silently remove the per-channel offset.
    """
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=not batch_norm,
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
        name=f"{name}_conv",
    )(x)
    if batch_norm:
        x = bn_layer(f"{name}_bn")(x)
    if activation:
        x = keras.layers.Activation(activation, name=f"{name}_act")(x)
    return x


def bn_act(x, *, name: str, batch_norm: bool = True, activation: str = "relu"):
    """BatchNormalization (when on) then the activation: the pre-activation half of a block."""
    if batch_norm:
        x = bn_layer(f"{name}_bn")(x)
    return keras.layers.Activation(activation, name=f"{name}_act")(x)


def scaled(channels: float, width: float, minimum: int = 8) -> int:
    """``channels * width`` rounded to a multiple of 8 (at least ``minimum``): CPU-friendly widths."""
    return max(minimum, int(round(channels * width / 8.0)) * 8)


@keras.saving.register_keras_serializable(package="zoobench")
class HorizontalFlip(keras.layers.Layer):
    """Mirrors images left to right, always (``RandomFlip`` is random and off at inference).

    Lets a saved model average its features over an image and its mirror (test-time augmentation)
    and still load with ``safe_mode=True``.
    """

    def call(self, inputs):
        return keras.ops.flip(inputs, axis=-2)


# JPEG's own colour transform (JFIF YCbCr, offsets left out: the deblocking filter works on
# differences).
JPEG_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    dtype=np.float32,
)
JPEG_BLOCK = 8
# p1 p0 | q0 q1 around a block boundary: the share of the excess step each pixel takes
DEBLOCK_RAMP = ((-2, 0.2), (-1, 0.4), (0, -0.4), (1, -0.2))


@keras.saving.register_keras_serializable(package="zoobench")
class Deblock(keras.layers.Layer):
    """JPEG deblocking on raw 0..255 pixels: the ``deblock`` preprocessing step
    (``benchmark.data.preprocess.deblock`` documents the filter and runs this layer on the data), so a
    member trained on deblocked images exports as one model whose input is the raw picture, and
    FGSM attacks it through the filter. The output is rounded as the step's uint8 images are, with
    a straight-through gradient (passed as if unrounded)."""

    def __init__(
        self, strength: float = 1.0, threshold: float = 30.0, flatness: float = 15.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.strength, self.threshold, self.flatness = (
            float(strength),
            float(threshold),
            float(flatness),
        )

    def _boundaries(self, x):
        """The change that smooths each block boundary between columns of ``x`` (N, H, W, C)."""
        ops = keras.ops
        width = int(x.shape[2])
        edges = np.arange(JPEG_BLOCK, width - 1, JPEG_BLOCK)  # q1 must exist
        if not len(edges):
            return ops.zeros_like(x)
        p1, p0, q0, q1 = (ops.take(x, edges + k, axis=2) for k, _ in DEBLOCK_RAMP)
        step = q0 - p0
        excess = step - ((p0 - p1) + (q1 - q0)) / 2
        filtered = ops.logical_and(
            ops.abs(step) < self.threshold,
            ops.logical_and(ops.abs(p1 - p0) < self.flatness, ops.abs(q1 - q0) < self.flatness),
        )
        d = ops.where(filtered, self.strength * excess, ops.zeros_like(excess))
        change = 0.0
        for k, share in DEBLOCK_RAMP:  # scatter each column of d to its pixel column
            placement = np.zeros((len(edges), width), np.float32)
            placement[np.arange(len(edges)), edges + k] = share
            change = change + ops.einsum("nhec,ew->nhwc", d, placement)
        return change

    def call(self, inputs):
        ops = keras.ops
        x = ops.cast(inputs, "float32")
        ycc = ops.einsum("nhwc,dc->nhwd", x, JPEG_RGB_TO_YCBCR)
        change = self._boundaries(ycc)
        # rows: the same filter on the transposed batch, after the columns (as H.264 orders them)
        rows = self._boundaries(ops.transpose(ycc + change, (0, 2, 1, 3)))
        change = change + ops.transpose(rows, (0, 2, 1, 3))
        to_rgb = np.linalg.inv(JPEG_RGB_TO_YCBCR).astype(np.float32)
        y = x + ops.einsum("nhwc,dc->nhwd", change, to_rgb)
        y = y + ops.stop_gradient(ops.round(y) - y)  # uint8's rounding, gradient straight through
        return ops.clip(y, 0.0, 255.0)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "strength": self.strength,
            "threshold": self.threshold,
            "flatness": self.flatness,
        }


@keras.saving.register_keras_serializable(package="zoobench")
class TemperatureScaling(keras.layers.Layer):
    """Temperature scaling of probabilities: ``softmax(log(max(p, floor)) / temperature)``.

    The last layer of a calibrated fused or exported model (``ensembles.calibration`` fits the
    temperature on validation and computes the same formula in NumPy for the stored probabilities),
    so ``predict`` and every export format return calibrated probabilities. Fixed, not trainable;
    the order of the classes, and so accuracy, is unchanged.
    """

    def __init__(self, temperature: float, floor: float, **kwargs):
        super().__init__(**kwargs)
        self.temperature, self.floor = float(temperature), float(floor)
        if not (self.temperature > 0 and self.floor > 0):
            raise ValueError(
                f"temperature and floor must be positive, got {temperature!r} and {floor!r}"
            )
        self.trainable = False

    def call(self, inputs):
        ops = keras.ops
        log_probs = ops.log(ops.clip(ops.cast(inputs, "float32"), self.floor, 1.0))
        return ops.softmax(log_probs / self.temperature, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature, "floor": self.floor}
