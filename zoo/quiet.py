"""Import Keras (and TensorFlow, when it is the backend) without native start-up banners.

TensorFlow 2.21 writes its banners (oneDNN, CPU features, CUDA probing) through absl before
``TF_CPP_MIN_LOG_LEVEL`` is read, so the only reliable silencer is to point file descriptor 2 at
/dev/null for the duration of the import. Python-level errors still surface: the exception is raised
after stderr is restored. On the JAX and PyTorch backends TensorFlow is never imported, and Keras
is kept from importing it (:func:`keep_tensorflow_unloaded`).
"""

from __future__ import annotations

import os
import sys


def _import_backend() -> None:
    import keras

    if keras.backend.backend() != "tensorflow":
        keep_tensorflow_unloaded()
    else:
        import tensorflow

        # The CUDA-capable "tensorflow" wheel probes for a GPU when devices are first listed and
        # logs "failed call to cuInit" on a machine without one: list them here, still quiet.
        tensorflow.config.list_physical_devices("GPU")


def keep_tensorflow_unloaded() -> None:
    """On JAX or PyTorch, stop Keras importing TensorFlow for its optional paths.

    Keras imports TensorFlow whenever it is installed, whatever the backend, to seed ``tf.random``
    (``keras.utils.set_random_seed``) or to check for ``tf.TensorShape`` when it saves a model:
    seconds and hundreds of MB on a backend that never uses it. While TensorFlow is not loaded,
    this marks Keras's lazy TensorFlow module unavailable (a private flag: ``tests/test_backends.py``
    runs a JAX smoke run where TensorFlow is importable and fails if anything imported it). Code
    that does need TensorFlow on these backends (the SavedModel / ONNX / LiteRT exports) imports it
    itself, which this does not prevent."""
    import keras

    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        return
    from keras.src.utils import module_utils

    if module_utils.tensorflow.module is None:
        module_utils.tensorflow._available = False


def import_backend_quietly() -> None:
    """Import Keras and its backend once, hiding native start-up noise unless verbose is asked for."""
    if "keras" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1"):
        _import_backend()
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        _import_backend()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
