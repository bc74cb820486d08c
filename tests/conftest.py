"""Shared fixtures: tiny real CIFAR-10 pictures (an in-repo JPEG copy), and tiny synthetic sets."""

from __future__ import annotations

import gc
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
# The full CIFAR-10 JPEG copy (50,000 + 10,000 pictures): only the tests marked ``slow`` that truly
# need it (``full_jpg``) read it, and they skip where it is absent.
SHARED_JPG = Path(
    os.environ.get("ZOOBENCH_TEST_JPG", REPO.parent / "shared" / "data" / "cifar10-jpg")
)
# 600 of those pictures copied byte for byte, in the same <split>/<class>/NNNN.jpg layout
# (tests/data/cifar10-tiny/README.md): 50 a class from train (0000-0049), 10 a class from test
# (0000-0009). Every other test that needs real pixels reads this, so a fresh clone runs them all.
TINY_JPG = Path(__file__).resolve().parent / "data" / "cifar10-tiny"
TINY_PER_CLASS = {"train": 50, "test": 10}
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@pytest.fixture(autouse=True, scope="session")
def _own_zoobench_cache(tmp_path_factory):
    """The suite never writes into the user's ~/.cache/zoobench (features, calibration, data):
    a session-wide cache folder unless ZOOBENCH_CACHE is set already."""
    if "ZOOBENCH_CACHE" not in os.environ:
        os.environ["ZOOBENCH_CACHE"] = str(tmp_path_factory.mktemp("zoobench-cache"))
    yield


def _read_jpg(path: Path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(autouse=True, scope="module")
def _gc_frozen_heap():
    """Speed only. Keras's ``clear_session()`` (before each zoo build, each tuner trial) runs
    ``gc.collect()``, which walks every live Python object: over a million late in the suite, about
    a third of its run time. Once per test module: collect, then freeze what survived, so those
    collections walk only what the module itself made (dropped objects are still freed)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(scope="session")
def tiny_jpg() -> Path:
    """The in-repo CIFAR-10 JPEG copy: 500 train (so 450 train + 50 val at the default 10%
    validation fraction) and 100 test pictures, balanced; ``datasets.load`` reads it as any copy."""
    return TINY_JPG


@pytest.fixture(scope="session")
def full_jpg() -> Path:
    """The full shared CIFAR-10 JPEG copy; the (slow) tests that need it skip where it is absent."""
    if not (SHARED_JPG / "train" / "airplane").is_dir():
        pytest.skip(f"the shared CIFAR-10 JPEG copy is not at {SHARED_JPG} (set ZOOBENCH_TEST_JPG)")
    return SHARED_JPG


def shrunk_smoke_toml(
    path: Path, *, report: bool = True, ensembles: bool = True, augment: bool = False
) -> Path:
    """The shipped smoke profile on 100 train / 50 val / 50 test pictures in batches of 50 (the
    in-repo copy holds 450 / 50 / 100), written to ``path``; its members, search, ensembles and
    report are the shipped ones (the report or ensembles off when asked; with ``augment``, every
    member trains on flipped, padded-and-cropped batches)."""
    from importlib import resources

    text = (resources.files("benchmark.config") / "profiles" / "smoke.toml").read_text()
    swaps = [
        ("train_size = 300", "train_size = 100"),
        ("val_size = 100", "val_size = 50"),
        ("test_size = 200", "test_size = 50"),
        ("batch_size = 32", "batch_size = 50"),
    ]
    if not report:
        swaps.append(("[report]\nenabled = true", "[report]\nenabled = false"))
    if not ensembles:
        swaps.append(("[ensembles]\nenabled = true", "[ensembles]\nenabled = false"))
    if augment:
        swaps.append(
            ("[training]\n", '[training]\naugment = [{ name = "flip" }, { name = "pad_crop" }]\n')
        )
    for old, new in swaps:
        assert text.count(old) == 1, f"smoke.toml changed: {old!r} is not there once"
        text = text.replace(old, new)
    path.write_text(text)
    return path


def real_cifar(split: str, per_class: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` real CIFAR-10 pictures of each class from the in-repo copy (uint8, int64)."""
    if offset + per_class > TINY_PER_CLASS[split]:
        raise ValueError(
            f"tests/data/cifar10-tiny/{split} holds {TINY_PER_CLASS[split]} pictures a class; "
            f"asked for {per_class} from {offset}"
        )
    xs, ys = [], []
    for label, name in enumerate(CIFAR10_CLASSES):
        for i in range(offset, offset + per_class):
            xs.append(_read_jpg(TINY_JPG / split / name / f"{i:04d}.jpg"))
            ys.append(label)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


@pytest.fixture(scope="session")
def real_images() -> tuple[np.ndarray, np.ndarray]:
    """200 real CIFAR-10 training pictures (20 a class): real pixels for preprocessing tests."""
    return real_cifar("train", 20)


def write_cifar_batches(
    folder: Path, per_class_train: int = 6, per_class_test: int = 2, seed: int = 0
) -> Path:
    """A tiny ``cifar-10-batches-py`` in the official pickle format (5 data batches + test_batch)."""
    rng = np.random.default_rng(seed)
    out = folder / "cifar-10-batches-py"
    out.mkdir(parents=True)

    def batch(n_per_class: int) -> dict:
        labels = np.repeat(np.arange(10), n_per_class)
        images = rng.integers(0, 256, size=(len(labels), 32, 32, 3), dtype=np.uint8)
        images[..., 0] = labels[:, None, None] * 20  # red channel encodes the label: checkable
        data = images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)
        return {b"batch_label": b"synthetic", b"labels": labels.tolist(), b"data": data}

    for i in range(1, 6):
        with open(out / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_class_train), f, protocol=2)
    with open(out / "test_batch", "wb") as f:
        pickle.dump(batch(per_class_test), f, protocol=2)
    return out


def write_class_folders(
    root: Path, classes=CIFAR10_CLASSES, per_class=(8, 3), size=32, ext=".png", seed=0
) -> Path:
    """A tiny ``<split>/<class>/*.png`` tree whose red channel encodes the label."""
    import cv2

    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "test"), per_class, strict=True):
        for label, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                rgb = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                rgb[..., 0] = label * 20
                cv2.imwrite(str(d / f"{i:04d}{ext}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture
def calibration(tmp_path, monkeypatch):
    """An empty calibration file of its own (the planner's probes, the cost model's device rates),
    on a fixed machine key."""
    from benchmark.plan import budget

    monkeypatch.setenv("ZOOBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(budget, "_machine_key", lambda: "cpu2-test")
    monkeypatch.setattr(budget, "_quiet", None)
    return tmp_path / "calibration.json"
