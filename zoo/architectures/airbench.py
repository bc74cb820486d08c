"""The CIFAR-10 speed records' networks (airbench94, airbench95, airbench96) and fastnet.

Jordan 2024 (KellerJordan/cifar10-airbench): a 2x2 whitening conv computed from the training
images, then three conv groups (conv, 2x2 max-pool, batch norm, GELU, conv, batch norm, GELU; in
airbench96 a third conv and a skip), a global max-pool and a linear head scaled by 1/9. Batch norm
has no learned scale and a faster bias, and the convolutions start as the identity
(``zoo.record_layers``). Each entry names its training recipe (``benchmark.config.recipes``): the
records' optimizer, schedule, label smoothing, weight averaging, flips and test-time views, which a
profile's member uses unless it sets ``recipe = "none"``.

fastnet is airbench94 at 3/8 width (24/96/96 filters): the same network and recipe sized for a CPU.
"""

from __future__ import annotations

import keras

from zoo.layers import raw_image_input, scaled, weight_regularizer
from zoo.record_layers import Dirac, PatchWhitening, ScaleFreeBatchNorm
from zoo.registry import register

PAPER = "Jordan 2024, 94% on CIFAR-10 in 3.29 Seconds on a Single GPU (airbench)"
HEAD_SCALE = 1.0 / 9.0  # airbench's scaling_factor on the logits


def _conv(x, filters: int, *, name: str, batch_norm: bool, reg):
    return keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=not batch_norm,
        kernel_initializer=Dirac(),
        kernel_regularizer=reg,
        name=name,
    )(x)


def _norm_act(x, *, name: str, batch_norm: bool, activation: str | None):
    if batch_norm:
        x = ScaleFreeBatchNorm(name=f"{name}_bn")(x)
    if activation:
        x = keras.layers.Activation(activation, name=f"{name}_act")(x)
    return x


def _conv_group(x, filters: int, *, name: str, convs: int, batch_norm: bool, activation, reg):
    """conv, max-pool, BN, act, conv, BN, act; with ``convs = 3`` a third conv and a skip
    around the last two (airbench96)."""
    x = _conv(x, filters, name=f"{name}_a_conv", batch_norm=batch_norm, reg=reg)
    x = keras.layers.MaxPooling2D(name=f"{name}_pool")(x)
    x = _norm_act(x, name=f"{name}_a", batch_norm=batch_norm, activation=activation)
    skip = x
    x = _conv(x, filters, name=f"{name}_b_conv", batch_norm=batch_norm, reg=reg)
    x = _norm_act(x, name=f"{name}_b", batch_norm=batch_norm, activation=activation)
    if convs == 3:
        x = _conv(x, filters, name=f"{name}_c_conv", batch_norm=batch_norm, reg=reg)
        x = _norm_act(x, name=f"{name}_c", batch_norm=batch_norm, activation=None)
        x = keras.layers.Add(name=f"{name}_add")([x, skip])
        x = keras.layers.Activation(activation, name=f"{name}_c_act")(x)
    return x


def airbench_net(
    hp, input_shape, num_classes, *, name: str, widths, width: float = 1.0, convs: int = 2
) -> keras.Model:
    """The family; ``width`` scales the three groups' filters (rounded to multiples of 8)."""
    width = hp.Choice("width", [0.25, 0.375, 0.5, 0.75, 1.0], default=width)
    batch_norm = hp.Boolean("batch_norm", default=True)
    activation = hp.Choice("activation", ["gelu", "relu", "swish"], default="gelu")
    whiten = hp.Boolean("whiten", default=True)
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.0)
    reg = weight_regularizer(hp, default_l2=0.0)  # the recipes decay weights in the optimizer

    inputs, x = raw_image_input(input_shape)
    if whiten:
        x = PatchWhitening(2, name="whiten")(x)
    else:
        x = keras.layers.Conv2D(24, 2, padding="valid", kernel_regularizer=reg, name="stem_conv")(x)
    x = keras.layers.Activation(activation, name="stem_act")(x)
    for i, base in enumerate(widths, start=1):
        x = _conv_group(
            x,
            scaled(base, width),
            name=f"group{i}",
            convs=convs,
            batch_norm=batch_norm,
            activation=activation,
            reg=reg,
        )
    x = keras.layers.GlobalMaxPooling2D(name="global_max_pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(num_classes, use_bias=False, kernel_regularizer=reg, name="logits")(x)
    x = keras.layers.Rescaling(HEAD_SCALE, name="logit_scale")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)


@register(
    "airbench94",
    family="airbench",
    kind="scratch",
    paper=PAPER,
    recipe="airbench94",
)
def airbench94(hp, input_shape, num_classes) -> keras.Model:
    """airbench94's net (64/256/256 filters): 94% in 10 epochs with its recipe."""
    return airbench_net(hp, input_shape, num_classes, name="airbench94", widths=(64, 256, 256))


@register(
    "airbench95",
    family="airbench",
    kind="scratch",
    paper=PAPER,
    recipe="airbench95",
)
def airbench95(hp, input_shape, num_classes) -> keras.Model:
    """airbench95's net (128/384/384 filters): 95% in 15 epochs with its recipe."""
    return airbench_net(hp, input_shape, num_classes, name="airbench95", widths=(128, 384, 384))


@register(
    "airbench96",
    family="airbench",
    kind="scratch",
    paper=PAPER,
    recipe="airbench96",
)
def airbench96(hp, input_shape, num_classes) -> keras.Model:
    """airbench96's net (128/384/512 filters, three convs and a skip a group)."""
    return airbench_net(
        hp, input_shape, num_classes, name="airbench96", widths=(128, 384, 512), convs=3
    )


@register(
    "fastnet",
    family="airbench",
    kind="scratch",
    paper=PAPER,
    recipe="fastnet",
)
def fastnet(hp, input_shape, num_classes) -> keras.Model:
    """airbench94's net at 3/8 width (24/96/96 filters) with its recipe: sized for a CPU."""
    return airbench_net(
        hp, input_shape, num_classes, name="fastnet", widths=(64, 256, 256), width=0.375
    )
