"""zoobench's benchmark package: datasets, preprocessing, augmentation, training, the run store, CLI.

Importing this package is cheap: Keras and its backend are imported only when a command trains,
augments or loads a model.
"""

import os as _os

# TensorFlow's C++ start-up noise (oneDNN / CUDA / cpu-feature banners) is silenced unless the user asks
# for it by setting TF_CPP_MIN_LOG_LEVEL themselves (or passing `zoobench --verbose`).
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["Benchmark", "load"]


def load(name: str, **kwargs):
    """Load a dataset split into train / val / test (see :func:`benchmark.data.datasets.load`)."""
    from benchmark.data.datasets import load as _load

    return _load(name, **kwargs)


def __getattr__(name: str):
    """``benchmark.Benchmark`` without importing the runner (and TensorFlow) on ``import benchmark``."""
    if name == "Benchmark":
        from benchmark.api import Benchmark

        return Benchmark
    raise AttributeError(f"module 'benchmark' has no attribute {name!r}")
