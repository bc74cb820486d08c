"""Fast small-image nets after ResNet-9: few wide conv-pool-BN-GELU blocks (fastnet itself, the
CPU width of airbench94, lives with the records' nets in ``airbench.py``).

Designed for 32x32 pictures and a small compute budget: resolution drops early (max-pool right after
the first conv of each block), so most of the work happens on 15x15 and smaller maps with a handful
of layers, which trains many more images per CPU-second than deep thin ResNets.
"""

from __future__ import annotations

import keras

from zoo.layers import (
    bn_layer,
    classifier_head,
    conv_bn_act,
    raw_image_input,
    scaled,
    weight_regularizer,
)
from zoo.registry import register

PAPER_RESNET9 = "Page 2018, How to Train Your ResNet (DAWNBench ResNet-9)"


def _conv_group(x, filters, *, name, batch_norm, activation, reg, residual):
    """airbench's ConvGroup: conv, 2x2 max-pool, BN, act, conv, BN, act (+ optional skip)."""
    x = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=not batch_norm,
        kernel_initializer="he_normal",
        kernel_regularizer=reg,
        name=f"{name}_a_conv",
    )(x)
    x = keras.layers.MaxPooling2D(name=f"{name}_pool")(x)
    if batch_norm:
        x = bn_layer(f"{name}_a_bn")(x)
    x = keras.layers.Activation(activation, name=f"{name}_a_act")(x)
    y = conv_bn_act(
        x, filters, name=f"{name}_b", batch_norm=batch_norm, activation=activation, regularizer=reg
    )
    if residual:
        y = conv_bn_act(
            y,
            filters,
            name=f"{name}_c",
            batch_norm=batch_norm,
            activation=activation,
            regularizer=reg,
        )
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def fast_cifar_net(
    hp, input_shape, num_classes, *, name: str, widths, width: float, residual: bool, stem: int
):
    """The family: a small stem then three conv groups (widths x width) and a global max-pool."""
    width = hp.Choice("width", [0.25, 0.375, 0.5, 0.75, 1.0], default=width)
    residual = hp.Boolean("residual", default=residual)
    batch_norm = hp.Boolean("batch_norm", default=True)
    activation = hp.Choice("activation", ["gelu", "relu", "swish"], default="gelu")
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.0)
    reg = weight_regularizer(hp, default_l2=5e-4)

    inputs, x = raw_image_input(input_shape)
    # airbench's 2x2 "whitening" patch conv (24 = 2*3*2*2 filters, valid padding, with bias).
    x = keras.layers.Conv2D(stem, 2, padding="valid", kernel_regularizer=reg, name="stem_conv")(x)
    x = keras.layers.Activation(activation, name="stem_act")(x)
    for i, base in enumerate(widths, start=1):
        x = _conv_group(
            x,
            scaled(base, width),
            name=f"group{i}",
            batch_norm=batch_norm,
            activation=activation,
            reg=reg,
            residual=residual,
        )
    x = keras.layers.GlobalMaxPooling2D(name="global_max_pool")(x)
    outputs = classifier_head(x, num_classes, dropout=dropout, regularizer=reg)
    return keras.Model(inputs, outputs, name=name)


@register(
    "resnet9",
    family="fastnet",
    kind="scratch",
    paper=PAPER_RESNET9,
    input_size=32,
)
def resnet9(hp, input_shape, num_classes) -> keras.Model:
    """ResNet-9 (DAWNBench) at quarter width (32/64/128) with residual conv groups."""
    return fast_cifar_net(
        hp,
        input_shape,
        num_classes,
        name="resnet9",
        widths=(128, 256, 512),
        width=0.25,
        residual=True,
        stem=16,
    )
