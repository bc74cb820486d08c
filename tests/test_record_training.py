"""The speed records' method as zoobench parts: whitening, weight averaging, test-time views,
alternating flips, the triangular schedule, recipes and precision (benchmark.config.recipes,
zoo.record_layers)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import real_cifar

from benchmark.config.profiles import parse_profile
from benchmark.errors import ZoobenchError

TINY = {"dataset": "cifar10", "train_size": 200, "val_size": 100, "test_size": 100}


@pytest.fixture(scope="module")
def tiny_data() -> SimpleNamespace:
    """Real pictures from the in-repo copy: 400 to train on, 100 to validate, 100 to test."""
    x_train, y_train = real_cifar("train", 40)
    x_val, y_val = real_cifar("train", 10, offset=40)
    x_test, y_test = real_cifar("test", 10)
    return SimpleNamespace(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test
    )


def profile(members, training=None, **top):
    raw = {"name": "t", "data": dict(TINY), "members": members, **top}
    if training is not None:
        raw["training"] = training
    return parse_profile(raw, "t.toml")


# ---- the whitening layer ------------------------------------------------------------------------


def test_whitening_decorrelates_the_patches_of_real_images(tiny_data):
    import keras

    from zoo.record_layers import PatchWhitening

    images = tiny_data.x_train[:300].astype(np.float32) / 255.0
    layer = PatchWhitening(2)
    layer.build(images.shape)
    raw = np.lib.stride_tricks.sliding_window_view(images, (2, 2), axis=(1, 2))
    raw = raw.transpose(0, 1, 2, 4, 5, 3).reshape(-1, 12)
    before = np.corrcoef(raw, rowvar=False)
    assert np.abs(before[~np.eye(12, dtype=bool)]).max() > 0.8  # neighbouring pixels: correlated

    layer.adapt(images)
    out = keras.ops.convert_to_numpy(layer(images)).reshape(-1, 24)
    assert float(layer.adapted.numpy()) == 1.0
    first = out[:, :12]  # the second half are the negatives of the first
    np.testing.assert_allclose(out[:, 12:], -first, atol=1e-5)
    assert np.abs(first.mean(axis=0)).max() < 1e-3  # the mean patch maps to zero
    cov = np.cov(first, rowvar=False)
    off = cov[~np.eye(12, dtype=bool)]
    assert np.abs(off).max() < 1e-2, np.abs(off).max()
    assert np.diag(cov)[:6].min() > 0.9  # the strong directions come out with unit variance


def test_fit_adapts_the_whitening_layer_from_the_training_images(tiny_data):
    import zoo
    from benchmark.train.training import adapt_data_layers

    model = zoo.build("fastnet", hp=_hp(width=0.25))
    layer = model.get_layer("whiten")
    before = np.array(layer.kernel.numpy())
    assert adapt_data_layers(model, tiny_data.x_train, seed=0) == 1
    assert not np.allclose(before, layer.kernel.numpy())
    assert float(layer.adapted.numpy()) == 1.0
    assert not layer.kernel.trainable and layer.bias.trainable


# ---- weight averaging -----------------------------------------------------------------------------


def test_the_averaged_weights_are_the_ones_kept_and_saved(tiny_data, tmp_path):
    import keras

    import zoo
    from benchmark.config.schema import resolve_training
    from benchmark.train.training import fit

    class LastRaw(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # before fit swaps the averages in
            self.raw = [np.array(v.numpy()) for v in self.model.trainable_variables]

    keras.utils.set_random_seed(0)
    model = zoo.build("fastnet", hp=_hp(width=0.25))
    options = resolve_training(
        {
            "epochs": 2,
            "batch_size": 50,
            "optimizer": "sgd",
            "learning_rate": 0.05,
            "ema": 0.9,
            "early_stopping_patience": 0,
        }
    )
    raw = LastRaw()
    result = fit(
        model,
        tiny_data.x_train,
        tiny_data.y_train,
        tiny_data.x_val,
        tiny_data.y_val,
        options,
        num_classes=10,
        callbacks=[raw],
    )
    averages = result.model.optimizer._model_variables_moving_average
    kept = [np.array(v.numpy()) for v in result.model.trainable_variables]
    for value, average in zip(kept, averages, strict=True):
        np.testing.assert_allclose(value, keras.ops.convert_to_numpy(average), atol=1e-6)
    assert any(not np.allclose(k, r) for k, r in zip(kept, raw.raw, strict=True))
    path = tmp_path / "m.keras"
    result.model.save(path)
    again = keras.models.load_model(path)
    for value, loaded in zip(kept, again.trainable_variables, strict=True):
        np.testing.assert_array_equal(value, loaded.numpy())


def test_a_short_run_averages_over_its_last_steps_only():
    """The average spans at most EMA_HORIZON_SHARE of a run: a 156-step run does not average in
    its first, fast-moving steps (0.99 there gave 20% validation accuracy, 62% without an average:
    docs/results/ema-short-runs.json), while the recipes at their full length keep their own."""
    from benchmark.train.training import EMA_HORIZON_SHARE, ema_momentum

    short = ema_momentum({"ema": 0.99, "epochs": 2}, 78)
    assert short < 0.99 and 1 / (1 - short) <= EMA_HORIZON_SHARE * 156 + 1e-9
    assert ema_momentum({"ema": 0.99, "epochs": 4}, 352) == 0.99  # fastnet's recipe on 45k
    assert ema_momentum({"ema": 0.95, "epochs": 10}, 44) == 0.95  # airbench94's at batch 1,024
    assert ema_momentum({"ema": 0.9, "epochs": 1}, 3) == 0.0  # three steps: the last weights


# ---- test-time views ------------------------------------------------------------------------------


def _views_by_hand(images: np.ndarray, count: int) -> list[np.ndarray]:
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    h, w = images.shape[1:3]
    shifted = {0: images, -1: padded[:, :h, :w], 1: padded[:, 2 : 2 + h, 2 : 2 + w]}
    views = []
    for shift in (0, -1, 1):
        views += [shifted[shift], shifted[shift][:, :, ::-1]]
    return views[:count]


@pytest.mark.parametrize("tta, count", [("flip", 2), ("flip-translate", 6), (3, 3)])
def test_tta_probabilities_are_the_mean_of_the_views(tiny_data, tta, count):
    import zoo
    from zoo.record_layers import with_test_time_views

    model = zoo.build("fastnet", hp=_hp(width=0.25))
    images = tiny_data.x_test[:16].astype(np.float32)
    wrapped = with_test_time_views(model, tta)
    expected = np.mean([model.predict(v, verbose=0) for v in _views_by_hand(images, count)], axis=0)
    np.testing.assert_allclose(wrapped.predict(images, verbose=0), expected, atol=1e-5)
    assert with_test_time_views(model, "none") is model


def test_bad_tta_values_are_refused_with_the_key():
    from benchmark.config.schema import resolve_training

    for bad in (True, 0, 7, "mirror"):
        with pytest.raises(
            ZoobenchError,
            match=r"training\.tta: must be one of none, flip, flip-translate or a whole number in \[1, 6\], got ",
        ):
            resolve_training({"tta": bad})


# ---- alternating flips and the schedule ------------------------------------------------------------


def test_alternating_flips_mirror_each_image_in_every_other_epoch():
    from benchmark.data.augment import make_dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(40, 8, 8, 3), dtype=np.uint8)
    y = np.arange(40) % 10
    ds = make_dataset(
        x,
        y,
        num_classes=10,
        batch_size=40,
        policy=[{"name": "alternating_flip"}],
        shuffle=False,
        epochs=3,
    )
    epochs = [np.asarray(images) for images, _ in ds]
    assert len(epochs) == 3
    mirrored = [np.all(e == x[:, :, ::-1], axis=(1, 2, 3)) for e in epochs]
    same = [np.all(e == x, axis=(1, 2, 3)) for e in epochs]
    for m, s in zip(mirrored, same, strict=True):
        assert np.all(m | s)  # every image is itself or its mirror
    assert 10 <= mirrored[0].sum() <= 30  # a random half in the first epoch
    np.testing.assert_array_equal(mirrored[1], ~mirrored[0])  # the others in the next
    np.testing.assert_array_equal(mirrored[2], mirrored[0])


def test_shuffled_alternating_flips_show_every_image_once_an_epoch_in_turns():
    from benchmark.data.augment import make_dataset

    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, size=(40, 6, 6, 3), dtype=np.uint8)
    ds = make_dataset(
        x,
        np.zeros(40, dtype=np.int64),
        num_classes=10,
        batch_size=16,
        policy=[{"name": "alternating_flip"}],
        shuffle=True,
        seed=3,
        epochs=4,
    )
    seen = np.concatenate([np.asarray(images) for images, _ in ds])
    assert len(seen) == 160
    plain = {x[j].tobytes(): j for j in range(40)}
    mirror = {x[j, :, ::-1].astype(np.float32).tobytes(): j for j in range(40)}
    flipped = np.zeros((4, 40), dtype=bool)
    for k, image in enumerate(seen):
        key = image.astype(np.uint8).tobytes()
        epoch = k // 40
        if key in plain:
            j = plain[key]
        else:
            j = mirror[image.tobytes()]
            flipped[epoch, j] = True
    for epoch in range(4):  # each image once an epoch, mirrored in every other epoch
        order = [
            plain.get(im.astype(np.uint8).tobytes(), mirror.get(im.tobytes()))
            for im in seen[epoch * 40 : (epoch + 1) * 40]
        ]
        assert sorted(order) == list(range(40))
    np.testing.assert_array_equal(flipped[1], ~flipped[0])
    np.testing.assert_array_equal(flipped[2], flipped[0])
    orders = [seen[e * 40 : (e + 1) * 40] for e in range(2)]
    assert not np.array_equal(orders[0], orders[1])  # reshuffled


def test_the_triangle_schedule_rises_to_its_peak_and_falls_to_seven_percent():
    import keras

    from benchmark.train.training import Triangle

    schedule = Triangle(1.5, total_steps=100)
    at = {s: float(keras.ops.convert_to_numpy(schedule(s))) for s in (0, 23, 100, 500)}
    assert at[0] == pytest.approx(0.3)
    assert at[23] == pytest.approx(1.5)
    assert at[100] == pytest.approx(0.105)
    assert at[500] == pytest.approx(0.105)
    again = Triangle.from_config(schedule.get_config())
    assert (
        float(keras.ops.convert_to_numpy(again(50)))
        == pytest.approx(at_50 := float(keras.ops.convert_to_numpy(schedule(50))))
        and at_50 < 1.5
    )


# ---- recipes in profiles ---------------------------------------------------------------------------


def test_an_architecture_trains_by_its_recipe_unless_the_member_says_otherwise():
    p = profile(
        [
            {"architecture": "airbench94"},
            {"architecture": "airbench94", "name": "short", "training": {"epochs": 3}},
            {"architecture": "airbench94", "name": "plain", "training": {"recipe": "none"}},
            {"architecture": "seed_cnn", "name": "seed"},
        ],
        training={"epochs": 7, "optimizer": "adam"},
    )
    record, short, plain, seed = p.members
    assert record.training["recipe"] == "airbench94"
    assert record.training["schedule"] == "triangle" and record.training["batch_size"] == 1024
    assert record.training["epochs"] == 10 and record.training["tta"] == "flip-translate"
    assert [s["name"] for s in record.augment] == ["alternating_flip", "pad_crop"]
    assert short.training["epochs"] == 3 and short.training["optimizer"] == "sgd"
    assert plain.training["recipe"] is None and plain.training["optimizer"] == "adam"
    assert plain.training["epochs"] == 7 and plain.augment == []
    assert seed.training["recipe"] is None and seed.training["epochs"] == 7


@pytest.mark.parametrize(
    "member, message",
    [
        ({"training": {"recipe": "airbench99"}}, r"members\[0\]\.training\.recipe: unknown recipe"),
        ({"training": {"ema": 0.9, "early_stopping_patience": 3}}, r"\.ema: weight averaging"),
        (
            {"training": {"precision": "fp8"}},
            r"\.precision: must be one of auto, float32, mixed_bfloat16, mixed_float16, got 'fp8'$",
        ),
        (
            {"training": {"epochs": True}},
            r"\.training\.epochs: must be a whole number >= 1, got True$",
        ),
        ({"seeds": True}, r"members\[0\]\.seeds: must be a whole number >= 1, got True$"),
        ({"bagging": True}, r"members\[0\]\.bagging: must be a whole number >= 0, got True$"),
    ],
)
def test_bad_record_options_are_refused_with_one_line(member, message):
    with pytest.raises(ZoobenchError, match=message) as caught:
        profile([{"architecture": "seed_cnn", **member}])
    assert "\n" not in str(caught.value)


def test_a_bool_is_no_size_and_tta_is_not_for_feature_extraction():
    with pytest.raises(
        ZoobenchError, match=r"data\.train_size: must be a whole number >= 1, got True$"
    ):
        parse_profile(
            {"name": "t", "data": {"train_size": True}, "members": [{"architecture": "seed_cnn"}]},
            "t.toml",
        )
    with pytest.raises(ZoobenchError, match=r"training\.tta: test-time views .* not feature extr"):
        profile(
            [
                {
                    "architecture": "efficientnet_lite0",
                    "strategy": "feature-extraction",
                    "training": {"tta": "flip"},
                }
            ]
        )
    # fine-tuning trains the whole model: its stored model can average views (lite-finetune does)
    tuned = {"architecture": "efficientnet_lite0", "strategy": "fine-tuning"}
    assert profile([{**tuned, "training": {"tta": "flip"}}]).members[0].training["tta"] == "flip"


def test_members_stored_before_the_record_options_keep_their_ids():
    from benchmark.config.schema import DEFAULT_TRAINING, resolve_training, training_identity

    plain = training_identity(resolve_training({"epochs": 3}))
    assert set(plain) == set(DEFAULT_TRAINING) - {"ema", "tta", "precision", "recipe"}
    assert training_identity(resolve_training({"ema": 0.9, "early_stopping_patience": 0}))["ema"]


# ---- precision ---------------------------------------------------------------------------------------


def test_float16_is_refused_on_a_cpu_and_auto_means_float32_here():
    from benchmark.train.training import resolve_precision

    with pytest.raises(ZoobenchError, match="mixed_float16' needs a GPU"):
        resolve_precision("mixed_float16")
    assert resolve_precision("auto") == "float32"


def test_a_bfloat16_member_round_trips_through_keras_files(tmp_path, tiny_data):
    import keras

    import zoo
    from benchmark.train.training import precision_scope

    with precision_scope("mixed_bfloat16") as policy:
        model = zoo.build("fastnet", hp=_hp(width=0.25))
    assert policy == "mixed_bfloat16" and keras.config.dtype_policy().name == "float32"
    assert model.get_layer("group1_a_conv").dtype_policy.name == "mixed_bfloat16"
    probs = model.predict(tiny_data.x_test[:8].astype(np.float32), verbose=0)
    assert probs.dtype == np.float32  # the softmax stays in float32
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert again.get_layer("group1_a_conv").dtype_policy.name == "mixed_bfloat16"
    np.testing.assert_allclose(
        again.predict(tiny_data.x_test[:8].astype(np.float32), verbose=0), probs, atol=1e-6
    )
    # ONNX has no bfloat16 path for its ops: the member exports as a float32 copy of itself
    from benchmark import runtimes

    runtimes.write_artifact(again, runtimes.format_spec("onnx"), tmp_path / "m.onnx")
    assert again.get_layer("group1_a_conv").dtype_policy.name == "mixed_bfloat16"  # untouched
    got = runtimes.run_onnx(tmp_path / "m.onnx", tiny_data.x_test[:8].astype(np.float32))
    np.testing.assert_allclose(got, probs, atol=2e-2)


# ---- the zoo --------------------------------------------------------------------------------------


def test_zoo_list_shows_the_records_networks(capsys):
    from benchmark.cli.app import main

    assert main(["zoo", "list", "--family", "airbench"]) == 0
    out = capsys.readouterr().out
    for name in ("airbench94", "airbench95", "airbench96", "fastnet"):
        assert f"| {name}" in out, out


def _hp(**values):
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for key, value in values.items():
        hp.Fixed(key, value)
    return hp


# ---- a member trained by its recipe, end to end ----------------------------------------------------


def test_a_recipe_member_stores_exports_and_predicts_what_it_scored(tmp_path, tiny_jpg):
    """fastnet by its recipe in a run: the stored model holds the whitening, the averaged weights
    and the views, so reloading it and its ONNX export both give the stored test probabilities."""
    import keras
    import onnxruntime as ort

    from benchmark.cli.app import main
    from benchmark.run.runner import Runner
    from ensembles.deploy import FORMATS

    raw = {
        "name": "recipe",
        "data": {"dataset": "cifar10", "train_size": 100, "val_size": 50, "test_size": 50},
        "members": [
            {
                "architecture": "fastnet",
                "hp": {"width": 0.25},
                "training": {"epochs": 2, "batch_size": 25, "ema": 0.5, "tta": "flip"},
            }
        ],
        "ensembles": {"enabled": False},
        "report": {"enabled": False},
    }
    runner = Runner(parse_profile(raw, "recipe.toml"), tmp_path / "run", data_dir=str(tiny_jpg))
    runner.run()
    (member,) = runner.store.members()
    assert member.ok, member.metrics
    training = member.config["training"]
    assert training["recipe"] == "fastnet" and training["schedule"] == "triangle"
    assert training["ema"] == 0.5 and training["tta"] == "flip" and training["epochs"] == 2
    assert [s["name"] for s in member.config["augment"]] == ["alternating_flip", "pad_crop"]
    assert member.metrics["dtype_policy"] == "float32"
    # the leaderboard's id ("members/ID") finds the member too; a path out of the run does not
    assert runner.store.find(member.key).id == runner.store.find(member.id).id == member.id
    with pytest.raises(ZoobenchError, match="leaves the run folder"):
        runner.store.find("members/../x")

    x_test = runner.store.load_array("x_test").astype(np.float32)
    stored = member.probs("test", calibrated=False)  # the member's own model, before calibration
    model = keras.saving.load_model(member.model_path, safe_mode=True)
    assert [layer.name for layer in model.layers if layer.name.startswith("view_")] == [
        "view_0",
        "view_1",
    ]
    inner = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert float(inner.get_layer("whiten").adapted.numpy()) == 1.0
    np.testing.assert_allclose(model.predict(x_test, verbose=0), stored, atol=1e-5)

    out = tmp_path / "fastnet.onnx"
    assert main(["export", str(runner.store.root), "--format", "onnx", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x_test})[0]
    exported = member.probs("test")  # what export and predict return (calibrated when it is)
    assert np.abs(got - exported).max() <= FORMATS["onnx"].tolerance
