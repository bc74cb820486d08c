"""Export a run's best model, a member or an ensemble for deployment, and prove the file works.

    from ensembles.deploy import export_model
    info = export_model("runs/cpu-quick", "best", "onnx", out="deploy/cifar10.onnx")

One fused Keras model (:func:`ensembles.export.build_fused_model`) is written in one of four formats:

    keras        a ``.keras`` file; loads with ``keras.saving.load_model(path, safe_mode=True)``
                 once zoobench's layers are registered (``import zoo; zoo.list_models()``)
    saved_model  a TensorFlow SavedModel folder; ``tf.saved_model.load(path)``, signature
                 ``serving_default``; no zoobench or Keras code needed to run it
    onnx         a ``.onnx`` file (tf2onnx); ``onnxruntime.InferenceSession(path)``
    litert       a ``.tflite`` file (TensorFlow's converter); ``ai_edge_litert``'s
                 ``Interpreter``

Every artifact takes float32 RGB images with raw pixel values 0..255, NHWC at the run's image
size, and returns class probabilities. Members trained on OpenCV-preprocessed images are refused:
their steps are NumPy/OpenCV code outside the model, which no exported file can carry (use
``zoobench predict`` / ``ensembles.load_predictor`` for those runs).

An export is written to a temporary folder beside ``out``, loaded back with that format's own
runtime, and its probabilities on the run's stored test images are compared with the stored test
probabilities of the same leaderboard row. Only an artifact within the tolerance is renamed into
place, with a manifest (format, run, model, source hash, tolerance, measured difference, versions)
in ``<out>.export.json`` beside a file, or ``export.json`` inside a SavedModel folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import atomic
from benchmark.errors import ZoobenchError
from benchmark.formatting import utc_now
from benchmark.runtimes import (
    FORMATS,
    RUNTIME_DISTS,
    Format,
    format_spec,
    require_packages,
    write_artifact,
)
from benchmark.store.inference import Artifact, model_inputs, probabilities
from benchmark.store.runstore import Entry, RunStore, file_sha256
from ensembles.export import build_fused_model, ensemble_members, outside_preprocess

log = logging.getLogger(__name__)

MANIFEST = "export.json"  # inside a SavedModel folder; beside a file as "<name>.export.json"
DEFAULT_IMAGES = 256  # stored test images compared after writing: enough to catch a bad export


def _check_out(out: Path, spec: Format, force: bool) -> None:
    if spec.suffix and out.suffix != spec.suffix:
        raise ZoobenchError(
            f"--out {out} must end in {spec.suffix} for --format {spec.name} "
            f"(its runtime reads {spec.suffix} files)"
        )
    if not spec.suffix and out.suffix in {f.suffix for f in FORMATS.values() if f.suffix}:
        raise ZoobenchError(
            f"--out {out} names a file, but --format {spec.name} writes a folder; give a folder path"
        )
    if (out.exists() or out.is_symlink()) and not force:
        raise ZoobenchError(f"--out {out} already exists; pass --force to replace it")
    if out.exists() or out.is_symlink():
        _refuse_unless_export(out, spec)


def _refuse_unless_export(out: Path, spec: Format) -> None:
    """``--force`` replaces an earlier export only: what has no export manifest is not ours."""
    manifest = manifest_path(out, spec.name)
    kind_ok = out.is_dir() if not spec.suffix else out.is_file()
    try:
        record = atomic.read_json(manifest) if kind_ok and not out.is_symlink() else None
    except (OSError, ValueError, UnicodeDecodeError):
        record = None
    if not (isinstance(record, dict) and {"format", "artifact_sha256"} <= set(record)):
        raise ZoobenchError(
            f"--out {out} is not an earlier zoobench export (no readable {manifest.name} "
            "manifest): --force replaces only those; choose another --out"
        )


def _describe_steps(steps: list[dict[str, Any]]) -> str:
    parts = []
    for step in steps:
        params = ", ".join(f"{k}={v!r}" for k, v in step.items() if k != "name")
        parts.append(f"{step.get('name')}({params})" if params else str(step.get("name")))
    return ", ".join(parts)


def _entry(run_dir: str | os.PathLike, model: str) -> tuple[RunStore, Entry]:
    """The run and the leaderboard row ``model`` names ("best", a member ID, an ensemble name)."""
    from ensembles.predictor import resolve_entry

    store = RunStore(run_dir)
    return store, resolve_entry(store, model)  # unknown run / model / no best yet: one line


def _refuse_preprocessing(entry: Entry, members: list[Entry]) -> None:
    steps = outside_preprocess(members)  # [] also when every step runs inside the model (deblock)
    if steps is None:
        detail = "; ".join(
            f"{m.id}: {_describe_steps(m.config.get('preprocess') or []) or 'none'}"
            for m in members
        )
        raise ZoobenchError(
            f"cannot export {entry.name!r}: its members use different OpenCV preprocessing "
            f"({detail}), which no exported model can hold; use `zoobench predict` instead"
        )
    if steps:
        raise ZoobenchError(
            f"cannot export {entry.name!r}: its members were trained on images preprocessed with "
            f"{_describe_steps(steps)} (OpenCV code outside the model, which no exported model "
            "can hold); use `zoobench predict` instead"
        )


def _check_images(store: RunStore, entry: Entry, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` stored test images and the row's stored probabilities for them."""
    if limit < 1:
        raise ZoobenchError(f"--images must be at least 1, got {limit}")
    try:
        images = store.load_array("x_test")
        probs = entry.probs("test")
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise ZoobenchError(
            f"cannot check the export of {entry.name!r}: the run's stored test images or test "
            f"probabilities are unreadable ({exc})"
        ) from exc
    if len(images) != len(probs):
        raise ZoobenchError(
            f"cannot check the export of {entry.name!r}: run {store.root} stores "
            f"{len(images)} test images but {len(probs)} test probabilities for it"
        )
    return images[:limit], probs[:limit].astype(np.float64)


