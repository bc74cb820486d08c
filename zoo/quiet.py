"""Import Keras (and TensorFlow, when it is the backend) without native start-up banners.

TensorFlow 2.21 writes its banners (oneDNN, CPU features, CUDA probing) through absl before
``TF_CPP_MIN_LOG_LEVEL`` is read, so the only reliable silencer is to point file descriptor 2 at
/dev/null for the duration of the import. Python-level errors still surface: the exception is raised
after stderr is restored. On the JAX and PyTorch backends TensorFlow is never imported.
"""

from __future__ import annotations

import os
import sys


def _import_backend() -> None:
    import keras

    if keras.backend.backend() != "tensorflow":
        from zoo.backend import keep_tensorflow_unloaded

        keep_tensorflow_unloaded()
    else:
        import tensorflow

        # The CUDA-capable "tensorflow" wheel probes for a GPU when devices are first listed and
        # logs "failed call to cuInit" on a machine without one: list them here, still quiet.
        tensorflow.config.list_physical_devices("GPU")


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
