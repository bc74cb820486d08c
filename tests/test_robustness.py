"""Generated corruptions, AdaBN, FGSM accuracy and the [robustness] table (benchmark.run.robustness).

The smoke run's three leaderboard columns are checked in tests/test_runner.py, on its run.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import real_cifar

from benchmark.config.schema import SEVERITIES
from benchmark.data import corruptions
from benchmark.data.corruptions import CORRUPTIONS, NOISY, corrupt, corrupted_split
from benchmark.errors import ZoobenchError


@pytest.fixture(scope="module")
def clean():
    return real_cifar("test", 5)  # 50 real test pictures, 5 a class


def test_corruptions_are_seeded_and_keep_shape_and_dtype(clean):
    images, _ = clean
    before = images.copy()
    for name in CORRUPTIONS:
        out = corrupt(images, name, 3, seed=0)
        assert out.dtype == np.uint8 and out.shape == images.shape, name
        assert np.array_equal(out, corrupt(images, name, 3, seed=0)), f"{name}: not deterministic"
        other = corrupt(images, name, 3, seed=1)
        assert np.array_equal(out, other) != (name in NOISY), f"{name}: seed use"
        assert not np.array_equal(out, images), f"{name} changed nothing"
    assert np.array_equal(images, before)  # the input is never written to
    assert corrupt(images[:0], "jpeg", 1).shape == (0, 32, 32, 3)


def test_every_corruption_grows_with_severity(clean):
    images, _ = clean
    for name in CORRUPTIONS:
        distance = [
            np.abs(corrupt(images, name, s, 0).astype(float) - images).mean() for s in SEVERITIES
        ]
        assert all(a < b for a, b in zip(distance, distance[1:], strict=False)), (name, distance)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("fog", 1), "unknown corruption 'fog'"),
        (("jpeg", 0), "severity"),
        (("jpeg", True), "severity"),
    ],
)
def test_bad_corruption_requests_are_refused(clean, args, match):
    with pytest.raises(ValueError, match=match):
        corrupt(clean[0], *args)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(clean[0].astype(np.float32), "jpeg", 1)


def test_the_corrupted_split_is_stratified_cached_and_rebuilt_when_damaged(
    clean, tmp_path, monkeypatch
):
    monkeypatch.setenv("ZOOBENCH_CACHE", str(tmp_path))
    images, labels = clean
    order = np.argsort(labels, kind="stable")  # a class-folder copy's test split is class-sorted
    images, labels = images[order], labels[order]
    config = {"corruptions": ["jpeg", "gaussian_noise"], "severities": [2, 4], "images": 20}
    split = corrupted_split(images, labels, config, seed=0)
    assert len(split) == 20 and np.bincount(split.labels, minlength=10).tolist() == [2] * 10
    assert set(split.images) == {(n, s) for n in ("jpeg", "gaussian_noise") for s in (2, 4)}
    assert np.array_equal(split.images["jpeg", 4], corrupt(images[split.indices], "jpeg", 4, 0))
    files = list((tmp_path / "corruptions").glob("*.npz"))
    assert len(files) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the cache was not used")

    with monkeypatch.context() as m:
        m.setattr(corruptions, "corrupt", refuse)
        again = corrupted_split(images, labels, config, seed=0)
    for key, array in split.images.items():
        assert np.array_equal(again.images[key], array)
    files[0].write_bytes(b"not a zip file")  # a damaged cache is rebuilt, not trusted
    rebuilt = corrupted_split(images, labels, config, seed=0)
    assert all(np.array_equal(rebuilt.images[k], a) for k, a in split.images.items())
    assert corrupted_split(images, labels, config, seed=1).key != split.key


# ---- AdaBN and FGSM on small hand-made models ------------------------------------------------------
def _np(variable) -> np.ndarray:
    from keras import ops

    return ops.convert_to_numpy(variable)


def _gray_images(brightness: np.ndarray, seed: int = 0) -> np.ndarray:
    """Gray 8x8 pictures of the given mean brightness with a little texture."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-10, 11, size=(len(brightness), 8, 8, 1))
    return (
        np.clip(brightness[:, None, None, None] + noise, 0, 255).repeat(3, axis=-1).astype(np.uint8)
    )


