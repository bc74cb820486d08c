"""OpenCV preprocessing on real CIFAR-10 pixels: each step must do what its name promises."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmark.data.encoding import one_hot, sparse, to_unit_range
from benchmark.data.preprocess import apply_steps, available_steps, blockiness, validate_steps
from benchmark.errors import ZoobenchError


def _low_contrast(images: np.ndarray) -> np.ndarray:
    """Squeeze pixels into 100..150: what a dull, foggy photo looks like."""
    return (100 + images.astype(np.float32) * 50 / 255).astype(np.uint8)


def _luma(images: np.ndarray) -> np.ndarray:
    n, h, w, _ = images.shape
    return (
        cv2.cvtColor(images.reshape(n * h, w, 3), cv2.COLOR_RGB2GRAY)
        .reshape(n, h, w)
        .astype(np.float32)
    )


def _local_contrast(images: np.ndarray, tile: int = 8) -> float:
    """Mean standard deviation of luminance within tile x tile blocks."""
    y = _luma(images)
    n, h, w = y.shape
    blocks = y.reshape(n, h // tile, tile, w // tile, tile)
    return float(blocks.std(axis=(2, 4)).mean())


@pytest.mark.parametrize(
    "space, code",
    [("hsv", cv2.COLOR_RGB2HSV_FULL), ("ycrcb", cv2.COLOR_RGB2YCrCb), ("lab", cv2.COLOR_RGB2Lab)],
)
def test_color_space_equals_per_image_opencv(real_images, space, code):
    x, _ = real_images
    out = apply_steps(x, [{"name": "color_space", "space": space}])
    expected = np.stack([cv2.cvtColor(img, code) for img in x])
    np.testing.assert_array_equal(out, expected)


def test_equalize_spreads_luminance_and_keeps_shape(real_images):
    x = _low_contrast(real_images[0])
    out = apply_steps(x, [{"name": "equalize"}])
    assert out.shape == x.shape and out.dtype == np.uint8
    before, after = _luma(x), _luma(out)
    assert (after.max(axis=(1, 2)) - after.min(axis=(1, 2))).mean() > 2 * (
        before.max(axis=(1, 2)) - before.min(axis=(1, 2))
    ).mean()
    # One image equalised alone gives the same result: no leakage between images of a batch.
    np.testing.assert_array_equal(apply_steps(x[3], [{"name": "equalize"}]), out[3])


def test_clahe_raises_local_contrast(real_images):
    x = _low_contrast(real_images[0])
    out = apply_steps(x, [{"name": "clahe", "clip_limit": 3.0, "tile_grid": 4}])
    assert _local_contrast(out) > 1.5 * _local_contrast(x)
    stronger = apply_steps(x, [{"name": "clahe", "clip_limit": 8.0, "tile_grid": 4}])
    assert _local_contrast(stronger) > _local_contrast(out)


@pytest.mark.parametrize("method", ["nlmeans", "bilateral", "gaussian"])
def test_denoise_brings_noisy_images_closer_to_clean(real_images, method):
    clean = real_images[0][:40]
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    out = apply_steps(noisy, [{"name": "denoise", "method": method, "strength": 10.0}])

    def mse(a: np.ndarray) -> float:
        return float(((a.astype(np.float32) - clean) ** 2).mean())

    assert mse(out) < 0.8 * mse(noisy)


def test_steps_compose_in_order_and_record_defaults(real_images):
    x = real_images[0][:30]
    steps = [{"name": "denoise", "method": "gaussian"}, {"name": "clahe"}]
    recorded = validate_steps(steps)
    assert recorded[1] == {"name": "clahe", **available_steps()["clahe"]}
    once = apply_steps(x, steps)
    twice = apply_steps(apply_steps(x, steps[:1]), steps[1:])
    np.testing.assert_array_equal(once, twice)
    np.testing.assert_array_equal(apply_steps(x, recorded), once)  # replay from config is identical


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"name": "sharpen"}], "unknown preprocess step 'sharpen'"),
        ([{"name": "clahe", "clip": 2}], "preprocess step 'clahe' has no parameter clip"),
        ([{"space": "hsv"}], "must be a table with a 'name'"),
        ([{"name": "color_space", "space": "xyz"}], "space must be one of"),
        ([{"name": "denoise", "method": "median"}], "method must be one of"),
        ([{"name": "deblock", "strength": 1.5}], "'deblock': strength must be a number in"),
        ([{"name": "deblock", "threshold": 0}], "'deblock': threshold must be a number > 0"),
        ([{"name": "deblock", "block": 16}], "preprocess step 'deblock' has no parameter block"),
    ],
)
def test_bad_steps_are_refused(real_images, steps, message):
    with pytest.raises(ZoobenchError, match=message):
        apply_steps(real_images[0][:2], steps)


def test_non_uint8_input_is_refused():
    with pytest.raises(ZoobenchError, match="uint8 RGB images"):
        apply_steps(np.zeros((2, 32, 32, 3), np.float32), [{"name": "equalize"}])


def test_encodings():
    y = np.array([3, 0, 9])
    oh = one_hot(y, 10)
    assert oh.shape == (3, 10) and oh.dtype == np.float32 and oh.sum() == 3 and oh[0, 3] == 1
    np.testing.assert_array_equal(sparse(oh), y)
    np.testing.assert_array_equal(one_hot(y.reshape(-1, 1), 10), oh)  # Keras-style (N, 1) labels
    with pytest.raises(ZoobenchError, match="labels must lie in 0..9"):
        one_hot(np.array([10]), 10)
    x = to_unit_range(np.array([[0, 255]], np.uint8))
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    with pytest.raises(ZoobenchError, match="expects uint8"):
        to_unit_range(np.array([0.5]))


# ---- deblock: JPEG block edges ---------------------------------------------------------------------


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / ((a.astype(np.float64) - b) ** 2).mean()))


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def _synthetic_picture() -> np.ndarray:
    """128x128: smooth colour gradients (where JPEG's blocks show) and hard-edged shapes."""
    yy, xx = np.mgrid[0:128, 0:128] / 128
    img = np.stack(
        [
            120 + 100 * np.sin(3 * xx + yy),
            80 + 150 * xx * yy,
            200 - 300 * np.hypot(xx - 0.5, yy - 0.4),
        ],
        axis=-1,
    )
    img = np.ascontiguousarray(np.clip(img, 0, 255).astype(np.uint8))
    cv2.circle(img, (40, 50), 25, (250, 30, 30), -1)
    cv2.rectangle(img, (70, 70), (115, 100), (20, 60, 200), -1)
    cv2.line(img, (5, 120), (120, 10), (255, 255, 255), 2)
    return cv2.GaussianBlur(img, (0, 0), 0.7)


def test_deblock_flattens_block_edges_of_real_jpeg_q75_pictures(real_images):
    x = real_images[0]  # CIFAR-10 pictures as stored: JPEG quality 75
    out = apply_steps(x, [{"name": "deblock"}])
    assert out.shape == x.shape and out.dtype == np.uint8
    before, after = blockiness(x), blockiness(out)
    assert before > 1.0 and abs(after) < 0.3 * before  # measured: 1.8 -> about -0.1
    assert _psnr(out, x) > 38  # a light touch: ~42 dB from the input, most pixels untouched
    np.testing.assert_array_equal(apply_steps(x[5], [{"name": "deblock"}]), out[5])  # per image


def test_deblock_removes_jpeg_q10_blocks_without_losing_psnr():
    original = _synthetic_picture()
    blocky = _jpeg(original, 10)
    out = apply_steps(blocky, [{"name": "deblock"}])
    assert blockiness(blocky[None]) > 4  # measured ~6
    assert blockiness(out[None]) < 0.5 * blockiness(blocky[None])  # measured ~2.2
    assert _psnr(out, original) >= _psnr(blocky, original)  # measured 25.86 -> 26.14 dB
    weaker = apply_steps(blocky, [{"name": "deblock", "strength": 0.5}])
    assert blockiness(out[None]) < blockiness(weaker[None]) < blockiness(blocky[None])


def test_deblock_leaves_gradients_and_real_edges_exactly_alone():
    ramp = np.tile(np.linspace(10, 240, 32)[None, :, None], (32, 1, 3)).astype(np.uint8)
    edge = np.zeros((32, 32, 3), np.uint8)
    edge[:, 16:] = 200  # a hard edge right on a block boundary: far above the threshold
    for img in (ramp, edge, ramp.transpose(1, 0, 2).copy()):
        np.testing.assert_array_equal(apply_steps(img, [{"name": "deblock"}]), img)
    step = np.full((16, 16, 3), 100, np.uint8)
    step[:, 8:] = 110  # a small step between two flat blocks: a blocking artefact, smoothed
    out = apply_steps(step, [{"name": "deblock"}]).astype(int)
    np.testing.assert_array_equal(out[0, 5:11, 0], [100, 102, 104, 106, 108, 110])