def _tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents) in sorted order."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest.update(f"{f.relative_to(path).as_posix()}\0{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def source_hash(entry: Entry, members: list[Entry]) -> tuple[str, dict[str, str]]:
    """One sha256 for what the export was made from: the row's config, its members' models and
    its temperature (None: not calibrated)."""
    models = {m.id: file_sha256(m.model_path) for m in members}
    made_of = {"config": entry.config, "models": models, "temperature": entry.temperature}
    text = json.dumps(made_of, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest(), models


def _versions(fmt: str) -> dict[str, str]:
    from zoo.backend import versions

    out = versions()
    for dist in RUNTIME_DISTS.get(fmt, ()):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def manifest_path(out: str | os.PathLike, fmt: str) -> Path:
    """Where the manifest of the artifact at ``out`` lives."""
    out = Path(out)
    return (
        out / MANIFEST if not format_spec(fmt).suffix else out.with_name(out.name + "." + MANIFEST)
    )


def _install(tmp: Path, out: Path, force: bool, spec: Format) -> None:
    """Rename the checked artifact into place; a replaced one is moved aside first, then removed."""
    if out.exists() or out.is_symlink():
        if not force:
            raise ZoobenchError(f"--out {out} already exists; pass --force to replace it")
        _refuse_unless_export(out, spec)  # checked again: it may have changed while we worked
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, aside / "old")
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(aside / "old", out)  # the old artifact stays where it was
            raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, out)