@pytest.fixture(scope="module")
def brightness_task():
    """Class 1 = brighter than the training pictures' average: a BN model that learned the source
    statistics (by AdaBN on the source itself), a dropout layer, and a fixed linear head."""
    keras = pytest.importorskip("keras")
    from benchmark.run.robustness import adapt_bn

    rng = np.random.default_rng(0)
    source = _gray_images(rng.uniform(40, 160, size=200))
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Dropout(0.5, seed=1)(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    head = keras.layers.Dense(2, activation="softmax", name="head")
    model = keras.Model(inputs, head(x))
    head.set_weights([np.array([[-4.0, 4.0]] * 3, np.float32), np.zeros(2, np.float32)])
    adapt_bn(model, source)
    brightness = rng.uniform(40, 160, size=200)
    test = _gray_images(brightness, seed=1)
    labels = (test.mean(axis=(1, 2, 3)) > source.mean()).astype(np.int64)
    return model, source, test, labels


def test_adabn_changes_only_the_bn_statistics(brightness_task):
    from benchmark.run.robustness import adabn_copy, adapt_bn, bn_layers

    model, source, test, _ = brightness_task
    before = [_np(w) for w in model.weights]
    shifted = corrupt(test, "brightness", 5, 0)
    adapted = adabn_copy(model, shifted, batch_size=len(shifted))
    assert all(np.array_equal(a, _np(w)) for a, w in zip(before, model.weights, strict=True))
    moving = 0
    for w, a in zip(adapted.weights, before, strict=True):
        if "moving_" in w.path:
            moving += 1
            assert not np.allclose(_np(w), a), w.path
        else:
            assert _np(w).tobytes() == a.tobytes(), f"{w.path} changed"
    assert moving == 2
    # The statistics are those of the unlabeled target images, dropout off (inference mode):
    bn = bn_layers(adapted)[0]
    pixels = shifted.astype(np.float64).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(_np(bn.moving_mean), pixels.mean(0), rtol=1e-4)
    np.testing.assert_allclose(_np(bn.moving_variance), pixels.var(0), rtol=1e-3)
    # Over several batches the mean is still the count-weighted mean of every image (7 + 7 + 6).
    adapt_bn(adapted, shifted[:20], batch_size=7)
    np.testing.assert_allclose(
        _np(bn.moving_mean), pixels.reshape(200, -1, 3)[:20].reshape(-1, 3).mean(0), rtol=1e-4
    )
    assert bn.momentum == 0.99 and "call" not in vars(bn)  # the layer is left as it was


def test_adabn_recovers_accuracy_under_a_strong_brightness_shift(brightness_task):
    from benchmark.metrics import accuracy
    from benchmark.run.robustness import adabn_probs, bn_state, predict

    model, _, test, labels = brightness_task
    state = bn_state(model)
    assert accuracy(predict(model, test), labels) > 0.95
    shifted = corrupt(test, "brightness", 5, 0)
    plain = accuracy(predict(model, shifted), labels)
    adapted = accuracy(adabn_probs(model, shifted), labels)
    assert plain < 0.7 and adapted > 0.9, (plain, adapted)
    assert all(
        np.array_equal(a, b) and np.array_equal(c, d)  # the model's own stats are back
        for (a, c), (b, d) in zip(state, bn_state(model), strict=True)
    )


def test_a_model_without_bn_is_not_changed_by_adabn():
    keras = pytest.importorskip("keras")
    from benchmark.run.robustness import adabn_probs, adapt_bn, predict

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(
        inputs,
        keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs)),
    )
    images = _gray_images(np.linspace(40, 160, 10))
    before = [_np(w) for w in model.weights]
    assert adapt_bn(model, images) == 0
    np.testing.assert_array_equal(adabn_probs(model, images), predict(model, images))
    assert all(np.array_equal(a, _np(w)) for a, w in zip(before, model.weights, strict=True))


def test_fgsm_accuracy_is_at_most_the_clean_one_and_equal_at_epsilon_zero(brightness_task):
    from benchmark.metrics import accuracy
    from benchmark.run.robustness import fgsm_probs, predict

    model, _, test, labels = brightness_task
    clean = predict(model, test)
    np.testing.assert_allclose(fgsm_probs(model, test, labels, 0.0), clean, atol=1e-6)
    accuracies = [accuracy(fgsm_probs(model, test, labels, eps), labels) for eps in (2.0, 16.0)]
    assert accuracy(clean, labels) >= accuracies[0] >= accuracies[1]
    assert accuracies[1] < accuracy(clean, labels)


# ---- the [robustness] table ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"enabled": "yes"}, r"robustness\.enabled: must be true or false, got 'yes'$"),
        (
            {"corruptions": ["fog"]},
            r"robustness\.corruptions: must be a non-empty list .*got \['fog'\]$",
        ),
        ({"corruptions": []}, r"robustness\.corruptions: must be a non-empty list without repeats"),
        (
            {"severities": [1, 1]},
            r"robustness\.severities: must be .* of 1, 2, 3, 4, 5, got \[1, 1\]$",
        ),
        ({"severities": [6]}, r"robustness\.severities: must be .*got \[6\]$"),
        ({"images": 0}, r"robustness\.images: must be a whole number >= 1, got 0$"),
        ({"fgsm_images": -1}, r"robustness\.fgsm_images: must be a whole number >= 0, got -1$"),
        ({"fgsm_epsilon": -2}, r"robustness\.fgsm_epsilon: must be a number >= 0, got -2$"),
        ({"adabn": 1}, r"robustness\.adabn: must be true or false, got 1$"),
        ({"tent": True}, "robustness.tent: unknown key"),
    ],
)
def test_bad_robustness_tables_are_one_line_errors(table, match):
    from benchmark.config.profiles import load_profile, parse_profile

    raw = copy.deepcopy(load_profile("smoke", check_architectures=False).raw)
    raw["robustness"] = table
    with pytest.raises(ZoobenchError, match=match) as info:
        parse_profile(raw, "p.toml", check_architectures=False)
    assert "\n" not in str(info.value) and "p.toml" in str(info.value)


def test_robustness_is_off_unless_a_profile_asks_and_smoke_keeps_it_small():
    from benchmark.config.profiles import load_profile, parse_profile

    smoke = load_profile("smoke", check_architectures=False)
    assert smoke.robustness_enabled
    config = smoke.robustness_config
    assert config["corruptions"] == list(CORRUPTIONS) and len(config["severities"]) == 1
    assert config["images"] <= 50 and config["fgsm_images"] <= 50 and "enabled" not in config
    raw = {k: v for k, v in smoke.raw.items() if k != "robustness"}
    assert not parse_profile(raw, "p", check_architectures=False).robustness_enabled
