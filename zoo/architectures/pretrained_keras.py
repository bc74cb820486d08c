"""ImageNet-pretrained keras.applications backbones as zoo members (MobileNetV2 ... InceptionV3).

Weights are keras.applications' own files, read from Keras's cache (``$KERAS_HOME/models``) or
downloaded there; offline without the file, building raises ``zoo.weights.WeightsUnavailable``
naming the file and the folder. Inside ``zoo.weights.no_pretrained_weights()`` (or with
``ZOOBENCH_NO_PRETRAINED=1``) the backbones get random weights: for tests and parameter counts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import keras

from zoo.pretrained import pretrained_classifier, swap_first_conv_channels
from zoo.registry import register
from zoo.weights import (
    WeightsUnavailable,
    keras_models_dir,
    keras_weights_file,
    pretrained_enabled,
    without_weights,
)

_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class KerasBackbone:
    """How to build one keras.applications backbone and where its no-top ImageNet file lives."""

    factory: str  # attribute of keras.applications
    preprocess: str  # zoo.pretrained.preprocessing_layers mode
    base_url: str
    file_name: str  # may contain {rows} (MobileNetV2 has one file per input size)
    first_conv_bgr: str | None = (
        None  # caffe-mode: the conv whose input channels are swapped to RGB
    )

    def weights_file_name(self, size: int) -> str:
        """keras.applications' file name for an input of ``size`` pixels."""
        rows = size if size in (96, 128, 160, 192, 224) else 224
        return self.file_name.format(rows=rows)


BACKBONES = {
    "mobilenet_v2": KerasBackbone(
        "MobileNetV2",
        "tf",
        _GCS + "mobilenet_v2/",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
    ),
    "efficientnet_b0": KerasBackbone(
        "EfficientNetB0",
        "none",
        "https://storage.googleapis.com/keras-applications/",
        "efficientnetb0_notop.h5",
    ),
    "resnet50": KerasBackbone(
        "ResNet50",
        "caffe",
        _GCS + "resnet/",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        first_conv_bgr="conv1_conv",
    ),
    "densenet121": KerasBackbone(
        "DenseNet121",
        "torch",
        _GCS + "densenet/",
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "vgg16": KerasBackbone(
        "VGG16",
        "caffe",
        _GCS + "vgg16/",
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        first_conv_bgr="block1_conv1",
    ),
    "inception_v3": KerasBackbone(
        "InceptionV3",
        "tf",
        _GCS + "inception_v3/",
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}


def keras_backbone(architecture: str, input_shape: tuple[int, int, int]) -> keras.Model:
    """The pooled (include_top=False, pooling="avg") backbone; ImageNet weights when enabled."""
    spec = BACKBONES[architecture]
    factory = getattr(keras.applications, spec.factory)
    weights = None
    if pretrained_enabled():
        file_name = spec.weights_file_name(input_shape[0])
        weights = str(keras_weights_file(architecture, file_name, spec.base_url + file_name))
    model = factory(include_top=False, weights=weights, input_shape=input_shape, pooling="avg")
    if spec.first_conv_bgr:
        # Trained on BGR input; reversing the kernel's input channels lets it read RGB, so the
        # preprocessing stays a built-in Normalization layer (no Lambda, loads with safe_mode).
        swap_first_conv_channels(model, spec.first_conv_bgr)
    return model


def _builder(architecture: str, default_size: int = 128, min_size: int = 32):
    def build(hp, input_shape, num_classes) -> keras.Model:
        return pretrained_classifier(
            hp,
            input_shape,
            num_classes,
            name=architecture,
            make_backbone=lambda shape: keras_backbone(architecture, shape),
            preprocess=BACKBONES[architecture].preprocess,
            default_size=default_size,
            min_size=min_size,
        )

    return build


def _cached(architecture: str, file_name: str):
    """The cached weights file, without downloading it (``zoo show`` reports, never fetches)."""
    path = keras_models_dir() / file_name
    if not (path.is_file() and path.stat().st_size > 0):
        raise WeightsUnavailable(
            f"not in {keras_models_dir()}: the first build of {architecture} downloads it"
        )
    return path


_PAPERS = {
    "mobilenet_v2": ("mobilenet", "Sandler et al. 2018", 224, 128, 32),
    "efficientnet_b0": ("efficientnet", "Tan & Le 2019", 224, 128, 32),
    "resnet50": ("resnet", "He et al. 2016", 224, 128, 32),
    "densenet121": ("densenet", "Huang et al. 2017", 224, 128, 32),
    "vgg16": ("vgg", "Simonyan & Zisserman 2015", 224, 128, 32),
    "inception_v3": ("inception", "Szegedy et al. 2016", 299, 160, 75),
}

for _name, (_family, _paper, _native, _default, _min) in _PAPERS.items():
    _fn = _builder(_name, _default, _min)
    _fn.__name__ = _name
    _fn.__qualname__ = _name
    _fn.__doc__ = (
        f"{BACKBONES[_name].factory} (keras.applications, ImageNet weights) + a softmax head."
    )
    register(
        _name,
        family=_family,
        kind="pretrained",
        paper=_paper,
        input_size=_native,
        weights="imagenet",
        weights_file=BACKBONES[_name].weights_file_name(_native),
        weights_source=(
            f"keras.applications {BACKBONES[_name].factory} ImageNet weights, "
            f"downloaded once from {BACKBONES[_name].base_url} into Keras's cache"
        ),
        weights_locate=functools.partial(
            _cached, _name, BACKBONES[_name].weights_file_name(_native)
        ),
        build_without_weights=without_weights(_fn),
    )(_fn)
