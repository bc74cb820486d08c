"""The frozen-backbone pass on other runtimes: equal features, or TensorFlow with a reason."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest

from benchmark.config import schema
from benchmark.errors import ZoobenchError
from benchmark.train import extraction
from benchmark.train.transfer import Backbone, extract_features

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnxruntime", "tf2onnx", "onnx"))
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    """A small conv net with batch norm and a depthwise layer, like the Lite backbones' ops."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, x, name="backbone")
    return Backbone("tiny", [], model, (16, 16, 3), 16, "none", {})


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (70, 16, 16, 3)).astype(np.uint8)


def tf_features(backbone, images) -> np.ndarray:
    model = extraction.extractor_model(backbone)
    return np.asarray(model.predict(images.astype(np.float32), verbose=0))


@pytest.mark.parametrize("runtime", ["tf", "xla", "onnx", "litert"])
def test_each_runtime_reproduces_tensorflows_features(backbone, images, runtime, tmp_path):
    if runtime == "onnx" and not HAS_ONNX or runtime == "litert" and not HAS_LITERT:
        pytest.skip(f"{runtime} not installed")
    model = extraction.extractor_model(backbone)
    run = extraction.runtime_extractor(model, runtime, tmp_path, batch_size=32)
    feats = run(images)  # 70 images: two full batches and a short one
    assert feats.shape == (70, 8) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, tf_features(backbone, images), atol=extraction.TOLERANCE)


@pytest.mark.skipif(not HAS_ONNX, reason="onnx extra not installed")
def test_auto_uses_onnx_runtime_only_when_its_features_agree(backbone, images, monkeypatch, caplog):
    with extraction.FeaturePass(backbone, "auto", 32) as feature_pass:
        feats = feature_pass(images)
    assert feature_pass.runtime_used == "onnx"
    np.testing.assert_allclose(feats, tf_features(backbone, images), atol=extraction.TOLERANCE)

    monkeypatch.setattr(extraction, "TOLERANCE", -1.0)  # every difference is now too large
    with (
        caplog.at_level(logging.WARNING, "benchmark.train.extraction"),
        extraction.FeaturePass(backbone, "auto", 32) as feature_pass,
    ):
        feats = feature_pass(images)
    assert feature_pass.runtime_used == "tf"
    assert "onnx features differ from TensorFlow's" in caplog.text
    np.testing.assert_array_equal(feats, tf_features(backbone, images))
    # a runtime named explicitly has no fallback
    with (
        pytest.raises(ValueError, match="onnx features differ"),
        extraction.FeaturePass(backbone, "onnx", 32) as feature_pass,
    ):
        feature_pass(images)


@pytest.mark.skipif(not HAS_ONNX, reason="onnx extra not installed")
def test_a_failed_export_falls_back_to_tensorflow(backbone, images, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("tf2onnx: unsupported op Foo")

    monkeypatch.setattr(extraction, "_onnx_runner", broken)
    with (
        caplog.at_level(logging.WARNING, "benchmark.train.extraction"),
        extraction.FeaturePass(backbone, "auto", 32) as feature_pass,
    ):
        feats = feature_pass(images)
    assert feature_pass.runtime_used == "tf" and feats.shape == (70, 8)
    assert "unsupported op Foo" in caplog.text


def test_cached_features_open_no_runtime(backbone, images, tmp_path, monkeypatch):
    first, info = extract_features(
        backbone, images, cache_dir=tmp_path, data_fingerprint="fp", runtime="tf", split="train"
    )
    assert info["cache"] == "miss" and info["runtime"] == "tf"

    def refuse(*args, **kwargs):
        raise AssertionError("a cached split must not export or run the backbone")

    monkeypatch.setattr(extraction, "open_extractor", refuse)
    with extraction.FeaturePass(backbone, "onnx", 32) as feature_pass:
        again, info = extract_features(
            backbone,
            images,
            cache_dir=tmp_path,
            data_fingerprint="fp",
            split="train",
            feature_pass=feature_pass,
        )
    assert info["cache"] == "hit" and feature_pass.runtime_used is None
    np.testing.assert_array_equal(again, first)


def test_extract_runtime_option_is_checked():
    assert schema.validate_transfer_options({"extract_runtime": "onnx"}) == {
        "extract_runtime": "onnx"
    }
    with pytest.raises(
        ZoobenchError,
        match=r"transfer\.extract_runtime: must be one of auto, tf, xla, onnx, litert, got 'openvino'$",
    ):
        schema.validate_transfer_options({"extract_runtime": "openvino"})
    with pytest.raises(ValueError, match="unknown extraction runtime 'gpu'"):
        extraction.FeaturePass(None, "gpu")


def test_progress_is_keras_progbar_one_line_in_a_log(backbone, images, tmp_path, capsys):
    model = extraction.extractor_model(backbone)
    run = extraction.runtime_extractor(model, "xla", tmp_path, batch_size=32)
    run(images, verbose=2)  # a log file: one summary line when the pass ends
    out = capsys.readouterr().out
    assert out.count("70/70") == 1 and "\r" not in out
    run(images, verbose=0)
    assert capsys.readouterr().out == ""
