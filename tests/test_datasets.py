"""Dataset loading: both on-disk formats, the cache, the split, and every kind of bad input."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from conftest import CIFAR10_CLASSES, write_cifar_batches, write_class_folders

from benchmark.data import datasets
from benchmark.data.safe_pickle import load_restricted
from benchmark.errors import DataError


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No user's ZOOBENCH_DATA / Keras cache / decode cache leaks into these tests."""
    monkeypatch.delenv("ZOOBENCH_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("ZOOBENCH_CACHE", str(tmp_path / "cache"))


def _label_from_red(x: np.ndarray) -> np.ndarray:
    return (
        x[:, 0, 0, 0].astype(int) + 10
    ) // 20  # red channel was set to label * 20 (PNG lossless)


def test_official_batches_load_with_labels_matching_pixels(tmp_path):
    folder = write_cifar_batches(tmp_path / "data")
    raw = datasets.load_raw("cifar10", data_dir=folder.parent)
    assert raw.x_train.shape == (300, 32, 32, 3) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (20, 32, 32, 3)
    assert raw.source == "CIFAR-10 (official python batches)"
    np.testing.assert_array_equal(_label_from_red(raw.x_train), raw.y_train)
    np.testing.assert_array_equal(_label_from_red(raw.x_test), raw.y_test)
    assert raw.class_names == CIFAR10_CLASSES


def test_official_batches_found_in_keras_cache_layouts(tmp_path, monkeypatch):
    # Keras 3 extracts to datasets/<fname>_extracted/cifar-10-batches-py
    cache = tmp_path / "keras_home" / "datasets" / "cifar-10-batches-py-target_extracted"
    write_cifar_batches(cache)
    data = datasets.load("cifar10", download=False)
    assert data.source == "CIFAR-10 (official python batches)"
    assert len(data.y_train) + len(data.y_val) == 300


def test_folder_tree_loads_in_official_class_order_and_is_cached(tmp_path, caplog):
    root = write_class_folders(tmp_path / "tree")
    raw = datasets.load_raw("cifar10", data_dir=root)
    assert raw.source == "CIFAR-10 (class folders)"
    np.testing.assert_array_equal(_label_from_red(raw.x_train), raw.y_train)
    assert list(np.bincount(raw.y_train)) == [8] * 10
    cached = list((tmp_path / "cache").glob("cifar10-*.npz"))
    assert len(cached) == 1
    caplog.set_level("INFO", logger="benchmark.data.datasets")
    again = datasets.load_raw("cifar10", data_dir=root)
    assert "from cache" in caplog.text
    np.testing.assert_array_equal(again.x_train, raw.x_train)
    assert again.fingerprint == raw.fingerprint


def test_cache_is_invalidated_when_a_file_changes(tmp_path, monkeypatch):
    import cv2

    decoded: list[str] = []
    decode = datasets.decode

    def counting_decode(path):
        decoded.append(path.name)
        return decode(path)

    monkeypatch.setattr(datasets, "decode", counting_decode)
    root = write_class_folders(tmp_path / "tree")
    first = datasets.load_raw("cifar10", data_dir=root)
    assert len(decoded) == 110  # 8 + 3 pictures a class, all decoded once
    datasets.load_raw("cifar10", data_dir=root)
    assert len(decoded) == 110  # unchanged files: served from the cache, nothing decoded

    target = root / "train" / "cat" / "0000.png"
    row = list(first.y_train).index(CIFAR10_CLASSES.index("cat"))  # cat's first picture
    cv2.imwrite(str(target), np.full((32, 32, 3), 7, np.uint8))  # new pixels, same name
    second = datasets.load_raw("cifar10", data_dir=root)
    assert len(decoded) == 220  # the cache was bypassed: every picture decoded again
    assert second.fingerprint != first.fingerprint
    assert (second.x_train[row] == 7).all() and not (first.x_train[row] == 7).all()
    assert len(list((tmp_path / "cache").glob("cifar10-*.npz"))) == 2  # a new entry, new key

    os.utime(target, ns=(1, 1))  # a touch alone (same bytes, new time) also bypasses it
    third = datasets.load_raw("cifar10", data_dir=root)
    assert len(decoded) == 330 and third.fingerprint != second.fingerprint
    np.testing.assert_array_equal(third.x_train, second.x_train)


def test_generic_folder_dataset_uses_sorted_class_names(tmp_path):
    root = write_class_folders(
        tmp_path / "pets", classes=("dog", "cat", "bird"), per_class=(4, 2), size=24
    )
    data = datasets.load("folder", data_dir=root, val_fraction=0.25)
    assert data.class_names == ("bird", "cat", "dog")
    assert data.input_shape == (24, 24, 3)
    assert data.source == "pets (class folders)"


def test_split_is_stratified_seeded_and_disjoint(tmp_path):
    folder = write_cifar_batches(tmp_path / "data", per_class_train=20)
    a = datasets.load("cifar10", data_dir=folder, val_fraction=0.2, seed=3)
    b = datasets.load("cifar10", data_dir=folder, val_fraction=0.2, seed=3)
    c = datasets.load("cifar10", data_dir=folder, val_fraction=0.2, seed=4)
    assert list(np.bincount(a.y_val)) == [20] * 10  # 20% of 100 a class
    assert list(np.bincount(a.y_train)) == [80] * 10
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.x_val, c.x_val)
    train_rows = {r.tobytes() for r in a.x_train}
    assert not any(r.tobytes() in train_rows for r in a.x_val)


