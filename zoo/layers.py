"""Building blocks shared by the architectures: the raw-pixel input stem and regularisers from hp."""

from __future__ import annotations

import keras


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
