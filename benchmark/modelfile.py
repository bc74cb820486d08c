"""Save a ``.keras`` file atomically, and load one the one safe way, with failures phrased as one line naming the file.

Every model zoobench reads back (a member, the exported best, a ``member:`` backbone) is loaded
here: ``keras.saving.load_model(path, safe_mode=True, compile=False)`` after ``zoo.list_models()``
(which imports the zoo's modules and plugins, registering their layers). A file holding code that
safe mode refuses (a ``Lambda`` layer's Python function, an unregistered class) or a file Keras
cannot read is the user's file, not a bug: a :class:`ZoobenchError` naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmark import atomic
from benchmark.errors import ZoobenchError

# Phrases of Keras's refusals in safe mode ("... pass `safe_mode=False` ...", "Could not locate
# class 'X'. Make sure custom classes are decorated with `@keras.saving.register_keras_serializable`").
_UNSAFE_MARKERS = ("safe_mode", "unsafe_deserialization", "arbitrary code execution")
_UNKNOWN_CLASS_MARKERS = ("could not locate class", "could not locate function")


def load_model(path: str | os.PathLike, what: str = "model"):
    """The Keras model saved at ``path``, loaded in safe mode; a ZoobenchError naming ``what`` and
    the file when it is missing, holds code safe mode refuses, or cannot be read."""
    import keras

    import zoo

    path = Path(path)
    zoo.list_models()  # imports the zoo's modules (and plugins): their layers become loadable
    if not path.is_file():
        raise ZoobenchError(f"{what}: {path} does not exist")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - whatever Keras says, the file is the user's
        raise ZoobenchError(load_error(path, exc, what)) from exc


def load_error(path: str | os.PathLike, exc: BaseException, what: str = "model") -> str:
    """One line saying why the ``.keras`` file at ``path`` did not load."""
    text = " ".join(str(exc).split())
    low = text.lower()
    if any(m in low for m in _UNSAFE_MARKERS):
        layer = _refused_layer(text)
        return (
            f"{what}: {path} contains code{layer} that safe mode refuses to load; zoobench loads "
            "only Keras's own layers and those the zoo registers (a Lambda layer or another "
            "Python function in a model is not allowed)"
        )
    if any(m in low for m in _UNKNOWN_CLASS_MARKERS):
        return (
            f"{what}: {path} uses a layer or function zoobench does not know ({text[:160]}); "
            "only Keras's own layers and those the zoo registers load in safe mode"
        )
    return f"{what}: cannot load {path} ({type(exc).__name__}: {text[:200]})"


def _refused_layer(text: str) -> str:
    """`` (a Lambda layer)`` when Keras's message names the layer class, else ``""``."""
    import re

    found = re.search(r"deserialization of a `(\w+)` layer", text)
    return f" (a {found.group(1)} layer)" if found else ""


def save_model(model, path: str | os.PathLike) -> None:
    """``model.save`` to a temp file beside ``path``, then rename: never a half-written model."""
    with atomic.atomic_path(Path(path).with_suffix(".keras")) as tmp:
        final_tmp = tmp.with_name(tmp.name + ".keras")  # Keras insists on the .keras suffix
        try:
            model.save(final_tmp)
            os.replace(final_tmp, tmp)
        finally:
            final_tmp.unlink(missing_ok=True)
