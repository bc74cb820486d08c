"""The notebook's label and pixel encodings, as plain NumPy functions with checked inputs."""

from __future__ import annotations

import numpy as np

from benchmark.errors import ZoobenchError


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]. Zoo models do this themselves (a Rescaling layer); this is
    for code outside a model, e.g. plotting or scikit-learn baselines."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ZoobenchError(f"to_unit_range expects uint8 pixels, got {images.dtype}")
    return images.astype(np.float32) / 255.0


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer labels (N,) or (N, 1) -> float32 one-hot (N, num_classes)."""
    labels = np.asarray(labels).reshape(-1)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ZoobenchError(f"one_hot expects integer labels, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ZoobenchError(
            f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    return np.eye(num_classes, dtype=np.float32)[labels]


def sparse(labels: np.ndarray) -> np.ndarray:
    """One-hot or soft labels (N, C) -> integer labels (N,) (the most likely class)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ZoobenchError(f"sparse expects (N, classes) labels, got shape {labels.shape}")
    return labels.argmax(axis=1).astype(np.int64)
