"""The Keras backend zoobench runs on (TensorFlow, JAX or PyTorch), chosen the Keras way.

Keras reads ``KERAS_BACKEND`` once, when it is first imported, so :func:`select` must run before
anything imports Keras (the CLI's ``--backend`` does). Everything else here asks the backend that
Keras ended up with, and imports only that backend's library: a JAX- or PyTorch-only install never
imports TensorFlow.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from zoo.registry import ZooError

BACKENDS = ("tensorflow", "jax", "torch")
# The distributions whose versions describe a run on each backend (the first found is recorded).
_BACKEND_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "jax": ("jax", "jaxlib"),
    "torch": ("torch",),
}


def select(name: str | None) -> None:
    """Make ``name`` the Keras backend of this process; refuses once Keras runs on another one."""
    if not name:
        return
    if name not in BACKENDS:
        raise ZooError(f"--backend: unknown backend {name!r} (one of {', '.join(BACKENDS)})")
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != name:
            raise ZooError(
                f"--backend {name}: Keras was already imported with the {current} backend; "
                "set KERAS_BACKEND before starting Python"
            )
        return
    os.environ["KERAS_BACKEND"] = name


def name() -> str:
    """The backend Keras runs on (imports Keras)."""
    import keras

    return keras.backend.backend()


def jit_compile(requested: bool) -> bool:
    """The ``jit_compile`` to give ``Model.compile`` on this backend.

    JAX without XLA runs op by op (many times slower), so JAX always compiles; PyTorch's
    ``torch.compile`` costs minutes of warm-up for small models, so PyTorch never does; TensorFlow
    follows the request (XLA helps some models and hurts others: it is chosen per model).
    """
    backend = name()
    if backend == "jax":
        return True
    if backend == "torch":
        return False
    return bool(requested)


def accelerators() -> list[str]:
    """The GPUs (or other accelerators) the backend sees; empty on a CPU-only machine."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [
            f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices() if d.platform != "cpu"
        ]
    import torch

    if torch.cuda.is_available():
        return [
            f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
        ]
    return []


def library_version() -> str:
    """``backend-version`` of the library under Keras, e.g. ``jax-0.10.2``."""
    backend = name()
    for dist in _BACKEND_DISTRIBUTIONS[backend]:
        try:
            return f"{backend}-{version(dist)}"
        except PackageNotFoundError:
            continue
    return backend


def versions() -> dict[str, str]:
    """Versions of Python and every installed library a run's numbers depend on."""
    out = {"python": platform.python_version()}
    dists = (
        "zoobench",
        "keras",
        "keras-tuner",
        "tensorflow",
        "tensorflow-cpu",
        "jax",
        "jaxlib",
        "torch",
        "numpy",
        "scikit-learn",
        "opencv-python-headless",
        "pandas",
    )
    for dist in dists:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def describe() -> dict[str, Any]:
    """What ran a run: the backend, its devices and the machine (recorded in ``run.json``)."""
    return {
        "backend": name(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": accelerators(),
        "python": sys.version.split()[0],
    }


def enable_determinism() -> None:
    """Ask the backend for deterministic kernels (same seed, same numbers), where it has a switch.

    TensorFlow: op determinism (also serialises stateful tf.data maps). PyTorch: deterministic
    algorithms. JAX is deterministic on CPU; on a GPU, XLA's switch must be in the environment
    before JAX starts (``XLA_FLAGS=--xla_gpu_deterministic_ops=true``).
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed`` without TensorFlow's import on JAX or PyTorch."""
    import keras

    from zoo.quiet import keep_tensorflow_unloaded

    keep_tensorflow_unloaded()
    keras.utils.set_random_seed(seed)
