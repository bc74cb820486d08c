"""Generated corruptions, AdaBN, FGSM accuracy and the [robustness] table (benchmark.run.robustness).

The smoke run's three leaderboard columns are checked in tests/test_runner.py, on its run.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import real_cifar

from benchmark.config.schema import CIFAR10_C, SEVERITIES
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


# CIFAR-10-C's own parameters do not move these further from the image at every step: glass blur
# swaps once at severities 1-3 and twice at 4-5 with sigma 0.05, 0.25, 0.4, 0.25, 0.4; frost's
# image weight falls while its crop weight rises unevenly; elastic_transform trades the affine
# warp (largest at 1) for the displacement field (largest at 4-5).
NOT_MONOTONE = {"glass_blur", "frost", "elastic_transform"}


def test_every_corruption_grows_with_severity(clean):
    images, _ = clean
    for name in sorted(set(CORRUPTIONS) - NOT_MONOTONE):
        distance = [
            np.abs(corrupt(images, name, s, 0).astype(float) - images).mean() for s in SEVERITIES
        ]
        assert all(a < b for a, b in zip(distance, distance[1:], strict=False)), (name, distance)


def test_the_cifar10_c_set_is_all_fifteen_and_the_new_ones_do_what_the_paper_says(clean):
    from benchmark.config.schema import ROBUSTNESS_DEFAULTS

    assert len(CIFAR10_C) == 15 and set(CIFAR10_C) <= set(CORRUPTIONS)
    assert ROBUSTNESS_DEFAULTS["corruptions"] == list(CIFAR10_C)
    images, _ = clean
    gray = np.full((40, 32, 32, 3), 128, np.uint8)
    # impulse noise: about `amount` of the values set to 0 or 255, half each
    hit = corrupt(gray, "impulse_noise", 5, 0)
    assert abs((hit == 0).mean() - 0.035) < 0.005 and abs((hit == 255).mean() - 0.035) < 0.005
    # defocus: a normalised disk; a flat image stays flat
    assert abs(corruptions.disk_kernel(1.5, 0.1).sum() - 1) < 1e-5
    assert np.array_equal(corrupt(gray, "defocus_blur", 5, 0), gray)
    # frost at severities 1-2 adds frost to the whole image (weight 1): nothing gets darker
    for severity in (1, 2):
        assert (corrupt(images, "frost", severity, 0) >= images).all()
    # elastic at severity 1 has no displacement field: a pure affine warp keeps a flat image flat
    assert np.array_equal(corrupt(gray, "elastic_transform", 1, 0), gray)
    # fog: the plasma map spans [0, 1]; a flat image gets brighter and darker patches
    rng = np.random.default_rng(0)
    plasma = corruptions.plasma_fractal(32, 2.0, rng)
    assert plasma.shape == (32, 32) and plasma.min() == 0 and plasma.max() == 1
    assert corrupt(gray, "fog", 5, 0).std() > 10
    # snow only lightens at severity 1 (keep 0.95 of the image, the rest brighter, flakes added)
    assert (corrupt(images, "snow", 1, 0).astype(int) >= images.astype(int) - 1).all()
    # every one of them keeps a larger picture's shape (the pixel sizes scale with the side)
    big = np.repeat(np.repeat(images[:4], 2, axis=1), 2, axis=2)
    for name in CORRUPTIONS:
        assert corrupt(big, name, 3, 0).shape == big.shape, name


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("spatter", 1), "unknown corruption 'spatter'"),
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
    adapted = adabn_copy(model, shifted, least=len(shifted))
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
    # Over several batches (7 + 7 + 6 images, each normalised by its own statistics) the mean and
    # the variance are still those of every image together, not an average of batch variances.
    adapt_bn(adapted, shifted[:20], least=6)
    first = pixels.reshape(200, -1, 3)[:20].reshape(-1, 3)
    np.testing.assert_allclose(_np(bn.moving_mean), first.mean(0), rtol=1e-4)
    np.testing.assert_allclose(_np(bn.moving_variance), first.var(0), rtol=1e-3)
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
            {"corruptions": ["spatter"]},
            r"robustness\.corruptions: must be a non-empty list .*got \['spatter'\]$",
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
        ({"tent": 1}, r"robustness\.tent: must be true or false, got 1$"),
        ({"tents": True}, "robustness.tents: unknown key"),
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
    assert config["corruptions"] == list(CIFAR10_C) and len(config["severities"]) == 1
    assert config["images"] <= 50 and config["fgsm_images"] <= 50 and "enabled" not in config
    raw = {k: v for k, v in smoke.raw.items() if k != "robustness"}
    assert not parse_profile(raw, "p", check_architectures=False).robustness_enabled


# ---- the published protocol: AdaBN on clean images, TENT --------------------------------------------
def _stripes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16x16 pictures of noisy two-colour stripes; the class is the orientation (4 of them)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    yy, xx = np.mgrid[0:16, 0:16].astype(np.float32)
    angle = (labels * np.pi / 4 + rng.normal(0, 0.1, n))[:, None, None]
    freq = rng.uniform(0.5, 1.2, n)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    t = (np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)[..., None] + 1) / 2
    fg, bg = rng.uniform(0, 255, (n, 1, 1, 3)), rng.uniform(0, 255, (n, 1, 1, 3))
    images = t * fg + (1 - t) * bg + rng.normal(0, 20, (n, 16, 16, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def test_adabn_on_clean_images_moves_a_trained_bn_scratch_member_by_at_most_a_point():
    """AdaBN from the whole clean held-out set (300 images, batches of at least 200) must leave a
    trained batch-norm member where it was: its own statistics already describe clean images.

    The member is the zoo's seed_cnn (batch norm, no dropout) trained to convergence on a task
    with enough data not to overfit: BN momentum 0.9 and a cosine schedule to zero, so its moving
    statistics settle in 150 steps as Keras's 0.99 does in a real run's thousands. (What else
    moves it is real, not an estimation artifact, and AdaBN rightly corrects it: dropout before a
    BN layer, or a member overfit to a few hundred pictures, gains 2-5 points here.)"""
    keras = pytest.importorskip("keras")
    import keras_tuner

    from benchmark.metrics import accuracy
    from benchmark.run.robustness import ADAPT_MIN, adabn_probs, adapt_batches, bn_layers, predict
    from zoo.registry import build

    keras.utils.set_random_seed(0)
    train_x, train_y = _stripes(1500, 0)
    held_x, held_y = _stripes(300, 1)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("width", 0.5)
    hp.Fixed("dropout", 0.0)
    model = build("seed_cnn", hp, input_shape=(16, 16, 3), num_classes=4)
    layers = bn_layers(model)
    assert len(layers) == 6
    for bn in layers:
        bn.momentum = 0.9
    steps = 4 * 38
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, steps)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy")
    model.fit(train_x.astype(np.float32), train_y, batch_size=40, epochs=4, verbose=0)
    assert [p.stop - p.start for p in adapt_batches(len(held_x))] == [300] >= [ADAPT_MIN]
    plain = accuracy(predict(model, held_x), held_y)
    adapted = accuracy(adabn_probs(model, held_x), held_y)
    assert plain > 0.9, plain  # it learned the task
    assert abs(adapted - plain) <= 0.01, (plain, adapted)


def _tent_model():
    """The brightness task's shape with a conv before BN, so its scale and shift steer the output."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _entropy(probs: np.ndarray) -> float:
    p = np.clip(probs, 1e-12, 1)
    return float(-(p * np.log(p)).sum(1).mean())


