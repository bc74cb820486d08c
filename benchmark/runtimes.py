"""Model artifacts in each runtime's format: write a Keras model as .keras, SavedModel, ONNX or
LiteRT, and run such a file on a batch of raw pixels.

One home for the formats, so ``zoobench export`` (``ensembles.deploy``) and feature extraction's
fast runtimes (``benchmark.train.extraction``) write and run a file the same way: TensorFlow kept
quiet, tf2onnx taught ``Erfc``, LiteRT's C++ banner hidden. Base layer: imports no other part of
zoobench but its errors.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.errors import ZoobenchError

log = logging.getLogger(__name__)

BATCH = 32


@dataclass(frozen=True)
class Format:
    """One export format: how its artifact is named, written, checked, and what it needs."""

    name: str
    keras_format: str | None  # Model.export's format; None: Model.save (.keras)
    suffix: str  # the --out suffix its runtime insists on ("" for a folder)
    tolerance: float  # max |probability difference| accepted against the stored test probs
    needs: tuple[tuple[str, ...], ...] = ()  # module alternatives, each group needs one importable
    extra: str = ""  # the zoobench extra that installs ``needs``
    tensorflow_only: bool = True  # exported through TensorFlow (Keras's tf exporters)


# Float32 everywhere; keras / SavedModel run the very same TensorFlow kernels (1e-4 leaves room
# for thread-count effects), ONNX Runtime and LiteRT (XNNPACK) use their own kernels: 1e-3.
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("keras", None, ".keras", 1e-4, tensorflow_only=False),
        Format("saved_model", "tf_saved_model", "", 1e-4),
        Format("onnx", "onnx", ".onnx", 1e-3, (("tf2onnx",), ("onnx",), ("onnxruntime",)), "onnx"),
        Format("litert", "litert", ".tflite", 1e-3, (("ai_edge_litert",),), "litert"),
    )
}
RUNTIME_DISTS = {  # recorded in the manifest: what wrote and what checked the artifact
    "onnx": ("tf2onnx", "onnx", "onnxruntime"),
    "litert": ("ai-edge-litert",),
}


def format_spec(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ZoobenchError(f"unknown --format {fmt!r}; choose {', '.join(FORMATS)}")
    return FORMATS[fmt]


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def require_packages(fmt: str) -> None:
    """A one-line ZoobenchError naming the missing packages and the extra that installs them."""
    spec = format_spec(fmt)
    groups = [g for g in spec.needs if not any(_importable(m) for m in g)]
    if groups:
        names = [g[0].replace("_", "-") for g in spec.needs]
        wanted = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        missing = [g[0].replace("_", "-") for g in groups]
        which = "" if len(missing) == len(names) else f" ({', '.join(missing)} not installed)"
        raise ZoobenchError(
            f'--format {fmt} needs {wanted}{which}: pip install "zoobench[{spec.extra}]"'
        )


def batches(x: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(x), BATCH):
        yield np.ascontiguousarray(x[start : start + BATCH])


# ---- each format's runtime, loading the artifact afresh, as a deployment would -----------------
def run_keras(path: Path, x: np.ndarray) -> np.ndarray:
    from benchmark.modelfile import load_model  # safe mode, zoo layers registered

    model = load_model(path, "the exported model")
    return np.concatenate([np.asarray(model.predict_on_batch(b)) for b in batches(x)])


def run_saved_model(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    (name,) = serve.structured_input_signature[1]
    outs = [next(iter(serve(**{name: tf.constant(b)}).values())).numpy() for b in batches(x)]
    return np.concatenate(outs)


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: b})[0] for b in batches(x)])


def litert_interpreter(path: str | os.PathLike):
    """LiteRT's interpreter for ``path`` (ai_edge_litert: TensorFlow 2.20+ no longer has one)."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path))


