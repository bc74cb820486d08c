"""Pretrained backbones: offline weight errors, random-weight builds, the Lite port on a photograph."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import real_cifar

import zoo
from zoo.weights import (
    WeightsUnavailable,
    keras_weights_file,
    no_pretrained_weights,
    pretrained_enabled,
)

KERAS_APPS = ("densenet121", "efficientnet_b0", "inception_v3", "mobilenet_v2", "resnet50", "vgg16")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty Keras home and a download that fails the way it does without a network."""
    import keras

    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))

    def no_network(fname, origin, **kwargs):
        raise Exception(
            f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known"
        )

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    return home


def test_pretrained_members_are_registered():
    names = set(zoo.list_models(kind="pretrained"))
    assert (
        set(KERAS_APPS) | {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
        <= names
    )


def test_offline_without_cached_file_names_the_file_and_folder(offline):
    with pytest.raises(WeightsUnavailable) as err:
        zoo.build("mobilenet_v2")  # default input_size 128 -> the 128 px file
    message = str(err.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5" in message
    assert str(offline / "models") in message
    assert "\n" not in message
    assert isinstance(err.value, zoo.ZooError)
    with pytest.raises(
        WeightsUnavailable, match="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ):
        zoo.build("resnet50")


def test_a_cached_weights_file_is_used_without_downloading(offline):
    folder = offline / "models"
    folder.mkdir(parents=True)
    (folder / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"x")
    path = keras_weights_file(
        "vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "http://x"
    )
    assert path == folder / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def test_no_pretrained_weights_switch(offline, monkeypatch):
    assert pretrained_enabled()
    with no_pretrained_weights():
        assert not pretrained_enabled()
        model = zoo.build("mobilenet_v2", input_shape=(32, 32, 3), num_classes=10)
    assert pretrained_enabled()
    assert model.output_shape == (None, 10)
    assert model.get_layer("backbone").output_shape == (None, 1280)
    monkeypatch.setenv("ZOOBENCH_NO_PRETRAINED", "1")
    assert not pretrained_enabled()


def test_caffe_backbones_read_rgb_through_a_swapped_first_conv(offline, monkeypatch):
    """ResNet50 expects BGR minus the mean: the kernel swap plus RGB mean equals the reference."""
    import keras

    from zoo.architectures.pretrained_keras import keras_backbone

    monkeypatch.setenv("ZOOBENCH_NO_PRETRAINED", "1")
    keras.utils.set_random_seed(0)
    ours = keras_backbone("vgg16", (32, 32, 3))
    ref = keras.applications.VGG16(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    weights = ours.get_weights()
    weights[0] = weights[0][:, :, ::-1, :]  # undo the swap: the reference's BGR kernel
    ref.set_weights(weights)
    rgb = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    mean_rgb = np.array([123.68, 116.779, 103.939], "float32")
    np.testing.assert_allclose(
        ours.predict(rgb - mean_rgb, verbose=0),
        ref.predict(keras.applications.vgg16.preprocess_input(rgb.copy()), verbose=0),
        rtol=1e-4,
        atol=1e-4,
    )


def test_backbone_blocks_group_layers_bottom_to_top(monkeypatch):
    import keras

    from zoo.pretrained import backbone_blocks

    monkeypatch.setenv("ZOOBENCH_NO_PRETRAINED", "1")
    hp = __import__("keras_tuner").HyperParameters()
    hp.Fixed("input_size", 64)
    lite = zoo.build("efficientnet_lite0", hp=hp).get_layer("backbone")
    blocks = backbone_blocks(lite)
    names = [[layer.name for layer in block] for block in blocks]
    assert names[0][0] == "stem_conv" and names[-1][-1] == "top_bn"
    assert ["block7a_project_conv" in b for b in names].count(True) == 1
    assert len(blocks) == 18  # stem + 16 MBConv blocks + top
    inception = keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(75, 75, 3)
    )
    iblocks = backbone_blocks(inception)
    assert 10 <= len(iblocks) <= 11  # mixed0..mixed10 (mixed9_1 names the last one early)
    first_weighted = next(layer for layer in inception.layers if layer.weights)
    assert iblocks[0][0] is first_weighted  # the stem (its auto-name depends on earlier builds)
    assert sum(len(b) for b in iblocks) == sum(1 for layer in inception.layers if layer.weights)


def test_stage_ends_are_where_the_width_changes(monkeypatch):
    import keras

    from zoo.pretrained import stage_ends

    monkeypatch.setenv("ZOOBENCH_NO_PRETRAINED", "1")
    hp = __import__("keras_tuner").HyperParameters()
    hp.Fixed("input_size", 64)
    lite = zoo.build("efficientnet_lite0", hp=hp).get_layer("backbone")
    names = [layer.name for layer in stage_ends(lite)]
    assert names[-5:] == [
        "block4c_add",
        "block5c_add",
        "block6d_add",
        "block7a_project_bn",
        "top_activation",
    ]
    resnet = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    assert [layer.name for layer in stage_ends(resnet)][-4:] == [
        "conv2_block3_out",
        "conv3_block4_out",
        "conv4_block6_out",
        "conv5_block3_out",
    ]
    # No named blocks (a zoobench member): each 4-D layer is a block; widths 8, 8, 16 -> 2 stages.
    inputs = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.Conv2D(16, 3, name="c2")(h)
    plain = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(h))
    assert [layer.name for layer in stage_ends(plain)] == ["r1", "c2"]


def test_efficientnet_lite0_port_classifies_a_real_photograph(tmp_path, monkeypatch):
    """ImageNet top-1 of the ported weights on skimage's chelsea (a cat: 281 / 282 / 285)."""
    skimage_data = pytest.importorskip("skimage.data")
    import cv2

    from zoo.efficientnet_lite_net import MEAN_RGB, STD_RGB, build_network, load_imagenet_weights

    monkeypatch.setenv("ZOOBENCH_CACHE", str(tmp_path))
    model = build_network("efficientnet_lite0", (224, 224, 3), include_top=True)
    assert load_imagenet_weights(model, "efficientnet_lite0") == 99
    assert list(tmp_path.glob("weights/efficientnet_lite0-*.npz"))  # converted once, cached
    image = cv2.resize(skimage_data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    x = (image.astype("float32")[None] - np.array(MEAN_RGB)) / np.array(STD_RGB)
    logits = model.predict(x, verbose=0)[0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    assert int(np.argmax(probs)) in (281, 282, 285)
    assert probs[[281, 282, 285]].sum() > 0.8


# lukemelas' EfficientNet-PyTorch block list for B0 = Lite0: the blocks whose depthwise conv has
# stride 2 (the first of stages 2, 3, 4 and 6); everything else is read off the state dict.
LITE0_STRIDE_2_BLOCKS = {1, 3, 5, 11}


def _reference_lite0(state: dict, image: np.ndarray) -> np.ndarray:
    """ImageNet logits of EfficientNet-Lite0 computed straight from the PyTorch state dict in
    NumPy (float64), written from lukemelas' model: TF "same" padding, BN epsilon 1e-3, ReLU6, no
    squeeze-excitation, a skip where stride is 1 and width is kept. Independent of the Keras port
    (its layer graph and its weight conversion), so it checks both."""
    from numpy.lib.stride_tricks import sliding_window_view

    def windows(x, k, stride):
        size = x.shape[0]
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        pad = (total // 2, total - total // 2)
        x = np.pad(x, (pad, pad, (0, 0)))
        return sliding_window_view(x, (k, k), axis=(0, 1))[::stride, ::stride][:out, :out]

    def conv(x, w, stride=1):  # w: (out, in, k, k)
        return np.einsum("hwikl,oikl->hwo", windows(x, w.shape[-1], stride), w)

    def depthwise(x, w, stride):  # w: (channels, 1, k, k)
        return np.einsum("hwckl,ckl->hwc", windows(x, w.shape[-1], stride), w[:, 0])

    def bn(x, key):
        scale = state[f"{key}.weight"] / np.sqrt(state[f"{key}.running_var"] + 1e-3)
        return (x - state[f"{key}.running_mean"]) * scale + state[f"{key}.bias"]

    def relu6(x):
        return np.clip(x, 0.0, 6.0)

    state = {k: np.asarray(v, np.float64) for k, v in state.items()}
    x = relu6(bn(conv(image.astype(np.float64), state["_conv_stem.weight"], 2), "_bn0"))
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("_blocks.")})
    for i in blocks:
        p = f"_blocks.{i}"
        stride = 2 if i in LITE0_STRIDE_2_BLOCKS else 1
        h = x
        if f"{p}._expand_conv.weight" in state:
            h = relu6(bn(conv(h, state[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
        h = relu6(bn(depthwise(h, state[f"{p}._depthwise_conv.weight"], stride), f"{p}._bn1"))
        h = bn(conv(h, state[f"{p}._project_conv.weight"]), f"{p}._bn2")
        x = h + x if stride == 1 and h.shape == x.shape else h
    x = relu6(bn(conv(x, state["_conv_head.weight"]), "_bn1"))
    return state["_fc.weight"] @ x.mean(axis=(0, 1)) + state["_fc.bias"]


def test_efficientnet_lite0_port_matches_a_numpy_reference_of_the_pytorch_model(
    tmp_path, monkeypatch
):
    """The Keras port's logits equal a NumPy forward pass of the source PyTorch state dict within
    1e-3 on a real picture (96 px: the network is fully convolutional, and the small size keeps
    it fast). Runs wherever the weights package is installed, CI's first step included."""
    from zoo.efficientnet_lite_net import (
        MEAN_RGB,
        STD_RGB,
        build_network,
        load_imagenet_weights,
        source_weights_path,
    )
    from zoo.torch_weights import load_state_dict
    from zoo.weights import WeightsUnavailable

    try:
        source = source_weights_path("efficientnet_lite0")
    except WeightsUnavailable as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("ZOOBENCH_CACHE", str(tmp_path))
    image, _ = real_cifar("test", 1)
    import cv2

    picture = cv2.resize(image[3], (96, 96), interpolation=cv2.INTER_LINEAR)
    x = (picture.astype("float32") - np.array(MEAN_RGB)) / np.array(STD_RGB)
    ours = build_network("efficientnet_lite0", (96, 96, 3), include_top=True)
    load_imagenet_weights(ours, "efficientnet_lite0")
    got = ours.predict(x[None].astype("float32"), verbose=0)[0]
    want = _reference_lite0(load_state_dict(source), x)
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)
    assert np.argmax(got) == np.argmax(want) and np.std(want) > 0.5  # real logits, not zeros