def export_model(
    run_dir: str | os.PathLike,
    model: str = "best",
    fmt: str = "keras",
    *,
    out: str | os.PathLike,
    force: bool = False,
    tolerance: float | None = None,
    images: int = DEFAULT_IMAGES,
) -> dict[str, Any]:
    """Write ``model`` of the run as ``fmt`` to ``out``, checked against the stored test probs.

    Returns the manifest written beside the artifact (``path``, ``manifest``, ``size_bytes``,
    ``images_compared``, ``max_abs_diff``, ``tolerance``, ...). A ZoobenchError (one line) for an
    unknown run, model or format, a missing runtime package, an existing ``out`` without
    ``force`` (or, with it, one that is not an earlier export: no manifest), members with OpenCV
    preprocessing, or an artifact that disagrees with the run.
    """
    spec = format_spec(fmt)
    out = Path(out)
    _check_out(out, spec, force)
    if spec.tensorflow_only:
        import keras

        if keras.backend.backend() != "tensorflow":
            raise ZoobenchError(
                f"--format {fmt} exports through TensorFlow, but Keras runs on "
                f"{keras.backend.backend()}; rerun with --backend tensorflow"
            )
    require_packages(fmt)
    tol = spec.tolerance if tolerance is None else float(tolerance)
    if not tol >= 0:
        raise ZoobenchError(f"--tolerance must be a non-negative number, got {tolerance}")
    store, entry = _entry(run_dir, model)
    members = ensemble_members(store, entry)
    _refuse_preprocessing(entry, members)
    x_check, stored = _check_images(store, entry, images)
    fused = build_fused_model(store, entry)  # a member without its model: one line naming it
    source, member_models = source_hash(entry, members)
    x_check = model_inputs(x_check, [], fused).astype(np.float32)
    fused(x_check[:1], training=False)  # Keras's ONNX exporter insists the model was called

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        artifact = work / (f"model{spec.suffix}" if spec.suffix else "saved_model")
        log.info("export: writing %s as %s", entry.name, fmt)
        write_artifact(fused, spec, artifact)
        # run by its format's runtime through the one inference path, as predict runs a model
        shape, classes = (None, *x_check.shape[1:]), int(stored.shape[1])
        got = probabilities(Artifact(artifact, fmt, shape, classes), x_check)
        if got.shape != stored.shape:
            raise ZoobenchError(
                f"the exported {fmt} model gives probabilities of shape {got.shape}, but the run "
                f"stores {stored.shape} for {entry.name!r}; nothing was written to {out}"
            )
        diff = float(np.max(np.abs(got.astype(np.float64) - stored)))
        if not diff <= tol:
            raise ZoobenchError(
                f"the exported {fmt} model of {entry.name!r} differs from the run's stored test "
                f"probabilities by {diff:.3g} (tolerance {tol:g}); nothing was written to {out}"
            )
        info: dict[str, Any] = {
            "format": fmt,
            "path": str(out),
            "run": str(store.root),
            "model": model,
            "entry": {"kind": entry.kind, "id": entry.id, "name": entry.name},
            "members": member_models,
            "source_sha256": source,
            "artifact_sha256": _tree_sha256(artifact),
            "size_bytes": _size(artifact),
            "input": {
                "name": fused.inputs[0].name,
                "shape": [None, *(int(s) for s in x_check.shape[1:])],
                "dtype": "float32",
                "values": "RGB pixel values 0..255 (no scaling, no preprocessing)",
            },
            "output": {"shape": [None, int(stored.shape[1])], "values": "class probabilities"},
            "temperature": entry.temperature,
            "class_names": store.class_names(),
            "images_compared": len(x_check),
            "max_abs_diff": diff,
            "tolerance": tol,
            "versions": _versions(fmt),
            "exported_at": utc_now(),
        }
        info["manifest"] = str(manifest_path(out, fmt))
        if not spec.suffix:  # the folder carries its own manifest and moves with it
            atomic.write_json(artifact / MANIFEST, info)
        _install(artifact, out, force, spec)
        if spec.suffix:
            atomic.write_json(info["manifest"], info)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("export: %s written (%d bytes), max |diff| %.3g", out, info["size_bytes"], diff)
    return info