@contextlib.contextmanager
def native_quiet() -> Iterator[None]:
    """LiteRT's C++ runtime prints an INFO line to fd 2 (its XNNPACK delegate); hide it unless
    verbose (as zoo.quiet does for TensorFlow's banners). Python exceptions still surface."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def run_litert(path: Path, x: np.ndarray) -> np.ndarray:
    with native_quiet():
        return invoke_litert(path, x)


def invoke_litert(path: Path, x: np.ndarray) -> np.ndarray:
    interpreter = litert_interpreter(path)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    outs, shape = [], None
    for b in batches(x):
        if b.shape != shape:
            interpreter.resize_tensor_input(inp["index"], b.shape)
            interpreter.allocate_tensors()
            shape = b.shape
        interpreter.set_tensor(inp["index"], b)
        interpreter.invoke()
        outs.append(np.array(interpreter.get_tensor(out["index"])))
    return np.concatenate(outs)


RUNTIMES: dict[str, Callable[[Path, np.ndarray], np.ndarray]] = {
    "keras": run_keras,
    "saved_model": run_saved_model,
    "onnx": run_onnx,
    "litert": run_litert,
}


def _register_erfc() -> None:
    """Teach tf2onnx TensorFlow's ``Erfc`` as ``1 - Erf``: Keras's exact GELU (fastnet's default
    activation) computes through it, and tf2onnx 1.17 has no converter for it, so without this an
    ONNX export of such a model fails. Registered once; tf2onnx keeps its own Erf converter."""
    import numpy as np
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    if getattr(_register_erfc, "done", False):
        return

    @tf_op("Erfc")
    class Erfc:  # noqa: F841 - registered by the decorator
        @classmethod
        def version_9(cls, ctx, node, **kwargs):  # ONNX Erf exists from opset 9
            node.type = "Erf"
            one = ctx.make_const(
                utils.make_name(f"{node.name}_one"), np.array(1.0, dtype=np.float32)
            )
            ctx.insert_new_node_on_output(
                "Sub",
                node.output[0],
                name=utils.make_name(f"{node.name}_erfc"),
                inputs=[one.output[0], node.output[0]],
            )

    _register_erfc.done = True


def float32_copy(model):
    """``model`` computing in float32: itself when it does, else a copy with its weights.

    ONNX and LiteRT have no bfloat16 path for ops a mixed-precision member uses (GELU's Erfc; ONNX
    Runtime refuses mixed float16/bfloat16 Mul), so such a member exports as float32. Its variables
    are float32 already; its probabilities move by the rounding it no longer does (about 1e-2 at
    most for bfloat16: ``zoobench export --tolerance``).
    """
    import keras

    layers = model._flatten_layers(include_self=True, recursive=True)
    if all(layer.dtype_policy.name == "float32" for layer in layers):
        return model

    def as_float32(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {k: as_float32(v) for k, v in node.items()}
        if isinstance(node, list):
            return [as_float32(v) for v in node]
        return node

    copy = keras.saving.deserialize_keras_object(
        as_float32(keras.saving.serialize_keras_object(model))
    )
    copy.set_weights(model.get_weights())
    shape = [1 if d is None else d for d in model.input_shape]
    copy(np.zeros(shape, dtype="float32"))  # a called model, as Keras's export wants
    return copy


def write_artifact(model, spec: Format, path: Path) -> None:
    if spec.keras_format is None:
        model.save(path)
        return
    model = float32_copy(model)
    if spec.name == "onnx":
        _register_erfc()
    with warnings.catch_warnings(), quiet_tensorflow():
        warnings.simplefilter("ignore", FutureWarning)  # tf2onnx's numpy-2 shims
        warnings.simplefilter("ignore", DeprecationWarning)
        model.export(str(path), format=spec.keras_format, verbose=False)


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """TensorFlow's and tf2onnx's INFO chatter stays in the log unless asked for (-v)."""
    names = ("tensorflow", "tf2onnx", "absl")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    if not log.isEnabledFor(logging.INFO):
        for lg in loggers:
            lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
