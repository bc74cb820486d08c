"""Generated corruptions: a shifted test domain made from the test split, CIFAR-10-C style.

    shifted = corrupt(images, "gaussian_noise", severity=3, seed=0)          # uint8 in, uint8 out
    split = corrupted_split(x_test, y_test, config, seed=0)                  # cached, seeded

Eight corruptions of Hendrycks & Dietterich (2019, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations"), each at severities 1-5 with the parameters of their
``make_cifar_c.py`` (written for 32x32 pictures; the two blurs' pixel sizes are scaled by the
image side / 32 for other sizes), in :data:`PARAMETERS`. Only NumPy and OpenCV: Gaussian and shot
(Poisson) noise, Gaussian blur, motion blur (a one-sided Gaussian line kernel at a random angle, as
ImageMagick's motion blur that CIFAR-10-C used), JPEG re-encoding, contrast, brightness (HSV value)
and pixelation. Every random draw comes from a generator seeded by (seed, corruption, severity),
so the same call gives the same bytes on any machine, and one corruption's draws do not depend on
which others are asked for.

The split is a seeded, class-stratified subset of the test images (the test split of a
class-folder copy is ordered by class, so its first images would be one class), used only for
reporting. It is cached in ``$ZOOBENCH_CACHE/corruptions/`` under a key made of the chosen images'
bytes, :data:`PARAMETERS`, the corruptions, severities and seed; the file is written atomically
and one that cannot be read or does not hold what its key promises is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import atomic
from benchmark.config.schema import CORRUPTIONS, SEVERITIES

log = logging.getLogger(__name__)

VERSION = 1  # bump when an implementation below changes what it produces
BASE_SIDE = 32  # the image side the pixel-sized parameters are written for (CIFAR-10-C)

# name -> (parameter, its value at severities 1..5, what it means). CIFAR-10-C's values.
PARAMETERS: dict[str, tuple[str, tuple[float, ...], str]] = {
    "gaussian_noise": (
        "sigma",
        (0.04, 0.06, 0.08, 0.09, 0.10),
        "std of additive Gaussian noise, in units of the 0-1 pixel range",
    ),
    "shot_noise": (
        "photons",
        (500, 250, 100, 75, 50),
        "Poisson noise: pixel = Poisson(photons * x) / photons",
    ),
    "gaussian_blur": (
        "sigma_px",
        (0.4, 0.6, 0.7, 0.8, 1.0),
        "std of a Gaussian blur, pixels at 32 px",
    ),
    "motion_blur": (
        "sigma_px",
        (1.0, 1.5, 2.0, 2.5, 3.0),
        "one-sided Gaussian line kernel, pixels at 32 px, angle uniform in [-45, 45]",
    ),
    "jpeg": ("quality", (80, 65, 58, 50, 40), "JPEG re-encoding quality (OpenCV / libjpeg)"),
    "contrast": (
        "factor",
        (0.75, 0.5, 0.4, 0.3, 0.15),
        "pixel = (x - channel mean) * factor + channel mean",
    ),
    "brightness": ("delta_v", (0.05, 0.1, 0.15, 0.2, 0.3), "added to the HSV value (0-1)"),
    "pixelate": (
        "scale",
        (0.95, 0.9, 0.85, 0.75, 0.65),
        "shrunk to scale x side, then back up (area interpolation both ways)",
    ),
}
NOISY = frozenset({"gaussian_noise", "shot_noise", "motion_blur"})  # those that draw randomness
assert tuple(PARAMETERS) == CORRUPTIONS, (
    "benchmark.config.schema.CORRUPTIONS and PARAMETERS must agree"
)


def parameter(name: str, severity: int) -> float:
    """The value of ``name``'s parameter at ``severity`` (1-5)."""
    _check(name, severity)
    return PARAMETERS[name][1][severity - 1]


def describe(names: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES) -> str:
    """One line naming the generated corruptions and their parameters (the report states it)."""
    parts = []
    for name in names:
        param, values, _ = PARAMETERS[name]
        shown = ", ".join(f"{values[s - 1]:g}" for s in severities)
        parts.append(f"{name} ({param} {shown})")
    return (
        f"severities {', '.join(str(s) for s in severities)}: "
        + "; ".join(parts)
        + " (CIFAR-10-C's parameters; blur pixels scaled by image side / 32)"
    )


def _check(name: str, severity: int) -> None:
    if name not in PARAMETERS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(PARAMETERS)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")


