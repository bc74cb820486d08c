"""A restricted unpickler: pickled data files may only rebuild the plain types we expect.

The official CIFAR batches are pickles; a plain ``pickle.load`` on a file someone handed you runs
arbitrary code. This loader admits only NumPy array reconstruction plus builtin containers.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

NUMPY_ARRAY_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        # Protocol-2 pickles written by Python 3 encode bytes as _codecs.encode(str, "latin1"): pure.
        ("_codecs", "encode"),
    }
)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global not in ``allowed``."""

    def __init__(self, file: io.BufferedIOBase, allowed: Iterable[tuple[str, str]], **kwargs: Any):
        super().__init__(file, **kwargs)
        self._allowed = frozenset(allowed)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not a type this data file may contain"
            )
        return super().find_class(module, name)


def load_restricted(
    path: str | Path, allowed: Iterable[tuple[str, str]] = NUMPY_ARRAY_GLOBALS
) -> Any:
    """Unpickle ``path`` with ``encoding='bytes'`` (the CIFAR batches were written by Python 2)."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, allowed, encoding="bytes").load()
