"""Image IO: the file suffixes zoobench reads, the one decoder to 8-bit RGB, and the one resize.

Dataset folders (``benchmark.data.datasets``), ``zoobench predict`` (``ensembles.images``, which adds
the checks a user's file needs first) and the runner's input sizes all go through these functions,
so a model sees at predict time exactly the pixels it was trained on: same decoder (OpenCV's
8-bit colour decode, which also applies a JPEG's EXIF orientation), same resize.
OpenCV is imported on first use, so reading :data:`SUFFIXES` costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from benchmark.errors import DataError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


class ImageError(DataError):
    """A file that cannot be used as an image; the message starts with the file's name."""


def decode(
    source: str | os.PathLike | bytes | bytearray | memoryview | np.ndarray,
    *,
    name: str | os.PathLike | None = None,
    fmt: str | None = None,
) -> np.ndarray:
    """Decode an image file, or its encoded bytes, to a uint8 (H, W, 3) RGB array.

    Gray, palette and alpha images become RGB (alpha is dropped), 16-bit images 8-bit, as
    OpenCV's ``IMREAD_COLOR`` does. TIFFs that it cannot read at 8 bits (float samples) are read
    as they are and scaled by :func:`to_rgb8`. Failures raise :class:`ImageError` naming ``name``
    (default: the path, or "image" for bytes) and ``fmt``, the format a caller read from the
    header (``"png"``), when given: one line, no traceback worth showing.
    """
    import cv2

    if isinstance(source, (str, os.PathLike)):
        name = source if name is None else name
        try:
            data = np.fromfile(source, dtype=np.uint8)
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
    else:
        data = np.frombuffer(source, dtype=np.uint8)
    name = "image" if name is None else name
    if not data.size:
        raise ImageError(f"{name}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is not None and image.size:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if data[:4].tobytes() in _TIFF_MAGIC:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if image is not None and image.size:
            return to_rgb8(image, name)
    what = f"truncated or corrupt {fmt.upper()} file" if fmt else "corrupt or not an image"
    raise ImageError(f"{name}: {what} (cannot decode)")


def to_rgb8(image: np.ndarray, name: str | os.PathLike = "image") -> np.ndarray:
    """An OpenCV array as decoded (gray, BGR, BGRA; 8/16-bit or float) as 8-bit RGB."""
    import cv2

    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) / 257.0).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(image)) <= 1.0 else 1.0
        image = np.clip(np.nan_to_num(image) * scale, 0, 255).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[..., 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageError(f"{name}: unsupported number of channels ({channels})")


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One uint8 image at ``size`` (H, W): area averaging when shrinking, bilinear when enlarging.

    Training data and prediction inputs go through this same function, so a member sees the same
    pixels at predict time as in training. An image already at ``size`` is returned as it is.
    """
    import cv2

    h, w = size
    if image.shape[:2] == (h, w):
        return image
    interp = cv2.INTER_AREA if h < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def resize_batch(images: Sequence[np.ndarray] | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB images of any sizes as one uint8 (N, H, W, 3) batch at ``size`` (H, W), via :func:`resize`."""
    h, w = size
    out = np.empty((len(images), h, w, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = resize(np.asarray(img), (h, w))
    return out


def resize_to(images: np.ndarray, size: int | Sequence[int] | None) -> np.ndarray:
    """``images`` (N, H, W, 3) at ``size`` (a side or (H, W)), via :func:`resize_batch`; the same
    array when ``size`` is None or already theirs. The one rule every path that feeds a model uses
    (training's arrays, prediction, robustness, export checks), so they resize alike."""
    if size is None:
        return images
    h, w = (int(size), int(size)) if isinstance(size, (int, np.integer)) else map(int, size)
    if tuple(images.shape[1:3]) == (h, w):
        return images
    return resize_batch(images, (h, w))