def test_tent_predicts_then_steps_on_the_bn_affine_parameters_and_resets():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TENT runs on the TensorFlow backend")
    from benchmark.run.robustness import adabn_probs, tent_probs

    model = _tent_model()
    images = _gray_images(np.random.default_rng(0).uniform(40, 200, size=400), seed=2)
    before = [_np(w).copy() for w in model.weights]
    batches = [images[:200], images[200:]]
    # "norm": each batch normalised by its own statistics, no step
    norm = np.concatenate([adabn_probs(model, b, least=len(b)) for b in batches])
    np.testing.assert_allclose(tent_probs(model, images, learning_rate=0.0), norm, atol=1e-5)
    tented = tent_probs(model, images, least=200, learning_rate=0.05)
    # the first batch is predicted before any step; the second after one step down the entropy
    np.testing.assert_allclose(tented[:200], norm[:200], atol=1e-5)
    assert _entropy(tented[200:]) < _entropy(norm[200:]) - 1e-3
    # everything is put back: the next corruption starts from the member as trained
    assert all(np.array_equal(a, _np(w)) for a, w in zip(before, model.weights, strict=True))
    np.testing.assert_allclose(
        tent_probs(model, images, least=200, learning_rate=0.05), tented, atol=1e-5
    )


def test_tent_refuses_a_backend_it_does_not_support_in_one_line(monkeypatch):
    keras = pytest.importorskip("keras")
    from benchmark.run.robustness import check_tent_backend

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ZoobenchError, match="tent = true needs the TensorFlow backend") as info:
        check_tent_backend()
    assert "\n" not in str(info.value) and "jax" in str(info.value)


