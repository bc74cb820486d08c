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
from benchmark.config.schema import CIFAR10_C, CORRUPTIONS, SEVERITIES

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
    "impulse_noise": (
        "amount",
        (0.01, 0.02, 0.03, 0.05, 0.07),
        "share of pixel values set to 0 or 1 (salt and pepper, half each)",
    ),
    "defocus_blur": (
        "radius_px, alias_blur",
        ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "disk kernel of that radius at 32 px, anti-aliased by a Gaussian of alias_blur",
    ),
    "glass_blur": (
        "sigma_px, max_delta_px, iterations",
        ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "Gaussian blur, pixels swapped with a random neighbour up to max_delta away, blur again",
    ),
    "zoom_blur": (
        "largest_zoom",
        (1.05, 1.10, 1.15, 1.20, 1.25),
        "mean of the image and its centre zoomed by 1.00, 1.01, ... up to largest_zoom",
    ),
    "snow": (
        "mean, std, zoom, threshold, radius, sigma_px, keep",
        (
            (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
            (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
            (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
            (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
            (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
        ),
        "Gaussian flakes (mean, std), zoomed, below threshold dropped, motion-blurred "
        "(sigma at 32 px, angle uniform in [-135, -45]); image = keep x image + (1 - keep) x "
        "lightened image, plus the flakes and their 180-degree rotation",
    ),
    "frost": (
        "image, frost",
        ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        "image x image weight + a random crop of one of five frost photographs x frost weight",
    ),
    "fog": (
        "strength, decay",
        ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        "a plasma fractal (diamond-square, wibble decay) x strength added, rescaled by the max",
    ),
    "elastic_transform": (
        "alpha, sigma, affine (x side)",
        (
            (0, 0, 0.08),
            (0.05, 0.2, 0.07),
            (0.08, 0.06, 0.06),
            (0.1, 0.04, 0.05),
            (0.1, 0.03, 0.03),
        ),
        "a random affine warp of three points by up to affine x side, then a displacement "
        "field of uniform noise blurred by sigma x side and scaled by alpha x side",
    ),
}
# Those that draw randomness (the others give the same bytes whatever the seed).
NOISY = frozenset(
    {
        "gaussian_noise",
        "shot_noise",
        "motion_blur",
        "impulse_noise",
        "glass_blur",
        "snow",
        "frost",
        "fog",
        "elastic_transform",
    }
)
assert tuple(PARAMETERS) == CORRUPTIONS, (
    "benchmark.config.schema.CORRUPTIONS and PARAMETERS must agree"
)


def parameter(name: str, severity: int) -> Any:
    """The value of ``name``'s parameter at ``severity`` (1-5): a number, or a tuple of them."""
    _check(name, severity)
    return PARAMETERS[name][1][severity - 1]


def describe(names: Sequence[str] = CIFAR10_C, severities: Sequence[int] = SEVERITIES) -> str:
    """One line naming the generated corruptions and their parameters (the report states it)."""
    parts = []
    for name in names:
        param, values, _ = PARAMETERS[name]
        shown = ", ".join(_shown(values[s - 1]) for s in severities)
        parts.append(f"{name} ({param} {shown})")
    return (
        f"severities {', '.join(str(s) for s in severities)}: "
        + "; ".join(parts)
        + " (CIFAR-10-C's parameters; blur pixels scaled by image side / 32)"
    )


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + " ".join(f"{v:g}" for v in value) + ")"
    return f"{value:g}"


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
    elif name in _CIFAR_C_EXTRA:
        x = _CIFAR_C_EXTRA[name](images, x, value, scale, rng)
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


# ---- the rest of CIFAR-10-C (make_cifar_c.py's functions, NumPy and OpenCV only) -------------------
# Each takes the uint8 images, the same as float32 in [0, 1], the severity's value, the image side
# / 32 and the generator, and returns floats in about [0, 1] (clipped and rounded by the caller).
# Where the original called scikit-image, SciPy or ImageMagick, the OpenCV equivalent is named.


def _impulse_noise(images, x, amount, scale, rng):
    # skimage.util.random_noise(mode="s&p"): each value independently, salt and pepper half each
    hit = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    x = x.copy()
    x[hit & salt] = 1.0
    x[hit & ~salt] = 0.0
    return x


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c.py's ``disk``: a normalised aliased disk, smoothed by a small Gaussian."""
    import cv2

    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1), (3, 3)
    else:
        grid, ksize = np.arange(-int(radius), int(radius) + 1), (5, 5)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.asarray(xx**2 + yy**2 <= radius**2, np.float32)
    disk /= disk.sum()
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def _defocus_blur(images, x, value, scale, rng):
    import cv2

    kernel = disk_kernel(value[0] * scale, value[1])
    return np.stack([cv2.filter2D(img, -1, kernel) for img in x])


def _skimage_gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian's default (mode "nearest", truncated at 4 sigma) with OpenCV."""
    import cv2

    if sigma <= 0:
        return img
    radius = max(1, int(4.0 * sigma + 0.5))
    return cv2.GaussianBlur(
        img, (2 * radius + 1, 2 * radius + 1), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE
    )


def _glass_blur(images, x, value, scale, rng):
    sigma, delta, iterations = value[0] * scale, max(1, round(value[1] * scale)), value[2]
    blurred = np.stack([_skimage_gaussian(img, sigma) for img in x])
    out = (blurred * 255).astype(np.uint8)  # the original truncates too
    n, side = len(out), out.shape[1]
    every = np.arange(n)
    # the original's loop, pixel by pixel in the same order, run on every image at once: each image
    # draws its own offsets; randint(-delta, delta) excludes +delta, as there
    for _ in range(iterations):
        for h in range(side - delta, delta, -1):
            offsets = rng.integers(-delta, delta, size=(side, n, 2))
            for w in range(side - delta, delta, -1):
                dy, dx = offsets[w, :, 1], offsets[w, :, 0]
                here = out[every, h, w].copy()
                out[every, h, w] = out[every, h + dy, w + dx]
                out[every, h + dy, w + dx] = here
    return np.stack([_skimage_gaussian(img, sigma) for img in out.astype(np.float32) / 255.0])


def _clipped_zoom(img: np.ndarray, zoom: float) -> np.ndarray:
    """The centre of ``img`` zoomed by ``zoom`` to the same size (scipy.ndimage.zoom, order 1)."""
    import cv2

    h = img.shape[0]
    crop = int(np.ceil(h / zoom))
    top = (h - crop) // 2
    size = int(round(crop * zoom))
    zoomed = cv2.resize(
        img[top : top + crop, top : top + crop], (size, size), interpolation=cv2.INTER_LINEAR
    )
    if zoomed.ndim < img.ndim:
        zoomed = zoomed[..., None]
    trim = (size - h) // 2
    return zoomed[trim : trim + h, trim : trim + h]


def _zoom_blur(images, x, largest, scale, rng):
    zooms = np.arange(1, largest + 0.01, 0.01)  # np.arange(1, 1.06, 0.01) ... as the original
    out = np.empty_like(x)
    for i, img in enumerate(x):
        total = img.copy()
        for zoom in zooms:
            total += _clipped_zoom(img, float(zoom))
        out[i] = total / (len(zooms) + 1)
    return out


def _snow(images, x, value, scale, rng):
    import cv2

    mean, std, zoom, threshold, _radius, sigma, keep = value
    side = x.shape[1]
    out = np.empty_like(x)
    for i, img in enumerate(x):
        flakes = rng.normal(mean, std, size=(side, side, 1)).astype(np.float32)
        flakes = _clipped_zoom(flakes, zoom)[..., 0]
        flakes[flakes < threshold] = 0
        flakes = np.rint(np.clip(flakes, 0, 1) * 255).astype(np.uint8)  # the PNG round trip
        kernel = motion_kernel(sigma * scale, float(rng.uniform(-135, -45)))
        flakes = cv2.filter2D(flakes, -1, kernel, borderType=cv2.BORDER_REFLECT)
        flakes = (flakes.astype(np.float32) / 255.0)[..., None]
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]
        lit = keep * img + (1 - keep) * np.maximum(img, gray * 1.5 + 0.5)
        out[i] = lit + flakes + np.rot90(flakes, k=2)
    return out


_FROST: list[np.ndarray] = []


def frost_textures() -> list[np.ndarray]:
    """The five frost photographs (RGB uint8, already shrunk by 0.2 as make_cifar_c.py does)."""
    if not _FROST:
        import cv2

        folder = Path(__file__).with_name("frost")
        for i in range(1, 6):
            bgr = cv2.imread(str(folder / f"frost{i}.png"), cv2.IMREAD_COLOR)
            if bgr is None:
                raise RuntimeError(f"frost texture {folder / f'frost{i}.png'} cannot be read")
            _FROST.append(bgr[..., ::-1].copy())
    return _FROST


def _frost(images, x, value, scale, rng):
    import cv2

    weight_image, weight_frost = value
    side = images.shape[1]
    textures = frost_textures()
    if scale != 1:
        textures = [cv2.resize(t, (0, 0), fx=scale, fy=scale) for t in textures]
    out = np.empty(images.shape, np.float32)
    for i, img in enumerate(images):
        texture = textures[int(rng.integers(5))]
        top = int(rng.integers(0, texture.shape[0] - side))
        left = int(rng.integers(0, texture.shape[1] - side))
        crop = texture[top : top + side, left : left + side].astype(np.float32)
        out[i] = (weight_image * img.astype(np.float32) + weight_frost * crop) / 255.0
    return out


def plasma_fractal(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """make_cifar_c.py's diamond-square height map, ``size`` a power of two, scaled to [0, 1]."""
    grid = np.zeros((size, size), np.float64)
    step, wibble = size, 100.0

    def wibbled(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        squares = corners + np.roll(corners, -1, axis=0)
        squares += np.roll(squares, -1, axis=1)
        grid[half:size:step, half:size:step] = wibbled(squares)
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0:size:step, half:size:step] = wibbled(left)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half:size:step, 0:size:step] = wibbled(top)
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def _fog(images, x, value, scale, rng):
    strength, decay = value
    side = x.shape[1]
    size = 1 << max(5, (side - 1).bit_length())  # the original's 32, or the next power of two
    out = np.empty_like(x)
    for i, img in enumerate(x):
        top = img.max()
        fog = plasma_fractal(size, decay, rng)[:side, :side, None].astype(np.float32)
        out[i] = (img + strength * fog) * top / (top + strength)
    return out


def _elastic_transform(images, x, value, scale, rng):
    import cv2

    side = x.shape[1]
    alpha, sigma, affine = (v * side for v in value)
    centre = np.float32([side // 2, side // 2])
    square = side // 3
    src = np.float32([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    axis = np.arange(side, dtype=np.float32)
    xs, ys = np.meshgrid(axis, axis)  # xs[i, j] = j (column), ys[i, j] = i (row)
    out = np.empty_like(x)
    for i, img in enumerate(x):
        dst = src + rng.uniform(-affine, affine, size=src.shape).astype(np.float32)
        warped = cv2.warpAffine(
            img, cv2.getAffineTransform(src, dst), (side, side), borderMode=cv2.BORDER_REFLECT_101
        )
        shift = []
        for _ in range(2):  # dx, then dy, as drawn there
            noise = rng.uniform(-1, 1, size=(side, side)).astype(np.float32)
            if sigma > 0:  # scipy's mode "reflect" is OpenCV's BORDER_REFLECT; truncate 3
                radius = int(3 * sigma + 0.5)
                noise = cv2.GaussianBlur(
                    noise, (2 * radius + 1,) * 2, sigmaX=sigma, borderType=cv2.BORDER_REFLECT
                )
            shift.append(noise * alpha)
        dx, dy = shift
        # map_coordinates(order=1, mode="reflect") with OpenCV's remap
        out[i] = cv2.remap(
            warped, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
    return out


_CIFAR_C_EXTRA = {
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "elastic_transform": _elastic_transform,
}


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
