"""The classic CIFAR-10 notebook CNN: three Conv-Conv-Pool blocks and a dense head (the baseline)."""

from __future__ import annotations

import keras

from zoo.layers import bn_layer, classifier_head, raw_image_input, weight_regularizer
from zoo.registry import register


@register(
    "seed_cnn",
    family="seed",
    kind="scratch",
    paper="the project's brief (classic Keras CIFAR-10 CNN)",
)
def seed_cnn(hp, input_shape, num_classes) -> keras.Model:
    """Three Conv-Conv-MaxPool blocks (32/64/128 filters x width) with optional batch norm and dropout."""
    width = hp.Choice("width", [0.5, 1.0, 2.0], default=1.0)
    batch_norm = hp.Boolean("batch_norm", default=True)
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.2)
    activation = hp.Choice("activation", ["relu", "gelu", "swish"], default="relu")
    dense_units = hp.Choice("dense_units", [0, 128, 256], default=128)
    reg = weight_regularizer(hp, default_l2=1e-4)

    inputs, x = raw_image_input(input_shape)
    for block, filters in enumerate((32, 64, 128), start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(
                int(filters * width),
                3,
                padding="same",
                use_bias=not batch_norm,
                kernel_regularizer=reg,
                name=f"block{block}_conv{conv}",
            )(x)
            if batch_norm:
                x = bn_layer(f"block{block}_bn{conv}")(x)
            x = keras.layers.Activation(activation, name=f"block{block}_act{conv}")(x)
        x = keras.layers.MaxPooling2D(name=f"block{block}_pool")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"block{block}_dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if dense_units:
        x = keras.layers.Dense(dense_units, kernel_regularizer=reg, name="dense")(x)
        x = keras.layers.Activation(activation, name="dense_act")(x)
    outputs = classifier_head(x, num_classes, dropout=dropout, regularizer=reg)
    return keras.Model(inputs, outputs, name="seed_cnn")
