"""The contract every zoo entry meets, as functions (no tests here).

tests/test_zoo_models.py applies it to every registered scratch architecture; tests/test_docs.py
applies it to the "Add an architecture" example in docs/zoo.md, so the docs' example is held to the
same rules as the zoo.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import keras
import keras_tuner
import numpy as np

import zoo

ZOO_DOCS = Path(__file__).resolve().parents[1] / "docs" / "zoo.md"
EXAMPLE_MARK = "<!-- docs-example: add-an-architecture"
EXAMPLE_NAME = "tiny_cnn"  # the name the example registers

# A search space that matters: regularisation, a depth or width knob, batch norm, activation, dropout.
SIZE_KNOBS = {"depth", "width", "widen_factor", "growth_rate"}


def raw_batch(n: int = 3) -> np.ndarray:
    """Raw uint8 pixels, as a saved model receives them."""
    return np.random.default_rng(1).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def check_probabilities(model: keras.Model, num_classes: int = 10) -> np.ndarray:
    """Raw uint8 in, a probability vector per image out (contract of every zoo model)."""
    assert model.layers[-1].name == "probs"
    assert any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers[:3])
    probs = np.asarray(model(raw_batch(), training=False))
    assert probs.shape == (3, num_classes)
    assert np.all(probs >= 0) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    return probs


def sample_space(hp: keras_tuner.HyperParameters, seed: int) -> keras_tuner.HyperParameters:
    """A copy of ``hp`` with every declared hyperparameter set to a random value (as a trial is)."""
    rng = np.random.default_rng(seed)
    trial = hp.copy()
    for p in hp.space:
        trial.values[p.name] = p.random_sample(int(rng.integers(2**31)))
    return trial


def check_search_space(hp: keras_tuner.HyperParameters) -> None:
    """The space holds l1 / l2, a depth or width knob, batch_norm, activation and dropout."""
    names = {p.name for p in hp.space}
    assert {"l1", "l2"} <= names, names
    assert names & SIZE_KNOBS, names
    assert names & {"batch_norm"} and names & {"activation"} and names & {"dropout"}, names


def check_sampled_build(name: str, hp: keras_tuner.HyperParameters) -> None:
    """A random trial of the space builds (7 classes) and the builder keeps the trial's values."""
    trial = sample_space(hp, seed=zlib.crc32(name.encode()))
    chosen = dict(trial.values)
    keras.backend.clear_session()
    model = zoo.build(name, hp=trial, num_classes=7)
    check_probabilities(model, num_classes=7)
    assert trial.values == chosen  # the builder used the trial's values, it did not reset them


def check_entry(name: str, *, sampled: bool = True) -> keras.Model:
    """The whole contract for registry entry ``name``: the default build on 32x32x3 with 10 classes
    takes raw pixels and returns probabilities, is named after the entry, declares a search space
    that matters, and (``sampled``) a random trial of that space builds too. Returns the default
    model."""
    keras.backend.clear_session()
    hp = keras_tuner.HyperParameters()
    model = zoo.build(name, hp=hp, input_shape=(32, 32, 3), num_classes=10)
    check_probabilities(model)
    assert model.name == name
    check_search_space(hp)
    if sampled:
        check_sampled_build(name, hp)
    return model


def docs_example() -> str:
    """The worked example of docs/zoo.md's "Add an architecture": the first python block after its
    ``docs-example`` marker. The tests run the docs, so the docs cannot drift from the contract."""
    text = ZOO_DOCS.read_text()
    assert EXAMPLE_MARK in text, f"{ZOO_DOCS} lost its {EXAMPLE_MARK!r} marker"
    section = text.split(EXAMPLE_MARK, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, f"{ZOO_DOCS}: no python block after the 'Add an architecture' marker"
    return match.group(1)
