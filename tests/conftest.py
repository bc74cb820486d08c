"""Shared fixtures: tiny real CIFAR-10 pictures from the shared JPEG copy, and tiny synthetic sets."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_JPG = Path(
    os.environ.get("ZOOBENCH_TEST_JPG", REPO.parent / "shared" / "data" / "cifar10-jpg")
)
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


def _read_jpg(path: Path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="session")
def shared_jpg() -> Path:
    """The shared CIFAR-10 JPEG copy; tests that need it skip where it is absent."""
    if not (SHARED_JPG / "train" / "airplane").is_dir():
        pytest.skip(f"the shared CIFAR-10 JPEG copy is not at {SHARED_JPG} (set ZOOBENCH_TEST_JPG)")
    return SHARED_JPG


def real_cifar(split: str, per_class: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` real CIFAR-10 pictures of each class from the shared copy (uint8, int64)."""
    if not (SHARED_JPG / split / "airplane").is_dir():
        pytest.skip(f"the shared CIFAR-10 JPEG copy is not at {SHARED_JPG}")
    xs, ys = [], []
    for label, name in enumerate(CIFAR10_CLASSES):
        for i in range(offset, offset + per_class):
            xs.append(_read_jpg(SHARED_JPG / split / name / f"{i:04d}.jpg"))
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
