"""The 5x5 sample grid: the first picture anyone should look at before training on a dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def sample_indices(labels: np.ndarray, count: int = 25, seed: int = 0) -> np.ndarray:
    """``count`` indices spread over the classes (round-robin by class), reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    picked: list[int] = []
    depth = 0
    while len(picked) < count and any(depth < len(ix) for ix in by_class):
        picked.extend(int(ix[depth]) for ix in by_class if depth < len(ix))
        depth += 1
    return np.asarray(picked[:count], dtype=np.int64)


def sample_grid(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    rows: int = 5,
    cols: int = 5,
    title: str | None = None,
    dpi: int = 110,
) -> None:
    """Write a rows x cols grid of uint8 RGB ``images`` with their class names to a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmark.atomic import atomic_path

    n = min(rows * cols, len(images))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.75))
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], interpolation="nearest")
            ax.set_title(str(class_names[int(labels[i])]), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
