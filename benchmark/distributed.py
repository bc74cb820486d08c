"""Running on several devices or machines: data parallelism and Keras Tuner's chief/workers.

Two independent mechanisms:

- ``--strategy mirrored|multi-worker`` wraps each member's model building and training in the
  backend's own data-parallel engine: a ``tf.distribute`` strategy scope on TensorFlow (all local
  GPUs, or the cluster named by ``TF_CONFIG``), a ``keras.distribution.DataParallel`` scope on JAX
  (all local devices, or every process's after ``keras.distribution.initialize()``, which reads
  the JAX coordinator's environment). PyTorch has no Keras data-parallel engine: it is refused.
- ``--chief [HOST:]PORT`` / ``--worker HOST:PORT`` (or Keras Tuner's own ``KERASTUNER_TUNER_ID``,
  ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``) split each search's trials across processes:
  the chief serves the oracle and then turns the best trials into members; workers run trials. The
  search of the profile's k-th tuned member uses PORT + k (dropped members keep their number), so
  a worker never talks to another search's oracle.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from benchmark.errors import ZoobenchError

STRATEGIES = ("none", "mirrored", "multi-worker")
ENV_ID, ENV_IP, ENV_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"


def make_strategy(name: str | None):
    """The data-parallel strategy called ``name`` on this backend (None or "none": no strategy)."""
    if name in (None, "", "none"):
        return None
    if name not in STRATEGIES:
        raise ZoobenchError(
            f"--strategy: unknown strategy {name!r} (one of {', '.join(STRATEGIES)})"
        )
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        if name == "multi-worker":
            keras.distribution.initialize()
        return keras.distribution.DataParallel(devices=keras.distribution.list_devices())
    if backend != "tensorflow":
        raise ZoobenchError(
            f"--strategy {name}: the {backend} backend has no Keras data-parallel engine; "
            "use the tensorflow or jax backend"
        )
    import tensorflow as tf

    if name == "mirrored":
        if not tf.config.list_logical_devices("GPU"):  # CPU only: mirror over the logical CPUs
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            if len(cpus) > 1:
                return tf.distribute.MirroredStrategy(devices=cpus)
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()


def scope(strategy) -> contextlib.AbstractContextManager[Any]:
    """``strategy.scope()`` (a tf.distribute strategy or a keras.distribution), or a no-op."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _split_address(text: str, option: str, need_host: bool) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep:
        host, port = "", str(text)
    if need_host and not host:
        raise ZoobenchError(f"{option}: give HOST:PORT of the chief, got {text!r}")
    try:
        number = int(port)
    except ValueError:
        raise ZoobenchError(f"{option}: {port!r} is not a port number") from None
    if not 0 < number < 65536:
        raise ZoobenchError(f"{option}: port {number} is out of range")
    return host, number


def configure_tuning(chief: str | None = None, worker: str | None = None,
                     tuner_id: str | None = None) -> str | None:  # fmt: skip
    """Set Keras Tuner's environment for the chief or a worker; returns the role (None: alone).

    The chief binds 127.0.0.1 unless ``chief`` names a host (``0.0.0.0`` to listen everywhere).
    """
    if chief and worker:
        raise ZoobenchError("--chief and --worker exclude each other")
    # Validate everything before touching the environment: a refused call changes nothing.
    if chief:
        host, port = _split_address(chief, "--chief", need_host=False)
        settings = {ENV_IP: host or "127.0.0.1", ENV_PORT: str(port), ENV_ID: "chief"}
    elif worker:
        host, port = _split_address(worker, "--worker", need_host=True)
        tuner = tuner_id or os.environ.get(ENV_ID) or f"worker-{os.getpid()}"
        if "chief" in tuner:
            raise ZoobenchError(f"a worker's tuner id must not contain 'chief': {tuner!r}")
        settings = {ENV_IP: host, ENV_PORT: str(port), ENV_ID: tuner}
    else:
        settings = {}
    os.environ.update(settings)
    return role()


def role() -> str | None:
    """ "chief", "worker" or None, from the KERASTUNER_* environment."""
    if ENV_IP not in os.environ:
        return None
    for name in (ENV_PORT, ENV_ID):
        if name not in os.environ:
            raise ZoobenchError(
                f"{ENV_IP} is set but {name} is not: set both (or use --chief/--worker)"
            )
    return "chief" if "chief" in os.environ[ENV_ID] else "worker"


@contextlib.contextmanager
def search_port(index: int):
    """Point KERASTUNER_ORACLE_PORT at PORT + ``index`` for the ``index``-th search of a run."""
    if role() is None:
        yield
        return
    base = os.environ.setdefault("ZOOBENCH_BASE_ORACLE_PORT", os.environ[ENV_PORT])
    os.environ[ENV_PORT] = str(int(base) + index)
    try:
        yield
    finally:
        os.environ[ENV_PORT] = base
