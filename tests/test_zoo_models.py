"""Every registered scratch architecture builds, searches, predicts probabilities and learns."""

from __future__ import annotations

import gc
import re
import weakref

import keras
import keras_tuner
import numpy as np
import pytest
from conftest import real_cifar
from zoo_contract import check_entry, check_sampled_build, raw_batch

import zoo
from zoo.flops import count_flops

SCRATCH = zoo.list_models(kind="scratch")
# Published parameter counts (He et al. 2016; Zagoruyko & Komodakis 2016; Huang et al. 2017).
PUBLISHED_PARAMS = {
    "resnet20": 0.27e6,
    "resnet20_v2": 0.27e6,
    "resnet56": 0.85e6,
    "resnet56_v2": 0.85e6,
    "wrn_16_4": 2.7e6,
    "densenet_bc_100": 0.8e6,
}
# Families are tested on a random sample of their space through their cheapest variant by default;
# the expensive variants share the family function, so they are sampled only with -m slow.
HEAVY = {"densenet_bc_100", "resnet56", "resnet56_v2", "inception_small", "mobilenetv2", "vgg16_bn"}
LEARNS_BY_DEFAULT = {"fastnet"}


@pytest.mark.parametrize("name", SCRATCH)
def test_default_and_sampled_builds(name):
    """Defaults: the contract and published size; then a random trial of the space (cheap ones)."""
    model = check_entry(name, sampled=name not in HEAVY)
    if name in PUBLISHED_PARAMS:
        expected = PUBLISHED_PARAMS[name]
        assert abs(model.count_params() - expected) <= 0.1 * expected, model.count_params()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEAVY & set(SCRATCH)))
def test_sampled_builds_of_heavy_variants(name):
    hp = keras_tuner.HyperParameters()
    zoo.build(name, hp=hp)  # declares the space
    check_sampled_build(name, hp)


def test_num_classes_and_regularisation_follow_hp():
    keras.backend.clear_session()
    hp = keras_tuner.HyperParameters()
    hp.Fixed("l2", 0.0)
    hp.Fixed("l1", 0.0)
    hp.Fixed("batch_norm", False)
    model = zoo.build("resnet20", hp=hp, num_classes=100)
    assert model.output_shape == (None, 100)
    assert not model.losses  # no regulariser when l1 = l2 = 0
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert zoo.build("resnet20").losses  # the default has weight decay


@pytest.mark.parametrize(
    "name",
    [n if n in LEARNS_BY_DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in SCRATCH],
)
def test_a_few_steps_lower_the_loss_on_real_images(name):
    x, y = real_cifar("train", per_class=4)  # 40 real pictures, raw uint8
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = zoo.build(name)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    losses = [float(model.train_on_batch(x, y)) for _ in range(8)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.9 * losses[0], losses


def test_published_flops_of_resnet20():
    """ResNet-20 is about 41M multiply-adds a 32x32 image (He et al. 2016)."""
    assert 0.9 * 41e6 <= count_flops(zoo.build("resnet20")) / 2 <= 1.1 * 41e6


def test_flops_counted_by_hand():
    """conv 3x3 (3->4, 8x8 same) + depthwise 3x3 stride 2 + nested 1x1 conv + dense, by hand."""
    inner_in = keras.Input((4, 4, 4))
    inner = keras.Model(inner_in, keras.layers.Conv2D(6, 1)(inner_in), name="inner")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = inner(x)
    x = keras.layers.SeparableConv2D(5, 3, padding="valid")(x)  # 4x4x6 -> 2x2x5
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10)(x)
    model = keras.Model(inputs, outputs)
    macs = (
        8 * 8 * 4 * (3 * 3 * 3)  # conv: every output value sums 3x3x3 products
        + 4 * 4 * 4 * (3 * 3)  # depthwise: 4x4 outputs x 4 channels x 3x3
        + 4 * 4 * 6 * 4  # nested 1x1 conv
        + 2 * 2 * (6 * 9 + 6 * 5)  # separable: depthwise 3x3 on 6 channels + pointwise 6->5
        + 2 * 2 * 5 * 10  # dense
    )
    assert count_flops(model) == 2 * macs


def test_flops_need_a_known_input_size():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="unknown dimension"):
        count_flops(model)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


def _build_and_forget(n: int, refs: list) -> None:
    for _ in range(n):
        keras.backend.clear_session()  # also runs gc.collect()
        model = zoo.build("fastnet")
        refs.append(weakref.ref(model))
        del model


def test_built_models_are_freed():
    """Nothing (registry, caches, Keras globals) keeps a reference to a model the caller dropped."""
    refs: list = []
    _build_and_forget(3, refs)  # warm-up
    start = _rss_mb()
    _build_and_forget(6, refs)  # -m slow builds 50 and bounds the memory growth more tightly
    keras.backend.clear_session()
    gc.collect()
    alive = sum(ref() is not None for ref in refs)
    assert alive == 0, f"{alive} of {len(refs)} dropped models are still referenced"
    assert _rss_mb() - start < 40


@pytest.mark.slow
def test_building_50_models_does_not_grow_memory():
    refs: list = []
    _build_and_forget(10, refs)  # warm-up: allocator pools, tracing caches
    start = _rss_mb()
    _build_and_forget(40, refs)
    gc.collect()
    growth = _rss_mb() - start
    # one fastnet holds ~1.1 MB of weights plus its graph objects: 40 leaked ones would be far more
    assert growth < 40, f"RSS grew {growth:.1f} MB over 40 builds"
    assert not any(ref() is not None for ref in refs)


def test_building_a_model_leaves_other_models_alone():
    x = raw_batch()
    a = zoo.build("resnet20")
    before = np.asarray(a(x, training=False))
    b = zoo.build("fastnet")
    b(x, training=False)
    c = zoo.build("resnet20")  # same name, same layer names: must not share or reset a's weights
    c(x, training=False)
    np.testing.assert_array_equal(np.asarray(a(x, training=False)), before)
    assert a.weights[0] is not c.weights[0]


@pytest.mark.parametrize("name", ["fastnet", "mobilenetv2_050"])
def test_saved_model_loads_in_safe_mode(name, tmp_path):
    """Only built-in layers: a saved member loads with safe_mode=True and predicts the same."""
    model = zoo.build(name)
    x = raw_batch()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)
