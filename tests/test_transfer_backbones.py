"""Pretrained backbones: offline weight errors, random-weight builds, the Lite port on a photograph."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_matches_the_pytorch_reference_when_torch_is_installed():
    """Dev-only: logits equal lukemelas-format EfficientNet-Lite's within 1e-4 (skips without torch)."""
    torch = pytest.importorskip("torch")
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    from zoo.efficientnet_lite_net import build_network, load_imagenet_weights, source_weights_path

    ref = lite.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(source_weights_path("efficientnet_lite0"))
    ).eval()
    ours = build_network("efficientnet_lite0", (224, 224, 3), include_top=True)
    load_imagenet_weights(ours, "efficientnet_lite0")
    x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype("float32")
    with torch.no_grad():
        want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(ours.predict(x, verbose=0), want, atol=1e-4, rtol=1e-4)
