"""Preprocessing steps (OpenCV, and deblock as a Keras layer): named, composable, recorded in a
member's config, replayed at predict.

A step is a dict such as ``{"name": "clahe", "clip_limit": 2.0}``; a pipeline is a list of them.
Each works on a batch of uint8 RGB images (N, H, W, 3) and returns the same shape and dtype, so
steps compose and the model (which rescales raw pixels itself) needs no change. Per-pixel colour
conversions run on the whole batch at once; per-image operations run on a thread pool (OpenCV
releases the GIL).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np

from benchmark.config.named_steps import check_steps, parameters
from benchmark.errors import ZoobenchError

COLOR_SPACES = {
    "hsv": cv2.COLOR_RGB2HSV_FULL,  # FULL: hue spans 0..255 rather than 0..179
    "ycrcb": cv2.COLOR_RGB2YCrCb,
    "lab": cv2.COLOR_RGB2Lab,
}
DENOISE_METHODS = ("nlmeans", "bilateral", "gaussian")

_STEPS: dict[str, Callable[..., np.ndarray]] = {}


def step(name: str) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Register a preprocessing function under ``name``; its keyword defaults are its parameters."""

    def decorator(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        _STEPS[name] = fn
        return fn

    return decorator


def available_steps() -> dict[str, dict[str, Any]]:
    """Step names with their parameters and defaults (for docs, profiles and the tuner)."""
    return {name: parameters(fn, skip=1) for name, fn in sorted(_STEPS.items())}


def validate_steps(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check step names, parameter names and values; return the steps with every default filled in."""
    from benchmark.config.schema import check_step_values, number, one_of, whole

    rules = {
        "color_space": {"space": one_of(*COLOR_SPACES)},
        "clahe": {"clip_limit": number(0, low_open=True), "tile_grid": whole(1)},
        "denoise": {
            "method": one_of(*DENOISE_METHODS),
            "strength": number(0),
            "template_window": whole(1),
            "search_window": whole(1),
            "diameter": whole(),
            "sigma": number(0, low_open=True),
        },
        "deblock": {
            "strength": number(0, 1),
            "threshold": number(0, low_open=True),
            "flatness": number(0, low_open=True),
        },
    }
    return check_step_values(
        check_steps(steps, available_steps(), "preprocess"), rules, "preprocess"
    )


def apply_steps(images: np.ndarray, steps: Sequence[dict[str, Any]]) -> np.ndarray:
    """Run ``steps`` in order on a uint8 (N, H, W, 3) batch (or one (H, W, 3) image)."""
    images = np.asarray(images)
    single = images.ndim == 3
    if single:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ZoobenchError(
            f"preprocessing needs uint8 RGB images (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    for spec in validate_steps(steps):
        params = {k: v for k, v in spec.items() if k != "name"}
        images = _STEPS[spec["name"]](images, **params)
    return images[0] if single else images


def _per_image(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """Apply ``fn`` to each image on a thread pool, in chunks (OpenCV releases the GIL)."""
    out = np.empty_like(images)
    chunks = np.array_split(np.arange(len(images)), max(1, min(len(images) // 256, 64)))

    def run(ix: np.ndarray) -> None:
        for i in ix:
            out[i] = fn(images[i])

    workers = min(len(chunks), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(run, chunks))
    return out


def _whole_batch(code: int, images: np.ndarray) -> np.ndarray:
    """A per-pixel conversion on the batch laid out as one tall image: one OpenCV call."""
    n, h, w, c = images.shape
    return cv2.cvtColor(images.reshape(n * h, w, c), code).reshape(n, h, w, -1)


@step("color_space")
def color_space(images: np.ndarray, space: str = "hsv") -> np.ndarray:
    """Re-express RGB pixels in HSV, YCrCb or Lab (still three uint8 channels)."""
    if space not in COLOR_SPACES:
        raise ZoobenchError(
            f"color_space: space must be one of {', '.join(COLOR_SPACES)}, got {space!r}"
        )
    return _whole_batch(COLOR_SPACES[space], images)


@step("equalize")
def equalize(images: np.ndarray) -> np.ndarray:
    """Global histogram equalisation of luminance (Y of YCrCb); colours keep their hue."""
    ycrcb = _whole_batch(cv2.COLOR_RGB2YCrCb, images)

    def one(img: np.ndarray) -> np.ndarray:
        img = img.copy()
        img[..., 0] = cv2.equalizeHist(img[..., 0])
        return img

    return _whole_batch(cv2.COLOR_YCrCb2RGB, _per_image(one, ycrcb))


@step("clahe")
def clahe(images: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 4) -> np.ndarray:
    """Contrast-limited adaptive equalisation of lightness (L of Lab): local contrast, bounded noise."""
    if clip_limit <= 0 or int(tile_grid) < 1:
        raise ZoobenchError(
            f"clahe: clip_limit must be > 0 and tile_grid >= 1, got {clip_limit}, {tile_grid}"
        )
    lab = _whole_batch(cv2.COLOR_RGB2Lab, images)
    grid = (int(tile_grid), int(tile_grid))

    def one(img: np.ndarray) -> np.ndarray:
        # A CLAHE object holds scratch buffers: one per call keeps threads independent.
        img = img.copy()
        img[..., 0] = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=grid).apply(
            img[..., 0]
        )
        return img

    return _whole_batch(cv2.COLOR_Lab2RGB, _per_image(one, lab))


@step("denoise")
def denoise(
    images: np.ndarray,
    method: str = "nlmeans",
    strength: float = 5.0,
    template_window: int = 3,
    search_window: int = 9,
    diameter: int = 5,
    sigma: float = 0.8,
) -> np.ndarray:
    """Noise removal: non-local means (``strength`` = h), bilateral, or Gaussian (``sigma``)."""
    if method == "nlmeans":
        s, t, w = float(strength), int(template_window), int(search_window)
        fn = lambda img: cv2.fastNlMeansDenoisingColored(img, None, s, s, t, w)  # noqa: E731
    elif method == "bilateral":
        d, s = int(diameter), float(strength) * 5
        fn = lambda img: cv2.bilateralFilter(img, d, s, s)  # noqa: E731
    elif method == "gaussian":
        sg = float(sigma)
        fn = lambda img: cv2.GaussianBlur(img, (0, 0), sg)  # noqa: E731
    else:
        raise ZoobenchError(
            f"denoise: method must be one of {', '.join(DENOISE_METHODS)}, got {method!r}"
        )
    return _per_image(fn, images)


def blockiness(images: np.ndarray) -> float:
    """How blocky a uint8 batch is: the mean |difference| between neighbours across 8x8 block
    edges minus that inside blocks (0 for a picture without JPEG blocking; the measure the
    ``deblock`` tests and ``scripts/bench_deblocking.py`` report)."""
    x = images.astype(np.float32)
    excess = []
    for axis in (1, 2):
        diff = np.abs(np.diff(x, axis=axis))
        edge = np.arange(diff.shape[axis]) % 8 == 7
        excess.append(diff.compress(edge, axis).mean() - diff.compress(~edge, axis).mean())
    return float(np.mean(excess))


@step("deblock")
def deblock(
    images: np.ndarray, strength: float = 1.0, threshold: float = 30.0, flatness: float = 15.0
) -> np.ndarray:
    """Smooth away JPEG's 8x8 block edges, in the spirit of H.264's in-loop deblocking filter.

    JPEG quantises each 8x8 block on its own, so at low quality neighbouring blocks meet with a step
    that is not in the picture. Across every 8th column (then every 8th row), with p1 p0 | q0 q1 the
    two pixels either side of the boundary, the step beyond the local slope, ``d = (q0 - p0) -
    ((p0 - p1) + (q1 - q0)) / 2``, is spread as a linear ramp over those four pixels (p0 += 2d/5,
    p1 += d/5, q0 -= 2d/5, q1 -= d/5, times ``strength``), so a blocky step becomes a gradient and a
    smooth gradient is left as it was. As in H.264 a boundary is left alone where it is likely a
    real edge: where ``|q0 - p0|`` reaches ``threshold`` or either side is not flat (``|p1 - p0|``
    or ``|q1 - q0|`` reaches ``flatness``); values are 0..255 pixel levels. It works in JPEG's own
    YCbCr planes, where the quantisation happened, and maps the correction back to RGB, so a pixel
    the filter does not touch keeps its exact value.

    One implementation: the step runs :class:`zoo.layers.Deblock`, the layer a member's model
    holds when it is fused or exported, so the pictures a member trained on and the ones its
    exported model makes are bit for bit the same (an OpenCV version differed from a Keras one on
    0.1% of pixels, where float sums fell on the other side of a threshold). That is also why a
    deblocked member exports as one model and FGSM attacks it through the filter.

    Why not non-local means (``denoise``): it does not know where the block grid lies, so it
    smooths texture inside blocks as much as the block edges, and costs ~20x more (364 s against
    about 20 s for 60,000 CIFAR images). The grid is JPEG's: blocks start at the image's top
    left, so images resized after decoding have no grid here to find (the thresholds then leave most
    of them unchanged). Measured (tests/test_preprocess.py): on CIFAR-10's JPEG q75 pictures the
    block-edge excess (mean |difference| across block edges minus inside blocks) falls from about
    1.8 to 0; on a synthetic picture saved at JPEG quality 10 from ~6 to ~2.2 and PSNR against the
    original rises by ~0.3 dB. About 20 s for 60,000 CIFAR images here.
    Whether it helps a model is another matter: fastnet trained on 5,000 pictures of the CIFAR-10
    JPEG copy with and without it scored +0.4 points of test accuracy, within one seed's noise
    (``scripts/bench_deblocking.py``).
    """
    from zoo.layers import Deblock

    if not len(images):
        return np.empty_like(images)
    layer = Deblock(strength, threshold, flatness)
    # chunks of 1,024 images keep the float copies small; the output is whole numbers in 0..255
    from keras import ops

    out = [
        ops.convert_to_numpy(layer(images[i : i + 1024].astype(np.float32)))
        for i in range(0, len(images), 1024)
    ]
    return np.concatenate(out).astype(np.uint8)


# Steps a model can hold as layers (step name -> layer factory): a member trained with only these
# exports as one raw-pixel model, and the fused ensemble runs them per member.
IN_MODEL_STEPS: dict[str, Callable[..., Any]] = {}


def _deblock_layer(strength: float = 1.0, threshold: float = 30.0, flatness: float = 15.0):
    from zoo.layers import Deblock

    return Deblock(strength, threshold, flatness, name="deblock")


IN_MODEL_STEPS["deblock"] = _deblock_layer


def in_model_layers(steps: Sequence[dict[str, Any]]) -> list | None:
    """Fresh Keras layers doing ``steps`` inside a model, in order; None if any step has no layer
    (OpenCV code: the caller applies the steps to the images instead)."""
    if any(s["name"] not in IN_MODEL_STEPS for s in steps):
        return None
    return [IN_MODEL_STEPS[s["name"]](**{k: v for k, v in s.items() if k != "name"}) for s in steps]
