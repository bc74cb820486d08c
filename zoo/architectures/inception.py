"""A small Inception for 32x32 inputs (Zhang et al.'s CIFAR-10 Inception): parallel 1x1/3x3 paths."""

from __future__ import annotations

import keras

from zoo.layers import classifier_head, conv_bn_act, raw_image_input, scaled, weight_regularizer
from zoo.registry import register

PAPER = (
    "Szegedy et al. 2015 (Inception); the small CIFAR-10 variant of Zhang et al. 2017, "
    "Understanding deep learning requires rethinking generalization"
)
# ("i", ch1x1, ch3x3) is an inception module; ("d", ch3x3) a downsample module (stride-2 conv || pool).
LAYOUT = (
    ("i", 32, 32),
    ("i", 32, 48),
    ("d", 80),
    ("i", 112, 48),
    ("i", 96, 64),
    ("i", 80, 80),
    ("i", 48, 96),
    ("d", 96),
    ("i", 176, 160),
    ("i", 176, 160),
)


def inception_small(hp, input_shape, num_classes, *, name: str, width: float):
    """The family: a 3x3 stem, inception and downsample modules with channels x width."""
    width = hp.Choice("width", [0.25, 0.5, 0.75, 1.0], default=width)
    batch_norm = hp.Boolean("batch_norm", default=True)
    activation = hp.Choice("activation", ["relu", "gelu", "swish"], default="relu")
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.0)
    reg = weight_regularizer(hp, default_l2=1e-4)
    opts = dict(batch_norm=batch_norm, activation=activation, regularizer=reg)

    inputs, x = raw_image_input(input_shape)
    x = conv_bn_act(x, scaled(96, width), name="stem", **opts)
    for i, module in enumerate(LAYOUT, start=1):
        if module[0] == "i":
            a = conv_bn_act(x, scaled(module[1], width), 1, name=f"inception{i}_1x1", **opts)
            b = conv_bn_act(x, scaled(module[2], width), 3, name=f"inception{i}_3x3", **opts)
        else:
            a = conv_bn_act(
                x,
                scaled(module[1], width),
                3,
                strides=2,
                padding="valid",
                name=f"down{i}_3x3",
                **opts,
            )
            b = keras.layers.MaxPooling2D(3, strides=2, name=f"down{i}_pool")(x)
        x = keras.layers.Concatenate(name=f"module{i}_concat")([a, b])
    outputs = classifier_head(x, num_classes, dropout=dropout, regularizer=reg)
    return keras.Model(inputs, outputs, name=name)


@register("inception_small", family="inception", kind="scratch", paper=PAPER, input_size=32)
def inception_small_full(hp, input_shape, num_classes) -> keras.Model:
    """Zhang et al.'s small Inception for CIFAR-10 at full width (~1.65M parameters)."""
    return inception_small(hp, input_shape, num_classes, name="inception_small", width=1.0)


@register("inception_tiny", family="inception", kind="scratch", paper=PAPER, input_size=32)
def inception_tiny(hp, input_shape, num_classes) -> keras.Model:
    """The small Inception at half width: a quarter of the compute, for CPU budgets."""
    return inception_small(hp, input_shape, num_classes, name="inception_tiny", width=0.5)