def _rng(name: str, severity: int, seed: int) -> np.random.Generator:
    """One generator per (seed, corruption, severity): crc32 is stable across runs and machines."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(severity)])


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``images`` (uint8, (N, H, W, 3)) with corruption ``name`` at ``severity``; uint8, same shape."""
    _check(name, severity)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if not len(images):
        return images.copy()
    value = parameter(name, severity)
    rng = _rng(name, severity, seed)
    if name == "jpeg":
        return np.stack([_jpeg(img, int(value)) for img in images])
    x = images.astype(np.float32) / 255.0
    scale = images.shape[1] / BASE_SIDE
    if name == "gaussian_noise":
        x = x + rng.normal(0.0, value, size=x.shape).astype(np.float32)
    elif name == "shot_noise":
        x = (rng.poisson(x.astype(np.float64) * value) / value).astype(np.float32)
    elif name == "gaussian_blur":
        x = np.stack([_gaussian_blur(img, value * scale) for img in x])
    elif name == "motion_blur":
        angles = rng.uniform(-45.0, 45.0, size=len(x))
        x = np.stack(
            [_motion_blur(img, value * scale, a) for img, a in zip(x, angles, strict=True)]
        )
    elif name == "contrast":
        means = x.mean(axis=(1, 2), keepdims=True)
        x = (x - means) * value + means
    elif name == "brightness":
        x = np.stack([_brightness(img, value) for img in x])
    elif name == "pixelate":
        x = np.stack([_pixelate(img, value) for img in x])
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def motion_kernel(sigma: float, angle: float) -> np.ndarray:
    """A normalised one-sided Gaussian line kernel (ImageMagick's motion blur) rotated by ``angle``."""
    import cv2

    length = int(np.ceil(3 * sigma)) + 1
    size = 2 * length + 1
    kernel = np.zeros((size, size), np.float32)
    weights = np.exp(-(np.arange(length, dtype=np.float32) ** 2) / (2 * sigma**2))
    kernel[length, length : length + length] = weights
    rotation = cv2.getRotationMatrix2D((float(length), float(length)), float(angle), 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (size, size), flags=cv2.INTER_LINEAR)
    return kernel / kernel.sum()


def _motion_blur(img: np.ndarray, sigma: float, angle: float) -> np.ndarray:
    import cv2

    return cv2.filter2D(img, -1, motion_kernel(sigma, angle), borderType=cv2.BORDER_REFLECT)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode an image")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def _brightness(img: np.ndarray, delta: float) -> np.ndarray:
    import cv2

    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)  # float32: H in [0, 360), S and V in [0, 1]
    hsv[..., 2] = np.clip(hsv[..., 2] + delta, 0.0, 1.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _pixelate(img: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    small = cv2.resize(
        img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_AREA)


# ---- the cached split ------------------------------------------------------------------------------
@dataclass
class CorruptedSplit:
    """The chosen test images (their indices into the test split) and their corrupted copies."""

    indices: np.ndarray  # into the run's test split, sorted
    labels: np.ndarray
    clean: np.ndarray  # the chosen test images as they are
    images: dict[tuple[str, int], np.ndarray]  # (corruption, severity) -> uint8 (N, H, W, 3)
    key: str  # what the cache file is named by: changes whenever any input changes

    def __len__(self) -> int:
        return len(self.indices)


def pick(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Sorted indices of ``count`` of ``labels``, stratified by class and seeded (all when fewer)."""
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    if count >= len(labels):
        return idx
    rng = np.random.default_rng([int(seed), 17])
    if count < len(np.unique(labels)):
        return np.sort(rng.choice(idx, size=count, replace=False))
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(
        idx, train_size=count, stratify=labels, random_state=int(rng.integers(2**31))
    )
    return np.sort(kept)


def cache_dir() -> Path:
    """``$ZOOBENCH_CACHE/corruptions`` (default ``~/.cache/zoobench/corruptions``)."""
    from zoo.weights import cache_root

    return cache_root() / "corruptions"


def _split_key(
    images: np.ndarray, names: Sequence[str], severities: Sequence[int], seed: int
) -> str:
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "version": VERSION,
                "parameters": PARAMETERS,
                "names": list(names),
                "severities": list(severities),
                "seed": int(seed),
                "shape": list(images.shape),
            },
            sort_keys=True,
        ).encode()
    )
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()[:24]


def _array_name(name: str, severity: int) -> str:
    return f"{name}-{severity}"


def corrupted_split(
    x_test: np.ndarray, y_test: np.ndarray, config: Mapping[str, Any], seed: int = 0
) -> CorruptedSplit:
    """The ``[robustness]`` config's corrupted copies of ``images`` test images, from the cache.

    ``config`` holds ``corruptions``, ``severities`` and ``images`` (benchmark.config.schema's
    ``[robustness]`` table). The images are :func:`pick`-ed from ``x_test``; built on first use.
    """
    names = list(config["corruptions"])
    severities = sorted(int(s) for s in config["severities"])
    indices = pick(y_test, int(config["images"]), seed)
    clean = np.ascontiguousarray(x_test[indices])
    key = _split_key(clean, names, severities, seed)
    path = cache_dir() / f"{key}.npz"
    wanted = [(n, s) for n in names for s in severities]
    images = _read_cache(path, wanted, clean.shape)
    if images is None:
        images = {(n, s): corrupt(clean, n, s, seed) for n, s in wanted}
        with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{_array_name(n, s): a for (n, s), a in images.items()})
        log.info("generated corruptions: %d images x %d -> %s", len(clean), len(wanted), path)
    return CorruptedSplit(indices, np.asarray(y_test)[indices], clean, images, key)


def _read_cache(
    path: Path, wanted: list[tuple[str, int]], shape: tuple[int, ...]
) -> dict[tuple[str, int], np.ndarray] | None:
    """The cached arrays, or None when the file is absent, unreadable or not what it should hold."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            images = {(n, s): data[_array_name(n, s)] for n, s in wanted}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("corruption cache %s cannot be read (%s): rebuilt", path, exc)
        return None
    if any(a.shape != shape or a.dtype != np.uint8 for a in images.values()):
        log.warning("corruption cache %s holds arrays of another shape: rebuilt", path)
        return None
    return images