def test_every_figure_carries_a_wilson_interval_and_narrow_enough_ones_are_not_indicative():
    from benchmark.metrics import wilson_half_width, wilson_interval
    from benchmark.run.robustness import add_intervals, with_interval

    # the shipped sizes: 1,100 images give +-3 points at worst, 400 give +-5, 50 do not
    assert wilson_half_width(1100) <= 0.03 < wilson_half_width(1000)
    assert wilson_half_width(400) <= 0.05 < wilson_half_width(350)
    low, high = wilson_interval(0.0, 50)
    assert low == 0 and high > 0.05  # a width even at 0%
    record = {
        "summary": {
            "images": 50,
            "clean_accuracy": 0.9,
            "corruption_accuracy": 0.5,
            "fgsm_accuracy": 0.4,
            "fgsm_images": 1100,
        },
        "table": [{"corruption": "fog", "severity": 1, "accuracy": 0.5, "accuracy_adabn": 0.6}],
    }
    add_intervals(record)
    summary, row = record["summary"], record["table"][0]
    assert (summary["corruption_accuracy_low"], summary["corruption_accuracy_high"]) == (
        wilson_interval(0.5, 50)
    )
    assert row["accuracy_adabn_low"] < 0.6 < row["accuracy_adabn_high"]
    assert with_interval(summary, "corruption_accuracy").startswith("~50.00% [")
    assert with_interval(summary, "fgsm_accuracy").startswith("40.00% [")  # 1,100 images: +-2.9


def test_the_robustness_profile_asks_for_cifar10_c_at_every_severity_with_intervals_of_3_points():
    from benchmark.config.profiles import load_profile
    from benchmark.metrics import wilson_half_width

    profile = load_profile("robustness", check_architectures=False)
    config = profile.robustness_config
    assert config["corruptions"] == list(CIFAR10_C) and config["severities"] == [1, 2, 3, 4, 5]
    assert config["adabn"] and config["tent"]
    assert wilson_half_width(config["images"]) <= 0.03
    assert wilson_half_width(config["fgsm_images"]) <= 0.03
    assert profile.raw["data"]["test_size"] >= config["images"]  # a sample, not every image
    quick = load_profile("cpu-quick", check_architectures=False).robustness_config
    assert wilson_half_width(quick["images"]) <= 0.05 and not quick["tent"]


def test_the_report_tables_every_corruption_by_severity_with_intervals(tmp_path):
    """RobustBench's layout: one row per corruption, one column per severity, the means, every
    cell "accuracy [95% interval]"; one table per adaptation measured."""
    from fake_run import make_fake_run

    from benchmark.metrics import wilson_interval
    from benchmark.run.robustness import add_intervals
    from reports.leaderboard import build_leaderboard
    from reports.robustness_figure import robustness_tables
    from reports.rundata import load_run

    store = make_fake_run(tmp_path / "run", accuracies=(0.8, 0.7))
    table = [
        {
            "corruption": name,
            "severity": s,
            "accuracy": 0.9 - 0.1 * s,
            "accuracy_adabn": 0.92 - 0.05 * s,
        }
        for name in CIFAR10_C
        for s in range(1, 6)
    ]
    summary = {"images": 1100, "clean_accuracy": 0.93, "clean_accuracy_adabn": 0.925}
    record = {"summary": summary, "table": table, "config": {"adabn": True}}
    add_intervals(record)
    for entry in store.members():
        store.write_robustness(entry, record)
    run = load_run(store)
    tables = robustness_tables(run, build_leaderboard(run))
    assert [t.title for t in tables] == [
        "Accuracy by corruption and severity, no adaptation",
        "Accuracy by corruption and severity, with AdaBN",
    ]
    frame = tables[0].frame
    assert list(frame["corruption"]) == [*CIFAR10_C, "mean"]
    assert list(frame.columns) == ["corruption", *(f"severity {s}" for s in range(1, 6)), "mean"]
    low, high = wilson_interval(0.4, 1100)
    assert frame.iloc[0]["severity 5"] == f"40.00% [{100 * low:.1f}, {100 * high:.1f}]"
    assert frame.iloc[-1]["mean"].startswith("60.00% [")  # the mean over all 75 cells
    assert not any("~" in cell for cell in frame.iloc[:, 1:].to_numpy().ravel())  # all <= +-3
