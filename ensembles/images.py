"""Read user images for prediction safely: check the header first, then decode to 8-bit RGB.

Pictures come from anywhere, so every way a file can be wrong gets a one-line
:class:`ImageError` naming the file: missing, empty, not an image, truncated or corrupt, too small,
or so large that decoding it would exhaust memory. The size check parses width and height from
the PNG / JPEG / BMP / GIF / WebP / TIFF header *before* anything is decoded. Only these checks
live here; the suffixes, the decoder and the resize are ``benchmark.data.images``', the ones dataset
folders are read with, so a prediction sees the pixels training saw.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import numpy as np

from benchmark.data.images import SUFFIXES, ImageError, decode

log = logging.getLogger(__name__)

MAX_PIXELS = 50_000_000  # 50 MP: a decoded 8-bit RGB copy is 150 MB, the float batch more
MIN_SIDE = 8


def collect_images(paths: list[str | os.PathLike]) -> tuple[list[Path], list[ImageError]]:
    """Expand files and folders (images directly inside a folder, sorted) into a list of files.

    Problems with a path (missing, a folder without images) are returned, not raised, so the other
    inputs can still be predicted.
    """
    files: list[Path] = []
    errors: list[ImageError] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
            )
            if not found:
                errors.append(ImageError(f"{path}: folder has no images ({', '.join(SUFFIXES)})"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(ImageError(f"{path}: no such file or folder"))
    return files, errors


def header_size(head: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) from the first bytes of a file, or None when no format matches."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])
        return "png", w, h
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        w, h = struct.unpack("<HH", head[6:10])
        return "gif", w, h
    if head.startswith(b"BM") and len(head) >= 26:
        size = struct.unpack("<I", head[14:18])[0]
        if size == 12:
            w, h = struct.unpack("<HH", head[18:22])
        else:
            w, h = struct.unpack("<ii", head[18:26])
        return "bmp", abs(w), abs(h)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8 ":
            w, h = struct.unpack("<HH", head[26:30])
            return "webp", w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L":
            b = head[21:25]
            w = 1 + (((b[1] & 0x3F) << 8) | b[0])
            h = 1 + (((b[3] & 0xF) << 10) | (b[2] << 2) | ((b[1] & 0xC0) >> 6))
            return "webp", w, h
        if chunk == b"VP8X":
            w = 1 + int.from_bytes(head[24:27], "little")
            h = 1 + int.from_bytes(head[27:30], "little")
            return "webp", w, h
        return None
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(head)
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    return None


def _tiff_size(head: bytes) -> tuple[str, int, int] | None:
    end = "<" if head[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(end + "I", head[4:8])
        (count,) = struct.unpack(end + "H", head[ifd : ifd + 2])
        dims: dict[int, int] = {}
        for i in range(count):
            off = ifd + 2 + 12 * i
            tag, typ = struct.unpack(end + "HH", head[off : off + 4])
            if tag in (256, 257):
                fmt = "H" if typ == 3 else "I"
                dims[tag] = struct.unpack(
                    end + fmt, head[off + 8 : off + 8 + struct.calcsize(fmt)]
                )[0]
    except struct.error:
        return None
    if 256 in dims and 257 in dims:
        return "tiff", dims[256], dims[257]
    return None


def _jpeg_size(head: bytes) -> tuple[str, int, int] | None:
    """Walk the JPEG markers to the first start-of-frame (SOF0..SOF15 but DHT/JPG/DAC)."""
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        (length,) = struct.unpack(">H", head[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", head[i + 5 : i + 9])
            return "jpeg", w, h
        i += 2 + length
    return None


def _looks_truncated(fmt: str, data: bytes) -> bool:
    """Decoders often return a half-grey picture for a cut file; check the end marker instead."""
    if fmt == "png":
        return b"IEND" not in data[-64:]
    if fmt == "jpeg":
        return b"\xff\xd9" not in data[-1024:]
    return False


def read_image(
    path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE
) -> np.ndarray:
    """Check ``path``, then decode it to an 8-bit RGB (H, W, 3) array, or raise an :class:`ImageError`."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    if size == 0:
        raise ImageError(f"{path}: empty file")
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    info = header_size(head)
    if info is None and head.startswith(b"\xff\xd8") and size > len(head):
        with open(path, "rb") as f:  # a big EXIF block can push the frame header further
            info = header_size(f.read(4 * 1024 * 1024))
    if info is None:
        raise ImageError(f"{path}: not an image (no PNG, JPEG, BMP, TIFF or WebP header)")
    fmt, width, height = info
    if width * height > max_pixels:
        raise ImageError(
            f"{path}: image is {width}x{height} px ({width * height / 1e6:.0f} MP), over the "
            f"{max_pixels / 1e6:.0f} MP limit"
        )
    if min(width, height) < min_side:
        raise ImageError(
            f"{path}: image is {width}x{height} px; need at least {min_side} px a side"
        )
    data = np.fromfile(path, dtype=np.uint8)
    if _looks_truncated(fmt, data[-1024:].tobytes()):
        raise ImageError(f"{path}: truncated or corrupt {fmt.upper()} file")
    return decode(data, name=path, fmt=fmt)
