"""The shape every pretrained member shares: raw pixels -> resize -> normalise -> backbone -> head.

A pretrained member is ``image (raw uint8 pixels) -> Resizing -> preprocessing (built-in Rescaling /
Normalization layers, so a saved model loads with ``safe_mode=True``) -> backbone (a nested model
named ``"backbone"``, called with ``training=False`` so its batch norm stays in inference mode even
when fine-tuned) -> dropout -> optional dense -> softmax ``probs``.

The transfer strategies (``benchmark.train.transfer``) find the backbone by :data:`BACKBONE_NAME` and
group its layers into blocks with :func:`backbone_blocks` for progressive unfreezing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

BACKBONE_NAME = "backbone"
INPUT_SIZES = (96, 128, 160, 224)

# Block keys of the architectures in the zoo, first match wins: EfficientNet / Lite ("block3b_"),
# MobileNetV2 ("block_12_"), ResNet / DenseNet ("conv4_block2_", "pool3_"), VGG ("block4_"),
# InceptionV3 ("mixed7"), plus stem / top.
_BLOCK_PATTERNS = (
    re.compile(r"^(conv\d+_block\d+)_"),
    re.compile(r"^(block\d+[a-z])_"),
    re.compile(r"^(block_\d+)_"),
    re.compile(r"^(block\d+)_"),
    re.compile(r"^(pool\d+)_"),
    re.compile(r"^(mixed\d+)"),
    re.compile(r"^(stem|top|conv1|conv_pw)"),
)


def preprocessing_layers(mode: str) -> list:
    """Built-in layers doing a keras.applications ``preprocess_input`` mode on RGB 0-255 input.

    - ``"tf"``: x / 127.5 - 1 (MobileNetV2, InceptionV3);
    - ``"torch"``: (x / 255 - ImageNet mean) / ImageNet std (DenseNet);
    - ``"caffe"``: RGB -> BGR and subtract the BGR mean. The channel swap is folded into the first
      convolution's kernel by the builder, so here it is only the mean, in RGB order (ResNet, VGG);
    - ``"lite"``: (x - 127) / 128 (EfficientNet-Lite, TF recipe);
    - ``"none"``: the backbone normalises itself (keras.applications EfficientNet).
    """
    import keras

    if mode == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")]
    if mode == "torch":
        mean = [0.485 * 255, 0.456 * 255, 0.406 * 255]
        var = [(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2]
        return [keras.layers.Normalization(axis=-1, mean=mean, variance=var, name="preprocess")]
    if mode == "caffe":
        mean = [123.68, 116.779, 103.939]
        return [
            keras.layers.Normalization(axis=-1, mean=mean, variance=[1.0] * 3, name="preprocess")
        ]
    if mode == "lite":
        return [keras.layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0, name="preprocess")]
    if mode == "none":
        return []
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def swap_first_conv_channels(backbone, layer_name: str) -> None:
    """Reverse the input channels of ``layer_name``'s kernel: a BGR-trained conv then reads RGB."""
    layer = backbone.get_layer(layer_name)
    weights = layer.get_weights()
    weights[0] = weights[0][:, :, ::-1, :].copy()
    layer.set_weights(weights)


def pretrained_classifier(
    hp,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    name: str,
    make_backbone: Callable[[tuple[int, int, int]], object],
    preprocess: str,
    default_size: int = 128,
    min_size: int = 32,
):
    """Assemble a pretrained member around ``make_backbone((size, size, 3))`` (pooled features out).

    Search space: ``input_size`` (resize target), ``dropout``, ``dense_units`` (0 = linear head).
    """
    import keras

    sizes = [s for s in INPUT_SIZES if s >= min_size]
    size = hp.Choice(
        "input_size", sizes, default=default_size if default_size in sizes else sizes[0]
    )
    dropout = hp.Float("dropout", 0.0, 0.5, step=0.1, default=0.2)
    dense_units = hp.Choice("dense_units", [0, 256, 512], default=0)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if tuple(input_shape[:2]) != (size, size):
        x = keras.layers.Resizing(size, size, interpolation="bilinear", name="resize")(x)
    for layer in preprocessing_layers(preprocess):
        x = layer(x)
    backbone = make_backbone((size, size, 3))
    backbone.name = BACKBONE_NAME
    x = backbone(x, training=False)  # batch norm in inference mode, even when fine-tuned
    outputs = classifier_on_features(x, num_classes, dropout=dropout, dense_units=dense_units)
    return keras.Model(inputs, outputs, name=name)


