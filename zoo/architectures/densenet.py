"""DenseNet-BC for CIFAR (Huang et al.): every layer sees all earlier feature maps of its block."""

from __future__ import annotations

import keras

from zoo.layers import bn_act, classifier_head, raw_image_input, weight_regularizer
from zoo.registry import ZooError, register

PAPER = "Huang et al. 2017, Densely Connected Convolutional Networks (DenseNet-BC, CIFAR)"


def _conv(x, filters, kernel_size, *, name, reg, use_bias):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        use_bias=use_bias,
        kernel_initializer="he_normal",
        kernel_regularizer=reg,
        name=name,
    )(x)


def densenet_bc(hp, input_shape, num_classes, *, name: str, depth: int, growth: int):
    """The family: 3 dense blocks of (depth-4)/6 bottleneck layers, compressing transitions."""
    depth = hp.Choice("depth", [40, 52, 76, 100], default=depth)
    if (depth - 4) % 6:
        raise ZooError(f"{name}: DenseNet-BC depth must be 6n+4 (40, 52, 76, 100), got {depth}")
    growth = hp.Choice("growth_rate", [8, 12, 16, 24], default=growth)
    compression = hp.Choice("compression", [0.5, 0.75, 1.0], default=0.5)
    batch_norm = hp.Boolean("batch_norm", default=True)
    activation = hp.Choice("activation", ["relu", "gelu", "swish"], default="relu")
    dropout = hp.Float("dropout", 0.0, 0.3, step=0.1, default=0.0)
    reg = weight_regularizer(hp, default_l2=1e-4)
    layers_per_block = (depth - 4) // 6
    bias = not batch_norm

    inputs, x = raw_image_input(input_shape)
    channels = 2 * growth
    x = _conv(x, channels, 3, name="stem_conv", reg=reg, use_bias=True)
    for block in range(1, 4):
        for i in range(1, layers_per_block + 1):
            n = f"block{block}_layer{i}"
            y = bn_act(x, name=f"{n}_pre", batch_norm=batch_norm, activation=activation)
            y = _conv(y, 4 * growth, 1, name=f"{n}_1x1", reg=reg, use_bias=bias)
            y = bn_act(y, name=f"{n}_mid", batch_norm=batch_norm, activation=activation)
            y = _conv(y, growth, 3, name=f"{n}_3x3", reg=reg, use_bias=bias)
            if dropout > 0:
                y = keras.layers.Dropout(dropout, name=f"{n}_dropout")(y)
            x = keras.layers.Concatenate(name=f"{n}_concat")([x, y])
            channels += growth
        if block < 3:
            channels = int(channels * compression)
            n = f"transition{block}"
            x = bn_act(x, name=n, batch_norm=batch_norm, activation=activation)
            x = _conv(x, channels, 1, name=f"{n}_conv", reg=reg, use_bias=bias)
            x = keras.layers.AveragePooling2D(2, name=f"{n}_pool")(x)
    x = bn_act(x, name="final", batch_norm=batch_norm, activation=activation)
    outputs = classifier_head(x, num_classes, regularizer=reg)
    return keras.Model(inputs, outputs, name=name)


@register("densenet_bc_40", family="densenet", kind="scratch", paper=PAPER, input_size=32)
def densenet_bc_40(hp, input_shape, num_classes) -> keras.Model:
    """DenseNet-BC-40 (k=12): 6 bottleneck layers a block, ~0.18M parameters, cheap on a CPU."""
    return densenet_bc(hp, input_shape, num_classes, name="densenet_bc_40", depth=40, growth=12)


@register("densenet_bc_100", family="densenet", kind="scratch", paper=PAPER, input_size=32)
def densenet_bc_100(hp, input_shape, num_classes) -> keras.Model:
    """DenseNet-BC-100 (k=12): 16 bottleneck layers a block, ~0.8M parameters."""
    return densenet_bc(hp, input_shape, num_classes, name="densenet_bc_100", depth=100, growth=12)
