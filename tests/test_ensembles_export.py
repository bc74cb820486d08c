"""The fused best model: real tiny Keras members in a store, one graph, same numbers as stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_run import CLASS_NAMES

from benchmark import atomic
from benchmark.modelfile import save_model
from benchmark.store.runstore import RunStore


def tiny_member(index: int, resize: bool = False):
    """A few-hundred-parameter CNN with confident random weights; same model name for every index."""
    import keras

    from zoo.layers import classifier_head, raw_image_input

    keras.utils.set_random_seed(100 + index)
    inputs, x = raw_image_input((32, 32, 3))
    if resize:  # a member that works at another resolution resizes inside itself
        x = keras.layers.Resizing(16, 16, name="resize")(x)
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu", name="conv")(x)
    probs = classifier_head(x, 10)
    model = keras.Model(inputs, probs, name="tiny")
    kernel, bias = model.get_layer("probs").get_weights()
    model.get_layer("probs").set_weights([kernel * 8.0, bias])  # far from uniform probabilities
    return model


def make_model_run(
    root: Path,
    n_val: int = 40,
    n_test: int = 24,
    preprocess: list | None = None,
    seed: int = 0,
    probs_after_steps: bool = False,
    x_test: np.ndarray | None = None,
) -> RunStore:
    """A run with three real saved members and their true val / test probabilities (with
    ``probs_after_steps``, m0's on its preprocessed pictures, as training stores them)."""
    rng = np.random.default_rng(seed)
    store = RunStore(root)
    x_val = rng.integers(0, 256, size=(n_val, 32, 32, 3), dtype=np.uint8)
    if x_test is None:
        x_test = rng.integers(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    n_test = len(x_test)
    y_val = (np.arange(n_val) % 10).astype(np.int64)
    y_test = (np.arange(n_test) % 10).astype(np.int64)
    for name, arr in {
        "y_val": y_val,
        "y_test": y_test,
        "x_test": x_test,
        "sample_x": x_test[:5],
        "sample_y": y_test[:5],
    }.items():
        store.save_array(name, arr)
    store.write_run({"name": root.name, "seed": seed, "data": {"class_names": list(CLASS_NAMES)}})
    for i in range(3):
        model = tiny_member(i, resize=i == 2)
        mid = f"m{i}"
        steps = list(preprocess or []) if i == 0 else []
        save_model(model, store.member_dir(mid) / "model.keras")
        seen_val, seen_test = x_val, x_test
        if steps and probs_after_steps:
            from benchmark.data.preprocess import apply_steps

            seen_val, seen_test = apply_steps(x_val, steps), apply_steps(x_test, steps)
        val = model.predict(seen_val, verbose=0)
        test = model.predict(seen_test, verbose=0)
        store.write_entry(
            store.member_dir(mid),
            config={"id": mid, "name": f"tiny{i}", "architecture": "tiny", "preprocess": steps},
            metrics={
                "status": "done",
                "val_accuracy": float((val.argmax(1) == y_val).mean()),
                "val_loss": float(-np.log(val[np.arange(n_val), y_val] + 1e-7).mean()),
                "params": model.count_params(),
                "flops": 1000,
                "inference_images_per_second": 500.0,
                "finished_at": f"2026-01-01T00:00:0{i}Z",
            },
            val_probs=val,
            test_probs=test,
        )
    return store


@pytest.fixture(scope="module")
def model_run(tmp_path_factory) -> RunStore:
    from ensembles.build import build_ensembles

    store = make_model_run(tmp_path_factory.mktemp("export") / "run")
    build_ensembles(store, {"stacker_cv": 2, "top_k": 2}, seed=0)
    return store


def test_every_ensemble_fuses_into_one_model_with_the_stored_probabilities(model_run, tmp_path):
    import keras

    from ensembles.export import build_fused_model

    x_test = model_run.load_array("x_test")
    names = [e.name for e in model_run.ensembles()]
    assert set(names) >= {"average-all", "top-2", "greedy", "stacking-logistic"}
    for entry in model_run.ensembles():
        fused = build_fused_model(model_run, entry)
        np.testing.assert_allclose(
            fused.predict(x_test, verbose=0), entry.probs("test"), atol=1e-5, err_msg=entry.name
        )
        if entry.config["method"] == "stacking":  # the stacker survives a save / safe load
            path = tmp_path / "stack.keras"
            save_model(fused, path)
            back = keras.saving.load_model(path, safe_mode=True)
            np.testing.assert_allclose(
                back.predict(x_test, verbose=0), entry.probs("test"), atol=1e-5
            )
            assert not back.trainable_weights


def test_best_model_loads_in_safe_mode_and_matches_the_stored_best(model_run):
    import keras

    from ensembles.predictor import load_predictor

    best = atomic.read_json(model_run.ensemble_dir("best") / "config.json")
    assert best["model"] == "model.keras", best["reason"]
    every = [*model_run.members(), *model_run.ensembles()]
    top = max(every, key=lambda e: (e.metrics["val_accuracy"], -e.metrics["val_loss"]))
    assert best["id"] == top.id
    fused = keras.saving.load_model(model_run.ensemble_dir("best") / "model.keras", safe_mode=True)
    x_test = model_run.load_array("x_test")
    np.testing.assert_allclose(fused.predict(x_test, verbose=0), top.probs("test"), atol=1e-5)
    predictor = load_predictor(model_run.root)
    assert predictor.class_names == list(CLASS_NAMES)
    np.testing.assert_allclose(predictor.predict_proba(x_test), top.probs("test"), atol=1e-5)
    np.testing.assert_array_equal(predictor.predict(x_test), top.probs("test").argmax(1))


def test_stacking_ensemble_exported_as_best_keeps_its_numbers(model_run, tmp_path):
    """Force the stacker to be best: the fused file holds the stacker Dense with coef_/intercept_."""
    import keras

    from ensembles.export import write_best

    stack = model_run.ensemble("stacking-logistic")
    info = write_best(model_run, stack)
    assert info["kind"] == "ensemble" and info["method"] == "stacking"
    fused = keras.saving.load_model(model_run.ensemble_dir("best") / "model.keras", safe_mode=True)
    assert {layer.name for layer in fused.layers} >= {"member0_m0", "member1_m1", "member2_m2"}
    coef = np.load(stack.path / "stacker.npz")["coef_"]
    np.testing.assert_allclose(fused.get_layer("stacker0").get_weights()[0], coef.T, atol=1e-6)
    x_test = model_run.load_array("x_test")
    np.testing.assert_allclose(fused.predict(x_test, verbose=0), stack.probs("test"), atol=1e-5)


def test_predictor_by_member_and_ensemble_name(model_run):
    from ensembles.predictor import load_predictor

    x_test = model_run.load_array("x_test")
    for name in ("m1", "greedy", "stacking-logistic"):
        entry = model_run.member("m1") if name == "m1" else model_run.ensemble(name)
        p = load_predictor(model_run.root, name)
        np.testing.assert_allclose(p.predict_proba(x_test), entry.probs("test"), atol=1e-5)
    # other sizes are resized (INTER_AREA) to the model's input
    big = np.repeat(np.repeat(x_test[:2], 2, axis=1), 2, axis=2)
    assert load_predictor(model_run.root, "m0").predict_proba(big).shape == (2, 10)


def test_members_with_different_preprocessing_are_not_fused_but_still_predict(tmp_path):
    from ensembles.build import build_ensembles
    from ensembles.predictor import load_predictor

    store = make_model_run(tmp_path / "run", preprocess=[{"name": "equalize"}])
    # uncalibrated: a temperature would flatten these random members' probabilities, hiding
    # what preprocessing changes (the calibrated one-by-one path has its own test)
    build_ensembles(store, {"methods": ["average-all"], "calibrate": False}, seed=0)
    from ensembles.export import write_best

    entry = store.ensemble("average-all")
    info = write_best(store, entry)
    assert info["model"] is None and "different preprocessing" in info["reason"]
    x_test = store.load_array("x_test")
    p = load_predictor(store.root)
    assert len(p.units) == 3 and p.units[0].preprocess == [{"name": "equalize"}]
    from benchmark.data.preprocess import apply_steps

    models = [u.model for u in p.units]
    expected = np.mean(
        [
            models[0].predict(apply_steps(x_test, [{"name": "equalize"}]), verbose=0),
            models[1].predict(x_test, verbose=0),
            models[2].predict(x_test, verbose=0),
        ],
        axis=0,
    )
    np.testing.assert_allclose(p.predict_proba(x_test), expected, atol=1e-6)
    assert not np.allclose(expected, entry.probs("test"), atol=1e-3)  # preprocessing mattered


def test_deblocked_members_fuse_export_and_are_attacked_with_the_layer_in_front(tmp_path):
    """deblock runs inside the model: one fused model on raw pictures, exportable, differentiable."""
    import keras

    from benchmark.data.preprocess import in_model_layers, validate_steps
    from benchmark.train.adversarial import input_gradient
    from ensembles.build import build_ensembles
    from ensembles.deploy import export_model
    from ensembles.export import build_fused_model, raw_pixel_model, write_best

    steps = validate_steps([{"name": "deblock"}])
    assert in_model_layers([{"name": "clahe", "clip_limit": 2.0, "tile_grid": 4}]) is None
    # pictures with JPEG-like 8x8 blocks, so the filter changes them
    blocks = np.random.default_rng(1).integers(60, 200, size=(24, 4, 4, 3))
    x_test = np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2).astype(np.uint8)
    store = make_model_run(
        tmp_path / "run", preprocess=steps, probs_after_steps=True, x_test=x_test
    )
    # uncalibrated: the members' own outputs are compared with the deblocked fused model
    build_ensembles(store, {"methods": ["average-all"], "calibrate": False}, seed=0)
    m0, avg = store.member("m0"), store.ensemble("average-all")
    model0 = keras.saving.load_model(m0.model_path, safe_mode=True)
    from benchmark.data.preprocess import apply_steps

    assert not np.array_equal(apply_steps(x_test, steps), x_test)  # the step does something
    expected0 = model0.predict(apply_steps(x_test, steps), verbose=0)

    info = write_best(store, avg)
    assert info["preprocess"] == [] and info["model"] == "model.keras"  # nothing to apply outside
    fused = build_fused_model(store, avg)
    assert any(layer.name == "member0_deblock" for layer in fused.layers)
    single = build_fused_model(store, m0)  # one member: its model behind the layer
    np.testing.assert_allclose(single.predict(x_test, verbose=0), expected0, atol=1e-6)

    exported = export_model(store.root, "m0", "keras", out=tmp_path / "m0.keras", images=24)
    assert exported["images_compared"] == 24 and exported["max_abs_diff"] <= 1e-4
    reloaded = keras.saving.load_model(tmp_path / "m0.keras", safe_mode=True)  # zoo layer known
    np.testing.assert_allclose(reloaded.predict(x_test, verbose=0), expected0, atol=1e-6)

    attacked = raw_pixel_model(model0, steps, x_test.shape[1:])
    grad = keras.ops.convert_to_numpy(
        input_gradient(
            attacked,
            keras.losses.sparse_categorical_crossentropy,
            keras.ops.convert_to_tensor(x_test.astype(np.float32)),
            np.arange(24) % 10,
        )
    )
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0  # the rounding passes the gradient


def test_calibrated_entries_predict_and_export_their_stored_calibrated_probabilities(
    tmp_path, capsys
):
    """The temperature is inside the fused and exported models and the one-by-one predictor: each
    returns the stored (calibrated) test probabilities, not the probabilities before."""
    import keras

    from ensembles.build import build_ensembles
    from ensembles.deploy import export_model
    from ensembles.export import write_best
    from ensembles.predictor import load_predictor

    store = make_model_run(tmp_path / "run", n_val=80, n_test=40)
    rng = np.random.default_rng(3)
    for split in ("val", "test"):  # labels m0 gets right about 70% of the time: a finite T
        predicted = store.member("m0").probs(split).argmax(1)
        common = [c for c in range(10) if np.sum(predicted == c) >= 8]
        right = (rng.random(len(predicted)) < 0.7) & np.isin(predicted, common)
        labels = np.where(right, predicted, rng.choice(common, size=len(predicted)))
        assert np.bincount(labels)[common].min() >= 3  # three folds possible
        store.save_array(f"y_{split}", labels.astype(np.int64))
    build_ensembles(store, {"methods": ["average-all", "greedy"], "cv_folds": 3}, seed=0)
    m0, greedy = store.member("m0"), store.ensemble("greedy")
    assert 0.06 < m0.temperature < 19 and greedy.temperature is not None
    x_test = store.load_array("x_test")

    info = write_best(store, m0)
    assert info["temperature"] == m0.temperature and info["model"] == "model.keras"
    fused = keras.saving.load_model(store.ensemble_dir("best") / "model.keras", safe_mode=True)
    got = fused.predict(x_test, verbose=0)
    np.testing.assert_allclose(got, m0.probs("test"), atol=1e-5)
    assert np.abs(got - m0.probs("test", calibrated=False)).max() > 1e-2
    np.testing.assert_allclose(load_predictor(store.root).predict_proba(x_test), got, atol=1e-5)
    import json

    import cv2

    from benchmark.cli.app import main

    cv2.imwrite(str(tmp_path / "first.png"), x_test[0][..., ::-1])  # OpenCV writes BGR
    assert main(["predict", str(tmp_path / "first.png"), "--run", str(store.root), "--json"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)["predictions"]
    top = answer["top"][0]
    assert top["probability"] == pytest.approx(float(got[0].max()), abs=1e-4)
    assert abs(top["probability"] - m0.probs("test", calibrated=False)[0].max()) > 0.05
    for name, entry in (("m0", m0), ("greedy", greedy)):  # the members one by one, then scaled
        p = load_predictor(store.root, name)
        np.testing.assert_allclose(p.predict_proba(x_test), entry.probs("test"), atol=1e-5)

    out = tmp_path / "greedy.keras"
    exported = export_model(store.root, "greedy", "keras", out=out)
    assert exported["max_abs_diff"] <= 1e-4 and exported["temperature"] == greedy.temperature
    back = keras.saving.load_model(out, safe_mode=True)
    assert back.get_layer("temperature").temperature == pytest.approx(greedy.temperature)
    np.testing.assert_allclose(back.predict(x_test, verbose=0), greedy.probs("test"), atol=1e-4)
