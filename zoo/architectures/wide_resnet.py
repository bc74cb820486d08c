"""Wide residual networks (Zagoruyko & Komodakis): fewer, wider pre-activation blocks."""

from __future__ import annotations

import keras

from zoo.layers import bn_act, classifier_head, raw_image_input, weight_regularizer
from zoo.registry import ZooError, register

PAPER = "Zagoruyko & Komodakis 2016, Wide Residual Networks"


def _conv(x, filters, strides, *, name, reg, kernel_size=3, use_bias=False):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer="he_normal",
        kernel_regularizer=reg,
        name=name,
    )(x)


def _wide_block(x, filters, strides, *, name, batch_norm, activation, dropout, reg):
    pre = bn_act(x, name=f"{name}_pre", batch_norm=batch_norm, activation=activation)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(pre, filters, strides, kernel_size=1, name=f"{name}_proj", reg=reg)
    else:
        shortcut = x
    y = _conv(pre, filters, strides, name=f"{name}_a_conv", reg=reg, use_bias=not batch_norm)
    y = bn_act(y, name=f"{name}_mid", batch_norm=batch_norm, activation=activation)
    if dropout > 0:
        y = keras.layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = _conv(y, filters, 1, name=f"{name}_b_conv", reg=reg, use_bias=not batch_norm)
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def wide_resnet(hp, input_shape, num_classes, *, name: str, depth: int, widen: int):
    """The family: WRN-depth-k, three stages of (depth-4)/6 blocks with 16k/32k/64k filters."""
    depth = hp.Choice("depth", [10, 16, 22, 28], default=depth)
    if (depth - 4) % 6:
        raise ZooError(f"{name}: depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
    widen = hp.Choice("widen_factor", [1, 2, 4, 8], default=widen)
    batch_norm = hp.Boolean("batch_norm", default=True)
    activation = hp.Choice("activation", ["relu", "gelu", "swish"], default="relu")
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.0)
    reg = weight_regularizer(hp, default_l2=5e-4)
    blocks = (depth - 4) // 6

    inputs, x = raw_image_input(input_shape)
    x = _conv(x, 16, 1, name="stem_conv", reg=reg)
    for stage, base in enumerate((16, 32, 64), start=1):
        for i in range(blocks):
            x = _wide_block(
                x,
                base * widen,
                2 if stage > 1 and i == 0 else 1,
                name=f"stage{stage}_block{i + 1}",
                batch_norm=batch_norm,
                activation=activation,
                dropout=dropout,
                reg=reg,
            )
    x = bn_act(x, name="final", batch_norm=batch_norm, activation=activation)
    outputs = classifier_head(x, num_classes, regularizer=reg)
    return keras.Model(inputs, outputs, name=name)


@register("wrn_16_4", family="wide_resnet", kind="scratch", paper=PAPER, input_size=32)
def wrn_16_4(hp, input_shape, num_classes) -> keras.Model:
    """WRN-16-4: 2 wide pre-activation blocks a stage (64/128/256 filters), ~2.7M parameters."""
    return wide_resnet(hp, input_shape, num_classes, name="wrn_16_4", depth=16, widen=4)
