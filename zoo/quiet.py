"""Import TensorFlow without its C++ start-up banners (oneDNN, CPU features, CUDA probing).

TensorFlow 2.21 writes these through absl before ``TF_CPP_MIN_LOG_LEVEL`` is read, so the only
reliable silencer is to point file descriptor 2 at /dev/null for the duration of the import.
Python-level errors still surface: the exception is raised after stderr is restored.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (and Keras) once, hiding native start-up noise unless verbose is asked for."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1"):
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
