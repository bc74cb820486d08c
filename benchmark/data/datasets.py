"""Datasets: find CIFAR-10/100 (official batches, Keras cache, download) or a class-folder copy.

``load(name, ...)`` returns a :class:`Dataset` of uint8 NHWC arrays with integer labels. The
validation split is carved from train (stratified, seeded); the test split is the official one and
is only ever read to report. Decoded pixels are cached as ``.npz`` keyed by a fingerprint of the
source files, so the second load of 60,000 JPEGs costs a file read, not a decode.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from benchmark.atomic import atomic_path
from benchmark.data.images import SUFFIXES, decode
from benchmark.data.safe_pickle import load_restricted
from benchmark.errors import DataError

log = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


@dataclass(frozen=True)
class DatasetSpec:
    """What we know about a named dataset before loading it."""

    name: str
    display: str
    official_dir: str  # folder name of the official python batches
    image_shape: tuple[int, int, int] | None
    num_classes: int | None


DATASETS = {
    "cifar10": DatasetSpec("cifar10", "CIFAR-10", "cifar-10-batches-py", (32, 32, 3), 10),
    "cifar100": DatasetSpec("cifar100", "CIFAR-100", "cifar-100-python", (32, 32, 3), 100),
    "folder": DatasetSpec("folder", "class folders", "", None, None),
}


@dataclass(frozen=True)
class Dataset:
    """Train / val / test splits as uint8 NHWC arrays with integer labels, plus where they came from."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str  # e.g. "CIFAR-10 (JPEG copy)": always reported next to a score
    location: str  # the folder or URL the pixels came from
    fingerprint: str  # hash of the source files; identifies the data in the run store
    seed: int
    split: dict = field(default_factory=dict)  # the arguments that made the split

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    def summary(self) -> dict:
        """Sizes, class balance and provenance, as plain JSON-able data."""

        def counts(y: np.ndarray) -> list[int]:
            return np.bincount(y, minlength=self.num_classes).astype(int).tolist()

        return {
            "dataset": self.name,
            "source": self.source,
            "location": self.location,
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "split": self.split,
            "input_shape": list(self.input_shape),
            "class_names": list(self.class_names),
            "sizes": {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)},
            "class_counts": {
                "train": counts(self.y_train),
                "val": counts(self.y_val),
                "test": counts(self.y_test),
            },
        }


@dataclass(frozen=True)
class RawData:
    """The full official train and test sets, before any split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str
    location: str
    fingerprint: str


TEST_SUBSET_SEED = 2  # a profile's ``test_size`` subset: the same pictures for every run seed


def load_for_profile(data: dict, data_dir: str | os.PathLike | None, seed: int) -> Dataset:
    """The split a profile's ``[data]`` table asks for: what a run trains on and a refit reloads."""
    return load(
        data.get("dataset", "cifar10"),
        data_dir=data_dir,
        val_fraction=data.get("val_fraction", 0.1),
        seed=seed,
        train_size=data.get("train_size"),
        val_size=data.get("val_size"),
        test_size=data.get("test_size"),
    )


