"""VGG with batch norm (Simonyan & Zisserman), the plain deep stack, with widths scaled for CIFAR."""

from __future__ import annotations

import keras

from zoo.layers import classifier_head, conv_bn_act, raw_image_input, scaled, weight_regularizer
from zoo.registry import register

PAPER = "Simonyan & Zisserman 2015, Very Deep Convolutional Networks (with BN, CIFAR layout)"
# Filters per 3x3 conv; "M" is a 2x2 max-pool. Five pools take 32x32 down to 1x1.
CONFIGS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


def vgg(hp, input_shape, num_classes, *, name: str, depth: int):
    """The family: the VGG conv stack (filters x width) and a linear classifier, as for CIFAR."""
    width = hp.Choice("width", [0.25, 0.5, 1.0], default=0.5)
    batch_norm = hp.Boolean("batch_norm", default=True)
    activation = hp.Choice("activation", ["relu", "gelu", "swish"], default="relu")
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.3)
    reg = weight_regularizer(hp, default_l2=5e-4)

    inputs, x = raw_image_input(input_shape)
    conv, pool = 0, 0
    for item in CONFIGS[depth]:
        if item == "M":
            pool += 1
            if (
                min(x.shape[1], x.shape[2]) >= 2
            ):  # small inputs: skip pools that would empty the map
                x = keras.layers.MaxPooling2D(name=f"pool{pool}")(x)
            continue
        conv += 1
        x = conv_bn_act(
            x,
            scaled(item, width),
            name=f"conv{conv}",
            batch_norm=batch_norm,
            activation=activation,
            regularizer=reg,
        )
    outputs = classifier_head(x, num_classes, dropout=dropout, regularizer=reg)
    return keras.Model(inputs, outputs, name=name)


@register(
    "vgg11_bn",
    family="vgg",
    kind="scratch",
    paper=PAPER,
    input_size=32,
)
def vgg11_bn(hp, input_shape, num_classes) -> keras.Model:
    """VGG-11 with batch norm; half the paper's widths by default (width hp 0.25-1.0)."""
    return vgg(hp, input_shape, num_classes, name="vgg11_bn", depth=11)


@register("vgg16_bn", family="vgg", kind="scratch", paper=PAPER, input_size=32)
def vgg16_bn(hp, input_shape, num_classes) -> keras.Model:
    """VGG-16 with batch norm; half the paper's widths by default (width hp 0.25-1.0)."""
    return vgg(hp, input_shape, num_classes, name="vgg16_bn", depth=16)