def test_subsets_are_stratified(tmp_path):
    folder = write_cifar_batches(tmp_path / "data", per_class_train=20, per_class_test=10)
    data = datasets.load("cifar10", data_dir=folder, train_size=50, val_size=30, test_size=40)
    assert list(np.bincount(data.y_train)) == [5] * 10
    assert list(np.bincount(data.y_val)) == [3] * 10
    assert list(np.bincount(data.y_test)) == [4] * 10
    summary = data.summary()
    assert summary["sizes"] == {"train": 50, "val": 30, "test": 40}
    with pytest.raises(DataError, match="train_size=5 is smaller than the number of classes"):
        datasets.load("cifar10", data_dir=folder, train_size=5)
    # The test subset is the same pictures whatever the run's seed (runs stay comparable); the
    # training and validation subsets follow the seed.
    other = datasets.load(
        "cifar10", data_dir=folder, train_size=50, val_size=30, test_size=40, seed=7
    )
    np.testing.assert_array_equal(other.x_test, data.x_test)
    np.testing.assert_array_equal(other.y_test, data.y_test)
    assert not np.array_equal(other.x_val, data.x_val)
    assert other.split["test_subset_seed"] == 2 and "test_subset_seed" not in data.split


@pytest.mark.slow
def test_shared_jpeg_copy_loads_45k_5k_10k_balanced(full_jpg, tmp_path):
    data = datasets.load(
        "cifar10", data_dir=full_jpg, cache_dir=os.path.expanduser("~/.cache/zoobench")
    )
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (45_000, 5_000, 10_000)
    assert data.source == "CIFAR-10 (JPEG copy)"
    assert set(np.bincount(data.y_val)) == {500}
    assert set(np.bincount(data.y_test)) == {1000}
    assert data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (32, 32, 3)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: None, "does not exist"),
        (lambda root: (root / "train").mkdir(parents=True), "holds neither"),
        (
            lambda root: [
                (root / s / c).mkdir(parents=True)
                for s in ("train", "test")
                for c in CIFAR10_CLASSES
            ],
            "holds no images",
        ),
    ],
    ids=["missing-folder", "no-test-split", "empty-class-folder"],
)
def test_bad_folders_give_clear_errors(tmp_path, make, message):
    root = tmp_path / "bad"
    make(root)
    with pytest.raises(DataError, match=message):
        datasets.load("cifar10", data_dir=root)


def test_corrupt_image_is_named(tmp_path):
    root = write_class_folders(tmp_path / "tree")
    bad = root / "train" / "dog" / "0003.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(
        DataError, match=r"dog/0003\.png: corrupt or not an image \(cannot decode\)"
    ):
        datasets.load("cifar10", data_dir=root)


def test_real_pictures_decode_as_opencv_reads_them_from_a_path_or_bytes(tiny_jpg, tmp_path):
    """The one decoder (benchmark.data.images.decode) keeps the pixels the decode cache was built with."""
    import cv2

    from benchmark.data.images import decode

    for path in sorted((tiny_jpg / "test" / "cat").glob("*.jpg"))[:5]:
        want = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(decode(path), want)
        np.testing.assert_array_equal(decode(path.read_bytes()), want)
        png = tmp_path / f"{path.stem}.png"
        cv2.imwrite(str(png), want[..., ::-1])
        np.testing.assert_array_equal(decode(png), want)


def test_wrong_image_size_is_named(tmp_path):
    import cv2

    root = write_class_folders(tmp_path / "tree")
    cv2.imwrite(str(root / "test" / "ship" / "0001.png"), np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(
        DataError, match=r"ship/0001\.png is 40x40x3; this dataset's images are 32x32x3"
    ):
        datasets.load("cifar10", data_dir=root)


def test_wrong_class_folders_for_cifar10(tmp_path):
    root = write_class_folders(tmp_path / "tree", classes=("a", "b"))
    with pytest.raises(DataError, match="does not have the CIFAR-10 class folders"):
        datasets.load("cifar10", data_dir=root)


def test_unknown_dataset_name():
    with pytest.raises(
        DataError, match="unknown dataset 'cifar11'; known datasets: cifar10, cifar100, folder"
    ):
        datasets.load("cifar11")


def test_offline_without_data_explains_where_to_put_files(monkeypatch):
    import keras

    def no_network():
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", no_network)
    with pytest.raises(DataError) as err:
        datasets.load("cifar10")
    message = str(err.value)
    assert "could not be downloaded" in message and "network unreachable" in message
    assert "cifar-10-batches-py" in message and "--data-dir" in message
    assert "\n" not in message


def test_cifar100_official_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 300), ("test", 100)):
        labels = np.arange(n) % 100
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(folder / split, "wb") as f:
            pickle.dump(
                {
                    b"fine_labels": labels.tolist(),
                    b"coarse_labels": (labels // 5).tolist(),
                    b"data": data,
                },
                f,
            )
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, f)
    data = datasets.load("cifar100", data_dir=tmp_path, val_fraction=1 / 3)
    assert data.num_classes == 100 and data.class_names[7] == "c7"
    assert data.source == "CIFAR-100 (official python batches)"
    assert len(data.y_test) == 100


def test_restricted_unpickler_refuses_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": Exploit()}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_restricted(path)


def test_malicious_batch_file_is_a_data_error(tmp_path):
    folder = write_cifar_batches(tmp_path / "data")

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump(Exploit(), f)
    with pytest.raises(DataError, match=r"cannot read batch file .*data_batch_3: refusing to load"):
        datasets.load("cifar10", data_dir=folder)
