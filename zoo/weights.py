"""Where pretrained weights come from, and the one switch that builds backbones without them.

ImageNet weights for the keras.applications backbones live in Keras's cache
(``$KERAS_HOME/models``, default ``~/.keras/models``) under keras.applications' own file names;
online, Keras downloads them there. Offline with no cached file, building raises
:class:`WeightsUnavailable` with a one-line message naming the file and the folder to put it in.
The benchmark runner records such a member as skipped with that message as the reason.

Random weights (tests, ``zoobench zoo list`` parameter counts): builders consult
:func:`pretrained_enabled`, which is False inside ``with no_pretrained_weights():`` or when the
environment variable ``ZOOBENCH_NO_PRETRAINED=1`` is set. The registry's ``build()`` signature stays
``(hp, input_shape, num_classes)``.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from zoo.registry import ZooError

log = logging.getLogger(__name__)

NO_PRETRAINED_ENV = "ZOOBENCH_NO_PRETRAINED"
_pretrained: contextvars.ContextVar[bool] = contextvars.ContextVar("zoo_pretrained", default=True)


class WeightsUnavailable(ZooError):
    """Pretrained weights are neither cached nor downloadable; the message says where to put them.

    The runner records such a member as skipped with the message as the reason.
    """


@contextlib.contextmanager
def no_pretrained_weights() -> Iterator[None]:
    """Build pretrained architectures with random weights inside this block (no file needed)."""
    token = _pretrained.set(False)
    try:
        yield
    finally:
        _pretrained.reset(token)


def without_weights(builder: Callable) -> Callable:
    """``builder`` run inside :func:`no_pretrained_weights`: registered as
    ``extra["build_without_weights"]`` so the catalog counts params / FLOPs with no weight file."""

    def build(hp, input_shape, num_classes):
        with no_pretrained_weights():
            return builder(hp, input_shape, num_classes)

    build.__name__ = f"{getattr(builder, '__name__', 'builder')}_without_weights"
    return build


def pretrained_enabled() -> bool:
    """False inside :func:`no_pretrained_weights` or when ``ZOOBENCH_NO_PRETRAINED`` is truthy."""
    if os.environ.get(NO_PRETRAINED_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    return _pretrained.get()


def keras_home() -> Path:
    """``$KERAS_HOME`` (read now, not at Keras's import) or ``~/.keras``."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def keras_models_dir() -> Path:
    """The folder keras.applications reads its weight files from."""
    return keras_home() / "models"


def cache_root() -> Path:
    """zoobench's cache folder: ``$ZOOBENCH_CACHE``, default ``~/.cache/zoobench`` (every cache
    lives under it: weights, data, features, corruptions, calibration, the zoo index)."""
    root = os.environ.get("ZOOBENCH_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "zoobench"


def cache_dir() -> Path:
    """Converted weights live here: ``$ZOOBENCH_CACHE/weights`` or ``~/.cache/zoobench/weights``."""
    return cache_root() / "weights"


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (keys the converted-weights cache to the exact source file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def keras_weights_file(
    architecture: str, file_name: str, origin: str, file_hash: str | None = None
) -> Path:
    """Path of a keras.applications weights file: the cached copy, else a download into the cache.

    Raises :class:`WeightsUnavailable` (one line, naming the file and folder) when the file is not
    cached and the download fails, e.g. offline.
    """
    folder = keras_models_dir()
    path = folder / file_name
    if path.is_file() and path.stat().st_size > 0:
        return path
    try:
        import keras

        fetched = keras.utils.get_file(
            file_name,
            origin,
            cache_subdir="models",
            cache_dir=str(keras_home()),
            file_hash=file_hash,
        )
    except Exception as exc:  # noqa: BLE001 - any download failure means "not available here"
        reason = " ".join(str(exc).split()).split(" -- ")[-1][:120]
        raise WeightsUnavailable(
            f"ImageNet weights for {architecture} are not available offline: place {file_name} in "
            f"{folder} (from {origin}); download failed: {reason}"
        ) from None
    return Path(fetched)
