"""Runtimes for the frozen-backbone pass of feature extraction: the longest step of a CPU run.

A feature-extraction member spends most of its time pushing every image through a frozen
backbone once. The same computation can run on Keras/TensorFlow (``tf``), on TensorFlow with XLA
(``xla``), or on a dedicated CPU inference runtime: ONNX Runtime (``onnx``, via Keras's own
``model.export(format="onnx")``) or LiteRT with XNNPACK (``litert``).
``scripts/bench_extraction_runtime.py`` measures them. ``auto`` (the default ``extract_runtime``
option) uses ONNX Runtime when it is installed and the backend is TensorFlow, and only after
checking that it reproduces TensorFlow's features on a batch of the real images within
:data:`TOLERANCE`; anything else, or a failed export, falls back to ``tf`` and says why.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.config.schema import EXTRACT_RUNTIMES as RUNTIMES

log = logging.getLogger(__name__)

TOLERANCE = 1e-3  # max absolute feature difference a runtime may have from TensorFlow's
# Speed over TensorFlow's predict, measured with scripts/bench_extraction_runtime.py (Lite0 @128px,
# 5 levels, 1,024 images, 2 CPU cores): what the plan divides a probe's extraction time by.
SPEEDUP = {"tf": 1.0, "xla": 0.1, "onnx": 1.95, "litert": 1.38}
# Seconds to open a runtime (export and check against TensorFlow): ~6 s measured for Lite0-2
SETUP_SECONDS = {"tf": 0.0, "xla": 5.0, "onnx": 10.0, "litert": 12.0}
CHECK_IMAGES = 64  # images compared with TensorFlow before ``auto`` trusts another runtime

Extractor = Callable[..., np.ndarray]  # (images, verbose=0) -> features


def extractor_model(backbone) -> Any:
    """Raw pixels -> the backbone's pre-layers -> frozen backbone: one Keras model for a pass."""
    import keras

    inputs = keras.Input(shape=backbone.input_shape, name="image")
    h = inputs
    for layer in backbone.pre_layers:
        h = layer(h)
    return keras.Model(inputs, backbone.model(h, training=False), name="extractor")


def _batched(run_batch: Callable[[np.ndarray], np.ndarray], batch_size: int) -> Extractor:
    """``run_batch`` over ``x`` in batches, with Keras's progress as ``predict`` shows it:
    ``verbose`` 1 a live bar, 2 one line at the end (a log file), 0 nothing."""

    def run(x: np.ndarray, verbose: int = 0) -> np.ndarray:
        import keras

        bar = keras.utils.Progbar(len(x), verbose=verbose) if verbose else None
        outs = []
        for start in range(0, len(x), batch_size):
            batch = np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)
            outs.append(np.asarray(run_batch(batch), dtype=np.float32))
            if bar is not None:
                bar.add(len(batch))
        return np.concatenate(outs)

    return run


def _keras_runner(model, batch_size: int, *, xla: bool) -> Extractor:
    if not xla:
        return lambda x, verbose=0: np.asarray(
            model.predict(x, batch_size=batch_size, verbose=verbose), np.float32
        )
    import tensorflow as tf

    fn = tf.function(lambda b: model(b, training=False), jit_compile=True, reduce_retracing=True)
    return _batched(lambda b: fn(b).numpy(), batch_size)


def _export(model, runtime: str, path: Path) -> None:
    """``model`` written as ``runtime``'s file by ``zoobench export``'s writer (quiet, with its
    tf2onnx fixes); Keras exports only a model that has run once (its input signature)."""
    from benchmark.runtimes import FORMATS, write_artifact

    model(np.zeros((1, *model.input_shape[1:]), np.float32), training=False)
    write_artifact(model, FORMATS[runtime], path)