def classifier_on_features(
    x, num_classes: int, *, dropout: float, dense_units: int, l2: float = 0.0
):
    """The head on pooled features: dropout, optional ReLU dense, softmax ``probs``."""
    import keras

    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    if dense_units:
        x = keras.layers.Dense(
            dense_units, activation="relu", kernel_regularizer=reg, name="head_dense"
        )(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name="head_dense_dropout")(x)
    return keras.layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=reg, name="probs"
    )(x)


def backbone_blocks(backbone) -> list[list]:
    """The backbone's weighted layers grouped into blocks, bottom to top.

    A layer's block comes from its name (see ``_BLOCK_PATTERNS``); a layer without a recognisable
    name joins the next named block (InceptionV3's ``conv2d_N`` layers precede their ``mixedN``),
    and trailing ones join the last block. Architectures with no recognisable names fall back to
    eight equal slices, so progressive unfreezing works for any backbone (e.g. a zoobench member).
    """
    layers = [layer for layer in backbone.layers if layer.weights]
    blocks: list[list] = []
    keys: list[str] = []
    pending: list = []
    for layer in backbone.layers:  # weightless layers (InceptionV3's "mixedN") still name blocks
        key = next((m.group(1) for p in _BLOCK_PATTERNS if (m := p.match(layer.name))), None)
        if key is None:
            if layer.weights:
                pending.append(layer)
            continue
        if not keys or keys[-1] != key:
            keys.append(key)
            blocks.append([])
        blocks[-1].extend(pending)
        if layer.weights:
            blocks[-1].append(layer)
        pending = []
    if pending:
        if blocks:
            blocks[-1].extend(pending)
        else:
            blocks.append(pending)
    if len(blocks) < 2 and len(layers) >= 2:
        n = min(8, len(layers))
        bounds = [round(i * len(layers) / n) for i in range(n + 1)]
        blocks = [layers[bounds[i] : bounds[i + 1]] for i in range(n)]
    return [b for b in blocks if b]


def stage_ends(backbone) -> list:
    """The layers that end each stage of ``backbone``, bottom to top, the last one included.

    A block ends at the last layer carrying its name (see ``_BLOCK_PATTERNS``: ``block4c_add``,
    ``conv3_block4_out``, ``mixed7``); a stage is a run of blocks whose outputs keep one channel
    count (EfficientNet's ``block4a..4c`` at 80), and ends where the width changes. Without named
    blocks (a zoobench member) every layer with a 4-D output counts as a block. Feature extraction
    pools these outputs to describe an image at several depths, not only by its last layer.
    """
    ends: dict[str, Any] = {}
    for layer in backbone.layers:
        key = next((m.group(1) for p in _BLOCK_PATTERNS if (m := p.match(layer.name))), None)
        if key is not None:
            ends.pop(key, None)  # re-insert: the block's last layer, in order
            ends[key] = layer
    blocks = [layer for layer in ends.values() if _is_feature_map(layer)]
    if len(blocks) < 2:
        blocks = [layer for layer in backbone.layers[1:] if _is_feature_map(layer)]
    stages = []
    for layer, following in zip(blocks, [*blocks[1:], None], strict=True):
        if following is None or following.output.shape[-1] != layer.output.shape[-1]:
            stages.append(layer)
    return stages


def _is_feature_map(layer) -> bool:
    try:
        return len(layer.output.shape) == 4
    except (AttributeError, ValueError):  # a layer called more than once has no single output
        return False
