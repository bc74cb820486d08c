"""ResNets for CIFAR (He et al.): v1 post-activation and v2 pre-activation, depth 6n+2."""

from __future__ import annotations

import keras

from zoo.layers import (
    bn_act,
    classifier_head,
    conv_bn_act,
    raw_image_input,
    scaled,
    weight_regularizer,
)
from zoo.registry import ZooError, register

DEPTHS = (20, 32, 44, 56)
PAPER_V1 = (
    "He et al. 2016, Deep Residual Learning for Image Recognition (CIFAR-10 variant, sec. 4.2)"
)
PAPER_V2 = "He et al. 2016, Identity Mappings in Deep Residual Networks (pre-activation)"


def _shortcut(x, filters: int, strides: int, *, name: str, batch_norm: bool, reg):
    """Identity when shapes agree, else a 1x1 projection (option B) to the new width and stride."""
    if strides == 1 and x.shape[-1] == filters:
        return x
    return conv_bn_act(
        x,
        filters,
        1,
        strides=strides,
        name=name,
        batch_norm=batch_norm,
        activation=None,
        regularizer=reg,
    )


def _block_v1(x, filters, strides, *, name, batch_norm, activation, reg):
    shortcut = _shortcut(x, filters, strides, name=f"{name}_proj", batch_norm=batch_norm, reg=reg)
    y = conv_bn_act(
        x,
        filters,
        strides=strides,
        name=f"{name}_a",
        batch_norm=batch_norm,
        activation=activation,
        regularizer=reg,
    )
    y = conv_bn_act(
        y, filters, name=f"{name}_b", batch_norm=batch_norm, activation=None, regularizer=reg
    )
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation(activation, name=f"{name}_out")(y)


def _block_v2(x, filters, strides, *, name, batch_norm, activation, reg):
    pre = bn_act(x, name=f"{name}_pre", batch_norm=batch_norm, activation=activation)
    projects = strides != 1 or x.shape[-1] != filters
    shortcut = (
        _shortcut(pre, filters, strides, name=f"{name}_proj", batch_norm=False, reg=reg)
        if projects
        else x
    )
    y = conv_bn_act(
        pre,
        filters,
        strides=strides,
        name=f"{name}_a",
        batch_norm=batch_norm,
        activation=activation,
        regularizer=reg,
    )
    y = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=not batch_norm,
        kernel_initializer="he_normal",
        kernel_regularizer=reg,
        name=f"{name}_b_conv",
    )(y)
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def resnet_cifar(hp, input_shape, num_classes, *, name: str, version: int, depth: int):
    """The family: three stages of n basic blocks (16/32/64 filters x width), depth = 6n + 2."""
    depth = hp.Choice("depth", list(DEPTHS), default=depth)
    if (depth - 2) % 6:
        raise ZooError(f"{name}: depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
    width = hp.Choice("width", [0.5, 1.0, 2.0], default=1.0)
    batch_norm = hp.Boolean("batch_norm", default=True)
    activation = hp.Choice("activation", ["relu", "gelu", "swish"], default="relu")
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.0)
    reg = weight_regularizer(hp, default_l2=1e-4)
    blocks = (depth - 2) // 6
    block = _block_v1 if version == 1 else _block_v2

    inputs, x = raw_image_input(input_shape)
    x = conv_bn_act(
        x,
        scaled(16, width),
        name="stem",
        batch_norm=batch_norm,
        activation=activation if version == 1 else None,
        regularizer=reg,
    )
    for stage, base in enumerate((16, 32, 64), start=1):
        for i in range(blocks):
            strides = 2 if stage > 1 and i == 0 else 1
            x = block(
                x,
                scaled(base, width),
                strides,
                name=f"stage{stage}_block{i + 1}",
                batch_norm=batch_norm,
                activation=activation,
                reg=reg,
            )
    if version == 2:
        x = bn_act(x, name="final", batch_norm=batch_norm, activation=activation)
    outputs = classifier_head(x, num_classes, dropout=dropout, regularizer=reg)
    return keras.Model(inputs, outputs, name=name)


@register(
    "resnet20",
    family="resnet",
    kind="scratch",
    paper=PAPER_V1,
    input_size=32,
)
def resnet20(hp, input_shape, num_classes) -> keras.Model:
    """ResNet-20 v1 for CIFAR: 3x3 basic blocks, 16/32/64 filters, ~0.27M parameters."""
    return resnet_cifar(hp, input_shape, num_classes, name="resnet20", version=1, depth=20)


@register("resnet56", family="resnet", kind="scratch", paper=PAPER_V1, input_size=32)
def resnet56(hp, input_shape, num_classes) -> keras.Model:
    """ResNet-56 v1 for CIFAR: 9 basic blocks a stage, ~0.85M parameters."""
    return resnet_cifar(hp, input_shape, num_classes, name="resnet56", version=1, depth=56)


@register("resnet20_v2", family="resnet", kind="scratch", paper=PAPER_V2, input_size=32)
def resnet20_v2(hp, input_shape, num_classes) -> keras.Model:
    """Pre-activation ResNet-20 (v2): BN-ReLU before each convolution, clean identity paths."""
    return resnet_cifar(hp, input_shape, num_classes, name="resnet20_v2", version=2, depth=20)


@register("resnet56_v2", family="resnet", kind="scratch", paper=PAPER_V2, input_size=32)
def resnet56_v2(hp, input_shape, num_classes) -> keras.Model:
    """Pre-activation ResNet-56 (v2), ~0.85M parameters."""
    return resnet_cifar(hp, input_shape, num_classes, name="resnet56_v2", version=2, depth=56)