def _onnx_runner(model, workdir: Path, batch_size: int) -> Extractor:
    import onnxruntime as ort

    path = workdir / "extractor.onnx"
    _export(model, "onnx", path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return _batched(lambda b: session.run(None, {name: b})[0], batch_size)


def _litert_runner(model, workdir: Path, batch_size: int) -> Extractor:
    from benchmark.runtimes import invoke_litert, native_quiet

    path = workdir / "extractor.tflite"
    _export(model, "litert", path)

    def run_batch(b: np.ndarray) -> np.ndarray:
        with native_quiet():
            return invoke_litert(path, b)

    return _batched(run_batch, batch_size)


def runtime_extractor(model, runtime: str, workdir: Path, *, batch_size: int = 128) -> Extractor:
    """A function ``(images, verbose=0) -> features`` running ``model`` on ``runtime`` (not auto).

    ``workdir`` holds the exported file for ``onnx`` / ``litert``; it must outlive the function.
    """
    if runtime == "tf":
        return _keras_runner(model, batch_size, xla=False)
    if runtime == "xla":
        return _keras_runner(model, batch_size, xla=True)
    if runtime == "onnx":
        return _onnx_runner(model, workdir, batch_size)
    if runtime == "litert":
        return _litert_runner(model, workdir, batch_size)
    raise ValueError(f"unknown extraction runtime {runtime!r}; one of {', '.join(RUNTIMES)}")


def resolve(runtime: str) -> str:
    """The runtime ``runtime`` names here (``auto``: ``onnx`` where available and TensorFlow has no
    GPU, whose pass beats a CPU runtime; else ``tf``)."""
    if runtime == "auto":
        return "onnx" if onnx_available() and not _tensorflow_gpu() else "tf"
    return runtime


def _tensorflow_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def onnx_available() -> bool:
    """ONNX Runtime and tf2onnx installed (the ``[onnx]`` extra) and the backend is TensorFlow."""
    from zoo import backend

    return backend.name() == "tensorflow" and all(
        importlib.util.find_spec(m) is not None for m in ("onnxruntime", "tf2onnx", "onnx")
    )


@contextlib.contextmanager
def open_extractor(
    model, runtime: str, check: np.ndarray, *, batch_size: int = 128
) -> Iterator[tuple[Extractor, str]]:
    """Yields ``(extract, runtime_used)`` for ``runtime``; ``auto`` resolved as the module says.

    ``check``: a few real images; a runtime other than ``tf`` must reproduce TensorFlow's
    features on them within :data:`TOLERANCE`, or ``auto`` falls back to ``tf`` (an explicitly
    named runtime that disagrees is an error: the features would not be the model's).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown extraction runtime {runtime!r}; one of {', '.join(RUNTIMES)}")
    wanted = runtime
    runtime = resolve(runtime)
    with tempfile.TemporaryDirectory(prefix="zoobench-extract-") as tmp:
        extract, why_not = None, ""
        if runtime != "tf":
            try:
                extract = runtime_extractor(model, runtime, Path(tmp), batch_size=batch_size)
                reference = _keras_runner(model, batch_size, xla=False)(check)
                diff = float(np.max(np.abs(extract(check) - reference)))
            except Exception as exc:  # noqa: BLE001 - an export failure must not lose the member
                if wanted != "auto":
                    raise
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                why_not = f"feature extraction on {runtime} failed ({first})"
            else:
                if not diff <= TOLERANCE:  # NaN features fail too
                    why_not = (
                        f"{runtime} features differ from TensorFlow's by {diff:.2e} "
                        f"(more than {TOLERANCE:g})"
                    )
                    if wanted != "auto":
                        raise ValueError(why_not)
                else:
                    log.info(
                        "feature extraction on %s (max difference from TensorFlow %.1e)",
                        runtime,
                        diff,
                    )
            if why_not:
                log.warning("%s; using TensorFlow", why_not)
                extract = None
        if extract is None:
            yield _keras_runner(model, batch_size, xla=False), "tf"
        else:
            yield extract, runtime


class FeaturePass:
    """One member's backbone pass over several splits: the runtime is opened (and, for
    ``auto``, checked) on the first images that miss the cache, reused for the rest, and closed
    on exit, so an all-cached rerun exports nothing. ``runtime_used`` says what ran."""

    def __init__(self, backbone, runtime: str = "auto", batch_size: int = 128) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(
                f"unknown extraction runtime {runtime!r}; one of {', '.join(RUNTIMES)}"
            )
        self.backbone, self.runtime, self.batch_size = backbone, runtime, batch_size
        self.runtime_used: str | None = None
        self._extract: Extractor | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> FeaturePass:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def __call__(self, x: np.ndarray, verbose: int = 0) -> np.ndarray:
        if self._extract is None:
            model = extractor_model(self.backbone)
            check = np.ascontiguousarray(x[:CHECK_IMAGES], dtype=np.float32)
            self._extract, self.runtime_used = self._stack.enter_context(
                open_extractor(model, self.runtime, check, batch_size=self.batch_size)
            )
        return self._extract(x, verbose=verbose)