def load(
    name: str = "cifar10",
    *,
    data_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> Dataset:
    """Load ``name`` and split it.

    Sources, tried in order: ``data_dir`` (or ``$ZOOBENCH_DATA``), holding either the official python
    batches or a ``<split>/<class>/*.jpg|png`` tree; the official batches in Keras's cache
    (``$KERAS_HOME/datasets``, default ``~/.keras/datasets``); ``keras.datasets`` download.
    ``train_size`` / ``val_size`` / ``test_size`` take stratified, seeded subsets.
    """
    raw = load_raw(name, data_dir=data_dir, cache_dir=cache_dir, download=download)
    return split(
        raw,
        name=name,
        val_fraction=val_fraction,
        seed=seed,
        train_size=train_size,
        val_size=val_size,
        test_size=test_size,
    )


def load_raw(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> RawData:
    """Find and decode the full train and test sets of ``name`` (no split)."""
    spec = dataset_spec(name)
    data_dir = data_dir or os.environ.get("ZOOBENCH_DATA") or None
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if root.exists() and not root.is_dir():
            raise DataError(
                f"data folder {root} is a file, not a folder (from --data-dir / ZOOBENCH_DATA)"
            )
        if not root.is_dir():
            raise DataError(f"data folder {root} does not exist (from --data-dir / ZOOBENCH_DATA)")
        official = _find_official(root, spec)
        if official is not None:
            return _load_official(official, spec)
        if (root / "train").is_dir() and (root / "test").is_dir():
            return _load_folder_cached(root, spec, cache_dir)
        raise DataError(
            f"{root} holds neither the official {spec.display} batches ({spec.official_dir or '-'}/) "
            f"nor a class-folder tree ({root}/train/<class>/*.png and {root}/test/<class>/*.png)"
        )
    if spec.name == "folder":
        raise DataError("dataset 'folder' needs --data-dir (or ZOOBENCH_DATA) pointing at the tree")
    official = _find_official(keras_datasets_dir(), spec)
    if official is not None:
        return _load_official(official, spec)
    if download:
        return _download(spec)
    raise _missing(spec)


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise DataError(f"unknown dataset {name!r}; known datasets: {known}") from None


def keras_datasets_dir() -> Path:
    """Where Keras caches downloaded datasets (``$KERAS_HOME/datasets``)."""
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets"


def default_cache_dir() -> Path:
    from zoo.weights import cache_root

    return cache_root()


# --------------------------------------------------------------------------------------------------
# Splitting


def split(
    raw: RawData,
    *,
    name: str,
    val_fraction: float = 0.1,
    seed: int = 0,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
) -> Dataset:
    """Carve a stratified, seeded validation split from train, then take the optional subsets."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    idx = np.arange(len(raw.y_train))
    train_idx, val_idx = train_test_split(
        idx, test_size=val_fraction, stratify=raw.y_train, random_state=seed
    )
    train_idx = _subset(train_idx, raw.y_train, train_size, seed, "train_size")
    val_idx = _subset(val_idx, raw.y_train, val_size, seed + 1, "val_size")
    # The test subset does not follow the run's seed: runs of any seed are scored on the same
    # pictures, so they can be compared (``zoobench compare``). Seed 2 is what seed 0 always drew.
    test_idx = _subset(
        np.arange(len(raw.y_test)), raw.y_test, test_size, TEST_SUBSET_SEED, "test_size"
    )
    # Sorted indices keep the official order within each split: easier to trace back to a file.
    train_idx, val_idx, test_idx = np.sort(train_idx), np.sort(val_idx), np.sort(test_idx)
    return Dataset(
        name=name,
        x_train=raw.x_train[train_idx],
        y_train=raw.y_train[train_idx],
        x_val=raw.x_train[val_idx],
        y_val=raw.y_train[val_idx],
        x_test=raw.x_test[test_idx],
        y_test=raw.y_test[test_idx],
        class_names=raw.class_names,
        source=raw.source,
        location=raw.location,
        fingerprint=raw.fingerprint,
        seed=seed,
        split={
            "val_fraction": val_fraction,
            "train_size": train_size,
            "val_size": val_size,
            "test_size": test_size,
            # Recorded where the fixed test subset differs from what this seed drew before it was
            # fixed: such a run's identity changes, so its old members are never mixed with new.
            **(
                {"test_subset_seed": TEST_SUBSET_SEED}
                if test_size is not None and seed + 2 != TEST_SUBSET_SEED
                else {}
            ),
        },
    )


def _subset(idx: np.ndarray, y: np.ndarray, size: int | None, seed: int, option: str) -> np.ndarray:
    if size is None or size >= len(idx):
        return idx
    num_classes = len(np.unique(y[idx]))
    if size < num_classes:
        raise DataError(f"{option}={size} is smaller than the number of classes ({num_classes})")
    kept, _ = train_test_split(idx, train_size=size, stratify=y[idx], random_state=seed)
    return kept


# --------------------------------------------------------------------------------------------------
# Official python batches


def _find_official(root: Path, spec: DatasetSpec) -> Path | None:
    """The folder holding the official batches: ``root`` itself, ``root/<dir>`` or one level deeper
    (Keras 3 extracts to ``<name>_extracted/<dir>``)."""
    if not spec.official_dir or not root.is_dir():
        return None
    markers = (
        ("data_batch_1", "test_batch") if spec.name == "cifar10" else ("train", "test", "meta")
    )
    candidates = [root, root / spec.official_dir, *sorted(root.glob(f"*/{spec.official_dir}"))]
    for candidate in candidates:
        if all((candidate / m).is_file() for m in markers):
            return candidate
    return None


def _load_official(folder: Path, spec: DatasetSpec) -> RawData:
    log.info("loading official %s batches from %s", spec.display, folder)
    if spec.name == "cifar10":
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_files = [folder / "test_batch"]
        label_key, names = b"labels", CIFAR10_CLASSES
    else:
        train_files, test_files = [folder / "train"], [folder / "test"]
        label_key = b"fine_labels"
        meta = _read_batch(folder / "meta")
        names = tuple(n.decode() for n in meta[b"fine_label_names"])
    x_train, y_train = _read_batches(train_files, label_key, spec)
    x_test, y_test = _read_batches(test_files, label_key, spec)
    return RawData(
        x_train,
        y_train,
        x_test,
        y_test,
        tuple(names),
        source=f"{spec.display} (official python batches)",
        location=str(folder),
        fingerprint=_fingerprint_files(train_files + test_files, folder),
    )


def _read_batch(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"missing batch file {path}")
    try:
        batch = load_restricted(path)
    except Exception as exc:  # a truncated or foreign file: name it
        raise DataError(f"cannot read batch file {path}: {exc}") from None
    if not isinstance(batch, dict):
        raise DataError(f"batch file {path} does not hold a dict")
    return batch


def _read_batches(paths: Sequence[Path], label_key: bytes, spec: DatasetSpec):
    xs, ys = [], []
    for path in paths:
        batch = _read_batch(path)
        if b"data" not in batch or label_key not in batch:
            raise DataError(f"batch file {path} lacks the 'data' or {label_key.decode()!r} entry")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"batch file {path} has data of shape {data.shape}, expected (N, 3072)")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
        if len(ys[-1]) != len(xs[-1]):
            raise DataError(f"batch file {path} has {len(xs[-1])} images but {len(ys[-1])} labels")
    x, y = np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)
    if spec.num_classes and (y.min() < 0 or y.max() >= spec.num_classes):
        raise DataError(f"labels in {paths[0].parent} fall outside 0..{spec.num_classes - 1}")
    return x, y


def _download(spec: DatasetSpec) -> RawData:
    """Fetch through keras.datasets; a machine without network gets a paragraph saying what to do."""
    log.info("downloading %s through keras.datasets", spec.display)
    try:
        import keras

        module = keras.datasets.cifar10 if spec.name == "cifar10" else keras.datasets.cifar100
        kwargs = {} if spec.name == "cifar10" else {"label_mode": "fine"}
        (x_train, y_train), (x_test, y_test) = module.load_data(**kwargs)
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, Exception)
        raise _missing(spec, reason=f"{type(exc).__name__}: {exc}") from None
    official = _find_official(keras_datasets_dir(), spec)
    if official is not None:  # the download left the batches in Keras's cache: use the same reader
        return _load_official(official, spec)
    names = CIFAR10_CLASSES if spec.name == "cifar10" else tuple(str(i) for i in range(100))
    return RawData(
        np.ascontiguousarray(x_train),
        y_train.reshape(-1).astype(np.int64),
        np.ascontiguousarray(x_test),
        y_test.reshape(-1).astype(np.int64),
        names,
        source=f"{spec.display} (official, keras.datasets)",
        location="keras.datasets",
        fingerprint=_fingerprint_arrays(x_train, x_test),
    )


def _missing(spec: DatasetSpec, reason: str = "") -> DataError:
    why = f" The download failed ({reason})." if reason else ""
    return DataError(
        f"{spec.display} was not found and could not be downloaded.{why} Either put the official "
        f"python batches in {keras_datasets_dir() / spec.official_dir} (extract "
        f"{spec.official_dir.replace('-batches-py', '').replace('-python', '')}-python.tar.gz from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html there), or point --data-dir / ZOOBENCH_DATA at "
        "a folder holding those batches or a class-folder tree <dir>/train/<class>/*.png and "
        "<dir>/test/<class>/*.png (for example ../shared/data/cifar10-jpg)."
    )


# --------------------------------------------------------------------------------------------------
# Class-folder trees


def _list_folder_split(root: Path, split_name: str) -> dict[str, list[Path]]:
    split_dir = root / split_name
    if not split_dir.is_dir():
        raise DataError(f"missing folder {split_dir}")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{split_dir} has no class sub-folders")
    files = {}
    for name in classes:
        images = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in SUFFIXES)
        if not images:
            raise DataError(
                f"class folder {split_dir / name} holds no images ({', '.join(SUFFIXES)})"
            )
        files[name] = images
    return files


def _class_order(found: Sequence[str], spec: DatasetSpec, root: Path) -> tuple[str, ...]:
    """Official label order for CIFAR-10; sorted folder names otherwise."""
    if len(found) < 2:  # one class: every prediction is right, every score a meaningless 1.000
        raise DataError(
            f"{root} has {len(found)} class folder{'s' if len(found) != 1 else ''} "
            f"({', '.join(found)}); a classification dataset needs at least two classes"
        )
    if spec.name == "cifar10":
        if set(found) != set(CIFAR10_CLASSES):
            raise DataError(
                f"{root} does not have the CIFAR-10 class folders: expected "
                f"{', '.join(CIFAR10_CLASSES)}; found {', '.join(found)}"
            )
        return CIFAR10_CLASSES
    if spec.num_classes is not None and len(found) != spec.num_classes:
        raise DataError(
            f"{root} has {len(found)} class folders; {spec.display} has {spec.num_classes}"
        )
    return tuple(sorted(found))


def _load_folder_cached(root: Path, spec: DatasetSpec, cache_dir) -> RawData:
    train_files = _list_folder_split(root, "train")
    test_files = _list_folder_split(root, "test")
    if sorted(train_files) != sorted(test_files):
        raise DataError(f"{root}/train and {root}/test have different class folders")
    classes = _class_order(list(train_files), spec, root)
    all_files = [p for c in classes for p in train_files[c]] + [
        p for c in classes for p in test_files[c]
    ]
    fingerprint = _fingerprint_files(all_files, root)
    suffixes = {p.suffix.lower() for p in all_files}
    kind = "JPEG copy" if suffixes <= {".jpg", ".jpeg"} else "class folders"
    display = spec.display if spec.name != "folder" else root.name
    source = f"{display} ({kind})"

    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cache_file = cache / f"{spec.name}-{fingerprint[:16]}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file) as z:
                log.info("loaded decoded %s from cache %s", source, cache_file)
                return RawData(
                    z["x_train"],
                    z["y_train"],
                    z["x_test"],
                    z["y_test"],
                    classes,
                    source,
                    str(root),
                    fingerprint,
                )
        except Exception as exc:  # a damaged cache is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", cache_file, exc)

    log.info("decoding %d images from %s", len(all_files), root)
    x_train, y_train = _decode_tree(train_files, classes, spec)
    x_test, y_test = _decode_tree(test_files, classes, spec)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"train images are {x_train.shape[1:]} but test images are {x_test.shape[1:]}"
        )
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_file) as tmp, open(tmp, "wb") as f:
            np.savez(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    except OSError as exc:  # a read-only home must not stop a benchmark
        log.warning("could not write the decode cache %s (%s)", cache_file, exc)
    return RawData(x_train, y_train, x_test, y_test, classes, source, str(root), fingerprint)


def _decode_tree(files: dict[str, list[Path]], classes: Sequence[str], spec: DatasetSpec):
    paths = [p for c in classes for p in files[c]]
    labels = np.concatenate(
        [np.full(len(files[c]), i, dtype=np.int64) for i, c in enumerate(classes)]
    )
    # cv2.imdecode releases the GIL: threads decode in parallel without process start-up costs.
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        images = list(pool.map(decode, paths, chunksize=256))
    expected = spec.image_shape or images[0].shape
    for path, image in zip(paths, images, strict=True):
        if image.shape != expected:
            raise DataError(
                f"image {path} is {image.shape[1]}x{image.shape[0]}x{image.shape[2]}; "
                f"this dataset's images are {expected[1]}x{expected[0]}x{expected[2]}"
            )
    return np.stack(images), labels


# --------------------------------------------------------------------------------------------------
# Fingerprints


def _fingerprint_files(paths: Sequence[Path], root: Path) -> str:
    """Hash of relative names, sizes and modification times: cheap, and changes when a file does."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(json.dumps([str(p.relative_to(root)), st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()


def _fingerprint_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()
