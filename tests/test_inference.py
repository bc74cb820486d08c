"""The one inference path (benchmark.store.inference): bounded batches, the input a model gets, and
that no other module runs a model on pictures by itself."""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import numpy as np
import pytest

from benchmark.config.profiles import outside_size, resizes_inside
from benchmark.data.images import resize_to
from benchmark.store import inference

REPO = Path(__file__).resolve().parents[1]


def tiny_model(side: int = 8, classes: int = 3) -> keras.Model:
    keras.utils.set_random_seed(0)
    image = keras.Input((side, side, 3))
    x = keras.layers.Rescaling(1 / 255)(image)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, keras.layers.Dense(classes, activation="softmax")(x))


class Recording:
    """A model that records the batch sizes it is run on (predict_on_batch and predict)."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.input_shape, self.output_shape = model.input_shape, model.output_shape

    def predict_on_batch(self, x):
        self.calls.append(("batch", len(x)))
        return self.model.predict_on_batch(x)

    def predict(self, x, batch_size, verbose=0):
        self.calls.append(("predict", len(x)))
        return self.model.predict(x, batch_size=batch_size, verbose=verbose)


def pictures(n: int, side: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def test_small_inputs_run_in_batches_of_at_most_small_batch_images():
    """The out-of-memory fix: a call holds its whole batch's activations, so a small input is cut
    into SMALL_BATCH pieces, never one call of everything; the numbers are predict's, exactly."""
    model = Recording(tiny_model())
    x = pictures(inference.SMALL_BATCH * 2 + 5)
    probs = inference.probabilities(model, x)
    assert model.calls == [("batch", 32), ("batch", 32), ("batch", 5)]
    expected = model.model.predict(x.astype(np.float32), batch_size=256, verbose=0)
    np.testing.assert_array_equal(probs, expected)
    assert probs.dtype == np.float32 and probs.shape == (len(x), 3)


def test_large_inputs_are_converted_and_predicted_a_chunk_at_a_time(monkeypatch):
    monkeypatch.setattr(inference, "SMALL_VALUES", 0)
    monkeypatch.setattr(inference, "CHUNK", 7)
    model = Recording(tiny_model())
    x = pictures(17)
    probs = inference.probabilities(model, x)
    assert model.calls == [("predict", 7), ("predict", 7), ("predict", 3)]
    small = inference.probabilities(tiny_model(), x)  # the small route: the same numbers
    np.testing.assert_array_equal(probs, small)


def test_no_images_give_no_rows_with_the_models_class_count():
    assert inference.probabilities(tiny_model(classes=5), pictures(0)).shape == (0, 5)
    probs, speed = inference.timed_probabilities(tiny_model(), pictures(0))
    assert probs.shape == (0, 3) and speed == 0.0


def test_model_inputs_preprocess_first_then_resize_to_the_models_side():
    x = pictures(4, side=16)
    steps = [{"name": "equalize"}]
    got = inference.model_inputs(x, steps, tiny_model(side=8))
    assert got.shape == (4, 8, 8, 3)
    from benchmark.data.preprocess import apply_steps

    np.testing.assert_array_equal(got, resize_to(apply_steps(x, steps), 8))
    same = pictures(2, side=8)
    assert inference.model_inputs(same, [], tiny_model(side=8)) is same  # nothing to do: no copy


def test_resize_to_takes_a_side_or_a_shape_and_leaves_a_matching_batch_alone():
    x = pictures(3, side=10)
    assert resize_to(x, None) is x and resize_to(x, 10) is x and resize_to(x, (10, 10)) is x
    assert resize_to(x, 5).shape == (3, 5, 5, 3)
    assert resize_to(x, (4, 6)).shape == (3, 4, 6, 3)


def test_one_rule_says_which_members_are_fed_at_their_own_size():
    """A pretrained member (it has a strategy) resizes inside its model; a scratch one is fed
    arrays at its input size."""
    assert not resizes_inside(None) and resizes_inside("fine-tune")
    assert outside_size(None, 64) == 64 and outside_size("feature-extraction", 224) is None


def test_the_predictor_runs_every_unit_a_chunk_at_a_time_and_combines(monkeypatch):
    monkeypatch.setattr(inference, "CHUNK", 3)
    a, b = tiny_model(side=8), tiny_model(side=4)
    predictor = inference.Predictor(
        [inference.Unit(a), inference.Unit(b)],
        ["x", "y", "z"],
        "two",
        combine=lambda outs: (outs[0] + outs[1]) / 2,
        image_size=(8, 8),
    )
    x = pictures(7, side=12)
    at_run_size = resize_to(x, 8)
    want = (
        inference.probabilities(a, at_run_size)
        + inference.probabilities(b, resize_to(at_run_size, 4))
    ) / 2
    np.testing.assert_allclose(predictor.predict_proba(list(x)), want, atol=1e-6)
    with pytest.raises(ValueError, match="uint8 RGB"):
        predictor.predict_proba(x.astype(np.float32))


# Modules that call Keras's predict for something other than a model's probabilities on pictures.
NOT_PICTURES = {
    "benchmark/plan/budget.py": "times a probe model's inference speed",
    "benchmark/train/training.py": "adapts PatchWhitening to the activations before it",
    "benchmark/train/extraction.py": "computes a backbone's features",
    "benchmark/train/transfer.py": "a head on cached features",
    "benchmark/runtimes.py": "each format's runtime, which inference.Artifact runs",
}


def test_only_the_inference_module_runs_a_model_on_pictures():
    """Done-when of issue 22: grep finds one implementation of model-to-predictions."""
    found = []
    for package in ("benchmark", "ensembles", "reports", "zoo"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel == "benchmark/store/inference.py" or rel in NOT_PICTURES:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("predict", "predict_on_batch")
                ):
                    found.append(f"{rel}:{node.lineno}")
                resizes = isinstance(node, ast.Name) and node.id == "resize_batch"
                if resizes and rel != "benchmark/data/images.py":
                    found.append(f"{rel}:{node.lineno} (resize_batch)")
    assert not found, f"models run on pictures outside benchmark.store.inference: {found}"
