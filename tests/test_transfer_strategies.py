"""Transfer strategies end to end on a few hundred real CIFAR-10 pictures with ImageNet Lite0."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import CIFAR10_CLASSES, real_cifar

from benchmark.data.datasets import Dataset
from benchmark.errors import ZoobenchError
from benchmark.train.transfer import HISTORY_COLUMNS, STRATEGIES, run_strategy, unfreeze_schedule

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    """200 train / 100 val / 50 test real pictures (the in-repo JPEG copy)."""
    x_train, y_train = real_cifar("train", 20)
    x_val, y_val = real_cifar("train", 10, offset=20)
    x_test, y_test = real_cifar("test", 5)
    return Dataset(
        name="cifar10",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        class_names=CIFAR10_CLASSES,
        source="CIFAR-10 (JPEG copy)",
        location="tests",
        fingerprint="tiny-real",
        seed=0,
        split={"train_size": 200},
    )


def small_hp(size: int = 64):
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Fixed("input_size", size)
    hp.Fixed("dropout", 0.0)
    return hp


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOBENCH_CACHE", str(tmp_path / "zoobench-cache"))


def test_feature_extraction_caches_features_and_joins_a_raw_pixel_model(tiny, tmp_path):
    import keras

    from benchmark.train.transfer import extract_features, load_backbone

    cache = tmp_path / "features"
    kwargs = dict(
        cache_dir=cache, epochs=8, tuner={"max_trials": 1}, options={"head_batch_size": 32}
    )
    first = run_strategy("feature-extraction", "efficientnet_lite0", small_hp(), tiny, **kwargs)
    assert first.info["feature_cache"] == {"train": "miss", "val": "miss", "test": "miss"}
    assert len(list(cache.glob("features-*.npy"))) == 3
    assert first.info["name"] == "efficientnet_lite0 / feature-extraction @64px"
    assert first.info["speedup"] > 1
    # A one-trial search is the default head (512 ReLU, the given learning rate), not a random draw.
    assert first.info["head_hp"] == {
        "units": 512,
        "dropout": 0.2,
        "l2": 1e-4,
        "learning_rate": pytest.approx(1e-3),
    }
    assert list(first.history.columns) == list(HISTORY_COLUMNS)
    assert (first.history["stage"] == "head").all()
    # the kept trial's head brings its whole per-epoch history (Keras Tuner's oracle keeps one row)
    assert len(first.history) == first.info["stages"][0]["epochs"] > 1
    assert first.history["epoch"].tolist() == list(range(1, len(first.history) + 1))
    assert first.history["val_accuracy"].max() > 0.3  # ImageNet features on 10 classes, 200 images

    # Second call: the same backbone, weights and pixels read the cached features.
    backbone = load_backbone("efficientnet_lite0", small_hp(), tiny.input_shape, 10)
    for split in ("train", "val"):
        feats, info = extract_features(
            backbone,
            getattr(tiny, f"x_{split}"),
            cache_dir=cache,
            data_fingerprint=tiny.fingerprint,
            split=split,
        )
        assert info["cache"] == "hit" and feats.shape == (len(getattr(tiny, f"y_{split}")), 1280)

    # The joined model takes raw pixels and reproduces the head's predictions on cached features.
    probs = first.model.predict(tiny.x_test, verbose=0)
    np.testing.assert_allclose(probs, first.test_probs, atol=1e-4)
    path = tmp_path / "fe.keras"
    first.model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(tiny.x_test, verbose=0), probs, atol=1e-5)
    assert loaded.layers[-1].name == "probs"


def test_multi_level_mirrored_features_are_cached_and_replayed_by_the_raw_pixel_model(
    tiny, tmp_path
):
    import keras

    cache = tmp_path / "features"
    options = {"head_batch_size": 32, "feature_levels": 3, "flip_features": True}
    result = run_strategy(
        "feature-extraction",
        "efficientnet_lite0",
        small_hp(),
        tiny,
        cache_dir=cache,
        epochs=4,
        tuner={"max_trials": 1},
        options=options,
    )
    # The usual 1280 features plus the pooled ends of two stages below (192 + 320 channels).
    assert result.info["feature_dim"] == 1280 + 192 + 320
    assert result.info["features"] == "levels=3:block6d_add+block7a_project_bn"
    assert set(result.info["feature_cache"]) == {
        "train",
        "val",
        "test",
        "train-mirrored",
        "val-mirrored",
        "test-mirrored",
    }
    # The saved raw-pixel model averages an image's features with its mirror's, as scored.
    probs = result.model.predict(tiny.x_test, verbose=0)
    np.testing.assert_allclose(probs, result.test_probs, atol=1e-4)
    mirrored = result.model.predict(np.ascontiguousarray(tiny.x_test[:, :, ::-1]), verbose=0)
    np.testing.assert_allclose(mirrored, probs, atol=1e-4)  # symmetric by construction
    path = tmp_path / "fe.keras"
    result.model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(tiny.x_test, verbose=0), probs, atol=1e-5)

    # Plain features live under another cache key: no stale multi-level file is read back.
    plain = run_strategy(
        "feature-extraction",
        "efficientnet_lite0",
        small_hp(),
        tiny,
        cache_dir=cache,
        epochs=1,
        tuner={"max_trials": 1},
    )
    assert plain.info["feature_cache"] == {"train": "miss", "val": "miss", "test": "miss"}
    assert plain.info["feature_dim"] == 1280


def test_feature_cache_misses_when_the_split_changes(tiny, tmp_path):
    from benchmark.train.transfer import feature_cache_key, load_backbone

    backbone = load_backbone("efficientnet_lite0", small_hp(), (32, 32, 3), 10)
    key = feature_cache_key(backbone, tiny.x_val, "fp")
    assert key == feature_cache_key(backbone, tiny.x_val.copy(), "fp")
    assert key != feature_cache_key(backbone, tiny.x_val[::-1], "fp")  # other order / indices
    assert key != feature_cache_key(backbone, tiny.x_val, "other-data")
    other = load_backbone("efficientnet_lite0", small_hp(96), (32, 32, 3), 10)
    assert key != feature_cache_key(other, tiny.x_val, "fp")


def test_fine_tuning_improves_validation_accuracy_with_frozen_batch_norm(tiny, tmp_path):
    result = run_strategy(
        "fine-tuning",
        "efficientnet_lite0",
        small_hp(),
        tiny,
        cache_dir=tmp_path,
        epochs=3,
        batch_size=32,
        learning_rate=3e-3,
    )
    info, history = result.info, result.history
    assert [s["stage"] for s in info["stages"]] == ["head", "fine-tune"]
    assert info["stages"][0]["trainable_weights"] == 0
    assert info["stages"][1]["trainable_weights"] > 3_000_000
    assert history["lr"].tolist() == pytest.approx([3e-3, 3e-4, 3e-4])
    assert history["epoch"].tolist() == [1, 2, 3]
    assert info["best_val_accuracy"] > info["initial_val_accuracy"] + 0.1
    # Batch norm ran in inference mode: fine-tuning left its moving statistics untouched.
    import keras

    from zoo.efficientnet_lite_net import build_network, load_imagenet_weights

    ref = build_network("efficientnet_lite0", (64, 64, 3))
    load_imagenet_weights(ref, "efficientnet_lite0")
    tuned = result.model.get_layer("backbone")
    bn = tuned.get_layer("block6a_bn")
    assert isinstance(bn, keras.layers.BatchNormalization)
    np.testing.assert_array_equal(
        bn.moving_mean.numpy(), ref.get_layer("block6a_bn").moving_mean.numpy()
    )
    assert not np.allclose(
        tuned.get_layer("block6a_dwconv").get_weights()[0],
        ref.get_layer("block6a_dwconv").get_weights()[0],
    )


def test_progressive_unfreezing_records_its_schedule_and_improves(tiny, tmp_path):
    result = run_strategy(
        "progressive-unfreezing",
        "efficientnet_lite0",
        small_hp(),
        tiny,
        cache_dir=tmp_path,
        epochs=3,
        batch_size=32,
        learning_rate=3e-3,
        options={"stages": 2, "stage_lr_decay": 0.5},
    )
    info, history = result.info, result.history
    stages = info["stages"]
    assert [s["stage"][:11] for s in stages] == ["head", "unfreeze-1 ", "unfreeze-2 "]
    assert stages[1]["stage"].endswith("..top_bn)")  # the top half first
    assert stages[2]["stage"].startswith("unfreeze-2 (stem_conv..")  # then the bottom half
    trainable = [s["trainable_weights"] for s in stages]
    assert trainable[0] == 0 and 0 < trainable[1] < trainable[2]  # top down, growing
    assert history["stage"].tolist() == [s["stage"] for s in stages]
    assert history["lr"].tolist() == pytest.approx([3e-3, 1.5e-3, 7.5e-4])
    assert info["best_val_accuracy"] > info["initial_val_accuracy"] + 0.1


@pytest.mark.slow  # Lite0 compiled twice: a minute on 2 shared cores; the stages' part is fast below
def test_the_lite_recipe_fine_tunes_with_its_schedule_augmentation_and_flip_views(tiny, tmp_path):
    from benchmark.config.recipes import recipe
    from benchmark.config.schema import resolve_training
    from benchmark.train import transfer

    found = recipe("lite-finetune")
    options = resolve_training({**found["training"], "epochs": 2, "batch_size": 50})
    assert options["optimizer"] == "adamw" and options["warmup_epochs"] == 1.0
    few = dataclasses.replace(
        tiny, x_train=tiny.x_train[::4], y_train=tiny.y_train[::4], x_val=tiny.x_val[:20]
    )
    few = dataclasses.replace(few, y_val=tiny.y_val[:20])
    result = transfer.fit_pretrained(
        "fine-tuning",
        "efficientnet_lite0",
        small_hp(32),
        few,
        dict(options, recipe="lite-finetune"),
        cache_dir=str(tmp_path),
        options={"warmup_epochs": 1},
        augment=found["augment"],
    )
    assert result.ok and result.epochs == 2
    assert result.extra["dtype_policy"] == "float32"  # "auto" on a CPU
    assert "transfer_stages" not in result.extra  # a list: the history carries the stages
    assert result.history["stage"].tolist() == ["head", "fine-tune"]
    # each stage warms up over its first epoch (a one-epoch stage ends its warm-up at the rate)
    assert result.history["lr"].tolist() == pytest.approx([1e-3, 1e-4], rel=1e-3)
    # the stored model averages the picture and its mirror (tta = "flip")
    x = few.x_val[:8].astype("float32")
    probs = result.model.predict(x, verbose=0)
    mirrored = result.model.predict(x[:, :, ::-1], verbose=0)
    np.testing.assert_allclose(probs, mirrored, atol=1e-5)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def _stage(name: str, epochs: int, calls: list) -> dict:
    return {"stage": name, "epochs": epochs, "lr": 0.1, "set_trainable": lambda: calls.append(name)}


def test_progressive_stages_are_fitted_to_the_epochs_the_budget_leaves():
    from benchmark.train.transfer import fit_stages

    calls: list = []
    stages = [
        _stage("unfreeze-1", 2, calls),
        _stage("unfreeze-2", 2, calls),
        _stage("u-3", 4, calls),
    ]
    assert fit_stages(stages, 8) == stages  # they fit: unchanged
    assert [s["epochs"] for s in fit_stages(stages, 5)] == [1, 1, 3]  # each keeps one epoch
    two = fit_stages(stages, 2)  # fewer epochs than stages: the top ones merge, the deepest stays
    assert [s["stage"] for s in two] == ["unfreeze-1 + unfreeze-2", "u-3"]
    assert [s["epochs"] for s in two] == [1, 1]
    two[0]["set_trainable"]()
    assert calls == ["unfreeze-1", "unfreeze-2"]  # the merged stage unfreezes both groups
    assert [s["stage"] for s in fit_stages(stages, 1)] == ["unfreeze-1 + unfreeze-2 + u-3"]
    assert fit_stages(stages, 0) == []


def _tiny_stages(tiny, calls: list, names=("head", "unfreeze-1", "unfreeze-2")):
    """A small conv net standing in for a backbone, and stages that each log their name."""
    import keras

    net = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3, strides=4),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    stages = [_stage(name, 2, calls) for name in names]
    return net, SimpleNamespace(model=net), stages


def test_stages_fit_by_a_recipe_use_its_schedule_and_soft_labels(tiny):
    from benchmark.config.recipes import recipe
    from benchmark.config.schema import resolve_training
    from benchmark.train.transfer import _run_stages, _StageFitter

    calls: list = []
    net, backbone, stages = _tiny_stages(tiny, calls, ("head", "unfreeze-1"))
    found = recipe("lite-finetune")
    fitter = _StageFitter(
        {"training": resolve_training(found["training"]), "augment": found["augment"]},
        seed=0,
        num_classes=10,
        batch_size=50,
    )
    assert not fitter.sparse  # label smoothing: one-hot labels, categorical loss
    history, records, initial, best = _run_stages(
        net, backbone, tiny, stages, batch_size=50, callbacks=[], fitter=fitter
    )
    assert calls == ["head", "unfreeze-1"]
    assert [r["epochs"] for r in records] == [2, 2]
    # each stage warms up over its first epoch, then follows its cosine down from the rate
    lr = history["lr"].tolist()
    assert lr[0] == pytest.approx(0.1, rel=1e-3) and lr[1] < 0.05 and lr[3] < 0.05
    assert 0.0 <= initial <= 1.0 and 0.0 <= best <= 1.0


def test_stages_the_deadline_leaves_no_time_for_do_not_run(tiny):
    import time

    from benchmark.train.transfer import _run_stages

    calls: list = []
    net, backbone, stages = _tiny_stages(tiny, calls)
    history, records, _, _ = _run_stages(
        net, backbone, tiny, stages, batch_size=50, callbacks=[], deadline=time.monotonic()
    )
    assert calls == ["head"] and [r["stage"] for r in records] == ["head"]
    assert len(history) == 2


def test_a_trained_member_serves_as_backbone_for_another_dataset(tiny, tmp_path):
    import keras_tuner

    import zoo

    hp = keras_tuner.HyperParameters()
    hp.Fixed("width", 0.5)
    member = tmp_path / "runs" / "a" / "members" / "abc123"
    member.mkdir(parents=True)
    zoo.build("seed_cnn", hp=hp, input_shape=(32, 32, 3), num_classes=10).save(
        member / "model.keras"
    )
    (member / "config.json").write_text('{"name": "seed_cnn", "architecture": "seed_cnn"}')
    five = Dataset(
        name="b",
        x_train=tiny.x_train[tiny.y_train < 5],
        y_train=tiny.y_train[tiny.y_train < 5],
        x_val=tiny.x_val[tiny.y_val < 5],
        y_val=tiny.y_val[tiny.y_val < 5],
        x_test=tiny.x_test[tiny.y_test < 5],
        y_test=tiny.y_test[tiny.y_test < 5],
        class_names=CIFAR10_CLASSES[:5],
        source="t",
        location="t",
        fingerprint="b",
        seed=0,
    )
    result = run_strategy(
        "feature-extraction",
        f"member:{member}",
        None,
        five,
        cache_dir=tmp_path / "f",
        epochs=2,
        tuner={"max_trials": 1},
    )
    assert result.info["name"] == "member:seed_cnn / feature-extraction @32px"
    assert result.model.output_shape == (None, 5)
    assert result.model.get_layer("backbone").output_shape == (None, 128)  # the dense before probs
    ft = run_strategy(
        "progressive-unfreezing",
        f"member:{member}",
        None,
        five,
        cache_dir=tmp_path,
        epochs=2,
        options={"stages": 1},
    )
    assert isinstance(ft.history, pd.DataFrame) and len(ft.history) == 2


def test_bad_requests_fail_with_one_line_messages(tiny, tmp_path):
    with pytest.raises(ZoobenchError, match="unknown transfer strategy 'linear-probe'"):
        run_strategy("linear-probe", "efficientnet_lite0", None, tiny, cache_dir=tmp_path, epochs=1)
    with pytest.raises(ZoobenchError, match="seed_cnn' is scratch"):
        run_strategy("fine-tuning", "seed_cnn", None, tiny, cache_dir=tmp_path, epochs=1)
    with pytest.raises(ZoobenchError, match="feature_levels: must be a whole number >= 1, got 0"):
        run_strategy(
            STRATEGIES[0],
            "efficientnet_lite0",
            None,
            tiny,
            cache_dir=tmp_path,
            epochs=1,
            options={"feature_levels": 0},
        )
    with pytest.raises(ZoobenchError, match="flip_features: must be true or false, got 'yes'"):
        run_strategy(
            STRATEGIES[0],
            "efficientnet_lite0",
            None,
            tiny,
            cache_dir=tmp_path,
            epochs=1,
            options={"flip_features": "yes"},
        )
    with pytest.raises(ZoobenchError, match="fine_tune_lr_factor: must be a number > 0, got 0"):
        run_strategy(
            "fine-tuning",
            "efficientnet_lite0",
            None,
            tiny,
            cache_dir=tmp_path,
            epochs=1,
            options={"fine_tune_lr_factor": 0, "warmup_epochs": 0},
        )
    with pytest.raises(ZoobenchError, match="no model.keras"):
        run_strategy(STRATEGIES[0], f"member:{tmp_path}", None, tiny, cache_dir=tmp_path, epochs=1)


def test_unfreeze_schedule_goes_top_down():
    groups = unfreeze_schedule([[1], [2], [3], [4], [5]], 2)
    assert groups == [[[3], [4], [5]], [[1], [2]]]
    assert unfreeze_schedule([[1]], 3) == [[[1]]]
