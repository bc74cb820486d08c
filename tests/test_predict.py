"""``zoobench predict`` and ensembles.images: every good and bad input, exact messages and exit codes."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_ensembles_export import make_model_run

from benchmark.cli.app import main
from ensembles.images import ImageError, header_size, read_image

RED_BGR = (0, 0, 255)


def picture(h: int = 30, w: int = 40) -> np.ndarray:
    """A BGR picture: red left half, blue right half (checks channel order and flips)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = RED_BGR
    img[:, w // 2 :] = (255, 0, 0)
    return img


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height``; nothing else (never decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = (
        struct.pack(">I", len(ihdr))
        + b"IHDR"
        + ihdr
        + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    )
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    d = tmp_path_factory.mktemp("images")
    good, bad = d / "good", d / "bad"
    good.mkdir(), bad.mkdir()
    files = {}
    for ext in ("png", "jpg", "bmp", "tiff", "webp"):
        files[ext] = good / f"pic.{ext}"
        assert cv2.imwrite(str(files[ext]), picture())
    files["gray"] = good / "gray.png"
    cv2.imwrite(str(files["gray"]), np.full((20, 20), 77, np.uint8))
    files["rgba"] = good / "rgba.png"
    cv2.imwrite(str(files["rgba"]), np.dstack([picture(), np.full((30, 40), 10, np.uint8)]))
    files["16bit"] = good / "deep.png"
    cv2.imwrite(str(files["16bit"]), (picture().astype(np.uint16) * 257))
    files["palette"] = good / "palette.png"
    pal = Image.fromarray(cv2.cvtColor(picture(), cv2.COLOR_BGR2RGB)).convert(
        "P", palette=Image.ADAPTIVE
    )
    pal.save(files["palette"])
    (good / "notes.txt").write_text("folders may hold other files; they are ignored")

    raw_png = files["png"].read_bytes()
    raw_jpg = files["jpg"].read_bytes()
    files["notimage"] = bad / "notes.png"
    files["notimage"].write_text("hello, I am text")
    files["trunc_png"] = bad / "cut.png"
    files["trunc_png"].write_bytes(raw_png[: len(raw_png) // 2])
    files["trunc_jpg"] = bad / "cut.jpg"
    files["trunc_jpg"].write_bytes(raw_jpg[: len(raw_jpg) // 2])
    files["corrupt"] = bad / "garbage.png"
    files["corrupt"].write_bytes(raw_png[:33] + bytes(200) + raw_png[-12:])  # valid header and IEND
    files["empty"] = bad / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["tiny"] = bad / "tiny.png"
    cv2.imwrite(str(files["tiny"]), picture(4, 6))
    files["huge"] = bad / "huge.png"
    png_header_only(files["huge"], 20000, 10000)
    files["empty_dir"] = d / "nothing_here"
    files["empty_dir"].mkdir()
    (files["empty_dir"] / "readme.txt").write_text("no pictures")
    files["good_dir"], files["bad_dir"] = good, bad
    return files


# ---- reading -------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["png", "jpg", "bmp", "tiff", "webp"])
def test_formats_decode_to_rgb_with_header_sizes_read_before_decoding(images, ext):
    path = images[ext]
    fmt, w, h = header_size(path.read_bytes()[:65536])
    assert (w, h) == (40, 30)
    rgb = read_image(path)
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    assert rgb[15, 5, 0] > 200 and rgb[15, 5, 2] < 50  # left half red in RGB order
    assert rgb[15, 35, 2] > 200 and rgb[15, 35, 0] < 50


def test_gif_and_webp_lossless_headers(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (33, 21), "red")
    img.save(tmp_path / "a.gif")
    img.save(tmp_path / "a.webp", lossless=True)
    assert header_size((tmp_path / "a.gif").read_bytes()) == ("gif", 33, 21)
    assert header_size((tmp_path / "a.webp").read_bytes()) == ("webp", 33, 21)


def test_gray_rgba_16bit_and_palette_become_8bit_rgb(images):
    gray = read_image(images["gray"])
    assert gray.shape == (20, 20, 3) and np.all(gray == 77)
    for key in ("rgba", "16bit", "palette"):
        rgb = read_image(images[key])
        assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8, key
        np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0], err_msg=key)
        np.testing.assert_array_equal(rgb[0, 39], [0, 0, 255], err_msg=key)


def test_predict_decodes_as_the_dataset_loader_does(tmp_path):
    """One decoder (benchmark.data.images): EXIF orientation applied, 16-bit to its high byte, float
    TIFF scaled, so a prediction sees the pixels a class-folder dataset of the same files gave."""
    from PIL import Image

    from benchmark.data import images as image_io

    rgb = cv2.cvtColor(picture(), cv2.COLOR_BGR2RGB)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(rgb).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    deep = np.full((30, 40, 3), 0x12FF, np.uint16)  # high byte 18; 0x12FF / 257 rounds to 19
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    cv2.imwrite(str(tmp_path / "float.tiff"), np.full((30, 40, 3), 0.5, np.float32))
    for name in ("phone.jpg", "deep.png", "float.tiff"):
        np.testing.assert_array_equal(
            read_image(tmp_path / name), image_io.decode(tmp_path / name), err_msg=name
        )
    phone = read_image(tmp_path / "phone.jpg")
    assert phone.shape == (40, 30, 3)  # upright: the red half is now on top
    assert phone[5, 15, 0] > 200 and phone[35, 15, 2] > 200
    assert np.all(read_image(tmp_path / "deep.png") == 18)
    assert np.all(read_image(tmp_path / "float.tiff") == 128)


def test_resize_shrinks_by_area_and_enlarges_bilinearly():
    from benchmark.data.images import resize, resize_batch

    img = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    assert resize(img, (30, 40)) is img
    small = cv2.resize(img, (20, 15), interpolation=cv2.INTER_AREA)
    large = cv2.resize(img, (80, 60), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(resize(img, (15, 20)), small)
    np.testing.assert_array_equal(resize(img, (60, 80)), large)
    batch = resize_batch([img, img[:20]], (15, 20))
    assert batch.shape == (2, 15, 20, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0], small)


@pytest.mark.parametrize(
    "key, message",
    [
        ("notimage", "not an image (no PNG, JPEG, BMP, TIFF or WebP header)"),
        ("trunc_png", "truncated or corrupt PNG file"),
        ("trunc_jpg", "truncated or corrupt JPEG file"),
        ("corrupt", "truncated or corrupt PNG file (cannot decode)"),
        ("empty", "empty file"),
        ("tiny", "image is 6x4 px; need at least 8 px a side"),
        ("huge", "image is 20000x10000 px (200 MP), over the 50 MP limit"),
    ],
)
def test_bad_files_fail_with_one_line_naming_the_file(images, key, message):
    with pytest.raises(ImageError) as err:
        read_image(images[key])
    assert str(err.value) == f"{images[key]}: {message}"


# ---- the command ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from ensembles.build import build_ensembles

    store = make_model_run(tmp_path_factory.mktemp("predict") / "run")
    # uncalibrated: these random members' temperature would flatten every probability towards
    # 0.1, leaving nothing for the flip below to change (calibrated predict: test_ensembles_export)
    build_ensembles(store, {"stacker_cv": 2, "calibrate": False}, seed=0)
    return store.root


def predict(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_all_good_inputs_exit_0_with_top_k_classes(capsys, run_dir, images):
    code, out, err = predict(capsys, images["good_dir"], "--run", run_dir, "--top-k", "2")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("model: best (")
    assert len(lines) == 1 + 9  # nine images in the folder; notes.txt ignored
    first = lines[1]
    assert first.startswith(f"{images['good_dir'] / 'deep.png'}: class")
    assert first.count("class") == 3  # the label and two (class, probability) pairs


def test_json_output_matches_the_python_api_and_tta_averages_the_flip(capsys, run_dir, tmp_path):
    from benchmark.data.images import resize_batch
    from ensembles.predictor import load_predictor

    noise = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    noise[:, :16] //= 4  # a dark left half: the mirror image differs
    path = tmp_path / "noise.png"
    cv2.imwrite(str(path), noise)
    code, out, _ = predict(capsys, path, "--run", run_dir, "--json", "--tta", "--top-k", "10")
    assert code == 0
    result = json.loads(out)
    assert result["tta"] is True and result["errors"] == []
    (pred,) = result["predictions"]
    probs = np.zeros(10)
    for t in pred["top"]:
        probs[t["label"]] = t["probability"]
    p = load_predictor(run_dir)
    x = resize_batch([read_image(path)], (32, 32))
    expected = (p.predict_proba(x) + p.predict_proba(x[:, :, ::-1])) / 2
    np.testing.assert_allclose(probs, expected[0], atol=1e-5)
    assert pred["class"] == p.class_names[int(expected.argmax())]
    assert not np.allclose(p.predict_proba(x), expected, atol=1e-4)  # the flip changed something


def test_mixed_inputs_predict_the_good_ones_and_exit_1(capsys, run_dir, images):
    missing = images["good_dir"] / "missing.png"
    code, out, err = predict(
        capsys, images["png"], images["bad_dir"], missing, images["empty_dir"], "--run", run_dir
    )
    assert code == 1
    assert f"{images['png']}: class" in out
    errors = err.strip().splitlines()
    b = images
    assert errors == [
        f"zoobench: error: {missing}: no such file or folder",
        f"zoobench: error: {b['empty_dir']}: folder has no images "
        "(.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp)",
        f"zoobench: error: {b['trunc_jpg']}: truncated or corrupt JPEG file",
        f"zoobench: error: {b['trunc_png']}: truncated or corrupt PNG file",
        f"zoobench: error: {b['empty']}: empty file",
        f"zoobench: error: {b['corrupt']}: truncated or corrupt PNG file (cannot decode)",
        f"zoobench: error: {b['huge']}: image is 20000x10000 px (200 MP), over the 50 MP limit",
        f"zoobench: error: {b['notimage']}: not an image (no PNG, JPEG, BMP, TIFF or WebP header)",
        f"zoobench: error: {b['tiny']}: image is 6x4 px; need at least 8 px a side",
        "zoobench: 9 of 10 inputs failed",
    ]
    assert "Traceback" not in err


def test_no_usable_input_exits_2(capsys, run_dir, images):
    code, out, err = predict(capsys, images["bad_dir"] / "empty.jpg", "--run", run_dir)
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"zoobench: error: {images['empty']}: empty file",
        "zoobench: error: no input image could be read",
    ]


def test_unknown_run_model_and_bad_option_exit_2(capsys, run_dir, images, tmp_path):
    code, _, err = predict(capsys, images["png"], "--run", tmp_path / "nope")
    assert code == 2
    assert err.strip() == (
        f"zoobench: error: unknown run {tmp_path / 'nope'}: no run.json there (see `zoobench run`)"
    )
    code, _, err = predict(capsys, images["png"], "--run", run_dir, "--model", "resnet999")
    assert code == 2
    assert err.startswith(
        f"zoobench: error: unknown model 'resnet999' in run {run_dir}; choose best, "
    )
    assert "m0, m1, m2" in err and "greedy" in err and len(err.strip().splitlines()) == 1
    code, _, err = predict(capsys, images["png"], "--run", run_dir, "--top-k", "0")
    assert code == 2 and err.strip() == "zoobench: error: --top-k must be at least 1, got 0"


def test_predict_with_a_member_and_an_ensemble(capsys, run_dir, images):
    for model in ("m2", "stacking-logistic"):
        code, out, err = predict(
            capsys, images["jpg"], "--run", run_dir, "--model", model, "--json"
        )
        assert code == 0, err
        assert json.loads(out)["model"] == ("tiny2" if model == "m2" else model)
