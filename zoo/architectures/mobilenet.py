"""MobileNetV2 (Sandler et al.) with CIFAR strides: inverted residuals on depthwise convolutions."""

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

PAPER = "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks"
# (expansion t, channels c, repeats n, first stride s): ImageNet's table with the stem and the
# second stage at stride 1, so a 32x32 image ends at 4x4 instead of 1x1.
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _inverted_residual(x, expansion, filters, strides, *, name, batch_norm, activation, reg):
    inp = x
    hidden = x.shape[-1] * expansion
    if expansion != 1:
        x = conv_bn_act(
            x,
            hidden,
            1,
            name=f"{name}_expand",
            batch_norm=batch_norm,
            activation=activation,
            regularizer=reg,
        )
    x = keras.layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=not batch_norm, name=f"{name}_dw"
    )(x)
    if batch_norm:
        x = bn_layer(f"{name}_dw_bn")(x)
    x = keras.layers.Activation(activation, name=f"{name}_dw_act")(x)
    x = conv_bn_act(  # linear bottleneck: no activation after the projection
        x,
        filters,
        1,
        name=f"{name}_project",
        batch_norm=batch_norm,
        activation=None,
        regularizer=reg,
    )
    if strides == 1 and inp.shape[-1] == filters:
        x = keras.layers.Add(name=f"{name}_add")([inp, x])
    return x


def mobilenet_v2(hp, input_shape, num_classes, *, name: str, width: float):
    """The family: stem, seven inverted-residual stages (channels x width), 1x1 head conv."""
    width = hp.Choice("width", [0.35, 0.5, 0.75, 1.0], default=width)
    batch_norm = hp.Boolean("batch_norm", default=True)
    activation = hp.Choice("activation", ["relu6", "relu", "swish"], default="relu6")
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.2)
    reg = weight_regularizer(hp, default_l2=4e-5)
    opts = dict(batch_norm=batch_norm, activation=activation)

    inputs, x = raw_image_input(input_shape)
    x = conv_bn_act(x, scaled(32, width), name="stem", regularizer=reg, **opts)
    for s, (t, c, n, first_stride) in enumerate(STAGES, start=1):
        for i in range(n):
            x = _inverted_residual(
                x,
                t,
                scaled(c, width),
                first_stride if i == 0 else 1,
                name=f"stage{s}_block{i + 1}",
                reg=reg,
                **opts,
            )
    x = conv_bn_act(
        x, 1280 if width <= 1.0 else scaled(1280, width), 1, name="head", regularizer=reg, **opts
    )
    outputs = classifier_head(x, num_classes, dropout=dropout, regularizer=reg)
    return keras.Model(inputs, outputs, name=name)


@register("mobilenetv2", family="mobilenet", kind="scratch", paper=PAPER, input_size=32)
def mobilenetv2(hp, input_shape, num_classes) -> keras.Model:
    """MobileNetV2 (width 1.0) with CIFAR strides, ~2.2M parameters."""
    return mobilenet_v2(hp, input_shape, num_classes, name="mobilenetv2", width=1.0)


@register("mobilenetv2_050", family="mobilenet", kind="scratch", paper=PAPER, input_size=32)
def mobilenetv2_050(hp, input_shape, num_classes) -> keras.Model:
    """MobileNetV2 at width 0.5 with CIFAR strides: the cheap mobile member."""
    return mobilenet_v2(hp, input_shape, num_classes, name="mobilenetv2_050", width=0.5)
